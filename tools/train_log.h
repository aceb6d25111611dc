/* `subsae train --log FILE.jsonl`: one JSON object per line every N steps
 * (and at the end of the fit): the run's id, step, tokens, lr, loss and its
 * parts, the MSE, explained variance and L0 of the steps' own batches
 * since the previous line (means), dead fraction, tokens per second and
 * seconds since the fit began. A resumed run appends. */
#ifndef SUBSAE_CLI_TRAIN_LOG_H
#define SUBSAE_CLI_TRAIN_LOG_H

#include "cli.h"

struct train_log {
    FILE *file;          /* NULL: no log */
    const char *path;
    int64_t every;       /* steps */
    int64_t last_step;   /* the last step written */
    int64_t first_tokens;/* tokens when the fit began */
    double started;      /* when the fit began (sae_cli_now) */
    const char *run;     /* the run's id, on every line: runs may share one file */
    int64_t last_seen;   /* the last step added to the sums below */
    double batch_sum[3]; /* the steps' batch MSE, explained variance, L0 since the last line */
    int64_t batch_steps;
};

/* Open (create, or append to) path; 0, or 1 with a message (a directory,
 * not writable). */
int train_log_open(struct train_log *log, const char *path, int64_t every);

/* The fit of run `run` (its id, which outlives the log) begins now, at
 * `tokens` tokens. */
void train_log_start(struct train_log *log, int64_t tokens, const char *run);

/* After a step (metrics: SUBSAE_METRIC_COUNT values of the trainer): a line
 * when the step is a multiple of `every`, or when `force` (the last one)
 * and not yet written. Its MSE, explained variance and L0 are the means of
 * the steps' batch metrics since the previous line (the trainer's window
 * would lag by up to an epoch). 0, or 1 with a message when it cannot be
 * written. */
int train_log_step(struct train_log *log, const double *metrics, bool force);

void train_log_close(struct train_log *log);

#endif
