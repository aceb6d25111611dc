/* Skip transcoders (Paulo, Shabalin & Belrose 2025; SUBSAE_TRAIN_SKIP):
 *  - W_skip starts at the least-squares map of the init sample;
 *  - every gradient, W_skip's included, against central finite
 *    differences of the loss in double with the step's active set;
 *  - the same bits for 1 and 2 threads, and a resumed run the same bits
 *    as an uninterrupted one;
 *  - the saved directory holds W_skip [d_out, d_in] in raw spaces (the
 *    scales folded), loads back with the same evaluation, and
 *    decode + subsae_sae_add_skip is the evaluated reconstruction; a ReLU
 *    skip transcoder is SAELens' skip_transcoder;
 *  - the option is refused without a target; every allocation of the
 *    skip path's calls fails cleanly;
 *  - on the shared real data (L2 mlp_in -> mlp_out), the skip path raises
 *    the held-out explained variance by at least 0.02 over the plain
 *    transcoder of the same recipe, and subsae-llama splice with a skip
 *    transcoder agrees with an independent numpy forward. */
#include "harness.h"
#include "internal.h"
#include "kernels.h"
#include "rng.h"
#include "sae.h"
#include "trainer.h"

#include <jansson.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static subsae_trainer *skip_trainer(int64_t features, int64_t k, int64_t batch, int threads,
                                    int activation)
{
    subsae_trainer *t =
        harness_trainer(activation, features, k, SUBSAE_INIT_RANDOM, batch, 7, threads);
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_SKIP, 1));
    return t;
}

/* ---- gradients -------------------------------------------------------- */

struct skip_params {
    int64_t d_in, d_out, m, k, n;
    double s_in, s_out;
    double *W_enc, *b_enc, *W_dec, *b_dec, *W_skip;
    const float *x, *y;
    const int32_t *idx;
    double min_pre; /* the smallest |pre| of an active pair (a kink within reach) */
};

/* The step's loss in double with a fixed active set: the mean over rows
 * of |x_hat - y s_out|^2, x_hat = sum z W_dec + b_dec + (x s_in) W_skip^T. */
static double skip_loss(void *ctx)
{
    struct skip_params *p = ctx;
    double total = 0.0;
    for (int64_t b = 0; b < p->n; b++) {
        const float *x = p->x + b * p->d_in;
        for (int64_t o = 0; o < p->d_out; o++) {
            double v = p->b_dec[o];
            for (int64_t j = 0; j < p->d_in; j++)
                v += p->W_skip[o * p->d_in + j] * (double)x[j] * p->s_in;
            for (int64_t s = 0; s < p->k; s++) {
                int32_t f = p->idx[b * p->k + s];
                if (f < 0)
                    continue;
                double pre = p->b_enc[f];
                for (int64_t j = 0; j < p->d_in; j++)
                    pre += (double)x[j] * p->s_in * p->W_enc[f * p->d_in + j];
                v += (pre > 0 ? pre : 0) * p->W_dec[f * p->d_out + o];
                p->min_pre = fabs(pre) < p->min_pre ? fabs(pre) : p->min_pre;
            }
            double e = v - (double)p->y[b * p->d_out + o] * p->s_out;
            total += e * e;
        }
    }
    return total / (double)p->n;
}

static double *widen(const float *f, int64_t n)
{
    double *d = malloc((size_t)n * sizeof *d);
    for (int64_t i = 0; i < n; i++)
        d[i] = f[i];
    return d;
}

START_TEST(gradients_match_finite_differences)
{
    const int64_t n = 7, d_in = 6, d_out = 5, m = 12, k = 3;
    float *x = harness_normal_rows(1, 64, d_in, 0.5), *y = harness_normal_rows(2, 64, d_out, -0.3);
    subsae_buffer *bx = harness_wrap_copy(x, 64, d_in), *by = harness_wrap_copy(y, 64, d_out);
    subsae_trainer *t = skip_trainer(m, k, n, 1, SUBSAE_ACT_TOPK);
    ck_assert_ok(subsae_trainer_init(t, bx, by));
    subsae_sae *s = t->sae;
    ck_assert_int_eq(s->skip, 1);
    subsae__rng rng;
    subsae__rng_seed(&rng, 11, 0);
    for (int64_t i = 0; i < m * d_in; i++)
        s->W_enc[i] += 0.3f * (float)subsae__rng_normal(&rng);
    for (int64_t i = 0; i < m; i++)
        s->b_enc[i] = 0.2f * (float)subsae__rng_normal(&rng) + 0.3f;
    for (int64_t i = 0; i < d_out * d_in; i++)
        s->W_skip[i] = 0.3f * (float)subsae__rng_normal(&rng);
    float *g[5];
    const int64_t sizes[5] = {m * d_in, m, m * d_out, d_out, d_out * d_in};
    for (int i = 0; i < 5; i++)
        g[i] = malloc((size_t)sizes[i] * sizeof(float));
    int32_t *idx = malloc((size_t)(n * k) * sizeof *idx);
    double loss;
    ck_assert_ok(subsae__trainer_gradients(t, x, d_in, y, d_out, n, g[0], g[1], g[2], g[3],
                                           &loss, idx));
    memcpy(g[4], t->ws.g_W_skip, (size_t)sizes[4] * sizeof(float));
    struct skip_params p = {.d_in = d_in, .d_out = d_out, .m = m, .k = k, .n = n,
                            .s_in = (float)s->input_scale, .s_out = (float)s->output_scale,
                            .W_enc = widen(s->W_enc, sizes[0]), .b_enc = widen(s->b_enc, m),
                            .W_dec = widen(s->W_dec, sizes[2]), .b_dec = widen(s->b_dec, d_out),
                            .W_skip = widen(s->W_skip, sizes[4]), .x = x, .y = y, .idx = idx};
    p.min_pre = INFINITY;
    ck_assert_double_eq_tol(loss, skip_loss(&p), 1e-5 * loss);
    ck_assert_msg(p.min_pre > 1e-3, "an active pre-activation sits at the ReLU kink (%g)",
                  p.min_pre);
    double *theta[5] = {p.W_enc, p.b_enc, p.W_dec, p.b_dec, p.W_skip};
    const char *names[5] = {"W_enc", "b_enc", "W_dec", "b_dec", "W_skip"};
    for (int i = 0; i < 5; i++)
        harness_check_gradient(theta[i], sizes[i], g[i], skip_loss, &p, names[i]);
    for (int i = 0; i < 5; i++) {
        free(theta[i]);
        free(g[i]);
    }
    free(idx);
    subsae_trainer_free(t);
    subsae_buffer_free(bx);
    subsae_buffer_free(by);
    free(x);
    free(y);
}
END_TEST

/* ---- determinism ------------------------------------------------------ */

enum { ROWS = 2048, D_IN = 48, D_OUT = 40, FEATURES = 96, K = 6, BATCH = 256 };

struct pair_data {
    float *x, *y;
    subsae_buffer *bx, *by;
};

/* A target with a linear part (which the skip path can take) plus noise. */
static void make_pair(struct pair_data *d)
{
    d->x = harness_normal_rows(31, ROWS, D_IN, 0.2);
    d->y = harness_normal_rows(32, ROWS, D_OUT, 0.0);
    for (int64_t i = 0; i < ROWS; i++)
        for (int64_t o = 0; o < D_OUT; o++)
            d->y[i * D_OUT + o] = 0.3f * d->y[i * D_OUT + o] + d->x[i * D_IN + o] -
                                  0.5f * d->x[i * D_IN + (o + 3) % D_IN];
    d->bx = harness_wrap_copy(d->x, ROWS, D_IN);
    d->by = harness_wrap_copy(d->y, ROWS, D_OUT);
}

static void free_pair(struct pair_data *d)
{
    subsae_buffer_free(d->bx);
    subsae_buffer_free(d->by);
    free(d->x);
    free(d->y);
}

static void assert_same_model(const subsae_sae *a, const subsae_sae *b, const char *what)
{
    ck_assert_msg(!memcmp(a->W_skip, b->W_skip, (size_t)(a->d_out * a->d_in) * 4),
                  "%s: W_skip differs", what);
    ck_assert_msg(!memcmp(a->W_dec, b->W_dec, (size_t)(a->d_sae * a->d_out) * 4),
                  "%s: W_dec differs", what);
    ck_assert_msg(!memcmp(a->W_enc, b->W_enc, (size_t)(a->d_sae * a->d_in) * 4),
                  "%s: W_enc differs", what);
    ck_assert_msg(!memcmp(a->b_dec, b->b_dec, (size_t)a->d_out * 4), "%s: b_dec differs", what);
}

/* W_skip starts at the sample's least-squares map: in raw spaces the
 * linear part of make_pair's target, x_o - 0.5 x_(o+3). */
START_TEST(starts_at_the_least_squares_map)
{
    struct pair_data d;
    make_pair(&d);
    subsae_trainer *t = skip_trainer(FEATURES, K, BATCH, 2, SUBSAE_ACT_TOPK);
    ck_assert_ok(subsae_trainer_init(t, d.bx, d.by));
    const subsae_sae *s = t->sae;
    const double ratio = s->input_scale / s->output_scale;
    double worst = 0.0;
    for (int64_t o = 0; o < D_OUT; o++)
        for (int64_t j = 0; j < D_IN; j++) {
            const double want = j == o ? 1.0 : j == (o + 3) % D_IN ? -0.5 : 0.0;
            const double err = fabs(s->W_skip[o * D_IN + j] * ratio - want);
            worst = err > worst ? err : worst;
        }
    ck_assert_msg(worst < 0.05, "W_skip off the least-squares map by %g", worst);
    subsae_trainer_free(t);
    free_pair(&d);
}
END_TEST

START_TEST(same_bits_for_one_and_two_threads)
{
    struct pair_data d;
    make_pair(&d);
    subsae_trainer *t[2];
    for (int run = 0; run < 2; run++) {
        t[run] = skip_trainer(FEATURES, K, BATCH, run + 1, SUBSAE_ACT_TOPK);
        ck_assert_ok(subsae_trainer_init(t[run], d.bx, d.by));
        ck_assert_ok(subsae_trainer_fit(t[run], d.bx, d.by, 2 * ROWS));
    }
    assert_same_model(t[0]->sae, t[1]->sae, "1 vs 2 threads");
    double nonzero = subsae__sumsq(t[0]->sae->W_skip, D_OUT * D_IN);
    ck_assert_double_gt(nonzero, 0.0); /* trained */
    for (int run = 0; run < 2; run++)
        subsae_trainer_free(t[run]);
    free_pair(&d);
}
END_TEST

START_TEST(resume_gives_the_same_bits)
{
    struct pair_data d;
    make_pair(&d);
    subsae_trainer *whole = skip_trainer(FEATURES, K, BATCH, 2, SUBSAE_ACT_TOPK);
    ck_assert_ok(subsae_trainer_init(whole, d.bx, d.by));
    ck_assert_ok(subsae_trainer_fit(whole, d.bx, d.by, 2 * ROWS));
    subsae_trainer *first = skip_trainer(FEATURES, K, BATCH, 2, SUBSAE_ACT_TOPK);
    ck_assert_ok(subsae_trainer_init(first, d.bx, d.by));
    ck_assert_ok(subsae_trainer_fit(first, d.bx, d.by, ROWS + 3 * BATCH));
    char dir[600];
    harness_tmp_path("skip_checkpoint", dir, sizeof dir);
    ck_assert_ok(subsae_trainer_save_checkpoint(first, dir));
    subsae_trainer_free(first);
    subsae_trainer *second;
    ck_assert_ok(subsae_trainer_load_checkpoint(dir, &second));
    int64_t skip;
    ck_assert_ok(subsae_trainer_get_int(second, SUBSAE_TRAIN_SKIP, &skip));
    ck_assert_int_eq(skip, 1);
    ck_assert_ok(subsae_trainer_fit(second, d.bx, d.by, ROWS - 3 * BATCH));
    assert_same_model(whole->sae, second->sae, "resumed");
    ck_assert(!memcmp(whole->m_W_skip, second->m_W_skip, (size_t)(D_OUT * D_IN) * 4));
    ck_assert(!memcmp(whole->v_W_skip, second->v_W_skip, (size_t)(D_OUT * D_IN) * 4));
    subsae_trainer_free(whole);
    subsae_trainer_free(second);
    free_pair(&d);
}
END_TEST

/* ---- the saved model ---------------------------------------------------- */

static void evaluate(const subsae_sae *sae, const struct pair_data *d, double *m)
{
    ck_assert_ok(subsae_sae_evaluate(sae, d->bx, d->by, m, SUBSAE_METRIC_COUNT));
}

/* decode_sparse + add_skip of the first rows against the evaluated MSE. */
static double public_mse(const subsae_sae *sae, const struct pair_data *d, int64_t n)
{
    const int64_t slots = FEATURES;
    int32_t *idx = malloc((size_t)(n * slots) * sizeof *idx);
    float *val = malloc((size_t)(n * slots) * sizeof *val);
    float *out = malloc((size_t)(n * D_OUT) * sizeof *out);
    ck_assert_ok(subsae_sae_encode_sparse(sae, d->x, n, D_IN, slots, idx, val));
    ck_assert_ok(subsae_sae_decode_sparse(sae, idx, val, n, slots, out, D_OUT));
    ck_assert_ok(subsae_sae_add_skip(sae, d->x, n, D_IN, out, D_OUT));
    double sse = 0.0;
    for (int64_t i = 0; i < n * D_OUT; i++)
        sse += ((double)out[i] - d->y[i]) * ((double)out[i] - d->y[i]);
    free(idx);
    free(val);
    free(out);
    return sse / (double)n;
}

static void check_saved(int activation, const char *architecture)
{
    struct pair_data d;
    make_pair(&d);
    subsae_trainer *t = skip_trainer(FEATURES, K, BATCH, 2, activation);
    ck_assert_ok(subsae_trainer_init(t, d.bx, d.by));
    ck_assert_ok(subsae_trainer_fit(t, d.bx, d.by, ROWS));
    const subsae_sae *trained = subsae_trainer_sae(t);
    int64_t flag;
    ck_assert_ok(subsae_sae_get_int(trained, SUBSAE_SAE_SKIP, &flag));
    ck_assert_int_eq(flag, 1);
    ck_assert_status(subsae_sae_set_int((subsae_sae *)trained, SUBSAE_SAE_SKIP, 0),
                     SUBSAE_E_INVALID); /* read-only */
    char dir[600];
    harness_tmp_path(architecture, dir, sizeof dir);
    ck_assert_ok(subsae_sae_save(trained, dir));
    json_t *cfg = harness_json_at(dir, "cfg.json");
    ck_assert_str_eq(json_string_value(json_object_get(cfg, "architecture")), architecture);
    json_decref(cfg);
    subsae_sae *back;
    ck_assert_ok(subsae_sae_load(dir, &back));
    ck_assert_ok(subsae_sae_get_int(back, SUBSAE_SAE_SKIP, &flag));
    ck_assert_int_eq(flag, 1);
    /* Raw spaces in the file: W_skip s_in / s_out. */
    const double ratio = trained->input_scale / trained->output_scale;
    ck_assert(trained->input_scale != 1.0);
    for (int64_t i = 0; i < D_OUT * D_IN; i++)
        ck_assert_float_eq_tol(back->W_skip[i], (float)(trained->W_skip[i] * ratio),
                               1e-6f * (1.0f + fabsf(back->W_skip[i])));
    double before[SUBSAE_METRIC_COUNT], after[SUBSAE_METRIC_COUNT];
    evaluate(trained, &d, before);
    evaluate(back, &d, after);
    ck_assert_double_eq_tol(after[SUBSAE_METRIC_MSE], before[SUBSAE_METRIC_MSE],
                            1e-4 * before[SUBSAE_METRIC_MSE]);
    ck_assert_double_eq_tol(after[SUBSAE_METRIC_L0], before[SUBSAE_METRIC_L0], 0.05);
    /* Without the skip path the same codes explain less. */
    subsae_sae *plain;
    ck_assert_ok(subsae_sae_clone(back, &plain));
    memset(plain->W_skip, 0, (size_t)(D_OUT * D_IN) * 4);
    double without[SUBSAE_METRIC_COUNT];
    evaluate(plain, &d, without);
    ck_assert_double_gt(without[SUBSAE_METRIC_MSE], after[SUBSAE_METRIC_MSE]);
    /* The public decode + add_skip is the evaluated reconstruction. */
    subsae_sae *whole;
    subsae_buffer *hx, *hy;
    ck_assert_ok(subsae_buffer_view(d.bx, 0, 64, &hx));
    ck_assert_ok(subsae_buffer_view(d.by, 0, 64, &hy));
    ck_assert_ok(subsae_sae_clone(back, &whole));
    double head[SUBSAE_METRIC_COUNT];
    ck_assert_ok(subsae_sae_evaluate(whole, hx, hy, head, SUBSAE_METRIC_COUNT));
    ck_assert_double_eq_tol(public_mse(back, &d, 64), head[SUBSAE_METRIC_MSE],
                            1e-4 * head[SUBSAE_METRIC_MSE]);
    subsae_buffer_free(hx);
    subsae_buffer_free(hy);
    subsae_sae_free(whole);
    subsae_sae_free(plain);
    subsae_sae_free(back);
    subsae_trainer_free(t);
    free_pair(&d);
}

START_TEST(saved_and_loaded_in_the_saelens_layout)
{
    check_saved(SUBSAE_ACT_TOPK, "topk");
    check_saved(SUBSAE_ACT_RELU, "skip_transcoder");
}
END_TEST

START_TEST(refused_without_a_target_and_add_skip_checks)
{
    struct pair_data d;
    make_pair(&d);
    subsae_trainer *t = skip_trainer(FEATURES, K, BATCH, 1, SUBSAE_ACT_TOPK);
    ck_assert_status(subsae_trainer_init(t, d.bx, NULL), SUBSAE_E_INVALID);
    ck_assert_msg(strstr(subsae_last_error(), "target"), "%s", subsae_last_error());
    subsae_trainer_free(t);
    subsae_sae *plain;
    ck_assert_ok(subsae_sae_create(D_IN, D_OUT, FEATURES, SUBSAE_ACT_TOPK, &plain));
    float out[D_OUT] = {1.0f};
    ck_assert_ok(subsae_sae_add_skip(plain, d.x, 1, D_IN, out, D_OUT)); /* adds nothing */
    ck_assert(out[0] == 1.0f && out[1] == 0.0f);
    ck_assert_status(subsae_sae_add_skip(plain, d.x, 1, D_IN - 1, out, D_OUT),
                     SUBSAE_E_INVALID);
    ck_assert_status(subsae_sae_add_skip(plain, NULL, 1, D_IN, out, D_OUT), SUBSAE_E_INVALID);
    float bad[D_IN] = {NAN};
    ck_assert_status(subsae_sae_add_skip(plain, bad, 1, D_IN, out, D_OUT), SUBSAE_E_NONFINITE);
    subsae_sae_free(plain);
    free_pair(&d);
}
END_TEST

/* ---- allocation failure ------------------------------------------------- */

/* Each call fails cleanly at every allocation index until it succeeds:
 * SUBSAE_E_NOMEM, nothing leaked, the retry works. */
struct fault_ctx {
    struct pair_data *d;
    subsae_trainer *t;
    subsae_sae *made;
    char dir[600];
};

static void fault_setup(struct fault_ctx *c, bool initialised)
{
    c->t = skip_trainer(FEATURES, K, BATCH, 1, SUBSAE_ACT_TOPK);
    if (initialised)
        ck_assert_ok(subsae_trainer_init(c->t, c->d->bx, c->d->by));
}

static int call_init(struct fault_ctx *c)
{
    return subsae_trainer_init(c->t, c->d->bx, c->d->by);
}

static int call_fit(struct fault_ctx *c)
{
    return subsae_trainer_fit(c->t, c->d->bx, c->d->by, BATCH);
}

static int call_save_load(struct fault_ctx *c)
{
    int rc = subsae_sae_save(subsae_trainer_sae(c->t), c->dir);
    subsae_sae_free(c->made);
    c->made = NULL;
    return rc ? rc : subsae_sae_load(c->dir, &c->made);
}

static int call_clone(struct fault_ctx *c)
{
    subsae_sae_free(c->made);
    c->made = NULL;
    return subsae_sae_clone(subsae_trainer_sae(c->t), &c->made);
}

static int call_checkpoint(struct fault_ctx *c)
{
    int rc = subsae_trainer_save_checkpoint(c->t, c->dir);
    subsae_trainer *back = NULL;
    if (!rc)
        rc = subsae_trainer_load_checkpoint(c->dir, &back);
    subsae_trainer_free(back);
    return rc;
}

static void drive_faults(const char *name, struct pair_data *d, bool initialised,
                         int (*call)(struct fault_ctx *))
{
    const int64_t live = subsae__alloc_live();
    for (int64_t n = 0; n < 100000; n++) {
        struct fault_ctx c = {.d = d};
        harness_tmp_path(name, c.dir, sizeof c.dir);
        fault_setup(&c, initialised);
        subsae__alloc_fail_after(n);
        int rc = call(&c);
        const int64_t made = subsae__alloc_count();
        subsae__alloc_fail_after(-1);
        if (made > n) {
            ck_assert_msg(rc == SUBSAE_E_NOMEM, "%s: allocation %lld failed, call -> %d: %s",
                          name, (long long)n, rc, subsae_last_error());
            rc = call(&c);
        }
        ck_assert_msg(rc == SUBSAE_OK, "%s (%lld): %s", name, (long long)n, subsae_last_error());
        subsae_sae_free(c.made);
        subsae_trainer_free(c.t);
        ck_assert_msg(subsae__alloc_live() == live, "%s: allocation %lld leaked %lld blocks",
                      name, (long long)n, (long long)(subsae__alloc_live() - live));
        if (made <= n) {
            fprintf(stderr, "alloc failure: skip %-12s %4lld allocations, each failure clean\n",
                    name, (long long)made);
            return;
        }
    }
    ck_abort_msg("%s: still allocating", name);
}

START_TEST(allocation_failures_are_clean)
{
    struct pair_data d;
    make_pair(&d);
    drive_faults("init", &d, false, call_init);
    drive_faults("fit", &d, true, call_fit);
    drive_faults("save_load", &d, true, call_save_load);
    drive_faults("clone", &d, true, call_clone);
    drive_faults("checkpoint", &d, true, call_checkpoint);
    free_pair(&d);
}
END_TEST

/* ---- real data ------------------------------------------------------------ */

/* The shared file `name` into buf, or NULL when it is not there. */
static const char *shared(const char *name, char *buf, size_t size)
{
    const char *path = harness_shared_file(name, buf, size);
    return path && access(path, R_OK) == 0 ? path : NULL;
}

struct real_run {
    double ev, l0, seconds;
};

static void train_real(bool skip, const subsae_buffer *xt, const subsae_buffer *yt,
                       const subsae_buffer *xe, const subsae_buffer *ye, int64_t features,
                       struct real_run *out)
{
    const int64_t batch = 1024, epoch = subsae_buffer_rows(xt) / batch * batch;
    subsae_trainer *t;
    ck_assert_ok(subsae_trainer_create(&t));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_FEATURES, features));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_K, 16));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_BATCH, batch));
    ck_assert_ok(subsae_trainer_set_double(t, SUBSAE_TRAIN_LR, 1e-3));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_SKIP, skip));
    const double started = omp_get_wtime();
    ck_assert_ok(subsae_trainer_init(t, xt, yt));
    ck_assert_ok(subsae_trainer_fit(t, xt, yt, 2 * epoch));
    out->seconds = omp_get_wtime() - started;
    double e[SUBSAE_METRIC_COUNT];
    ck_assert_ok(subsae_sae_evaluate(subsae_trainer_sae(t), xe, ye, e, SUBSAE_METRIC_COUNT));
    out->ev = e[SUBSAE_METRIC_EXPLAINED_VARIANCE];
    out->l0 = e[SUBSAE_METRIC_L0];
    subsae_trainer_free(t);
}

START_TEST(skip_beats_the_plain_transcoder_on_real_data)
{
    char in_path[1024], out_path[1024];
    if (!shared("L2_mlp_in_131k.npy", in_path, sizeof in_path) ||
        !shared("L2_mlp_out_131k.npy", out_path, sizeof out_path)) {
        harness_skip("skip_beats_the_plain_transcoder_on_real_data",
                     "no shared data (stories260K L2_mlp_in_131k.npy / L2_mlp_out_131k.npy)");
        return;
    }
    const bool small = harness_sanitized();
    subsae_buffer *xa, *ya, *xt, *yt, *xe, *ye;
    ck_assert_ok(subsae_buffer_open(in_path, NULL, &xa));
    ck_assert_ok(subsae_buffer_open(out_path, NULL, &ya));
    const int64_t rows = small ? 16384 : subsae_buffer_rows(xa), n_train = rows * 7 / 8;
    ck_assert_ok(subsae_buffer_view(xa, 0, n_train, &xt));
    ck_assert_ok(subsae_buffer_view(ya, 0, n_train, &yt));
    ck_assert_ok(subsae_buffer_view(xa, n_train, rows - n_train, &xe));
    ck_assert_ok(subsae_buffer_view(ya, n_train, rows - n_train, &ye));
    const int64_t features = small ? 1024 : 4096;
    struct real_run plain, skip;
    train_real(false, xt, yt, xe, ye, features, &plain);
    train_real(true, xt, yt, xe, ye, features, &skip);
    fprintf(stderr,
            "\nskip transcoder %s -> %s (%lld training rows, %lld held out, d_sae %lld, TopK k "
            "16, 2 epochs, batch 1024, lr 1e-3): held-out explained variance plain %.4f (L0 "
            "%.1f, %.1f s), skip %.4f (L0 %.1f, %.1f s), gain %+.4f\n",
            in_path, out_path, (long long)n_train, (long long)(rows - n_train),
            (long long)features, plain.ev, plain.l0, plain.seconds, skip.ev, skip.l0,
            skip.seconds, skip.ev - plain.ev);
    ck_assert_double_le(skip.l0, 16.0);
    if (!small)
        ck_assert_double_ge(skip.ev, plain.ev + 0.02);
    subsae_buffer_free(xt);
    subsae_buffer_free(yt);
    subsae_buffer_free(xe);
    subsae_buffer_free(ye);
    subsae_buffer_free(xa);
    subsae_buffer_free(ya);
}
END_TEST

/* subsae-llama splice replaces L2's MLP with a skip transcoder (its skip
 * path included) and agrees with the numpy forward of
 * tests/llama_numpy_check.py, which reads W_skip from the saved files. */
START_TEST(splice_matches_numpy)
{
    char model[600], data[600], target[600], sae[600], work[600], cmd[4096];
    const char *py = getenv("SUBSAE_PYTHON");
    if (!shared("stories260K.bin", model, sizeof model) ||
        !shared("L2_mlp_in.npy", data, sizeof data) ||
        !shared("L2_mlp_out.npy", target, sizeof target)) {
        harness_skip("splice_matches_numpy", "no shared data (stories260K.bin, L2_mlp_*.npy)");
        return;
    }
    if (!py || !*py) {
        harness_skip("splice_matches_numpy", "no python (SUBSAE_PYTHON)");
        return;
    }
    harness_tmp_path("splice_sae", sae, sizeof sae);
    harness_tmp_path("splice_numpy", work, sizeof work);
    snprintf(cmd, sizeof cmd,
             "train '%s' --target '%s' --skip --features 512 --k 8 --epochs 1 --batch 1024 "
             "--out '%s' --quiet",
             data, target, sae);
    ck_assert_int_eq(harness_cli(cmd, "splice_train.out"), 0);
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", work);
    ck_assert_int_eq(harness_run(cmd), 0);
    snprintf(cmd, sizeof cmd,
             "'%s' '%s/tests/llama_numpy_check.py' '%s/bin/subsae-llama' '%s' '%s' '%s' "
             "L2_mlp_out",
             py, harness_source_dir(), harness_build_dir(), model, work, sae);
    const int rc = harness_run(cmd);
    if (rc == 77) {
        harness_skip("splice_matches_numpy", "no numpy in SUBSAE_PYTHON");
        return;
    }
    ck_assert_msg(rc == 0, "llama_numpy_check.py failed on the skip transcoder (%d)", rc);
}
END_TEST

SUBSAE_SUITE(skip)
{
    Suite *s = suite_create("skip");
    TCase *tc = harness_case(s, "skip", 300);
    tcase_add_test(tc, gradients_match_finite_differences);
    tcase_add_test(tc, starts_at_the_least_squares_map);
    tcase_add_test(tc, same_bits_for_one_and_two_threads);
    tcase_add_test(tc, resume_gives_the_same_bits);
    tcase_add_test(tc, saved_and_loaded_in_the_saelens_layout);
    tcase_add_test(tc, refused_without_a_target_and_add_skip_checks);
    tcase_add_test(tc, allocation_failures_are_clean);
    TCase *real = harness_case(s, "real_data", 600);
    tcase_add_test(real, skip_beats_the_plain_transcoder_on_real_data);
    tcase_add_test(real, splice_matches_numpy);
    return s;
}
