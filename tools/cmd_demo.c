/* `subsae demo`: the main job on built-in data. Synthesises activations made
 * of a known sparse dictionary confined to a subspace, shows their spectrum
 * and effective rank, trains the same SAE with random and with
 * active-subspace initialisation, and compares dead features, explained
 * variance, L0 and recovery of the true dictionary. */
#include "sae_cli.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct demo_options {
    int64_t dim, subspace, atoms, k, tokens, features, epochs, seed;
    double lr;
    bool json, quiet;
};

static int parse_demo(int argc, char **argv, struct demo_options *o)
{
    *o = (struct demo_options){.dim = 64, .subspace = 32, .atoms = 256, .k = 4,
                               .tokens = 131072, .features = 1024, .epochs = 8, .seed = 1,
                               .lr = 2e-3};
    const struct cli_int_option ints[] = {
        {"--dim", &o->dim, 2, INT32_MAX},           {"--subspace", &o->subspace, 1, INT32_MAX},
        {"--atoms", &o->atoms, 1, INT32_MAX},       {"--k", &o->k, 1, INT32_MAX},
        {"--tokens", &o->tokens, 64, INT32_MAX},    {"--features", &o->features, 1, INT32_MAX},
        {"--epochs", &o->epochs, 1, INT32_MAX},     {"--seed", &o->seed, 0, INT64_MAX}};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int matched = cli_match_int(ints, sizeof ints / sizeof ints[0], argc, argv, &i);
        if (matched < 0)
            return 2;
        if (matched)
            continue;
        if (!strcmp(a, "--lr") && v) {
            if (!cli_parse_double(a, v, 1e-9, 1.0, &o->lr))
                return 2;
            i++;
        } else if (!strcmp(a, "--json")) {
            o->json = true;
        } else if (!strcmp(a, "--quiet")) {
            o->quiet = true;
        } else {
            return cli_usage();
        }
    }
    if (o->subspace > o->dim || o->k > o->atoms || o->k > o->features)
        return cli_fail("need --subspace <= --dim and --k <= --atoms, --features");
    return 0;
}

/* ---- the spectrum --------------------------------------------------- */

struct spectrum {
    int64_t r90, r95, r99;
    double entropy_rank;
    double *cumulative; /* dim values */
};

static int measure_spectrum(const subsae_buffer *train, int64_t dim, struct spectrum *s)
{
    subsae_subspace *est = NULL;
    double *ratios = malloc((size_t)dim * sizeof *ratios);
    s->cumulative = malloc((size_t)dim * sizeof *s->cumulative);
    if (!ratios || !s->cumulative) {
        free(ratios);
        return cli_fail("out of memory");
    }
    int rc = subsae_subspace_create(&est);
    if (!rc)
        rc = subsae_subspace_set_int(est, SUBSAE_SUBSPACE_METHOD, SUBSAE_METHOD_EXACT);
    if (!rc)
        rc = subsae_subspace_fit(est, train);
    if (!rc)
        rc = subsae_subspace_explained_ratios(est, ratios, dim);
    if (!rc)
        rc = subsae_subspace_effective_rank(est, 0.90, &s->r90, NULL);
    if (!rc)
        rc = subsae_subspace_effective_rank(est, 0.95, &s->r95, NULL);
    if (!rc)
        rc = subsae_subspace_effective_rank(est, 0.99, &s->r99, NULL);
    if (!rc)
        rc = subsae_subspace_entropy_rank(est, &s->entropy_rank, NULL);
    double sum = 0.0;
    for (int64_t i = 0; !rc && i < dim; i++)
        s->cumulative[i] = sum += ratios[i];
    subsae_subspace_free(est);
    free(ratios);
    return cli_check(rc, "spectrum");
}

static void print_spectrum(const struct spectrum *s, int64_t dim)
{
    enum { WIDTH = 40 };
    fprintf(stderr, "\nSpectrum: cumulative explained variance of the top r principal directions\n");
    int64_t step = dim >= 16 ? dim / 16 : 1;
    for (int64_t r = step; r <= dim; r += step) {
        char bar[WIDTH + 1];
        int filled = (int)(s->cumulative[r - 1] * WIDTH + 0.5);
        for (int i = 0; i < WIDTH; i++)
            bar[i] = i < filled ? '#' : '.';
        bar[WIDTH] = '\0';
        fprintf(stderr, "  r = %3lld  %s %6.2f%%\n", (long long)r, bar,
                100.0 * s->cumulative[r - 1]);
    }
    fprintf(stderr, "  effective rank: r90 %lld, r95 %lld, r99 %lld of %lld (r99/d = %.2f); "
                    "entropy rank %.1f\n",
            (long long)s->r90, (long long)s->r95, (long long)s->r99, (long long)dim,
            (double)s->r99 / (double)dim, s->entropy_rank);
}

/* ---- training runs -------------------------------------------------- */

struct run {
    const char *name;
    int init;
    int64_t subspace_dim;
    double train[SUBSAE_METRIC_COUNT], eval[SUBSAE_METRIC_COUNT];
    double recovery, recovered_fraction, seconds;
};

/* Mean over the true atoms of the best cosine similarity with a decoder
 * row, and the share of atoms whose best match exceeds 0.9. */
static int dictionary_recovery(const subsae_sae *sae, const float *atoms, int64_t n_atoms,
                               int64_t dim, int64_t features, struct run *run)
{
    float *decoder = malloc((size_t)(features * dim) * sizeof *decoder);
    if (!decoder)
        return cli_fail("out of memory");
    int rc = cli_check(subsae_sae_get_param(sae, SUBSAE_PARAM_W_DEC, decoder, features * dim),
                       "decoder");
    double sum = 0.0;
    int64_t found = 0;
    for (int64_t a = 0; !rc && a < n_atoms; a++) {
        double best = -1.0;
        for (int64_t f = 0; f < features; f++) {
            double dot = 0.0, norm = 0.0;
            for (int64_t j = 0; j < dim; j++) {
                dot += (double)atoms[a * dim + j] * decoder[f * dim + j];
                norm += (double)decoder[f * dim + j] * decoder[f * dim + j];
            }
            if (norm > 0.0 && dot / sqrt(norm) > best)
                best = dot / sqrt(norm);
        }
        sum += best;
        found += best > 0.9;
    }
    run->recovery = sum / (double)n_atoms;
    run->recovered_fraction = (double)found / (double)n_atoms;
    free(decoder);
    return rc;
}

static int train_run(const struct demo_options *o, const subsae_buffer *train,
                     const subsae_buffer *eval, const float *atoms, struct run *run)
{
    const int64_t batch = 4096;
    const int64_t epoch_tokens = subsae_buffer_rows(train) / batch * batch;
    subsae_trainer *t = NULL;
    struct sae_cli_progress progress;
    int rc = subsae_trainer_create(&t);
#define SET(kind, option, value) \
    if (!rc)                     \
    rc = subsae_trainer_set_##kind(t, option, value)
    SET(int, SUBSAE_TRAIN_FEATURES, o->features);
    SET(int, SUBSAE_TRAIN_K, o->k);
    SET(int, SUBSAE_TRAIN_INIT, run->init);
    SET(int, SUBSAE_TRAIN_BATCH, batch);
    SET(int, SUBSAE_TRAIN_SEED, o->seed);
    SET(int, SUBSAE_TRAIN_DEAD_WINDOW, epoch_tokens);
    SET(double, SUBSAE_TRAIN_LR, o->lr);
#undef SET
    const double started = sae_cli_now();
    if (!rc)
        rc = subsae_trainer_init(t, train, NULL);
    char label[64];
    snprintf(label, sizeof label, "  %-16s", run->name);
    sae_cli_progress_start(&progress, t, label, o->epochs * epoch_tokens, 0, o->quiet);
    if (!rc)
        rc = subsae_trainer_set_callback(t, sae_cli_progress_callback, &progress);
    if (!rc)
        rc = subsae_trainer_fit(t, train, NULL, o->epochs * epoch_tokens);
    sae_cli_progress_finish(&progress, rc == SUBSAE_OK);
    if (!rc)
        rc = subsae_trainer_get_int(t, SUBSAE_TRAIN_SUBSPACE_DIM, &run->subspace_dim);
    if (!rc)
        rc = subsae_trainer_metrics(t, run->train, SUBSAE_METRIC_COUNT);
    if (!rc)
        rc = subsae_sae_evaluate(subsae_trainer_sae(t), eval, NULL, run->eval,
                                 SUBSAE_METRIC_COUNT);
    if (rc) {
        subsae_trainer_free(t);
        return cli_check(rc, run->name);
    }
    run->seconds = sae_cli_now() - started;
    rc = dictionary_recovery(subsae_trainer_sae(t), atoms, o->atoms, o->dim, o->features, run);
    subsae_trainer_free(t);
    return rc;
}

static void print_table(const struct run *runs, int n)
{
    fprintf(stderr, "\n%-17s %9s %16s %15s %6s %22s\n", "init", "dead", "never fire (eval)",
            "explained var.", "L0", "dictionary recovery");
    for (int i = 0; i < n; i++)
        fprintf(stderr, "%-17s %8.1f%% %15.1f%% %15.3f %6.2f %13.3f / %5.1f%%\n", runs[i].name,
                100.0 * runs[i].train[SUBSAE_METRIC_DEAD_FRACTION],
                100.0 * runs[i].eval[SUBSAE_METRIC_ZERO_FREQUENCY_FRACTION],
                runs[i].eval[SUBSAE_METRIC_EXPLAINED_VARIANCE], runs[i].eval[SUBSAE_METRIC_L0],
                runs[i].recovery, 100.0 * runs[i].recovered_fraction);
    fprintf(stderr,
            "\ndead: no fire during the last epoch; never fire: share of features silent on\n"
            "the held-out 1/8; recovery: mean over the true atoms of the best cosine with a\n"
            "decoder row / share of atoms matched above 0.9.\n");
}

static json_t *run_json(const struct run *r)
{
    return json_pack("{s:s, s:I, s:f, s:I, s:f, s:f, s:f, s:f, s:f, s:f}", "init", r->name,
                     "subspace_dim", (json_int_t)r->subspace_dim, "dead_fraction",
                     r->train[SUBSAE_METRIC_DEAD_FRACTION], "dead_features",
                     (json_int_t)r->train[SUBSAE_METRIC_DEAD_FEATURES],
                     "zero_frequency_fraction", r->eval[SUBSAE_METRIC_ZERO_FREQUENCY_FRACTION],
                     "explained_variance", r->eval[SUBSAE_METRIC_EXPLAINED_VARIANCE], "l0",
                     r->eval[SUBSAE_METRIC_L0], "recovery_mmcs", r->recovery,
                     "recovered_fraction", r->recovered_fraction, "seconds", r->seconds);
}

static json_t *report_json(const struct demo_options *o, const struct spectrum *s,
                           const struct run *runs, int n)
{
    json_t *list = json_array();
    for (int i = 0; list && i < n; i++)
        json_array_append_new(list, run_json(&runs[i]));
    return json_pack("{s:{s:I, s:I, s:I, s:I, s:I, s:I}, s:{s:I, s:I, s:I, s:f}, "
                     "s:{s:I, s:I, s:f, s:I, s:I}, s:o}",
                     "data", "tokens", (json_int_t)o->tokens, "dim", (json_int_t)o->dim,
                     "subspace", (json_int_t)o->subspace, "atoms", (json_int_t)o->atoms, "k",
                     (json_int_t)o->k, "seed", (json_int_t)o->seed, "spectrum", "r90",
                     (json_int_t)s->r90, "r95", (json_int_t)s->r95, "r99", (json_int_t)s->r99,
                     "entropy_rank", s->entropy_rank, "sae", "features",
                     (json_int_t)o->features, "k", (json_int_t)o->k, "lr", o->lr, "epochs",
                     (json_int_t)o->epochs, "batch", (json_int_t)4096, "runs", list);
}

CLI_COMMAND(demo, "[--dim D] [--subspace R] [--atoms A] [--k K] [--tokens N] [--features M] "
                  "[--epochs E] [--lr X] [--seed S] [--json] [--quiet]")
{
    struct demo_options o;
    int rc = parse_demo(argc, argv, &o);
    if (rc)
        return rc;
    float *atoms = malloc((size_t)(o.atoms * o.dim) * sizeof *atoms);
    subsae_buffer *all = NULL, *train = NULL, *eval = NULL;
    struct spectrum spectrum = {0};
    struct run runs[2] = {{.name = "random", .init = SUBSAE_INIT_RANDOM},
                          {.name = "active subspace", .init = SUBSAE_INIT_ACTIVE_SUBSPACE}};
    if (!atoms)
        return cli_fail("out of memory");
    if (!o.quiet)
        fprintf(stderr,
                "libsubsae %s demo: %lld synthetic tokens of width %lld made of %lld known atoms\n"
                "lying in a random %lld-dimensional subspace, %lld atoms per token (seed %lld).\n"
                "Training on 7/8 of the tokens, evaluating on the last 1/8.\n",
                subsae_version_string(), (long long)o.tokens, (long long)o.dim,
                (long long)o.atoms, (long long)o.subspace, (long long)o.k, (long long)o.seed);
    const int64_t n_train = o.tokens * 7 / 8;
    rc = cli_check(subsae_synth(o.dim, o.subspace, o.atoms, o.k, o.tokens, (uint64_t)o.seed,
                                &all, atoms),
                   "synthesis");
    if (!rc)
        rc = cli_check(subsae_buffer_view(all, 0, n_train, &train), "split");
    if (!rc)
        rc = cli_check(subsae_buffer_view(all, n_train, o.tokens - n_train, &eval), "split");
    if (!rc)
        rc = measure_spectrum(train, o.dim, &spectrum);
    if (!rc && !o.quiet) {
        print_spectrum(&spectrum, o.dim);
        fprintf(stderr,
                "\nTraining the same TopK SAE twice (%lld features, k %lld, lr %g, batch 4096, "
                "%lld epochs, seed %lld):\n",
                (long long)o.features, (long long)o.k, o.lr, (long long)o.epochs,
                (long long)o.seed);
    }
    for (int i = 0; !rc && i < 2; i++)
        rc = train_run(&o, train, eval, atoms, &runs[i]);
    if (!rc && !o.quiet)
        print_table(runs, 2);
    if (!rc && o.json)
        rc = cli_print_json(report_json(&o, &spectrum, runs, 2));
    subsae_buffer_free(eval);
    subsae_buffer_free(train);
    subsae_buffer_free(all);
    free(spectrum.cumulative);
    free(atoms);
    return rc;
}

CLI_HELP(demo)
{
    fprintf(out, "The main job on built-in data (make demo): synthesise activations of a known\n"
                 "dictionary in a subspace, show their spectrum, train the same TopK SAE with\n"
                 "random and with active-subspace initialisation, and compare dead features,\n"
                 "never-firing features on the held-out 1/8, explained variance, L0 and the\n"
                 "recovery of the true dictionary.\n\n");
    cli_help_line(out, "--dim D", "width (default 64)");
    cli_help_line(out, "--subspace R", "dimension of the data's subspace (default 32)");
    cli_help_line(out, "--atoms A", "atoms of the dictionary (default 256)");
    cli_help_line(out, "--k K", "atoms per token and the SAE's k (default 4)");
    cli_help_line(out, "--tokens N", "rows (default 131072)");
    cli_help_line(out, "--features M", "the SAE's features (default 1024)");
    cli_help_line(out, "--epochs E", "passes over the training rows (default 8)");
    cli_help_line(out, "--lr X", "learning rate (default 0.002)");
    cli_help_line(out, "--seed S", "seed of the data (default 1)");
    cli_help_line(out, "--quiet", "no progress on stderr");
    cli_help_end(out, true);
}
