/* Writes the seed corpora of the fuzz harnesses: small valid files made by
 * the library itself, plus a few hand-made and malformed ones.
 *
 *     make fuzz-corpus      (runs build/bin/fuzz_make_corpus tests/fuzz/corpus)
 *
 * The output is checked in; rerun this only to change the seeds. */
#include "fuzz.h"
#include "internal.h"
#include "io.h"

#include <dirent.h>
#include <unistd.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *root;

static void die(const char *what)
{
    fprintf(stderr, "make_corpus: %s: %s\n", what, subsae_last_error());
    exit(1);
}

static void ok(int rc, const char *what)
{
    if (rc != SUBSAE_OK)
        die(what);
}

static const char *path_of(const char *name, const char *file)
{
    static char path[2100];
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/%s", root, name);
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        die(dir);
    snprintf(path, sizeof path, "%s/%s", dir, file);
    return path;
}

static void write_bytes(const char *path, const void *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0)
        die(path);
}

/* A .npy file with a header dict of our choosing (version 1 or 2). */
static void write_npy_raw(const char *path, int version, const char *dict, const void *data,
                          size_t data_bytes)
{
    unsigned char out[4096];
    size_t start = version == 1 ? 10 : 12, n = strlen(dict);
    size_t total = (start + n + 1 + 15) / 16 * 16;
    memcpy(out, "\x93NUMPY", 6);
    out[6] = (unsigned char)version;
    out[7] = 0;
    size_t header = total - start;
    for (size_t i = 0; i < start - 8; i++)
        out[8 + i] = (unsigned char)(header >> (8 * i));
    memcpy(out + start, dict, n);
    memset(out + start + n, ' ', total - start - n);
    out[total - 1] = '\n';
    memcpy(out + total, data, data_bytes);
    write_bytes(path, out, total + data_bytes);
}

/* A safetensors file with a header of our choosing. */
static void write_st_raw(const char *path, const char *json, const void *data, size_t data_bytes)
{
    unsigned char out[4096];
    size_t n = strlen(json);
    for (int i = 0; i < 8; i++)
        out[i] = (unsigned char)((uint64_t)n >> (8 * i));
    memcpy(out + 8, json, n);
    memcpy(out + 8 + n, data, data_bytes);
    write_bytes(path, out, 8 + n + data_bytes);
}

static subsae_buffer *sample(int64_t rows, int64_t dim, int nan_row)
{
    float x[64];
    for (int64_t i = 0; i < rows * dim; i++)
        x[i] = (float)((i * 37 % 11) - 5) * 0.25f;
    if (rows * dim > 3) {
        x[1] = -0.0f;
        x[2] = 1e-40f; /* subnormal */
        x[3] = 60000.0f;
    }
    if (nan_row >= 0)
        x[nan_row * dim] = NAN;
    subsae_buffer *buf;
    ok(subsae_buffer_create(dim, &buf), "create");
    if (nan_row >= 0)
        ok(subsae_buffer_skip_nonfinite(buf, NULL), "skip");
    ok(subsae_buffer_append(buf, x, SUBSAE_DTYPE_F32, rows, dim), "append");
    return buf;
}

static void npy_seeds(void)
{
    subsae_buffer *buf = sample(3, 4, -1);
    ok(subsae_buffer_save_npy(buf, path_of("npy", "f32-3x4.npy"), SUBSAE_DTYPE_F32), "npy");
    ok(subsae_buffer_save_npy(buf, path_of("npy", "f16-3x4.npy"), SUBSAE_DTYPE_F16), "npy");
    ok(subsae_buffer_save_npy(buf, path_of("npy", "f64-3x4.npy"), SUBSAE_DTYPE_F64), "npy");
    subsae_buffer_free(buf);
    buf = sample(0, 5, -1);
    ok(subsae_buffer_save_npy(buf, path_of("npy", "f32-0x5.npy"), SUBSAE_DTYPE_F32), "npy");
    subsae_buffer_free(buf);

    float v[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    write_npy_raw(path_of("npy", "f32-2x2x3.npy"), 1,
                  "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2, 3), }", v, sizeof v);
    write_npy_raw(path_of("npy", "v2-f32-3x2.npy"), 2,
                  "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }", v, 24);
    write_npy_raw(path_of("npy", "fortran-1x4.npy"), 1,
                  "{'descr': '<f4', 'fortran_order': True, 'shape': (1, 4), }", v, 16);
    v[4] = NAN;
    v[9] = INFINITY;
    write_npy_raw(path_of("npy", "nonfinite-4x3.npy"), 1,
                  "{'shape': (4L, 3L), 'fortran_order': False, 'descr': '<f4'}", v, sizeof v);
    /* Malformed: each is rejected with its own reason. */
    write_npy_raw(path_of("npy", "bad-big-endian.npy"), 1,
                  "{'descr': '>f4', 'fortran_order': False, 'shape': (3, 2), }", v, 24);
    write_npy_raw(path_of("npy", "bad-size.npy"), 1,
                  "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 3), }", v, 24);
    write_npy_raw(path_of("npy", "bad-dict.npy"), 1,
                  "{'descr': '<f4', 'fortran_order': Maybe, 'shape': (3, 2), }", v, 24);
    write_npy_raw(path_of("npy", "bad-overflow.npy"), 1,
                  "{'descr': '<f4', 'fortran_order': False, "
                  "'shape': (4611686018427387904, 4611686018427387904, 0, 2), }", v, 0);
    write_bytes(path_of("npy", "bad-truncated.npy"), "\x93NUMPY\x01\x00\x76", 9);
}

static void safetensors_seeds(void)
{
    subsae_buffer *buf = sample(3, 4, -1);
    const int dtypes[] = {SUBSAE_DTYPE_F32, SUBSAE_DTYPE_F16, SUBSAE_DTYPE_BF16, SUBSAE_DTYPE_F64};
    for (int i = 0; i < 4; i++) {
        char file[64];
        snprintf(file, sizeof file, "%s-3x4.safetensors", subsae_dtype_name(dtypes[i]));
        ok(subsae_buffer_save_safetensors(buf, path_of("safetensors", file), "acts", dtypes[i]),
           "safetensors");
    }
    subsae_buffer_free(buf);

    /* Several tensors of several dtypes and metadata, as SAE weights and
     * checkpoints are written. */
    float w[6] = {1, -2, 3, -4, 5, -6};
    double b[2] = {0.5, -0.25};
    int32_t idx[3] = {7, -1, 2};
    uint16_t half[4] = {0x3c00, 0xbc00, 0x7c00, 0x0001};
    struct subsae__tensor_view views[4] = {
        {.name = "W_enc", .dtype = SUBSAE_DTYPE_F32, .ndim = 2, .shape = {2, 3}, .data = w,
         .bytes = sizeof w},
        {.name = "b_dec", .dtype = SUBSAE_DTYPE_F64, .ndim = 1, .shape = {2}, .data = b,
         .bytes = sizeof b},
        {.name = "index", .dtype = SUBSAE_DTYPE_I32, .ndim = 1, .shape = {3}, .data = idx,
         .bytes = sizeof idx},
        {.name = "half", .dtype = SUBSAE_DTYPE_F16, .ndim = 2, .shape = {2, 2}, .data = half,
         .bytes = sizeof half},
    };
    const char *keys[2] = {"format", "step"}, *values[2] = {"pt", "12"};
    ok(subsae__safetensors_write(path_of("safetensors", "multi.safetensors"), views, 4, keys,
                                 values, 2),
       "multi");
    ok(subsae__safetensors_write(path_of("safetensors", "empty.safetensors"), views, 0, NULL,
                                 NULL, 0),
       "empty");

    float v[8] = {1, 2, 3, 4, 5, 6, 7, NAN};
    write_st_raw(path_of("safetensors", "nonfinite-4x2.safetensors"),
                 "{\"x\":{\"dtype\":\"F32\",\"shape\":[4,2],\"data_offsets\":[0,32]}}", v, 32);
    write_st_raw(path_of("safetensors", "f32-0x7.safetensors"),
                 "{\"x\":{\"dtype\":\"F32\",\"shape\":[0,7],\"data_offsets\":[0,0]}}", v, 0);
    write_st_raw(path_of("safetensors", "f32-2x1x2.safetensors"),
                 "{\"x\":{\"dtype\":\"F32\",\"shape\":[2,1,2],\"data_offsets\":[0,16]},"
                 "\"__metadata__\":{\"a\":\"b\"}}", v, 16);
    /* Malformed. */
    write_st_raw(path_of("safetensors", "bad-overlap.safetensors"),
                 "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                 "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", v, 12);
    write_st_raw(path_of("safetensors", "bad-gap.safetensors"),
                 "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", v, 8);
    write_st_raw(path_of("safetensors", "bad-json.safetensors"),
                 "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]", v, 4);
    write_st_raw(path_of("safetensors", "bad-dtype.safetensors"),
                 "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", v, 4);
    write_st_raw(path_of("safetensors", "bad-overflow.safetensors"),
                 "{\"a\":{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296],"
                 "\"data_offsets\":[0,0]}}", v, 0);
}

/* ---- SAE directories and checkpoints -------------------------------- */

static char scratch[64];

static size_t read_file(const char *path, uint8_t *out, size_t room)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        die(path);
    size_t n = fread(out, 1, room, f);
    fclose(f);
    return n;
}

/* Both files of a directory joined into one fuzz input; `tag` is the
 * sae_dir layout byte (fuzz_sae_dir.c), 0 for the original layout and for
 * checkpoints. */
static void write_pair_tagged(const char *target, const char *file, unsigned tag,
                              const char *dir, const char *a, const char *b)
{
    static uint8_t fa[65536], fb[65536], out[131080];
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, a);
    size_t na = read_file(path, fa, sizeof fa);
    snprintf(path, sizeof path, "%s/%s", dir, b);
    size_t nb = b[0] ? read_file(path, fb, sizeof fb) : 0;
    write_bytes(path_of(target, file), out, fuzz_join_tagged(tag, fa, na, fb, nb, out));
}

static void write_pair(const char *target, const char *file, const char *dir, const char *a,
                       const char *b)
{
    write_pair_tagged(target, file, 0, dir, a, b);
}

/* The state file a checkpoint directory holds. */
static const char *state_file(const char *dir)
{
    static char name[256];
    DIR *d = opendir(dir);
    struct dirent *e;
    name[0] = '\0';
    while (d && (e = readdir(d)) != NULL)
        if (!strncmp(e->d_name, "state-", 6))
            snprintf(name, sizeof name, "%s", e->d_name);
    if (d)
        closedir(d);
    if (!name[0])
        die("no state file");
    return name;
}

/* A trainer of each variant, trained for three steps of 16 rows on 4 (or
 * 4 -> 3, a transcoder) dimensions and 8 features: its checkpoint goes to
 * the checkpoint corpus and its saved model to the sae_dir corpus. `auxk`
 * turns the AuxK loss on with a dead window of 16 tokens, so that dead
 * features exist when the checkpoint is written. `skip` (a transcoder)
 * trains a skip transcoder (W_skip in both files). */
/* What a seed model has beyond its activation. */
enum { SEED_AUXK = 1, SEED_SKIP = 2, SEED_MATRYOSHKA = 4 };

static void model_seeds(int activation, bool transcoder, unsigned extras)
{
    const bool auxk = extras & SEED_AUXK, skip = extras & SEED_SKIP;
    const bool nested = extras & SEED_MATRYOSHKA;
    enum { N = 64, D = 4, DOUT = 3 };
    float x[N * D], y[N * DOUT];
    for (int i = 0; i < N * D; i++)
        x[i] = (float)((i * 7919) % 23) / 11.0f - 1.0f + (float)(i % D) * 0.5f;
    for (int i = 0; i < N * DOUT; i++)
        y[i] = x[(i / DOUT) * D + i % DOUT] * 2.0f - x[(i / DOUT) * D + 3];
    subsae_buffer *bx = NULL, *by = NULL;
    ok(subsae_buffer_wrap(x, SUBSAE_DTYPE_F32, N, D, D, SUBSAE_BORROW, &bx), "wrap");
    if (transcoder)
        ok(subsae_buffer_wrap(y, SUBSAE_DTYPE_F32, N, DOUT, DOUT, SUBSAE_BORROW, &by), "wrap");
    subsae_trainer *t = NULL;
    ok(subsae_trainer_create(&t), "trainer");
    ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_FEATURES, 8), "features");
    ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_ACTIVATION, activation), "activation");
    ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_K, 2), "k");
    ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_BATCH, 16), "batch");
    ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_INIT_SAMPLE, N), "sample");
    ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_THREADS, 1), "threads");
    ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_SEED, 1 + activation), "seed");
    if (auxk) {
        ok(subsae_trainer_set_double(t, SUBSAE_TRAIN_AUXK_COEF, 1.0 / 32), "auxk");
        ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_AUXK_K, 2), "auxk k");
        ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_DEAD_WINDOW, 16), "dead window");
    }
    ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_SKIP, skip), "skip");
    if (nested) {
        static const int64_t widths[] = {2, 5, 8};
        ok(subsae_trainer_set_matryoshka(t, widths, 3), "matryoshka");
    }
    ok(subsae_trainer_init(t, bx, by), "init");
    ok(subsae_trainer_fit(t, bx, by, 48), "fit");
    if (auxk) {
        double metrics[SUBSAE_METRIC_COUNT];
        ok(subsae_trainer_metrics(t, metrics, SUBSAE_METRIC_COUNT), "metrics");
        if (!(metrics[SUBSAE_METRIC_DEAD_FRACTION] > 0))
            die("the AuxK seed has no dead feature");
    }
    char dir[512], name[64];
    snprintf(name, sizeof name, "%s%s%s%s%s", subsae_activation_name(activation),
             transcoder ? "-transcoder" : "", skip ? "-skip" : "", auxk ? "-auxk" : "",
             nested ? "-matryoshka" : "");
    snprintf(dir, sizeof dir, "%s/ckpt-%s", scratch, name);
    ok(subsae_trainer_save_checkpoint(t, dir), "checkpoint");
    char file[96];
    snprintf(file, sizeof file, "%s.bin", name);
    write_pair("checkpoint", file, dir, "checkpoint.json", state_file(dir));
    snprintf(dir, sizeof dir, "%s/sae-%s", scratch, name);
    ok(subsae_sae_save(subsae_trainer_sae(t), dir), "sae");
    if (!auxk) /* the same model as without */
        write_pair("sae_dir", file, dir, "cfg.json", "sae_weights.safetensors");
    if (activation == SUBSAE_ACT_TOPK && !transcoder && !auxk) {
        /* Malformed: no weights; no state file; a manifest of another
         * version; an architecture without its threshold. */
        write_pair("sae_dir", "bad-no-weights.bin", dir, "cfg.json", "");
        snprintf(dir, sizeof dir, "%s/ckpt-%s", scratch, name);
        write_pair("checkpoint", "bad-no-state.bin", dir, "checkpoint.json", "");
        static const char other[] = "{\"format\": \"libsubsae-checkpoint\", \"version\": 99}";
        uint8_t out[64];
        write_bytes(path_of("checkpoint", "bad-version.bin"), out,
                    fuzz_join(other, sizeof other - 1, "", 0, out));
        static const char cfg[] = "{\"architecture\": \"jumprelu\", \"d_in\": 4, \"d_sae\": 8}";
        snprintf(dir, sizeof dir, "%s/sae-%s", scratch, name);
        uint8_t weights[8192], joined[8300];
        char path[600];
        snprintf(path, sizeof path, "%s/sae_weights.safetensors", dir);
        size_t nw = read_file(path, weights, sizeof weights);
        write_bytes(path_of("sae_dir", "bad-jumprelu-no-threshold.bin"), joined,
                    fuzz_join(cfg, sizeof cfg - 1, weights, nw, joined));
    }
    subsae_trainer_free(t);
    subsae_buffer_free(bx);
    subsae_buffer_free(by);
}

/* A model built by hand (thresholds and k of our choosing), with input and
 * output scales, so that saving folds them. */
static void hand_model(int activation)
{
    enum { D = 4, M = 8 };
    subsae_sae *sae = NULL;
    ok(subsae_sae_create(D, D, M, activation, &sae), "sae");
    float w[M * D], b[M];
    for (int i = 0; i < M * D; i++)
        w[i] = (float)((i * 31) % 17) / 8.0f - 1.0f;
    for (int i = 0; i < M; i++)
        b[i] = 0.125f * (float)i;
    ok(subsae_sae_set_param(sae, SUBSAE_PARAM_W_ENC, w, M * D), "W_enc");
    ok(subsae_sae_set_param(sae, SUBSAE_PARAM_W_DEC, w, M * D), "W_dec");
    ok(subsae_sae_set_param(sae, SUBSAE_PARAM_THRESHOLD, b, M), "threshold");
    ok(subsae_sae_set_param(sae, SUBSAE_PARAM_B_DEC, b, D), "b_dec");
    if (activation == SUBSAE_ACT_BATCHTOPK)
        ok(subsae_sae_set_int(sae, SUBSAE_SAE_K, 3), "k");
    if (activation == SUBSAE_ACT_GATED) {
        float r[M];
        for (int i = 0; i < M; i++)
            r[i] = 0.25f * (float)(i % 3) - 0.25f;
        ok(subsae_sae_set_param(sae, SUBSAE_PARAM_R_MAG, r, M), "r_mag");
        ok(subsae_sae_set_param(sae, SUBSAE_PARAM_B_MAG, b, M), "b_mag");
    }
    ok(subsae_sae_set_int(sae, SUBSAE_SAE_RANK_BY_DECODER_NORM, 1), "rank by norm");
    ok(subsae_sae_set_double(sae, SUBSAE_SAE_INPUT_SCALE, 0.75), "input scale");
    ok(subsae_sae_set_double(sae, SUBSAE_SAE_OUTPUT_SCALE, 2.5), "output scale");
    char dir[512], file[64];
    snprintf(dir, sizeof dir, "%s/hand-%s", scratch, subsae_activation_name(activation));
    ok(subsae_sae_save(sae, dir), "save");
    snprintf(file, sizeof file, "hand-%s.bin", subsae_activation_name(activation));
    write_pair("sae_dir", file, dir, "cfg.json", "sae_weights.safetensors");
    subsae_sae_free(sae);
}

/* ---- foreign layouts (sae_import.c) --------------------------------- */

/* Layout bytes of fuzz_sae_dir.c. */
enum { CFG_JSON = 0, CONFIG_JSON = 1, SAE_WEIGHTS = 0, SAE_ST = 2 };

static struct subsae__tensor_view f32(const char *name, const float *data, int ndim, int64_t d0,
                                      int64_t d1)
{
    struct subsae__tensor_view v = {.name = name, .dtype = SUBSAE_DTYPE_F32, .ndim = ndim,
                                    .shape = {d0, d1}, .data = data};
    v.bytes = (size_t)(ndim == 0 ? 1 : ndim == 1 ? d0 : d0 * d1) * 4;
    return v;
}

/* A directory of another tool: the configuration text and the tensors,
 * under the layout's file names. */
static void foreign(const char *file, unsigned layout, const char *config,
                    const struct subsae__tensor_view *views, int64_t n)
{
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/foreign-%s", scratch, file);
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        die(dir);
    const char *weights = layout & SAE_ST ? "sae.safetensors" : "sae_weights.safetensors";
    const char *cfg = layout & CONFIG_JSON ? "config.json" : "cfg.json";
    snprintf(path, sizeof path, "%s/%s", dir, weights);
    ok(subsae__safetensors_write(path, views, n, NULL, NULL, 0), path);
    snprintf(path, sizeof path, "%s/%s", dir, cfg);
    write_bytes(path, config, strlen(config));
    write_pair_tagged("sae_dir", file, layout, dir, cfg, weights);
}

static void foreign_seeds(void)
{
    enum { D = 4, M = 8, DOUT = 3 };
    static float enc[M * D], enc_t[D * M], bias[M], dec[M * D], dec3[M * DOUT], b_dec[D],
        thr[M], log_thr[M];
    for (int i = 0; i < M * D; i++) {
        enc[i] = (float)((i * 13) % 11) / 5.0f - 1.0f;
        dec[i] = (float)((i * 7) % 9) / 4.0f - 1.0f;
    }
    for (int f = 0; f < M; f++)
        for (int j = 0; j < D; j++)
            enc_t[j * M + f] = enc[f * D + j];
    for (int i = 0; i < M * DOUT; i++)
        dec3[i] = (float)((i * 5) % 7) / 3.0f - 1.0f;
    for (int f = 0; f < M; f++) {
        bias[f] = 0.1f * (float)(f % 3) - 0.1f;
        thr[f] = 0.05f * (float)(f + 1);
        log_thr[f] = -1.0f - 0.25f * (float)f;
    }
    for (int j = 0; j < D; j++)
        b_dec[j] = 0.25f * (float)j - 0.3f;
    const float norm_in = 3.5f, norm_out = 1.25f;

    /* SAELens: a JumpReLU with log_threshold, a "standard" TopK by
     * activation_fn_str and its kwargs, a BatchTopK with a threshold. */
    struct subsae__tensor_view v[8];
    v[0] = f32("W_enc", enc_t, 2, D, M);
    v[1] = f32("b_enc", bias, 1, M, 0);
    v[2] = f32("W_dec", dec, 2, M, D);
    v[3] = f32("b_dec", b_dec, 1, D, 0);
    v[4] = f32("log_threshold", log_thr, 1, M, 0);
    foreign("saelens-jumprelu-log-threshold.bin", CFG_JSON | SAE_WEIGHTS,
            "{\"architecture\": \"jumprelu\", \"d_in\": 4, \"d_sae\": 8, \"dtype\": "
            "\"float32\", \"apply_b_dec_to_input\": true, \"normalize_activations\": \"none\"}",
            v, 5);
    foreign("saelens-standard-topk-kwargs.bin", CFG_JSON | SAE_WEIGHTS,
            "{\"architecture\": \"standard\", \"d_in\": 4, \"d_sae\": 8, \"activation_fn_str\": "
            "\"topk\", \"activation_fn_kwargs\": {\"k\": 3}, \"apply_b_dec_to_input\": false}",
            v, 4);
    v[4] = f32("threshold", thr, 1, M, 0);
    foreign("saelens-batchtopk-threshold.bin", CFG_JSON | SAE_WEIGHTS,
            "{\"architecture\": \"batchtopk\", \"d_in\": 4, \"d_sae\": 8, \"k\": 2, "
            "\"rank_by_decoder_norm\": true}",
            v, 5);

    /* sparsify: sae.safetensors + cfg.json, an SAE and a transcoder. */
    v[0] = f32("encoder.weight", enc, 2, M, D);
    v[1] = f32("encoder.bias", bias, 1, M, 0);
    v[2] = f32("W_dec", dec, 2, M, D);
    v[3] = f32("b_dec", b_dec, 1, D, 0);
    foreign("sparsify-topk.bin", CFG_JSON | SAE_ST,
            "{\"activation\": \"topk\", \"expansion_factor\": 2, \"normalize_decoder\": true, "
            "\"num_latents\": 8, \"k\": 2, \"multi_topk\": false, \"skip_connection\": false, "
            "\"transcode\": false, \"d_in\": 4}",
            v, 4);
    v[2] = f32("W_dec", dec3, 2, M, DOUT);
    v[3] = f32("b_dec", b_dec, 1, DOUT, 0);
    foreign("sparsify-transcoder.bin", CFG_JSON | SAE_ST,
            "{\"activation\": \"topk\", \"expansion_factor\": 2, \"num_latents\": 0, \"k\": 3, "
            "\"transcode\": true, \"d_in\": 4}",
            v, 4);

    /* lm-saes: config.json + sae_weights.safetensors. TopK gated by the
     * decoder norms (the default) with dataset-wise norms; JumpReLU with a
     * log threshold at inference norms; ReLU without b_D; a transcoder
     * (W_D of another width, two hooks). */
    v[0] = f32("W_E", enc_t, 2, D, M);
    v[1] = f32("b_E", bias, 1, M, 0);
    v[2] = f32("W_D", dec, 2, M, D);
    v[3] = f32("b_D", b_dec, 1, D, 0);
    v[4] = f32("dataset_average_activation_norm.blocks.1.hook_resid_pre", &norm_in, 0, 0, 0);
    v[5] = f32("dataset_average_activation_norm.blocks.1.hook_mlp_out", &norm_out, 0, 0, 0);
    foreign("lm-saes-topk-dataset-wise.bin", CONFIG_JSON | SAE_WEIGHTS,
            "{\"sae_type\": \"sae\", \"d_model\": 4, \"expansion_factor\": 2, \"act_fn\": "
            "\"topk\", \"top_k\": 2, \"norm_activation\": \"dataset-wise\", "
            "\"use_decoder_bias\": true, \"hook_point_in\": \"blocks.1.hook_resid_pre\", "
            "\"hook_point_out\": \"blocks.1.hook_mlp_out\"}",
            v, 6);
    v[4] = f32("activation_function.log_jumprelu_threshold", log_thr, 1, M, 0);
    foreign("lm-saes-jumprelu-decoder-norm.bin", CONFIG_JSON | SAE_WEIGHTS,
            "{\"sae_type\": \"sae\", \"d_model\": 4, \"act_fn\": \"jumprelu\", "
            "\"norm_activation\": \"inference\", \"sparsity_include_decoder_norm\": true, "
            "\"jumprelu_threshold_window\": 2.0}",
            v, 5);
    v[3] = f32("dataset_average_activation_norm.h", &norm_in, 0, 0, 0);
    foreign("lm-saes-relu-no-bias.bin", CONFIG_JSON | SAE_WEIGHTS,
            "{\"sae_type\": \"sae\", \"d_model\": 4, \"act_fn\": \"relu\", \"use_decoder_bias\": "
            "false, \"sparsity_include_decoder_norm\": false, \"hook_point_in\": \"h\"}",
            v, 4);
    v[2] = f32("W_D", dec3, 2, M, DOUT);
    v[3] = f32("b_D", b_dec, 1, DOUT, 0);
    v[4] = f32("dataset_average_activation_norm.blocks.1.hook_resid_pre", &norm_in, 0, 0, 0);
    foreign("lm-saes-transcoder.bin", CONFIG_JSON | SAE_WEIGHTS,
            "{\"sae_type\": \"sae\", \"d_model\": 4, \"act_fn\": \"topk\", \"top_k\": 3, "
            "\"norm_activation\": \"dataset-wise\", \"hook_point_in\": "
            "\"blocks.1.hook_resid_pre\", \"hook_point_out\": \"blocks.1.hook_mlp_out\"}",
            v, 6);
}

static void remove_tree(const char *dir)
{
    char command[600];
    snprintf(command, sizeof command, "rm -rf '%s'", dir);
    if (system(command) != 0)
        fprintf(stderr, "make_corpus: could not remove %s\n", dir);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
        return 2;
    }
    root = argv[1];
    if (mkdir(root, 0777) != 0 && errno != EEXIST)
        die(root);
    npy_seeds();
    safetensors_seeds();
    snprintf(scratch, sizeof scratch, "/tmp/subsae-corpus-XXXXXX");
    if (!mkdtemp(scratch))
        die("mkdtemp");
    for (int a = SUBSAE_ACT_TOPK; a <= SUBSAE_ACT_RELU; a++) {
        model_seeds(a, false, 0);
        if (a != SUBSAE_ACT_TOPK)
            hand_model(a);
    }
    model_seeds(SUBSAE_ACT_TOPK, true, 0);
    model_seeds(SUBSAE_ACT_JUMPRELU, true, 0);
    model_seeds(SUBSAE_ACT_TOPK, false, SEED_AUXK);
    model_seeds(SUBSAE_ACT_RELU, false, SEED_AUXK);
    model_seeds(SUBSAE_ACT_GATED, false, 0);
    model_seeds(SUBSAE_ACT_GATED, true, 0);
    hand_model(SUBSAE_ACT_GATED);
    model_seeds(SUBSAE_ACT_TOPK, true, SEED_SKIP);
    model_seeds(SUBSAE_ACT_RELU, true, SEED_SKIP); /* SAELens' skip_transcoder */
    model_seeds(SUBSAE_ACT_BATCHTOPK, false, SEED_MATRYOSHKA);
    foreign_seeds();
    remove_tree(scratch);
    return 0;
}
