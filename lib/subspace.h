/* Internals of subsae_subspace, shared by subspace.c (options, results,
 * ranks, projections, fit dispatch), subspace_exact.c (one streaming Gram
 * pass and a symmetric eigensolve) and subspace_randomized.c (subspace
 * iteration on the centred Gram operator). */
#ifndef SUBSAE_SUBSPACE_H
#define SUBSAE_SUBSPACE_H

#include "collective.h"
#include "internal.h"

struct subsae_subspace {
    /* options */
    int method;              /* SUBSAE_METHOD_* */
    int64_t rank;            /* k wanted; 0 = all d */
    int64_t oversample;      /* p */
    int64_t power_iters;     /* q */
    int64_t seed;
    int center;              /* 0/1 */
    int64_t batch_rows;
    double threshold;
    subsae_callback callback;
    void *user;
    struct subsae__collective coll; /* workers (subsae_subspace_set_collective) */

    /* set by subsae_subspace_fit for the methods: rows of all workers and
     * the lowest rank holding rows (0 for a single process) */
    int64_t fit_rows, fit_root;

    /* results, valid when fitted */
    bool fitted;
    int method_used;
    int64_t dim;
    int64_t rows;
    int64_t found;           /* directions available (rows of basis) */
    double seconds;
    double total;            /* trace of the covariance */
    double *variances;       /* found, descending, >= 0 */
    float *basis;            /* found x dim, orthonormal rows */
    float *mean;             /* dim (zeros when not centring) */
};

/* What one method hands back to the dispatcher (subspace.c owns the
 * arrays afterwards). */
struct subsae__subspace_fit {
    int64_t found;
    double total;
    double *variances;       /* found */
    float *basis;            /* found x dim */
    float *mean;             /* dim */
};

/* ---- streaming over a buffer (subspace.c) --------------------------- */

/* Batches of a buffer read as float32, shifted by a pilot vector (the
 * first batch's mean when centring), with column sums and sums of squares
 * of the shifted rows accumulated in double, and progress reported. A
 * batch is processed in fixed blocks of rows (read, shifted and summed
 * while cache-resident, in parallel), whose partial sums are added in
 * block order, so that the result does not depend on the thread count. */
struct subsae__stream {
    const subsae_buffer *buf;
    int64_t n, d;            /* this worker's rows, width */
    int64_t n_total;         /* rows of all workers (n for a single process) */
    struct subsae__collective *coll;
    int64_t batch_rows;      /* capacity of `batch` in rows */
    float *batch;            /* batch_rows x d, stride d */
    float *shift;            /* d; the pilot (zeros when not centring) */
    bool center;
    bool have_shift;
    double *sum;             /* d: sum of shifted rows over the pass */
    double *sumsq;           /* d: sum of squared shifted values (sum + d: one
                                block, all-reduced in one call) */
    int64_t block_rows;      /* rows per block of a batch */
    int64_t max_blocks;      /* blocks per batch at most */
    double *partial;         /* max_blocks x 2d: a block's sums, sums of squares */
    int *status;             /* max_blocks: a block's read status */
    /* progress */
    subsae_callback callback;
    void *user;
    const char *phase;
    int64_t done, total;
    int threads;
};

/* With workers, init is collective: it agrees on its allocations and sets
 * the pilot shift of every worker to the first batch mean of the lowest
 * rank holding rows (s->fit_root). */
int subsae__stream_init(struct subsae__stream *st, subsae_subspace *s,
                        const subsae_buffer *buf, const char *phase, int64_t passes);
void subsae__stream_release(struct subsae__stream *st);
/* Start a pass: zero the sums. */
void subsae__stream_begin_pass(struct subsae__stream *st);
/* Read rows [first, first + m) into st->batch, set the pilot on the first
 * call of the fit (when centring), subtract it and add the rows to the
 * pass's sums. */
int subsae__stream_read(struct subsae__stream *st, int64_t first, int64_t m);
/* Count m more rows done and call the callback; SUBSAE_E_CANCELLED when it
 * asks to stop. */
int subsae__stream_progress(struct subsae__stream *st, int64_t m);
/* End of a pass: agree on rc (this worker's status) and sum the pass's
 * column sums and sums of squares over the workers. Returns rc for a
 * single process. */
int subsae__stream_reduce(struct subsae__stream *st, int rc);

/* ---- shared numerics (subspace.c) ---------------------------------- */

/* Flip the sign of each of the k rows of b (length d, stride d) so that
 * its entry of largest magnitude (the first such) is positive. */
void subsae__subspace_fix_signs(float *b, int64_t k, int64_t d);

/* Allocation helpers that record an error naming `what`. */
void *subsae__subspace_alloc(size_t count, size_t size, const char *what);

/* ---- methods -------------------------------------------------------- */

/* With workers both are collective (every worker calls them, with
 * s->fit_rows and s->fit_root set) and return the same results on every
 * worker. */
int subsae__subspace_exact(subsae_subspace *s, const subsae_buffer *buf,
                           struct subsae__subspace_fit *out);
int subsae__subspace_randomized(subsae_subspace *s, const subsae_buffer *buf, int64_t k,
                                struct subsae__subspace_fit *out);

/* Cost estimates used by SUBSAE_METHOD_AUTO: flops weighted by the rate
 * OpenBLAS reaches on each kind of work, in units of ssyrk flops. */
double subsae__subspace_exact_cost(int64_t n, int64_t d);
double subsae__subspace_randomized_cost(int64_t n, int64_t d, int64_t k, int64_t p, int64_t q);

#endif
