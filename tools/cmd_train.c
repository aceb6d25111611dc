/* `subsae train INPUT... [--target FILE...]`: train an SAE or a
 * transcoder (TopK, BatchTopK, JumpReLU or ReLU; optional AuxK revival
 * loss) with active-subspace (or random) initialisation, report training
 * and evaluation metrics, save the model (SAELens layout, with
 * sparsity.safetensors) and checkpoints. Progress on stderr.
 *
 * A run is never lost: every input, evaluation file and the output
 * directory are checked before the first step (a failure costs
 * milliseconds); the output directory is locked and holds one run; a
 * resumed run continues on its own data only (unless told otherwise) up
 * to its recorded length and saves into its own directory; SIGINT and
 * SIGTERM, and a failure after some steps, save a checkpoint (and the
 * model so far) and print the command that resumes the run.
 *
 * Under `subsae-mpi` every worker runs this with its part of the rows
 * (dist.h); worker 0 prints, evaluates and writes. */
#include "dist.h"
#include "interrupt.h"
#include "run_dir.h"
#include "run_record.h"
#include "sae_cli.h"
#include "train_log.h"
#include "train_options.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Training inputs are scanned for NaN and infinity before the run when
 * their files hold at most this much (a pass costs about a second per GB);
 * larger ones are checked batch by batch, and a bad row then stops the run
 * with its checkpoint saved. Evaluation files are always scanned. */
static const int64_t SCAN_LIMIT_BYTES = (int64_t)1 << 30;

struct run {
    struct train_options o;
    int argc;
    char **argv;
    bool root, sharded;

    /* where it goes */
    const char *out;           /* the directory written: --out, or the resumed run's */
    char out_path[4096];
    char checkpoint[4300];     /* where checkpoints go ("" without a directory) */
    char resumed_dir[4300];    /* the checkpoint directory resumed from */
    json_t *resumed;           /* its checkpoint.json */
    int lock;                  /* descriptor of the output directory's lock, or -1 */
    const char *locked;        /* that directory */
    char fallback[128];        /* the directory of a run stopped without --out */
    bool created;              /* this run created it */
    bool clear_out;            /* --overwrite: remove the other run's files once all is checked */

    /* the data */
    char **paths, **tpaths;
    subsae_buffer *all, *train, *part, *eval, *tall, *ttrain, *tpart, *teval;
    int64_t rows;              /* training rows (of all workers) */

    /* the record and the length */
    json_t *record;            /* the run's metadata */
    bool new_data;             /* a resumed run continues on other data */
    int64_t total;             /* the run's length in tokens */
    int64_t first_tokens, first_steps; /* where this process started */

    /* training */
    subsae_trainer *t;
    struct sae_cli_progress shown;
    struct train_log log;
    int64_t last_checkpoint_step;
    double last_save;          /* when the last checkpoint was saved (or training began) */
    bool timed_checkpoint;     /* one was saved by the clock (--checkpoint-minutes) */
    bool had_checkpoint;       /* the directory held one when training began */
    bool checkpoint_failed, log_failed;
    double init_seconds, fit_seconds;
};

/* ---- where the run goes ------------------------------------------------- */

static bool is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* The directory holding `dir` when `dir` is called "checkpoint" (a run's
 * checkpoint directory), else "". */
static void run_of_checkpoint(const char *dir, char *out, size_t size)
{
    char copy[4096];
    snprintf(copy, sizeof copy, "%s", dir);
    size_t n = strlen(copy);
    while (n > 1 && copy[n - 1] == '/')
        copy[--n] = '\0';
    char *slash = strrchr(copy, '/');
    out[0] = '\0';
    if (strcmp(slash ? slash + 1 : copy, RUN_DIR_CHECKPOINT) != 0)
        return;
    if (slash && slash > copy)
        *slash = '\0';
    snprintf(out, size, "%s", !slash ? "." : slash == copy ? "/" : copy);
}

/* --resume DIR: a run directory (DIR/checkpoint/checkpoint.json) or a
 * checkpoint directory itself (DIR/checkpoint.json). */
static int locate_resumed(struct run *r, char *run_dir, size_t size)
{
    const char *dir = r->o.resume;
    char probe[4400];
    run_dir[0] = '\0';
    snprintf(probe, sizeof probe, "%s/" RUN_DIR_CHECKPOINT "/checkpoint.json", dir);
    if (is_file(probe)) {
        snprintf(r->resumed_dir, sizeof r->resumed_dir, "%s/" RUN_DIR_CHECKPOINT, dir);
        snprintf(run_dir, size, "%s", dir);
    } else {
        snprintf(probe, sizeof probe, "%s/checkpoint.json", dir);
        if (!is_file(probe)) {
            snprintf(probe, sizeof probe, "%s/cfg.json", dir);
            if (is_file(probe))
                return cli_fail("--resume %s: the directory holds a finished model but no "
                                "checkpoint to continue from (a run keeps one when it is "
                                "interrupted or given --checkpoint-every)",
                                dir);
            return cli_fail("--resume %s: no checkpoint there (%s/checkpoint/checkpoint.json)",
                            dir, dir);
        }
        snprintf(r->resumed_dir, sizeof r->resumed_dir, "%s", dir);
        run_of_checkpoint(dir, run_dir, size);
    }
    r->resumed = run_dir_read_checkpoint(r->resumed_dir);
    return r->resumed ? 0 : 1;
}

/* The output directory: --out, or the resumed run's own. */
static int choose_out(struct run *r)
{
    char run_dir[4096] = "";
    if (r->o.resume && locate_resumed(r, run_dir, sizeof run_dir))
        return 1;
    if (r->o.out)
        snprintf(r->out_path, sizeof r->out_path, "%s", r->o.out);
    else if (r->o.resume && run_dir[0])
        snprintf(r->out_path, sizeof r->out_path, "%s", run_dir);
    else if (r->o.resume)
        return cli_fail("--resume %s is a checkpoint outside a run directory: give --out DIR "
                        "for the model",
                        r->o.resume);
    r->out = r->out_path[0] ? r->out_path : NULL;
    if (r->out)
        snprintf(r->checkpoint, sizeof r->checkpoint, "%s/" RUN_DIR_CHECKPOINT, r->out);
    if (r->o.checkpoint_every && !r->out)
        return cli_fail("--checkpoint-every needs --out (checkpoints go to OUT/checkpoint)");
    return 0;
}

/* Lock the output directory and make sure it holds no other run (with
 * --overwrite its files go, but only when everything else has been
 * checked: see prepare). */
static int claim_out(struct run *r)
{
    if (!r->out || !r->root)
        return 0;
    struct run_dir_contents held;
    r->lock = run_dir_lock(r->out, r->argc, r->argv, &r->created);
    if (r->lock < 0)
        return 1;
    r->locked = r->out;
    run_dir_contents(r->out, &held);
    if (!held.model && !held.checkpoint)
        return 0;
    const char *mine = r->resumed ? run_dir_id(json_object_get(r->resumed, "metadata")) : "";
    const bool same_run = r->resumed && mine[0] && !strcmp(mine, held.id);
    char resumed_real[4096], out_real[4096];
    const bool same_dir = r->resumed && realpath(r->resumed_dir, resumed_real) &&
                          realpath(r->checkpoint, out_real) && !strcmp(resumed_real, out_real);
    if (same_run || same_dir)
        return 0;
    if (!r->o.overwrite) {
        char who[200];
        snprintf(who, sizeof who, "%s%s%s%s", held.id[0] ? "run " : "another run",
                 held.id[0] ? held.id : "", held.started[0] ? ", started " : "", held.started);
        return cli_fail("--out %s already holds the %s of %s; give --overwrite to replace "
                        "it, or another --out",
                        r->out, held.model ? "model" : "checkpoint", who);
    }
    r->clear_out = true;
    return 0;
}

/* ---- the data ------------------------------------------------------------- */

static void free_paths(char **paths, int n)
{
    for (int i = 0; paths && i < n; i++)
        free(paths[i]);
    free(paths);
}

/* This worker's files of `given` (see cli_dist_path), or NULL with a
 * message. */
static char **worker_paths(char **given, int n)
{
    char **paths = calloc((size_t)(n > 0 ? n : 1), sizeof *paths);
    for (int i = 0; paths && i < n; i++)
        if (!(paths[i] = cli_dist_path(given[i]))) {
            free_paths(paths, i);
            paths = NULL;
        }
    if (!paths)
        cli_fail("out of memory");
    return paths;
}

static subsae_buffer *open_data(char **paths, int n, const struct train_options *o,
                                const char *what)
{
    subsae_buffer *buf = sae_cli_open(paths, n, o->tensor, what);
    int64_t skipped = 0;
    if (buf && o->skip_nonfinite &&
        cli_check(subsae_buffer_skip_nonfinite(buf, &skipped), "cannot scan the input")) {
        subsae_buffer_free(buf);
        return NULL;
    }
    if (skipped && !o->quiet)
        fprintf(stderr, "%s train: left out %lld row%s holding NaN or infinity\n",
                cli_program_name, (long long)skipped, skipped > 1 ? "s" : "");
    return buf;
}

static int hold_out(struct run *r, double fraction)
{
    const int64_t rows = subsae_buffer_rows(r->all);
    const int64_t n_eval = (int64_t)floor(fraction * (double)rows + 0.5);
    if (n_eval < 1 || rows - n_eval < 2)
        return cli_fail("--eval-fraction %g of %lld rows leaves nothing to train or evaluate on",
                        fraction, (long long)rows);
    if (cli_check(subsae_buffer_view(r->all, 0, rows - n_eval, &r->train), "cannot split") ||
        cli_check(subsae_buffer_view(r->all, rows - n_eval, n_eval, &r->eval), "cannot split"))
        return 1;
    if (r->tall &&
        (cli_check(subsae_buffer_view(r->tall, 0, rows - n_eval, &r->ttrain), "cannot split") ||
         cli_check(subsae_buffer_view(r->tall, rows - n_eval, n_eval, &r->teval),
                   "cannot split")))
        return 1;
    r->rows = rows - n_eval;
    if (r->rows < n_eval && !r->o.quiet)
        fprintf(stderr,
                "%s train: warning: --eval-fraction %g leaves %lld of the %lld rows to train "
                "on, fewer than it holds out\n",
                cli_program_name, fraction, (long long)r->rows, (long long)rows);
    return 0;
}

/* The evaluation rows: a held-out fraction, or files of their own whose
 * widths and rows must fit the training data. */
static int open_eval(struct run *r)
{
    const struct train_options *o = &r->o;
    double fraction = o->have_eval_fraction ? o->eval_fraction : 0.0;
    /* A resumed run keeps the fraction it held out, unless told otherwise. */
    const json_t *recorded = json_object_get(
        json_object_get(json_object_get(r->resumed, "metadata"), "run"), "eval_fraction");
    if (!fraction && !o->eval_file && json_is_number(recorded))
        fraction = json_number_value(recorded);
    if (fraction > 0)
        return hold_out(r, fraction);
    if (!o->eval_file || !r->root)
        return 0;
    char *eval_paths[1] = {(char *)o->eval_file}, *target_paths[1] = {(char *)o->eval_target};
    if (!(r->eval = open_data(eval_paths, 1, o, "--eval")))
        return 1;
    if (o->eval_target && !(r->teval = open_data(target_paths, 1, o, "--eval-target")))
        return 1;
    if (subsae_buffer_dim(r->eval) != subsae_buffer_dim(r->all))
        return cli_fail("--eval %s has rows of %lld values but the inputs have %lld",
                        o->eval_file, (long long)subsae_buffer_dim(r->eval),
                        (long long)subsae_buffer_dim(r->all));
    if (r->teval && subsae_buffer_dim(r->teval) != subsae_buffer_dim(r->tall))
        return cli_fail("--eval-target %s has rows of %lld values but the targets have %lld",
                        o->eval_target, (long long)subsae_buffer_dim(r->teval),
                        (long long)subsae_buffer_dim(r->tall));
    if (r->teval && subsae_buffer_rows(r->teval) != subsae_buffer_rows(r->eval))
        return cli_fail("--eval %s has %lld rows but --eval-target %s has %lld", o->eval_file,
                        (long long)subsae_buffer_rows(r->eval), o->eval_target,
                        (long long)subsae_buffer_rows(r->teval));
    for (int i = 0; i < o->n_inputs; i++)
        if (cli_same_file(o->eval_file, o->inputs[i]))
            fprintf(stderr,
                    "%s train: warning: --eval %s is one of the inputs, so its metrics are on "
                    "rows the model trains on (--eval-fraction F holds rows out)\n",
                    cli_program_name, o->eval_file);
    return 0;
}

static int open_inputs(struct run *r)
{
    const struct train_options *o = &r->o;
    if (o->n_targets > 0 && cli_dist_sharded(o->targets, o->n_targets) != r->sharded)
        return cli_fail("the inputs and the targets must both name per-worker files ({rank}) "
                        "or neither");
    if (r->sharded && o->have_eval_fraction)
        return cli_fail("--eval-fraction holds out the last rows of one data set; with "
                        "per-worker files ({rank}) give --eval FILE");
    if (!(r->paths = worker_paths(o->inputs, o->n_inputs)) ||
        !(r->all = open_data(r->paths, o->n_inputs, o, "the input")))
        return 1;
    r->train = r->all;
    r->rows = subsae_buffer_rows(r->all);
    if (o->n_targets > 0) {
        if (!(r->tpaths = worker_paths(o->targets, o->n_targets)) ||
            !(r->tall = open_data(r->tpaths, o->n_targets, o, "--target")))
            return 1;
        if (subsae_buffer_rows(r->tall) != r->rows)
            return cli_fail("the inputs have %lld rows but the targets %lld", (long long)r->rows,
                            (long long)subsae_buffer_rows(r->tall));
        r->ttrain = r->tall;
    }
    if (open_eval(r))
        return 1;
    if (cli_check(cli_dist_part(r->train, r->sharded, &r->part),
                  "cannot split the rows between workers") ||
        (r->ttrain && cli_check(cli_dist_part(r->ttrain, r->sharded, &r->tpart),
                                "cannot split the target rows between workers")))
        return 1;
    return 0;
}

/* NaN and infinity before the run: the evaluation files always, the
 * training files when cheap. */
static int scan_data(struct run *r)
{
    const struct train_options *o = &r->o;
    if (!r->root || o->skip_nonfinite)
        return 0;
    char *eval_paths[1] = {(char *)o->eval_file}, *target_paths[1] = {(char *)o->eval_target};
    if (o->eval_file && sae_cli_scan(eval_paths, 1, o->tensor, "--eval", 0))
        return 1;
    if (o->eval_target && sae_cli_scan(target_paths, 1, o->tensor, "--eval-target", 0))
        return 1;
    if (r->tpaths &&
        sae_cli_scan(r->tpaths, o->n_targets, o->tensor, "--target", SCAN_LIMIT_BYTES))
        return 1;
    return sae_cli_scan(r->paths, o->n_inputs, o->tensor, "the input", SCAN_LIMIT_BYTES);
}

/* ---- the run's record ------------------------------------------------------ */

/* The fingerprints of the data this process trains and evaluates on. */
static json_t *data_record(const struct run *r)
{
    const struct train_options *o = &r->o;
    json_t *data = json_object(), *v;
    int bad = !data;
    if (!bad && (v = run_record_data(r->paths, o->n_inputs, o->tensor, r->train)))
        bad |= json_object_set_new(data, "input", v);
    else
        bad = 1;
    if (!bad && r->ttrain)
        bad |= !(v = run_record_data(r->tpaths, o->n_targets, o->tensor, r->ttrain)) ||
               json_object_set_new(data, "target", v);
    char *eval_paths[1] = {(char *)o->eval_file};
    if (!bad && o->eval_file && r->eval)
        bad |= !(v = run_record_data(eval_paths, 1, o->tensor, r->eval)) ||
               json_object_set_new(data, "eval", v);
    if (bad) {
        json_decref(data);
        return NULL;
    }
    return data;
}

/* The resumed run's data against this process's: a mismatch is refused
 * with both named, unless --allow-new-data. *changed tells whether the
 * training data (input or target) changed: the run's length then counts
 * from here (another evaluation file changes nothing of the training). */
static int compare_data(const struct run *r, const json_t *was, const json_t *now, bool *changed)
{
    static const char *const parts[] = {"input", "target", "eval"};
    static const char *const names[] = {"trained on", "trained towards", "evaluated on"};
    *changed = false;
    for (int i = 0; i < 3; i++) {
        const json_t *a = json_object_get(was, parts[i]), *b = json_object_get(now, parts[i]);
        if (!a || !b || run_record_same_data(a, b))
            continue;
        *changed |= i < 2;
        if (r->o.allow_new_data)
            continue;
        char old_text[2300], new_text[2300];
        run_record_describe(a, old_text, sizeof old_text);
        run_record_describe(b, new_text, sizeof new_text);
        return cli_fail("the run in %s was %s %s; this is other data: %s. Give "
                        "--allow-new-data to continue on it",
                        r->o.resume, names[i], old_text, new_text);
    }
    return 0;
}

/* The resumed model against the data given now, in the user's words. */
static int check_model_fits(const struct run *r)
{
    const json_t *model = json_object_get(r->resumed, "model");
    const int64_t d_in = json_integer_value(json_object_get(model, "d_in"));
    const int64_t d_out = json_integer_value(json_object_get(model, "d_out"));
    const bool transcoder = json_is_true(json_object_get(r->resumed, "transcoder"));
    if (transcoder && !r->tall)
        return cli_fail("the run in %s is a transcoder: give its --target files", r->o.resume);
    if (!transcoder && r->tall)
        return cli_fail("the run in %s is an SAE, not a transcoder: drop --target", r->o.resume);
    if (subsae_buffer_dim(r->all) != d_in)
        return cli_fail("%s has rows of %lld values but the run in %s takes %lld",
                        r->o.inputs[0], (long long)subsae_buffer_dim(r->all), r->o.resume,
                        (long long)d_in);
    if (r->tall && subsae_buffer_dim(r->tall) != d_out)
        return cli_fail("%s has rows of %lld values but the run in %s reconstructs %lld",
                        r->o.targets[0], (long long)subsae_buffer_dim(r->tall), r->o.resume,
                        (long long)d_out);
    return 0;
}

static void set_or_keep(json_t *obj, const char *key, const char *given, const char *fallback)
{
    if (given || !json_object_get(obj, key))
        json_object_set_new(obj, key, json_string(given ? given : fallback));
}

/* SAELens' names: top level (SAELens up to 5) and in "metadata" (6). */
static int record_names(const struct run *r, json_t *record)
{
    char hook[512], model[512], hook_out[512];
    run_record_stem(r->o.inputs[0], hook, sizeof hook);
    run_record_parent(r->o.inputs[0], model, sizeof model);
    if (r->o.n_targets > 0)
        run_record_stem(r->o.targets[0], hook_out, sizeof hook_out);
    json_t *meta = json_object_get(record, "metadata");
    if (!json_is_object(meta)) {
        meta = json_object();
        if (!meta || json_object_set_new(record, "metadata", meta))
            return 1;
    }
    json_t *where[2] = {record, meta};
    for (int i = 0; i < 2; i++) {
        set_or_keep(where[i], "hook_name", r->o.hook_name, hook);
        set_or_keep(where[i], "model_name", r->o.model_name, model);
        if (r->o.n_targets > 0)
            set_or_keep(where[i], "hook_name_out", r->o.hook_name_out, hook_out);
    }
    return 0;
}

/* The tokens of one step: a batch, or every row when there are fewer. */
static int64_t step_tokens(const struct run *r)
{
    int64_t batch = 1;
    subsae_trainer_get_int(r->t, SUBSAE_TRAIN_BATCH, &batch);
    return r->rows < batch ? r->rows : batch;
}

/* The tokens of one epoch: whole steps (an epoch's last partial batch is
 * dropped). */
static int64_t epoch_tokens(const struct run *r)
{
    const int64_t step = step_tokens(r);
    return step > 0 ? r->rows - r->rows % step : r->rows;
}

/* The run's length in tokens: --epochs / --tokens from the run's start on
 * its own data, or from here on new data; else the recorded length (one
 * epoch for a new run). */
static int64_t run_length(const struct run *r, bool new_data, int64_t recorded)
{
    const struct train_options *o = &r->o;
    const int64_t epoch = epoch_tokens(r);
    const int64_t from = new_data ? r->first_tokens : 0;
    if (o->have_tokens)
        return from + o->tokens;
    if (o->have_epochs || recorded <= 0 || new_data) {
        /* --epochs is above 0: at least a token, which whole_steps makes a step */
        const int64_t n = llround((o->have_epochs ? o->epochs : 1.0) * (double)epoch);
        return from + (n > 0 ? n : 1);
    }
    return recorded;
}

/* The length `asked` rounded up to the whole steps that
 * subsae_trainer_fit takes from where the run stands (a step is one batch,
 * or every row when there are fewer), so that the record and the summary
 * say what is trained; a length below one step is said to become one. */
static int64_t whole_steps(const struct run *r, int64_t asked)
{
    const int64_t step = step_tokens(r);
    const int64_t todo = asked - r->first_tokens;
    if (todo <= 0 || step <= 0 || todo % step == 0)
        return asked;
    if (todo < step && !r->o.quiet)
        fprintf(stderr,
                "%s train: note: the run's length (%lld token%s) is less than one step: it "
                "trains one step of %lld tokens\n",
                cli_program_name, (long long)todo, todo == 1 ? "" : "s", (long long)step);
    return r->first_tokens + (todo / step + 1) * step;
}

/* The record of this run: a new one, or the resumed one brought up to
 * date. */
static int build_record(struct run *r)
{
    json_t *data = r->root ? data_record(r) : json_object();
    if (!data)
        return 1;
    const json_t *old = json_object_get(r->resumed, "metadata");
    r->record = old ? json_deep_copy(old) : json_object();
    json_t *run = json_object_get(r->record, "run");
    if (r->record && !json_is_object(run)) {
        char id[64], started[40];
        run_record_new_id(id, sizeof id);
        time_t now = time(NULL);
        struct tm utc;
        gmtime_r(&now, &utc);
        strftime(started, sizeof started, "%Y-%m-%dT%H:%M:%SZ", &utc);
        run = json_pack("{s:s, s:s}", "id", id, "started", started);
        if (!run || json_object_set_new(r->record, "run", run)) {
            json_decref(data);
            return cli_fail("out of memory");
        }
    }
    if (!r->record || record_names(r, r->record)) {
        json_decref(data);
        return cli_fail("out of memory");
    }
    const json_t *was = json_object_get(run, "data");
    if (r->resumed && was && r->root && compare_data(r, was, data, &r->new_data)) {
        json_decref(data);
        return 1;
    }
    if (r->resumed && !was && r->root && !r->o.quiet)
        fprintf(stderr, "%s train: the run in %s records no data (saved by libsubsae 0.1.0): "
                        "resuming without checking the data\n",
                cli_program_name, r->o.resume);
    double lr;
    int64_t batch, seed, dead_window;
    subsae_trainer_get_double(r->t, SUBSAE_TRAIN_LR, &lr);
    subsae_trainer_get_int(r->t, SUBSAE_TRAIN_BATCH, &batch);
    subsae_trainer_get_int(r->t, SUBSAE_TRAIN_SEED, &seed);
    subsae_trainer_get_int(r->t, SUBSAE_TRAIN_DEAD_WINDOW, &dead_window);
    json_t *effective = json_pack(
        "{s:f, s:I, s:I, s:I, s:s, s:s}", "lr", lr, "batch", (json_int_t)batch, "seed",
        (json_int_t)seed, "dead_window", (json_int_t)dead_window, "precision",
        run_record_precision(r->t), "library_version", subsae_version_string());
    int bad = !effective || json_object_update_new(run, effective);
    if (!bad && r->o.have_epochs)
        bad = json_object_set_new(run, "epochs", json_real(r->o.epochs));
    if (!bad && r->o.have_eval_fraction) /* a resumed run keeps the one recorded */
        bad = json_object_set_new(run, "eval_fraction", json_real(r->o.eval_fraction));
    if (!bad && r->root)
        bad = json_object_set_new(run, "data", data);
    else
        json_decref(data);
    return bad ? cli_fail("out of memory") : 0;
}

/* The run's length (of all workers' rows) into the record, and the record
 * to the trainer. */
static int record_length(struct run *r)
{
    json_t *run = json_object_get(r->record, "run");
    const int64_t recorded = json_integer_value(json_object_get(run, "total_tokens"));
    r->total = whole_steps(r, run_length(r, r->new_data, recorded));
    char *text = NULL;
    if (json_object_set_new(run, "total_tokens", json_integer((json_int_t)r->total)) ||
        !(text = json_dumps(r->record, JSON_COMPACT)))
        return cli_fail("out of memory");
    int rc = cli_check(subsae_trainer_set_metadata(r->t, text), "cannot record the run");
    free(text);
    return rc;
}

/* ---- the trainer ----------------------------------------------------------- */

/* Without --out: a directory named after the run, here, created and
 * locked (the checkpoint of a stopped run, the model of a finished one). 0,
 * or 1 with a message. */
static int run_named_dir(struct run *r)
{
    if (r->locked && r->locked == r->fallback) /* made already, for a checkpoint */
        return 0;
    snprintf(r->fallback, sizeof r->fallback, "subsae-run-%s", run_dir_id(r->record));
    if ((r->lock = run_dir_lock(r->fallback, r->argc, r->argv, &r->created)) < 0)
        return 1;
    r->locked = r->fallback;
    snprintf(r->checkpoint, sizeof r->checkpoint, "%s/" RUN_DIR_CHECKPOINT, r->fallback);
    return 0;
}

/* Save the checkpoint after step `step` (without --out into the run's own
 * directory, made here). 0, or 1 with the message on a line of its own. */
static int save_checkpoint_now(struct run *r, int64_t step)
{
    if (!r->out && run_named_dir(r))
        return 1;
    int saved = subsae_trainer_save_checkpoint(r->t, r->checkpoint);
    if (saved != SUBSAE_OK)
        cli_progress_stop(&r->shown.bar); /* the message on a line of its own */
    if (cli_check(saved, "cannot save a checkpoint"))
        return 1;
    r->last_checkpoint_step = step;
    r->last_save = sae_cli_now();
    return 0;
}

/* --checkpoint-minutes, or its default. */
static double checkpoint_minutes(const struct run *r)
{
    return r->o.have_checkpoint_minutes ? r->o.checkpoint_minutes : TRAIN_CHECKPOINT_MINUTES;
}

/* The first checkpoint saved by the clock: where it is, and how a run
 * killed from here on goes on. */
static void say_timed_checkpoint(struct run *r)
{
    if (r->o.quiet)
        return;
    char command[16384];
    train_options_resume_command(r->argc, r->argv, r->out ? r->out : r->fallback, command,
                                 sizeof command);
    cli_progress_stop(&r->shown.bar);
    fprintf(stderr, "%s train: a checkpoint is kept in %s against a crash (every %g minutes, "
                    "--checkpoint-minutes); should the run die, go on with: %s\n",
            cli_program_name, r->checkpoint, checkpoint_minutes(r), command);
}

/* Whether the clock asks for a checkpoint (--checkpoint-minutes). */
static bool checkpoint_due(const struct run *r)
{
    const double minutes = checkpoint_minutes(r);
    return minutes > 0 && sae_cli_now() - r->last_save >= 60.0 * minutes;
}

static int on_progress(int event, const char *phase, int64_t done, int64_t total,
                       const char *message, void *user)
{
    (void)total;
    struct run *r = user;
    if (event == SUBSAE_EVENT_LOG) {
        if (!r->o.quiet) {
            cli_progress_stop(&r->shown.bar); /* the line below a drawn bar */
            fprintf(stderr, "%s train: %s: %s\n", cli_program_name, phase, message);
        }
        return 0;
    }
    if (interrupt_signal())
        return 1; /* stop after this step (or cancel the initialisation) */
    double m[SUBSAE_METRIC_COUNT];
    if (strcmp(phase, "fit") != 0 ||
        subsae_trainer_metrics(r->t, m, SUBSAE_METRIC_COUNT) != SUBSAE_OK)
        return 0;
    const int64_t step = (int64_t)m[SUBSAE_METRIC_STEPS];
    const bool every = r->o.checkpoint_every && step % r->o.checkpoint_every == 0;
    if (r->root && (every || checkpoint_due(r))) {
        const bool first_timed = !every && !r->timed_checkpoint;
        r->timed_checkpoint |= !every;
        if (save_checkpoint_now(r, step)) {
            r->checkpoint_failed = true;
            return 1; /* stop cleanly */
        }
        if (first_timed)
            say_timed_checkpoint(r);
    }
    if (r->root && train_log_step(&r->log, m, false)) {
        r->log_failed = true;
        return 1;
    }
    sae_cli_progress_show(&r->shown, phase, done, m);
    return 0;
}

/* A new trainer with the options and the run's initialisation, or the
 * resumed one with the options it may change. */
static int make_trainer(struct run *r)
{
    if (r->resumed) {
        if (cli_check(subsae_trainer_load_checkpoint(r->resumed_dir, &r->t), "cannot resume"))
            return 1;
    } else if (cli_check(subsae_trainer_create(&r->t), "cannot create the trainer")) {
        return 1;
    }
    return train_options_apply(&r->o, r->t) || train_options_apply_matryoshka(&r->o, r->t) ||
           cli_check(subsae_trainer_set_callback(r->t, on_progress, r), "callback") ||
           cli_check(cli_dist_trainer(r->t), "cannot attach the workers");
}

/* ---- saving ---------------------------------------------------------------- */

/* The densities of the training window, or NULL (no step yet, out of
 * memory); the caller frees them. */
static double *window_density(const subsae_trainer *t, int64_t features)
{
    double *density = malloc((size_t)features * sizeof *density);
    if (density && subsae_trainer_feature_density(t, density, features) != SUBSAE_OK) {
        free(density);
        density = NULL;
    }
    return density;
}

/* The model and its densities into the output directory. */
static int save_model(const struct run *r, const double *density)
{
    const subsae_sae *sae = subsae_trainer_sae(r->t);
    int64_t features;
    subsae_sae_get_int(sae, SUBSAE_SAE_D_SAE, &features);
    if (cli_check(subsae_sae_save(sae, r->out), "cannot save the model"))
        return 1;
    double *own = density ? NULL : window_density(r->t, features);
    char path[4300];
    snprintf(path, sizeof path, "%s/" RUN_DIR_SPARSITY, r->out);
    int rc = 0;
    if (density || own)
        rc = cli_check(subsae_sae_save_sparsity(sae, path, density ? density : own, features),
                       "cannot save the feature densities");
    free(own);
    return rc;
}

/* A run stopped early (a signal, a failure after some steps): save its
 * checkpoint, and with an output directory the model so far; say where
 * and how to go on (`why` is what stopped it: a failure's message, which
 * then stays one line). Returns `code`. */
static int save_stopped_run(struct run *r, const char *why, int code)
{
    if (!r->root)
        return code;
    cli_progress_stop(&r->shown.bar);
    double m[SUBSAE_METRIC_COUNT];
    subsae_trainer_metrics(r->t, m, SUBSAE_METRIC_COUNT);
    const int64_t steps = (int64_t)m[SUBSAE_METRIC_STEPS];
    const int64_t tokens = (int64_t)m[SUBSAE_METRIC_TOKENS];
    const bool failed = code == 1;
    if (steps == r->first_steps) {
        fprintf(stderr, "%s train: %s%s\n", cli_program_name, why,
                failed ? "" : " before the first step; nothing to save");
        return code;
    }
    train_log_step(&r->log, m, true);
    if (!r->out && run_named_dir(r))
        return code;
    if (r->last_checkpoint_step != steps &&
        cli_check(subsae_trainer_save_checkpoint(r->t, r->checkpoint),
                  "cannot save the checkpoint"))
        return code;
    const bool model = r->out && save_model(r, NULL) == 0;
    const char *dir = r->out ? r->out : r->fallback;
    char command[16384];
    train_options_resume_command(r->argc, r->argv, dir, command, sizeof command);
    char saved[9000];
    snprintf(saved, sizeof saved, "%s%s%s", r->checkpoint,
             model ? " and the model so far in " : "", model ? r->out : "");
    if (failed) /* an error is one line */
        fprintf(stderr, "%s train: %s; the %lld steps before (%lld of %lld tokens) are saved: "
                        "the checkpoint in %s; resume with: %s\n",
                cli_program_name, why, (long long)steps, (long long)tokens,
                (long long)r->total, saved, command);
    else
        fprintf(stderr, "%s train: %s after step %lld (%lld of %lld tokens): saved the "
                        "checkpoint in %s\n%s train: resume with: %s\n",
                cli_program_name, why, (long long)steps, (long long)tokens,
                (long long)r->total, saved, cli_program_name, command);
    if (r->o.json)
        cli_print_json(json_pack("{s:s, s:I, s:I, s:I, s:s, s:s?, s:s}", "stopped", why, "steps",
                                 (json_int_t)steps, "tokens", (json_int_t)tokens,
                                 "total_tokens", (json_int_t)r->total, "checkpoint",
                                 r->checkpoint, "out", model ? r->out : NULL, "resume", command));
    return code;
}

/* ---- the report ------------------------------------------------------------- */

/* The mean inference threshold of a JumpReLU / BatchTopK model, or null. */
static json_t *threshold_json(const subsae_sae *sae, int64_t activation)
{
    if (activation != SUBSAE_ACT_JUMPRELU && activation != SUBSAE_ACT_BATCHTOPK)
        return json_null();
    int64_t m = subsae_sae_param_size(sae, SUBSAE_PARAM_THRESHOLD);
    float *thr = malloc((size_t)m * sizeof *thr);
    double sum = 0.0;
    if (!thr || subsae_sae_get_param(sae, SUBSAE_PARAM_THRESHOLD, thr, m) != SUBSAE_OK) {
        free(thr);
        return json_null();
    }
    for (int64_t f = 0; f < m; f++)
        sum += thr[f];
    free(thr);
    return sae_cli_number(sum / (double)m);
}

struct summary {
    int64_t features, k, init, subspace_dim, activation, d_in, d_out, batch, seed, dead_window,
        skip;
    double auxk, penalty, lr;
    int penalty_option; /* SUBSAE_TRAIN_L1_COEF / _L0_COEF, or -1 (TopK, BatchTopK) */
};

/* "l1" or "l0": the name of the penalty's coefficient (with a penalty). */
static const char *penalty_flag(const struct summary *s)
{
    return s->penalty_option == SUBSAE_TRAIN_L0_COEF ? "l0" : "l1";
}

static void summarise(const subsae_trainer *t, struct summary *s)
{
    const subsae_sae *sae = subsae_trainer_sae(t);
    s->penalty = NAN;
    s->penalty_option = -1;
    subsae_trainer_get_int(t, SUBSAE_TRAIN_FEATURES, &s->features);
    subsae_trainer_get_int(t, SUBSAE_TRAIN_K, &s->k);
    subsae_trainer_get_int(t, SUBSAE_TRAIN_ACTIVATION, &s->activation);
    subsae_trainer_get_int(t, SUBSAE_TRAIN_INIT, &s->init);
    subsae_trainer_get_int(t, SUBSAE_TRAIN_SUBSPACE_DIM, &s->subspace_dim);
    subsae_trainer_get_int(t, SUBSAE_TRAIN_BATCH, &s->batch);
    subsae_trainer_get_int(t, SUBSAE_TRAIN_SEED, &s->seed);
    subsae_trainer_get_int(t, SUBSAE_TRAIN_DEAD_WINDOW, &s->dead_window);
    subsae_trainer_get_int(t, SUBSAE_TRAIN_SKIP, &s->skip);
    subsae_trainer_get_double(t, SUBSAE_TRAIN_AUXK_COEF, &s->auxk);
    subsae_trainer_get_double(t, SUBSAE_TRAIN_LR, &s->lr);
    if (s->activation == SUBSAE_ACT_RELU || s->activation == SUBSAE_ACT_GATED)
        s->penalty_option = SUBSAE_TRAIN_L1_COEF;
    else if (s->activation == SUBSAE_ACT_JUMPRELU)
        s->penalty_option = SUBSAE_TRAIN_L0_COEF;
    if (s->penalty_option >= 0)
        subsae_trainer_get_double(t, s->penalty_option, &s->penalty);
    subsae_sae_get_int(sae, SUBSAE_SAE_D_IN, &s->d_in);
    subsae_sae_get_int(sae, SUBSAE_SAE_D_OUT, &s->d_out);
}

static int report_json(const struct run *r, const struct summary *s, const double *m,
                       const double *em)
{
    const subsae_sae *sae = subsae_trainer_sae(r->t);
    const int64_t trained = (int64_t)m[SUBSAE_METRIC_TOKENS] - r->first_tokens;
    const double rate = r->fit_seconds > 0 ? (double)trained / r->fit_seconds : 0.0;
    json_t *eval = em ? sae_cli_eval_json(em) : json_null();
    if (em && sae_cli_add_prefix_ev(eval, sae, r->eval, r->teval)) {
        json_decref(eval);
        return 1;
    }
    json_t *report = json_pack(
        "{s:I, s:I, s:s, s:b, s:I, s:I, s:o, s:o, s:o, s:o, s:s, s:o, s:I, s:I, s:f, s:f, "
        "s:f, s:o, s:o}",
        "features", (json_int_t)s->features, "k", (json_int_t)s->k, "activation",
        subsae_activation_name((int)s->activation), "transcoder", r->tall != NULL, "d_in",
        (json_int_t)s->d_in, "d_out", (json_int_t)s->d_out, "auxk", sae_cli_number(s->auxk),
        "l1", sae_cli_number(s->penalty_option == SUBSAE_TRAIN_L1_COEF ? s->penalty : NAN), "l0",
        sae_cli_number(s->penalty_option == SUBSAE_TRAIN_L0_COEF ? s->penalty : NAN),
        "mean_threshold", threshold_json(sae, s->activation), "init",
        s->init == SUBSAE_INIT_RANDOM ? "random" : "active-subspace", "subspace_dim",
        s->init == SUBSAE_INIT_RANDOM ? json_null() : json_integer(s->subspace_dim), "tokens",
        (json_int_t)m[SUBSAE_METRIC_TOKENS], "steps", (json_int_t)m[SUBSAE_METRIC_STEPS],
        "seconds", r->fit_seconds, "tokens_per_second", rate, "init_seconds", r->init_seconds,
        "final", sae_cli_final_json(m), "eval", eval);
    /* What the run used, and where it is. */
    json_t *used = json_pack(
        "{s:f, s:I, s:I, s:o, s:I, s:I, s:s, s:s, s:s, s:s?, s:s?}", "lr", s->lr, "batch",
        (json_int_t)s->batch, "total_tokens", (json_int_t)r->total, "epochs",
        r->o.have_epochs ? json_real(r->o.epochs) : json_null(), "seed", (json_int_t)s->seed,
        "dead_window", (json_int_t)s->dead_window, "precision", run_record_precision(r->t),
        "library_version", subsae_version_string(), "run_id", run_dir_id(r->record), "out",
        r->out, "checkpoint", r->last_checkpoint_step >= 0 ? r->checkpoint : NULL);
    if (report)
        json_object_set_new(report, "skip", json_boolean(s->skip));
    if (report && used)
        json_object_update_new(report, used);
    else
        json_decref(used);
    if (report && cli_dist)
        json_object_update_new(report, cli_dist_json());
    return cli_print_json(report);
}

static int report_text(const struct run *r, const struct summary *s, const double *m,
                       const double *em)
{
    const int64_t trained = (int64_t)m[SUBSAE_METRIC_TOKENS] - r->first_tokens;
    const double rate = r->fit_seconds > 0 ? (double)trained / r->fit_seconds : 0.0;
    printf("trained %s %s of %lld features", subsae_activation_name((int)s->activation),
           r->tall ? (s->skip ? "skip transcoder" : "transcoder") : "SAE",
           (long long)s->features);
    if (s->activation == SUBSAE_ACT_TOPK || s->activation == SUBSAE_ACT_BATCHTOPK)
        printf(", k %lld", (long long)s->k);
    if (s->penalty_option >= 0)
        printf(", %s %g", penalty_flag(s), s->penalty);
    if (s->auxk > 0)
        printf(", auxk %g", s->auxk);
    printf(", %s init", s->init == SUBSAE_INIT_RANDOM ? "random" : "active-subspace");
    if (s->init != SUBSAE_INIT_RANDOM)
        printf(" (subspace dim %lld)", (long long)s->subspace_dim);
    printf(": %lld tokens, %lld steps in %.1f s (%.0f tokens/s)\n",
           (long long)m[SUBSAE_METRIC_TOKENS], (long long)m[SUBSAE_METRIC_STEPS], r->fit_seconds,
           rate);
    printf("run %s: lr %.4g%s, batch %lld, %lld tokens", run_dir_id(r->record), s->lr,
           r->o.given[SUBSAE_TRAIN_LR] ? "" : " (default)", (long long)s->batch,
           (long long)r->total);
    if (r->o.have_epochs) { /* what is trained: --epochs rounded up to whole steps */
        const int64_t from = r->new_data ? r->first_tokens : 0;
        const double epochs = (double)(r->total - from) / (double)epoch_tokens(r);
        printf(" (%.4g epoch%s)", epochs, epochs == 1.0 ? "" : "s");
    }
    printf(", seed %lld, dead window %lld tokens, %s, libsubsae %s\n", (long long)s->seed,
           (long long)s->dead_window, run_record_precision(r->t), subsae_version_string());
    printf("training mean (last epoch, or the run if shorter): MSE %.6g, explained variance "
           "%.4f, L0 %.2f, dead %.2f%% "
           "(%lld), dense %.2f%%\n",
           m[SUBSAE_METRIC_MSE], m[SUBSAE_METRIC_EXPLAINED_VARIANCE], m[SUBSAE_METRIC_L0],
           100 * m[SUBSAE_METRIC_DEAD_FRACTION], (long long)m[SUBSAE_METRIC_DEAD_FEATURES],
           100 * m[SUBSAE_METRIC_DENSE_FRACTION]);
    if (em)
        printf("eval: MSE %.6g, explained variance %.4f, L0 %.2f, never fired %.2f%%, dense "
               "%.2f%%\n",
               em[SUBSAE_METRIC_MSE], em[SUBSAE_METRIC_EXPLAINED_VARIANCE], em[SUBSAE_METRIC_L0],
               100 * em[SUBSAE_METRIC_ZERO_FREQUENCY_FRACTION],
               100 * em[SUBSAE_METRIC_DENSE_FRACTION]);
    if (cli_dist)
        cli_dist_print();
    if (r->out)
        printf("saved to %s%s\n", r->out,
               r->out == r->fallback ? " (no --out given: --out DIR names the directory)" : "");
    return fflush(stdout) == 0 ? 0 : cli_fail("cannot write to standard output");
}

/* A model whose sparsity comes from a penalty (relu, gated, jumprelu)
 * and whose features mostly fire on more than 10 % of the tokens is
 * hardly sparse: usually the coefficient (a default, or too small). */
static void warn_if_dense(const struct run *r, const struct summary *s, const double *m)
{
    const double dense = m[SUBSAE_METRIC_DENSE_FRACTION];
    if (r->o.quiet || s->penalty_option < 0 || !(dense > 0.5))
        return;
    fprintf(stderr,
            "%s train: warning: %.0f%% of the features fire on more than 10%% of the tokens "
            "(L0 %.1f of %lld): the model is hardly sparse; a larger --%s than %g%s gives a "
            "sparser one\n",
            cli_program_name, 100.0 * dense, m[SUBSAE_METRIC_L0], (long long)s->features,
            penalty_flag(s), s->penalty, r->o.given[s->penalty_option] ? "" : " (the default)");
}

/* After the last step: the final checkpoint (when the directory keeps
 * one), the evaluation, the model and its densities (without --out in a
 * directory named after the run: a finished run is never thrown away),
 * the report. */
static int finish(struct run *r)
{
    double m[SUBSAE_METRIC_COUNT], em[SUBSAE_METRIC_COUNT];
    subsae_trainer_metrics(r->t, m, SUBSAE_METRIC_COUNT);
    const int64_t steps = (int64_t)m[SUBSAE_METRIC_STEPS];
    if (train_log_step(&r->log, m, true))
        return 1;
    if (!r->out && r->root) { /* a finished run is never thrown away */
        if (run_named_dir(r))
            return 1;
        r->out = r->fallback;
    }
    /* Checkpoints asked for stay (the run can go on later); one saved only
     * against a crash goes once the model is saved. */
    const bool keeps_checkpoint = r->out && (r->o.checkpoint_every || r->had_checkpoint);
    if (keeps_checkpoint && r->last_checkpoint_step != steps) {
        if (cli_check(subsae_trainer_save_checkpoint(r->t, r->checkpoint),
                      "cannot save the final checkpoint"))
            return 1;
        r->last_checkpoint_step = steps;
    }
    const subsae_sae *sae = subsae_trainer_sae(r->t);
    struct summary s;
    summarise(r->t, &s);
    double *density = NULL;
    bool evaluated = false;
    if (r->eval && !interrupt_signal()) {
        density = malloc((size_t)s.features * sizeof *density);
        if (!density)
            return cli_fail("out of memory");
        evaluated = !cli_check(subsae_sae_evaluate_density(sae, r->eval, r->teval, em,
                                                           SUBSAE_METRIC_COUNT, density,
                                                           s.features),
                               "evaluation failed");
    }
    /* The model is saved even when the evaluation failed: its densities
     * then come from the training window. */
    int rc = r->out ? save_model(r, evaluated ? density : NULL) : 0;
    free(density);
    if (!rc && r->timed_checkpoint && !keeps_checkpoint) {
        rc = run_dir_remove_checkpoint(r->out);
        r->last_checkpoint_step = -1;
    }
    if (rc || (r->eval && !evaluated && !interrupt_signal()))
        return 1;
    rc = r->o.json ? report_json(r, &s, m, evaluated ? em : NULL)
                   : report_text(r, &s, m, evaluated ? em : NULL);
    warn_if_dense(r, &s, evaluated ? em : m);
    if (interrupt_signal()) {
        fprintf(stderr, "%s train: %s after the last step: the run is complete%s%s\n",
                cli_program_name, interrupt_name(interrupt_signal()),
                r->out ? " and saved in " : "", r->out ? r->out : "");
        return interrupt_exit_code(interrupt_signal());
    }
    return rc;
}

/* ---- the command ------------------------------------------------------------ */

/* Everything before the first unit of work: the output directory, the
 * data and its checks, the resumed run. 0, or 1 with a message. */
static int prepare(struct run *r)
{
    if (choose_out(r) || claim_out(r) || open_inputs(r))
        return 1;
    if (r->resumed && check_model_fits(r))
        return 1;
    if (r->root && r->o.log && train_log_open(&r->log, r->o.log, r->o.log_every))
        return 1;
    if (scan_data(r) || make_trainer(r))
        return 1;
    double m[SUBSAE_METRIC_COUNT];
    if (r->resumed && subsae_trainer_metrics(r->t, m, SUBSAE_METRIC_COUNT) == SUBSAE_OK) {
        r->first_tokens = (int64_t)m[SUBSAE_METRIC_TOKENS];
        r->first_steps = (int64_t)m[SUBSAE_METRIC_STEPS];
    }
    if (build_record(r) || record_length(r))
        return 1;
    /* Everything is checked: now the other run's files may go. */
    return r->clear_out && run_dir_clear(r->out);
}

static int train(struct run *r)
{
    const int64_t todo = r->total > r->first_tokens ? r->total - r->first_tokens : 0;
    if (r->resumed && todo == 0 && !r->o.quiet)
        fprintf(stderr, "%s train: the run has trained %lld of its %lld tokens: nothing to "
                        "train (give a larger --epochs or --tokens to go on)\n",
                cli_program_name, (long long)r->first_tokens, (long long)r->total);
    char label[64];
    snprintf(label, sizeof label, "%s train", cli_program_name);
    sae_cli_progress_start(&r->shown, r->t, label, r->total, r->first_tokens, r->o.quiet);
    train_log_start(&r->log, r->first_tokens, run_dir_id(r->record));
    r->last_checkpoint_step = -1;
    char manifest[4400];
    snprintf(manifest, sizeof manifest, "%s/checkpoint.json", r->checkpoint);
    r->had_checkpoint = r->checkpoint[0] && is_file(manifest);
    const double started = sae_cli_now();
    r->last_save = started;
    int rc = subsae_trainer_fit(r->t, r->part, r->tpart, todo);
    r->fit_seconds = sae_cli_now() - started;
    sae_cli_progress_finish(&r->shown, rc == SUBSAE_OK);
    if (rc == SUBSAE_OK)
        return r->root ? finish(r) : 0;
    const int signal = interrupt_signal();
    if (rc == SUBSAE_E_CANCELLED && signal) {
        char why[64];
        snprintf(why, sizeof why, "interrupted by %s", interrupt_name(signal));
        return save_stopped_run(r, why, interrupt_exit_code(signal));
    }
    if (r->checkpoint_failed || r->log_failed)
        return 1; /* said why */
    if (subsae_last_error_reason() == SUBSAE_REASON_PEER_FAILED)
        return 1; /* the failing worker says why */
    char why[2048];
    const bool nonfinite = subsae_last_error_reason() == SUBSAE_REASON_NONFINITE_INPUT;
    snprintf(why, sizeof why, "training failed: %s (%s)%s", subsae_last_error(),
             subsae_status_string(rc), nonfinite ? "; --skip-nonfinite leaves such rows out" : "");
    return save_stopped_run(r, why, 1);
}

static void release(struct run *r)
{
    train_log_close(&r->log);
    subsae_trainer_free(r->t);
    if (r->part != r->train)
        subsae_buffer_free(r->part);
    if (r->tpart != r->ttrain)
        subsae_buffer_free(r->tpart);
    if (r->ttrain != r->tall)
        subsae_buffer_free(r->ttrain);
    if (r->train != r->all)
        subsae_buffer_free(r->train);
    subsae_buffer_free(r->teval);
    subsae_buffer_free(r->tall);
    subsae_buffer_free(r->eval);
    subsae_buffer_free(r->all);
    free_paths(r->tpaths, r->o.n_targets);
    free_paths(r->paths, r->o.n_inputs);
    json_decref(r->resumed);
    json_decref(r->record);
    train_options_free(&r->o);
    run_dir_release(r->locked, r->lock, r->created);
}

CLI_COMMAND(train, "INPUT... [--target FILE...] --features M --k K [--activation NAME] "
                   "[--epochs E | --tokens N] [--eval FILE | --eval-fraction F] [--out DIR] "
                   "[--checkpoint-every STEPS] [--resume DIR] [--log FILE.jsonl] [--json] "
                   "[more: --help]")
{
    struct run r = {.argc = argc, .argv = argv, .lock = -1};
    int status = train_options_parse(argc, argv, &r.o);
    if (status) {
        release(&r);
        return status;
    }
    interrupt_install();
    cli_nonfinite_hint = "--skip-nonfinite leaves such rows out";
    r.root = cli_dist_root();
    r.sharded = cli_dist_sharded(r.o.inputs, r.o.n_inputs);
    if (!r.root)
        r.o.quiet = true; /* worker 0 reports */
    if (r.o.threads)
        subsae_set_num_threads((int)r.o.threads);
    status = prepare(&r);
    /* Every worker is ready (one process: nothing to agree on); with
     * per-worker files the data set is their union. */
    double all_rows = (double)r.rows;
    if (cli_dist_ready(status, &all_rows)) {
        release(&r);
        return 1;
    }
    if (r.sharded) { /* the length counts the rows of every worker */
        r.rows = (int64_t)all_rows;
        if (record_length(&r)) {
            release(&r);
            return 1;
        }
    }
    if (interrupt_signal()) {
        fprintf(stderr, "%s train: interrupted by %s before training; nothing to save\n",
                cli_program_name, interrupt_name(interrupt_signal()));
        status = interrupt_exit_code(interrupt_signal());
        release(&r);
        return status;
    }
    const double started = sae_cli_now();
    const int rc = r.resumed ? SUBSAE_OK : subsae_trainer_init(r.t, r.part, r.tpart);
    if (rc != SUBSAE_OK) {
        if (interrupt_signal()) {
            fprintf(stderr, "%s train: interrupted by %s during the initialisation; nothing "
                            "trained yet\n",
                    cli_program_name, interrupt_name(interrupt_signal()));
            status = interrupt_exit_code(interrupt_signal());
        } else {
            status = cli_check(rc, "initialisation failed");
        }
        release(&r);
        return status;
    }
    r.init_seconds = sae_cli_now() - started;
    status = train(&r);
    release(&r);
    return status;
}

CLI_HELP(train)
{
    train_options_help(out);
}
