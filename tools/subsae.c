/* `subsae SUBCOMMAND ...`: dispatch to the registered subcommands. */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

int cli_usage(void)
{
    fprintf(stderr, "usage: subsae %s %s\n", cli_command_name, running_usage);
    return 2;
}

static int compare_commands(const void *a, const void *b)
{
    return strcmp(((const struct command *)a)->name, ((const struct command *)b)->name);
}

static void print_help(FILE *out)
{
    fprintf(out, "subsae %s — sparse dictionary learning on transformer activations\n\n"
                 "usage: subsae SUBCOMMAND [OPTIONS]\n\n", subsae_version_string());
    for (int i = 0; i < command_count; i++)
        fprintf(out, "  %-8s %s\n", commands[i].name, commands[i].usage);
    fprintf(out, "\nEvery subcommand takes --json (one JSON object on stdout).\n");
}

int main(int argc, char **argv)
{
    qsort(commands, (size_t)command_count, sizeof commands[0], compare_commands);
    if (argc < 2) {
        print_help(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        print_help(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("subsae %s\n", subsae_version_string());
        return 0;
    }
    for (int i = 0; i < command_count; i++) {
        if (!strcmp(argv[1], commands[i].name)) {
            cli_command_name = commands[i].name;
            running_usage = commands[i].usage;
            return commands[i].run(argc - 1, argv + 1);
        }
    }
    fprintf(stderr, "subsae: unknown subcommand '%s' (see subsae --help)\n", argv[1]);
    return 2;
}
