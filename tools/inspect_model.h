/* `subsae inspect DIR`: what a saved model is, without data (see
 * inspect_model.c). */
#ifndef SUBSAE_INSPECT_MODEL_H
#define SUBSAE_INSPECT_MODEL_H

#include "cli.h"

/* Describe the model saved in `dir` (any layout subsae_sae_load reads) on
 * stdout, as text or one JSON object. 0, or 1 with the message printed. */
int inspect_model(const char *dir, bool json);

#endif
