/* The streaming reader both fit methods share (subspace_exact.c,
 * subspace_randomized.c), with the two small helpers they share with it
 * and with subspace.c: allocation that records its error, and the sign
 * convention of a basis. Kept apart from subspace.c so that the calls run
 * one way: subspace.c -> the methods -> the stream. */
#include "subspace.h"

#include <math.h>
#include <string.h>

enum {
    BLOCK_FLOATS = 1 << 16, /* values per block of a batch (256 KB) */
    MAX_BLOCKS = 256,       /* blocks per batch at most */
    /* Elements below which a loop stays on one thread: a parallel region
     * costs a wake-up of every thread, and far more when other processes
     * compete for the cores. */
    PARALLEL_MIN = 1 << 18
};

void *subsae__subspace_alloc(size_t count, size_t size, const char *what)
{
    size_t bytes;
    if (!subsae__mul_size(count, size, &bytes)) {
        subsae__fail(SUBSAE_E_NOMEM, SUBSAE_REASON_OUT_OF_MEMORY,
                     "%s: %zu x %zu bytes overflow", what, count, size);
        return NULL;
    }
    void *p = subsae__malloc(bytes ? bytes : 1);
    if (!p)
        subsae__fail_nomem(what, bytes);
    return p;
}

void subsae__subspace_fix_signs(float *b, int64_t k, int64_t d)
{
    for (int64_t r = 0; r < k; r++) {
        float *row = b + r * d;
        int64_t best = 0;
        for (int64_t j = 1; j < d; j++)
            if (fabsf(row[j]) > fabsf(row[best]))
                best = j;
        if (row[best] < 0.0f)
            for (int64_t j = 0; j < d; j++)
                row[j] = -row[j];
    }
}

void subsae__subspace_fit_hand_over(struct subsae__subspace_fit *out, int64_t found,
                                    double total, double **variances, float **basis,
                                    float **mean)
{
    *out = (struct subsae__subspace_fit){.found = found,
                                         .total = total,
                                         .variances = *variances,
                                         .basis = *basis,
                                         .mean = *mean};
    *variances = NULL;
    *basis = NULL;
    *mean = NULL;
}

/* ---- streaming ------------------------------------------------------ */

/* With workers: the pilot of every worker is the first batch mean of the
 * lowest rank holding rows, which reads it and broadcasts it by a sum to
 * which the others add zeros. */
static int collective_pilot(struct subsae__subspace_stream *st, int rc, int64_t root)
{
    const int64_t d = st->d;
    double *mean = st->sum; /* zero here; cleared again below */
    if (rc == SUBSAE_OK && st->coll->rank == root && st->center) {
        const int64_t m = st->batch_rows;
        rc = subsae_buffer_read(st->buf, 0, m, st->batch, d);
        if (rc == SUBSAE_OK) {
            for (int64_t i = 0; i < m; i++) {
                const float *row = st->batch + i * d;
                for (int64_t j = 0; j < d; j++)
                    mean[j] += row[j];
            }
            for (int64_t j = 0; j < d; j++)
                mean[j] /= (double)m;
        }
    }
    rc = subsae__collective_agree(st->coll, rc, "subsae_subspace_fit: pilot shift");
    if (rc == SUBSAE_OK && st->center)
        rc = subsae__allreduce(st->coll, mean, d, SUBSAE_DTYPE_F64,
                               "subsae_subspace_fit: pilot shift");
    if (rc == SUBSAE_OK && st->center) {
        for (int64_t j = 0; j < d; j++)
            st->shift[j] = (float)mean[j];
        st->have_shift = true;
    }
    return rc;
}

int subsae__subspace_stream_init(struct subsae__subspace_stream *st, subsae_subspace *s,
                                 const subsae_buffer *buf, const char *phase, int64_t passes)
{
    memset(st, 0, sizeof *st);
    st->buf = buf;
    st->n = subsae_buffer_rows(buf);
    st->d = subsae_buffer_dim(buf);
    st->n_total = subsae__collective_on(&s->coll) ? s->fit_rows : st->n;
    st->coll = &s->coll;
    st->batch_rows = s->batch_rows < st->n ? s->batch_rows : st->n;
    st->center = s->center != 0;
    st->callback = s->callback;
    st->user = s->user;
    st->phase = phase;
    st->total = st->n * passes;
    st->threads = subsae__threads();
    /* Blocks of about BLOCK_FLOATS values (cache-resident while they are
     * read, shifted and summed), at most MAX_BLOCKS per batch. */
    st->block_rows = BLOCK_FLOATS / st->d > 1 ? BLOCK_FLOATS / st->d : 1;
    if (st->block_rows < (st->batch_rows + MAX_BLOCKS - 1) / MAX_BLOCKS)
        st->block_rows = (st->batch_rows + MAX_BLOCKS - 1) / MAX_BLOCKS;
    st->max_blocks = (st->batch_rows + st->block_rows - 1) / st->block_rows;
    size_t cells;
    int rc = SUBSAE_OK;
    if (!subsae__mul_size((size_t)st->batch_rows, (size_t)st->d, &cells))
        rc = subsae__fail(SUBSAE_E_NOMEM, SUBSAE_REASON_OUT_OF_MEMORY,
                          "subspace: a batch of %lld x %lld floats overflows",
                          (long long)st->batch_rows, (long long)st->d);
    else if (!(st->batch = subsae__subspace_alloc(cells, sizeof(float), "subspace batch")) ||
             !(st->shift = subsae__subspace_alloc((size_t)st->d, sizeof(float),
                                                  "subspace shift")) ||
             !(st->sum = subsae__subspace_alloc(2 * (size_t)st->d, sizeof(double),
                                                "subspace sums")) ||
             !(st->partial = subsae__subspace_alloc((size_t)st->max_blocks * 2 * (size_t)st->d,
                                                    sizeof(double), "subspace partial sums")) ||
             !(st->status = subsae__subspace_alloc((size_t)st->max_blocks, sizeof(int),
                                                   "subspace block status")))
        rc = SUBSAE_E_NOMEM;
    if (rc == SUBSAE_OK) {
        st->sumsq = st->sum + st->d;
        memset(st->shift, 0, (size_t)st->d * sizeof *st->shift);
        subsae__subspace_stream_begin_pass(st);
    }
    if (subsae__collective_on(st->coll)) {
        rc = collective_pilot(st, rc, s->fit_root);
        if (rc == SUBSAE_OK)
            subsae__subspace_stream_begin_pass(st);
    }
    if (rc != SUBSAE_OK)
        subsae__subspace_stream_release(st);
    return rc;
}

void subsae__subspace_stream_release(struct subsae__subspace_stream *st)
{
    subsae__free(st->batch);
    subsae__free(st->shift);
    subsae__free(st->sum); /* sumsq lives in the same block */
    subsae__free(st->partial);
    subsae__free(st->status);
    st->batch = st->shift = NULL;
    st->sum = st->sumsq = st->partial = NULL;
    st->status = NULL;
}

void subsae__subspace_stream_begin_pass(struct subsae__subspace_stream *st)
{
    if (st->sums_kept)
        return;
    memset(st->sum, 0, (size_t)st->d * sizeof(double));
    memset(st->sumsq, 0, (size_t)st->d * sizeof(double));
}

/* target_clones makes an ifunc whose resolver the dynamic loader runs
 * before ThreadSanitizer is initialised; instrumented, it crashes the
 * program at load. The TSan build (make tsan) takes the default clone. */
#if defined(__SANITIZE_THREAD__)
#define SUBSAE_AVX2_CLONES
#else
#define SUBSAE_AVX2_CLONES __attribute__((target_clones("avx2", "default")))
#endif

/* Read (when `read`), shift and sum rows [a, e) of the batch into the
 * block's partial sums. */
SUBSAE_AVX2_CLONES static int process_block(struct subsae__subspace_stream *st, int64_t first,
                                            int64_t a, int64_t e, bool read, double *p1)
{
    const int64_t d = st->d;
    float *x = st->batch + a * d;
    if (read) {
        int rc = subsae_buffer_read(st->buf, first + a, e - a, x, d);
        if (rc != SUBSAE_OK)
            return rc;
    }
    const float *shift = st->shift;
    if (st->sums_kept) {
        if (st->center)
            for (int64_t i = 0; i < e - a; i++) {
                float *row = x + i * d;
#pragma omp simd
                for (int64_t j = 0; j < d; j++)
                    row[j] -= shift[j];
            }
        return SUBSAE_OK;
    }
    double *p2 = p1 + d;
    memset(p1, 0, 2 * (size_t)d * sizeof *p1);
    if (st->center) {
        for (int64_t i = 0; i < e - a; i++) {
            float *row = x + i * d;
#pragma omp simd
            for (int64_t j = 0; j < d; j++) {
                float v = row[j] - shift[j];
                row[j] = v;
                p1[j] += v;
                p2[j] += (double)v * v;
            }
        }
    } else {
        for (int64_t i = 0; i < e - a; i++) {
            const float *row = x + i * d;
#pragma omp simd
            for (int64_t j = 0; j < d; j++) {
                double v = row[j];
                p1[j] += v;
                p2[j] += v * v;
            }
        }
    }
    return SUBSAE_OK;
}

int subsae__subspace_stream_read(struct subsae__subspace_stream *st, int64_t first, int64_t m)
{
    const int64_t d = st->d;
    const int64_t blocks = (m + st->block_rows - 1) / st->block_rows;
    const bool parallel = m * d >= PARALLEL_MIN && blocks > 1;
    bool read = true;
    if (st->center && !st->have_shift) {
        /* Pilot shift: the first batch's mean. Shifting every row by it
         * before the Gram matrix is formed keeps the final centring
         * correction small, so no precision is lost to cancellation when
         * the mean is large compared with the spread. */
        int rc = subsae_buffer_read(st->buf, first, m, st->batch, d);
        if (rc != SUBSAE_OK)
            return rc;
        double *acc = st->sum; /* zero at the start of a pass; reset below */
        for (int64_t i = 0; i < m; i++) {
            const float *row = st->batch + i * d;
#pragma omp simd
            for (int64_t j = 0; j < d; j++)
                acc[j] += row[j];
        }
        for (int64_t j = 0; j < d; j++) {
            st->shift[j] = (float)(acc[j] / (double)m);
            acc[j] = 0.0;
        }
        st->have_shift = true;
        read = false;
    }
    /* Fixed blocks whatever the thread count, partial sums added in block
     * order: the same bits with any number of threads. Reads of one buffer
     * may run concurrently; a block that fails is read again on the
     * calling thread so that its error is recorded where the caller sees
     * it, and the first failing block (the first bad row) wins. */
#pragma omp parallel for if (parallel) num_threads(st->threads) schedule(static)
    for (int64_t b = 0; b < blocks; b++) {
        int64_t a = b * st->block_rows;
        int64_t e = a + st->block_rows < m ? a + st->block_rows : m;
        st->status[b] = process_block(st, first, a, e, read, st->partial + b * 2 * d);
    }
    for (int64_t b = 0; b < blocks; b++) {
        if (st->status[b] != SUBSAE_OK) {
            int64_t a = b * st->block_rows;
            int64_t e = a + st->block_rows < m ? a + st->block_rows : m;
            int again = subsae_buffer_read(st->buf, first + a, e - a, st->batch + a * d, d);
            return again != SUBSAE_OK ? again : st->status[b];
        }
    }
    for (int64_t b = 0; b < blocks && !st->sums_kept; b++) {
        const double *p1 = st->partial + b * 2 * d, *p2 = p1 + d;
        for (int64_t j = 0; j < d; j++) {
            st->sum[j] += p1[j];
            st->sumsq[j] += p2[j];
        }
    }
    return SUBSAE_OK;
}

void subsae__subspace_stream_keep_sums(struct subsae__subspace_stream *st)
{
    st->sums_kept = true;
}

int subsae__subspace_stream_reduce(struct subsae__subspace_stream *st, int rc)
{
    if (!subsae__collective_on(st->coll))
        return rc;
    rc = subsae__collective_agree(st->coll, rc, "subsae_subspace_fit");
    if (rc == SUBSAE_OK && !st->sums_kept)
        rc = subsae__allreduce(st->coll, st->sum, 2 * st->d, SUBSAE_DTYPE_F64,
                               "subsae_subspace_fit: column sums");
    return rc;
}

int subsae__subspace_stream_progress(struct subsae__subspace_stream *st, int64_t m)
{
    st->done += m;
    if (st->callback && st->callback(SUBSAE_EVENT_PROGRESS, st->phase, st->done, st->total,
                                     NULL, st->user) != 0)
        return subsae__fail(SUBSAE_E_CANCELLED, SUBSAE_REASON_CANCELLED,
                            "subsae_subspace_fit: cancelled by the callback in phase '%s' "
                            "after %lld of %lld rows",
                            st->phase, (long long)st->done, (long long)st->total);
    return SUBSAE_OK;
}

void subsae__subspace_stream_mean(const struct subsae__subspace_stream *st, float *mean)
{
    const double dn = (double)st->n_total;
    for (int64_t i = 0; i < st->d; i++)
        mean[i] = st->center ? (float)((double)st->shift[i] + st->sum[i] / dn) : 0.0f;
}
