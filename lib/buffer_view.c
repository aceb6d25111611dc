/* subsae_buffer_view: a buffer over a run of another buffer's rows that
 * shares its storage (used to hold out the last rows of a file for
 * evaluation). The view's sources point into the parent's memory or
 * mappings and own nothing but their path strings. */
#include "buffer.h"

#include <string.h>

int subsae_buffer_view(const subsae_buffer *buf, int64_t first_row, int64_t n_rows,
                       subsae_buffer **out)
{
    static const char *fn = "subsae_buffer_view";
    SUBSAE__NOT_NULL(fn, buf);
    SUBSAE__NOT_NULL(fn, out);
    const int64_t rows = subsae_buffer_rows(buf);
    if (first_row < 0 || n_rows < 0 || first_row > rows || n_rows > rows - first_row)
        return subsae__fail(SUBSAE_E_RANGE, SUBSAE_REASON_INDEX_OUT_OF_RANGE,
                            "%s: rows [%lld, %lld) are outside the buffer's %lld rows", fn,
                            (long long)first_row, (long long)(first_row + n_rows),
                            (long long)rows);
    /* Stored rows [begin, end) behind the logical rows. */
    int64_t begin = 0, end = 0;
    if (n_rows > 0) {
        begin = subsae__buffer_stored_row(buf, first_row);
        end = subsae__buffer_stored_row(buf, first_row + n_rows - 1) + 1;
    }
    int64_t count = 0;
    for (int64_t s = 0; s < buf->n_sources; s++)
        count += buf->first_row[s] < end && buf->first_row[s + 1] > begin;
    subsae_buffer *view;
    int rc = subsae__buffer_new(buf->dim, count, &view);
    if (rc)
        return rc;
    int64_t at = 0;
    for (int64_t s = 0; s < buf->n_sources && n_rows > 0; s++) {
        const struct subsae__source *src = &buf->sources[s];
        int64_t lo = buf->first_row[s] > begin ? buf->first_row[s] : begin;
        int64_t hi = buf->first_row[s + 1] < end ? buf->first_row[s + 1] : end;
        if (lo >= hi)
            continue;
        struct subsae__source *dst = &view->sources[at++];
        *dst = *src;
        dst->owned = NULL;
        dst->map = NULL;
        dst->map_size = 0;
        dst->path = NULL;
        dst->rows = hi - lo;
        dst->data = src->data + (lo - buf->first_row[s]) * src->row_stride_bytes;
        if (src->path && !(dst->path = subsae__strdup(src->path))) {
            subsae_buffer_free(view);
            return subsae__fail_nomem("view path", strlen(src->path) + 1);
        }
    }
    subsae__buffer_index(view);
    view->skip_nonfinite = buf->skip_nonfinite;
    int64_t skipped = 0;
    for (int64_t i = 0; i < buf->n_skipped; i++)
        skipped += buf->skipped[i] >= begin && buf->skipped[i] < end;
    if (skipped > 0) {
        view->skipped = subsae__malloc((size_t)skipped * sizeof *view->skipped);
        if (!view->skipped) {
            subsae_buffer_free(view);
            return subsae__fail_nomem("view skip list", (size_t)skipped * 8);
        }
        for (int64_t i = 0; i < buf->n_skipped; i++)
            if (buf->skipped[i] >= begin && buf->skipped[i] < end)
                view->skipped[view->n_skipped++] = buf->skipped[i] - begin;
    }
    *out = view;
    return SUBSAE_OK;
}
