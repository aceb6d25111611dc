/* `subsae rank FILE...`: spectrum and effective rank of activation files.
 * Each file is one report (or all files one dataset with --concat). Output:
 * an aligned table, or with --json {"reports":[...]}; --csv writes the
 * spectra, --plot draws the cumulative explained-variance curves of all
 * reports into one PNG with gnuplot. Under `subsae-mpi` every worker fits
 * its part of the rows of each report together with the others (dist.h);
 * worker 0 prints and writes. */
#include "dist.h"
#include "plot.h"
#include "progress.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct rank_options {
    const char *tensor;
    double threshold;
    int method;
    int64_t rank, oversample, power_iters, seed;
    bool center, concat, json, quiet;
    const char *csv, *plot;
};

struct report {
    char *path;              /* as given; joined with "+" for --concat */
    int64_t rows, dim, found;
    int method;
    double total, entropy, seconds;
    int64_t rank;            /* at the threshold */
    int exact, entropy_exact;
    int64_t rank90, rank95, rank99;
    int exact90, exact95, exact99;
    double *variances;       /* found */
};

static void report_free(struct report *r)
{
    free(r->path);
    free(r->variances);
}

/* ---- progress --------------------------------------------------------- */

/* The subspace fit's events on a cli_progress bar (rows of this worker):
 * one bar per phase ("gram" for the exact method, "power" for the
 * randomized one, whose total counts all its passes over the rows). */
struct progress {
    struct cli_progress bar;
    char label[128];
    bool quiet;
    int64_t rows; /* of one pass */
    const char *phase;
    int64_t done;
};

static void progress_detail(const struct progress *p, char *out, size_t size)
{
    int64_t passes = p->rows > 0 ? p->bar.total / p->rows : 1;
    if (passes > 1) {
        int64_t pass = p->done > p->rows ? (p->done + p->rows - 1) / p->rows : 1;
        snprintf(out, size, "phase %s, pass %lld/%lld", p->phase, (long long)pass,
                 (long long)passes);
    } else {
        snprintf(out, size, "phase %s", p->phase);
    }
}

static void progress_end(struct progress *p, bool ok)
{
    char detail[96];
    if (p->phase && ok) {
        progress_detail(p, detail, sizeof detail);
        cli_progress_finish(&p->bar, p->done, detail);
    } else {
        cli_progress_stop(&p->bar);
    }
    p->phase = NULL;
}

static int show_progress(int event, const char *phase, int64_t done, int64_t total,
                         const char *message, void *user)
{
    (void)message;
    struct progress *p = user;
    if (event != SUBSAE_EVENT_PROGRESS || p->quiet)
        return 0;
    if (p->phase && strcmp(phase, p->phase) != 0) { /* a new phase: a new bar */
        progress_end(p, true);
        cli_progress_start(&p->bar, p->label, "rows", total, p->quiet);
    }
    p->phase = phase;
    p->bar.total = total;
    p->done = done;
    char detail[96];
    progress_detail(p, detail, sizeof detail);
    cli_progress_update(&p->bar, done, detail);
    return 0;
}

/* ---- one report ------------------------------------------------------ */

static int analyse(const char *const *paths, int n_paths, const struct rank_options *o,
                   struct report *r)
{
    memset(r, 0, sizeof *r);
    size_t length = 1;
    for (int i = 0; i < n_paths; i++)
        length += strlen(paths[i]) + 1;
    r->path = malloc(length);
    if (!r->path)
        return cli_fail("out of memory");
    r->path[0] = '\0';
    for (int i = 0; i < n_paths; i++) {
        if (i)
            strcat(r->path, "+");
        strcat(r->path, paths[i]);
    }

    /* This worker's files when they name {rank}, then its part of the
     * rows; every worker must be ready before the collective fit. */
    subsae_buffer *buf = NULL, *part = NULL;
    const bool sharded = cli_dist_sharded((char *const *)paths, n_paths);
    char **mine = calloc((size_t)(n_paths > 0 ? n_paths : 1), sizeof *mine);
    int rc = mine ? SUBSAE_OK : SUBSAE_E_NOMEM;
    for (int i = 0; rc == SUBSAE_OK && i < n_paths; i++)
        if (!(mine[i] = cli_dist_path(paths[i])))
            rc = SUBSAE_E_NOMEM;
    if (rc == SUBSAE_OK)
        rc = n_paths == 1
                 ? subsae_buffer_open(mine[0], o->tensor, &buf)
                 : subsae_buffer_open_shards((const char *const *)mine, n_paths, o->tensor, &buf);
    for (int i = 0; mine && i < n_paths; i++)
        free(mine[i]);
    free(mine);
    if (rc == SUBSAE_OK)
        rc = cli_dist_part(buf, sharded, &part);
    if (cli_dist_agree(rc != SUBSAE_OK)) {
        if (part != buf)
            subsae_buffer_free(part);
        subsae_buffer_free(buf);
        return rc == SUBSAE_E_NOMEM ? cli_fail("out of memory")
               : rc != SUBSAE_OK    ? cli_check(rc, "open")
                                    : 1;
    }
    subsae_subspace *s = NULL;
    struct progress progress = {.quiet = o->quiet || !cli_dist_root(),
                                .rows = subsae_buffer_rows(part)};
    const char *name = strrchr(paths[0], '/');
    if (n_paths > 1)
        snprintf(progress.label, sizeof progress.label, "%s rank %s (+%d)", cli_program_name,
                 name ? name + 1 : paths[0], n_paths - 1);
    else
        snprintf(progress.label, sizeof progress.label, "%s rank %s", cli_program_name,
                 name ? name + 1 : paths[0]);
    /* The clock runs from the start of the fit; the first event gives the
     * phase and its total. */
    cli_progress_start(&progress.bar, progress.label, "rows", 0, progress.quiet);
    rc = subsae_subspace_create(&s);
    if (rc == SUBSAE_OK)
        rc = subsae_subspace_set_int(s, SUBSAE_SUBSPACE_METHOD, o->method);
    if (rc == SUBSAE_OK)
        rc = subsae_subspace_set_int(s, SUBSAE_SUBSPACE_RANK, o->rank);
    if (rc == SUBSAE_OK)
        rc = subsae_subspace_set_int(s, SUBSAE_SUBSPACE_OVERSAMPLE, o->oversample);
    if (rc == SUBSAE_OK)
        rc = subsae_subspace_set_int(s, SUBSAE_SUBSPACE_POWER_ITERS, o->power_iters);
    if (rc == SUBSAE_OK)
        rc = subsae_subspace_set_int(s, SUBSAE_SUBSPACE_SEED, o->seed);
    if (rc == SUBSAE_OK)
        rc = subsae_subspace_set_int(s, SUBSAE_SUBSPACE_CENTER, o->center ? 1 : 0);
    if (rc == SUBSAE_OK)
        rc = subsae_subspace_set_double(s, SUBSAE_SUBSPACE_THRESHOLD, o->threshold);
    if (rc == SUBSAE_OK && !progress.quiet)
        rc = subsae_subspace_set_callback(s, show_progress, &progress);
    if (rc == SUBSAE_OK)
        rc = cli_dist_subspace(s);
    bool peer_failed = false; /* another worker could not set up: it says why */
    if (cli_dist && rc != SUBSAE_OK) /* the fit below would wait for this worker */
        cli_dist_agree(1);
    else if (cli_dist && cli_dist_agree(0))
        peer_failed = true;
    if (rc == SUBSAE_OK && !peer_failed)
        rc = subsae_subspace_fit(s, part);
    progress_end(&progress, rc == SUBSAE_OK && !peer_failed);
    int64_t method = 0;
    if (rc == SUBSAE_OK)
        rc = subsae_subspace_get_int(s, SUBSAE_SUBSPACE_METHOD_USED, &method);
    if (rc == SUBSAE_OK)
        rc = subsae_subspace_get_int(s, SUBSAE_SUBSPACE_ROWS, &r->rows);
    if (rc == SUBSAE_OK)
        rc = subsae_subspace_get_int(s, SUBSAE_SUBSPACE_DIM, &r->dim);
    if (rc == SUBSAE_OK)
        rc = subsae_subspace_get_int(s, SUBSAE_SUBSPACE_RANK_FOUND, &r->found);
    if (rc == SUBSAE_OK)
        rc = subsae_subspace_get_double(s, SUBSAE_SUBSPACE_SECONDS, &r->seconds);
    if (rc == SUBSAE_OK)
        rc = subsae_subspace_total_variance(s, &r->total);
    if (rc == SUBSAE_OK)
        rc = subsae_subspace_effective_rank(s, o->threshold, &r->rank, &r->exact);
    if (rc == SUBSAE_OK)
        rc = subsae_subspace_effective_rank(s, 0.90, &r->rank90, &r->exact90);
    if (rc == SUBSAE_OK)
        rc = subsae_subspace_effective_rank(s, 0.95, &r->rank95, &r->exact95);
    if (rc == SUBSAE_OK)
        rc = subsae_subspace_effective_rank(s, 0.99, &r->rank99, &r->exact99);
    if (rc == SUBSAE_OK)
        rc = subsae_subspace_entropy_rank(s, &r->entropy, &r->entropy_exact);
    if (rc == SUBSAE_OK) {
        r->variances = malloc((size_t)(r->found > 0 ? r->found : 1) * sizeof *r->variances);
        rc = r->variances ? subsae_subspace_variances(s, r->variances, r->found)
                          : SUBSAE_E_NOMEM;
    }
    r->method = (int)method;
    subsae_subspace_free(s);
    if (part != buf)
        subsae_buffer_free(part);
    subsae_buffer_free(buf);
    if (peer_failed)
        return 1;
    if (rc != SUBSAE_OK) {
        char what[64];
        snprintf(what, sizeof what, "%s", r->path);
        return cli_check(rc, what);
    }
    return 0;
}

/* ---- output ---------------------------------------------------------- */

static const char *method_name(int method)
{
    return method == SUBSAE_METHOD_EXACT ? "exact" : "randomized";
}

static json_t *report_json(const struct report *r, const struct rank_options *o)
{
    json_t *variances = json_array();
    for (int64_t i = 0; variances && i < r->found; i++)
        json_array_append_new(variances, json_real(r->variances[i]));
    json_t *ranks = json_pack("{s:I, s:I, s:I}", "0.9", (json_int_t)r->rank90, "0.95",
                              (json_int_t)r->rank95, "0.99", (json_int_t)r->rank99);
    json_t *ranks_exact = json_pack("{s:b, s:b, s:b}", "0.9", r->exact90, "0.95", r->exact95,
                                    "0.99", r->exact99);
    return json_pack("{s:s, s:I, s:I, s:s, s:b, s:f, s:I, s:f, s:b, s:f, s:b, s:f, s:I, s:o,"
                     " s:o, s:o, s:f}",
                     "path", r->path, "rows", (json_int_t)r->rows, "dim", (json_int_t)r->dim,
                     "method", method_name(r->method), "centered", o->center, "threshold",
                     o->threshold, "effective_rank", (json_int_t)r->rank, "effective_rank_ratio",
                     (double)r->rank / (double)r->dim, "effective_rank_exact", r->exact,
                     "entropy_rank", r->entropy, "entropy_rank_exact", r->entropy_exact,
                     "total_variance", r->total, "rank_found", (json_int_t)r->found,
                     "effective_ranks", ranks, "effective_ranks_exact", ranks_exact,
                     "variances", variances, "seconds", r->seconds);
}

static void print_table(const struct report *reports, int n, const struct rank_options *o)
{
    int width = 4;
    for (int i = 0; i < n; i++)
        width = (int)strlen(reports[i].path) > width ? (int)strlen(reports[i].path) : width;
    char rank_title[32];
    snprintf(rank_title, sizeof rank_title, "r%g", 100.0 * o->threshold);
    printf("%-*s  %9s  %6s  %7s  %6s  %8s  %-10s\n", width, "path", "rows", "dim", rank_title,
           "r/d", "entropy", "method");
    for (int i = 0; i < n; i++) {
        const struct report *r = &reports[i];
        char rank[32], entropy[32];
        snprintf(rank, sizeof rank, "%s%lld", r->exact ? "" : ">=", (long long)r->rank);
        snprintf(entropy, sizeof entropy, "%s%.2f", r->entropy_exact ? "" : "~", r->entropy);
        printf("%-*s  %9lld  %6lld  %7s  %6.3f  %8s  %-10s\n", width, r->path,
               (long long)r->rows, (long long)r->dim, rank, (double)r->rank / (double)r->dim,
               entropy, method_name(r->method));
    }
    bool lower = false;
    for (int i = 0; i < n; i++)
        lower = lower || !reports[i].exact || !reports[i].entropy_exact;
    if (lower)
        printf("(>= : more directions needed than --rank found, a lower bound; ~ : entropy "
               "rank over the top directions only)\n");
}

static int write_csv(const char *path, const struct report *reports, int n)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return cli_fail("--csv %s: cannot open for writing", path);
    fprintf(f, "path,index,variance,explained_ratio,cumulative_ratio\n");
    for (int i = 0; i < n; i++) {
        const struct report *r = &reports[i];
        double cumulative = 0.0;
        for (int64_t k = 0; k < r->found; k++) {
            double ratio = r->total > 0.0 ? r->variances[k] / r->total : 0.0;
            cumulative += ratio;
            /* Quote the path (RFC 4180) in case it holds a comma. */
            fputc('"', f);
            for (const char *c = r->path; *c; c++) {
                if (*c == '"')
                    fputc('"', f);
                fputc(*c, f);
            }
            fprintf(f, "\",%lld,%.10g,%.10g,%.10g\n", (long long)(k + 1), r->variances[k], ratio,
                    cumulative);
        }
    }
    if (ferror(f) | (fclose(f) != 0))
        return cli_fail("--csv %s: write failed", path);
    return 0;
}

static int write_plot(const char *png, const struct report *reports, int n,
                      const struct rank_options *o)
{
    FILE *g = plot_start("--plot", png, 1000, 650);
    if (!g)
        return 1;
    fprintf(g, "set title 'cumulative explained variance'\n"
               "set xlabel 'number of principal directions'\n"
               "set ylabel 'fraction of total variance'\n"
               "set key bottom right\nset grid\nset yrange [0:1.02]\n"
               "set arrow from graph 0, first %.6g to graph 1, first %.6g nohead dt 2 lc "
               "'gray'\n",
               o->threshold, o->threshold);
    int64_t widest = 1;
    for (int i = 0; i < n; i++)
        widest = reports[i].dim > widest ? reports[i].dim : widest;
    fprintf(g, "set xrange [0:%lld]\n", (long long)widest);
    for (int i = 0; i < n; i++) {
        fprintf(g, "$d%d << EOD\n0 0\n", i);
        double cumulative = 0.0;
        for (int64_t k = 0; k < reports[i].found; k++) {
            cumulative += reports[i].total > 0.0 ? reports[i].variances[k] / reports[i].total
                                                 : 0.0;
            fprintf(g, "%lld %.8g\n", (long long)(k + 1), cumulative);
        }
        fprintf(g, "EOD\n");
    }
    fprintf(g, "plot ");
    for (int i = 0; i < n; i++) {
        const char *name = strrchr(reports[i].path, '/');
        char title[512];
        snprintf(title, sizeof title, "%s (r%g = %s%lld)", name ? name + 1 : reports[i].path,
                 100.0 * o->threshold, reports[i].exact ? "" : ">=",
                 (long long)reports[i].rank);
        fprintf(g, "%s$d%d with lines lw 2 title ", i ? ", " : "", i);
        plot_string(g, title);
    }
    fprintf(g, "\n");
    return plot_finish(g, "--plot", png);
}

/* ---- the command ------------------------------------------------------ */

/* A value of a subspace option, within the library's bounds. */
static bool parse_option(const char *flag, const char *text, int option, int64_t *out)
{
    int64_t lo, hi;
    subsae_option_int_bounds(SUBSAE_OBJECT_SUBSPACE, option, &lo, &hi, NULL);
    return cli_parse_int64(flag, text, lo, hi, out);
}

static bool parse_fraction(const char *flag, const char *text, double *out)
{
    double hi;
    subsae_option_double_bounds(SUBSAE_OBJECT_SUBSPACE, SUBSAE_SUBSPACE_THRESHOLD, NULL, &hi,
                                NULL);
    if (!cli_parse_double(flag, text, 0.0, hi, out))
        return false;
    if (*out > 0.0)
        return true;
    cli_fail("%s: '%s' must be above 0", flag, text);
    return false;
}

CLI_COMMAND(rank, "FILE... [--tensor NAME] [--threshold 0.99] [--method auto|exact|randomized]"
                  " [--rank K] [--oversample P] [--power-iters Q] [--seed S] [--no-center]"
                  " [--concat] [--json] [--csv OUT] [--plot OUT.png] [--quiet]")
{
    struct rank_options o = {.threshold = 0.99, .method = SUBSAE_METHOD_AUTO, .oversample = 10,
                             .power_iters = 3, .center = true};
    const char **files = calloc((size_t)argc, sizeof *files);
    if (!files)
        return cli_fail("out of memory");
    int n_files = 0, status = 0;
    for (int i = 1; i < argc && status == 0; i++) {
        const char *a = argv[i];
        const char *value = i + 1 < argc ? argv[i + 1] : NULL;
        bool takes_value = !strcmp(a, "--tensor") || !strcmp(a, "--threshold") ||
                           !strcmp(a, "--method") || !strcmp(a, "--rank") ||
                           !strcmp(a, "--oversample") || !strcmp(a, "--power-iters") ||
                           !strcmp(a, "--seed") || !strcmp(a, "--csv") || !strcmp(a, "--plot");
        if (takes_value && !value) {
            status = cli_fail("%s needs a value", a);
            break;
        }
        if (takes_value)
            i++;
        if (!strcmp(a, "--tensor"))
            o.tensor = value;
        else if (!strcmp(a, "--threshold")) {
            if (!parse_fraction(a, value, &o.threshold))
                status = 2;
        } else if (!strcmp(a, "--method")) {
            if (!strcmp(value, "auto"))
                o.method = SUBSAE_METHOD_AUTO;
            else if (!strcmp(value, "exact"))
                o.method = SUBSAE_METHOD_EXACT;
            else if (!strcmp(value, "randomized"))
                o.method = SUBSAE_METHOD_RANDOMIZED;
            else
                status = cli_fail("--method: '%s' is not auto, exact or randomized", value);
        } else if (!strcmp(a, "--rank")) {
            if (!parse_option(a, value, SUBSAE_SUBSPACE_RANK, &o.rank))
                status = 2;
        } else if (!strcmp(a, "--oversample")) {
            if (!parse_option(a, value, SUBSAE_SUBSPACE_OVERSAMPLE, &o.oversample))
                status = 2;
        } else if (!strcmp(a, "--power-iters")) {
            if (!parse_option(a, value, SUBSAE_SUBSPACE_POWER_ITERS, &o.power_iters))
                status = 2;
        } else if (!strcmp(a, "--seed")) {
            if (!cli_parse_int64(a, value, 0, INT64_MAX, &o.seed))
                status = 2;
        } else if (!strcmp(a, "--csv"))
            o.csv = value;
        else if (!strcmp(a, "--plot"))
            o.plot = value;
        else if (!strcmp(a, "--no-center"))
            o.center = false;
        else if (!strcmp(a, "--concat"))
            o.concat = true;
        else if (!strcmp(a, "--json"))
            o.json = true;
        else if (!strcmp(a, "--quiet"))
            o.quiet = true;
        else if (a[0] == '-' && a[1] != '\0') {
            free(files);
            cli_fail("unknown option %s (see %s rank --help)", a, cli_program_name);
            return 2;
        } else
            files[n_files++] = a;
    }
    if (status == 0 && n_files == 0) {
        free(files);
        return cli_usage();
    }
    /* Fail before the work if an output would replace an input or the plot
     * cannot be drawn. */
    const char *what = "a file of rows this command reads";
    if (status == 0 && o.csv)
        status = cli_check_not_among("--csv", o.csv, files, n_files, what);
    if (status == 0 && o.plot)
        status = cli_check_not_among("--plot", o.plot, files, n_files, what);
    if (status == 0 && o.plot && cli_dist_root())
        status = plot_check("--plot");
    /* Workers (subsae-mpi): all go on, or none. */
    if (cli_dist_agree(status) && status == 0)
        status = 1;
    int n_reports = o.concat ? 1 : n_files;
    struct report *reports = calloc((size_t)(n_reports > 0 ? n_reports : 1), sizeof *reports);
    if (status == 0 && !reports)
        status = cli_fail("out of memory");
    int done = 0;
    for (int i = 0; status == 0 && i < n_reports; i++) {
        status = o.concat ? analyse(files, n_files, &o, &reports[i])
                          : analyse(&files[i], 1, &o, &reports[i]);
        done = i + 1;
    }
    const bool root = cli_dist_root(); /* worker 0 writes and prints */
    if (status == 0 && root && o.csv)
        status = write_csv(o.csv, reports, n_reports);
    if (status == 0 && root && o.plot)
        status = write_plot(o.plot, reports, n_reports, &o);
    if (status == 0 && root) {
        if (o.json) {
            json_t *list = json_array();
            for (int i = 0; list && i < n_reports; i++)
                json_array_append_new(list, report_json(&reports[i], &o));
            json_t *out = list ? json_pack("{s:o}", "reports", list) : NULL;
            if (out && cli_dist)
                json_object_update_new(out, cli_dist_json());
            status = cli_print_json(out);
        } else {
            print_table(reports, n_reports, &o);
            cli_dist_print();
        }
    }
    for (int i = 0; reports && i < done; i++)
        report_free(&reports[i]);
    free(reports);
    free(files);
    return status;
}

static void help_option(FILE *out, const char *flag, int option, const char *const *choices,
                        const char *text)
{
    char range[256], line[600];
    cli_option_range(SUBSAE_OBJECT_SUBSPACE, option, choices, range, sizeof range);
    snprintf(line, sizeof line, "%s (%s)", text, range);
    cli_help_line(out, flag, line);
}

CLI_HELP(rank)
{
    static const char *const methods[] = {"auto", "exact", "randomized", NULL};
    fprintf(out, "Spectrum and effective rank of activation files (.npy or safetensors): the\n"
                 "number of principal directions holding a fraction of the variance (r, r/d),\n"
                 "and the entropy rank. One report per file, or one for all with --concat.\n"
                 "Defaults and ranges come from the library.\n\n");
    cli_help_line(out, "--tensor NAME", "the safetensors tensor to read (default: the only one)");
    help_option(out, "--threshold TAU", SUBSAE_SUBSPACE_THRESHOLD, NULL,
                "variance fraction of the effective rank");
    help_option(out, "--method NAME", SUBSAE_SUBSPACE_METHOD, methods,
                "exact Gram matrix, randomized subspace iteration, or the cheaper of the two");
    help_option(out, "--rank K", SUBSAE_SUBSPACE_RANK, NULL,
                "directions to find; 0 = all (the randomized method finds K + P)");
    help_option(out, "--oversample P", SUBSAE_SUBSPACE_OVERSAMPLE, NULL,
                "randomized: extra directions");
    help_option(out, "--power-iters Q", SUBSAE_SUBSPACE_POWER_ITERS, NULL,
                "randomized: power iterations");
    cli_help_line(out, "--seed S", "randomized: seed of the test matrix (default 0)");
    cli_help_line(out, "--no-center", "do not subtract the mean row");
    cli_help_line(out, "--concat", "all files form one data set");
    cli_help_line(out, "--csv OUT", "write the spectra (variance, ratio, cumulative ratio)");
    cli_help_line(out, "--plot OUT.png", "draw the cumulative explained variance (gnuplot)");
    cli_help_line(out, "--quiet", "no progress on stderr");
    cli_help_end(out, true);
}
