/* Gated SAEs (Rajamanoharan et al. 2024; SAELens architecture "gated"):
 *  - every parameter's gradient (W_enc, b_gate = b_enc, r_mag, b_mag,
 *    W_dec, b_dec) against central finite differences of a
 *    double-precision reference of the loss: MSE + lambda / n sum
 *    relu(pi) |W_dec row| + the gate path's reconstruction relu(pi) W_dec
 *    + b_dec through a frozen decoder, for an SAE and a transcoder;
 *  - the same bits for 1 and 2 threads; bit-exact resume;
 *  - saving in SAELens' gated layout (b_gate, r_mag, b_mag) and loading it
 *    back, scales folded; encode against a reference of the formula;
 *  - allocation failures of init, step, checkpoint and model files;
 *  - an independent numpy forward of the saved files against `subsae
 *    eval` (tests/gated_numpy_check.py);
 *  - on real attention outputs (stories260K): explained variance >= 0.6
 *    at L0 below 64. */
#include "harness.h"
#include "internal.h"
#include "io.h"
#include "rng.h"
#include "sae.h"
#include "trainer.h"

#include <jansson.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static subsae_trainer *gated_trainer(int64_t features, int64_t batch, int threads, double l1)
{
    subsae_trainer *t =
        harness_trainer(SUBSAE_ACT_GATED, features, 3, SUBSAE_INIT_RANDOM, batch, 5, threads);
    ck_assert_ok(subsae_trainer_set_double(t, SUBSAE_TRAIN_L1_COEF, l1));
    return t;
}

/* ---- the double-precision reference -------------------------------------- */

struct ref {
    int64_t d_in, d_out, m, n;
    bool apply;
    double s_in, s_out, l1;
    double *W_enc, *b_gate, *r_mag, *b_mag, *W_dec, *b_dec;
    double *W_dec_frozen, *b_dec_frozen; /* the gate path's decoder */
    /* the step's fixed structure: open gates, and which have z > 0 */
    const int64_t *row_ptr;
    const int32_t *idx;
    const unsigned char *active;
    const float *x, *t;
};

static double dot(const double *a, const double *b, int64_t n)
{
    double s = 0.0;
    for (int64_t j = 0; j < n; j++)
        s += a[j] * b[j];
    return s;
}

/* The loss; `margin` (may be NULL) gets the smallest |pi| and |magnitude|
 * over the open gates (how far the structure is from changing). */
static double ref_loss(const struct ref *r, double *margin)
{
    double mse = 0.0, penalty = 0.0, aux = 0.0;
    double *xin = malloc((size_t)r->d_in * sizeof *xin);
    double *xhat = malloc((size_t)r->d_out * sizeof *xhat);
    double *via = malloc((size_t)r->d_out * sizeof *via);
    for (int64_t i = 0; i < r->n; i++) {
        for (int64_t j = 0; j < r->d_in; j++)
            xin[j] = (double)r->x[i * r->d_in + j] * r->s_in - (r->apply ? r->b_dec[j] : 0.0);
        for (int64_t j = 0; j < r->d_out; j++) {
            xhat[j] = r->b_dec[j];
            via[j] = r->b_dec_frozen[j];
        }
        for (int64_t q = r->row_ptr[i]; q < r->row_ptr[i + 1]; q++) {
            const int32_t f = r->idx[q];
            const double p = dot(xin, r->W_enc + f * r->d_in, r->d_in);
            const double pi = p + r->b_gate[f], mag = exp(r->r_mag[f]) * p + r->b_mag[f];
            if (margin) {
                *margin = fmin(*margin, fabs(pi));
                *margin = fmin(*margin, fabs(mag));
            }
            const double *w = r->W_dec + f * r->d_out, *wf = r->W_dec_frozen + f * r->d_out;
            for (int64_t j = 0; j < r->d_out; j++) {
                if (r->active[q])
                    xhat[j] += mag * w[j];
                via[j] += pi * wf[j];
            }
            penalty += r->l1 / (double)r->n * pi * sqrt(dot(w, w, r->d_out));
        }
        for (int64_t j = 0; j < r->d_out; j++) {
            const float *src = r->t ? r->t + i * r->d_out : r->x + i * r->d_in;
            const double t = (double)src[j] * r->s_out;
            mse += (xhat[j] - t) * (xhat[j] - t);
            aux += (via[j] - t) * (via[j] - t);
        }
    }
    free(xin);
    free(xhat);
    free(via);
    return mse / (double)r->n + penalty + aux / (double)r->n;
}

static double loss_of(void *ctx)
{
    return ref_loss(ctx, NULL);
}

static double *doubles(const float *f, int64_t n)
{
    double *d = malloc((size_t)n * sizeof *d);
    for (int64_t i = 0; i < n; i++)
        d[i] = f[i];
    return d;
}

/* ---- gradients -------------------------------------------------------------- */

/* Every parameter moved off its initial value so that no term vanishes. */
static void perturb(subsae_sae *s, uint64_t seed)
{
    subsae__rng rng;
    subsae__rng_seed(&rng, seed, 0);
    for (int64_t i = 0; i < s->d_sae * s->d_in; i++)
        s->W_enc[i] += 0.3f * (float)subsae__rng_normal(&rng);
    for (int64_t f = 0; f < s->d_sae; f++) {
        s->b_enc[f] = (float)(0.3 * subsae__rng_normal(&rng) - 0.1);
        s->r_mag[f] = (float)(0.3 * subsae__rng_normal(&rng));
        s->b_mag[f] = (float)(0.3 * subsae__rng_normal(&rng));
    }
    for (int64_t j = 0; j < s->d_out; j++)
        s->b_dec[j] += 0.2f * (float)subsae__rng_normal(&rng);
    for (int64_t i = 0; i < s->d_sae * s->d_out; i++)
        s->W_dec[i] += 0.2f * (float)subsae__rng_normal(&rng);
}

static void gradient_case(bool transcoder, double l1)
{
    const int64_t n = 7, d_in = 6, d_out = transcoder ? 5 : 6, m = 12;
    float *x = harness_normal_rows(1, 64, d_in, 0.5);
    float *y = transcoder ? harness_normal_rows(2, 64, d_out, -0.3) : NULL;
    subsae_buffer *bx = harness_wrap_copy(x, 64, d_in);
    subsae_buffer *by = y ? harness_wrap_copy(y, 64, d_out) : NULL;
    subsae_trainer *t = gated_trainer(m, n, 2, l1);
    ck_assert_ok(subsae_trainer_init(t, bx, by));
    subsae_sae *s = t->sae;
    perturb(s, 11);
    float *g[6] = {malloc((size_t)(m * d_in) * 4), malloc((size_t)m * 4),
                   malloc((size_t)(m * d_out) * 4), malloc((size_t)d_out * 4),
                   malloc((size_t)m * 4), malloc((size_t)m * 4)};
    double loss;
    ck_assert_ok(subsae__trainer_gradients(t, x, d_in, y, d_out, n, g[0], g[1], g[2], g[3], &loss,
                                           NULL));
    subsae__trainer_gated_gradient(t, g[4], g[5]);
    const int64_t *rp;
    const int32_t *idx;
    const float *val;
    subsae__trainer_pairs(t, &rp, &idx, &val);
    unsigned char *active = malloc((size_t)rp[n] + 1);
    int64_t n_active = 0;
    for (int64_t q = 0; q < rp[n]; q++)
        n_active += active[q] = val[q] > 0.0f;
    struct ref r = {.d_in = d_in, .d_out = d_out, .m = m, .n = n,
                    .apply = s->apply_b_dec_to_input, .s_in = (float)s->input_scale,
                    .s_out = (float)s->output_scale, .l1 = l1,
                    .W_enc = doubles(s->W_enc, m * d_in), .b_gate = doubles(s->b_enc, m),
                    .r_mag = doubles(s->r_mag, m), .b_mag = doubles(s->b_mag, m),
                    .W_dec = doubles(s->W_dec, m * d_out), .b_dec = doubles(s->b_dec, d_out),
                    .W_dec_frozen = doubles(s->W_dec, m * d_out),
                    .b_dec_frozen = doubles(s->b_dec, d_out), .row_ptr = rp, .idx = idx,
                    .active = active, .x = x, .t = y};
    /* The pairs are exactly the open gates, some of them with z = 0. */
    int64_t open = 0;
    double *xin = malloc((size_t)d_in * sizeof *xin);
    for (int64_t i = 0; i < n; i++) {
        for (int64_t j = 0; j < d_in; j++)
            xin[j] = (double)x[i * d_in + j] * r.s_in - (r.apply ? r.b_dec[j] : 0.0);
        for (int64_t f = 0; f < m; f++)
            open += dot(xin, r.W_enc + f * d_in, d_in) + r.b_gate[f] > 0.0;
    }
    free(xin);
    ck_assert_int_eq(rp[n], open);
    ck_assert_int_gt(n_active, n);
    ck_assert_int_lt(n_active, open);
    ck_assert_int_lt(open, n * m);
    double margin = INFINITY;
    const double want = ref_loss(&r, &margin);
    ck_assert_double_gt(margin, 1e-5); /* float and double agree on the structure */
    ck_assert_double_eq_tol(loss, want, 1e-5 * want);
    double mse, penalty, aux;
    subsae__trainer_loss_parts(t, &mse, &penalty, &aux);
    ck_assert_double_eq_tol(mse + penalty + aux, loss, 1e-12 * loss);
    ck_assert(l1 > 0 ? penalty > 0 : penalty == 0);
    ck_assert(aux > 0);
    harness_check_gradient(r.W_enc, m * d_in, g[0], loss_of, &r, "W_enc");
    harness_check_gradient(r.b_gate, m, g[1], loss_of, &r, "b_gate");
    harness_check_gradient(r.W_dec, m * d_out, g[2], loss_of, &r, "W_dec");
    harness_check_gradient(r.b_dec, d_out, g[3], loss_of, &r, "b_dec");
    harness_check_gradient(r.r_mag, m, g[4], loss_of, &r, "r_mag");
    harness_check_gradient(r.b_mag, m, g[5], loss_of, &r, "b_mag");
    double *owned[] = {r.W_enc, r.b_gate, r.r_mag, r.b_mag, r.W_dec, r.b_dec, r.W_dec_frozen,
                       r.b_dec_frozen};
    for (size_t i = 0; i < sizeof owned / sizeof owned[0]; i++)
        free(owned[i]);
    for (int i = 0; i < 6; i++)
        free(g[i]);
    free(active);
    subsae_trainer_free(t);
    subsae_buffer_free(bx);
    subsae_buffer_free(by);
    free(x);
    free(y);
}

START_TEST(gradients_against_finite_differences)
{
    gradient_case(false, 0.7);
    gradient_case(true, 0.7);
    gradient_case(false, 0.0);
}
END_TEST

/* ---- thread counts, resume ----------------------------------------------- */

static void expect_same_model(const subsae_sae *a, const subsae_sae *b)
{
    for (int p = SUBSAE_PARAM_W_ENC; p <= SUBSAE_PARAM_B_MAG; p++) {
        const int64_t count = subsae_sae_param_size(a, p);
        ck_assert_int_eq(count, subsae_sae_param_size(b, p));
        float *x = malloc((size_t)count * 4), *y = malloc((size_t)count * 4);
        ck_assert_ok(subsae_sae_get_param(a, p, x, count));
        ck_assert_ok(subsae_sae_get_param(b, p, y, count));
        ck_assert_msg(!memcmp(x, y, (size_t)count * 4), "parameter %d differs", p);
        free(x);
        free(y);
    }
}

/* Training data: offset normal rows, a transcoder's target from them. */
struct data {
    int64_t n, d, d_out;
    float *x, *y;
    subsae_buffer *bx, *by;
};

static void data_open(struct data *u, int64_t n, int64_t d, bool transcoder)
{
    u->n = n;
    u->d = d;
    u->d_out = transcoder ? d - 2 : d;
    u->x = harness_normal_rows(4, n, d, -0.1);
    u->bx = harness_wrap_copy(u->x, n, d);
    u->y = transcoder ? harness_normal_rows(7, n, u->d_out, 0.2) : NULL;
    u->by = transcoder ? harness_wrap_copy(u->y, n, u->d_out) : NULL;
}

static void data_close(struct data *u)
{
    subsae_buffer_free(u->bx);
    subsae_buffer_free(u->by);
    free(u->x);
    free(u->y);
}

static subsae_trainer *fit_trainer(const struct data *u, int threads, bool sparse_adam,
                                   int64_t tokens)
{
    subsae_trainer *t = gated_trainer(48, 64, threads, 0.5);
    ck_assert_ok(subsae_trainer_set_double(t, SUBSAE_TRAIN_LR, 3e-3));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_WARMUP_STEPS, 3));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_SPARSE_ADAM, sparse_adam));
    ck_assert_ok(subsae_trainer_init(t, u->bx, u->by));
    if (tokens > 0)
        ck_assert_ok(subsae_trainer_fit(t, u->bx, u->by, tokens));
    return t;
}

START_TEST(same_bits_for_1_and_2_threads)
{
    for (int transcoder = 0; transcoder < 2; transcoder++) {
        struct data u;
        data_open(&u, 1000, 12, transcoder);
        subsae_trainer *one = fit_trainer(&u, 1, false, 12 * 64);
        subsae_trainer *two = fit_trainer(&u, 2, false, 12 * 64);
        expect_same_model(subsae_trainer_sae(one), subsae_trainer_sae(two));
        double ma[SUBSAE_METRIC_COUNT], mb[SUBSAE_METRIC_COUNT];
        ck_assert_ok(subsae_trainer_metrics(one, ma, SUBSAE_METRIC_COUNT));
        ck_assert_ok(subsae_trainer_metrics(two, mb, SUBSAE_METRIC_COUNT));
        for (int i = 0; i < SUBSAE_METRIC_COUNT; i++)
            ck_assert_msg((isnan(ma[i]) && isnan(mb[i])) || ma[i] == mb[i],
                          "metric %d: %.17g vs %.17g", i, ma[i], mb[i]);
        ck_assert_double_gt(ma[SUBSAE_METRIC_L0], 0.0);
        subsae_trainer_free(one);
        subsae_trainer_free(two);
        data_close(&u);
    }
}
END_TEST

/* Checkpoints carry r_mag, b_mag and their Adam moments: a resumed run
 * continues bit for bit (dense and sparse Adam, SAE and transcoder). */
START_TEST(resume_is_bit_exact)
{
    const int64_t half = 9 * 64;
    for (int variant = 0; variant < 2; variant++) {
        const bool transcoder = variant == 1;
        struct data u;
        data_open(&u, 1000, 12, transcoder);
        subsae_trainer *straight = fit_trainer(&u, 2, transcoder, 2 * half);
        subsae_trainer *first = fit_trainer(&u, 2, transcoder, half);
        char dir[512];
        harness_tmp_path(transcoder ? "ck-gated-tc" : "ck-gated", dir, sizeof dir);
        ck_assert_ok(subsae_trainer_save_checkpoint(first, dir));
        subsae_trainer_free(first);
        subsae_trainer *resumed;
        ck_assert_ok(subsae_trainer_load_checkpoint(dir, &resumed));
        int64_t act;
        ck_assert_ok(subsae_trainer_get_int(resumed, SUBSAE_TRAIN_ACTIVATION, &act));
        ck_assert_int_eq(act, SUBSAE_ACT_GATED);
        ck_assert_ok(subsae_trainer_fit(resumed, u.bx, u.by, half));
        expect_same_model(subsae_trainer_sae(straight), subsae_trainer_sae(resumed));
        ck_assert_mem_eq(straight->m_r_mag, resumed->m_r_mag, 48 * 4);
        ck_assert_mem_eq(straight->v_b_mag, resumed->v_b_mag, 48 * 4);
        double ma[SUBSAE_METRIC_COUNT], mb[SUBSAE_METRIC_COUNT];
        ck_assert_ok(subsae_trainer_metrics(straight, ma, SUBSAE_METRIC_COUNT));
        ck_assert_ok(subsae_trainer_metrics(resumed, mb, SUBSAE_METRIC_COUNT));
        for (int i = 0; i < SUBSAE_METRIC_COUNT; i++)
            ck_assert_msg((isnan(ma[i]) && isnan(mb[i])) || ma[i] == mb[i],
                          "metric %d: %.17g vs %.17g", i, ma[i], mb[i]);
        subsae_trainer_free(straight);
        subsae_trainer_free(resumed);
        data_close(&u);
    }
}
END_TEST

/* ---- the model and its files ----------------------------------------------- */

/* The codes of raw rows by the formula, in double: pre = (x s - b_dec)
 * W_enc^T, gate pre + b_gate > 0, z = relu(exp(r_mag) pre + b_mag). */
static void reference_codes(const subsae_sae *s, const float *x, int64_t n, double *z)
{
    for (int64_t i = 0; i < n; i++)
        for (int64_t f = 0; f < s->d_sae; f++) {
            double p = 0.0;
            for (int64_t j = 0; j < s->d_in; j++)
                p += ((double)x[i * s->d_in + j] * s->input_scale -
                      (s->apply_b_dec_to_input ? s->b_dec[j] : 0.0)) *
                     s->W_enc[f * s->d_in + j];
            const double mag = exp(s->r_mag[f]) * p + s->b_mag[f];
            z[i * s->d_sae + f] = p + s->b_enc[f] > 0.0 && mag > 0.0 ? mag : 0.0;
        }
}

static void expect_codes(const subsae_sae *s, const float *x, int64_t n, const double *want)
{
    const int64_t m = s->d_sae;
    float *z = malloc((size_t)(n * m) * 4);
    ck_assert_ok(subsae_sae_encode(s, x, n, s->d_in, z, m));
    for (int64_t i = 0; i < n * m; i++)
        ck_assert_msg(fabs(z[i] - want[i]) <= 1e-4 * (1.0 + fabs(want[i])),
                      "code %lld: %g, want %g", (long long)i, (double)z[i], want[i]);
    free(z);
}

START_TEST(saved_in_the_saelens_gated_layout)
{
    struct data u;
    data_open(&u, 1000, 12, false);
    subsae_trainer *t = fit_trainer(&u, 2, false, 6 * 64);
    subsae_sae *s = t->sae;
    ck_assert_int_eq(subsae_sae_param_size(s, SUBSAE_PARAM_R_MAG), 48);
    /* Scales that differ move b_dec into b_gate and b_mag on the way out. */
    ck_assert_ok(subsae_sae_set_double(s, SUBSAE_SAE_OUTPUT_SCALE, 1.7));
    const int64_t n = 40;
    double *want = malloc((size_t)(n * 48) * sizeof *want);
    reference_codes(s, u.x, n, want);
    int64_t active = 0;
    for (int64_t i = 0; i < n * 48; i++)
        active += want[i] > 0.0;
    ck_assert_int_gt(active, n);
    expect_codes(s, u.x, n, want);
    char dir[512];
    harness_tmp_path("gated-sae", dir, sizeof dir);
    ck_assert_ok(subsae_sae_save(s, dir));
    json_t *cfg = harness_json_at(dir, "cfg.json");
    ck_assert_str_eq(json_string_value(json_object_get(cfg, "architecture")), "gated");
    json_decref(cfg);
    subsae_sae *back;
    ck_assert_ok(subsae_sae_load(dir, &back));
    int64_t act, apply;
    ck_assert_ok(subsae_sae_get_int(back, SUBSAE_SAE_ACTIVATION, &act));
    ck_assert_ok(subsae_sae_get_int(back, SUBSAE_SAE_APPLY_B_DEC_TO_INPUT, &apply));
    ck_assert_int_eq(act, SUBSAE_ACT_GATED);
    ck_assert_int_eq(apply, 0); /* folded into the biases */
    expect_codes(back, u.x, n, want);
    /* The model's reconstruction, raw space, before and after. */
    float *a = malloc((size_t)(n * 12) * 4), *b = malloc((size_t)(n * 12) * 4);
    float *z = malloc((size_t)(n * 48) * 4);
    ck_assert_ok(subsae_sae_encode(s, u.x, n, 12, z, 48));
    ck_assert_ok(subsae_sae_decode(s, z, n, 48, a, 12));
    ck_assert_ok(subsae_sae_encode(back, u.x, n, 12, z, 48));
    ck_assert_ok(subsae_sae_decode(back, z, n, 48, b, 12));
    for (int64_t i = 0; i < n * 12; i++)
        ck_assert_float_eq_tol(a[i], b[i], 1e-4f * (1.0f + fabsf(a[i])));
    /* A model of another activation has no r_mag; a gated cfg needs b_gate. */
    subsae_sae *relu;
    ck_assert_ok(subsae_sae_create(12, 12, 48, SUBSAE_ACT_RELU, &relu));
    ck_assert_int_eq(subsae_sae_param_size(relu, SUBSAE_PARAM_B_MAG), -1);
    ck_assert_status(subsae_sae_get_param(relu, SUBSAE_PARAM_B_MAG, z, 48), SUBSAE_E_INVALID);
    ck_assert_ok(subsae_sae_save(relu, dir));
    char path[600];
    snprintf(path, sizeof path, "%s/cfg.json", dir);
    FILE *f = fopen(path, "w");
    fputs("{\"architecture\": \"gated\", \"d_in\": 12, \"d_sae\": 48}", f);
    fclose(f);
    subsae_sae *bad = NULL;
    ck_assert_status(subsae_sae_load(dir, &bad), SUBSAE_E_FORMAT);
    ck_assert_ptr_null(bad);
    subsae_sae_free(relu);
    subsae_sae_free(back);
    free(a);
    free(b);
    free(z);
    free(want);
    subsae_trainer_free(t);
    data_close(&u);
}
END_TEST

/* A directory as SAELens writes a gated SAE (its cfg.json members, W_enc
 * [d_in, d_sae], b_gate, r_mag, b_mag): it loads, with SAELens' forward. */
static struct subsae__tensor_view view_of(const char *name, const float *data, int64_t d0,
                                          int64_t d1)
{
    struct subsae__tensor_view v = {.name = name, .dtype = SUBSAE_DTYPE_F32,
                                    .ndim = d1 ? 2 : 1, .shape = {d0, d1}, .data = data,
                                    .bytes = (size_t)(d0 * (d1 ? d1 : 1)) * 4};
    return v;
}

START_TEST(imports_a_saelens_gated_directory)
{
    enum { D = 5, M = 9, N = 11 };
    float *w_enc = harness_normal_rows(31, D, M, 0.0), *w_dec = harness_normal_rows(32, M, D, 0.0);
    float *vec = harness_normal_rows(33, 4, M, 0.0), *x = harness_normal_rows(34, N, D, 0.3);
    const float *b_gate = vec, *r_mag = vec + M, *b_mag = vec + 2 * M, *b_dec = vec + 3 * M;
    char dir[512];
    harness_tmp_path("saelens-gated", dir, sizeof dir);
    ck_assert_ok(subsae__make_dir(dir));
    const struct subsae__tensor_view views[] = {
        view_of("W_enc", w_enc, D, M), view_of("b_gate", b_gate, M, 0),
        view_of("r_mag", r_mag, M, 0), view_of("b_mag", b_mag, M, 0),
        view_of("W_dec", w_dec, M, D), view_of("b_dec", b_dec, D, 0)};
    char path[700];
    snprintf(path, sizeof path, "%s/sae_weights.safetensors", dir);
    ck_assert_ok(subsae__safetensors_write(path, views, 6, NULL, NULL, 0));
    harness_write_text(dir, "cfg.json",
               "{\"architecture\": \"gated\", \"d_in\": 5, \"d_sae\": 9, \"dtype\": "
               "\"float32\", \"device\": \"cpu\", \"apply_b_dec_to_input\": true, "
               "\"normalize_activations\": \"none\", \"reshape_activations\": \"none\", "
               "\"metadata\": {\"model_name\": \"tiny\", \"hook_name\": "
               "\"blocks.0.hook_resid_pre\"}}");
    subsae_sae *sae;
    ck_assert_ok(subsae_sae_load(dir, &sae));
    float z[N * M];
    ck_assert_ok(subsae_sae_encode(sae, x, N, D, z, M));
    int64_t active = 0;
    for (int64_t i = 0; i < N; i++)
        for (int64_t f = 0; f < M; f++) {
            double p = 0.0;
            for (int64_t j = 0; j < D; j++)
                p += ((double)x[i * D + j] - b_dec[j]) * w_enc[j * M + f];
            const double mag = exp(r_mag[f]) * p + b_mag[f];
            const double want = p + b_gate[f] > 0.0 && mag > 0.0 ? mag : 0.0;
            active += want > 0.0;
            ck_assert_double_eq_tol(z[i * M + f], want, 1e-5 * (1.0 + fabs(want)));
        }
    ck_assert_int_gt(active, N);
    const char *meta;
    ck_assert_ok(subsae_sae_get_metadata(sae, &meta));
    ck_assert_ptr_nonnull(strstr(meta, "hook_resid_pre"));
    subsae_sae_free(sae);
    /* b_gate in another architecture, and gated without r_mag, are refused. */
    harness_write_text(dir, "cfg.json", "{\"architecture\": \"standard\", \"d_in\": 5, \"d_sae\": 9}");
    sae = NULL;
    ck_assert_status(subsae_sae_load(dir, &sae), SUBSAE_E_FORMAT);
    harness_write_text(dir, "cfg.json", "{\"architecture\": \"gated\", \"d_in\": 5, \"d_sae\": 9}");
    ck_assert_ok(subsae__safetensors_write(path, views, 3, NULL, NULL, 0));
    ck_assert_status(subsae_sae_load(dir, &sae), SUBSAE_E_FORMAT);
    ck_assert_ptr_null(sae);
    free(w_enc);
    free(w_dec);
    free(vec);
    free(x);
}
END_TEST


/* Options gated models refuse: AuxK (they have their own auxiliary loss). */
START_TEST(gated_refuses_auxk)
{
    struct data u;
    data_open(&u, 200, 8, false);
    subsae_trainer *t = gated_trainer(16, 32, 1, 1.0);
    ck_assert_ok(subsae_trainer_set_double(t, SUBSAE_TRAIN_AUXK_COEF, 1.0 / 32));
    ck_assert_status(subsae_trainer_init(t, u.bx, NULL), SUBSAE_E_INVALID);
    subsae_trainer_free(t);
    ck_assert_str_eq(subsae_activation_name(SUBSAE_ACT_GATED), "gated");
    data_close(&u);
}
END_TEST

/* ---- allocation failure -------------------------------------------------- */

/* Each allocation in turn fails: the call returns SUBSAE_E_NOMEM, frees
 * what it made, and succeeds when nothing fails. */
static void every_allocation_fails(const char *what, int (*call)(void *), void (*undo)(void *),
                                   void *ctx)
{
    const int64_t live = subsae__alloc_live();
    for (int64_t n = 0; n < 100000; n++) {
        subsae_clear_error();
        subsae__alloc_fail_after(n);
        const int rc = call(ctx);
        const int64_t made = subsae__alloc_count();
        subsae__alloc_fail_after(-1);
        if (made <= n) {
            ck_assert_msg(rc == SUBSAE_OK, "%s: %s", what, subsae_last_error());
            undo(ctx);
            ck_assert_int_eq(subsae__alloc_live(), live);
            fprintf(stderr, "gated alloc failure: %-24s %3lld allocations, each failure clean\n",
                    what, (long long)made);
            return;
        }
        ck_assert_msg(rc == SUBSAE_E_NOMEM, "%s: allocation %lld failed, call -> %d: %s", what,
                      (long long)n, rc, subsae_last_error());
        ck_assert(subsae_last_error()[0] != '\0');
        undo(ctx);
        ck_assert_msg(subsae__alloc_live() == live, "%s: allocation %lld: %lld blocks leaked",
                      what, (long long)n, (long long)(subsae__alloc_live() - live));
    }
    ck_abort_msg("%s: never succeeded", what);
}

struct fault_ctx {
    struct data u;
    char dir[512];
    subsae_trainer *t;
    subsae_sae *sae;
};

static int train_two_steps(void *p)
{
    struct fault_ctx *c = p;
    int rc = subsae_trainer_create(&c->t);
    if (!rc) {
        subsae_trainer_set_int(c->t, SUBSAE_TRAIN_ACTIVATION, SUBSAE_ACT_GATED);
        subsae_trainer_set_int(c->t, SUBSAE_TRAIN_FEATURES, 16);
        subsae_trainer_set_int(c->t, SUBSAE_TRAIN_K, 3);
        subsae_trainer_set_int(c->t, SUBSAE_TRAIN_BATCH, 16);
        subsae_trainer_set_int(c->t, SUBSAE_TRAIN_INIT_SAMPLE, 64);
        subsae_trainer_set_int(c->t, SUBSAE_TRAIN_THREADS, 1);
        rc = subsae_trainer_init(c->t, c->u.bx, NULL);
    }
    for (int i = 0; !rc && i < 2; i++)
        rc = subsae_trainer_step(c->t, c->u.x + i * 16 * c->u.d, c->u.d, NULL, 0, 16);
    return rc;
}

static void free_trainer(void *p)
{
    struct fault_ctx *c = p;
    subsae_trainer_free(c->t);
    c->t = NULL;
}

static int save_checkpoint(void *p)
{
    struct fault_ctx *c = p;
    return subsae_trainer_save_checkpoint(c->t, c->dir);
}

static int load_checkpoint(void *p)
{
    struct fault_ctx *c = p;
    subsae_trainer *t = NULL;
    int rc = subsae_trainer_load_checkpoint(c->dir, &t);
    if (!rc)
        rc = subsae_trainer_step(t, c->u.x, c->u.d, NULL, 0, 16);
    subsae_trainer_free(t);
    return rc;
}

static int save_model(void *p)
{
    struct fault_ctx *c = p;
    return subsae_sae_save(subsae_trainer_sae(c->t), c->dir);
}

static int load_model(void *p)
{
    struct fault_ctx *c = p;
    int rc = subsae_sae_load(c->dir, &c->sae);
    if (!rc) {
        double m[SUBSAE_METRIC_COUNT];
        rc = subsae_sae_evaluate(c->sae, c->u.bx, NULL, m, SUBSAE_METRIC_COUNT);
    }
    return rc;
}

static void free_model(void *p)
{
    struct fault_ctx *c = p;
    subsae_sae_free(c->sae);
    c->sae = NULL;
}

static void nothing(void *p)
{
    (void)p;
}

START_TEST(allocation_failures_are_clean)
{
    struct fault_ctx c = {0};
    data_open(&c.u, 64, 6, false);
    every_allocation_fails("init and two steps", train_two_steps, free_trainer, &c);
    ck_assert_ok(train_two_steps(&c));
    harness_tmp_path("gated-fault-ck", c.dir, sizeof c.dir);
    every_allocation_fails("checkpoint save", save_checkpoint, nothing, &c);
    every_allocation_fails("checkpoint load, step", load_checkpoint, nothing, &c);
    harness_tmp_path("gated-fault-sae", c.dir, sizeof c.dir);
    every_allocation_fails("model save", save_model, nothing, &c);
    every_allocation_fails("model load, evaluate", load_model, free_model, &c);
    free_trainer(&c);
    data_close(&c.u);
}
END_TEST

/* ---- against numpy, and on real data --------------------------------------- */

/* `subsae train --activation gated` on a file, then the numpy forward of
 * SAELens' GatedSAE on the saved files against `subsae eval`. */
START_TEST(numpy_forward_reproduces_eval)
{
    const char *py = getenv("SUBSAE_PYTHON");
    if (!py || !*py) {
        harness_skip("numpy_forward_reproduces_eval", "no python (SUBSAE_PYTHON)");
        return;
    }
    struct data u;
    data_open(&u, 4096, 16, false);
    char data[600], dir[600], args[2048], command[4096];
    harness_tmp_path("gated-data.npy", data, sizeof data);
    harness_tmp_path("gated-run", dir, sizeof dir);
    ck_assert_ok(subsae_buffer_save_npy(u.bx, data, SUBSAE_DTYPE_F32));
    snprintf(args, sizeof args,
             "train '%s' --features 128 --activation gated --l1 2 --epochs 2 --batch 256 "
             "--lr 3e-3 --out '%s' --json",
             data, dir);
    ck_assert_int_eq(harness_cli(args, "train.json"), 0);
    snprintf(command, sizeof command, "'%s' '%s/tests/gated_numpy_check.py' '%s/bin/subsae' '%s' "
             "'%s'", py, harness_source_dir(), harness_build_dir(), dir, data);
    const int rc = harness_run(command);
    data_close(&u);
    if (rc == 77) {
        harness_skip("numpy_forward_reproduces_eval", "no numpy");
        return;
    }
    ck_assert_msg(rc == 0, "gated_numpy_check.py failed (%d)", rc);
}
END_TEST

/* The recipe of the README's methods table: d_sae 4096, two epochs of the
 * first 7/8 of L2_attn_out_131k.npy, batch 1024, lr 1e-3, l1 8; evaluated
 * on the last 1/8. */
START_TEST(real_attention_outputs)
{
    struct harness_split data;
    if (!harness_real_split("real_attention_outputs", "L2_attn_out_131k.npy", 0, &data))
        return;
    subsae_buffer *train = data.train, *eval = data.eval;
    const char *path = data.path;
    const int64_t n_train = data.n_train;
    subsae_trainer *t;
    ck_assert_ok(subsae_trainer_create(&t));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_ACTIVATION, SUBSAE_ACT_GATED));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_FEATURES, 4096));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_BATCH, 1024));
    ck_assert_ok(subsae_trainer_set_double(t, SUBSAE_TRAIN_LR, 1e-3));
    ck_assert_ok(subsae_trainer_set_double(t, SUBSAE_TRAIN_L1_COEF, 8.0));
    const double started = omp_get_wtime();
    ck_assert_ok(subsae_trainer_init(t, train, NULL));
    ck_assert_ok(subsae_trainer_fit(t, train, NULL, 2 * n_train));
    const double seconds = omp_get_wtime() - started;
    double e[SUBSAE_METRIC_COUNT], m[SUBSAE_METRIC_COUNT];
    ck_assert_ok(subsae_trainer_metrics(t, m, SUBSAE_METRIC_COUNT));
    ck_assert_ok(subsae_sae_evaluate(subsae_trainer_sae(t), eval, NULL, e, SUBSAE_METRIC_COUNT));
    fprintf(stderr,
            "gated on %s (d_sae 4096, 2 epochs of %lld rows, batch 1024, lr 1e-3, l1 8): eval "
            "L0 %.1f, explained variance %.3f, never fired %.1f %%, train dead %.1f %%, %.1f s\n",
            path, (long long)n_train, e[SUBSAE_METRIC_L0], e[SUBSAE_METRIC_EXPLAINED_VARIANCE],
            100 * e[SUBSAE_METRIC_ZERO_FREQUENCY_FRACTION], 100 * m[SUBSAE_METRIC_DEAD_FRACTION],
            seconds);
    ck_assert_double_lt(e[SUBSAE_METRIC_L0], 64.0);
    ck_assert_double_gt(e[SUBSAE_METRIC_L0], 1.0);
    ck_assert_double_ge(e[SUBSAE_METRIC_EXPLAINED_VARIANCE], 0.6);
    subsae_trainer_free(t);
    harness_split_free(&data);
}
END_TEST

SUBSAE_SUITE(gated)
{
    Suite *s = suite_create("gated");
    TCase *tc = harness_case(s, "gated", 60);
    tcase_add_test(tc, gradients_against_finite_differences);
    tcase_add_test(tc, same_bits_for_1_and_2_threads);
    tcase_add_test(tc, resume_is_bit_exact);
    tcase_add_test(tc, saved_in_the_saelens_gated_layout);
    tcase_add_test(tc, imports_a_saelens_gated_directory);
    tcase_add_test(tc, gated_refuses_auxk);
    tcase_add_test(tc, allocation_failures_are_clean);
    tcase_add_test(tc, numpy_forward_reproduces_eval);
    TCase *real = harness_case(s, "gated_real", 120);
    tcase_add_test(real, real_attention_outputs);
    return s;
}
