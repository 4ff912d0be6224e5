#include "zmix/common.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "util/utf8.h"

/* A message cut to its buffer must not end inside a character: it goes on the wire. */
static void trim_cut(char *msg, int wanted, size_t cap)
{
    if (wanted >= 0 && (size_t)wanted >= cap) msg[utf8_trim_tail(msg, strlen(msg))] = '\0';
}

int zmix_error_set(zmix_error *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->code = code;
        int wanted = vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        trim_cut(err->msg, wanted, sizeof err->msg);
    }
    return code;
}

int zmix_error_prefix(zmix_error *err, const char *fmt, ...)
{
    if (!err) return 0;
    char prefix[ZMIX_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    /* Large enough for both parts; the result is truncated to the message size on copy. */
    char joined[2 * ZMIX_ERROR_MSG_MAX + 2];
    snprintf(joined, sizeof joined, "%s: %s", prefix, err->msg);
    size_t len = strlen(joined);
    if (len >= sizeof err->msg) len = utf8_cut(joined, len, sizeof err->msg - 1);
    memcpy(err->msg, joined, len);
    err->msg[len] = '\0';
    return err->code;
}

void zmix_error_clear(zmix_error *err)
{
    if (!err) return;
    err->code = 0;
    err->msg[0] = '\0';
}

const char *zmix_strerror(int code)
{
    switch (code) {
    case ZMIX_OK: return "OK";
    case ZMIX_EINVAL: return "EINVAL";
    case ZMIX_EIO: return "EIO";
    case ZMIX_ENOMEM: return "ENOMEM";
    case ZMIX_EFORMAT: return "EFORMAT";
    case ZMIX_ENOTFOUND: return "ENOTFOUND";
    case ZMIX_ERANGE: return "ERANGE";
    case ZMIX_ENUMERIC: return "ENUMERIC";
    case ZMIX_ECANCELED: return "ECANCELED";
    case ZMIX_ELIMIT: return "ELIMIT";
    case ZMIX_EAUTH: return "EAUTH";
    case ZMIX_ESTATE: return "ESTATE";
    case ZMIX_EINTERNAL: return "EINTERNAL";
    default: return "EUNKNOWN";
    }
}

static int cmp_double(double a, double b)
{
    /* NaN sorts below every number, and equal to another NaN, so ranking stays a total order. */
    int an = isnan(a), bn = isnan(b);
    if (an || bn) return bn - an;
    return (a > b) - (a < b);
}

int zmix_score_cmp(const zmix_score *a, const zmix_score *b, zmix_metric metric)
{
    if (metric != ZMIX_METRIC_LOGLIK) { /* accuracy, choice, choice-sum */
        int c = cmp_double(a->accuracy, b->accuracy);
        if (c) return c;
    }
    return cmp_double(a->loglik, b->loglik);
}
