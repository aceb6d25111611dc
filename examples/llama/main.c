/* subsae-llama: a transformer in the llama2.c checkpoint format, run in
 * the same process as libsubsae. It records activations, ranks them and
 * judges SAEs by the model's own loss — a plain client of subsae.h, and
 * the example of embedding the library in a program that produces
 * activations. */
#include "commands.h"
#include "host.h"

#include <stdio.h>
#include <string.h>

static const struct {
    const char *name, *what;
    int (*run)(int, char **);
} commands[] = {
    {"record", "write the activations of chosen sites to .npy files", llama_cmd_record},
    {"rank", "spectrum and effective rank of every chosen site, in-process", llama_cmd_rank},
    {"splice", "the model's loss with a site replaced by an SAE's reconstruction",
     llama_cmd_splice},
};

static void help(FILE *out)
{
    fprintf(out,
            "usage: subsae-llama COMMAND MODEL ... (MODEL: a llama2.c checkpoint, fp32)\n\n");
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        fprintf(out, "  %-7s %s\n", commands[i].name, commands[i].what);
    fprintf(out,
            "\nThe model's input, for every command: --tokens IDS.npy (int32 token ids,\n"
            "[sequences, positions], teacher-forced) or --sequences N --seq-len T --seed S\n"
            "(sampled at temperature 1 from the start token; default 64 x 256, seed 0).\n"
            "Sites, five per layer l: L{l}_attn_z (heads before W_O), L{l}_attn_out,\n"
            "L{l}_mlp_in (the MLP's normalised input), L{l}_mlp_out, L{l}_resid_post.\n"
            "--sites all|SITE,SITE... chooses them (default all). --json: one JSON object.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        help(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++) {
        if (strcmp(argv[1], commands[i].name))
            continue;
        host_command = commands[i].name;
        for (int a = 2; a < argc; a++)
            if (!strcmp(argv[a], "--help") || !strcmp(argv[a], "-h")) {
                help(stdout);
                return 0;
            }
        return commands[i].run(argc - 1, argv + 1);
    }
    fprintf(stderr, "subsae-llama: unknown command '%s'\n", argv[1]);
    help(stderr);
    return 2;
}
