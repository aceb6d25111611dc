/* subsae_trainer: creation and options, the training state and the step's
 * workspace, fit over shuffled batches, metrics and phase timings. The
 * step is in trainer_step.c, initialisation in trainer_init.c, the
 * workers' exchange in trainer_collective.c. */
#include "trainer.h"

#include "buffer.h"
#include "kernels.h"
#include "options.h"

#include <cblas.h>
#include <math.h>
#include <stdarg.h>
#include <omp.h>
#include <stdio.h>
#include <string.h>

uint64_t subsae__trainer_batch_seed(uint64_t seed)
{
    return seed ^ 0x62617463686573ULL; /* "batches" */
}

/* ---- creation and options ------------------------------------------------ */

static void set_defaults(subsae_trainer *t);

int subsae_trainer_create(subsae_trainer **out)
{
    if (!out)
        return subsae__fail_null("subsae_trainer_create", "out");
    subsae_trainer *t = subsae__calloc(1, sizeof *t);
    if (!t)
        return subsae__fail_nomem("trainer", sizeof *t);
    set_defaults(t);
    t->fit_end_step = -1;
    subsae__trainer_forget_last_step(t, NAN);
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

void subsae__trainer_free_state(subsae_trainer *t)
{
    float **state[] = {&t->m_W_enc, &t->v_W_enc, &t->m_b_enc, &t->v_b_enc,
                       &t->m_W_dec, &t->v_W_dec, &t->m_b_dec, &t->v_b_dec,
                       &t->log_threshold, &t->m_log_threshold, &t->v_log_threshold};
    for (size_t i = 0; i < sizeof state / sizeof state[0]; i++) {
        subsae__free(*state[i]);
        *state[i] = NULL;
    }
    subsae__free(t->last_fired);
    t->last_fired = NULL;
    window_free(&t->cur);
    window_free(&t->prev);
    workspace_free(&t->ws);
    t->transcoder = false;
}

void subsae_trainer_free(subsae_trainer *t)
{
    if (!t)
        return;
    subsae_sae_free(t->sae);
    subsae__trainer_free_state(t);
    subsae_batches_free(t->batches);
    subsae__collective_release(&t->coll);
    subsae__free(t->coll_buf);
    subsae__free(t->metadata);
    subsae__free(t);
}

void subsae__trainer_forget_last_step(subsae_trainer *t, double loss)
{
    t->last_loss = loss;
    t->last_lr = NAN;
    for (int i = 0; i < 3; i++)
        t->last_loss_parts[i] = NAN;
}

int subsae_trainer_set_metadata(subsae_trainer *t, const char *json)
{
    static const char *fn = "subsae_trainer_set_metadata";
    if (!t)
        return subsae__fail_null(fn, "t");
    char *text;
    int rc = subsae__metadata_normalize(fn, json, &text);
    if (!rc && t->sae)
        rc = subsae__sae_replace_metadata(t->sae, text);
    if (rc) {
        subsae__free(text);
        return rc;
    }
    subsae__free(t->metadata);
    t->metadata = text;
    return SUBSAE_OK;
}

int subsae_trainer_get_metadata(const subsae_trainer *t, const char **json)
{
    static const char *fn = "subsae_trainer_get_metadata";
    if (!t)
        return subsae__fail_null(fn, "t");
    if (!json)
        return subsae__fail_null(fn, "json");
    *json = t->metadata ? t->metadata : "{}";
    return SUBSAE_OK;
}

/* The trainer's options: bounds, defaults and descriptions (published by
 * subsae_option_*, see options.h); subsae_trainer_create sets every field
 * to its default from here. */
#define TRAIN_INT(opt, name, lo, hi, def, flags, field, doc) \
    SUBSAE__INT_OPTION(opt, name, lo, hi, def, flags, offsetof(struct subsae_trainer, field), doc)
#define TRAIN_DOUBLE(opt, name, lo, hi, def, flags, field, doc)                          \
    SUBSAE__DOUBLE_OPTION(opt, name, lo, hi, def, flags, offsetof(struct subsae_trainer, field), \
                          doc)
enum { STRUCTURAL = SUBSAE_OPTION_STRUCTURAL, AUTO = SUBSAE_OPTION_ZERO_MEANS_AUTO,
       CHOICE = SUBSAE_OPTION_CHOICE };
static const struct subsae__option trainer_options[] = {
    TRAIN_INT(SUBSAE_TRAIN_FEATURES, "features", 1, INT32_MAX, 16384, STRUCTURAL, features,
              "dictionary size d_sae"),
    TRAIN_INT(SUBSAE_TRAIN_ACTIVATION, "activation", 0, 3, SUBSAE_ACT_TOPK, STRUCTURAL | CHOICE,
              activation, "SUBSAE_ACT_*: topk, batchtopk, jumprelu or relu"),
    TRAIN_INT(SUBSAE_TRAIN_K, "k", 1, INT32_MAX, 32, STRUCTURAL, k,
              "active features per token (TopK, BatchTopK); the initial L0 of JumpReLU and ReLU"),
    TRAIN_DOUBLE(SUBSAE_TRAIN_LR, "lr", 0.0, 1e6, 0.0, AUTO, lr,
                 "Adam learning rate; 0 = 2e-4 / sqrt(d_sae / 16384)"),
    TRAIN_INT(SUBSAE_TRAIN_BATCH, "batch", 1, (int64_t)1 << 24, 4096, 0, batch,
              "tokens per step"),
    TRAIN_INT(SUBSAE_TRAIN_WARMUP_STEPS, "warmup_steps", 0, INT64_MAX, 0, 0, warmup_steps,
              "steps of linear learning-rate warm-up"),
    TRAIN_INT(SUBSAE_TRAIN_COOLDOWN_STEPS, "cooldown_steps", 0, INT64_MAX, 0, 0, cooldown_steps,
              "steps of linear learning-rate decay to 0 at the end of each fit"),
    TRAIN_DOUBLE(SUBSAE_TRAIN_CLIP_NORM, "clip_norm", 0.0, 1e30, 0.0, 0, clip_norm,
                 "gradient-norm clip; 0 = off"),
    TRAIN_INT(SUBSAE_TRAIN_SEED, "seed", INT64_MIN, INT64_MAX, 0, STRUCTURAL, seed,
              "seed of the initialisation sample, directions and batch order"),
    TRAIN_INT(SUBSAE_TRAIN_DEAD_WINDOW, "dead_window", 1, INT64_MAX, 10000000, 0, dead_window,
              "a feature is dead when it has not fired within this many tokens"),
    TRAIN_INT(SUBSAE_TRAIN_INIT, "init", 0, 1, SUBSAE_INIT_ACTIVE_SUBSPACE, STRUCTURAL | CHOICE,
              init, "SUBSAE_INIT_*: random or active-subspace"),
    TRAIN_INT(SUBSAE_TRAIN_SUBSPACE_DIM, "subspace_dim", 0, INT32_MAX, 0, STRUCTURAL | AUTO,
              subspace_dim, "r of active-subspace init; 0 = the effective rank at 99 %"),
    TRAIN_INT(SUBSAE_TRAIN_SCALE_SEARCH, "scale_search", 0, 1, 1, STRUCTURAL, scale_search,
              "1 = search the common scale of the initial weights (40 values in [0.05, 2])"),
    TRAIN_INT(SUBSAE_TRAIN_DECODER_NORM, "decoder_norm", 0, 1, SUBSAE_DECODER_FREE,
              STRUCTURAL | CHOICE, decoder_norm, "SUBSAE_DECODER_*: free or unit"),
    TRAIN_INT(SUBSAE_TRAIN_SPARSE_ADAM, "sparse_adam", 0, 1, 0, 0, sparse_adam,
              "1 = Adam updates only the features with gradient in the step"),
    TRAIN_INT(SUBSAE_TRAIN_THREADS, "threads", 0, 4096, 0, AUTO, threads,
              "threads of the step; 0 = subsae_get_num_threads()"),
    TRAIN_INT(SUBSAE_TRAIN_INIT_SAMPLE, "init_sample", 2, INT64_MAX, 65536, STRUCTURAL,
              init_sample, "rows of the initialisation sample"),
    TRAIN_DOUBLE(SUBSAE_TRAIN_ADAM_BETA1, "adam_beta1", 0.0, 1.0, 0.9, SUBSAE_OPTION_MAX_EXCLUSIVE,
                 beta1, "Adam beta1"),
    TRAIN_DOUBLE(SUBSAE_TRAIN_ADAM_BETA2, "adam_beta2", 0.0, 1.0, 0.999,
                 SUBSAE_OPTION_MAX_EXCLUSIVE, beta2, "Adam beta2"),
    TRAIN_DOUBLE(SUBSAE_TRAIN_ADAM_EPS, "adam_eps", 0.0, 1.0, 1e-8, SUBSAE_OPTION_MIN_EXCLUSIVE,
                 eps, "Adam epsilon"),
    TRAIN_DOUBLE(SUBSAE_TRAIN_AUXK_COEF, "auxk_coef", 0.0, 1e6, 0.0, 0, auxk_coef,
                 "weight of the AuxK revival loss; 0 = off, 1/32 typical"),
    TRAIN_INT(SUBSAE_TRAIN_AUXK_K, "auxk_k", 0, INT32_MAX, 0, AUTO, auxk_k,
              "dead features AuxK uses per token; 0 = d_out / 2"),
    TRAIN_DOUBLE(SUBSAE_TRAIN_L1_COEF, "l1_coef", 0.0, 1e6, 2.0, 0, l1_coef,
                 "ReLU: weight of the L1 penalty sum z_f |W_dec row f|"),
    TRAIN_DOUBLE(SUBSAE_TRAIN_L0_COEF, "l0_coef", 0.0, 1e6, 1.0, 0, l0_coef,
                 "JumpReLU: weight of the L0 penalty"),
    TRAIN_DOUBLE(SUBSAE_TRAIN_JUMPRELU_BANDWIDTH, "jumprelu_bandwidth", 0.0, 1e6, 0.001,
                 SUBSAE_OPTION_MIN_EXCLUSIVE, bandwidth,
                 "JumpReLU: width of the straight-through estimator's kernel"),
    TRAIN_DOUBLE(SUBSAE_TRAIN_INIT_THRESHOLD, "init_threshold", 0.0, 1e6, 0.0, STRUCTURAL | AUTO,
                 init_threshold,
                 "initial JumpReLU threshold (ReLU: minus the initial encoder bias); 0 = the "
                 "batch-top-k cut of the init sample (initial L0 about k)"),
    TRAIN_INT(SUBSAE_TRAIN_SUBSPACE_COEFFICIENTS, "subspace_coefficients", 0, 1,
              SUBSAE_COEF_UNIFORM, STRUCTURAL | CHOICE, subspace_coefficients,
              "SUBSAE_COEF_*: uniform or gaussian coefficients of active-subspace directions"),
};

const struct subsae__option *subsae__trainer_option_table(int64_t *n)
{
    *n = (int64_t)(sizeof trainer_options / sizeof trainer_options[0]);
    return trainer_options;
}

static const struct subsae__option *find_option(int option)
{
    return subsae__option_find(trainer_options,
                               (int64_t)(sizeof trainer_options / sizeof trainer_options[0]),
                               option);
}

static void set_defaults(subsae_trainer *t)
{
    for (size_t i = 0; i < sizeof trainer_options / sizeof trainer_options[0]; i++) {
        const struct subsae__option *o = &trainer_options[i];
        if (o->type == SUBSAE_OPTION_INT)
            memcpy((char *)t + o->offset, &o->int_default, sizeof o->int_default);
        else
            memcpy((char *)t + o->offset, &o->default_value, sizeof o->default_value);
    }
}

static int structural(const char *fn, const subsae_trainer *t, const struct subsae__option *o)
{
    if (!t->initialised || !(o->flags & SUBSAE_OPTION_STRUCTURAL))
        return SUBSAE_OK;
    return subsae__fail(SUBSAE_E_STATE, SUBSAE_REASON_WRONG_STATE,
                        "%s: %s cannot change after subsae_trainer_init", fn, o->name);
}

const char *subsae__trainer_option_name(int option, bool *is_double)
{
    const struct subsae__option *o = find_option(option);
    if (is_double)
        *is_double = o && o->type == SUBSAE_OPTION_DOUBLE;
    return o ? o->name : NULL;
}

void *subsae__trainer_option_field(subsae_trainer *t, int option)
{
    const struct subsae__option *o = find_option(option);
    return o ? (char *)t + o->offset : NULL;
}

int subsae_trainer_set_int(subsae_trainer *t, int option, int64_t value)
{
    static const char *fn = "subsae_trainer_set_int";
    if (!t)
        return subsae__fail_null(fn, "t");
    int rc;
    const struct subsae__option *o = subsae__option_settable_int(
        fn, SUBSAE_OBJECT_TRAINER, option, value, "subsae_trainer_set_double", &rc);
    if (!rc)
        rc = structural(fn, t, o);
    if (rc)
        return rc;
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
    int rc;
    const struct subsae__option *o = subsae__option_entry(
        fn, SUBSAE_OBJECT_TRAINER, option, SUBSAE_OPTION_INT, "subsae_trainer_get_double", &rc);
    if (rc)
        return rc;
    if (option == SUBSAE_TRAIN_SUBSPACE_DIM && t->initialised)
        *value = t->subspace_dim_used;
    else
        memcpy(value, (const char *)t + o->offset, sizeof *value);
    return SUBSAE_OK;
}

double subsae__trainer_default_lr(int64_t features)
{
    return 2e-4 / sqrt((double)features / 16384.0);
}

double subsae__trainer_lr(const subsae_trainer *t)
{
    return t->lr == 0.0 ? subsae__trainer_default_lr(t->features) : t->lr;
}

int subsae_trainer_set_double(subsae_trainer *t, int option, double value)
{
    static const char *fn = "subsae_trainer_set_double";
    if (!t)
        return subsae__fail_null(fn, "t");
    int rc;
    const struct subsae__option *o = subsae__option_settable_double(
        fn, SUBSAE_OBJECT_TRAINER, option, value, "subsae_trainer_set_int", &rc);
    if (!rc)
        rc = structural(fn, t, o);
    if (rc)
        return rc;
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
    int rc;
    const struct subsae__option *o = subsae__option_entry(
        fn, SUBSAE_OBJECT_TRAINER, option, SUBSAE_OPTION_DOUBLE, "subsae_trainer_get_int", &rc);
    if (rc)
        return rc;
    if (option == SUBSAE_TRAIN_LR)
        *value = subsae__trainer_lr(t);
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

void subsae__trainer_log(const subsae_trainer *t, const char *phase, const char *fmt, ...)
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

void subsae__trainer_window_clear(struct subsae__window *w, int64_t d_out, int64_t d_sae)
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

/* ---- fit ---------------------------------------------------------------------- */

int subsae__trainer_batches(subsae_trainer *t, const subsae_buffer *input, int64_t rows)
{
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
    int rc = subsae__batches_create_rows(input, rows, t->batch,
                                         subsae__trainer_batch_seed((uint64_t)t->seed), flags,
                                         &it);
    if (rc)
        return rc;
    /* Continue where the trainer stands when the position fits these
     * rows; otherwise start the next epoch. */
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
    if (subsae_buffer_dim(input) != s->d_in)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_DIM_MISMATCH,
                            "%s: the input has rows of %lld values but the model takes d_in = "
                            "%lld",
                            fn, (long long)subsae_buffer_dim(input), (long long)s->d_in);
    if (target && subsae_buffer_dim(target) != s->d_out)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_DIM_MISMATCH,
                            "%s: the target has rows of %lld values but the model reconstructs "
                            "d_out = %lld",
                            fn, (long long)subsae_buffer_dim(target), (long long)s->d_out);
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
    rc = subsae__trainer_batches(t, input, subsae_buffer_rows(input));
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
            rc = subsae__trainer_step_timed(t, SUBSAE_OK, ws->xs, s->d_in, target ? ws->ts : NULL, s->d_out,
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
    v[SUBSAE_METRIC_LR] = t->last_lr;
    v[SUBSAE_METRIC_LOSS_MSE] = t->last_loss_parts[0];
    v[SUBSAE_METRIC_LOSS_SPARSITY] = t->last_loss_parts[1];
    v[SUBSAE_METRIC_LOSS_AUX] = t->last_loss_parts[2];
    for (int64_t i = 0; i < n_metrics; i++)
        metrics[i] = i < SUBSAE_METRIC_COUNT ? v[i] : NAN;
    return SUBSAE_OK;
}

int subsae_trainer_feature_density(const subsae_trainer *t, double *density, int64_t n)
{
    static const char *fn = "subsae_trainer_feature_density";
    if (!t)
        return subsae__fail_null(fn, "t");
    if (!density)
        return subsae__fail_null(fn, "density");
    if (!t->initialised)
        return subsae__fail(SUBSAE_E_STATE, SUBSAE_REASON_WRONG_STATE,
                            "%s: call subsae_trainer_init first", fn);
    if (n != t->sae->d_sae)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_SIZE_MISMATCH,
                            "%s: room for %lld densities, the model has d_sae %lld features",
                            fn, (long long)n, (long long)t->sae->d_sae);
    /* The window of subsae_trainer_metrics. */
    const struct subsae__window *w = t->prev_valid ? &t->prev : &t->cur;
    if (w->tokens == 0)
        return subsae__fail(SUBSAE_E_STATE, SUBSAE_REASON_WRONG_STATE,
                            "%s: no training step yet", fn);
    for (int64_t f = 0; f < n; f++)
        density[f] = (double)w->fires[f] / (double)w->tokens;
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
