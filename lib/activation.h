/* The step's encoder for every activation (activation.c). */
#ifndef SUBSAE_ACTIVATION_H
#define SUBSAE_ACTIVATION_H

#include "trainer_types.h"

/* Rate of the BatchTopK threshold's moving average (SAELens'
 * topk_threshold_lr). */
#define SUBSAE__BATCHTOPK_THRESHOLD_RATE 0.01

/* Encode the n rows of ws->xin: the blocked encoder GEMM, then the
 * activation's selection into the CSR pairs (ws->row_ptr, idx, val and
 * for JumpReLU pre_val), growing the pair arrays when a dense activation
 * needs more room; with AuxK on (ws->aux_k > 0) also the top aux_k dead
 * pre-activations of each row (ws->aux_idx / aux_val). `seconds` gets the
 * GEMM and selection times. Errors: SUBSAE_E_NOMEM, SUBSAE_E_RANGE. */
int subsae__trainer_encode(subsae_trainer *t, int64_t n, double *seconds);

/* The (k n)-th largest pre-activation (b_enc included) of n rows of
 * encoder input, exactly (0 when fewer are positive): the batch-top-k
 * cut, used to start the BatchTopK threshold and the automatic JumpReLU
 * threshold. */
int subsae__batch_topk_cut(const subsae_sae *sae, const float *xin, int64_t n, int64_t k,
                           int threads, float *cut);

#endif
