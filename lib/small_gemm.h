/* The encoder's product for a few rows, fp32 and bf16, streaming W_enc
 * once per call (small_gemm.c, ISSUE 17). */
#ifndef SUBSAE_SMALL_GEMM_H
#define SUBSAE_SMALL_GEMM_H

#include <stdbool.h>
#include <stdint.h>

/* True when the kernel runs here: oneDNN's effective ISA has AVX-512
 * (subsae__avx512_native). Thread-safe. */
bool subsae__small_gemm_available(void);

/* C[i * ldc + j] = sum_k x[i * ldx + k] * w[j * ldw + k] for i < rows,
 * j < cols, k < d, on the calling thread; only where
 * subsae__small_gemm_available(). Each C[i][j] has the same bits whatever
 * rows, cols and the position of row i and feature j: it depends on d,
 * x_i and w_j only. */
void subsae__small_gemm(int64_t rows, int64_t cols, int64_t d, const float *x, int64_t ldx,
                        const float *w, int64_t ldw, float *c, int64_t ldc);

/* True when the bf16 kernel runs here: oneDNN's effective ISA has
 * AVX512_BF16 (subsae__bf16_native). Thread-safe. */
bool subsae__small_gemm_bf16_available(void);

/* As subsae__small_gemm on bf16 operands (x and w as bf16 bit patterns,
 * strides in elements), accumulating in float: each C[i][j] depends on d,
 * x_i and w_j only. Only where subsae__small_gemm_bf16_available(). */
void subsae__small_gemm_bf16(int64_t rows, int64_t cols, int64_t d, const uint16_t *x,
                             int64_t ldx, const uint16_t *w, int64_t ldw, float *c,
                             int64_t ldc);

#endif
