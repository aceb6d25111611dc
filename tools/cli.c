/* Messages, number parsing and JSON output shared by the subcommands. */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

const char *cli_program_name = "subsae";
const char *cli_nonfinite_hint;
const char *cli_command_name = "subsae";

/* ---- the subcommands ------------------------------------------------ */

enum { MAX_COMMANDS = 32 };

static struct command {
    const char *name;
    const char *usage;
    cli_command_fn run;
    cli_help_fn help;
} commands[MAX_COMMANDS];
static int command_count;
static const char *running_usage = "";

void cli_register(const char *name, const char *usage, cli_command_fn run)
{
    for (int i = 0; i < command_count; i++)
        if (!strcmp(commands[i].name, name)) { /* its help came first */
            commands[i].usage = usage;
            commands[i].run = run;
            return;
        }
    if (command_count < MAX_COMMANDS) {
        commands[command_count].name = name;
        commands[command_count].usage = usage;
        commands[command_count].run = run;
        command_count++;
    }
}

void cli_register_help(const char *name, cli_help_fn help)
{
    /* Constructors run in any order: the command may come later. */
    for (int i = 0; i < command_count; i++)
        if (!strcmp(commands[i].name, name)) {
            commands[i].help = help;
            return;
        }
    if (command_count < MAX_COMMANDS) {
        commands[command_count].name = name;
        commands[command_count].help = help;
        command_count++;
    }
}

static int compare_commands(const void *a, const void *b)
{
    return strcmp(((const struct command *)a)->name, ((const struct command *)b)->name);
}

void cli_print_commands(FILE *out)
{
    qsort(commands, (size_t)command_count, sizeof commands[0], compare_commands);
    for (int i = 0; i < command_count; i++)
        fprintf(out, "  %-8s %s\n", commands[i].name, commands[i].usage);
}

static bool asks_for_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
            return true;
    return false;
}

int cli_run(const char *name, int argc, char **argv)
{
    for (int i = 0; i < command_count; i++) {
        if (!strcmp(name, commands[i].name) && commands[i].run) {
            cli_command_name = commands[i].name;
            running_usage = commands[i].usage;
            if (!asks_for_help(argc, argv))
                return commands[i].run(argc, argv);
            printf("usage: %s %s %s\n", cli_program_name, cli_command_name, running_usage);
            if (commands[i].help) {
                putchar('\n');
                commands[i].help(stdout);
            }
            return fflush(stdout) == 0 ? 0 : 1;
        }
    }
    fprintf(stderr, "%s: unknown subcommand '%s' (see %s --help)\n", cli_program_name, name,
            cli_program_name);
    return 2;
}

int cli_usage(void)
{
    fprintf(stderr, "usage: %s %s %s (%s %s --help explains every option)\n",
            cli_program_name, cli_command_name, running_usage, cli_program_name,
            cli_command_name);
    return 2;
}

/* ---- help ------------------------------------------------------------- */

void cli_help_line(FILE *out, const char *flag, const char *explanation)
{
    enum { FLAG_WIDTH = 28, WIDTH = 100 };
    int used = fprintf(out, "  %s", flag);
    if (used > FLAG_WIDTH - 1) {
        fputc('\n', out);
        used = 0;
    }
    fprintf(out, "%*s", FLAG_WIDTH - used, "");
    /* Words wrapped at WIDTH columns, continued under the explanation. */
    int column = FLAG_WIDTH;
    for (const char *p = explanation; *p;) {
        size_t word = strcspn(p, " ");
        if (column > FLAG_WIDTH && column + 1 + (int)word > WIDTH) {
            fprintf(out, "\n%*s", FLAG_WIDTH, "");
            column = FLAG_WIDTH;
        } else if (column > FLAG_WIDTH) {
            fputc(' ', out);
            column++;
        }
        fwrite(p, 1, word, out);
        column += (int)word;
        p += word;
        while (*p == ' ')
            p++;
    }
    fputc('\n', out);
}

void cli_help_end(FILE *out, bool json)
{
    if (json)
        cli_help_line(out, "--json", "print one JSON object on stdout");
    cli_help_line(out, "-h, --help", "this help");
}

static void int_text(int64_t v, char *out, size_t size)
{
    if (v == INT64_MAX || v == INT64_MIN)
        snprintf(out, size, "%s", v > 0 ? "2^63 - 1" : "-2^63");
    else if (v == INT32_MAX)
        snprintf(out, size, "2^31 - 1");
    else
        snprintf(out, size, "%lld", (long long)v);
}

void cli_option_range(int object, int option, const char *const *choices, char *out,
                      size_t size)
{
    int type = SUBSAE_OPTION_INT, flags = 0;
    out[0] = '\0';
    if (subsae_option_info(object, option, NULL, &type, &flags, NULL) != SUBSAE_OK)
        return;
    const char *automatic = flags & SUBSAE_OPTION_ZERO_MEANS_AUTO ? " = automatic" : "";
    if (type == SUBSAE_OPTION_DOUBLE) {
        double lo, hi, def;
        subsae_option_double_bounds(object, option, &lo, &hi, &def);
        snprintf(out, size, "default %g%s; %s %g, %s %g", def, automatic,
                 flags & SUBSAE_OPTION_MIN_EXCLUSIVE ? "above" : "from", lo,
                 flags & SUBSAE_OPTION_MAX_EXCLUSIVE ? "below" : "up to", hi);
        return;
    }
    int64_t lo, hi, def;
    subsae_option_int_bounds(object, option, &lo, &hi, &def);
    if (choices) {
        int n = snprintf(out, size, "default %s; one of", choices[def]);
        for (int64_t v = lo; v <= hi && n > 0 && (size_t)n < size; v++)
            n += snprintf(out + n, size - (size_t)n, "%s %s", v > lo ? "," : "", choices[v]);
        return;
    }
    char a[32], b[32];
    int_text(lo, a, sizeof a);
    int_text(hi, b, sizeof b);
    if (lo == INT64_MIN && hi == INT64_MAX)
        snprintf(out, size, "default %lld%s; any whole number", (long long)def, automatic);
    else if (hi == INT64_MAX)
        snprintf(out, size, "default %lld%s; at least %s", (long long)def, automatic, a);
    else
        snprintf(out, size, "default %lld%s; %s to %s", (long long)def, automatic, a, b);
}

int64_t cli_max_threads(void)
{
    int64_t hi = 1;
    subsae_option_int_bounds(SUBSAE_OBJECT_TRAINER, SUBSAE_TRAIN_THREADS, NULL, &hi, NULL);
    return hi;
}

/* ---- messages ------------------------------------------------------- */

int cli_fail(const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    fprintf(stderr, "%s %s: ", cli_program_name, cli_command_name);
    vfprintf(stderr, fmt, args);
    fputc('\n', stderr);
    va_end(args);
    return 1;
}

int cli_check(int status, const char *what)
{
    if (status == SUBSAE_OK)
        return 0;
    /* Another worker failed (subsae-mpi): it printed why. */
    if (subsae_last_error_reason() == SUBSAE_REASON_PEER_FAILED)
        return 1;
    const bool nonfinite = subsae_last_error_reason() == SUBSAE_REASON_NONFINITE_INPUT;
    return cli_fail("%s: %s (%s)%s%s", what, subsae_last_error(), subsae_status_string(status),
                    nonfinite && cli_nonfinite_hint ? "; " : "",
                    nonfinite && cli_nonfinite_hint ? cli_nonfinite_hint : "");
}

bool cli_parse_int64(const char *option, const char *text, int64_t min, int64_t max,
                     int64_t *out)
{
    char *end = NULL;
    errno = 0;
    long long value = strtoll(text, &end, 10);
    if (errno || end == text || *end != '\0' || value < min || value > max) {
        cli_fail("%s: '%s' is not a whole number in [%lld, %lld]", option, text,
                 (long long)min, (long long)max);
        return false;
    }
    *out = value;
    return true;
}

bool cli_parse_double(const char *option, const char *text, double min, double max,
                      double *out)
{
    char *end = NULL;
    errno = 0;
    double value = strtod(text, &end);
    if (errno || end == text || *end != '\0' || !isfinite(value) || value < min ||
        value > max) {
        cli_fail("%s: '%s' is not a number in [%g, %g]", option, text, min, max);
        return false;
    }
    *out = value;
    return true;
}

int cli_match_int(const struct cli_int_option *options, size_t n, int argc, char **argv, int *i)
{
    for (size_t j = 0; j < n; j++) {
        if (strcmp(argv[*i], options[j].name))
            continue;
        if (*i + 1 >= argc) {
            cli_fail("%s needs a value", argv[*i]);
            return -1;
        }
        if (!cli_parse_int64(argv[*i], argv[*i + 1], options[j].min, options[j].max,
                             options[j].value))
            return -1;
        *i += 1;
        return 1;
    }
    return 0;
}

int cli_print_json(json_t *value)
{
    if (!value)
        return cli_fail("out of memory building the JSON output");
    int rc = json_dumpf(value, stdout, JSON_COMPACT | JSON_REAL_PRECISION(10));
    json_decref(value);
    if (rc != 0 || fputc('\n', stdout) == EOF || fflush(stdout) != 0)
        return cli_fail("cannot write to standard output");
    return 0;
}

bool cli_same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    return a && b && stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

int cli_check_not_among(const char *flag, const char *path, const char *const *files, int n,
                        const char *what)
{
    for (int i = 0; i < n; i++)
        if (cli_same_file(path, files[i]))
            return cli_fail("%s %s is %s; give another name", flag, path, what);
    return 0;
}
