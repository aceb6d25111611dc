/* Replays every seed of tests/fuzz/corpus/<name>/ and every reproducer ever
 * saved in tests/fuzz/crashes/<name>/ through the fuzz harness functions
 * (tests/fuzz/fuzz_*.c), so that a bug a fuzzer once found stays fixed
 * and the harnesses themselves keep working without clang. A harness
 * aborts on a broken invariant; Check reports that as an error naming the
 * test, and the file being replayed is printed first. */
#include "fuzz/fuzz.h"
#include "harness.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const struct {
    const char *name;
    subsae_fuzz_fn fn;
    int min_seeds; /* the seed corpus must not silently disappear */
} targets[] = {
    {"npy", subsae_fuzz_npy, 8},
    {"safetensors", subsae_fuzz_safetensors, 8},
    {"sae_dir", subsae_fuzz_sae_dir, 15},
    {"checkpoint", subsae_fuzz_checkpoint, 8},
};
enum { N_TARGETS = sizeof targets / sizeof targets[0] };

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Run fn on every regular file of dir (sorted by name); returns how many,
 * -1 when the directory does not exist. */
static int replay_dir(const char *dir, subsae_fuzz_fn fn)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    char *names[4096];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < 4096)
        if (e->d_name[0] != '.' && strcmp(e->d_name, "README.md") != 0)
            names[n++] = strdup(e->d_name);
    closedir(d);
    qsort(names, (size_t)n, sizeof names[0], compare_names);
    int replayed = 0;
    for (int i = 0; i < n; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        struct stat st;
        FILE *f = NULL;
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode))
            f = fopen(path, "rb");
        if (f) {
            size_t size = (size_t)st.st_size;
            uint8_t *data = malloc(size ? size : 1);
            ck_assert_ptr_nonnull(data);
            ck_assert_uint_eq(fread(data, 1, size, f), size);
            fclose(f);
            fuzz_current_input = path; /* named by a broken invariant */
            ck_assert_int_eq(fn(data, size), 0);
            fuzz_current_input = NULL;
            free(data);
            replayed++;
        }
        free(names[i]);
    }
    return replayed;
}

START_TEST(replay_corpus_and_crashes)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/tests/fuzz/corpus/%s", harness_source_dir(), targets[_i].name);
    int seeds = replay_dir(dir, targets[_i].fn);
    ck_assert_msg(seeds >= targets[_i].min_seeds, "%s: %d seed files, expected at least %d", dir,
                  seeds, targets[_i].min_seeds);
    snprintf(dir, sizeof dir, "%s/tests/fuzz/crashes/%s", harness_source_dir(), targets[_i].name);
    int crashes = replay_dir(dir, targets[_i].fn);
    fprintf(stderr, "fuzz replay %-12s %3d seeds, %3d crash reproducers\n", targets[_i].name,
            seeds, crashes < 0 ? 0 : crashes);
}
END_TEST

SUBSAE_SUITE(fuzz_replay)
{
    Suite *s = suite_create("fuzz_replay");
    TCase *tc = harness_case(s, "replay", 120);
    tcase_add_loop_test(tc, replay_corpus_and_crashes, 0, N_TARGETS);
    return s;
}
