/* The encoder's product (lib/encoder_gemm.c): fp32 and bf16 tiles against
 * a double-precision product of the same operands, the bf16 rounding
 * (nearest even, NaN kept), the block product against its tiles for every
 * thread count, and the public queries. */
#include "encoder_gemm.h"
#include "kernels.h"
#include "harness.h"
#include "rng.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static float float_of_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

START_TEST(bf16_rounds_to_nearest_even)
{
    /* 1 + 2^-8 lies halfway between bf16 1 and 1 + 2^-7: to even (1);
     * 1 + 3 * 2^-8 halfway between 1 + 2^-7 and 1 + 2^-6: to even (up);
     * just above a halfway point rounds up; infinities and exact values
     * pass; a NaN whose payload sits in the low bits stays a NaN. */
    const float in[] = {1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f, 1.0f + 0x1p-8f + 0x1p-20f,
                        -2.5f, INFINITY, -INFINITY, 0.0f, float_of_bits(0x7f800001u)};
    const uint16_t want[] = {0x3f80, 0x3f82, 0x3f81, 0xc020, 0x7f80, 0xff80, 0x0000};
    uint16_t out[8];
    subsae__bf16_round(out, in, 8);
    for (int i = 0; i < 7; i++)
        ck_assert_msg(out[i] == want[i], "value %d: bf16 0x%04x, want 0x%04x", i, out[i],
                      want[i]);
    float back;
    subsae__f32_from_bf16(&back, &out[7], 1);
    ck_assert_msg(isnan(back), "a NaN must stay a NaN (got 0x%04x)", out[7]);
    subsae__f32_from_bf16(&back, &out[3], 1);
    ck_assert(back == -2.5f);
}
END_TEST

struct operands {
    int64_t rows, cols, d, lda, ldb;
    float *A, *B;
    uint16_t *Ab, *Bb;
};

static struct operands operands_new(int64_t rows, int64_t cols, int64_t d, uint64_t seed)
{
    struct operands o = {rows, cols, d, d + 3, d + 1, NULL, NULL, NULL, NULL};
    o.A = malloc((size_t)(rows * o.lda) * sizeof(float));
    o.B = malloc((size_t)(cols * o.ldb) * sizeof(float));
    o.Ab = malloc((size_t)(rows * o.lda) * sizeof(uint16_t));
    o.Bb = malloc((size_t)(cols * o.ldb) * sizeof(uint16_t));
    ck_assert(o.A && o.B && o.Ab && o.Bb);
    subsae__rng rng;
    subsae__rng_seed(&rng, seed, 0);
    for (int64_t i = 0; i < rows * o.lda; i++)
        o.A[i] = (float)subsae__rng_normal(&rng);
    for (int64_t i = 0; i < cols * o.ldb; i++)
        o.B[i] = (float)subsae__rng_normal(&rng);
    subsae__bf16_round(o.Ab, o.A, rows * o.lda);
    subsae__bf16_round(o.Bb, o.B, cols * o.ldb);
    return o;
}

static void operands_free(struct operands *o)
{
    free(o->A);
    free(o->B);
    free(o->Ab);
    free(o->Bb);
}

/* The largest |C - exact| / (|A_i| |B_j|) over the tile, the exact product
 * taken in double of the operands at `precision`. */
static double worst_error(const struct operands *o, int precision, const float *C, int64_t ldc)
{
    double worst = 0.0;
    for (int64_t i = 0; i < o->rows; i++)
        for (int64_t j = 0; j < o->cols; j++) {
            double exact = 0.0, na = 0.0, nb = 0.0;
            for (int64_t k = 0; k < o->d; k++) {
                float a = o->A[i * o->lda + k], b = o->B[j * o->ldb + k];
                if (precision == SUBSAE__BF16) {
                    subsae__f32_from_bf16(&a, &o->Ab[i * o->lda + k], 1);
                    subsae__f32_from_bf16(&b, &o->Bb[j * o->ldb + k], 1);
                }
                exact += (double)a * b;
                na += (double)a * a;
                nb += (double)b * b;
            }
            double e = fabs(C[i * ldc + j] - exact) / sqrt(na * nb);
            worst = e > worst ? e : worst;
        }
    return worst;
}

START_TEST(tiles_match_a_double_product)
{
    const int64_t shapes[][3] = {{1, 1, 1}, {7, 33, 17}, {64, 1024, 512}, {130, 300, 768}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        struct operands o = operands_new(shapes[s][0], shapes[s][1], shapes[s][2], 11 + s);
        const int64_t ldc = o.cols + 5;
        float *C = malloc((size_t)(o.rows * ldc) * sizeof(float));
        ck_assert(C);
        for (int p = SUBSAE__FP32; p <= SUBSAE__BF16; p++) {
            if (p == SUBSAE__BF16 && !subsae__bf16_native()) {
                printf("skip: bf16 tiles (oneDNN reports %s, no native bf16)\n",
                       subsae__gemm_isa());
                continue;
            }
            const void *A = p == SUBSAE__BF16 ? (const void *)o.Ab : (const void *)o.A;
            const void *B = p == SUBSAE__BF16 ? (const void *)o.Bb : (const void *)o.B;
            subsae__gemm_tile(p, o.rows, o.cols, o.d, A, o.lda, B, o.ldb, C, ldc);
            /* fp32 accumulation of d products: a few units of 2^-24 * d
             * relative to |A_i| |B_j|. */
            const double limit = 4.0 * 0x1p-24 * (double)o.d + 1e-7;
            double e = worst_error(&o, p, C, ldc);
            ck_assert_msg(e < limit, "%s %lldx%lldx%lld: error %.3g (limit %.3g)",
                          p ? "bf16" : "fp32", (long long)o.rows, (long long)o.cols,
                          (long long)o.d, e, limit);
        }
        free(C);
        operands_free(&o);
    }
}
END_TEST

START_TEST(block_product_is_its_tiles_for_every_thread_count)
{
    /* 2,500 features: two full tiles and a short one. */
    struct operands o = operands_new(96, 2500, 200, 5);
    const int64_t ldc = o.cols;
    const size_t bytes = (size_t)(o.rows * ldc) * sizeof(float);
    float *want = malloc(bytes), *got = malloc(bytes);
    ck_assert(want && got);
    for (int p = SUBSAE__FP32; p <= SUBSAE__BF16; p++) {
        if (p == SUBSAE__BF16 && !subsae__bf16_native())
            continue;
        const void *A = p == SUBSAE__BF16 ? (const void *)o.Ab : (const void *)o.A;
        const void *B = p == SUBSAE__BF16 ? (const void *)o.Bb : (const void *)o.B;
        const size_t es = p == SUBSAE__BF16 ? 2 : 4;
        for (int64_t f0 = 0; f0 < o.cols; f0 += SUBSAE__GEMM_TILE_COLS) {
            int64_t c = o.cols - f0 < SUBSAE__GEMM_TILE_COLS ? o.cols - f0
                                                              : SUBSAE__GEMM_TILE_COLS;
            subsae__gemm_tile(p, o.rows, c, o.d, A, o.lda,
                              (const char *)B + (size_t)(f0 * o.ldb) * es, o.ldb, want + f0,
                              ldc);
        }
        for (int threads = 1; threads <= 3; threads++) {
            memset(got, 0xff, bytes);
            subsae__gemm_rows(p, o.rows, o.cols, o.d, A, o.lda, B, o.ldb, got, ldc, threads);
            ck_assert_msg(memcmp(want, got, bytes) == 0,
                          "%s, %d threads: the block product differs from its tiles",
                          p ? "bf16" : "fp32", threads);
        }
    }
    free(want);
    free(got);
    operands_free(&o);
}
END_TEST

START_TEST(queries_name_what_runs)
{
    const char *isa = subsae_encoder_isa();
    ck_assert(isa && *isa);
    ck_assert_int_eq(subsae_precision_resolve(SUBSAE_PRECISION_FP32), SUBSAE_PRECISION_FP32);
    ck_assert_int_eq(subsae_precision_resolve(SUBSAE_PRECISION_BF16), SUBSAE_PRECISION_BF16);
    ck_assert_int_eq(subsae_precision_resolve(SUBSAE_PRECISION_AUTO),
                     subsae__bf16_native() ? SUBSAE_PRECISION_BF16 : SUBSAE_PRECISION_FP32);
    ck_assert_int_eq(subsae_precision_resolve(77), SUBSAE_PRECISION_FP32);
    /* AUTO means bf16 exactly where oneDNN reports a bf16 ISA. */
    const bool bf16_isa = strstr(isa, "bf16") || strstr(isa, "amx");
    ck_assert_int_eq(subsae__bf16_native(), bf16_isa);
    const char *fp32 = subsae_encoder_kernel(SUBSAE_PRECISION_FP32);
    ck_assert(strncmp(fp32, "onednn ", 7) == 0 || strcmp(fp32, "openblas sgemm") == 0);
    if (subsae__bf16_native())
        ck_assert_msg(strstr(subsae_encoder_kernel(SUBSAE_PRECISION_BF16), "bf16"),
                      "bf16 kernel: %s", subsae_encoder_kernel(SUBSAE_PRECISION_BF16));
}
END_TEST

SUBSAE_SUITE(encoder_gemm)
{
    Suite *s = suite_create("encoder_gemm");
    TCase *tc = harness_case(s, "encoder_gemm", 60);
    tcase_add_test(tc, bf16_rounds_to_nearest_even);
    tcase_add_test(tc, tiles_match_a_double_product);
    tcase_add_test(tc, block_product_is_its_tiles_for_every_thread_count);
    tcase_add_test(tc, queries_name_what_runs);
    return s;
}
