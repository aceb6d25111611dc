/* NumPy .npy files: a reader that turns a mapped file into a buffer source
 * (no copy), and the start of a written one: the crash-safe file and its
 * header (buffer_io.c streams the rows).
 *
 * Layout (numpy.lib.format): the magic "\x93NUMPY", a major and a minor
 * version byte, the header length (uint16 little-endian for version 1.0,
 * uint32 for 2.0 and 3.0), then the header: the text of a Python dict
 * literal {'descr': '<f4', 'fortran_order': False, 'shape': (n, d), },
 * padded with spaces and a newline; then the raw elements. */
#include "buffer.h"
#include "dtype.h"

#include <stdio.h>
#include <string.h>

const char subsae__npy_magic[6] = {'\x93', 'N', 'U', 'M', 'P', 'Y'};

/* ---- the header dict ------------------------------------------------ */

struct cursor {
    const char *p, *end;
};

static void skip_space(struct cursor *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

static bool take(struct cursor *c, char ch)
{
    skip_space(c);
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return true;
    }
    return false;
}

/* A quoted string without escapes into out (NUL-terminated). */
static bool parse_string(struct cursor *c, char *out, size_t room)
{
    skip_space(c);
    if (c->p >= c->end || (*c->p != '\'' && *c->p != '"'))
        return false;
    char quote = *c->p++;
    size_t n = 0;
    while (c->p < c->end && *c->p != quote) {
        if (*c->p == '\\' || n + 1 >= room)
            return false;
        out[n++] = *c->p++;
    }
    if (c->p >= c->end)
        return false;
    c->p++;
    out[n] = '\0';
    return true;
}

static bool take_word(struct cursor *c, const char *word)
{
    skip_space(c);
    size_t n = strlen(word);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, word, n) != 0)
        return false;
    c->p += n;
    return true;
}

enum shape_result { SHAPE_OK, SHAPE_SYNTAX, SHAPE_OVERFLOW, SHAPE_TOO_MANY };

/* A tuple of non-negative integers, "(2, 3)", "(5,)" or "()"; Python 2
 * files may write long integers as "5L". */
static enum shape_result parse_shape(struct cursor *c, int64_t *shape, int *ndim)
{
    if (!take(c, '('))
        return SHAPE_SYNTAX;
    int n = 0;
    enum shape_result result = SHAPE_OK;
    for (;;) {
        if (take(c, ')'))
            break;
        skip_space(c);
        if (c->p >= c->end || *c->p < '0' || *c->p > '9')
            return SHAPE_SYNTAX;
        uint64_t value = 0;
        bool overflow = false;
        while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
            unsigned digit = (unsigned)(*c->p++ - '0');
            if (value > ((uint64_t)INT64_MAX - digit) / 10)
                overflow = true;
            else
                value = value * 10 + digit;
        }
        if (c->p < c->end && *c->p == 'L')
            c->p++;
        if (overflow)
            result = SHAPE_OVERFLOW;
        if (n < SUBSAE__MAX_DIMS)
            shape[n] = (int64_t)value;
        else if (result == SHAPE_OK)
            result = SHAPE_TOO_MANY;
        n++;
        if (take(c, ','))
            continue;
        if (!take(c, ')'))
            return SHAPE_SYNTAX;
        break;
    }
    *ndim = n;
    return result;
}

struct npy_header {
    char descr[64];
    bool descr_is_list; /* a structured dtype */
    bool fortran;
    int64_t shape[SUBSAE__MAX_DIMS];
    int ndim;
    enum shape_result shape_result;
};

/* Parse the dict; on failure `problem` says what is wrong. */
static bool parse_header(const char *text, size_t length, struct npy_header *h,
                         const char **problem)
{
    struct cursor c = {text, text + length};
    bool seen_descr = false, seen_fortran = false, seen_shape = false;
    memset(h, 0, sizeof *h);
    if (!take(&c, '{')) {
        *problem = "it does not start with '{'";
        return false;
    }
    for (;;) {
        if (take(&c, '}'))
            break;
        char key[32];
        if (!parse_string(&c, key, sizeof key) || !take(&c, ':')) {
            *problem = "expected a quoted key and ':'";
            return false;
        }
        if (!strcmp(key, "descr") && !seen_descr) {
            seen_descr = true;
            skip_space(&c);
            if (c.p < c.end && *c.p == '[') {
                h->descr_is_list = true; /* structured: rejected later */
                int depth = 0;
                do {
                    if (*c.p == '[')
                        depth++;
                    else if (*c.p == ']')
                        depth--;
                    c.p++;
                } while (c.p < c.end && depth > 0);
                if (depth) {
                    *problem = "unterminated 'descr' list";
                    return false;
                }
            } else if (!parse_string(&c, h->descr, sizeof h->descr)) {
                *problem = "'descr' is not a short string";
                return false;
            }
        } else if (!strcmp(key, "fortran_order") && !seen_fortran) {
            seen_fortran = true;
            if (take_word(&c, "True"))
                h->fortran = true;
            else if (!take_word(&c, "False")) {
                *problem = "'fortran_order' is neither True nor False";
                return false;
            }
        } else if (!strcmp(key, "shape") && !seen_shape) {
            seen_shape = true;
            h->shape_result = parse_shape(&c, h->shape, &h->ndim);
            if (h->shape_result == SHAPE_SYNTAX) {
                *problem = "'shape' is not a tuple of non-negative integers";
                return false;
            }
        } else {
            *problem = "unexpected or repeated key (allowed: 'descr', 'fortran_order', "
                       "'shape')";
            return false;
        }
        if (take(&c, ','))
            continue;
        if (!take(&c, '}')) {
            *problem = "expected ',' or '}'";
            return false;
        }
        break;
    }
    skip_space(&c);
    if (c.p != c.end) {
        *problem = "unexpected text after the closing '}'";
        return false;
    }
    if (!seen_descr || !seen_fortran || !seen_shape) {
        *problem = "a key is missing ('descr', 'fortran_order' and 'shape' are required)";
        return false;
    }
    return true;
}

/* ---- reader --------------------------------------------------------- */

static int npy_dtype(const char *path, const struct npy_header *h, int *dtype)
{
    if (h->descr_is_list)
        return subsae__fail(SUBSAE_E_UNSUPPORTED, SUBSAE_REASON_UNSUPPORTED_DTYPE,
                            "%s: structured dtype (a 'descr' list) is not supported; "
                            "need '<f4', '<f2' or '<f8'",
                            path);
    const char *d = h->descr;
    int found = -1;
    if (strlen(d) == 3 && d[1] == 'f') {
        if (d[2] == '2')
            found = SUBSAE_DTYPE_F16;
        else if (d[2] == '4')
            found = SUBSAE_DTYPE_F32;
        else if (d[2] == '8')
            found = SUBSAE_DTYPE_F64;
    }
    if (found < 0 || (d[0] != '<' && d[0] != '>' && d[0] != '|' && d[0] != '='))
        return subsae__fail(SUBSAE_E_UNSUPPORTED, SUBSAE_REASON_UNSUPPORTED_DTYPE,
                            "%s: dtype '%s' is not supported; need '<f4', '<f2' or '<f8'", path,
                            d);
    bool little_host = __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__;
    if (d[0] == '>' || (d[0] == '=' && !little_host))
        return subsae__fail(SUBSAE_E_UNSUPPORTED, SUBSAE_REASON_BIG_ENDIAN,
                            "%s: dtype '%s' is big-endian; convert it with "
                            "a.astype('<%s') before saving",
                            path, d, d + 1);
    if (d[0] == '|')
        /* '|' means "byte order not applicable": only 1-byte types. */
        return subsae__fail(SUBSAE_E_UNSUPPORTED, SUBSAE_REASON_UNSUPPORTED_DTYPE,
                            "%s: dtype '%s' has no byte order ('|') but %zu-byte "
                            "elements; need '<%s'",
                            path, d, subsae__dtype_size(found), d + 1);
    *dtype = found;
    return SUBSAE_OK;
}

int subsae__npy_source(const char *path, const void *map, size_t size,
                       struct subsae__source *src)
{
    const unsigned char *bytes = map;
    if (size < sizeof subsae__npy_magic ||
        memcmp(bytes, subsae__npy_magic, sizeof subsae__npy_magic) != 0)
        return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_MAGIC,
                            "%s: not a .npy file (no \\x93NUMPY magic)", path);
    if (size < 10)
        return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_TRUNCATED_HEADER,
                            "%s: .npy header truncated: the file has only %zu bytes", path,
                            size);
    unsigned major = bytes[6], minor = bytes[7];
    if ((major != 1 && major != 2 && major != 3) || minor != 0)
        return subsae__fail(SUBSAE_E_UNSUPPORTED, SUBSAE_REASON_BAD_HEADER,
                            "%s: .npy format version %u.%u is not supported (1.0, 2.0, 3.0)",
                            path, major, minor);
    size_t start = major == 1 ? 10 : 12;
    if (size < start)
        return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_TRUNCATED_HEADER,
                            "%s: .npy header truncated: the file has only %zu bytes", path,
                            size);
    size_t header_length = (size_t)bytes[8] | (size_t)bytes[9] << 8;
    if (major != 1)
        header_length |= (size_t)bytes[10] << 16 | (size_t)bytes[11] << 24;
    if (header_length > size - start)
        return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_HEADER_PAST_EOF,
                            "%s: .npy header length %zu goes past the end of the file "
                            "(%zu bytes)",
                            path, header_length, size);
    struct npy_header h;
    const char *problem = "";
    if (!parse_header((const char *)bytes + start, header_length, &h, &problem))
        return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_HEADER,
                            "%s: .npy header cannot be parsed: %s", path, problem);
    int dtype = SUBSAE_DTYPE_F32;
    int rc = npy_dtype(path, &h, &dtype);
    if (rc)
        return rc;
    if (h.shape_result == SHAPE_TOO_MANY)
        return subsae__fail(SUBSAE_E_UNSUPPORTED, SUBSAE_REASON_BAD_SHAPE,
                            "%s: array has %d dimensions; at most %d are supported", path,
                            h.ndim, SUBSAE__MAX_DIMS);
    if (h.shape_result == SHAPE_OVERFLOW)
        return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_SHAPE_OVERFLOW,
                            "%s: a dimension of 'shape' does not fit in 64 bits", path);
    if (h.ndim < 2)
        return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_SHAPE,
                            "%s: array is %d-D; activations need 2 or more dimensions "
                            "(rows x dim), e.g. reshape a vector to (n, 1) or (1, n)",
                            path, h.ndim);
    size_t elements = 1, data_bytes;
    int big_dims = 0;
    for (int i = 0; i < h.ndim; i++) {
        big_dims += h.shape[i] > 1;
        if (!subsae__mul_size(elements, (size_t)h.shape[i], &elements))
            return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_SHAPE_OVERFLOW,
                                "%s: the product of the shape overflows", path);
    }
    if (!subsae__mul_size(elements, subsae__dtype_size(dtype), &data_bytes) ||
        data_bytes > (size_t)INT64_MAX)
        return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_SHAPE_OVERFLOW,
                            "%s: the shape's size in bytes overflows", path);
    /* A Fortran-ordered array with at most one dimension > 1 has the same
     * bytes as the C-ordered one. */
    if (h.fortran && big_dims > 1)
        return subsae__fail(SUBSAE_E_UNSUPPORTED, SUBSAE_REASON_FORTRAN_ORDER,
                            "%s: array is in Fortran (column-major) order; save it with "
                            "np.save(path, np.ascontiguousarray(a))",
                            path);
    int64_t dim = h.shape[h.ndim - 1];
    if (dim < 1 || dim > INT32_MAX)
        return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_SHAPE,
                            "%s: last dimension %lld is not in [1, 2^31)", path,
                            (long long)dim);
    size_t offset = start + header_length;
    if (size - offset != data_bytes)
        return subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_SIZE_MISMATCH,
                            "%s: shape needs %zu bytes of data but the file holds %zu after "
                            "the header",
                            path, data_bytes, size - offset);
    src->format = SUBSAE_FORMAT_NPY;
    src->dtype = dtype;
    src->ndim = h.ndim;
    memcpy(src->shape, h.shape, sizeof h.shape);
    src->rows = (int64_t)(elements / (size_t)dim);
    src->data = bytes + offset;
    src->row_stride_bytes = dim * (int64_t)subsae__dtype_size(dtype);
    return SUBSAE_OK;
}

/* ---- writer --------------------------------------------------------- */

enum { HEADER_MAX = 256 };

/* The version 1.0 header of a C-ordered rows x dim array of `dtype`: the
 * first *length bytes of `header`. */
static int npy_header(const char *fn, const char *path, int dtype, int64_t rows, int64_t dim,
                      char header[HEADER_MAX], size_t *length)
{
    const char *descr;
    switch (dtype) {
    case SUBSAE_DTYPE_F32: descr = "<f4"; break;
    case SUBSAE_DTYPE_F16: descr = "<f2"; break;
    case SUBSAE_DTYPE_F64: descr = "<f8"; break;
    case SUBSAE_DTYPE_BF16:
        return subsae__fail(SUBSAE_E_UNSUPPORTED, SUBSAE_REASON_UNSUPPORTED_DTYPE,
                            "%s: %s: .npy has no bfloat16 type; use f32 or f16, or "
                            "safetensors",
                            fn, path);
    default:
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_UNSUPPORTED_DTYPE,
                            "%s: %s: dtype %d cannot be saved (f32, f16 or f64)", fn, path,
                            dtype);
    }
    /* Version 1.0 header, padded with spaces and ended by a newline so that
     * the data starts at a multiple of 64 bytes, as numpy does. */
    int used = snprintf(header + 10, HEADER_MAX - 10,
                        "{'descr': '%s', 'fortran_order': False, 'shape': (%lld, %lld), }",
                        descr, (long long)rows, (long long)dim);
    size_t total = 10 + (size_t)used + 1;
    total = (total + 63) / 64 * 64;
    memcpy(header, subsae__npy_magic, sizeof subsae__npy_magic);
    header[6] = 1;
    header[7] = 0;
    size_t header_length = total - 10;
    header[8] = (char)(header_length & 0xff);
    header[9] = (char)(header_length >> 8);
    memset(header + 10 + used, ' ', total - 10 - (size_t)used);
    header[total - 1] = '\n';
    *length = total;
    return SUBSAE_OK;
}

int subsae__npy_begin(const char *fn, const char *path, int dtype, int64_t rows, int64_t dim,
                      subsae__atomic_file **out)
{
    char header[HEADER_MAX];
    size_t length = 0;
    int rc = npy_header(fn, path, dtype, rows, dim, header, &length);
    if (rc)
        return rc;
    subsae__atomic_file *f;
    rc = subsae__atomic_open(path, &f);
    if (rc)
        return rc;
    rc = subsae__atomic_write(f, header, length);
    if (rc) {
        subsae__atomic_abort(f);
        return rc;
    }
    *out = f;
    return SUBSAE_OK;
}
