/* Internals of subsae_trainer, shared by trainer.c (options, init, step,
 * fit, metrics) and checkpoint.c (save/resume). */
#ifndef SUBSAE_TRAINER_H
#define SUBSAE_TRAINER_H

#include "collective.h"
#include "rng.h"
#include "sae.h"

/* Purposes of the random streams drawn from the seed (subsae__rng_seed's
 * stream argument). They are far from the small integers the batch
 * iterator uses for its epochs, so no two purposes share a stream. */
enum {
    SUBSAE__STREAM_SAMPLE = 0x5341450001,  /* rows of the initialisation sample */
    SUBSAE__STREAM_DECODER = 0x5341450002, /* decoder directions (ASI or random) */
    SUBSAE__STREAM_ENCODER = 0x5341450003, /* encoder directions of transcoders */
    SUBSAE__STREAM_TRAIN = 0x5341450004    /* draws during training (none for TopK) */
};

/* Seed of the batch iterator: epochs are streams of this seed. */
uint64_t subsae__trainer_batch_seed(uint64_t seed);

/* Accumulated training statistics over a run of steps (scaled space). */
struct subsae__window {
    int64_t tokens;
    double sse;      /* sum over tokens of |t - t_hat|^2 */
    double sum_t2;   /* sum over tokens of |t|^2 */
    double *sum_t;   /* d_out: sum over tokens of t */
    int64_t active;  /* sum over tokens of the number of firing features */
    int64_t *fires;  /* d_sae: tokens on which each feature fired */
};

/* Fixed number of parts of the step's parallel reductions (decode rows,
 * backward features), independent of the thread count. */
enum { SUBSAE__PARTS = 64 };

/* Buffers of the training step, sized for a batch and a thread count
 * before the hot loop (see ensure_workspace in trainer.c). */
struct subsae__workspace {
    int64_t batch, threads, block; /* room: rows, threads (the step may use fewer) */
    int64_t *rows;            /* fit: row indices of the batch */
    float *xs, *ts;           /* scaled input / target (ts == xs for an SAE); fit
                                 gathers the raw rows into them */
    float *xin;               /* encoder input */
    float *pre;               /* encoder scratch: the fused TopK encoder's tiles, or
                                 block x d_sae pre-activations (other activations, AuxK) */
    int64_t pre_floats;       /* room of pre */
    int32_t *idx;             /* batch x k */
    float *val;
    float *g;                 /* batch x d_out: reconstruction, then dL/dx_hat */
    double *row_sse;          /* batch */
    int32_t *counts;          /* threads x d_sae histograms / scatter cursors */
    int32_t *offsets;         /* d_sae + 1 */
    int32_t *fired;           /* d_sae: pairs per feature this step */
    int32_t *pair_row;        /* the step's pairs, bucketed by feature */
    float *pair_z;
    int32_t *touched;         /* features with gradient, ascending */
    int32_t *slot_of;         /* d_sae: slot of a touched feature or -1 */
    int64_t max_touched;
    float *g_W_enc, *g_W_dec, *g_b_enc, *g_b_dec; /* compact gradient rows per slot */
    double *part;             /* SUBSAE__PARTS x SUBSAE__PART_STRIDE(d_out): partial
                                 sums per part, laid out as below */
    int64_t *split;           /* SUBSAE__PARTS + 1: touched-list ranges per part */

    /* Activations other than TopK and the extra losses (activation.c,
     * losses.c). The step's (row, feature) pairs are a CSR list: row i
     * owns idx/val[row_ptr[i] .. row_ptr[i + 1]); TopK keeps k slots per
     * row (-1 for an inactive slot). */
    int64_t *row_ptr;         /* batch + 1 */
    int64_t pair_cap;         /* room of idx, val, pre_val, pair_row, pair_z, pair_pre */
    float *pre_val;           /* JumpReLU: pre-activation of each pair (pairs in the
                                 threshold's band are kept even when inactive) */
    float *pair_pre;          /* JumpReLU: pre_val bucketed by feature */
    int64_t *row_count;       /* batch: pairs per row while encoding */
    float *cut;               /* d_sae: JumpReLU lower edge of the kept pairs */
    uint32_t *hist;           /* BatchTopK: 65536-bin radix histogram */
    float step_theta;         /* BatchTopK: smallest selected value of the step */
    int32_t *active;          /* d_sae: active (z > 0) pairs per feature */
    int64_t n_active;         /* active pairs of the step */
    float *g_thr;             /* max_touched: JumpReLU log-threshold gradient per slot */
    double *extra;            /* SUBSAE__PARTS x 4: penalty and AuxK partial sums */
    double step_mse, step_penalty, step_aux; /* parts of the step's loss */
    /* AuxK */
    int64_t aux_k;            /* slots per row (0: AuxK off this step) */
    int64_t aux_cap;          /* room of aux_idx, aux_val, aux_pair_* */
    double aux_scale;         /* min(dead / k_aux, 1) */
    int32_t *dead_list;       /* d_sae: dead features of the step, ascending */
    int64_t n_dead;
    float *aux_tmp;           /* threads x d_sae: a row's dead pre-activations */
    int32_t *aux_idx;         /* batch x aux_k */
    float *aux_val;
    float *g_aux;             /* batch x d_out: AuxK output gradient */
    double *aux_sse;          /* batch */
    int32_t *aux_offsets;     /* d_sae + 1 */
    int32_t *aux_fired;       /* d_sae */
    int32_t *aux_pair_row;    /* batch x aux_k, bucketed */
    float *aux_pair_z;
};

/* A part's partial sums in ws->part: dL/dx_hat summed over its rows
 * [0, d_out), the scaled target summed [d_out, 2 d_out), the b_dec
 * gradient through the encoder input [2 d_out, 3 d_out), the sum of |t|^2
 * at SUBSAE__PART_T2, the squared gradient norm of its features at
 * SUBSAE__PART_T2 + 1. */
#define SUBSAE__PART_STRIDE(d_out) ((size_t)(3 * (d_out) + 4))
#define SUBSAE__PART_SUM_T(d_out) ((size_t)(d_out))
#define SUBSAE__PART_T2(d_out) ((size_t)(3 * (d_out)))

struct subsae_trainer {
    /* options */
    int64_t features, activation, k, batch, warmup_steps, cooldown_steps, seed, dead_window,
        init, subspace_dim, scale_search, decoder_norm, sparse_adam, threads, init_sample,
        auxk_k, subspace_coefficients;
    double lr, clip_norm, beta1, beta2, eps, auxk_coef, l1_coef, l0_coef, bandwidth,
        init_threshold;
    subsae_callback callback;
    void *user;

    /* state */
    bool initialised;
    bool transcoder;
    subsae_sae *sae;
    int64_t subspace_dim_used; /* r of ASI (0 for random init) */
    double init_scale;         /* the grid search's choice (1 when off) */
    float *m_W_enc, *v_W_enc, *m_b_enc, *v_b_enc, *m_W_dec, *v_W_dec, *m_b_dec, *v_b_dec;
    int64_t step, tokens;
    int64_t fit_end_step;      /* step at which the running fit ends (cool-down); -1 */
    double last_loss;
    double last_loss_parts[3]; /* MSE, sparsity penalty, AuxK of the last step (NaN: none) */
    double last_lr;            /* learning rate of the last step (NaN: none) */
    char *metadata;            /* the caller's run metadata (compact JSON) or NULL */
    int64_t *last_fired;       /* d_sae: token count after the last step the feature fired */
    float *log_threshold;      /* JumpReLU: d_sae log-thresholds (the trained parameter;
                                  sae->threshold holds exp of it) and their Adam moments */
    float *m_log_threshold, *v_log_threshold;
    double batch_threshold;    /* BatchTopK: running inference threshold (EMA) */
    struct subsae__window cur, prev;
    bool prev_valid;
    int64_t window_tokens;     /* metrics window (epoch length); 0 = since init */
    subsae__rng rng;

    /* batch iterator of fit (position kept across calls and checkpoints) */
    subsae_batches *batches;
    const subsae_buffer *batches_buf;
    int64_t batches_rows, batches_size;
    int64_t it_epoch, it_position; /* where the next fit continues */

    struct subsae__workspace ws;
    /* Phase timings (SUBSAE_PHASE_*): the running step's, and the totals
     * over the `timed_steps` completed steps since the last reset. */
    double phase_seconds[SUBSAE_PHASE_COUNT];
    double phase_total[SUBSAE_PHASE_COUNT];
    int64_t timed_steps;

    /* data-parallel workers (trainer_collective.c) */
    struct subsae__collective coll;
    int64_t loss_rows;         /* rows the running step's loss is averaged over (the
                                  global batch); 0: the step's own rows */
    double *coll_buf;          /* the step's first exchange (see exchange_size) */
    int64_t coll_buf_size;
    int64_t coll_steps;        /* steps exchanged since attached (statistics) */
};

/* Options by enum value (0 .. SUBSAE__TRAIN_OPTION_LAST): the name (NULL
 * for a gap), whether it is a double (else int64_t), and the address of
 * the value as configured (no defaults resolved). */
enum { SUBSAE__TRAIN_OPTION_LAST = SUBSAE_TRAIN_SUBSPACE_COEFFICIENTS };
const char *subsae__trainer_option_name(int option, bool *is_double);
void *subsae__trainer_option_field(subsae_trainer *t, int option);

/* The last step's loss (NaN: none) with its parts and learning rate
 * unknown (after init, or loading a checkpoint, which stores the loss
 * only). */
void subsae__trainer_forget_last_step(subsae_trainer *t, double loss);

/* Allocate the model-sized state (Adam moments, counters, windows) of an
 * initialised trainer whose model is set. */
int subsae__trainer_alloc_state(subsae_trainer *t);

/* Fit's shuffled batch iterator over `rows` rows of `input` (NULL: the
 * global rows of the workers), positioned where the trainer stands; kept
 * while the buffer, row count and batch size stay the same. */
int subsae__trainer_batches(subsae_trainer *t, const subsae_buffer *input, int64_t rows);

/* Free that state and the workspace (the model and the options stay):
 * the trainer is uninitialised again. */
void subsae__trainer_free_state(subsae_trainer *t);

/* Zero a metrics window. */
void subsae__trainer_window_clear(struct subsae__window *w, int64_t d_out, int64_t d_sae);

/* AuxK of the step: the dead features and the slots per row (ws->aux_k, 0
 * when AuxK is off or nothing is dead), the scratch grown if needed. */
int subsae__trainer_prepare_aux(subsae_trainer *t);

/* The learning rate used when none is set (depends on d_sae), and the
 * rate in effect (before warm-up and cool-down). */
double subsae__trainer_default_lr(int64_t features);
double subsae__trainer_lr(const subsae_trainer *t);

/* A log line through the callback (SUBSAE_EVENT_LOG), if one is set. */
void subsae__trainer_log(const subsae_trainer *t, const char *phase, const char *fmt, ...)
    SUBSAE_PRINTF(3, 4);

/* Features with gradient in the step (the touched list's length). */
static inline int64_t subsae__touched_count(const struct subsae__workspace *ws)
{
    return ws->split[SUBSAE__PARTS];
}

/* Size the workspace for `batch` rows on `threads` threads (no-op when
 * already large enough; it only grows, so that changing the thread count
 * between steps allocates nothing after the largest count has run). */
int subsae__trainer_workspace(subsae_trainer *t, int64_t batch, int threads);

/* Free the workspace (fit does when it returns; the next step sizes it
 * again). */
void subsae__trainer_workspace_release(subsae_trainer *t);

/* The thread count the step uses. */
int subsae__trainer_threads(const subsae_trainer *t);

/* One step on n rows already validated, the workspace sized: forward and
 * backward (skipped when n is 0 or rc is already a failure), with workers
 * the exchange of the gradients and sums (subsae__trainer_exchange, given
 * this worker's rc so that a failure is agreed), Adam, counters. */
int subsae__trainer_step_rows(subsae_trainer *t, int rc, const float *input,
                              int64_t input_stride, const float *target, int64_t target_stride,
                              int64_t n);

/* The same, counting `read_seconds` (fit's time to read the rows) in the
 * phase timings. */
int subsae__trainer_step_timed(subsae_trainer *t, int rc, const float *input,
                               int64_t input_stride, const float *target, int64_t target_stride,
                               int64_t n, double read_seconds);

/* ---- workers (trainer_collective.c) ---- */

/* The exchange of a step: agree on rc, sum the firing counts, loss and
 * metric sums and the b_dec gradient over the workers, then the gradient
 * rows of the features that fired on any worker, and rewrite the workspace
 * so that the optimiser and the counters see the global step: the touched
 * features, their counts and gradients, the partition sums (in partition
 * 0), the pairs. *n gets the rows of all workers, *loss the loss over them
 * and *sq the squared norm of the global gradient. This worker's
 * contribution is read from the workspace only when rc is SUBSAE_OK and
 * *n > 0. */
int subsae__trainer_exchange(subsae_trainer *t, int rc, int64_t *n, double *loss, double *sq);

/* subsae_trainer_fit and subsae_trainer_step with workers; rc is the
 * outcome of this worker's argument checks (agreed before anything). */
int subsae__trainer_fit_collective(subsae_trainer *t, int rc, const subsae_buffer *input,
                                   const subsae_buffer *target, int64_t tokens);
int subsae__trainer_step_collective(subsae_trainer *t, int rc, const float *input,
                                    int64_t input_stride, const float *target,
                                    int64_t target_stride, int64_t n);

/* A hash of the model's weights (the workers compare it). */
uint64_t subsae__trainer_weights_hash(const subsae_trainer *t);

/* A hash of the options that shape the all-reduces and the model. */
uint64_t subsae__trainer_options_hash(const subsae_trainer *t);

/* Gradient of the loss on n raw rows at the current weights, scattered
 * into dense arrays of the parameters' sizes (any may be NULL), after the
 * unit-norm projection when the decoder norm is unit; `loss` (may be NULL)
 * gets the loss, `indices` (may be NULL; TopK only) the n x k selection.
 * Changes nothing in the model. For tests (subsae__trainer_pairs gives the
 * pairs of every activation). */
int subsae__trainer_gradients(subsae_trainer *t, const float *input, int64_t input_stride,
                              const float *target, int64_t target_stride, int64_t n,
                              float *g_W_enc, float *g_b_enc, float *g_W_dec, float *g_b_dec,
                              double *loss, int32_t *indices);

/* The step's (row, feature) pairs in the workspace after the last step
 * or gradient computation: CSR row_ptr (n + 1), features and values. For
 * tests. */
void subsae__trainer_pairs(const subsae_trainer *t, const int64_t **row_ptr,
                           const int32_t **idx, const float **val);

/* The JumpReLU log-threshold gradient of the last gradient computation,
 * dense (d_sae). For tests. */
void subsae__trainer_threshold_gradient(const subsae_trainer *t, float *g);

/* Parts of the last step's loss: reconstruction MSE, sparsity penalty
 * (L1 or L0), AuxK term. For tests. */
void subsae__trainer_loss_parts(const subsae_trainer *t, double *mse, double *penalty,
                                double *aux);

/* ---- activation.c: the step's encoder for every activation ---------- */

/* Rate of the BatchTopK threshold's moving average (SAELens'
 * topk_threshold_lr). */
#define SUBSAE__BATCHTOPK_THRESHOLD_RATE 0.01

/* Encode the n rows of ws->xin: the blocked encoder GEMM, then the
 * activation's selection into the CSR pairs (ws->row_ptr, idx, val and
 * for JumpReLU pre_val), growing the pair arrays when a dense activation
 * needs more room; with AuxK on (ws->aux_k > 0) also the top aux_k dead
 * pre-activations of each row (ws->aux_idx / aux_val). `seconds` gets the
 * GEMM and selection times. Errors: SUBSAE_E_NOMEM, SUBSAE_E_RANGE. */
int subsae__train_encode(subsae_trainer *t, int64_t n, double *seconds);

/* The (k n)-th largest pre-activation (b_enc included) of n rows of
 * encoder input, exactly (0 when fewer are positive): the batch-top-k
 * cut, used to start the BatchTopK threshold and the automatic JumpReLU
 * threshold. */
int subsae__batch_topk_cut(const subsae_sae *sae, const float *xin, int64_t n, int64_t k,
                           int threads, float *cut);

/* Grow the pair arrays to hold `need` pairs (contents of idx, val and
 * pre_val kept). */
int subsae__trainer_grow_pairs(subsae_trainer *t, int64_t need);

/* Gradient rows for every feature (workers with ReLU, JumpReLU or AuxK:
 * the union of the touched features may exceed a worker's own). */
int subsae__trainer_room_all_features(subsae_trainer *t);

/* Whether the step touches features that did not fire (ReLU, JumpReLU,
 * AuxK): the workers' exchange then carries touched flags and the extra
 * loss parts (trainer_collective.c). */
bool subsae__trainer_extended(const subsae_trainer *t);

/* SUBSAE_OK, or SUBSAE_E_UNSUPPORTED for what workers cannot train
 * (BatchTopK's selection over the global batch). */
int subsae__trainer_collective_supported(const subsae_trainer *t, const char *fn);

/* ---- losses.c: the per-feature backward with the extra terms -------- */

/* Gradients of one feature from its pairs (see losses.c): the
 * reconstruction through the active pairs, the L1 term (dz_add per active
 * pair), the JumpReLU threshold (pre != NULL) and, accumulated, AuxK. */
void subsae__feature_backward_ex(const int32_t *rows, const float *z, const float *pre,
                                 int64_t count, const float *g, int64_t g_stride, int64_t d_out,
                                 const float *xin, int64_t xin_stride, int64_t d_in,
                                 const float *wdec, float dz_add, float thr, float inv_bw,
                                 float l0_w, bool accumulate, float *gdec, float *genc,
                                 float *gbenc, double *gthr, double *zsum);

#endif
