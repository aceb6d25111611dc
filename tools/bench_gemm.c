/* The encoder's product on its own, with the library's kernel (see
 * bench_gemm.h). oneDNN runs the whole product on its own threads, the
 * library's thread count (OpenMP's, which the library sets). */
#include "bench_gemm.h"

#include "bench.h"

#include <cblas.h>
#include <oneapi/dnnl/dnnl.h>
#include <stdlib.h>
#include <string.h>

/* bf16 <- fp32, round to nearest even (benchmark data is finite). */
static uint16_t *to_bf16(const float *x, int64_t n)
{
    uint16_t *out = malloc((size_t)n * sizeof *out);
    for (int64_t i = 0; out && i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], sizeof u);
        out[i] = (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    }
    return out;
}

struct matmul {
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    dnnl_primitive_desc_t pd;
    dnnl_primitive_t prim;
    dnnl_memory_t mem[3];
};

static void matmul_free(struct matmul *p)
{
    for (int i = 0; i < 3; i++)
        if (p->mem[i])
            dnnl_memory_destroy(p->mem[i]);
    if (p->prim)
        dnnl_primitive_destroy(p->prim);
    if (p->pd)
        dnnl_primitive_desc_destroy(p->pd);
    if (p->stream)
        dnnl_stream_destroy(p->stream);
    if (p->engine)
        dnnl_engine_destroy(p->engine);
}

/* src rows x d, weights d x m read from w's rows (w^T), dst rows x m. */
static dnnl_status_t matmul_init(struct matmul *p, bool bf16, int64_t rows, int64_t m,
                                 int64_t d, const void *x, const void *w, float *c)
{
    const dnnl_data_type_t in = bf16 ? dnnl_bf16 : dnnl_f32;
    dnnl_dims_t src_dims = {rows, d}, src_strides = {d, 1};
    dnnl_dims_t w_dims = {d, m}, w_strides = {1, d};
    dnnl_dims_t dst_dims = {rows, m}, dst_strides = {m, 1};
    dnnl_memory_desc_t src, wt, dst;
    dnnl_matmul_desc_t desc;
    dnnl_status_t s = dnnl_engine_create(&p->engine, dnnl_cpu, 0);
    if (s == dnnl_success)
        s = dnnl_stream_create(&p->stream, p->engine, dnnl_stream_default_flags);
    if (s == dnnl_success)
        s = dnnl_memory_desc_init_by_strides(&src, 2, src_dims, in, src_strides);
    if (s == dnnl_success)
        s = dnnl_memory_desc_init_by_strides(&wt, 2, w_dims, in, w_strides);
    if (s == dnnl_success)
        s = dnnl_memory_desc_init_by_strides(&dst, 2, dst_dims, dnnl_f32, dst_strides);
    if (s == dnnl_success)
        s = dnnl_matmul_desc_init(&desc, &src, &wt, NULL, &dst);
    if (s == dnnl_success)
        s = dnnl_primitive_desc_create(&p->pd, &desc, NULL, p->engine, NULL);
    if (s == dnnl_success)
        s = dnnl_primitive_create(&p->prim, p->pd);
    if (s == dnnl_success)
        s = dnnl_memory_create(&p->mem[0], &src, p->engine, (void *)x);
    if (s == dnnl_success)
        s = dnnl_memory_create(&p->mem[1], &wt, p->engine, (void *)w);
    if (s == dnnl_success)
        s = dnnl_memory_create(&p->mem[2], &dst, p->engine, c);
    return s;
}

static int onednn_gemm(bool bf16, int64_t rows, int64_t m, int64_t d, const float *x,
                       const float *w, float *c, int64_t calls, double *seconds)
{
    uint16_t *x16 = bf16 ? to_bf16(x, rows * d) : NULL;
    uint16_t *w16 = bf16 ? to_bf16(w, m * d) : NULL;
    if (bf16 && (!x16 || !w16)) {
        free(x16);
        free(w16);
        return cli_fail("bench: out of memory for the bf16 operands");
    }
    struct matmul p;
    memset(&p, 0, sizeof p);
    dnnl_status_t s = matmul_init(&p, bf16, rows, m, d, bf16 ? (const void *)x16 : x,
                                  bf16 ? (const void *)w16 : w, c);
    dnnl_exec_arg_t args[3] = {
        {DNNL_ARG_SRC, p.mem[0]}, {DNNL_ARG_WEIGHTS, p.mem[1]}, {DNNL_ARG_DST, p.mem[2]}};
    if (s == dnnl_success) /* warm-up: the kernel's code and first touches */
        s = dnnl_primitive_execute(p.prim, p.stream, 3, args);
    double t0 = bench_now();
    for (int64_t i = 0; s == dnnl_success && i < calls; i++)
        s = dnnl_primitive_execute(p.prim, p.stream, 3, args);
    if (s == dnnl_success)
        s = dnnl_stream_wait(p.stream);
    *seconds = (bench_now() - t0) / (double)calls;
    matmul_free(&p);
    free(x16);
    free(w16);
    return s == dnnl_success ? 0 : cli_fail("bench: oneDNN's matmul failed (status %d)", (int)s);
}

int bench_gemm(int precision, int64_t rows, int64_t m, int64_t d, const float *x,
               const float *w, float *c, int64_t calls, double *seconds, const char **kernel)
{
    const bool bf16 = precision == SUBSAE_PRECISION_BF16;
    *kernel = subsae_encoder_kernel(bf16 ? SUBSAE_PRECISION_BF16 : SUBSAE_PRECISION_FP32);
    if (bf16 || !strncmp(*kernel, "onednn", 6))
        return onednn_gemm(bf16, rows, m, d, x, w, c, calls, seconds);
    double t0 = bench_now();
    for (int64_t i = 0; i < calls; i++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)m, (int)d, 1.0f, x,
                    (int)d, w, (int)d, 0.0f, c, (int)m);
    *seconds = (bench_now() - t0) / (double)calls;
    return 0;
}
