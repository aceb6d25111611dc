/* The training step's encoder at bf16 (trainer_bf16.c, ISSUE 17): the
 * product on bf16 copies of W_enc and of the batch (fp32 accumulation),
 * TopK candidates from it, rescored in fp32 (the blocked encoder of the
 * other activations and AuxK: trainer_bf16_dense.h). Master weights, Adam, the
 * decoder and the losses stay fp32. */
#ifndef SUBSAE_TRAINER_BF16_H
#define SUBSAE_TRAINER_BF16_H

#include "trainer_types.h"

/* The precision a trainer about to be initialised will use, into
 * t->precision_used: the option, AUTO resolved (bf16 only where the CPU
 * computes bf16 natively, for every configuration).
 * SUBSAE_E_UNSUPPORTED (naming `fn`) for an explicit bf16 that cannot
 * run here. */
int subsae__trainer_precision_init(subsae_trainer *t, const char *fn);

/* Whether the trainer's bf16 steps can run (native bf16): SUBSAE_OK or
 * SUBSAE_E_UNSUPPORTED naming `fn` (a checkpoint of a bf16 run resumed on
 * a CPU without it). */
int subsae__trainer_bf16_check(const subsae_trainer *t, const char *fn);

/* Before a bf16 step: the bf16 copy of W_enc made whole from the master
 * weights when the workspace is new (after init, loading, a regrowth).
 * No-op at fp32. The margin of candidates is subsae__bf16_margin
 * (trainer_workspace.h). */
void subsae__trainer_bf16_sync(subsae_trainer *t);

/* After Adam wrote W_enc row f: its bf16 copy (no-op without a copy). */
void subsae__trainer_bf16_row(subsae_trainer *t, int64_t f);

/* The bf16 encoder input of row i from ws->xin (no-op at fp32). */
void subsae__trainer_bf16_input(subsae_trainer *t, int64_t i);

/* A row's top k of its K rescored candidates (cidx/cval, in bf16 order;
 * -1: none), ReLU, into idx/val (k slots); `pos` is K entries of scratch.
 * Ties go to the lower feature. The number of active pairs that were not
 * among the bf16 top k. */
int64_t subsae__trainer_bf16_keep(const int32_t *cidx, const float *cval, int32_t *pos,
                                  int64_t K, int64_t k, int32_t *idx, float *val);

/* TopK of n rows at bf16: k + margin candidates per row from the bf16
 * product (the fused encoder), rescored in fp32 (the exact dot product of
 * the fp32 encoder input and W_enc row, + b_enc), the top k of them kept
 * (ReLU), into ws->idx / ws->val. t->last_disagreement gets the fraction
 * of the selected pairs that the rescoring changed. `seconds` as
 * subsae__trainer_encode's. */
void subsae__trainer_encode_bf16(subsae_trainer *t, int64_t n, double *seconds);

#endif
