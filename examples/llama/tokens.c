/* Token ids: a minimal .npy reader and writer for 2-D integer arrays
 * (the library's readers take floating-point activations only), and
 * sampling from the model. */
#include "tokens.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(char *err, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, size, fmt, ap);
    va_end(ap);
    return -1;
}

int llama_batch_sequences(int seq_len, int n_seq)
{
    int n = 16384 / seq_len;
    n = n < 1 ? 1 : n;
    return n < n_seq ? n : n_seq;
}

/* ---- .npy ------------------------------------------------------------- */

/* The header's dtype ('<i4' or '<i8') and 2-D shape; 0 or -1. */
static int parse_npy_header(const char *header, int *item_size, int64_t shape[2])
{
    const char *descr = strstr(header, "'descr':");
    const char *order = strstr(header, "'fortran_order':");
    const char *dims = strstr(header, "'shape':");
    if (!descr || !order || !dims || strstr(order, "True") == order + 17)
        return -1;
    if (strstr(descr, "'<i4'") == descr + 9 || strstr(descr, "'|i4'") == descr + 9)
        *item_size = 4;
    else if (strstr(descr, "'<i8'") == descr + 9)
        *item_size = 8;
    else
        return -1;
    long long a, b;
    if (sscanf(dims + 8, " (%lld , %lld )", &a, &b) != 2 || a < 1 || b < 1)
        return -1;
    shape[0] = a;
    shape[1] = b;
    return 0;
}

/* The header as a string without its padding and newline. */
static void terminate_header(char *header, unsigned length)
{
    header[length] = '\0';
    while (length > 0 && (header[length - 1] == ' ' || header[length - 1] == '\n'))
        header[--length] = '\0';
}

static int read_ids(FILE *f, int item_size, int64_t count, int32_t *ids)
{
    for (int64_t i = 0; i < count; i++) {
        int64_t value = 0;
        if (item_size == 4) {
            int32_t v32;
            if (fread(&v32, 4, 1, f) != 1)
                return -1;
            value = v32;
        } else if (fread(&value, 8, 1, f) != 1) {
            return -1;
        }
        ids[i] = value < INT32_MIN || value > INT32_MAX ? -1 : (int32_t)value;
    }
    return 0;
}

static int load_npy(const char *path, struct llama_tokens *out, char *err, size_t size)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return fail(err, size, "cannot open %s: %s", path, strerror(errno));
    unsigned char magic[10];
    char header[4096];
    int item_size, rc = -1;
    int64_t shape[2];
    unsigned length = 0;
    if (fread(magic, 1, 10, f) != 10 || memcmp(magic, "\x93NUMPY", 6) || magic[6] != 1 ||
        (length = magic[8] | magic[9] << 8) >= sizeof header ||
        fread(header, 1, length, f) != length) {
        fail(err, size, "%s is not a .npy file (version 1)", path);
    } else if (terminate_header(header, length), parse_npy_header(header, &item_size, shape)) {
        fail(err, size, "%s: token ids must be a 2-D int32 or int64 array [sequences, "
                        "positions] in C order; the header says %s", path, header);
    } else if (shape[0] > INT32_MAX || shape[1] > INT32_MAX ||
               !(out->ids = malloc((size_t)(shape[0] * shape[1]) * sizeof *out->ids))) {
        fail(err, size, "%s: %lld x %lld token ids do not fit in memory", path,
             (long long)shape[0], (long long)shape[1]);
    } else if (read_ids(f, item_size, shape[0] * shape[1], out->ids) != 0) {
        fail(err, size, "%s is truncated: the header promises %lld x %lld ids", path,
             (long long)shape[0], (long long)shape[1]);
    } else {
        out->n_seq = (int)shape[0];
        out->seq_len = (int)shape[1];
        rc = 0;
    }
    fclose(f);
    return rc;
}

int llama_tokens_save(const struct llama_tokens *t, const char *path, char *err,
                      size_t err_size)
{
    char header[128];
    int n = snprintf(header, sizeof header,
                     "{'descr': '<i4', 'fortran_order': False, 'shape': (%d, %d), }", t->n_seq,
                     t->seq_len);
    int padded = (10 + n + 1 + 63) / 64 * 64 - 10;
    FILE *f = fopen(path, "wb");
    if (!f)
        return fail(err, err_size, "cannot write %s: %s", path, strerror(errno));
    unsigned char magic[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0,
                               (unsigned char)(padded & 0xff), (unsigned char)(padded >> 8)};
    fwrite(magic, 1, sizeof magic, f);
    fprintf(f, "%-*s\n", padded - 1, header);
    size_t count = (size_t)t->n_seq * (size_t)t->seq_len;
    int ok = fwrite(t->ids, sizeof *t->ids, count, f) == count;
    if (fclose(f) != 0 || !ok)
        return fail(err, err_size, "cannot write %s: %s", path, strerror(errno));
    return 0;
}

/* ---- sampling ----------------------------------------------------------- */

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* A token drawn from softmax(logits) with the uniform number u in [0, 1). */
static int32_t draw(const float *logits, int vocab, double u)
{
    float top = logits[0];
    for (int i = 1; i < vocab; i++)
        top = logits[i] > top ? logits[i] : top;
    double total = 0.0;
    for (int i = 0; i < vocab; i++)
        total += exp((double)(logits[i] - top));
    double target = u * total, cumulative = 0.0;
    for (int i = 0; i < vocab; i++) {
        cumulative += exp((double)(logits[i] - top));
        if (cumulative > target)
            return i;
    }
    return vocab - 1;
}

int llama_tokens_sample(const struct llama_model *m, struct llama_tokens *t, uint64_t seed,
                        llama_hook_fn hook, void *user, char *err, size_t err_size)
{
    const struct llama_config *c = &m->config;
    int batch = t->n_seq < 256 ? t->n_seq : 256, rc = 0;
    struct llama_state state;
    uint64_t *streams = malloc((size_t)batch * sizeof *streams);
    if (!streams || llama_state_init(&state, c, batch, t->seq_len) != 0) {
        free(streams);
        return fail(err, err_size, "out of memory for sampling %d sequences", t->n_seq);
    }
    for (int first = 0; first < t->n_seq && !rc; first += batch) {
        int n = t->n_seq - first < batch ? t->n_seq - first : batch;
        for (int i = 0; i < n; i++)
            streams[i] = seed * 0x100000001b3ULL + (uint64_t)(first + i);
        for (int pos = 0; pos < t->seq_len && !rc; pos++) {
            struct llama_span span = {first, n, pos, pos + 1};
            rc = llama_forward(&state, m, t, &span, hook, user);
            for (int i = 0; i < n && !rc && pos + 1 < t->seq_len; i++) {
                double u = (double)(splitmix64(&streams[i]) >> 11) * 0x1.0p-53;
                t->ids[(size_t)(first + i) * t->seq_len + pos + 1] =
                    draw(state.logits + (size_t)i * c->vocab_size, c->vocab_size, u);
            }
        }
    }
    llama_state_free(&state);
    free(streams);
    return rc;
}

/* ---- validation --------------------------------------------------------- */

static int check_length(const struct llama_config *c, int seq_len, const char *what,
                        char *err, size_t size)
{
    if (seq_len < 2 || seq_len > c->seq_len)
        return fail(err, size, "%s: sequences of %d tokens; the model takes 2 to %d", what,
                    seq_len, c->seq_len);
    return 0;
}

static int check_ids(const struct llama_config *c, const struct llama_tokens *t,
                     const char *what, char *err, size_t size)
{
    if (check_length(c, t->seq_len, what, err, size) != 0)
        return -1;
    for (size_t i = 0; i < (size_t)t->n_seq * (size_t)t->seq_len; i++)
        if (t->ids[i] < 0 || t->ids[i] >= c->vocab_size)
            return fail(err, size,
                        "%s: token id at sequence %zu, position %zu is outside the model's "
                        "vocabulary of %d (0 to %d)",
                        what, i / (size_t)t->seq_len, i % (size_t)t->seq_len, c->vocab_size,
                        c->vocab_size - 1);
    return 0;
}

int llama_tokens_prepare(const struct llama_model *m, const struct llama_token_source *src,
                         struct llama_tokens *out, char *err, size_t err_size)
{
    memset(out, 0, sizeof *out);
    int rc;
    if (src->path) {
        rc = load_npy(src->path, out, err, err_size);
        if (rc == 0)
            rc = check_ids(&m->config, out, src->path, err, err_size);
    } else {
        out->n_seq = src->sequences ? src->sequences : LLAMA_DEFAULT_SEQUENCES;
        out->seq_len = src->seq_len ? src->seq_len
                       : m->config.seq_len < LLAMA_DEFAULT_SEQ_LEN ? m->config.seq_len
                                                                    : LLAMA_DEFAULT_SEQ_LEN;
        rc = check_length(&m->config, out->seq_len, "--seq-len", err, err_size);
        size_t count = (size_t)out->n_seq * (size_t)out->seq_len;
        if (rc == 0 && !(out->ids = calloc(count, sizeof *out->ids)))
            rc = fail(err, err_size, "out of memory for %zu token ids", count);
        for (int i = 0; rc == 0 && i < out->n_seq; i++)
            out->ids[(size_t)i * out->seq_len] = 1; /* BOS */
    }
    if (rc != 0)
        llama_tokens_free(out);
    return rc;
}

void llama_tokens_free(struct llama_tokens *t)
{
    free(t->ids);
    t->ids = NULL;
}
