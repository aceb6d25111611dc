/* Data-parallel runs of the train and rank subcommands. `subsae` runs them
 * in one process (cli_dist is NULL); `subsae-mpi` (tools/mpi/main.c) sets
 * cli_dist to its MPI world before dispatching, and the same option
 * parsing, output and library calls then run on every worker, with the
 * library's collective hook attached:
 *   - the inputs are one data set split into contiguous row ranges, one per
 *     worker in rank order; or, when a path contains "{rank}", each worker
 *     opens its own files (the rank substituted) as its shard;
 *   - failures before the library's collective calls (a file one worker
 *     cannot open) are agreed with cli_dist_agree, so that no worker waits
 *     for one that gave up;
 *   - worker 0 alone prints, shows progress and writes files. */
#ifndef SUBSAE_CLI_DIST_H
#define SUBSAE_CLI_DIST_H

#include "cli.h"

struct cli_dist {
    subsae_allreduce_fn allreduce; /* handed to the library */
    void *user;
    int64_t rank, size;
    /* traffic through `allreduce`, kept by the program that supplies it */
    int64_t calls, bytes;
    double seconds;
};

/* NULL in a single process. */
extern struct cli_dist *cli_dist;

/* True on the worker that prints and writes (always in one process). */
bool cli_dist_root(void);

/* 0 when `status` is 0 on every worker, else 1 (a worker that did not
 * fail then stays silent: the failing one printed why). One process:
 * status itself. */
int cli_dist_agree(int status);

/* cli_dist_agree fused with the sum of one number over the workers (e.g.
 * their rows): every worker must call it the same number of times, the
 * failing ones too. */
int cli_dist_ready(int status, double *sum);

/* Sum n doubles over the workers in place; 0, or 1 with a message. */
int cli_dist_sum(double *values, int64_t n);

/* Whether any of the paths names per-worker files ("{rank}"). */
bool cli_dist_sharded(char *const *paths, int n);

/* A copy of path with every "{rank}" replaced by this worker's rank (the
 * path itself when none): free it with free(). NULL when out of memory. */
char *cli_dist_path(const char *path);

/* This worker's part of `buf`, when the inputs are one data set split
 * between the workers: a view of rows [rank n / size, (rank + 1) n /
 * size). One process, or sharded inputs: *part = buf and nothing is
 * allocated. Returns a library status (message printed by the caller). */
int cli_dist_part(subsae_buffer *buf, bool sharded, subsae_buffer **part);

/* {"workers": size, "allreduce": {"calls", "bytes", "seconds"}} to merge
 * into a command's JSON output, and the same as a line on stdout. */
json_t *cli_dist_json(void);
void cli_dist_print(void);

/* Attach the workers to a trainer / subspace (no-op in one process). */
int cli_dist_trainer(subsae_trainer *t);
int cli_dist_subspace(subsae_subspace *s);

#endif
