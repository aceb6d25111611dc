/* What a training run records about itself, as the trainer's metadata
 * (the library stores it in checkpoint.json and gives it to the model,
 * hence cfg.json): SAELens' hook_name, model_name and metadata, and under
 * "run" its id, start, the options in effect (learning rate, batch, seed,
 * dead window, precision, library version), its total length, and a
 * fingerprint of each data set it uses (paths, tensor, rows, width,
 * dtype, a hash of sampled rows) so that a resumed run can refuse other
 * data. */
#ifndef SUBSAE_CLI_RUN_RECORD_H
#define SUBSAE_CLI_RUN_RECORD_H

#include "cli.h"

/* The fingerprint of one data set: {"paths", "tensor", "rows", "width",
 * "dtype", "sample_hash"}; NULL with a message printed on failure. */
json_t *run_record_data(char *const *paths, int n, const char *tensor,
                        const subsae_buffer *buf);

/* Whether two fingerprints hold the same rows (rows, width and sampled
 * values; paths may differ: a file may have moved). */
bool run_record_same_data(const json_t *a, const json_t *b);

/* "FILE (131072 rows x 64, f16, sample 9f3c...)". */
void run_record_describe(const json_t *data, char *out, size_t size);

/* A new run id: UTC time, process and random bits ("20250103-074512-1a2b3c4d"). */
void run_record_new_id(char *out, size_t size);

/* The precision the run computes in, as recorded ("fp32"). The one place
 * to change when the library offers others. */
const char *run_record_precision(const subsae_trainer *t);

/* The file name of `path` without directory and extension, or the name
 * of its directory: SAELens' default hook and model names. */
void run_record_stem(const char *path, char *out, size_t size);
void run_record_parent(const char *path, char *out, size_t size);

#endif
