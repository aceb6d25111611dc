/* The sparse training step of subsae_trainer (ARCHITECTURE.md section 3)
 * on a batch of B rows:
 *   1. scale the rows; encoder input xin = x s - b_dec;
 *   2. pre = xin W_enc^T and the activation's selection (activation.c;
 *      TopK: per-row top-k + b_enc, ReLU, fused per GEMM tile, encode.c);
 *   3. sparse decode x_hat = the active decoder rows + b_dec; residual;
 *   4. bucket the (row, feature) pairs by feature with a counting sort
 *      (per-partition histograms, so pairs of a feature stay in row order);
 *   5. each of 64 fixed parts owns a contiguous range of touched features
 *      and computes their decoder-row, encoder-row and b_enc gradients (and
 *      the penalties' and AuxK's terms, losses.c): no atomics, and every
 *      sum runs in the same order for any thread count;
 *   6. b_dec gradient: decoder path plus the path through xin;
 *   7. Adam (dense, or sparse over the touched rows), all or nothing,
 *      unit-norm projection.
 * A gated model's pairs are its open gates (activation.c); step 3 also
 * decodes the gate path relu(pi) through the decoder for the auxiliary
 * loss, and step 5 takes the gated backward (losses.c).
 * A skip transcoder adds xs W_skip^T to x_hat (3.) and takes W_skip's
 * gradient g^T xs (6.), each a GEMM cut into fixed parts of its output
 * (skip.c), so these keep the same bits for any thread count too.
 * Nothing is allocated inside the step once the workspace is sized. */
#include "trainer_step.h"

#include "activation.h"
#include "encoder_gemm.h"
#include "losses.h"
#include "matryoshka.h"
#include "params.h"
#include "trainer_bf16.h"
#include "trainer_bf16_dense.h"
#include "trainer_state.h"
#include "trainer_workspace.h"

#include "buffer.h"
#include "kernels.h"
#include "skip.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <string.h>

/* ---- the step --------------------------------------------------------------- */

static inline int64_t part_begin(int64_t n, int p, int T)
{
    return n * p / T;
}

/* The decode's rows and the backward's features are cut into
 * SUBSAE__PARTS fixed parts, whatever the thread count: threads take parts
 * as they come (a thread that a loaded machine preempts holds up only its
 * part), and the partial sums are added in part order, so the step gives
 * the same bits for every thread count. */
enum { PARTS = SUBSAE__PARTS };

/* 1. Validate the rows and scale them: xs = x s_in, the encoder input xin
 *    = xs - b_dec (or xs), ts = t s_out for a transcoder. Fit passes the
 *    rows in xs and ts themselves (scaled in place, element by element:
 *    no third batch buffer beside the input pipeline's). */
static int scale_inputs(subsae_trainer *t, const float *input, int64_t input_stride,
                        const float *target, int64_t target_stride, int64_t n)
{
    static const char *fn = "subsae_trainer_step";
    const subsae_sae *s = t->sae;
    struct subsae__workspace *ws = &t->ws;
    const int64_t d_in = s->d_in, d_out = s->d_out;
    const bool apply = s->apply_b_dec_to_input;
    for (int64_t i = 0; i < n; i++) {
        int64_t bad = subsae__find_nonfinite(input + i * input_stride, d_in);
        if (bad < d_in)
            return subsae__fail(SUBSAE_E_NONFINITE, SUBSAE_REASON_NONFINITE_INPUT,
                                "%s: input row %lld, column %lld is %g", fn, (long long)i,
                                (long long)bad, (double)input[i * input_stride + bad]);
        if (target) {
            bad = subsae__find_nonfinite(target + i * target_stride, d_out);
            if (bad < d_out)
                return subsae__fail(SUBSAE_E_NONFINITE, SUBSAE_REASON_NONFINITE_INPUT,
                                    "%s: target row %lld, column %lld is %g", fn, (long long)i,
                                    (long long)bad, (double)target[i * target_stride + bad]);
        }
    }
    const float s_in = (float)s->input_scale, s_out = (float)s->output_scale;
#pragma omp parallel for schedule(static) \
    num_threads(subsae__team(subsae__trainer_threads(t), (double)n * (double)(d_in + d_out)))
    for (int64_t i = 0; i < n; i++) {
        const float *xr = input + i * input_stride;
        float *xs = ws->xs + i * d_in, *xin = ws->xin + i * d_in;
        for (int64_t j = 0; j < d_in; j++) {
            xs[j] = xr[j] * s_in;
            xin[j] = apply ? xs[j] - s->b_dec[j] : xs[j];
        }
        subsae__trainer_bf16_input(t, i);
        if (target) {
            const float *tr = target + i * target_stride;
            float *ts = ws->ts + i * d_out;
            for (int64_t j = 0; j < d_out; j++)
                ts[j] = tr[j] * s_out;
        }
    }
    return SUBSAE_OK;
}

/* 2. Encoder GEMM and the activation's selection (AuxK: also the top dead
 *    pre-activations of each row). */
static int encode(subsae_trainer *t, int64_t n)
{
    const subsae_sae *s = t->sae;
    struct subsae__workspace *ws = &t->ws;
    if (s->activation == SUBSAE_ACT_JUMPRELU) {
        const float bw = (float)t->bandwidth;
        for (int64_t f = 0; f < s->d_sae; f++)
            ws->cut[f] = s->threshold[f] - 0.5f * bw;
    }
    int rc = subsae__trainer_prepare_aux(t);
    double *seconds = t->phase_seconds + SUBSAE_PHASE_ENCODE_GEMM;
    /* bf16: TopK without a dead feature to rank takes the fused encoder's
     * candidates (trainer_bf16.c), the rest the blocked encoder at bf16
     * (trainer_bf16_dense.c). */
    const bool bf16 = t->precision_used == SUBSAE__BF16;
    const bool fused = s->activation == SUBSAE_ACT_TOPK && t->ws.aux_k == 0;
    if (!rc && bf16 && fused)
        subsae__trainer_encode_bf16(t, n, seconds);
    else if (!rc)
        rc = subsae__trainer_encode(t, n, seconds);
    if (!rc && bf16 && !fused)
        subsae__trainer_bf16_pass_end(t, n);
    return rc;
}

/* 3. (Matryoshka) Row i's reconstruction by each of the L prefixes into
 *    its L blocks of the output gradient: block j = block j - 1 + the
 *    decode of the pairs of features [w_{j-1}, w_j) (block 0: b_dec + the
 *    first prefix's pairs); the last block is the whole model's. */
static void nested_decode(const subsae_sae *s, float *out, const int32_t *idx, const float *val,
                          int64_t count)
{
    const int64_t d = s->d_out;
    const int L = s->matryoshka_count;
    for (int j = 0; j < L; j++) {
        float *o = out + j * d;
        memcpy(o, j ? o - d : s->b_dec, (size_t)d * sizeof *o);
        const int64_t lo = j ? s->matryoshka[j - 1] : 0, hi = s->matryoshka[j];
        for (int64_t q = 0; q < count; q++) {
            if (idx[q] < lo || idx[q] >= hi || val[q] == 0.0f)
                continue;
            const float *w = s->W_dec + (int64_t)idx[q] * d;
            const float v = val[q];
            for (int64_t c = 0; c < d; c++)
                o[c] += v * w[c];
        }
    }
}

/* 3. (Matryoshka) The prefixes' losses and gradients of row i, whose last
 *    block already holds the whole model's gradient: blocks 0 .. L - 2 get
 *    gscale (x_hat_j - t), then each block j the sum of the blocks j and
 *    above (what a feature first held by prefix j receives), and sum_g
 *    block 0 (the b_dec gradient). The prefixes' squared error but the
 *    last's. */
static double nested_gradients(const subsae_sae *s, float *g, const float *tr, float gscale,
                               double *sum_g)
{
    const int64_t d = s->d_out;
    const int L = s->matryoshka_count;
    double e2 = 0.0;
    for (int j = 0; j + 1 < L; j++) {
        float *o = g + j * d;
        for (int64_t c = 0; c < d; c++) {
            const float e = o[c] - tr[c];
            e2 += (double)e * e;
            o[c] = gscale * e;
        }
    }
    for (int j = L - 2; j >= 0; j--)
        for (int64_t c = 0; c < d; c++)
            g[j * d + c] += g[(j + 1) * d + c];
    for (int64_t c = 0; c < d; c++)
        sum_g[c] += g[c];
    return e2;
}

/* 3. Sparse decode, residual, dL/dx_hat = 2 (x_hat - t) / n, partial sums
 *    of the gradient and of the target per part of the rows. With workers
 *    n is the global batch (loss_rows), of which these rows are a part.
 *    AuxK: e_hat = the dead pairs' decode (no bias) against the residual e
 *    = t - x_hat (held fixed), g_aux = 2 c s (e_hat - e) / n. Gated: the
 *    gate path's reconstruction v = relu(pi) W_dec + b_dec (SAELens'
 *    auxiliary_reconstruction_loss |v - t|^2), g_aux = 2 (v - t) / n. */
static void decode_residual(subsae_trainer *t, int64_t n, double n_loss)
{
    const subsae_sae *s = t->sae;
    struct subsae__workspace *ws = &t->ws;
    const int64_t d_out = s->d_out, k = s->k, ka = ws->aux_k;
    const int64_t *rp = ws->row_ptr;
    const bool aux = ka > 0, gated = s->activation == SUBSAE_ACT_GATED;
    const size_t part_stride = SUBSAE__PART_STRIDE(d_out);
    const float gscale = 2.0f / (float)(t->loss_rows > 0 ? t->loss_rows : n);
    const float ascale = aux ? (float)(2.0 * t->auxk_coef * ws->aux_scale / n_loss) : 0.0f;
    const int64_t L = ws->g_levels; /* Matryoshka prefixes (1: a plain model) */
#pragma omp parallel for schedule(dynamic, 1) num_threads( \
    subsae__team(subsae__trainer_threads(t), (double)n *(double)(k + ka + 2) * (double)d_out))
    for (int p = 0; p < PARTS; p++) {
        double *part = ws->part + (size_t)p * part_stride;
        double *sum_g = part, *sum_t = part + d_out;
        memset(part, 0, part_stride * sizeof *part);
        for (int64_t i = part_begin(n, p, PARTS); i < part_begin(n, p + 1, PARTS); i++) {
            float *g_row = ws->g + i * L * d_out, *g = g_row + (L - 1) * d_out;
            const float *tr = ws->ts + i * d_out;
            if (L > 1)
                nested_decode(s, g_row, ws->idx + rp[i], ws->val + rp[i], rp[i + 1] - rp[i]);
            else
                subsae__sparse_decode_row(g, s->b_dec, s->W_dec, d_out, ws->idx + rp[i],
                                          ws->val + rp[i], rp[i + 1] - rp[i], d_out);
            if (s->skip) /* never with prefixes (trainer_init.c refuses both) */
                for (int64_t j = 0; j < d_out; j++)
                    g[j] += ws->skip_out[i * d_out + j];
            float *ga = aux || gated ? ws->g_aux + i * d_out : NULL;
            if (aux)
                subsae__sparse_decode_row(ga, NULL, s->W_dec, d_out, ws->aux_idx + i * ka,
                                          ws->aux_val + i * ka, ka, d_out);
            if (gated)
                subsae__sparse_decode_row(ga, s->b_dec, s->W_dec, d_out, ws->idx + rp[i],
                                          ws->pre_val + rp[i], rp[i + 1] - rp[i], d_out);
            double e2 = 0.0, t2 = 0.0, a2 = 0.0;
            for (int64_t j = 0; j < d_out; j++) {
                float e = g[j] - tr[j];
                e2 += (double)e * e;
                t2 += (double)tr[j] * tr[j];
                sum_t[j] += tr[j];
                g[j] = gscale * e;
                if (L == 1)
                    sum_g[j] += g[j];
                if (aux) {
                    float r = ga[j] + e; /* e_hat - (t - x_hat) */
                    a2 += (double)r * r;
                    ga[j] = ascale * r;
                } else if (gated) {
                    float r = ga[j] - tr[j];
                    a2 += (double)r * r;
                    ga[j] = gscale * r;
                }
            }
            ws->row_sse[i] = e2;
            if (L > 1)
                ws->prefix_sse[i] = nested_gradients(s, g_row, tr, gscale, sum_g);
            if (aux || gated)
                ws->aux_sse[i] = a2;
            part[3 * d_out] += t2;
        }
    }
}

/* 3. (skip) The skip path's output xs W_skip^T, added by the decode. */
static void skip_forward(subsae_trainer *t, int64_t n)
{
    const subsae_sae *s = t->sae;
    struct subsae__workspace *ws = &t->ws;
    memset(ws->skip_out, 0, (size_t)(n * s->d_out) * sizeof *ws->skip_out);
    subsae__skip_forward(s->W_skip, s->d_in, s->d_out, ws->xs, s->d_in, n, 1.0f, ws->skip_out,
                         s->d_out, subsae__trainer_threads(t));
}

/* 4. Counting sort of the pairs by feature (per-partition histograms, so
 *    that the pairs of a feature stay in row order). The number of pairs. */
static int64_t bucket_pairs(subsae_trainer *t, int64_t n)
{
    struct subsae__workspace *ws = &t->ws;
    const int T = subsae__trainer_threads(t); /* <= ws->threads */
    const int64_t m = t->sae->d_sae, *rp = ws->row_ptr;
    const bool jump = t->sae->activation == SUBSAE_ACT_JUMPRELU ||
                      t->sae->activation == SUBSAE_ACT_GATED; /* pairs keep pre */
    int32_t running = 0;
#pragma omp parallel num_threads(subsae__team(T, (double)rp[n] + (double)m))
    {
        for (int p = omp_get_thread_num(); p < T; p += omp_get_num_threads()) {
            int32_t *counts = ws->counts + (size_t)p * (size_t)m;
            memset(counts, 0, (size_t)m * sizeof *counts);
            for (int64_t q = rp[part_begin(n, p, T)]; q < rp[part_begin(n, p + 1, T)]; q++)
                if (ws->idx[q] >= 0)
                    counts[ws->idx[q]]++;
        }
    }
    for (int64_t f = 0; f < m; f++) {
        int32_t start = running;
        for (int p = 0; p < T; p++) {
            int32_t *c = ws->counts + (size_t)p * (size_t)m + f;
            int32_t here = *c;
            *c = running;
            running += here;
        }
        ws->offsets[f] = start;
        ws->fired[f] = running - start;
    }
    ws->offsets[m] = running;
#pragma omp parallel num_threads(subsae__team(T, (double)rp[n]))
    {
        for (int p = omp_get_thread_num(); p < T; p += omp_get_num_threads()) {
            int32_t *cursor = ws->counts + (size_t)p * (size_t)m;
            for (int64_t i = part_begin(n, p, T); i < part_begin(n, p + 1, T); i++)
                for (int64_t q = rp[i]; q < rp[i + 1]; q++) {
                    int32_t f = ws->idx[q];
                    if (f < 0)
                        continue;
                    int32_t pos = cursor[f]++;
                    ws->pair_row[pos] = (int32_t)i;
                    ws->pair_z[pos] = ws->val[q];
                    if (jump)
                        ws->pair_pre[pos] = ws->pre_val[q];
                }
        }
    }
    return running;
}

/* 4. (AuxK) The same for the dead pairs, serially (k_aux per row). The
 *    number of AuxK pairs (0 when AuxK is off this step). */
static int64_t bucket_aux_pairs(subsae_trainer *t, int64_t n)
{
    struct subsae__workspace *ws = &t->ws;
    const int64_t m = t->sae->d_sae, ka = ws->aux_k;
    if (ka == 0)
        return 0;
    int32_t *counts = ws->counts;
    memset(counts, 0, (size_t)m * sizeof *counts);
    for (int64_t q = 0; q < n * ka; q++)
        if (ws->aux_idx[q] >= 0)
            counts[ws->aux_idx[q]]++;
    int32_t at = 0;
    for (int64_t f = 0; f < m; f++) {
        ws->aux_offsets[f] = at;
        ws->aux_fired[f] = counts[f];
        counts[f] = at;
        at += ws->aux_fired[f];
    }
    ws->aux_offsets[m] = at;
    for (int64_t q = 0; q < n * ka; q++) {
        int32_t f = ws->aux_idx[q];
        if (f < 0)
            continue;
        int32_t pos = counts[f]++;
        ws->aux_pair_row[pos] = (int32_t)(q / ka);
        ws->aux_pair_z[pos] = ws->aux_val[q];
    }
    return at;
}

/* The features with pairs, ascending, and each one's slot; then their
 * ranges per part, balanced by pair count (`pairs`: of both kinds). */
static void list_touched(struct subsae__workspace *ws, int64_t m, int64_t pairs)
{
    const bool aux = ws->aux_k > 0;
    int64_t n_touched = 0;
    for (int64_t f = 0; f < m; f++) {
        if (ws->fired[f] > 0 || (aux && ws->aux_fired[f] > 0)) {
            ws->slot_of[f] = (int32_t)n_touched;
            ws->touched[n_touched++] = (int32_t)f;
        } else {
            ws->slot_of[f] = -1;
        }
    }
    ws->split[0] = 0;
    int64_t at = 0, acc = 0;
    for (int p = 1; p < PARTS; p++) {
        int64_t goal = (pairs + n_touched) * p / PARTS;
        while (at < n_touched && acc < goal) {
            int32_t f = ws->touched[at];
            acc += ws->fired[f] + (aux ? ws->aux_fired[f] : 0) + 1;
            at++;
        }
        ws->split[p] = at;
    }
    ws->split[PARTS] = n_touched;
}

/* What the per-feature backward reads besides the model and the
 * workspace. */
struct backward_terms {
    bool jump, relu_l1, gated, aux, unit, apply;
    int64_t g_stride; /* floats per row of ws->g (Matryoshka: a block per prefix) */
    double lam_n;     /* weight of the sparsity penalty over the loss rows */
    float inv_bw;     /* JumpReLU: 1 / bandwidth */
};

/* A part's running sums over its features. */
struct part_sums {
    double sumsq, penalty;
};

/* The output gradient feature f receives: a Matryoshka feature's block is
 * the sum over the prefixes that hold it (decode_residual). */
static const float *feature_g(const subsae_trainer *t, int32_t f)
{
    const subsae_sae *s = t->sae;
    return t->ws.g + (int64_t)subsae__matryoshka_prefix_of(s, f) * s->d_out;
}

/* 5. (losses) The gradients of feature f in slot i with the extra terms
 *    of losses.c: the L1 penalty weighted by the decoder-row norm (ReLU),
 *    the JumpReLU threshold and L0 penalty, AuxK's dead pairs. */
static void backward_losses(subsae_trainer *t, const struct backward_terms *bt, int64_t i,
                            int32_t f, struct part_sums *acc)
{
    const subsae_sae *s = t->sae;
    struct subsae__workspace *ws = &t->ws;
    const int64_t d_in = s->d_in, d_out = s->d_out;
    const float *wdec = s->W_dec + (int64_t)f * d_out;
    float *gdec = ws->g_W_dec + i * d_out, *genc = ws->g_W_enc + i * d_in;
    const int32_t off = ws->offsets[f], cnt = ws->fired[f];
    const double lam_n = bt->lam_n;
    float norm = 0.0f, dz_add = 0.0f;
    if (bt->relu_l1) {
        norm = (float)sqrt(subsae__sumsq(wdec, d_out));
        dz_add = (float)(lam_n * norm);
    }
    const float thr = bt->jump ? s->threshold[f] : 0.0f;
    double gthr = 0.0, zsum = 0.0;
    subsae__feature_backward_ex(
        ws->pair_row + off, ws->pair_z + off, bt->jump ? ws->pair_pre + off : NULL, cnt,
        feature_g(t, f), bt->g_stride, d_out, ws->xin, d_in, d_in, wdec, dz_add, thr,
        bt->inv_bw, (float)lam_n, false, gdec, genc, &ws->g_b_enc[i], &gthr, &zsum);
    int32_t active = cnt;
    if (bt->jump) {
        active = 0;
        for (int32_t q = off; q < off + cnt; q++)
            active += ws->pair_z[q] > 0.0f;
        ws->g_thr[i] = (float)(gthr * thr); /* d loss / d log t */
        acc->penalty += lam_n * active;
    }
    if (bt->relu_l1 && norm > 0.0f) {
        const float c = (float)(lam_n * zsum / norm);
        for (int64_t j = 0; j < d_out; j++)
            gdec[j] += c * wdec[j];
        acc->penalty += lam_n * norm * zsum;
    }
    ws->active[f] = active;
    if (bt->aux && ws->aux_fired[f] > 0) {
        double g2 = 0.0, z2 = 0.0;
        const int32_t ao = ws->aux_offsets[f];
        subsae__feature_backward_ex(ws->aux_pair_row + ao, ws->aux_pair_z + ao, NULL,
                                    ws->aux_fired[f], ws->g_aux, d_out, d_out, ws->xin, d_in,
                                    d_in, wdec, 0.0f, 0.0f, 0.0f, 0.0f, true, gdec, genc,
                                    &ws->g_b_enc[i], &g2, &z2);
    }
}

/* 5. (gated) The gradients of feature f in slot i (losses.c), with the
 *    decoder row's part of the L1 term lambda / n sum relu(pi) |w_dec|. */
static void backward_gated(subsae_trainer *t, const struct backward_terms *bt, int64_t i,
                           int32_t f, struct part_sums *acc)
{
    const subsae_sae *s = t->sae;
    struct subsae__workspace *ws = &t->ws;
    const int64_t d_in = s->d_in, d_out = s->d_out;
    const float *wdec = s->W_dec + (int64_t)f * d_out;
    const int32_t off = ws->offsets[f];
    const float norm = (float)sqrt(subsae__sumsq(wdec, d_out));
    struct subsae__gated_feature gf = {
        .rows = ws->pair_row + off,
        .z = ws->pair_z + off,
        .pi = ws->pair_pre + off,
        .count = ws->fired[f],
        .g = ws->g,
        .g_gate = ws->g_aux,
        .d_out = d_out,
        .d_in = d_in,
        .xin = ws->xin,
        .wdec = wdec,
        .scale = expf(s->r_mag[f]),
        .b_mag = s->b_mag[f],
        .l1_dz = (float)(bt->lam_n * norm),
        .gdec = ws->g_W_dec + i * d_out,
        .genc = ws->g_W_enc + i * d_in,
    };
    subsae__feature_backward_gated(&gf);
    ws->g_b_enc[i] = gf.gb_gate;
    ws->g_r_mag[i] = gf.gr_mag;
    ws->g_b_mag[i] = gf.gb_mag;
    if (norm > 0.0f) {
        const float c = (float)(bt->lam_n * gf.pi_sum / norm);
        for (int64_t j = 0; j < d_out; j++)
            gf.gdec[j] += c * wdec[j];
    }
    acc->penalty += bt->lam_n * norm * gf.pi_sum;
    ws->active[f] = gf.active;
}

/* 5. The gradients of feature f in slot i from its pairs, projected for a
 *    unit-norm decoder; its squared norm, and its b_enc gradient's path
 *    into the b_dec gradient (xin = x - b_dec) added to benc_path. */
static void backward_feature(subsae_trainer *t, const struct backward_terms *bt, int64_t i,
                             double *benc_path, struct part_sums *acc)
{
    const subsae_sae *s = t->sae;
    struct subsae__workspace *ws = &t->ws;
    const int64_t d_in = s->d_in, d_out = s->d_out;
    const int32_t f = ws->touched[i];
    const float *wdec = s->W_dec + (int64_t)f * d_out;
    float *gdec = ws->g_W_dec + i * d_out, *genc = ws->g_W_enc + i * d_in;
    const int32_t off = ws->offsets[f], cnt = ws->fired[f];
    if (bt->gated) {
        backward_gated(t, bt, i, f, acc);
    } else if (!bt->jump && !bt->relu_l1 && !(bt->aux && ws->aux_fired[f] > 0)) {
        subsae__feature_backward(ws->pair_row + off, ws->pair_z + off, cnt, feature_g(t, f),
                                 bt->g_stride, d_out, ws->xin, d_in, d_in, wdec, gdec, genc,
                                 &ws->g_b_enc[i]);
        ws->active[f] = cnt;
    } else {
        backward_losses(t, bt, i, f, acc);
    }
    if (bt->unit) {
        double ww = subsae__sumsq(wdec, d_out);
        if (ww > 0.0) {
            float c = (float)(subsae__dot(gdec, wdec, d_out) / ww);
            for (int64_t j = 0; j < d_out; j++)
                gdec[j] -= c * wdec[j];
        }
    }
    acc->sumsq += subsae__sumsq(gdec, d_out) + subsae__sumsq(genc, d_in) +
                  (double)ws->g_b_enc[i] * ws->g_b_enc[i];
    if (bt->jump)
        acc->sumsq += (double)ws->g_thr[i] * ws->g_thr[i];
    if (bt->gated)
        acc->sumsq += (double)ws->g_r_mag[i] * ws->g_r_mag[i] +
                      (double)ws->g_b_mag[i] * ws->g_b_mag[i];
    if (bt->apply) {
        /* xin = x - b_dec: d loss / d b_dec gets -sum dpre W_enc[f] (gated:
         * the gate's dpre plus exp(r_mag) times the magnitude's). */
        const float *wenc = s->W_enc + (int64_t)f * d_in;
        const double gb = bt->gated ? (double)ws->g_b_enc[i] +
                                          (double)expf(s->r_mag[f]) * ws->g_b_mag[i]
                                    : (double)ws->g_b_enc[i];
        for (int64_t j = 0; j < d_in; j++)
            benc_path[j] -= gb * wenc[j];
    }
}

/* 5. Per-feature backward over the parts' contiguous ranges of touched
 *    features (`pairs` of both kinds weigh the team). */
static void backward_features(subsae_trainer *t, double n_loss, int64_t pairs)
{
    const subsae_sae *s = t->sae;
    struct subsae__workspace *ws = &t->ws;
    const int64_t d_in = s->d_in, d_out = s->d_out;
    const size_t part_stride = SUBSAE__PART_STRIDE(d_out);
    const int act = s->activation;
    struct backward_terms bt = {
        .jump = act == SUBSAE_ACT_JUMPRELU,
        .relu_l1 = act == SUBSAE_ACT_RELU && t->l1_coef > 0.0,
        .gated = act == SUBSAE_ACT_GATED,
        .aux = ws->aux_k > 0,
        .unit = t->decoder_norm == SUBSAE_DECODER_UNIT,
        .apply = s->apply_b_dec_to_input,
        .inv_bw = (float)(1.0 / t->bandwidth),
        .g_stride = ws->g_levels * d_out,
    };
    bt.lam_n = subsae__trainer_sparsity_coef(t) / n_loss;
#pragma omp parallel for schedule(dynamic, 1) num_threads( \
    subsae__team(subsae__trainer_threads(t), (double)pairs *(double)(2 * d_out + d_in)))
    for (int p = 0; p < PARTS; p++) {
        double *part = ws->part + (size_t)p * part_stride;
        struct part_sums acc = {0.0, 0.0};
        for (int64_t i = ws->split[p]; i < ws->split[p + 1]; i++)
            backward_feature(t, &bt, i, part + 2 * d_out, &acc);
        part[3 * d_out + 1] = acc.sumsq;
        ws->extra[(size_t)p * 4] = acc.penalty;
    }
}

/* 6. b_dec gradient and the totals, reduced in partition order. */
static int reduce(subsae_trainer *t, int64_t n, double n_loss, double *loss, double *sq)
{
    const subsae_sae *s = t->sae;
    struct subsae__workspace *ws = &t->ws;
    const int64_t d_out = s->d_out;
    const size_t part_stride = SUBSAE__PART_STRIDE(d_out);
    const bool apply = s->apply_b_dec_to_input, aux = ws->aux_k > 0;
    const bool gated = s->activation == SUBSAE_ACT_GATED;
    double total_sq = 0.0, sse = 0.0, penalty = 0.0, aux_sse = 0.0, prefix_sse = 0.0;
    for (int64_t j = 0; j < d_out; j++) {
        double acc = 0.0;
        for (int p = 0; p < PARTS; p++) {
            const double *part = ws->part + (size_t)p * part_stride;
            acc += part[j] + (apply ? part[2 * d_out + j] : 0.0);
        }
        ws->g_b_dec[j] = (float)acc;
        total_sq += acc * acc;
    }
    for (int p = 0; p < PARTS; p++) {
        total_sq += ws->part[(size_t)p * part_stride + 3 * d_out + 1];
        penalty += ws->extra[(size_t)p * 4];
    }
    if (s->skip) {
        subsae__skip_gradient(ws->g, ws->xs, n, s->d_in, d_out, ws->g_W_skip,
                              subsae__trainer_threads(t));
        total_sq += subsae__sumsq(ws->g_W_skip, d_out * s->d_in);
    }
    for (int64_t i = 0; i < n; i++)
        sse += ws->row_sse[i];
    for (int64_t i = 0; ws->g_levels > 1 && i < n; i++)
        prefix_sse += ws->prefix_sse[i];
    if (aux || gated)
        for (int64_t i = 0; i < n; i++)
            aux_sse += ws->aux_sse[i];
    ws->step_mse = sse / (double)n;
    ws->step_prefix = prefix_sse / (double)n;
    ws->step_penalty = penalty;
    ws->step_aux = aux     ? t->auxk_coef * ws->aux_scale * aux_sse / n_loss
                   : gated ? aux_sse / n_loss
                           : 0.0;
    *loss = ws->step_mse + ws->step_prefix + ws->step_penalty + ws->step_aux;
    *sq = total_sq;
    if (!isfinite(*loss) || !isfinite(total_sq))
        return subsae__fail(SUBSAE_E_NONFINITE, SUBSAE_REASON_DIVERGED,
                            "subsae_trainer_step: step %lld diverged (loss %g, gradient norm^2 "
                            "%g); weights left as before the step: lower the learning rate",
                            (long long)t->step + 1, *loss, total_sq);
    return SUBSAE_OK;
}

/* Forward and backward on n raw rows into the workspace, stage by stage
 * (the numbers of the comment at the top). */
int subsae__trainer_forward_backward(subsae_trainer *t, const float *input,
                                     int64_t input_stride, const float *target,
                                     int64_t target_stride, int64_t n, double *loss, double *sq)
{
    double *phase = t->phase_seconds;
    double clock = omp_get_wtime();
    int rc = subsae__trainer_bf16_check(t, "subsae_trainer_step");
    if (rc)
        return rc;
    subsae__trainer_bf16_sync(t);
    rc = scale_inputs(t, input, input_stride, target, target_stride, n);
    if (rc)
        return rc;
    phase[SUBSAE_PHASE_PREPARE] += omp_get_wtime() - clock;
    rc = encode(t, n);
    if (rc)
        return rc;
    clock = omp_get_wtime();
    const double n_loss = (double)(t->loss_rows > 0 ? t->loss_rows : n);
    if (t->sae->skip)
        skip_forward(t, n);
    decode_residual(t, n, n_loss);
    double now = omp_get_wtime();
    phase[SUBSAE_PHASE_DECODE] += now - clock;
    clock = now;
    int64_t pairs = bucket_pairs(t, n);
    pairs += bucket_aux_pairs(t, n);
    list_touched(&t->ws, t->sae->d_sae, pairs);
    backward_features(t, n_loss, pairs);
    rc = reduce(t, n, n_loss, loss, sq);
    phase[SUBSAE_PHASE_BACKWARD] += omp_get_wtime() - clock;
    return rc;
}

double subsae__trainer_sparsity_coef(const subsae_trainer *t)
{
    const int act = t->sae->activation;
    double coef = act == SUBSAE_ACT_JUMPRELU                   ? t->l0_coef
                  : act == SUBSAE_ACT_RELU && t->l1_coef > 0.0 ? t->l1_coef
                  : act == SUBSAE_ACT_GATED                    ? t->l1_coef
                                                               : 0.0;
    /* SAELens' l1_warm_up_steps: step s (from 0) takes s / N of it. */
    if (t->coef_warmup_steps > 0 && t->step < t->coef_warmup_steps)
        coef *= (double)t->step / (double)t->coef_warmup_steps;
    return coef;
}

static double learning_rate(const subsae_trainer *t)
{
    double lr = t->lr > 0.0 ? t->lr : subsae__trainer_default_lr(t->sae->d_sae);
    if (t->warmup_steps > 0 && t->step < t->warmup_steps)
        lr *= (double)(t->step + 1) / (double)t->warmup_steps;
    if (t->cooldown_steps > 0 && t->fit_end_step >= 0) {
        int64_t left = t->fit_end_step - t->step; /* steps left, this one included */
        if (left < t->cooldown_steps)
            lr *= (double)(left > 0 ? left : 0) / (double)t->cooldown_steps;
    }
    return lr;
}

/* A tensor Adam trains (params.h), with its moments and the step's
 * gradient. `width` elements per feature for the tensors whose rows are
 * features' (the gradient holds compact rows per touched slot), all of it
 * otherwise (b_dec). */
struct adam_tensor {
    float *w, *m, *v;
    const float *g;
    int64_t width;
    bool log_threshold; /* the model keeps exp of it, which must be finite too */
};

/* The constants of one Adam step (the clip factor and Adam's) and the
 * tensors it trains, feature rows apart from whole tensors. */
struct adam_step {
    float gs, b1, b2, size, ib2, eps;
    int n_rows, n_whole;
    struct adam_tensor rows[SUBSAE__MAX_PARAMS], whole[SUBSAE__MAX_PARAMS];
};

static void adam_tensors(subsae_trainer *t, struct adam_step *a)
{
    const subsae_sae *s = t->sae;
    a->n_rows = a->n_whole = 0;
    SUBSAE__FOR_EACH_PARAM(p, SUBSAE__PARAM_KEY(s))
    {
        const float *g = subsae__param_grad(p, &t->ws);
        if (!g)
            continue;
        const bool rows = p->dims[0] == SUBSAE__DIM_D_SAE;
        struct adam_tensor *x = rows ? &a->rows[a->n_rows++] : &a->whole[a->n_whole++];
        *x = (struct adam_tensor){
            .w = subsae__param_data(p, t, s),
            .m = subsae__param_data(subsae__param_moment(p, SUBSAE__ROLE_ADAM_M), t, s),
            .v = subsae__param_data(subsae__param_moment(p, SUBSAE__ROLE_ADAM_V), t, s),
            .g = g,
            .width = subsae__param_elements(p, s) / (rows ? s->d_sae : 1),
            .log_threshold = p->role == SUBSAE__ROLE_TRAINED,
        };
    }
}

/* Whether the update of x's row `row` from gradient row `slot` (-1: no
 * gradient, the moments decay) keeps it and its moments finite. The log
 * threshold (width 1) is updated on copies by the update's own function,
 * since exp of it must be finite as well. */
static bool row_finite(const struct adam_tensor *x, const struct adam_step *a, int64_t row,
                       int64_t slot)
{
    const int64_t o = row * x->width;
    const float *g = slot >= 0 ? x->g + slot * x->width : NULL;
    if (!x->log_threshold)
        return subsae__adam_finite(x->w + o, x->m + o, x->v + o, g, x->width, a->gs, a->b1,
                                   a->b2, a->size, a->ib2, a->eps);
    float w = x->w[o], m = x->m[o], v = x->v[o];
    subsae__adam(&w, &m, &v, g, 1, a->gs, a->b1, a->b2, a->size, a->ib2, a->eps);
    return isfinite(w) && isfinite(m) && isfinite(v) && isfinite(expf(w));
}

static void row_update(const struct adam_tensor *x, const struct adam_step *a, int64_t row,
                       int64_t slot)
{
    const int64_t o = row * x->width;
    subsae__adam(x->w + o, x->m + o, x->v + o, slot >= 0 ? x->g + slot * x->width : NULL,
                 x->width, a->gs, a->b1, a->b2, a->size, a->ib2, a->eps);
}

/* Whether feature f's update from the gradient rows of `slot` keeps its
 * weights and moments finite. */
static bool feature_finite(const struct adam_step *a, int64_t f, int64_t slot)
{
    bool finite = true;
    for (int i = 0; i < a->n_rows && finite; i++)
        finite = row_finite(&a->rows[i], a, f, slot);
    return finite;
}

/* Feature f's update from the gradient rows of `slot` (-1: none), the
 * model's threshold from the log threshold, and the unit-norm projection
 * of its decoder row. */
static void feature_update(subsae_trainer *t, const struct adam_step *a, int64_t f,
                           int64_t slot)
{
    subsae_sae *s = t->sae;
    for (int i = 0; i < a->n_rows; i++)
        row_update(&a->rows[i], a, f, slot);
    subsae__trainer_bf16_row(t, f);
    if (s->activation == SUBSAE_ACT_JUMPRELU)
        s->threshold[f] = expf(t->log_threshold[f]);
    if (t->decoder_norm == SUBSAE_DECODER_UNIT)
        subsae__normalize_row(s->W_dec + f * s->d_out, s->d_out);
}

/* Adam on every parameter from the workspace gradients, all or nothing:
 * a first pass computes the update without storing it, and if any new
 * weight or moment would not be finite (a learning rate far too large,
 * moments from a damaged checkpoint) the step fails with
 * SUBSAE_E_NONFINITE and nothing changes. The pass reads what the update
 * reads, O(parameters) per step against the encoder's O(batch x
 * parameters). Sparse Adam visits the touched features only (slot i of
 * feature touched[i]); dense Adam every feature. */
int subsae__trainer_apply_update(subsae_trainer *t, double sq)
{
    subsae_sae *s = t->sae;
    struct subsae__workspace *ws = &t->ws;
    const int T = subsae__trainer_threads(t); /* <= ws->threads */
    const int64_t d_in = s->d_in, d_out = s->d_out;
    const double clock = omp_get_wtime();
    const int64_t step = t->step + 1;
    const double lr = learning_rate(t);
    struct adam_step a = {
        .gs = 1.0f,
        .b1 = (float)t->beta1,
        .b2 = (float)t->beta2,
        .size = (float)(lr / (1.0 - pow(t->beta1, (double)step))),
        .ib2 = (float)(1.0 / sqrt(1.0 - pow(t->beta2, (double)step))),
        .eps = (float)t->eps,
    };
    if (t->clip_norm > 0.0 && sqrt(sq) > t->clip_norm)
        a.gs = (float)(t->clip_norm / sqrt(sq));
    const bool sparse = t->sparse_adam;
    const int64_t count = sparse ? subsae__touched_count(ws) : s->d_sae;

    adam_tensors(t, &a);
    bool finite = true;
    for (int i = 0; i < a.n_whole && finite; i++)
        finite = row_finite(&a.whole[i], &a, 0, 0);
#pragma omp parallel for schedule(static) reduction(&& : finite) \
    num_threads(subsae__team(T, (double)count * (double)(d_in + d_out)))
    for (int64_t i = 0; i < count; i++) {
        const int64_t f = sparse ? ws->touched[i] : i;
        finite = finite && feature_finite(&a, f, sparse ? i : ws->slot_of[f]);
    }
    if (!finite) {
        t->phase_seconds[SUBSAE_PHASE_OPTIMIZER] += omp_get_wtime() - clock;
        return subsae__fail(
            SUBSAE_E_NONFINITE, SUBSAE_REASON_DIVERGED,
            "subsae_trainer_step: step %lld diverged: the update (learning rate "
            "%g) would make weights or Adam moments infinite or NaN; weights left "
            "as before the step: lower the learning rate",
            (long long)step, lr);
    }

    for (int i = 0; i < a.n_whole; i++)
        row_update(&a.whole[i], &a, 0, 0);
#pragma omp parallel for schedule(dynamic, 64) \
    num_threads(subsae__team(T, (double)count * (double)(d_in + d_out)))
    for (int64_t i = 0; i < count; i++) {
        const int64_t f = sparse ? ws->touched[i] : i;
        feature_update(t, &a, f, sparse ? i : ws->slot_of[f]);
    }
    t->phase_seconds[SUBSAE_PHASE_OPTIMIZER] += omp_get_wtime() - clock;
    t->last_lr = lr;
    return SUBSAE_OK;
}

/* The step's batch alone: MSE in raw units, explained variance against
 * the batch's own mean, L0 (`active` pairs over n rows). */
static void account_batch(subsae_trainer *t, int64_t n, int64_t active)
{
    const subsae_sae *s = t->sae;
    const struct subsae__workspace *ws = &t->ws;
    const int64_t d_out = s->d_out;
    const size_t part_stride = SUBSAE__PART_STRIDE(d_out);
    if (n <= 0) {
        t->last_batch[0] = t->last_batch[1] = t->last_batch[2] = NAN;
        return;
    }
    double sum_t2 = 0.0, mean_sq = 0.0;
    for (int p = 0; p < PARTS; p++)
        sum_t2 += ws->part[(size_t)p * part_stride + 3 * d_out];
    for (int64_t j = 0; j < d_out; j++) {
        double sum = 0.0;
        for (int p = 0; p < PARTS; p++)
            sum += ws->part[(size_t)p * part_stride + d_out + j];
        mean_sq += sum * sum;
    }
    const double sst = sum_t2 - mean_sq / (double)n;
    t->last_batch[0] = ws->step_mse / (s->output_scale * s->output_scale);
    t->last_batch[1] = sst > 0.0 ? 1.0 - ws->step_mse * (double)n / sst : NAN;
    t->last_batch[2] = (double)active / (double)n;
}

/* Counters, dead-feature clock and metrics window after a step of n rows. */
void subsae__trainer_account(subsae_trainer *t, int64_t n, double loss)
{
    subsae_sae *s = t->sae;
    struct subsae__workspace *ws = &t->ws;
    const int64_t d_out = s->d_out, m = s->d_sae;
    const size_t part_stride = SUBSAE__PART_STRIDE(d_out);
    t->step++;
    t->tokens += n;
    t->last_loss = loss;
    t->last_loss_parts[0] = ws->step_mse + ws->step_prefix;
    t->last_loss_parts[1] = ws->step_penalty;
    t->last_loss_parts[2] = ws->step_aux;
    struct subsae__window *w = &t->cur;
    w->tokens += n;
    w->sse += ws->step_mse * (double)n;
    for (int p = 0; p < PARTS; p++) {
        const double *part = ws->part + (size_t)p * part_stride;
        for (int64_t j = 0; j < d_out; j++)
            w->sum_t[j] += part[d_out + j];
        w->sum_t2 += part[3 * d_out];
    }
    const int64_t nt = subsae__touched_count(ws);
    int64_t active = 0;
    for (int64_t i = 0; i < nt; i++) {
        int32_t f = ws->touched[i];
        if (ws->active[f] > 0) {
            t->last_fired[f] = t->tokens;
            w->fires[f] += ws->active[f];
            active += ws->active[f];
        }
    }
    w->active += active;
    ws->n_active = active;
    account_batch(t, n, active);
    if (s->activation == SUBSAE_ACT_BATCHTOPK && isfinite(ws->step_theta)) {
        /* The inference threshold: moving average of the smallest value
         * the batch selection kept (SAELens' topk_threshold). */
        const double r = SUBSAE__BATCHTOPK_THRESHOLD_RATE;
        t->batch_threshold = (1.0 - r) * t->batch_threshold + r * (double)ws->step_theta;
        const float thr = (float)t->batch_threshold;
        for (int64_t f = 0; f < m; f++)
            s->threshold[f] = thr;
    }
    if (t->window_tokens > 0 && w->tokens >= t->window_tokens) {
        struct subsae__window done = t->cur;
        t->cur = t->prev;
        t->prev = done;
        t->prev_valid = true;
        subsae__trainer_window_clear(&t->cur, d_out, m);
    }
}

int subsae__trainer_check_step_args(const char *fn, const subsae_trainer *t, const float *input,
                                    int64_t input_stride, const float *target,
                                    int64_t target_stride, int64_t n)
{
    if (!t)
        return subsae__fail_null(fn, "t");
    if (!t->initialised)
        return subsae__fail(SUBSAE_E_STATE, SUBSAE_REASON_WRONG_STATE,
                            "%s: call subsae_trainer_init first", fn);
    const bool workers = subsae__collective_on(&t->coll);
    if (!input && !(workers && n == 0))
        return subsae__fail_null(fn, "input");
    if (t->sae->skip && workers)
        return subsae__fail(SUBSAE_E_UNSUPPORTED, SUBSAE_REASON_BAD_VALUE,
                            "%s: the skip path trains in one process (no workers)", fn);
    if (t->transcoder && !target && !(workers && n == 0))
        return subsae__fail_null(fn, "target (the trainer was initialised as a transcoder)");
    if (!t->transcoder && target)
        return subsae__fail(
            SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
            "%s: a target was given but the trainer was initialised without one", fn);
    if (n < (workers ? 0 : 1) || n > SUBSAE__MAX_BATCH || input_stride < t->sae->d_in ||
        (target && target_stride < t->sae->d_out))
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                            "%s: n %lld, input_stride %lld (d_in %lld), target_stride %lld "
                            "(d_out %lld)",
                            fn, (long long)n, (long long)input_stride, (long long)t->sae->d_in,
                            (long long)target_stride, (long long)t->sae->d_out);
    return SUBSAE_OK;
}

int subsae__trainer_gradients(subsae_trainer *t, const float *input, int64_t input_stride,
                              const float *target, int64_t target_stride, int64_t n,
                              float *g_W_enc, float *g_b_enc, float *g_W_dec, float *g_b_dec,
                              double *loss, int32_t *indices)
{
    int rc = subsae__trainer_check_step_args("subsae__trainer_gradients", t, input,
                                             input_stride, target, target_stride, n);
    if (rc)
        return rc;
    rc = subsae__trainer_workspace(t, n, subsae__trainer_threads(t));
    if (rc)
        return rc;
    double l, sq;
    rc = subsae__trainer_forward_backward(t, input, input_stride, target, target_stride, n, &l,
                                          &sq);
    if (rc)
        return rc;
    const subsae_sae *s = t->sae;
    const struct subsae__workspace *ws = &t->ws;
    if (g_W_enc)
        memset(g_W_enc, 0, (size_t)(s->d_sae * s->d_in) * sizeof(float));
    if (g_W_dec)
        memset(g_W_dec, 0, (size_t)(s->d_sae * s->d_out) * sizeof(float));
    if (g_b_enc)
        memset(g_b_enc, 0, (size_t)s->d_sae * sizeof(float));
    for (int64_t i = 0; i < subsae__touched_count(ws); i++) {
        int64_t f = ws->touched[i];
        if (g_W_enc)
            memcpy(g_W_enc + f * s->d_in, ws->g_W_enc + i * s->d_in,
                   (size_t)s->d_in * sizeof(float));
        if (g_W_dec)
            memcpy(g_W_dec + f * s->d_out, ws->g_W_dec + i * s->d_out,
                   (size_t)s->d_out * sizeof(float));
        if (g_b_enc)
            g_b_enc[f] = ws->g_b_enc[i];
    }
    if (g_b_dec)
        memcpy(g_b_dec, ws->g_b_dec, (size_t)s->d_out * sizeof(float));
    if (indices && s->activation == SUBSAE_ACT_TOPK)
        memcpy(indices, ws->idx, (size_t)(n * s->k) * sizeof(int32_t));
    if (loss)
        *loss = l;
    return SUBSAE_OK;
}

void subsae__trainer_pairs(const subsae_trainer *t, const int64_t **row_ptr,
                           const int32_t **idx, const float **val)
{
    *row_ptr = t->ws.row_ptr;
    *idx = t->ws.idx;
    *val = t->ws.val;
}

void subsae__trainer_threshold_gradient(const subsae_trainer *t, float *g)
{
    const struct subsae__workspace *ws = &t->ws;
    memset(g, 0, (size_t)t->sae->d_sae * sizeof *g);
    if (t->sae->activation != SUBSAE_ACT_JUMPRELU)
        return;
    for (int64_t i = 0; i < subsae__touched_count(ws); i++)
        g[ws->touched[i]] = ws->g_thr[i];
}

void subsae__trainer_gated_gradient(const subsae_trainer *t, float *g_r_mag, float *g_b_mag)
{
    const struct subsae__workspace *ws = &t->ws;
    memset(g_r_mag, 0, (size_t)t->sae->d_sae * sizeof *g_r_mag);
    memset(g_b_mag, 0, (size_t)t->sae->d_sae * sizeof *g_b_mag);
    if (t->sae->activation != SUBSAE_ACT_GATED)
        return;
    for (int64_t i = 0; i < subsae__touched_count(ws); i++) {
        g_r_mag[ws->touched[i]] = ws->g_r_mag[i];
        g_b_mag[ws->touched[i]] = ws->g_b_mag[i];
    }
}

void subsae__trainer_loss_parts(const subsae_trainer *t, double *mse, double *penalty,
                                double *aux)
{
    *mse = t->ws.step_mse + t->ws.step_prefix;
    *penalty = t->ws.step_penalty;
    *aux = t->ws.step_aux;
}
