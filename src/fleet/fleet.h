/*
 * The Redis side of zmixd (zmixd --store redis://...; docs/fleet.md, proto/FLEET.md).
 *
 * A fleet is every zmixd (and external evaluator) on one Redis database. This module
 *   - joins it: checks that this daemon's base model and experts are the fleet's (refusing
 *     to start, saying which differ, when not) and keeps a member key alive (a heartbeat
 *     with a TTL);
 *   - drives the steps of this daemon's jobs through the shared stream: each piece of a
 *     step becomes one or two chunks (seam.h) on the stream zmix:chunks; the results come
 *     back through a hash per step, and the finished pieces are handed to the loop as if
 *     the local pool had scored them (pool_complete);
 *   - scores chunks: as many scorer threads as --workers read the stream through the
 *     consumer group zmix:scorers, whoever published them, and reclaim chunks left pending
 *     by a member that died.
 *
 * Threads: fleet_open, fleet_submit_step, fleet_stop and fleet_free are called from the
 * event loop (fleet_open at startup). Every Redis command runs on the fleet's own threads,
 * each with its own synchronous connection, so the loop never waits for Redis.
 */
#ifndef ZMIX_FLEET_H
#define ZMIX_FLEET_H

#include <stdatomic.h>
#include <stdint.h>

#include "daemon/pool.h"
#include "util/log.h"
#include "zmix/adapt.h"
#include "zmix/model.h"

typedef struct fleet fleet;

typedef struct fleet_config {
    const char *url; /* as given, for messages */
    const char *host;
    int port;
    int db;
    const char *password; /* NULL: none */
    int scorers;          /* scoring threads */
    int claim_ms;         /* a chunk pending this long on one consumer is taken over */
    const zmix_model *model;
    const zmix_runtime *rt;
    const char *model_fingerprint;
    const char *experts_digest;
    zmix_log *log;
    pool *pool; /* finished pieces are handed back through it (pool_complete) */
} fleet_config;

/* Connects, joins (identity check, member key, consumer group) and starts the threads.
 * Errors name what was wrong: the address, the password, the fleet's other model or
 * experts. */
int fleet_open(const fleet_config *cfg, fleet **out, zmix_error *err);

/* Scores one open step of a session through the fleet. items: the step's pieces (linked by
 * next, as zmix_session_split made them), each handed back through pool_complete with rc
 * set, in one batch, once every chunk has a result, or when stop is raised (rc
 * ZMIX_ECANCELED). The session and items belong to the fleet until then. Nonzero (out of
 * memory) leaves them with the caller. */
int fleet_submit_step(fleet *f, zmix_session *session, pool_item *items, const atomic_int *stop,
                      uint64_t job_id);

/* Stops the threads (steps in flight are handed back cancelled) and leaves the fleet. */
void fleet_stop(fleet *f);
void fleet_free(fleet *f);

const char *fleet_member(const fleet *f);
const char *fleet_url(const fleet *f);

/* A new synchronous connection to the fleet's Redis (authenticated, on its database), for the
 * fleet's other parts (fleet_jobs.c); NULL with err set. Any thread. */
struct redisContext;
struct redisContext *fleet_connect(const fleet *f, zmix_error *err);
long fleet_chunks_scored(const fleet *f); /* by this member, for any driver */
/* Scorers in the whole fleet (every live member's, external evaluators included; at least
 * this member's), as of the last heartbeat: a step is split for all of them. Any thread. */
int fleet_scorers(const fleet *f);

#endif
