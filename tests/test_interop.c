/* Moving SAEs between tools: export -> import round trips for every
 * activation (bit-identical weights, identical encodings), fixtures in the
 * EleutherAI sparsify and OpenMOSS lm-saes layouts (built here, with the
 * tools' file names, tensor names and config keys) imported with the right
 * orientation and encoding exactly as a double-precision hand computation
 * of each tool's convention, orientation found by shapes, and clear
 * rejections of mismatched shapes and unsupported variants. */
#include "harness.h"
#include "internal.h"
#include "io.h"
#include "rng.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static float *normals(uint64_t seed, int64_t n, double scale, double offset)
{
    subsae__rng rng;
    subsae__rng_seed(&rng, seed, 7);
    float *x = malloc((size_t)n * sizeof *x);
    for (int64_t i = 0; i < n; i++)
        x[i] = (float)(offset + scale * subsae__rng_normal(&rng));
    return x;
}

static void fresh_dir(const char *name, char *dir, size_t size)
{
    harness_tmp_path(name, dir, size);
    ck_assert_ok(subsae__make_dir(dir));
}

static struct subsae__tensor_view f32(const char *name, const float *data, int ndim, int64_t d0,
                                      int64_t d1)
{
    struct subsae__tensor_view v = {.name = name, .dtype = SUBSAE_DTYPE_F32, .ndim = ndim,
                                    .shape = {d0, d1}, .data = data};
    v.bytes = (size_t)(ndim == 0 ? 1 : ndim == 1 ? d0 : d0 * d1) * 4;
    return v;
}

static void write_weights(const char *dir, const char *file, const struct subsae__tensor_view *v,
                          int64_t n)
{
    char path[700];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    ck_assert_ok(subsae__safetensors_write(path, v, n, NULL, NULL, 0));
}

/* [rows, cols] -> [cols, rows] */
static float *transpose(const float *a, int64_t rows, int64_t cols)
{
    float *t = malloc((size_t)(rows * cols) * sizeof *t);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++)
            t[c * rows + r] = a[r * cols + c];
    return t;
}

static float *param(const subsae_sae *s, int p)
{
    int64_t n = subsae_sae_param_size(s, p);
    float *out = malloc((size_t)n * sizeof *out);
    ck_assert_ok(subsae_sae_get_param(s, p, out, n));
    return out;
}

static int64_t opt(const subsae_sae *s, int option)
{
    int64_t v;
    ck_assert_ok(subsae_sae_get_int(s, option, &v));
    return v;
}

/* Compare dense codes with a reference, exactly on the support. */
static void expect_codes(const float *z, const double *want, int64_t n, int64_t m,
                         const char *what)
{
    for (int64_t i = 0; i < n * m; i++) {
        ck_assert_msg((z[i] != 0.0f) == (want[i] != 0.0), "%s: row %lld feature %lld: %g vs %g",
                      what, (long long)(i / m), (long long)(i % m), (double)z[i], want[i]);
        ck_assert_msg(fabs(z[i] - want[i]) <= 1e-4 * (1.0 + fabs(want[i])),
                      "%s: row %lld feature %lld: %g vs %g", what, (long long)(i / m),
                      (long long)(i % m), (double)z[i], want[i]);
    }
}

/* Top-k of `key` per row (ties impossible at the test's margins: the gap
 * between the k-th and the next key is asserted), value `val` where the
 * key is positive. */
static void topk_reference(const double *key, const double *val, int64_t n, int64_t m,
                           int64_t k, double *z)
{
    for (int64_t i = 0; i < n; i++) {
        const double *kr = key + i * m;
        double *zr = z + i * m;
        unsigned char *used = calloc((size_t)m, 1);
        double last = INFINITY;
        for (int64_t s = 0; s < k; s++) {
            int64_t best = -1;
            for (int64_t f = 0; f < m; f++)
                if (!used[f] && (best < 0 || kr[f] > kr[best]))
                    best = f;
            used[best] = 1;
            last = kr[best];
        }
        double next = -INFINITY;
        for (int64_t f = 0; f < m; f++) {
            if (!used[f] && kr[f] > next)
                next = kr[f];
            zr[f] = used[f] && kr[f] > 0 ? val[i * m + f] : 0.0;
        }
        ck_assert_msg(last - next > 1e-4, "row %lld: top-k margin %g too small", (long long)i,
                      last - next);
        free(used);
    }
}

/* ---- export -> import round trips ---------------------------------------- */

static subsae_sae *random_model(int activation, int64_t d_in, int64_t d_out, int64_t m,
                                uint64_t seed)
{
    subsae_sae *s;
    ck_assert_ok(subsae_sae_create(d_in, d_out, m, activation, &s));
    float *w_enc = normals(seed, m * d_in, 1.0 / sqrt((double)d_in), 0.0);
    float *b_enc = normals(seed + 1, m, 0.2, -0.05);
    float *w_dec = normals(seed + 2, m * d_out, 1.0 / sqrt((double)d_out), 0.0);
    float *b_dec = normals(seed + 3, d_out, 0.5, 0.1);
    float *thr = normals(seed + 4, m, 0.05, 0.3);
    ck_assert_ok(subsae_sae_set_param(s, SUBSAE_PARAM_W_ENC, w_enc, m * d_in));
    ck_assert_ok(subsae_sae_set_param(s, SUBSAE_PARAM_B_ENC, b_enc, m));
    ck_assert_ok(subsae_sae_set_param(s, SUBSAE_PARAM_W_DEC, w_dec, m * d_out));
    ck_assert_ok(subsae_sae_set_param(s, SUBSAE_PARAM_B_DEC, b_dec, d_out));
    ck_assert_ok(subsae_sae_set_param(s, SUBSAE_PARAM_THRESHOLD, thr, m));
    if (activation == SUBSAE_ACT_TOPK || activation == SUBSAE_ACT_BATCHTOPK)
        ck_assert_ok(subsae_sae_set_int(s, SUBSAE_SAE_K, 5));
    free(w_enc);
    free(b_enc);
    free(w_dec);
    free(b_dec);
    free(thr);
    return s;
}

static void round_trip(int activation, bool transcoder, bool by_norm)
{
    const int64_t d_in = 10, d_out = transcoder ? 7 : 10, m = 40, n = 33;
    subsae_sae *s = random_model(activation, d_in, d_out, m, 100 + (uint64_t)activation);
    ck_assert_ok(subsae_sae_set_double(s, SUBSAE_SAE_INPUT_SCALE, 1.75));
    ck_assert_ok(subsae_sae_set_double(s, SUBSAE_SAE_OUTPUT_SCALE, transcoder ? 0.6 : 1.75));
    if (by_norm)
        ck_assert_ok(subsae_sae_set_int(s, SUBSAE_SAE_RANK_BY_DECODER_NORM, 1));
    char dir[600];
    harness_tmp_path("round-trip", dir, sizeof dir);
    ck_assert_ok(subsae_sae_save(s, dir));
    subsae_sae *back, *folded;
    ck_assert_ok(subsae_sae_load(dir, &back));
    ck_assert_ok(subsae_sae_clone(s, &folded));
    ck_assert_ok(subsae_sae_fold_scales(folded));
    /* Bit-identical weights (of the folded model: the file works on raw
     * activations) and the same options. */
    const bool thr = activation == SUBSAE_ACT_JUMPRELU || activation == SUBSAE_ACT_BATCHTOPK;
    for (int p = SUBSAE_PARAM_W_ENC; p <= (thr ? SUBSAE_PARAM_THRESHOLD : SUBSAE_PARAM_B_DEC);
         p++) {
        float *a = param(back, p), *b = param(folded, p);
        ck_assert_msg(!memcmp(a, b, (size_t)subsae_sae_param_size(s, p) * 4),
                      "%s: parameter %d differs", subsae_activation_name(activation), p);
        free(a);
        free(b);
    }
    const int options[6] = {SUBSAE_SAE_ACTIVATION, SUBSAE_SAE_K, SUBSAE_SAE_APPLY_B_DEC_TO_INPUT,
                            SUBSAE_SAE_RANK_BY_DECODER_NORM, SUBSAE_SAE_D_OUT,
                            SUBSAE_SAE_TRANSCODER};
    for (int i = 0; i < 6; i++)
        ck_assert_int_eq(opt(back, options[i]), opt(folded, options[i]));
    ck_assert_int_eq(opt(back, SUBSAE_SAE_TRANSCODER), transcoder);
    /* Identical encodings: bitwise against the folded model, and the same
     * codes as the model before export up to rounding. */
    float *x = normals(9, n * d_in, 1.0, 0.2);
    float *z1 = malloc((size_t)(n * m) * 4), *z2 = malloc((size_t)(n * m) * 4);
    float *z3 = malloc((size_t)(n * m) * 4);
    ck_assert_ok(subsae_sae_encode(back, x, n, d_in, z1, m));
    ck_assert_ok(subsae_sae_encode(folded, x, n, d_in, z2, m));
    ck_assert_ok(subsae_sae_encode(s, x, n, d_in, z3, m));
    ck_assert_mem_eq(z1, z2, (size_t)(n * m) * 4);
    int64_t active = 0;
    for (int64_t i = 0; i < n * m; i++) {
        ck_assert_msg((z1[i] != 0) == (z3[i] != 0), "%s: support differs at %lld",
                      subsae_activation_name(activation), (long long)i);
        ck_assert_double_eq_tol(z1[i], z3[i], 1e-5 * (1 + fabs(z3[i])));
        active += z1[i] != 0;
    }
    ck_assert_int_gt(active, n);
    float *r1 = malloc((size_t)(n * d_out) * 4), *r3 = malloc((size_t)(n * d_out) * 4);
    ck_assert_ok(subsae_sae_decode(back, z1, n, m, r1, d_out));
    ck_assert_ok(subsae_sae_decode(s, z3, n, m, r3, d_out));
    for (int64_t i = 0; i < n * d_out; i++)
        ck_assert_double_eq_tol(r1[i], r3[i], 1e-4 * (1 + fabs(r3[i])));
    subsae_sae_free(s);
    subsae_sae_free(back);
    subsae_sae_free(folded);
    free(x);
    free(z1);
    free(z2);
    free(z3);
    free(r1);
    free(r3);
}

START_TEST(round_trip_every_activation)
{
    const int acts[4] = {SUBSAE_ACT_TOPK, SUBSAE_ACT_BATCHTOPK, SUBSAE_ACT_JUMPRELU,
                         SUBSAE_ACT_RELU};
    for (int a = 0; a < 4; a++) {
        round_trip(acts[a], false, false);
        round_trip(acts[a], true, false);
        round_trip(acts[a], true, true);
    }
}
END_TEST

/* The exported file holds threshold [d_sae] for JumpReLU and BatchTopK. */
START_TEST(export_thresholds)
{
    const int acts[2] = {SUBSAE_ACT_JUMPRELU, SUBSAE_ACT_BATCHTOPK};
    for (int a = 0; a < 2; a++) {
        subsae_sae *s = random_model(acts[a], 6, 6, 12, 3);
        char dir[600], path[700];
        harness_tmp_path("thresholds", dir, sizeof dir);
        ck_assert_ok(subsae_sae_save(s, dir));
        snprintf(path, sizeof path, "%s/sae_weights.safetensors", dir);
        subsae__safetensors *st;
        ck_assert_ok(subsae__safetensors_open(path, &st));
        const struct subsae__tensor_view *t = subsae__safetensors_find(st, "threshold");
        ck_assert_ptr_nonnull(t);
        ck_assert_int_eq(t->ndim, 1);
        ck_assert_int_eq(t->shape[0], 12);
        float *thr = param(s, SUBSAE_PARAM_THRESHOLD);
        ck_assert_mem_eq(t->data, thr, 12 * 4);
        free(thr);
        subsae__safetensors_close(st);
        subsae_sae_free(s);
    }
}
END_TEST

/* ---- EleutherAI sparsify ------------------------------------------------ */

/* sparsify: pre = ReLU((x - b_dec) W^T + b) (x W^T + b when transcoding),
 * the k largest. */
static void sparsify_case(bool transcode)
{
    const int64_t d = 8, m = 32, k = 4, n = 21;
    float *enc = normals(11, m * d, 0.4, 0.0), *bias = normals(12, m, 0.2, 0.0);
    float *dec = normals(13, m * d, 0.3, 0.0), *b_dec = normals(14, d, 0.7, 0.3);
    unsigned char mask[3] = {1, 0, 1};
    struct subsae__tensor_view v[5] = {
        f32("encoder.weight", enc, 2, m, d), f32("encoder.bias", bias, 1, m, 0),
        f32("W_dec", dec, 2, m, d), f32("b_dec", b_dec, 1, d, 0),
        /* A foreign extra tensor of another dtype: read past, ignored. */
        {.name = "aux_mask", .dtype = SUBSAE__DTYPE_OPAQUE + 6, .ndim = 1, .shape = {3},
         .data = mask, .bytes = 3},
    };
    ck_assert_str_eq(subsae__safetensors_dtype_name(v[4].dtype), "U8");
    char dir[600], cfg[512];
    fresh_dir(transcode ? "sparsify-tc" : "sparsify", dir, sizeof dir);
    write_weights(dir, "sae.safetensors", v, 5);
    snprintf(cfg, sizeof cfg,
             "{\"activation\": \"topk\", \"expansion_factor\": 4, \"normalize_decoder\": true, "
             "\"num_latents\": %lld, \"k\": %lld, \"multi_topk\": false, \"skip_connection\": "
             "false, \"transcode\": %s, \"d_in\": %lld}",
             (long long)m, (long long)k, transcode ? "true" : "false", (long long)d);
    harness_write_text(dir, "cfg.json", cfg);
    subsae_sae *s;
    ck_assert_ok(subsae_sae_load(dir, &s));
    ck_assert_int_eq(opt(s, SUBSAE_SAE_ACTIVATION), SUBSAE_ACT_TOPK);
    ck_assert_int_eq(opt(s, SUBSAE_SAE_K), k);
    ck_assert_int_eq(opt(s, SUBSAE_SAE_D_SAE), m);
    ck_assert_int_eq(opt(s, SUBSAE_SAE_APPLY_B_DEC_TO_INPUT), !transcode);
    ck_assert_int_eq(opt(s, SUBSAE_SAE_TRANSCODER), transcode); /* d_in == d_out here */
    /* Orientation: encoder.weight rows are the features. */
    float *w = param(s, SUBSAE_PARAM_W_ENC);
    ck_assert_mem_eq(w, enc, (size_t)(m * d) * 4);
    free(w);
    w = param(s, SUBSAE_PARAM_W_DEC);
    ck_assert_mem_eq(w, dec, (size_t)(m * d) * 4);
    free(w);
    float *x = normals(15, n * d, 1.0, 0.2);
    double *pre = malloc((size_t)(n * m) * sizeof *pre), *want = malloc((size_t)(n * m) * 8);
    for (int64_t i = 0; i < n; i++)
        for (int64_t f = 0; f < m; f++) {
            double acc = bias[f];
            for (int64_t j = 0; j < d; j++)
                acc += ((double)x[i * d + j] - (transcode ? 0.0 : b_dec[j])) * enc[f * d + j];
            pre[i * m + f] = acc > 0 ? acc : 0.0; /* ReLU, then top-k */
        }
    topk_reference(pre, pre, n, m, k, want);
    float *z = malloc((size_t)(n * m) * 4);
    ck_assert_ok(subsae_sae_encode(s, x, n, d, z, m));
    expect_codes(z, want, n, m, transcode ? "sparsify transcoder" : "sparsify");
    /* Decode: z W_dec + b_dec. */
    float *r = malloc((size_t)(n * d) * 4);
    ck_assert_ok(subsae_sae_decode(s, z, n, m, r, d));
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < d; j++) {
            double acc = b_dec[j];
            for (int64_t f = 0; f < m; f++)
                acc += want[i * m + f] * dec[f * d + j];
            ck_assert_double_eq_tol(r[i * d + j], acc, 1e-4 * (1 + fabs(acc)));
        }
    subsae_sae_free(s);
    free(enc);
    free(bias);
    free(dec);
    free(b_dec);
    free(x);
    free(pre);
    free(want);
    free(z);
    free(r);
}

START_TEST(sparsify_layout)
{
    sparsify_case(false);
    sparsify_case(true);
}
END_TEST

/* ---- OpenMOSS lm-saes ------------------------------------------------------ */

struct lm_fixture {
    int64_t d, m;
    float *w_e, *b_e, *w_d, *b_d, *log_thr;
    double norm_in, norm_out;
};

static void lm_fixture_init(struct lm_fixture *f, int64_t d, int64_t m, uint64_t seed)
{
    f->d = d;
    f->m = m;
    f->w_e = normals(seed, d * m, 0.35, 0.0); /* [d_model, d_sae] */
    f->b_e = normals(seed + 1, m, 0.2, -0.1);
    f->w_d = normals(seed + 2, m * d, 0.3, 0.0);
    /* Decoder rows of very different norms, so that ranking by
     * pre x |W_D row| differs from ranking by pre. */
    for (int64_t r = 0; r < m; r++)
        for (int64_t j = 0; j < d; j++)
            f->w_d[r * d + j] *= (float)(0.2 + 0.15 * (double)(r % 11));
    f->b_d = normals(seed + 3, d, 0.5, 0.1);
    f->log_thr = normals(seed + 4, m, 0.3, -0.3);
    f->norm_in = 3.7;
    f->norm_out = 1.3;
}

static void lm_fixture_free(struct lm_fixture *f)
{
    free(f->w_e);
    free(f->b_e);
    free(f->w_d);
    free(f->b_d);
    free(f->log_thr);
}

static double row_norm(const float *w, int64_t d)
{
    double nn = 0.0;
    for (int64_t j = 0; j < d; j++)
        nn += (double)w[j] * w[j];
    return sqrt(nn);
}

/* Write an lm-saes directory: config.json from `config` (a JSON object
 * body), weights with b_D unless no_bias, the dataset norms, a log
 * threshold for jumprelu, and a foreign I64 tensor. */
static void lm_write(const char *dir, const struct lm_fixture *f, const char *config,
                     bool no_bias, bool jump)
{
    const float nin = (float)f->norm_in, nout = (float)f->norm_out;
    int64_t steps[2] = {123456789012345LL, 7};
    struct subsae__tensor_view v[8];
    int64_t n = 0;
    v[n++] = f32("W_E", f->w_e, 2, f->d, f->m);
    v[n++] = f32("b_E", f->b_e, 1, f->m, 0);
    v[n++] = f32("W_D", f->w_d, 2, f->m, f->d);
    if (!no_bias)
        v[n++] = f32("b_D", f->b_d, 1, f->d, 0);
    v[n++] = f32("dataset_average_activation_norm.blocks.2.hook_attn_out", &nin, 0, 0, 0);
    v[n++] = f32("dataset_average_activation_norm.blocks.2.hook_mlp_out", &nout, 0, 0, 0);
    if (jump)
        v[n++] = f32("activation_function.log_jumprelu_threshold", f->log_thr, 1, f->m, 0);
    v[n++] = (struct subsae__tensor_view){.name = "train_steps",
                                          .dtype = SUBSAE__DTYPE_OPAQUE + 11, .ndim = 1,
                                          .shape = {2}, .data = steps, .bytes = 16};
    ck_assert_str_eq(subsae__safetensors_dtype_name(SUBSAE__DTYPE_OPAQUE + 11), "I64");
    write_weights(dir, "sae_weights.safetensors", v, n);
    harness_write_text(dir, "config.json", config);
}

/* lm-saes's encode in double: x scaled by s_in, pre = x W_E + b_E (no
 * b_D), the gate sees pre x |W_D row| when include_norm. */
static void lm_reference(const struct lm_fixture *f, const float *x, int64_t n, double s_in,
                         const char *act, int64_t k, bool include_norm, double *z)
{
    const int64_t d = f->d, m = f->m;
    double *pre = malloc((size_t)(n * m) * sizeof *pre), *key = malloc((size_t)(n * m) * 8);
    for (int64_t i = 0; i < n; i++)
        for (int64_t c = 0; c < m; c++) {
            double acc = f->b_e[c];
            for (int64_t j = 0; j < d; j++)
                acc += (double)x[i * d + j] * s_in * f->w_e[j * m + c];
            pre[i * m + c] = acc;
            double gate = include_norm ? acc * row_norm(f->w_d + c * d, d) : acc;
            key[i * m + c] = gate > 0 ? gate : 0.0; /* clamp(min=0) before top-k */
            if (!strcmp(act, "jumprelu"))
                z[i * m + c] = gate > exp((double)f->log_thr[c]) ? acc : 0.0;
            else if (!strcmp(act, "relu"))
                z[i * m + c] = acc > 0 ? acc : 0.0;
        }
    if (!strcmp(act, "topk"))
        topk_reference(key, pre, n, m, k, z);
    free(pre);
    free(key);
}

static void lm_case(const char *act, const char *norm, bool include_norm, bool no_bias)
{
    struct lm_fixture f;
    const int64_t d = 8, m = 24, k = 3, n = 25;
    lm_fixture_init(&f, d, m, 40);
    char dir[600], config[1024];
    fresh_dir("lm-saes", dir, sizeof dir);
    /* The keys lm-saes writes (include_norm false is written; true is
     * left to the default). */
    snprintf(config, sizeof config,
             "{\"sae_type\": \"sae\", \"d_model\": %lld, \"expansion_factor\": %g, "
             "\"act_fn\": \"%s\", \"top_k\": %lld, \"norm_activation\": \"%s\", "
             "\"use_decoder_bias\": %s, %s\"jumprelu_threshold_window\": 2.0, "
             "\"hook_point_in\": \"blocks.2.hook_attn_out\", \"hook_point_out\": "
             "\"blocks.2.hook_mlp_out\", \"dtype\": \"torch.float32\"}",
             (long long)d, (double)m / (double)d, act, (long long)k, norm,
             no_bias ? "false" : "true",
             include_norm ? "" : "\"sparsity_include_decoder_norm\": false, ");
    lm_write(dir, &f, config, no_bias, !strcmp(act, "jumprelu"));
    subsae_sae *s;
    ck_assert_ok(subsae_sae_load(dir, &s));
    ck_assert_int_eq(opt(s, SUBSAE_SAE_APPLY_B_DEC_TO_INPUT), 0);
    ck_assert_int_eq(opt(s, SUBSAE_SAE_RANK_BY_DECODER_NORM), include_norm);
    /* From attn_out to mlp_out: a transcoder, its hook points kept as
     * SAELens' names (and written to cfg.json on export). */
    ck_assert_int_eq(opt(s, SUBSAE_SAE_TRANSCODER), 1);
    const char *meta;
    ck_assert_ok(subsae_sae_get_metadata(s, &meta));
    ck_assert_str_eq(meta, "{\"hook_name\":\"blocks.2.hook_attn_out\",\"hook_name_out\":"
                           "\"blocks.2.hook_mlp_out\"}");
    /* Orientation: W_E [d_model, d_sae] is the transposed encoder. */
    float *w = param(s, SUBSAE_PARAM_W_ENC);
    for (int64_t c = 0; c < m; c++)
        for (int64_t j = 0; j < d; j++)
            ck_assert(w[c * d + j] == f.w_e[j * m + c]);
    free(w);
    const bool dataset = !strcmp(norm, "dataset-wise");
    /* The norms are stored as float32 scalars. */
    const double s_in = dataset ? sqrt((double)d) / (double)(float)f.norm_in : 1.0;
    const double s_out = dataset ? sqrt((double)d) / (double)(float)f.norm_out : 1.0;
    double v;
    ck_assert_ok(subsae_sae_get_double(s, SUBSAE_SAE_INPUT_SCALE, &v));
    ck_assert_double_eq_tol(v, s_in, 1e-12);
    float *x = normals(41, n * d, 1.5, 0.1);
    double *want = calloc((size_t)(n * m), sizeof *want);
    lm_reference(&f, x, n, s_in, act, k, include_norm, want);
    float *z = malloc((size_t)(n * m) * 4);
    ck_assert_ok(subsae_sae_encode(s, x, n, d, z, m));
    expect_codes(z, want, n, m, act);
    if (include_norm && !strcmp(act, "topk")) {
        /* The test means something: ranking by pre alone differs. */
        double *plain = calloc((size_t)(n * m), sizeof *plain);
        lm_reference(&f, x, n, s_in, act, k, false, plain);
        bool differs = false;
        for (int64_t i = 0; i < n * m; i++)
            differs |= (plain[i] != 0) != (want[i] != 0);
        ck_assert(differs);
        free(plain);
    }
    /* Decode, raw: (z W_D + b_D) / s_out. */
    float *r = malloc((size_t)(n * d) * 4);
    ck_assert_ok(subsae_sae_decode(s, z, n, m, r, d));
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < d; j++) {
            double acc = no_bias ? 0.0 : f.b_d[j];
            for (int64_t c = 0; c < m; c++)
                acc += want[i * m + c] * f.w_d[c * d + j];
            acc /= s_out;
            ck_assert_double_eq_tol(r[i * d + j], acc, 1e-4 * (1 + fabs(acc)));
        }
    /* Exported to this library's layout and read back: same codes. */
    char out[600];
    harness_tmp_path("lm-saes-export", out, sizeof out);
    ck_assert_ok(subsae_sae_save(s, out));
    subsae_sae *back;
    ck_assert_ok(subsae_sae_load(out, &back));
    ck_assert_int_eq(opt(back, SUBSAE_SAE_TRANSCODER), 1);
    const char *meta_back;
    ck_assert_ok(subsae_sae_get_metadata(back, &meta_back));
    ck_assert_str_eq(meta_back, meta);
    float *z2 = malloc((size_t)(n * m) * 4);
    ck_assert_ok(subsae_sae_encode(back, x, n, d, z2, m));
    expect_codes(z2, want, n, m, "lm-saes exported");
    subsae_sae_free(back);
    subsae_sae_free(s);
    lm_fixture_free(&f);
    free(x);
    free(want);
    free(z);
    free(z2);
    free(r);
}

START_TEST(lm_saes_layout)
{
    lm_case("topk", "inference", true, false);
    lm_case("topk", "dataset-wise", true, false);
    lm_case("topk", "inference", false, true);
    lm_case("jumprelu", "dataset-wise", true, false);
    lm_case("jumprelu", "inference", false, false);
    lm_case("relu", "dataset-wise", true, true);
}
END_TEST

/* ---- orientation by shapes, rejections ----------------------------------------- */

/* A SAELens-named file whose encoder is stored [d_sae, d_in] (rows, as
 * some exporters write it) loads the same model: the shapes decide. */
START_TEST(orientation_by_shapes)
{
    const int64_t d = 6, m = 15;
    subsae_sae *s = random_model(SUBSAE_ACT_TOPK, d, d, m, 8);
    char dir[600], dir2[600];
    harness_tmp_path("orient-a", dir, sizeof dir);
    ck_assert_ok(subsae_sae_save(s, dir));
    float *w_enc = param(s, SUBSAE_PARAM_W_ENC), *b_enc = param(s, SUBSAE_PARAM_B_ENC);
    float *w_dec = param(s, SUBSAE_PARAM_W_DEC), *b_dec = param(s, SUBSAE_PARAM_B_DEC);
    float *w_dec_t = transpose(w_dec, m, d);
    fresh_dir("orient-b", dir2, sizeof dir2);
    struct subsae__tensor_view v[4] = {f32("W_enc", w_enc, 2, m, d), f32("b_enc", b_enc, 1, m, 0),
                                       f32("W_dec", w_dec_t, 2, d, m),
                                       f32("b_dec", b_dec, 1, d, 0)};
    write_weights(dir2, "sae_weights.safetensors", v, 4);
    harness_write_text(dir2, "cfg.json", "{\"architecture\": \"topk\", \"k\": 5, \"d_in\": 6}");
    subsae_sae *a, *b;
    ck_assert_ok(subsae_sae_load(dir, &a));
    ck_assert_ok(subsae_sae_load(dir2, &b));
    for (int p = SUBSAE_PARAM_W_ENC; p <= SUBSAE_PARAM_B_DEC; p++) {
        float *x = param(a, p), *y = param(b, p);
        ck_assert_mem_eq(x, y, (size_t)subsae_sae_param_size(a, p) * 4);
        free(x);
        free(y);
    }
    subsae_sae_free(a);
    subsae_sae_free(b);
    subsae_sae_free(s);
    free(w_enc);
    free(b_enc);
    free(w_dec);
    free(w_dec_t);
    free(b_dec);
}
END_TEST

static void expect_rejected(const char *dir, int status, const char *says)
{
    subsae_sae *s = NULL;
    ck_assert_status(subsae_sae_load(dir, &s), status);
    ck_assert_msg(strstr(subsae_last_error(), says) != NULL, "message '%s' lacks '%s'",
                  subsae_last_error(), says);
    ck_assert_ptr_null(s);
}

START_TEST(mismatched_shapes_rejected)
{
    const int64_t d = 6, m = 12;
    float *a = normals(1, (m + 1) * (d + 1), 0.3, 0.0);
    char dir[600];
    /* SAELens: W_dec with d_sae + 1 rows. */
    fresh_dir("bad-saelens", dir, sizeof dir);
    struct subsae__tensor_view v[4] = {f32("W_enc", a, 2, d, m), f32("b_enc", a, 1, m, 0),
                                       f32("W_dec", a, 2, m + 1, d), f32("b_dec", a, 1, d, 0)};
    write_weights(dir, "sae_weights.safetensors", v, 4);
    harness_write_text(dir, "cfg.json", "{\"architecture\": \"topk\", \"k\": 2}");
    expect_rejected(dir, SUBSAE_E_FORMAT, "'W_dec' has shape [13, 6]: neither dimension is "
                                          "d_sae = 12 (the length of 'b_enc')");
    ck_assert_int_eq(subsae_last_error_reason(), SUBSAE_REASON_DIM_MISMATCH);
    /* sparsify: b_dec does not match the decoder's width. */
    fresh_dir("bad-sparsify", dir, sizeof dir);
    struct subsae__tensor_view w[4] = {f32("encoder.weight", a, 2, m, d),
                                       f32("encoder.bias", a, 1, m, 0), f32("W_dec", a, 2, m, d),
                                       f32("b_dec", a, 1, d + 1, 0)};
    write_weights(dir, "sae.safetensors", w, 4);
    harness_write_text(dir, "cfg.json", "{\"k\": 2, \"num_latents\": 12, \"d_in\": 6}");
    expect_rejected(dir, SUBSAE_E_FORMAT, "'b_dec' has shape [7], expected [6]");
    /* sparsify: cfg.json's num_latents against the tensors. */
    w[3] = f32("b_dec", a, 1, d, 0);
    write_weights(dir, "sae.safetensors", w, 4);
    harness_write_text(dir, "cfg.json", "{\"k\": 2, \"num_latents\": 16, \"d_in\": 6}");
    expect_rejected(dir, SUBSAE_E_FORMAT, "num_latents 16");
    /* lm-saes: W_D wider than b_D, a 3-D encoder. */
    fresh_dir("bad-lm", dir, sizeof dir);
    struct subsae__tensor_view l[4] = {f32("W_E", a, 2, d, m), f32("b_E", a, 1, m, 0),
                                       f32("W_D", a, 2, m, d + 1), f32("b_D", a, 1, d, 0)};
    write_weights(dir, "sae_weights.safetensors", l, 4);
    harness_write_text(dir, "config.json",
               "{\"d_model\": 6, \"act_fn\": \"relu\", \"norm_activation\": \"inference\"}");
    expect_rejected(dir, SUBSAE_E_FORMAT, "'b_D' has shape [6], expected [7]");
    l[2] = f32("W_D", a, 2, m, d);
    l[0].ndim = 3;
    l[0].shape[0] = 1;
    l[0].shape[1] = d;
    l[0].shape[2] = m;
    write_weights(dir, "sae_weights.safetensors", l, 4);
    expect_rejected(dir, SUBSAE_E_FORMAT, "a weight matrix has 2 dimensions");
    l[0] = f32("W_E", a, 2, d, m);
    /* lm-saes variants that cannot be represented. */
    write_weights(dir, "sae_weights.safetensors", l, 4);
    harness_write_text(dir, "config.json",
               "{\"d_model\": 6, \"act_fn\": \"batchtopk\", \"norm_activation\": \"inference\"}");
    expect_rejected(dir, SUBSAE_E_UNSUPPORTED, "batchtopk");
    harness_write_text(dir, "config.json",
               "{\"d_model\": 6, \"act_fn\": \"relu\", \"norm_activation\": \"token-wise\"}");
    expect_rejected(dir, SUBSAE_E_UNSUPPORTED, "token-wise");
    harness_write_text(dir, "config.json", "{\"d_model\": 6, \"act_fn\": \"relu\"}");
    expect_rejected(dir, SUBSAE_E_FORMAT, "dataset_average_activation_norm");
    harness_write_text(dir, "config.json",
               "{\"sae_type\": \"crosscoder\", \"d_model\": 6, \"act_fn\": \"relu\"}");
    expect_rejected(dir, SUBSAE_E_UNSUPPORTED, "crosscoder");
    /* Weights of no known layout. */
    fresh_dir("bad-unknown", dir, sizeof dir);
    struct subsae__tensor_view u[1] = {f32("weights", a, 2, m, d)};
    write_weights(dir, "sae.safetensors", u, 1);
    expect_rejected(dir, SUBSAE_E_FORMAT, "no weights of a known layout");
    free(a);
}
END_TEST

SUBSAE_SUITE(interop)
{
    Suite *s = suite_create("interop");
    TCase *tc = harness_case(s, "interop", 60);
    tcase_add_test(tc, round_trip_every_activation);
    tcase_add_test(tc, export_thresholds);
    tcase_add_test(tc, sparsify_layout);
    tcase_add_test(tc, lm_saes_layout);
    tcase_add_test(tc, orientation_by_shapes);
    tcase_add_test(tc, mismatched_shapes_rejected);
    return s;
}
