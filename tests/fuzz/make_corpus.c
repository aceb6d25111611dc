/* Writes the seed corpora of the fuzz harnesses: small valid files made by
 * the library itself, plus a few hand-made and malformed ones.
 *
 *     make fuzz-corpus      (runs build/bin/fuzz_make_corpus tests/fuzz/corpus)
 *
 * The output is checked in; rerun this only to change the seeds. */
#include "internal.h"
#include "io.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *root;

static void die(const char *what)
{
    fprintf(stderr, "make_corpus: %s: %s\n", what, subsae_last_error());
    exit(1);
}

static void ok(int rc, const char *what)
{
    if (rc != SUBSAE_OK)
        die(what);
}

static const char *path_of(const char *name, const char *file)
{
    static char path[2100];
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/%s", root, name);
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        die(dir);
    snprintf(path, sizeof path, "%s/%s", dir, file);
    return path;
}

static void write_bytes(const char *path, const void *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0)
        die(path);
}

/* A .npy file with a header dict of our choosing (version 1 or 2). */
static void write_npy_raw(const char *path, int version, const char *dict, const void *data,
                          size_t data_bytes)
{
    unsigned char out[4096];
    size_t start = version == 1 ? 10 : 12, n = strlen(dict);
    size_t total = (start + n + 1 + 15) / 16 * 16;
    memcpy(out, "\x93NUMPY", 6);
    out[6] = (unsigned char)version;
    out[7] = 0;
    size_t header = total - start;
    for (size_t i = 0; i < start - 8; i++)
        out[8 + i] = (unsigned char)(header >> (8 * i));
    memcpy(out + start, dict, n);
    memset(out + start + n, ' ', total - start - n);
    out[total - 1] = '\n';
    memcpy(out + total, data, data_bytes);
    write_bytes(path, out, total + data_bytes);
}

/* A safetensors file with a header of our choosing. */
static void write_st_raw(const char *path, const char *json, const void *data, size_t data_bytes)
{
    unsigned char out[4096];
    size_t n = strlen(json);
    for (int i = 0; i < 8; i++)
        out[i] = (unsigned char)((uint64_t)n >> (8 * i));
    memcpy(out + 8, json, n);
    memcpy(out + 8 + n, data, data_bytes);
    write_bytes(path, out, 8 + n + data_bytes);
}

static subsae_buffer *sample(int64_t rows, int64_t dim, int nan_row)
{
    float x[64];
    for (int64_t i = 0; i < rows * dim; i++)
        x[i] = (float)((i * 37 % 11) - 5) * 0.25f;
    if (rows * dim > 3) {
        x[1] = -0.0f;
        x[2] = 1e-40f; /* subnormal */
        x[3] = 60000.0f;
    }
    if (nan_row >= 0)
        x[nan_row * dim] = NAN;
    subsae_buffer *buf;
    ok(subsae_buffer_create(dim, &buf), "create");
    if (nan_row >= 0)
        ok(subsae_buffer_skip_nonfinite(buf, NULL), "skip");
    ok(subsae_buffer_append(buf, x, SUBSAE_DTYPE_F32, rows, dim), "append");
    return buf;
}

static void npy_seeds(void)
{
    subsae_buffer *buf = sample(3, 4, -1);
    ok(subsae_buffer_save_npy(buf, path_of("npy", "f32-3x4.npy"), SUBSAE_DTYPE_F32), "npy");
    ok(subsae_buffer_save_npy(buf, path_of("npy", "f16-3x4.npy"), SUBSAE_DTYPE_F16), "npy");
    ok(subsae_buffer_save_npy(buf, path_of("npy", "f64-3x4.npy"), SUBSAE_DTYPE_F64), "npy");
    subsae_buffer_free(buf);
    buf = sample(0, 5, -1);
    ok(subsae_buffer_save_npy(buf, path_of("npy", "f32-0x5.npy"), SUBSAE_DTYPE_F32), "npy");
    subsae_buffer_free(buf);

    float v[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    write_npy_raw(path_of("npy", "f32-2x2x3.npy"), 1,
                  "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2, 3), }", v, sizeof v);
    write_npy_raw(path_of("npy", "v2-f32-3x2.npy"), 2,
                  "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }", v, 24);
    write_npy_raw(path_of("npy", "fortran-1x4.npy"), 1,
                  "{'descr': '<f4', 'fortran_order': True, 'shape': (1, 4), }", v, 16);
    v[4] = NAN;
    v[9] = INFINITY;
    write_npy_raw(path_of("npy", "nonfinite-4x3.npy"), 1,
                  "{'shape': (4L, 3L), 'fortran_order': False, 'descr': '<f4'}", v, sizeof v);
    /* Malformed: each is rejected with its own reason. */
    write_npy_raw(path_of("npy", "bad-big-endian.npy"), 1,
                  "{'descr': '>f4', 'fortran_order': False, 'shape': (3, 2), }", v, 24);
    write_npy_raw(path_of("npy", "bad-size.npy"), 1,
                  "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 3), }", v, 24);
    write_npy_raw(path_of("npy", "bad-dict.npy"), 1,
                  "{'descr': '<f4', 'fortran_order': Maybe, 'shape': (3, 2), }", v, 24);
    write_npy_raw(path_of("npy", "bad-overflow.npy"), 1,
                  "{'descr': '<f4', 'fortran_order': False, "
                  "'shape': (4611686018427387904, 4611686018427387904, 0, 2), }", v, 0);
    write_bytes(path_of("npy", "bad-truncated.npy"), "\x93NUMPY\x01\x00\x76", 9);
}

static void safetensors_seeds(void)
{
    subsae_buffer *buf = sample(3, 4, -1);
    const int dtypes[] = {SUBSAE_DTYPE_F32, SUBSAE_DTYPE_F16, SUBSAE_DTYPE_BF16, SUBSAE_DTYPE_F64};
    for (int i = 0; i < 4; i++) {
        char file[64];
        snprintf(file, sizeof file, "%s-3x4.safetensors", subsae_dtype_name(dtypes[i]));
        ok(subsae_buffer_save_safetensors(buf, path_of("safetensors", file), "acts", dtypes[i]),
           "safetensors");
    }
    subsae_buffer_free(buf);

    /* Several tensors of several dtypes and metadata, as SAE weights and
     * checkpoints are written. */
    float w[6] = {1, -2, 3, -4, 5, -6};
    double b[2] = {0.5, -0.25};
    int32_t idx[3] = {7, -1, 2};
    uint16_t half[4] = {0x3c00, 0xbc00, 0x7c00, 0x0001};
    struct subsae__tensor_view views[4] = {
        {.name = "W_enc", .dtype = SUBSAE_DTYPE_F32, .ndim = 2, .shape = {2, 3}, .data = w,
         .bytes = sizeof w},
        {.name = "b_dec", .dtype = SUBSAE_DTYPE_F64, .ndim = 1, .shape = {2}, .data = b,
         .bytes = sizeof b},
        {.name = "index", .dtype = SUBSAE_DTYPE_I32, .ndim = 1, .shape = {3}, .data = idx,
         .bytes = sizeof idx},
        {.name = "half", .dtype = SUBSAE_DTYPE_F16, .ndim = 2, .shape = {2, 2}, .data = half,
         .bytes = sizeof half},
    };
    const char *keys[2] = {"format", "step"}, *values[2] = {"pt", "12"};
    ok(subsae__safetensors_write(path_of("safetensors", "multi.safetensors"), views, 4, keys,
                                 values, 2),
       "multi");
    ok(subsae__safetensors_write(path_of("safetensors", "empty.safetensors"), views, 0, NULL,
                                 NULL, 0),
       "empty");

    float v[8] = {1, 2, 3, 4, 5, 6, 7, NAN};
    write_st_raw(path_of("safetensors", "nonfinite-4x2.safetensors"),
                 "{\"x\":{\"dtype\":\"F32\",\"shape\":[4,2],\"data_offsets\":[0,32]}}", v, 32);
    write_st_raw(path_of("safetensors", "f32-0x7.safetensors"),
                 "{\"x\":{\"dtype\":\"F32\",\"shape\":[0,7],\"data_offsets\":[0,0]}}", v, 0);
    write_st_raw(path_of("safetensors", "f32-2x1x2.safetensors"),
                 "{\"x\":{\"dtype\":\"F32\",\"shape\":[2,1,2],\"data_offsets\":[0,16]},"
                 "\"__metadata__\":{\"a\":\"b\"}}", v, 16);
    /* Malformed. */
    write_st_raw(path_of("safetensors", "bad-overlap.safetensors"),
                 "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                 "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", v, 12);
    write_st_raw(path_of("safetensors", "bad-gap.safetensors"),
                 "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", v, 8);
    write_st_raw(path_of("safetensors", "bad-json.safetensors"),
                 "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]", v, 4);
    write_st_raw(path_of("safetensors", "bad-dtype.safetensors"),
                 "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", v, 4);
    write_st_raw(path_of("safetensors", "bad-overflow.safetensors"),
                 "{\"a\":{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296],"
                 "\"data_offsets\":[0,0]}}", v, 0);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
        return 2;
    }
    root = argv[1];
    if (mkdir(root, 0777) != 0 && errno != EEXIST)
        die(root);
    npy_seeds();
    safetensors_seeds();
    return 0;
}
