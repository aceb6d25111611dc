/*
 * libsubsae — sparse dictionary learning on transformer activations.
 *
 * One public header. Conventions that hold for every function below:
 *
 *  - Every fallible call returns an int status: SUBSAE_OK (0) or one of the
 *    negative SUBSAE_E_* codes. The codes are fixed and never renumbered.
 *    After a failure, subsae_last_error() gives a message with the detail
 *    (which file, which field, which value) and subsae_last_error_reason()
 *    a fine-grained SUBSAE_REASON_* code. Both are thread-local.
 *  - Handles are opaque, created by *_create / *_open / *_load and released
 *    by the matching *_free. Every *_free(NULL) is a no-op. A handle is used
 *    by one thread at a time; different handles may be used concurrently.
 *  - Output pointers are written only on success.
 *  - Sizes and counts are int64_t; enums are passed as int; options are set
 *    by typed setters keyed by fixed enum values; no varargs, no structs by
 *    value, so every language with a C FFI binds without a C compiler.
 *    Every compile-time constant is also available through a function.
 *  - Matrices are float32 row-major with an explicit row stride counted in
 *    elements (stride >= number of columns).
 *  - The library never prints, never exits and never aborts on bad input.
 *
 * MIT licence; see LICENSE.
 */
#ifndef SUBSAE_H
#define SUBSAE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The Makefile reads these three lines: they are the single source of the
 * version number (and of the SONAME major version). */
#define SUBSAE_VERSION_MAJOR 0
#define SUBSAE_VERSION_MINOR 1
#define SUBSAE_VERSION_PATCH 0

#define SUBSAE_VERSION_NUMBER \
    (SUBSAE_VERSION_MAJOR * 10000 + SUBSAE_VERSION_MINOR * 100 + SUBSAE_VERSION_PATCH)
#define SUBSAE__STR2(x) #x
#define SUBSAE__STR(x) SUBSAE__STR2(x)
#define SUBSAE_VERSION_STRING                                                   \
    SUBSAE__STR(SUBSAE_VERSION_MAJOR) "." SUBSAE__STR(SUBSAE_VERSION_MINOR) "." \
    SUBSAE__STR(SUBSAE_VERSION_PATCH)

#if defined(SUBSAE_BUILDING_LIBRARY) && defined(__GNUC__)
#define SUBSAE_API __attribute__((visibility("default")))
#else
#define SUBSAE_API
#endif

/* ===================================================================== */
/* Version                                                                */
/* ===================================================================== */

/** Version of the library actually linked, as MAJOR*10000 + MINOR*100 +
 *  PATCH (compare with SUBSAE_VERSION_NUMBER to detect a header/library
 *  mismatch). Never fails; thread-safe. */
SUBSAE_API unsigned subsae_version_number(void);

/** Version of the linked library as a static string "MAJOR.MINOR.PATCH".
 *  Never fails; thread-safe; the caller must not free it. */
SUBSAE_API const char *subsae_version_string(void);

/** Precisions of the encoder's product x W_enc^T (options
 *  SUBSAE_TRAIN_PRECISION, SUBSAE_SAE_PRECISION). FP32: float operands;
 *  BF16: bf16 copies of W_enc and of the rows with fp32 accumulation
 *  (oneDNN), everything else in fp32; AUTO: BF16 where the CPU computes
 *  bf16 products natively (AVX512_BF16 or AMX, as oneDNN reports), FP32
 *  elsewhere. */
enum subsae_precision {
    SUBSAE_PRECISION_FP32 = 0,
    SUBSAE_PRECISION_BF16 = 1,
    SUBSAE_PRECISION_AUTO = 2
};

/** The instruction set oneDNN runs the encoder's product with, as a
 *  lower-case name ("avx512_core_bf16", "avx512_core_amx", "avx2", ...;
 *  "none" if oneDNN cannot start). Honours oneDNN's ONEDNN_MAX_CPU_ISA
 *  environment variable. Never fails; thread-safe; static string. */
SUBSAE_API const char *subsae_encoder_isa(void);

/** The kernel that computes the encoder's product at `precision`
 *  (SUBSAE_PRECISION_*; AUTO is resolved first): "onednn <implementation>"
 *  (e.g. "onednn brg:avx512_core_bf16") or "openblas sgemm". Never fails;
 *  thread-safe; static string. */
SUBSAE_API const char *subsae_encoder_kernel(int precision);

/** What SUBSAE_PRECISION_AUTO means on this machine: SUBSAE_PRECISION_BF16
 *  or SUBSAE_PRECISION_FP32 (FP32 and BF16 are returned unchanged; any
 *  other value gives FP32). Never fails; thread-safe. */
SUBSAE_API int subsae_precision_resolve(int precision);

/* ===================================================================== */
/* Status codes and errors                                                */
/* ===================================================================== */

enum subsae_status {
    SUBSAE_OK = 0,
    SUBSAE_E_INVALID = -1,     /* invalid argument (NULL, negative size...) */
    SUBSAE_E_NOMEM = -2,       /* an allocation failed */
    SUBSAE_E_IO = -3,          /* open/read/write/rename/mmap failed */
    SUBSAE_E_FORMAT = -4,      /* a file or header is malformed */
    SUBSAE_E_NONFINITE = -5,   /* NaN or infinity in data or in training */
    SUBSAE_E_STATE = -6,       /* call not valid in the handle's state */
    SUBSAE_E_UNSUPPORTED = -7, /* valid but not supported (dtype, order...) */
    SUBSAE_E_RANGE = -8,       /* index, size or value out of range */
    SUBSAE_E_CANCELLED = -9    /* the caller's callback asked to stop */
};

/** Static English name of a status code ("invalid argument", ...); unknown
 *  codes give "unknown status". Never NULL; thread-safe. */
SUBSAE_API const char *subsae_status_string(int status);

/** Fine-grained reasons behind a failure (SQLite-style extended codes).
 *  A reason refines a status; new reasons may be appended, existing values
 *  never change. */
enum subsae_reason {
    SUBSAE_REASON_NONE = 0,
    SUBSAE_REASON_NULL_ARGUMENT = 1,
    SUBSAE_REASON_BAD_VALUE = 2,
    SUBSAE_REASON_OUT_OF_MEMORY = 3,
    SUBSAE_REASON_SYSTEM = 4,          /* errno-level I/O failure */
    SUBSAE_REASON_BAD_MAGIC = 5,
    SUBSAE_REASON_TRUNCATED_HEADER = 6,
    SUBSAE_REASON_HEADER_PAST_EOF = 7,
    SUBSAE_REASON_SHAPE_OVERFLOW = 8,
    SUBSAE_REASON_SIZE_MISMATCH = 9,   /* shape does not match the file size */
    SUBSAE_REASON_UNSUPPORTED_DTYPE = 10,
    SUBSAE_REASON_BIG_ENDIAN = 11,
    SUBSAE_REASON_FORTRAN_ORDER = 12,
    SUBSAE_REASON_BAD_HEADER = 13,     /* header text/JSON cannot be parsed */
    SUBSAE_REASON_OFFSETS_OUT_OF_RANGE = 14,
    SUBSAE_REASON_OFFSETS_OVERLAP = 15,
    SUBSAE_REASON_OFFSETS_MISALIGNED = 16,
    SUBSAE_REASON_DTYPE_SHAPE_MISMATCH = 17,
    SUBSAE_REASON_MISSING_TENSOR = 18,
    SUBSAE_REASON_DIM_MISMATCH = 19,   /* shards or buffers disagree on d */
    SUBSAE_REASON_NONFINITE_INPUT = 20,
    SUBSAE_REASON_DIVERGED = 21,       /* training produced NaN/inf */
    SUBSAE_REASON_WRONG_STATE = 22,
    SUBSAE_REASON_INDEX_OUT_OF_RANGE = 23,
    SUBSAE_REASON_CANCELLED = 24,
    SUBSAE_REASON_BAD_SHAPE = 25,      /* wrong number of dimensions, zero dim */
    SUBSAE_REASON_COLLECTIVE = 26,     /* the caller's all-reduce reported a failure */
    SUBSAE_REASON_PEER_FAILED = 27,    /* another worker failed (its status is returned) */
    SUBSAE_REASON_WORKERS_DIVERGED = 28 /* workers disagree (weights, dims, options) */
};

/** Static English name of a reason code. Never NULL; thread-safe. */
SUBSAE_API const char *subsae_reason_string(int reason);

/** Message describing the most recent failure on the calling thread, or ""
 *  if no call has failed since the last subsae_clear_error(). The pointer
 *  stays valid until the next libsubsae call on this thread; copy it to
 *  keep it. Never NULL. */
SUBSAE_API const char *subsae_last_error(void);

/** Status of the most recent failure on the calling thread (SUBSAE_OK if
 *  none). */
SUBSAE_API int subsae_last_error_status(void);

/** SUBSAE_REASON_* of the most recent failure on the calling thread
 *  (SUBSAE_REASON_NONE if none). */
SUBSAE_API int subsae_last_error_reason(void);

/** Forget the calling thread's last error. */
SUBSAE_API void subsae_clear_error(void);

/* ===================================================================== */
/* Threads                                                                */
/* ===================================================================== */

/** Set the number of threads used by the library's parallel loops and by
 *  OpenBLAS (process-wide). n <= 0 restores the default: the number of
 *  online processors. Returns SUBSAE_OK. Call it while no other libsubsae
 *  call is running. */
SUBSAE_API int subsae_set_num_threads(int n);

/** Number of threads the library currently uses (>= 1). Thread-safe. */
SUBSAE_API int subsae_get_num_threads(void);

/* ===================================================================== */
/* Option metadata                                                        */
/* ===================================================================== */

/** Objects with typed options (the `object` argument below). */
enum subsae_object {
    SUBSAE_OBJECT_TRAINER = 0,  /* enum subsae_train_option */
    SUBSAE_OBJECT_SUBSPACE = 1, /* enum subsae_subspace_option */
    SUBSAE_OBJECT_SAE = 2       /* enum subsae_sae_option */
};

/** Value type of an option: which typed setter/getter it takes. */
enum subsae_option_type { SUBSAE_OPTION_INT = 0, SUBSAE_OPTION_DOUBLE = 1 };

/** Flags of an option (bits; new bits may be added). */
enum subsae_option_flag {
    SUBSAE_OPTION_READ_ONLY = 1,      /* get only: a result, or fixed when the object is made */
    SUBSAE_OPTION_STRUCTURAL = 2,     /* trainer: cannot change after subsae_trainer_init */
    SUBSAE_OPTION_MIN_EXCLUSIVE = 4,  /* the value must be > min (else >= min) */
    SUBSAE_OPTION_MAX_EXCLUSIVE = 8,  /* the value must be < max (else <= max) */
    SUBSAE_OPTION_ZERO_MEANS_AUTO = 16, /* 0 lets the library choose (the description says how) */
    SUBSAE_OPTION_CHOICE = 32         /* int naming one of a fixed set (an enum of this header) */
};

/** The library's own description of every option of every object: the
 *  values its setters accept and the defaults a new object has come from
 *  this same table, so programs and bindings can build their option
 *  parsers, help texts and checks on it. (zstd's ZSTD_cParam_getBounds in
 *  spirit.) All functions here are thread-safe and never allocate; the
 *  strings are static.
 *
 *  subsae_option_count: number of options of `object` (read-only results
 *  included), or -1 for an unknown object.
 *  subsae_option_id: the enum value of the index-th option (0 <= index <
 *  count, in enum order), or -1. */
SUBSAE_API int subsae_option_count(int object);
SUBSAE_API int subsae_option_id(int object, int index);

/** The option of `object` called `name` (as in subsae_option_info, e.g.
 *  "dead_window"). Errors: SUBSAE_E_INVALID (NULL argument, unknown object
 *  or name; the message lists the names). */
SUBSAE_API int subsae_option_find(int object, const char *name, int *option);

/** Name (lower case, as written in checkpoint.json), type
 *  (SUBSAE_OPTION_*), flags (SUBSAE_OPTION_* bits) and a one-line
 *  description of an option; any output may be NULL. Errors:
 *  SUBSAE_E_INVALID (unknown object or option). */
SUBSAE_API int subsae_option_info(int object, int option, const char **name, int *type,
                                  int *flags, const char **description);

/** Bounds and default of an int option: the setter accepts min <= value
 *  <= max (some options also depend on others, e.g. SUBSAE_SAE_K <= d_sae;
 *  the description says so); default_value is the value of a new object
 *  (0 for read-only results). Any output may be NULL. Errors:
 *  SUBSAE_E_INVALID (unknown object or option, or a double option). */
SUBSAE_API int subsae_option_int_bounds(int object, int option, int64_t *min, int64_t *max,
                                        int64_t *default_value);

/** The same for a double option (exclusive ends are flagged
 *  SUBSAE_OPTION_MIN_EXCLUSIVE / MAX_EXCLUSIVE). Errors: SUBSAE_E_INVALID
 *  (unknown object or option, or an int option). */
SUBSAE_API int subsae_option_double_bounds(int object, int option, double *min, double *max,
                                           double *default_value);

/* ===================================================================== */
/* Progress and log callback                                              */
/* ===================================================================== */

/** Events reported to a subsae_callback. */
enum subsae_event {
    SUBSAE_EVENT_PROGRESS = 0, /* done of total units of work (tokens, rows) */
    SUBSAE_EVENT_LOG = 1       /* message is a human-readable log line */
};

/** Progress/log callback. `event` is a SUBSAE_EVENT_*; `phase` a short
 *  static name of the running phase ("fit", "gram", "init"...); `done` and
 *  `total` count units of work (total is -1 when unknown); `message` is a
 *  log line for SUBSAE_EVENT_LOG and NULL otherwise. It runs on the calling
 *  thread of the function that was given it, may call the const getters of
 *  the handle being processed, and returns 0 to continue or non-zero to ask
 *  the library to stop cleanly (the call then returns SUBSAE_E_CANCELLED
 *  with the handle in a consistent state). */
typedef int (*subsae_callback)(int event, const char *phase, int64_t done,
                               int64_t total, const char *message, void *user);

/* ===================================================================== */
/* Element types and ownership                                            */
/* ===================================================================== */

/** Element types accepted on input (widened to float32) and offered on
 *  output. */
enum subsae_dtype {
    SUBSAE_DTYPE_F32 = 0,
    SUBSAE_DTYPE_F16 = 1,  /* IEEE 754 binary16 */
    SUBSAE_DTYPE_BF16 = 2, /* bfloat16 */
    SUBSAE_DTYPE_F64 = 3,
    SUBSAE_DTYPE_I32 = 4   /* only for index outputs (encode) */
};

/** Static name of a dtype ("f32", "f16", "bf16", "f64", "i32"); "unknown"
 *  otherwise. */
SUBSAE_API const char *subsae_dtype_name(int dtype);

/** Whether the library copies caller memory or borrows it (the caller then
 *  keeps it alive and unchanged for the lifetime of the handle). */
enum subsae_ownership { SUBSAE_COPY = 0, SUBSAE_BORROW = 1 };

/* ===================================================================== */
/* Collectives: data-parallel workers                                     */
/* ===================================================================== */

/** An all-reduce supplied by the caller (MPI_Allreduce, NCCL, Gloo, ...;
 *  see examples/mpi/): replace `count` values of `dtype` at `data` (F32 or
 *  F64; nothing else is ever asked) by their element-wise SUM over all
 *  workers, in place, on every worker. Return 0 on success, non-zero on
 *  failure. It is called on the thread that called the library, with the
 *  same sequence of (count, dtype) on every worker; `count` may exceed
 *  2^31 (split it if the transport cannot). For reproducible results the
 *  sum must be deterministic for a given (count, worker count), as
 *  MPI_Allreduce is for a fixed communicator.
 *
 *  With a collective attached (subsae_trainer_set_collective,
 *  subsae_subspace_set_collective) a handle becomes one of `size` workers
 *  (`rank` in [0, size)): every worker holds its own rows, and each call
 *  that takes data (subspace fit; trainer init, step, fit) is collective:
 *  every worker makes it, in the same order, with the same options. The
 *  workers' rows form one global data set in rank order (rank 0's rows
 *  first). Failures are agreed: when a worker fails (bad row, I/O error,
 *  cancel) every worker's call fails; the failing worker keeps its own
 *  status and message, the others return the same status with reason
 *  SUBSAE_REASON_PEER_FAILED and a message naming the worker. A failure
 *  of the all-reduce itself gives SUBSAE_E_IO with reason
 *  SUBSAE_REASON_COLLECTIVE (the transport then usually cannot recover).
 *  The core library never links MPI or any other transport. */
typedef int (*subsae_allreduce_fn)(void *data, int64_t count, int dtype, void *user);

/* ===================================================================== */
/* Activation buffers                                                     */
/* ===================================================================== */

/** A logical n x d float32 matrix of activations: rows are tokens. Its rows
 *  may live in library memory (growable), in caller memory (borrowed), or
 *  in files (.npy, safetensors; several shards form one buffer), which are
 *  memory-mapped and widened to float32 batch by batch, so a buffer larger
 *  than RAM works. Non-finite values are never passed on silently: a read
 *  touching a row with NaN or infinity fails with SUBSAE_E_NONFINITE and the
 *  row number in subsae_last_error(), unless the caller asked to skip such
 *  rows (subsae_buffer_skip_nonfinite).
 *  Thread-safety: the const functions (read, gather, stats, queries) may run
 *  concurrently on one buffer; the others need exclusive use. */
typedef struct subsae_buffer subsae_buffer;

/** Create an empty growable buffer of width `dim` (> 0) in library memory.
 *  Errors: SUBSAE_E_INVALID, SUBSAE_E_NOMEM. */
SUBSAE_API int subsae_buffer_create(int64_t dim, subsae_buffer **out);

/** Append `n_rows` rows of `dtype` (F32, F16, BF16 or F64) to a growable
 *  buffer; row i starts at element i * row_stride of `rows` (row_stride >=
 *  dim). The data is widened and copied. Non-finite values are rejected
 *  (SUBSAE_E_NONFINITE, nothing appended) unless the buffer skips them.
 *  Errors: SUBSAE_E_INVALID, SUBSAE_E_STATE (not a growable buffer),
 *  SUBSAE_E_NOMEM, SUBSAE_E_NONFINITE. */
SUBSAE_API int subsae_buffer_append(subsae_buffer *buf, const void *rows, int dtype,
                                    int64_t n_rows, int64_t row_stride);

/** A buffer over caller memory: n_rows x dim elements of `dtype`, row
 *  stride `row_stride` elements. SUBSAE_BORROW keeps a pointer (no copy;
 *  non-F32 data is widened on each read); SUBSAE_COPY copies into library
 *  memory as float32 (then the buffer is growable).
 *  Errors: SUBSAE_E_INVALID, SUBSAE_E_NOMEM, SUBSAE_E_NONFINITE (copy). */
SUBSAE_API int subsae_buffer_wrap(const void *data, int dtype, int64_t n_rows, int64_t dim,
                                  int64_t row_stride, int ownership, subsae_buffer **out);

/** Open one activation file: `.npy` (versions 1-3; <f4, <f2, <f8; C order)
 *  or safetensors (F32, F16, BF16, F64), chosen by content, not by name.
 *  A 2-D array is rows x dim; an N-D array is flattened to rows x last dim.
 *  `tensor` names the safetensors tensor; NULL picks the only tensor (an
 *  error if there are several) and is ignored for .npy.
 *  Errors: SUBSAE_E_INVALID, SUBSAE_E_IO, SUBSAE_E_FORMAT,
 *  SUBSAE_E_UNSUPPORTED, SUBSAE_E_RANGE, SUBSAE_E_NOMEM; the message names
 *  the file and the problem, the reason says which. */
SUBSAE_API int subsae_buffer_open(const char *path, const char *tensor, subsae_buffer **out);

/** Open `n_paths` files (shards) as one logical buffer, rows in the given
 *  order. All shards must have the same last dimension
 *  (SUBSAE_E_FORMAT with reason SUBSAE_REASON_DIM_MISMATCH otherwise). */
SUBSAE_API int subsae_buffer_open_shards(const char *const *paths, int64_t n_paths,
                                         const char *tensor, subsae_buffer **out);

/** A buffer over logical rows [first_row, first_row + n_rows) of `buf`
 *  that shares its storage (nothing is copied): e.g. the last rows of a
 *  file held out for evaluation. `buf` must outlive the view, and a
 *  growable `buf` must not be appended to while the view exists. The view
 *  keeps `buf`'s sources (paths, formats) and its non-finite policy.
 *  Errors: SUBSAE_E_INVALID, SUBSAE_E_RANGE, SUBSAE_E_NOMEM. */
SUBSAE_API int subsae_buffer_view(const subsae_buffer *buf, int64_t first_row, int64_t n_rows,
                                  subsae_buffer **out);

/** Release a buffer (unmaps files, frees copies). NULL is a no-op. */
SUBSAE_API void subsae_buffer_free(subsae_buffer *buf);

/** Number of rows (after skipping non-finite rows, if asked), or -1 if buf
 *  is NULL. */
SUBSAE_API int64_t subsae_buffer_rows(const subsae_buffer *buf);

/** Width d, or -1 if buf is NULL. */
SUBSAE_API int64_t subsae_buffer_dim(const subsae_buffer *buf);

/** Copy rows [first_row, first_row + n_rows) as float32 into `out` (row
 *  stride out_stride >= dim). Errors: SUBSAE_E_INVALID, SUBSAE_E_RANGE,
 *  SUBSAE_E_NONFINITE (message gives the row), SUBSAE_E_IO. */
SUBSAE_API int subsae_buffer_read(const subsae_buffer *buf, int64_t first_row, int64_t n_rows,
                                  float *out, int64_t out_stride);

/** Copy the rows listed in `rows` (any order, repeats allowed) into `out`.
 *  Errors as subsae_buffer_read. */
SUBSAE_API int subsae_buffer_gather(const subsae_buffer *buf, const int64_t *rows,
                                    int64_t n_rows, float *out, int64_t out_stride);

/** Scan the buffer once and, from now on, leave out every row that holds a
 *  NaN or infinity (row numbers then count only the rows kept). Stores the
 *  indices of the rows left out (8 bytes each). `skipped` (may be NULL)
 *  receives how many rows were left out. Errors: SUBSAE_E_INVALID,
 *  SUBSAE_E_NOMEM, SUBSAE_E_IO. */
SUBSAE_API int subsae_buffer_skip_nonfinite(subsae_buffer *buf, int64_t *skipped);

/** Statistics in one streaming pass over all stored rows (rows with
 *  non-finite values are counted, not rejected, and left out of the mean):
 *  `mean` (dim floats, may be NULL) the mean row, `mean_norm` the mean
 *  Euclidean row norm, `nonfinite_values` the number of NaN/inf elements and
 *  `first_nonfinite_row` the first row holding one (-1 if none). Any output
 *  pointer may be NULL. Errors: SUBSAE_E_INVALID, SUBSAE_E_NOMEM,
 *  SUBSAE_E_IO. */
SUBSAE_API int subsae_buffer_stats(const subsae_buffer *buf, float *mean, double *mean_norm,
                                   int64_t *nonfinite_values, int64_t *first_nonfinite_row);

/** A 64-bit fingerprint of a buffer's content, to tell whether two
 *  buffers hold the same data without comparing them: a hash (FNV-1a) of
 *  the row count, the width and `sample_rows` rows spread evenly over the
 *  buffer, first and last included (all rows when it has fewer), read as
 *  float32. It costs reading those rows; equal content gives equal
 *  fingerprints on every machine, and a different size or a different
 *  sampled row gives a different one (up to hash collisions). Errors:
 *  SUBSAE_E_INVALID (NULL, sample_rows < 1), SUBSAE_E_NONFINITE (a sampled
 *  row holds NaN or infinity: the message gives its number), SUBSAE_E_IO,
 *  SUBSAE_E_NOMEM. */
SUBSAE_API int subsae_buffer_fingerprint(const subsae_buffer *buf, int64_t sample_rows,
                                         uint64_t *out);

/** Write the buffer as a 2-D .npy file (dtype F32, F16 or F64) or as a
 *  safetensors file holding one 2-D tensor named `tensor` (F32, F16, BF16,
 *  F64). Files are written to a temporary name, flushed and renamed, so a
 *  crash never leaves a partial file under `path`. Narrowing rounds to
 *  nearest even; a finite value that would overflow F16/BF16 is refused
 *  (SUBSAE_E_RANGE, row and column in the message) rather than written as
 *  infinity. .npy has no bfloat16 (SUBSAE_E_UNSUPPORTED). Errors:
 *  SUBSAE_E_INVALID, SUBSAE_E_UNSUPPORTED, SUBSAE_E_IO, SUBSAE_E_NONFINITE,
 *  SUBSAE_E_RANGE, SUBSAE_E_NOMEM. */
SUBSAE_API int subsae_buffer_save_npy(const subsae_buffer *buf, const char *path, int dtype);
SUBSAE_API int subsae_buffer_save_safetensors(const subsae_buffer *buf, const char *path,
                                              const char *tensor, int dtype);

/** Kind of storage behind a buffer's source. */
enum subsae_format {
    SUBSAE_FORMAT_MEMORY = 0,
    SUBSAE_FORMAT_NPY = 1,
    SUBSAE_FORMAT_SAFETENSORS = 2
};

/** Static name of a format ("memory", "npy", "safetensors"). */
SUBSAE_API const char *subsae_format_name(int format);

/** Sources of a buffer: 1 for memory buffers, one per file for shards.
 *  Returns the count, or -1 if buf is NULL. */
SUBSAE_API int64_t subsae_buffer_source_count(const subsae_buffer *buf);

/** Describe source `i`: its path (NULL for memory; the string lives as long
 *  as the buffer), format, stored dtype, and shape as stored (`shape` gets
 *  up to `max_dims` sizes, `ndim` the true number of dimensions). Any output
 *  may be NULL. Errors: SUBSAE_E_INVALID, SUBSAE_E_RANGE. */
SUBSAE_API int subsae_buffer_source_info(const subsae_buffer *buf, int64_t i, const char **path,
                                         int *format, int *dtype, int *ndim, int64_t *shape,
                                         int max_dims);

/* ---- shuffled batches ---------------------------------------------- */

/** Iterator over a buffer in batches, epoch after epoch. With
 *  SUBSAE_BATCH_SHUFFLE each epoch visits the rows in a fresh permutation
 *  drawn from (seed, epoch): the same seed gives the same batches on every
 *  machine. With SUBSAE_BATCH_DROP_LAST an epoch's last, smaller batch is
 *  skipped. Memory: one int64 per row when shuffling. The buffer must
 *  outlive the iterator. */
typedef struct subsae_batches subsae_batches;

enum subsae_batch_flags { SUBSAE_BATCH_SHUFFLE = 1, SUBSAE_BATCH_DROP_LAST = 2 };

/** Create an iterator. Errors: SUBSAE_E_INVALID (batch_size < 1, unknown
 *  flag bits, empty buffer, DROP_LAST with batch_size > rows),
 *  SUBSAE_E_NOMEM. */
SUBSAE_API int subsae_batches_create(const subsae_buffer *buf, int64_t batch_size, uint64_t seed,
                                     int flags, subsae_batches **out);

/** Row indices of the next batch into `rows` (room for batch_size);
 *  `n_rows` gets the batch's size and `epoch` (may be NULL) the epoch it
 *  belongs to (0-based). Use it to take the same rows from two buffers
 *  (transcoders). Errors: SUBSAE_E_INVALID. */
SUBSAE_API int subsae_batches_next_indices(subsae_batches *it, int64_t *rows, int64_t *n_rows,
                                           int64_t *epoch);

/** The next batch's rows as float32 into `out` (batch_size x dim, stride
 *  out_stride). Errors: as subsae_batches_next_indices and
 *  subsae_buffer_gather. */
SUBSAE_API int subsae_batches_next(subsae_batches *it, float *out, int64_t out_stride,
                                   int64_t *n_rows, int64_t *epoch);

/** Where the iterator stands: the epoch and the number of rows of that
 *  epoch already handed out. Errors: SUBSAE_E_INVALID. */
SUBSAE_API int subsae_batches_tell(const subsae_batches *it, int64_t *epoch, int64_t *position);

/** Move to (epoch, position), as returned by subsae_batches_tell, so that a
 *  resumed run sees the batches it would have seen. Errors:
 *  SUBSAE_E_INVALID, SUBSAE_E_RANGE. */
SUBSAE_API int subsae_batches_seek(subsae_batches *it, int64_t epoch, int64_t position);

/** Release an iterator. NULL is a no-op. */
SUBSAE_API void subsae_batches_free(subsae_batches *it);

/* ===================================================================== */
/* Synthetic activations with a known dictionary                          */
/* ===================================================================== */

/** Generate `tokens` rows of width `dim` made of sparse combinations of a
 *  known dictionary: `features` unit atoms drawn at random inside a random
 *  `subspace_dim`-dimensional subspace (so the data has an active subspace
 *  of exactly that dimension, like attention outputs), `k` distinct atoms
 *  per row with coefficients uniform in [0.5, 1.5], plus a constant mean
 *  offset of norm about 1 and isotropic Gaussian noise of standard
 *  deviation 0.01 per dimension. Deterministic in `seed` on every machine.
 *  `out` gets a new growable buffer (the caller frees it); `dictionary`
 *  (may be NULL) receives the atoms, features x dim row-major.
 *  Errors: SUBSAE_E_INVALID (sizes: 1 <= subspace_dim <= dim,
 *  1 <= k <= features, tokens >= 1), SUBSAE_E_NOMEM. */
SUBSAE_API int subsae_synth(int64_t dim, int64_t subspace_dim, int64_t features, int64_t k,
                            int64_t tokens, uint64_t seed, subsae_buffer **out,
                            float *dictionary);

/* ===================================================================== */
/* Subspace estimator and effective rank                                  */
/* ===================================================================== */

/** Spectrum and principal directions of a buffer's (centred) rows.
 *  Methods: exact (mean and Gram matrix X^T X accumulated in double in one
 *  streaming pass, then a LAPACK symmetric eigensolve), randomized
 *  (Halko-Martinsson-Tropp subspace iteration on the centred Gram operator,
 *  one pass per iteration), or auto (the cheaper of the two by flop count,
 *  reported by SUBSAE_SUBSPACE_METHOD_USED). Memory is independent of the
 *  number of rows. Variances are eigenvalues of the covariance with the
 *  1/(n-1) normalisation; the total variance (trace) is exact for every
 *  method. */
typedef struct subsae_subspace subsae_subspace;

enum subsae_subspace_method {
    SUBSAE_METHOD_AUTO = 0,
    SUBSAE_METHOD_EXACT = 1,
    SUBSAE_METHOD_RANDOMIZED = 2
};

/** Options (set before fit) and results (read after fit) of a subspace. */
enum subsae_subspace_option {
    SUBSAE_SUBSPACE_METHOD = 0,      /* int, SUBSAE_METHOD_*, default AUTO */
    SUBSAE_SUBSPACE_RANK = 1,        /* int k: directions wanted; 0 (default) = all d */
    SUBSAE_SUBSPACE_OVERSAMPLE = 2,  /* int p, default 10 */
    SUBSAE_SUBSPACE_POWER_ITERS = 3, /* int q, default 3 */
    SUBSAE_SUBSPACE_SEED = 4,        /* int, default 0 */
    SUBSAE_SUBSPACE_CENTER = 5,      /* int 0/1, default 1 */
    SUBSAE_SUBSPACE_BATCH_ROWS = 6,  /* int rows per streamed batch, default 4096 */
    SUBSAE_SUBSPACE_THRESHOLD = 7,   /* double tau for the default rank queries, 0.99 */
    /* read-only results */
    SUBSAE_SUBSPACE_METHOD_USED = 100, /* int, EXACT or RANDOMIZED */
    SUBSAE_SUBSPACE_DIM = 101,         /* int d */
    SUBSAE_SUBSPACE_ROWS = 102,        /* int rows fitted */
    SUBSAE_SUBSPACE_RANK_FOUND = 103,  /* int directions available (d for exact) */
    SUBSAE_SUBSPACE_SECONDS = 104      /* double, wall time of the fit */
};

/** Create an estimator with default options. Errors: SUBSAE_E_INVALID,
 *  SUBSAE_E_NOMEM. */
SUBSAE_API int subsae_subspace_create(subsae_subspace **out);

/** Release an estimator. NULL is a no-op. */
SUBSAE_API void subsae_subspace_free(subsae_subspace *s);

/** Typed option setters/getters. Errors: SUBSAE_E_INVALID (unknown option,
 *  wrong type, value out of range), SUBSAE_E_STATE (result not yet
 *  available). */
SUBSAE_API int subsae_subspace_set_int(subsae_subspace *s, int option, int64_t value);
SUBSAE_API int subsae_subspace_get_int(const subsae_subspace *s, int option, int64_t *value);
SUBSAE_API int subsae_subspace_set_double(subsae_subspace *s, int option, double value);
SUBSAE_API int subsae_subspace_get_double(const subsae_subspace *s, int option, double *value);

/** Progress callback for fits (NULL removes it). */
SUBSAE_API int subsae_subspace_set_callback(subsae_subspace *s, subsae_callback callback,
                                            void *user);

/** Make the estimator worker `rank` of `size` (see subsae_allreduce_fn):
 *  subsae_subspace_fit then fits the union of the workers' buffers, in
 *  rank order, and every worker gets the same results (ROWS counts all
 *  rows). Exact: the mean, the Gram matrix (upper triangle) and the sums
 *  of squares (the trace) are all-reduced once; randomized: the d x (k+p)
 *  product and the column sums of every pass. The pilot shift is the first
 *  batch of the lowest rank holding rows. A worker may hold no rows (an
 *  empty buffer of the right width); the union needs 2. fn NULL detaches
 *  (size must then be 1, rank 0). Errors: SUBSAE_E_INVALID (size < 1, rank
 *  outside [0, size), fn NULL with size > 1). */
SUBSAE_API int subsae_subspace_set_collective(subsae_subspace *s, subsae_allreduce_fn fn,
                                              int64_t rank, int64_t size, void *user);

/** Fit on all rows of `buf` (replaces any earlier fit). A call rejected
 *  with SUBSAE_E_INVALID or SUBSAE_E_UNSUPPORTED changes nothing; any
 *  later failure, SUBSAE_E_CANCELLED included, leaves the estimator
 *  unfitted and reusable. Errors: SUBSAE_E_INVALID (fewer than 2 rows,
 *  k > d), SUBSAE_E_UNSUPPORTED (d > 2^31 - 1), SUBSAE_E_NONFINITE,
 *  SUBSAE_E_NOMEM, SUBSAE_E_IO, SUBSAE_E_CANCELLED. */
SUBSAE_API int subsae_subspace_fit(subsae_subspace *s, const subsae_buffer *buf);

/** The first `count` (<= RANK_FOUND) variances in descending order; the
 *  singular values of the centred matrix (sqrt((n-1) * variance)); the
 *  explained-variance ratios (variance / total). Errors: SUBSAE_E_STATE
 *  (not fitted), SUBSAE_E_RANGE, SUBSAE_E_INVALID. */
SUBSAE_API int subsae_subspace_variances(const subsae_subspace *s, double *out, int64_t count);
SUBSAE_API int subsae_subspace_singular_values(const subsae_subspace *s, double *out,
                                               int64_t count);
SUBSAE_API int subsae_subspace_explained_ratios(const subsae_subspace *s, double *out,
                                                int64_t count);

/** Total variance (trace of the covariance), exact for every method. */
SUBSAE_API int subsae_subspace_total_variance(const subsae_subspace *s, double *out);

/** Mean row (d floats; zeros when centring is off). */
SUBSAE_API int subsae_subspace_mean(const subsae_subspace *s, float *out);

/** The top `k` principal directions as k rows of d floats (orthonormal),
 *  row i at out + i * out_stride. */
SUBSAE_API int subsae_subspace_basis(const subsae_subspace *s, int64_t k, float *out,
                                     int64_t out_stride);

/** Smallest r whose top-r variances hold a fraction tau (0 < tau <= 1) of
 *  the total (0 when the total is 0: all rows equal). `exact` (may be
 *  NULL) gets 1 when r is certain, 0 when the method found fewer
 *  directions than r needs (then r is a lower bound: RANK_FOUND + 1).
 *  Errors: SUBSAE_E_STATE, SUBSAE_E_INVALID. */
SUBSAE_API int subsae_subspace_effective_rank(const subsae_subspace *s, double tau, int64_t *r,
                                              int *exact);

/** Entropy effective rank exp(-sum p_i log p_i), p_i = sigma_i / sum sigma_j
 *  (Roy & Vetterli 2007). `exact` gets 0 when not all singular values are
 *  known (randomized with k < d: the tail is left out). */
SUBSAE_API int subsae_subspace_entropy_rank(const subsae_subspace *s, double *rank, int *exact);

/** Coordinates of n rows in the top-k basis: coords = (x - mean) B_k^T,
 *  n x k with stride coords_stride. */
SUBSAE_API int subsae_subspace_project(const subsae_subspace *s, const float *x, int64_t n,
                                       int64_t x_stride, int64_t k, float *coords,
                                       int64_t coords_stride);

/** Rows back from coordinates: x = coords B_k + mean. */
SUBSAE_API int subsae_subspace_reconstruct(const subsae_subspace *s, const float *coords,
                                           int64_t n, int64_t coords_stride, int64_t k, float *x,
                                           int64_t x_stride);

/* ===================================================================== */
/* Sparse autoencoders and transcoders                                    */
/* ===================================================================== */

/** A sparse dictionary model: encoder W_enc (d_sae x d_in), b_enc (d_sae),
 *  decoder W_dec (d_sae x d_out), b_dec (d_out), per-feature threshold
 *  (d_sae; JumpReLU and BatchTopK), and input/output activation scales.
 *  d_in == d_out is an SAE, d_in != d_out (or a different target) a
 *  transcoder. Both weight matrices are row-major with one contiguous row
 *  per feature. The stored weights act on scaled activations x * input_scale
 *  and reconstruct target * output_scale; encode/decode/evaluate take raw
 *  activations and apply the scales, and subsae_sae_save folds them into
 *  the weights so that the saved model works on raw activations. */
typedef struct subsae_sae subsae_sae;

enum subsae_activation {
    SUBSAE_ACT_TOPK = 0,      /* keep the k largest pre-activations, ReLU */
    SUBSAE_ACT_BATCHTOPK = 1, /* top k*batch over a batch; threshold at inference */
    SUBSAE_ACT_JUMPRELU = 2,  /* z = pre * (pre > threshold) */
    SUBSAE_ACT_RELU = 3,      /* z = max(pre, 0) */
    SUBSAE_ACT_GATED = 4      /* gated SAE (Rajamanoharan et al. 2024; SAELens "gated"):
                                 z = [pre > 0] * max(exp(r_mag) * (pre - b_enc) + b_mag, 0)
                                 where pre = (x - b_dec) W_enc^T + b_enc; b_enc is the gate
                                 bias (SAELens b_gate), r_mag and b_mag are per feature
                                 (SUBSAE_PARAM_R_MAG, SUBSAE_PARAM_B_MAG) */
};

/** Static name of an activation ("topk", "batchtopk", "jumprelu", "relu", "gated"). */
SUBSAE_API const char *subsae_activation_name(int activation);

/** Model parameters, for get/set and sizes. */
enum subsae_param {
    SUBSAE_PARAM_W_ENC = 0,     /* d_sae x d_in */
    SUBSAE_PARAM_B_ENC = 1,     /* d_sae */
    SUBSAE_PARAM_W_DEC = 2,     /* d_sae x d_out */
    SUBSAE_PARAM_B_DEC = 3,     /* d_out */
    SUBSAE_PARAM_THRESHOLD = 4, /* d_sae */
    SUBSAE_PARAM_R_MAG = 5,     /* d_sae, gated models only (else size -1): log-scale of the
                                   magnitude path's encoder rows */
    SUBSAE_PARAM_B_MAG = 6      /* d_sae, gated models only (else size -1): magnitude bias */
};

/** Model options. */
enum subsae_sae_option {
    SUBSAE_SAE_D_IN = 0,           /* int, read-only */
    SUBSAE_SAE_D_OUT = 1,          /* int, read-only */
    SUBSAE_SAE_D_SAE = 2,          /* int, read-only */
    SUBSAE_SAE_ACTIVATION = 3,     /* int, read-only */
    SUBSAE_SAE_K = 4,              /* int, TopK/BatchTopK k (default 32) */
    SUBSAE_SAE_APPLY_B_DEC_TO_INPUT = 5, /* int 0/1: pre = (x - b_dec) W_enc^T + b_enc;
                                            default 1 when d_in == d_out */
    SUBSAE_SAE_RANK_BY_DECODER_NORM = 6, /* int 0/1: the activation sees pre * |W_dec row|
                                            (lm-saes' sparsity_include_decoder_norm):
                                            TopK ranks by it, JumpReLU / BatchTopK
                                            compare it with the threshold; the code is
                                            still pre; default 0 */
    SUBSAE_SAE_INPUT_SCALE = 7,    /* double, default 1 */
    SUBSAE_SAE_OUTPUT_SCALE = 8,   /* double, default 1 */
    SUBSAE_SAE_TRANSCODER = 9,     /* int 0/1: the model maps one site to another (its
                                      target is not its input), so evaluating it needs
                                      the target site's rows. Default 1 when d_in !=
                                      d_out (then it cannot be 0), else 0; the trainer
                                      sets it for a transcoder; saved in cfg.json and
                                      restored by subsae_sae_load (also from SAELens'
                                      transcoder architectures, sparsify's transcode and
                                      lm-saes' distinct hook points) */
    SUBSAE_SAE_PRECISION = 10,     /* int SUBSAE_PRECISION_*: the precision of the encoder's
                                      product in subsae_sae_encode*, subsae_sae_evaluate*
                                      (default FP32). BF16 converts W_enc to bf16 (round
                                      to nearest even) and frees the float W_enc: the model
                                      then holds only the bf16 encoder (half its bytes,
                                      half the bytes each encode reads); the rows are
                                      rounded to bf16 block by block and the product
                                      accumulates in fp32 (oneDNN), TopK and thresholds
                                      act on those fp32 pre-activations; W_dec, biases and
                                      the decoder stay fp32. Whatever reads W_enc as
                                      floats (subsae_sae_get_param, subsae_sae_save,
                                      subsae_sae_fold_scales) widens the bf16 values
                                      exactly; subsae_sae_set_param rounds a new W_enc to
                                      bf16; setting FP32 again widens exactly (the bits
                                      lost to bf16 do not come back). AUTO resolves at
                                      once to BF16 where the CPU multiplies bf16 natively
                                      (AVX512_BF16 or AMX, see subsae_encoder_isa), else
                                      FP32; get_int reads back the resolved FP32 or BF16.
                                      Explicit BF16 without native bf16 fails with
                                      SUBSAE_E_UNSUPPORTED (an emulated product would be
                                      slower than fp32). Not saved: subsae_sae_save writes
                                      float32 and subsae_sae_load gives an FP32 model.
                                      Setting it is not thread-safe with encodes of the
                                      same model (it replaces W_enc). Errors also
                                      SUBSAE_E_NOMEM, SUBSAE_E_NONFINITE (a weight beyond
                                      bf16's range, about 3.39e38) */
    SUBSAE_SAE_SKIP = 11           /* int 0/1, read-only: a skip transcoder (Paulo, Shabalin
                                      & Belrose 2025): the output adds x W_skip^T, W_skip
                                      d_out x d_in (SAELens' layout). Set by a trainer with
                                      SUBSAE_TRAIN_SKIP and by subsae_sae_load for a
                                      directory with a W_skip tensor. subsae_sae_decode /
                                      _decode_sparse see codes only: add the skip path
                                      with subsae_sae_add_skip; subsae_sae_evaluate
                                      includes it */
};

/** Create a model with zero weights (k defaults to 32, scales to 1).
 *  Errors: SUBSAE_E_INVALID, SUBSAE_E_NOMEM. */
SUBSAE_API int subsae_sae_create(int64_t d_in, int64_t d_out, int64_t d_sae, int activation,
                                 subsae_sae **out);

/** Deep copy. */
SUBSAE_API int subsae_sae_clone(const subsae_sae *sae, subsae_sae **out);

/** Release a model. NULL is a no-op. */
SUBSAE_API void subsae_sae_free(subsae_sae *sae);

/** Typed option setters/getters (see enum subsae_sae_option). */
SUBSAE_API int subsae_sae_set_int(subsae_sae *sae, int option, int64_t value);
SUBSAE_API int subsae_sae_get_int(const subsae_sae *sae, int option, int64_t *value);
SUBSAE_API int subsae_sae_set_double(subsae_sae *sae, int option, double value);
SUBSAE_API int subsae_sae_get_double(const subsae_sae *sae, int option, double *value);

/** Caller metadata of a model: a JSON object (as text) whose members
 *  subsae_sae_save writes into cfg.json next to the library's own, e.g.
 *  SAELens' "hook_name", "model_name" and "metadata", or which run and data
 *  the model comes from. subsae_sae_load restores every member of cfg.json
 *  that the library does not interpret itself; subsae_sae_clone copies it.
 *  NULL, "" or "{}" clears it. A member the library writes itself
 *  ("architecture", "d_in", "d_out", "d_sae", "k", "dtype", ...; the
 *  message lists them) is refused. Errors: SUBSAE_E_INVALID (not a JSON
 *  object, a reserved member), SUBSAE_E_NOMEM. */
SUBSAE_API int subsae_sae_set_metadata(subsae_sae *sae, const char *json);

/** The model's metadata as compact JSON text, "{}" when it has none. The
 *  string belongs to the model and stays valid until its metadata changes
 *  or it is freed. Errors: SUBSAE_E_INVALID (NULL argument). */
SUBSAE_API int subsae_sae_get_metadata(const subsae_sae *sae, const char **json);

/** Number of floats of a parameter, or -1 (NULL model, unknown param). */
SUBSAE_API int64_t subsae_sae_param_size(const subsae_sae *sae, int param);

/** Copy a parameter (as stored, see above) out of / into the model;
 *  `count` must equal subsae_sae_param_size. set rejects non-finite values.
 *  Errors: SUBSAE_E_INVALID, SUBSAE_E_NONFINITE. */
SUBSAE_API int subsae_sae_get_param(const subsae_sae *sae, int param, float *out, int64_t count);
SUBSAE_API int subsae_sae_set_param(subsae_sae *sae, int param, const float *in, int64_t count);

/** Fold the scales into the weights (scales become 1; encodings and
 *  reconstructions of raw activations are unchanged up to rounding).
 *  Errors: SUBSAE_E_NONFINITE when a folded parameter would not be finite
 *  in float (the model is left unchanged). */
SUBSAE_API int subsae_sae_fold_scales(subsae_sae *sae);

/** Dense codes of n raw input rows: z (n x d_sae, stride z_stride). */
SUBSAE_API int subsae_sae_encode(const subsae_sae *sae, const float *x, int64_t n,
                                 int64_t x_stride, float *z, int64_t z_stride);

/** Sparse codes: for each row the (up to) `slots` active features with the
 *  largest values, in descending order of value, into indices/values (n x
 *  slots each); unused slots get index -1 and value 0. */
SUBSAE_API int subsae_sae_encode_sparse(const subsae_sae *sae, const float *x, int64_t n,
                                        int64_t x_stride, int64_t slots, int32_t *indices,
                                        float *values);

/** Reconstruction (raw target space) from dense codes. */
SUBSAE_API int subsae_sae_decode(const subsae_sae *sae, const float *z, int64_t n,
                                 int64_t z_stride, float *out, int64_t out_stride);

/** Reconstruction from sparse codes (index -1 slots are ignored). */
SUBSAE_API int subsae_sae_decode_sparse(const subsae_sae *sae, const int32_t *indices,
                                        const float *values, int64_t n, int64_t slots,
                                        float *out, int64_t out_stride);

/** The skip path of a skip transcoder (SUBSAE_SAE_SKIP): adds x W_skip^T
 *  (raw spaces: the model's scales applied) of n raw input rows x (stride
 *  x_stride >= d_in) to out (n x d_out, stride out_stride), so that
 *  decode + add_skip is the model's output. Adds nothing for a model
 *  without a skip path. The same bits for every thread count. The caller
 *  owns both arrays; thread-safe on a model nobody modifies.
 *  Errors: SUBSAE_E_INVALID (NULL pointer, n < 0, strides too small),
 *  SUBSAE_E_NONFINITE (an input value). */
SUBSAE_API int subsae_sae_add_skip(const subsae_sae *sae, const float *x, int64_t n,
                                   int64_t x_stride, float *out, int64_t out_stride);

/** Metrics, indices into the arrays filled by the evaluate and metric
 *  functions. */
enum subsae_metric {
    SUBSAE_METRIC_MSE = 0,                /* sum over dims, mean over tokens */
    SUBSAE_METRIC_FVU = 1,                /* pooled |x - xhat|^2 / |x - mean|^2 */
    SUBSAE_METRIC_EXPLAINED_VARIANCE = 2, /* 1 - FVU */
    SUBSAE_METRIC_L0 = 3,                 /* mean active features per token */
    SUBSAE_METRIC_DEAD_FRACTION = 4,      /* training: no fire in the dead window */
    SUBSAE_METRIC_DEAD_FEATURES = 5,
    SUBSAE_METRIC_DENSE_FRACTION = 6,     /* firing on > 10 % of tokens */
    SUBSAE_METRIC_ZERO_FREQUENCY_FRACTION = 7, /* evaluation: never fired */
    SUBSAE_METRIC_TOKENS = 8,
    SUBSAE_METRIC_STEPS = 9,
    SUBSAE_METRIC_LOSS = 10,              /* total training loss, last step (in the
                                             model's scaled units; MSE is in raw units) */
    SUBSAE_METRIC_LR = 11,                /* learning rate of the last step (after
                                             warm-up / cool-down) */
    SUBSAE_METRIC_LOSS_MSE = 12,          /* parts of LOSS: reconstruction, */
    SUBSAE_METRIC_LOSS_SPARSITY = 13,     /* L1 / L0 penalty (ReLU, JumpReLU; else 0), */
    SUBSAE_METRIC_LOSS_AUX = 14,          /* AuxK term (0 when off) */
    SUBSAE_METRIC_BF16_DISAGREEMENT = 15, /* training at bf16, last step: the fraction of
                                             the selected (token, feature) pairs whose
                                             selection the fp32 rescoring of the bf16
                                             candidates changed (NaN at fp32) */
    SUBSAE_METRIC_STEP_MSE = 16,          /* training, the last step's batch alone: MSE, */
    SUBSAE_METRIC_STEP_EXPLAINED_VARIANCE = 17, /* against the batch's own mean, */
    SUBSAE_METRIC_STEP_L0 = 18,           /* and L0 (what a live log shows) */
    SUBSAE_METRIC_COUNT = 19
};

/** Number of metrics (SUBSAE_METRIC_COUNT of the linked library). */
SUBSAE_API int subsae_metric_count(void);

/** Evaluate on all rows of `input` against `target` (NULL: the input
 *  itself). metrics[i] for i < n_metrics gets metric i (NaN where it does
 *  not apply, e.g. DEAD_* and STEPS). Errors: SUBSAE_E_INVALID,
 *  SUBSAE_E_NONFINITE, SUBSAE_E_NOMEM, SUBSAE_E_IO. */
SUBSAE_API int subsae_sae_evaluate(const subsae_sae *sae, const subsae_buffer *input,
                                   const subsae_buffer *target, double *metrics,
                                   int64_t n_metrics);

/** subsae_sae_evaluate, and also each feature's density: density[f] (for
 *  f < n_density, which is 0 or d_sae) gets the fraction of the rows on
 *  which feature f fired (0 for a feature that never fired). One pass.
 *  Errors: as subsae_sae_evaluate. */
SUBSAE_API int subsae_sae_evaluate_density(const subsae_sae *sae, const subsae_buffer *input,
                                           const subsae_buffer *target, double *metrics,
                                           int64_t n_metrics, double *density,
                                           int64_t n_density);

/** Write SAELens' feature-density file (SAELens names it
 *  sparsity.safetensors and keeps it next to cfg.json): one float32 tensor
 *  "sparsity" of shape [d_sae] holding log10(density + 1e-10), so a feature
 *  that never fired reads -10. `density` holds d_sae fractions in [0, 1]
 *  (subsae_sae_evaluate_density, subsae_trainer_feature_density).
 *  Crash-safe. Errors: SUBSAE_E_INVALID (NULL, n != d_sae, a density
 *  outside [0, 1]), SUBSAE_E_IO, SUBSAE_E_NOMEM. */
SUBSAE_API int subsae_sae_save_sparsity(const subsae_sae *sae, const char *path,
                                        const double *density, int64_t n);

/** Save as a directory SAE tools read (SAELens layout): cfg.json and
 *  sae_weights.safetensors with W_enc [d_in, d_sae], b_enc [d_sae], W_dec
 *  [d_sae, d_out], b_dec [d_out] (and threshold [d_sae] for JumpReLU and
 *  BatchTopK), float32, scales folded in. Crash-safe (temporary names,
 *  fsync, rename). Errors: SUBSAE_E_INVALID, SUBSAE_E_IO, SUBSAE_E_NOMEM,
 *  SUBSAE_E_NONFINITE (a parameter, or a parameter with the scales folded
 *  in, not finite in float). */
SUBSAE_API int subsae_sae_save(const subsae_sae *sae, const char *dir);

/** Load a saved SAE directory, with each tool's encoding convention:
 *   - this library's / SAELens (cfg.json + sae_weights.safetensors: W_enc,
 *     b_enc, W_dec, b_dec, threshold or log_threshold);
 *   - EleutherAI sparsify (cfg.json + sae.safetensors: encoder.weight
 *     [d_sae, d_in], encoder.bias, W_dec [d_sae, d], b_dec): b_dec is
 *     subtracted from the input unless cfg.json says transcode; ReLU, top k;
 *   - OpenMOSS lm-saes (config.json + sae_weights.safetensors: W_E [d_in,
 *     d_sae], b_E, W_D [d_sae, d], b_D, activation_function.
 *     log_jumprelu_threshold): b_D is not subtracted; with
 *     sparsity_include_decoder_norm (default true) the activation sees
 *     pre * |W_D row| (SUBSAE_SAE_RANK_BY_DECODER_NORM); dataset-wise
 *     normalisation becomes the input and output scales.
 *  Tensor names pick the layout, shapes decide the rest: d_sae is the
 *  encoder bias's length and each matrix is read as [d_sae, d] or [d,
 *  d_sae] by which dimension is d_sae. A tensor of any other shape, a
 *  config that disagrees with the tensors, or a variant the model cannot
 *  represent (skip connections, GLU encoders, lm-saes batchtopk, per-token
 *  normalisation) is rejected, the message naming the file and tensor.
 *  Errors: SUBSAE_E_INVALID, SUBSAE_E_IO, SUBSAE_E_FORMAT,
 *  SUBSAE_E_UNSUPPORTED, SUBSAE_E_NOMEM, SUBSAE_E_NONFINITE. */
SUBSAE_API int subsae_sae_load(const char *dir, subsae_sae **out);

/* ===================================================================== */
/* Trainer                                                                */
/* ===================================================================== */

/** Trains a subsae_sae on a buffer (or input -> target buffers for a
 *  transcoder) with Adam, one dense GEMM per batch for the encoder and
 *  sparse decode/backward over the active features. Same seed, inputs and
 *  thread count give the same bits; the training steps themselves give the
 *  same bits for every thread count (fixed GEMM tiles and partial sums),
 *  so only the active-subspace initialisation can depend on OpenBLAS's
 *  thread count. */
typedef struct subsae_trainer subsae_trainer;

enum subsae_init { SUBSAE_INIT_RANDOM = 0, SUBSAE_INIT_ACTIVE_SUBSPACE = 1 };
enum subsae_decoder_norm { SUBSAE_DECODER_FREE = 0, SUBSAE_DECODER_UNIT = 1 };
/** Distribution of the coefficients c of an active-subspace initial
 *  decoder row c U_r (then normalised), U_r the top-r principal directions:
 *  uniform in [-1, 1] per coefficient (the reference recipe) or standard
 *  normal. Random initialisation always draws rows uniformly on the sphere
 *  (normalised Gaussians). */
enum subsae_subspace_coefficients { SUBSAE_COEF_UNIFORM = 0, SUBSAE_COEF_GAUSSIAN = 1 };

/** Trainer options; set before subsae_trainer_init unless noted. */
enum subsae_train_option {
    SUBSAE_TRAIN_FEATURES = 0,      /* int d_sae, default 16384 */
    SUBSAE_TRAIN_ACTIVATION = 1,    /* int SUBSAE_ACT_*, default TOPK; BatchTopK keeps its
                                       inference threshold as a moving average of the
                                       smallest value each batch selected */
    SUBSAE_TRAIN_K = 2,             /* int, default 32: TopK / BatchTopK k; the initial L0
                                       of JumpReLU and ReLU */
    SUBSAE_TRAIN_LR = 3,            /* double; 0 (default) = 2e-4 / sqrt(d_sae / 16384);
                                       get returns the rate in effect */
    SUBSAE_TRAIN_BATCH = 4,         /* int tokens per step, default 4096 */
    SUBSAE_TRAIN_WARMUP_STEPS = 5,  /* int, default 0 */
    SUBSAE_TRAIN_COOLDOWN_STEPS = 6,/* int: linear decay to 0 over the last steps of a
                                       fit, default 0 */
    SUBSAE_TRAIN_CLIP_NORM = 7,     /* double gradient-norm clip, 0 = off (default) */
    SUBSAE_TRAIN_SEED = 8,          /* int, default 0 */
    SUBSAE_TRAIN_DEAD_WINDOW = 9,   /* int tokens, default 10,000,000 */
    SUBSAE_TRAIN_INIT = 10,         /* int SUBSAE_INIT_*, default ACTIVE_SUBSPACE */
    SUBSAE_TRAIN_SUBSPACE_DIM = 11, /* int r, 0 (default) = effective rank at 99 %;
                                       after init, get returns the r used (0: random) */
    SUBSAE_TRAIN_SCALE_SEARCH = 12, /* int 0/1, default 1: one common scale of the tied
                                       initial weights from 40 values in [0.05, 2]
                                       (the encoder's only with unit decoder norm) */
    SUBSAE_TRAIN_DECODER_NORM = 13, /* int SUBSAE_DECODER_*, default FREE */
    SUBSAE_TRAIN_SPARSE_ADAM = 14,  /* int 0/1, default 0 */
    SUBSAE_TRAIN_THREADS = 15,      /* int, 0 (default) = subsae_get_num_threads(): the
                                       step's threads, the encoder's GEMM tiles
                                       included (one OpenBLAS thread per tile);
                                       the steps give the same bits for every count */
    SUBSAE_TRAIN_INIT_SAMPLE = 16,  /* int rows used for scale, mean, subspace and
                                       the init-scale search, default 65536 */
    SUBSAE_TRAIN_ADAM_BETA1 = 17,   /* double, 0.9 */
    SUBSAE_TRAIN_ADAM_BETA2 = 18,   /* double, 0.999 */
    SUBSAE_TRAIN_ADAM_EPS = 19,     /* double, 1e-8 */
    SUBSAE_TRAIN_AUXK_COEF = 20,    /* double, AuxK revival loss (Gao et al. 2024): the top
                                       AUXK_K pre-activations of the dead features (no fire
                                       within DEAD_WINDOW tokens) reconstruct the residual;
                                       0 = off (default); 1/32 typical */
    SUBSAE_TRAIN_AUXK_K = 21,       /* int, 0 (default) = d_out / 2 (d_in / 2 for an SAE) */
    SUBSAE_TRAIN_L1_COEF = 22,      /* double, ReLU: lambda of the L1 penalty
                                       lambda sum_f z_f |W_dec row f|, default 2.0; gated:
                                       lambda sum_f relu(pre_gate_f) |W_dec row f| */
    SUBSAE_TRAIN_L0_COEF = 23,      /* double, JumpReLU: lambda of the L0 penalty, default 1.0 */
    SUBSAE_TRAIN_JUMPRELU_BANDWIDTH = 24, /* double, width of the rectangle kernel of the
                                       straight-through estimator, default 0.001 */
    SUBSAE_TRAIN_INIT_THRESHOLD = 25,     /* double, initial JumpReLU threshold (ReLU: minus
                                       the initial encoder bias); 0 (default) = the
                                       batch-top-k cut of the init sample, so that the
                                       initial L0 is about K */
    SUBSAE_TRAIN_SUBSPACE_COEFFICIENTS = 26, /* int SUBSAE_COEF_*, default UNIFORM */
    SUBSAE_TRAIN_PRECISION = 27,    /* int SUBSAE_PRECISION_*, default FP32: the precision of
                                       the encoder's product. BF16: the product on bf16
                                       copies of W_enc and of the batch (fp32
                                       accumulation); TopK: each row's k + max(4, k / 4)
                                       best candidates are rescored in fp32 and the top k
                                       of those kept; the other activations (and AuxK):
                                       the entries that pass the bar or fall short of it
                                       by less than a margin of the bf16 error are
                                       recomputed in fp32; so the values trained on are
                                       fp32; master weights, Adam, decoder and losses stay
                                       fp32. Every activation, AuxK, transcoders: BF16 on
                                       a CPU without a native bf16 product fails with
                                       SUBSAE_E_UNSUPPORTED (at init, or at the step when
                                       a bf16 checkpoint is resumed on such a CPU). AUTO:
                                       BF16 where that can run, FP32 elsewhere. After
                                       init, get returns the precision in use (FP32 or
                                       BF16); checkpoints keep it */
    SUBSAE_TRAIN_COEF_WARMUP_STEPS = 28, /* int, default 0: the sparsity coefficient
                                       (L1 of ReLU, L0 of JumpReLU) ramps linearly
                                       from 0 at step 0 to its value at step N
                                       (SAELens' l1_warm_up_steps); 0 = off */
    SUBSAE_TRAIN_SKIP = 29          /* int 0/1, default 0: a skip transcoder (transcoders
                                       only: init with a target; one process, no workers):
                                       output = decoder(latents) + b_dec + x W_skip^T,
                                       W_skip (d_out x d_in) starting at the least-squares
                                       map of the init sample (the dictionary is initialised
                                       on the residual it leaves) and trained by Adam with
                                       the rest; in the checkpoint and the saved model
                                       (tensor W_skip) */
};

/** Create a trainer with default options. */
SUBSAE_API int subsae_trainer_create(subsae_trainer **out);

/** Release a trainer and the model it owns. NULL is a no-op. */
SUBSAE_API void subsae_trainer_free(subsae_trainer *t);

/** Typed option setters/getters. Errors: SUBSAE_E_INVALID (unknown option,
 *  wrong type, bad value), SUBSAE_E_STATE (structural option after init). */
SUBSAE_API int subsae_trainer_set_int(subsae_trainer *t, int option, int64_t value);
SUBSAE_API int subsae_trainer_get_int(const subsae_trainer *t, int option, int64_t *value);
SUBSAE_API int subsae_trainer_set_double(subsae_trainer *t, int option, double value);
SUBSAE_API int subsae_trainer_get_double(const subsae_trainer *t, int option, double *value);

/** Progress callback for init and fit (NULL removes it). */
SUBSAE_API int subsae_trainer_set_callback(subsae_trainer *t, subsae_callback callback,
                                           void *user);

/** Make the trainer worker `rank` of `size` for data-parallel training
 *  (see subsae_allreduce_fn); allowed at any time between calls (e.g.
 *  after subsae_trainer_load_checkpoint), fn NULL detaches. Each worker
 *  passes its own rows (buffers of init and fit; rows of step); together,
 *  in rank order, they are the data set a single process would train on,
 *  and the run is that single-process run up to rounding:
 *   - init draws the single process's sample (global row numbers from the
 *     seed), each worker reads the sampled rows it holds, one all-reduce
 *     (4 INIT_SAMPLE d bytes, once) gives every worker the whole sample,
 *     and every worker then computes the single process's init from it:
 *     the same model bits as in one process (with the same thread count);
 *   - fit: BATCH is the global batch. Every worker draws the same seeded
 *     permutation of all global rows (one int64 per global row) and takes
 *     the rows of each global batch it holds, so the batches are those of
 *     the single process; the loss is the mean over the global batch;
 *   - step: each worker passes its part of one global batch (n may be 0);
 *   - per step: the firing count of every feature with the loss, metric
 *     sums and b_dec gradient (F64, size + 3 + 2 d_out + d_sae values),
 *     then only the W_enc, W_dec and b_enc gradient rows of U, the
 *     features that fired on some worker (F32, |U| (d_in + d_out + 1)
 *     values in three calls, |U| <= min(d_sae, batch k)): the others have
 *     zero gradient. Every worker then applies the same Adam update,
 *     dead-feature clock and metrics. ReLU, JumpReLU and AuxK touch
 *     features that did not fire: the first exchange then also carries a
 *     touched flag per feature and the penalty and AuxK loss parts (d_sae
 *     + 2 more values), U is the touched union, and JumpReLU's
 *     log-threshold gradient rows travel too (|U| more F32 values);
 *     BatchTopK (a selection over the global batch) is refused with
 *     workers: SUBSAE_E_UNSUPPORTED from init, fit and step;
 *   - at the end of init and of every fit the workers compare a hash of
 *     their weights and fail with SUBSAE_REASON_WORKERS_DIVERGED when they
 *     differ (workers must run the same build on the same kind of CPU with
 *     the same thread count).
 *  A cancel by one worker's callback stops every worker after the same
 *  step. The library writes no files itself: let one worker save.
 *  Errors: SUBSAE_E_INVALID (t NULL, size < 1, rank outside [0, size), fn
 *  NULL with size > 1). */
SUBSAE_API int subsae_trainer_set_collective(subsae_trainer *t, subsae_allreduce_fn fn,
                                             int64_t rank, int64_t size, void *user);

/** Initialise the model from data: scale factor(s) s = sqrt(d) / mean |x|,
 *  b_dec = mean (of the target), decoder rows in the active subspace (ASI)
 *  or on the full sphere (random), tied encoder, and the init-scale search,
 *  all on a sample of INIT_SAMPLE rows drawn with the seed. `target` is
 *  NULL for an SAE. Errors: SUBSAE_E_INVALID, SUBSAE_E_STATE (already
 *  initialised), SUBSAE_E_NONFINITE, SUBSAE_E_NOMEM, SUBSAE_E_IO. */
SUBSAE_API int subsae_trainer_init(subsae_trainer *t, const subsae_buffer *input,
                                   const subsae_buffer *target);

/** One optimiser step on n raw rows (target NULL: an SAE). Errors:
 *  SUBSAE_E_STATE (not initialised), SUBSAE_E_INVALID, SUBSAE_E_NONFINITE
 *  (input, or the step diverged: the weights are left as before it). */
SUBSAE_API int subsae_trainer_step(subsae_trainer *t, const float *input, int64_t input_stride,
                                   const float *target, int64_t target_stride, int64_t n);

/** Train on `tokens` more tokens of shuffled batches (epochs drawn from the
 *  seed; position kept across calls and checkpoints). Steps take whole
 *  batches of BATCH rows (an epoch's last partial batch is dropped when
 *  the buffer holds at least BATCH rows), so a call may run up to one
 *  batch past `tokens`; fit(2N) equals fit(N) twice (or fit(N), save,
 *  load, fit(N)) bit for bit when N is a multiple of BATCH. COOLDOWN_STEPS
 *  counts from the end of this call. Reports progress in tokens through
 *  the callback. Rows of files are read with pread, not through the
 *  mapping, so the file's pages do not stay in the resident set. The
 *  step's scratch (batch-sized buffers and gradient rows) is allocated at
 *  the start of the call and released at its end (subsae_trainer_step
 *  keeps it from one step to the next), AuxK's included when it is on.
 *  ReLU and JumpReLU steps grow the room for active (row, feature) pairs
 *  when a batch needs more: a fit that fails there (SUBSAE_E_NOMEM) keeps
 *  the steps it completed (metrics STEPS and TOKENS), the failed step
 *  changes nothing and its batch is the next call's first. Errors: as
 *  subsae_trainer_step, plus SUBSAE_E_CANCELLED (after a complete step). */
SUBSAE_API int subsae_trainer_fit(subsae_trainer *t, const subsae_buffer *input,
                                  const subsae_buffer *target, int64_t tokens);

/** Training metrics: MSE (raw target units, as subsae_sae_evaluate), FVU
 *  (pooled over the window, against the window's mean), explained
 *  variance, L0, dense fraction and zero-frequency fraction (features that
 *  did not fire) over the metrics window: the most recent complete epoch
 *  of subsae_trainer_fit, or every step since init until one completes.
 *  Dead fraction and count: features that did not fire within the last
 *  DEAD_WINDOW tokens (never during the run when it is shorter); NaN
 *  before the first step. Tokens, steps, last loss. STEP_MSE,
 *  STEP_EXPLAINED_VARIANCE and STEP_L0: the last step's batch alone
 *  (explained variance against the batch's own mean), for logs that follow
 *  the run as it goes, where the window lags by up to an epoch; NaN before
 *  the first step. metrics[i] for i <
 *  n_metrics (NaN for i >= SUBSAE_METRIC_COUNT). Errors: SUBSAE_E_INVALID,
 *  SUBSAE_E_STATE (not initialised). */
SUBSAE_API int subsae_trainer_metrics(const subsae_trainer *t, double *metrics,
                                      int64_t n_metrics);

/** Each feature's density over the metrics window of
 *  subsae_trainer_metrics: density[f] (f < n, n == d_sae) gets the fraction
 *  of the window's tokens on which feature f fired. Errors:
 *  SUBSAE_E_INVALID (NULL, n != d_sae), SUBSAE_E_STATE (not initialised,
 *  or no step yet). */
SUBSAE_API int subsae_trainer_feature_density(const subsae_trainer *t, double *density,
                                              int64_t n);

/** Caller metadata of a training run, a JSON object as text (e.g. which
 *  run and data it belongs to): saved in checkpoint.json ("metadata") and
 *  restored by subsae_trainer_load_checkpoint, and given to the model being
 *  trained (now, and when init or a checkpoint creates it), so that
 *  subsae_sae_save of subsae_trainer_sae writes it into cfg.json. Rules as
 *  subsae_sae_set_metadata; allowed at any time. Errors: SUBSAE_E_INVALID,
 *  SUBSAE_E_NOMEM (nothing changed on failure). */
SUBSAE_API int subsae_trainer_set_metadata(subsae_trainer *t, const char *json);

/** The run's metadata as compact JSON text ("{}" when none); the string
 *  belongs to the trainer and stays valid until the metadata changes or
 *  the trainer is freed. Errors: SUBSAE_E_INVALID (NULL argument). */
SUBSAE_API int subsae_trainer_get_metadata(const subsae_trainer *t, const char **json);

/** Phases of a training step, indices into subsae_trainer_timings' output.
 *  New phases may be appended; the values never change. */
enum subsae_phase {
    SUBSAE_PHASE_ENCODE_GEMM = 0, /* the encoder's cblas_sgemm (pre-activations) */
    SUBSAE_PHASE_TOPK = 1,        /* per-row selection (+ b_enc, ReLU) */
    SUBSAE_PHASE_DECODE = 2,      /* sparse decode, residual, output gradient */
    SUBSAE_PHASE_BACKWARD = 3,    /* bucketing by feature, per-feature gradients, b_dec */
    SUBSAE_PHASE_OPTIMIZER = 4,   /* Adam (dense or sparse), decoder renormalisation */
    SUBSAE_PHASE_PREPARE = 5,     /* input checks, scaling, encoder input, counters */
    SUBSAE_PHASE_READ = 6,        /* subsae_trainer_fit only: reading the batch's rows */
    SUBSAE_PHASE_STEP = 7,        /* the whole step (wall time; includes all of the above,
                                     and with workers the exchange) */
    SUBSAE_PHASE_COUNT = 8
};

/** Number of phases (SUBSAE_PHASE_COUNT of the linked library). */
SUBSAE_API int subsae_phase_count(void);

/** Static name of a phase ("encode_gemm", "topk", "decode", "backward",
 *  "optimizer", "prepare", "read", "step"); "unknown" otherwise. */
SUBSAE_API const char *subsae_phase_name(int phase);

/** Wall-clock seconds per step spent in each phase, averaged over the
 *  steps completed (by subsae_trainer_step or subsae_trainer_fit) since the
 *  trainer was created or loaded or since the last
 *  subsae_trainer_reset_timings: seconds_per_step[i] for i < n gets phase i
 *  (NaN for i >= SUBSAE_PHASE_COUNT, and for every phase while no step has
 *  been timed). A step that fails is not counted. Timings are not saved in
 *  checkpoints. Errors: SUBSAE_E_INVALID. */
SUBSAE_API int subsae_trainer_timings(const subsae_trainer *t, double *seconds_per_step,
                                      int64_t n);

/** Forget the timings collected so far (e.g. after warm-up steps).
 *  Errors: SUBSAE_E_INVALID (t NULL). */
SUBSAE_API int subsae_trainer_reset_timings(subsae_trainer *t);

/** The model being trained (owned by the trainer; valid until the trainer
 *  is freed; reflects the weights after the last step). NULL before init
 *  or if t is NULL. */
SUBSAE_API const subsae_sae *subsae_trainer_sae(const subsae_trainer *t);

/** Save everything needed to resume bit for bit (weights, Adam moments,
 *  step, RNG and batch position, dead counters, scales, options, the
 *  run's metadata) into a directory, crash-safe. checkpoint.json records
 *  the options in effect (the learning rate chosen for LR 0 included) and
 *  the library version. Errors: SUBSAE_E_STATE, SUBSAE_E_IO,
 *  SUBSAE_E_NOMEM. */
SUBSAE_API int subsae_trainer_save_checkpoint(const subsae_trainer *t, const char *dir);

/** Recreate a trainer from a checkpoint directory. Errors: SUBSAE_E_IO,
 *  SUBSAE_E_FORMAT, SUBSAE_E_NOMEM, SUBSAE_E_INVALID. */
SUBSAE_API int subsae_trainer_load_checkpoint(const char *dir, subsae_trainer **out);

/* ---- Matryoshka SAEs (Bussmann et al. 2025; Nabeshima 2024) ------------ */

/** Most nested prefixes of a Matryoshka model. */
#define SUBSAE_MATRYOSHKA_MAX 64

/** Train a Matryoshka SAE: `count` nested prefixes of the features,
 *  widths[0] < widths[1] < ... < widths[count - 1], the last equal to
 *  FEATURES (checked by subsae_trainer_init). The loss is the sum over the
 *  prefixes of the squared error of the reconstruction b_dec + the decode
 *  of the prefix's own features of the same (TopK or BatchTopK) selection,
 *  so the first features must reconstruct on their own; active-subspace
 *  initialisation gives the earliest prefixes the top principal
 *  directions (prefix j spans the top ceil(r widths[j] / FEATURES) of the r
 *  directions). The model records the widths (subsae_sae_get_matryoshka;
 *  cfg.json "matryoshka_widths"; checkpoints); encoding is unchanged.
 *  `widths` is copied; count 0 (widths may be NULL) trains a plain SAE.
 *  Before subsae_trainer_init only; TopK and BatchTopK only, one process
 *  (no workers). Not thread-safe on the same trainer. Errors:
 *  SUBSAE_E_INVALID (t NULL, count outside [0, SUBSAE_MATRYOSHKA_MAX],
 *  widths not strictly increasing from >= 1), SUBSAE_E_STATE (after init). */
SUBSAE_API int subsae_trainer_set_matryoshka(subsae_trainer *t, const int64_t *widths,
                                             int count);

/** The Matryoshka prefix widths of a model: *count gets their number (0
 *  for a plain model) and widths[i] for i < min(count, capacity) the
 *  widths. widths may be NULL when capacity is 0. Thread-safe on a model
 *  no one modifies. Errors: SUBSAE_E_INVALID (sae or count NULL, capacity
 *  < 0, widths NULL with capacity > 0). */
SUBSAE_API int subsae_sae_get_matryoshka(const subsae_sae *sae, int64_t *widths, int capacity,
                                         int *count);

/** The explained variance of each Matryoshka prefix on `input` against
 *  `target` (NULL: the input), as subsae_sae_evaluate computes it for the
 *  whole model: each prefix decodes its own features of the model's codes
 *  with b_dec. ev[i] for i < min(count, capacity); *count gets the number
 *  of prefixes (1 for a plain model: its explained variance), the last
 *  equal to SUBSAE_METRIC_EXPLAINED_VARIANCE. Errors: as
 *  subsae_sae_evaluate, SUBSAE_E_INVALID (count NULL, ev NULL with
 *  capacity > 0). */
SUBSAE_API int subsae_sae_evaluate_prefixes(const subsae_sae *sae, const subsae_buffer *input,
                                            const subsae_buffer *target, double *ev,
                                            int capacity, int *count);

#ifdef __cplusplus
}
#endif

#endif /* SUBSAE_H */
