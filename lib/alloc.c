/* The library's one allocation path, with a failure-injection hook so that
 * tests can drive every error path that follows a failed allocation. */
#include "internal.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* The hook is process-wide and meant for single-threaded tests; atomics keep
 * concurrent library use race-free when no failure is injected. */
static _Atomic int64_t fail_at = -1;
static _Atomic int64_t allocations;
static _Atomic int64_t live_blocks; /* allocated and not yet freed */

/* A failed allocation sets errno to ENOMEM, as malloc does (POSIX): code
 * that learns about failures only through errno (Jansson's parser, when
 * pointed at these functions by a test) sees the same thing either way. */
static bool should_fail(void)
{
    int64_t index = allocations++;
    int64_t limit = fail_at;
    if (limit >= 0 && index >= limit) {
        errno = ENOMEM;
        return true;
    }
    return false;
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

int64_t subsae__alloc_live(void)
{
    return live_blocks;
}

/* Large blocks (weights, moments, batches) on 2 MB pages where the kernel
 * gives them only on request (transparent_hugepage = madvise, Debian's
 * default): the encoder streams W_enc, and with 4 KB pages the hardware's
 * prefetch stops at every page and every page costs a TLB walk. Advice
 * only: a kernel without THP ignores it. */
enum { HUGE_PAGE = 2 << 20 };

static void *advise_huge(void *p, size_t bytes)
{
#ifdef MADV_HUGEPAGE
    if (p && bytes >= 2 * (size_t)HUGE_PAGE) {
        const uintptr_t start = ((uintptr_t)p + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1);
        const uintptr_t end = ((uintptr_t)p + bytes) & ~(uintptr_t)(HUGE_PAGE - 1);
        if (end > start)
            (void)madvise((void *)start, end - start, MADV_HUGEPAGE);
    }
#endif
    return p;
}

void *subsae__malloc(size_t bytes)
{
    if (should_fail())
        return NULL;
    void *p = malloc(bytes ? bytes : 1);
    if (p)
        live_blocks++;
    return advise_huge(p, bytes);
}

void *subsae__calloc(size_t count, size_t size)
{
    if (should_fail())
        return NULL;
    if (count == 0 || size == 0)
        count = size = 1;
    void *p = calloc(count, size);
    if (p)
        live_blocks++;
    return advise_huge(p, count * size);
}

void *subsae__realloc(void *ptr, size_t bytes)
{
    if (should_fail())
        return NULL;
    void *p = realloc(ptr, bytes ? bytes : 1);
    if (p && !ptr)
        live_blocks++;
    return p;
}

void subsae__free(void *ptr)
{
    if (ptr)
        live_blocks--;
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
