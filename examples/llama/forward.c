/* The forward pass, written for reading: each step is one function, the
 * matrix products go through CBLAS (row-major activations times the
 * transposed out x in weights), and attention runs one (sequence, head)
 * pair per OpenMP iteration. Rows of a chunk are sequence-major, so row
 * r = seq * positions + (pos - first). */
#include "forward.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const kind_names[LLAMA_SITE_KINDS] = {"attn_z", "attn_out", "mlp_in",
                                                         "mlp_out", "resid_post"};

int llama_site_parse(const struct llama_config *c, const char *name)
{
    int layer, used = 0;
    if (sscanf(name, "L%d_%n", &layer, &used) != 1 || used == 0 || layer < 0 ||
        layer >= c->n_layers)
        return -1;
    for (int k = 0; k < LLAMA_SITE_KINDS; k++)
        if (!strcmp(name + used, kind_names[k]))
            return layer * LLAMA_SITE_KINDS + k;
    return -1;
}

void llama_site_name(int site, char *out, size_t size)
{
    snprintf(out, size, "L%d_%s", site / LLAMA_SITE_KINDS, kind_names[site % LLAMA_SITE_KINDS]);
}

/* ---- state ------------------------------------------------------------ */

int llama_state_init(struct llama_state *s, const struct llama_config *c, int max_seqs,
                     int max_len)
{
    memset(s, 0, sizeof *s);
    s->max_seqs = max_seqs;
    s->max_len = max_len;
    s->threads = omp_get_max_threads();
    size_t rows = (size_t)max_seqs * (size_t)max_len;
    size_t cache = (size_t)c->n_layers * rows * (size_t)c->kv_dim;
    float **dim_arrays[] = {&s->x, &s->h, &s->q, &s->z, &s->delta};
    for (size_t i = 0; i < sizeof dim_arrays / sizeof *dim_arrays; i++)
        *dim_arrays[i] = malloc(rows * (size_t)c->dim * sizeof(float));
    s->k = malloc(rows * (size_t)c->kv_dim * sizeof(float));
    s->v = malloc(rows * (size_t)c->kv_dim * sizeof(float));
    s->gate = malloc(rows * (size_t)c->hidden_dim * sizeof(float));
    s->up = malloc(rows * (size_t)c->hidden_dim * sizeof(float));
    s->logits = malloc(rows * (size_t)c->vocab_size * sizeof(float));
    s->key_cache = malloc(cache * sizeof(float));
    s->value_cache = malloc(cache * sizeof(float));
    s->scores = malloc((size_t)s->threads * (size_t)max_len * sizeof(float));
    if (s->x && s->h && s->q && s->z && s->delta && s->k && s->v && s->gate && s->up &&
        s->logits && s->key_cache && s->value_cache && s->scores)
        return 0;
    llama_state_free(s);
    return -1;
}

void llama_state_free(struct llama_state *s)
{
    float *arrays[] = {s->x,      s->h,         s->q,         s->k,         s->v,
                       s->z,      s->delta,     s->gate,      s->up,        s->logits,
                       s->key_cache, s->value_cache, s->scores};
    for (size_t i = 0; i < sizeof arrays / sizeof *arrays; i++)
        free(arrays[i]);
    memset(s, 0, sizeof *s);
}

/* ---- building blocks ------------------------------------------------- */

/* out (rows x n_out) = in (rows x n_in) times W^T, W being n_out x n_in. */
static void linear(float *out, const float *in, const float *w, int64_t rows, int n_out,
                   int n_in)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, n_out, n_in, 1.0f, in,
                n_in, w, n_in, 0.0f, out, n_out);
}

static void rmsnorm(float *out, const float *x, const float *weight, int64_t rows, int dim)
{
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * dim;
        double sum = 0.0;
        for (int i = 0; i < dim; i++)
            sum += (double)xr[i] * xr[i];
        float scale = (float)(1.0 / sqrt(sum / dim + 1e-5));
        for (int i = 0; i < dim; i++)
            out[r * dim + i] = xr[i] * scale * weight[i];
    }
}

static void add(float *x, const float *delta, int64_t n)
{
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++)
        x[i] += delta[i];
}

/* Rotary embedding of every head of rows x width (width = heads x
 * head_size): the pair (2i, 2i+1) of a head turns by the angle of
 * frequency i at the row's position. */
static void rotate(float *x, int64_t rows, int width, int positions, int first,
                   const struct llama_model *m)
{
    int half = m->config.head_size / 2;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        int64_t pos = first + r % positions;
        const float *cosines = m->w.rope_cos + pos * half, *sines = m->w.rope_sin + pos * half;
        for (int j = 0; j < width; j += 2) {
            int i = (j % m->config.head_size) / 2;
            float a = x[r * width + j], b = x[r * width + j + 1];
            x[r * width + j] = a * cosines[i] - b * sines[i];
            x[r * width + j + 1] = a * sines[i] + b * cosines[i];
        }
    }
}

/* The cache keeps, per (layer, sequence, key/value head), keys and values
 * transposed: head_size rows of max_len positions, so that the loops over
 * positions below run over contiguous memory and vectorize. */
static size_t cache_offset(const struct llama_state *s, const struct llama_config *c,
                           int layer, int seq, int kv_head)
{
    size_t block = (size_t)c->head_size * s->max_len;
    return (((size_t)layer * s->max_seqs + seq) * c->n_kv_heads + kv_head) * block;
}

static void store_cache(struct llama_state *s, const struct llama_config *c, int layer,
                        int n_seqs, int first, int last)
{
    int positions = last - first, hs = c->head_size;
#pragma omp parallel for collapse(2) schedule(static)
    for (int seq = 0; seq < n_seqs; seq++) {
        for (int kv_head = 0; kv_head < c->n_kv_heads; kv_head++) {
            size_t at = cache_offset(s, c, layer, seq, kv_head);
            for (int p = first; p < last; p++) {
                size_t row = ((size_t)seq * positions + (p - first)) * c->kv_dim +
                             (size_t)kv_head * hs;
                for (int i = 0; i < hs; i++) {
                    s->key_cache[at + (size_t)i * s->max_len + p] = s->k[row + i];
                    s->value_cache[at + (size_t)i * s->max_len + p] = s->v[row + i];
                }
            }
        }
    }
}

/* e^x for x <= 0 (softmax arguments after subtracting the maximum), to
 * about 2 ulp, written without branches or calls so that the loops over
 * positions vectorize: 2^n times a degree-6 polynomial of the remainder. */
static inline float exp_nonpositive(float x)
{
    x = x < -87.0f ? -87.0f : x;
    const float round_shift = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    float n = (x * 1.44269504088896341f + round_shift) - round_shift;
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.0f + r * (1.0f + r * (0.5f + r * (1.66666672e-1f +
              r * (4.16664828e-2f + r * (8.33336077e-3f + r * 1.38908439e-3f)))));
    int32_t bits = (int32_t)(n + 127.0f) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* One query's attention over positions 0..p of one head: z = the
 * softmax(q . k / sqrt(head_size))-weighted sum of the values. Compiled
 * for AVX-512, AVX2 and plain x86-64, chosen at load time, because this
 * loop is most of the model's time. */
#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
static void attend_one(const float *q, const float *keys, const float *values, int p, int hs,
                       int stride, float scale, float *scores, float *z)
{
    int n = p + 1;
    memset(scores, 0, (size_t)n * sizeof *scores);
    for (int i = 0; i < hs; i++) {
        const float *k = keys + (size_t)i * stride;
        float qi = q[i] * scale;
#pragma omp simd
        for (int t = 0; t < n; t++)
            scores[t] += qi * k[t];
    }
    float top = scores[0];
#pragma omp simd reduction(max : top)
    for (int t = 1; t < n; t++)
        top = scores[t] > top ? scores[t] : top;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int t = 0; t < n; t++) {
        scores[t] = exp_nonpositive(scores[t] - top);
        sum += scores[t];
    }
    for (int i = 0; i < hs; i++) {
        const float *v = values + (size_t)i * stride;
        float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
        for (int t = 0; t < n; t++)
            acc += scores[t] * v[t];
        z[i] = acc / sum;
    }
}

/* Causal grouped-query attention of the chunk's queries over the cache
 * (which already holds this chunk's keys and values), one (sequence,
 * head) pair per iteration; every pair costs the same. */
static void attend(struct llama_state *s, const struct llama_model *m, int layer, int n_seqs,
                   int first, int last)
{
    const struct llama_config *c = &m->config;
    int positions = last - first, hs = c->head_size, group = c->n_heads / c->n_kv_heads;
    float scale = 1.0f / sqrtf((float)hs);
#pragma omp parallel for collapse(2) schedule(static)
    for (int seq = 0; seq < n_seqs; seq++) {
        for (int head = 0; head < c->n_heads; head++) {
            float *scores = s->scores + (size_t)omp_get_thread_num() * s->max_len;
            size_t at = cache_offset(s, c, layer, seq, head / group);
            for (int p = first; p < last; p++) {
                int64_t row = (int64_t)seq * positions + (p - first);
                attend_one(s->q + row * c->dim + head * hs, s->key_cache + at,
                           s->value_cache + at, p, hs, s->max_len, scale, scores,
                           s->z + row * c->dim + head * hs);
            }
        }
    }
}

static float silu(float a)
{
    return a / (1.0f + expf(-a));
}

/* ---- the pass ---------------------------------------------------------- */

#define HOOK(kind, rows_ptr)                                                            \
    do {                                                                                \
        if (hook && (rc = hook(user, layer * LLAMA_SITE_KINDS + (kind), (rows_ptr), span))) \
            return rc;                                                                  \
    } while (0)

static int attention_block(struct llama_state *s, const struct llama_model *m, int layer,
                           const struct llama_span *span, llama_hook_fn hook, void *user)
{
    const struct llama_config *c = &m->config;
    const struct llama_weights *w = &m->w;
    int n_seqs = span->n_seqs, first = span->first, last = span->last;
    int64_t rows = llama_span_rows(span), d = c->dim, kv = c->kv_dim;
    int rc;
    rmsnorm(s->h, s->x, w->rms_att + layer * d, rows, c->dim);
    linear(s->q, s->h, w->wq + layer * d * d, rows, c->dim, c->dim);
    linear(s->k, s->h, w->wk + layer * kv * d, rows, c->kv_dim, c->dim);
    linear(s->v, s->h, w->wv + layer * kv * d, rows, c->kv_dim, c->dim);
    rotate(s->q, rows, c->dim, last - first, first, m);
    rotate(s->k, rows, c->kv_dim, last - first, first, m);
    store_cache(s, c, layer, n_seqs, first, last);
    attend(s, m, layer, n_seqs, first, last);
    HOOK(LLAMA_ATTN_Z, s->z);
    linear(s->delta, s->z, w->wo + layer * d * d, rows, c->dim, c->dim);
    HOOK(LLAMA_ATTN_OUT, s->delta);
    add(s->x, s->delta, rows * d);
    return 0;
}

static int mlp_block(struct llama_state *s, const struct llama_model *m, int layer,
                     const struct llama_span *span, llama_hook_fn hook, void *user)
{
    const struct llama_config *c = &m->config;
    const struct llama_weights *w = &m->w;
    int64_t rows = llama_span_rows(span), d = c->dim, hd = c->hidden_dim;
    int rc;
    rmsnorm(s->h, s->x, w->rms_ffn + layer * d, rows, c->dim);
    HOOK(LLAMA_MLP_IN, s->h);
    linear(s->gate, s->h, w->w1 + layer * hd * d, rows, c->hidden_dim, c->dim);
    linear(s->up, s->h, w->w3 + layer * hd * d, rows, c->hidden_dim, c->dim);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < rows * hd; i++)
        s->gate[i] = silu(s->gate[i]) * s->up[i];
    linear(s->delta, s->gate, w->w2 + layer * d * hd, rows, c->dim, c->hidden_dim);
    HOOK(LLAMA_MLP_OUT, s->delta);
    add(s->x, s->delta, rows * d);
    HOOK(LLAMA_RESID_POST, s->x);
    return 0;
}

int llama_forward(struct llama_state *s, const struct llama_model *m,
                  const struct llama_tokens *t, const struct llama_span *span,
                  llama_hook_fn hook, void *user)
{
    const struct llama_config *c = &m->config;
    int positions = span->last - span->first;
    int64_t rows = llama_span_rows(span);
    for (int64_t r = 0; r < rows; r++) {
        int64_t seq = span->first_seq + r / positions, pos = span->first + r % positions;
        int32_t id = t->ids[seq * t->seq_len + pos];
        memcpy(s->x + r * c->dim, m->w.token_embedding + (int64_t)id * c->dim,
               (size_t)c->dim * sizeof(float));
    }
    for (int layer = 0; layer < c->n_layers; layer++) {
        int rc = attention_block(s, m, layer, span, hook, user);
        if (rc == 0)
            rc = mlp_block(s, m, layer, span, hook, user);
        if (rc)
            return rc;
    }
    rmsnorm(s->h, s->x, m->w.rms_final, rows, c->dim);
    linear(s->logits, s->h, m->w.classifier, rows, c->vocab_size, c->dim);
    return 0;
}
