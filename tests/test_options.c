/* The option metadata (subsae_option_*) is the truth the setters keep:
 * for every option of every object, a new object holds the published
 * default, the setter accepts both published bounds and refuses the value
 * just outside each, read-only options refuse to be set, names are unique
 * and found by subsae_option_find, and the messages name the option. */
#include "harness.h"

#include <float.h>
#include <math.h>
#include <string.h>

/* One object of each kind and its typed accessors. */
struct object {
    int kind;
    void *handle;
};

static struct object make(int kind)
{
    struct object o = {kind, NULL};
    if (kind == SUBSAE_OBJECT_TRAINER)
        ck_assert_ok(subsae_trainer_create((subsae_trainer **)&o.handle));
    else if (kind == SUBSAE_OBJECT_SUBSPACE)
        ck_assert_ok(subsae_subspace_create((subsae_subspace **)&o.handle));
    else /* d_sae large enough for k's default; d_in == d_out */
        ck_assert_ok(subsae_sae_create(8, 8, 64, SUBSAE_ACT_TOPK, (subsae_sae **)&o.handle));
    return o;
}

static void release(struct object o)
{
    if (o.kind == SUBSAE_OBJECT_TRAINER)
        subsae_trainer_free(o.handle);
    else if (o.kind == SUBSAE_OBJECT_SUBSPACE)
        subsae_subspace_free(o.handle);
    else
        subsae_sae_free(o.handle);
}

static int set_int(struct object o, int option, int64_t v)
{
    return o.kind == SUBSAE_OBJECT_TRAINER    ? subsae_trainer_set_int(o.handle, option, v)
           : o.kind == SUBSAE_OBJECT_SUBSPACE ? subsae_subspace_set_int(o.handle, option, v)
                                              : subsae_sae_set_int(o.handle, option, v);
}

static int get_int(struct object o, int option, int64_t *v)
{
    return o.kind == SUBSAE_OBJECT_TRAINER    ? subsae_trainer_get_int(o.handle, option, v)
           : o.kind == SUBSAE_OBJECT_SUBSPACE ? subsae_subspace_get_int(o.handle, option, v)
                                              : subsae_sae_get_int(o.handle, option, v);
}

static int set_double(struct object o, int option, double v)
{
    return o.kind == SUBSAE_OBJECT_TRAINER    ? subsae_trainer_set_double(o.handle, option, v)
           : o.kind == SUBSAE_OBJECT_SUBSPACE ? subsae_subspace_set_double(o.handle, option, v)
                                              : subsae_sae_set_double(o.handle, option, v);
}

static int get_double(struct object o, int option, double *v)
{
    return o.kind == SUBSAE_OBJECT_TRAINER    ? subsae_trainer_get_double(o.handle, option, v)
           : o.kind == SUBSAE_OBJECT_SUBSPACE ? subsae_subspace_get_double(o.handle, option, v)
                                              : subsae_sae_get_double(o.handle, option, v);
}

/* The value a new object reports for an option whose default depends on
 * the object (documented in the option's description). */
static bool object_dependent(int kind, int option)
{
    return (kind == SUBSAE_OBJECT_TRAINER && option == SUBSAE_TRAIN_LR) ||
           (kind == SUBSAE_OBJECT_SAE && option != SUBSAE_SAE_RANK_BY_DECODER_NORM &&
            option != SUBSAE_SAE_INPUT_SCALE && option != SUBSAE_SAE_OUTPUT_SCALE &&
            option != SUBSAE_SAE_TRANSCODER);
}

static void check_int_option(struct object o, int option, const char *name, int flags)
{
    int64_t lo, hi, def, v;
    ck_assert_ok(subsae_option_int_bounds(o.kind, option, &lo, &hi, &def));
    ck_assert_msg(lo <= hi, "%s: bounds [%lld, %lld]", name, (long long)lo, (long long)hi);
    ck_assert_msg(def >= lo || (flags & SUBSAE_OPTION_READ_ONLY), "%s: default below min",
                  name);
    ck_assert_msg(def <= hi, "%s: default above max", name);
    ck_assert_status(subsae_option_double_bounds(o.kind, option, NULL, NULL, NULL),
                     SUBSAE_E_INVALID);
    ck_assert_msg(strstr(subsae_last_error(), name) != NULL, "message without the name: %s",
                  subsae_last_error());
    if (flags & SUBSAE_OPTION_READ_ONLY) {
        ck_assert_status(set_int(o, option, def), SUBSAE_E_INVALID);
        ck_assert_msg(strstr(subsae_last_error(), "read-only") &&
                          strstr(subsae_last_error(), name),
                      "%s", subsae_last_error());
        return;
    }
    if (!object_dependent(o.kind, option)) {
        ck_assert_ok(get_int(o, option, &v));
        ck_assert_msg(v == def, "%s: a new object holds %lld, the table says %lld", name,
                      (long long)v, (long long)def);
    }
    /* Both ends are accepted (k of an SAE also needs k <= d_sae: its end
     * is d_sae's bound), the values beyond are refused with the name. */
    const bool sae_k = o.kind == SUBSAE_OBJECT_SAE && option == SUBSAE_SAE_K;
    ck_assert_ok(set_int(o, option, lo));
    if (!sae_k)
        ck_assert_ok(set_int(o, option, hi));
    if (lo > INT64_MIN) {
        ck_assert_status(set_int(o, option, lo - 1), SUBSAE_E_INVALID);
        ck_assert_msg(strstr(subsae_last_error(), name), "%s", subsae_last_error());
    }
    if (hi < INT64_MAX)
        ck_assert_status(set_int(o, option, hi + 1), SUBSAE_E_INVALID);
    /* The wrong type says which setter to use. */
    ck_assert_status(set_double(o, option, 1.0), SUBSAE_E_INVALID);
    ck_assert_msg(strstr(subsae_last_error(), name) && strstr(subsae_last_error(), "set_int"),
                  "%s", subsae_last_error());
    if (!sae_k) /* back to the default for the next option's checks */
        ck_assert_ok(set_int(o, option, def));
}

static void check_double_option(struct object o, int option, const char *name, int flags)
{
    double lo, hi, def, v;
    ck_assert_ok(subsae_option_double_bounds(o.kind, option, &lo, &hi, &def));
    ck_assert_msg(lo < hi, "%s: bounds", name);
    ck_assert_status(subsae_option_int_bounds(o.kind, option, NULL, NULL, NULL),
                     SUBSAE_E_INVALID);
    if (flags & SUBSAE_OPTION_READ_ONLY) {
        ck_assert_status(set_double(o, option, def), SUBSAE_E_INVALID);
        return;
    }
    if (!object_dependent(o.kind, option)) {
        ck_assert_ok(get_double(o, option, &v));
        ck_assert_msg(v == def, "%s: a new object holds %g, the table says %g", name, v, def);
    }
    const bool lo_open = flags & SUBSAE_OPTION_MIN_EXCLUSIVE;
    const bool hi_open = flags & SUBSAE_OPTION_MAX_EXCLUSIVE;
    ck_assert_int_eq(set_double(o, option, lo), lo_open ? SUBSAE_E_INVALID : SUBSAE_OK);
    ck_assert_int_eq(set_double(o, option, hi), hi_open ? SUBSAE_E_INVALID : SUBSAE_OK);
    ck_assert_ok(set_double(o, option, lo_open ? nextafter(lo, hi) : lo));
    ck_assert_ok(set_double(o, option, hi_open ? nextafter(hi, lo) : hi));
    ck_assert_status(set_double(o, option, nextafter(lo, -INFINITY)), SUBSAE_E_INVALID);
    ck_assert_msg(strstr(subsae_last_error(), name), "%s", subsae_last_error());
    if (hi < DBL_MAX)
        ck_assert_status(set_double(o, option, nextafter(hi, INFINITY)), SUBSAE_E_INVALID);
    ck_assert_status(set_double(o, option, NAN), SUBSAE_E_INVALID);
    ck_assert_status(set_int(o, option, 1), SUBSAE_E_INVALID);
    ck_assert_msg(strstr(subsae_last_error(), name) && strstr(subsae_last_error(), "set_double"),
                  "%s", subsae_last_error());
    ck_assert_ok(set_double(o, option, def));
}

START_TEST(every_option_keeps_its_published_bounds_and_default)
{
    const int kinds[] = {SUBSAE_OBJECT_TRAINER, SUBSAE_OBJECT_SUBSPACE, SUBSAE_OBJECT_SAE};
    const int expected[] = {30, 13, 12};
    for (int k = 0; k < 3; k++) {
        struct object o = make(kinds[k]);
        const int count = subsae_option_count(kinds[k]);
        ck_assert_int_eq(count, expected[k]);
        for (int i = 0; i < count; i++) {
            const int option = subsae_option_id(kinds[k], i);
            ck_assert_int_ge(option, 0);
            const char *name, *description;
            int type, flags, found;
            ck_assert_ok(subsae_option_info(kinds[k], option, &name, &type, &flags,
                                            &description));
            ck_assert_msg(name[0] && description[0], "option %d: empty name or description",
                          option);
            ck_assert_ok(subsae_option_find(kinds[k], name, &found));
            ck_assert_int_eq(found, option); /* names are unique */
            if (i > 0)
                ck_assert_int_gt(option, subsae_option_id(kinds[k], i - 1));
            if (type == SUBSAE_OPTION_INT)
                check_int_option(o, option, name, flags);
            else
                check_double_option(o, option, name, flags);
        }
        ck_assert_int_eq(subsae_option_id(kinds[k], count), -1);
        ck_assert_int_eq(subsae_option_id(kinds[k], -1), -1);
        release(o);
    }
    ck_assert_int_eq(subsae_option_count(7), -1);
    int option;
    ck_assert_status(subsae_option_find(SUBSAE_OBJECT_TRAINER, "learning_rate", &option),
                     SUBSAE_E_INVALID);
    ck_assert_msg(strstr(subsae_last_error(), "dead_window"), "the message lists the names: %s",
                  subsae_last_error());
    ck_assert_status(subsae_option_info(SUBSAE_OBJECT_SAE, 99, NULL, NULL, NULL, NULL),
                     SUBSAE_E_INVALID);
    ck_assert_status(subsae_option_info(9, 0, NULL, NULL, NULL, NULL), SUBSAE_E_INVALID);
}
END_TEST

/* The defaults a user reads in --help are the ones a run uses. */
START_TEST(trainer_defaults_are_the_documented_ones)
{
    int64_t v;
    double x;
    ck_assert_ok(subsae_option_int_bounds(SUBSAE_OBJECT_TRAINER, SUBSAE_TRAIN_BATCH, NULL, NULL,
                                          &v));
    ck_assert_int_eq(v, 4096);
    ck_assert_ok(subsae_option_int_bounds(SUBSAE_OBJECT_TRAINER, SUBSAE_TRAIN_DEAD_WINDOW, NULL,
                                          NULL, &v));
    ck_assert_int_eq(v, 10000000);
    ck_assert_ok(subsae_option_double_bounds(SUBSAE_OBJECT_TRAINER, SUBSAE_TRAIN_L1_COEF, NULL,
                                             NULL, &x));
    ck_assert_double_eq(x, 2.0);
    int flags;
    ck_assert_ok(subsae_option_info(SUBSAE_OBJECT_TRAINER, SUBSAE_TRAIN_LR, NULL, NULL, &flags,
                                    NULL));
    ck_assert(flags & SUBSAE_OPTION_ZERO_MEANS_AUTO);
    ck_assert_ok(subsae_option_info(SUBSAE_OBJECT_TRAINER, SUBSAE_TRAIN_FEATURES, NULL, NULL,
                                    &flags, NULL));
    ck_assert(flags & SUBSAE_OPTION_STRUCTURAL);
    /* The learning rate in effect for "auto" (0): 2e-4 / sqrt(d_sae / 16384). */
    subsae_trainer *t;
    ck_assert_ok(subsae_trainer_create(&t));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_FEATURES, 4096));
    ck_assert_ok(subsae_trainer_get_double(t, SUBSAE_TRAIN_LR, &x));
    ck_assert_double_eq_tol(x, 4e-4, 1e-15);
    subsae_trainer_free(t);
}
END_TEST

SUBSAE_SUITE(options)
{
    Suite *s = suite_create("options");
    TCase *tc = harness_case(s, "metadata", 10);
    tcase_add_test(tc, every_option_keeps_its_published_bounds_and_default);
    tcase_add_test(tc, trainer_defaults_are_the_documented_ones);
    return s;
}
