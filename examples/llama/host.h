/* What the subcommands of subsae-llama share: the options that choose the
 * model's input, messages, site selection and the teacher-forced run. */
#ifndef LLAMA_HOST_H
#define LLAMA_HOST_H

#include "tokens.h"

#include <stdbool.h>
#include <subsae.h>

extern const char *host_command; /* "record", "rank", "splice" */

/* "subsae-llama CMD: message" on stderr; returns 1 (the exit code). */
int host_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The library's message for a failed call; returns 1. */
int host_fail_library(int status, const char *what);
/* The usage line of the command on stderr; returns 2. */
int host_usage(const char *usage);

/* Print j (NULL: an allocation failed) on stdout and release it; 0, or 1
 * after a message. */
struct json_t;
int host_print_json(struct json_t *j);

/* Options every subcommand takes. */
struct host_options {
    struct llama_token_source source;
    const char *sites; /* "all" or SITE,SITE,... */
    bool json;
};

/* If argv[*i] is one of --tokens, --sequences, --seq-len, --seed, --sites,
 * --json, consume it (and its value) and return 1; 0 when it is not;
 * -1 after a message when its value is missing or malformed. */
int host_common_option(int argc, char **argv, int *i, struct host_options *o);

/* The model and the token ids of the options (read, or shaped for
 * sampling: see llama_tokens_prepare), with a message on failure (return
 * 1); 0 on success. */
int host_prepare(const char *model_path, const struct host_options *o, struct llama_model *m,
                 struct llama_tokens *t);

/* Every site of every token of t through `hook` once: sampling the ids
 * (when o names no file) or one teacher-forced pass over them. 0; the
 * hook's non-zero value; 1 after a message when memory runs out. */
int host_feed(const struct llama_model *m, const struct host_options *o,
              struct llama_tokens *t, llama_hook_fn hook, void *user);

/* Teacher-forced passes over all sequences of t in batches; `hook` sees
 * every site. 0, the hook's non-zero value, or 1 after a message. */
int host_run(const struct llama_model *m, const struct llama_tokens *t, llama_hook_fn hook,
             void *user);

/* The message for a site name the model does not have; returns 1. */
int host_unknown_site(const struct llama_config *c, const char *name);

/* The sites named by spec ("all" or a comma-separated list) as flags per
 * site index; 1 after a message when a name is unknown. */
int host_parse_sites(const struct llama_config *c, const char *spec, bool *selected);

/* Every selected site's rows, in place (sequence-major, whatever order
 * the model produces them in), then one buffer per site over them. */
struct host_collector {
    int n_sites, dim, seq_len;
    int64_t n_rows;
    float **rows;            /* per site, n_rows x dim; NULL where not selected */
    subsae_buffer **buffers; /* views over rows, by host_collector_finish */
};
/* 0, or 1 after a message. */
int host_collector_init(struct host_collector *col, const struct llama_config *c,
                        const struct llama_tokens *t, const bool *selected);
/* A llama_hook_fn (user: the collector). */
int host_collect(void *collector, int site, float *rows, const struct llama_span *span);
/* The buffers over the collected rows; 0, or 1 after a message. */
int host_collector_finish(struct host_collector *col);
void host_collector_free(struct host_collector *col);

/* Seconds since an arbitrary point (monotonic). */
double host_now(void);

#endif
