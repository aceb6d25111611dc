/* subsae_trainer as an object: creation and options, metadata, the
 * training state beside the model (Adam moments, counters, metrics
 * windows), metrics and phase timings. Of the trainer it calls only the
 * workspace (to free it); initialisation is in trainer_init.c, fit and
 * the step in trainer.c. */
#include "trainer_state.h"

#include "matryoshka.h"
#include "options.h"
#include "params.h"
#include "trainer_workspace.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* ---- creation and options ------------------------------------------------ */

static void set_defaults(subsae_trainer *t);

int subsae_trainer_create(subsae_trainer **out)
{
    if (!out)
        return subsae__fail_null("subsae_trainer_create", "out");
    subsae_trainer *t = subsae__calloc(1, sizeof *t);
    if (!t)
        return subsae__fail_nomem("trainer", sizeof *t);
    set_defaults(t);
    t->fit_end_step = -1;
    subsae__trainer_forget_last_step(t, NAN);
    t->coll.size = 1;
    *out = t;
    return SUBSAE_OK;
}

/* Every tensor the trainer holds (params.h), present or not. */
void subsae__trainer_free_state(subsae_trainer *t)
{
    for (int i = 0; i < subsae__n_params; i++) {
        const struct subsae__param *p = &subsae__params[i];
        if (p->owner == SUBSAE__IN_TRAINER) {
            subsae__free(subsae__param_data(p, t, NULL));
            subsae__param_set_data(p, t, NULL, NULL);
        }
    }
    memset(&t->cur, 0, sizeof t->cur);
    memset(&t->prev, 0, sizeof t->prev);
    subsae__trainer_workspace_release(t);
    t->transcoder = false;
}

void subsae_trainer_free(subsae_trainer *t)
{
    if (!t)
        return;
    subsae_sae_free(t->sae);
    subsae__trainer_free_state(t);
    subsae_batches_free(t->batches);
    subsae__collective_release(&t->coll);
    subsae__free(t->coll_buf);
    subsae__free(t->metadata);
    subsae__free(t);
}

void subsae__trainer_forget_last_step(subsae_trainer *t, double loss)
{
    t->last_loss = loss;
    t->last_lr = NAN;
    t->last_disagreement = NAN;
    for (int i = 0; i < 3; i++)
        t->last_loss_parts[i] = t->last_batch[i] = NAN;
}

int subsae_trainer_set_metadata(subsae_trainer *t, const char *json)
{
    static const char *fn = "subsae_trainer_set_metadata";
    if (!t)
        return subsae__fail_null(fn, "t");
    char *text;
    int rc = subsae__metadata_normalize(fn, json, &text);
    if (!rc && t->sae)
        rc = subsae__sae_replace_metadata(t->sae, text);
    if (rc) {
        subsae__free(text);
        return rc;
    }
    subsae__free(t->metadata);
    t->metadata = text;
    return SUBSAE_OK;
}

int subsae_trainer_get_metadata(const subsae_trainer *t, const char **json)
{
    static const char *fn = "subsae_trainer_get_metadata";
    if (!t)
        return subsae__fail_null(fn, "t");
    if (!json)
        return subsae__fail_null(fn, "json");
    *json = t->metadata ? t->metadata : "{}";
    return SUBSAE_OK;
}

static const struct subsae__option *find_option(int option)
{
    int64_t n;
    const struct subsae__option *table = subsae__trainer_option_table(&n);
    return subsae__option_find(table, n, option);
}

/* Every option field to its default from the table. */
static void set_defaults(subsae_trainer *t)
{
    int64_t n;
    const struct subsae__option *table = subsae__trainer_option_table(&n);
    for (int64_t i = 0; i < n; i++) {
        const struct subsae__option *o = &table[i];
        if (o->type == SUBSAE_OPTION_INT)
            memcpy((char *)t + o->offset, &o->int_default, sizeof o->int_default);
        else
            memcpy((char *)t + o->offset, &o->default_value, sizeof o->default_value);
    }
}

static int structural(const char *fn, const subsae_trainer *t, const struct subsae__option *o)
{
    if (!t->initialised || !(o->flags & SUBSAE_OPTION_STRUCTURAL))
        return SUBSAE_OK;
    return subsae__fail(SUBSAE_E_STATE, SUBSAE_REASON_WRONG_STATE,
                        "%s: %s cannot change after subsae_trainer_init", fn, o->name);
}

const char *subsae__trainer_option_name(int option, bool *is_double)
{
    const struct subsae__option *o = find_option(option);
    if (is_double)
        *is_double = o && o->type == SUBSAE_OPTION_DOUBLE;
    return o ? o->name : NULL;
}

void *subsae__trainer_option_field(subsae_trainer *t, int option)
{
    const struct subsae__option *o = find_option(option);
    return o ? (char *)t + o->offset : NULL;
}

/* Store a value the table's checks let through, unless the option is
 * structural and the trainer initialised; every option is 8 bytes. */
static int store(const char *fn, subsae_trainer *t, const struct subsae__option *o,
                 const void *value)
{
    int rc = structural(fn, t, o);
    if (rc)
        return rc;
    memcpy((char *)t + o->offset, value, 8);
    return SUBSAE_OK;
}

/* A getter: the value of `option` of `type` as configured, except the
 * subspace dimension ASI used once initialised and the learning rate in
 * effect; every option is 8 bytes. `use` names the other type's getter. */
static int get_value(const char *fn, const subsae_trainer *t, int option, int type, void *value,
                     const char *use)
{
    int rc;
    const struct subsae__option *o = subsae__option_get(fn, SUBSAE_OBJECT_TRAINER, t, value,
                                                        option, type, use, &rc);
    if (!o)
        return rc;
    const double lr = subsae__trainer_lr(t);
    const int64_t precision = t->precision_used;
    const void *from = (const char *)t + o->offset;
    if (option == SUBSAE_TRAIN_SUBSPACE_DIM && t->initialised)
        from = &t->subspace_dim_used;
    else if (option == SUBSAE_TRAIN_PRECISION && t->initialised)
        from = &precision;
    else if (option == SUBSAE_TRAIN_LR)
        from = &lr;
    memcpy(value, from, 8);
    return SUBSAE_OK;
}

int subsae_trainer_set_int(subsae_trainer *t, int option, int64_t value)
{
    static const char *fn = "subsae_trainer_set_int";
    int rc;
    const struct subsae__option *o = subsae__option_set_int(
        fn, SUBSAE_OBJECT_TRAINER, t, option, value, "subsae_trainer_set_double", &rc);
    return o ? store(fn, t, o, &value) : rc;
}

int subsae_trainer_get_int(const subsae_trainer *t, int option, int64_t *value)
{
    return get_value("subsae_trainer_get_int", t, option, SUBSAE_OPTION_INT, value,
                     "subsae_trainer_get_double");
}

double subsae__trainer_default_lr(int64_t features)
{
    return 2e-4 / sqrt((double)features / 16384.0);
}

double subsae__trainer_lr(const subsae_trainer *t)
{
    return t->lr == 0.0 ? subsae__trainer_default_lr(t->features) : t->lr;
}

int subsae_trainer_set_double(subsae_trainer *t, int option, double value)
{
    static const char *fn = "subsae_trainer_set_double";
    int rc;
    const struct subsae__option *o = subsae__option_set_double(
        fn, SUBSAE_OBJECT_TRAINER, t, option, value, "subsae_trainer_set_int", &rc);
    return o ? store(fn, t, o, &value) : rc;
}

int subsae_trainer_get_double(const subsae_trainer *t, int option, double *value)
{
    return get_value("subsae_trainer_get_double", t, option, SUBSAE_OPTION_DOUBLE, value,
                     "subsae_trainer_get_int");
}

int subsae_trainer_set_callback(subsae_trainer *t, subsae_callback callback, void *user)
{
    if (!t)
        return subsae__fail_null("subsae_trainer_set_callback", "t");
    t->callback = callback;
    t->user = callback ? user : NULL;
    return SUBSAE_OK;
}

int subsae_trainer_set_matryoshka(subsae_trainer *t, const int64_t *widths, int count)
{
    static const char *fn = "subsae_trainer_set_matryoshka";
    SUBSAE__NOT_NULL(fn, t);
    if (t->initialised)
        return subsae__fail(SUBSAE_E_STATE, SUBSAE_REASON_WRONG_STATE,
                            "%s: the prefixes are part of the model: set them before "
                            "subsae_trainer_init",
                            fn);
    /* The last width is checked against FEATURES by init: the options may
     * still change. */
    int rc = subsae__matryoshka_check(fn, widths, count, 0);
    if (rc)
        return rc;
    memset(t->matryoshka, 0, sizeof t->matryoshka);
    if (count > 0)
        memcpy(t->matryoshka, widths, (size_t)count * sizeof *widths);
    t->matryoshka_count = count;
    return SUBSAE_OK;
}

const subsae_sae *subsae_trainer_sae(const subsae_trainer *t)
{
    return t && t->initialised ? t->sae : NULL;
}

void subsae__trainer_log(const subsae_trainer *t, const char *phase, const char *fmt, ...)
{
    if (!t->callback)
        return;
    char message[256];
    va_list args;
    va_start(args, fmt);
    vsnprintf(message, sizeof message, fmt, args);
    va_end(args);
    /* A log line cannot cancel: the return value is ignored. */
    (void)t->callback(SUBSAE_EVENT_LOG, phase, -1, -1, message, t->user);
}

/* ---- state and workspace ------------------------------------------------- */

void subsae__trainer_window_clear(struct subsae__window *w, int64_t d_out, int64_t d_sae)
{
    w->tokens = 0;
    w->sse = w->sum_t2 = 0.0;
    w->active = 0;
    memset(w->sum_t, 0, (size_t)d_out * sizeof *w->sum_t);
    memset(w->fires, 0, (size_t)d_sae * sizeof *w->fires);
}

int subsae__trainer_alloc_state(subsae_trainer *t)
{
    const subsae_sae *s = t->sae;
    SUBSAE__FOR_EACH_PARAM(p, SUBSAE__PARAM_KEY(s))
    {
        if (p->owner != SUBSAE__IN_TRAINER)
            continue;
        size_t n = (size_t)subsae__param_elements(p, s), size = subsae__param_element_bytes(p);
        void *data = subsae__calloc(n, size);
        if (!data)
            return subsae__fail_nomem(p->name, n * size);
        subsae__param_set_data(p, t, NULL, data);
    }
    return SUBSAE_OK;
}

/* ---- metrics --------------------------------------------------------------------- */

int subsae_trainer_metrics(const subsae_trainer *t, double *metrics, int64_t n_metrics)
{
    static const char *fn = "subsae_trainer_metrics";
    if (!t)
        return subsae__fail_null(fn, "t");
    if (n_metrics > 0 && !metrics)
        return subsae__fail_null(fn, "metrics");
    if (n_metrics < 0)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE, "%s: n_metrics %lld", fn,
                            (long long)n_metrics);
    if (!t->initialised)
        return subsae__fail(SUBSAE_E_STATE, SUBSAE_REASON_WRONG_STATE,
                            "%s: call subsae_trainer_init first", fn);
    const subsae_sae *s = t->sae;
    double v[SUBSAE_METRIC_COUNT];
    for (int i = 0; i < SUBSAE_METRIC_COUNT; i++)
        v[i] = NAN;
    const struct subsae__window *w = t->prev_valid ? &t->prev : &t->cur;
    if (w->tokens > 0) {
        const double n = (double)w->tokens;
        double mean_sq = 0.0;
        for (int64_t j = 0; j < s->d_out; j++)
            mean_sq += w->sum_t[j] * w->sum_t[j];
        double sst = w->sum_t2 - mean_sq / n;
        v[SUBSAE_METRIC_MSE] = w->sse / n / (s->output_scale * s->output_scale);
        v[SUBSAE_METRIC_FVU] = sst > 0.0 ? w->sse / sst : NAN;
        v[SUBSAE_METRIC_EXPLAINED_VARIANCE] = 1.0 - v[SUBSAE_METRIC_FVU];
        v[SUBSAE_METRIC_L0] = (double)w->active / n;
        int64_t dense = 0, zero = 0;
        for (int64_t f = 0; f < s->d_sae; f++) {
            dense += (double)w->fires[f] > 0.1 * n;
            zero += w->fires[f] == 0;
        }
        v[SUBSAE_METRIC_DENSE_FRACTION] = (double)dense / (double)s->d_sae;
        v[SUBSAE_METRIC_ZERO_FREQUENCY_FRACTION] = (double)zero / (double)s->d_sae;
    }
    if (t->tokens > 0) {
        /* Dead: no fire within the last dead_window tokens (the whole run
         * when it is shorter). last_fired is 0 for a feature that never
         * fired. */
        int64_t horizon = t->tokens - t->dead_window;
        if (horizon < 0)
            horizon = 0;
        int64_t dead = 0;
        for (int64_t f = 0; f < s->d_sae; f++)
            dead += t->last_fired[f] <= horizon;
        v[SUBSAE_METRIC_DEAD_FEATURES] = (double)dead;
        v[SUBSAE_METRIC_DEAD_FRACTION] = (double)dead / (double)s->d_sae;
    }
    v[SUBSAE_METRIC_TOKENS] = (double)t->tokens;
    v[SUBSAE_METRIC_STEPS] = (double)t->step;
    v[SUBSAE_METRIC_LOSS] = t->last_loss;
    v[SUBSAE_METRIC_LR] = t->last_lr;
    v[SUBSAE_METRIC_LOSS_MSE] = t->last_loss_parts[0];
    v[SUBSAE_METRIC_LOSS_SPARSITY] = t->last_loss_parts[1];
    v[SUBSAE_METRIC_LOSS_AUX] = t->last_loss_parts[2];
    v[SUBSAE_METRIC_BF16_DISAGREEMENT] = t->last_disagreement;
    v[SUBSAE_METRIC_STEP_MSE] = t->last_batch[0];
    v[SUBSAE_METRIC_STEP_EXPLAINED_VARIANCE] = t->last_batch[1];
    v[SUBSAE_METRIC_STEP_L0] = t->last_batch[2];
    for (int64_t i = 0; i < n_metrics; i++)
        metrics[i] = i < SUBSAE_METRIC_COUNT ? v[i] : NAN;
    return SUBSAE_OK;
}

int subsae_trainer_feature_density(const subsae_trainer *t, double *density, int64_t n)
{
    static const char *fn = "subsae_trainer_feature_density";
    if (!t)
        return subsae__fail_null(fn, "t");
    if (!density)
        return subsae__fail_null(fn, "density");
    if (!t->initialised)
        return subsae__fail(SUBSAE_E_STATE, SUBSAE_REASON_WRONG_STATE,
                            "%s: call subsae_trainer_init first", fn);
    if (n != t->sae->d_sae)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_SIZE_MISMATCH,
                            "%s: room for %lld densities, the model has d_sae %lld features",
                            fn, (long long)n, (long long)t->sae->d_sae);
    /* The window of subsae_trainer_metrics. */
    const struct subsae__window *w = t->prev_valid ? &t->prev : &t->cur;
    if (w->tokens == 0)
        return subsae__fail(SUBSAE_E_STATE, SUBSAE_REASON_WRONG_STATE,
                            "%s: no training step yet", fn);
    for (int64_t f = 0; f < n; f++)
        density[f] = (double)w->fires[f] / (double)w->tokens;
    return SUBSAE_OK;
}

/* ---- phase timings ------------------------------------------------------------ */

static const char *const phase_names[SUBSAE_PHASE_COUNT] = {
    "encode_gemm", "topk", "decode", "backward", "optimizer", "prepare", "read", "step"};

int subsae_phase_count(void)
{
    return SUBSAE_PHASE_COUNT;
}

const char *subsae_phase_name(int phase)
{
    return phase >= 0 && phase < SUBSAE_PHASE_COUNT ? phase_names[phase] : "unknown";
}

int subsae_trainer_timings(const subsae_trainer *t, double *seconds_per_step, int64_t n)
{
    static const char *fn = "subsae_trainer_timings";
    if (!t)
        return subsae__fail_null(fn, "t");
    if (n < 0)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE, "%s: n %lld", fn,
                            (long long)n);
    if (n > 0 && !seconds_per_step)
        return subsae__fail_null(fn, "seconds_per_step");
    for (int64_t i = 0; i < n; i++)
        seconds_per_step[i] = i < SUBSAE_PHASE_COUNT && t->timed_steps > 0
                                  ? t->phase_total[i] / (double)t->timed_steps
                                  : NAN;
    return SUBSAE_OK;
}

int subsae_trainer_reset_timings(subsae_trainer *t)
{
    if (!t)
        return subsae__fail_null("subsae_trainer_reset_timings", "t");
    memset(t->phase_total, 0, sizeof t->phase_total);
    t->timed_steps = 0;
    return SUBSAE_OK;
}
