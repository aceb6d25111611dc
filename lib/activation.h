/* The step's encoder for every activation (activation.c). */
#ifndef SUBSAE_ACTIVATION_H
#define SUBSAE_ACTIVATION_H

#include "trainer_types.h"

/* Rate of the BatchTopK threshold's moving average (SAELens'
 * topk_threshold_lr, whose 0.01 we used until issue 18). The batch cut is
 * a quantile of k n values, steady from batch to batch, while the
 * pre-activations grow during training: at 0.01 the threshold lagged by
 * ~100 steps and the inference L0 missed k (stories260K, k 8, d_sae 4096,
 * 2 epochs: 6.7 on L2_mlp_in_131k, 16.9 on a 16k-row layer); at 0.3 it
 * is 8.0 and 8.3-9.6 (README, Matryoshka). */
#define SUBSAE__BATCHTOPK_THRESHOLD_RATE 0.3

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
