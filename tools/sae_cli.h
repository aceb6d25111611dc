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

/* A Matryoshka model's eval object (from sae_cli_eval_json) gets
 * "prefix_explained_variance": one per prefix on input/target (target
 * NULL: the input), the last the model's; a plain model's is left as it
 * is. 0, or 1 with the message printed. */
int sae_cli_add_prefix_ev(json_t *eval, const subsae_sae *sae, const subsae_buffer *input,
                          const subsae_buffer *target);

/* Open the input files as one buffer (shards in order). Prints the error
 * (naming the files as `what`, e.g. "the input", "--eval") and returns
 * NULL on failure. */
subsae_buffer *sae_cli_open(char **paths, int64_t n, const char *tensor, const char *what);

/* Load the model in `dir` for a command given target files or not: a
 * transcoder needs them (its reconstruction is of another site), an SAE
 * refuses them. Prints why and returns NULL on failure. */
subsae_sae *sae_cli_load(const char *dir, bool have_targets);

/* The widths of the rows given to a model: `input` must have d_in values
 * per row and `target` (may be NULL) d_out, and the same rows. 0, or 1
 * with a message naming the files. */
int sae_cli_check_rows(const subsae_sae *sae, const char *dir, const subsae_buffer *input,
                       const char *input_name, const subsae_buffer *target,
                       const char *target_name);

/* Scan the rows of `paths` (opened apart from any buffer in use, so that
 * the scan's mapped pages go when it ends) for NaN or infinity, when they
 * hold at most `max_bytes` bytes (0: any size); `what` names them in the
 * message ("--eval", "the input"). 0 when clean or skipped, 1 with a
 * message naming the first bad row. */
int sae_cli_scan(char **paths, int n, const char *tensor, const char *what,
                 int64_t max_bytes);

/* An output file must not be one the command reads: none of `inputs` and
 * `targets` (n of each; either may be NULL when its n is 0) and none of the
 * model files of `dir` (weights, cfg.json / config.json), whatever the
 * path that names them. 0, or 1 with a message naming `flag`. */
int sae_cli_check_not_read(const char *flag, const char *path, const char *dir,
                           char *const *inputs, int n_inputs, char *const *targets,
                           int n_targets);

/* An output file the command will write: not a directory, in a directory
 * that exists, its name ending in `extension` (the format it gets; `why`,
 * may be NULL, says why in the message). 0, or 1 with a message naming
 * `flag`. */
int sae_cli_check_output(const char *flag, const char *path, const char *extension,
                         const char *why);

/* The value of --precision (fp32, bf16 or auto) as SUBSAE_PRECISION_*
 * into *out: 0, or 1 with a message naming the flag and the choices. */
int sae_cli_parse_precision(const char *flag, const char *value, int *out);

/* The name of a SUBSAE_PRECISION_* value ("fp32", "bf16", "auto"). */
const char *sae_cli_precision_name(int precision);

/* Run the model's encoder at `precision` (SUBSAE_SAE_PRECISION): 0, or 1
 * with the library's reason (bf16 without native bf16, ...). */
int sae_cli_set_precision(subsae_sae *sae, int precision);

/* The help line of --precision. */
void sae_cli_help_precision(FILE *out);

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
