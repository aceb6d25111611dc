/* A run's output directory: creation, the lock, what it holds, and its
 * cleaning for --overwrite (see run_dir.h). */
#include "run_dir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char LOCK_FILE[] = ".subsae.lock";

/* dir/name into out ("" when it does not fit: such a path opens nothing). */
static void join(char *out, size_t size, const char *dir, const char *name)
{
    int n = snprintf(out, size, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= size)
        out[0] = '\0';
}

static bool exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* The holder's lines of a lock file, joined by ", " (its content is
 * ours: "pid N\nstarted T\ncommand C\n"). */
static void describe_holder(int fd, char *out, size_t size)
{
    char text[1024];
    ssize_t n = pread(fd, text, sizeof text - 1, 0);
    text[n > 0 ? n : 0] = '\0';
    out[0] = '\0';
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        size_t used = strlen(out);
        snprintf(out + used, size - used, "%s%s", used ? ", " : "", line);
    }
    if (!out[0])
        snprintf(out, size, "a process that is starting");
}

static void write_holder(int fd, int argc, char **argv)
{
    char text[4096], started[40];
    time_t now = time(NULL);
    struct tm utc;
    gmtime_r(&now, &utc);
    strftime(started, sizeof started, "%Y-%m-%dT%H:%M:%SZ", &utc);
    int n = snprintf(text, sizeof text, "pid %ld\nstarted %s\ncommand %s", (long)getpid(),
                     started, cli_program_name);
    for (int i = 0; i < argc && n > 0 && (size_t)n < sizeof text; i++)
        n += snprintf(text + n, sizeof text - (size_t)n, " %s", argv[i]);
    if (n < 0 || (size_t)n >= sizeof text - 1)
        n = (int)strlen(text);
    text[n++] = '\n';
    /* Best effort: the lock holds whether or not its description is written. */
    if (ftruncate(fd, 0) == 0 && pwrite(fd, text, (size_t)n, 0) == n)
        fsync(fd);
}

int run_dir_lock(const char *dir, int argc, char **argv, bool *created)
{
    struct stat st;
    *created = false;
    if (stat(dir, &st) == 0 && !S_ISDIR(st.st_mode)) {
        cli_fail("--out %s: exists and is not a directory", dir);
        return -1;
    }
    if (mkdir(dir, 0777) == 0) {
        *created = true;
    } else if (errno != EEXIST) {
        cli_fail("--out %s: cannot create the directory: %s", dir, strerror(errno));
        return -1;
    }
    char path[4200];
    join(path, sizeof path, dir, LOCK_FILE);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0) {
        cli_fail("--out %s: cannot write in the directory: %s", dir, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int err = errno;
        char holder[1100];
        describe_holder(fd, holder, sizeof holder);
        close(fd);
        if (err == EWOULDBLOCK)
            cli_fail("--out %s is in use by another run (%s); wait for it to finish or give "
                     "another --out",
                     dir, holder);
        else
            cli_fail("--out %s: cannot lock %s: %s", dir, path, strerror(err));
        return -1;
    }
    write_holder(fd, argc, argv);
    return fd;
}

/* Whether `dir` holds no entry but the lock file. */
static bool only_the_lock(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return false;
    bool only = true;
    for (const struct dirent *e; only && (e = readdir(d));)
        only = !strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") ||
               !strcmp(e->d_name, LOCK_FILE);
    closedir(d);
    return only;
}

void run_dir_release(const char *dir, int fd, bool created)
{
    if (fd < 0)
        return;
    char path[4200];
    join(path, sizeof path, dir, LOCK_FILE);
    /* Still holding the lock: no other run can be writing in it. */
    const bool remove = created && only_the_lock(dir) && unlink(path) == 0;
    close(fd);
    if (remove)
        rmdir(dir);
}

const char *run_dir_id(const json_t *metadata)
{
    const json_t *id = json_object_get(json_object_get(metadata, "run"), "id");
    return json_is_string(id) ? json_string_value(id) : "";
}

static void record_run(const json_t *metadata, struct run_dir_contents *c)
{
    const json_t *run = json_object_get(metadata, "run");
    const json_t *started = json_object_get(run, "started");
    if (!c->id[0] && run_dir_id(metadata)[0])
        snprintf(c->id, sizeof c->id, "%s", run_dir_id(metadata));
    if (!c->started[0] && json_is_string(started))
        snprintf(c->started, sizeof c->started, "%s", json_string_value(started));
}

void run_dir_contents(const char *dir, struct run_dir_contents *c)
{
    memset(c, 0, sizeof *c);
    char cfg[4200], weights[4200], manifest[4300];
    join(cfg, sizeof cfg, dir, "cfg.json");
    join(weights, sizeof weights, dir, "sae_weights.safetensors");
    snprintf(manifest, sizeof manifest, "%s/%s/checkpoint.json", dir, RUN_DIR_CHECKPOINT);
    c->model = exists(cfg) || exists(weights);
    c->checkpoint = exists(manifest);
    /* The run's id is in both (cfg.json holds the run's metadata at the
     * top level, checkpoint.json under "metadata"). */
    json_t *j = c->checkpoint ? json_load_file(manifest, 0, NULL) : NULL;
    record_run(json_object_get(j, "metadata"), c);
    json_decref(j);
    j = c->model ? json_load_file(cfg, 0, NULL) : NULL;
    record_run(j, c);
    json_decref(j);
}

static int remove_file(const char *path)
{
    if (unlink(path) != 0 && errno != ENOENT)
        return cli_fail("--overwrite: cannot remove %s: %s", path, strerror(errno));
    return 0;
}

int run_dir_clear(const char *dir)
{
    static const char *const files[] = {"cfg.json", "sae_weights.safetensors", RUN_DIR_SPARSITY};
    char path[4200];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        join(path, sizeof path, dir, files[i]);
        if (remove_file(path))
            return 1;
    }
    return run_dir_remove_checkpoint(dir);
}

int run_dir_remove_checkpoint(const char *dir)
{
    /* Its manifest first (then nothing names the state files), then the
     * state files, then the directory if empty. */
    char ckpt[4200], path[4300];
    join(ckpt, sizeof ckpt, dir, RUN_DIR_CHECKPOINT);
    join(path, sizeof path, ckpt, "checkpoint.json");
    if (remove_file(path))
        return 1;
    DIR *d = opendir(ckpt);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL)
        if (!strncmp(e->d_name, "state-", 6))
            unlinkat(dirfd(d), e->d_name, 0);
    if (d)
        closedir(d);
    rmdir(ckpt); /* fails, harmlessly, when something else is in it */
    return 0;
}

json_t *run_dir_read_checkpoint(const char *checkpoint_dir)
{
    char path[4200];
    join(path, sizeof path, checkpoint_dir, "checkpoint.json");
    json_error_t error;
    json_t *j = json_load_file(path, 0, &error);
    if (!json_is_object(j)) {
        json_decref(j);
        cli_fail("--resume: cannot read %s: %s", path, error.text);
        return NULL;
    }
    return j;
}
