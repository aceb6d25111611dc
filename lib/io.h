/* Internal file plumbing shared by every reader and writer: crash-safe
 * writes, whole-file mapping, and the safetensors container (used for
 * activation files, SAE weights and checkpoints alike). */
#ifndef SUBSAE_IO_H
#define SUBSAE_IO_H

#include "internal.h"

/* ---- crash-safe writes (io_file.c) ----------------------------------
 * Data goes to a temporary file next to `path`; commit flushes it
 * (fsync), renames it over `path` and syncs the directory, so `path` holds
 * either the old or the new complete content, never a partial one. */
typedef struct subsae__atomic_file subsae__atomic_file;

int subsae__atomic_open(const char *path, subsae__atomic_file **out);
int subsae__atomic_write(subsae__atomic_file *f, const void *data, size_t n);
/* Commit and release; on failure the temporary file is removed. */
int subsae__atomic_commit(subsae__atomic_file *f);
/* Discard and release (NULL is a no-op). */
void subsae__atomic_abort(subsae__atomic_file *f);

/* Create directory `dir` if missing (one level). */
int subsae__make_dir(const char *dir);

/* Map a whole file read-only; an empty file gives map NULL, size 0. The
 * error message names the file. */
int subsae__map_file(const char *path, void **map, size_t *size);

/* "dir/name" (subsae__free it), or NULL when out of memory. */
char *subsae__path_join(const char *dir, const char *name);

/* ---- JSON files (io_json.c) ----------------------------------------- */

/* Parse a whole file as one JSON object (duplicate keys rejected): a
 * missing file is SUBSAE_E_IO, anything but an object SUBSAE_E_FORMAT,
 * Jansson out of memory SUBSAE_E_NOMEM. On success *out is the caller's
 * (json_decref). */
struct json_t;
int subsae__read_json_object(const char *path, struct json_t **out);

/* Parse `size` bytes of JSON text (duplicate keys rejected); NULL on
 * failure, with *out_of_memory telling an allocation failure from bad
 * text (then `error` says what is wrong). */
typedef struct json_error_t json_error_t;
struct json_t *subsae__json_parse(const char *text, size_t size, json_error_t *error,
                                  bool *out_of_memory);

/* ---- safetensors (io_safetensors.c) --------------------------------- */

/* Codes of the safetensors dtypes that have no SUBSAE_DTYPE_* (BOOL, U8,
 * I8, I16, U16, U32, I64, U64, C64, the F8/F6/F4 types) start here: the
 * container reads and writes them as opaque bytes, nothing converts them. */
enum { SUBSAE__DTYPE_OPAQUE = 256 };

/* The safetensors name of a dtype code ("F32", "I64", ...), or NULL. */
const char *subsae__safetensors_dtype_name(int dtype);

struct subsae__tensor_view {
    const char *name;
    int dtype; /* SUBSAE_DTYPE_* or an opaque code (above) */
    int ndim;
    int64_t shape[8];
    const void *data; /* little-endian elements, any alignment */
    size_t bytes;
};

/* Write tensors with optional string metadata (`metadata_keys`/
 * `metadata_values`, n_metadata pairs; may be 0), crash-safe. The data is
 * laid out by element size, largest first and in the given order within a
 * size, so that every offset is a multiple of its element size; the header
 * is padded with spaces to a multiple of 8 bytes. Names must be unique
 * UTF-8 and not "__metadata__"; `bytes` must equal dtype size x shape. */
int subsae__safetensors_write(const char *path, const struct subsae__tensor_view *tensors,
                              int64_t n_tensors, const char *const *metadata_keys,
                              const char *const *metadata_values, int64_t n_metadata);

/* The key of the header's metadata object, which no tensor may be named. */
#define SUBSAE__SAFETENSORS_METADATA_KEY "__metadata__"

/* Start writing a file of the one tensor `view`, whose data the caller
 * streams (view->data is not read): crash-safe open of `path` and the
 * header. On success the caller writes view->bytes and commits or aborts
 * *out; on failure nothing is left open. */
int subsae__safetensors_begin(const char *path, const struct subsae__tensor_view *view,
                              subsae__atomic_file **out);

/* A parsed, validated, memory-mapped safetensors file. Opening checks the
 * whole header (see io_safetensors.c) and fails with a SUBSAE_REASON_*
 * naming the file for any problem, including a dtype name the format does
 * not define; tensors of every safetensors dtype are accepted (the
 * non-float ones as opaque bytes, their byte size checked against the
 * shape). Readers of activations and weights check the dtype themselves.
 * Tensors are listed in file (offset) order; names, views and metadata
 * live until subsae__safetensors_close. */
typedef struct subsae__safetensors subsae__safetensors;

int subsae__safetensors_open(const char *path, subsae__safetensors **out);
void subsae__safetensors_close(subsae__safetensors *st);
int64_t subsae__safetensors_count(const subsae__safetensors *st);
const struct subsae__tensor_view *subsae__safetensors_tensor(const subsae__safetensors *st,
                                                             int64_t i);
/* NULL when absent (no error recorded). */
const struct subsae__tensor_view *subsae__safetensors_find(const subsae__safetensors *st,
                                                           const char *name);
/* Metadata value or NULL. */
const char *subsae__safetensors_metadata(const subsae__safetensors *st, const char *key);

#endif
