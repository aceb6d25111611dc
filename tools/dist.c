/* Data-parallel runs of the train and rank subcommands (see dist.h). */
#include "dist.h"

#include <stdlib.h>
#include <string.h>

struct cli_dist *cli_dist;

bool cli_dist_root(void)
{
    return !cli_dist || cli_dist->rank == 0;
}

int cli_dist_sum(double *values, int64_t n)
{
    if (!cli_dist || n <= 0)
        return 0;
    if (cli_dist->allreduce(values, n, SUBSAE_DTYPE_F64, cli_dist->user) != 0)
        return cli_fail("the all-reduce between the workers failed");
    return 0;
}

int cli_dist_agree(int status)
{
    if (!cli_dist)
        return status;
    double failed = status != 0;
    if (cli_dist_sum(&failed, 1))
        return 1;
    return failed > 0.0 ? 1 : 0;
}

int cli_dist_ready(int status, double *sum)
{
    if (!cli_dist)
        return status;
    double v[2] = {status != 0, status ? 0.0 : *sum};
    if (cli_dist_sum(v, 2))
        return 1;
    if (v[0] > 0.0)
        return 1;
    *sum = v[1];
    return 0;
}

static const char RANK_MARK[] = "{rank}";

bool cli_dist_sharded(char *const *paths, int n)
{
    for (int i = 0; i < n; i++)
        if (strstr(paths[i], RANK_MARK))
            return true;
    return false;
}

char *cli_dist_path(const char *path)
{
    char rank[32];
    snprintf(rank, sizeof rank, "%lld", (long long)(cli_dist ? cli_dist->rank : 0));
    size_t marks = 0;
    for (const char *p = strstr(path, RANK_MARK); p; p = strstr(p + 1, RANK_MARK))
        marks++;
    size_t length = strlen(path) + marks * strlen(rank) + 1;
    char *out = malloc(length);
    if (!out)
        return NULL;
    char *w = out;
    for (const char *p = path; *p;) {
        if (!strncmp(p, RANK_MARK, sizeof RANK_MARK - 1)) {
            w += sprintf(w, "%s", rank);
            p += sizeof RANK_MARK - 1;
        } else {
            *w++ = *p++;
        }
    }
    *w = '\0';
    return out;
}

int cli_dist_part(subsae_buffer *buf, bool sharded, subsae_buffer **part)
{
    if (!cli_dist || sharded) {
        *part = buf;
        return SUBSAE_OK;
    }
    const int64_t n = subsae_buffer_rows(buf), r = cli_dist->rank, w = cli_dist->size;
    const int64_t first = n * r / w, last = n * (r + 1) / w;
    return subsae_buffer_view(buf, first, last - first, part);
}

json_t *cli_dist_json(void)
{
    if (!cli_dist)
        return json_object();
    return json_pack("{s:I, s:{s:I, s:I, s:f}}", "workers", (json_int_t)cli_dist->size,
                     "allreduce", "calls", (json_int_t)cli_dist->calls, "bytes",
                     (json_int_t)cli_dist->bytes, "seconds", cli_dist->seconds);
}

void cli_dist_print(void)
{
    if (cli_dist)
        printf("%lld workers; all-reduce on worker 0: %lld calls, %.3f MB, %.2f s\n",
               (long long)cli_dist->size, (long long)cli_dist->calls,
               (double)cli_dist->bytes / 1e6, cli_dist->seconds);
}

int cli_dist_trainer(subsae_trainer *t)
{
    if (!cli_dist)
        return SUBSAE_OK;
    return subsae_trainer_set_collective(t, cli_dist->allreduce, cli_dist->rank, cli_dist->size,
                                         cli_dist->user);
}

int cli_dist_subspace(subsae_subspace *s)
{
    if (!cli_dist)
        return SUBSAE_OK;
    return subsae_subspace_set_collective(s, cli_dist->allreduce, cli_dist->rank,
                                          cli_dist->size, cli_dist->user);
}
