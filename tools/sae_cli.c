/* Helpers shared by the SAE subcommands. */
#include "sae_cli.h"

#include <math.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

json_t *sae_cli_number(double value)
{
    return isfinite(value) ? json_real(value) : json_null();
}

json_t *sae_cli_final_json(const double *m)
{
    return json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "mse",
                     sae_cli_number(m[SUBSAE_METRIC_MSE]), "fvu",
                     sae_cli_number(m[SUBSAE_METRIC_FVU]), "explained_variance",
                     sae_cli_number(m[SUBSAE_METRIC_EXPLAINED_VARIANCE]), "l0",
                     sae_cli_number(m[SUBSAE_METRIC_L0]), "dead_fraction",
                     sae_cli_number(m[SUBSAE_METRIC_DEAD_FRACTION]), "dead_features",
                     isfinite(m[SUBSAE_METRIC_DEAD_FEATURES])
                         ? json_integer((json_int_t)m[SUBSAE_METRIC_DEAD_FEATURES])
                         : json_null(),
                     "dense_fraction", sae_cli_number(m[SUBSAE_METRIC_DENSE_FRACTION]));
}

json_t *sae_cli_eval_json(const double *m)
{
    return json_pack("{s:o, s:o, s:o, s:o, s:o, s:o}", "mse",
                     sae_cli_number(m[SUBSAE_METRIC_MSE]), "fvu",
                     sae_cli_number(m[SUBSAE_METRIC_FVU]), "explained_variance",
                     sae_cli_number(m[SUBSAE_METRIC_EXPLAINED_VARIANCE]), "l0",
                     sae_cli_number(m[SUBSAE_METRIC_L0]), "zero_frequency_fraction",
                     sae_cli_number(m[SUBSAE_METRIC_ZERO_FREQUENCY_FRACTION]), "dense_fraction",
                     sae_cli_number(m[SUBSAE_METRIC_DENSE_FRACTION]));
}

int sae_cli_add_prefix_ev(json_t *eval, const subsae_sae *sae, const subsae_buffer *input,
                          const subsae_buffer *target)
{
    int count = 0;
    if (!eval || subsae_sae_get_matryoshka(sae, NULL, 0, &count) != SUBSAE_OK || count == 0)
        return 0;
    double ev[SUBSAE_MATRYOSHKA_MAX];
    if (cli_check(subsae_sae_evaluate_prefixes(sae, input, target, ev, SUBSAE_MATRYOSHKA_MAX,
                                               &count),
                  "cannot evaluate the Matryoshka prefixes"))
        return 1;
    json_t *values = json_array();
    for (int j = 0; values && j < count; j++)
        if (json_array_append_new(values, sae_cli_number(ev[j]))) {
            json_decref(values);
            values = NULL;
        }
    if (!values || json_object_set_new(eval, "prefix_explained_variance", values))
        return cli_fail("out of memory");
    return 0;
}

subsae_buffer *sae_cli_open(char **paths, int64_t n, const char *tensor, const char *what)
{
    subsae_buffer *buf = NULL;
    int rc = n == 1 ? subsae_buffer_open(paths[0], tensor, &buf)
                    : subsae_buffer_open_shards((const char *const *)paths, n, tensor, &buf);
    char doing[96];
    snprintf(doing, sizeof doing, "cannot open %s", what);
    if (cli_check(rc, doing))
        return NULL;
    return buf;
}

/* A member of the model's metadata (cfg.json), or NULL. */
static const char *metadata_text(const subsae_sae *sae, const char *key, char *out, size_t size)
{
    const char *text;
    json_t *meta = subsae_sae_get_metadata(sae, &text) == SUBSAE_OK ? json_loads(text, 0, NULL)
                                                                   : NULL;
    const char *value = json_string_value(json_object_get(meta, key));
    if (value)
        snprintf(out, size, "%s", value);
    json_decref(meta);
    return value ? out : NULL;
}

subsae_sae *sae_cli_load(const char *dir, bool have_targets)
{
    subsae_sae *sae = NULL;
    if (cli_check(subsae_sae_load(dir, &sae), "cannot load the model"))
        return NULL;
    int64_t transcoder = 0;
    subsae_sae_get_int(sae, SUBSAE_SAE_TRANSCODER, &transcoder);
    if (transcoder && !have_targets) {
        char in[256], out[256], sites[600] = "";
        if (metadata_text(sae, "hook_name", in, sizeof in) &&
            metadata_text(sae, "hook_name_out", out, sizeof out))
            snprintf(sites, sizeof sites, " (from %s to %s)", in, out);
        cli_fail("%s is a transcoder%s: give --target FILE with the activations of the site it "
                 "reconstructs",
                 dir, sites);
    } else if (!transcoder && have_targets) {
        cli_fail("%s is an SAE, not a transcoder: it reconstructs its own input; drop --target",
                 dir);
    } else {
        return sae;
    }
    subsae_sae_free(sae);
    return NULL;
}

int sae_cli_check_rows(const subsae_sae *sae, const char *dir, const subsae_buffer *input,
                       const char *input_name, const subsae_buffer *target,
                       const char *target_name)
{
    int64_t d_in, d_out;
    subsae_sae_get_int(sae, SUBSAE_SAE_D_IN, &d_in);
    subsae_sae_get_int(sae, SUBSAE_SAE_D_OUT, &d_out);
    if (subsae_buffer_dim(input) != d_in)
        return cli_fail("%s has rows of %lld values but %s takes %lld", input_name,
                        (long long)subsae_buffer_dim(input), dir, (long long)d_in);
    if (target && subsae_buffer_dim(target) != d_out)
        return cli_fail("%s has rows of %lld values but %s reconstructs %lld", target_name,
                        (long long)subsae_buffer_dim(target), dir, (long long)d_out);
    if (target && subsae_buffer_rows(target) != subsae_buffer_rows(input))
        return cli_fail("%s has %lld rows but %s %lld", input_name,
                        (long long)subsae_buffer_rows(input), target_name,
                        (long long)subsae_buffer_rows(target));
    return 0;
}

/* An output file the command will write: not a directory, in a directory
 * that exists, with the extension its format has. */
int sae_cli_check_output(const char *flag, const char *path, const char *extension,
                         const char *why)
{
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return cli_fail("%s %s: is a directory; give a file name ending in %s", flag, path,
                        extension);
    const char *dot = strrchr(path, '.');
    if (!dot || strcmp(dot, extension) != 0)
        return cli_fail("%s %s: the file's name must end in %s%s%s", flag, path, extension,
                        why ? ": " : "", why ? why : "");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = '\0';
    if (slash && dir[0] && (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)))
        return cli_fail("%s %s: the directory %s does not exist", flag, path, dir);
    return 0;
}

int sae_cli_check_not_read(const char *flag, const char *path, const char *dir,
                           char *const *inputs, int n_inputs, char *const *targets,
                           int n_targets)
{
    static const char *const model_files[] = {"sae_weights.safetensors", "sae.safetensors",
                                              "cfg.json", "config.json"};
    if (cli_check_not_among(flag, path, (const char *const *)inputs, n_inputs,
                            "a file of rows this command reads") ||
        cli_check_not_among(flag, path, (const char *const *)targets, n_targets,
                            "a file of rows this command reads"))
        return 1;
    for (size_t i = 0; i < sizeof model_files / sizeof model_files[0]; i++) {
        char file[4200];
        snprintf(file, sizeof file, "%s/%s", dir, model_files[i]);
        if (cli_same_file(path, file))
            return cli_fail("%s %s is the model's %s; give another name", flag, path,
                            model_files[i]);
    }
    return 0;
}

/* Bytes the rows of a buffer take in its files. */
static int64_t stored_bytes(const subsae_buffer *buf)
{
    int64_t total = 0;
    for (int64_t i = 0; i < subsae_buffer_source_count(buf); i++) {
        int dtype = SUBSAE_DTYPE_F32, ndim = 0;
        int64_t shape[8];
        if (subsae_buffer_source_info(buf, i, NULL, NULL, &dtype, &ndim, shape, 8) != SUBSAE_OK)
            continue;
        int64_t elements = 1;
        for (int d = 0; d < ndim && d < 8; d++)
            elements *= shape[d];
        total += elements * (dtype == SUBSAE_DTYPE_F64 ? 8 : dtype == SUBSAE_DTYPE_F32 ? 4 : 2);
    }
    return total;
}

int sae_cli_scan(char **paths, int n, const char *tensor, const char *what,
                 int64_t max_bytes)
{
    subsae_buffer *buf = sae_cli_open(paths, n, tensor, what);
    if (!buf)
        return 1;
    int status = 0;
    int64_t bad_values = 0, first_bad = -1;
    if (!max_bytes || stored_bytes(buf) <= max_bytes) {
        status = cli_check(subsae_buffer_stats(buf, NULL, NULL, &bad_values, &first_bad),
                           "cannot scan the rows");
        /* Reading the first bad row gives the library's account of it
         * (file, row, column, value). */
        float *row = bad_values > 0 ? malloc((size_t)subsae_buffer_dim(buf) * sizeof *row) : NULL;
        if (!status && bad_values > 0 &&
            subsae_buffer_read(buf, first_bad, 1, row, subsae_buffer_dim(buf)) != SUBSAE_OK)
            status = cli_fail("%s: %s (%lld non-finite value%s in all); %s", what,
                              subsae_last_error(), (long long)bad_values,
                              bad_values > 1 ? "s" : "",
                              cli_nonfinite_hint ? cli_nonfinite_hint : "clean the file first");
        free(row);
    }
    subsae_buffer_free(buf);
    return status;
}

static const char *const precision_names[] = {"fp32", "bf16", "auto"};

int sae_cli_parse_precision(const char *flag, const char *value, int *out)
{
    for (int p = 0; p < 3; p++)
        if (!strcmp(value, precision_names[p])) {
            *out = p; /* SUBSAE_PRECISION_FP32, _BF16, _AUTO */
            return 0;
        }
    return cli_fail("%s %s: the precision is fp32, bf16 or auto", flag, value);
}

const char *sae_cli_precision_name(int precision)
{
    return precision >= 0 && precision < 3 ? precision_names[precision] : "unknown";
}

int sae_cli_set_precision(subsae_sae *sae, int precision)
{
    char doing[64];
    snprintf(doing, sizeof doing, "cannot run the encoder at --precision %s",
             sae_cli_precision_name(precision));
    return cli_check(subsae_sae_set_int(sae, SUBSAE_SAE_PRECISION, precision), doing);
}

void sae_cli_help_precision(FILE *out)
{
    cli_help_line(out, "--precision P",
                  "the encoder's product: fp32 (default), bf16 (bf16 weights and rows, fp32 "
                  "sums; needs AVX512_BF16 or AMX) or auto (bf16 where the CPU has it)");
}

double sae_cli_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- training progress ----------------------------------------------- */

void sae_cli_progress_start(struct sae_cli_progress *p, const subsae_trainer *t,
                            const char *label, int64_t total, int64_t first, bool quiet)
{
    p->t = t;
    snprintf(p->label, sizeof p->label, "%s", label);
    cli_progress_start(&p->bar, p->label, "tokens", total, quiet);
    p->bar.first = first;
}

/* The last step's own batch: what the run does now, not the window's
 * average over an epoch. */
static void fit_detail(const double *m, char *out, size_t size)
{
    snprintf(out, size, "step %lld, loss %.5g, EV %.3f, L0 %.2f",
             (long long)m[SUBSAE_METRIC_STEPS], m[SUBSAE_METRIC_LOSS],
             m[SUBSAE_METRIC_STEP_EXPLAINED_VARIANCE], m[SUBSAE_METRIC_STEP_L0]);
}

void sae_cli_progress_show(struct sae_cli_progress *p, const char *phase, int64_t done,
                           const double *metrics)
{
    if (p->bar.quiet || strcmp(phase, "fit") != 0)
        return;
    char detail[96];
    fit_detail(metrics, detail, sizeof detail);
    cli_progress_update(&p->bar, p->bar.first + done, detail);
}

int sae_cli_progress_callback(int event, const char *phase, int64_t done, int64_t total,
                              const char *message, void *user)
{
    (void)total, (void)message;
    struct sae_cli_progress *p = user;
    double m[SUBSAE_METRIC_COUNT];
    if (event == SUBSAE_EVENT_PROGRESS && !p->bar.quiet && strcmp(phase, "fit") == 0 &&
        subsae_trainer_metrics(p->t, m, SUBSAE_METRIC_COUNT) == SUBSAE_OK)
        sae_cli_progress_show(p, phase, done, m);
    return 0;
}

void sae_cli_progress_finish(struct sae_cli_progress *p, bool ok)
{
    double m[SUBSAE_METRIC_COUNT];
    if (!ok || subsae_trainer_metrics(p->t, m, SUBSAE_METRIC_COUNT) != SUBSAE_OK) {
        cli_progress_stop(&p->bar);
        return;
    }
    char detail[96];
    fit_detail(m, detail, sizeof detail);
    cli_progress_finish(&p->bar, (int64_t)m[SUBSAE_METRIC_TOKENS], detail);
}
