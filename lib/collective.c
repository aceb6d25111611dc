/* The caller's all-reduce with the failure agreement (see collective.h). */
#include "collective.h"

#include <math.h>
#include <string.h>

int subsae__collective_set(struct subsae__collective *c, const char *fn_name,
                           subsae_allreduce_fn fn, int64_t rank, int64_t size, void *user)
{
    if (size < 1 || size > INT32_MAX || rank < 0 || rank >= size)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                            "%s: rank %lld of size %lld (need 1 <= size < 2^31 and "
                            "0 <= rank < size)",
                            fn_name, (long long)rank, (long long)size);
    if (!fn && size > 1)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_NULL_ARGUMENT,
                            "%s: no all-reduce function for %lld workers", fn_name,
                            (long long)size);
    double *status = NULL;
    if (fn) {
        /* Two slots per worker: a status and a hash (subsae__collective_same). */
        status = subsae__calloc((size_t)size * 2, sizeof *status);
        if (!status)
            return subsae__fail_nomem("collective status slots", (size_t)size * 16);
    }
    subsae__collective_release(c);
    c->fn = fn;
    c->user = fn ? user : NULL;
    c->rank = fn ? rank : 0;
    c->size = fn ? size : 1;
    c->status = status;
    return SUBSAE_OK;
}

void subsae__collective_release(struct subsae__collective *c)
{
    subsae__free(c->status);
    memset(c, 0, sizeof *c);
    c->size = 1;
}

int subsae__allreduce(struct subsae__collective *c, void *data, int64_t count, int dtype,
                      const char *what)
{
    if (!c->fn || count <= 0)
        return SUBSAE_OK;
    int64_t width = dtype == SUBSAE_DTYPE_F64 ? 8 : 4;
    c->calls++;
    c->values += count;
    c->bytes += count * width;
    int rc = c->fn(data, count, dtype, c->user);
    if (rc != 0)
        return subsae__fail(SUBSAE_E_IO, SUBSAE_REASON_COLLECTIVE,
                            "%s: the all-reduce of %lld %s values failed on worker %lld of "
                            "%lld (code %d)",
                            what, (long long)count, subsae_dtype_name(dtype),
                            (long long)c->rank, (long long)c->size, rc);
    return SUBSAE_OK;
}

/* After the status slots were summed: the outcome for this worker. */
static int outcome(const struct subsae__collective *c, int rc, const double *slots,
                   const char *what)
{
    if (rc != SUBSAE_OK)
        return rc; /* keep this worker's own status and message */
    for (int64_t r = 0; r < c->size; r++) {
        if (slots[r] != 0.0) {
            int status = (int)lrint(slots[r]);
            return subsae__fail(status, SUBSAE_REASON_PEER_FAILED,
                                "%s: worker %lld of %lld failed (%s); its message says why",
                                what, (long long)r, (long long)c->size,
                                subsae_status_string(status));
        }
    }
    return SUBSAE_OK;
}

int subsae__collective_agree_buf(struct subsae__collective *c, int rc, double *buf,
                                 int64_t count, const char *what)
{
    if (!c->fn)
        return rc;
    memset(buf, 0, (size_t)c->size * sizeof *buf);
    buf[c->rank] = (double)rc;
    int io = subsae__allreduce(c, buf, c->size + count, SUBSAE_DTYPE_F64, what);
    if (io != SUBSAE_OK)
        return rc != SUBSAE_OK ? rc : io;
    return outcome(c, rc, buf, what);
}

int subsae__collective_agree(struct subsae__collective *c, int rc, const char *what)
{
    if (!c->fn)
        return rc;
    return subsae__collective_agree_buf(c, rc, c->status, 0, what);
}

int subsae__collective_sum_small(struct subsae__collective *c, int rc, double *values,
                                 int64_t count, const char *what)
{
    if (!c->fn)
        return rc;
    if (count > c->size)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                            "%s: %lld values exceed the %lld slots of the status scratch", what,
                            (long long)count, (long long)c->size);
    double *payload = c->status + c->size;
    for (int64_t i = 0; i < count; i++)
        payload[i] = rc == SUBSAE_OK ? values[i] : 0.0;
    rc = subsae__collective_agree_buf(c, rc, c->status, count, what);
    if (rc == SUBSAE_OK)
        for (int64_t i = 0; i < count; i++)
            values[i] = payload[i];
    return rc;
}

int subsae__collective_rows(struct subsae__collective *c, int rc, int64_t rows, int64_t dim,
                            int64_t *offset, int64_t *total, int64_t *root, const char *what)
{
    if (!c->fn) {
        if (rc == SUBSAE_OK) {
            *offset = 0;
            *total = rows;
            if (root)
                *root = rows > 0 ? 0 : -1;
        }
        return rc;
    }
    /* Status, then rows and width of every worker in its own slots (row
     * counts up to 2^53 are exact in double). */
    const int64_t W = c->size;
    double *table = subsae__calloc((size_t)(3 * W), sizeof *table);
    if (!table && rc == SUBSAE_OK)
        rc = subsae__fail_nomem("collective row table", (size_t)(3 * W) * 8);
    rc = subsae__collective_agree(c, rc, what);
    if (rc != SUBSAE_OK) {
        subsae__free(table);
        return rc;
    }
    table[c->rank] = (double)rows;
    table[W + c->rank] = (double)dim;
    rc = subsae__allreduce(c, table, 2 * W, SUBSAE_DTYPE_F64, what);
    if (rc == SUBSAE_OK) {
        int64_t before = 0, all = 0, first = -1;
        for (int64_t r = 0; r < W && rc == SUBSAE_OK; r++) {
            int64_t n = (int64_t)table[r], d = (int64_t)table[W + r];
            if (d != dim)
                rc = subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_DIM_MISMATCH,
                                  "%s: worker %lld has rows of width %lld, worker %lld of "
                                  "width %lld",
                                  what, (long long)r, (long long)d, (long long)c->rank,
                                  (long long)dim);
            if (r < c->rank)
                before += n;
            if (first < 0 && n > 0)
                first = r;
            all += n;
        }
        if (rc == SUBSAE_OK) {
            *offset = before;
            *total = all;
            if (root)
                *root = first;
        }
    }
    subsae__free(table);
    return rc;
}

int subsae__collective_same(struct subsae__collective *c, int rc, uint64_t hash,
                            const char *what)
{
    if (!c->fn)
        return rc;
    /* Status slots, then one hash slot per worker (52 bits: exact in a
     * double). */
    double *slots = c->status;
    memset(slots, 0, (size_t)(2 * c->size) * sizeof *slots);
    slots[c->rank] = (double)rc;
    slots[c->size + c->rank] = (double)(hash >> 12);
    int io = subsae__allreduce(c, slots, 2 * c->size, SUBSAE_DTYPE_F64, what);
    if (io != SUBSAE_OK)
        return rc != SUBSAE_OK ? rc : io;
    rc = outcome(c, rc, slots, what);
    if (rc != SUBSAE_OK)
        return rc;
    for (int64_t r = 0; r < c->size; r++)
        if (slots[c->size + r] != slots[c->size + c->rank])
            return subsae__fail(SUBSAE_E_STATE, SUBSAE_REASON_WORKERS_DIVERGED,
                                "%s differ between worker %lld and worker %lld (the workers "
                                "must run the same build on the same kind of CPU, with the "
                                "same options and thread count)",
                                what, (long long)r, (long long)c->rank);
    return SUBSAE_OK;
}

uint64_t subsae__hash_bytes(uint64_t h, const void *data, size_t bytes)
{
    const unsigned char *p = data;
    const uint64_t prime = UINT64_C(0x100000001b3);
    size_t i = 0;
    for (; i + 8 <= bytes; i += 8) {
        uint64_t word;
        memcpy(&word, p + i, 8);
        h = (h ^ word) * prime;
    }
    for (; i < bytes; i++)
        h = (h ^ p[i]) * prime;
    return h;
}
