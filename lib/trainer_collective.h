/* Data-parallel workers (trainer_collective.c): the exchange of a step
 * and the hashes the workers compare. trainer.c calls the exchange
 * between a step's backward and its update. */
#ifndef SUBSAE_TRAINER_COLLECTIVE_H
#define SUBSAE_TRAINER_COLLECTIVE_H

#include "trainer_types.h"

/* The exchange of a step: agree on rc, sum the firing counts, loss and
 * metric sums and the b_dec gradient over the workers, then the gradient
 * rows of the features that fired on any worker, and rewrite the workspace
 * so that the optimiser and the counters see the global step: the touched
 * features, their counts and gradients, the partition sums (in partition
 * 0), the pairs. *n gets the rows of all workers, *loss the loss over them
 * and *sq the squared norm of the global gradient. This worker's
 * contribution is read from the workspace only when rc is SUBSAE_OK and
 * *n > 0. */
int subsae__trainer_exchange(subsae_trainer *t, int rc, int64_t *n, double *loss, double *sq);

/* Size the exchange's buffer (before every collective step). */
int subsae__trainer_exchange_buffer(subsae_trainer *t);

/* A hash of the model's weights (the workers compare it). */
uint64_t subsae__trainer_weights_hash(const subsae_trainer *t);

/* A hash of the options that shape the all-reduces and the model. */
uint64_t subsae__trainer_options_hash(const subsae_trainer *t);

/* Whether the step touches features that did not fire (ReLU, JumpReLU,
 * AuxK): the workers' exchange then carries touched flags and the extra
 * loss parts, and the workspace needs gradient rows for every feature. */
bool subsae__trainer_extended(const subsae_trainer *t);

/* SUBSAE_OK, or SUBSAE_E_UNSUPPORTED for what workers cannot train
 * (BatchTopK's selection over the global batch). */
int subsae__trainer_collective_supported(const subsae_trainer *t, const char *fn);

#endif
