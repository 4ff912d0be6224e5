/*
 * MessagePack-RPC framing and decoding, as pure functions over bytes and msgpack objects
 * (no sockets, no allocation beyond msgpack-c's own): the connection code feeds them, the
 * unit tests and fuzzers call them directly.
 *
 * Why a frame scanner in front of msgpack-c: msgpack-c allocates a container's element array
 * as soon as it reads the container's header, so five hostile bytes (an array32 header
 * claiming 4 billion elements) would make it allocate ~100 GB. rpc_frame_scan walks the
 * headers without allocating, rejects declared sizes that cannot fit the frame limit, and
 * reports where a complete message ends; only complete, bounded messages reach the unpacker.
 */
#ifndef ZMIX_WIRE_RPC_H
#define ZMIX_WIRE_RPC_H

#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

#include "zmix/common.h"

#define RPC_MAX_DEPTH 16 /* deepest nesting accepted (a submit request needs 5) */

enum rpc_frame_status {
    RPC_FRAME_NEED_MORE = 0, /* buf holds a prefix of a message that fits the limit */
    RPC_FRAME_COMPLETE = 1,  /* *frame_len bytes form one complete message */
    RPC_FRAME_TOO_LARGE = -1,
    RPC_FRAME_MALFORMED = -2 /* 0xc1 (never used) or nesting deeper than RPC_MAX_DEPTH */
};

/* Scans one msgpack message at the start of buf. Sets *frame_len when complete. For
 * TOO_LARGE and MALFORMED, err says why (with the byte offset). */
int rpc_frame_scan(const uint8_t *buf, size_t len, size_t limit, size_t *frame_len,
                   zmix_error *err);

/* The same scan, resumable: a connection keeps one scanner and calls it again with the same
 * message prefix grown by new bytes, so a large message arriving in many reads is walked
 * once in total, not once per read. Reset after COMPLETE (done by the call itself) and
 * meaningless after TOO_LARGE or MALFORMED. */
typedef struct rpc_scanner {
    uint64_t remaining[RPC_MAX_DEPTH + 1]; /* elements still expected at each open level */
    int depth;
    size_t pos; /* bytes of the message fully walked */
} rpc_scanner;

void rpc_scanner_reset(rpc_scanner *sc);
int rpc_scanner_scan(rpc_scanner *sc, const uint8_t *buf, size_t len, size_t limit,
                     size_t *frame_len, zmix_error *err);

enum rpc_type { RPC_REQUEST = 0, RPC_RESPONSE = 1, RPC_NOTIFY = 2 };

typedef struct rpc_request {
    int type;              /* RPC_REQUEST or RPC_NOTIFY */
    uint32_t msgid;        /* requests only */
    char method[32];       /* NUL-terminated */
    msgpack_object params; /* always a map (an empty map when the client sent nil or []) */
} rpc_request;

/* Decodes a message into a request. On error, *msgid_known tells whether the message carried
 * a usable msgid (then the error can be answered as a response to it) and req->msgid is set. */
int rpc_request_decode(const msgpack_object *obj, rpc_request *req, int *msgid_known,
                       zmix_error *err);

/* ---- Parameter access: every getter names the field in its error ------------------ */

/* The value under key in a map, or NULL. Keys must be strings. */
const msgpack_object *rpc_map_get(const msgpack_object *map, const char *key);
/* Fails naming the first key of map that is not in allowed (NULL-terminated) or not a
 * string, so that a misspelt setting is an error, not silently ignored. The message starts
 * "WHERE: " (where NULL: nothing, for a caller that prefixes it itself). */
int rpc_map_check_keys(const msgpack_object *map, const char *const *allowed, const char *where,
                       zmix_error *err);
/* Each getter: absent (or nil) → *out = def when !required, else ZMIX_EINVAL "missing field".
 * Wrong type → ZMIX_EINVAL naming the field and the type found. Out of range → ZMIX_ERANGE. */
int rpc_get_int(const msgpack_object *map, const char *key, int required, int64_t lo, int64_t hi,
                int64_t def, int64_t *out, zmix_error *err);
int rpc_get_uint64(const msgpack_object *map, const char *key, uint64_t def, uint64_t *out,
                   zmix_error *err);
int rpc_get_double(const msgpack_object *map, const char *key, int required, double lo, double hi,
                   double def, double *out, zmix_error *err);
int rpc_get_bool(const msgpack_object *map, const char *key, int def, int *out, zmix_error *err);
/* Copies a string into out (cap bytes incl. NUL); longer strings and embedded NULs fail. */
int rpc_get_str(const msgpack_object *map, const char *key, int required, const char *def,
                char *out, size_t cap, zmix_error *err);
/* A map-valued field; absent → *out = NULL. */
int rpc_get_map(const msgpack_object *map, const char *key, const msgpack_object **out,
                zmix_error *err);

const char *rpc_type_name(const msgpack_object *o); /* "string", "map", ... */

/* ---- Encoding --------------------------------------------------------------------- */

/* [1, msgid, nil, <result>] where result is already-packed msgpack bytes (one object). */
int rpc_pack_result(msgpack_sbuffer *out, uint32_t msgid, const char *result, size_t len);
/* [1, msgid, {code: "EINVAL", message: "..."}, nil] */
int rpc_pack_error(msgpack_sbuffer *out, uint32_t msgid, const char *code, const char *message);
/* [2, method, params] with params already packed. */
int rpc_pack_notify(msgpack_sbuffer *out, const char *method, const char *params, size_t len);
/* [2, "error", {code, message}]: for a problem that no request can be blamed for. */
int rpc_pack_error_notify(msgpack_sbuffer *out, const char *code, const char *message);

/* Packs a string, escaping bytes that are not well-formed UTF-8 as \xHH (the protocol's
 * strings are UTF-8, and messages quote what clients sent). */
void rpc_pack_strn(msgpack_packer *pk, const char *s, size_t n);
/* Packs a NUL-terminated C string, as rpc_pack_strn. */
void rpc_pack_cstr(msgpack_packer *pk, const char *s);
/* A map built without counting its entries by hand: keys and values are packed into a
 * buffer of its own, and the header with the count is written when it is closed.
 *
 *     rpc_map m;
 *     rpc_map_begin(&m);
 *     rpc_map_str(&m, "task", task);
 *     msgpack_pack_int(rpc_map_key(&m, "generation"), g);   // any value, even a nested map
 *     rpc_map_end(&m, pk);                                   // header + entries into pk
 */
typedef struct rpc_map {
    msgpack_sbuffer body;
    msgpack_packer pk;
    uint32_t n;
} rpc_map;

void rpc_map_begin(rpc_map *m);
/* Packs the key and returns the packer the value goes to (exactly one value). */
msgpack_packer *rpc_map_key(rpc_map *m, const char *key);
void rpc_map_str(rpc_map *m, const char *key, const char *value);
void rpc_map_bool(rpc_map *m, const char *key, int value);
void rpc_map_int(rpc_map *m, const char *key, int64_t value);
void rpc_map_u64(rpc_map *m, const char *key, uint64_t value);
void rpc_map_double(rpc_map *m, const char *key, double value);
void rpc_map_nil(rpc_map *m, const char *key);
/* Writes the map into out and frees the builder. */
void rpc_map_end(rpc_map *m, msgpack_packer *out);

#endif
