/* The streaming reader of the subspace fit methods (subspace_stream.c).
 * Included by subspace.h, whose struct subsae_subspace it reads. */
#ifndef SUBSAE_SUBSPACE_STREAM_H
#define SUBSAE_SUBSPACE_STREAM_H

#include "collective.h"
#include "internal.h"

/* ---- streaming over a buffer ---------------------------------------- */

/* Batches of a buffer read as float32, shifted by a pilot vector (the
 * first batch's mean when centring), with column sums and sums of squares
 * of the shifted rows accumulated in double, and progress reported. A
 * batch is processed in fixed blocks of rows (read, shifted and summed
 * while cache-resident, in parallel), whose partial sums are added in
 * block order, so that the result does not depend on the thread count. */
struct subsae__subspace_stream {
    const subsae_buffer *buf;
    int64_t n, d;    /* this worker's rows, width */
    int64_t n_total; /* rows of all workers (n for a single process) */
    struct subsae__collective *coll;
    int64_t batch_rows; /* capacity of `batch` in rows */
    float *batch;       /* batch_rows x d, stride d */
    float *shift;       /* d; the pilot (zeros when not centring) */
    bool center;
    bool have_shift;
    double *sum;        /* d: sum of shifted rows over the pass */
    double *sumsq;      /* d: sum of squared shifted values (sum + d: one
                                block, all-reduced in one call) */
    bool sums_kept;     /* the sums of the pass done stand for every later
                           pass (same rows, same bits): not accumulated again */
    int64_t block_rows; /* rows per block of a batch */
    int64_t max_blocks; /* blocks per batch at most */
    double *partial;    /* max_blocks x 2d: a block's sums, sums of squares */
    int *status;        /* max_blocks: a block's read status */
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
int subsae__subspace_stream_init(struct subsae__subspace_stream *st, subsae_subspace *s,
                                 const subsae_buffer *buf, const char *phase, int64_t passes);
void subsae__subspace_stream_release(struct subsae__subspace_stream *st);
/* Start a pass: zero the sums. */
void subsae__subspace_stream_begin_pass(struct subsae__subspace_stream *st);
/* Read rows [first, first + m) into st->batch, set the pilot on the first
 * call of the fit (when centring), subtract it and add the rows to the
 * pass's sums. */
int subsae__subspace_stream_read(struct subsae__subspace_stream *st, int64_t first, int64_t m);
/* Count m more rows done and call the callback; SUBSAE_E_CANCELLED when it
 * asks to stop. */
int subsae__subspace_stream_progress(struct subsae__subspace_stream *st, int64_t m);
/* End of a pass: agree on rc (this worker's status) and sum the pass's
 * column sums and sums of squares over the workers. Returns rc for a
 * single process. */
int subsae__subspace_stream_reduce(struct subsae__subspace_stream *st, int rc);
/* From now on, keep the sums (and sums of squares) of the pass just done
 * and reduced: later passes over the same rows only read and shift. */
void subsae__subspace_stream_keep_sums(struct subsae__subspace_stream *st);
/* The mean row of the fit (d floats; zeros when not centring): the pilot
 * plus the mean of the shifted rows of the last pass (reduced). */
void subsae__subspace_stream_mean(const struct subsae__subspace_stream *st, float *mean);

/* ---- shared by the methods and subspace.c -------------------------- */

/* Flip the sign of each of the k rows of b (length d, stride d) so that
 * its entry of largest magnitude (the first such) is positive. */
void subsae__subspace_fix_signs(float *b, int64_t k, int64_t d);

/* Allocation helpers that record an error naming `what`. */
void *subsae__subspace_alloc(size_t count, size_t size, const char *what);

/* A method's results into *out, which owns the arrays from then on (the
 * caller's pointers are set to NULL). */
struct subsae__subspace_fit;
void subsae__subspace_fit_hand_over(struct subsae__subspace_fit *out, int64_t found,
                                    double total, double **variances, float **basis,
                                    float **mean);

#endif
