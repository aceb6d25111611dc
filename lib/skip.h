/* The linear skip path of skip transcoders (Paulo, Shabalin & Belrose
 * 2025): out += x W_skip^T and its gradient g^T x, as fixed parts of
 * single-threaded GEMMs (skip.c), shared by the model (sae.c) and the
 * training step (trainer_step.c). */
#ifndef SUBSAE_SKIP_H
#define SUBSAE_SKIP_H

#include "internal.h"

/* out (n x d_out, stride out_stride) += alpha x W^T, x n x d_in (stride
 * x_stride), W d_out x d_in row-major. */
void subsae__skip_forward(const float *W, int64_t d_in, int64_t d_out, const float *x,
                          int64_t x_stride, int64_t n, float alpha, float *out,
                          int64_t out_stride, int threads);

/* gW (d_out x d_in) = g^T x over n rows: g n x d_out, x n x d_in (dense
 * rows). */
void subsae__skip_gradient(const float *g, const float *x, int64_t n, int64_t d_in,
                           int64_t d_out, float *gW, int threads);

/* W (d_out x d_in) = the least-squares map of the centred n rows of x
 * (n x d_in) to those of t (n x d_out), with a tiny ridge; zero when the
 * input's Gram matrix is not positive definite. The same bits for every
 * thread count. SUBSAE_E_NOMEM. */
int subsae__skip_least_squares(const float *x, const float *t, int64_t n, int64_t d_in,
                               int64_t d_out, float *W, int threads);

#endif
