/* The transformer's forward pass over a batch of sequences, with hooks at
 * five sites per layer that may read or replace the activations there. */
#ifndef LLAMA_FORWARD_H
#define LLAMA_FORWARD_H

#include "model.h"

#include <stddef.h>

/* The sites of one layer, in the order the forward pass reaches them. The
 * site index of layer l and kind k is l * LLAMA_SITE_KINDS + k. */
enum llama_site_kind {
    LLAMA_ATTN_Z,     /* the heads' outputs, concatenated, before W_O */
    LLAMA_ATTN_OUT,   /* what attention adds to the residual stream */
    LLAMA_MLP_IN,     /* the MLP's normalised input */
    LLAMA_MLP_OUT,    /* what the MLP adds to the residual stream */
    LLAMA_RESID_POST, /* the residual stream after the layer */
    LLAMA_SITE_KINDS
};

/* "L2_attn_out" -> its index; -1 when there is no such site in the model. */
int llama_site_parse(const struct llama_config *c, const char *name);
/* The name of site `site` ("L{l}_{kind}") into out. */
void llama_site_name(int site, char *out, size_t size);

/* The token ids of a run: n_seq sequences of seq_len ids. */
struct llama_tokens {
    int32_t *ids; /* n_seq x seq_len, owned */
    int n_seq, seq_len;
};

/* The part of a run one forward call computes: sequences [first_seq,
 * first_seq + n_seqs) at positions [first, last). */
struct llama_span {
    int first_seq, n_seqs, first, last;
};

/* Number of rows of a span. */
static inline int64_t llama_span_rows(const struct llama_span *span)
{
    return (int64_t)span->n_seqs * (span->last - span->first);
}

/* Called at every site with the activations there: llama_span_rows(span)
 * rows of config.dim floats, ordered as the span's (sequence, position)
 * pairs, sequence-major. The hook may overwrite them to splice. A
 * non-zero return stops the forward pass, which returns that value. */
typedef int (*llama_hook_fn)(void *user, int site, float *rows, const struct llama_span *span);

/* Activations and the key/value cache of up to max_seqs sequences of up to
 * max_len positions. */
struct llama_state {
    int max_seqs, max_len, threads;
    float *x, *h, *q, *k, *v, *z, *delta; /* rows x dim (k, v: rows x kv_dim) */
    float *gate, *up;                     /* rows x hidden_dim */
    float *logits;                        /* rows x vocab_size, after llama_forward */
    float *key_cache, *value_cache;       /* layers x max_seqs x max_len x kv_dim */
    float *scores;                        /* threads x max_len */
};

/* 0, or -1 when memory runs out (then nothing is held). */
int llama_state_init(struct llama_state *s, const struct llama_config *c, int max_seqs,
                     int max_len);
void llama_state_free(struct llama_state *s);

/* The span of the run t (n_seqs <= s->max_seqs); positions before
 * span->first of the same sequences must have been run by the previous
 * calls on this state (incremental decoding), so a teacher-forced batch is
 * one call with first = 0. Leaves the logits of the span's rows in
 * s->logits. Returns 0 or the hook's non-zero value. */
int llama_forward(struct llama_state *s, const struct llama_model *m,
                  const struct llama_tokens *t, const struct llama_span *span,
                  llama_hook_fn hook, void *user);

#endif
