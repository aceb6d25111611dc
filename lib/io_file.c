/* File plumbing: whole-file read-only mappings, crash-safe (atomic)
 * writes, directory creation and paths in a directory. Every error names
 * the file. */
#include "io.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* strerror() is not thread-safe; with _DEFAULT_SOURCE and without
 * _GNU_SOURCE glibc gives the XSI strerror_r that fills a buffer. */
static const char *describe_errno(int code, char *text, size_t size)
{
    if (strerror_r(code, text, size) != 0)
        snprintf(text, size, "error %d", code);
    return text;
}

static int fail_system(const char *what, const char *path, int code)
{
    char text[128];
    return subsae__fail(SUBSAE_E_IO, SUBSAE_REASON_SYSTEM, "%s: %s: %s", path, what,
                        describe_errno(code, text, sizeof text));
}

/* ---- mapping -------------------------------------------------------- */

int subsae__map_file(const char *path, void **map, size_t *size)
{
    SUBSAE__NOT_NULL("subsae__map_file", path);
    if (!map || !size)
        return subsae__fail_null("subsae__map_file", !map ? "map" : "size");
    int fd;
    do
        fd = open(path, O_RDONLY | O_CLOEXEC);
    while (fd < 0 && errno == EINTR);
    if (fd < 0)
        return fail_system("cannot open", path, errno);
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int code = errno;
        close(fd);
        return fail_system("cannot stat", path, code);
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return subsae__fail(SUBSAE_E_IO, SUBSAE_REASON_SYSTEM, "%s: not a regular file%s", path,
                            S_ISDIR(st.st_mode) ? " (it is a directory)" : "");
    }
    if (st.st_size < 0 || (uint64_t)st.st_size > SIZE_MAX) {
        close(fd);
        return subsae__fail(SUBSAE_E_IO, SUBSAE_REASON_SYSTEM, "%s: size %lld cannot be mapped",
                            path, (long long)st.st_size);
    }
    size_t bytes = (size_t)st.st_size;
    void *mapped = NULL;
    if (bytes > 0) {
        mapped = mmap(NULL, bytes, PROT_READ, MAP_PRIVATE, fd, 0);
        if (mapped == MAP_FAILED) {
            int code = errno;
            close(fd);
            return fail_system("cannot map", path, code);
        }
    }
    close(fd); /* the mapping keeps the file alive */
    *map = mapped;
    *size = bytes;
    return SUBSAE_OK;
}

/* ---- crash-safe writes ---------------------------------------------- */

struct subsae__atomic_file {
    char *path;      /* final name */
    char *temporary; /* where the data goes until commit */
    char *dir;       /* its directory, synced after the rename (allocated up
                        front: a commit that renamed must not then fail for
                        want of memory) */
    int fd;
    bool failed; /* a write failed: commit refuses */
};

static _Atomic unsigned long temporary_counter;

/* Directory part of `path` ("." when it has none) into a new string. */
static char *directory_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return subsae__strdup(".");
    size_t n = slash == path ? 1 : (size_t)(slash - path);
    char *dir = subsae__malloc(n + 1);
    if (dir) {
        memcpy(dir, path, n);
        dir[n] = '\0';
    }
    return dir;
}

/* fsync a directory so that a rename or a new entry in it is durable.
 * Filesystems that cannot sync directories (EINVAL) are not an error. */
static int sync_directory(const char *dir, const char *path_for_message)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return fail_system("cannot open its directory to sync it", path_for_message, errno);
    int rc = fsync(fd);
    int code = errno;
    close(fd);
    if (rc != 0 && code != EINVAL && code != EROFS)
        return fail_system("cannot sync its directory", path_for_message, code);
    return SUBSAE_OK;
}

static void release(subsae__atomic_file *f)
{
    subsae__free(f->path);
    subsae__free(f->temporary);
    subsae__free(f->dir);
    subsae__free(f);
}

int subsae__atomic_open(const char *path, subsae__atomic_file **out)
{
    SUBSAE__NOT_NULL("subsae__atomic_open", path);
    SUBSAE__NOT_NULL("subsae__atomic_open", out);
    if (!path[0])
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                            "subsae__atomic_open: empty path");
    subsae__atomic_file *f = subsae__calloc(1, sizeof *f);
    size_t room = strlen(path) + 64;
    if (f) {
        f->fd = -1;
        f->path = subsae__strdup(path);
        f->temporary = subsae__malloc(room);
        f->dir = directory_of(path);
    }
    if (!f || !f->path || !f->temporary || !f->dir) {
        if (f)
            release(f);
        return subsae__fail_nomem("temporary file name", room);
    }
    /* A name of our own (not mkstemp) so that the file gets 0666 & ~umask
     * like any file the caller creates; O_EXCL makes it ours alone. */
    for (int attempt = 0; attempt < 100; attempt++) {
        unsigned long n = atomic_fetch_add(&temporary_counter, 1);
        snprintf(f->temporary, room, "%s.tmp-%ld-%lu", path, (long)getpid(), n);
        f->fd = open(f->temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (f->fd >= 0 || errno != EEXIST)
            break;
    }
    if (f->fd < 0) {
        int code = errno;
        release(f);
        return fail_system("cannot create a temporary file next to it", path, code);
    }
    *out = f;
    return SUBSAE_OK;
}

int subsae__atomic_write(subsae__atomic_file *f, const void *data, size_t n)
{
    SUBSAE__NOT_NULL("subsae__atomic_write", f);
    if (!data && n > 0)
        return subsae__fail_null("subsae__atomic_write", "data");
    if (f->failed)
        return subsae__fail(SUBSAE_E_IO, SUBSAE_REASON_SYSTEM, "%s: an earlier write failed",
                            f->path);
    const unsigned char *bytes = data;
    while (n > 0) {
        size_t piece = n > ((size_t)1 << 30) ? (size_t)1 << 30 : n;
        ssize_t written = write(f->fd, bytes, piece);
        if (written < 0) {
            if (errno == EINTR)
                continue;
            f->failed = true;
            return fail_system("cannot write", f->path, errno);
        }
        if (written == 0) {
            f->failed = true;
            return subsae__fail(SUBSAE_E_IO, SUBSAE_REASON_SYSTEM,
                                "%s: cannot write: no progress", f->path);
        }
        bytes += written;
        n -= (size_t)written;
    }
    return SUBSAE_OK;
}

void subsae__atomic_abort(subsae__atomic_file *f)
{
    if (!f)
        return;
    if (f->fd >= 0)
        close(f->fd);
    unlink(f->temporary);
    release(f);
}

int subsae__atomic_commit(subsae__atomic_file *f)
{
    SUBSAE__NOT_NULL("subsae__atomic_commit", f);
    int rc = SUBSAE_OK;
    if (f->failed)
        rc = subsae__fail(SUBSAE_E_IO, SUBSAE_REASON_SYSTEM,
                          "%s: not written: an earlier write failed", f->path);
    else if (fsync(f->fd) != 0)
        rc = fail_system("cannot flush to disk", f->path, errno);
    int fd = f->fd;
    f->fd = -1;
    if (close(fd) != 0 && !rc)
        rc = fail_system("cannot close", f->path, errno);
    if (!rc && rename(f->temporary, f->path) != 0)
        rc = fail_system("cannot rename the temporary file to it", f->path, errno);
    if (rc) {
        subsae__atomic_abort(f);
        return rc;
    }
    rc = sync_directory(f->dir, f->path);
    release(f);
    return rc;
}

/* ---- directories ---------------------------------------------------- */

char *subsae__path_join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *path = subsae__malloc(n);
    if (path)
        snprintf(path, n, "%s/%s", dir, name);
    return path;
}

int subsae__make_dir(const char *dir)
{
    SUBSAE__NOT_NULL("subsae__make_dir", dir);
    if (!dir[0])
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                            "subsae__make_dir: empty directory name");
    /* The parent's name first (trailing slashes stripped, or the parent
     * would be the directory itself), so that nothing can fail for want of
     * memory once the directory exists. */
    size_t n = strlen(dir);
    char *copy = subsae__strdup(dir);
    if (!copy)
        return subsae__fail_nomem("directory name", n + 1);
    while (n > 1 && copy[n - 1] == '/')
        copy[--n] = '\0';
    char *parent = directory_of(copy);
    subsae__free(copy);
    if (!parent)
        return subsae__fail_nomem("directory name", n + 1);
    if (mkdir(dir, 0777) != 0) {
        int code = errno;
        struct stat st;
        subsae__free(parent);
        if (code == EEXIST && stat(dir, &st) == 0 && S_ISDIR(st.st_mode))
            return SUBSAE_OK;
        if (code == EEXIST)
            return subsae__fail(SUBSAE_E_IO, SUBSAE_REASON_SYSTEM,
                                "%s: exists and is not a directory", dir);
        return fail_system("cannot create directory", dir, code);
    }
    /* Make the new entry durable in the parent. */
    int rc = sync_directory(parent, dir);
    subsae__free(parent);
    return rc;
}
