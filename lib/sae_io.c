/* Save SAEs as directories that SAE tools read: cfg.json plus
 * sae_weights.safetensors in the SAELens layout (W_enc [d_in, d_sae],
 * b_enc [d_sae], W_dec [d_sae, d_out], b_dec [d_out], threshold [d_sae]
 * for JumpReLU and BatchTopK), float32, activation scales folded in.
 * Loading, of this layout and of the other trainers', is in
 * sae_import.c. */
#include "io.h"
#include "sae.h"

#include "dtype.h"
#include "kernels.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

static const char WEIGHTS_FILE[] = "sae_weights.safetensors";
static const char CONFIG_FILE[] = "cfg.json";

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
    json_free_t free_text; /* Jansson's own: it may not be free() */
    json_get_alloc_funcs(NULL, &free_text);
    free_text(text);
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
    float *w_enc_t = subsae__malloc((size_t)(m * d_in) * sizeof *w_enc_t);
    char *weights = subsae__path_join(dir, WEIGHTS_FILE);
    char *config = subsae__path_join(dir, CONFIG_FILE);
    if (!weights || !config || (scale_dec && !folded.W_dec) || !folded.b_enc ||
        !folded.b_dec || !folded.threshold || !w_enc_t) {
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
    struct subsae__tensor_view views[5] = {
        {.name = "W_enc", .dtype = SUBSAE_DTYPE_F32, .ndim = 2, .shape = {d_in, m},
         .data = w_enc_t, .bytes = (size_t)(m * d_in) * 4},
        {.name = "b_enc", .dtype = SUBSAE_DTYPE_F32, .ndim = 1, .shape = {m},
         .data = folded.b_enc, .bytes = (size_t)m * 4},
        {.name = "W_dec", .dtype = SUBSAE_DTYPE_F32, .ndim = 2, .shape = {m, d_out},
         .data = folded.W_dec, .bytes = (size_t)(m * d_out) * 4},
        {.name = "b_dec", .dtype = SUBSAE_DTYPE_F32, .ndim = 1, .shape = {d_out},
         .data = folded.b_dec, .bytes = (size_t)d_out * 4},
        {.name = "threshold", .dtype = SUBSAE_DTYPE_F32, .ndim = 1, .shape = {m},
         .data = folded.threshold, .bytes = (size_t)m * 4},
    };
    rc = subsae__safetensors_write(weights, views, has_threshold(folded.activation) ? 5 : 4,
                                   NULL, NULL, 0);
    if (!rc)
        rc = write_config(&folded, config);
done:
    if (scale_dec)
        subsae__free(folded.W_dec);
    subsae__free(folded.b_enc);
    subsae__free(folded.b_dec);
    subsae__free(folded.threshold);
    subsae__free(w_enc_t);
    subsae__free(weights);
    subsae__free(config);
    return rc;
}
