/* The encoder's product x W^T measured on its own, at fp32 or bf16, with
 * the kernel the library uses at that precision (oneDNN's matmul or
 * OpenBLAS's sgemm, as subsae_encoder_kernel names it): the compute bound
 * of the benchmarks' rooflines. */
#ifndef SUBSAE_BENCH_GEMM_H
#define SUBSAE_BENCH_GEMM_H

#include <stdint.h>

/* The product of `rows` rows of x (rows x d floats) with the m rows of w
 * (m x d floats) into c (rows x m), at SUBSAE_PRECISION_FP32 or _BF16 (the
 * operands rounded to bf16 first, untimed), all threads the library is
 * set to, `calls` times: 0 and the seconds per call into *seconds, or 1
 * with a message. `kernel` gets the kernel's name. */
int bench_gemm(int precision, int64_t rows, int64_t m, int64_t d, const float *x,
               const float *w, float *c, int64_t calls, double *seconds, const char **kernel);

#endif
