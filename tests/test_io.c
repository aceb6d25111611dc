/* Files: crash-safe writes, mappings, .npy and safetensors readers and
 * writers, shards, the malformed-input suite, the shared stories260K data
 * against a checked-in fixture, and `subsae inspect` against numpy. */
#include "buffer.h"
#include "dtype.h"
#include "harness.h"
#include "io.h"

#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "fixtures/l2_attn_out_rows.h"

/* ---- helpers -------------------------------------------------------- */

static const char *tmp(const char *name)
{
    /* Rotating slots: a test holds far fewer paths at once than this. */
    static char slots[128][512];
    static int next;
    char *slot = slots[next++ % 128];
    return harness_tmp_path(name, slot, sizeof slots[0]);
}

static void write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    ck_assert_msg(f != NULL, "cannot create %s", path);
    ck_assert_uint_eq(fwrite(data, 1, n, f), n);
    ck_assert_int_eq(fclose(f), 0);
}

static unsigned char *read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    ck_assert_int_eq(fseek(f, 0, SEEK_END), 0);
    long size = ftell(f);
    ck_assert_int_ge(size, 0);
    rewind(f);
    unsigned char *data = malloc((size_t)size + 1);
    ck_assert_ptr_nonnull(data);
    ck_assert_uint_eq(fread(data, 1, (size_t)size, f), (size_t)size);
    fclose(f);
    *n = (size_t)size;
    return data;
}

static bool file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* Entries of the test's temporary directory whose name holds `part`. */
static int count_entries(const char *part)
{
    DIR *dir = opendir(harness_tmpdir());
    ck_assert_ptr_nonnull(dir);
    int count = 0;
    const struct dirent *e;
    while ((e = readdir(dir)) != NULL)
        count += strstr(e->d_name, part) != NULL;
    closedir(dir);
    return count;
}

/* A .npy file: magic, version major.0, `dict` padded to 64 bytes with a
 * final newline, then `n` bytes of `data` (zeros when NULL). */
static size_t build_npy(unsigned char **out, int major, const char *dict, const void *data,
                        size_t n)
{
    size_t start = major == 1 ? 10 : 12, len = strlen(dict);
    size_t total = (start + len + 1 + 63) / 64 * 64, header = total - start;
    unsigned char *b = calloc(1, total + n + 1);
    ck_assert_ptr_nonnull(b);
    memcpy(b, "\x93NUMPY", 6);
    b[6] = (unsigned char)major;
    b[7] = 0;
    for (size_t i = 0; i < (major == 1 ? 2u : 4u); i++)
        b[8 + i] = (unsigned char)(header >> (8 * i));
    memcpy(b + start, dict, len);
    memset(b + start + len, ' ', header - len - 1);
    b[total - 1] = '\n';
    if (data)
        memcpy(b + total, data, n);
    *out = b;
    return total + n;
}

static void make_npy(const char *path, int major, const char *dict, const void *data, size_t n)
{
    unsigned char *b;
    size_t size = build_npy(&b, major, dict, data, n);
    write_file(path, b, size);
    free(b);
}

/* A safetensors file: 8-byte length (`declared`, or the JSON's length when
 * 0), the JSON, then `n` bytes of data (zeros when NULL). */
static void make_st(const char *path, uint64_t declared, const char *json, const void *data,
                    size_t n)
{
    size_t len = strlen(json);
    uint64_t header = declared ? declared : len;
    unsigned char *b = calloc(1, 8 + len + n + 1);
    ck_assert_ptr_nonnull(b);
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(header >> (8 * i));
    memcpy(b + 8, json, len);
    if (data)
        memcpy(b + 8 + len, data, n);
    write_file(path, b, 8 + len + n);
    free(b);
}

#define ck_assert_message_has(fragment)                                                  \
    ck_assert_msg(strstr(subsae_last_error(), (fragment)) != NULL,                       \
                  "message '%s' lacks '%s'", subsae_last_error(), (fragment))

/* Values for round trips: signs, -0, fractions, a subnormal of f16. */
static float sample_value(int i, int j)
{
    if (i == 0 && j == 0)
        return -0.0f;
    if (i == 1 && j == 1)
        return 1e-6f;
    if (i == 2 && j == 2)
        return 60000.0f;
    return (float)(i - 18) * 0.25f + (float)j / 3.0f;
}

static float through(int dtype, float v)
{
    switch (dtype) {
    case SUBSAE_DTYPE_F16: return subsae__f16_to_f32(subsae__f32_to_f16(v));
    case SUBSAE_DTYPE_BF16: return subsae__bf16_to_f32(subsae__f32_to_bf16(v));
    default: return v;
    }
}

static uint32_t bits_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

enum { RT_ROWS = 37, RT_DIM = 5 };

static subsae_buffer *sample_buffer(void)
{
    static float data[RT_ROWS][RT_DIM];
    for (int i = 0; i < RT_ROWS; i++)
        for (int j = 0; j < RT_DIM; j++)
            data[i][j] = sample_value(i, j);
    subsae_buffer *buf = NULL;
    ck_assert_ok(subsae_buffer_wrap(data, SUBSAE_DTYPE_F32, RT_ROWS, RT_DIM, RT_DIM,
                                    SUBSAE_COPY, &buf));
    return buf;
}

static void check_sample(const subsae_buffer *buf, int dtype)
{
    ck_assert_int_eq(subsae_buffer_rows(buf), RT_ROWS);
    ck_assert_int_eq(subsae_buffer_dim(buf), RT_DIM);
    float out[RT_ROWS * RT_DIM];
    ck_assert_ok(subsae_buffer_read(buf, 0, RT_ROWS, out, RT_DIM));
    for (int i = 0; i < RT_ROWS; i++)
        for (int j = 0; j < RT_DIM; j++) {
            float want = through(dtype, sample_value(i, j)), got = out[i * RT_DIM + j];
            ck_assert_msg(bits_of(got) == bits_of(want), "%s [%d][%d]: %a, want %a",
                          subsae_dtype_name(dtype), i, j, (double)got, (double)want);
        }
}

static bool python_with_numpy(void)
{
    const char *py = getenv("SUBSAE_PYTHON");
    if (!py || !*py)
        return false;
    char command[1024];
    snprintf(command, sizeof command, "'%s' -c 'import numpy' >/dev/null 2>&1", py);
    return harness_run(command) == 0;
}

/* Whether `p` lies in a read-only mapping of a file whose name holds
 * `name` (from /proc/self/maps). */
static bool maps_file(const void *p, const char *name)
{
    FILE *f = fopen("/proc/self/maps", "r");
    ck_assert_ptr_nonnull(f);
    char line[4096];
    bool found = false;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        char perms[8];
        if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) != 3)
            continue;
        if ((uintptr_t)p >= lo && (uintptr_t)p < hi) {
            found = strstr(line, name) != NULL && perms[0] == 'r' && perms[1] == '-';
            break;
        }
    }
    fclose(f);
    return found;
}

/* ---- file plumbing -------------------------------------------------- */

START_TEST(atomic_write_commit_and_abort)
{
    const char *path = tmp("atomic.bin");
    subsae__atomic_file *f = NULL;
    ck_assert_ok(subsae__atomic_open(path, &f));
    ck_assert(!file_exists(path)); /* nothing under the name until commit */
    ck_assert_ok(subsae__atomic_write(f, "hello", 5));
    ck_assert_ok(subsae__atomic_commit(f));
    size_t n;
    unsigned char *data = read_file(path, &n);
    ck_assert_uint_eq(n, 5);
    ck_assert(memcmp(data, "hello", 5) == 0);
    free(data);

    /* An aborted rewrite leaves the old content and no temporary file. */
    ck_assert_ok(subsae__atomic_open(path, &f));
    ck_assert_ok(subsae__atomic_write(f, "XXXXXXXX", 8));
    ck_assert_int_eq(count_entries(".tmp-"), 1);
    subsae__atomic_abort(f);
    data = read_file(path, &n);
    ck_assert_uint_eq(n, 5);
    ck_assert(memcmp(data, "hello", 5) == 0);
    free(data);
    ck_assert_int_eq(count_entries(".tmp-"), 0);

    /* A big committed rewrite replaces it whole. */
    size_t big = 3u << 20;
    unsigned char *block = malloc(big);
    ck_assert_ptr_nonnull(block);
    for (size_t i = 0; i < big; i++)
        block[i] = (unsigned char)(i * 7);
    ck_assert_ok(subsae__atomic_open(path, &f));
    ck_assert_ok(subsae__atomic_write(f, block, big));
    ck_assert_ok(subsae__atomic_write(f, NULL, 0));
    ck_assert_ok(subsae__atomic_commit(f));
    data = read_file(path, &n);
    ck_assert_uint_eq(n, big);
    ck_assert(memcmp(data, block, big) == 0);
    free(data);
    free(block);
    ck_assert_int_eq(count_entries(".tmp-"), 0);
    ck_assert_int_eq(count_entries("atomic.bin"), 1);

    /* Errors name the file. */
    const char *missing = tmp("no-such-dir/out.bin");
    f = (subsae__atomic_file *)&f;
    ck_assert_status(subsae__atomic_open(missing, &f), SUBSAE_E_IO);
    ck_assert_int_eq(subsae_last_error_reason(), SUBSAE_REASON_SYSTEM);
    ck_assert_message_has("no-such-dir/out.bin");
    ck_assert_status(subsae__atomic_open(NULL, &f), SUBSAE_E_INVALID);
    ck_assert_status(subsae__atomic_open("", &f), SUBSAE_E_INVALID);
    ck_assert_status(subsae__atomic_commit(NULL), SUBSAE_E_INVALID);
    ck_assert_status(subsae__atomic_write(NULL, "x", 1), SUBSAE_E_INVALID);
    subsae__atomic_abort(NULL);
}
END_TEST

START_TEST(make_dir_and_map_file)
{
    const char *dir = tmp("made");
    ck_assert_ok(subsae__make_dir(dir));
    ck_assert_ok(subsae__make_dir(dir)); /* exists: fine */
    struct stat st;
    ck_assert_int_eq(stat(dir, &st), 0);
    ck_assert(S_ISDIR(st.st_mode));
    ck_assert_ok(subsae__make_dir(tmp("made2/")));
    ck_assert_status(subsae__make_dir(tmp("absent/child")), SUBSAE_E_IO);
    ck_assert_message_has("absent/child");
    const char *file = tmp("plain.txt");
    write_file(file, "abc", 3);
    ck_assert_status(subsae__make_dir(file), SUBSAE_E_IO);
    ck_assert_message_has("plain.txt");
    ck_assert_message_has("not a directory");

    void *map = NULL;
    size_t size = 0;
    ck_assert_ok(subsae__map_file(file, &map, &size));
    ck_assert_uint_eq(size, 3);
    ck_assert(memcmp(map, "abc", 3) == 0);
    munmap(map, size);
    const char *empty = tmp("empty.bin");
    write_file(empty, "", 0);
    map = (void *)&map;
    ck_assert_ok(subsae__map_file(empty, &map, &size));
    ck_assert_ptr_null(map);
    ck_assert_uint_eq(size, 0);
    ck_assert_status(subsae__map_file(tmp("missing.npy"), &map, &size), SUBSAE_E_IO);
    ck_assert_message_has("missing.npy");
    ck_assert_message_has("No such file");
    ck_assert_status(subsae__map_file(dir, &map, &size), SUBSAE_E_IO);
    ck_assert_message_has("directory");
}
END_TEST

/* ---- .npy ----------------------------------------------------------- */

START_TEST(npy_round_trip_each_dtype)
{
    subsae_buffer *buf = sample_buffer();
    const int dtypes[3] = {SUBSAE_DTYPE_F32, SUBSAE_DTYPE_F16, SUBSAE_DTYPE_F64};
    const char *names[3] = {"rt32.npy", "rt16.npy", "rt64.npy"};
    for (int k = 0; k < 3; k++) {
        const char *path = tmp(names[k]);
        ck_assert_ok(subsae_buffer_save_npy(buf, path, dtypes[k]));
        /* numpy's layout: header padded so the data starts at 64 bytes. */
        size_t n;
        unsigned char *bytes = read_file(path, &n);
        ck_assert_uint_eq(n, 128 + RT_ROWS * RT_DIM * subsae__dtype_size(dtypes[k]));
        ck_assert(memcmp(bytes, "\x93NUMPY\x01\x00", 8) == 0);
        ck_assert_uint_eq(bytes[8] | bytes[9] << 8, 118);
        ck_assert_uint_eq(bytes[127], '\n');
        free(bytes);
        subsae_buffer *back = NULL;
        ck_assert_ok(subsae_buffer_open(path, NULL, &back));
        int format, dtype, ndim;
        int64_t shape[2];
        const char *source = NULL;
        ck_assert_ok(subsae_buffer_source_info(back, 0, &source, &format, &dtype, &ndim, shape, 2));
        ck_assert_str_eq(source, path);
        ck_assert_int_eq(format, SUBSAE_FORMAT_NPY);
        ck_assert_int_eq(dtype, dtypes[k]);
        ck_assert_int_eq(ndim, 2);
        ck_assert_int_eq(shape[0], RT_ROWS);
        ck_assert_int_eq(shape[1], RT_DIM);
        check_sample(back, dtypes[k]);
        subsae_buffer_free(back);
    }
    /* .npy has no bfloat16. */
    const char *path = tmp("rtbf.npy");
    ck_assert_status(subsae_buffer_save_npy(buf, path, SUBSAE_DTYPE_BF16), SUBSAE_E_UNSUPPORTED);
    ck_assert_int_eq(subsae_last_error_reason(), SUBSAE_REASON_UNSUPPORTED_DTYPE);
    ck_assert_status(subsae_buffer_save_npy(buf, path, SUBSAE_DTYPE_I32), SUBSAE_E_INVALID);
    ck_assert_status(subsae_buffer_save_npy(buf, NULL, SUBSAE_DTYPE_F32), SUBSAE_E_INVALID);
    ck_assert_status(subsae_buffer_save_npy(NULL, path, SUBSAE_DTYPE_F32), SUBSAE_E_INVALID);
    ck_assert(!file_exists(path));
    subsae_buffer_free(buf);
}
END_TEST

START_TEST(npy_versions_and_nd_shapes)
{
    /* Version 2.0 (4-byte header length), 3-D float32: 6 rows x 4. */
    float f[24];
    for (int i = 0; i < 24; i++)
        f[i] = (float)i - 0.5f;
    const char *v2 = tmp("v2.npy");
    make_npy(v2, 2, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 4), }", f,
             sizeof f);
    subsae_buffer *buf = NULL;
    ck_assert_ok(subsae_buffer_open(v2, NULL, &buf));
    ck_assert_int_eq(subsae_buffer_rows(buf), 6);
    ck_assert_int_eq(subsae_buffer_dim(buf), 4);
    int ndim;
    int64_t shape[8];
    ck_assert_ok(subsae_buffer_source_info(buf, 0, NULL, NULL, NULL, &ndim, shape, 8));
    ck_assert_int_eq(ndim, 3);
    ck_assert_int_eq(shape[0], 2);
    ck_assert_int_eq(shape[1], 3);
    ck_assert_int_eq(shape[2], 4);
    float out[24];
    ck_assert_ok(subsae_buffer_read(buf, 0, 6, out, 4));
    ck_assert(memcmp(out, f, sizeof f) == 0);
    subsae_buffer_free(buf);

    /* Version 3.0, float16, keys in another order, double quotes,
     * Python 2 long integers, no trailing comma. */
    const uint16_t h[6] = {0x3c00, 0x4000, 0x4200, 0xbc00, 0x0001, 0x8000};
    const char *v3 = tmp("v3.npy");
    make_npy(v3, 3, "{\"shape\": (3L, 2L), \"fortran_order\": False, \"descr\": \"<f2\"}", h,
             sizeof h);
    ck_assert_ok(subsae_buffer_open(v3, NULL, &buf));
    ck_assert_int_eq(subsae_buffer_rows(buf), 3);
    ck_assert_ok(subsae_buffer_read(buf, 0, 3, out, 2));
    const float want[6] = {1, 2, 3, -1, 0x1p-24f, -0.0f};
    for (int i = 0; i < 6; i++)
        ck_assert_uint_eq(bits_of(out[i]), bits_of(want[i]));
    subsae_buffer_free(buf);

    /* float64 '<f8', 4-D with a size-1 axis; a Fortran-ordered array whose
     * bytes equal the C-ordered ones (one axis > 1) is accepted. */
    const double d[4] = {0.1, -2, 3.5, 1e-3};
    const char *v1 = tmp("v1.npy");
    make_npy(v1, 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 2, 1, 2), }", d,
             sizeof d);
    ck_assert_ok(subsae_buffer_open(v1, NULL, &buf));
    ck_assert_int_eq(subsae_buffer_rows(buf), 2);
    ck_assert_int_eq(subsae_buffer_dim(buf), 2);
    ck_assert_ok(subsae_buffer_read(buf, 0, 2, out, 2));
    for (int i = 0; i < 4; i++)
        ck_assert_uint_eq(bits_of(out[i]), bits_of((float)d[i]));
    subsae_buffer_free(buf);
    const char *fortran1 = tmp("fortran_row.npy");
    make_npy(fortran1, 1, "{'descr': '<f8', 'fortran_order': True, 'shape': (1, 4), }", d,
             sizeof d);
    ck_assert_ok(subsae_buffer_open(fortran1, NULL, &buf));
    ck_assert_int_eq(subsae_buffer_rows(buf), 1);
    ck_assert_int_eq(subsae_buffer_dim(buf), 4);
    subsae_buffer_free(buf);

    /* Zero rows are a valid, empty buffer. */
    const char *empty = tmp("zero_rows.npy");
    make_npy(empty, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 8), }", NULL, 0);
    ck_assert_ok(subsae_buffer_open(empty, NULL, &buf));
    ck_assert_int_eq(subsae_buffer_rows(buf), 0);
    ck_assert_int_eq(subsae_buffer_dim(buf), 8);
    subsae_buffer_free(buf);
}
END_TEST

/* The rows of a float32 (and a float16) .npy file stay in the file's
 * read-only mapping: nothing is copied into memory. */
START_TEST(npy_is_memory_mapped)
{
    enum { N = 4096, D = 64 };
    subsae_buffer *mem = NULL;
    ck_assert_ok(subsae_buffer_create(D, &mem));
    float row[D];
    for (int i = 0; i < N; i++) {
        for (int j = 0; j < D; j++)
            row[j] = (float)(i % 97) - (float)j;
        ck_assert_ok(subsae_buffer_append(mem, row, SUBSAE_DTYPE_F32, 1, D));
    }
    const int dtypes[2] = {SUBSAE_DTYPE_F32, SUBSAE_DTYPE_F16};
    const char *names[2] = {"mapped32.npy", "mapped16.npy"};
    for (int k = 0; k < 2; k++) {
        const char *path = tmp(names[k]);
        ck_assert_ok(subsae_buffer_save_npy(mem, path, dtypes[k]));
        subsae_buffer *buf = NULL;
        ck_assert_ok(subsae_buffer_open(path, NULL, &buf));
        const struct subsae__source *src = &buf->sources[0];
        ck_assert_ptr_null(src->owned);
        ck_assert_ptr_nonnull(src->map);
        const unsigned char *lo = src->map, *hi = lo + src->map_size;
        ck_assert(src->data == lo + 128);
        ck_assert(src->data + (size_t)N * D * subsae__dtype_size(dtypes[k]) == hi);
        ck_assert_msg(maps_file(src->data, names[k]), "row data of %s is not in its mapping",
                      names[k]);
        ck_assert_msg(maps_file(src->data + (size_t)(N - 1) * (size_t)src->row_stride_bytes,
                                names[k]),
                      "last row of %s is not in its mapping", names[k]);
        float got[D];
        ck_assert_ok(subsae_buffer_read(buf, 1234, 1, got, D));
        ck_assert(got[5] == (float)(1234 % 97) - 5.0f);
        subsae_buffer_free(buf);
        /* Freed: the mapping is gone. */
        ck_assert(!maps_file(lo, names[k]));
    }
    subsae_buffer_free(mem);
}
END_TEST

/* ---- safetensors ---------------------------------------------------- */

START_TEST(safetensors_round_trip_each_dtype)
{
    subsae_buffer *buf = sample_buffer();
    const int dtypes[4] = {SUBSAE_DTYPE_F32, SUBSAE_DTYPE_F16, SUBSAE_DTYPE_BF16,
                           SUBSAE_DTYPE_F64};
    const char *names[4] = {"rt32.safetensors", "rt16.safetensors", "rtbf.safetensors",
                            "rt64.safetensors"};
    const char *st_names[4] = {"F32", "F16", "BF16", "F64"};
    for (int k = 0; k < 4; k++) {
        const char *path = tmp(names[k]);
        ck_assert_ok(subsae_buffer_save_safetensors(buf, path, "acts", dtypes[k]));
        /* Header: length multiple of 8, padded with spaces, as the
         * reference implementation writes it. */
        size_t n;
        unsigned char *bytes = read_file(path, &n);
        uint64_t header = 0;
        for (int i = 7; i >= 0; i--)
            header = header << 8 | bytes[i];
        ck_assert_uint_eq(header % 8, 0);
        ck_assert_uint_eq(n, 8 + header + RT_ROWS * RT_DIM * subsae__dtype_size(dtypes[k]));
        char *json = strndup((const char *)bytes + 8, (size_t)header);
        json_error_t error;
        json_t *root = json_loads(json, 0, &error);
        ck_assert_msg(root != NULL, "%s: %s", json, error.text);
        ck_assert_str_eq(json_string_value(json_object_get(json_object_get(root, "acts"), "dtype")),
                         st_names[k]);
        json_decref(root);
        size_t text = strlen(json);
        while (text > 0 && json[text - 1] == ' ')
            text--;
        ck_assert_int_eq(json[text - 1], '}');
        ck_assert_uint_lt(header - text, 8);
        free(json);
        free(bytes);
        subsae_buffer *back = NULL;
        ck_assert_ok(subsae_buffer_open(path, "acts", &back));
        check_sample(back, dtypes[k]);
        int format, dtype;
        ck_assert_ok(subsae_buffer_source_info(back, 0, NULL, &format, &dtype, NULL, NULL, 0));
        ck_assert_int_eq(format, SUBSAE_FORMAT_SAFETENSORS);
        ck_assert_int_eq(dtype, dtypes[k]);
        subsae_buffer_free(back);
        ck_assert_ok(subsae_buffer_open(path, NULL, &back)); /* the only tensor */
        check_sample(back, dtypes[k]);
        subsae_buffer_free(back);
    }
    ck_assert_status(subsae_buffer_save_safetensors(buf, tmp("x.st"), NULL, SUBSAE_DTYPE_F32),
                     SUBSAE_E_INVALID);
    ck_assert_status(subsae_buffer_save_safetensors(buf, tmp("x.st"), "__metadata__",
                                                    SUBSAE_DTYPE_F32),
                     SUBSAE_E_INVALID);
    ck_assert_status(subsae_buffer_save_safetensors(buf, tmp("x.st"), "a", SUBSAE_DTYPE_I32),
                     SUBSAE_E_INVALID);
    ck_assert(!file_exists(tmp("x.st")));
    subsae_buffer_free(buf);
}
END_TEST

START_TEST(safetensors_container_many_tensors)
{
    const uint16_t h[3] = {0x3c00, 0x4000, 0x8001};
    const float f[4] = {1.5f, -2.5f, 3.25f, 0.0f};
    const int32_t ints[5] = {7, -1, 0, 2147483647, -2147483647 - 1};
    const double d[1] = {0.1};
    const uint16_t b[2] = {0x3f80, 0xc049};
    struct subsae__tensor_view views[5] = {
        {.name = "half", .dtype = SUBSAE_DTYPE_F16, .ndim = 1, .shape = {3}, .data = h,
         .bytes = 6},
        {.name = "W", .dtype = SUBSAE_DTYPE_F32, .ndim = 2, .shape = {2, 2}, .data = f,
         .bytes = 16},
        {.name = "indices", .dtype = SUBSAE_DTYPE_I32, .ndim = 1, .shape = {5}, .data = ints,
         .bytes = 20},
        {.name = "scalar", .dtype = SUBSAE_DTYPE_F64, .ndim = 0, .data = d, .bytes = 8},
        {.name = "b\xc3\xa9ta", .dtype = SUBSAE_DTYPE_BF16, .ndim = 2, .shape = {2, 1},
         .data = b, .bytes = 4},
    };
    const char *keys[2] = {"format", "note"};
    const char *values[2] = {"pt", "written by test_io"};
    const char *path = tmp("many.safetensors");
    ck_assert_ok(subsae__safetensors_write(path, views, 5, keys, values, 2));
    subsae__safetensors *st = NULL;
    ck_assert_ok(subsae__safetensors_open(path, &st));
    ck_assert_int_eq(subsae__safetensors_count(st), 5);
    ck_assert_str_eq(subsae__safetensors_metadata(st, "format"), "pt");
    ck_assert_str_eq(subsae__safetensors_metadata(st, "note"), "written by test_io");
    ck_assert_ptr_null(subsae__safetensors_metadata(st, "absent"));
    ck_assert_ptr_null(subsae__safetensors_find(st, "absent"));
    ck_assert_ptr_null(subsae__safetensors_tensor(st, 5));
    ck_assert_ptr_null(subsae__safetensors_tensor(st, -1));
    /* Tensors come back in file order: largest elements first. */
    const char *order[5] = {"scalar", "W", "indices", "half", "b\xc3\xa9ta"};
    const unsigned char *section = subsae__safetensors_tensor(st, 0)->data;
    for (int i = 0; i < 5; i++) {
        const struct subsae__tensor_view *v = subsae__safetensors_tensor(st, i);
        ck_assert_str_eq(v->name, order[i]);
        size_t offset = (size_t)((const unsigned char *)v->data - section);
        ck_assert_uint_eq(offset % subsae__dtype_size(v->dtype), 0);
    }
    for (int i = 0; i < 5; i++) {
        const struct subsae__tensor_view *v = subsae__safetensors_find(st, views[i].name);
        ck_assert_ptr_nonnull(v);
        ck_assert_int_eq(v->dtype, views[i].dtype);
        ck_assert_int_eq(v->ndim, views[i].ndim);
        for (int j = 0; j < v->ndim; j++)
            ck_assert_int_eq(v->shape[j], views[i].shape[j]);
        ck_assert_uint_eq(v->bytes, views[i].bytes);
        ck_assert(memcmp(v->data, views[i].data, v->bytes) == 0);
    }
    subsae__safetensors_close(st);
    subsae__safetensors_close(NULL);

    /* A buffer over one tensor of the file, by name. */
    subsae_buffer *buf = NULL;
    ck_assert_ok(subsae_buffer_open(path, "W", &buf));
    ck_assert_int_eq(subsae_buffer_rows(buf), 2);
    float out[4];
    ck_assert_ok(subsae_buffer_read(buf, 0, 2, out, 2));
    ck_assert(memcmp(out, f, sizeof f) == 0);
    subsae_buffer_free(buf);

    /* No tensors, only metadata: valid. */
    const char *meta_only = tmp("meta_only.safetensors");
    ck_assert_ok(subsae__safetensors_write(meta_only, NULL, 0, keys, values, 1));
    ck_assert_ok(subsae__safetensors_open(meta_only, &st));
    ck_assert_int_eq(subsae__safetensors_count(st), 0);
    ck_assert_str_eq(subsae__safetensors_metadata(st, "format"), "pt");
    subsae__safetensors_close(st);

    /* Writer refusals leave no file behind. */
    const char *bad = tmp("bad.safetensors");
    struct subsae__tensor_view twice[2] = {views[1], views[1]};
    ck_assert_status(subsae__safetensors_write(bad, twice, 2, NULL, NULL, 0), SUBSAE_E_INVALID);
    ck_assert_message_has("'W'");
    struct subsae__tensor_view reserved = views[1];
    reserved.name = "__metadata__";
    ck_assert_status(subsae__safetensors_write(bad, &reserved, 1, NULL, NULL, 0),
                     SUBSAE_E_INVALID);
    struct subsae__tensor_view wrong = views[1];
    wrong.bytes = 12;
    ck_assert_status(subsae__safetensors_write(bad, &wrong, 1, NULL, NULL, 0), SUBSAE_E_INVALID);
    ck_assert_int_eq(subsae_last_error_reason(), SUBSAE_REASON_DTYPE_SHAPE_MISMATCH);
    wrong = views[1];
    wrong.dtype = 42;
    ck_assert_status(subsae__safetensors_write(bad, &wrong, 1, NULL, NULL, 0), SUBSAE_E_INVALID);
    wrong = views[1];
    wrong.name = "bad\xff";
    ck_assert_status(subsae__safetensors_write(bad, &wrong, 1, NULL, NULL, 0), SUBSAE_E_INVALID);
    const char *dup_keys[2] = {"k", "k"};
    ck_assert_status(subsae__safetensors_write(bad, views, 1, dup_keys, values, 2),
                     SUBSAE_E_INVALID);
    ck_assert_status(subsae__safetensors_write(bad, views, -1, NULL, NULL, 0), SUBSAE_E_INVALID);
    ck_assert(!file_exists(bad));
    ck_assert_int_eq(count_entries(".tmp-"), 0);
}
END_TEST

START_TEST(open_detects_format_by_content)
{
    subsae_buffer *buf = sample_buffer(), *back = NULL;
    /* Misleading names: the content decides. */
    const char *npy = tmp("really_npy.safetensors"), *st = tmp("really_st.npy");
    ck_assert_ok(subsae_buffer_save_npy(buf, npy, SUBSAE_DTYPE_F16));
    ck_assert_ok(subsae_buffer_save_safetensors(buf, st, "x", SUBSAE_DTYPE_BF16));
    int format;
    ck_assert_ok(subsae_buffer_open(npy, "ignored for npy", &back));
    ck_assert_ok(subsae_buffer_source_info(back, 0, NULL, &format, NULL, NULL, NULL, 0));
    ck_assert_int_eq(format, SUBSAE_FORMAT_NPY);
    check_sample(back, SUBSAE_DTYPE_F16);
    subsae_buffer_free(back);
    ck_assert_ok(subsae_buffer_open(st, NULL, &back));
    ck_assert_ok(subsae_buffer_source_info(back, 0, NULL, &format, NULL, NULL, NULL, 0));
    ck_assert_int_eq(format, SUBSAE_FORMAT_SAFETENSORS);
    check_sample(back, SUBSAE_DTYPE_BF16);
    subsae_buffer_free(back);
    subsae_buffer_free(buf);
}
END_TEST

START_TEST(shards_read_as_one_buffer)
{
    /* 3 rows of f16 (.npy), 2 rows of f32 (safetensors), 0 rows, 1 of f64. */
    const uint16_t h[6] = {0x3c00, 0x4000, 0x4200, 0x4400, 0x4500, 0x4600};
    const float f[4] = {7, 8, 9, 10};
    const double d[2] = {11, 12};
    const char *a = tmp("shard_a.npy"), *b = tmp("shard_b.safetensors");
    const char *c = tmp("shard_c.npy"), *e = tmp("shard_d.npy");
    make_npy(a, 1, "{'descr': '<f2', 'fortran_order': False, 'shape': (3, 2), }", h, sizeof h);
    make_st(b, 0,
            "{\"t\":{\"dtype\":\"F32\",\"shape\":[1,2,2],\"data_offsets\":[0,16]}}", f,
            sizeof f);
    make_npy(c, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 2), }", NULL, 0);
    make_npy(e, 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 2), }", d, sizeof d);
    const char *paths[4] = {a, b, c, e};
    subsae_buffer *buf = NULL;
    ck_assert_ok(subsae_buffer_open_shards(paths, 4, "t", &buf));
    ck_assert_int_eq(subsae_buffer_rows(buf), 6);
    ck_assert_int_eq(subsae_buffer_dim(buf), 2);
    ck_assert_int_eq(subsae_buffer_source_count(buf), 4);
    float out[12];
    ck_assert_ok(subsae_buffer_read(buf, 0, 6, out, 2));
    for (int i = 0; i < 12; i++)
        ck_assert(out[i] == (float)(i + 1));
    const int64_t rows[3] = {5, 2, 3};
    ck_assert_ok(subsae_buffer_gather(buf, rows, 3, out, 2));
    ck_assert(out[0] == 11 && out[2] == 5 && out[4] == 7);
    const char *source;
    int dtype;
    ck_assert_ok(subsae_buffer_source_info(buf, 1, &source, NULL, &dtype, NULL, NULL, 0));
    ck_assert_str_eq(source, b);
    ck_assert_int_eq(dtype, SUBSAE_DTYPE_F32);
    subsae_buffer_free(buf);

    /* Shards that disagree on d name both files. */
    const char *wide = tmp("shard_wide.npy");
    make_npy(wide, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 3), }", f, 12);
    const char *mismatched[3] = {a, e, wide};
    subsae_buffer *sentinel = (subsae_buffer *)&buf;
    buf = sentinel;
    ck_assert_status(subsae_buffer_open_shards(mismatched, 3, NULL, &buf), SUBSAE_E_FORMAT);
    ck_assert_int_eq(subsae_last_error_reason(), SUBSAE_REASON_DIM_MISMATCH);
    ck_assert_message_has("shard_a.npy");
    ck_assert_message_has("shard_wide.npy");
    ck_assert_message_has("dim 3");
    ck_assert_message_has("dim 2");
    ck_assert_ptr_eq(buf, sentinel);
    ck_assert_status(subsae_buffer_open_shards(paths, 0, NULL, &buf), SUBSAE_E_INVALID);
    ck_assert_status(subsae_buffer_open_shards(NULL, 1, NULL, &buf), SUBSAE_E_INVALID);
    const char *with_null[2] = {a, NULL};
    ck_assert_status(subsae_buffer_open_shards(with_null, 2, NULL, &buf), SUBSAE_E_INVALID);
    ck_assert_status(subsae_buffer_open(NULL, NULL, &buf), SUBSAE_E_INVALID);
    ck_assert_status(subsae_buffer_open(a, NULL, NULL), SUBSAE_E_INVALID);
    ck_assert_ptr_eq(buf, sentinel);
}
END_TEST

/* ---- malformed inputs ----------------------------------------------- */

enum kind { NPY, ST, RAW };

struct bad_case {
    const char *file;     /* name of the file the test builds */
    enum kind kind;
    int major;            /* NPY: version */
    const char *text;     /* NPY: the dict; ST: the JSON; RAW: bytes */
    size_t data;          /* bytes of (zero) data after the header; RAW: length */
    uint64_t declared;    /* ST: header length written (0: the JSON's) */
    size_t truncate;      /* cut the file to this many bytes (0: no) */
    int patch_at;         /* overwrite one byte (-1: no) */
    unsigned char patch;
    const char *tensor;
    int status, reason;
    const char *says;     /* a fragment of the message describing the problem */
};

#define NPY_F4_34 "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }"
#define ST_ENTRY(name, dtype, shape, b, e) \
    "\"" name "\":{\"dtype\":\"" dtype "\",\"shape\":" shape ",\"data_offsets\":[" #b "," #e "]}"

static const struct bad_case bad_cases[] = {
    /* .npy */
    {"bad_magic.npy", NPY, 1, NPY_F4_34, 48, 0, 0, 5, 'Z', NULL, SUBSAE_E_FORMAT,
     SUBSAE_REASON_BAD_MAGIC, "magic"},
    {"truncated_header.npy", NPY, 1, NPY_F4_34, 48, 0, 9, -1, 0, NULL, SUBSAE_E_FORMAT,
     SUBSAE_REASON_TRUNCATED_HEADER, "truncated"},
    {"truncated_magic.npy", NPY, 1, NPY_F4_34, 48, 0, 4, -1, 0, NULL, SUBSAE_E_FORMAT,
     SUBSAE_REASON_TRUNCATED_HEADER, "truncated"},
    {"header_past_eof.npy", NPY, 1, NPY_F4_34, 48, 0, 40, -1, 0, NULL, SUBSAE_E_FORMAT,
     SUBSAE_REASON_HEADER_PAST_EOF, "past the end"},
    {"header_past_eof_v2.npy", NPY, 2, NPY_F4_34, 48, 0, 0, 11, 0x40, NULL, SUBSAE_E_FORMAT,
     SUBSAE_REASON_HEADER_PAST_EOF, "past the end"},
    {"shape_overflow.npy", NPY, 1,
     "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }", 48, 0, 0,
     -1, 0, NULL, SUBSAE_E_FORMAT, SUBSAE_REASON_SHAPE_OVERFLOW, "overflow"},
    {"shape_overflow_bytes.npy", NPY, 1,
     "{'descr': '<f8', 'fortran_order': False, 'shape': (4611686018427387904, 2), }", 48, 0, 0,
     -1, 0, NULL, SUBSAE_E_FORMAT, SUBSAE_REASON_SHAPE_OVERFLOW, "overflow"},
    {"shape_literal_overflow.npy", NPY, 1,
     "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999, 4), }", 48, 0, 0,
     -1, 0, NULL, SUBSAE_E_FORMAT, SUBSAE_REASON_SHAPE_OVERFLOW, "64 bits"},
    {"size_mismatch.npy", NPY, 1, NPY_F4_34, 40, 0, 0, -1, 0, NULL, SUBSAE_E_FORMAT,
     SUBSAE_REASON_SIZE_MISMATCH, "needs 48 bytes"},
    {"size_mismatch_long.npy", NPY, 1, NPY_F4_34, 52, 0, 0, -1, 0, NULL, SUBSAE_E_FORMAT,
     SUBSAE_REASON_SIZE_MISMATCH, "holds 52"},
    {"int64.npy", NPY, 1, "{'descr': '<i8', 'fortran_order': False, 'shape': (3, 4), }", 96, 0,
     0, -1, 0, NULL, SUBSAE_E_UNSUPPORTED, SUBSAE_REASON_UNSUPPORTED_DTYPE, "'<i8'"},
    {"no_byte_order.npy", NPY, 1, "{'descr': '|f4', 'fortran_order': False, 'shape': (3, 4), }",
     48, 0, 0, -1, 0, NULL, SUBSAE_E_UNSUPPORTED, SUBSAE_REASON_UNSUPPORTED_DTYPE, "'|f4'"},
    {"structured.npy", NPY, 1,
     "{'descr': [('a', '<f4'), ('b', '<f4')], 'fortran_order': False, 'shape': (3, 2), }", 24,
     0, 0, -1, 0, NULL, SUBSAE_E_UNSUPPORTED, SUBSAE_REASON_UNSUPPORTED_DTYPE, "structured"},
    {"big_endian.npy", NPY, 1, "{'descr': '>f4', 'fortran_order': False, 'shape': (3, 4), }",
     48, 0, 0, -1, 0, NULL, SUBSAE_E_UNSUPPORTED, SUBSAE_REASON_BIG_ENDIAN, "big-endian"},
    {"big_endian_f2.npy", NPY, 1, "{'descr': '>f2', 'fortran_order': False, 'shape': (3, 4), }",
     24, 0, 0, -1, 0, NULL, SUBSAE_E_UNSUPPORTED, SUBSAE_REASON_BIG_ENDIAN, "big-endian"},
    {"fortran.npy", NPY, 1, "{'descr': '<f4', 'fortran_order': True, 'shape': (3, 4), }", 48, 0,
     0, -1, 0, NULL, SUBSAE_E_UNSUPPORTED, SUBSAE_REASON_FORTRAN_ORDER, "Fortran"},
    {"not_a_dict.npy", NPY, 1, "['descr', '<f4']", 48, 0, 0, -1, 0, NULL, SUBSAE_E_FORMAT,
     SUBSAE_REASON_BAD_HEADER, "'{'"},
    {"unterminated.npy", NPY, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4", 48,
     0, 0, -1, 0, NULL, SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_HEADER, "'shape'"},
    {"missing_key.npy", NPY, 1, "{'descr': '<f4', 'shape': (3, 4), }", 48, 0, 0, -1, 0, NULL,
     SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_HEADER, "missing"},
    {"extra_key.npy", NPY, 1,
     "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), 'x': 1}", 48, 0, 0, -1, 0,
     NULL, SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_HEADER, "unexpected"},
    {"one_d.npy", NPY, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (12,), }", 48, 0,
     0, -1, 0, NULL, SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_SHAPE, "1-D"},
    {"scalar.npy", NPY, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (), }", 4, 0, 0,
     -1, 0, NULL, SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_SHAPE, "0-D"},
    {"zero_dim.npy", NPY, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 0), }", 0,
     0, 0, -1, 0, NULL, SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_SHAPE, "last dimension 0"},
    {"nine_dims.npy", NPY, 1,
     "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 1, 1, 1, 1, 1, 1, 1), }", 4, 0,
     0, -1, 0, NULL, SUBSAE_E_UNSUPPORTED, SUBSAE_REASON_BAD_SHAPE, "9 dimensions"},
    {"version4.npy", NPY, 1, NPY_F4_34, 48, 0, 0, 6, 4, NULL, SUBSAE_E_UNSUPPORTED,
     SUBSAE_REASON_BAD_HEADER, "version 4.0"},
    /* safetensors */
    {"invalid_json.safetensors", ST, 0, "{\"x\": {\"dtype\": \"F32\", \"shape\": [1, 2],", 8, 0,
     0, -1, 0, NULL, SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_HEADER, "not valid JSON"},
    {"trailing_garbage.safetensors", ST, 0,
     "{" ST_ENTRY("x", "F32", "[1,2]", 0, 8) "} x", 8, 0, 0, -1, 0, NULL, SUBSAE_E_FORMAT,
     SUBSAE_REASON_BAD_HEADER, "not valid JSON"},
    {"header_past_eof.safetensors", ST, 0, "{" ST_ENTRY("x", "F32", "[1,2]", 0, 8) "}", 8, 4096,
     0, -1, 0, NULL, SUBSAE_E_FORMAT, SUBSAE_REASON_HEADER_PAST_EOF, "past the end"},
    {"not_an_object.safetensors", ST, 0, "[1, 2]", 0, 0, 0, -1, 0, NULL, SUBSAE_E_FORMAT,
     SUBSAE_REASON_BAD_MAGIC, "safetensors"},
    {"offsets_out_of_range.safetensors", ST, 0, "{" ST_ENTRY("x", "F32", "[2,2]", 0, 16) "}", 8,
     0, 0, -1, 0, NULL, SUBSAE_E_FORMAT, SUBSAE_REASON_OFFSETS_OUT_OF_RANGE, "outside"},
    {"offsets_reversed.safetensors", ST, 0, "{" ST_ENTRY("x", "F32", "[2,2]", 16, 0) "}", 16, 0,
     0, -1, 0, NULL, SUBSAE_E_FORMAT, SUBSAE_REASON_OFFSETS_OUT_OF_RANGE, "outside"},
    {"offsets_overlap.safetensors", ST, 0,
     "{" ST_ENTRY("x", "F32", "[2,2]", 0, 16) "," ST_ENTRY("y", "F32", "[2,2]", 8, 24) "}", 24,
     0, 0, -1, 0, "x", SUBSAE_E_FORMAT, SUBSAE_REASON_OFFSETS_OVERLAP, "overlap"},
    {"offsets_misaligned.safetensors", ST, 0,
     "{" ST_ENTRY("h", "F16", "[1,1]", 0, 2) "," ST_ENTRY("y", "F32", "[1,1]", 2, 6) "}", 6, 0,
     0, -1, 0, "h", SUBSAE_E_FORMAT, SUBSAE_REASON_OFFSETS_MISALIGNED, "multiple of"},
    {"dtype_shape_mismatch.safetensors", ST, 0, "{" ST_ENTRY("x", "F32", "[2,3]", 0, 16) "}",
     16, 0, 0, -1, 0, NULL, SUBSAE_E_FORMAT, SUBSAE_REASON_DTYPE_SHAPE_MISMATCH, "need 24"},
    {"dtype_mismatch.safetensors", ST, 0, "{" ST_ENTRY("x", "F64", "[2,2]", 0, 16) "}", 16, 0,
     0, -1, 0, NULL, SUBSAE_E_FORMAT, SUBSAE_REASON_DTYPE_SHAPE_MISMATCH, "F64"},
    {"unsupported_dtype.safetensors", ST, 0, "{" ST_ENTRY("x", "I64", "[2,2]", 0, 32) "}", 32,
     0, 0, -1, 0, NULL, SUBSAE_E_UNSUPPORTED, SUBSAE_REASON_UNSUPPORTED_DTYPE, "I64"},
    {"unknown_dtype.safetensors", ST, 0, "{" ST_ENTRY("x", "Q7", "[2,2]", 0, 16) "}", 16, 0, 0,
     -1, 0, NULL, SUBSAE_E_UNSUPPORTED, SUBSAE_REASON_UNSUPPORTED_DTYPE, "\"Q7\""},
    {"partial_bytes.safetensors", ST, 0, "{" ST_ENTRY("x", "F4", "[3,1]", 0, 1) "}", 1, 0, 0,
     -1, 0, NULL, SUBSAE_E_FORMAT, SUBSAE_REASON_DTYPE_SHAPE_MISMATCH, "whole bytes"},
    {"shape_overflow.safetensors", ST, 0,
     "{" ST_ENTRY("x", "F32", "[4294967296,4294967296]", 0, 0) "}", 0, 0, 0, -1, 0, NULL,
     SUBSAE_E_FORMAT, SUBSAE_REASON_SHAPE_OVERFLOW, "overflow"},
    {"missing_tensor.safetensors", ST, 0, "{" ST_ENTRY("x", "F32", "[1,2]", 0, 8) "}", 8, 0, 0,
     -1, 0, "nope", SUBSAE_E_FORMAT, SUBSAE_REASON_MISSING_TENSOR, "'nope'"},
    {"ambiguous_tensor.safetensors", ST, 0,
     "{" ST_ENTRY("x", "F32", "[1,2]", 0, 8) "," ST_ENTRY("y", "F32", "[1,2]", 8, 16) "}", 16, 0,
     0, -1, 0, NULL, SUBSAE_E_INVALID, SUBSAE_REASON_MISSING_TENSOR, "'x', 'y'"},
    {"trailing_bytes.safetensors", ST, 0, "{" ST_ENTRY("x", "F32", "[1,2]", 0, 8) "}", 16, 0, 0,
     -1, 0, NULL, SUBSAE_E_FORMAT, SUBSAE_REASON_SIZE_MISMATCH, "cover 8 bytes"},
    {"gap.safetensors", ST, 0,
     "{" ST_ENTRY("x", "F32", "[1,2]", 0, 8) "," ST_ENTRY("y", "F32", "[1,2]", 12, 20) "}", 20,
     0, 0, -1, 0, "x", SUBSAE_E_FORMAT, SUBSAE_REASON_SIZE_MISMATCH, "[8, 12)"},
    {"metadata_not_string.safetensors", ST, 0,
     "{\"__metadata__\":{\"a\":1}," ST_ENTRY("x", "F32", "[1,2]", 0, 8) "}", 8, 0, 0, -1, 0,
     NULL, SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_HEADER, "__metadata__"},
    {"duplicate_key.safetensors", ST, 0,
     "{" ST_ENTRY("x", "F32", "[1,2]", 0, 8) "," ST_ENTRY("x", "F32", "[1,2]", 0, 8) "}", 8, 0,
     0, -1, 0, NULL, SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_HEADER, "duplicate"},
    {"missing_field.safetensors", ST, 0, "{\"x\":{\"dtype\":\"F32\",\"shape\":[1,2]}}", 8, 0, 0,
     -1, 0, NULL, SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_HEADER, "data_offsets"},
    {"negative_shape.safetensors", ST, 0, "{" ST_ENTRY("x", "F32", "[-1,2]", 0, 8) "}", 8, 0, 0,
     -1, 0, NULL, SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_HEADER, "shape[0]"},
    {"one_d.safetensors", ST, 0, "{" ST_ENTRY("x", "F32", "[2]", 0, 8) "}", 8, 0, 0, -1, 0,
     NULL, SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_SHAPE, "1-D"},
    {"indices.safetensors", ST, 0, "{" ST_ENTRY("x", "I32", "[1,2]", 0, 8) "}", 8, 0, 0, -1, 0,
     NULL, SUBSAE_E_UNSUPPORTED, SUBSAE_REASON_UNSUPPORTED_DTYPE, "I32"},
    {"empty_tensors.safetensors", ST, 0, "{}", 0, 0, 0, -1, 0, NULL, SUBSAE_E_FORMAT,
     SUBSAE_REASON_MISSING_TENSOR, "no tensor"},
    /* neither */
    {"empty.npy", RAW, 0, "", 0, 0, 0, -1, 0, NULL, SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_MAGIC,
     "empty"},
    {"text.npy", RAW, 0, "just some text, not an array\n", 29, 0, 0, -1, 0, NULL,
     SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_MAGIC, "neither"},
    {"short.bin", RAW, 0, "abc", 3, 0, 0, -1, 0, NULL, SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_MAGIC,
     "neither"},
};

static void build_bad_file(const struct bad_case *c, const char *path)
{
    unsigned char *b = NULL;
    size_t n = 0;
    if (c->kind == NPY) {
        n = build_npy(&b, c->major, c->text, NULL, c->data);
    } else if (c->kind == ST) {
        make_st(path, c->declared, c->text, NULL, c->data);
        b = read_file(path, &n);
    } else {
        n = c->data;
        b = malloc(n + 1);
        ck_assert_ptr_nonnull(b);
        memcpy(b, c->text, n);
    }
    if (c->truncate && c->truncate < n)
        n = c->truncate;
    if (c->patch_at >= 0)
        b[c->patch_at] = c->patch;
    write_file(path, b, n);
    free(b);
}

/* Foreign weight files carry tensors of other dtypes (I64 counters, U8
 * masks, FP8 weights...): the container accepts every safetensors dtype
 * as opaque bytes, checks their sizes and alignment, writes them back;
 * only activation reading insists on a float dtype. */
START_TEST(safetensors_opaque_dtypes)
{
    unsigned char data[39];
    float w[4] = {1.5f, -2.0f, 0.25f, 8.0f};
    int64_t steps[2] = {7, -3};
    memcpy(data, w, 16);
    memcpy(data + 16, steps, 16);
    for (int i = 32; i < 39; i++)
        data[i] = (unsigned char)(i * 7);
    const char *path = tmp("opaque.safetensors");
    make_st(path, 0,
            "{" ST_ENTRY("w", "F32", "[2,2]", 0, 16) "," ST_ENTRY("step", "I64", "[2]", 16, 32)
            "," ST_ENTRY("mask", "U8", "[3]", 32, 35) "," ST_ENTRY("flag", "BOOL", "[1]", 35, 36)
            "," ST_ENTRY("f8", "F8_E4M3", "[2]", 36, 38) "," ST_ENTRY("f4", "F4", "[2,1]", 38, 39)
            "}",
            data, sizeof data);
    subsae__safetensors *st = NULL;
    ck_assert_ok(subsae__safetensors_open(path, &st));
    ck_assert_int_eq(subsae__safetensors_count(st), 6);
    const char *names[6] = {"w", "step", "mask", "flag", "f8", "f4"};
    const char *dtypes[6] = {"F32", "I64", "U8", "BOOL", "F8_E4M3", "F4"};
    const size_t bytes[6] = {16, 16, 3, 1, 2, 1};
    struct subsae__tensor_view views[6];
    for (int i = 0; i < 6; i++) {
        const struct subsae__tensor_view *v = subsae__safetensors_find(st, names[i]);
        ck_assert_ptr_nonnull(v);
        ck_assert_str_eq(subsae__safetensors_dtype_name(v->dtype), dtypes[i]);
        ck_assert_uint_eq(v->bytes, bytes[i]);
        ck_assert(i == 0 ? v->dtype == SUBSAE_DTYPE_F32 : v->dtype >= SUBSAE__DTYPE_OPAQUE);
        views[i] = *v;
    }
    int64_t back[2];
    memcpy(back, subsae__safetensors_find(st, "step")->data, sizeof back);
    ck_assert_int_eq(back[0], 7);
    ck_assert_int_eq(back[1], -3);
    /* The writer takes the opaque codes back: same names, bytes, order. */
    const char *copy = tmp("opaque_copy.safetensors");
    ck_assert_ok(subsae__safetensors_write(copy, views, 6, NULL, NULL, 0));
    subsae__safetensors *st2 = NULL;
    ck_assert_ok(subsae__safetensors_open(copy, &st2));
    for (int i = 0; i < 6; i++) {
        const struct subsae__tensor_view *v = subsae__safetensors_find(st2, names[i]);
        ck_assert_ptr_nonnull(v);
        ck_assert_int_eq(v->dtype, views[i].dtype);
        ck_assert_uint_eq(v->bytes, bytes[i]);
        ck_assert(memcmp(v->data, views[i].data, bytes[i]) == 0);
    }
    subsae__safetensors_close(st2);
    subsae__safetensors_close(st);
    ck_assert_ptr_null(subsae__safetensors_dtype_name(-5));
    /* Activations: the float tensor reads, an opaque one is refused. */
    subsae_buffer *buf = NULL;
    ck_assert_ok(subsae_buffer_open(path, "w", &buf));
    subsae_buffer_free(buf);
    buf = NULL;
    ck_assert_status(subsae_buffer_open(path, "step", &buf), SUBSAE_E_UNSUPPORTED);
    ck_assert_int_eq(subsae_last_error_reason(), SUBSAE_REASON_UNSUPPORTED_DTYPE);
    ck_assert_message_has("I64");
    ck_assert_ptr_null(buf);
    /* Sizes and alignment of opaque tensors are still checked. */
    const char *bad = tmp("opaque_bad.safetensors");
    make_st(bad, 0, "{" ST_ENTRY("step", "I64", "[3]", 0, 16) "}", data, 16);
    ck_assert_status(subsae__safetensors_open(bad, &st), SUBSAE_E_FORMAT);
    ck_assert_int_eq(subsae_last_error_reason(), SUBSAE_REASON_DTYPE_SHAPE_MISMATCH);
    make_st(bad, 0,
            "{" ST_ENTRY("m", "U8", "[2]", 0, 2) "," ST_ENTRY("u", "U32", "[1]", 2, 6) "}",
            data, 6);
    ck_assert_status(subsae__safetensors_open(bad, &st), SUBSAE_E_FORMAT);
    ck_assert_int_eq(subsae_last_error_reason(), SUBSAE_REASON_OFFSETS_MISALIGNED);
}
END_TEST

START_TEST(malformed_inputs_fail_cleanly)
{
    /* A good shard to put in front of each bad one. */
    char good[512];
    harness_tmp_path("good.npy", good, sizeof good);
    float zeros[8] = {0};
    make_npy(good, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (4, 2), }", zeros,
             sizeof zeros);
    size_t n_cases = sizeof bad_cases / sizeof bad_cases[0];
    for (size_t i = 0; i < n_cases; i++) {
        const struct bad_case *c = &bad_cases[i];
        const char *path = tmp(c->file);
        build_bad_file(c, path);
        subsae_buffer *sentinel = (subsae_buffer *)&sentinel, *buf = sentinel;
        subsae_clear_error();
        int rc = subsae_buffer_open(path, c->tensor, &buf);
        ck_assert_msg(rc == c->status && subsae_last_error_reason() == c->reason,
                      "%s: status %d reason %d (%s), want %d reason %d: %s", c->file, rc,
                      subsae_last_error_reason(), subsae_reason_string(subsae_last_error_reason()),
                      c->status, c->reason, subsae_last_error());
        ck_assert_msg(strstr(subsae_last_error(), path) != NULL, "%s: message lacks the path: %s",
                      c->file, subsae_last_error());
        ck_assert_msg(strstr(subsae_last_error(), c->says) != NULL,
                      "%s: message lacks '%s': %s", c->file, c->says, subsae_last_error());
        ck_assert_ptr_eq(buf, sentinel);
        /* Behind a good shard: same failure, the partial buffer freed. */
        const char *paths[2] = {good, path};
        rc = subsae_buffer_open_shards(paths, 2, c->tensor, &buf);
        ck_assert_int_eq(rc, c->status);
        ck_assert_int_eq(subsae_last_error_reason(), c->reason);
        ck_assert_ptr_nonnull(strstr(subsae_last_error(), path));
        ck_assert_ptr_eq(buf, sentinel);
        /* The container reader agrees on safetensors files. */
        if (c->kind == ST && c->reason != SUBSAE_REASON_MISSING_TENSOR &&
            c->reason != SUBSAE_REASON_BAD_SHAPE && strcmp(c->file, "indices.safetensors") &&
            strcmp(c->file, "unsupported_dtype.safetensors")) {
            subsae__safetensors *st = (subsae__safetensors *)&sentinel;
            rc = subsae__safetensors_open(path, &st);
            ck_assert_msg(rc == c->status && subsae_last_error_reason() == c->reason,
                          "%s (container): %d/%d: %s", c->file, rc, subsae_last_error_reason(),
                          subsae_last_error());
            ck_assert_ptr_eq(st, (subsae__safetensors *)&sentinel);
        }
    }
    /* The reasons the issue lists are all distinct from one another. */
    const int listed[] = {SUBSAE_REASON_BAD_MAGIC, SUBSAE_REASON_TRUNCATED_HEADER,
                          SUBSAE_REASON_HEADER_PAST_EOF, SUBSAE_REASON_SHAPE_OVERFLOW,
                          SUBSAE_REASON_SIZE_MISMATCH, SUBSAE_REASON_UNSUPPORTED_DTYPE,
                          SUBSAE_REASON_BIG_ENDIAN, SUBSAE_REASON_FORTRAN_ORDER,
                          SUBSAE_REASON_BAD_HEADER, SUBSAE_REASON_OFFSETS_OUT_OF_RANGE,
                          SUBSAE_REASON_OFFSETS_OVERLAP, SUBSAE_REASON_OFFSETS_MISALIGNED,
                          SUBSAE_REASON_DTYPE_SHAPE_MISMATCH, SUBSAE_REASON_MISSING_TENSOR,
                          SUBSAE_REASON_DIM_MISMATCH};
    for (size_t i = 0; i < sizeof listed / sizeof listed[0]; i++)
        for (size_t j = 0; j < i; j++)
            ck_assert_int_ne(listed[i], listed[j]);

    /* A safetensors file too short for its length field, read directly. */
    const char *tiny = tmp("tiny.safetensors");
    write_file(tiny, "\x10\x00\x00", 3);
    subsae__safetensors *st = NULL;
    ck_assert_status(subsae__safetensors_open(tiny, &st), SUBSAE_E_FORMAT);
    ck_assert_int_eq(subsae_last_error_reason(), SUBSAE_REASON_TRUNCATED_HEADER);
    ck_assert_message_has("tiny.safetensors");
    /* Missing files and directories are I/O errors naming the path. */
    subsae_buffer *buf = NULL;
    ck_assert_status(subsae_buffer_open(tmp("absent.npy"), NULL, &buf), SUBSAE_E_IO);
    ck_assert_int_eq(subsae_last_error_reason(), SUBSAE_REASON_SYSTEM);
    ck_assert_message_has("absent.npy");
    ck_assert_status(subsae_buffer_open(harness_tmpdir(), NULL, &buf), SUBSAE_E_IO);
    ck_assert_message_has(harness_tmpdir());
    ck_assert_ptr_null(buf);
}
END_TEST

/* Opening and saving survive a failure of any allocation (NOMEM, nothing
 * leaked: ASan's leak checker runs at exit under make sanitize). */
START_TEST(allocation_failures_in_files)
{
    subsae_buffer *sample = sample_buffer();
    const char *npy = tmp("alloc.npy"), *st = tmp("alloc.safetensors");
    ck_assert_ok(subsae_buffer_save_npy(sample, npy, SUBSAE_DTYPE_F16));
    ck_assert_ok(subsae_buffer_save_safetensors(sample, st, "x", SUBSAE_DTYPE_BF16));
    const char *paths[2] = {npy, st};
    for (int64_t n = 0;; n++) {
        subsae__alloc_fail_after(n);
        subsae_buffer *buf = NULL;
        subsae__safetensors *container = NULL;
        int rc = subsae_buffer_open_shards(paths, 2, "x", &buf);
        if (!rc)
            rc = subsae__safetensors_open(st, &container);
        if (!rc)
            rc = subsae_buffer_save_npy(buf, tmp("alloc_out.npy"), SUBSAE_DTYPE_F16);
        if (!rc)
            rc = subsae_buffer_save_safetensors(buf, tmp("alloc_out.safetensors"), "y",
                                                SUBSAE_DTYPE_F32);
        subsae__alloc_fail_after(-1);
        subsae_buffer_free(buf);
        subsae__safetensors_close(container);
        if (rc == SUBSAE_OK)
            break;
        ck_assert_msg(rc == SUBSAE_E_NOMEM, "allocation %lld: %d %s", (long long)n, rc,
                      subsae_last_error());
        ck_assert_int_eq(count_entries(".tmp-"), 0);
        ck_assert_int_lt(n, 200);
    }
    subsae_buffer *back = NULL;
    ck_assert_ok(subsae_buffer_open(tmp("alloc_out.safetensors"), "y", &back));
    ck_assert_int_eq(subsae_buffer_rows(back), 2 * RT_ROWS);
    subsae_buffer_free(back);
    subsae_buffer_free(sample);
}
END_TEST

START_TEST(save_refuses_nonfinite_and_overflow)
{
    float data[3][2] = {{1, 2}, {3, NAN}, {5, 6}};
    subsae_buffer *buf = NULL;
    ck_assert_ok(subsae_buffer_wrap(data, SUBSAE_DTYPE_F32, 3, 2, 2, SUBSAE_BORROW, &buf));
    const char *npy = tmp("nan.npy"), *st = tmp("nan.safetensors");
    ck_assert_status(subsae_buffer_save_npy(buf, npy, SUBSAE_DTYPE_F32), SUBSAE_E_NONFINITE);
    ck_assert_message_has("nan.npy");
    ck_assert_message_has("row 1");
    ck_assert_status(subsae_buffer_save_safetensors(buf, st, "x", SUBSAE_DTYPE_F16),
                     SUBSAE_E_NONFINITE);
    ck_assert_message_has("nan.safetensors");
    ck_assert(!file_exists(npy));
    ck_assert(!file_exists(st));
    /* Skipping the bad row makes it savable. */
    ck_assert_ok(subsae_buffer_skip_nonfinite(buf, NULL));
    ck_assert_ok(subsae_buffer_save_npy(buf, npy, SUBSAE_DTYPE_F32));
    subsae_buffer *back = NULL;
    ck_assert_ok(subsae_buffer_open(npy, NULL, &back));
    ck_assert_int_eq(subsae_buffer_rows(back), 2);
    subsae_buffer_free(back);
    subsae_buffer_free(buf);

    /* 70000 overflows f16 (max 65504) but not bf16; FLT_MAX overflows bf16. */
    float big[2][2] = {{1, 70000}, {3.4028235e38f, 0}};
    ck_assert_ok(subsae_buffer_wrap(big, SUBSAE_DTYPE_F32, 1, 2, 2, SUBSAE_BORROW, &buf));
    const char *f16 = tmp("big16.npy");
    ck_assert_status(subsae_buffer_save_npy(buf, f16, SUBSAE_DTYPE_F16), SUBSAE_E_RANGE);
    ck_assert_message_has("big16.npy");
    ck_assert_message_has("row 0, column 1");
    ck_assert_message_has("f16");
    ck_assert(!file_exists(f16));
    ck_assert_ok(subsae_buffer_save_safetensors(buf, tmp("big.safetensors"), "x",
                                                SUBSAE_DTYPE_BF16));
    subsae_buffer_free(buf);
    ck_assert_ok(subsae_buffer_wrap(big, SUBSAE_DTYPE_F32, 2, 2, 2, SUBSAE_BORROW, &buf));
    ck_assert_status(subsae_buffer_save_safetensors(buf, tmp("big2.safetensors"), "x",
                                                    SUBSAE_DTYPE_BF16),
                     SUBSAE_E_RANGE);
    ck_assert_message_has("row 1, column 0");
    /* Unwritable places are I/O errors naming the file. */
    ck_assert_status(subsae_buffer_save_npy(buf, tmp("nowhere/x.npy"), SUBSAE_DTYPE_F32),
                     SUBSAE_E_IO);
    ck_assert_message_has("nowhere/x.npy");
    ck_assert_int_eq(count_entries(".tmp-"), 0);
    subsae_buffer_free(buf);
}
END_TEST

START_TEST(save_over_the_file_being_read)
{
    subsae_buffer *sample = sample_buffer(), *buf = NULL;
    const char *path = tmp("self.npy");
    ck_assert_ok(subsae_buffer_save_npy(sample, path, SUBSAE_DTYPE_F32));
    ck_assert_ok(subsae_buffer_open(path, NULL, &buf));
    /* The open buffer reads a mapping of the old file while the new one is
     * written and renamed over it. */
    ck_assert_ok(subsae_buffer_save_npy(buf, path, SUBSAE_DTYPE_F64));
    check_sample(buf, SUBSAE_DTYPE_F32);
    subsae_buffer_free(buf);
    ck_assert_ok(subsae_buffer_open(path, NULL, &buf));
    int dtype;
    ck_assert_ok(subsae_buffer_source_info(buf, 0, NULL, NULL, &dtype, NULL, NULL, 0));
    ck_assert_int_eq(dtype, SUBSAE_DTYPE_F64);
    check_sample(buf, SUBSAE_DTYPE_F32);
    subsae_buffer_free(buf);
    subsae_buffer_free(sample);
    ck_assert_int_eq(count_entries(".tmp-"), 0);
}
END_TEST

/* numpy (and a plain json + numpy reading of safetensors) reads the files
 * this library writes as the library itself reads them back. */
START_TEST(numpy_reads_what_we_write)
{
    if (!python_with_numpy()) {
        harness_skip("numpy_reads_what_we_write", "no python3 with numpy");
        return;
    }
    static const char script[] =
        "import json, sys\n"
        "import numpy as np\n"
        "for kind, path, out in zip(*[iter(sys.argv[1:])] * 3):\n"
        "    if kind == 'npy':\n"
        "        a = np.load(path)\n"
        "    else:\n"
        "        b = open(path, 'rb').read()\n"
        "        n = int.from_bytes(b[:8], 'little')\n"
        "        assert n % 8 == 0\n"
        "        t = json.loads(b[8:8 + n])['acts']\n"
        "        begin, end = t['data_offsets']\n"
        "        raw = b[8 + n + begin:8 + n + end]\n"
        "        if t['dtype'] == 'BF16':\n"
        "            a = (np.frombuffer(raw, '<u2').astype('<u4') << 16).view('<f4')\n"
        "        else:\n"
        "            a = np.frombuffer(raw, {'F32': '<f4', 'F16': '<f2', 'F64': '<f8'}[t['dtype']])\n"
        "        a = a.reshape(t['shape'])\n"
        "    a.astype('<f4').tofile(out)\n";
    const char *script_path = tmp("read_back.py");
    write_file(script_path, script, sizeof script - 1);
    subsae_buffer *buf = sample_buffer();
    const struct {
        const char *kind, *file;
        int dtype;
    } files[] = {
        {"npy", "py32.npy", SUBSAE_DTYPE_F32},
        {"npy", "py16.npy", SUBSAE_DTYPE_F16},
        {"npy", "py64.npy", SUBSAE_DTYPE_F64},
        {"st", "py32.safetensors", SUBSAE_DTYPE_F32},
        {"st", "py16.safetensors", SUBSAE_DTYPE_F16},
        {"st", "pybf.safetensors", SUBSAE_DTYPE_BF16},
        {"st", "py64.safetensors", SUBSAE_DTYPE_F64},
    };
    enum { NF = sizeof files / sizeof files[0] };
    char command[8192];
    int used = snprintf(command, sizeof command, "'%s' '%s'", getenv("SUBSAE_PYTHON"),
                        script_path);
    char outs[NF][512];
    for (int i = 0; i < NF; i++) {
        char path[512];
        harness_tmp_path(files[i].file, path, sizeof path);
        if (!strcmp(files[i].kind, "npy"))
            ck_assert_ok(subsae_buffer_save_npy(buf, path, files[i].dtype));
        else
            ck_assert_ok(subsae_buffer_save_safetensors(buf, path, "acts", files[i].dtype));
        char dump[512];
        snprintf(dump, sizeof dump, "%s.f32", files[i].file);
        harness_tmp_path(dump, outs[i], sizeof outs[i]);
        used += snprintf(command + used, sizeof command - (size_t)used, " %s '%s' '%s'",
                         files[i].kind, path, outs[i]);
    }
    ck_assert_int_eq(harness_run(command), 0);
    float ours[RT_ROWS * RT_DIM];
    for (int i = 0; i < NF; i++) {
        char path[512];
        harness_tmp_path(files[i].file, path, sizeof path);
        subsae_buffer *back = NULL;
        ck_assert_ok(subsae_buffer_open(path, NULL, &back));
        ck_assert_ok(subsae_buffer_read(back, 0, RT_ROWS, ours, RT_DIM));
        subsae_buffer_free(back);
        size_t n;
        unsigned char *theirs = read_file(outs[i], &n);
        ck_assert_uint_eq(n, sizeof ours);
        ck_assert_msg(memcmp(theirs, ours, n) == 0, "%s: numpy reads other values",
                      files[i].file);
        free(theirs);
    }
    subsae_buffer_free(buf);
}
END_TEST

/* ---- the shared stories260K data ------------------------------------ */

START_TEST(shared_file_matches_fixture)
{
    char path[4096];
    if (!harness_shared_file("L2_attn_out.npy", path, sizeof path)) {
        harness_skip("shared_file_matches_fixture", "no shared data");
        return;
    }
    subsae_buffer *buf = NULL;
    ck_assert_ok(subsae_buffer_open(path, NULL, &buf));
    ck_assert_int_eq(subsae_buffer_rows(buf), L2_FIXTURE_FILE_ROWS);
    ck_assert_int_eq(subsae_buffer_dim(buf), L2_FIXTURE_DIM);
    int format, dtype;
    ck_assert_ok(subsae_buffer_source_info(buf, 0, NULL, &format, &dtype, NULL, NULL, 0));
    ck_assert_int_eq(format, SUBSAE_FORMAT_NPY);
    ck_assert_int_eq(dtype, SUBSAE_DTYPE_F16);
    /* Mapped, not copied. */
    ck_assert(maps_file(buf->sources[0].data, "L2_attn_out.npy"));
    float rows[L2_FIXTURE_COUNT][L2_FIXTURE_DIM];
    ck_assert_ok(subsae_buffer_gather(buf, l2_fixture_rows, L2_FIXTURE_COUNT, &rows[0][0],
                                      L2_FIXTURE_DIM));
    for (int r = 0; r < L2_FIXTURE_COUNT; r++)
        for (int j = 0; j < L2_FIXTURE_DIM; j++) {
            /* Our widening of the fixture's bits equals numpy's values... */
            ck_assert_uint_eq(bits_of(subsae__f16_to_f32(l2_fixture_bits[r][j])),
                              bits_of(l2_fixture_values[r][j]));
            /* ...and the values read from the file equal both. */
            ck_assert_msg(bits_of(rows[r][j]) == bits_of(l2_fixture_values[r][j]),
                          "row %lld col %d: %a, fixture %a", (long long)l2_fixture_rows[r], j,
                          (double)rows[r][j], (double)l2_fixture_values[r][j]);
        }
    /* The same rows read one at a time. */
    float one[L2_FIXTURE_DIM];
    ck_assert_ok(subsae_buffer_read(buf, L2_FIXTURE_FILE_ROWS - 1, 1, one, L2_FIXTURE_DIM));
    ck_assert(memcmp(one, rows[L2_FIXTURE_COUNT - 1], sizeof one) == 0);
    int64_t bad = -1;
    ck_assert_ok(subsae_buffer_stats(buf, NULL, NULL, &bad, NULL));
    ck_assert_int_eq(bad, 0);
    subsae_buffer_free(buf);
}
END_TEST

/* ---- subsae inspect ------------------------------------------------- */

static char *run_capture(const char *command, int *status)
{
    fflush(stdout);
    FILE *p = popen(command, "r");
    ck_assert_ptr_nonnull(p);
    size_t cap = 1 << 16, n = 0;
    char *out = malloc(cap);
    ck_assert_ptr_nonnull(out);
    size_t got;
    while ((got = fread(out + n, 1, cap - n - 1, p)) > 0) {
        n += got;
        if (n + 1 == cap) {
            cap *= 2;
            out = realloc(out, cap);
            ck_assert_ptr_nonnull(out);
        }
    }
    out[n] = '\0';
    int rc = pclose(p);
    *status = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
    return out;
}

START_TEST(inspect_reports_files)
{
    /* f16 .npy (2 rows), bf16 safetensors (3-D: 2 x 2 rows), f32 .npy with
     * a NaN and an infinity (1 row). */
    const uint16_t h[4] = {0x4200, 0x4400, 0x0000, 0x0000}; /* (3,4): 5, (0,0): 0 */
    const uint16_t b[8] = {0x3f80, 0, 0, 0x4000, 0, 0, 0, 0}; /* norms 1, 2, 0, 0 */
    const float f[2] = {NAN, INFINITY};
    const char *a = tmp("inspect_a.npy"), *s = tmp("inspect_b.safetensors");
    const char *c = tmp("inspect_c.npy");
    make_npy(a, 1, "{'descr': '<f2', 'fortran_order': False, 'shape': (2, 2), }", h, sizeof h);
    make_st(s, 0, "{\"acts\":{\"dtype\":\"BF16\",\"shape\":[2,2,2],\"data_offsets\":[0,16]}}", b,
            sizeof b);
    make_npy(c, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2), }", f, sizeof f);
    char command[4096];
    snprintf(command, sizeof command, "'%s/bin/subsae' inspect --json '%s' '%s' --tensor acts '%s'",
             harness_build_dir(), a, s, c);
    int status;
    char *out = run_capture(command, &status);
    ck_assert_int_eq(status, 0);
    json_error_t error;
    json_t *root = json_loads(out, 0, &error);
    ck_assert_msg(root != NULL, "not JSON: %s", out);
    ck_assert_int_eq(json_object_size(root), 6);
    /* The NaN row comes after the 2 + 4 rows of the first two files. */
    ck_assert_int_eq(json_integer_value(json_object_get(root, "first_nonfinite_row")), 6);
    json_t *files = json_object_get(root, "files");
    ck_assert_int_eq(json_array_size(files), 3);
    const char *paths[3] = {a, s, c}, *formats[3] = {"npy", "safetensors", "npy"};
    const char *dtypes[3] = {"f16", "bf16", "f32"};
    const int rows[3] = {2, 4, 1};
    for (int i = 0; i < 3; i++) {
        json_t *e = json_array_get(files, (size_t)i);
        ck_assert_int_eq(json_object_size(e), 6);
        ck_assert_str_eq(json_string_value(json_object_get(e, "path")), paths[i]);
        ck_assert_str_eq(json_string_value(json_object_get(e, "format")), formats[i]);
        ck_assert_str_eq(json_string_value(json_object_get(e, "dtype")), dtypes[i]);
        ck_assert_int_eq(json_integer_value(json_object_get(e, "rows")), rows[i]);
        ck_assert_int_eq(json_integer_value(json_object_get(e, "dim")), 2);
        json_t *shape = json_object_get(e, "shape");
        ck_assert_int_eq(json_array_size(shape), i == 1 ? 3 : 2);
    }
    ck_assert_int_eq(json_integer_value(json_object_get(root, "rows")), 7);
    ck_assert_int_eq(json_integer_value(json_object_get(root, "dim")), 2);
    ck_assert_int_eq(json_integer_value(json_object_get(root, "nonfinite")), 2);
    /* Norms of the six finite rows: 5, 0, 1, 2, 0, 0 -> mean 8/6. */
    ck_assert_double_eq_tol(json_real_value(json_object_get(root, "mean_norm")), 8.0 / 6.0,
                            1e-9);
    json_decref(root);
    free(out);

    /* The human table names each file; errors are one line, exit 1. */
    snprintf(command, sizeof command, "'%s/bin/subsae' inspect '%s' --tensor acts '%s'",
             harness_build_dir(), a, s);
    out = run_capture(command, &status);
    ck_assert_int_eq(status, 0);
    ck_assert_ptr_nonnull(strstr(out, "PATH"));
    ck_assert_ptr_nonnull(strstr(out, "inspect_b.safetensors"));
    ck_assert_ptr_nonnull(strstr(out, "2 x 2 x 2"));
    ck_assert_ptr_nonnull(strstr(out, "6 rows x 2 dims"));
    free(out);
    const char *bad = tmp("inspect_bad.npy");
    make_npy(bad, 1, "{'descr': '>f4', 'fortran_order': False, 'shape': (1, 2), }", f, sizeof f);
    snprintf(command, sizeof command, "'%s/bin/subsae' inspect --json '%s' 2>&1",
             harness_build_dir(), bad);
    out = run_capture(command, &status);
    ck_assert_int_eq(status, 1);
    ck_assert_ptr_nonnull(strstr(out, "inspect_bad.npy"));
    ck_assert_ptr_nonnull(strstr(out, "big-endian"));
    ck_assert_ptr_eq(strchr(out, '\n'), out + strlen(out) - 1);
    free(out);
    snprintf(command, sizeof command, "'%s/bin/subsae' inspect --json 2>&1", harness_build_dir());
    out = run_capture(command, &status);
    ck_assert_int_eq(status, 2);
    free(out);
}
END_TEST

START_TEST(inspect_matches_numpy_on_shared_data)
{
    char probe[4096];
    if (!harness_shared_file("L2_attn_out.npy", probe, sizeof probe)) {
        harness_skip("inspect_matches_numpy_on_shared_data", "no shared data");
        return;
    }
    if (!python_with_numpy()) {
        harness_skip("inspect_matches_numpy_on_shared_data", "no python3 with numpy");
        return;
    }
    static const char script[] =
        "import glob, json, os, subprocess, sys\n"
        "import numpy as np\n"
        "cli, data = sys.argv[1], sys.argv[2]\n"
        "names = {'float16': 'f16', 'float32': 'f32', 'float64': 'f64'}\n"
        "files = sorted(glob.glob(os.path.join(data, '*.npy')))\n"
        "assert files, data\n"
        "def inspect(paths):\n"
        "    r = subprocess.run([cli, 'inspect', '--json'] + paths, capture_output=True,\n"
        "                       text=True)\n"
        "    assert r.returncode == 0, r.stderr\n"
        "    return json.loads(r.stdout)\n"
        "total = 0\n"
        "for f in files:\n"
        "    j = inspect([f])\n"
        "    a = np.load(f, mmap_mode='r')\n"
        "    e, = j['files']\n"
        "    assert e['path'] == f and e['format'] == 'npy', e\n"
        "    assert e['dtype'] == names[str(a.dtype)], (f, e['dtype'], a.dtype)\n"
        "    assert tuple(e['shape']) == a.shape, (f, e['shape'], a.shape)\n"
        "    rows, dim = int(np.prod(a.shape[:-1])), a.shape[-1]\n"
        "    assert (e['rows'], e['dim'], j['rows'], j['dim']) == (rows, dim, rows, dim), j\n"
        "    x = np.asarray(a, dtype=np.float64).reshape(rows, dim)\n"
        "    ok = np.isfinite(x).all(axis=1)\n"
        "    assert j['nonfinite'] == int((~np.isfinite(x)).sum()), (f, j['nonfinite'])\n"
        "    norm = np.linalg.norm(x[ok], axis=1).mean()\n"
        "    assert abs(j['mean_norm'] - norm) <= 1e-7 * norm, (f, j['mean_norm'], norm)\n"
        "    total += rows\n"
        "j = inspect(files)\n"
        "assert j['rows'] == total and len(j['files']) == len(files), (j['rows'], total)\n"
        "print('inspect agrees with numpy on %d files, %d rows' % (len(files), total))\n";
    const char *script_path = tmp("inspect_vs_numpy.py");
    write_file(script_path, script, sizeof script - 1);
    char data[4096];
    snprintf(data, sizeof data, "%s/data/stories260K", harness_shared_dir());
    char command[8192];
    snprintf(command, sizeof command, "'%s' '%s' '%s/bin/subsae' '%s'", getenv("SUBSAE_PYTHON"),
             script_path, harness_build_dir(), data);
    ck_assert_int_eq(harness_run(command), 0);
}
END_TEST

SUBSAE_SUITE(io)
{
    Suite *s = suite_create("io");
    TCase *tc = harness_case(s, "files", 30);
    tcase_add_test(tc, atomic_write_commit_and_abort);
    tcase_add_test(tc, make_dir_and_map_file);
    tc = harness_case(s, "npy", 30);
    tcase_add_test(tc, npy_round_trip_each_dtype);
    tcase_add_test(tc, npy_versions_and_nd_shapes);
    tcase_add_test(tc, npy_is_memory_mapped);
    tc = harness_case(s, "safetensors", 30);
    tcase_add_test(tc, safetensors_round_trip_each_dtype);
    tcase_add_test(tc, safetensors_container_many_tensors);
    tcase_add_test(tc, safetensors_opaque_dtypes);
    tcase_add_test(tc, open_detects_format_by_content);
    tcase_add_test(tc, shards_read_as_one_buffer);
    tc = harness_case(s, "malformed", 60);
    tcase_add_test(tc, malformed_inputs_fail_cleanly);
    tcase_add_test(tc, allocation_failures_in_files);
    tcase_add_test(tc, save_refuses_nonfinite_and_overflow);
    tcase_add_test(tc, save_over_the_file_being_read);
    tc = harness_case(s, "crosscheck", 120);
    tcase_add_test(tc, numpy_reads_what_we_write);
    tcase_add_test(tc, shared_file_matches_fixture);
    tcase_add_test(tc, inspect_reports_files);
    tcase_add_test(tc, inspect_matches_numpy_on_shared_data);
    return s;
}
