/* subsae_buffer_fingerprint: a cheap identity of a buffer's content (a
 * training run records it to refuse resuming on other data). */
#include "buffer.h"

#include <string.h>

/* 64-bit FNV-1a: simple, fixed on every machine, good enough to tell data
 * sets apart (not a cryptographic hash). */
static uint64_t fnv1a(uint64_t h, const void *data, size_t n)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

static uint64_t fnv1a_int64(uint64_t h, int64_t v)
{
    unsigned char bytes[8]; /* little-endian whatever the machine */
    for (int i = 0; i < 8; i++)
        bytes[i] = (unsigned char)((uint64_t)v >> (8 * i));
    return fnv1a(h, bytes, sizeof bytes);
}

int subsae_buffer_fingerprint(const subsae_buffer *buf, int64_t sample_rows, uint64_t *out)
{
    static const char *fn = "subsae_buffer_fingerprint";
    SUBSAE__NOT_NULL(fn, buf);
    SUBSAE__NOT_NULL(fn, out);
    if (sample_rows < 1)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                            "%s: sample_rows %lld < 1", fn, (long long)sample_rows);
    const int64_t n = subsae_buffer_rows(buf), d = subsae_buffer_dim(buf);
    uint64_t h = fnv1a_int64(fnv1a_int64(0xcbf29ce484222325ULL, n), d);
    const int64_t m = n < sample_rows ? n : sample_rows;
    int64_t *rows = subsae__malloc((size_t)(m > 0 ? m : 1) * sizeof *rows);
    float *x = subsae__malloc((size_t)(m > 0 ? m : 1) * (size_t)d * sizeof *x);
    int rc = SUBSAE_OK;
    if (!rows || !x) {
        rc = subsae__fail_nomem("fingerprint sample", (size_t)(m * d) * sizeof *x);
        goto done;
    }
    /* Evenly spread, first and last included. */
    for (int64_t i = 0; i < m; i++)
        rows[i] = m > 1 ? (int64_t)((double)i * (double)(n - 1) / (double)(m - 1) + 0.5) : 0;
    /* Read with pread: rows gathered through the mapping would stay
     * resident, with their neighbours (see buffer.h). */
    subsae__row_reader *reader = NULL;
    if (m > 0)
        rc = subsae__row_reader_open(buf, &reader);
    if (m > 0 && !rc)
        rc = subsae__row_reader_gather(reader, rows, 0, m, x, d);
    subsae__row_reader_close(reader);
    if (!rc) {
        for (int64_t i = 0; i < m; i++) {
            h = fnv1a_int64(h, rows[i]);
            for (int64_t j = 0; j < d; j++) {
                uint32_t bits;
                memcpy(&bits, &x[i * d + j], sizeof bits);
                h = fnv1a_int64(h, (int64_t)bits);
            }
        }
        *out = h;
    }
done:
    subsae__free(rows);
    subsae__free(x);
    return rc;
}
