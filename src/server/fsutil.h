/*
 * Crash-safe file helpers for the daemon's persistence (task cache, job store).
 *
 * The one rule: a file that a reader can open under its final name is always complete.
 * fs_write_atomic writes <dir>/<name>.tmp, fsyncs it, renames it over <dir>/<name> and fsyncs
 * the directory, so after a crash at any instant the name holds either the old bytes or the
 * new ones, never a mixture; a leftover *.tmp is garbage that the loaders delete.
 *
 * Plain blocking POSIX I/O; no state besides what the caller passes in, so every function is
 * safe to call from any thread (two threads must not write the same name at the same time:
 * the owners serialise that with their own locks).
 */
#ifndef ZMIX_SERVER_FSUTIL_H
#define ZMIX_SERVER_FSUTIL_H

#include <stddef.h>
#include <stdint.h>

#include "zmix/common.h"

/* Test-only fault injection, carried by the object that owns the files (never global).
 * While write_budget >= 0, every byte written is taken from it; a write that would exceed it
 * writes what fits and then fails with ENOSPC, exactly like a full disk. -1 disables. */
typedef struct fs_fault {
    long long write_budget;
} fs_fault;

/* One piece of a file written by gathering (the file is the concatenation of the pieces). */
typedef struct fs_piece {
    const void *data;
    size_t len;
} fs_piece;

/* Atomically replaces <dir>/<name> with the concatenation of pieces (see above).
 * fault may be NULL. On failure the temporary file is removed and <dir>/<name> is untouched. */
int fs_write_atomic(const char *dir, const char *name, const fs_piece *pieces, int n_pieces,
                    fs_fault *fault, zmix_error *err);

/* Reads a whole file into a malloc'd buffer (*buf, free with free()). Files larger than
 * max_bytes are refused with ZMIX_ELIMIT; a missing file is ZMIX_ENOTFOUND. */
int fs_read_file(const char *path, size_t max_bytes, uint8_t **buf, size_t *len, zmix_error *err);

/* mkdir -p with mode 0700 for the created components. */
int fs_mkdirs(const char *path, zmix_error *err);

/* fsyncs a directory, making renames and unlinks inside it durable. */
int fs_fsync_dir(const char *dir, zmix_error *err);

/* Unlinks <dir>/<name>; a missing file is not an error. Does not fsync the directory (batch
 * several removals, then call fs_fsync_dir once). */
int fs_remove(const char *dir, const char *name, zmix_error *err);

/* Joins dir and name into out (size bytes); ZMIX_ELIMIT when it does not fit. */
int fs_join(char *out, size_t size, const char *dir, const char *name, zmix_error *err);

/* Takes an exclusive lock on <dir>/.lock for this process (POSIX record lock, released by
 * the kernel when the process dies, so a crashed daemon never leaves a stale lock). Two
 * daemons writing one directory would tear each other's temporary files and hand out the
 * same job ids; the second one gets ZMIX_ESTATE naming the holder's pid instead.
 * *fd receives the descriptor to pass to fs_unlock_dir. */
int fs_lock_dir(const char *dir, int *fd, zmix_error *err);
void fs_unlock_dir(int fd); /* -1 ok */

/* Problems found while loading a directory (bad checksum, truncated record, unreadable file):
 * each one is reported, the file skipped, and loading goes on. The daemon logs them. */
typedef struct persist_problems {
    zmix_error *items; /* n entries; each message names the file and what was wrong */
    size_t n;
} persist_problems;

/* Appends a copy of e; allocation failures are dropped silently (the load itself goes on). */
void persist_problems_add(persist_problems *p, const zmix_error *e);
void persist_problems_free(persist_problems *p);

#endif
