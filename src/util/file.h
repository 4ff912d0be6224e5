/*
 * Whole files: the one crash-safe writer and the one reader every part uses (the daemon's
 * task cache and job store, the factor cache, tokenizer and demo files, the client's z′
 * file, the command line's JSON inputs), plus the directory helpers of the daemon's stores.
 *
 * The writer's one rule: a file that a reader can open under its final name is always
 * complete. fs_write_atomic writes a temporary file beside it, fsyncs it, renames it over the
 * final name and fsyncs the directory, so after a crash at any instant the name holds either
 * the old bytes or the new ones, never a mixture; a leftover *.tmp is garbage that the
 * daemon's loaders delete.
 *
 * Plain blocking POSIX I/O; no state besides what the caller passes in, so every function is
 * safe to call from any thread (two threads must not write the same name at the same time:
 * the owners serialise that with their own locks; two processes may, see fs_write_atomic).
 */
#ifndef ZMIX_UTIL_FILE_H
#define ZMIX_UTIL_FILE_H

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

/* How fs_write_atomic creates a file. A NULL pointer means all defaults. */
typedef struct fs_write_opts {
    unsigned mode;   /* permission bits of a new file, before the umask; 0 means 0600 */
    fs_fault *fault; /* NULL outside tests */
} fs_write_opts;

/* Atomically replaces path with the concatenation of pieces (see above). The temporary file
 * is <path>.<pid>.tmp, so two processes writing the same path never share one; it is created
 * with O_EXCL and O_NOFOLLOW, so a file or symbolic link planted under that name is never
 * written through: it is unlinked (the link itself, not its target) and the creation retried
 * once. A symbolic link at path itself is replaced by the rename, never followed. On failure
 * the temporary file is removed and path is untouched. */
int fs_write_atomic(const char *path, const fs_piece *pieces, int n_pieces,
                    const fs_write_opts *opts, zmix_error *err);

/* Reads a whole file into a malloc'd buffer (*buf, free with free()) of *len bytes followed
 * by a NUL that *len does not count, so a text file can be used as a string. Regular files
 * are read in one allocation of their size; pipes and devices (/dev/stdin, <(...)) are read
 * to their end. More than max_bytes is ZMIX_ELIMIT ("PATH: N bytes, more than the limit of
 * M bytes"); a missing file is ZMIX_ENOTFOUND; a directory or a failed read ZMIX_EIO. */
int fs_read_file(const char *path, size_t max_bytes, uint8_t **buf, size_t *len, zmix_error *err);

/* The largest token file fs_read_token_file reads. */
#define FS_TOKEN_FILE_MAX 4096

/* Reads an authentication token: the whole file less trailing newlines, carriage returns and
 * spaces, into token (size bytes, NUL-terminated), its length in *len (may be NULL). Refuses
 * with a message beginning "token file PATH: " a file that cannot be read or is over
 * FS_TOKEN_FILE_MAX bytes, an empty token (ZMIX_EINVAL), one longer than size - 1 bytes
 * (ZMIX_ELIMIT) and one holding a NUL byte (ZMIX_EFORMAT). Used by the daemon and the client
 * alike, so one file means the same token to both. */
int fs_read_token_file(const char *path, char *token, size_t size, size_t *len, zmix_error *err);

/* mkdir -p with mode 0700 for the created components. */
int fs_mkdirs(const char *path, zmix_error *err);
/* The same with another mode for the created components (0750: readable by the group). */
int fs_mkdirs_mode(const char *path, unsigned mode, zmix_error *err);

/* Refuses (ZMIX_EIO, message naming the directory, its owner, its mode and the fix) a
 * directory that a user other than this process's effective user could write: owned by
 * another user, or writable by group or others. Such a user could plant a link or a file
 * under a name the owner is about to write. A link is followed: the directory it names is
 * checked. what names the setting (e.g. "--cache-dir"). A path that does not exist is
 * accepted (the caller creates it). */
int fs_check_private_dir(const char *path, const char *what, zmix_error *err);

/* fsyncs a directory, making renames and unlinks inside it durable. */
int fs_fsync_dir(const char *dir, zmix_error *err);

/* Unlinks <dir>/<name>; a missing file is not an error. Does not fsync the directory (batch
 * several removals, then call fs_fsync_dir once). */
int fs_remove(const char *dir, const char *name, zmix_error *err);

/* Joins dir and name into out (size bytes); ZMIX_ELIMIT when it does not fit. */
int fs_join(char *out, size_t size, const char *dir, const char *name, zmix_error *err);

/* Takes an exclusive lock on <dir>/.lock for this process (POSIX record lock, released by
 * the kernel when the process dies, so a crashed daemon never leaves a stale lock). Two
 * daemons on one directory would delete each other's temporary files at open and hand out
 * the same job ids; the second one gets ZMIX_ESTATE naming the holder's pid instead.
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

/* Moves dir/file aside to dir/file.corrupt (kept for inspection, never loaded again) and
 * reports why in problems, saying where it went. */
void fs_quarantine(const char *dir, const char *file, zmix_error *why, persist_problems *problems);
int fs_has_suffix(const char *name, const char *suffix);
void persist_problems_free(persist_problems *p);

#endif
