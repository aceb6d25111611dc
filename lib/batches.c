/* subsae_batches: deterministic (shuffled) batches over a buffer. The
 * permutation of epoch e is a Fisher-Yates shuffle drawn from the stream
 * (seed, e), so any position of any epoch can be recreated exactly. */
#include "buffer.h"
#include "rng.h"

struct subsae_batches {
    const subsae_buffer *buf;
    int64_t rows;
    int64_t batch_size;
    uint64_t seed;
    int flags;
    int64_t epoch;
    int64_t position;     /* rows of this epoch already handed out */
    int64_t *permutation; /* NULL when not shuffling */
    int64_t permuted_epoch;
};

static void permute(subsae_batches *it)
{
    subsae__rng rng;
    subsae__rng_seed(&rng, it->seed, (uint64_t)it->epoch);
    for (int64_t i = 0; i < it->rows; i++)
        it->permutation[i] = i;
    subsae__rng_shuffle(&rng, it->permutation, it->rows);
    it->permuted_epoch = it->epoch;
}

int subsae__batches_create_rows(const subsae_buffer *buf, int64_t rows, int64_t batch_size,
                                uint64_t seed, int flags, subsae_batches **out)
{
    static const char *fn = "subsae_batches_create";
    if (batch_size < 1 || (flags & ~(SUBSAE_BATCH_SHUFFLE | SUBSAE_BATCH_DROP_LAST)) ||
        rows < 1 || ((flags & SUBSAE_BATCH_DROP_LAST) && batch_size > rows))
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                            "%s: batch_size %lld, flags %#x over a buffer of %lld rows", fn,
                            (long long)batch_size, (unsigned)flags, (long long)rows);
    subsae_batches *it = subsae__calloc(1, sizeof *it);
    if (!it)
        return subsae__fail_nomem("batch iterator", sizeof *it);
    *it = (subsae_batches){.buf = buf,
                           .rows = rows,
                           .batch_size = batch_size,
                           .seed = seed,
                           .flags = flags,
                           .permuted_epoch = -1};
    if (flags & SUBSAE_BATCH_SHUFFLE) {
        it->permutation = subsae__malloc((size_t)rows * sizeof *it->permutation);
        if (!it->permutation) {
            subsae__free(it);
            return subsae__fail_nomem("batch permutation", (size_t)rows * sizeof(int64_t));
        }
    }
    *out = it;
    return SUBSAE_OK;
}

int subsae_batches_create(const subsae_buffer *buf, int64_t batch_size, uint64_t seed,
                          int flags, subsae_batches **out)
{
    static const char *fn = "subsae_batches_create";
    SUBSAE__NOT_NULL(fn, buf);
    SUBSAE__NOT_NULL(fn, out);
    return subsae__batches_create_rows(buf, subsae_buffer_rows(buf), batch_size, seed, flags,
                                       out);
}

void subsae_batches_free(subsae_batches *it)
{
    if (!it)
        return;
    subsae__free(it->permutation);
    subsae__free(it);
}

static int64_t epoch_end(const subsae_batches *it)
{
    /* With DROP_LAST an epoch stops at the last whole batch. */
    if (it->flags & SUBSAE_BATCH_DROP_LAST)
        return it->rows - it->rows % it->batch_size;
    return it->rows;
}

/* Roll over to the next epoch when this one is used up; return the size of
 * the batch that starts at it->position. */
static int64_t begin_batch(subsae_batches *it)
{
    if (it->position >= epoch_end(it)) {
        it->epoch++;
        it->position = 0;
    }
    if (it->permutation && it->permuted_epoch != it->epoch)
        permute(it);
    int64_t count = epoch_end(it) - it->position;
    return count < it->batch_size ? count : it->batch_size;
}

static int64_t row_at(const subsae_batches *it, int64_t k)
{
    return it->permutation ? it->permutation[k] : k;
}

int subsae_batches_next_indices(subsae_batches *it, int64_t *rows, int64_t *n_rows,
                                int64_t *epoch)
{
    static const char *fn = "subsae_batches_next_indices";
    SUBSAE__NOT_NULL(fn, it);
    SUBSAE__NOT_NULL(fn, rows);
    SUBSAE__NOT_NULL(fn, n_rows);
    int64_t count = begin_batch(it);
    for (int64_t i = 0; i < count; i++)
        rows[i] = row_at(it, it->position + i);
    if (epoch)
        *epoch = it->epoch;
    *n_rows = count;
    it->position += count;
    return SUBSAE_OK;
}

int subsae_batches_next(subsae_batches *it, float *out, int64_t out_stride, int64_t *n_rows,
                        int64_t *epoch)
{
    static const char *fn = "subsae_batches_next";
    SUBSAE__NOT_NULL(fn, it);
    SUBSAE__NOT_NULL(fn, out);
    if (!it->buf)
        return subsae__fail(SUBSAE_E_STATE, SUBSAE_REASON_WRONG_STATE,
                            "%s: the iterator has row numbers but no buffer", fn);
    int64_t saved_epoch = it->epoch, saved_position = it->position;
    int64_t count = begin_batch(it);
    /* Gather through a small block of indices: no allocation per batch. */
    enum { PIECE = 256 };
    int64_t index[PIECE];
    for (int64_t done = 0; done < count; done += PIECE) {
        int64_t piece = count - done < PIECE ? count - done : PIECE;
        for (int64_t i = 0; i < piece; i++)
            index[i] = row_at(it, it->position + done + i);
        int rc = subsae_buffer_gather(it->buf, index, piece, out + done * out_stride,
                                      out_stride);
        if (rc) {
            it->epoch = saved_epoch;
            it->position = saved_position;
            return rc;
        }
    }
    it->position += count;
    if (n_rows)
        *n_rows = count;
    if (epoch)
        *epoch = it->epoch;
    return SUBSAE_OK;
}

int subsae_batches_tell(const subsae_batches *it, int64_t *epoch, int64_t *position)
{
    SUBSAE__NOT_NULL("subsae_batches_tell", it);
    if (epoch)
        *epoch = it->epoch;
    if (position)
        *position = it->position;
    return SUBSAE_OK;
}

int subsae_batches_seek(subsae_batches *it, int64_t epoch, int64_t position)
{
    SUBSAE__NOT_NULL("subsae_batches_seek", it);
    if (epoch < 0 || position < 0 || position > epoch_end(it))
        return subsae__fail(
            SUBSAE_E_RANGE, SUBSAE_REASON_INDEX_OUT_OF_RANGE,
            "subsae_batches_seek: epoch %lld, position %lld (epoch has %lld rows)",
            (long long)epoch, (long long)position, (long long)epoch_end(it));
    it->epoch = epoch;
    it->position = position;
    return SUBSAE_OK;
}
