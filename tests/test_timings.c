/* Phase timings of the trainer (subsae_trainer_timings): NaN before any
 * step and after a reset, positive per-step means after steps, the phases
 * within the whole step, the read phase only under fit, failed steps not
 * counted, names and argument checks. Values are wall times: the test
 * asserts their structure, never a speed. */
#include "harness.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static float *rows_of(int64_t n, int64_t d)
{
    float *x = malloc((size_t)(n * d) * sizeof *x);
    for (int64_t i = 0; i < n * d; i++)
        x[i] = (float)((i * 7919) % 1009) / 500.0f - 1.0f + (float)(i % d) * 0.01f;
    return x;
}

START_TEST(timings_per_step)
{
    const int64_t n = 2048, d = 16, batch = 256;
    float *x = rows_of(n, d);
    subsae_buffer *buf;
    ck_assert_ok(subsae_buffer_wrap(x, SUBSAE_DTYPE_F32, n, d, d, SUBSAE_BORROW, &buf));
    subsae_trainer *t;
    ck_assert_ok(subsae_trainer_create(&t));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_FEATURES, 256));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_K, 4));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_BATCH, batch));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_INIT, SUBSAE_INIT_RANDOM));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_INIT_SAMPLE, 512));

    double s[SUBSAE_PHASE_COUNT + 2];
    ck_assert_ok(subsae_trainer_timings(t, s, SUBSAE_PHASE_COUNT + 2));
    for (int i = 0; i < SUBSAE_PHASE_COUNT + 2; i++)
        ck_assert(isnan(s[i])); /* no step yet; past the count: NaN */
    ck_assert_ok(subsae_trainer_init(t, buf, NULL));

    for (int step = 0; step < 3; step++)
        ck_assert_ok(subsae_trainer_step(t, x + step * batch * d, d, NULL, 0, batch));
    ck_assert_ok(subsae_trainer_timings(t, s, SUBSAE_PHASE_COUNT + 2));
    double parts = 0.0;
    for (int i = 0; i < SUBSAE_PHASE_COUNT; i++) {
        ck_assert_msg(s[i] >= 0.0 && isfinite(s[i]), "phase %s: %g", subsae_phase_name(i), s[i]);
        if (i != SUBSAE_PHASE_STEP)
            parts += s[i];
    }
    ck_assert(isnan(s[SUBSAE_PHASE_COUNT]));
    ck_assert_double_gt(s[SUBSAE_PHASE_ENCODE_GEMM], 0.0);
    ck_assert_double_gt(s[SUBSAE_PHASE_STEP], 0.0);
    ck_assert_double_eq(s[SUBSAE_PHASE_READ], 0.0); /* steps read nothing */
    ck_assert_double_le(parts, s[SUBSAE_PHASE_STEP] * (1.0 + 1e-9) + 1e-9);

    /* A failed step (non-finite input) is not counted. */
    double before[SUBSAE_PHASE_COUNT];
    memcpy(before, s, sizeof before);
    float bad[16];
    memcpy(bad, x, sizeof bad);
    bad[3] = NAN;
    ck_assert_status(subsae_trainer_step(t, bad, d, NULL, 0, 1), SUBSAE_E_NONFINITE);
    ck_assert_ok(subsae_trainer_timings(t, s, SUBSAE_PHASE_COUNT));
    ck_assert_mem_eq(s, before, sizeof before);

    /* Reset, then fit: the read phase appears. */
    ck_assert_ok(subsae_trainer_reset_timings(t));
    ck_assert_ok(subsae_trainer_timings(t, s, SUBSAE_PHASE_COUNT));
    for (int i = 0; i < SUBSAE_PHASE_COUNT; i++)
        ck_assert(isnan(s[i]));
    ck_assert_ok(subsae_trainer_fit(t, buf, NULL, 4 * batch));
    ck_assert_ok(subsae_trainer_timings(t, s, SUBSAE_PHASE_COUNT));
    ck_assert_double_gt(s[SUBSAE_PHASE_READ], 0.0);
    ck_assert_double_ge(s[SUBSAE_PHASE_STEP], s[SUBSAE_PHASE_READ]);

    /* Arguments. */
    ck_assert_ok(subsae_trainer_timings(t, NULL, 0));
    ck_assert_status(subsae_trainer_timings(NULL, s, 1), SUBSAE_E_INVALID);
    ck_assert_status(subsae_trainer_timings(t, NULL, 1), SUBSAE_E_INVALID);
    ck_assert_status(subsae_trainer_timings(t, s, -1), SUBSAE_E_INVALID);
    ck_assert_status(subsae_trainer_reset_timings(NULL), SUBSAE_E_INVALID);
    subsae_trainer_free(t);
    subsae_buffer_free(buf);
    free(x);
}
END_TEST

START_TEST(phase_names)
{
    const char *want[] = {"encode_gemm", "topk",    "decode", "backward",
                          "optimizer",   "prepare", "read",   "step"};
    ck_assert_int_eq(subsae_phase_count(), SUBSAE_PHASE_COUNT);
    for (int i = 0; i < SUBSAE_PHASE_COUNT; i++)
        ck_assert_str_eq(subsae_phase_name(i), want[i]);
    ck_assert_str_eq(subsae_phase_name(-1), "unknown");
    ck_assert_str_eq(subsae_phase_name(SUBSAE_PHASE_COUNT), "unknown");
}
END_TEST

SUBSAE_SUITE(timings)
{
    Suite *s = suite_create("timings");
    TCase *tc = harness_case(s, "timings", 30);
    tcase_add_test(tc, timings_per_step);
    tcase_add_test(tc, phase_names);
    return s;
}
