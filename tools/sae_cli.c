/* Helpers shared by the SAE subcommands. */
#include "sae_cli.h"

#include <math.h>
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
