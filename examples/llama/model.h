/* A llama2.c-format checkpoint in memory: the header's dimensions and
 * pointers to each weight tensor (float32, row-major, out x in). */
#ifndef LLAMA_MODEL_H
#define LLAMA_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct llama_config {
    int dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
    bool shared_classifier; /* the header's vocab_size was positive */
    int head_size, kv_dim;  /* derived */
};

struct llama_weights {
    const float *token_embedding; /* vocab x dim */
    const float *rms_att;         /* layers x dim */
    const float *wq, *wk, *wv;    /* layers x (dim | kv_dim) x dim */
    const float *wo;              /* layers x dim x dim */
    const float *rms_ffn;         /* layers x dim */
    const float *w1, *w3;         /* layers x hidden x dim */
    const float *w2;              /* layers x dim x hidden */
    const float *rms_final;       /* dim */
    const float *rope_cos, *rope_sin; /* seq_len x head_size/2 */
    const float *classifier;      /* vocab x dim */
};

struct llama_model {
    struct llama_config config;
    struct llama_weights w;
    float *data; /* every weight, owned */
};

/* Read and validate the checkpoint at `path`: the header must describe a
 * consistent model whose weights exactly fill the file. On failure returns
 * -1 with one line in `err` (nothing to free). */
int llama_model_load(const char *path, struct llama_model *model, char *err, size_t err_size);
void llama_model_free(struct llama_model *model);

#endif
