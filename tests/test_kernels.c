/* Kernels: top-k selection against a full sort (ties, bias, weights, every
 * size class) and in chunks against the whole row, the rescoring's dot
 * products against subsae__dot_f32, sparse decode and the per-feature backward against plain
 * loops in double, Adam against PyTorch's formula in double. */
#include "harness.h"
#include "kernels.h"
#include "rng.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct entry {
    float key;
    int32_t index;
};

static int by_rank(const void *a, const void *b)
{
    const struct entry *x = a, *y = b;
    if (x->key > y->key)
        return -1;
    if (x->key < y->key)
        return 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

/* Top-k by sorting everything: the definition the kernel must meet. */
static void reference_topk(const float *row, const float *bias, const float *weight, int64_t m,
                           int64_t k, int32_t *idx, float *val)
{
    struct entry *e = malloc((size_t)m * sizeof *e);
    for (int64_t j = 0; j < m; j++) {
        float v = bias ? row[j] + bias[j] : row[j];
        e[j].key = weight ? v * weight[j] : v;
        e[j].index = (int32_t)j;
    }
    qsort(e, (size_t)m, sizeof *e, by_rank);
    for (int64_t j = 0; j < k; j++) {
        idx[j] = e[j].index;
        val[j] = bias ? row[e[j].index] + bias[e[j].index] : row[e[j].index];
    }
    free(e);
}

static void check_topk(subsae__rng *rng, int64_t m, int64_t k, bool with_bias, bool with_weight,
                       bool ties)
{
    float *row = malloc((size_t)m * sizeof *row), *bias = malloc((size_t)m * sizeof *bias);
    float *weight = malloc((size_t)m * sizeof *weight);
    for (int64_t j = 0; j < m; j++) {
        /* With ties: few distinct values, so many equal keys. */
        row[j] = ties ? (float)(subsae__rng_below(rng, 7)) - 3.0f
                      : (float)subsae__rng_normal(rng);
        bias[j] = ties ? 0.5f * (float)subsae__rng_below(rng, 2) : (float)subsae__rng_normal(rng);
        weight[j] = ties ? 1.0f : (float)(0.5 + subsae__rng_uniform(rng));
    }
    int32_t *idx = malloc((size_t)k * sizeof *idx), *ref_idx = malloc((size_t)k * sizeof *idx);
    float *val = malloc((size_t)k * sizeof *val), *ref_val = malloc((size_t)k * sizeof *val);
    const float *b = with_bias ? bias : NULL, *w = with_weight ? weight : NULL;
    subsae__topk_row(row, b, w, m, k, idx, val);
    reference_topk(row, b, w, m, k, ref_idx, ref_val);
    for (int64_t j = 0; j < k; j++) {
        ck_assert_msg(idx[j] == ref_idx[j], "m %lld k %lld bias %d weight %d ties %d: slot %lld "
                      "index %d, want %d", (long long)m, (long long)k, with_bias, with_weight,
                      ties, (long long)j, idx[j], ref_idx[j]);
        ck_assert(val[j] == ref_val[j]);
    }
    free(row);
    free(bias);
    free(weight);
    free(idx);
    free(ref_idx);
    free(val);
    free(ref_val);
}

START_TEST(topk_matches_sort)
{
    subsae__rng rng;
    subsae__rng_seed(&rng, 42, 0);
    const int64_t sizes[] = {1, 2, 7, 31, 32, 33, 64, 100, 1000, 4099};
    const int64_t ks[] = {1, 2, 3, 8, 12, 16, 17, 32, 40, 48, 49, 64, 200};
    for (size_t a = 0; a < sizeof sizes / sizeof sizes[0]; a++)
        for (size_t b = 0; b < sizeof ks / sizeof ks[0]; b++) {
            if (ks[b] > sizes[a])
                continue;
            for (int mode = 0; mode < 8; mode++)
                check_topk(&rng, sizes[a], ks[b], mode & 1, mode & 2, mode & 4);
        }
    /* k == m: a full sort. */
    check_topk(&rng, 77, 77, true, false, true);
}
END_TEST

/* A row selected in chunks (as the fused encoder feeds its tiles) gives
 * the whole row's selection, for list sizes of one, two and three vectors. */
START_TEST(topk_chunks_match_row)
{
    enum { M = 3000 };
    subsae__rng rng;
    subsae__rng_seed(&rng, 7, 0);
    float row[M], bias[M];
    for (int j = 0; j < M; j++) {
        row[j] = j % 3 ? (float)subsae__rng_normal(&rng) : (float)subsae__rng_below(&rng, 5);
        bias[j] = j % 5 ? 0.0f : (float)subsae__rng_normal(&rng);
    }
    const int64_t ks[] = {1, 8, 12, 16, 17, 33, 40, 48}, cuts[] = {1, 17, 1024};
    for (size_t a = 0; a < sizeof ks / sizeof ks[0]; a++)
        for (size_t c = 0; c < sizeof cuts / sizeof cuts[0]; c++) {
            const int64_t k = ks[a];
            int32_t idx[48], whole_idx[48];
            float val[48], whole_val[48];
            subsae__topk_row(row, bias, NULL, M, k, whole_idx, whole_val);
            int64_t len = 0;
            for (int64_t j0 = 0; j0 < M; j0 += cuts[c]) {
                const int64_t n = M - j0 < cuts[c] ? M - j0 : cuts[c];
                subsae__topk_chunk(row + j0, bias + j0, j0, n, k, &len, idx, val);
            }
            subsae__topk_done(k, idx, val);
            for (int64_t j = 0; j < k; j++) {
                ck_assert_msg(idx[j] == whole_idx[j], "k %lld cut %lld slot %lld: %d, want %d",
                              (long long)k, (long long)cuts[c], (long long)j, idx[j],
                              whole_idx[j]);
                ck_assert(val[j] == whole_val[j]);
            }
        }
}
END_TEST

/* The rescoring's dot products of pairs of rows: subsae__dot_f32's bits,
 * for every tail length and any count of pairs. */
START_TEST(dot_f32_pairs_matches_dot_f32)
{
    enum { ROWS = 9, LD = 520, PAIRS = 11 };
    subsae__rng rng;
    subsae__rng_seed(&rng, 11, 0);
    static float x[ROWS * LD], y[ROWS * LD];
    for (int i = 0; i < ROWS * LD; i++) {
        x[i] = (float)subsae__rng_normal(&rng);
        y[i] = (float)subsae__rng_normal(&rng);
    }
    const int32_t rows[PAIRS] = {3, 0, 8, 8, 5, 1, 7, 2, 4, 4, 6};
    const int32_t cols[PAIRS] = {1, 1, 1, 2, 0, 8, 7, 3, 3, 5, 6};
    const int64_t ns[] = {1, 15, 16, 17, 64, 100, 512};
    for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++)
        for (int64_t count = 1; count <= PAIRS; count++) {
            float out[PAIRS];
            subsae__dot_f32_pairs(x, LD, rows, y, LD, cols, count, ns[a], out);
            for (int64_t c = 0; c < count; c++) {
                const float want = subsae__dot_f32(x + rows[c] * LD, y + cols[c] * LD, ns[a]);
                ck_assert_msg(memcmp(&out[c], &want, sizeof want) == 0,
                              "n %lld count %lld pair %lld: %.9g, want %.9g", (long long)ns[a],
                              (long long)count, (long long)c, (double)out[c], (double)want);
            }
        }
}
END_TEST

START_TEST(topk_increasing_and_decreasing_rows)
{
    /* Worst case for the threshold scan (every element enters) and best. */
    enum { M = 1000, K = 16 };
    float row[M];
    int32_t idx[K];
    float val[K];
    for (int j = 0; j < M; j++)
        row[j] = (float)j;
    subsae__topk_row(row, NULL, NULL, M, K, idx, val);
    for (int j = 0; j < K; j++) {
        ck_assert_int_eq(idx[j], M - 1 - j);
        ck_assert(val[j] == (float)(M - 1 - j));
    }
    for (int j = 0; j < M; j++)
        row[j] = (float)(M - j);
    subsae__topk_row(row, NULL, NULL, M, K, idx, val);
    for (int j = 0; j < K; j++)
        ck_assert_int_eq(idx[j], j);
    /* All equal: the lowest indices win. */
    for (int j = 0; j < M; j++)
        row[j] = 1.0f;
    subsae__topk_row(row, NULL, NULL, M, K, idx, val);
    for (int j = 0; j < K; j++)
        ck_assert_int_eq(idx[j], j);
}
END_TEST

START_TEST(sparse_decode_and_backward)
{
    enum { M = 20, D = 13, N = 9, K = 3 };
    subsae__rng rng;
    subsae__rng_seed(&rng, 7, 0);
    float W[M * D], b[D], out[D];
    for (int i = 0; i < M * D; i++)
        W[i] = (float)subsae__rng_normal(&rng);
    for (int j = 0; j < D; j++)
        b[j] = (float)subsae__rng_normal(&rng);
    int32_t idx[K] = {4, -1, 17};
    float val[K] = {0.5f, 3.0f, -1.25f};
    subsae__sparse_decode_row(out, b, W, D, idx, val, K, D);
    for (int j = 0; j < D; j++) {
        double want = (double)b[j] + 0.5 * W[4 * D + j] - 1.25 * W[17 * D + j];
        ck_assert_double_eq_tol(out[j], want, 1e-5);
    }
    /* Backward of one feature over N pairs. */
    float g[N * D], xin[N * 5], wdec[D], gdec[D], genc[5], gb;
    int32_t rows[N];
    float z[N];
    for (int i = 0; i < N * D; i++)
        g[i] = (float)subsae__rng_normal(&rng);
    for (int i = 0; i < N * 5; i++)
        xin[i] = (float)subsae__rng_normal(&rng);
    for (int j = 0; j < D; j++)
        wdec[j] = (float)subsae__rng_normal(&rng);
    for (int p = 0; p < N; p++) {
        rows[p] = (p * 5) % N;
        z[p] = (float)subsae__rng_uniform(&rng);
    }
    subsae__feature_backward(rows, z, N, g, D, D, xin, 5, 5, wdec, gdec, genc, &gb);
    double want_gdec[D] = {0}, want_genc[5] = {0}, want_gb = 0;
    for (int p = 0; p < N; p++) {
        double dp = 0;
        for (int j = 0; j < D; j++)
            dp += (double)g[rows[p] * D + j] * wdec[j];
        for (int j = 0; j < D; j++)
            want_gdec[j] += (double)z[p] * g[rows[p] * D + j];
        for (int j = 0; j < 5; j++)
            want_genc[j] += dp * xin[rows[p] * 5 + j];
        want_gb += dp;
    }
    for (int j = 0; j < D; j++)
        ck_assert_double_eq_tol(gdec[j], want_gdec[j], 1e-4);
    for (int j = 0; j < 5; j++)
        ck_assert_double_eq_tol(genc[j], want_genc[j], 1e-4);
    ck_assert_double_eq_tol(gb, want_gb, 1e-4);
}
END_TEST

START_TEST(adam_matches_formula)
{
    enum { N = 37 };
    subsae__rng rng;
    subsae__rng_seed(&rng, 3, 0);
    float w[N], m[N], v[N], g[N];
    double wd[N], md[N], vd[N];
    for (int i = 0; i < N; i++) {
        w[i] = (float)subsae__rng_normal(&rng);
        wd[i] = w[i];
        m[i] = v[i] = 0.0f;
        md[i] = vd[i] = 0.0;
    }
    const double lr = 1e-2, b1 = 0.9, b2 = 0.999, eps = 1e-8, gs = 0.5;
    for (int t = 1; t <= 5; t++) {
        for (int i = 0; i < N; i++)
            g[i] = (float)subsae__rng_normal(&rng);
        bool zero = t == 4; /* one step without gradient */
        float step = (float)(lr / (1 - pow(b1, t))), ib2 = (float)(1 / sqrt(1 - pow(b2, t)));
        subsae__adam(w, m, v, zero ? NULL : g, N, (float)gs, (float)b1, (float)b2, step, ib2,
                     (float)eps);
        for (int i = 0; i < N; i++) {
            double gi = zero ? 0.0 : gs * g[i];
            md[i] = b1 * md[i] + (1 - b1) * gi;
            vd[i] = b2 * vd[i] + (1 - b2) * gi * gi;
            double mh = md[i] / (1 - pow(b1, t)), vh = vd[i] / (1 - pow(b2, t));
            wd[i] -= lr * mh / (sqrt(vh) + eps);
        }
    }
    for (int i = 0; i < N; i++) {
        ck_assert_double_eq_tol(w[i], wd[i], 1e-5);
        ck_assert_double_eq_tol(m[i], md[i], 1e-6);
        ck_assert_double_eq_tol(v[i], vd[i], 1e-6);
    }
}
END_TEST

START_TEST(find_nonfinite_positions)
{
    float x[300];
    for (int i = 0; i < 300; i++)
        x[i] = (float)i;
    ck_assert_int_eq(subsae__find_nonfinite(x, 300), 300);
    x[250] = INFINITY;
    ck_assert_int_eq(subsae__find_nonfinite(x, 300), 250);
    x[3] = NAN;
    ck_assert_int_eq(subsae__find_nonfinite(x, 300), 3);
    ck_assert_int_eq(subsae__find_nonfinite(x, 3), 3);
    x[3] = -INFINITY;
    ck_assert_int_eq(subsae__find_nonfinite(x, 5), 3);
    ck_assert_double_eq(subsae__dot(x + 10, x + 20, 3), 10 * 20 + 11 * 21 + 12 * 22);
    ck_assert_double_eq(subsae__sumsq(x + 10, 2), 100 + 121);
}
END_TEST

SUBSAE_SUITE(kernels)
{
    Suite *s = suite_create("kernels");
    TCase *tc = harness_case(s, "kernels", 30);
    tcase_add_test(tc, topk_matches_sort);
    tcase_add_test(tc, topk_increasing_and_decreasing_rows);
    tcase_add_test(tc, topk_chunks_match_row);
    tcase_add_test(tc, dot_f32_pairs_matches_dot_f32);
    tcase_add_test(tc, sparse_decode_and_backward);
    tcase_add_test(tc, adam_matches_formula);
    tcase_add_test(tc, find_nonfinite_positions);
    return s;
}
