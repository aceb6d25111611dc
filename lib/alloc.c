/* The library's one allocation path, with a failure-injection hook so that
 * tests can drive every error path that follows a failed allocation. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

/* The hook is process-wide and meant for single-threaded tests; atomics keep
 * concurrent library use race-free when no failure is injected. */
static _Atomic int64_t fail_at = -1;
static _Atomic int64_t allocations;

static bool should_fail(void)
{
    int64_t index = allocations++;
    int64_t limit = fail_at;
    return limit >= 0 && index >= limit;
}

void subsae__alloc_fail_after(int64_t n)
{
    allocations = 0;
    fail_at = n;
}

int64_t subsae__alloc_count(void)
{
    return allocations;
}

void *subsae__malloc(size_t bytes)
{
    if (should_fail())
        return NULL;
    return malloc(bytes ? bytes : 1);
}

void *subsae__calloc(size_t count, size_t size)
{
    if (should_fail())
        return NULL;
    if (count == 0 || size == 0)
        count = size = 1;
    return calloc(count, size);
}

void *subsae__realloc(void *ptr, size_t bytes)
{
    if (should_fail())
        return NULL;
    return realloc(ptr, bytes ? bytes : 1);
}

void subsae__free(void *ptr)
{
    free(ptr);
}

char *subsae__strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *copy = subsae__malloc(n);
    if (copy)
        memcpy(copy, s, n);
    return copy;
}
