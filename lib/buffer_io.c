/* Buffers over files: subsae_buffer_open / subsae_buffer_open_shards (the
 * format is told by content, not by name) and subsae_buffer_save_npy /
 * subsae_buffer_save_safetensors, which stream the rows after the header
 * that io_npy.c / io_safetensors.c write for their container. */
#include "buffer.h"
#include "dtype.h"

#include <math.h>
#include <string.h>
#include <sys/mman.h>

/* Map `path` and describe it as a source: .npy when it starts with the npy
 * magic, safetensors when its header (after the 8-byte length) starts with
 * '{'. On failure `src` is left empty. */
static int open_source(const char *path, const char *tensor, struct subsae__source *src)
{
    void *map = NULL;
    size_t size = 0;
    int rc = subsae__map_file(path, &map, &size);
    if (rc)
        return rc;
    const unsigned char *bytes = map;
    size_t magic = sizeof subsae__npy_magic;
    bool npy_prefix = size > 0 &&
                      memcmp(bytes, subsae__npy_magic, size < magic ? size : magic) == 0;
    if (size == 0)
        rc = subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_MAGIC,
                          "%s: the file is empty (neither .npy nor safetensors)", path);
    else if (npy_prefix && size < magic)
        rc = subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_TRUNCATED_HEADER,
                          "%s: .npy header truncated: the file has only %zu bytes", path, size);
    else if (!npy_prefix && (size < 8 || (size > 8 && bytes[8] != '{')))
        rc = subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_MAGIC,
                          "%s: neither a .npy file (no \\x93NUMPY magic) nor a safetensors "
                          "file (no JSON header after the 8-byte length)",
                          path);
    else {
        src->path = subsae__strdup(path);
        if (!src->path)
            rc = subsae__fail_nomem("path", strlen(path) + 1);
        else if (npy_prefix)
            rc = subsae__npy_source(path, map, size, src);
        else
            rc = subsae__safetensors_source(path, map, size, tensor, src);
    }
    if (rc) {
        if (map)
            munmap(map, size);
        subsae__free(src->path);
        memset(src, 0, sizeof *src);
        return rc;
    }
    src->map = map;
    src->map_size = size;
    src->file_base = map;
    return SUBSAE_OK;
}

static int64_t source_dim(const struct subsae__source *src)
{
    return src->shape[src->ndim - 1];
}

int subsae_buffer_open_shards(const char *const *paths, int64_t n_paths, const char *tensor,
                              subsae_buffer **out)
{
    static const char *fn = "subsae_buffer_open_shards";
    SUBSAE__NOT_NULL(fn, paths);
    SUBSAE__NOT_NULL(fn, out);
    if (n_paths < 1)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                            "%s: n_paths %lld (need at least one file)", fn,
                            (long long)n_paths);
    for (int64_t i = 0; i < n_paths; i++)
        if (!paths[i])
            return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_NULL_ARGUMENT,
                                "%s: paths[%lld] is NULL", fn, (long long)i);
    subsae_buffer *buf;
    int rc = subsae__buffer_new(0, n_paths, &buf);
    if (rc)
        return rc;
    for (int64_t i = 0; !rc && i < n_paths; i++) {
        rc = open_source(paths[i], tensor, &buf->sources[i]);
        if (!rc && i > 0 && source_dim(&buf->sources[i]) != source_dim(&buf->sources[0]))
            rc = subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_DIM_MISMATCH,
                              "%s has dim %lld but %s has dim %lld: shards must share the "
                              "last dimension",
                              paths[i], (long long)source_dim(&buf->sources[i]), paths[0],
                              (long long)source_dim(&buf->sources[0]));
    }
    if (rc) {
        subsae_buffer_free(buf);
        return rc;
    }
    buf->dim = source_dim(&buf->sources[0]);
    subsae__buffer_index(buf);
    *out = buf;
    return SUBSAE_OK;
}

int subsae_buffer_open(const char *path, const char *tensor, subsae_buffer **out)
{
    SUBSAE__NOT_NULL("subsae_buffer_open", path);
    SUBSAE__NOT_NULL("subsae_buffer_open", out);
    return subsae_buffer_open_shards(&path, 1, tensor, out);
}

/* ---- writing rows --------------------------------------------------- */

/* Write every logical row of `buf` as `dtype` (F32, F16, BF16, F64) to
 * `f`, through a fixed-size block. Fails (E_NONFINITE) on non-finite rows
 * and (E_RANGE) on finite values that overflow the narrower dtype; errors
 * name `path`. Does not abort `f`. */
static int write_rows(const subsae_buffer *buf, int dtype, subsae__atomic_file *f,
                      const char *path)
{
    int64_t rows = subsae_buffer_rows(buf);
    if (rows == 0)
        return SUBSAE_OK; /* no block: zero rows may come with a huge width */
    /* About 256 KiB of float32 per block, at least one row. */
    size_t dim = (size_t)buf->dim, element = subsae__dtype_size(dtype);
    int64_t block_rows = (int64_t)((size_t)65536 / dim);
    if (block_rows < 1)
        block_rows = 1;
    size_t floats = (size_t)block_rows * dim;
    float *block = subsae__malloc(floats * sizeof *block);
    unsigned char *narrow = dtype == SUBSAE_DTYPE_F32 ? NULL : subsae__malloc(floats * element);
    if (!block || (dtype != SUBSAE_DTYPE_F32 && !narrow)) {
        subsae__free(block);
        subsae__free(narrow);
        return subsae__fail_nomem("row block", floats * (sizeof *block + element));
    }
    int rc = SUBSAE_OK;
    for (int64_t first = 0; !rc && first < rows; first += block_rows) {
        int64_t n = rows - first < block_rows ? rows - first : block_rows;
        size_t count = (size_t)n * dim;
        rc = subsae_buffer_read(buf, first, n, block, buf->dim);
        if (rc) {
            subsae__error_prefix(path);
            break;
        }
        if (dtype == SUBSAE_DTYPE_F32) {
            rc = subsae__atomic_write(f, block, count * sizeof *block);
            continue;
        }
        subsae__narrow(block, count, dtype, narrow);
        if (dtype != SUBSAE_DTYPE_F64) {
            /* Finite values beyond the narrow type's range would come back
             * as infinities: refuse rather than write them. */
            float widened[256];
            for (size_t done = 0; !rc && done < count; done += 256) {
                size_t piece = count - done < 256 ? count - done : 256;
                size_t bad = subsae__widen(narrow + done * element, dtype, piece, widened);
                if (bad < piece) {
                    size_t at = done + bad;
                    rc = subsae__fail(SUBSAE_E_RANGE, SUBSAE_REASON_BAD_VALUE,
                                      "%s: row %lld, column %zu: %g overflows %s", path,
                                      (long long)(first + (int64_t)(at / dim)), at % dim,
                                      (double)block[at], subsae_dtype_name(dtype));
                }
            }
        }
        if (!rc)
            rc = subsae__atomic_write(f, narrow, count * element);
    }
    subsae__free(block);
    subsae__free(narrow);
    return rc;
}

/* The rows after a written header, then commit; on failure `f` is aborted. */
static int finish_save(const subsae_buffer *buf, int dtype, subsae__atomic_file *f,
                       const char *path)
{
    int rc = write_rows(buf, dtype, f, path);
    if (rc) {
        subsae__atomic_abort(f);
        return rc;
    }
    return subsae__atomic_commit(f);
}

int subsae_buffer_save_npy(const subsae_buffer *buf, const char *path, int dtype)
{
    static const char *fn = "subsae_buffer_save_npy";
    SUBSAE__NOT_NULL(fn, buf);
    SUBSAE__NOT_NULL(fn, path);
    subsae__atomic_file *f;
    int rc = subsae__npy_begin(fn, path, dtype, subsae_buffer_rows(buf), buf->dim, &f);
    return rc ? rc : finish_save(buf, dtype, f, path);
}

int subsae_buffer_save_safetensors(const subsae_buffer *buf, const char *path,
                                   const char *tensor, int dtype)
{
    static const char *fn = "subsae_buffer_save_safetensors";
    SUBSAE__NOT_NULL(fn, buf);
    SUBSAE__NOT_NULL(fn, path);
    SUBSAE__NOT_NULL(fn, tensor);
    if (dtype != SUBSAE_DTYPE_F32 && dtype != SUBSAE_DTYPE_F16 && dtype != SUBSAE_DTYPE_BF16 &&
        dtype != SUBSAE_DTYPE_F64)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_UNSUPPORTED_DTYPE,
                            "%s: %s: dtype %d cannot be saved (f32, f16, bf16 or f64)", fn,
                            path, dtype);
    if (!strcmp(tensor, SUBSAE__SAFETENSORS_METADATA_KEY))
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                            "%s: %s: tensor name '%s' is reserved", fn, path, tensor);
    struct subsae__tensor_view view = {.name = tensor, .dtype = dtype, .ndim = 2};
    view.shape[0] = subsae_buffer_rows(buf);
    view.shape[1] = buf->dim;
    size_t bytes;
    if (!subsae__mul_size((size_t)view.shape[0], (size_t)view.shape[1], &bytes) ||
        !subsae__mul_size(bytes, subsae__dtype_size(dtype), &view.bytes))
        return subsae__fail(SUBSAE_E_RANGE, SUBSAE_REASON_SHAPE_OVERFLOW,
                            "%s: %s: size overflows", fn, path);
    subsae__atomic_file *f;
    int rc = subsae__safetensors_begin(path, &view, &f);
    return rc ? rc : finish_save(buf, dtype, f, path);
}
