/* The TopK encoder fused with its GEMM (ARCHITECTURE.md section 3).
 *
 * The rows are cut into blocks, the features into chunks. A thread takes
 * the next block of rows and, chunk by chunk, computes the tile of
 * pre-activations on its own (subsae__gemm_tile, at fp32 or bf16) and
 * feeds it straight to the rows' running top-k selection, so that the tile
 * is read back from the core's own cache. There is one
 * parallel region per encode and no barrier between the GEMM and the
 * selection: a thread that the scheduler of a shared machine preempts
 * delays only the blocks it holds, and the other threads take the rest.
 *
 * The tiles depend on the shapes only, never on the thread count or on
 * which thread takes a block, so the pre-activations (and everything after
 * them) are the same bits for every thread count. */
#include "sae.h"

#include "encoder_gemm.h"
#include "kernels.h"
#include "small_gemm.h"

#include <omp.h>

/* Blocks of up to TILE_ROWS rows (large GEMMs run faster), shrinking to
 * MIN_ROWS towards the end of the batch so that the threads finish
 * together; chunks of TILE_COLS features. A 512 x 1024 tile is 2 MB. */
enum { TILE_ROWS = 512, MIN_ROWS = 64, TILE_COLS = SUBSAE__GEMM_TILE_COLS };

static int64_t tile_cols(int64_t d_sae)
{
    return d_sae < TILE_COLS ? d_sae : TILE_COLS;
}

/* Rows of the block that starts with `left` rows to go: a function of
 * `left` only, so the blocks are the same whichever thread takes them. */
static int64_t block_rows(int64_t left)
{
    int64_t rows = TILE_ROWS;
    while (rows > MIN_ROWS && left < 2 * rows)
        rows /= 2;
    return left < rows ? left : rows;
}

/* The blocked encoder (sae.c) sizes its blocks here, beside the fused
 * one, so that sae.c calls into encode.c and never the reverse. */
int64_t subsae__encode_block_rows(int64_t d_sae, int64_t n_rows)
{
    /* About 8 MB of pre-activations per block, at least 16 rows. */
    int64_t rows = ((int64_t)1 << 21) / (d_sae > 0 ? d_sae : 1);
    if (rows < 16)
        rows = 16;
    if (rows > n_rows)
        rows = n_rows;
    return rows > 0 ? rows : 1;
}

/* Unused slots, and ReLU: selected entries that are not positive are
 * inactive. */
static void clear_inactive(int64_t k, int64_t slots, int32_t *idx, float *val)
{
    for (int64_t j = 0; j < slots; j++) {
        if (j >= k || !(val[j] > 0.0f)) {
            idx[j] = -1;
            val[j] = 0.0f;
        }
    }
}

bool subsae__encode_fused(const subsae_sae *sae, const float *rank_weight)
{
    return sae->activation == SUBSAE_ACT_TOPK && !rank_weight;
}

int64_t subsae__encode_scratch_floats(const subsae_sae *sae, int64_t n, int threads,
                                      bool ranked)
{
    if (sae->activation == SUBSAE_ACT_TOPK && !ranked) {
        int64_t rows = block_rows(n);
        return (int64_t)(threads > 0 ? threads : 1) * (rows > 0 ? rows : 1) *
               tile_cols(sae->d_sae);
    }
    return subsae__encode_block_rows(sae->d_sae, n) * sae->d_sae;
}

/* The fp32 operands of the model: its W_enc and the rows as given, the
 * model's k (at most the slots). */
static struct subsae__encoder_in fp32_in(const subsae_sae *sae, const float *xin,
                                         int64_t xin_stride, int64_t slots)
{
    const struct subsae__encoder_in in = {SUBSAE__FP32, xin, xin_stride, sae->W_enc,
                                          sae->k < slots ? sae->k : slots};
    return in;
}

static const void *at_row(const struct subsae__encoder_in *in, const void *base, int64_t row,
                          int64_t stride)
{
    const size_t es = in->precision == SUBSAE__BF16 ? sizeof(uint16_t) : sizeof(float);
    return (const char *)base + (size_t)(row * stride) * es;
}

void subsae__encode_topk_fused(const subsae_sae *sae, const float *xin, int64_t xin_stride,
                               int64_t n, int64_t slots, int32_t *indices, float *values,
                               float *scratch, int threads, double *seconds)
{
    const struct subsae__encoder_in in = fp32_in(sae, xin, xin_stride, slots);
    subsae__encode_topk_fused_in(sae, &in, n, slots, indices, values, scratch, threads,
                                 seconds);
}

void subsae__encode_topk_fused_in(const subsae_sae *sae, const struct subsae__encoder_in *in,
                                  int64_t n, int64_t slots, int32_t *indices, float *values,
                                  float *scratch, int threads, double *seconds)
{
    const int64_t m = sae->d_sae, d_in = sae->d_in, cols = tile_cols(m);
    const int64_t k = in->k < slots ? in->k : slots;
    const size_t tile_floats = (size_t)block_rows(n) * (size_t)cols;
    const double start = seconds ? omp_get_wtime() : 0.0;
    double gemm_s = 0.0, select_s = 0.0;
    int64_t next = 0; /* first row not yet taken */
    /* The tile products run on one thread only inside an active parallel
     * region, so every tile is computed the same way; a team of one is not
     * active, so then a second, idle member makes it so. */
    const int workers = threads > 0 ? threads : 1;
    const int team = workers == 1 ? 2 : workers;
#pragma omp parallel num_threads(team) reduction(+ : gemm_s, select_s)
    {
        const int me = omp_get_thread_num();
        float *tile = me < workers ? scratch + (size_t)me * tile_floats : NULL;
        int64_t len[TILE_ROWS];
        for (; me < workers;) {
            int64_t r0, rows;
#pragma omp critical(subsae_encode_next_block)
            {
                r0 = next;
                rows = block_rows(n - r0);
                next = r0 + rows;
            }
            if (rows <= 0)
                break;
            for (int64_t i = 0; i < rows; i++)
                len[i] = 0;
            for (int64_t f0 = 0; f0 < m; f0 += cols) {
                const int64_t c = m - f0 < cols ? m - f0 : cols;
                double t0 = seconds ? omp_get_wtime() : 0.0;
                subsae__gemm_tile(in->precision, rows, c, d_in,
                                  at_row(in, in->x, r0, in->x_stride), in->x_stride,
                                  at_row(in, in->W, f0, d_in), d_in, tile, c);
                double t1 = seconds ? omp_get_wtime() : 0.0;
                for (int64_t i = 0; i < rows; i++)
                    subsae__topk_chunk(tile + i * c, sae->b_enc + f0, f0, c, k, &len[i],
                                       indices + (r0 + i) * slots, values + (r0 + i) * slots);
                if (seconds) {
                    gemm_s += t1 - t0;
                    select_s += omp_get_wtime() - t1;
                }
            }
            for (int64_t i = 0; i < rows; i++) {
                subsae__topk_done(k, indices + (r0 + i) * slots, values + (r0 + i) * slots);
                clear_inactive(k, slots, indices + (r0 + i) * slots, values + (r0 + i) * slots);
            }
        }
    }
    if (seconds) {
        /* The region's wall time, shared out in proportion to the threads'
         * time in each part. */
        double wall = omp_get_wtime() - start, busy = gemm_s + select_s;
        double share = busy > 0.0 ? gemm_s / busy : 1.0;
        seconds[0] += wall * share;
        seconds[1] += wall * (1.0 - share);
    }
}

/* ---- the small-batch encoder -------------------------------------------
 *
 * A few rows (a host program encoding one token at a time) make the product
 * memory-bound: its cost is reading W_enc. The fused encoder gives a block
 * of up to 64 rows to one thread, which then reads all of W_enc alone. So
 * here the features are cut into the fused encoder's chunks (slices), the
 * threads take slices, each reads its slices of W_enc once and keeps each
 * row's top k of the slice; then each row's top k is merged from the
 * slices' lists. The order of selection (value, ties to the lower index) is
 * total, so the result is the top k of the whole row whichever way the
 * slices fall to threads. For up to 32 rows, where oneDNN's ISA has
 * AVX-512 (and AVX512_BF16 for a bf16 model), the slices' products run on
 * small_gemm.c, which reads each block of W_enc once however many rows
 * (oneDNN read one row's W_enc at two thirds of the rate, and ran at half
 * its rate at M = 16): each pre-activation's bits depend on its row and
 * feature only, so the codes are the same for every thread count and
 * agree with the fused encoder's up to rounding (exactly where the sums
 * are exact). Other CPUs, and 33 to 64 rows, keep the fused encoder's
 * tile product, hence its bits. */
enum { SMALL_ROWS = 64, SLICE = TILE_COLS };

/* Up to this many rows small_gemm.c's kernels were faster than oneDNN's
 * tile; at 64 rows (d 768 / d_sae 24,576, 2 threads) they were slower:
 * fp32 11.0 against 9.0 ms, bf16 6.4 against 6.0 ms. */
enum { SMALL_KERNEL_ROWS = 32 };

bool subsae__encode_small(const subsae_sae *sae, const float *rank_weight, int64_t n)
{
    return subsae__encode_fused(sae, rank_weight) && n > 0 && n <= SMALL_ROWS;
}

/* The slices' lists: slice s holds min(k, its features) entries per row,
 * from n * s * min(k, SLICE) on. */
struct small_lists {
    int64_t slices, full_cap, total;
};

static struct small_lists small_lists(int64_t m, int64_t k, int64_t n)
{
    struct small_lists l;
    l.slices = (m + SLICE - 1) / SLICE;
    l.full_cap = k < SLICE ? k : SLICE;
    const int64_t last = m - (l.slices - 1) * SLICE;
    l.total = n * ((l.slices - 1) * l.full_cap + (k < last ? k : last));
    return l;
}

int64_t subsae__encode_small_scratch_floats(const subsae_sae *sae, int64_t n, int threads)
{
    if (n > SMALL_ROWS)
        n = SMALL_ROWS;
    const int64_t k = sae->k < sae->d_sae ? sae->k : sae->d_sae;
    const struct small_lists l = small_lists(sae->d_sae, k, n);
    /* values and indices of the lists, a merge cursor per row and slice,
     * a tile of pre-activations per thread. */
    return 2 * l.total + n * l.slices + (int64_t)(threads > 0 ? threads : 1) * n * SLICE;
}

/* One slice's top `cap` per row into (lidx, lval), rows after one another. */
static void small_slice(const subsae_sae *sae, const struct subsae__encoder_in *in, int64_t n,
                        int64_t lo, int64_t hi, int64_t cap, int32_t *lidx, float *lval,
                        float *tile)
{
    const int64_t d = sae->d_in, c = hi - lo;
    const void *w = at_row(in, in->W, lo, d);
    const bool few = n <= SMALL_KERNEL_ROWS;
    if (few && in->precision == SUBSAE__FP32 && subsae__small_gemm_available())
        subsae__small_gemm(n, c, d, in->x, in->x_stride, w, d, tile, c);
    else if (few && in->precision == SUBSAE__BF16 && subsae__small_gemm_bf16_available())
        subsae__small_gemm_bf16(n, c, d, in->x, in->x_stride, w, d, tile, c);
    else
        subsae__gemm_tile(in->precision, n, c, d, in->x, in->x_stride, w, d, tile, c);
    for (int64_t i = 0; i < n; i++) {
        int64_t len = 0;
        subsae__topk_chunk(tile + i * c, sae->b_enc + lo, lo, c, cap, &len, lidx + i * cap,
                           lval + i * cap);
        subsae__topk_done(cap, lidx + i * cap, lval + i * cap);
    }
}

/* Row i's top k from the slices' sorted lists: each step takes the best
 * head (larger value, ties to the lower index). */
static void small_merge(const struct small_lists *l, int64_t m, int64_t n, int64_t i, int64_t k,
                        const int32_t *lidx, const float *lval, int32_t *pos, int32_t *idx,
                        float *val)
{
    for (int64_t s = 0; s < l->slices; s++)
        pos[s] = 0;
    for (int64_t j = 0; j < k; j++) {
        int64_t best = -1, best_at = 0;
        for (int64_t s = 0; s < l->slices; s++) {
            const int64_t len = m - s * SLICE;
            const int64_t cap = l->full_cap < len ? l->full_cap : len;
            if (pos[s] >= cap)
                continue;
            const int64_t at = n * s * l->full_cap + i * cap + pos[s];
            if (best < 0 || lval[at] > lval[best_at] ||
                (lval[at] == lval[best_at] && lidx[at] < lidx[best_at])) {
                best = s;
                best_at = at;
            }
        }
        idx[j] = lidx[best_at];
        val[j] = lval[best_at];
        pos[best]++;
    }
}

void subsae__encode_topk_small(const subsae_sae *sae, const float *xin, int64_t xin_stride,
                               int64_t n, int64_t slots, int32_t *indices, float *values,
                               float *scratch, int threads)
{
    const struct subsae__encoder_in in = fp32_in(sae, xin, xin_stride, slots);
    subsae__encode_topk_small_in(sae, &in, n, slots, indices, values, scratch, threads);
}

void subsae__encode_topk_small_in(const subsae_sae *sae, const struct subsae__encoder_in *in,
                                  int64_t n, int64_t slots, int32_t *indices, float *values,
                                  float *scratch, int threads)
{
    const int64_t m = sae->d_sae;
    const int64_t k = in->k < slots ? in->k : slots;
    const struct small_lists l = small_lists(m, k, n);
    const int workers = threads > 0 ? threads : 1;
    /* As in the fused encoder: a second, idle member makes a team of one
     * active. */
    const int team = workers == 1 ? 2 : workers;
    float *lval = scratch;
    int32_t *lidx = (void *)(scratch + l.total); /* 4-byte slots of the scratch */
    int32_t *pos = (void *)(scratch + 2 * l.total);
    float *tiles = scratch + 2 * l.total + n * l.slices;
    int64_t next = workers; /* first slice not yet taken */
#pragma omp parallel num_threads(team)
    {
        const int me = omp_get_thread_num();
        float *tile = me < workers ? tiles + (size_t)me * (size_t)(n * SLICE) : NULL;
        /* Slices go to the first `workers` members only. */
        const int64_t first = me < workers ? me : l.slices;
        for (int64_t s = first; s < l.slices;) {
            const int64_t lo = s * SLICE, hi = m < lo + SLICE ? m : lo + SLICE;
            const int64_t cap = l.full_cap < hi - lo ? l.full_cap : hi - lo;
            const int64_t at = n * s * l.full_cap;
            small_slice(sae, in, n, lo, hi, cap, lidx + at, lval + at, tile);
#pragma omp atomic capture
            s = next++;
        }
#pragma omp barrier
#pragma omp for schedule(static)
        for (int64_t i = 0; i < n; i++) {
            small_merge(&l, m, n, i, k, lidx, lval, pos + i * l.slices, indices + i * slots,
                        values + i * slots);
            clear_inactive(k, slots, indices + i * slots, values + i * slots);
        }
    }
}
