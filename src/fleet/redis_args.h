/*
 * Inside src/fleet: the arguments of one Redis command, built up for redisCommandArgv
 * (binary-safe, unlike a format string). Strings are borrowed; numbers are formatted into the
 * builder's own storage.
 */
#ifndef ZMIX_FLEET_REDIS_ARGS_H
#define ZMIX_FLEET_REDIS_ARGS_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define ARGS_MAX 32
typedef struct args {
    int n;
    const char *v[ARGS_MAX];
    size_t len[ARGS_MAX];
    char num[ARGS_MAX][24];
} args;

static inline void arg_bytes(args *a, const void *p, size_t len)
{
    a->v[a->n] = p ? p : "";
    a->len[a->n] = p ? len : 0;
    a->n++;
}
static inline void arg_str(args *a, const char *s)
{
    arg_bytes(a, s, strlen(s));
}
/* Several strings, up to a NULL. */
static inline void arg_strs(args *a, ...)
{
    va_list ap;
    va_start(ap, a);
    for (const char *s = va_arg(ap, const char *); s; s = va_arg(ap, const char *)) arg_str(a, s);
    va_end(ap);
}
static inline void arg_u64(args *a, uint64_t v)
{
    snprintf(a->num[a->n], sizeof a->num[a->n], "%llu", (unsigned long long)v);
    arg_str(a, a->num[a->n]);
}
static inline void arg_i64(args *a, int64_t v)
{
    snprintf(a->num[a->n], sizeof a->num[a->n], "%lld", (long long)v);
    arg_str(a, a->num[a->n]);
}
static inline void arg_f64(args *a, double v)
{
    snprintf(a->num[a->n], sizeof a->num[a->n], "%.17g", v);
    arg_str(a, a->num[a->n]);
}

#endif
