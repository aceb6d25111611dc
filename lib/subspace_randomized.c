/* The randomized method: subspace iteration on the centred Gram operator
 * (Halko, Martinsson & Tropp 2011, algorithms 4.4 and 5.3).
 *
 *   Omega ~ N(0, 1)^{d x l}, l = min(k + p, d)
 *   W = C Omega,                Q = orth(W)       (pass 1)
 *   repeat q times: W = C Q,    Q = orth(W)       (passes 2 .. q + 1)
 *   W = C Q, T = Q^T W, T = V diag(theta) V^T     (pass q + 2)
 *   variances = top k of theta, basis = top k columns of Q V
 *
 * C = (Y^T Y - n delta delta^T) / (n - 1) is never formed: each pass
 * streams the rows y = x - c (c the pilot shift, the first batch's mean),
 * computes Z = Y_b Q and Y_b^T Z per batch in float32 GEMMs and adds them
 * into a double accumulator; the rank-one centring correction uses delta,
 * the mean of the shifted rows, which the passes also accumulate (with the
 * sums of squares that give the exact trace). When l reaches d, Q spans
 * the whole space after the first pass, the Rayleigh-Ritz step is exact
 * and the power iterations are skipped.
 *
 * With workers (subsae_subspace_set_collective) every worker draws the
 * same Omega, streams its own rows in each pass, and the workers agree on
 * success and sum the pass's d x l product and column sums (d l + 2 d
 * doubles per pass); the centring correction, the QR and the Rayleigh-Ritz
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
                        "subsae_subspace_fit: %s failed (info %d) on a %lld x %lld matrix", what,
                        (int)info, (long long)rows, (long long)cols);
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

/* One pass over this worker's rows: w = Y^T Y q (d x l, double), with the
 * pass's column sums in st. */
static int gram_pass(struct subsae__subspace_stream *st, const float *q_float, int64_t l, float *z,
                     float *w_batch, double *w)
{
    const int64_t n = st->n, d = st->d;
    const size_t dl = (size_t)d * (size_t)l;
    memset(w, 0, dl * sizeof *w);
    subsae__subspace_stream_begin_pass(st);
    for (int64_t first = 0; first < n; first += st->batch_rows) {
        int64_t m = n - first < st->batch_rows ? n - first : st->batch_rows;
        int rc = subsae__subspace_stream_read(st, first, m);
        if (rc != SUBSAE_OK)
            return rc;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)l, (int)d, 1.0f,
                    st->batch, (int)d, q_float, (int)l, 0.0f, z, (int)l);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)d, (int)l, (int)m, 1.0f,
                    st->batch, (int)d, z, (int)l, 0.0f, w_batch, (int)l);
#pragma omp parallel for if (d * l >= (1 << 18)) num_threads(st->threads) schedule(static)
        for (int64_t i = 0; i < d; i++)
            for (int64_t j = 0; j < l; j++)
                w[i * l + j] += w_batch[i * l + j];
        rc = subsae__subspace_stream_progress(st, m);
        if (rc != SUBSAE_OK)
            return rc;
    }
    return SUBSAE_OK;
}

/* The centring correction of a pass over all rows: w -= n delta (delta^T
 * q), delta the mean of the shifted rows, with proj (l doubles) as scratch
 * for delta^T q. */
static void center_product(const struct subsae__subspace_stream *st, const double *q_double,
                           int64_t l, double *w, double *proj)
{
    if (!st->center)
        return;
    const int64_t d = st->d;
    const double dn = (double)st->n_total;
    for (int64_t j = 0; j < l; j++)
        proj[j] = 0.0;
    for (int64_t i = 0; i < d; i++) {
        double delta = st->sum[i] / dn;
        for (int64_t j = 0; j < l; j++)
            proj[j] += delta * q_double[i * l + j];
    }
    for (int64_t i = 0; i < d; i++) {
        double delta = st->sum[i] / dn;
        for (int64_t j = 0; j < l; j++)
            w[i * l + j] -= dn * delta * proj[j];
    }
}

int subsae__subspace_randomized(subsae_subspace *s, const subsae_buffer *buf, int64_t k,
                                struct subsae__subspace_fit *out)
{
    const int64_t d = subsae_buffer_dim(buf);
    const int64_t l = s->oversample >= d - k ? d : k + s->oversample;
    const bool whole = l == d;
    const int64_t q = whole ? 0 : s->power_iters;
    const int64_t found = whole ? d : k;
    struct subsae__subspace_stream st;
    int rc = subsae__subspace_stream_init(&st, s, buf, "power", q + 2);
    if (rc != SUBSAE_OK)
        return rc;
    const size_t dl = (size_t)d * (size_t)l, ll = (size_t)l * (size_t)l;
    float *q_float = NULL, *z = NULL, *w_batch = NULL, *mean = NULL, *basis = NULL;
    double *q_double = NULL, *w = NULL, *tau = NULL, *t = NULL, *theta = NULL, *u = NULL,
           *variances = NULL;
    if (!(q_float = subsae__subspace_alloc(dl, sizeof(float), "subspace Q (float)")) ||
        !(z = subsae__subspace_alloc((size_t)st.batch_rows * (size_t)l, sizeof(float),
                                     "subspace batch projection")) ||
        !(w_batch = subsae__subspace_alloc(dl, sizeof(float), "subspace batch product")) ||
        !(q_double = subsae__subspace_alloc(dl, sizeof(double), "subspace Q (double)")) ||
        !(w = subsae__subspace_alloc(dl, sizeof(double), "subspace product")) ||
        !(tau = subsae__subspace_alloc((size_t)l, sizeof(double), "subspace QR factors")) ||
        !(t = subsae__subspace_alloc(ll, sizeof(double), "subspace Rayleigh-Ritz matrix")) ||
        !(theta = subsae__subspace_alloc((size_t)l, sizeof(double), "subspace Ritz values")) ||
        !(u = subsae__subspace_alloc(dl, sizeof(double), "subspace Ritz vectors")) ||
        !(variances = subsae__subspace_alloc((size_t)found, sizeof(double),
                                             "subspace variances")) ||
        !(mean = subsae__subspace_alloc((size_t)d, sizeof(float), "subspace mean")) ||
        !(basis = subsae__subspace_alloc((size_t)found * (size_t)d, sizeof(float),
                                         "subspace basis")))
        rc = SUBSAE_E_NOMEM; /* still agreed with the other workers in the first pass */

    /* Gaussian start from the seeded RNG: the same seed gives the same
     * start on every machine (and every worker). */
    if (rc == SUBSAE_OK) {
        subsae__rng rng;
        subsae__rng_seed(&rng, (uint64_t)s->seed, OMEGA_STREAM);
        for (size_t i = 0; i < dl; i++) {
            q_float[i] = (float)subsae__rng_normal(&rng);
            q_double[i] = (double)q_float[i];
        }
    }

    for (int64_t pass = 0; pass < q + 2; pass++) {
        if (rc == SUBSAE_OK)
            rc = gram_pass(&st, q_float, l, z, w_batch, w);
        rc = subsae__subspace_stream_reduce(&st, rc);
        if (rc == SUBSAE_OK)
            rc = subsae__allreduce(st.coll, w, (int64_t)dl, SUBSAE_DTYPE_F64,
                                   "subsae_subspace_fit: power-iteration product");
        if (rc != SUBSAE_OK)
            goto done;
        center_product(&st, q_double, l, w, theta);
        if (pass < q + 1) {
            rc = orthonormalise(w, d, l, tau, q_float, q_double);
            if (rc != SUBSAE_OK)
                goto done;
        }
    }

    /* Rayleigh-Ritz: T = Q^T C Q with C Q = w / (n - 1), n the rows of all
     * workers. */
    const double dn = (double)st.n_total, inv = 1.0 / (double)(st.n_total - 1);
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)l, (int)l, (int)d, inv, q_double,
                (int)l, w, (int)l, 0.0, t, (int)l);
    for (int64_t i = 0; i < l; i++)
        for (int64_t j = i + 1; j < l; j++) {
            double avg = 0.5 * (t[i * l + j] + t[j * l + i]);
            t[i * l + j] = avg;
            t[j * l + i] = avg;
        }
    for (size_t i = 0; i < ll; i++)
        if (!isfinite(t[i])) {
            rc = subsae__fail(SUBSAE_E_NONFINITE, SUBSAE_REASON_NONFINITE_INPUT,
                              "subsae_subspace_fit: the projected covariance is not finite "
                              "(values too large for float32 products?)");
            goto done;
        }
    lapack_int info =
        LAPACKE_dsyevd(LAPACK_ROW_MAJOR, 'V', 'U', (lapack_int)l, t, (lapack_int)l, theta);
    if (info != 0) {
        rc = lapack_failure("LAPACKE_dsyevd", info, l, l);
        goto done;
    }
    /* Ritz vectors U = Q V (d x l); theta ascending, so the r-th largest is
     * column l - 1 - r. */
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)d, (int)l, (int)l, 1.0,
                q_double, (int)l, t, (int)l, 0.0, u, (int)l);
    for (int64_t r = 0; r < found; r++) {
        double v = theta[l - 1 - r];
        variances[r] = v > 0.0 ? v : 0.0;
        for (int64_t i = 0; i < d; i++)
            basis[r * d + i] = (float)u[i * l + (l - 1 - r)];
    }
    subsae__subspace_fix_signs(basis, found, d);

    double total = 0.0;
    for (int64_t i = 0; i < d; i++) {
        double delta = st.center ? st.sum[i] / dn : 0.0;
        double column = (st.sumsq[i] - dn * delta * delta) * inv;
        total += column;
        mean[i] = st.center ? (float)((double)st.shift[i] + delta) : 0.0f;
    }
    if (!isfinite(total)) {
        rc = subsae__fail(SUBSAE_E_NONFINITE, SUBSAE_REASON_NONFINITE_INPUT,
                          "subsae_subspace_fit: the total variance is not finite");
        goto done;
    }

    out->found = found;
    out->total = total;
    out->variances = variances;
    out->basis = basis;
    out->mean = mean;
    variances = NULL;
    basis = NULL;
    mean = NULL;
    rc = SUBSAE_OK;
done:
    subsae__free(q_float);
    subsae__free(z);
    subsae__free(w_batch);
    subsae__free(q_double);
    subsae__free(w);
    subsae__free(tau);
    subsae__free(t);
    subsae__free(theta);
    subsae__free(u);
    subsae__free(variances);
    subsae__free(mean);
    subsae__free(basis);
    subsae__subspace_stream_release(&st);
    return rc;
}
