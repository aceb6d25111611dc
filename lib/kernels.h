/* The inner loops of encoding and training: top-k selection, sparse decode,
 * the per-feature sparse backward and Adam. They work on plain arrays, take
 * no locks and allocate nothing; the callers parallelise over rows or over
 * ranges of features. x86-64 builds pick AVX-512 / AVX2 variants at run
 * time; results are the same on one machine whatever the thread count. */
#ifndef SUBSAE_KERNELS_H
#define SUBSAE_KERNELS_H

#include <stdbool.h>
#include <stdint.h>

/* The k largest of key[j] = (row[j] + bias[j]) * weight[j] over j in
 * [0, m) (bias and weight may be NULL), ties going to the lower index.
 * idx gets the k indices and val the values row[j] + bias[j] (without the
 * weight), in descending order of key. Requires 1 <= k <= m. Non-finite
 * entries: NaN never wins a comparison. */
void subsae__topk_row(const float *row, const float *bias, const float *weight, int64_t m,
                      int64_t k, int32_t *idx, float *val);

/* subsae__topk_row (without weight) over a row that arrives in chunks:
 * call subsae__topk_chunk for entries j0 .. j0 + count - 1 in increasing
 * order of j0 (row and bias point at entry j0; *len = 0 before the first
 * chunk of a row), then subsae__topk_done once. idx and val (k entries
 * each) hold the state in between. The result is the same as
 * subsae__topk_row's on the whole row, bit for bit. */
void subsae__topk_chunk(const float *row, const float *bias, int64_t j0, int64_t count,
                        int64_t k, int64_t *len, int32_t *idx, float *val);
void subsae__topk_done(int64_t k, int32_t *idx, float *val);

/* out[0..d) = b[0..d) (or 0 when b is NULL) + sum_j val[j] * W[idx[j] * ld ..];
 * entries with idx < 0 or val == 0 are skipped. */
void subsae__sparse_decode_row(float *out, const float *b, const float *W, int64_t ld,
                               const int32_t *idx, const float *val, int64_t k, int64_t d);

/* Sparse backward of one feature f, given the `count` (row, value) pairs
 * where f fired (z > 0), the output gradient g (rows of d_out, stride
 * g_stride), the encoder input xin (rows of d_in, stride xin_stride) and
 * the feature's decoder row wdec:
 *   gdec  = sum_p z_p g[row_p]                 (d_out)
 *   dpre_p = g[row_p] . wdec
 *   genc  = sum_p dpre_p xin[row_p]            (d_in)
 *   *gbenc = sum_p dpre_p
 * Sums run in pair order (deterministic). */
void subsae__feature_backward(const int32_t *rows, const float *z, int64_t count,
                              const float *g, int64_t g_stride, int64_t d_out, const float *xin,
                              int64_t xin_stride, int64_t d_in, const float *wdec, float *gdec,
                              float *genc, float *gbenc);

/* Adam on n parameters (PyTorch's formula):
 *   m = b1 m + (1 - b1) gs g;  v = b2 v + (1 - b2) (gs g)^2
 *   w -= step * m / (sqrt(v) * inv_bias2 + eps)
 * with step = lr / (1 - b1^t) and inv_bias2 = 1 / sqrt(1 - b2^t); g NULL
 * means a zero gradient (the moments decay, the weights still move). */
void subsae__adam(float *w, float *m, float *v, const float *g, int64_t n, float gs, float b1,
                  float b2, float step, float inv_bias2, float eps);

/* Whether subsae__adam with the same arguments would leave every m, v and
 * w finite (exactly: the same arithmetic, nothing stored). */
bool subsae__adam_finite(const float *w, const float *m, const float *v, const float *g,
                         int64_t n, float gs, float b1, float b2, float step, float inv_bias2,
                         float eps);

/* Threads for a parallel loop of `work` element operations: small loops run
 * on one thread, where waking a team costs more than it saves (and, on a
 * loaded machine, much more). Callers partition work by the nominal thread
 * count, never by the team size, so results do not depend on this. */
static inline int subsae__team(int threads, double work)
{
    return work >= 131072.0 ? threads : 1;
}

/* bf16 <- fp32 of n values, round to nearest even, NaN kept a NaN: the
 * bits of subsae__f32_to_bf16 (dtype.c), vectorised. */
void subsae__bf16_round(uint16_t *dst, const float *src, int64_t n);

/* Dot product and squared norm accumulated in double. */
double subsae__dot(const float *a, const float *b, int64_t n);
/* Dot product accumulated in float in a fixed order (16 interleaved sums
 * added pairwise): the same bits on one machine for any alignment. */
float subsae__dot_f32(const float *a, const float *b, int64_t n);
/* out[c] = subsae__dot_f32(x + rows[c] * ldx, y + cols[c] * ldy, n) for
 * c < count, bit for bit (on AVX-512 four pairs at a time). */
void subsae__dot_f32_pairs(const float *x, int64_t ldx, const int32_t *rows, const float *y,
                           int64_t ldy, const int32_t *cols, int64_t count, int64_t n,
                           float *out);
double subsae__sumsq(const float *a, int64_t n);

/* Scale a row to unit norm (a zero row stays zero). */
void subsae__normalize_row(float *row, int64_t d);

/* Index of the first non-finite value in x[0..n), or n. */
int64_t subsae__find_nonfinite(const float *x, int64_t n);

#endif
