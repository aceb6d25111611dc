/* Status strings and the thread-local last-error record. */
#include "internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

enum { ERROR_MESSAGE_CAPACITY = 1024 };

static _Thread_local char last_message[ERROR_MESSAGE_CAPACITY];
static _Thread_local int last_status;
static _Thread_local int last_reason;

const char *subsae_status_string(int status)
{
    switch (status) {
    case SUBSAE_OK: return "ok";
    case SUBSAE_E_INVALID: return "invalid argument";
    case SUBSAE_E_NOMEM: return "out of memory";
    case SUBSAE_E_IO: return "input/output error";
    case SUBSAE_E_FORMAT: return "bad format";
    case SUBSAE_E_NONFINITE: return "non-finite value";
    case SUBSAE_E_STATE: return "wrong state";
    case SUBSAE_E_UNSUPPORTED: return "unsupported";
    case SUBSAE_E_RANGE: return "out of range";
    case SUBSAE_E_CANCELLED: return "cancelled";
    default: return "unknown status";
    }
}

const char *subsae_reason_string(int reason)
{
    static const char *const names[] = {
        [SUBSAE_REASON_NONE] = "none",
        [SUBSAE_REASON_NULL_ARGUMENT] = "null argument",
        [SUBSAE_REASON_BAD_VALUE] = "bad value",
        [SUBSAE_REASON_OUT_OF_MEMORY] = "out of memory",
        [SUBSAE_REASON_SYSTEM] = "system error",
        [SUBSAE_REASON_BAD_MAGIC] = "bad magic",
        [SUBSAE_REASON_TRUNCATED_HEADER] = "truncated header",
        [SUBSAE_REASON_HEADER_PAST_EOF] = "header length past end of file",
        [SUBSAE_REASON_SHAPE_OVERFLOW] = "shape overflows",
        [SUBSAE_REASON_SIZE_MISMATCH] = "shape does not match file size",
        [SUBSAE_REASON_UNSUPPORTED_DTYPE] = "unsupported dtype",
        [SUBSAE_REASON_BIG_ENDIAN] = "big-endian data",
        [SUBSAE_REASON_FORTRAN_ORDER] = "Fortran order",
        [SUBSAE_REASON_BAD_HEADER] = "malformed header",
        [SUBSAE_REASON_OFFSETS_OUT_OF_RANGE] = "offsets out of range",
        [SUBSAE_REASON_OFFSETS_OVERLAP] = "overlapping offsets",
        [SUBSAE_REASON_OFFSETS_MISALIGNED] = "misaligned offsets",
        [SUBSAE_REASON_DTYPE_SHAPE_MISMATCH] = "dtype and shape disagree with offsets",
        [SUBSAE_REASON_MISSING_TENSOR] = "missing tensor",
        [SUBSAE_REASON_DIM_MISMATCH] = "dimension mismatch",
        [SUBSAE_REASON_NONFINITE_INPUT] = "non-finite input",
        [SUBSAE_REASON_DIVERGED] = "training diverged",
        [SUBSAE_REASON_WRONG_STATE] = "wrong state",
        [SUBSAE_REASON_INDEX_OUT_OF_RANGE] = "index out of range",
        [SUBSAE_REASON_CANCELLED] = "cancelled by callback",
        [SUBSAE_REASON_BAD_SHAPE] = "bad shape",
        [SUBSAE_REASON_COLLECTIVE] = "collective all-reduce failed",
        [SUBSAE_REASON_PEER_FAILED] = "another worker failed",
        [SUBSAE_REASON_WORKERS_DIVERGED] = "workers diverged",
    };
    if (reason < 0 || (size_t)reason >= sizeof names / sizeof names[0] || !names[reason])
        return "unknown reason";
    return names[reason];
}

const char *subsae_last_error(void)
{
    return last_message;
}

int subsae_last_error_status(void)
{
    return last_status;
}

int subsae_last_error_reason(void)
{
    return last_reason;
}

void subsae_clear_error(void)
{
    last_message[0] = '\0';
    last_status = SUBSAE_OK;
    last_reason = SUBSAE_REASON_NONE;
}

int subsae__fail(int status, int reason, const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    vsnprintf(last_message, sizeof last_message, fmt, args);
    va_end(args);
    last_status = status;
    last_reason = reason;
    return status;
}

int subsae__fail_option(const char *function, const char *fmt, ...)
{
    char text[ERROR_MESSAGE_CAPACITY];
    va_list args;
    va_start(args, fmt);
    vsnprintf(text, sizeof text, fmt, args);
    va_end(args);
    return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE, "%s: %s", function, text);
}

int subsae__fail_null(const char *function, const char *argument)
{
    return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_NULL_ARGUMENT,
                        "%s: argument '%s' is NULL", function, argument);
}

int subsae__fail_nomem(const char *what, size_t bytes)
{
    return subsae__fail(SUBSAE_E_NOMEM, SUBSAE_REASON_OUT_OF_MEMORY,
                        "out of memory allocating %zu bytes for %s", bytes, what);
}

void subsae__error_prefix(const char *prefix)
{
    /* Shift the message right to make room, truncating its tail. */
    size_t head = strlen(prefix) + 2;
    if (head >= sizeof last_message)
        head = sizeof last_message - 1;
    size_t tail = strlen(last_message);
    if (head + tail >= sizeof last_message)
        tail = sizeof last_message - 1 - head;
    memmove(last_message + head, last_message, tail);
    last_message[head + tail] = '\0';
    memcpy(last_message, prefix, head >= 2 ? head - 2 : 0);
    if (head >= 2)
        memcpy(last_message + head - 2, ": ", 2);
}
