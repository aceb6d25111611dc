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
void cli_register(const char *name, const char *usage, cli_command_fn run);

/* Run the registered subcommand `name` (argv[0] is its name): 2 with a
 * message when there is none. */
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

/* Name of the program and of the running subcommand (for messages). */
extern const char *cli_program_name;
extern const char *cli_command_name;

/* Print "PROGRAM CMD: message" on stderr and return the exit code 1. */
int cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* If status is not SUBSAE_OK print the library's message and return 1,
 * else return 0. `what` says what was being done. Nothing is printed when
 * the failure is another worker's (SUBSAE_REASON_PEER_FAILED): that
 * worker prints it. */
int cli_check(int status, const char *what);
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
