/* `subsae eval DIR INPUT... [--tensor NAME] [--json]`: reconstruction
 * metrics of a saved SAE on activation files. */
#include "sae_cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

CLI_COMMAND(eval, "DIR INPUT... [--tensor NAME] [--json]")
{
    const char *dir = NULL, *tensor = NULL;
    bool json = false;
    char **inputs = calloc((size_t)argc, sizeof *inputs);
    int n_inputs = 0, status = 1;
    subsae_sae *sae = NULL;
    subsae_buffer *buf = NULL;
    if (!inputs)
        return cli_fail("out of memory");
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) {
            json = true;
        } else if (!strcmp(argv[i], "--tensor")) {
            if (i + 1 >= argc) {
                status = cli_fail("--tensor needs a value");
                goto done;
            }
            tensor = argv[++i];
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
    buf = sae_cli_open(inputs, n_inputs, tensor);
    if (!buf)
        goto done;
    double m[SUBSAE_METRIC_COUNT];
    double started = sae_cli_now();
    if (cli_check(subsae_sae_evaluate(sae, buf, NULL, m, SUBSAE_METRIC_COUNT),
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
    free(inputs);
    return status;
}
