/*
 * A logger object: one line per event, "2026-11-29T05:30:00.123Z INFO message", to stderr or
 * to a file. Owned by main and passed down to whoever logs (the event loop); library code
 * never logs. A file log is reopened on SIGHUP so that logrotate can move it away.
 *
 * Thread safety: zmix_log_write may be called from any thread (a mutex serialises lines and
 * guards the FILE against a concurrent reopen).
 */
#ifndef ZMIX_UTIL_LOG_H
#define ZMIX_UTIL_LOG_H

#include "zmix/common.h"

typedef enum zmix_log_level {
    ZMIX_LOG_ERROR = 0,
    ZMIX_LOG_WARN = 1,
    ZMIX_LOG_INFO = 2,
    ZMIX_LOG_DEBUG = 3
} zmix_log_level;

typedef struct zmix_log zmix_log;

/* path NULL or "" or "-": stderr. A file is opened for appending. */
int zmix_log_open(const char *path, zmix_log_level level, zmix_log **out, zmix_error *err);
/* Reopens the file (a no-op for stderr). On failure the old file stays in use. */
int zmix_log_reopen(zmix_log *log, zmix_error *err);
void zmix_log_close(zmix_log *log);

/* "error", "warn", "info", "debug". */
int zmix_log_level_parse(const char *s, zmix_log_level *out, zmix_error *err);
const char *zmix_log_level_name(zmix_log_level level);
int zmix_log_enabled(const zmix_log *log, zmix_log_level level);

/* log may be NULL (nothing is written). */
void zmix_log_write(zmix_log *log, zmix_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define ZLOG_ERROR(log, ...) zmix_log_write((log), ZMIX_LOG_ERROR, __VA_ARGS__)
#define ZLOG_WARN(log, ...)  zmix_log_write((log), ZMIX_LOG_WARN, __VA_ARGS__)
#define ZLOG_INFO(log, ...)  zmix_log_write((log), ZMIX_LOG_INFO, __VA_ARGS__)
#define ZLOG_DEBUG(log, ...) zmix_log_write((log), ZMIX_LOG_DEBUG, __VA_ARGS__)

#endif
