/* Fit's input pipeline (prefetch.c): the rows of the next batch are read,
 * gathered and widened to float by a background thread while the step
 * computes on the current one, into one batch buffer that taking the
 * batch exchanges with the step's. */
#ifndef SUBSAE_PREFETCH_H
#define SUBSAE_PREFETCH_H

#include "buffer.h"

typedef struct subsae__prefetch subsae__prefetch;

/* One batch buffer of up to `batch` rows of d_in input values and, with
 * a target reader, d_out target values; the step's buffers (of the same
 * room) are the other half of the double buffering. */
int subsae__prefetch_create(subsae__row_reader *input, subsae__row_reader *target,
                            int64_t batch, int64_t d_in, int64_t d_out, subsae__prefetch **out);

/* Start reading the batch the iterator would hand out next, in the
 * background; the iterator's position is left where it stands (a batch
 * read ahead but not taken is not consumed). */
void subsae__prefetch_submit(subsae__prefetch *p, subsae_batches *it);

/* The next batch of the iterator: the rows read ahead when the iterator
 * still stands where they were drawn, otherwise read now. *x (and *t with
 * a target reader; t is not used without one) is the caller's buffer of
 * `batch` rows: on success it is exchanged for the pipeline's, which holds
 * the batch's *n rows, the caller's becomes the pipeline's (each side
 * frees what it holds), and the iterator has moved past the batch. A
 * failure of the read is the one a synchronous read would give, the
 * iterator unmoved, nothing exchanged. */
int subsae__prefetch_take(subsae__prefetch *p, subsae_batches *it, float **x, float **t,
                          int64_t *n);

/* Wait for the background read, if any, and free. */
void subsae__prefetch_free(subsae__prefetch *p);

/* Tests only: whether fit reads ahead (default true). Not thread-safe. */
void subsae__prefetch_enable(bool on);
bool subsae__prefetch_enabled(void);

#endif /* SUBSAE_PREFETCH_H */
