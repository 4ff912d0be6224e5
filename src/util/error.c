#include "zmix/common.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int zmix_error_set(zmix_error *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->code = code;
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
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
    snprintf(err->msg, sizeof err->msg, "%.*s", (int)sizeof err->msg - 1, joined);
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
