/* subsae_sae: the sparse dictionary model. Options and parameters, scale
 * folding, dense and sparse encode/decode and evaluation on a buffer.
 * TopK encoding fuses each GEMM tile with the selection (encode.c); the
 * other activations are blocked: one product (encoder_gemm.c) per block of rows writes
 * the pre-activations, then every row's selection runs in parallel while
 * the block is still in cache. */
#include "sae.h"

#include "buffer.h"
#include "encoder_gemm.h"
#include "kernels.h"
#include "matryoshka.h"
#include "options.h"
#include "skip.h"

#include <cblas.h>
#include <float.h>
#include <math.h>
#include <omp.h>
#include <string.h>

/* ---- creation ---------------------------------------------------------- */

const char *subsae_activation_name(int activation)
{
    switch (activation) {
    case SUBSAE_ACT_TOPK: return "topk";
    case SUBSAE_ACT_BATCHTOPK: return "batchtopk";
    case SUBSAE_ACT_JUMPRELU: return "jumprelu";
    case SUBSAE_ACT_RELU: return "relu";
    case SUBSAE_ACT_GATED: return "gated";
    default: return "unknown";
    }
}

static bool valid_activation(int activation)
{
    return activation >= SUBSAE_ACT_TOPK && activation <= SUBSAE_ACT_GATED;
}

int subsae__sae_new(int64_t d_in, int64_t d_out, int64_t d_sae, int activation,
                    subsae_sae **out)
{
    size_t enc, dec;
    if (!subsae__mul_size((size_t)d_sae, (size_t)d_in * sizeof(float), &enc) ||
        !subsae__mul_size((size_t)d_sae, (size_t)d_out * sizeof(float), &dec))
        return subsae__fail(SUBSAE_E_RANGE, SUBSAE_REASON_SHAPE_OVERFLOW,
                            "model of %lld features x (%lld, %lld) dims overflows memory size",
                            (long long)d_sae, (long long)d_in, (long long)d_out);
    subsae_sae *sae = subsae__calloc(1, sizeof *sae);
    if (!sae)
        return subsae__fail_nomem("model", sizeof *sae);
    sae->d_in = d_in;
    sae->d_out = d_out;
    sae->d_sae = d_sae;
    sae->activation = activation;
    sae->k = d_sae < 32 ? d_sae : 32;
    sae->apply_b_dec_to_input = d_in == d_out;
    sae->transcoder = d_in != d_out;
    sae->input_scale = sae->output_scale = 1.0;
    sae->W_enc = subsae__calloc(1, enc);
    sae->W_dec = subsae__calloc(1, dec);
    sae->b_enc = subsae__calloc((size_t)d_sae, sizeof(float));
    sae->b_dec = subsae__calloc((size_t)d_out, sizeof(float));
    sae->threshold = subsae__calloc((size_t)d_sae, sizeof(float));
    const bool gated = activation == SUBSAE_ACT_GATED;
    if (gated) {
        sae->r_mag = subsae__calloc((size_t)d_sae, sizeof(float));
        sae->b_mag = subsae__calloc((size_t)d_sae, sizeof(float));
    }
    if (!sae->W_enc || !sae->W_dec || !sae->b_enc || !sae->b_dec || !sae->threshold ||
        (gated && (!sae->r_mag || !sae->b_mag))) {
        subsae_sae_free(sae);
        return subsae__fail_nomem("model weights", enc + dec);
    }
    *out = sae;
    return SUBSAE_OK;
}

int subsae__sae_enable_skip(subsae_sae *sae)
{
    size_t bytes;
    if (!subsae__mul_size((size_t)sae->d_out, (size_t)sae->d_in * sizeof(float), &bytes))
        return subsae__fail(SUBSAE_E_RANGE, SUBSAE_REASON_SHAPE_OVERFLOW,
                            "skip path of %lld x %lld overflows memory size",
                            (long long)sae->d_out, (long long)sae->d_in);
    float *w = subsae__calloc(1, bytes);
    if (!w)
        return subsae__fail_nomem("W_skip", bytes);
    subsae__free(sae->W_skip);
    sae->W_skip = w;
    sae->skip = 1;
    return SUBSAE_OK;
}

int subsae_sae_create(int64_t d_in, int64_t d_out, int64_t d_sae, int activation,
                      subsae_sae **out)
{
    static const char *fn = "subsae_sae_create";
    SUBSAE__NOT_NULL(fn, out);
    if (d_in < 1 || d_in > INT32_MAX || d_out < 1 || d_out > INT32_MAX || d_sae < 1 ||
        d_sae > INT32_MAX)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                            "%s: d_in %lld, d_out %lld, d_sae %lld must be in [1, 2^31)", fn,
                            (long long)d_in, (long long)d_out, (long long)d_sae);
    if (!valid_activation(activation))
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                            "%s: unknown activation %d", fn, activation);
    return subsae__sae_new(d_in, d_out, d_sae, activation, out);
}

void subsae_sae_free(subsae_sae *sae)
{
    if (!sae)
        return;
    subsae__free(sae->W_enc);
    subsae__free(sae->W_enc_bf16);
    subsae__free(sae->W_dec);
    subsae__free(sae->b_enc);
    subsae__free(sae->b_dec);
    subsae__free(sae->threshold);
    subsae__free(sae->r_mag);
    subsae__free(sae->b_mag);
    subsae__free(sae->W_skip);
    subsae__free(sae->metadata);
    subsae__free(sae);
}

/* The copy holds W_enc at the model's precision (a bf16 copy, not a
 * float one, of a bf16 model). */
static int clone_encoder(const subsae_sae *sae, subsae_sae *copy)
{
    const size_t n = (size_t)sae->d_sae * (size_t)sae->d_in;
    if (sae->precision != SUBSAE__BF16) {
        memcpy(copy->W_enc, sae->W_enc, n * sizeof(float));
        return SUBSAE_OK;
    }
    uint16_t *w = subsae__malloc(n * sizeof *w);
    if (!w)
        return subsae__fail_nomem("bf16 W_enc", n * sizeof *w);
    memcpy(w, sae->W_enc_bf16, n * sizeof *w);
    subsae__free(copy->W_enc);
    copy->W_enc = NULL;
    copy->W_enc_bf16 = w;
    copy->precision = SUBSAE__BF16;
    return SUBSAE_OK;
}

int subsae_sae_clone(const subsae_sae *sae, subsae_sae **out)
{
    SUBSAE__NOT_NULL("subsae_sae_clone", sae);
    SUBSAE__NOT_NULL("subsae_sae_clone", out);
    subsae_sae *copy;
    int rc = subsae__sae_new(sae->d_in, sae->d_out, sae->d_sae, sae->activation, &copy);
    if (rc)
        return rc;
    copy->k = sae->k;
    copy->apply_b_dec_to_input = sae->apply_b_dec_to_input;
    copy->rank_by_decoder_norm = sae->rank_by_decoder_norm;
    copy->input_scale = sae->input_scale;
    copy->output_scale = sae->output_scale;
    copy->transcoder = sae->transcoder;
    subsae__matryoshka_copy(copy, sae);
    rc = subsae__sae_replace_metadata(copy, sae->metadata);
    if (!rc && sae->skip) {
        rc = subsae__sae_enable_skip(copy);
        if (!rc)
            memcpy(copy->W_skip, sae->W_skip, (size_t)(sae->d_out * sae->d_in) * sizeof(float));
    }
    if (rc) {
        subsae_sae_free(copy);
        return rc;
    }
    size_t d_sae = (size_t)sae->d_sae;
    rc = clone_encoder(sae, copy);
    if (rc) {
        subsae_sae_free(copy);
        return rc;
    }
    memcpy(copy->W_dec, sae->W_dec, d_sae * (size_t)sae->d_out * sizeof(float));
    memcpy(copy->b_enc, sae->b_enc, d_sae * sizeof(float));
    memcpy(copy->b_dec, sae->b_dec, (size_t)sae->d_out * sizeof(float));
    memcpy(copy->threshold, sae->threshold, d_sae * sizeof(float));
    if (sae->r_mag) {
        memcpy(copy->r_mag, sae->r_mag, d_sae * sizeof(float));
        memcpy(copy->b_mag, sae->b_mag, d_sae * sizeof(float));
    }
    *out = copy;
    return SUBSAE_OK;
}

int subsae__sae_replace_metadata(subsae_sae *sae, const char *text)
{
    char *copy = NULL;
    if (text && !(copy = subsae__strdup(text)))
        return subsae__fail_nomem("metadata", strlen(text) + 1);
    subsae__free(sae->metadata);
    sae->metadata = copy;
    return SUBSAE_OK;
}

/* ---- options ------------------------------------------------------------ */

int subsae_sae_set_int(subsae_sae *sae, int option, int64_t value)
{
    static const char *fn = "subsae_sae_set_int";
    int rc;
    if (!subsae__option_set_int(fn, SUBSAE_OBJECT_SAE, sae, option, value,
                                "subsae_sae_set_double", &rc))
        return rc;
    switch (option) {
    case SUBSAE_SAE_K:
        if (value > sae->d_sae)
            return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                                "%s: k %lld must be in [1, d_sae = %lld]", fn, (long long)value,
                                (long long)sae->d_sae);
        sae->k = value;
        return SUBSAE_OK;
    case SUBSAE_SAE_APPLY_B_DEC_TO_INPUT:
        if (value && sae->d_in != sae->d_out)
            return subsae__fail(
                SUBSAE_E_INVALID, SUBSAE_REASON_DIM_MISMATCH,
                "%s: cannot subtract b_dec (d_out %lld) from inputs of d_in %lld", fn,
                (long long)sae->d_out, (long long)sae->d_in);
        sae->apply_b_dec_to_input = (int)value;
        return SUBSAE_OK;
    case SUBSAE_SAE_TRANSCODER:
        if (!value && sae->d_in != sae->d_out)
            return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_DIM_MISMATCH,
                                "%s: a model from d_in %lld to d_out %lld is a transcoder", fn,
                                (long long)sae->d_in, (long long)sae->d_out);
        sae->transcoder = (int)value;
        return SUBSAE_OK;
    case SUBSAE_SAE_PRECISION: return subsae__sae_set_precision(sae, value, fn);
    default: /* SUBSAE_SAE_RANK_BY_DECODER_NORM */
        sae->rank_by_decoder_norm = (int)value;
        return SUBSAE_OK;
    }
}

int subsae_sae_get_int(const subsae_sae *sae, int option, int64_t *value)
{
    int rc;
    if (!subsae__option_get("subsae_sae_get_int", SUBSAE_OBJECT_SAE, sae, value, option,
                            SUBSAE_OPTION_INT, "subsae_sae_get_double", &rc))
        return rc;
    switch (option) {
    case SUBSAE_SAE_D_IN: *value = sae->d_in; break;
    case SUBSAE_SAE_D_OUT: *value = sae->d_out; break;
    case SUBSAE_SAE_D_SAE: *value = sae->d_sae; break;
    case SUBSAE_SAE_ACTIVATION: *value = sae->activation; break;
    case SUBSAE_SAE_K: *value = sae->k; break;
    case SUBSAE_SAE_APPLY_B_DEC_TO_INPUT: *value = sae->apply_b_dec_to_input; break;
    case SUBSAE_SAE_TRANSCODER: *value = sae->transcoder; break;
    case SUBSAE_SAE_PRECISION: *value = sae->precision; break;
    case SUBSAE_SAE_SKIP: *value = sae->skip; break;
    default: *value = sae->rank_by_decoder_norm; break; /* SUBSAE_SAE_RANK_BY_DECODER_NORM */
    }
    return SUBSAE_OK;
}

int subsae_sae_set_double(subsae_sae *sae, int option, double value)
{
    int rc;
    if (!subsae__option_set_double("subsae_sae_set_double", SUBSAE_OBJECT_SAE, sae, option,
                                   value, "subsae_sae_set_int", &rc))
        return rc;
    if (option == SUBSAE_SAE_INPUT_SCALE)
        sae->input_scale = value;
    else
        sae->output_scale = value;
    return SUBSAE_OK;
}

int subsae_sae_get_double(const subsae_sae *sae, int option, double *value)
{
    int rc;
    if (subsae__option_get("subsae_sae_get_double", SUBSAE_OBJECT_SAE, sae, value, option,
                           SUBSAE_OPTION_DOUBLE, "subsae_sae_get_int", &rc))
        *value = option == SUBSAE_SAE_INPUT_SCALE ? sae->input_scale : sae->output_scale;
    return rc;
}

/* ---- parameters ---------------------------------------------------------- */

static float *param_data(const subsae_sae *sae, int param, int64_t *count)
{
    switch (param) {
    case SUBSAE_PARAM_W_ENC: *count = sae->d_sae * sae->d_in; return sae->W_enc;
    case SUBSAE_PARAM_B_ENC: *count = sae->d_sae; return sae->b_enc;
    case SUBSAE_PARAM_W_DEC: *count = sae->d_sae * sae->d_out; return sae->W_dec;
    case SUBSAE_PARAM_B_DEC: *count = sae->d_out; return sae->b_dec;
    case SUBSAE_PARAM_THRESHOLD: *count = sae->d_sae; return sae->threshold;
    case SUBSAE_PARAM_R_MAG: *count = sae->r_mag ? sae->d_sae : -1; return sae->r_mag;
    case SUBSAE_PARAM_B_MAG: *count = sae->b_mag ? sae->d_sae : -1; return sae->b_mag;
    default: *count = -1; return NULL;
    }
}

static const char *param_name(int param)
{
    static const char *names[] = {"W_enc",     "b_enc", "W_dec", "b_dec",
                                  "threshold", "r_mag", "b_mag"};
    return param >= 0 && param <= SUBSAE_PARAM_B_MAG ? names[param] : "unknown";
}

int64_t subsae_sae_param_size(const subsae_sae *sae, int param)
{
    if (!sae)
        return -1;
    int64_t count;
    param_data(sae, param, &count);
    return count;
}

/* `where` is NULL for the W_enc of a bf16 model (W_enc_bf16 holds it). */
static int check_param(const char *fn, const subsae_sae *sae, int param, const void *data,
                       int64_t count, float **where)
{
    SUBSAE__NOT_NULL(fn, sae);
    SUBSAE__NOT_NULL(fn, data);
    int64_t expected;
    *where = param_data(sae, param, &expected);
    if (!*where && (param == SUBSAE_PARAM_R_MAG || param == SUBSAE_PARAM_B_MAG))
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                            "%s: %s belongs to gated models only", fn, param_name(param));
    if (expected < 0)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                            "%s: unknown parameter %d", fn, param);
    if (count != expected)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_SIZE_MISMATCH,
                            "%s: %s has %lld values, count is %lld", fn, param_name(param),
                            (long long)expected, (long long)count);
    return SUBSAE_OK;
}

int subsae_sae_get_param(const subsae_sae *sae, int param, float *out, int64_t count)
{
    float *where;
    int rc = check_param("subsae_sae_get_param", sae, param, out, count, &where);
    if (rc)
        return rc;
    if (where)
        memcpy(out, where, (size_t)count * sizeof *out);
    else
        subsae__f32_from_bf16(out, sae->W_enc_bf16, count);
    return SUBSAE_OK;
}

int subsae_sae_set_param(subsae_sae *sae, int param, const float *in, int64_t count)
{
    static const char *fn = "subsae_sae_set_param";
    float *where;
    int rc = check_param(fn, sae, param, in, count, &where);
    if (rc)
        return rc;
    int64_t bad = subsae__find_nonfinite(in, count);
    if (bad < count)
        return subsae__fail(SUBSAE_E_NONFINITE, SUBSAE_REASON_NONFINITE_INPUT,
                            "%s: %s[%lld] is %g", fn, param_name(param), (long long)bad,
                            (double)in[bad]);
    if (where) {
        memcpy(where, in, (size_t)count * sizeof *in);
        return SUBSAE_OK;
    }
    bad = subsae__bf16_first_overflow(in, count);
    if (bad < count)
        return subsae__fail(SUBSAE_E_NONFINITE, SUBSAE_REASON_NONFINITE_INPUT,
                            "%s: W_enc[%lld] = %g is beyond the range of the model's bf16 "
                            "W_enc",
                            fn, (long long)bad, (double)in[bad]);
    subsae__bf16_round(sae->W_enc_bf16, in, count);
    return SUBSAE_OK;
}

int subsae__sae_check_finite(const subsae_sae *sae, const char *what)
{
    for (int p = SUBSAE_PARAM_W_ENC; p <= SUBSAE_PARAM_B_MAG; p++) {
        int64_t count;
        const float *data = param_data(sae, p, &count);
        if (!data)    /* a gated model's tensor in another model, or a bf16 W_enc (whose */
            continue; /* every way in refuses what is not finite) */
        int64_t bad = subsae__find_nonfinite(data, count);
        if (bad < count)
            return subsae__fail(SUBSAE_E_NONFINITE, SUBSAE_REASON_NONFINITE_INPUT,
                                "%s: %s[%lld] is %g", what, param_name(p), (long long)bad,
                                (double)data[bad]);
    }
    const int64_t n_skip = sae->skip ? sae->d_out * sae->d_in : 0;
    int64_t bad = sae->skip ? subsae__find_nonfinite(sae->W_skip, n_skip) : 0;
    if (bad < n_skip)
        return subsae__fail(SUBSAE_E_NONFINITE, SUBSAE_REASON_NONFINITE_INPUT,
                            "%s: W_skip[%lld] is %g", what, (long long)bad,
                            (double)sae->W_skip[bad]);
    return SUBSAE_OK;
}

/* The fold, one value at a time (subsae__sae_fold stores it,
 * subsae__sae_fold_check only checks it). pre = (s_in x - b_dec) W_enc^T +
 * b_enc. With equal scales this is (x - b_dec / s) (s W_enc)^T + b_enc;
 * otherwise the b_dec term moves into b_enc (computed with the unscaled
 * W_enc) and the model stops subtracting b_dec. */
static bool fold_moves_b_dec(const subsae_sae *sae)
{
    return sae->apply_b_dec_to_input && sae->input_scale != sae->output_scale;
}

static double folded_b_enc(const subsae_sae *sae, int64_t f)
{
    double b = sae->b_enc[f];
    if (fold_moves_b_dec(sae))
        b -= subsae__dot(sae->W_enc + f * sae->d_in, sae->b_dec, sae->d_in);
    return b;
}

/* A gated model's magnitude path sees the same input: when the fold stops
 * subtracting b_dec, exp(r_mag) times the b_dec term moves into b_mag. */
static double folded_b_mag(const subsae_sae *sae, int64_t f)
{
    double b = sae->b_mag[f];
    if (fold_moves_b_dec(sae))
        b -= (double)expf(sae->r_mag[f]) *
             subsae__dot(sae->W_enc + f * sae->d_in, sae->b_dec, sae->d_in);
    return b;
}

/* W_dec, b_dec and, for a threshold compared with pre * |W_dec row|, the
 * threshold follow the output scale. */
static double folded_out(const subsae_sae *sae, float x)
{
    return (double)x / sae->output_scale;
}

/* The skip path maps the scaled input to the scaled target: in raw spaces
 * its matrix is W_skip s_in / s_out. */
static double folded_skip(const subsae_sae *sae, float x)
{
    return (double)x * sae->input_scale / sae->output_scale;
}

static bool fold_scales_threshold(const subsae_sae *sae)
{
    return sae->rank_by_decoder_norm && sae->activation != SUBSAE_ACT_TOPK &&
           sae->activation != SUBSAE_ACT_RELU;
}

void subsae__sae_fold(const subsae_sae *sae, subsae_sae *out)
{
    const int64_t d_sae = sae->d_sae, d_in = sae->d_in, d_out = sae->d_out;
    /* b_enc and b_mag first: they read the unscaled W_enc and b_dec (out may
     * be sae). */
    for (int64_t f = 0; f < d_sae; f++) {
        if (sae->b_mag)
            out->b_mag[f] = (float)folded_b_mag(sae, f);
        out->b_enc[f] = (float)folded_b_enc(sae, f);
    }
    out->apply_b_dec_to_input = fold_moves_b_dec(sae) ? 0 : sae->apply_b_dec_to_input;
    const float fin = (float)sae->input_scale;
    if (out->W_enc)
        for (int64_t i = 0; i < d_sae * d_in; i++)
            out->W_enc[i] = sae->W_enc[i] * fin;
    if (out->W_dec)
        for (int64_t i = 0; i < d_sae * d_out; i++)
            out->W_dec[i] = (float)folded_out(sae, sae->W_dec[i]);
    for (int64_t j = 0; j < d_out; j++)
        out->b_dec[j] = (float)folded_out(sae, sae->b_dec[j]);
    if (sae->skip && out->W_skip)
        for (int64_t i = 0; i < d_out * d_in; i++)
            out->W_skip[i] = (float)folded_skip(sae, sae->W_skip[i]);
    const bool scale_threshold = fold_scales_threshold(sae);
    for (int64_t f = 0; f < d_sae; f++)
        out->threshold[f] = scale_threshold ? (float)folded_out(sae, sae->threshold[f])
                                            : sae->threshold[f];
    out->input_scale = out->output_scale = 1.0;
}

static int fold_overflows(const char *what, const char *param, int64_t i, double value)
{
    return subsae__fail(SUBSAE_E_NONFINITE, SUBSAE_REASON_NONFINITE_INPUT,
                        "%s: folding the scales makes %s[%lld] = %g, beyond float", what, param,
                        (long long)i, value);
}

/* The index of the first of x[0..n) whose fold is not finite in float, or n. */
static int64_t first_out_overflow(const subsae_sae *sae, const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (!isfinite((float)folded_out(sae, x[i])))
            return i;
    return n;
}

int subsae__sae_fold_check(const subsae_sae *sae, const char *what)
{
    const double s_in = sae->input_scale;
    if (s_in == 1.0 && sae->output_scale == 1.0)
        return SUBSAE_OK; /* the fold is the identity */
    const int64_t d_sae = sae->d_sae, d_in = sae->d_in, d_out = sae->d_out;
    for (int64_t f = 0; f < d_sae; f++) {
        double b = folded_b_enc(sae, f);
        if (!isfinite((float)b))
            return fold_overflows(what, "b_enc", f, b);
        b = sae->b_mag ? folded_b_mag(sae, f) : 0.0;
        if (!isfinite((float)b))
            return fold_overflows(what, "b_mag", f, b);
    }
    const float fin = (float)s_in;
    const bool bf16 = sae->precision == SUBSAE__BF16; /* the fold is rounded to bf16 */
    for (int64_t i = 0; i < d_sae * d_in; i++) {
        const float w = sae->W_enc[i] * fin;
        if (!isfinite(w) || (bf16 && subsae__bf16_first_overflow(&w, 1) == 0))
            return fold_overflows(what, "W_enc", i, (double)sae->W_enc[i] * s_in);
    }
    const struct {
        const char *name;
        const float *x;
        int64_t n;
    } outs[] = {{"W_dec", sae->W_dec, d_sae * d_out},
                {"b_dec", sae->b_dec, d_out},
                {"threshold", sae->threshold, fold_scales_threshold(sae) ? d_sae : 0}};
    for (size_t k = 0; k < sizeof outs / sizeof outs[0]; k++) {
        int64_t i = first_out_overflow(sae, outs[k].x, outs[k].n);
        if (i < outs[k].n)
            return fold_overflows(what, outs[k].name, i, folded_out(sae, outs[k].x[i]));
    }
    for (int64_t i = 0; sae->skip && i < d_out * d_in; i++)
        if (!isfinite((float)folded_skip(sae, sae->W_skip[i])))
            return fold_overflows(what, "W_skip", i, folded_skip(sae, sae->W_skip[i]));
    return SUBSAE_OK;
}

int subsae_sae_fold_scales(subsae_sae *sae)
{
    static const char *fn = "subsae_sae_fold_scales";
    SUBSAE__NOT_NULL(fn, sae);
    /* A bf16 model folds a widened W_enc, rounded back to bf16 in place. */
    subsae_sae view;
    float *wide;
    int rc = subsae__sae_float_view(sae, &view, &wide, fn);
    view.precision = sae->precision; /* the check then keeps W_enc in bf16's range */
    if (!rc)
        rc = subsae__sae_fold_check(&view, fn);
    if (!rc) {
        subsae__sae_fold(&view, &view);
        if (wide)
            subsae__bf16_round(sae->W_enc_bf16, wide, sae->d_sae * sae->d_in);
        view.W_enc = sae->W_enc;
        view.W_enc_bf16 = sae->W_enc_bf16;
        *sae = view;
    }
    subsae__free(wide);
    return rc;
}

/* ---- blocked encode ------------------------------------------------------ */

int64_t subsae__sae_slots(const subsae_sae *sae)
{
    return sae->activation == SUBSAE_ACT_TOPK ? sae->k : sae->d_sae;
}

void subsae__sae_encoder_input(const subsae_sae *sae, const float *x, int64_t x_stride,
                               int64_t n, double in_scale, float *xin, int64_t xin_stride,
                               int threads)
{
    const int64_t d = sae->d_in;
    const float s = (float)in_scale;
    const float *b = sae->apply_b_dec_to_input ? sae->b_dec : NULL;
#pragma omp parallel for num_threads(subsae__team(threads, (double)n * (double)d)) \
    schedule(static)
    for (int64_t i = 0; i < n; i++) {
        const float *xr = x + i * x_stride;
        float *o = xin + i * xin_stride;
        if (b) {
#pragma omp simd
            for (int64_t j = 0; j < d; j++)
                o[j] = xr[j] * s - b[j];
        } else {
#pragma omp simd
            for (int64_t j = 0; j < d; j++)
                o[j] = xr[j] * s;
        }
    }
}

/* Selection for one row of pre-activations (bias not yet added). */
static void select_row(const subsae_sae *sae, float *pre_row, int64_t slots, int32_t *idx,
                       float *val, const float *rank_weight)
{
    const int64_t m = sae->d_sae;
    if (sae->activation == SUBSAE_ACT_TOPK) {
        int64_t kk = sae->k < slots ? sae->k : slots;
        subsae__topk_row(pre_row, sae->b_enc, rank_weight, m, kk, idx, val);
        if (rank_weight) /* selected by weighted key; report by value */
            for (int64_t j = 1; j < kk; j++)
                for (int64_t p = j; p > 0 && val[p] > val[p - 1]; p--) {
                    float tv = val[p];
                    int32_t ti = idx[p];
                    val[p] = val[p - 1];
                    idx[p] = idx[p - 1];
                    val[p - 1] = tv;
                    idx[p - 1] = ti;
                }
        for (int64_t j = kk; j < slots; j++) {
            idx[j] = -1;
            val[j] = 0.0f;
        }
    } else {
        /* Threshold activations: z = pre where pre > threshold (0 for ReLU),
         * then the `slots` largest of z. With decoder-norm weights (lm-saes)
         * the gate sees pre * |W_dec row| and the code is pre. */
        for (int64_t f = 0; sae->activation == SUBSAE_ACT_GATED && f < m; f++)
            pre_row[f] = subsae__gated_value(sae, f, pre_row[f]);
        for (int64_t f = 0; sae->activation != SUBSAE_ACT_GATED && f < m; f++) {
            float v = pre_row[f] + sae->b_enc[f];
            float gate = rank_weight ? v * rank_weight[f] : v;
            float t = sae->activation == SUBSAE_ACT_RELU ? 0.0f : sae->threshold[f];
            pre_row[f] = gate > t && gate > 0.0f ? v : 0.0f;
        }
        int64_t kk = slots < m ? slots : m;
        subsae__topk_row(pre_row, NULL, NULL, m, kk, idx, val);
        for (int64_t j = kk; j < slots; j++) {
            idx[j] = -1;
            val[j] = 0.0f;
        }
    }
    /* ReLU: selected entries that are not positive are inactive. */
    for (int64_t j = 0; j < slots; j++) {
        if (!(val[j] > 0.0f)) {
            idx[j] = -1;
            val[j] = 0.0f;
        }
    }
}

void subsae__sae_encode_pre(const subsae_sae *sae, const float *xin, int64_t xin_stride,
                            int64_t n, int64_t slots, int32_t *indices, float *values,
                            float *pre, const float *rank_weight, int threads, double *seconds)
{
    const struct subsae__encoder_in in = {SUBSAE__FP32, xin, xin_stride, sae->W_enc, sae->k};
    subsae__sae_encode_pre_in(sae, &in, n, slots, indices, values, pre, rank_weight, threads,
                              seconds);
}

void subsae__sae_encode_pre_in(const subsae_sae *sae, const struct subsae__encoder_in *in,
                               int64_t n, int64_t slots, int32_t *indices, float *values,
                               float *pre, const float *rank_weight, int threads,
                               double *seconds)
{
    if (subsae__encode_fused(sae, rank_weight)) {
        subsae__encode_topk_fused_in(sae, in, n, slots, indices, values, pre, threads, seconds);
        return;
    }
    const int64_t m = sae->d_sae, block = subsae__encode_block_rows(m, n);
    const size_t element = in->precision == SUBSAE__BF16 ? sizeof(uint16_t) : sizeof(float);
    for (int64_t r0 = 0; r0 < n; r0 += block) {
        int64_t rows = n - r0 < block ? n - r0 : block;
        double t0 = seconds ? omp_get_wtime() : 0.0;
        subsae__gemm_rows(in->precision, rows, m, sae->d_in,
                          (const char *)in->x + (size_t)(r0 * in->x_stride) * element,
                          in->x_stride, in->W, sae->d_in, pre, m, threads);
        double t1 = seconds ? omp_get_wtime() : 0.0;
#pragma omp parallel for schedule(static) \
    num_threads(subsae__team(threads, (double)rows * (double)m))
        for (int64_t i = 0; i < rows; i++)
            select_row(sae, pre + i * m, slots, indices + (r0 + i) * slots,
                       values + (r0 + i) * slots, rank_weight);
        if (seconds) {
            seconds[0] += t1 - t0;
            seconds[1] += omp_get_wtime() - t1;
        }
    }
}

void subsae__sae_decode_rows(const subsae_sae *sae, const int32_t *indices, const float *values,
                             int64_t n, int64_t slots, float *out, int64_t out_stride,
                             int threads)
{
#pragma omp parallel for schedule(static) \
    num_threads(subsae__team(threads, (double)n * (double)slots * (double)sae->d_out))
    for (int64_t i = 0; i < n; i++)
        subsae__sparse_decode_row(out + i * out_stride, sae->b_dec, sae->W_dec, sae->d_out,
                                  indices + i * slots, values + i * slots, slots, sae->d_out);
}

void subsae__sae_decoder_norms(const subsae_sae *sae, float *norms, int threads)
{
#pragma omp parallel for schedule(static) \
    num_threads(subsae__team(threads, (double)sae->d_sae * (double)sae->d_out))
    for (int64_t f = 0; f < sae->d_sae; f++)
        norms[f] = (float)sqrt(subsae__sumsq(sae->W_dec + f * sae->d_out, sae->d_out));
}

/* Scratch of the public encoders: one block of encoder input (and its
 * bf16 copy for a bf16 model) and of pre-activations, plus decoder norms
 * when the model ranks by them. */
struct encode_scratch {
    int64_t block;
    float *xin, *pre, *norms;
    uint16_t *xin16;
};

static void scratch_free(struct encode_scratch *s)
{
    subsae__free(s->xin);
    subsae__free(s->xin16);
    subsae__free(s->pre);
    subsae__free(s->norms);
}

static int scratch_init(const subsae_sae *sae, int64_t n, struct encode_scratch *s, int threads)
{
    memset(s, 0, sizeof *s);
    const bool ranked = sae->rank_by_decoder_norm && sae->activation == SUBSAE_ACT_TOPK;
    s->block = subsae__encode_block_rows(sae->d_sae, n);
    if (!ranked && sae->activation == SUBSAE_ACT_TOPK) {
        /* The fused encoder needs no room per feature: encode chunks of
         * about 4 MB of input, enough blocks of rows for every thread. */
        int64_t rows = ((int64_t)1 << 20) / (sae->d_in > 0 ? sae->d_in : 1);
        if (rows < 256 * (int64_t)threads)
            rows = 256 * (int64_t)threads;
        s->block = rows < n ? rows : n;
    }
    size_t xin = (size_t)s->block * (size_t)sae->d_in * sizeof(float);
    int64_t pre_floats = subsae__encode_scratch_floats(sae, s->block, threads, ranked);
    if (!ranked && sae->activation == SUBSAE_ACT_TOPK) {
        /* The last rows of a long input may go through the small-batch encoder. */
        int64_t small = subsae__encode_small_scratch_floats(sae, s->block, threads);
        pre_floats = small > pre_floats ? small : pre_floats;
    }
    size_t pre = (size_t)pre_floats * sizeof(float);
    s->xin = subsae__malloc(xin);
    s->pre = subsae__malloc(pre);
    const bool bf16 = sae->precision == SUBSAE__BF16;
    if (bf16)
        s->xin16 = subsae__malloc(xin / 2);
    if (sae->rank_by_decoder_norm)
        s->norms = subsae__malloc((size_t)sae->d_sae * sizeof(float));
    if (!s->xin || !s->pre || (bf16 && !s->xin16) || (sae->rank_by_decoder_norm && !s->norms)) {
        scratch_free(s);
        return subsae__fail_nomem("encoder scratch", xin + pre);
    }
    if (s->norms)
        subsae__sae_decoder_norms(sae, s->norms, threads);
    return SUBSAE_OK;
}

/* The operands of the product of `rows` rows of encoder input in the
 * scratch, at the model's precision: a bf16 model rounds them to bf16
 * (the input's scale and b_dec are applied in fp32 first). */
static struct subsae__encoder_in encoder_operands(const subsae_sae *sae,
                                                  const struct encode_scratch *s, int64_t rows,
                                                  int threads)
{
    const int64_t d = sae->d_in;
    if (sae->precision != SUBSAE__BF16) {
        const struct subsae__encoder_in in = {SUBSAE__FP32, s->xin, d, sae->W_enc, sae->k};
        return in;
    }
#pragma omp parallel for schedule(static) \
    num_threads(subsae__team(threads, (double)rows * (double)d))
    for (int64_t i = 0; i < rows; i++)
        subsae__bf16_round(s->xin16 + i * d, s->xin + i * d, d);
    const struct subsae__encoder_in in = {SUBSAE__BF16, s->xin16, d, sae->W_enc_bf16, sae->k};
    return in;
}

/* Encode rows [0, n) of raw x into (indices, values) with `slots` per row. */
static void encode_raw(const subsae_sae *sae, const float *x, int64_t x_stride, int64_t n,
                       int64_t slots, int32_t *indices, float *values, struct encode_scratch *s,
                       int threads)
{
    for (int64_t r0 = 0; r0 < n; r0 += s->block) {
        int64_t rows = n - r0 < s->block ? n - r0 : s->block;
        subsae__sae_encoder_input(sae, x + r0 * x_stride, x_stride, rows, sae->input_scale,
                                  s->xin, sae->d_in, threads);
        const struct subsae__encoder_in in = encoder_operands(sae, s, rows, threads);
        if (subsae__encode_small(sae, s->norms, rows))
            subsae__encode_topk_small_in(sae, &in, rows, slots, indices + r0 * slots,
                                         values + r0 * slots, s->pre, threads);
        else
            subsae__sae_encode_pre_in(sae, &in, rows, slots, indices + r0 * slots,
                                      values + r0 * slots, s->pre, s->norms, threads, NULL);
    }
}

static int check_rows(const char *fn, const float *x, int64_t n, int64_t stride, int64_t d,
                      const char *name)
{
    for (int64_t i = 0; i < n; i++) {
        int64_t bad = subsae__find_nonfinite(x + i * stride, d);
        if (bad < d)
            return subsae__fail(SUBSAE_E_NONFINITE, SUBSAE_REASON_NONFINITE_INPUT,
                                "%s: %s row %lld, column %lld is %g", fn, name, (long long)i,
                                (long long)bad, (double)x[i * stride + bad]);
    }
    return SUBSAE_OK;
}

/* The model not NULL and, when there are rows, none of the `count` arrays
 * (arrays[i], the argument names[i]). */
static int check_pointers(const char *fn, const subsae_sae *sae, int64_t n, int count,
                          const void *const arrays[], const char *const names[])
{
    SUBSAE__NOT_NULL(fn, sae);
    for (int i = 0; n > 0 && i < count; i++)
        if (!arrays[i])
            return subsae__fail_null(fn, names[i]);
    return SUBSAE_OK;
}

/* The argument checks of the dense transforms, input rows finite
 * included: encode (x, d_in wide, into z, d_sae wide) or decode (z into
 * out, d_out wide). */
static int check_dense(const char *fn, const subsae_sae *sae, int64_t n, const float *in,
                       int64_t in_stride, const float *out, int64_t out_stride, bool decode)
{
    const char *in_name = decode ? "z" : "x", *out_name = decode ? "out" : "z";
    int rc = check_pointers(fn, sae, n, 2, (const void *[]){in, out},
                            (const char *[]){in_name, out_name});
    if (rc)
        return rc;
    const int64_t in_dim = decode ? sae->d_sae : sae->d_in;
    const int64_t out_dim = decode ? sae->d_out : sae->d_sae;
    if (n < 0 || in_stride < in_dim || out_stride < out_dim)
        return subsae__fail(
            SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
            "%s: n %lld, %s_stride %lld (%s %lld), %s_stride %lld (%s %lld)", fn, (long long)n,
            in_name, (long long)in_stride, decode ? "d_sae" : "d_in", (long long)in_dim,
            out_name, (long long)out_stride, decode ? "d_out" : "d_sae", (long long)out_dim);
    return check_rows(fn, in, n, in_stride, in_dim, decode ? "code" : "input");
}

int subsae_sae_encode_sparse(const subsae_sae *sae, const float *x, int64_t n, int64_t x_stride,
                             int64_t slots, int32_t *indices, float *values)
{
    static const char *fn = "subsae_sae_encode_sparse";
    int rc = check_pointers(fn, sae, n, 3, (const void *[]){x, indices, values},
                            (const char *[]){"x", "indices", "values"});
    if (rc)
        return rc;
    if (n < 0 || x_stride < sae->d_in || slots < 1 || slots > INT32_MAX)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                            "%s: n %lld, x_stride %lld (d_in %lld), slots %lld", fn,
                            (long long)n, (long long)x_stride, (long long)sae->d_in,
                            (long long)slots);
    if (n == 0)
        return SUBSAE_OK;
    rc = check_rows(fn, x, n, x_stride, sae->d_in, "input");
    if (rc)
        return rc;
    int threads = subsae__threads();
    struct encode_scratch s;
    rc = scratch_init(sae, n, &s, threads);
    if (!rc) {
        encode_raw(sae, x, x_stride, n, slots, indices, values, &s, threads);
        scratch_free(&s);
    }
    return rc;
}

int subsae_sae_encode(const subsae_sae *sae, const float *x, int64_t n, int64_t x_stride,
                      float *z, int64_t z_stride)
{
    static const char *fn = "subsae_sae_encode";
    int rc = check_dense(fn, sae, n, x, x_stride, z, z_stride, false);
    if (rc || n == 0)
        return rc;
    int threads = subsae__threads();
    struct encode_scratch s;
    rc = scratch_init(sae, n, &s, threads);
    if (rc)
        return rc;
    const int64_t slots = subsae__sae_slots(sae);
    int32_t *idx = subsae__malloc((size_t)s.block * (size_t)slots * sizeof *idx);
    float *val = subsae__malloc((size_t)s.block * (size_t)slots * sizeof *val);
    if (!idx || !val) {
        subsae__free(idx);
        subsae__free(val);
        scratch_free(&s);
        return subsae__fail_nomem("codes", (size_t)s.block * (size_t)slots * 8);
    }
    for (int64_t r0 = 0; r0 < n; r0 += s.block) {
        int64_t rows = n - r0 < s.block ? n - r0 : s.block;
        encode_raw(sae, x + r0 * x_stride, x_stride, rows, slots, idx, val, &s, threads);
#pragma omp parallel for schedule(static) \
    num_threads(subsae__team(threads, (double)rows * (double)sae->d_sae))
        for (int64_t i = 0; i < rows; i++) {
            float *zr = z + (r0 + i) * z_stride;
            memset(zr, 0, (size_t)sae->d_sae * sizeof *zr);
            for (int64_t j = 0; j < slots; j++)
                if (idx[i * slots + j] >= 0)
                    zr[idx[i * slots + j]] = val[i * slots + j];
        }
    }
    subsae__free(idx);
    subsae__free(val);
    scratch_free(&s);
    return SUBSAE_OK;
}

/* Raw space: divide the scaled reconstruction by the output scale. */
static void unscale_rows(const subsae_sae *sae, float *out, int64_t n, int64_t stride,
                         int threads)
{
    if (sae->output_scale == 1.0)
        return;
    const float inv = (float)(1.0 / sae->output_scale);
#pragma omp parallel for schedule(static) \
    num_threads(subsae__team(threads, (double)n * (double)sae->d_out))
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < sae->d_out; j++)
            out[i * stride + j] *= inv;
}

int subsae_sae_decode(const subsae_sae *sae, const float *z, int64_t n, int64_t z_stride,
                      float *out, int64_t out_stride)
{
    static const char *fn = "subsae_sae_decode";
    int rc = check_dense(fn, sae, n, z, z_stride, out, out_stride, true);
    if (rc || n == 0)
        return rc;
    int threads = subsae__threads();
    for (int64_t i = 0; i < n; i++)
        memcpy(out + i * out_stride, sae->b_dec, (size_t)sae->d_out * sizeof *out);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)sae->d_out,
                (int)sae->d_sae, 1.0f, z, (int)z_stride, sae->W_dec, (int)sae->d_out, 1.0f, out,
                (int)out_stride);
    unscale_rows(sae, out, n, out_stride, threads);
    return SUBSAE_OK;
}

int subsae_sae_decode_sparse(const subsae_sae *sae, const int32_t *indices, const float *values,
                             int64_t n, int64_t slots, float *out, int64_t out_stride)
{
    static const char *fn = "subsae_sae_decode_sparse";
    int rc = check_pointers(fn, sae, n, 3, (const void *[]){indices, values, out},
                            (const char *[]){"indices", "values", "out"});
    if (rc)
        return rc;
    if (n < 0 || slots < 1 || out_stride < sae->d_out)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                            "%s: n %lld, slots %lld, out_stride %lld (d_out %lld)", fn,
                            (long long)n, (long long)slots, (long long)out_stride,
                            (long long)sae->d_out);
    for (int64_t i = 0; i < n * slots; i++) {
        if (indices[i] < -1 || indices[i] >= sae->d_sae)
            return subsae__fail(SUBSAE_E_RANGE, SUBSAE_REASON_INDEX_OUT_OF_RANGE,
                                "%s: row %lld slot %lld has feature %d (d_sae %lld)", fn,
                                (long long)(i / slots), (long long)(i % slots), indices[i],
                                (long long)sae->d_sae);
        if (!isfinite(values[i]))
            return subsae__fail(SUBSAE_E_NONFINITE, SUBSAE_REASON_NONFINITE_INPUT,
                                "%s: row %lld slot %lld has value %g", fn,
                                (long long)(i / slots), (long long)(i % slots),
                                (double)values[i]);
    }
    int threads = subsae__threads();
    subsae__sae_decode_rows(sae, indices, values, n, slots, out, out_stride, threads);
    unscale_rows(sae, out, n, out_stride, threads);
    return SUBSAE_OK;
}

int subsae_sae_add_skip(const subsae_sae *sae, const float *x, int64_t n, int64_t x_stride,
                        float *out, int64_t out_stride)
{
    static const char *fn = "subsae_sae_add_skip";
    int rc = check_pointers(fn, sae, n, 2, (const void *[]){x, out},
                            (const char *[]){"x", "out"});
    if (rc)
        return rc;
    if (n < 0 || x_stride < sae->d_in || out_stride < sae->d_out)
        return subsae__fail(
            SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
            "%s: n %lld, x_stride %lld (d_in %lld), out_stride %lld (d_out %lld)", fn,
            (long long)n, (long long)x_stride, (long long)sae->d_in, (long long)out_stride,
            (long long)sae->d_out);
    rc = check_rows(fn, x, n, x_stride, sae->d_in, "x");
    if (rc || !sae->skip || n == 0)
        return rc;
    subsae__skip_forward(sae->W_skip, sae->d_in, sae->d_out, x, x_stride, n,
                         (float)(sae->input_scale / sae->output_scale), out, out_stride,
                         subsae__threads());
    return SUBSAE_OK;
}

/* ---- evaluation ----------------------------------------------------------- */

int subsae_metric_count(void)
{
    return SUBSAE_METRIC_COUNT;
}

int subsae_sae_evaluate(const subsae_sae *sae, const subsae_buffer *input,
                        const subsae_buffer *target, double *metrics, int64_t n_metrics)
{
    return subsae_sae_evaluate_density(sae, input, target, metrics, n_metrics, NULL, 0);
}

static int check_evaluate(const char *fn, const subsae_sae *sae, const subsae_buffer *input,
                          const subsae_buffer *target, const double *metrics, int64_t n_metrics,
                          const double *density, int64_t n_density)
{
    SUBSAE__NOT_NULL(fn, sae);
    SUBSAE__NOT_NULL(fn, input);
    if (n_metrics > 0 && !metrics)
        return subsae__fail_null(fn, "metrics");
    if (n_metrics < 0)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE, "%s: n_metrics %lld", fn,
                            (long long)n_metrics);
    if (n_density != 0 && n_density != sae->d_sae)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_SIZE_MISMATCH,
                            "%s: room for %lld densities, the model has d_sae %lld features",
                            fn, (long long)n_density, (long long)sae->d_sae);
    if (n_density > 0 && !density)
        return subsae__fail_null(fn, "density");
    const subsae_buffer *tgt = target ? target : input;
    const int64_t n = subsae_buffer_rows(input);
    if (subsae_buffer_dim(input) != sae->d_in)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_DIM_MISMATCH,
                            "%s: the input has rows of %lld values but the model takes d_in = "
                            "%lld",
                            fn, (long long)subsae_buffer_dim(input), (long long)sae->d_in);
    if (subsae_buffer_dim(tgt) != sae->d_out)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_DIM_MISMATCH,
                            "%s: the target has rows of %lld values but the model reconstructs "
                            "d_out = %lld",
                            fn, (long long)subsae_buffer_dim(tgt), (long long)sae->d_out);
    if (subsae_buffer_rows(tgt) != n)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_SIZE_MISMATCH,
                            "%s: input has %lld rows, target %lld", fn, (long long)n,
                            (long long)subsae_buffer_rows(tgt));
    if (n < 1)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE, "%s: empty buffer", fn);
    return SUBSAE_OK;
}

/* One evaluation pass: the scratch of a block of rows and the sums over
 * all rows (added in row order, so the same bits for any thread count). */
struct evaluation {
    const subsae_sae *sae;
    int threads;
    int64_t slots;
    struct encode_scratch s;
    subsae__row_reader *reader_in, *reader_t; /* reader_t NULL: the target is the input */
    float *x, *t, *xhat;                      /* t == x without a target */
    int32_t *idx;
    float *val;
    double *row_sse;
    double *sum_t;                            /* d_out: column sums of the scaled target */
    int64_t *fires;                           /* d_sae: rows in which each feature fired */
    double sse, sum_t2;                       /* squared error, sum of squared scaled targets */
    int64_t active;                           /* features fired over all rows */
    double prefix_sse[SUBSAE_MATRYOSHKA_MAX]; /* squared error of each Matryoshka prefix
                                                 but the last */
};

static void evaluation_close(struct evaluation *ev)
{
    if (ev->t != ev->x)
        subsae__free(ev->t);
    subsae__free(ev->x);
    subsae__free(ev->xhat);
    subsae__free(ev->idx);
    subsae__free(ev->val);
    subsae__free(ev->row_sse);
    subsae__free(ev->sum_t);
    subsae__free(ev->fires);
    scratch_free(&ev->s);
    subsae__row_reader_close(ev->reader_in);
    subsae__row_reader_close(ev->reader_t);
}

/* On failure everything is released. */
static int evaluation_open(struct evaluation *ev, const subsae_sae *sae,
                           const subsae_buffer *input, const subsae_buffer *target)
{
    memset(ev, 0, sizeof *ev);
    ev->sae = sae;
    ev->threads = subsae__threads();
    ev->slots = subsae__sae_slots(sae);
    const int64_t d_in = sae->d_in, d_out = sae->d_out, m = sae->d_sae, slots = ev->slots;
    int rc = scratch_init(sae, subsae_buffer_rows(input), &ev->s, ev->threads);
    if (rc)
        return rc;
    const size_t block = (size_t)ev->s.block;
    ev->x = subsae__malloc(block * (size_t)d_in * sizeof *ev->x);
    ev->t = target ? subsae__malloc(block * (size_t)d_out * sizeof *ev->t) : NULL;
    ev->xhat = subsae__malloc(block * (size_t)d_out * sizeof *ev->xhat);
    ev->idx = subsae__malloc(block * (size_t)slots * sizeof *ev->idx);
    ev->val = subsae__malloc(block * (size_t)slots * sizeof *ev->val);
    ev->row_sse = subsae__malloc(block * sizeof *ev->row_sse);
    ev->sum_t = subsae__calloc((size_t)d_out, sizeof *ev->sum_t);
    ev->fires = subsae__calloc((size_t)m, sizeof *ev->fires);
    if (!ev->x || (target && !ev->t) || !ev->xhat || !ev->idx || !ev->val || !ev->row_sse ||
        !ev->sum_t || !ev->fires)
        rc = subsae__fail_nomem("evaluation scratch", block * (size_t)(d_in + d_out) * 4);
    /* Rows by pread, so that the file's pages do not stay resident (see
     * buffer.h). */
    if (!rc)
        rc = subsae__row_reader_open(input, &ev->reader_in);
    if (!rc && target)
        rc = subsae__row_reader_open(target, &ev->reader_t);
    if (!rc && !target)
        ev->t = ev->x; /* aliased: freed once */
    if (rc)
        evaluation_close(ev);
    return rc;
}

/* Read, encode and decode rows [r0, r0 + rows) and add them to the sums. */
static int evaluation_block(struct evaluation *ev, int64_t r0, int64_t rows)
{
    const subsae_sae *sae = ev->sae;
    const int64_t d_in = sae->d_in, d_out = sae->d_out, slots = ev->slots;
    const int threads = ev->threads;
    const float s_out = (float)sae->output_scale;
    float *x = ev->x, *t = ev->t, *xhat = ev->xhat;
    double *row_sse = ev->row_sse;
    int rc = subsae__row_reader_gather(ev->reader_in, NULL, r0, rows, x, d_in);
    if (!rc && ev->reader_t)
        rc = subsae__row_reader_gather(ev->reader_t, NULL, r0, rows, t, d_out);
    if (rc)
        return rc;
    encode_raw(sae, x, d_in, rows, slots, ev->idx, ev->val, &ev->s, threads);
    subsae__sae_decode_rows(sae, ev->idx, ev->val, rows, slots, xhat, d_out, threads);
    if (sae->skip)
        subsae__skip_forward(sae->W_skip, d_in, d_out, x, d_in, rows, (float)sae->input_scale,
                             xhat, d_out, threads);
#pragma omp parallel for schedule(static) \
    num_threads(subsae__team(threads, (double)rows * (double)d_out))
    for (int64_t i = 0; i < rows; i++) {
        double e = 0.0;
        for (int64_t j = 0; j < d_out; j++) {
            double diff = (double)xhat[i * d_out + j] - (double)t[i * d_out + j] * s_out;
            e += diff * diff;
        }
        row_sse[i] = e;
    }
    for (int64_t i = 0; i < rows; i++) {
        ev->sse += row_sse[i];
        const float *tr = t + i * d_out;
        for (int64_t j = 0; j < d_out; j++) {
            double v = (double)tr[j] * s_out;
            ev->sum_t[j] += v;
            ev->sum_t2 += v * v;
        }
        for (int64_t j = 0; j < slots; j++) {
            int32_t f = ev->idx[i * slots + j];
            if (f >= 0) {
                ev->fires[f]++;
                ev->active++;
            }
        }
    }
    subsae__matryoshka_prefix_sse(sae, ev->idx, ev->val, rows, slots, t, s_out, xhat, row_sse,
                                  ev->prefix_sse, threads);
    return SUBSAE_OK;
}

/* The metrics and densities of the sums over n rows. */
static void evaluation_report(const struct evaluation *ev, int64_t n, double *metrics,
                              int64_t n_metrics, double *density, int64_t n_density)
{
    const subsae_sae *sae = ev->sae;
    const int64_t d_out = sae->d_out, m = sae->d_sae;
    double mean_sq = 0.0;
    for (int64_t j = 0; j < d_out; j++)
        mean_sq += ev->sum_t[j] * ev->sum_t[j];
    double sst = ev->sum_t2 - mean_sq / (double)n;
    int64_t zero = 0, dense = 0;
    for (int64_t f = 0; f < m; f++) {
        zero += ev->fires[f] == 0;
        dense += (double)ev->fires[f] > 0.1 * (double)n;
    }
    double values[SUBSAE_METRIC_COUNT];
    for (int i = 0; i < SUBSAE_METRIC_COUNT; i++)
        values[i] = NAN;
    double so2 = sae->output_scale * sae->output_scale;
    values[SUBSAE_METRIC_MSE] = ev->sse / (double)n / so2;
    values[SUBSAE_METRIC_FVU] = sst > 0.0 ? ev->sse / sst : NAN;
    values[SUBSAE_METRIC_EXPLAINED_VARIANCE] = 1.0 - values[SUBSAE_METRIC_FVU];
    values[SUBSAE_METRIC_L0] = (double)ev->active / (double)n;
    values[SUBSAE_METRIC_DENSE_FRACTION] = (double)dense / (double)m;
    values[SUBSAE_METRIC_ZERO_FREQUENCY_FRACTION] = (double)zero / (double)m;
    values[SUBSAE_METRIC_TOKENS] = (double)n;
    for (int64_t i = 0; i < n_metrics; i++)
        metrics[i] = i < SUBSAE_METRIC_COUNT ? values[i] : NAN;
    for (int64_t f = 0; f < n_density; f++)
        density[f] = (double)ev->fires[f] / (double)n;
}

/* The explained variance of squared error sse over n rows (the total
 * variance from the evaluation's sums). */
static double evaluation_ev(const struct evaluation *ev, int64_t n, double sse)
{
    double mean_sq = 0.0;
    for (int64_t j = 0; j < ev->sae->d_out; j++)
        mean_sq += ev->sum_t[j] * ev->sum_t[j];
    const double sst = ev->sum_t2 - mean_sq / (double)n;
    return sst > 0.0 ? 1.0 - sse / sst : NAN;
}

int subsae_sae_evaluate_prefixes(const subsae_sae *sae, const subsae_buffer *input,
                                 const subsae_buffer *target, double *ev, int capacity,
                                 int *count)
{
    static const char *fn = "subsae_sae_evaluate_prefixes";
    int rc = check_evaluate(fn, sae, input, target, NULL, 0, NULL, 0);
    if (rc)
        return rc;
    SUBSAE__NOT_NULL(fn, count);
    if (capacity < 0 || (capacity > 0 && !ev))
        return subsae__fail_option(fn, "ev %s with capacity %d", ev ? "given" : "NULL",
                                   capacity);
    struct evaluation e;
    rc = evaluation_open(&e, sae, input, target);
    if (rc)
        return rc;
    const int64_t n = subsae_buffer_rows(input), block = e.s.block;
    for (int64_t r0 = 0; !rc && r0 < n; r0 += block)
        rc = evaluation_block(&e, r0, n - r0 < block ? n - r0 : block);
    const int levels = subsae__matryoshka_levels(sae);
    for (int j = 0; !rc && j < levels && j < capacity; j++)
        ev[j] = evaluation_ev(&e, n, j + 1 < levels ? e.prefix_sse[j] : e.sse);
    if (!rc)
        *count = levels;
    evaluation_close(&e);
    return rc;
}

int subsae_sae_evaluate_density(const subsae_sae *sae, const subsae_buffer *input,
                                const subsae_buffer *target, double *metrics, int64_t n_metrics,
                                double *density, int64_t n_density)
{
    int rc = check_evaluate("subsae_sae_evaluate", sae, input, target, metrics, n_metrics,
                            density, n_density);
    if (rc)
        return rc;
    struct evaluation ev;
    rc = evaluation_open(&ev, sae, input, target);
    if (rc)
        return rc;
    const int64_t n = subsae_buffer_rows(input), block = ev.s.block;
    for (int64_t r0 = 0; !rc && r0 < n; r0 += block)
        rc = evaluation_block(&ev, r0, n - r0 < block ? n - r0 : block);
    if (!rc)
        evaluation_report(&ev, n, metrics, n_metrics, density, n_density);
    evaluation_close(&ev);
    return rc;
}
