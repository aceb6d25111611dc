/* A model's encoder precision (SUBSAE_SAE_PRECISION, ISSUE 17).
 *
 * A bf16 model holds only a bf16 W_enc: an encode of a few rows costs the
 * reading of W_enc, so half its bytes is the speed-up, and keeping the
 * float copy beside it would cost memory for nothing the encoders use.
 * What needs float weights (get_param, saving, folding the scales) widens
 * them, which is exact. */
#include "sae.h"

#include "encoder_gemm.h"
#include "kernels.h"

#include <string.h>

int64_t subsae__bf16_first_overflow(const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], sizeof u);
        /* From halfway between bf16's largest finite value (0x7f7f) and
         * infinity, round to nearest even gives infinity. */
        if ((u & 0x7fffffffu) >= 0x7f7f8000u)
            return i;
    }
    return n;
}

static int to_bf16(subsae_sae *sae, const char *fn)
{
    const int64_t n = sae->d_sae * sae->d_in;
    const int64_t bad = subsae__bf16_first_overflow(sae->W_enc, n);
    if (bad < n)
        return subsae__fail(SUBSAE_E_NONFINITE, SUBSAE_REASON_NONFINITE_INPUT,
                            "%s: W_enc[%lld] = %g is beyond bf16's range", fn, (long long)bad,
                            (double)sae->W_enc[bad]);
    uint16_t *w = subsae__malloc((size_t)n * sizeof *w);
    if (!w)
        return subsae__fail_nomem("bf16 W_enc", (size_t)n * sizeof *w);
    subsae__bf16_round(w, sae->W_enc, n);
    subsae__free(sae->W_enc);
    sae->W_enc = NULL;
    sae->W_enc_bf16 = w;
    sae->precision = SUBSAE__BF16;
    return SUBSAE_OK;
}

/* A float copy of a bf16 model's W_enc into *out (subsae__free it). */
static int widened(const subsae_sae *sae, const char *what, float **out)
{
    const int64_t n = sae->d_sae * sae->d_in;
    float *w = subsae__malloc((size_t)n * sizeof *w);
    if (!w)
        return subsae__fail_nomem(what, (size_t)n * sizeof *w);
    subsae__f32_from_bf16(w, sae->W_enc_bf16, n);
    *out = w;
    return SUBSAE_OK;
}

static int to_fp32(subsae_sae *sae)
{
    float *w = NULL;
    int rc = widened(sae, "W_enc", &w);
    if (rc)
        return rc;
    subsae__free(sae->W_enc_bf16);
    sae->W_enc_bf16 = NULL;
    sae->W_enc = w;
    sae->precision = SUBSAE__FP32;
    return SUBSAE_OK;
}

int subsae__sae_set_precision(subsae_sae *sae, int64_t precision, const char *fn)
{
    if (precision == SUBSAE_PRECISION_BF16 && !subsae__bf16_native())
        return subsae__fail(SUBSAE_E_UNSUPPORTED, SUBSAE_REASON_BAD_VALUE,
                            "%s: precision bf16 needs a CPU that multiplies bf16 natively "
                            "(AVX512_BF16 or AMX); oneDNN reports %s here. Use fp32, or auto "
                            "(bf16 where the CPU has it, fp32 elsewhere)",
                            fn, subsae__gemm_isa());
    const int want = subsae__precision_resolve((int)precision);
    if (want == sae->precision)
        return SUBSAE_OK;
    return want == SUBSAE__BF16 ? to_bf16(sae, fn) : to_fp32(sae);
}

int subsae__sae_float_view(const subsae_sae *sae, subsae_sae *view, float **owned,
                           const char *what)
{
    *view = *sae;
    *owned = NULL;
    if (sae->precision != SUBSAE__BF16)
        return SUBSAE_OK;
    float *w = NULL;
    int rc = widened(sae, what, &w);
    if (rc)
        return rc;
    view->W_enc = w;
    view->W_enc_bf16 = NULL;
    view->precision = SUBSAE__FP32;
    *owned = w;
    return SUBSAE_OK;
}
