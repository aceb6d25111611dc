/* The encoder's product, x W_enc^T, at fp32 or bf16 (ISSUE 17).
 *
 * Every encoder (the fused TopK encoder, the small-batch encoder, the
 * blocked encoders of the other activations, the trainer's) computes its
 * pre-activations through these functions, so that one choice of kernel
 * holds everywhere and the same shapes give the same bits; the one
 * exception is the small-batch encoder up to 32 rows on AVX-512 (and
 * AVX512_BF16 at bf16), which runs small_gemm.c (it reads W_enc once per
 * call of a few rows).
 *
 * Kernels: oneDNN's matmul where oneDNN reports an AVX-512 ISA (measured
 * faster than OpenBLAS's sgemm on the encoder's shapes), OpenBLAS's
 * cblas_sgemm elsewhere for fp32; bf16 always runs through oneDNN (bf16
 * inputs, fp32 accumulation and output). */
#ifndef SUBSAE_ENCODER_GEMM_H
#define SUBSAE_ENCODER_GEMM_H

#include <stdbool.h>
#include <stdint.h>

/* The precisions of the product (the public SUBSAE_PRECISION_FP32 and
 * SUBSAE_PRECISION_BF16; AUTO is resolved before it reaches here by
 * subsae__precision_resolve). */
enum { SUBSAE__FP32 = 0, SUBSAE__BF16 = 1 };

/* AUTO (2) -> BF16 where subsae__bf16_native(), FP32 elsewhere; FP32 and
 * BF16 are returned as they are. */
int subsae__precision_resolve(int precision);

/* True when oneDNN's effective ISA has AVX512_BF16 or AMX. Thread-safe
 * (queried once). */
bool subsae__bf16_native(void);

/* True when oneDNN's effective ISA has AVX-512 (avx512_core): every fp32
 * product kernel's test of the machine, so that ONEDNN_MAX_CPU_ISA lowers
 * them all alike. Thread-safe (queried once). */
bool subsae__avx512_native(void);

/* oneDNN's effective ISA, as a lower-case name ("avx512_core_bf16",
 * "avx2", ...). Static string. */
const char *subsae__gemm_isa(void);

/* The kernel that runs the tile product at `precision` (oneDNN's
 * implementation name, e.g. "brg:avx512_core_bf16", or "openblas").
 * Static string. */
const char *subsae__gemm_kernel(int precision);

/* fp32 <- bf16 (exact; the other way is subsae__bf16_round, kernels.h). */
void subsae__f32_from_bf16(float *dst, const uint16_t *src, int64_t n);

/* One tile, on the calling thread only:
 *   C[i * ldc + j] = sum_k A[i * lda + k] * B[j * ldb + k]
 * for i < rows, j < cols, k < d. A and B are float (SUBSAE__FP32) or bf16
 * as uint16_t (SUBSAE__BF16); C is float. The bits depend on the shapes,
 * strides and precision only, never on the calling thread. Never fails:
 * should oneDNN fail to build the primitive (out of memory), a plain loop
 * computes the same product. */
void subsae__gemm_tile(int precision, int64_t rows, int64_t cols, int64_t d, const void *A,
                       int64_t lda, const void *B, int64_t ldb, float *C, int64_t ldc);

/* The features of W_enc cut into tiles of this many columns: the unit of
 * every encoder's product (a 512 x 1024 tile of floats is 2 MB). */
enum { SUBSAE__GEMM_TILE_COLS = 1024 };

/* rows x m pre-activations (C, stride ldc) of a block of rows against all
 * m rows of B, the tiles of SUBSAE__GEMM_TILE_COLS columns shared among
 * `threads` threads: the same bits as subsae__gemm_tile on each tile, for
 * every thread count. */
void subsae__gemm_rows(int precision, int64_t rows, int64_t m, int64_t d, const void *A,
                       int64_t lda, const void *B, int64_t ldb, float *C, int64_t ldc,
                       int threads);

#endif
