/* `subsae eval DIR INPUT... [--target FILE...] [--tensor NAME] [--json]`:
 * reconstruction metrics of a saved SAE (or, with targets, a transcoder)
 * on activation files. */
#include "sae_cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

CLI_COMMAND(eval, "DIR INPUT... [--target FILE...] [--tensor NAME] [--json]")
{
    const char *dir = NULL, *tensor = NULL;
    bool json = false;
    char **inputs = calloc((size_t)argc, sizeof *inputs);
    char **targets = calloc((size_t)argc, sizeof *targets);
    int n_inputs = 0, n_targets = 0, status = 1;
    subsae_sae *sae = NULL;
    subsae_buffer *buf = NULL, *target = NULL;
    if (!inputs || !targets) {
        free(inputs);
        free(targets);
        return cli_fail("out of memory");
    }
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) {
            json = true;
        } else if (!strcmp(argv[i], "--tensor")) {
            if (i + 1 >= argc) {
                status = cli_fail("--tensor needs a value");
                goto done;
            }
            tensor = argv[++i];
        } else if (!strcmp(argv[i], "--target")) {
            /* --target FILE...: the files up to the next option. */
            while (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0)
                targets[n_targets++] = argv[++i];
            if (n_targets == 0) {
                status = cli_fail("--target needs one or more files");
                goto done;
            }
        } else if (argv[i][0] == '-' && argv[i][1] == '-') {
            cli_fail("unknown option %s (see subsae --help)", argv[i]);
            status = 2;
            goto done;
        } else if (!dir) {
            dir = argv[i];
        } else {
            inputs[n_inputs++] = argv[i];
        }
    }
    if (!dir || n_inputs == 0) {
        status = cli_usage();
        goto done;
    }
    if (cli_check(subsae_sae_load(dir, &sae), "cannot load the SAE"))
        goto done;
    if (n_targets > 0 && n_targets != n_inputs) {
        status = cli_fail("%d inputs but %d targets: give one target file per input file",
                          n_inputs, n_targets);
        goto done;
    }
    buf = sae_cli_open(inputs, n_inputs, tensor);
    if (!buf)
        goto done;
    if (n_targets > 0 && !(target = sae_cli_open(targets, n_targets, tensor)))
        goto done;
    double m[SUBSAE_METRIC_COUNT];
    double started = sae_cli_now();
    if (cli_check(subsae_sae_evaluate(sae, buf, target, m, SUBSAE_METRIC_COUNT),
                  "evaluation failed"))
        goto done;
    double seconds = sae_cli_now() - started;
    if (json) {
        status = cli_print_json(sae_cli_eval_json(m));
        goto done;
    }
    printf("%lld rows in %.2f s: MSE %.6g, FVU %.5f, explained variance %.5f, L0 %.3f, "
           "never fired %.2f%%, dense %.2f%%\n",
           (long long)subsae_buffer_rows(buf), seconds, m[SUBSAE_METRIC_MSE],
           m[SUBSAE_METRIC_FVU], m[SUBSAE_METRIC_EXPLAINED_VARIANCE], m[SUBSAE_METRIC_L0],
           100 * m[SUBSAE_METRIC_ZERO_FREQUENCY_FRACTION], 100 * m[SUBSAE_METRIC_DENSE_FRACTION]);
    status = fflush(stdout) == 0 ? 0 : cli_fail("cannot write to standard output");
done:
    subsae_sae_free(sae);
    subsae_buffer_free(buf);
    subsae_buffer_free(target);
    free(inputs);
    free(targets);
    return status;
}
