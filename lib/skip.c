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
#include <omp.h>

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
