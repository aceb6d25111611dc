/* Helpers shared by the SAE subcommands (train, eval, encode). */
#ifndef SUBSAE_SAE_CLI_H
#define SUBSAE_SAE_CLI_H

#include "cli.h"
#include "progress.h"

/* A finite number, or JSON null for NaN / infinity. */
json_t *sae_cli_number(double value);

/* The training metrics object {"mse","fvu","explained_variance","l0",
 * "dead_fraction","dead_features","dense_fraction"} or the evaluation one
 * {"mse","fvu","explained_variance","l0","zero_frequency_fraction",
 * "dense_fraction"} from a SUBSAE_METRIC_COUNT array. */
json_t *sae_cli_final_json(const double *metrics);
json_t *sae_cli_eval_json(const double *metrics);

/* Open the input files as one buffer (shards in order). Prints the error
 * and returns NULL on failure. */
subsae_buffer *sae_cli_open(char **paths, int64_t n, const char *tensor);

/* Seconds of a monotonic clock. */
double sae_cli_now(void);

/* A training run's progress on a cli_progress bar (unit "tokens", detail
 * "step S, loss X, L0 Y"). The bar counts the tokens of the whole run:
 * `first` of `total` were trained before this fit (a resumed run), and
 * the fit's events count the rest. Only the fit's events (phase "fit") are
 * shown, not those of the subspace fit inside subsae_trainer_init. */
struct sae_cli_progress {
    struct cli_progress bar;
    const subsae_trainer *t;
    char label[64];
};

void sae_cli_progress_start(struct sae_cli_progress *p, const subsae_trainer *t,
                            const char *label, int64_t total, int64_t first, bool quiet);
/* One progress event of the fit, `metrics` the trainer's (SUBSAE_METRIC_COUNT
 * values). */
void sae_cli_progress_show(struct sae_cli_progress *p, const char *phase, int64_t done,
                           const double *metrics);
/* A subsae_callback (user: a struct sae_cli_progress) doing only that. */
int sae_cli_progress_callback(int event, const char *phase, int64_t done, int64_t total,
                              const char *message, void *user);
/* After the fit: the final state from the trainer's metrics when `ok`,
 * else only end the bar's line (an error message follows). */
void sae_cli_progress_finish(struct sae_cli_progress *p, bool ok);

#endif
