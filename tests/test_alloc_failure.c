/* Allocation failure: every public entry point that allocates is driven
 * through every allocation index n = 0, 1, 2, ... (the library's n-th
 * allocation and all later ones fail, lib/alloc.c) until the call succeeds
 * without reaching the failure. Each failing call must
 *   - return SUBSAE_E_NOMEM with a non-empty message (and that status in
 *     subsae_last_error_status()),
 *   - leave its output pointer unwritten,
 *   - leak nothing (the library's live-block count is back where it was
 *     after the scenario's teardown; `make sanitize` and `make valgrind`
 *     check the rest, including Jansson's and the mapped files),
 *   - leave the handle usable: the same call without failure injection
 *     then succeeds and gives the right result.
 * Jansson is pointed at the library's allocator for these tests (see
 * install_json_hook) so that its allocations fail too; OpenBLAS and
 * LAPACKE allocate on their own and are out of reach. */
#include "harness.h"
#include "internal.h"

#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the driver ----------------------------------------------------- */

enum { MAX_INDEX = 100000 };
#define SENTINEL ((void *)(uintptr_t)0x5e5e5e5e)

struct ctx {
    subsae_buffer *buf, *buf2, *made_buf;
    subsae_subspace *sub, *made_sub;
    subsae_batches *batches, *made_batches;
    float *scratch;
    int64_t n;
    const void *data;
    void *state; /* scenario-specific */
};

struct scenario {
    const char *name;
    void (*setup)(struct ctx *c);
    /* The call under test; must leave *out untouched on failure (it checks
     * that itself) and free a result from an earlier call before storing a
     * new one. */
    int (*call)(struct ctx *c);
    /* After a successful call: the result is right. */
    void (*verify)(struct ctx *c);
    /* After a failed call, before retrying: nothing changed. May be NULL. */
    void (*unchanged)(struct ctx *c);
};

static void teardown(struct ctx *c)
{
    subsae_batches_free(c->batches);
    subsae_batches_free(c->made_batches);
    subsae_buffer_free(c->made_buf);
    subsae_buffer_free(c->buf2);
    subsae_buffer_free(c->buf);
    subsae_subspace_free(c->sub);
    subsae_subspace_free(c->made_sub);
    free(c->scratch);
    memset(c, 0, sizeof *c);
}

static json_malloc_t saved_json_malloc;
static json_free_t saved_json_free;

/* Jansson allocates through the library's wrapper (so the hook reaches
 * it) for the duration of one scenario. Process-global, hence only here in
 * a test and never in the library. */
static void install_json_hook(void)
{
    json_get_alloc_funcs(&saved_json_malloc, &saved_json_free);
    json_set_alloc_funcs(subsae__malloc, subsae__free);
}

static void remove_json_hook(void)
{
    json_set_alloc_funcs(saved_json_malloc, saved_json_free);
}

/* Returns the number of allocations the successful call made. */
static int64_t drive(const struct scenario *sc)
{
    install_json_hook();
    int64_t live_at_start = subsae__alloc_live();
    for (int64_t n = 0; n < MAX_INDEX; n++) {
        struct ctx c = {0};
        sc->setup(&c);
        subsae_clear_error();
        subsae__alloc_fail_after(n);
        int rc = sc->call(&c);
        int64_t made = subsae__alloc_count();
        subsae__alloc_fail_after(-1);
        if (made <= n) {
            ck_assert_msg(rc == SUBSAE_OK, "%s: without a failed allocation -> %d: %s", sc->name,
                          rc, subsae_last_error());
            sc->verify(&c);
            teardown(&c);
            ck_assert_msg(subsae__alloc_live() == live_at_start, "%s: %lld blocks leaked",
                          sc->name, (long long)(subsae__alloc_live() - live_at_start));
            remove_json_hook();
            return made;
        }
        ck_assert_msg(rc == SUBSAE_E_NOMEM,
                      "%s: allocation %lld (of %lld) failed but the call returned %d (%s): %s",
                      sc->name, (long long)n, (long long)made, rc, subsae_status_string(rc),
                      subsae_last_error());
        ck_assert_msg(subsae_last_error()[0] != '\0', "%s: allocation %lld: empty message",
                      sc->name, (long long)n);
        ck_assert_int_eq(subsae_last_error_status(), SUBSAE_E_NOMEM);
        if (sc->unchanged)
            sc->unchanged(&c);
        /* Usable afterwards: the same call now works. */
        rc = sc->call(&c);
        ck_assert_msg(rc == SUBSAE_OK, "%s: after failing at allocation %lld, the retry -> %d: %s",
                      sc->name, (long long)n, rc, subsae_last_error());
        sc->verify(&c);
        teardown(&c);
        ck_assert_msg(subsae__alloc_live() == live_at_start,
                      "%s: failing at allocation %lld leaked %lld blocks", sc->name,
                      (long long)n, (long long)(subsae__alloc_live() - live_at_start));
    }
    ck_abort_msg("%s: still allocating after %d indices", sc->name, MAX_INDEX);
    return -1;
}

#define DRIVE(sc)                                                                          \
    do {                                                                                   \
        int64_t allocations_ = drive(&(sc));                                               \
        fprintf(stderr, "alloc failure: %-40s %3lld allocations, each failure clean\n",   \
                (sc).name, (long long)allocations_);                                       \
    } while (0)

/* ---- data ----------------------------------------------------------- */

enum { DIM = 6, ROWS = 40 };
static float rows_f32[ROWS * DIM];
static const char *npy_path, *st_path;
static char npy_slot[512], st_slot[512], out_slot[512];

static void make_data(void)
{
    uint32_t x = 12345;
    for (int i = 0; i < ROWS * DIM; i++) {
        x = x * 1664525u + 1013904223u;
        rows_f32[i] = (float)((x >> 8) % 2001) / 1000.0f - 1.0f + (float)(i % DIM);
    }
}

static subsae_buffer *memory_buffer(void)
{
    subsae_buffer *buf = NULL;
    ck_assert_ok(subsae_buffer_wrap(rows_f32, SUBSAE_DTYPE_F32, ROWS, DIM, DIM, SUBSAE_BORROW,
                                    &buf));
    return buf;
}

/* Files written without failure injection, shared by the file scenarios. */
static void make_files(void)
{
    make_data();
    subsae_buffer *buf = memory_buffer();
    npy_path = harness_tmp_path("in.npy", npy_slot, sizeof npy_slot);
    st_path = harness_tmp_path("in.safetensors", st_slot, sizeof st_slot);
    harness_tmp_path("out", out_slot, sizeof out_slot);
    ck_assert_ok(subsae_buffer_save_npy(buf, npy_path, SUBSAE_DTYPE_F32));
    ck_assert_ok(subsae_buffer_save_safetensors(buf, st_path, "acts", SUBSAE_DTYPE_F32));
    subsae_buffer_free(buf);
}

static void assert_rows_equal(const subsae_buffer *buf, int64_t first, const float *expected,
                              int64_t n)
{
    float got[ROWS * DIM];
    ck_assert_int_le(n, ROWS);
    ck_assert_ok(subsae_buffer_read(buf, first, n, got, DIM));
    ck_assert(memcmp(got, expected, (size_t)(n * DIM) * sizeof(float)) == 0);
}

/* No temporary file may be left next to the saved one. */
static void assert_no_temporaries(void)
{
    DIR *d = opendir(harness_tmpdir());
    ck_assert_ptr_nonnull(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        ck_assert_msg(strstr(e->d_name, ".tmp-") == NULL, "temporary file %s left behind",
                      e->d_name);
    closedir(d);
}

/* ---- buffers -------------------------------------------------------- */

static void setup_nothing(struct ctx *c)
{
    (void)c;
}

static void setup_memory(struct ctx *c)
{
    c->buf = memory_buffer();
}

static int call_create(struct ctx *c)
{
    subsae_buffer *b = SENTINEL;
    int rc = subsae_buffer_create(DIM, &b);
    if (rc) {
        ck_assert_ptr_eq(b, SENTINEL);
        return rc;
    }
    subsae_buffer_free(c->made_buf);
    c->made_buf = b;
    return rc;
}

static void verify_made_empty(struct ctx *c)
{
    ck_assert_int_eq(subsae_buffer_rows(c->made_buf), 0);
    ck_assert_int_eq(subsae_buffer_dim(c->made_buf), DIM);
}

/* An append that has to grow the storage (capacity starts at 1024 rows). */
enum { BIG = 1500 };
static uint16_t big_f16[BIG * DIM];

static void setup_append(struct ctx *c)
{
    ck_assert_ok(subsae_buffer_create(DIM, &c->buf));
    ck_assert_ok(subsae_buffer_append(c->buf, rows_f32, SUBSAE_DTYPE_F32, 3, DIM));
    for (int i = 0; i < BIG * DIM; i++)
        big_f16[i] = (uint16_t)(0x3c00 + i % 512); /* 1.0 upwards */
}

static int call_append(struct ctx *c)
{
    return subsae_buffer_append(c->buf, big_f16, SUBSAE_DTYPE_F16, BIG, DIM);
}

static void append_unchanged(struct ctx *c)
{
    ck_assert_int_eq(subsae_buffer_rows(c->buf), 3);
    assert_rows_equal(c->buf, 0, rows_f32, 3);
}

static void verify_append(struct ctx *c)
{
    ck_assert_int_eq(subsae_buffer_rows(c->buf), 3 + BIG);
    assert_rows_equal(c->buf, 0, rows_f32, 3);
    float row[DIM];
    ck_assert_ok(subsae_buffer_read(c->buf, 3 + BIG - 1, 1, row, DIM));
    ck_assert_float_eq(row[0], 1.0f + (float)((BIG - 1) * DIM % 512) / 1024.0f);
}

static int call_wrap(struct ctx *c, int ownership)
{
    subsae_buffer *b = SENTINEL;
    int rc = subsae_buffer_wrap(rows_f32, SUBSAE_DTYPE_F32, ROWS, DIM, DIM, ownership, &b);
    if (rc) {
        ck_assert_ptr_eq(b, SENTINEL);
        return rc;
    }
    subsae_buffer_free(c->made_buf);
    c->made_buf = b;
    return rc;
}

static int call_wrap_copy(struct ctx *c)
{
    return call_wrap(c, SUBSAE_COPY);
}

static int call_wrap_borrow(struct ctx *c)
{
    return call_wrap(c, SUBSAE_BORROW);
}

static void verify_made_rows(struct ctx *c)
{
    ck_assert_int_eq(subsae_buffer_rows(c->made_buf), ROWS);
    ck_assert_int_eq(subsae_buffer_dim(c->made_buf), DIM);
    assert_rows_equal(c->made_buf, 0, rows_f32, ROWS);
}

static int call_open(struct ctx *c, const char *path)
{
    subsae_buffer *b = SENTINEL;
    int rc = subsae_buffer_open(path, NULL, &b);
    if (rc) {
        ck_assert_ptr_eq(b, SENTINEL);
        return rc;
    }
    subsae_buffer_free(c->made_buf);
    c->made_buf = b;
    return rc;
}

static int call_open_npy(struct ctx *c)
{
    return call_open(c, npy_path);
}

static int call_open_safetensors(struct ctx *c)
{
    return call_open(c, st_path);
}

static int call_open_shards(struct ctx *c)
{
    const char *paths[3] = {npy_path, st_path, npy_path};
    subsae_buffer *b = SENTINEL;
    int rc = subsae_buffer_open_shards(paths, 3, "acts", &b);
    if (rc) {
        ck_assert_ptr_eq(b, SENTINEL);
        return rc;
    }
    subsae_buffer_free(c->made_buf);
    c->made_buf = b;
    return rc;
}

static void verify_shards(struct ctx *c)
{
    ck_assert_int_eq(subsae_buffer_rows(c->made_buf), 3 * ROWS);
    for (int s = 0; s < 3; s++)
        assert_rows_equal(c->made_buf, s * ROWS, rows_f32, ROWS);
}

/* 100 rows, rows 3, 6, 9, ... hold a NaN (33 of them: the skip list grows
 * several times). */
static float with_nan[100 * DIM];

static void setup_skip(struct ctx *c)
{
    for (int i = 0; i < 100 * DIM; i++)
        with_nan[i] = (float)i;
    for (int r = 3; r < 100; r += 3)
        with_nan[r * DIM + r % DIM] = NAN;
    ck_assert_ok(subsae_buffer_wrap(with_nan, SUBSAE_DTYPE_F32, 100, DIM, DIM, SUBSAE_BORROW,
                                    &c->buf));
}

static int call_skip(struct ctx *c)
{
    int64_t skipped = -7;
    int rc = subsae_buffer_skip_nonfinite(c->buf, &skipped);
    if (rc)
        ck_assert_int_eq(skipped, -7);
    else
        ck_assert_int_eq(skipped, 33);
    return rc;
}

static void skip_unchanged(struct ctx *c)
{
    float row[DIM];
    ck_assert_int_eq(subsae_buffer_rows(c->buf), 100);
    ck_assert_int_eq(subsae_buffer_read(c->buf, 3, 1, row, DIM), SUBSAE_E_NONFINITE);
}

static void verify_skip(struct ctx *c)
{
    ck_assert_int_eq(subsae_buffer_rows(c->buf), 67);
    float row[DIM];
    ck_assert_ok(subsae_buffer_read(c->buf, 3, 1, row, DIM)); /* stored row 4 */
    ck_assert_float_eq(row[0], (float)(4 * DIM));
}

static int call_stats(struct ctx *c)
{
    float mean[DIM];
    double norm = -1;
    int64_t bad = -1, first = -2;
    int rc = subsae_buffer_stats(c->buf, mean, &norm, &bad, &first);
    if (rc) {
        ck_assert(norm == -1 && bad == -1 && first == -2);
        return rc;
    }
    double expected = 0;
    for (int j = 0; j < DIM; j++) {
        double s = 0;
        for (int r = 0; r < ROWS; r++)
            s += rows_f32[r * DIM + j];
        expected += fabs(s / ROWS - mean[j]);
    }
    ck_assert_double_lt(expected, 1e-5);
    ck_assert(bad == 0 && first == -1 && norm > 0);
    return rc;
}

static void verify_nothing(struct ctx *c)
{
    (void)c;
}

/* Saving over an existing file: a failure leaves the old file whole and
 * no temporary behind. */
static void setup_save(struct ctx *c)
{
    c->buf = memory_buffer();
    subsae_buffer *old = NULL;
    ck_assert_ok(subsae_buffer_wrap(rows_f32 + DIM, SUBSAE_DTYPE_F32, 2, DIM, DIM,
                                    SUBSAE_BORROW, &old));
    ck_assert_ok(subsae_buffer_save_npy(old, out_slot, SUBSAE_DTYPE_F32));
    subsae_buffer_free(old);
}

static int call_save_npy(struct ctx *c)
{
    return subsae_buffer_save_npy(c->buf, out_slot, SUBSAE_DTYPE_F16);
}

static int call_save_safetensors(struct ctx *c)
{
    return subsae_buffer_save_safetensors(c->buf, out_slot, "acts", SUBSAE_DTYPE_BF16);
}

static void save_unchanged(struct ctx *c)
{
    (void)c;
    assert_no_temporaries();
    subsae_buffer *back = NULL;
    ck_assert_ok(subsae_buffer_open(out_slot, NULL, &back));
    ck_assert_int_eq(subsae_buffer_rows(back), 2);
    assert_rows_equal(back, 0, rows_f32 + DIM, 2);
    subsae_buffer_free(back);
}

static void verify_saved(struct ctx *c)
{
    (void)c;
    assert_no_temporaries();
    subsae_buffer *back = NULL;
    ck_assert_ok(subsae_buffer_open(out_slot, NULL, &back));
    ck_assert_int_eq(subsae_buffer_rows(back), ROWS);
    float got[ROWS * DIM];
    ck_assert_ok(subsae_buffer_read(back, 0, ROWS, got, DIM));
    for (int i = 0; i < ROWS * DIM; i++) /* f16 / bf16: 3 significant digits */
        ck_assert_float_eq_tol(got[i], rows_f32[i], 0.01f * (1 + fabsf(rows_f32[i])));
    subsae_buffer_free(back);
}

static int call_batches_create(struct ctx *c)
{
    subsae_batches *it = SENTINEL;
    int rc = subsae_batches_create(c->buf, 7, 3, SUBSAE_BATCH_SHUFFLE, &it);
    if (rc) {
        ck_assert_ptr_eq(it, SENTINEL);
        return rc;
    }
    subsae_batches_free(c->made_batches);
    c->made_batches = it;
    return rc;
}

static void verify_batches(struct ctx *c)
{
    float out[7 * DIM];
    int64_t n = 0, epoch = -1, seen = 0;
    for (int b = 0; b < 6; b++) {
        ck_assert_ok(subsae_batches_next(c->made_batches, out, DIM, &n, &epoch));
        seen += n;
    }
    ck_assert_int_eq(seen, ROWS);
    ck_assert_int_eq(epoch, 0);
}

static void setup_batches(struct ctx *c)
{
    c->buf = memory_buffer();
    ck_assert_ok(subsae_batches_create(c->buf, 7, 3, SUBSAE_BATCH_SHUFFLE, &c->batches));
}

static int call_batches_next(struct ctx *c)
{
    float out[7 * DIM];
    int64_t n = 0;
    return subsae_batches_next(c->batches, out, DIM, &n, NULL);
}

static int call_read_gather(struct ctx *c)
{
    float out[ROWS * DIM];
    int64_t idx[3] = {5, 0, 5};
    int rc = subsae_buffer_read(c->buf, 0, ROWS, out, DIM);
    return rc ? rc : subsae_buffer_gather(c->buf, idx, 3, out, DIM);
}

START_TEST(buffers_fail_cleanly)
{
    make_files();
    const struct scenario scenarios[] = {
        {"subsae_buffer_create", setup_nothing, call_create, verify_made_empty, NULL},
        {"subsae_buffer_append (grows)", setup_append, call_append, verify_append,
         append_unchanged},
        {"subsae_buffer_wrap (copy)", setup_nothing, call_wrap_copy, verify_made_rows, NULL},
        {"subsae_buffer_wrap (borrow)", setup_nothing, call_wrap_borrow, verify_made_rows, NULL},
        {"subsae_buffer_open (.npy)", setup_nothing, call_open_npy, verify_made_rows, NULL},
        {"subsae_buffer_open (safetensors)", setup_nothing, call_open_safetensors,
         verify_made_rows, NULL},
        {"subsae_buffer_open_shards", setup_nothing, call_open_shards, verify_shards, NULL},
        {"subsae_buffer_skip_nonfinite", setup_skip, call_skip, verify_skip, skip_unchanged},
        {"subsae_buffer_stats", setup_memory, call_stats, verify_nothing, NULL},
        {"subsae_buffer_read/gather", setup_memory, call_read_gather, verify_nothing, NULL},
        {"subsae_buffer_save_npy (f16)", setup_save, call_save_npy, verify_saved,
         save_unchanged},
        {"subsae_buffer_save_safetensors (bf16)", setup_save, call_save_safetensors,
         verify_saved, save_unchanged},
        {"subsae_batches_create", setup_memory, call_batches_create, verify_batches, NULL},
        {"subsae_batches_next", setup_batches, call_batches_next, verify_nothing, NULL},
    };
    for (size_t i = 0; i < sizeof scenarios / sizeof scenarios[0]; i++)
        DRIVE(scenarios[i]);
}
END_TEST

/* ---- subspace ------------------------------------------------------- */

struct subspace_reference {
    double total, variances[DIM];
    float basis[DIM * DIM], coords[ROWS * DIM];
};
static struct subspace_reference reference[3];
static int fit_method;

/* A clean fit with the scenario's options: the values every successful
 * call must reproduce bit for bit. */
static void configure(subsae_subspace *s, int method)
{
    ck_assert_ok(subsae_subspace_set_int(s, SUBSAE_SUBSPACE_METHOD, method));
    ck_assert_ok(subsae_subspace_set_int(s, SUBSAE_SUBSPACE_BATCH_ROWS, 16));
    if (method == SUBSAE_METHOD_RANDOMIZED) {
        ck_assert_ok(subsae_subspace_set_int(s, SUBSAE_SUBSPACE_RANK, 3));
        ck_assert_ok(subsae_subspace_set_int(s, SUBSAE_SUBSPACE_OVERSAMPLE, 2));
    }
}

static void make_reference(int method)
{
    subsae_buffer *buf = memory_buffer();
    subsae_subspace *s = NULL;
    ck_assert_ok(subsae_subspace_create(&s));
    configure(s, method);
    ck_assert_ok(subsae_subspace_fit(s, buf));
    int64_t k = 0;
    ck_assert_ok(subsae_subspace_get_int(s, SUBSAE_SUBSPACE_RANK_FOUND, &k));
    struct subspace_reference *r = &reference[method];
    ck_assert_ok(subsae_subspace_total_variance(s, &r->total));
    ck_assert_ok(subsae_subspace_variances(s, r->variances, k));
    ck_assert_ok(subsae_subspace_basis(s, k, r->basis, DIM));
    ck_assert_ok(subsae_subspace_project(s, rows_f32, ROWS, DIM, k, r->coords, DIM));
    subsae_subspace_free(s);
    subsae_buffer_free(buf);
}

static int call_subspace_create(struct ctx *c)
{
    subsae_subspace *s = SENTINEL;
    int rc = subsae_subspace_create(&s);
    if (rc) {
        ck_assert_ptr_eq(s, SENTINEL);
        return rc;
    }
    subsae_subspace_free(c->made_sub);
    c->made_sub = s;
    return rc;
}

static void verify_subspace_created(struct ctx *c)
{
    int64_t method = -1;
    ck_assert_ok(subsae_subspace_get_int(c->made_sub, SUBSAE_SUBSPACE_METHOD, &method));
    ck_assert_int_eq(method, SUBSAE_METHOD_AUTO);
}

static void setup_fit(struct ctx *c)
{
    c->buf = memory_buffer();
    ck_assert_ok(subsae_subspace_create(&c->sub));
    configure(c->sub, fit_method);
}

static int call_fit(struct ctx *c)
{
    return subsae_subspace_fit(c->sub, c->buf);
}

static void fit_unchanged(struct ctx *c)
{
    double total;
    ck_assert_int_eq(subsae_subspace_total_variance(c->sub, &total), SUBSAE_E_STATE);
}

static void verify_fit(struct ctx *c)
{
    const struct subspace_reference *r = &reference[fit_method];
    int64_t k = 0;
    ck_assert_ok(subsae_subspace_get_int(c->sub, SUBSAE_SUBSPACE_RANK_FOUND, &k));
    double total, variances[DIM];
    float basis[DIM * DIM];
    ck_assert_ok(subsae_subspace_total_variance(c->sub, &total));
    ck_assert_ok(subsae_subspace_variances(c->sub, variances, k));
    ck_assert_ok(subsae_subspace_basis(c->sub, k, basis, DIM));
    ck_assert(total == r->total);
    ck_assert(memcmp(variances, r->variances, (size_t)k * sizeof *variances) == 0);
    ck_assert(memcmp(basis, r->basis, (size_t)(k * DIM) * sizeof *basis) == 0);
}

static void setup_fitted(struct ctx *c)
{
    setup_fit(c);
    ck_assert_ok(subsae_subspace_fit(c->sub, c->buf));
    c->scratch = calloc(ROWS * DIM, sizeof *c->scratch);
}

static int call_project(struct ctx *c)
{
    return subsae_subspace_project(c->sub, rows_f32, ROWS, DIM, 3, c->scratch, DIM);
}

static void verify_project(struct ctx *c)
{
    const struct subspace_reference *r = &reference[fit_method];
    for (int i = 0; i < ROWS; i++)
        ck_assert(memcmp(c->scratch + i * DIM, r->coords + i * DIM, 3 * sizeof(float)) == 0);
}

static int call_reconstruct(struct ctx *c)
{
    float x[ROWS * DIM];
    return subsae_subspace_reconstruct(c->sub, reference[fit_method].coords, ROWS, DIM, 3, x,
                                       DIM);
}

START_TEST(subspace_fails_cleanly)
{
    make_data();
    const struct scenario create = {"subsae_subspace_create", setup_nothing,
                                    call_subspace_create, verify_subspace_created, NULL};
    DRIVE(create);
    const int methods[2] = {SUBSAE_METHOD_EXACT, SUBSAE_METHOD_RANDOMIZED};
    for (int m = 0; m < 2; m++) {
        fit_method = methods[m];
        make_reference(fit_method);
        const struct scenario scenarios[] = {
            {m ? "subsae_subspace_fit (randomized)" : "subsae_subspace_fit (exact)", setup_fit,
             call_fit, verify_fit, fit_unchanged},
            {"subsae_subspace_project", setup_fitted, call_project, verify_project, NULL},
            {"subsae_subspace_reconstruct", setup_fitted, call_reconstruct, verify_nothing,
             NULL},
        };
        for (size_t i = 0; i < sizeof scenarios / sizeof scenarios[0]; i++)
            DRIVE(scenarios[i]);
    }
}
END_TEST

SUBSAE_SUITE(alloc_failure)
{
    Suite *s = suite_create("alloc_failure");
    TCase *tc = harness_case(s, "every_index", 120);
    tcase_add_test(tc, buffers_fail_cleanly);
    tcase_add_test(tc, subspace_fails_cleanly);
    return s;
}
