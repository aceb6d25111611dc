/* `subsae version [--json]`: the library version and thread count, and
 * what runs the encoder's product: oneDNN's instruction set and the kernel
 * of each precision (ISSUE 17). */
#include "cli.h"

#include <stdio.h>
#include <string.h>

static const char *precision_name(int precision)
{
    return precision == SUBSAE_PRECISION_BF16 ? "bf16" : "fp32";
}

static json_t *version_json(void)
{
    return json_pack("{s:s, s:I, s:i, s:s, s:s, s:s, s:b, s:s}", "version",
                     subsae_version_string(), "version_number",
                     (json_int_t)subsae_version_number(), "threads", subsae_get_num_threads(),
                     "onednn_isa", subsae_encoder_isa(), "encoder_kernel_fp32",
                     subsae_encoder_kernel(SUBSAE_PRECISION_FP32), "encoder_kernel_bf16",
                     subsae_encoder_kernel(SUBSAE_PRECISION_BF16), "bf16_native",
                     subsae_precision_resolve(SUBSAE_PRECISION_AUTO) == SUBSAE_PRECISION_BF16,
                     "precision_auto",
                     precision_name(subsae_precision_resolve(SUBSAE_PRECISION_AUTO)));
}

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
        return cli_print_json(version_json());
    printf("libsubsae %s (%d threads)\n", subsae_version_string(), subsae_get_num_threads());
    const int automatic = subsae_precision_resolve(SUBSAE_PRECISION_AUTO);
    printf("encoder: oneDNN ISA %s; fp32 %s; bf16 %s%s; auto = %s\n", subsae_encoder_isa(),
           subsae_encoder_kernel(SUBSAE_PRECISION_FP32),
           subsae_encoder_kernel(SUBSAE_PRECISION_BF16),
           automatic == SUBSAE_PRECISION_BF16 ? "" : " (not native: refused)",
           precision_name(automatic));
    return 0;
}

CLI_HELP(version)
{
    fprintf(out, "The version of the libsubsae the program runs on, its thread count, and\n"
                 "what computes the encoder's product: the instruction set oneDNN uses\n"
                 "(ONEDNN_MAX_CPU_ISA lowers it), the kernel of fp32 and of bf16, and\n"
                 "what --precision auto picks here.\n\n");
    cli_help_end(out, true);
}
