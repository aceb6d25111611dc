/* subsae_trainer: options, initialisation (scale, b_dec, active-subspace or
 * random decoder directions, tied encoder, init-scale search), the sparse
 * training step, fit over shuffled batches, and training metrics.
 *
 * The step on a batch of B rows (ARCHITECTURE.md section 3):
 *   1. scale the rows; encoder input xin = x s - b_dec;
 *   2. pre = xin W_enc^T and per-row top-k (+ b_enc, ReLU), fused per GEMM
 *      tile (encode.c);
 *   3. sparse decode x_hat = sum of k decoder rows + b_dec; residual;
 *   4. bucket the (row, feature) pairs by feature with a counting sort
 *      (per-partition histograms, so pairs of a feature stay in row order);
 *   5. each of 64 fixed parts owns a contiguous range of touched features
 *      and computes their decoder-row, encoder-row and b_enc gradients: no
 *      atomics, and every sum runs in the same order for any thread count;
 *   6. b_dec gradient: decoder path plus the path through xin;
 *   7. Adam (dense, or sparse over the touched rows), unit-norm projection.
 * Nothing is allocated inside the step once the workspace is sized. */
#include "trainer.h"

#include "buffer.h"
#include "kernels.h"

#include <cblas.h>
#include <math.h>
#include <stdarg.h>
#include <omp.h>
#include <stdio.h>
#include <string.h>

enum { DEFAULT_FEATURES = 16384, DEFAULT_K = 32, DEFAULT_BATCH = 4096 };
/* Defaults of the sparsity penalties, chosen so that one epoch on
 * stories260K attention outputs lands at L0 4..64 (README). */
static const double DEFAULT_L1_COEF = 2.0;
static const double DEFAULT_L0_COEF = 1.0;
static const double DEFAULT_BANDWIDTH = 0.001; /* SAELens' jumprelu_bandwidth */
static const double FALLBACK_THRESHOLD = 0.001; /* SAELens' jumprelu_init_threshold */
static const int64_t DEFAULT_DEAD_WINDOW = 10000000;
static const int64_t DEFAULT_INIT_SAMPLE = 65536;
static const int64_t SCALE_SEARCH_ROWS = 8192;

uint64_t subsae__trainer_batch_seed(uint64_t seed)
{
    return seed ^ 0x62617463686573ULL; /* "batches" */
}

/* ---- creation and options ------------------------------------------------ */

int subsae_trainer_create(subsae_trainer **out)
{
    if (!out)
        return subsae__fail_null("subsae_trainer_create", "out");
    subsae_trainer *t = subsae__calloc(1, sizeof *t);
    if (!t)
        return subsae__fail_nomem("trainer", sizeof *t);
    t->features = DEFAULT_FEATURES;
    t->activation = SUBSAE_ACT_TOPK;
    t->k = DEFAULT_K;
    t->batch = DEFAULT_BATCH;
    t->dead_window = DEFAULT_DEAD_WINDOW;
    t->init = SUBSAE_INIT_ACTIVE_SUBSPACE;
    t->scale_search = 1;
    t->decoder_norm = SUBSAE_DECODER_FREE;
    t->init_sample = DEFAULT_INIT_SAMPLE;
    t->beta1 = 0.9;
    t->beta2 = 0.999;
    t->eps = 1e-8;
    t->l1_coef = DEFAULT_L1_COEF;
    t->l0_coef = DEFAULT_L0_COEF;
    t->bandwidth = DEFAULT_BANDWIDTH;
    t->init_threshold = 0.0; /* automatic: the initial L0 is k */
    t->fit_end_step = -1;
    t->last_loss = NAN;
    t->coll.size = 1;
    *out = t;
    return SUBSAE_OK;
}

static void window_free(struct subsae__window *w)
{
    subsae__free(w->sum_t);
    subsae__free(w->fires);
    memset(w, 0, sizeof *w);
}

static void workspace_free(struct subsae__workspace *ws)
{
    void *blocks[] = {ws->rows, ws->xs, ws->ts == ws->xs ? NULL : ws->ts,
                      ws->xin, ws->pre, ws->idx, ws->val, ws->g, ws->row_sse, ws->counts,
                      ws->offsets, ws->fired, ws->pair_row, ws->pair_z, ws->touched,
                      ws->slot_of, ws->g_W_enc, ws->g_W_dec, ws->g_b_enc, ws->g_b_dec, ws->part,
                      ws->split, ws->row_ptr, ws->pre_val, ws->pair_pre, ws->row_count,
                      ws->cut, ws->hist, ws->active, ws->g_thr,
                      ws->extra, ws->dead_list, ws->aux_tmp, ws->aux_idx, ws->aux_val,
                      ws->g_aux, ws->aux_sse, ws->aux_offsets, ws->aux_fired, ws->aux_pair_row,
                      ws->aux_pair_z};
    for (size_t i = 0; i < sizeof blocks / sizeof blocks[0]; i++)
        subsae__free(blocks[i]);
    memset(ws, 0, sizeof *ws);
}

void subsae__trainer_workspace_release(subsae_trainer *t)
{
    workspace_free(&t->ws);
}

void subsae_trainer_free(subsae_trainer *t)
{
    if (!t)
        return;
    subsae_sae_free(t->sae);
    float *moments[] = {t->m_W_enc, t->v_W_enc, t->m_b_enc, t->v_b_enc,
                        t->m_W_dec, t->v_W_dec, t->m_b_dec, t->v_b_dec,
                        t->log_threshold, t->m_log_threshold, t->v_log_threshold};
    for (size_t i = 0; i < sizeof moments / sizeof moments[0]; i++)
        subsae__free(moments[i]);
    subsae__free(t->last_fired);
    window_free(&t->cur);
    window_free(&t->prev);
    subsae_batches_free(t->batches);
    workspace_free(&t->ws);
    subsae__collective_release(&t->coll);
    subsae__free(t->coll_buf);
    subsae__free(t);
}

static int option_error(const char *fn, int option, const char *why)
{
    return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE, "%s: option %d %s", fn,
                        option, why);
}

static int range_error(const char *fn, const char *name, int64_t value, int64_t lo, int64_t hi)
{
    return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                        "%s: %s = %lld is outside [%lld, %lld]", fn, name, (long long)value,
                        (long long)lo, (long long)hi);
}

static int structural(const char *fn, const subsae_trainer *t, const char *name)
{
    if (!t->initialised)
        return SUBSAE_OK;
    return subsae__fail(SUBSAE_E_STATE, SUBSAE_REASON_WRONG_STATE,
                        "%s: %s cannot change after subsae_trainer_init", fn, name);
}

struct int_option {
    int option;
    const char *name;
    int64_t lo, hi;
    bool structural;
    size_t offset;
};

#define INT_OPT(opt, name, lo, hi, st, field) \
    {opt, name, lo, hi, st, offsetof(struct subsae_trainer, field)}
static const struct int_option int_options[] = {
    INT_OPT(SUBSAE_TRAIN_FEATURES, "features", 1, INT32_MAX, true, features),
    INT_OPT(SUBSAE_TRAIN_ACTIVATION, "activation", 0, 3, true, activation),
    INT_OPT(SUBSAE_TRAIN_K, "k", 1, INT32_MAX, true, k),
    INT_OPT(SUBSAE_TRAIN_BATCH, "batch", 1, (int64_t)1 << 24, false, batch),
    INT_OPT(SUBSAE_TRAIN_WARMUP_STEPS, "warmup_steps", 0, INT64_MAX, false, warmup_steps),
    INT_OPT(SUBSAE_TRAIN_COOLDOWN_STEPS, "cooldown_steps", 0, INT64_MAX, false, cooldown_steps),
    INT_OPT(SUBSAE_TRAIN_SEED, "seed", INT64_MIN, INT64_MAX, true, seed),
    INT_OPT(SUBSAE_TRAIN_DEAD_WINDOW, "dead_window", 1, INT64_MAX, false, dead_window),
    INT_OPT(SUBSAE_TRAIN_INIT, "init", 0, 1, true, init),
    INT_OPT(SUBSAE_TRAIN_SUBSPACE_DIM, "subspace_dim", 0, INT32_MAX, true, subspace_dim),
    INT_OPT(SUBSAE_TRAIN_SCALE_SEARCH, "scale_search", 0, 1, true, scale_search),
    INT_OPT(SUBSAE_TRAIN_DECODER_NORM, "decoder_norm", 0, 1, true, decoder_norm),
    INT_OPT(SUBSAE_TRAIN_SPARSE_ADAM, "sparse_adam", 0, 1, false, sparse_adam),
    INT_OPT(SUBSAE_TRAIN_THREADS, "threads", 0, 4096, false, threads),
    INT_OPT(SUBSAE_TRAIN_INIT_SAMPLE, "init_sample", 2, INT64_MAX, true, init_sample),
    INT_OPT(SUBSAE_TRAIN_AUXK_K, "auxk_k", 0, INT32_MAX, false, auxk_k),
    INT_OPT(SUBSAE_TRAIN_SUBSPACE_COEFFICIENTS, "subspace_coefficients", 0, 1, true,
            subspace_coefficients),
};

struct double_option {
    int option;
    const char *name;
    double lo, hi;
    bool lo_open, hi_open, structural;
    size_t offset;
};

#define DBL_OPT(opt, name, lo, hi, lo_open, hi_open, st, field) \
    {opt, name, lo, hi, lo_open, hi_open, st, offsetof(struct subsae_trainer, field)}
static const struct double_option double_options[] = {
    DBL_OPT(SUBSAE_TRAIN_LR, "lr", 0.0, 1e6, false, false, false, lr),
    DBL_OPT(SUBSAE_TRAIN_CLIP_NORM, "clip_norm", 0.0, 1e30, false, false, false, clip_norm),
    DBL_OPT(SUBSAE_TRAIN_ADAM_BETA1, "adam_beta1", 0.0, 1.0, false, true, false, beta1),
    DBL_OPT(SUBSAE_TRAIN_ADAM_BETA2, "adam_beta2", 0.0, 1.0, false, true, false, beta2),
    DBL_OPT(SUBSAE_TRAIN_ADAM_EPS, "adam_eps", 0.0, 1.0, true, false, false, eps),
    DBL_OPT(SUBSAE_TRAIN_AUXK_COEF, "auxk_coef", 0.0, 1e6, false, false, false, auxk_coef),
    DBL_OPT(SUBSAE_TRAIN_L1_COEF, "l1_coef", 0.0, 1e6, false, false, false, l1_coef),
    DBL_OPT(SUBSAE_TRAIN_L0_COEF, "l0_coef", 0.0, 1e6, false, false, false, l0_coef),
    DBL_OPT(SUBSAE_TRAIN_JUMPRELU_BANDWIDTH, "jumprelu_bandwidth", 0.0, 1e6, true, false, false,
            bandwidth),
    DBL_OPT(SUBSAE_TRAIN_INIT_THRESHOLD, "init_threshold", 0.0, 1e6, false, false, true,
            init_threshold),
};

static const struct int_option *find_int(int option)
{
    for (size_t i = 0; i < sizeof int_options / sizeof int_options[0]; i++)
        if (int_options[i].option == option)
            return &int_options[i];
    return NULL;
}

static const struct double_option *find_double(int option)
{
    for (size_t i = 0; i < sizeof double_options / sizeof double_options[0]; i++)
        if (double_options[i].option == option)
            return &double_options[i];
    return NULL;
}

const char *subsae__trainer_option_name(int option, bool *is_double)
{
    const struct int_option *i = find_int(option);
    const struct double_option *d = i ? NULL : find_double(option);
    if (is_double)
        *is_double = d != NULL;
    return i ? i->name : d ? d->name : NULL;
}

void *subsae__trainer_option_field(subsae_trainer *t, int option)
{
    const struct int_option *i = find_int(option);
    const struct double_option *d = i ? NULL : find_double(option);
    return i ? (char *)t + i->offset : d ? (char *)t + d->offset : NULL;
}

int subsae_trainer_set_int(subsae_trainer *t, int option, int64_t value)
{
    static const char *fn = "subsae_trainer_set_int";
    if (!t)
        return subsae__fail_null(fn, "t");
    const struct int_option *o = find_int(option);
    if (!o)
        return option_error(fn, option, find_double(option) ? "is a double option"
                                                            : "is unknown");
    if (value < o->lo || value > o->hi)
        return range_error(fn, o->name, value, o->lo, o->hi);
    if (o->structural) {
        int rc = structural(fn, t, o->name);
        if (rc)
            return rc;
    }
    memcpy((char *)t + o->offset, &value, sizeof value);
    return SUBSAE_OK;
}

int subsae_trainer_get_int(const subsae_trainer *t, int option, int64_t *value)
{
    static const char *fn = "subsae_trainer_get_int";
    if (!t)
        return subsae__fail_null(fn, "t");
    if (!value)
        return subsae__fail_null(fn, "value");
    const struct int_option *o = find_int(option);
    if (!o)
        return option_error(fn, option, find_double(option) ? "is a double option"
                                                            : "is unknown");
    if (option == SUBSAE_TRAIN_SUBSPACE_DIM && t->initialised)
        *value = t->subspace_dim_used;
    else
        memcpy(value, (const char *)t + o->offset, sizeof *value);
    return SUBSAE_OK;
}

static double default_lr(int64_t features)
{
    return 2e-4 / sqrt((double)features / 16384.0);
}

int subsae_trainer_set_double(subsae_trainer *t, int option, double value)
{
    static const char *fn = "subsae_trainer_set_double";
    if (!t)
        return subsae__fail_null(fn, "t");
    const struct double_option *o = find_double(option);
    if (!o)
        return option_error(fn, option, find_int(option) ? "is an int option" : "is unknown");
    if (!isfinite(value) || value < o->lo || value > o->hi || (o->lo_open && value == o->lo) ||
        (o->hi_open && value == o->hi))
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                            "%s: %s = %g is outside %c%g, %g%c", fn, o->name, value,
                            o->lo_open ? '(' : '[', o->lo, o->hi, o->hi_open ? ')' : ']');
    if (o->structural) {
        int rc = structural(fn, t, o->name);
        if (rc)
            return rc;
    }
    memcpy((char *)t + o->offset, &value, sizeof value);
    return SUBSAE_OK;
}

int subsae_trainer_get_double(const subsae_trainer *t, int option, double *value)
{
    static const char *fn = "subsae_trainer_get_double";
    if (!t)
        return subsae__fail_null(fn, "t");
    if (!value)
        return subsae__fail_null(fn, "value");
    const struct double_option *o = find_double(option);
    if (!o)
        return option_error(fn, option, find_int(option) ? "is an int option" : "is unknown");
    if (option == SUBSAE_TRAIN_LR && t->lr == 0.0)
        *value = default_lr(t->features);
    else
        memcpy(value, (const char *)t + o->offset, sizeof *value);
    return SUBSAE_OK;
}

int subsae_trainer_set_callback(subsae_trainer *t, subsae_callback callback, void *user)
{
    if (!t)
        return subsae__fail_null("subsae_trainer_set_callback", "t");
    t->callback = callback;
    t->user = callback ? user : NULL;
    return SUBSAE_OK;
}

const subsae_sae *subsae_trainer_sae(const subsae_trainer *t)
{
    return t && t->initialised ? t->sae : NULL;
}

int subsae__trainer_threads(const subsae_trainer *t)
{
    return t->threads > 0 ? (int)t->threads : subsae__threads();
}

static void log_line(const subsae_trainer *t, const char *phase, const char *fmt, ...)
    SUBSAE_PRINTF(3, 4);

static void log_line(const subsae_trainer *t, const char *phase, const char *fmt, ...)
{
    if (!t->callback)
        return;
    char message[256];
    va_list args;
    va_start(args, fmt);
    vsnprintf(message, sizeof message, fmt, args);
    va_end(args);
    /* A log line cannot cancel: the return value is ignored. */
    (void)t->callback(SUBSAE_EVENT_LOG, phase, -1, -1, message, t->user);
}

/* ---- state and workspace ------------------------------------------------- */

static int window_alloc(struct subsae__window *w, int64_t d_out, int64_t d_sae)
{
    w->sum_t = subsae__calloc((size_t)d_out, sizeof *w->sum_t);
    w->fires = subsae__calloc((size_t)d_sae, sizeof *w->fires);
    if (!w->sum_t || !w->fires)
        return subsae__fail_nomem("metrics window", (size_t)(d_out + d_sae) * 8);
    return SUBSAE_OK;
}

static void window_clear(struct subsae__window *w, int64_t d_out, int64_t d_sae)
{
    w->tokens = 0;
    w->sse = w->sum_t2 = 0.0;
    w->active = 0;
    memset(w->sum_t, 0, (size_t)d_out * sizeof *w->sum_t);
    memset(w->fires, 0, (size_t)d_sae * sizeof *w->fires);
}

int subsae__trainer_alloc_state(subsae_trainer *t)
{
    const subsae_sae *s = t->sae;
    size_t enc = (size_t)s->d_sae * (size_t)s->d_in, dec = (size_t)s->d_sae * (size_t)s->d_out;
    t->m_W_enc = subsae__calloc(enc, sizeof(float));
    t->v_W_enc = subsae__calloc(enc, sizeof(float));
    t->m_W_dec = subsae__calloc(dec, sizeof(float));
    t->v_W_dec = subsae__calloc(dec, sizeof(float));
    t->m_b_enc = subsae__calloc((size_t)s->d_sae, sizeof(float));
    t->v_b_enc = subsae__calloc((size_t)s->d_sae, sizeof(float));
    t->m_b_dec = subsae__calloc((size_t)s->d_out, sizeof(float));
    t->v_b_dec = subsae__calloc((size_t)s->d_out, sizeof(float));
    t->last_fired = subsae__calloc((size_t)s->d_sae, sizeof *t->last_fired);
    if (!t->m_W_enc || !t->v_W_enc || !t->m_W_dec || !t->v_W_dec || !t->m_b_enc ||
        !t->v_b_enc || !t->m_b_dec || !t->v_b_dec || !t->last_fired)
        return subsae__fail_nomem("Adam state", 2 * (enc + dec) * sizeof(float));
    if (s->activation == SUBSAE_ACT_JUMPRELU) {
        t->log_threshold = subsae__calloc((size_t)s->d_sae, sizeof(float));
        t->m_log_threshold = subsae__calloc((size_t)s->d_sae, sizeof(float));
        t->v_log_threshold = subsae__calloc((size_t)s->d_sae, sizeof(float));
        if (!t->log_threshold || !t->m_log_threshold || !t->v_log_threshold)
            return subsae__fail_nomem("JumpReLU threshold state", (size_t)s->d_sae * 12);
    }
    int rc = window_alloc(&t->cur, s->d_out, s->d_sae);
    if (!rc)
        rc = window_alloc(&t->prev, s->d_out, s->d_sae);
    return rc;
}

/* Slots per row of AuxK for a configuration (0 when off). */
static int64_t aux_slots(const subsae_trainer *t)
{
    if (!(t->auxk_coef > 0.0))
        return 0;
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
    const int act = s->activation;
    const bool dense = act == SUBSAE_ACT_RELU || act == SUBSAE_ACT_JUMPRELU;
    const bool jump = act == SUBSAE_ACT_JUMPRELU;
    const size_t B = (size_t)batch, d_in = (size_t)s->d_in, d_out = (size_t)s->d_out;
    const size_t m = (size_t)s->d_sae, k = (size_t)s->k, T = (size_t)threads;
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
    ws->rows = subsae__malloc(B * sizeof(int64_t));
    ws->xs = subsae__malloc(B * d_in * sizeof(float));
    ws->ts = t->transcoder ? subsae__malloc(B * d_out * sizeof(float)) : ws->xs;
    ws->xin = subsae__malloc(B * d_in * sizeof(float));
    ws->pre_floats = encoder_scratch_floats(t, batch, threads);
    ws->pre = subsae__malloc((size_t)ws->pre_floats * sizeof(float));
    ws->idx = subsae__malloc(pairs * sizeof(int32_t));
    ws->val = subsae__malloc(pairs * sizeof(float));
    ws->g = subsae__malloc(B * d_out * sizeof(float));
    ws->row_sse = subsae__malloc(B * sizeof(double));
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
    ws->extra = subsae__malloc(SUBSAE__PARTS * 4 * sizeof(double));
    ws->aux_offsets = subsae__malloc((m + 1) * sizeof(int32_t));
    ws->aux_fired = subsae__calloc(m, sizeof(int32_t));
    ws->dead_list = subsae__malloc(m * sizeof(int32_t));
    bool ok = (!t->transcoder || ws->ts) && ws->rows && ws->xs && ws->xin && ws->pre &&
              ws->idx && ws->val && ws->g && ws->row_sse && ws->counts && ws->offsets &&
              ws->fired && ws->pair_row && ws->pair_z && ws->touched && ws->slot_of &&
              ws->g_W_enc && ws->g_W_dec && ws->g_b_enc && ws->g_b_dec && ws->part &&
              ws->split && ws->row_ptr && ws->active && ws->g_thr && ws->extra &&
              ws->aux_offsets && ws->aux_fired && ws->dead_list;
    if (ok && (dense || act == SUBSAE_ACT_BATCHTOPK)) {
        ws->row_count = subsae__malloc(B * sizeof(int64_t));
        ok = ws->row_count != NULL;
    }
    if (ok && jump) {
        ws->pre_val = subsae__malloc(pairs * sizeof(float));
        ws->pair_pre = subsae__malloc(pairs * sizeof(float));
        ws->cut = subsae__malloc(m * sizeof(float));
        ok = ws->pre_val && ws->pair_pre && ws->cut;
    }
    if (ok && act == SUBSAE_ACT_BATCHTOPK) {
        ws->hist = subsae__malloc(65536 * sizeof(uint32_t));
        ok = ws->hist != NULL;
    }
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
static int prepare_aux(subsae_trainer *t)
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

/* Forward and backward on n raw rows into the workspace: loss, compact
 * gradients of the touched features and the b_dec gradient; *sq gets the
 * squared global gradient norm. Changes nothing outside the workspace. */
static int forward_backward(subsae_trainer *t, const float *input, int64_t input_stride,
                            const float *target, int64_t target_stride, int64_t n, double *loss,
                            double *sq)
{
    static const char *fn = "subsae_trainer_step";
    subsae_sae *s = t->sae;
    struct subsae__workspace *ws = &t->ws;
    const int T = subsae__trainer_threads(t); /* <= ws->threads */
    const int64_t d_in = s->d_in, d_out = s->d_out, m = s->d_sae, k = s->k;
    const bool unit = t->decoder_norm == SUBSAE_DECODER_UNIT;
    const bool apply = s->apply_b_dec_to_input;
    const size_t part_stride = SUBSAE__PART_STRIDE(d_out);

    const double t_start = omp_get_wtime();

    /* 1. Validate and scale. */
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
    num_threads(subsae__team(T, (double)n * (double)(d_in + d_out)))
    for (int64_t i = 0; i < n; i++) {
        const float *xr = input + i * input_stride;
        float *xs = ws->xs + i * d_in, *xin = ws->xin + i * d_in;
        for (int64_t j = 0; j < d_in; j++) {
            xs[j] = xr[j] * s_in;
            xin[j] = apply ? xs[j] - s->b_dec[j] : xs[j];
        }
        if (target) {
            const float *tr = target + i * target_stride;
            float *ts = ws->ts + i * d_out;
            for (int64_t j = 0; j < d_out; j++)
                ts[j] = tr[j] * s_out;
        }
    }

    /* 2. Encoder GEMM and the activation's selection (AuxK: also the top
     *    dead pre-activations of each row). */
    double *phase = t->phase_seconds;
    double clock = omp_get_wtime();
    phase[SUBSAE_PHASE_PREPARE] += clock - t_start;
    const int act = s->activation;
    const bool jump = act == SUBSAE_ACT_JUMPRELU;
    const float bw = (float)t->bandwidth, inv_bw = (float)(1.0 / t->bandwidth);
    if (jump)
        for (int64_t f = 0; f < m; f++)
            ws->cut[f] = s->threshold[f] - 0.5f * bw;
    int rc = prepare_aux(t);
    if (!rc)
        rc = subsae__train_encode(t, n, phase + SUBSAE_PHASE_ENCODE_GEMM);
    if (rc)
        return rc;
    const int64_t *rp = ws->row_ptr;
    const int64_t ka = ws->aux_k;
    const bool aux = ka > 0;
    clock = omp_get_wtime();

    /* 3. Sparse decode, residual, dL/dx_hat = 2 (x_hat - t) / n, partial
     *    sums of the gradient and of the target per part of the rows. With
     *    workers n is the global batch (loss_rows), of which these rows are
     *    a part. AuxK: e_hat = the dead pairs' decode (no bias) against the
     *    residual e = t - x_hat (held fixed), g_aux = 2 c s (e_hat - e) / n. */
    const double n_loss = (double)(t->loss_rows > 0 ? t->loss_rows : n);
    const float gscale = 2.0f / (float)(t->loss_rows > 0 ? t->loss_rows : n);
    const float ascale = aux ? (float)(2.0 * t->auxk_coef * ws->aux_scale / n_loss) : 0.0f;
#pragma omp parallel for schedule(dynamic, 1) \
    num_threads(subsae__team(T, (double)n * (double)(k + ka + 2) * (double)d_out))
    for (int p = 0; p < PARTS; p++) {
        double *part = ws->part + (size_t)p * part_stride;
        double *sum_g = part, *sum_t = part + d_out;
        memset(part, 0, part_stride * sizeof *part);
        for (int64_t i = part_begin(n, p, PARTS); i < part_begin(n, p + 1, PARTS); i++) {
            float *g = ws->g + i * d_out;
            const float *tr = ws->ts + i * d_out;
            subsae__sparse_decode_row(g, s->b_dec, s->W_dec, d_out, ws->idx + rp[i],
                                      ws->val + rp[i], rp[i + 1] - rp[i], d_out);
            float *ga = aux ? ws->g_aux + i * d_out : NULL;
            if (aux)
                subsae__sparse_decode_row(ga, NULL, s->W_dec, d_out, ws->aux_idx + i * ka,
                                          ws->aux_val + i * ka, ka, d_out);
            double e2 = 0.0, t2 = 0.0, a2 = 0.0;
            for (int64_t j = 0; j < d_out; j++) {
                float e = g[j] - tr[j];
                e2 += (double)e * e;
                t2 += (double)tr[j] * tr[j];
                sum_t[j] += tr[j];
                g[j] = gscale * e;
                sum_g[j] += g[j];
                if (aux) {
                    float r = ga[j] + e; /* e_hat - (t - x_hat) */
                    a2 += (double)r * r;
                    ga[j] = ascale * r;
                }
            }
            ws->row_sse[i] = e2;
            if (aux)
                ws->aux_sse[i] = a2;
            part[3 * d_out] += t2;
        }
    }

    double now = omp_get_wtime();
    phase[SUBSAE_PHASE_DECODE] += now - clock;
    clock = now;

    /* 4. Counting sort of the pairs by feature (per-partition histograms,
     *    so that the pairs of a feature stay in row order); the same for
     *    the AuxK pairs. */
    int64_t n_touched = 0;
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
    const int64_t n_pairs = running;
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
    int64_t n_aux_pairs = 0;
    if (aux) {
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
        n_aux_pairs = at;
        for (int64_t q = 0; q < n * ka; q++) {
            int32_t f = ws->aux_idx[q];
            if (f < 0)
                continue;
            int32_t pos = counts[f]++;
            ws->aux_pair_row[pos] = (int32_t)(q / ka);
            ws->aux_pair_z[pos] = ws->aux_val[q];
        }
    }
    for (int64_t f = 0; f < m; f++) {
        if (ws->fired[f] > 0 || (aux && ws->aux_fired[f] > 0)) {
            ws->slot_of[f] = (int32_t)n_touched;
            ws->touched[n_touched++] = (int32_t)f;
        } else {
            ws->slot_of[f] = -1;
        }
    }

    /* 5. Per-feature backward over contiguous ranges of touched features,
     *    balanced by pair count. */
    ws->split[0] = 0;
    {
        int64_t at = 0, acc = 0;
        for (int p = 1; p < PARTS; p++) {
            int64_t goal = (n_pairs + n_aux_pairs + n_touched) * p / PARTS;
            while (at < n_touched && acc < goal) {
                int32_t f = ws->touched[at];
                acc += ws->fired[f] + (aux ? ws->aux_fired[f] : 0) + 1;
                at++;
            }
            ws->split[p] = at;
        }
        ws->split[PARTS] = n_touched;
    }
    const bool relu_l1 = act == SUBSAE_ACT_RELU && t->l1_coef > 0.0;
    const double lam_n = (jump ? t->l0_coef : relu_l1 ? t->l1_coef : 0.0) / n_loss;
#pragma omp parallel for schedule(dynamic, 1) \
    num_threads(subsae__team(T, (double)(n_pairs + n_aux_pairs) * (double)(2 * d_out + d_in)))
    for (int p = 0; p < PARTS; p++) {
        double *part = ws->part + (size_t)p * part_stride;
        double *benc_path = part + 2 * d_out;
        double sumsq = 0.0, penalty = 0.0;
        for (int64_t i = ws->split[p]; i < ws->split[p + 1]; i++) {
            int32_t f = ws->touched[i];
            const float *wdec = s->W_dec + (int64_t)f * d_out;
            float *gdec = ws->g_W_dec + i * d_out, *genc = ws->g_W_enc + i * d_in;
            const int32_t off = ws->offsets[f], cnt = ws->fired[f];
            const bool has_aux = aux && ws->aux_fired[f] > 0;
            if (!jump && !relu_l1 && !has_aux) {
                subsae__feature_backward(ws->pair_row + off, ws->pair_z + off, cnt, ws->g,
                                         d_out, d_out, ws->xin, d_in, d_in, wdec, gdec, genc,
                                         &ws->g_b_enc[i]);
                ws->active[f] = cnt;
            } else {
                float norm = 0.0f, dz_add = 0.0f;
                if (relu_l1) {
                    norm = (float)sqrt(subsae__sumsq(wdec, d_out));
                    dz_add = (float)(lam_n * norm);
                }
                const float thr = jump ? s->threshold[f] : 0.0f;
                double gthr = 0.0, zsum = 0.0;
                subsae__feature_backward_ex(
                    ws->pair_row + off, ws->pair_z + off, jump ? ws->pair_pre + off : NULL,
                    cnt, ws->g, d_out, d_out, ws->xin, d_in, d_in, wdec, dz_add, thr,
                    inv_bw, (float)lam_n, false, gdec, genc, &ws->g_b_enc[i], &gthr, &zsum);
                int32_t active = cnt;
                if (jump) {
                    active = 0;
                    for (int32_t q = off; q < off + cnt; q++)
                        active += ws->pair_z[q] > 0.0f;
                    ws->g_thr[i] = (float)(gthr * thr); /* d loss / d log t */
                    penalty += lam_n * active;
                }
                if (relu_l1 && norm > 0.0f) {
                    const float c = (float)(lam_n * zsum / norm);
                    for (int64_t j = 0; j < d_out; j++)
                        gdec[j] += c * wdec[j];
                    penalty += lam_n * norm * zsum;
                }
                ws->active[f] = active;
                if (has_aux) {
                    double g2 = 0.0, z2 = 0.0;
                    const int32_t ao = ws->aux_offsets[f];
                    subsae__feature_backward_ex(ws->aux_pair_row + ao, ws->aux_pair_z + ao,
                                                NULL, ws->aux_fired[f], ws->g_aux, d_out,
                                                d_out, ws->xin, d_in, d_in, wdec, 0.0f, 0.0f,
                                                0.0f, 0.0f, true, gdec, genc,
                                                &ws->g_b_enc[i], &g2, &z2);
                }
            }
            if (unit) {
                double ww = subsae__sumsq(wdec, d_out);
                if (ww > 0.0) {
                    float c = (float)(subsae__dot(gdec, wdec, d_out) / ww);
                    for (int64_t j = 0; j < d_out; j++)
                        gdec[j] -= c * wdec[j];
                }
            }
            sumsq += subsae__sumsq(gdec, d_out) + subsae__sumsq(genc, d_in) +
                     (double)ws->g_b_enc[i] * ws->g_b_enc[i];
            if (jump)
                sumsq += (double)ws->g_thr[i] * ws->g_thr[i];
            if (apply) {
                /* xin = x - b_dec: d loss / d b_dec gets -sum dpre W_enc[f]. */
                const float *wenc = s->W_enc + (int64_t)f * d_in;
                const double gb = ws->g_b_enc[i];
                for (int64_t j = 0; j < d_in; j++)
                    benc_path[j] -= gb * wenc[j];
            }
        }
        part[3 * d_out + 1] = sumsq;
        ws->extra[(size_t)p * 4] = penalty;
    }

    /* 6. b_dec gradient and the totals, reduced in partition order. */
    double total_sq = 0.0, sse = 0.0, penalty = 0.0, aux_sse = 0.0;
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
    for (int64_t i = 0; i < n; i++)
        sse += ws->row_sse[i];
    if (aux)
        for (int64_t i = 0; i < n; i++)
            aux_sse += ws->aux_sse[i];
    ws->step_mse = sse / (double)n;
    ws->step_penalty = penalty;
    ws->step_aux = aux ? t->auxk_coef * ws->aux_scale * aux_sse / n_loss : 0.0;
    *loss = ws->step_mse + ws->step_penalty + ws->step_aux;
    *sq = total_sq;
    phase[SUBSAE_PHASE_BACKWARD] += omp_get_wtime() - clock;
    if (!isfinite(*loss) || !isfinite(total_sq))
        return subsae__fail(SUBSAE_E_NONFINITE, SUBSAE_REASON_DIVERGED,
                            "%s: step %lld diverged (loss %g, gradient norm^2 %g); weights "
                            "left as before the step: lower the learning rate",
                            fn, (long long)t->step + 1, *loss, total_sq);
    return SUBSAE_OK;
}

static int64_t touched_count(const struct subsae__workspace *ws)
{
    return ws->split[PARTS];
}

static double learning_rate(const subsae_trainer *t)
{
    double lr = t->lr > 0.0 ? t->lr : default_lr(t->sae->d_sae);
    if (t->warmup_steps > 0 && t->step < t->warmup_steps)
        lr *= (double)(t->step + 1) / (double)t->warmup_steps;
    if (t->cooldown_steps > 0 && t->fit_end_step >= 0) {
        int64_t left = t->fit_end_step - t->step; /* steps left, this one included */
        if (left < t->cooldown_steps)
            lr *= (double)(left > 0 ? left : 0) / (double)t->cooldown_steps;
    }
    return lr;
}

static void renormalise(float *row, int64_t d)
{
    double nn = subsae__sumsq(row, d);
    if (nn > 0.0) {
        float inv = (float)(1.0 / sqrt(nn));
        for (int64_t j = 0; j < d; j++)
            row[j] *= inv;
    }
}

/* Adam on every parameter from the workspace gradients, all or nothing:
 * a first pass computes the update without storing it, and if any new
 * weight or moment would not be finite (a learning rate far too large,
 * moments from a damaged checkpoint) the step fails with
 * SUBSAE_E_NONFINITE and nothing changes. The pass reads what the update
 * reads, O(parameters) per step against the encoder's O(batch x
 * parameters). */
/* JumpReLU's log threshold of feature f after the update, computed on
 * copies by the update's own function: it, its moments and the model's
 * threshold exp(log threshold) must all be finite. */
static bool log_threshold_finite(const subsae_trainer *t, int64_t f, const float *g, float gs,
                                 float b1, float b2, float size, float ib2, float eps)
{
    float w = t->log_threshold[f], m = t->m_log_threshold[f], v = t->v_log_threshold[f];
    subsae__adam(&w, &m, &v, g, 1, gs, b1, b2, size, ib2, eps);
    return isfinite(w) && isfinite(m) && isfinite(v) && isfinite(expf(w));
}

static int apply_update(subsae_trainer *t, double sq)
{
    subsae_sae *s = t->sae;
    struct subsae__workspace *ws = &t->ws;
    const int T = subsae__trainer_threads(t); /* <= ws->threads */
    const int64_t d_in = s->d_in, d_out = s->d_out, m = s->d_sae;
    const bool unit = t->decoder_norm == SUBSAE_DECODER_UNIT;
    const bool jump = s->activation == SUBSAE_ACT_JUMPRELU;
    const double clock = omp_get_wtime();
    const int64_t step = t->step + 1;
    const double lr = learning_rate(t);
    const float b1 = (float)t->beta1, b2 = (float)t->beta2, eps = (float)t->eps;
    const float size = (float)(lr / (1.0 - pow(t->beta1, (double)step)));
    const float ib2 = (float)(1.0 / sqrt(1.0 - pow(t->beta2, (double)step)));
    float gs = 1.0f;
    if (t->clip_norm > 0.0 && sqrt(sq) > t->clip_norm)
        gs = (float)(t->clip_norm / sqrt(sq));

    bool finite = subsae__adam_finite(s->b_dec, t->m_b_dec, t->v_b_dec, ws->g_b_dec, d_out, gs,
                                      b1, b2, size, ib2, eps);
    if (t->sparse_adam) {
        const int64_t nt = touched_count(ws);
#pragma omp parallel for schedule(static) reduction(&& : finite) \
    num_threads(subsae__team(T, (double)nt * (double)(d_in + d_out)))
        for (int64_t i = 0; i < nt; i++) {
            const int64_t f = ws->touched[i];
            finite = finite &&
                     subsae__adam_finite(s->W_enc + f * d_in, t->m_W_enc + f * d_in,
                                         t->v_W_enc + f * d_in, ws->g_W_enc + i * d_in, d_in, gs,
                                         b1, b2, size, ib2, eps) &&
                     subsae__adam_finite(s->W_dec + f * d_out, t->m_W_dec + f * d_out,
                                         t->v_W_dec + f * d_out, ws->g_W_dec + i * d_out, d_out,
                                         gs, b1, b2, size, ib2, eps) &&
                     subsae__adam_finite(s->b_enc + f, t->m_b_enc + f, t->v_b_enc + f,
                                         ws->g_b_enc + i, 1, gs, b1, b2, size, ib2, eps) &&
                     (!jump || log_threshold_finite(t, f, ws->g_thr + i, gs, b1, b2, size, ib2,
                                                    eps));
        }
    } else {
#pragma omp parallel for schedule(static) reduction(&& : finite) \
    num_threads(subsae__team(T, (double)m * (double)(d_in + d_out)))
        for (int64_t f = 0; f < m; f++) {
            const int64_t slot = ws->slot_of[f];
            finite = finite &&
                     subsae__adam_finite(s->W_enc + f * d_in, t->m_W_enc + f * d_in,
                                         t->v_W_enc + f * d_in,
                                         slot >= 0 ? ws->g_W_enc + slot * d_in : NULL, d_in, gs,
                                         b1, b2, size, ib2, eps) &&
                     subsae__adam_finite(s->W_dec + f * d_out, t->m_W_dec + f * d_out,
                                         t->v_W_dec + f * d_out,
                                         slot >= 0 ? ws->g_W_dec + slot * d_out : NULL, d_out,
                                         gs, b1, b2, size, ib2, eps) &&
                     subsae__adam_finite(s->b_enc + f, t->m_b_enc + f, t->v_b_enc + f,
                                         slot >= 0 ? ws->g_b_enc + slot : NULL, 1, gs, b1, b2,
                                         size, ib2, eps) &&
                     (!jump || log_threshold_finite(t, f, slot >= 0 ? ws->g_thr + slot : NULL,
                                                    gs, b1, b2, size, ib2, eps));
        }
    }
    if (!finite) {
        t->phase_seconds[SUBSAE_PHASE_OPTIMIZER] += omp_get_wtime() - clock;
        return subsae__fail(SUBSAE_E_NONFINITE, SUBSAE_REASON_DIVERGED,
                            "subsae_trainer_step: step %lld diverged: the update (learning rate "
                            "%g) would make weights or Adam moments infinite or NaN; weights left "
                            "as before the step: lower the learning rate",
                            (long long)step, lr);
    }

    subsae__adam(s->b_dec, t->m_b_dec, t->v_b_dec, ws->g_b_dec, d_out, gs, b1, b2, size, ib2, eps);
    if (t->sparse_adam) {
        const int64_t nt = touched_count(ws);
#pragma omp parallel for schedule(dynamic, 64) \
    num_threads(subsae__team(T, (double)nt * (double)(d_in + d_out)))
        for (int64_t i = 0; i < nt; i++) {
            const int64_t f = ws->touched[i];
            subsae__adam(s->W_enc + f * d_in, t->m_W_enc + f * d_in, t->v_W_enc + f * d_in,
                         ws->g_W_enc + i * d_in, d_in, gs, b1, b2, size, ib2, eps);
            subsae__adam(s->W_dec + f * d_out, t->m_W_dec + f * d_out, t->v_W_dec + f * d_out,
                         ws->g_W_dec + i * d_out, d_out, gs, b1, b2, size, ib2, eps);
            subsae__adam(s->b_enc + f, t->m_b_enc + f, t->v_b_enc + f, ws->g_b_enc + i, 1, gs,
                         b1, b2, size, ib2, eps);
            if (jump) {
                subsae__adam(t->log_threshold + f, t->m_log_threshold + f,
                             t->v_log_threshold + f, ws->g_thr + i, 1, gs, b1, b2, size, ib2,
                             eps);
                s->threshold[f] = expf(t->log_threshold[f]);
            }
            if (unit)
                renormalise(s->W_dec + f * d_out, d_out);
        }
    } else {
#pragma omp parallel for schedule(dynamic, 64) \
    num_threads(subsae__team(T, (double)m * (double)(d_in + d_out)))
        for (int64_t f = 0; f < m; f++) {
            const int64_t slot = ws->slot_of[f];
            subsae__adam(s->W_enc + f * d_in, t->m_W_enc + f * d_in, t->v_W_enc + f * d_in,
                         slot >= 0 ? ws->g_W_enc + slot * d_in : NULL, d_in, gs, b1, b2, size,
                         ib2, eps);
            subsae__adam(s->W_dec + f * d_out, t->m_W_dec + f * d_out, t->v_W_dec + f * d_out,
                         slot >= 0 ? ws->g_W_dec + slot * d_out : NULL, d_out, gs, b1, b2, size,
                         ib2, eps);
            subsae__adam(s->b_enc + f, t->m_b_enc + f, t->v_b_enc + f,
                         slot >= 0 ? ws->g_b_enc + slot : NULL, 1, gs, b1, b2, size, ib2, eps);
            if (jump) {
                subsae__adam(t->log_threshold + f, t->m_log_threshold + f,
                             t->v_log_threshold + f, slot >= 0 ? ws->g_thr + slot : NULL, 1, gs,
                             b1, b2, size, ib2, eps);
                s->threshold[f] = expf(t->log_threshold[f]);
            }
            if (unit)
                renormalise(s->W_dec + f * d_out, d_out);
        }
    }
    t->phase_seconds[SUBSAE_PHASE_OPTIMIZER] += omp_get_wtime() - clock;
    return SUBSAE_OK;
}

/* Counters, dead-feature clock and metrics window after a step of n rows. */
static void account(subsae_trainer *t, int64_t n, double loss)
{
    subsae_sae *s = t->sae;
    struct subsae__workspace *ws = &t->ws;
    const int64_t d_out = s->d_out, m = s->d_sae;
    const size_t part_stride = SUBSAE__PART_STRIDE(d_out);
    t->step++;
    t->tokens += n;
    t->last_loss = loss;
    struct subsae__window *w = &t->cur;
    w->tokens += n;
    w->sse += ws->step_mse * (double)n;
    for (int p = 0; p < PARTS; p++) {
        const double *part = ws->part + (size_t)p * part_stride;
        for (int64_t j = 0; j < d_out; j++)
            w->sum_t[j] += part[d_out + j];
        w->sum_t2 += part[3 * d_out];
    }
    const int64_t nt = touched_count(ws);
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
        window_clear(&t->cur, d_out, m);
    }
}

static int check_step_args(const char *fn, const subsae_trainer *t, const float *input,
                           int64_t input_stride, const float *target, int64_t target_stride,
                           int64_t n)
{
    if (!t)
        return subsae__fail_null(fn, "t");
    if (!t->initialised)
        return subsae__fail(SUBSAE_E_STATE, SUBSAE_REASON_WRONG_STATE,
                            "%s: call subsae_trainer_init first", fn);
    const bool workers = subsae__collective_on(&t->coll);
    if (!input && !(workers && n == 0))
        return subsae__fail_null(fn, "input");
    if (t->transcoder && !target && !(workers && n == 0))
        return subsae__fail_null(fn, "target (the trainer was initialised as a transcoder)");
    if (!t->transcoder && target)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                            "%s: a target was given but the trainer was initialised without one",
                            fn);
    if (n < (workers ? 0 : 1) || n > ((int64_t)1 << 24) || input_stride < t->sae->d_in ||
        (target && target_stride < t->sae->d_out))
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                            "%s: n %lld, input_stride %lld (d_in %lld), target_stride %lld "
                            "(d_out %lld)",
                            fn, (long long)n, (long long)input_stride, (long long)t->sae->d_in,
                            (long long)target_stride, (long long)t->sae->d_out);
    return SUBSAE_OK;
}

/* subsae__trainer_step_rows; `read_seconds` is the time fit took to read
 * the rows (0 for a step). */
static int step_rows(subsae_trainer *t, int rc, const float *input, int64_t input_stride,
                     const float *target, int64_t target_stride, int64_t n, double read_seconds)
{
    const double start = omp_get_wtime();
    memset(t->phase_seconds, 0, sizeof t->phase_seconds);
    double loss = 0.0, sq = 0.0;
    if (rc == SUBSAE_OK && n > 0)
        rc = forward_backward(t, input, input_stride, target, target_stride, n, &loss, &sq);
    if (subsae__collective_on(&t->coll))
        rc = subsae__trainer_exchange(t, rc, &n, &loss, &sq);
    if (rc)
        return rc;
    rc = apply_update(t, sq);
    if (rc)
        return rc;
    const double clock = omp_get_wtime();
    account(t, n, loss);
    const double end = omp_get_wtime();
    /* Only completed steps count in the timings. */
    t->phase_seconds[SUBSAE_PHASE_PREPARE] += end - clock;
    t->phase_seconds[SUBSAE_PHASE_READ] = read_seconds;
    t->phase_seconds[SUBSAE_PHASE_STEP] = read_seconds + (end - start);
    for (int i = 0; i < SUBSAE_PHASE_COUNT; i++)
        t->phase_total[i] += t->phase_seconds[i];
    t->timed_steps++;
    return SUBSAE_OK;
}

int subsae__trainer_step_rows(subsae_trainer *t, int rc, const float *input,
                              int64_t input_stride, const float *target, int64_t target_stride,
                              int64_t n)
{
    return step_rows(t, rc, input, input_stride, target, target_stride, n, 0.0);
}

int subsae_trainer_step(subsae_trainer *t, const float *input, int64_t input_stride,
                        const float *target, int64_t target_stride, int64_t n)
{
    int rc = check_step_args("subsae_trainer_step", t, input, input_stride, target,
                             target_stride, n);
    if (t && t->initialised && subsae__collective_on(&t->coll))
        return subsae__trainer_step_collective(t, rc, input, input_stride, target,
                                               target_stride, n);
    if (rc)
        return rc;
    rc = subsae__trainer_workspace(t, n, subsae__trainer_threads(t));
    if (rc)
        return rc;
    return step_rows(t, SUBSAE_OK, input, input_stride, target, target_stride, n, 0.0);
}

int subsae__trainer_gradients(subsae_trainer *t, const float *input, int64_t input_stride,
                              const float *target, int64_t target_stride, int64_t n,
                              float *g_W_enc, float *g_b_enc, float *g_W_dec, float *g_b_dec,
                              double *loss, int32_t *indices)
{
    int rc = check_step_args("subsae__trainer_gradients", t, input, input_stride, target,
                             target_stride, n);
    if (rc)
        return rc;
    rc = subsae__trainer_workspace(t, n, subsae__trainer_threads(t));
    if (rc)
        return rc;
    double l, sq;
    rc = forward_backward(t, input, input_stride, target, target_stride, n, &l, &sq);
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
    for (int64_t i = 0; i < touched_count(ws); i++) {
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
    for (int64_t i = 0; i < touched_count(ws); i++)
        g[ws->touched[i]] = ws->g_thr[i];
}

void subsae__trainer_loss_parts(const subsae_trainer *t, double *mse, double *penalty,
                                double *aux)
{
    *mse = t->ws.step_mse;
    *penalty = t->ws.step_penalty;
    *aux = t->ws.step_aux;
}

/* ---- initialisation ------------------------------------------------------- */

/* Draw `count` distinct row numbers of [0, rows) in random order. */
static int draw_sample(subsae__rng *rng, int64_t rows, int64_t count, int64_t *out)
{
    if (count == rows) {
        for (int64_t i = 0; i < rows; i++)
            out[i] = i;
        subsae__rng_shuffle(rng, out, rows);
        return SUBSAE_OK;
    }
    size_t words = (size_t)(rows + 63) / 64;
    uint64_t *taken = subsae__calloc(words, sizeof *taken);
    if (!taken)
        return subsae__fail_nomem("sample bitmap", words * 8);
    for (int64_t i = 0; i < count;) {
        int64_t r = (int64_t)subsae__rng_below(rng, (uint64_t)rows);
        uint64_t bit = (uint64_t)1 << (r % 64);
        if (taken[r / 64] & bit)
            continue;
        taken[r / 64] |= bit;
        out[i++] = r;
    }
    subsae__free(taken);
    return SUBSAE_OK;
}

/* s = sqrt(d) / mean |x| over the rows; the rows are scaled in place. */
static int scale_rows(float *x, int64_t n, int64_t d, double *scale, const char *what)
{
    double norm_sum = 0.0;
    for (int64_t i = 0; i < n; i++)
        norm_sum += sqrt(subsae__sumsq(x + i * d, d));
    double mean = norm_sum / (double)n;
    if (!(mean > 0.0) || !isfinite(mean))
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                            "subsae_trainer_init: the %s sample has mean row norm %g; cannot "
                            "scale it",
                            what, mean);
    *scale = sqrt((double)d) / mean;
    const float s = (float)*scale;
    for (int64_t i = 0; i < n * d; i++)
        x[i] *= s;
    return SUBSAE_OK;
}

static float coefficient(subsae__rng *rng, int64_t distribution)
{
    if (distribution == SUBSAE_COEF_GAUSSIAN)
        return (float)subsae__rng_normal(rng);
    return (float)(2.0 * subsae__rng_uniform(rng) - 1.0);
}

/* Rows of `w` (count x d): random unit directions, either uniform on the
 * sphere of the full space (basis NULL: random init, normalised Gaussians)
 * or c U_r / |c U_r| with the coefficients c drawn from `distribution` and
 * U_r the r rows of `basis` (ASI), from one stream of the seed. */
static int draw_directions(subsae__rng *rng, int64_t distribution, float *w, int64_t count,
                           int64_t d, const float *basis, int64_t r)
{
    if (!basis) {
        for (int64_t i = 0; i < count * d; i++)
            w[i] = (float)subsae__rng_normal(rng);
    } else {
        float *c = subsae__malloc((size_t)count * (size_t)r * sizeof *c);
        if (!c)
            return subsae__fail_nomem("subspace coefficients", (size_t)(count * r) * 4);
        for (int64_t i = 0; i < count * r; i++)
            c[i] = coefficient(rng, distribution);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)count, (int)d, (int)r, 1.0f,
                    c, (int)r, basis, (int)d, 0.0f, w, (int)d);
        subsae__free(c);
    }
    for (int64_t i = 0; i < count; i++)
        renormalise(w + i * d, d);
    return SUBSAE_OK;
}

/* The active subspace of a scaled sample: its top-r principal directions
 * (r = `want`, or the effective rank at 99 % when want is 0). */
static int active_subspace(const subsae_trainer *t, const float *x, int64_t n, int64_t d,
                           int64_t want, float **basis, int64_t *r_out)
{
    static const char *fn = "subsae_trainer_init";
    if (want > d)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                            "%s: subspace dimension %lld exceeds the dimension %lld", fn,
                            (long long)want, (long long)d);
    if (n < 2)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                            "%s: %lld rows cannot give a subspace", fn, (long long)n);
    subsae_buffer *buf = NULL;
    subsae_subspace *s = NULL;
    float *out = NULL;
    int64_t r = want, method = 0;
    int exact = 1;
    /* The exact method when all directions are needed (r from the
     * spectrum); for a fixed r the estimator picks the cheaper method. */
    int rc = subsae_buffer_wrap(x, SUBSAE_DTYPE_F32, n, d, d, SUBSAE_BORROW, &buf);
    if (!rc)
        rc = subsae_subspace_create(&s);
    if (!rc)
        rc = subsae_subspace_set_int(s, SUBSAE_SUBSPACE_SEED, t->seed);
    if (!rc && want > 0)
        rc = subsae_subspace_set_int(s, SUBSAE_SUBSPACE_RANK, want);
    if (!rc && t->callback)
        rc = subsae_subspace_set_callback(s, t->callback, t->user);
    if (!rc)
        rc = subsae_subspace_fit(s, buf);
    if (!rc && want == 0)
        rc = subsae_subspace_effective_rank(s, 0.99, &r, &exact);
    if (!rc)
        rc = subsae_subspace_get_int(s, SUBSAE_SUBSPACE_METHOD_USED, &method);
    if (!rc && (r < 1 || r > d))
        rc = subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                          "%s: the sample's active subspace has dimension %lld", fn,
                          (long long)r);
    if (!rc) {
        out = subsae__malloc((size_t)(r * d) * sizeof *out);
        if (!out)
            rc = subsae__fail_nomem("subspace basis", (size_t)(r * d) * 4);
    }
    if (!rc)
        rc = subsae_subspace_basis(s, r, out, d);
    if (!rc) {
        log_line(t, "init", "active subspace: %lld of %lld dimensions%s (%s method, %lld rows)",
                 (long long)r, (long long)d, want ? " (set)" : " hold 99% of the variance",
                 method == SUBSAE_METHOD_EXACT ? "exact" : "randomized", (long long)n);
        (void)exact; /* all directions were computed: r is exact */
        *basis = out;
        *r_out = r;
        out = NULL;
    }
    subsae__free(out);
    subsae_subspace_free(s);
    subsae_buffer_free(buf);
    return rc;
}

/* The batch-top-k cut of the first rows of the scaled sample at the
 * initial weights. */
static int init_cut(const subsae_trainer *t, const float *xs, int64_t n, double *cut)
{
    const subsae_sae *s = t->sae;
    const int64_t rows = n < SCALE_SEARCH_ROWS ? n : SCALE_SEARCH_ROWS;
    float *xin = subsae__malloc((size_t)(rows * s->d_in) * sizeof *xin);
    if (!xin)
        return subsae__fail_nomem("init sample", (size_t)(rows * s->d_in) * 4);
    const int T = subsae__trainer_threads(t);
    subsae__sae_encoder_input(s, xs, s->d_in, rows, 1.0, xin, s->d_in, T);
    float c = 0.0f;
    int rc = subsae__batch_topk_cut(s, xin, rows, s->k, T, &c);
    subsae__free(xin);
    if (!rc)
        *cut = c;
    return rc;
}

/* Grid search of one common scale of the tied initial weights (as in the
 * reference recipe: 40 values in [0.05, 2], reconstruction MSE on the
 * first rows of the sample). For TopK with b_enc = 0 the pre-activations
 * scale with s, so the selection does not depend on s and the
 * reconstruction is b_dec + s^2 y with y the decode at s = 1: the error at
 * every grid point follows from three sums, exactly. */
static int scale_search(subsae_trainer *t, const float *xs, const float *ts, int64_t n,
                        double *chosen)
{
    subsae_sae *s = t->sae;
    const int64_t rows = n < SCALE_SEARCH_ROWS ? n : SCALE_SEARCH_ROWS;
    const int64_t d_in = s->d_in, d_out = s->d_out, k = s->k;
    const int T = subsae__trainer_threads(t);
    float *xin = subsae__malloc((size_t)(rows * d_in) * sizeof *xin);
    float *pre = subsae__malloc((size_t)subsae__encode_scratch_floats(s, rows, T, false) *
                                sizeof *pre);
    int32_t *idx = subsae__malloc((size_t)(rows * k) * sizeof *idx);
    float *val = subsae__malloc((size_t)(rows * k) * sizeof *val);
    float *y = subsae__malloc((size_t)(rows * d_out) * sizeof *y);
    double *sums = subsae__calloc((size_t)rows * 3, sizeof *sums);
    int rc = SUBSAE_OK;
    if (!xin || !pre || !idx || !val || !y || !sums) {
        rc = subsae__fail_nomem("init-scale search", (size_t)(rows * (d_in + d_out)) * 4);
        goto done;
    }
    subsae__sae_encoder_input(s, xs, d_in, rows, 1.0, xin, d_in, T);
    if (s->activation == SUBSAE_ACT_TOPK) {
        subsae__sae_encode_pre(s, xin, d_in, rows, k, idx, val, pre, NULL, T, NULL);
#pragma omp parallel for schedule(static) \
    num_threads(subsae__team(T, (double)rows * (double)k * (double)d_out))
        for (int64_t i = 0; i < rows; i++)
            subsae__sparse_decode_row(y + i * d_out, NULL, s->W_dec, d_out, idx + i * k,
                                      val + i * k, k, d_out);
    } else {
        /* The other activations keep the pre-activations above one cut for
         * the whole sample (the batch-top-k cut, which scales with the
         * weights; ReLU's encoder bias will be minus the cut). */
        float cut;
        rc = subsae__batch_topk_cut(s, xin, rows, k, T, &cut);
        if (rc)
            goto done;
        const float shift = s->activation == SUBSAE_ACT_RELU ? cut : 0.0f;
        const int64_t m = s->d_sae, block = subsae__encode_block_rows(m, rows);
        for (int64_t r0 = 0; r0 < rows; r0 += block) {
            const int64_t nb = rows - r0 < block ? rows - r0 : block;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nb, (int)m, (int)d_in,
                        1.0f, xin + r0 * d_in, (int)d_in, s->W_enc, (int)d_in, 0.0f, pre, (int)m);
#pragma omp parallel for schedule(static) num_threads(subsae__team(T, (double)nb * (double)m))
            for (int64_t i = 0; i < nb; i++) {
                float *yr = y + (r0 + i) * d_out;
                const float *pr = pre + i * m;
                memset(yr, 0, (size_t)d_out * sizeof *yr);
                for (int64_t f = 0; f < m; f++) {
                    const float v = pr[f] + s->b_enc[f];
                    if (v > cut && cut > 0.0f) {
                        const float z = v - shift;
                        const float *w = s->W_dec + f * d_out;
                        for (int64_t j = 0; j < d_out; j++)
                            yr[j] += z * w[j];
                    }
                }
            }
        }
    }
#pragma omp parallel for schedule(static) num_threads(subsae__team(T, (double)rows * (double)d_out))
    for (int64_t i = 0; i < rows; i++) {
        const float *yr = y + i * d_out;
        double rr = 0.0, ry = 0.0, yy = 0.0;
        for (int64_t j = 0; j < d_out; j++) {
            double r = (double)ts[i * d_out + j] - (double)s->b_dec[j];
            rr += r * r;
            ry += r * yr[j];
            yy += (double)yr[j] * yr[j];
        }
        sums[3 * i] = rr;
        sums[3 * i + 1] = ry;
        sums[3 * i + 2] = yy;
    }
    double rr = 0.0, ry = 0.0, yy = 0.0;
    for (int64_t i = 0; i < rows; i++) {
        rr += sums[3 * i];
        ry += sums[3 * i + 1];
        yy += sums[3 * i + 2];
    }
    /* With unit decoder rows only the encoder takes the scale: then the
     * reconstruction is b_dec + s y. */
    const bool unit = t->decoder_norm == SUBSAE_DECODER_UNIT;
    double best_err = INFINITY, best = 1.0;
    for (int g = 0; g < 40; g++) {
        double sc = 0.05 + (2.0 - 0.05) * g / 39.0; /* numpy.linspace(0.05, 2, 40) */
        double s2 = unit ? sc : sc * sc;
        double err = (rr - 2.0 * s2 * ry + s2 * s2 * yy) / (double)rows;
        if (err < best_err) {
            best_err = err;
            best = sc;
        }
    }
    *chosen = best;
    log_line(t, "init", "init-scale search: scale %.4f, reconstruction MSE %.4f (scaled)", best,
             best_err);
done:
    subsae__free(xin);
    subsae__free(pre);
    subsae__free(idx);
    subsae__free(val);
    subsae__free(y);
    subsae__free(sums);
    return rc;
}

/* Rows of `buf` by pread rather than through a file mapping (see
 * buffer.h), so that the file's pages do not stay in the resident set. */
static int gather_unmapped(const subsae_buffer *buf, const int64_t *rows, int64_t n, float *out)
{
    subsae__row_reader *reader;
    int rc = subsae__row_reader_open(buf, &reader);
    if (rc)
        return rc;
    rc = subsae__row_reader_gather(reader, rows, 0, n, out, subsae_buffer_dim(buf));
    subsae__row_reader_close(reader);
    return rc;
}

static int check_init_args(const char *fn, const subsae_trainer *t, const subsae_buffer *input,
                           const subsae_buffer *target)
{
    if (!t)
        return subsae__fail_null(fn, "t");
    if (!input)
        return subsae__fail_null(fn, "input");
    if (t->initialised)
        return subsae__fail(SUBSAE_E_STATE, SUBSAE_REASON_WRONG_STATE,
                            "%s: the trainer is already initialised", fn);
    if (t->k > t->features)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                            "%s: k %lld exceeds the number of features %lld", fn,
                            (long long)t->k, (long long)t->features);
    int64_t rows = subsae_buffer_rows(input);
    /* With workers one may hold fewer rows: the union is checked later. */
    if (rows < 2 && !subsae__collective_on(&t->coll))
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                            "%s: the input has %lld rows; at least 2 are needed", fn,
                            (long long)rows);
    if (target && subsae_buffer_rows(target) != rows)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_SIZE_MISMATCH,
                            "%s: input has %lld rows, target %lld", fn, (long long)rows,
                            (long long)subsae_buffer_rows(target));
    return SUBSAE_OK;
}

/* Workers (subsae_trainer_set_collective): every worker draws the single
 * process's sample of global row numbers, reads the sampled rows it holds
 * into their places of the sample (zeros elsewhere), and one all-reduce
 * gives every worker the whole sample: 4 n (d_in [+ d_out]) bytes, once.
 * Init then runs the single process's computation on every worker, so that
 * the model starts from the same bits as in one process. (Combining
 * sums instead, the float Gram matrix of the subspace differs by
 * rounding, the initial directions by ~1e-6, and TopK training amplifies
 * that: see README "Scale-out".) When xs is NULL (this worker could not
 * allocate it), it joins the agreement with rc and returns. */
static int gather_sample(subsae_trainer *t, int rc, const subsae_buffer *input,
                         const subsae_buffer *target, int64_t *sample, int64_t n, int64_t offset,
                         int64_t local_rows, float *xs, float *ts)
{
    static const char *fn = "subsae_trainer_init: sample";
    const int64_t d_in = xs ? subsae_buffer_dim(input) : 0;
    const int64_t d_out = xs && target ? subsae_buffer_dim(target) : d_in;
    int64_t mine = 0;
    if (!rc && xs) {
        /* This worker's rows, in sample order, gathered to the front ... */
        int64_t *rows = sample + n; /* room for n more indices (see the caller) */
        for (int64_t i = 0; i < n; i++)
            if (sample[i] >= offset && sample[i] - offset < local_rows)
                rows[mine++] = sample[i] - offset;
        if (mine > 0)
            rc = gather_unmapped(input, rows, mine, xs);
        if (!rc && mine > 0 && target)
            rc = gather_unmapped(target, rows, mine, ts);
        /* ... then moved to their places, last first (a row's place is at
         * least its rank among this worker's rows), zeros between. */
        int64_t j = mine - 1;
        for (int64_t i = n - 1; !rc && i >= 0; i--) {
            bool held = sample[i] >= offset && sample[i] - offset < local_rows;
            if (held && i != j) {
                memcpy(xs + i * d_in, xs + j * d_in, (size_t)d_in * sizeof *xs);
                if (target)
                    memcpy(ts + i * d_out, ts + j * d_out, (size_t)d_out * sizeof *ts);
            }
            if (!held) {
                memset(xs + i * d_in, 0, (size_t)d_in * sizeof *xs);
                if (target)
                    memset(ts + i * d_out, 0, (size_t)d_out * sizeof *ts);
            }
            j -= held;
        }
    }
    rc = subsae__collective_agree(&t->coll, rc, fn);
    if (!rc)
        rc = subsae__allreduce(&t->coll, xs, n * d_in, SUBSAE_DTYPE_F32, fn);
    if (!rc && target)
        rc = subsae__allreduce(&t->coll, ts, n * d_out, SUBSAE_DTYPE_F32, fn);
    return rc;
}

int subsae_trainer_init(subsae_trainer *t, const subsae_buffer *input,
                        const subsae_buffer *target)
{
    static const char *fn = "subsae_trainer_init";
    int rc = check_init_args(fn, t, input, target);
    const bool workers = t && subsae__collective_on(&t->coll);
    if (rc && !workers)
        return rc;
    const int64_t local_rows = input ? subsae_buffer_rows(input) : 0;
    const int64_t d_in = input ? subsae_buffer_dim(input) : 0;
    const int64_t d_out = target ? subsae_buffer_dim(target) : d_in;
    int64_t offset = 0, rows = local_rows;
    if (workers) {
        if (!rc)
            rc = subsae__trainer_collective_supported(t, fn);
        /* Where this worker's rows sit among all, and the same options. */
        rc = subsae__collective_rows(&t->coll, rc, local_rows, d_in, &offset, &rows, NULL, fn);
        uint64_t h = subsae__hash_bytes(subsae__trainer_options_hash(t), &d_out, sizeof d_out);
        rc = subsae__collective_same(&t->coll, rc, h,
                                     "subsae_trainer_init: the options (or target widths)");
        if (rc)
            return rc;
        if (rows < 2)
            return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                                "%s: the workers hold %lld rows together; at least 2 are "
                                "needed",
                                fn, (long long)rows);
    }
    bool gathered = false; /* with workers: every failure from here meets the check at the end */
    const int64_t m = t->features;
    const int64_t n = rows < t->init_sample ? rows : t->init_sample;
    const bool asi = t->init == SUBSAE_INIT_ACTIVE_SUBSPACE;
    const uint64_t seed = (uint64_t)t->seed;

    int64_t *sample = subsae__malloc((size_t)(workers ? 2 * n : n) * sizeof *sample);
    float *xs = subsae__malloc((size_t)(n * d_in) * sizeof *xs);
    float *ts = target ? subsae__malloc((size_t)(n * d_out) * sizeof *ts) : xs;
    float *basis = NULL, *basis_in = NULL;
    subsae_sae *sae = NULL;
    if (!sample || !xs || !ts) {
        rc = subsae__fail_nomem("initialisation sample", (size_t)(n * (d_in + d_out)) * 4);
        if (workers) { /* the others wait in the sample's all-reduce */
            rc = gather_sample(t, rc, input, target, NULL, n, offset, local_rows, NULL, NULL);
            gathered = true;
        }
        goto fail;
    }
    subsae__rng rng;
    subsae__rng_seed(&rng, seed, SUBSAE__STREAM_SAMPLE);
    rc = draw_sample(&rng, rows, n, sample);
    if (workers) {
        rc = gather_sample(t, rc, input, target, sample, n, offset, local_rows, xs, ts);
        gathered = true;
    } else if (!rc) {
        rc = gather_unmapped(input, sample, n, xs);
        if (!rc && target)
            rc = gather_unmapped(target, sample, n, ts);
    }
    if (rc)
        goto fail;

    /* Scales, model, b_dec = mean of the scaled target. */
    double s_in, s_out;
    rc = scale_rows(xs, n, d_in, &s_in, "input");
    if (!rc && target)
        rc = scale_rows(ts, n, d_out, &s_out, "target");
    if (rc)
        goto fail;
    if (!target)
        s_out = s_in;
    rc = subsae__sae_new(d_in, d_out, m, (int)t->activation, &sae);
    if (rc)
        goto fail;
    sae->k = t->k;
    sae->apply_b_dec_to_input = target == NULL;
    sae->input_scale = s_in;
    sae->output_scale = s_out;
    for (int64_t j = 0; j < d_out; j++) {
        double acc = 0.0;
        for (int64_t i = 0; i < n; i++)
            acc += ts[i * d_out + j];
        sae->b_dec[j] = (float)(acc / (double)n);
    }

    /* Decoder directions; the encoder starts tied (an SAE) or with
     * directions of its own input (a transcoder). */
    int64_t r = 0, r_in = 0;
    if (asi) {
        rc = active_subspace(t, ts, n, d_out, t->subspace_dim, &basis, &r);
        if (!rc && target)
            rc = active_subspace(t, xs, n, d_in, 0, &basis_in, &r_in);
        if (rc)
            goto fail;
    }
    subsae__rng_seed(&rng, seed, SUBSAE__STREAM_DECODER);
    rc = draw_directions(&rng, t->subspace_coefficients, sae->W_dec, m, d_out, basis, r);
    if (rc)
        goto fail;
    if (target) {
        subsae__rng_seed(&rng, seed, SUBSAE__STREAM_ENCODER);
        rc = draw_directions(&rng, t->subspace_coefficients, sae->W_enc, m, d_in, basis_in, r_in);
        if (rc)
            goto fail;
    } else {
        memcpy(sae->W_enc, sae->W_dec, (size_t)(m * d_in) * sizeof(float));
    }

    t->sae = sae;
    t->transcoder = target != NULL;
    double chosen = 1.0;
    if (t->scale_search) {
        rc = scale_search(t, xs, ts, n, &chosen);
        if (rc) {
            t->sae = NULL;
            goto fail;
        }
        const float c = (float)chosen;
        for (int64_t i = 0; i < m * d_in; i++)
            sae->W_enc[i] *= c;
        if (t->decoder_norm != SUBSAE_DECODER_UNIT)
            for (int64_t i = 0; i < m * d_out; i++)
                sae->W_dec[i] *= c;
    }
    /* Thresholds: BatchTopK's starts at the batch-top-k cut of the sample;
     * JumpReLU's is INIT_THRESHOLD, or that same cut (initial L0 = k);
     * ReLU's encoder bias starts at minus the same value. */
    double theta0 = 0.0;
    const bool thresholded = t->activation == SUBSAE_ACT_JUMPRELU ||
                             t->activation == SUBSAE_ACT_RELU;
    if (t->activation == SUBSAE_ACT_BATCHTOPK || (thresholded && t->init_threshold == 0.0)) {
        rc = init_cut(t, xs, n, &theta0);
        if (rc) {
            t->sae = NULL;
            goto fail;
        }
        log_line(t, "init", "batch top-k cut of the sample: %.6g", theta0);
    }
    if (thresholded)
        theta0 = t->init_threshold > 0.0 ? t->init_threshold
                 : theta0 > 0.0          ? theta0
                                         : FALLBACK_THRESHOLD;
    if (t->activation == SUBSAE_ACT_RELU)
        for (int64_t f = 0; f < m; f++)
            sae->b_enc[f] = -(float)theta0;
    /* Release the sample before the optimiser state exists, so that the
     * peak memory of a run is the training state, not state + sample. */
    subsae__free(sample);
    subsae__free(xs);
    if (ts != xs)
        subsae__free(ts);
    subsae__free(basis);
    subsae__free(basis_in);
    sample = NULL;
    xs = ts = basis = basis_in = NULL;
    rc = subsae__trainer_alloc_state(t);
    if (!rc)
        rc = subsae__trainer_workspace(t, t->batch, subsae__trainer_threads(t));
    if (workers) { /* and every worker holds the same model */
        rc = subsae__collective_same(&t->coll, rc, subsae__trainer_weights_hash(t),
                                     "subsae_trainer_init: the initial weights");
        gathered = false;
    }
    if (rc) {
        t->sae = NULL;
        goto fail;
    }
    if (t->activation == SUBSAE_ACT_JUMPRELU) {
        for (int64_t f = 0; f < m; f++) {
            t->log_threshold[f] = logf((float)theta0);
            sae->threshold[f] = expf(t->log_threshold[f]);
        }
    } else if (t->activation == SUBSAE_ACT_BATCHTOPK) {
        t->batch_threshold = theta0;
        for (int64_t f = 0; f < m; f++)
            sae->threshold[f] = (float)theta0;
    }
    t->subspace_dim_used = asi ? r : 0;
    t->init_scale = chosen;
    t->step = t->tokens = 0;
    t->fit_end_step = -1;
    t->last_loss = NAN;
    t->prev_valid = false;
    t->window_tokens = 0;
    t->it_epoch = t->it_position = 0;
    subsae__rng_seed(&t->rng, seed, SUBSAE__STREAM_TRAIN);
    t->initialised = true;
    log_line(t, "init", "%s init: %lld features, d_in %lld, d_out %lld, scale %.6g%s%lld",
             asi ? "active-subspace" : "random", (long long)m, (long long)d_in,
             (long long)d_out, s_in, asi ? ", subspace dim " : "", asi ? (long long)r : 0LL);
    return SUBSAE_OK;

fail:
    /* A worker that fails after the sample was gathered still meets the
     * others at their final check, so that they fail too. */
    if (gathered)
        rc = subsae__collective_same(&t->coll, rc, 0, "subsae_trainer_init: the initial weights");
    /* Leave the trainer as it was: uninitialised with its options. */
    subsae_sae_free(sae);
    t->sae = NULL;
    {
        float **state[] = {&t->m_W_enc, &t->v_W_enc, &t->m_b_enc, &t->v_b_enc,
                           &t->m_W_dec, &t->v_W_dec, &t->m_b_dec, &t->v_b_dec,
                           &t->log_threshold, &t->m_log_threshold, &t->v_log_threshold};
        for (size_t i = 0; i < sizeof state / sizeof state[0]; i++) {
            subsae__free(*state[i]);
            *state[i] = NULL;
        }
    }
    subsae__free(t->last_fired);
    t->last_fired = NULL;
    window_free(&t->cur);
    window_free(&t->prev);
    workspace_free(&t->ws);
    t->transcoder = false;
    subsae__free(sample);
    subsae__free(xs);
    if (ts != xs)
        subsae__free(ts);
    subsae__free(basis);
    subsae__free(basis_in);
    return rc;
}

/* ---- fit ---------------------------------------------------------------------- */

/* The iterator of fit over `input`, positioned where the trainer stands. */
static int ensure_batches(subsae_trainer *t, const subsae_buffer *input)
{
    const int64_t rows = subsae_buffer_rows(input);
    if (t->batches && t->batches_buf == input && t->batches_rows == rows &&
        t->batches_size == t->batch)
        return SUBSAE_OK;
    if (t->batches) {
        int rc = subsae_batches_tell(t->batches, &t->it_epoch, &t->it_position);
        if (rc)
            return rc;
        subsae_batches_free(t->batches);
        t->batches = NULL;
    }
    int flags = SUBSAE_BATCH_SHUFFLE | (rows >= t->batch ? SUBSAE_BATCH_DROP_LAST : 0);
    subsae_batches *it;
    int rc = subsae_batches_create(input, t->batch, subsae__trainer_batch_seed((uint64_t)t->seed),
                                   flags, &it);
    if (rc)
        return rc;
    /* Continue where the trainer stands when the position fits this
     * buffer; otherwise start the next epoch. */
    int64_t end = rows >= t->batch ? rows - rows % t->batch : rows;
    if (t->it_position <= end)
        rc = subsae_batches_seek(it, t->it_epoch, t->it_position);
    else
        rc = subsae_batches_seek(it, t->it_epoch + 1, 0);
    if (rc) {
        subsae_batches_free(it);
        return rc;
    }
    t->batches = it;
    t->batches_buf = input;
    t->batches_rows = rows;
    t->batches_size = t->batch;
    t->window_tokens = end;
    return SUBSAE_OK;
}

static int check_fit_args(const char *fn, const subsae_trainer *t, const subsae_buffer *input,
                          const subsae_buffer *target, int64_t tokens)
{
    if (!input)
        return subsae__fail_null(fn, "input");
    if (!t->initialised)
        return subsae__fail(SUBSAE_E_STATE, SUBSAE_REASON_WRONG_STATE,
                            "%s: call subsae_trainer_init first", fn);
    if (t->transcoder != (target != NULL))
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                            "%s: the trainer was initialised %s a target buffer", fn,
                            t->transcoder ? "with" : "without");
    const subsae_sae *s = t->sae;
    if (subsae_buffer_dim(input) != s->d_in || (target && subsae_buffer_dim(target) != s->d_out))
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_DIM_MISMATCH,
                            "%s: buffer dims %lld -> %lld for a model of d_in %lld, d_out %lld",
                            fn, (long long)subsae_buffer_dim(input),
                            (long long)(target ? subsae_buffer_dim(target) : s->d_out),
                            (long long)s->d_in, (long long)s->d_out);
    if (target && subsae_buffer_rows(target) != subsae_buffer_rows(input))
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_SIZE_MISMATCH,
                            "%s: input has %lld rows, target %lld", fn,
                            (long long)subsae_buffer_rows(input),
                            (long long)subsae_buffer_rows(target));
    if (tokens < 0)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE, "%s: tokens %lld", fn,
                            (long long)tokens);
    /* With workers a worker may hold no rows; the union is checked later. */
    if (subsae_buffer_rows(input) < 1 && !subsae__collective_on(&t->coll))
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE, "%s: empty buffer", fn);
    return SUBSAE_OK;
}

int subsae_trainer_fit(subsae_trainer *t, const subsae_buffer *input,
                       const subsae_buffer *target, int64_t tokens)
{
    static const char *fn = "subsae_trainer_fit";
    if (!t)
        return subsae__fail_null(fn, "t");
    int rc = check_fit_args(fn, t, input, target, tokens);
    if (subsae__collective_on(&t->coll) && t->initialised)
        return subsae__trainer_fit_collective(t, rc, input, target, tokens);
    if (rc)
        return rc;
    const subsae_sae *s = t->sae;
    /* The batches are read by pread (see buffer.h): a shuffled pass over
     * a mapped file would otherwise keep all of it resident. */
    subsae__row_reader *reader_in = NULL, *reader_t = NULL;
    rc = ensure_batches(t, input);
    if (!rc)
        rc = subsae__trainer_workspace(t, t->batch, subsae__trainer_threads(t));
    if (!rc)
        rc = subsae__row_reader_open(input, &reader_in);
    if (!rc && target)
        rc = subsae__row_reader_open(target, &reader_t);
    if (rc) {
        subsae__row_reader_close(reader_in);
        return rc;
    }
    struct subsae__workspace *ws = &t->ws;
    int64_t per_step = t->batch < t->batches_rows ? t->batch : t->batches_rows;
    t->fit_end_step = t->step + (tokens + per_step - 1) / per_step;
    int64_t done = 0;
    while (done < tokens) {
        int64_t epoch, position, nb;
        subsae_batches_tell(t->batches, &epoch, &position);
        const double read_start = omp_get_wtime();
        rc = subsae_batches_next_indices(t->batches, ws->rows, &nb, NULL);
        if (!rc)
            rc = subsae__row_reader_gather(reader_in, ws->rows, 0, nb, ws->xs, s->d_in);
        if (!rc && target)
            rc = subsae__row_reader_gather(reader_t, ws->rows, 0, nb, ws->ts, s->d_out);
        if (!rc)
            /* The raw rows go straight into the step's buffers, which it
             * scales in place. */
            rc = step_rows(t, SUBSAE_OK, ws->xs, s->d_in, target ? ws->ts : NULL, s->d_out,
                           nb, omp_get_wtime() - read_start);
        if (rc) {
            subsae_batches_seek(t->batches, epoch, position);
            break;
        }
        subsae_batches_tell(t->batches, &t->it_epoch, &t->it_position);
        done += nb;
        if (t->callback &&
            t->callback(SUBSAE_EVENT_PROGRESS, "fit", done, tokens, NULL, t->user) != 0) {
            rc = subsae__fail(SUBSAE_E_CANCELLED, SUBSAE_REASON_CANCELLED,
                              "%s: cancelled by the callback after %lld of %lld tokens", fn,
                              (long long)done, (long long)tokens);
            break;
        }
    }
    t->fit_end_step = -1;
    subsae__row_reader_close(reader_in);
    subsae__row_reader_close(reader_t);
    /* The step's scratch (batch-sized buffers and the gradient rows, about
     * as large as the model) is not kept between calls of fit: whatever
     * the caller does next (evaluate, encode, save) has that memory. */
    subsae__trainer_workspace_release(t);
    return rc;
}

/* ---- metrics --------------------------------------------------------------------- */

int subsae_trainer_metrics(const subsae_trainer *t, double *metrics, int64_t n_metrics)
{
    static const char *fn = "subsae_trainer_metrics";
    if (!t)
        return subsae__fail_null(fn, "t");
    if (n_metrics > 0 && !metrics)
        return subsae__fail_null(fn, "metrics");
    if (n_metrics < 0)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE, "%s: n_metrics %lld",
                            fn, (long long)n_metrics);
    if (!t->initialised)
        return subsae__fail(SUBSAE_E_STATE, SUBSAE_REASON_WRONG_STATE,
                            "%s: call subsae_trainer_init first", fn);
    const subsae_sae *s = t->sae;
    double v[SUBSAE_METRIC_COUNT];
    for (int i = 0; i < SUBSAE_METRIC_COUNT; i++)
        v[i] = NAN;
    const struct subsae__window *w = t->prev_valid ? &t->prev : &t->cur;
    if (w->tokens > 0) {
        const double n = (double)w->tokens;
        double mean_sq = 0.0;
        for (int64_t j = 0; j < s->d_out; j++)
            mean_sq += w->sum_t[j] * w->sum_t[j];
        double sst = w->sum_t2 - mean_sq / n;
        v[SUBSAE_METRIC_MSE] = w->sse / n / (s->output_scale * s->output_scale);
        v[SUBSAE_METRIC_FVU] = sst > 0.0 ? w->sse / sst : NAN;
        v[SUBSAE_METRIC_EXPLAINED_VARIANCE] = 1.0 - v[SUBSAE_METRIC_FVU];
        v[SUBSAE_METRIC_L0] = (double)w->active / n;
        int64_t dense = 0, zero = 0;
        for (int64_t f = 0; f < s->d_sae; f++) {
            dense += (double)w->fires[f] > 0.1 * n;
            zero += w->fires[f] == 0;
        }
        v[SUBSAE_METRIC_DENSE_FRACTION] = (double)dense / (double)s->d_sae;
        v[SUBSAE_METRIC_ZERO_FREQUENCY_FRACTION] = (double)zero / (double)s->d_sae;
    }
    if (t->tokens > 0) {
        /* Dead: no fire within the last dead_window tokens (the whole run
         * when it is shorter). last_fired is 0 for a feature that never
         * fired. */
        int64_t horizon = t->tokens - t->dead_window;
        if (horizon < 0)
            horizon = 0;
        int64_t dead = 0;
        for (int64_t f = 0; f < s->d_sae; f++)
            dead += t->last_fired[f] <= horizon;
        v[SUBSAE_METRIC_DEAD_FEATURES] = (double)dead;
        v[SUBSAE_METRIC_DEAD_FRACTION] = (double)dead / (double)s->d_sae;
    }
    v[SUBSAE_METRIC_TOKENS] = (double)t->tokens;
    v[SUBSAE_METRIC_STEPS] = (double)t->step;
    v[SUBSAE_METRIC_LOSS] = t->last_loss;
    for (int64_t i = 0; i < n_metrics; i++)
        metrics[i] = i < SUBSAE_METRIC_COUNT ? v[i] : NAN;
    return SUBSAE_OK;
}

/* ---- phase timings ------------------------------------------------------------ */

static const char *const phase_names[SUBSAE_PHASE_COUNT] = {
    "encode_gemm", "topk", "decode", "backward", "optimizer", "prepare", "read", "step"};

int subsae_phase_count(void)
{
    return SUBSAE_PHASE_COUNT;
}

const char *subsae_phase_name(int phase)
{
    return phase >= 0 && phase < SUBSAE_PHASE_COUNT ? phase_names[phase] : "unknown";
}

int subsae_trainer_timings(const subsae_trainer *t, double *seconds_per_step, int64_t n)
{
    static const char *fn = "subsae_trainer_timings";
    if (!t)
        return subsae__fail_null(fn, "t");
    if (n < 0)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE, "%s: n %lld", fn,
                            (long long)n);
    if (n > 0 && !seconds_per_step)
        return subsae__fail_null(fn, "seconds_per_step");
    for (int64_t i = 0; i < n; i++)
        seconds_per_step[i] = i < SUBSAE_PHASE_COUNT && t->timed_steps > 0
                                  ? t->phase_total[i] / (double)t->timed_steps
                                  : NAN;
    return SUBSAE_OK;
}

int subsae_trainer_reset_timings(subsae_trainer *t)
{
    if (!t)
        return subsae__fail_null("subsae_trainer_reset_timings", "t");
    memset(t->phase_total, 0, sizeof t->phase_total);
    t->timed_steps = 0;
    return SUBSAE_OK;
}
