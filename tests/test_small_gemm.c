/* The small-batch fp32 product (lib/small_gemm.c): against a product in
 * double for 1 to 64 rows, widths that are not multiples of 16 and feature
 * counts that are not multiples of its block; each entry's bits depend on
 * its row and feature only (not on how many rows or features come with
 * them), so the encoders' codes are the same for every thread count. */
#include "harness.h"
#include "rng.h"
#include "small_gemm.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static float *normal_array(int64_t count, subsae__rng *rng)
{
    float *a = malloc((size_t)count * sizeof *a);
    ck_assert(a);
    for (int64_t i = 0; i < count; i++)
        a[i] = (float)subsae__rng_normal(rng);
    return a;
}

/* Every entry within float rounding of the double product: the error of
 * a sum of d products is below d * 2^-23 * sum |x_k w_k| (with room). */
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

START_TEST(small_gemm_matches_double_product)
{
    if (!subsae__small_gemm_available()) {
        harness_skip(__func__, "no AVX-512F on this CPU");
        return;
    }
    subsae__rng rng;
    subsae__rng_seed(&rng, 41, 0);
    static const int64_t widths[] = {1, 15, 16, 17, 100, 769};
    static const int64_t feats[] = {1, 3, 4, 5, 37, 130};
    for (int64_t n = 1; n <= 64; n += (n < 8 ? 1 : 7)) {
        const int64_t d = widths[n % 6], m = feats[(n / 2) % 6], ldx = d + 3;
        float *x = normal_array(n * ldx, &rng), *w = normal_array(m * d, &rng);
        float *c = malloc((size_t)(n * m) * sizeof *c);
        ck_assert(c);
        subsae__small_gemm(n, m, d, x, ldx, w, d, c, m);
        assert_near_double(n, m, d, x, ldx, w, c);
        free(x);
        free(w);
        free(c);
    }
}
END_TEST

/* Row i and feature j alone give the bits they give inside 64 rows and
 * 130 features: the bits do not depend on the blocks. */
START_TEST(small_gemm_entry_bits_do_not_depend_on_the_block)
{
    if (!subsae__small_gemm_available()) {
        harness_skip(__func__, "no AVX-512F on this CPU");
        return;
    }
    subsae__rng rng;
    subsae__rng_seed(&rng, 43, 0);
    const int64_t n = 64, m = 130, d = 203;
    float *x = normal_array(n * d, &rng), *w = normal_array(m * d, &rng);
    float *all = malloc((size_t)(n * m) * sizeof *all);
    ck_assert(all);
    subsae__small_gemm(n, m, d, x, d, w, d, all, m);
    for (int64_t i = 0; i < n; i += 5)
        for (int64_t j = 0; j < m; j += 3) {
            float one;
            subsae__small_gemm(1, 1, d, x + i * d, d, w + j * d, d, &one, 1);
            ck_assert_msg(memcmp(&one, &all[i * m + j], sizeof one) == 0,
                          "C[%lld][%lld]: %.9g alone, %.9g in the block", (long long)i,
                          (long long)j, (double)one, (double)all[i * m + j]);
        }
    free(x);
    free(w);
    free(all);
}
END_TEST

SUBSAE_SUITE(small_gemm)
{
    Suite *s = suite_create("small_gemm");
    TCase *tc = harness_case(s, "small_gemm", 30);
    tcase_add_test(tc, small_gemm_matches_double_product);
    tcase_add_test(tc, small_gemm_entry_bits_do_not_depend_on_the_block);
    return s;
}
