/* The exact spectrum: one streaming pass accumulating the column sums and
 * the Gram matrix of the (pilot-shifted) rows, then a LAPACK symmetric
 * eigensolve of the covariance.
 *
 * Precision and speed: each batch's Gram matrix is formed in float32 by
 * cblas_ssyrk (the fast path: a float32 rank-k update runs at about twice
 * the rate of a double one) and added into a double accumulator, so
 * float rounding only ever spans one batch (4096 rows by default). The
 * diagonal is replaced by sums of squares accumulated in double, which
 * makes the trace exact. Rows are shifted by the first batch's mean before
 * the update, so the centring correction n * delta delta^T is small and
 * cancels nothing. */
#include "subspace.h"

#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <string.h>

int subsae__subspace_exact(const subsae_subspace *s, const subsae_buffer *buf,
                           struct subsae__subspace_fit *out)
{
    struct subsae__stream st;
    int rc = subsae__stream_init(&st, s, buf, "gram", 1);
    if (rc != SUBSAE_OK)
        return rc;
    const int64_t n = st.n, d = st.d;
    const size_t dd = (size_t)d * (size_t)d;
    double *gram = subsae__subspace_alloc(dd, sizeof(double), "subspace Gram matrix (double)");
    float *batch_gram = gram ? subsae__subspace_alloc(dd, sizeof(float),
                                                      "subspace batch Gram matrix (float)")
                             : NULL;
    double *eigenvalues = batch_gram ? subsae__subspace_alloc((size_t)d, sizeof(double),
                                                              "subspace eigenvalues")
                                     : NULL;
    float *mean = eigenvalues ? subsae__subspace_alloc((size_t)d, sizeof(float), "subspace mean")
                              : NULL;
    float *basis = mean ? subsae__subspace_alloc(dd, sizeof(float), "subspace basis") : NULL;
    if (!basis) {
        rc = SUBSAE_E_NOMEM;
        goto done;
    }
    memset(gram, 0, dd * sizeof *gram);
    subsae__stream_begin_pass(&st);

    for (int64_t first = 0; first < n; first += st.batch_rows) {
        int64_t m = n - first < st.batch_rows ? n - first : st.batch_rows;
        rc = subsae__stream_read(&st, first, m);
        if (rc != SUBSAE_OK)
            goto done;
        /* Upper triangle (row-major) of the batch's X^T X. */
        cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)d, (int)m, 1.0f, st.batch,
                    (int)d, 0.0f, batch_gram, (int)d);
#pragma omp parallel for if (d * d >= (1 << 18)) num_threads(st.threads) schedule(static, 8)
        for (int64_t i = 0; i < d; i++) {
            double *g = gram + i * d;
            const float *b = batch_gram + i * d;
            for (int64_t j = i; j < d; j++)
                g[j] += b[j];
        }
        rc = subsae__stream_progress(&st, m);
        if (rc != SUBSAE_OK)
            goto done;
    }

    /* Covariance (upper triangle) from the shifted sums:
     * C = (G - n delta delta^T) / (n - 1), delta = mean of shifted rows. */
    const double dn = (double)n, inv = 1.0 / (double)(n - 1);
    double total = 0.0;
    for (int64_t i = 0; i < d; i++)
        gram[i * d + i] = st.sumsq[i];
#pragma omp parallel for if (d * d >= (1 << 18)) num_threads(st.threads) schedule(static, 8)
    for (int64_t i = 0; i < d; i++) {
        double di = st.center ? st.sum[i] / dn : 0.0;
        double *g = gram + i * d;
        for (int64_t j = i; j < d; j++) {
            double dj = st.center ? st.sum[j] / dn : 0.0;
            g[j] = (g[j] - dn * di * dj) * inv;
        }
    }
    for (int64_t i = 0; i < d; i++) {
        if (!isfinite(gram[i * d + i])) {
            rc = subsae__fail(SUBSAE_E_NONFINITE, SUBSAE_REASON_NONFINITE_INPUT,
                              "subsae_subspace_fit: the covariance of column %lld is not "
                              "finite (values too large for float32 products?)",
                              (long long)i);
            goto done;
        }
        total += gram[i * d + i];
    }
    for (int64_t i = 0; i < d; i++)
        mean[i] = st.center ? (float)((double)st.shift[i] + st.sum[i] / dn) : 0.0f;

    /* The row-major upper triangle is the column-major lower one; in
     * column-major output, eigenvector j is the contiguous row j. */
    lapack_int info =
        LAPACKE_dsyevd(LAPACK_COL_MAJOR, 'V', 'L', (lapack_int)d, gram, (lapack_int)d,
                       eigenvalues);
    if (info != 0) {
        rc = info == LAPACK_WORK_MEMORY_ERROR
                 ? subsae__fail(SUBSAE_E_NOMEM, SUBSAE_REASON_OUT_OF_MEMORY,
                                "subsae_subspace_fit: LAPACKE_dsyevd could not allocate its "
                                "workspace for d = %lld",
                                (long long)d)
                 : subsae__fail(info < 0 ? SUBSAE_E_NONFINITE : SUBSAE_E_RANGE,
                                SUBSAE_REASON_BAD_VALUE,
                                "subsae_subspace_fit: LAPACKE_dsyevd failed (info %d) on the "
                                "%lld x %lld covariance",
                                (int)info, (long long)d, (long long)d);
        goto done;
    }
    /* Descending order; rounding can leave tiny negative eigenvalues of a
     * positive semi-definite matrix: clamp them to zero. */
    for (int64_t r = 0; r < d; r++) {
        const double *v = gram + (d - 1 - r) * d;
        for (int64_t j = 0; j < d; j++)
            basis[r * d + j] = (float)v[j];
    }
    for (int64_t r = 0; r < d / 2; r++) {
        double t = eigenvalues[r];
        eigenvalues[r] = eigenvalues[d - 1 - r];
        eigenvalues[d - 1 - r] = t;
    }
    for (int64_t r = 0; r < d; r++)
        if (!(eigenvalues[r] > 0.0))
            eigenvalues[r] = 0.0;
    subsae__subspace_fix_signs(basis, d, d);

    out->found = d;
    out->total = total;
    out->variances = eigenvalues;
    out->basis = basis;
    out->mean = mean;
    eigenvalues = NULL;
    basis = NULL;
    mean = NULL;
    rc = SUBSAE_OK;
done:
    subsae__free(gram);
    subsae__free(batch_gram);
    subsae__free(eigenvalues);
    subsae__free(mean);
    subsae__free(basis);
    subsae__stream_release(&st);
    return rc;
}
