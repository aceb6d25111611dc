/* Data-parallel workers: the caller's all-reduce (subsae_allreduce_fn),
 * wrapped with the failure agreement that every collective call of the
 * library uses, so that a worker that fails never leaves the others
 * waiting in an all-reduce.
 *
 * The agreement: at each point where a worker may have failed locally
 * (a bad row, an I/O error, a cancel, an allocation), every worker
 * all-reduces `size` status slots, its own slot holding its status and the
 * others zero, before any payload is exchanged. Every worker then knows
 * every status; all go on, or all fail: the failing worker with its own
 * status and message, the others with the status of the lowest failing
 * worker, reason SUBSAE_REASON_PEER_FAILED and a message naming it.
 * Status codes are small integers, exact in float and double sums. */
#ifndef SUBSAE_COLLECTIVE_H
#define SUBSAE_COLLECTIVE_H

#include "internal.h"

struct subsae__collective {
    subsae_allreduce_fn fn; /* NULL: a single process */
    void *user;
    int64_t rank, size;
    double *status;               /* size slots, owned (allocated when attached) */
    int64_t calls, values, bytes; /* traffic since attached (statistics) */
};

static inline bool subsae__collective_on(const struct subsae__collective *c)
{
    return c->fn != NULL;
}

/* Attach (fn non-NULL) or detach (fn NULL) after validating the arguments
 * for the public setter `fn_name`; allocates the status slots. On failure
 * the collective is unchanged. */
int subsae__collective_set(struct subsae__collective *c, const char *fn_name,
                           subsae_allreduce_fn fn, int64_t rank, int64_t size, void *user);

/* Release what subsae__collective_set allocated. */
void subsae__collective_release(struct subsae__collective *c);

/* Sum `count` values of `dtype` (F32 or F64) in place over the workers; a
 * no-op for a single process. Failure of the caller's function:
 * SUBSAE_E_IO with reason SUBSAE_REASON_COLLECTIVE naming `what`. */
int subsae__allreduce(struct subsae__collective *c, void *data, int64_t count, int dtype,
                      const char *what);

/* The agreement on `rc`, this worker's status (see above). A single
 * process gets rc back. */
int subsae__collective_agree(struct subsae__collective *c, int rc, const char *what);

/* The agreement fused with a payload: buf holds c->size status slots
 * followed by `count` doubles that are summed in the same all-reduce (a
 * failing worker should pass zeros: they are summed anyway). One call
 * instead of two on hot paths. A single process gets rc back and buf is
 * left alone. */
int subsae__collective_agree_buf(struct subsae__collective *c, int rc, double *buf,
                                 int64_t count, const char *what);

/* The agreement on rc fused with the sum of `count` <= c->size doubles
 * (in the status scratch: no allocation). A single process gets rc back
 * and `values` unchanged. */
int subsae__collective_sum_small(struct subsae__collective *c, int rc, double *values,
                                 int64_t count, const char *what);

/* Where this worker's rows sit among the workers' (rank order): after an
 * agreement on rc, *offset gets the global number of its first row,
 * *total the rows of all workers and *root (may be NULL) the lowest rank
 * holding rows (-1 when none does). The workers must agree on `dim`
 * (SUBSAE_E_INVALID with reason SUBSAE_REASON_DIM_MISMATCH otherwise,
 * on every worker). A single process gets offset 0 and total = rows. */
int subsae__collective_rows(struct subsae__collective *c, int rc, int64_t rows, int64_t dim,
                            int64_t *offset, int64_t *total, int64_t *root, const char *what);

/* Check that every worker computed the same 64-bit `hash` of `what` (e.g.
 * "subsae_trainer_fit: the weights"), fused with an agreement on rc:
 * SUBSAE_E_STATE with reason SUBSAE_REASON_WORKERS_DIVERGED on every
 * worker when they differ. */
int subsae__collective_same(struct subsae__collective *c, int rc, uint64_t hash,
                            const char *what);

/* FNV-1a over the 64-bit words (then the tail bytes) of `bytes` bytes,
 * continuing from `h` (start with SUBSAE__HASH_START). Not cryptographic:
 * it tells arrays that differ by rounding apart. */
#define SUBSAE__HASH_START UINT64_C(0xcbf29ce484222325)
uint64_t subsae__hash_bytes(uint64_t h, const void *data, size_t bytes);

#endif
