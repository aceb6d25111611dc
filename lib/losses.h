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

#endif
