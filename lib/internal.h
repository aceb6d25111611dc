/* Internal declarations shared by the library's sources. Never installed.
 * Internal non-static functions are named subsae__*; they are hidden from
 * the shared library by -fvisibility=hidden and the version script, but the
 * tests reach them through the static library. */
#ifndef SUBSAE_INTERNAL_H
#define SUBSAE_INTERNAL_H

#include "subsae.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define SUBSAE_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define SUBSAE_PRINTF(a, b)
#endif

/* ---- errors (error.c) ---------------------------------------------- */

/* Record a failure for subsae_last_error*() and return `status`, so that
 * error paths read `return subsae__fail(SUBSAE_E_IO, ..., "...", ...);`. */
int subsae__fail(int status, int reason, const char *fmt, ...) SUBSAE_PRINTF(3, 4);

/* Shorthands for the two most common failures. */
int subsae__fail_null(const char *function, const char *argument);
int subsae__fail_nomem(const char *what, size_t bytes);

/* The argument check that opens most public functions: return
 * subsae__fail_null(function, "arg") when `arg` is NULL. */
#define SUBSAE__NOT_NULL(function, arg)                 \
    do {                                                \
        if (!(arg))                                     \
            return subsae__fail_null((function), #arg); \
    } while (0)

/* An option that `function` cannot take, or a value outside its bounds
 * (SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE): "function: " and the
 * message. */
int subsae__fail_option(const char *function, const char *fmt, ...) SUBSAE_PRINTF(2, 3);

/* Prefix the current thread's last error message with "prefix: " (used to
 * add the file name to a message raised deeper down). */
void subsae__error_prefix(const char *prefix);

/* ---- allocation (alloc.c) ------------------------------------------ */

/* Every allocation of the library goes through these, so that tests can
 * make the n-th allocation fail. They do not record an error themselves. */
void *subsae__malloc(size_t bytes);
void *subsae__calloc(size_t count, size_t size);
void *subsae__realloc(void *ptr, size_t bytes);
void subsae__free(void *ptr);
char *subsae__strdup(const char *s);

/* Test hook: make the allocation with index `n` (0-based, counted from this
 * call) and every later one fail; n < 0 disables. Not thread-safe: tests
 * only. */
void subsae__alloc_fail_after(int64_t n);
/* Allocations made since the last subsae__alloc_fail_after() call. */
int64_t subsae__alloc_count(void);
/* Blocks allocated through these functions and not yet freed (process-wide;
 * tests compare it before and after a call to find leaks without a
 * sanitizer). */
int64_t subsae__alloc_live(void);

/* a * b into *out; false on size_t overflow. */
static inline bool subsae__mul_size(size_t a, size_t b, size_t *out)
{
    return !__builtin_mul_overflow(a, b, out);
}

/* ---- threads (threads.c) ------------------------------------------- */

int subsae__threads(void);

#endif /* SUBSAE_INTERNAL_H */
