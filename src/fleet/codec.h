/*
 * The fleet's messages as bytes (proto/FLEET.md): a chunk (one scorer call to make), a
 * result (its scores, or why there are none), and an example set. MessagePack maps with
 * string keys, so that an evaluator in any language reads them with a stock library. Pure:
 * no I/O, every function thread-safe.
 */
#ifndef ZMIX_FLEET_CODEC_H
#define ZMIX_FLEET_CODEC_H

#include <msgpack.h>
#include <stdint.h>

#include "fleet/seam.h"
#include "zmix/model.h"

#define FLEET_FORMAT     1   /* "v" of every message */
#define FLEET_NAME_MAX   192 /* key names and ids */
#define FLEET_MEMBER_MAX 80  /* a member id: HOST-PID-RANDOM */

typedef struct fleet_chunk {
    char id[FLEET_NAME_MAX];       /* MEMBER:STEP:INDEX, unique in the fleet */
    uint64_t job;                  /* the driver's job id, for logs */
    char step_key[FLEET_NAME_MAX]; /* exists while the driver still wants the step's results */
    char results[FLEET_NAME_MAX];  /* hash the result goes to (HSETNX) ... */
    char field[FLEET_NAME_MAX];    /* ... under this field */
    char done[FLEET_NAME_MAX];     /* list the id is pushed on when this result won */
    char model_fingerprint[65];
    char experts_digest[65];
    char examples[FLEET_NAME_MAX]; /* key of the example set (fleet_examples_encode) */
    seam_call call;                /* kind, n, dim, rows and the settings; ex unset */
} fleet_chunk;

/* A chunk's bytes into sb. */
int fleet_chunk_encode(const fleet_chunk *c, msgpack_sbuffer *sb);
/* Reads a chunk; rows malloc'ed into c->call.rows (seam_call_free). Errors name the field.
 * On failure, id, results, field and done are kept when they could be read (non-empty), so
 * that the failure can be reported to the chunk's driver. */
int fleet_chunk_decode(const char *data, size_t len, fleet_chunk *c, zmix_error *err);

/* A result: the scores of every candidate of chunk `id` (rc 0), or the failure (rc != 0,
 * error in words). */
int fleet_result_encode(const char *id, const char *member, int rc, const char *error, int n,
                        const zmix_score *scores, double seconds, msgpack_sbuffer *sb);
/* Reads a result into call (have_result, result_rc, result_error, scores); a result that
 * does not fit call (wrong count) becomes a failure saying so. by: the member that scored. */
int fleet_result_decode(const char *data, size_t len, seam_call *call, char *by, size_t by_size,
                        zmix_error *err);

int fleet_examples_encode(const zmix_examples *ex, msgpack_sbuffer *sb);
int fleet_examples_decode(const char *data, size_t len, zmix_examples *out, zmix_error *err);

#endif
