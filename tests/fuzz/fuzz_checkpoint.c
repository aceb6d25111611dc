/* Fuzz harness: a trainer checkpoint directory. The input is split like
 * fuzz_sae_dir's: checkpoint.json, then the state file, which is written
 * under the name checkpoint.json gives in "state_file" (when that is a
 * plain file name; "state-0.safetensors" otherwise). A checkpoint that
 * loads is used: metrics, one optimiser step on four rows (batch and
 * threads set small first: they are the caller's choice), a save and a
 * reload that must give back the same model bit for bit. */
#include "fuzz.h"

#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void state_name(const uint8_t *json, size_t n, char *name, size_t room)
{
    snprintf(name, room, "state-0.safetensors");
    json_t *root = json_loadb((const char *)json, n, 0, NULL);
    const json_t *v = root ? json_object_get(root, "state_file") : NULL;
    const char *s = json_is_string(v) ? json_string_value(v) : NULL;
    if (s && s[0] && s[0] != '.' && !strchr(s, '/') && strlen(s) < room)
        snprintf(name, room, "%s", s);
    json_decref(root);
}

static void assert_same_model(const subsae_sae *x, const subsae_sae *y)
{
    for (int p = SUBSAE_PARAM_W_ENC; p <= SUBSAE_PARAM_B_MAG; p++) {
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

static void exercise_trainer(subsae_trainer *t, uint64_t h)
{
    double metrics[SUBSAE_METRIC_COUNT];
    FUZZ_ASSERT(fuzz_status(subsae_trainer_metrics(t, metrics, SUBSAE_METRIC_COUNT)) ==
                SUBSAE_OK);
    const subsae_sae *sae = subsae_trainer_sae(t);
    FUZZ_ASSERT(sae != NULL);
    int64_t d_in = 0, d_out = 0, value = 0;
    FUZZ_ASSERT(subsae_sae_get_int(sae, SUBSAE_SAE_D_IN, &d_in) == SUBSAE_OK);
    FUZZ_ASSERT(subsae_sae_get_int(sae, SUBSAE_SAE_D_OUT, &d_out) == SUBSAE_OK);
    for (int o = SUBSAE_TRAIN_FEATURES; o <= SUBSAE_TRAIN_SUBSPACE_COEFFICIENTS; o++) {
        double real;
        if (subsae_trainer_get_int(t, o, &value) != SUBSAE_OK)
            FUZZ_ASSERT(subsae_trainer_get_double(t, o, &real) == SUBSAE_OK);
    }

    /* One step on four rows; a transcoder (or d_in != d_out) wants a
     * target. */
    FUZZ_ASSERT(subsae_trainer_set_int(t, SUBSAE_TRAIN_BATCH, 4) == SUBSAE_OK);
    FUZZ_ASSERT(subsae_trainer_set_int(t, SUBSAE_TRAIN_THREADS, 1) == SUBSAE_OK);
    enum { N = 4 };
    float *x = malloc((size_t)(N * d_in) * sizeof *x), *y = malloc((size_t)(N * d_out) * sizeof *y);
    FUZZ_ASSERT(x && y);
    for (int64_t i = 0; i < N * d_in; i++)
        x[i] = (float)((h >> (i % 61)) & 31) / 8.0f - 2.0f;
    for (int64_t i = 0; i < N * d_out; i++)
        y[i] = (float)(i % 7) - 3.0f;
    int rc = fuzz_status(subsae_trainer_step(t, x, d_in, NULL, 0, N));
    if (rc == SUBSAE_E_INVALID)
        rc = fuzz_status(subsae_trainer_step(t, x, d_in, y, d_out, N));
    FUZZ_ASSERT(rc == SUBSAE_OK || rc == SUBSAE_E_NONFINITE || rc == SUBSAE_E_INVALID);
    free(x);
    free(y);
    FUZZ_ASSERT(fuzz_status(subsae_trainer_metrics(t, metrics, SUBSAE_METRIC_COUNT)) ==
                SUBSAE_OK);

    /* Saved and reloaded: the same model. */
    char dir[512];
    fuzz_path("resaved", dir, sizeof dir);
    fuzz_fresh_dir(dir);
    FUZZ_ASSERT(fuzz_status(subsae_trainer_save_checkpoint(t, dir)) == SUBSAE_OK);
    subsae_trainer *back = NULL;
    FUZZ_ASSERT(fuzz_status(subsae_trainer_load_checkpoint(dir, &back)) == SUBSAE_OK);
    assert_same_model(sae, subsae_trainer_sae(back));
    subsae_trainer_free(back);
}

int subsae_fuzz_checkpoint(const uint8_t *data, size_t size)
{
    const uint8_t *manifest, *state;
    size_t n_manifest, n_state;
    fuzz_split(data, size, &manifest, &n_manifest, &state, &n_state);
    char dir[512], name[128], path[1024];
    fuzz_path("checkpoint", dir, sizeof dir);
    fuzz_fresh_dir(dir);
    snprintf(path, sizeof path, "%s/checkpoint.json", dir);
    fuzz_write_file(path, manifest, n_manifest);
    state_name(manifest, n_manifest, name, sizeof name);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    fuzz_write_file(path, state, n_state);

    subsae_trainer *t = NULL;
    int rc = fuzz_status(subsae_trainer_load_checkpoint(dir, &t));
    FUZZ_ASSERT((rc == SUBSAE_OK) == (t != NULL));
    if (t)
        exercise_trainer(t, fuzz_hash(data, size));
    subsae_trainer_free(t);
    return 0;
}
