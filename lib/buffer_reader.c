/* Reading rows of mapped activation files with pread (see buffer.h): the
 * training loop's batches and the evaluation stream then cost no resident
 * memory beyond the rows copied out, whatever the size of the file. */
#include "buffer.h"

#include "dtype.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

struct subsae__row_reader {
    const subsae_buffer *buf;
    int *fd;               /* per source: a descriptor of its file, or -1 */
    int64_t *offset;       /* per source: file offset of its row 0 */
    unsigned char *bounce; /* one stored row of the widest dtype */
};

static int read_at(int fd, void *dst, size_t n, int64_t offset)
{
    unsigned char *p = dst;
    while (n > 0) {
        ssize_t got = pread(fd, p, n, (off_t)offset);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return got < 0 ? errno : EIO; /* 0: the file shrank */
        p += got;
        n -= (size_t)got;
        offset += got;
    }
    return 0;
}

/* A descriptor of source s's file whose bytes at the source's offset are
 * the mapped ones, or -1. */
static int open_source(const struct subsae__source *src, int64_t dim, int64_t offset,
                       unsigned char *bounce)
{
    if (!src->path || !src->file_base || src->owned || src->rows < 1)
        return -1;
    int fd;
    do
        fd = open(src->path, O_RDONLY | O_CLOEXEC);
    while (fd < 0 && errno == EINTR);
    if (fd < 0)
        return -1;
    const size_t bytes = (size_t)dim * subsae__dtype_size(src->dtype);
    if (read_at(fd, bounce, bytes, offset) != 0 || memcmp(bounce, src->data, bytes) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

int subsae__row_reader_open(const subsae_buffer *buf, subsae__row_reader **out)
{
    const int64_t n = buf->n_sources;
    subsae__row_reader *r = subsae__calloc(1, sizeof *r);
    size_t widest = 8 * (size_t)buf->dim;
    if (r) {
        r->buf = buf;
        r->fd = subsae__malloc((size_t)(n > 0 ? n : 1) * sizeof *r->fd);
        r->offset = subsae__malloc((size_t)(n > 0 ? n : 1) * sizeof *r->offset);
        r->bounce = subsae__malloc(widest > 0 ? widest : 1);
    }
    if (!r || !r->fd || !r->offset || !r->bounce) {
        if (r) {
            subsae__free(r->fd);
            subsae__free(r->offset);
            subsae__free(r->bounce);
            subsae__free(r);
        }
        return subsae__fail_nomem("row reader", widest);
    }
    for (int64_t s = 0; s < n; s++) {
        const struct subsae__source *src = &buf->sources[s];
        r->offset[s] = src->file_base
                           ? (int64_t)(src->data - (const unsigned char *)src->file_base)
                           : 0;
        r->fd[s] = open_source(src, buf->dim, r->offset[s], r->bounce);
    }
    *out = r;
    return SUBSAE_OK;
}

void subsae__row_reader_close(subsae__row_reader *r)
{
    if (!r)
        return;
    for (int64_t s = 0; s < r->buf->n_sources; s++)
        if (r->fd[s] >= 0)
            close(r->fd[s]);
    subsae__free(r->fd);
    subsae__free(r->offset);
    subsae__free(r->bounce);
    subsae__free(r);
}

const subsae_buffer *subsae__row_reader_buffer(const subsae__row_reader *r)
{
    return r ? r->buf : NULL;
}

/* Where stored row `stored` of source s starts in its file, and its size. */
static int64_t file_offset(const subsae__row_reader *r, int64_t s, int64_t stored)
{
    const subsae_buffer *buf = r->buf;
    return r->offset[s] + (stored - buf->first_row[s]) * buf->sources[s].row_stride_bytes;
}

static size_t row_bytes(const subsae_buffer *buf, int64_t s)
{
    return (size_t)buf->dim * subsae__dtype_size(buf->sources[s].dtype);
}

int subsae__row_reader_load_stored(subsae__row_reader *r, int64_t stored, float *dst,
                                   int64_t *finite)
{
    const subsae_buffer *buf = r->buf;
    const int64_t s = subsae__buffer_source_of(buf, stored);
    const struct subsae__source *src = &buf->sources[s];
    if (r->fd[s] < 0) {
        *finite = subsae__buffer_load_row(buf, stored, dst);
        return SUBSAE_OK;
    }
    int code = read_at(r->fd[s], r->bounce, row_bytes(buf, s), file_offset(r, s, stored));
    if (code)
        return subsae__fail(SUBSAE_E_IO, SUBSAE_REASON_SYSTEM, "%s: cannot read row %lld: %s",
                            src->path, (long long)(stored - buf->first_row[s]), strerror(code));
    *finite = (int64_t)subsae__widen(r->bounce, src->dtype, (size_t)buf->dim, dst);
    return SUBSAE_OK;
}

/* The page cache asked to start reading the file rows among `rows` that
 * the gather will pread: a random batch of a file larger than memory would
 * otherwise wait for one disk read at a time, while the device serves
 * many at once. Rows outside the buffer are left to the gather's check;
 * the advice failing changes nothing but the speed. */
static void advise_rows(const subsae__row_reader *r, const int64_t *rows, int64_t n_rows)
{
    const subsae_buffer *buf = r->buf;
    const int64_t available = subsae_buffer_rows(buf);
    for (int64_t i = 0; i < n_rows; i++) {
        if (rows[i] < 0 || rows[i] >= available)
            continue;
        const int64_t stored = buf->n_skipped ? subsae__buffer_stored_row(buf, rows[i])
                                              : rows[i];
        const int64_t s = subsae__buffer_source_of(buf, stored);
        if (r->fd[s] < 0)
            continue;
        (void)posix_fadvise(r->fd[s], (off_t)file_offset(r, s, stored),
                            (off_t)row_bytes(buf, s), POSIX_FADV_WILLNEED);
    }
}

int subsae__row_reader_gather(subsae__row_reader *r, const int64_t *rows, int64_t first,
                              int64_t n_rows, float *out, int64_t out_stride)
{
    const subsae_buffer *buf = r->buf;
    const int64_t available = subsae_buffer_rows(buf), dim = buf->dim;
    if (rows)
        advise_rows(r, rows, n_rows);
    for (int64_t i = 0; i < n_rows; i++) {
        const int64_t row = rows ? rows[i] : first + i;
        if (row < 0 || row >= available)
            return subsae__fail(SUBSAE_E_RANGE, SUBSAE_REASON_INDEX_OUT_OF_RANGE,
                                "row %lld is outside the buffer's %lld rows", (long long)row,
                                (long long)available);
        const int64_t stored = buf->n_skipped ? subsae__buffer_stored_row(buf, row) : row;
        float *dst = out + i * out_stride;
        int64_t good;
        int rc = subsae__row_reader_load_stored(r, stored, dst, &good);
        if (rc)
            return rc;
        if (good != dim)
            return subsae__buffer_nonfinite_error(buf, row, stored, good, dst[good]);
    }
    return SUBSAE_OK;
}
