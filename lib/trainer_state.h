/* subsae_trainer as an object (trainer_state.c): options, the training
 * state beside the model, the metrics window, the log line. */
#ifndef SUBSAE_TRAINER_STATE_H
#define SUBSAE_TRAINER_STATE_H

#include "trainer_types.h"

/* Options by enum value (0 .. SUBSAE__TRAIN_OPTION_LAST): the name (NULL
 * for a gap), whether it is a double (else int64_t), and the address of
 * the value as configured (no defaults resolved). */
enum { SUBSAE__TRAIN_OPTION_LAST = SUBSAE_TRAIN_SKIP };
const char *subsae__trainer_option_name(int option, bool *is_double);
void *subsae__trainer_option_field(subsae_trainer *t, int option);

/* The last step's loss (NaN: none) with its parts and learning rate
 * unknown (after init, or loading a checkpoint, which stores the loss
 * only). */
void subsae__trainer_forget_last_step(subsae_trainer *t, double loss);

/* Allocate the model-sized state (Adam moments, counters, windows) of an
 * initialised trainer whose model is set. */
int subsae__trainer_alloc_state(subsae_trainer *t);

/* Free that state and the workspace (the model and the options stay):
 * the trainer is uninitialised again. */
void subsae__trainer_free_state(subsae_trainer *t);

/* Zero a metrics window. */
void subsae__trainer_window_clear(struct subsae__window *w, int64_t d_out, int64_t d_sae);

/* The learning rate used when none is set (depends on d_sae), and the
 * rate in effect (before warm-up and cool-down). */
double subsae__trainer_default_lr(int64_t features);
double subsae__trainer_lr(const subsae_trainer *t);

/* A log line through the callback (SUBSAE_EVENT_LOG), if one is set. */
void subsae__trainer_log(const subsae_trainer *t, const char *phase, const char *fmt, ...)
    SUBSAE_PRINTF(3, 4);

#endif
