/* `subsae SUBCOMMAND ...`: dispatch to the registered subcommands. */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void print_help(FILE *out)
{
    fprintf(out, "subsae %s — sparse dictionary learning on transformer activations\n\n"
                 "usage: subsae SUBCOMMAND [OPTIONS]\n\n", subsae_version_string());
    cli_print_commands(out);
    fprintf(out, "\nEvery subcommand takes --json (one JSON object on stdout) and --help (its "
                 "options,\nwith their defaults and ranges).\n");
}

int main(int argc, char **argv)
{
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
    return cli_run(argv[1], argc - 1, argv + 1);
}
