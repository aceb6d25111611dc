/* Matryoshka SAEs and the sparsity coefficient's warm-up (issue 18):
 *  - the Matryoshka loss (the sum over the nested prefixes of each one's
 *    squared error, each decoding its own features of the same selection
 *    with b_dec) and its gradients against central finite differences of
 *    a double-precision reference, for TopK and BatchTopK, SAE and
 *    transcoder;
 *  - the same bits for 1 and 2 threads, a bit-identical resume from a
 *    checkpoint (which keeps the widths), the widths through SAE
 *    directories, clones and the prefix evaluation (last prefix = the
 *    model's explained variance);
 *  - ASI puts the top principal directions in the first prefix, with
 *    the ranks ceil(r (w_j / d_sae)^(1/4));
 *  - the setters' checks, and allocation failure of every call that
 *    allocates for the prefixes;
 *  - the coefficient warm-up: step 0 has no sparsity penalty, step N/2
 *    half of it, with the reconstruction unchanged (ReLU and JumpReLU);
 *  - `subsae train --matryoshka` and `subsae eval --json` report the
 *    prefixes' explained variance; the CLI's checks of the flags;
 *  - on the shared stories260K data, Matryoshka BatchTopK 256,1024,4096:
 *    the prefixes' explained variance rises strictly, and the whole
 *    model's is within 0.03 of plain BatchTopK's at the same L0. */
#include "harness.h"
#include "internal.h"
#include "rng.h"
#include "sae.h"
#include "trainer.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static subsae_trainer *new_trainer(int activation, int64_t features, int64_t k, int64_t batch,
                                   int threads, const int64_t *widths, int count)
{
    subsae_trainer *t = harness_trainer(activation, features, k, SUBSAE_INIT_ACTIVE_SUBSPACE,
                                        batch, 9, threads);
    ck_assert_ok(subsae_trainer_set_matryoshka(t, widths, count));
    return t;
}

/* ---- the double-precision reference ------------------------------------ */

struct ref {
    int64_t d_in, d_out, m, n;
    bool apply;
    double s_in, s_out;
    double *W_enc, *b_enc, *W_dec, *b_dec;
    const int64_t *row_ptr; /* the step's selection, held fixed */
    const int32_t *idx;
    const float *val;
    int levels;
    const int64_t *widths;
    const float *x, *y;
};

static double *to_double(const float *f, int64_t n)
{
    double *d = malloc((size_t)n * sizeof *d);
    for (int64_t i = 0; i < n; i++)
        d[i] = f[i];
    return d;
}

/* Sum over the prefixes of the mean over rows of |x_hat_j - t|^2. */
static double ref_loss(void *ctx)
{
    const struct ref *r = ctx;
    double *xin = malloc((size_t)r->d_in * sizeof *xin);
    double *xhat = malloc((size_t)r->d_out * sizeof *xhat);
    double loss = 0.0;
    for (int64_t i = 0; i < r->n; i++) {
        for (int64_t j = 0; j < r->d_in; j++)
            xin[j] = (double)r->x[i * r->d_in + j] * r->s_in - (r->apply ? r->b_dec[j] : 0.0);
        for (int level = 0; level < r->levels; level++) {
            for (int64_t c = 0; c < r->d_out; c++)
                xhat[c] = r->b_dec[c];
            for (int64_t q = r->row_ptr[i]; q < r->row_ptr[i + 1]; q++) {
                const int32_t f = r->idx[q];
                if (f < 0 || f >= r->widths[level] || !(r->val[q] > 0.0f))
                    continue;
                double z = r->b_enc[f];
                for (int64_t j = 0; j < r->d_in; j++)
                    z += xin[j] * r->W_enc[f * r->d_in + j];
                for (int64_t c = 0; c < r->d_out; c++)
                    xhat[c] += z * r->W_dec[f * r->d_out + c];
            }
            for (int64_t c = 0; c < r->d_out; c++) {
                const float *tr = r->y ? r->y + i * r->d_out : r->x + i * r->d_in;
                const double e = xhat[c] - (double)tr[c] * r->s_out;
                loss += e * e;
            }
        }
    }
    free(xin);
    free(xhat);
    return loss / (double)r->n;
}

/* One gradient computation of a Matryoshka model (weights moved off their
 * initial values) against the reference. */
static void gradient_case(int activation, bool transcoder)
{
    const int64_t n = 8, d_in = 6, d_out = transcoder ? 5 : 6, m = 16, k = 3;
    const int64_t widths[3] = {4, 9, 16};
    float *x = harness_normal_rows(1, 64, d_in, 0.5);
    float *y = transcoder ? harness_normal_rows(2, 64, d_out, -0.3) : NULL;
    subsae_buffer *bx = harness_wrap_copy(x, 64, d_in);
    subsae_buffer *by = transcoder ? harness_wrap_copy(y, 64, d_out) : NULL;
    subsae_trainer *t = new_trainer(activation, m, k, n, 2, widths, 3);
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_INIT, SUBSAE_INIT_RANDOM));
    ck_assert_ok(subsae_trainer_init(t, bx, by));
    subsae_sae *s = t->sae;
    subsae__rng rng;
    subsae__rng_seed(&rng, 17, 0);
    for (int64_t i = 0; i < m * d_in; i++)
        s->W_enc[i] += 0.3f * (float)subsae__rng_normal(&rng);
    for (int64_t i = 0; i < m; i++)
        s->b_enc[i] = (float)(0.2 * subsae__rng_normal(&rng) + 0.1);
    for (int64_t i = 0; i < d_out; i++)
        s->b_dec[i] += 0.2f * (float)subsae__rng_normal(&rng);
    for (int64_t i = 0; i < m * d_out; i++)
        s->W_dec[i] += 0.2f * (float)subsae__rng_normal(&rng);
    float *g[4] = {malloc((size_t)(m * d_in) * 4), malloc((size_t)m * 4),
                   malloc((size_t)(m * d_out) * 4), malloc((size_t)d_out * 4)};
    double loss;
    ck_assert_ok(subsae__trainer_gradients(t, x, d_in, y, d_out, n, g[0], g[1], g[2], g[3],
                                           &loss, NULL));
    struct ref r = {.d_in = d_in, .d_out = d_out, .m = m, .n = n,
                    .apply = s->apply_b_dec_to_input, .s_in = (float)s->input_scale,
                    .s_out = (float)s->output_scale, .W_enc = to_double(s->W_enc, m * d_in),
                    .b_enc = to_double(s->b_enc, m), .W_dec = to_double(s->W_dec, m * d_out),
                    .b_dec = to_double(s->b_dec, d_out), .levels = 3, .widths = widths,
                    .x = x, .y = y};
    subsae__trainer_pairs(t, &r.row_ptr, &r.idx, &r.val);
    /* Every prefix has pairs of its own, so that each block is exercised. */
    int64_t per_level[3] = {0, 0, 0};
    for (int64_t q = 0; q < r.row_ptr[n]; q++)
        if (r.idx[q] >= 0 && r.val[q] > 0.0f)
            per_level[r.idx[q] < 4 ? 0 : r.idx[q] < 9 ? 1 : 2]++;
    ck_assert_msg(per_level[0] > 0 && per_level[1] > 0 && per_level[2] > 0,
                  "pairs per prefix %lld %lld %lld", (long long)per_level[0],
                  (long long)per_level[1], (long long)per_level[2]);
    const double want = ref_loss(&r);
    ck_assert_msg(fabs(loss - want) <= 1e-5 * fabs(want), "loss %.10g, reference %.10g", loss,
                  want);
    harness_check_gradient(r.W_enc, m * d_in, g[0], ref_loss, &r, "W_enc");
    harness_check_gradient(r.b_enc, m, g[1], ref_loss, &r, "b_enc");
    harness_check_gradient(r.W_dec, m * d_out, g[2], ref_loss, &r, "W_dec");
    harness_check_gradient(r.b_dec, d_out, g[3], ref_loss, &r, "b_dec");
    for (int i = 0; i < 4; i++)
        free(g[i]);
    free(r.W_enc);
    free(r.b_enc);
    free(r.W_dec);
    free(r.b_dec);
    subsae_trainer_free(t);
    subsae_buffer_free(bx);
    subsae_buffer_free(by);
    free(x);
    free(y);
}

START_TEST(gradients_against_finite_differences)
{
    gradient_case(SUBSAE_ACT_TOPK, false);
    gradient_case(SUBSAE_ACT_TOPK, true);
    gradient_case(SUBSAE_ACT_BATCHTOPK, false);
    gradient_case(SUBSAE_ACT_BATCHTOPK, true);
}
END_TEST

/* ---- determinism, resume, files ----------------------------------------- */

static void expect_same_weights(const subsae_sae *a, const subsae_sae *b)
{
    for (int p = SUBSAE_PARAM_W_ENC; p <= SUBSAE_PARAM_THRESHOLD; p++) {
        int64_t count = subsae_sae_param_size(a, p);
        float *x = malloc((size_t)count * 4), *y = malloc((size_t)count * 4);
        ck_assert_ok(subsae_sae_get_param(a, p, x, count));
        ck_assert_ok(subsae_sae_get_param(b, p, y, count));
        ck_assert_msg(!memcmp(x, y, (size_t)count * 4), "parameter %d differs", p);
        free(x);
        free(y);
    }
}

static const int64_t WIDTHS[3] = {8, 24, 64};

static void expect_widths(const subsae_sae *sae)
{
    int64_t w[4] = {0};
    int count = -1;
    ck_assert_ok(subsae_sae_get_matryoshka(sae, w, 4, &count));
    ck_assert_int_eq(count, 3);
    ck_assert_mem_eq(w, WIDTHS, sizeof WIDTHS);
}

START_TEST(same_bits_for_one_and_two_threads)
{
    const int64_t n = 768, d = 16;
    float *x = harness_normal_rows(3, n, d, 0.2);
    subsae_buffer *b = harness_wrap_copy(x, n, d);
    const int acts[2] = {SUBSAE_ACT_TOPK, SUBSAE_ACT_BATCHTOPK};
    for (int a = 0; a < 2; a++) {
        subsae_trainer *t[2];
        for (int run = 0; run < 2; run++) {
            t[run] = new_trainer(acts[a], 64, 4, 128, run + 1, WIDTHS, 3);
            ck_assert_ok(subsae_trainer_set_double(t[run], SUBSAE_TRAIN_AUXK_COEF, 1.0 / 32));
            ck_assert_ok(subsae_trainer_set_int(t[run], SUBSAE_TRAIN_DEAD_WINDOW, 256));
            ck_assert_ok(subsae_trainer_init(t[run], b, NULL));
            ck_assert_ok(subsae_trainer_fit(t[run], b, NULL, 2 * n));
        }
        expect_same_weights(subsae_trainer_sae(t[0]), subsae_trainer_sae(t[1]));
        double ma[SUBSAE_METRIC_COUNT], mb[SUBSAE_METRIC_COUNT];
        ck_assert_ok(subsae_trainer_metrics(t[0], ma, SUBSAE_METRIC_COUNT));
        ck_assert_ok(subsae_trainer_metrics(t[1], mb, SUBSAE_METRIC_COUNT));
        ck_assert(ma[SUBSAE_METRIC_LOSS] == mb[SUBSAE_METRIC_LOSS]);
        for (int run = 0; run < 2; run++)
            subsae_trainer_free(t[run]);
    }
    subsae_buffer_free(b);
    free(x);
}
END_TEST

START_TEST(resume_is_bit_identical)
{
    const int64_t n = 1000, d = 12, half = 9 * 64;
    float *x = harness_normal_rows(4, n, d, -0.1);
    subsae_buffer *b = harness_wrap_copy(x, n, d);
    const int acts[2] = {SUBSAE_ACT_TOPK, SUBSAE_ACT_BATCHTOPK};
    for (int a = 0; a < 2; a++) {
        subsae_trainer *straight = new_trainer(acts[a], 64, 4, 64, 2, WIDTHS, 3);
        ck_assert_ok(subsae_trainer_init(straight, b, NULL));
        ck_assert_ok(subsae_trainer_fit(straight, b, NULL, 2 * half));
        subsae_trainer *first = new_trainer(acts[a], 64, 4, 64, 2, WIDTHS, 3);
        ck_assert_ok(subsae_trainer_init(first, b, NULL));
        ck_assert_ok(subsae_trainer_fit(first, b, NULL, half));
        char dir[512];
        harness_tmp_path("ck-matryoshka", dir, sizeof dir);
        ck_assert_ok(subsae_trainer_save_checkpoint(first, dir));
        subsae_trainer_free(first);
        subsae_trainer *resumed;
        ck_assert_ok(subsae_trainer_load_checkpoint(dir, &resumed));
        expect_widths(subsae_trainer_sae(resumed));
        ck_assert_ok(subsae_trainer_fit(resumed, b, NULL, half));
        expect_same_weights(subsae_trainer_sae(straight), subsae_trainer_sae(resumed));
        double ma[SUBSAE_METRIC_COUNT], mb[SUBSAE_METRIC_COUNT];
        ck_assert_ok(subsae_trainer_metrics(straight, ma, SUBSAE_METRIC_COUNT));
        ck_assert_ok(subsae_trainer_metrics(resumed, mb, SUBSAE_METRIC_COUNT));
        for (int i = 0; i < SUBSAE_METRIC_COUNT; i++)
            ck_assert_msg((isnan(ma[i]) && isnan(mb[i])) || ma[i] == mb[i],
                          "metric %d: %.17g vs %.17g", i, ma[i], mb[i]);
        subsae_trainer_free(straight);
        subsae_trainer_free(resumed);
    }
    subsae_buffer_free(b);
    free(x);
}
END_TEST

/* The widths through clones and SAE directories; the prefixes'
 * explained variance, the last equal to the model's. */
START_TEST(widths_saved_loaded_and_evaluated)
{
    const int64_t n = 2048, d = 16;
    float *x = harness_normal_rows(5, n, d, 0.3);
    subsae_buffer *b = harness_wrap_copy(x, n, d);
    subsae_trainer *t = new_trainer(SUBSAE_ACT_TOPK, 64, 4, 256, 2, WIDTHS, 3);
    ck_assert_ok(subsae_trainer_init(t, b, NULL));
    ck_assert_ok(subsae_trainer_fit(t, b, NULL, 4 * n));
    const subsae_sae *sae = subsae_trainer_sae(t);
    expect_widths(sae);
    subsae_sae *copy, *loaded;
    ck_assert_ok(subsae_sae_clone(sae, &copy));
    expect_widths(copy);
    char dir[512];
    harness_tmp_path("sae-matryoshka", dir, sizeof dir);
    ck_assert_ok(subsae_sae_save(sae, dir));
    json_t *cfg = harness_json_at(dir, "cfg.json");
    const json_t *w = json_object_get(cfg, "matryoshka_widths");
    ck_assert_int_eq((int)json_array_size(w), 3);
    ck_assert_int_eq(json_integer_value(json_array_get(w, 1)), 24);
    json_decref(cfg);
    ck_assert_ok(subsae_sae_load(dir, &loaded));
    expect_widths(loaded);
    double ev[4], m[SUBSAE_METRIC_COUNT];
    int count = 0;
    ck_assert_ok(subsae_sae_evaluate_prefixes(loaded, b, NULL, ev, 4, &count));
    ck_assert_int_eq(count, 3);
    ck_assert_ok(subsae_sae_evaluate(loaded, b, NULL, m, SUBSAE_METRIC_COUNT));
    ck_assert(ev[2] == m[SUBSAE_METRIC_EXPLAINED_VARIANCE]);
    ck_assert_msg(ev[0] < ev[1] && ev[1] < ev[2], "prefix explained variance %g %g %g", ev[0],
                  ev[1], ev[2]);
    /* A capacity of 1 writes the first only; count still says 3. */
    double first = NAN;
    ck_assert_ok(subsae_sae_evaluate_prefixes(loaded, b, NULL, &first, 1, &count));
    ck_assert(first == ev[0] && count == 3);
    /* A plain model: one prefix, its explained variance. */
    subsae_trainer *plain = new_trainer(SUBSAE_ACT_TOPK, 64, 4, 256, 2, NULL, 0);
    ck_assert_ok(subsae_trainer_init(plain, b, NULL));
    ck_assert_ok(subsae_sae_get_matryoshka(subsae_trainer_sae(plain), NULL, 0, &count));
    ck_assert_int_eq(count, 0);
    ck_assert_ok(subsae_sae_evaluate_prefixes(subsae_trainer_sae(plain), b, NULL, ev, 4, &count));
    ck_assert_ok(subsae_sae_evaluate(subsae_trainer_sae(plain), b, NULL, m, SUBSAE_METRIC_COUNT));
    ck_assert(count == 1 && ev[0] == m[SUBSAE_METRIC_EXPLAINED_VARIANCE]);
    /* A cfg.json with bad widths is refused. */
    cfg = harness_json_at(dir, "cfg.json");
    json_object_set_new(cfg, "matryoshka_widths", json_pack("[i, i]", 30, 20));
    char path[600];
    snprintf(path, sizeof path, "%s/cfg.json", dir);
    ck_assert_int_eq(json_dump_file(cfg, path, 0), 0);
    json_decref(cfg);
    subsae_sae *bad = NULL;
    ck_assert_status(subsae_sae_load(dir, &bad), SUBSAE_E_FORMAT);
    ck_assert_ptr_null(bad);
    subsae_trainer_free(plain);
    subsae_sae_free(loaded);
    subsae_sae_free(copy);
    subsae_trainer_free(t);
    subsae_buffer_free(b);
    free(x);
}
END_TEST

/* ASI: the first prefix's decoder rows lie in the top principal
 * directions (8 of 64 features: ceil(r 8 / 64) of the r directions). */
START_TEST(asi_puts_top_directions_first)
{
    const int64_t n = 4096, d = 16, m = 64;
    /* Variance falling along the axes, so the principal directions are
     * the coordinate axes in order. */
    float *x = harness_normal_rows(6, n, d, 0.0);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < d; j++)
            x[i * d + j] *= (float)pow(0.7, (double)j);
    subsae_buffer *b = harness_wrap_copy(x, n, d);
    subsae_trainer *t = new_trainer(SUBSAE_ACT_TOPK, m, 4, 256, 2, WIDTHS, 3);
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_SUBSPACE_DIM, 16));
    ck_assert_ok(subsae_trainer_init(t, b, NULL));
    const subsae_sae *s = subsae_trainer_sae(t);
    /* Prefix 0 spans the top ceil(16 (8 / 64)^(1/4)) = 10 axes, prefix 1
     * the top ceil(16 (24 / 64)^(1/4)) = 13, prefix 2 all 16 (up to the
     * sample's estimate of the axes): the share of each prefix's decoder
     * energy beyond its span. */
    const int64_t spans[3] = {10, 13, 13};
    double outside[3] = {0, 0, 0}, total[3] = {0, 0, 0};
    for (int64_t f = 0; f < m; f++) {
        const int level = f < 8 ? 0 : f < 24 ? 1 : 2;
        for (int64_t j = 0; j < d; j++) {
            const double w2 = (double)s->W_dec[f * d + j] * s->W_dec[f * d + j];
            total[level] += w2;
            outside[level] += j >= spans[level] ? w2 : 0.0;
        }
    }
    ck_assert_double_lt(outside[0] / total[0], 0.01);
    ck_assert_double_lt(outside[1] / total[1], 0.01);
    ck_assert_double_gt(outside[2] / total[2], 0.08); /* the last prefix: all 16 */
    /* Prefix 0 does not reach axes 10-12, which prefix 1 fills. */
    double mid[2] = {0, 0};
    for (int64_t f = 0; f < 24; f++)
        for (int64_t j = 10; j < 13; j++)
            mid[f < 8] += (double)s->W_dec[f * d + j] * s->W_dec[f * d + j];
    ck_assert_double_lt(mid[1] / total[0], 0.01);
    ck_assert_double_gt(mid[0] / total[1], 0.08);
    subsae_trainer_free(t);
    subsae_buffer_free(b);
    free(x);
}
END_TEST

START_TEST(setter_checks)
{
    subsae_trainer *t;
    ck_assert_ok(subsae_trainer_create(&t));
    const int64_t down[2] = {8, 4}, zero[2] = {0, 4}, ok[2] = {16, 64}, short_[2] = {16, 32};
    ck_assert_status(subsae_trainer_set_matryoshka(NULL, ok, 2), SUBSAE_E_INVALID);
    ck_assert_status(subsae_trainer_set_matryoshka(t, down, 2), SUBSAE_E_INVALID);
    ck_assert_status(subsae_trainer_set_matryoshka(t, zero, 2), SUBSAE_E_INVALID);
    ck_assert_status(subsae_trainer_set_matryoshka(t, NULL, 2), SUBSAE_E_INVALID);
    ck_assert_status(subsae_trainer_set_matryoshka(t, ok, SUBSAE_MATRYOSHKA_MAX + 1),
                     SUBSAE_E_INVALID);
    ck_assert_status(subsae_trainer_set_matryoshka(t, ok, -1), SUBSAE_E_INVALID);
    ck_assert_ok(subsae_trainer_set_matryoshka(t, NULL, 0));
    float *x = harness_normal_rows(7, 256, 8, 0.0);
    subsae_buffer *b = harness_wrap_copy(x, 256, 8);
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_FEATURES, 64));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_K, 4));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_BATCH, 64));
    /* The last width must be the number of features (checked by init). */
    ck_assert_ok(subsae_trainer_set_matryoshka(t, short_, 2));
    ck_assert_status(subsae_trainer_init(t, b, NULL), SUBSAE_E_INVALID);
    /* TopK and BatchTopK only. */
    ck_assert_ok(subsae_trainer_set_matryoshka(t, ok, 2));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_ACTIVATION, SUBSAE_ACT_RELU));
    ck_assert_status(subsae_trainer_init(t, b, NULL), SUBSAE_E_INVALID);
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_ACTIVATION, SUBSAE_ACT_BATCHTOPK));
    ck_assert_ok(subsae_trainer_init(t, b, NULL));
    ck_assert_status(subsae_trainer_set_matryoshka(t, ok, 2), SUBSAE_E_STATE);
    int count;
    ck_assert_status(subsae_sae_get_matryoshka(NULL, NULL, 0, &count), SUBSAE_E_INVALID);
    ck_assert_status(subsae_sae_get_matryoshka(subsae_trainer_sae(t), NULL, 2, &count),
                     SUBSAE_E_INVALID);
    ck_assert_status(subsae_sae_get_matryoshka(subsae_trainer_sae(t), NULL, 0, NULL),
                     SUBSAE_E_INVALID);
    ck_assert_status(subsae_sae_evaluate_prefixes(subsae_trainer_sae(t), b, NULL, NULL, 2,
                                                  &count),
                     SUBSAE_E_INVALID);
    subsae_trainer_free(t);
    subsae_buffer_free(b);
    free(x);
}
END_TEST

/* ---- allocation failure --------------------------------------------------- */

struct alloc_case {
    subsae_buffer *b;
    subsae_trainer *t;
    const char *dir;
};

static json_malloc_t saved_json_malloc;
static json_free_t saved_json_free;

/* Drive call(c) with the n-th allocation and every later one failing, for
 * n = 0, 1, ... (see the stride below) until it succeeds: each failure is SUBSAE_E_NOMEM with a
 * message, leaks nothing, and the retry succeeds. Jansson allocates through
 * the library's allocator meanwhile (as in test_alloc_failure.c). */
static void drive(const char *name, void (*setup)(struct alloc_case *c),
                  int (*call)(struct alloc_case *c), struct alloc_case *c)
{
    json_get_alloc_funcs(&saved_json_malloc, &saved_json_free);
    json_set_alloc_funcs(subsae__malloc, subsae__free);
    /* Every index up to 64, then every 9th (the round trips through
     * Jansson make over a thousand allocations, each rerun from setup). */
    for (int64_t n = 0; n < 100000; n += n < 64 ? 1 : 9) {
        const int64_t live = subsae__alloc_live();
        setup(c);
        subsae__alloc_fail_after(n);
        int rc = call(c);
        const int64_t made = subsae__alloc_count();
        subsae__alloc_fail_after(-1);
        if (made <= n) {
            ck_assert_msg(rc == SUBSAE_OK, "%s: %s", name, subsae_last_error());
            subsae_trainer_free(c->t);
            c->t = NULL;
            fprintf(stderr, "alloc failure: %-40s %4lld allocations, failures clean\n", name,
                    (long long)made);
            break;
        }
        ck_assert_msg(rc == SUBSAE_E_NOMEM, "%s: allocation %lld -> %d: %s", name, (long long)n,
                      rc, subsae_last_error());
        ck_assert_msg(subsae_last_error()[0] != '\0', "%s: empty message", name);
        ck_assert_msg(call(c) == SUBSAE_OK, "%s: retry: %s", name, subsae_last_error());
        subsae_trainer_free(c->t);
        c->t = NULL;
        ck_assert_msg(subsae__alloc_live() == live, "%s: allocation %lld leaked %lld blocks",
                      name, (long long)n, (long long)(subsae__alloc_live() - live));
    }
    json_set_alloc_funcs(saved_json_malloc, saved_json_free);
}

static void setup_fresh(struct alloc_case *c)
{
    c->t = new_trainer(SUBSAE_ACT_BATCHTOPK, 64, 4, 64, 2, WIDTHS, 3);
}

static void setup_initialised(struct alloc_case *c)
{
    setup_fresh(c);
    ck_assert_ok(subsae_trainer_init(c->t, c->b, NULL));
}

static int call_init(struct alloc_case *c)
{
    int rc = subsae_trainer_init(c->t, c->b, NULL);
    if (rc == SUBSAE_OK)
        expect_widths(subsae_trainer_sae(c->t));
    return rc;
}

static int call_fit(struct alloc_case *c)
{
    return subsae_trainer_fit(c->t, c->b, NULL, 128);
}

static int call_prefixes(struct alloc_case *c)
{
    double ev[3];
    int count;
    return subsae_sae_evaluate_prefixes(subsae_trainer_sae(c->t), c->b, NULL, ev, 3, &count);
}

static int call_checkpoint_round_trip(struct alloc_case *c)
{
    int rc = subsae_trainer_save_checkpoint(c->t, c->dir);
    subsae_trainer *back = NULL;
    if (!rc)
        rc = subsae_trainer_load_checkpoint(c->dir, &back);
    if (!rc)
        expect_widths(subsae_trainer_sae(back));
    subsae_trainer_free(back);
    return rc;
}

static int call_sae_round_trip(struct alloc_case *c)
{
    int rc = subsae_sae_save(subsae_trainer_sae(c->t), c->dir);
    subsae_sae *back = NULL;
    if (!rc)
        rc = subsae_sae_load(c->dir, &back);
    if (!rc)
        expect_widths(back);
    subsae_sae_free(back);
    return rc;
}

START_TEST(allocation_failures_are_clean)
{
    float *x = harness_normal_rows(8, 256, 8, 0.1);
    char ckpt[512], sae_dir[512];
    struct alloc_case c = {.b = harness_wrap_copy(x, 256, 8)};
    drive("init (Matryoshka)", setup_fresh, call_init, &c);
    drive("fit (Matryoshka)", setup_initialised, call_fit, &c);
    drive("evaluate_prefixes", setup_initialised, call_prefixes, &c);
    c.dir = harness_tmp_path("alloc-ckpt", ckpt, sizeof ckpt);
    drive("checkpoint save + load (Matryoshka)", setup_initialised, call_checkpoint_round_trip,
          &c);
    c.dir = harness_tmp_path("alloc-sae", sae_dir, sizeof sae_dir);
    drive("SAE save + load (Matryoshka)", setup_initialised, call_sae_round_trip, &c);
    subsae_buffer_free(c.b);
    free(x);
}
END_TEST

/* ---- the coefficient warm-up ---------------------------------------------- */

/* The loss parts of one gradient computation at step `step` of a trainer
 * with warm-up over `warmup` steps (the same weights for every call). */
static void parts_at(int activation, int64_t warmup, int64_t step, double parts[3])
{
    const int64_t n = 64, d = 8;
    float *x = harness_normal_rows(10, n, d, 0.2);
    subsae_buffer *b = harness_wrap_copy(x, n, d);
    subsae_trainer *t = new_trainer(activation, 32, 4, n, 2, NULL, 0);
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_COEF_WARMUP_STEPS, warmup));
    ck_assert_ok(subsae_trainer_set_double(t, SUBSAE_TRAIN_L1_COEF, 0.5));
    ck_assert_ok(subsae_trainer_set_double(t, SUBSAE_TRAIN_L0_COEF, 0.5));
    ck_assert_ok(subsae_trainer_init(t, b, NULL));
    t->step = step;
    double loss;
    ck_assert_ok(
        subsae__trainer_gradients(t, x, d, NULL, 0, n, NULL, NULL, NULL, NULL, &loss, NULL));
    subsae__trainer_loss_parts(t, &parts[0], &parts[1], &parts[2]);
    ck_assert_double_eq_tol(loss, parts[0] + parts[1] + parts[2], 1e-12 * fabs(loss));
    subsae_trainer_free(t);
    subsae_buffer_free(b);
    free(x);
}

START_TEST(coefficient_warmup_ramps_the_penalty)
{
    const int acts[3] = {SUBSAE_ACT_RELU, SUBSAE_ACT_JUMPRELU, SUBSAE_ACT_GATED};
    for (int a = 0; a < 3; a++) {
        double full[3], start[3], half[3], done[3];
        parts_at(acts[a], 0, 0, full);
        parts_at(acts[a], 8, 0, start);
        parts_at(acts[a], 8, 4, half);
        parts_at(acts[a], 8, 8, done);
        ck_assert_double_gt(full[1], 0.0);
        ck_assert(start[1] == 0.0);
        ck_assert_double_eq_tol(half[1], 0.5 * full[1], 1e-12 * full[1]);
        ck_assert(done[1] == full[1]);
        /* The reconstruction does not depend on the coefficient. */
        ck_assert(start[0] == full[0] && half[0] == full[0]);
    }
    /* Through the public step: the first step's sparsity loss is 0, and
     * the option survives a checkpoint. */
    const int64_t n = 64, d = 8;
    float *x = harness_normal_rows(11, n, d, 0.2);
    subsae_buffer *b = harness_wrap_copy(x, n, d);
    subsae_trainer *t = new_trainer(SUBSAE_ACT_JUMPRELU, 32, 4, n, 2, NULL, 0);
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_COEF_WARMUP_STEPS, 5));
    ck_assert_ok(subsae_trainer_init(t, b, NULL));
    ck_assert_ok(subsae_trainer_step(t, x, d, NULL, 0, n));
    double m[SUBSAE_METRIC_COUNT];
    ck_assert_ok(subsae_trainer_metrics(t, m, SUBSAE_METRIC_COUNT));
    ck_assert(m[SUBSAE_METRIC_LOSS_SPARSITY] == 0.0);
    ck_assert_ok(subsae_trainer_step(t, x, d, NULL, 0, n));
    ck_assert_ok(subsae_trainer_metrics(t, m, SUBSAE_METRIC_COUNT));
    ck_assert_double_gt(m[SUBSAE_METRIC_LOSS_SPARSITY], 0.0);
    char dir[512];
    harness_tmp_path("ck-warmup", dir, sizeof dir);
    ck_assert_ok(subsae_trainer_save_checkpoint(t, dir));
    subsae_trainer *back;
    ck_assert_ok(subsae_trainer_load_checkpoint(dir, &back));
    int64_t v;
    ck_assert_ok(subsae_trainer_get_int(back, SUBSAE_TRAIN_COEF_WARMUP_STEPS, &v));
    ck_assert_int_eq(v, 5);
    subsae_trainer_free(back);
    subsae_trainer_free(t);
    subsae_buffer_free(b);
    free(x);
}
END_TEST

/* ---- the CLI ------------------------------------------------------------------- */

/* The eval object's prefix explained variance: two values, rising, the
 * last the model's. */
static void expect_prefix_json(const json_t *eval)
{
    const json_t *prefixes = json_object_get(eval, "prefix_explained_variance");
    ck_assert_int_eq((int)json_array_size(prefixes), 2);
    const double a = json_real_value(json_array_get(prefixes, 0));
    const double b = json_real_value(json_array_get(prefixes, 1));
    ck_assert_msg(a < b, "prefix explained variance %g %g", a, b);
    ck_assert(b == json_real_value(json_object_get(eval, "explained_variance")));
}

START_TEST(cli_trains_and_evaluates_matryoshka)
{
    const int64_t n = 4096, d = 16;
    float *x = harness_normal_rows(12, n, d, 0.2);
    subsae_buffer *b = harness_wrap_copy(x, n, d);
    char data[512], out[512], args[2048];
    harness_tmp_path("rows.npy", data, sizeof data);
    harness_tmp_path("nested", out, sizeof out);
    ck_assert_ok(subsae_buffer_save_npy(b, data, SUBSAE_DTYPE_F32));
    snprintf(args, sizeof args,
             "train '%s' --features 64 --k 4 --batch 256 --epochs 2 --matryoshka 16,64 "
             "--eval-fraction 0.25 --out '%s' --json --quiet",
             data, out);
    ck_assert_int_eq(harness_cli(args, "train.json"), 0);
    json_t *report = harness_read_json("train.json");
    expect_prefix_json(json_object_get(report, "eval"));
    json_decref(report);
    snprintf(args, sizeof args, "eval '%s' '%s' --json", out, data);
    ck_assert_int_eq(harness_cli(args, "eval.json"), 0);
    report = harness_read_json("eval.json");
    expect_prefix_json(report);
    json_decref(report);
    /* The last width must be --features; relu has no prefixes; a resumed
     * run keeps its own. */
    snprintf(args, sizeof args, "train '%s' --features 64 --k 4 --matryoshka 16,32 --quiet",
             data);
    ck_assert_int_ne(harness_cli(args, "bad-last.json"), 0);
    snprintf(args, sizeof args,
             "train '%s' --features 64 --activation relu --matryoshka 16,64 --quiet", data);
    ck_assert_int_ne(harness_cli(args, "bad-relu.json"), 0);
    snprintf(args, sizeof args, "train '%s' --resume '%s' --matryoshka 16,64 --quiet", data,
             out);
    ck_assert_int_ne(harness_cli(args, "bad-resume.json"), 0);
    /* The warm-up flag reaches the trainer (relu, jumprelu). */
    snprintf(args, sizeof args,
             "train '%s' --features 64 --activation jumprelu --batch 256 --coef-warmup-steps 4 "
             "--json --quiet",
             data);
    ck_assert_int_eq(harness_cli(args, "warmup.json"), 0);
    subsae_buffer_free(b);
    free(x);
}
END_TEST

/* ---- real data --------------------------------------------------------------- */

struct real_run {
    double ev, l0, seconds;
    double prefix[3];
    int count;
};

/* Two epochs of `activation` k 8, d_sae 4096, batch 1024, lr 1e-3 on
 * `train` (the recipe), evaluated on `eval`. */
static void real_run(int activation, const subsae_buffer *train, const subsae_buffer *eval,
                     const int64_t *widths, int count, struct real_run *out)
{
    subsae_trainer *t = new_trainer(activation, 4096, 8, 1024, 0, widths, count);
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_SEED, 0));
    ck_assert_ok(subsae_trainer_set_double(t, SUBSAE_TRAIN_LR, 1e-3));
    const double started = harness_now();
    ck_assert_ok(subsae_trainer_init(t, train, NULL));
    ck_assert_ok(subsae_trainer_fit(t, train, NULL, 2 * subsae_buffer_rows(train)));
    out->seconds = harness_now() - started;
    double m[SUBSAE_METRIC_COUNT];
    const subsae_sae *sae = subsae_trainer_sae(t);
    ck_assert_ok(subsae_sae_evaluate(sae, eval, NULL, m, SUBSAE_METRIC_COUNT));
    out->ev = m[SUBSAE_METRIC_EXPLAINED_VARIANCE];
    out->l0 = m[SUBSAE_METRIC_L0];
    ck_assert_ok(subsae_sae_evaluate_prefixes(sae, eval, NULL, out->prefix, 3, &out->count));
    subsae_trainer_free(t);
}

/* The first 32,768 rows of L2_mlp_in_131k.npy (2 epochs: 56 steps), the
 * layer where the criterion was hardest to meet (README,
 * Matryoshka): ~12 s a run on an idle 2-core machine. */
#define REAL_ROWS 32768

START_TEST(matryoshka_batchtopk_on_stories)
{
    struct harness_split data;
    if (!harness_real_split("matryoshka_batchtopk_on_stories", "L2_mlp_in_131k.npy", REAL_ROWS,
                            &data))
        return;
    subsae_buffer *train = data.train, *eval = data.eval;
    const char *path = data.path;
    const int64_t rows = REAL_ROWS, n_train = data.n_train;
    const int64_t widths[3] = {256, 1024, 4096};
    struct real_run plain, nested;
    real_run(SUBSAE_ACT_BATCHTOPK, train, eval, NULL, 0, &plain);
    real_run(SUBSAE_ACT_BATCHTOPK, train, eval, widths, 3, &nested);
    fprintf(stderr,
            "\nBatchTopK k 8, d_sae 4096, 2 epochs of %lld rows of %s, eval on %lld rows:\n"
            "| model | L0 (eval) | explained variance (eval) | prefixes 256 / 1024 / 4096 | "
            "time |\n|---|---|---|---|---|\n"
            "| plain | %.1f | %.3f | | %.1f s |\n"
            "| Matryoshka | %.1f | %.3f | %.3f / %.3f / %.3f | %.1f s |\n",
            (long long)n_train, path, (long long)(rows - n_train), plain.l0, plain.ev,
            plain.seconds, nested.l0, nested.ev, nested.prefix[0], nested.prefix[1],
            nested.prefix[2], nested.seconds);
    ck_assert_int_eq(nested.count, 3);
    ck_assert(nested.prefix[2] == nested.ev);
    ck_assert_msg(nested.prefix[0] < nested.prefix[1] && nested.prefix[1] < nested.prefix[2],
                  "prefix explained variance %.4f %.4f %.4f does not rise", nested.prefix[0],
                  nested.prefix[1], nested.prefix[2]);
    ck_assert_msg(fabs(nested.ev - plain.ev) <= 0.03,
                  "Matryoshka explained variance %.4f vs plain %.4f", nested.ev, plain.ev);
    /* The same L0: BatchTopK's threshold tracks the batch cut (k) for both. */
    ck_assert_msg(fabs(nested.l0 - plain.l0) <= 0.1 * plain.l0, "L0 %.2f vs %.2f", nested.l0,
                  plain.l0);
    ck_assert_msg(fabs(plain.l0 - 8.0) <= 1.0, "plain L0 %.2f, k 8", plain.l0);
    harness_split_free(&data);
}
END_TEST

/* Matryoshka TopK on a 16k-row attention output where Matryoshka
 * BatchTopK's held-out prefixes fall (README, Matryoshka): they rise, and
 * the whole model stays within 0.03 of plain TopK. ~2 s a run. */
START_TEST(matryoshka_topk_on_a_small_file)
{
    struct harness_split data;
    if (!harness_real_split("matryoshka_topk_on_a_small_file", "L3_attn_out.npy", 0, &data))
        return;
    const int64_t widths[3] = {256, 1024, 4096};
    struct real_run plain, nested;
    real_run(SUBSAE_ACT_TOPK, data.train, data.eval, NULL, 0, &plain);
    real_run(SUBSAE_ACT_TOPK, data.train, data.eval, widths, 3, &nested);
    fprintf(stderr,
            "\nTopK k 8, d_sae 4096, 2 epochs of %lld rows of %s, eval on %lld rows: plain %.3f, "
            "Matryoshka %.3f, prefixes %.3f / %.3f / %.3f\n",
            (long long)data.n_train, data.path, (long long)data.n_eval, plain.ev, nested.ev,
            nested.prefix[0], nested.prefix[1], nested.prefix[2]);
    ck_assert_int_eq(nested.count, 3);
    ck_assert_msg(nested.prefix[0] < nested.prefix[1] && nested.prefix[1] < nested.prefix[2],
                  "prefix explained variance %.4f %.4f %.4f does not rise", nested.prefix[0],
                  nested.prefix[1], nested.prefix[2]);
    ck_assert_msg(fabs(nested.ev - plain.ev) <= 0.03,
                  "Matryoshka explained variance %.4f vs plain %.4f", nested.ev, plain.ev);
    ck_assert_double_eq(nested.l0, 8.0);
    harness_split_free(&data);
}
END_TEST

SUBSAE_SUITE(matryoshka)
{
    Suite *s = suite_create("matryoshka");
    TCase *tc = harness_case(s, "core", 120);
    tcase_add_test(tc, gradients_against_finite_differences);
    tcase_add_test(tc, same_bits_for_one_and_two_threads);
    tcase_add_test(tc, resume_is_bit_identical);
    tcase_add_test(tc, widths_saved_loaded_and_evaluated);
    tcase_add_test(tc, asi_puts_top_directions_first);
    tcase_add_test(tc, setter_checks);
    tcase_add_test(tc, coefficient_warmup_ramps_the_penalty);
    tcase_add_test(tc, cli_trains_and_evaluates_matryoshka);
    tc = harness_case(s, "alloc", 240);
    tcase_add_test(tc, allocation_failures_are_clean);
    tc = harness_case(s, "real", 120);
    tcase_add_test(tc, matryoshka_batchtopk_on_stories);
    tcase_add_test(tc, matryoshka_topk_on_a_small_file);
    return s;
}
