/* The blocked training encoder at bf16 (trainer_bf16_dense.c, ISSUE 17):
 * the activations other than TopK, and TopK with AuxK. */
#ifndef SUBSAE_TRAINER_BF16_DENSE_H
#define SUBSAE_TRAINER_BF16_DENSE_H

#include "trainer_types.h"

/* Before a pass of the blocked encoder: the norms of W_enc's rows, which
 * size the rescoring's margin. */
void subsae__trainer_bf16_pass_begin(subsae_trainer *t);

/* Rows r0 .. r0 + rows - 1 of the step: pre = the bf16 product of the
 * encoder input and W_enc (fp32 accumulation, no b_enc), m per row. */
void subsae__trainer_bf16_block_gemm(subsae_trainer *t, int64_t r0, int64_t rows, float *pre,
                                     int threads);

/* A dense activation's row `row` of bf16 pre-activations (pr, no b_enc):
 * every entry that passes (pre + b_enc > cut[f], or > low when cut is
 * NULL) or falls short by less than the margin of the bf16 error replaced
 * by the fp32 pre-activation (the exact dot product, no b_enc);
 * ws->bf16_row_changed[row] gets the decisions that changed. Thread-safe
 * across rows. */
void subsae__trainer_bf16_rescore_row(subsae_trainer *t, int64_t row, float *pr,
                                      const float *cut, float low);

/* BatchTopK after its collection from the bf16 product: the collected
 * pairs (ws->row_ptr / idx / val, val with b_enc) whose value passes the
 * bf16 cut `cut` or falls short by less than the margin revalued in fp32,
 * the others set to 0 (out of the selection); ws->bf16_row_changed gets
 * each row's pairs that changed side of `cut`. */
void subsae__trainer_bf16_rescore_pairs(subsae_trainer *t, int64_t n, float cut);

/* TopK of one row of the step from its bf16 pre-activations (pr, no
 * b_enc): k + margin candidates rescored in fp32, the top k kept (ReLU)
 * into ws->idx / ws->val; ws->bf16_row_changed[row] gets the pairs the
 * rescoring changed. Thread-safe across rows. */
void subsae__trainer_bf16_topk_row(subsae_trainer *t, int64_t row, const float *pr);

/* AuxK's pairs of one row, chosen from the bf16 pre-activations, given
 * their fp32 values (ReLU: a pair that falls to 0 or below is dropped). */
void subsae__trainer_bf16_aux_row(subsae_trainer *t, int64_t row);

/* After the blocked encoder of n rows at bf16: t->last_disagreement, the
 * changed decisions over the pairs selected (TopK and BatchTopK: k per
 * row; a dense activation: the pairs its pass kept, ws->row_count). */
void subsae__trainer_bf16_pass_end(subsae_trainer *t, int64_t n);

#endif
