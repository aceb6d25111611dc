/* Trainer: gradients against central finite differences in double (free
 * and unit decoder norms, SAE and transcoder), options, metrics semantics,
 * determinism, ground-truth recovery on synthetic data, bad input. */
#include "harness.h"
#include "internal.h"
#include "kernels.h"
#include "rng.h"
#include "sae.h"
#include "synth.h"
#include "trainer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static float *random_rows(uint64_t seed, int64_t n, int64_t d, double offset)
{
    subsae__rng rng;
    subsae__rng_seed(&rng, seed, 99);
    float *x = malloc((size_t)(n * d) * sizeof *x);
    for (int64_t i = 0; i < n * d; i++)
        x[i] = (float)(offset + subsae__rng_normal(&rng));
    return x;
}

static subsae_buffer *wrap(const float *x, int64_t n, int64_t d)
{
    subsae_buffer *b;
    ck_assert_ok(subsae_buffer_wrap(x, SUBSAE_DTYPE_F32, n, d, d, SUBSAE_COPY, &b));
    return b;
}

static subsae_trainer *new_trainer(int64_t features, int64_t k, int init, int64_t batch,
                                   uint64_t seed)
{
    subsae_trainer *t;
    ck_assert_ok(subsae_trainer_create(&t));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_FEATURES, features));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_K, k));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_INIT, init));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_BATCH, batch));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_SEED, (int64_t)seed));
    return t;
}

/* ---- gradients ------------------------------------------------------------ */

struct params {
    int64_t d_in, d_out, m, k, n;
    bool apply, unit;
    double s_in, s_out;
    double *W_enc, *b_enc, *W_dec, *b_dec;
};

/* The loss in double with a fixed active set (idx: n x k, -1 = none). */
static double loss_double(const struct params *p, const float *x, const float *tgt,
                          const int32_t *idx, double *min_pre)
{
    double total = 0.0;
    double *xin = malloc((size_t)p->d_in * sizeof *xin);
    double *xhat = malloc((size_t)p->d_out * sizeof *xhat);
    double *dec = malloc((size_t)p->d_out * sizeof *dec);
    for (int64_t b = 0; b < p->n; b++) {
        for (int64_t j = 0; j < p->d_in; j++)
            xin[j] = (double)x[b * p->d_in + j] * p->s_in - (p->apply ? p->b_dec[j] : 0.0);
        for (int64_t j = 0; j < p->d_out; j++)
            xhat[j] = p->b_dec[j];
        for (int64_t s = 0; s < p->k; s++) {
            int32_t f = idx[b * p->k + s];
            if (f < 0)
                continue;
            double pre = p->b_enc[f];
            for (int64_t j = 0; j < p->d_in; j++)
                pre += xin[j] * p->W_enc[f * p->d_in + j];
            if (min_pre && fabs(pre) < *min_pre)
                *min_pre = fabs(pre);
            double z = pre > 0 ? pre : 0;
            double nn = 0.0;
            for (int64_t j = 0; j < p->d_out; j++)
                nn += p->W_dec[f * p->d_out + j] * p->W_dec[f * p->d_out + j];
            double scale = p->unit ? 1.0 / sqrt(nn) : 1.0;
            for (int64_t j = 0; j < p->d_out; j++)
                dec[j] = p->W_dec[f * p->d_out + j] * scale;
            for (int64_t j = 0; j < p->d_out; j++)
                xhat[j] += z * dec[j];
        }
        for (int64_t j = 0; j < p->d_out; j++) {
            double t = (double)(tgt ? tgt[b * p->d_out + j] : x[b * p->d_in + j]) * p->s_out;
            total += (xhat[j] - t) * (xhat[j] - t);
        }
    }
    free(xin);
    free(xhat);
    free(dec);
    return total / (double)p->n;
}

static double *to_double(const float *f, int64_t n)
{
    double *d = malloc((size_t)n * sizeof *d);
    for (int64_t i = 0; i < n; i++)
        d[i] = f[i];
    return d;
}

/* Compare one analytic gradient with central differences of loss_double. */
static void check_param_gradient(struct params *p, double *theta, int64_t count,
                                 const float *analytic, const float *x, const float *tgt,
                                 const int32_t *idx, const char *name)
{
    const double h = 1e-4;
    double err2 = 0.0, ref2 = 0.0, max_ref = 0.0;
    double *fd = malloc((size_t)count * sizeof *fd);
    for (int64_t i = 0; i < count; i++) {
        double keep = theta[i];
        theta[i] = keep + h;
        double up = loss_double(p, x, tgt, idx, NULL);
        theta[i] = keep - h;
        double down = loss_double(p, x, tgt, idx, NULL);
        theta[i] = keep;
        fd[i] = (up - down) / (2 * h);
        if (fabs(fd[i]) > max_ref)
            max_ref = fabs(fd[i]);
    }
    for (int64_t i = 0; i < count; i++) {
        double e = analytic[i] - fd[i];
        err2 += e * e;
        ref2 += fd[i] * fd[i];
        ck_assert_msg(fabs(e) <= 1e-3 * max_ref + 1e-7,
                      "%s[%lld]: analytic %.8g, finite differences %.8g", name, (long long)i,
                      (double)analytic[i], fd[i]);
    }
    ck_assert_msg(ref2 > 0.0, "%s: gradient is zero, test does not exercise it", name);
    ck_assert_msg(sqrt(err2 / ref2) < 2e-4, "%s: relative error %g", name, sqrt(err2 / ref2));
    free(fd);
}

static void gradient_case(bool unit, bool transcoder, int threads)
{
    const int64_t n = 7, d_in = 6, d_out = transcoder ? 5 : 6, m = 12, k = 3;
    float *x = random_rows(1, 64, d_in, 0.5);
    float *y = transcoder ? random_rows(2, 64, d_out, -0.3) : NULL;
    subsae_buffer *bx = wrap(x, 64, d_in), *by = transcoder ? wrap(y, 64, d_out) : NULL;
    subsae_trainer *t = new_trainer(m, k, SUBSAE_INIT_RANDOM, n, 5);
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_DECODER_NORM,
                                        unit ? SUBSAE_DECODER_UNIT : SUBSAE_DECODER_FREE));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_THREADS, threads));
    ck_assert_ok(subsae_trainer_init(t, bx, by));
    subsae_sae *s = t->sae;
    /* Move every parameter off its initial value so each path carries a
     * gradient (b_enc, b_dec and the encoder's b_dec path included). */
    subsae__rng rng;
    subsae__rng_seed(&rng, 11, 0);
    for (int64_t i = 0; i < m * d_in; i++)
        s->W_enc[i] += 0.3f * (float)subsae__rng_normal(&rng);
    for (int64_t i = 0; i < m; i++)
        s->b_enc[i] = 0.2f * (float)subsae__rng_normal(&rng) + 0.3f;
    for (int64_t i = 0; i < d_out; i++)
        s->b_dec[i] += 0.2f * (float)subsae__rng_normal(&rng);
    for (int64_t i = 0; i < m * d_out; i++)
        s->W_dec[i] += 0.2f * (float)subsae__rng_normal(&rng);
    if (unit)
        for (int64_t f = 0; f < m; f++) {
            double nn = subsae__sumsq(s->W_dec + f * d_out, d_out);
            for (int64_t j = 0; j < d_out; j++)
                s->W_dec[f * d_out + j] = (float)(s->W_dec[f * d_out + j] / sqrt(nn));
        }

    float *gWe = malloc((size_t)(m * d_in) * sizeof(float)), *gbe = malloc((size_t)m * 4);
    float *gWd = malloc((size_t)(m * d_out) * sizeof(float)), *gbd = malloc((size_t)d_out * 4);
    int32_t *idx = malloc((size_t)(n * k) * sizeof *idx);
    double loss;
    ck_assert_ok(subsae__trainer_gradients(t, x, d_in, y, d_out, n, gWe, gbe, gWd, gbd, &loss,
                                           idx));
    struct params p = {.d_in = d_in, .d_out = d_out, .m = m, .k = k, .n = n,
                       .apply = s->apply_b_dec_to_input, .unit = unit,
                       .s_in = (float)s->input_scale, .s_out = (float)s->output_scale,
                       .W_enc = to_double(s->W_enc, m * d_in), .b_enc = to_double(s->b_enc, m),
                       .W_dec = to_double(s->W_dec, m * d_out),
                       .b_dec = to_double(s->b_dec, d_out)};
    ck_assert_int_eq(p.apply, !transcoder);
    double min_pre = INFINITY;
    double ref = loss_double(&p, x, y, idx, &min_pre);
    ck_assert_msg(min_pre > 1e-3, "an active pre-activation sits at the ReLU kink (%g)", min_pre);
    ck_assert_double_eq_tol(loss, ref, 1e-5 * ref);
    int active = 0;
    for (int64_t i = 0; i < n * k; i++)
        active += idx[i] >= 0;
    ck_assert_int_gt(active, n); /* several features per row fire */
    check_param_gradient(&p, p.W_enc, m * d_in, gWe, x, y, idx, "W_enc");
    check_param_gradient(&p, p.b_enc, m, gbe, x, y, idx, "b_enc");
    check_param_gradient(&p, p.W_dec, m * d_out, gWd, x, y, idx, "W_dec");
    check_param_gradient(&p, p.b_dec, d_out, gbd, x, y, idx, "b_dec");
    if (unit) /* the projected decoder gradient is orthogonal to each row */
        for (int64_t f = 0; f < m; f++)
            ck_assert_double_eq_tol(subsae__dot(gWd + f * d_out, s->W_dec + f * d_out, d_out),
                                    0.0, 1e-6);
    free(p.W_enc);
    free(p.b_enc);
    free(p.W_dec);
    free(p.b_dec);
    free(gWe);
    free(gbe);
    free(gWd);
    free(gbd);
    free(idx);
    subsae_trainer_free(t);
    subsae_buffer_free(bx);
    subsae_buffer_free(by);
    free(x);
    free(y);
}

START_TEST(gradients_free_decoder)
{
    gradient_case(false, false, 1);
    gradient_case(false, false, 3);
}
END_TEST

START_TEST(gradients_unit_decoder)
{
    gradient_case(true, false, 2);
}
END_TEST

START_TEST(gradients_transcoder)
{
    gradient_case(false, true, 2);
    gradient_case(true, true, 1);
}
END_TEST

SUBSAE_SUITE(trainer)
{
    Suite *s = suite_create("trainer");
    TCase *tc = harness_case(s, "gradients", 30);
    tcase_add_test(tc, gradients_free_decoder);
    tcase_add_test(tc, gradients_unit_decoder);
    tcase_add_test(tc, gradients_transcoder);
    return s;
}
