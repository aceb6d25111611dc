/* The encoder's product for a few rows (the small-batch encoder uses it up to
 * 32, ISSUE 17), fp32 and bf16: kernels that read each row of W_enc once
 * per call.
 *
 * oneDNN's brgemm (and OpenBLAS's sgemm) at M = 16 ran at about half their
 * large-M rate, and at M = 1 read W_enc at about 33 GB/s where the machine
 * streams 50 and more. Here each block of four features (12 KB of W_enc at
 * d 768 in fp32, 6 KB in bf16) is read from memory once and stays in L1
 * while every block of four rows of x (in L1/L2) meets it: sixteen
 * AVX-512 accumulators, one per (feature, row), of 16 float lanes each,
 * reduced once per block. fp32 accumulates with FMA, 16 products a step;
 * bf16 with AVX512_BF16's pair dot product (vdpbf16ps), 32 a step, into
 * the same float lanes.
 *
 * Bits: C[i][j] is x_i . w_j summed lane by lane (in increasing k; the
 * tail of d by a masked load), then the 16 lanes by a fixed tree. So it
 * depends on d, x_i and w_j only: not on the number of rows, on which
 * block a row or feature falls in, nor on the thread. */
#include "small_gemm.h"

#include "encoder_gemm.h"

#include <stdbool.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define FP32_TARGET __attribute__((target("avx512f,fma")))
#define BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512bf16,fma")))
#define UNROLL _Pragma("GCC unroll 4")

/* Blocks of 4 features x 4 rows measured fastest (2 x 8, 3 x 8 and 4 x 6
 * were slower at 16 and 64 rows); the weights one block on are fetched. */
enum { FEATS = 4, ROWS = 4, AHEAD = 1, LINE = 64 };

/* Software prefetch of the weights one block on: the hardware's
 * prefetch alone left the rows of a block waiting on memory while the
 * block computed (one thread, d 768 / d_sae 24,576: 16 rows took 8.1 ms
 * without, 6.0 ms with; one row 2.9 ms). */
struct ahead {
    const char *at, *end;
    int64_t per; /* lines per step */
};

static inline void fetch_ahead(struct ahead *pf)
{
    for (int64_t p = 0; p < pf->per && pf->at < pf->end; p++, pf->at += LINE)
        _mm_prefetch(pf->at, _MM_HINT_T0);
}

/* The lanes' sum in a fixed order: halves, then quarters, ... */
FP32_TARGET static inline float lanes_sum(__m512 v)
{
    __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v),
                             _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    q = _mm_add_ss(q, _mm_movehdup_ps(q));
    return _mm_cvtss_f32(q);
}

/* Lines to fetch per step so that a block's steps (all row blocks) fetch
 * the next block of W_enc. Up to one row block the hardware's prefetch
 * keeps up (software prefetch made one row 1.4x slower). */
static int64_t lines_per_step(int64_t rows, int64_t d, int64_t ldw, int64_t step, size_t elem)
{
    const int64_t steps = ((d + step - 1) / step) * ((rows + ROWS - 1) / ROWS);
    const int64_t lines = (FEATS * ldw * (int64_t)elem + LINE - 1) / LINE;
    return rows > ROWS ? (lines + steps - 1) / steps : 0;
}

/* Rows are taken in groups whose x stays in L1 beside a block of W_enc
 * (16 rows of d 768 in fp32, 48 KB, did not: 16 rows cost 2x 8 rows), and
 * features in panels whose W_enc stays in L2: the first group reads a
 * panel from memory (prefetched), the next ones from L2. */
enum { L1_ROWS_BYTES = 24 << 10, L2_PANEL_BYTES = 256 << 10 };

struct tiling {
    int64_t group, panel;
};

/* v rounded down to a multiple of `unit`, at least `unit`, at most `most`. */
static int64_t blocks_of(int64_t v, int64_t unit, int64_t most)
{
    v = v / unit * unit;
    return v < unit ? unit : v > most ? most : v;
}

static struct tiling tiling(int64_t d, int64_t ldw, size_t elem)
{
    struct tiling t = {blocks_of(L1_ROWS_BYTES / (d * (int64_t)elem), ROWS, 64),
                       blocks_of(L2_PANEL_BYTES / (ldw * (int64_t)elem), FEATS, INT64_MAX)};
    return t;
}

/* The kernel for one element type: ELEM, STEP elements a vector, VEC its
 * vector type, LOAD(p) and LOAD_FIRST(p, n) (the first n elements, zeros
 * after), and ACC(acc, w, x) adding the products of a step into acc. An f
 * x r block (f <= FEATS, r <= ROWS, constants where it is inlined, so that
 * the accumulators live in registers), all row blocks against f features,
 * a panel of features for a group of rows, and the product. */
#define SMALL_KERNEL(NAME, TARGET, ELEM, STEP, VEC, LOAD, LOAD_FIRST, ACC)                   \
    TARGET static inline __attribute__((always_inline)) void NAME##_block(                   \
        int f, int r, int64_t d, const ELEM *x, int64_t ldx, const ELEM *w, int64_t ldw,     \
        struct ahead *pf, float *c, int64_t ldc)                                             \
    {                                                                                        \
        __m512 acc[FEATS][ROWS];                                                             \
        UNROLL for (int a = 0; a < f; a++) UNROLL for (int b = 0; b < r; b++)                \
            acc[a][b] = _mm512_setzero_ps();                                                 \
        int64_t k = 0;                                                                       \
        for (; k + STEP <= d; k += STEP) {                                                   \
            VEC wv[FEATS];                                                                   \
            UNROLL for (int a = 0; a < f; a++) wv[a] = LOAD(w + a * ldw + k);                \
            fetch_ahead(pf);                                                                 \
            UNROLL for (int b = 0; b < r; b++)                                               \
            {                                                                                \
                const VEC xv = LOAD(x + b * ldx + k);                                        \
                UNROLL for (int a = 0; a < f; a++) acc[a][b] = ACC(acc[a][b], wv[a], xv);    \
            }                                                                                \
        }                                                                                    \
        if (k < d) {                                                                         \
            VEC wv[FEATS];                                                                   \
            UNROLL for (int a = 0; a < f; a++) wv[a] = LOAD_FIRST(w + a * ldw + k, d - k);   \
            UNROLL for (int b = 0; b < r; b++)                                               \
            {                                                                                \
                const VEC xv = LOAD_FIRST(x + b * ldx + k, d - k);                           \
                UNROLL for (int a = 0; a < f; a++) acc[a][b] = ACC(acc[a][b], wv[a], xv);    \
            }                                                                                \
        }                                                                                    \
        UNROLL for (int a = 0; a < f; a++) UNROLL for (int b = 0; b < r; b++)                \
            c[b * ldc + a] = lanes_sum(acc[a][b]);                                           \
    }                                                                                        \
                                                                                             \
    TARGET static inline __attribute__((always_inline)) void NAME##_feature_block(           \
        int f, int64_t rows, int64_t d, const ELEM *x, int64_t ldx, const ELEM *w,           \
        int64_t ldw, struct ahead *pf, float *c, int64_t ldc)                                \
    {                                                                                        \
        int64_t i = 0;                                                                       \
        for (; i + ROWS <= rows; i += ROWS)                                                  \
            NAME##_block(f, ROWS, d, x + i * ldx, ldx, w, ldw, pf, c + i * ldc, ldc);        \
        /* The last rows (fewer than ROWS) by 2 and 1. */                                    \
        if (rows - i >= 2) {                                                                 \
            NAME##_block(f, 2, d, x + i * ldx, ldx, w, ldw, pf, c + i * ldc, ldc);           \
            i += 2;                                                                          \
        }                                                                                    \
        if (rows - i >= 1)                                                                   \
            NAME##_block(f, 1, d, x + i * ldx, ldx, w, ldw, pf, c + i * ldc, ldc);           \
    }                                                                                        \
                                                                                             \
    TARGET static void NAME##_panel(int64_t rows, int64_t cols, int64_t d, const ELEM *x,    \
                                    int64_t ldx, const ELEM *w, int64_t ldw, float *c,       \
                                    int64_t ldc, const char *end, bool fetch)                \
    {                                                                                        \
        const int64_t per = fetch ? lines_per_step(rows, d, ldw, STEP, sizeof(ELEM)) : 0;    \
        int64_t j = 0;                                                                       \
        for (; j + FEATS <= cols; j += FEATS) {                                              \
            struct ahead pf = {(const char *)(w + (j + AHEAD * FEATS) * ldw), end, per};     \
            NAME##_feature_block(FEATS, rows, d, x, ldx, w + j * ldw, ldw, &pf, c + j, ldc); \
        }                                                                                    \
        for (; j < cols; j++) {                                                              \
            struct ahead none = {end, end, 0};                                               \
            NAME##_feature_block(1, rows, d, x, ldx, w + j * ldw, ldw, &none, c + j, ldc);   \
        }                                                                                    \
    }                                                                                        \
                                                                                             \
    TARGET static void NAME##_product(int64_t rows, int64_t cols, int64_t d, const ELEM *x,  \
                                      int64_t ldx, const ELEM *w, int64_t ldw, float *c,     \
                                      int64_t ldc)                                           \
    {                                                                                        \
        const struct tiling t = tiling(d, ldw, sizeof(ELEM));                                \
        const char *end = (const char *)(w + (cols - 1) * ldw + d);                          \
        for (int64_t j = 0; j < cols; j += t.panel) {                                        \
            const int64_t pc = cols - j < t.panel ? cols - j : t.panel;                      \
            for (int64_t i = 0; i < rows; i += t.group) {                                    \
                const int64_t rc = rows - i < t.group ? rows - i : t.group;                  \
                NAME##_panel(rc, pc, d, x + i * ldx, ldx, w + j * ldw, ldw, c + i * ldc + j, \
                             ldc, end, i == 0);                                              \
            }                                                                                \
        }                                                                                    \
    }

#define FP32_LOAD(p) _mm512_loadu_ps(p)
#define FP32_LOAD_FIRST(p, n) _mm512_maskz_loadu_ps((__mmask16)((1u << (n)) - 1u), p)
#define FP32_ACC(acc, w, x) _mm512_fmadd_ps(w, x, acc)
SMALL_KERNEL(fp32, FP32_TARGET, float, 16, __m512, FP32_LOAD, FP32_LOAD_FIRST, FP32_ACC)

#define BF16_LOAD(p) ((__m512bh)_mm512_loadu_si512(p))
#define BF16_LOAD_FIRST(p, n) \
    ((__m512bh)_mm512_maskz_loadu_epi16((__mmask32)((1ull << (n)) - 1u), p))
#define BF16_ACC(acc, w, x) _mm512_dpbf16_ps(acc, w, x)
SMALL_KERNEL(bf16, BF16_TARGET, uint16_t, 32, __m512bh, BF16_LOAD, BF16_LOAD_FIRST, BF16_ACC)

/* The machine as every product kernel sees it (encoder_gemm.c): oneDNN's
 * effective ISA, which ONEDNN_MAX_CPU_ISA lowers. avx512_core brings
 * AVX-512F/BW and FMA, avx512_core_bf16 AVX512_BF16 too. */
bool subsae__small_gemm_available(void)
{
    return subsae__avx512_native();
}

bool subsae__small_gemm_bf16_available(void)
{
    return subsae__bf16_native();
}

void subsae__small_gemm(int64_t rows, int64_t cols, int64_t d, const float *x, int64_t ldx,
                        const float *w, int64_t ldw, float *c, int64_t ldc)
{
    fp32_product(rows, cols, d, x, ldx, w, ldw, c, ldc);
}

void subsae__small_gemm_bf16(int64_t rows, int64_t cols, int64_t d, const uint16_t *x,
                             int64_t ldx, const uint16_t *w, int64_t ldw, float *c, int64_t ldc)
{
    bf16_product(rows, cols, d, x, ldx, w, ldw, c, ldc);
}

#else

bool subsae__small_gemm_available(void)
{
    return false;
}

bool subsae__small_gemm_bf16_available(void)
{
    return false;
}

void subsae__small_gemm(int64_t rows, int64_t cols, int64_t d, const float *x, int64_t ldx,
                        const float *w, int64_t ldw, float *c, int64_t ldc)
{
    (void)rows, (void)cols, (void)d, (void)x, (void)ldx, (void)w, (void)ldw, (void)c, (void)ldc;
}

void subsae__small_gemm_bf16(int64_t rows, int64_t cols, int64_t d, const uint16_t *x,
                             int64_t ldx, const uint16_t *w, int64_t ldw, float *c, int64_t ldc)
{
    (void)rows, (void)cols, (void)d, (void)x, (void)ldx, (void)w, (void)ldw, (void)c, (void)ldc;
}

#endif
