/* The trainer's option table: data only (see options.h), read by the
 * trainer's setters and defaults (trainer_state.c) and published by options.c. */
#include "options.h"
#include "trainer_types.h"

#include <stddef.h>

/* The trainer's options: bounds, defaults and descriptions (published by
 * subsae_option_*, see options.h); subsae_trainer_create sets every field
 * to its default from here. */
#define TRAIN_INT(opt, name, lo, hi, def, flags, field, doc)                                  \
    SUBSAE__INT_OPTION(opt, name, lo, hi, def, flags, offsetof(struct subsae_trainer, field), \
                       doc)
#define TRAIN_DOUBLE(opt, name, lo, hi, def, flags, field, doc) \
    SUBSAE__DOUBLE_OPTION(opt, name, lo, hi, def, flags,        \
                          offsetof(struct subsae_trainer, field), doc)
enum {
    STRUCTURAL = SUBSAE_OPTION_STRUCTURAL,
    AUTO = SUBSAE_OPTION_ZERO_MEANS_AUTO,
    CHOICE = SUBSAE_OPTION_CHOICE
};
static const struct subsae__option trainer_options[] = {
    TRAIN_INT(SUBSAE_TRAIN_FEATURES, "features", 1, INT32_MAX, 16384, STRUCTURAL, features,
              "dictionary size d_sae"),
    TRAIN_INT(SUBSAE_TRAIN_ACTIVATION, "activation", 0, 4, SUBSAE_ACT_TOPK, STRUCTURAL | CHOICE,
              activation, "SUBSAE_ACT_*: topk, batchtopk, jumprelu, relu or gated"),
    TRAIN_INT(
        SUBSAE_TRAIN_K, "k", 1, INT32_MAX, 32, STRUCTURAL, k,
        "active features per token (TopK, BatchTopK); the initial L0 of JumpReLU and ReLU"),
    TRAIN_DOUBLE(SUBSAE_TRAIN_LR, "lr", 0.0, 1e6, 0.0, AUTO, lr,
                 "Adam learning rate; 0 = 2e-4 / sqrt(d_sae / 16384)"),
    TRAIN_INT(SUBSAE_TRAIN_BATCH, "batch", 1, SUBSAE__MAX_BATCH, 4096, 0, batch,
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
    TRAIN_DOUBLE(SUBSAE_TRAIN_ADAM_BETA1, "adam_beta1", 0.0, 1.0, 0.9,
                 SUBSAE_OPTION_MAX_EXCLUSIVE, beta1, "Adam beta1"),
    TRAIN_DOUBLE(SUBSAE_TRAIN_ADAM_BETA2, "adam_beta2", 0.0, 1.0, 0.999,
                 SUBSAE_OPTION_MAX_EXCLUSIVE, beta2, "Adam beta2"),
    TRAIN_DOUBLE(SUBSAE_TRAIN_ADAM_EPS, "adam_eps", 0.0, 1.0, 1e-8, SUBSAE_OPTION_MIN_EXCLUSIVE,
                 eps, "Adam epsilon"),
    TRAIN_DOUBLE(SUBSAE_TRAIN_AUXK_COEF, "auxk_coef", 0.0, 1e6, 0.0, 0, auxk_coef,
                 "weight of the AuxK revival loss; 0 = off, 1/32 typical"),
    TRAIN_INT(SUBSAE_TRAIN_AUXK_K, "auxk_k", 0, INT32_MAX, 0, AUTO, auxk_k,
              "dead features AuxK uses per token; 0 = d_out / 2"),
    TRAIN_DOUBLE(SUBSAE_TRAIN_L1_COEF, "l1_coef", 0.0, 1e6, 2.0, 0, l1_coef,
                 "ReLU: weight of the L1 penalty sum z_f |W_dec row f|; gated: sum "
                 "relu(pre_gate_f) |W_dec row f|"),
    TRAIN_DOUBLE(SUBSAE_TRAIN_L0_COEF, "l0_coef", 0.0, 1e6, 1.0, 0, l0_coef,
                 "JumpReLU: weight of the L0 penalty"),
    TRAIN_DOUBLE(SUBSAE_TRAIN_JUMPRELU_BANDWIDTH, "jumprelu_bandwidth", 0.0, 1e6, 0.001,
                 SUBSAE_OPTION_MIN_EXCLUSIVE, bandwidth,
                 "JumpReLU: width of the straight-through estimator's kernel"),
    TRAIN_DOUBLE(SUBSAE_TRAIN_INIT_THRESHOLD, "init_threshold", 0.0, 1e6, 0.0,
                 STRUCTURAL | AUTO, init_threshold,
                 "initial JumpReLU threshold (ReLU: minus the initial encoder bias); 0 = the "
                 "batch-top-k cut of the init sample (initial L0 about k)"),
    TRAIN_INT(SUBSAE_TRAIN_SUBSPACE_COEFFICIENTS, "subspace_coefficients", 0, 1,
              SUBSAE_COEF_UNIFORM, STRUCTURAL | CHOICE, subspace_coefficients,
              "SUBSAE_COEF_*: uniform or gaussian coefficients of active-subspace directions"),
    TRAIN_INT(SUBSAE_TRAIN_PRECISION, "precision", 0, 2, SUBSAE_PRECISION_FP32,
              STRUCTURAL | CHOICE, precision,
              "SUBSAE_PRECISION_*: fp32, bf16 or auto: the encoder's product on bf16 copies "
              "(every activation and AuxK, native bf16 CPUs; what passes rescored in fp32)"),
    TRAIN_INT(SUBSAE_TRAIN_COEF_WARMUP_STEPS, "coef_warmup_steps", 0, INT64_MAX, 0, 0,
              coef_warmup_steps,
              "steps over which the sparsity coefficient (l1_coef, l0_coef) ramps from 0"),
    TRAIN_INT(SUBSAE_TRAIN_SKIP, "skip", 0, 1, 0, STRUCTURAL, skip,
              "1 = skip transcoder: the output adds x W_skip^T, W_skip trained from the "
              "least-squares map of the init sample"),
};

const struct subsae__option *subsae__trainer_option_table(int64_t *n)
{
    *n = (int64_t)(sizeof trainer_options / sizeof trainer_options[0]);
    return trainer_options;
}
