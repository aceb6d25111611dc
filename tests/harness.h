/* The test harness: every tests/test_*.c registers its Check suites with
 * SUBSAE_SUITE and one runner (harness.c) runs them all, so that `make
 * check` ends with a single Check summary line. CK_RUN_SUITE=name and
 * CK_RUN_CASE=name select a part, as Check documents. */
#ifndef SUBSAE_TEST_HARNESS_H
#define SUBSAE_TEST_HARNESS_H

#include <check.h>
#include <stdbool.h>
#include <stdint.h>

#include "subsae.h"

typedef Suite *(*harness_suite_factory)(void);
void harness_register(harness_suite_factory factory, const char *name);

/* SUBSAE_SUITE(name) { Suite *s = suite_create("name"); ...; return s; } */
#define SUBSAE_SUITE(name)                                                  \
    static Suite *name(void);                                               \
    __attribute__((constructor)) static void harness_register_##name(void) \
    {                                                                       \
        harness_register(name, #name);                                      \
    }                                                                       \
    static Suite *name(void)

/* Add a test case with one or more tests and a timeout in seconds (what
 * the tests take on an idle machine, with room; harness.c scales it). */
TCase *harness_case(Suite *suite, const char *name, double timeout_seconds);

/* Paths given by the Makefile through the environment. */
const char *harness_build_dir(void);  /* the build directory (absolute) */
const char *harness_source_dir(void); /* the source tree */
/* The shared data folder, or NULL (with the reason printed once) when it is
 * absent: tests that need it then skip. */
const char *harness_shared_dir(void);
/* Path of a file of the shared stories260K data set into buf (NULL when the
 * shared folder is absent). */
const char *harness_shared_file(const char *name, char *buf, size_t size);

/* The held-out split of the README's real-data tables: the shared file
 * `name` opened (all), its first `rows` rows (every row when rows is 0)
 * cut into the first 7/8 (train) and the rest (eval). */
struct harness_split {
    char path[1024];
    subsae_buffer *all, *train, *eval;
    int64_t n_train, n_eval;
};
/* False, having printed why `test` skips, when the shared data is absent
 * or under sanitizers or valgrind (such runs take tens of seconds); asserts
 * that the file opens and holds `rows` rows. */
bool harness_real_split(const char *test, const char *name, int64_t rows,
                        struct harness_split *out);
/* Free the three buffers of a split. */
void harness_split_free(struct harness_split *split);

/* A trainer with the options every test sets (asserts success): the
 * activation, features, k, init, batch and seed, and `threads` when it is
 * above 0 (else the library's default). */
subsae_trainer *harness_trainer(int activation, int64_t features, int64_t k, int init,
                                int64_t batch, int64_t seed, int threads);

/* Print that the calling test skips, and why. */
void harness_skip(const char *test, const char *reason);

/* A fresh temporary directory for the calling test (removed at exit). */
const char *harness_tmpdir(void);
/* tmpdir/name into buf. */
const char *harness_tmp_path(const char *name, char *buf, size_t size);

/* Run a shell command; return its exit status (-1 if it did not exit). */
int harness_run(const char *command);

/* Run `build/bin/subsae ARGS` in the test's directory (give absolute paths)
 * with stdout and stderr captured there as STDOUT_NAME and
 * STDOUT_NAME.err; its exit status. */
int harness_cli(const char *args, const char *stdout_name);
/* The same for another program of build/bin (e.g. "subsae-llama"). */
int harness_program(const char *program, const char *args, const char *stdout_name);

/* Write `text` to dir/name (asserts success). */
void harness_write_text(const char *dir, const char *name, const char *text);

/* Parse a JSON file of the test's directory (fails the test if invalid);
 * the caller json_decref()s it. */
struct json_t *harness_read_json(const char *name);

/* Parse dir/name as JSON (fails the test if invalid); json_decref it. */
struct json_t *harness_json_at(const char *dir, const char *name);

/* Seconds of a monotonic clock, and a sleep that resumes after signals. */
double harness_now(void);
void harness_sleep(double seconds);

/* True when the library is built with sanitizers (slow paths are shrunk). */
bool harness_sanitized(void);
/* True under `make valgrind` (SUBSAE_VALGRIND=1: memcheck, Check in no-fork
 * mode, so no timeouts and one process for every test). */
bool harness_valgrind(void);
/* True under `make tsan` (SUBSAE_TSAN=1: ThreadSanitizer build). */
bool harness_tsan(void);
/* Any of the three: tests shrink their largest sizes (every test still
 * runs). */
bool harness_slow(void);

/* n x d float32 rows (malloc'd, the caller frees them): offset + a
 * standard normal draw from the library's seeded generator. */
float *harness_normal_rows(uint64_t seed, int64_t n, int64_t d, double offset);
/* A buffer holding a copy of n x d rows (asserts success). */
subsae_buffer *harness_wrap_copy(const float *x, int64_t n, int64_t d);

/* Check an analytic gradient against central differences (step 1e-4) of
 * loss(ctx) in each of theta[0..count): every entry within 1e-3 of the
 * largest finite difference (+ 1e-7), relative error in norm below 2e-4,
 * and the finite differences not all zero. theta is restored. */
void harness_check_gradient(double *theta, int64_t count, const float *analytic,
                            double (*loss)(void *ctx), void *ctx, const char *name);

/* Assert a libsubsae call succeeded, showing the library's message. */
#define ck_assert_ok(call)                                                  \
    do {                                                                    \
        int harness_status_ = (call);                                       \
        ck_assert_msg(harness_status_ == SUBSAE_OK, "%s -> %d (%s): %s",    \
                      #call, harness_status_,                               \
                      subsae_status_string(harness_status_),                \
                      subsae_last_error());                                 \
    } while (0)

/* Assert a call failed with `status`; the message must be non-empty. */
#define ck_assert_status(call, status)                                      \
    do {                                                                    \
        int harness_status_ = (call);                                       \
        ck_assert_msg(harness_status_ == (status), "%s -> %d (%s), want %d: %s", \
                      #call, harness_status_,                               \
                      subsae_status_string(harness_status_), (int)(status), \
                      subsae_last_error());                                 \
        ck_assert_msg(subsae_last_error()[0] != '\0', "%s: empty message", #call); \
    } while (0)

#endif
