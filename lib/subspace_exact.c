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
 * cancels nothing.
 *
 * With workers (subsae_subspace_set_collective) each worker streams its
 * own rows against the common pilot; after the pass the workers agree on
 * success, sum the column sums and sums of squares (2d doubles) and the
 * upper triangle of the Gram matrix (d (d + 1) / 2 doubles, packed in
 * place), and every worker solves the same eigenproblem. */
#include "subspace.h"

#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <string.h>

/* Sum the upper triangle (row-major) of the d x d matrix g over the
 * workers: packed in place to d (d + 1) / 2 values (row i moves left by
 * i (i + 1) / 2 places, so ascending rows never overwrite unread ones),
 * one all-reduce, unpacked in place in descending order. */
static int reduce_upper(struct subsae__collective *coll, double *g, int64_t d)
{
    int64_t at = 0;
    for (int64_t i = 0; i < d; i++) {
        memmove(g + at, g + i * d + i, (size_t)(d - i) * sizeof *g);
        at += d - i;
    }
    int rc = subsae__allreduce(coll, g, at, SUBSAE_DTYPE_F64,
                               "subsae_subspace_fit: Gram matrix");
    for (int64_t i = d - 1; i >= 0; i--) {
        at -= d - i;
        memmove(g + i * d + i, g + at, (size_t)(d - i) * sizeof *g);
    }
    return rc;
}

/* The pass: gram = upper triangle (row-major) of Y^T Y over the rows of
 * all workers, with the column sums in st. rc is this worker's status so
 * far, agreed with the others at the end of the pass. */
static int gram_pass(struct subsae__subspace_stream *st, int rc, double *gram,
                     float *batch_gram)
{
    const int64_t d = st->d;
    if (rc == SUBSAE_OK) {
        memset(gram, 0, (size_t)d * (size_t)d * sizeof *gram);
        subsae__subspace_stream_begin_pass(st);
    }
    for (int64_t first = 0; rc == SUBSAE_OK && first < st->n; first += st->batch_rows) {
        int64_t m = st->n - first < st->batch_rows ? st->n - first : st->batch_rows;
        rc = subsae__subspace_stream_read(st, first, m);
        if (rc != SUBSAE_OK)
            break;
        /* Upper triangle (row-major) of the batch's X^T X. */
        cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)d, (int)m, 1.0f, st->batch,
                    (int)d, 0.0f, batch_gram, (int)d);
#pragma omp parallel for if (d * d >= (1 << 18)) num_threads(st->threads) schedule(static, 8)
        for (int64_t i = 0; i < d; i++) {
            double *g = gram + i * d;
            const float *b = batch_gram + i * d;
            for (int64_t j = i; j < d; j++)
                g[j] += b[j];
        }
        rc = subsae__subspace_stream_progress(st, m);
    }
    rc = subsae__subspace_stream_reduce(st, rc);
    if (rc == SUBSAE_OK && subsae__collective_on(st->coll))
        rc = reduce_upper(st->coll, gram, d);
    return rc;
}

/* Turn gram into the covariance (upper triangle) from the shifted sums,
 * C = (G - n delta delta^T) / (n - 1), delta = mean of shifted rows; its
 * trace in *total. */
static int covariance(const struct subsae__subspace_stream *st, double *gram, double *total)
{
    const int64_t n = st->n_total, d = st->d;
    const double dn = (double)n, inv = 1.0 / (double)(n - 1);
    for (int64_t i = 0; i < d; i++)
        gram[i * d + i] = st->sumsq[i];
#pragma omp parallel for if (d * d >= (1 << 18)) num_threads(st->threads) schedule(static, 8)
    for (int64_t i = 0; i < d; i++) {
        double di = st->center ? st->sum[i] / dn : 0.0;
        double *g = gram + i * d;
        for (int64_t j = i; j < d; j++) {
            double dj = st->center ? st->sum[j] / dn : 0.0;
            g[j] = (g[j] - dn * di * dj) * inv;
        }
    }
    *total = 0.0;
    for (int64_t i = 0; i < d; i++) {
        if (!isfinite(gram[i * d + i]))
            return subsae__fail(SUBSAE_E_NONFINITE, SUBSAE_REASON_NONFINITE_INPUT,
                                "subsae_subspace_fit: the covariance of column %lld is not "
                                "finite (values too large for float32 products?)",
                                (long long)i);
        *total += gram[i * d + i];
    }
    return SUBSAE_OK;
}

/* Eigenvalues (descending, >= 0) and eigenvectors (rows of basis, signs
 * fixed) of the covariance, whose upper triangle gram holds (destroyed). */
static int eigenbasis(double *gram, int64_t d, double *eigenvalues, float *basis)
{
    /* The row-major upper triangle is the column-major lower one; in
     * column-major output, eigenvector j is the contiguous row j. */
    lapack_int info = LAPACKE_dsyevd(LAPACK_COL_MAJOR, 'V', 'L', (lapack_int)d, gram,
                                     (lapack_int)d, eigenvalues);
    if (info != 0)
        return info == LAPACK_WORK_MEMORY_ERROR
                   ? subsae__fail(SUBSAE_E_NOMEM, SUBSAE_REASON_OUT_OF_MEMORY,
                                  "subsae_subspace_fit: LAPACKE_dsyevd could not allocate its "
                                  "workspace for d = %lld",
                                  (long long)d)
                   : subsae__fail(info < 0 ? SUBSAE_E_NONFINITE : SUBSAE_E_RANGE,
                                  SUBSAE_REASON_BAD_VALUE,
                                  "subsae_subspace_fit: LAPACKE_dsyevd failed (info %d) on the "
                                  "%lld x %lld covariance",
                                  (int)info, (long long)d, (long long)d);
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
    return SUBSAE_OK;
}

int subsae__subspace_exact(subsae_subspace *s, const subsae_buffer *buf,
                           struct subsae__subspace_fit *out)
{
    struct subsae__subspace_stream st;
    int rc = subsae__subspace_stream_init(&st, s, buf, "gram", 1);
    if (rc != SUBSAE_OK)
        return rc;
    const int64_t d = st.d;
    const size_t dd = (size_t)d * (size_t)d;
    double *gram = subsae__subspace_alloc(dd, sizeof(double), "subspace Gram matrix (double)");
    float *batch_gram = gram ? subsae__subspace_alloc(dd, sizeof(float),
                                                      "subspace batch Gram matrix (float)")
                             : NULL;
    double *eigenvalues = batch_gram ? subsae__subspace_alloc((size_t)d, sizeof(double),
                                                              "subspace eigenvalues")
                                     : NULL;
    float *mean = eigenvalues
                      ? subsae__subspace_alloc((size_t)d, sizeof(float), "subspace mean")
                      : NULL;
    float *basis = mean ? subsae__subspace_alloc(dd, sizeof(float), "subspace basis") : NULL;
    if (!basis)
        rc = SUBSAE_E_NOMEM; /* still agreed with the other workers in the pass */
    rc = gram_pass(&st, rc, gram, batch_gram);
    double total;
    if (rc == SUBSAE_OK)
        rc = covariance(&st, gram, &total);
    if (rc == SUBSAE_OK) {
        subsae__subspace_stream_mean(&st, mean);
        rc = eigenbasis(gram, d, eigenvalues, basis);
    }
    if (rc == SUBSAE_OK)
        subsae__subspace_fit_hand_over(out, d, total, &eigenvalues, &basis, &mean);
    subsae__free(gram);
    subsae__free(batch_gram);
    subsae__free(eigenvalues);
    subsae__free(mean);
    subsae__free(basis);
    subsae__subspace_stream_release(&st);
    return rc;
}
