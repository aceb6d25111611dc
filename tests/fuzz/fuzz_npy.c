/* Fuzz harness: one activation file through subsae_buffer_open (the format
 * is told by content, so .npy seeds mostly reach the .npy reader), then the
 * same file twice as shards. */
#include "fuzz.h"

#include <stddef.h>

int subsae_fuzz_npy(const uint8_t *data, size_t size)
{
    char path[512];
    fuzz_path("input.npy", path, sizeof path);
    fuzz_write_file(path, data, size);

    subsae_buffer *buf = NULL;
    int rc = fuzz_status(subsae_buffer_open(path, NULL, &buf));
    FUZZ_ASSERT((rc == SUBSAE_OK) == (buf != NULL));
    if (rc != SUBSAE_OK)
        return 0;
    int64_t rows = subsae_buffer_rows(buf), dim = subsae_buffer_dim(buf);
    fuzz_exercise_buffer(buf);
    subsae_buffer_free(buf);

    const char *paths[2] = {path, path};
    buf = NULL;
    FUZZ_ASSERT(fuzz_status(subsae_buffer_open_shards(paths, 2, NULL, &buf)) == SUBSAE_OK);
    FUZZ_ASSERT(subsae_buffer_rows(buf) == 2 * rows && subsae_buffer_dim(buf) == dim);
    fuzz_exercise_buffer(buf);
    subsae_buffer_free(buf);
    return 0;
}
