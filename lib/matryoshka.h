/* Matryoshka prefixes of a model (matryoshka.c). */
#ifndef SUBSAE_MATRYOSHKA_H
#define SUBSAE_MATRYOSHKA_H

#include "sae.h"

/* SUBSAE_E_INVALID naming `fn` unless `widths` (count of them) are
 * strictly increasing from >= 1, count in [0, SUBSAE_MATRYOSHKA_MAX], and
 * (d_sae > 0) the last is d_sae. */
int subsae__matryoshka_check(const char *fn, const int64_t *widths, int count, int64_t d_sae);

/* Give `sae` the prefixes of `from` (count 0: none). */
void subsae__matryoshka_copy(subsae_sae *sae, const subsae_sae *from);

/* Index of the first prefix holding feature f (0 for a plain model). */
int subsae__matryoshka_prefix_of(const subsae_sae *sae, int64_t f);

/* Nested prefixes of the loss: count for a Matryoshka model, else 1. */
int subsae__matryoshka_levels(const subsae_sae *sae);

/* The squared errors of every prefix but the last (the whole model) on
 * `rows` coded rows (`slots` pairs per row, index -1 unused) against the
 * scaled targets t (d_out per row): adds prefix j's sum over the rows to
 * sse[j], in row order. `xhat` (rows x d_out) and `row_sse` (rows) are
 * scratch. */
void subsae__matryoshka_prefix_sse(const subsae_sae *sae, const int32_t *idx, const float *val,
                                   int64_t rows, int64_t slots, const float *t, float s_out,
                                   float *xhat, double *row_sse, double *sse, int threads);

/* The model's widths as a JSON array (NULL when out of memory), and a
 * JSON array back into `out` (SUBSAE_MATRYOSHKA_MAX room) and *count:
 * SUBSAE_E_FORMAT naming `where` unless it holds valid widths of a TopK or
 * BatchTopK model of d_sae features. For cfg.json and checkpoint.json. */
struct json_t;
struct json_t *subsae__matryoshka_json(const subsae_sae *sae);
int subsae__matryoshka_parse(const struct json_t *widths, const char *where, int activation,
                             int64_t d_sae, int64_t *out, int *count);

#endif
