/* Messages, number parsing and JSON output shared by the subcommands. */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *cli_program_name = "subsae";
const char *cli_command_name = "subsae";

/* ---- the subcommands ------------------------------------------------ */

enum { MAX_COMMANDS = 32 };

static struct command {
    const char *name;
    const char *usage;
    cli_command_fn run;
} commands[MAX_COMMANDS];
static int command_count;
static const char *running_usage = "";

void cli_register(const char *name, const char *usage, cli_command_fn run)
{
    if (command_count < MAX_COMMANDS) {
        commands[command_count].name = name;
        commands[command_count].usage = usage;
        commands[command_count].run = run;
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

int cli_run(const char *name, int argc, char **argv)
{
    for (int i = 0; i < command_count; i++) {
        if (!strcmp(name, commands[i].name)) {
            cli_command_name = commands[i].name;
            running_usage = commands[i].usage;
            return commands[i].run(argc, argv);
        }
    }
    fprintf(stderr, "%s: unknown subcommand '%s' (see %s --help)\n", cli_program_name, name,
            cli_program_name);
    return 2;
}

int cli_usage(void)
{
    fprintf(stderr, "usage: %s %s %s\n", cli_program_name, cli_command_name, running_usage);
    return 2;
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
    return cli_fail("%s: %s (%s)", what, subsae_last_error(), subsae_status_string(status));
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
