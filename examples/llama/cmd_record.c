/* subsae-llama record: run the model and write every chosen site's
 * activations to DIR/SITE.npy (rows sequence-major) and the ids to
 * DIR/tokens.npy. The output directory is checked before the model runs,
 * and existing recordings are never replaced without --overwrite. */
#include "commands.h"
#include "host.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <sys/file.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char usage[] =
    "MODEL (--tokens IDS.npy | --sequences N --seq-len T [--seed S]) "
    "[--sites all|SITE,...] [--dtype f32|f16] --out DIR [--overwrite] [--json]";

struct record_options {
    struct host_options common;
    const char *model, *out;
    int dtype;
    bool overwrite;
};

static int parse(int argc, char **argv, struct record_options *o)
{
    for (int i = 1; i < argc; i++) {
        int common = host_common_option(argc, argv, &i, &o->common);
        if (common < 0)
            return 2;
        if (common)
            continue;
        const char *a = argv[i];
        if (!strcmp(a, "--overwrite")) {
            o->overwrite = true;
        } else if ((!strcmp(a, "--out") || !strcmp(a, "--dtype")) && i + 1 < argc) {
            const char *v = argv[++i];
            if (a[2] == 'o')
                o->out = v;
            else if (!strcmp(v, "f32") || !strcmp(v, "f16"))
                o->dtype = v[1] == '3' ? SUBSAE_DTYPE_F32 : SUBSAE_DTYPE_F16;
            else
                return host_fail("--dtype is f32 or f16, not '%s'", v) + 1;
        } else if (a[0] != '-' && !o->model) {
            o->model = a;
        } else {
            host_fail("unexpected argument '%s'", a);
            return host_usage(usage);
        }
    }
    if (!o->model || !o->out)
        return host_usage(usage);
    return 0;
}

static void path_of(char *out, size_t size, const char *dir, const char *name)
{
    snprintf(out, size, "%s/%s.npy", dir, name);
}

/* One recording at a time in a directory: two at once would mix the
 * sites of two samplings. The lock (DIR/.subsae-llama.lock, flock) lasts
 * until the process exits. */
static int lock_out(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/.subsae-llama.lock", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0)
        return host_fail("cannot create %s: %s", path, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        close(fd);
        return host_fail("another subsae-llama record is writing into %s", dir);
    }
    return 0; /* fd stays open: the lock is released when the process exits */
}

/* DIR exists (or is created) as a writable directory that no other
 * recording is writing, and holds none of the files this run writes
 * unless --overwrite. */
static int check_out(const struct record_options *o, const struct llama_config *c,
                     const bool *selected)
{
    struct stat st;
    if (stat(o->out, &st) != 0 && mkdir(o->out, 0777) != 0)
        return host_fail("cannot create the output directory %s: %s", o->out,
                         strerror(errno));
    if (stat(o->out, &st) != 0 || !S_ISDIR(st.st_mode))
        return host_fail("--out %s is not a directory", o->out);
    if (access(o->out, W_OK | X_OK) != 0)
        return host_fail("cannot write into %s: %s", o->out, strerror(errno));
    if (lock_out(o->out) != 0)
        return 1;
    if (o->overwrite)
        return 0;
    char path[4096], name[64];
    for (int s = -1; s < c->n_layers * LLAMA_SITE_KINDS; s++) {
        if (s >= 0 && !selected[s])
            continue;
        if (s < 0)
            snprintf(name, sizeof name, "tokens");
        else
            llama_site_name(s, name, sizeof name);
        path_of(path, sizeof path, o->out, name);
        if (access(path, F_OK) == 0)
            return host_fail("%s already exists: choose another --out, or --overwrite",
                             path);
    }
    return 0;
}

static int save_all(const struct record_options *o, const struct host_collector *col,
                    const struct llama_tokens *t)
{
    char path[4096], name[64], err[512];
    for (int s = 0; s < col->n_sites; s++) {
        if (!col->buffers[s])
            continue;
        llama_site_name(s, name, sizeof name);
        path_of(path, sizeof path, o->out, name);
        int status = subsae_buffer_save_npy(col->buffers[s], path, o->dtype);
        if (status != SUBSAE_OK)
            return host_fail_library(status, path);
    }
    char tmp[4200];
    path_of(path, sizeof path, o->out, "tokens");
    snprintf(tmp, sizeof tmp, "%s.partial", path);
    if (llama_tokens_save(t, tmp, err, sizeof err) != 0 || rename(tmp, path) != 0) {
        unlink(tmp);
        return host_fail("%s", *err ? err : strerror(errno));
    }
    return 0;
}

static int report(const struct record_options *o, const struct host_collector *col,
                  const struct llama_tokens *t, double seconds_model, double seconds_write)
{
    int n_sites = 0;
    for (int s = 0; s < col->n_sites; s++)
        n_sites += col->buffers[s] != NULL;
    long long tokens = (long long)t->n_seq * t->seq_len;
    const char *how = o->common.source.path ? "teacher-forced" : "sampled";
    if (!o->common.json) {
        printf("recorded %lld tokens (%d sequences x %d, %s) at %d sites into %s\n"
               "  model %.3f s, writing %.3f s\n",
               tokens, t->n_seq, t->seq_len, how, n_sites, o->out, seconds_model,
               seconds_write);
        return 0;
    }
    json_t *sites = json_array();
    char name[64];
    for (int s = 0; s < col->n_sites; s++)
        if (col->buffers[s]) {
            llama_site_name(s, name, sizeof name);
            json_array_append_new(sites, json_string(name));
        }
    json_t *j = json_pack("{s:I, s:i, s:i, s:s, s:o, s:s, s:s, s:f, s:f}", "tokens",
                          (json_int_t)tokens, "sequences", t->n_seq, "seq_len", t->seq_len,
                          "tokens_from", how, "sites", sites, "dtype",
                          subsae_dtype_name(o->dtype), "out", o->out, "seconds_model",
                          seconds_model, "seconds_write", seconds_write);
    return host_print_json(j);
}

int llama_cmd_record(int argc, char **argv)
{
    struct record_options o = {.common = {.sites = "all"}, .dtype = SUBSAE_DTYPE_F32};
    int rc = parse(argc, argv, &o);
    if (rc)
        return rc;
    struct llama_model m;
    char err[512];
    if (llama_model_load(o.model, &m, err, sizeof err) != 0)
        return host_fail("%s", err);
    bool *selected = calloc((size_t)m.config.n_layers * LLAMA_SITE_KINDS, sizeof *selected);
    struct llama_tokens t = {0};
    struct host_collector col = {0};
    rc = selected ? host_parse_sites(&m.config, o.common.sites, selected)
                  : host_fail("out of memory");
    if (!rc)
        rc = check_out(&o, &m.config, selected);
    if (!rc && llama_tokens_prepare(&m, &o.common.source, &t, err, sizeof err) != 0)
        rc = host_fail("%s", err);
    if (!rc)
        rc = host_collector_init(&col, &m.config, &t, selected);
    double start = host_now(), ran = start;
    if (!rc) {
        rc = host_feed(&m, &o.common, &t, host_collect, &col);
        ran = host_now();
    }
    if (!rc)
        rc = host_collector_finish(&col);
    if (!rc)
        rc = save_all(&o, &col, &t);
    if (!rc)
        rc = report(&o, &col, &t, ran - start, host_now() - ran);
    host_collector_free(&col);
    llama_tokens_free(&t);
    free(selected);
    llama_model_free(&m);
    return rc;
}
