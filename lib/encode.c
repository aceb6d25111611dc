/* The TopK encoder fused with its GEMM (ARCHITECTURE.md section 3).
 *
 * The rows are cut into blocks, the features into chunks. A thread takes
 * the next block of rows and, chunk by chunk, computes the tile of
 * pre-activations with a single-threaded cblas_sgemm (OpenBLAS runs one
 * thread inside a parallel region) and feeds it straight to the rows'
 * running top-k selection, so that the tile is read back from the core's
 * own cache. There is one
 * parallel region per encode and no barrier between the GEMM and the
 * selection: a thread that the scheduler of a shared machine preempts
 * delays only the blocks it holds, and the other threads take the rest.
 *
 * The tiles depend on the shapes only, never on the thread count or on
 * which thread takes a block, so the pre-activations (and everything after
 * them) are the same bits for every thread count. */
#include "sae.h"

#include "kernels.h"

#include <cblas.h>
#include <omp.h>

/* Blocks of up to TILE_ROWS rows (large GEMMs run faster), shrinking to
 * MIN_ROWS towards the end of the batch so that the threads finish
 * together; chunks of TILE_COLS features. A 512 x 1024 tile is 2 MB. */
enum { TILE_ROWS = 512, MIN_ROWS = 64, TILE_COLS = 1024 };

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

void subsae__encode_topk_fused(const subsae_sae *sae, const float *xin, int64_t xin_stride,
                               int64_t n, int64_t slots, int32_t *indices, float *values,
                               float *scratch, int threads, double *seconds)
{
    const int64_t m = sae->d_sae, d_in = sae->d_in, cols = tile_cols(m);
    const int64_t k = sae->k < slots ? sae->k : slots;
    const size_t tile_floats = (size_t)block_rows(n) * (size_t)cols;
    const double start = seconds ? omp_get_wtime() : 0.0;
    double gemm_s = 0.0, select_s = 0.0;
    int64_t next = 0; /* first row not yet taken */
    /* OpenBLAS runs one thread inside an active parallel region, so every
     * tile is computed the same way. A team of one is not active: then a
     * second, idle member makes it so when OpenBLAS would use more
     * threads. */
    const int workers = threads > 0 ? threads : 1;
    const int team = workers == 1 && openblas_get_num_threads() > 1 ? 2 : workers;
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
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)c,
                            (int)d_in, 1.0f, xin + r0 * xin_stride, (int)xin_stride,
                            sae->W_enc + f0 * d_in, (int)d_in, 0.0f, tile, (int)c);
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
                int32_t *idx = indices + (r0 + i) * slots;
                float *val = values + (r0 + i) * slots;
                subsae__topk_done(k, idx, val);
                /* Unused slots, and ReLU: selected entries that are not
                 * positive are inactive. */
                for (int64_t j = 0; j < slots; j++) {
                    if (j >= k || !(val[j] > 0.0f)) {
                        idx[j] = -1;
                        val[j] = 0.0f;
                    }
                }
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
