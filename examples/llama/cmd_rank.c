/* subsae-llama rank: every chosen site streams into its own activation
 * memory while the model runs, then into its own subspace estimator; no
 * file is written. The reports carry the fields of `subsae rank --json`
 * (with the site's name as "path") plus "site". */
#include "commands.h"
#include "host.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] = "MODEL (--tokens IDS.npy | --sequences N --seq-len T [--seed S]) "
                            "[--sites all|SITE,...] [--json]";

struct site_rank {
    char site[64];
    int64_t rows, dim, found, method, r90, r95, r99;
    int exact90, exact95, exact99, entropy_exact;
    double total, entropy, seconds;
    double *variances;
};

static int fit(const subsae_buffer *buf, struct site_rank *r)
{
    subsae_subspace *s = NULL;
    int rc = subsae_subspace_create(&s);
    if (rc == SUBSAE_OK)
        rc = subsae_subspace_fit(s, buf);
    if (rc == SUBSAE_OK)
        rc = subsae_subspace_get_int(s, SUBSAE_SUBSPACE_METHOD_USED, &r->method);
    if (rc == SUBSAE_OK)
        rc = subsae_subspace_get_int(s, SUBSAE_SUBSPACE_ROWS, &r->rows);
    if (rc == SUBSAE_OK)
        rc = subsae_subspace_get_int(s, SUBSAE_SUBSPACE_DIM, &r->dim);
    if (rc == SUBSAE_OK)
        rc = subsae_subspace_get_int(s, SUBSAE_SUBSPACE_RANK_FOUND, &r->found);
    if (rc == SUBSAE_OK)
        rc = subsae_subspace_get_double(s, SUBSAE_SUBSPACE_SECONDS, &r->seconds);
    if (rc == SUBSAE_OK)
        rc = subsae_subspace_total_variance(s, &r->total);
    if (rc == SUBSAE_OK)
        rc = subsae_subspace_effective_rank(s, 0.90, &r->r90, &r->exact90);
    if (rc == SUBSAE_OK)
        rc = subsae_subspace_effective_rank(s, 0.95, &r->r95, &r->exact95);
    if (rc == SUBSAE_OK)
        rc = subsae_subspace_effective_rank(s, 0.99, &r->r99, &r->exact99);
    if (rc == SUBSAE_OK)
        rc = subsae_subspace_entropy_rank(s, &r->entropy, &r->entropy_exact);
    if (rc == SUBSAE_OK) {
        r->variances = malloc((size_t)(r->found > 0 ? r->found : 1) * sizeof *r->variances);
        rc = r->variances ? subsae_subspace_variances(s, r->variances, r->found)
                          : SUBSAE_E_NOMEM;
    }
    subsae_subspace_free(s);
    return rc;
}

static json_t *report_json(const struct site_rank *r)
{
    json_t *variances = json_array();
    for (int64_t i = 0; variances && i < r->found; i++)
        json_array_append_new(variances, json_real(r->variances[i]));
    json_t *ranks = json_pack("{s:I, s:I, s:I}", "0.9", (json_int_t)r->r90, "0.95",
                              (json_int_t)r->r95, "0.99", (json_int_t)r->r99);
    json_t *exact = json_pack("{s:b, s:b, s:b}", "0.9", r->exact90, "0.95", r->exact95,
                              "0.99", r->exact99);
    return json_pack("{s:s, s:s, s:I, s:I, s:s, s:b, s:f, s:I, s:f, s:b, s:f, s:b, s:f, s:I,"
                     " s:o, s:o, s:o, s:f}",
                     "site", r->site, "path", r->site, "rows", (json_int_t)r->rows, "dim",
                     (json_int_t)r->dim, "method",
                     r->method == SUBSAE_METHOD_EXACT ? "exact" : "randomized", "centered", 1,
                     "threshold", 0.99, "effective_rank", (json_int_t)r->r99,
                     "effective_rank_ratio", (double)r->r99 / (double)r->dim,
                     "effective_rank_exact", r->exact99, "entropy_rank", r->entropy,
                     "entropy_rank_exact", r->entropy_exact, "total_variance", r->total,
                     "rank_found", (json_int_t)r->found, "effective_ranks", ranks,
                     "effective_ranks_exact", exact, "variances", variances, "seconds",
                     r->seconds);
}

static int print(const struct site_rank *reports, int n, bool json)
{
    if (json) {
        json_t *list = json_array();
        for (int i = 0; list && i < n; i++)
            json_array_append_new(list, report_json(&reports[i]));
        json_t *out = list ? json_pack("{s:o}", "reports", list) : NULL;
        return host_print_json(out);
    }
    printf("%-16s %8s %5s %5s %5s %5s %8s\n", "site", "rows", "dim", "r90", "r95", "r99",
           "entropy");
    for (int i = 0; i < n; i++)
        printf("%-16s %8lld %5lld %5lld %5lld %5lld %8.2f\n", reports[i].site,
               (long long)reports[i].rows, (long long)reports[i].dim, (long long)reports[i].r90,
               (long long)reports[i].r95, (long long)reports[i].r99, reports[i].entropy);
    return 0;
}

static int parse(int argc, char **argv, struct host_options *o, const char **model)
{
    for (int i = 1; i < argc; i++) {
        int common = host_common_option(argc, argv, &i, o);
        if (common < 0)
            return 2;
        if (common)
            continue;
        if (argv[i][0] != '-' && !*model) {
            *model = argv[i];
        } else {
            host_fail("unexpected argument '%s'", argv[i]);
            return host_usage(usage);
        }
    }
    return *model ? 0 : host_usage(usage);
}

int llama_cmd_rank(int argc, char **argv)
{
    struct host_options o = {.sites = "all"};
    const char *model = NULL;
    int rc = parse(argc, argv, &o, &model);
    if (rc)
        return rc;
    struct llama_model m;
    struct llama_tokens t;
    if (host_prepare(model, &o, &m, &t))
        return 1;
    int n_sites = m.config.n_layers * LLAMA_SITE_KINDS, n_reports = 0;
    bool *selected = calloc((size_t)n_sites, sizeof *selected);
    struct site_rank *reports = calloc((size_t)n_sites, sizeof *reports);
    struct host_collector col = {0};
    rc = selected && reports ? host_parse_sites(&m.config, o.sites, selected)
                             : host_fail("out of memory");
    if (!rc)
        rc = host_collector_init(&col, &m.config, &t, selected);
    if (!rc)
        rc = host_feed(&m, &o, &t, host_collect, &col);
    if (!rc)
        rc = host_collector_finish(&col);
    for (int s = 0; s < n_sites && !rc; s++) {
        if (!selected[s])
            continue;
        struct site_rank *r = &reports[n_reports++];
        llama_site_name(s, r->site, sizeof r->site);
        int status = fit(col.buffers[s], r);
        if (status != SUBSAE_OK)
            rc = host_fail_library(status, r->site);
    }
    if (!rc)
        rc = print(reports, n_reports, o.json);
    for (int i = 0; reports && i < n_reports; i++)
        free(reports[i].variances);
    free(reports);
    host_collector_free(&col);
    free(selected);
    llama_tokens_free(&t);
    llama_model_free(&m);
    return rc;
}
