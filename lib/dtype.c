/* Element-type conversions and dtype names. */
#include "dtype.h"
#include "internal.h"

#include <math.h>
#include <string.h>

size_t subsae__dtype_size(int dtype)
{
    switch (dtype) {
    case SUBSAE_DTYPE_F32: return 4;
    case SUBSAE_DTYPE_F16: return 2;
    case SUBSAE_DTYPE_BF16: return 2;
    case SUBSAE_DTYPE_F64: return 8;
    case SUBSAE_DTYPE_I32: return 4;
    default: return 0;
    }
}

const char *subsae_dtype_name(int dtype)
{
    switch (dtype) {
    case SUBSAE_DTYPE_F32: return "f32";
    case SUBSAE_DTYPE_F16: return "f16";
    case SUBSAE_DTYPE_BF16: return "bf16";
    case SUBSAE_DTYPE_F64: return "f64";
    case SUBSAE_DTYPE_I32: return "i32";
    default: return "unknown";
    }
}

static inline float bits_to_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint32_t f32_to_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

float subsae__f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exponent = (h >> 10) & 0x1fu;
    uint32_t mantissa = h & 0x3ffu;
    if (exponent == 0x1f) /* inf, or NaN: keep the payload, make it quiet */
        return bits_to_f32(sign | 0x7f800000u | (mantissa << 13) |
                           (mantissa ? 0x00400000u : 0u));
    if (exponent == 0) {
        if (mantissa == 0)
            return bits_to_f32(sign);
        /* Subnormal: mantissa * 2^-24 is exact in float32. */
        float magnitude = (float)mantissa * 0x1.0p-24f;
        return sign ? -magnitude : magnitude;
    }
    return bits_to_f32(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

uint16_t subsae__f32_to_f16(float f)
{
    uint32_t u = f32_to_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t abs = u & 0x7fffffffu;
    if (abs >= 0x7f800000u) /* inf or NaN (NaN stays a quiet NaN) */
        return sign | (abs > 0x7f800000u ? (uint16_t)(0x7e00u | ((abs >> 13) & 0x3ffu))
                                         : (uint16_t)0x7c00u);
    if (abs >= 0x477ff000u) /* rounds to >= 65520: overflow */
        return sign | 0x7c00u;
    if (abs < 0x38800000u) {
        /* Result is subnormal or zero: round |f| * 2^24 to an integer,
         * ties to even, which the FPU does in the default mode. */
        float scaled = bits_to_f32(abs) * 0x1.0p24f;
        return sign | (uint16_t)lrintf(scaled);
    }
    uint32_t mantissa_rounded = abs + 0xfffu + ((abs >> 13) & 1u);
    return sign | (uint16_t)((mantissa_rounded - 0x38000000u) >> 13);
}

float subsae__bf16_to_f32(uint16_t b)
{
    uint32_t u = (uint32_t)b << 16;
    if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: make it quiet */
        u |= 0x00400000u;
    return bits_to_f32(u);
}

uint16_t subsae__f32_to_bf16(float f)
{
    uint32_t u = f32_to_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: keep it quiet */
        return (uint16_t)((u >> 16) | 0x0040u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* Element i of an array of 16-bit values at any alignment. */
static inline uint16_t load_u16(const unsigned char *bytes, size_t i)
{
    uint16_t u;
    memcpy(&u, bytes + 2 * i, sizeof u);
    return u;
}

static inline void store_u16(unsigned char *bytes, size_t i, uint16_t u)
{
    memcpy(bytes + 2 * i, &u, sizeof u);
}

static inline bool bits_finite(uint32_t u)
{
    return (u & 0x7f800000u) != 0x7f800000u;
}

size_t subsae__first_nonfinite(const float *x, size_t n)
{
    /* Scan in blocks with a branch-free test so that the common all-finite
     * case vectorises; locate the offender only when a block fails. */
    size_t i = 0;
    while (i < n) {
        size_t end = n - i > 256 ? i + 256 : n;
        int bad = 0;
        /* Without the pragma GCC -O2 leaves this loop scalar (4x slower). */
#pragma omp simd reduction(| : bad)
        for (size_t j = i; j < end; j++)
            bad |= !bits_finite(f32_to_bits(x[j]));
        if (bad) {
            for (size_t j = i; j < end; j++)
                if (!bits_finite(f32_to_bits(x[j])))
                    return j;
        }
        i = end;
    }
    return n;
}

size_t subsae__widen(const void *src, int dtype, size_t n, float *dst)
{
    const unsigned char *bytes = src;
    switch (dtype) {
    case SUBSAE_DTYPE_F32: memmove(dst, src, n * sizeof(float)); break;
    case SUBSAE_DTYPE_F16:
        for (size_t i = 0; i < n; i++)
            dst[i] = subsae__f16_to_f32(load_u16(bytes, i));
        break;
    case SUBSAE_DTYPE_BF16:
        for (size_t i = 0; i < n; i++)
            dst[i] = subsae__bf16_to_f32(load_u16(bytes, i));
        break;
    case SUBSAE_DTYPE_F64:
        for (size_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, bytes + 8 * i, 8);
            dst[i] = (float)d; /* out-of-range values become inf: caught below */
        }
        break;
    default: return 0;
    }
    return subsae__first_nonfinite(dst, n);
}

void subsae__narrow(const float *src, size_t n, int dtype, void *dst)
{
    unsigned char *bytes = dst;
    if (dtype == SUBSAE_DTYPE_F32)
        memmove(dst, src, n * sizeof(float));
    else if (dtype == SUBSAE_DTYPE_F16)
        for (size_t i = 0; i < n; i++)
            store_u16(bytes, i, subsae__f32_to_f16(src[i]));
    else if (dtype == SUBSAE_DTYPE_BF16)
        for (size_t i = 0; i < n; i++)
            store_u16(bytes, i, subsae__f32_to_bf16(src[i]));
    else if (dtype == SUBSAE_DTYPE_F64)
        for (size_t i = 0; i < n; i++) {
            double d = src[i];
            memcpy(bytes + 8 * i, &d, 8);
        }
}
