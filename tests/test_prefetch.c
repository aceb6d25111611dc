/* Fit's input pipeline (lib/prefetch.c): reading the next batch in the
 * background gives the same bits, the same iterator position (after the
 * fit, after a cancel, after a failed read) and the same errors on the
 * same step as reading each batch when its step starts. */
#include "harness.h"
#include "prefetch.h"
#include "trainer_types.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Make value 3 of row `row` of a float16 .npy of width d infinite
 * (the writer refuses non-finite values). */
static void poison(const char *path, int64_t row, int64_t d)
{
    FILE *f = fopen(path, "r+b");
    ck_assert_ptr_nonnull(f);
    unsigned char h[10];
    ck_assert_int_eq(fread(h, 1, 10, f), 10);
    const long data = 10 + (long)(h[8] | h[9] << 8);
    ck_assert_int_eq(fseek(f, data + (long)(row * d + 3) * 2, SEEK_SET), 0);
    ck_assert_int_eq(fwrite("\x00\x7c", 1, 2, f), 2); /* +inf */
    ck_assert_int_eq(fclose(f), 0);
}

/* n x d rows saved as a float16 .npy (the out-of-core case: pread and
 * widening), row `bad` (if >= 0) made non-finite; opened from the file. */
static subsae_buffer *f16_file(const char *name, int64_t n, int64_t d, int64_t bad)
{
    float *x = harness_normal_rows(5, n, d, 0.1);
    subsae_buffer *mem = harness_wrap_copy(x, n, d), *buf;
    char path[512];
    harness_tmp_path(name, path, sizeof path);
    ck_assert_ok(subsae_buffer_save_npy(mem, path, SUBSAE_DTYPE_F16));
    if (bad >= 0)
        poison(path, bad, d);
    ck_assert_ok(subsae_buffer_open(path, NULL, &buf));
    subsae_buffer_free(mem);
    free(x);
    return buf;
}

static subsae_trainer *trainer(const subsae_buffer *b, const subsae_buffer *target)
{
    subsae_trainer *t;
    ck_assert_ok(subsae_trainer_create(&t));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_FEATURES, 40));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_K, 4));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_INIT, SUBSAE_INIT_RANDOM));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_BATCH, 64));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_SEED, 23));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_THREADS, 2));
    ck_assert_ok(subsae_trainer_init(t, b, target));
    return t;
}

/* What a fit left behind: its status and message, the step, where the
 * iterator stands, the weights. */
struct outcome {
    int rc;
    char message[1024];
    int64_t step, epoch, position;
    float *w_enc, *w_dec;
    int64_t count;
};

static int cancel_at_5(int event, const char *phase, int64_t done, int64_t total,
                       const char *message, void *user)
{
    (void)event, (void)phase, (void)done, (void)total, (void)message;
    return ++*(int *)user == 5;
}

/* Init reads every row: it is given clean rows of the same width. */
static const subsae_buffer *clean;

static struct outcome fit(bool ahead, const subsae_buffer *b, const subsae_buffer *target,
                          int64_t tokens, bool cancel)
{
    subsae__prefetch_enable(ahead);
    subsae_trainer *t = trainer(target ? b : clean, target);
    int calls = 0;
    if (cancel)
        ck_assert_ok(subsae_trainer_set_callback(t, cancel_at_5, &calls));
    struct outcome o = {.rc = subsae_trainer_fit(t, b, target, tokens)};
    snprintf(o.message, sizeof o.message, "%s", o.rc ? subsae_last_error() : "");
    subsae__prefetch_enable(true);
    o.step = t->step;
    ck_assert_ok(subsae_batches_tell(t->batches, &o.epoch, &o.position));
    const subsae_sae *s = subsae_trainer_sae(t);
    o.count = subsae_sae_param_size(s, SUBSAE_PARAM_W_ENC);
    o.w_enc = malloc((size_t)o.count * 4);
    o.w_dec = malloc((size_t)o.count * 4);
    ck_assert_ok(subsae_sae_get_param(s, SUBSAE_PARAM_W_ENC, o.w_enc, o.count));
    ck_assert_ok(subsae_sae_get_param(s, SUBSAE_PARAM_W_DEC, o.w_dec, o.count));
    subsae_trainer_free(t);
    return o;
}

/* The pipeline on and off give the same outcome in every respect. */
static void expect_same(const subsae_buffer *b, const subsae_buffer *target, int64_t tokens,
                        bool cancel, int rc)
{
    struct outcome on = fit(true, b, target, tokens, cancel);
    struct outcome off = fit(false, b, target, tokens, cancel);
    ck_assert_int_eq(on.rc, rc);
    ck_assert_int_eq(on.rc, off.rc);
    ck_assert_str_eq(on.message, off.message);
    ck_assert_int_eq(on.step, off.step);
    ck_assert_int_eq(on.epoch, off.epoch);
    ck_assert_int_eq(on.position, off.position);
    ck_assert_mem_eq(on.w_enc, off.w_enc, (size_t)on.count * 4);
    ck_assert_mem_eq(on.w_dec, off.w_dec, (size_t)on.count * 4);
    free(on.w_enc);
    free(on.w_dec);
    free(off.w_enc);
    free(off.w_dec);
}

START_TEST(same_bits_and_position)
{
    subsae_buffer *b = f16_file("pipeline.npy", 1000, 16, -1);
    clean = b;
    expect_same(b, NULL, 40 * 64, false, SUBSAE_OK); /* crosses epochs */
    expect_same(b, NULL, 3 * 64 + 5, false, SUBSAE_OK);
    subsae_buffer *target = f16_file("pipeline_target.npy", 1000, 16, -1);
    expect_same(b, target, 20 * 64, false, SUBSAE_OK);
    subsae_buffer_free(target);
    subsae_buffer_free(b);
}
END_TEST

START_TEST(cancel_leaves_the_read_ahead_unconsumed)
{
    subsae_buffer *b = f16_file("pipeline_cancel.npy", 1000, 16, -1);
    clean = b;
    expect_same(b, NULL, 40 * 64, true, SUBSAE_E_CANCELLED);
    subsae_buffer_free(b);
}
END_TEST

START_TEST(read_errors_surface_on_their_step)
{
    subsae_buffer *c = f16_file("pipeline_clean.npy", 1000, 16, -1);
    clean = c;
    /* A non-finite row: the step whose batch holds it fails, same message. */
    subsae_buffer *b = f16_file("pipeline_nan.npy", 1000, 16, 700);
    expect_same(b, NULL, 40 * 64, false, SUBSAE_E_NONFINITE);
    subsae_buffer_free(b);
    /* The file cut short under the mapping: pread fails on a later batch. */
    b = f16_file("pipeline_cut.npy", 1000, 16, -1);
    char path[512];
    harness_tmp_path("pipeline_cut.npy", path, sizeof path);
    ck_assert_int_eq(truncate(path, 128 + 600 * 16 * 2), 0);
    expect_same(b, NULL, 40 * 64, false, SUBSAE_E_IO);
    subsae_buffer_free(b);
    clean = NULL;
    subsae_buffer_free(c);
}
END_TEST

SUBSAE_SUITE(prefetch)
{
    Suite *s = suite_create("prefetch");
    TCase *tc = harness_case(s, "pipeline", 60);
    tcase_add_test(tc, same_bits_and_position);
    tcase_add_test(tc, cancel_leaves_the_read_ahead_unconsumed);
    tcase_add_test(tc, read_errors_surface_on_their_step);
    return s;
}
