/* The trainer's state table (lib/params.h) is the state file's layout:
 * a checkpoint holds exactly the table's present tensors, in its order,
 * with its names, dtypes and shapes, and each entry points at the data the
 * trainer holds. Adam's moments name a trained parameter of their shape. */
#include "harness.h"
#include "io.h"
#include "params.h"
#include "trainer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static subsae_trainer *trained(int activation, subsae_buffer **buffer)
{
    enum { N = 256, D = 8 };
    float *x = harness_normal_rows(11, N, D, 0.5);
    *buffer = harness_wrap_copy(x, N, D);
    free(x);
    subsae_trainer *t;
    ck_assert_ok(subsae_trainer_create(&t));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_FEATURES, 16));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_K, 2));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_ACTIVATION, activation));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_BATCH, 32));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_INIT, SUBSAE_INIT_RANDOM));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_THREADS, 1));
    ck_assert_ok(subsae_trainer_init(t, *buffer, NULL));
    ck_assert_ok(subsae_trainer_fit(t, *buffer, NULL, 64));
    return t;
}

static void check_entry(const struct subsae__param *p, const struct subsae__tensor_view *v,
                        const subsae_trainer *t, const subsae_sae *s)
{
    ck_assert_str_eq(v->name, p->name);
    ck_assert_int_eq(v->dtype, p->dtype);
    int64_t shape[2];
    ck_assert_int_eq(v->ndim, subsae__param_shape(p, s, shape));
    for (int j = 0; j < v->ndim; j++)
        ck_assert_int_eq(v->shape[j], shape[j]);
    ck_assert_ptr_nonnull(subsae__param_data(p, t, s));
    if (p->role == SUBSAE__ROLE_ADAM_M || p->role == SUBSAE__ROLE_ADAM_V) {
        const struct subsae__param *of = &subsae__params[p->moment_of];
        ck_assert(of->role == SUBSAE__ROLE_WEIGHT || of->role == SUBSAE__ROLE_TRAINED);
        ck_assert_int_eq(subsae__param_elements(of, s), subsae__param_elements(p, s));
    } else {
        ck_assert_int_eq(p->moment_of, -1);
    }
}

static void check_layout(int activation)
{
    subsae_buffer *buffer;
    subsae_trainer *t = trained(activation, &buffer);
    const subsae_sae *s = subsae_trainer_sae(t);
    char dir[600], state[800];
    harness_tmp_path(activation == SUBSAE_ACT_JUMPRELU ? "jumprelu" : "topk", dir, sizeof dir);
    ck_assert_ok(subsae_trainer_save_checkpoint(t, dir));
    snprintf(state, sizeof state, "%s/state-%lld.safetensors", dir, (long long)t->step);
    subsae__safetensors *st;
    ck_assert_ok(subsae__safetensors_open(state, &st));
    /* The writer places the data by element size, largest first, in the
     * given order within a size. */
    int64_t i = 0;
    for (int pass = 0; pass < 2; pass++) {
        SUBSAE__FOR_EACH_PARAM(p, activation) {
            if ((p->dtype == SUBSAE_DTYPE_F64) != (pass == 0))
                continue;
            const struct subsae__tensor_view *v = subsae__safetensors_tensor(st, i++);
            ck_assert_ptr_nonnull(v);
            check_entry(p, v, t, s);
        }
    }
    ck_assert_int_eq(subsae__safetensors_count(st), i);
    subsae__safetensors_close(st);
    /* The model's own tensors need no trainer. */
    ck_assert_ptr_eq(subsae__param_data(&subsae__params[0], NULL, s), s->W_enc);
    subsae_trainer_free(t);
    subsae_buffer_free(buffer);
}

START_TEST(state_file_follows_the_table)
{
    check_layout(SUBSAE_ACT_TOPK);
    check_layout(SUBSAE_ACT_JUMPRELU);
}
END_TEST

SUBSAE_SUITE(params)
{
    Suite *s = suite_create("params");
    TCase *tc = harness_case(s, "layout", 30);
    tcase_add_test(tc, state_file_follows_the_table);
    return s;
}
