/* The skip path's two GEMMs (skip.h). Each is cut into SKIP_PARTS fixed
 * parts of its output (rows of out for the forward product, rows of the
 * gradient for the backward one), and each part is one single-threaded
 * cblas_sgemm over the whole inner dimension: no sum is split, and the
 * calls depend on the shapes only, so the results are the same bits for
 * every thread count (trainer_step.c's rule). OpenBLAS runs one thread
 * inside an active parallel region; a team of one is not active, so it
 * gets a second, idle member when OpenBLAS would use more threads (as
 * the fused encoder does, encode.c). */
#include "skip.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

enum { SKIP_PARTS = 64 };

static int team_of(int threads)
{
    const int workers = threads > 0 ? threads : 1;
    return workers == 1 && openblas_get_num_threads() > 1 ? 2 : workers;
}

static int64_t part_begin(int64_t n, int p)
{
    return n * p / SKIP_PARTS;
}

void subsae__skip_forward(const float *W, int64_t d_in, int64_t d_out, const float *x,
                          int64_t x_stride, int64_t n, float alpha, float *out,
                          int64_t out_stride, int threads)
{
    const int workers = threads > 0 ? threads : 1;
#pragma omp parallel num_threads(team_of(threads))
    {
        for (int p = omp_get_thread_num(); p < SKIP_PARTS && omp_get_thread_num() < workers;
             p += workers) {
            const int64_t r0 = part_begin(n, p), rows = part_begin(n, p + 1) - r0;
            if (rows > 0)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)d_out,
                            (int)d_in, alpha, x + r0 * x_stride, (int)x_stride, W, (int)d_in,
                            1.0f, out + r0 * out_stride, (int)out_stride);
        }
    }
}

void subsae__skip_gradient(const float *g, const float *x, int64_t n, int64_t d_in,
                           int64_t d_out, float *gW, int threads)
{
    const int workers = threads > 0 ? threads : 1;
#pragma omp parallel num_threads(team_of(threads))
    {
        for (int p = omp_get_thread_num(); p < SKIP_PARTS && omp_get_thread_num() < workers;
             p += workers) {
            const int64_t j0 = part_begin(d_out, p), rows = part_begin(d_out, p + 1) - j0;
            if (rows > 0)
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)rows, (int)d_in,
                            (int)n, 1.0f, g + j0, (int)d_out, x, (int)d_in, 0.0f,
                            gW + j0 * d_in, (int)d_in);
        }
    }
}

/* Cholesky solve of the d x d symmetric positive definite a (row-major,
 * overwritten) for the d x m right-hand sides b (row-major, overwritten by
 * the solution), serial and in double: the same bits everywhere. Returns
 * false when a is not positive definite. */
static bool cholesky_solve(double *a, int64_t d, double *b, int64_t m)
{
    for (int64_t j = 0; j < d; j++) {
        double s = a[j * d + j];
        for (int64_t k = 0; k < j; k++)
            s -= a[j * d + k] * a[j * d + k];
        if (!(s > 0.0))
            return false;
        a[j * d + j] = sqrt(s);
        for (int64_t i = j + 1; i < d; i++) {
            double v = a[i * d + j];
            for (int64_t k = 0; k < j; k++)
                v -= a[i * d + k] * a[j * d + k];
            a[i * d + j] = v / a[j * d + j];
        }
    }
    for (int64_t c = 0; c < m; c++) {
        for (int64_t i = 0; i < d; i++) { /* L y = b */
            double v = b[i * m + c];
            for (int64_t k = 0; k < i; k++)
                v -= a[i * d + k] * b[k * m + c];
            b[i * m + c] = v / a[i * d + i];
        }
        for (int64_t i = d - 1; i >= 0; i--) { /* L^T w = y */
            double v = b[i * m + c];
            for (int64_t k = i + 1; k < d; k++)
                v -= a[k * d + i] * b[k * m + c];
            b[i * m + c] = v / a[i * d + i];
        }
    }
    return true;
}

/* Centre the n x d rows of x into xc (column means in double, row order). */
static void centre(const float *x, int64_t n, int64_t d, float *xc, double *mean)
{
    memset(mean, 0, (size_t)d * sizeof *mean);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < d; j++)
            mean[j] += x[i * d + j];
    for (int64_t j = 0; j < d; j++)
        mean[j] /= (double)n;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < d; j++)
            xc[i * d + j] = (float)(x[i * d + j] - mean[j]);
}

/* W (d_out x d_in) solving W gram = cross (gram d_in x d_in, cross d_out x
 * d_in) in double with a ridge of 1e-6 of the mean variance, which keeps a
 * rank-deficient input solvable without moving a well-posed one; zero when
 * gram is still not positive definite. a and b are scratch of d_in x d_in
 * and d_in x d_out doubles. */
static void solve_normal_equations(const float *gram, const float *cross, int64_t d_in,
                                   int64_t d_out, double *a, double *b, float *W)
{
    double trace = 0.0;
    for (int64_t i = 0; i < d_in; i++)
        trace += gram[i * d_in + i];
    const double ridge = 1e-6 * trace / (double)d_in + 1e-30;
    for (int64_t i = 0; i < d_in * d_in; i++)
        a[i] = gram[i];
    for (int64_t i = 0; i < d_in; i++)
        a[i * d_in + i] += ridge;
    for (int64_t o = 0; o < d_out; o++)
        for (int64_t i = 0; i < d_in; i++)
            b[i * d_out + o] = cross[o * d_in + i];
    const bool solved = cholesky_solve(a, d_in, b, d_out);
    for (int64_t o = 0; o < d_out; o++)
        for (int64_t i = 0; i < d_in; i++)
            W[o * d_in + i] = solved ? (float)b[i * d_out + o] : 0.0f;
}

int subsae__skip_least_squares(const float *x, const float *t, int64_t n, int64_t d_in,
                               int64_t d_out, float *W, int threads)
{
    float *xc = subsae__malloc((size_t)(n * d_in) * sizeof *xc);
    float *tc = subsae__malloc((size_t)(n * d_out) * sizeof *tc);
    float *g = subsae__malloc((size_t)(d_in * (d_in + d_out)) * sizeof *g);
    double *a = subsae__malloc((size_t)(d_in * d_in) * sizeof *a);
    double *b = subsae__malloc((size_t)(d_in * d_out) * sizeof *b);
    double *mean = subsae__malloc((size_t)(d_in > d_out ? d_in : d_out) * sizeof *mean);
    int rc = SUBSAE_OK;
    if (!xc || !tc || !g || !a || !b || !mean) {
        rc = subsae__fail_nomem("least-squares skip path",
                                (size_t)(n * (d_in + d_out)) * 4 + (size_t)(d_in * d_in) * 8);
        goto done;
    }
    centre(x, n, d_in, xc, mean);
    centre(t, n, d_out, tc, mean);
    /* The Gram matrix xc^T xc (d_in x d_in) and tc^T xc (d_out x d_in),
     * fixed parts. */
    subsae__skip_gradient(xc, xc, n, d_in, d_in, g, threads);
    subsae__skip_gradient(tc, xc, n, d_in, d_out, g + d_in * d_in, threads);
    solve_normal_equations(g, g + d_in * d_in, d_in, d_out, a, b, W);
done:
    subsae__free(xc);
    subsae__free(tc);
    subsae__free(g);
    subsae__free(a);
    subsae__free(b);
    subsae__free(mean);
    return rc;
}
