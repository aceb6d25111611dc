/* `subsae inspect FILE... [--tensor NAME] [--json]`: format, dtype and
 * shape of each activation file, then rows, dim, mean row norm and count of
 * non-finite values of all files read as one sharded buffer; `subsae
 * inspect DIR`: the model saved there (inspect_model.c). */
#include "cli.h"
#include "inspect_model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum { MAX_SHOWN_DIMS = 8 };

struct file_info {
    const char *path;
    int format, dtype, ndim;
    int64_t shape[MAX_SHOWN_DIMS];
    int64_t rows, dim;
};

static void shape_text(const struct file_info *f, char *out, size_t room)
{
    size_t used = 0;
    out[0] = '\0';
    for (int d = 0; d < f->ndim && d < MAX_SHOWN_DIMS && used < room; d++) {
        int n = snprintf(out + used, room - used, "%s%lld", d ? " x " : "",
                         (long long)f->shape[d]);
        if (n < 0)
            break;
        used += (size_t)n;
    }
}

static int print_table(const struct file_info *files, int64_t n, int64_t rows, int64_t dim,
                       double mean_norm, int64_t nonfinite, int64_t first_nonfinite)
{
    int wpath = 4, wformat = 6, wdtype = 5, wshape = 5;
    char shape[160];
    for (int64_t i = 0; i < n; i++) {
        shape_text(&files[i], shape, sizeof shape);
        int lp = (int)strlen(files[i].path), ls = (int)strlen(shape);
        int lf = (int)strlen(subsae_format_name(files[i].format));
        int ld = (int)strlen(subsae_dtype_name(files[i].dtype));
        wpath = lp > wpath ? lp : wpath;
        wshape = ls > wshape ? ls : wshape;
        wformat = lf > wformat ? lf : wformat;
        wdtype = ld > wdtype ? ld : wdtype;
    }
    printf("%-*s  %-*s  %-*s  %-*s  %12s  %6s\n", wpath, "PATH", wformat, "FORMAT", wdtype,
           "DTYPE", wshape, "SHAPE", "ROWS", "DIM");
    for (int64_t i = 0; i < n; i++) {
        shape_text(&files[i], shape, sizeof shape);
        printf("%-*s  %-*s  %-*s  %-*s  %12lld  %6lld\n", wpath, files[i].path, wformat,
               subsae_format_name(files[i].format), wdtype, subsae_dtype_name(files[i].dtype),
               wshape, shape, (long long)files[i].rows, (long long)files[i].dim);
    }
    printf("\n%lld file%s: %lld rows x %lld dims, mean row norm %.6g, %lld non-finite "
           "value%s",
           (long long)n, n == 1 ? "" : "s", (long long)rows, (long long)dim, mean_norm,
           (long long)nonfinite, nonfinite == 1 ? "" : "s");
    if (first_nonfinite >= 0)
        printf(" (first in row %lld)", (long long)first_nonfinite);
    printf("\n");
    return fflush(stdout) == 0 ? 0 : cli_fail("cannot write to standard output");
}

static json_t *files_json(const struct file_info *files, int64_t n)
{
    json_t *array = json_array();
    for (int64_t i = 0; array && i < n; i++) {
        json_t *shape = json_array();
        for (int d = 0; shape && d < files[i].ndim && d < MAX_SHOWN_DIMS; d++)
            if (json_array_append_new(shape, json_integer(files[i].shape[d]))) {
                json_decref(shape);
                shape = NULL;
            }
        json_t *entry = shape ? json_pack("{s:s, s:s, s:s, s:o, s:I, s:I}", "path",
                                          files[i].path, "format",
                                          subsae_format_name(files[i].format), "dtype",
                                          subsae_dtype_name(files[i].dtype), "shape", shape,
                                          "rows", (json_int_t)files[i].rows, "dim",
                                          (json_int_t)files[i].dim)
                              : NULL;
        if (json_array_append_new(array, entry)) {
            json_decref(array);
            array = NULL;
        }
    }
    return array;
}

static bool is_directory(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* A model directory alone is described as a model; among files it is an
 * error, since the files are shards of one data set. -1 when no path is
 * a directory, else the exit code. */
static int inspect_directory(const char **paths, int64_t n, const char *tensor, bool json)
{
    for (int64_t i = 0; i < n; i++) {
        if (!is_directory(paths[i]))
            continue;
        if (n > 1)
            return cli_fail("%s is a directory: give one model directory, or activation files",
                            paths[i]);
        if (tensor)
            return cli_fail("--tensor names a tensor of an activation file; %s is a model "
                            "directory",
                            paths[i]);
        return inspect_model(paths[i], json);
    }
    return -1;
}

CLI_COMMAND(inspect, "FILE... | DIR [--tensor NAME] [--json]")
{
    bool json = false;
    const char *tensor = NULL;
    const char **paths = calloc((size_t)argc, sizeof *paths);
    if (!paths)
        return cli_fail("out of memory");
    int64_t n = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            json = true;
        else if (!strcmp(argv[i], "--tensor") && i + 1 < argc)
            tensor = argv[++i];
        else if (!strcmp(argv[i], "--") ) {
            while (++i < argc)
                paths[n++] = argv[i];
        } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
            free(paths);
            cli_fail("unknown option %s (see %s inspect --help)", argv[i], cli_program_name);
            return 2;
        } else
            paths[n++] = argv[i];
    }
    if (n == 0) {
        free(paths);
        return cli_usage();
    }
    int model_rc = inspect_directory(paths, n, tensor, json);
    if (model_rc >= 0) {
        free(paths);
        return model_rc;
    }
    subsae_buffer *buf = NULL;
    int rc = cli_check(subsae_buffer_open_shards(paths, n, tensor, &buf), "cannot open");
    struct file_info *files = rc ? NULL : calloc((size_t)n, sizeof *files);
    if (!rc && !files)
        rc = cli_fail("out of memory");
    for (int64_t i = 0; !rc && i < n; i++) {
        struct file_info *f = &files[i];
        rc = cli_check(subsae_buffer_source_info(buf, i, &f->path, &f->format, &f->dtype,
                                                 &f->ndim, f->shape, MAX_SHOWN_DIMS),
                       paths[i]);
        if (rc)
            break;
        int shown = f->ndim < MAX_SHOWN_DIMS ? f->ndim : MAX_SHOWN_DIMS;
        f->dim = f->shape[shown - 1];
        f->rows = 1;
        for (int d = 0; d + 1 < shown; d++)
            f->rows *= f->shape[d];
    }
    double mean_norm = 0.0;
    int64_t nonfinite = 0, first_nonfinite = -1;
    if (!rc)
        rc = cli_check(subsae_buffer_stats(buf, NULL, &mean_norm, &nonfinite, &first_nonfinite),
                       "cannot read");
    if (!rc && json) {
        json_t *list = files_json(files, n);
        rc = cli_print_json(list ? json_pack("{s:o, s:I, s:I, s:f, s:I, s:o}", "files", list,
                                             "rows", (json_int_t)subsae_buffer_rows(buf),
                                             "dim", (json_int_t)subsae_buffer_dim(buf),
                                             "mean_norm", mean_norm, "nonfinite",
                                             (json_int_t)nonfinite, "first_nonfinite_row",
                                             first_nonfinite >= 0
                                                 ? json_integer(first_nonfinite)
                                                 : json_null())
                                 : NULL);
    } else if (!rc) {
        rc = print_table(files, n, subsae_buffer_rows(buf), subsae_buffer_dim(buf), mean_norm,
                         nonfinite, first_nonfinite);
    }
    free(files);
    free(paths);
    subsae_buffer_free(buf);
    return rc;
}

CLI_HELP(inspect)
{
    fprintf(out, "Formats, dtypes, shapes, rows, mean row norm and non-finite values of\n"
                 "activation files (.npy or safetensors; several files are shards of one\n"
                 "data set and must share their width); or, given one model directory\n"
                 "(as eval and encode read it), what the model is: SAE or transcoder,\n"
                 "features, activation, widths, Matryoshka prefixes, scales, and the\n"
                 "site and model recorded with it.\n\n");
    cli_help_line(out, "--tensor NAME", "the safetensors tensor to read (default: the only one)");
    cli_help_line(out, "--", "every argument after it is a file, even one starting with -");
    cli_help_end(out, true);
}
