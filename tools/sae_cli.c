/* Helpers shared by the SAE subcommands. */
#include "sae_cli.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
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

subsae_buffer *sae_cli_open(char **paths, int64_t n, const char *tensor)
{
    subsae_buffer *buf = NULL;
    int rc = n == 1 ? subsae_buffer_open(paths[0], tensor, &buf)
                    : subsae_buffer_open_shards((const char *const *)paths, n, tensor, &buf);
    if (cli_check(rc, "cannot open the input"))
        return NULL;
    return buf;
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

static void fit_detail(const double *m, char *out, size_t size)
{
    snprintf(out, size, "step %lld, loss %.5g, L0 %.2f", (long long)m[SUBSAE_METRIC_STEPS],
             m[SUBSAE_METRIC_LOSS], m[SUBSAE_METRIC_L0]);
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
