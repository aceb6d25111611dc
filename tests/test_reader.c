/* Reading file rows by pread (lib/buffer_reader.c): the reader returns the
 * same floats as subsae_buffer_gather / subsae_buffer_read for every kind
 * of source (f32 .npy, f16 safetensors, shards, views, memory, skipped
 * non-finite rows), the same errors, and falls back to the mapping when
 * the file on disk no longer holds the mapped bytes. */
#include "buffer.h"
#include "harness.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A version 1.0 .npy of n x d float32 written by hand (NaNs allowed). */
static void write_npy(const char *path, const float *x, int64_t n, int64_t d)
{
    char header[128];
    int len = snprintf(header, sizeof header,
                       "{'descr': '<f4', 'fortran_order': False, 'shape': (%lld, %lld), }",
                       (long long)n, (long long)d);
    int total = 10 + len + 1;
    int pad = (64 - total % 64) % 64;
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    unsigned short hlen = (unsigned short)(len + pad + 1);
    fwrite("\x93NUMPY\x01\x00", 1, 8, f);
    fputc(hlen & 0xff, f);
    fputc(hlen >> 8, f);
    fwrite(header, 1, (size_t)len, f);
    for (int i = 0; i < pad; i++)
        fputc(' ', f);
    fputc('\n', f);
    fwrite(x, sizeof *x, (size_t)(n * d), f);
    ck_assert_int_eq(fclose(f), 0);
}

static float *rows_of(int64_t n, int64_t d, float shift)
{
    float *x = malloc((size_t)(n * d) * sizeof *x);
    for (int64_t i = 0; i < n * d; i++)
        x[i] = (float)((i * 37) % 101) / 16.0f - 3.0f + shift;
    return x;
}

/* The reader and the buffer's own gather and read agree bit for bit. */
static void expect_same_rows(const subsae_buffer *buf)
{
    const int64_t n = subsae_buffer_rows(buf), d = subsae_buffer_dim(buf);
    const int64_t count = 3 * n;
    int64_t *rows = malloc((size_t)count * sizeof *rows);
    for (int64_t i = 0; i < count; i++)
        rows[i] = (i * 7919 + 3) % n; /* any order, repeats */
    float *a = malloc((size_t)(count * d) * sizeof *a), *b = malloc((size_t)(count * d) * 4);
    subsae__row_reader *r;
    ck_assert_ok(subsae__row_reader_open(buf, &r));
    ck_assert_ptr_eq(subsae__row_reader_buffer(r), buf);
    ck_assert_ok(subsae_buffer_gather(buf, rows, count, a, d));
    ck_assert_ok(subsae__row_reader_gather(r, rows, 0, count, b, d));
    ck_assert_mem_eq(a, b, (size_t)(count * d) * sizeof *a);
    ck_assert_ok(subsae_buffer_read(buf, 1, n - 1, a, d));
    ck_assert_ok(subsae__row_reader_gather(r, NULL, 1, n - 1, b, d));
    ck_assert_mem_eq(a, b, (size_t)((n - 1) * d) * sizeof *a);
    int64_t bad = n;
    ck_assert_status(subsae__row_reader_gather(r, &bad, 0, 1, b, d), SUBSAE_E_RANGE);
    subsae__row_reader_close(r);
    free(rows);
    free(a);
    free(b);
}

START_TEST(reader_matches_gather_for_every_source)
{
    const int64_t n1 = 300, n2 = 77, d = 24;
    float *x1 = rows_of(n1, d, 0.0f), *x2 = rows_of(n2, d, 0.5f);
    char p1[1024], p2[1024], p3[1024];
    harness_tmp_path("a.npy", p1, sizeof p1);
    harness_tmp_path("b.npy", p2, sizeof p2);
    harness_tmp_path("c.safetensors", p3, sizeof p3);
    write_npy(p1, x1, n1, d);
    write_npy(p2, x2, n2, d);
    subsae_buffer *mem, *one, *half, *shards, *view;
    ck_assert_ok(subsae_buffer_wrap(x1, SUBSAE_DTYPE_F32, n1, d, d, SUBSAE_BORROW, &mem));
    ck_assert_ok(subsae_buffer_save_safetensors(mem, p3, "acts", SUBSAE_DTYPE_F16));
    ck_assert_ok(subsae_buffer_open(p1, NULL, &one));
    ck_assert_ok(subsae_buffer_open(p3, "acts", &half));
    const char *paths[3] = {p1, p2, p3};
    ck_assert_ok(subsae_buffer_open_shards(paths, 3, "acts", &shards));
    ck_assert_ok(subsae_buffer_view(shards, n1 - 40, 100, &view));
    expect_same_rows(mem);
    expect_same_rows(one);
    expect_same_rows(half);
    expect_same_rows(shards);
    expect_same_rows(view);
    subsae_buffer_free(view);
    subsae_buffer_free(shards);
    subsae_buffer_free(half);
    subsae_buffer_free(one);
    subsae_buffer_free(mem);
    free(x1);
    free(x2);
}
END_TEST

START_TEST(reader_reports_and_skips_nonfinite_rows)
{
    const int64_t n = 50, d = 8;
    float *x = rows_of(n, d, 0.0f);
    x[17 * d + 3] = NAN;
    x[30 * d] = INFINITY;
    char path[1024];
    harness_tmp_path("nan.npy", path, sizeof path);
    write_npy(path, x, n, d);
    subsae_buffer *buf;
    ck_assert_ok(subsae_buffer_open(path, NULL, &buf));
    subsae__row_reader *r;
    ck_assert_ok(subsae__row_reader_open(buf, &r));
    float out[8 * 50];
    int64_t rows[2] = {2, 17};
    ck_assert_status(subsae__row_reader_gather(r, rows, 0, 2, out, d), SUBSAE_E_NONFINITE);
    ck_assert_int_eq(subsae_last_error_reason(), SUBSAE_REASON_NONFINITE_INPUT);
    ck_assert_msg(strstr(subsae_last_error(), "row 17") && strstr(subsae_last_error(), path),
                  "message: %s", subsae_last_error());
    subsae__row_reader_close(r);
    int64_t skipped = 0;
    ck_assert_ok(subsae_buffer_skip_nonfinite(buf, &skipped));
    ck_assert_int_eq(skipped, 2);
    expect_same_rows(buf);
    subsae_buffer_free(buf);
    free(x);
}
END_TEST

START_TEST(reader_falls_back_when_the_file_changed)
{
    const int64_t n = 40, d = 16;
    float *x = rows_of(n, d, 0.0f), *y = rows_of(n, d, 1.0f);
    char path[1024], other[1024];
    harness_tmp_path("changing.npy", path, sizeof path);
    harness_tmp_path("other.npy", other, sizeof other);
    write_npy(path, x, n, d);
    subsae_buffer *buf;
    ck_assert_ok(subsae_buffer_open(path, NULL, &buf));
    /* Another file now has the name; the mapping still holds x. */
    write_npy(other, y, n, d);
    ck_assert_int_eq(rename(other, path), 0);
    float out[16 * 40];
    subsae__row_reader *r;
    ck_assert_ok(subsae__row_reader_open(buf, &r));
    ck_assert_ok(subsae__row_reader_gather(r, NULL, 0, n, out, d));
    ck_assert_mem_eq(out, x, (size_t)(n * d) * sizeof *x);
    subsae__row_reader_close(r);
    subsae_buffer_free(buf);
    free(x);
    free(y);
}
END_TEST

SUBSAE_SUITE(reader)
{
    Suite *s = suite_create("reader");
    TCase *tc = harness_case(s, "reader", 30);
    tcase_add_test(tc, reader_matches_gather_for_every_source);
    tcase_add_test(tc, reader_reports_and_skips_nonfinite_rows);
    tcase_add_test(tc, reader_falls_back_when_the_file_changed);
    return s;
}
