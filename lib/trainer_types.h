/* The trainer's types: struct subsae_trainer, the step's workspace and
 * the metrics window, shared by every layer of the trainer (and by
 * checkpoint.c). Types only: each layer's functions are declared in the
 * header of its own file. */
#ifndef SUBSAE_TRAINER_TYPES_H
#define SUBSAE_TRAINER_TYPES_H

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

/* Accumulated training statistics over a run of steps (scaled space). */
struct subsae__window {
    int64_t tokens;
    double sse;     /* sum over tokens of |t - t_hat|^2 */
    double sum_t2;  /* sum over tokens of |t|^2 */
    double *sum_t;  /* d_out: sum over tokens of t */
    int64_t active; /* sum over tokens of the number of firing features */
    int64_t *fires; /* d_sae: tokens on which each feature fired */
};

/* Most rows of one step (the batch option's bound, and the rows the
 * workers pass together). */
#define SUBSAE__MAX_BATCH ((int64_t)1 << 24)

/* Fixed number of parts of the step's parallel reductions (decode rows,
 * backward features), independent of the thread count. */
enum { SUBSAE__PARTS = 64 };

/* Buffers of the training step, sized for a batch and a thread count
 * before the hot loop (subsae__trainer_workspace, trainer_workspace.c). */
struct subsae__workspace {
    int64_t batch, threads, block; /* room: rows, threads (the step may use fewer) */
    int64_t *rows;                 /* fit: row indices of the batch */
    float *xs, *ts;                /* scaled input / target (ts == xs for an SAE); fit
                                 gathers the raw rows into them */
    float *xin;                    /* encoder input */
    float *pre;                    /* encoder scratch: the fused TopK encoder's tiles, or
                                 block x d_sae pre-activations (other activations, AuxK) */
    int64_t pre_floats;            /* room of pre */
    int32_t *idx;                  /* batch x k */
    float *val;
    float *g;          /* batch x d_out: reconstruction, then dL/dx_hat */
    double *row_sse;   /* batch */
    int32_t *counts;   /* threads x d_sae histograms / scatter cursors */
    int32_t *offsets;  /* d_sae + 1 */
    int32_t *fired;    /* d_sae: pairs per feature this step */
    int32_t *pair_row; /* the step's pairs, bucketed by feature */
    float *pair_z;
    int32_t *touched; /* features with gradient, ascending */
    int32_t *slot_of; /* d_sae: slot of a touched feature or -1 */
    int64_t max_touched;
    float *g_W_enc, *g_W_dec, *g_b_enc, *g_b_dec; /* compact gradient rows per slot */
    double *part;   /* SUBSAE__PARTS x SUBSAE__PART_STRIDE(d_out): partial
                                 sums per part, laid out as below */
    int64_t *split; /* SUBSAE__PARTS + 1: touched-list ranges per part */

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
    float *g_r_mag, *g_b_mag; /* max_touched: gated magnitude gradients per slot */
    double *extra;            /* SUBSAE__PARTS x 4: penalty and AuxK partial sums */
    double step_mse, step_penalty, step_aux; /* parts of the step's loss */
    /* Matryoshka: the output gradient holds, per row, one block of d_out
     * per prefix (g_levels of them; 1 for a plain model): block j is the
     * sum of the gradients of prefixes j and above, which is what a
     * feature first held by prefix j receives. step_prefix is the loss of
     * the prefixes but the last (step_mse is the whole model's). */
    int64_t g_levels;
    double *prefix_sse; /* batch */
    double step_prefix;
    /* AuxK */
    int64_t aux_k;      /* slots per row (0: AuxK off this step) */
    int64_t aux_cap;    /* room of aux_idx, aux_val, aux_pair_* */
    double aux_scale;   /* min(dead / k_aux, 1) */
    int32_t *dead_list; /* d_sae: dead features of the step, ascending */
    int64_t n_dead;
    float *aux_tmp;   /* threads x d_sae: a row's dead pre-activations */
    int32_t *aux_idx; /* batch x aux_k */
    float *aux_val;
    float *g_aux;          /* batch x d_out: AuxK output gradient (gated: the gate
                              path's reconstruction's output gradient) */
    double *aux_sse;       /* batch */
    int32_t *aux_offsets;  /* d_sae + 1 */
    int32_t *aux_fired;    /* d_sae */
    int32_t *aux_pair_row; /* batch x aux_k, bucketed */
    float *aux_pair_z;
    /* skip transcoder */
    float *skip_out; /* batch x d_out: the skip path's output, x s_in W_skip^T */
    float *g_W_skip; /* d_out x d_in: its gradient */
    /* bf16 encoder (trainer_bf16.c): the bf16 copy of W_enc, equal to
     * bf16(W_enc) row for row once valid (made whole when the workspace is
     * new, each row renewed when Adam writes it), the encoder input in
     * bf16, and each row's candidates before the fp32 rescoring. */
    uint16_t *W_enc_bf16; /* d_sae x d_in */
    bool bf16_valid;
    uint16_t *xin_bf16; /* batch x d_in */
    int64_t cand_slots; /* k + margin */
    int32_t *cand_idx;  /* batch x cand_slots */
    float *cand_val;
    int32_t *cand_offsets; /* d_sae + 1: the candidates bucketed by feature */
    int32_t *cand_order;   /* batch x cand_slots: their positions, by feature */
    int64_t cand_changed;  /* pairs of the step the rescoring changed */
    /* the blocked encoder at bf16 (trainer_bf16_dense.c): |W_enc row|_2,
     * which sizes the rescoring's margin, and per row the decisions the
     * fp32 rescoring changed */
    float *bf16_wnorm;         /* d_sae */
    int64_t *bf16_row_changed; /* batch */
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
        auxk_k, subspace_coefficients, precision;
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
    int64_t fit_end_step; /* step at which the running fit ends (cool-down); -1 */
    double last_loss;
    double last_loss_parts[3]; /* MSE, sparsity penalty, AuxK of the last step (NaN: none) */
    double last_lr;            /* learning rate of the last step (NaN: none) */
    char *metadata;            /* the caller's run metadata (compact JSON) or NULL */
    int64_t *last_fired;       /* d_sae: token count after the last step the feature fired */
    float *log_threshold;      /* JumpReLU: d_sae log-thresholds (the trained parameter;
                                  sae->threshold holds exp of it) and their Adam moments */
    float *m_log_threshold, *v_log_threshold;
    float *m_r_mag, *v_r_mag, *m_b_mag, *v_b_mag; /* gated: Adam moments of r_mag, b_mag */
    double batch_threshold; /* BatchTopK: running inference threshold (EMA) */
    /* the precision of the encoder's product in use (SUBSAE__FP32 or
     * SUBSAE__BF16, trainer_bf16.c): the option resolved at init, or the
     * checkpoint's */
    int precision_used;
    double last_disagreement; /* the last step's changed fraction (NaN: none) */
    double last_batch[3];     /* the last step's batch: MSE (raw), explained variance, L0 */
    struct subsae__window cur, prev;
    bool prev_valid;
    int64_t window_tokens; /* metrics window (epoch length); 0 = since init */
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

    /* data-parallel workers (trainer_collective.c, trainer_fit.c) */
    struct subsae__collective coll;
    int64_t loss_rows; /* rows the running step's loss is averaged over (the
                                  global batch); 0: the step's own rows */
    double *coll_buf;  /* the step's first exchange (see exchange_size) */
    int64_t coll_buf_size;
    int64_t coll_steps; /* steps exchanged since attached (statistics) */

    /* skip transcoder: the option and W_skip's Adam moments */
    int64_t skip;
    float *m_W_skip, *v_W_skip;
    /* Matryoshka prefixes asked for before init (the model keeps them
     * after), and the sparsity coefficient's warm-up (option). */
    int matryoshka_count;
    int64_t matryoshka[SUBSAE_MATRYOSHKA_MAX];
    int64_t coef_warmup_steps;
};

/* Features with gradient in the step (the touched list's length). */
static inline int64_t subsae__touched_count(const struct subsae__workspace *ws)
{
    return ws->split[SUBSAE__PARTS];
}

#endif
