/* The small-batch encoder (lib/encode.c, 1 to 64 rows): it selects what
 * the fused encoder selects. On small-integer data every pre-activation is
 * exact, so the codes must be the same bits, ties included; on normal data
 * they must agree up to rounding (at fp32 on AVX-512 the small encoder's
 * product is lib/small_gemm.c, summed in another order than oneDNN's). Its
 * codes are the same bits for every thread count, and the public encoder
 * takes it for a few rows. */
#include "harness.h"
#include "kernels.h"
#include "rng.h"
#include "sae.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct codes {
    int32_t *idx;
    float *val;
};

static struct codes codes_new(int64_t n, int64_t slots)
{
    struct codes c = {malloc((size_t)(n * slots) * sizeof(int32_t)),
                      malloc((size_t)(n * slots) * sizeof(float))};
    ck_assert(c.idx && c.val);
    return c;
}

static void codes_free(struct codes *c)
{
    free(c->idx);
    free(c->val);
}

/* A TopK model of random weights: small integers (exact products, many
 * ties) or normal draws. */
static subsae_sae *random_model(int64_t d, int64_t m, int64_t k, bool integer, subsae__rng *rng)
{
    subsae_sae *sae = NULL;
    ck_assert_ok(subsae_sae_create(d, d, m, SUBSAE_ACT_TOPK, &sae));
    ck_assert_ok(subsae_sae_set_int(sae, SUBSAE_SAE_K, k));
    ck_assert_ok(subsae_sae_set_int(sae, SUBSAE_SAE_APPLY_B_DEC_TO_INPUT, 0));
    float *w = malloc((size_t)(m * d) * sizeof *w), *b = malloc((size_t)m * sizeof *b);
    ck_assert(w && b);
    for (int64_t i = 0; i < m * d; i++)
        w[i] = integer ? (float)subsae__rng_below(rng, 7) - 3.0f
                       : (float)subsae__rng_normal(rng) / sqrtf((float)d);
    for (int64_t f = 0; f < m; f++)
        b[f] = integer ? (float)subsae__rng_below(rng, 9) - 4.0f
                       : 0.1f * (float)subsae__rng_normal(rng);
    ck_assert_ok(subsae_sae_set_param(sae, SUBSAE_PARAM_W_ENC, w, m * d));
    ck_assert_ok(subsae_sae_set_param(sae, SUBSAE_PARAM_B_ENC, b, m));
    free(w);
    free(b);
    return sae;
}

static float *random_rows(int64_t n, int64_t d, bool integer, subsae__rng *rng)
{
    float *x = malloc((size_t)(n * d) * sizeof *x);
    ck_assert(x);
    for (int64_t i = 0; i < n * d; i++)
        x[i] = integer ? (float)subsae__rng_below(rng, 5) - 2.0f
                       : (float)subsae__rng_normal(rng);
    return x;
}

/* Encode with the fused encoder (small == false) or the small-batch one. */
static void encode_with(const subsae_sae *sae, const float *x, int64_t n, int64_t slots,
                        bool small, int threads, struct codes *out)
{
    int64_t fused = subsae__encode_scratch_floats(sae, n, threads, false);
    int64_t tiny = subsae__encode_small_scratch_floats(sae, n, threads);
    float *scratch = malloc((size_t)(fused > tiny ? fused : tiny) * sizeof *scratch);
    ck_assert(scratch);
    if (small)
        subsae__encode_topk_small(sae, x, sae->d_in, n, slots, out->idx, out->val, scratch,
                                  threads);
    else
        subsae__encode_topk_fused(sae, x, sae->d_in, n, slots, out->idx, out->val, scratch,
                                  threads, NULL);
    free(scratch);
}

/* Shapes: rows 1, 2, 15, 16, 64 and others; features below, at and past a
 * slice (1024) and a tile (64); k from 1 to d_sae, both selection modes;
 * slots above k. */
struct shape {
    int64_t d, m, k, n, slots;
};

static struct shape random_shape(subsae__rng *rng, int c)
{
    static const int64_t rows[] = {1, 2, 15, 16, 64, 3, 33};
    static const int64_t feats[] = {1, 7, 64, 65, 1023, 1024, 1025, 2100, 3000};
    struct shape s;
    s.n = rows[c % 7];
    s.m = feats[subsae__rng_below(rng, 9)];
    s.d = 1 + (int64_t)subsae__rng_below(rng, 40);
    switch (c % 4) {
    case 0: s.k = 1 + (int64_t)subsae__rng_below(rng, s.m < 48 ? (uint64_t)s.m : 48); break;
    case 1: s.k = s.m - (int64_t)subsae__rng_below(rng, s.m < 5 ? (uint64_t)s.m : 5); break;
    case 2: s.k = s.m; break;
    default: s.k = 1 + (int64_t)subsae__rng_below(rng, (uint64_t)s.m); break;
    }
    s.slots = s.k + (int64_t)subsae__rng_below(rng, 3);
    return s;
}

START_TEST(small_encoder_equals_fused_on_exact_data)
{
    subsae__rng rng;
    subsae__rng_seed(&rng, 17, 0);
    for (int c = 0; c < (harness_slow() ? 14 : 56); c++) {
        const struct shape s = random_shape(&rng, c);
        subsae_sae *sae = random_model(s.d, s.m, s.k, true, &rng);
        float *x = random_rows(s.n, s.d, true, &rng);
        struct codes want = codes_new(s.n, s.slots), got = codes_new(s.n, s.slots);
        encode_with(sae, x, s.n, s.slots, false, 2, &want);
        encode_with(sae, x, s.n, s.slots, true, 2, &got);
        const size_t count = (size_t)(s.n * s.slots);
        ck_assert_msg(memcmp(want.idx, got.idx, count * 4) == 0 &&
                          memcmp(want.val, got.val, count * 4) == 0,
                      "case %d (d %lld, d_sae %lld, k %lld, rows %lld, slots %lld): codes differ",
                      c, (long long)s.d, (long long)s.m, (long long)s.k, (long long)s.n,
                      (long long)s.slots);
        codes_free(&want);
        codes_free(&got);
        free(x);
        subsae_sae_free(sae);
    }
}
END_TEST

static int cmp_feature(const void *a, const void *b)
{
    const int32_t *x = a, *y = b;
    return (x[0] > y[0]) - (x[0] < y[0]);
}

/* Features of a row's codes (index, value bits) sorted by index. */
static int32_t *by_feature(const struct codes *a, int64_t i, int64_t slots)
{
    int32_t *p = malloc((size_t)slots * 2 * sizeof *p);
    ck_assert(p);
    for (int64_t j = 0; j < slots; j++) {
        p[2 * j] = a->idx[i * slots + j];
        memcpy(&p[2 * j + 1], &a->val[i * slots + j], sizeof(float));
    }
    qsort(p, (size_t)slots, 2 * sizeof *p, cmp_feature);
    return p;
}

static bool near(float a, float b)
{
    return fabsf(a - b) <= 1e-5f * (1.0f + fabsf(a));
}

/* The features of `a` missing from `b` (both sorted by feature): each must
 * be a near-tie at b's selection boundary (b's last value, or 0 for
 * ReLU). Returns how many. */
static int missing(const int32_t *a, const int32_t *b, int64_t slots, float boundary, int c)
{
    int count = 0;
    for (int64_t j = 0, q = 0; j < slots; j++) {
        if (a[2 * j] < 0)
            continue;
        while (q < slots && b[2 * q] < a[2 * j])
            q++;
        if (q < slots && b[2 * q] == a[2 * j])
            continue;
        float v;
        memcpy(&v, &a[2 * j + 1], sizeof v);
        ck_assert_msg(near(v, boundary) || near(v, 0.0f),
                      "case %d: feature %d (%g) selected by one encoder only", c, a[2 * j],
                      (double)v);
        count++;
    }
    return count;
}

/* Row i of two encodings agrees up to rounding: slot by slot the values
 * are close (features of nearly equal values may trade places), and the
 * selected sets are the same but for near-ties at the boundary of the
 * selection. Returns the number of such boundary exchanges. */
static int assert_close_codes(const struct codes *a, const struct codes *b, int64_t i,
                              int64_t slots, int c)
{
    float last_a = 0.0f, last_b = 0.0f;
    for (int64_t j = 0; j < slots; j++) {
        const int64_t at = i * slots + j;
        ck_assert_msg(near(a->val[at], b->val[at]),
                      "case %d row %lld slot %lld: feature %d = %g vs feature %d = %g", c,
                      (long long)i, (long long)j, a->idx[at], (double)a->val[at], b->idx[at],
                      (double)b->val[at]);
        if (a->idx[at] >= 0)
            last_a = a->val[at];
        if (b->idx[at] >= 0)
            last_b = b->val[at];
    }
    int32_t *fa = by_feature(a, i, slots), *fb = by_feature(b, i, slots);
    int count = missing(fa, fb, slots, last_b, c) + missing(fb, fa, slots, last_a, c);
    free(fa);
    free(fb);
    return count;
}

START_TEST(small_encoder_agrees_with_fused_up_to_rounding)
{
    subsae__rng rng;
    subsae__rng_seed(&rng, 23, 0);
    int swaps = 0;
    for (int c = 0; c < (harness_slow() ? 14 : 56); c++) {
        struct shape s = random_shape(&rng, c);
        s.d = 1 + (int64_t)subsae__rng_below(&rng, 300);
        subsae_sae *sae = random_model(s.d, s.m, s.k, false, &rng);
        float *x = random_rows(s.n, s.d, false, &rng);
        struct codes want = codes_new(s.n, s.slots), got = codes_new(s.n, s.slots);
        encode_with(sae, x, s.n, s.slots, false, 2, &want);
        encode_with(sae, x, s.n, s.slots, true, 2, &got);
        for (int64_t i = 0; i < s.n; i++)
            swaps += assert_close_codes(&want, &got, i, s.slots, c);
        codes_free(&want);
        codes_free(&got);
        free(x);
        subsae_sae_free(sae);
    }
    /* Near-ties at the boundary are rare in normal draws: a few at most. */
    ck_assert_msg(swaps <= 4, "%d near-tie swaps", swaps);
}
END_TEST

START_TEST(small_encoder_same_bits_for_every_thread_count)
{
    subsae__rng rng;
    subsae__rng_seed(&rng, 29, 0);
    const int64_t d = 100, m = 5000, k = 32, n = 16;
    subsae_sae *sae = random_model(d, m, k, false, &rng);
    float *x = random_rows(n, d, false, &rng);
    const int threads[] = {1, 2, 3, 7};
    struct codes c[4];
    for (int t = 0; t < 4; t++) {
        c[t] = codes_new(n, k);
        encode_with(sae, x, n, k, true, threads[t], &c[t]);
    }
    for (int t = 1; t < 4; t++)
        ck_assert_msg(memcmp(c[0].idx, c[t].idx, (size_t)(n * k) * 4) == 0 &&
                          memcmp(c[0].val, c[t].val, (size_t)(n * k) * 4) == 0,
                      "codes differ between 1 and %d threads", threads[t]);
    for (int t = 0; t < 4; t++)
        codes_free(&c[t]);
    free(x);
    subsae_sae_free(sae);
}
END_TEST

/* subsae_sae_encode_sparse of a few rows gives the small encoder's codes,
 * and so does a long input's last few rows (the tail of its blocks). */
START_TEST(public_encoder_takes_the_small_path)
{
    subsae__rng rng;
    subsae__rng_seed(&rng, 31, 0);
    const int64_t d = 24, m = 1500, k = 8;
    subsae_sae *sae = random_model(d, m, k, false, &rng);
    for (int64_t n = 1; n <= 64; n *= 4) {
        float *x = random_rows(n, d, false, &rng);
        struct codes want = codes_new(n, k), got = codes_new(n, k);
        encode_with(sae, x, n, k, true, subsae_get_num_threads(), &want);
        ck_assert_ok(subsae_sae_encode_sparse(sae, x, n, d, k, got.idx, got.val));
        ck_assert_msg(memcmp(want.idx, got.idx, (size_t)(n * k) * 4) == 0 &&
                          memcmp(want.val, got.val, (size_t)(n * k) * 4) == 0,
                      "%lld rows: the public encoder's codes differ", (long long)n);
        codes_free(&want);
        codes_free(&got);
        free(x);
    }
    ck_assert(subsae__encode_small(sae, NULL, 64));
    ck_assert(!subsae__encode_small(sae, NULL, 65));
    subsae_sae_free(sae);
}
END_TEST

SUBSAE_SUITE(encode_small)
{
    Suite *s = suite_create("encode_small");
    TCase *tc = harness_case(s, "encode_small", 60);
    tcase_add_test(tc, small_encoder_equals_fused_on_exact_data);
    tcase_add_test(tc, small_encoder_agrees_with_fused_up_to_rounding);
    tcase_add_test(tc, small_encoder_same_bits_for_every_thread_count);
    tcase_add_test(tc, public_encoder_takes_the_small_path);
    return s;
}
