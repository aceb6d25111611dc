/* Shared plumbing of the `subsae` command-line program (and of
 * `subsae-mpi`, which links the train and rank subcommands with an MPI
 * main: see tools/dist.h). The programs are clients of the public API
 * only; each subcommand lives in its own cmd_<name>.c and registers itself
 * with CLI_COMMAND. */
#ifndef SUBSAE_CLI_H
#define SUBSAE_CLI_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "subsae.h"

typedef int (*cli_command_fn)(int argc, char **argv);
typedef void (*cli_help_fn)(FILE *out);
void cli_register(const char *name, const char *usage, cli_command_fn run);
/* The help of subcommand `name` (what follows its usage line). */
void cli_register_help(const char *name, cli_help_fn help);

/* Run the registered subcommand `name` (argv[0] is its name): 2 with a
 * message when there is none. With --help or -h among the arguments it
 * prints the usage line and the command's help on stdout instead and
 * returns 0. */
int cli_run(const char *name, int argc, char **argv);
/* "  name     usage" for every registered subcommand, sorted by name. */
void cli_print_commands(FILE *out);

/* CLI_COMMAND(inspect, "FILE... [--json]") { ... return 0; } */
#define CLI_COMMAND(name, usage)                                          \
    static int cli_cmd_##name(int argc, char **argv);                     \
    __attribute__((constructor)) static void cli_register_##name(void)    \
    {                                                                     \
        cli_register(#name, usage, cli_cmd_##name);                       \
    }                                                                     \
    static int cli_cmd_##name(int argc, char **argv)

/* CLI_HELP(inspect) { fprintf(out, "..."); }: the subcommand's help. */
#define CLI_HELP(name)                                                          \
    static void cli_help_##name(FILE *out);                                     \
    __attribute__((constructor)) static void cli_register_help_##name(void)     \
    {                                                                           \
        cli_register_help(#name, cli_help_##name);                              \
    }                                                                           \
    static void cli_help_##name(FILE *out)

/* One option in a help text: "  --flag METAVAR" and its explanation,
 * wrapped under it. */
void cli_help_line(FILE *out, const char *flag, const char *explanation);

/* The lines every help ends with: --json (when the command takes it) and
 * -h, --help. */
void cli_help_end(FILE *out, bool json);

/* The default and range of a library option (subsae_option_*), in words,
 * e.g. "default D; MIN to MAX", "default 0 = automatic; at least 0";
 * choices (may be NULL) name the values of a SUBSAE_OPTION_CHOICE
 * option. */
void cli_option_range(int object, int option, const char *const *choices, char *out,
                      size_t size);

/* The most threads the library takes (the bound of SUBSAE_TRAIN_THREADS). */
int64_t cli_max_threads(void);

/* Name of the program and of the running subcommand (for messages). */
extern const char *cli_program_name;
extern const char *cli_command_name;

/* Print "PROGRAM CMD: message" on stderr and return the exit code 1. */
int cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Whether paths a and b name the same existing file (device and inode). */
bool cli_same_file(const char *a, const char *b);

/* 1 with a message "FLAG PATH is WHAT; give another name" when PATH names
 * the same existing file as one of `files` (n of them, NULL entries
 * skipped), by whatever path: an output must never replace what the
 * command reads. 0 otherwise. */
int cli_check_not_among(const char *flag, const char *path, const char *const *files, int n,
                        const char *what);
/* If status is not SUBSAE_OK print the library's message and return 1,
 * else return 0. `what` says what was being done. Nothing is printed when
 * the failure is another worker's (SUBSAE_REASON_PEER_FAILED): that
 * worker prints it. */
int cli_check(int status, const char *what);
/* What the running command offers against rows holding NaN or infinity
 * ("--skip-nonfinite leaves such rows out"): cli_check appends it to a
 * message about such a row. NULL: nothing. */
extern const char *cli_nonfinite_hint;

/* Print the usage line of the running subcommand on stderr; return 2. */
int cli_usage(void);

/* Strict number parsing for option values; false (with a message printed)
 * when the text is not a whole number / finite number in [min, max]. */
bool cli_parse_int64(const char *option, const char *text, int64_t min, int64_t max,
                     int64_t *out);
bool cli_parse_double(const char *option, const char *text, double min, double max,
                      double *out);

/* A table of integer options, e.g. {"--dim", &o.dim, 1, INT32_MAX}. */
struct cli_int_option {
    const char *name;
    int64_t *value;
    int64_t min, max;
};

/* If argv[*i] is one of the n options, parse the value that follows it
 * into the option and advance *i past it: returns 1. Returns 0 when
 * argv[*i] is none of them, -1 (message printed) when the value is missing
 * or out of range. */
int cli_match_int(const struct cli_int_option *options, size_t n, int argc, char **argv, int *i);

/* Print a JSON value on stdout as one line and release it. Returns 0, or 1
 * when it cannot be written. */
int cli_print_json(json_t *value);

#endif
