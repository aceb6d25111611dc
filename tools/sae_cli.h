/* Helpers shared by the SAE subcommands (train, eval, encode). */
#ifndef SUBSAE_SAE_CLI_H
#define SUBSAE_SAE_CLI_H

#include "cli.h"

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

#endif
