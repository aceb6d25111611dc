/* The training step's encoder for every activation: one blocked
 * the encoder's product (encoder_gemm.c) writes the pre-activations of a block of rows, then each
 * row's selection runs in parallel while the block is in cache.
 *
 *  - TopK: the k largest pre-activations of the row, ReLU (k slots); when
 *    AuxK has no dead feature to rank, the fused encoder of inference
 *    (lib/encode.c: GEMM tiles selected from cache, no full block).
 *  - BatchTopK: the k n largest pre-activations of the whole batch (after
 *    ReLU), exactly. The rows' entries above a lower bound L of the cut
 *    are collected like a dense activation's (L is half the running
 *    threshold, which follows the cut); the cut is the (k n)-th largest
 *    collected value, found by a two-pass radix select on the bits of the
 *    positive floats. When fewer than k n entries exceed L, L was above
 *    the cut: it drops to a quarter (at last to 0) and the batch is
 *    encoded again. Ties at the cut go to the lower row, then to the lower
 *    feature, so that exactly k n pairs are selected whatever L was.
 *  - ReLU, JumpReLU: every (row, feature) with pre > cut, a variable
 *    number per row: rows are counted, then filled, block by block, and
 *    the pair arrays grow (geometrically, outside the inner loops) when a
 *    batch needs more room; JumpReLU also keeps the pairs in the band of
 *    half-width bandwidth / 2 below its threshold (inactive, value 0),
 *    which carry the threshold's straight-through gradient.
 *  - Gated: every (row, feature) whose gate pre-activation pre + b_enc is
 *    positive, a dense activation's pairs; the value is the magnitude
 *    path's (sae.h), which may be 0, and the pair keeps the gate
 *    pre-activation for the gate path's losses.
 *  - AuxK (any activation): the top k_aux ReLU'd pre-activations of the
 *    dead features of each row.
 * At bf16 (SUBSAE_TRAIN_PRECISION) the block's product runs on bf16
 * operands and what passes is rescored in fp32 (trainer_bf16_dense.c).
 * The result is a CSR list of pairs; every loop over rows writes
 * positions fixed by a serial prefix sum, so the bits do not depend on the
 * thread count. */
#include "activation.h"

#include "encoder_gemm.h"

#include "trainer_bf16_dense.h"
#include "trainer_workspace.h"

#include "kernels.h"

#include <math.h>
#include <omp.h>
#include <string.h>

enum { RADIX_BINS = 65536 };

static uint32_t float_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float bits_float(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* The r-th largest (1-based) positive value of v[0..count), exactly, by a
 * radix select on the bits (positive floats order as their bit patterns);
 * entries <= 0 and NaN are ignored. *npos gets the number of positive
 * values; with fewer than r of them the result is the smallest positive
 * one (0 when there is none). `hist` is RADIX_BINS counters. */
static float radix_kth(const float *v, int64_t count, int64_t r, uint32_t *hist, int64_t *npos)
{
    memset(hist, 0, RADIX_BINS * sizeof *hist);
    int64_t pos = 0;
    for (int64_t i = 0; i < count; i++)
        if (v[i] > 0.0f) {
            hist[float_bits(v[i]) >> 16]++;
            pos++;
        }
    *npos = pos;
    if (pos == 0)
        return 0.0f;
    if (r > pos)
        r = pos;
    int64_t above = 0;
    int hi = RADIX_BINS - 1;
    for (; hi > 0 && above + hist[hi] < r; hi--)
        above += hist[hi];
    const int64_t r2 = r - above;
    memset(hist, 0, RADIX_BINS * sizeof *hist);
    for (int64_t i = 0; i < count; i++)
        if (v[i] > 0.0f && (int)(float_bits(v[i]) >> 16) == hi)
            hist[float_bits(v[i]) & 0xffff]++;
    int64_t above2 = 0;
    int lo = RADIX_BINS - 1;
    for (; lo > 0 && above2 + hist[lo] < r2; lo--)
        above2 += hist[lo];
    return bits_float((uint32_t)hi << 16 | (uint32_t)lo);
}

/* Top k_aux of ReLU(pre + b_enc) over the dead features of one row (the
 * pre row before any selection touched it); inactive slots -1 / 0. */
static void aux_select_row(const float *pre_row, const float *b_enc, const int32_t *dead,
                           int64_t n_dead, int64_t k_aux, float *tmp, int32_t *idx, float *val)
{
    for (int64_t j = 0; j < n_dead; j++)
        tmp[j] = pre_row[dead[j]] + b_enc[dead[j]];
    subsae__topk_row(tmp, NULL, NULL, n_dead, k_aux, idx, val);
    for (int64_t j = 0; j < k_aux; j++) {
        if (val[j] > 0.0f) {
            idx[j] = dead[idx[j]];
        } else {
            idx[j] = -1;
            val[j] = 0.0f;
        }
    }
}

/* ReLU after a TopK selection: non-positive slots are inactive. */
static void relu_slots(int32_t *idx, float *val, int64_t k)
{
    for (int64_t j = 0; j < k; j++)
        if (!(val[j] > 0.0f)) {
            idx[j] = -1;
            val[j] = 0.0f;
        }
}

/* Pairs of a dense activation in one row: pre + b_enc > cut[f] (cut
 * NULL: > low). */
static int64_t count_row(const float *pre_row, const float *b_enc, const float *cut, float low,
                         int64_t m)
{
    int64_t c = 0;
    if (cut) {
#pragma omp simd reduction(+ : c)
        for (int64_t f = 0; f < m; f++)
            c += pre_row[f] + b_enc[f] > cut[f];
    } else {
#pragma omp simd reduction(+ : c)
        for (int64_t f = 0; f < m; f++)
            c += pre_row[f] + b_enc[f] > low;
    }
    return c;
}

/* Write a row's pairs: value = pre if above the activation's threshold
 * (JumpReLU: thr[f]; otherwise every kept pair), else 0 (a band pair). */
static void fill_row(const float *pre_row, const float *b_enc, const float *cut, float low,
                     const float *thr, int64_t m, int32_t *idx, float *val, float *pre_out)
{
    int64_t p = 0;
    for (int64_t f = 0; f < m; f++) {
        float v = pre_row[f] + b_enc[f];
        if (cut ? v > cut[f] : v > low) {
            idx[p] = (int32_t)f;
            val[p] = !thr || v > thr[f] ? v : 0.0f;
            if (pre_out)
                pre_out[p] = v;
            p++;
        }
    }
}

/* A gated row's pairs: the open gates, valued by the magnitude path. */
static void fill_row_gated(const subsae_sae *s, const float *pre_row, int32_t *idx, float *val,
                           float *pre_out)
{
    int64_t p = 0;
    for (int64_t f = 0; f < s->d_sae; f++) {
        const float v = pre_row[f] + s->b_enc[f];
        if (v > 0.0f) {
            idx[p] = (int32_t)f;
            val[p] = subsae__gated_value(s, f, pre_row[f]);
            pre_out[p] = v;
            p++;
        }
    }
}

/* One block of rows: the GEMM into ws->pre (timed into seconds[0]). */
static void block_gemm(const subsae_sae *s, const float *xin, int64_t rows, float *pre,
                       int threads, double *seconds)
{
    double t0 = omp_get_wtime();
    subsae__gemm_rows(SUBSAE__FP32, rows, s->d_sae, s->d_in, xin, s->d_in, s->W_enc, s->d_in,
                      pre, s->d_sae, threads);
    if (seconds)
        seconds[0] += omp_get_wtime() - t0;
}

/* Candidates of n rows: per row the C largest pre-activations in
 * descending order (cidx/cval, n x C). */
static void candidates(const subsae_sae *s, const float *xin, int64_t n, int64_t C,
                       int32_t *cidx, float *cval, float *pre, int64_t block, int threads)
{
    const int64_t m = s->d_sae, d_in = s->d_in;
    for (int64_t r0 = 0; r0 < n; r0 += block) {
        const int64_t rows = n - r0 < block ? n - r0 : block;
        block_gemm(s, xin + r0 * d_in, rows, pre, threads, NULL);
#pragma omp parallel for schedule(static) \
    num_threads(subsae__team(threads, (double)rows * (double)m))
        for (int64_t i = 0; i < rows; i++)
            subsae__topk_row(pre + i * m, s->b_enc, NULL, m, C, cidx + (r0 + i) * C,
                             cval + (r0 + i) * C);
    }
}

int subsae__batch_topk_cut(const subsae_sae *sae, const float *xin, int64_t n, int64_t k,
                           int threads, float *cut)
{
    /* An initial value only: rows keep their 4k largest entries, and the
     * cut is the (k n)-th largest of those. */
    const int64_t m = sae->d_sae;
    const int64_t block = subsae__encode_block_rows(m, n);
    const int64_t C = 4 * k < m ? 4 * k : m;
    float *pre = subsae__malloc((size_t)(block * m) * sizeof *pre);
    uint32_t *hist = subsae__malloc(RADIX_BINS * sizeof *hist);
    int32_t *cidx = subsae__malloc((size_t)(n * C) * sizeof *cidx);
    float *cval = subsae__malloc((size_t)(n * C) * sizeof *cval);
    int rc = SUBSAE_OK;
    if (!pre || !hist || !cidx || !cval) {
        rc = subsae__fail_nomem("batch top-k scratch", (size_t)(block * m + n * C) * 4);
    } else {
        candidates(sae, xin, n, C, cidx, cval, pre, block, threads);
        int64_t npos;
        *cut = radix_kth(cval, n * C, k * n, hist, &npos);
    }
    subsae__free(pre);
    subsae__free(hist);
    subsae__free(cidx);
    subsae__free(cval);
    return rc;
}

/* AuxK's selection of one row of the step from its pre-activations (in a
 * parallel region: the scratch is the calling thread's). */
static void aux_row(subsae_trainer *t, int64_t row, const float *pre_row)
{
    struct subsae__workspace *ws = &t->ws;
    const int64_t m = t->sae->d_sae, ka = ws->aux_k;
    aux_select_row(pre_row, t->sae->b_enc, ws->dead_list, ws->n_dead, ka,
                   ws->aux_tmp + (size_t)omp_get_thread_num() * (size_t)m,
                   ws->aux_idx + row * ka, ws->aux_val + row * ka);
}

/* A selection of the blocked encoder: TopK (k slots per row, with AuxK),
 * or a dense activation's pairs above cut[f] (JumpReLU) or above `low`,
 * valued by thr (JumpReLU; NULL: every kept pair is active). */
struct selection {
    bool topk, gated;
    bool collect_only; /* BatchTopK's collection: rescored after (bf16) */
    const float *cut, *thr;
    float low;
};

/* One row's selection from its pre-activations, AuxK's first (it reads
 * the row before any selection touched it; at bf16 a dense activation's
 * entries near and above its bar are rescored in fp32 before); a dense
 * activation only counts its pairs here. In a parallel region. */
static void select_row(subsae_trainer *t, const struct selection *sel, int64_t row, float *pr)
{
    const subsae_sae *s = t->sae;
    struct subsae__workspace *ws = &t->ws;
    const int64_t m = s->d_sae, k = s->k;
    const bool bf16 = t->precision_used == SUBSAE__BF16;
    if (bf16 && !sel->topk && !sel->collect_only)
        subsae__trainer_bf16_rescore_row(t, row, pr, sel->cut, sel->low);
    if (ws->aux_k > 0) {
        aux_row(t, row, pr);
        if (bf16)
            subsae__trainer_bf16_aux_row(t, row);
    }
    if (sel->topk && bf16) {
        subsae__trainer_bf16_topk_row(t, row, pr);
    } else if (sel->topk) {
        subsae__topk_row(pr, s->b_enc, NULL, m, k, ws->idx + row * k, ws->val + row * k);
        relu_slots(ws->idx + row * k, ws->val + row * k, k);
    } else {
        ws->row_count[row] = count_row(pr, s->b_enc, sel->cut, sel->low, m);
    }
}

/* A dense block's pairs into the CSR after the rows counted them (*total:
 * the pairs so far), growing it. */
static int fill_block(subsae_trainer *t, const struct selection *sel, int64_t r0, int64_t rows,
                      int64_t *total)
{
    const subsae_sae *s = t->sae;
    struct subsae__workspace *ws = &t->ws;
    const int64_t m = s->d_sae;
    for (int64_t i = 0; i < rows; i++) {
        ws->row_ptr[r0 + i] = *total;
        *total += ws->row_count[r0 + i];
    }
    ws->row_ptr[r0 + rows] = *total;
    if (*total > ws->pair_cap) {
        int rc = subsae__trainer_grow_pairs(t, *total);
        if (rc)
            return rc;
    }
#pragma omp parallel for schedule(static) \
    num_threads(subsae__team(subsae__trainer_threads(t), (double)rows * (double)m))
    for (int64_t i = 0; i < rows; i++) {
        const int64_t at = ws->row_ptr[r0 + i];
        if (sel->gated)
            fill_row_gated(s, ws->pre + i * m, ws->idx + at, ws->val + at, ws->pre_val + at);
        else
            fill_row(ws->pre + i * m, s->b_enc, sel->cut, sel->low, sel->thr, m, ws->idx + at,
                     ws->val + at, sel->thr ? ws->pre_val + at : NULL);
    }
    return SUBSAE_OK;
}

/* The product of the step's rows r0 .. r0 + rows - 1 into ws->pre, at
 * the trainer's precision (timed into seconds[0]). */
static void step_block_gemm(subsae_trainer *t, int64_t r0, int64_t rows, double *seconds)
{
    const subsae_sae *s = t->sae;
    struct subsae__workspace *ws = &t->ws;
    const int T = subsae__trainer_threads(t);
    if (t->precision_used != SUBSAE__BF16) {
        block_gemm(s, ws->xin + r0 * s->d_in, rows, ws->pre, T, seconds);
        return;
    }
    const double t0 = omp_get_wtime();
    subsae__trainer_bf16_block_gemm(t, r0, rows, ws->pre, T);
    if (seconds)
        seconds[0] += omp_get_wtime() - t0;
}

/* The blocked encoder of a step: per block of rows the GEMM, then each
 * row's selection in parallel while the block is in cache, and for a
 * dense activation the block's pairs into the CSR. */
static int encode_blocks(subsae_trainer *t, int64_t n, const struct selection *sel,
                         double *seconds)
{
    subsae_sae *s = t->sae;
    struct subsae__workspace *ws = &t->ws;
    const int T = subsae__trainer_threads(t);
    const int64_t m = s->d_sae;
    const int64_t block = subsae__encode_block_rows(m, n);
    int64_t total = 0;
    if (t->precision_used == SUBSAE__BF16 && !sel->topk)
        subsae__trainer_bf16_pass_begin(t);
    for (int64_t r0 = 0; r0 < n; r0 += block) {
        const int64_t rows = n - r0 < block ? n - r0 : block;
        step_block_gemm(t, r0, rows, seconds);
        double t1 = omp_get_wtime();
#pragma omp parallel for schedule(static) num_threads(subsae__team(T, (double)rows * (double)m))
        for (int64_t i = 0; i < rows; i++)
            select_row(t, sel, r0 + i, ws->pre + i * m);
        if (!sel->topk) {
            int rc = fill_block(t, sel, r0, rows, &total);
            if (rc)
                return rc;
        }
        if (seconds)
            seconds[1] += omp_get_wtime() - t1;
    }
    return SUBSAE_OK;
}

/* The dense collection of a step: the pairs above cut[f] (JumpReLU) or
 * above `low` into the CSR, growing it. */
static int collect(subsae_trainer *t, int64_t n, const float *cut, float low, const float *thr,
                   double *seconds)
{
    const struct selection sel = {.topk = false,
                                  .collect_only = t->sae->activation == SUBSAE_ACT_BATCHTOPK,
                                  .cut = cut,
                                  .thr = thr,
                                  .low = low};
    return encode_blocks(t, n, &sel, seconds);
}

/* BatchTopK of the step: collect above a lower bound of the cut, select
 * the k n largest exactly, compact the CSR in place. */
static int encode_batchtopk(subsae_trainer *t, int64_t n, double *seconds)
{
    subsae_sae *s = t->sae;
    struct subsae__workspace *ws = &t->ws;
    const int64_t want = s->k * n;
    float low = (float)(0.5 * t->batch_threshold);
    if (!(low > 0.0f) || !isfinite(low)) /* an infinite bound would never come down */
        low = 0.0f;
    for (;;) {
        int rc = collect(t, n, NULL, low, NULL, seconds);
        if (rc)
            return rc;
        if (ws->row_ptr[n] >= want || low == 0.0f)
            break;
        low = low > 1e-6f ? 0.25f * low : 0.0f; /* L was above the cut */
    }
    const double t1 = omp_get_wtime();
    const int64_t total = ws->row_ptr[n];
    int64_t npos;
    if (t->precision_used == SUBSAE__BF16) /* the pairs near and above the bf16 cut in fp32 */
        subsae__trainer_bf16_rescore_pairs(t, n,
                                           radix_kth(ws->val, total, want, ws->hist, &npos));
    const float cut = radix_kth(ws->val, total, want, ws->hist, &npos);
    int64_t above = 0;
    for (int64_t q = 0; q < total; q++)
        above += ws->val[q] > cut;
    int64_t ties = (npos < want ? npos : want) - above;
    /* Keep the pairs above the cut and the first ties, in (row, feature)
     * order; the write position never passes the read position. */
    int64_t w = 0;
    for (int64_t i = 0; i < n; i++) {
        const int64_t begin = ws->row_ptr[i], end = ws->row_ptr[i + 1];
        ws->row_ptr[i] = w;
        for (int64_t q = begin; q < end; q++) {
            const float v = ws->val[q];
            if (npos > 0 && (v > cut || (v == cut && ties > 0))) {
                if (v == cut)
                    ties--;
                ws->idx[w] = ws->idx[q];
                ws->val[w] = v;
                w++;
            }
        }
    }
    ws->row_ptr[n] = w;
    ws->step_theta = npos > 0 ? cut : NAN;
    if (seconds)
        seconds[1] += omp_get_wtime() - t1;
    return SUBSAE_OK;
}

int subsae__trainer_encode(subsae_trainer *t, int64_t n, double *seconds)
{
    subsae_sae *s = t->sae;
    struct subsae__workspace *ws = &t->ws;
    const int act = s->activation;
    if (act == SUBSAE_ACT_BATCHTOPK)
        return encode_batchtopk(t, n, seconds);
    if (act == SUBSAE_ACT_RELU)
        return collect(t, n, NULL, 0.0f, NULL, seconds);
    if (act == SUBSAE_ACT_JUMPRELU)
        return collect(t, n, ws->cut, 0.0f, s->threshold, seconds);
    if (act == SUBSAE_ACT_GATED) {
        const struct selection sel = {.gated = true};
        return encode_blocks(t, n, &sel, seconds);
    }
    const int T = subsae__trainer_threads(t);
    const int64_t d_in = s->d_in, k = s->k, ka = ws->aux_k;
    for (int64_t i = 0; i <= n; i++)
        ws->row_ptr[i] = i * k;
    if (ka == 0) { /* the fused encoder, as inference runs it */
        subsae__sae_encode_pre(s, ws->xin, d_in, n, k, ws->idx, ws->val, ws->pre, NULL, T,
                               seconds);
        return SUBSAE_OK;
    }
    const struct selection sel = {.topk = true};
    return encode_blocks(t, n, &sel, seconds);
}
