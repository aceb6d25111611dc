/* Faults a long training run meets, end to end through `subsae train`:
 *  - SIGKILL at random moments while it writes checkpoints: the last
 *    checkpoint always loads and the run resumes from it (20 runs);
 *  - a diverging run (learning rate 1e6) stops with a non-finite status,
 *    the step that diverged changes nothing, and the last good checkpoint
 *    survives;
 *  - non-finite input rows are named by their index by every subcommand;
 *  - every file the library writes goes through the crash-safe writer. */
#include "harness.h"
#include "internal.h"
#include "synth.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- helpers ---------------------------------------------------------- */

/* Synthetic activations as a float32 .npy; rows listed in nan_rows get a
 * NaN (column 5) or an infinity (column 0). */
static const char *make_npy(const char *name, int64_t n, int64_t d, const int64_t *bad_rows,
                            int n_bad, char *path, size_t size)
{
    struct subsae__synth_spec spec = {.rows = n, .dim = d, .atoms = 40, .subspace_dim = d / 2,
                                      .active = 3, .coef_min = 0.5, .coef_max = 1.5,
                                      .noise = 0.05, .offset = 1.0, .seed = 3};
    float *x = malloc((size_t)(n * d) * sizeof *x);
    ck_assert_ok(subsae__synth(&spec, x, NULL));
    for (int i = 0; i < n_bad; i++)
        x[bad_rows[i] * d + (i % 2 ? 0 : 5 % d)] = i % 2 ? INFINITY : NAN;
    FILE *f = NULL;
    harness_tmp_path(name, path, size);
    /* Written by hand: the library refuses to save non-finite rows. */
    char header[128];
    int len = snprintf(header, sizeof header,
                       "{'descr': '<f4', 'fortran_order': False, 'shape': (%lld, %lld), }",
                       (long long)n, (long long)d);
    int total = (10 + len + 1 + 63) / 64 * 64;
    f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    unsigned char head[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0,
                              (unsigned char)((total - 10) & 0xff),
                              (unsigned char)((total - 10) >> 8)};
    fwrite(head, 1, 10, f);
    fwrite(header, 1, (size_t)len, f);
    for (int i = 10 + len; i < total - 1; i++)
        fputc(' ', f);
    fputc('\n', f);
    ck_assert_uint_eq(fwrite(x, sizeof *x, (size_t)(n * d), f), (size_t)(n * d));
    ck_assert_int_eq(fclose(f), 0);
    free(x);
    return path;
}

/* `subsae ARGS`, stdout and stderr to files of the test directory. */
static int run_cli(const char *args, const char *out_name, const char *err_name)
{
    char out[600], err[600], command[8192];
    harness_tmp_path(out_name, out, sizeof out);
    harness_tmp_path(err_name, err, sizeof err);
    snprintf(command, sizeof command, "'%s/bin/subsae' %s > '%s' 2> '%s'", harness_build_dir(),
             args, out, err);
    return harness_run(command);
}

static char *slurp(const char *name)
{
    char path[600];
    harness_tmp_path(name, path, sizeof path);
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    static char text[65536];
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = '\0';
    fclose(f);
    return text;
}

static json_t *read_json(const char *name)
{
    json_error_t error;
    json_t *j = json_loads(slurp(name), 0, &error);
    ck_assert_msg(j != NULL, "%s: %s", name, error.text);
    return j;
}

static int64_t json_int_field(const json_t *obj, const char *key)
{
    const json_t *v = json_object_get(obj, key);
    ck_assert_msg(json_is_integer(v), "field %s is not an integer", key);
    return (int64_t)json_integer_value(v);
}

static bool exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static int count_temporaries(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += strstr(e->d_name, ".tmp-") != NULL;
    closedir(d);
    return n;
}


/* Start `subsae train ...` in the background, output discarded. */
static pid_t start_training(const char *data, const char *out, int every)
{
    char cli[600], every_text[32];
    snprintf(cli, sizeof cli, "%s/bin/subsae", harness_build_dir());
    snprintf(every_text, sizeof every_text, "%d", every);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        dup2(null, 2);
        execl(cli, cli, "train", data, "--features", "48", "--k", "4", "--batch", "64",
              "--epochs", "1000", "--threads", "1", "--checkpoint-every", every_text, "--out",
              out, "--quiet", (char *)NULL);
        _exit(127);
    }
    return pid;
}

/* ---- SIGKILL while checkpointing ------------------------------------------ */

START_TEST(sigkill_leaves_a_checkpoint_that_resumes)
{
    const int runs = harness_valgrind() ? 5 : 20;
    char data[600];
    make_npy("acts.npy", 4000, 16, NULL, 0, data, sizeof data);
    srand(20240917);
    int with_temporaries = 0;
    double waited = 0;
    for (int run = 0; run < runs; run++) {
        char out[600], ckpt[700], manifest[800], name[64];
        snprintf(name, sizeof name, "run-%d", run);
        harness_tmp_path(name, out, sizeof out);
        snprintf(ckpt, sizeof ckpt, "%s/checkpoint", out);
        snprintf(manifest, sizeof manifest, "%s/checkpoint.json", ckpt);
        /* Checkpoints every 1 to 5 steps; the kill comes 0 to 400 ms after
         * the first checkpoint exists, so it lands anywhere in the cycle
         * of steps, state file writes, manifest replacement and cleanup. */
        int every = 1 + rand() % 5;
        pid_t pid = start_training(data, out, every);
        double start = harness_now();
        while (!exists(manifest) && harness_now() - start < 60)
            harness_sleep(0.002);
        ck_assert_msg(exists(manifest), "run %d: no checkpoint after 60 s", run);
        double delay = 0.4 * rand() / (double)RAND_MAX;
        harness_sleep(delay);
        waited += harness_now() - start;
        ck_assert_int_eq(kill(pid, SIGKILL), 0);
        int status = 0;
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
                      "run %d: the training ended before the kill (status %#x)", run, status);
        with_temporaries += count_temporaries(ckpt) > 0;

        /* The last checkpoint loads, at a step the schedule saves at. */
        subsae_trainer *t = NULL;
        ck_assert_msg(subsae_trainer_load_checkpoint(ckpt, &t) == SUBSAE_OK,
                      "run %d (every %d, killed %.3f s after the first checkpoint): %s", run,
                      every, delay, subsae_last_error());
        double m[SUBSAE_METRIC_COUNT];
        ck_assert_ok(subsae_trainer_metrics(t, m, SUBSAE_METRIC_COUNT));
        int64_t steps = (int64_t)m[SUBSAE_METRIC_STEPS];
        ck_assert_int_gt(steps, 0);
        ck_assert_int_eq(steps % every, 0);
        subsae_trainer_free(t);

        /* And the run resumes from it, for ten more steps (saving
         * checkpoints again, which clears the killed run's temporaries). */
        char args[4096];
        snprintf(args, sizeof args,
                 "train '%s' --resume '%s' --tokens %lld --threads 1 --checkpoint-every 5 "
                 "--out '%s' --quiet --json",
                 data, out, (long long)((steps + 10) * 64), out);
        ck_assert_msg(run_cli(args, "resume.json", "resume.err") == 0, "run %d: resume: %s", run,
                      slurp("resume.err"));
        json_t *j = read_json("resume.json");
        ck_assert_int_eq(json_int_field(j, "steps"), steps + 10);
        json_decref(j);
        ck_assert_msg(count_temporaries(ckpt) == 0, "run %d: temporaries left after resume", run);
        char command[1400];
        snprintf(command, sizeof command, "rm -rf '%s'", out);
        ck_assert_int_eq(harness_run(command), 0);
    }
    fprintf(stderr,
            "SIGKILL: %d of %d runs killed mid-checkpoint-cycle resumed from their last "
            "checkpoint (%d left a temporary file behind), %.1f s in training\n",
            runs, runs, with_temporaries, waited);
}
END_TEST

/* ---- divergence ------------------------------------------------------------ */

/* A good run with checkpoints, then its resumption with learning rate
 * 1e6: the run stops with a non-finite status and the checkpoint it
 * leaves loads, finite, no later than the divergence. */
START_TEST(diverging_run_keeps_the_last_good_checkpoint)
{
    char data[600], out[600], ckpt[700], args[4096];
    make_npy("acts.npy", 2000, 16, NULL, 0, data, sizeof data);
    harness_tmp_path("run", out, sizeof out);
    snprintf(ckpt, sizeof ckpt, "%s/checkpoint", out);
    snprintf(args, sizeof args,
             "train '%s' --features 48 --k 4 --batch 64 --tokens 1280 --threads 1 "
             "--checkpoint-every 5 --out '%s' --quiet --json",
             data, out);
    ck_assert_msg(run_cli(args, "good.json", "good.err") == 0, "%s", slurp("good.err"));

    snprintf(args, sizeof args,
             "train '%s' --resume '%s' --lr 1e6 --tokens 6400 --threads 1 --checkpoint-every 1 "
             "--out '%s' --quiet",
             data, out, out);
    int status = run_cli(args, "bad.out", "bad.err");
    const char *err = slurp("bad.err");
    ck_assert_msg(status != 0, "a learning rate of 1e6 did not stop the run");
    ck_assert_msg(strstr(err, "diverged") && strstr(err, "non-finite value"), "stderr: %s", err);
    ck_assert_msg(strchr(err, '\n') == err + strlen(err) - 1, "not one line: %s", err);
    /* ...saying that the steps before are saved, and how to resume. */
    ck_assert_msg(strstr(err, "steps before") && strstr(err, "resume with: subsae train") &&
                      strstr(err, "--resume"),
                  "stderr: %s", err);

    subsae_trainer *t = NULL;
    ck_assert_ok(subsae_trainer_load_checkpoint(ckpt, &t)); /* checks every value is finite */
    double m[SUBSAE_METRIC_COUNT];
    ck_assert_ok(subsae_trainer_metrics(t, m, SUBSAE_METRIC_COUNT));
    ck_assert_int_ge((int64_t)m[SUBSAE_METRIC_STEPS], 20);
    ck_assert_int_lt((int64_t)m[SUBSAE_METRIC_STEPS], 100);
    subsae_trainer_free(t);
    fprintf(stderr, "divergence: lr 1e6 stopped at step %.0f+1 with: %s",
            m[SUBSAE_METRIC_STEPS], err);

    /* Resumed from that checkpoint (with the rate it saved), the run fails
     * again at the same step, with the same message from the library:
     * nothing of the diverged step reached the disk. (What follows it, the
     * command to resume, repeats the command line, which differs.) */
    char first[2048];
    snprintf(first, sizeof first, "%s", err);
    *strstr(first, "; the ") = '\0';
    snprintf(args, sizeof args,
             "train '%s' --resume '%s' --tokens 6400 --threads 1 --checkpoint-every 1 "
             "--out '%s' --quiet",
             data, out, out);
    ck_assert_int_ne(run_cli(args, "again.out", "again.err"), 0);
    ck_assert_msg(!strncmp(slurp("again.err"), first, strlen(first)), "%s\nvs\n%s",
                  slurp("again.err"), first);
}
END_TEST

/* The step that would produce non-finite weights changes nothing: weights,
 * Adam state (seen through the next good step), counters. */
START_TEST(diverging_step_changes_nothing)
{
    enum { N = 256, D = 8 };
    struct subsae__synth_spec spec = {.rows = N, .dim = D, .atoms = 16, .subspace_dim = 6,
                                      .active = 2, .coef_min = 0.5, .coef_max = 1.5,
                                      .noise = 0.05, .offset = 1.0, .seed = 9};
    static float x[N * D];
    ck_assert_ok(subsae__synth(&spec, x, NULL));
    subsae_buffer *buf = NULL;
    ck_assert_ok(subsae_buffer_wrap(x, SUBSAE_DTYPE_F32, N, D, D, SUBSAE_BORROW, &buf));
    subsae_trainer *t[2];
    for (int i = 0; i < 2; i++) {
        ck_assert_ok(subsae_trainer_create(&t[i]));
        ck_assert_ok(subsae_trainer_set_int(t[i], SUBSAE_TRAIN_FEATURES, 32));
        ck_assert_ok(subsae_trainer_set_int(t[i], SUBSAE_TRAIN_K, 3));
        ck_assert_ok(subsae_trainer_set_int(t[i], SUBSAE_TRAIN_BATCH, 32));
        ck_assert_ok(subsae_trainer_set_int(t[i], SUBSAE_TRAIN_THREADS, 1));
        ck_assert_ok(subsae_trainer_init(t[i], buf, NULL));
        ck_assert_ok(subsae_trainer_step(t[i], x, D, NULL, 0, 32));
    }
    /* t[1] tries steps at absurd rates until one diverges. */
    ck_assert_ok(subsae_trainer_set_double(t[1], SUBSAE_TRAIN_LR, 1e6));
    int rc = SUBSAE_OK, tries = 0;
    while (rc == SUBSAE_OK && tries < 20) {
        /* Keep t[0] in step while t[1]'s steps still succeed. */
        rc = subsae_trainer_step(t[1], x + 32 * D, D, NULL, 0, 32);
        if (rc == SUBSAE_OK) {
            ck_assert_ok(subsae_trainer_set_double(t[0], SUBSAE_TRAIN_LR, 1e6));
            ck_assert_ok(subsae_trainer_step(t[0], x + 32 * D, D, NULL, 0, 32));
        }
        tries++;
    }
    ck_assert_int_eq(rc, SUBSAE_E_NONFINITE);
    ck_assert_int_eq(subsae_last_error_reason(), SUBSAE_REASON_DIVERGED);
    ck_assert(strstr(subsae_last_error(), "diverged") != NULL);
    /* Same counters, same weights as the twin that never tried. */
    double a[SUBSAE_METRIC_COUNT], b[SUBSAE_METRIC_COUNT];
    ck_assert_ok(subsae_trainer_metrics(t[0], a, SUBSAE_METRIC_COUNT));
    ck_assert_ok(subsae_trainer_metrics(t[1], b, SUBSAE_METRIC_COUNT));
    ck_assert(a[SUBSAE_METRIC_STEPS] == b[SUBSAE_METRIC_STEPS]);
    ck_assert(a[SUBSAE_METRIC_TOKENS] == b[SUBSAE_METRIC_TOKENS]);
    static float u[32 * D], v[32 * D];
    for (int p = SUBSAE_PARAM_W_ENC; p <= SUBSAE_PARAM_THRESHOLD; p++) {
        int64_t n = subsae_sae_param_size(subsae_trainer_sae(t[0]), p);
        ck_assert_ok(subsae_sae_get_param(subsae_trainer_sae(t[0]), p, u, n));
        ck_assert_ok(subsae_sae_get_param(subsae_trainer_sae(t[1]), p, v, n));
        ck_assert_msg(memcmp(u, v, (size_t)n * sizeof *u) == 0, "parameter %d changed", p);
    }
    /* And everything else (Adam moments, dead-feature clock, metrics
     * windows, RNG, batch position): their checkpoints are the same bytes. */
    char dirs[2][600], command[2048];
    harness_tmp_path("twin-0", dirs[0], sizeof dirs[0]);
    harness_tmp_path("twin-1", dirs[1], sizeof dirs[1]);
    for (int i = 0; i < 2; i++)
        ck_assert_ok(subsae_trainer_save_checkpoint(t[i], dirs[i]));
    snprintf(command, sizeof command, "diff -r '%s' '%s'", dirs[0], dirs[1]);
    ck_assert_msg(harness_run(command) == 0, "the refused step changed the trainer's state");
    fprintf(stderr, "divergence: step %d at lr 1e6 refused, nothing changed\n", tries + 1);
    subsae_trainer_free(t[0]);
    subsae_trainer_free(t[1]);
    subsae_buffer_free(buf);
}
END_TEST

/* ---- non-finite input ------------------------------------------------------- */

START_TEST(nonfinite_rows_are_named_by_every_subcommand)
{
    char data[600], model[600], args[4096];
    const int64_t bad[2] = {37, 400};
    make_npy("bad.npy", 500, 16, bad, 2, data, sizeof data);
    /* A model to evaluate and encode with, trained on clean data. */
    char clean[600];
    make_npy("clean.npy", 500, 16, NULL, 0, clean, sizeof clean);
    harness_tmp_path("model", model, sizeof model);
    snprintf(args, sizeof args,
             "train '%s' --features 32 --k 4 --batch 64 --threads 1 --out '%s' --quiet", clean,
             model);
    ck_assert_msg(run_cli(args, "t.out", "t.err") == 0, "%s", slurp("t.err"));

    char out_codes[600];
    harness_tmp_path("codes.safetensors", out_codes, sizeof out_codes);
    const char *commands[4][2] = {
        {"train", "train '%s' --features 32 --k 4 --batch 64 --threads 1 --quiet"},
        {"rank", "rank '%s'"},
        {"eval", "eval '%2$s' '%1$s'"},
        {"encode", "encode '%2$s' '%1$s' --out '%3$s'"},
    };
    for (int i = 0; i < 4; i++) {
        snprintf(args, sizeof args, commands[i][1], data, model, out_codes);
        int status = run_cli(args, "c.out", "c.err");
        const char *err = slurp("c.err");
        ck_assert_msg(status != 0, "subsae %s accepted a NaN row", commands[i][0]);
        ck_assert_msg(strstr(err, "row 37") && strstr(err, "column 5") && strstr(err, "nan"),
                      "subsae %s: %s", commands[i][0], err);
        ck_assert_msg(strstr(err, "non-finite value") != NULL, "subsae %s: %s", commands[i][0],
                      err);
    }
    /* inspect counts them and names the first row. */
    snprintf(args, sizeof args, "inspect '%s' --json", data);
    ck_assert_int_eq(run_cli(args, "i.json", "i.err"), 0);
    json_t *j = read_json("i.json");
    ck_assert_int_eq(json_int_field(j, "nonfinite"), 2);
    ck_assert_int_eq(json_int_field(j, "first_nonfinite_row"), 37);
    json_decref(j);
    snprintf(args, sizeof args, "inspect '%s'", data);
    ck_assert_int_eq(run_cli(args, "i.txt", "i.err"), 0);
    ck_assert(strstr(slurp("i.txt"), "2 non-finite values (first in row 37)") != NULL);
    snprintf(args, sizeof args, "inspect '%s' --json", clean);
    ck_assert_int_eq(run_cli(args, "i.json", "i.err"), 0);
    j = read_json("i.json");
    ck_assert(json_is_null(json_object_get(j, "first_nonfinite_row")));
    json_decref(j);
}
END_TEST

/* ---- every write is crash-safe ---------------------------------------------- */

/* The library opens files for writing in one place only, the crash-safe
 * writer of lib/io_file.c (temporary name, fsync, rename, fsync of the
 * directory): .npy and safetensors (buffers, SAE weights, checkpoint
 * states) and the JSON files (cfg.json, checkpoint.json) all go through
 * subsae__atomic_open. */
START_TEST(every_write_goes_through_the_atomic_writer)
{
    char command[4096];
    snprintf(command, sizeof command,
             "cd '%s/lib' && grep -nE "
             "'fopen|O_WRONLY|O_RDWR|O_CREAT|creat\\(|open_memstream|fdopen|rename\\(|truncate\\(' "
             "*.c | grep -v '^io_file\\.c:'",
             harness_source_dir());
    ck_assert_msg(harness_run(command) == 1, "a library file writes outside io_file.c (above)");
    snprintf(command, sizeof command,
             "cd '%s/lib' && grep -lE 'subsae__atomic_open|subsae__safetensors_write' *.c | "
             "sort | tr '\\n' ' ' | grep -q 'checkpoint.c io_file.c io_npy.c io_safetensors.c "
             "sae_io.c'",
             harness_source_dir());
    ck_assert_msg(harness_run(command) == 0,
                  "the writers are expected in checkpoint.c io_npy.c io_safetensors.c sae_io.c");
}
END_TEST

SUBSAE_SUITE(faults)
{
    Suite *s = suite_create("faults");
    TCase *tc = harness_case(s, "sigkill", 240);
    tcase_add_test(tc, sigkill_leaves_a_checkpoint_that_resumes);
    tc = harness_case(s, "numeric", 120);
    tcase_add_test(tc, diverging_run_keeps_the_last_good_checkpoint);
    tcase_add_test(tc, diverging_step_changes_nothing);
    tcase_add_test(tc, nonfinite_rows_are_named_by_every_subcommand);
    tcase_add_test(tc, every_write_goes_through_the_atomic_writer);
    return s;
}
