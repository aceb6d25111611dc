/* The per-feature backward with the extra terms (losses.c). */
#ifndef SUBSAE_LOSSES_H
#define SUBSAE_LOSSES_H

#include "internal.h"

/* Gradients of one feature from its pairs (see losses.c): the
 * reconstruction through the active pairs, the L1 term (dz_add per active
 * pair), the JumpReLU threshold (pre != NULL) and, accumulated, AuxK. */
void subsae__feature_backward_ex(const int32_t *rows, const float *z, const float *pre,
                                 int64_t count, const float *g, int64_t g_stride, int64_t d_out,
                                 const float *xin, int64_t xin_stride, int64_t d_in,
                                 const float *wdec, float dz_add, float thr, float inv_bw,
                                 float l0_w, bool accumulate, float *gdec, float *genc,
                                 float *gbenc, double *gthr, double *zsum);

/* One feature of a gated model (losses.c): its pairs are the step's open
 * gates (pre_gate = pi > 0) with the magnitude path's value z (0 when the
 * magnitude is not positive). */
struct subsae__gated_feature {
    const int32_t *rows; /* count rows of the pairs */
    const float *z, *pi; /* the pairs' values and gate pre-activations */
    int64_t count;
    const float *g;      /* n x d_out: dL/dx_hat */
    const float *g_gate; /* n x d_out: dL/d(the gate path's reconstruction) */
    int64_t d_out, d_in;
    const float *xin;              /* n x d_in: encoder input */
    const float *wdec;             /* the decoder row */
    float scale, b_mag;            /* exp(r_mag), b_mag of the feature */
    float l1_dz;                   /* dL/dpi of the L1 term at an open gate */
    float *gdec, *genc;            /* out: d_out, d_in (overwritten) */
    float gb_gate, gr_mag, gb_mag; /* out */
    double pi_sum;                 /* out: sum of pi over the pairs */
    int32_t active;                /* out: pairs with z > 0 */
};

/* The gradients of one gated feature: reconstruction through z (decoder
 * row, magnitude path: W_enc row times exp(r_mag), r_mag, b_mag), the gate
 * path through the frozen decoder (g_gate) and the L1 term (W_enc row,
 * b_gate). The decoder row's L1 term (from pi_sum) is the caller's. */
void subsae__feature_backward_gated(struct subsae__gated_feature *f);

#endif
