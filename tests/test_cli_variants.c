/* The command line for the activations, the extra losses and
 * transcoders: `subsae train --target FILE... --activation ... --auxk
 * --l1 --l0`, `subsae eval DIR INPUT... --target FILE...`, their JSON
 * fields, agreement between the two, a bit-identical resume of JumpReLU
 * and BatchTopK runs with AuxK, and one-line errors. */
#include "harness.h"
#include "io.h"
#include "rng.h"
#include "synth.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void save_npy(const float *x, int64_t n, int64_t d, const char *name, char *path,
                     size_t size)
{
    subsae_buffer *b;
    ck_assert_ok(subsae_buffer_wrap(x, SUBSAE_DTYPE_F32, n, d, d, SUBSAE_BORROW, &b));
    harness_tmp_path(name, path, size);
    ck_assert_ok(subsae_buffer_save_npy(b, path, SUBSAE_DTYPE_F32));
    subsae_buffer_free(b);
}

/* Inputs with sparse structure, and targets a fixed nonlinear function of
 * them (d_out = 6): x.npy, y.npy; the last `held` rows also as
 * x_held.npy / y_held.npy. */
static void make_pair(int64_t n, int64_t d, int64_t held, char *x_path, char *y_path,
                      char *xh_path, char *yh_path)
{
    struct subsae__synth_spec spec = {.rows = n, .dim = d, .atoms = 30, .subspace_dim = d - 2,
                                      .active = 3, .coef_min = 0.5, .coef_max = 1.5,
                                      .noise = 0.01, .offset = 1.0, .seed = 21};
    float *x = malloc((size_t)(n * d) * sizeof *x), *y = malloc((size_t)(n * 6) * sizeof *y);
    ck_assert_ok(subsae__synth(&spec, x, NULL));
    subsae__rng rng;
    subsae__rng_seed(&rng, 3, 0);
    float a[60];
    for (int i = 0; i < 6 * (int)d && i < 60; i++)
        a[i] = (float)subsae__rng_normal(&rng);
    for (int64_t i = 0; i < n; i++)
        for (int64_t o = 0; o < 6; o++) {
            double acc = 0.0;
            for (int64_t j = 0; j < d; j++)
                acc += x[i * d + j] * a[o * d + j];
            y[i * 6 + o] = (float)(acc > 0 ? acc : 0.3 * acc);
        }
    save_npy(x, n, d, "x.npy", x_path, 600);
    save_npy(y, n, 6, "y.npy", y_path, 600);
    save_npy(x + (n - held) * d, held, d, "x_held.npy", xh_path, 600);
    save_npy(y + (n - held) * 6, held, 6, "y_held.npy", yh_path, 600);
    free(x);
    free(y);
}

static double number(const json_t *obj, const char *key)
{
    const json_t *v = json_object_get(obj, key);
    ck_assert_msg(json_is_number(v), "field %s is not a number", key);
    return json_number_value(v);
}

/* The standard error of the command whose standard output went to
 * stdout_name, into text (truncated to size). */
static void err_text(const char *stdout_name, char *text, size_t size)
{
    char name[256], path[600];
    snprintf(name, sizeof name, "%s.err", stdout_name);
    harness_tmp_path(name, path, sizeof path);
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    size_t used = fread(text, 1, size - 1, f);
    text[used] = '\0';
    fclose(f);
}

static int err_lines(const char *stdout_name)
{
    char text[8192];
    err_text(stdout_name, text, sizeof text);
    int lines = 0;
    for (const char *c = text; *c; c++)
        lines += *c == '\n';
    return lines;
}

START_TEST(transcoder_from_the_command_line)
{
    char x[600], y[600], xh[600], yh[600], dir[600], args[4096];
    make_pair(4000, 10, 1000, x, y, xh, yh);
    harness_tmp_path("tc-model", dir, sizeof dir);
    snprintf(args, sizeof args,
             "train '%s' --target '%s' --features 48 --k 4 --batch 200 --epochs 4 --lr 3e-3 "
             "--eval-fraction 0.25 --out '%s' --threads 2 --quiet --json",
             x, y, dir);
    ck_assert_int_eq(harness_cli(args, "tc.json"), 0);
    json_t *j = harness_read_json("tc.json");
    ck_assert(json_is_true(json_object_get(j, "transcoder")));
    ck_assert_str_eq(json_string_value(json_object_get(j, "activation")), "topk");
    ck_assert_int_eq((int)number(j, "d_in"), 10);
    ck_assert_int_eq((int)number(j, "d_out"), 6);
    ck_assert_int_eq((int)number(j, "tokens"), 4 * 3000);
    const json_t *eval = json_object_get(j, "eval");
    const double ev = number(eval, "explained_variance");
    ck_assert_double_gt(ev, 0.5);
    ck_assert_double_le(number(eval, "l0"), 4.0);
    /* `subsae eval` with the held-out targets agrees with the train
     * command's evaluation (the same rows, the scale-folded model). */
    snprintf(args, sizeof args, "eval '%s' '%s' --target '%s' --json", dir, xh, yh);
    ck_assert_int_eq(harness_cli(args, "tc-eval.json"), 0);
    json_t *e = harness_read_json("tc-eval.json");
    ck_assert_double_eq_tol(number(e, "explained_variance"), ev, 1e-4);
    ck_assert_double_eq_tol(number(e, "mse"), number(eval, "mse"), 1e-4 * number(eval, "mse"));
    json_decref(e);
    json_decref(j);
    /* Without the targets the transcoder cannot be evaluated (d_out 6). */
    snprintf(args, sizeof args, "eval '%s' '%s' --json", dir, xh);
    ck_assert_int_ne(harness_cli(args, "tc-bad.json"), 0);
    ck_assert_int_eq(err_lines("tc-bad.json"), 1);
    /* --eval FILE with --eval-target FILE gives the same numbers. */
    snprintf(args, sizeof args,
             "train '%s' --target '%s' --features 48 --k 4 --batch 200 --tokens 2000 --lr 3e-3 "
             "--eval '%s' --eval-target '%s' --threads 1 --quiet --json",
             x, y, xh, yh);
    ck_assert_int_eq(harness_cli(args, "tc2.json"), 0);
    j = harness_read_json("tc2.json");
    ck_assert(json_is_number(json_object_get(json_object_get(j, "eval"), "mse")));
    json_decref(j);
}
END_TEST

START_TEST(activations_from_the_command_line)
{
    char x[600], y[600], xh[600], yh[600], dir[600], args[4096];
    make_pair(3000, 10, 500, x, y, xh, yh);
    const char *acts[4] = {"topk", "batchtopk", "jumprelu", "relu"};
    const char *extra[4] = {"--k 4 --auxk 0.05 --dead-window 600", "--k 4", "--l0 0.25",
                            "--k 6 --l1 1.5"};
    const int codes[4] = {SUBSAE_ACT_TOPK, SUBSAE_ACT_BATCHTOPK, SUBSAE_ACT_JUMPRELU,
                          SUBSAE_ACT_RELU};
    for (int a = 0; a < 4; a++) {
        harness_tmp_path(acts[a], dir, sizeof dir);
        snprintf(args, sizeof args,
                 "train '%s' --activation %s %s --features 40 --batch 200 --epochs 2 --lr 3e-3 "
                 "--eval-fraction 0.2 --out '%s' --threads 2 --quiet --json",
                 x, acts[a], extra[a], dir);
        ck_assert_msg(harness_cli(args, "act.json") == 0, "%s failed", acts[a]);
        json_t *j = harness_read_json("act.json");
        ck_assert_str_eq(json_string_value(json_object_get(j, "activation")), acts[a]);
        ck_assert(json_is_false(json_object_get(j, "transcoder")));
        ck_assert(a == 0 ? number(j, "auxk") == 0.05 : number(j, "auxk") == 0.0);
        ck_assert(a == 2 ? number(j, "l0") == 0.25 : json_is_null(json_object_get(j, "l0")));
        ck_assert(a == 3 ? number(j, "l1") == 1.5 : json_is_null(json_object_get(j, "l1")));
        const bool thr = a == 1 || a == 2;
        ck_assert(thr ? number(j, "mean_threshold") > 0
                      : json_is_null(json_object_get(j, "mean_threshold")));
        const json_t *eval = json_object_get(j, "eval");
        ck_assert_double_gt(number(eval, "l0"), 0.5);
        ck_assert_double_gt(number(eval, "explained_variance"), 0.3);
        json_decref(j);
        subsae_sae *s;
        ck_assert_ok(subsae_sae_load(dir, &s));
        int64_t v;
        ck_assert_ok(subsae_sae_get_int(s, SUBSAE_SAE_ACTIVATION, &v));
        ck_assert_int_eq(v, codes[a]);
        /* `subsae encode` keeps every active feature: k slots for TopK,
         * the most active features of a row otherwise. */
        char codes_path[600];
        harness_tmp_path("codes.safetensors", codes_path, sizeof codes_path);
        snprintf(args, sizeof args, "encode '%s' '%s' --out '%s' --overwrite --json", dir, xh,
                 codes_path); /* one file for every activation */
        ck_assert_int_eq(harness_cli(args, "enc.json"), 0);
        json_t *enc = harness_read_json("enc.json");
        const int64_t slots = (int64_t)number(enc, "k");
        json_decref(enc);
        const int64_t rows = 500, m = 40;
        float *xr = malloc((size_t)(rows * 10) * 4), *z = malloc((size_t)(rows * m) * 4);
        subsae_buffer *held;
        ck_assert_ok(subsae_buffer_open(xh, NULL, &held));
        ck_assert_ok(subsae_buffer_read(held, 0, rows, xr, 10));
        subsae_buffer_free(held);
        ck_assert_ok(subsae_sae_encode(s, xr, rows, 10, z, m));
        subsae__safetensors *st;
        ck_assert_ok(subsae__safetensors_open(codes_path, &st));
        const int32_t *idx = subsae__safetensors_find(st, "indices")->data;
        const float *val = subsae__safetensors_find(st, "values")->data;
        int64_t most = 0;
        for (int64_t i = 0; i < rows; i++) {
            int64_t active = 0;
            for (int64_t f = 0; f < m; f++)
                active += z[i * m + f] != 0.0f;
            most = active > most ? active : most;
            for (int64_t q = 0; q < slots; q++) {
                if (q < active) {
                    ck_assert_int_ge(idx[i * slots + q], 0);
                    ck_assert(val[i * slots + q] == z[i * m + idx[i * slots + q]]);
                } else {
                    ck_assert_int_eq(idx[i * slots + q], -1);
                }
            }
        }
        ck_assert_int_eq(slots, a == 0 ? 4 : most);
        subsae__safetensors_close(st);
        free(xr);
        free(z);
        subsae_sae_free(s);
    }
}
END_TEST

static void read_all(const char *path, char **data, long *size)
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

/* A JumpReLU and a BatchTopK run with AuxK, interrupted and resumed:
 * the same file as the run done in one go. */
START_TEST(resume_thresholds_from_the_command_line)
{
    char x[600], y[600], xh[600], yh[600], args[4096];
    make_pair(1600, 10, 100, x, y, xh, yh);
    const char *act_names[2] = {"jumprelu", "batchtopk"};
    for (int a = 0; a < 2; a++) {
        char da[600], db[600], dc[600], name[64];
        snprintf(name, sizeof name, "rs-straight-%s", act_names[a]);
        harness_tmp_path(name, da, sizeof da);
        snprintf(name, sizeof name, "rs-half-%s", act_names[a]);
        harness_tmp_path(name, db, sizeof db);
        snprintf(name, sizeof name, "rs-resumed-%s", act_names[a]);
        harness_tmp_path(name, dc, sizeof dc);
        char common[512];
        snprintf(common, sizeof common,
                 "--activation %s --features 32 --k 3 --init random --batch 100 --seed 4 "
                 "--auxk 0.03125 --dead-window 400 --threads 2 --quiet --json",
                 act_names[a]);
        snprintf(args, sizeof args, "train '%s' %s --epochs 2 --out '%s'", x, common, da);
        ck_assert_int_eq(harness_cli(args, "ra.json"), 0);
        snprintf(args, sizeof args, "train '%s' %s --epochs 1 --checkpoint-every 4 --out '%s'",
                 x, common, db);
        ck_assert_int_eq(harness_cli(args, "rb.json"), 0);
        snprintf(args, sizeof args,
                 "train '%s' --resume '%s' --epochs 2 --threads 2 --quiet --json --out '%s'", x,
                 db, dc);
        ck_assert_int_eq(harness_cli(args, "rc.json"), 0);
        char pa[700], pc[700];
        snprintf(pa, sizeof pa, "%s/sae_weights.safetensors", da);
        snprintf(pc, sizeof pc, "%s/sae_weights.safetensors", dc);
        char *wa, *wc;
        long sa, sc;
        read_all(pa, &wa, &sa);
        read_all(pc, &wc, &sc);
        ck_assert_int_eq(sa, sc);
        ck_assert_msg(memcmp(wa, wc, (size_t)sa) == 0, "%s: resumed weights differ",
                      act_names[a]);
        free(wa);
        free(wc);
    }
}
END_TEST

START_TEST(errors_are_one_line)
{
    char x[600], y[600], xh[600], yh[600], args[4096];
    make_pair(400, 10, 100, x, y, xh, yh);
    const char *bad[] = {
        "train '%1$s' --features 16 --k 4 --activation sideways",
        "train '%1$s' '%1$s' --target '%2$s' --features 16 --k 4",   /* 2 inputs, 1 target */
        "train '%1$s' --target --features 16 --k 4",                 /* no target files */
        "train '%1$s' --target '%2$s' --features 16 --k 4 --eval '%1$s'", /* no eval target */
        "train '%1$s' --features 16 --k 4 --eval '%1$s' --eval-target '%2$s'",
        "train '%1$s' --features 16 --activation topk",              /* no --k */
        "train '%1$s' --features 16 --k 4 --l1 -1",
        "train '%1$s' --resume /nonexistent --activation relu",
        "train '%1$s' --target '%2$s'.missing --features 16 --k 4",
        "eval /nonexistent '%1$s' --target",
        "eval /nonexistent '%1$s' '%1$s' --target '%2$s'",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(args, sizeof args, bad[i], x, y);
        int rc = harness_cli(args, "bad.out");
        ck_assert_msg(rc != 0, "'%s' succeeded", args);
        ck_assert_msg(err_lines("bad.out") == 1, "'%s': not one line", args);
    }
}
END_TEST

/* An option that the run's activation does not read would be ignored
 * while the user believes the run used it: refused before any work, naming
 * the option and the activation, for a new run and for a resumed one. */
START_TEST(options_the_activation_ignores_are_refused)
{
    char x[600], y[600], xh[600], yh[600], dir[600], args[4096], text[8192];
    make_pair(400, 10, 100, x, y, xh, yh);
    harness_tmp_path("ignored", dir, sizeof dir);
    const struct {
        const char *options, *flag, *activation;
    } cases[] = {
        {"--k 4 --l1 3", "--l1", "topk"},
        {"--activation relu --l0 1", "--l0", "relu"},
        {"--k 4 --activation batchtopk --coef-warmup-steps 5", "--coef-warmup-steps",
         "batchtopk"},
        {"--activation gated --jumprelu-bandwidth 0.1", "--jumprelu-bandwidth", "gated"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(args, sizeof args, "train '%s' --features 16 %s --out '%s' --quiet", x,
                 cases[i].options, dir);
        ck_assert_msg(harness_cli(args, "ignored.out") != 0, "'%s' succeeded", args);
        err_text("ignored.out", text, sizeof text);
        ck_assert_msg(strstr(text, cases[i].flag) && strstr(text, cases[i].activation),
                      "'%s': %s", args, text);
        ck_assert_msg(access(dir, F_OK) != 0, "'%s' created --out", args);
    }
    /* a resumed relu run: --l1 changes, --l0 is refused */
    snprintf(args, sizeof args,
             "train '%s' --features 16 --k 4 --activation relu --l1 1 --batch 100 --epochs 1 "
             "--checkpoint-every 1 --out '%s' --quiet",
             x, dir);
    ck_assert_int_eq(harness_cli(args, "relu.out"), 0);
    snprintf(args, sizeof args, "train '%s' --epochs 2 --resume '%s' --l0 1 --quiet", x, dir);
    ck_assert_int_ne(harness_cli(args, "resume_l0.out"), 0);
    err_text("resume_l0.out", text, sizeof text);
    ck_assert_msg(strstr(text, "--l0 is for jumprelu") && strstr(text, "relu"), "%s", text);
    snprintf(args, sizeof args, "train '%s' --epochs 2 --resume '%s' --l1 2 --quiet", x, dir);
    ck_assert_int_eq(harness_cli(args, "resume_l1.out"), 0);
}
END_TEST

/* `subsae inspect DIR` describes a saved model from its files alone: the
 * kind, widths, activation and prefixes the training run gave it, and the
 * sites it records; a directory among activation files is refused. */
START_TEST(inspect_describes_a_model)
{
    char x[600], y[600], xh[600], yh[600], nested[600], skip[600], args[4096], text[8192];
    make_pair(400, 10, 100, x, y, xh, yh);
    harness_tmp_path("nested", nested, sizeof nested);
    harness_tmp_path("skip", skip, sizeof skip);
    snprintf(args, sizeof args,
             "train '%s' --features 24 --k 3 --matryoshka 6,12,24 --batch 100 --epochs 1 "
             "--out '%s' --hook-name blocks.0.hook_z --quiet",
             x, nested);
    ck_assert_int_eq(harness_cli(args, "nested.out"), 0);
    snprintf(args, sizeof args,
             "train '%s' --target '%s' --skip --features 20 --k 4 --batch 100 --epochs 1 "
             "--out '%s' --quiet",
             x, y, skip);
    ck_assert_int_eq(harness_cli(args, "skip.out"), 0);

    snprintf(args, sizeof args, "inspect '%s' --json", nested);
    ck_assert_int_eq(harness_cli(args, "nested.json"), 0);
    json_t *j = harness_read_json("nested.json");
    ck_assert_str_eq(json_string_value(json_object_get(j, "kind")), "SAE");
    ck_assert_str_eq(json_string_value(json_object_get(j, "activation")), "topk");
    ck_assert_int_eq(json_integer_value(json_object_get(j, "k")), 3);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "d_sae")), 24);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "d_in")), 10);
    const json_t *widths = json_object_get(j, "matryoshka_widths");
    ck_assert_int_eq(json_array_size(widths), 3);
    ck_assert_int_eq(json_integer_value(json_array_get(widths, 1)), 12);
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "metadata"),
                                                       "hook_name")),
                     "blocks.0.hook_z");
    json_decref(j);

    snprintf(args, sizeof args, "inspect '%s' --json", skip);
    ck_assert_int_eq(harness_cli(args, "skip.json"), 0);
    j = harness_read_json("skip.json");
    ck_assert_str_eq(json_string_value(json_object_get(j, "kind")), "skip transcoder");
    ck_assert(json_is_true(json_object_get(j, "skip")));
    ck_assert_int_eq(json_integer_value(json_object_get(j, "d_out")), 6);
    ck_assert_int_eq(json_array_size(json_object_get(j, "matryoshka_widths")), 0);
    json_decref(j);

    snprintf(args, sizeof args, "inspect '%s'", skip);
    ck_assert_int_eq(harness_cli(args, "skip.txt"), 0);
    char path[600];
    FILE *f = fopen(harness_tmp_path("skip.txt", path, sizeof path), "r");
    ck_assert_ptr_nonnull(f);
    text[fread(text, 1, sizeof text - 1, f)] = '\0';
    fclose(f);
    ck_assert_msg(strstr(text, "skip transcoder, 20 features, topk k 4") &&
                      strstr(text, "d_in 10, d_out 6") && strstr(text, "trained by run"),
                  "%s", text);

    snprintf(args, sizeof args, "inspect '%s' '%s'", x, skip);
    ck_assert_int_ne(harness_cli(args, "mixed.out"), 0);
    err_text("mixed.out", text, sizeof text);
    ck_assert_msg(strstr(text, "is a directory"), "%s", text);
}
END_TEST

/* subsae_trainer_fit takes whole steps, so a length between steps is
 * rounded up to them and the record says what was trained; a length below
 * one step is told to become one, and a hold-out larger than the training
 * part is warned of. */
START_TEST(run_length_is_whole_steps)
{
    char x[600], y[600], xh[600], yh[600], args[4096], text[8192];
    make_pair(400, 10, 100, x, y, xh, yh);
    const struct {
        const char *length;
        int64_t total, steps;
    } cases[] = {{"--tokens 150", 200, 2}, {"--epochs 0.001", 100, 1}, {"--epochs 2", 800, 8}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(args, sizeof args, "train '%s' --features 16 --k 4 --batch 100 %s --json", x,
                 cases[i].length);
        ck_assert_int_eq(harness_cli(args, "length.json"), 0);
        json_t *j = harness_read_json("length.json");
        ck_assert_int_eq(json_integer_value(json_object_get(j, "total_tokens")), cases[i].total);
        ck_assert_int_eq(json_integer_value(json_object_get(j, "tokens")), cases[i].total);
        ck_assert_int_eq(json_integer_value(json_object_get(j, "steps")), cases[i].steps);
        json_decref(j);
        err_text("length.json", text, sizeof text);
        ck_assert_msg(!strstr(text, "less than one step") == (cases[i].steps > 1), "%s: %s",
                      cases[i].length, text);
    }
    snprintf(args, sizeof args,
             "train '%s' --features 16 --k 4 --batch 100 --eval-fraction 0.6 --json", x);
    ck_assert_int_eq(harness_cli(args, "most_held.json"), 0);
    err_text("most_held.json", text, sizeof text);
    ck_assert_msg(strstr(text, "leaves 160 of the 400 rows"), "%s", text);
}
END_TEST

/* Where --k only sets the initial L0 (relu, jumprelu, gated) it may be
 * left out also for a dictionary smaller than its default (32); given, it
 * must fit. */
START_TEST(optional_k_fits_a_small_dictionary)
{
    char x[600], y[600], xh[600], yh[600], args[4096];
    make_pair(400, 10, 100, x, y, xh, yh);
    const char *activations[] = {"relu --l1 1", "jumprelu --l0 0.1", "gated --l1 1"};
    for (size_t i = 0; i < sizeof activations / sizeof activations[0]; i++) {
        snprintf(args, sizeof args,
                 "train '%s' --features 16 --activation %s --batch 100 --epochs 1 --json", x,
                 activations[i]);
        ck_assert_msg(harness_cli(args, "small.json") == 0, "'%s' failed", args);
    }
    snprintf(args, sizeof args, "train '%s' --features 16 --activation relu --k 20", x);
    ck_assert_int_ne(harness_cli(args, "too_large.out"), 0);
}
END_TEST

/* A penalty model whose features mostly fire on over 10 % of the tokens
 * gets a warning naming the coefficient; a TopK model never does. */
START_TEST(a_dense_penalty_model_is_warned_of)
{
    char x[600], y[600], xh[600], yh[600], args[4096], text[8192];
    make_pair(400, 10, 100, x, y, xh, yh);
    snprintf(args, sizeof args,
             "train '%s' --features 16 --activation relu --l1 0 --batch 100 --epochs 1", x);
    ck_assert_int_eq(harness_cli(args, "dense.out"), 0);
    err_text("dense.out", text, sizeof text);
    ck_assert_msg(strstr(text, "hardly sparse; a larger --l1 than 0 gives"), "%s", text);
    snprintf(args, sizeof args, "train '%s' --features 16 --k 4 --batch 100 --epochs 1", x);
    ck_assert_int_eq(harness_cli(args, "topk.out"), 0);
    err_text("topk.out", text, sizeof text);
    ck_assert_msg(!strstr(text, "hardly sparse"), "%s", text);
}
END_TEST

SUBSAE_SUITE(cli_variants)
{
    Suite *s = suite_create("cli_variants");
    TCase *tc = harness_case(s, "cli", 180);
    tcase_add_test(tc, transcoder_from_the_command_line);
    tcase_add_test(tc, activations_from_the_command_line);
    tcase_add_test(tc, resume_thresholds_from_the_command_line);
    tcase_add_test(tc, errors_are_one_line);
    tcase_add_test(tc, options_the_activation_ignores_are_refused);
    tcase_add_test(tc, inspect_describes_a_model);
    tcase_add_test(tc, run_length_is_whole_steps);
    tcase_add_test(tc, optional_k_fits_a_small_dictionary);
    tcase_add_test(tc, a_dense_penalty_model_is_warned_of);
    return s;
}
