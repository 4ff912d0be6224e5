/*
 * MessagePack-RPC on a byte stream: the frame scanner, request decoding, typed parameter
 * getters, response and notification encoding, and rpc_map (see rpc.h). Pure functions.
 * Thread: any (the daemon calls them on the event loop).
 */
#include "wire/rpc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/utf8.h"

static uint64_t read_be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v = v << 8 | p[i];
    return v;
}

/* Size of the header of the object starting with byte b (type byte plus length field), and
 * how its total size and element count follow from the length field. */
typedef struct head_shape {
    int head;            /* bytes of header, including the type byte */
    int len_bytes;       /* bytes of the big-endian length field after the type byte (0: none) */
    uint64_t fixed;      /* payload bytes when len_bytes == 0 (or extra fixed bytes for ext) */
    int container;       /* 0: scalar, 1: array (n elements), 2: map (2n elements) */
    int length_is_count; /* the length field counts elements, not bytes */
} head_shape;

static int shape_of(uint8_t b, head_shape *s)
{
    memset(s, 0, sizeof *s);
    s->head = 1;
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) return 0;
    if (b >= 0x80 && b <= 0x8f) {
        s->container = 2;
        s->fixed = b & 0x0f;
        return 0;
    }
    if (b >= 0x90 && b <= 0x9f) {
        s->container = 1;
        s->fixed = b & 0x0f;
        return 0;
    }
    if (b >= 0xa0 && b <= 0xbf) {
        s->fixed = b & 0x1f;
        return 0;
    }
    switch (b) {
    case 0xc4: s->len_bytes = 1; break;
    case 0xc5: s->len_bytes = 2; break;
    case 0xc6: s->len_bytes = 4; break;
    case 0xc7:
        s->len_bytes = 1;
        s->fixed = 1;
        break; /* ext: type byte after the length */
    case 0xc8:
        s->len_bytes = 2;
        s->fixed = 1;
        break;
    case 0xc9:
        s->len_bytes = 4;
        s->fixed = 1;
        break;
    case 0xca: s->fixed = 4; break;
    case 0xcb: s->fixed = 8; break;
    case 0xcc: s->fixed = 1; break;
    case 0xcd: s->fixed = 2; break;
    case 0xce: s->fixed = 4; break;
    case 0xcf: s->fixed = 8; break;
    case 0xd0: s->fixed = 1; break;
    case 0xd1: s->fixed = 2; break;
    case 0xd2: s->fixed = 4; break;
    case 0xd3: s->fixed = 8; break;
    case 0xd4: s->fixed = 2; break;
    case 0xd5: s->fixed = 3; break;
    case 0xd6: s->fixed = 5; break;
    case 0xd7: s->fixed = 9; break;
    case 0xd8: s->fixed = 17; break;
    case 0xd9: s->len_bytes = 1; break;
    case 0xda: s->len_bytes = 2; break;
    case 0xdb: s->len_bytes = 4; break;
    case 0xdc:
        s->len_bytes = 2;
        s->container = 1;
        s->length_is_count = 1;
        break;
    case 0xdd:
        s->len_bytes = 4;
        s->container = 1;
        s->length_is_count = 1;
        break;
    case 0xde:
        s->len_bytes = 2;
        s->container = 2;
        s->length_is_count = 1;
        break;
    case 0xdf:
        s->len_bytes = 4;
        s->container = 2;
        s->length_is_count = 1;
        break;
    default: return -1; /* 0xc1 */
    }
    s->head += s->len_bytes;
    return 0;
}

void rpc_scanner_reset(rpc_scanner *sc)
{
    sc->depth = 0;
    sc->remaining[0] = 1;
    sc->pos = 0;
}

int rpc_scanner_scan(rpc_scanner *sc, const uint8_t *buf, size_t len, size_t limit,
                     size_t *frame_len, zmix_error *err)
{
    /* The state only ever records whole elements (pos moves past an element once its header
     * and payload are all in buf), so a scan that needs more bytes resumes exactly there. */
    for (;;) {
        size_t pos = sc->pos;
        if (pos >= len) {
            if (pos >= limit) goto too_large;
            return RPC_FRAME_NEED_MORE;
        }
        head_shape s;
        if (shape_of(buf[pos], &s) != 0) {
            zmix_error_set(err, ZMIX_EFORMAT,
                           "malformed msgpack: byte 0xc1 (never used) at offset %zu", pos);
            return RPC_FRAME_MALFORMED;
        }
        if ((uint64_t)pos + (uint64_t)s.head > limit) goto too_large;
        if (pos + (size_t)s.head > len) return RPC_FRAME_NEED_MORE;
        uint64_t field = s.len_bytes ? read_be(buf + pos + 1, s.len_bytes) : 0;
        uint64_t payload = 0, count = 0;
        if (s.container) {
            count = s.length_is_count ? field : s.fixed;
            if (s.container == 2) count *= 2;
        } else {
            payload = s.len_bytes ? field + s.fixed : s.fixed;
        }
        uint64_t end = (uint64_t)pos + (uint64_t)s.head + payload;
        /* Every element takes at least one byte, so a count that cannot fit is rejected
         * before anything is allocated for it. */
        if (end > limit || count > limit - end) goto too_large;
        if (end > len) return RPC_FRAME_NEED_MORE;
        if (count > 0 && sc->depth == RPC_MAX_DEPTH) {
            zmix_error_set(err, ZMIX_EFORMAT, "msgpack nesting deeper than %d at offset %zu",
                           RPC_MAX_DEPTH, pos);
            return RPC_FRAME_MALFORMED;
        }
        sc->pos = (size_t)end;
        sc->remaining[sc->depth]--;
        if (count > 0) sc->remaining[++sc->depth] = count;
        while (sc->depth > 0 && sc->remaining[sc->depth] == 0) sc->depth--;
        if (sc->depth == 0 && sc->remaining[0] == 0) {
            *frame_len = sc->pos;
            rpc_scanner_reset(sc);
            return RPC_FRAME_COMPLETE;
        }
    }
too_large:
    zmix_error_set(err, ZMIX_ELIMIT, "message larger than the frame limit of %zu bytes", limit);
    return RPC_FRAME_TOO_LARGE;
}

int rpc_frame_scan(const uint8_t *buf, size_t len, size_t limit, size_t *frame_len, zmix_error *err)
{
    rpc_scanner sc;
    rpc_scanner_reset(&sc);
    return rpc_scanner_scan(&sc, buf, len, limit, frame_len, err);
}

const char *rpc_type_name(const msgpack_object *o)
{
    if (!o) return "nothing";
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: return "nil";
    case MSGPACK_OBJECT_BOOLEAN: return "boolean";
    case MSGPACK_OBJECT_POSITIVE_INTEGER: return "positive integer";
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return "negative integer";
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: return "float";
    case MSGPACK_OBJECT_STR: return "string";
    case MSGPACK_OBJECT_ARRAY: return "array";
    case MSGPACK_OBJECT_MAP: return "map";
    case MSGPACK_OBJECT_BIN: return "bin";
    case MSGPACK_OBJECT_EXT: return "ext";
    }
    return "unknown";
}

int rpc_request_decode(const msgpack_object *obj, rpc_request *req, int *msgid_known,
                       zmix_error *err)
{
    memset(req, 0, sizeof *req);
    *msgid_known = 0;
    if (obj->type != MSGPACK_OBJECT_ARRAY)
        return zmix_error_set(err, ZMIX_EINVAL, "message must be an array, got %s",
                              rpc_type_name(obj));
    const msgpack_object_array *a = &obj->via.array;
    if (a->size < 1 || a->ptr[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return zmix_error_set(err, ZMIX_EINVAL,
                              "message[0] (type) must be 0 (request) or 2 (notification)");
    uint64_t type = a->ptr[0].via.u64;
    const msgpack_object *method, *params;
    if (type == RPC_REQUEST) {
        if (a->size != 4)
            return zmix_error_set(err, ZMIX_EINVAL,
                                  "a request is [0, msgid, method, params]: got %u elements",
                                  a->size);
        if (a->ptr[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER || a->ptr[1].via.u64 > UINT32_MAX)
            return zmix_error_set(err, ZMIX_EINVAL, "msgid must be an integer in [0, 2^32)");
        req->msgid = (uint32_t)a->ptr[1].via.u64;
        *msgid_known = 1;
        method = &a->ptr[2];
        params = &a->ptr[3];
    } else if (type == RPC_NOTIFY) {
        if (a->size != 3)
            return zmix_error_set(err, ZMIX_EINVAL,
                                  "a notification is [2, method, params]: got %u elements",
                                  a->size);
        method = &a->ptr[1];
        params = &a->ptr[2];
    } else {
        return zmix_error_set(err, ZMIX_EINVAL,
                              "message type %llu not accepted: 0 (request) or 2 (notification)",
                              (unsigned long long)type);
    }
    req->type = (int)type;
    if (method->type != MSGPACK_OBJECT_STR)
        return zmix_error_set(err, ZMIX_EINVAL, "method must be a string, got %s",
                              rpc_type_name(method));
    if (method->via.str.size == 0 || method->via.str.size >= sizeof req->method ||
        memchr(method->via.str.ptr, 0, method->via.str.size))
        return zmix_error_set(err, ZMIX_ENOTFOUND, "unknown method (name of %u bytes)",
                              method->via.str.size);
    memcpy(req->method, method->via.str.ptr, method->via.str.size);
    req->method[method->via.str.size] = '\0';
    /* params: a map, or (as generic msgpack-rpc clients send argument lists) an array holding
     * one map; nil and [] mean no parameters. */
    if (params->type == MSGPACK_OBJECT_ARRAY && params->via.array.size == 1)
        params = &params->via.array.ptr[0];
    if (params->type == MSGPACK_OBJECT_MAP) {
        req->params = *params;
    } else if (params->type == MSGPACK_OBJECT_NIL ||
               (params->type == MSGPACK_OBJECT_ARRAY && params->via.array.size == 0)) {
        req->params.type = MSGPACK_OBJECT_MAP;
        req->params.via.map.size = 0;
        req->params.via.map.ptr = NULL;
    } else {
        return zmix_error_set(err, ZMIX_EINVAL,
                              "params must be a map (or an array holding one map), got %s",
                              rpc_type_name(params));
    }
    return 0;
}

static int key_is(const msgpack_object *k, const char *key)
{
    size_t n = strlen(key);
    return k->type == MSGPACK_OBJECT_STR && k->via.str.size == n && !memcmp(k->via.str.ptr, key, n);
}

const msgpack_object *rpc_map_get(const msgpack_object *map, const char *key)
{
    if (!map || map->type != MSGPACK_OBJECT_MAP) return NULL;
    for (uint32_t i = 0; i < map->via.map.size; i++)
        if (key_is(&map->via.map.ptr[i].key, key)) return &map->via.map.ptr[i].val;
    return NULL;
}

int rpc_map_check_keys(const msgpack_object *map, const char *const *allowed, const char *where,
                       zmix_error *err)
{
    const char *sep = where ? ": " : "";
    if (!where) where = "";
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type != MSGPACK_OBJECT_STR)
            return zmix_error_set(err, ZMIX_EINVAL, "%s%skeys must be strings, got %s", where, sep,
                                  rpc_type_name(k));
        int known = 0;
        for (const char *const *a = allowed; *a && !known; a++) known = key_is(k, *a);
        if (!known) {
            int n = (int)utf8_cut(k->via.str.ptr, k->via.str.size, 64);
            return zmix_error_set(err, ZMIX_EINVAL, "%s%sunknown field '%.*s'", where, sep, n,
                                  k->via.str.ptr);
        }
        for (uint32_t j = 0; j < i; j++) {
            const msgpack_object *p = &map->via.map.ptr[j].key;
            if (p->via.str.size == k->via.str.size &&
                !memcmp(p->via.str.ptr, k->via.str.ptr, k->via.str.size)) {
                int n = (int)utf8_cut(k->via.str.ptr, k->via.str.size, 64);
                return zmix_error_set(err, ZMIX_EINVAL, "%s%sfield '%.*s' given twice", where, sep,
                                      n, k->via.str.ptr);
            }
        }
    }
    return 0;
}

static const msgpack_object *field(const msgpack_object *map, const char *key)
{
    const msgpack_object *v = rpc_map_get(map, key);
    return v && v->type != MSGPACK_OBJECT_NIL ? v : NULL;
}

int rpc_get_int(const msgpack_object *map, const char *key, int required, int64_t lo, int64_t hi,
                int64_t def, int64_t *out, zmix_error *err)
{
    const msgpack_object *v = field(map, key);
    if (!v) {
        if (required) return zmix_error_set(err, ZMIX_EINVAL, "missing field '%s'", key);
        *out = def;
        return 0;
    }
    int64_t x;
    if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        if (v->via.u64 > (uint64_t)INT64_MAX)
            return zmix_error_set(err, ZMIX_ERANGE, "field '%s': %llu outside [%lld, %lld]", key,
                                  (unsigned long long)v->via.u64, (long long)lo, (long long)hi);
        x = (int64_t)v->via.u64;
    } else if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        x = v->via.i64;
    } else {
        return zmix_error_set(err, ZMIX_EINVAL, "field '%s' must be an integer, got %s", key,
                              rpc_type_name(v));
    }
    if (x < lo || x > hi)
        return zmix_error_set(err, ZMIX_ERANGE, "field '%s': %lld outside [%lld, %lld]", key,
                              (long long)x, (long long)lo, (long long)hi);
    *out = x;
    return 0;
}

int rpc_get_uint64(const msgpack_object *map, const char *key, uint64_t def, uint64_t *out,
                   zmix_error *err)
{
    const msgpack_object *v = field(map, key);
    if (!v) {
        *out = def;
        return 0;
    }
    /* A negative integer has the right type and the wrong value: ERANGE, as for every other
     * integer out of its range. */
    if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        return zmix_error_set(err, ZMIX_ERANGE, "field '%s': %lld outside [0, %llu]", key,
                              (long long)v->via.i64, (unsigned long long)UINT64_MAX);
    if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return zmix_error_set(err, ZMIX_EINVAL, "field '%s' must be an integer >= 0, got %s", key,
                              rpc_type_name(v));
    *out = v->via.u64;
    return 0;
}

int rpc_get_double(const msgpack_object *map, const char *key, int required, double lo, double hi,
                   double def, double *out, zmix_error *err)
{
    const msgpack_object *v = field(map, key);
    if (!v) {
        if (required) return zmix_error_set(err, ZMIX_EINVAL, "missing field '%s'", key);
        *out = def;
        return 0;
    }
    double x;
    switch (v->type) {
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: x = v->via.f64; break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER: x = (double)v->via.u64; break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: x = (double)v->via.i64; break;
    default:
        return zmix_error_set(err, ZMIX_EINVAL, "field '%s' must be a number, got %s", key,
                              rpc_type_name(v));
    }
    if (!(x >= lo && x <= hi)) /* also rejects NaN */
        return zmix_error_set(err, ZMIX_ERANGE, "field '%s': %g outside [%g, %g]", key, x, lo, hi);
    *out = x;
    return 0;
}

int rpc_get_bool(const msgpack_object *map, const char *key, int def, int *out, zmix_error *err)
{
    const msgpack_object *v = field(map, key);
    if (!v) {
        *out = def;
        return 0;
    }
    if (v->type != MSGPACK_OBJECT_BOOLEAN)
        return zmix_error_set(err, ZMIX_EINVAL, "field '%s' must be a boolean, got %s", key,
                              rpc_type_name(v));
    *out = v->via.boolean ? 1 : 0;
    return 0;
}

int rpc_get_str(const msgpack_object *map, const char *key, int required, const char *def,
                char *out, size_t cap, zmix_error *err)
{
    const msgpack_object *v = field(map, key);
    if (!v) {
        if (required || !def) return zmix_error_set(err, ZMIX_EINVAL, "missing field '%s'", key);
        snprintf(out, cap, "%s", def);
        return 0;
    }
    if (v->type != MSGPACK_OBJECT_STR)
        return zmix_error_set(err, ZMIX_EINVAL, "field '%s' must be a string, got %s", key,
                              rpc_type_name(v));
    if (v->via.str.size >= cap)
        return zmix_error_set(err, ZMIX_ERANGE, "field '%s': string of %u bytes, at most %zu", key,
                              v->via.str.size, cap - 1);
    if (memchr(v->via.str.ptr, 0, v->via.str.size))
        return zmix_error_set(err, ZMIX_EINVAL, "field '%s' contains a NUL byte", key);
    memcpy(out, v->via.str.ptr, v->via.str.size);
    out[v->via.str.size] = '\0';
    return 0;
}

int rpc_get_map(const msgpack_object *map, const char *key, const msgpack_object **out,
                zmix_error *err)
{
    const msgpack_object *v = field(map, key);
    *out = NULL;
    if (!v) return 0;
    if (v->type != MSGPACK_OBJECT_MAP)
        return zmix_error_set(err, ZMIX_EINVAL, "field '%s' must be a map, got %s", key,
                              rpc_type_name(v));
    *out = v;
    return 0;
}

void rpc_pack_strn(msgpack_packer *pk, const char *s, size_t n)
{
    /* Every string the daemon sends is well-formed UTF-8, also where it quotes bytes a
     * client sent: those are escaped as \xHH. */
    if (utf8_valid(s, n)) {
        msgpack_pack_str(pk, n);
        msgpack_pack_str_body(pk, s, n);
        return;
    }
    size_t need = utf8_escape(s, n, NULL, 0);
    char *esc = malloc(need + 1);
    if (!esc) { /* nothing valid to send but the empty string */
        msgpack_pack_str(pk, 0);
        return;
    }
    utf8_escape(s, n, esc, need + 1);
    msgpack_pack_str(pk, need);
    msgpack_pack_str_body(pk, esc, need);
    free(esc);
}

void rpc_pack_cstr(msgpack_packer *pk, const char *s)
{
    rpc_pack_strn(pk, s, strlen(s));
}

int rpc_pack_result(msgpack_sbuffer *out, uint32_t msgid, const char *result, size_t len)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 4);
    msgpack_pack_uint32(&pk, RPC_RESPONSE);
    msgpack_pack_uint32(&pk, msgid);
    msgpack_pack_nil(&pk);
    if (len) return msgpack_sbuffer_write(out, result, len) ? ZMIX_ENOMEM : 0;
    return msgpack_pack_nil(&pk) ? ZMIX_ENOMEM : 0;
}

static void pack_error_map(msgpack_packer *pk, const char *code, const char *message)
{
    msgpack_pack_map(pk, 2);
    rpc_pack_cstr(pk, "code");
    rpc_pack_cstr(pk, code);
    rpc_pack_cstr(pk, "message");
    rpc_pack_cstr(pk, message);
}

int rpc_pack_error(msgpack_sbuffer *out, uint32_t msgid, const char *code, const char *message)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 4);
    msgpack_pack_uint32(&pk, RPC_RESPONSE);
    msgpack_pack_uint32(&pk, msgid);
    pack_error_map(&pk, code, message);
    return msgpack_pack_nil(&pk) ? ZMIX_ENOMEM : 0;
}

int rpc_pack_notify(msgpack_sbuffer *out, const char *method, const char *params, size_t len)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 3);
    msgpack_pack_uint32(&pk, RPC_NOTIFY);
    rpc_pack_cstr(&pk, method);
    return msgpack_sbuffer_write(out, params, len) ? ZMIX_ENOMEM : 0;
}

int rpc_pack_error_notify(msgpack_sbuffer *out, const char *code, const char *message)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 3);
    msgpack_pack_uint32(&pk, RPC_NOTIFY);
    rpc_pack_cstr(&pk, "error");
    pack_error_map(&pk, code, message);
    return 0;
}

void rpc_map_begin(rpc_map *m)
{
    msgpack_sbuffer_init(&m->body);
    msgpack_packer_init(&m->pk, &m->body, msgpack_sbuffer_write);
    m->n = 0;
}

msgpack_packer *rpc_map_key(rpc_map *m, const char *key)
{
    m->n++;
    rpc_pack_cstr(&m->pk, key);
    return &m->pk;
}

void rpc_map_str(rpc_map *m, const char *key, const char *value)
{
    rpc_pack_cstr(rpc_map_key(m, key), value);
}

void rpc_map_bool(rpc_map *m, const char *key, int value)
{
    msgpack_packer *pk = rpc_map_key(m, key);
    value ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
}

void rpc_map_int(rpc_map *m, const char *key, int64_t value)
{
    msgpack_pack_int64(rpc_map_key(m, key), value);
}

void rpc_map_u64(rpc_map *m, const char *key, uint64_t value)
{
    msgpack_pack_uint64(rpc_map_key(m, key), value);
}

void rpc_map_double(rpc_map *m, const char *key, double value)
{
    msgpack_pack_double(rpc_map_key(m, key), value);
}

void rpc_map_nil(rpc_map *m, const char *key)
{
    msgpack_pack_nil(rpc_map_key(m, key));
}

void rpc_map_end(rpc_map *m, msgpack_packer *out)
{
    msgpack_pack_map(out, m->n);
    if (m->body.size) out->callback(out->data, m->body.data, m->body.size);
    msgpack_sbuffer_destroy(&m->body);
}
