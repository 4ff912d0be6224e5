#include "util/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct zmix_log {
    pthread_mutex_t lock;
    FILE *fp;   /* stderr or a file we own */
    char *path; /* NULL for stderr */
    zmix_log_level level;
};

static const char *const level_names[] = {"error", "warn", "info", "debug"};
static const char *const level_tags[] = {"ERROR", "WARN", "INFO", "DEBUG"};

int zmix_log_open(const char *path, zmix_log_level level, zmix_log **out, zmix_error *err)
{
    *out = NULL;
    zmix_log *log = calloc(1, sizeof *log);
    if (!log) return zmix_error_set(err, ZMIX_ENOMEM, "log: out of memory");
    log->level = level;
    if (path && path[0] && strcmp(path, "-") != 0) {
        log->path = strdup(path);
        log->fp = log->path ? fopen(path, "a") : NULL;
        if (!log->fp) {
            int e = errno;
            free(log->path);
            free(log);
            return zmix_error_set(err, ZMIX_EIO, "log file %s: %s", path, strerror(e));
        }
        setvbuf(log->fp, NULL, _IOLBF, 0);
    } else {
        log->fp = stderr;
    }
    pthread_mutex_init(&log->lock, NULL);
    *out = log;
    return 0;
}

int zmix_log_reopen(zmix_log *log, zmix_error *err)
{
    if (!log || !log->path) return 0;
    FILE *fp = fopen(log->path, "a");
    if (!fp) return zmix_error_set(err, ZMIX_EIO, "log file %s: %s", log->path, strerror(errno));
    setvbuf(fp, NULL, _IOLBF, 0);
    pthread_mutex_lock(&log->lock);
    FILE *old = log->fp;
    log->fp = fp;
    pthread_mutex_unlock(&log->lock);
    fclose(old);
    return 0;
}

void zmix_log_close(zmix_log *log)
{
    if (!log) return;
    if (log->path)
        fclose(log->fp);
    else
        fflush(log->fp);
    pthread_mutex_destroy(&log->lock);
    free(log->path);
    free(log);
}

int zmix_log_level_parse(const char *s, zmix_log_level *out, zmix_error *err)
{
    for (int i = 0; i < 4; i++) {
        if (s && !strcmp(s, level_names[i])) {
            *out = (zmix_log_level)i;
            return 0;
        }
    }
    return zmix_error_set(err, ZMIX_EINVAL, "log level '%s': expected error, warn, info or debug",
                          s ? s : "");
}

const char *zmix_log_level_name(zmix_log_level level)
{
    return (unsigned)level < 4 ? level_names[level] : "unknown";
}

int zmix_log_enabled(const zmix_log *log, zmix_log_level level)
{
    return log && level <= log->level;
}

void zmix_log_write(zmix_log *log, zmix_log_level level, const char *fmt, ...)
{
    if (!zmix_log_enabled(log, level)) return;
    /* Format outside the lock: a line is built whole, then written with one call, so lines
     * from different threads never interleave. */
    char line[1024];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    int n = (int)strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
    n += snprintf(line + n, sizeof line - (size_t)n, ".%03ldZ %s ", ts.tv_nsec / 1000000L,
                  level_tags[level]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof line - 2) len = sizeof line - 2;
    line[len++] = '\n';
    pthread_mutex_lock(&log->lock);
    fwrite(line, 1, len, log->fp);
    fflush(log->fp);
    pthread_mutex_unlock(&log->lock);
}
