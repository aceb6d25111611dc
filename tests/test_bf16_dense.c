/* Training at bf16 beyond TopK's fused path (lib/trainer_bf16_dense.c):
 * ReLU, JumpReLU, gated, BatchTopK (also Matryoshka), TopK with AuxK and a
 * ReLU skip transcoder, each on a small synthetic problem with a known
 * dictionary:
 *  - bf16 trains (the reconstruction loss of the last step is below 0.95 of
 *    the first step's) and ends within 0.005 of fp32's explained variance;
 *    the disagreement metric is a small fraction;
 *  - the same bits for 1 and 2 threads, and a resumed checkpoint continues
 *    bit for bit;
 *  - `subsae train --activation relu --precision bf16` runs, and under
 *    ONEDNN_MAX_CPU_ISA=AVX2 `auto` trains at fp32 while `bf16` is refused
 *    with a sentence.
 * Every bf16 run skips, saying why, where the CPU has no native bf16. */
#include "harness.h"

#include "encoder_gemm.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { DIM = 32, FEATURES = 256, K = 4, BATCH = 500, TOKENS = 6000, STEPS = 40 };

struct config {
    const char *name;
    int activation;
    double auxk;
    bool transcoder, matryoshka;
};

static const struct config configs[] = {
    {"relu", SUBSAE_ACT_RELU, 0.0, false, false},
    {"jumprelu", SUBSAE_ACT_JUMPRELU, 0.0, false, false},
    {"gated", SUBSAE_ACT_GATED, 0.0, false, false},
    {"batchtopk", SUBSAE_ACT_BATCHTOPK, 0.0, false, false},
    {"batchtopk matryoshka", SUBSAE_ACT_BATCHTOPK, 0.0, false, true},
    {"topk + auxk, dead features", SUBSAE_ACT_TOPK, 1.0 / 32, false, false},
    {"relu skip transcoder", SUBSAE_ACT_RELU, 0.0, true, false},
};
enum { CONFIGS = sizeof configs / sizeof configs[0] };

static bool native_or_skip(const char *test)
{
    if (subsae__bf16_native())
        return true;
    harness_skip(test, "the CPU has no native bf16 product (AVX512_BF16 or AMX)");
    return false;
}

static subsae_trainer *configured(const struct config *c, int64_t precision, int threads)
{
    subsae_trainer *t;
    ck_assert_ok(subsae_trainer_create(&t));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_FEATURES, FEATURES));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_K, K));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_BATCH, BATCH));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_INIT_SAMPLE, 1000));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_WARMUP_STEPS, 2));
    ck_assert_ok(subsae_trainer_set_double(t, SUBSAE_TRAIN_LR, 1e-2));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_ACTIVATION, c->activation));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_THREADS, threads));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_PRECISION, precision));
    if (c->auxk > 0) {
        /* Features that miss a step are dead: AuxK runs from step 2. */
        ck_assert_ok(subsae_trainer_set_double(t, SUBSAE_TRAIN_AUXK_COEF, c->auxk));
        ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_AUXK_K, 16));
        ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_DEAD_WINDOW, BATCH));
    }
    if (c->matryoshka) {
        const int64_t widths[3] = {32, 96, FEATURES};
        ck_assert_ok(subsae_trainer_set_matryoshka(t, widths, 3));
    }
    if (c->transcoder)
        ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_SKIP, 1));
    return t;
}

/* The synthetic rows. */
static subsae_buffer *data(void)
{
    subsae_buffer *b;
    ck_assert_ok(subsae_synth(DIM, DIM, FEATURES, K, TOKENS, 21, &b, NULL));
    return b;
}

/* A transcoder's data: each token's K of FEATURES codes (coefficients in
 * [0.5, 1.5]) through two random dictionaries, the input's and the
 * target's. With more codes than dimensions no linear map (the initial
 * skip path and decoder) gives the target from the input: the features
 * have to learn the codes. */
static void transcoder_data(subsae_buffer **in, subsae_buffer **target)
{
    float *atoms = harness_normal_rows(31, 2 * FEATURES, DIM, 0.0);
    float *x = calloc((size_t)TOKENS * DIM, sizeof *x), *y = calloc((size_t)TOKENS * DIM, sizeof *y);
    ck_assert(atoms && x && y);
    uint64_t state = 7;
    for (int64_t i = 0; i < TOKENS; i++)
        for (int j = 0; j < K; j++) {
            state = state * 6364136223846793005u + 1442695040888963407u;
            const int64_t f = (int64_t)(state >> 33) % FEATURES;
            const float a = 0.5f + (float)((state >> 11) & 1023) / 1024.0f;
            for (int64_t c = 0; c < DIM; c++) {
                x[i * DIM + c] += a * atoms[f * DIM + c];
                y[i * DIM + c] += a * atoms[(FEATURES + f) * DIM + c];
            }
        }
    *in = harness_wrap_copy(x, TOKENS, DIM);
    *target = harness_wrap_copy(y, TOKENS, DIM);
    free(atoms);
    free(x);
    free(y);
}

/* The rows of a configuration (and a transcoder's target, else NULL). */
static subsae_buffer *rows_of(const struct config *c, subsae_buffer **target)
{
    *target = NULL;
    if (!c->transcoder)
        return data();
    subsae_buffer *in;
    transcoder_data(&in, target);
    return in;
}

/* A trained model's state as bytes: every parameter, the trainer's
 * metrics and the model's explained variance on the data. */
struct state {
    float *p[7];
    int64_t n[7];
    double metrics[SUBSAE_METRIC_COUNT], eval[SUBSAE_METRIC_COUNT];
    double first_loss, aux_loss; /* train(): after the first step, the sixth */
};

static void take(const subsae_trainer *t, const subsae_buffer *in, const subsae_buffer *target,
                 struct state *out)
{
    const subsae_sae *sae = subsae_trainer_sae(t);
    for (int p = 0; p < 7; p++) {
        out->n[p] = subsae_sae_param_size(sae, p);
        out->p[p] = NULL;
        if (out->n[p] <= 0)
            continue;
        out->p[p] = malloc((size_t)out->n[p] * sizeof(float));
        ck_assert(out->p[p] != NULL);
        ck_assert_ok(subsae_sae_get_param(sae, p, out->p[p], out->n[p]));
    }
    ck_assert_ok(subsae_trainer_metrics(t, out->metrics, SUBSAE_METRIC_COUNT));
    ck_assert_ok(subsae_sae_evaluate(sae, in, target, out->eval, SUBSAE_METRIC_COUNT));
}

static bool same_double(double a, double b)
{
    return (isnan(a) && isnan(b)) || a == b;
}

static void expect_same(const struct state *a, const struct state *b, const char *config,
                        const char *what)
{
    for (int p = 0; p < 7; p++)
        ck_assert_msg(a->n[p] == b->n[p] &&
                          (a->n[p] <= 0 || memcmp(a->p[p], b->p[p],
                                                  (size_t)a->n[p] * sizeof(float)) == 0),
                      "%s, %s: parameter %d differs", config, what, p);
    for (int i = 0; i < SUBSAE_METRIC_COUNT; i++) {
        ck_assert_msg(same_double(a->metrics[i], b->metrics[i]), "%s, %s: metric %d: %.17g vs %.17g",
                      config, what, i, a->metrics[i], b->metrics[i]);
        ck_assert_msg(same_double(a->eval[i], b->eval[i]), "%s, %s: evaluation %d differs",
                      config, what, i);
    }
}

static void release(struct state *x)
{
    for (int p = 0; p < 7; p++)
        free(x->p[p]);
}

/* Init and fit `tokens` at `precision` on `threads` threads. */
static void train(const struct config *c, const subsae_buffer *in, const subsae_buffer *target,
                  int64_t precision, int threads, int64_t tokens, struct state *out)
{
    subsae_trainer *t = configured(c, precision, threads);
    ck_assert_ok(subsae_trainer_init(t, in, target));
    int64_t used;
    ck_assert_ok(subsae_trainer_get_int(t, SUBSAE_TRAIN_PRECISION, &used));
    ck_assert_int_eq(used, precision == SUBSAE_PRECISION_FP32 ? SUBSAE_PRECISION_FP32
                                                              : SUBSAE_PRECISION_BF16);
    /* The reconstruction loss after the first step, AuxK's term after the
     * sixth. */
    double m[SUBSAE_METRIC_COUNT];
    ck_assert_ok(subsae_trainer_fit(t, in, target, BATCH));
    ck_assert_ok(subsae_trainer_metrics(t, m, SUBSAE_METRIC_COUNT));
    out->first_loss = m[SUBSAE_METRIC_LOSS_MSE];
    ck_assert_ok(subsae_trainer_fit(t, in, target, 5 * BATCH));
    ck_assert_ok(subsae_trainer_metrics(t, m, SUBSAE_METRIC_COUNT));
    out->aux_loss = m[SUBSAE_METRIC_LOSS_AUX];
    ck_assert_ok(subsae_trainer_fit(t, in, target, tokens - 6 * BATCH));
    take(t, in, target, out);
    subsae_trainer_free(t);
}

/* AUTO resolves to bf16 for the configuration; it trains, ends near
 * fp32, and gives the same bits on 1 and 2 threads. */
START_TEST(bf16_trains_like_fp32_with_same_bits)
{
    const struct config *c = &configs[_i];
    if (!native_or_skip("bf16_trains_like_fp32_with_same_bits"))
        return;
    subsae_buffer *target, *in = rows_of(c, &target);
    const int64_t tokens = STEPS * BATCH;
    struct state fp32, one, two;
    train(c, in, target, SUBSAE_PRECISION_FP32, 2, tokens, &fp32);
    train(c, in, target, SUBSAE_PRECISION_AUTO, 1, tokens, &one);
    train(c, in, target, SUBSAE_PRECISION_BF16, 2, tokens, &two);
    const double ev32 = fp32.eval[SUBSAE_METRIC_EXPLAINED_VARIANCE];
    const double ev16 = two.eval[SUBSAE_METRIC_EXPLAINED_VARIANCE];
    const double dis = two.metrics[SUBSAE_METRIC_BF16_DISAGREEMENT];
    const double loss = two.metrics[SUBSAE_METRIC_LOSS_MSE];
    ck_assert_msg(loss < 0.95 * two.first_loss, "%s: bf16 reconstruction loss %g after the first step, %g at last",
                  c->name, two.first_loss, loss);
    ck_assert_msg(fabs(ev16 - ev32) <= 0.005, "%s: explained variance %.5f (bf16) vs %.5f (fp32)",
                  c->name, ev16, ev32);
    ck_assert_msg(dis >= 0.0 && dis < 0.05, "%s: disagreement %g", c->name, dis);
    ck_assert_msg(isnan(fp32.metrics[SUBSAE_METRIC_BF16_DISAGREEMENT]), "%s: fp32 disagreement",
                  c->name);
    if (c->auxk > 0)
        ck_assert_msg(two.aux_loss > 0.0, "%s: AuxK did not run in step 6 (dead %g)", c->name,
                      two.metrics[SUBSAE_METRIC_DEAD_FEATURES]);
    expect_same(&one, &two, c->name, "1 and 2 threads");
    release(&fp32);
    release(&one);
    release(&two);
    subsae_buffer_free(target);
    subsae_buffer_free(in);
}
END_TEST

START_TEST(bf16_resumes_bit_for_bit)
{
    const struct config *c = &configs[_i];
    if (!native_or_skip("bf16_resumes_bit_for_bit"))
        return;
    subsae_buffer *target, *in = rows_of(c, &target);
    const int64_t half = STEPS / 4 * BATCH;
    subsae_trainer *straight = configured(c, SUBSAE_PRECISION_BF16, 2);
    ck_assert_ok(subsae_trainer_init(straight, in, target));
    ck_assert_ok(subsae_trainer_fit(straight, in, target, 2 * half));
    subsae_trainer *first = configured(c, SUBSAE_PRECISION_BF16, 2);
    ck_assert_ok(subsae_trainer_init(first, in, target));
    ck_assert_ok(subsae_trainer_fit(first, in, target, half));
    char dir[512];
    harness_tmp_path("ck-bf16-dense", dir, sizeof dir);
    ck_assert_ok(subsae_trainer_save_checkpoint(first, dir));
    subsae_trainer_free(first);
    subsae_trainer *resumed;
    ck_assert_ok(subsae_trainer_load_checkpoint(dir, &resumed));
    ck_assert_ok(subsae_trainer_fit(resumed, in, target, half));
    struct state a, b;
    take(straight, in, target, &a);
    take(resumed, in, target, &b);
    expect_same(&a, &b, c->name, "resumed");
    release(&a);
    release(&b);
    subsae_trainer_free(straight);
    subsae_trainer_free(resumed);
    subsae_buffer_free(target);
    subsae_buffer_free(in);
}
END_TEST

/* `subsae train --activation relu|gated` at bf16, and under AVX2. */
START_TEST(cli_trains_relu_at_bf16)
{
    subsae_buffer *b = data();
    char path[600], dir[600], cmd[4096], out[600], err[640];
    harness_tmp_path("dense.npy", path, sizeof path);
    ck_assert_ok(subsae_buffer_save_npy(b, path, SUBSAE_DTYPE_F32));
    subsae_buffer_free(b);
    static const char *runs[4][3] = {{"", "relu", "bf16"},
                                     {"", "gated", "auto"},
                                     {"ONEDNN_MAX_CPU_ISA=AVX2 ", "relu", "auto"},
                                     {"ONEDNN_MAX_CPU_ISA=AVX2 ", "relu", "bf16"}};
    const bool native = subsae__bf16_native();
    for (int i = 0; i < 4; i++) {
        const bool avx2 = runs[i][0][0] != '\0';
        if (!avx2 && !native)
            continue;
        char name[64];
        snprintf(name, sizeof name, "dense-cli-%d.json", i);
        harness_tmp_path(name, out, sizeof out);
        snprintf(err, sizeof err, "%s.err", out);
        char dirname[64];
        snprintf(dirname, sizeof dirname, "dense-cli-%d", i);
        harness_tmp_path(dirname, dir, sizeof dir);
        snprintf(cmd, sizeof cmd,
                 "%s'%s/bin/subsae' train '%s' --features 64 --k 4 --batch 500 --activation %s "
                 "--precision %s --out '%s' --overwrite --quiet --json > '%s' 2> '%s'",
                 runs[i][0], harness_build_dir(), path, runs[i][1], runs[i][2], dir, out, err);
        const int status = harness_run(cmd);
        if (avx2 && !strcmp(runs[i][2], "bf16")) {
            ck_assert_msg(status != 0, "--precision bf16 under AVX2 was not refused");
            FILE *f = fopen(err, "r");
            ck_assert(f != NULL);
            char line[1024] = "";
            ck_assert(fgets(line, sizeof line, f) != NULL);
            fclose(f);
            ck_assert_msg(strstr(line, "bf16") && strstr(line, "AVX512_BF16"),
                          "the refusal does not say why: %s", line);
            continue;
        }
        ck_assert_msg(status == 0, "%s failed", cmd);
        json_t *j = harness_read_json(name);
        ck_assert_str_eq(json_string_value(json_object_get(j, "precision")),
                         avx2 ? "fp32" : "bf16");
        json_decref(j);
    }
}
END_TEST

SUBSAE_SUITE(bf16_dense)
{
    Suite *s = suite_create("bf16_dense");
    TCase *tc = harness_case(s, "bf16_dense", 120);
    tcase_add_loop_test(tc, bf16_trains_like_fp32_with_same_bits, 0, CONFIGS);
    tcase_add_loop_test(tc, bf16_resumes_bit_for_bit, 0, CONFIGS);
    tcase_add_test(tc, cli_trains_relu_at_bf16);
    return s;
}
