/* Fuzz harnesses. Each harness is a function
 *
 *     int subsae_fuzz_<name>(const uint8_t *data, size_t size);
 *
 * that turns the bytes into files, opens them through the library and
 * exercises everything reachable from what opened. It returns 0 and must
 * never crash, leak or hang; a broken invariant (a failure without a
 * message, a status that is not a SUBSAE_E_* code, a round trip that does
 * not give the same bits back) aborts, which libFuzzer reports as a crash.
 *
 * The same functions are linked into the libFuzzer binaries (`make fuzz`,
 * through libfuzzer_main.c) and into the Check runner, which replays every
 * file of tests/fuzz/corpus/<name>/ and tests/fuzz/crashes/<name>/
 * (tests/test_fuzz_replay.c). */
#ifndef SUBSAE_FUZZ_H
#define SUBSAE_FUZZ_H

#include <stddef.h>
#include <stdint.h>

#include "subsae.h"

typedef int (*subsae_fuzz_fn)(const uint8_t *data, size_t size);

int subsae_fuzz_npy(const uint8_t *data, size_t size);
int subsae_fuzz_safetensors(const uint8_t *data, size_t size);
int subsae_fuzz_sae_dir(const uint8_t *data, size_t size);
int subsae_fuzz_checkpoint(const uint8_t *data, size_t size);

/* ---- helpers shared by the harnesses (fuzz_common.c) ---------------- */

/* A scratch directory of this process (on /dev/shm when it is writable),
 * removed at exit. */
const char *fuzz_dir(void);
/* fuzz_dir()/name into buf. */
const char *fuzz_path(const char *name, char *buf, size_t size);
/* Write bytes to a file (created or truncated); aborts if it cannot. */
void fuzz_write_file(const char *path, const void *data, size_t size);
/* Create a directory if missing and empty it of regular files. */
void fuzz_fresh_dir(const char *path);

/* Abort with a message when `cond` is false. */
#define FUZZ_ASSERT(cond) \
    ((cond) ? (void)0 : fuzz_fail(#cond, __FILE__, __LINE__))
/* The file being replayed (set by the Check replay), named in the message. */
extern const char *fuzz_current_input;
_Noreturn void fuzz_fail(const char *what, const char *file, int line);

/* A status returned by the library: SUBSAE_OK, or a SUBSAE_E_* code with a
 * non-empty message and the same last-error status. Returns rc. */
int fuzz_status(int rc);

/* Read every row (in chunks and by gathers), compute the statistics,
 * iterate batches, fit a subspace when small, skip non-finite rows, and
 * save the buffer as .npy and safetensors, reopen both and compare the
 * bits. Everything must either work or fail cleanly. */
void fuzz_exercise_buffer(subsae_buffer *buf);

/* Two files from one input: 4 bytes little-endian L, then L bytes of the
 * first file (fewer if the input ends), then the second file. */
void fuzz_split(const uint8_t *data, size_t size, const uint8_t **a, size_t *na,
                const uint8_t **b, size_t *nb);
/* The inverse: writes the 4-byte prefix and both files into out (room for
 * 4 + na + nb bytes); returns the size. */
size_t fuzz_join(const void *a, size_t na, const void *b, size_t nb, uint8_t *out);

/* The same with a tag: the prefix's top byte is the tag (0 for inputs
 * written by fuzz_join with a first file below 16 MiB, so that such inputs
 * read the same both ways) and its low 24 bits are L. */
void fuzz_split_tagged(const uint8_t *data, size_t size, unsigned *tag, const uint8_t **a,
                       size_t *na, const uint8_t **b, size_t *nb);
size_t fuzz_join_tagged(unsigned tag, const void *a, size_t na, const void *b, size_t nb,
                        uint8_t *out);

/* A hash of the bytes, for picking variations deterministically. */
uint64_t fuzz_hash(const uint8_t *data, size_t size);

#endif
