/* subsae_option_*: the option tables of the trainer, the subspace
 * estimator and the SAE model, published; and the checks every setter
 * makes against them. */
#include "options.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static const struct subsae__option *table_of(int object, int64_t *n)
{
    switch (object) {
    case SUBSAE_OBJECT_TRAINER: return subsae__trainer_option_table(n);
    case SUBSAE_OBJECT_SUBSPACE: return subsae__subspace_option_table(n);
    case SUBSAE_OBJECT_SAE: return subsae__sae_option_table(n);
    default: *n = 0; return NULL;
    }
}

const struct subsae__option *subsae__option_find(const struct subsae__option *table, int64_t n,
                                                 int option)
{
    for (int64_t i = 0; i < n; i++)
        if (table[i].option == option)
            return &table[i];
    return NULL;
}

static const char *object_name(int object)
{
    switch (object) {
    case SUBSAE_OBJECT_TRAINER: return "trainer";
    case SUBSAE_OBJECT_SUBSPACE: return "subspace";
    case SUBSAE_OBJECT_SAE: return "sae";
    default: return "unknown";
    }
}

static int bad_object(const char *fn, int object)
{
    return subsae__fail_option(
        fn, "object %d is none of SUBSAE_OBJECT_TRAINER, _SUBSPACE, _SAE", object);
}

/* The entry, or NULL with an error naming the function. */
static const struct subsae__option *lookup(const char *fn, int object, int option)
{
    int64_t n;
    const struct subsae__option *table = table_of(object, &n);
    if (!table) {
        bad_object(fn, object);
        return NULL;
    }
    const struct subsae__option *o = subsae__option_find(table, n, option);
    if (!o)
        subsae__fail_option(fn, "option %d is not a %s option", option, object_name(object));
    return o;
}

int subsae_option_count(int object)
{
    int64_t n;
    return table_of(object, &n) ? (int)n : -1;
}

int subsae_option_id(int object, int index)
{
    int64_t n;
    const struct subsae__option *table = table_of(object, &n);
    return table && index >= 0 && index < n ? table[index].option : -1;
}

int subsae_option_find(int object, const char *name, int *option)
{
    static const char *fn = "subsae_option_find";
    SUBSAE__NOT_NULL(fn, name);
    SUBSAE__NOT_NULL(fn, option);
    int64_t n;
    const struct subsae__option *table = table_of(object, &n);
    if (!table)
        return bad_object(fn, object);
    char names[1024] = "";
    for (int64_t i = 0; i < n; i++) {
        if (!strcmp(table[i].name, name)) {
            *option = table[i].option;
            return SUBSAE_OK;
        }
        size_t used = strlen(names);
        snprintf(names + used, sizeof names - used, "%s%s", i ? ", " : "", table[i].name);
    }
    return subsae__fail_option(fn, "'%s' is not a %s option (%s)", name, object_name(object),
                               names);
}

int subsae_option_info(int object, int option, const char **name, int *type, int *flags,
                       const char **description)
{
    const struct subsae__option *o = lookup("subsae_option_info", object, option);
    if (!o)
        return SUBSAE_E_INVALID;
    if (name)
        *name = o->name;
    if (type)
        *type = o->type;
    if (flags)
        *flags = o->flags;
    if (description)
        *description = o->description;
    return SUBSAE_OK;
}

int subsae_option_int_bounds(int object, int option, int64_t *min, int64_t *max,
                             int64_t *default_value)
{
    int rc;
    const struct subsae__option *o = subsae__option_entry("subsae_option_int_bounds", object,
                                                          option, SUBSAE_OPTION_INT,
                                                          "subsae_option_double_bounds", &rc);
    if (!o)
        return rc;
    if (min)
        *min = o->int_min;
    if (max)
        *max = o->int_max;
    if (default_value)
        *default_value = o->int_default;
    return SUBSAE_OK;
}

int subsae_option_double_bounds(int object, int option, double *min, double *max,
                                double *default_value)
{
    int rc;
    const struct subsae__option *o = subsae__option_entry("subsae_option_double_bounds", object,
                                                          option, SUBSAE_OPTION_DOUBLE,
                                                          "subsae_option_int_bounds", &rc);
    if (!o)
        return rc;
    if (min)
        *min = o->min;
    if (max)
        *max = o->max;
    if (default_value)
        *default_value = o->default_value;
    return SUBSAE_OK;
}

/* ---- the setters' checks ------------------------------------------------- */

static int wrong_type(const char *fn, const struct subsae__option *o, const char *use)
{
    return subsae__fail_option(fn, "option %d (%s) is %s option: use %s", o->option, o->name,
                               o->type == SUBSAE_OPTION_INT ? "an int" : "a double", use);
}

static int check_int(const char *fn, const struct subsae__option *o, int64_t value)
{
    if (value < o->int_min || value > o->int_max)
        return subsae__fail_option(fn, "%s = %lld is outside [%lld, %lld]", o->name,
                                   (long long)value, (long long)o->int_min,
                                   (long long)o->int_max);
    return SUBSAE_OK;
}

static int check_double(const char *fn, const struct subsae__option *o, double value)
{
    const bool lo_open = o->flags & SUBSAE_OPTION_MIN_EXCLUSIVE;
    const bool hi_open = o->flags & SUBSAE_OPTION_MAX_EXCLUSIVE;
    if (!isfinite(value) || value < o->min || value > o->max || (lo_open && value == o->min) ||
        (hi_open && value == o->max))
        return subsae__fail_option(fn, "%s = %g is outside %c%g, %g%c", o->name, value,
                                   lo_open ? '(' : '[', o->min, o->max, hi_open ? ')' : ']');
    return SUBSAE_OK;
}

const struct subsae__option *subsae__option_entry(const char *fn, int object, int option,
                                                  int type, const char *use, int *rc)
{
    const struct subsae__option *o = lookup(fn, object, option);
    *rc = !o ? SUBSAE_E_INVALID : o->type != type ? wrong_type(fn, o, use) : SUBSAE_OK;
    return *rc ? NULL : o;
}

static const struct subsae__option *settable(const struct subsae__option *o, const char *fn,
                                             int *rc)
{
    if (o && (o->flags & SUBSAE_OPTION_READ_ONLY))
        *rc = subsae__fail_option(fn, "option %d (%s) is read-only", o->option, o->name);
    return *rc ? NULL : o;
}

const struct subsae__option *subsae__option_settable_int(const char *fn, int object, int option,
                                                         int64_t value, const char *use,
                                                         int *rc)
{
    const struct subsae__option *o = settable(
        subsae__option_entry(fn, object, option, SUBSAE_OPTION_INT, use, rc), fn, rc);
    if (o)
        *rc = check_int(fn, o, value);
    return *rc ? NULL : o;
}

const struct subsae__option *subsae__option_settable_double(const char *fn, int object,
                                                            int option, double value,
                                                            const char *use, int *rc)
{
    const struct subsae__option *o = settable(
        subsae__option_entry(fn, object, option, SUBSAE_OPTION_DOUBLE, use, rc), fn, rc);
    if (o)
        *rc = check_double(fn, o, value);
    return *rc ? NULL : o;
}

/* The object's parameter name in the public prototypes. */
static const char *self_name(int object)
{
    switch (object) {
    case SUBSAE_OBJECT_TRAINER: return "t";
    case SUBSAE_OBJECT_SUBSPACE: return "s";
    default: return "sae";
    }
}

const struct subsae__option *subsae__option_get(const char *fn, int object, const void *self,
                                                const void *value, int option, int type,
                                                const char *use, int *rc)
{
    if (!self)
        *rc = subsae__fail_null(fn, self_name(object));
    else if (!value)
        *rc = subsae__fail_null(fn, "value");
    else
        return subsae__option_entry(fn, object, option, type, use, rc);
    return NULL;
}

const struct subsae__option *subsae__option_set_int(const char *fn, int object,
                                                    const void *self, int option, int64_t value,
                                                    const char *use, int *rc)
{
    if (self)
        return subsae__option_settable_int(fn, object, option, value, use, rc);
    *rc = subsae__fail_null(fn, self_name(object));
    return NULL;
}

const struct subsae__option *subsae__option_set_double(const char *fn, int object,
                                                       const void *self, int option,
                                                       double value, const char *use, int *rc)
{
    if (self)
        return subsae__option_settable_double(fn, object, option, value, use, rc);
    *rc = subsae__fail_null(fn, self_name(object));
    return NULL;
}
