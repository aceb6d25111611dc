/* What a run records about itself, in the library: caller metadata in
 * cfg.json (SAELens' hook_name, model_name, metadata) and in
 * checkpoint.json, kept through save/load/clone/resume; the transcoder
 * flag (set by the trainer, saved, restored, SAELens' transcoder
 * architectures); the learning rate in effect in checkpoint.json; buffer
 * fingerprints; feature densities and SAELens' sparsity.safetensors; the
 * last step's learning rate and loss parts. */
#include "harness.h"
#include "internal.h"
#include "io.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


static void write_json(const char *dir, const char *name, json_t *j)
{
    char path[800];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    ck_assert_int_eq(json_dump_file(j, path, JSON_INDENT(1)), 0);
}

static int64_t sae_int(const subsae_sae *s, int option)
{
    int64_t v;
    ck_assert_ok(subsae_sae_get_int(s, option, &v));
    return v;
}

/* A small trained SAE or transcoder on Gaussian rows. */
static subsae_trainer *trained(int activation, bool transcoder, subsae_buffer **in,
                               subsae_buffer **out)
{
    float *x = harness_normal_rows(3, 512, 8, 0.5);
    *in = harness_wrap_copy(x, 512, 8);
    free(x);
    *out = NULL;
    if (transcoder) {
        float *y = harness_normal_rows(4, 512, 8, -0.25);
        *out = harness_wrap_copy(y, 512, 8);
        free(y);
    }
    subsae_trainer *t;
    ck_assert_ok(subsae_trainer_create(&t));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_FEATURES, 32));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_K, 4));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_ACTIVATION, activation));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_BATCH, 64));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_WARMUP_STEPS, 10));
    ck_assert_ok(subsae_trainer_set_metadata(t, "{\"hook_name\": \"blocks.1.hook_mlp_in\", "
                                                "\"run\": {\"id\": \"r1\"}}"));
    ck_assert_ok(subsae_trainer_init(t, *in, *out));
    ck_assert_ok(subsae_trainer_fit(t, *in, *out, 256));
    return t;
}

START_TEST(metadata_travels_with_the_model)
{
    subsae_sae *s;
    ck_assert_ok(subsae_sae_create(6, 6, 12, SUBSAE_ACT_TOPK, &s));
    const char *meta;
    ck_assert_ok(subsae_sae_get_metadata(s, &meta));
    ck_assert_str_eq(meta, "{}");
    /* Refused: not an object, a member the library writes itself; the
     * metadata is unchanged. */
    ck_assert_status(subsae_sae_set_metadata(s, "[1, 2]"), SUBSAE_E_INVALID);
    ck_assert_status(subsae_sae_set_metadata(s, "{\"hook_name\": "), SUBSAE_E_INVALID);
    ck_assert_status(subsae_sae_set_metadata(s, "{\"d_in\": 7}"), SUBSAE_E_INVALID);
    ck_assert_msg(strstr(subsae_last_error(), "'d_in'"), "%s", subsae_last_error());
    ck_assert_ok(subsae_sae_get_metadata(s, &meta));
    ck_assert_str_eq(meta, "{}");
    ck_assert_ok(subsae_sae_set_metadata(
        s, "{\"hook_name\": \"blocks.2.hook_attn_out\", \"model_name\": \"stories260K\", "
           "\"metadata\": {\"hook_name\": \"blocks.2.hook_attn_out\", \"context_size\": 256}}"));
    /* Saved into cfg.json at the top level, next to the library's own. */
    char dir[600];
    harness_tmp_path("meta-sae", dir, sizeof dir);
    ck_assert_ok(subsae_sae_save(s, dir));
    json_t *cfg = harness_json_at(dir, "cfg.json");
    ck_assert_str_eq(json_string_value(json_object_get(cfg, "hook_name")),
                     "blocks.2.hook_attn_out");
    ck_assert_str_eq(json_string_value(json_object_get(cfg, "model_name")), "stories260K");
    ck_assert_int_eq(json_integer_value(json_object_get(
                         json_object_get(cfg, "metadata"), "context_size")),
                     256);
    ck_assert_int_eq(json_integer_value(json_object_get(cfg, "d_in")), 6);
    ck_assert(json_is_false(json_object_get(cfg, "transcoder")));
    /* Loaded back: the caller's members, none of the library's. */
    subsae_sae *back, *copy;
    ck_assert_ok(subsae_sae_load(dir, &back));
    ck_assert_ok(subsae_sae_get_metadata(back, &meta));
    json_t *m = json_loads(meta, 0, NULL);
    ck_assert_ptr_nonnull(m);
    ck_assert_int_eq(json_object_size(m), 3);
    ck_assert_ptr_null(json_object_get(m, "architecture"));
    ck_assert_str_eq(json_string_value(json_object_get(m, "model_name")), "stories260K");
    json_decref(m);
    ck_assert_ok(subsae_sae_clone(back, &copy));
    const char *copied;
    ck_assert_ok(subsae_sae_get_metadata(copy, &copied));
    ck_assert_str_eq(copied, meta);
    ck_assert_ok(subsae_sae_set_metadata(copy, NULL));
    ck_assert_ok(subsae_sae_get_metadata(copy, &copied));
    ck_assert_str_eq(copied, "{}");
    json_decref(cfg);
    subsae_sae_free(s);
    subsae_sae_free(back);
    subsae_sae_free(copy);
}
END_TEST

START_TEST(transcoder_flag_is_saved_and_restored)
{
    subsae_sae *sq, *wide;
    ck_assert_ok(subsae_sae_create(6, 6, 12, SUBSAE_ACT_RELU, &sq));
    ck_assert_ok(subsae_sae_create(6, 4, 12, SUBSAE_ACT_TOPK, &wide));
    ck_assert_int_eq(sae_int(sq, SUBSAE_SAE_TRANSCODER), 0);
    ck_assert_int_eq(sae_int(wide, SUBSAE_SAE_TRANSCODER), 1);
    ck_assert_status(subsae_sae_set_int(wide, SUBSAE_SAE_TRANSCODER, 0), SUBSAE_E_INVALID);
    ck_assert_status(subsae_sae_set_int(sq, SUBSAE_SAE_TRANSCODER, 2), SUBSAE_E_INVALID);
    /* A square ReLU transcoder (mlp_in -> mlp_out of one width): SAELens'
     * own "transcoder" architecture (b_dec not subtracted). */
    ck_assert_ok(subsae_sae_set_int(sq, SUBSAE_SAE_TRANSCODER, 1));
    ck_assert_ok(subsae_sae_set_int(sq, SUBSAE_SAE_APPLY_B_DEC_TO_INPUT, 0));
    char dir[600];
    harness_tmp_path("tc", dir, sizeof dir);
    ck_assert_ok(subsae_sae_save(sq, dir));
    json_t *cfg = harness_json_at(dir, "cfg.json");
    ck_assert_str_eq(json_string_value(json_object_get(cfg, "architecture")), "transcoder");
    ck_assert(json_is_true(json_object_get(cfg, "transcoder")));
    ck_assert_int_eq(json_integer_value(json_object_get(cfg, "d_out")), 6);
    subsae_sae *back;
    ck_assert_ok(subsae_sae_load(dir, &back));
    ck_assert_int_eq(sae_int(back, SUBSAE_SAE_TRANSCODER), 1);
    ck_assert_int_eq(sae_int(back, SUBSAE_SAE_ACTIVATION), SUBSAE_ACT_RELU);
    ck_assert_int_eq(sae_int(back, SUBSAE_SAE_APPLY_B_DEC_TO_INPUT), 0);
    subsae_sae_free(back);
    /* The same directory as SAELens writes it (no "transcoder" member):
     * the architecture says it. */
    json_object_del(cfg, "transcoder");
    write_json(dir, "cfg.json", cfg);
    ck_assert_ok(subsae_sae_load(dir, &back));
    ck_assert_int_eq(sae_int(back, SUBSAE_SAE_TRANSCODER), 1);
    subsae_sae_free(back);
    /* A skip transcoder without its skip matrix is refused by name. */
    json_object_set_new(cfg, "architecture", json_string("skip_transcoder"));
    write_json(dir, "cfg.json", cfg);
    ck_assert_status(subsae_sae_load(dir, &back), SUBSAE_E_FORMAT);
    ck_assert_msg(strstr(subsae_last_error(), "W_skip"), "%s", subsae_last_error());
    json_decref(cfg);
    /* A plain SAE stays one. */
    ck_assert_ok(subsae_sae_set_int(sq, SUBSAE_SAE_TRANSCODER, 0));
    ck_assert_ok(subsae_sae_set_int(sq, SUBSAE_SAE_APPLY_B_DEC_TO_INPUT, 1));
    ck_assert_ok(subsae_sae_save(sq, dir));
    ck_assert_ok(subsae_sae_load(dir, &back));
    ck_assert_int_eq(sae_int(back, SUBSAE_SAE_TRANSCODER), 0);
    subsae_sae_free(back);
    subsae_sae_free(sq);
    subsae_sae_free(wide);
}
END_TEST

/* The trainer marks a transcoder, hands its metadata to the model, and a
 * checkpoint keeps both, with the learning rate in effect. */
START_TEST(trainer_records_the_run)
{
    for (int tc = 0; tc < 2; tc++) {
        subsae_buffer *in, *out;
        subsae_trainer *t = trained(SUBSAE_ACT_TOPK, tc, &in, &out);
        const subsae_sae *s = subsae_trainer_sae(t);
        ck_assert_int_eq(sae_int(s, SUBSAE_SAE_TRANSCODER), tc);
        const char *meta, *run;
        ck_assert_ok(subsae_sae_get_metadata(s, &meta));
        ck_assert_ok(subsae_trainer_get_metadata(t, &run));
        ck_assert_str_eq(meta, run);
        ck_assert_msg(strstr(meta, "\"r1\""), "%s", meta);
        char dir[600];
        harness_tmp_path(tc ? "tc-ckpt" : "sae-ckpt", dir, sizeof dir);
        ck_assert_ok(subsae_trainer_save_checkpoint(t, dir));
        json_t *ck = harness_json_at(dir, "checkpoint.json");
        /* "lr": the rate in effect for the default 0, 2e-4 / sqrt(32 / 16384). */
        ck_assert_double_eq_tol(
            json_real_value(json_object_get(json_object_get(ck, "options"), "lr")),
            2e-4 / sqrt(32.0 / 16384.0), 1e-15);
        ck_assert_str_eq(json_string_value(json_object_get(
                             json_object_get(json_object_get(ck, "metadata"), "run"), "id")),
                         "r1");
        json_decref(ck);
        subsae_trainer *back;
        ck_assert_ok(subsae_trainer_load_checkpoint(dir, &back));
        ck_assert_ok(subsae_trainer_get_metadata(back, &run));
        ck_assert_str_eq(run, meta);
        ck_assert_int_eq(sae_int(subsae_trainer_sae(back), SUBSAE_SAE_TRANSCODER), tc);
        ck_assert_ok(subsae_sae_get_metadata(subsae_trainer_sae(back), &run));
        ck_assert_str_eq(run, meta);
        /* Metadata set after init reaches the model too. */
        ck_assert_ok(subsae_trainer_set_metadata(back, "{\"model_name\": \"m\"}"));
        ck_assert_ok(subsae_sae_get_metadata(subsae_trainer_sae(back), &run));
        ck_assert_str_eq(run, "{\"model_name\":\"m\"}");
        ck_assert_status(subsae_trainer_set_metadata(back, "{\"k\": 3}"), SUBSAE_E_INVALID);
        ck_assert_ok(subsae_sae_get_metadata(subsae_trainer_sae(back), &run));
        ck_assert_str_eq(run, "{\"model_name\":\"m\"}");
        /* A checkpoint of 0.1.0 (no metadata member) still loads. */
        subsae_trainer_free(back);
        json_t *old = harness_json_at(dir, "checkpoint.json");
        json_object_del(old, "metadata");
        write_json(dir, "checkpoint.json", old);
        json_decref(old);
        ck_assert_ok(subsae_trainer_load_checkpoint(dir, &back));
        ck_assert_ok(subsae_trainer_get_metadata(back, &run));
        ck_assert_str_eq(run, "{}");
        subsae_trainer_free(back);
        subsae_trainer_free(t);
        subsae_buffer_free(in);
        subsae_buffer_free(out);
    }
}
END_TEST

START_TEST(fingerprints_tell_data_apart)
{
    float *x = harness_normal_rows(11, 1000, 16, 0.0);
    subsae_buffer *a = harness_wrap_copy(x, 1000, 16), *b = harness_wrap_copy(x, 1000, 16);
    uint64_t fa, fb;
    ck_assert_ok(subsae_buffer_fingerprint(a, 64, &fa));
    ck_assert_ok(subsae_buffer_fingerprint(b, 64, &fb));
    ck_assert_uint_eq(fa, fb);
    /* The last row is always sampled; a row between samples is not. */
    x[999 * 16 + 3] += 1.0f;
    subsae_buffer *c = harness_wrap_copy(x, 1000, 16);
    ck_assert_ok(subsae_buffer_fingerprint(c, 64, &fb));
    ck_assert_uint_ne(fa, fb);
    /* Fewer rows, or the same values at another width. */
    subsae_buffer *d = harness_wrap_copy(x, 999, 16), *e = harness_wrap_copy(x, 2000, 8);
    uint64_t fd, fe;
    ck_assert_ok(subsae_buffer_fingerprint(d, 64, &fd));
    ck_assert_ok(subsae_buffer_fingerprint(e, 64, &fe));
    ck_assert_uint_ne(fd, fa);
    ck_assert_uint_ne(fe, fa);
    /* The same file read twice, and through a view. */
    char path[600];
    harness_tmp_path("fp.npy", path, sizeof path);
    ck_assert_ok(subsae_buffer_save_npy(a, path, SUBSAE_DTYPE_F32));
    subsae_buffer *f, *v;
    ck_assert_ok(subsae_buffer_open(path, NULL, &f));
    ck_assert_ok(subsae_buffer_fingerprint(f, 64, &fb));
    ck_assert_uint_eq(fa, fb);
    ck_assert_ok(subsae_buffer_view(f, 0, 1000, &v));
    ck_assert_ok(subsae_buffer_fingerprint(v, 64, &fb));
    ck_assert_uint_eq(fa, fb);
    ck_assert_status(subsae_buffer_fingerprint(f, 0, &fb), SUBSAE_E_INVALID);
    subsae_buffer_free(v);
    subsae_buffer_free(f);
    subsae_buffer_free(a);
    subsae_buffer_free(b);
    subsae_buffer_free(c);
    subsae_buffer_free(d);
    subsae_buffer_free(e);
    free(x);
}
END_TEST

/* Densities agree with the metrics that summarise them, and
 * sparsity.safetensors holds SAELens' log10(density + 1e-10). */
START_TEST(densities_and_sparsity_file)
{
    subsae_buffer *in, *out;
    subsae_trainer *t = trained(SUBSAE_ACT_TOPK, false, &in, &out);
    const subsae_sae *s = subsae_trainer_sae(t);
    double m[SUBSAE_METRIC_COUNT], density[32];
    ck_assert_ok(subsae_sae_evaluate_density(s, in, NULL, m, SUBSAE_METRIC_COUNT, density, 32));
    double l0 = 0.0;
    int zero = 0, dense = 0;
    for (int f = 0; f < 32; f++) {
        ck_assert(density[f] >= 0.0 && density[f] <= 1.0);
        l0 += density[f];
        zero += density[f] == 0.0;
        dense += density[f] > 0.1;
    }
    ck_assert_double_eq_tol(l0, m[SUBSAE_METRIC_L0], 1e-12);
    ck_assert_double_eq(zero / 32.0, m[SUBSAE_METRIC_ZERO_FREQUENCY_FRACTION]);
    ck_assert_double_eq(dense / 32.0, m[SUBSAE_METRIC_DENSE_FRACTION]);
    ck_assert_status(subsae_sae_evaluate_density(s, in, NULL, m, 0, density, 31),
                     SUBSAE_E_INVALID);
    /* The trainer's window: one epoch of 512 tokens, k = 4 per token. */
    double window[32], window_l0 = 0.0;
    ck_assert_ok(subsae_trainer_feature_density(t, window, 32));
    ck_assert_ok(subsae_trainer_metrics(t, m, SUBSAE_METRIC_COUNT));
    for (int f = 0; f < 32; f++)
        window_l0 += window[f];
    ck_assert_double_eq_tol(window_l0, m[SUBSAE_METRIC_L0], 1e-12);
    ck_assert_status(subsae_trainer_feature_density(t, window, 8), SUBSAE_E_INVALID);

    char path[600];
    harness_tmp_path("sparsity.safetensors", path, sizeof path);
    ck_assert_ok(subsae_sae_save_sparsity(s, path, density, 32));
    subsae__safetensors *st;
    ck_assert_ok(subsae__safetensors_open(path, &st));
    ck_assert_int_eq(subsae__safetensors_count(st), 1);
    const struct subsae__tensor_view *v = subsae__safetensors_find(st, "sparsity");
    ck_assert_ptr_nonnull(v);
    ck_assert_int_eq(v->dtype, SUBSAE_DTYPE_F32);
    ck_assert_int_eq(v->ndim, 1);
    ck_assert_int_eq(v->shape[0], 32);
    const float *lg = v->data;
    for (int f = 0; f < 32; f++)
        ck_assert_float_eq(lg[f], (float)log10(density[f] + 1e-10));
    subsae__safetensors_close(st);
    density[3] = 1.5;
    ck_assert_status(subsae_sae_save_sparsity(s, path, density, 32), SUBSAE_E_INVALID);
    ck_assert_status(subsae_sae_save_sparsity(s, path, density, 16), SUBSAE_E_INVALID);
    subsae_trainer_free(t);
    subsae_buffer_free(in);
}
END_TEST

/* The last step's batch metrics are those of the model before the step on
 * that batch, as subsae_sae_evaluate computes them; NaN before any step. */
START_TEST(last_step_batch_metrics)
{
    const int acts[3] = {SUBSAE_ACT_TOPK, SUBSAE_ACT_RELU, SUBSAE_ACT_TOPK};
    for (int a = 0; a < 3; a++) {
        const bool transcoder = a == 2;
        subsae_buffer *in, *out;
        subsae_trainer *t = trained(acts[a], transcoder, &in, &out); /* 4 steps of 64 */
        float x[64 * 8], y[64 * 8];
        ck_assert_ok(subsae_buffer_read(in, 100, 64, x, 8));
        if (transcoder)
            ck_assert_ok(subsae_buffer_read(out, 100, 64, y, 8));
        subsae_sae *before;
        ck_assert_ok(subsae_sae_clone(subsae_trainer_sae(t), &before));
        ck_assert_ok(subsae_trainer_step(t, x, 8, transcoder ? y : NULL, 8, 64));
        subsae_buffer *bx = harness_wrap_copy(x, 64, 8);
        subsae_buffer *by = transcoder ? harness_wrap_copy(y, 64, 8) : NULL;
        double m[SUBSAE_METRIC_COUNT], e[SUBSAE_METRIC_COUNT];
        ck_assert_ok(subsae_trainer_metrics(t, m, SUBSAE_METRIC_COUNT));
        ck_assert_ok(subsae_sae_evaluate(before, bx, by, e, SUBSAE_METRIC_COUNT));
        ck_assert_double_eq_tol(m[SUBSAE_METRIC_STEP_MSE], e[SUBSAE_METRIC_MSE],
                                1e-5 * e[SUBSAE_METRIC_MSE]);
        ck_assert_double_eq_tol(m[SUBSAE_METRIC_STEP_EXPLAINED_VARIANCE],
                                e[SUBSAE_METRIC_EXPLAINED_VARIANCE], 1e-5);
        ck_assert_double_eq_tol(m[SUBSAE_METRIC_STEP_L0], e[SUBSAE_METRIC_L0], 1.0 / 64);
        /* Not the window's: it pools all 5 steps. */
        ck_assert_double_ne(m[SUBSAE_METRIC_STEP_MSE], m[SUBSAE_METRIC_MSE]);
        ck_assert(isnan(e[SUBSAE_METRIC_STEP_MSE])); /* evaluation has no step */
        subsae_sae_free(before);
        subsae_buffer_free(bx);
        subsae_buffer_free(by);
        subsae_trainer_free(t);
        subsae_buffer_free(in);
        subsae_buffer_free(out);
    }
    subsae_trainer *t;
    subsae_buffer *in = harness_wrap_copy((float[16]){1, 2, 3, 4, 5, 6, 7, 8, 8, 7, 6, 5, 4,
                                                      3, 2, 1},
                                          2, 8);
    ck_assert_ok(subsae_trainer_create(&t));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_FEATURES, 4));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_K, 1));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_BATCH, 2));
    ck_assert_ok(subsae_trainer_init(t, in, NULL));
    double m[SUBSAE_METRIC_COUNT];
    ck_assert_ok(subsae_trainer_metrics(t, m, SUBSAE_METRIC_COUNT));
    for (int i = SUBSAE_METRIC_STEP_MSE; i <= SUBSAE_METRIC_STEP_L0; i++)
        ck_assert_msg(isnan(m[i]), "metric %d is %g before any step", i, m[i]);
    subsae_trainer_free(t);
    subsae_buffer_free(in);
}
END_TEST

/* The last step's learning rate (warm-up of 10 steps) and loss parts. */
START_TEST(last_step_rate_and_loss_parts)
{
    subsae_buffer *in, *out;
    double m[SUBSAE_METRIC_COUNT];
    const int acts[2] = {SUBSAE_ACT_TOPK, SUBSAE_ACT_RELU};
    for (int a = 0; a < 2; a++) {
        subsae_trainer *t = trained(acts[a], false, &in, &out); /* 4 steps of 64 */
        ck_assert_ok(subsae_trainer_metrics(t, m, SUBSAE_METRIC_COUNT));
        ck_assert_double_eq(m[SUBSAE_METRIC_STEPS], 4);
        const double lr = 2e-4 / sqrt(32.0 / 16384.0);
        ck_assert_double_eq_tol(m[SUBSAE_METRIC_LR], lr * 4.0 / 10.0, 1e-15);
        ck_assert_double_eq_tol(m[SUBSAE_METRIC_LOSS_MSE] + m[SUBSAE_METRIC_LOSS_SPARSITY] +
                                    m[SUBSAE_METRIC_LOSS_AUX],
                                m[SUBSAE_METRIC_LOSS], 1e-12 * m[SUBSAE_METRIC_LOSS]);
        ck_assert_double_eq(m[SUBSAE_METRIC_LOSS_AUX], 0.0);
        if (acts[a] == SUBSAE_ACT_RELU)
            ck_assert_double_gt(m[SUBSAE_METRIC_LOSS_SPARSITY], 0.0);
        else
            ck_assert_double_eq(m[SUBSAE_METRIC_LOSS_SPARSITY], 0.0);
        subsae_trainer_free(t);
        subsae_buffer_free(in);
    }
}
END_TEST

SUBSAE_SUITE(run_records)
{
    Suite *s = suite_create("run_records");
    TCase *tc = harness_case(s, "records", 30);
    tcase_add_test(tc, metadata_travels_with_the_model);
    tcase_add_test(tc, transcoder_flag_is_saved_and_restored);
    tcase_add_test(tc, trainer_records_the_run);
    tcase_add_test(tc, fingerprints_tell_data_apart);
    tcase_add_test(tc, densities_and_sparsity_file);
    tcase_add_test(tc, last_step_rate_and_loss_parts);
    tcase_add_test(tc, last_step_batch_metrics);
    return s;
}
