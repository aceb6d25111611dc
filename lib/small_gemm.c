/* The encoder's fp32 product for a few rows (1 to 64, ISSUE 17): a kernel
 * that reads each row of W_enc once per call.
 *
 * oneDNN's brgemm (and OpenBLAS's sgemm) at M = 16 ran at about half their
 * large-M rate, so 16 rows cost 1.7x one row where a product bound by
 * reading the weights should cost about the same. Here each block of four
 * features (12 KB of W_enc at d 768) is read from memory once and stays in
 * L1 while every block of four rows of x (in L1/L2) meets it: sixteen
 * AVX-512 accumulators, one per (feature, row), of 16 lanes each, reduced
 * once per block.
 *
 * Bits: C[i][j] is x_i . w_j summed lane by lane (k mod 16, in increasing
 * k; the tail of d by a masked load), then the 16 lanes by a fixed tree. So
 * it depends on d, x_i and w_j only: not on the number of rows, on which
 * block a row or feature falls in, nor on the thread. */
#include "small_gemm.h"

#include <stdbool.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define SMALL_TARGET __attribute__((target("avx512f,fma")))

/* Blocks of 4 features x 4 rows measured fastest (2 x 8, 3 x 8 and 4 x 6
 * were slower at 16 and 64 rows); the weights one block on are fetched. */
enum { FEATS = 4, ROWS = 4, AHEAD = 1 };

/* Software prefetch of the weights one block on: the hardware's
 * prefetch alone left the rows of a block waiting on memory while the
 * block computed (one thread, d 768 / d_sae 24,576: 16 rows took 8.1 ms
 * without, 6.0 ms with; one row 2.9 ms). */
struct ahead {
    const float *at, *end;
    int64_t per; /* lines per call */
};

SMALL_TARGET static inline void fetch_ahead(struct ahead *pf)
{
    for (int64_t p = 0; p < pf->per && pf->at < pf->end; p++, pf->at += 16)
        _mm_prefetch((const char *)pf->at, _MM_HINT_T0);
}

/* The lanes' sum in a fixed order: halves, then quarters, ... */
SMALL_TARGET static inline float lanes_sum(__m512 v)
{
    __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v),
                             _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    q = _mm_add_ss(q, _mm_movehdup_ps(q));
    return _mm_cvtss_f32(q);
}

/* An f x r block (f <= FEATS, r <= ROWS, constants where it is inlined, so
 * that the accumulators live in registers). */
SMALL_TARGET static inline __attribute__((always_inline)) void block(
    int f, int r, int64_t d, const float *x, int64_t ldx, const float *w, int64_t ldw,
    struct ahead *pf, float *c, int64_t ldc)
{
    __m512 acc[FEATS][ROWS];
#pragma GCC unroll 4
    for (int a = 0; a < f; a++)
#pragma GCC unroll 4
        for (int b = 0; b < r; b++)
            acc[a][b] = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 16 <= d; k += 16) {
        __m512 wv[FEATS];
#pragma GCC unroll 4
        for (int a = 0; a < f; a++)
            wv[a] = _mm512_loadu_ps(w + a * ldw + k);
        fetch_ahead(pf);
#pragma GCC unroll 4
        for (int b = 0; b < r; b++) {
            const __m512 xv = _mm512_loadu_ps(x + b * ldx + k);
#pragma GCC unroll 4
            for (int a = 0; a < f; a++)
                acc[a][b] = _mm512_fmadd_ps(wv[a], xv, acc[a][b]);
        }
    }
    if (k < d) {
        const __mmask16 m = (__mmask16)((1u << (d - k)) - 1u);
        __m512 wv[FEATS];
#pragma GCC unroll 4
        for (int a = 0; a < f; a++)
            wv[a] = _mm512_maskz_loadu_ps(m, w + a * ldw + k);
#pragma GCC unroll 4
        for (int b = 0; b < r; b++) {
            const __m512 xv = _mm512_maskz_loadu_ps(m, x + b * ldx + k);
#pragma GCC unroll 4
            for (int a = 0; a < f; a++)
                acc[a][b] = _mm512_fmadd_ps(wv[a], xv, acc[a][b]);
        }
    }
#pragma GCC unroll 4
    for (int a = 0; a < f; a++)
#pragma GCC unroll 4
        for (int b = 0; b < r; b++)
            c[b * ldc + a] = lanes_sum(acc[a][b]);
}

/* All row blocks against f features (f a constant where inlined). */
SMALL_TARGET static inline __attribute__((always_inline)) void feature_block(
    int f, int64_t rows, int64_t d, const float *x, int64_t ldx, const float *w, int64_t ldw,
    struct ahead *pf, float *c, int64_t ldc)
{
    int64_t i = 0;
    for (; i + ROWS <= rows; i += ROWS)
        block(f, ROWS, d, x + i * ldx, ldx, w, ldw, pf, c + i * ldc, ldc);
    /* The last rows (fewer than ROWS) by 4, 2 and 1. */
    if (rows - i >= 4) {
        block(f, 4, d, x + i * ldx, ldx, w, ldw, pf, c + i * ldc, ldc);
        i += 4;
    }
    if (rows - i >= 2) {
        block(f, 2, d, x + i * ldx, ldx, w, ldw, pf, c + i * ldc, ldc);
        i += 2;
    }
    if (rows - i >= 1)
        block(f, 1, d, x + i * ldx, ldx, w, ldw, pf, c + i * ldc, ldc);
}

SMALL_TARGET static void product(int64_t rows, int64_t cols, int64_t d, const float *x,
                                 int64_t ldx, const float *w, int64_t ldw, float *c,
                                 int64_t ldc)
{
    /* Lines to fetch per step of 16 k so that a block's steps (all row
     * blocks) fetch one block of W_enc. Up to one row block the hardware's
     * prefetch keeps up (software prefetch made one row 1.4x slower). */
    const int64_t steps = ((d + 15) / 16) * ((rows + ROWS - 1) / ROWS);
    const int64_t lines = (FEATS * ldw + 15) / 16;
    const int64_t per = rows > ROWS ? (lines + steps - 1) / steps : 0;
    const float *end = w + (cols - 1) * ldw + d; /* one past W's last element */
    int64_t j = 0;
    for (; j + FEATS <= cols; j += FEATS) {
        struct ahead pf = {w + (j + AHEAD * FEATS) * ldw, end, per};
        feature_block(FEATS, rows, d, x, ldx, w + j * ldw, ldw, &pf, c + j, ldc);
    }
    for (; j < cols; j++) {
        struct ahead none = {end, end, 0};
        feature_block(1, rows, d, x, ldx, w + j * ldw, ldw, &none, c + j, ldc);
    }
}

bool subsae__small_gemm_available(void)
{
    static int known = -1; /* every thread that races here stores the same */
    int have = __atomic_load_n(&known, __ATOMIC_RELAXED);
    if (have < 0) {
        __builtin_cpu_init();
        have = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
        __atomic_store_n(&known, have, __ATOMIC_RELAXED);
    }
    return have != 0;
}

void subsae__small_gemm(int64_t rows, int64_t cols, int64_t d, const float *x, int64_t ldx,
                        const float *w, int64_t ldw, float *c, int64_t ldc)
{
    product(rows, cols, d, x, ldx, w, ldw, c, ldc);
}

#else

bool subsae__small_gemm_available(void)
{
    return false;
}

void subsae__small_gemm(int64_t rows, int64_t cols, int64_t d, const float *x, int64_t ldx,
                        const float *w, int64_t ldw, float *c, int64_t ldc)
{
    (void)rows, (void)cols, (void)d, (void)x, (void)ldx, (void)w, (void)ldw, (void)c, (void)ldc;
}

#endif
