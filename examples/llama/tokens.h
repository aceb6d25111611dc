/* The token ids a run feeds the model: n_seq sequences of seq_len ids,
 * read from an int32 .npy or sampled from the model itself. */
#ifndef LLAMA_TOKENS_H
#define LLAMA_TOKENS_H

#include "forward.h"

#include <stdint.h>

/* Where the ids come from: a file (path set), or sampling at temperature 1
 * from the start token (id 1), each sequence from its own random stream
 * derived from `seed`, so the result does not depend on the batching or
 * the thread count. */
enum { LLAMA_DEFAULT_SEQUENCES = 64, LLAMA_DEFAULT_SEQ_LEN = 256 };

/* 0 for sequences or seq_len means the default above (the context
 * length where that is shorter). */
struct llama_token_source {
    const char *path;
    int sequences, seq_len;
    uint64_t seed;
};

/* Sequences per batch of the teacher-forced passes: about 16k rows. */
int llama_batch_sequences(int seq_len, int n_seq);

/* The ids of `src` for model m: read from its file, or, for sampling,
 * the shape with every sequence's start token in place (the rest is
 * filled by llama_tokens_sample). Ids outside the vocabulary, sequences
 * longer than the model's context, a file that is not a 2-D integer .npy:
 * -1 with one line in err. */
int llama_tokens_prepare(const struct llama_model *m, const struct llama_token_source *src,
                         struct llama_tokens *out, char *err, size_t err_size);
/* Fill positions 1.. of prepared ids by sampling from the model; `hook`
 * (may be NULL) sees every site of every position on the way. 0, the
 * hook's non-zero value, or -1 with err when memory runs out. */
int llama_tokens_sample(const struct llama_model *m, struct llama_tokens *t, uint64_t seed,
                        llama_hook_fn hook, void *user, char *err, size_t err_size);
/* Write ids as an int32 .npy of shape [n_seq, seq_len]; -1 with err. */
int llama_tokens_save(const struct llama_tokens *t, const char *path, char *err,
                      size_t err_size);
void llama_tokens_free(struct llama_tokens *t);

#endif
