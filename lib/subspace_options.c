/* The option table of subsae_subspace: data only, so that options.c
 * (which publishes it) and subspace.c (whose setters check against it)
 * both depend on it without depending on each other. */
#include "options.h"

#include <float.h>

enum {
    DEFAULT_OVERSAMPLE = 10,
    DEFAULT_POWER_ITERS = 3,
    DEFAULT_BATCH_ROWS = 4096,
    MAX_POWER_ITERS = 1000
};

/* The estimator's options and results (published by subsae_option_*). */
enum { RO = SUBSAE_OPTION_READ_ONLY };
static const struct subsae__option subspace_options[] = {
    SUBSAE__INT_OPTION(
        SUBSAE_SUBSPACE_METHOD, "method", 0, 2, SUBSAE_METHOD_AUTO, SUBSAE_OPTION_CHOICE, 0,
        "SUBSAE_METHOD_*: auto (the cheaper by flop count), exact or randomized"),
    SUBSAE__INT_OPTION(SUBSAE_SUBSPACE_RANK, "rank", 0, INT64_MAX, 0,
                       SUBSAE_OPTION_ZERO_MEANS_AUTO, 0,
                       "directions wanted (k, at most d); 0 = all d"),
    SUBSAE__INT_OPTION(SUBSAE_SUBSPACE_OVERSAMPLE, "oversample", 0, INT64_MAX,
                       DEFAULT_OVERSAMPLE, 0, 0, "randomized: extra directions p"),
    SUBSAE__INT_OPTION(SUBSAE_SUBSPACE_POWER_ITERS, "power_iters", 0, MAX_POWER_ITERS,
                       DEFAULT_POWER_ITERS, 0, 0, "randomized: power iterations q"),
    SUBSAE__INT_OPTION(SUBSAE_SUBSPACE_SEED, "seed", INT64_MIN, INT64_MAX, 0, 0, 0,
                       "randomized: seed of the test matrix"),
    SUBSAE__INT_OPTION(SUBSAE_SUBSPACE_CENTER, "center", 0, 1, 1, 0, 0,
                       "1 = subtract the mean row"),
    SUBSAE__INT_OPTION(SUBSAE_SUBSPACE_BATCH_ROWS, "batch_rows", 1, INT32_MAX,
                       DEFAULT_BATCH_ROWS, 0, 0, "rows per streamed batch"),
    SUBSAE__DOUBLE_OPTION(SUBSAE_SUBSPACE_THRESHOLD, "threshold", 0.0, 1.0, 0.99,
                          SUBSAE_OPTION_MIN_EXCLUSIVE, 0,
                          "variance fraction tau of the default rank queries"),
    SUBSAE__INT_OPTION(SUBSAE_SUBSPACE_METHOD_USED, "method_used", 1, 2, 0, RO, 0,
                       "result: SUBSAE_METHOD_EXACT or _RANDOMIZED"),
    SUBSAE__INT_OPTION(SUBSAE_SUBSPACE_DIM, "dim", 1, INT32_MAX, 0, RO, 0, "result: d"),
    SUBSAE__INT_OPTION(SUBSAE_SUBSPACE_ROWS, "rows", 0, INT64_MAX, 0, RO, 0,
                       "result: rows fitted"),
    SUBSAE__INT_OPTION(SUBSAE_SUBSPACE_RANK_FOUND, "rank_found", 0, INT32_MAX, 0, RO, 0,
                       "result: directions available (d for exact)"),
    SUBSAE__DOUBLE_OPTION(SUBSAE_SUBSPACE_SECONDS, "seconds", 0.0, DBL_MAX, 0.0, RO, 0,
                          "result: wall time of the fit"),
};

const struct subsae__option *subsae__subspace_option_table(int64_t *n)
{
    *n = (int64_t)(sizeof subspace_options / sizeof subspace_options[0]);
    return subspace_options;
}
