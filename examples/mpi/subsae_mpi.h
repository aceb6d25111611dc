/* MPI adapter for libsubsae's collective hook (subsae_allreduce_fn): the
 * library stays free of MPI; a program that uses MPI compiles this file
 * with mpicc and hands subsae_mpi_allreduce to the trainer or the subspace
 * estimator, with a pointer to its communicator as `user`.
 *
 *     MPI_Comm comm = MPI_COMM_WORLD;
 *     int rank, size;
 *     MPI_Comm_rank(comm, &rank);
 *     MPI_Comm_size(comm, &size);
 *     subsae_trainer_set_collective(t, subsae_mpi_allreduce, rank, size, &comm);
 *     subsae_trainer_init(t, my_rows, NULL);     // every rank, its own rows
 *     subsae_trainer_fit(t, my_rows, NULL, n);   // BATCH is the global batch
 *
 * The library calls it from the thread that called the library only, so
 * MPI_THREAD_FUNNELED is enough (the OpenMP threads never call MPI). */
#ifndef SUBSAE_MPI_H
#define SUBSAE_MPI_H

#include <mpi.h>
#include <stdint.h>

#include "subsae.h"

/* Sum `count` values of `dtype` (SUBSAE_DTYPE_F32 / F64) in place over the
 * communicator `*(MPI_Comm *)user` (MPI_COMM_WORLD when user is NULL), in
 * chunks of at most 2^30 values (MPI counts are int). Returns 0, or the
 * MPI error code (or -1 for another dtype). */
int subsae_mpi_allreduce(void *data, int64_t count, int dtype, void *user);

/* Rank and size of *comm attached to a trainer / a subspace estimator;
 * `comm` must outlive the handle's collective calls. Library status. */
int subsae_mpi_trainer(subsae_trainer *t, MPI_Comm *comm);
int subsae_mpi_subspace(subsae_subspace *s, MPI_Comm *comm);

#endif
