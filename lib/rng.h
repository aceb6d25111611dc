/* Seeded, portable random numbers: xoshiro256** seeded through splitmix64.
 * The same (seed, stream) gives the same sequence on every machine, which
 * is what makes runs reproducible bit for bit. */
#ifndef SUBSAE_RNG_H
#define SUBSAE_RNG_H

#include <stdint.h>

typedef struct subsae__rng {
    uint64_t s[4];
} subsae__rng;

/* Independent streams of one seed (e.g. one per epoch, one per purpose). */
void subsae__rng_seed(subsae__rng *rng, uint64_t seed, uint64_t stream);
uint64_t subsae__rng_next(subsae__rng *rng);
/* Uniform in [0, 1) with 53 random bits. */
double subsae__rng_uniform(subsae__rng *rng);
/* Standard normal (Box-Muller; keeps no cached value, so the state is just
 * the four words). */
double subsae__rng_normal(subsae__rng *rng);
/* Uniform integer in [0, n), unbiased; n > 0. */
uint64_t subsae__rng_below(subsae__rng *rng, uint64_t n);
/* Fisher-Yates shuffle of a[0..n). */
void subsae__rng_shuffle(subsae__rng *rng, int64_t *a, int64_t n);

#endif
