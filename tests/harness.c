/* The single Check runner for every registered suite. */
#define _GNU_SOURCE
#include "harness.h"

#include "rng.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { MAX_SUITES = 64 };
struct registered_suite {
    const char *name;
    harness_suite_factory factory;
};
static struct registered_suite registered[MAX_SUITES];
static int factory_count;

void harness_register(harness_suite_factory factory, const char *name)
{
    if (factory_count == MAX_SUITES) {
        fprintf(stderr, "harness: more than %d suites\n", MAX_SUITES);
        exit(2);
    }
    registered[factory_count].name = name;
    registered[factory_count++].factory = factory;
}

static void remove_tmpdir(void);

/* Every test starts without a temporary directory and its own is removed
 * when it ends: with Check's fork mode each test is a process anyway, and
 * in no-fork mode (CK_FORK=no, make valgrind) this keeps tests apart. */
static void test_boundary(void)
{
    remove_tmpdir();
}

TCase *harness_case(Suite *suite, const char *name, double timeout_seconds)
{
    TCase *tc = tcase_create(name);
    /* Timeouts catch hangs, not slowness: a test given `timeout_seconds`
     * takes a fraction of it on an idle machine, and the margin of 3 keeps
     * a machine shared with other jobs (CI, load average 4-6) from failing
     * a correct test. Sanitizers slow everything about 4 times more. */
    double scale = harness_sanitized() ? 12.0 : 3.0;
    tcase_set_timeout(tc, timeout_seconds * scale);
    tcase_add_checked_fixture(tc, test_boundary, test_boundary);
    suite_add_tcase(suite, tc);
    return tc;
}

static const char *env_or(const char *name, const char *fallback)
{
    const char *value = getenv(name);
    return value && *value ? value : fallback;
}

const char *harness_build_dir(void)
{
    return env_or("SUBSAE_BUILD", "build");
}

const char *harness_source_dir(void)
{
    return env_or("SUBSAE_SOURCE", ".");
}

const char *harness_shared_dir(void)
{
    static char path[4096];
    static int state; /* 0 unknown, 1 present, -1 absent */
    if (state == 0) {
        snprintf(path, sizeof path, "%s/data/stories260K/reference.json",
                 env_or("SUBSAE_SHARED", "../shared"));
        struct stat st;
        state = stat(path, &st) == 0 ? 1 : -1;
        snprintf(path, sizeof path, "%s", env_or("SUBSAE_SHARED", "../shared"));
        if (state < 0)
            fprintf(stderr, "note: %s/data/stories260K not found: tests that need "
                            "the shared data skip\n", path);
    }
    return state > 0 ? path : NULL;
}

const char *harness_shared_file(const char *name, char *buf, size_t size)
{
    const char *shared = harness_shared_dir();
    if (!shared)
        return NULL;
    snprintf(buf, size, "%s/data/stories260K/%s", shared, name);
    return buf;
}

void harness_skip(const char *test, const char *reason)
{
    fprintf(stderr, "SKIP %s: %s\n", test, reason);
}

subsae_trainer *harness_trainer(int activation, int64_t features, int64_t k, int init,
                                int64_t batch, int64_t seed, int threads)
{
    subsae_trainer *t;
    ck_assert_ok(subsae_trainer_create(&t));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_ACTIVATION, activation));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_FEATURES, features));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_K, k));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_INIT, init));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_BATCH, batch));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_SEED, seed));
    if (threads > 0)
        ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_THREADS, threads));
    return t;
}

void harness_write_text(const char *dir, const char *name, const char *text)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_ge(fputs(text, f), 0);
    ck_assert_int_eq(fclose(f), 0);
}

bool harness_real_split(const char *test, const char *name, int64_t rows,
                        struct harness_split *out)
{
    if (!harness_shared_file(name, out->path, sizeof out->path)) {
        harness_skip(test, "the shared stories260K data is absent");
        return false;
    }
    if (harness_slow()) {
        harness_skip(test, "too long under sanitizers or valgrind");
        return false;
    }
    ck_assert_ok(subsae_buffer_open(out->path, NULL, &out->all));
    if (rows == 0)
        rows = subsae_buffer_rows(out->all);
    ck_assert_int_ge(subsae_buffer_rows(out->all), rows);
    out->n_train = rows * 7 / 8;
    out->n_eval = rows - out->n_train;
    ck_assert_ok(subsae_buffer_view(out->all, 0, out->n_train, &out->train));
    ck_assert_ok(subsae_buffer_view(out->all, out->n_train, out->n_eval, &out->eval));
    return true;
}

void harness_split_free(struct harness_split *split)
{
    subsae_buffer_free(split->train);
    subsae_buffer_free(split->eval);
    subsae_buffer_free(split->all);
}

static char tmpdir[256];
static pid_t tmpdir_owner, atexit_owner;

static void remove_tmpdir(void)
{
    if (tmpdir[0] && tmpdir_owner == getpid()) {
        char command[300];
        snprintf(command, sizeof command, "rm -rf '%s'", tmpdir);
        if (system(command) != 0)
            fprintf(stderr, "harness: could not remove %s\n", tmpdir);
    }
    tmpdir[0] = '\0';
}

const char *harness_tmpdir(void)
{
    /* One directory per test (see test_boundary), made on first use and
     * removed when the test ends or its process exits. */
    if (tmpdir_owner != getpid() || !tmpdir[0]) {
        tmpdir_owner = getpid();
        snprintf(tmpdir, sizeof tmpdir, "/tmp/subsae-test-XXXXXX");
        if (!mkdtemp(tmpdir)) {
            perror("mkdtemp");
            exit(2);
        }
        if (atexit_owner != getpid()) {
            atexit_owner = getpid();
            atexit(remove_tmpdir);
        }
    }
    return tmpdir;
}

const char *harness_tmp_path(const char *name, char *buf, size_t size)
{
    snprintf(buf, size, "%s/%s", harness_tmpdir(), name);
    return buf;
}

int harness_run(const char *command)
{
    fflush(stdout);
    fflush(stderr);
    int status = system(command);
    if (status == -1 || !WIFEXITED(status))
        return -1;
    return WEXITSTATUS(status);
}

int harness_program(const char *program, const char *args, const char *stdout_name)
{
    char out[600], command[4096];
    harness_tmp_path(stdout_name, out, sizeof out);
    /* In the test's directory: a run without --out saves there. */
    snprintf(command, sizeof command, "cd '%s' && '%s/bin/%s' %s > '%s' 2> '%s.err'",
             harness_tmpdir(), harness_build_dir(), program, args, out, out);
    return harness_run(command);
}

int harness_cli(const char *args, const char *stdout_name)
{
    return harness_program("subsae", args, stdout_name);
}

json_t *harness_read_json(const char *name)
{
    char path[600];
    harness_tmp_path(name, path, sizeof path);
    json_error_t error;
    json_t *value = json_load_file(path, 0, &error);
    ck_assert_msg(value != NULL, "%s: %s (line %d)", path, error.text, error.line);
    return value;
}

json_t *harness_json_at(const char *dir, const char *name)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    json_error_t error;
    json_t *value = json_load_file(path, 0, &error);
    ck_assert_msg(value != NULL, "%s: %s (line %d)", path, error.text, error.line);
    return value;
}

double harness_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void harness_sleep(double seconds)
{
    struct timespec ts = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

bool harness_sanitized(void)
{
    return getenv("SUBSAE_SANITIZE") != NULL;
}

bool harness_valgrind(void)
{
    return getenv("SUBSAE_VALGRIND") != NULL;
}

bool harness_tsan(void)
{
    return getenv("SUBSAE_TSAN") != NULL;
}

bool harness_slow(void)
{
    return harness_sanitized() || harness_valgrind() || harness_tsan();
}

static int compare_suite_names(const void *a, const void *b)
{
    const struct registered_suite *sa = a, *sb = b;
    return strcmp(sa->name, sb->name);
}

int main(void)
{
    /* Sorted by name so the run order does not depend on link order. */
    qsort(registered, (size_t)factory_count, sizeof registered[0], compare_suite_names);
    SRunner *runner = srunner_create(NULL);
    for (int i = 0; i < factory_count; i++)
        srunner_add_suite(runner, registered[i].factory());
    srunner_run_all(runner, CK_ENV);
    int failed = srunner_ntests_failed(runner);
    srunner_free(runner);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

float *harness_normal_rows(uint64_t seed, int64_t n, int64_t d, double offset)
{
    subsae__rng rng;
    subsae__rng_seed(&rng, seed, 99);
    float *x = malloc((size_t)(n * d) * sizeof *x);
    ck_assert_ptr_nonnull(x);
    for (int64_t i = 0; i < n * d; i++)
        x[i] = (float)(offset + subsae__rng_normal(&rng));
    return x;
}

subsae_buffer *harness_wrap_copy(const float *x, int64_t n, int64_t d)
{
    subsae_buffer *b;
    ck_assert_ok(subsae_buffer_wrap(x, SUBSAE_DTYPE_F32, n, d, d, SUBSAE_COPY, &b));
    return b;
}

void harness_check_gradient(double *theta, int64_t count, const float *analytic,
                            double (*loss)(void *ctx), void *ctx, const char *name)
{
    const double h = 1e-4;
    double err2 = 0.0, ref2 = 0.0, max_ref = 0.0;
    double *fd = malloc((size_t)count * sizeof *fd);
    ck_assert_ptr_nonnull(fd);
    for (int64_t i = 0; i < count; i++) {
        double keep = theta[i];
        theta[i] = keep + h;
        double up = loss(ctx);
        theta[i] = keep - h;
        double down = loss(ctx);
        theta[i] = keep;
        fd[i] = (up - down) / (2 * h);
        if (fabs(fd[i]) > max_ref)
            max_ref = fabs(fd[i]);
    }
    for (int64_t i = 0; i < count; i++) {
        double e = analytic[i] - fd[i];
        err2 += e * e;
        ref2 += fd[i] * fd[i];
        ck_assert_msg(fabs(e) <= 1e-3 * max_ref + 1e-7,
                      "%s[%lld]: analytic %.8g, finite differences %.8g", name, (long long)i,
                      (double)analytic[i], fd[i]);
    }
    ck_assert_msg(ref2 > 0.0, "%s: gradient is zero, the test does not exercise it", name);
    ck_assert_msg(sqrt(err2 / ref2) < 2e-4, "%s: relative error %g", name, sqrt(err2 / ref2));
    free(fd);
}
