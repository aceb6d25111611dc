/* Trainer checkpoints: a directory with
 *   state-<step>.safetensors  every tensor of the run: weights (as stored,
 *                             scales not folded), Adam moments, dead-feature
 *                             clock, metrics-window sums (F32 / F64);
 *   checkpoint.json           the scalars: options, model shape and scales,
 *                             step, tokens, RNG state (hex), batch-iterator
 *                             epoch and position, windows; and the name of
 *                             the state file.
 * Crash safety: the state file gets a new name per step and is written
 * (crash-safe) first; checkpoint.json is replaced atomically last and only
 * then are older state files removed. Whatever the moment of a crash,
 * checkpoint.json names a complete state file that matches it. */
#include "io.h"
#include "trainer.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char MANIFEST[] = "checkpoint.json";
static const char FORMAT_NAME[] = "libsubsae-checkpoint";
enum { FORMAT_VERSION = 1 };

/* ---- save ------------------------------------------------------------------- */

static json_t *window_json(const struct subsae__window *w)
{
    return json_pack("{s:I, s:f, s:f, s:I}", "tokens", (json_int_t)w->tokens, "sse", w->sse,
                     "sum_t2", w->sum_t2, "active", (json_int_t)w->active);
}

static json_t *finite_or_null(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

static json_t *manifest_json(const subsae_trainer *t, const char *state_file)
{
    const subsae_sae *s = t->sae;
    json_t *options = json_object();
    for (int o = 0; options && o <= SUBSAE__TRAIN_OPTION_LAST; o++) {
        bool is_double;
        const char *name = subsae__trainer_option_name(o, &is_double);
        if (!name)
            continue;
        const void *value_at = subsae__trainer_option_field((subsae_trainer *)t, o);
        json_t *v;
        if (o == SUBSAE_TRAIN_LR) {
            v = json_real(subsae__trainer_lr(t)); /* the rate in effect, not 0 for "auto" */
        } else if (is_double) {
            double d;
            memcpy(&d, value_at, sizeof d);
            v = json_real(d);
        } else {
            int64_t i;
            memcpy(&i, value_at, sizeof i);
            v = json_integer(i);
        }
        if (json_object_set_new(options, name, v)) {
            json_decref(options);
            options = NULL;
        }
    }
    char rng[4][17];
    for (int i = 0; i < 4; i++)
        snprintf(rng[i], sizeof rng[i], "%016" PRIx64, t->rng.s[i]);
    int64_t epoch = t->it_epoch, position = t->it_position;
    if (t->batches)
        subsae_batches_tell(t->batches, &epoch, &position);
    json_t *root = json_pack(
        "{s:s, s:i, s:s, s:s, s:o, s:{s:I, s:I, s:I, s:i, s:I, s:b, s:b, s:f, s:f}, s:b, s:I, "
        "s:f, s:I, s:I, s:I, s:o, s:[s,s,s,s], s:{s:I, s:I}, s:I, s:b, s:{s:o, s:o}}",
        "format", FORMAT_NAME, "version", FORMAT_VERSION, "library_version",
        subsae_version_string(), "state_file", state_file, "options", options, "model", "d_in",
        (json_int_t)s->d_in, "d_out", (json_int_t)s->d_out, "d_sae", (json_int_t)s->d_sae,
        "activation", s->activation, "k", (json_int_t)s->k, "apply_b_dec_to_input",
        s->apply_b_dec_to_input, "rank_by_decoder_norm", s->rank_by_decoder_norm, "input_scale",
        s->input_scale, "output_scale", s->output_scale, "transcoder", t->transcoder,
        "subspace_dim_used", (json_int_t)t->subspace_dim_used, "init_scale", t->init_scale,
        "step", (json_int_t)t->step, "tokens", (json_int_t)t->tokens, "fit_end_step",
        (json_int_t)t->fit_end_step, "last_loss",
        finite_or_null(t->last_loss), "rng", rng[0], rng[1],
        rng[2], rng[3], "batches", "epoch", (json_int_t)epoch, "position", (json_int_t)position,
        "window_tokens", (json_int_t)t->window_tokens, "prev_valid", t->prev_valid, "windows",
        "cur", window_json(&t->cur), "prev", window_json(&t->prev));
    /* BatchTopK: the running threshold in double (the model holds it as
     * float). */
    if (root && s->activation == SUBSAE_ACT_BATCHTOPK &&
        json_object_set_new(root, "batch_threshold", json_real(t->batch_threshold))) {
        json_decref(root);
        root = NULL;
    }
    /* The last step's learning rate and loss parts (what the metrics
     * report until the next step). */
    if (root) {
        json_t *last = json_pack("{s:o, s:[o,o,o]}", "lr", finite_or_null(t->last_lr),
                                 "loss_parts", finite_or_null(t->last_loss_parts[0]),
                                 finite_or_null(t->last_loss_parts[1]),
                                 finite_or_null(t->last_loss_parts[2]));
        if (!last || json_object_set_new(root, "last_step", last)) {
            json_decref(root);
            root = NULL;
        }
    }
    /* The caller's run metadata (validated JSON text). */
    if (root && t->metadata) {
        json_t *meta = json_loads(t->metadata, 0, NULL);
        if (!meta || json_object_set_new(root, "metadata", meta)) {
            json_decref(root);
            root = NULL;
        }
    }
    return root;
}

static int write_text(const char *path, const char *text)
{
    subsae__atomic_file *f;
    int rc = subsae__atomic_open(path, &f);
    if (rc)
        return rc;
    rc = subsae__atomic_write(f, text, strlen(text));
    if (rc) {
        subsae__atomic_abort(f);
        return rc;
    }
    return subsae__atomic_commit(f);
}

/* A temporary file (see subsae__atomic_open: NAME.tmp-PID-N) of a state
 * or manifest that a process which no longer exists left behind, killed
 * while it was saving. A live process's (or one whose PID was reused) is
 * left alone. */
static bool stale_temporary(const char *name)
{
    const char *t = strstr(name, ".tmp-");
    if (!t || (strncmp(name, "state-", 6) != 0 && strncmp(name, MANIFEST, strlen(MANIFEST)) != 0))
        return false;
    char *end;
    long pid = strtol(t + 5, &end, 10);
    if (end == t + 5 || *end != '-' || pid <= 0 || pid == (long)getpid())
        return false;
    return kill((pid_t)pid, 0) != 0 && errno == ESRCH;
}

/* Remove state-*.safetensors files other than `keep`, and temporaries of
 * killed runs (best effort: a file left behind wastes space but is never
 * read). */
static void remove_old_states(const char *dir, const char *keep)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        const char *name = e->d_name;
        size_t len = strlen(name);
        if (stale_temporary(name)) {
            unlinkat(dirfd(d), name, 0);
            continue;
        }
        if (strncmp(name, "state-", 6) != 0 || len < 18 ||
            strcmp(name + len - 12, ".safetensors") != 0 || !strcmp(name, keep))
            continue;
        unlinkat(dirfd(d), name, 0); /* relative to the open directory: no path to build */
    }
    closedir(d);
}

/* int64 counters as F64 tensors (exact below 2^53). */
static double *as_f64(const int64_t *v, int64_t n)
{
    double *out = subsae__malloc((size_t)n * sizeof *out);
    for (int64_t i = 0; out && i < n; i++)
        out[i] = (double)v[i];
    return out;
}

int subsae_trainer_save_checkpoint(const subsae_trainer *t, const char *dir)
{
    static const char *fn = "subsae_trainer_save_checkpoint";
    if (!t)
        return subsae__fail_null(fn, "t");
    if (!dir)
        return subsae__fail_null(fn, "dir");
    if (!t->initialised)
        return subsae__fail(SUBSAE_E_STATE, SUBSAE_REASON_WRONG_STATE,
                            "%s: the trainer is not initialised", fn);
    int rc = subsae__make_dir(dir);
    if (rc)
        return rc;
    const subsae_sae *s = t->sae;
    const int64_t m = s->d_sae, d_in = s->d_in, d_out = s->d_out;
    char state_file[64], step_text[32];
    snprintf(state_file, sizeof state_file, "state-%lld.safetensors", (long long)t->step);
    snprintf(step_text, sizeof step_text, "%lld", (long long)t->step);
    char *state_path = subsae__path_join(dir, state_file);
    char *manifest_path = subsae__path_join(dir, MANIFEST);
    double *last = as_f64(t->last_fired, m), *cur_fires = as_f64(t->cur.fires, m);
    double *prev_fires = as_f64(t->prev.fires, m);
    char *text = NULL;
    if (!state_path || !manifest_path || !last || !cur_fires || !prev_fires) {
        rc = subsae__fail_nomem("checkpoint", (size_t)m * 24);
        goto done;
    }
    struct subsae__tensor_view views[] = {
        {"W_enc", SUBSAE_DTYPE_F32, 2, {m, d_in}, s->W_enc, 0},
        {"b_enc", SUBSAE_DTYPE_F32, 1, {m}, s->b_enc, 0},
        {"W_dec", SUBSAE_DTYPE_F32, 2, {m, d_out}, s->W_dec, 0},
        {"b_dec", SUBSAE_DTYPE_F32, 1, {d_out}, s->b_dec, 0},
        {"threshold", SUBSAE_DTYPE_F32, 1, {m}, s->threshold, 0},
        {"adam_m.W_enc", SUBSAE_DTYPE_F32, 2, {m, d_in}, t->m_W_enc, 0},
        {"adam_v.W_enc", SUBSAE_DTYPE_F32, 2, {m, d_in}, t->v_W_enc, 0},
        {"adam_m.b_enc", SUBSAE_DTYPE_F32, 1, {m}, t->m_b_enc, 0},
        {"adam_v.b_enc", SUBSAE_DTYPE_F32, 1, {m}, t->v_b_enc, 0},
        {"adam_m.W_dec", SUBSAE_DTYPE_F32, 2, {m, d_out}, t->m_W_dec, 0},
        {"adam_v.W_dec", SUBSAE_DTYPE_F32, 2, {m, d_out}, t->v_W_dec, 0},
        {"adam_m.b_dec", SUBSAE_DTYPE_F32, 1, {d_out}, t->m_b_dec, 0},
        {"adam_v.b_dec", SUBSAE_DTYPE_F32, 1, {d_out}, t->v_b_dec, 0},
        {"last_fired", SUBSAE_DTYPE_F64, 1, {m}, last, 0},
        {"window_cur.fires", SUBSAE_DTYPE_F64, 1, {m}, cur_fires, 0},
        {"window_prev.fires", SUBSAE_DTYPE_F64, 1, {m}, prev_fires, 0},
        {"window_cur.sum_t", SUBSAE_DTYPE_F64, 1, {d_out}, t->cur.sum_t, 0},
        {"window_prev.sum_t", SUBSAE_DTYPE_F64, 1, {d_out}, t->prev.sum_t, 0},
        /* JumpReLU only (kept last): the trained log-thresholds. */
        {"log_threshold", SUBSAE_DTYPE_F32, 1, {m}, t->log_threshold, 0},
        {"adam_m.log_threshold", SUBSAE_DTYPE_F32, 1, {m}, t->m_log_threshold, 0},
        {"adam_v.log_threshold", SUBSAE_DTYPE_F32, 1, {m}, t->v_log_threshold, 0},
    };
    const int64_t n_views = (int64_t)(sizeof views / sizeof views[0]) -
                            (s->activation == SUBSAE_ACT_JUMPRELU ? 0 : 3);
    for (int64_t i = 0; i < n_views; i++) {
        size_t count = 1;
        for (int j = 0; j < views[i].ndim; j++)
            count *= (size_t)views[i].shape[j];
        views[i].bytes = count * (views[i].dtype == SUBSAE_DTYPE_F64 ? 8 : 4);
    }
    const char *keys[] = {"format", "step"};
    const char *values[] = {FORMAT_NAME, step_text};
    rc = subsae__safetensors_write(state_path, views, n_views, keys, values, 2);
    if (rc)
        goto done;
    json_t *root = manifest_json(t, state_file);
    text = root ? json_dumps(root, JSON_INDENT(2) | JSON_REAL_PRECISION(17)) : NULL;
    json_decref(root);
    if (!text) {
        rc = subsae__fail_nomem("checkpoint.json", 4096);
        goto done;
    }
    rc = write_text(manifest_path, text);
    if (!rc)
        remove_old_states(dir, state_file);
done:
    if (text) {
        json_free_t free_text; /* Jansson's own: it may not be free() */
        json_get_alloc_funcs(NULL, &free_text);
        free_text(text);
    }
    subsae__free(state_path);
    subsae__free(manifest_path);
    subsae__free(last);
    subsae__free(cur_fires);
    subsae__free(prev_fires);
    return rc;
}

/* ---- load ---------------------------------------------------------------------- */

struct reader {
    const char *path; /* manifest path, for messages */
    int rc;           /* first failure */
};

static const json_t *field(struct reader *r, const json_t *obj, const char *key)
{
    const json_t *v = obj ? json_object_get(obj, key) : NULL;
    if (!v && r->rc == SUBSAE_OK)
        r->rc = subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_HEADER, "%s: field '%s' is missing",
                             r->path, key);
    return v;
}

static int64_t get_int(struct reader *r, const json_t *obj, const char *key, int64_t lo,
                       int64_t hi)
{
    const json_t *v = field(r, obj, key);
    if (!v)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
        if (r->rc == SUBSAE_OK)
            r->rc = subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_VALUE,
                                 "%s: field '%s' is not a whole number in [%lld, %lld]", r->path,
                                 key, (long long)lo, (long long)hi);
        return 0;
    }
    return json_integer_value(v);
}

static double get_real(struct reader *r, const json_t *obj, const char *key, bool allow_null)
{
    const json_t *v = field(r, obj, key);
    if (!v)
        return 0.0;
    if (allow_null && json_is_null(v))
        return NAN;
    if (!json_is_number(v) || !isfinite(json_number_value(v))) {
        if (r->rc == SUBSAE_OK)
            r->rc = subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_VALUE,
                                 "%s: field '%s' is not a finite number", r->path, key);
        return 0.0;
    }
    return json_number_value(v);
}

static bool get_bool(struct reader *r, const json_t *obj, const char *key)
{
    const json_t *v = field(r, obj, key);
    if (v && !json_is_boolean(v) && r->rc == SUBSAE_OK)
        r->rc = subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_VALUE,
                             "%s: field '%s' is not true or false", r->path, key);
    return v && json_is_true(v);
}

static int read_manifest(const char *path, json_t **out)
{
    json_t *root;
    int rc = subsae__read_json_object(path, &root);
    if (rc)
        return rc;
    const json_t *format = json_object_get(root, "format");
    const json_t *version = json_object_get(root, "version");
    if (!json_is_string(format) || strcmp(json_string_value(format), FORMAT_NAME) != 0 ||
        !json_is_integer(version) || json_integer_value(version) != FORMAT_VERSION) {
        json_decref(root);
        return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_MAGIC,
                            "%s: not a libsubsae checkpoint of format version %d", path,
                            FORMAT_VERSION);
    }
    *out = root;
    return SUBSAE_OK;
}

/* Copy tensor `name` (dtype and shape checked) into dst; dst NULL only
 * checks. */
static int load_tensor(const subsae__safetensors *st, const char *path, const char *name,
                       int dtype, int ndim, int64_t d0, int64_t d1, void *dst)
{
    const struct subsae__tensor_view *v = subsae__safetensors_find(st, name);
    if (!v)
        return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_MISSING_TENSOR,
                            "%s: tensor '%s' is missing", path, name);
    if (v->dtype != dtype || v->ndim != ndim || v->shape[0] != d0 ||
        (ndim == 2 && v->shape[1] != d1))
        return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_DIM_MISMATCH,
                            "%s: tensor '%s' is %s %dD [%lld%s%lld], expected %s [%lld%s%lld]",
                            path, name, subsae__safetensors_dtype_name(v->dtype), v->ndim,
                            (long long)v->shape[0], v->ndim == 2 ? ", " : "",
                            v->ndim == 2 ? (long long)v->shape[1] : 0LL,
                            subsae__safetensors_dtype_name(dtype), (long long)d0,
                            ndim == 2 ? ", " : "",
                            ndim == 2 ? (long long)d1 : 0LL);
    if (dst)
        memcpy(dst, v->data, v->bytes);
    return SUBSAE_OK;
}

static int load_counts(const subsae__safetensors *st, const char *path, const char *name,
                       int64_t n, int64_t *dst, double *scratch)
{
    int rc = load_tensor(st, path, name, SUBSAE_DTYPE_F64, 1, n, 0, scratch);
    if (rc)
        return rc;
    for (int64_t i = 0; i < n; i++) {
        if (!(scratch[i] >= 0.0 && scratch[i] <= 9007199254740992.0) ||
            scratch[i] != floor(scratch[i]))
            return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_VALUE,
                                "%s: tensor '%s'[%lld] = %g is not a count", path, name,
                                (long long)i, scratch[i]);
        dst[i] = (int64_t)scratch[i];
    }
    return SUBSAE_OK;
}

static void read_window(struct reader *r, const json_t *obj, struct subsae__window *w)
{
    w->tokens = get_int(r, obj, "tokens", 0, INT64_MAX);
    w->sse = get_real(r, obj, "sse", false);
    w->sum_t2 = get_real(r, obj, "sum_t2", false);
    w->active = get_int(r, obj, "active", 0, INT64_MAX);
}

/* JumpReLU's trained parameter and its Adam moments (the threshold the
 * model holds is exp of the first). */
static const char *const log_threshold_names[3] = {"log_threshold", "adam_m.log_threshold",
                                                   "adam_v.log_threshold"};

/* Copies the JumpReLU tensors (shapes checked before) and requires the
 * model's threshold to be exp(log_threshold) and the second moment to be
 * finite and >= 0. */
static int copy_log_threshold(subsae_trainer *t, const subsae__safetensors *st, const char *path)
{
    const int64_t m = t->sae->d_sae;
    float *const dst[3] = {t->log_threshold, t->m_log_threshold, t->v_log_threshold};
    for (int i = 0; i < 3; i++)
        memcpy(dst[i], subsae__safetensors_find(st, log_threshold_names[i])->data,
               (size_t)m * sizeof(float));
    for (int64_t f = 0; f < m; f++) {
        if (!isfinite(t->log_threshold[f]) || t->sae->threshold[f] != expf(t->log_threshold[f]))
            return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_VALUE,
                                "%s: threshold[%lld] is not exp(log_threshold)", path,
                                (long long)f);
        if (!isfinite(t->m_log_threshold[f]) || !isfinite(t->v_log_threshold[f]) ||
            t->v_log_threshold[f] < 0.0f)
            return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_VALUE,
                                "%s: Adam moments of log_threshold[%lld] are not valid", path,
                                (long long)f);
    }
    return SUBSAE_OK;
}

static int load_state(subsae_trainer *t, const char *dir, const json_t *root,
                      struct reader *r)
{
    /* Options, through the public setters (they validate every value). */
    const json_t *options = field(r, root, "options");
    for (int o = 0; r->rc == SUBSAE_OK && o <= SUBSAE__TRAIN_OPTION_LAST; o++) {
        bool is_double;
        const char *name = subsae__trainer_option_name(o, &is_double);
        if (!name)
            continue;
        double real = is_double ? get_real(r, options, name, false) : 0.0;
        int64_t whole = is_double ? 0 : get_int(r, options, name, INT64_MIN, INT64_MAX);
        if (r->rc != SUBSAE_OK)
            break; /* missing or mistyped: already reported */
        int rc = is_double ? subsae_trainer_set_double(t, o, real)
                           : subsae_trainer_set_int(t, o, whole);
        if (rc) {
            /* A bad value in the file is a format error of the file: say
             * so in the status too, keeping the setter's explanation. */
            char why[512];
            snprintf(why, sizeof why, "%s", subsae_last_error());
            r->rc = subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_VALUE, "%s: option '%s': %s",
                                 r->path, name, why);
        }
    }
    const json_t *model = field(r, root, "model");
    const int64_t d_in = get_int(r, model, "d_in", 1, INT32_MAX);
    const int64_t d_out = get_int(r, model, "d_out", 1, INT32_MAX);
    const int64_t m = get_int(r, model, "d_sae", 1, INT32_MAX);
    const int activation = (int)get_int(r, model, "activation", 0, 3);
    const int64_t k = get_int(r, model, "k", 1, INT32_MAX);
    const bool apply = get_bool(r, model, "apply_b_dec_to_input");
    const bool by_norm = get_bool(r, model, "rank_by_decoder_norm");
    const double s_in = get_real(r, model, "input_scale", false);
    const double s_out = get_real(r, model, "output_scale", false);
    const bool transcoder = get_bool(r, root, "transcoder");
    /* The run's metadata (absent from checkpoints of 0.1.0). */
    const json_t *run_meta = json_object_get(root, "metadata");
    char *metadata = NULL;
    if (run_meta && r->rc == SUBSAE_OK) {
        if (!json_is_object(run_meta))
            r->rc = subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_VALUE,
                                 "%s: field 'metadata' is not an object", r->path);
        else if (json_object_size(run_meta) > 0 && !(metadata = subsae__json_compact(run_meta)))
            r->rc = subsae__fail_nomem("checkpoint metadata", 4096);
    }
    const int64_t r_used = get_int(r, root, "subspace_dim_used", 0, INT32_MAX);
    const double init_scale = get_real(r, root, "init_scale", false);
    const int64_t step = get_int(r, root, "step", 0, INT64_MAX);
    const int64_t tokens = get_int(r, root, "tokens", 0, INT64_MAX);
    const int64_t fit_end = get_int(r, root, "fit_end_step", -1, INT64_MAX);
    const double last_loss = get_real(r, root, "last_loss", true);
    /* The last step's rate and loss parts (absent from checkpoints of 0.1.0). */
    const json_t *last_step = json_object_get(root, "last_step");
    const json_t *parts = json_object_get(last_step, "loss_parts");
    double last_lr = NAN, last_parts[3] = {NAN, NAN, NAN};
    if (last_step) {
        last_lr = get_real(r, last_step, "lr", true);
        if (!json_is_array(parts) || json_array_size(parts) != 3) {
            if (r->rc == SUBSAE_OK)
                r->rc = subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_VALUE,
                                     "%s: 'last_step.loss_parts' is not an array of 3", r->path);
        } else {
            for (size_t i = 0; i < 3; i++) {
                const json_t *v = json_array_get(parts, i);
                last_parts[i] = json_is_number(v) ? json_number_value(v) : NAN;
            }
        }
    }
    const json_t *batches = field(r, root, "batches");
    const int64_t epoch = get_int(r, batches, "epoch", 0, INT64_MAX);
    const int64_t position = get_int(r, batches, "position", 0, INT64_MAX);
    const int64_t window_tokens = get_int(r, root, "window_tokens", 0, INT64_MAX);
    const bool prev_valid = get_bool(r, root, "prev_valid");
    const json_t *windows = field(r, root, "windows");
    struct subsae__window cur = {0}, prev = {0};
    read_window(r, field(r, windows, "cur"), &cur);
    read_window(r, field(r, windows, "prev"), &prev);
    const json_t *rng = field(r, root, "rng");
    uint64_t words[4] = {0};
    for (int i = 0; r->rc == SUBSAE_OK && i < 4; i++) {
        const json_t *w = json_array_get(rng, (size_t)i);
        const char *hex = json_is_string(w) ? json_string_value(w) : "";
        char *end;
        words[i] = strtoull(hex, &end, 16);
        if (json_array_size(rng) != 4 || strlen(hex) != 16 || *end)
            r->rc = subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_VALUE,
                                 "%s: 'rng' must hold four 16-digit hex words", r->path);
    }
    const double batch_threshold =
        activation == SUBSAE_ACT_BATCHTOPK ? get_real(r, root, "batch_threshold", false) : 0.0;
    const json_t *state_name = field(r, root, "state_file");
    if (!r->rc) {
        int rc = subsae_trainer_set_metadata(t, metadata);
        if (rc == SUBSAE_E_INVALID) { /* a reserved member: the file's fault */
            char why[512];
            snprintf(why, sizeof why, "%s", subsae_last_error());
            rc = subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_VALUE, "%s: %s", r->path, why);
        }
        r->rc = rc;
    }
    subsae__free(metadata);
    if (r->rc)
        return r->rc;
    const char *state_file = json_is_string(state_name) ? json_string_value(state_name) : "";
    if (!state_file[0] || strchr(state_file, '/') || state_file[0] == '.')
        return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_VALUE,
                            "%s: bad state_file '%s'", r->path, state_file);
    if (t->features != m || t->k != k || t->activation != activation || k > m ||
        (apply && d_in != d_out) || !(s_in > 0) || !(s_out > 0))
        return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_DIM_MISMATCH,
                            "%s: model and options disagree (d_sae %lld / features %lld, k %lld "
                            "/ %lld, scales %g %g)",
                            r->path, (long long)m, (long long)t->features, (long long)k,
                            (long long)t->k, s_in, s_out);

    /* The state file first: its tensors must have the shapes the manifest
     * gives before anything of that size is allocated, so that a damaged
     * or hostile checkpoint.json cannot make the loader ask for more memory
     * than the state file itself holds. */
    char *state_path = subsae__path_join(dir, state_file);
    if (!state_path)
        return subsae__fail_nomem("checkpoint state path", strlen(dir) + strlen(state_file) + 2);
    subsae__safetensors *st;
    int rc = subsae__safetensors_open(state_path, &st);
    if (rc) {
        subsae__free(state_path);
        return rc;
    }
    const char *meta = subsae__safetensors_metadata(st, "step");
    char step_text[32];
    snprintf(step_text, sizeof step_text, "%lld", (long long)step);
    if (!meta || strcmp(meta, step_text) != 0)
        rc = subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_VALUE,
                          "%s: state of step %s does not match checkpoint.json (step %lld)",
                          state_path, meta ? meta : "(none)", (long long)step);
    static const struct {
        const char *name;
        int dims; /* 0: [m, d_in], 1: [m], 2: [m, d_out], 3: [d_out] */
    } tensors[] = {
        {"W_enc", 0},        {"b_enc", 1},        {"W_dec", 2},        {"b_dec", 3},
        {"threshold", 1},    {"adam_m.W_enc", 0}, {"adam_v.W_enc", 0}, {"adam_m.b_enc", 1},
        {"adam_v.b_enc", 1}, {"adam_m.W_dec", 2}, {"adam_v.W_dec", 2}, {"adam_m.b_dec", 3},
        {"adam_v.b_dec", 3},
    };
    const int64_t d0[4] = {m, m, m, d_out}, d1[4] = {d_in, 0, d_out, 0};
    const int nd[4] = {2, 1, 2, 1};
    for (size_t i = 0; !rc && i < sizeof tensors / sizeof tensors[0]; i++) {
        int w = tensors[i].dims;
        rc = load_tensor(st, state_path, tensors[i].name, SUBSAE_DTYPE_F32, nd[w], d0[w], d1[w],
                         NULL);
    }
    for (int i = 0; !rc && activation == SUBSAE_ACT_JUMPRELU && i < 3; i++)
        rc = load_tensor(st, state_path, log_threshold_names[i], SUBSAE_DTYPE_F32, 1, m, 0, NULL);
    const char *counts[3] = {"last_fired", "window_cur.fires", "window_prev.fires"};
    for (int i = 0; !rc && i < 3; i++)
        rc = load_tensor(st, state_path, counts[i], SUBSAE_DTYPE_F64, 1, m, 0, NULL);
    if (!rc)
        rc = load_tensor(st, state_path, "window_cur.sum_t", SUBSAE_DTYPE_F64, 1, d_out, 0, NULL);
    if (!rc)
        rc = load_tensor(st, state_path, "window_prev.sum_t", SUBSAE_DTYPE_F64, 1, d_out, 0,
                         NULL);

    subsae_sae *s = NULL;
    if (!rc)
        rc = subsae__sae_new(d_in, d_out, m, activation, &t->sae);
    if (!rc) {
        s = t->sae;
        s->k = k;
        s->apply_b_dec_to_input = apply;
        s->rank_by_decoder_norm = by_norm;
        s->input_scale = s_in;
        s->output_scale = s_out;
        s->transcoder = transcoder || d_in != d_out;
        t->transcoder = transcoder;
        rc = subsae__trainer_alloc_state(t);
        if (!rc)
            rc = subsae__sae_replace_metadata(s, t->metadata);
    }
    double *scratch = NULL;
    if (!rc) {
        scratch = subsae__malloc((size_t)(m > d_out ? m : d_out) * sizeof *scratch);
        if (!scratch)
            rc = subsae__fail_nomem("checkpoint state", (size_t)m * 8);
    }
    if (!rc) {
        void *const dst[] = {s->W_enc,   s->W_dec,   s->b_enc,   s->b_dec,   s->threshold,
                             t->m_W_enc, t->v_W_enc, t->m_b_enc, t->v_b_enc, t->m_W_dec,
                             t->v_W_dec, t->m_b_dec, t->v_b_dec};
        const char *const names[] = {"W_enc",        "W_dec",        "b_enc",
                                     "b_dec",        "threshold",    "adam_m.W_enc",
                                     "adam_v.W_enc", "adam_m.b_enc", "adam_v.b_enc",
                                     "adam_m.W_dec", "adam_v.W_dec", "adam_m.b_dec",
                                     "adam_v.b_dec"};
        for (size_t i = 0; i < sizeof dst / sizeof dst[0]; i++)
            memcpy(dst[i], subsae__safetensors_find(st, names[i])->data,
                   subsae__safetensors_find(st, names[i])->bytes);
        if (activation == SUBSAE_ACT_JUMPRELU)
            rc = copy_log_threshold(t, st, state_path);
        /* BatchTopK: the model's threshold is the running one, in float. */
        for (int64_t f = 0; !rc && activation == SUBSAE_ACT_BATCHTOPK && f < m; f++)
            if (!isfinite((float)batch_threshold) || s->threshold[f] != (float)batch_threshold)
                rc = subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_VALUE,
                                  "%s: threshold[%lld] = %g is not batch_threshold = %g of "
                                  "checkpoint.json in float",
                                  state_path, (long long)f, (double)s->threshold[f],
                                  batch_threshold);
        if (!rc)
            rc = subsae__sae_check_finite(s, state_path);
        /* Adam's moments: first finite, second finite and >= 0 (a negative
         * one would make every later step NaN). */
        for (size_t i = 5; !rc && i < sizeof dst / sizeof dst[0]; i++) {
            const struct subsae__tensor_view *v = subsae__safetensors_find(st, names[i]);
            const float *x = dst[i];
            const bool second = names[i][5] == 'v';
            for (size_t j = 0; !rc && j < v->bytes / sizeof(float); j++)
                if (!isfinite(x[j]) || (second && x[j] < 0.0f))
                    rc = subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_VALUE,
                                      "%s: tensor '%s'[%zu] = %g is not a valid Adam moment",
                                      state_path, names[i], j, (double)x[j]);
        }
        if (!rc)
            rc = load_counts(st, state_path, "last_fired", m, t->last_fired, scratch);
        if (!rc)
            rc = load_counts(st, state_path, "window_cur.fires", m, t->cur.fires, scratch);
        if (!rc)
            rc = load_counts(st, state_path, "window_prev.fires", m, t->prev.fires, scratch);
        if (!rc)
            rc = load_tensor(st, state_path, "window_cur.sum_t", SUBSAE_DTYPE_F64, 1, d_out, 0,
                             t->cur.sum_t);
        if (!rc)
            rc = load_tensor(st, state_path, "window_prev.sum_t", SUBSAE_DTYPE_F64, 1, d_out, 0,
                             t->prev.sum_t);
    }
    subsae__safetensors_close(st);
    subsae__free(state_path);
    subsae__free(scratch);
    if (rc)
        return rc;
    t->subspace_dim_used = r_used;
    t->init_scale = init_scale;
    t->batch_threshold = batch_threshold;
    t->step = step;
    t->tokens = tokens;
    t->fit_end_step = fit_end;
    subsae__trainer_forget_last_step(t, last_loss);
    t->last_lr = last_lr;
    memcpy(t->last_loss_parts, last_parts, sizeof last_parts);
    t->it_epoch = epoch;
    t->it_position = position;
    t->window_tokens = window_tokens;
    t->prev_valid = prev_valid;
    t->cur.tokens = cur.tokens;
    t->cur.sse = cur.sse;
    t->cur.sum_t2 = cur.sum_t2;
    t->cur.active = cur.active;
    t->prev.tokens = prev.tokens;
    t->prev.sse = prev.sse;
    t->prev.sum_t2 = prev.sum_t2;
    t->prev.active = prev.active;
    memcpy(t->rng.s, words, sizeof words);
    t->initialised = true;
    /* The workspace comes with the first step (sized for BATCH, as after
     * init): loading costs memory in proportion to the files. */
    return SUBSAE_OK;
}

int subsae_trainer_load_checkpoint(const char *dir, subsae_trainer **out)
{
    static const char *fn = "subsae_trainer_load_checkpoint";
    if (!dir)
        return subsae__fail_null(fn, "dir");
    if (!out)
        return subsae__fail_null(fn, "out");
    char *path = subsae__path_join(dir, MANIFEST);
    if (!path)
        return subsae__fail_nomem("path", strlen(dir) + 32);
    json_t *root = NULL;
    int rc = read_manifest(path, &root);
    subsae_trainer *t = NULL;
    if (!rc)
        rc = subsae_trainer_create(&t);
    if (!rc) {
        struct reader r = {.path = path, .rc = SUBSAE_OK};
        rc = load_state(t, dir, root, &r);
    }
    json_decref(root);
    subsae__free(path);
    if (rc) {
        subsae_trainer_free(t);
        return rc;
    }
    *out = t;
    return SUBSAE_OK;
}
