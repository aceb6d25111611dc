/* Data-parallel training (subsae_trainer_set_collective): the exchange of
 * a step and the hashes the workers compare. Fit over the global
 * permutation and the collective step are trainer.c's, which calls the
 * exchange between a step's backward and its update.
 *
 * Batches. Every worker builds the iterator a single process would build
 * over all N = sum of the workers' rows (the same seed, so the same
 * permutation of [0, N) per epoch: one int64 per global row) and, for each
 * global batch, keeps the rows that fall in its own range [offset, offset
 * + rows) (the workers' rows in rank order), in batch order. The global
 * batches are the single process's, split between the workers; the loss
 * is the mean over the whole global batch (the step's decode_residual,
 * trainer_step.c, scales dL/dx_hat by 2 / loss_rows), so the summed
 * gradient is the single process's gradient up to the order of the sums.
 *
 * The exchange of a step is sparse: a TopK feature that fired on no row of
 * the global batch has exactly zero gradient in W_enc, W_dec and b_enc, so
 * only the rows of U, the features that fired on some worker, travel:
 *  1. F64, size + 3 + 2 d_out + d_sae values, fused with the failure
 *     agreement: status slots, rows, sum of squared errors, sum of |t|^2,
 *     the target column sums (metrics), the b_dec gradient and every
 *     feature's firing count (dead-feature clock, metrics, and U);
 *  2. F32, |U| d_in + |U| d_out + |U| values: the W_enc, W_dec and b_enc
 *     gradient rows of U, in three calls on the workspace's compact arrays
 *     after they are expanded in place from this worker's touched list to
 *     U's slots.
 * Per step: 8 (size + 3 + 2 d_out + d_sae) + 4 |U| (d_in + d_out + 1)
 * bytes, |U| <= min(d_sae, batch k), against 4 (d_sae (d_in + d_out + 1) +
 * d_out) for a dense gradient all-reduce: at most about 8 d_sae bytes more
 * when every feature fires in a batch (batch k >> d_sae), and a fraction
 * batch k / d_sae of it when batch k < d_sae. Every worker then runs the
 * same Adam update, dead-feature clock and metrics window on the same
 * numbers.
 *
 * ReLU, JumpReLU and AuxK (subsae__trainer_extended) touch features that
 * did not fire (AuxK's dead pairs, JumpReLU's inactive pairs in the
 * threshold's band), so the first exchange also carries a touched flag per
 * feature and the penalty and AuxK parts of the loss (d_sae + 2 values),
 * U is the union of the touched features, the "fired" counts are the
 * active pairs, JumpReLU's log-threshold gradient rows travel as a fourth
 * F32 call (|U| values), and the workspace holds gradient rows for every
 * feature. BatchTopK selects over the whole global batch, which would need
 * a distributed selection: it is refused with workers. */
#include "trainer_collective.h"

#include "kernels.h"
#include "params.h"
#include "trainer_state.h"
#include "trainer_workspace.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

enum { NORM_CHUNK = 64 }; /* features per partial sum of the gradient norm */

int subsae_trainer_set_collective(subsae_trainer *t, subsae_allreduce_fn fn, int64_t rank,
                                  int64_t size, void *user)
{
    static const char *fn_name = "subsae_trainer_set_collective";
    if (!t)
        return subsae__fail_null(fn_name, "t");
    int rc = subsae__collective_set(&t->coll, fn_name, fn, rank, size, user);
    if (rc == SUBSAE_OK)
        t->coll_steps = 0;
    return rc;
}

/* ---- hashes ------------------------------------------------------------------ */

/* The model's tensors (params.h) and scales: what every worker must hold
 * the same after a step. */
uint64_t subsae__trainer_weights_hash(const subsae_trainer *t)
{
    const subsae_sae *s = t->sae;
    uint64_t h = SUBSAE__HASH_START;
    if (!s)
        return h;
    SUBSAE__FOR_EACH_PARAM(p, SUBSAE__PARAM_KEY(s))
    {
        if (p->owner == SUBSAE__IN_SAE)
            h = subsae__hash_bytes(h, subsae__param_data(p, t, s),
                                   (size_t)subsae__param_elements(p, s) * sizeof(float));
    }
    h = subsae__hash_bytes(h, &s->input_scale, sizeof s->input_scale);
    return subsae__hash_bytes(h, &s->output_scale, sizeof s->output_scale);
}

uint64_t subsae__trainer_options_hash(const subsae_trainer *t)
{
    uint64_t h = SUBSAE__HASH_START;
    for (int o = 0; o <= SUBSAE__TRAIN_OPTION_LAST; o++) {
        bool is_double;
        /* The thread count only changes how a worker computes its share. */
        if (o == SUBSAE_TRAIN_THREADS || !subsae__trainer_option_name(o, &is_double))
            continue;
        h = subsae__hash_bytes(h, subsae__trainer_option_field((subsae_trainer *)t, o), 8);
    }
    return h;
}

/* ---- the exchange of a step -------------------------------------------------- */

bool subsae__trainer_extended(const subsae_trainer *t)
{
    const int act = t->sae ? t->sae->activation : (int)t->activation;
    return act != SUBSAE_ACT_TOPK || t->auxk_coef > 0.0;
}

static int64_t exchange_values(const subsae_trainer *t)
{
    const subsae_sae *s = t->sae;
    return 3 + 2 * s->d_out + s->d_sae + (subsae__trainer_extended(t) ? s->d_sae + 2 : 0);
}

int subsae__trainer_collective_supported(const subsae_trainer *t, const char *fn)
{
    const int act = t->sae ? t->sae->activation : (int)t->activation;
    if (act == SUBSAE_ACT_BATCHTOPK)
        return subsae__fail(SUBSAE_E_UNSUPPORTED, SUBSAE_REASON_BAD_VALUE,
                            "%s: BatchTopK selects over the whole batch, which is not "
                            "implemented across workers (TopK, JumpReLU and ReLU are)",
                            fn);
    if (t->matryoshka_count > 0)
        return subsae__fail(SUBSAE_E_UNSUPPORTED, SUBSAE_REASON_BAD_VALUE,
                            "%s: the Matryoshka loss is not exchanged across workers", fn);
    return SUBSAE_OK;
}

/* The first exchange's buffer: status slots, exchange_values(), then room
 * for the partial sums of the gradient norm. */
int subsae__trainer_exchange_buffer(subsae_trainer *t)
{
    const int64_t chunks = (t->sae->d_sae + NORM_CHUNK - 1) / NORM_CHUNK;
    const int64_t size = t->coll.size + exchange_values(t) + chunks;
    if (t->coll_buf && t->coll_buf_size >= size)
        return SUBSAE_OK;
    double *buf = subsae__malloc((size_t)size * sizeof *buf);
    if (!buf)
        return subsae__fail_nomem("collective exchange buffer", (size_t)size * 8);
    subsae__free(t->coll_buf);
    t->coll_buf = buf;
    t->coll_buf_size = size;
    return SUBSAE_OK;
}

/* Squared norm of the global gradient, in fixed chunks of features whose
 * partial sums are added in order: the same bits on every worker whatever
 * its thread count (workers must agree on the clipping factor). */
static double gradient_norm2(const subsae_trainer *t, int64_t nU, double *partial)
{
    const subsae_sae *s = t->sae;
    const struct subsae__workspace *ws = &t->ws;
    const int64_t d_in = s->d_in, d_out = s->d_out;
    const bool jump = s->activation == SUBSAE_ACT_JUMPRELU;
    const int64_t chunks = (nU + NORM_CHUNK - 1) / NORM_CHUNK;
#pragma omp parallel for schedule(static) \
    num_threads(subsae__team(subsae__trainer_threads(t), (double)nU * (double)(d_in + d_out)))
    for (int64_t c = 0; c < chunks; c++) {
        double acc = 0.0;
        int64_t end = (c + 1) * NORM_CHUNK < nU ? (c + 1) * NORM_CHUNK : nU;
        for (int64_t i = c * NORM_CHUNK; i < end; i++)
            acc += subsae__sumsq(ws->g_W_enc + i * d_in, d_in) +
                   subsae__sumsq(ws->g_W_dec + i * d_out, d_out) +
                   (double)ws->g_b_enc[i] * ws->g_b_enc[i] +
                   (jump ? (double)ws->g_thr[i] * ws->g_thr[i] : 0.0);
        partial[c] = acc;
    }
    double total = subsae__sumsq(ws->g_b_dec, d_out);
    for (int64_t c = 0; c < chunks; c++)
        total += partial[c];
    return total;
}

/* The first exchange's values in t->coll_buf, after the status slots. */
struct exchange_view {
    double *head;                    /* rows, sum of squared errors, sum of |t|^2 */
    double *sum_t, *g_b_dec, *fired; /* d_out, d_out, d_sae */
    double *flags, *losses;          /* extended: d_sae touched flags; penalty, AuxK */
    double *partial;                 /* the gradient norm's partial sums */
};

static struct exchange_view exchange_view(const subsae_trainer *t)
{
    const int64_t d_out = t->sae->d_out, m = t->sae->d_sae;
    const bool extended = subsae__trainer_extended(t);
    struct exchange_view v;
    v.head = t->coll_buf + t->coll.size;
    v.sum_t = v.head + 3;
    v.g_b_dec = v.sum_t + d_out;
    v.fired = v.g_b_dec + d_out;
    v.flags = extended ? v.fired + m : NULL;
    v.losses = extended ? v.flags + m : NULL;
    v.partial = v.head + exchange_values(t);
    return v;
}

/* 1. This worker's share of the step's sums, from its workspace. */
static void pack_share(const subsae_trainer *t, int64_t n, const struct exchange_view *v)
{
    const struct subsae__workspace *ws = &t->ws;
    const int64_t d_out = t->sae->d_out;
    const size_t stride = SUBSAE__PART_STRIDE(d_out);
    double sse = 0.0, t2 = 0.0;
    for (int64_t i = 0; i < n; i++)
        sse += ws->row_sse[i];
    for (int p = 0; p < SUBSAE__PARTS; p++) {
        const double *part = ws->part + (size_t)p * stride;
        t2 += part[SUBSAE__PART_T2(d_out)];
        for (int64_t j = 0; j < d_out; j++)
            v->sum_t[j] += part[SUBSAE__PART_SUM_T(d_out) + j];
    }
    v->head[0] = (double)n;
    v->head[1] = sse;
    v->head[2] = t2;
    for (int64_t j = 0; j < d_out; j++)
        v->g_b_dec[j] = ws->g_b_dec[j];
    if (!v->flags) {
        for (int64_t i = 0; i < subsae__touched_count(ws); i++)
            v->fired[ws->touched[i]] = ws->fired[ws->touched[i]];
    } else {
        /* Active pairs for the clock; touched flags for U. */
        for (int64_t i = 0; i < subsae__touched_count(ws); i++) {
            v->fired[ws->touched[i]] = ws->active[ws->touched[i]];
            v->flags[ws->touched[i]] = 1.0;
        }
        v->losses[0] = ws->step_penalty; /* already over the global batch */
        v->losses[1] = ws->step_aux;
    }
}

/* A gradient row of the workspace's compact arrays moved from slot i to
 * slot j, or (i < 0) zeroed. */
static void move_row(struct subsae__workspace *ws, int64_t d_in, int64_t d_out, bool jump,
                     int64_t i, int64_t j)
{
    if (i < 0) {
        memset(ws->g_W_enc + j * d_in, 0, (size_t)d_in * sizeof(float));
        memset(ws->g_W_dec + j * d_out, 0, (size_t)d_out * sizeof(float));
        ws->g_b_enc[j] = 0.0f;
        if (jump)
            ws->g_thr[j] = 0.0f;
    } else if (i != j) {
        memcpy(ws->g_W_enc + j * d_in, ws->g_W_enc + i * d_in, (size_t)d_in * sizeof(float));
        memcpy(ws->g_W_dec + j * d_out, ws->g_W_dec + i * d_out, (size_t)d_out * sizeof(float));
        ws->g_b_enc[j] = ws->g_b_enc[i];
        if (jump)
            ws->g_thr[j] = ws->g_thr[i];
    }
}

/* 2. This worker's compact gradient rows moved to the slots of U, the nU
 *    features in_u marks (descending, so that a row never lands on one not
 *    yet moved: the slot in U of a touched feature is at least its local
 *    slot); `mine`: this worker has rows of its own. */
static void expand_to_union(subsae_trainer *t, const double *in_u, int64_t nU, bool mine)
{
    const subsae_sae *s = t->sae;
    struct subsae__workspace *ws = &t->ws;
    const bool jump = s->activation == SUBSAE_ACT_JUMPRELU;
    int64_t i = mine ? subsae__touched_count(ws) - 1 : -1, j = nU - 1;
    for (int64_t f = s->d_sae - 1; f >= 0 && j >= 0; f--) {
        if (!(in_u[f] > 0.0))
            continue;
        const bool own = i >= 0 && ws->touched[i] == f;
        move_row(ws, s->d_in, s->d_out, jump, own ? i : -1, j);
        i -= own;
        j--;
    }
}

/* 3. The workspace as the optimiser and the counters read it, for the
 *    global step: touched features and their counts, pairs, partition sums
 *    (all in partition 0), the b_dec gradient. */
static void global_workspace(subsae_trainer *t, const double *in_u, int64_t nU,
                             const struct exchange_view *v)
{
    struct subsae__workspace *ws = &t->ws;
    const int64_t d_out = t->sae->d_out, m = t->sae->d_sae;
    const size_t stride = SUBSAE__PART_STRIDE(d_out);
    const int P = SUBSAE__PARTS;
    int64_t pairs = 0, slot = 0;
    for (int64_t f = 0; f < m; f++) {
        if (in_u[f] > 0.0) {
            ws->slot_of[f] = (int32_t)slot;
            ws->touched[slot++] = (int32_t)f;
            ws->fired[f] = (int32_t)v->fired[f];
            ws->active[f] = (int32_t)v->fired[f];
            pairs += (int64_t)v->fired[f];
        } else {
            ws->slot_of[f] = -1;
            ws->fired[f] = 0;
        }
    }
    ws->offsets[m] = (int32_t)pairs;
    for (int p = 0; p < P; p++)
        ws->split[p] = 0;
    ws->split[P] = nU;
    for (int p = 0; p < P; p++) {
        double *part = ws->part + (size_t)p * stride;
        for (int64_t j = 0; j < d_out; j++)
            part[SUBSAE__PART_SUM_T(d_out) + j] = p == 0 ? v->sum_t[j] : 0.0;
        part[SUBSAE__PART_T2(d_out)] = p == 0 ? v->head[2] : 0.0;
    }
    for (int64_t j = 0; j < d_out; j++)
        ws->g_b_dec[j] = (float)v->g_b_dec[j];
}

/* 4. The gradient rows of U, summed over the workers. */
static int reduce_rows(subsae_trainer *t, int64_t nU)
{
    struct subsae__workspace *ws = &t->ws;
    const subsae_sae *s = t->sae;
    int rc = subsae__allreduce(&t->coll, ws->g_W_enc, nU * s->d_in, SUBSAE_DTYPE_F32,
                               "subsae_trainer_step: W_enc gradient rows");
    if (!rc)
        rc = subsae__allreduce(&t->coll, ws->g_W_dec, nU * s->d_out, SUBSAE_DTYPE_F32,
                               "subsae_trainer_step: W_dec gradient rows");
    if (!rc)
        rc = subsae__allreduce(&t->coll, ws->g_b_enc, nU, SUBSAE_DTYPE_F32,
                               "subsae_trainer_step: b_enc gradient");
    if (!rc && s->activation == SUBSAE_ACT_JUMPRELU)
        rc = subsae__allreduce(&t->coll, ws->g_thr, nU, SUBSAE_DTYPE_F32,
                               "subsae_trainer_step: log-threshold gradient");
    return rc;
}

int subsae__trainer_exchange(subsae_trainer *t, int rc, int64_t *n, double *loss, double *sq)
{
    static const char *fn = "subsae_trainer_step";
    struct subsae__workspace *ws = &t->ws;
    if (!t->coll_buf) /* sized before every collective step (fit, step) */
        return subsae__fail(SUBSAE_E_STATE, SUBSAE_REASON_WRONG_STATE, "%s: no exchange buffer",
                            fn);
    const struct exchange_view v = exchange_view(t);
    const int64_t count = exchange_values(t);
    memset(v.head, 0, (size_t)count * sizeof *v.head);

    /* 1. This worker's share, then the sum and the agreement. */
    const bool mine = rc == SUBSAE_OK && *n > 0;
    if (mine)
        pack_share(t, *n, &v);
    rc = subsae__collective_agree_buf(&t->coll, rc, t->coll_buf, count, fn);
    if (rc)
        return rc;
    const int64_t n_all = (int64_t)v.head[0];
    if (n_all < 1)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                            "%s: the workers passed no rows", fn);

    /* 2. U, the features touched on some worker, in the workspace's slots. */
    const double *in_u = v.flags ? v.flags : v.fired;
    int64_t nU = 0;
    for (int64_t f = 0; f < t->sae->d_sae; f++)
        nU += in_u[f] > 0.0;
    if (nU > ws->max_touched)
        return subsae__fail(SUBSAE_E_STATE, SUBSAE_REASON_WRONG_STATE,
                            "%s: %lld features fired on the workers but the workspace holds "
                            "%lld gradient rows",
                            fn, (long long)nU, (long long)ws->max_touched);
    expand_to_union(t, in_u, nU, mine);
    /* 3., 4. */
    global_workspace(t, in_u, nU, &v);
    rc = reduce_rows(t, nU);
    if (rc)
        return rc;
    t->coll_steps++;

    *n = n_all;
    *loss = v.head[1] / (double)n_all;
    ws->step_mse = *loss;
    ws->step_penalty = v.losses ? v.losses[0] : 0.0;
    ws->step_aux = v.losses ? v.losses[1] : 0.0;
    *loss += ws->step_penalty + ws->step_aux;
    /* The norm only matters for clipping; otherwise each worker checked
     * its own share was finite. */
    *sq = t->clip_norm > 0.0 ? gradient_norm2(t, nU, v.partial) : 0.0;
    if (!isfinite(*loss) || !isfinite(*sq))
        return subsae__fail(SUBSAE_E_NONFINITE, SUBSAE_REASON_DIVERGED,
                            "%s: step %lld diverged (loss %g, gradient norm^2 %g); weights "
                            "left as before the step: lower the learning rate",
                            fn, (long long)t->step + 1, *loss, *sq);
    return SUBSAE_OK;
}
