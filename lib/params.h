/* The trainer's state as one table (llm.c's ParameterTensors in spirit):
 * every tensor of the model and of its training, with its name (as in a
 * checkpoint's state file), shape, dtype, role, when it exists and where
 * it lives. Code that walks the state (checkpoint save and load; later
 * Adam, the collective weights hash, the model's files) walks this table,
 * so the layout is written once. The state file is written in the table's
 * order (its writer places the data by element size, largest first, and
 * keeps this order within a size): changing it changes the file's bytes. */
#ifndef SUBSAE_PARAMS_H
#define SUBSAE_PARAMS_H

#include "trainer_types.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What a tensor is for. */
enum subsae__param_role {
    SUBSAE__ROLE_WEIGHT,    /* a model parameter Adam trains (W_enc, b_enc, W_dec, b_dec;
                             * gated: r_mag, b_mag) */
    SUBSAE__ROLE_THRESHOLD, /* the model's threshold (derived from training state) */
    SUBSAE__ROLE_TRAINED,   /* a trained parameter the trainer holds (JumpReLU's
                             * log-thresholds; the model keeps exp of it) */
    SUBSAE__ROLE_ADAM_M,    /* Adam's first moment of `moment_of` */
    SUBSAE__ROLE_ADAM_V,    /* Adam's second moment of `moment_of` (>= 0) */
    SUBSAE__ROLE_COUNT,     /* token counts: int64_t in memory, F64 in files (exact
                             * below 2^53) */
    SUBSAE__ROLE_SUM        /* metrics-window sums (F64) */
};

/* A dimension of a shape, in the model's sizes. */
enum subsae__param_dim { SUBSAE__DIM_D_IN, SUBSAE__DIM_D_OUT, SUBSAE__DIM_D_SAE };

/* Which object holds the pointer to the tensor's data. */
enum subsae__param_owner { SUBSAE__IN_SAE, SUBSAE__IN_TRAINER };

struct subsae__param {
    const char *name; /* "W_enc", "adam_m.W_enc", ... */
    int dtype;        /* SUBSAE_DTYPE_F32 or _F64: the dtype in files */
    int role;         /* enum subsae__param_role */
    int ndim;         /* 1 or 2 */
    int dims[2];      /* enum subsae__param_dim of each axis */
    int moment_of;    /* ADAM_M / ADAM_V: index (in the table) of the parameter; else -1 */
    bool jumprelu_only;
    bool gated_only; /* gated SAEs only (r_mag, b_mag and their moments) */
    bool skip_only;  /* skip transcoders only (W_skip and its moments) */
    int owner;       /* enum subsae__param_owner */
    size_t offset;   /* of the data pointer in struct subsae_sae / subsae_trainer */
    bool has_grad;   /* trained by Adam: its gradient is in the step's workspace */
    size_t grad;     /* of the gradient pointer in struct subsae__workspace */
};

/* The table, in state-file order (within an element size); it has at most SUBSAE__MAX_PARAMS
 * entries (for arrays indexed like it). */
enum { SUBSAE__MAX_PARAMS = 32 };
extern const struct subsae__param subsae__params[];
extern const int subsae__n_params;

/* Which tensors a model has: its activation, with SUBSAE__PARAM_SKIP set
 * for a skip transcoder (the `activation` argument below is this key). */
enum { SUBSAE__PARAM_SKIP = 1 << 8 };
static inline int subsae__param_key(int activation, bool skip)
{
    return activation | (skip ? SUBSAE__PARAM_SKIP : 0);
}
#define SUBSAE__PARAM_KEY(s) subsae__param_key((s)->activation, (s)->skip)

/* Whether the tensor exists for a model of `activation` (a key, above). */
bool subsae__param_present(const struct subsae__param *p, int activation);

/* The present tensor after p (the first when p is NULL) for a model of
 * `activation`, or NULL at the end. */
const struct subsae__param *subsae__param_next(const struct subsae__param *p, int activation);

/* Every present tensor of a model of `activation`, in table order. */
#define SUBSAE__FOR_EACH_PARAM(p, activation)                                       \
    for (const struct subsae__param *p = subsae__param_next(NULL, (activation)); p; \
         p = subsae__param_next(p, (activation)))

/* The shape of p for model s into shape[0..ndim); returns ndim. */
int subsae__param_shape(const struct subsae__param *p, const subsae_sae *s, int64_t shape[2]);

/* Elements of p for model s. */
int64_t subsae__param_elements(const struct subsae__param *p, const subsae_sae *s);

/* The tensor's data: in the model s or in the trainer t (NULL when p is
 * the trainer's and t is NULL, e.g. a model without a trainer). Its
 * element type is float (F32), double (F64), or int64_t (ROLE_COUNT). */
void *subsae__param_data(const struct subsae__param *p, const subsae_trainer *t,
                         const subsae_sae *s);

/* Points the tensor's pointer in t or s at `data` (allocation and free). */
void subsae__param_set_data(const struct subsae__param *p, subsae_trainer *t, subsae_sae *s,
                            void *data);

/* The step's gradient of p in ws (compact rows per touched slot for the
 * tensors whose rows are features', whole otherwise), or NULL when p is
 * not trained by Adam. */
float *subsae__param_grad(const struct subsae__param *p, const struct subsae__workspace *ws);

/* Adam's moment (SUBSAE__ROLE_ADAM_M or _ADAM_V) of the trained p. */
const struct subsae__param *subsae__param_moment(const struct subsae__param *p, int role);

/* Bytes of one element in memory: float, double, or int64_t (ROLE_COUNT). */
size_t subsae__param_element_bytes(const struct subsae__param *p);

#endif
