/* The training step's workspace: every buffer of the step, sized for a
 * batch and a thread count before the hot loop, so that nothing is
 * allocated inside the step; the pair arrays and gradient rows grow (for
 * the dense activations, AuxK and the workers' union of features) when a
 * step needs more room. Below every other file of the trainer: it calls
 * none of them. */
#include "trainer_workspace.h"

#include "encoder_gemm.h"
#include "matryoshka.h"

#include <string.h>

static void workspace_free(struct subsae__workspace *ws)
{
    void *blocks[] = {ws->rows,         ws->xs,          ws->ts == ws->xs ? NULL : ws->ts,
                      ws->xin,          ws->pre,         ws->idx,
                      ws->val,          ws->g,           ws->row_sse,
                      ws->counts,       ws->offsets,     ws->fired,
                      ws->pair_row,     ws->pair_z,      ws->touched,
                      ws->slot_of,      ws->g_W_enc,     ws->g_W_dec,
                      ws->g_b_enc,      ws->g_b_dec,     ws->part,
                      ws->split,        ws->row_ptr,     ws->pre_val,
                      ws->pair_pre,     ws->row_count,   ws->cut,
                      ws->hist,         ws->active,      ws->g_thr,
                      ws->extra,        ws->dead_list,   ws->aux_tmp,
                      ws->aux_idx,      ws->aux_val,     ws->g_aux,
                      ws->aux_sse,      ws->aux_offsets, ws->aux_fired,
                      ws->aux_pair_row, ws->aux_pair_z,  ws->g_r_mag,
                      ws->g_b_mag,      ws->skip_out,    ws->g_W_skip,
                      ws->prefix_sse,   ws->W_enc_bf16,  ws->xin_bf16,
                      ws->cand_idx,     ws->cand_val,    ws->cand_offsets,
                      ws->cand_order,   ws->bf16_wnorm,  ws->bf16_row_changed};
    for (size_t i = 0; i < sizeof blocks / sizeof blocks[0]; i++)
        subsae__free(blocks[i]);
    memset(ws, 0, sizeof *ws);
}

void subsae__trainer_workspace_release(subsae_trainer *t)
{
    workspace_free(&t->ws);
}

int subsae__trainer_threads(const subsae_trainer *t)
{
    return t->threads > 0 ? (int)t->threads : subsae__threads();
}

/* Slots per row of AuxK for a configuration (0 when off). */
static int64_t aux_slots(const subsae_trainer *t)
{
    if (!(t->auxk_coef > 0.0) || t->sae->activation == SUBSAE_ACT_GATED)
        return 0; /* the gated model's auxiliary loss uses AuxK's buffers */
    const subsae_sae *s = t->sae;
    int64_t k = t->auxk_k > 0 ? t->auxk_k : s->d_out / 2;
    if (k < 1)
        k = 1;
    return k < s->d_sae ? k : s->d_sae;
}

/* Floats of the encoder scratch: the fused TopK encoder needs only its
 * tiles; the blocked encoder of the other activations and of AuxK (which
 * reads every dead feature's pre-activation; TopK steps without dead
 * features stay fused) a block of full rows. */
static int64_t encoder_scratch_floats(const subsae_trainer *t, int64_t batch, int threads)
{
    const subsae_sae *s = t->sae;
    const int64_t floats = subsae__encode_scratch_floats(s, batch, threads, false);
    const int64_t blocked = subsae__encode_block_rows(s->d_sae, batch) * s->d_sae;
    return aux_slots(t) > 0 && blocked > floats ? blocked : floats;
}

/* The AuxK scratch of the workspace's batch: room for `room` (row, dead
 * feature) pairs; kept when it is large enough. */
static int aux_workspace(subsae_trainer *t, int64_t room)
{
    struct subsae__workspace *ws = &t->ws;
    if (ws->aux_idx && ws->aux_cap >= room)
        return SUBSAE_OK;
    const size_t B = (size_t)ws->batch, n = (size_t)room, m = (size_t)t->sae->d_sae;
    subsae__free(ws->aux_idx);
    subsae__free(ws->aux_val);
    subsae__free(ws->aux_pair_row);
    subsae__free(ws->aux_pair_z);
    subsae__free(ws->g_aux);
    subsae__free(ws->aux_sse);
    subsae__free(ws->aux_tmp);
    ws->aux_idx = subsae__malloc(n * sizeof(int32_t));
    ws->aux_val = subsae__malloc(n * sizeof(float));
    ws->aux_pair_row = subsae__malloc(n * sizeof(int32_t));
    ws->aux_pair_z = subsae__malloc(n * sizeof(float));
    ws->g_aux = subsae__malloc(B * (size_t)t->sae->d_out * sizeof(float));
    ws->aux_sse = subsae__malloc(B * sizeof(double));
    ws->aux_tmp = subsae__malloc((size_t)ws->threads * m * sizeof(float));
    ws->aux_cap = room;
    if (!ws->aux_idx || !ws->aux_val || !ws->aux_pair_row || !ws->aux_pair_z || !ws->g_aux ||
        !ws->aux_sse || !ws->aux_tmp) {
        ws->aux_cap = 0;
        return subsae__fail_nomem("AuxK workspace", n * 16);
    }
    return SUBSAE_OK;
}

int64_t subsae__bf16_margin(int64_t k)
{
    /* Measured on L2_attn_out_131k at bf16 (margin 32): of the pairs the
     * rescoring brought in, 96 % / 88 % were bf16's rank k + 1, none at
     * k = 8 and 2 in 2M pairs at k = 32 lay beyond k + 4. */
    return k / 4 > 4 ? k / 4 : 4;
}

/* The bf16 encoder's blocks (trainer_bf16.c): the copy of W_enc, the
 * encoder input in bf16, k + margin candidates per row; the norms of the
 * blocked encoder's rescoring (trainer_bf16_dense.c). */
static bool alloc_bf16_buffers(subsae_trainer *t, int64_t batch)
{
    struct subsae__workspace *ws = &t->ws;
    if (t->precision_used != SUBSAE__BF16)
        return true;
    const subsae_sae *s = t->sae;
    const int64_t K = s->k + subsae__bf16_margin(s->k);
    ws->cand_slots = K < s->d_sae ? K : s->d_sae;
    const size_t B = (size_t)batch, d_in = (size_t)s->d_in, C = (size_t)ws->cand_slots;
    ws->bf16_valid = false;
    ws->W_enc_bf16 = subsae__malloc((size_t)s->d_sae * d_in * sizeof(uint16_t));
    ws->xin_bf16 = subsae__malloc(B * d_in * sizeof(uint16_t));
    ws->cand_idx = subsae__malloc(B * C * sizeof(int32_t));
    ws->cand_val = subsae__malloc(B * C * sizeof(float));
    ws->cand_offsets = subsae__malloc(((size_t)s->d_sae + 1) * sizeof(int32_t));
    ws->cand_order = subsae__malloc(B * C * sizeof(int32_t));
    ws->bf16_wnorm = subsae__malloc((size_t)s->d_sae * sizeof(float));
    ws->bf16_row_changed = subsae__malloc(B * sizeof(int64_t));
    return ws->W_enc_bf16 && ws->xin_bf16 && ws->cand_idx && ws->cand_val && ws->cand_offsets &&
           ws->cand_order && ws->bf16_wnorm && ws->bf16_row_changed;
}

/* The workspace's blocks per row of the batch: the rows, the scaled
 * input and target, the encoder input and scratch, the first pairs, the
 * output gradient. */
static bool alloc_row_buffers(subsae_trainer *t, int64_t batch, int threads, size_t pairs)
{
    struct subsae__workspace *ws = &t->ws;
    const subsae_sae *s = t->sae;
    const size_t B = (size_t)batch, d_in = (size_t)s->d_in, d_out = (size_t)s->d_out;
    ws->rows = subsae__malloc(B * sizeof(int64_t));
    ws->xs = subsae__malloc(B * d_in * sizeof(float));
    ws->ts = t->transcoder ? subsae__malloc(B * d_out * sizeof(float)) : ws->xs;
    ws->xin = subsae__malloc(B * d_in * sizeof(float));
    ws->pre_floats = encoder_scratch_floats(t, batch, threads);
    ws->pre = subsae__malloc((size_t)ws->pre_floats * sizeof(float));
    ws->idx = subsae__malloc(pairs * sizeof(int32_t));
    ws->val = subsae__malloc(pairs * sizeof(float));
    /* Matryoshka: a block of the output gradient per prefix. */
    ws->g_levels = subsae__matryoshka_levels(s);
    ws->g = subsae__malloc(B * d_out * (size_t)ws->g_levels * sizeof(float));
    ws->row_sse = subsae__malloc(B * sizeof(double));
    ws->prefix_sse = ws->g_levels > 1 ? subsae__malloc(B * sizeof(double)) : NULL;
    return (!t->transcoder || ws->ts) && ws->rows && ws->xs && ws->xin && ws->pre && ws->idx &&
           ws->val && ws->g && ws->row_sse && (ws->g_levels == 1 || ws->prefix_sse);
}

/* The blocks per feature: the histograms, the bucketed pairs, the touched
 * list, the compact gradient rows (ws->max_touched), the parts' sums. */
static bool alloc_feature_buffers(subsae_trainer *t, int64_t batch, int threads, size_t pairs)
{
    struct subsae__workspace *ws = &t->ws;
    const subsae_sae *s = t->sae;
    const size_t B = (size_t)batch, d_in = (size_t)s->d_in, d_out = (size_t)s->d_out;
    const size_t m = (size_t)s->d_sae, T = (size_t)threads, mt = (size_t)ws->max_touched;
    ws->counts = subsae__malloc(T * m * sizeof(int32_t));
    ws->offsets = subsae__malloc((m + 1) * sizeof(int32_t));
    ws->fired = subsae__malloc(m * sizeof(int32_t));
    ws->pair_row = subsae__malloc(pairs * sizeof(int32_t));
    ws->pair_z = subsae__malloc(pairs * sizeof(float));
    ws->touched = subsae__malloc(m * sizeof(int32_t));
    ws->slot_of = subsae__malloc(m * sizeof(int32_t));
    ws->g_W_enc = subsae__malloc(mt * d_in * sizeof(float));
    ws->g_W_dec = subsae__malloc(mt * d_out * sizeof(float));
    ws->g_b_enc = subsae__malloc(mt * sizeof(float));
    ws->g_b_dec = subsae__malloc(d_out * sizeof(float));
    ws->part = subsae__malloc(SUBSAE__PARTS * (3 * d_out + 4) * sizeof(double));
    ws->split = subsae__malloc((SUBSAE__PARTS + 1) * sizeof(int64_t));
    ws->row_ptr = subsae__malloc((B + 1) * sizeof(int64_t));
    ws->active = subsae__malloc(m * sizeof(int32_t));
    ws->g_thr = subsae__malloc(mt * sizeof(float));
    ws->g_r_mag = subsae__malloc(mt * sizeof(float));
    ws->g_b_mag = subsae__malloc(mt * sizeof(float));
    ws->extra = subsae__malloc(SUBSAE__PARTS * 4 * sizeof(double));
    ws->aux_offsets = subsae__malloc((m + 1) * sizeof(int32_t));
    ws->aux_fired = subsae__calloc(m, sizeof(int32_t));
    ws->dead_list = subsae__malloc(m * sizeof(int32_t));
    return ws->counts && ws->offsets && ws->fired && ws->pair_row && ws->pair_z &&
           ws->touched && ws->slot_of && ws->g_W_enc && ws->g_W_dec && ws->g_b_enc &&
           ws->g_b_dec && ws->part && ws->split && ws->row_ptr && ws->active && ws->g_thr &&
           ws->g_r_mag && ws->g_b_mag && ws->extra && ws->aux_offsets && ws->aux_fired &&
           ws->dead_list;
}

/* Whether the pairs keep their pre-activations: JumpReLU's band, the
 * gated model's gate path. */
static bool keeps_pre(const subsae_trainer *t)
{
    return t->sae->activation == SUBSAE_ACT_JUMPRELU || t->sae->activation == SUBSAE_ACT_GATED;
}

/* What only some activations use: the rows' pair counts (the dense
 * activations and BatchTopK), JumpReLU's and the gated model's
 * pre-activations, JumpReLU's cuts, the gate path's reconstruction (output
 * gradient and squared errors), BatchTopK's radix histogram; and the skip
 * path's output and gradient. */
static bool alloc_activation_buffers(subsae_trainer *t, int64_t batch, size_t pairs)
{
    struct subsae__workspace *ws = &t->ws;
    const int act = t->sae->activation;
    const size_t m = (size_t)t->sae->d_sae;
    bool ok = true;
    if (act != SUBSAE_ACT_TOPK) {
        ws->row_count = subsae__malloc((size_t)batch * sizeof(int64_t));
        ok = ws->row_count != NULL;
    }
    if (ok && keeps_pre(t)) {
        ws->pre_val = subsae__malloc(pairs * sizeof(float));
        ws->pair_pre = subsae__malloc(pairs * sizeof(float));
        ok = ws->pre_val && ws->pair_pre;
    }
    if (ok && act == SUBSAE_ACT_JUMPRELU) {
        ws->cut = subsae__malloc(m * sizeof(float));
        ok = ws->cut != NULL;
    }
    if (ok && act == SUBSAE_ACT_GATED) {
        ws->g_aux = subsae__malloc((size_t)batch * (size_t)t->sae->d_out * sizeof(float));
        ws->aux_sse = subsae__malloc((size_t)batch * sizeof(double));
        ok = ws->g_aux && ws->aux_sse;
    }
    if (ok && act == SUBSAE_ACT_BATCHTOPK) {
        ws->hist = subsae__malloc(65536 * sizeof(uint32_t));
        ok = ws->hist != NULL;
    }
    if (ok && t->sae->skip) {
        const size_t d_in = (size_t)t->sae->d_in, d_out = (size_t)t->sae->d_out;
        ws->skip_out = subsae__malloc((size_t)batch * d_out * sizeof(float));
        ws->g_W_skip = subsae__malloc(d_out * d_in * sizeof(float));
        ok = ws->skip_out && ws->g_W_skip;
    }
    return ok;
}

int subsae__trainer_workspace(subsae_trainer *t, int64_t batch, int threads)
{
    struct subsae__workspace *ws = &t->ws;
    /* The first workspace (after init, after loading a checkpoint, which
     * leaves it to the first step, or after a failed allocation) has room
     * for the configured batch at least, so that its encode blocks, and
     * hence the bits, do not depend on which call came first. */
    if (ws->batch == 0 && batch < t->batch)
        batch = t->batch;
    if (ws->batch >= batch && ws->threads >= threads)
        return SUBSAE_OK;
    /* Grow only: room for the larger batch and thread count seen. */
    if (batch < ws->batch)
        batch = ws->batch;
    if (threads < ws->threads)
        threads = (int)ws->threads;
    workspace_free(ws);
    const subsae_sae *s = t->sae;
    const size_t B = (size_t)batch, d_in = (size_t)s->d_in, d_out = (size_t)s->d_out;
    const size_t m = (size_t)s->d_sae, k = (size_t)s->k;
    size_t pairs;
    if (!subsae__mul_size(B, k, &pairs) || pairs > INT32_MAX)
        return subsae__fail(SUBSAE_E_RANGE, SUBSAE_REASON_SHAPE_OVERFLOW,
                            "batch %zu x k %zu exceeds 2^31 (feature, token) pairs", B, k);
    ws->block = subsae__encode_block_rows(s->d_sae, batch);
    /* Dense activations start with room for k pairs per row and grow. */
    ws->pair_cap = (int64_t)pairs;
    ws->aux_k = 0;
    int64_t touch = (int64_t)pairs + (int64_t)B * aux_slots(t);
    ws->max_touched = touch < (int64_t)m ? touch : (int64_t)m;
    const size_t mt = (size_t)ws->max_touched;
    /* Every block is tried before the check, in one fixed order. */
    bool ok = alloc_row_buffers(t, batch, threads, pairs);
    ok = alloc_feature_buffers(t, batch, threads, pairs) && ok;
    if (ok)
        ok = alloc_activation_buffers(t, batch, pairs);
    if (ok)
        ok = alloc_bf16_buffers(t, batch);
    if (!ok) {
        workspace_free(ws);
        return subsae__fail_nomem("training workspace",
                                  B * (3 * d_in + 2 * d_out) * 4 + mt * (d_in + d_out) * 4);
    }
    ws->batch = batch;
    ws->threads = threads;
    /* AuxK's scratch too when it is on: a fit allocates before its first
     * step, not in the first step that finds a dead feature. */
    if (aux_slots(t) > 0) {
        int rc = aux_workspace(t, batch * aux_slots(t));
        if (rc) {
            workspace_free(ws);
            return rc;
        }
    }
    return SUBSAE_OK;
}

/* AuxK of the step: the dead features (no fire within the dead window,
 * counted from the start for features that never fired) and the slots
 * per row, min(k_aux, dead); the scratch sized on first use or when k_aux
 * grows. ws->aux_k is 0 when AuxK is off or nothing is dead. */
int subsae__trainer_prepare_aux(subsae_trainer *t)
{
    struct subsae__workspace *ws = &t->ws;
    const subsae_sae *s = t->sae;
    const int64_t m = s->d_sae, want = aux_slots(t);
    ws->aux_k = 0;
    ws->n_dead = 0;
    if (want == 0)
        return SUBSAE_OK;
    for (int64_t f = 0; f < m; f++)
        if (t->tokens - t->last_fired[f] >= t->dead_window)
            ws->dead_list[ws->n_dead++] = (int32_t)f;
    if (ws->n_dead == 0)
        return SUBSAE_OK;
    const int64_t ka = want < ws->n_dead ? want : ws->n_dead;
    ws->aux_scale = (double)ws->n_dead / (double)want < 1.0 ? (double)ws->n_dead / (double)want
                                                            : 1.0;
    const size_t B = (size_t)ws->batch, room = B * (size_t)want;
    /* AuxK switched on after the workspace was sized for the fused encoder. */
    const int64_t pre_floats = encoder_scratch_floats(t, ws->batch, (int)ws->threads);
    if (ws->pre_floats < pre_floats) {
        subsae__free(ws->pre);
        ws->pre = subsae__malloc((size_t)pre_floats * sizeof(float));
        ws->pre_floats = ws->pre ? pre_floats : 0;
        if (!ws->pre) {
            ws->batch = 0; /* rebuilt by the next step */
            return subsae__fail_nomem("AuxK encoder scratch", (size_t)pre_floats * 4);
        }
    }
    int rc = aux_workspace(t, (int64_t)room);
    if (rc)
        return rc;
    /* Room for the features AuxK touches. */
    ws->aux_k = ka;
    int64_t touch = ws->pair_cap + (int64_t)B * ka;
    if (touch > m)
        touch = m;
    if (touch > ws->max_touched) {
        int64_t cap = ws->pair_cap;
        ws->pair_cap = 0; /* force the regrowth of the gradient rows */
        rc = subsae__trainer_grow_pairs(t, cap);
        if (rc) {
            ws->aux_k = 0;
            return rc;
        }
    }
    return SUBSAE_OK;
}

int subsae__trainer_grow_pairs(subsae_trainer *t, int64_t need)
{
    struct subsae__workspace *ws = &t->ws;
    if (need <= ws->pair_cap)
        return SUBSAE_OK;
    if (need > INT32_MAX)
        return subsae__fail(SUBSAE_E_RANGE, SUBSAE_REASON_SHAPE_OVERFLOW,
                            "subsae_trainer_step: %lld active (token, feature) pairs in one "
                            "batch exceed 2^31; use a smaller batch",
                            (long long)need);
    int64_t cap = ws->pair_cap + ws->pair_cap / 2;
    if (cap < need)
        cap = need;
    if (cap > INT32_MAX)
        cap = INT32_MAX;
    const size_t c = (size_t)cap;
    const bool jump = keeps_pre(t);
    /* Contents kept: the pairs of the rows encoded so far. */
    int32_t *idx = subsae__realloc(ws->idx, c * sizeof *idx);
    if (idx)
        ws->idx = idx;
    float *val = idx ? subsae__realloc(ws->val, c * sizeof *val) : NULL;
    if (val)
        ws->val = val;
    float *pre = val && jump ? subsae__realloc(ws->pre_val, c * sizeof *pre) : NULL;
    if (pre)
        ws->pre_val = pre;
    /* Rebuilt after the encoder: no contents to keep. */
    subsae__free(ws->pair_row);
    subsae__free(ws->pair_z);
    subsae__free(ws->pair_pre);
    ws->pair_row = idx && val ? subsae__malloc(c * sizeof *ws->pair_row) : NULL;
    ws->pair_z = ws->pair_row ? subsae__malloc(c * sizeof *ws->pair_z) : NULL;
    ws->pair_pre = ws->pair_z && jump ? subsae__malloc(c * sizeof *ws->pair_pre) : NULL;
    if (!idx || !val || (jump && !pre) || !ws->pair_row || !ws->pair_z ||
        (jump && !ws->pair_pre)) {
        /* The workspace is rebuilt by the next step (batch 0 forces it). */
        ws->batch = 0;
        return subsae__fail_nomem("training pairs", c * 16);
    }
    ws->pair_cap = cap;
    /* Compact gradient rows for every feature that can be touched. */
    const int64_t m = t->sae->d_sae;
    int64_t touch = cap + (int64_t)ws->batch * ws->aux_k;
    if (touch > m)
        touch = m;
    if (touch > ws->max_touched) {
        const size_t mt = (size_t)touch;
        subsae__free(ws->g_W_enc);
        subsae__free(ws->g_W_dec);
        subsae__free(ws->g_b_enc);
        subsae__free(ws->g_thr);
        subsae__free(ws->g_r_mag);
        subsae__free(ws->g_b_mag);
        ws->g_W_enc = subsae__malloc(mt * (size_t)t->sae->d_in * sizeof(float));
        ws->g_W_dec = subsae__malloc(mt * (size_t)t->sae->d_out * sizeof(float));
        ws->g_b_enc = subsae__malloc(mt * sizeof(float));
        ws->g_thr = subsae__malloc(mt * sizeof(float));
        ws->g_r_mag = subsae__malloc(mt * sizeof(float));
        ws->g_b_mag = subsae__malloc(mt * sizeof(float));
        if (!ws->g_W_enc || !ws->g_W_dec || !ws->g_b_enc || !ws->g_thr || !ws->g_r_mag ||
            !ws->g_b_mag) {
            ws->max_touched = 0;
            ws->batch = 0;
            return subsae__fail_nomem("gradient rows",
                                      mt * (size_t)(t->sae->d_in + t->sae->d_out) * 4);
        }
        ws->max_touched = touch;
    }
    return SUBSAE_OK;
}

int subsae__trainer_room_all_features(subsae_trainer *t)
{
    struct subsae__workspace *ws = &t->ws;
    const subsae_sae *s = t->sae;
    if (ws->max_touched >= s->d_sae)
        return SUBSAE_OK;
    const size_t m = (size_t)s->d_sae;
    subsae__free(ws->g_W_enc);
    subsae__free(ws->g_W_dec);
    subsae__free(ws->g_b_enc);
    subsae__free(ws->g_thr);
    subsae__free(ws->g_r_mag);
    subsae__free(ws->g_b_mag);
    ws->g_W_enc = subsae__malloc(m * (size_t)s->d_in * sizeof(float));
    ws->g_W_dec = subsae__malloc(m * (size_t)s->d_out * sizeof(float));
    ws->g_b_enc = subsae__malloc(m * sizeof(float));
    ws->g_thr = subsae__malloc(m * sizeof(float));
    ws->g_r_mag = subsae__malloc(m * sizeof(float));
    ws->g_b_mag = subsae__malloc(m * sizeof(float));
    if (!ws->g_W_enc || !ws->g_W_dec || !ws->g_b_enc || !ws->g_thr || !ws->g_r_mag ||
        !ws->g_b_mag) {
        ws->max_touched = 0;
        ws->batch = 0; /* rebuilt by the next step */
        return subsae__fail_nomem("gradient rows", m * (size_t)(s->d_in + s->d_out) * 4);
    }
    ws->max_touched = s->d_sae;
    return SUBSAE_OK;
}
