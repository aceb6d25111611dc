/* MPI adapter for libsubsae's collective hook (see subsae_mpi.h). */
#include "subsae_mpi.h"

enum { CHUNK = 1 << 30 }; /* values per MPI_Allreduce (MPI counts are int) */

int subsae_mpi_allreduce(void *data, int64_t count, int dtype, void *user)
{
    MPI_Comm comm = user ? *(MPI_Comm *)user : MPI_COMM_WORLD;
    MPI_Datatype type;
    size_t width;
    if (dtype == SUBSAE_DTYPE_F32) {
        type = MPI_FLOAT;
        width = 4;
    } else if (dtype == SUBSAE_DTYPE_F64) {
        type = MPI_DOUBLE;
        width = 8;
    } else {
        return -1;
    }
    char *p = data;
    for (int64_t done = 0; done < count; done += CHUNK) {
        int n = (int)(count - done < CHUNK ? count - done : CHUNK);
        int rc = MPI_Allreduce(MPI_IN_PLACE, p + (size_t)done * width, n, type, MPI_SUM, comm);
        if (rc != MPI_SUCCESS)
            return rc;
    }
    return 0;
}

static int rank_size(MPI_Comm *comm, int *rank, int *size)
{
    if (!comm || MPI_Comm_rank(*comm, rank) != MPI_SUCCESS ||
        MPI_Comm_size(*comm, size) != MPI_SUCCESS)
        return SUBSAE_E_INVALID;
    return SUBSAE_OK;
}

int subsae_mpi_trainer(subsae_trainer *t, MPI_Comm *comm)
{
    int rank, size;
    int rc = rank_size(comm, &rank, &size);
    return rc ? rc : subsae_trainer_set_collective(t, subsae_mpi_allreduce, rank, size, comm);
}

int subsae_mpi_subspace(subsae_subspace *s, MPI_Comm *comm)
{
    int rank, size;
    int rc = rank_size(comm, &rank, &size);
    return rc ? rc : subsae_subspace_set_collective(s, subsae_mpi_allreduce, rank, size, comm);
}
