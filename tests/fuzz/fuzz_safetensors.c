/* Fuzz harness: a safetensors file through the internal container reader
 * (every tensor view, every byte of it touched, lookups by name, metadata)
 * and through subsae_buffer_open, both for the only tensor (NULL name) and
 * for each named tensor. */
#include "fuzz.h"
#include "io.h"

#include <string.h>

static void exercise_named(const char *path, const char *tensor)
{
    subsae_buffer *buf = NULL;
    int rc = fuzz_status(subsae_buffer_open(path, tensor, &buf));
    FUZZ_ASSERT((rc == SUBSAE_OK) == (buf != NULL));
    if (buf)
        fuzz_exercise_buffer(buf);
    subsae_buffer_free(buf);
}

int subsae_fuzz_safetensors(const uint8_t *data, size_t size)
{
    char path[512];
    fuzz_path("input.safetensors", path, sizeof path);
    fuzz_write_file(path, data, size);

    subsae__safetensors *st = NULL;
    int rc = fuzz_status(subsae__safetensors_open(path, &st));
    FUZZ_ASSERT((rc == SUBSAE_OK) == (st != NULL));
    if (st) {
        int64_t n = subsae__safetensors_count(st);
        FUZZ_ASSERT(n >= 0);
        volatile unsigned sum = 0;
        for (int64_t i = 0; i < n; i++) {
            const struct subsae__tensor_view *v = subsae__safetensors_tensor(st, i);
            FUZZ_ASSERT(v && v->name && v->ndim >= 0 && v->ndim <= 8);
            FUZZ_ASSERT(subsae__safetensors_find(st, v->name) == v);
            const unsigned char *bytes = v->data;
            for (size_t b = 0; b < v->bytes; b++)
                sum += bytes[b];
        }
        (void)sum;
        FUZZ_ASSERT(subsae__safetensors_tensor(st, n) == NULL);
        FUZZ_ASSERT(subsae__safetensors_find(st, "__metadata__") == NULL);
        (void)subsae__safetensors_metadata(st, "format");
        /* Up to four named tensors as buffers (names copied: st closes). */
        char names[4][256];
        int64_t named = 0;
        for (int64_t i = 0; i < n && named < 4; i++) {
            const char *name = subsae__safetensors_tensor(st, i)->name;
            if (strlen(name) < sizeof names[0])
                strcpy(names[named++], name);
        }
        subsae__safetensors_close(st);
        for (int64_t i = 0; i < named; i++)
            exercise_named(path, names[i]);
    }
    exercise_named(path, NULL);
    return 0;
}
