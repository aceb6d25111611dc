/* safetensors files: a validating reader over a read-only mapping and a
 * crash-safe writer. The JSON header is parsed by Jansson, a maintained
 * parser, rather than by hand.
 *
 * Layout (huggingface/safetensors): an 8-byte little-endian header length
 * N, N bytes of JSON {"name": {"dtype": "F32", "shape": [..],
 * "data_offsets": [begin, end]}, ..., "__metadata__": {"k": "v"}}, then the
 * data section; offsets are relative to its start. The reader checks every
 * field: sizes, dtype names, shape overflow, offsets inside the data
 * section, aligned to the element size, consistent with dtype x shape, and
 * covering the data section exactly (sorted, no overlap, no gap). */
#include "buffer.h"
#include "dtype.h"
#include "io.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* The reference implementation's limit on the header size. */
enum { MAX_HEADER_BYTES = 100000000 };
static const char metadata_key[] = SUBSAE__SAFETENSORS_METADATA_KEY;

struct subsae__safetensors {
    char *path;
    void *map;
    size_t map_size;
    json_t *root; /* names and metadata point into it */
    int64_t n_tensors;
    struct subsae__tensor_view *tensors; /* sorted by offset (file order) */
    int64_t n_metadata;
    const char **metadata_keys;
    const char **metadata_values;
};

/* Every dtype name of the safetensors format. The four float types (and
 * I32, for index outputs) map to the public SUBSAE_DTYPE_* codes; the
 * others are read as opaque bytes only (foreign SAE files may carry, for
 * example, I64 step counters or U8 masks next to their weights): their
 * codes are SUBSAE__DTYPE_OPAQUE + their index here. `bits` is the element
 * size; the sub-byte types must fill whole bytes. */
static const struct {
    const char *name;
    int dtype; /* public code, or -1 for an opaque type */
    int bits;
} dtype_names[] = {
    {"F32", SUBSAE_DTYPE_F32, 32},
    {"F16", SUBSAE_DTYPE_F16, 16},
    {"BF16", SUBSAE_DTYPE_BF16, 16},
    {"F64", SUBSAE_DTYPE_F64, 64},
    {"I32", SUBSAE_DTYPE_I32, 32},
    {"BOOL", -1, 8},
    {"U8", -1, 8},
    {"I8", -1, 8},
    {"I16", -1, 16},
    {"U16", -1, 16},
    {"U32", -1, 32},
    {"I64", -1, 64},
    {"U64", -1, 64},
    {"C64", -1, 64},
    {"F8_E5M2", -1, 8},
    {"F8_E4M3", -1, 8},
    {"F8_E8M0", -1, 8},
    {"F6_E2M3", -1, 6},
    {"F6_E3M2", -1, 6},
    {"F4", -1, 4},
};
enum { N_DTYPE_NAMES = sizeof dtype_names / sizeof dtype_names[0] };

static int code_of(size_t i)
{
    return dtype_names[i].dtype >= 0 ? dtype_names[i].dtype : SUBSAE__DTYPE_OPAQUE + (int)i;
}

static int dtype_from_name(const char *name)
{
    for (size_t i = 0; i < N_DTYPE_NAMES; i++)
        if (!strcmp(name, dtype_names[i].name))
            return code_of(i);
    return -1;
}

static int dtype_index(int dtype)
{
    for (size_t i = 0; i < N_DTYPE_NAMES; i++)
        if (dtype == code_of(i))
            return (int)i;
    return -1;
}

static const char *dtype_to_name(int dtype)
{
    int i = dtype_index(dtype);
    return i >= 0 ? dtype_names[i].name : NULL;
}

const char *subsae__safetensors_dtype_name(int dtype)
{
    return dtype_to_name(dtype);
}

/* Bits per element (0 for an unknown code). */
static size_t dtype_bits(int dtype)
{
    int i = dtype_index(dtype);
    return i >= 0 ? (size_t)dtype_names[i].bits : 0;
}

/* Alignment unit of an element in bytes (1 for sub-byte types). */
static size_t element_bytes(int dtype)
{
    size_t bits = dtype_bits(dtype);
    return bits >= 8 ? bits / 8 : 1;
}

/* Bytes of `count` elements into *bytes; false on overflow or when a
 * sub-byte type does not fill whole bytes (*partial set). */
static bool tensor_bytes(int dtype, size_t count, size_t *bytes, bool *partial)
{
    size_t bits = dtype_bits(dtype), total;
    *partial = false;
    if (bits % 8 == 0)
        return subsae__mul_size(count, bits / 8, bytes);
    if (!subsae__mul_size(count, bits, &total))
        return false;
    *partial = total % 8 != 0;
    *bytes = total / 8;
    return true;
}

/* Free what a parse produced (not the mapping, not the path). */
static void clear_parse(subsae__safetensors *st)
{
    json_decref(st->root);
    subsae__free(st->tensors);
    subsae__free(st->metadata_keys);
    subsae__free(st->metadata_values);
    st->root = NULL;
    st->tensors = NULL;
    st->metadata_keys = st->metadata_values = NULL;
    st->n_tensors = st->n_metadata = 0;
}

static int compare_views(const void *a, const void *b)
{
    const struct subsae__tensor_view *x = a, *y = b;
    const unsigned char *xa = x->data, *ya = y->data;
    if (xa != ya)
        return xa < ya ? -1 : 1;
    if (x->bytes != y->bytes)
        return x->bytes < y->bytes ? -1 : 1;
    return strcmp(x->name, y->name);
}

static bool is_count(const json_t *v)
{
    return json_is_integer(v) && json_integer_value(v) >= 0;
}

/* Validate one tensor entry and fill `view` (data relative to `section`). */
static int parse_tensor(const char *path, const char *name, json_t *entry,
                        const unsigned char *section, size_t section_bytes,
                        struct subsae__tensor_view *view)
{
    if (!json_is_object(entry))
        return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_HEADER,
                            "%s: tensor '%s' is not a JSON object", path, name);
    json_t *jdtype = json_object_get(entry, "dtype");
    json_t *jshape = json_object_get(entry, "shape");
    json_t *joffsets = json_object_get(entry, "data_offsets");
    if (!json_is_string(jdtype) || !json_is_array(jshape) || !json_is_array(joffsets))
        return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_HEADER,
                            "%s: tensor '%s' needs \"dtype\" (string), \"shape\" (array) and "
                            "\"data_offsets\" (array)",
                            path, name);
    int dtype = dtype_from_name(json_string_value(jdtype));
    if (dtype < 0)
        return subsae__fail(SUBSAE_E_UNSUPPORTED, SUBSAE_REASON_UNSUPPORTED_DTYPE,
                            "%s: tensor '%s' has dtype \"%s\", which is not a safetensors "
                            "dtype",
                            path, name, json_string_value(jdtype));
    size_t ndim = json_array_size(jshape);
    if (ndim > SUBSAE__MAX_DIMS)
        return subsae__fail(SUBSAE_E_UNSUPPORTED, SUBSAE_REASON_BAD_SHAPE,
                            "%s: tensor '%s' has %zu dimensions; at most %d are supported",
                            path, name, ndim, SUBSAE__MAX_DIMS);
    size_t element = element_bytes(dtype), count = 1, bytes = 0;
    bool overflow = false, partial = false;
    for (size_t i = 0; i < ndim; i++) {
        json_t *d = json_array_get(jshape, i);
        if (!is_count(d))
            return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_HEADER,
                                "%s: tensor '%s': shape[%zu] is not a non-negative integer",
                                path, name, i);
        view->shape[i] = (int64_t)json_integer_value(d);
        if (!subsae__mul_size(count, (size_t)view->shape[i], &count))
            overflow = true;
    }
    if (overflow || !tensor_bytes(dtype, count, &bytes, &partial) || bytes > (size_t)INT64_MAX)
        return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_SHAPE_OVERFLOW,
                            "%s: tensor '%s': the product of its shape overflows", path, name);
    if (partial)
        return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_DTYPE_SHAPE_MISMATCH,
                            "%s: tensor '%s': %zu elements of %s do not fill whole bytes", path,
                            name, count, json_string_value(jdtype));
    if (json_array_size(joffsets) != 2 || !is_count(json_array_get(joffsets, 0)) ||
        !is_count(json_array_get(joffsets, 1)))
        return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_HEADER,
                            "%s: tensor '%s': data_offsets is not [begin, end] of "
                            "non-negative integers",
                            path, name);
    uint64_t begin = (uint64_t)json_integer_value(json_array_get(joffsets, 0));
    uint64_t end = (uint64_t)json_integer_value(json_array_get(joffsets, 1));
    if (begin > end || end > section_bytes)
        return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_OFFSETS_OUT_OF_RANGE,
                            "%s: tensor '%s': data_offsets [%llu, %llu] are outside the data "
                            "section of %zu bytes",
                            path, name, (unsigned long long)begin, (unsigned long long)end,
                            section_bytes);
    if (end - begin != bytes)
        return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_DTYPE_SHAPE_MISMATCH,
                            "%s: tensor '%s': dtype %s and its shape need %zu bytes but "
                            "data_offsets span %llu",
                            path, name, json_string_value(jdtype), bytes,
                            (unsigned long long)(end - begin));
    if (begin % element != 0)
        return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_OFFSETS_MISALIGNED,
                            "%s: tensor '%s': offset %llu is not a multiple of its element "
                            "size %zu",
                            path, name, (unsigned long long)begin, element);
    view->name = name;
    view->dtype = dtype;
    view->ndim = (int)ndim;
    view->data = section + begin;
    view->bytes = bytes;
    return SUBSAE_OK;
}

/* Parse and validate the mapped file into st (root, tensors, metadata). */
static int parse(const char *path, const unsigned char *map, size_t size,
                 subsae__safetensors *st)
{
    if (size < 8)
        return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_TRUNCATED_HEADER,
                            "%s: safetensors header truncated: the file has only %zu bytes",
                            path, size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = n << 8 | map[i];
    if (n > size - 8)
        return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_HEADER_PAST_EOF,
                            "%s: safetensors header length %llu goes past the end of the "
                            "file (%zu bytes)",
                            path, (unsigned long long)n, size);
    if (n == 0 || map[8] != '{')
        return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_MAGIC,
                            "%s: not a safetensors file: the header does not start with '{'",
                            path);
    if (n > MAX_HEADER_BYTES)
        return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_HEADER,
                            "%s: safetensors header of %llu bytes exceeds the %d-byte limit",
                            path, (unsigned long long)n, MAX_HEADER_BYTES);
    json_error_t error;
    errno = 0;
    st->root = json_loadb((const char *)map + 8, (size_t)n, JSON_REJECT_DUPLICATES, &error);
    /* Jansson does not always say that it ran out of memory (a string it
     * could not grow shows up as a syntax error), but malloc sets errno to
     * ENOMEM (POSIX; subsae__malloc too when a test makes it fail). */
    if (!st->root && (errno == ENOMEM || json_error_code(&error) == json_error_out_of_memory))
        return subsae__fail_nomem("safetensors header JSON", (size_t)n);
    if (!st->root)
        return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_HEADER,
                            "%s: safetensors header is not valid JSON: %s (line %d, column "
                            "%d)",
                            path, error.text, error.line, error.column);
    if (!json_is_object(st->root))
        return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_HEADER,
                            "%s: safetensors header is not a JSON object", path);

    json_t *metadata = json_object_get(st->root, metadata_key);
    size_t entries = json_object_size(st->root);
    size_t n_tensors = entries - (metadata != NULL);
    size_t n_metadata = metadata && json_is_object(metadata) ? json_object_size(metadata) : 0;
    if (metadata && !json_is_object(metadata))
        return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_HEADER,
                            "%s: \"__metadata__\" is not a JSON object", path);
    st->tensors = subsae__calloc(n_tensors, sizeof *st->tensors);
    st->metadata_keys = subsae__calloc(n_metadata, sizeof *st->metadata_keys);
    st->metadata_values = subsae__calloc(n_metadata, sizeof *st->metadata_values);
    if (!st->tensors || !st->metadata_keys || !st->metadata_values)
        return subsae__fail_nomem("safetensors header", n_tensors * sizeof *st->tensors);

    const char *key;
    json_t *value;
    if (metadata) {
        json_object_foreach(metadata, key, value)
        {
            if (!json_is_string(value))
                return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_HEADER,
                                    "%s: \"__metadata__\" value of \"%s\" is not a string",
                                    path, key);
            st->metadata_keys[st->n_metadata] = key;
            st->metadata_values[st->n_metadata++] = json_string_value(value);
        }
    }
    const unsigned char *section = map + 8 + n;
    size_t section_bytes = size - 8 - (size_t)n;
    json_object_foreach(st->root, key, value)
    {
        if (!strcmp(key, metadata_key))
            continue;
        int rc = parse_tensor(path, key, value, section, section_bytes,
                              &st->tensors[st->n_tensors]);
        if (rc)
            return rc;
        st->n_tensors++;
    }

    /* The tensors must tile the data section: sorted by offset, each one
     * starting where the previous one ended, the last ending at its end. */
    qsort(st->tensors, (size_t)st->n_tensors, sizeof *st->tensors, compare_views);
    size_t expected = 0;
    const char *previous = NULL;
    for (int64_t i = 0; i < st->n_tensors; i++) {
        const struct subsae__tensor_view *v = &st->tensors[i];
        size_t begin = (size_t)((const unsigned char *)v->data - section);
        if (begin < expected)
            return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_OFFSETS_OVERLAP,
                                "%s: tensors '%s' and '%s' overlap in the data section "
                                "(offset %zu < %zu)",
                                path, previous, v->name, begin, expected);
        if (begin > expected)
            return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_SIZE_MISMATCH,
                                "%s: bytes [%zu, %zu) of the data section belong to no tensor",
                                path, expected, begin);
        expected = begin + v->bytes;
        previous = v->name;
    }
    if (expected != section_bytes)
        return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_SIZE_MISMATCH,
                            "%s: the tensors cover %zu bytes but the data section has %zu",
                            path, expected, section_bytes);
    return SUBSAE_OK;
}

int subsae__safetensors_open(const char *path, subsae__safetensors **out)
{
    SUBSAE__NOT_NULL("subsae__safetensors_open", path);
    SUBSAE__NOT_NULL("subsae__safetensors_open", out);
    subsae__safetensors *st = subsae__calloc(1, sizeof *st);
    if (!st)
        return subsae__fail_nomem("safetensors file", sizeof *st);
    st->path = subsae__strdup(path);
    if (!st->path) {
        subsae__free(st);
        return subsae__fail_nomem("path", strlen(path) + 1);
    }
    int rc = subsae__map_file(path, &st->map, &st->map_size);
    if (!rc)
        rc = parse(path, st->map, st->map_size, st);
    if (rc) {
        subsae__safetensors_close(st);
        return rc;
    }
    *out = st;
    return SUBSAE_OK;
}

void subsae__safetensors_close(subsae__safetensors *st)
{
    if (!st)
        return;
    clear_parse(st);
    if (st->map)
        munmap(st->map, st->map_size);
    subsae__free(st->path);
    subsae__free(st);
}

int64_t subsae__safetensors_count(const subsae__safetensors *st)
{
    return st ? st->n_tensors : 0;
}

const struct subsae__tensor_view *subsae__safetensors_tensor(const subsae__safetensors *st,
                                                             int64_t i)
{
    if (!st || i < 0 || i >= st->n_tensors)
        return NULL;
    return &st->tensors[i];
}

const struct subsae__tensor_view *subsae__safetensors_find(const subsae__safetensors *st,
                                                           const char *name)
{
    for (int64_t i = 0; st && name && i < st->n_tensors; i++)
        if (!strcmp(st->tensors[i].name, name))
            return &st->tensors[i];
    return NULL;
}

const char *subsae__safetensors_metadata(const subsae__safetensors *st, const char *key)
{
    for (int64_t i = 0; st && key && i < st->n_metadata; i++)
        if (!strcmp(st->metadata_keys[i], key))
            return st->metadata_values[i];
    return NULL;
}

/* ---- buffer source -------------------------------------------------- */

/* "a, b, c" of the tensor names (truncated) for messages. */
static void list_names(const subsae__safetensors *st, char *out, size_t room)
{
    size_t used = 0;
    out[0] = '\0';
    for (int64_t i = 0; i < st->n_tensors && used + 1 < room; i++) {
        int n = snprintf(out + used, room - used, "%s'%s'", i ? ", " : "", st->tensors[i].name);
        if (n < 0)
            break;
        used += (size_t)n;
    }
    if (used >= room && room > 4)
        memcpy(out + room - 4, "...", 4);
}

int subsae__safetensors_source(const char *path, const void *map, size_t size,
                               const char *tensor, struct subsae__source *src)
{
    subsae__safetensors st = {0};
    int rc = parse(path, map, size, &st);
    if (rc) {
        clear_parse(&st);
        return rc;
    }
    const struct subsae__tensor_view *v = NULL;
    char names[512];
    list_names(&st, names, sizeof names);
    if (tensor) {
        v = subsae__safetensors_find(&st, tensor);
        if (!v)
            rc = subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_MISSING_TENSOR,
                              "%s: no tensor named '%s' (tensors: %s)", path, tensor,
                              st.n_tensors ? names : "none");
    } else if (st.n_tensors == 1) {
        v = &st.tensors[0];
    } else if (st.n_tensors == 0) {
        rc = subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_MISSING_TENSOR,
                          "%s: the file holds no tensor", path);
    } else {
        rc = subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_MISSING_TENSOR,
                          "%s: the file holds %lld tensors (%s); name one", path,
                          (long long)st.n_tensors, names);
    }
    if (!rc && v->dtype != SUBSAE_DTYPE_F32 && v->dtype != SUBSAE_DTYPE_F16 &&
        v->dtype != SUBSAE_DTYPE_BF16 && v->dtype != SUBSAE_DTYPE_F64)
        rc = subsae__fail(SUBSAE_E_UNSUPPORTED, SUBSAE_REASON_UNSUPPORTED_DTYPE,
                          "%s: tensor '%s' has dtype %s; activations must be F32, F16, BF16 "
                          "or F64",
                          path, v->name, dtype_to_name(v->dtype));
    else if (!rc && v->ndim < 2)
        rc = subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_SHAPE,
                          "%s: tensor '%s' is %d-D; activations need 2 or more dimensions "
                          "(rows x dim)",
                          path, v->name, v->ndim);
    else if (!rc && (v->shape[v->ndim - 1] < 1 || v->shape[v->ndim - 1] > INT32_MAX))
        rc = subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_SHAPE,
                          "%s: tensor '%s': last dimension %lld is not in [1, 2^31)", path,
                          v->name, (long long)v->shape[v->ndim - 1]);
    if (!rc) {
        int64_t dim = v->shape[v->ndim - 1];
        size_t element = subsae__dtype_size(v->dtype);
        src->format = SUBSAE_FORMAT_SAFETENSORS;
        src->dtype = v->dtype;
        src->ndim = v->ndim;
        memcpy(src->shape, v->shape, sizeof src->shape);
        src->rows = (int64_t)(v->bytes / element / (size_t)dim);
        src->data = v->data;
        src->row_stride_bytes = dim * (int64_t)element;
    }
    clear_parse(&st);
    return rc;
}

/* ---- writer --------------------------------------------------------- */

/* Whether s is UTF-8 as Jansson accepts it (no overlong forms, surrogates
 * or code points past U+10FFFF). Checked before Jansson sees a string, so
 * that a NULL from Jansson can only mean it ran out of memory. */
static bool valid_utf8(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned c = *p++, extra;
        uint32_t value;
        if (c < 0x80)
            continue;
        if (c >= 0xc2 && c <= 0xdf)
            extra = 1, value = c & 0x1f;
        else if (c >= 0xe0 && c <= 0xef)
            extra = 2, value = c & 0x0f;
        else if (c >= 0xf0 && c <= 0xf4)
            extra = 3, value = c & 0x07;
        else
            return false;
        for (unsigned i = 0; i < extra; i++, p++) {
            if ((*p & 0xc0) != 0x80)
                return false;
            value = value << 6 | (*p & 0x3f);
        }
        if ((extra == 2 && value < 0x800) || (extra == 3 && value < 0x10000) ||
            value > 0x10ffff || (value >= 0xd800 && value <= 0xdfff))
            return false;
    }
    return true;
}

/* The JSON header for tensors in `order` laid out back to back, padded
 * with spaces to a multiple of 8 bytes (as the reference implementation
 * does); *text is the library's to free. */
static int build_header(const char *path, const struct subsae__tensor_view *tensors,
                        const int64_t *order, int64_t n_tensors, const char *const *keys,
                        const char *const *values, int64_t n_metadata, char **text,
                        size_t *length)
{
    json_t *root = json_object();
    int rc = root ? SUBSAE_OK : subsae__fail_nomem("safetensors header", 0);
    if (!rc && n_metadata > 0) {
        json_t *meta = json_object();
        if (!meta || json_object_set_new(root, metadata_key, meta))
            rc = subsae__fail_nomem("safetensors metadata", 0);
        for (int64_t i = 0; !rc && i < n_metadata; i++) {
            json_t *v = NULL;
            if (!valid_utf8(values[i]))
                rc = subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                                  "%s: metadata value of '%s' is not valid UTF-8", path,
                                  keys[i]);
            else if (!valid_utf8(keys[i]))
                rc = subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                                  "%s: metadata key '%s' is not valid UTF-8", path, keys[i]);
            else if (json_object_get(meta, keys[i]))
                rc = subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                                  "%s: metadata key '%s' is repeated", path, keys[i]);
            else if (!(v = json_string(values[i])) || json_object_set_new(meta, keys[i], v))
                rc = subsae__fail_nomem("safetensors metadata", strlen(values[i]));
        }
    }
    size_t offset = 0;
    for (int64_t k = 0; !rc && k < n_tensors; k++) {
        const struct subsae__tensor_view *t = &tensors[order[k]];
        if (!valid_utf8(t->name)) {
            rc = subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                              "%s: tensor name '%s' is not valid UTF-8", path, t->name);
            break;
        }
        if (json_object_get(root, t->name)) {
            rc = subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                              "%s: tensor name '%s' is repeated or reserved", path, t->name);
            break;
        }
        json_t *shape = json_array();
        for (int d = 0; shape && d < t->ndim; d++)
            if (json_array_append_new(shape, json_integer(t->shape[d]))) {
                json_decref(shape);
                shape = NULL;
            }
        json_t *entry = shape
                            ? json_pack("{s:s, s:o, s:[I, I]}", "dtype",
                                        dtype_to_name(t->dtype), "shape", shape, "data_offsets",
                                        (json_int_t)offset, (json_int_t)(offset + t->bytes))
                            : NULL;
        if (!entry || json_object_set_new(root, t->name, entry))
            rc = subsae__fail_nomem("safetensors header entry", 0);
        offset += t->bytes;
    }
    char *dumped = rc ? NULL : json_dumps(root, JSON_COMPACT);
    if (!rc && !dumped)
        rc = subsae__fail_nomem("safetensors header text", 0);
    json_decref(root);
    if (rc)
        return rc;
    size_t n = strlen(dumped), padded = (n + 7) / 8 * 8;
    char *out = subsae__malloc(padded);
    if (out) {
        memcpy(out, dumped, n);
        memset(out + n, ' ', padded - n);
    }
    json_free_t free_fn;
    json_get_alloc_funcs(NULL, &free_fn);
    free_fn(dumped);
    if (!out)
        return subsae__fail_nomem("safetensors header text", padded);
    *text = out;
    *length = padded;
    return SUBSAE_OK;
}

static int write_header(subsae__atomic_file *f, const char *text, size_t length)
{
    unsigned char prefix[8];
    for (int i = 0; i < 8; i++)
        prefix[i] = (unsigned char)((uint64_t)length >> (8 * i));
    int rc = subsae__atomic_write(f, prefix, sizeof prefix);
    return rc ? rc : subsae__atomic_write(f, text, length);
}

static int check_view(const char *path, const struct subsae__tensor_view *t, int64_t i)
{
    if (!t->name)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_NULL_ARGUMENT,
                            "%s: tensor %lld has no name", path, (long long)i);
    if (!strcmp(t->name, metadata_key))
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                            "%s: tensor name '%s' is reserved", path, t->name);
    if (!dtype_to_name(t->dtype))
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_UNSUPPORTED_DTYPE,
                            "%s: tensor '%s': dtype %d cannot be written", path, t->name,
                            t->dtype);
    if (t->ndim < 0 || t->ndim > SUBSAE__MAX_DIMS)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_SHAPE,
                            "%s: tensor '%s': %d dimensions (0 to %d)", path, t->name, t->ndim,
                            SUBSAE__MAX_DIMS);
    size_t count = 1, bytes = 0;
    bool partial = false;
    for (int d = 0; d < t->ndim; d++)
        if (t->shape[d] < 0 || !subsae__mul_size(count, (size_t)t->shape[d], &count))
            return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_SHAPE,
                                "%s: tensor '%s': shape[%d] = %lld is negative or overflows",
                                path, t->name, d, (long long)t->shape[d]);
    if (!tensor_bytes(t->dtype, count, &bytes, &partial) || partial)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_DTYPE_SHAPE_MISMATCH,
                            "%s: tensor '%s': %zu elements overflow or do not fill whole bytes",
                            path, t->name, count);
    if (bytes != t->bytes)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_DTYPE_SHAPE_MISMATCH,
                            "%s: tensor '%s': dtype and shape give %zu bytes, not %zu", path,
                            t->name, bytes, t->bytes);
    if (!t->data && t->bytes > 0)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_NULL_ARGUMENT,
                            "%s: tensor '%s' has no data", path, t->name);
    return SUBSAE_OK;
}

int subsae__safetensors_write(const char *path, const struct subsae__tensor_view *tensors,
                              int64_t n_tensors, const char *const *metadata_keys,
                              const char *const *metadata_values, int64_t n_metadata)
{
    static const char *fn = "subsae__safetensors_write";
    SUBSAE__NOT_NULL(fn, path);
    if (n_tensors < 0 || n_metadata < 0 || (n_tensors > 0 && !tensors) ||
        (n_metadata > 0 && (!metadata_keys || !metadata_values)))
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                            "%s: %s: %lld tensors, %lld metadata pairs", fn, path,
                            (long long)n_tensors, (long long)n_metadata);
    for (int64_t i = 0; i < n_metadata; i++)
        if (!metadata_keys[i] || !metadata_values[i])
            return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_NULL_ARGUMENT,
                                "%s: %s: metadata pair %lld is NULL", fn, path, (long long)i);
    for (int64_t i = 0; i < n_tensors; i++) {
        int rc = check_view(path, &tensors[i], i);
        if (rc)
            return rc;
    }
    /* Data laid out by element size, largest first (given order within a
     * size), so that every offset is a multiple of its element size. */
    int64_t *order = subsae__malloc((size_t)n_tensors * sizeof *order);
    if (!order)
        return subsae__fail_nomem("tensor order", (size_t)n_tensors * sizeof *order);
    int64_t placed = 0;
    for (size_t size = 8; size >= 1; size /= 2)
        for (int64_t i = 0; i < n_tensors; i++)
            if (element_bytes(tensors[i].dtype) == size)
                order[placed++] = i;
    char *text = NULL;
    size_t length = 0;
    subsae__atomic_file *f = NULL;
    int rc = build_header(path, tensors, order, n_tensors, metadata_keys, metadata_values,
                          n_metadata, &text, &length);
    if (!rc)
        rc = subsae__atomic_open(path, &f);
    if (!rc)
        rc = write_header(f, text, length);
    for (int64_t k = 0; !rc && k < n_tensors; k++)
        rc = subsae__atomic_write(f, tensors[order[k]].data, tensors[order[k]].bytes);
    subsae__free(text);
    subsae__free(order);
    if (rc) {
        subsae__atomic_abort(f);
        return rc;
    }
    return subsae__atomic_commit(f);
}

int subsae__safetensors_begin(const char *path, const struct subsae__tensor_view *view,
                              subsae__atomic_file **out)
{
    int64_t order = 0;
    char *text = NULL;
    size_t length = 0;
    subsae__atomic_file *f = NULL;
    int rc = build_header(path, view, &order, 1, NULL, NULL, 0, &text, &length);
    if (!rc)
        rc = subsae__atomic_open(path, &f);
    if (!rc)
        rc = write_header(f, text, length);
    subsae__free(text);
    if (rc) {
        subsae__atomic_abort(f);
        return rc;
    }
    *out = f;
    return SUBSAE_OK;
}
