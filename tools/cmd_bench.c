/* `subsae bench NAME|all [options] [--json]`: speed of the library as
 * ratios to the machine's own BLAS/LAPACK rates measured in the same run.
 * Each benchmark registers itself in the table `benchmarks` below; `all`
 * runs every one with its default options. Benchmarks may call CBLAS and
 * LAPACKE directly (to measure the machine); the library is used through
 * its public API only. */
#include "cli.h"

#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
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

static float uniform_pm1(uint64_t *state)
{
    return (float)((double)(next_u64(state) >> 40) * 0x1.0p-23 - 1.0);
}

/* ---- bench rank ----------------------------------------------------- */

struct rank_result {
    int64_t rows, dim, rank, repeat;
    int threads;
    double sgemm_s, ssyrk_s, dsyevd_s, exact_s, randomized_s;
    int64_t exact_r99, randomized_r99;
    int randomized_r99_exact;
    const char *auto_method;
};

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
        z[i] = uniform_pm1(&state);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < d; j++)
            z[(size_t)i * (size_t)d + (size_t)j] /= (float)(j + 1);
    for (size_t i = 0; i < dd; i++)
        work[i] = uniform_pm1(&state);
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
    res->sgemm_s = res->ssyrk_s = res->dsyevd_s = res->exact_s = res->randomized_s = INFINITY;
    subsae_buffer *buf = NULL;
    for (int64_t round = 0; round < repeat; round++) {
        double t = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)d, (int)d, 1.0f, z,
                    (int)d, rot, (int)d, 0.0f, x, (int)d);
        res->sgemm_s = fmin(res->sgemm_s, now() - t);

        t = now();
        cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)d, (int)n, 1.0f, x, (int)d, 0.0f,
                    gram, (int)d);
        res->ssyrk_s = fmin(res->ssyrk_s, now() - t);

        for (size_t i = 0; i < dd; i++)
            cov[i] = (double)gram[i] / (double)(n - 1);
        t = now();
        lapack_int info = LAPACKE_dsyevd(LAPACK_COL_MAJOR, 'V', 'L', (int)d, cov, (int)d, w);
        res->dsyevd_s = fmin(res->dsyevd_s, now() - t);
        if (info != 0) {
            cli_fail("bench rank: LAPACKE_dsyevd failed (info %d)", (int)info);
            goto done;
        }

        if (!buf && cli_check(subsae_buffer_wrap(x, SUBSAE_DTYPE_F32, n, d, d, SUBSAE_BORROW,
                                                 &buf),
                              "wrap the benchmark data"))
            goto done;
        double seconds;
        int exact_flag, used;
        if (fit_seconds(buf, SUBSAE_METHOD_EXACT, k, &seconds, &res->exact_r99, &exact_flag,
                        NULL))
            goto done_buf;
        res->exact_s = fmin(res->exact_s, seconds);
        if (fit_seconds(buf, SUBSAE_METHOD_RANDOMIZED, k, &seconds, &res->randomized_r99,
                        &res->randomized_r99_exact, NULL))
            goto done_buf;
        res->randomized_s = fmin(res->randomized_s, seconds);
        if (round == 0) {
            /* Which method auto picks for this k (a fit, not timed here). */
            int64_t r;
            if (fit_seconds(buf, SUBSAE_METHOD_AUTO, k, &seconds, &r, &exact_flag, &used))
                goto done_buf;
            res->auto_method = used == SUBSAE_METHOD_EXACT ? "exact" : "randomized";
        }
    }
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
    return json_pack("{s:s, s:I, s:I, s:I, s:i, s:I, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f,"
                     " s:I, s:I, s:b, s:s}",
                     "name", "rank", "rows", (json_int_t)r->rows, "dim", (json_int_t)r->dim,
                     "rank", (json_int_t)r->rank, "threads", r->threads, "repeat",
                     (json_int_t)r->repeat, "sgemm_seconds", r->sgemm_s, "sgemm_gflops",
                     2.0 * n * d * d / r->sgemm_s * 1e-9, "ssyrk_seconds", r->ssyrk_s,
                     "ssyrk_gflops", n * d * (d + 1.0) / r->ssyrk_s * 1e-9, "dsyevd_seconds",
                     r->dsyevd_s, "exact_seconds", r->exact_s, "randomized_seconds",
                     r->randomized_s, "exact_ratio", r->exact_s / (r->ssyrk_s + r->dsyevd_s),
                     "randomized_ratio", r->randomized_s / (r->ssyrk_s + r->dsyevd_s),
                     "exact_r99", (json_int_t)r->exact_r99, "randomized_r99",
                     (json_int_t)r->randomized_r99, "randomized_r99_exact",
                     r->randomized_r99_exact, "auto_method",
                     r->auto_method ? r->auto_method : "");
}

static void rank_table(const struct rank_result *r)
{
    double n = (double)r->rows, d = (double)r->dim;
    printf("bench rank: %lld x %lld float32, k = %lld, %d threads, best of %lld\n",
           (long long)r->rows, (long long)r->dim, (long long)r->rank, r->threads,
           (long long)r->repeat);
    printf("  %-26s %8.3f s  %7.1f GFLOPS\n", "cblas_sgemm (n x d x d)", r->sgemm_s,
           2.0 * n * d * d / r->sgemm_s * 1e-9);
    printf("  %-26s %8.3f s  %7.1f GFLOPS\n", "cblas_ssyrk (d x d of n)", r->ssyrk_s,
           n * d * (d + 1.0) / r->ssyrk_s * 1e-9);
    printf("  %-26s %8.3f s\n", "LAPACKE_dsyevd (d x d)", r->dsyevd_s);
    printf("  %-26s %8.3f s  %7.2f x (ssyrk + dsyevd)   r99 %lld\n", "subspace exact", r->exact_s,
           r->exact_s / (r->ssyrk_s + r->dsyevd_s), (long long)r->exact_r99);
    printf("  %-26s %8.3f s  %7.2f x (ssyrk + dsyevd)   r99 %lld%s\n", "subspace randomized",
           r->randomized_s, r->randomized_s / (r->ssyrk_s + r->dsyevd_s),
           (long long)r->randomized_r99, r->randomized_r99_exact ? "" : " (lower bound)");
    printf("  auto picks: %s\n", r->auto_method ? r->auto_method : "?");
}

static int bench_rank(int argc, char **argv, bool all, json_t *reports)
{
    int64_t n = 65536, d = 1024, k = 128, repeat = 3;
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
            if (!cli_parse_int64(a, value, 1, 100, &repeat))
                return 2;
            i++;
        } else if (!all) {
            return cli_usage();
        }
    }
    if (k > d)
        return cli_fail("--rank %lld exceeds --dim %lld", (long long)k, (long long)d);
    struct rank_result res;
    if (run_rank(n, d, k, repeat, &res))
        return 1;
    if (reports)
        return json_array_append_new(reports, rank_json(&res)) == 0
                   ? 0
                   : cli_fail("out of memory building the JSON output");
    rank_table(&res);
    return 0;
}

/* ---- dispatch ------------------------------------------------------- */

/* run(argc, argv, all, reports): argv holds the benchmark's options (for
 * `all`, none); with reports != NULL append one JSON object to it instead
 * of printing a table. Returns an exit code. */
static const struct benchmark {
    const char *name;
    int (*run)(int argc, char **argv, bool all, json_t *reports);
} benchmarks[] = {
    {"rank", bench_rank},
};
enum { BENCHMARK_COUNT = sizeof benchmarks / sizeof benchmarks[0] };

CLI_COMMAND(bench, "rank|all [--rows N] [--dim D] [--rank K] [--repeat R] [--json]")
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
    json_t *reports = json ? json_array() : NULL;
    int status = 0, matched = 0;
    for (int b = 0; b < BENCHMARK_COUNT && status == 0; b++) {
        if (!all && strcmp(name, benchmarks[b].name) != 0)
            continue;
        matched++;
        status = benchmarks[b].run(n_options, options, all, reports);
    }
    free(options);
    if (!matched) {
        json_decref(reports);
        return cli_fail("unknown benchmark '%s' (rank, all)", name);
    }
    if (status != 0 || !json) {
        json_decref(reports);
        return status;
    }
    if (all)
        return cli_print_json(json_pack("{s:o}", "benchmarks", reports));
    json_t *one = json_incref(json_array_get(reports, 0));
    json_decref(reports);
    return cli_print_json(one);
}
