/* Training at bf16 (SUBSAE_TRAIN_PRECISION, lib/trainer_bf16.c):
 *  - the same bits for 1 and 2 threads and across runs, dense and sparse
 *    Adam, and a resumed checkpoint continues bit for bit (the bf16 copy
 *    of W_enc is rebuilt from the fp32 master);
 *  - AUTO resolves to bf16 for TopK, TopK with AuxK and ReLU on a CPU
 *    with a native bf16 product; an explicit bf16 elsewhere is refused
 *    (the other configurations: test_bf16_dense.c);
 *  - under ONEDNN_MAX_CPU_ISA=AVX2 (no bf16 hardware) `subsae train
 *    --precision auto` trains at fp32 and `--precision bf16` is refused;
 *  - on the trainer recipe (L2_attn_out_131k, d_sae 32,768, k 8, lr 1e-3,
 *    batch 4,096, 2 epochs, ASI) bf16 explains the held-out variance
 *    within 0.003 of fp32 with a dead fraction within 1.5 points.
 * Every bf16 run skips, saying why, where the CPU has no native bf16. */
#include "harness.h"

#include "encoder_gemm.h"
#include "dtype.h"
#include "kernels.h"

#include <jansson.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool native_or_skip(const char *test)
{
    if (subsae__bf16_native())
        return true;
    harness_skip(test, "the CPU has no native bf16 product (AVX512_BF16 or AMX)");
    return false;
}

static subsae_trainer *small_trainer(int64_t precision, bool sparse)
{
    subsae_trainer *t;
    ck_assert_ok(subsae_trainer_create(&t));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_FEATURES, 700));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_K, 6));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_BATCH, 600));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_INIT_SAMPLE, 1000));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_SPARSE_ADAM, sparse));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_WARMUP_STEPS, 2));
    ck_assert_ok(subsae_trainer_set_double(t, SUBSAE_TRAIN_LR, 2e-3));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_PRECISION, precision));
    return t;
}

struct params {
    float *p[4];
    int64_t n[4];
    double metrics[SUBSAE_METRIC_COUNT];
};

static void take(const subsae_trainer *t, struct params *out)
{
    const subsae_sae *sae = subsae_trainer_sae(t);
    for (int p = 0; p < 4; p++) {
        out->n[p] = subsae_sae_param_size(sae, p);
        out->p[p] = malloc((size_t)out->n[p] * sizeof(float));
        ck_assert(out->p[p] != NULL);
        ck_assert_ok(subsae_sae_get_param(sae, p, out->p[p], out->n[p]));
    }
    ck_assert_ok(subsae_trainer_metrics(t, out->metrics, SUBSAE_METRIC_COUNT));
}

static void expect_same(const struct params *a, const struct params *b, const char *what)
{
    for (int p = 0; p < 4; p++)
        ck_assert_msg(a->n[p] == b->n[p] &&
                          memcmp(a->p[p], b->p[p], (size_t)a->n[p] * sizeof(float)) == 0,
                      "%s: parameter %d differs", what, p);
    for (int i = 0; i < SUBSAE_METRIC_COUNT; i++)
        ck_assert_msg((isnan(a->metrics[i]) && isnan(b->metrics[i])) ||
                          a->metrics[i] == b->metrics[i],
                      "%s: metric %d: %.17g vs %.17g", what, i, a->metrics[i], b->metrics[i]);
}

static void release(struct params *x)
{
    for (int p = 0; p < 4; p++)
        free(x->p[p]);
}

/* The step's vectorised rounding (kernels.c) gives encoder_gemm.c's bits:
 * every sign, exponent and high mantissa with the low halves that decide
 * the rounding (ties, NaN payloads, infinities, subnormals). */
START_TEST(bf16_rounding_matches_the_conversion)
{
    static const uint32_t lows[] = {0x0000, 0x0001, 0x3fff, 0x7fff, 0x8000,
                                    0x8001, 0xbfff, 0xc000, 0xffff, 0x1234};
    enum { LOWS = sizeof lows / sizeof lows[0], N = 65536 * LOWS };
    float *x = malloc(N * sizeof *x);
    uint16_t *a = malloc(N * sizeof *a), *b = malloc(N * sizeof *b);
    ck_assert(x && a && b);
    for (uint32_t hi = 0; hi < 65536; hi++)
        for (uint32_t l = 0; l < LOWS; l++) {
            const uint32_t u = hi << 16 | lows[l];
            memcpy(&x[hi * LOWS + l], &u, sizeof u);
        }
    for (int64_t off = 0; off < 3; off++) { /* unaligned starts and tails too */
        for (int64_t i = 0; i < N - 2 * off; i++)
            a[i] = subsae__f32_to_bf16(x[off + i]);
        subsae__bf16_round(b, x + off, N - 2 * off);
        ck_assert(memcmp(a, b, (size_t)(N - 2 * off) * sizeof *a) == 0);
    }
    free(x);
    free(a);
    free(b);
}
END_TEST

/* Init, then fit `tokens` on `threads` threads. */
static void train(const subsae_buffer *in, bool sparse, int threads, int64_t tokens,
                  struct params *out)
{
    subsae_trainer *t = small_trainer(SUBSAE_PRECISION_BF16, sparse);
    ck_assert_ok(subsae_trainer_init(t, in, NULL));
    int64_t used;
    ck_assert_ok(subsae_trainer_get_int(t, SUBSAE_TRAIN_PRECISION, &used));
    ck_assert_int_eq(used, SUBSAE_PRECISION_BF16);
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_THREADS, threads));
    ck_assert_ok(subsae_trainer_fit(t, in, NULL, tokens));
    take(t, out);
    subsae_trainer_free(t);
}

START_TEST(bf16_same_bits_for_threads_and_runs)
{
    if (!native_or_skip("bf16_same_bits_for_threads_and_runs"))
        return;
    const int64_t n = 3000, d = 40;
    float *x = harness_normal_rows(11, n, d, 0.2);
    subsae_buffer *in = harness_wrap_copy(x, n, d);
    for (int sparse = 0; sparse < 2; sparse++) {
        struct params one, two, again;
        train(in, sparse, 1, 6 * 600, &one);
        train(in, sparse, 2, 6 * 600, &two);
        train(in, sparse, 2, 6 * 600, &again);
        const double dis = one.metrics[SUBSAE_METRIC_BF16_DISAGREEMENT];
        ck_assert_msg(dis >= 0.0 && dis < 0.05, "disagreement %g", dis);
        expect_same(&one, &two, sparse ? "sparse Adam, 1 and 2 threads" : "1 and 2 threads");
        expect_same(&two, &again, sparse ? "sparse Adam, two runs" : "two runs");
        release(&one);
        release(&two);
        release(&again);
    }
    subsae_buffer_free(in);
    free(x);
}
END_TEST

START_TEST(bf16_resume_bit_for_bit)
{
    if (!native_or_skip("bf16_resume_bit_for_bit"))
        return;
    const int64_t n = 3000, d = 40, half = 5 * 600;
    float *x = harness_normal_rows(12, n, d, -0.1);
    subsae_buffer *in = harness_wrap_copy(x, n, d);
    for (int sparse = 0; sparse < 2; sparse++) {
        subsae_trainer *straight = small_trainer(SUBSAE_PRECISION_AUTO, sparse);
        ck_assert_ok(subsae_trainer_init(straight, in, NULL));
        ck_assert_ok(subsae_trainer_fit(straight, in, NULL, 2 * half));
        subsae_trainer *first = small_trainer(SUBSAE_PRECISION_AUTO, sparse);
        ck_assert_ok(subsae_trainer_init(first, in, NULL));
        ck_assert_ok(subsae_trainer_fit(first, in, NULL, half));
        char dir[512];
        harness_tmp_path(sparse ? "ck-bf16-sparse" : "ck-bf16", dir, sizeof dir);
        ck_assert_ok(subsae_trainer_save_checkpoint(first, dir));
        subsae_trainer_free(first);
        subsae_trainer *resumed;
        ck_assert_ok(subsae_trainer_load_checkpoint(dir, &resumed));
        int64_t used;
        ck_assert_ok(subsae_trainer_get_int(resumed, SUBSAE_TRAIN_PRECISION, &used));
        ck_assert_int_eq(used, SUBSAE_PRECISION_BF16);
        ck_assert_ok(subsae_trainer_fit(resumed, in, NULL, half));
        struct params a, b;
        take(straight, &a);
        take(resumed, &b);
        expect_same(&a, &b, sparse ? "sparse Adam, resumed" : "resumed");
        release(&a);
        release(&b);
        subsae_trainer_free(straight);
        subsae_trainer_free(resumed);
    }
    subsae_buffer_free(in);
    free(x);
}
END_TEST

/* What AUTO and an explicit bf16 become for each configuration. */
START_TEST(bf16_resolution)
{
    const int64_t n = 800, d = 16;
    float *x = harness_normal_rows(13, n, d, 0.0);
    subsae_buffer *in = harness_wrap_copy(x, n, d);
    const bool native = subsae__bf16_native();
    struct {
        int activation;
        double auxk;
    } cases[3] = {{SUBSAE_ACT_TOPK, 0.0}, {SUBSAE_ACT_TOPK, 1.0 / 32}, {SUBSAE_ACT_RELU, 0.0}};
    for (int c = 0; c < 3; c++) {
        const bool can = native;
        for (int64_t want = SUBSAE_PRECISION_FP32; want <= SUBSAE_PRECISION_AUTO; want++) {
            subsae_trainer *t;
            ck_assert_ok(subsae_trainer_create(&t));
            ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_FEATURES, 64));
            ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_K, 4));
            ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_BATCH, 100));
            ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_INIT, SUBSAE_INIT_RANDOM));
            ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_ACTIVATION, cases[c].activation));
            ck_assert_ok(subsae_trainer_set_double(t, SUBSAE_TRAIN_AUXK_COEF, cases[c].auxk));
            ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_PRECISION, want));
            if (want == SUBSAE_PRECISION_BF16 && !can) {
                ck_assert_status(subsae_trainer_init(t, in, NULL), SUBSAE_E_UNSUPPORTED);
                ck_assert(strstr(subsae_last_error(), "bf16") != NULL);
                subsae_trainer_free(t);
                continue;
            }
            ck_assert_ok(subsae_trainer_init(t, in, NULL));
            int64_t used;
            ck_assert_ok(subsae_trainer_get_int(t, SUBSAE_TRAIN_PRECISION, &used));
            const int64_t expect =
                want == SUBSAE_PRECISION_FP32 || !can ? SUBSAE_PRECISION_FP32
                                                      : SUBSAE_PRECISION_BF16;
            ck_assert_int_eq(used, expect);
            ck_assert_ok(subsae_trainer_step(t, x, d, NULL, 0, 100));
            double m[SUBSAE_METRIC_COUNT];
            ck_assert_ok(subsae_trainer_metrics(t, m, SUBSAE_METRIC_COUNT));
            ck_assert(used == SUBSAE_PRECISION_BF16 ? isfinite(m[SUBSAE_METRIC_BF16_DISAGREEMENT])
                                                    : isnan(m[SUBSAE_METRIC_BF16_DISAGREEMENT]));
            if (used == SUBSAE_PRECISION_BF16 && c == 0) {
                /* AuxK switched on after init trains at bf16 too. */
                ck_assert_ok(subsae_trainer_set_double(t, SUBSAE_TRAIN_AUXK_COEF, 0.03));
                ck_assert_ok(subsae_trainer_step(t, x, d, NULL, 0, 100));
                ck_assert_ok(subsae_trainer_metrics(t, m, SUBSAE_METRIC_COUNT));
                ck_assert(isfinite(m[SUBSAE_METRIC_BF16_DISAGREEMENT]));
            }
            subsae_trainer_free(t);
        }
    }
    subsae_buffer_free(in);
    free(x);
}
END_TEST

/* `subsae train` with oneDNN limited to AVX2 (no bf16 hardware). */
START_TEST(auto_is_fp32_without_bf16_hardware)
{
    const int64_t n = 1200, d = 16;
    float *x = harness_normal_rows(14, n, d, 0.1);
    subsae_buffer *b = harness_wrap_copy(x, n, d);
    char data[600], dir[600], cmd[4096], out[600];
    harness_tmp_path("avx2.npy", data, sizeof data);
    ck_assert_ok(subsae_buffer_save_npy(b, data, SUBSAE_DTYPE_F32));
    subsae_buffer_free(b);
    free(x);
    const char *precision[2] = {"auto", "bf16"};
    for (int i = 0; i < 2; i++) {
        harness_tmp_path(precision[i], dir, sizeof dir);
        harness_tmp_path(i ? "avx2-bf16.json" : "avx2-auto.json", out, sizeof out);
        snprintf(cmd, sizeof cmd,
                 "ONEDNN_MAX_CPU_ISA=AVX2 '%s/bin/subsae' train '%s' --features 64 --k 4 "
                 "--batch 200 --precision %s --out '%s' --quiet --json > '%s' 2> '%s.err'",
                 harness_build_dir(), data, precision[i], dir, out, out);
        const int status = harness_run(cmd);
        if (i == 0) {
            ck_assert_msg(status == 0, "%s failed", cmd);
            json_t *j = harness_read_json("avx2-auto.json");
            ck_assert_str_eq(json_string_value(json_object_get(j, "precision")), "fp32");
            json_decref(j);
        } else {
            ck_assert_msg(status != 0, "--precision bf16 under AVX2 was not refused");
        }
    }
}
END_TEST

/* The trainer recipe at fp32 and at bf16 on the first 7/8 of the rows;
 * evaluated (fp32) on the last 1/8. */
struct quality {
    double ev, dead, seconds, disagreement;
};

static void recipe(int64_t precision, const subsae_buffer *train, const subsae_buffer *eval,
                   struct quality *q)
{
    subsae_trainer *t;
    ck_assert_ok(subsae_trainer_create(&t));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_FEATURES, 32768));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_K, 8));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_BATCH, 4096));
    ck_assert_ok(subsae_trainer_set_double(t, SUBSAE_TRAIN_LR, 1e-3));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_INIT, SUBSAE_INIT_ACTIVE_SUBSPACE));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_PRECISION, precision));
    const double start = omp_get_wtime();
    ck_assert_ok(subsae_trainer_init(t, train, NULL));
    const int64_t epoch = subsae_buffer_rows(train) / 4096 * 4096;
    ck_assert_ok(subsae_trainer_fit(t, train, NULL, 2 * epoch));
    q->seconds = omp_get_wtime() - start;
    double m[SUBSAE_METRIC_COUNT], e[SUBSAE_METRIC_COUNT];
    ck_assert_ok(subsae_trainer_metrics(t, m, SUBSAE_METRIC_COUNT));
    ck_assert_ok(subsae_sae_evaluate(subsae_trainer_sae(t), eval, NULL, e, SUBSAE_METRIC_COUNT));
    q->ev = e[SUBSAE_METRIC_EXPLAINED_VARIANCE];
    q->dead = m[SUBSAE_METRIC_DEAD_FRACTION];
    q->disagreement = m[SUBSAE_METRIC_BF16_DISAGREEMENT];
    subsae_trainer_free(t);
}

START_TEST(bf16_quality_on_the_trainer_recipe)
{
    static const char *test = "bf16_quality_on_the_trainer_recipe";
    if (!native_or_skip(test))
        return;
    struct harness_split data;
    if (!harness_real_split(test, "L2_attn_out_131k.npy", 0, &data))
        return;
    subsae_buffer *train = data.train, *eval = data.eval;
    const char *path = data.path;
    const int64_t n_eval = data.n_eval;
    struct quality fp32, bf16;
    recipe(SUBSAE_PRECISION_FP32, train, eval, &fp32);
    recipe(SUBSAE_PRECISION_BF16, train, eval, &bf16);
    fprintf(stderr,
            "\nbf16 quality (%s, d_sae 32768, k 8, lr 1e-3, batch 4096, 2 epochs, ASI; eval on "
            "the last %lld rows):\n"
            "  fp32: explained variance %.5f, dead %.2f %%, %.1f s\n"
            "  bf16: explained variance %.5f, dead %.2f %%, %.1f s, last step's disagreement "
            "%.4f %%\n",
            path, (long long)n_eval, fp32.ev, 100 * fp32.dead, fp32.seconds, bf16.ev,
            100 * bf16.dead, bf16.seconds, 100 * bf16.disagreement);
    ck_assert_msg(fabs(bf16.ev - fp32.ev) <= 0.003, "explained variance %.5f (bf16) vs %.5f",
                  bf16.ev, fp32.ev);
    ck_assert_msg(fabs(bf16.dead - fp32.dead) <= 0.015, "dead fraction %.4f (bf16) vs %.4f",
                  bf16.dead, fp32.dead);
    harness_split_free(&data);
}
END_TEST

SUBSAE_SUITE(bf16_train)
{
    Suite *s = suite_create("bf16_train");
    TCase *tc = harness_case(s, "bf16", 120);
    tcase_add_test(tc, bf16_rounding_matches_the_conversion);
    tcase_add_test(tc, bf16_same_bits_for_threads_and_runs);
    tcase_add_test(tc, bf16_resume_bit_for_bit);
    tcase_add_test(tc, bf16_resolution);
    tcase_add_test(tc, auto_is_fp32_without_bf16_hardware);
    TCase *quality = harness_case(s, "bf16_quality", 300);
    tcase_add_test(quality, bf16_quality_on_the_trainer_recipe);
    return s;
}
