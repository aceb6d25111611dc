/* Helpers shared by the fuzz harnesses: scratch files, invariants, and the
 * buffer exerciser every activation-file harness ends in. */
#define _GNU_SOURCE
#include "fuzz.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *fuzz_current_input;

_Noreturn void fuzz_fail(const char *what, const char *file, int line)
{
    fprintf(stderr, "fuzz invariant broken at %s:%d: %s (last error: %d %s)%s%s\n", file, line,
            what, subsae_last_error_status(), subsae_last_error(),
            fuzz_current_input ? "; input " : "", fuzz_current_input ? fuzz_current_input : "");
    abort();
}

/* ---- scratch files -------------------------------------------------- */

static char scratch[256];
static pid_t scratch_owner;

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    (void)type;
    (void)ftw;
    remove(path);
    return 0;
}

static void remove_scratch(void)
{
    if (scratch[0] && scratch_owner == getpid())
        nftw(scratch, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

const char *fuzz_dir(void)
{
    /* Check forks a process per test: each gets its own directory. */
    if (scratch_owner != getpid()) {
        scratch_owner = getpid();
        const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(scratch, sizeof scratch, "%s/subsae-fuzz-XXXXXX", base);
        if (!mkdtemp(scratch)) {
            perror("fuzz: mkdtemp");
            abort();
        }
        atexit(remove_scratch);
    }
    return scratch;
}

const char *fuzz_path(const char *name, char *buf, size_t size)
{
    snprintf(buf, size, "%s/%s", fuzz_dir(), name);
    return buf;
}

void fuzz_write_file(const char *path, const void *data, size_t size)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        perror(path);
        abort();
    }
    const unsigned char *p = data;
    while (size > 0) {
        ssize_t n = write(fd, p, size);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            perror(path);
            abort();
        }
        p += n;
        size -= (size_t)n;
    }
    close(fd);
}

void fuzz_fresh_dir(const char *path)
{
    if (mkdir(path, 0700) != 0 && errno != EEXIST) {
        perror(path);
        abort();
    }
    DIR *d = opendir(path);
    if (!d) {
        perror(path);
        abort();
    }
    struct dirent *e;
    char entry[1024];
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        snprintf(entry, sizeof entry, "%s/%s", path, e->d_name);
        unlink(entry);
    }
    closedir(d);
}

uint64_t fuzz_hash(const uint8_t *data, size_t size)
{
    uint64_t h = 0xcbf29ce484222325u; /* FNV-1a */
    for (size_t i = 0; i < size; i++)
        h = (h ^ data[i]) * 0x100000001b3u;
    return h;
}

void fuzz_split(const uint8_t *data, size_t size, const uint8_t **a, size_t *na,
                const uint8_t **b, size_t *nb)
{
    size_t length = 0;
    if (size >= 4)
        length = (size_t)data[0] | (size_t)data[1] << 8 | (size_t)data[2] << 16 |
                 (size_t)data[3] << 24;
    size_t head = size < 4 ? size : 4;
    if (length > size - head)
        length = size - head;
    *a = data + head;
    *na = length;
    *b = data + head + length;
    *nb = size - head - length;
}


size_t fuzz_join(const void *a, size_t na, const void *b, size_t nb, uint8_t *out)
{
    for (int i = 0; i < 4; i++)
        out[i] = (uint8_t)(na >> (8 * i));
    memcpy(out + 4, a, na);
    memcpy(out + 4 + na, b, nb);
    return 4 + na + nb;
}

void fuzz_split_tagged(const uint8_t *data, size_t size, unsigned *tag, const uint8_t **a,
                       size_t *na, const uint8_t **b, size_t *nb)
{
    *tag = size >= 4 ? data[3] : 0;
    size_t length = 0;
    if (size >= 4)
        length = (size_t)data[0] | (size_t)data[1] << 8 | (size_t)data[2] << 16;
    size_t head = size < 4 ? size : 4;
    if (length > size - head)
        length = size - head;
    *a = data + head;
    *na = length;
    *b = data + head + length;
    *nb = size - head - length;
}

size_t fuzz_join_tagged(unsigned tag, const void *a, size_t na, const void *b, size_t nb,
                        uint8_t *out)
{
    if (na >= (size_t)1 << 24) {
        fprintf(stderr, "fuzz_join_tagged: first file of %zu bytes beyond 2^24\n", na);
        abort();
    }
    size_t n = fuzz_join(a, na, b, nb, out);
    out[3] = (uint8_t)tag;
    return n;
}

/* ---- invariants ----------------------------------------------------- */

int fuzz_status(int rc)
{
    if (rc == SUBSAE_OK)
        return rc;
    FUZZ_ASSERT(rc <= SUBSAE_E_INVALID && rc >= SUBSAE_E_CANCELLED);
    FUZZ_ASSERT(subsae_last_error_status() == rc);
    FUZZ_ASSERT(subsae_last_error()[0] != '\0');
    return rc;
}

/* ---- the buffer exerciser ------------------------------------------- */

static void *xmalloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    FUZZ_ASSERT(p != NULL);
    return p;
}

/* Reopen a file the library just wrote and require the same rows back. */
static void check_round_trip(const char *path, const char *tensor, const float *rows,
                             int64_t n_rows, int64_t dim)
{
    subsae_buffer *back = NULL;
    FUZZ_ASSERT(fuzz_status(subsae_buffer_open(path, tensor, &back)) == SUBSAE_OK);
    FUZZ_ASSERT(subsae_buffer_rows(back) == n_rows);
    FUZZ_ASSERT(subsae_buffer_dim(back) == dim);
    if (n_rows > 0) {
        float *again = xmalloc((size_t)(n_rows * dim) * sizeof *again);
        FUZZ_ASSERT(fuzz_status(subsae_buffer_read(back, 0, n_rows, again, dim)) == SUBSAE_OK);
        FUZZ_ASSERT(memcmp(again, rows, (size_t)(n_rows * dim) * sizeof *again) == 0);
        free(again);
    }
    subsae_buffer_free(back);
}

static void exercise_subspace(const subsae_buffer *buf, int64_t rows, int64_t dim, int method)
{
    subsae_subspace *s = NULL;
    FUZZ_ASSERT(fuzz_status(subsae_subspace_create(&s)) == SUBSAE_OK);
    FUZZ_ASSERT(subsae_subspace_set_int(s, SUBSAE_SUBSPACE_METHOD, method) == SUBSAE_OK);
    FUZZ_ASSERT(subsae_subspace_set_int(s, SUBSAE_SUBSPACE_BATCH_ROWS, 5) == SUBSAE_OK);
    if (method == SUBSAE_METHOD_RANDOMIZED)
        FUZZ_ASSERT(subsae_subspace_set_int(s, SUBSAE_SUBSPACE_RANK, dim < 2 ? dim : 2) ==
                    SUBSAE_OK);
    int rc = fuzz_status(subsae_subspace_fit(s, buf));
    if (rc == SUBSAE_OK) {
        double total = -1, v[64];
        int64_t found = 0, r = -1;
        int exact = -1;
        FUZZ_ASSERT(subsae_subspace_total_variance(s, &total) == SUBSAE_OK);
        FUZZ_ASSERT(subsae_subspace_get_int(s, SUBSAE_SUBSPACE_RANK_FOUND, &found) == SUBSAE_OK);
        FUZZ_ASSERT(found >= 1 && found <= dim && found <= 64);
        FUZZ_ASSERT(subsae_subspace_variances(s, v, found) == SUBSAE_OK);
        FUZZ_ASSERT(fuzz_status(subsae_subspace_effective_rank(s, 0.99, &r, &exact)) ==
                    SUBSAE_OK);
        FUZZ_ASSERT(r >= 0 && r <= dim);
        float *basis = xmalloc((size_t)(found * dim) * sizeof *basis);
        float *mean = xmalloc((size_t)dim * sizeof *mean);
        FUZZ_ASSERT(subsae_subspace_basis(s, found, basis, dim) == SUBSAE_OK);
        FUZZ_ASSERT(subsae_subspace_mean(s, mean) == SUBSAE_OK);
        float coords[64];
        FUZZ_ASSERT(fuzz_status(subsae_subspace_project(s, mean, 1, dim, found, coords, found)) ==
                    SUBSAE_OK);
        free(basis);
        free(mean);
    } else {
        FUZZ_ASSERT(rc != SUBSAE_E_INVALID || rows < 2);
    }
    subsae_subspace_free(s);
}

void fuzz_exercise_buffer(subsae_buffer *buf)
{
    int64_t rows = subsae_buffer_rows(buf), dim = subsae_buffer_dim(buf);
    FUZZ_ASSERT(rows >= 0 && dim >= 1 && dim <= INT32_MAX);

    /* Sources describe themselves. */
    int64_t sources = subsae_buffer_source_count(buf), described = 0;
    FUZZ_ASSERT(sources >= 1);
    for (int64_t i = 0; i < sources; i++) {
        int format = -1, dtype = -1, ndim = -1;
        int64_t shape[8] = {0};
        const char *path = NULL;
        FUZZ_ASSERT(subsae_buffer_source_info(buf, i, &path, &format, &dtype, &ndim, shape, 8) ==
                    SUBSAE_OK);
        FUZZ_ASSERT(ndim >= 2 && ndim <= 8 && shape[ndim - 1] == dim);
        int64_t n = 1;
        for (int d = 0; d < ndim - 1; d++)
            FUZZ_ASSERT(shape[d] >= 0 && !__builtin_mul_overflow(n, shape[d], &n));
        described += n;
    }
    FUZZ_ASSERT(described == rows);
    FUZZ_ASSERT(subsae_buffer_source_info(buf, sources, NULL, NULL, NULL, NULL, NULL, 0) ==
                SUBSAE_E_RANGE);

    /* Statistics need no memory proportional to dim when there are no rows
     * (a tiny file may declare a huge width). */
    int64_t bad_values = -1, first_bad = -2;
    double mean_norm = -1;
    FUZZ_ASSERT(fuzz_status(subsae_buffer_stats(buf, NULL, &mean_norm, &bad_values,
                                                &first_bad)) == SUBSAE_OK);
    FUZZ_ASSERT(bad_values >= 0 && first_bad >= -1 && first_bad < rows);
    FUZZ_ASSERT((bad_values == 0) == (first_bad == -1));
    FUZZ_ASSERT(mean_norm >= 0 || isnan(mean_norm) || isinf(mean_norm));
    float probe[1];
    FUZZ_ASSERT(subsae_buffer_read(buf, rows, 1, probe, dim) == SUBSAE_E_RANGE);
    if (rows == 0) {
        FUZZ_ASSERT(fuzz_status(subsae_buffer_read(buf, 0, 0, probe, dim)) == SUBSAE_OK);
        int64_t skipped = -1;
        FUZZ_ASSERT(fuzz_status(subsae_buffer_skip_nonfinite(buf, &skipped)) == SUBSAE_OK);
        FUZZ_ASSERT(skipped == 0);
        return;
    }

    /* Every row one by one, then the same rows in chunks and by gathers. */
    size_t floats = (size_t)(rows * dim);
    float *one = xmalloc(floats * sizeof *one);
    float *other = xmalloc(floats * sizeof *other);
    char *finite = xmalloc((size_t)rows);
    int64_t n_finite = 0, first_nonfinite = -1;
    for (int64_t r = 0; r < rows; r++) {
        int rc = fuzz_status(subsae_buffer_read(buf, r, 1, one + r * dim, dim));
        FUZZ_ASSERT(rc == SUBSAE_OK || rc == SUBSAE_E_NONFINITE);
        finite[r] = rc == SUBSAE_OK;
        n_finite += finite[r];
        if (!finite[r] && first_nonfinite < 0)
            first_nonfinite = r;
    }
    FUZZ_ASSERT(first_nonfinite == first_bad);
    float *mean = xmalloc((size_t)dim * sizeof *mean);
    FUZZ_ASSERT(subsae_buffer_stats(buf, mean, NULL, NULL, NULL) == SUBSAE_OK);
    free(mean);
    enum { CHUNK = 3 };
    for (int64_t r = 0; r < rows; r += CHUNK) {
        int64_t n = rows - r < CHUNK ? rows - r : CHUNK;
        bool all = true;
        for (int64_t i = r; i < r + n; i++)
            all = all && finite[i];
        int rc = fuzz_status(subsae_buffer_read(buf, r, n, other + r * dim, dim));
        FUZZ_ASSERT(rc == (all ? SUBSAE_OK : SUBSAE_E_NONFINITE));
        if (all)
            FUZZ_ASSERT(memcmp(other + r * dim, one + r * dim, (size_t)(n * dim) * sizeof *one) ==
                        0);
    }
    int64_t *order = xmalloc((size_t)rows * sizeof *order);
    int64_t kept = 0;
    for (int64_t r = rows - 1; r >= 0; r--)
        if (finite[r])
            order[kept++] = r;
    FUZZ_ASSERT(fuzz_status(subsae_buffer_gather(buf, order, kept, other, dim)) == SUBSAE_OK);
    for (int64_t i = 0; i < kept; i++)
        FUZZ_ASSERT(memcmp(other + i * dim, one + order[i] * dim, (size_t)dim * sizeof *one) ==
                    0);

    /* One epoch of shuffled batches, and a bit more. */
    subsae_batches *it = NULL;
    FUZZ_ASSERT(fuzz_status(subsae_batches_create(buf, 4, (uint64_t)rows, SUBSAE_BATCH_SHUFFLE,
                                                  &it)) == SUBSAE_OK);
    for (int64_t b = 0; b < rows / 4 + 2; b++) {
        int64_t n = 0, epoch = 0;
        int rc = fuzz_status(subsae_batches_next(it, other, dim, &n, &epoch));
        FUZZ_ASSERT(rc == SUBSAE_OK || rc == SUBSAE_E_NONFINITE);
        if (rc) /* skip past the bad batch */
            FUZZ_ASSERT(subsae_batches_next_indices(it, order, &n, &epoch) == SUBSAE_OK);
    }
    subsae_batches_free(it);

    /* A subspace when the data is small and finite. */
    if (n_finite == rows && rows >= 2 && rows <= 1024 && dim <= 16) {
        exercise_subspace(buf, rows, dim, SUBSAE_METHOD_EXACT);
        exercise_subspace(buf, rows, dim, SUBSAE_METHOD_RANDOMIZED);
    }

    /* Leave out the non-finite rows: what remains reads back in order. */
    int64_t skipped = -1;
    FUZZ_ASSERT(fuzz_status(subsae_buffer_skip_nonfinite(buf, &skipped)) == SUBSAE_OK);
    FUZZ_ASSERT(skipped == rows - n_finite && subsae_buffer_rows(buf) == n_finite);
    kept = 0;
    for (int64_t r = 0; r < rows; r++)
        if (finite[r])
            memmove(one + kept++ * dim, one + r * dim, (size_t)dim * sizeof *one);
    if (n_finite > 0) {
        FUZZ_ASSERT(fuzz_status(subsae_buffer_read(buf, 0, n_finite, other, dim)) == SUBSAE_OK);
        FUZZ_ASSERT(memcmp(other, one, (size_t)(n_finite * dim) * sizeof *one) == 0);
    }

    /* Written back out and reopened, the rows come back bit for bit. */
    char path[512];
    fuzz_path("round-trip.npy", path, sizeof path);
    FUZZ_ASSERT(fuzz_status(subsae_buffer_save_npy(buf, path, SUBSAE_DTYPE_F32)) == SUBSAE_OK);
    check_round_trip(path, NULL, one, n_finite, dim);
    fuzz_path("round-trip.safetensors", path, sizeof path);
    FUZZ_ASSERT(fuzz_status(subsae_buffer_save_safetensors(buf, path, "x", SUBSAE_DTYPE_F32)) ==
                SUBSAE_OK);
    check_round_trip(path, "x", one, n_finite, dim);
    int rc = fuzz_status(subsae_buffer_save_safetensors(buf, path, "x", SUBSAE_DTYPE_BF16));
    FUZZ_ASSERT(rc == SUBSAE_OK || rc == SUBSAE_E_RANGE);

    free(order);
    free(finite);
    free(other);
    free(one);
}
