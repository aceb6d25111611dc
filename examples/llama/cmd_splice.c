/* subsae-llama splice: judge an SAE by the model. The mean next-token
 * cross-entropy of the clean model, with one site replaced by the SAE's
 * reconstruction, zero-ablated and mean-ablated; loss recovered and the
 * KL divergence of the spliced predictions from the clean ones; and the
 * SAE's explained variance and L0 on the same tokens.
 *
 * Two passes: the first runs the clean model to collect the site's rows
 * (for the SAE's metrics) and their mean (for mean ablation); the second
 * runs each batch four times (clean, spliced, zero, mean) so the KL needs
 * the clean log-probabilities of one batch only. A transcoder given
 * --site L{l}_mlp_out replaces the MLP's output with its prediction from
 * the same layer's mlp_in (a skip transcoder's with its skip path). */
#include "commands.h"
#include "host.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "MODEL SAE_DIR --site SITE (--tokens IDS.npy | --sequences N --seq-len T [--seed S]) "
    "[--json]";

enum variant { CLEAN, SPLICED, ZERO, MEAN_ABLATED, VARIANTS };
static const char *const variant_names[VARIANTS] = {"clean", "spliced", "zero",
                                                    "mean_ablated"};

/* Reconstruction in blocks of this many rows bounds the dense codes. */
enum { CODE_BLOCK = 256 };

struct splice {
    const subsae_sae *sae;
    int dim, site, source; /* source: the site the SAE reads (the site, or mlp_in) */
    int64_t d_sae;
    enum variant variant;
    bool observing;                 /* first pass: collect rows and the mean */
    subsae_buffer *input, *target;  /* the SAE's rows (target: transcoders only) */
    double *sum;                    /* of the site's rows, for the mean */
    int64_t count;
    float *mean, *source_rows, *codes;
    int status;
};

struct losses {
    double ce[VARIANTS], kl;
    int64_t predicted;
};

/* ---- the hook ------------------------------------------------------- */

static int reconstruct(struct splice *sp, const float *x, float *out, int64_t n)
{
    for (int64_t r = 0; r < n; r += CODE_BLOCK) {
        int64_t block = n - r < CODE_BLOCK ? n - r : CODE_BLOCK;
        int status = subsae_sae_encode(sp->sae, x + r * sp->dim, block, sp->dim, sp->codes,
                                       sp->d_sae);
        if (status == SUBSAE_OK)
            status = subsae_sae_decode(sp->sae, sp->codes, block, sp->d_sae,
                                       out + r * sp->dim, sp->dim);
        /* A skip transcoder's linear path (nothing for other models). */
        if (status == SUBSAE_OK)
            status = subsae_sae_add_skip(sp->sae, x + r * sp->dim, block, sp->dim,
                                         out + r * sp->dim, sp->dim);
        if (status != SUBSAE_OK)
            return sp->status = status;
    }
    return 0;
}

static int observe(struct splice *sp, int site, const float *rows, int64_t n)
{
    /* The order of the rows does not matter to the SAE's metrics or the
     * mean, so the rows of a sampling pass are taken as they come. */
    int status = SUBSAE_OK;
    if (site == sp->source)
        status = subsae_buffer_append(sp->input, rows, SUBSAE_DTYPE_F32, n, sp->dim);
    if (site == sp->site && sp->target && status == SUBSAE_OK)
        status = subsae_buffer_append(sp->target, rows, SUBSAE_DTYPE_F32, n, sp->dim);
    if (site == sp->site)
        for (int64_t i = 0; i < n * sp->dim; i++)
            sp->sum[i % sp->dim] += rows[i];
    sp->count += site == sp->site ? n : 0;
    return status == SUBSAE_OK ? 0 : (sp->status = status);
}

static int splice_hook(void *user, int site, float *rows, const struct llama_span *span)
{
    struct splice *sp = user;
    int64_t n = llama_span_rows(span);
    if (sp->observing)
        return observe(sp, site, rows, n);
    if (sp->variant == SPLICED && site == sp->source && sp->source != sp->site)
        memcpy(sp->source_rows, rows, (size_t)(n * sp->dim) * sizeof *rows);
    if (site != sp->site || sp->variant == CLEAN)
        return 0;
    if (sp->variant == SPLICED)
        return reconstruct(sp, sp->source != sp->site ? sp->source_rows : rows, rows, n);
    for (int64_t r = 0; r < n; r++)
        for (int i = 0; i < sp->dim; i++)
            rows[r * sp->dim + i] = sp->variant == ZERO ? 0.0f : sp->mean[i];
    return 0;
}

/* ---- losses ----------------------------------------------------------- */

/* Log-softmax of every row of logits into lp. */
static void log_softmax(const float *logits, float *lp, int64_t rows, int vocab)
{
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const float *x = logits + r * vocab;
        float top = x[0];
        for (int i = 1; i < vocab; i++)
            top = x[i] > top ? x[i] : top;
        double total = 0.0;
        for (int i = 0; i < vocab; i++)
            total += exp((double)(x[i] - top));
        float log_total = (float)log(total) + top;
        for (int i = 0; i < vocab; i++)
            lp[r * vocab + i] = x[i] - log_total;
    }
}

/* Cross-entropy (and, given the clean log-probabilities, KL(clean ||
 * this)) summed over the positions that have a next token. */
static void accumulate(const float *lp, const float *clean_lp, const int32_t *ids,
                       int n_seqs, int seq_len, int vocab, double *ce, double *kl)
{
    double ce_sum = 0.0, kl_sum = 0.0;
#pragma omp parallel for collapse(2) reduction(+ : ce_sum, kl_sum) schedule(static)
    for (int s = 0; s < n_seqs; s++) {
        for (int t = 0; t < seq_len - 1; t++) {
            int64_t row = (int64_t)s * seq_len + t;
            ce_sum -= lp[row * vocab + ids[(int64_t)s * seq_len + t + 1]];
            for (int i = 0; clean_lp && i < vocab; i++) {
                float c = clean_lp[row * vocab + i];
                kl_sum += exp((double)c) * (double)(c - lp[row * vocab + i]);
            }
        }
    }
    *ce += ce_sum;
    if (kl)
        *kl += kl_sum;
}

static int second_pass(const struct llama_model *m, const struct llama_tokens *t,
                       struct splice *sp, struct losses *out)
{
    int batch = llama_batch_sequences(t->seq_len, t->n_seq), vocab = m->config.vocab_size;
    struct llama_state state;
    size_t rows = (size_t)batch * (size_t)t->seq_len;
    float *clean_lp = malloc(rows * (size_t)vocab * sizeof *clean_lp);
    float *lp = malloc(rows * (size_t)vocab * sizeof *lp);
    if (!clean_lp || !lp || llama_state_init(&state, &m->config, batch, t->seq_len) != 0) {
        free(clean_lp);
        free(lp);
        return host_fail("out of memory for a batch of %d sequences", batch);
    }
    int rc = 0;
    for (int first = 0; first < t->n_seq && !rc; first += batch) {
        int n = t->n_seq - first < batch ? t->n_seq - first : batch;
        const int32_t *ids = t->ids + (size_t)first * t->seq_len;
        struct llama_span span = {first, n, 0, t->seq_len};
        for (int v = 0; v < VARIANTS && !rc; v++) {
            sp->variant = (enum variant)v;
            rc = llama_forward(&state, m, t, &span, splice_hook, sp);
            if (rc)
                break;
            float *target = v == CLEAN ? clean_lp : lp;
            log_softmax(state.logits, target, (int64_t)n * t->seq_len, vocab);
            accumulate(target, v == SPLICED ? clean_lp : NULL, ids, n, t->seq_len, vocab,
                       &out->ce[v], v == SPLICED ? &out->kl : NULL);
        }
    }
    out->predicted = (int64_t)t->n_seq * (t->seq_len - 1);
    llama_state_free(&state);
    free(clean_lp);
    free(lp);
    return rc ? host_fail_library(sp->status, "the spliced model") : 0;
}

/* ---- setup ------------------------------------------------------------ */

/* A warning when the SAE records that it was trained on another site of
 * this model (its hook_name): splicing it elsewhere is allowed (to see
 * what transfers) but more often a slip of --site. */
static void warn_other_site(const struct llama_config *c, const char *dir,
                            const struct splice *sp)
{
    const char *text = NULL;
    if (subsae_sae_get_metadata(sp->sae, &text) != SUBSAE_OK || !text)
        return;
    json_t *meta = json_loads(text, 0, NULL);
    const char *hook = json_string_value(json_object_get(meta, "hook_name"));
    char source[64];
    llama_site_name(sp->source, source, sizeof source);
    if (hook && llama_site_parse(c, hook) >= 0 && strcmp(hook, source) != 0)
        fprintf(stderr,
                "subsae-llama splice: warning: the SAE in %s was trained on %s (its "
                "hook_name), here it reads %s\n",
                dir, hook, source);
    json_decref(meta);
}

/* The SAE fits the site: its widths, and a transcoder only at mlp_out
 * (reading that layer's mlp_in). Sets sp->source. */
static int check_sae(const struct llama_config *c, const char *dir, struct splice *sp)
{
    int64_t d_in = 0, d_out = 0, transcoder = 0;
    subsae_sae_get_int(sp->sae, SUBSAE_SAE_D_IN, &d_in);
    subsae_sae_get_int(sp->sae, SUBSAE_SAE_D_OUT, &d_out);
    subsae_sae_get_int(sp->sae, SUBSAE_SAE_D_SAE, &sp->d_sae);
    subsae_sae_get_int(sp->sae, SUBSAE_SAE_TRANSCODER, &transcoder);
    char name[64];
    llama_site_name(sp->site, name, sizeof name);
    if (d_in != c->dim || d_out != c->dim)
        return host_fail("the SAE in %s maps width %lld to %lld, but %s has width %d", dir,
                         (long long)d_in, (long long)d_out, name, c->dim);
    sp->source = sp->site;
    if (transcoder) {
        if (sp->site % LLAMA_SITE_KINDS != LLAMA_MLP_OUT)
            return host_fail("%s holds a transcoder, which replaces an MLP: give --site "
                             "L%d_mlp_out (it reads L%d_mlp_in)",
                             dir, sp->site / LLAMA_SITE_KINDS, sp->site / LLAMA_SITE_KINDS);
        sp->source = sp->site - LLAMA_MLP_OUT + LLAMA_MLP_IN;
    }
    warn_other_site(c, dir, sp);
    return 0;
}

static int splice_init(struct splice *sp, const struct llama_config *c, int64_t rows_per_batch)
{
    sp->dim = c->dim;
    sp->sum = calloc((size_t)c->dim, sizeof *sp->sum);
    sp->mean = calloc((size_t)c->dim, sizeof *sp->mean);
    sp->codes = malloc((size_t)CODE_BLOCK * (size_t)sp->d_sae * sizeof *sp->codes);
    sp->source_rows = malloc((size_t)rows_per_batch * (size_t)c->dim * sizeof(float));
    if (!sp->sum || !sp->mean || !sp->codes || !sp->source_rows)
        return host_fail("out of memory");
    int status = subsae_buffer_create(c->dim, &sp->input);
    if (status == SUBSAE_OK && sp->source != sp->site)
        status = subsae_buffer_create(c->dim, &sp->target);
    return status == SUBSAE_OK ? 0 : host_fail_library(status, "activation buffer");
}

static void splice_free(struct splice *sp)
{
    subsae_buffer_free(sp->input);
    subsae_buffer_free(sp->target);
    free(sp->sum);
    free(sp->mean);
    free(sp->codes);
    free(sp->source_rows);
}

/* ---- output ------------------------------------------------------------ */

static json_t *number(double x)
{
    return isfinite(x) ? json_real(x) : json_null();
}

static int print(const char *site_name, const char *dir, const struct losses *l,
                 const double *metrics, const struct llama_tokens *t, bool transcoder,
                 double seconds, bool json)
{
    double mean[VARIANTS];
    for (int v = 0; v < VARIANTS; v++)
        mean[v] = l->ce[v] / (double)l->predicted;
    double recovered = (mean[ZERO] - mean[SPLICED]) / (mean[ZERO] - mean[CLEAN]);
    double kl = l->kl / (double)l->predicted;
    double ev = metrics[SUBSAE_METRIC_EXPLAINED_VARIANCE], l0 = metrics[SUBSAE_METRIC_L0];
    if (!json) {
        printf("%s spliced with %s%s, %lld predicted tokens (%d sequences x %d)\n", site_name,
               dir, transcoder ? " (transcoder from mlp_in)" : "", (long long)l->predicted,
               t->n_seq, t->seq_len);
        for (int v = 0; v < VARIANTS; v++)
            printf("  loss_%-13s %.5f\n", variant_names[v], mean[v]);
        printf("  loss_recovered     %.4f\n  kl_spliced         %.5f\n"
               "  explained_variance %.4f\n  l0                 %.2f\n",
               recovered, kl, ev, l0);
        return 0;
    }
    json_t *j = json_pack("{s:s, s:s, s:b, s:I, s:i, s:i, s:o, s:o, s:o, s:o, s:o, s:o, s:o,"
                          " s:o, s:f}",
                          "site", site_name, "sae", dir, "transcoder", transcoder,
                          "predicted_tokens", (json_int_t)l->predicted, "sequences", t->n_seq,
                          "seq_len", t->seq_len, "loss_clean", number(mean[CLEAN]),
                          "loss_spliced", number(mean[SPLICED]), "loss_zero", number(mean[ZERO]),
                          "loss_mean_ablated", number(mean[MEAN_ABLATED]), "loss_recovered",
                          number(recovered), "kl_spliced", number(kl), "explained_variance",
                          number(ev), "l0", number(l0), "seconds", seconds);
    return host_print_json(j);
}

static int parse(int argc, char **argv, struct host_options *o, const char **model,
                 const char **dir, const char **site)
{
    for (int i = 1; i < argc; i++) {
        int common = host_common_option(argc, argv, &i, o);
        if (common < 0)
            return 2;
        if (common)
            continue;
        if (!strcmp(argv[i], "--site") && i + 1 < argc) {
            *site = argv[++i];
        } else if (argv[i][0] != '-' && (!*model || !*dir)) {
            *(*model ? dir : model) = argv[i];
        } else {
            host_fail("unexpected argument '%s'", argv[i]);
            return host_usage(usage);
        }
    }
    return *model && *dir && *site ? 0 : host_usage(usage);
}

int llama_cmd_splice(int argc, char **argv)
{
    struct host_options o = {.sites = "all"};
    const char *model = NULL, *dir = NULL, *site_name = NULL;
    int rc = parse(argc, argv, &o, &model, &dir, &site_name);
    if (rc)
        return rc;
    struct llama_model m;
    char err[512];
    if (llama_model_load(model, &m, err, sizeof err) != 0)
        return host_fail("%s", err);
    struct splice sp = {.site = llama_site_parse(&m.config, site_name)};
    subsae_sae *sae = NULL;
    struct llama_tokens t = {0};
    struct losses losses = {{0}, 0, 0};
    double metrics[SUBSAE_METRIC_COUNT], t0 = host_now();
    int status;
    if (sp.site < 0)
        rc = host_unknown_site(&m.config, site_name);
    else if ((status = subsae_sae_load(dir, &sae)) != SUBSAE_OK)
        rc = host_fail_library(status, "loading the SAE");
    sp.sae = sae;
    if (!rc)
        rc = check_sae(&m.config, dir, &sp);
    if (!rc && llama_tokens_prepare(&m, &o.source, &t, err, sizeof err) != 0)
        rc = host_fail("%s", err);
    if (!rc)
        rc = splice_init(&sp, &m.config,
                         (int64_t)llama_batch_sequences(t.seq_len, t.n_seq) * t.seq_len);
    if (!rc) {
        sp.observing = true;
        rc = host_feed(&m, &o, &t, splice_hook, &sp);
        if (rc && sp.status != SUBSAE_OK)
            rc = host_fail_library(sp.status, site_name);
        sp.observing = false;
        for (int i = 0; i < sp.dim; i++)
            sp.mean[i] = (float)(sp.sum[i] / (double)sp.count);
    }
    if (!rc)
        rc = second_pass(&m, &t, &sp, &losses);
    if (!rc && (status = subsae_sae_evaluate(sae, sp.input, sp.target, metrics,
                                             SUBSAE_METRIC_COUNT)) != SUBSAE_OK)
        rc = host_fail_library(status, "evaluating the SAE");
    if (!rc)
        rc = print(site_name, dir, &losses, metrics, &t, sp.source != sp.site, host_now() - t0,
                   o.json);
    splice_free(&sp);
    subsae_sae_free(sae);
    llama_tokens_free(&t);
    llama_model_free(&m);
    return rc;
}
