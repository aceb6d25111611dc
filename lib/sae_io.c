/* Save SAEs as directories that SAE tools read: cfg.json plus
 * sae_weights.safetensors in the SAELens layout (W_enc [d_in, d_sae],
 * b_enc [d_sae], W_dec [d_sae, d_out], b_dec [d_out], threshold [d_sae]
 * for JumpReLU and BatchTopK; a gated model has b_gate, r_mag, b_mag
 * [d_sae] in place of b_enc, architecture "gated"; a skip transcoder adds
 * W_skip [d_out, d_in]), float32, activation scales folded in.
 * Loading, of this layout and of the other trainers', is in
 * sae_import.c. */
#include "io.h"
#include "sae.h"

#include "dtype.h"
#include "kernels.h"
#include "matryoshka.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

static const char WEIGHTS_FILE[] = "sae_weights.safetensors";
static const char CONFIG_FILE[] = "cfg.json";

/* SAELens names of the architectures. A transcoder that SAELens can hold
 * (ReLU or JumpReLU, b_dec not subtracted from the input) gets SAELens'
 * transcoder architecture; the others keep their activation's name with
 * "transcoder": true (SAELens has no TopK transcoder). A ReLU skip
 * transcoder is SAELens' skip_transcoder; the others with a skip path are
 * told by their W_skip tensor. */
static const char *architecture_name(const subsae_sae *sae)
{
    const bool transcoder = sae->transcoder && !sae->apply_b_dec_to_input;
    switch (sae->activation) {
    case SUBSAE_ACT_TOPK: return "topk";
    case SUBSAE_ACT_BATCHTOPK: return "batchtopk";
    case SUBSAE_ACT_JUMPRELU: return transcoder ? "jumprelu_transcoder" : "jumprelu";
    case SUBSAE_ACT_GATED: return "gated";
    default: return !transcoder ? "standard" : sae->skip ? "skip_transcoder" : "transcoder";
    }
}

/* The members of cfg.json the library writes (and reads) itself: caller
 * metadata may not hold them, and subsae_sae_load keeps every other
 * member as the model's metadata. */
static const char *const OWN_MEMBERS[] = {"architecture",
                                          "d_in",
                                          "d_sae",
                                          "d_out",
                                          "k",
                                          "dtype",
                                          "apply_b_dec_to_input",
                                          "normalize_activations",
                                          "activation_fn_str",
                                          "activation_fn_kwargs",
                                          "rank_by_decoder_norm",
                                          "library",
                                          "library_version",
                                          "transcoder",
                                          "matryoshka_widths"};

bool subsae__sae_own_member(const char *key)
{
    for (size_t i = 0; i < sizeof OWN_MEMBERS / sizeof OWN_MEMBERS[0]; i++)
        if (!strcmp(key, OWN_MEMBERS[i]))
            return true;
    return false;
}

/* Jansson's text as a string of the library's allocator. */
static char *dump_compact(const json_t *object)
{
    char *text = json_dumps(object, JSON_COMPACT);
    if (!text)
        return NULL;
    char *copy = subsae__strdup(text);
    json_free_t free_text; /* Jansson's own: it may not be free() */
    json_get_alloc_funcs(NULL, &free_text);
    free_text(text);
    return copy;
}

char *subsae__json_compact(const json_t *object)
{
    return json_object_size(object) > 0 ? dump_compact(object) : NULL;
}

int subsae__metadata_normalize(const char *fn, const char *json, char **out)
{
    *out = NULL;
    if (!json || !json[0])
        return SUBSAE_OK;
    json_error_t error;
    bool out_of_memory;
    json_t *root = subsae__json_parse(json, strlen(json), &error, &out_of_memory);
    if (out_of_memory)
        return subsae__fail_nomem("metadata", strlen(json));
    if (!json_is_object(root)) {
        json_decref(root);
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                            "%s: the metadata is not a JSON object%s%s", fn, root ? "" : ": ",
                            root ? "" : error.text);
    }
    const char *key;
    json_t *value;
    json_object_foreach(root, key, value)
    {
        if (subsae__sae_own_member(key)) {
            /* The message first: `key` lives in `root`. */
            int rc = subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                                  "%s: metadata member '%s' is written by the library itself "
                                  "(reserved: architecture, d_in, d_sae, d_out, k, dtype, "
                                  "apply_b_dec_to_input, normalize_activations, "
                                  "activation_fn_str, activation_fn_kwargs, "
                                  "rank_by_decoder_norm, library, library_version, transcoder)",
                                  fn, key);
            json_decref(root);
            return rc;
        }
    }
    int rc = SUBSAE_OK;
    if (json_object_size(root) > 0 && !(*out = dump_compact(root)))
        rc = subsae__fail_nomem("metadata", strlen(json));
    json_decref(root);
    return rc;
}

int subsae_sae_set_metadata(subsae_sae *sae, const char *json)
{
    static const char *fn = "subsae_sae_set_metadata";
    SUBSAE__NOT_NULL(fn, sae);
    char *text;
    int rc = subsae__metadata_normalize(fn, json, &text);
    if (rc)
        return rc;
    subsae__free(sae->metadata);
    sae->metadata = text;
    return SUBSAE_OK;
}

int subsae_sae_get_metadata(const subsae_sae *sae, const char **json)
{
    static const char *fn = "subsae_sae_get_metadata";
    SUBSAE__NOT_NULL(fn, sae);
    SUBSAE__NOT_NULL(fn, json);
    *json = sae->metadata ? sae->metadata : "{}";
    return SUBSAE_OK;
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
    /* The caller's members first (none is one of the library's own), so
     * that a metadata text that does not parse any more cannot pass. */
    if (!bad && sae->metadata) {
        json_t *meta = json_loads(sae->metadata, 0, NULL);
        bad |= !json_is_object(meta) || json_object_update(root, meta);
        json_decref(meta);
    }
    bad |= json_object_set_new(root, "architecture", json_string(architecture_name(sae)));
    bad |= json_object_set_new(root, "d_in", json_integer(sae->d_in));
    bad |= json_object_set_new(root, "d_sae", json_integer(sae->d_sae));
    if (sae->d_out != sae->d_in || sae->transcoder)
        bad |= json_object_set_new(root, "d_out", json_integer(sae->d_out));
    bad |= json_object_set_new(root, "transcoder", json_boolean(sae->transcoder));
    bad |= json_object_set_new(root, "k", json_integer(sae->k));
    bad |= json_object_set_new(root, "dtype", json_string("float32"));
    bad |= json_object_set_new(root, "apply_b_dec_to_input",
                               json_boolean(sae->apply_b_dec_to_input));
    bad |= json_object_set_new(root, "normalize_activations", json_string("none"));
    bad |= json_object_set_new(
        root, "activation_fn_str",
        json_string(sae->activation == SUBSAE_ACT_TOPK ? "topk" : "relu"));
    if (kwargs && sae->activation == SUBSAE_ACT_TOPK)
        bad |= json_object_set_new(kwargs, "k", json_integer(sae->k));
    bad |= json_object_set(root, "activation_fn_kwargs", kwargs);
    bad |= json_object_set_new(root, "rank_by_decoder_norm",
                               json_boolean(sae->rank_by_decoder_norm));
    if (sae->matryoshka_count > 0)
        bad |= json_object_set_new(root, "matryoshka_widths", subsae__matryoshka_json(sae));
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
    json_free_t free_text; /* Jansson's own: it may not be free() */
    json_get_alloc_funcs(NULL, &free_text);
    free_text(text);
    return rc;
}

static struct subsae__tensor_view vector_view(const char *name, const float *data, int64_t n)
{
    return (struct subsae__tensor_view){.name = name,
                                        .dtype = SUBSAE_DTYPE_F32,
                                        .ndim = 1,
                                        .shape = {n},
                                        .data = data,
                                        .bytes = (size_t)n * 4};
}

static struct subsae__tensor_view matrix_view(const char *name, const float *data, int64_t rows,
                                              int64_t cols)
{
    return (struct subsae__tensor_view){.name = name,
                                        .dtype = SUBSAE_DTYPE_F32,
                                        .ndim = 2,
                                        .shape = {rows, cols},
                                        .data = data,
                                        .bytes = (size_t)(rows * cols) * 4};
}

/* The weights file of the folded model f (W_enc given transposed): the
 * SAELens tensors of its architecture. */
static int write_weights(const char *path, const subsae_sae *f, const float *w_enc_t)
{
    const int64_t m = f->d_sae;
    struct subsae__tensor_view views[8];
    int n = 0;
    views[n++] = matrix_view("W_enc", w_enc_t, f->d_in, m);
    if (f->activation == SUBSAE_ACT_GATED) {
        views[n++] = vector_view("b_gate", f->b_enc, m);
        views[n++] = vector_view("r_mag", f->r_mag, m);
        views[n++] = vector_view("b_mag", f->b_mag, m);
    } else {
        views[n++] = vector_view("b_enc", f->b_enc, m);
    }
    views[n++] = matrix_view("W_dec", f->W_dec, m, f->d_out);
    views[n++] = vector_view("b_dec", f->b_dec, f->d_out);
    if (has_threshold(f->activation))
        views[n++] = vector_view("threshold", f->threshold, m);
    if (f->skip)
        views[n++] = matrix_view("W_skip", f->W_skip, f->d_out, f->d_in);
    return subsae__safetensors_write(path, views, n, NULL, NULL, 0);
}

/* The model's float weights into dir (a bf16 model's W_enc widened by
 * the caller). */
static int save_float(const subsae_sae *sae, const char *dir);

int subsae_sae_save(const subsae_sae *sae, const char *dir)
{
    static const char *fn = "subsae_sae_save";
    SUBSAE__NOT_NULL(fn, sae);
    SUBSAE__NOT_NULL(fn, dir);
    /* The file holds float32 whatever the precision: a bf16 W_enc is
     * widened, exactly. */
    subsae_sae view;
    float *wide;
    int rc = subsae__sae_float_view(sae, &view, &wide, fn);
    if (!rc)
        rc = save_float(&view, dir);
    subsae__free(wide);
    return rc;
}

static int save_float(const subsae_sae *sae, const char *dir)
{
    static const char *fn = "subsae_sae_save";
    int rc = subsae__sae_check_finite(sae, fn);
    if (!rc)
        rc = subsae__sae_fold_check(sae, fn); /* a file that would not load again */
    if (rc)
        return rc;
    rc = subsae__make_dir(dir);
    if (rc)
        return rc;
    /* The scales are folded on the way out (no copy of the whole model):
     * W_enc transposed and scaled, W_dec copied only when it changes. */
    const int64_t d_in = sae->d_in, d_out = sae->d_out, m = sae->d_sae;
    const bool scale_dec = sae->output_scale != 1.0;
    subsae_sae folded = *sae;
    folded.W_enc = NULL;
    folded.W_dec = scale_dec ? subsae__malloc((size_t)(m * d_out) * sizeof(float)) : NULL;
    folded.b_enc = subsae__malloc((size_t)m * sizeof(float));
    folded.b_dec = subsae__malloc((size_t)d_out * sizeof(float));
    folded.threshold = subsae__malloc((size_t)m * sizeof(float));
    const bool gated = sae->activation == SUBSAE_ACT_GATED;
    folded.b_mag = gated ? subsae__malloc((size_t)m * sizeof(float)) : NULL;
    folded.W_skip = sae->skip ? subsae__malloc((size_t)(d_out * d_in) * sizeof(float)) : NULL;
    float *w_enc_t = subsae__malloc((size_t)(m * d_in) * sizeof *w_enc_t);
    char *weights = subsae__path_join(dir, WEIGHTS_FILE);
    char *config = subsae__path_join(dir, CONFIG_FILE);
    if (!weights || !config || (scale_dec && !folded.W_dec) || !folded.b_enc || !folded.b_dec ||
        !folded.threshold || (gated && !folded.b_mag) || (sae->skip && !folded.W_skip) ||
        !w_enc_t) {
        rc = subsae__fail_nomem("folded model", (size_t)(m * (d_in + d_out)) * 4);
        goto done;
    }
    subsae__sae_fold(sae, &folded);
    /* The file holds W_enc as [d_in, d_sae]: transpose in tiles, scaled as
     * the fold scales it. */
    const float fin = (float)sae->input_scale;
    for (int64_t f0 = 0; f0 < m; f0 += 64)
        for (int64_t j0 = 0; j0 < d_in; j0 += 64)
            for (int64_t f = f0; f < f0 + 64 && f < m; f++)
                for (int64_t j = j0; j < j0 + 64 && j < d_in; j++)
                    w_enc_t[j * m + f] = sae->W_enc[f * d_in + j] * fin;
    if (!scale_dec)
        folded.W_dec = sae->W_dec;
    rc = write_weights(weights, &folded, w_enc_t);
    if (!rc)
        rc = write_config(&folded, config);
done:
    if (scale_dec)
        subsae__free(folded.W_dec);
    subsae__free(folded.b_enc);
    subsae__free(folded.b_dec);
    subsae__free(folded.threshold);
    subsae__free(folded.b_mag);
    subsae__free(folded.W_skip);
    subsae__free(w_enc_t);
    subsae__free(weights);
    subsae__free(config);
    return rc;
}

/* ---- SAELens' feature densities ------------------------------------------ */

int subsae_sae_save_sparsity(const subsae_sae *sae, const char *path, const double *density,
                             int64_t n)
{
    static const char *fn = "subsae_sae_save_sparsity";
    SUBSAE__NOT_NULL(fn, sae);
    SUBSAE__NOT_NULL(fn, path);
    SUBSAE__NOT_NULL(fn, density);
    if (n != sae->d_sae)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_SIZE_MISMATCH,
                            "%s: %lld densities for a model of d_sae %lld", fn, (long long)n,
                            (long long)sae->d_sae);
    for (int64_t f = 0; f < n; f++)
        if (!(density[f] >= 0.0 && density[f] <= 1.0))
            return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                                "%s: density[%lld] = %g is not a fraction in [0, 1]", fn,
                                (long long)f, density[f]);
    float *log_density = subsae__malloc((size_t)n * sizeof *log_density);
    if (!log_density)
        return subsae__fail_nomem("feature densities", (size_t)n * sizeof *log_density);
    /* SAELens: torch.log10(feature_sparsity + 1e-10), in float32. */
    for (int64_t f = 0; f < n; f++)
        log_density[f] = (float)log10(density[f] + 1e-10);
    const struct subsae__tensor_view view = {.name = "sparsity",
                                             .dtype = SUBSAE_DTYPE_F32,
                                             .ndim = 1,
                                             .shape = {n},
                                             .data = log_density,
                                             .bytes = (size_t)n * sizeof *log_density};
    int rc = subsae__safetensors_write(path, &view, 1, NULL, NULL, 0);
    subsae__free(log_density);
    return rc;
}
