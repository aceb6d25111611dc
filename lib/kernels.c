/* Inner loops of encoding and training (see kernels.h). On x86-64 with GCC
 * the hot loops exist in AVX-512 and AVX2 variants chosen at run time
 * (explicit dispatch on the CPU's features), and a portable fallback. The vector
 * variants compute exactly the same comparisons and sums in the same order
 * per element as the scalar code wherever selection depends on it. */
#include "kernels.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SUBSAE_X86 1
#include <immintrin.h>
#else
#define SUBSAE_X86 0
#endif

/* 2: AVX-512F, 1: AVX2, 0: baseline. */
static inline int cpu_level(void)
{
#if SUBSAE_X86
    if (__builtin_cpu_supports("avx512f"))
        return 2;
    if (__builtin_cpu_supports("avx2"))
        return 1;
#endif
    return 0;
}

/* Variants of a loop kernel: the body is an always-inline function, and
 * thin wrappers compiled for AVX-512 and AVX2 inline it so that GCC
 * vectorises it for each (plain target attributes: unlike target_clones
 * they keep the symbols hidden). */
#define ALWAYS_INLINE static inline __attribute__((always_inline))
#if SUBSAE_X86
#define VARIANTS(ret, name, params, args)                              \
    __attribute__((target("avx512f"))) static ret name##_avx512 params \
    {                                                                  \
        return name##_body args;                                       \
    }                                                                  \
    __attribute__((target("avx2"))) static ret name##_avx2 params      \
    {                                                                  \
        return name##_body args;                                       \
    }                                                                  \
    static ret name##_generic params                                   \
    {                                                                  \
        return name##_body args;                                       \
    }                                                                  \
    ret subsae__##name params                                          \
    {                                                                  \
        switch (cpu_level()) {                                         \
        case 2: return name##_avx512 args;                             \
        case 1: return name##_avx2 args;                               \
        default: return name##_generic args;                           \
        }                                                              \
    }
#else
#define VARIANTS(ret, name, params, args) \
    ret subsae__##name params             \
    {                                     \
        return name##_body args;          \
    }
#endif

/* ---- top-k ------------------------------------------------------------ */

/* First j' >= j with row[j'] + bias[j'] > thr (bias may be NULL), or m. */
static int64_t next_above_scalar(const float *row, const float *bias, int64_t j, int64_t m,
                                 float thr)
{
    if (bias) {
        for (; j < m; j++)
            if (row[j] + bias[j] > thr)
                return j;
    } else {
        for (; j < m; j++)
            if (row[j] > thr)
                return j;
    }
    return m;
}

#if SUBSAE_X86
/* next_above for one vector width, written once and instantiated for
 * AVX-512 (V __m512, P _mm512, 16 lanes) and AVX2 (__m256, _mm256, 8):
 * two vectors a step; GT gives the lanes of x above t as bits. */
#define LOAD_ROW(P, k) P##_loadu_ps(row + (k))
#define LOAD_BIASED(P, k) P##_add_ps(P##_loadu_ps(row + (k)), P##_loadu_ps(bias + (k)))

#define NEXT_ABOVE_STEPS(V, P, LANES, GT, LOAD)         \
    for (; j + 2 * LANES <= m; j += 2 * LANES) {        \
        V a = LOAD(P, j);                               \
        V b = LOAD(P, j + LANES);                       \
        uint32_t mask = GT(a, t) | (GT(b, t) << LANES); \
        if (mask)                                       \
            return j + __builtin_ctz(mask);             \
    }

#define NEXT_ABOVE(TARGET, NAME, V, P, LANES, GT)                                            \
    __attribute__((target(TARGET))) static int64_t NAME(const float *row, const float *bias, \
                                                        int64_t j, int64_t m, float thr)     \
    {                                                                                        \
        const V t = P##_set1_ps(thr);                                                        \
        if (bias) {                                                                          \
            NEXT_ABOVE_STEPS(V, P, LANES, GT, LOAD_BIASED)                                   \
        } else {                                                                             \
            NEXT_ABOVE_STEPS(V, P, LANES, GT, LOAD_ROW)                                      \
        }                                                                                    \
        return next_above_scalar(row, bias, j, m, thr);                                      \
    }

#define GT_MASK512(x, t) ((uint32_t)_mm512_cmp_ps_mask((x), (t), _CMP_GT_OQ))
#define GT_MASK256(x, t) ((uint32_t)_mm256_movemask_ps(_mm256_cmp_ps((x), (t), _CMP_GT_OQ)))

NEXT_ABOVE("avx512f", next_above_avx512, __m512, _mm512, 16, GT_MASK512)
NEXT_ABOVE("avx2", next_above_avx2, __m256, _mm256, 8, GT_MASK256)
#endif

typedef int64_t (*next_above_fn)(const float *, const float *, int64_t, int64_t, float);

static next_above_fn pick_next_above(void)
{
#if SUBSAE_X86
    switch (cpu_level()) {
    case 2: return next_above_avx512;
    case 1: return next_above_avx2;
    default: break;
    }
#endif
    return next_above_scalar;
}

/* a beats b: larger key, ties to the lower index. */
static inline bool beats(float ka, int32_t ia, float kb, int32_t ib)
{
    return ka > kb || (ka == kb && ia < ib);
}

static inline float key_at(const float *row, const float *bias, const float *weight, int64_t j)
{
    float v = bias ? row[j] + bias[j] : row[j];
    return weight ? v * weight[j] : v;
}

/* Insert (key, j) into the sorted (descending) list of `len` entries,
 * keeping at most `cap` entries. j is larger than every index already in
 * the list, so it goes after the entries with an equal key. */
static inline void sorted_insert(float *keys, int32_t *idx, int64_t len, int64_t cap, float key,
                                 int32_t j)
{
    int64_t pos = len < cap ? len : cap - 1;
    while (pos > 0 && keys[pos - 1] < key) {
        if (pos < cap) {
            keys[pos] = keys[pos - 1];
            idx[pos] = idx[pos - 1];
        }
        pos--;
    }
    keys[pos] = key;
    idx[pos] = j;
}

/* Min-heap on "worst first" (the entry every other entry beats). */
static void sift_down(float *keys, int32_t *idx, int64_t n, int64_t i)
{
    for (;;) {
        int64_t worst = i, l = 2 * i + 1, r = l + 1;
        if (l < n && beats(keys[worst], idx[worst], keys[l], idx[l]))
            worst = l;
        if (r < n && beats(keys[worst], idx[worst], keys[r], idx[r]))
            worst = r;
        if (worst == i)
            return;
        float tk = keys[i];
        int32_t ti = idx[i];
        keys[i] = keys[worst];
        idx[i] = idx[worst];
        keys[worst] = tk;
        idx[worst] = ti;
        i = worst;
    }
}

enum { SORTED_LIST_MAX = 48 };

/* The selection of subsae__topk_row as a scan that can stop and resume
 * between chunks of the row: entries j0 .. j0 + count - 1 (row, bias and
 * weight point at entry j0), `*len` entries held so far (0 at the start of
 * a row). The sequence of comparisons and moves is the same however the
 * row is cut, so the result is too. */
static void topk_scan(const float *row, const float *bias, const float *weight, int64_t j0,
                      int64_t count, int64_t k, int64_t *len, int32_t *idx, float *keys)
{
    int64_t j = 0, have = *len;
    if (k <= SORTED_LIST_MAX) {
        for (; have < k && j < count; j++, have++)
            sorted_insert(keys, idx, have, k, key_at(row, bias, weight, j), (int32_t)(j0 + j));
        if (have == k) {
            if (weight) {
                for (; j < count; j++) {
                    float key = key_at(row, bias, weight, j);
                    if (key > keys[k - 1])
                        sorted_insert(keys, idx, k, k, key, (int32_t)(j0 + j));
                }
            } else {
                next_above_fn next = pick_next_above();
                for (j = next(row, bias, j, count, keys[k - 1]); j < count;
                     j = next(row, bias, j + 1, count, keys[k - 1]))
                    sorted_insert(keys, idx, k, k, key_at(row, bias, NULL, j),
                                  (int32_t)(j0 + j));
            }
        }
    } else {
        for (; have < k && j < count; j++) {
            keys[have] = key_at(row, bias, weight, j);
            idx[have] = (int32_t)(j0 + j);
            if (++have == k)
                for (int64_t i = k / 2; i-- > 0;)
                    sift_down(keys, idx, k, i);
        }
        if (have == k) {
            next_above_fn next = pick_next_above();
            for (; j < count; j++) {
                if (!weight) {
                    j = next(row, bias, j, count, keys[0]);
                    if (j >= count)
                        break;
                }
                float key = key_at(row, bias, weight, j);
                if (key > keys[0]) {
                    keys[0] = key;
                    idx[0] = (int32_t)(j0 + j);
                    sift_down(keys, idx, k, 0);
                }
            }
        }
    }
    *len = have;
}

/* After the last chunk: the heap (k > SORTED_LIST_MAX) sorted, best first. */
static void topk_finish(int64_t k, int32_t *idx, float *keys)
{
    if (k <= SORTED_LIST_MAX)
        return;
    for (int64_t n = k - 1; n > 0; n--) {
        float tk = keys[0];
        int32_t ti = idx[0];
        keys[0] = keys[n];
        idx[0] = idx[n];
        keys[n] = tk;
        idx[n] = ti;
        sift_down(keys, idx, n, 0);
    }
}

void subsae__topk_row(const float *row, const float *bias, const float *weight, int64_t m,
                      int64_t k, int32_t *idx, float *val)
{
    int64_t len = 0;
    topk_scan(row, bias, weight, 0, m, k, &len, idx, val); /* keys live in val */
    topk_finish(k, idx, val);
    if (weight)
        for (int64_t j = 0; j < k; j++)
            val[j] = bias ? row[idx[j]] + bias[idx[j]] : row[idx[j]];
}

void subsae__topk_chunk(const float *row, const float *bias, int64_t j0, int64_t count,
                        int64_t k, int64_t *len, int32_t *idx, float *val)
{
    topk_scan(row, bias, NULL, j0, count, k, len, idx, val);
}

void subsae__topk_done(int64_t k, int32_t *idx, float *val)
{
    topk_finish(k, idx, val);
}

/* ---- sparse decode and backward -------------------------------------- */

/* Ask for two rows (a and b, of na and nb floats) to be brought into the
 * cache, one prefetch per 64-byte line. */
ALWAYS_INLINE void prefetch_rows(const float *a, int64_t na, const float *b, int64_t nb)
{
    for (int64_t t = 0; t < na; t += 16)
        __builtin_prefetch(a + t, 0, 3);
    for (int64_t t = 0; t < nb; t += 16)
        __builtin_prefetch(b + t, 0, 3);
}

ALWAYS_INLINE void sparse_decode_row_body(float *out, const float *b, const float *W,
                                          int64_t ld, const int32_t *idx, const float *val,
                                          int64_t k, int64_t d)
{
    if (b)
        memcpy(out, b, (size_t)d * sizeof *out);
    else
        memset(out, 0, (size_t)d * sizeof *out);
    for (int64_t j = 0; j < k; j++) {
        /* Decoder rows are scattered over the model: fetch the next one
         * while this one is added. */
        if (j + 1 < k && idx[j + 1] >= 0)
            prefetch_rows(W + (int64_t)idx[j + 1] * ld, d, NULL, 0);
        if (idx[j] < 0 || val[j] == 0.0f)
            continue;
        const float *w = W + (int64_t)idx[j] * ld;
        const float v = val[j];
#pragma omp simd
        for (int64_t t = 0; t < d; t++)
            out[t] += v * w[t];
    }
}

ALWAYS_INLINE void feature_backward_body(const int32_t *rows, const float *z, int64_t count,
                                         const float *g, int64_t g_stride, int64_t d_out,
                                         const float *xin, int64_t xin_stride, int64_t d_in,
                                         const float *wdec, float *gdec, float *genc,
                                         float *gbenc)
{
    memset(gdec, 0, (size_t)d_out * sizeof *gdec);
    memset(genc, 0, (size_t)d_in * sizeof *genc);
    float gb = 0.0f;
    if (count > 0)
        prefetch_rows(g + (int64_t)rows[0] * g_stride, d_out,
                      xin + (int64_t)rows[0] * xin_stride, d_in);
    for (int64_t p = 0; p < count; p++) {
        /* The rows are scattered over the batch: fetch the next pair's
         * while this one is summed. */
        if (p + 1 < count)
            prefetch_rows(g + (int64_t)rows[p + 1] * g_stride, d_out,
                          xin + (int64_t)rows[p + 1] * xin_stride, d_in);
        const float *gr = g + (int64_t)rows[p] * g_stride;
        const float zp = z[p];
        float dp = 0.0f;
#pragma omp simd reduction(+ : dp)
        for (int64_t t = 0; t < d_out; t++)
            dp += gr[t] * wdec[t];
#pragma omp simd
        for (int64_t t = 0; t < d_out; t++)
            gdec[t] += zp * gr[t];
        const float *xr = xin + (int64_t)rows[p] * xin_stride;
#pragma omp simd
        for (int64_t t = 0; t < d_in; t++)
            genc[t] += dp * xr[t];
        gb += dp;
    }
    *gbenc = gb;
}

VARIANTS(void, sparse_decode_row,
         (float *out, const float *b, const float *W, int64_t ld, const int32_t *idx,
          const float *val, int64_t k, int64_t d),
         (out, b, W, ld, idx, val, k, d))

VARIANTS(void, feature_backward,
         (const int32_t *rows, const float *z, int64_t count, const float *g, int64_t g_stride,
          int64_t d_out, const float *xin, int64_t xin_stride, int64_t d_in, const float *wdec,
          float *gdec, float *genc, float *gbenc),
         (rows, z, count, g, g_stride, d_out, xin, xin_stride, d_in, wdec, gdec, genc, gbenc))

/* ---- Adam ------------------------------------------------------------- */

static void adam_scalar(float *w, float *m, float *v, const float *g, int64_t n, float gs,
                        float b1, float b2, float step, float inv_bias2, float eps)
{
    const float c1 = 1.0f - b1, c2 = 1.0f - b2;
    for (int64_t i = 0; i < n; i++) {
        float gi = g ? gs * g[i] : 0.0f;
        float mi = b1 * m[i] + c1 * gi;
        float vi = b2 * v[i] + c2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        w[i] -= step * mi / (sqrtf(vi) * inv_bias2 + eps);
    }
}

#if SUBSAE_X86
/* The vector Adam kernels, written once for both widths and instantiated
 * below for AVX-512 (V __m512, P _mm512, 16 lanes) and AVX2 (__m256,
 * _mm256, 8 lanes). ADAM_MOMENTS and ADAM_WEIGHTS are adam_scalar's
 * arithmetic, operation for operation, on the lanes at i: the new moments
 * mi, vi, then the new weights wi. */
#define ADAM_CONSTANTS(V, P)                                            \
    const V vb1 = P##_set1_ps(b1), vb2 = P##_set1_ps(b2);               \
    const V vc1 = P##_set1_ps(1.0f - b1), vc2 = P##_set1_ps(1.0f - b2); \
    const V vgs = P##_set1_ps(gs), vstep = P##_set1_ps(step);           \
    const V vib2 = P##_set1_ps(inv_bias2), veps = P##_set1_ps(eps)

#define ADAM_MOMENTS(V, P)                                                        \
    V gi = g ? P##_mul_ps(vgs, P##_loadu_ps(g + i)) : P##_setzero_ps();           \
    V mi = P##_add_ps(P##_mul_ps(vb1, P##_loadu_ps(m + i)), P##_mul_ps(vc1, gi)); \
    V vi = P##_add_ps(P##_mul_ps(vb2, P##_loadu_ps(v + i)), P##_mul_ps(P##_mul_ps(vc2, gi), gi))

#define ADAM_WEIGHTS(V, P)                                       \
    V den = P##_add_ps(P##_mul_ps(P##_sqrt_ps(vi), vib2), veps); \
    V wi = P##_sub_ps(P##_loadu_ps(w + i), P##_div_ps(P##_mul_ps(vstep, mi), den))

#define ADAM_UPDATE(TARGET, NAME, V, P, LANES)                                                 \
    __attribute__((target(TARGET))) static void NAME(                                          \
        float *w, float *m, float *v, const float *g, int64_t n, float gs, float b1, float b2, \
        float step, float inv_bias2, float eps)                                                \
    {                                                                                          \
        ADAM_CONSTANTS(V, P);                                                                  \
        int64_t i = 0;                                                                         \
        for (; i + LANES <= n; i += LANES) {                                                   \
            ADAM_MOMENTS(V, P);                                                                \
            P##_storeu_ps(m + i, mi);                                                          \
            P##_storeu_ps(v + i, vi);                                                          \
            ADAM_WEIGHTS(V, P);                                                                \
            P##_storeu_ps(w + i, wi);                                                          \
        }                                                                                      \
        adam_scalar(w + i, m + i, v + i, g ? g + i : NULL, n - i, gs, b1, b2, step, inv_bias2, \
                    eps);                                                                      \
    }

ADAM_UPDATE("avx512f", adam_avx512, __m512, _mm512, 16)
ADAM_UPDATE("avx2", adam_avx2, __m256, _mm256, 8)
#endif

/* The same arithmetic as adam_* without storing anything: whether every
 * new m, v and w would be finite. Each variant computes exactly what the
 * matching adam_* variant would store (same operations per element, in
 * the same order), so the answer is exact. */
static inline bool finite_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return (u & 0x7f800000u) != 0x7f800000u;
}

static bool adam_finite_scalar(const float *w, const float *m, const float *v, const float *g,
                               int64_t n, float gs, float b1, float b2, float step,
                               float inv_bias2, float eps)
{
    const float c1 = 1.0f - b1, c2 = 1.0f - b2;
    unsigned finite = 1; /* bitwise, no branches */
    for (int64_t i = 0; i < n; i++) {
        float gi = g ? gs * g[i] : 0.0f;
        float mi = b1 * m[i] + c1 * gi;
        float vi = b2 * v[i] + c2 * gi * gi;
        float wi = w[i] - step * mi / (sqrtf(vi) * inv_bias2 + eps);
        finite &= (unsigned)finite_bits(mi) & (unsigned)finite_bits(vi) &
                  (unsigned)finite_bits(wi);
    }
    return finite != 0;
}

#if SUBSAE_X86
/* As ADAM_UPDATE, storing nothing: x * 0 is 0 for finite x, NaN for
 * infinities and NaN, so a lane of `probe` that is not 0 marks a
 * non-finite result. BAD is how a width keeps the marks: its type, its
 * empty value, adding the lanes of `probe` and testing for none. */
#define ADAM_FINITE(TARGET, NAME, V, P, LANES, BAD_T, BAD_NONE, BAD_ADD, BAD_EMPTY)           \
    __attribute__((target(TARGET))) static bool NAME(                                         \
        const float *w, const float *m, const float *v, const float *g, int64_t n, float gs,  \
        float b1, float b2, float step, float inv_bias2, float eps)                           \
    {                                                                                         \
        ADAM_CONSTANTS(V, P);                                                                 \
        const V zero = P##_setzero_ps();                                                      \
        BAD_T bad = BAD_NONE;                                                                 \
        int64_t i = 0;                                                                        \
        for (; i + LANES <= n; i += LANES) {                                                  \
            ADAM_MOMENTS(V, P);                                                               \
            ADAM_WEIGHTS(V, P);                                                               \
            V probe = P##_add_ps(P##_add_ps(P##_mul_ps(mi, zero), P##_mul_ps(vi, zero)),      \
                                 P##_mul_ps(wi, zero));                                       \
            bad = BAD_ADD(bad, probe, zero);                                                  \
        }                                                                                     \
        return BAD_EMPTY(bad) && adam_finite_scalar(w + i, m + i, v + i, g ? g + i : NULL,    \
                                                    n - i, gs, b1, b2, step, inv_bias2, eps); \
    }

#define BAD512_ADD(bad, probe, zero) \
    (__mmask16)((bad) | _mm512_cmp_ps_mask((probe), (zero), _CMP_NEQ_UQ))
#define BAD512_EMPTY(bad) ((bad) == 0)
#define BAD256_ADD(bad, probe, zero) \
    _mm256_or_ps((bad), _mm256_cmp_ps((probe), (zero), _CMP_NEQ_UQ))
#define BAD256_EMPTY(bad) (_mm256_movemask_ps(bad) == 0)

ADAM_FINITE("avx512f", adam_finite_avx512, __m512, _mm512, 16, __mmask16, 0, BAD512_ADD,
            BAD512_EMPTY)
ADAM_FINITE("avx2", adam_finite_avx2, __m256, _mm256, 8, __m256, _mm256_setzero_ps(),
            BAD256_ADD, BAD256_EMPTY)
#endif

bool subsae__adam_finite(const float *w, const float *m, const float *v, const float *g,
                         int64_t n, float gs, float b1, float b2, float step, float inv_bias2,
                         float eps)
{
#if SUBSAE_X86
    switch (cpu_level()) {
    case 2: return adam_finite_avx512(w, m, v, g, n, gs, b1, b2, step, inv_bias2, eps);
    case 1: return adam_finite_avx2(w, m, v, g, n, gs, b1, b2, step, inv_bias2, eps);
    default: break;
    }
#endif
    return adam_finite_scalar(w, m, v, g, n, gs, b1, b2, step, inv_bias2, eps);
}

void subsae__adam(float *w, float *m, float *v, const float *g, int64_t n, float gs, float b1,
                  float b2, float step, float inv_bias2, float eps)
{
#if SUBSAE_X86
    switch (cpu_level()) {
    case 2: adam_avx512(w, m, v, g, n, gs, b1, b2, step, inv_bias2, eps); return;
    case 1: adam_avx2(w, m, v, g, n, gs, b1, b2, step, inv_bias2, eps); return;
    default: break;
    }
#endif
    adam_scalar(w, m, v, g, n, gs, b1, b2, step, inv_bias2, eps);
}

/* ---- bf16 ---------------------------------------------------------------- */

/* Round to nearest even, NaN kept a quiet NaN (dtype.c's
 * subsae__f32_to_bf16, bit for bit), without branches so that it
 * vectorises. */
ALWAYS_INLINE void bf16_round_body(uint16_t *dst, const float *src, int64_t n)
{
#pragma omp simd
    for (int64_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &src[i], sizeof u);
        const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
        const uint32_t quiet = (u >> 16) | 0x40u;
        dst[i] = (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? quiet : rounded);
    }
}

#if SUBSAE_X86
__attribute__((target("avx512f,avx512bw"))) static void bf16_round_avx512(uint16_t *dst,
                                                                          const float *src,
                                                                          int64_t n)
{
    bf16_round_body(dst, src, n);
}

__attribute__((target("avx2"))) static void bf16_round_avx2(uint16_t *dst, const float *src,
                                                            int64_t n)
{
    bf16_round_body(dst, src, n);
}
#endif

void subsae__bf16_round(uint16_t *dst, const float *src, int64_t n)
{
#if SUBSAE_X86
    switch (cpu_level()) {
    case 2:
        if (__builtin_cpu_supports("avx512bw")) {
            bf16_round_avx512(dst, src, n);
            return;
        }
        break;
    case 1: bf16_round_avx2(dst, src, n); return;
    default: break;
    }
#endif
    bf16_round_body(dst, src, n);
}

/* ---- reductions -------------------------------------------------------- */

ALWAYS_INLINE double dot_body(const float *a, const float *b, int64_t n)
{
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < n; i++)
        s += (double)a[i] * (double)b[i];
    return s;
}

ALWAYS_INLINE double sumsq_body(const float *a, int64_t n)
{
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < n; i++)
        s += (double)a[i] * (double)a[i];
    return s;
}

/* 16 running sums, lane l over the elements l mod 16, added in a fixed
 * tree: the same bits whatever the vector width and the alignment. */
ALWAYS_INLINE float dot_f32_body(const float *a, const float *b, int64_t n)
{
    float lane[16] = {0.0f};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int l = 0; l < 16; l++)
            lane[l] += a[i + l] * b[i + l];
    for (int l = 0; i < n; i++, l++)
        lane[l] += a[i] * b[i];
    for (int w = 8; w > 0; w /= 2)
        for (int l = 0; l < w; l++)
            lane[l] += lane[l + w];
    return lane[0];
}

VARIANTS(double, dot, (const float *a, const float *b, int64_t n), (a, b, n))
VARIANTS(float, dot_f32, (const float *a, const float *b, int64_t n), (a, b, n))
VARIANTS(double, sumsq, (const float *a, int64_t n), (a, n))

void subsae__normalize_row(float *row, int64_t d)
{
    double nn = subsae__sumsq(row, d);
    if (nn > 0.0) {
        float inv = (float)(1.0 / sqrt(nn));
        for (int64_t j = 0; j < d; j++)
            row[j] *= inv;
    }
}

int64_t subsae__find_nonfinite(const float *x, int64_t n)
{
    /* Scan in blocks: a block whose sum of x * 0 is 0 is finite (inf * 0 and
     * NaN give NaN), then locate the culprit element by element. */
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
        for (int64_t j = i; j < i + 64; j++)
            acc += x[j] * 0.0f;
        if (acc != 0.0f || acc != acc)
            break;
    }
    for (; i < n; i++)
        if (!isfinite(x[i]))
            return i;
    return n;
}
