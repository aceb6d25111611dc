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
 *    output gradient g_aux, accumulated into the same rows;
 *  - gated (Rajamanoharan et al. 2024; SAELens' GatedTrainingSAE): z =
 *    [pi > 0] relu(exp(r) p + b_mag) with pi = p + b_gate, p = x_in . w_enc.
 *    An open gate with z > 0 sends dz = g . w_dec to b_mag, to r as dz (z -
 *    b_mag) and to w_enc as dz exp(r) x_in; every open gate sends dpi =
 *    g_gate . w_dec (the auxiliary reconstruction relu(pi) W_dec + b_dec
 *    with the decoder frozen) + lambda |w_dec| / n (the L1 term lambda / n
 *    sum relu(pi) |w_dec|) to b_gate and dpi x_in to w_enc. The gate itself
 *    passes no gradient (a step function).
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

ALWAYS_INLINE void backward_gated_body(struct subsae__gated_feature *f)
{
    const int64_t d_out = f->d_out, d_in = f->d_in;
    const float *wdec = f->wdec;
    float *gdec = f->gdec, *genc = f->genc;
    memset(gdec, 0, (size_t)d_out * sizeof *gdec);
    memset(genc, 0, (size_t)d_in * sizeof *genc);
    float gb_gate = 0.0f, gr_mag = 0.0f, gb_mag = 0.0f;
    double pi_sum = 0.0;
    int32_t active = 0;
    for (int64_t p = 0; p < f->count; p++) {
        const float *gr = f->g + (int64_t)f->rows[p] * d_out;
        const float *ga = f->g_gate + (int64_t)f->rows[p] * d_out;
        float dp = 0.0f, da = 0.0f;
#pragma omp simd reduction(+ : dp, da)
        for (int64_t j = 0; j < d_out; j++) {
            dp += gr[j] * wdec[j];
            da += ga[j] * wdec[j];
        }
        const float zp = f->z[p], dgate = da + f->l1_dz;
        float dmag = 0.0f;
        if (zp > 0.0f) {
            dmag = dp;
#pragma omp simd
            for (int64_t j = 0; j < d_out; j++)
                gdec[j] += zp * gr[j];
            gb_mag += dmag;
            gr_mag += dmag * (zp - f->b_mag);
            active++;
        }
        const float c = dgate + dmag * f->scale;
        const float *xr = f->xin + (int64_t)f->rows[p] * d_in;
#pragma omp simd
        for (int64_t j = 0; j < d_in; j++)
            genc[j] += c * xr[j];
        gb_gate += dgate;
        pi_sum += f->pi[p];
    }
    f->gb_gate = gb_gate;
    f->gr_mag = gr_mag;
    f->gb_mag = gb_mag;
    f->pi_sum = pi_sum;
    f->active = active;
}

#if LOSSES_X86
__attribute__((target("avx512f"))) static void backward_gated_avx512(
    struct subsae__gated_feature *f)
{
    backward_gated_body(f);
}

__attribute__((target("avx2"))) static void backward_gated_avx2(struct subsae__gated_feature *f)
{
    backward_gated_body(f);
}
#endif

static void backward_gated_generic(struct subsae__gated_feature *f)
{
    backward_gated_body(f);
}

void subsae__feature_backward_gated(struct subsae__gated_feature *f)
{
#if LOSSES_X86
    if (__builtin_cpu_supports("avx512f")) {
        backward_gated_avx512(f);
        return;
    }
    if (__builtin_cpu_supports("avx2")) {
        backward_gated_avx2(f);
        return;
    }
#endif
    backward_gated_generic(f);
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
