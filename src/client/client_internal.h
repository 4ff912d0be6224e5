/*
 * Internals of the client library shared by its files: the connection, the call primitive
 * and the msgpack readers the decoders are built from. They are not static (several files
 * use them), so they carry the zcli_ prefix to stay out of a linking program's namespace.
 */
#ifndef ZMIX_CLIENT_INTERNAL_H
#define ZMIX_CLIENT_INTERNAL_H

#include <msgpack.h>

#include "zmix/client.h"

struct zmix_client {
    int fd;
    int broken; /* a call failed mid-stream: refuse further calls */
    int timeout_ms;
    size_t max_message_size;
    uint32_t next_msgid;
    char address[300];
    msgpack_unpacker unpacker;
    /* The last response (owns the zone its result object points into). */
    msgpack_unpacked last;
    int have_last;
    /* An error notification ([2, "error", ...]) precedes the daemon closing the connection;
     * kept to explain the close. */
    int notified_code;
    char notified_msg[ZMIX_ERROR_MSG_MAX];
    zmix_client_progress_fn on_progress;
    void *on_progress_user;
};

/* Sends [0, msgid, method, params] (params: one packed msgpack object, or NULL for {}) and
 * waits until now + timeout_ms + extra_ms for the matching response. On success *result
 * points into c->last and stays valid until the next call. */
int zcli_call(zmix_client *c, const char *method, const char *params, size_t params_len,
              int extra_ms, const msgpack_object **result, zmix_error *err);

/* ---- Readers: absent keys leave the default; wrong types are an EFORMAT error ------------ */

const msgpack_object *zcli_mp_get(const msgpack_object *map, const char *key);
int zcli_mp_int(const msgpack_object *map, const char *key, int64_t *out, zmix_error *err);
int zcli_mp_int32(const msgpack_object *map, const char *key, int *out, zmix_error *err);
int zcli_mp_u64(const msgpack_object *map, const char *key, uint64_t *out, zmix_error *err);
/* Doubles: nil reads as NaN. */
int zcli_mp_double(const msgpack_object *map, const char *key, double *out, zmix_error *err);
int zcli_mp_bool(const msgpack_object *map, const char *key, int *out, zmix_error *err);
int zcli_mp_str(const msgpack_object *map, const char *key, char *out, size_t cap, zmix_error *err);
int zcli_mp_score(const msgpack_object *map, const char *key, zmix_score *out, int *present,
                  zmix_error *err);
/* An array of numbers as floats (nil: *n = 0, *out = NULL). */
int zcli_mp_floats(const msgpack_object *map, const char *key, float **out, int *n,
                   zmix_error *err);
int zcli_mp_doubles(const msgpack_object *map, const char *key, double **out, int *n,
                    zmix_error *err);

/* Decoders from a result map into the public structs (the struct is zeroed first). */
int zcli_decode_status(const msgpack_object *o, zmix_client_status *out, zmix_error *err);
int zcli_decode_result(const msgpack_object *o, zmix_client_result *out, zmix_error *err);
/* The "history" array (of a status or of the history method) into out->history. */
int zcli_decode_history(const msgpack_object *h, zmix_client_status *out, zmix_error *err);

void zcli_pack_str(msgpack_packer *pk, const char *s);

/* JSON rendering of a msgpack object (json.c). */
int zcli_render_json(const msgpack_object *o, char **out, zmix_error *err);

#endif
