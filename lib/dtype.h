/* Element-type conversions. Widening is exact (normals, subnormals, signed
 * zeros, infinities, NaN payloads kept as quiet NaN); narrowing rounds to
 * nearest even and overflows to infinity. */
#ifndef SUBSAE_DTYPE_H
#define SUBSAE_DTYPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Size in bytes of one element of a SUBSAE_DTYPE_*; 0 if unknown. */
size_t subsae__dtype_size(int dtype);

float subsae__f16_to_f32(uint16_t h);
uint16_t subsae__f32_to_f16(float f);
float subsae__bf16_to_f32(uint16_t b);
uint16_t subsae__f32_to_bf16(float f);

/* Widen n elements of `dtype` at src (any alignment, little-endian) into
 * dst. Returns the index of the first element that is not finite in the
 * result, or n if all are finite. */
size_t subsae__widen(const void *src, int dtype, size_t n, float *dst);

/* Narrow n floats into `dtype` at dst (any alignment, little-endian). */
void subsae__narrow(const float *src, size_t n, int dtype, void *dst);

/* Index of the first non-finite value of x[0..n), or n. */
size_t subsae__first_nonfinite(const float *x, size_t n);

#endif
