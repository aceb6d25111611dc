/* `subsae bench NAME|all [options] [--json]`: speed of the library as
 * ratios to the machine's own BLAS/LAPACK rates measured in the same run.
 * Each benchmark registers itself in the table `benchmarks` below; `all`
 * runs every one with its default options. Benchmarks may call CBLAS and
 * LAPACKE directly (to measure the machine); the library is used through
 * its public API only. */
#include "bench.h"

#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double now(void)
{
    return bench_now();
}

/* A small fast generator for benchmark data (not the library's RNG: the
 * data only has to be the same from run to run). */
static uint64_t next_u64(uint64_t *state)
{
    uint64_t x = *state += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

float bench_uniform(uint64_t *state)
{
    return (float)((double)(next_u64(state) >> 40) * 0x1.0p-23 - 1.0);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

void bench_stats(const void *rounds, size_t round_size, int64_t n, size_t offset,
                 double out[3])
{
    double *v = malloc((size_t)n * sizeof *v);
    if (!v) {
        out[0] = out[1] = out[2] = NAN;
        return;
    }
    for (int64_t i = 0; i < n; i++)
        memcpy(&v[i], (const char *)rounds + (size_t)i * round_size + offset, sizeof(double));
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    out[0] = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
    out[1] = v[0];
    out[2] = v[n - 1];
    free(v);
}

json_t *bench_range_json(const double s[3])
{
    return json_pack("[f, f]", s[1], s[2]);
}

/* ---- bench rank ----------------------------------------------------- */

enum { MAX_ROUNDS = 100 };

struct rank_result {
    int64_t rows, dim, rank, repeat;
    int threads;
    /* Medians over the rounds; the ratios are medians of each round's
     * ratio, with their range. */
    double sgemm_s, ssyrk_s, dsyevd_s, exact_s, randomized_s;
    double exact_ratio, exact_ratio_min, exact_ratio_max;
    double randomized_ratio, randomized_ratio_min, randomized_ratio_max;
    int64_t exact_r99, randomized_r99;
    int randomized_r99_exact;
    const char *auto_method;
};

static int cmp_seconds(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median of v[0..n) (sorts v); min and max (may be NULL). */
static double median(double *v, int64_t n, double *lo, double *hi)
{
    qsort(v, (size_t)n, sizeof *v, cmp_seconds);
    if (lo)
        *lo = v[0];
    if (hi)
        *hi = v[n - 1];
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static int fit_seconds(const subsae_buffer *buf, int method, int64_t k, double *seconds,
                       int64_t *r99, int *r99_exact, int *method_used)
{
    subsae_subspace *s = NULL;
    int rc = subsae_subspace_create(&s);
    if (rc == SUBSAE_OK)
        rc = subsae_subspace_set_int(s, SUBSAE_SUBSPACE_METHOD, method);
    if (rc == SUBSAE_OK)
        rc = subsae_subspace_set_int(s, SUBSAE_SUBSPACE_RANK, k);
    double start = now();
    if (rc == SUBSAE_OK)
        rc = subsae_subspace_fit(s, buf);
    double elapsed = now() - start;
    int64_t used = 0;
    if (rc == SUBSAE_OK)
        rc = subsae_subspace_effective_rank(s, 0.99, r99, r99_exact);
    if (rc == SUBSAE_OK)
        rc = subsae_subspace_get_int(s, SUBSAE_SUBSPACE_METHOD_USED, &used);
    subsae_subspace_free(s);
    if (rc != SUBSAE_OK)
        return cli_check(rc, "subspace fit");
    *seconds = elapsed;
    if (method_used)
        *method_used = (int)used;
    return 0;
}

static int run_rank(int64_t n, int64_t d, int64_t k, int64_t repeat, struct rank_result *res)
{
    memset(res, 0, sizeof *res);
    res->rows = n;
    res->dim = d;
    res->rank = k;
    res->repeat = repeat;
    res->threads = subsae_get_num_threads();
    size_t nd = (size_t)n * (size_t)d, dd = (size_t)d * (size_t)d;
    float *z = malloc(nd * sizeof *z), *x = malloc(nd * sizeof *x);
    float *rot = malloc(dd * sizeof *rot), *gram = malloc(dd * sizeof *gram);
    double *cov = malloc(dd * sizeof *cov), *work = malloc(dd * sizeof *work);
    double *tau = malloc((size_t)d * sizeof *tau), *w = malloc((size_t)d * sizeof *w);
    int status = 1;
    if (!z || !x || !rot || !gram || !cov || !work || !tau || !w) {
        cli_fail("bench rank: cannot allocate %.0f MB for %lld x %lld", 2.0 * (double)nd * 4e-6,
                 (long long)n, (long long)d);
        goto done;
    }
    /* Data with a decaying spectrum: Z diag(s) R, Z uniform, s_j = 1 / (j + 1),
     * R a random rotation (QR of a uniform matrix). */
    uint64_t state = 42;
    for (size_t i = 0; i < nd; i++)
        z[i] = bench_uniform(&state);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < d; j++)
            z[(size_t)i * (size_t)d + (size_t)j] /= (float)(j + 1);
    for (size_t i = 0; i < dd; i++)
        work[i] = bench_uniform(&state);
    if (LAPACKE_dgeqrf(LAPACK_ROW_MAJOR, (int)d, (int)d, work, (int)d, tau) != 0 ||
        LAPACKE_dorgqr(LAPACK_ROW_MAJOR, (int)d, (int)d, (int)d, work, (int)d, tau) != 0) {
        cli_fail("bench rank: LAPACK QR of the rotation failed");
        goto done;
    }
    for (size_t i = 0; i < dd; i++)
        rot[i] = (float)work[i];
    /* Touch the output (page faults are not BLAS time) and warm the BLAS
     * thread pool, then time the machine's own rates. */
    memset(x, 0, nd * sizeof *x);
    memset(gram, 0, dd * sizeof *gram);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, 256, (int)d, (int)d, 1.0f, z, (int)d,
                rot, (int)d, 0.0f, x, (int)d);
    /* Rounds: the machine's ssyrk and dsyevd, then the exact and the
     * randomized fits right after, so that a round's ratios compare
     * times taken under the same load of a shared machine. */
    double t_sgemm[MAX_ROUNDS], t_ssyrk[MAX_ROUNDS], t_dsyevd[MAX_ROUNDS], t_exact[MAX_ROUNDS],
        t_rand[MAX_ROUNDS], r_exact[MAX_ROUNDS], r_rand[MAX_ROUNDS];
    subsae_buffer *buf = NULL;
    for (int64_t round = 0; round < repeat; round++) {
        double t = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)d, (int)d, 1.0f, z,
                    (int)d, rot, (int)d, 0.0f, x, (int)d);
        t_sgemm[round] = now() - t;

        t = now();
        cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)d, (int)n, 1.0f, x, (int)d, 0.0f,
                    gram, (int)d);
        t_ssyrk[round] = now() - t;

        for (size_t i = 0; i < dd; i++)
            cov[i] = (double)gram[i] / (double)(n - 1);
        t = now();
        lapack_int info = LAPACKE_dsyevd(LAPACK_COL_MAJOR, 'V', 'L', (int)d, cov, (int)d, w);
        t_dsyevd[round] = now() - t;
        if (info != 0) {
            cli_fail("bench rank: LAPACKE_dsyevd failed (info %d)", (int)info);
            goto done;
        }

        if (!buf && cli_check(subsae_buffer_wrap(x, SUBSAE_DTYPE_F32, n, d, d, SUBSAE_BORROW,
                                                 &buf),
                              "wrap the benchmark data"))
            goto done;
        int exact_flag, used;
        if (fit_seconds(buf, SUBSAE_METHOD_EXACT, k, &t_exact[round], &res->exact_r99,
                        &exact_flag, NULL))
            goto done_buf;
        if (fit_seconds(buf, SUBSAE_METHOD_RANDOMIZED, k, &t_rand[round], &res->randomized_r99,
                        &res->randomized_r99_exact, NULL))
            goto done_buf;
        r_exact[round] = t_exact[round] / (t_ssyrk[round] + t_dsyevd[round]);
        r_rand[round] = t_rand[round] / (t_ssyrk[round] + t_dsyevd[round]);
        if (round == 0) {
            /* Which method auto picks for this k (a fit, not timed here). */
            int64_t r;
            double seconds;
            if (fit_seconds(buf, SUBSAE_METHOD_AUTO, k, &seconds, &r, &exact_flag, &used))
                goto done_buf;
            res->auto_method = used == SUBSAE_METHOD_EXACT ? "exact" : "randomized";
        }
    }
    res->sgemm_s = median(t_sgemm, repeat, NULL, NULL);
    res->ssyrk_s = median(t_ssyrk, repeat, NULL, NULL);
    res->dsyevd_s = median(t_dsyevd, repeat, NULL, NULL);
    res->exact_s = median(t_exact, repeat, NULL, NULL);
    res->randomized_s = median(t_rand, repeat, NULL, NULL);
    res->exact_ratio = median(r_exact, repeat, &res->exact_ratio_min, &res->exact_ratio_max);
    res->randomized_ratio =
        median(r_rand, repeat, &res->randomized_ratio_min, &res->randomized_ratio_max);
    status = 0;
done_buf:
    subsae_buffer_free(buf);
done:
    free(z);
    free(x);
    free(rot);
    free(gram);
    free(cov);
    free(work);
    free(tau);
    free(w);
    return status;
}

static json_t *rank_json(const struct rank_result *r)
{
    double n = (double)r->rows, d = (double)r->dim;
    return json_pack("{s:s, s:I, s:I, s:I, s:i, s:I, s:s, s:f, s:f, s:f, s:f, s:f, s:f, s:f,"
                     " s:f, s:[f, f], s:f, s:[f, f], s:I, s:I, s:b, s:s}",
                     "name", "rank", "rows", (json_int_t)r->rows, "dim", (json_int_t)r->dim,
                     "rank", (json_int_t)r->rank, "threads", r->threads, "repeat",
                     (json_int_t)r->repeat, "statistic",
                     "median over rounds; ratios: median of each round's ratio, *_range: "
                     "[min, max]",
                     "sgemm_seconds", r->sgemm_s, "sgemm_gflops",
                     2.0 * n * d * d / r->sgemm_s * 1e-9, "ssyrk_seconds", r->ssyrk_s,
                     "ssyrk_gflops", n * d * (d + 1.0) / r->ssyrk_s * 1e-9, "dsyevd_seconds",
                     r->dsyevd_s, "exact_seconds", r->exact_s, "randomized_seconds",
                     r->randomized_s, "exact_ratio", r->exact_ratio, "exact_ratio_range",
                     r->exact_ratio_min, r->exact_ratio_max, "randomized_ratio",
                     r->randomized_ratio, "randomized_ratio_range", r->randomized_ratio_min,
                     r->randomized_ratio_max, "exact_r99", (json_int_t)r->exact_r99,
                     "randomized_r99", (json_int_t)r->randomized_r99, "randomized_r99_exact",
                     r->randomized_r99_exact, "auto_method",
                     r->auto_method ? r->auto_method : "");
}

static void rank_table(const struct rank_result *r)
{
    double n = (double)r->rows, d = (double)r->dim;
    printf("bench rank: %lld x %lld float32, k = %lld, %d threads, median of %lld rounds\n",
           (long long)r->rows, (long long)r->dim, (long long)r->rank, r->threads,
           (long long)r->repeat);
    printf("  %-26s %8.3f s  %7.1f GFLOPS\n", "cblas_sgemm (n x d x d)", r->sgemm_s,
           2.0 * n * d * d / r->sgemm_s * 1e-9);
    printf("  %-26s %8.3f s  %7.1f GFLOPS\n", "cblas_ssyrk (d x d of n)", r->ssyrk_s,
           n * d * (d + 1.0) / r->ssyrk_s * 1e-9);
    printf("  %-26s %8.3f s\n", "LAPACKE_dsyevd (d x d)", r->dsyevd_s);
    printf("  %-26s %8.3f s  %7.2f x (ssyrk + dsyevd) (%.2f-%.2f)   r99 %lld\n",
           "subspace exact", r->exact_s, r->exact_ratio, r->exact_ratio_min, r->exact_ratio_max,
           (long long)r->exact_r99);
    printf("  %-26s %8.3f s  %7.2f x (ssyrk + dsyevd) (%.2f-%.2f)   r99 %lld%s\n",
           "subspace randomized", r->randomized_s, r->randomized_ratio,
           r->randomized_ratio_min, r->randomized_ratio_max, (long long)r->randomized_r99,
           r->randomized_r99_exact ? "" : " (lower bound)");
    printf("  auto picks: %s\n", r->auto_method ? r->auto_method : "?");
}

static int bench_rank(int argc, char **argv, json_t *reports, bool print)
{
    int64_t n = 65536, d = 1024, k = 128, repeat = 5, threads = subsae_get_num_threads();
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *value = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--rows") && value) {
            if (!cli_parse_int64(a, value, 2, INT64_C(1) << 31, &n))
                return 2;
            i++;
        } else if (!strcmp(a, "--dim") && value) {
            if (!cli_parse_int64(a, value, 1, 1 << 15, &d))
                return 2;
            i++;
        } else if (!strcmp(a, "--rank") && value) {
            if (!cli_parse_int64(a, value, 0, INT64_C(1) << 31, &k))
                return 2;
            i++;
        } else if (!strcmp(a, "--repeat") && value) {
            if (!cli_parse_int64(a, value, 1, MAX_ROUNDS, &repeat))
                return 2;
            i++;
        } else if (!strcmp(a, "--threads") && value) {
            if (!cli_parse_int64(a, value, 1, cli_max_threads(), &threads))
                return 2;
            i++;
        } else {
            return cli_usage();
        }
    }
    if (k > d)
        return cli_fail("--rank %lld exceeds --dim %lld", (long long)k, (long long)d);
    struct rank_result res;
    const int saved = subsae_get_num_threads();
    subsae_set_num_threads((int)threads);
    int status = run_rank(n, d, k, repeat, &res);
    subsae_set_num_threads(saved);
    if (status)
        return 1;
    if (json_array_append_new(reports, rank_json(&res)) != 0)
        return cli_fail("out of memory building the JSON output");
    if (print)
        rank_table(&res);
    return 0;
}

/* ---- dispatch ------------------------------------------------------- */

/* Each benchmark, with the option sets that `bench all` (and so `make
 * bench`) runs: the shapes of issue 6. */
static const char *const rank_all[] = {"--rows 65536 --dim 1024 --rank 128 --threads 1",
                                       "--rows 65536 --dim 1024 --rank 128 --threads 2", NULL};
static const char *const train_all[] = {
    "--d-in 512 --features 16384 --k 32 --batch 4096 --threads 1",
    "--d-in 512 --features 16384 --k 32 --batch 4096 --threads 2 --speedup",
    "--d-in 512 --features 16384 --k 32 --batch 4096 --threads 2 --precision auto",
    "--d-in 64 --features 32768 --k 8 --batch 4096 --threads 2",
    "--d-in 64 --features 32768 --k 8 --batch 4096 --threads 2 --precision auto", NULL};
/* auto: bf16 where the CPU has it (issue 17's bf16 / fp32 ratios), the
 * fp32 figures again elsewhere. */
static const char *const encode_all[] = {
    "--d-in 768 --features 24576 --k 32 --batch 16 --versus 1",
    "--d-in 768 --features 24576 --k 32 --batch 1",
    "--d-in 768 --features 24576 --k 32 --batch 1 --precision auto",
    "--d-in 512 --features 16384 --k 32 --batch 4096",
    "--d-in 512 --features 16384 --k 32 --batch 4096 --precision auto", NULL};

static const struct benchmark {
    const char *name;
    int (*run)(int argc, char **argv, json_t *reports, bool print);
    const char *const *all;
} benchmarks[] = {
    {"train", bench_train, train_all},
    {"encode", bench_encode, encode_all},
    {"rank", bench_rank, rank_all},
};
enum { BENCHMARK_COUNT = sizeof benchmarks / sizeof benchmarks[0] };

/* Run one benchmark with the options in `line` (words separated by spaces). */
static int run_line(const struct benchmark *b, const char *line, json_t *reports, bool print)
{
    char copy[256], *words[32];
    int n = 0;
    snprintf(copy, sizeof copy, "%s", line);
    for (char *w = strtok(copy, " "); w && n < 32; w = strtok(NULL, " "))
        words[n++] = w;
    return b->run(n, words, reports, print);
}

static double number(const json_t *j, const char *key)
{
    return json_number_value(json_object_get(j, key));
}

/* The precision a report ran at ("fp32" when it does not say). */
static const char *precision_of(const json_t *r)
{
    const char *p = json_string_value(json_object_get(r, "precision"));
    return p ? p : "fp32";
}

static double phase_sum(const json_t *phases)
{
    double sum = 0.0;
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)phases, key, value)
        sum += json_number_value(value);
    return sum;
}

static bool same_train_shape(const json_t *a, const json_t *b)
{
    static const char *const keys[] = {"d_in", "features", "k", "batch", "threads"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (number(a, keys[i]) != number(b, keys[i]))
            return false;
    return true;
}

/* bf16 training against the fp32 run of the same shape before it, and the
 * most bf16 could gain there: the fp32 step with its encoder product at
 * bf16's time and every other phase as fp32 ran it. The shared phases
 * (top-k, decode, backward, Adam) bound the ratio below the product's own. */
static void precision_ratio(const json_t *fp32, const json_t *bf16)
{
    const json_t *p32 = json_object_get(fp32, "phases"), *p16 = json_object_get(bf16, "phases");
    const double step32 = phase_sum(p32), gemm32 = number(p32, "encode_gemm"),
                 gemm16 = number(p16, "encode_gemm");
    if (!(step32 > 0.0 && gemm16 > 0.0))
        return;
    printf("  %-40s %7d  %.2fx fp32; with fp32's other phases at most %.2fx (the product "
           "alone %.2fx)\n",
           "train bf16 / fp32", (int)number(bf16, "threads"),
           number(bf16, "tokens_per_second") / number(fp32, "tokens_per_second"),
           step32 / (step32 - gemm32 + gemm16), gemm32 / gemm16);
}

/* The short table of `bench all`. */
static void summary(const json_t *reports)
{
    const json_t *last_fp32_train = NULL;
    printf("\nsummary (ratios to this machine's own BLAS/LAPACK, measured in the same run)\n");
    printf("  %-40s %7s  %s\n", "benchmark", "threads", "result");
    size_t i;
    json_t *r;
    json_array_foreach(reports, i, r) {
        const char *name = json_string_value(json_object_get(r, "name"));
        char what[64];
        if (name && !strcmp(name, "train")) {
            long long d = (long long)number(r, "d_in"), m = (long long)number(r, "features"),
                      k = (long long)number(r, "k"), b = (long long)number(r, "batch");
            int threads = (int)number(r, "threads");
            double tps = number(r, "tokens_per_second");
            json_t *range = json_object_get(r, "roofline_fraction_range");
            snprintf(what, sizeof what, "train %lld/%lld/%lld/%lld %s", d, m, k, b,
                     precision_of(r));
            printf("  %-40s %7d  %8.0f tokens/s, %.2f of the product roofline (%.2f-%.2f)", what,
                   threads, tps, number(r, "roofline_fraction"),
                   json_number_value(json_array_get(range, 0)),
                   json_number_value(json_array_get(range, 1)));
            json_t *speedup = json_object_get(r, "speedup");
            if (speedup) {
                json_t *sr = json_object_get(r, "speedup_range");
                printf(", %.2fx one thread (%.2f-%.2f, interleaved)",
                       json_number_value(speedup), json_number_value(json_array_get(sr, 0)),
                       json_number_value(json_array_get(sr, 1)));
            }
            printf("\n");
            snprintf(what, sizeof what, "encode (inference) %lld/%lld/%lld", d, m, k);
            printf("  %-40s %7d  %8.0f tokens/s, %.2f of the product roofline\n", what, threads,
                   number(r, "encode_tokens_per_second"), number(r, "encode_roofline_fraction"));
            if (strcmp(precision_of(r), "bf16") != 0)
                last_fp32_train = r;
            else if (last_fp32_train && same_train_shape(last_fp32_train, r))
                precision_ratio(last_fp32_train, r);
        } else if (name && !strcmp(name, "encode")) {
            snprintf(what, sizeof what, "encode %lld/%lld/%lld, %lld rows %s",
                     (long long)number(r, "d_in"), (long long)number(r, "features"),
                     (long long)number(r, "k"), (long long)number(r, "batch"), precision_of(r));
            printf("  %-40s %7d  %8.0f tokens/s, %.2f of the roofline (%s)", what,
                   (int)number(r, "threads"), number(r, "tokens_per_second"),
                   number(r, "roofline_fraction"),
                   json_string_value(json_object_get(r, "roofline_bound")));
            if (json_object_get(r, "cost_ratio"))
                printf(", %.2fx the cost of %lld rows", number(r, "cost_ratio"),
                       (long long)number(r, "versus_batch"));
            printf("\n");
        } else if (name && !strcmp(name, "rank")) {
            snprintf(what, sizeof what, "rank exact %lld x %lld",
                     (long long)number(r, "rows"), (long long)number(r, "dim"));
            json_t *er = json_object_get(r, "exact_ratio_range");
            printf("  %-40s %7d  %.2fx (ssyrk + dsyevd) (%.2f-%.2f)\n", what,
                   (int)number(r, "threads"), number(r, "exact_ratio"),
                   json_number_value(json_array_get(er, 0)),
                   json_number_value(json_array_get(er, 1)));
            snprintf(what, sizeof what, "rank randomized %lld x %lld, k %lld",
                     (long long)number(r, "rows"), (long long)number(r, "dim"),
                     (long long)number(r, "rank"));
            json_t *rr = json_object_get(r, "randomized_ratio_range");
            printf("  %-40s %7d  %.2fx (ssyrk + dsyevd) (%.2f-%.2f)\n", what,
                   (int)number(r, "threads"), number(r, "randomized_ratio"),
                   json_number_value(json_array_get(rr, 0)),
                   json_number_value(json_array_get(rr, 1)));
        }
    }
}

CLI_COMMAND(bench, "train [--d-in D] [--features M] [--k K] [--batch B] [--steps S] "
                   "[--rounds R] [--warmup W] [--threads T] [--speedup] [--precision P] | "
                   "encode [--d-in D] "
                   "[--features M] [--k K] [--batch B] [--versus B0] [--calls C] [--rounds R] "
                   "[--threads T] [--precision P] | rank [--rows N] "
                   "[--dim D] [--rank K] [--repeat R] [--threads T] | all; [--json]")
{
    if (argc < 2)
        return cli_usage();
    const char *name = argv[1];
    bool json = false;
    int n_options = 0;
    char **options = calloc((size_t)argc, sizeof *options);
    if (!options)
        return cli_fail("out of memory");
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            json = true;
        else
            options[n_options++] = argv[i];
    }
    bool all = !strcmp(name, "all");
    if (all && n_options > 0) {
        free(options);
        return cli_fail("'bench all' takes no options but --json");
    }
    json_t *reports = json_array();
    if (!reports) {
        free(options);
        return cli_fail("out of memory");
    }
    int status = 0, matched = 0;
    for (int b = 0; b < BENCHMARK_COUNT && status == 0; b++) {
        if (!all && strcmp(name, benchmarks[b].name) != 0)
            continue;
        matched++;
        if (!all) {
            status = benchmarks[b].run(n_options, options, reports, !json);
            continue;
        }
        for (const char *const *line = benchmarks[b].all; *line && status == 0; line++) {
            if (!json)
                fflush(stdout);
            status = run_line(&benchmarks[b], *line, reports, !json);
            if (!json)
                printf("\n");
        }
    }
    free(options);
    if (!matched) {
        json_decref(reports);
        return cli_fail("unknown benchmark '%s' (train, encode, rank, all)", name);
    }
    if (status != 0 || (!json && !all)) {
        json_decref(reports);
        return status;
    }
    if (!json) {
        summary(reports);
        json_decref(reports);
        return 0;
    }
    if (all)
        return cli_print_json(json_pack("{s:o}", "benchmarks", reports));
    json_t *one = json_incref(json_array_get(reports, 0));
    json_decref(reports);
    return cli_print_json(one);
}

CLI_HELP(bench)
{
    fprintf(out, "Speed, reported as ratios to the machine's own BLAS/LAPACK measured in the\n"
                 "same run (make bench runs 'all').\n\n"
                 "bench train: tokens/s of training steps against the sgemm roofline of the\n"
                 "encoder's shape, and seconds per phase.\n");
    cli_help_line(out, "--d-in D", "input width (default 512)");
    cli_help_line(out, "--features M", "dictionary size (default 16384)");
    cli_help_line(out, "--k K", "active features per token (default 32)");
    cli_help_line(out, "--batch B", "tokens per step (default 4096)");
    cli_help_line(out, "--steps S", "timed steps per round (default 4)");
    cli_help_line(out, "--rounds R", "rounds, of which the median is reported (default 3)");
    cli_help_line(out, "--warmup W", "untimed steps first (default 2)");
    cli_help_line(out, "--threads T", "threads (default: all)");
    cli_help_line(out, "--speedup", "also time one-thread steps, interleaved, for the speed-up");
    cli_help_line(out, "--precision P",
                  "fp32 (default), bf16 or auto: the trainer's SUBSAE_TRAIN_PRECISION; bf16 "
                  "reports the mean bf16_disagreement_rate of the timed steps");
    fprintf(out, "\nbench encode: tokens/s of TopK encoding (subsae_sae_encode_sparse) of B\n"
                 "rows through a random model, against the roofline of the shape measured in\n"
                 "the same run: the lower of the sgemm bound and, for small B, the bound of\n"
                 "reading W_enc once per call at the measured streaming rate.\n");
    cli_help_line(out, "--d-in D", "input width (default 768)");
    cli_help_line(out, "--features M", "dictionary size (default 24576)");
    cli_help_line(out, "--k K", "active features per token (default 32)");
    cli_help_line(out, "--batch B", "rows per call (default 16)");
    cli_help_line(out, "--versus B0",
                  "also time calls of B0 rows, interleaved, and report the cost ratio");
    cli_help_line(out, "--precision P",
                  "fp32 (default), bf16 or auto: the model's encoder precision; the roofline "
                  "is then that precision's product and weight bytes, and bf16 reports the "
                  "share of selected features fp32 does not select");
    cli_help_line(out, "--calls C", "timed calls per round (default: about 64k rows, 3 to 20)");
    cli_help_line(out, "--rounds R", "rounds, of which the median is reported (default 5)");
    cli_help_line(out, "--threads T", "threads (default: all)");
    fprintf(out, "\nbench rank: the exact and randomized spectrum against ssyrk + dsyevd.\n");
    cli_help_line(out, "--rows N", "rows (default 65536)");
    cli_help_line(out, "--dim D", "width (default 1024)");
    cli_help_line(out, "--rank K", "randomized: directions (default 128)");
    cli_help_line(out, "--repeat R", "rounds (default 5)");
    cli_help_line(out, "--threads T", "threads (default: all)");
    fprintf(out, "\nbench all: the benchmarks of make bench.\n");
    cli_help_end(out, true);
}
