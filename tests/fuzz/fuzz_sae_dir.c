/* Fuzz harness: an SAE directory. The input is split into the two files by
 * a tagged length prefix (fuzz_split_tagged): 3 bytes little-endian L and a
 * layout byte, then L bytes of the configuration (fewer if the input ends),
 * then the weights. The layout byte names the files, so that every loader
 * of sae_import.c is reachable:
 *   bit 0: the configuration is config.json (lm-saes), else cfg.json
 *          (SAELens, this library, sparsify);
 *   bit 1: the weights are sae.safetensors (sparsify), else
 *          sae_weights.safetensors;
 *   bit 2: the configuration is written under both names.
 * Layout 0 is the original format (cfg.json + sae_weights.safetensors,
 * joined by a plain 4-byte length). A model that loads is used: options
 * read back, one row encoded (dense and sparse), decoded, evaluated on a
 * small buffer, cloned, saved (the scales folded on the way out) and
 * reloaded, and the reloaded parameters must equal those of the clone
 * folded in place (subsae_sae_fold_scales) bit for bit. */
#include "fuzz.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void assert_same_params(const subsae_sae *x, const subsae_sae *y, bool threshold)
{
    for (int p = SUBSAE_PARAM_W_ENC; p <= SUBSAE_PARAM_B_MAG; p++) {
        if (p == SUBSAE_PARAM_THRESHOLD && !threshold)
            continue;
        int64_t n = subsae_sae_param_size(x, p);
        FUZZ_ASSERT(n == subsae_sae_param_size(y, p));
        if (n < 0 && p > SUBSAE_PARAM_THRESHOLD)
            continue; /* a gated model's tensor, in another model */
        FUZZ_ASSERT(n >= 1);
        float *u = malloc((size_t)n * sizeof *u), *v = malloc((size_t)n * sizeof *v);
        FUZZ_ASSERT(u && v);
        FUZZ_ASSERT(subsae_sae_get_param(x, p, u, n) == SUBSAE_OK);
        FUZZ_ASSERT(subsae_sae_get_param(y, p, v, n) == SUBSAE_OK);
        FUZZ_ASSERT(memcmp(u, v, (size_t)n * sizeof *u) == 0);
        free(u);
        free(v);
    }
}

static bool all_finite(const subsae_sae *sae)
{
    for (int p = SUBSAE_PARAM_W_ENC; p <= SUBSAE_PARAM_B_MAG; p++) {
        int64_t n = subsae_sae_param_size(sae, p);
        if (n < 0 && p > SUBSAE_PARAM_THRESHOLD)
            continue;
        float *u = malloc((size_t)n * sizeof *u);
        FUZZ_ASSERT(u && subsae_sae_get_param(sae, p, u, n) == SUBSAE_OK);
        bool ok = true;
        for (int64_t i = 0; i < n; i++)
            ok &= isfinite(u[i]) != 0;
        free(u);
        if (!ok)
            return false;
    }
    return true;
}

static void exercise_model(const subsae_sae *sae, uint64_t h)
{
    int64_t d_in = -1, d_out = -1, m = -1, activation = -1, k = -1;
    FUZZ_ASSERT(subsae_sae_get_int(sae, SUBSAE_SAE_D_IN, &d_in) == SUBSAE_OK);
    FUZZ_ASSERT(subsae_sae_get_int(sae, SUBSAE_SAE_D_OUT, &d_out) == SUBSAE_OK);
    FUZZ_ASSERT(subsae_sae_get_int(sae, SUBSAE_SAE_D_SAE, &m) == SUBSAE_OK);
    FUZZ_ASSERT(subsae_sae_get_int(sae, SUBSAE_SAE_ACTIVATION, &activation) == SUBSAE_OK);
    FUZZ_ASSERT(subsae_sae_get_int(sae, SUBSAE_SAE_K, &k) == SUBSAE_OK);
    FUZZ_ASSERT(d_in >= 1 && d_out >= 1 && m >= 1 && activation >= 0 &&
                activation <= SUBSAE_ACT_GATED);
    FUZZ_ASSERT(subsae_sae_param_size(sae, SUBSAE_PARAM_W_ENC) == m * d_in);
    FUZZ_ASSERT(subsae_sae_param_size(sae, SUBSAE_PARAM_W_DEC) == m * d_out);

    /* Three rows of input, the middle one from the hash. */
    enum { N = 3 };
    float *x = calloc((size_t)(N * d_in), sizeof *x), *z = calloc((size_t)(N * m), sizeof *z);
    float *out = calloc((size_t)(N * d_out), sizeof *out), *values = calloc(N * 4, sizeof *values);
    int32_t *indices = calloc(N * 4, sizeof *indices);
    FUZZ_ASSERT(x && z && out && values && indices);
    for (int64_t j = 0; j < d_in; j++) {
        x[j] = 1.0f;
        x[d_in + j] = (float)((h >> (j % 60)) & 15) - 7.5f;
        x[2 * d_in + j] = (float)j * 0.25f;
    }
    int rc = fuzz_status(subsae_sae_encode(sae, x, N, d_in, z, m));
    if (rc == SUBSAE_OK) {
        FUZZ_ASSERT(fuzz_status(subsae_sae_decode(sae, z, N, m, out, d_out)) != SUBSAE_E_INVALID);
        int64_t active = 0;
        for (int64_t i = 0; i < m; i++)
            active += z[i] != 0.0f;
        if (activation == SUBSAE_ACT_TOPK)
            FUZZ_ASSERT(active <= k);
    }
    rc = fuzz_status(subsae_sae_encode_sparse(sae, x, N, d_in, 4, indices, values));
    if (rc == SUBSAE_OK) {
        for (int i = 0; i < N * 4; i++)
            FUZZ_ASSERT(indices[i] >= -1 && indices[i] < m);
        FUZZ_ASSERT(fuzz_status(subsae_sae_decode_sparse(sae, indices, values, N, 4, out,
                                                         d_out)) != SUBSAE_E_INVALID);
    }
    if (d_in == d_out) {
        subsae_buffer *buf = NULL;
        FUZZ_ASSERT(subsae_buffer_wrap(x, SUBSAE_DTYPE_F32, N, d_in, d_in, SUBSAE_BORROW, &buf) ==
                    SUBSAE_OK);
        double metrics[SUBSAE_METRIC_COUNT];
        fuzz_status(subsae_sae_evaluate(sae, buf, NULL, metrics, SUBSAE_METRIC_COUNT));
        subsae_buffer_free(buf);
    }
    free(x);
    free(z);
    free(out);
    free(values);
    free(indices);

    /* Clone and fold the clone; save the model (which folds on the way
     * out) and reload: the clone's parameters. A model whose folded
     * parameters are not finite is refused by both. */
    subsae_sae *copy = NULL, *back = NULL;
    FUZZ_ASSERT(fuzz_status(subsae_sae_clone(sae, &copy)) == SUBSAE_OK);
    assert_same_params(sae, copy, true);
    rc = fuzz_status(subsae_sae_fold_scales(copy));
    FUZZ_ASSERT(rc == SUBSAE_OK || rc == SUBSAE_E_NONFINITE);
    FUZZ_ASSERT(all_finite(copy));
    char dir[512];
    fuzz_path("saved", dir, sizeof dir);
    fuzz_fresh_dir(dir);
    int saved = fuzz_status(subsae_sae_save(sae, dir));
    FUZZ_ASSERT(saved == rc);
    if (saved == SUBSAE_OK) {
        FUZZ_ASSERT(fuzz_status(subsae_sae_load(dir, &back)) == SUBSAE_OK);
        bool threshold = activation == SUBSAE_ACT_JUMPRELU || activation == SUBSAE_ACT_BATCHTOPK;
        assert_same_params(copy, back, threshold);
        int64_t k2 = -1, a2 = -1;
        FUZZ_ASSERT(subsae_sae_get_int(back, SUBSAE_SAE_K, &k2) == SUBSAE_OK);
        FUZZ_ASSERT(activation == SUBSAE_ACT_RELU || activation == SUBSAE_ACT_JUMPRELU ||
                    activation == SUBSAE_ACT_GATED || k2 == k);
        FUZZ_ASSERT(subsae_sae_get_int(back, SUBSAE_SAE_ACTIVATION, &a2) == SUBSAE_OK);
        FUZZ_ASSERT(a2 == activation);
        for (int o = SUBSAE_SAE_APPLY_B_DEC_TO_INPUT; o <= SUBSAE_SAE_RANK_BY_DECODER_NORM; o++) {
            int64_t u = -1, v = -2;
            FUZZ_ASSERT(subsae_sae_get_int(copy, o, &u) == SUBSAE_OK);
            FUZZ_ASSERT(subsae_sae_get_int(back, o, &v) == SUBSAE_OK);
            FUZZ_ASSERT(u == v);
        }
        subsae_sae_free(back);
    }
    subsae_sae_free(copy);
}

int subsae_fuzz_sae_dir(const uint8_t *data, size_t size)
{
    const uint8_t *cfg, *weights;
    size_t n_cfg, n_weights;
    unsigned layout;
    fuzz_split_tagged(data, size, &layout, &cfg, &n_cfg, &weights, &n_weights);
    char dir[512], path[1024];
    fuzz_path("sae", dir, sizeof dir);
    fuzz_fresh_dir(dir);
    for (int name = 0; name < 2; name++)
        if ((layout & 4) || name == (int)(layout & 1)) {
            snprintf(path, sizeof path, "%s/%s", dir, name ? "config.json" : "cfg.json");
            fuzz_write_file(path, cfg, n_cfg);
        }
    snprintf(path, sizeof path, "%s/%s", dir,
             layout & 2 ? "sae.safetensors" : "sae_weights.safetensors");
    fuzz_write_file(path, weights, n_weights);

    subsae_sae *sae = NULL;
    int rc = fuzz_status(subsae_sae_load(dir, &sae));
    FUZZ_ASSERT((rc == SUBSAE_OK) == (sae != NULL));
    if (sae)
        exercise_model(sae, fuzz_hash(data, size));
    subsae_sae_free(sae);
    return 0;
}
