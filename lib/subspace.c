/* subsae_subspace: options, fit dispatch (exact / randomized / auto) and
 * everything computed from a fit (variances, ranks, basis, projections).
 * The methods themselves live in subspace_exact.c and
 * subspace_randomized.c, the streaming reader they share in
 * subspace_stream.c. */
#include "subspace.h"

#include "options.h"

#include <cblas.h>
#include <float.h>
#include <math.h>
#include <string.h>
#include <time.h>

/* ---- creation, options --------------------------------------------- */

int subsae_subspace_create(subsae_subspace **out)
{
    SUBSAE__NOT_NULL("subsae_subspace_create", out);
    subsae_subspace *s = subsae__calloc(1, sizeof *s);
    if (!s)
        return subsae__fail_nomem("subspace", sizeof *s);
    /* The defaults of the option table, through the setters. */
    int64_t n;
    const struct subsae__option *o = subsae__subspace_option_table(&n);
    for (int64_t i = 0; i < n; i++) {
        if (o[i].flags & SUBSAE_OPTION_READ_ONLY)
            continue;
        if (o[i].type == SUBSAE_OPTION_INT)
            subsae_subspace_set_int(s, o[i].option, o[i].int_default);
        else
            subsae_subspace_set_double(s, o[i].option, o[i].default_value);
    }
    s->coll.size = 1;
    *out = s;
    return SUBSAE_OK;
}

static void clear_fit(subsae_subspace *s)
{
    subsae__free(s->variances);
    subsae__free(s->basis);
    subsae__free(s->mean);
    s->variances = NULL;
    s->basis = NULL;
    s->mean = NULL;
    s->fitted = false;
    s->found = 0;
    s->dim = 0;
    s->rows = 0;
    s->total = 0.0;
    s->seconds = 0.0;
}

void subsae_subspace_free(subsae_subspace *s)
{
    if (!s)
        return;
    clear_fit(s);
    subsae__collective_release(&s->coll);
    subsae__free(s);
}

int subsae_subspace_set_int(subsae_subspace *s, int option, int64_t value)
{
    int rc;
    if (!subsae__option_set_int("subsae_subspace_set_int", SUBSAE_OBJECT_SUBSPACE, s, option,
                                value, "subsae_subspace_set_double", &rc))
        return rc;
    switch (option) {
    case SUBSAE_SUBSPACE_METHOD: s->method = (int)value; break;
    case SUBSAE_SUBSPACE_RANK: s->rank = value; break;
    case SUBSAE_SUBSPACE_OVERSAMPLE: s->oversample = value; break;
    case SUBSAE_SUBSPACE_POWER_ITERS: s->power_iters = value; break;
    case SUBSAE_SUBSPACE_SEED: s->seed = value; break;
    case SUBSAE_SUBSPACE_CENTER: s->center = (int)value; break;
    default: s->batch_rows = value; break; /* SUBSAE_SUBSPACE_BATCH_ROWS */
    }
    return SUBSAE_OK;
}

static int not_fitted(const char *fn)
{
    return subsae__fail(SUBSAE_E_STATE, SUBSAE_REASON_WRONG_STATE,
                        "%s: the subspace is not fitted (call subsae_subspace_fit first)", fn);
}

int subsae_subspace_get_int(const subsae_subspace *s, int option, int64_t *value)
{
    static const char *fn = "subsae_subspace_get_int";
    int rc;
    const struct subsae__option *o = subsae__option_get(fn, SUBSAE_OBJECT_SUBSPACE, s, value,
                                                        option, SUBSAE_OPTION_INT,
                                                        "subsae_subspace_get_double", &rc);
    if (!o)
        return rc;
    if ((o->flags & SUBSAE_OPTION_READ_ONLY) && !s->fitted)
        return not_fitted(fn);
    int64_t v;
    switch (option) {
    case SUBSAE_SUBSPACE_METHOD: v = s->method; break;
    case SUBSAE_SUBSPACE_RANK: v = s->rank; break;
    case SUBSAE_SUBSPACE_OVERSAMPLE: v = s->oversample; break;
    case SUBSAE_SUBSPACE_POWER_ITERS: v = s->power_iters; break;
    case SUBSAE_SUBSPACE_SEED: v = s->seed; break;
    case SUBSAE_SUBSPACE_CENTER: v = s->center; break;
    case SUBSAE_SUBSPACE_BATCH_ROWS: v = s->batch_rows; break;
    case SUBSAE_SUBSPACE_METHOD_USED: v = s->method_used; break;
    case SUBSAE_SUBSPACE_DIM: v = s->dim; break;
    case SUBSAE_SUBSPACE_ROWS: v = s->rows; break;
    default: v = s->found; break; /* SUBSAE_SUBSPACE_RANK_FOUND */
    }
    *value = v;
    return SUBSAE_OK;
}

int subsae_subspace_set_double(subsae_subspace *s, int option, double value)
{
    int rc;
    if (!subsae__option_set_double("subsae_subspace_set_double", SUBSAE_OBJECT_SUBSPACE, s,
                                   option, value, "subsae_subspace_set_int", &rc))
        return rc;
    s->threshold = value; /* the only writable double option */
    return SUBSAE_OK;
}

int subsae_subspace_get_double(const subsae_subspace *s, int option, double *value)
{
    static const char *fn = "subsae_subspace_get_double";
    int rc;
    if (!subsae__option_get(fn, SUBSAE_OBJECT_SUBSPACE, s, value, option, SUBSAE_OPTION_DOUBLE,
                            "subsae_subspace_get_int", &rc))
        return rc;
    if (option == SUBSAE_SUBSPACE_SECONDS && !s->fitted)
        return not_fitted(fn);
    *value = option == SUBSAE_SUBSPACE_SECONDS ? s->seconds : s->threshold;
    return SUBSAE_OK;
}

int subsae_subspace_set_callback(subsae_subspace *s, subsae_callback callback, void *user)
{
    SUBSAE__NOT_NULL("subsae_subspace_set_callback", s);
    s->callback = callback;
    s->user = callback ? user : NULL;
    return SUBSAE_OK;
}

int subsae_subspace_set_collective(subsae_subspace *s, subsae_allreduce_fn fn, int64_t rank,
                                   int64_t size, void *user)
{
    static const char *fn_name = "subsae_subspace_set_collective";
    SUBSAE__NOT_NULL(fn_name, s);
    return subsae__collective_set(&s->coll, fn_name, fn, rank, size, user);
}

/* ---- fit ------------------------------------------------------------ */

/* The cost model of SUBSAE_METHOD_AUTO, in flops weighted by how fast
 * OpenBLAS runs each kind (units: flops of cblas_ssyrk, the fastest kernel
 * here). Weights from `subsae bench rank` (65,536 x 1,024, 2 cores, AVX2
 * OpenBLAS 0.3.21): ssyrk ~150 GFLOPS; LAPACKE_dsyevd with vectors ~20
 * GFLOPS on its 3 d^3 model flops (x 7.5); the tall-skinny GEMMs of a
 * randomized pass ~110 GFLOPS (x 1.35) but never less than ~300
 * ssyrk-flops per value (below k + p of ~50 a pass costs the same: packing
 * and memory traffic, not arithmetic); reading, shifting and summing a
 * value ~90. The ratios, not the absolute rates, decide; they are those of
 * any recent x86 OpenBLAS. */
enum { COST_STREAM = 90, COST_PASS_FLOOR = 300 };
static const double COST_EIG = 7.5, COST_GEMM = 1.35;

double subsae__subspace_exact_cost(int64_t n, int64_t d)
{
    double dn = (double)n, dd = (double)d;
    return dn * dd * (dd + 1.0) + COST_EIG * 3.0 * dd * dd * dd + COST_STREAM * dn * dd;
}

double subsae__subspace_randomized_cost(int64_t n, int64_t d, int64_t k, int64_t p, int64_t q)
{
    /* q + 1 passes of X^T (X Q) (4 n d l flops each), a QR of d x l before
     * the first and after each of the q shifted ones (with the l x l
     * projection and its eigenvalues for the shift), then the Nystrom step
     * on the last pass's product: d x l products, a QR and two l x l
     * eigensolves. No pass of its own. */
    int64_t l = p >= d - k ? d : k + p;
    double dn = (double)n, dd = (double)d, dl = (double)l, q1 = (double)q;
    double gemm = COST_GEMM * 4.0 * dn * dd * dl, floor = COST_PASS_FLOOR * dn * dd;
    double pass = (gemm > floor ? gemm : floor) + COST_STREAM * dn * dd;
    double qr = COST_EIG * 4.0 * dd * dl * dl;
    double shift = COST_EIG * (2.0 * dd * dl * dl + 4.0 * dl * dl * dl);
    double nystrom = COST_EIG * (10.0 * dd * dl * dl + 18.0 * dl * dl * dl);
    return (q1 + 1.0) * (pass + qr) + q1 * shift + nystrom;
}

static double seconds_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* A hash of the options every worker must share (they decide the sizes of
 * the all-reduces). */
static uint64_t options_hash(const subsae_subspace *s)
{
    int64_t v[] = {s->method, s->rank, s->oversample, s->power_iters, s->seed, s->center};
    return subsae__hash_bytes(SUBSAE__HASH_START, v, sizeof v);
}

int subsae_subspace_fit(subsae_subspace *s, const subsae_buffer *buf)
{
    static const char *fn = "subsae_subspace_fit";
    SUBSAE__NOT_NULL(fn, s);
    SUBSAE__NOT_NULL(fn, buf);
    int64_t n = subsae_buffer_rows(buf), d = subsae_buffer_dim(buf);
    int64_t root = 0;
    if (subsae__collective_on(&s->coll)) {
        /* Every worker learns the rows of all and checks the widths and
         * options agree; the checks below then give the same answer on
         * every worker. */
        int64_t offset;
        int rc = subsae__collective_rows(&s->coll, SUBSAE_OK, n, d, &offset, &n, &root, fn);
        if (rc == SUBSAE_OK)
            rc = subsae__collective_same(&s->coll, SUBSAE_OK, options_hash(s),
                                         "subsae_subspace_fit: the options");
        if (rc != SUBSAE_OK)
            return rc;
    }
    if (n < 2)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                            "%s: the buffer has %lld rows; at least 2 are needed", fn,
                            (long long)n);
    if (s->rank > d)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                            "%s: RANK = %lld exceeds the dimension %lld", fn,
                            (long long)s->rank, (long long)d);
    if (d > INT32_MAX)
        return subsae__fail(SUBSAE_E_UNSUPPORTED, SUBSAE_REASON_BAD_VALUE,
                            "%s: dimension %lld exceeds the BLAS index range", fn,
                            (long long)d);
    clear_fit(s);
    s->fit_rows = n;
    s->fit_root = root;

    int64_t k = s->rank == 0 ? d : s->rank;
    int method = s->method;
    if (method == SUBSAE_METHOD_AUTO) {
        bool covers_all = s->oversample >= d - k;
        method = covers_all || subsae__subspace_exact_cost(n, d) <=
                                   subsae__subspace_randomized_cost(n, d, k, s->oversample,
                                                                    s->power_iters)
                     ? SUBSAE_METHOD_EXACT
                     : SUBSAE_METHOD_RANDOMIZED;
    }

    double start = seconds_now();
    struct subsae__subspace_fit fit = {0};
    int rc = method == SUBSAE_METHOD_EXACT ? subsae__subspace_exact(s, buf, &fit)
                                           : subsae__subspace_randomized(s, buf, k, &fit);
    if (rc != SUBSAE_OK)
        return rc;
    s->variances = fit.variances;
    s->basis = fit.basis;
    s->mean = fit.mean;
    s->found = fit.found;
    s->total = fit.total;
    s->method_used = method;
    s->dim = d;
    s->rows = n;
    s->seconds = seconds_now() - start;
    s->fitted = true;
    return SUBSAE_OK;
}

/* ---- results -------------------------------------------------------- */

/* The checks of a result query: the estimator and the result pointer
 * `out` (named `out_name`) not NULL, a fit done. */
static int check_result(const char *fn, const subsae_subspace *s, const void *out,
                        const char *out_name)
{
    SUBSAE__NOT_NULL(fn, s);
    if (!out)
        return subsae__fail_null(fn, out_name);
    if (!s->fitted)
        return not_fitted(fn);
    return SUBSAE_OK;
}

static int check_fitted_array(const char *fn, const subsae_subspace *s, const void *out,
                              int64_t count)
{
    SUBSAE__NOT_NULL(fn, s);
    if (!s->fitted)
        return not_fitted(fn);
    if (count < 0)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE, "%s: count %lld < 0", fn,
                            (long long)count);
    if (count > 0 && !out)
        return subsae__fail_null(fn, "out");
    if (count > s->found)
        return subsae__fail(SUBSAE_E_RANGE, SUBSAE_REASON_INDEX_OUT_OF_RANGE,
                            "%s: count %lld exceeds the %lld directions found (RANK_FOUND)", fn,
                            (long long)count, (long long)s->found);
    return SUBSAE_OK;
}

/* The spectrum queries: each of the first `count` variances as itself, as
 * a singular value of the centred data, or as a fraction of the total. */
enum variance_form { VARIANCES, SINGULAR_VALUES, EXPLAINED_RATIOS };

static int variances_as(const char *fn, const subsae_subspace *s, double *out, int64_t count,
                        enum variance_form as)
{
    int rc = check_fitted_array(fn, s, out, count);
    for (int64_t i = 0; !rc && i < count; i++) {
        const double v = s->variances[i];
        out[i] = as == VARIANCES         ? v
                 : as == SINGULAR_VALUES ? sqrt((double)(s->rows - 1) * v)
                 : s->total > 0.0        ? v / s->total
                                         : 0.0;
    }
    return rc;
}

int subsae_subspace_variances(const subsae_subspace *s, double *out, int64_t count)
{
    return variances_as("subsae_subspace_variances", s, out, count, VARIANCES);
}

int subsae_subspace_singular_values(const subsae_subspace *s, double *out, int64_t count)
{
    return variances_as("subsae_subspace_singular_values", s, out, count, SINGULAR_VALUES);
}

int subsae_subspace_explained_ratios(const subsae_subspace *s, double *out, int64_t count)
{
    return variances_as("subsae_subspace_explained_ratios", s, out, count, EXPLAINED_RATIOS);
}

int subsae_subspace_total_variance(const subsae_subspace *s, double *out)
{
    int rc = check_result("subsae_subspace_total_variance", s, out, "out");
    if (rc)
        return rc;
    *out = s->total;
    return SUBSAE_OK;
}

int subsae_subspace_mean(const subsae_subspace *s, float *out)
{
    int rc = check_result("subsae_subspace_mean", s, out, "out");
    if (rc)
        return rc;
    memcpy(out, s->mean, (size_t)s->dim * sizeof *out);
    return SUBSAE_OK;
}

int subsae_subspace_basis(const subsae_subspace *s, int64_t k, float *out, int64_t out_stride)
{
    static const char *fn = "subsae_subspace_basis";
    int rc = check_fitted_array(fn, s, out, k);
    if (rc)
        return rc;
    if (out_stride < s->dim)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                            "%s: out_stride %lld < dim %lld", fn, (long long)out_stride,
                            (long long)s->dim);
    for (int64_t r = 0; r < k; r++)
        memcpy(out + r * out_stride, s->basis + r * s->dim, (size_t)s->dim * sizeof *out);
    return SUBSAE_OK;
}

/* All d variances known: the exact method, or the randomized one when
 * k + p reached d. */
static bool complete(const subsae_subspace *s)
{
    return s->found == s->dim;
}

int subsae_subspace_effective_rank(const subsae_subspace *s, double tau, int64_t *r, int *exact)
{
    static const char *fn = "subsae_subspace_effective_rank";
    SUBSAE__NOT_NULL(fn, s);
    SUBSAE__NOT_NULL(fn, r);
    if (!(tau > 0.0 && tau <= 1.0))
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                            "%s: tau = %g is out of range (0, 1]", fn, tau);
    if (!s->fitted)
        return not_fitted(fn);
    /* With the whole spectrum the denominator is the sum of the same
     * variances (equal to the trace up to rounding), so that tau = 1 is
     * reached within d; otherwise it is the exact trace. */
    double denominator = 0.0;
    if (complete(s))
        for (int64_t i = 0; i < s->found; i++)
            denominator += s->variances[i];
    else
        denominator = s->total;
    int64_t rank;
    int certain = 1;
    if (!(denominator > 0.0)) {
        rank = 0; /* no variance at all: every row equals the mean */
    } else {
        double target = tau * denominator, cumulative = 0.0;
        rank = -1;
        for (int64_t i = 0; i < s->found; i++) {
            cumulative += s->variances[i];
            if (cumulative >= target) {
                rank = i + 1;
                break;
            }
        }
        if (rank < 0) {
            if (complete(s)) {
                rank = s->found;
            } else {
                rank = s->found + 1; /* a lower bound: more directions are needed */
                certain = 0;
            }
        }
    }
    *r = rank;
    if (exact)
        *exact = certain;
    return SUBSAE_OK;
}

int subsae_subspace_entropy_rank(const subsae_subspace *s, double *rank, int *exact)
{
    int rc = check_result("subsae_subspace_entropy_rank", s, rank, "rank");
    if (rc)
        return rc;
    /* p_i = sigma_i / sum sigma_j; sigma_i is proportional to
     * sqrt(variance_i) and the factor cancels. */
    double total = 0.0;
    for (int64_t i = 0; i < s->found; i++)
        total += sqrt(s->variances[i]);
    double entropy = 0.0;
    if (total > 0.0) {
        for (int64_t i = 0; i < s->found; i++) {
            double p = sqrt(s->variances[i]) / total;
            if (p > 0.0)
                entropy -= p * log(p);
        }
        *rank = exp(entropy);
    } else {
        *rank = 0.0;
    }
    if (exact)
        *exact = complete(s) ? 1 : 0;
    return SUBSAE_OK;
}

static int check_projection(const char *fn, const subsae_subspace *s, const float *a,
                            const char *a_name, int64_t n, int64_t a_stride, int64_t a_cols,
                            int64_t k, const float *b, const char *b_name, int64_t b_stride,
                            int64_t b_cols)
{
    SUBSAE__NOT_NULL(fn, s);
    if (n > 0 && !a)
        return subsae__fail_null(fn, a_name);
    if (n > 0 && !b)
        return subsae__fail_null(fn, b_name);
    if (!s->fitted)
        return not_fitted(fn);
    if (n < 0)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE, "%s: n = %lld < 0", fn,
                            (long long)n);
    if (k < 1 || k > s->found)
        return subsae__fail(k < 1 ? SUBSAE_E_INVALID : SUBSAE_E_RANGE,
                            k < 1 ? SUBSAE_REASON_BAD_VALUE : SUBSAE_REASON_INDEX_OUT_OF_RANGE,
                            "%s: k = %lld must be in [1, %lld] (RANK_FOUND)", fn, (long long)k,
                            (long long)s->found);
    a_cols = a_cols < 0 ? k : a_cols;
    b_cols = b_cols < 0 ? k : b_cols;
    if (a_stride < a_cols || b_stride < b_cols)
        return subsae__fail(
            SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
            "%s: strides %lld (%s) and %lld (%s) must be at least %lld and %lld", fn,
            (long long)a_stride, a_name, (long long)b_stride, b_name, (long long)a_cols,
            (long long)b_cols);
    if (a_stride > INT32_MAX || b_stride > INT32_MAX)
        return subsae__fail(SUBSAE_E_UNSUPPORTED, SUBSAE_REASON_BAD_VALUE,
                            "%s: strides above 2^31 - 1 exceed the BLAS index range", fn);
    return SUBSAE_OK;
}

int subsae_subspace_project(const subsae_subspace *s, const float *x, int64_t n,
                            int64_t x_stride, int64_t k, float *coords, int64_t coords_stride)
{
    static const char *fn = "subsae_subspace_project";
    int rc = check_projection(fn, s, x, "x", n, x_stride, s ? s->dim : 0, k, coords, "coords",
                              coords_stride, -1);
    if (rc)
        return rc;
    if (n == 0)
        return SUBSAE_OK;
    const int64_t d = s->dim;
    /* Centre a chunk of rows at a time in float (subtracting before the
     * product keeps precision when the mean is large), then one GEMM. */
    enum { CHUNK = 256 };
    int64_t chunk = n < CHUNK ? n : CHUNK;
    float *tmp = subsae__subspace_alloc((size_t)chunk * (size_t)d, sizeof(float),
                                        "subsae_subspace_project scratch");
    if (!tmp)
        return SUBSAE_E_NOMEM;
    for (int64_t first = 0; first < n; first += chunk) {
        int64_t m = n - first < chunk ? n - first : chunk;
        for (int64_t i = 0; i < m; i++) {
            const float *row = x + (first + i) * x_stride;
            for (int64_t j = 0; j < d; j++)
                tmp[i * d + j] = row[j] - s->mean[j];
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)k, (int)d, 1.0f, tmp,
                    (int)d, s->basis, (int)d, 0.0f, coords + first * coords_stride,
                    (int)coords_stride);
    }
    subsae__free(tmp);
    return SUBSAE_OK;
}

int subsae_subspace_reconstruct(const subsae_subspace *s, const float *coords, int64_t n,
                                int64_t coords_stride, int64_t k, float *x, int64_t x_stride)
{
    static const char *fn = "subsae_subspace_reconstruct";
    int rc = check_projection(fn, s, coords, "coords", n, coords_stride, -1, k, x, "x",
                              x_stride, s ? s->dim : 0);
    if (rc)
        return rc;
    if (n == 0)
        return SUBSAE_OK;
    const int64_t d = s->dim;
    for (int64_t i = 0; i < n; i++)
        memcpy(x + i * x_stride, s->mean, (size_t)d * sizeof *x);
    enum { CHUNK = 1 << 20 }; /* rows per GEMM, within the BLAS index range */
    for (int64_t first = 0; first < n; first += CHUNK) {
        int64_t m = n - first < CHUNK ? n - first : CHUNK;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)d, (int)k, 1.0f,
                    coords + first * coords_stride, (int)coords_stride, s->basis, (int)d, 1.0f,
                    x + first * x_stride, (int)x_stride);
    }
    return SUBSAE_OK;
}
