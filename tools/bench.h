/* Shared pieces of `subsae bench` (cmd_bench.c holds the table of
 * benchmarks; each benchmark may live in its own bench_<name>.c). */
#ifndef SUBSAE_BENCH_H
#define SUBSAE_BENCH_H

#include "cli.h"

/* Seconds of a monotonic clock. */
double bench_now(void);

/* Uniform in [-1, 1) from a small fast generator (benchmark data only has
 * to be the same from run to run). */
float bench_uniform(uint64_t *state);

/* Median, min and max (out[0..2]) of the double at `offset` in each of
 * the n rounds (structs of `round_size` bytes) at `rounds`; NaN when
 * out of memory. */
void bench_stats(const void *rounds, size_t round_size, int64_t n, size_t offset,
                 double out[3]);

/* [min, max] of bench_stats' out, for the *_range fields of the JSON. */
json_t *bench_range_json(const double s[3]);

/* A benchmark: parse argv (its options), run, append one JSON object to
 * `reports` and, when `print`, print a short table on stdout. Returns an
 * exit code. */
int bench_train(int argc, char **argv, json_t *reports, bool print);
int bench_encode(int argc, char **argv, json_t *reports, bool print);

#endif
