/* `subsae synth` and `subsae demo`: the generator is deterministic and its
 * data has exactly the requested active subspace; the demo runs end to end
 * and reports both initialisations. */
#include "harness.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

static json_int_t integer_at(json_t *obj, const char *path1, const char *path2)
{
    json_t *v = json_object_get(obj, path1);
    if (path2)
        v = json_object_get(v, path2);
    ck_assert_msg(json_is_integer(v), "%s.%s is not an integer", path1, path2 ? path2 : "");
    return json_integer_value(v);
}

/* Whether the stderr of harness_cli(..., NAME) holds TEXT. */
static bool err_says(const char *name, const char *text)
{
    char command[2048];
    snprintf(command, sizeof command, "grep -qF -- '%s' '%s/%s'", text, harness_tmpdir(), name);
    return harness_run(command) == 0;
}

START_TEST(synth_is_deterministic_and_has_the_subspace)
{
    char a[600], b[600], c[600], args[2048];
    harness_tmp_path("a.npy", a, sizeof a);
    harness_tmp_path("b.npy", b, sizeof b);
    harness_tmp_path("c.npy", c, sizeof c);
    const char *shape = "--dim 48 --subspace 20 --features 64 --k 3 --tokens 8192";
    snprintf(args, sizeof args, "synth %s --seed 5 --out '%s' --json", shape, a);
    ck_assert_int_eq(harness_cli(args, "synth.json"), 0);
    json_t *report = harness_read_json("synth.json");
    ck_assert_int_eq(integer_at(report, "tokens", NULL), 8192);
    ck_assert_int_eq(integer_at(report, "subspace", NULL), 20);
    json_decref(report);
    snprintf(args, sizeof args, "synth %s --seed 5 --out '%s'", shape, b);
    ck_assert_int_eq(harness_cli(args, "synth_b.txt"), 0);
    snprintf(args, sizeof args, "synth %s --seed 6 --out '%s'", shape, c);
    ck_assert_int_eq(harness_cli(args, "synth_c.txt"), 0);
    char command[2048];
    snprintf(command, sizeof command, "cmp -s '%s' '%s'", a, b);
    ck_assert_msg(harness_run(command) == 0, "same seed, different files");
    snprintf(command, sizeof command, "cmp -s '%s' '%s'", a, c);
    ck_assert_msg(harness_run(command) == 1, "different seeds, same file");

    /* 99 % of the variance in exactly the 20 directions (noise is 1e-4 of
     * it), 48 in all. */
    snprintf(args, sizeof args, "rank '%s' --method exact --json", a);
    ck_assert_int_eq(harness_cli(args, "rank.json"), 0);
    report = harness_read_json("rank.json");
    json_t *first = json_array_get(json_object_get(report, "reports"), 0);
    ck_assert_int_eq(integer_at(first, "effective_rank", NULL), 20);
    ck_assert_int_eq(integer_at(first, "dim", NULL), 48);
    json_decref(report);

    /* Outputs never replace data unasked: synth needs --overwrite for an
     * existing file (c stays seed 6's until then), and rank's --csv and
     * --plot may not name an input at all. */
    snprintf(args, sizeof args, "synth %s --seed 5 --out '%s'", shape, c);
    ck_assert_int_eq(harness_cli(args, "again.txt"), 1);
    ck_assert_msg(err_says("again.txt.err", "already exists; give --overwrite"), "no reason");
    snprintf(command, sizeof command, "cmp -s '%s' '%s'", a, c);
    ck_assert_msg(harness_run(command) == 1, "synth replaced %s without --overwrite", c);
    snprintf(args, sizeof args, "synth %s --seed 5 --out '%s' --overwrite", shape, c);
    ck_assert_int_eq(harness_cli(args, "again.txt"), 0);
    ck_assert_msg(harness_run(command) == 0, "--overwrite did not replace %s", c);
    for (int plot = 0; plot < 2; plot++) {
        snprintf(args, sizeof args, "rank '%s' '%s' --%s '%s'", a, b, plot ? "plot" : "csv", b);
        ck_assert_int_eq(harness_cli(args, "onto-input.txt"), 1);
        ck_assert_msg(err_says("onto-input.txt.err", "is a file of rows this command reads"),
                      "no reason");
    }
    snprintf(command, sizeof command, "cmp -s '%s' '%s'", a, b);
    ck_assert_msg(harness_run(command) == 0, "rank replaced its input %s", b);
}
END_TEST

START_TEST(synth_rejects_bad_sizes)
{
    ck_assert_int_ne(harness_cli("synth --dim 8 --subspace 9 --out /tmp/never.npy", "bad.txt"), 0);
    ck_assert_int_ne(harness_cli("synth --k 0 --out /tmp/never.npy", "bad2.txt"), 0);
    ck_assert_int_ne(harness_cli("synth --dim 8", "bad3.txt"), 0); /* no --out */
}
END_TEST

START_TEST(demo_runs_both_initialisations)
{
    /* A reduced run: the full demo is `make demo`. */
    ck_assert_int_eq(harness_cli("demo --json --quiet --tokens 16384 --epochs 2 --features 256 "
                                 "--atoms 64 --dim 32 --subspace 16",
                                 "demo.json"),
                     0);
    json_t *report = harness_read_json("demo.json");
    ck_assert_int_eq(integer_at(report, "spectrum", "r99"), 16);
    json_t *runs = json_object_get(report, "runs");
    ck_assert_uint_eq(json_array_size(runs), 2);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(runs, 0), "init")),
                     "random");
    json_t *asi = json_array_get(runs, 1);
    ck_assert_str_eq(json_string_value(json_object_get(asi, "init")), "active subspace");
    ck_assert_int_eq(integer_at(asi, "subspace_dim", NULL), 16);
    for (size_t i = 0; i < 2; i++) {
        json_t *run = json_array_get(runs, i);
        double l0 = json_number_value(json_object_get(run, "l0"));
        double recovery = json_number_value(json_object_get(run, "recovery_mmcs"));
        ck_assert_double_le(l0, 4.0 + 1e-9);
        ck_assert(recovery > 0.0 && recovery <= 1.0 + 1e-6);
    }
    json_decref(report);
}
END_TEST

/* tools/reproduce.py on a small data set of the same layout: synthetic
 * files whose attention outputs have the smallest subspace. */
START_TEST(reproduce_writes_the_report)
{
    if (harness_run("command -v gnuplot >/dev/null") != 0) {
        harness_skip("reproduce_writes_the_report", "gnuplot is not installed (make deps)");
        return;
    }
    char data[600], out[600], args[1024], command[4096];
    harness_tmp_path("data", data, sizeof data);
    harness_tmp_path("report", out, sizeof out);
    snprintf(command, sizeof command, "mkdir -p '%s'", data);
    ck_assert_int_eq(harness_run(command), 0);
    const char *sites[] = {"attn_out", "mlp_out", "resid_post", "attn_z", "mlp_in"};
    const int subspace[] = {10, 20, 22, 21, 19};
    for (int layer = 0; layer < 2; layer++)
        for (int s = 0; s < 5; s++) {
            snprintf(args, sizeof args,
                     "synth --dim 24 --subspace %d --features 48 --k 3 --tokens 2048 --seed %d "
                     "--out '%s/L%d_%s.npy'",
                     subspace[s], 10 * layer + s, data, layer, sites[s]);
            ck_assert_int_eq(harness_cli(args, "synth.txt"), 0);
        }
    snprintf(command, sizeof command,
             "'%s' '%s/tools/reproduce.py' '%s/bin/subsae' '%s' '%s' 2>/dev/null "
             "&& grep -q '^| L1 | \\*\\*10 (0.42)\\*\\*' '%s/report.md' "
             "&& grep -q 'at every layer: \\*\\*yes' '%s/report.md' && test -s '%s/spectra.png'",
             getenv("SUBSAE_PYTHON") ? getenv("SUBSAE_PYTHON") : "/usr/bin/python3",
             harness_source_dir(), harness_build_dir(), data, out, out, out, out);
    ck_assert_msg(harness_run(command) == 0, "reproduce report missing or wrong: %s/report.md",
                  out);
}
END_TEST

SUBSAE_SUITE(cli_demo)
{
    Suite *s = suite_create("cli_demo");
    TCase *tc = harness_case(s, "synth", 60);
    tcase_add_test(tc, synth_is_deterministic_and_has_the_subspace);
    tcase_add_test(tc, synth_rejects_bad_sizes);
    tc = harness_case(s, "demo", 120);
    tcase_add_test(tc, demo_runs_both_initialisations);
    tcase_add_test(tc, reproduce_writes_the_report);
    return s;
}
