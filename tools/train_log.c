/* The JSONL metrics log of `subsae train` (see train_log.h). */
#include "train_log.h"

#include "sae_cli.h"

#include <errno.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>

int train_log_open(struct train_log *log, const char *path, int64_t every)
{
    memset(log, 0, sizeof *log);
    log->last_step = log->last_seen = -1;
    if (!path)
        return 0;
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return cli_fail("--log %s: is a directory; give a file name such as %s/train.jsonl",
                        path, path);
    log->file = fopen(path, "a");
    if (!log->file)
        return cli_fail("--log %s: cannot open for writing: %s", path, strerror(errno));
    log->path = path;
    log->every = every > 0 ? every : 10;
    return 0;
}

void train_log_start(struct train_log *log, int64_t tokens, const char *run)
{
    log->first_tokens = tokens;
    log->run = run;
    log->started = sae_cli_now();
}

/* The mean of batch metric i over the steps since the last line. */
static json_t *batch_mean(const struct train_log *log, int i)
{
    return sae_cli_number(log->batch_steps > 0 ? log->batch_sum[i] / (double)log->batch_steps
                                               : NAN);
}

int train_log_step(struct train_log *log, const double *m, bool force)
{
    if (!log->file)
        return 0;
    const int64_t step = (int64_t)m[SUBSAE_METRIC_STEPS];
    static const int batch_metrics[3] = {SUBSAE_METRIC_STEP_MSE,
                                         SUBSAE_METRIC_STEP_EXPLAINED_VARIANCE,
                                         SUBSAE_METRIC_STEP_L0};
    if (step != log->last_seen && isfinite(m[SUBSAE_METRIC_STEP_MSE])) {
        for (int i = 0; i < 3; i++)
            log->batch_sum[i] += m[batch_metrics[i]];
        log->batch_steps++;
    }
    log->last_seen = step;
    if (step == log->last_step || (!force && step % log->every != 0))
        return 0;
    log->last_step = step;
    const double seconds = sae_cli_now() - log->started;
    const double trained = m[SUBSAE_METRIC_TOKENS] - (double)log->first_tokens;
    json_t *line = json_pack(
        "{s:s, s:I, s:I, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:f}", "run",
        log->run ? log->run : "", "step", (json_int_t)step, "tokens",
        (json_int_t)m[SUBSAE_METRIC_TOKENS], "lr",
        sae_cli_number(m[SUBSAE_METRIC_LR]), "loss", sae_cli_number(m[SUBSAE_METRIC_LOSS]),
        "loss_mse", sae_cli_number(m[SUBSAE_METRIC_LOSS_MSE]), "loss_sparsity",
        sae_cli_number(m[SUBSAE_METRIC_LOSS_SPARSITY]), "loss_aux",
        sae_cli_number(m[SUBSAE_METRIC_LOSS_AUX]), "mse", batch_mean(log, 0),
        "explained_variance", batch_mean(log, 1), "l0", batch_mean(log, 2), "dead_fraction",
        sae_cli_number(m[SUBSAE_METRIC_DEAD_FRACTION]), "tokens_per_second",
        sae_cli_number(seconds > 0 ? trained / seconds : NAN), "seconds", seconds);
    memset(log->batch_sum, 0, sizeof log->batch_sum);
    log->batch_steps = 0;
    int rc = line ? json_dumpf(line, log->file, JSON_COMPACT | JSON_REAL_PRECISION(10)) : -1;
    json_decref(line);
    if (rc != 0 || fputc('\n', log->file) == EOF || fflush(log->file) != 0)
        return cli_fail("--log %s: cannot write: %s", log->path, strerror(errno));
    return 0;
}

void train_log_close(struct train_log *log)
{
    if (log->file)
        fclose(log->file);
    log->file = NULL;
}
