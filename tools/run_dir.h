/* The directory a training run writes (--out, or the run resumed without
 * --out): one run owns it. It is created if missing and refused at once
 * when it is a file or cannot be written; a lock (flock on DIR/.subsae.lock,
 * released by the kernel when the process ends, however it ends) keeps a
 * second run out while this one writes, and names its holder; a model or
 * checkpoint of another run in it is refused unless --overwrite. */
#ifndef SUBSAE_CLI_RUN_DIR_H
#define SUBSAE_CLI_RUN_DIR_H

#include "cli.h"

/* The file names of a run directory. */
#define RUN_DIR_CHECKPOINT "checkpoint" /* the checkpoint's directory */
#define RUN_DIR_SPARSITY "sparsity.safetensors"

/* Create `dir` (one level) if missing (*created says so) and take its
 * lock, writing who holds it (pid, start time, command line) into the lock
 * file. Returns the lock's descriptor (held until run_dir_release or the
 * end of the process), or -1 with a message: not a directory, cannot be
 * created or written, or in use by another run (its holder named). */
int run_dir_lock(const char *dir, int argc, char **argv, bool *created);

/* Release the lock `fd` of `dir` (-1: none). A directory the run created
 * and left with nothing but the lock (it failed before saving anything)
 * goes, so that a failed run leaves no trace. */
void run_dir_release(const char *dir, int fd, bool created);

/* What a directory holds from an earlier run. */
struct run_dir_contents {
    bool model;      /* cfg.json or sae_weights.safetensors */
    bool checkpoint; /* checkpoint/checkpoint.json */
    char id[80];     /* the run's id ("" when it records none: libsubsae 0.1.0) */
    char started[40];
};
void run_dir_contents(const char *dir, struct run_dir_contents *c);

/* Remove the model, densities and checkpoint of an earlier run from
 * `dir` (--overwrite): 0, or 1 with a message. */
int run_dir_clear(const char *dir);

/* Remove the checkpoint of `dir` (DIR/checkpoint: its manifest first, then
 * its state files, then the directory when empty). 0, or 1 with a
 * message. */
int run_dir_remove_checkpoint(const char *dir);

/* A checkpoint directory's checkpoint.json (a new reference; its
 * "metadata" member is the run's record, "model" the model's widths), or
 * NULL with the message printed. */
json_t *run_dir_read_checkpoint(const char *checkpoint_dir);

/* The run id recorded in metadata ("run": {"id"}), or "". */
const char *run_dir_id(const json_t *metadata);

#endif
