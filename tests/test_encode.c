/* The fused TopK encoder (lib/encode.c) and the chunked selection it uses:
 * the chunked top-k equals the whole-row top-k bit for bit however the
 * row is cut; the fused encoder selects exactly the top k of
 * pre-activations that are exact (small integers, so every summation
 * order gives the same floats); its codes are the same bits for every
 * thread count; unused slots and non-positive values give index -1. */
#include "harness.h"
#include "kernels.h"
#include "rng.h"
#include "sae.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Cut a row of m entries at random points and select chunk by chunk. */
static void chunked_topk(subsae__rng *rng, const float *row, const float *bias, int64_t m,
                         int64_t k, int32_t *idx, float *val)
{
    int64_t len = 0;
    for (int64_t j0 = 0; j0 < m;) {
        int64_t count = 1 + (int64_t)subsae__rng_below(rng, (uint64_t)(m - j0 < 80 ? m - j0 : 80));
        subsae__topk_chunk(row + j0, bias ? bias + j0 : NULL, j0, count, k, &len, idx, val);
        j0 += count;
    }
    subsae__topk_done(k, idx, val);
}

START_TEST(chunked_topk_equals_whole_row)
{
    subsae__rng rng;
    subsae__rng_seed(&rng, 7, 0);
    const int64_t sizes[] = {1, 5, 48, 49, 100, 1000, 3001};
    const int64_t ks[] = {1, 3, 8, 32, 48, 49, 64, 200};
    for (size_t a = 0; a < sizeof sizes / sizeof sizes[0]; a++)
        for (size_t b = 0; b < sizeof ks / sizeof ks[0]; b++) {
            const int64_t m = sizes[a], k = ks[b];
            if (k > m)
                continue;
            for (int mode = 0; mode < 4; mode++) {
                float *row = malloc((size_t)m * sizeof *row);
                float *bias = malloc((size_t)m * sizeof *bias);
                for (int64_t j = 0; j < m; j++) {
                    /* mode & 2: ties; a NaN now and then. */
                    row[j] = mode & 2 ? (float)subsae__rng_below(&rng, 5) - 2.0f
                                      : (float)subsae__rng_normal(&rng);
                    if (j % 97 == 13)
                        row[j] = NAN;
                    bias[j] = mode & 2 ? 0.5f * (float)subsae__rng_below(&rng, 2)
                                       : (float)subsae__rng_normal(&rng);
                }
                const float *bb = mode & 1 ? bias : NULL;
                int32_t *idx = malloc((size_t)k * sizeof *idx), *ref = malloc((size_t)k * 4);
                float *val = malloc((size_t)k * sizeof *val), *ref_val = malloc((size_t)k * 4);
                subsae__topk_row(row, bb, NULL, m, k, ref, ref_val);
                chunked_topk(&rng, row, bb, m, k, idx, val);
                ck_assert_msg(memcmp(idx, ref, (size_t)k * 4) == 0 &&
                                  memcmp(val, ref_val, (size_t)k * 4) == 0,
                              "m %lld k %lld mode %d: chunked selection differs", (long long)m,
                              (long long)k, mode);
                free(row);
                free(bias);
                free(idx);
                free(ref);
                free(val);
                free(ref_val);
            }
        }
}
END_TEST

/* A TopK model with small-integer weights and inputs: every pre-activation
 * is an exact float whatever the GEMM's order of summation. */
static subsae_sae *integer_model(int64_t d, int64_t m, int64_t k, subsae__rng *rng)
{
    subsae_sae *sae = NULL;
    ck_assert_ok(subsae_sae_create(d, d, m, SUBSAE_ACT_TOPK, &sae));
    ck_assert_ok(subsae_sae_set_int(sae, SUBSAE_SAE_K, k));
    ck_assert_ok(subsae_sae_set_int(sae, SUBSAE_SAE_APPLY_B_DEC_TO_INPUT, 0));
    float *w = malloc((size_t)(m * d) * sizeof *w), *b = malloc((size_t)m * sizeof *b);
    for (int64_t i = 0; i < m * d; i++)
        w[i] = (float)subsae__rng_below(rng, 7) - 3.0f;
    for (int64_t f = 0; f < m; f++)
        b[f] = (float)subsae__rng_below(rng, 9) - 4.0f;
    ck_assert_ok(subsae_sae_set_param(sae, SUBSAE_PARAM_W_ENC, w, m * d));
    ck_assert_ok(subsae_sae_set_param(sae, SUBSAE_PARAM_B_ENC, b, m));
    free(w);
    free(b);
    return sae;
}

START_TEST(fused_encoder_selects_exact_top_k)
{
    subsae__rng rng;
    subsae__rng_seed(&rng, 11, 0);
    /* Shapes around the tile sizes: rows near block edges, features near
     * and past a chunk, k in both selection modes, slots > k. */
    const struct {
        int64_t d, m, k, n, slots;
    } cases[] = {{8, 1500, 4, 1200, 4},  {17, 3000, 60, 300, 64}, {5, 40, 40, 70, 45},
                 {3, 2049, 1, 1, 1},     {33, 1024, 8, 513, 9}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const int64_t d = cases[c].d, m = cases[c].m, k = cases[c].k, n = cases[c].n;
        const int64_t slots = cases[c].slots;
        subsae_sae *sae = integer_model(d, m, k, &rng);
        float *x = malloc((size_t)(n * d) * sizeof *x);
        for (int64_t i = 0; i < n * d; i++)
            x[i] = (float)subsae__rng_below(&rng, 5) - 2.0f;
        int32_t *idx = malloc((size_t)(n * slots) * sizeof *idx);
        float *val = malloc((size_t)(n * slots) * sizeof *val);
        ck_assert_ok(subsae_sae_encode_sparse(sae, x, n, d, slots, idx, val));
        /* Reference: exact pre-activations in double, whole-row top-k,
         * ReLU. */
        float *pre = malloc((size_t)m * sizeof *pre);
        int32_t *ref = malloc((size_t)k * sizeof *ref);
        float *ref_val = malloc((size_t)k * sizeof *ref_val);
        for (int64_t i = 0; i < n; i++) {
            for (int64_t f = 0; f < m; f++) {
                double acc = 0.0;
                for (int64_t j = 0; j < d; j++)
                    acc += (double)x[i * d + j] * (double)sae->W_enc[f * d + j];
                pre[f] = (float)acc;
            }
            subsae__topk_row(pre, sae->b_enc, NULL, m, k, ref, ref_val);
            for (int64_t j = 0; j < slots; j++) {
                int32_t want = j < k && ref_val[j] > 0.0f ? ref[j] : -1;
                float want_val = want >= 0 ? ref_val[j] : 0.0f;
                ck_assert_msg(idx[i * slots + j] == want && val[i * slots + j] == want_val,
                              "case %zu row %lld slot %lld: (%d, %g), want (%d, %g)", c,
                              (long long)i, (long long)j, idx[i * slots + j],
                              (double)val[i * slots + j], want, (double)want_val);
            }
        }
        free(pre);
        free(ref);
        free(ref_val);
        free(x);
        free(idx);
        free(val);
        subsae_sae_free(sae);
    }
}
END_TEST

START_TEST(fused_encoder_same_bits_for_every_thread_count)
{
    subsae__rng rng;
    subsae__rng_seed(&rng, 5, 0);
    const int64_t d = 48, m = 2500, k = 16, n = 1500;
    subsae_sae *sae = NULL;
    ck_assert_ok(subsae_sae_create(d, d, m, SUBSAE_ACT_TOPK, &sae));
    ck_assert_ok(subsae_sae_set_int(sae, SUBSAE_SAE_K, k));
    float *w = malloc((size_t)(m * d) * sizeof *w), *x = malloc((size_t)(n * d) * sizeof *x);
    for (int64_t i = 0; i < m * d; i++)
        w[i] = (float)subsae__rng_normal(&rng);
    for (int64_t i = 0; i < n * d; i++)
        x[i] = (float)subsae__rng_normal(&rng);
    ck_assert_ok(subsae_sae_set_param(sae, SUBSAE_PARAM_W_ENC, w, m * d));
    int32_t *idx[3];
    float *val[3];
    const int threads[3] = {1, 2, 3};
    const int saved = subsae_get_num_threads();
    for (int t = 0; t < 3; t++) {
        idx[t] = malloc((size_t)(n * k) * sizeof *idx[t]);
        val[t] = malloc((size_t)(n * k) * sizeof *val[t]);
        subsae_set_num_threads(threads[t]);
        ck_assert_ok(subsae_sae_encode_sparse(sae, x, n, d, k, idx[t], val[t]));
    }
    subsae_set_num_threads(saved);
    for (int t = 1; t < 3; t++) {
        ck_assert_msg(memcmp(idx[0], idx[t], (size_t)(n * k) * 4) == 0,
                      "indices differ between 1 and %d threads", threads[t]);
        ck_assert_msg(memcmp(val[0], val[t], (size_t)(n * k) * 4) == 0,
                      "values differ between 1 and %d threads", threads[t]);
    }
    for (int t = 0; t < 3; t++) {
        free(idx[t]);
        free(val[t]);
    }
    free(w);
    free(x);
    subsae_sae_free(sae);
}
END_TEST

SUBSAE_SUITE(encode)
{
    Suite *s = suite_create("encode");
    TCase *tc = harness_case(s, "encode", 60);
    tcase_add_test(tc, chunked_topk_equals_whole_row);
    tcase_add_test(tc, fused_encoder_selects_exact_top_k);
    tcase_add_test(tc, fused_encoder_same_bits_for_every_thread_count);
    return s;
}
