/* Internals of subsae_subspace, shared by subspace.c (options, results,
 * ranks, projections, fit dispatch), subspace_exact.c (one streaming Gram
 * pass and a symmetric eigensolve) and subspace_randomized.c (subspace
 * iteration on the centred Gram operator); the streaming reader of both
 * methods is declared in subspace_stream.h (included below). */
#ifndef SUBSAE_SUBSPACE_H
#define SUBSAE_SUBSPACE_H

#include "collective.h"
#include "internal.h"

struct subsae_subspace {
    /* options */
    int method;          /* SUBSAE_METHOD_* */
    int64_t rank;        /* k wanted; 0 = all d */
    int64_t oversample;  /* p */
    int64_t power_iters; /* q */
    int64_t seed;
    int center; /* 0/1 */
    int64_t batch_rows;
    double threshold;
    subsae_callback callback;
    void *user;
    struct subsae__collective coll; /* workers (subsae_subspace_set_collective) */

    /* set by subsae_subspace_fit for the methods: rows of all workers and
     * the lowest rank holding rows (0 for a single process) */
    int64_t fit_rows, fit_root;

    /* results, valid when fitted */
    bool fitted;
    int method_used;
    int64_t dim;
    int64_t rows;
    int64_t found; /* directions available (rows of basis) */
    double seconds;
    double total;      /* trace of the covariance */
    double *variances; /* found, descending, >= 0 */
    float *basis;      /* found x dim, orthonormal rows */
    float *mean;       /* dim (zeros when not centring) */
};

/* What one method hands back to the dispatcher (subspace.c owns the
 * arrays afterwards). */
struct subsae__subspace_fit {
    int64_t found;
    double total;
    double *variances; /* found */
    float *basis;      /* found x dim */
    float *mean;       /* dim */
};

#include "subspace_stream.h"

/* ---- methods -------------------------------------------------------- */

/* With workers both are collective (every worker calls them, with
 * s->fit_rows and s->fit_root set) and return the same results on every
 * worker. */
int subsae__subspace_exact(subsae_subspace *s, const subsae_buffer *buf,
                           struct subsae__subspace_fit *out);
int subsae__subspace_randomized(subsae_subspace *s, const subsae_buffer *buf, int64_t k,
                                struct subsae__subspace_fit *out);

/* Cost estimates used by SUBSAE_METHOD_AUTO: flops weighted by the rate
 * OpenBLAS reaches on each kind of work, in units of ssyrk flops. */
double subsae__subspace_exact_cost(int64_t n, int64_t d);
double subsae__subspace_randomized_cost(int64_t n, int64_t d, int64_t k, int64_t p, int64_t q);

#endif
