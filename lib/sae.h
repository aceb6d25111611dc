/* Internals of subsae_sae, shared by sae.c (model, encode/decode, evaluate),
 * sae_io.c (save/load), trainer.c and checkpoint.c. */
#ifndef SUBSAE_SAE_H
#define SUBSAE_SAE_H

#include "internal.h"

#include <math.h>

struct subsae_sae {
    int64_t d_in, d_out, d_sae;
    int activation;           /* SUBSAE_ACT_* */
    int64_t k;                /* TopK / BatchTopK */
    int apply_b_dec_to_input; /* pre = (x - b_dec) W_enc^T + b_enc (d_in == d_out only) */
    int rank_by_decoder_norm; /* TopK ranks pre * |W_dec row| (lm-saes) */
    double input_scale, output_scale;
    int transcoder;   /* SUBSAE_SAE_TRANSCODER */
    char *metadata;   /* caller metadata: compact JSON object text, or NULL */
    float *W_enc;     /* d_sae x d_in, row-major */
    float *b_enc;     /* d_sae */
    float *W_dec;     /* d_sae x d_out, row-major */
    float *b_dec;     /* d_out */
    float *threshold; /* d_sae (JumpReLU, BatchTopK at inference) */
    float *r_mag;     /* d_sae, gated only (else NULL): magnitude rows W_enc exp(r_mag) */
    float *b_mag;     /* d_sae, gated only (else NULL): magnitude bias (b_enc gates) */
    /* SUBSAE_SAE_PRECISION (sae_precision.c): FP32 holds W_enc; BF16 holds
     * W_enc_bf16 (same layout) and W_enc is NULL. */
    int precision;
    uint16_t *W_enc_bf16;
    int skip;      /* SUBSAE_SAE_SKIP: a skip transcoder */
    float *W_skip; /* skip: d_out x d_in, row-major (SAELens' layout), from the scaled
                         input to the scaled target: the output adds (x s_in) W_skip^T
                         before the division by s_out; NULL without skip */
    /* Matryoshka: the nested prefixes' widths, ascending, the last d_sae
     * (matryoshka.h); matryoshka_count 0 for a plain model. */
    int matryoshka_count;
    int64_t matryoshka[SUBSAE_MATRYOSHKA_MAX];
};

/* The gated activation of one feature from its raw product p = xin . W_enc
 * row (no bias): the gate opens when p + b_enc > 0, the value is then
 * max(exp(r_mag) p + b_mag, 0), else 0. Training and inference share it,
 * so both give the same bits. */
static inline float subsae__gated_value(const subsae_sae *sae, int64_t f, float p)
{
    if (!(p + sae->b_enc[f] > 0.0f))
        return 0.0f;
    const float v = expf(sae->r_mag[f]) * p + sae->b_mag[f];
    return v > 0.0f ? v : 0.0f;
}

/* Give a model a skip path (W_skip at zero). */
int subsae__sae_enable_skip(subsae_sae *sae);

/* Allocate a model with zero weights and default options. */
int subsae__sae_new(int64_t d_in, int64_t d_out, int64_t d_sae, int activation,
                    subsae_sae **out);

/* Slots per row that an encode of this model can fill (k for TopK, d_sae
 * for the threshold activations). */
int64_t subsae__sae_slots(const subsae_sae *sae);

/* Rows per block of the blocked encoder (encode.c) for d_sae features (at most
 * n_rows): a block of pre-activations stays a few MB so that the selection
 * reads it from cache right after the GEMM wrote it. */
int64_t subsae__encode_block_rows(int64_t d_sae, int64_t n_rows);

/* Encoder input of n raw rows: xin = x * in_scale - b_dec (when the model
 * subtracts b_dec) or x * in_scale. */
void subsae__sae_encoder_input(const subsae_sae *sae, const float *x, int64_t x_stride,
                               int64_t n, double in_scale, float *xin, int64_t xin_stride,
                               int threads);

/* Sparse codes of n rows from their encoder input xin (see above): per row
 * `slots` (feature, value) pairs with value > 0 in descending order of
 * rank, unused slots -1 / 0. `pre` is scratch of
 * subsae__encode_scratch_floats(sae, n, threads, rank_weight != NULL)
 * floats; `rank_weight` (d_sae, may be
 * NULL) multiplies the pre-activations for ranking only. `seconds` (may be
 * NULL) gets the wall time of the GEMMs added to seconds[0] and of the
 * selection to seconds[1]. */
void subsae__sae_encode_pre(const subsae_sae *sae, const float *xin, int64_t xin_stride,
                            int64_t n, int64_t slots, int32_t *indices, float *values,
                            float *pre, const float *rank_weight, int threads, double *seconds);

/* Whether subsae__sae_encode_pre takes the fused TopK path (encode.c):
 * TopK ranked by value (no rank weight). */
bool subsae__encode_fused(const subsae_sae *sae, const float *rank_weight);

/* Floats of the `pre` scratch that subsae__sae_encode_pre needs for up to
 * n rows on `threads` threads (`ranked`: a rank weight will be passed). */
int64_t subsae__encode_scratch_floats(const subsae_sae *sae, int64_t n, int threads,
                                      bool ranked);

/* The small-batch TopK encoder (encode.c): whether it takes n rows (TopK
 * without ranking weights, 1 to 64 rows), the floats of its scratch for up
 * to n rows (at most 64 counted), and the encoder. Arguments as
 * subsae__encode_topk_fused, and the same codes, bit for bit, for every
 * thread count; it spreads the reading of W_enc over the threads where the
 * fused encoder gives a block of up to 64 rows to one thread. The public
 * encoders take it; the trainer keeps the fused encoder. */
bool subsae__encode_small(const subsae_sae *sae, const float *rank_weight, int64_t n);
int64_t subsae__encode_small_scratch_floats(const subsae_sae *sae, int64_t n, int threads);
void subsae__encode_topk_small(const subsae_sae *sae, const float *xin, int64_t xin_stride,
                               int64_t n, int64_t slots, int32_t *indices, float *values,
                               float *scratch, int threads);

/* The operands of an encoder's product at one precision: the rows (float,
 * or bf16 as uint16_t, `x_stride` elements apart), W_enc at the same
 * precision (d_sae rows of d_in), and how many entries to select per row
 * (at most the slots). */
struct subsae__encoder_in {
    int precision; /* SUBSAE__FP32 or SUBSAE__BF16 (encoder_gemm.h) */
    const void *x;
    int64_t x_stride;
    const void *W;
    int64_t k;
};

/* subsae__sae_encode_pre on given operands (the public encoders pass a
 * bf16 model's bf16 operands). */
void subsae__sae_encode_pre_in(const subsae_sae *sae, const struct subsae__encoder_in *in,
                               int64_t n, int64_t slots, int32_t *indices, float *values,
                               float *pre, const float *rank_weight, int threads,
                               double *seconds);

/* The fused and small-batch TopK encoders on given operands; the plain
 * forms below are these on the model's fp32 W_enc with its k. */
void subsae__encode_topk_fused_in(const subsae_sae *sae, const struct subsae__encoder_in *in,
                                  int64_t n, int64_t slots, int32_t *indices, float *values,
                                  float *scratch, int threads, double *seconds);
void subsae__encode_topk_small_in(const subsae_sae *sae, const struct subsae__encoder_in *in,
                                  int64_t n, int64_t slots, int32_t *indices, float *values,
                                  float *scratch, int threads);

/* The fused TopK encoder (encode.c): per block of rows and chunk of
 * features one single-threaded GEMM tile, selected from cache at once.
 * Arguments as subsae__sae_encode_pre; `scratch` holds
 * subsae__encode_scratch_floats(sae, n, threads, false) floats. */
void subsae__encode_topk_fused(const subsae_sae *sae, const float *xin, int64_t xin_stride,
                               int64_t n, int64_t slots, int32_t *indices, float *values,
                               float *scratch, int threads, double *seconds);

/* x_hat = sum_j values[j] W_dec[indices[j]] + b_dec per row, in the
 * model's (scaled) target space; index -1 slots are skipped. */
void subsae__sae_decode_rows(const subsae_sae *sae, const int32_t *indices, const float *values,
                             int64_t n, int64_t slots, float *out, int64_t out_stride,
                             int threads);

/* ---- precision (sae_precision.c) ---- */

/* SUBSAE_SAE_PRECISION: AUTO resolved, BF16 refused without native bf16
 * (`fn` named), then W_enc converted to the new precision. On failure the
 * model is unchanged. */
int subsae__sae_set_precision(subsae_sae *sae, int64_t precision, const char *fn);

/* The first of n floats that is not finite once rounded to bf16, or n. */
int64_t subsae__bf16_first_overflow(const float *x, int64_t n);

/* A shallow copy of `sae` that is an FP32 model: when the model holds a
 * bf16 W_enc, *owned gets a widened copy (subsae__free it) that
 * view->W_enc points to, else *owned is NULL and view->W_enc is the
 * model's. Errors: SUBSAE_E_NOMEM (`what` named). */
int subsae__sae_float_view(const subsae_sae *sae, subsae_sae *view, float **owned,
                           const char *what);

/* Norms of the decoder rows (d_sae floats). */
void subsae__sae_decoder_norms(const subsae_sae *sae, float *norms, int threads);

/* The caller metadata `json` (subsae_sae_set_metadata's rules) as compact
 * JSON text into *out (subsae__free it; NULL for none). Errors name `fn`. */
int subsae__metadata_normalize(const char *fn, const char *json, char **out);

/* Whether `key` is a member of cfg.json the library writes itself. */
bool subsae__sae_own_member(const char *key);

/* A JSON object as compact text (subsae__free it); NULL when the object
 * is empty or out of memory (check json_object_size to tell them apart). */
struct json_t;
char *subsae__json_compact(const struct json_t *object);

/* Replace a model's metadata by a copy of `text` (compact JSON or NULL)
 * (sae.c, which clones; sae_io.c parses and prints metadata). */
int subsae__sae_replace_metadata(subsae_sae *sae, const char *text);

/* Check a model's parameters are finite; message names the parameter. */
int subsae__sae_check_finite(const subsae_sae *sae, const char *what);

/* The parameters of `sae` with its scales folded in (subsae_sae_fold_scales),
 * written to the arrays of `out`: its b_enc, b_dec and threshold (d_sae,
 * d_out, d_sae floats), and W_enc and W_dec unless NULL (the caller then
 * folds them itself). `out` may be `sae` (in place). Sets out's scales to 1
 * and its apply_b_dec_to_input; other fields are the caller's. */
void subsae__sae_fold(const subsae_sae *sae, subsae_sae *out);

/* SUBSAE_E_NONFINITE (naming `what`, the parameter and the element) when
 * subsae__sae_fold would make a parameter that is not finite in float (a
 * weight beyond FLT_MAX / input_scale, ...); the fold's own arithmetic,
 * nothing written. */
int subsae__sae_fold_check(const subsae_sae *sae, const char *what);

#endif
