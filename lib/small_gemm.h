/* The encoder's fp32 product for a few rows, streaming W_enc once per call
 * (small_gemm.c, ISSUE 17). */
#ifndef SUBSAE_SMALL_GEMM_H
#define SUBSAE_SMALL_GEMM_H

#include <stdbool.h>
#include <stdint.h>

/* True when the CPU runs the kernel (AVX-512F and FMA). Thread-safe. */
bool subsae__small_gemm_available(void);

/* C[i * ldc + j] = sum_k x[i * ldx + k] * w[j * ldw + k] for i < rows,
 * j < cols, k < d, on the calling thread; only where
 * subsae__small_gemm_available(). Each C[i][j] has the same bits whatever
 * rows, cols and the position of row i and feature j: it depends on d,
 * x_i and w_j only. */
void subsae__small_gemm(int64_t rows, int64_t cols, int64_t d, const float *x, int64_t ldx,
                        const float *w, int64_t ldw, float *c, int64_t ldc);

#endif
