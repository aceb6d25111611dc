/* The SAE subcommands end to end: `subsae train` JSON fields, holding out
 * an evaluation fraction, saving, checkpoints and a bit-identical resume
 * through the command line, `subsae eval` / `subsae encode` against an
 * independent numpy implementation (tests/sae_numpy_check.py), and the
 * one-line errors. */
#include "harness.h"
#include "synth.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char data_path[600];

/* Synthetic activations as a float32 .npy in the test's directory. */
static const char *make_data(int64_t n, int64_t d)
{
    struct subsae__synth_spec spec = {.rows = n, .dim = d, .atoms = 40, .subspace_dim = d * 5 / 8,
                                      .active = 3, .coef_min = 0.5, .coef_max = 1.5,
                                      .noise = 0.01, .offset = 2.0, .seed = 12};
    float *x = malloc((size_t)(n * d) * sizeof *x);
    ck_assert_ok(subsae__synth(&spec, x, NULL));
    subsae_buffer *b;
    ck_assert_ok(subsae_buffer_wrap(x, SUBSAE_DTYPE_F32, n, d, d, SUBSAE_BORROW, &b));
    harness_tmp_path("acts.npy", data_path, sizeof data_path);
    ck_assert_ok(subsae_buffer_save_npy(b, data_path, SUBSAE_DTYPE_F32));
    subsae_buffer_free(b);
    free(x);
    return data_path;
}

/* Run `subsae ARGS` in the test's directory (a run without --out saves
 * there) with stdout and stderr to files; the exit status. */
static int run_cli(const char *args, const char *stdout_name, const char *stderr_name)
{
    char out[600], err[600], command[4096];
    harness_tmp_path(stdout_name, out, sizeof out);
    harness_tmp_path(stderr_name, err, sizeof err);
    snprintf(command, sizeof command, "cd '%s' && '%s/bin/subsae' %s > '%s' 2> '%s'",
             harness_tmpdir(), harness_build_dir(), args, out, err);
    return harness_run(command);
}

static json_t *read_json(const char *name)
{
    char path[600];
    harness_tmp_path(name, path, sizeof path);
    json_error_t error;
    json_t *j = json_load_file(path, 0, &error);
    ck_assert_msg(j != NULL, "%s: %s", name, error.text);
    return j;
}

static double number(const json_t *obj, const char *key)
{
    const json_t *v = json_object_get(obj, key);
    ck_assert_msg(json_is_number(v), "field %s is not a number", key);
    return json_number_value(v);
}

static int count_lines(const char *name)
{
    char path[600];
    harness_tmp_path(name, path, sizeof path);
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    int lines = 0, c;
    while ((c = fgetc(f)) != EOF)
        lines += c == '\n';
    fclose(f);
    return lines;
}

START_TEST(train_eval_encode_and_numpy)
{
    const char *data = make_data(4096, 16);
    char dir[600], args[4096];
    harness_tmp_path("model", dir, sizeof dir);
    snprintf(args, sizeof args,
             "train '%s' --features 64 --k 4 --batch 256 --epochs 3 "
             "--lr 3e-3 --seed 5 --eval-fraction 0.25 --dead-window 3072 --out '%s' "
             "--threads 1 --json --quiet",
             data, dir);
    ck_assert_int_eq(run_cli(args, "train.json", "train.err"), 0);
    ck_assert_int_eq(count_lines("train.err"), 0); /* --quiet */
    json_t *j = read_json("train.json");
    ck_assert_int_eq((int)number(j, "features"), 64);
    ck_assert_int_eq((int)number(j, "k"), 4);
    ck_assert_str_eq(json_string_value(json_object_get(j, "init")), "active-subspace");
    ck_assert_int_eq((int)number(j, "subspace_dim"), 10); /* the data's subspace */
    ck_assert_int_eq((int)number(j, "tokens"), 3 * 3072); /* 3 epochs of 12 batches */
    ck_assert_int_eq((int)number(j, "steps"), 36);
    ck_assert_double_gt(number(j, "seconds"), 0);
    ck_assert_double_gt(number(j, "tokens_per_second"), 0);
    const json_t *final = json_object_get(j, "final"), *eval = json_object_get(j, "eval");
    const char *final_keys[] = {"mse", "fvu", "explained_variance", "l0", "dead_fraction",
                                "dead_features", "dense_fraction"};
    for (size_t i = 0; i < sizeof final_keys / sizeof final_keys[0]; i++)
        number(final, final_keys[i]);
    const char *eval_keys[] = {"mse", "fvu", "explained_variance", "l0",
                               "zero_frequency_fraction", "dense_fraction"};
    for (size_t i = 0; i < sizeof eval_keys / sizeof eval_keys[0]; i++)
        number(eval, eval_keys[i]);
    ck_assert_double_le(number(final, "l0"), 4.0);
    ck_assert_double_gt(number(eval, "explained_variance"), 0.5);
    ck_assert_double_eq(number(final, "dead_features"), 64 * number(final, "dead_fraction"));

    /* `subsae eval` on the held-out quarter equals the train command's eval:
     * the saved (scale-folded) model encodes raw activations the same way. */
    char held[600];
    harness_tmp_path("held.npy", held, sizeof held);
    subsae_buffer *all, *tail;
    ck_assert_ok(subsae_buffer_open(data, NULL, &all));
    ck_assert_ok(subsae_buffer_view(all, 3072, 1024, &tail));
    ck_assert_int_eq(subsae_buffer_rows(tail), 1024);
    ck_assert_ok(subsae_buffer_save_npy(tail, held, SUBSAE_DTYPE_F32));
    subsae_buffer_free(tail);
    subsae_buffer_free(all);
    snprintf(args, sizeof args, "eval '%s' '%s' --json", dir, held);
    ck_assert_int_eq(run_cli(args, "eval.json", "eval.err"), 0);
    json_t *e = read_json("eval.json");
    for (size_t i = 0; i < sizeof eval_keys / sizeof eval_keys[0]; i++)
        ck_assert_double_eq_tol(number(e, eval_keys[i]), number(eval, eval_keys[i]),
                                1e-4 * (1 + number(eval, eval_keys[i])));
    json_decref(e);
    json_decref(j);

    /* numpy re-implementation of encode/decode and the metrics. */
    const char *py = getenv("SUBSAE_PYTHON");
    if (!py || !*py) {
        harness_skip("train_eval_encode_and_numpy", "no python (SUBSAE_PYTHON)");
        return;
    }
    char command[4096];
    snprintf(command, sizeof command, "'%s' '%s/tests/sae_numpy_check.py' '%s/bin/subsae' '%s' "
             "'%s' '%s'", py, harness_source_dir(), harness_build_dir(), dir, data,
             harness_tmpdir());
    int rc = harness_run(command);
    if (rc == 77) {
        harness_skip("train_eval_encode_and_numpy", "no numpy");
        return;
    }
    ck_assert_msg(rc == 0, "sae_numpy_check.py failed (%d)", rc);
}
END_TEST

static void read_file(const char *path, char **data, long *size)
{
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    *size = ftell(f);
    fseek(f, 0, SEEK_SET);
    *data = malloc((size_t)*size);
    ck_assert_int_eq(fread(*data, 1, (size_t)*size, f), (size_t)*size);
    fclose(f);
}

START_TEST(resume_from_the_command_line)
{
    const char *data = make_data(2000, 12);
    char a[600], b[600], c[600], args[4096];
    harness_tmp_path("straight", a, sizeof a);
    harness_tmp_path("half", b, sizeof b);
    harness_tmp_path("resumed", c, sizeof c);
    const char *common = "--features 32 --k 3 --init random --batch 128 --seed 3 --threads 2 "
                         "--quiet --json";
    snprintf(args, sizeof args, "train '%s' %s --epochs 2 --out '%s'", data, common, a);
    ck_assert_int_eq(run_cli(args, "a.json", "a.err"), 0);
    /* Interrupted run: one epoch with checkpoints every 5 steps... */
    snprintf(args, sizeof args, "train '%s' %s --epochs 1 --checkpoint-every 5 --out '%s'", data,
             common, b);
    ck_assert_int_eq(run_cli(args, "b.json", "b.err"), 0);
    /* ...finished by --resume with the run's total length. */
    snprintf(args, sizeof args,
             "train '%s' --resume '%s' --epochs 2 --threads 2 --quiet --json --out '%s'", data, b,
             c);
    ck_assert_int_eq(run_cli(args, "c.json", "c.err"), 0);
    json_t *ja = read_json("a.json"), *jc = read_json("c.json");
    ck_assert_double_eq(number(ja, "tokens"), number(jc, "tokens"));
    ck_assert_double_eq(number(json_object_get(ja, "final"), "mse"),
                        number(json_object_get(jc, "final"), "mse"));
    json_decref(ja);
    json_decref(jc);
    char pa[700], pc[700];
    snprintf(pa, sizeof pa, "%s/sae_weights.safetensors", a);
    snprintf(pc, sizeof pc, "%s/sae_weights.safetensors", c);
    char *da, *dc;
    long sa, sc;
    read_file(pa, &da, &sa);
    read_file(pc, &dc, &sc);
    ck_assert_int_eq(sa, sc);
    ck_assert_msg(memcmp(da, dc, (size_t)sa) == 0, "resumed weights differ");
    free(da);
    free(dc);
}
END_TEST

START_TEST(safetensors_input_and_eval_file)
{
    const char *data = make_data(1500, 10);
    char st[600], dir[600], args[4096];
    harness_tmp_path("acts.safetensors", st, sizeof st);
    harness_tmp_path("st-model", dir, sizeof dir);
    subsae_buffer *b;
    ck_assert_ok(subsae_buffer_open(data, NULL, &b));
    ck_assert_ok(subsae_buffer_save_safetensors(b, st, "acts", SUBSAE_DTYPE_F16));
    subsae_buffer_free(b);
    snprintf(args, sizeof args,
             "train '%s' --tensor acts --features 24 --k 3 --tokens 2000 --batch 100 "
             "--subspace-dim 4 --eval '%s' --out '%s' --json --quiet",
             st, data, dir);
    ck_assert_int_eq(run_cli(args, "st.json", "st.err"), 0);
    json_t *j = read_json("st.json");
    ck_assert_int_eq((int)number(j, "subspace_dim"), 4);
    ck_assert_int_eq((int)number(j, "tokens"), 2000);
    ck_assert_int_eq((int)number(j, "steps"), 20);
    double ev = number(json_object_get(j, "eval"), "explained_variance");
    snprintf(args, sizeof args, "eval '%s' '%s' --json", dir, data);
    ck_assert_int_eq(run_cli(args, "st-eval.json", "st-eval.err"), 0);
    json_t *e = read_json("st-eval.json");
    ck_assert_double_eq_tol(number(e, "explained_variance"), ev, 1e-4);
    json_decref(e);
    json_decref(j);
    /* A tensor name the file does not have. */
    snprintf(args, sizeof args, "train '%s' --tensor nope --features 24 --k 3", st);
    ck_assert_int_ne(run_cli(args, "st2.json", "st2.err"), 0);
    ck_assert_int_eq(count_lines("st2.err"), 1);
}
END_TEST

START_TEST(errors_are_one_line)
{
    const char *data = make_data(300, 8);
    char args[4096];
    const char *bad[] = {
        "train '%s' --k 4",                                     /* no --features */
        "train '%s' --features 16 --k 4 --init sideways",       /* bad init */
        "train '%s' --features 16 --k 4 --epochs 1 --tokens 9", /* both lengths */
        "train '%s' --features 16 --k 40 --init random",        /* k > features */
        "train '%s' --features 16 --k 4 --eval-fraction 2",     /* out of range */
        "train '%s' --features 16 --k 4 --checkpoint-every 3",  /* no --out */
        "train '%s'.missing --features 16 --k 4",               /* no file */
        "train '%s' --features 16 --k 4 --resume /nonexistent --init random",
        "eval /nonexistent '%s' --json",
        "encode /nonexistent '%s'",
        "train '%s' --features 16 --k 4 --bogus",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(args, sizeof args, bad[i], data);
        int rc = run_cli(args, "bad.out", "bad.err");
        ck_assert_msg(rc != 0, "'%s' succeeded", args);
        ck_assert_msg(count_lines("bad.err") == 1, "'%s': not one line", args);
        ck_assert_int_eq(count_lines("bad.out"), 0);
    }
}
END_TEST

/* The text of a file of the test's directory (the caller frees it). */
static char *read_text(const char *name)
{
    char path[600], *data;
    long size;
    harness_tmp_path(name, path, sizeof path);
    read_file(path, &data, &size);
    data = realloc(data, (size_t)size + 1);
    ck_assert_ptr_nonnull(data);
    data[size] = '\0';
    return data;
}

/* The lines of `text` that begin with `prefix` and hold every one of the
 * `n` words; the last such line into last (when not NULL). */
static int count_progress_lines(const char *text, const char *prefix, const char *const *words,
                                int n, char *last, size_t size)
{
    int count = 0;
    for (const char *line = text; *line;) {
        const char *end = strchr(line, '\n');
        size_t length = end ? (size_t)(end - line) : strlen(line);
        char buf[1024];
        snprintf(buf, sizeof buf, "%.*s", (int)(length < sizeof buf ? length : sizeof buf - 1),
                 line);
        bool match = strncmp(buf, prefix, strlen(prefix)) == 0;
        for (int i = 0; match && i < n; i++)
            match = strstr(buf, words[i]) != NULL;
        if (match) {
            count++;
            if (last)
                snprintf(last, size, "%s", buf);
        }
        line += length + (end != NULL);
    }
    return count;
}

/* Progress on stderr when it is not a terminal: plain lines (no carriage
 * return) with the rate and the ETA, at most one every 5 s plus the final
 * one, and nothing with --quiet. */
START_TEST(progress_lines_when_not_a_terminal)
{
    const char *data = make_data(4096, 16);
    char args[4096], last[1024];
    const char *train_words[] = {"tokens/s", "ETA", "elapsed", "step ", "loss ", "L0 "};

    /* train: 3 epochs of 16 batches of 256 rows. The SUBSAE_EVENT_LOG
     * lines of the initialisation are kept. */
    snprintf(args, sizeof args,
             "train '%s' --features 64 --k 4 --batch 256 --epochs 3 --seed 5 --threads 1",
             data);
    ck_assert_int_eq(run_cli(args, "p-train.txt", "p-train.err"), 0);
    char *err = read_text("p-train.err");
    ck_assert_msg(strchr(err, '\r') == NULL, "a carriage return in: %s", err);
    ck_assert_msg(strstr(err, "\033[") == NULL, "an escape sequence in: %s", err);
    ck_assert_msg(strstr(err, "subsae train: init: ") != NULL, "no init log line: %s", err);
    int lines = count_progress_lines(err, "subsae train: ", train_words, 6, last, sizeof last);
    /* Rate limited: 48 steps, a few lines at most (one every 5 s, and the
     * final one). */
    ck_assert_msg(lines >= 1 && lines <= 4, "%d progress lines in: %s", lines, err);
    ck_assert_msg(strncmp(last, "subsae train: 12288/12288 tokens (100%), ", 41) == 0 &&
                      strstr(last, "ETA 0:00") && strstr(last, "step 48, loss "),
                  "final line: %s", last);
    free(err);
    /* ...with --quiet: nothing on stderr. */
    snprintf(args, sizeof args,
             "train '%s' --features 64 --k 4 --batch 256 --epochs 3 --seed 5 --threads 1 --quiet",
             data);
    ck_assert_int_eq(run_cli(args, "q-train.txt", "q-train.err"), 0);
    err = read_text("q-train.err");
    ck_assert_msg(err[0] == '\0', "--quiet printed: %s", err);
    free(err);

    /* rank, exact: one pass over the rows ("gram"); the table on stdout. */
    const char *rank_words[] = {"rows/s", "ETA", "elapsed", "phase gram"};
    snprintf(args, sizeof args, "rank '%s' --method exact", data);
    ck_assert_int_eq(run_cli(args, "p-rank.txt", "p-rank.err"), 0);
    err = read_text("p-rank.err");
    ck_assert_msg(strchr(err, '\r') == NULL, "a carriage return in: %s", err);
    lines = count_progress_lines(err, "subsae rank acts.npy: ", rank_words, 4, last, sizeof last);
    ck_assert_msg(lines >= 1 && lines <= 3, "%d progress lines in: %s", lines, err);
    ck_assert_msg(strncmp(last, "subsae rank acts.npy: 4096/4096 rows (100%), ", 45) == 0,
                  "final line: %s", last);
    ck_assert_int_eq(count_lines("p-rank.err"), lines); /* nothing else */
    ck_assert_int_eq(count_lines("p-rank.txt"), 2);     /* header and one report */
    free(err);
    /* randomized: q + 1 = 4 passes over the rows ("power"), one bar. */
    const char *power_words[] = {"rows/s", "ETA", "phase power, pass "};
    snprintf(args, sizeof args, "rank '%s' --method randomized --rank 2 --power-iters 3", data);
    ck_assert_int_eq(run_cli(args, "r-rank.txt", "r-rank.err"), 0);
    err = read_text("r-rank.err");
    lines = count_progress_lines(err, "subsae rank acts.npy: ", power_words, 3, last,
                                 sizeof last);
    ck_assert_msg(lines >= 1 && lines <= 3, "%d progress lines in: %s", lines, err);
    ck_assert_msg(strncmp(last, "subsae rank acts.npy: 16384/16384 rows (100%), ", 47) == 0 &&
                      strstr(last, "phase power, pass 4/4"),
                  "final line: %s", last);
    free(err);
    /* --quiet: nothing on stderr; the same table on stdout. */
    snprintf(args, sizeof args, "rank '%s' --method exact --quiet", data);
    ck_assert_int_eq(run_cli(args, "q-rank.txt", "q-rank.err"), 0);
    err = read_text("q-rank.err");
    ck_assert_msg(err[0] == '\0', "--quiet printed: %s", err);
    free(err);
    char *table = read_text("p-rank.txt"), *quiet_table = read_text("q-rank.txt");
    ck_assert_str_eq(table, quiet_table);
    free(table);
    free(quiet_table);
}
END_TEST

SUBSAE_SUITE(cli_sae)
{
    Suite *s = suite_create("cli_sae");
    TCase *tc = harness_case(s, "cli", 120);
    tcase_add_test(tc, train_eval_encode_and_numpy);
    tcase_add_test(tc, resume_from_the_command_line);
    tcase_add_test(tc, safetensors_input_and_eval_file);
    tcase_add_test(tc, errors_are_one_line);
    tcase_add_test(tc, progress_lines_when_not_a_terminal);
    return s;
}
