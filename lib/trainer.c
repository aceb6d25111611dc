/* The trainer's entry points that train: subsae_trainer_step and
 * subsae_trainer_fit, for one process and for workers alike. A step is
 * composed here of the layers below:
 *
 *   forward/backward (trainer_step.c) -> with workers, the exchange
 *   (trainer_collective.c) -> the Adam update -> the accounting.
 *
 * Fit draws the single process's shuffled batches; a worker draws the
 * batches of all the workers' rows and keeps its own rows of each (see
 * trainer_collective.c), so that one loop serves both. A single process
 * reads the rows of step t + 1 in the background while step t computes
 * (prefetch.c); workers read their rows of each batch when its step
 * starts (their steps wait on the exchange anyway). Nothing below calls
 * back up into this file. */
#include "trainer.h"

#include "buffer.h"
#include "prefetch.h"

#include <omp.h>
#include <string.h>

/* ---- the step ---------------------------------------------------------------- */

/* One step on n rows already validated, the workspace sized: forward and
 * backward (skipped when n is 0 or rc is already a failure), with workers
 * the exchange (given this worker's rc, so that a failure is agreed), the
 * update, the counters; `read_seconds` (fit's time to read the rows)
 * counts in the phase timings. */
static int step_rows(subsae_trainer *t, int rc, const float *input, int64_t input_stride,
                     const float *target, int64_t target_stride, int64_t n, double read_seconds)
{
    const double start = omp_get_wtime();
    memset(t->phase_seconds, 0, sizeof t->phase_seconds);
    double loss = 0.0, sq = 0.0;
    if (rc == SUBSAE_OK && n > 0)
        rc = subsae__trainer_forward_backward(t, input, input_stride, target, target_stride, n,
                                              &loss, &sq);
    if (subsae__collective_on(&t->coll))
        rc = subsae__trainer_exchange(t, rc, &n, &loss, &sq);
    if (rc)
        return rc;
    rc = subsae__trainer_apply_update(t, sq);
    if (rc)
        return rc;
    const double clock = omp_get_wtime();
    subsae__trainer_account(t, n, loss);
    const double end = omp_get_wtime();
    /* Only completed steps count in the timings. */
    t->phase_seconds[SUBSAE_PHASE_PREPARE] += end - clock;
    t->phase_seconds[SUBSAE_PHASE_READ] = read_seconds;
    t->phase_seconds[SUBSAE_PHASE_STEP] = read_seconds + (end - start);
    for (int i = 0; i < SUBSAE_PHASE_COUNT; i++)
        t->phase_total[i] += t->phase_seconds[i];
    t->timed_steps++;
    return SUBSAE_OK;
}

/* The workers' step: agree on the arguments and the global row count,
 * size the workspace for the global batch (every feature that fires in it
 * may need a gradient row), then the step with the loss over all rows. */
static int step_workers(subsae_trainer *t, int rc, const float *input, int64_t input_stride,
                        const float *target, int64_t target_stride, int64_t n)
{
    static const char *fn = "subsae_trainer_step";
    if (!rc)
        rc = subsae__trainer_collective_supported(t, fn);
    if (!rc)
        rc = subsae__trainer_exchange_buffer(t);
    double rows = rc ? 0.0 : (double)n;
    rc = subsae__collective_sum_small(&t->coll, rc, &rows, 1, fn);
    if (rc)
        return rc;
    const int64_t n_all = (int64_t)rows;
    if (n_all < 1 || n_all > SUBSAE__MAX_BATCH)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                            "%s: the workers passed %lld rows together (1 to 2^24)", fn,
                            (long long)n_all);
    rc = subsae__trainer_workspace(t, n_all > n ? n_all : n, subsae__trainer_threads(t));
    if (!rc && subsae__trainer_extended(t))
        rc = subsae__trainer_room_all_features(t);
    t->loss_rows = n_all;
    rc = step_rows(t, rc, input, input_stride, target, target_stride, n, 0.0);
    t->loss_rows = 0;
    return rc;
}

int subsae_trainer_step(subsae_trainer *t, const float *input, int64_t input_stride,
                        const float *target, int64_t target_stride, int64_t n)
{
    int rc = subsae__trainer_check_step_args("subsae_trainer_step", t, input, input_stride,
                                             target, target_stride, n);
    if (t && t->initialised && subsae__collective_on(&t->coll))
        return step_workers(t, rc, input, input_stride, target, target_stride, n);
    if (rc)
        return rc;
    rc = subsae__trainer_workspace(t, n, subsae__trainer_threads(t));
    if (rc)
        return rc;
    return step_rows(t, SUBSAE_OK, input, input_stride, target, target_stride, n, 0.0);
}

/* ---- fit --------------------------------------------------------------------- */

/* Seed of the batch iterator: epochs are streams of this seed. */
static uint64_t batch_seed(uint64_t seed)
{
    return seed ^ 0x62617463686573ULL; /* "batches" */
}

/* Fit's shuffled batch iterator over `rows` rows of `input` (NULL: the
 * global rows of the workers), positioned where the trainer stands; kept
 * while the buffer, row count and batch size stay the same. */
static int batches(subsae_trainer *t, const subsae_buffer *input, int64_t rows)
{
    if (t->batches && t->batches_buf == input && t->batches_rows == rows &&
        t->batches_size == t->batch)
        return SUBSAE_OK;
    if (t->batches) {
        int rc = subsae_batches_tell(t->batches, &t->it_epoch, &t->it_position);
        if (rc)
            return rc;
        subsae_batches_free(t->batches);
        t->batches = NULL;
    }
    int flags = SUBSAE_BATCH_SHUFFLE | (rows >= t->batch ? SUBSAE_BATCH_DROP_LAST : 0);
    subsae_batches *it;
    int rc = subsae__batches_create_rows(input, rows, t->batch, batch_seed((uint64_t)t->seed),
                                         flags, &it);
    if (rc)
        return rc;
    /* Continue where the trainer stands when the position fits these
     * rows; otherwise start the next epoch. */
    int64_t end = rows >= t->batch ? rows - rows % t->batch : rows;
    if (t->it_position <= end)
        rc = subsae_batches_seek(it, t->it_epoch, t->it_position);
    else
        rc = subsae_batches_seek(it, t->it_epoch + 1, 0);
    if (rc) {
        subsae_batches_free(it);
        return rc;
    }
    t->batches = it;
    t->batches_buf = input;
    t->batches_rows = rows;
    t->batches_size = t->batch;
    t->window_tokens = end;
    return SUBSAE_OK;
}

static int check_fit_args(const char *fn, const subsae_trainer *t, const subsae_buffer *input,
                          const subsae_buffer *target, int64_t tokens)
{
    if (!input)
        return subsae__fail_null(fn, "input");
    if (!t->initialised)
        return subsae__fail(SUBSAE_E_STATE, SUBSAE_REASON_WRONG_STATE,
                            "%s: call subsae_trainer_init first", fn);
    if (t->transcoder != (target != NULL))
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                            "%s: the trainer was initialised %s a target buffer", fn,
                            t->transcoder ? "with" : "without");
    const subsae_sae *s = t->sae;
    if (subsae_buffer_dim(input) != s->d_in)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_DIM_MISMATCH,
                            "%s: the input has rows of %lld values but the model takes d_in = "
                            "%lld",
                            fn, (long long)subsae_buffer_dim(input), (long long)s->d_in);
    if (target && subsae_buffer_dim(target) != s->d_out)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_DIM_MISMATCH,
                            "%s: the target has rows of %lld values but the model reconstructs "
                            "d_out = %lld",
                            fn, (long long)subsae_buffer_dim(target), (long long)s->d_out);
    if (target && subsae_buffer_rows(target) != subsae_buffer_rows(input))
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_SIZE_MISMATCH,
                            "%s: input has %lld rows, target %lld", fn,
                            (long long)subsae_buffer_rows(input),
                            (long long)subsae_buffer_rows(target));
    if (tokens < 0)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE, "%s: tokens %lld", fn,
                            (long long)tokens);
    /* With workers a worker may hold no rows; the union is checked later. */
    if (subsae_buffer_rows(input) < 1 && !subsae__collective_on(&t->coll))
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE, "%s: empty buffer", fn);
    return SUBSAE_OK;
}

/* Where this process's rows stand among the rows the batches are drawn
 * from: [offset, offset + local) of them (one process: all), and the
 * readers of its input and target rows (by pread, see buffer.h: a
 * shuffled pass over a mapped file would otherwise keep all of it
 * resident); one process reads the next batch ahead (prefetch.h). */
struct fit_rows {
    int64_t offset, local;
    subsae__row_reader *input, *target;
    subsae__prefetch *ahead;
};

static void close_rows(struct fit_rows *r)
{
    /* The reader thread first: it reads through the readers. */
    subsae__prefetch_free(r->ahead);
    r->ahead = NULL;
    subsae__row_reader_close(r->input);
    subsae__row_reader_close(r->target);
    r->input = r->target = NULL;
}

static int open_rows(struct fit_rows *r, const subsae_buffer *input,
                     const subsae_buffer *target)
{
    int rc = subsae__row_reader_open(input, &r->input);
    if (!rc && target)
        rc = subsae__row_reader_open(target, &r->target);
    if (rc)
        close_rows(r);
    return rc;
}

/* One process: the batches over its rows, the workspace, the readers. */
static int fit_prepare(subsae_trainer *t, const subsae_buffer *input,
                       const subsae_buffer *target, struct fit_rows *r)
{
    r->offset = 0;
    r->local = subsae_buffer_rows(input);
    int rc = batches(t, input, r->local);
    if (!rc)
        rc = subsae__trainer_workspace(t, t->batch, subsae__trainer_threads(t));
    if (!rc)
        rc = open_rows(r, input, target);
    if (!rc && subsae__prefetch_enabled())
        rc = subsae__prefetch_create(r->input, r->target, t->ws.batch, t->sae->d_in,
                                     t->sae->d_out, &r->ahead);
    if (rc)
        close_rows(r);
    return rc;
}

/* Workers: this worker's range of the global rows, the same run on every
 * worker (options, length, and where it stands), the batches over the
 * global rows, the workspace and exchange buffer, the readers; rc (this
 * worker's argument checks) and the setup are agreed. */
static int fit_prepare_workers(subsae_trainer *t, int rc, const subsae_buffer *input,
                               const subsae_buffer *target, int64_t tokens, struct fit_rows *r)
{
    static const char *fn = "subsae_trainer_fit";
    r->local = rc ? 0 : subsae_buffer_rows(input);
    int64_t N = 0;
    rc = subsae__collective_rows(&t->coll, rc, r->local, t->sae->d_in, &r->offset, &N, NULL,
                                 fn);
    uint64_t h = subsae__trainer_options_hash(t);
    int64_t run[] = {tokens, t->step, t->tokens, t->it_epoch, t->it_position};
    if (t->batches && !rc)
        subsae_batches_tell(t->batches, &run[3], &run[4]);
    h = subsae__hash_bytes(h, run, sizeof run);
    rc = subsae__collective_same(
        &t->coll, rc, h, "subsae_trainer_fit: the run (options, tokens, step, position)");
    if (rc)
        return rc;
    if (N < 1)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                            "%s: the workers hold no rows", fn);
    rc = subsae__trainer_collective_supported(t, fn);
    if (!rc)
        rc = batches(t, NULL, N);
    if (!rc)
        rc = subsae__trainer_workspace(t, t->batch, subsae__trainer_threads(t));
    if (!rc && subsae__trainer_extended(t))
        rc = subsae__trainer_room_all_features(t);
    if (!rc)
        rc = subsae__trainer_exchange_buffer(t);
    if (!rc)
        rc = open_rows(r, input, target);
    rc = subsae__collective_agree(&t->coll, rc, "subsae_trainer_fit: setup");
    if (rc)
        close_rows(r);
    return rc;
}

/* The next batch's rows of this process, read into the workspace: the
 * batch's global row indices kept when they fall in [offset, offset +
 * local), in batch order (one process: all of them). *nb gets the rows of
 * the whole batch, *nl this process's. */
static int read_batch(subsae_trainer *t, const struct fit_rows *r, int64_t *nb, int64_t *nl)
{
    struct subsae__workspace *ws = &t->ws;
    const subsae_sae *s = t->sae;
    int rc = subsae_batches_next_indices(t->batches, ws->rows, nb, NULL);
    if (rc)
        return rc;
    *nl = 0;
    for (int64_t i = 0; i < *nb; i++)
        if (ws->rows[i] >= r->offset && ws->rows[i] - r->offset < r->local)
            ws->rows[(*nl)++] = ws->rows[i] - r->offset;
    if (*nl > 0)
        rc = subsae__row_reader_gather(r->input, ws->rows, 0, *nl, ws->xs, s->d_in);
    if (!rc && *nl > 0 && r->target)
        rc = subsae__row_reader_gather(r->target, ws->rows, 0, *nl, ws->ts, s->d_out);
    return rc;
}

/* The next batch in the workspace's xs (and ts): read ahead (one
 * process: the pipeline's buffer is exchanged with the workspace's) or
 * read now (workers, or the pipeline off). Either way the step scales the
 * rows in place, so a fit holds two batches, not three. */
static int next_batch(subsae_trainer *t, const struct fit_rows *r, int64_t *nb, int64_t *nl)
{
    if (!r->ahead)
        return read_batch(t, r, nb, nl);
    struct subsae__workspace *ws = &t->ws;
    int rc = subsae__prefetch_take(r->ahead, t->batches, &ws->xs, &ws->ts, nb);
    /* An SAE's target is its input. */
    if (!r->target)
        ws->ts = ws->xs;
    *nl = *nb;
    return rc;
}

/* The steps of a fit of `tokens` tokens. A worker's callback that asks
 * to stop fails its next step, where the workers agree on it (or the
 * outcome after the last step); a single process stops at once. */
static int fit_loop(subsae_trainer *t, const struct fit_rows *r, bool transcoder,
                    int64_t tokens)
{
    const bool workers = subsae__collective_on(&t->coll);
    struct subsae__workspace *ws = &t->ws;
    const subsae_sae *s = t->sae;
    const int64_t per_step = t->batch < t->batches_rows ? t->batch : t->batches_rows;
    t->fit_end_step = t->step + (tokens + per_step - 1) / per_step;
    int64_t done = 0;
    int rc = SUBSAE_OK, stop = SUBSAE_OK;
    while (done < tokens) {
        int64_t epoch, position, nb = 0, nl = 0;
        subsae_batches_tell(t->batches, &epoch, &position);
        const double read_start = omp_get_wtime();
        rc = stop;
        if (!rc)
            rc = next_batch(t, r, &nb, &nl);
        const float *x = ws->xs, *tg = transcoder ? ws->ts : NULL;
        /* The rows of the step after this one are read while it computes. */
        if (!rc && r->ahead && done + nb < tokens)
            subsae__prefetch_submit(r->ahead, t->batches);
        /* The rows are in the step's buffers (read now, or exchanged
         * with the pipeline's), which it scales in place; with workers
         * the loss is over the whole batch. */
        t->loss_rows = workers ? nb : 0;
        rc = step_rows(t, rc, x, s->d_in, tg, s->d_out, nl, omp_get_wtime() - read_start);
        t->loss_rows = 0;
        if (rc) {
            subsae_batches_seek(t->batches, epoch, position);
            break;
        }
        subsae_batches_tell(t->batches, &t->it_epoch, &t->it_position);
        done += nb;
        if (t->callback &&
            t->callback(SUBSAE_EVENT_PROGRESS, "fit", done, tokens, NULL, t->user) != 0) {
            stop = subsae__fail(SUBSAE_E_CANCELLED, SUBSAE_REASON_CANCELLED,
                                "subsae_trainer_fit: cancelled by the callback after %lld of "
                                "%lld tokens",
                                (long long)done, (long long)tokens);
            if (!workers)
                break;
        }
    }
    t->fit_end_step = -1;
    return rc ? rc : stop;
}

int subsae_trainer_fit(subsae_trainer *t, const subsae_buffer *input,
                       const subsae_buffer *target, int64_t tokens)
{
    static const char *fn = "subsae_trainer_fit";
    if (!t)
        return subsae__fail_null(fn, "t");
    int rc = check_fit_args(fn, t, input, target, tokens);
    const bool workers = subsae__collective_on(&t->coll) && t->initialised;
    if (rc && !workers)
        return rc;
    struct fit_rows r = {0};
    rc = workers ? fit_prepare_workers(t, rc, input, target, tokens, &r)
                 : fit_prepare(t, input, target, &r);
    if (rc)
        return rc;
    const int64_t bytes_before = t->coll.bytes, steps_before = t->coll_steps;
    rc = fit_loop(t, &r, target != NULL, tokens);
    close_rows(&r);
    /* The step's scratch (batch-sized buffers and the gradient rows, about
     * as large as the model) is not kept between calls of fit: whatever
     * the caller does next (evaluate, encode, save) has that memory. */
    subsae__trainer_workspace_release(t);
    if (!workers)
        return rc;
    /* Every worker ends here after the same steps: agree on the outcome
     * and check the weights are still the same everywhere. */
    rc = subsae__collective_same(&t->coll, rc, subsae__trainer_weights_hash(t),
                                 "subsae_trainer_fit: the weights");
    const int64_t steps = t->coll_steps - steps_before;
    if (steps > 0)
        subsae__trainer_log(t, "fit",
                            "collective: %lld steps on %lld workers, %.0f bytes all-reduced "
                            "per step (%lld in all)",
                            (long long)steps, (long long)t->coll.size,
                            (double)(t->coll.bytes - bytes_before) / (double)steps,
                            (long long)(t->coll.bytes - bytes_before));
    return rc;
}
