/* The small-batch products (lib/small_gemm.c), fp32 and bf16: against a
 * product in double for 1 to 64 rows, widths that are not multiples of a
 * vector and feature counts that are not multiples of its block, more rows
 * than fit its L1 group and more features than its L2 panel; each entry's
 * bits depend on its row and feature only (not on how many rows or
 * features come with them), so the encoders' codes are the same for every
 * thread count. */
#include "encoder_gemm.h"
#include "harness.h"
#include "kernels.h"
#include "small_gemm.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The operands at one precision: fp32 as drawn, or their bf16 roundings
 * (bits for the kernel, and as floats for the exact product). */
struct operands {
    float *x, *w;        /* the values the product sees */
    uint16_t *xb, *wb;   /* bf16 bits (bf16 only) */
};

static bool kernel_runs(int precision, const char *test)
{
    const bool runs = precision == SUBSAE__BF16 ? subsae__small_gemm_bf16_available()
                                                : subsae__small_gemm_available();
    if (!runs)
        harness_skip(test, precision == SUBSAE__BF16 ? "oneDNN's ISA has no AVX512_BF16 here"
                                                     : "oneDNN's ISA has no AVX-512 here");
    return runs;
}

static uint16_t *to_bf16(float *a, int64_t count)
{
    uint16_t *b = malloc((size_t)count * sizeof *b);
    ck_assert(b);
    subsae__bf16_round(b, a, count);
    subsae__f32_from_bf16(a, b, count); /* the exact values the kernel sees */
    return b;
}

/* nx and nw normal draws (seeds `seed` and seed + 1). */
static struct operands operands_new(int precision, int64_t nx, int64_t nw, uint64_t seed)
{
    struct operands o = {harness_normal_rows(seed, 1, nx, 0.0),
                         harness_normal_rows(seed + 1, 1, nw, 0.0), NULL, NULL};
    if (precision == SUBSAE__BF16) {
        o.xb = to_bf16(o.x, nx);
        o.wb = to_bf16(o.w, nw);
    }
    return o;
}

static void operands_free(struct operands *o)
{
    free(o->x);
    free(o->w);
    free(o->xb);
    free(o->wb);
}

static void product(int precision, int64_t n, int64_t m, int64_t d, const struct operands *o,
                    int64_t row, int64_t ldx, int64_t feature, float *c, int64_t ldc)
{
    if (precision == SUBSAE__BF16)
        subsae__small_gemm_bf16(n, m, d, o->xb + row * ldx, ldx, o->wb + feature * d, d, c, ldc);
    else
        subsae__small_gemm(n, m, d, o->x + row * ldx, ldx, o->w + feature * d, d, c, ldc);
}

/* Every entry within float rounding of the double product of the values
 * the kernel sees: the error of a sum of d products is below
 * d * 2^-23 * sum |x_k w_k| (with room). */
static void assert_near_double(int64_t n, int64_t m, int64_t d, const float *x, int64_t ldx,
                               const float *w, const float *c)
{
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < m; j++) {
            double exact = 0.0, size = 0.0;
            for (int64_t k = 0; k < d; k++) {
                exact += (double)x[i * ldx + k] * (double)w[j * d + k];
                size += fabs((double)x[i * ldx + k] * (double)w[j * d + k]);
            }
            const double bound = (double)(d + 2) * 0x1p-23 * size + 1e-30;
            ck_assert_msg(fabs((double)c[i * m + j] - exact) <= bound,
                          "rows %lld, d %lld: C[%lld][%lld] = %.9g, exact %.9g (bound %.3g)",
                          (long long)n, (long long)d, (long long)i, (long long)j,
                          (double)c[i * m + j], exact, bound);
        }
}

/* n rows of width d (row stride ldx) against m features. */
static void check_shape(int precision, int64_t n, int64_t m, int64_t d, int64_t ldx,
                        uint64_t seed)
{
    struct operands o = operands_new(precision, n * ldx, m * d, seed);
    float *c = malloc((size_t)(n * m) * sizeof *c);
    ck_assert(c);
    product(precision, n, m, d, &o, 0, ldx, 0, c, m);
    assert_near_double(n, m, d, o.x, ldx, o.w, c);
    operands_free(&o);
    free(c);
}

static void matches_double_product(int precision)
{
    uint64_t seed = 41 + 1000 * (uint64_t)precision;
    static const int64_t widths[] = {1, 15, 16, 17, 100, 769};
    static const int64_t feats[] = {1, 3, 4, 5, 37, 130};
    for (int64_t n = 1; n <= 64; n += (n < 8 ? 1 : 7)) {
        const int64_t d = widths[n % 6];
        check_shape(precision, n, feats[(n / 2) % 6], d, d + 3, seed += 2);
    }
    /* More rows than an L1 group (4 rows in fp32, 12 in bf16 at d 769)
     * and more features than an L2 panel (84 and 168), ragged ends. */
    check_shape(precision, 37, 203, 769, 769, seed + 2);
}

/* Loop tests: _i is the precision (SUBSAE__FP32 0, SUBSAE__BF16 1). */
START_TEST(small_gemm_matches_double_product)
{
    if (kernel_runs(_i, __func__))
        matches_double_product(_i);
}
END_TEST

/* Row i and feature j alone give the bits they give inside 64 rows and
 * 230 features (more than a group and a panel at d 803): the bits do not
 * depend on the blocks. */
static void entry_bits_do_not_depend_on_the_block(int precision)
{
    const int64_t n = 64, m = 230, d = 803;
    struct operands o = operands_new(precision, n * d, m * d, 43 + 1000 * (uint64_t)precision);
    float *all = malloc((size_t)(n * m) * sizeof *all);
    ck_assert(all);
    product(precision, n, m, d, &o, 0, d, 0, all, m);
    for (int64_t i = 0; i < n; i += 5)
        for (int64_t j = 0; j < m; j += 3) {
            float one;
            product(precision, 1, 1, d, &o, i, d, j, &one, 1);
            ck_assert_msg(memcmp(&one, &all[i * m + j], sizeof one) == 0,
                          "C[%lld][%lld]: %.9g alone, %.9g in the block", (long long)i,
                          (long long)j, (double)one, (double)all[i * m + j]);
        }
    operands_free(&o);
    free(all);
}

START_TEST(small_gemm_entry_bits_do_not_depend_on_the_block)
{
    if (kernel_runs(_i, __func__))
        entry_bits_do_not_depend_on_the_block(_i);
}
END_TEST

SUBSAE_SUITE(small_gemm)
{
    Suite *s = suite_create("small_gemm");
    TCase *tc = harness_case(s, "small_gemm", 60);
    tcase_add_loop_test(tc, small_gemm_matches_double_product, SUBSAE__FP32, SUBSAE__BF16 + 1);
    tcase_add_loop_test(tc, small_gemm_entry_bits_do_not_depend_on_the_block, SUBSAE__FP32,
                        SUBSAE__BF16 + 1);
    return s;
}
