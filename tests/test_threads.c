/* Independent handles on several threads at once: each thread builds and
 * reads buffers, saves and reopens files, iterates batches and fits
 * subspaces (both methods), and its results must equal, bit for bit, the
 * same work done alone. Meanwhile every thread also reads one shared
 * buffer (the const functions may run concurrently) and checks that its
 * last-error record is its own.
 *
 * The normal suite runs this as a correctness test; `make tsan` builds the
 * library and this suite with ThreadSanitizer (build/tsan) and runs it with
 * one library/OpenBLAS thread per caller thread: libgomp is not
 * instrumented, and its thread pool would give false reports (see the
 * Makefile). The normal suite runs `make tsan` too (test tsan_clean). */
#include "harness.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { THREADS = 4, ROUNDS = 2, N = 240, D = 10 };

struct result {
    int rc;
    char where[64];
    char message[512];
    float mean[D];
    double mean_norm;
    int64_t skipped;
    double batch_checksum;
    double total[2];
    double variances[2][D];
    float basis[2][D * D];
    float shared_rows[8 * D];
    double shared_norm;
};

struct job {
    int id;
    const subsae_buffer *shared;
    struct result result;
};

static void fill(int id, float *x, int64_t n, int64_t d)
{
    uint32_t s = 2654435761u * (uint32_t)(id + 1);
    for (int64_t i = 0; i < n * d; i++) {
        s = s * 1664525u + 1013904223u;
        float noise = (float)((s >> 9) % 20001) / 10000.0f - 1.0f;
        int64_t j = i % d;
        x[i] = noise * (float)(d - j) / (float)d + (float)id * 0.1f;
    }
    for (int64_t r = 5; r < n; r += 37) /* some rows to skip */
        x[r * d + (r % d)] = r % 2 ? NAN : -INFINITY;
}

#define STEP(call)                                                                \
    do {                                                                          \
        int rc_ = (call);                                                         \
        if (rc_ != SUBSAE_OK) {                                                   \
            res->rc = rc_;                                                        \
            snprintf(res->where, sizeof res->where, "line %d", __LINE__);         \
            snprintf(res->message, sizeof res->message, "%s", subsae_last_error()); \
            goto done;                                                            \
        }                                                                         \
    } while (0)

/* Everything one thread does with handles of its own. */
static void work(int id, const subsae_buffer *shared, struct result *res)
{
    memset(res, 0, sizeof *res);
    float *x = malloc(sizeof(float) * N * D), *all = malloc(sizeof(float) * 2 * N * D);
    subsae_buffer *buf = NULL, *files = NULL;
    subsae_batches *it = NULL;
    subsae_subspace *sub = NULL;
    char npy[512], st[512], name[64];
    fill(id, x, N, D);

    /* A growable buffer: copy half, append the rest as f16 after skipping. */
    STEP(subsae_buffer_create(D, &buf));
    STEP(subsae_buffer_skip_nonfinite(buf, NULL));
    STEP(subsae_buffer_append(buf, x, SUBSAE_DTYPE_F32, N, D));
    res->skipped = N - subsae_buffer_rows(buf);
    STEP(subsae_buffer_stats(buf, res->mean, &res->mean_norm, NULL, NULL));

    /* Saved both ways, reopened as shards: the same rows twice. */
    snprintf(name, sizeof name, "thread-%d.npy", id);
    harness_tmp_path(name, npy, sizeof npy);
    snprintf(name, sizeof name, "thread-%d.safetensors", id);
    harness_tmp_path(name, st, sizeof st);
    STEP(subsae_buffer_save_npy(buf, npy, SUBSAE_DTYPE_F32));
    STEP(subsae_buffer_save_safetensors(buf, st, "x", SUBSAE_DTYPE_F32));
    const char *paths[2] = {npy, st};
    STEP(subsae_buffer_open_shards(paths, 2, "x", &files));
    int64_t rows = subsae_buffer_rows(buf);
    STEP(subsae_buffer_read(files, 0, 2 * rows, all, D));
    if (memcmp(all, all + rows * D, sizeof(float) * (size_t)(rows * D)) != 0) {
        res->rc = -100;
        snprintf(res->where, sizeof res->where, "shards differ");
        goto done;
    }

    /* Shuffled batches over the files. */
    STEP(subsae_batches_create(files, 16, (uint64_t)id, SUBSAE_BATCH_SHUFFLE, &it));
    for (int b = 0; b < 40; b++) {
        int64_t n = 0;
        STEP(subsae_batches_next(it, x, D, &n, NULL));
        for (int64_t i = 0; i < n * D; i++)
            res->batch_checksum += x[i] * (double)(b + 1);
    }

    /* Subspaces, exact and randomized. */
    for (int m = 0; m < 2; m++) {
        STEP(subsae_subspace_create(&sub));
        STEP(subsae_subspace_set_int(sub, SUBSAE_SUBSPACE_METHOD,
                                     m ? SUBSAE_METHOD_RANDOMIZED : SUBSAE_METHOD_EXACT));
        STEP(subsae_subspace_set_int(sub, SUBSAE_SUBSPACE_BATCH_ROWS, 64));
        if (m)
            STEP(subsae_subspace_set_int(sub, SUBSAE_SUBSPACE_RANK, 4));
        STEP(subsae_subspace_fit(sub, files));
        int64_t k = 0;
        STEP(subsae_subspace_get_int(sub, SUBSAE_SUBSPACE_RANK_FOUND, &k));
        STEP(subsae_subspace_total_variance(sub, &res->total[m]));
        STEP(subsae_subspace_variances(sub, res->variances[m], k));
        STEP(subsae_subspace_basis(sub, k, res->basis[m], D));
        subsae_subspace_free(sub);
        sub = NULL;
    }

    /* The shared buffer, read concurrently by every thread. */
    int64_t pick[8];
    for (int i = 0; i < 8; i++)
        pick[i] = (id * 7 + i * 13) % subsae_buffer_rows(shared);
    STEP(subsae_buffer_gather(shared, pick, 8, res->shared_rows, D));
    STEP(subsae_buffer_stats(shared, NULL, &res->shared_norm, NULL, NULL));

    /* This thread's failure is this thread's message. */
    char expected[64];
    snprintf(expected, sizeof expected, "thread-%d-missing.npy", id);
    harness_tmp_path(expected, npy, sizeof npy);
    subsae_buffer *none = NULL;
    if (subsae_buffer_open(npy, NULL, &none) != SUBSAE_E_IO || !strstr(subsae_last_error(), expected)) {
        res->rc = -101;
        snprintf(res->where, sizeof res->where, "last error not thread-local");
        snprintf(res->message, sizeof res->message, "%s", subsae_last_error());
    }
done:
    subsae_subspace_free(sub);
    subsae_batches_free(it);
    subsae_buffer_free(files);
    subsae_buffer_free(buf);
    free(all);
    free(x);
}

static void *run_job(void *arg)
{
    struct job *j = arg;
    work(j->id, j->shared, &j->result);
    return NULL;
}

static void assert_same(const struct result *got, const struct result *want, int id)
{
    ck_assert_msg(got->rc == SUBSAE_OK, "thread %d failed at %s: %d %s", id, got->where, got->rc,
                  got->message);
    ck_assert_msg(memcmp(got, want, sizeof *got) == 0,
                  "thread %d: results differ from the same work done alone", id);
}

START_TEST(independent_handles_concurrently)
{
    if (harness_tsan())
        subsae_set_num_threads(1); /* see the comment at the top */
    harness_tmpdir(); /* created before the threads share it */

    /* The shared buffer: a file, non-finite rows skipped. */
    float *x = malloc(sizeof(float) * N * D);
    fill(99, x, N, D);
    subsae_buffer *mem = NULL, *shared = NULL;
    char path[512];
    ck_assert_ok(subsae_buffer_wrap(x, SUBSAE_DTYPE_F32, N, D, D, SUBSAE_BORROW, &mem));
    ck_assert_ok(subsae_buffer_skip_nonfinite(mem, NULL));
    ck_assert_ok(subsae_buffer_save_npy(mem, harness_tmp_path("shared.npy", path, sizeof path),
                                        SUBSAE_DTYPE_F16));
    ck_assert_ok(subsae_buffer_open(path, NULL, &shared));

    /* Alone first: the reference results. */
    static struct result alone[THREADS];
    for (int i = 0; i < THREADS; i++) {
        work(i, shared, &alone[i]);
        ck_assert_msg(alone[i].rc == SUBSAE_OK, "alone %d failed at %s: %s", i, alone[i].where,
                      alone[i].message);
        ck_assert_int_gt(alone[i].skipped, 0);
        ck_assert(isfinite(alone[i].total[0]) && alone[i].total[0] > 0);
    }
    /* Then all at once, twice. */
    for (int round = 0; round < ROUNDS; round++) {
        static struct job jobs[THREADS];
        pthread_t threads[THREADS];
        for (int i = 0; i < THREADS; i++) {
            jobs[i] = (struct job){.id = i, .shared = shared};
            ck_assert_int_eq(pthread_create(&threads[i], NULL, run_job, &jobs[i]), 0);
        }
        for (int i = 0; i < THREADS; i++)
            ck_assert_int_eq(pthread_join(threads[i], NULL), 0);
        for (int i = 0; i < THREADS; i++)
            assert_same(&jobs[i].result, &alone[i], i);
    }
    subsae_buffer_free(shared);
    subsae_buffer_free(mem);
    free(x);
}
END_TEST

/* The ThreadSanitizer build of this suite (make tsan) reports nothing. */
START_TEST(tsan_clean)
{
    if (harness_tsan()) {
        harness_skip("tsan_clean", "this is the ThreadSanitizer run itself");
        return;
    }
    char command[4096];
    snprintf(command, sizeof command, "make -s -j2 -C '%s' tsan", harness_source_dir());
    ck_assert_msg(harness_run(command) == 0, "make tsan failed (ThreadSanitizer report above)");
}
END_TEST

SUBSAE_SUITE(threads)
{
    Suite *s = suite_create("threads");
    TCase *tc = harness_case(s, "concurrent", 120);
    tcase_add_test(tc, independent_handles_concurrently);
    tc = harness_case(s, "tsan", 300);
    tcase_add_test(tc, tsan_clean);
    return s;
}
