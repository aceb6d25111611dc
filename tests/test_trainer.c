/* Trainer: gradients against central finite differences in double (free
 * and unit decoder norms, SAE and transcoder), options, metrics semantics,
 * determinism, ground-truth recovery on synthetic data, bad input. */
#include "harness.h"
#include "internal.h"
#include "io.h"
#include "kernels.h"
#include "rng.h"
#include "sae.h"
#include "synth.h"
#include "trainer.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

struct param_point {
    struct params *p;
    const float *x, *tgt;
    const int32_t *idx;
};

static double param_point_loss(void *ctx)
{
    const struct param_point *c = ctx;
    return loss_double(c->p, c->x, c->tgt, c->idx, NULL);
}

static void gradient_case(bool unit, bool transcoder, int threads)
{
    const int64_t n = 7, d_in = 6, d_out = transcoder ? 5 : 6, m = 12, k = 3;
    float *x = harness_normal_rows(1, 64, d_in, 0.5);
    float *y = transcoder ? harness_normal_rows(2, 64, d_out, -0.3) : NULL;
    subsae_buffer *bx = harness_wrap_copy(x, 64, d_in);
    subsae_buffer *by = transcoder ? harness_wrap_copy(y, 64, d_out) : NULL;
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
    struct param_point c = {&p, x, y, idx};
    harness_check_gradient(p.W_enc, m * d_in, gWe, param_point_loss, &c, "W_enc");
    harness_check_gradient(p.b_enc, m, gbe, param_point_loss, &c, "b_enc");
    harness_check_gradient(p.W_dec, m * d_out, gWd, param_point_loss, &c, "W_dec");
    harness_check_gradient(p.b_dec, d_out, gbd, param_point_loss, &c, "b_dec");
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

/* Large enough for the parallel paths to run on a real team: the gradients
 * and the loss are the same bits for any thread count (sums run in row
 * order inside each feature, partial sums over fixed parts in part order),
 * and sampled entries match finite differences. */
START_TEST(gradients_parallel_paths)
{
    const int64_t n = 512, d = 32, m = 256, k = 8;
    float *x = harness_normal_rows(21, n, d, 0.4);
    subsae_buffer *bx = harness_wrap_copy(x, n, d);
    float *g[2][4];
    int32_t *idx = malloc((size_t)(n * k) * sizeof *idx);
    double loss[2];
    subsae_trainer *t[2];
    for (int run = 0; run < 2; run++) {
        t[run] = new_trainer(m, k, SUBSAE_INIT_RANDOM, n, 4);
        ck_assert_ok(subsae_trainer_set_int(t[run], SUBSAE_TRAIN_THREADS, run ? 3 : 1));
        ck_assert_ok(subsae_trainer_init(t[run], bx, NULL));
        subsae_sae *s = t[run]->sae;
        for (int64_t i = 0; i < m; i++)
            s->b_enc[i] = 0.05f * (float)(i % 7);
        g[run][0] = malloc((size_t)(m * d) * 4);
        g[run][1] = malloc((size_t)m * 4);
        g[run][2] = malloc((size_t)(m * d) * 4);
        g[run][3] = malloc((size_t)d * 4);
        ck_assert_ok(subsae__trainer_gradients(t[run], x, d, NULL, 0, n, g[run][0], g[run][1],
                                               g[run][2], g[run][3], &loss[run], idx));
    }
    ck_assert_mem_eq(g[0][0], g[1][0], (size_t)(m * d) * 4);
    ck_assert_mem_eq(g[0][1], g[1][1], (size_t)m * 4);
    ck_assert_mem_eq(g[0][2], g[1][2], (size_t)(m * d) * 4);
    ck_assert_mem_eq(g[0][3], g[1][3], (size_t)d * 4);
    ck_assert_double_eq(loss[0], loss[1]);
    const subsae_sae *s = t[0]->sae;
    struct params p = {.d_in = d, .d_out = d, .m = m, .k = k, .n = n, .apply = true,
                       .s_in = (float)s->input_scale, .s_out = (float)s->output_scale,
                       .W_enc = to_double(s->W_enc, m * d), .b_enc = to_double(s->b_enc, m),
                       .W_dec = to_double(s->W_dec, m * d), .b_dec = to_double(s->b_dec, d)};
    double *thetas[4] = {p.W_enc, p.b_enc, p.W_dec, p.b_dec};
    const int64_t sizes[4] = {m * d, m, m * d, d};
    subsae__rng rng;
    subsae__rng_seed(&rng, 1, 0);
    for (int which = 0; which < 4; which++) {
        double max_fd = 0.0;
        for (int sample = 0; sample < 12; sample++) {
            /* Entries of features that fired, so the gradient is not 0. */
            int64_t i = (int64_t)subsae__rng_below(&rng, (uint64_t)sizes[which]);
            if (which == 0 || which == 2)
                i = (int64_t)idx[subsae__rng_below(&rng, (uint64_t)(n * k))] * d + i % d;
            else if (which == 1)
                i = idx[subsae__rng_below(&rng, (uint64_t)(n * k))];
            if (i < 0)
                continue;
            const double h = 1e-3, keep = thetas[which][i];
            thetas[which][i] = keep + h;
            double up = loss_double(&p, x, NULL, idx, NULL);
            thetas[which][i] = keep - h;
            double down = loss_double(&p, x, NULL, idx, NULL);
            thetas[which][i] = keep;
            double fd = (up - down) / (2 * h);
            max_fd = fabs(fd) > max_fd ? fabs(fd) : max_fd;
            ck_assert_msg(fabs(g[0][which][i] - fd) <= 2e-3 * (fabs(fd) + 1e-2),
                          "parameter %d[%lld]: analytic %g, finite differences %g", which,
                          (long long)i, (double)g[0][which][i], fd);
        }
        ck_assert_double_gt(max_fd, 0.0);
    }
    for (int run = 0; run < 2; run++) {
        for (int i = 0; i < 4; i++)
            free(g[run][i]);
        subsae_trainer_free(t[run]);
    }
    free(p.W_enc);
    free(p.b_enc);
    free(p.W_dec);
    free(p.b_dec);
    free(idx);
    subsae_buffer_free(bx);
    free(x);
}
END_TEST

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

/* ---- fit, determinism, checkpoints ------------------------------------------- */

static void expect_same_weights(const subsae_sae *a, const subsae_sae *b)
{
    for (int p = SUBSAE_PARAM_W_ENC; p <= SUBSAE_PARAM_THRESHOLD; p++) {
        int64_t count = subsae_sae_param_size(a, p);
        ck_assert_int_eq(count, subsae_sae_param_size(b, p));
        float *x = malloc((size_t)count * 4), *y = malloc((size_t)count * 4);
        ck_assert_ok(subsae_sae_get_param(a, p, x, count));
        ck_assert_ok(subsae_sae_get_param(b, p, y, count));
        ck_assert_msg(!memcmp(x, y, (size_t)count * 4), "parameter %d differs", p);
        free(x);
        free(y);
    }
}

static void expect_same_metrics(const subsae_trainer *a, const subsae_trainer *b)
{
    double ma[SUBSAE_METRIC_COUNT], mb[SUBSAE_METRIC_COUNT];
    ck_assert_ok(subsae_trainer_metrics(a, ma, SUBSAE_METRIC_COUNT));
    ck_assert_ok(subsae_trainer_metrics(b, mb, SUBSAE_METRIC_COUNT));
    for (int i = 0; i < SUBSAE_METRIC_COUNT; i++)
        ck_assert_msg((isnan(ma[i]) && isnan(mb[i])) || ma[i] == mb[i], "metric %d: %.17g vs %.17g",
                      i, ma[i], mb[i]);
}

/* A small configuration that exercises every option of the step. */
static subsae_trainer *configured(int threads, bool sparse_adam, bool unit)
{
    subsae_trainer *t = new_trainer(48, 4, SUBSAE_INIT_RANDOM, 64, 17);
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_THREADS, threads));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_SPARSE_ADAM, sparse_adam));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_DECODER_NORM,
                                        unit ? SUBSAE_DECODER_UNIT : SUBSAE_DECODER_FREE));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_WARMUP_STEPS, 7));
    ck_assert_ok(subsae_trainer_set_double(t, SUBSAE_TRAIN_CLIP_NORM, 0.5));
    ck_assert_ok(subsae_trainer_set_double(t, SUBSAE_TRAIN_LR, 3e-3));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_DEAD_WINDOW, 500));
    return t;
}

START_TEST(same_seed_same_bits)
{
    const int64_t n = 1000, d = 16;
    float *x = harness_normal_rows(3, n, d, 0.2);
    subsae_buffer *b = harness_wrap_copy(x, n, d);
    for (int variant = 0; variant < 3; variant++) {
        int threads = variant == 2 ? 1 : 2;
        subsae_trainer *t1 = configured(threads, variant == 1, variant == 1);
        subsae_trainer *t2 = configured(threads, variant == 1, variant == 1);
        ck_assert_ok(subsae_trainer_init(t1, b, NULL));
        ck_assert_ok(subsae_trainer_init(t2, b, NULL));
        ck_assert_ok(subsae_trainer_fit(t1, b, NULL, 40 * 64));
        ck_assert_ok(subsae_trainer_fit(t2, b, NULL, 40 * 64));
        expect_same_weights(subsae_trainer_sae(t1), subsae_trainer_sae(t2));
        expect_same_metrics(t1, t2);
        subsae_trainer_free(t1);
        subsae_trainer_free(t2);
    }
    /* A different seed gives different weights. */
    subsae_trainer *t1 = configured(2, false, false), *t2 = configured(2, false, false);
    ck_assert_ok(subsae_trainer_set_int(t2, SUBSAE_TRAIN_SEED, 18));
    ck_assert_ok(subsae_trainer_init(t1, b, NULL));
    ck_assert_ok(subsae_trainer_init(t2, b, NULL));
    float w1[48 * 16], w2[48 * 16];
    ck_assert_ok(subsae_sae_get_param(subsae_trainer_sae(t1), SUBSAE_PARAM_W_DEC, w1, 48 * 16));
    ck_assert_ok(subsae_sae_get_param(subsae_trainer_sae(t2), SUBSAE_PARAM_W_DEC, w2, 48 * 16));
    ck_assert(memcmp(w1, w2, sizeof w1) != 0);
    subsae_trainer_free(t1);
    subsae_trainer_free(t2);
    subsae_buffer_free(b);
    free(x);
}
END_TEST

static void resume_case(bool sparse_adam, bool unit, int64_t half_steps)
{
    const int64_t n = 1000, d = 16, tokens = half_steps * 64; /* epoch: 15 batches */
    float *x = harness_normal_rows(4, n, d, -0.1);
    subsae_buffer *b = harness_wrap_copy(x, n, d);
    subsae_trainer *straight = configured(2, sparse_adam, unit);
    ck_assert_ok(subsae_trainer_init(straight, b, NULL));
    ck_assert_ok(subsae_trainer_fit(straight, b, NULL, 2 * tokens));

    subsae_trainer *first = configured(2, sparse_adam, unit);
    ck_assert_ok(subsae_trainer_init(first, b, NULL));
    ck_assert_ok(subsae_trainer_fit(first, b, NULL, tokens));
    char dir[512];
    harness_tmp_path("checkpoint", dir, sizeof dir);
    ck_assert_ok(subsae_trainer_save_checkpoint(first, dir));
    subsae_trainer_free(first);
    /* A second buffer object over the same rows: the position is the
     * trainer's, not the buffer's. */
    subsae_buffer *b2 = harness_wrap_copy(x, n, d);
    subsae_trainer *resumed;
    ck_assert_ok(subsae_trainer_load_checkpoint(dir, &resumed));
    ck_assert_ok(subsae_trainer_fit(resumed, b2, NULL, tokens));
    expect_same_weights(subsae_trainer_sae(straight), subsae_trainer_sae(resumed));
    expect_same_metrics(straight, resumed);
    int64_t v;
    ck_assert_ok(subsae_trainer_get_int(resumed, SUBSAE_TRAIN_WARMUP_STEPS, &v));
    ck_assert_int_eq(v, 7);
    subsae_trainer_free(straight);
    subsae_trainer_free(resumed);
    subsae_buffer_free(b);
    subsae_buffer_free(b2);
    free(x);
}

START_TEST(resume_is_bit_identical)
{
    resume_case(false, false, 10); /* resumes mid-epoch, crosses an epoch */
    resume_case(true, true, 15);   /* resumes at an epoch boundary */
    resume_case(false, false, 23);
}
END_TEST

START_TEST(checkpoint_errors)
{
    const int64_t n = 200, d = 8;
    float *x = harness_normal_rows(5, n, d, 0.0);
    subsae_buffer *b = harness_wrap_copy(x, n, d);
    subsae_trainer *t = new_trainer(20, 3, SUBSAE_INIT_RANDOM, 32, 1), *back = NULL;
    char dir[512], path[600];
    harness_tmp_path("ck", dir, sizeof dir);
    ck_assert_status(subsae_trainer_save_checkpoint(t, dir), SUBSAE_E_STATE);
    ck_assert_ok(subsae_trainer_init(t, b, NULL));
    ck_assert_ok(subsae_trainer_fit(t, b, NULL, 64));
    ck_assert_ok(subsae_trainer_save_checkpoint(t, dir));
    ck_assert_ok(subsae_trainer_fit(t, b, NULL, 64));
    ck_assert_ok(subsae_trainer_save_checkpoint(t, dir)); /* replaces, removes state-2 */
    snprintf(path, sizeof path, "%s/state-2.safetensors", dir);
    FILE *f = fopen(path, "r");
    ck_assert_ptr_null(f);
    /* A crash while writing a later checkpoint leaves a stray state file:
     * the manifest still names the complete one. */
    snprintf(path, sizeof path, "%s/state-9.safetensors", dir);
    f = fopen(path, "w");
    fputs("partial", f);
    fclose(f);
    ck_assert_ok(subsae_trainer_load_checkpoint(dir, &back));
    expect_same_weights(subsae_trainer_sae(t), subsae_trainer_sae(back));
    subsae_trainer_free(back);
    back = NULL;
    /* The state file named by the manifest is missing or altered. */
    snprintf(path, sizeof path, "%s/state-4.safetensors", dir);
    char moved[620];
    snprintf(moved, sizeof moved, "%s.moved", path);
    ck_assert_int_eq(rename(path, moved), 0);
    ck_assert_status(subsae_trainer_load_checkpoint(dir, &back), SUBSAE_E_IO);
    struct subsae__tensor_view one = {"W_enc", SUBSAE_DTYPE_F32, 2, {20, 8}, x, 20 * 8 * 4};
    const char *keys[] = {"step"}, *values[] = {"4"};
    ck_assert_ok(subsae__safetensors_write(path, &one, 1, keys, values, 1));
    ck_assert_status(subsae_trainer_load_checkpoint(dir, &back), SUBSAE_E_FORMAT);
    ck_assert_int_eq(subsae_last_error_reason(), SUBSAE_REASON_MISSING_TENSOR);
    one.shape[0] = 21;
    one.bytes = 21 * 8 * 4;
    ck_assert_ok(subsae__safetensors_write(path, &one, 1, keys, values, 1));
    ck_assert_status(subsae_trainer_load_checkpoint(dir, &back), SUBSAE_E_FORMAT);
    ck_assert_ptr_nonnull(strstr(subsae_last_error(), "W_enc"));
    values[0] = "3";
    ck_assert_ok(subsae__safetensors_write(path, &one, 1, keys, values, 1));
    ck_assert_status(subsae_trainer_load_checkpoint(dir, &back), SUBSAE_E_FORMAT);
    ck_assert_ok(rename(moved, path));
    ck_assert_ok(subsae_trainer_load_checkpoint(dir, &back));
    subsae_trainer_free(back);
    back = NULL;
    /* A damaged manifest. */
    snprintf(path, sizeof path, "%s/checkpoint.json", dir);
    f = fopen(path, "w");
    fputs("{\"format\": \"libsubsae-checkpoint\", \"version\": 1}", f);
    fclose(f);
    ck_assert_status(subsae_trainer_load_checkpoint(dir, &back), SUBSAE_E_FORMAT);
    ck_assert_ptr_nonnull(strstr(subsae_last_error(), "missing"));
    f = fopen(path, "w");
    fputs("{\"format\": \"something else\"}", f);
    fclose(f);
    ck_assert_status(subsae_trainer_load_checkpoint(dir, &back), SUBSAE_E_FORMAT);
    harness_tmp_path("nothing-here", path, sizeof path);
    ck_assert_status(subsae_trainer_load_checkpoint(path, &back), SUBSAE_E_IO);
    ck_assert_ptr_null(back);
    ck_assert_status(subsae_trainer_load_checkpoint(NULL, &back), SUBSAE_E_INVALID);
    subsae_trainer_free(t);
    subsae_buffer_free(b);
    free(x);
}
END_TEST

/* ---- options, metrics, bad input ---------------------------------------------- */

START_TEST(options_round_trip_and_validate)
{
    subsae_trainer *t;
    ck_assert_ok(subsae_trainer_create(&t));
    int64_t v;
    double dv;
    ck_assert_ok(subsae_trainer_get_int(t, SUBSAE_TRAIN_FEATURES, &v));
    ck_assert_int_eq(v, 16384);
    ck_assert_ok(subsae_trainer_get_int(t, SUBSAE_TRAIN_K, &v));
    ck_assert_int_eq(v, 32);
    ck_assert_ok(subsae_trainer_get_int(t, SUBSAE_TRAIN_BATCH, &v));
    ck_assert_int_eq(v, 4096);
    ck_assert_ok(subsae_trainer_get_int(t, SUBSAE_TRAIN_INIT, &v));
    ck_assert_int_eq(v, SUBSAE_INIT_ACTIVE_SUBSPACE);
    ck_assert_ok(subsae_trainer_get_int(t, SUBSAE_TRAIN_DEAD_WINDOW, &v));
    ck_assert_int_eq(v, 10000000);
    ck_assert_ok(subsae_trainer_get_int(t, SUBSAE_TRAIN_INIT_SAMPLE, &v));
    ck_assert_int_eq(v, 65536);
    ck_assert_ok(subsae_trainer_get_double(t, SUBSAE_TRAIN_LR, &dv));
    ck_assert_double_eq_tol(dv, 2e-4, 1e-15);
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_FEATURES, 65536));
    ck_assert_ok(subsae_trainer_get_double(t, SUBSAE_TRAIN_LR, &dv));
    ck_assert_double_eq_tol(dv, 1e-4, 1e-15); /* 2e-4 / sqrt(65536 / 16384) */
    ck_assert_ok(subsae_trainer_get_double(t, SUBSAE_TRAIN_ADAM_BETA2, &dv));
    ck_assert_double_eq(dv, 0.999);
    ck_assert_ok(subsae_trainer_get_double(t, SUBSAE_TRAIN_ADAM_EPS, &dv));
    ck_assert_double_eq(dv, 1e-8);
    ck_assert_status(subsae_trainer_set_int(t, SUBSAE_TRAIN_FEATURES, 0), SUBSAE_E_INVALID);
    ck_assert_status(subsae_trainer_set_int(t, SUBSAE_TRAIN_INIT, 2), SUBSAE_E_INVALID);
    ck_assert_status(subsae_trainer_set_int(t, SUBSAE_TRAIN_LR, 1), SUBSAE_E_INVALID);
    ck_assert_status(subsae_trainer_set_int(t, 77, 1), SUBSAE_E_INVALID);
    ck_assert_status(subsae_trainer_set_double(t, SUBSAE_TRAIN_K, 1.0), SUBSAE_E_INVALID);
    ck_assert_status(subsae_trainer_set_double(t, SUBSAE_TRAIN_ADAM_BETA1, 1.0),
                     SUBSAE_E_INVALID);
    ck_assert_status(subsae_trainer_set_double(t, SUBSAE_TRAIN_LR, -1.0), SUBSAE_E_INVALID);
    ck_assert_status(subsae_trainer_set_double(t, SUBSAE_TRAIN_LR, INFINITY), SUBSAE_E_INVALID);
    ck_assert_status(subsae_trainer_get_int(t, SUBSAE_TRAIN_LR, &v), SUBSAE_E_INVALID);
    ck_assert_status(subsae_trainer_get_int(NULL, SUBSAE_TRAIN_K, &v), SUBSAE_E_INVALID);
    ck_assert_ptr_null(subsae_trainer_sae(t));
    /* Structural options are fixed by init; the others are not. */
    const int64_t n = 100, d = 8;
    float *x = harness_normal_rows(6, n, d, 0.0);
    subsae_buffer *b = harness_wrap_copy(x, n, d);
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_FEATURES, 24));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_K, 3));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_INIT, SUBSAE_INIT_RANDOM));
    ck_assert_ok(subsae_trainer_init(t, b, NULL));
    ck_assert_status(subsae_trainer_init(t, b, NULL), SUBSAE_E_STATE);
    ck_assert_status(subsae_trainer_set_int(t, SUBSAE_TRAIN_FEATURES, 30), SUBSAE_E_STATE);
    ck_assert_status(subsae_trainer_set_int(t, SUBSAE_TRAIN_SEED, 3), SUBSAE_E_STATE);
    ck_assert_ok(subsae_trainer_set_double(t, SUBSAE_TRAIN_LR, 1e-3));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_BATCH, 10));
    ck_assert_ok(subsae_trainer_get_int(t, SUBSAE_TRAIN_SUBSPACE_DIM, &v));
    ck_assert_int_eq(v, 0); /* random init: no subspace */
    ck_assert_ptr_nonnull(subsae_trainer_sae(t));
    subsae_trainer_free(t);
    subsae_trainer_free(NULL);
    subsae_buffer_free(b);
    free(x);
}
END_TEST

static int count_progress(int event, const char *phase, int64_t done, int64_t total,
                          const char *message, void *user)
{
    (void)message;
    int *calls = user;
    if (event == SUBSAE_EVENT_PROGRESS) {
        ck_assert_str_eq(phase, "fit");
        ck_assert_int_le(done, total + 64);
        calls[0]++;
        return calls[0] == calls[1]; /* stop after calls[1] steps */
    }
    calls[2]++;
    return 0;
}

START_TEST(metrics_and_dead_features)
{
    /* Data in a 4-dimensional subspace of R^16 with many features: the
     * dead window equal to the epoch makes the dead count the number of
     * features that did not fire in the last epoch, which the metrics
     * window (the same epoch) also sees as never firing. */
    const int64_t n = 640, d = 16, batch = 64;
    struct subsae__synth_spec spec = {.rows = n, .dim = d, .atoms = 8, .subspace_dim = 4,
                                      .active = 2, .coef_min = 0.5, .coef_max = 1.5,
                                      .offset = 1.0, .seed = 3};
    float *x = malloc((size_t)(n * d) * 4);
    ck_assert_ok(subsae__synth(&spec, x, NULL));
    subsae_buffer *b = harness_wrap_copy(x, n, d);
    subsae_trainer *t = new_trainer(200, 2, SUBSAE_INIT_RANDOM, batch, 9);
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_DEAD_WINDOW, n));
    ck_assert_ok(subsae_trainer_set_double(t, SUBSAE_TRAIN_LR, 1e-2));
    int calls[3] = {0, -1, 0};
    ck_assert_ok(subsae_trainer_set_callback(t, count_progress, calls));
    ck_assert_ok(subsae_trainer_init(t, b, NULL));
    ck_assert_int_gt(calls[2], 0); /* init logged */
    double m[SUBSAE_METRIC_COUNT];
    ck_assert_ok(subsae_trainer_metrics(t, m, SUBSAE_METRIC_COUNT));
    ck_assert(isnan(m[SUBSAE_METRIC_MSE]) && isnan(m[SUBSAE_METRIC_DEAD_FRACTION]));
    ck_assert_double_eq(m[SUBSAE_METRIC_TOKENS], 0);
    /* One step: the window is that step. */
    ck_assert_ok(subsae_trainer_fit(t, b, NULL, batch));
    ck_assert_int_eq(calls[0], 1);
    ck_assert_ok(subsae_trainer_metrics(t, m, SUBSAE_METRIC_COUNT));
    double s_out;
    ck_assert_ok(subsae_sae_get_double(subsae_trainer_sae(t), SUBSAE_SAE_OUTPUT_SCALE, &s_out));
    ck_assert_double_eq_tol(m[SUBSAE_METRIC_MSE] * s_out * s_out, m[SUBSAE_METRIC_LOSS],
                            1e-9 * m[SUBSAE_METRIC_LOSS]);
    ck_assert_double_eq(m[SUBSAE_METRIC_STEPS], 1);
    ck_assert_double_eq(m[SUBSAE_METRIC_TOKENS], batch);
    ck_assert_double_le(m[SUBSAE_METRIC_L0], 2.0);
    /* Run shorter than the window: dead = never fired during the run. */
    ck_assert_double_eq(m[SUBSAE_METRIC_DEAD_FRACTION], m[SUBSAE_METRIC_ZERO_FREQUENCY_FRACTION]);
    ck_assert_double_gt(m[SUBSAE_METRIC_DEAD_FRACTION], 0.3); /* 200 features, 128 pairs */
    /* Three more epochs (the first was 1 step short). */
    ck_assert_ok(subsae_trainer_fit(t, b, NULL, 3 * n - batch));
    ck_assert_ok(subsae_trainer_metrics(t, m, SUBSAE_METRIC_COUNT));
    ck_assert_double_eq(m[SUBSAE_METRIC_TOKENS], 3 * n);
    ck_assert_double_eq(m[SUBSAE_METRIC_DEAD_FRACTION], m[SUBSAE_METRIC_ZERO_FREQUENCY_FRACTION]);
    ck_assert_double_eq(m[SUBSAE_METRIC_DEAD_FEATURES], m[SUBSAE_METRIC_DEAD_FRACTION] * 200);
    ck_assert_double_lt(m[SUBSAE_METRIC_FVU], 1.0);
    ck_assert_double_eq_tol(m[SUBSAE_METRIC_EXPLAINED_VARIANCE], 1 - m[SUBSAE_METRIC_FVU], 1e-15);
    ck_assert_double_gt(m[SUBSAE_METRIC_L0], 1.0);
    ck_assert_double_le(m[SUBSAE_METRIC_L0], 2.0);
    ck_assert(m[SUBSAE_METRIC_DENSE_FRACTION] >= 0 && m[SUBSAE_METRIC_DENSE_FRACTION] <= 1);
    /* A longer dead window counts fewer dead features. */
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_DEAD_WINDOW, 3 * n));
    double m2[SUBSAE_METRIC_COUNT];
    ck_assert_ok(subsae_trainer_metrics(t, m2, SUBSAE_METRIC_COUNT));
    ck_assert_double_le(m2[SUBSAE_METRIC_DEAD_FEATURES], m[SUBSAE_METRIC_DEAD_FEATURES]);
    /* Cancelling from the callback stops after that step, consistently. */
    calls[0] = 0;
    calls[1] = 2;
    ck_assert_status(subsae_trainer_fit(t, b, NULL, 10 * batch), SUBSAE_E_CANCELLED);
    ck_assert_ok(subsae_trainer_metrics(t, m, SUBSAE_METRIC_COUNT));
    ck_assert_double_eq(m[SUBSAE_METRIC_STEPS], 3 * n / batch + 2);
    subsae_trainer_free(t);
    subsae_buffer_free(b);
    free(x);
}
END_TEST

START_TEST(bad_input)
{
    const int64_t n = 64, d = 8;
    float *x = harness_normal_rows(7, n, d, 0.0);
    subsae_buffer *b = harness_wrap_copy(x, n, d), *b5;
    float five[5 * 9] = {0};
    ck_assert_ok(subsae_buffer_wrap(five, SUBSAE_DTYPE_F32, 5, 9, 9, SUBSAE_COPY, &b5));
    subsae_trainer *t = new_trainer(16, 3, SUBSAE_INIT_RANDOM, 16, 2);
    ck_assert_status(subsae_trainer_step(t, x, d, NULL, 0, 4), SUBSAE_E_STATE);
    ck_assert_status(subsae_trainer_fit(t, b, NULL, 16), SUBSAE_E_STATE);
    double m[4];
    ck_assert_status(subsae_trainer_metrics(t, m, 4), SUBSAE_E_STATE);
    ck_assert_status(subsae_trainer_init(NULL, b, NULL), SUBSAE_E_INVALID);
    ck_assert_status(subsae_trainer_init(t, NULL, NULL), SUBSAE_E_INVALID);
    ck_assert_status(subsae_trainer_init(t, b, b5), SUBSAE_E_INVALID); /* rows differ */
    ck_assert_status(subsae_trainer_init(t, b5, NULL), SUBSAE_E_INVALID); /* zero rows */
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_K, 17));
    ck_assert_status(subsae_trainer_init(t, b, NULL), SUBSAE_E_INVALID);
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_K, 3));
    ck_assert_ok(subsae_trainer_init(t, b, NULL));
    ck_assert_status(subsae_trainer_step(t, NULL, d, NULL, 0, 4), SUBSAE_E_INVALID);
    ck_assert_status(subsae_trainer_step(t, x, d - 1, NULL, 0, 4), SUBSAE_E_INVALID);
    ck_assert_status(subsae_trainer_step(t, x, d, NULL, 0, 0), SUBSAE_E_INVALID);
    /* A target for a trainer that is not a transcoder. */
    ck_assert_status(subsae_trainer_step(t, x, d, x, d, 4), SUBSAE_E_INVALID);
    ck_assert_status(subsae_trainer_fit(t, b5, NULL, 16), SUBSAE_E_INVALID);   /* dim */
    ck_assert_status(subsae_trainer_fit(t, b, NULL, -1), SUBSAE_E_INVALID);
    ck_assert_status(subsae_trainer_metrics(t, NULL, 4), SUBSAE_E_INVALID);
    /* A non-finite row is rejected with its position; nothing changes. */
    const subsae_sae *s = subsae_trainer_sae(t);
    float before[16 * 8], after[16 * 8];
    ck_assert_ok(subsae_sae_get_param(s, SUBSAE_PARAM_W_DEC, before, 16 * 8));
    x[2 * d + 5] = NAN;
    ck_assert_status(subsae_trainer_step(t, x, d, NULL, 0, 4), SUBSAE_E_NONFINITE);
    ck_assert_ptr_nonnull(strstr(subsae_last_error(), "row 2"));
    ck_assert_ok(subsae_sae_get_param(s, SUBSAE_PARAM_W_DEC, after, 16 * 8));
    ck_assert_mem_eq(before, after, sizeof before);
    /* fit stops at the batch holding the row (earlier batches train). */
    subsae_buffer *borrowed;
    ck_assert_ok(subsae_buffer_wrap(x, SUBSAE_DTYPE_F32, n, d, d, SUBSAE_BORROW, &borrowed));
    ck_assert_status(subsae_trainer_fit(t, borrowed, NULL, 64), SUBSAE_E_NONFINITE);
    ck_assert_ptr_nonnull(strstr(subsae_last_error(), "row 2"));
    subsae_buffer_free(borrowed);
    x[2 * d + 5] = 0.0f;
    ck_assert_ok(subsae_sae_get_param(s, SUBSAE_PARAM_W_DEC, before, 16 * 8));
    /* A diverging step (absurd input) leaves the weights as they were. */
    for (int64_t i = 0; i < 4 * d; i++)
        x[i] = 3e38f;
    ck_assert_status(subsae_trainer_step(t, x, d, NULL, 0, 4), SUBSAE_E_NONFINITE);
    ck_assert_int_eq(subsae_last_error_reason(), SUBSAE_REASON_DIVERGED);
    ck_assert_ok(subsae_sae_get_param(s, SUBSAE_PARAM_W_DEC, after, 16 * 8));
    ck_assert_mem_eq(before, after, sizeof before);
    ck_assert_ok(subsae_trainer_metrics(t, m, 4));
    subsae_trainer_free(t);
    subsae_buffer_free(b);
    subsae_buffer_free(b5);
    free(x);
}
END_TEST

START_TEST(failed_allocations_leave_nothing)
{
    const int64_t n = 50, d = 6;
    float *x = harness_normal_rows(8, n, d, 0.0);
    subsae_buffer *b = harness_wrap_copy(x, n, d);
    char dir[512];
    harness_tmp_path("ck-alloc", dir, sizeof dir);
    for (int64_t fail = 0;; fail++) {
        subsae__alloc_fail_after(fail);
        subsae_trainer *t = NULL, *back = NULL;
        int rc = subsae_trainer_create(&t);
        if (!rc)
            rc = subsae_trainer_set_int(t, SUBSAE_TRAIN_FEATURES, 12);
        if (!rc)
            rc = subsae_trainer_set_int(t, SUBSAE_TRAIN_INIT, SUBSAE_INIT_RANDOM);
        if (!rc)
            rc = subsae_trainer_set_int(t, SUBSAE_TRAIN_K, 2);
        if (!rc)
            rc = subsae_trainer_set_int(t, SUBSAE_TRAIN_BATCH, 8);
        if (!rc)
            rc = subsae_trainer_init(t, b, NULL);
        if (!rc)
            rc = subsae_trainer_fit(t, b, NULL, 16);
        if (!rc)
            rc = subsae_trainer_save_checkpoint(t, dir);
        if (!rc)
            rc = subsae_trainer_load_checkpoint(dir, &back);
        subsae__alloc_fail_after(-1);
        subsae_trainer_free(t);
        subsae_trainer_free(back);
        if (rc == SUBSAE_OK)
            break;
        ck_assert_msg(rc == SUBSAE_E_NOMEM, "allocation %lld: %d %s", (long long)fail, rc,
                      subsae_last_error());
        ck_assert_int_lt(fail, 1000);
    }
    subsae_buffer_free(b);
    free(x);
}
END_TEST

/* ---- ground truth -------------------------------------------------------------- */

/* Mean over the true atoms of the best cosine similarity with a decoder row. */
static double mean_max_cosine(const float *atoms, int64_t n_atoms, const subsae_sae *s)
{
    int64_t m, d;
    ck_assert_ok(subsae_sae_get_int(s, SUBSAE_SAE_D_SAE, &m));
    ck_assert_ok(subsae_sae_get_int(s, SUBSAE_SAE_D_OUT, &d));
    float *w = malloc((size_t)(m * d) * 4);
    ck_assert_ok(subsae_sae_get_param(s, SUBSAE_PARAM_W_DEC, w, m * d));
    double total = 0.0;
    for (int64_t a = 0; a < n_atoms; a++) {
        double best = -1.0;
        for (int64_t f = 0; f < m; f++) {
            double nn = subsae__sumsq(w + f * d, d);
            double c = nn > 0 ? subsae__dot(atoms + a * d, w + f * d, d) / sqrt(nn) : 0.0;
            best = c > best ? c : best;
        }
        total += best;
    }
    free(w);
    return total / (double)n_atoms;
}

static double recover(int init, const float *x, int64_t n, int64_t d, const float *atoms,
                      int64_t n_atoms, int64_t *subspace_dim)
{
    subsae_buffer *b = harness_wrap_copy(x, n, d);
    subsae_trainer *t = new_trainer(2 * n_atoms, 3, init, 256, 1);
    ck_assert_ok(subsae_trainer_set_double(t, SUBSAE_TRAIN_LR, 3e-3));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_THREADS, 1));
    ck_assert_ok(subsae_trainer_init(t, b, NULL));
    ck_assert_ok(subsae_trainer_fit(t, b, NULL, 10 * n));
    double mmcs = mean_max_cosine(atoms, n_atoms, subsae_trainer_sae(t));
    double m[SUBSAE_METRIC_COUNT];
    ck_assert_ok(subsae_trainer_metrics(t, m, SUBSAE_METRIC_COUNT));
    ck_assert_double_lt(m[SUBSAE_METRIC_FVU], 0.2);
    if (subspace_dim)
        ck_assert_ok(subsae_trainer_get_int(t, SUBSAE_TRAIN_SUBSPACE_DIM, subspace_dim));
    subsae_trainer_free(t);
    subsae_buffer_free(b);
    return mmcs;
}

START_TEST(recovers_known_dictionary)
{
    /* 48 unit atoms in a 19-dimensional subspace of R^32 (0.6 d), three
     * per row with coefficients in [0.5, 1.5], plus a constant offset. */
    const int64_t n = 16384, d = 32, r = 19, n_atoms = 48;
    struct subsae__synth_spec spec = {.rows = n, .dim = d, .atoms = n_atoms, .subspace_dim = r,
                                      .active = 3, .coef_min = 0.5, .coef_max = 1.5,
                                      .offset = 1.0, .seed = 1};
    float *x = malloc((size_t)(n * d) * 4), *atoms = malloc((size_t)(n_atoms * d) * 4);
    ck_assert_ok(subsae__synth(&spec, x, atoms));
    subsae_set_num_threads(1);
    int64_t found = 0;
    double asi = recover(SUBSAE_INIT_ACTIVE_SUBSPACE, x, n, d, atoms, n_atoms, &found);
    double random = recover(SUBSAE_INIT_RANDOM, x, n, d, atoms, n_atoms, NULL);
    fprintf(stderr,
            "ground truth: %lld atoms in a %lld-dim subspace of R^%lld; subspace estimate "
            "%lld; MMCS %.4f (active-subspace init), %.4f (random init)\n",
            (long long)n_atoms, (long long)r, (long long)d, (long long)found, asi, random);
    ck_assert_int_eq(found, r); /* the effective rank at 99 % is the true dimension */
    ck_assert_double_ge(asi, 0.9);
    ck_assert_double_ge(random, 0.9);
    free(x);
    free(atoms);
}
END_TEST

/* ---- the finding on real attention outputs ------------------------------------- */

struct run_result {
    double dead_fraction, explained_variance, train_ev, l0, seconds;
    int64_t subspace_dim;
};

static void real_data_run(int init, const subsae_buffer *train, const subsae_buffer *eval,
                          int64_t features, int64_t epochs, struct run_result *out)
{
    const int64_t batch = 4096;
    const int64_t epoch = subsae_buffer_rows(train) / batch * batch;
    subsae_trainer *t = new_trainer(features, 8, init, batch, 0);
    ck_assert_ok(subsae_trainer_set_double(t, SUBSAE_TRAIN_LR, 1e-3));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_DEAD_WINDOW, epoch));
    double started = omp_get_wtime();
    ck_assert_ok(subsae_trainer_init(t, train, NULL));
    ck_assert_ok(subsae_trainer_fit(t, train, NULL, epochs * epoch));
    out->seconds = omp_get_wtime() - started;
    double m[SUBSAE_METRIC_COUNT], e[SUBSAE_METRIC_COUNT];
    ck_assert_ok(subsae_trainer_metrics(t, m, SUBSAE_METRIC_COUNT));
    ck_assert_ok(subsae_sae_evaluate(subsae_trainer_sae(t), eval, NULL, e, SUBSAE_METRIC_COUNT));
    ck_assert_double_eq(m[SUBSAE_METRIC_TOKENS], (double)(epochs * epoch));
    out->dead_fraction = m[SUBSAE_METRIC_DEAD_FRACTION];
    out->train_ev = m[SUBSAE_METRIC_EXPLAINED_VARIANCE];
    out->explained_variance = e[SUBSAE_METRIC_EXPLAINED_VARIANCE];
    out->l0 = e[SUBSAE_METRIC_L0];
    ck_assert_ok(subsae_trainer_get_int(t, SUBSAE_TRAIN_SUBSPACE_DIM, &out->subspace_dim));
    subsae_trainer_free(t);
}

START_TEST(asi_keeps_features_alive_on_attention_outputs)
{
    char path[1024];
    if (!harness_shared_file("L2_attn_out_131k.npy", path, sizeof path)) {
        harness_skip("asi_keeps_features_alive_on_attention_outputs", "no shared data");
        return;
    }
    subsae_buffer *all, *train, *eval;
    ck_assert_ok(subsae_buffer_open(path, NULL, &all));
    /* The recipe of the reference: d_sae 32768, k 8, lr 1e-3, batch 4096,
     * 2 epochs, dead window one epoch, free decoder norms, scale search,
     * same seed. Under sanitizers: a smaller run of the same code; under
     * valgrind (some 50 times slower) smaller still: 16384 rows, 256
     * features. */
    const bool small = harness_slow(), tiny = harness_valgrind();
    const int64_t rows = subsae_buffer_rows(all), n_train = tiny ? 16384 : rows * 7 / 8;
    const int64_t n_eval = tiny ? 4096 : rows - n_train;
    ck_assert_ok(subsae_buffer_view(all, 0, n_train, &train));
    ck_assert_ok(subsae_buffer_view(all, n_train, n_eval, &eval));
    const int64_t features = tiny ? 256 : small ? 2048 : 32768, epochs = small ? 1 : 2;
    struct run_result random, asi;
    real_data_run(SUBSAE_INIT_RANDOM, train, eval, features, epochs, &random);
    real_data_run(SUBSAE_INIT_ACTIVE_SUBSPACE, train, eval, features, epochs, &asi);
    fprintf(stderr,
            "real data (%s, %lld x %lld, d_sae %lld, k 8, %lld epochs):\n"
            "  random init:          dead %5.2f%%, eval EV %.4f, train EV %.4f, L0 %.2f, "
            "%.1f s\n"
            "  active-subspace r=%lld: dead %5.2f%%, eval EV %.4f, train EV %.4f, L0 %.2f, "
            "%.1f s\n",
            path, (long long)rows, (long long)subsae_buffer_dim(all), (long long)features,
            (long long)epochs, 100 * random.dead_fraction, random.explained_variance,
            random.train_ev, random.l0, random.seconds, (long long)asi.subspace_dim,
            100 * asi.dead_fraction, asi.explained_variance, asi.train_ev, asi.l0, asi.seconds);
    ck_assert_int_ge(asi.subspace_dim, 30);
    ck_assert_int_le(asi.subspace_dim, 50);
    if (!small) {
        ck_assert_double_ge(random.dead_fraction, 3 * asi.dead_fraction);
        ck_assert_double_le(asi.dead_fraction, 0.08);
        ck_assert_double_ge(asi.explained_variance, random.explained_variance);
    }
    if (!tiny)
        ck_assert_double_gt(asi.explained_variance, 0.5);
    subsae_buffer_free(train);
    subsae_buffer_free(eval);
    subsae_buffer_free(all);
}
END_TEST

SUBSAE_SUITE(trainer)
{
    Suite *s = suite_create("trainer");
    TCase *tc = harness_case(s, "gradients", 30);
    tcase_add_test(tc, gradients_free_decoder);
    tcase_add_test(tc, gradients_unit_decoder);
    tcase_add_test(tc, gradients_transcoder);
    tcase_add_test(tc, gradients_parallel_paths);
    tc = harness_case(s, "training", 60);
    tcase_add_test(tc, same_seed_same_bits);
    tcase_add_test(tc, resume_is_bit_identical);
    tcase_add_test(tc, checkpoint_errors);
    tcase_add_test(tc, options_round_trip_and_validate);
    tcase_add_test(tc, metrics_and_dead_features);
    tcase_add_test(tc, bad_input);
    tcase_add_test(tc, failed_allocations_leave_nothing);
    tc = harness_case(s, "ground_truth", 60);
    tcase_add_test(tc, recovers_known_dictionary);
    tc = harness_case(s, "real_data", 600);
    tcase_add_test(tc, asi_keeps_features_alive_on_attention_outputs);
    return s;
}
