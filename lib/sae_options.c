/* The option table of subsae_sae: data only, so that options.c (which
 * publishes it) and sae.c (whose setters check against it) both depend on
 * it without depending on each other. */
#include "options.h"

#include <float.h>

/* The model's options (published by subsae_option_*). */
enum { RO = SUBSAE_OPTION_READ_ONLY };
static const struct subsae__option sae_options[] = {
    SUBSAE__INT_OPTION(SUBSAE_SAE_D_IN, "d_in", 1, INT32_MAX, 0, RO, 0, "input width"),
    SUBSAE__INT_OPTION(SUBSAE_SAE_D_OUT, "d_out", 1, INT32_MAX, 0, RO, 0,
                       "output width (d_in for an SAE)"),
    SUBSAE__INT_OPTION(SUBSAE_SAE_D_SAE, "d_sae", 1, INT32_MAX, 0, RO, 0, "features"),
    SUBSAE__INT_OPTION(SUBSAE_SAE_ACTIVATION, "activation", 0, 4, 0, RO | SUBSAE_OPTION_CHOICE,
                       0, "SUBSAE_ACT_*: topk, batchtopk, jumprelu, relu or gated"),
    SUBSAE__INT_OPTION(SUBSAE_SAE_K, "k", 1, INT32_MAX, 32, 0, 0,
                       "TopK / BatchTopK k, at most d_sae (a new model: min(32, d_sae))"),
    SUBSAE__INT_OPTION(SUBSAE_SAE_APPLY_B_DEC_TO_INPUT, "apply_b_dec_to_input", 0, 1, 1, 0, 0,
                       "1 = the encoder sees x - b_dec (d_in == d_out only; a new model: 1 "
                       "when d_in == d_out)"),
    SUBSAE__INT_OPTION(SUBSAE_SAE_RANK_BY_DECODER_NORM, "rank_by_decoder_norm", 0, 1, 0, 0, 0,
                       "1 = the activation sees pre * |W_dec row| (lm-saes)"),
    /* Scales are floats of the model: positive and finite in float. */
    SUBSAE__DOUBLE_OPTION(SUBSAE_SAE_INPUT_SCALE, "input_scale", FLT_TRUE_MIN, FLT_MAX, 1.0, 0,
                          0, "factor applied to raw inputs (folded into the weights on save)"),
    SUBSAE__DOUBLE_OPTION(SUBSAE_SAE_OUTPUT_SCALE, "output_scale", FLT_TRUE_MIN, FLT_MAX, 1.0,
                          0, 0, "factor of the target the decoder reconstructs"),
    SUBSAE__INT_OPTION(SUBSAE_SAE_TRANSCODER, "transcoder", 0, 1, 0, 0, 0,
                       "1 = a transcoder: its target is another site than its input (always 1 "
                       "when d_in != d_out)"),
    SUBSAE__INT_OPTION(SUBSAE_SAE_PRECISION, "precision", 0, 2, 0, SUBSAE_OPTION_CHOICE, 0,
                       "SUBSAE_PRECISION_*: fp32, bf16 or auto, the encoder's product (bf16: "
                       "the model keeps only a bf16 W_enc; auto: bf16 where the CPU has it; "
                       "reads back fp32 or bf16)"),
    SUBSAE__INT_OPTION(SUBSAE_SAE_SKIP, "skip", 0, 1, 0, RO, 0,
                       "1 = a skip transcoder: the output adds x W_skip^T (d_out x d_in)"),
};

const struct subsae__option *subsae__sae_option_table(int64_t *n)
{
    *n = (int64_t)(sizeof sae_options / sizeof sae_options[0]);
    return sae_options;
}
