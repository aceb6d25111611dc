/* The training step's stages (trainer_step.c): forward and backward on
 * one process's rows into the workspace, the Adam update, the counters.
 * trainer.c composes them, with the workers' exchange between the
 * backward and the update. */
#ifndef SUBSAE_TRAINER_STEP_H
#define SUBSAE_TRAINER_STEP_H

#include "trainer_types.h"

/* The checks of subsae_trainer_step's arguments (n may be 0 with
 * workers: a worker may hold no rows of a step). */
int subsae__trainer_check_step_args(const char *fn, const subsae_trainer *t, const float *input,
                                    int64_t input_stride, const float *target,
                                    int64_t target_stride, int64_t n);

/* Forward and backward on n raw rows, the workspace sized: the loss,
 * compact gradients of the touched features and the b_dec gradient; *sq
 * gets the squared gradient norm. Changes nothing outside the workspace.
 * With workers the loss is over t->loss_rows rows, of which these are a
 * part. */
int subsae__trainer_forward_backward(subsae_trainer *t, const float *input,
                                     int64_t input_stride, const float *target,
                                     int64_t target_stride, int64_t n, double *loss,
                                     double *sq);

/* Adam on every parameter from the workspace's gradients (clipped by the
 * squared norm sq), all or nothing; the unit-norm projection. */
int subsae__trainer_apply_update(subsae_trainer *t, double sq);

/* Counters, dead-feature clock, BatchTopK threshold and metrics window
 * after a step of n rows with this loss. */
void subsae__trainer_account(subsae_trainer *t, int64_t n, double loss);

/* Gradient of the loss on n raw rows at the current weights, scattered
 * into dense arrays of the parameters' sizes (any may be NULL), after the
 * unit-norm projection when the decoder norm is unit; `loss` (may be NULL)
 * gets the loss, `indices` (may be NULL; TopK only) the n x k selection.
 * Changes nothing in the model. For tests (subsae__trainer_pairs gives the
 * pairs of every activation). */
int subsae__trainer_gradients(subsae_trainer *t, const float *input, int64_t input_stride,
                              const float *target, int64_t target_stride, int64_t n,
                              float *g_W_enc, float *g_b_enc, float *g_W_dec, float *g_b_dec,
                              double *loss, int32_t *indices);

/* The step's (row, feature) pairs in the workspace after the last step
 * or gradient computation: CSR row_ptr (n + 1), features and values. For
 * tests. */
void subsae__trainer_pairs(const subsae_trainer *t, const int64_t **row_ptr,
                           const int32_t **idx, const float **val);

/* The JumpReLU log-threshold gradient of the last gradient computation,
 * dense (d_sae). For tests. */
void subsae__trainer_threshold_gradient(const subsae_trainer *t, float *g);

/* A gated model's r_mag and b_mag gradients of the last gradient
 * computation, dense (d_sae each; zero for other models). For tests. */
void subsae__trainer_gated_gradient(const subsae_trainer *t, float *g_r_mag, float *g_b_mag);

/* The sparsity penalty's coefficient of the running step (L1 of ReLU and
 * of a gated model's gate, L0 of JumpReLU; 0 for the others), warm-up
 * included. */
double subsae__trainer_sparsity_coef(const subsae_trainer *t);

/* Parts of the last step's loss: reconstruction MSE (Matryoshka: summed
 * over the prefixes), sparsity penalty (L1 or L0), AuxK term (gated: the
 * gate path's reconstruction). For tests. */
void subsae__trainer_loss_parts(const subsae_trainer *t, double *mse, double *penalty,
                                double *aux);

#endif
