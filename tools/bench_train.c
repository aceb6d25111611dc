/* `subsae bench train`: training and encoding speed of a TopK SAE as a
 * fraction of the encoder-GEMM roofline measured in the same run.
 *
 * Per training token a TopK SAE needs one dense product row for the encoder
 * (2 d_in d_sae flops); everything else is O(k d) per token. So the speed
 * limit is tokens/s <= gemm_flops / (2 d_in d_sae), with gemm_flops the
 * rate of the library's own kernel for the encoder's product at the run's
 * precision (bench_gemm.h: oneDNN's matmul, or OpenBLAS's sgemm where the
 * library uses it) on the encoder's shape (batch x d_in times d_in x
 * d_sae); the JSON keeps the name sgemm_gflops for it. The benchmark
 * interleaves the two measurements step by step (one training step, then
 * one product of that shape, ...), so that the
 * noise of a shared machine falls on both alike, and reports the median
 * over rounds (each round: `steps` steps and `steps` GEMMs, plus one
 * inference encode of a batch through subsae_sae_encode_sparse). Warm-up
 * steps are not timed. */
#include "bench.h"
#include "bench_gemm.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { POOL_BATCHES = 4, REPORTED_PHASES = 6 };

static const int reported_phase[REPORTED_PHASES] = {
    SUBSAE_PHASE_ENCODE_GEMM, SUBSAE_PHASE_TOPK,      SUBSAE_PHASE_DECODE,
    SUBSAE_PHASE_BACKWARD,    SUBSAE_PHASE_OPTIMIZER, SUBSAE_PHASE_PREPARE};

struct train_config {
    int64_t d_in, features, k, batch, steps, rounds, warmup, precision;
    int threads;
    bool speedup; /* also time one-thread steps, interleaved */
};

struct train_round {
    double tokens_per_second, sgemm_gflops, fraction, encode_tokens_per_second,
        encode_fraction, gemm_phase_fraction, one_thread_tokens_per_second, speedup,
        disagreement;
    double phases[REPORTED_PHASES];
};

static void stats(const struct train_round *r, int64_t n, size_t offset, double out[3])
{
    bench_stats(r, sizeof *r, n, offset, out);
}

/* Rows with a decaying spectrum around a non-zero mean (activations-like),
 * from a fixed seed. */
static void fill_data(float *x, int64_t rows, int64_t d)
{
    uint64_t state = 1234;
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < d; j++)
            x[i * d + j] = bench_uniform(&state) / sqrtf(1.0f + (float)j / 8.0f) +
                           0.05f * (float)(j % 7);
}

static int make_trainer(const struct train_config *c, const subsae_buffer *buf,
                        subsae_trainer **out)
{
    subsae_trainer *t = NULL;
    int rc = subsae_trainer_create(&t);
    if (!rc)
        rc = subsae_trainer_set_int(t, SUBSAE_TRAIN_FEATURES, c->features);
    if (!rc)
        rc = subsae_trainer_set_int(t, SUBSAE_TRAIN_K, c->k);
    if (!rc)
        rc = subsae_trainer_set_int(t, SUBSAE_TRAIN_BATCH, c->batch);
    if (!rc) /* the initialisation is not measured: keep it short */
        rc = subsae_trainer_set_int(t, SUBSAE_TRAIN_INIT, SUBSAE_INIT_RANDOM);
    if (!rc)
        rc = subsae_trainer_set_int(t, SUBSAE_TRAIN_INIT_SAMPLE, c->batch);
    if (!rc)
        rc = subsae_trainer_set_int(t, SUBSAE_TRAIN_PRECISION, c->precision);
    if (!rc)
        rc = subsae_trainer_init(t, buf, NULL);
    if (rc) {
        subsae_trainer_free(t);
        return cli_check(rc, "bench train: trainer initialisation");
    }
    *out = t;
    return 0;
}

static int run_train(const struct train_config *c, struct train_round *rounds)
{
    const int64_t B = c->batch, d = c->d_in, m = c->features, k = c->k;
    const size_t pool = (size_t)(POOL_BATCHES * B) * (size_t)d;
    float *x = malloc(pool * sizeof *x), *w = malloc((size_t)(m * d) * sizeof *w);
    float *pre = malloc((size_t)B * (size_t)m * sizeof *pre), *values = NULL;
    int32_t *indices = NULL;
    subsae_buffer *buf = NULL;
    subsae_trainer *t = NULL;
    const char *kernel = NULL;
    int status = 1;
    if (x && w && pre) {
        indices = malloc((size_t)(B * k) * sizeof *indices);
        values = malloc((size_t)(B * k) * sizeof *values);
    }
    if (!x || !w || !pre || !indices || !values) {
        cli_fail("bench train: cannot allocate %.0f MB",
                 ((double)pool + (double)m * (double)(d + B)) * 4e-6);
        goto done;
    }
    fill_data(x, POOL_BATCHES * B, d);
    memset(pre, 0, (size_t)B * (size_t)m * sizeof *pre); /* page faults are not BLAS time */
    if (cli_check(subsae_buffer_wrap(x, SUBSAE_DTYPE_F32, POOL_BATCHES * B, d, d, SUBSAE_BORROW,
                                     &buf),
                  "bench train: wrap the data") ||
        make_trainer(c, buf, &t))
        goto done;
    const subsae_sae *sae = subsae_trainer_sae(t);
    /* The sgemm multiplies the same kind of operands as the encoder: a
     * batch of rows and the encoder weights (d_sae x d_in, row-major). */
    if (cli_check(subsae_sae_get_param(sae, SUBSAE_PARAM_W_ENC, w, m * d), "bench train"))
        goto done;
    const double flops = 2.0 * (double)B * (double)d * (double)m;
    int64_t next = 0;
    for (int64_t s = 0; s < c->warmup; s++, next++)
        if (cli_check(subsae_trainer_step(t, x + (size_t)(next % POOL_BATCHES) * (size_t)(B * d),
                                          d, NULL, 0, B),
                      "bench train: step"))
            goto done;
    if (bench_gemm((int)c->precision, B, m, d, x, w, pre, 1, &(double){0.0}, &kernel))
        goto done;
    for (int64_t r = 0; r < c->rounds; r++) {
        double train_s = 0.0, gemm_s = 0.0, one_s = 0.0, disagreement = 0.0;
        double phases[SUBSAE_PHASE_COUNT] = {0.0}, one[SUBSAE_PHASE_COUNT];
        for (int64_t s = 0; s < c->steps; s++, next++) {
            const float *batch = x + (size_t)(next % POOL_BATCHES) * (size_t)(B * d);
            subsae_trainer_reset_timings(t);
            double t0 = bench_now();
            int rc = subsae_trainer_step(t, batch, d, NULL, 0, B);
            double t1 = bench_now();
            if (cli_check(rc, "bench train: step"))
                goto done;
            double product_s;
            if (bench_gemm((int)c->precision, B, m, d, batch, w, pre, 1, &product_s, &kernel))
                goto done;
            train_s += t1 - t0;
            gemm_s += product_s;
            subsae_trainer_timings(t, one, SUBSAE_PHASE_COUNT);
            double metrics[SUBSAE_METRIC_COUNT];
            subsae_trainer_metrics(t, metrics, SUBSAE_METRIC_COUNT);
            disagreement += metrics[SUBSAE_METRIC_BF16_DISAGREEMENT] / (double)c->steps;
            for (int p = 0; p < SUBSAE_PHASE_COUNT; p++)
                phases[p] += one[p] / (double)c->steps;
            if (c->speedup) {
                /* The same step on one thread (the steps give the same
                 * bits for any thread count), right after. */
                subsae_trainer_set_int(t, SUBSAE_TRAIN_THREADS, 1);
                double t3 = bench_now();
                rc = subsae_trainer_step(t, batch, d, NULL, 0, B);
                one_s += bench_now() - t3;
                subsae_trainer_set_int(t, SUBSAE_TRAIN_THREADS, 0);
                if (cli_check(rc, "bench train: one-thread step"))
                    goto done;
            }
        }
        double t0 = bench_now();
        int rc = subsae_sae_encode_sparse(sae, x + (size_t)(r % POOL_BATCHES) * (size_t)(B * d), B,
                                          d, k, indices, values);
        double encode_s = bench_now() - t0;
        if (cli_check(rc, "bench train: encode"))
            goto done;
        /* The product right after the encode, so that both see the same
         * machine. The model encodes at fp32 (the trainer's precision is
         * the training step's only). */
        double encode_gemm_s;
        if (bench_gemm(SUBSAE_PRECISION_FP32, B, m, d, x, w, pre, 1, &encode_gemm_s, &kernel))
            goto done;
        struct train_round *o = &rounds[r];
        o->tokens_per_second = (double)(c->steps * B) / train_s;
        o->sgemm_gflops = flops * (double)c->steps / gemm_s * 1e-9;
        double roofline = o->sgemm_gflops * 1e9 / (2.0 * (double)d * (double)m);
        o->fraction = o->tokens_per_second / roofline;
        o->encode_tokens_per_second = (double)B / encode_s;
        o->encode_fraction = o->encode_tokens_per_second /
                             (flops / encode_gemm_s / (2.0 * (double)d * (double)m));
        /* The full-shape sgemm against the step's own encoder GEMMs. */
        o->gemm_phase_fraction = gemm_s / (double)c->steps / phases[SUBSAE_PHASE_ENCODE_GEMM];
        o->one_thread_tokens_per_second = c->speedup ? (double)(c->steps * B) / one_s : NAN;
        o->speedup = c->speedup ? one_s / train_s : NAN;
        o->disagreement = disagreement;
        for (int p = 0; p < REPORTED_PHASES; p++)
            o->phases[p] = phases[reported_phase[p]];
    }
    status = 0;
done:
    subsae_trainer_free(t);
    subsae_buffer_free(buf);
    free(x);
    free(w);
    free(pre);
    free(indices);
    free(values);
    return status;
}

#define FIELD(name) offsetof(struct train_round, name)

static json_t *train_json(const struct train_config *c, const struct train_round *r)
{
    double tps[3], gf[3], fr[3], etps[3], efr[3], gpf[3];
    stats(r, c->rounds, FIELD(tokens_per_second), tps);
    stats(r, c->rounds, FIELD(sgemm_gflops), gf);
    stats(r, c->rounds, FIELD(fraction), fr);
    stats(r, c->rounds, FIELD(encode_tokens_per_second), etps);
    stats(r, c->rounds, FIELD(encode_fraction), efr);
    stats(r, c->rounds, FIELD(gemm_phase_fraction), gpf);
    json_t *phases = json_object();
    for (int p = 0; p < REPORTED_PHASES; p++) {
        double s[3];
        stats(r, c->rounds, FIELD(phases) + (size_t)p * sizeof(double), s);
        json_object_set_new(phases, subsae_phase_name(reported_phase[p]), json_real(s[0]));
    }
    json_t *j = json_pack(
        "{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:i, s:s, s:f, s:o, s:f, s:o, s:f, s:f, s:o,"
        " s:f, s:o, s:f, s:o, s:f, s:o}",
        "name", "train", "d_in", (json_int_t)c->d_in, "features", (json_int_t)c->features, "k",
        (json_int_t)c->k, "batch", (json_int_t)c->batch, "steps", (json_int_t)c->steps,
        "rounds", (json_int_t)c->rounds, "warmup_steps", (json_int_t)c->warmup, "threads",
        c->threads, "statistic", "median over rounds; *_range: [min, max] over rounds",
        "tokens_per_second", tps[0], "tokens_per_second_range", bench_range_json(tps),
        "sgemm_gflops", gf[0], "sgemm_gflops_range", bench_range_json(gf),
        "roofline_tokens_per_second", gf[0] * 1e9 / (2.0 * (double)c->d_in * (double)c->features),
        "roofline_fraction", fr[0], "roofline_fraction_range", bench_range_json(fr),
        "encode_tokens_per_second", etps[0], "encode_tokens_per_second_range",
        bench_range_json(etps),
        "encode_roofline_fraction", efr[0], "encode_roofline_fraction_range", bench_range_json(efr),
        "step_gemm_efficiency", gpf[0], "phases", phases);
    if (j) {
        /* The precision in use (auto resolved) and, at bf16, the mean
         * fraction of the selected pairs the fp32 rescoring changed. */
        double dis[3];
        stats(r, c->rounds, FIELD(disagreement), dis);
        const bool bf16 = c->precision == SUBSAE_PRECISION_BF16;
        json_object_set_new(j, "precision", json_string(bf16 ? "bf16" : "fp32"));
        json_object_set_new(j, "gemm_kernel", json_string(subsae_encoder_kernel((int)c->precision)));
        json_object_set_new(j, "onednn_isa", json_string(subsae_encoder_isa()));
        json_object_set_new(j, "bf16_disagreement_rate",
                            bf16 && isfinite(dis[0]) ? json_real(dis[0]) : json_null());
    }
    if (j && c->speedup) {
        double one[3], sp[3];
        stats(r, c->rounds, FIELD(one_thread_tokens_per_second), one);
        stats(r, c->rounds, FIELD(speedup), sp);
        json_object_set_new(j, "one_thread_tokens_per_second", json_real(one[0]));
        json_object_set_new(j, "speedup", json_real(sp[0]));
        json_object_set_new(j, "speedup_range", bench_range_json(sp));
    }
    return j;
}

static void train_table(const json_t *j)
{
    json_t *ph = json_object_get(j, "phases");
    double step = 0.0;
    const char *key;
    json_t *value;
    json_object_foreach(ph, key, value) step += json_real_value(value);
    printf("bench train: d_in %lld, d_sae %lld, k %lld, batch %lld, %lld threads, median of "
           "%lld rounds of %lld steps\n",
           (long long)json_integer_value(json_object_get(j, "d_in")),
           (long long)json_integer_value(json_object_get(j, "features")),
           (long long)json_integer_value(json_object_get(j, "k")),
           (long long)json_integer_value(json_object_get(j, "batch")),
           (long long)json_integer_value(json_object_get(j, "threads")),
           (long long)json_integer_value(json_object_get(j, "rounds")),
           (long long)json_integer_value(json_object_get(j, "steps")));
    json_t *fr = json_object_get(j, "roofline_fraction_range");
    const json_t *dis = json_object_get(j, "bf16_disagreement_rate");
    printf("  %-30s %s", "precision", json_string_value(json_object_get(j, "precision")));
    if (json_is_number(dis))
        printf(" (rescoring changed %.4f %% of the selected pairs)", 100 * json_real_value(dis));
    printf("\n");
    printf("  %-30s %8.1f GFLOPS (%s)\n", "encoder product (its shape)",
           json_real_value(json_object_get(j, "sgemm_gflops")),
           json_string_value(json_object_get(j, "gemm_kernel")));
    printf("  %-30s %8.0f tokens/s\n", "roofline (product / 2 d_in d_sae)",
           json_real_value(json_object_get(j, "roofline_tokens_per_second")));
    printf("  %-30s %8.0f tokens/s  %.3f of roofline (%.3f-%.3f)\n", "training",
           json_real_value(json_object_get(j, "tokens_per_second")),
           json_real_value(json_object_get(j, "roofline_fraction")),
           json_real_value(json_array_get(fr, 0)), json_real_value(json_array_get(fr, 1)));
    printf("  %-30s %8.0f tokens/s  %.3f of roofline\n", "encode (inference)",
           json_real_value(json_object_get(j, "encode_tokens_per_second")),
           json_real_value(json_object_get(j, "encode_roofline_fraction")));
    json_t *sp = json_object_get(j, "speedup");
    if (sp) {
        json_t *range = json_object_get(j, "speedup_range");
        printf("  %-30s %8.0f tokens/s  %lldx%s: %.2fx one thread (%.2f-%.2f)\n",
               "one thread, interleaved",
               json_real_value(json_object_get(j, "one_thread_tokens_per_second")),
               (long long)json_integer_value(json_object_get(j, "threads")), " threads",
               json_real_value(sp), json_real_value(json_array_get(range, 0)),
               json_real_value(json_array_get(range, 1)));
    }
    printf("  phases (ms per step):");
    json_object_foreach(ph, key, value)
        printf(" %s %.1f (%.0f%%)", key, 1e3 * json_real_value(value),
               100.0 * json_real_value(value) / step);
    printf("\n");
}

int bench_train(int argc, char **argv, json_t *reports, bool print)
{
    struct train_config c = {.d_in = 512, .features = 16384, .k = 32, .batch = 4096,
                             .steps = 4, .rounds = 3, .warmup = 2,
                             .threads = subsae_get_num_threads()};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int64_t *field = !strcmp(a, "--d-in")       ? &c.d_in
                         : !strcmp(a, "--features") ? &c.features
                         : !strcmp(a, "--k")        ? &c.k
                         : !strcmp(a, "--batch")    ? &c.batch
                         : !strcmp(a, "--steps")    ? &c.steps
                         : !strcmp(a, "--rounds")   ? &c.rounds
                         : !strcmp(a, "--warmup")   ? &c.warmup
                                                    : NULL;
        if (field && v) {
            if (!cli_parse_int64(a, v, field == &c.warmup ? 0 : 1, INT32_MAX, field))
                return 2;
            i++;
        } else if (!strcmp(a, "--precision") && v) {
            static const char *const names[] = {"fp32", "bf16", "auto"};
            c.precision = -1;
            for (int p = 0; p < 3; p++)
                if (!strcmp(v, names[p]))
                    c.precision = p;
            if (c.precision < 0)
                return cli_fail("--precision %s: expected fp32, bf16 or auto", v);
            i++;
        } else if (!strcmp(a, "--speedup")) {
            c.speedup = true;
        } else if (!strcmp(a, "--threads") && v) {
            int64_t th;
            if (!cli_parse_int64(a, v, 1, cli_max_threads(), &th))
                return 2;
            c.threads = (int)th;
            i++;
        } else {
            return cli_usage();
        }
    }
    c.precision = subsae_precision_resolve((int)c.precision);
    if (c.k > c.features)
        return cli_fail("--k %lld exceeds --features %lld", (long long)c.k,
                        (long long)c.features);
    const int saved = subsae_get_num_threads();
    subsae_set_num_threads(c.threads);
    struct train_round *rounds = calloc((size_t)c.rounds, sizeof *rounds);
    int status = rounds ? run_train(&c, rounds) : cli_fail("out of memory");
    subsae_set_num_threads(saved);
    json_t *j = status ? NULL : train_json(&c, rounds);
    free(rounds);
    if (status)
        return status;
    if (!j || json_array_append_new(reports, j) != 0)
        return cli_fail("out of memory building the JSON output");
    if (print)
        train_table(j);
    return 0;
}
