/* Data-parallel workers without MPI: W simulated workers on threads share
 * an in-process all-reduce (sum in rank order, in the dtype, as
 * MPI_Allreduce does for a fixed communicator). Asserts that the
 * distributed subspace fit (exact, randomized, a worker with no rows)
 * gives the single process's effective ranks, spectrum and directions;
 * that distributed training equals single-process training on the same
 * global batches to 1e-5 (relative, per parameter) for several recipes and
 * worker counts; that the public step splits a batch; that failures,
 * cancels and diverged weights are agreed by every worker; the argument
 * checks of the setters; and that a checkpoint of a distributed run
 * resumes in a single process. */
#include "harness.h"
#include "internal.h"
#include "rng.h"
#include "trainer.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_WORKERS = 4 };

/* ---- the in-process all-reduce ---------------------------------------------- */

struct group {
    int size;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int arrived;
    unsigned generation;
    void *data[MAX_WORKERS];
    int64_t count[MAX_WORKERS];
    int dtype[MAX_WORKERS];
    int64_t calls;       /* all-reduces so far (counted by rank 0) */
    int64_t fail_at;     /* the all-reduce with this index fails on every worker (-1: none) */
    bool mismatch;       /* workers called with different counts or dtypes */
};

struct member {
    struct group *g;
    int rank;
};

static void group_init(struct group *g, int size)
{
    memset(g, 0, sizeof *g);
    g->size = size;
    g->fail_at = -1;
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
}

static void group_destroy(struct group *g)
{
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
}

static void barrier(struct group *g)
{
    pthread_mutex_lock(&g->mu);
    unsigned generation = g->generation;
    if (++g->arrived == g->size) {
        g->arrived = 0;
        g->generation++;
        pthread_cond_broadcast(&g->cv);
    } else {
        while (generation == g->generation)
            pthread_cond_wait(&g->cv, &g->mu);
    }
    pthread_mutex_unlock(&g->mu);
}

static int fake_allreduce(void *data, int64_t count, int dtype, void *user)
{
    struct member *me = user;
    struct group *g = me->g;
    g->data[me->rank] = data;
    g->count[me->rank] = count;
    g->dtype[me->rank] = dtype;
    barrier(g);
    bool same = true;
    for (int r = 0; r < g->size; r++)
        same = same && g->count[r] == count && g->dtype[r] == dtype;
    const int64_t call = g->calls;
    size_t width = dtype == SUBSAE_DTYPE_F64 ? 8 : 4;
    void *sum = malloc((size_t)count * width);
    if (same && sum) {
        /* Rank order, in the dtype. */
        if (dtype == SUBSAE_DTYPE_F64) {
            double *s = sum;
            for (int64_t i = 0; i < count; i++) {
                double acc = ((const double *)g->data[0])[i];
                for (int r = 1; r < g->size; r++)
                    acc += ((const double *)g->data[r])[i];
                s[i] = acc;
            }
        } else {
            float *s = sum;
            for (int64_t i = 0; i < count; i++) {
                float acc = ((const float *)g->data[0])[i];
                for (int r = 1; r < g->size; r++)
                    acc += ((const float *)g->data[r])[i];
                s[i] = acc;
            }
        }
    }
    barrier(g); /* everyone has read every input */
    if (same && sum)
        memcpy(data, sum, (size_t)count * width);
    free(sum);
    if (me->rank == 0)
        g->calls++;
    barrier(g); /* the call counter is seen by all */
    if (!same) {
        g->mismatch = true;
        return 2;
    }
    return call == g->fail_at ? 1 : 0;
}

/* ---- workers ---------------------------------------------------------------- */

struct worker;
typedef void (*worker_job)(struct worker *w);

struct worker {
    struct member member;
    int rank, size;
    worker_job job;
    const void *arg;
    /* results */
    int rc, reason;
    char message[512];
    int64_t ivalue[8];
    double dvalue[8];
    float *params[4];    /* W_enc, b_enc, W_dec, b_dec */
    double *variances;
    float *basis;
};

static void record_failure(struct worker *w, int rc)
{
    w->rc = rc;
    w->reason = subsae_last_error_reason();
    snprintf(w->message, sizeof w->message, "%s", subsae_last_error());
}

static void *worker_main(void *p)
{
    struct worker *w = p;
    w->job(w);
    return NULL;
}

static void run_workers(struct group *g, struct worker *ws, int size, worker_job job,
                        const void *arg)
{
    pthread_t threads[MAX_WORKERS];
    group_init(g, size);
    for (int r = 0; r < size; r++) {
        memset(&ws[r], 0, sizeof ws[r]);
        ws[r].member = (struct member){g, r};
        ws[r].rank = r;
        ws[r].size = size;
        ws[r].job = job;
        ws[r].arg = arg;
    }
    for (int r = 0; r < size; r++)
        ck_assert_int_eq(pthread_create(&threads[r], NULL, worker_main, &ws[r]), 0);
    for (int r = 0; r < size; r++)
        pthread_join(threads[r], NULL);
}

static void workers_free(struct worker *ws, int size)
{
    for (int r = 0; r < size; r++) {
        for (int i = 0; i < 4; i++)
            free(ws[r].params[i]);
        free(ws[r].variances);
        free(ws[r].basis);
    }
}

/* Rows [first, first + count) of the data for worker r of `size`, cut at
 * the given fractions (or evenly). */
static void split(int64_t n, int size, const double *cuts, int r, int64_t *first,
                  int64_t *count)
{
    int64_t a = cuts ? (r == 0 ? 0 : (int64_t)(cuts[r - 1] * (double)n)) : n * r / size;
    int64_t b = cuts ? (r == size - 1 ? n : (int64_t)(cuts[r] * (double)n)) : n * (r + 1) / size;
    *first = a;
    *count = b - a;
}

/* Activations with a low-dimensional structure: x = z A + noise + offset,
 * z ~ N(0, diag(decaying)). */
static float *structured_rows(uint64_t seed, int64_t n, int64_t d, int64_t r)
{
    subsae__rng rng;
    subsae__rng_seed(&rng, seed, 7);
    float *a = malloc((size_t)(r * d) * sizeof *a);
    float *x = malloc((size_t)(n * d) * sizeof *x);
    ck_assert(a && x);
    for (int64_t i = 0; i < r * d; i++)
        a[i] = (float)subsae__rng_normal(&rng);
    for (int64_t i = 0; i < n; i++) {
        for (int64_t j = 0; j < d; j++)
            x[i * d + j] = 0.5f + 0.05f * (float)subsae__rng_normal(&rng);
        for (int64_t c = 0; c < r; c++) {
            float z = (float)(subsae__rng_normal(&rng) / (1.0 + c));
            for (int64_t j = 0; j < d; j++)
                x[i * d + j] += z * a[c * d + j];
        }
    }
    free(a);
    return x;
}

static double rel_diff(const float *a, const float *b, int64_t n)
{
    double diff = 0.0, norm = 0.0;
    for (int64_t i = 0; i < n; i++) {
        diff += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        norm += (double)b[i] * b[i];
    }
    return norm > 0.0 ? sqrt(diff / norm) : sqrt(diff);
}

/* ---- subspace ------------------------------------------------------------------- */

struct subspace_case {
    const float *x;
    int64_t n, d;
    int method;
    int64_t rank, batch_rows;
    const double *cuts; /* NULL: even split */
    int64_t nan_row;    /* global row made NaN in its worker's copy (-1: none) */
    int bad_dim_rank;   /* this worker's buffer is one column narrower (-1: none) */
    int other_seed_rank;/* this worker uses another seed (-1: none) */
};

static int configure_subspace(subsae_subspace *s, const struct subspace_case *c, int64_t seed)
{
    int rc = subsae_subspace_set_int(s, SUBSAE_SUBSPACE_METHOD, c->method);
    if (!rc)
        rc = subsae_subspace_set_int(s, SUBSAE_SUBSPACE_RANK, c->rank);
    if (!rc)
        rc = subsae_subspace_set_int(s, SUBSAE_SUBSPACE_BATCH_ROWS, c->batch_rows);
    if (!rc)
        rc = subsae_subspace_set_int(s, SUBSAE_SUBSPACE_POWER_ITERS, 2);
    if (!rc)
        rc = subsae_subspace_set_int(s, SUBSAE_SUBSPACE_SEED, seed);
    return rc;
}

/* ivalue: r90, r95, r99, exact99, found, rows, method; dvalue: total. */
static int subspace_results(subsae_subspace *s, struct worker *w, int64_t d)
{
    int exact;
    int rc = subsae_subspace_effective_rank(s, 0.90, &w->ivalue[0], NULL);
    if (!rc)
        rc = subsae_subspace_effective_rank(s, 0.95, &w->ivalue[1], NULL);
    if (!rc)
        rc = subsae_subspace_effective_rank(s, 0.99, &w->ivalue[2], &exact);
    w->ivalue[3] = exact;
    if (!rc)
        rc = subsae_subspace_get_int(s, SUBSAE_SUBSPACE_RANK_FOUND, &w->ivalue[4]);
    if (!rc)
        rc = subsae_subspace_get_int(s, SUBSAE_SUBSPACE_ROWS, &w->ivalue[5]);
    if (!rc)
        rc = subsae_subspace_get_int(s, SUBSAE_SUBSPACE_METHOD_USED, &w->ivalue[6]);
    if (!rc)
        rc = subsae_subspace_total_variance(s, &w->dvalue[0]);
    if (!rc) {
        w->variances = malloc((size_t)w->ivalue[4] * sizeof *w->variances);
        w->basis = malloc((size_t)(w->ivalue[4] * d) * sizeof *w->basis);
        w->params[0] = malloc((size_t)d * sizeof(float));
        rc = subsae_subspace_variances(s, w->variances, w->ivalue[4]);
        if (!rc)
            rc = subsae_subspace_basis(s, w->ivalue[4], w->basis, d);
        if (!rc)
            rc = subsae_subspace_mean(s, w->params[0]);
    }
    return rc;
}

static void subspace_job(struct worker *w)
{
    const struct subspace_case *c = w->arg;
    int64_t first, count;
    split(c->n, w->size, c->cuts, w->rank, &first, &count);
    int64_t d = w->rank == c->bad_dim_rank ? c->d - 1 : c->d;
    float *mine = malloc((size_t)((count > 0 ? count : 1) * c->d) * sizeof *mine);
    memcpy(mine, c->x + first * c->d, (size_t)(count * c->d) * sizeof *mine);
    if (c->nan_row >= first && c->nan_row < first + count)
        mine[(c->nan_row - first) * c->d + 1] = NAN;
    subsae_buffer *buf = NULL;
    subsae_subspace *s = NULL;
    int rc = subsae_buffer_wrap(mine, SUBSAE_DTYPE_F32, count, d, c->d, SUBSAE_BORROW, &buf);
    if (!rc)
        rc = subsae_subspace_create(&s);
    if (!rc)
        rc = configure_subspace(s, c, w->rank == c->other_seed_rank ? 99 : 5);
    if (!rc)
        rc = subsae_subspace_set_collective(s, fake_allreduce, w->rank, w->size, &w->member);
    if (!rc)
        rc = subsae_subspace_fit(s, buf);
    if (!rc)
        rc = subspace_results(s, w, c->d);
    if (rc)
        record_failure(w, rc);
    subsae_subspace_free(s);
    subsae_buffer_free(buf);
    free(mine);
}

static void subspace_single(const struct subspace_case *c, struct worker *w)
{
    memset(w, 0, sizeof *w);
    subsae_buffer *buf;
    subsae_subspace *s;
    ck_assert_ok(subsae_buffer_wrap(c->x, SUBSAE_DTYPE_F32, c->n, c->d, c->d, SUBSAE_BORROW,
                                    &buf));
    ck_assert_ok(subsae_subspace_create(&s));
    ck_assert_ok(configure_subspace(s, c, 5));
    ck_assert_ok(subsae_subspace_fit(s, buf));
    ck_assert_ok(subspace_results(s, w, c->d));
    subsae_subspace_free(s);
    subsae_buffer_free(buf);
}

/* The workers agree bit for bit with each other, and with the single
 * process on the ranks and, to `tol`, on the spectrum, the trace, the mean
 * and the top directions. */
static void compare_subspace(const struct subspace_case *c, int size, double tol)
{
    struct worker single;
    subspace_single(c, &single);
    struct group g;
    struct worker ws[MAX_WORKERS];
    run_workers(&g, ws, size, subspace_job, c);
    const int64_t d = c->d, found = single.ivalue[4];
    for (int r = 0; r < size; r++) {
        const struct worker *w = &ws[r];
        ck_assert_msg(w->rc == SUBSAE_OK, "worker %d: %s", r, w->message);
        for (int i = 0; i < 7; i++)
            ck_assert_int_eq(w->ivalue[i], single.ivalue[i]);
        ck_assert_int_eq(w->ivalue[5], c->n);
        ck_assert(memcmp(w->variances, ws[0].variances, (size_t)found * sizeof(double)) == 0);
        ck_assert(memcmp(w->basis, ws[0].basis, (size_t)(found * d) * sizeof(float)) == 0);
        ck_assert_double_eq_tol(w->dvalue[0], single.dvalue[0], tol * single.dvalue[0]);
        for (int64_t i = 0; i < found; i++)
            ck_assert_msg(fabs(w->variances[i] - single.variances[i]) <=
                              tol * single.variances[0],
                          "variance %lld: %.9g vs %.9g", (long long)i, w->variances[i],
                          single.variances[i]);
        ck_assert_double_le(rel_diff(w->params[0], single.params[0], d), tol);
        /* The top three directions (well separated) agree up to sign
         * conventions (both are fixed the same way). */
        for (int64_t k = 0; k < 3 && k < found; k++)
            ck_assert_double_le(rel_diff(w->basis + k * d, single.basis + k * d, d), 1e-3);
    }
    ck_assert(!g.mismatch);
    printf("distributed %s subspace, %d workers: r90/r95/r99 = %lld/%lld/%lld as one process; "
           "%lld all-reduces\n",
           single.ivalue[6] == SUBSAE_METHOD_EXACT ? "exact" : "randomized", size,
           (long long)single.ivalue[0], (long long)single.ivalue[1],
           (long long)single.ivalue[2], (long long)g.calls);
    group_destroy(&g);
    workers_free(ws, size);
    workers_free(&single, 1);
}

static struct subspace_case subspace_case_of(const float *x, int64_t n, int64_t d, int method,
                                             int64_t rank)
{
    return (struct subspace_case){.x = x, .n = n, .d = d, .method = method, .rank = rank,
                                  .batch_rows = 256, .nan_row = -1, .bad_dim_rank = -1,
                                  .other_seed_rank = -1};
}

START_TEST(subspace_exact_matches_one_process)
{
    subsae_set_num_threads(1);
    const int64_t n = 3000, d = 24;
    float *x = structured_rows(1, n, d, 8);
    struct subspace_case c = subspace_case_of(x, n, d, SUBSAE_METHOD_EXACT, 0);
    compare_subspace(&c, 2, 1e-5);
    const double uneven[] = {0.05, 0.6};
    c.cuts = uneven;
    compare_subspace(&c, 3, 1e-5);
    free(x);
}
END_TEST

START_TEST(subspace_randomized_matches_one_process)
{
    subsae_set_num_threads(1);
    const int64_t n = 3000, d = 40;
    float *x = structured_rows(2, n, d, 10);
    struct subspace_case c = subspace_case_of(x, n, d, SUBSAE_METHOD_RANDOMIZED, 12);
    compare_subspace(&c, 2, 1e-4);
    const double uneven[] = {0.3, 0.35, 0.9};
    c.cuts = uneven;
    compare_subspace(&c, 4, 1e-4);
    free(x);
}
END_TEST

START_TEST(subspace_worker_without_rows)
{
    subsae_set_num_threads(1);
    const int64_t n = 1000, d = 12;
    float *x = structured_rows(3, n, d, 5);
    /* Worker 0 holds no rows: the pilot comes from worker 1. */
    const double cuts[] = {0.0, 0.5};
    struct subspace_case c = subspace_case_of(x, n, d, SUBSAE_METHOD_EXACT, 0);
    c.cuts = cuts;
    compare_subspace(&c, 3, 1e-5);
    c.method = SUBSAE_METHOD_RANDOMIZED;
    c.rank = 4;
    compare_subspace(&c, 3, 1e-4);
    free(x);
}
END_TEST

/* Every worker fails the same call; the failing worker keeps its status
 * and message, the others say which worker failed. */
static void expect_agreed_failure(struct worker *ws, int size, int status, int culprit,
                                  int culprit_reason, int others_reason)
{
    for (int r = 0; r < size; r++) {
        ck_assert_msg(ws[r].rc == status, "worker %d: %d (%s)", r, ws[r].rc, ws[r].message);
        int want = r == culprit || culprit < 0 ? culprit_reason : others_reason;
        ck_assert_msg(ws[r].reason == want, "worker %d: reason %d, want %d (%s)", r,
                      ws[r].reason, want, ws[r].message);
        if (r != culprit && culprit >= 0) {
            char who[32];
            snprintf(who, sizeof who, "worker %d of %d", culprit, size);
            ck_assert_msg(strstr(ws[r].message, who), "%s", ws[r].message);
        }
    }
}

START_TEST(subspace_failures_are_agreed)
{
    subsae_set_num_threads(1);
    const int64_t n = 900, d = 10;
    float *x = structured_rows(4, n, d, 4);
    struct group g;
    struct worker ws[MAX_WORKERS];
    for (int method = SUBSAE_METHOD_EXACT; method <= SUBSAE_METHOD_RANDOMIZED; method++) {
        /* A NaN in worker 1's rows (not its first batch). */
        struct subspace_case c = subspace_case_of(x, n, d, method, method == 2 ? 3 : 0);
        c.nan_row = 500;
        run_workers(&g, ws, 3, subspace_job, &c);
        expect_agreed_failure(ws, 3, SUBSAE_E_NONFINITE, 1, SUBSAE_REASON_NONFINITE_INPUT,
                              SUBSAE_REASON_PEER_FAILED);
        ck_assert(!g.mismatch);
        group_destroy(&g);
        workers_free(ws, 3);
        /* A NaN in the pilot rows of the root. */
        c.nan_row = 3;
        run_workers(&g, ws, 2, subspace_job, &c);
        expect_agreed_failure(ws, 2, SUBSAE_E_NONFINITE, 0, SUBSAE_REASON_NONFINITE_INPUT,
                              SUBSAE_REASON_PEER_FAILED);
        group_destroy(&g);
        workers_free(ws, 2);
    }
    /* Widths and options must agree. */
    struct subspace_case c = subspace_case_of(x, n, d, SUBSAE_METHOD_EXACT, 0);
    c.bad_dim_rank = 1;
    run_workers(&g, ws, 2, subspace_job, &c);
    for (int r = 0; r < 2; r++) {
        ck_assert_int_eq(ws[r].rc, SUBSAE_E_INVALID);
        ck_assert_int_eq(ws[r].reason, SUBSAE_REASON_DIM_MISMATCH);
    }
    group_destroy(&g);
    workers_free(ws, 2);
    c = subspace_case_of(x, n, d, SUBSAE_METHOD_EXACT, 0);
    c.other_seed_rank = 1;
    run_workers(&g, ws, 2, subspace_job, &c);
    for (int r = 0; r < 2; r++) {
        ck_assert_int_eq(ws[r].rc, SUBSAE_E_STATE);
        ck_assert_int_eq(ws[r].reason, SUBSAE_REASON_WORKERS_DIVERGED);
    }
    group_destroy(&g);
    workers_free(ws, 2);
    /* The transport fails (on every worker) in the middle of the fit. */
    c = subspace_case_of(x, n, d, SUBSAE_METHOD_EXACT, 0);
    group_init(&g, 2);
    for (int r = 0; r < 2; r++)
        ws[r] = (struct worker){.member = {&g, r}, .rank = r, .size = 2, .arg = &c};
    g.fail_at = 4;
    {
        pthread_t th[2];
        for (int r = 0; r < 2; r++) {
            ws[r].job = subspace_job;
            pthread_create(&th[r], NULL, worker_main, &ws[r]);
        }
        for (int r = 0; r < 2; r++)
            pthread_join(th[r], NULL);
    }
    for (int r = 0; r < 2; r++) {
        ck_assert_int_eq(ws[r].rc, SUBSAE_E_IO);
        ck_assert_int_eq(ws[r].reason, SUBSAE_REASON_COLLECTIVE);
    }
    group_destroy(&g);
    workers_free(ws, 2);
    free(x);
}
END_TEST

START_TEST(setters_validate)
{
    subsae_subspace *s;
    subsae_trainer *t;
    ck_assert_ok(subsae_subspace_create(&s));
    ck_assert_ok(subsae_trainer_create(&t));
    int dummy;
    ck_assert_status(subsae_subspace_set_collective(NULL, fake_allreduce, 0, 2, &dummy),
                     SUBSAE_E_INVALID);
    ck_assert_status(subsae_trainer_set_collective(NULL, fake_allreduce, 0, 2, &dummy),
                     SUBSAE_E_INVALID);
    ck_assert_status(subsae_subspace_set_collective(s, fake_allreduce, 0, 0, &dummy),
                     SUBSAE_E_INVALID);
    ck_assert_status(subsae_subspace_set_collective(s, fake_allreduce, 2, 2, &dummy),
                     SUBSAE_E_INVALID);
    ck_assert_status(subsae_subspace_set_collective(s, fake_allreduce, -1, 2, &dummy),
                     SUBSAE_E_INVALID);
    ck_assert_status(subsae_trainer_set_collective(t, NULL, 0, 2, NULL), SUBSAE_E_INVALID);
    ck_assert_status(subsae_trainer_set_collective(t, fake_allreduce, 3, 3, &dummy),
                     SUBSAE_E_INVALID);
    /* Attach, re-attach, detach. */
    ck_assert_ok(subsae_trainer_set_collective(t, fake_allreduce, 1, 3, &dummy));
    ck_assert_int_eq(t->coll.size, 3);
    ck_assert_ok(subsae_trainer_set_collective(t, fake_allreduce, 0, 2, &dummy));
    ck_assert_int_eq(t->coll.size, 2);
    ck_assert_ok(subsae_trainer_set_collective(t, NULL, 0, 1, NULL));
    ck_assert(!subsae__collective_on(&t->coll));
    ck_assert_ok(subsae_subspace_set_collective(s, NULL, 0, 1, NULL));
    /* One worker is a single process. */
    ck_assert_ok(subsae_subspace_set_collective(s, fake_allreduce, 0, 1, &dummy));
    subsae_subspace_free(s);
    subsae_trainer_free(t);
}
END_TEST

/* ---- training ------------------------------------------------------------------ */

struct train_case {
    const float *x;
    int64_t n, d;
    int64_t features, k, batch, tokens, seed;
    int init, decoder_norm, sparse_adam;
    double clip, lr;
    int64_t warmup, cooldown, init_sample;
    const double *cuts;
    int64_t nan_row;      /* NaN in this global row of its worker's copy (-1: none) */
    int cancel_rank;      /* this worker's callback stops after cancel_step steps */
    int64_t cancel_step;
    int perturb_rank;     /* this worker's weights change between two fits */
    const char *checkpoint; /* worker 0 saves here after the fit */
    int activation;       /* SUBSAE_ACT_* (0: TopK) */
    double auxk;          /* AuxK coefficient (0: off) */
};

static int configure_trainer(subsae_trainer *t, const struct train_case *c)
{
    int rc = subsae_trainer_set_int(t, SUBSAE_TRAIN_FEATURES, c->features);
    if (!rc)
        rc = subsae_trainer_set_int(t, SUBSAE_TRAIN_K, c->k);
    if (!rc)
        rc = subsae_trainer_set_int(t, SUBSAE_TRAIN_BATCH, c->batch);
    if (!rc)
        rc = subsae_trainer_set_int(t, SUBSAE_TRAIN_SEED, c->seed);
    if (!rc)
        rc = subsae_trainer_set_int(t, SUBSAE_TRAIN_INIT, c->init);
    if (!rc)
        rc = subsae_trainer_set_int(t, SUBSAE_TRAIN_DECODER_NORM, c->decoder_norm);
    if (!rc)
        rc = subsae_trainer_set_int(t, SUBSAE_TRAIN_SPARSE_ADAM, c->sparse_adam);
    if (!rc)
        rc = subsae_trainer_set_int(t, SUBSAE_TRAIN_WARMUP_STEPS, c->warmup);
    if (!rc)
        rc = subsae_trainer_set_int(t, SUBSAE_TRAIN_COOLDOWN_STEPS, c->cooldown);
    if (!rc && c->init_sample)
        rc = subsae_trainer_set_int(t, SUBSAE_TRAIN_INIT_SAMPLE, c->init_sample);
    if (!rc)
        rc = subsae_trainer_set_int(t, SUBSAE_TRAIN_DEAD_WINDOW, c->n / 2);
    if (!rc)
        rc = subsae_trainer_set_double(t, SUBSAE_TRAIN_CLIP_NORM, c->clip);
    if (!rc)
        rc = subsae_trainer_set_double(t, SUBSAE_TRAIN_LR, c->lr);
    if (!rc)
        rc = subsae_trainer_set_int(t, SUBSAE_TRAIN_ACTIVATION, c->activation);
    if (!rc && c->activation == SUBSAE_ACT_JUMPRELU) /* a band that catches pairs */
        rc = subsae_trainer_set_double(t, SUBSAE_TRAIN_JUMPRELU_BANDWIDTH, 0.05);
    if (!rc)
        rc = subsae_trainer_set_double(t, SUBSAE_TRAIN_AUXK_COEF, c->auxk);
    return rc;
}

/* params: the four parameters; ivalue: steps, tokens, dead features, r;
 * dvalue: MSE, L0, explained variance, last loss. */
static int trainer_results(const subsae_trainer *t, struct worker *w)
{
    const subsae_sae *sae = subsae_trainer_sae(t);
    const int params[4] = {SUBSAE_PARAM_W_ENC, SUBSAE_PARAM_B_ENC, SUBSAE_PARAM_W_DEC,
                           SUBSAE_PARAM_B_DEC};
    int rc = SUBSAE_OK;
    for (int i = 0; i < 4 && !rc; i++) {
        int64_t size = subsae_sae_param_size(sae, params[i]);
        free(w->params[i]);
        w->params[i] = malloc((size_t)size * sizeof(float));
        rc = subsae_sae_get_param(sae, params[i], w->params[i], size);
    }
    double m[SUBSAE_METRIC_COUNT];
    if (!rc)
        rc = subsae_trainer_metrics(t, m, SUBSAE_METRIC_COUNT);
    if (!rc)
        rc = subsae_trainer_get_int(t, SUBSAE_TRAIN_SUBSPACE_DIM, &w->ivalue[3]);
    if (!rc) {
        w->ivalue[0] = (int64_t)m[SUBSAE_METRIC_STEPS];
        w->ivalue[1] = (int64_t)m[SUBSAE_METRIC_TOKENS];
        w->ivalue[2] = (int64_t)m[SUBSAE_METRIC_DEAD_FEATURES];
        w->dvalue[0] = m[SUBSAE_METRIC_MSE];
        w->dvalue[1] = m[SUBSAE_METRIC_L0];
        w->dvalue[2] = m[SUBSAE_METRIC_EXPLAINED_VARIANCE];
        w->dvalue[3] = m[SUBSAE_METRIC_LOSS];
    }
    return rc;
}

struct cancel_state {
    const subsae_trainer *t;
    int64_t after;
};

static int cancel_after(int event, const char *phase, int64_t done, int64_t total,
                        const char *message, void *user)
{
    (void)done, (void)total, (void)message;
    const struct cancel_state *cs = user;
    if (event != SUBSAE_EVENT_PROGRESS || strcmp(phase, "fit") != 0)
        return 0;
    double m[SUBSAE_METRIC_COUNT];
    subsae_trainer_metrics(cs->t, m, SUBSAE_METRIC_COUNT);
    return (int64_t)m[SUBSAE_METRIC_STEPS] >= cs->after;
}

static void train_job(struct worker *w)
{
    const struct train_case *c = w->arg;
    int64_t first, count;
    split(c->n, w->size, c->cuts, w->rank, &first, &count);
    float *mine = malloc((size_t)((count > 0 ? count : 1) * c->d) * sizeof *mine);
    memcpy(mine, c->x + first * c->d, (size_t)(count * c->d) * sizeof *mine);
    if (c->nan_row >= first && c->nan_row < first + count)
        mine[(c->nan_row - first) * c->d] = NAN;
    subsae_buffer *buf = NULL;
    subsae_trainer *t = NULL;
    struct cancel_state cs = {0};
    int rc = subsae_buffer_wrap(mine, SUBSAE_DTYPE_F32, count, c->d, c->d, SUBSAE_BORROW, &buf);
    if (!rc)
        rc = subsae_trainer_create(&t);
    if (!rc)
        rc = configure_trainer(t, c);
    if (!rc)
        rc = subsae_trainer_set_collective(t, fake_allreduce, w->rank, w->size, &w->member);
    if (!rc && w->rank == c->cancel_rank) {
        cs = (struct cancel_state){t, c->cancel_step};
        rc = subsae_trainer_set_callback(t, cancel_after, &cs);
    }
    if (!rc)
        rc = subsae_trainer_init(t, buf, NULL);
    if (!rc && c->perturb_rank >= 0) {
        rc = subsae_trainer_fit(t, buf, NULL, c->tokens / 2);
        if (w->rank == c->perturb_rank)
            t->sae->W_enc[3] = nextafterf(t->sae->W_enc[3], INFINITY);
        if (!rc)
            rc = subsae_trainer_fit(t, buf, NULL, c->tokens / 2);
    } else if (!rc) {
        rc = subsae_trainer_fit(t, buf, NULL, c->tokens);
    }
    if (rc)
        record_failure(w, rc);
    /* Results even after a failure: the weights must still agree. */
    if (t && subsae_trainer_sae(t) && trainer_results(t, w) && !w->rc)
        record_failure(w, SUBSAE_E_STATE);
    if (!rc && c->checkpoint && w->rank == 0 && subsae_trainer_save_checkpoint(t, c->checkpoint))
        record_failure(w, SUBSAE_E_IO);
    subsae_trainer_free(t);
    subsae_buffer_free(buf);
    free(mine);
}

static void train_single(const struct train_case *c, int64_t tokens, struct worker *w)
{
    memset(w, 0, sizeof *w);
    subsae_buffer *buf;
    subsae_trainer *t;
    ck_assert_ok(subsae_buffer_wrap(c->x, SUBSAE_DTYPE_F32, c->n, c->d, c->d, SUBSAE_BORROW,
                                    &buf));
    ck_assert_ok(subsae_trainer_create(&t));
    ck_assert_ok(configure_trainer(t, c));
    ck_assert_ok(subsae_trainer_init(t, buf, NULL));
    ck_assert_ok(subsae_trainer_fit(t, buf, NULL, tokens));
    ck_assert_ok(trainer_results(t, w));
    subsae_trainer_free(t);
    subsae_buffer_free(buf);
}

static const char *param_names[4] = {"W_enc", "b_enc", "W_dec", "b_dec"};

static int64_t param_count(const struct train_case *c, int i)
{
    return i == 0 || i == 2 ? c->features * c->d : i == 1 ? c->features : c->d;
}

/* Workers equal to each other bit for bit and to the single process to
 * 1e-5 relative per parameter; the counters agree exactly. */
static void compare_training(const struct train_case *c, int size, const char *label)
{
    struct worker single;
    train_single(c, c->tokens, &single);
    struct group g;
    struct worker ws[MAX_WORKERS];
    run_workers(&g, ws, size, train_job, c);
    double worst = 0.0;
    for (int r = 0; r < size; r++) {
        const struct worker *w = &ws[r];
        ck_assert_msg(w->rc == SUBSAE_OK, "%s, worker %d: %s", label, r, w->message);
        for (int i = 0; i < 4; i++) {
            int64_t count = param_count(c, i);
            ck_assert_msg(memcmp(w->params[i], ws[0].params[i], (size_t)count * 4) == 0,
                          "%s: workers 0 and %d differ in %s", label, r, param_names[i]);
            double diff = rel_diff(w->params[i], single.params[i], count);
            ck_assert_msg(diff <= 1e-5, "%s, worker %d: %s differs from one process by %.3g",
                          label, r, param_names[i], diff);
            worst = diff > worst ? diff : worst;
        }
        for (int i = 0; i < 4; i++)
            ck_assert_int_eq(w->ivalue[i], single.ivalue[i]);
        ck_assert_double_eq_tol(w->dvalue[0], single.dvalue[0], 1e-5 * single.dvalue[0]);
        ck_assert_double_eq_tol(w->dvalue[1], single.dvalue[1], 1e-12);
        ck_assert_double_eq_tol(w->dvalue[3], single.dvalue[3], 1e-5 * single.dvalue[3]);
    }
    ck_assert(!g.mismatch);
    printf("distributed training (%s), %d workers: %lld steps, weights within %.2g of one "
           "process, %lld all-reduces\n",
           label, size, (long long)single.ivalue[0], worst, (long long)g.calls);
    group_destroy(&g);
    workers_free(ws, size);
    workers_free(&single, 1);
}

static struct train_case train_case_of(const float *x, int64_t n, int64_t d)
{
    return (struct train_case){.x = x, .n = n, .d = d, .features = 96, .k = 4, .batch = 200,
                               .tokens = 2 * n, .seed = 3, .init = SUBSAE_INIT_ACTIVE_SUBSPACE,
                               .lr = 2e-3, .nan_row = -1, .cancel_rank = -1,
                               .perturb_rank = -1};
}

START_TEST(training_matches_one_process)
{
    subsae_set_num_threads(1);
    const int64_t n = 2100, d = 16;
    float *x = structured_rows(5, n, d, 6);
    struct train_case c = train_case_of(x, n, d);
    compare_training(&c, 2, "ASI, free decoder");
    /* The same seed and worker count give the same bits. */
    struct group g;
    struct worker first[MAX_WORKERS], second[MAX_WORKERS];
    run_workers(&g, first, 2, train_job, &c);
    group_destroy(&g);
    run_workers(&g, second, 2, train_job, &c);
    group_destroy(&g);
    for (int i = 0; i < 4; i++)
        ck_assert(memcmp(first[0].params[i], second[0].params[i],
                         (size_t)param_count(&c, i) * sizeof(float)) == 0);
    workers_free(first, 2);
    workers_free(second, 2);
    const double uneven[] = {0.1, 0.7};
    c.cuts = uneven;
    compare_training(&c, 3, "ASI, uneven shards");
    free(x);
}
END_TEST

/* ReLU with its L1 term, JumpReLU with its thresholds and L0 term, AuxK:
 * the exchange carries touched flags, the loss parts and the threshold
 * gradient rows, so the workers still match one process. BatchTopK is
 * refused with workers, by every worker alike. */
START_TEST(training_variants_match_one_process)
{
    subsae_set_num_threads(1);
    const int64_t n = 1500, d = 12;
    float *x = structured_rows(9, n, d, 5);
    struct train_case c = train_case_of(x, n, d);
    c.batch = 150;
    c.activation = SUBSAE_ACT_RELU;
    compare_training(&c, 2, "ReLU with L1");
    c.activation = SUBSAE_ACT_JUMPRELU;
    compare_training(&c, 3, "JumpReLU with L0");
    c.activation = SUBSAE_ACT_TOPK;
    c.auxk = 0.25;
    compare_training(&c, 2, "TopK with AuxK");
    c.activation = SUBSAE_ACT_RELU;
    c.init = SUBSAE_INIT_RANDOM;
    compare_training(&c, 3, "ReLU with AuxK, random init");
    c = train_case_of(x, n, d);
    c.activation = SUBSAE_ACT_BATCHTOPK;
    struct group g;
    struct worker ws[MAX_WORKERS];
    run_workers(&g, ws, 2, train_job, &c);
    for (int r = 0; r < 2; r++) {
        ck_assert_msg(ws[r].rc == SUBSAE_E_UNSUPPORTED, "worker %d: %d %s", r, ws[r].rc,
                      ws[r].message);
        ck_assert_ptr_nonnull(strstr(ws[r].message, "BatchTopK"));
    }
    group_destroy(&g);
    workers_free(ws, 2);
    free(x);
}
END_TEST

START_TEST(init_is_bit_identical)
{
    /* The workers gather the single process's sample: the same model bits
     * (ASI with the scale search, and random init; uneven shards, a sample
     * smaller than the data). */
    subsae_set_num_threads(1);
    const int64_t n = 1800, d = 16;
    float *x = structured_rows(10, n, d, 6);
    const double uneven[] = {0.2, 0.25, 0.9};
    for (int init = 0; init <= 1; init++) {
        struct train_case c = train_case_of(x, n, d);
        c.init = init;
        c.tokens = 0;
        c.init_sample = 1000;
        c.cuts = uneven;
        struct worker single;
        train_single(&c, 0, &single);
        struct group g;
        struct worker ws[MAX_WORKERS];
        run_workers(&g, ws, 4, train_job, &c);
        for (int r = 0; r < 4; r++) {
            ck_assert_msg(ws[r].rc == SUBSAE_OK, "worker %d: %s", r, ws[r].message);
            for (int i = 0; i < 4; i++)
                ck_assert_msg(memcmp(ws[r].params[i], single.params[i],
                                     (size_t)param_count(&c, i) * sizeof(float)) == 0,
                              "init %d, worker %d: %s differs from one process", init, r,
                              param_names[i]);
            ck_assert_int_eq(ws[r].ivalue[3], single.ivalue[3]);
        }
        group_destroy(&g);
        workers_free(ws, 4);
        workers_free(&single, 1);
    }
    free(x);
}
END_TEST

START_TEST(training_recipes_match_one_process)
{
    subsae_set_num_threads(1);
    const int64_t n = 1500, d = 12;
    float *x = structured_rows(6, n, d, 5);
    struct train_case c = train_case_of(x, n, d);
    /* Random init, unit decoder, sparse Adam, clipping, warm-up and
     * cool-down; a sample smaller than the data; a batch that does not
     * divide the rows. */
    c.init = SUBSAE_INIT_RANDOM;
    c.decoder_norm = SUBSAE_DECODER_UNIT;
    c.sparse_adam = 1;
    c.clip = 0.05;
    c.warmup = 3;
    c.cooldown = 4;
    c.init_sample = 700;
    c.batch = 170;
    compare_training(&c, 2, "random init, unit decoder, sparse Adam, clip");
    /* Large dictionary, small batch: few features fire per step, so the
     * sparse exchange sends a fraction of the rows. */
    c = train_case_of(x, n, d);
    c.features = 512;
    c.k = 2;
    c.batch = 50;
    c.tokens = 600;
    c.init_sample = 1000;
    compare_training(&c, 3, "sparse exchange, batch k < d_sae");
    free(x);
}
END_TEST

/* The public step with workers: each passes its part of one global batch
 * (one passes none); the model moves as a single step on the batch. */
struct step_case {
    const float *x;
    int64_t d;
    const int64_t *parts; /* rows per worker, in order */
};

static void step_job(struct worker *w)
{
    const struct step_case *c = w->arg;
    int64_t first = 0;
    for (int r = 0; r < w->rank; r++)
        first += c->parts[r];
    int64_t total = 0;
    for (int r = 0; r < w->size; r++)
        total += c->parts[r];
    subsae_buffer *all = NULL, *mine = NULL;
    subsae_trainer *t = NULL;
    int rc = subsae_buffer_wrap(c->x, SUBSAE_DTYPE_F32, total, c->d, c->d, SUBSAE_BORROW, &all);
    if (!rc)
        rc = subsae_buffer_view(all, first, c->parts[w->rank], &mine);
    if (!rc)
        rc = subsae_trainer_create(&t);
    if (!rc)
        rc = subsae_trainer_set_int(t, SUBSAE_TRAIN_FEATURES, 40);
    if (!rc)
        rc = subsae_trainer_set_int(t, SUBSAE_TRAIN_K, 3);
    if (!rc)
        rc = subsae_trainer_set_collective(t, fake_allreduce, w->rank, w->size, &w->member);
    if (!rc)
        rc = subsae_trainer_init(t, mine, NULL);
    for (int s = 0; s < 3 && !rc; s++)
        rc = subsae_trainer_step(t, c->parts[w->rank] ? c->x + first * c->d : NULL, c->d, NULL,
                                 0, c->parts[w->rank]);
    if (rc)
        record_failure(w, rc);
    else
        rc = trainer_results(t, w);
    subsae_trainer_free(t);
    subsae_buffer_free(mine);
    subsae_buffer_free(all);
}

START_TEST(public_step_splits_a_batch)
{
    subsae_set_num_threads(1);
    const int64_t d = 10, parts[3] = {70, 0, 50}, n = 120;
    float *x = structured_rows(7, n, d, 4);
    struct worker single = {0};
    subsae_buffer *buf;
    subsae_trainer *t;
    ck_assert_ok(subsae_buffer_wrap(x, SUBSAE_DTYPE_F32, n, d, d, SUBSAE_BORROW, &buf));
    ck_assert_ok(subsae_trainer_create(&t));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_FEATURES, 40));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_K, 3));
    ck_assert_ok(subsae_trainer_init(t, buf, NULL));
    for (int s = 0; s < 3; s++)
        ck_assert_ok(subsae_trainer_step(t, x, d, NULL, 0, n));
    ck_assert_ok(trainer_results(t, &single));
    subsae_trainer_free(t);
    subsae_buffer_free(buf);

    struct step_case c = {x, d, parts};
    struct group g;
    struct worker ws[MAX_WORKERS];
    run_workers(&g, ws, 3, step_job, &c);
    struct train_case shape = {.features = 40, .d = d};
    for (int r = 0; r < 3; r++) {
        ck_assert_msg(ws[r].rc == SUBSAE_OK, "worker %d: %s", r, ws[r].message);
        for (int i = 0; i < 4; i++)
            ck_assert_double_le(rel_diff(ws[r].params[i], single.params[i],
                                         param_count(&shape, i)),
                                1e-5);
        ck_assert_int_eq(ws[r].ivalue[1], single.ivalue[1]); /* tokens: the global rows */
        ck_assert_double_eq_tol(ws[r].dvalue[3], single.dvalue[3], 1e-5 * single.dvalue[3]);
    }
    group_destroy(&g);
    workers_free(ws, 3);
    workers_free(&single, 1);
    free(x);
}
END_TEST

/* The last row that the initialisation sample (count distinct rows of
 * [0, rows) drawn from the seed, as trainer.c's draw_sample) leaves out. */
static int64_t row_outside_sample(int64_t seed, int64_t rows, int64_t count)
{
    bool *taken = calloc((size_t)rows, sizeof *taken);
    subsae__rng rng;
    subsae__rng_seed(&rng, (uint64_t)seed, SUBSAE__STREAM_SAMPLE);
    for (int64_t i = 0; i < count;) {
        int64_t r = (int64_t)subsae__rng_below(&rng, (uint64_t)rows);
        if (!taken[r]) {
            taken[r] = true;
            i++;
        }
    }
    int64_t last = rows - 1;
    while (taken[last])
        last--;
    free(taken);
    return last;
}

START_TEST(training_failures_are_agreed)
{
    subsae_set_num_threads(1);
    const int64_t n = 800, d = 10;
    float *x = structured_rows(8, n, d, 4);
    struct group g;
    struct worker ws[MAX_WORKERS];

    /* A NaN row that only the training batches reach: one the init sample
     * of 300 rows (drawn as subsae_trainer_init draws it) does not hold. */
    struct train_case c = train_case_of(x, n, d);
    c.init_sample = 300;
    c.batch = 100;
    c.nan_row = row_outside_sample(c.seed, n, c.init_sample);
    run_workers(&g, ws, 2, train_job, &c);
    expect_agreed_failure(ws, 2, SUBSAE_E_NONFINITE, 1, SUBSAE_REASON_NONFINITE_INPUT,
                          SUBSAE_REASON_PEER_FAILED);
    ck_assert(!g.mismatch);
    /* The workers stopped at the same step with the same weights. */
    ck_assert(ws[0].params[0] && ws[1].params[0]);
    ck_assert_int_eq(ws[0].ivalue[0], ws[1].ivalue[0]);
    for (int i = 0; i < 4; i++)
        ck_assert(memcmp(ws[0].params[i], ws[1].params[i], (size_t)param_count(&c, i) * 4) == 0);
    group_destroy(&g);
    workers_free(ws, 2);

    /* Worker 2's callback cancels after step 3: everyone stops there. */
    c = train_case_of(x, n, d);
    c.batch = 100;
    c.cancel_rank = 2;
    c.cancel_step = 3;
    run_workers(&g, ws, 3, train_job, &c);
    expect_agreed_failure(ws, 3, SUBSAE_E_CANCELLED, 2, SUBSAE_REASON_CANCELLED,
                          SUBSAE_REASON_PEER_FAILED);
    for (int r = 0; r < 3; r++) {
        ck_assert_int_eq(ws[r].ivalue[0], 3);
        ck_assert_int_eq(ws[r].ivalue[1], 300);
    }
    group_destroy(&g);
    workers_free(ws, 3);

    /* A cancel after the last step of the fit is agreed too. */
    c.cancel_rank = 1;
    c.cancel_step = 16; /* 2 epochs of 8 steps */
    run_workers(&g, ws, 2, train_job, &c);
    expect_agreed_failure(ws, 2, SUBSAE_E_CANCELLED, 1, SUBSAE_REASON_CANCELLED,
                          SUBSAE_REASON_PEER_FAILED);
    for (int r = 0; r < 2; r++)
        ck_assert_int_eq(ws[r].ivalue[0], 16);
    group_destroy(&g);
    workers_free(ws, 2);

    /* Weights that drift apart are caught at the end of the next fit. */
    c = train_case_of(x, n, d);
    c.batch = 100;
    c.perturb_rank = 1;
    run_workers(&g, ws, 2, train_job, &c);
    for (int r = 0; r < 2; r++) {
        ck_assert_msg(ws[r].rc == SUBSAE_E_STATE, "worker %d: %s", r, ws[r].message);
        ck_assert_int_eq(ws[r].reason, SUBSAE_REASON_WORKERS_DIVERGED);
    }
    group_destroy(&g);
    workers_free(ws, 2);
    free(x);
}
END_TEST

START_TEST(distributed_checkpoint_resumes_in_one_process)
{
    subsae_set_num_threads(1);
    const int64_t n = 1200, d = 12;
    float *x = structured_rows(9, n, d, 5);
    char dir[512];
    harness_tmp_path("ckpt", dir, sizeof dir);
    struct train_case c = train_case_of(x, n, d);
    c.batch = 150;
    c.tokens = 1200;
    c.checkpoint = dir;
    struct group g;
    struct worker ws[MAX_WORKERS];
    run_workers(&g, ws, 2, train_job, &c);
    ck_assert_msg(ws[0].rc == SUBSAE_OK, "%s", ws[0].message);
    ck_assert_msg(ws[1].rc == SUBSAE_OK, "%s", ws[1].message);
    group_destroy(&g);
    workers_free(ws, 2);

    /* Resume alone for another epoch: the same as one process for two. */
    subsae_trainer *t;
    subsae_buffer *buf;
    ck_assert_ok(subsae_trainer_load_checkpoint(dir, &t));
    ck_assert_ok(subsae_buffer_wrap(x, SUBSAE_DTYPE_F32, n, d, d, SUBSAE_BORROW, &buf));
    ck_assert_ok(subsae_trainer_fit(t, buf, NULL, 1200));
    struct worker resumed = {0}, single;
    ck_assert_ok(trainer_results(t, &resumed));
    train_single(&c, 2400, &single);
    for (int i = 0; i < 4; i++)
        ck_assert_double_le(rel_diff(resumed.params[i], single.params[i], param_count(&c, i)),
                            1e-5);
    ck_assert_int_eq(resumed.ivalue[0], single.ivalue[0]);
    subsae_trainer_free(t);
    subsae_buffer_free(buf);
    workers_free(&resumed, 1);
    workers_free(&single, 1);
    free(x);
}
END_TEST

SUBSAE_SUITE(collective)
{
    Suite *s = suite_create("collective");
    TCase *tc = harness_case(s, "subspace", 120);
    tcase_add_test(tc, subspace_exact_matches_one_process);
    tcase_add_test(tc, subspace_randomized_matches_one_process);
    tcase_add_test(tc, subspace_worker_without_rows);
    tcase_add_test(tc, subspace_failures_are_agreed);
    tcase_add_test(tc, setters_validate);
    tc = harness_case(s, "training", 240);
    tcase_add_test(tc, init_is_bit_identical);
    tcase_add_test(tc, training_matches_one_process);
    tcase_add_test(tc, training_recipes_match_one_process);
    tcase_add_test(tc, training_variants_match_one_process);
    tcase_add_test(tc, public_step_splits_a_batch);
    tcase_add_test(tc, training_failures_are_agreed);
    tcase_add_test(tc, distributed_checkpoint_resumes_in_one_process);
    return s;
}
