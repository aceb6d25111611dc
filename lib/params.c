/* The trainer's state table (see params.h). */
#include "params.h"

#include <string.h>

#define IN_SAE(field) .owner = SUBSAE__IN_SAE, .offset = offsetof(struct subsae_sae, field)
#define IN_TRAINER(field) \
    .owner = SUBSAE__IN_TRAINER, .offset = offsetof(struct subsae_trainer, field)
#define MATRIX(d0, d1) .ndim = 2, .dims = {SUBSAE__DIM_##d0, SUBSAE__DIM_##d1}
#define VECTOR(d0) .ndim = 1, .dims = {SUBSAE__DIM_##d0, 0}
#define F32(name_, role_) .name = name_, .dtype = SUBSAE_DTYPE_F32, .role = SUBSAE__ROLE_##role_
#define F64(name_, role_) .name = name_, .dtype = SUBSAE_DTYPE_F64, .role = SUBSAE__ROLE_##role_
#define PLAIN .moment_of = -1
#define GRAD(field) .has_grad = true, .grad = offsetof(struct subsae__workspace, field)
/* Adam's two moments of the parameter at table index `of`. */
#define MOMENTS(of, field, shape)                                                      \
    {F32("adam_m." #field, ADAM_M), shape, .moment_of = (of), IN_TRAINER(m_##field)},  \
    {                                                                                  \
        F32("adam_v." #field, ADAM_V), shape, .moment_of = (of), IN_TRAINER(v_##field) \
    }

/* Indices of the trained parameters, for their moments. */
enum {
    W_ENC,
    B_ENC,
    W_DEC,
    B_DEC,
    THRESHOLD,
    LOG_THRESHOLD = 18,
    R_MAG = 21,
    B_MAG = 24,
    W_SKIP = 27
};

/* A gated model's per-feature vector (in the model) and its moments. */
#define GATED_VECTOR(index, field)                                                           \
    [index] = {F32(#field, WEIGHT), VECTOR(D_SAE), PLAIN,                                    \
               .gated_only = true,  IN_SAE(field), GRAD(g_##field)},                         \
    {F32("adam_m." #field, ADAM_M), VECTOR(D_SAE), .moment_of = (index), .gated_only = true, \
     IN_TRAINER(m_##field)},                                                                 \
    {                                                                                        \
        F32("adam_v." #field, ADAM_V), VECTOR(D_SAE),                                        \
            .moment_of = (index), .gated_only = true, IN_TRAINER(v_##field)                  \
    }

const struct subsae__param subsae__params[] = {
    [W_ENC] = {F32("W_enc", WEIGHT), MATRIX(D_SAE, D_IN), PLAIN, IN_SAE(W_enc), GRAD(g_W_enc)},
    [B_ENC] = {F32("b_enc", WEIGHT), VECTOR(D_SAE), PLAIN, IN_SAE(b_enc), GRAD(g_b_enc)},
    [W_DEC] = {F32("W_dec", WEIGHT), MATRIX(D_SAE, D_OUT), PLAIN, IN_SAE(W_dec), GRAD(g_W_dec)},
    [B_DEC] = {F32("b_dec", WEIGHT), VECTOR(D_OUT), PLAIN, IN_SAE(b_dec), GRAD(g_b_dec)},
    [THRESHOLD] = {F32("threshold", THRESHOLD), VECTOR(D_SAE), PLAIN, IN_SAE(threshold)},
    MOMENTS(W_ENC, W_enc, MATRIX(D_SAE, D_IN)),
    MOMENTS(B_ENC, b_enc, VECTOR(D_SAE)),
    MOMENTS(W_DEC, W_dec, MATRIX(D_SAE, D_OUT)),
    MOMENTS(B_DEC, b_dec, VECTOR(D_OUT)),
    {F64("last_fired", COUNT), VECTOR(D_SAE), PLAIN, IN_TRAINER(last_fired)},
    {F64("window_cur.fires", COUNT), VECTOR(D_SAE), PLAIN, IN_TRAINER(cur.fires)},
    {F64("window_prev.fires", COUNT), VECTOR(D_SAE), PLAIN, IN_TRAINER(prev.fires)},
    {F64("window_cur.sum_t", SUM), VECTOR(D_OUT), PLAIN, IN_TRAINER(cur.sum_t)},
    {F64("window_prev.sum_t", SUM), VECTOR(D_OUT), PLAIN, IN_TRAINER(prev.sum_t)},
    /* JumpReLU only, kept last so that the other models' files end before
     * them. */
    [LOG_THRESHOLD] = {F32("log_threshold", TRAINED), VECTOR(D_SAE), PLAIN,
                       .jumprelu_only = true, IN_TRAINER(log_threshold), GRAD(g_thr)},
    {F32("adam_m.log_threshold", ADAM_M), VECTOR(D_SAE), .moment_of = LOG_THRESHOLD,
     .jumprelu_only = true, IN_TRAINER(m_log_threshold)},
    {F32("adam_v.log_threshold", ADAM_V), VECTOR(D_SAE), .moment_of = LOG_THRESHOLD,
     .jumprelu_only = true, IN_TRAINER(v_log_threshold)},
    /* Gated only (the gate's bias is b_enc), after the others for the same
     * reason. */
    GATED_VECTOR(R_MAG, r_mag),
    GATED_VECTOR(B_MAG, b_mag),
    /* Skip transcoders only, after the rest for the same reason. W_skip
     * is d_out x d_in (SAELens' layout), one whole tensor for Adam. */
    [W_SKIP] = {F32("W_skip", WEIGHT), MATRIX(D_OUT, D_IN), PLAIN, .skip_only = true,
                IN_SAE(W_skip), GRAD(g_W_skip)},
    {F32("adam_m.W_skip", ADAM_M), MATRIX(D_OUT, D_IN), .moment_of = W_SKIP, .skip_only = true,
     IN_TRAINER(m_W_skip)},
    {F32("adam_v.W_skip", ADAM_V), MATRIX(D_OUT, D_IN), .moment_of = W_SKIP, .skip_only = true,
     IN_TRAINER(v_W_skip)},
};
_Static_assert(LOG_THRESHOLD + 3 == R_MAG && R_MAG + 3 == B_MAG && B_MAG + 3 == W_SKIP,
               "table indices: each parameter is followed by its two moments");
_Static_assert(sizeof subsae__params / sizeof subsae__params[0] == W_SKIP + 3,
               "W_SKIP is the index of W_skip");
_Static_assert(sizeof subsae__params / sizeof subsae__params[0] <= SUBSAE__MAX_PARAMS,
               "SUBSAE__MAX_PARAMS bounds the table");
const int subsae__n_params = (int)(sizeof subsae__params / sizeof subsae__params[0]);

bool subsae__param_present(const struct subsae__param *p, int activation)
{
    if (p->skip_only && !(activation & SUBSAE__PARAM_SKIP))
        return false;
    const int kind = activation & ~SUBSAE__PARAM_SKIP;
    return (!p->jumprelu_only || kind == SUBSAE_ACT_JUMPRELU) &&
           (!p->gated_only || kind == SUBSAE_ACT_GATED);
}

const struct subsae__param *subsae__param_next(const struct subsae__param *p, int activation)
{
    const struct subsae__param *end = subsae__params + subsae__n_params;
    for (p = p ? p + 1 : subsae__params; p < end; p++)
        if (subsae__param_present(p, activation))
            return p;
    return NULL;
}

static int64_t dim_size(int dim, const subsae_sae *s)
{
    switch (dim) {
    case SUBSAE__DIM_D_IN: return s->d_in;
    case SUBSAE__DIM_D_OUT: return s->d_out;
    default: return s->d_sae;
    }
}

int subsae__param_shape(const struct subsae__param *p, const subsae_sae *s, int64_t shape[2])
{
    for (int i = 0; i < p->ndim; i++)
        shape[i] = dim_size(p->dims[i], s);
    return p->ndim;
}

int64_t subsae__param_elements(const struct subsae__param *p, const subsae_sae *s)
{
    int64_t shape[2], n = 1;
    for (int i = 0, nd = subsae__param_shape(p, s, shape); i < nd; i++)
        n *= shape[i];
    return n;
}

void *subsae__param_data(const struct subsae__param *p, const subsae_trainer *t,
                         const subsae_sae *s)
{
    const void *owner = p->owner == SUBSAE__IN_SAE ? (const void *)s : (const void *)t;
    if (!owner)
        return NULL;
    void *data;
    memcpy(&data, (const char *)owner + p->offset, sizeof data);
    return data;
}

void subsae__param_set_data(const struct subsae__param *p, subsae_trainer *t, subsae_sae *s,
                            void *data)
{
    void *owner = p->owner == SUBSAE__IN_SAE ? (void *)s : (void *)t;
    memcpy((char *)owner + p->offset, &data, sizeof data);
}

size_t subsae__param_element_bytes(const struct subsae__param *p)
{
    return p->role == SUBSAE__ROLE_COUNT  ? sizeof(int64_t)
           : p->dtype == SUBSAE_DTYPE_F64 ? sizeof(double)
                                          : sizeof(float);
}

float *subsae__param_grad(const struct subsae__param *p, const struct subsae__workspace *ws)
{
    if (!p->has_grad)
        return NULL;
    float *grad;
    memcpy(&grad, (const char *)ws + p->grad, sizeof grad);
    return grad;
}

const struct subsae__param *subsae__param_moment(const struct subsae__param *p, int role)
{
    const int index = (int)(p - subsae__params);
    for (int i = 0; i < subsae__n_params; i++)
        if (subsae__params[i].moment_of == index && subsae__params[i].role == role)
            return &subsae__params[i];
    return NULL;
}
