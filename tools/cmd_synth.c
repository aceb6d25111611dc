/* `subsae synth`: write synthetic activations with a known sparse
 * dictionary confined to a subspace (and, optionally, the dictionary). */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct synth_options {
    int64_t dim, subspace, features, k, tokens, seed;
    const char *out, *dictionary;
    bool json, overwrite;
};

static int parse_synth(int argc, char **argv, struct synth_options *o)
{
    *o = (struct synth_options){.dim = 64, .subspace = 40, .features = 512, .k = 4,
                                .tokens = 65536, .seed = 0};
    const struct cli_int_option ints[] = {
        {"--dim", &o->dim, 1, INT32_MAX},         {"--subspace", &o->subspace, 1, INT32_MAX},
        {"--features", &o->features, 1, INT32_MAX}, {"--k", &o->k, 1, INT32_MAX},
        {"--tokens", &o->tokens, 1, INT32_MAX},   {"--seed", &o->seed, 0, INT64_MAX}};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int matched = cli_match_int(ints, sizeof ints / sizeof ints[0], argc, argv, &i);
        if (matched < 0)
            return 2;
        if (matched)
            continue;
        if (!strcmp(a, "--json")) {
            o->json = true;
        } else if (!strcmp(a, "--overwrite")) {
            o->overwrite = true;
        } else if ((!strcmp(a, "--out") || !strcmp(a, "--dictionary")) && v) {
            *(!strcmp(a, "--out") ? &o->out : &o->dictionary) = v;
            i++;
        } else {
            return cli_usage();
        }
    }
    if (!o->out)
        return cli_fail("--out FILE.npy is required");
    if (o->subspace > o->dim || o->k > o->features)
        return cli_fail("need --subspace <= --dim and --k <= --features");
    /* Synthetic rows are cheap; what a slip of the name would replace may
     * be recorded activations. */
    const char *outputs[] = {o->out, o->dictionary};
    for (int i = 0; i < 2 && !o->overwrite; i++)
        if (outputs[i] && access(outputs[i], F_OK) == 0)
            return cli_fail("%s %s already exists; give --overwrite to replace it",
                            i ? "--dictionary" : "--out", outputs[i]);
    return 0;
}

CLI_COMMAND(synth, "--out FILE.npy [--dim D] [--subspace R] [--features F] [--k K] "
                   "[--tokens N] [--seed S] [--dictionary DICT.npy] [--overwrite] [--json]")
{
    struct synth_options o;
    int rc = parse_synth(argc, argv, &o);
    if (rc)
        return rc;
    float *dictionary = malloc((size_t)(o.features * o.dim) * sizeof *dictionary);
    if (!dictionary)
        return cli_fail("out of memory for the dictionary");
    subsae_buffer *acts = NULL, *atoms = NULL;
    rc = cli_check(subsae_synth(o.dim, o.subspace, o.features, o.k, o.tokens, (uint64_t)o.seed,
                                &acts, dictionary),
                   "synthesis failed");
    if (!rc)
        rc = cli_check(subsae_buffer_save_npy(acts, o.out, SUBSAE_DTYPE_F32), o.out);
    if (!rc && o.dictionary) {
        rc = cli_check(subsae_buffer_wrap(dictionary, SUBSAE_DTYPE_F32, o.features, o.dim, o.dim,
                                          SUBSAE_BORROW, &atoms),
                       "dictionary");
        if (!rc)
            rc = cli_check(subsae_buffer_save_npy(atoms, o.dictionary, SUBSAE_DTYPE_F32),
                           o.dictionary);
    }
    subsae_buffer_free(atoms);
    subsae_buffer_free(acts);
    free(dictionary);
    if (rc)
        return rc;
    if (o.json)
        return cli_print_json(json_pack(
            "{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:s?}", "out", o.out, "tokens",
            (json_int_t)o.tokens, "dim", (json_int_t)o.dim, "subspace", (json_int_t)o.subspace,
            "features", (json_int_t)o.features, "k", (json_int_t)o.k, "seed",
            (json_int_t)o.seed, "dictionary", o.dictionary));
    fprintf(stderr, "wrote %s: %lld tokens x %lld dims, %lld atoms in a %lld-dim subspace, "
                    "%lld per token\n",
            o.out, (long long)o.tokens, (long long)o.dim, (long long)o.features,
            (long long)o.subspace, (long long)o.k);
    return 0;
}

CLI_HELP(synth)
{
    fprintf(out, "Synthetic activations made of a known sparse dictionary: F unit atoms in a\n"
                 "random R-dimensional subspace of D dimensions, K atoms per token with\n"
                 "coefficients in [0.5, 1.5], a constant offset and noise of 0.01 per\n"
                 "dimension; deterministic in the seed (the data of subsae demo).\n\n");
    cli_help_line(out, "--out FILE.npy", "where the rows go (required)");
    cli_help_line(out, "--dim D", "width (default 64)");
    cli_help_line(out, "--subspace R", "dimension of the atoms' subspace (default 40; at most D)");
    cli_help_line(out, "--features F", "atoms (default 512)");
    cli_help_line(out, "--k K", "atoms per token (default 4; at most F)");
    cli_help_line(out, "--tokens N", "rows (default 65536)");
    cli_help_line(out, "--seed S", "seed (default 0)");
    cli_help_line(out, "--dictionary DICT.npy", "also save the atoms, F x D");
    cli_help_line(out, "--overwrite", "replace existing files (refused otherwise)");
    cli_help_end(out, true);
}
