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
 * LAPACKE allocate on their own and are out of reach. Every function of
 * include/subsae.h that allocates is driven; the others (getters, setters,
 * frees) allocate nothing. */
#include "harness.h"
#include "internal.h"
#include "io.h"

#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- the driver ----------------------------------------------------- */

enum { MAX_INDEX = 100000 };
#define SENTINEL ((void *)(uintptr_t)0x5e5e5e5e)

struct ctx {
    subsae_buffer *buf, *buf2, *made_buf;
    subsae_subspace *sub, *made_sub;
    subsae_batches *batches, *made_batches;
    subsae_sae *sae, *made_sae;
    subsae_trainer *trainer, *made_trainer;
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
    subsae_sae_free(c->sae);
    subsae_sae_free(c->made_sae);
    subsae_trainer_free(c->trainer);
    subsae_trainer_free(c->made_trainer);
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
    /* Under valgrind every index up to 16, then every 7th (each index
     * reruns the scenario from scratch; some make 600 allocations). */
    const int64_t stride = harness_valgrind() ? 7 : 1;
    for (int64_t n = 0; n < MAX_INDEX; n += n < 16 ? 1 : stride) {
        struct ctx c = {0};
        sc->setup(&c);
        subsae_clear_error();
        subsae__alloc_fail_after(n);
        int rc = sc->call(&c);
        int64_t made = subsae__alloc_count();
        subsae__alloc_fail_after(-1);
        if (getenv("SUBSAE_ALLOC_VERBOSE"))
            fprintf(stderr, "%s: n %lld made %lld rc %d\n", sc->name, (long long)n,
                    (long long)made, rc);
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

static int call_fingerprint(struct ctx *c)
{
    uint64_t h = 0, want = 0;
    int rc = subsae_buffer_fingerprint(c->buf, 7, &h);
    if (rc) {
        ck_assert_uint_eq(h, 0);
        return rc;
    }
    subsae__alloc_fail_after(-1);
    ck_assert_ok(subsae_buffer_fingerprint(c->buf, 7, &want));
    ck_assert_uint_eq(h, want);
    return rc;
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
        {"subsae_buffer_fingerprint", setup_memory, call_fingerprint, verify_nothing, NULL},
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

static int call_subspace_queries(struct ctx *c)
{
    double v[DIM], rank = 0;
    int64_t r = 0;
    int exact = 0;
    int rc = subsae_subspace_variances(c->sub, v, 3);
    if (!rc)
        rc = subsae_subspace_singular_values(c->sub, v, 3);
    if (!rc)
        rc = subsae_subspace_explained_ratios(c->sub, v, 3);
    if (!rc)
        rc = subsae_subspace_effective_rank(c->sub, 0.9, &r, &exact);
    if (!rc)
        rc = subsae_subspace_entropy_rank(c->sub, &rank, &exact);
    if (!rc)
        ck_assert(r >= 1 && rank > 0);
    return rc;
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
            {"subsae_subspace_(ranks, variances...)", setup_fitted, call_subspace_queries,
             verify_nothing, NULL},
        };
        for (size_t i = 0; i < sizeof scenarios / sizeof scenarios[0]; i++)
            DRIVE(scenarios[i]);
    }
}
END_TEST

/* ---- SAE models ------------------------------------------------------ */

/* SAE directories and checkpoints are saved hundreds of times (a save
 * makes 150 to 550 allocations): on tmpfs, where fsync costs nothing,
 * when there is one. */
static char fast_dir[256];

static const char *fast_path(const char *name, char *buf, size_t size)
{
    if (!fast_dir[0]) {
        snprintf(fast_dir, sizeof fast_dir, "/dev/shm/subsae-alloc-XXXXXX");
        if (access("/dev/shm", W_OK) != 0 || !mkdtemp(fast_dir))
            snprintf(fast_dir, sizeof fast_dir, "%s", harness_tmpdir());
    }
    snprintf(buf, size, "%s/%s", fast_dir, name);
    return buf;
}

static void remove_fast_dir(void)
{
    if (strncmp(fast_dir, "/dev/shm/", 9) == 0) {
        char command[300];
        snprintf(command, sizeof command, "rm -rf '%s'", fast_dir);
        ck_assert_int_eq(harness_run(command), 0);
    }
    fast_dir[0] = '\0';
}

enum { M = 12 };
static char sae_dir[512], ckpt_dir[512];

/* A model with every parameter set to known values. */
static subsae_sae *known_model(int activation, float shift)
{
    subsae_sae *sae = NULL;
    ck_assert_ok(subsae_sae_create(DIM, DIM, M, activation, &sae));
    float w[M * DIM], b[M];
    for (int i = 0; i < M * DIM; i++)
        w[i] = (float)((i * 37) % 29) / 14.0f - 1.0f + shift;
    for (int i = 0; i < M; i++)
        b[i] = 0.01f * (float)i;
    ck_assert_ok(subsae_sae_set_param(sae, SUBSAE_PARAM_W_ENC, w, M * DIM));
    ck_assert_ok(subsae_sae_set_param(sae, SUBSAE_PARAM_W_DEC, w, M * DIM));
    ck_assert_ok(subsae_sae_set_param(sae, SUBSAE_PARAM_B_ENC, b, M));
    if (activation != SUBSAE_ACT_TOPK) /* TopK has no threshold to save */
        ck_assert_ok(subsae_sae_set_param(sae, SUBSAE_PARAM_THRESHOLD, b, M));
    ck_assert_ok(subsae_sae_set_int(sae, SUBSAE_SAE_K, 3));
    ck_assert_ok(subsae_sae_set_double(sae, SUBSAE_SAE_INPUT_SCALE, 0.5));
    return sae;
}

static void assert_same_sae(const subsae_sae *x, const subsae_sae *y)
{
    float u[M * DIM], v[M * DIM];
    for (int p = SUBSAE_PARAM_W_ENC; p <= SUBSAE_PARAM_THRESHOLD; p++) {
        int64_t n = subsae_sae_param_size(x, p);
        ck_assert_int_eq(n, subsae_sae_param_size(y, p));
        ck_assert_ok(subsae_sae_get_param(x, p, u, n));
        ck_assert_ok(subsae_sae_get_param(y, p, v, n));
        ck_assert_msg(memcmp(u, v, (size_t)n * sizeof *u) == 0, "parameter %d differs", p);
    }
}

static void setup_sae(struct ctx *c)
{
    c->sae = known_model(SUBSAE_ACT_TOPK, 0.0f);
    c->buf = memory_buffer();
    c->scratch = calloc(ROWS * M, sizeof *c->scratch);
}

static int call_sae_create(struct ctx *c)
{
    subsae_sae *s = SENTINEL;
    int rc = subsae_sae_create(DIM, DIM, M, SUBSAE_ACT_JUMPRELU, &s);
    if (rc) {
        ck_assert_ptr_eq(s, SENTINEL);
        return rc;
    }
    subsae_sae_free(c->made_sae);
    c->made_sae = s;
    return rc;
}

static void verify_sae_created(struct ctx *c)
{
    ck_assert_int_eq(subsae_sae_param_size(c->made_sae, SUBSAE_PARAM_W_DEC), M * DIM);
}

static int call_sae_clone(struct ctx *c)
{
    subsae_sae *s = SENTINEL;
    int rc = subsae_sae_clone(c->sae, &s);
    if (rc) {
        ck_assert_ptr_eq(s, SENTINEL);
        return rc;
    }
    subsae_sae_free(c->made_sae);
    c->made_sae = s;
    return rc;
}

static void verify_sae_clone(struct ctx *c)
{
    assert_same_sae(c->sae, c->made_sae);
}

static int call_sae_encode(struct ctx *c)
{
    return subsae_sae_encode(c->sae, rows_f32, ROWS, DIM, c->scratch, M);
}

static void verify_sae_encode(struct ctx *c)
{
    float z[ROWS * M];
    subsae_sae *clean = known_model(SUBSAE_ACT_TOPK, 0.0f);
    ck_assert_ok(subsae_sae_encode(clean, rows_f32, ROWS, DIM, z, M));
    ck_assert(memcmp(z, c->scratch, sizeof z) == 0);
    subsae_sae_free(clean);
}

static int call_sae_encode_decode_sparse(struct ctx *c)
{
    int32_t idx[ROWS * 3];
    float val[ROWS * 3], out[ROWS * DIM];
    int rc = subsae_sae_encode_sparse(c->sae, rows_f32, ROWS, DIM, 3, idx, val);
    if (!rc)
        rc = subsae_sae_decode_sparse(c->sae, idx, val, ROWS, 3, out, DIM);
    if (!rc)
        rc = subsae_sae_decode(c->sae, c->scratch, ROWS, M, out, DIM);
    return rc;
}

static int call_sae_evaluate(struct ctx *c)
{
    double metrics[SUBSAE_METRIC_COUNT];
    int rc = subsae_sae_evaluate(c->sae, c->buf, NULL, metrics, SUBSAE_METRIC_COUNT);
    if (!rc)
        ck_assert(isfinite(metrics[SUBSAE_METRIC_FVU]) && metrics[SUBSAE_METRIC_L0] <= 3);
    return rc;
}

static const char META[] =
    "{\"hook_name\":\"blocks.0.hook_resid_post\",\"metadata\":{\"a\":[1,2]}}";

static int call_sae_set_metadata(struct ctx *c)
{
    int rc = subsae_sae_set_metadata(c->sae, META);
    const char *now;
    ck_assert_ok(subsae_sae_get_metadata(c->sae, &now));
    ck_assert_str_eq(now, rc ? "{}" : META);
    return rc;
}

static int call_sae_evaluate_density(struct ctx *c)
{
    double metrics[SUBSAE_METRIC_COUNT], density[M];
    int rc = subsae_sae_evaluate_density(c->sae, c->buf, NULL, metrics, SUBSAE_METRIC_COUNT,
                                         density, M);
    if (!rc) {
        double l0 = 0.0;
        for (int f = 0; f < M; f++)
            l0 += density[f];
        ck_assert_double_eq_tol(l0, metrics[SUBSAE_METRIC_L0], 1e-12);
    }
    return rc;
}

static int call_sae_save_sparsity(struct ctx *c)
{
    double density[M];
    for (int f = 0; f < M; f++)
        density[f] = f % 3 ? 0.25 : 0.0;
    char path[700];
    snprintf(path, sizeof path, "%s-sparsity.safetensors", sae_dir);
    return subsae_sae_save_sparsity(c->sae, path, density, M);
}

static int call_sae_fold(struct ctx *c)
{
    return subsae_sae_fold_scales(c->sae);
}

/* Saving over an older model: a failure leaves a directory that loads
 * (each file is whole) and no temporary behind. */
static void setup_sae_save(struct ctx *c)
{
    setup_sae(c);
    ck_assert_ok(subsae_sae_set_metadata(c->sae, META)); /* written and read back too */
    subsae_sae *old = known_model(SUBSAE_ACT_TOPK, 0.5f);
    ck_assert_ok(subsae_sae_save(old, sae_dir));
    subsae_sae_free(old);
}

static int call_sae_save(struct ctx *c)
{
    return subsae_sae_save(c->sae, sae_dir);
}

static void assert_dir_clean(const char *dir)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        ck_assert_msg(strstr(e->d_name, ".tmp-") == NULL, "%s/%s left behind", dir, e->d_name);
    closedir(d);
}

static void sae_save_unchanged(struct ctx *c)
{
    (void)c;
    assert_dir_clean(sae_dir);
    subsae_sae *back = NULL;
    ck_assert_ok(subsae_sae_load(sae_dir, &back));
    subsae_sae_free(back);
}

static void verify_sae_saved(struct ctx *c)
{
    assert_dir_clean(sae_dir);
    subsae_sae *back = NULL, *folded = NULL;
    ck_assert_ok(subsae_sae_load(sae_dir, &back));
    ck_assert_ok(subsae_sae_clone(c->sae, &folded));
    ck_assert_ok(subsae_sae_fold_scales(folded));
    assert_same_sae(back, folded);
    subsae_sae_free(folded);
    subsae_sae_free(back);
}

static int call_sae_load(struct ctx *c)
{
    subsae_sae *s = SENTINEL;
    int rc = subsae_sae_load(sae_dir, &s);
    if (rc) {
        ck_assert_ptr_eq(s, SENTINEL);
        return rc;
    }
    subsae_sae_free(c->made_sae);
    c->made_sae = s;
    return rc;
}

static void verify_sae_loaded(struct ctx *c)
{
    const char *meta;
    ck_assert_ok(subsae_sae_get_metadata(c->made_sae, &meta));
    ck_assert_str_eq(meta, META);
    ck_assert_ok(subsae_sae_fold_scales(c->sae));
    assert_same_sae(c->sae, c->made_sae);
}

START_TEST(sae_fails_cleanly)
{
    make_data();
    fast_path("sae", sae_dir, sizeof sae_dir);
    const struct scenario scenarios[] = {
        {"subsae_sae_create", setup_nothing, call_sae_create, verify_sae_created, NULL},
        {"subsae_sae_clone", setup_sae, call_sae_clone, verify_sae_clone, NULL},
        {"subsae_sae_encode", setup_sae, call_sae_encode, verify_sae_encode, NULL},
        {"subsae_sae_encode_sparse/decode(_sparse)", setup_sae, call_sae_encode_decode_sparse,
         verify_nothing, NULL},
        {"subsae_sae_evaluate", setup_sae, call_sae_evaluate, verify_nothing, NULL},
        {"subsae_sae_fold_scales", setup_sae, call_sae_fold, verify_nothing, NULL},
        {"subsae_sae_set_metadata", setup_sae, call_sae_set_metadata, verify_nothing, NULL},
        {"subsae_sae_evaluate_density", setup_sae, call_sae_evaluate_density, verify_nothing,
         NULL},
        {"subsae_sae_save_sparsity", setup_sae, call_sae_save_sparsity, verify_nothing, NULL},
        {"subsae_sae_save (over an older model)", setup_sae_save, call_sae_save,
         verify_sae_saved, sae_save_unchanged},
        {"subsae_sae_load", setup_sae_save, call_sae_load, verify_nothing, NULL},
    };
    for (size_t i = 0; i < sizeof scenarios / sizeof scenarios[0]; i++)
        DRIVE(scenarios[i]);
    /* subsae_sae_load again, against the saved model. */
    const struct scenario load = {"subsae_sae_load (values)", setup_sae, call_sae_load,
                                  verify_sae_loaded, NULL};
    subsae_sae *saved = known_model(SUBSAE_ACT_TOPK, 0.0f);
    ck_assert_ok(subsae_sae_set_metadata(saved, META));
    ck_assert_ok(subsae_sae_save(saved, sae_dir));
    subsae_sae_free(saved);
    DRIVE(load);
    remove_fast_dir();
}
END_TEST

/* ---- trainer ---------------------------------------------------------- */


static subsae_trainer *configured_trainer(void)
{
    subsae_trainer *t = NULL;
    ck_assert_ok(subsae_trainer_create(&t));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_FEATURES, M));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_K, 3));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_BATCH, 8));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_INIT_SAMPLE, ROWS));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_THREADS, 1));
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_SEED, 5));
    /* Given to the model by init, saved and loaded with the checkpoints. */
    ck_assert_ok(subsae_trainer_set_metadata(t, META));
    return t;
}

/* Reference trainers, made without failure injection. */
static subsae_trainer *reference_trainer(int steps, int64_t fit_tokens)
{
    subsae_buffer *buf = memory_buffer();
    subsae_trainer *t = configured_trainer();
    ck_assert_ok(subsae_trainer_init(t, buf, NULL));
    for (int i = 0; i < steps; i++)
        ck_assert_ok(subsae_trainer_step(t, rows_f32 + i * 8 * DIM, DIM, NULL, 0, 8));
    if (fit_tokens)
        ck_assert_ok(subsae_trainer_fit(t, buf, NULL, fit_tokens));
    subsae_buffer_free(buf);
    return t;
}

/* References made once per test, before any scenario (so that the leak
 * count of a scenario does not see them): after init, one step, two
 * steps, and a fit of 24 tokens. */
static subsae_trainer *references[4];

static void make_references(void)
{
    references[0] = reference_trainer(0, 0);
    references[1] = reference_trainer(1, 0);
    references[2] = reference_trainer(2, 0);
    references[3] = reference_trainer(0, 24);
}

static void free_references(void)
{
    for (int i = 0; i < 4; i++) {
        subsae_trainer_free(references[i]);
        references[i] = NULL;
    }
}

static void assert_trainer_like(const subsae_trainer *t, int steps, int64_t fit_tokens)
{
    const subsae_trainer *ref = references[fit_tokens ? 3 : steps];
    assert_same_sae(subsae_trainer_sae(t), subsae_trainer_sae(ref));
    double a[SUBSAE_METRIC_COUNT], b[SUBSAE_METRIC_COUNT];
    ck_assert_ok(subsae_trainer_metrics(t, a, SUBSAE_METRIC_COUNT));
    ck_assert_ok(subsae_trainer_metrics(ref, b, SUBSAE_METRIC_COUNT));
    ck_assert(a[SUBSAE_METRIC_STEPS] == b[SUBSAE_METRIC_STEPS]);
    ck_assert(a[SUBSAE_METRIC_TOKENS] == b[SUBSAE_METRIC_TOKENS]);
}

static int call_trainer_create(struct ctx *c)
{
    subsae_trainer *t = SENTINEL;
    int rc = subsae_trainer_create(&t);
    if (rc) {
        ck_assert_ptr_eq(t, SENTINEL);
        return rc;
    }
    subsae_trainer_free(c->made_trainer);
    c->made_trainer = t;
    return rc;
}

static void verify_trainer_created(struct ctx *c)
{
    ck_assert_ptr_null(subsae_trainer_sae(c->made_trainer));
}

static void setup_trainer(struct ctx *c)
{
    c->buf = memory_buffer();
    c->trainer = configured_trainer();
}

static int call_trainer_init(struct ctx *c)
{
    return subsae_trainer_init(c->trainer, c->buf, NULL);
}

static void trainer_uninitialised(struct ctx *c)
{
    ck_assert_ptr_null(subsae_trainer_sae(c->trainer));
}

static void verify_trainer_init(struct ctx *c)
{
    assert_trainer_like(c->trainer, 0, 0);
}

static void setup_initialised(struct ctx *c)
{
    setup_trainer(c);
    ck_assert_ok(subsae_trainer_init(c->trainer, c->buf, NULL));
}

static int call_trainer_step(struct ctx *c)
{
    return subsae_trainer_step(c->trainer, rows_f32, DIM, NULL, 0, 8);
}

static void trainer_not_stepped(struct ctx *c)
{
    assert_trainer_like(c->trainer, 0, 0);
}

static void verify_trainer_step(struct ctx *c)
{
    assert_trainer_like(c->trainer, 1, 0);
}

static int call_trainer_fit(struct ctx *c)
{
    return subsae_trainer_fit(c->trainer, c->buf, NULL, 24);
}

static void verify_trainer_fit(struct ctx *c)
{
    assert_trainer_like(c->trainer, 0, 24);
}

/* A checkpoint over an older one: a failure leaves the older one whole. */
static char step1_dir[512]; /* references[1] saved once */

static void setup_checkpoint_save(struct ctx *c)
{
    /* Loading step 1 and stepping is cheaper than init + 2 steps, and gives
     * the same bits (tested in test_trainer.c and below). */
    ck_assert_ok(subsae_trainer_load_checkpoint(step1_dir, &c->trainer));
    ck_assert_ok(subsae_trainer_save_checkpoint(c->trainer, ckpt_dir));
    ck_assert_ok(subsae_trainer_step(c->trainer, rows_f32 + 8 * DIM, DIM, NULL, 0, 8));
}

static int call_checkpoint_save(struct ctx *c)
{
    return subsae_trainer_save_checkpoint(c->trainer, ckpt_dir);
}

static void checkpoint_unchanged(struct ctx *c)
{
    (void)c;
    assert_dir_clean(ckpt_dir);
    subsae_trainer *back = NULL;
    ck_assert_ok(subsae_trainer_load_checkpoint(ckpt_dir, &back));
    assert_trainer_like(back, 1, 0);
    subsae_trainer_free(back);
}

static void verify_checkpoint_saved(struct ctx *c)
{
    (void)c;
    assert_dir_clean(ckpt_dir);
    subsae_trainer *back = NULL;
    ck_assert_ok(subsae_trainer_load_checkpoint(ckpt_dir, &back));
    assert_trainer_like(back, 2, 0);
    subsae_trainer_free(back);
}

static int call_checkpoint_load(struct ctx *c)
{
    subsae_trainer *t = SENTINEL;
    int rc = subsae_trainer_load_checkpoint(ckpt_dir, &t);
    if (rc) {
        ck_assert_ptr_eq(t, SENTINEL);
        return rc;
    }
    subsae_trainer_free(c->made_trainer);
    c->made_trainer = t;
    return rc;
}

static void verify_checkpoint_loaded(struct ctx *c)
{
    /* Loaded at step 1 with the run's metadata; the next step gives the
     * reference's step 2. */
    const char *meta;
    ck_assert_ok(subsae_trainer_get_metadata(c->made_trainer, &meta));
    ck_assert_str_eq(meta, META);
    assert_trainer_like(c->made_trainer, 1, 0);
    ck_assert_ok(subsae_trainer_step(c->made_trainer, rows_f32 + 8 * DIM, DIM, NULL, 0, 8));
    assert_trainer_like(c->made_trainer, 2, 0);
}

static void setup_saved_checkpoint(struct ctx *c)
{
    (void)c;
    ck_assert_ok(subsae_trainer_save_checkpoint(references[1], ckpt_dir));
}

static int call_trainer_set_metadata(struct ctx *c)
{
    static const char other[] = "{\"model_name\":\"m\"}";
    int rc = subsae_trainer_set_metadata(c->trainer, other);
    const char *run, *model;
    ck_assert_ok(subsae_trainer_get_metadata(c->trainer, &run));
    ck_assert_ok(subsae_sae_get_metadata(subsae_trainer_sae(c->trainer), &model));
    ck_assert_str_eq(run, rc ? META : other);
    ck_assert_str_eq(model, run);
    return rc;
}

static int call_trainer_metrics(struct ctx *c)
{
    double m[SUBSAE_METRIC_COUNT];
    int rc = subsae_trainer_metrics(c->trainer, m, SUBSAE_METRIC_COUNT);
    if (!rc)
        ck_assert(m[SUBSAE_METRIC_STEPS] == 0);
    return rc;
}

/* subsae_synth: the same rows and dictionary as without failures. */
enum { SYN_ROWS = 40, SYN_FEATURES = 16 };
static float synth_rows[SYN_ROWS * DIM], synth_atoms[SYN_FEATURES * DIM];

static int call_synth(struct ctx *c)
{
    subsae_buffer *b = SENTINEL;
    float atoms[SYN_FEATURES * DIM];
    int rc = subsae_synth(DIM, 3, SYN_FEATURES, 2, SYN_ROWS, 7, &b, atoms);
    if (rc) {
        ck_assert_ptr_eq(b, SENTINEL);
        return rc;
    }
    ck_assert(memcmp(atoms, synth_atoms, sizeof atoms) == 0);
    subsae_buffer_free(c->made_buf);
    c->made_buf = b;
    return rc;
}

static void verify_synth(struct ctx *c)
{
    assert_rows_equal(c->made_buf, 0, synth_rows, SYN_ROWS);
}

static int call_view(struct ctx *c)
{
    subsae_buffer *v = SENTINEL;
    int rc = subsae_buffer_view(c->buf, 5, 10, &v);
    if (rc) {
        ck_assert_ptr_eq(v, SENTINEL);
        return rc;
    }
    subsae_buffer_free(c->made_buf);
    c->made_buf = v;
    return rc;
}

static void verify_view(struct ctx *c)
{
    assert_rows_equal(c->made_buf, 0, rows_f32 + 5 * DIM, 10);
}

START_TEST(trainer_fails_cleanly)
{
    make_data();
    make_references();
    fast_path("checkpoint", ckpt_dir, sizeof ckpt_dir);
    fast_path("step1", step1_dir, sizeof step1_dir);
    ck_assert_ok(subsae_trainer_save_checkpoint(references[1], step1_dir));
    subsae_buffer *reference_synth = NULL;
    ck_assert_ok(subsae_synth(DIM, 3, SYN_FEATURES, 2, SYN_ROWS, 7, &reference_synth,
                              synth_atoms));
    ck_assert_ok(subsae_buffer_read(reference_synth, 0, SYN_ROWS, synth_rows, DIM));
    subsae_buffer_free(reference_synth);
    const struct scenario scenarios[] = {
        {"subsae_synth", setup_nothing, call_synth, verify_synth, NULL},
        {"subsae_buffer_view", setup_memory, call_view, verify_view, NULL},
        {"subsae_trainer_create", setup_nothing, call_trainer_create, verify_trainer_created,
         NULL},
        {"subsae_trainer_init", setup_trainer, call_trainer_init, verify_trainer_init,
         trainer_uninitialised},
        {"subsae_trainer_metrics", setup_initialised, call_trainer_metrics, verify_nothing,
         NULL},
        {"subsae_trainer_set_metadata (after init)", setup_initialised,
         call_trainer_set_metadata, verify_nothing, NULL},
        {"subsae_trainer_step", setup_initialised, call_trainer_step, verify_trainer_step,
         trainer_not_stepped},
        {"subsae_trainer_fit", setup_initialised, call_trainer_fit, verify_trainer_fit,
         trainer_not_stepped},
        {"subsae_trainer_save_checkpoint (over one)", setup_checkpoint_save,
         call_checkpoint_save, verify_checkpoint_saved, checkpoint_unchanged},
        {"subsae_trainer_load_checkpoint", setup_saved_checkpoint, call_checkpoint_load,
         verify_checkpoint_loaded, NULL},
    };
    for (size_t i = 0; i < sizeof scenarios / sizeof scenarios[0]; i++)
        DRIVE(scenarios[i]);
    remove_fast_dir();
    free_references();
}
END_TEST

/* ---- training variants --------------------------------------------- */

/* BatchTopK, JumpReLU, ReLU with L1, TopK with AuxK and a TopK transcoder:
 * init, step and fit of each through every allocation index, against
 * references made without failure injection (the same bits); checkpoints
 * of the JumpReLU and BatchTopK trainers (log thresholds, the running
 * BatchTopK threshold) saved and loaded. */
enum { DOUT = 4 };
static float target_f32[ROWS * DOUT];

struct variant {
    const char *name;
    int activation;
    bool auxk, transcoder;
    int pre_steps; /* steps before the step under test */
    bool bf16;     /* SUBSAE_PRECISION_AUTO: bf16 where the CPU has it */
};
static const struct variant *variant;

/* References of the current variant: after init, after init and the
 * pre-steps, after one more step, after init and a fit of 24 tokens. */
enum { REF_INIT, REF_PRE, REF_STEP, REF_FIT, N_REFS };
static subsae_trainer *vref[N_REFS];
static char pre_dir[512]; /* vref[REF_PRE] saved once */

static void make_target(void)
{
    for (int r = 0; r < ROWS; r++)
        for (int j = 0; j < DOUT; j++)
            target_f32[r * DOUT + j] = 0.5f * rows_f32[r * DIM + j] - rows_f32[r * DIM + j + 2];
}

static subsae_buffer *target_buffer(void)
{
    subsae_buffer *buf = NULL;
    ck_assert_ok(subsae_buffer_wrap(target_f32, SUBSAE_DTYPE_F32, ROWS, DOUT, DOUT,
                                    SUBSAE_BORROW, &buf));
    return buf;
}

static subsae_trainer *variant_trainer(const struct variant *v, bool auxk)
{
    subsae_trainer *t = configured_trainer();
    ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_ACTIVATION, v->activation));
    if (v->bf16)
        ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_PRECISION, SUBSAE_PRECISION_AUTO));
    if (v->activation == SUBSAE_ACT_RELU)
        ck_assert_ok(subsae_trainer_set_double(t, SUBSAE_TRAIN_L1_COEF, 0.5));
    if (v->auxk) {
        /* k = 1 of 12 features and a dead window of one step: after the
         * first step at least 4 features are dead, and AuxK (when `auxk`;
         * off for the comparison) revives them. */
        ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_K, 1));
        ck_assert_ok(subsae_trainer_set_double(t, SUBSAE_TRAIN_AUXK_COEF, auxk ? 1.0 / 32 : 0));
        ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_AUXK_K, 2));
        ck_assert_ok(subsae_trainer_set_int(t, SUBSAE_TRAIN_DEAD_WINDOW, 8));
    }
    return t;
}

static int variant_step(subsae_trainer *t, int i)
{
    return subsae_trainer_step(t, rows_f32 + i * 8 * DIM, DIM,
                               variant->transcoder ? target_f32 + i * 8 * DOUT : NULL,
                               variant->transcoder ? DOUT : 0, 8);
}

static subsae_trainer *variant_reference(int steps, int64_t fit_tokens, bool auxk)
{
    subsae_buffer *buf = memory_buffer(), *target = variant->transcoder ? target_buffer() : NULL;
    subsae_trainer *t = variant_trainer(variant, auxk);
    ck_assert_ok(subsae_trainer_init(t, buf, target));
    for (int i = 0; i < steps; i++)
        ck_assert_ok(variant_step(t, i));
    if (fit_tokens)
        ck_assert_ok(subsae_trainer_fit(t, buf, target, fit_tokens));
    subsae_buffer_free(target);
    subsae_buffer_free(buf);
    return t;
}

static bool same_params(const subsae_sae *x, const subsae_sae *y)
{
    float u[M * DIM], v[M * DIM];
    for (int p = SUBSAE_PARAM_W_ENC; p <= SUBSAE_PARAM_THRESHOLD; p++) {
        int64_t n = subsae_sae_param_size(x, p);
        ck_assert_int_eq(n, subsae_sae_param_size(y, p));
        ck_assert_ok(subsae_sae_get_param(x, p, u, n));
        ck_assert_ok(subsae_sae_get_param(y, p, v, n));
        if (memcmp(u, v, (size_t)n * sizeof *u) != 0)
            return false;
    }
    return true;
}

static void make_variant_references(const struct variant *v)
{
    variant = v;
    vref[REF_INIT] = variant_reference(0, 0, v->auxk);
    vref[REF_PRE] = variant_reference(v->pre_steps, 0, v->auxk);
    vref[REF_STEP] = variant_reference(v->pre_steps + 1, 0, v->auxk);
    vref[REF_FIT] = variant_reference(0, 24, v->auxk);
    ck_assert(!same_params(subsae_trainer_sae(vref[REF_PRE]), subsae_trainer_sae(vref[REF_STEP])));
    if (v->auxk) {
        /* AuxK runs in the step under test and in the fit: without it the
         * weights come out different. */
        int64_t dead = 0;
        double metrics[SUBSAE_METRIC_COUNT];
        ck_assert_ok(subsae_trainer_metrics(vref[REF_PRE], metrics, SUBSAE_METRIC_COUNT));
        dead = (int64_t)metrics[SUBSAE_METRIC_DEAD_FEATURES];
        ck_assert_int_gt(dead, 0);
        subsae_trainer *plain = variant_reference(v->pre_steps + 1, 0, false);
        subsae_trainer *plain_pre = variant_reference(v->pre_steps, 0, false);
        ck_assert(same_params(subsae_trainer_sae(plain_pre), subsae_trainer_sae(vref[REF_PRE])) ==
                  (v->pre_steps <= 1));
        ck_assert(!same_params(subsae_trainer_sae(plain), subsae_trainer_sae(vref[REF_STEP])));
        subsae_trainer_free(plain);
        subsae_trainer_free(plain_pre);
        plain = variant_reference(0, 24, false);
        ck_assert(!same_params(subsae_trainer_sae(plain), subsae_trainer_sae(vref[REF_FIT])));
        subsae_trainer_free(plain);
    }
}

static void free_variant_references(void)
{
    for (int i = 0; i < N_REFS; i++) {
        subsae_trainer_free(vref[i]);
        vref[i] = NULL;
    }
}

/* The trainer equals reference `r`: every parameter bit for bit, steps,
 * tokens and dead features. */
static void assert_like_ref(const subsae_trainer *t, int r)
{
    const subsae_trainer *ref = vref[r];
    ck_assert_msg(same_params(subsae_trainer_sae(t), subsae_trainer_sae(ref)),
                  "%s: the model differs from the reference", variant->name);
    double a[SUBSAE_METRIC_COUNT], b[SUBSAE_METRIC_COUNT];
    ck_assert_ok(subsae_trainer_metrics(t, a, SUBSAE_METRIC_COUNT));
    ck_assert_ok(subsae_trainer_metrics(ref, b, SUBSAE_METRIC_COUNT));
    /* Every metric, bit for bit (NaN where it does not apply yet). */
    ck_assert_msg(memcmp(a, b, sizeof a) == 0, "%s: the metrics differ from the reference",
                  variant->name);
}

static void setup_variant(struct ctx *c)
{
    c->buf = memory_buffer();
    if (variant->transcoder)
        c->buf2 = target_buffer();
    c->trainer = variant_trainer(variant, variant->auxk);
}

static int call_variant_init(struct ctx *c)
{
    return subsae_trainer_init(c->trainer, c->buf, c->buf2);
}

static void verify_variant_init(struct ctx *c)
{
    assert_like_ref(c->trainer, REF_INIT);
}

static void setup_variant_pre(struct ctx *c)
{
    setup_variant(c);
    ck_assert_ok(subsae_trainer_init(c->trainer, c->buf, c->buf2));
    for (int i = 0; i < variant->pre_steps; i++)
        ck_assert_ok(variant_step(c->trainer, i));
}

static int call_variant_step(struct ctx *c)
{
    return variant_step(c->trainer, variant->pre_steps);
}

static void variant_not_stepped(struct ctx *c)
{
    assert_like_ref(c->trainer, REF_PRE);
}

static void verify_variant_step(struct ctx *c)
{
    assert_like_ref(c->trainer, REF_STEP);
}

static void setup_variant_initialised(struct ctx *c)
{
    setup_variant(c);
    ck_assert_ok(subsae_trainer_init(c->trainer, c->buf, c->buf2));
}

static int call_variant_fit(struct ctx *c)
{
    return subsae_trainer_fit(c->trainer, c->buf, c->buf2, 24);
}

static void variant_not_fitted(struct ctx *c)
{
    assert_like_ref(c->trainer, REF_INIT);
}

static void verify_variant_fit(struct ctx *c)
{
    assert_like_ref(c->trainer, REF_FIT);
}

/* Checkpoints: the pre-step state saved over by the stepped one. */
static void setup_variant_checkpoint_save(struct ctx *c)
{
    ck_assert_ok(subsae_trainer_load_checkpoint(pre_dir, &c->trainer));
    ck_assert_ok(subsae_trainer_save_checkpoint(c->trainer, ckpt_dir));
    ck_assert_ok(variant_step(c->trainer, variant->pre_steps));
}

static void variant_checkpoint_unchanged(struct ctx *c)
{
    (void)c;
    assert_dir_clean(ckpt_dir);
    subsae_trainer *back = NULL;
    ck_assert_ok(subsae_trainer_load_checkpoint(ckpt_dir, &back));
    assert_like_ref(back, REF_PRE);
    subsae_trainer_free(back);
}

static void verify_variant_checkpoint_saved(struct ctx *c)
{
    (void)c;
    assert_dir_clean(ckpt_dir);
    subsae_trainer *back = NULL;
    ck_assert_ok(subsae_trainer_load_checkpoint(ckpt_dir, &back));
    assert_like_ref(back, REF_STEP);
    subsae_trainer_free(back);
}

static void setup_variant_saved_checkpoint(struct ctx *c)
{
    (void)c;
    ck_assert_ok(subsae_trainer_save_checkpoint(vref[REF_PRE], ckpt_dir));
}

static void verify_variant_checkpoint_loaded(struct ctx *c)
{
    /* The state beyond the model (Adam moments, log thresholds, the
     * running BatchTopK threshold, the dead-feature clock) is there: the
     * next step gives the reference's bits. */
    assert_like_ref(c->made_trainer, REF_PRE);
    ck_assert_ok(variant_step(c->made_trainer, variant->pre_steps));
    assert_like_ref(c->made_trainer, REF_STEP);
}

static void drive_variant(const struct variant *v, bool checkpoints)
{
    make_variant_references(v);
    char names[5][96];
    snprintf(names[0], sizeof names[0], "subsae_trainer_init (%s)", v->name);
    snprintf(names[1], sizeof names[1], "subsae_trainer_step (%s)", v->name);
    snprintf(names[2], sizeof names[2], "subsae_trainer_fit (%s)", v->name);
    snprintf(names[3], sizeof names[3], "subsae_trainer_save_checkpoint (%s)", v->name);
    snprintf(names[4], sizeof names[4], "subsae_trainer_load_checkpoint (%s)", v->name);
    const struct scenario scenarios[] = {
        {names[0], setup_variant, call_variant_init, verify_variant_init, trainer_uninitialised},
        {names[1], setup_variant_pre, call_variant_step, verify_variant_step,
         variant_not_stepped},
        {names[2], setup_variant_initialised, call_variant_fit, verify_variant_fit,
         variant_not_fitted},
        {names[3], setup_variant_checkpoint_save, call_checkpoint_save,
         verify_variant_checkpoint_saved, variant_checkpoint_unchanged},
        {names[4], setup_variant_saved_checkpoint, call_checkpoint_load,
         verify_variant_checkpoint_loaded, NULL},
    };
    if (checkpoints)
        ck_assert_ok(subsae_trainer_save_checkpoint(vref[REF_PRE], pre_dir));
    for (size_t i = 0; i < (checkpoints ? 5u : 3u); i++)
        DRIVE(scenarios[i]);
    free_variant_references();
}

static const struct variant variants[] = {
    {"batchtopk", SUBSAE_ACT_BATCHTOPK, false, false, 1, false},
    {"jumprelu", SUBSAE_ACT_JUMPRELU, false, false, 1, false},
    {"relu + L1", SUBSAE_ACT_RELU, false, false, 0, false},
    {"topk + auxk, dead features", SUBSAE_ACT_TOPK, true, false, 1, false},
    {"topk transcoder", SUBSAE_ACT_TOPK, false, true, 0, false},
    {"relu + L1, bf16", SUBSAE_ACT_RELU, false, false, 0, true},
    {"topk + auxk, dead features, bf16", SUBSAE_ACT_TOPK, true, false, 1, true},
};
enum { N_VARIANTS = sizeof variants / sizeof variants[0] };

START_TEST(variants_fail_cleanly)
{
    make_data();
    make_target();
    fast_path("checkpoint", ckpt_dir, sizeof ckpt_dir);
    fast_path("pre", pre_dir, sizeof pre_dir);
    const struct variant *v = &variants[_i];
    drive_variant(v, v->activation == SUBSAE_ACT_JUMPRELU || v->activation == SUBSAE_ACT_BATCHTOPK);
    remove_fast_dir();
}
END_TEST

/* ---- foreign SAE directories and the folding save ------------------- */

static struct subsae__tensor_view f32_view(const char *name, const float *data, int ndim,
                                           int64_t d0, int64_t d1)
{
    struct subsae__tensor_view v = {.name = name, .dtype = SUBSAE_DTYPE_F32, .ndim = ndim,
                                    .shape = {d0, d1}, .data = data};
    v.bytes = (size_t)(ndim == 0 ? 1 : ndim == 1 ? d0 : d0 * d1) * 4;
    return v;
}

static char foreign_dir[512];
static subsae_sae *foreign_reference;

/* sparsify: sae.safetensors (encoder.weight [d_sae, d_in], encoder.bias,
 * W_dec, b_dec) + cfg.json. */
static void write_sparsify(const char *dir)
{
    static float enc[M * DIM], bias[M], dec[M * DIM], b_dec[DIM];
    for (int i = 0; i < M * DIM; i++) {
        enc[i] = (float)((i * 13) % 17) / 8.0f - 1.0f;
        dec[i] = (float)((i * 7) % 19) / 9.0f - 1.0f;
    }
    for (int f = 0; f < M; f++)
        bias[f] = 0.05f * (float)(f % 5) - 0.1f;
    for (int j = 0; j < DIM; j++)
        b_dec[j] = 0.25f * (float)j - 0.5f;
    struct subsae__tensor_view v[4] = {
        f32_view("encoder.weight", enc, 2, M, DIM), f32_view("encoder.bias", bias, 1, M, 0),
        f32_view("W_dec", dec, 2, M, DIM), f32_view("b_dec", b_dec, 1, DIM, 0)};
    char path[700];
    ck_assert_ok(subsae__make_dir(dir));
    snprintf(path, sizeof path, "%s/sae.safetensors", dir);
    ck_assert_ok(subsae__safetensors_write(path, v, 4, NULL, NULL, 0));
    harness_write_text(dir, "cfg.json",
                    "{\"activation\": \"topk\", \"expansion_factor\": 2, \"normalize_decoder\": "
                    "true, \"num_latents\": 12, \"k\": 3, \"multi_topk\": false, "
                    "\"skip_connection\": false, \"transcode\": false, \"d_in\": 6}");
}

/* lm-saes: sae_weights.safetensors (W_E [d_model, d_sae], b_E, W_D, b_D,
 * a JumpReLU log threshold, the dataset norms of two hooks) + config.json:
 * decoder-norm gating and dataset-wise normalisation (scales != 1). */
static void write_lm_saes(const char *dir)
{
    static float w_e[DIM * M], b_e[M], w_d[M * DIM], b_d[DIM], log_thr[M];
    static const float norm_in = 3.5f, norm_out = 1.25f;
    for (int i = 0; i < M * DIM; i++) {
        w_e[i] = (float)((i * 11) % 23) / 11.0f - 1.0f;
        w_d[i] = ((float)((i * 5) % 13) / 6.0f - 1.0f) * (0.3f + 0.1f * (float)(i / DIM % 4));
    }
    for (int f = 0; f < M; f++) {
        b_e[f] = 0.1f * (float)(f % 4) - 0.15f;
        log_thr[f] = -1.5f + 0.1f * (float)f;
    }
    for (int j = 0; j < DIM; j++)
        b_d[j] = 0.1f * (float)j;
    struct subsae__tensor_view v[7] = {
        f32_view("W_E", w_e, 2, DIM, M),
        f32_view("b_E", b_e, 1, M, 0),
        f32_view("W_D", w_d, 2, M, DIM),
        f32_view("b_D", b_d, 1, DIM, 0),
        f32_view("activation_function.log_jumprelu_threshold", log_thr, 1, M, 0),
        f32_view("dataset_average_activation_norm.blocks.3.hook_resid_pre", &norm_in, 0, 0, 0),
        f32_view("dataset_average_activation_norm.blocks.3.hook_mlp_out", &norm_out, 0, 0, 0)};
    char path[700];
    ck_assert_ok(subsae__make_dir(dir));
    snprintf(path, sizeof path, "%s/sae_weights.safetensors", dir);
    ck_assert_ok(subsae__safetensors_write(path, v, 7, NULL, NULL, 0));
    harness_write_text(dir, "config.json",
                    "{\"sae_type\": \"sae\", \"d_model\": 6, \"expansion_factor\": 2, "
                    "\"act_fn\": \"jumprelu\", \"norm_activation\": \"dataset-wise\", "
                    "\"use_decoder_bias\": true, \"hook_point_in\": \"blocks.3.hook_resid_pre\", "
                    "\"hook_point_out\": \"blocks.3.hook_mlp_out\", \"dtype\": \"torch.float32\"}");
}

static int call_foreign_load(struct ctx *c)
{
    subsae_sae *s = SENTINEL;
    int rc = subsae_sae_load(foreign_dir, &s);
    if (rc) {
        ck_assert_ptr_eq(s, SENTINEL);
        return rc;
    }
    subsae_sae_free(c->made_sae);
    c->made_sae = s;
    return rc;
}

static void verify_foreign_loaded(struct ctx *c)
{
    assert_same_sae(c->made_sae, foreign_reference);
    for (int o = SUBSAE_SAE_D_IN; o <= SUBSAE_SAE_RANK_BY_DECODER_NORM; o++) {
        int64_t a = -1, b = -2;
        ck_assert_ok(subsae_sae_get_int(c->made_sae, o, &a));
        ck_assert_ok(subsae_sae_get_int(foreign_reference, o, &b));
        ck_assert_int_eq(a, b);
    }
    for (int o = SUBSAE_SAE_INPUT_SCALE; o <= SUBSAE_SAE_OUTPUT_SCALE; o++) {
        double a = -1, b = -2;
        ck_assert_ok(subsae_sae_get_double(c->made_sae, o, &a));
        ck_assert_ok(subsae_sae_get_double(foreign_reference, o, &b));
        ck_assert(a == b);
    }
}

/* A JumpReLU gated by the decoder norms, both scales set and different
 * (b_dec moves into b_enc, W_dec and the threshold are divided by the
 * output scale): every branch of the fold on the way out. */
static subsae_sae *scaled_model(float shift)
{
    subsae_sae *sae = known_model(SUBSAE_ACT_JUMPRELU, shift);
    float b[DIM];
    for (int j = 0; j < DIM; j++)
        b[j] = 0.2f * (float)j - 0.4f + shift;
    ck_assert_ok(subsae_sae_set_param(sae, SUBSAE_PARAM_B_DEC, b, DIM));
    ck_assert_ok(subsae_sae_set_int(sae, SUBSAE_SAE_RANK_BY_DECODER_NORM, 1));
    ck_assert_ok(subsae_sae_set_double(sae, SUBSAE_SAE_OUTPUT_SCALE, 2.5));
    return sae;
}

static void setup_scaled_save(struct ctx *c)
{
    c->sae = scaled_model(0.0f);
    subsae_sae *old = scaled_model(0.5f);
    ck_assert_ok(subsae_sae_save(old, sae_dir));
    subsae_sae_free(old);
}

static void verify_scaled_saved(struct ctx *c)
{
    verify_sae_saved(c);
    /* The fold really moved things: b_dec is no longer subtracted. */
    subsae_sae *back = NULL;
    ck_assert_ok(subsae_sae_load(sae_dir, &back));
    int64_t apply = -1;
    ck_assert_ok(subsae_sae_get_int(back, SUBSAE_SAE_APPLY_B_DEC_TO_INPUT, &apply));
    ck_assert_int_eq(apply, 0);
    subsae_sae_free(back);
}

START_TEST(foreign_and_fold_fail_cleanly)
{
    make_data();
    fast_path("sae", sae_dir, sizeof sae_dir);
    const struct scenario save = {"subsae_sae_save (folds both scales, jumprelu)",
                                  setup_scaled_save, call_sae_save, verify_scaled_saved,
                                  sae_save_unchanged};
    DRIVE(save);
    const char *names[2] = {"subsae_sae_load (sparsify)", "subsae_sae_load (lm-saes)"};
    for (int layout = 0; layout < 2; layout++) {
        fast_path(layout ? "lm-saes" : "sparsify", foreign_dir, sizeof foreign_dir);
        if (layout)
            write_lm_saes(foreign_dir);
        else
            write_sparsify(foreign_dir);
        ck_assert_ok(subsae_sae_load(foreign_dir, &foreign_reference));
        if (layout) { /* the case is what it says */
            double scale = 0;
            int64_t gated = 0;
            ck_assert_ok(subsae_sae_get_double(foreign_reference, SUBSAE_SAE_OUTPUT_SCALE, &scale));
            ck_assert_ok(subsae_sae_get_int(foreign_reference, SUBSAE_SAE_RANK_BY_DECODER_NORM,
                                            &gated));
            ck_assert(scale != 1.0 && gated == 1);
        }
        const struct scenario load = {names[layout], setup_nothing, call_foreign_load,
                                      verify_foreign_loaded, NULL};
        DRIVE(load);
        subsae_sae_free(foreign_reference);
        foreign_reference = NULL;
    }
    remove_fast_dir();
}
END_TEST

SUBSAE_SUITE(alloc_failure)
{
    Suite *s = suite_create("alloc_failure");
    TCase *tc = harness_case(s, "every_index", 120);
    tcase_add_test(tc, buffers_fail_cleanly);
    tcase_add_test(tc, subspace_fails_cleanly);
    tcase_add_test(tc, sae_fails_cleanly);
    tcase_add_test(tc, trainer_fails_cleanly);
    tcase_add_test(tc, foreign_and_fold_fail_cleanly);
    tcase_add_loop_test(tc, variants_fail_cleanly, 0, N_VARIANTS);
    return s;
}
