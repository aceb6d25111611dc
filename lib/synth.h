/* Synthetic activations with a known dictionary (internal for now; the
 * future `subsae synth` subcommand). */
#ifndef SUBSAE_SYNTH_H
#define SUBSAE_SYNTH_H

#include "internal.h"

struct subsae__synth_spec {
    int64_t rows, dim;
    int64_t atoms;             /* dictionary size */
    int64_t subspace_dim;      /* atoms lie in a random subspace of this dimension */
    int64_t active;            /* atoms per row (distinct) */
    double coef_min, coef_max; /* coefficients uniform in [coef_min, coef_max] */
    double noise;              /* isotropic Gaussian noise, standard deviation per dim */
    double offset; /* norm (in expectation) of a constant offset added to every row */
    uint64_t seed;
};

/* Fill x (rows x dim, row-major) and, if atoms is not NULL, the dictionary
 * (atoms x dim, unit rows). Deterministic in the seed. */
int subsae__synth(const struct subsae__synth_spec *spec, float *x, float *atoms);

#endif
