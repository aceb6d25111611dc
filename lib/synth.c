/* Synthetic activations with a known sparse dictionary (ground truth for
 * the trainer's tests; later the public `subsae synth`). The atoms are unit
 * vectors in a random r-dimensional subspace of R^d, so the data has an
 * active subspace of exactly that dimension, like attention outputs. */
#include "synth.h"

#include "buffer.h"

#include "rng.h"

#include <math.h>
#include <string.h>

int subsae__synth(const struct subsae__synth_spec *spec, float *x, float *atoms)
{
    static const char *fn = "subsae__synth";
    SUBSAE__NOT_NULL(fn, spec);
    SUBSAE__NOT_NULL(fn, x);
    const int64_t n = spec->rows, d = spec->dim, m = spec->atoms, r = spec->subspace_dim;
    const int64_t a = spec->active;
    if (n < 1 || d < 1 || r < 1 || r > d || m < 1 || a < 1 || a > m || !(spec->noise >= 0.0) ||
        !(spec->coef_min >= 0.0) || !(spec->coef_max >= spec->coef_min))
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                            "%s: rows %lld, dim %lld, atoms %lld, subspace %lld, active %lld, "
                            "noise %g, coefficients [%g, %g]",
                            fn, (long long)n, (long long)d, (long long)m, (long long)r,
                            (long long)a, spec->noise, spec->coef_min, spec->coef_max);
    double *basis = subsae__malloc((size_t)(r * d) * sizeof *basis);
    double *dict = subsae__malloc((size_t)(m * d) * sizeof *dict);
    double *offset = subsae__calloc((size_t)d, sizeof *offset);
    int64_t *chosen = subsae__malloc((size_t)a * sizeof *chosen);
    if (!basis || !dict || !offset || !chosen) {
        subsae__free(basis);
        subsae__free(dict);
        subsae__free(offset);
        subsae__free(chosen);
        return subsae__fail_nomem("synthetic dictionary", (size_t)((r + m) * d) * 8);
    }
    subsae__rng rng;
    /* Orthonormal basis of the subspace: Gram-Schmidt (twice) on Gaussian
     * rows. */
    subsae__rng_seed(&rng, spec->seed, 1);
    for (int64_t i = 0; i < r; i++) {
        double *q = basis + i * d;
        for (;;) {
            for (int64_t j = 0; j < d; j++)
                q[j] = subsae__rng_normal(&rng);
            for (int pass = 0; pass < 2; pass++)
                for (int64_t p = 0; p < i; p++) {
                    const double *b = basis + p * d;
                    double dot = 0.0;
                    for (int64_t j = 0; j < d; j++)
                        dot += q[j] * b[j];
                    for (int64_t j = 0; j < d; j++)
                        q[j] -= dot * b[j];
                }
            double nn = 0.0;
            for (int64_t j = 0; j < d; j++)
                nn += q[j] * q[j];
            if (nn > 1e-12) {
                for (int64_t j = 0; j < d; j++)
                    q[j] /= sqrt(nn);
                break;
            }
        }
    }
    /* Atoms: normalised Gaussian combinations of the basis. */
    subsae__rng_seed(&rng, spec->seed, 2);
    for (int64_t i = 0; i < m; i++) {
        double *atom = dict + i * d;
        memset(atom, 0, (size_t)d * sizeof *atom);
        for (int64_t p = 0; p < r; p++) {
            double c = subsae__rng_normal(&rng);
            for (int64_t j = 0; j < d; j++)
                atom[j] += c * basis[p * d + j];
        }
        double nn = 0.0;
        for (int64_t j = 0; j < d; j++)
            nn += atom[j] * atom[j];
        for (int64_t j = 0; j < d; j++)
            atom[j] /= sqrt(nn);
        if (atoms)
            for (int64_t j = 0; j < d; j++)
                atoms[i * d + j] = (float)atom[j];
    }
    /* A mean offset (anywhere in R^d), as real activations have one. */
    subsae__rng_seed(&rng, spec->seed, 3);
    for (int64_t j = 0; j < d; j++)
        offset[j] = spec->offset * subsae__rng_normal(&rng) / sqrt((double)d);
    /* Rows: `active` distinct atoms with coefficients uniform in
     * [coef_min, coef_max], plus isotropic noise. */
    subsae__rng_seed(&rng, spec->seed, 4);
    for (int64_t i = 0; i < n; i++) {
        float *row = x + i * d;
        for (int64_t j = 0; j < d; j++)
            row[j] = (float)(offset[j] + spec->noise * subsae__rng_normal(&rng));
        for (int64_t c = 0; c < a; c++) {
            int64_t atom;
            bool repeat;
            do {
                atom = (int64_t)subsae__rng_below(&rng, (uint64_t)m);
                repeat = false;
                for (int64_t p = 0; p < c; p++)
                    repeat |= chosen[p] == atom;
            } while (repeat);
            chosen[c] = atom;
            double coef = spec->coef_min +
                          (spec->coef_max - spec->coef_min) * subsae__rng_uniform(&rng);
            for (int64_t j = 0; j < d; j++)
                row[j] += (float)(coef * dict[atom * d + j]);
        }
    }
    subsae__free(basis);
    subsae__free(dict);
    subsae__free(offset);
    subsae__free(chosen);
    return SUBSAE_OK;
}

int subsae_synth(int64_t dim, int64_t subspace_dim, int64_t features, int64_t k, int64_t tokens,
                 uint64_t seed, subsae_buffer **out, float *dictionary)
{
    static const char *fn = "subsae_synth";
    SUBSAE__NOT_NULL(fn, out);
    if (dim < 1 || dim > INT32_MAX || tokens < 1 || features < 1 || features > INT32_MAX)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                            "%s: dim %lld, features %lld, tokens %lld", fn, (long long)dim,
                            (long long)features, (long long)tokens);
    size_t bytes;
    if (!subsae__mul_size((size_t)tokens, (size_t)dim * sizeof(float), &bytes))
        return subsae__fail(SUBSAE_E_RANGE, SUBSAE_REASON_SHAPE_OVERFLOW,
                            "%s: %lld tokens x %lld overflow", fn, (long long)tokens,
                            (long long)dim);
    const struct subsae__synth_spec spec = {.rows = tokens,
                                            .dim = dim,
                                            .atoms = features,
                                            .subspace_dim = subspace_dim,
                                            .active = k,
                                            .coef_min = 0.5,
                                            .coef_max = 1.5,
                                            .noise = 0.01,
                                            .offset = 1.0,
                                            .seed = seed};
    float *rows = subsae__malloc(bytes);
    if (!rows)
        return subsae__fail_nomem("synthetic rows", bytes);
    subsae_buffer *buf = NULL;
    int rc = subsae__synth(&spec, rows, dictionary);
    if (!rc)
        rc = subsae_buffer_create(dim, &buf);
    if (!rc)
        rc = subsae_buffer_append(buf, rows, SUBSAE_DTYPE_F32, tokens, dim);
    subsae__free(rows);
    if (rc) {
        subsae_buffer_free(buf);
        return rc;
    }
    *out = buf;
    return SUBSAE_OK;
}
