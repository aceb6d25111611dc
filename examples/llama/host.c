/* Shared plumbing of subsae-llama's subcommands. */
#include "host.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

const char *host_command = "";

int host_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "subsae-llama %s: ", host_command);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

int host_fail_library(int status, const char *what)
{
    const char *message = subsae_last_error();
    return host_fail("%s: %s", what,
                     message && *message ? message : subsae_status_string(status));
}

int host_usage(const char *usage)
{
    fprintf(stderr, "usage: subsae-llama %s %s\n", host_command, usage);
    return 2;
}

int host_print_json(json_t *j)
{
    int rc = j && json_dumpf(j, stdout, JSON_INDENT(1)) == 0 ? 0 : host_fail("out of memory");
    printf("\n");
    json_decref(j);
    return rc;
}

static int parse_int(const char *flag, const char *text, long long min, long long max,
                     long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno || end == text || *end || v < min || v > max) {
        host_fail("%s wants a whole number from %lld to %lld, not '%s'", flag, min, max, text);
        return -1;
    }
    *out = v;
    return 0;
}

int host_common_option(int argc, char **argv, int *i, struct host_options *o)
{
    const char *a = argv[*i];
    if (!strcmp(a, "--json")) {
        o->json = true;
        return 1;
    }
    static const char *const valued[] = {"--tokens", "--sequences", "--seq-len", "--seed",
                                         "--sites"};
    int which = -1;
    for (int k = 0; k < 5; k++)
        if (!strcmp(a, valued[k]))
            which = k;
    if (which < 0)
        return 0;
    if (*i + 1 >= argc) {
        host_fail("%s needs a value", a);
        return -1;
    }
    const char *v = argv[++*i];
    long long n = 0;
    switch (which) {
    case 0: o->source.path = v; return 1;
    case 4: o->sites = v; return 1;
    case 3:
        if (parse_int(a, v, 0, INT64_MAX, &n))
            return -1;
        o->source.seed = (uint64_t)n;
        return 1;
    default:
        if (parse_int(a, v, 1, 1 << 24, &n))
            return -1;
        *(which == 1 ? &o->source.sequences : &o->source.seq_len) = (int)n;
        return 1;
    }
}

int host_prepare(const char *model_path, const struct host_options *o, struct llama_model *m,
                 struct llama_tokens *t)
{
    char err[512];
    if (llama_model_load(model_path, m, err, sizeof err) != 0)
        return host_fail("%s", err);
    if (llama_tokens_prepare(m, &o->source, t, err, sizeof err) != 0) {
        llama_model_free(m);
        return host_fail("%s", err);
    }
    return 0;
}

int host_feed(const struct llama_model *m, const struct host_options *o,
              struct llama_tokens *t, llama_hook_fn hook, void *user)
{
    if (o->source.path)
        return host_run(m, t, hook, user);
    char err[512];
    int rc = llama_tokens_sample(m, t, o->source.seed, hook, user, err, sizeof err);
    return rc == -1 ? host_fail("%s", err) : rc;
}

int host_unknown_site(const struct llama_config *c, const char *name)
{
    return host_fail("no site '%s' in this model: sites are L0..L%d followed by _attn_z, "
                     "_attn_out, _mlp_in, _mlp_out or _resid_post",
                     name, c->n_layers - 1);
}

int host_parse_sites(const struct llama_config *c, const char *spec, bool *selected)
{
    int n_sites = c->n_layers * LLAMA_SITE_KINDS;
    bool all = !strcmp(spec, "all");
    for (int s = 0; s < n_sites; s++)
        selected[s] = all;
    if (all)
        return 0;
    char *copy = strdup(spec);
    if (!copy)
        return host_fail("out of memory");
    int rc = 0;
    for (char *save = NULL, *name = strtok_r(copy, ",", &save); name && !rc;
         name = strtok_r(NULL, ",", &save)) {
        int site = llama_site_parse(c, name);
        if (site < 0)
            rc = host_unknown_site(c, name);
        else
            selected[site] = true;
    }
    free(copy);
    return rc;
}

/* ---- collecting rows ----------------------------------------------------- */

int host_collector_init(struct host_collector *col, const struct llama_config *c,
                        const struct llama_tokens *t, const bool *selected)
{
    col->n_sites = c->n_layers * LLAMA_SITE_KINDS;
    col->dim = c->dim;
    col->seq_len = t->seq_len;
    col->n_rows = (int64_t)t->n_seq * t->seq_len;
    int n_selected = 0;
    for (int s = 0; s < col->n_sites; s++)
        n_selected += selected[s];
    /* Linux promises more memory than it has and kills the process when it
     * is touched: refuse what cannot fit in RAM instead. */
    double bytes = (double)n_selected * (double)col->n_rows * c->dim * sizeof(float);
    double ram = (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGE_SIZE);
    if (ram > 0 && bytes > 0.8 * ram)
        return host_fail("%d sites x %lld tokens need %.1f GB, more than this machine's "
                         "%.1f GB of memory: record fewer --sequences or --sites at a time",
                         n_selected, (long long)col->n_rows, bytes / 1e9, ram / 1e9);
    col->rows = calloc((size_t)col->n_sites, sizeof *col->rows);
    col->buffers = calloc((size_t)col->n_sites, sizeof *col->buffers);
    bool ok = col->rows && col->buffers;
    for (int s = 0; s < col->n_sites && ok; s++)
        if (selected[s])
            ok = (col->rows[s] = malloc((size_t)col->n_rows * (size_t)c->dim *
                                        sizeof(float))) != NULL;
    if (ok)
        return 0;
    host_collector_free(col);
    return host_fail("out of memory for the activations of %lld tokens",
                     (long long)((int64_t)t->n_seq * t->seq_len));
}

int host_collect(void *collector, int site, float *rows, const struct llama_span *span)
{
    struct host_collector *col = collector;
    float *out = col->rows[site];
    if (!out)
        return 0;
    int positions = span->last - span->first;
    size_t row_bytes = (size_t)col->dim * sizeof *rows;
    for (int64_t r = 0; r < llama_span_rows(span); r++) {
        int64_t at = (int64_t)(span->first_seq + r / positions) * col->seq_len + span->first +
                     r % positions;
        memcpy(out + at * col->dim, rows + r * col->dim, row_bytes);
    }
    return 0;
}

int host_collector_finish(struct host_collector *col)
{
    for (int s = 0; s < col->n_sites; s++) {
        if (!col->rows[s] || col->buffers[s])
            continue;
        int status = subsae_buffer_wrap(col->rows[s], SUBSAE_DTYPE_F32, col->n_rows, col->dim,
                                        col->dim, SUBSAE_BORROW, &col->buffers[s]);
        if (status != SUBSAE_OK)
            return host_fail_library(status, "activation buffer");
    }
    return 0;
}

void host_collector_free(struct host_collector *col)
{
    for (int s = 0; s < col->n_sites; s++) {
        if (col->buffers)
            subsae_buffer_free(col->buffers[s]);
        if (col->rows)
            free(col->rows[s]);
    }
    free(col->buffers);
    free(col->rows);
    col->buffers = NULL;
    col->rows = NULL;
}

/* ---- running ------------------------------------------------------------- */

int host_run(const struct llama_model *m, const struct llama_tokens *t, llama_hook_fn hook,
             void *user)
{
    int batch = llama_batch_sequences(t->seq_len, t->n_seq);
    struct llama_state state;
    if (llama_state_init(&state, &m->config, batch, t->seq_len) != 0)
        return host_fail("out of memory for a batch of %d sequences", batch);
    int rc = 0;
    for (int first = 0; first < t->n_seq && !rc; first += batch) {
        int n = t->n_seq - first < batch ? t->n_seq - first : batch;
        struct llama_span span = {first, n, 0, t->seq_len};
        rc = llama_forward(&state, m, t, &span, hook, user);
    }
    llama_state_free(&state);
    return rc;
}

double host_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
