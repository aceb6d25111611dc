/* subsae_buffer: creation in memory, borrowing, appends, reads, gathers,
 * source queries and the non-finite policy. File readers add sources of
 * their own (io_npy.c, io_safetensors.c). */
#include "buffer.h"
#include "dtype.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int subsae__buffer_new(int64_t dim, int64_t n_sources, subsae_buffer **out)
{
    subsae_buffer *buf = subsae__calloc(1, sizeof *buf);
    if (!buf)
        return subsae__fail_nomem("buffer", sizeof *buf);
    buf->dim = dim;
    buf->n_sources = n_sources;
    buf->sources = subsae__calloc((size_t)n_sources, sizeof *buf->sources);
    buf->first_row = subsae__calloc((size_t)n_sources + 1, sizeof *buf->first_row);
    if (!buf->sources || !buf->first_row) {
        subsae_buffer_free(buf);
        return subsae__fail_nomem("buffer sources", (size_t)n_sources * sizeof *buf->sources);
    }
    *out = buf;
    return SUBSAE_OK;
}

void subsae__buffer_index(subsae_buffer *buf)
{
    buf->first_row[0] = 0;
    for (int64_t i = 0; i < buf->n_sources; i++)
        buf->first_row[i + 1] = buf->first_row[i] + buf->sources[i].rows;
}

void subsae__source_release(struct subsae__source *src)
{
    if (src->map)
        munmap(src->map, src->map_size);
    subsae__free(src->owned);
    subsae__free(src->path);
    memset(src, 0, sizeof *src);
}

void subsae_buffer_free(subsae_buffer *buf)
{
    if (!buf)
        return;
    for (int64_t i = 0; buf->sources && i < buf->n_sources; i++)
        subsae__source_release(&buf->sources[i]);
    subsae__free(buf->sources);
    subsae__free(buf->first_row);
    subsae__free(buf->skipped);
    subsae__free(buf);
}

/* Rows given to a buffer: `data` (the argument `name`) not NULL when
 * there are rows, in a dtype a buffer reads. */
static int check_input(const char *function, const void *data, const char *name, int64_t n_rows,
                       int dtype)
{
    if (!data && n_rows > 0)
        return subsae__fail_null(function, name);
    if (dtype == SUBSAE_DTYPE_F32 || dtype == SUBSAE_DTYPE_F16 || dtype == SUBSAE_DTYPE_BF16 ||
        dtype == SUBSAE_DTYPE_F64)
        return SUBSAE_OK;
    return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_UNSUPPORTED_DTYPE,
                        "%s: dtype %d is not an input dtype (f32, f16, bf16, f64)", function,
                        dtype);
}

int subsae_buffer_create(int64_t dim, subsae_buffer **out)
{
    SUBSAE__NOT_NULL("subsae_buffer_create", out);
    if (dim <= 0 || dim > INT32_MAX)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                            "subsae_buffer_create: dim %lld is not in [1, 2^31)",
                            (long long)dim);
    subsae_buffer *buf = NULL;
    int rc = subsae__buffer_new(dim, 1, &buf);
    if (rc)
        return rc;
    buf->growable = true;
    buf->sources[0].format = SUBSAE_FORMAT_MEMORY;
    buf->sources[0].dtype = SUBSAE_DTYPE_F32;
    buf->sources[0].ndim = 2;
    buf->sources[0].shape[1] = dim;
    buf->sources[0].row_stride_bytes = dim * (int64_t)sizeof(float);
    subsae__buffer_index(buf);
    *out = buf;
    return SUBSAE_OK;
}

static int grow(subsae_buffer *buf, int64_t needed_rows)
{
    struct subsae__source *src = &buf->sources[0];
    if (needed_rows <= buf->capacity_rows)
        return SUBSAE_OK;
    int64_t capacity = buf->capacity_rows ? buf->capacity_rows : 1024;
    while (capacity < needed_rows)
        capacity = capacity > INT64_MAX / 2 ? needed_rows : capacity * 2;
    size_t bytes;
    if (!subsae__mul_size((size_t)capacity, (size_t)buf->dim * sizeof(float), &bytes))
        return subsae__fail(SUBSAE_E_RANGE, SUBSAE_REASON_SHAPE_OVERFLOW,
                            "buffer of %lld rows x %lld overflows memory size",
                            (long long)capacity, (long long)buf->dim);
    void *grown = subsae__realloc(src->owned, bytes);
    if (!grown)
        return subsae__fail_nomem("buffer rows", bytes);
    src->owned = grown;
    src->data = grown;
    buf->capacity_rows = capacity;
    return SUBSAE_OK;
}

int subsae_buffer_append(subsae_buffer *buf, const void *rows, int dtype, int64_t n_rows,
                         int64_t row_stride)
{
    static const char *fn = "subsae_buffer_append";
    SUBSAE__NOT_NULL(fn, buf);
    int rc = check_input(fn, rows, "rows", n_rows, dtype);
    if (rc)
        return rc;
    if (!buf->growable)
        return subsae__fail(SUBSAE_E_STATE, SUBSAE_REASON_WRONG_STATE,
                            "%s: buffer is not growable (it reads files or borrows memory)",
                            fn);
    if (n_rows < 0 || row_stride < buf->dim)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                            "%s: n_rows %lld, row_stride %lld (must be >= dim %lld)", fn,
                            (long long)n_rows, (long long)row_stride, (long long)buf->dim);
    struct subsae__source *src = &buf->sources[0];
    int64_t first = src->rows;
    if (n_rows > INT64_MAX - first)
        return subsae__fail(SUBSAE_E_RANGE, SUBSAE_REASON_SHAPE_OVERFLOW, "%s: too many rows",
                            fn);
    rc = grow(buf, first + n_rows);
    if (rc)
        return rc;
    size_t element = subsae__dtype_size(dtype);
    const unsigned char *in = rows;
    float *store = src->owned;
    int64_t kept = first;
    for (int64_t i = 0; i < n_rows; i++) {
        float *row = store + kept * buf->dim;
        const void *from = in + (size_t)i * (size_t)row_stride * element;
        int64_t bad = (int64_t)subsae__widen(from, dtype, (size_t)buf->dim, row);
        if (bad == buf->dim) {
            kept++;
            continue;
        }
        if (buf->skip_nonfinite)
            continue;
        return subsae__fail(SUBSAE_E_NONFINITE, SUBSAE_REASON_NONFINITE_INPUT,
                            "%s: input row %lld, column %lld is %g; nothing appended", fn,
                            (long long)i, (long long)bad, (double)row[bad]);
    }
    src->rows = kept;
    src->shape[0] = kept;
    subsae__buffer_index(buf);
    return SUBSAE_OK;
}

int subsae_buffer_wrap(const void *data, int dtype, int64_t n_rows, int64_t dim,
                       int64_t row_stride, int ownership, subsae_buffer **out)
{
    static const char *fn = "subsae_buffer_wrap";
    SUBSAE__NOT_NULL(fn, out);
    int rc = check_input(fn, data, "data", n_rows, dtype);
    if (rc)
        return rc;
    if (ownership != SUBSAE_COPY && ownership != SUBSAE_BORROW)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                            "%s: ownership %d is neither SUBSAE_COPY nor SUBSAE_BORROW", fn,
                            ownership);
    if (n_rows < 0 || dim <= 0 || dim > INT32_MAX || row_stride < dim)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                            "%s: n_rows %lld, dim %lld, row_stride %lld", fn, (long long)n_rows,
                            (long long)dim, (long long)row_stride);
    size_t element = subsae__dtype_size(dtype), total;
    if (!subsae__mul_size((size_t)n_rows, (size_t)row_stride * element, &total))
        return subsae__fail(SUBSAE_E_RANGE, SUBSAE_REASON_SHAPE_OVERFLOW,
                            "%s: %lld rows of stride %lld overflow", fn, (long long)n_rows,
                            (long long)row_stride);
    subsae_buffer *buf = NULL;
    if (ownership == SUBSAE_COPY) {
        rc = subsae_buffer_create(dim, &buf);
        if (!rc)
            rc = subsae_buffer_append(buf, data, dtype, n_rows, row_stride);
        if (rc) {
            subsae_buffer_free(buf);
            return rc;
        }
        *out = buf;
        return SUBSAE_OK;
    }
    rc = subsae__buffer_new(dim, 1, &buf);
    if (rc)
        return rc;
    struct subsae__source *src = &buf->sources[0];
    src->format = SUBSAE_FORMAT_MEMORY;
    src->dtype = dtype;
    src->ndim = 2;
    src->shape[0] = n_rows;
    src->shape[1] = dim;
    src->rows = n_rows;
    src->data = data;
    src->row_stride_bytes = row_stride * (int64_t)element;
    subsae__buffer_index(buf);
    *out = buf;
    return SUBSAE_OK;
}

int64_t subsae__buffer_stored_rows(const subsae_buffer *buf)
{
    return buf->first_row[buf->n_sources];
}

int64_t subsae_buffer_rows(const subsae_buffer *buf)
{
    return buf ? subsae__buffer_stored_rows(buf) - buf->n_skipped : -1;
}

int64_t subsae_buffer_dim(const subsae_buffer *buf)
{
    return buf ? buf->dim : -1;
}

int64_t subsae__buffer_stored_row(const subsae_buffer *buf, int64_t row)
{
    /* skipped[j] - j is non-decreasing and counts kept rows before the
     * j-th skipped one: the stored row is row plus the number of skipped
     * rows with skipped[j] - j <= row. */
    int64_t lo = 0, hi = buf->n_skipped;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (buf->skipped[mid] - mid <= row)
            lo = mid + 1;
        else
            hi = mid;
    }
    return row + lo;
}

int64_t subsae__buffer_source_of(const subsae_buffer *buf, int64_t stored)
{
    int64_t lo = 0, hi = buf->n_sources - 1;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo + 1) / 2;
        if (buf->first_row[mid] <= stored)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

int64_t subsae__buffer_load_row(const subsae_buffer *buf, int64_t stored, float *out)
{
    int64_t s = subsae__buffer_source_of(buf, stored);
    const struct subsae__source *src = &buf->sources[s];
    const unsigned char *row = src->data + (stored - buf->first_row[s]) * src->row_stride_bytes;
    return (int64_t)subsae__widen(row, src->dtype, (size_t)buf->dim, out);
}

int subsae__buffer_nonfinite_error(const subsae_buffer *buf, int64_t row, int64_t stored,
                                   int64_t column, float value)
{
    /* The remedy (subsae_buffer_skip_nonfinite, a program's own option) is
     * the caller's to name: the message says what and where. */
    int64_t s = subsae__buffer_source_of(buf, stored);
    const char *where = buf->sources[s].path ? buf->sources[s].path : "memory";
    return subsae__fail(SUBSAE_E_NONFINITE, SUBSAE_REASON_NONFINITE_INPUT,
                        "%s: row %lld (row %lld of this source), column %lld is %g", where,
                        (long long)row, (long long)(stored - buf->first_row[s]),
                        (long long)column, (double)value);
}

static int check_read_args(const char *fn, const subsae_buffer *buf, const void *rows,
                           int64_t n_rows, const float *out, int64_t out_stride)
{
    SUBSAE__NOT_NULL(fn, buf);
    if (n_rows > 0 && !out)
        return subsae__fail_null(fn, "out");
    if (n_rows > 0 && !rows)
        return subsae__fail_null(fn, "rows");
    if (n_rows < 0 || out_stride < buf->dim)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                            "%s: n_rows %lld, out_stride %lld (must be >= dim %lld)", fn,
                            (long long)n_rows, (long long)out_stride, (long long)buf->dim);
    return SUBSAE_OK;
}

static int load_rows(const subsae_buffer *buf, const int64_t *rows, int64_t first,
                     int64_t n_rows, float *out, int64_t out_stride)
{
    int64_t available = subsae_buffer_rows(buf);
    for (int64_t i = 0; i < n_rows; i++) {
        int64_t row = rows ? rows[i] : first + i;
        if (row < 0 || row >= available)
            return subsae__fail(SUBSAE_E_RANGE, SUBSAE_REASON_INDEX_OUT_OF_RANGE,
                                "row %lld is outside the buffer's %lld rows", (long long)row,
                                (long long)available);
        int64_t stored = buf->n_skipped ? subsae__buffer_stored_row(buf, row) : row;
        float *dst = out + i * out_stride;
        int64_t bad = subsae__buffer_load_row(buf, stored, dst);
        if (bad != buf->dim)
            return subsae__buffer_nonfinite_error(buf, row, stored, bad, dst[bad]);
    }
    return SUBSAE_OK;
}

int subsae_buffer_read(const subsae_buffer *buf, int64_t first_row, int64_t n_rows, float *out,
                       int64_t out_stride)
{
    static const char *fn = "subsae_buffer_read";
    int rc = check_read_args(fn, buf, "", n_rows, out, out_stride);
    if (rc)
        return rc;
    if (first_row < 0 || first_row > subsae_buffer_rows(buf) ||
        n_rows > subsae_buffer_rows(buf) - first_row)
        return subsae__fail(SUBSAE_E_RANGE, SUBSAE_REASON_INDEX_OUT_OF_RANGE,
                            "%s: rows [%lld, %lld) are outside the buffer's %lld rows", fn,
                            (long long)first_row, (long long)(first_row + n_rows),
                            (long long)subsae_buffer_rows(buf));
    return load_rows(buf, NULL, first_row, n_rows, out, out_stride);
}

int subsae_buffer_gather(const subsae_buffer *buf, const int64_t *rows, int64_t n_rows,
                         float *out, int64_t out_stride)
{
    int rc = check_read_args("subsae_buffer_gather", buf, rows, n_rows, out, out_stride);
    if (rc)
        return rc;
    return load_rows(buf, rows, 0, n_rows, out, out_stride);
}

/* Give back the resident pages of the mapped rows [first, end) of source
 * s (the page cache keeps them; a later read maps them again). */
static void release_rows(const subsae_buffer *buf, int64_t s, int64_t first, int64_t end)
{
    const struct subsae__source *src = &buf->sources[s];
    if (!src->file_base || end <= first)
        return;
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    const uintptr_t from = (uintptr_t)(src->data +
                                       (first - buf->first_row[s]) * src->row_stride_bytes);
    const uintptr_t to = (uintptr_t)(src->data +
                                     (end - buf->first_row[s]) * src->row_stride_bytes);
    const uintptr_t a = from / page * page, b = to / page * page;
    if (b > a)
        madvise((void *)a, b - a, MADV_DONTNEED); /* advice: a failure changes nothing */
}

/* Every stored row, widened through the mapping (fast) and handed to
 * `visit` with the count of its values before the first non-finite one;
 * the pages of a file are given back every few MB, so that scanning a
 * file larger than memory keeps none of it resident. */
static int scan_rows(const subsae_buffer *buf, float *row,
                     int (*visit)(void *ctx, int64_t stored, const float *row, int64_t finite),
                     void *ctx)
{
    enum { RELEASE_BYTES = 4 << 20 };
    const int64_t stored_rows = subsae__buffer_stored_rows(buf);
    int64_t s = 0, released = 0;
    int rc = SUBSAE_OK;
    for (int64_t r = 0; !rc && r < stored_rows; r++) {
        while (r >= buf->first_row[s + 1]) { /* the next source: the last one's rest goes */
            release_rows(buf, s, released, buf->first_row[s + 1]);
            released = buf->first_row[++s];
        }
        rc = visit(ctx, r, row, subsae__buffer_load_row(buf, r, row));
        if ((r + 1 - released) * buf->sources[s].row_stride_bytes >= RELEASE_BYTES) {
            release_rows(buf, s, released, r + 1);
            released = r + 1;
        }
    }
    if (stored_rows > 0)
        release_rows(buf, s, released, buf->first_row[s + 1]);
    return rc;
}

struct bad_rows {
    int64_t dim, *list, count, capacity;
};

static int list_bad_row(void *ctx, int64_t stored, const float *row, int64_t finite)
{
    (void)row;
    struct bad_rows *b = ctx;
    if (finite == b->dim)
        return SUBSAE_OK;
    if (b->count == b->capacity) {
        int64_t capacity = b->capacity ? 2 * b->capacity : 16;
        int64_t *grown = subsae__realloc(b->list, (size_t)capacity * sizeof *grown);
        if (!grown)
            return subsae__fail_nomem("skipped rows", (size_t)capacity * sizeof *grown);
        b->list = grown;
        b->capacity = capacity;
    }
    b->list[b->count++] = stored;
    return SUBSAE_OK;
}

int subsae_buffer_skip_nonfinite(subsae_buffer *buf, int64_t *skipped)
{
    static const char *fn = "subsae_buffer_skip_nonfinite";
    SUBSAE__NOT_NULL(fn, buf);
    int64_t stored_rows = subsae__buffer_stored_rows(buf);
    /* No row buffer without rows: a tiny file may declare a huge width
     * for zero rows. */
    float *row = stored_rows ? subsae__malloc((size_t)buf->dim * sizeof *row) : NULL;
    if (stored_rows && !row)
        return subsae__fail_nomem("row", (size_t)buf->dim * sizeof *row);
    struct bad_rows bad = {.dim = buf->dim};
    int rc = stored_rows ? scan_rows(buf, row, list_bad_row, &bad) : SUBSAE_OK;
    subsae__free(row);
    if (rc) {
        subsae__free(bad.list);
        return rc;
    }
    subsae__free(buf->skipped);
    buf->skipped = bad.list;
    buf->n_skipped = bad.count;
    buf->skip_nonfinite = true;
    if (skipped)
        *skipped = bad.count;
    return SUBSAE_OK;
}

struct row_sums {
    int64_t dim, finite_rows, bad_values, first_bad;
    double *sum, norm_sum;
};

static int add_row(void *ctx, int64_t stored, const float *row, int64_t finite)
{
    struct row_sums *t = ctx;
    const size_t dim = (size_t)t->dim;
    if (finite != t->dim) {
        for (size_t j = 0; j < dim; j++)
            t->bad_values += !isfinite(row[j]);
        if (t->first_bad < 0)
            t->first_bad = stored;
        return SUBSAE_OK;
    }
    double squares = 0.0;
    for (size_t j = 0; j < dim; j++) {
        t->sum[j] += row[j];
        squares += (double)row[j] * row[j];
    }
    t->norm_sum += sqrt(squares);
    t->finite_rows++;
    return SUBSAE_OK;
}

int subsae_buffer_stats(const subsae_buffer *buf, float *mean, double *mean_norm,
                        int64_t *nonfinite_values, int64_t *first_nonfinite_row)
{
    static const char *fn = "subsae_buffer_stats";
    SUBSAE__NOT_NULL(fn, buf);
    size_t dim = (size_t)buf->dim;
    struct row_sums t = {.dim = buf->dim, .first_bad = -1};
    if (subsae__buffer_stored_rows(buf) > 0) {
        /* Nothing to scan without rows, and no dim-sized work space: a
         * tiny file may declare a huge width for zero rows. */
        float *row = subsae__malloc(dim * sizeof *row);
        t.sum = subsae__calloc(dim, sizeof *t.sum);
        int rc = row && t.sum
                     ? scan_rows(buf, row, add_row, &t)
                     : subsae__fail_nomem("statistics", dim * (sizeof *row + sizeof *t.sum));
        subsae__free(row);
        if (rc) {
            subsae__free(t.sum);
            return rc;
        }
    }
    if (mean)
        for (size_t j = 0; j < dim; j++)
            mean[j] = t.finite_rows ? (float)(t.sum[j] / (double)t.finite_rows) : 0.0f;
    if (mean_norm)
        *mean_norm = t.finite_rows ? t.norm_sum / (double)t.finite_rows : 0.0;
    if (nonfinite_values)
        *nonfinite_values = t.bad_values;
    if (first_nonfinite_row)
        *first_nonfinite_row = t.first_bad;
    subsae__free(t.sum);
    return SUBSAE_OK;
}

const char *subsae_format_name(int format)
{
    switch (format) {
    case SUBSAE_FORMAT_MEMORY: return "memory";
    case SUBSAE_FORMAT_NPY: return "npy";
    case SUBSAE_FORMAT_SAFETENSORS: return "safetensors";
    default: return "unknown";
    }
}

int64_t subsae_buffer_source_count(const subsae_buffer *buf)
{
    return buf ? buf->n_sources : -1;
}

int subsae_buffer_source_info(const subsae_buffer *buf, int64_t i, const char **path,
                              int *format, int *dtype, int *ndim, int64_t *shape, int max_dims)
{
    static const char *fn = "subsae_buffer_source_info";
    SUBSAE__NOT_NULL(fn, buf);
    if (i < 0 || i >= buf->n_sources)
        return subsae__fail(SUBSAE_E_RANGE, SUBSAE_REASON_INDEX_OUT_OF_RANGE,
                            "%s: source %lld of %lld", fn, (long long)i,
                            (long long)buf->n_sources);
    const struct subsae__source *src = &buf->sources[i];
    if (path)
        *path = src->path;
    if (format)
        *format = src->format;
    if (dtype)
        *dtype = src->dtype;
    if (ndim)
        *ndim = src->ndim;
    for (int d = 0; shape && d < max_dims && d < src->ndim; d++)
        shape[d] = src->shape[d];
    return SUBSAE_OK;
}
