/* Loading SAE directories: this library's own (the SAELens layout, see
 * sae_io.c), SAELens', EleutherAI sparsify's and OpenMOSS lm-saes'.
 *
 * A layout is named by its tensors (W_enc / W_dec: SAELens; encoder.weight
 * with W_dec: sparsify; W_E / W_D: lm-saes), but the shapes decide: d_sae
 * is the length of the encoder bias, and each weight matrix is read as
 * [d_sae, d] or [d, d_sae] by which of its dimensions is d_sae (the
 * layout's documented orientation only breaks the tie of a square
 * matrix). A tensor whose shape fits neither way is rejected, naming it,
 * its shape and where d_sae came from.
 *
 * Each tool's encoding convention is kept:
 *  - SAELens: cfg.json's architecture / activation_fn_str / k /
 *    apply_b_dec_to_input / rank_by_decoder_norm; threshold or
 *    log_threshold for JumpReLU and BatchTopK; architecture "gated" has
 *    b_gate (the encoder bias, which gates), r_mag and b_mag.
 *  - sparsify (sae.safetensors + cfg.json: d_in, k, num_latents,
 *    expansion_factor, activation, transcode): pre = (x - b_dec) W^T + b
 *    (x W^T + b for a transcoder), ReLU, top k.
 *  - lm-saes (sae_weights.safetensors + config.json: d_model,
 *    expansion_factor, act_fn, top_k, sparsity_include_decoder_norm
 *    (default true), use_decoder_bias, norm_activation (default
 *    dataset-wise), hook_point_in / hook_point_out): pre = x W_E + b_E
 *    (b_D is not subtracted); with sparsity_include_decoder_norm the
 *    activation sees pre x |W_D row| (TopK ranks by it, JumpReLU compares
 *    it with exp(log_jumprelu_threshold)) and the code is pre; with
 *    dataset-wise normalisation the inputs are scaled by sqrt(d_model) /
 *    dataset_average_activation_norm.<hook_point_in> and the
 *    reconstruction unscaled by the output hook's factor, which become the
 *    model's input and output scales.
 * A W_skip tensor [d_out, d_in] (SAELens' skip_transcoder, sparsify's
 * skip_connection) gives the model its skip path: the output adds
 * x W_skip^T. */
#include "io.h"
#include "sae.h"

#include "dtype.h"
#include "matryoshka.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

/* ---- configuration files ------------------------------------------------- */

/* Parse dir/name as a JSON object. A missing file is SUBSAE_E_IO. */
/* The configuration file `name` of the directory, and its path for the
 * messages of the checks that follow in `where`. */
enum { WHERE_MAX = 4200 };
static int read_json(const char *dir, const char *name, json_t **root, char where[WHERE_MAX])
{
    snprintf(where, WHERE_MAX, "%s/%s", dir, name);
    *root = NULL;
    char *path = subsae__path_join(dir, name);
    if (!path)
        return subsae__fail_nomem("path", strlen(dir) + strlen(name) + 2);
    int rc = subsae__read_json_object(path, root);
    subsae__free(path);
    return rc;
}

static int64_t json_int_or(const json_t *root, const char *key, int64_t fallback)
{
    const json_t *v = json_object_get(root, key);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : fallback;
}

static double json_number_or(const json_t *root, const char *key, double fallback)
{
    const json_t *v = json_object_get(root, key);
    return json_is_number(v) ? json_number_value(v) : fallback;
}

/* -1 when absent or not a boolean. */
static int json_bool_or(const json_t *root, const char *key, int fallback)
{
    const json_t *v = json_object_get(root, key);
    return json_is_boolean(v) ? json_is_true(v) : fallback;
}

/* d x expansion_factor as the tools compute it (int(d * factor)), or -1
 * when that is not an int64 (a huge, negative or NaN factor). */
static int64_t expanded(int64_t d, double factor)
{
    const double v = (double)d * factor;
    return v >= 0.0 && v < 9.2e18 ? (int64_t)v : -1;
}

static const char *json_string_or(const json_t *root, const char *key, const char *fallback)
{
    const json_t *v = json_object_get(root, key);
    return json_is_string(v) ? json_string_value(v) : fallback;
}

/* ---- tensors ----------------------------------------------------------------- */

static void shape_text(const struct subsae__tensor_view *t, char *out, size_t room)
{
    out[0] = '\0';
    for (int i = 0; i < t->ndim && i < 8; i++)
        snprintf(out + strlen(out), room - strlen(out), "%s%lld", i ? ", " : "",
                 (long long)t->shape[i]);
}

static int missing(const char *path, const char *name)
{
    return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_MISSING_TENSOR,
                        "%s: tensor '%s' is missing", path, name);
}

static int check_float(const char *path, const struct subsae__tensor_view *t)
{
    if (t->dtype != SUBSAE_DTYPE_F32 && t->dtype != SUBSAE_DTYPE_F16 &&
        t->dtype != SUBSAE_DTYPE_BF16 && t->dtype != SUBSAE_DTYPE_F64)
        return subsae__fail(SUBSAE_E_UNSUPPORTED, SUBSAE_REASON_UNSUPPORTED_DTYPE,
                            "%s: tensor '%s' has dtype %s; weights must be floating point",
                            path, t->name, subsae__safetensors_dtype_name(t->dtype));
    return SUBSAE_OK;
}

/* A 1-D float tensor of `len` values (`len` < 0: any); `from` says where
 * the expected length comes from. */
static int vector(const char *path, const struct subsae__tensor_view *t, int64_t len,
                  const char *from)
{
    if (t->ndim != 1 || t->shape[0] < 1 || (len >= 0 && t->shape[0] != len)) {
        char have[96];
        shape_text(t, have, sizeof have);
        if (len < 0)
            return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_SHAPE,
                                "%s: tensor '%s' has shape [%s], expected a vector", path,
                                t->name, have);
        return subsae__fail(SUBSAE_E_FORMAT,
                            t->ndim == 1 ? SUBSAE_REASON_DIM_MISMATCH : SUBSAE_REASON_BAD_SHAPE,
                            "%s: tensor '%s' has shape [%s], expected [%lld] (%s)", path,
                            t->name, have, (long long)len, from);
    }
    return check_float(path, t);
}

/* The orientation of a weight matrix: *rows when it is [d_sae, d], else
 * [d, d_sae]; *other gets d. A square matrix takes `prefer_rows`. */
static int orient(const char *path, const struct subsae__tensor_view *t, int64_t d_sae,
                  const char *bias, bool prefer_rows, bool *rows, int64_t *other)
{
    char have[96];
    shape_text(t, have, sizeof have);
    if (t->ndim != 2 || t->shape[0] < 1 || t->shape[1] < 1)
        return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_SHAPE,
                            "%s: tensor '%s' has shape [%s]; a weight matrix has 2 dimensions",
                            path, t->name, have);
    const bool a = t->shape[0] == d_sae, b = t->shape[1] == d_sae;
    if (!a && !b)
        return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_DIM_MISMATCH,
                            "%s: tensor '%s' has shape [%s]: neither dimension is d_sae = %lld "
                            "(the length of '%s')",
                            path, t->name, have, (long long)d_sae, bias);
    *rows = a && b ? prefer_rows : a;
    *other = *rows ? t->shape[1] : t->shape[0];
    if (*other > INT32_MAX)
        return subsae__fail(SUBSAE_E_RANGE, SUBSAE_REASON_SHAPE_OVERFLOW,
                            "%s: tensor '%s': dimension %lld beyond 2^31", path, t->name,
                            (long long)*other);
    return check_float(path, t);
}

/* Widen a tensor into dst; `transpose_cols` > 0 reads a [rows, cols]
 * tensor into a [cols, rows] destination. */
static int read_tensor(const struct subsae__tensor_view *t, const char *path, float *dst,
                       int64_t transpose_cols)
{
    size_t count = 1;
    for (int i = 0; i < t->ndim; i++)
        count *= (size_t)t->shape[i];
    size_t bad;
    if (transpose_cols <= 0) {
        bad = subsae__widen(t->data, t->dtype, count, dst);
    } else {
        const int64_t rows = (int64_t)count / transpose_cols, cols = transpose_cols;
        float *row = subsae__malloc((size_t)cols * sizeof *row);
        if (!row)
            return subsae__fail_nomem("tensor row", (size_t)cols * 4);
        const size_t element = subsae__dtype_size(t->dtype);
        bad = count;
        for (int64_t r = 0; r < rows; r++) {
            const unsigned char *src = (const unsigned char *)t->data +
                                       (size_t)(r * cols) * element;
            size_t b = subsae__widen(src, t->dtype, (size_t)cols, row);
            if (b < (size_t)cols && bad == count)
                bad = (size_t)(r * cols) + b;
            for (int64_t c = 0; c < cols; c++)
                dst[c * rows + r] = row[c];
        }
        subsae__free(row);
    }
    if (bad < count)
        return subsae__fail(SUBSAE_E_NONFINITE, SUBSAE_REASON_NONFINITE_INPUT,
                            "%s: tensor '%s' element %zu is not finite", path, t->name, bad);
    return SUBSAE_OK;
}

/* The tensors of a model, oriented, and how it encodes. */
struct parts {
    const struct subsae__tensor_view *w_enc, *b_enc, *w_dec, *b_dec, *thr;
    const struct subsae__tensor_view *r_mag, *b_mag; /* gated */
    const struct subsae__tensor_view *w_skip;        /* skip transcoders: [d_out, d_in] */
    bool enc_rows, dec_rows, log_thr;
    int64_t d_in, d_out, d_sae;
    int activation;
    int64_t k;
    int apply_b_dec, rank_by_norm;
    int transcoder; /* the config says so (d_in != d_out always is one) */
    double s_in, s_out;
    char *metadata; /* the config's members the model keeps (compact JSON) */
    int matryoshka_count;
    int64_t matryoshka[SUBSAE_MATRYOSHKA_MAX];
};

/* d_sae from the encoder bias, then both matrices oriented by it. */
static int find_parts(const char *path, const subsae__safetensors *st, const char *w_enc,
                      bool enc_rows, const char *b_enc, const char *w_dec, bool dec_rows,
                      const char *b_dec, bool need_b_dec, struct parts *p)
{
    memset(p, 0, sizeof *p);
    p->s_in = p->s_out = 1.0;
    const char *names[4] = {w_enc, b_enc, w_dec, b_dec};
    const struct subsae__tensor_view *v[4];
    for (int i = 0; i < 4; i++) {
        v[i] = subsae__safetensors_find(st, names[i]);
        if (!v[i] && (i < 3 || need_b_dec))
            return missing(path, names[i]);
    }
    int rc = vector(path, v[1], -1, NULL);
    if (rc)
        return rc;
    p->d_sae = v[1]->shape[0];
    if (p->d_sae > INT32_MAX)
        return subsae__fail(SUBSAE_E_RANGE, SUBSAE_REASON_SHAPE_OVERFLOW,
                            "%s: d_sae %lld beyond 2^31", path, (long long)p->d_sae);
    rc = orient(path, v[0], p->d_sae, b_enc, enc_rows, &p->enc_rows, &p->d_in);
    if (!rc)
        rc = orient(path, v[2], p->d_sae, b_enc, dec_rows, &p->dec_rows, &p->d_out);
    if (!rc && v[3]) {
        char from[160];
        snprintf(from, sizeof from, "d_out of '%s'", w_dec);
        rc = vector(path, v[3], p->d_out, from);
    }
    if (rc)
        return rc;
    p->w_enc = v[0];
    p->b_enc = v[1];
    p->w_dec = v[2];
    p->b_dec = v[3];
    return SUBSAE_OK;
}

/* A threshold vector of d_sae values (exp of it when `log`). */
static int find_threshold(const char *path, const subsae__safetensors *st, const char *name,
                          bool log, struct parts *p)
{
    const struct subsae__tensor_view *t = subsae__safetensors_find(st, name);
    if (!t)
        return SUBSAE_OK;
    int rc = vector(path, t, p->d_sae, "d_sae, the length of the encoder bias");
    if (rc)
        return rc;
    p->thr = t;
    p->log_thr = log;
    return SUBSAE_OK;
}

/* The skip path W_skip [d_out, d_in] (SAELens and sparsify both keep
 * this orientation) when the file has one. */
static int find_skip(const char *path, const subsae__safetensors *st, struct parts *p)
{
    const struct subsae__tensor_view *t = subsae__safetensors_find(st, "W_skip");
    if (!t)
        return SUBSAE_OK;
    if (t->ndim != 2 || t->shape[0] != p->d_out || t->shape[1] != p->d_in) {
        char have[96];
        shape_text(t, have, sizeof have);
        return subsae__fail(SUBSAE_E_FORMAT,
                            t->ndim == 2 ? SUBSAE_REASON_DIM_MISMATCH : SUBSAE_REASON_BAD_SHAPE,
                            "%s: tensor 'W_skip' has shape [%s], expected [%lld, %lld] (d_out, "
                            "d_in)",
                            path, have, (long long)p->d_out, (long long)p->d_in);
    }
    p->w_skip = t;
    return check_float(path, t);
}

/* The model of the parts; it takes over p->metadata (also on failure). */
static int build(const char *path, struct parts *p, subsae_sae **out)
{
    char *metadata = p->metadata;
    p->metadata = NULL;
    if (p->apply_b_dec && p->d_in != p->d_out) {
        subsae__free(metadata);
        return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_DIM_MISMATCH,
                            "%s: the input is centred by b_dec but d_in %lld != d_out %lld",
                            path, (long long)p->d_in, (long long)p->d_out);
    }
    subsae_sae *sae;
    int rc = subsae__sae_new(p->d_in, p->d_out, p->d_sae, p->activation, &sae);
    if (rc) {
        subsae__free(metadata);
        return rc;
    }
    sae->metadata = metadata;
    if (p->k > 0)
        sae->k = p->k;
    sae->apply_b_dec_to_input = p->apply_b_dec;
    sae->rank_by_decoder_norm = p->rank_by_norm;
    sae->input_scale = p->s_in;
    sae->output_scale = p->s_out;
    sae->transcoder = p->transcoder || p->d_in != p->d_out;
    sae->matryoshka_count = p->matryoshka_count;
    memcpy(sae->matryoshka, p->matryoshka, sizeof sae->matryoshka);
    rc = read_tensor(p->w_enc, path, sae->W_enc, p->enc_rows ? 0 : p->d_sae);
    if (!rc)
        rc = read_tensor(p->w_dec, path, sae->W_dec, p->dec_rows ? 0 : p->d_sae);
    if (!rc)
        rc = read_tensor(p->b_enc, path, sae->b_enc, 0);
    if (!rc && p->b_dec)
        rc = read_tensor(p->b_dec, path, sae->b_dec, 0);
    if (!rc && p->r_mag)
        rc = read_tensor(p->r_mag, path, sae->r_mag, 0);
    if (!rc && p->b_mag)
        rc = read_tensor(p->b_mag, path, sae->b_mag, 0);
    if (!rc && p->w_skip)
        rc = subsae__sae_enable_skip(sae);
    if (!rc && p->w_skip)
        rc = read_tensor(p->w_skip, path, sae->W_skip, 0);
    if (!rc && p->thr) {
        rc = read_tensor(p->thr, path, sae->threshold, 0);
        for (int64_t f = 0; !rc && p->log_thr && f < p->d_sae; f++) {
            sae->threshold[f] = expf(sae->threshold[f]);
            if (!isfinite(sae->threshold[f]))
                rc = subsae__fail(SUBSAE_E_NONFINITE, SUBSAE_REASON_NONFINITE_INPUT,
                                  "%s: exp of '%s'[%lld] overflows", path, p->thr->name,
                                  (long long)f);
        }
    }
    if (rc) {
        subsae_sae_free(sae);
        return rc;
    }
    *out = sae;
    return SUBSAE_OK;
}

static bool needs_threshold(int activation)
{
    return activation == SUBSAE_ACT_JUMPRELU || activation == SUBSAE_ACT_BATCHTOPK;
}

static int check_k(const char *where, const struct parts *p, int64_t k)
{
    if (k < 1 || k > p->d_sae)
        return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_VALUE,
                            "%s: k %lld is missing or outside [1, d_sae = %lld]", where,
                            (long long)k, (long long)p->d_sae);
    return SUBSAE_OK;
}

/* ---- SAELens (and this library) ------------------------------------------ */

/* The members of a SAELens cfg.json that the library does not interpret
 * (hook_name, model_name, metadata, ...) as the model's metadata. */
static int keep_metadata(const json_t *cfg, struct parts *p)
{
    json_t *rest = json_deep_copy(cfg);
    if (!rest)
        return subsae__fail_nomem("cfg.json metadata", 4096);
    const char *key;
    json_t *value;
    void *tmp;
    json_object_foreach_safe(rest, tmp, key, value)
    {
        if (subsae__sae_own_member(key))
            json_object_del(rest, key);
    }
    int rc = SUBSAE_OK;
    if (json_object_size(rest) > 0 && !(p->metadata = subsae__json_compact(rest)))
        rc = subsae__fail_nomem("cfg.json metadata", 4096);
    json_decref(rest);
    return rc;
}

/* cfg.json's Matryoshka widths (ours, and SAELens' matryoshka_batchtopk
 * training config's), when present: strictly increasing, the last d_sae,
 * of a TopK or BatchTopK model. */
static int read_matryoshka(const json_t *cfg, const char *where, struct parts *p)
{
    const json_t *widths = json_object_get(cfg, "matryoshka_widths");
    if (!widths || json_is_null(widths))
        return SUBSAE_OK;
    return subsae__matryoshka_parse(widths, where, p->activation, p->d_sae, p->matryoshka,
                                    &p->matryoshka_count);
}

/* SAELens' transcoder architectures: the activation they hold. */
static bool transcoder_architecture(const char *arch, int *activation)
{
    if (!strcmp(arch, "transcoder"))
        *activation = SUBSAE_ACT_RELU;
    else if (!strcmp(arch, "jumprelu_transcoder"))
        *activation = SUBSAE_ACT_JUMPRELU;
    else
        return false;
    return true;
}

/* A gated model's r_mag and b_mag, vectors of d_sae, when the weights
 * have b_gate (`gate`); b_gate and the architecture `arch` must agree. */
static int find_gated(const char *path, const char *where, const char *arch, bool gate,
                      const subsae__safetensors *st, struct parts *p)
{
    if ((p->activation == SUBSAE_ACT_GATED) != gate)
        return gate ? subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_VALUE,
                                   "%s: tensor 'b_gate' but architecture '%s' (not gated)",
                                   where, arch ? arch : "(none)")
                    : missing(path, "b_gate");
    if (!gate)
        return SUBSAE_OK;
    const struct subsae__tensor_view *v[2] = {subsae__safetensors_find(st, "r_mag"),
                                              subsae__safetensors_find(st, "b_mag")};
    static const char *const names[2] = {"r_mag", "b_mag"};
    for (int i = 0; i < 2; i++) {
        if (!v[i])
            return missing(path, names[i]);
        int rc = vector(path, v[i], p->d_sae, "d_sae, the length of 'b_gate'");
        if (rc)
            return rc;
    }
    p->r_mag = v[0];
    p->b_mag = v[1];
    return SUBSAE_OK;
}

static int parse_saelens(const char *dir, const char *path, const subsae__safetensors *st,
                         json_t *cfg, const char *where, struct parts *p)
{
    const bool gate = subsae__safetensors_find(st, "b_gate") &&
                      !subsae__safetensors_find(st, "b_enc");
    int rc = find_parts(path, st, "W_enc", false, gate ? "b_gate" : "b_enc", "W_dec", true,
                        "b_dec", true, p);
    if (!rc) {
        rc = find_threshold(path, st, "threshold", false, p);
        if (!rc && !p->thr)
            rc = find_threshold(path, st, "log_threshold", true, p);
    }
    if (!rc)
        rc = find_skip(path, st, p);
    if (rc)
        return rc;
    const int64_t c_in = json_int_or(cfg, "d_in", -1), c_sae = json_int_or(cfg, "d_sae", -1);
    const int64_t c_out = json_int_or(cfg, "d_out", -1);
    if ((c_in >= 0 && c_in != p->d_in) || (c_sae >= 0 && c_sae != p->d_sae) ||
        (c_out >= 0 && c_out != p->d_out)) {
        rc = subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_DIM_MISMATCH,
                          "%s: cfg.json says d_in %lld, d_sae %lld but the tensors give d_in "
                          "%lld, d_sae %lld, d_out %lld",
                          dir, (long long)c_in, (long long)c_sae, (long long)p->d_in,
                          (long long)p->d_sae, (long long)p->d_out);
        return rc;
    }
    const char *arch = json_string_or(cfg, "architecture", NULL);
    const char *fn = json_string_or(cfg, "activation_fn_str", NULL);
    const bool fn_topk = fn && !strcmp(fn, "topk");
    p->transcoder = json_bool_or(cfg, "transcoder", 0) > 0;
    if (arch && transcoder_architecture(arch, &p->activation))
        p->transcoder = 1;
    else if (arch && !strcmp(arch, "skip_transcoder") && !p->w_skip)
        rc = missing(path, "W_skip");
    else if (arch && !strcmp(arch, "skip_transcoder")) {
        p->activation = SUBSAE_ACT_RELU;
        p->transcoder = 1;
    } else if (arch && !strcmp(arch, "topk"))
        p->activation = SUBSAE_ACT_TOPK;
    else if (arch && !strcmp(arch, "batchtopk"))
        p->activation = SUBSAE_ACT_BATCHTOPK;
    else if (arch && !strcmp(arch, "jumprelu"))
        p->activation = SUBSAE_ACT_JUMPRELU;
    else if ((arch && !strcmp(arch, "gated")) || (!arch && gate))
        p->activation = SUBSAE_ACT_GATED;
    else if (!arch || !strcmp(arch, "standard"))
        p->activation = !arch && p->thr ? SUBSAE_ACT_JUMPRELU
                        : fn_topk       ? SUBSAE_ACT_TOPK
                                        : SUBSAE_ACT_RELU;
    else
        rc = subsae__fail(SUBSAE_E_UNSUPPORTED, SUBSAE_REASON_BAD_VALUE,
                          "%s: architecture '%s' is not supported (topk, batchtopk, jumprelu, "
                          "gated, standard, transcoder, jumprelu_transcoder, skip_transcoder)",
                          where, arch);
    if (rc)
        return rc;
    rc = find_gated(path, where, arch, gate, st, p);
    if (rc)
        return rc;
    if (needs_threshold(p->activation) && !p->thr) {
        rc = subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_MISSING_TENSOR,
                          "%s: tensor 'threshold' is missing (needed by %s)", path,
                          subsae_activation_name(p->activation));
        return rc;
    }
    const char *norm = json_string_or(cfg, "normalize_activations", NULL);
    if (norm && strcmp(norm, "none") != 0) {
        rc = subsae__fail(SUBSAE_E_UNSUPPORTED, SUBSAE_REASON_BAD_VALUE,
                          "%s: normalize_activations '%s' needs a run-time scale that the "
                          "directory does not store; only 'none' is supported",
                          where, norm);
        return rc;
    }
    if (p->activation == SUBSAE_ACT_TOPK || p->activation == SUBSAE_ACT_BATCHTOPK) {
        p->k = json_int_or(cfg, "k", -1);
        const json_t *kw = json_object_get(cfg, "activation_fn_kwargs");
        if (p->k < 0 && kw)
            p->k = json_int_or(kw, "k", -1);
        rc = check_k(where, p, p->k);
        if (rc)
            return rc;
    }
    int apply = json_bool_or(cfg, "apply_b_dec_to_input", -1);
    if (apply == 1 && p->d_in != p->d_out) {
        rc = subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_DIM_MISMATCH,
                          "%s: apply_b_dec_to_input with d_in %lld != d_out %lld", where,
                          (long long)p->d_in, (long long)p->d_out);
        return rc;
    }
    p->apply_b_dec = apply >= 0 ? apply : p->d_in == p->d_out && !p->transcoder;
    p->rank_by_norm = json_bool_or(cfg, "rank_by_decoder_norm", 0) > 0;
    rc = read_matryoshka(cfg, where, p);
    return rc ? rc : keep_metadata(cfg, p);
}

/* ---- EleutherAI sparsify ------------------------------------------------------ */

static int parse_sparsify(const char *dir, const char *path, const subsae__safetensors *st,
                          json_t *cfg, const char *where, struct parts *p)
{
    (void)dir; /* its messages name the files */
    int rc = find_parts(path, st, "encoder.weight", true, "encoder.bias", "W_dec", true,
                        "b_dec", true, p);
    if (rc)
        return rc;
    rc = find_skip(path, st, p); /* sparsify's skip_connection */
    if (rc)
        return rc;
    const char *act = json_string_or(cfg, "activation", "topk");
    if (strcmp(act, "topk") != 0) {
        rc = subsae__fail(SUBSAE_E_UNSUPPORTED, SUBSAE_REASON_BAD_VALUE,
                          "%s: sparsify activation '%s' is not supported (topk)", where, act);
        return rc;
    }
    const int64_t c_in = json_int_or(cfg, "d_in", -1);
    const int64_t latents = json_int_or(cfg, "num_latents", 0);
    const double expansion = json_number_or(cfg, "expansion_factor", 0.0);
    const int64_t want_sae = latents > 0                 ? latents
                             : expansion > 0 && c_in > 0 ? expanded(c_in, expansion)
                                                         : p->d_sae;
    if ((c_in >= 0 && c_in != p->d_in) || want_sae != p->d_sae) {
        rc = subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_DIM_MISMATCH,
                          "%s: d_in %lld and num_latents %lld (expansion_factor %g) disagree "
                          "with encoder.weight [%lld, %lld]",
                          where, (long long)c_in, (long long)latents, expansion,
                          (long long)p->d_sae, (long long)p->d_in);
        return rc;
    }
    const int transcode = json_bool_or(cfg, "transcode", 0) > 0;
    if (!transcode && p->d_in != p->d_out) {
        rc = subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_DIM_MISMATCH,
                          "%s: not a transcoder, but d_in %lld != d_out %lld", where,
                          (long long)p->d_in, (long long)p->d_out);
        return rc;
    }
    p->activation = SUBSAE_ACT_TOPK;
    p->k = json_int_or(cfg, "k", -1);
    rc = check_k(where, p, p->k);
    if (rc)
        return rc;
    p->apply_b_dec = !transcode; /* sparsify subtracts b_dec unless transcoding */
    p->transcoder = transcode;
    return SUBSAE_OK;
}

/* ---- OpenMOSS lm-saes ------------------------------------------------------------- */

/* sqrt(d_model) / the dataset's average norm at `hook` (a scalar tensor
 * dataset_average_activation_norm.<hook>). */
static int lm_saes_scale(const char *path, const subsae__safetensors *st, const char *hook,
                         int64_t d_model, double *scale)
{
    char name[512];
    snprintf(name, sizeof name, "dataset_average_activation_norm.%s", hook ? hook : "");
    const struct subsae__tensor_view *t = hook ? subsae__safetensors_find(st, name) : NULL;
    if (!t)
        return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_MISSING_TENSOR,
                            "%s: norm_activation is dataset-wise but tensor '%s' is missing",
                            path, name);
    size_t count = 1;
    for (int i = 0; i < t->ndim; i++)
        count *= (size_t)t->shape[i];
    int rc = check_float(path, t);
    if (!rc && count != 1)
        rc = subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_SHAPE,
                          "%s: tensor '%s' holds %zu values, not one", path, name, count);
    float norm = 0.0f;
    if (!rc)
        rc = read_tensor(t, path, &norm, 0);
    if (!rc && !(norm > 0.0f))
        rc = subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_VALUE,
                          "%s: tensor '%s' = %g is not a positive norm", path, name,
                          (double)norm);
    const double s = sqrt((double)d_model) / (double)norm;
    /* A scale is a float of the model (subsae_sae_set_double's rule). */
    if (!rc && !(isfinite((float)s) && (float)s > 0.0f))
        rc = subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_VALUE,
                          "%s: tensor '%s' = %g gives the scale sqrt(d_model) / norm = %g, "
                          "outside float",
                          path, name, (double)norm, s);
    if (!rc)
        *scale = s;
    return rc;
}

/* lm-saes' hook points as SAELens' names, "hook_name" (and
 * "hook_name_out" for a transcoder): the model's metadata. */
static int hook_metadata(const char *in, const char *out, struct parts *p)
{
    json_t *meta = json_pack("{s:s}", "hook_name", in);
    if (meta && out && strcmp(in, out) != 0 &&
        json_object_set_new(meta, "hook_name_out", json_string(out))) {
        json_decref(meta);
        meta = NULL;
    }
    if (meta)
        p->metadata = subsae__json_compact(meta);
    json_decref(meta);
    return p->metadata ? SUBSAE_OK : subsae__fail_nomem("lm-saes hook names", 256);
}

static int parse_lm_saes(const char *dir, const char *path, const subsae__safetensors *st,
                         json_t *cfg, const char *where, struct parts *p)
{
    (void)dir; /* its messages name the files */
    int rc = SUBSAE_OK;
    const char *type = json_string_or(cfg, "sae_type", "sae");
    const int bias = json_bool_or(cfg, "use_decoder_bias", 1);
    if (strcmp(type, "sae") != 0) {
        rc = subsae__fail(SUBSAE_E_UNSUPPORTED, SUBSAE_REASON_BAD_VALUE,
                          "%s: lm-saes sae_type '%s' is not supported (sae)", where, type);
        return rc;
    }
    rc = find_parts(path, st, "W_E", false, "b_E", "W_D", true, "b_D", bias != 0, p);
    if (rc)
        return rc;
    if (json_bool_or(cfg, "use_glu_encoder", 0) > 0 ||
        subsae__safetensors_find(st, "W_E_glu")) {
        rc = subsae__fail(SUBSAE_E_UNSUPPORTED, SUBSAE_REASON_BAD_VALUE,
                          "%s: a GLU encoder is not part of this library's model", where);
        return rc;
    }
    const int64_t d_model = json_int_or(cfg, "d_model", p->d_in);
    const double expansion = json_number_or(cfg, "expansion_factor", 0.0);
    if (d_model != p->d_in || (expansion > 0 && expanded(d_model, expansion) != p->d_sae)) {
        rc = subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_DIM_MISMATCH,
                          "%s: d_model %lld and expansion_factor %g disagree with W_E [%lld, "
                          "%lld]",
                          where, (long long)d_model, expansion, (long long)p->d_in,
                          (long long)p->d_sae);
        return rc;
    }
    const char *act = json_string_or(cfg, "act_fn", "relu");
    if (!strcmp(act, "relu")) {
        p->activation = SUBSAE_ACT_RELU;
    } else if (!strcmp(act, "topk")) {
        p->activation = SUBSAE_ACT_TOPK;
        p->k = json_int_or(cfg, "top_k", 50);
        rc = check_k(where, p, p->k);
    } else if (!strcmp(act, "jumprelu")) {
        p->activation = SUBSAE_ACT_JUMPRELU;
        rc = find_threshold(path, st, "activation_function.log_jumprelu_threshold", true, p);
        if (!rc && !p->thr)
            rc = find_threshold(path, st, "log_jumprelu_threshold", true, p);
        if (!rc && !p->thr)
            rc = missing(path, "activation_function.log_jumprelu_threshold");
    } else if (!strcmp(act, "batchtopk")) {
        rc = subsae__fail(SUBSAE_E_UNSUPPORTED, SUBSAE_REASON_BAD_VALUE,
                          "%s: lm-saes batchtopk selects over each batch and stores no "
                          "inference threshold; convert it to jumprelu first",
                          where);
    } else {
        rc = subsae__fail(SUBSAE_E_UNSUPPORTED, SUBSAE_REASON_BAD_VALUE,
                          "%s: act_fn '%s' is not supported (relu, topk, jumprelu)", where,
                          act);
    }
    if (rc)
        return rc;
    const char *in = json_string_or(cfg, "hook_point_in", NULL);
    const char *out_hook = json_string_or(cfg, "hook_point_out", in);
    p->transcoder = in && out_hook && strcmp(in, out_hook) != 0;
    if (in)
        rc = hook_metadata(in, out_hook, p);
    if (rc)
        return rc;
    const char *norm = json_string_or(cfg, "norm_activation", "dataset-wise");
    if (!strcmp(norm, "dataset-wise")) {
        rc = lm_saes_scale(path, st, in, d_model, &p->s_in);
        if (!rc)
            rc = lm_saes_scale(path, st, out_hook, d_model, &p->s_out);
    } else if (strcmp(norm, "inference") != 0) {
        rc = subsae__fail(SUBSAE_E_UNSUPPORTED, SUBSAE_REASON_BAD_VALUE,
                          "%s: norm_activation '%s' scales each token or batch by its own "
                          "norm, which is not linear; dataset-wise and inference are supported",
                          where, norm);
    }
    if (rc)
        return rc;
    p->apply_b_dec = 0; /* lm-saes does not subtract b_D from the input */
    p->rank_by_norm = json_bool_or(cfg, "sparsity_include_decoder_norm", 1) > 0;
    return SUBSAE_OK;
}

/* A layout's reading of its configuration `cfg` (the file `where` of
 * `dir`) and of the tensors of `st` (the file `path`) into the parts of a
 * model. */
typedef int (*parse_config)(const char *dir, const char *path, const subsae__safetensors *st,
                            json_t *cfg, const char *where, struct parts *p);

/* Read the configuration file `config` of `dir`, parse it with `parse`
 * and build the model. */
static int load_with(parse_config parse, const char *config, const char *dir, const char *path,
                     const subsae__safetensors *st, subsae_sae **out)
{
    json_t *cfg;
    char where[WHERE_MAX];
    int rc = read_json(dir, config, &cfg, where);
    if (rc)
        return rc;
    struct parts p = {0};
    rc = parse(dir, path, st, cfg, where, &p);
    if (!rc)
        rc = build(path, &p, out);
    subsae__free(p.metadata); /* NULL once build took it */
    json_decref(cfg);
    return rc;
}

/* ---- the layouts ----------------------------------------------------------------- */

static const char *const WEIGHT_FILES[] = {"sae_weights.safetensors", "sae.safetensors"};

int subsae_sae_load(const char *dir, subsae_sae **out)
{
    static const char *fn = "subsae_sae_load";
    SUBSAE__NOT_NULL(fn, dir);
    SUBSAE__NOT_NULL(fn, out);
    subsae__safetensors *st = NULL;
    char *path = NULL;
    int rc = SUBSAE_OK;
    for (size_t i = 0; i < sizeof WEIGHT_FILES / sizeof WEIGHT_FILES[0]; i++) {
        path = subsae__path_join(dir, WEIGHT_FILES[i]);
        if (!path)
            return subsae__fail_nomem("path", strlen(dir) + 32);
        rc = subsae__safetensors_open(path, &st);
        if (!rc)
            break;
        subsae__free(path);
        path = NULL;
        if (subsae_last_error_reason() != SUBSAE_REASON_SYSTEM)
            return rc;
    }
    if (!st)
        return subsae__fail(SUBSAE_E_IO, SUBSAE_REASON_SYSTEM,
                            "%s: not an SAE directory: no sae_weights.safetensors or "
                            "sae.safetensors (with cfg.json or config.json)",
                            dir);
    subsae_sae *sae = NULL;
    if (subsae__safetensors_find(st, "encoder.weight")) {
        rc = load_with(parse_sparsify, "cfg.json", dir, path, st, &sae);
    } else if (subsae__safetensors_find(st, "W_E") || subsae__safetensors_find(st, "W_D")) {
        rc = load_with(parse_lm_saes, "config.json", dir, path, st, &sae);
    } else if (subsae__safetensors_find(st, "W_enc") || subsae__safetensors_find(st, "W_dec")) {
        rc = load_with(parse_saelens, "cfg.json", dir, path, st, &sae);
    } else {
        rc = subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_MISSING_TENSOR,
                          "%s: no weights of a known layout (W_enc/W_dec: SAELens; "
                          "encoder.weight/W_dec: sparsify; W_E/W_D: lm-saes)",
                          path);
    }
    subsae__safetensors_close(st);
    subsae__free(path);
    if (rc)
        return rc;
    *out = sae;
    return SUBSAE_OK;
}
