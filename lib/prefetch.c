/* Fit's input pipeline: while the step computes on batch t, a background
 * thread reads, gathers and widens the rows of batch t + 1 into the
 * pipeline's one batch buffer. A pthread, not an OpenMP task: the step's
 * teams take every core, and this thread mostly waits on pread and memory.
 *
 * Taking a batch exchanges that buffer with the step's (the workspace's
 * scaled input, which the step then scales in place), so that a fit holds
 * two batches, the one the step computes on and the one read ahead, not a
 * third copy for the scaled rows.
 *
 * The main thread draws the batch's row indices from the iterator and
 * puts the iterator back where it stood, so that a position saved in
 * between (a checkpoint from the callback, a cancel, a failed step) is
 * the one of the rows actually consumed; taking the batch moves the
 * iterator past it. A failure of the background read is kept (status,
 * reason, message) and raised by take, on the step that would have read
 * the rows. One thread per batch, joined by take or by free: no thread
 * outlives a fit on any exit path. */
#include "prefetch.h"

#include <pthread.h>
#include <stdio.h>

enum { MESSAGE = 1024 };

struct subsae__prefetch {
    subsae__row_reader *input, *target;
    int64_t d_in, d_out;
    int64_t *rows;
    float *x, *t; /* the batch buffer: the rows read ahead, or free */
    int64_t n;
    int64_t epoch, position;           /* where the iterator stood before the batch */
    int64_t next_epoch, next_position; /* and after it */
    bool pending;                      /* a batch is drawn into x, t */
    bool running;                      /* and a thread reads it */
    pthread_t thread;
    int rc, status, reason; /* the background read's outcome */
    char message[MESSAGE];
};

static bool enabled = true;

void subsae__prefetch_enable(bool on)
{
    enabled = on;
}

bool subsae__prefetch_enabled(void)
{
    return enabled;
}

static int read_rows(const subsae__prefetch *p)
{
    int rc = subsae__row_reader_gather(p->input, p->rows, 0, p->n, p->x, p->d_in);
    if (!rc && p->target)
        rc = subsae__row_reader_gather(p->target, p->rows, 0, p->n, p->t, p->d_out);
    return rc;
}

static void *run(void *arg)
{
    subsae__prefetch *p = arg;
    p->rc = read_rows(p);
    if (p->rc) {
        /* The message is this thread's: keep it for the main thread. */
        p->status = subsae_last_error_status();
        p->reason = subsae_last_error_reason();
        snprintf(p->message, sizeof p->message, "%s", subsae_last_error());
    }
    return NULL;
}

/* The next batch's indices, the iterator left where it stands. */
static int draw(subsae__prefetch *p, subsae_batches *it)
{
    int rc = subsae_batches_tell(it, &p->epoch, &p->position);
    if (!rc)
        rc = subsae_batches_next_indices(it, p->rows, &p->n, NULL);
    if (!rc)
        rc = subsae_batches_tell(it, &p->next_epoch, &p->next_position);
    int back = subsae_batches_seek(it, p->epoch, p->position);
    return rc ? rc : back;
}

static bool stands_at(subsae_batches *it, const subsae__prefetch *p)
{
    int64_t epoch, position;
    subsae_batches_tell(it, &epoch, &position);
    return epoch == p->epoch && position == p->position;
}

int subsae__prefetch_create(subsae__row_reader *input, subsae__row_reader *target,
                            int64_t batch, int64_t d_in, int64_t d_out, subsae__prefetch **out)
{
    subsae__prefetch *p = subsae__calloc(1, sizeof *p);
    if (!p)
        return subsae__fail_nomem("input pipeline", sizeof *p);
    *p = (subsae__prefetch){.input = input, .target = target, .d_in = d_in, .d_out = d_out};
    const size_t B = (size_t)batch;
    p->rows = subsae__malloc(B * sizeof *p->rows);
    p->x = subsae__malloc(B * (size_t)d_in * sizeof *p->x);
    p->t = target ? subsae__malloc(B * (size_t)d_out * sizeof *p->t) : NULL;
    if (!p->rows || !p->x || (target && !p->t)) {
        subsae__prefetch_free(p);
        return subsae__fail_nomem("input pipeline batch buffer",
                                  B * (sizeof(int64_t) + (size_t)(d_in + d_out) * 4));
    }
    *out = p;
    return SUBSAE_OK;
}

void subsae__prefetch_submit(subsae__prefetch *p, subsae_batches *it)
{
    if (p->pending)
        return;
    /* A batch that cannot be drawn, or a thread that cannot start, is left
     * to take, which draws and reads as without the pipeline. */
    if (draw(p, it))
        return;
    p->pending = true;
    p->running = pthread_create(&p->thread, NULL, run, p) == 0;
}

/* Wait for the background read; whether a batch was drawn and whether a
 * thread read it. */
static bool join(subsae__prefetch *p, bool *ran)
{
    const bool drawn = p->pending;
    *ran = p->running;
    if (p->running)
        pthread_join(p->thread, NULL);
    p->running = false;
    p->pending = false;
    return drawn;
}

static void exchange(float **a, float **b)
{
    float *keep = *a;
    *a = *b;
    *b = keep;
}

int subsae__prefetch_take(subsae__prefetch *p, subsae_batches *it, float **x, float **t,
                          int64_t *n)
{
    bool ran = false;
    int rc = SUBSAE_OK;
    if (!join(p, &ran) || !stands_at(it, p)) {
        rc = draw(p, it);
        ran = false;
    }
    if (rc)
        return rc;
    rc = ran ? p->rc : read_rows(p);
    if (rc && ran)
        return subsae__fail(p->status, p->reason, "%s", p->message);
    if (rc)
        return rc;
    subsae_batches_seek(it, p->next_epoch, p->next_position);
    exchange(x, &p->x);
    if (p->target)
        exchange(t, &p->t);
    *n = p->n;
    return SUBSAE_OK;
}

void subsae__prefetch_free(subsae__prefetch *p)
{
    if (!p)
        return;
    bool ran;
    join(p, &ran);
    subsae__free(p->rows);
    subsae__free(p->x);
    subsae__free(p->t);
    subsae__free(p);
}
