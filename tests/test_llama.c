/* The model host (examples/llama, build/bin/subsae-llama): its forward
 * pass and spliced losses against an independent float64 numpy forward
 * (tests/llama_numpy_check.py) on a small random model written here and on
 * the shared stories260K model; `rank` in-process against `subsae rank` on
 * the recorded files; and one clear line for every bad input. */
#include "harness.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- a small random model in the llama2.c format ------------------------- */

struct tiny {
    int32_t header[7]; /* dim, hidden, layers, heads, kv heads, vocab, seq_len */
};

/* Grouped-query attention (4 heads over 2 key/value heads) and a separate
 * classifier (negative vocabulary size): the paths stories260K does not
 * take. Weights are normal draws scaled to keep activations of order 1;
 * the rotary tables are the standard ones. */
static const struct tiny tiny_model = {{16, 24, 2, 4, 2, -40, 32}};

static int64_t tiny_floats(const int32_t *h, int64_t *rope_at)
{
    int64_t d = h[0], hid = h[1], l = h[2], hs = d / h[3], kv = h[4] * hs, v = abs(h[5]);
    int64_t before_rope = v * d + l * (2 * d + 2 * d * d + 2 * kv * d + 3 * hid * d) + d;
    *rope_at = before_rope;
    return before_rope + h[6] * hs + (h[5] < 0 ? v * d : 0);
}

static void write_tiny_model(const char *path, const struct tiny *t, int64_t truncate_bytes)
{
    int64_t rope_at, n = tiny_floats(t->header, &rope_at);
    float *w = harness_normal_rows(5, n, 1, 0.0);
    for (int64_t i = 0; i < n; i++)
        w[i] *= 0.3f;
    int hs = t->header[0] / t->header[3], half = hs / 2, len = t->header[6];
    for (int p = 0; p < len; p++)
        for (int i = 0; i < half; i++) {
            double angle = p * pow(10000.0, -2.0 * i / hs);
            w[rope_at + p * half + i] = (float)cos(angle);
            w[rope_at + (int64_t)len * half + p * half + i] = (float)sin(angle);
        }
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fwrite(t->header, sizeof t->header, 1, f), 1);
    size_t bytes = (size_t)n * sizeof *w - (size_t)truncate_bytes;
    ck_assert_int_eq(fwrite(w, 1, bytes, f), bytes);
    ck_assert_int_eq(fclose(f), 0);
    free(w);
}

static const char *tiny_path(void)
{
    static char path[600];
    harness_tmp_path("tiny.bin", path, sizeof path);
    write_tiny_model(path, &tiny_model, 0);
    return path;
}

/* ---- running the host ------------------------------------------------------ */

static int llama(const char *args, const char *out_name)
{
    return harness_program("subsae-llama", args, out_name);
}

/* The error output of a run named out_name: exactly one line, naming the
 * program, and containing `expected`. */
static void assert_one_line_error(const char *out_name, const char *expected)
{
    char name[128], path[700], text[2048] = "";
    snprintf(name, sizeof name, "%s.err", out_name);
    harness_tmp_path(name, path, sizeof path);
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    ck_assert_msg(strncmp(text, "subsae-llama ", 13) == 0, "%s: '%s'", out_name, text);
    ck_assert_msg(strchr(text, '\n') == text + n - 1, "%s: not one line: '%s'", out_name,
                  text);
    ck_assert_msg(strstr(text, expected), "%s: '%s' lacks '%s'", out_name, text, expected);
}

static void expect_failure(const char *args, const char *out_name, const char *expected)
{
    int rc = llama(args, out_name);
    ck_assert_msg(rc == 1, "%s: exit %d, want 1", args, rc);
    assert_one_line_error(out_name, expected);
}

static int numpy_check(const char *model, const char *sae_dir, const char *site,
                       const char *workdir)
{
    const char *py = getenv("SUBSAE_PYTHON");
    if (!py || !*py)
        return 77;
    char command[4096];
    snprintf(command, sizeof command,
             "'%s' '%s/tests/llama_numpy_check.py' '%s/bin/subsae-llama' '%s' '%s' %s%s%s %s",
             py, harness_source_dir(), harness_build_dir(), model, workdir,
             sae_dir ? "'" : "", sae_dir ? sae_dir : "", sae_dir ? "'" : "", site ? site : "");
    return harness_run(command);
}

/* ---- the forward pass and the splice against numpy ------------------------ */

/* Record the tiny model's sites, train a small SAE on one of them, and
 * let numpy check every site, the clean loss and the spliced losses. */
START_TEST(tiny_model_matches_numpy)
{
    const char *model = tiny_path();
    char args[2048], rec[600], sae[600], work[600];
    harness_tmp_path("rec", rec, sizeof rec);
    harness_tmp_path("sae", sae, sizeof sae);
    harness_tmp_path("numpy", work, sizeof work);
    snprintf(args, sizeof args, "record '%s' --sequences 16 --seq-len 32 --out '%s'", model,
             rec);
    ck_assert_int_eq(llama(args, "record.out"), 0);
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "train '%s/L1_attn_out.npy' --features 64 --k 4 --epochs 4 --batch 64 --out '%s' "
             "--quiet",
             rec, sae);
    ck_assert_int_eq(harness_cli(cmd, "train.out"), 0);
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", work);
    ck_assert_int_eq(harness_run(cmd), 0);
    int rc = numpy_check(model, sae, "L1_attn_out", work);
    if (rc == 77) {
        harness_skip("tiny_model_matches_numpy", "no python with numpy (SUBSAE_PYTHON)");
        return;
    }
    ck_assert_msg(rc == 0, "llama_numpy_check.py failed (%d)", rc);
}
END_TEST

/* The stories260K model with an SAE on L2 attention output and a
 * transcoder replacing L2's MLP. */
START_TEST(stories260k_matches_numpy)
{
    char model[600], data[600], target[600], sae[600], work[600], cmd[2048];
    if (!harness_shared_file("stories260K.bin", model, sizeof model)) {
        harness_skip("stories260k_matches_numpy", "no shared data");
        return;
    }
    static const char *const runs[][3] = {{"L2_attn_out.npy", NULL, "L2_attn_out"},
                                          {"L2_mlp_in.npy", "L2_mlp_out.npy", "L2_mlp_out"}};
    for (int i = 0; i < 2; i++) {
        harness_shared_file(runs[i][0], data, sizeof data);
        if (runs[i][1])
            snprintf(target, sizeof target, "--target '%s'",
                     harness_shared_file(runs[i][1], cmd, sizeof cmd));
        else
            target[0] = '\0';
        snprintf(cmd, sizeof cmd, "sae%d", i);
        harness_tmp_path(cmd, sae, sizeof sae);
        snprintf(cmd, sizeof cmd, "numpy%d", i);
        harness_tmp_path(cmd, work, sizeof work);
        snprintf(cmd, sizeof cmd,
                 "train '%s' %s --features 512 --k 8 --epochs 1 --batch 1024 --out '%s' --quiet",
                 data, target, sae);
        ck_assert_int_eq(harness_cli(cmd, "train.out"), 0);
        snprintf(cmd, sizeof cmd, "mkdir -p '%s'", work);
        ck_assert_int_eq(harness_run(cmd), 0);
        int rc = numpy_check(model, sae, runs[i][2], work);
        if (rc == 77) {
            harness_skip("stories260k_matches_numpy", "no python with numpy (SUBSAE_PYTHON)");
            return;
        }
        ck_assert_msg(rc == 0, "llama_numpy_check.py failed on %s (%d)", runs[i][2], rc);
    }
}
END_TEST

/* ---- rank in-process against subsae rank on the recorded files ----------- */

static json_t *report_of(json_t *reports, const char *key, const char *value)
{
    size_t i;
    json_t *r;
    json_array_foreach(reports, i, r)
    {
        const char *v = json_string_value(json_object_get(r, key));
        if (v && (strcmp(v, value) == 0 ||
                  (strlen(v) > strlen(value) && !strcmp(v + strlen(v) - strlen(value), value))))
            return r;
    }
    return NULL;
}

static int64_t r99_of(json_t *report)
{
    return json_integer_value(json_object_get(json_object_get(report, "effective_ranks"), "0.99"));
}

START_TEST(rank_in_process_equals_rank_of_recorded_files)
{
    char model[600], rec[600], args[2048];
    if (!harness_shared_file("stories260K.bin", model, sizeof model)) {
        harness_skip("rank_in_process_equals_rank_of_recorded_files", "no shared data");
        return;
    }
    harness_tmp_path("rec", rec, sizeof rec);
    const char *tokens = "--sequences 64 --seq-len 256 --seed 3"; /* 16,384 tokens */
    snprintf(args, sizeof args, "record '%s' %s --out '%s' --json", model, tokens, rec);
    ck_assert_int_eq(llama(args, "record.json"), 0);
    snprintf(args, sizeof args, "rank '%s' %s --json", model, tokens);
    ck_assert_int_eq(llama(args, "rank.json"), 0);
    snprintf(args, sizeof args, "rank '%s'/L*.npy --json --quiet", rec);
    ck_assert_int_eq(harness_cli(args, "files.json"), 0);
    json_t *ours = harness_read_json("rank.json"), *files = harness_read_json("files.json");
    json_t *our_reports = json_object_get(ours, "reports");
    json_t *file_reports = json_object_get(files, "reports");
    ck_assert_int_eq(json_array_size(our_reports), 25);
    ck_assert_int_eq(json_array_size(file_reports), 25);
    static const char *const kinds[] = {"attn_z", "attn_out", "mlp_out", "resid_post"};
    for (int layer = 0; layer < 5; layer++) {
        int64_t r99[4];
        for (int k = 0; k < 4; k++) {
            char site[64], file[80];
            snprintf(site, sizeof site, "L%d_%s", layer, kinds[k]);
            snprintf(file, sizeof file, "/%s.npy", site);
            json_t *a = report_of(our_reports, "site", site), *b = report_of(file_reports, "path", file);
            ck_assert_msg(a && b, "%s missing", site);
            ck_assert_int_eq(json_integer_value(json_object_get(a, "rows")), 16384);
            r99[k] = r99_of(a);
            ck_assert_int_eq(r99[k], r99_of(b));
            double ea = json_real_value(json_object_get(a, "entropy_rank"));
            double eb = json_real_value(json_object_get(b, "entropy_rank"));
            ck_assert_msg(fabs(ea - eb) <= 1e-6 * eb, "%s entropy rank %g vs %g", site, ea, eb);
        }
        for (int k = 0; k < 4; k++)
            ck_assert_msg(k == 1 || r99[1] < r99[k], "layer %d: attn_out r99 %lld, %s %lld",
                          layer, (long long)r99[1], kinds[k], (long long)r99[k]);
    }
    json_decref(ours);
    json_decref(files);
}
END_TEST

/* ---- bad input ------------------------------------------------------------ */

START_TEST(bad_checkpoints_get_one_line)
{
    char path[600], args[1024];
    harness_tmp_path("truncated.bin", path, sizeof path);
    write_tiny_model(path, &tiny_model, 100);
    snprintf(args, sizeof args, "rank '%s' --sequences 2 --seq-len 8", path);
    expect_failure(args, "truncated", "truncated");

    struct tiny absurd = {{1 << 30, 24, 2, 4, 2, 40, 32}};
    harness_tmp_path("absurd.bin", path, sizeof path);
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    fwrite(absurd.header, sizeof absurd.header, 1, f);
    fclose(f);
    snprintf(args, sizeof args, "rank '%s' --sequences 2 --seq-len 8", path);
    expect_failure(args, "absurd", "not a llama2.c checkpoint");

    struct tiny heads = {{16, 24, 2, 3, 2, 40, 32}}; /* 3 heads do not divide 16 */
    harness_tmp_path("heads.bin", path, sizeof path);
    f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    fwrite(heads.header, sizeof heads.header, 1, f);
    fclose(f);
    snprintf(args, sizeof args, "rank '%s' --sequences 2 --seq-len 8", path);
    expect_failure(args, "heads", "heads");

    harness_tmp_path("short.bin", path, sizeof path);
    f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    fwrite("abc", 3, 1, f);
    fclose(f);
    snprintf(args, sizeof args, "rank '%s'", path);
    expect_failure(args, "short", "header");
    expect_failure("rank /nonexistent/model.bin", "missing", "cannot open");
}
END_TEST

/* An int32 .npy of token ids [n_seq, seq_len] holding `value` after BOS. */
static void write_ids(const char *path, int n_seq, int seq_len, int32_t value)
{
    char header[128];
    int n = snprintf(header, sizeof header,
                     "{'descr': '<i4', 'fortran_order': False, 'shape': (%d, %d), }", n_seq,
                     seq_len);
    int padded = (10 + n + 1 + 63) / 64 * 64 - 10;
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    unsigned char magic[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)padded, 0};
    fwrite(magic, 1, 10, f);
    fprintf(f, "%-*s\n", padded - 1, header);
    for (int i = 0; i < n_seq * seq_len; i++) {
        int32_t id = i % seq_len ? value : 1;
        fwrite(&id, 4, 1, f);
    }
    fclose(f);
}

START_TEST(bad_tokens_sites_and_outputs_get_one_line)
{
    const char *model = tiny_path();
    char ids[600], args[2048], out[600];
    harness_tmp_path("outside.npy", ids, sizeof ids);
    write_ids(ids, 2, 8, 40); /* the vocabulary is 0..39 */
    snprintf(args, sizeof args, "rank '%s' --tokens '%s'", model, ids);
    expect_failure(args, "outside", "outside the model's vocabulary of 40");

    harness_tmp_path("long.npy", ids, sizeof ids);
    write_ids(ids, 1, 33, 5); /* the context is 32 */
    snprintf(args, sizeof args, "rank '%s' --tokens '%s'", model, ids);
    expect_failure(args, "long", "the model takes 2 to 32");
    snprintf(args, sizeof args, "rank '%s' --sequences 2 --seq-len 64", model);
    expect_failure(args, "long_sampled", "the model takes 2 to 32");

    harness_tmp_path("floats.npy", ids, sizeof ids);
    float *x = harness_normal_rows(1, 4, 4, 0.0);
    subsae_buffer *b = harness_wrap_copy(x, 4, 4);
    ck_assert_ok(subsae_buffer_save_npy(b, ids, SUBSAE_DTYPE_F32));
    subsae_buffer_free(b);
    free(x);
    snprintf(args, sizeof args, "rank '%s' --tokens '%s'", model, ids);
    expect_failure(args, "floats", "int32 or int64");

    snprintf(args, sizeof args, "rank '%s' --sequences 2 --seq-len 8 --sites L2_attn_out",
             model);
    expect_failure(args, "site_layer", "no site 'L2_attn_out'");
    snprintf(args, sizeof args, "rank '%s' --sequences 2 --seq-len 8 --sites L0_attn", model);
    expect_failure(args, "site_kind", "no site 'L0_attn'");

    /* --out: a file, and an existing recording without --overwrite */
    harness_tmp_path("rec", out, sizeof out);
    snprintf(args, sizeof args, "record '%s' --sequences 2 --seq-len 8 --out '%s'", model, ids);
    expect_failure(args, "out_file", "not a directory");
    snprintf(args, sizeof args, "record '%s' --sequences 2 --seq-len 8 --out '%s'", model, out);
    ck_assert_int_eq(llama(args, "first"), 0);
    expect_failure(args, "second", "already exists");
    strcat(args, " --overwrite");
    ck_assert_int_eq(llama(args, "overwrite"), 0);
}
END_TEST

static void save_sae(const char *dir, int64_t d_in, int64_t d_out)
{
    subsae_sae *sae;
    ck_assert_ok(subsae_sae_create(d_in, d_out, 8, SUBSAE_ACT_TOPK, &sae));
    ck_assert_ok(subsae_sae_set_int(sae, SUBSAE_SAE_K, 2));
    ck_assert_ok(subsae_sae_save(sae, dir));
    subsae_sae_free(sae);
}

START_TEST(bad_saes_get_one_line)
{
    const char *model = tiny_path();
    char dir[600], args[2048];
    harness_tmp_path("narrow", dir, sizeof dir);
    save_sae(dir, 8, 8);
    snprintf(args, sizeof args, "splice '%s' '%s' --site L0_attn_out --sequences 2 --seq-len 8",
             model, dir);
    expect_failure(args, "narrow.out", "maps width 8 to 8, but L0_attn_out has width 16");

    harness_tmp_path("transcoder", dir, sizeof dir);
    save_sae(dir, 16, 16);
    subsae_sae *tc;
    ck_assert_ok(subsae_sae_load(dir, &tc));
    ck_assert_ok(subsae_sae_set_int(tc, SUBSAE_SAE_TRANSCODER, 1));
    ck_assert_ok(subsae_sae_save(tc, dir));
    subsae_sae_free(tc);
    snprintf(args, sizeof args, "splice '%s' '%s' --site L1_attn_out --sequences 2 --seq-len 8",
             model, dir);
    expect_failure(args, "transcoder_site", "give --site L1_mlp_out");
    snprintf(args, sizeof args, "splice '%s' '%s' --site L1_mlp_out --sequences 2 --seq-len 8 "
             "--json", model, dir);
    ck_assert_int_eq(llama(args, "transcoder.json"), 0);
    json_t *j = harness_read_json("transcoder.json");
    ck_assert(json_is_true(json_object_get(j, "transcoder")));
    json_decref(j);

    /* An SAE that records another site of this model is spliced with a
     * warning; at its own site, without one. */
    harness_tmp_path("trained-on-L0", dir, sizeof dir);
    save_sae(dir, 16, 16);
    subsae_sae *other;
    ck_assert_ok(subsae_sae_load(dir, &other));
    ck_assert_ok(subsae_sae_set_metadata(other, "{\"hook_name\": \"L0_attn_out\"}"));
    ck_assert_ok(subsae_sae_save(other, dir));
    subsae_sae_free(other);
    snprintf(args, sizeof args, "splice '%s' '%s' --site L1_attn_out --sequences 2 --seq-len 8",
             model, dir);
    ck_assert_int_eq(llama(args, "other_site"), 0);
    assert_one_line_error("other_site", "warning: the SAE in");
    assert_one_line_error("other_site", "trained on L0_attn_out (its hook_name), here it reads "
                                        "L1_attn_out");
    snprintf(args, sizeof args, "splice '%s' '%s' --site L0_attn_out --sequences 2 --seq-len 8",
             model, dir);
    ck_assert_int_eq(llama(args, "own_site"), 0);
    char err_path[700];
    harness_tmp_path("own_site.err", err_path, sizeof err_path);
    struct stat st;
    ck_assert_msg(stat(err_path, &st) == 0 && st.st_size == 0, "a warning at the SAE's own site");

    snprintf(args, sizeof args, "splice '%s' /nonexistent/sae --site L0_attn_out", model);
    expect_failure(args, "no_sae", "/nonexistent/sae");
    snprintf(args, sizeof args, "splice '%s' '%s' --site L9_attn_out", model, dir);
    expect_failure(args, "splice_site", "no site 'L9_attn_out'");
}
END_TEST

START_TEST(usage_errors_exit_2_and_help_exits_0)
{
    ck_assert_int_eq(llama("", "none"), 2);
    ck_assert_int_eq(llama("frobnicate", "unknown"), 2);
    ck_assert_int_eq(llama("record", "record_bare"), 2);
    ck_assert_int_eq(llama("splice model", "splice_bare"), 2);
    ck_assert_int_eq(llama("rank m --sequences zero", "bad_number"), 2);
    ck_assert_int_eq(llama("--help", "help"), 0);
    ck_assert_int_eq(llama("splice --help", "splice_help"), 0);
}
END_TEST

SUBSAE_SUITE(llama_host_suite)
{
    Suite *s = suite_create("llama_host");
    TCase *numpy = harness_case(s, "numpy", 120);
    tcase_add_test(numpy, tiny_model_matches_numpy);
    tcase_add_test(numpy, stories260k_matches_numpy);
    TCase *rank = harness_case(s, "rank", 120);
    tcase_add_test(rank, rank_in_process_equals_rank_of_recorded_files);
    TCase *bad = harness_case(s, "bad_input", 60);
    tcase_add_test(bad, bad_checkpoints_get_one_line);
    tcase_add_test(bad, bad_tokens_sites_and_outputs_get_one_line);
    tcase_add_test(bad, bad_saes_get_one_line);
    tcase_add_test(bad, usage_errors_exit_2_and_help_exits_0);
    return s;
}
