/* `subsae-mpi` under `mpirun -np 2` on loopback against `subsae` in one
 * process on the same data: the same effective ranks (exact and
 * randomized; the shared stories260K attention outputs too, when present),
 * the same spectrum to 1e-5; training weights equal to the single-process
 * run on the same global batches to 1e-5 relative per parameter (same
 * seed), the rows of one file split between the ranks or per-rank files
 * ({rank}); and a rank that cannot open its file makes the whole job fail
 * at once with one message. Skips, with the reason, when subsae-mpi was not
 * built (no mpicc) or mpirun is missing. */
#include "harness.h"
#include "rng.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Loopback without a network: shared memory between the ranks, no
 * single-copy mechanism (CMA is often blocked in containers), root allowed
 * (CI), more ranks than cores allowed. Leak checking is off for the
 * sanitizer build: Open MPI's own allocations are never freed. */
#define MPIRUN                                                                          \
    "ASAN_OPTIONS=detect_leaks=0 timeout 300 mpirun --allow-run-as-root --oversubscribe " \
    "--mca btl self,vader --mca btl_vader_single_copy_mechanism none -np 2"

static bool have_mpi(const char *test)
{
    char path[600];
    struct stat st;
    snprintf(path, sizeof path, "%s/bin/subsae-mpi", harness_build_dir());
    if (stat(path, &st) != 0) {
        harness_skip(test, "build/bin/subsae-mpi was not built (no mpicc: install "
                           "openmpi-bin libopenmpi-dev)");
        return false;
    }
    if (harness_run("command -v mpirun >/dev/null 2>&1") != 0) {
        harness_skip(test, "mpirun is not in PATH");
        return false;
    }
    return true;
}

/* `mpirun -np 2 build/bin/subsae-mpi ARGS` with stdout to the test's file
 * STDOUT_NAME and stderr to STDOUT_NAME.err; the exit status. */
static int mpi_cli(const char *args, const char *stdout_name)
{
    char out[600], command[8192];
    harness_tmp_path(stdout_name, out, sizeof out);
    snprintf(command, sizeof command, MPIRUN " '%s/bin/subsae-mpi' %s > '%s' 2> '%s.err'",
             harness_build_dir(), args, out, out);
    return harness_run(command);
}

static void show_stderr(const char *stdout_name)
{
    char command[1024], path[600];
    harness_tmp_path(stdout_name, path, sizeof path);
    snprintf(command, sizeof command, "cat '%s.err' >&2", path);
    harness_run(command);
}

/* Structured activations (x = z A + noise + offset, decaying spectrum) as
 * float32 .npy: the whole set, and its two halves as NAME_0.npy and
 * NAME_1.npy. */
static void make_data(const char *name, int64_t n, int64_t d, int64_t r, char *path,
                      size_t size)
{
    subsae__rng rng;
    subsae__rng_seed(&rng, 21, 1);
    float *a = malloc((size_t)(r * d) * sizeof *a);
    float *x = malloc((size_t)(n * d) * sizeof *x);
    ck_assert(a && x);
    for (int64_t i = 0; i < r * d; i++)
        a[i] = (float)subsae__rng_normal(&rng);
    for (int64_t i = 0; i < n; i++) {
        for (int64_t j = 0; j < d; j++)
            x[i * d + j] = 1.0f + 0.02f * (float)subsae__rng_normal(&rng);
        for (int64_t c = 0; c < r; c++) {
            float z = (float)(subsae__rng_normal(&rng) / (1.0 + 0.5 * (double)c));
            for (int64_t j = 0; j < d; j++)
                x[i * d + j] += z * a[c * d + j];
        }
    }
    char file[600];
    snprintf(file, sizeof file, "%s.npy", name);
    harness_tmp_path(file, path, size);
    subsae_buffer *b;
    ck_assert_ok(subsae_buffer_wrap(x, SUBSAE_DTYPE_F32, n, d, d, SUBSAE_BORROW, &b));
    ck_assert_ok(subsae_buffer_save_npy(b, path, SUBSAE_DTYPE_F32));
    subsae_buffer_free(b);
    for (int part = 0; part < 2; part++) {
        char half[600], half_path[600];
        snprintf(half, sizeof half, "%s_%d.npy", name, part);
        harness_tmp_path(half, half_path, sizeof half_path);
        int64_t first = part == 0 ? 0 : n / 2, rows = part == 0 ? n / 2 : n - n / 2;
        ck_assert_ok(subsae_buffer_wrap(x + first * d, SUBSAE_DTYPE_F32, rows, d, d,
                                        SUBSAE_BORROW, &b));
        ck_assert_ok(subsae_buffer_save_npy(b, half_path, SUBSAE_DTYPE_F32));
        subsae_buffer_free(b);
    }
    free(a);
    free(x);
}

static const json_t *only_report(const json_t *root)
{
    const json_t *reports = json_object_get(root, "reports");
    ck_assert(json_is_array(reports) && json_array_size(reports) == 1);
    return json_array_get(reports, 0);
}

static int64_t integer(const json_t *obj, const char *key)
{
    const json_t *v = json_object_get(obj, key);
    ck_assert_msg(json_is_integer(v), "field %s is not an integer", key);
    return (int64_t)json_integer_value(v);
}

static double number(const json_t *obj, const char *key)
{
    const json_t *v = json_object_get(obj, key);
    ck_assert_msg(json_is_number(v), "field %s is not a number", key);
    return json_number_value(v);
}

/* `subsae rank ARGS --json` and `mpirun -np 2 subsae-mpi rank ARGS --json`
 * agree: effective ranks (r90, r95, r99, exactness), rows, method, and the
 * trace and spectrum to 1e-5. Returns r99. */
static int64_t compare_rank(const char *args, const char *label)
{
    char full[4500];
    snprintf(full, sizeof full, "rank %s --json", args);
    ck_assert_int_eq(harness_cli(full, "rank1.json"), 0);
    int status = mpi_cli(full, "rank2.json");
    if (status != 0)
        show_stderr("rank2.json");
    ck_assert_int_eq(status, 0);
    json_t *one = harness_read_json("rank1.json"), *two = harness_read_json("rank2.json");
    const json_t *a = only_report(one), *b = only_report(two);
    ck_assert_int_eq(integer(b, "rows"), integer(a, "rows"));
    ck_assert_str_eq(json_string_value(json_object_get(b, "method")),
                     json_string_value(json_object_get(a, "method")));
    ck_assert_int_eq(integer(b, "effective_rank"), integer(a, "effective_rank"));
    const char *taus[] = {"0.9", "0.95", "0.99"};
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(integer(json_object_get(b, "effective_ranks"), taus[i]),
                         integer(json_object_get(a, "effective_ranks"), taus[i]));
        ck_assert(json_equal(json_object_get(json_object_get(b, "effective_ranks_exact"), taus[i]),
                             json_object_get(json_object_get(a, "effective_ranks_exact"),
                                             taus[i])));
    }
    double total = number(a, "total_variance");
    ck_assert_double_eq_tol(number(b, "total_variance"), total, 1e-5 * total);
    const json_t *va = json_object_get(a, "variances"), *vb = json_object_get(b, "variances");
    ck_assert_uint_eq(json_array_size(vb), json_array_size(va));
    for (size_t i = 0; i < json_array_size(va); i++)
        ck_assert_double_eq_tol(json_number_value(json_array_get(vb, i)),
                                json_number_value(json_array_get(va, i)), 1e-5 * total);
    ck_assert_int_eq(integer(two, "workers"), 2);
    int64_t r99 = integer(a, "effective_rank");
    printf("mpirun -np 2 subsae-mpi rank (%s): r99 %lld as one process, %lld all-reduces, "
           "%lld bytes on rank 0\n",
           label, (long long)r99,
           (long long)integer(json_object_get(two, "allreduce"), "calls"),
           (long long)integer(json_object_get(two, "allreduce"), "bytes"));
    json_decref(one);
    json_decref(two);
    return r99;
}

START_TEST(mpi_rank_matches_one_process)
{
    if (!have_mpi("mpi_rank_matches_one_process"))
        return;
    char data[600], args[4400];
    make_data("acts", 6000, 48, 20, data, sizeof data);
    snprintf(args, sizeof args, "'%s' --method exact", data);
    compare_rank(args, "synthetic, exact");
    snprintf(args, sizeof args, "'%s' --method randomized --rank 24", data);
    compare_rank(args, "synthetic, randomized k 24");
    /* Per-rank files: the union is the same data set. */
    harness_tmp_path("acts_{rank}.npy", data, sizeof data);
    snprintf(args, sizeof args, "'%s' --method exact", data);
    char full[4500];
    snprintf(full, sizeof full, "rank %s --json", args);
    ck_assert_int_eq(mpi_cli(full, "sharded.json"), 0);
    json_t *sharded = harness_read_json("sharded.json");
    ck_assert_int_eq(integer(only_report(sharded), "rows"), 6000);
    json_decref(sharded);

    /* The real attention outputs: 44 of 64 directions, both methods. */
    char real[4096];
    if (!harness_shared_file("L2_attn_out.npy", real, sizeof real)) {
        harness_skip("mpi_rank_matches_one_process (stories260K)",
                     "the shared stories260K data is absent");
        return;
    }
    snprintf(args, sizeof args, "'%s' --method exact", real);
    ck_assert_int_eq(compare_rank(args, "stories260K L2 attn_out, exact"), 44);
    snprintf(args, sizeof args, "'%s' --method randomized --rank 64", real);
    ck_assert_int_eq(compare_rank(args, "stories260K L2 attn_out, randomized"), 44);
}
END_TEST

/* The parameters of a saved SAE (scales folded in). */
static float *load_param(const char *dir, int param, int64_t *count)
{
    subsae_sae *sae;
    ck_assert_ok(subsae_sae_load(dir, &sae));
    *count = subsae_sae_param_size(sae, param);
    float *p = malloc((size_t)*count * sizeof *p);
    ck_assert_ok(subsae_sae_get_param(sae, param, p, *count));
    subsae_sae_free(sae);
    return p;
}

static double compare_models(const char *dir_a, const char *dir_b)
{
    static const char *names[] = {"W_enc", "b_enc", "W_dec", "b_dec"};
    const int params[] = {SUBSAE_PARAM_W_ENC, SUBSAE_PARAM_B_ENC, SUBSAE_PARAM_W_DEC,
                          SUBSAE_PARAM_B_DEC};
    double worst = 0.0;
    for (int i = 0; i < 4; i++) {
        int64_t na, nb;
        float *a = load_param(dir_a, params[i], &na), *b = load_param(dir_b, params[i], &nb);
        ck_assert_int_eq(na, nb);
        double diff = 0.0, norm = 0.0;
        for (int64_t j = 0; j < na; j++) {
            diff += ((double)a[j] - b[j]) * ((double)a[j] - b[j]);
            norm += (double)a[j] * a[j];
        }
        double rel = sqrt(diff / norm);
        ck_assert_msg(rel <= 1e-5, "%s differs by %.3g (relative)", names[i], rel);
        worst = rel > worst ? rel : worst;
        free(a);
        free(b);
    }
    return worst;
}

static void compare_training(const char *inputs_one, const char *inputs_mpi, const char *recipe,
                             const char *label)
{
    char one[600], two[600], args[4096];
    harness_tmp_path("model1", one, sizeof one);
    harness_tmp_path("model2", two, sizeof two);
    snprintf(args, sizeof args, "train %s %s --threads 1 --out '%s' --overwrite --json",
             inputs_one, recipe, one);
    ck_assert_int_eq(harness_cli(args, "train1.json"), 0);
    snprintf(args, sizeof args, "train %s %s --threads 1 --out '%s' --overwrite --json",
             inputs_mpi, recipe, two);
    int status = mpi_cli(args, "train2.json");
    if (status != 0)
        show_stderr("train2.json");
    ck_assert_int_eq(status, 0);
    json_t *a = harness_read_json("train1.json"), *b = harness_read_json("train2.json");
    ck_assert_int_eq(integer(b, "steps"), integer(a, "steps"));
    ck_assert_int_eq(integer(b, "tokens"), integer(a, "tokens"));
    ck_assert(json_equal(json_object_get(b, "subspace_dim"), json_object_get(a, "subspace_dim")));
    ck_assert_int_eq(integer(json_object_get(b, "final"), "dead_features"),
                     integer(json_object_get(a, "final"), "dead_features"));
    double mse = number(json_object_get(a, "final"), "mse");
    ck_assert_double_eq_tol(number(json_object_get(b, "final"), "mse"), mse, 1e-5 * mse);
    ck_assert_int_eq(integer(b, "workers"), 2);
    double worst = compare_models(one, two);
    printf("mpirun -np 2 subsae-mpi train (%s): %lld steps, weights within %.2g of one process; "
           "%lld all-reduces, %.0f bytes per step (init included), %.3f s in MPI_Allreduce, %.3f s "
           "training (one process %.3f s)\n",
           label, (long long)integer(a, "steps"), worst,
           (long long)integer(json_object_get(b, "allreduce"), "calls"),
           (double)integer(json_object_get(b, "allreduce"), "bytes") /
               (double)integer(b, "steps"),
           number(json_object_get(b, "allreduce"), "seconds"), number(b, "seconds"),
           number(a, "seconds"));
    json_decref(a);
    json_decref(b);
}

START_TEST(mpi_training_matches_one_process)
{
    if (!have_mpi("mpi_training_matches_one_process"))
        return;
    char data[600], shards[600], inputs[700], sharded_inputs[700];
    make_data("acts", 8000, 32, 12, data, sizeof data);
    harness_tmp_path("acts_{rank}.npy", shards, sizeof shards);
    snprintf(inputs, sizeof inputs, "'%s'", data);
    snprintf(sharded_inputs, sizeof sharded_inputs, "'%s'", shards);
    const char *recipe = "--features 256 --k 8 --batch 1000 --epochs 2 --lr 1e-3 --seed 3 "
                         "--eval-fraction 0.125";
    compare_training(inputs, inputs, recipe, "rows of one file, ASI");
    /* The same seed and worker count give the same bits. */
    char again[600], args[4096], command[2048];
    harness_tmp_path("model3", again, sizeof again);
    snprintf(args, sizeof args, "train %s %s --threads 1 --out '%s' --overwrite --json",
             inputs, recipe, again);
    ck_assert_int_eq(mpi_cli(args, "train3.json"), 0);
    snprintf(command, sizeof command, "cmp -s '%s/model2/sae_weights.safetensors' "
                                      "'%s/sae_weights.safetensors'",
             harness_tmpdir(), again);
    ck_assert_msg(harness_run(command) == 0, "two runs with the same seed differ");
    compare_training(inputs, inputs,
                     "--features 512 --k 4 --batch 64 --tokens 1280 --seed 5 --init random "
                     "--decoder-norm unit --sparse-adam",
                     "random init, batch k < d_sae");
    compare_training(inputs, sharded_inputs, "--features 256 --k 8 --batch 1000 --epochs 1",
                     "per-rank files");
}
END_TEST

START_TEST(mpi_failure_stops_every_rank)
{
    if (!have_mpi("mpi_failure_stops_every_rank"))
        return;
    char data[600], missing[600], args[2048];
    make_data("acts", 400, 8, 4, data, sizeof data);
    /* Rank 1's file does not exist: both ranks exit, non-zero, at once. */
    harness_tmp_path("acts_{rank}.npy", missing, sizeof missing);
    harness_tmp_path("acts_1.npy", data, sizeof data);
    ck_assert_int_eq(remove(data), 0);
    snprintf(args, sizeof args, "train '%s' --features 32 --k 4 --json", missing);
    ck_assert_int_ne(mpi_cli(args, "fail.json"), 0);
    char err[600], command[2048];
    harness_tmp_path("fail.json.err", err, sizeof err);
    snprintf(command, sizeof command,
             "test $(grep -c '^subsae-mpi' '%s') -eq 1 && grep -q 'subsae-mpi\\[rank 1\\] "
             "train: cannot open the input: .*acts_1.npy' '%s'",
             err, err);
    if (harness_run(command) != 0)
        show_stderr("fail.json");
    ck_assert_int_eq(harness_run(command), 0);
    snprintf(args, sizeof args, "rank '%s' --json", missing);
    ck_assert_int_ne(mpi_cli(args, "fail_rank.json"), 0);
}
END_TEST

SUBSAE_SUITE(mpi)
{
    Suite *s = suite_create("mpi");
    TCase *tc = harness_case(s, "mpirun", 300);
    tcase_add_test(tc, mpi_rank_matches_one_process);
    tcase_add_test(tc, mpi_training_matches_one_process);
    tcase_add_test(tc, mpi_failure_stops_every_rank);
    return s;
}
