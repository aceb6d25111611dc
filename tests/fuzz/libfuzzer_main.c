/* The libFuzzer entry point around one harness function, chosen at compile
 * time with -DFUZZ_TARGET=subsae_fuzz_<name> (see `make fuzz`). */
#include "fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    /* One thread: throughput comes from libFuzzer jobs, not from OpenMP. */
    subsae_set_num_threads(1);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return FUZZ_TARGET(data, size);
}
