/* Training the activations beyond TopK and the extra losses: gradients
 * against central finite differences of a double-precision reference
 * (ReLU with the decoder-norm-weighted L1, JumpReLU's encoder and decoder
 * paths, BatchTopK, AuxK), JumpReLU's straight-through threshold gradient
 * (reconstruction and L0 terms) against its formula, the selections
 * against brute force (exactly k n pairs for BatchTopK, the band of
 * JumpReLU, the dead features of AuxK), the same bits for any thread
 * count, bit-identical resume for every activation, options. */
#include "harness.h"
#include "internal.h"
#include "kernels.h"
#include "rng.h"
#include "sae.h"
#include "trainer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static subsae_trainer *new_trainer(int activation, int64_t features, int64_t k, int64_t batch,
                                   int threads)
{
    return harness_trainer(activation, features, k, SUBSAE_INIT_RANDOM, batch, 5, threads);
}

/* ---- the double-precision reference ----------------------------------- */

struct ref {
    int64_t d_in, d_out, m, n;
    bool apply;
    double s_in, s_out;
    double *W_enc, *b_enc, *W_dec, *b_dec;
    /* the fixed structure of the step */
    const int64_t *row_ptr;
    const int32_t *idx;
    const unsigned char *active; /* per pair: z = pre (else 0) */
    double l1;                   /* ReLU: lambda of the decoder-norm-weighted L1 */
    int64_t ka;                  /* AuxK slots per row (0: off) */
    const int32_t *aux_idx;
    double aux_weight;           /* coefficient x scale */
    const double *e_fixed;       /* n x d_out residual t - x_hat, held fixed */
};

static double pre_of(const struct ref *r, const double *xin, int64_t f)
{
    double acc = r->b_enc[f];
    for (int64_t j = 0; j < r->d_in; j++)
        acc += xin[j] * r->W_enc[f * r->d_in + j];
    return acc;
}

static double norm_of(const struct ref *r, int64_t f)
{
    double nn = 0.0;
    for (int64_t j = 0; j < r->d_out; j++)
        nn += r->W_dec[f * r->d_out + j] * r->W_dec[f * r->d_out + j];
    return sqrt(nn);
}

/* Loss of the step with its structure fixed; `xhat` (may be NULL) gets
 * the reconstructions (n x d_out), `min_pre` the smallest |pre| of an
 * active pair. */
static double ref_loss(const struct ref *r, const float *x, const float *tgt, double *xhat_out,
                       double *min_pre)
{
    double mse = 0.0, penalty = 0.0, aux = 0.0;
    double *xin = malloc((size_t)r->d_in * sizeof *xin);
    double *xhat = malloc((size_t)r->d_out * sizeof *xhat);
    double *ehat = malloc((size_t)r->d_out * sizeof *ehat);
    for (int64_t i = 0; i < r->n; i++) {
        for (int64_t j = 0; j < r->d_in; j++)
            xin[j] = (double)x[i * r->d_in + j] * r->s_in - (r->apply ? r->b_dec[j] : 0.0);
        for (int64_t j = 0; j < r->d_out; j++)
            xhat[j] = r->b_dec[j];
        for (int64_t q = r->row_ptr[i]; q < r->row_ptr[i + 1]; q++) {
            int32_t f = r->idx[q];
            if (f < 0 || !r->active[q])
                continue;
            double z = pre_of(r, xin, f);
            if (min_pre && fabs(z) < *min_pre)
                *min_pre = fabs(z);
            for (int64_t j = 0; j < r->d_out; j++)
                xhat[j] += z * r->W_dec[f * r->d_out + j];
            penalty += r->l1 / (double)r->n * z * norm_of(r, f);
        }
        for (int64_t j = 0; j < r->d_out; j++) {
            double t = (double)(tgt ? tgt[i * r->d_out + j] : x[i * r->d_in + j]) * r->s_out;
            mse += (xhat[j] - t) * (xhat[j] - t);
            if (xhat_out)
                xhat_out[i * r->d_out + j] = xhat[j];
        }
        if (r->ka > 0) {
            for (int64_t j = 0; j < r->d_out; j++)
                ehat[j] = 0.0;
            for (int64_t s = 0; s < r->ka; s++) {
                int32_t f = r->aux_idx[i * r->ka + s];
                if (f < 0)
                    continue;
                double z = pre_of(r, xin, f);
                for (int64_t j = 0; j < r->d_out; j++)
                    ehat[j] += z * r->W_dec[f * r->d_out + j];
            }
            for (int64_t j = 0; j < r->d_out; j++) {
                double e = ehat[j] - r->e_fixed[i * r->d_out + j];
                aux += e * e;
            }
        }
    }
    free(xin);
    free(xhat);
    free(ehat);
    return mse / (double)r->n + penalty + r->aux_weight * aux / (double)r->n;
}

static double *to_double(const float *f, int64_t n)
{
    double *d = malloc((size_t)n * sizeof *d);
    for (int64_t i = 0; i < n; i++)
        d[i] = f[i];
    return d;
}

struct ref_point {
    struct ref *r;
    const float *x, *tgt;
};

static double ref_point_loss(void *ctx)
{
    const struct ref_point *c = ctx;
    return ref_loss(c->r, c->x, c->tgt, NULL, NULL);
}

/* A trainer on random data with every parameter moved off its initial
 * value (b_enc around `bias`), and its gradients of one step on n rows. */
struct setup {
    int64_t n, d_in, d_out, m;
    float *x, *y;
    subsae_buffer *bx, *by;
    subsae_trainer *t;
    float *g[4];
    double loss;
};

static void setup_begin(struct setup *u, subsae_trainer *t, int64_t n, int64_t d_in,
                        int64_t d_out, double bias, uint64_t seed)
{
    memset(u, 0, sizeof *u);
    u->n = n;
    u->d_in = d_in;
    u->d_out = d_out;
    u->t = t;
    u->x = harness_normal_rows(seed, 64, d_in, 0.5);
    u->bx = harness_wrap_copy(u->x, 64, d_in);
    if (d_out != d_in) {
        u->y = harness_normal_rows(seed + 1, 64, d_out, -0.3);
        u->by = harness_wrap_copy(u->y, 64, d_out);
    }
    ck_assert_ok(subsae_trainer_init(t, u->bx, u->by));
    subsae_sae *s = t->sae;
    u->m = s->d_sae;
    subsae__rng rng;
    subsae__rng_seed(&rng, seed + 11, 0);
    for (int64_t i = 0; i < u->m * d_in; i++)
        s->W_enc[i] += 0.3f * (float)subsae__rng_normal(&rng);
    for (int64_t i = 0; i < u->m; i++)
        s->b_enc[i] = (float)(0.2 * subsae__rng_normal(&rng) + bias);
    for (int64_t i = 0; i < d_out; i++)
        s->b_dec[i] += 0.2f * (float)subsae__rng_normal(&rng);
    for (int64_t i = 0; i < u->m * d_out; i++)
        s->W_dec[i] += 0.2f * (float)subsae__rng_normal(&rng);
}

static void setup_gradients(struct setup *u)
{
    const int64_t m = u->m;
    u->g[0] = malloc((size_t)(m * u->d_in) * 4);
    u->g[1] = malloc((size_t)m * 4);
    u->g[2] = malloc((size_t)(m * u->d_out) * 4);
    u->g[3] = malloc((size_t)u->d_out * 4);
    ck_assert_ok(subsae__trainer_gradients(u->t, u->x, u->d_in, u->y, u->d_out, u->n, u->g[0],
                                           u->g[1], u->g[2], u->g[3], &u->loss, NULL));
}

static void setup_end(struct setup *u)
{
    for (int i = 0; i < 4; i++)
        free(u->g[i]);
    subsae_trainer_free(u->t);
    subsae_buffer_free(u->bx);
    subsae_buffer_free(u->by);
    free(u->x);
    free(u->y);
}

static struct ref ref_of(const struct setup *u)
{
    const subsae_sae *s = u->t->sae;
    struct ref r = {.d_in = u->d_in, .d_out = u->d_out, .m = u->m, .n = u->n,
                    .apply = s->apply_b_dec_to_input, .s_in = (float)s->input_scale,
                    .s_out = (float)s->output_scale,
                    .W_enc = to_double(s->W_enc, u->m * u->d_in),
                    .b_enc = to_double(s->b_enc, u->m),
                    .W_dec = to_double(s->W_dec, u->m * u->d_out),
                    .b_dec = to_double(s->b_dec, u->d_out)};
    return r;
}

static void ref_free(struct ref *r)
{
    free(r->W_enc);
    free(r->b_enc);
    free(r->W_dec);
    free(r->b_dec);
}

/* Pairs of the last step and their active flags (value > 0). */
static unsigned char *active_flags(const subsae_trainer *t, int64_t n, const int64_t **rp,
                                   const int32_t **idx, int64_t *n_active)
{
    const float *val;
    subsae__trainer_pairs(t, rp, idx, &val);
    int64_t total = (*rp)[n];
    unsigned char *a = malloc((size_t)total + 1);
    *n_active = 0;
    for (int64_t q = 0; q < total; q++) {
        a[q] = (*idx)[q] >= 0 && val[q] > 0.0f;
        *n_active += a[q];
    }
    return a;
}

static void check_all_params(struct ref *r, const struct setup *u)
{
    struct ref_point c = {r, u->x, u->y};
    harness_check_gradient(r->W_enc, u->m * u->d_in, u->g[0], ref_point_loss, &c, "W_enc");
    harness_check_gradient(r->b_enc, u->m, u->g[1], ref_point_loss, &c, "b_enc");
    harness_check_gradient(r->W_dec, u->m * u->d_out, u->g[2], ref_point_loss, &c, "W_dec");
    harness_check_gradient(r->b_dec, u->d_out, u->g[3], ref_point_loss, &c, "b_dec");
}

/* ---- ReLU + L1 ------------------------------------------------------- */

static void relu_case(bool transcoder, double l1)
{
    struct setup u;
    subsae_trainer *t = new_trainer(SUBSAE_ACT_RELU, 12, 3, 7, 2);
    ck_assert_ok(subsae_trainer_set_double(t, SUBSAE_TRAIN_L1_COEF, l1));
    setup_begin(&u, t, 7, 6, transcoder ? 5 : 6, -0.2, 1);
    setup_gradients(&u);
    struct ref r = ref_of(&u);
    int64_t n_active;
    r.active = active_flags(t, u.n, &r.row_ptr, &r.idx, &n_active);
    r.l1 = l1;
    /* The pairs are exactly the positive pre-activations. */
    double *xin = malloc((size_t)u.d_in * sizeof *xin);
    int64_t positive = 0;
    double closest = INFINITY;
    for (int64_t i = 0; i < u.n; i++) {
        for (int64_t j = 0; j < u.d_in; j++)
            xin[j] = (double)u.x[i * u.d_in + j] * r.s_in - (r.apply ? r.b_dec[j] : 0.0);
        for (int64_t f = 0; f < u.m; f++) {
            double v = pre_of(&r, xin, f);
            positive += v > 0.0;
            closest = fabs(v) < closest ? fabs(v) : closest;
        }
    }
    ck_assert_double_gt(closest, 1e-5); /* float and double agree on the signs */
    free(xin);
    ck_assert_int_eq(n_active, positive);
    ck_assert_int_eq(r.row_ptr[u.n], positive);
    ck_assert_int_gt(n_active, u.n);
    ck_assert_int_lt(n_active, u.n * u.m); /* some features are off */
    double want = ref_loss(&r, u.x, u.y, NULL, NULL);
    ck_assert_double_eq_tol(u.loss, want, 1e-5 * want);
    double mse, penalty, aux;
    subsae__trainer_loss_parts(t, &mse, &penalty, &aux);
    ck_assert_double_eq_tol(mse + penalty + aux, u.loss, 1e-12 * u.loss);
    ck_assert(l1 > 0 ? penalty > 0 : penalty == 0);
    ck_assert(aux == 0);
    check_all_params(&r, &u);
    free((void *)r.active);
    ref_free(&r);
    setup_end(&u);
}

START_TEST(gradients_relu_l1)
{
    relu_case(false, 0.7);
    relu_case(true, 0.7);
    relu_case(false, 0.0);
}
END_TEST

/* ---- JumpReLU -------------------------------------------------------- */

static void jumprelu_case(bool transcoder, double l0, double bandwidth)
{
    struct setup u;
    subsae_trainer *t = new_trainer(SUBSAE_ACT_JUMPRELU, 12, 3, 9, 2);
    ck_assert_ok(subsae_trainer_set_double(t, SUBSAE_TRAIN_L0_COEF, l0));
    ck_assert_ok(subsae_trainer_set_double(t, SUBSAE_TRAIN_JUMPRELU_BANDWIDTH, bandwidth));
    setup_begin(&u, t, 9, 6, transcoder ? 5 : 6, 0.1, 2);
    subsae_sae *s = t->sae;
    /* Thresholds spread around the pre-activations. */
    for (int64_t f = 0; f < u.m; f++) {
        t->log_threshold[f] = logf(0.25f + 0.05f * (float)(f % 5));
        s->threshold[f] = expf(t->log_threshold[f]);
    }
    setup_gradients(&u);
    float *gthr = malloc((size_t)u.m * sizeof *gthr);
    subsae__trainer_threshold_gradient(t, gthr);
    struct ref r = ref_of(&u);
    int64_t n_active;
    r.active = active_flags(t, u.n, &r.row_ptr, &r.idx, &n_active);
    /* Pairs: pre > t - e/2; active exactly when pre > t. */
    double *xin = malloc((size_t)u.d_in * sizeof *xin);
    double *xhat = malloc((size_t)(u.n * u.d_out) * sizeof *xhat);
    ref_loss(&r, u.x, u.y, xhat, NULL);
    double *want_thr = calloc((size_t)u.m, sizeof *want_thr);
    int64_t kept = 0, active = 0, band = 0;
    for (int64_t i = 0; i < u.n; i++) {
        for (int64_t j = 0; j < u.d_in; j++)
            xin[j] = (double)u.x[i * u.d_in + j] * r.s_in - (r.apply ? r.b_dec[j] : 0.0);
        for (int64_t f = 0; f < u.m; f++) {
            const double th = s->threshold[f], pre = pre_of(&r, xin, f);
            ck_assert_msg(fabs(pre - th) > 1e-4 && fabs(fabs(pre - th) - bandwidth / 2) > 1e-4,
                          "pre-activation %g too close to a threshold edge (%g)", pre, th);
            kept += pre > th - bandwidth / 2;
            active += pre > th;
            if (fabs(pre - th) < bandwidth / 2) {
                /* The straight-through estimate of SAELens / Rajamanoharan
                 * et al.: d/dt of the JumpReLU term and of the L0 term. */
                double dp = 0.0;
                for (int64_t j = 0; j < u.d_out; j++) {
                    double tj = (double)(u.y ? u.y[i * u.d_out + j] : u.x[i * u.d_in + j]) *
                                r.s_out;
                    dp += 2.0 * (xhat[i * u.d_out + j] - tj) / (double)u.n *
                          r.W_dec[f * u.d_out + j];
                }
                want_thr[f] += -(th / bandwidth) * dp - l0 / ((double)u.n * bandwidth);
                band++;
            }
        }
    }
    ck_assert_int_eq(r.row_ptr[u.n], kept);
    ck_assert_int_eq(n_active, active);
    ck_assert_int_gt(band, 2);
    ck_assert_int_gt(active, u.n);
    double max_thr = 0.0;
    for (int64_t f = 0; f < u.m; f++) {
        double want = want_thr[f] * s->threshold[f]; /* d / d log t */
        max_thr = fabs(want) > max_thr ? fabs(want) : max_thr;
        ck_assert_msg(fabs(gthr[f] - want) <= 1e-4 * (fabs(want) + 1e-3),
                      "log-threshold %lld: %g, formula %g", (long long)f, (double)gthr[f], want);
    }
    ck_assert_double_gt(max_thr, 0.0);
    double mse, penalty, aux;
    subsae__trainer_loss_parts(t, &mse, &penalty, &aux);
    ck_assert_double_eq_tol(penalty, l0 * (double)active / (double)u.n, 1e-12);
    ck_assert_double_eq_tol(mse, ref_loss(&r, u.x, u.y, NULL, NULL), 1e-5 * mse);
    /* The other parameters: the reconstruction through the active pairs
     * (the L0 term gives them nothing). */
    check_all_params(&r, &u);
    free(xin);
    free(xhat);
    free(want_thr);
    free(gthr);
    free((void *)r.active);
    ref_free(&r);
    setup_end(&u);
}

START_TEST(gradients_jumprelu)
{
    jumprelu_case(false, 0.5, 0.2);
    jumprelu_case(true, 0.5, 0.3);
    jumprelu_case(false, 0.0, 0.25);
}
END_TEST

/* ---- BatchTopK --------------------------------------------------------- */

START_TEST(gradients_batchtopk)
{
    for (int tc = 0; tc < 2; tc++) {
        struct setup u;
        const int64_t n = 8, k = 3;
        subsae_trainer *t = new_trainer(SUBSAE_ACT_BATCHTOPK, 16, k, n, 2);
        setup_begin(&u, t, n, 6, tc ? 4 : 6, 0.1, 3);
        setup_gradients(&u);
        struct ref r = ref_of(&u);
        int64_t n_active;
        r.active = active_flags(t, n, &r.row_ptr, &r.idx, &n_active);
        ck_assert_int_eq(n_active, k * n); /* exactly k n pairs over the batch */
        ck_assert_int_eq(r.row_ptr[n], k * n);
        /* They are the k n largest pre-activations; rows differ in count. */
        double *xin = malloc((size_t)u.d_in * sizeof *xin);
        double *pre = malloc((size_t)(n * u.m) * sizeof *pre);
        unsigned char *chosen = calloc((size_t)(n * u.m), 1);
        for (int64_t i = 0; i < n; i++) {
            for (int64_t j = 0; j < u.d_in; j++)
                xin[j] = (double)u.x[i * u.d_in + j] * r.s_in - (r.apply ? r.b_dec[j] : 0.0);
            for (int64_t f = 0; f < u.m; f++)
                pre[i * u.m + f] = pre_of(&r, xin, f);
            for (int64_t q = r.row_ptr[i]; q < r.row_ptr[i + 1]; q++)
                chosen[i * u.m + r.idx[q]] = 1;
        }
        double min_in = INFINITY, max_out = -INFINITY;
        bool uneven = false;
        for (int64_t i = 0; i < n; i++) {
            uneven |= r.row_ptr[i + 1] - r.row_ptr[i] != k;
            for (int64_t f = 0; f < u.m; f++) {
                double v = pre[i * u.m + f];
                if (chosen[i * u.m + f])
                    min_in = v < min_in ? v : min_in;
                else
                    max_out = v > max_out ? v : max_out;
            }
        }
        ck_assert_double_gt(min_in, max_out);
        ck_assert_double_gt(min_in, 1e-3);
        ck_assert(uneven);
        /* The step's cut (the smallest selected value) feeds the threshold. */
        ck_assert_double_eq_tol(t->ws.step_theta, min_in, 1e-5);
        check_all_params(&r, &u);
        free(xin);
        free(pre);
        free(chosen);
        free((void *)r.active);
        ref_free(&r);
        setup_end(&u);
    }
}
END_TEST

/* ---- AuxK -------------------------------------------------------------- */

static void auxk_case(int activation, bool transcoder)
{
    struct setup u;
    const int64_t n = 7, k = 2;
    subsae_trainer *t = new_trainer(activation, 14, k, n, 3);
    ck_assert_ok(subsae_trainer_set_double(t, SUBSAE_TRAIN_AUXK_COEF, 0.5));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_AUXK_K, 4));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_DEAD_WINDOW, 50));
    setup_begin(&u, t, n, 6, transcoder ? 5 : 6, 0.1, 4);
    /* 100 tokens seen: features f % 3 == 0 fired at token 90 (alive),
     * the others at 20 or never (dead). */
    t->tokens = 100;
    for (int64_t f = 0; f < u.m; f++)
        t->last_fired[f] = f % 3 == 0 ? 90 : f % 3 == 1 ? 20 : 0;
    setup_gradients(&u);
    const struct subsae__workspace *ws = &t->ws;
    int64_t n_dead = 0;
    for (int64_t f = 0; f < u.m; f++)
        n_dead += f % 3 != 0;
    ck_assert_int_eq(ws->n_dead, n_dead);
    ck_assert_int_eq(ws->aux_k, 4);
    ck_assert_double_eq(ws->aux_scale, 1.0); /* 9 dead >= k_aux */
    struct ref r = ref_of(&u);
    int64_t n_active;
    r.active = active_flags(t, n, &r.row_ptr, &r.idx, &n_active);
    double *xhat = malloc((size_t)(n * u.d_out) * sizeof *xhat);
    ref_loss(&r, u.x, u.y, xhat, NULL); /* without AuxK: the residual */
    double *e = malloc((size_t)(n * u.d_out) * sizeof *e);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < u.d_out; j++)
            e[i * u.d_out + j] =
                (double)(u.y ? u.y[i * u.d_out + j] : u.x[i * u.d_in + j]) * r.s_out -
                xhat[i * u.d_out + j];
    /* The AuxK slots: the top 4 positive pre-activations among the dead. */
    double *xin = malloc((size_t)u.d_in * sizeof *xin);
    int64_t used = 0;
    for (int64_t i = 0; i < n; i++) {
        for (int64_t j = 0; j < u.d_in; j++)
            xin[j] = (double)u.x[i * u.d_in + j] * r.s_in - (r.apply ? r.b_dec[j] : 0.0);
        double lowest = INFINITY;
        for (int64_t s = 0; s < 4; s++) {
            int32_t f = ws->aux_idx[i * 4 + s];
            if (f < 0)
                continue;
            ck_assert_int_ne(f % 3, 0);
            double v = pre_of(&r, xin, f);
            ck_assert_double_gt(v, 0.0);
            lowest = v < lowest ? v : lowest;
            used++;
        }
        for (int64_t f = 0; f < u.m; f++) {
            bool in = false;
            for (int64_t s = 0; s < 4; s++)
                in |= ws->aux_idx[i * 4 + s] == f;
            if (f % 3 != 0 && !in && lowest < INFINITY)
                ck_assert_double_le(pre_of(&r, xin, f), lowest + 1e-6);
        }
    }
    ck_assert_int_gt(used, n);
    r.ka = 4;
    r.aux_idx = ws->aux_idx;
    r.aux_weight = 0.5;
    r.e_fixed = e;
    double want = ref_loss(&r, u.x, u.y, NULL, NULL);
    ck_assert_double_eq_tol(u.loss, want, 1e-5 * want);
    double mse, penalty, aux;
    subsae__trainer_loss_parts(t, &mse, &penalty, &aux);
    ck_assert_double_gt(aux, 0.0);
    check_all_params(&r, &u);
    free(xhat);
    free(e);
    free(xin);
    free((void *)r.active);
    ref_free(&r);
    setup_end(&u);
}

START_TEST(gradients_auxk)
{
    auxk_case(SUBSAE_ACT_TOPK, false);
    auxk_case(SUBSAE_ACT_TOPK, true);
    auxk_case(SUBSAE_ACT_BATCHTOPK, false);
}
END_TEST

/* AuxK with few dead features: k_aux shrinks to their number and the loss
 * scale to dead / k_aux; with none dead (or the coefficient 0) it is off. */
START_TEST(auxk_scale_and_off)
{
    struct setup u;
    subsae_trainer *t = new_trainer(SUBSAE_ACT_TOPK, 14, 2, 7, 1);
    ck_assert_ok(subsae_trainer_set_double(t, SUBSAE_TRAIN_AUXK_COEF, 1.0 / 32));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_DEAD_WINDOW, 50));
    setup_begin(&u, t, 7, 8, 8, 0.1, 6);
    /* k_aux defaults to d_in / 2 = 4; two dead features. */
    t->tokens = 100;
    for (int64_t f = 0; f < u.m; f++)
        t->last_fired[f] = f < 2 ? 10 : 80;
    setup_gradients(&u);
    ck_assert_int_eq(t->ws.n_dead, 2);
    ck_assert_int_eq(t->ws.aux_k, 2);
    ck_assert_double_eq(t->ws.aux_scale, 0.5);
    for (int64_t f = 0; f < u.m; f++)
        t->last_fired[f] = 80;
    double loss;
    ck_assert_ok(subsae__trainer_gradients(t, u.x, u.d_in, NULL, 0, u.n, NULL, NULL, NULL, NULL,
                                           &loss, NULL));
    ck_assert_int_eq(t->ws.aux_k, 0);
    double mse, penalty, aux;
    subsae__trainer_loss_parts(t, &mse, &penalty, &aux);
    ck_assert(aux == 0.0 && loss == mse);
    /* A feature counts as dead from the start when it never fired. */
    t->tokens = 49;
    for (int64_t f = 0; f < u.m; f++)
        t->last_fired[f] = 0;
    ck_assert_ok(subsae__trainer_gradients(t, u.x, u.d_in, NULL, 0, u.n, NULL, NULL, NULL, NULL,
                                           &loss, NULL));
    ck_assert_int_eq(t->ws.n_dead, 0);
    t->tokens = 50;
    ck_assert_ok(subsae__trainer_gradients(t, u.x, u.d_in, NULL, 0, u.n, NULL, NULL, NULL, NULL,
                                           &loss, NULL));
    ck_assert_int_eq(t->ws.n_dead, u.m);
    setup_end(&u);
}
END_TEST

/* ---- threads, resume, options ------------------------------------------ */

/* The dense paths on a real team give the same gradient bits for any
 * thread count (b_dec to rounding). */
START_TEST(same_bits_any_thread_count)
{
    const int64_t n = 384, d = 24, m = 192;
    float *x = harness_normal_rows(21, n, d, 0.4);
    subsae_buffer *bx = harness_wrap_copy(x, n, d);
    const int acts[3] = {SUBSAE_ACT_RELU, SUBSAE_ACT_JUMPRELU, SUBSAE_ACT_BATCHTOPK};
    for (int a = 0; a < 3; a++) {
        float *g[2][4];
        for (int run = 0; run < 2; run++) {
            subsae_trainer *t = new_trainer(acts[a], m, 6, n, run ? 3 : 1);
            ck_assert_ok(subsae_trainer_set_double(t, SUBSAE_TRAIN_AUXK_COEF, 0.1));
            ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_DEAD_WINDOW, 1));
            ck_assert_ok(subsae_trainer_init(t, bx, NULL));
            t->tokens = 10;
            for (int64_t f = 0; f < m; f += 2)
                t->last_fired[f] = 10;
            g[run][0] = malloc((size_t)(m * d) * 4);
            g[run][1] = malloc((size_t)m * 4);
            g[run][2] = malloc((size_t)(m * d) * 4);
            g[run][3] = malloc((size_t)d * 4);
            double loss;
            ck_assert_ok(subsae__trainer_gradients(t, x, d, NULL, 0, n, g[run][0], g[run][1],
                                                   g[run][2], g[run][3], &loss, NULL));
            ck_assert_int_gt(t->ws.aux_k, 0);
            subsae_trainer_free(t);
        }
        ck_assert_mem_eq(g[0][0], g[1][0], (size_t)(m * d) * 4);
        ck_assert_mem_eq(g[0][1], g[1][1], (size_t)m * 4);
        ck_assert_mem_eq(g[0][2], g[1][2], (size_t)(m * d) * 4);
        for (int64_t j = 0; j < d; j++)
            ck_assert_double_eq_tol(g[0][3][j], g[1][3][j], 1e-5 * (1 + fabs(g[0][3][j])));
        for (int run = 0; run < 2; run++)
            for (int i = 0; i < 4; i++)
                free(g[run][i]);
    }
    subsae_buffer_free(bx);
    free(x);
}
END_TEST

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

static subsae_trainer *resume_trainer(int activation, bool auxk, bool transcoder)
{
    subsae_trainer *t = new_trainer(activation, 48, 4, 64, 2);
    ck_assert_ok(subsae_trainer_set_double(t, SUBSAE_TRAIN_LR, 3e-3));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_WARMUP_STEPS, 3));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_DEAD_WINDOW, 200));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_SPARSE_ADAM, transcoder));
    if (activation == SUBSAE_ACT_JUMPRELU)
        ck_assert_ok(subsae_trainer_set_double(t, SUBSAE_TRAIN_JUMPRELU_BANDWIDTH, 0.05));
    if (auxk)
        ck_assert_ok(subsae_trainer_set_double(t, SUBSAE_TRAIN_AUXK_COEF, 1.0 / 32));
    return t;
}

/* Checkpoints carry the thresholds (JumpReLU's log-thresholds and their
 * moments, BatchTopK's running threshold), the AuxK settings and the
 * dead-feature clock: a resumed run continues bit for bit. */
START_TEST(resume_every_activation)
{
    const int64_t n = 1000, d = 12, half = 9 * 64;
    float *x = harness_normal_rows(4, n, d, -0.1), *y = harness_normal_rows(7, n, 10, 0.2);
    subsae_buffer *b = harness_wrap_copy(x, n, d), *by = harness_wrap_copy(y, n, 10);
    const int acts[4] = {SUBSAE_ACT_TOPK, SUBSAE_ACT_BATCHTOPK, SUBSAE_ACT_JUMPRELU,
                         SUBSAE_ACT_RELU};
    for (int a = 0; a < 4; a++) {
        for (int variant = 0; variant < 2; variant++) {
            const bool auxk = variant == 0, transcoder = variant == 1;
            const subsae_buffer *tgt = transcoder ? by : NULL;
            subsae_trainer *straight = resume_trainer(acts[a], auxk, transcoder);
            ck_assert_ok(subsae_trainer_init(straight, b, tgt));
            ck_assert_ok(subsae_trainer_fit(straight, b, tgt, 2 * half));
            subsae_trainer *first = resume_trainer(acts[a], auxk, transcoder);
            ck_assert_ok(subsae_trainer_init(first, b, tgt));
            ck_assert_ok(subsae_trainer_fit(first, b, tgt, half));
            char dir[512];
            harness_tmp_path("ck-variants", dir, sizeof dir);
            ck_assert_ok(subsae_trainer_save_checkpoint(first, dir));
            subsae_trainer_free(first);
            subsae_trainer *resumed;
            ck_assert_ok(subsae_trainer_load_checkpoint(dir, &resumed));
            double v;
            ck_assert_ok(subsae_trainer_get_double(resumed, SUBSAE_TRAIN_AUXK_COEF, &v));
            ck_assert(v == (auxk ? 1.0 / 32 : 0.0));
            ck_assert_ok(subsae_trainer_fit(resumed, b, tgt, half));
            expect_same_weights(subsae_trainer_sae(straight), subsae_trainer_sae(resumed));
            if (acts[a] == SUBSAE_ACT_JUMPRELU)
                ck_assert_mem_eq(straight->log_threshold, resumed->log_threshold, 48 * 4);
            if (acts[a] == SUBSAE_ACT_BATCHTOPK)
                ck_assert(straight->batch_threshold == resumed->batch_threshold);
            double ma[SUBSAE_METRIC_COUNT], mb[SUBSAE_METRIC_COUNT];
            ck_assert_ok(subsae_trainer_metrics(straight, ma, SUBSAE_METRIC_COUNT));
            ck_assert_ok(subsae_trainer_metrics(resumed, mb, SUBSAE_METRIC_COUNT));
            for (int i = 0; i < SUBSAE_METRIC_COUNT; i++)
                ck_assert_msg((isnan(ma[i]) && isnan(mb[i])) || ma[i] == mb[i],
                              "%s metric %d: %.17g vs %.17g", subsae_activation_name(acts[a]), i,
                              ma[i], mb[i]);
            subsae_trainer_free(straight);
            subsae_trainer_free(resumed);
        }
    }
    subsae_buffer_free(b);
    subsae_buffer_free(by);
    free(x);
    free(y);
}
END_TEST

START_TEST(options_and_thresholds)
{
    subsae_trainer *t;
    ck_assert_ok(subsae_trainer_create(&t));
    double v;
    ck_assert_ok(subsae_trainer_get_double(t, SUBSAE_TRAIN_AUXK_COEF, &v));
    ck_assert(v == 0.0); /* AuxK off by default */
    ck_assert_ok(subsae_trainer_get_double(t, SUBSAE_TRAIN_L1_COEF, &v));
    ck_assert_double_gt(v, 0.0);
    ck_assert_ok(subsae_trainer_get_double(t, SUBSAE_TRAIN_L0_COEF, &v));
    ck_assert_double_gt(v, 0.0);
    ck_assert_ok(subsae_trainer_get_double(t, SUBSAE_TRAIN_JUMPRELU_BANDWIDTH, &v));
    ck_assert(v == 0.001);
    ck_assert_ok(subsae_trainer_get_double(t, SUBSAE_TRAIN_INIT_THRESHOLD, &v));
    ck_assert(v == 0.0);
    ck_assert_status(subsae_trainer_set_double(t, SUBSAE_TRAIN_JUMPRELU_BANDWIDTH, 0.0),
                     SUBSAE_E_INVALID);
    ck_assert_status(subsae_trainer_set_double(t, SUBSAE_TRAIN_L1_COEF, -1.0), SUBSAE_E_INVALID);
    ck_assert_status(subsae_trainer_set_int(t, SUBSAE_TRAIN_ACTIVATION, 5), SUBSAE_E_INVALID);
    subsae_trainer_free(t);

    /* Initial thresholds: BatchTopK's and the automatic JumpReLU one give
     * an initial L0 near k; a set INIT_THRESHOLD is taken as is. */
    const int64_t n = 2000, d = 16;
    float *x = harness_normal_rows(9, n, d, 0.3);
    subsae_buffer *b = harness_wrap_copy(x, n, d);
    for (int a = 0; a < 3; a++) {
        int act = a == 0 ? SUBSAE_ACT_BATCHTOPK : SUBSAE_ACT_JUMPRELU;
        t = new_trainer(act, 256, 8, 256, 2);
        if (a == 2)
            ck_assert_ok(subsae_trainer_set_double(t, SUBSAE_TRAIN_INIT_THRESHOLD, 0.125));
        ck_assert_ok(subsae_trainer_init(t, b, NULL));
        const subsae_sae *s = subsae_trainer_sae(t);
        float thr[256];
        ck_assert_ok(subsae_sae_get_param(s, SUBSAE_PARAM_THRESHOLD, thr, 256));
        for (int64_t f = 1; f < 256; f++)
            ck_assert(thr[f] == thr[0]);
        if (a == 2) {
            ck_assert_double_eq_tol(thr[0], 0.125, 1e-7);
        } else {
            ck_assert_double_gt(thr[0], 0.0);
            double e[SUBSAE_METRIC_COUNT];
            ck_assert_ok(subsae_sae_evaluate(s, b, NULL, e, SUBSAE_METRIC_COUNT));
            ck_assert_double_gt(e[SUBSAE_METRIC_L0], 4.0);
            ck_assert_double_lt(e[SUBSAE_METRIC_L0], 16.0);
        }
        if (act == SUBSAE_ACT_JUMPRELU)
            for (int64_t f = 0; f < 256; f++)
                ck_assert(thr[f] == expf(t->log_threshold[f]));
        /* Training moves the threshold. */
        ck_assert_ok(subsae_trainer_fit(t, b, NULL, 4 * 256));
        float after[256];
        ck_assert_ok(subsae_sae_get_param(s, SUBSAE_PARAM_THRESHOLD, after, 256));
        ck_assert(memcmp(thr, after, sizeof thr) != 0);
        subsae_trainer_free(t);
    }
    subsae_buffer_free(b);
    free(x);
}
END_TEST

SUBSAE_SUITE(activations)
{
    Suite *s = suite_create("activations");
    TCase *tc = harness_case(s, "gradients", 60);
    tcase_add_test(tc, gradients_relu_l1);
    tcase_add_test(tc, gradients_jumprelu);
    tcase_add_test(tc, gradients_batchtopk);
    tcase_add_test(tc, gradients_auxk);
    tcase_add_test(tc, auxk_scale_and_off);
    tcase_add_test(tc, same_bits_any_thread_count);
    tc = harness_case(s, "training", 120);
    tcase_add_test(tc, resume_every_activation);
    tcase_add_test(tc, options_and_thresholds);
    return s;
}
