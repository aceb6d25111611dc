/* A run's record: data fingerprints, ids, names (see run_record.h). */
#include "run_record.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Rows hashed per data set: spread over the whole file, cheap to read. */
enum { SAMPLE_ROWS = 256 };

json_t *run_record_data(char *const *paths, int n, const char *tensor,
                        const subsae_buffer *buf)
{
    uint64_t hash;
    if (cli_check(subsae_buffer_fingerprint(buf, SAMPLE_ROWS, &hash),
                  "cannot read the data's sample rows"))
        return NULL;
    int dtype = SUBSAE_DTYPE_F32;
    subsae_buffer_source_info(buf, 0, NULL, NULL, &dtype, NULL, NULL, 0);
    char hex[17];
    snprintf(hex, sizeof hex, "%016" PRIx64, hash);
    json_t *list = json_array();
    for (int i = 0; list && i < n; i++)
        if (json_array_append_new(list, json_string(paths[i]))) {
            json_decref(list);
            list = NULL;
        }
    json_t *data = list ? json_pack("{s:o, s:s?, s:I, s:I, s:s, s:s}", "paths", list, "tensor",
                                    tensor, "rows", (json_int_t)subsae_buffer_rows(buf),
                                    "width", (json_int_t)subsae_buffer_dim(buf), "dtype",
                                    subsae_dtype_name(dtype), "sample_hash", hex)
                        : NULL;
    if (!data)
        cli_fail("out of memory");
    return data;
}

bool run_record_same_data(const json_t *a, const json_t *b)
{
    const char *ha = json_string_value(json_object_get(a, "sample_hash"));
    const char *hb = json_string_value(json_object_get(b, "sample_hash"));
    return json_integer_value(json_object_get(a, "rows")) ==
               json_integer_value(json_object_get(b, "rows")) &&
           json_integer_value(json_object_get(a, "width")) ==
               json_integer_value(json_object_get(b, "width")) &&
           ha && hb && !strcmp(ha, hb);
}

void run_record_describe(const json_t *data, char *out, size_t size)
{
    const json_t *paths = json_object_get(data, "paths");
    char names[2048] = "";
    for (size_t i = 0; i < json_array_size(paths); i++) {
        size_t used = strlen(names);
        snprintf(names + used, sizeof names - used, "%s%s", i ? " + " : "",
                 json_string_value(json_array_get(paths, i)));
    }
    const char *dtype = json_string_value(json_object_get(data, "dtype"));
    const char *hash = json_string_value(json_object_get(data, "sample_hash"));
    snprintf(out, size, "%s (%lld rows x %lld, %s, sample %.8s)", names,
             (long long)json_integer_value(json_object_get(data, "rows")),
             (long long)json_integer_value(json_object_get(data, "width")),
             dtype ? dtype : "?", hash ? hash : "?");
}

void run_record_new_id(char *out, size_t size)
{
    uint32_t random = 0;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0 || read(fd, &random, sizeof random) != (ssize_t)sizeof random) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        random = (uint32_t)ts.tv_nsec ^ ((uint32_t)getpid() << 16);
    }
    if (fd >= 0)
        close(fd);
    time_t now = time(NULL);
    struct tm utc;
    gmtime_r(&now, &utc);
    char stamp[32];
    strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &utc);
    snprintf(out, size, "%s-%08" PRIx32, stamp, random);
}

const char *run_record_precision(const subsae_trainer *t)
{
    int64_t precision = SUBSAE_PRECISION_FP32; /* the precision in use once initialised */
    if (subsae_trainer_get_int(t, SUBSAE_TRAIN_PRECISION, &precision) != SUBSAE_OK)
        return "fp32";
    return precision == SUBSAE_PRECISION_BF16 ? "bf16" : "fp32";
}

void run_record_stem(const char *path, char *out, size_t size)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    snprintf(out, size, "%s", base);
    char *dot = strrchr(out, '.');
    if (dot && dot != out)
        *dot = '\0';
}

void run_record_parent(const char *path, char *out, size_t size)
{
    char copy[4096];
    snprintf(copy, sizeof copy, "%s", path);
    char *slash = strrchr(copy, '/');
    if (!slash) { /* a file of the current directory: no better name than its own */
        run_record_stem(path, out, size);
        return;
    }
    *slash = '\0';
    const char *parent = strrchr(copy, '/');
    snprintf(out, size, "%s", parent ? parent + 1 : copy[0] ? copy : "/");
}
