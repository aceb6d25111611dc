/* `subsae train INPUT... [--target FILE...]`: train an SAE or a
 * transcoder (TopK, BatchTopK, JumpReLU or ReLU; optional AuxK revival
 * loss) with active-subspace (or random) initialisation, report training
 * and evaluation metrics, save the model (SAELens layout) and optional
 * checkpoints. Progress on stderr.
 * Under `subsae-mpi` every worker runs this with its part of the rows
 * (dist.h); worker 0 prints, evaluates and writes. */
#include "dist.h"
#include "sae_cli.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct options {
    char **inputs, **targets;
    int n_inputs, n_targets;
    const char *tensor, *eval_file, *eval_target, *out, *resume;
    int activation;
    double auxk, l1, l0;
    bool have_activation, have_auxk, have_l1, have_l0;
    int64_t features, k, subspace_dim, batch, warmup, seed, dead_window, checkpoint_every;
    int64_t threads, tokens;
    double lr, epochs, eval_fraction;
    int init, decoder_norm, coefficients;
    bool have_features, have_k, have_init, have_subspace, have_lr, have_batch, have_warmup,
        have_seed, have_dead_window, have_decoder_norm, have_coefficients;
    bool have_epochs, have_tokens, no_scale_search, sparse_adam, json, quiet;
};

static int parse(int argc, char **argv, struct options *o)
{
    o->inputs = calloc((size_t)argc, sizeof *o->inputs);
    o->targets = calloc((size_t)argc, sizeof *o->targets);
    if (!o->inputs || !o->targets)
        return cli_fail("out of memory");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define VALUE()                                                       \
    do {                                                              \
        if (!v)                                                       \
            return cli_fail("%s needs a value", a);                   \
        i++;                                                          \
    } while (0)
        if (!strcmp(a, "--json")) {
            o->json = true;
        } else if (!strcmp(a, "--quiet")) {
            o->quiet = true;
        } else if (!strcmp(a, "--no-scale-search")) {
            o->no_scale_search = true;
        } else if (!strcmp(a, "--sparse-adam")) {
            o->sparse_adam = true;
        } else if (!strcmp(a, "--tensor")) {
            VALUE();
            o->tensor = v;
        } else if (!strcmp(a, "--target")) {
            /* --target FILE...: the files up to the next option. */
            VALUE();
            int before = o->n_targets;
            while (i < argc && strncmp(argv[i], "--", 2) != 0)
                o->targets[o->n_targets++] = argv[i++];
            i--;
            if (o->n_targets == before)
                return cli_fail("--target needs one or more files");
        } else if (!strcmp(a, "--eval-target")) {
            VALUE();
            o->eval_target = v;
        } else if (!strcmp(a, "--activation")) {
            VALUE();
            static const char *names[4] = {"topk", "batchtopk", "jumprelu", "relu"};
            static const int codes[4] = {SUBSAE_ACT_TOPK, SUBSAE_ACT_BATCHTOPK,
                                         SUBSAE_ACT_JUMPRELU, SUBSAE_ACT_RELU};
            o->activation = -1;
            for (int n = 0; n < 4; n++)
                if (!strcmp(v, names[n]))
                    o->activation = codes[n];
            if (o->activation < 0)
                return cli_fail("--activation: '%s' is none of topk, batchtopk, jumprelu, relu",
                                v);
            o->have_activation = true;
        } else if (!strcmp(a, "--auxk")) {
            VALUE();
            if (!cli_parse_double(a, v, 0.0, 1e6, &o->auxk))
                return 2;
            o->have_auxk = true;
        } else if (!strcmp(a, "--l1")) {
            VALUE();
            if (!cli_parse_double(a, v, 0.0, 1e6, &o->l1))
                return 2;
            o->have_l1 = true;
        } else if (!strcmp(a, "--l0")) {
            VALUE();
            if (!cli_parse_double(a, v, 0.0, 1e6, &o->l0))
                return 2;
            o->have_l0 = true;
        } else if (!strcmp(a, "--features")) {
            VALUE();
            if (!cli_parse_int64(a, v, 1, INT32_MAX, &o->features))
                return 2;
            o->have_features = true;
        } else if (!strcmp(a, "--k")) {
            VALUE();
            if (!cli_parse_int64(a, v, 1, INT32_MAX, &o->k))
                return 2;
            o->have_k = true;
        } else if (!strcmp(a, "--init")) {
            VALUE();
            if (!strcmp(v, "active-subspace"))
                o->init = SUBSAE_INIT_ACTIVE_SUBSPACE;
            else if (!strcmp(v, "random"))
                o->init = SUBSAE_INIT_RANDOM;
            else
                return cli_fail("--init: '%s' is neither active-subspace nor random", v);
            o->have_init = true;
        } else if (!strcmp(a, "--subspace-dim")) {
            VALUE();
            if (!strcmp(v, "auto"))
                o->subspace_dim = 0;
            else if (!cli_parse_int64(a, v, 1, INT32_MAX, &o->subspace_dim))
                return 2;
            o->have_subspace = true;
        } else if (!strcmp(a, "--lr")) {
            VALUE();
            if (!cli_parse_double(a, v, 1e-12, 1e6, &o->lr))
                return 2;
            o->have_lr = true;
        } else if (!strcmp(a, "--batch")) {
            VALUE();
            if (!cli_parse_int64(a, v, 1, (int64_t)1 << 24, &o->batch))
                return 2;
            o->have_batch = true;
        } else if (!strcmp(a, "--epochs")) {
            VALUE();
            if (!cli_parse_double(a, v, 1e-9, 1e9, &o->epochs))
                return 2;
            o->have_epochs = true;
        } else if (!strcmp(a, "--tokens")) {
            VALUE();
            if (!cli_parse_int64(a, v, 1, INT64_MAX, &o->tokens))
                return 2;
            o->have_tokens = true;
        } else if (!strcmp(a, "--warmup-steps")) {
            VALUE();
            if (!cli_parse_int64(a, v, 0, INT64_MAX, &o->warmup))
                return 2;
            o->have_warmup = true;
        } else if (!strcmp(a, "--seed")) {
            VALUE();
            if (!cli_parse_int64(a, v, 0, INT64_MAX, &o->seed))
                return 2;
            o->have_seed = true;
        } else if (!strcmp(a, "--dead-window")) {
            VALUE();
            if (!cli_parse_int64(a, v, 1, INT64_MAX, &o->dead_window))
                return 2;
            o->have_dead_window = true;
        } else if (!strcmp(a, "--eval")) {
            VALUE();
            o->eval_file = v;
        } else if (!strcmp(a, "--eval-fraction")) {
            VALUE();
            if (!cli_parse_double(a, v, 1e-9, 0.999999, &o->eval_fraction))
                return 2;
        } else if (!strcmp(a, "--out")) {
            VALUE();
            o->out = v;
        } else if (!strcmp(a, "--checkpoint-every")) {
            VALUE();
            if (!cli_parse_int64(a, v, 1, INT64_MAX, &o->checkpoint_every))
                return 2;
        } else if (!strcmp(a, "--resume")) {
            VALUE();
            o->resume = v;
        } else if (!strcmp(a, "--threads")) {
            VALUE();
            if (!cli_parse_int64(a, v, 1, 4096, &o->threads))
                return 2;
        } else if (!strcmp(a, "--decoder-norm")) {
            VALUE();
            if (!strcmp(v, "free"))
                o->decoder_norm = SUBSAE_DECODER_FREE;
            else if (!strcmp(v, "unit"))
                o->decoder_norm = SUBSAE_DECODER_UNIT;
            else
                return cli_fail("--decoder-norm: '%s' is neither free nor unit", v);
            o->have_decoder_norm = true;
        } else if (!strcmp(a, "--subspace-coefficients")) {
            VALUE();
            if (!strcmp(v, "uniform"))
                o->coefficients = SUBSAE_COEF_UNIFORM;
            else if (!strcmp(v, "gaussian"))
                o->coefficients = SUBSAE_COEF_GAUSSIAN;
            else
                return cli_fail("--subspace-coefficients: '%s' is neither uniform nor gaussian",
                                v);
            o->have_coefficients = true;
        } else if (a[0] == '-' && a[1] == '-') {
            cli_fail("unknown option %s (see subsae --help)", a);
            return 2;
        } else {
            o->inputs[o->n_inputs++] = argv[i];
        }
#undef VALUE
    }
    if (o->n_inputs == 0)
        return cli_usage();
    const bool needs_k = !o->have_activation || o->activation == SUBSAE_ACT_TOPK ||
                         o->activation == SUBSAE_ACT_BATCHTOPK;
    if (!o->resume && (!o->have_features || (needs_k && !o->have_k)))
        return cli_fail("--features and --k are required (unless --resume; --k is optional "
                        "for jumprelu and relu, where it sets the initial L0)");
    if (o->n_targets > 0 && o->n_targets != o->n_inputs)
        return cli_fail("%d inputs but %d targets: give one target file per input file",
                        o->n_inputs, o->n_targets);
    if (o->eval_target && (!o->eval_file || o->n_targets == 0))
        return cli_fail("--eval-target goes with --eval and --target");
    if (o->eval_file && o->n_targets > 0 && !o->eval_target)
        return cli_fail("a transcoder evaluated on --eval FILE needs --eval-target FILE");
    if (o->have_epochs && o->have_tokens)
        return cli_fail("give --epochs or --tokens, not both");
    if (o->eval_file && o->eval_fraction > 0)
        return cli_fail("give --eval or --eval-fraction, not both");
    if (o->checkpoint_every && !o->out)
        return cli_fail("--checkpoint-every needs --out (checkpoints go to OUT/checkpoint)");
    if (o->resume && (o->have_features || o->have_k || o->have_init || o->have_subspace ||
                      o->have_seed || o->have_decoder_norm || o->no_scale_search ||
                      o->have_coefficients || o->have_activation))
        return cli_fail("--resume continues a run with its own model options; do not give "
                        "--features, --k, --activation, --init, --subspace-dim, --seed, "
                        "--decoder-norm, --subspace-coefficients or --no-scale-search");
    return 0;
}

struct progress {
    const struct options *o;
    const subsae_trainer *t;
    struct sae_cli_progress shown; /* started before the fit */
    char checkpoint[4096];
    int64_t last_checkpoint_step;
    int failed;
};

static int on_progress(int event, const char *phase, int64_t done, int64_t total,
                       const char *message, void *user)
{
    (void)total;
    struct progress *p = user;
    if (event == SUBSAE_EVENT_LOG) {
        if (!p->o->quiet) {
            cli_progress_stop(&p->shown.bar); /* the line below a drawn bar */
            fprintf(stderr, "%s train: %s: %s\n", cli_program_name, phase, message);
        }
        return 0;
    }
    double m[SUBSAE_METRIC_COUNT];
    if (subsae_trainer_metrics(p->t, m, SUBSAE_METRIC_COUNT) != SUBSAE_OK)
        return 0;
    int64_t step = (int64_t)m[SUBSAE_METRIC_STEPS];
    if (p->o->checkpoint_every && step % p->o->checkpoint_every == 0 && cli_dist_root()) {
        int saved = subsae_trainer_save_checkpoint(p->t, p->checkpoint);
        if (saved != SUBSAE_OK)
            cli_progress_stop(&p->shown.bar); /* the message on a line of its own */
        if (cli_check(saved, "cannot save a checkpoint")) {
            p->failed = 1;
            return 1; /* stop cleanly */
        }
        p->last_checkpoint_step = step;
    }
    sae_cli_progress_show(&p->shown, phase, done, m);
    return 0;
}

static int set_options(subsae_trainer *t, const struct options *o)
{
    int rc = SUBSAE_OK;
#define SET_INT(flag, option, value) \
    if (!rc && (flag))               \
    rc = subsae_trainer_set_int(t, option, value)
    SET_INT(o->have_features, SUBSAE_TRAIN_FEATURES, o->features);
    SET_INT(o->have_k, SUBSAE_TRAIN_K, o->k);
    SET_INT(o->have_activation, SUBSAE_TRAIN_ACTIVATION, o->activation);
    SET_INT(o->have_init, SUBSAE_TRAIN_INIT, o->init);
    SET_INT(o->have_subspace, SUBSAE_TRAIN_SUBSPACE_DIM, o->subspace_dim);
    SET_INT(o->have_batch, SUBSAE_TRAIN_BATCH, o->batch);
    SET_INT(o->have_warmup, SUBSAE_TRAIN_WARMUP_STEPS, o->warmup);
    SET_INT(o->have_seed, SUBSAE_TRAIN_SEED, o->seed);
    SET_INT(o->have_dead_window, SUBSAE_TRAIN_DEAD_WINDOW, o->dead_window);
    SET_INT(o->have_decoder_norm, SUBSAE_TRAIN_DECODER_NORM, o->decoder_norm);
    SET_INT(o->have_coefficients, SUBSAE_TRAIN_SUBSPACE_COEFFICIENTS, o->coefficients);
    SET_INT(o->no_scale_search, SUBSAE_TRAIN_SCALE_SEARCH, 0);
    SET_INT(o->sparse_adam, SUBSAE_TRAIN_SPARSE_ADAM, 1);
#undef SET_INT
    if (!rc && o->have_lr)
        rc = subsae_trainer_set_double(t, SUBSAE_TRAIN_LR, o->lr);
    if (!rc && o->have_auxk)
        rc = subsae_trainer_set_double(t, SUBSAE_TRAIN_AUXK_COEF, o->auxk);
    if (!rc && o->have_l1)
        rc = subsae_trainer_set_double(t, SUBSAE_TRAIN_L1_COEF, o->l1);
    if (!rc && o->have_l0)
        rc = subsae_trainer_set_double(t, SUBSAE_TRAIN_L0_COEF, o->l0);
    return cli_check(rc, "bad option");
}

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

CLI_COMMAND(train, "INPUT... [--target FILE...] [--tensor NAME] --features M --k K "
                   "[--activation topk|batchtopk|jumprelu|relu] [--auxk COEF] [--l1 COEF] "
                   "[--l0 COEF] [--init active-subspace|random] [--subspace-dim auto|R] [--lr X] "
                   "[--batch B] [--epochs E | --tokens N] [--warmup-steps W] [--seed S] "
                   "[--dead-window T] [--eval FILE [--eval-target FILE] | --eval-fraction F] "
                   "[--out DIR] "
                   "[--checkpoint-every STEPS] [--resume DIR] [--threads T] "
                   "[--decoder-norm free|unit] [--subspace-coefficients uniform|gaussian] "
                   "[--no-scale-search] [--sparse-adam] [--quiet] [--json]")
{
    struct options o = {0};
    int status = parse(argc, argv, &o);
    subsae_buffer *all = NULL, *train = NULL, *part = NULL, *eval = NULL;
    subsae_buffer *tall = NULL, *ttrain = NULL, *tpart = NULL, *teval = NULL;
    subsae_trainer *t = NULL;
    struct progress progress = {.o = &o};
    char **paths = NULL, **tpaths = NULL;
    const bool root = cli_dist_root();
    const bool sharded = cli_dist_sharded(o.inputs, o.n_inputs);
    if (status)
        goto done;
    if (o.n_targets > 0 && cli_dist_sharded(o.targets, o.n_targets) != sharded) {
        status = cli_fail("the inputs and the targets must both name per-worker files "
                          "({rank}) or neither");
        goto done;
    }
    status = 1;
    if (sharded && o.eval_fraction > 0) {
        cli_fail("--eval-fraction holds out the last rows of one data set; with per-worker "
                 "files ({rank}) give --eval FILE");
        goto done;
    }
    if (!root)
        o.quiet = true; /* worker 0 reports */
    if (o.threads)
        subsae_set_num_threads((int)o.threads);
    if (o.out) {
        snprintf(progress.checkpoint, sizeof progress.checkpoint, "%s/checkpoint", o.out);
        /* Create OUT now: a bad path fails before hours of training. */
        if (root && mkdir(o.out, 0777) != 0 && errno != EEXIST) {
            cli_fail("%s: cannot create the output directory: %s", o.out, strerror(errno));
            goto preflight_failed;
        }
    }

    /* Data: the inputs (this worker's files when they name {rank}), split
     * when holding out a fraction; then this worker's part. */
    paths = calloc((size_t)(o.n_inputs > 0 ? o.n_inputs : 1), sizeof *paths);
    for (int i = 0; paths && i < o.n_inputs; i++)
        if (!(paths[i] = cli_dist_path(o.inputs[i])))
            break;
    if (!paths || !paths[o.n_inputs - 1]) {
        cli_fail("out of memory");
        goto preflight_failed;
    }
    all = sae_cli_open(paths, o.n_inputs, o.tensor);
    if (!all)
        goto preflight_failed;
    int64_t rows = subsae_buffer_rows(all);
    train = all;
    if (o.n_targets > 0) {
        tpaths = calloc((size_t)o.n_targets, sizeof *tpaths);
        for (int i = 0; tpaths && i < o.n_targets; i++)
            if (!(tpaths[i] = cli_dist_path(o.targets[i])))
                break;
        if (!tpaths || !tpaths[o.n_targets - 1]) {
            cli_fail("out of memory");
            goto preflight_failed;
        }
        tall = sae_cli_open(tpaths, o.n_targets, o.tensor);
        if (!tall)
            goto preflight_failed;
        if (subsae_buffer_rows(tall) != rows) {
            cli_fail("the inputs have %lld rows but the targets %lld", (long long)rows,
                     (long long)subsae_buffer_rows(tall));
            goto preflight_failed;
        }
        ttrain = tall;
    }
    if (o.eval_fraction > 0) {
        int64_t n_eval = (int64_t)floor(o.eval_fraction * (double)rows + 0.5);
        if (n_eval < 1 || rows - n_eval < 2) {
            cli_fail("--eval-fraction %g of %lld rows leaves nothing to train or evaluate on",
                     o.eval_fraction, (long long)rows);
            goto preflight_failed;
        }
        if (cli_check(subsae_buffer_view(all, 0, rows - n_eval, &train), "cannot split") ||
            cli_check(subsae_buffer_view(all, rows - n_eval, n_eval, &eval), "cannot split"))
            goto preflight_failed;
        if (tall && (cli_check(subsae_buffer_view(tall, 0, rows - n_eval, &ttrain),
                               "cannot split") ||
                     cli_check(subsae_buffer_view(tall, rows - n_eval, n_eval, &teval),
                               "cannot split")))
            goto preflight_failed;
        rows -= n_eval;
    } else if (o.eval_file && root) {
        if (cli_check(subsae_buffer_open(o.eval_file, o.tensor, &eval),
                      "cannot open the evaluation file"))
            goto preflight_failed;
        if (o.eval_target && cli_check(subsae_buffer_open(o.eval_target, o.tensor, &teval),
                                       "cannot open the evaluation target"))
            goto preflight_failed;
    }
    if (cli_check(cli_dist_part(train, sharded, &part), "cannot split the rows between workers"))
        goto preflight_failed;
    if (ttrain && cli_check(cli_dist_part(ttrain, sharded, &tpart),
                            "cannot split the target rows between workers"))
        goto preflight_failed;

    /* The trainer: a new run, or one resumed from its checkpoint. */
    double started = sae_cli_now();
    if (o.resume) {
        char manifest[4200];
        snprintf(manifest, sizeof manifest, "%s/checkpoint.json", o.resume);
        FILE *probe = fopen(manifest, "r");
        char dir[4200];
        if (probe) {
            fclose(probe);
            snprintf(dir, sizeof dir, "%s", o.resume);
        } else {
            snprintf(dir, sizeof dir, "%s/checkpoint", o.resume); /* an --out directory */
        }
        if (cli_check(subsae_trainer_load_checkpoint(dir, &t), "cannot resume"))
            goto preflight_failed;
        if (set_options(t, &o))
            goto preflight_failed;
    } else {
        if (cli_check(subsae_trainer_create(&t), "cannot create the trainer") ||
            set_options(t, &o))
            goto preflight_failed;
    }
    progress.t = t;
    if (cli_check(subsae_trainer_set_callback(t, on_progress, &progress), "callback") ||
        cli_check(cli_dist_trainer(t), "cannot attach the workers"))
        goto preflight_failed;
    /* Every worker is ready (one process: nothing to agree on); with
     * per-worker files the data set is their union. */
    double all_rows = (double)rows;
    if (cli_dist_ready(0, &all_rows))
        goto done;
    if (sharded)
        rows = (int64_t)all_rows;
    if (!o.resume && cli_check(subsae_trainer_init(t, part, tpart), "initialisation failed"))
        goto done;
    double init_seconds = sae_cli_now() - started;

    /* Run length: the run's total, so that a resumed run finishes it. */
    int64_t batch, done_tokens;
    subsae_trainer_get_int(t, SUBSAE_TRAIN_BATCH, &batch);
    double m[SUBSAE_METRIC_COUNT];
    subsae_trainer_metrics(t, m, SUBSAE_METRIC_COUNT);
    done_tokens = (int64_t)m[SUBSAE_METRIC_TOKENS];
    int64_t epoch_tokens = rows >= batch ? rows - rows % batch : rows;
    int64_t total = o.have_tokens ? o.tokens
                                  : (int64_t)llround((o.have_epochs ? o.epochs : 1.0) *
                                                     (double)epoch_tokens);
    int64_t todo = total > done_tokens ? total - done_tokens : 0;
    char label[64];
    snprintf(label, sizeof label, "%s train", cli_program_name);
    sae_cli_progress_start(&progress.shown, t, label, total, done_tokens, o.quiet);
    progress.last_checkpoint_step = -1;
    double fit_started = sae_cli_now();
    int rc = subsae_trainer_fit(t, part, tpart, todo);
    double seconds = sae_cli_now() - fit_started;
    sae_cli_progress_finish(&progress.shown, rc == SUBSAE_OK);
    if (progress.failed || cli_check(rc, "training failed"))
        goto done;
    if (!root) { /* worker 0 evaluates, writes and prints */
        status = 0;
        goto done;
    }
    subsae_trainer_metrics(t, m, SUBSAE_METRIC_COUNT);
    if (o.checkpoint_every && progress.last_checkpoint_step != (int64_t)m[SUBSAE_METRIC_STEPS] &&
        cli_check(subsae_trainer_save_checkpoint(t, progress.checkpoint),
                  "cannot save the final checkpoint"))
        goto done;

    const subsae_sae *sae = subsae_trainer_sae(t);
    double em[SUBSAE_METRIC_COUNT];
    if (eval && cli_check(subsae_sae_evaluate(sae, eval, teval, em, SUBSAE_METRIC_COUNT),
                          "evaluation failed"))
        goto done;
    if (o.out && cli_check(subsae_sae_save(sae, o.out), "cannot save the model"))
        goto done;

    int64_t features, k, init, subspace_dim, activation;
    double auxk, penalty = NAN;
    subsae_trainer_get_int(t, SUBSAE_TRAIN_FEATURES, &features);
    subsae_trainer_get_int(t, SUBSAE_TRAIN_K, &k);
    subsae_trainer_get_int(t, SUBSAE_TRAIN_ACTIVATION, &activation);
    subsae_trainer_get_double(t, SUBSAE_TRAIN_AUXK_COEF, &auxk);
    if (activation == SUBSAE_ACT_RELU)
        subsae_trainer_get_double(t, SUBSAE_TRAIN_L1_COEF, &penalty);
    else if (activation == SUBSAE_ACT_JUMPRELU)
        subsae_trainer_get_double(t, SUBSAE_TRAIN_L0_COEF, &penalty);
    int64_t d_in, d_out;
    subsae_sae_get_int(sae, SUBSAE_SAE_D_IN, &d_in);
    subsae_sae_get_int(sae, SUBSAE_SAE_D_OUT, &d_out);
    subsae_trainer_get_int(t, SUBSAE_TRAIN_INIT, &init);
    subsae_trainer_get_int(t, SUBSAE_TRAIN_SUBSPACE_DIM, &subspace_dim);
    const int64_t trained = (int64_t)m[SUBSAE_METRIC_TOKENS] - done_tokens;
    const double rate = seconds > 0 ? (double)trained / seconds : 0.0;
    const char *init_name = init == SUBSAE_INIT_RANDOM ? "random" : "active-subspace";
    if (o.json) {
        json_t *report = json_pack(
            "{s:I, s:I, s:s, s:b, s:I, s:I, s:o, s:o, s:o, s:o, s:s, s:o, s:I, s:I, s:f, s:f, "
            "s:f, s:o, s:o}",
            "features", (json_int_t)features, "k", (json_int_t)k, "activation",
            subsae_activation_name((int)activation), "transcoder", tall != NULL, "d_in",
            (json_int_t)d_in, "d_out", (json_int_t)d_out, "auxk", sae_cli_number(auxk),
            "l1", sae_cli_number(activation == SUBSAE_ACT_RELU ? penalty : NAN), "l0",
            sae_cli_number(activation == SUBSAE_ACT_JUMPRELU ? penalty : NAN), "mean_threshold",
            threshold_json(sae, activation), "init", init_name, "subspace_dim",
            init == SUBSAE_INIT_RANDOM ? json_null() : json_integer(subspace_dim), "tokens",
            (json_int_t)m[SUBSAE_METRIC_TOKENS], "steps", (json_int_t)m[SUBSAE_METRIC_STEPS],
            "seconds", seconds, "tokens_per_second", rate, "init_seconds", init_seconds, "final",
            sae_cli_final_json(m), "eval", eval ? sae_cli_eval_json(em) : json_null());
        if (report && cli_dist)
            json_object_update_new(report, cli_dist_json());
        status = cli_print_json(report);
        goto done;
    }
    printf("trained %s %s of %lld features", subsae_activation_name((int)activation),
           tall ? "transcoder" : "SAE", (long long)features);
    if (activation == SUBSAE_ACT_TOPK || activation == SUBSAE_ACT_BATCHTOPK)
        printf(", k %lld", (long long)k);
    if (isfinite(penalty))
        printf(", %s %g", activation == SUBSAE_ACT_RELU ? "l1" : "l0", penalty);
    if (auxk > 0)
        printf(", auxk %g", auxk);
    printf(", %s init", init_name);
    if (init != SUBSAE_INIT_RANDOM)
        printf(" (subspace dim %lld)", (long long)subspace_dim);
    printf(": %lld tokens, %lld steps in %.1f s (%.0f tokens/s)\n",
           (long long)m[SUBSAE_METRIC_TOKENS], (long long)m[SUBSAE_METRIC_STEPS], seconds, rate);
    printf("final (last epoch): MSE %.6g, explained variance %.4f, L0 %.2f, dead %.2f%% "
           "(%lld), dense %.2f%%\n",
           m[SUBSAE_METRIC_MSE], m[SUBSAE_METRIC_EXPLAINED_VARIANCE], m[SUBSAE_METRIC_L0],
           100 * m[SUBSAE_METRIC_DEAD_FRACTION], (long long)m[SUBSAE_METRIC_DEAD_FEATURES],
           100 * m[SUBSAE_METRIC_DENSE_FRACTION]);
    if (eval)
        printf("eval: MSE %.6g, explained variance %.4f, L0 %.2f, never fired %.2f%%, dense "
               "%.2f%%\n",
               em[SUBSAE_METRIC_MSE], em[SUBSAE_METRIC_EXPLAINED_VARIANCE], em[SUBSAE_METRIC_L0],
               100 * em[SUBSAE_METRIC_ZERO_FREQUENCY_FRACTION],
               100 * em[SUBSAE_METRIC_DENSE_FRACTION]);
    if (cli_dist)
        cli_dist_print();
    if (o.out)
        printf("saved to %s\n", o.out);
    status = fflush(stdout) == 0 ? 0 : cli_fail("cannot write to standard output");
    goto done;
preflight_failed:
    /* Tell the other workers this one cannot go on (they exit too). */
    cli_dist_ready(1, &(double){0.0});
    status = 1;
done:
    subsae_trainer_free(t);
    if (part != train)
        subsae_buffer_free(part);
    if (tpart != ttrain)
        subsae_buffer_free(tpart);
    if (ttrain != tall)
        subsae_buffer_free(ttrain);
    subsae_buffer_free(teval);
    subsae_buffer_free(tall);
    for (int i = 0; tpaths && i < o.n_targets; i++)
        free(tpaths[i]);
    free(tpaths);
    free(o.targets);
    if (train != all)
        subsae_buffer_free(train);
    subsae_buffer_free(eval);
    subsae_buffer_free(all);
    for (int i = 0; paths && i < o.n_inputs; i++)
        free(paths[i]);
    free(paths);
    free(o.inputs);
    return status;
}
