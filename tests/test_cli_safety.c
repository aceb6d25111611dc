/* Issue 14, "a user's run is never lost", through `subsae` as a user runs
 * it. One test per numbered problem of the issue (each fails on 0.1.0):
 *  1. resume without --out leaves a loadable, updated model in the run's
 *     directory;
 *  2, 3. a bad --eval / --eval-target / --target / --out (and encode's
 *     --out) fails before any work, leaving existing files as they were;
 *  4. resume on other data is refused (and accepted with
 *     --allow-new-data); --epochs on a resume means the run's total and
 *     the progress counts to it;
 *  5. a second run into a locked --out fails at once naming the holder;
 *     a run into another run's directory needs --overwrite;
 *  6. SIGINT / SIGTERM save a checkpoint and the model so far, print the
 *     command that resumes, and that command finishes the run; a second
 *     signal ends the process at once without damaging a file;
 *  7. eval / encode of a transcoder need --target, of an SAE refuse it;
 *  (8, 9: tests/install_test.sh via test_foundation.c, and
 *  rust_dependent_crate in test_examples.c.)
 * And: --log writes JSONL, sparsity.safetensors holds the densities eval
 * reports, --help works for every subcommand, --skip-nonfinite. */
#include "harness.h"
#include "io.h"
#include "synth.h"

#include <ctype.h>
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

/* n x d synthetic activations (seeded) as a float32 .npy in the test's
 * directory; `nan_row` >= 0 gets a NaN. */
static const char *make_data(const char *name, int64_t n, int64_t d, uint64_t seed,
                             int64_t nan_row, char *path, size_t size)
{
    struct subsae__synth_spec spec = {.rows = n, .dim = d, .atoms = 64, .subspace_dim = d / 2,
                                      .active = 3, .coef_min = 0.5, .coef_max = 1.5,
                                      .noise = 0.02, .offset = 1.0, .seed = seed};
    float *x = malloc((size_t)(n * d) * sizeof *x);
    ck_assert_ok(subsae__synth(&spec, x, NULL));
    subsae_buffer *b;
    ck_assert_ok(subsae_buffer_wrap(x, SUBSAE_DTYPE_F32, n, d, d, SUBSAE_BORROW, &b));
    harness_tmp_path(name, path, size);
    ck_assert_ok(subsae_buffer_save_npy(b, path, SUBSAE_DTYPE_F32));
    subsae_buffer_free(b);
    free(x);
    if (nan_row >= 0) { /* written after the header: the library refuses to save a NaN */
        FILE *f = fopen(path, "r+b");
        ck_assert_ptr_nonnull(f);
        const float nan_value = NAN;
        ck_assert_int_eq(fseek(f, -(long)((n - nan_row) * d * 4) + 8, SEEK_END), 0);
        ck_assert_int_eq(fwrite(&nan_value, 4, 1, f), 1);
        ck_assert_int_eq(fclose(f), 0);
    }
    return path;
}

static char *slurp_path(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)n + 1);
    ck_assert_ptr_nonnull(text);
    ck_assert_int_eq(fread(text, 1, (size_t)n, f), (size_t)n);
    text[n] = '\0';
    fclose(f);
    return text;
}

/* The stderr of the last harness_cli(args, name) (the caller frees it). */
static char *stderr_of(const char *name)
{
    char path[700], err[720];
    harness_tmp_path(name, path, sizeof path);
    snprintf(err, sizeof err, "%s.err", path);
    char *text = slurp_path(err);
    ck_assert_ptr_nonnull(text);
    return text;
}

static int count_lines(const char *text)
{
    int n = 0;
    for (; *text; text++)
        n += *text == '\n';
    return n;
}


static bool exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}


static int64_t integer(const json_t *obj, const char *key)
{
    const json_t *v = json_object_get(obj, key);
    ck_assert_msg(json_is_integer(v), "%s is not an integer", key);
    return (int64_t)json_integer_value(v);
}

/* `subsae ARGS...` in the background, stdout and stderr into files of the
 * test's directory (NAME.out, NAME.err); SIGINT and SIGTERM at their
 * defaults whatever the test runner's are. */
static pid_t start(const char *name, const char *const *args)
{
    char cli[600], out[700], err[700];
    snprintf(cli, sizeof cli, "%s/bin/subsae", harness_build_dir());
    snprintf(out, sizeof out, "%s/%s.out", harness_tmpdir(), name);
    snprintf(err, sizeof err, "%s/%s.err", harness_tmpdir(), name);
    const char *argv[64] = {cli};
    int n = 1;
    for (; args[n - 1] && n < 63; n++)
        argv[n] = args[n - 1];
    argv[n] = NULL;
    const char *dir = harness_tmpdir(); /* the child's own call would make another */
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        if (chdir(dir) != 0) /* a run without --out saves here */
            _exit(127);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        int fo = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0666);
        int fe = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0666);
        dup2(fo, 1);
        dup2(fe, 2);
        execv(cli, (char *const *)argv);
        _exit(127);
    }
    return pid;
}

static int wait_exit(pid_t pid)
{
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Wait (up to 120 s, while the run `pid` lives) until the text of `path`
 * satisfies `ready`; `what` names the wait in a failure. */
static void wait_for(const char *path, pid_t pid, bool (*ready)(const char *, const void *),
                     const void *arg, const char *what)
{
    const double started = harness_now();
    for (;;) {
        char *text = slurp_path(path);
        const bool done = text && ready(text, arg);
        free(text);
        if (done)
            return;
        int status;
        ck_assert_msg(waitpid(pid, &status, WNOHANG) == 0, "the run ended before %s had %s",
                      path, what);
        ck_assert_msg(harness_now() - started < 120, "%s: no %s after 120 s", path, what);
        harness_sleep(0.005);
    }
}

static bool has_lines(const char *text, const void *lines)
{
    return count_lines(text) >= *(const int *)lines;
}

static bool has_text(const char *text, const void *wanted)
{
    return strstr(text, wanted) != NULL;
}

/* Wait until `path` holds at least `lines` lines. */
static void wait_for_lines(const char *path, int lines, pid_t pid)
{
    wait_for(path, pid, has_lines, &lines, "the lines");
}

/* Wait until `path` holds `text`. */
static void wait_for_text(const char *path, const char *text, pid_t pid)
{
    wait_for(path, pid, has_text, text, text);
}

static bool same_file(const char *a, const char *b)
{
    char *x = slurp_path(a), *y = slurp_path(b);
    bool same = x && y && strcmp(x, y) == 0;
    free(x);
    free(y);
    return same;
}

static bool same_bytes(const char *a, const char *b)
{
    char command[2000];
    snprintf(command, sizeof command, "cmp -s '%s' '%s'", a, b);
    return harness_run(command) == 0;
}

/* A copy of a file, to compare with later. */
static void keep_copy(const char *path, const char *copy)
{
    char command[2000];
    snprintf(command, sizeof command, "cp '%s' '%s'", path, copy);
    ck_assert_int_eq(harness_run(command), 0);
}

static const char SMALL[] = "--features 48 --k 4 --batch 64 --threads 1 --seed 2";

/* ---- 1: resume without --out ---------------------------------------------- */

START_TEST(resume_without_out_saves_into_the_run)
{
    char data[600], straight[600], run[600], args[4096], path[800], before[800];
    make_data("acts.npy", 2048, 16, 1, -1, data, sizeof data);
    harness_tmp_path("straight", straight, sizeof straight);
    harness_tmp_path("run", run, sizeof run);
    /* The whole run in one go, for reference: 3 epochs. */
    snprintf(args, sizeof args, "train '%s' %s --epochs 3 --out '%s' --quiet", data, SMALL,
             straight);
    ck_assert_int_eq(harness_cli(args, "straight.txt"), 0);
    /* One epoch with checkpoints, then resumed to 3 epochs without --out. */
    snprintf(args, sizeof args,
             "train '%s' %s --epochs 1 --checkpoint-every 7 --out '%s' --quiet", data, SMALL,
             run);
    ck_assert_int_eq(harness_cli(args, "first.txt"), 0);
    snprintf(path, sizeof path, "%s/sae_weights.safetensors", run);
    snprintf(before, sizeof before, "%s/weights-after-epoch-1", harness_tmpdir());
    keep_copy(path, before);
    snprintf(args, sizeof args, "train '%s' --resume '%s' --epochs 3 --threads 1 --json", data,
             run);
    ck_assert_int_eq(harness_cli(args, "resumed.json"), 0);
    json_t *j = harness_read_json("resumed.json");
    ck_assert_int_eq(integer(j, "tokens"), 3 * 2048);
    ck_assert_str_eq(json_string_value(json_object_get(j, "out")), run);
    json_decref(j);
    /* The run's directory holds the updated model: it loads, it is not
     * the first epoch's, it is the straight run's bit for bit; and its
     * checkpoint was brought up to the same step. */
    subsae_sae *sae;
    ck_assert_ok(subsae_sae_load(run, &sae));
    subsae_sae_free(sae);
    ck_assert_msg(!same_bytes(path, before), "the resumed run did not update %s", path);
    char want[800];
    snprintf(want, sizeof want, "%s/sae_weights.safetensors", straight);
    ck_assert_msg(same_bytes(path, want), "the resumed model differs from the straight run's");
    json_t *ck = harness_json_at(run, "checkpoint/checkpoint.json");
    ck_assert_int_eq(integer(ck, "tokens"), 3 * 2048);
    json_decref(ck);
    /* The model and the checkpoint say which run they belong to. */
    json_t *cfg = harness_json_at(run, "cfg.json");
    ck = harness_json_at(run, "checkpoint/checkpoint.json");
    const char *id = json_string_value(json_object_get(json_object_get(cfg, "run"), "id"));
    ck_assert_ptr_nonnull(id);
    ck_assert_str_eq(id, json_string_value(json_object_get(
                             json_object_get(json_object_get(ck, "metadata"), "run"), "id")));
    json_decref(cfg);
    json_decref(ck);
}
END_TEST

/* A finished run given no --out at all is kept: in ./subsae-run-ID, which
 * the summary names, and which loads as the run's model. */
START_TEST(finished_run_without_out_is_kept)
{
    char data[600], args[4096], dir[800];
    make_data("acts.npy", 1024, 16, 17, -1, data, sizeof data);
    snprintf(args, sizeof args, "train '%s' %s --tokens 640 --quiet --json", data, SMALL);
    ck_assert_int_eq(harness_cli(args, "no-out.json"), 0);
    json_t *j = harness_read_json("no-out.json");
    const char *id = json_string_value(json_object_get(j, "run_id"));
    const char *out = json_string_value(json_object_get(j, "out"));
    ck_assert_ptr_nonnull(id);
    ck_assert_ptr_nonnull(out);
    char want[200];
    snprintf(want, sizeof want, "subsae-run-%s", id);
    ck_assert_str_eq(out, want);
    snprintf(dir, sizeof dir, "%s/%s", harness_tmpdir(), out);
    json_decref(j);
    subsae_sae *sae;
    ck_assert_ok(subsae_sae_load(dir, &sae));
    int64_t features;
    ck_assert_ok(subsae_sae_get_int(sae, SUBSAE_SAE_D_SAE, &features));
    ck_assert_int_eq(features, 48);
    subsae_sae_free(sae);
    /* Without --json the summary says where it went and how to choose. */
    snprintf(args, sizeof args, "train '%s' %s --tokens 640 --quiet", data, SMALL);
    ck_assert_int_eq(harness_cli(args, "no-out.txt"), 0);
    char summary[700];
    char *text = slurp_path(harness_tmp_path("no-out.txt", summary, sizeof summary));
    ck_assert_msg(strstr(text, "saved to subsae-run-") && strstr(text, "no --out given"), "%s",
                  text);
    free(text);
}
END_TEST

/* ---- 2, 3: checks before the work --------------------------------------------- */

/* `args` must fail before any work: non-zero exit, one line on stderr
 * that holds `expect`, nothing of the initialisation or the training on
 * stderr, and quickly. The run it would be trains for 15-30 s (d 64,
 * 131,072 rows, 32,768 features, 3 epochs: about 5 s per epoch on an
 * idle 2-core machine, README "Dead features"); the bound is 5 s, well
 * below that and far above the few tens of milliseconds a check takes,
 * so that a loaded machine cannot make it fail by chance. */
static double expect_early_failure(const char *args, const char *expect)
{
    const double started = harness_now();
    int status = harness_cli(args, "early.txt");
    const double seconds = harness_now() - started;
    char *err = stderr_of("early.txt");
    ck_assert_msg(status != 0, "'%s' succeeded", args);
    ck_assert_msg(count_lines(err) == 1, "'%s': not one line: %s", args, err);
    ck_assert_msg(strstr(err, expect), "'%s': '%s' not in: %s", args, expect, err);
    ck_assert_msg(!strstr(err, "init:") && !strstr(err, "tokens/s"),
                  "'%s' started the work: %s", args, err);
    ck_assert_msg(seconds < 5.0, "'%s' took %.2f s to fail", args, seconds);
    free(err);
    return seconds;
}

START_TEST(bad_files_fail_before_the_first_step)
{
    char big[600], narrow[600], nan[600], short_target[600], file[600], old[600], args[8192];
    make_data("big.npy", 131072, 64, 3, -1, big, sizeof big);
    make_data("narrow.npy", 1000, 32, 4, -1, narrow, sizeof narrow);
    make_data("nan.npy", 1000, 64, 5, 417, nan, sizeof nan);
    make_data("short.npy", 1000, 64, 6, -1, short_target, sizeof short_target);
    harness_tmp_path("a-file", file, sizeof file);
    FILE *f = fopen(file, "w");
    ck_assert_ptr_nonnull(f);
    fputs("not a directory\n", f);
    fclose(f);
    /* Another run's model, which a failed run must leave as it is. */
    harness_tmp_path("old-run", old, sizeof old);
    snprintf(args, sizeof args, "train '%s' --features 32 --k 4 --tokens 4096 --out '%s' --quiet",
             narrow, old);
    ck_assert_int_eq(harness_cli(args, "old.txt"), 0);
    char old_weights[800], old_copy[800], old_cfg[800], cfg_copy[800];
    snprintf(old_weights, sizeof old_weights, "%s/sae_weights.safetensors", old);
    snprintf(old_cfg, sizeof old_cfg, "%s/cfg.json", old);
    snprintf(old_copy, sizeof old_copy, "%s/old-weights", harness_tmpdir());
    snprintf(cfg_copy, sizeof cfg_copy, "%s/old-cfg", harness_tmpdir());
    keep_copy(old_weights, old_copy);
    keep_copy(old_cfg, cfg_copy);

    const char *recipe = "--features 32768 --k 8 --batch 4096 --epochs 3";
    char new_run[600];
    harness_tmp_path("new-run", new_run, sizeof new_run);
    struct {
        const char *extra, *expect;
    } cases[] = {
        {"--eval '%2$s'", "has rows of 32 values but the inputs have 64"},
        {"--eval '%3$s'", "row 417"},
        {"--target '%4$s'", "the inputs have 131072 rows but the targets 1000"},
        {"--target '%1$s' --eval '%3$s' --eval-target '%2$s'", "has rows of 32 values"},
        {"--out '%5$s'", "exists and is not a directory"},
        {"--out '%5$s/sub'", "cannot create the directory"},
        {"--out '%6$s'", "already holds the model of run "},
        /* --overwrite, but the evaluation file is bad: the other run's
         * files are removed only once everything is checked. */
        {"--out '%6$s' --overwrite --eval '%2$s'", "has rows of 32 values"},
        /* A directory this run created goes with it. */
        {"--eval /nonexistent/eval.npy --out '%7$s'", "cannot open --eval"},
    };
    double worst = 0.0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char extra[4096];
        snprintf(extra, sizeof extra, cases[i].extra, big, narrow, nan, short_target, file, old,
                 new_run);
        snprintf(args, sizeof args, "train '%s' %s %s", big, recipe, extra);
        double s = expect_early_failure(args, cases[i].expect);
        worst = s > worst ? s : worst;
        ck_assert_msg(same_bytes(old_weights, old_copy) && same_file(old_cfg, cfg_copy),
                      "'%s' changed the other run's files", args);
        ck_assert_msg(!exists(new_run), "'%s' left %s behind", args, new_run);
    }
    /* encode checks its --out before encoding a row. */
    char dir[600];
    harness_tmp_path("a-dir", dir, sizeof dir);
    ck_assert_int_eq(mkdir(dir, 0777), 0);
    snprintf(args, sizeof args, "encode '%s' '%s' --out '%s'", old, narrow, dir);
    worst = fmax(worst, expect_early_failure(args, "is a directory"));
    snprintf(args, sizeof args, "encode '%s' '%s' --out '%s/codes.npy'", old, narrow, dir);
    worst = fmax(worst, expect_early_failure(args, "must end in .safetensors"));
    ck_assert_msg(!exists(dir) || rmdir(dir) == 0, "encode wrote into %s", dir);
    /* An existing file is replaced only with --overwrite, and a file the
     * command reads never, --overwrite or not: not the rows, not the model
     * (nor through another path to it); eval's outputs likewise. */
    char codes[700], codes_copy[700];
    snprintf(codes, sizeof codes, "%s/codes.safetensors", harness_tmpdir());
    snprintf(codes_copy, sizeof codes_copy, "%s/codes-copy", harness_tmpdir());
    keep_copy(old_weights, codes);
    keep_copy(codes, codes_copy);
    snprintf(args, sizeof args, "encode '%s' '%s' --out '%s'", old, narrow, codes);
    worst = fmax(worst, expect_early_failure(args, "already exists; give --overwrite"));
    ck_assert_msg(same_bytes(codes, codes_copy), "encode replaced %s", codes);
    snprintf(args, sizeof args, "encode '%s' '%s' --out '%s' --overwrite", old, codes, codes);
    worst = fmax(worst, expect_early_failure(args, "is a file of rows this command reads"));
    snprintf(args, sizeof args, "encode '%s' '%s' --out '%s/../%s/sae_weights.safetensors' "
             "--overwrite", old, narrow, old, strrchr(old, '/') + 1);
    worst = fmax(worst, expect_early_failure(args, "is the model's sae_weights.safetensors"));
    snprintf(args, sizeof args, "eval '%s' '%s' --sparsity '%s'", old, narrow, old_weights);
    worst = fmax(worst, expect_early_failure(args, "is the model's sae_weights.safetensors"));
    ck_assert_msg(same_bytes(old_weights, old_copy), "a command replaced %s", old_weights);
    fprintf(stderr, "checks before the work: %zu bad runs failed before any step, the slowest "
                    "in %.3f s\n",
            sizeof cases / sizeof cases[0] + 6, worst);
}
END_TEST

/* ---- 4: resume on other data, --epochs as the run's total --------------------- */

/* The last progress line of a stderr text, e.g. "subsae train: 6144/6144
 * tokens (100%), ...". */
static void last_progress(const char *err, char *out, size_t size)
{
    out[0] = '\0';
    for (const char *p = strstr(err, " tokens ("); p; p = strstr(p + 1, " tokens (")) {
        const char *start = p;
        while (start > err && start[-1] != '\n' && start[-1] != ' ')
            start--;
        snprintf(out, size, "%.*s", (int)(strchr(p, ')') - start + 1), start);
    }
}

START_TEST(resume_refuses_other_data)
{
    char a[600], b[600], run[600], args[4096], line[256];
    make_data("a.npy", 2048, 16, 7, -1, a, sizeof a);
    make_data("b.npy", 2048, 16, 8, -1, b, sizeof b);
    harness_tmp_path("run", run, sizeof run);
    snprintf(args, sizeof args,
             "train '%s' %s --epochs 1 --checkpoint-every 100 --out '%s' --quiet", a, SMALL,
             run);
    ck_assert_int_eq(harness_cli(args, "first.txt"), 0);
    /* Other data (same rows and width, other values): refused, both named. */
    snprintf(args, sizeof args, "train '%s' --resume '%s' --epochs 2", b, run);
    ck_assert_int_ne(harness_cli(args, "other.txt"), 0);
    char *err = stderr_of("other.txt");
    ck_assert_msg(count_lines(err) == 1 && strstr(err, "a.npy (2048 rows x 16") &&
                      strstr(err, "b.npy (2048 rows x 16") && strstr(err, "--allow-new-data"),
                  "%s", err);
    free(err);
    /* The model's options: another value is refused with both named (before
     * any step: the checkpoint is as it was), and so is another activation. */
    const struct {
        const char *given, *expect;
    } changed[] = {{"--features 48 --k 6", "--k 6, but the run has 4"},
                   {"--activation relu", "--activation relu, but the run has topk"},
                   {"--matryoshka 16,48", "--matryoshka 16,48, but the run has none"}};
    for (size_t i = 0; i < sizeof changed / sizeof changed[0]; i++) {
        snprintf(args, sizeof args, "train '%s' %s --resume '%s' --epochs 2", a,
                 changed[i].given, run);
        ck_assert_int_eq(harness_cli(args, "changed.txt"), 1);
        err = stderr_of("changed.txt");
        ck_assert_msg(strstr(err, changed[i].expect), "%s: %s", changed[i].given, err);
        free(err);
    }
    /* A Matryoshka run's first command with --resume: accepted. */
    char nested[700];
    snprintf(nested, sizeof nested, "%s-nested", run);
    const char *with_widths = "--matryoshka 16,48 --checkpoint-every 100 --quiet";
    snprintf(args, sizeof args, "train '%s' %s %s --epochs 1 --out '%s'", a, SMALL, with_widths,
             nested);
    ck_assert_int_eq(harness_cli(args, "nested.txt"), 0);
    snprintf(args, sizeof args, "train '%s' %s %s --epochs 2 --resume '%s'", a, SMALL,
             with_widths, nested);
    ck_assert_int_eq(harness_cli(args, "nested-resumed.txt"), 0);
    /* The same data and the first command's own options (and "let the
     * library choose", which the run did), --resume added: --epochs 2 is
     * the run's total, the progress counts to it. */
    snprintf(args, sizeof args,
             "train '%s' %s --subspace-dim 0 --precision auto --resume '%s' --epochs 2 --json", a,
             SMALL, run);
    ck_assert_int_eq(harness_cli(args, "same.json"), 0);
    json_t *j = harness_read_json("same.json");
    ck_assert_int_eq(integer(j, "tokens"), 2 * 2048);
    ck_assert_int_eq(integer(j, "total_tokens"), 2 * 2048);
    json_decref(j);
    err = stderr_of("same.json");
    last_progress(err, line, sizeof line);
    ck_assert_msg(!strcmp(line, "4096/4096 tokens (100%)"), "progress: '%s' in %s", line, err);
    free(err);
    /* Again: finished, nothing to train, and no 8192/4096. */
    snprintf(args, sizeof args, "train '%s' --resume '%s' --json", a, run);
    ck_assert_int_eq(harness_cli(args, "again.json"), 0);
    j = harness_read_json("again.json");
    ck_assert_int_eq(integer(j, "tokens"), 2 * 2048);
    json_decref(j);
    err = stderr_of("again.json");
    last_progress(err, line, sizeof line);
    ck_assert_msg(strstr(err, "nothing to train") && !strcmp(line, "4096/4096 tokens (100%)"),
                  "%s", err);
    free(err);
    /* Other data accepted when asked: --epochs 1 counts from here. */
    snprintf(args, sizeof args, "train '%s' --resume '%s' --allow-new-data --epochs 1 --json", b,
             run);
    ck_assert_int_eq(harness_cli(args, "new.json"), 0);
    j = harness_read_json("new.json");
    ck_assert_int_eq(integer(j, "tokens"), 3 * 2048);
    json_decref(j);
    /* ...and from now on the run's data is b's. */
    snprintf(args, sizeof args, "train '%s' --resume '%s' --epochs 4", a, run);
    ck_assert_int_ne(harness_cli(args, "back.txt"), 0);
    err = stderr_of("back.txt");
    ck_assert_msg(strstr(err, "b.npy (2048 rows"), "%s", err);
    free(err);
}
END_TEST

/* ---- 5: one run per directory ------------------------------------------------ */

START_TEST(one_run_per_directory)
{
    char data[600], run[600], log[700], args[4096];
    make_data("acts.npy", 4096, 16, 9, -1, data, sizeof data);
    harness_tmp_path("run", run, sizeof run);
    snprintf(log, sizeof log, "%s/long.jsonl", harness_tmpdir());
    /* A long run (1000 epochs), training (its log shows steps), holds the
     * directory... */
    const char *long_run[] = {"train", data, "--features", "48", "--k", "4", "--batch", "64",
                              "--epochs", "1000", "--threads", "1", "--out", run, "--quiet",
                              "--log", log, "--log-every", "1", NULL};
    pid_t pid = start("long", long_run);
    wait_for_lines(log, 2, pid);
    /* ...so a second run into it fails at once, naming the holder. */
    snprintf(args, sizeof args, "train '%s' %s --epochs 1 --out '%s'", data, SMALL, run);
    const double started = harness_now();
    ck_assert_int_ne(harness_cli(args, "second.txt"), 0);
    const double seconds = harness_now() - started;
    char *err = stderr_of("second.txt"), holder[64];
    snprintf(holder, sizeof holder, "in use by another run (pid %d, started ", (int)pid);
    ck_assert_msg(count_lines(err) == 1 && strstr(err, holder) && strstr(err, "command subsae"),
                  "%s", err);
    ck_assert_msg(!strstr(err, "init:"), "%s", err);
    free(err);
    /* (generous: a lock costs microseconds; see expect_early_failure) */
    ck_assert_msg(seconds < 5.0, "the second run took %.2f s to fail", seconds);
    ck_assert_int_eq(kill(pid, SIGTERM), 0);
    ck_assert_int_eq(wait_exit(pid), 143);
    /* The stopped run's directory belongs to it: a new run needs
     * --overwrite, and then holds nothing of the old one. */
    json_t *cfg = harness_json_at(run, "cfg.json");
    char old_id[128];
    snprintf(old_id, sizeof old_id, "%s",
             json_string_value(json_object_get(json_object_get(cfg, "run"), "id")));
    json_decref(cfg);
    ck_assert_int_ne(harness_cli(args, "third.txt"), 0);
    err = stderr_of("third.txt");
    ck_assert_msg(strstr(err, "already holds the model of run ") && strstr(err, old_id) &&
                      strstr(err, "--overwrite"),
                  "%s", err);
    free(err);
    snprintf(args, sizeof args, "train '%s' %s --epochs 1 --out '%s' --overwrite --quiet", data,
             SMALL, run);
    ck_assert_int_eq(harness_cli(args, "fourth.txt"), 0);
    cfg = harness_json_at(run, "cfg.json");
    ck_assert_str_ne(json_string_value(json_object_get(json_object_get(cfg, "run"), "id")),
                     old_id);
    json_decref(cfg);
    char checkpoint[800];
    snprintf(checkpoint, sizeof checkpoint, "%s/checkpoint/checkpoint.json", run);
    ck_assert_msg(!exists(checkpoint), "the old run's checkpoint is still in %s", run);
}
END_TEST

/* ---- 6: SIGINT and SIGTERM ------------------------------------------------------ */

/* The command the run printed to resume it ("resume with: CMD"). */
static void resume_command(const char *err, char *out, size_t size)
{
    const char *p = strstr(err, "resume with: ");
    ck_assert_msg(p != NULL, "no resume command in: %s", err);
    p += strlen("resume with: ");
    snprintf(out, size, "%.*s", (int)strcspn(p, "\n"), p);
}

static void interrupt_and_resume(int signal, const char *data, const char *name)
{
    char run[600], log[700], err_path[700], args[8192];
    harness_tmp_path(name, run, sizeof run);
    snprintf(log, sizeof log, "%s/%s.jsonl", harness_tmpdir(), name);
    /* 200 epochs of 2048 rows in batches of 64: 6,400 steps, some seconds;
     * the signal comes once the log shows 3 steps, long before the end. */
    const char *argv[] = {"train", data, "--features", "48", "--k", "4", "--batch", "64",
                          "--epochs", "200", "--threads", "1", "--out", run, "--log", log,
                          "--log-every", "1", NULL};
    pid_t pid = start(name, argv);
    wait_for_lines(log, 3, pid);
    ck_assert_int_eq(kill(pid, signal), 0);
    const int code = wait_exit(pid);
    ck_assert_int_eq(code, 128 + signal);
    snprintf(err_path, sizeof err_path, "%s/%s.err", harness_tmpdir(), name);
    char *err = slurp_path(err_path), command[4096];
    ck_assert_msg(strstr(err, signal == SIGINT ? "interrupted by SIGINT after step "
                                               : "interrupted by SIGTERM after step ") &&
                      strstr(err, "and the model so far in "),
                  "%s", err);
    resume_command(err, command, sizeof command);
    free(err);
    /* The checkpoint and the model so far load. */
    char checkpoint[800];
    snprintf(checkpoint, sizeof checkpoint, "%s/checkpoint", run);
    subsae_trainer *t;
    ck_assert_ok(subsae_trainer_load_checkpoint(checkpoint, &t));
    double m[SUBSAE_METRIC_COUNT];
    ck_assert_ok(subsae_trainer_metrics(t, m, SUBSAE_METRIC_COUNT));
    const int64_t stopped = (int64_t)m[SUBSAE_METRIC_STEPS];
    ck_assert_int_ge(stopped, 3);
    ck_assert_int_lt(stopped, 6400);
    subsae_trainer_free(t);
    subsae_sae *sae;
    ck_assert_ok(subsae_sae_load(run, &sae));
    subsae_sae_free(sae);
    /* The printed command finishes the run: 200 epochs in all. */
    snprintf(args, sizeof args, "cd '%s' && %s/bin/%s --json > '%s/%s-resumed.json' 2>&1",
             harness_tmpdir(), harness_build_dir(), command, harness_tmpdir(), name);
    ck_assert_msg(harness_run(args) == 0, "%s failed", command);
    json_t *done = harness_json_at(run, "checkpoint/checkpoint.json");
    ck_assert_int_eq(integer(done, "tokens"), 200 * 2048);
    ck_assert_int_eq(integer(done, "step"), 6400);
    json_decref(done);
    fprintf(stderr, "%s: stopped after step %lld of 6400 (exit %d), resumed to the end with: %s\n",
            signal == SIGINT ? "SIGINT" : "SIGTERM", (long long)stopped, code, command);
}

START_TEST(interrupts_save_and_say_how_to_resume)
{
    char data[600];
    make_data("acts.npy", 2048, 16, 10, -1, data, sizeof data);
    interrupt_and_resume(SIGINT, data, "int");
    interrupt_and_resume(SIGTERM, data, "term");
}
END_TEST

/* Two signals at once: the process ends at once, and whatever it wrote
 * loads (each file is replaced atomically). */
START_TEST(second_signal_exits_at_once)
{
    char data[600], run[600], log[700];
    make_data("acts.npy", 2048, 16, 11, -1, data, sizeof data);
    harness_tmp_path("run", run, sizeof run);
    snprintf(log, sizeof log, "%s/run.jsonl", harness_tmpdir());
    const char *argv[] = {"train", data, "--features", "48", "--k", "4", "--batch", "64",
                          "--epochs", "200", "--threads", "1", "--out", run,
                          "--checkpoint-every", "1", "--log", log, "--log-every", "1", NULL};
    pid_t pid = start("twice", argv);
    wait_for_lines(log, 5, pid);
    ck_assert_int_eq(kill(pid, SIGINT), 0);
    ck_assert_int_eq(kill(pid, SIGINT), 0);
    ck_assert_int_eq(wait_exit(pid), 130);
    char checkpoint[800];
    snprintf(checkpoint, sizeof checkpoint, "%s/checkpoint", run);
    subsae_trainer *t;
    ck_assert_ok(subsae_trainer_load_checkpoint(checkpoint, &t));
    subsae_trainer_free(t);
    char cfg[800];
    snprintf(cfg, sizeof cfg, "%s/cfg.json", run);
    if (exists(cfg)) { /* the first signal's save may have begun */
        subsae_sae *sae;
        ck_assert_ok(subsae_sae_load(run, &sae));
        subsae_sae_free(sae);
    }
}
END_TEST

/* An interrupted encode leaves --out as it was and no temporary file. The
 * signal comes once the temporary file exists, i.e. while rows are encoded
 * (262,144 rows against 16,384 features: seconds of work). */
START_TEST(interrupted_encode_leaves_nothing)
{
    char data[600], model[600], codes[600], temporary[700], err_path[700];
    make_data("many.npy", 262144, 64, 12, -1, data, sizeof data);
    harness_tmp_path("model", model, sizeof model);
    harness_tmp_path("codes.safetensors", codes, sizeof codes);
    subsae_sae *sae;
    ck_assert_ok(subsae_sae_create(64, 64, 16384, SUBSAE_ACT_TOPK, &sae));
    ck_assert_ok(subsae_sae_save(sae, model));
    subsae_sae_free(sae);
    const char *argv[] = {"encode", model, data, "--out", codes, NULL};
    pid_t pid = start("encode", argv);
    snprintf(temporary, sizeof temporary, "%s.tmp-%ld", codes, (long)pid);
    const double started = harness_now();
    while (!exists(temporary)) {
        ck_assert_msg(waitpid(pid, NULL, WNOHANG) == 0, "encode ended before its first block");
        ck_assert_msg(harness_now() - started < 60.0, "no %s after 60 s", temporary);
        usleep(1000);
    }
    ck_assert_int_eq(kill(pid, SIGTERM), 0);
    ck_assert_int_eq(wait_exit(pid), 128 + SIGTERM);
    snprintf(err_path, sizeof err_path, "%s/encode.err", harness_tmpdir());
    char *err = slurp_path(err_path);
    ck_assert_msg(strstr(err, "interrupted by SIGTERM") && strstr(err, "was not written"), "%s",
                  err);
    free(err);
    ck_assert_msg(!exists(codes) && !exists(temporary), "encode left files behind");
}
END_TEST

/* ---- 7: transcoders ------------------------------------------------------------ */

START_TEST(transcoder_needs_target)
{
    char in[600], out[600], tc[600], sae[600], args[4096];
    make_data("mlp_in.npy", 1024, 16, 12, -1, in, sizeof in);
    make_data("mlp_out.npy", 1024, 16, 13, -1, out, sizeof out);
    harness_tmp_path("tc", tc, sizeof tc);
    harness_tmp_path("sae", sae, sizeof sae);
    snprintf(args, sizeof args, "train '%s' --target '%s' %s --tokens 2048 --out '%s' --quiet",
             in, out, SMALL, tc);
    ck_assert_int_eq(harness_cli(args, "tc.txt"), 0);
    snprintf(args, sizeof args, "train '%s' %s --tokens 2048 --out '%s' --quiet", in, SMALL,
             sae);
    ck_assert_int_eq(harness_cli(args, "sae.txt"), 0);
    /* cfg.json marks the transcoder and names both sites. */
    json_t *cfg = harness_json_at(tc, "cfg.json");
    ck_assert(json_is_true(json_object_get(cfg, "transcoder")));
    ck_assert_int_eq(integer(cfg, "d_out"), 16);
    ck_assert_str_eq(json_string_value(json_object_get(cfg, "hook_name")), "mlp_in");
    ck_assert_str_eq(json_string_value(json_object_get(cfg, "hook_name_out")), "mlp_out");
    json_decref(cfg);
    const char *refused[][2] = {
        {"eval '%1$s' '%3$s'", "is a transcoder (from mlp_in to mlp_out): give --target"},
        {"encode '%1$s' '%3$s' --out '%5$s/c.safetensors'", "is a transcoder"},
        {"eval '%2$s' '%3$s' --target '%4$s'", "is an SAE, not a transcoder"},
        {"encode '%2$s' '%3$s' --target '%4$s' --out '%5$s/c.safetensors'", "is an SAE"},
    };
    for (size_t i = 0; i < 4; i++) {
        snprintf(args, sizeof args, refused[i][0], tc, sae, in, out, harness_tmpdir());
        ck_assert_int_ne(harness_cli(args, "refused.txt"), 0);
        char *err = stderr_of("refused.txt");
        ck_assert_msg(count_lines(err) == 1 && strstr(err, refused[i][1]), "%s: %s", args, err);
        free(err);
    }
    snprintf(args, sizeof args, "eval '%s' '%s' --target '%s' --json", tc, in, out);
    ck_assert_int_eq(harness_cli(args, "ok.json"), 0);
}
END_TEST

/* ---- what a run records, --help, --skip-nonfinite ------------------------------ */

START_TEST(log_and_sparsity_files)
{
    char data[600], held[600], run[600], log[700], args[4096];
    make_data("acts.npy", 4096, 16, 14, -1, data, sizeof data);
    harness_tmp_path("run", run, sizeof run);
    snprintf(log, sizeof log, "%s/train.jsonl", harness_tmpdir());
    snprintf(args, sizeof args,
             "train '%s' %s --epochs 2 --eval-fraction 0.25 --warmup-steps 20 --out '%s' "
             "--log '%s' --log-every 8 --json",
             data, SMALL, run, log);
    ck_assert_int_eq(harness_cli(args, "train.json"), 0);
    json_t *report = harness_read_json("train.json");
    const int64_t steps = integer(report, "steps");
    ck_assert_int_eq(steps, 96); /* 2 epochs of 48 batches of the 3072 training rows */
    ck_assert_double_eq_tol(json_number_value(json_object_get(report, "lr")),
                            2e-4 / sqrt(48.0 / 16384.0), 1e-12);
    ck_assert_str_eq(json_string_value(json_object_get(report, "precision")), "fp32");
    char run_id[80];
    snprintf(run_id, sizeof run_id, "%s", json_string_value(json_object_get(report, "run_id")));
    ck_assert_int_gt(strlen(run_id), 0);
    json_decref(report);
    /* One object per line every 8 steps: steps 8, 16, ..., 96, each naming
     * the run (runs may append to one file). */
    char *text = slurp_path(log);
    ck_assert_ptr_nonnull(text);
    int lines = 0, second_epoch_changes = 0;
    double previous_ev = NAN;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        json_error_t error;
        json_t *j = json_loads(line, 0, &error);
        ck_assert_msg(j != NULL, "line %d: %s", lines + 1, error.text);
        lines++;
        ck_assert_int_eq(integer(j, "step"), 8 * lines);
        ck_assert_str_eq(json_string_value(json_object_get(j, "run")), run_id);
        ck_assert_int_eq(integer(j, "tokens"), 8 * lines * 64);
        const char *keys[] = {"lr", "loss", "loss_mse", "loss_sparsity", "loss_aux", "mse",
                              "explained_variance", "l0", "dead_fraction",
                              "tokens_per_second", "seconds"};
        for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++)
            ck_assert_msg(json_is_number(json_object_get(j, keys[k])), "line %d: no %s", lines,
                          keys[k]);
        /* The batch metrics of the steps since the previous line: TopK's L0
         * is k, and the second epoch's lines move (the window of the first
         * epoch would repeat one value until the run ends). */
        ck_assert_double_eq(json_number_value(json_object_get(j, "l0")), 4.0);
        const double ev = json_number_value(json_object_get(j, "explained_variance"));
        if (8 * lines > 48 && 8 * lines < 96) /* steps 56 ... 88 */
            second_epoch_changes += ev != previous_ev;
        previous_ev = ev;
        /* Warm-up: the rate grows linearly over the first 20 steps. */
        const double lr = 2e-4 / sqrt(48.0 / 16384.0) * fmin(1.0, 8.0 * lines / 20.0);
        ck_assert_double_eq_tol(json_number_value(json_object_get(j, "lr")), lr, 1e-12);
        ck_assert_double_eq_tol(json_number_value(json_object_get(j, "loss")),
                                json_number_value(json_object_get(j, "loss_mse")) +
                                    json_number_value(json_object_get(j, "loss_sparsity")) +
                                    json_number_value(json_object_get(j, "loss_aux")),
                                1e-9);
        json_decref(j);
    }
    free(text);
    ck_assert_int_eq(lines, 12);
    ck_assert_int_eq(second_epoch_changes, 5);

    /* sparsity.safetensors: SAELens' log10 densities on the held-out
     * rows, the densities `subsae eval` reports on them. */
    harness_tmp_path("held.npy", held, sizeof held);
    subsae_buffer *all, *tail;
    ck_assert_ok(subsae_buffer_open(data, NULL, &all));
    ck_assert_ok(subsae_buffer_view(all, 3072, 1024, &tail));
    ck_assert_ok(subsae_buffer_save_npy(tail, held, SUBSAE_DTYPE_F32));
    subsae_buffer_free(tail);
    subsae_buffer_free(all);
    char mine[700];
    snprintf(mine, sizeof mine, "%s/eval-sparsity.safetensors", harness_tmpdir());
    snprintf(args, sizeof args, "eval '%s' '%s' --sparsity '%s' --json", run, held, mine);
    ck_assert_int_eq(harness_cli(args, "eval.json"), 0);
    json_t *eval = harness_read_json("eval.json");
    char theirs[800];
    snprintf(theirs, sizeof theirs, "%s/sparsity.safetensors", run);
    subsae__safetensors *a, *b;
    ck_assert_ok(subsae__safetensors_open(theirs, &a));
    ck_assert_ok(subsae__safetensors_open(mine, &b));
    const struct subsae__tensor_view *va = subsae__safetensors_find(a, "sparsity");
    const struct subsae__tensor_view *vb = subsae__safetensors_find(b, "sparsity");
    ck_assert(va && vb && va->ndim == 1 && va->shape[0] == 48 && vb->shape[0] == 48);
    const float *la = va->data, *lb = vb->data;
    int never = 0, differ = 0;
    for (int f = 0; f < 48; f++) {
        never += la[f] <= -9.99f;
        /* The saved model (scales folded in) and the trained one may round
         * a near tie differently: a feature's count may differ by a row. */
        const double da = pow(10.0, la[f]) - 1e-10, db = pow(10.0, lb[f]) - 1e-10;
        differ += fabs(da - db) > 1e-9;
        ck_assert_msg(fabs(da - db) <= 2.0 / 1024 + 1e-9, "feature %d: %g vs %g", f, da, db);
    }
    ck_assert_int_le(differ, 4);
    ck_assert_double_eq_tol(
        never / 48.0, json_number_value(json_object_get(eval, "zero_frequency_fraction")), 0.05);
    json_decref(eval);
    subsae__safetensors_close(a);
    subsae__safetensors_close(b);
}
END_TEST

/* --eval on an input file: allowed, with a warning that says why its
 * figures flatter the model; another file: no warning. */
START_TEST(eval_on_training_rows_warns)
{
    char data[600], other[600], args[4096];
    make_data("acts.npy", 1024, 16, 15, -1, data, sizeof data);
    make_data("other.npy", 256, 16, 16, -1, other, sizeof other);
    snprintf(args, sizeof args, "train '%s' %s --tokens 640 --eval '%s' --quiet", data, SMALL,
             data);
    ck_assert_int_eq(harness_cli(args, "same.txt"), 0);
    char *err = stderr_of("same.txt");
    ck_assert_msg(strstr(err, "warning: --eval") && strstr(err, "is one of the inputs"), "%s",
                  err);
    free(err);
    snprintf(args, sizeof args, "train '%s' %s --tokens 640 --eval '%s' --quiet", data, SMALL,
             other);
    ck_assert_int_eq(harness_cli(args, "other.txt"), 0);
    err = stderr_of("other.txt");
    ck_assert_msg(!strstr(err, "warning"), "%s", err);
    free(err);
}
END_TEST

START_TEST(help_for_every_subcommand)
{
    const char *commands[] = {"train", "eval", "encode", "rank", "inspect", "synth",
                              "demo",  "bench", "version"};
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        for (int form = 0; form < 2; form++) {
            char args[256], want[64];
            snprintf(args, sizeof args, "%s %s", commands[i], form ? "-h" : "--help");
            ck_assert_msg(harness_cli(args, "help.txt") == 0, "'subsae %s' failed", args);
            char path[700];
            char *text = slurp_path(harness_tmp_path("help.txt", path, sizeof path));
            snprintf(want, sizeof want, "usage: subsae %s ", commands[i]);
            ck_assert_msg(!strncmp(text, want, strlen(want)) && count_lines(text) > 3,
                          "subsae %s: %s", args, text);
            free(text);
        }
    }
    /* train's defaults and ranges are the library's (searched in the help
     * with its line wrapping undone). */
    char path[700];
    ck_assert_int_eq(harness_cli("train --help", "help.txt"), 0);
    char *text = slurp_path(harness_tmp_path("help.txt", path, sizeof path));
    char *to = text;
    for (const char *from = text; *from; from++)
        if (!(isspace((unsigned char)*from) && to > text && isspace((unsigned char)to[-1])))
            *to++ = isspace((unsigned char)*from) ? ' ' : *from;
    *to = '\0';
    int64_t batch, dead;
    double l1;
    ck_assert_ok(subsae_option_int_bounds(SUBSAE_OBJECT_TRAINER, SUBSAE_TRAIN_BATCH, NULL, NULL,
                                          &batch));
    ck_assert_ok(subsae_option_int_bounds(SUBSAE_OBJECT_TRAINER, SUBSAE_TRAIN_DEAD_WINDOW, NULL,
                                          NULL, &dead));
    ck_assert_ok(subsae_option_double_bounds(SUBSAE_OBJECT_TRAINER, SUBSAE_TRAIN_L1_COEF, NULL,
                                             NULL, &l1));
    char want[3][64];
    snprintf(want[0], sizeof want[0], "(default %lld; 1 to ", (long long)batch);
    snprintf(want[1], sizeof want[1], "(default %lld; at least 1)", (long long)dead);
    snprintf(want[2], sizeof want[2], "(default %g; from 0", l1);
    for (int i = 0; i < 3; i++)
        ck_assert_msg(strstr(text, want[i]), "'%s' not in train's help", want[i]);
    ck_assert_msg(strstr(text, "--lr X Adam learning rate") &&
                      strstr(text, "(default 0 = automatic; from 0, up to 1e+06)"),
                  "--lr's default and range not in train's help");
    free(text);
    /* An unknown option is named, with where to look. */
    ck_assert_int_eq(harness_cli("train x.npy --bogus", "bogus.txt"), 2);
    char *err = stderr_of("bogus.txt");
    ck_assert_msg(strstr(err, "unknown option --bogus (see subsae train --help)"), "%s", err);
    free(err);
}
END_TEST

START_TEST(skip_nonfinite_rows)
{
    char data[600], args[4096];
    make_data("nan.npy", 2048, 16, 15, 1500, data, sizeof data);
    /* Refused before the work, the row named with the way out... */
    snprintf(args, sizeof args, "train '%s' %s --epochs 1", data, SMALL);
    ck_assert_int_ne(harness_cli(args, "refused.txt"), 0);
    char *err = stderr_of("refused.txt");
    ck_assert_msg(count_lines(err) == 1 && strstr(err, "row 1500") &&
                      strstr(err, "--skip-nonfinite leaves such rows out") &&
                      !strstr(err, "init:") && !strstr(err, "subsae_buffer"),
                  "%s", err);
    free(err);
    /* ...which works. */
    snprintf(args, sizeof args, "train '%s' %s --epochs 1 --skip-nonfinite --json", data, SMALL);
    ck_assert_int_eq(harness_cli(args, "skipped.json"), 0);
    json_t *j = harness_read_json("skipped.json");
    ck_assert_int_eq(integer(j, "tokens"), 2047 - 2047 % 64);
    json_decref(j);
}
END_TEST

/* A run killed without warning (SIGKILL: no handler runs) goes on from
 * the checkpoint the clock saved (--checkpoint-minutes), with the command
 * the run printed when it saved the first one, whether or not it had
 * --out; a run that finishes removes a checkpoint saved only by the
 * clock. */
START_TEST(killed_run_goes_on_from_the_clock_checkpoint)
{
    char data[600], run[600], err_path[700], args[8192], command[4096];
    make_data("acts.npy", 2048, 16, 12, -1, data, sizeof data);
    harness_tmp_path("killed", run, sizeof run);
    for (int with_out = 1; with_out >= 0; with_out--) {
        const char *argv[] = {"train", data, "--features", "48", "--k", "4", "--batch", "64",
                              "--epochs", "200", "--threads", "1", "--checkpoint-minutes",
                              "0.0005", with_out ? "--out" : NULL, run, NULL};
        const char *name = with_out ? "killed-out" : "killed-no-out";
        pid_t pid = start(name, argv);
        snprintf(err_path, sizeof err_path, "%s/%s.err", harness_tmpdir(), name);
        wait_for_text(err_path, "go on with: ", pid);
        ck_assert_int_eq(kill(pid, SIGKILL), 0);
        ck_assert_int_eq(wait_exit(pid), 128 + SIGKILL);
        char *err = slurp_path(err_path);
        const char *p = strstr(err, "go on with: ") + strlen("go on with: ");
        snprintf(command, sizeof command, "%.*s", (int)strcspn(p, "\n"), p);
        free(err);
        ck_assert_msg(strstr(command, with_out ? "--resume /" : "--resume subsae-run-"), "%s",
                      command);
        snprintf(args, sizeof args, "cd '%s' && %s/bin/%s --quiet --json > '%s/goes-on.json'",
                 harness_tmpdir(), harness_build_dir(), command, harness_tmpdir());
        ck_assert_msg(harness_run(args) == 0, "%s failed", command);
        json_t *done = harness_read_json("goes-on.json");
        ck_assert_int_eq(integer(done, "steps"), 6400);
        json_decref(done);
        fprintf(stderr, "SIGKILL %s --out: went on to step 6400 with: %s\n",
                with_out ? "with" : "without", command);
    }
    snprintf(args, sizeof args,
             "train '%s' --features 48 --k 4 --batch 64 --epochs 20 --threads 1 "
             "--checkpoint-minutes 0.0005 --out finished",
             data);
    ck_assert_int_eq(harness_cli(args, "finished.out"), 0);
    snprintf(err_path, sizeof err_path, "%s/finished.out.err", harness_tmpdir());
    char *err = slurp_path(err_path);
    ck_assert_msg(err && strstr(err, "a checkpoint is kept in finished/checkpoint"), "%s", err);
    free(err);
    char checkpoint[700], model[700];
    snprintf(checkpoint, sizeof checkpoint, "%s/finished/checkpoint", harness_tmpdir());
    snprintf(model, sizeof model, "%s/finished/cfg.json", harness_tmpdir());
    ck_assert_msg(!exists(checkpoint), "a finished run kept the clock's checkpoint");
    ck_assert(exists(model));
}
END_TEST

SUBSAE_SUITE(cli_safety)
{
    Suite *s = suite_create("cli_safety");
    TCase *tc = harness_case(s, "runs", 120);
    tcase_add_test(tc, resume_without_out_saves_into_the_run);
    tcase_add_test(tc, bad_files_fail_before_the_first_step);
    tcase_add_test(tc, resume_refuses_other_data);
    tcase_add_test(tc, one_run_per_directory);
    tcase_add_test(tc, interrupts_save_and_say_how_to_resume);
    tcase_add_test(tc, second_signal_exits_at_once);
    tcase_add_test(tc, interrupted_encode_leaves_nothing);
    tcase_add_test(tc, eval_on_training_rows_warns);
    tcase_add_test(tc, finished_run_without_out_is_kept);
    tcase_add_test(tc, transcoder_needs_target);
    tcase_add_test(tc, log_and_sparsity_files);
    tcase_add_test(tc, help_for_every_subcommand);
    tcase_add_test(tc, skip_nonfinite_rows);
    tcase_add_test(tc, killed_run_goes_on_from_the_clock_checkpoint);
    return s;
}
