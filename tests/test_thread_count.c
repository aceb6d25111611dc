/* Thread-count independence of training: after the same initialisation,
 * fit with 1, 2 and 3 threads (SUBSAE_TRAIN_THREADS) gives the same bits
 * in every parameter and metric, for an SAE and a transcoder, with dense
 * and sparse Adam, free and unit decoder norms. The encoder's GEMM tiles,
 * the decode's row parts and the backward's feature parts are fixed by
 * the shapes, never by the thread count. */
#include "harness.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static float *rows_of(int64_t n, int64_t d, unsigned seed)
{
    float *x = malloc((size_t)(n * d) * sizeof *x);
    uint64_t s = seed * 0x9e3779b97f4a7c15ULL + 1;
    for (int64_t i = 0; i < n * d; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        x[i] = (float)((double)(s >> 40) * 0x1.0p-23 - 1.0) / (1.0f + (float)(i % d) * 0.2f) +
               0.1f;
    }
    return x;
}

struct run {
    float *params[4];
    double metrics[SUBSAE_METRIC_COUNT];
};

static void train(const subsae_buffer *in, const subsae_buffer *out, int threads, bool sparse,
                  bool unit, struct run *r)
{
    subsae_trainer *t;
    ck_assert_ok(subsae_trainer_create(&t));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_FEATURES, 700));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_K, 6));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_BATCH, 600));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_INIT, SUBSAE_INIT_RANDOM));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_INIT_SAMPLE, 1000));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_SPARSE_ADAM, sparse));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_DECODER_NORM,
                                        unit ? SUBSAE_DECODER_UNIT : SUBSAE_DECODER_FREE));
    ck_assert_ok(subsae_trainer_set_double(t, SUBSAE_TRAIN_LR, 2e-3));
    ck_assert_ok(subsae_trainer_init(t, in, out));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_THREADS, threads));
    ck_assert_ok(subsae_trainer_fit(t, in, out, 6 * 600));
    const subsae_sae *sae = subsae_trainer_sae(t);
    for (int p = 0; p < 4; p++) {
        int64_t count = subsae_sae_param_size(sae, p);
        r->params[p] = malloc((size_t)count * sizeof(float));
        ck_assert_ok(subsae_sae_get_param(sae, p, r->params[p], count));
    }
    ck_assert_ok(subsae_trainer_metrics(t, r->metrics, SUBSAE_METRIC_COUNT));
    subsae_trainer_free(t);
}

START_TEST(training_same_bits_for_every_thread_count)
{
    const int64_t n = 3000, d_in = 20, d_out = 12;
    float *x = rows_of(n, d_in, 1), *y = rows_of(n, d_out, 2);
    subsae_buffer *in, *out;
    ck_assert_ok(subsae_buffer_wrap(x, SUBSAE_DTYPE_F32, n, d_in, d_in, SUBSAE_BORROW, &in));
    ck_assert_ok(subsae_buffer_wrap(y, SUBSAE_DTYPE_F32, n, d_out, d_out, SUBSAE_BORROW, &out));
    const size_t sizes[4] = {700 * 20, 700, 700 * 20, 20};
    for (int config = 0; config < 4; config++) {
        const bool transcoder = config & 1, sparse = config & 2, unit = config == 1;
        const size_t dec = transcoder ? 700 * 12 : sizes[2], bdec = transcoder ? 12 : sizes[3];
        const size_t bytes[4] = {sizes[0] * 4, sizes[1] * 4, dec * 4, bdec * 4};
        struct run runs[3];
        for (int r = 0; r < 3; r++)
            train(in, transcoder ? out : NULL, r + 1, sparse, unit, &runs[r]);
        for (int r = 1; r < 3; r++) {
            for (int p = 0; p < 4; p++)
                ck_assert_msg(memcmp(runs[0].params[p], runs[r].params[p], bytes[p]) == 0,
                              "config %d: parameter %d differs between 1 and %d threads",
                              config, p, r + 1);
            for (int i = 0; i < SUBSAE_METRIC_COUNT; i++)
                ck_assert_msg((isnan(runs[0].metrics[i]) && isnan(runs[r].metrics[i])) ||
                                  runs[0].metrics[i] == runs[r].metrics[i],
                              "config %d: metric %d: %.17g with 1 thread, %.17g with %d", config,
                              i, runs[0].metrics[i], runs[r].metrics[i], r + 1);
        }
        for (int r = 0; r < 3; r++)
            for (int p = 0; p < 4; p++)
                free(runs[r].params[p]);
    }
    subsae_buffer_free(in);
    subsae_buffer_free(out);
    free(x);
    free(y);
}
END_TEST

SUBSAE_SUITE(thread_count)
{
    Suite *s = suite_create("thread_count");
    TCase *tc = harness_case(s, "threads", 60);
    tcase_add_test(tc, training_same_bits_for_every_thread_count);
    return s;
}
