/* Save and load SAEs as directories that SAE tools read: cfg.json plus
 * sae_weights.safetensors in the SAELens layout (W_enc [d_in, d_sae],
 * b_enc [d_sae], W_dec [d_sae, d_out], b_dec [d_out], threshold [d_sae]),
 * float32, activation scales folded in. Loading recognises a layout by the
 * tensors' names and shapes through a table of readers, so that the
 * layouts of other trainers (EleutherAI sparsify, OpenMOSS lm-saes) can be
 * added next to the SAELens one. */
#include "io.h"
#include "sae.h"

#include "dtype.h"
#include "kernels.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

static const char WEIGHTS_FILE[] = "sae_weights.safetensors";
static const char CONFIG_FILE[] = "cfg.json";

static char *join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *path = subsae__malloc(n);
    if (path)
        snprintf(path, n, "%s/%s", dir, name);
    return path;
}

/* SAELens names of the architectures. */
static const char *architecture_name(int activation)
{
    switch (activation) {
    case SUBSAE_ACT_TOPK: return "topk";
    case SUBSAE_ACT_BATCHTOPK: return "batchtopk";
    case SUBSAE_ACT_JUMPRELU: return "jumprelu";
    default: return "standard";
    }
}

static bool has_threshold(int activation)
{
    return activation == SUBSAE_ACT_JUMPRELU || activation == SUBSAE_ACT_BATCHTOPK;
}

static int write_config(const subsae_sae *sae, const char *path)
{
    json_t *root = json_object();
    json_t *kwargs = json_object();
    int bad = !root || !kwargs;
    bad |= json_object_set_new(root, "architecture",
                               json_string(architecture_name(sae->activation)));
    bad |= json_object_set_new(root, "d_in", json_integer(sae->d_in));
    bad |= json_object_set_new(root, "d_sae", json_integer(sae->d_sae));
    if (sae->d_out != sae->d_in)
        bad |= json_object_set_new(root, "d_out", json_integer(sae->d_out));
    bad |= json_object_set_new(root, "k", json_integer(sae->k));
    bad |= json_object_set_new(root, "dtype", json_string("float32"));
    bad |= json_object_set_new(root, "apply_b_dec_to_input",
                               json_boolean(sae->apply_b_dec_to_input));
    bad |= json_object_set_new(root, "normalize_activations", json_string("none"));
    bad |= json_object_set_new(root, "activation_fn_str",
                               json_string(sae->activation == SUBSAE_ACT_TOPK ? "topk" : "relu"));
    if (kwargs && sae->activation == SUBSAE_ACT_TOPK)
        bad |= json_object_set_new(kwargs, "k", json_integer(sae->k));
    bad |= json_object_set(root, "activation_fn_kwargs", kwargs);
    bad |= json_object_set_new(root, "rank_by_decoder_norm",
                               json_boolean(sae->rank_by_decoder_norm));
    bad |= json_object_set_new(root, "library", json_string("libsubsae"));
    bad |= json_object_set_new(root, "library_version", json_string(subsae_version_string()));
    json_decref(kwargs);
    char *text = bad ? NULL : json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(root);
    if (!text)
        return subsae__fail_nomem("cfg.json", 4096);
    subsae__atomic_file *f;
    int rc = subsae__atomic_open(path, &f);
    if (!rc) {
        rc = subsae__atomic_write(f, text, strlen(text));
        if (!rc)
            rc = subsae__atomic_write(f, "\n", 1);
        if (!rc)
            rc = subsae__atomic_commit(f);
        else
            subsae__atomic_abort(f);
    }
    free(text);
    return rc;
}

int subsae_sae_save(const subsae_sae *sae, const char *dir)
{
    static const char *fn = "subsae_sae_save";
    if (!sae)
        return subsae__fail_null(fn, "sae");
    if (!dir)
        return subsae__fail_null(fn, "dir");
    int rc = subsae__sae_check_finite(sae, fn);
    if (rc)
        return rc;
    rc = subsae__make_dir(dir);
    if (rc)
        return rc;
    subsae_sae *folded = NULL;
    float *w_enc_t = NULL;
    char *weights = join(dir, WEIGHTS_FILE), *config = join(dir, CONFIG_FILE);
    if (!weights || !config) {
        rc = subsae__fail_nomem("path", strlen(dir) + 32);
        goto done;
    }
    rc = subsae_sae_clone(sae, &folded);
    if (rc)
        goto done;
    subsae_sae_fold_scales(folded);
    const int64_t d_in = folded->d_in, d_out = folded->d_out, m = folded->d_sae;
    w_enc_t = subsae__malloc((size_t)(m * d_in) * sizeof *w_enc_t);
    if (!w_enc_t) {
        rc = subsae__fail_nomem("transposed encoder", (size_t)(m * d_in) * 4);
        goto done;
    }
    /* The file holds W_enc as [d_in, d_sae]: transpose in tiles. */
    for (int64_t f0 = 0; f0 < m; f0 += 64)
        for (int64_t j0 = 0; j0 < d_in; j0 += 64)
            for (int64_t f = f0; f < f0 + 64 && f < m; f++)
                for (int64_t j = j0; j < j0 + 64 && j < d_in; j++)
                    w_enc_t[j * m + f] = folded->W_enc[f * d_in + j];
    struct subsae__tensor_view views[5] = {
        {.name = "W_enc", .dtype = SUBSAE_DTYPE_F32, .ndim = 2, .shape = {d_in, m},
         .data = w_enc_t, .bytes = (size_t)(m * d_in) * 4},
        {.name = "b_enc", .dtype = SUBSAE_DTYPE_F32, .ndim = 1, .shape = {m},
         .data = folded->b_enc, .bytes = (size_t)m * 4},
        {.name = "W_dec", .dtype = SUBSAE_DTYPE_F32, .ndim = 2, .shape = {m, d_out},
         .data = folded->W_dec, .bytes = (size_t)(m * d_out) * 4},
        {.name = "b_dec", .dtype = SUBSAE_DTYPE_F32, .ndim = 1, .shape = {d_out},
         .data = folded->b_dec, .bytes = (size_t)d_out * 4},
        {.name = "threshold", .dtype = SUBSAE_DTYPE_F32, .ndim = 1, .shape = {m},
         .data = folded->threshold, .bytes = (size_t)m * 4},
    };
    rc = subsae__safetensors_write(weights, views, has_threshold(folded->activation) ? 5 : 4,
                                   NULL, NULL, 0);
    if (!rc)
        rc = write_config(folded, config);
done:
    subsae_sae_free(folded);
    subsae__free(w_enc_t);
    subsae__free(weights);
    subsae__free(config);
    return rc;
}

/* ---- loading ---------------------------------------------------------------- */

/* What cfg.json says (fields absent keep their "unknown" value). */
struct config {
    const char *architecture, *activation_fn, *normalize;
    int64_t d_in, d_sae, d_out, k;
    int apply_b_dec; /* -1 unknown */
    int rank_by_norm;
};

static int read_config(const char *dir, json_t **root, struct config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->d_in = cfg->d_sae = cfg->d_out = cfg->k = -1;
    cfg->apply_b_dec = cfg->rank_by_norm = -1;
    *root = NULL;
    char *path = join(dir, CONFIG_FILE);
    if (!path)
        return subsae__fail_nomem("path", strlen(dir) + 16);
    void *map;
    size_t size;
    int rc = subsae__map_file(path, &map, &size);
    if (rc) {
        subsae__free(path);
        return rc;
    }
    json_error_t error;
    json_t *j = json_loadb(map ? map : "", size, JSON_REJECT_DUPLICATES, &error);
    if (map)
        munmap(map, size);
    if (!j || !json_is_object(j)) {
        json_decref(j);
        rc = subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_HEADER,
                          "%s: not a JSON object (%s, line %d)", path,
                          j ? "top level" : error.text, error.line);
        subsae__free(path);
        return rc;
    }
    subsae__free(path);
    const json_t *v;
    if ((v = json_object_get(j, "architecture")) && json_is_string(v))
        cfg->architecture = json_string_value(v);
    if ((v = json_object_get(j, "activation_fn_str")) && json_is_string(v))
        cfg->activation_fn = json_string_value(v);
    if ((v = json_object_get(j, "normalize_activations")) && json_is_string(v))
        cfg->normalize = json_string_value(v);
    if ((v = json_object_get(j, "d_in")) && json_is_integer(v))
        cfg->d_in = json_integer_value(v);
    if ((v = json_object_get(j, "d_sae")) && json_is_integer(v))
        cfg->d_sae = json_integer_value(v);
    if ((v = json_object_get(j, "d_out")) && json_is_integer(v))
        cfg->d_out = json_integer_value(v);
    if ((v = json_object_get(j, "k")) && json_is_integer(v))
        cfg->k = json_integer_value(v);
    const json_t *kw = json_object_get(j, "activation_fn_kwargs");
    if (cfg->k < 0 && kw && (v = json_object_get(kw, "k")) && json_is_integer(v))
        cfg->k = json_integer_value(v);
    if ((v = json_object_get(j, "apply_b_dec_to_input")) && json_is_boolean(v))
        cfg->apply_b_dec = json_is_true(v);
    if ((v = json_object_get(j, "rank_by_decoder_norm")) && json_is_boolean(v))
        cfg->rank_by_norm = json_is_true(v);
    *root = j;
    return SUBSAE_OK;
}

/* A tensor of the file by name; FORMAT/MISSING_TENSOR when absent, and a
 * shape check: ndim dims, each equal to want[i] unless want[i] < 0. */
static int get_tensor(const subsae__safetensors *st, const char *path, const char *name,
                      int ndim, const int64_t *want, const struct subsae__tensor_view **out)
{
    const struct subsae__tensor_view *t = subsae__safetensors_find(st, name);
    if (!t)
        return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_MISSING_TENSOR,
                            "%s: tensor '%s' is missing", path, name);
    bool ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++)
        ok = t->shape[i] > 0 && (want[i] < 0 || t->shape[i] == want[i]);
    if (!ok) {
        char have[96] = "", wanted[96] = "";
        for (int i = 0; i < t->ndim && i < 8; i++)
            snprintf(have + strlen(have), sizeof have - strlen(have), "%s%lld", i ? ", " : "",
                     (long long)t->shape[i]);
        for (int i = 0; i < ndim; i++) {
            if (want[i] < 0)
                snprintf(wanted + strlen(wanted), sizeof wanted - strlen(wanted), "%s?",
                         i ? ", " : "");
            else
                snprintf(wanted + strlen(wanted), sizeof wanted - strlen(wanted), "%s%lld",
                         i ? ", " : "", (long long)want[i]);
        }
        return subsae__fail(SUBSAE_E_FORMAT,
                            t->ndim == ndim ? SUBSAE_REASON_DIM_MISMATCH
                                            : SUBSAE_REASON_BAD_SHAPE,
                            "%s: tensor '%s' has shape [%s], expected [%s]", path, name, have,
                            wanted);
    }
    if (t->dtype != SUBSAE_DTYPE_F32 && t->dtype != SUBSAE_DTYPE_F16 &&
        t->dtype != SUBSAE_DTYPE_BF16 && t->dtype != SUBSAE_DTYPE_F64)
        return subsae__fail(SUBSAE_E_UNSUPPORTED, SUBSAE_REASON_UNSUPPORTED_DTYPE,
                            "%s: tensor '%s' has dtype %s; weights must be floating point", path,
                            name, subsae__safetensors_dtype_name(t->dtype));
    *out = t;
    return SUBSAE_OK;
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
            const unsigned char *src =
                (const unsigned char *)t->data + (size_t)(r * cols) * element;
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

static int activation_from_config(const struct config *cfg, bool threshold, const char *dir,
                                  int *activation)
{
    const char *a = cfg->architecture;
    if (a && !strcmp(a, "topk"))
        *activation = SUBSAE_ACT_TOPK;
    else if (a && !strcmp(a, "batchtopk"))
        *activation = SUBSAE_ACT_BATCHTOPK;
    else if (a && !strcmp(a, "jumprelu"))
        *activation = SUBSAE_ACT_JUMPRELU;
    else if (a && !strcmp(a, "standard"))
        *activation = cfg->activation_fn && !strcmp(cfg->activation_fn, "topk")
                          ? SUBSAE_ACT_TOPK
                          : SUBSAE_ACT_RELU;
    else if (!a)
        *activation = threshold ? SUBSAE_ACT_JUMPRELU
                      : cfg->activation_fn && !strcmp(cfg->activation_fn, "topk")
                          ? SUBSAE_ACT_TOPK
                          : SUBSAE_ACT_RELU;
    else
        return subsae__fail(SUBSAE_E_UNSUPPORTED, SUBSAE_REASON_BAD_VALUE,
                            "%s/%s: architecture '%s' is not supported (topk, batchtopk, "
                            "jumprelu, standard)",
                            dir, CONFIG_FILE, a);
    return SUBSAE_OK;
}

/* The SAELens layout (also this library's). */
static int load_saelens(const char *dir, const char *path, const subsae__safetensors *st,
                        const struct config *cfg, subsae_sae **out)
{
    const struct subsae__tensor_view *w_enc, *b_enc, *w_dec, *b_dec, *thr = NULL;
    const int64_t any2[2] = {-1, -1};
    int rc = get_tensor(st, path, "W_enc", 2, any2, &w_enc);
    if (rc)
        return rc;
    const int64_t d_in = w_enc->shape[0], m = w_enc->shape[1];
    const int64_t dec_shape[2] = {m, -1};
    rc = get_tensor(st, path, "W_dec", 2, dec_shape, &w_dec);
    if (rc)
        return rc;
    const int64_t d_out = w_dec->shape[1];
    if (!rc)
        rc = get_tensor(st, path, "b_enc", 1, &m, &b_enc);
    if (!rc)
        rc = get_tensor(st, path, "b_dec", 1, &d_out, &b_dec);
    if (!rc && subsae__safetensors_find(st, "threshold"))
        rc = get_tensor(st, path, "threshold", 1, &m, &thr);
    if (rc)
        return rc;
    if ((cfg->d_in >= 0 && cfg->d_in != d_in) || (cfg->d_sae >= 0 && cfg->d_sae != m) ||
        (cfg->d_out >= 0 && cfg->d_out != d_out))
        return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_DIM_MISMATCH,
                            "%s: cfg.json says d_in %lld, d_sae %lld but W_enc is [%lld, %lld] "
                            "and W_dec [%lld, %lld]",
                            dir, (long long)cfg->d_in, (long long)cfg->d_sae, (long long)d_in,
                            (long long)m, (long long)m, (long long)d_out);
    if (d_in > INT32_MAX || d_out > INT32_MAX || m > INT32_MAX)
        return subsae__fail(SUBSAE_E_RANGE, SUBSAE_REASON_SHAPE_OVERFLOW,
                            "%s: dimensions beyond 2^31", path);
    int activation;
    rc = activation_from_config(cfg, thr != NULL, dir, &activation);
    if (rc)
        return rc;
    if (has_threshold(activation) && !thr)
        return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_MISSING_TENSOR,
                            "%s: tensor 'threshold' is missing (needed by %s)", path,
                            subsae_activation_name(activation));
    if (cfg->normalize && strcmp(cfg->normalize, "none") != 0)
        return subsae__fail(SUBSAE_E_UNSUPPORTED, SUBSAE_REASON_BAD_VALUE,
                            "%s/%s: normalize_activations '%s' needs a run-time scale that the "
                            "directory does not store; only 'none' is supported",
                            dir, CONFIG_FILE, cfg->normalize);
    int64_t k = 0;
    if (activation == SUBSAE_ACT_TOPK || activation == SUBSAE_ACT_BATCHTOPK) {
        k = cfg->k;
        if (k < 1 || k > m)
            return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_VALUE,
                                "%s/%s: k %lld is missing or outside [1, d_sae = %lld]", dir,
                                CONFIG_FILE, (long long)k, (long long)m);
    }
    if (cfg->apply_b_dec == 1 && d_in != d_out)
        return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_DIM_MISMATCH,
                            "%s/%s: apply_b_dec_to_input with d_in %lld != d_out %lld", dir,
                            CONFIG_FILE, (long long)d_in, (long long)d_out);
    subsae_sae *sae;
    rc = subsae__sae_new(d_in, d_out, m, activation, &sae);
    if (rc)
        return rc;
    if (k > 0)
        sae->k = k;
    sae->apply_b_dec_to_input = cfg->apply_b_dec >= 0 ? cfg->apply_b_dec : d_in == d_out;
    sae->rank_by_decoder_norm = cfg->rank_by_norm > 0;
    rc = read_tensor(w_enc, path, sae->W_enc, m);
    if (!rc)
        rc = read_tensor(w_dec, path, sae->W_dec, 0);
    if (!rc)
        rc = read_tensor(b_enc, path, sae->b_enc, 0);
    if (!rc)
        rc = read_tensor(b_dec, path, sae->b_dec, 0);
    if (!rc && thr)
        rc = read_tensor(thr, path, sae->threshold, 0);
    if (rc) {
        subsae_sae_free(sae);
        return rc;
    }
    *out = sae;
    return SUBSAE_OK;
}

/* Readers of known layouts: `weights` is the file name inside the
 * directory, `recognise` tells from the tensor names whether the file is
 * in this layout, `load` reads it (checking every shape). */
struct layout {
    const char *name;
    const char *weights;
    bool (*recognise)(const subsae__safetensors *st);
    int (*load)(const char *dir, const char *path, const subsae__safetensors *st,
                const struct config *cfg, subsae_sae **out);
};

static bool is_saelens(const subsae__safetensors *st)
{
    return subsae__safetensors_find(st, "W_enc") || subsae__safetensors_find(st, "W_dec");
}

static const struct layout layouts[] = {
    {"SAELens", WEIGHTS_FILE, is_saelens, load_saelens},
};

int subsae_sae_load(const char *dir, subsae_sae **out)
{
    static const char *fn = "subsae_sae_load";
    if (!dir)
        return subsae__fail_null(fn, "dir");
    if (!out)
        return subsae__fail_null(fn, "out");
    json_t *root = NULL;
    struct config cfg;
    int rc = read_config(dir, &root, &cfg);
    if (rc)
        return rc;
    rc = SUBSAE_E_FORMAT;
    bool found_file = false;
    for (size_t i = 0; i < sizeof layouts / sizeof layouts[0]; i++) {
        char *path = join(dir, layouts[i].weights);
        if (!path) {
            rc = subsae__fail_nomem("path", strlen(dir) + 32);
            break;
        }
        subsae__safetensors *st;
        rc = subsae__safetensors_open(path, &st);
        if (rc) {
            bool missing = subsae_last_error_reason() == SUBSAE_REASON_SYSTEM;
            subsae__free(path);
            if (missing)
                continue; /* try the next layout's file name */
            break;
        }
        found_file = true;
        if (layouts[i].recognise(st)) {
            rc = layouts[i].load(dir, path, st, &cfg, out);
        } else {
            rc = subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_MISSING_TENSOR,
                              "%s: no W_enc/W_dec tensors: not an SAE in the %s layout", path,
                              layouts[i].name);
        }
        subsae__safetensors_close(st);
        subsae__free(path);
        break;
    }
    if (!found_file && rc != SUBSAE_E_NOMEM && rc != SUBSAE_OK)
        rc = subsae__fail(SUBSAE_E_IO, SUBSAE_REASON_SYSTEM, "%s: no %s in the directory", dir,
                          WEIGHTS_FILE);
    json_decref(root);
    return rc;
}
