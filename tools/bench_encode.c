/* `subsae bench encode`: TopK encoding speed (subsae_sae_encode_sparse, the
 * path of `subsae encode`) of a random model, against the roofline of the
 * same shape measured in the same run.
 *
 * Encoding B rows needs 2 B d_in d_sae flops and reads W_enc (4 d_in d_sae
 * bytes) at least once. So tokens/s is bounded both by the machine's
 * cblas_sgemm rate on the shape (B x d_in times d_in x d_sae) and, for small
 * B, by B / (W_enc bytes / streaming read rate). The roofline is the lower
 * of the two. Each round times `calls` encodes, then as many sgemms of the
 * shape, then streaming reads of a copy of W_enc, so that the noise of a
 * shared machine falls on all alike; medians over rounds are reported.
 * With --versus B0 each round also times encodes of B0 rows, interleaved
 * with the B-row ones, for the cost ratio of the two batch sizes.
 *
 * --precision bf16 (or auto, where it picks bf16) encodes with a bf16 W_enc
 * (SUBSAE_SAE_PRECISION): the compute bound is then the bf16 product's
 * rate (oneDNN, bf16 in, fp32 out) on the same shape, the memory bound the
 * reading of 2 bytes per weight; the share of the selected features that
 * the fp32 encoder does not select (near-ties) is reported too. The
 * compute bound is always that of the kernel the library uses at the
 * precision (bench_gemm.h); cblas_sgemm's rate is reported beside it. */
#include "bench.h"
#include "bench_gemm.h"
#include "sae_cli.h"

#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct encode_config {
    int64_t d_in, features, k, batch, versus, calls, rounds;
    int threads;
    int precision; /* as asked (SUBSAE_PRECISION_*), then as resolved */
};

struct encode_round {
    double seconds_per_call, versus_seconds_per_call, sgemm_gflops, gemm_gflops,
        stream_gb_per_second;
};

struct encode_data {
    subsae_sae *sae;
    float *x, *w, *pre, *values;
    int32_t *indices;
    const char *kernel;       /* of the product at the precision */
    double disagreement_rate; /* bf16: selected features fp32 does not select */
};

static void stats(const struct encode_round *r, int64_t n, size_t offset, double out[3])
{
    bench_stats(r, sizeof *r, n, offset, out);
}

static void data_free(struct encode_data *e)
{
    subsae_sae_free(e->sae);
    free(e->x);
    free(e->w);
    free(e->pre);
    free(e->indices);
    free(e->values);
}

/* A TopK model with random encoder weights (rows of norm about 1) and
 * biases, and rows to encode. */
static int data_init(const struct encode_config *c, struct encode_data *e)
{
    memset(e, 0, sizeof *e);
    const int64_t d = c->d_in, m = c->features;
    const int64_t rows = c->batch > c->versus ? c->batch : c->versus;
    e->x = malloc((size_t)(rows * d) * sizeof *e->x);
    e->w = malloc((size_t)(m * d) * sizeof *e->w);
    e->pre = calloc((size_t)(rows * m), sizeof *e->pre); /* page faults are not BLAS time */
    e->indices = malloc((size_t)(rows * c->k) * sizeof *e->indices);
    e->values = malloc((size_t)(rows * c->k) * sizeof *e->values);
    if (!e->x || !e->w || !e->pre || !e->indices || !e->values)
        return cli_fail("bench encode: cannot allocate %.0f MB",
                        ((double)m * (double)(d + rows) + (double)rows * (double)d) * 4e-6);
    uint64_t state = 1234;
    const float scale = 1.0f / sqrtf((float)d) * sqrtf(3.0f);
    for (int64_t i = 0; i < m * d; i++)
        e->w[i] = scale * bench_uniform(&state);
    for (int64_t i = 0; i < rows * d; i++)
        e->x[i] = bench_uniform(&state);
    float *b = malloc((size_t)m * sizeof *b);
    if (!b)
        return cli_fail("out of memory");
    for (int64_t f = 0; f < m; f++)
        b[f] = 0.1f * bench_uniform(&state);
    int rc = subsae_sae_create(d, d, m, SUBSAE_ACT_TOPK, &e->sae);
    if (!rc)
        rc = subsae_sae_set_int(e->sae, SUBSAE_SAE_K, c->k);
    if (!rc)
        rc = subsae_sae_set_param(e->sae, SUBSAE_PARAM_W_ENC, e->w, m * d);
    if (!rc)
        rc = subsae_sae_set_param(e->sae, SUBSAE_PARAM_B_ENC, b, m);
    free(b);
    return cli_check(rc, "bench encode: make the model");
}

/* Of the features the model selects on the batch's rows, the share that
 * an fp32 copy of it does not select (0 for an fp32 model). */
static int disagreement(const struct encode_config *c, struct encode_data *e)
{
    e->disagreement_rate = 0.0;
    if (c->precision != SUBSAE_PRECISION_BF16)
        return 0;
    const int64_t B = c->batch, k = c->k;
    subsae_sae *wide = NULL;
    int32_t *idx = malloc((size_t)(B * k) * sizeof *idx);
    float *val = malloc((size_t)(B * k) * sizeof *val);
    int rc = idx && val ? subsae_sae_clone(e->sae, &wide) : SUBSAE_E_NOMEM;
    if (!rc)
        rc = subsae_sae_set_int(wide, SUBSAE_SAE_PRECISION, SUBSAE_PRECISION_FP32);
    if (!rc)
        rc = subsae_sae_encode_sparse(wide, e->x, B, c->d_in, k, idx, val);
    if (!rc)
        rc = subsae_sae_encode_sparse(e->sae, e->x, B, c->d_in, k, e->indices, e->values);
    int64_t selected = 0, missed = 0;
    for (int64_t i = 0; !rc && i < B * k; i++) {
        const int32_t f = e->indices[i];
        const int32_t *row = idx + i / k * k;
        bool found = false;
        for (int64_t j = 0; j < k && !found; j++)
            found = row[j] == f;
        selected += f >= 0;
        missed += f >= 0 && !found;
    }
    e->disagreement_rate = selected > 0 ? (double)missed / (double)selected : 0.0;
    subsae_sae_free(wide);
    free(idx);
    free(val);
    return cli_check(rc, "bench encode: codes of an fp32 copy");
}

/* The model at the asked precision; c->precision becomes the resolved one. */
static int set_precision(struct encode_config *c, struct encode_data *e)
{
    int64_t used;
    if (sae_cli_set_precision(e->sae, c->precision))
        return 1;
    subsae_sae_get_int(e->sae, SUBSAE_SAE_PRECISION, &used);
    c->precision = (int)used;
    return 0;
}

/* Seconds per call of `calls` encodes of n rows. */
static int time_encode(const struct encode_config *c, struct encode_data *e, int64_t n,
                       double *seconds)
{
    double t0 = bench_now();
    for (int64_t i = 0; i < c->calls; i++) {
        int rc = subsae_sae_encode_sparse(e->sae, e->x, n, c->d_in, c->k, e->indices, e->values);
        if (cli_check(rc, "bench encode: encode"))
            return 1;
    }
    *seconds = (bench_now() - t0) / (double)c->calls;
    return 0;
}

/* One thread's share of a streaming read. */
struct stream_part {
    const float *w;
    int64_t n;
    float sum;
};

/* One float of each 64-byte line, from four quarters of the share in
 * step: the memory brings every line whole, so this reads all of the
 * share's bytes, bound by memory rather than by adds, and four streams at
 * a time as the small-batch kernels read four features' rows (adding every
 * float of one stream stayed at about 33 GB/s, which those kernels beat). */
static void *stream_part_run(void *arg)
{
    struct stream_part *p = arg;
    enum { LINE_FLOATS = 16, STREAMS = 4 };
    const int64_t quarter = p->n / STREAMS / LINE_FLOATS * LINE_FLOATS;
    float acc[STREAMS] = {0.0f};
    for (int64_t i = 0; i < quarter; i += LINE_FLOATS)
        for (int l = 0; l < STREAMS; l++)
            acc[l] += p->w[l * quarter + i];
    for (int64_t i = STREAMS * quarter; i < p->n; i += LINE_FLOATS)
        acc[0] += p->w[i];
    p->sum = acc[0] + acc[1] + acc[2] + acc[3];
    return NULL;
}

/* Bytes per second of a read of the whole of W_enc's copy by the threads
 * (each its share, on threads of their own: the program does not link
 * OpenMP), the best of a few passes. */
static double stream_rate(const struct encode_config *c, const float *w)
{
    enum { MAX_PARTS = 256 };
    const int64_t n = c->d_in * c->features;
    const int parts = c->threads < MAX_PARTS ? c->threads : MAX_PARTS;
    struct stream_part part[MAX_PARTS];
    pthread_t tid[MAX_PARTS];
    double best = 0.0;
    for (int pass = 0; pass < 3; pass++) {
        double t0 = bench_now();
        bool started[MAX_PARTS] = {false};
        for (int p = 0; p < parts; p++) {
            int64_t lo = n * p / parts, hi = n * (p + 1) / parts;
            part[p] = (struct stream_part){.w = w + lo, .n = hi - lo};
            started[p] = p > 0 && pthread_create(&tid[p], NULL, stream_part_run, &part[p]) == 0;
        }
        stream_part_run(&part[0]);
        for (int p = 1; p < parts; p++) {
            if (started[p])
                pthread_join(tid[p], NULL);
            else /* no thread to spare: read the share here */
                stream_part_run(&part[p]);
        }
        double s = bench_now() - t0;
        if (s > 0.0 && (double)n * 4.0 / s > best)
            best = (double)n * 4.0 / s;
    }
    return best;
}

static int run_round(const struct encode_config *c, struct encode_data *e, struct encode_round *o)
{
    const int64_t B = c->batch, d = c->d_in, m = c->features;
    const double flops = 2.0 * (double)B * (double)d * (double)m;
    o->versus_seconds_per_call = NAN;
    if (c->versus > 0 && time_encode(c, e, c->versus, &o->versus_seconds_per_call))
        return 1;
    if (time_encode(c, e, B, &o->seconds_per_call))
        return 1;
    double t0 = bench_now();
    for (int64_t i = 0; i < c->calls; i++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)B, (int)m, (int)d, 1.0f, e->x,
                    (int)d, e->w, (int)d, 0.0f, e->pre, (int)m);
    const double sgemm_s = (bench_now() - t0) / (double)c->calls;
    o->sgemm_gflops = flops / sgemm_s * 1e-9;
    double gemm_s = sgemm_s;
    if (strcmp(e->kernel, "openblas sgemm") != 0 &&
        bench_gemm(c->precision, B, m, d, e->x, e->w, e->pre, c->calls, &gemm_s, &e->kernel))
        return 1;
    o->gemm_gflops = flops / gemm_s * 1e-9;
    o->stream_gb_per_second = stream_rate(c, e->w) * 1e-9;
    return 0;
}

static int run_encode(struct encode_config *c, struct encode_round *rounds, json_t **facts)
{
    struct encode_data e;
    int status = data_init(c, &e);
    if (!status)
        status = set_precision(c, &e);
    e.kernel = subsae_encoder_kernel(c->precision);
    if (!status) /* warm-up: first touches, thread teams, code paths */
        status = time_encode(c, &e, c->batch, &rounds[0].seconds_per_call);
    for (int64_t r = 0; r < c->rounds && !status; r++)
        status = run_round(c, &e, &rounds[r]);
    if (!status)
        status = disagreement(c, &e);
    if (!status) {
        *facts = json_pack("{s:s, s:s, s:s, s:s, s:s}", "precision",
                           sae_cli_precision_name(c->precision), "gemm_kernel", e.kernel,
                           "onednn_isa", subsae_encoder_isa(), "encoder_kernel_fp32",
                           subsae_encoder_kernel(SUBSAE_PRECISION_FP32), "encoder_kernel_bf16",
                           subsae_encoder_kernel(SUBSAE_PRECISION_BF16));
        if (*facts && c->precision == SUBSAE_PRECISION_BF16)
            json_object_set_new(*facts, "disagreement_rate", json_real(e.disagreement_rate));
        if (!*facts)
            status = cli_fail("out of memory building the JSON output");
    }
    data_free(&e);
    return status;
}

#define FIELD(name) offsetof(struct encode_round, name)

/* The encode's figures against the roofline; `facts` (the precision and
 * kernels, taken) joins them. */
static json_t *encode_json(const struct encode_config *c, const struct encode_round *r,
                           json_t *facts)
{
    double spc[3], sf[3], gf[3], gb[3];
    stats(r, c->rounds, FIELD(seconds_per_call), spc);
    stats(r, c->rounds, FIELD(sgemm_gflops), sf);
    stats(r, c->rounds, FIELD(gemm_gflops), gf);
    stats(r, c->rounds, FIELD(stream_gb_per_second), gb);
    const double B = (double)c->batch, dm = (double)c->d_in * (double)c->features;
    const double tps = B / spc[0], gemm_bound = gf[0] * 1e9 / (2.0 * dm);
    const double weight_bytes = c->precision == SUBSAE_PRECISION_BF16 ? 2.0 : 4.0;
    const double memory_bound = B * gb[0] * 1e9 / (weight_bytes * dm);
    const char *kernel = json_string_value(json_object_get(facts, "gemm_kernel"));
    const char *compute = kernel && !strcmp(kernel, "openblas sgemm") ? "sgemm" : "gemm";
    const double roofline = gemm_bound < memory_bound ? gemm_bound : memory_bound;
    json_t *j = json_pack(
        "{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:i, s:s, s:f, s:f, s:o, s:f, s:o, s:f, s:f,"
        " s:o, s:f, s:f, s:s, s:f}",
        "name", "encode", "d_in", (json_int_t)c->d_in, "features", (json_int_t)c->features, "k",
        (json_int_t)c->k, "batch", (json_int_t)c->batch, "calls", (json_int_t)c->calls,
        "rounds", (json_int_t)c->rounds, "threads", c->threads, "statistic",
        "median over rounds; *_range: [min, max] over rounds", "tokens_per_second", tps,
        "seconds_per_call", spc[0], "seconds_per_call_range", bench_range_json(spc), "sgemm_gflops",
        sf[0], "sgemm_gflops_range", bench_range_json(sf), "sgemm_tokens_per_second",
        sf[0] * 1e9 / (2.0 * dm), "stream_gb_per_second", gb[0], "stream_gb_per_second_range",
        bench_range_json(gb), "memory_bound_tokens_per_second", memory_bound,
        "roofline_tokens_per_second", roofline, "roofline_bound",
        gemm_bound < memory_bound ? compute : "memory", "roofline_fraction", tps / roofline);
    if (j) {
        json_object_update(j, facts);
        json_object_set_new(j, "gemm_gflops", json_real(gf[0]));
        json_object_set_new(j, "gemm_gflops_range", bench_range_json(gf));
        json_object_set_new(j, "gemm_tokens_per_second", json_real(gemm_bound));
    }
    json_decref(facts);
    if (j && c->versus > 0) {
        double vs[3];
        stats(r, c->rounds, FIELD(versus_seconds_per_call), vs);
        json_object_set_new(j, "versus_batch", json_integer((json_int_t)c->versus));
        json_object_set_new(j, "versus_seconds_per_call", json_real(vs[0]));
        json_object_set_new(j, "cost_ratio", json_real(spc[0] / vs[0]));
    }
    return j;
}

static double num(const json_t *j, const char *key)
{
    return json_number_value(json_object_get(j, key));
}

static void encode_table(const json_t *j)
{
    printf("bench encode: d_in %lld, d_sae %lld, k %lld, batch %lld, %lld threads, median of "
           "%lld rounds of %lld calls\n",
           (long long)num(j, "d_in"), (long long)num(j, "features"), (long long)num(j, "k"),
           (long long)num(j, "batch"), (long long)num(j, "threads"), (long long)num(j, "rounds"),
           (long long)num(j, "calls"));
    printf("  %-30s %8.1f GFLOPS  %8.0f tokens/s\n", "cblas_sgemm (encoder shape)",
           num(j, "sgemm_gflops"), num(j, "sgemm_tokens_per_second"));
    const char *precision = json_string_value(json_object_get(j, "precision"));
    char label[64];
    snprintf(label, sizeof label, "%s product (encoder shape)", precision);
    printf("  %-30s %8.1f GFLOPS  %8.0f tokens/s  (%s; oneDNN ISA %s)\n", label,
           num(j, "gemm_gflops"), num(j, "gemm_tokens_per_second"),
           json_string_value(json_object_get(j, "gemm_kernel")),
           json_string_value(json_object_get(j, "onednn_isa")));
    snprintf(label, sizeof label, "streaming read of %s W_enc", precision);
    printf("  %-30s %8.1f GB/s    %8.0f tokens/s\n", label, num(j, "stream_gb_per_second"),
           num(j, "memory_bound_tokens_per_second"));
    printf("  %-30s %8.0f tokens/s  %.3f ms per call, %.3f of the roofline (%s)\n", "encode",
           num(j, "tokens_per_second"), 1e3 * num(j, "seconds_per_call"),
           num(j, "roofline_fraction"), json_string_value(json_object_get(j, "roofline_bound")));
    if (json_object_get(j, "disagreement_rate"))
        printf("  %-30s %.4f of the selected features\n", "bf16 vs fp32 selection differs",
               num(j, "disagreement_rate"));
    if (json_object_get(j, "cost_ratio"))
        printf("  %-30s %.3f ms per call; %lld rows cost %.2fx %lld\n", "encode, versus batch",
               1e3 * num(j, "versus_seconds_per_call"), (long long)num(j, "batch"),
               num(j, "cost_ratio"), (long long)num(j, "versus_batch"));
}

static int parse_encode(int argc, char **argv, struct encode_config *c)
{
    const struct cli_int_option opts[] = {
        {"--d-in", &c->d_in, 1, INT32_MAX},       {"--features", &c->features, 1, INT32_MAX},
        {"--k", &c->k, 1, INT32_MAX},             {"--batch", &c->batch, 1, INT32_MAX},
        {"--versus", &c->versus, 1, INT32_MAX},   {"--calls", &c->calls, 1, INT32_MAX},
        {"--rounds", &c->rounds, 1, INT32_MAX}};
    for (int i = 0; i < argc; i++) {
        int matched = cli_match_int(opts, sizeof opts / sizeof opts[0], argc, argv, &i);
        if (matched < 0)
            return 2;
        if (matched)
            continue;
        if (!strcmp(argv[i], "--precision") && i + 1 < argc) {
            if (sae_cli_parse_precision(argv[i], argv[i + 1], &c->precision))
                return 2;
            i++;
        } else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            int64_t th;
            if (!cli_parse_int64(argv[i], argv[i + 1], 1, cli_max_threads(), &th))
                return 2;
            c->threads = (int)th;
            i++;
        } else {
            return cli_usage();
        }
    }
    if (c->k > c->features)
        return cli_fail("--k %lld exceeds --features %lld", (long long)c->k,
                        (long long)c->features);
    if (c->calls == 0) { /* about 64k rows a round, 3 to 20 calls */
        int64_t rows = c->batch > c->versus ? c->batch : c->versus;
        c->calls = 65536 / rows < 3 ? 3 : 65536 / rows > 20 ? 20 : 65536 / rows;
    }
    return 0;
}

int bench_encode(int argc, char **argv, json_t *reports, bool print)
{
    struct encode_config c = {.d_in = 768, .features = 24576, .k = 32, .batch = 16,
                              .rounds = 5, .threads = subsae_get_num_threads()};
    int status = parse_encode(argc, argv, &c);
    if (status)
        return status;
    const int saved = subsae_get_num_threads();
    subsae_set_num_threads(c.threads);
    struct encode_round *rounds = calloc((size_t)c.rounds, sizeof *rounds);
    json_t *facts = NULL;
    status = rounds ? run_encode(&c, rounds, &facts) : cli_fail("out of memory");
    subsae_set_num_threads(saved);
    json_t *j = status ? NULL : encode_json(&c, rounds, facts);
    free(rounds);
    if (status)
        return status;
    if (!j || json_array_append_new(reports, j) != 0)
        return cli_fail("out of memory building the JSON output");
    if (print)
        encode_table(j);
    return 0;
}
