/* The step's workspace (trainer_workspace.c): every buffer of the
 * training step, sized before the hot loop, grown on demand by the
 * activations that need more room. The lowest layer of the trainer. */
#ifndef SUBSAE_TRAINER_WORKSPACE_H
#define SUBSAE_TRAINER_WORKSPACE_H

#include "trainer_types.h"

/* Candidates per row beyond k that the bf16 encoder (trainer_bf16.c)
 * rescores in fp32: max(4, k / 4). */
int64_t subsae__bf16_margin(int64_t k);

/* The thread count the step uses. */
int subsae__trainer_threads(const subsae_trainer *t);

/* Size the workspace for `batch` rows on `threads` threads (no-op when
 * already large enough; it only grows, so that changing the thread count
 * between steps allocates nothing after the largest count has run). */
int subsae__trainer_workspace(subsae_trainer *t, int64_t batch, int threads);

/* Free the workspace (fit does when it returns; the next step sizes it
 * again). */
void subsae__trainer_workspace_release(subsae_trainer *t);

/* AuxK of the step: the dead features and the slots per row (ws->aux_k, 0
 * when AuxK is off or nothing is dead), the scratch grown if needed. */
int subsae__trainer_prepare_aux(subsae_trainer *t);

/* Grow the pair arrays to hold `need` pairs (contents of idx, val and
 * pre_val kept). */
int subsae__trainer_grow_pairs(subsae_trainer *t, int64_t need);

/* Gradient rows for every feature (workers with ReLU, JumpReLU or AuxK:
 * the union of the touched features may exceed a worker's own). */
int subsae__trainer_room_all_features(subsae_trainer *t);

#endif
