/* The per-feature backward of the activations and losses beyond plain
 * TopK reconstruction (kernels.c keeps that one):
 *
 *  - reconstruction through the active pairs (z > 0): the decoder row gets
 *    sum z g, the pre-activation dz = g . w_dec (+ dz_add), the encoder row
 *    sum dz x_in and b_enc sum dz;
 *  - L1 weighted by the decoder-row norm (ReLU; Anthropic's April 2024
 *    update, SAELens' scale_sparsity_penalty_by_decoder_norm):
 *    lambda / n sum_f |w_f| z_f adds dz_add = lambda |w_f| / n to every
 *    active pair, and the caller adds lambda / n (sum z) w_f / |w_f| to the
 *    decoder row from `zsum`;
 *  - JumpReLU (Rajamanoharan et al. 2024; SAELens): z = pre H(pre - t).
 *    The pseudo-derivatives with the rectangle kernel K(u) = 1{|u| < 1/2}
 *    of bandwidth e: dz/dpre = H(pre - t) (no straight-through estimate
 *    for pre), dz/dt = -(t / e) K((pre - t) / e); the L0 penalty
 *    lambda / n sum H(pre - t) gives d/dt = -(lambda / n) (1 / e) K and
 *    nothing to pre. `gthr` sums d loss / d t over the feature's pairs in
 *    the band, inactive ones included (the caller multiplies by t for the
 *    log-threshold);
 *  - AuxK (Gao et al. 2024): the dead features' pairs with their own
 *    output gradient g_aux, accumulated into the same rows.
 * Sums run in pair order, so the result does not depend on the thread
 * count. x86-64 builds run AVX-512 / AVX2 variants chosen at run time, as
 * kernels.c does. */
#include "losses.h"

#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define LOSSES_X86 1
#else
#define LOSSES_X86 0
#endif

#define ALWAYS_INLINE static inline __attribute__((always_inline))

ALWAYS_INLINE void backward_ex_body(const int32_t *rows, const float *z, const float *pre,
                                    int64_t count, const float *g, int64_t g_stride,
                                    int64_t d_out, const float *xin, int64_t xin_stride,
                                    int64_t d_in, const float *wdec, float dz_add, float thr,
                                    float inv_bw, float l0_w, bool accumulate, float *gdec,
                                    float *genc, float *gbenc, double *gthr, double *zsum)
{
    float gb = 0.0f;
    double gt = 0.0, zs = 0.0;
    if (accumulate) {
        gb = *gbenc;
        gt = *gthr;
        zs = *zsum;
    } else {
        memset(gdec, 0, (size_t)d_out * sizeof *gdec);
        memset(genc, 0, (size_t)d_in * sizeof *genc);
    }
    for (int64_t p = 0; p < count; p++) {
        const float *gr = g + (int64_t)rows[p] * g_stride;
        const float zp = z[p];
        float dp = 0.0f;
#pragma omp simd reduction(+ : dp)
        for (int64_t j = 0; j < d_out; j++)
            dp += gr[j] * wdec[j];
        if (zp > 0.0f) {
            const float dz = dp + dz_add;
#pragma omp simd
            for (int64_t j = 0; j < d_out; j++)
                gdec[j] += zp * gr[j];
            const float *xr = xin + (int64_t)rows[p] * xin_stride;
#pragma omp simd
            for (int64_t j = 0; j < d_in; j++)
                genc[j] += dz * xr[j];
            gb += dz;
            zs += zp;
        }
        if (pre) {
            const float u = (pre[p] - thr) * inv_bw;
            if (u > -0.5f && u < 0.5f)
                gt -= ((double)thr * dp + (double)l0_w) * (double)inv_bw;
        }
    }
    *gbenc = gb;
    *gthr = gt;
    *zsum = zs;
}

#define BACKWARD_EX_PARAMS                                                                  \
    (const int32_t *rows, const float *z, const float *pre, int64_t count, const float *g,  \
     int64_t g_stride, int64_t d_out, const float *xin, int64_t xin_stride, int64_t d_in,   \
     const float *wdec, float dz_add, float thr, float inv_bw, float l0_w, bool accumulate, \
     float *gdec, float *genc, float *gbenc, double *gthr, double *zsum)
#define BACKWARD_EX_ARGS                                                                \
    (rows, z, pre, count, g, g_stride, d_out, xin, xin_stride, d_in, wdec, dz_add, thr, \
     inv_bw, l0_w, accumulate, gdec, genc, gbenc, gthr, zsum)

#if LOSSES_X86
__attribute__((target("avx512f"))) static void backward_ex_avx512 BACKWARD_EX_PARAMS
{
    backward_ex_body BACKWARD_EX_ARGS;
}

__attribute__((target("avx2"))) static void backward_ex_avx2 BACKWARD_EX_PARAMS
{
    backward_ex_body BACKWARD_EX_ARGS;
}
#endif

static void backward_ex_generic BACKWARD_EX_PARAMS
{
    backward_ex_body BACKWARD_EX_ARGS;
}

void subsae__feature_backward_ex BACKWARD_EX_PARAMS
{
#if LOSSES_X86
    if (__builtin_cpu_supports("avx512f")) {
        backward_ex_avx512 BACKWARD_EX_ARGS;
        return;
    }
    if (__builtin_cpu_supports("avx2")) {
        backward_ex_avx2 BACKWARD_EX_ARGS;
        return;
    }
#endif
    backward_ex_generic BACKWARD_EX_ARGS;
}
