/* The encoder's product through oneDNN's matmul (fp32 and bf16), OpenBLAS
 * where oneDNN has no AVX-512 kernel (see encoder_gemm.h).
 *
 * A primitive is built for every call: oneDNN keeps built primitives in
 * its own cache keyed by the shapes, so after the first call of a shape
 * this costs about 1.5 us against the milliseconds of a tile, and no state
 * of ours has to be shared between threads or freed at exit.
 *
 * Determinism: oneDNN splits a product among threads only when it runs
 * outside an active parallel region. Every product here runs on one
 * thread inside an active region (a caller's, or the team of two opened by
 * on_one_thread), so its bits depend on the shapes alone. */
#include "encoder_gemm.h"

#include "internal.h"

#include <cblas.h>
#include <omp.h>
#include <oneapi/dnnl/dnnl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

static dnnl_engine_t engine;
static dnnl_cpu_isa_t isa = dnnl_cpu_isa_all;

static void start_engine(void)
{
    if (dnnl_engine_create(&engine, dnnl_cpu, 0) != dnnl_success)
        engine = NULL;
    isa = dnnl_get_effective_cpu_isa();
}

static dnnl_engine_t the_engine(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, start_engine);
    return engine;
}

static bool isa_has(dnnl_cpu_isa_t want)
{
    the_engine();
    return ((unsigned)isa & (unsigned)want) == (unsigned)want;
}

bool subsae__bf16_native(void)
{
    return the_engine() && isa_has(dnnl_cpu_isa_avx512_core_bf16);
}

/* oneDNN's fp32 brgemm kernels need AVX-512; below that OpenBLAS's sgemm
 * is the faster fp32 kernel. */
bool subsae__avx512_native(void)
{
    return the_engine() && isa_has(dnnl_cpu_isa_avx512_core);
}

int subsae__precision_resolve(int precision)
{
    if (precision == SUBSAE_PRECISION_AUTO)
        return subsae__bf16_native() ? SUBSAE__BF16 : SUBSAE__FP32;
    return precision == SUBSAE__BF16 ? SUBSAE__BF16 : SUBSAE__FP32;
}

int subsae_precision_resolve(int precision)
{
    return subsae__precision_resolve(precision);
}

const char *subsae__gemm_isa(void)
{
    static const struct {
        dnnl_cpu_isa_t isa;
        const char *name;
    } names[] = {
        {dnnl_cpu_isa_avx512_core_amx, "avx512_core_amx"},
        {dnnl_cpu_isa_avx512_core_bf16, "avx512_core_bf16"},
        {dnnl_cpu_isa_avx512_core_vnni, "avx512_core_vnni"},
        {dnnl_cpu_isa_avx512_core, "avx512_core"},
        {dnnl_cpu_isa_avx2_vnni, "avx2_vnni"},
        {dnnl_cpu_isa_avx2, "avx2"},
        {dnnl_cpu_isa_avx, "avx"},
        {dnnl_cpu_isa_sse41, "sse41"},
    };
    if (!the_engine())
        return "none";
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (isa_has(names[i].isa))
            return names[i].name;
    return "none";
}

/* ---- conversions --------------------------------------------------------- */

void subsae__f32_from_bf16(float *dst, const uint16_t *src, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)src[i] << 16;
        memcpy(&dst[i], &u, sizeof u);
    }
}

/* ---- one tile ------------------------------------------------------------ */

struct tile {
    int precision;
    int64_t rows, cols, d, lda, ldb, ldc;
    const void *A, *B;
    float *C;
};

/* The matmul primitive of a tile's shapes: src rows x d (stride lda),
 * weights d x cols read from B's rows (stride ldb), dst rows x cols. */
static dnnl_status_t make_primitive(const struct tile *t, dnnl_primitive_desc_t *pd,
                                    dnnl_primitive_t *prim)
{
    const dnnl_data_type_t in = t->precision == SUBSAE__BF16 ? dnnl_bf16 : dnnl_f32;
    dnnl_dims_t src_dims = {t->rows, t->d}, src_strides = {t->lda, 1};
    dnnl_dims_t w_dims = {t->d, t->cols}, w_strides = {1, t->ldb};
    dnnl_dims_t dst_dims = {t->rows, t->cols}, dst_strides = {t->ldc, 1};
    dnnl_memory_desc_t src, w, dst;
    dnnl_matmul_desc_t desc;
    dnnl_status_t s = dnnl_memory_desc_init_by_strides(&src, 2, src_dims, in, src_strides);
    if (s == dnnl_success)
        s = dnnl_memory_desc_init_by_strides(&w, 2, w_dims, in, w_strides);
    if (s == dnnl_success)
        s = dnnl_memory_desc_init_by_strides(&dst, 2, dst_dims, dnnl_f32, dst_strides);
    if (s == dnnl_success)
        s = dnnl_matmul_desc_init(&desc, &src, &w, NULL, &dst);
    if (s == dnnl_success)
        s = dnnl_primitive_desc_create(pd, &desc, NULL, engine, NULL);
    if (s != dnnl_success)
        return s;
    s = dnnl_primitive_create(prim, *pd);
    if (s != dnnl_success)
        dnnl_primitive_desc_destroy(*pd);
    return s;
}

static dnnl_status_t wrap(dnnl_memory_t *mem, const dnnl_primitive_desc_t pd, dnnl_query_t what,
                          const void *data)
{
    const dnnl_memory_desc_t *md = dnnl_primitive_desc_query_md(pd, what, 0);
    return dnnl_memory_create(mem, md, engine, (void *)data);
}

static dnnl_status_t run_onednn(const struct tile *t)
{
    dnnl_primitive_desc_t pd;
    dnnl_primitive_t prim;
    dnnl_status_t s = make_primitive(t, &pd, &prim);
    if (s != dnnl_success)
        return s;
    dnnl_memory_t mem[3] = {NULL, NULL, NULL};
    dnnl_stream_t stream = NULL;
    s = wrap(&mem[0], pd, dnnl_query_src_md, t->A);
    if (s == dnnl_success)
        s = wrap(&mem[1], pd, dnnl_query_weights_md, t->B);
    if (s == dnnl_success)
        s = wrap(&mem[2], pd, dnnl_query_dst_md, t->C);
    if (s == dnnl_success)
        s = dnnl_stream_create(&stream, engine, dnnl_stream_default_flags);
    if (s == dnnl_success) {
        dnnl_exec_arg_t args[3] = {
            {DNNL_ARG_SRC, mem[0]}, {DNNL_ARG_WEIGHTS, mem[1]}, {DNNL_ARG_DST, mem[2]}};
        s = dnnl_primitive_execute(prim, stream, 3, args);
        if (s == dnnl_success)
            s = dnnl_stream_wait(stream);
    }
    if (stream)
        dnnl_stream_destroy(stream);
    for (int i = 0; i < 3; i++)
        if (mem[i])
            dnnl_memory_destroy(mem[i]);
    dnnl_primitive_destroy(prim);
    dnnl_primitive_desc_destroy(pd);
    return s;
}

static float element(const struct tile *t, const void *base, int64_t at)
{
    if (t->precision != SUBSAE__BF16)
        return ((const float *)base)[at];
    float f;
    subsae__f32_from_bf16(&f, (const uint16_t *)base + at, 1);
    return f;
}

/* The product when oneDNN cannot build it (out of memory): slow, exact to
 * fp32 accumulation, used only so that the encoders never fail. */
static void run_loops(const struct tile *t)
{
    for (int64_t i = 0; i < t->rows; i++)
        for (int64_t j = 0; j < t->cols; j++) {
            float acc = 0.0f;
            for (int64_t k = 0; k < t->d; k++)
                acc += element(t, t->A, i * t->lda + k) * element(t, t->B, j * t->ldb + k);
            t->C[i * t->ldc + j] = acc;
        }
}

static void run_tile(const struct tile *t)
{
    if (t->rows <= 0 || t->cols <= 0)
        return;
    if (t->precision != SUBSAE__BF16 && !subsae__avx512_native()) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)t->rows, (int)t->cols,
                    (int)t->d, 1.0f, t->A, (int)t->lda, t->B, (int)t->ldb, 0.0f, t->C,
                    (int)t->ldc);
        return;
    }
    if (!the_engine() || run_onednn(t) != dnnl_success)
        run_loops(t);
}

/* A product on the calling thread, inside an active parallel region: a
 * team of two whose second member idles (see the top of the file). */
static void on_one_thread(const struct tile *t)
{
    if (omp_in_parallel()) {
        run_tile(t);
        return;
    }
#pragma omp parallel num_threads(2)
    {
        if (omp_get_thread_num() == 0)
            run_tile(t);
    }
}

void subsae__gemm_tile(int precision, int64_t rows, int64_t cols, int64_t d, const void *A,
                       int64_t lda, const void *B, int64_t ldb, float *C, int64_t ldc)
{
    const struct tile t = {precision, rows, cols, d, lda, ldb, ldc, A, B, C};
    on_one_thread(&t);
}

/* ---- a block of rows against all features ------------------------------ */

static size_t element_size(int precision)
{
    return precision == SUBSAE__BF16 ? sizeof(uint16_t) : sizeof(float);
}

void subsae__gemm_rows(int precision, int64_t rows, int64_t m, int64_t d, const void *A,
                       int64_t lda, const void *B, int64_t ldb, float *C, int64_t ldc,
                       int threads)
{
    const int64_t tiles = (m + SUBSAE__GEMM_TILE_COLS - 1) / SUBSAE__GEMM_TILE_COLS;
    const size_t es = element_size(precision);
    const int workers = threads > 1 ? threads : 1;
    /* Two members at least, so that the region is active (see the top). */
#pragma omp parallel for schedule(dynamic, 1) num_threads(workers > 1 ? workers : 2)
    for (int64_t i = 0; i < tiles; i++) {
        const int64_t f0 = i * SUBSAE__GEMM_TILE_COLS;
        const int64_t cols = m - f0 < SUBSAE__GEMM_TILE_COLS ? m - f0 : SUBSAE__GEMM_TILE_COLS;
        const struct tile t = {precision, rows, cols,
                               d,         lda,  ldb,
                               ldc,       A,    (const char *)B + (size_t)(f0 * ldb) * es,
                               C + f0};
        run_tile(&t);
    }
}

/* ---- what runs ------------------------------------------------------------ */

/* oneDNN's name for the kernel of a typical encoder tile (512 x 1024 x 512). */
static void name_kernel(int precision, char *out, size_t size)
{
    const struct tile t = {precision, 512, SUBSAE__GEMM_TILE_COLS, 512,
                           512,       512, SUBSAE__GEMM_TILE_COLS, NULL,
                           NULL,      NULL};
    dnnl_primitive_desc_t pd;
    dnnl_primitive_t prim;
    const char *impl = NULL;
    snprintf(out, size, "%s", "unavailable");
    if (!the_engine() || make_primitive(&t, &pd, &prim) != dnnl_success)
        return;
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success &&
        impl)
        snprintf(out, size, "onednn %s", impl);
    dnnl_primitive_destroy(prim);
    dnnl_primitive_desc_destroy(pd);
}

static char kernel_names[2][64];

static void name_kernels(void)
{
    name_kernel(SUBSAE__BF16, kernel_names[SUBSAE__BF16], sizeof kernel_names[0]);
    if (subsae__avx512_native())
        name_kernel(SUBSAE__FP32, kernel_names[SUBSAE__FP32], sizeof kernel_names[0]);
    else
        snprintf(kernel_names[SUBSAE__FP32], sizeof kernel_names[0], "%s", "openblas sgemm");
}

const char *subsae__gemm_kernel(int precision)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, name_kernels);
    return kernel_names[precision == SUBSAE__BF16 ? SUBSAE__BF16 : SUBSAE__FP32];
}

const char *subsae_encoder_isa(void)
{
    return subsae__gemm_isa();
}

const char *subsae_encoder_kernel(int precision)
{
    return subsae__gemm_kernel(subsae__precision_resolve(precision));
}
