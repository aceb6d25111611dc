/* Internals of subsae_buffer, shared by buffer.c (memory, reads), the file
 * readers (io_npy.c, io_safetensors.c) and the writers. A buffer is a list
 * of sources, each a run of rows of one dtype at a fixed byte stride in
 * memory that is either the library's own, the caller's, or a mapped file. */
#ifndef SUBSAE_BUFFER_H
#define SUBSAE_BUFFER_H

#include "internal.h"
#include "io.h"

enum { SUBSAE__MAX_DIMS = 8 };

struct subsae__source {
    int format; /* SUBSAE_FORMAT_* */
    int dtype;  /* stored element type */
    char *path; /* owned; NULL for memory */
    int ndim;   /* shape as stored */
    int64_t shape[SUBSAE__MAX_DIMS];
    int64_t rows;              /* rows this source contributes */
    const unsigned char *data; /* first element of row 0 */
    int64_t row_stride_bytes;
    void *owned; /* heap block to free, or NULL */
    void *map;   /* mapping to munmap, or NULL */
    size_t map_size;
    const void *file_base; /* start of the mapped file `path` (views too), or NULL */
};

struct subsae_buffer {
    int64_t dim;
    int64_t n_sources;
    struct subsae__source *sources;
    int64_t *first_row; /* first stored row of each source, n_sources + 1 */
    bool growable;      /* one owned float32 source, appendable */
    int64_t capacity_rows;
    bool skip_nonfinite;
    int64_t *skipped; /* sorted stored-row indices left out */
    int64_t n_skipped;
};

/* An empty buffer of width dim with room for n_sources sources. */
int subsae__buffer_new(int64_t dim, int64_t n_sources, subsae_buffer **out);

/* Recompute first_row after the sources' rows were set. */
void subsae__buffer_index(subsae_buffer *buf);

/* Release what one source holds (mapping, copy, path). */
void subsae__source_release(struct subsae__source *src);

/* Stored row of a logical row (after skipping non-finite rows). */
int64_t subsae__buffer_stored_row(const subsae_buffer *buf, int64_t row);

/* Number of stored rows (before skipping). */
int64_t subsae__buffer_stored_rows(const subsae_buffer *buf);

/* Widen stored row `stored` into out[0..dim). Returns the column of the
 * first non-finite value, or dim if the row is finite. */
int64_t subsae__buffer_load_row(const subsae_buffer *buf, int64_t stored, float *out);

/* Index of the source (file or memory block) that holds stored row
 * `stored` (binary search over first_row). */
int64_t subsae__buffer_source_of(const subsae_buffer *buf, int64_t stored);

/* ---- files (buffer_io.c over the containers of io_npy.c, io_safetensors.c) */

/* Fill `src` (format, dtype, ndim, shape, rows, data, row stride) from the
 * mapped contents of a .npy file / a safetensors tensor (NULL: the only
 * one). The data points into `map`, nothing is copied; the caller keeps
 * ownership of the mapping and of src->path. Errors name `path`. */
int subsae__npy_source(const char *path, const void *map, size_t size,
                       struct subsae__source *src);
int subsae__safetensors_source(const char *path, const void *map, size_t size,
                               const char *tensor, struct subsae__source *src);

/* The magic that starts every .npy file, "\x93NUMPY". */
extern const char subsae__npy_magic[6];

/* Start writing a C-ordered rows x dim .npy array of `dtype` (F32, F16,
 * F64; errors name `fn` and `path`), whose data the caller streams:
 * crash-safe open of `path` and the version 1.0 header, padded so that the
 * data starts at a multiple of 64 bytes. On success the caller writes the
 * rows and commits or aborts *out; on failure nothing is left open. */
int subsae__npy_begin(const char *fn, const char *path, int dtype, int64_t rows, int64_t dim,
                      subsae__atomic_file **out);

/* SUBSAE_E_NONFINITE for logical row `row` (stored row `stored`) whose
 * column `column` holds `value`, naming its file and its row there. */
int subsae__buffer_nonfinite_error(const subsae_buffer *buf, int64_t row, int64_t stored,
                                   int64_t column, float value);

/* ---- reading file rows without mapping them (buffer_reader.c) -------
 * Rows read through a file mapping stay mapped, and the kernel maps the
 * neighbours of every faulting page too (fault-around): a random batch
 * of a file maps nearly all of it, and those pages count in the process'
 * resident set. A reader reads the rows of mapped files with pread instead
 * (the page cache serves them; nothing is mapped) and other rows from
 * memory, with the checks and messages of subsae_buffer_gather. */
typedef struct subsae__row_reader subsae__row_reader;

/* A reader over `buf` (which must outlive it). A file that cannot be
 * reopened, or whose content at the row's offset differs from the
 * mapping, is read through the mapping. */
int subsae__row_reader_open(const subsae_buffer *buf, subsae__row_reader **out);
void subsae__row_reader_close(subsae__row_reader *r);
const subsae_buffer *subsae__row_reader_buffer(const subsae__row_reader *r);

/* As subsae_buffer_gather / subsae_buffer_read (rows NULL: rows first ..
 * first + n_rows - 1). Not for concurrent use of one reader. */
int subsae__row_reader_gather(subsae__row_reader *r, const int64_t *rows, int64_t first,
                              int64_t n_rows, float *out, int64_t out_stride);

/* Stored row `stored` (non-finite rows included) as float32 into dst;
 * *finite gets the number of values before the first non-finite one (dim
 * when all are finite). Errors: SUBSAE_E_IO. */
int subsae__row_reader_load_stored(subsae__row_reader *r, int64_t stored, float *dst,
                                   int64_t *finite);

/* A batch iterator over `rows` row numbers (batches.c). `buf` may be NULL:
 * then next_indices, tell and seek work and next fails. The workers of a
 * data-parallel fit draw the permutation of the global rows with it. */
int subsae__batches_create_rows(const subsae_buffer *buf, int64_t rows, int64_t batch_size,
                                uint64_t seed, int flags, subsae_batches **out);

#endif
