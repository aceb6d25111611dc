/* One thread count for the library's OpenMP loops and for OpenBLAS, so that
 * the two never oversubscribe the machine. Until the caller chooses, the
 * count is whatever OpenBLAS chose at load time (it honours
 * OPENBLAS_NUM_THREADS / OMP_NUM_THREADS, else the number of cores). */
#include "internal.h"

#include <cblas.h>
#include <omp.h>
#include <unistd.h>

static _Atomic int configured_threads;

static int online_processors(void)
{
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    return online > 0 ? (int)online : 1;
}

int subsae_set_num_threads(int n)
{
    if (n <= 0)
        n = online_processors();
    configured_threads = n;
    openblas_set_num_threads(n);
    return SUBSAE_OK;
}

int subsae_get_num_threads(void)
{
    int n = configured_threads;
    if (n > 0)
        return n;
    n = openblas_get_num_threads();
    return n > 0 ? n : 1;
}

int subsae__threads(void)
{
    int n = subsae_get_num_threads();
    /* OpenBLAS's OpenMP build takes its thread count from the calling
     * thread's OpenMP setting, which openblas_set_num_threads changes only
     * for the thread that called it: a library call from another thread
     * would run OpenBLAS on the OpenMP default instead (and give other
     * bits). Every call that uses OpenBLAS asks for the count here first,
     * so align the calling thread. */
    if (configured_threads > 0 && omp_get_max_threads() != n)
        omp_set_num_threads(n);
    return n;
}
