/* `subsae eval DIR INPUT... [--target FILE...] [--precision P]`: reconstruction metrics
 * of a saved SAE (or, with targets, a transcoder) on activation files, and
 * its feature densities: SAELens' sparsity.safetensors and a histogram of
 * log10 density drawn with gnuplot. */
#include "plot.h"
#include "sae_cli.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct eval_options {
    const char *dir, *tensor, *sparsity, *plot;
    char **inputs, **targets;
    int n_inputs, n_targets;
    int precision; /* SUBSAE_PRECISION_* */
    bool json, skip_nonfinite;
};

static int parse_eval(int argc, char **argv, struct eval_options *o)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **text = !strcmp(a, "--tensor")         ? &o->tensor
                            : !strcmp(a, "--sparsity")     ? &o->sparsity
                            : !strcmp(a, "--density-plot") ? &o->plot
                                                           : NULL;
        if (text) {
            if (i + 1 >= argc)
                return cli_fail("%s needs a value", a);
            *text = argv[++i];
        } else if (!strcmp(a, "--precision")) {
            if (i + 1 >= argc)
                return cli_fail("%s needs a value", a);
            if (sae_cli_parse_precision(a, argv[++i], &o->precision))
                return 2;
        } else if (!strcmp(a, "--json")) {
            o->json = true;
        } else if (!strcmp(a, "--skip-nonfinite")) {
            o->skip_nonfinite = true;
        } else if (!strcmp(a, "--target")) {
            /* --target FILE...: the files up to the next option. */
            while (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0)
                o->targets[o->n_targets++] = argv[++i];
            if (o->n_targets == 0)
                return cli_fail("--target needs one or more files");
        } else if (a[0] == '-') {
            cli_fail("unknown option %s (see %s eval --help)", a, cli_program_name);
            return 2;
        } else if (!o->dir) {
            o->dir = a;
        } else {
            o->inputs[o->n_inputs++] = argv[i];
        }
    }
    if (!o->dir || o->n_inputs == 0)
        return cli_usage();
    if (o->n_targets > 0 && o->n_targets != o->n_inputs)
        return cli_fail("%d inputs but %d targets: give one target file per input file",
                        o->n_inputs, o->n_targets);
    if (o->skip_nonfinite && o->n_targets > 0)
        return cli_fail("--skip-nonfinite cannot leave the same rows out of the inputs and the "
                        "targets; clean the files first");
    return 0;
}

static subsae_buffer *open_rows(char **paths, int n, const struct eval_options *o,
                                const char *what)
{
    subsae_buffer *buf = sae_cli_open(paths, n, o->tensor, what);
    if (buf && o->skip_nonfinite &&
        cli_check(subsae_buffer_skip_nonfinite(buf, NULL), "cannot scan the input")) {
        subsae_buffer_free(buf);
        return NULL;
    }
    return buf;
}

/* The histogram of log10(density + 1e-10) (SAELens' convention: a
 * feature that never fired sits at -10) in bins of 0.25. */
static int plot_density(const char *png, const char *dir, const double *density, int64_t n)
{
    enum { BINS = 41 };
    int64_t count[BINS] = {0}, never = 0;
    for (int64_t f = 0; f < n; f++) {
        const double l = log10(density[f] + 1e-10);
        int bin = (int)floor((l + 10.0) / 0.25);
        count[bin < 0 ? 0 : bin >= BINS ? BINS - 1 : bin]++;
        never += density[f] == 0.0;
    }
    FILE *g = plot_start("--density-plot", png, 900, 560);
    if (!g)
        return 1;
    char title[4400];
    snprintf(title, sizeof title, "%s: log10 feature density (%lld features, %lld never fired)",
             dir, (long long)n, (long long)never);
    fprintf(g, "set title ");
    plot_string(g, title);
    fprintf(g, "\nset xlabel 'log10(fraction of rows the feature fires on + 1e-10)'\n"
               "set ylabel 'features'\nset grid\nset style fill solid 0.6\nset boxwidth 0.22\n"
               "set xrange [-10.5:0.5]\nunset key\n$d << EOD\n");
    for (int b = 0; b < BINS; b++)
        fprintf(g, "%.3f %lld\n", -10.0 + 0.25 * b + 0.125, (long long)count[b]);
    fprintf(g, "EOD\nplot $d using 1:2 with boxes\n");
    return plot_finish(g, "--density-plot", png);
}

static int not_read(const char *flag, const char *path, const struct eval_options *o)
{
    return sae_cli_check_not_read(flag, path, o->dir, o->inputs, o->n_inputs, o->targets,
                                  o->n_targets);
}

CLI_COMMAND(eval, "DIR INPUT... [--target FILE...] [--tensor NAME] [--skip-nonfinite] "
                  "[--sparsity FILE.safetensors] [--density-plot FILE.png] "
                  "[--precision fp32|bf16|auto] [--json]")
{
    struct eval_options o = {0};
    cli_nonfinite_hint = "--skip-nonfinite leaves such rows out";
    o.inputs = calloc((size_t)argc, sizeof *o.inputs);
    o.targets = calloc((size_t)argc, sizeof *o.targets);
    int status = o.inputs && o.targets ? parse_eval(argc, argv, &o) : cli_fail("out of memory");
    subsae_sae *sae = NULL;
    subsae_buffer *buf = NULL, *target = NULL;
    double *density = NULL;
    /* Everything that can fail before the evaluation fails first. */
    if (status ||
        (o.sparsity && (sae_cli_check_output("--sparsity", o.sparsity, ".safetensors", NULL) ||
                        not_read("--sparsity", o.sparsity, &o))) ||
        (o.plot && (sae_cli_check_output("--density-plot", o.plot, ".png", NULL) ||
                    not_read("--density-plot", o.plot, &o) || plot_check("--density-plot"))) ||
        !(sae = sae_cli_load(o.dir, o.n_targets > 0)) || sae_cli_set_precision(sae, o.precision) ||
        !(buf = open_rows(o.inputs, o.n_inputs, &o, "the input")) ||
        (o.n_targets > 0 && !(target = open_rows(o.targets, o.n_targets, &o, "--target"))) ||
        sae_cli_check_rows(sae, o.dir, buf, o.inputs[0], target,
                           o.n_targets ? o.targets[0] : NULL)) {
        status = status ? status : 1;
        goto done;
    }
    int64_t features;
    subsae_sae_get_int(sae, SUBSAE_SAE_D_SAE, &features);
    density = malloc((size_t)features * sizeof *density);
    if (!density) {
        status = cli_fail("out of memory");
        goto done;
    }
    double m[SUBSAE_METRIC_COUNT];
    double started = sae_cli_now();
    status = 1;
    if (cli_check(subsae_sae_evaluate_density(sae, buf, target, m, SUBSAE_METRIC_COUNT, density,
                                              features),
                  "evaluation failed"))
        goto done;
    double seconds = sae_cli_now() - started;
    if ((o.sparsity && cli_check(subsae_sae_save_sparsity(sae, o.sparsity, density, features),
                                 "cannot save the densities")) ||
        (o.plot && plot_density(o.plot, o.dir, density, features)))
        goto done;
    int64_t used = SUBSAE_PRECISION_FP32;
    subsae_sae_get_int(sae, SUBSAE_SAE_PRECISION, &used);
    if (o.json) {
        json_t *eval = sae_cli_eval_json(m);
        if (sae_cli_add_prefix_ev(eval, sae, buf, target)) {
            json_decref(eval);
            goto done;
        }
        if (eval && json_object_set_new(eval, "precision",
                                        json_string(sae_cli_precision_name((int)used))) != 0) {
            json_decref(eval);
            eval = NULL; /* cli_print_json reports it */
        }
        status = cli_print_json(eval);
        goto done;
    }
    printf("%lld rows%s in %.2f s: MSE %.6g, FVU %.5f, explained variance %.5f, L0 %.3f, "
           "never fired %.2f%%, dense %.2f%%\n",
           (long long)subsae_buffer_rows(buf), used == SUBSAE_PRECISION_BF16 ? " (bf16)" : "",
           seconds, m[SUBSAE_METRIC_MSE],
           m[SUBSAE_METRIC_FVU], m[SUBSAE_METRIC_EXPLAINED_VARIANCE], m[SUBSAE_METRIC_L0],
           100 * m[SUBSAE_METRIC_ZERO_FREQUENCY_FRACTION], 100 * m[SUBSAE_METRIC_DENSE_FRACTION]);
    status = fflush(stdout) == 0 ? 0 : cli_fail("cannot write to standard output");
done:
    free(density);
    subsae_sae_free(sae);
    subsae_buffer_free(buf);
    subsae_buffer_free(target);
    free(o.inputs);
    free(o.targets);
    return status;
}

CLI_HELP(eval)
{
    fprintf(out, "Evaluate a saved SAE or transcoder (this library's, SAELens', sparsify's or\n"
                 "lm-saes' directory) on activation files: MSE, FVU, explained variance, L0,\n"
                 "the share of features that never fire and of dense ones (> 10 %% of rows).\n\n");
    cli_help_line(out, "--target FILE...",
                  "a transcoder's target: the rows of the site it reconstructs, one file per "
                  "INPUT file (required for a transcoder, refused for an SAE)");
    cli_help_line(out, "--tensor NAME", "the safetensors tensor to read (default: the only one)");
    cli_help_line(out, "--skip-nonfinite", "leave out rows that hold NaN or infinity");
    cli_help_line(out, "--sparsity FILE.safetensors",
                  "write each feature's log10 density on these rows as SAELens' "
                  "sparsity.safetensors (tensor 'sparsity' [d_sae]; -10 = never fired)");
    cli_help_line(out, "--density-plot FILE.png",
                  "draw the histogram of log10 feature density (gnuplot)");
    sae_cli_help_precision(out);
    cli_help_end(out, true);
}
