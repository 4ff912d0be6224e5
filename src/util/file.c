#include "util/file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int fs_join(char *out, size_t size, const char *dir, const char *name, zmix_error *err)
{
    int n = snprintf(out, size, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= size)
        return zmix_error_set(err, ZMIX_ELIMIT, "path %s/%s is longer than %zu bytes", dir, name,
                              size - 1);
    return 0;
}

/* Writes all of len bytes, retrying on EINTR and short writes, charging the fault budget. */
static int write_all(int fd, const void *data, size_t len, fs_fault *fault, const char *path,
                     zmix_error *err)
{
    const uint8_t *p = data;
    size_t allowed = len;
    if (fault && fault->write_budget >= 0 && (unsigned long long)fault->write_budget < len)
        allowed = (size_t)fault->write_budget;
    size_t done = 0;
    while (done < allowed) {
        ssize_t w = write(fd, p + done, allowed - done);
        if (w < 0) {
            if (errno == EINTR) continue;
            return zmix_error_set(err, ZMIX_EIO, "%s: write: %s", path, strerror(errno));
        }
        done += (size_t)w;
    }
    if (fault && fault->write_budget >= 0) fault->write_budget -= (long long)allowed;
    if (allowed < len)
        return zmix_error_set(err, ZMIX_EIO, "%s: write: %s (injected fault)", path,
                              strerror(ENOSPC));
    return 0;
}

int fs_fsync_dir(const char *dir, zmix_error *err)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return zmix_error_set(err, ZMIX_EIO, "%s: open: %s", dir, strerror(errno));
    int rc = 0;
    if (fsync(fd) != 0) rc = zmix_error_set(err, ZMIX_EIO, "%s: fsync: %s", dir, strerror(errno));
    close(fd);
    return rc;
}

/* The directory holding path, for the fsync that makes a rename durable. */
static int parent_dir(char *out, size_t size, const char *path, zmix_error *err)
{
    const char *slash = strrchr(path, '/');
    const char *dir = slash ? path : ".";
    size_t n = slash && slash != path ? (size_t)(slash - path) : 1; /* "." or "/" */
    if (n >= size) return zmix_error_set(err, ZMIX_ELIMIT, "path %s is too long", path);
    memcpy(out, dir, n);
    out[n] = '\0';
    return 0;
}

/* Creates tmp for writing, never through whatever already has that name: O_EXCL fails on any
 * existing entry and O_NOFOLLOW on a symbolic link. Such an entry is a temporary file left by
 * a crashed writer of the same pid or something planted; unlinking it removes the name only
 * (for a link, not its target), and the one retry creates a fresh file or fails. */
static int create_temp(const char *tmp, unsigned mode, zmix_error *err)
{
    const int flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
    int fd = open(tmp, flags, (mode_t)mode);
    if (fd < 0 && errno == EEXIST) {
        if (unlink(tmp) != 0 && errno != ENOENT)
            return zmix_error_set(err, ZMIX_EIO, "%s: exists and cannot be removed: %s", tmp,
                                  strerror(errno));
        fd = open(tmp, flags, (mode_t)mode);
    }
    if (fd < 0) return zmix_error_set(err, ZMIX_EIO, "%s: create: %s", tmp, strerror(errno));
    return fd;
}

int fs_write_atomic(const char *path, const fs_piece *pieces, int n_pieces,
                    const fs_write_opts *opts, zmix_error *err)
{
    unsigned mode = opts && opts->mode ? opts->mode : 0600;
    fs_fault *fault = opts ? opts->fault : NULL;
    char tmp[4096], dir[4096];
    int n = snprintf(tmp, sizeof tmp, "%s.%ld.tmp", path, (long)getpid());
    if (n < 0 || (size_t)n >= sizeof tmp)
        return zmix_error_set(err, ZMIX_ELIMIT, "path %s.%ld.tmp is longer than %zu bytes", path,
                              (long)getpid(), sizeof tmp - 1);
    int rc = parent_dir(dir, sizeof dir, path, err);
    if (rc) return rc;

    int fd = create_temp(tmp, mode, err);
    if (fd < 0) return fd;
    for (int i = 0; i < n_pieces && rc == 0; i++)
        if (pieces[i].len) rc = write_all(fd, pieces[i].data, pieces[i].len, fault, tmp, err);
    /* The data must be on disk before the rename makes it visible under the final name, or a
     * crash could leave the new name pointing at blocks never written. */
    if (rc == 0 && fsync(fd) != 0)
        rc = zmix_error_set(err, ZMIX_EIO, "%s: fsync: %s", tmp, strerror(errno));
    if (close(fd) != 0 && rc == 0)
        rc = zmix_error_set(err, ZMIX_EIO, "%s: close: %s", tmp, strerror(errno));
    if (rc == 0 && rename(tmp, path) != 0)
        rc = zmix_error_set(err, ZMIX_EIO, "rename %s -> %s: %s", tmp, path, strerror(errno));
    if (rc) {
        unlink(tmp);
        return rc;
    }
    /* The rename itself is durable only once the directory entry is. */
    return fs_fsync_dir(dir, err);
}

/* The first allocation for a file of unknown size (a pipe, a device, a /proc file). */
#define READ_CHUNK ((size_t)64 << 10)

/* Reads fd to its end into a buffer of cap bytes (grown as needed, never past max), with room
 * for the NUL. One extra byte is read whenever the buffer is full, so a file of exactly its
 * stat size costs one allocation and a file that grew is noticed. */
static int read_to_end(int fd, const char *path, size_t cap, size_t max, uint8_t **buf, size_t *len,
                       zmix_error *err)
{
    uint8_t *data = malloc(cap + 1);
    if (!data) return zmix_error_set(err, ZMIX_ENOMEM, "%s: cannot allocate %zu bytes", path, cap);
    size_t got = 0;
    for (;;) {
        uint8_t extra;
        int probing = got == cap;
        ssize_t r = probing ? read(fd, &extra, 1) : read(fd, data + got, cap - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            int e = errno;
            free(data);
            return zmix_error_set(err, ZMIX_EIO, "%s: read: %s", path, strerror(e));
        }
        if (r == 0) break;
        if (probing) {
            if (cap == max) {
                free(data);
                return zmix_error_set(err, ZMIX_ELIMIT, "%s: more than the limit of %zu bytes",
                                      path, max);
            }
            size_t grown_cap = cap < READ_CHUNK ? READ_CHUNK : cap;
            grown_cap = grown_cap > max - cap ? max : cap + grown_cap;
            uint8_t *grown = realloc(data, grown_cap + 1);
            if (!grown) {
                free(data);
                return zmix_error_set(err, ZMIX_ENOMEM, "%s: cannot allocate %zu bytes", path,
                                      grown_cap);
            }
            data = grown;
            cap = grown_cap;
            data[got] = extra;
        }
        got += (size_t)r;
    }
    data[got] = '\0';
    *buf = data;
    *len = got;
    return 0;
}

int fs_read_file(const char *path, size_t max_bytes, uint8_t **buf, size_t *len, zmix_error *err)
{
    *buf = NULL;
    *len = 0;
    if (max_bytes > SIZE_MAX - 1) max_bytes = SIZE_MAX - 1; /* room for the NUL */
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int code = errno == ENOENT ? ZMIX_ENOTFOUND : ZMIX_EIO;
        return zmix_error_set(err, code, "%s: open: %s", path, strerror(errno));
    }
    struct stat st;
    int rc = 0;
    if (fstat(fd, &st) != 0) {
        rc = zmix_error_set(err, ZMIX_EIO, "%s: stat: %s", path, strerror(errno));
    } else if (S_ISDIR(st.st_mode)) {
        rc = zmix_error_set(err, ZMIX_EIO, "%s: is a directory", path);
    } else if (S_ISREG(st.st_mode) && (unsigned long long)st.st_size > max_bytes) {
        rc = zmix_error_set(err, ZMIX_ELIMIT, "%s: %lld bytes, more than the limit of %zu bytes",
                            path, (long long)st.st_size, max_bytes);
    } else {
        /* Size the buffer by the file, not by the limit: a 200-byte file must not allocate a
         * 64 MiB limit. */
        size_t cap = S_ISREG(st.st_mode) ? (size_t)st.st_size : READ_CHUNK;
        rc = read_to_end(fd, path, cap < max_bytes ? cap : max_bytes, max_bytes, buf, len, err);
    }
    close(fd);
    return rc;
}

int fs_read_token_file(const char *path, char *token, size_t size, size_t *len, zmix_error *err)
{
    uint8_t *data;
    size_t n;
    zmix_error inner;
    int rc = fs_read_file(path, FS_TOKEN_FILE_MAX, &data, &n, &inner);
    if (rc) return zmix_error_set(err, rc, "token file %s", inner.msg);
    while (n > 0 && (data[n - 1] == '\n' || data[n - 1] == '\r' || data[n - 1] == ' ')) n--;
    if (n == 0)
        rc = zmix_error_set(err, ZMIX_EINVAL, "token file %s: empty", path);
    else if (n >= size)
        rc = zmix_error_set(err, ZMIX_ELIMIT, "token file %s: token of %zu bytes, more than %zu",
                            path, n, size ? size - 1 : 0);
    else if (memchr(data, '\0', n))
        rc = zmix_error_set(err, ZMIX_EFORMAT, "token file %s: holds a NUL byte", path);
    if (rc == 0) {
        memcpy(token, data, n);
        token[n] = '\0';
        if (len) *len = n;
    }
    free(data);
    return rc;
}

int fs_mkdirs(const char *path, zmix_error *err)
{
    return fs_mkdirs_mode(path, 0700, err);
}

int fs_check_private_dir(const char *path, const char *what, zmix_error *err)
{
    /* stat, not lstat: a cache directory may be a link to another disk; what is checked is
     * the directory written into. */
    struct stat st;
    if (stat(path, &st) != 0) {
        if (errno == ENOENT) return 0;
        return zmix_error_set(err, ZMIX_EIO, "%s %s: %s", what, path, strerror(errno));
    }
    if (!S_ISDIR(st.st_mode))
        return zmix_error_set(err, ZMIX_EIO, "%s %s: not a directory", what, path);
    unsigned mode = (unsigned)(st.st_mode & 07777);
    if (st.st_uid == geteuid() && !(mode & 022)) return 0;
    /* Another user who can write here can plant a symbolic link or a file under a name we
     * are about to write: refuse rather than repair, since the plant may already be there. */
    return zmix_error_set(err, ZMIX_EIO,
                          "%s %s: owned by uid %ld with mode %04o, so another user could write "
                          "to it; this process runs as uid %ld. Fix: chown %ld %s && chmod 700 %s "
                          "(or 750 with --group-readable), or choose another --cache-dir",
                          what, path, (long)st.st_uid, mode, (long)geteuid(), (long)geteuid(), path,
                          path);
}

int fs_mkdirs_mode(const char *path, unsigned mode, zmix_error *err)
{
    char buf[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf)
        return zmix_error_set(err, ZMIX_EINVAL, "directory path of %zu bytes is not usable", n);
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0') continue;
        char saved = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, (mode_t)mode) == 0) {
            /* A new directory's entry lives in its parent: make it durable too, or a power
             * loss could lose the directory along with every file later fsync'ed inside. */
            char *slash = strrchr(buf, '/');
            if (slash && slash != buf) {
                *slash = '\0';
                int rc = fs_fsync_dir(buf, err);
                *slash = '/';
                if (rc) return rc;
            }
        } else if (errno != EEXIST) {
            return zmix_error_set(err, ZMIX_EIO, "%s: mkdir: %s", buf, strerror(errno));
        }
        buf[i] = saved;
    }
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        return zmix_error_set(err, ZMIX_EIO, "%s: not a directory", path);
    return 0;
}

int fs_remove(const char *dir, const char *name, zmix_error *err)
{
    char path[4096];
    int rc = fs_join(path, sizeof path, dir, name, err);
    if (rc) return rc;
    if (unlink(path) != 0 && errno != ENOENT)
        return zmix_error_set(err, ZMIX_EIO, "%s: unlink: %s", path, strerror(errno));
    return 0;
}

int fs_lock_dir(const char *dir, int *fd_out, zmix_error *err)
{
    *fd_out = -1;
    char path[4096];
    int rc = fs_join(path, sizeof path, dir, ".lock", err);
    if (rc) return rc;
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return zmix_error_set(err, ZMIX_EIO, "%s: open: %s", path, strerror(errno));
    struct flock lk = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
    if (fcntl(fd, F_SETLK, &lk) != 0) {
        int e = errno;
        struct flock who = lk;
        long pid = fcntl(fd, F_GETLK, &who) == 0 ? (long)who.l_pid : -1L;
        close(fd);
        if (e == EACCES || e == EAGAIN)
            return zmix_error_set(err, ZMIX_ESTATE, "%s is in use by another process (pid %ld)",
                                  dir, pid);
        return zmix_error_set(err, ZMIX_EIO, "%s: lock: %s", path, strerror(e));
    }
    *fd_out = fd;
    return 0;
}

void fs_unlock_dir(int fd)
{
    if (fd >= 0) close(fd); /* closing releases the lock */
}

void persist_problems_add(persist_problems *p, const zmix_error *e)
{
    if (!p) return;
    zmix_error *grown = realloc(p->items, (p->n + 1) * sizeof *grown);
    if (!grown) return;
    p->items = grown;
    p->items[p->n++] = *e;
}

void persist_problems_free(persist_problems *p)
{
    if (!p) return;
    free(p->items);
    p->items = NULL;
    p->n = 0;
}

void fs_quarantine(const char *dir, const char *file, zmix_error *why, persist_problems *problems)
{
    char from[4200], to[4300];
    snprintf(from, sizeof from, "%s/%s", dir, file);
    snprintf(to, sizeof to, "%s.corrupt", from);
    if (rename(from, to) == 0)
        zmix_error_prefix(why, "skipped (moved to %s.corrupt)", file);
    else
        zmix_error_prefix(why, "skipped");
    persist_problems_add(problems, why);
}

int fs_has_suffix(const char *name, const char *suffix)
{
    size_t n = strlen(name), k = strlen(suffix);
    return n >= k && strcmp(name + n - k, suffix) == 0;
}
