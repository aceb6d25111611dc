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
#include "dtype.h"
#include "encoder_gemm.h"
#include "io.h"
#include "matryoshka.h"
#include "params.h"
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

/* The two pointer arguments of public entry `fn`: the first NULL one is
 * named, as everywhere (subsae__fail_null). */
static int check_pointers(const char *fn, const void *a, const char *a_name, const void *b,
                          const char *b_name)
{
    if (!a)
        return subsae__fail_null(fn, a_name);
    return b ? SUBSAE_OK : subsae__fail_null(fn, b_name);
}

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
        (json_int_t)t->fit_end_step, "last_loss", finite_or_null(t->last_loss), "rng", rng[0],
        rng[1], rng[2], rng[3], "batches", "epoch", (json_int_t)epoch, "position",
        (json_int_t)position, "window_tokens", (json_int_t)t->window_tokens, "prev_valid",
        t->prev_valid, "windows", "cur", window_json(&t->cur), "prev", window_json(&t->prev));
    /* BatchTopK: the running threshold in double (the model holds it as
     * float). */
    if (root && s->activation == SUBSAE_ACT_BATCHTOPK &&
        json_object_set_new(root, "batch_threshold", json_real(t->batch_threshold))) {
        json_decref(root);
        root = NULL;
    }
    if (root && s->matryoshka_count > 0 &&
        json_object_set_new(root, "matryoshka_widths", subsae__matryoshka_json(s))) {
        json_decref(root);
        root = NULL;
    }
    /* The precision of the encoder's product in use (the option may say
     * auto): a resumed run keeps it. */
    if (root &&
        json_object_set_new(root, "precision",
                            json_string(t->precision_used == SUBSAE__BF16 ? "bf16" : "fp32"))) {
        json_decref(root);
        root = NULL;
    }
    /* The last step's learning rate, loss parts, bf16 disagreement and
     * batch metrics (what the metrics report until the next step). */
    if (root) {
        json_t *last = json_pack(
            "{s:o, s:[o,o,o], s:o, s:[o,o,o]}", "lr", finite_or_null(t->last_lr), "loss_parts",
            finite_or_null(t->last_loss_parts[0]), finite_or_null(t->last_loss_parts[1]),
            finite_or_null(t->last_loss_parts[2]), "bf16_disagreement",
            finite_or_null(t->last_disagreement), "batch", finite_or_null(t->last_batch[0]),
            finite_or_null(t->last_batch[1]), finite_or_null(t->last_batch[2]));
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

static int write_bytes(const char *path, const char *text, size_t size)
{
    subsae__atomic_file *f;
    int rc = subsae__atomic_open(path, &f);
    if (rc)
        return rc;
    rc = subsae__atomic_write(f, text, size);
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
    if (!t ||
        (strncmp(name, "state-", 6) != 0 && strncmp(name, MANIFEST, strlen(MANIFEST)) != 0))
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

/* The state file's tensors, one view per present entry of the state
 * table; counts are F64 copies put in copies[] (the caller frees them,
 * also on failure; the others stay NULL). */
static int state_views(const subsae_trainer *t, struct subsae__tensor_view *views,
                       double **copies, int64_t *n)
{
    const subsae_sae *s = t->sae;
    int64_t i = 0;
    SUBSAE__FOR_EACH_PARAM(p, SUBSAE__PARAM_KEY(s))
    {
        const int64_t count = subsae__param_elements(p, s);
        const void *data = subsae__param_data(p, t, s);
        if (p->role == SUBSAE__ROLE_COUNT) {
            copies[i] = as_f64(data, count);
            if (!copies[i])
                return subsae__fail_nomem("checkpoint", (size_t)count * 8);
            data = copies[i];
        }
        struct subsae__tensor_view *v = &views[i++];
        v->name = p->name;
        v->dtype = p->dtype;
        v->ndim = subsae__param_shape(p, s, v->shape);
        v->data = data;
        v->bytes = (size_t)count * subsae__dtype_size(p->dtype);
    }
    *n = i;
    return SUBSAE_OK;
}

/* checkpoint.json (the manifest) at `path`, naming state_file. Dumped
 * into our own allocation (json_dumpb), so it is freed like the rest. */
static int write_manifest(const subsae_trainer *t, const char *path, const char *state_file)
{
    const size_t flags = JSON_INDENT(2) | JSON_REAL_PRECISION(17);
    json_t *root = manifest_json(t, state_file);
    size_t size = root ? json_dumpb(root, NULL, 0, flags) : 0;
    char *text = size ? subsae__malloc(size) : NULL;
    int rc = text && json_dumpb(root, text, size, flags) == size
                 ? write_bytes(path, text, size)
                 : subsae__fail_nomem("checkpoint.json", size ? size : 4096);
    json_decref(root);
    subsae__free(text);
    return rc;
}

int subsae_trainer_save_checkpoint(const subsae_trainer *t, const char *dir)
{
    static const char *fn = "subsae_trainer_save_checkpoint";
    int rc = check_pointers(fn, t, "t", dir, "dir");
    if (!rc && !t->initialised)
        rc = subsae__fail(SUBSAE_E_STATE, SUBSAE_REASON_WRONG_STATE,
                          "%s: the trainer is not initialised", fn);
    if (!rc)
        rc = subsae__make_dir(dir);
    if (rc)
        return rc;
    char state_file[64], step_text[32];
    snprintf(state_file, sizeof state_file, "state-%lld.safetensors", (long long)t->step);
    snprintf(step_text, sizeof step_text, "%lld", (long long)t->step);
    char *state_path = subsae__path_join(dir, state_file);
    char *manifest_path = subsae__path_join(dir, MANIFEST);
    struct subsae__tensor_view views[SUBSAE__MAX_PARAMS];
    double *copies[SUBSAE__MAX_PARAMS] = {NULL};
    int64_t n_views = 0;
    if (!state_path || !manifest_path)
        rc = subsae__fail_nomem("checkpoint path", strlen(dir) + 64);
    if (!rc)
        rc = state_views(t, views, copies, &n_views);
    const char *keys[] = {"format", "step"};
    const char *values[] = {FORMAT_NAME, step_text};
    if (!rc)
        rc = subsae__safetensors_write(state_path, views, n_views, keys, values, 2);
    /* The manifest last, then the states it no longer names (see the top). */
    if (!rc)
        rc = write_manifest(t, manifest_path, state_file);
    if (!rc)
        remove_old_states(dir, state_file);
    subsae__free(state_path);
    subsae__free(manifest_path);
    for (int i = 0; i < SUBSAE__MAX_PARAMS; i++)
        subsae__free(copies[i]);
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
        r->rc = subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_HEADER,
                             "%s: field '%s' is missing", r->path, key);
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
                                 "%s: field '%s' is not a whole number in [%lld, %lld]",
                                 r->path, key, (long long)lo, (long long)hi);
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

static void read_window(struct reader *r, const json_t *obj, struct subsae__window *w)
{
    w->tokens = get_int(r, obj, "tokens", 0, INT64_MAX);
    w->sse = get_real(r, obj, "sse", false);
    w->sum_t2 = get_real(r, obj, "sum_t2", false);
    w->active = get_int(r, obj, "active", 0, INT64_MAX);
}

/* What checkpoint.json says about the model and the state file, checked
 * before the model is made. The trainer's own scalars are read straight
 * into the new trainer (freed whole when loading fails). */
struct manifest {
    int64_t d_in, d_out, d_sae, k;
    int activation;
    bool apply, by_norm, transcoder, skip;
    double s_in, s_out;
    char *metadata; /* compact JSON text or NULL; the reader of the manifest frees it */
    const char *state_file;
    int matryoshka_count;
    int64_t matryoshka[SUBSAE_MATRYOSHKA_MAX];
};

/* Options newer than the checkpoint format: absent from older files,
 * where they keep their defaults. */
static bool optional_option(int option)
{
    return option > SUBSAE_TRAIN_SUBSPACE_COEFFICIENTS;
}

/* Options, through the public setters (they validate every value). */
static void read_options(subsae_trainer *t, struct reader *r, const json_t *root)
{
    const json_t *options = field(r, root, "options");
    for (int o = 0; r->rc == SUBSAE_OK && o <= SUBSAE__TRAIN_OPTION_LAST; o++) {
        bool is_double;
        const char *name = subsae__trainer_option_name(o, &is_double);
        /* Options added after checkpoints were first written keep their
         * defaults when an older file does not name them. */
        if (!name || (optional_option(o) && !json_object_get(options, name)))
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
            r->rc = subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_VALUE,
                                 "%s: option '%s': %s", r->path, name, why);
        }
    }
}

static void read_model(struct reader *r, const json_t *root, struct manifest *mf)
{
    const json_t *model = field(r, root, "model");
    mf->d_in = get_int(r, model, "d_in", 1, INT32_MAX);
    mf->d_out = get_int(r, model, "d_out", 1, INT32_MAX);
    mf->d_sae = get_int(r, model, "d_sae", 1, INT32_MAX);
    mf->activation = (int)get_int(r, model, "activation", 0, SUBSAE_ACT_GATED);
    mf->k = get_int(r, model, "k", 1, INT32_MAX);
    mf->apply = get_bool(r, model, "apply_b_dec_to_input");
    mf->by_norm = get_bool(r, model, "rank_by_decoder_norm");
    mf->s_in = get_real(r, model, "input_scale", false);
    mf->s_out = get_real(r, model, "output_scale", false);
    mf->transcoder = get_bool(r, root, "transcoder");
    const json_t *state_name = field(r, root, "state_file");
    mf->state_file = json_is_string(state_name) ? json_string_value(state_name) : "";
    /* The run's metadata (absent from checkpoints of 0.1.0). */
    const json_t *run_meta = json_object_get(root, "metadata");
    if (run_meta && r->rc == SUBSAE_OK) {
        if (!json_is_object(run_meta))
            r->rc = subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_VALUE,
                                 "%s: field 'metadata' is not an object", r->path);
        else if (json_object_size(run_meta) > 0 &&
                 !(mf->metadata = subsae__json_compact(run_meta)))
            r->rc = subsae__fail_nomem("checkpoint metadata", 4096);
    }
}

/* The Matryoshka widths (absent for a plain model), checked as the
 * trainer's setter checks them. */
static void read_matryoshka(struct reader *r, const json_t *root, struct manifest *mf)
{
    const json_t *widths = json_object_get(root, "matryoshka_widths");
    if (!widths || r->rc)
        return;
    r->rc = subsae__matryoshka_parse(widths, r->path, mf->activation, mf->d_sae, mf->matryoshka,
                                     &mf->matryoshka_count);
}

/* The last step's loss, rate, loss parts and batch metrics (all but the
 * loss absent from older checkpoints). */
static void read_last_step(struct reader *r, const json_t *root, subsae_trainer *t)
{
    subsae__trainer_forget_last_step(t, get_real(r, root, "last_loss", true));
    const json_t *last_step = json_object_get(root, "last_step");
    const json_t *parts = json_object_get(last_step, "loss_parts");
    if (!last_step)
        return;
    t->last_lr = get_real(r, last_step, "lr", true);
    if (!json_is_array(parts) || json_array_size(parts) != 3) {
        if (r->rc == SUBSAE_OK)
            r->rc = subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_VALUE,
                                 "%s: 'last_step.loss_parts' is not an array of 3", r->path);
        return;
    }
    for (size_t i = 0; i < 3; i++) {
        const json_t *v = json_array_get(parts, i);
        t->last_loss_parts[i] = json_is_number(v) ? json_number_value(v) : NAN;
    }
    const json_t *dis = json_object_get(last_step, "bf16_disagreement");
    t->last_disagreement = json_is_number(dis) ? json_number_value(dis) : NAN;
    const json_t *batch = json_object_get(last_step, "batch"); /* absent from older ones */
    for (size_t i = 0; i < 3; i++) {
        const json_t *v = json_array_get(batch, i);
        t->last_batch[i] = json_is_number(v) ? json_number_value(v) : NAN;
    }
}

/* The precision in use: "fp32" or "bf16" (absent before bf16 training:
 * fp32). */
static void read_precision(struct reader *r, const json_t *root, subsae_trainer *t)
{
    const json_t *v = json_object_get(root, "precision");
    const char *name = v ? json_string_value(v) : "fp32";
    if (name && (!strcmp(name, "fp32") || !strcmp(name, "bf16"))) {
        t->precision_used = !strcmp(name, "bf16") ? SUBSAE__BF16 : SUBSAE__FP32;
    } else if (r->rc == SUBSAE_OK) {
        r->rc = subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_VALUE,
                             "%s: field 'precision' is not \"fp32\" or \"bf16\"", r->path);
    }
}

static void read_rng(struct reader *r, const json_t *root, uint64_t words[4])
{
    const json_t *rng = field(r, root, "rng");
    for (int i = 0; r->rc == SUBSAE_OK && i < 4; i++) {
        const json_t *w = json_array_get(rng, (size_t)i);
        const char *hex = json_is_string(w) ? json_string_value(w) : "";
        char *end;
        words[i] = strtoull(hex, &end, 16);
        if (json_array_size(rng) != 4 || strlen(hex) != 16 || *end)
            r->rc = subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_VALUE,
                                 "%s: 'rng' must hold four 16-digit hex words", r->path);
    }
}

static void read_progress(struct reader *r, const json_t *root, int activation,
                          subsae_trainer *t)
{
    t->subspace_dim_used = get_int(r, root, "subspace_dim_used", 0, INT32_MAX);
    t->init_scale = get_real(r, root, "init_scale", false);
    t->step = get_int(r, root, "step", 0, INT64_MAX);
    t->tokens = get_int(r, root, "tokens", 0, INT64_MAX);
    t->fit_end_step = get_int(r, root, "fit_end_step", -1, INT64_MAX);
    read_last_step(r, root, t);
    const json_t *batches = field(r, root, "batches");
    t->it_epoch = get_int(r, batches, "epoch", 0, INT64_MAX);
    t->it_position = get_int(r, batches, "position", 0, INT64_MAX);
    t->window_tokens = get_int(r, root, "window_tokens", 0, INT64_MAX);
    t->prev_valid = get_bool(r, root, "prev_valid");
    const json_t *windows = field(r, root, "windows");
    read_window(r, field(r, windows, "cur"), &t->cur);
    read_window(r, field(r, windows, "prev"), &t->prev);
    read_rng(r, root, t->rng.s);
    read_precision(r, root, t);
    t->batch_threshold = activation == SUBSAE_ACT_BATCHTOPK
                             ? get_real(r, root, "batch_threshold", false)
                             : 0.0;
}

/* The manifest's run metadata given to the trainer, and the manifest
 * checked against itself and the options. */
static int check_manifest(subsae_trainer *t, struct reader *r, const struct manifest *mf)
{
    if (!r->rc) {
        int rc = subsae_trainer_set_metadata(t, mf->metadata);
        if (rc == SUBSAE_E_INVALID) { /* a reserved member: the file's fault */
            char why[512];
            snprintf(why, sizeof why, "%s", subsae_last_error());
            rc = subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_VALUE, "%s: %s", r->path, why);
        }
        r->rc = rc;
    }
    if (r->rc)
        return r->rc;
    const char *state_file = mf->state_file;
    if (!state_file[0] || strchr(state_file, '/') || state_file[0] == '.')
        return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_VALUE, "%s: bad state_file '%s'",
                            r->path, state_file);
    if (t->features != mf->d_sae || t->k != mf->k || t->activation != mf->activation ||
        mf->k > mf->d_sae || (mf->apply && mf->d_in != mf->d_out) ||
        (mf->skip && !mf->transcoder) || !(mf->s_in > 0) || !(mf->s_out > 0))
        return subsae__fail(
            SUBSAE_E_FORMAT, SUBSAE_REASON_DIM_MISMATCH,
            "%s: model and options disagree (d_sae %lld / features %lld, k %lld "
            "/ %lld, scales %g %g)",
            r->path, (long long)mf->d_sae, (long long)t->features, (long long)mf->k,
            (long long)t->k, mf->s_in, mf->s_out);
    return SUBSAE_OK;
}

static void shape_text(int ndim, const int64_t *shape, char *out, size_t size)
{
    if (ndim == 2)
        snprintf(out, size, "[%lld, %lld]", (long long)shape[0], (long long)shape[1]);
    else
        snprintf(out, size, "[%lld]", ndim == 1 ? (long long)shape[0] : 0LL);
}

/* Tensor p of the state file exists with the table's dtype and the shape
 * for model dims. */
static int check_tensor(const subsae__safetensors *st, const char *path,
                        const struct subsae__param *p, const subsae_sae *dims)
{
    const struct subsae__tensor_view *v = subsae__safetensors_find(st, p->name);
    if (!v)
        return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_MISSING_TENSOR,
                            "%s: tensor '%s' is missing", path, p->name);
    int64_t shape[2];
    const int ndim = subsae__param_shape(p, dims, shape);
    if (v->dtype == p->dtype && v->ndim == ndim && v->shape[0] == shape[0] &&
        (ndim == 1 || v->shape[1] == shape[1]))
        return SUBSAE_OK;
    char got[64], want[64];
    shape_text(v->ndim, v->shape, got, sizeof got);
    shape_text(ndim, shape, want, sizeof want);
    return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_DIM_MISMATCH,
                        "%s: tensor '%s' is %s %dD %s, expected %s %s", path, p->name,
                        subsae__safetensors_dtype_name(v->dtype), v->ndim, got,
                        subsae__safetensors_dtype_name(p->dtype), want);
}

/* The state file matches the manifest: its step, and every tensor of the
 * state table (checked before anything of their size is allocated, so
 * that a damaged or hostile checkpoint.json cannot make the loader ask
 * for more memory than the state file itself holds). */
static int check_state_file(const subsae__safetensors *st, const char *path,
                            const struct manifest *mf, int64_t step)
{
    const char *meta = subsae__safetensors_metadata(st, "step");
    char step_text[32];
    snprintf(step_text, sizeof step_text, "%lld", (long long)step);
    if (!meta || strcmp(meta, step_text) != 0)
        return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_VALUE,
                            "%s: state of step %s does not match checkpoint.json (step %lld)",
                            path, meta ? meta : "(none)", (long long)step);
    const struct subsae_sae dims = {.d_in = mf->d_in, .d_out = mf->d_out, .d_sae = mf->d_sae};
    int rc = SUBSAE_OK;
    SUBSAE__FOR_EACH_PARAM(p, subsae__param_key(mf->activation, mf->skip))
    {
        if (!rc)
            rc = check_tensor(st, path, p, &dims);
    }
    return rc;
}

/* The model and the trainer's state arrays, of the manifest's sizes. */
static int make_model(subsae_trainer *t, const struct manifest *mf)
{
    int rc = subsae__sae_new(mf->d_in, mf->d_out, mf->d_sae, mf->activation, &t->sae);
    if (rc)
        return rc;
    subsae_sae *s = t->sae;
    s->k = mf->k;
    s->apply_b_dec_to_input = mf->apply;
    s->rank_by_decoder_norm = mf->by_norm;
    s->input_scale = mf->s_in;
    s->output_scale = mf->s_out;
    s->transcoder = mf->transcoder || mf->d_in != mf->d_out;
    t->transcoder = mf->transcoder;
    s->matryoshka_count = t->matryoshka_count = mf->matryoshka_count;
    memcpy(s->matryoshka, mf->matryoshka, sizeof s->matryoshka);
    memcpy(t->matryoshka, mf->matryoshka, sizeof t->matryoshka);
    rc = mf->skip ? subsae__sae_enable_skip(s) : SUBSAE_OK;
    if (!rc)
        rc = subsae__trainer_alloc_state(t);
    return rc ? rc : subsae__sae_replace_metadata(s, t->metadata);
}

/* Counts: whole numbers in [0, 2^53] of the F64 tensor, into int64_t. */
static int copy_counts(const struct subsae__tensor_view *v, const char *path, int64_t *dst)
{
    const int64_t n = v->shape[0];
    for (int64_t i = 0; i < n; i++) {
        double x;
        memcpy(&x, (const char *)v->data + (size_t)i * sizeof x, sizeof x);
        if (!(x >= 0.0 && x <= 9007199254740992.0) || x != floor(x))
            return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_VALUE,
                                "%s: tensor '%s'[%lld] = %g is not a count", path, v->name,
                                (long long)i, x);
        dst[i] = (int64_t)x;
    }
    return SUBSAE_OK;
}

/* Every tensor of the state table from the (checked) state file. */
static int copy_state(subsae_trainer *t, const subsae__safetensors *st, const char *path)
{
    int rc = SUBSAE_OK;
    SUBSAE__FOR_EACH_PARAM(p, SUBSAE__PARAM_KEY(t->sae))
    {
        if (rc)
            break;
        const struct subsae__tensor_view *v = subsae__safetensors_find(st, p->name);
        void *dst = subsae__param_data(p, t, t->sae);
        if (p->role == SUBSAE__ROLE_COUNT)
            rc = copy_counts(v, path, dst);
        else
            memcpy(dst, v->data, v->bytes);
    }
    return rc;
}

/* Adam's moments: first finite, second finite and >= 0 (a negative one
 * would make every later step NaN). */
static int check_moments(const subsae_trainer *t, const char *path)
{
    SUBSAE__FOR_EACH_PARAM(p, SUBSAE__PARAM_KEY(t->sae))
    {
        if (p->role != SUBSAE__ROLE_ADAM_M && p->role != SUBSAE__ROLE_ADAM_V)
            continue;
        const float *x = subsae__param_data(p, t, t->sae);
        const int64_t n = subsae__param_elements(p, t->sae);
        for (int64_t j = 0; j < n; j++)
            if (!isfinite(x[j]) || (p->role == SUBSAE__ROLE_ADAM_V && x[j] < 0.0f))
                return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_VALUE,
                                    "%s: tensor '%s'[%lld] = %g is not a valid Adam moment",
                                    path, p->name, (long long)j, (double)x[j]);
    }
    return SUBSAE_OK;
}

/* The model's threshold agrees with what training derives it from:
 * JumpReLU's is exp(log_threshold), BatchTopK's the running threshold of
 * the manifest in float. */
static int check_threshold(const subsae_trainer *t, const char *path)
{
    const double batch_threshold = t->batch_threshold;
    const subsae_sae *s = t->sae;
    for (int64_t f = 0; s->activation == SUBSAE_ACT_JUMPRELU && f < s->d_sae; f++)
        if (!isfinite(t->log_threshold[f]) || s->threshold[f] != expf(t->log_threshold[f]))
            return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_VALUE,
                                "%s: threshold[%lld] is not exp(log_threshold)", path,
                                (long long)f);
    for (int64_t f = 0; s->activation == SUBSAE_ACT_BATCHTOPK && f < s->d_sae; f++)
        if (!isfinite((float)batch_threshold) || s->threshold[f] != (float)batch_threshold)
            return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_VALUE,
                                "%s: threshold[%lld] = %g is not batch_threshold = %g of "
                                "checkpoint.json in float",
                                path, (long long)f, (double)s->threshold[f], batch_threshold);
    return SUBSAE_OK;
}

/* The model and its training state from the state file `dir`/state_file. */
static int load_tensors(subsae_trainer *t, const char *dir, const struct manifest *mf)
{
    char *path = subsae__path_join(dir, mf->state_file);
    if (!path)
        return subsae__fail_nomem("checkpoint state path",
                                  strlen(dir) + strlen(mf->state_file) + 2);
    subsae__safetensors *st;
    int rc = subsae__safetensors_open(path, &st);
    if (rc) {
        subsae__free(path);
        return rc;
    }
    rc = check_state_file(st, path, mf, t->step);
    if (!rc)
        rc = make_model(t, mf);
    if (!rc)
        rc = copy_state(t, st, path);
    if (!rc)
        rc = check_threshold(t, path);
    if (!rc)
        rc = subsae__sae_check_finite(t->sae, path);
    if (!rc)
        rc = check_moments(t, path);
    subsae__safetensors_close(st);
    subsae__free(path);
    return rc;
}

static int load_state(subsae_trainer *t, const char *dir, const json_t *root, struct reader *r)
{
    struct manifest mf = {0};
    read_options(t, r, root);
    mf.skip = t->skip != 0;
    read_model(r, root, &mf);
    read_matryoshka(r, root, &mf);
    read_progress(r, root, mf.activation, t);
    int rc = check_manifest(t, r, &mf);
    subsae__free(mf.metadata);
    if (!rc)
        rc = load_tensors(t, dir, &mf);
    if (rc)
        return rc;
    t->initialised = true;
    /* The workspace comes with the first step (sized for BATCH, as after
     * init): loading costs memory in proportion to the files. */
    return SUBSAE_OK;
}

int subsae_trainer_load_checkpoint(const char *dir, subsae_trainer **out)
{
    int rc = check_pointers("subsae_trainer_load_checkpoint", dir, "dir", out, "out");
    if (rc)
        return rc;
    char *path = subsae__path_join(dir, MANIFEST);
    if (!path)
        return subsae__fail_nomem("path", strlen(dir) + 32);
    json_t *root = NULL;
    rc = read_manifest(path, &root);
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
