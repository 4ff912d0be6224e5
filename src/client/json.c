/*
 * A msgpack result rendered as JSON text, for `--json` output. The protocol uses bin only
 * for float32-le vectors (z'), so bin values become arrays of floats; NaN and infinities,
 * which JSON cannot spell, become null.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client_internal.h"

typedef struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
} sbuf;

static void put(sbuf *b, const char *s, size_t n)
{
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void putf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(sbuf *b, const char *fmt, ...)
{
    char tmp[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0) put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

static void put_double(sbuf *b, double v, int single)
{
    if (!isfinite(v))
        put(b, "null", 4);
    else
        putf(b, single ? "%.9g" : "%.17g", v);
}

static void put_string(sbuf *b, const char *s, size_t n)
{
    put(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') {
            char esc[2] = {'\\', (char)ch};
            put(b, esc, 2);
        } else if (ch == '\n') {
            put(b, "\\n", 2);
        } else if (ch == '\t') {
            put(b, "\\t", 2);
        } else if (ch < 0x20) {
            putf(b, "\\u%04x", ch);
        } else {
            put(b, (const char *)&s[i], 1);
        }
    }
    put(b, "\"", 1);
}

static void render(sbuf *b, const msgpack_object *o, int depth)
{
    if (depth > 64) {
        put(b, "null", 4);
        return;
    }
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: put(b, "null", 4); break;
    case MSGPACK_OBJECT_BOOLEAN: o->via.boolean ? put(b, "true", 4) : put(b, "false", 5); break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER: putf(b, "%llu", (unsigned long long)o->via.u64); break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: putf(b, "%lld", (long long)o->via.i64); break;
    case MSGPACK_OBJECT_FLOAT32: put_double(b, o->via.f64, 1); break;
    case MSGPACK_OBJECT_FLOAT64: put_double(b, o->via.f64, 0); break;
    case MSGPACK_OBJECT_STR: put_string(b, o->via.str.ptr, o->via.str.size); break;
    case MSGPACK_OBJECT_BIN: {
        put(b, "[", 1);
        const unsigned char *p = (const unsigned char *)o->via.bin.ptr;
        for (uint32_t i = 0; i + 4 <= o->via.bin.size; i += 4) {
            uint32_t u = (uint32_t)p[i] | (uint32_t)p[i + 1] << 8 | (uint32_t)p[i + 2] << 16 |
                         (uint32_t)p[i + 3] << 24;
            float f;
            memcpy(&f, &u, 4);
            if (i) put(b, ",", 1);
            put_double(b, f, 1);
        }
        put(b, "]", 1);
        break;
    }
    case MSGPACK_OBJECT_ARRAY:
        put(b, "[", 1);
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            if (i) put(b, ",", 1);
            render(b, &o->via.array.ptr[i], depth + 1);
        }
        put(b, "]", 1);
        break;
    case MSGPACK_OBJECT_MAP:
        put(b, "{", 1);
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            const msgpack_object *k = &o->via.map.ptr[i].key;
            if (i) put(b, ",", 1);
            if (k->type == MSGPACK_OBJECT_STR) {
                put_string(b, k->via.str.ptr, k->via.str.size);
            } else { /* JSON keys are strings: render the key and quote it */
                sbuf kb = {0};
                render(&kb, k, depth + 1);
                put_string(b, kb.p ? kb.p : "", kb.len);
                b->oom |= kb.oom;
                free(kb.p);
            }
            put(b, ":", 1);
            render(b, &o->via.map.ptr[i].val, depth + 1);
        }
        put(b, "}", 1);
        break;
    default: put(b, "null", 4); break;
    }
}

int zcli_render_json(const msgpack_object *o, char **out, zmix_error *err)
{
    sbuf b = {0};
    render(&b, o, 0);
    if (b.oom || !b.p) {
        free(b.p);
        *out = NULL;
        return zmix_error_set(err, ZMIX_ENOMEM, "out of memory rendering JSON");
    }
    *out = b.p;
    return 0;
}
