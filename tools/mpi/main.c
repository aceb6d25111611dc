/* `subsae-mpi train|rank ...`: the train and rank subcommands of `subsae`
 * (the same sources, options and output: tools/cmd_train.c, cmd_rank.c)
 * run by every rank of an MPI job, each on its part of the rows, with the
 * library's collective hook on MPI_Allreduce (examples/mpi/subsae_mpi.c).
 *
 *     mpirun -np 2 build/bin/subsae-mpi train FILE --features 4096 --k 32 ...
 *
 * Threads: unless --threads is given every rank uses (online cores / ranks
 * on its node), at least 1, the minimum over all ranks, so that the ranks
 * of a node do not oversubscribe it and every rank computes the shared
 * steps with the same thread count. */
#include "../dist.h"
#include "subsae_mpi.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static MPI_Comm world;

/* The adapter, counted (calls, bytes, seconds) for the report. */
static int counted_allreduce(void *data, int64_t count, int dtype, void *user)
{
    struct cli_dist *d = user;
    double start = MPI_Wtime();
    int rc = subsae_mpi_allreduce(data, count, dtype, &world);
    d->seconds += MPI_Wtime() - start;
    d->calls++;
    d->bytes += count * (dtype == SUBSAE_DTYPE_F64 ? 8 : 4);
    return rc;
}

static int default_threads(void)
{
    MPI_Comm node;
    int local = 1;
    if (MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node) ==
        MPI_SUCCESS) {
        MPI_Comm_size(node, &local);
        MPI_Comm_free(&node);
    }
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int threads = cores > local ? (int)(cores / local) : 1;
    MPI_Allreduce(MPI_IN_PLACE, &threads, 1, MPI_INT, MPI_MIN, world);
    return threads;
}

static void usage(FILE *out)
{
    fprintf(out, "subsae-mpi %s — `subsae train` and `subsae rank` over MPI ranks\n\n"
                 "usage: mpirun [-np N] [--hostfile HOSTS] subsae-mpi SUBCOMMAND [OPTIONS]\n\n",
            subsae_version_string());
    cli_print_commands(out);
    fprintf(out, "\nThe rows of the inputs are split between the ranks (or, when a path holds "
                 "{rank}, each rank\nreads its own files); --batch is the global batch. "
                 "Rank 0 prints and writes.\n");
}

int main(int argc, char **argv)
{
    int provided, rank = 0, size = 1;
    if (MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
        fprintf(stderr, "subsae-mpi: MPI_Init_thread failed\n");
        return 1;
    }
    world = MPI_COMM_WORLD;
    MPI_Comm_rank(world, &rank);
    MPI_Comm_size(world, &size);
    static char name[64];
    snprintf(name, sizeof name, rank == 0 ? "subsae-mpi" : "subsae-mpi[rank %d]", rank);
    cli_program_name = name;
    struct cli_dist dist = {.allreduce = counted_allreduce, .rank = rank, .size = size};
    dist.user = &dist;
    cli_dist = &dist;

    int status;
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        if (rank == 0)
            usage(argc < 2 ? stderr : stdout);
        status = argc < 2 ? 2 : 0;
    } else if (!strcmp(argv[1], "--version")) {
        if (rank == 0)
            printf("subsae-mpi %s\n", subsae_version_string());
        status = 0;
    } else {
        subsae_set_num_threads(default_threads()); /* --threads overrides it */
        status = cli_run(argv[1], argc - 1, argv + 1);
    }
    MPI_Finalize();
    return status;
}
