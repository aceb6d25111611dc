/* Matryoshka SAEs (Bussmann et al. 2025; Nabeshima 2024): the features are
 * cut into nested prefixes [0, w_0) within [0, w_1) ... within [0, d_sae),
 * each of which must reconstruct on its own from its own features of the
 * model's codes. The model only records the widths: encoding is that of
 * the plain model, and the trainer's loss (trainer_step.c) and the
 * evaluation of each prefix read them from here. */
#include "matryoshka.h"

#include "kernels.h"

#include <jansson.h>
#include <omp.h>
#include <string.h>

int subsae__matryoshka_check(const char *fn, const int64_t *widths, int count, int64_t d_sae)
{
    if (count < 0 || count > SUBSAE_MATRYOSHKA_MAX)
        return subsae__fail_option(fn, "%d Matryoshka prefixes (0 to %d)", count,
                                   SUBSAE_MATRYOSHKA_MAX);
    if (count > 0 && !widths)
        return subsae__fail_null(fn, "widths");
    for (int j = 0; j < count; j++)
        if (widths[j] < (j ? widths[j - 1] + 1 : 1))
            return subsae__fail_option(
                fn, "Matryoshka width %d is %lld: widths must increase strictly from 1", j,
                (long long)widths[j]);
    if (count > 0 && d_sae > 0 && widths[count - 1] != d_sae)
        return subsae__fail_option(
            fn, "the last Matryoshka width %lld must equal the %lld features",
            (long long)widths[count - 1], (long long)d_sae);
    return SUBSAE_OK;
}

void subsae__matryoshka_copy(subsae_sae *sae, const subsae_sae *from)
{
    sae->matryoshka_count = from->matryoshka_count;
    memcpy(sae->matryoshka, from->matryoshka, sizeof sae->matryoshka);
}

int subsae__matryoshka_prefix_of(const subsae_sae *sae, int64_t f)
{
    int j = 0;
    while (j + 1 < sae->matryoshka_count && f >= sae->matryoshka[j])
        j++;
    return j;
}

int subsae__matryoshka_levels(const subsae_sae *sae)
{
    return sae->matryoshka_count > 0 ? sae->matryoshka_count : 1;
}

int subsae_sae_get_matryoshka(const subsae_sae *sae, int64_t *widths, int capacity, int *count)
{
    static const char *fn = "subsae_sae_get_matryoshka";
    SUBSAE__NOT_NULL(fn, sae);
    SUBSAE__NOT_NULL(fn, count);
    if (capacity < 0)
        return subsae__fail_option(fn, "capacity %d", capacity);
    if (capacity > 0 && !widths)
        return subsae__fail_null(fn, "widths");
    *count = sae->matryoshka_count;
    for (int j = 0; j < capacity && j < sae->matryoshka_count; j++)
        widths[j] = sae->matryoshka[j];
    return SUBSAE_OK;
}

/* Row i decoded from its features below `width`, and its squared error. */
static double prefix_row_sse(const subsae_sae *sae, const int32_t *idx, const float *val,
                             int64_t slots, int64_t width, const float *t, float s_out,
                             float *out)
{
    const int64_t d = sae->d_out;
    memcpy(out, sae->b_dec, (size_t)d * sizeof *out);
    for (int64_t q = 0; q < slots; q++) {
        if (idx[q] < 0 || idx[q] >= width)
            continue;
        const float *w = sae->W_dec + (int64_t)idx[q] * d;
        for (int64_t j = 0; j < d; j++)
            out[j] += val[q] * w[j];
    }
    double e = 0.0;
    for (int64_t j = 0; j < d; j++) {
        const double diff = (double)out[j] - (double)t[j] * s_out;
        e += diff * diff;
    }
    return e;
}

void subsae__matryoshka_prefix_sse(const subsae_sae *sae, const int32_t *idx, const float *val,
                                   int64_t rows, int64_t slots, const float *t, float s_out,
                                   float *xhat, double *row_sse, double *sse, int threads)
{
    const int64_t d = sae->d_out;
    for (int p = 0; p + 1 < sae->matryoshka_count; p++) {
        const int64_t width = sae->matryoshka[p];
#pragma omp parallel for schedule(static) \
    num_threads(subsae__team(threads, (double)rows * (double)(slots + 1) * (double)d))
        for (int64_t i = 0; i < rows; i++)
            row_sse[i] = prefix_row_sse(sae, idx + i * slots, val + i * slots, slots, width,
                                        t + i * d, s_out, xhat + i * d);
        for (int64_t i = 0; i < rows; i++)
            sse[p] += row_sse[i];
    }
}

json_t *subsae__matryoshka_json(const subsae_sae *sae)
{
    json_t *widths = json_array();
    for (int j = 0; widths && j < sae->matryoshka_count; j++)
        if (json_array_append_new(widths, json_integer((json_int_t)sae->matryoshka[j]))) {
            json_decref(widths);
            return NULL;
        }
    return widths;
}

int subsae__matryoshka_parse(const json_t *widths, const char *where, int activation,
                             int64_t d_sae, int64_t *out, int *count)
{
    const size_t n = json_array_size(widths);
    bool ok = json_is_array(widths) && n >= 1 && n <= SUBSAE_MATRYOSHKA_MAX &&
              (activation == SUBSAE_ACT_TOPK || activation == SUBSAE_ACT_BATCHTOPK);
    for (size_t j = 0; ok && j < n; j++) {
        const json_t *w = json_array_get(widths, j);
        ok = json_is_integer(w);
        out[j] = ok ? json_integer_value(w) : 0;
    }
    if (!ok || subsae__matryoshka_check(where, out, (int)n, d_sae))
        return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_VALUE,
                            "%s: 'matryoshka_widths' must be 1 to %d strictly increasing "
                            "widths ending at d_sae, of a TopK or BatchTopK model",
                            where, SUBSAE_MATRYOSHKA_MAX);
    *count = (int)n;
    return SUBSAE_OK;
}
