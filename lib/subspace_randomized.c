/* The randomized method: subspace iteration on the centred Gram operator
 * (Halko, Martinsson & Tropp 2011, algorithms 4.4 and 5.3).
 *
 *   Omega ~ N(0, 1)^{d x l}, l = min(k + p, d)
 *   W = C Omega,                Q = orth(W)       (pass 1)
 *   repeat q times: W = C Q,    Q = orth(W)       (passes 2 .. q + 1)
 *   Z = Y Q, T = Z^T Z / (n - 1) (centred),
 *   T = V diag(theta) V^T                          (pass q + 2, half of one)
 *   variances = top k of theta, basis = top k columns of Q V
 *
 * C = (Y^T Y - n delta delta^T) / (n - 1) is never formed: each pass
 * streams the rows y = x - c (c the pilot shift, the first batch's mean),
 * computes Z = Y_b Q and Y_b^T Z per batch in float32 GEMMs (the last
 * pass Z^T Z instead: the Rayleigh-Ritz matrix needs no d x l product) and
 * adds them into a double accumulator; the rank-one centring correction uses delta,
 * the mean of the shifted rows, which the first pass also accumulates (with the
 * sums of squares that give the exact trace). When l reaches d, Q spans
 * the whole space after the first pass, the Rayleigh-Ritz step is exact
 * and the power iterations are skipped.
 *
 * With workers (subsae_subspace_set_collective) every worker draws the
 * same Omega, streams its own rows in each pass, and the workers agree on
 * success and sum the pass's d x l product (l x l in the last pass) and
 * column sums (d l + 2 d doubles per pass); the centring correction, the QR and the Rayleigh-Ritz
 * step then run on the same numbers on every worker. */
#include "rng.h"
#include "subspace.h"

#include <cblas.h>
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

/* One pass over this worker's rows, Z = Y_b Q per batch: a power pass adds
 * Y_b^T Z into acc (d x l, double); the Ritz pass, half of one, adds
 * Z^T Z into the upper triangle of acc (l x l) instead, so the
 * Rayleigh-Ritz matrix Q^T Y^T Y Q costs an l x l rank-m update per batch
 * rather than the d x l product Y_b^T Z and Q^T W after the pass. */
static int stream_pass(struct subsae__subspace_stream *st, const float *q_float, int64_t l,
                       float *z, float *part, double *acc, bool ritz)
{
    const int64_t n = st->n, d = st->d, rows = ritz ? l : d;
    memset(acc, 0, (size_t)rows * (size_t)l * sizeof *acc);
    subsae__subspace_stream_begin_pass(st);
    for (int64_t first = 0; first < n; first += st->batch_rows) {
        int64_t m = n - first < st->batch_rows ? n - first : st->batch_rows;
        int rc = subsae__subspace_stream_read(st, first, m);
        if (rc != SUBSAE_OK)
            return rc;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)l, (int)d, 1.0f,
                    st->batch, (int)d, q_float, (int)l, 0.0f, z, (int)l);
        if (ritz)
            cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)l, (int)m, 1.0f, z, (int)l,
                        0.0f, part, (int)l);
        else
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)d, (int)l, (int)m, 1.0f,
                        st->batch, (int)d, z, (int)l, 0.0f, part, (int)l);
#pragma omp parallel for if (rows * l >= (1 << 18)) num_threads(st->threads) schedule(static)
        for (int64_t i = 0; i < rows; i++)
            for (int64_t j = ritz ? i : 0; j < l; j++)
                acc[i * l + j] += part[i * l + j];
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

/* The centring correction of the Ritz pass: t -= n (Q^T delta) (Q^T
 * delta)^T on the upper triangle. */
static void center_ritz(const struct subsae__subspace_stream *st, const double *q_double,
                        int64_t l, double *t, double *proj)
{
    if (!project_mean(st, q_double, l, proj))
        return;
    const double dn = (double)st->n_total;
    for (int64_t i = 0; i < l; i++)
        for (int64_t j = i; j < l; j++)
            t[i * l + j] -= dn * proj[i] * proj[j];
}

/* The arrays of a randomized fit: Q, the passes' products, the
 * Rayleigh-Ritz problem and the results. */
struct randomized {
    int64_t d, l, found;
    float *q_float, *z, *w_batch, *mean, *basis;
    double *q_double, *w, *tau, *t, *theta, *u, *variances;
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
        !(r->theta = subsae__subspace_alloc(l, sizeof(double), "subspace Ritz values")) ||
        !(r->u = subsae__subspace_alloc(dl, sizeof(double), "subspace Ritz vectors")) ||
        !(r->variances = subsae__subspace_alloc(found, sizeof(double), "subspace variances")) ||
        !(r->mean = subsae__subspace_alloc(d, sizeof(float), "subspace mean")) ||
        !(r->basis = subsae__subspace_alloc(found * d, sizeof(float), "subspace basis")))
        return SUBSAE_E_NOMEM;
    return SUBSAE_OK;
}

/* Gaussian start from the seeded RNG: the same seed gives the same start
 * on every machine (and every worker). */
static void gaussian_start(struct randomized *r, int64_t seed)
{
    subsae__rng rng;
    subsae__rng_seed(&rng, (uint64_t)seed, OMEGA_STREAM);
    for (size_t i = 0; i < (size_t)r->d * (size_t)r->l; i++) {
        r->q_float[i] = (float)subsae__rng_normal(&rng);
        r->q_double[i] = (double)r->q_float[i];
    }
}

/* q + 1 power passes, w = C Q (n - 1) over the rows of all workers and Q
 * orthonormalised after each, then the Ritz pass: t = Q^T C Q (n - 1).
 * rc is this worker's status so far, agreed with the others in the first
 * pass. */
static int power_passes(struct subsae__subspace_stream *st, struct randomized *r, int64_t q,
                        int rc)
{
    const int64_t d = r->d, l = r->l;
    for (int64_t pass = 0; pass < q + 2; pass++) {
        const bool ritz = pass == q + 1;
        if (rc == SUBSAE_OK)
            rc = stream_pass(st, r->q_float, l, r->z, r->w_batch, ritz ? r->t : r->w, ritz);
        rc = subsae__subspace_stream_reduce(st, rc);
        if (rc == SUBSAE_OK)
            rc = subsae__allreduce(st->coll, ritz ? r->t : r->w, ritz ? l * l : d * l,
                                   SUBSAE_DTYPE_F64,
                                   ritz ? "subsae_subspace_fit: Rayleigh-Ritz matrix"
                                        : "subsae_subspace_fit: power-iteration product");
        if (rc != SUBSAE_OK)
            return rc;
        subsae__subspace_stream_keep_sums(st); /* every pass has the same */
        if (ritz) {
            center_ritz(st, r->q_double, l, r->t, r->theta);
        } else {
            center_product(st, r->q_double, l, r->w, r->theta);
            rc = orthonormalise(r->w, d, l, r->tau, r->q_float, r->q_double);
            if (rc != SUBSAE_OK)
                return rc;
        }
    }
    return SUBSAE_OK;
}

/* Rayleigh-Ritz: T = Q^T C Q from the Ritz pass's upper triangle (t, times
 * n - 1, n the rows of all workers); the top `found` Ritz values and
 * vectors are the variances and the basis. */
static int rayleigh_ritz(struct randomized *r, int64_t n_total)
{
    const int64_t d = r->d, l = r->l;
    const size_t ll = (size_t)l * (size_t)l;
    double *t = r->t;
    const double inv = 1.0 / (double)(n_total - 1);
    for (int64_t i = 0; i < l; i++)
        for (int64_t j = i; j < l; j++) {
            t[i * l + j] *= inv;
            t[j * l + i] = t[i * l + j];
        }
    for (size_t i = 0; i < ll; i++)
        if (!isfinite(t[i]))
            return subsae__fail(SUBSAE_E_NONFINITE, SUBSAE_REASON_NONFINITE_INPUT,
                                "subsae_subspace_fit: the projected covariance is not finite "
                                "(values too large for float32 products?)");
    lapack_int info = LAPACKE_dsyevd(LAPACK_ROW_MAJOR, 'V', 'U', (lapack_int)l, t,
                                     (lapack_int)l, r->theta);
    if (info != 0)
        return lapack_failure("LAPACKE_dsyevd", info, l, l);
    /* Ritz vectors U = Q V (d x l); theta ascending, so the r-th largest is
     * column l - 1 - r. */
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)d, (int)l, (int)l, 1.0,
                r->q_double, (int)l, t, (int)l, 0.0, r->u, (int)l);
    for (int64_t k = 0; k < r->found; k++) {
        double v = r->theta[l - 1 - k];
        r->variances[k] = v > 0.0 ? v : 0.0;
        for (int64_t i = 0; i < d; i++)
            r->basis[k * d + i] = (float)r->u[i * l + (l - 1 - k)];
    }
    subsae__subspace_fix_signs(r->basis, r->found, d);
    return SUBSAE_OK;
}

/* The trace of the covariance from the last pass's column sums. */
static int total_variance(const struct subsae__subspace_stream *st, double *total)
{
    const double dn = (double)st->n_total, inv = 1.0 / (double)(st->n_total - 1);
    *total = 0.0;
    for (int64_t i = 0; i < st->d; i++) {
        double delta = st->center ? st->sum[i] / dn : 0.0;
        double column = (st->sumsq[i] - dn * delta * delta) * inv;
        *total += column;
    }
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
    int rc = subsae__subspace_stream_init(&st, s, buf, "power", q + 2);
    if (rc != SUBSAE_OK)
        return rc;
    rc = randomized_alloc(&r, st.batch_rows); /* still agreed in the first pass */
    if (rc == SUBSAE_OK)
        gaussian_start(&r, s->seed);
    rc = power_passes(&st, &r, q, rc);
    if (rc == SUBSAE_OK)
        rc = rayleigh_ritz(&r, st.n_total);
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
