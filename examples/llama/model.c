/* Loading a llama2.c checkpoint: seven int32 (dim, hidden_dim, n_layers,
 * n_heads, n_kv_heads, vocab_size — negative when the classifier has its
 * own weights —, seq_len), then the float32 tensors in a fixed order. A
 * header is checked against the file's size before anything is allocated,
 * so a truncated or foreign file costs one line, not a crash. */
#include "model.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Bounds far above any Llama-family model, low enough that no product of
 * them overflows int64. */
enum { MAX_DIM = 1 << 16, MAX_LAYERS = 1 << 10, MAX_VOCAB = 1 << 22, MAX_SEQ = 1 << 20 };

static int fail(char *err, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, size, fmt, ap);
    va_end(ap);
    return -1;
}

static int check_config(const int32_t header[7], struct llama_config *c, char *err,
                        size_t size)
{
    c->dim = header[0];
    c->hidden_dim = header[1];
    c->n_layers = header[2];
    c->n_heads = header[3];
    c->n_kv_heads = header[4];
    c->shared_classifier = header[5] > 0;
    c->vocab_size = header[5] == INT32_MIN ? 0 : abs(header[5]);
    c->seq_len = header[6];
    if (c->dim < 1 || c->dim > MAX_DIM || c->hidden_dim < 1 || c->hidden_dim > MAX_DIM ||
        c->n_layers < 1 || c->n_layers > MAX_LAYERS || c->vocab_size < 1 ||
        c->vocab_size > MAX_VOCAB || c->seq_len < 1 || c->seq_len > MAX_SEQ)
        return fail(err, size,
                    "header gives dim %d, hidden %d, layers %d, vocabulary %d, context %d: "
                    "not a llama2.c checkpoint (or a corrupt one)",
                    c->dim, c->hidden_dim, c->n_layers, header[5], c->seq_len);
    if (c->n_heads < 1 || c->n_kv_heads < 1 || c->n_kv_heads > c->n_heads ||
        c->n_heads % c->n_kv_heads || c->dim % c->n_heads || (c->dim / c->n_heads) % 2)
        return fail(err, size,
                    "header gives %d heads and %d key/value heads for dim %d: the heads "
                    "must divide dim into even head sizes and share key/value heads evenly",
                    c->n_heads, c->n_kv_heads, c->dim);
    c->head_size = c->dim / c->n_heads;
    c->kv_dim = c->n_kv_heads * c->head_size;
    return 0;
}

/* Number of floats the header's tensors take, in file order. */
static int64_t weight_floats(const struct llama_config *c)
{
    int64_t d = c->dim, h = c->hidden_dim, l = c->n_layers, v = c->vocab_size;
    int64_t per_layer = 2 * d + d * d * 2 + 2 * (int64_t)c->kv_dim * d + 3 * h * d;
    int64_t n = v * d + l * per_layer + d + (int64_t)c->seq_len * c->head_size;
    return c->shared_classifier ? n : n + v * d;
}

static void point_weights(struct llama_model *m)
{
    const struct llama_config *c = &m->config;
    int64_t d = c->dim, h = c->hidden_dim, l = c->n_layers, kv = c->kv_dim;
    const float *p = m->data;
#define TAKE(field, count) (m->w.field = p, p += (count))
    TAKE(token_embedding, (int64_t)c->vocab_size * d);
    TAKE(rms_att, l * d);
    TAKE(wq, l * d * d);
    TAKE(wk, l * kv * d);
    TAKE(wv, l * kv * d);
    TAKE(wo, l * d * d);
    TAKE(rms_ffn, l * d);
    TAKE(w1, l * h * d);
    TAKE(w2, l * d * h);
    TAKE(w3, l * h * d);
    TAKE(rms_final, d);
    TAKE(rope_cos, (int64_t)c->seq_len * c->head_size / 2);
    TAKE(rope_sin, (int64_t)c->seq_len * c->head_size / 2);
#undef TAKE
    m->w.classifier = c->shared_classifier ? m->w.token_embedding : p;
}

static int check_finite(const float *x, int64_t n, char *err, size_t size)
{
    for (int64_t i = 0; i < n; i++)
        if (x[i] - x[i] != 0.0f)
            return fail(err, size, "weight %lld (after the header) is not finite",
                        (long long)i);
    return 0;
}

int llama_model_load(const char *path, struct llama_model *model, char *err, size_t err_size)
{
    memset(model, 0, sizeof *model);
    FILE *f = fopen(path, "rb");
    if (!f)
        return fail(err, err_size, "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    int32_t header[7];
    int rc = -1;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fail(err, err_size, "%s is not a regular file", path);
    } else if (fread(header, sizeof header, 1, f) != 1) {
        fail(err, err_size, "%s: %lld bytes, shorter than the 28-byte header", path,
             (long long)st.st_size);
    } else if (check_config(header, &model->config, err, err_size) == 0) {
        int64_t floats = weight_floats(&model->config);
        int64_t expected = (int64_t)sizeof header + 4 * floats;
        if (st.st_size != expected) {
            fail(err, err_size,
                 "%s: the header describes %lld bytes of weights but the file holds %lld "
                 "(truncated, or not this format)",
                 path, (long long)(expected - (int64_t)sizeof header),
                 (long long)(st.st_size - (int64_t)sizeof header));
        } else if (!(model->data = malloc((size_t)floats * sizeof(float)))) {
            fail(err, err_size, "out of memory for %lld weights", (long long)floats);
        } else if (fread(model->data, sizeof(float), (size_t)floats, f) != (size_t)floats) {
            fail(err, err_size, "%s: read failed: %s", path, strerror(errno));
        } else if (check_finite(model->data, floats, err, err_size) == 0) {
            point_weights(model);
            rc = 0;
        }
    }
    fclose(f);
    if (rc != 0)
        llama_model_free(model);
    return rc;
}

void llama_model_free(struct llama_model *model)
{
    free(model->data);
    model->data = NULL;
}
