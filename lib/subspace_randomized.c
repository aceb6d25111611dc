/* The randomized method: subspace iteration on the centred Gram operator
 * (Halko, Martinsson & Tropp 2011, algorithms 4.4 and 5.3), with shifted
 * power passes (as in dashSVD, Feng et al. 2024) and the Ritz values from
 * the last pass's product (Nystrom: no extra pass for Rayleigh-Ritz).
 *
 *   Omega ~ N(0, 1)^{d x l}, l = min(k + p, d), Q = orth(Omega)
 *   q times: W = C Q, T = Q^T W, sigma from T,
 *            Q = orth(W - sigma Q)                 (passes 1 .. q)
 *   W = C Q, T = Q^T W                             (pass q + 1)
 *   C ~ W T^+ W^T (Nystrom) = Q_F R R^T Q_F^T with Q_F R = qr(W V
 *   mu^(-1/2)), T = V diag(mu) V^T
 *   variances = top k eigenvalues of R R^T, basis = Q_F times their vectors
 *
 * The Nystrom approximation from Q is Rayleigh-Ritz on span(C^(1/2) Q): a
 * half power more than Rayleigh-Ritz on Q itself, and what scikit-learn's
 * randomized_svd gets from its last half pass, for q + 1 passes over the
 * rows. The shift sigma (kept from pass to pass, never decreasing) is half
 * the smallest Ritz value of the pass, at most the mean of the variance
 * the Ritz values leave out: below half the l-th eigenvalue no wanted
 * direction converges slower than without it, and the cap keeps it below
 * the unwanted eigenvalues when a gap follows the l-th (then the unshifted
 * passes converge at once anyway). With l = d, Q spans everything: no
 * power pass, and Rayleigh-Ritz on Q (T itself) is exact.
 *
 * C = (Y^T Y - n delta delta^T) / (n - 1) is never formed: each pass
 * streams the rows y = x - c (c the pilot shift, the first batch's mean),
 * computes Z = Y_b Q and Y_b^T Z per batch in float32 GEMMs and adds them
 * into a double accumulator; the rank-one centring correction uses delta,
 * the mean of the shifted rows, which the first pass also accumulates
 * (with the sums of squares that give the exact trace).
 *
 * With workers (subsae_subspace_set_collective) every worker draws the
 * same Omega, streams its own rows in each pass, and the workers agree on
 * success and sum the pass's d x l product and, in the first pass, the
 * column sums (d l + 2 d doubles); the centring correction, the shift, the
 * QR and the Nystrom step then run on the same numbers on every worker. */
#include "rng.h"
#include "subspace.h"

#include <cblas.h>
#include <float.h>
#include <lapacke.h>
#include <math.h>
#include <string.h>

enum { OMEGA_STREAM = 0x5355 }; /* RNG stream of the Gaussian start */

static int lapack_failure(const char *what, lapack_int info, int64_t rows, int64_t cols)
{
    if (info == LAPACK_WORK_MEMORY_ERROR || info == LAPACK_TRANSPOSE_MEMORY_ERROR)
        return subsae__fail(SUBSAE_E_NOMEM, SUBSAE_REASON_OUT_OF_MEMORY,
                            "subsae_subspace_fit: %s could not allocate its workspace "
                            "(%lld x %lld)",
                            what, (long long)rows, (long long)cols);
    return subsae__fail(info < 0 ? SUBSAE_E_NONFINITE : SUBSAE_E_RANGE, SUBSAE_REASON_BAD_VALUE,
                        "subsae_subspace_fit: %s failed (info %d) on a %lld x %lld matrix",
                        what, (int)info, (long long)rows, (long long)cols);
}

/* Q (d x l, row-major) = orthonormal basis of the columns of w; q_float gets
 * it rounded to float and q_double that rounding widened again, so the
 * Rayleigh-Ritz step sees exactly the Q the passes used. */
static int orthonormalise(double *w, int64_t d, int64_t l, double *tau, float *q_float,
                          double *q_double)
{
    lapack_int info = LAPACKE_dgeqrf(LAPACK_ROW_MAJOR, (lapack_int)d, (lapack_int)l, w,
                                     (lapack_int)l, tau);
    if (info != 0)
        return lapack_failure("LAPACKE_dgeqrf", info, d, l);
    info = LAPACKE_dorgqr(LAPACK_ROW_MAJOR, (lapack_int)d, (lapack_int)l, (lapack_int)l, w,
                          (lapack_int)l, tau);
    if (info != 0)
        return lapack_failure("LAPACKE_dorgqr", info, d, l);
    for (size_t i = 0; i < (size_t)d * (size_t)l; i++) {
        q_float[i] = (float)w[i];
        q_double[i] = (double)q_float[i];
    }
    return SUBSAE_OK;
}

/* One pass over this worker's rows: acc (d x l, double) = the sum over
 * the batches of Y_b^T (Y_b Q), each product a float32 GEMM. */
static int stream_pass(struct subsae__subspace_stream *st, const float *q_float, int64_t l,
                       float *z, float *part, double *acc)
{
    const int64_t n = st->n, d = st->d;
    memset(acc, 0, (size_t)d * (size_t)l * sizeof *acc);
    subsae__subspace_stream_begin_pass(st);
    for (int64_t first = 0; first < n; first += st->batch_rows) {
        int64_t m = n - first < st->batch_rows ? n - first : st->batch_rows;
        int rc = subsae__subspace_stream_read(st, first, m);
        if (rc != SUBSAE_OK)
            return rc;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)l, (int)d, 1.0f,
                    st->batch, (int)d, q_float, (int)l, 0.0f, z, (int)l);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)d, (int)l, (int)m, 1.0f,
                    st->batch, (int)d, z, (int)l, 0.0f, part, (int)l);
#pragma omp parallel for if (d * l >= (1 << 18)) num_threads(st->threads) schedule(static)
        for (int64_t i = 0; i < d * l; i++)
            acc[i] += part[i];
        rc = subsae__subspace_stream_progress(st, m);
        if (rc != SUBSAE_OK)
            return rc;
    }
    return SUBSAE_OK;
}

/* proj = Q^T delta (l doubles), delta the mean of the shifted rows of all
 * workers; false (proj untouched) when not centring. */
static bool project_mean(const struct subsae__subspace_stream *st, const double *q_double,
                         int64_t l, double *proj)
{
    if (!st->center)
        return false;
    const double dn = (double)st->n_total;
    for (int64_t j = 0; j < l; j++)
        proj[j] = 0.0;
    for (int64_t i = 0; i < st->d; i++) {
        double delta = st->sum[i] / dn;
        for (int64_t j = 0; j < l; j++)
            proj[j] += delta * q_double[i * l + j];
    }
    return true;
}

/* The centring correction of a power pass: w -= n delta (delta^T Q), with
 * proj (l doubles) as scratch. */
static void center_product(const struct subsae__subspace_stream *st, const double *q_double,
                           int64_t l, double *w, double *proj)
{
    if (!project_mean(st, q_double, l, proj))
        return;
    const double dn = (double)st->n_total;
    for (int64_t i = 0; i < st->d; i++) {
        double delta = st->sum[i] / dn;
        for (int64_t j = 0; j < l; j++)
            w[i * l + j] -= dn * delta * proj[j];
    }
}

/* The arrays of a randomized fit: Q, the passes' products, the
 * projected problems and the results. */
struct randomized {
    int64_t d, l, found;
    float *q_float, *z, *w_batch, *mean, *basis;
    double *q_double, *w, *tau, *t, *g, *theta, *u, *variances;
};

static void randomized_free(struct randomized *r)
{
    subsae__free(r->q_float);
    subsae__free(r->z);
    subsae__free(r->w_batch);
    subsae__free(r->q_double);
    subsae__free(r->w);
    subsae__free(r->tau);
    subsae__free(r->t);
    subsae__free(r->g);
    subsae__free(r->theta);
    subsae__free(r->u);
    subsae__free(r->variances);
    subsae__free(r->mean);
    subsae__free(r->basis);
}

/* SUBSAE_E_NOMEM (recorded) when an array does not fit; r is freed by
 * randomized_free either way. */
static int randomized_alloc(struct randomized *r, int64_t batch_rows)
{
    const size_t d = (size_t)r->d, l = (size_t)r->l, found = (size_t)r->found;
    const size_t dl = d * l, ll = l * l;
    if (!(r->q_float = subsae__subspace_alloc(dl, sizeof(float), "subspace Q (float)")) ||
        !(r->z = subsae__subspace_alloc((size_t)batch_rows * l, sizeof(float),
                                        "subspace batch projection")) ||
        !(r->w_batch = subsae__subspace_alloc(dl, sizeof(float), "subspace batch product")) ||
        !(r->q_double = subsae__subspace_alloc(dl, sizeof(double), "subspace Q (double)")) ||
        !(r->w = subsae__subspace_alloc(dl, sizeof(double), "subspace product")) ||
        !(r->tau = subsae__subspace_alloc(l, sizeof(double), "subspace QR factors")) ||
        !(r->t = subsae__subspace_alloc(ll, sizeof(double), "subspace Rayleigh-Ritz matrix")) ||
        !(r->g = subsae__subspace_alloc(ll, sizeof(double), "subspace Nystrom factor")) ||
        !(r->theta = subsae__subspace_alloc(l, sizeof(double), "subspace Ritz values")) ||
        !(r->u = subsae__subspace_alloc(dl, sizeof(double), "subspace Ritz vectors")) ||
        !(r->variances = subsae__subspace_alloc(found, sizeof(double), "subspace variances")) ||
        !(r->mean = subsae__subspace_alloc(d, sizeof(float), "subspace mean")) ||
        !(r->basis = subsae__subspace_alloc(found * d, sizeof(float), "subspace basis")))
        return SUBSAE_E_NOMEM;
    return SUBSAE_OK;
}

/* Gaussian start from the seeded RNG, orthonormalised (so that Q^T W of
 * the first pass is a Rayleigh-Ritz matrix too): the same seed gives the
 * same start on every machine (and every worker). */
static int gaussian_start(struct randomized *r, int64_t seed)
{
    subsae__rng rng;
    subsae__rng_seed(&rng, (uint64_t)seed, OMEGA_STREAM);
    for (size_t i = 0; i < (size_t)r->d * (size_t)r->l; i++)
        r->w[i] = subsae__rng_normal(&rng);
    return orthonormalise(r->w, r->d, r->l, r->tau, r->q_float, r->q_double);
}

/* t (l x l) = Q^T W, the covariance on Q times n - 1; its values checked. */
static int project(struct randomized *r)
{
    const int64_t d = r->d, l = r->l;
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)l, (int)l, (int)d, 1.0,
                r->q_double, (int)l, r->w, (int)l, 0.0, r->t, (int)l);
    for (size_t i = 0; i < (size_t)l * (size_t)l; i++)
        if (!isfinite(r->t[i]))
            return subsae__fail(SUBSAE_E_NONFINITE, SUBSAE_REASON_NONFINITE_INPUT,
                                "subsae_subspace_fit: the projected covariance is not finite "
                                "(values too large for float32 products?)");
    return SUBSAE_OK;
}

/* The eigenvalues of t (upper triangle) into theta, ascending, and with
 * jobz 'V' its eigenvectors into t. */
static int eigen(struct randomized *r, char jobz)
{
    const int64_t l = r->l;
    lapack_int info = LAPACKE_dsyevd(LAPACK_ROW_MAJOR, jobz, 'U', (lapack_int)l, r->t,
                                     (lapack_int)l, r->theta);
    return info != 0 ? lapack_failure("LAPACKE_dsyevd", info, l, l) : SUBSAE_OK;
}

/* t = Q^T W and its eigenvalues (and with jobz 'V' vectors). */
static int project_eigen(struct randomized *r, char jobz)
{
    int rc = project(r);
    return rc == SUBSAE_OK ? eigen(r, jobz) : rc;
}

/* The trace of the covariance times n - 1, from the first pass's column
 * sums and sums of squares. */
static double gram_trace(const struct subsae__subspace_stream *st)
{
    const double dn = (double)st->n_total;
    double trace = 0.0;
    for (int64_t i = 0; i < st->d; i++) {
        double delta = st->center ? st->sum[i] / dn : 0.0;
        trace += st->sumsq[i] - dn * delta * delta;
    }
    return trace;
}

/* The shift of a power pass (see the top): half the pass's smallest Ritz
 * value, at most the mean of the trace its Ritz values leave out, never
 * below the shift before (*sigma). */
static int update_shift(struct randomized *r, double trace, double *sigma)
{
    const int64_t d = r->d, l = r->l;
    int rc = project_eigen(r, 'N');
    if (rc != SUBSAE_OK)
        return rc;
    double kept = 0.0;
    for (int64_t j = 0; j < l; j++)
        kept += r->theta[j];
    double want = 0.5 * r->theta[0], cap = (trace - kept) / (double)(d - l);
    if (want > cap)
        want = cap;
    if (want > *sigma)
        *sigma = want;
    return SUBSAE_OK;
}

/* q + 1 passes, w = C Q (n - 1) over the rows of all workers; after each
 * of the first q, Q = orth(W - sigma Q). rc is this worker's status so
 * far, agreed with the others in the first pass. */
static int power_passes(struct subsae__subspace_stream *st, struct randomized *r, int64_t q,
                        int rc)
{
    const int64_t d = r->d, l = r->l;
    double sigma = 0.0;
    for (int64_t pass = 0; pass <= q; pass++) {
        if (rc == SUBSAE_OK)
            rc = stream_pass(st, r->q_float, l, r->z, r->w_batch, r->w);
        rc = subsae__subspace_stream_reduce(st, rc);
        if (rc == SUBSAE_OK)
            rc = subsae__allreduce(st->coll, r->w, d * l, SUBSAE_DTYPE_F64,
                                   "subsae_subspace_fit: power-iteration product");
        if (rc != SUBSAE_OK)
            return rc;
        subsae__subspace_stream_keep_sums(st); /* every pass has the same */
        center_product(st, r->q_double, l, r->w, r->theta);
        if (pass == q)
            break;
        rc = update_shift(r, gram_trace(st), &sigma);
        if (rc != SUBSAE_OK)
            return rc;
        for (size_t i = 0; i < (size_t)d * (size_t)l; i++)
            r->w[i] -= sigma * r->q_double[i];
        rc = orthonormalise(r->w, d, l, r->tau, r->q_float, r->q_double);
        if (rc != SUBSAE_OK)
            return rc;
    }
    return SUBSAE_OK;
}

/* The eigenpairs of t (upper triangle: the covariance times n - 1 on the
 * orthonormal basis b, d x l; n the rows of all workers): the top `found`
 * are the variances and, through u (d x l scratch), the basis. */
static int ritz_pairs(struct randomized *r, const double *b, double *u, int64_t n_total)
{
    const int64_t d = r->d, l = r->l;
    double *t = r->t;
    const double inv = 1.0 / (double)(n_total - 1);
    for (int64_t i = 0; i < l; i++)
        for (int64_t j = i; j < l; j++) {
            t[i * l + j] *= inv;
            t[j * l + i] = t[i * l + j];
        }
    int rc = eigen(r, 'V');
    if (rc != SUBSAE_OK)
        return rc;
    /* Ritz vectors U = B V (d x l); theta ascending, so the r-th largest is
     * column l - 1 - r. */
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)d, (int)l, (int)l, 1.0, b,
                (int)l, t, (int)l, 0.0, u, (int)l);
    for (int64_t k = 0; k < r->found; k++) {
        double v = r->theta[l - 1 - k];
        r->variances[k] = v > 0.0 ? v : 0.0;
        for (int64_t i = 0; i < d; i++)
            r->basis[k * d + i] = (float)u[i * l + (l - 1 - k)];
    }
    subsae__subspace_fix_signs(r->basis, r->found, d);
    return SUBSAE_OK;
}

/* Nystrom from the last pass (see the top): T = Q^T W = V diag(mu) V^T,
 * F = W V mu^(-1/2) = Q_F R, and the eigenpairs of R R^T on Q_F. Values of
 * mu below l float epsilons of the largest are read as that floor: there
 * T holds only the float32 products' rounding, which would otherwise be
 * divided by itself. */
static int nystrom(struct randomized *r, int64_t n_total)
{
    const int64_t d = r->d, l = r->l;
    int rc = project_eigen(r, 'V');
    if (rc != SUBSAE_OK)
        return rc;
    double floor = (double)l * FLT_EPSILON * r->theta[l - 1];
    if (!(floor > DBL_MIN))
        floor = DBL_MIN;
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)d, (int)l, (int)l, 1.0, r->w,
                (int)l, r->t, (int)l, 0.0, r->u, (int)l);
    for (int64_t j = 0; j < l; j++) {
        const double scale = 1.0 / sqrt(r->theta[j] > floor ? r->theta[j] : floor);
        for (int64_t i = 0; i < d; i++)
            r->u[i * l + j] *= scale;
    }
    lapack_int info = LAPACKE_dgeqrf(LAPACK_ROW_MAJOR, (lapack_int)d, (lapack_int)l, r->u,
                                     (lapack_int)l, r->tau);
    if (info != 0)
        return lapack_failure("LAPACKE_dgeqrf", info, d, l);
    for (int64_t i = 0; i < l; i++)
        for (int64_t j = 0; j < l; j++)
            r->g[i * l + j] = j >= i ? r->u[i * l + j] : 0.0;
    info = LAPACKE_dorgqr(LAPACK_ROW_MAJOR, (lapack_int)d, (lapack_int)l, (lapack_int)l, r->u,
                          (lapack_int)l, r->tau);
    if (info != 0)
        return lapack_failure("LAPACKE_dorgqr", info, d, l);
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, (int)l, (int)l, 1.0, r->g, (int)l, 0.0,
                r->t, (int)l);
    return ritz_pairs(r, r->u, r->w, n_total);
}

/* The trace of the covariance from the first pass's column sums. */
static int total_variance(const struct subsae__subspace_stream *st, double *total)
{
    *total = gram_trace(st) / (double)(st->n_total - 1);
    if (!isfinite(*total))
        return subsae__fail(SUBSAE_E_NONFINITE, SUBSAE_REASON_NONFINITE_INPUT,
                            "subsae_subspace_fit: the total variance is not finite");
    return SUBSAE_OK;
}

int subsae__subspace_randomized(subsae_subspace *s, const subsae_buffer *buf, int64_t k,
                                struct subsae__subspace_fit *out)
{
    struct randomized r = {.d = subsae_buffer_dim(buf)};
    r.l = s->oversample >= r.d - k ? r.d : k + s->oversample;
    const bool whole = r.l == r.d;
    const int64_t q = whole ? 0 : s->power_iters;
    r.found = whole ? r.d : k;
    struct subsae__subspace_stream st;
    int rc = subsae__subspace_stream_init(&st, s, buf, "power", q + 1);
    if (rc != SUBSAE_OK)
        return rc;
    rc = randomized_alloc(&r, st.batch_rows); /* still agreed in the first pass */
    if (rc == SUBSAE_OK)
        rc = gaussian_start(&r, s->seed);
    rc = power_passes(&st, &r, q, rc);
    /* Q spans everything: Rayleigh-Ritz on it is exact. */
    if (rc == SUBSAE_OK && whole)
        rc = project(&r);
    if (rc == SUBSAE_OK)
        rc = whole ? ritz_pairs(&r, r.q_double, r.u, st.n_total) : nystrom(&r, st.n_total);
    double total;
    if (rc == SUBSAE_OK)
        rc = total_variance(&st, &total);
    if (rc == SUBSAE_OK) {
        subsae__subspace_stream_mean(&st, r.mean);
        subsae__subspace_fit_hand_over(out, r.found, total, &r.variances, &r.basis, &r.mean);
    }
    randomized_free(&r);
    subsae__subspace_stream_release(&st);
    return rc;
}
