/* The model: options, parameters, encode/decode (dense and sparse, every
 * activation) against plain double-precision loops, scale folding,
 * evaluation against hand-computed metrics, bad input and failed
 * allocations. */
#include "harness.h"
#include "internal.h"
#include "io.h"
#include "rng.h"

#include <jansson.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct model {
    int64_t d_in, d_out, m, k;
    float *W_enc, *b_enc, *W_dec, *b_dec, *thr;
};

static float *normals(subsae__rng *rng, int64_t n, double scale, double offset)
{
    float *x = malloc((size_t)n * sizeof *x);
    for (int64_t i = 0; i < n; i++)
        x[i] = (float)(offset + scale * subsae__rng_normal(rng));
    return x;
}

/* A model with random weights, set through the public API. */
static subsae_sae *random_model(int64_t d_in, int64_t d_out, int64_t m, int activation,
                                int64_t k, uint64_t seed, struct model *copy)
{
    subsae__rng rng;
    subsae__rng_seed(&rng, seed, 0);
    subsae_sae *s;
    ck_assert_ok(subsae_sae_create(d_in, d_out, m, activation, &s));
    if (activation == SUBSAE_ACT_TOPK || activation == SUBSAE_ACT_BATCHTOPK)
        ck_assert_ok(subsae_sae_set_int(s, SUBSAE_SAE_K, k));
    copy->d_in = d_in;
    copy->d_out = d_out;
    copy->m = m;
    copy->k = k;
    copy->W_enc = normals(&rng, m * d_in, 1.0 / sqrt((double)d_in), 0);
    copy->b_enc = normals(&rng, m, 0.3, 0.1);
    copy->W_dec = normals(&rng, m * d_out, 1.0 / sqrt((double)d_out), 0);
    copy->b_dec = normals(&rng, d_out, 0.5, 0.2);
    copy->thr = normals(&rng, m, 0.1, 0.3);
    ck_assert_ok(subsae_sae_set_param(s, SUBSAE_PARAM_W_ENC, copy->W_enc, m * d_in));
    ck_assert_ok(subsae_sae_set_param(s, SUBSAE_PARAM_B_ENC, copy->b_enc, m));
    ck_assert_ok(subsae_sae_set_param(s, SUBSAE_PARAM_W_DEC, copy->W_dec, m * d_out));
    ck_assert_ok(subsae_sae_set_param(s, SUBSAE_PARAM_B_DEC, copy->b_dec, d_out));
    ck_assert_ok(subsae_sae_set_param(s, SUBSAE_PARAM_THRESHOLD, copy->thr, m));
    return s;
}

static void model_free(struct model *c)
{
    free(c->W_enc);
    free(c->b_enc);
    free(c->W_dec);
    free(c->b_dec);
    free(c->thr);
}

/* Dense codes in double: the definition of each activation. */
static void reference_codes(const struct model *c, int activation, bool apply, bool by_norm,
                            double s_in, const float *x, double *z)
{
    const int64_t m = c->m;
    double *pre = malloc((size_t)m * sizeof *pre), *key = malloc((size_t)m * sizeof *key);
    for (int64_t f = 0; f < m; f++) {
        double acc = c->b_enc[f];
        for (int64_t j = 0; j < c->d_in; j++)
            acc += ((double)x[j] * s_in - (apply ? c->b_dec[j] : 0.0)) * c->W_enc[f * c->d_in + j];
        pre[f] = acc;
        double nn = 0;
        for (int64_t j = 0; j < c->d_out; j++)
            nn += (double)c->W_dec[f * c->d_out + j] * c->W_dec[f * c->d_out + j];
        key[f] = by_norm ? acc * sqrt(nn) : acc;
        z[f] = 0.0;
    }
    if (activation == SUBSAE_ACT_TOPK) {
        for (int64_t s = 0; s < c->k; s++) {
            int64_t best = -1;
            for (int64_t f = 0; f < m; f++)
                if (key[f] > -INFINITY && (best < 0 || key[f] > key[best]))
                    best = f;
            z[best] = pre[best] > 0 ? pre[best] : 0.0;
            key[best] = -INFINITY;
        }
    } else {
        for (int64_t f = 0; f < m; f++) {
            double t = activation == SUBSAE_ACT_RELU ? 0.0 : c->thr[f];
            z[f] = pre[f] > t && pre[f] > 0 ? pre[f] : 0.0;
        }
    }
    free(pre);
    free(key);
}

static void check_encode_decode(int activation, bool by_norm, double s_in, double s_out)
{
    const int64_t d = 12, m = 40, k = 5, n = 17;
    struct model c;
    subsae_sae *s = random_model(d, d, m, activation, k, 3 + (uint64_t)activation, &c);
    if (by_norm)
        ck_assert_ok(subsae_sae_set_int(s, SUBSAE_SAE_RANK_BY_DECODER_NORM, 1));
    ck_assert_ok(subsae_sae_set_double(s, SUBSAE_SAE_INPUT_SCALE, s_in));
    ck_assert_ok(subsae_sae_set_double(s, SUBSAE_SAE_OUTPUT_SCALE, s_out));
    subsae__rng rng;
    subsae__rng_seed(&rng, 77, 0);
    const int64_t stride = d + 3;
    float *x = normals(&rng, n * stride, 1.0, 0.3);
    const int64_t slots = activation == SUBSAE_ACT_TOPK ? k : m;
    float *z = malloc((size_t)(n * (m + 2)) * sizeof *z);
    int32_t *idx = malloc((size_t)(n * slots) * sizeof *idx);
    float *val = malloc((size_t)(n * slots) * sizeof *val);
    ck_assert_ok(subsae_sae_encode(s, x, n, stride, z, m + 2));
    ck_assert_ok(subsae_sae_encode_sparse(s, x, n, stride, slots, idx, val));
    double *zr = malloc((size_t)m * sizeof *zr);
    for (int64_t i = 0; i < n; i++) {
        reference_codes(&c, activation, true, by_norm, s_in, x + i * stride, zr);
        for (int64_t f = 0; f < m; f++)
            ck_assert_msg(fabs(z[i * (m + 2) + f] - zr[f]) < 1e-4 * (1 + fabs(zr[f])),
                          "act %d row %lld feature %lld: %g vs %g", activation, (long long)i,
                          (long long)f, (double)z[i * (m + 2) + f], zr[f]);
        /* Sparse codes: the positive dense codes, descending, -1 padding. */
        int64_t active = 0;
        for (int64_t f = 0; f < m; f++)
            active += zr[f] > 0;
        for (int64_t j = 0; j < slots; j++) {
            int32_t f = idx[i * slots + j];
            if (j < active) {
                ck_assert_int_ge(f, 0);
                ck_assert_double_eq_tol(val[i * slots + j], zr[f], 1e-4 * (1 + zr[f]));
                if (j > 0)
                    ck_assert(val[i * slots + j] <= val[i * slots + j - 1]);
            } else {
                ck_assert_int_eq(f, -1);
                ck_assert(val[i * slots + j] == 0.0f);
            }
        }
    }
    /* Decode: dense and sparse agree with the double reference. */
    float *out = malloc((size_t)(n * d) * sizeof *out), *out2 = malloc((size_t)(n * d) * 4);
    ck_assert_ok(subsae_sae_decode(s, z, n, m + 2, out, d));
    ck_assert_ok(subsae_sae_decode_sparse(s, idx, val, n, slots, out2, d));
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < d; j++) {
            double want = c.b_dec[j];
            for (int64_t f = 0; f < m; f++)
                want += (double)z[i * (m + 2) + f] * c.W_dec[f * d + j];
            want /= s_out;
            ck_assert_double_eq_tol(out[i * d + j], want, 1e-4 * (1 + fabs(want)));
            ck_assert_double_eq_tol(out2[i * d + j], want, 1e-4 * (1 + fabs(want)));
        }
    /* Folding the scales keeps encodings and reconstructions of raw data. */
    subsae_sae *folded;
    ck_assert_ok(subsae_sae_clone(s, &folded));
    ck_assert_ok(subsae_sae_fold_scales(folded));
    double v;
    ck_assert_ok(subsae_sae_get_double(folded, SUBSAE_SAE_INPUT_SCALE, &v));
    ck_assert(v == 1.0);
    int32_t *idx2 = malloc((size_t)(n * slots) * sizeof *idx2);
    float *val2 = malloc((size_t)(n * slots) * sizeof *val2);
    ck_assert_ok(subsae_sae_encode_sparse(folded, x, n, stride, slots, idx2, val2));
    ck_assert_ok(subsae_sae_decode_sparse(folded, idx2, val2, n, slots, out2, d));
    for (int64_t i = 0; i < n * slots; i++) {
        ck_assert_int_eq(idx2[i], idx[i]);
        ck_assert_double_eq_tol(val2[i], val[i], 1e-4 * (1 + fabs(val[i])));
    }
    for (int64_t i = 0; i < n * d; i++)
        ck_assert_double_eq_tol(out2[i], out[i], 1e-4 * (1 + fabs(out[i])));
    subsae_sae_free(folded);
    subsae_sae_free(s);
    model_free(&c);
    free(x);
    free(z);
    free(zr);
    free(idx);
    free(val);
    free(idx2);
    free(val2);
    free(out);
    free(out2);
}

START_TEST(encode_decode_topk)
{
    check_encode_decode(SUBSAE_ACT_TOPK, false, 1.0, 1.0);
    check_encode_decode(SUBSAE_ACT_TOPK, false, 2.5, 2.5);
    check_encode_decode(SUBSAE_ACT_TOPK, false, 0.7, 1.9); /* fold moves b_dec into b_enc */
}
END_TEST

START_TEST(encode_decode_rank_by_norm)
{
    check_encode_decode(SUBSAE_ACT_TOPK, true, 1.3, 1.3);
}
END_TEST

START_TEST(encode_decode_threshold_activations)
{
    check_encode_decode(SUBSAE_ACT_RELU, false, 1.0, 1.0);
    check_encode_decode(SUBSAE_ACT_JUMPRELU, false, 1.7, 1.7);
    check_encode_decode(SUBSAE_ACT_BATCHTOPK, false, 1.0, 1.0);
}
END_TEST

START_TEST(options_and_params)
{
    subsae_sae *s;
    ck_assert_ok(subsae_sae_create(8, 6, 20, SUBSAE_ACT_TOPK, &s));
    int64_t v;
    ck_assert_ok(subsae_sae_get_int(s, SUBSAE_SAE_D_IN, &v));
    ck_assert_int_eq(v, 8);
    ck_assert_ok(subsae_sae_get_int(s, SUBSAE_SAE_D_OUT, &v));
    ck_assert_int_eq(v, 6);
    ck_assert_ok(subsae_sae_get_int(s, SUBSAE_SAE_D_SAE, &v));
    ck_assert_int_eq(v, 20);
    ck_assert_ok(subsae_sae_get_int(s, SUBSAE_SAE_K, &v));
    ck_assert_int_eq(v, 20); /* min(32, d_sae) */
    ck_assert_ok(subsae_sae_get_int(s, SUBSAE_SAE_APPLY_B_DEC_TO_INPUT, &v));
    ck_assert_int_eq(v, 0); /* d_in != d_out */
    ck_assert_status(subsae_sae_set_int(s, SUBSAE_SAE_APPLY_B_DEC_TO_INPUT, 1), SUBSAE_E_INVALID);
    ck_assert_status(subsae_sae_set_int(s, SUBSAE_SAE_D_IN, 3), SUBSAE_E_INVALID);
    ck_assert_status(subsae_sae_set_int(s, SUBSAE_SAE_K, 0), SUBSAE_E_INVALID);
    ck_assert_status(subsae_sae_set_int(s, SUBSAE_SAE_K, 21), SUBSAE_E_INVALID);
    ck_assert_status(subsae_sae_set_int(s, 99, 1), SUBSAE_E_INVALID);
    ck_assert_status(subsae_sae_set_int(s, SUBSAE_SAE_INPUT_SCALE, 1), SUBSAE_E_INVALID);
    ck_assert_ok(subsae_sae_set_int(s, SUBSAE_SAE_K, 4));
    ck_assert_status(subsae_sae_set_double(s, SUBSAE_SAE_INPUT_SCALE, 0.0), SUBSAE_E_INVALID);
    ck_assert_status(subsae_sae_set_double(s, SUBSAE_SAE_INPUT_SCALE, NAN), SUBSAE_E_INVALID);
    ck_assert_status(subsae_sae_set_double(s, SUBSAE_SAE_K, 2.0), SUBSAE_E_INVALID);
    double dv;
    ck_assert_ok(subsae_sae_get_double(s, SUBSAE_SAE_OUTPUT_SCALE, &dv));
    ck_assert(dv == 1.0);
    ck_assert_int_eq(subsae_sae_param_size(s, SUBSAE_PARAM_W_ENC), 160);
    ck_assert_int_eq(subsae_sae_param_size(s, SUBSAE_PARAM_W_DEC), 120);
    ck_assert_int_eq(subsae_sae_param_size(s, SUBSAE_PARAM_B_ENC), 20);
    ck_assert_int_eq(subsae_sae_param_size(s, SUBSAE_PARAM_B_DEC), 6);
    ck_assert_int_eq(subsae_sae_param_size(s, SUBSAE_PARAM_THRESHOLD), 20);
    ck_assert_int_eq(subsae_sae_param_size(s, 7), -1);
    ck_assert_int_eq(subsae_sae_param_size(NULL, 0), -1);
    float w[160], back[160];
    for (int i = 0; i < 160; i++)
        w[i] = (float)i * 0.25f - 3.0f;
    ck_assert_ok(subsae_sae_set_param(s, SUBSAE_PARAM_W_ENC, w, 160));
    ck_assert_ok(subsae_sae_get_param(s, SUBSAE_PARAM_W_ENC, back, 160));
    ck_assert_mem_eq(w, back, sizeof w);
    ck_assert_status(subsae_sae_set_param(s, SUBSAE_PARAM_W_ENC, w, 159), SUBSAE_E_INVALID);
    ck_assert_status(subsae_sae_get_param(s, SUBSAE_PARAM_W_DEC, back, 160), SUBSAE_E_INVALID);
    w[77] = NAN;
    ck_assert_status(subsae_sae_set_param(s, SUBSAE_PARAM_W_ENC, w, 160), SUBSAE_E_NONFINITE);
    ck_assert_ok(subsae_sae_get_param(s, SUBSAE_PARAM_W_ENC, back, 160));
    ck_assert(back[77] == 77 * 0.25f - 3.0f); /* unchanged by the failed set */
    ck_assert_status(subsae_sae_get_param(s, 9, back, 160), SUBSAE_E_INVALID);
    ck_assert_status(subsae_sae_get_param(s, SUBSAE_PARAM_W_ENC, NULL, 160), SUBSAE_E_INVALID);
    ck_assert_str_eq(subsae_activation_name(SUBSAE_ACT_TOPK), "topk");
    ck_assert_str_eq(subsae_activation_name(SUBSAE_ACT_JUMPRELU), "jumprelu");
    ck_assert_str_eq(subsae_activation_name(42), "unknown");
    ck_assert_int_eq(subsae_metric_count(), SUBSAE_METRIC_COUNT);
    subsae_sae_free(s);
    subsae_sae_free(NULL);
}
END_TEST

START_TEST(bad_arguments)
{
    subsae_sae *s = NULL;
    ck_assert_status(subsae_sae_create(0, 4, 4, SUBSAE_ACT_TOPK, &s), SUBSAE_E_INVALID);
    ck_assert_status(subsae_sae_create(4, -1, 4, SUBSAE_ACT_TOPK, &s), SUBSAE_E_INVALID);
    ck_assert_status(subsae_sae_create(4, 4, (int64_t)1 << 40, SUBSAE_ACT_TOPK, &s),
                     SUBSAE_E_INVALID);
    ck_assert_status(subsae_sae_create(4, 4, 4, 9, &s), SUBSAE_E_INVALID);
    ck_assert_status(subsae_sae_create(4, 4, 4, SUBSAE_ACT_TOPK, NULL), SUBSAE_E_INVALID);
    ck_assert_ptr_null(s);
    ck_assert_ok(subsae_sae_create(4, 4, 8, SUBSAE_ACT_TOPK, &s));
    float x[16] = {0}, z[32];
    int32_t idx[8];
    float val[8];
    ck_assert_status(subsae_sae_encode(NULL, x, 2, 4, z, 8), SUBSAE_E_INVALID);
    ck_assert_status(subsae_sae_encode(s, NULL, 2, 4, z, 8), SUBSAE_E_INVALID);
    ck_assert_status(subsae_sae_encode(s, x, 2, 3, z, 8), SUBSAE_E_INVALID);
    ck_assert_status(subsae_sae_encode(s, x, 2, 4, z, 7), SUBSAE_E_INVALID);
    ck_assert_status(subsae_sae_encode(s, x, -1, 4, z, 8), SUBSAE_E_INVALID);
    ck_assert_ok(subsae_sae_encode(s, x, 0, 4, z, 8));
    ck_assert_status(subsae_sae_encode_sparse(s, x, 2, 4, 0, idx, val), SUBSAE_E_INVALID);
    ck_assert_status(subsae_sae_encode_sparse(s, x, 2, 4, 4, NULL, val), SUBSAE_E_INVALID);
    x[5] = INFINITY;
    ck_assert_status(subsae_sae_encode_sparse(s, x, 2, 4, 4, idx, val), SUBSAE_E_NONFINITE);
    ck_assert_ptr_nonnull(strstr(subsae_last_error(), "row 1"));
    x[5] = 0;
    int32_t bad_idx[2] = {3, 8};
    float vals[2] = {1, 1}, out[8];
    ck_assert_status(subsae_sae_decode_sparse(s, bad_idx, vals, 1, 2, out, 4), SUBSAE_E_RANGE);
    bad_idx[1] = -1;
    ck_assert_ok(subsae_sae_decode_sparse(s, bad_idx, vals, 1, 2, out, 4));
    vals[0] = NAN;
    ck_assert_status(subsae_sae_decode_sparse(s, bad_idx, vals, 1, 2, out, 4),
                     SUBSAE_E_NONFINITE);
    ck_assert_status(subsae_sae_decode(s, z, 1, 8, out, 3), SUBSAE_E_INVALID);
    ck_assert_status(subsae_sae_fold_scales(NULL), SUBSAE_E_INVALID);
    ck_assert_status(subsae_sae_clone(s, NULL), SUBSAE_E_INVALID);
    double metrics[SUBSAE_METRIC_COUNT];
    ck_assert_status(subsae_sae_evaluate(s, NULL, NULL, metrics, 3), SUBSAE_E_INVALID);
    subsae_buffer *b;
    ck_assert_ok(subsae_buffer_wrap(x, SUBSAE_DTYPE_F32, 2, 3, 3, SUBSAE_COPY, &b));
    ck_assert_status(subsae_sae_evaluate(s, b, NULL, metrics, 3), SUBSAE_E_INVALID);
    subsae_buffer_free(b);
    ck_assert_ok(subsae_buffer_wrap(x, SUBSAE_DTYPE_F32, 2, 4, 4, SUBSAE_COPY, &b));
    ck_assert_status(subsae_sae_evaluate(s, b, NULL, NULL, 3), SUBSAE_E_INVALID);
    ck_assert_status(subsae_sae_evaluate(s, b, NULL, metrics, -1), SUBSAE_E_INVALID);
    subsae_buffer_free(b);
    subsae_sae_free(s);
}
END_TEST

START_TEST(evaluate_matches_hand_computation)
{
    const int64_t d = 10, m = 30, k = 4, n = 300;
    struct model c;
    subsae_sae *s = random_model(d, d, m, SUBSAE_ACT_TOPK, k, 5, &c);
    ck_assert_ok(subsae_sae_set_double(s, SUBSAE_SAE_INPUT_SCALE, 1.5));
    ck_assert_ok(subsae_sae_set_double(s, SUBSAE_SAE_OUTPUT_SCALE, 1.5));
    subsae__rng rng;
    subsae__rng_seed(&rng, 8, 0);
    float *x = normals(&rng, n * d, 1.0, 0.5);
    subsae_buffer *b;
    ck_assert_ok(subsae_buffer_wrap(x, SUBSAE_DTYPE_F32, n, d, d, SUBSAE_BORROW, &b));
    double metrics[SUBSAE_METRIC_COUNT + 2];
    ck_assert_ok(subsae_sae_evaluate(s, b, NULL, metrics, SUBSAE_METRIC_COUNT + 2));
    /* By hand: decode the reference codes, raw space. */
    double sse = 0, l0 = 0, sum[10] = {0}, sum2 = 0;
    int64_t *fires = calloc((size_t)m, sizeof *fires);
    double *z = malloc((size_t)m * sizeof *z);
    for (int64_t i = 0; i < n; i++) {
        reference_codes(&c, SUBSAE_ACT_TOPK, true, false, 1.5, x + i * d, z);
        for (int64_t j = 0; j < d; j++) {
            double r = c.b_dec[j];
            for (int64_t f = 0; f < m; f++)
                r += z[f] * c.W_dec[f * d + j];
            r /= 1.5;
            sse += (r - x[i * d + j]) * (r - x[i * d + j]);
            sum[j] += x[i * d + j];
            sum2 += (double)x[i * d + j] * x[i * d + j];
        }
        for (int64_t f = 0; f < m; f++) {
            l0 += z[f] > 0;
            fires[f] += z[f] > 0;
        }
    }
    double sst = sum2;
    for (int j = 0; j < d; j++)
        sst -= sum[j] * sum[j] / n;
    int64_t zero = 0, dense = 0;
    for (int64_t f = 0; f < m; f++) {
        zero += fires[f] == 0;
        dense += fires[f] > 0.1 * n;
    }
    ck_assert_double_eq_tol(metrics[SUBSAE_METRIC_MSE], sse / n, 1e-5 * sse / n);
    ck_assert_double_eq_tol(metrics[SUBSAE_METRIC_FVU], sse / sst, 1e-5);
    ck_assert_double_eq_tol(metrics[SUBSAE_METRIC_EXPLAINED_VARIANCE], 1 - sse / sst, 1e-5);
    ck_assert_double_eq_tol(metrics[SUBSAE_METRIC_L0], l0 / n, 1e-12);
    ck_assert_double_eq_tol(metrics[SUBSAE_METRIC_ZERO_FREQUENCY_FRACTION], (double)zero / m,
                            1e-12);
    ck_assert_double_eq_tol(metrics[SUBSAE_METRIC_DENSE_FRACTION], (double)dense / m, 1e-12);
    ck_assert_double_eq(metrics[SUBSAE_METRIC_TOKENS], n);
    ck_assert(isnan(metrics[SUBSAE_METRIC_DEAD_FRACTION]));
    ck_assert(isnan(metrics[SUBSAE_METRIC_STEPS]));
    ck_assert(isnan(metrics[SUBSAE_METRIC_COUNT + 1]));
    ck_assert_double_gt(metrics[SUBSAE_METRIC_L0], 0.5);
    /* A non-finite row is reported with its number. */
    x[123 * d + 4] = NAN;
    ck_assert_status(subsae_sae_evaluate(s, b, NULL, metrics, 3), SUBSAE_E_NONFINITE);
    ck_assert_ptr_nonnull(strstr(subsae_last_error(), "row 123"));
    subsae_buffer_free(b);
    subsae_sae_free(s);
    model_free(&c);
    free(x);
    free(z);
    free(fires);
}
END_TEST

START_TEST(failed_allocations_leave_nothing)
{
    /* Every allocation of create/encode/evaluate fails in turn: a clean
     * error each time, no leak (checked under make sanitize). */
    float x[40];
    for (int i = 0; i < 40; i++)
        x[i] = (float)(i % 7) - 2.0f;
    subsae_buffer *b;
    ck_assert_ok(subsae_buffer_wrap(x, SUBSAE_DTYPE_F32, 10, 4, 4, SUBSAE_COPY, &b));
    for (int64_t fail = 0;; fail++) {
        subsae__alloc_fail_after(fail);
        subsae_sae *s = NULL, *copy = NULL;
        int rc = subsae_sae_create(4, 4, 9, SUBSAE_ACT_TOPK, &s);
        int32_t idx[30];
        float val[30], z[90];
        double metrics[4];
        if (!rc)
            rc = subsae_sae_encode_sparse(s, x, 10, 4, 3, idx, val);
        if (!rc)
            rc = subsae_sae_encode(s, x, 10, 4, z, 9);
        if (!rc)
            rc = subsae_sae_clone(s, &copy);
        if (!rc)
            rc = subsae_sae_evaluate(s, b, NULL, metrics, 4);
        subsae__alloc_fail_after(-1);
        subsae_sae_free(s);
        subsae_sae_free(copy);
        if (rc == SUBSAE_OK)
            break;
        ck_assert_int_eq(rc, SUBSAE_E_NOMEM);
        ck_assert_ptr_nonnull(strstr(subsae_last_error(), "out of memory"));
        ck_assert_int_lt(fail, 100);
    }
    subsae_buffer_free(b);
}
END_TEST

START_TEST(save_load_round_trip)
{
    const int64_t d = 9, m = 33, k = 4, n = 50;
    struct model c;
    subsae_sae *s = random_model(d, d, m, SUBSAE_ACT_TOPK, k, 21, &c);
    ck_assert_ok(subsae_sae_set_double(s, SUBSAE_SAE_INPUT_SCALE, 2.0));
    ck_assert_ok(subsae_sae_set_double(s, SUBSAE_SAE_OUTPUT_SCALE, 2.0));
    char dir[512], path[600];
    harness_tmp_path("sae", dir, sizeof dir);
    ck_assert_ok(subsae_sae_save(s, dir));
    /* The file: W_enc [d_in, d_sae] with the scale folded in, float32. */
    snprintf(path, sizeof path, "%s/sae_weights.safetensors", dir);
    subsae__safetensors *st;
    ck_assert_ok(subsae__safetensors_open(path, &st));
    ck_assert_int_eq(subsae__safetensors_count(st), 4);
    const struct subsae__tensor_view *w = subsae__safetensors_find(st, "W_enc");
    ck_assert_ptr_nonnull(w);
    ck_assert_int_eq(w->dtype, SUBSAE_DTYPE_F32);
    ck_assert_int_eq(w->ndim, 2);
    ck_assert_int_eq(w->shape[0], d);
    ck_assert_int_eq(w->shape[1], m);
    float value;
    memcpy(&value, (const char *)w->data + (size_t)(3 * m + 5) * 4, 4); /* [j=3, f=5] */
    ck_assert(value == c.W_enc[5 * d + 3] * 2.0f);
    const struct subsae__tensor_view *wd = subsae__safetensors_find(st, "W_dec");
    ck_assert_int_eq(wd->shape[0], m);
    ck_assert_int_eq(wd->shape[1], d);
    memcpy(&value, (const char *)wd->data + (size_t)(7 * d + 2) * 4, 4);
    ck_assert(value == c.W_dec[7 * d + 2] / 2.0f);
    const struct subsae__tensor_view *bd = subsae__safetensors_find(st, "b_dec");
    memcpy(&value, bd->data, 4);
    ck_assert(value == c.b_dec[0] / 2.0f);
    ck_assert_ptr_null(subsae__safetensors_find(st, "threshold"));
    subsae__safetensors_close(st);
    /* cfg.json carries the fields SAE tools read. */
    snprintf(path, sizeof path, "%s/cfg.json", dir);
    json_error_t error;
    json_t *cfg = json_load_file(path, 0, &error);
    ck_assert_ptr_nonnull(cfg);
    ck_assert_str_eq(json_string_value(json_object_get(cfg, "architecture")), "topk");
    ck_assert_int_eq(json_integer_value(json_object_get(cfg, "d_in")), d);
    ck_assert_int_eq(json_integer_value(json_object_get(cfg, "d_sae")), m);
    ck_assert_int_eq(json_integer_value(json_object_get(cfg, "k")), k);
    ck_assert_str_eq(json_string_value(json_object_get(cfg, "dtype")), "float32");
    ck_assert(json_is_true(json_object_get(cfg, "apply_b_dec_to_input")));
    ck_assert_str_eq(json_string_value(json_object_get(cfg, "normalize_activations")), "none");
    json_decref(cfg);
    /* Loading gives the folded model: same codes on raw data. */
    subsae_sae *back;
    ck_assert_ok(subsae_sae_load(dir, &back));
    double scale;
    ck_assert_ok(subsae_sae_get_double(back, SUBSAE_SAE_INPUT_SCALE, &scale));
    ck_assert(scale == 1.0);
    int64_t v;
    ck_assert_ok(subsae_sae_get_int(back, SUBSAE_SAE_K, &v));
    ck_assert_int_eq(v, k);
    subsae_sae *folded;
    ck_assert_ok(subsae_sae_clone(s, &folded));
    ck_assert_ok(subsae_sae_fold_scales(folded));
    for (int p = SUBSAE_PARAM_W_ENC; p <= SUBSAE_PARAM_B_DEC; p++) {
        int64_t count = subsae_sae_param_size(back, p);
        ck_assert_int_eq(count, subsae_sae_param_size(s, p));
        float *a = malloc((size_t)count * 4), *b = malloc((size_t)count * 4);
        ck_assert_ok(subsae_sae_get_param(back, p, a, count));
        ck_assert_ok(subsae_sae_get_param(folded, p, b, count));
        ck_assert_mem_eq(a, b, (size_t)count * 4);
        free(a);
        free(b);
    }
    subsae__rng rng;
    subsae__rng_seed(&rng, 5, 0);
    float *x = normals(&rng, n * d, 1.0, 0.0);
    int32_t *i1 = malloc((size_t)(n * k) * 4), *i2 = malloc((size_t)(n * k) * 4);
    float *v1 = malloc((size_t)(n * k) * 4), *v2 = malloc((size_t)(n * k) * 4);
    ck_assert_ok(subsae_sae_encode_sparse(s, x, n, d, k, i1, v1));
    ck_assert_ok(subsae_sae_encode_sparse(back, x, n, d, k, i2, v2));
    for (int64_t i = 0; i < n * k; i++) {
        ck_assert_int_eq(i1[i], i2[i]);
        ck_assert_double_eq_tol(v1[i], v2[i], 1e-5 * (1 + fabs(v1[i])));
    }
    /* Saving again over the directory replaces it. */
    ck_assert_ok(subsae_sae_save(back, dir));
    subsae_sae_free(folded);
    subsae_sae_free(back);
    subsae_sae_free(s);
    model_free(&c);
    free(x);
    free(i1);
    free(i2);
    free(v1);
    free(v2);
}
END_TEST

START_TEST(save_load_jumprelu_and_transcoder)
{
    struct model c;
    subsae_sae *s = random_model(6, 4, 10, SUBSAE_ACT_JUMPRELU, 0, 8, &c);
    char dir[512];
    harness_tmp_path("jump", dir, sizeof dir);
    ck_assert_ok(subsae_sae_save(s, dir));
    subsae_sae *back;
    ck_assert_ok(subsae_sae_load(dir, &back));
    int64_t v;
    ck_assert_ok(subsae_sae_get_int(back, SUBSAE_SAE_ACTIVATION, &v));
    ck_assert_int_eq(v, SUBSAE_ACT_JUMPRELU);
    ck_assert_ok(subsae_sae_get_int(back, SUBSAE_SAE_D_OUT, &v));
    ck_assert_int_eq(v, 4);
    ck_assert_ok(subsae_sae_get_int(back, SUBSAE_SAE_APPLY_B_DEC_TO_INPUT, &v));
    ck_assert_int_eq(v, 0);
    float thr[10];
    ck_assert_ok(subsae_sae_get_param(back, SUBSAE_PARAM_THRESHOLD, thr, 10));
    ck_assert_mem_eq(thr, c.thr, sizeof thr);
    subsae_sae_free(back);
    subsae_sae_free(s);
    model_free(&c);
}
END_TEST

/* Write a weights file with some tensors replaced or left out. */
static void write_weights(const char *dir, int64_t d, int64_t m, const char *skip,
                          const char *reshape)
{
    float *zeros = calloc((size_t)(m + 1) * (size_t)(d + 1), sizeof(float));
    struct subsae__tensor_view all[4] = {
        {"W_enc", SUBSAE_DTYPE_F32, 2, {d, m}, zeros, 0},
        {"b_enc", SUBSAE_DTYPE_F32, 1, {m}, zeros, 0},
        {"W_dec", SUBSAE_DTYPE_F32, 2, {m, d}, zeros, 0},
        {"b_dec", SUBSAE_DTYPE_F32, 1, {d}, zeros, 0},
    };
    struct subsae__tensor_view views[4];
    int64_t n = 0;
    for (int i = 0; i < 4; i++) {
        if (skip && !strcmp(all[i].name, skip))
            continue;
        views[n] = all[i];
        if (reshape && !strcmp(all[i].name, reshape))
            views[n].shape[0] += 1;
        size_t count = 1;
        for (int j = 0; j < views[n].ndim; j++)
            count *= (size_t)views[n].shape[j];
        views[n].bytes = count * 4;
        n++;
    }
    char path[600];
    snprintf(path, sizeof path, "%s/sae_weights.safetensors", dir);
    ck_assert_ok(subsae__safetensors_write(path, views, n, NULL, NULL, 0));
    free(zeros);
}

START_TEST(load_rejects_bad_directories)
{
    subsae_sae *s = NULL;
    char dir[512], path[600];
    harness_tmp_path("bad", dir, sizeof dir);
    ck_assert_status(subsae_sae_load(dir, &s), SUBSAE_E_IO); /* no directory */
    ck_assert_ok(subsae__make_dir(dir));
    ck_assert_status(subsae_sae_load(dir, &s), SUBSAE_E_IO); /* no cfg.json */
    ck_assert_ptr_nonnull(strstr(subsae_last_error(), "cfg.json"));
    snprintf(path, sizeof path, "%s/cfg.json", dir);
    FILE *f = fopen(path, "w");
    fputs("{\"architecture\": \"topk\", \"d_in\": 5, \"d_sae\": 7, \"k\": 3}", f);
    fclose(f);
    ck_assert_status(subsae_sae_load(dir, &s), SUBSAE_E_IO); /* no weights */
    ck_assert_ptr_nonnull(strstr(subsae_last_error(), "sae_weights.safetensors"));
    const char *names[] = {"W_enc", "b_enc", "W_dec", "b_dec"};
    for (int i = 0; i < 4; i++) {
        write_weights(dir, 5, 7, names[i], NULL);
        ck_assert_status(subsae_sae_load(dir, &s), SUBSAE_E_FORMAT);
        ck_assert_int_eq(subsae_last_error_reason(), SUBSAE_REASON_MISSING_TENSOR);
        ck_assert_ptr_nonnull(strstr(subsae_last_error(), names[i]));
        write_weights(dir, 5, 7, NULL, names[i]);
        ck_assert_status(subsae_sae_load(dir, &s), SUBSAE_E_FORMAT);
        ck_assert_msg(strstr(subsae_last_error(), "shape") || strstr(subsae_last_error(), "d_in"),
                      "%s", subsae_last_error());
    }
    write_weights(dir, 5, 7, NULL, NULL);
    ck_assert_ok(subsae_sae_load(dir, &s));
    subsae_sae_free(s);
    s = NULL;
    /* cfg.json disagreeing with the tensors, or impossible values. */
    const char *bad_cfgs[] = {
        "{\"architecture\": \"topk\", \"d_in\": 6, \"d_sae\": 7, \"k\": 3}",
        "{\"architecture\": \"topk\", \"d_in\": 5, \"d_sae\": 7, \"k\": 8}",
        "{\"architecture\": \"topk\", \"d_in\": 5, \"d_sae\": 7}",
        "{\"architecture\": \"jumprelu\", \"d_in\": 5, \"d_sae\": 7}",
        "{\"architecture\": \"crosscoder\", \"d_in\": 5, \"d_sae\": 7}",
        "{\"architecture\": \"topk\", \"k\": 3, "
        "\"normalize_activations\": \"expected_average_only_in\"}",
        "[1, 2]",
        "{\"architecture\": ",
    };
    const int want[] = {SUBSAE_E_FORMAT, SUBSAE_E_FORMAT, SUBSAE_E_FORMAT, SUBSAE_E_FORMAT,
                        SUBSAE_E_UNSUPPORTED, SUBSAE_E_UNSUPPORTED, SUBSAE_E_FORMAT,
                        SUBSAE_E_FORMAT};
    for (size_t i = 0; i < sizeof bad_cfgs / sizeof bad_cfgs[0]; i++) {
        f = fopen(path, "w");
        fputs(bad_cfgs[i], f);
        fclose(f);
        ck_assert_status(subsae_sae_load(dir, &s), want[i]);
        ck_assert_ptr_null(s);
    }
    ck_assert_status(subsae_sae_load(NULL, &s), SUBSAE_E_INVALID);
    ck_assert_status(subsae_sae_load(dir, NULL), SUBSAE_E_INVALID);
    ck_assert_status(subsae_sae_save(NULL, dir), SUBSAE_E_INVALID);
}
END_TEST

SUBSAE_SUITE(sae)
{
    Suite *s = suite_create("sae");
    TCase *tc = harness_case(s, "model", 30);
    tcase_add_test(tc, encode_decode_topk);
    tcase_add_test(tc, encode_decode_rank_by_norm);
    tcase_add_test(tc, encode_decode_threshold_activations);
    tcase_add_test(tc, options_and_params);
    tcase_add_test(tc, bad_arguments);
    tcase_add_test(tc, evaluate_matches_hand_computation);
    tcase_add_test(tc, failed_allocations_leave_nothing);
    tc = harness_case(s, "files", 30);
    tcase_add_test(tc, save_load_round_trip);
    tcase_add_test(tc, save_load_jumprelu_and_transcoder);
    tcase_add_test(tc, load_rejects_bad_directories);
    return s;
}
