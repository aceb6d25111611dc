/* Fit's input pipeline: while the step computes on batch t, a background
 * thread reads, gathers and widens the rows of batch t + 1 into the other
 * of two batch buffers. A pthread, not an OpenMP task: the step's teams
 * take every core, and this thread mostly waits on pread and memory.
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

struct slot {
    int64_t *rows;
    float *x, *t;
    int64_t n;
    int64_t epoch, position;           /* where the iterator stood before the batch */
    int64_t next_epoch, next_position; /* and after it */
    int rc, status, reason;            /* the background read's outcome */
    char message[MESSAGE];
};

struct subsae__prefetch {
    subsae__row_reader *input, *target;
    int64_t d_in, d_out;
    struct slot slot[2];
    int current; /* the slot handed out last */
    int pending; /* the slot drawn ahead, or -1 */
    bool running;
    pthread_t thread;
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

static int read_slot(const subsae__prefetch *p, const struct slot *s)
{
    int rc = subsae__row_reader_gather(p->input, s->rows, 0, s->n, s->x, p->d_in);
    if (!rc && p->target)
        rc = subsae__row_reader_gather(p->target, s->rows, 0, s->n, s->t, p->d_out);
    return rc;
}

static void *run(void *arg)
{
    subsae__prefetch *p = arg;
    struct slot *s = &p->slot[p->pending];
    s->rc = read_slot(p, s);
    if (s->rc) {
        /* The message is this thread's: keep it for the main thread. */
        s->status = subsae_last_error_status();
        s->reason = subsae_last_error_reason();
        snprintf(s->message, sizeof s->message, "%s", subsae_last_error());
    }
    return NULL;
}

/* The next batch's indices into s, the iterator left where it stands. */
static int draw(struct slot *s, subsae_batches *it)
{
    int rc = subsae_batches_tell(it, &s->epoch, &s->position);
    if (!rc)
        rc = subsae_batches_next_indices(it, s->rows, &s->n, NULL);
    if (!rc)
        rc = subsae_batches_tell(it, &s->next_epoch, &s->next_position);
    int back = subsae_batches_seek(it, s->epoch, s->position);
    return rc ? rc : back;
}

static bool stands_at(subsae_batches *it, const struct slot *s)
{
    int64_t epoch, position;
    subsae_batches_tell(it, &epoch, &position);
    return epoch == s->epoch && position == s->position;
}

int subsae__prefetch_create(subsae__row_reader *input, subsae__row_reader *target,
                            int64_t batch, int64_t d_in, int64_t d_out, subsae__prefetch **out)
{
    subsae__prefetch *p = subsae__calloc(1, sizeof *p);
    if (!p)
        return subsae__fail_nomem("input pipeline", sizeof *p);
    *p = (subsae__prefetch){
        .input = input, .target = target, .d_in = d_in, .d_out = d_out, .pending = -1};
    const size_t B = (size_t)batch;
    bool ok = true;
    for (int i = 0; i < 2; i++) {
        struct slot *s = &p->slot[i];
        s->rows = subsae__malloc(B * sizeof *s->rows);
        s->x = subsae__malloc(B * (size_t)d_in * sizeof *s->x);
        s->t = target ? subsae__malloc(B * (size_t)d_out * sizeof *s->t) : NULL;
        ok = ok && s->rows && s->x && (!target || s->t);
    }
    if (!ok) {
        subsae__prefetch_free(p);
        return subsae__fail_nomem("input pipeline batch buffers",
                                  2 * B * (sizeof(int64_t) + (size_t)(d_in + d_out) * 4));
    }
    *out = p;
    return SUBSAE_OK;
}

void subsae__prefetch_submit(subsae__prefetch *p, subsae_batches *it)
{
    if (p->pending >= 0)
        return;
    const int next = 1 - p->current;
    /* A batch that cannot be drawn, or a thread that cannot start, is left
     * to take, which draws and reads as without the pipeline. */
    if (draw(&p->slot[next], it))
        return;
    p->pending = next;
    p->running = pthread_create(&p->thread, NULL, run, p) == 0;
}

/* Wait for the background read; the slot it read, and whether it ran. */
static int join(subsae__prefetch *p, bool *ran)
{
    const int s = p->pending;
    *ran = p->running;
    if (p->running)
        pthread_join(p->thread, NULL);
    p->running = false;
    p->pending = -1;
    return s;
}

int subsae__prefetch_take(subsae__prefetch *p, subsae_batches *it, const float **x,
                          const float **t, int64_t *n)
{
    bool ran = false;
    int i = join(p, &ran);
    int rc = SUBSAE_OK;
    if (i < 0 || !stands_at(it, &p->slot[i])) {
        i = 1 - p->current;
        rc = draw(&p->slot[i], it);
        ran = false;
    }
    if (rc)
        return rc;
    struct slot *s = &p->slot[i];
    rc = ran ? s->rc : read_slot(p, s);
    if (rc && ran)
        return subsae__fail(s->status, s->reason, "%s", s->message);
    if (rc)
        return rc;
    subsae_batches_seek(it, s->next_epoch, s->next_position);
    p->current = i;
    *x = s->x;
    *t = s->t;
    *n = s->n;
    return SUBSAE_OK;
}

void subsae__prefetch_free(subsae__prefetch *p)
{
    if (!p)
        return;
    bool ran;
    join(p, &ran);
    for (int i = 0; i < 2; i++) {
        subsae__free(p->slot[i].rows);
        subsae__free(p->slot[i].x);
        subsae__free(p->slot[i].t);
    }
    subsae__free(p);
}
