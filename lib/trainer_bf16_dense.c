/* The blocked training encoder at bf16 (ISSUE 17): ReLU, JumpReLU,
 * gated, BatchTopK, and TopK with AuxK.
 *
 * These activations encode block by block (activation.c): the product of
 * a block of rows with W_enc, then each row's selection from the block's
 * full pre-activation rows. At bf16 the product runs on the bf16 copies of
 * the encoder input and of W_enc that trainer_bf16.c keeps (fp32
 * accumulation, oneDNN), and what flows on is fp32 again:
 *
 *  - a dense activation (ReLU, JumpReLU's band and threshold, the gated
 *    model's gate): every entry whose bf16
 *    pre-activation passes the bar, or falls short of it by less than a
 *    margin, is replaced by the exact fp32 one (the fixed-order dot
 *    product of the fp32 encoder input and W_enc row), so the values,
 *    JumpReLU's active/band split and the gated magnitudes are fp32 ones,
 *    and so is every decision but for an entry whose
 *    bf16 error exceeds the margin. The margin: bf16 rounds each operand
 *    with a relative error of at most 2^-8 (uniform, standard deviation
 *    2^-8 / sqrt 3), so the product's error has a standard deviation of
 *    at most 2^-8 sqrt(2/3) sqrt(sum_j x_j^2 w_j^2) <= 0.82 2^-8 |x|_inf
 *    |w|_2; the margin is 4 2^-8 |x|_inf |w|_2, about 5 of those.
 *    Measured on L2_attn_out_131k (d_sae 4,096, 200,000 rows, every entry
 *    also computed in fp32): JumpReLU, ReLU and gated rescored 1.09 to
 *    1.10 times the entries fp32 selects, and none that fp32 selects lay
 *    beyond the margin. The rescoring runs in the row's selection, where
 *    the row is in cache; a vectorised test skips the 16-entry chunks
 *    with nothing near the bar. The disagreement is the fraction of the
 *    selected entries whose decision the rescoring changed.
 *  - BatchTopK: the pairs above a lower bound of the cut are collected
 *    from the bf16 product as they are (the bound is far below the cut);
 *    then the pairs near and above the (k n)-th largest bf16 value, within
 *    the same margin, are rescored in fp32 and the rest left out, and the
 *    exact selection runs on fp32 values.
 *  - TopK with AuxK: each row's k + margin best bf16 candidates are
 *    rescored in fp32 and the top k kept, as trainer_bf16.c does for the
 *    fused encoder; AuxK's dead-feature pairs are chosen from the bf16
 *    pre-activations and valued in fp32 (a near-tie among dead features
 *    only changes which dead feature gets the auxiliary gradient).
 *
 * Every entry is one function of its two fp32 rows, and every write has a
 * place fixed by its row and feature; the counters are integer sums: the
 * bits do not depend on the thread count. */
#include "trainer_bf16_dense.h"

#include "encoder_gemm.h"
#include "trainer_bf16.h"
#include "trainer_workspace.h"

#include "kernels.h"

#include <math.h>
#include <stdbool.h>

enum { SCAN = 16 /* entries per vector test of a row */ };

/* The margin below the bar that is rescored, in units of |x|_inf |w|_2
 * (4 2^-8: the file's comment). */
static const float MARGIN = 4.0f / 256.0f;

/* The fp32 pre-activation of (row, feature) without b_enc: the dot
 * product in a fixed order. */
static inline float exact_pre(const subsae_trainer *t, int64_t row, int64_t f)
{
    const int64_t d = t->sae->d_in;
    return subsae__dot_f32(t->ws.xin + row * d, t->sae->W_enc + f * d, d);
}

void subsae__trainer_bf16_pass_begin(subsae_trainer *t)
{
    const subsae_sae *s = t->sae;
    const int64_t m = s->d_sae, d = s->d_in;
#pragma omp parallel for schedule(static) \
    num_threads(subsae__team(subsae__trainer_threads(t), (double)m * (double)d))
    for (int64_t f = 0; f < m; f++)
        t->ws.bf16_wnorm[f] = (float)sqrt(subsae__sumsq(s->W_enc + f * d, d));
}

void subsae__trainer_bf16_block_gemm(subsae_trainer *t, int64_t r0, int64_t rows, float *pre,
                                     int threads)
{
    const subsae_sae *s = t->sae;
    const struct subsae__workspace *ws = &t->ws;
    const int64_t d = s->d_in;
    subsae__gemm_rows(SUBSAE__BF16, rows, s->d_sae, d, ws->xin_bf16 + r0 * d, d, ws->W_enc_bf16,
                      d, pre, s->d_sae, threads);
}

/* max_j |x_j| */
static float abs_max(const float *x, int64_t d)
{
    float top = 0.0f;
    for (int64_t j = 0; j < d; j++)
        top = fabsf(x[j]) > top ? fabsf(x[j]) : top;
    return top;
}

/* Whether any entry f in [c0, c1) of a row passes its bar or falls short
 * by less than the margin: a branch-free pass the compiler vectorises. */
static inline bool any_near(const float *pr, const float *b, const float *cut, float low,
                            float margin, const float *wnorm, int64_t c0, int64_t c1)
{
    int near = 0;
    if (cut) {
#pragma omp simd reduction(| : near)
        for (int64_t f = c0; f < c1; f++)
            near |= pr[f] + b[f] > cut[f] - margin * wnorm[f];
    } else {
#pragma omp simd reduction(| : near)
        for (int64_t f = c0; f < c1; f++)
            near |= pr[f] + b[f] > low - margin * wnorm[f];
    }
    return near != 0;
}

void subsae__trainer_bf16_rescore_row(subsae_trainer *t, int64_t row, float *pr,
                                      const float *cut, float low)
{
    const subsae_sae *s = t->sae;
    struct subsae__workspace *ws = &t->ws;
    const int64_t m = s->d_sae, d = s->d_in;
    const float *b = s->b_enc, *wnorm = ws->bf16_wnorm, *x = ws->xin + row * d;
    const float margin = MARGIN * abs_max(x, d);
    int64_t changed = 0;
    for (int64_t c0 = 0; c0 < m; c0 += SCAN) {
        const int64_t c1 = c0 + SCAN < m ? c0 + SCAN : m;
        if (!any_near(pr, b, cut, low, margin, wnorm, c0, c1))
            continue; /* most chunks: every entry far below its bar */
        for (int64_t f = c0; f < c1; f++) {
            const float bar = cut ? cut[f] : low;
            if (!(pr[f] + b[f] > bar - margin * wnorm[f]))
                continue;
            const bool was = pr[f] + b[f] > bar;
            pr[f] = exact_pre(t, row, f);
            changed += was != (pr[f] + b[f] > bar);
        }
    }
    ws->bf16_row_changed[row] = changed;
}

void subsae__trainer_bf16_rescore_pairs(subsae_trainer *t, int64_t n, float cut)
{
    const subsae_sae *s = t->sae;
    struct subsae__workspace *ws = &t->ws;
    const int64_t d = s->d_in;
#pragma omp parallel for schedule(dynamic, 16) num_threads( \
    subsae__team(subsae__trainer_threads(t), (double)(ws->row_ptr[n] + n) * (double)d))
    for (int64_t i = 0; i < n; i++) {
        const float *x = ws->xin + i * d;
        const float margin = MARGIN * abs_max(x, d);
        int64_t changed = 0;
        for (int64_t q = ws->row_ptr[i]; q < ws->row_ptr[i + 1]; q++) {
            const int32_t f = ws->idx[q];
            if (!(ws->val[q] > cut - margin * ws->bf16_wnorm[f])) {
                ws->val[q] = 0.0f; /* far below the cut: out of the selection */
                continue;
            }
            const bool was = ws->val[q] > cut;
            ws->val[q] = exact_pre(t, i, f) + s->b_enc[f];
            changed += was != (ws->val[q] > cut);
        }
        ws->bf16_row_changed[i] = changed;
    }
}

void subsae__trainer_bf16_topk_row(subsae_trainer *t, int64_t row, const float *pr)
{
    const subsae_sae *s = t->sae;
    struct subsae__workspace *ws = &t->ws;
    const int64_t K = ws->cand_slots, k = s->k;
    int32_t *cidx = ws->cand_idx + row * K;
    float *cval = ws->cand_val + row * K;
    subsae__topk_row(pr, s->b_enc, NULL, s->d_sae, K, cidx, cval);
    for (int64_t j = 0; j < K; j++)
        if (cidx[j] >= 0)
            cval[j] = exact_pre(t, row, cidx[j]) + s->b_enc[cidx[j]];
    ws->bf16_row_changed[row] = subsae__trainer_bf16_keep(
        cidx, cval, ws->cand_order + row * K, K, k, ws->idx + row * k, ws->val + row * k);
}

void subsae__trainer_bf16_aux_row(subsae_trainer *t, int64_t row)
{
    struct subsae__workspace *ws = &t->ws;
    const int64_t ka = ws->aux_k;
    int32_t *idx = ws->aux_idx + row * ka;
    float *val = ws->aux_val + row * ka;
    for (int64_t j = 0; j < ka; j++) {
        if (idx[j] < 0)
            continue;
        const float v = exact_pre(t, row, idx[j]) + t->sae->b_enc[idx[j]];
        val[j] = v > 0.0f ? v : 0.0f;
        if (!(v > 0.0f))
            idx[j] = -1;
    }
}

void subsae__trainer_bf16_pass_end(subsae_trainer *t, int64_t n)
{
    const struct subsae__workspace *ws = &t->ws;
    const bool topk = t->sae->activation == SUBSAE_ACT_TOPK ||
                      t->sae->activation == SUBSAE_ACT_BATCHTOPK; /* k per row */
    int64_t changed = 0, selected = 0;
    for (int64_t i = 0; i < n; i++) {
        changed += ws->bf16_row_changed[i];
        selected += topk ? t->sae->k : ws->row_count[i];
    }
    t->last_disagreement = selected > 0 ? (double)changed / (double)selected : 0.0;
}
