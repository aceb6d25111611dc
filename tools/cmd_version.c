/* `subsae version [--json]`: the library version and thread count. */
#include "cli.h"

#include <stdio.h>
#include <string.h>

CLI_COMMAND(version, "[--json]")
{
    bool json = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            json = true;
        else
            return cli_usage();
    }
    if (json)
        return cli_print_json(json_pack("{s:s, s:I, s:i}", "version", subsae_version_string(),
                                        "version_number", (json_int_t)subsae_version_number(),
                                        "threads", subsae_get_num_threads()));
    printf("libsubsae %s (%d threads)\n", subsae_version_string(), subsae_get_num_threads());
    return 0;
}

CLI_HELP(version)
{
    fprintf(out, "The version of the libsubsae the program runs on, and its thread count.\n\n");
    cli_help_end(out, true);
}
