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
    SUBSAE_REASON_BAD_SHAPE = 25       /* wrong number of dimensions, zero dim */
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

#ifdef __cplusplus
}
#endif

#endif /* SUBSAE_H */
