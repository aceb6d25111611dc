/* `subsae encode DIR INPUT [--target FILE] [--tensor NAME] --out
 * FILE.safetensors [--overwrite] [--precision P] [--json]`: sparse codes
 * of every row: `indices` int32 [n, k] (feature numbers in
 * descending order of value, -1 in unused slots) and `values` float32
 * [n, k]; k is the model's k for TopK, and for the threshold activations
 * (BatchTopK at inference, JumpReLU, ReLU) the largest number of active
 * features of any row, found by a first pass. The file is written block
 * by block at its final offsets into a temporary file, synced and renamed,
 * so a crash never leaves a partial FILE. The output is checked before any
 * row is encoded: it must name a safetensors file (two tensors need that
 * format; an .npy holds one array) in an existing directory, and not
 * replace a file unless --overwrite says so. A transcoder
 * encodes its input site's rows: it asks for --target, its output site's
 * rows, so that the pair is named (the target is checked, not encoded). */
#include "interrupt.h"
#include "sae_cli.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* An existing --out is replaced only when asked, and never when the command
 * reads it: the codes arrive whole, but what they would replace may have
 * taken hours, or be the only copy of the activations or of the model. */
static int check_replace(const char *out, bool overwrite, const char *dir, char *input,
                         char *target)
{
    if (sae_cli_check_not_read("--out", out, dir, &input, 1, &target, target != NULL))
        return 1;
    if (!overwrite && access(out, F_OK) == 0)
        return cli_fail("--out %s already exists; give --overwrite to replace it (the old file "
                        "stays until the new one is complete)",
                        out);
    return 0;
}

/* Ctrl-C or SIGTERM between blocks: the temporary file goes, --out stays
 * as it was. */
static int stopped(const char *out)
{
    const int signal = interrupt_signal();
    fprintf(stderr, "%s encode: interrupted by %s; %s was not written\n", cli_program_name,
            interrupt_name(signal), out);
    return interrupt_exit_code(signal);
}

static int write_all(int fd, const void *data, size_t n, off_t offset, const char *path)
{
    const char *p = data;
    while (n > 0) {
        ssize_t w = pwrite(fd, p, n, offset);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return cli_fail("%s: cannot write: %s", path, w < 0 ? strerror(errno) : "no progress");
        p += w;
        n -= (size_t)w;
        offset += w;
    }
    return 0;
}

/* The largest number of active features of a row of `buf` (at least 1). */
static int max_active(const subsae_sae *sae, const subsae_buffer *buf, int64_t d_in,
                      int64_t *out)
{
    int64_t m;
    subsae_sae_get_int(sae, SUBSAE_SAE_D_SAE, &m);
    const int64_t n = subsae_buffer_rows(buf);
    int64_t block = ((int64_t)1 << 20) / m;
    block = block < 1 ? 1 : block;
    float *x = malloc((size_t)(block * d_in) * sizeof *x);
    int32_t *idx = malloc((size_t)(block * m) * sizeof *idx);
    float *val = malloc((size_t)(block * m) * sizeof *val);
    int status = 0;
    int64_t most = 1;
    if (!x || !idx || !val)
        status = cli_fail("out of memory");
    for (int64_t r0 = 0; !status && r0 < n && !interrupt_signal(); r0 += block) {
        int64_t rows = n - r0 < block ? n - r0 : block;
        if (cli_check(subsae_buffer_read(buf, r0, rows, x, d_in), "cannot read the input") ||
            cli_check(subsae_sae_encode_sparse(sae, x, rows, d_in, m, idx, val),
                      "encoding failed")) {
            status = 1;
            break;
        }
        for (int64_t i = 0; i < rows; i++) {
            int64_t c = 0;
            while (c < m && idx[i * m + c] >= 0)
                c++;
            most = c > most ? c : most;
        }
    }
    free(x);
    free(idx);
    free(val);
    if (!status)
        *out = most;
    return status;
}

CLI_COMMAND(encode, "DIR INPUT [--target FILE] [--tensor NAME] --out FILE.safetensors "
                    "[--overwrite] [--precision fp32|bf16|auto] [--json]")
{
    char *dir = NULL, *input = NULL, *target_file = NULL;
    const char *tensor = NULL, *out = NULL;
    bool json = false, overwrite = false;
    int precision = SUBSAE_PRECISION_FP32;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--json")) {
            json = true;
        } else if (!strcmp(a, "--overwrite")) {
            overwrite = true;
        } else if (!strcmp(a, "--tensor") || !strcmp(a, "--out") || !strcmp(a, "--target") ||
                   !strcmp(a, "--precision")) {
            if (i + 1 >= argc)
                return cli_fail("%s needs a value", a);
            if (!strcmp(a, "--precision")) {
                if (sae_cli_parse_precision(a, argv[++i], &precision))
                    return 2;
            } else if (!strcmp(a, "--tensor"))
                tensor = argv[++i];
            else if (!strcmp(a, "--out"))
                out = argv[++i];
            else
                target_file = argv[++i];
        } else if (a[0] == '-') {
            cli_fail("unknown option %s (see %s encode --help)", a, cli_program_name);
            return 2;
        } else if (!dir) {
            dir = argv[i];
        } else if (!input) {
            input = argv[i];
        } else {
            return cli_usage();
        }
    }
    if (!dir || !input || !out)
        return cli_usage();
    interrupt_install();
    int status = 1, fd = -1;
    subsae_sae *sae = NULL;
    subsae_buffer *buf = NULL, *target = NULL;
    float *x = NULL, *values = NULL;
    int32_t *indices = NULL;
    char *header = NULL, temporary[4200];
    temporary[0] = '\0';
    if (sae_cli_check_output("--out", out, ".safetensors",
                             "the codes are two tensors (indices and values), which a "
                             "safetensors file holds and an .npy file does not") ||
        check_replace(out, overwrite, dir, input, target_file) ||
        !(sae = sae_cli_load(dir, target_file != NULL)) || sae_cli_set_precision(sae, precision) ||
        !(buf = sae_cli_open(&input, 1, tensor, "the input")) ||
        (target_file && !(target = sae_cli_open(&target_file, 1, tensor, "--target"))) ||
        sae_cli_check_rows(sae, dir, buf, input, target, target_file))
        goto done;
    int64_t k, d_in, activation;
    subsae_sae_get_int(sae, SUBSAE_SAE_K, &k);
    subsae_sae_get_int(sae, SUBSAE_SAE_D_IN, &d_in);
    subsae_sae_get_int(sae, SUBSAE_SAE_ACTIVATION, &activation);
    const int64_t n = subsae_buffer_rows(buf);
    if (activation != SUBSAE_ACT_TOPK && max_active(sae, buf, d_in, &k))
        goto done;
    if (interrupt_signal()) {
        status = stopped(out);
        goto done;
    }
    /* Header with both tensors, padded to a multiple of 8 bytes. */
    const long long bytes = (long long)n * (long long)k * 4;
    char text[512];
    int len = snprintf(text, sizeof text,
                       "{\"indices\":{\"dtype\":\"I32\",\"shape\":[%lld,%lld],\"data_offsets\":"
                       "[0,%lld]},\"values\":{\"dtype\":\"F32\",\"shape\":[%lld,%lld],"
                       "\"data_offsets\":[%lld,%lld]}}",
                       (long long)n, (long long)k, bytes, (long long)n, (long long)k, bytes,
                       2 * bytes);
    size_t padded = ((size_t)len + 7) / 8 * 8;
    header = malloc(8 + padded);
    if (!header) {
        cli_fail("out of memory");
        goto done;
    }
    uint64_t hl = padded;
    for (int i = 0; i < 8; i++)
        header[i] = (char)(hl >> (8 * i));
    memcpy(header + 8, text, (size_t)len);
    memset(header + 8 + len, ' ', padded - (size_t)len);
    snprintf(temporary, sizeof temporary, "%s.tmp-%ld", out, (long)getpid());
    fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0) {
        cli_fail("%s: cannot create: %s", temporary, strerror(errno));
        temporary[0] = '\0';
        goto done;
    }
    if (write_all(fd, header, 8 + padded, 0, temporary))
        goto done;
    const off_t base = (off_t)(8 + padded);
    const int64_t block = 16384;
    x = malloc((size_t)(block * d_in) * sizeof *x);
    indices = malloc((size_t)(block * k) * sizeof *indices);
    values = malloc((size_t)(block * k) * sizeof *values);
    if (!x || !indices || !values) {
        cli_fail("out of memory");
        goto done;
    }
    double started = sae_cli_now();
    for (int64_t r0 = 0; r0 < n; r0 += block) {
        int64_t rows = n - r0 < block ? n - r0 : block;
        if (interrupt_signal()) {
            status = stopped(out);
            goto done;
        }
        if (cli_check(subsae_buffer_read(buf, r0, rows, x, d_in), "cannot read the input") ||
            cli_check(subsae_sae_encode_sparse(sae, x, rows, d_in, k, indices, values),
                      "encoding failed"))
            goto done;
        size_t piece = (size_t)(rows * k) * 4;
        off_t at = (off_t)(r0 * k * 4);
        if (write_all(fd, indices, piece, base + at, temporary) ||
            write_all(fd, values, piece, base + (off_t)bytes + at, temporary))
            goto done;
    }
    double seconds = sae_cli_now() - started;
    if (fsync(fd) != 0 || close(fd) != 0) {
        fd = -1;
        cli_fail("%s: cannot flush: %s", temporary, strerror(errno));
        goto done;
    }
    fd = -1;
    if (rename(temporary, out) != 0) {
        cli_fail("%s: cannot rename to %s: %s", temporary, out, strerror(errno));
        goto done;
    }
    temporary[0] = '\0';
    int64_t used = SUBSAE_PRECISION_FP32;
    subsae_sae_get_int(sae, SUBSAE_SAE_PRECISION, &used);
    if (json)
        status = cli_print_json(json_pack("{s:s, s:I, s:I, s:f, s:f, s:s}", "out", out, "rows",
                                          (json_int_t)n, "k", (json_int_t)k, "seconds", seconds,
                                          "tokens_per_second",
                                          seconds > 0 ? (double)n / seconds : 0.0, "precision",
                                          sae_cli_precision_name((int)used)));
    else
        status = printf("encoded %lld rows (k %lld%s) into %s in %.2f s\n", (long long)n,
                        (long long)k, used == SUBSAE_PRECISION_BF16 ? ", bf16" : "", out,
                        seconds) < 0;
done:
    if (fd >= 0)
        close(fd);
    if (temporary[0])
        unlink(temporary);
    free(header);
    free(x);
    free(indices);
    free(values);
    subsae_sae_free(sae);
    subsae_buffer_free(buf);
    subsae_buffer_free(target);
    return status;
}

CLI_HELP(encode)
{
    fprintf(out, "Sparse codes of every row of INPUT under the model in DIR, as one safetensors\n"
                 "file: 'indices' int32 [rows, k] (features in descending order of value, -1 in\n"
                 "unused slots) and 'values' float32 [rows, k]; k is the model's for TopK, else\n"
                 "the most active features of any row. The file appears whole or not at all.\n\n");
    cli_help_line(out, "--out FILE.safetensors",
                  "where the codes go (required; the name must end in .safetensors)");
    cli_help_line(out, "--overwrite",
                  "replace an existing --out (never a file the command reads); the old file "
                  "stays until the new codes are complete");
    cli_help_line(out, "--target FILE",
                  "a transcoder's target rows, the site it reconstructs (required for a "
                  "transcoder, refused for an SAE; checked against INPUT, not encoded)");
    cli_help_line(out, "--tensor NAME", "the safetensors tensor to read (default: the only one)");
    sae_cli_help_precision(out);
    cli_help_end(out, true);
}
