/* Option metadata: one table per object (sae_options.c,
 * subspace_options.c, the trainer's beside the trainer) holds every
 * option's name, type, bounds, default and description. The
 * objects' setters check values against it, the trainer takes its
 * defaults from it, and subsae_option_* (options.c) publishes it, so that
 * the command-line program and the bindings read ranges and defaults from
 * the same place the library checks them. */
#ifndef SUBSAE_OPTIONS_H
#define SUBSAE_OPTIONS_H

#include "internal.h"

struct subsae__option {
    int option;       /* the enum value */
    const char *name; /* lower case, as in checkpoint.json */
    int type;         /* SUBSAE_OPTION_INT or SUBSAE_OPTION_DOUBLE */
    int flags;        /* SUBSAE_OPTION_* flags */
    int64_t int_min, int_max, int_default;
    double min, max, default_value;
    size_t offset; /* of the value in the object's struct (trainer) */
    const char *description;
};

#define SUBSAE__INT_OPTION(opt, nm, lo, hi, def, fl, off, doc)                   \
    {                                                                            \
        .option = (opt), .name = (nm), .type = SUBSAE_OPTION_INT, .flags = (fl), \
        .int_min = (lo), .int_max = (hi), .int_default = (def), .offset = (off), \
        .description = (doc)                                                     \
    }
#define SUBSAE__DOUBLE_OPTION(opt, nm, lo, hi, def, fl, off, doc)                   \
    {                                                                               \
        .option = (opt), .name = (nm), .type = SUBSAE_OPTION_DOUBLE, .flags = (fl), \
        .min = (lo), .max = (hi), .default_value = (def), .offset = (off),          \
        .description = (doc)                                                        \
    }

/* The tables (n gets the number of entries). */
const struct subsae__option *subsae__trainer_option_table(int64_t *n);
const struct subsae__option *subsae__subspace_option_table(int64_t *n);
const struct subsae__option *subsae__sae_option_table(int64_t *n);

/* The entry of `option` in a table, or NULL. */
const struct subsae__option *subsae__option_find(const struct subsae__option *table, int64_t n,
                                                 int option);

/* The entries the typed setters and getters of every object use. Each
 * returns the entry of `option` of `object`, or NULL with the error
 * recorded in *rc naming `fn`, the option by name and what is wrong: not
 * an option of the object, not of `type` ("option 3 (lr) is a double
 * option: use subsae_trainer_set_double", `use` naming the accessor of the
 * other type); for the setters also read-only, or the value outside the
 * bounds. */
const struct subsae__option *subsae__option_entry(const char *fn, int object, int option,
                                                  int type, const char *use, int *rc);
const struct subsae__option *subsae__option_settable_int(const char *fn, int object, int option,
                                                         int64_t value, const char *use,
                                                         int *rc);
const struct subsae__option *subsae__option_settable_double(const char *fn, int object,
                                                            int option, double value,
                                                            const char *use, int *rc);

/* The same for the objects' typed accessors, checking first that `self`
 * (the object; the error names it as the public prototypes do: t, s,
 * sae) and a getter's `value` are not NULL. */
const struct subsae__option *subsae__option_get(const char *fn, int object, const void *self,
                                                const void *value, int option, int type,
                                                const char *use, int *rc);
const struct subsae__option *subsae__option_set_int(const char *fn, int object,
                                                    const void *self, int option, int64_t value,
                                                    const char *use, int *rc);
const struct subsae__option *subsae__option_set_double(const char *fn, int object,
                                                       const void *self, int option,
                                                       double value, const char *use, int *rc);

#endif
