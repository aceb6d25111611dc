/* The training step's encoder at bf16 (ISSUE 17).
 *
 * The encoder's product, the one O(batch x d_in x d_sae) part of a TopK
 * step, runs on bf16 copies of W_enc and of the encoder input with fp32
 * accumulation (the fused encoder of encode.c on bf16 operands), which
 * doubles its rate where the CPU has AVX512_BF16 or AMX. Everything else
 * stays fp32: the master weights and Adam, the decoder, the losses.
 *
 * The copy follows the master: it is made whole from W_enc when the
 * workspace is new, and Adam renews the rows it writes (every row with
 * dense Adam, the touched rows with sparse Adam); a row Adam did not write
 * did not change. So the copy is always bf16(W_enc), and a run resumed
 * from a checkpoint (which holds the fp32 master only) rebuilds the very
 * copy the uninterrupted run had: bf16 resumes bit for bit.
 *
 * Near-ties: bf16 operands carry 8 bits of mantissa, so two
 * pre-activations closer than about 1 % can swap places. Each row's
 * k + margin best bf16 candidates (subsae__bf16_margin) are rescored in
 * fp32 (the dot product of the fp32 encoder input and the fp32 W_enc row
 * in a fixed order, + b_enc; bucketed by feature, so that each W_enc row
 * is read once), and the top k of the rescored values are kept: the
 * chosen set is the fp32 choice except for a feature that bf16 ranked
 * below k + margin (or a near-tie between the two fp32 roundings), and the
 * values the decoder and the backward use are fp32 ones. The fraction of
 * selected pairs that the rescoring changed is the step's disagreement
 * (SUBSAE_METRIC_BF16_DISAGREEMENT).
 *
 * This file is TopK's fused path (no dead feature for AuxK to rank); the
 * blocked encoder of the other activations and of AuxK runs its product at
 * bf16 in trainer_bf16_dense.c. Every configuration trains at bf16 where
 * the CPU computes bf16 natively. Every loop writes positions fixed by the row,
 * so the bits do not depend on the thread count. */
#include "trainer_bf16.h"

#include "encoder_gemm.h"
#include "trainer_workspace.h"

#include "kernels.h"

#include <math.h>
#include <omp.h>
#include <stdbool.h>
#include <string.h>

/* Why bf16 training cannot run here, or NULL. Every activation, AuxK,
 * transcoders, skip paths and Matryoshka prefixes train at bf16: only the
 * hardware can stand in the way (oneDNN's bf16 product without native
 * instructions would be an emulation slower than fp32). */
static const char *bf16_obstacle(void)
{
    if (!subsae__bf16_native())
        return "this CPU has no native bf16 product (AVX512_BF16 or AMX)";
    return NULL;
}

static int refuse(const char *fn, const char *why)
{
    return subsae__fail(SUBSAE_E_UNSUPPORTED, SUBSAE_REASON_BAD_VALUE,
                        "%s: precision bf16: %s (oneDNN ISA %s); use precision fp32 or auto",
                        fn, why, subsae__gemm_isa());
}

int subsae__trainer_precision_init(subsae_trainer *t, const char *fn)
{
    const char *why = bf16_obstacle();
    if (t->precision == SUBSAE_PRECISION_BF16 && why)
        return refuse(fn, why);
    const bool bf16 = t->precision == SUBSAE_PRECISION_BF16 ||
                      (t->precision == SUBSAE_PRECISION_AUTO && !why);
    t->precision_used = bf16 ? SUBSAE__BF16 : SUBSAE__FP32;
    return SUBSAE_OK;
}

int subsae__trainer_bf16_check(const subsae_trainer *t, const char *fn)
{
    if (t->precision_used != SUBSAE__BF16)
        return SUBSAE_OK;
    const char *why = bf16_obstacle();
    return why ? refuse(fn, why) : SUBSAE_OK;
}

void subsae__trainer_bf16_sync(subsae_trainer *t)
{
    struct subsae__workspace *ws = &t->ws;
    if (!ws->W_enc_bf16 || ws->bf16_valid)
        return;
    const subsae_sae *s = t->sae;
    const int64_t d = s->d_in, m = s->d_sae;
#pragma omp parallel for schedule(static) \
    num_threads(subsae__team(subsae__trainer_threads(t), (double)m * (double)d))
    for (int64_t f = 0; f < m; f++)
        subsae__bf16_round(ws->W_enc_bf16 + f * d, s->W_enc + f * d, d);
    ws->bf16_valid = true;
}

void subsae__trainer_bf16_row(subsae_trainer *t, int64_t f)
{
    struct subsae__workspace *ws = &t->ws;
    const int64_t d = t->sae->d_in;
    if (ws->W_enc_bf16 && ws->bf16_valid)
        subsae__bf16_round(ws->W_enc_bf16 + f * d, t->sae->W_enc + f * d, d);
}

void subsae__trainer_bf16_input(subsae_trainer *t, int64_t i)
{
    struct subsae__workspace *ws = &t->ws;
    const int64_t d = t->sae->d_in;
    if (ws->xin_bf16)
        subsae__bf16_round(ws->xin_bf16 + i * d, ws->xin + i * d, d);
}

/* The candidates of n rows bucketed by feature (a counting sort: each
 * feature's candidates in row order), so that the rescoring reads each
 * W_enc row once and the rows of the batch, which stay in cache, many
 * times. */
static void bucket_candidates(struct subsae__workspace *ws, int64_t m, int64_t n, int64_t K)
{
    int32_t *off = ws->cand_offsets;
    memset(off, 0, (size_t)(m + 1) * sizeof *off);
    for (int64_t q = 0; q < n * K; q++)
        if (ws->cand_idx[q] >= 0)
            off[ws->cand_idx[q] + 1]++;
    for (int64_t f = 0; f < m; f++)
        off[f + 1] += off[f];
    for (int64_t q = 0; q < n * K; q++)
        if (ws->cand_idx[q] >= 0)
            ws->cand_order[off[ws->cand_idx[q]]++] = (int32_t)q;
    for (int64_t f = m; f > 0; f--) /* the scatter moved each start to the next one's */
        off[f] = off[f - 1];
    off[0] = 0;
}

/* Candidates rescored by one call of subsae__dot_f32_pairs. */
enum { RESCORE_BATCH = 256 };

/* Every candidate's fp32 pre-activation into cand_val: the fixed-order
 * dot product of its fp32 encoder-input row and W_enc row, + b_enc. Each
 * value is one function of its two rows, whichever thread computes it.
 * The candidates go in their feature order (the bucketing's), so that a
 * W_enc row is read once and its candidates' dots are computed together.
 * Called by each member of a team. */
static void rescore(const subsae_sae *s, struct subsae__workspace *ws, int64_t K)
{
    const int64_t d = s->d_in, total = ws->cand_offsets[s->d_sae];
#pragma omp for schedule(dynamic, 1)
    for (int64_t p0 = 0; p0 < total; p0 += RESCORE_BATCH) {
        int32_t rows[RESCORE_BATCH], feats[RESCORE_BATCH];
        float dots[RESCORE_BATCH];
        const int64_t count = total - p0 < RESCORE_BATCH ? total - p0 : RESCORE_BATCH;
        for (int64_t c = 0; c < count; c++) {
            const int32_t q = ws->cand_order[p0 + c];
            rows[c] = (int32_t)(q / K);
            feats[c] = ws->cand_idx[q];
        }
        subsae__dot_f32_pairs(ws->xin, d, rows, s->W_enc, d, feats, count, d, dots);
        for (int64_t c = 0; c < count; c++)
            ws->cand_val[ws->cand_order[p0 + c]] = dots[c] + s->b_enc[feats[c]];
    }
}

/* Whether candidate a goes before candidate b: the larger value first,
 * ties to the lower feature (the fp32 encoder's order, a total one). */
static inline bool before(const int32_t *cidx, const float *cval, int32_t a, int32_t b)
{
    return cval[a] > cval[b] || (cval[a] == cval[b] && cidx[a] < cidx[b]);
}

/* The candidates' positions are sorted into `pos` by insertion: the
 * rescoring moves few of them, so this costs about K steps. */
int64_t subsae__trainer_bf16_keep(const int32_t *cidx, const float *cval, int32_t *pos,
                                  int64_t K, int64_t k, int32_t *idx, float *val)
{
    int64_t count = 0;
    for (int32_t j = 0; j < K; j++) {
        if (cidx[j] < 0)
            continue;
        int64_t at = count++;
        for (; at > 0 && before(cidx, cval, j, pos[at - 1]); at--)
            pos[at] = pos[at - 1];
        pos[at] = j;
    }
    int64_t changed = 0;
    for (int64_t slot = 0; slot < k; slot++) {
        const int32_t j = slot < count ? pos[slot] : -1;
        if (j < 0 || !(cval[j] > 0.0f)) {
            idx[slot] = -1;
            val[slot] = 0.0f;
            continue;
        }
        idx[slot] = cidx[j];
        val[slot] = cval[j];
        changed += j >= k;
    }
    return changed;
}

void subsae__trainer_encode_bf16(subsae_trainer *t, int64_t n, double *seconds)
{
    const subsae_sae *s = t->sae;
    struct subsae__workspace *ws = &t->ws;
    const int T = subsae__trainer_threads(t);
    const int64_t d = s->d_in, k = s->k, K = ws->cand_slots;
    for (int64_t i = 0; i <= n; i++)
        ws->row_ptr[i] = i * k;
    const struct subsae__encoder_in in = {SUBSAE__BF16, ws->xin_bf16, d, ws->W_enc_bf16, K};
    subsae__encode_topk_fused_in(s, &in, n, K, ws->cand_idx, ws->cand_val, ws->pre, T, seconds);
    const double t0 = omp_get_wtime();
    bucket_candidates(ws, s->d_sae, n, K);
    int64_t changed = 0;
    /* One team for both loops (waking a team on a loaded machine can take
     * milliseconds). The loop over rows waits for the rescoring (the
     * implicit barrier) and then spends the bucketing's positions: each
     * row sorts in its own K. */
#pragma omp parallel num_threads( \
    subsae__team(T, (double)ws->cand_offsets[s->d_sae] * (double)d))
    {
        rescore(s, ws, K);
#pragma omp for schedule(static) reduction(+ : changed)
        for (int64_t i = 0; i < n; i++)
            changed += subsae__trainer_bf16_keep(ws->cand_idx + i * K, ws->cand_val + i * K,
                                                 ws->cand_order + i * K, K, k, ws->idx + i * k,
                                                 ws->val + i * k);
    }
    ws->cand_changed = changed;
    t->last_disagreement = (double)changed / ((double)n * (double)k);
    if (seconds)
        seconds[1] += omp_get_wtime() - t0;
}
