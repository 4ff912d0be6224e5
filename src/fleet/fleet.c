/*
 * The Redis side of zmixd (see fleet.h; the keys and messages are proto/FLEET.md's).
 *
 * Threads: one driver thread publishes this daemon's steps and collects their results; the
 * scorer threads score chunks from the stream. Each has its own synchronous connection and
 * reconnects on its own. The loop only queues steps for the driver (under lock).
 */
#include "fleet/fleet.h"

#include <errno.h>
#include <hiredis.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fleet/codec.h"
#include "fleet/seam.h"
#include "util/clock.h"
#include "util/sha256.h"

/* Key names (proto/FLEET.md, "Keys"). */
#define K_IDENTITY "zmix:fleet:identity"
#define K_STREAM   "zmix:chunks"
#define K_GROUP    "zmix:scorers"
#define K_SCORED   "zmix:scored"
#define K_MEMBER   "zmix:member:"   /* + member id */
#define K_DONE     "zmix:done:"     /* + member id */
#define K_STEP     "zmix:step:"     /* + member id:step */
#define K_RESULTS  "zmix:results:"  /* + member id:step */
#define K_EXAMPLES "zmix:examples:" /* + SHA-256 of the example set's bytes */

#define MEMBER_TTL_S 10    /* a member key outlives this many seconds without heartbeat */
#define HEARTBEAT_MS 2000  /* ... renewed this often */
#define KEY_TTL_S    86400 /* result and example keys: a driver that died leaves them */
/* A step key outlives its driver's heartbeats by this much, so that the steps of a driver
 * that died are dropped soon (its jobs resume elsewhere after --fleet-lease-ms); a driver that
 * only lost Redis for longer publishes its steps again. */
#define STEP_TTL_S       10
#define POLL_MS          1000 /* results are also read without a notification this often */
#define BLOCK_MS         500  /* a scorer's wait for a chunk (the stop flag is seen after it) */
#define CONNECT_RETRY_MS 1000

typedef struct fleet_piece {
    pool_item *item;
    int first, n; /* its calls in the step's ctx.calls */
} fleet_piece;

typedef struct fleet_step fleet_step;
struct fleet_step {
    fleet_step *next;
    uint64_t seq, job;
    zmix_session *session;
    pool_item *items;
    const atomic_int *stop;
    fleet_piece *pieces;
    int n_pieces;
    seam_ctx ctx; /* the captured calls, with their results as they arrive */
    int n_results;
    int published; /* every chunk without a result is on the stream */
    char step_key[FLEET_NAME_MAX], results[FLEET_NAME_MAX];
};

struct fleet {
    char url[512], host[256], password[512];
    int port, db, has_password, scorers, claim_ms;
    const zmix_model *model;
    const zmix_runtime *rt;
    char model_fingerprint[65], experts_digest[65];
    zmix_log *log;
    pool *pool;
    char member[FLEET_MEMBER_MAX];

    atomic_int stopping;
    atomic_long chunks_scored;
    atomic_int fleet_scorers; /* every live member's scorers, summed at each heartbeat */
    pthread_t driver;
    int driver_started;
    pthread_t *scorer_threads;
    int n_scorers_started;

    pthread_mutex_t lock; /* guards incoming */
    pthread_cond_t wake;
    fleet_step *incoming;

    /* Driver thread only: */
    fleet_step *outstanding;
    uint64_t next_seq;
};

/* ---- Connections ----------------------------------------------------------------------- */

static int reply_is_error(const redisReply *r)
{
    return !r || r->type == REDIS_REPLY_ERROR;
}

static const char *reply_text(const redisContext *c, const redisReply *r)
{
    if (!r) return c->errstr[0] ? c->errstr : "no reply";
    if (r->type == REDIS_REPLY_ERROR || r->type == REDIS_REPLY_STATUS ||
        r->type == REDIS_REPLY_STRING)
        return r->str;
    return "unexpected reply";
}

/* A connection ready for commands: connected, authenticated, on the right database. */
static redisContext *connect_redis(const fleet *f, zmix_error *err)
{
    struct timeval tv = {5, 0};
    redisContext *c = redisConnectWithTimeout(f->host, f->port, tv);
    if (!c) {
        zmix_error_set(err, ZMIX_ENOMEM, "--store %s: out of memory for a connection", f->url);
        return NULL;
    }
    if (c->err) {
        zmix_error_set(err, ZMIX_EIO, "--store %s: cannot connect to Redis at %s:%d: %s", f->url,
                       f->host, f->port, c->errstr);
        redisFree(c);
        return NULL;
    }
    /* Commands that wait (BLPOP, XREADGROUP BLOCK) wait far less than this. */
    struct timeval cmd = {15, 0};
    redisSetTimeout(c, cmd);
    redisReply *r;
    if (f->has_password) {
        r = redisCommand(c, "AUTH %s", f->password);
        if (reply_is_error(r)) {
            zmix_error_set(err, ZMIX_EAUTH,
                           "--store %s: Redis refused the password from --store-password-file: %s",
                           f->url, reply_text(c, r));
            if (r) freeReplyObject(r);
            redisFree(c);
            return NULL;
        }
        freeReplyObject(r);
    }
    r = redisCommand(c, "SELECT %d", f->db);
    if (reply_is_error(r)) {
        const char *why = reply_text(c, r);
        if (!strncmp(why, "NOAUTH", 6))
            zmix_error_set(err, ZMIX_EAUTH,
                           "--store %s: Redis requires a password: give it with "
                           "--store-password-file FILE (%s)",
                           f->url, why);
        else
            zmix_error_set(err, ZMIX_EINVAL, "--store %s: database %d: %s", f->url, f->db, why);
        if (r) freeReplyObject(r);
        redisFree(c);
        return NULL;
    }
    freeReplyObject(r);
    return c;
}

/* Runs one command whose reply is not looked at beyond success. */
static int command_ok(redisContext *c, redisReply *r)
{
    int ok = !reply_is_error(r);
    if (r) freeReplyObject(r);
    return ok && !c->err ? 0 : -1;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static uint64_t now_ms(void)
{
    return zmix_now_ns() / 1000000ull;
}

/* A connection for a fleet thread: retried until it works or the fleet stops. */
static redisContext *thread_connect(fleet *f, const char *who)
{
    int logged = 0;
    while (!atomic_load(&f->stopping)) {
        zmix_error err = {0};
        redisContext *c = connect_redis(f, &err);
        if (c) {
            if (logged) ZLOG_INFO(f->log, "fleet %s: reconnected to Redis", who);
            return c;
        }
        if (!logged) ZLOG_WARN(f->log, "fleet %s: %s (retrying every second)", who, err.msg);
        logged = 1;
        sleep_ms(CONNECT_RETRY_MS);
    }
    return NULL;
}

/* ---- Handing pieces back --------------------------------------------------------------- */

static void step_free(fleet_step *st)
{
    for (int i = 0; i < st->ctx.n_calls; i++) seam_call_free(&st->ctx.calls[i]);
    free(st->ctx.calls);
    free(st->pieces);
    free(st);
}

static void forget_step_keys(redisContext *c, const fleet_step *st)
{
    if (!c || c->err) return;
    redisReply *r = redisCommand(c, "DEL %s %s", st->step_key, st->results);
    if (r) freeReplyObject(r);
}

/* Every piece back to the loop with rc (and the message for the first, when rc is a
 * failure: the job fails with it). */
static void hand_back(fleet *f, fleet_step *st, int rc, const char *msg)
{
    for (int i = 0; i < st->n_pieces; i++) {
        pool_item *it = st->pieces[i].item;
        it->rc = i == 0 || rc == ZMIX_ECANCELED ? rc : ZMIX_ECANCELED;
        zmix_error_set(&it->err, it->rc, "%s", msg);
    }
    pool_complete(f->pool, st->items);
    step_free(st);
}

/* Every chunk has its result: each piece is replayed with the results injected, which
 * writes the scores into the session exactly where local scoring would have. */
static void hand_back_scored(fleet *f, fleet_step *st)
{
    for (int i = 0; i < st->n_pieces; i++) {
        fleet_piece *p = &st->pieces[i];
        seam_ctx inj = {.mode = SEAM_INJECT,
                        .rt = f->rt,
                        .calls = st->ctx.calls + p->first,
                        .n_calls = p->n,
                        .stop = st->stop};
        zmix_score_ctl ctl = {.n_threads = 1, .stop = st->stop};
        zmix_work w = {.begin = p->item->begin, .end = p->item->end};
        p->item->rc = zmix_session_score_routed(st->session, &w, &ctl, seam_route, &inj);
        p->item->err = w.err;
    }
    pool_complete(f->pool, st->items);
    step_free(st);
}

/* ---- The driver: publishing steps, collecting results ---------------------------------- */

int fleet_submit_step(fleet *f, zmix_session *session, pool_item *items, const atomic_int *stop,
                      uint64_t job_id)
{
    fleet_step *st = calloc(1, sizeof *st);
    if (!st) return ZMIX_ENOMEM;
    int n = 0;
    for (pool_item *it = items; it; it = it->next) n++;
    st->pieces = calloc((size_t)(n ? n : 1), sizeof *st->pieces);
    if (!st->pieces) {
        free(st);
        return ZMIX_ENOMEM;
    }
    int i = 0;
    for (pool_item *it = items; it; it = it->next) st->pieces[i++].item = it;
    st->n_pieces = n;
    st->session = session;
    st->items = items;
    st->stop = stop;
    st->job = job_id;
    pthread_mutex_lock(&f->lock);
    fleet_step **tail = &f->incoming;
    while (*tail) tail = &(*tail)->next;
    *tail = st;
    pthread_cond_signal(&f->wake);
    pthread_mutex_unlock(&f->lock);
    return 0;
}

/* The examples a call is scored on, stored once under their digest. */
static int put_examples(redisContext *c, const zmix_examples *ex, char key[FLEET_NAME_MAX],
                        zmix_error *err)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    fleet_examples_encode(ex, &sb);
    char hex[ZMIX_SHA256_HEX];
    zmix_sha256_hex_of(sb.data, sb.size, hex);
    snprintf(key, FLEET_NAME_MAX, K_EXAMPLES "%s", hex);
    redisReply *r = redisCommand(c, "SET %s %b EX %d", key, sb.data, sb.size, KEY_TTL_S);
    msgpack_sbuffer_destroy(&sb);
    if (command_ok(c, r) != 0)
        return zmix_error_set(err, ZMIX_EIO, "storing the examples: %s",
                              c->err ? c->errstr : "refused");
    return 0;
}

/* Records the step's scorer calls (one chunk each); nothing is sent yet. */
static int capture(fleet *f, fleet_step *st, zmix_error *err)
{
    st->ctx.mode = SEAM_CAPTURE;
    st->ctx.rt = f->rt;
    zmix_score_ctl ctl = {.n_threads = 1, .stop = st->stop};
    for (int i = 0; i < st->n_pieces; i++) {
        fleet_piece *p = &st->pieces[i];
        zmix_work w = {.begin = p->item->begin, .end = p->item->end};
        p->first = st->ctx.n_calls;
        int rc = zmix_session_score_routed(st->session, &w, &ctl, seam_route, &st->ctx);
        if (rc != 0) {
            *err = w.err;
            return rc;
        }
        p->n = st->ctx.n_calls - p->first;
    }
    return 0;
}

/* Opens the step in Redis and publishes every chunk that has no result yet: at first, and
 * again when the step's keys vanished (Redis restarted without its data, or this daemon
 * stalled past STEP_TTL_S). */
static int publish(fleet *f, redisContext *c, fleet_step *st, zmix_error *err)
{
    redisReply *r =
        redisCommand(c, "SET %s %llu EX %d", st->step_key, (unsigned long long)st->job, STEP_TTL_S);
    if (command_ok(c, r) != 0)
        return zmix_error_set(err, ZMIX_EIO, "opening step: %s", c->err ? c->errstr : "refused");
    const zmix_examples *stored = NULL;
    char ex_key[FLEET_NAME_MAX] = "";
    int sent = 0;
    for (int i = 0; i < st->ctx.n_calls; i++) {
        seam_call *call = &st->ctx.calls[i];
        if (call->have_result) continue;
        if (call->ex != stored) {
            int rc = put_examples(c, call->ex, ex_key, err);
            if (rc) return rc;
            stored = call->ex;
        }
        fleet_chunk ch;
        memset(&ch, 0, sizeof ch);
        snprintf(ch.id, sizeof ch.id, "%s:%llu:%d", f->member, (unsigned long long)st->seq, i);
        ch.job = st->job;
        snprintf(ch.step_key, sizeof ch.step_key, "%s", st->step_key);
        snprintf(ch.results, sizeof ch.results, "%s", st->results);
        snprintf(ch.field, sizeof ch.field, "%d", i);
        snprintf(ch.done, sizeof ch.done, K_DONE "%s", f->member);
        snprintf(ch.model_fingerprint, sizeof ch.model_fingerprint, "%s", f->model_fingerprint);
        snprintf(ch.experts_digest, sizeof ch.experts_digest, "%s", f->experts_digest);
        snprintf(ch.examples, sizeof ch.examples, "%s", ex_key);
        ch.call = *call;
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        if (fleet_chunk_encode(&ch, &sb) != 0) {
            msgpack_sbuffer_destroy(&sb);
            return zmix_error_set(err, ZMIX_ENOMEM, "fleet: out of memory for a chunk");
        }
        r = redisCommand(c, "XADD " K_STREAM " * chunk %b", sb.data, sb.size);
        msgpack_sbuffer_destroy(&sb);
        if (command_ok(c, r) != 0)
            return zmix_error_set(err, ZMIX_EIO, "publishing a chunk: %s",
                                  c->err ? c->errstr : "refused");
        sent++;
    }
    st->published = 1;
    ZLOG_DEBUG(f->log, "fleet: job %llu step %llu: %d chunks published",
               (unsigned long long)st->job, (unsigned long long)st->seq, sent);
    return 0;
}

/* Takes result `field` of step st from Redis when it has one. */
static void absorb(fleet_step *st, int index, const char *data, size_t len)
{
    if (index < 0 || index >= st->ctx.n_calls || st->ctx.calls[index].have_result) return;
    seam_call *call = &st->ctx.calls[index];
    char by[FLEET_NAME_MAX];
    zmix_error err = {0};
    if (fleet_result_decode(data, len, call, by, sizeof by, &err) != 0 && !call->have_result) {
        call->have_result = 1;
        call->result_rc = ZMIX_EFORMAT;
        snprintf(call->result_error, sizeof call->result_error, "%.200s", err.msg);
    }
    if (call->result_rc != 0) {
        char msg[sizeof call->result_error];
        snprintf(msg, sizeof msg, "chunk %d of job %llu, scored by fleet member %.80s: %.100s",
                 index, (unsigned long long)st->job, by[0] ? by : "?", call->result_error);
        memcpy(call->result_error, msg, sizeof msg);
    }
    st->n_results++;
}

static void read_results(fleet *f, redisContext *c, fleet_step *st)
{
    redisReply *r = redisCommand(c, "HGETALL %s", st->results);
    if (r && r->type == REDIS_REPLY_ARRAY)
        for (size_t i = 0; i + 1 < r->elements; i += 2)
            absorb(st, atoi(r->element[i]->str), r->element[i + 1]->str, r->element[i + 1]->len);
    if (r) freeReplyObject(r);
}

/* A notification names a chunk id MEMBER:STEP:INDEX of ours. */
static void on_done(fleet *f, redisContext *c, const char *id)
{
    const char *idx = strrchr(id, ':');
    if (!idx || idx == id) return;
    const char *seq_end = idx;
    const char *seq = seq_end - 1;
    while (seq > id && seq[-1] != ':') seq--;
    unsigned long long s = strtoull(seq, NULL, 10);
    for (fleet_step *st = f->outstanding; st; st = st->next) {
        if (st->seq != s) continue;
        int index = atoi(idx + 1);
        if (index < 0 || index >= st->ctx.n_calls || st->ctx.calls[index].have_result) return;
        redisReply *r = redisCommand(c, "HGET %s %d", st->results, index);
        if (r && r->type == REDIS_REPLY_STRING) absorb(st, index, r->str, r->len);
        if (r) freeReplyObject(r);
        return;
    }
}

/* Hands back every outstanding step that is complete or whose job was stopped. */
static void settle(fleet *f, redisContext *c)
{
    fleet_step **pp = &f->outstanding;
    while (*pp) {
        fleet_step *st = *pp;
        int stopped = st->stop && atomic_load_explicit(st->stop, memory_order_relaxed);
        if (!stopped && st->n_results < st->ctx.n_calls) {
            pp = &st->next;
            continue;
        }
        *pp = st->next;
        forget_step_keys(c, st);
        if (stopped)
            hand_back(f, st, ZMIX_ECANCELED, "cancelled");
        else
            hand_back_scored(f, st);
    }
}

/* The scorers of every live member (their :info keys), for splitting steps fleet-wide. */
static int sum_scorers(redisContext *c)
{
    int total = 0;
    char cursor[32] = "0";
    do {
        redisReply *r = redisCommand(c, "SCAN %s MATCH " K_MEMBER "*:info COUNT 100", cursor);
        if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
            if (r) freeReplyObject(r);
            return total;
        }
        snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
        for (size_t i = 0; i < r->element[1]->elements; i++) {
            redisReply *n = redisCommand(c, "HGET %s scorers", r->element[1]->element[i]->str);
            if (n && n->type == REDIS_REPLY_STRING) total += atoi(n->str);
            if (n) freeReplyObject(n);
        }
        freeReplyObject(r);
    } while (strcmp(cursor, "0"));
    return total;
}

static void heartbeat(fleet *f, redisContext *c)
{
    redisReply *r = redisCommand(c, "SET " K_MEMBER "%s %s EX %d", f->member, f->url, MEMBER_TTL_S);
    command_ok(c, r);
    /* Read by members listing the fleet: how many scorers this member runs. */
    r = redisCommand(c, "HSET " K_MEMBER "%s:info pid %d scorers %d", f->member, (int)getpid(),
                     f->scorers);
    command_ok(c, r);
    r = redisCommand(c, "EXPIRE " K_MEMBER "%s:info %d", f->member, MEMBER_TTL_S);
    command_ok(c, r);
    /* A Redis that lost its data has lost the fleet's identity too: the members that are
     * still running record it again (they were checked when they joined). */
    char identity[160];
    snprintf(identity, sizeof identity, "%s %s", f->model_fingerprint, f->experts_digest);
    r = redisCommand(c, "SET " K_IDENTITY " %s NX", identity);
    command_ok(c, r);
    int total = sum_scorers(c);
    if (total > 0) atomic_store(&f->fleet_scorers, total);
}

static void read_results(fleet *f, redisContext *c, fleet_step *st);

/* Keeps the steps in flight alive in Redis, and publishes again those whose keys are
 * gone. */
static void refresh_steps(fleet *f, redisContext *c)
{
    for (fleet_step *st = f->outstanding; st && !c->err; st = st->next) {
        if (st->published) {
            redisReply *r = redisCommand(c, "EXPIRE %s %d", st->step_key, STEP_TTL_S);
            int alive = r && r->type == REDIS_REPLY_INTEGER && r->integer == 1;
            if (r) freeReplyObject(r);
            if (alive || c->err) continue;
            ZLOG_WARN(f->log,
                      "fleet: job %llu: step %llu is gone from Redis (restarted without its "
                      "data?): publishing it again",
                      (unsigned long long)st->job, (unsigned long long)st->seq);
            read_results(f, c, st);
        }
        zmix_error err = {0};
        if (publish(f, c, st, &err) != 0)
            ZLOG_WARN(f->log, "fleet: job %llu: %s (retrying)", (unsigned long long)st->job,
                      err.msg);
    }
}

static void *driver_main(void *arg)
{
    fleet *f = arg;
    redisContext *c = NULL;
    uint64_t last_beat = 0, last_poll = 0, last_try = 0;
    int down_logged = 0;
    char done_key[FLEET_NAME_MAX];
    snprintf(done_key, sizeof done_key, K_DONE "%s", f->member);
    while (!atomic_load(&f->stopping)) {
        pthread_mutex_lock(&f->lock);
        if (!f->incoming && !f->outstanding && !atomic_load(&f->stopping)) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 200 * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&f->wake, &f->lock, &ts);
        }
        fleet_step *in = f->incoming;
        f->incoming = NULL;
        pthread_mutex_unlock(&f->lock);

        /* The connection, tried again once a second while Redis is away. Meanwhile steps are
         * still captured, and cancels and shutdowns still end the steps in flight. */
        if (c && c->err) {
            ZLOG_WARN(f->log, "fleet driver: Redis connection lost: %s", c->errstr);
            redisFree(c);
            c = NULL;
        }
        uint64_t now = now_ms();
        if (!c && now - last_try >= CONNECT_RETRY_MS) {
            last_try = now;
            zmix_error err = {0};
            c = connect_redis(f, &err);
            if (c && down_logged) ZLOG_INFO(f->log, "fleet driver: reconnected to Redis");
            if (!c && !down_logged)
                ZLOG_WARN(f->log, "fleet driver: %s (retrying every second)", err.msg);
            down_logged = !c;
            last_beat = 0;
        }

        while (in) {
            fleet_step *st = in;
            in = st->next;
            st->next = NULL;
            st->seq = ++f->next_seq;
            snprintf(st->step_key, sizeof st->step_key, K_STEP "%s:%llu", f->member,
                     (unsigned long long)st->seq);
            snprintf(st->results, sizeof st->results, K_RESULTS "%s:%llu", f->member,
                     (unsigned long long)st->seq);
            zmix_error err = {0};
            if (capture(f, st, &err) != 0) { /* the session refused the step: the job fails */
                hand_back(f, st, err.code ? err.code : ZMIX_EINTERNAL, err.msg);
                continue;
            }
            st->next = f->outstanding;
            f->outstanding = st;
            /* Redis trouble is not the job's: the step is published again on the next
             * heartbeat, once the connection is back. */
            if (c && publish(f, c, st, &err) != 0)
                ZLOG_WARN(f->log, "fleet: job %llu: %s (retrying)", (unsigned long long)st->job,
                          err.msg);
        }
        if (c && !c->err && now - last_beat >= HEARTBEAT_MS) {
            heartbeat(f, c);
            refresh_steps(f, c);
            last_beat = now;
        }
        if (f->outstanding && c && !c->err) {
            /* Short: a step the loop queues meanwhile (another job's) is published only once
             * this wait ends. */
            redisReply *r = redisCommand(c, "BLPOP %s 0.01", done_key);
            if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2)
                on_done(f, c, r->element[1]->str);
            if (r) freeReplyObject(r);
            /* A notification can be lost with a connection; the results hash is the truth. */
            if (!c->err && now - last_poll >= POLL_MS) {
                for (fleet_step *st = f->outstanding; st; st = st->next) read_results(f, c, st);
                last_poll = now;
            }
        } else if (f->outstanding) {
            sleep_ms(50);
        }
        settle(f, c && !c->err ? c : NULL);
    }
    /* Stopping: whatever is in flight goes back cancelled (the jobs resume from their
     * checkpoints at the next start). */
    pthread_mutex_lock(&f->lock);
    fleet_step *in = f->incoming;
    f->incoming = NULL;
    pthread_mutex_unlock(&f->lock);
    while (in) {
        fleet_step *st = in;
        in = st->next;
        hand_back(f, st, ZMIX_ECANCELED, "the daemon is stopping");
    }
    while (f->outstanding) {
        fleet_step *st = f->outstanding;
        f->outstanding = st->next;
        forget_step_keys(c, st);
        hand_back(f, st, ZMIX_ECANCELED, "the daemon is stopping");
    }
    if (c && !c->err) {
        redisReply *r =
            redisCommand(c, "DEL " K_MEMBER "%s " K_MEMBER "%s:info", f->member, f->member);
        if (r) freeReplyObject(r);
    }
    if (c) redisFree(c);
    return NULL;
}

/* ---- Scorers --------------------------------------------------------------------------- */

typedef struct scorer {
    fleet *f;
    int index;
    char consumer[FLEET_NAME_MAX];
    char ex_key[FLEET_NAME_MAX]; /* the example set held in ex */
    zmix_examples ex;
} scorer;

/* The examples of a chunk: the last set read is kept (a step's chunks share one). */
static int scorer_examples(scorer *s, redisContext *c, const char *key, zmix_error *err)
{
    if (s->ex.n > 0 && !strcmp(s->ex_key, key)) return 0;
    zmix_examples_free(&s->ex);
    s->ex_key[0] = '\0';
    redisReply *r = redisCommand(c, "GET %s", key);
    if (!r || r->type != REDIS_REPLY_STRING) {
        int rc = zmix_error_set(err, r ? ZMIX_ENOTFOUND : ZMIX_EIO, "examples %s: %s", key,
                                r ? "not in Redis (expired, or never written)" : c->errstr);
        if (r) freeReplyObject(r);
        return rc;
    }
    int rc = fleet_examples_decode(r->str, r->len, &s->ex, err);
    freeReplyObject(r);
    if (rc == 0) rc = zmix_examples_check(s->f->model, &s->ex, err);
    if (rc) {
        zmix_examples_free(&s->ex);
        return rc;
    }
    snprintf(s->ex_key, sizeof s->ex_key, "%s", key);
    return 0;
}

/* Scores a decoded chunk: 0 with scores filled, ZMIX_ECANCELED when stopping, else an
 * error for the result. */
static int score_chunk(scorer *s, redisContext *c, fleet_chunk *ch, zmix_score *scores,
                       zmix_error *err)
{
    fleet *f = s->f;
    if (strcmp(ch->model_fingerprint, f->model_fingerprint))
        return zmix_error_set(err, ZMIX_ESTATE, "chunk for base model %.16s, this member has %.16s",
                              ch->model_fingerprint, f->model_fingerprint);
    if (strcmp(ch->experts_digest, f->experts_digest))
        return zmix_error_set(err, ZMIX_ESTATE,
                              "chunk for experts digest %.16s, this member has %.16s",
                              ch->experts_digest, f->experts_digest);
    seam_call *k = &ch->call;
    int n_experts = zmix_runtime_n_experts(f->rt);
    int want = k->kind == SEAM_Z ? (int)zmix_runtime_z_total(f->rt)
               : k->per_layer    ? n_experts * zmix_runtime_n_matrices(f->rt)
                                 : n_experts;
    if (k->dim != want)
        return zmix_error_set(err, ZMIX_EFORMAT, "chunk rows of %d values, expected %d", k->dim,
                              want);
    int rc = scorer_examples(s, c, ch->examples, err);
    if (rc) return rc;
    zmix_score_ctl ctl = {
        .n_threads = 1, .stop = &f->stopping, .choice_norm = (zmix_choice_norm)k->choice_norm};
    if (k->kind == SEAM_Z)
        return zmix_score_z(f->rt, k->rescale, &s->ex, k->n, k->rows, &ctl, scores, NULL, err);
    zmix_compose_opts co = {
        .per_layer = k->per_layer, .normalize = k->normalize, .rescale = k->rescale};
    return zmix_score_alpha(f->rt, &co, &s->ex, k->n, k->rows, &ctl, scores, NULL, err);
}

static void ack(redisContext *c, const char *entry)
{
    redisReply *r = redisCommand(c, "XACK " K_STREAM " " K_GROUP " %s", entry);
    command_ok(c, r);
    r = redisCommand(c, "XDEL " K_STREAM " %s", entry);
    command_ok(c, r);
}

/* Writes a chunk's result (first wins), tells its driver when this one won, and
 * acknowledges the entry. Returns whether this result won. */
static int answer(scorer *s, redisContext *c, const fleet_chunk *ch, const char *entry_id, int rc,
                  const char *error, const zmix_score *scores, double seconds)
{
    fleet *f = s->f;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    fleet_result_encode(ch->id, f->member, rc, error, ch->call.n, scores, seconds, &sb);
    redisReply *r = redisCommand(c, "HSETNX %s %s %b", ch->results, ch->field, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    int won = r && r->type == REDIS_REPLY_INTEGER && r->integer == 1;
    if (r) freeReplyObject(r);
    if (c->err) return 0; /* not acknowledged: taken over later */
    /* One round trip for the rest. */
    int n = 2;
    if (won) {
        redisAppendCommand(c, "EXPIRE %s %d", ch->results, KEY_TTL_S);
        redisAppendCommand(c, "RPUSH %s %s", ch->done, ch->id);
        redisAppendCommand(c, "EXPIRE %s %d", ch->done, KEY_TTL_S);
        redisAppendCommand(c, "HINCRBY " K_SCORED " %s 1", f->member);
        n += 4;
        atomic_fetch_add(&f->chunks_scored, 1);
    }
    redisAppendCommand(c, "XACK " K_STREAM " " K_GROUP " %s", entry_id);
    redisAppendCommand(c, "XDEL " K_STREAM " %s", entry_id);
    for (int i = 0; i < n; i++) {
        void *reply = NULL;
        if (redisGetReply(c, &reply) != REDIS_OK) break;
        freeReplyObject(reply);
    }
    return won;
}

static void process_entry(scorer *s, redisContext *c, const redisReply *entry)
{
    fleet *f = s->f;
    if (entry->type != REDIS_REPLY_ARRAY || entry->elements != 2 ||
        entry->element[0]->type != REDIS_REPLY_STRING)
        return;
    const char *entry_id = entry->element[0]->str;
    const redisReply *fields = entry->element[1];
    const redisReply *data = NULL;
    if (fields && fields->type == REDIS_REPLY_ARRAY)
        for (size_t i = 0; i + 1 < fields->elements; i += 2)
            if (!strcmp(fields->element[i]->str, "chunk")) data = fields->element[i + 1];
    fleet_chunk ch;
    memset(&ch, 0, sizeof ch);
    zmix_error err = {0};
    if (!data || fleet_chunk_decode(data->str, data->len, &ch, &err) != 0) {
        ZLOG_WARN(f->log, "fleet: stream entry %s: %s", entry_id,
                  data ? err.msg : "no 'chunk' field");
        if (ch.id[0] && ch.results[0] && ch.field[0] && ch.done[0]) {
            char why[sizeof err.msg + 32];
            snprintf(why, sizeof why, "unreadable chunk: %s", err.msg);
            answer(s, c, &ch, entry_id, ZMIX_EFORMAT, why, NULL, 0.0);
        } else {
            ack(c, entry_id);
        }
        return;
    }
    /* A step its driver no longer waits for, or a chunk somebody already answered. */
    redisReply *r = redisCommand(c, "EXISTS %s", ch.step_key);
    int open = r && r->type == REDIS_REPLY_INTEGER && r->integer == 1;
    if (r) freeReplyObject(r);
    r = redisCommand(c, "HEXISTS %s %s", ch.results, ch.field);
    int answered = r && r->type == REDIS_REPLY_INTEGER && r->integer == 1;
    if (r) freeReplyObject(r);
    if (c->err) {
        seam_call_free(&ch.call);
        return;
    }
    if (!open || answered) {
        ack(c, entry_id);
        seam_call_free(&ch.call);
        return;
    }
    zmix_score *scores = calloc((size_t)ch.call.n, sizeof *scores);
    uint64_t t0 = zmix_now_ns();
    int rc = scores ? score_chunk(s, c, &ch, scores, &err)
                    : zmix_error_set(&err, ZMIX_ENOMEM, "out of memory for %d scores", ch.call.n);
    double seconds = (double)(zmix_now_ns() - t0) * 1e-9;
    if (rc == ZMIX_ECANCELED) { /* stopping: left pending, another member takes it over */
        free(scores);
        seam_call_free(&ch.call);
        return;
    }
    int won = answer(s, c, &ch, entry_id, rc, err.msg, scores, seconds);
    if (rc)
        ZLOG_WARN(f->log, "fleet: chunk %s (job %llu) failed: %s", ch.id,
                  (unsigned long long)ch.job, err.msg);
    ZLOG_DEBUG(f->log, "fleet: chunk %s: %d candidates in %.3f s%s", ch.id, ch.call.n, seconds,
               won ? "" : " (another member answered first)");
    free(scores);
    seam_call_free(&ch.call);
}

/* The entries of an XREADGROUP reply ([[stream, [entry...]]]) or an XAUTOCLAIM reply
 * ([next, [entry...], ...]). */
static const redisReply *entries_of(const redisReply *r, int autoclaim)
{
    if (!r || r->type != REDIS_REPLY_ARRAY) return NULL;
    if (autoclaim) return r->elements >= 2 ? r->element[1] : NULL;
    if (r->elements < 1 || r->element[0]->type != REDIS_REPLY_ARRAY || r->element[0]->elements < 2)
        return NULL;
    return r->element[0]->element[1];
}

static void *scorer_main(void *arg)
{
    scorer *s = arg;
    fleet *f = s->f;
    pool_lower_thread_priority(5); /* as the pool's workers: the loop answers first */
    redisContext *c = NULL;
    uint64_t last_claim = 0;
    int claim_every = f->claim_ms / 4 > 100 ? f->claim_ms / 4 : 100;
    while (!atomic_load(&f->stopping)) {
        if (!c || c->err) {
            if (c) {
                ZLOG_WARN(f->log, "fleet %s: Redis connection lost: %s", s->consumer, c->errstr);
                redisFree(c);
            }
            c = thread_connect(f, s->consumer);
            if (!c) break;
        }
        redisReply *r = NULL;
        const redisReply *entries = NULL;
        uint64_t now = now_ms();
        if (now - last_claim >= (uint64_t)claim_every) {
            last_claim = now;
            r = redisCommand(c, "XAUTOCLAIM " K_STREAM " " K_GROUP " %s %d 0-0 COUNT 1",
                             s->consumer, f->claim_ms);
            entries = entries_of(r, 1);
            if (entries && entries->elements > 0) {
                ZLOG_INFO(f->log, "fleet: %s took over a chunk pending for more than %d ms",
                          s->consumer, f->claim_ms);
                last_claim = 0; /* a member that died may have left more */
            }
        }
        if (!entries || entries->elements == 0) {
            if (r) freeReplyObject(r);
            r = redisCommand(
                c, "XREADGROUP GROUP " K_GROUP " %s COUNT 1 BLOCK %d STREAMS " K_STREAM " >",
                s->consumer, BLOCK_MS);
            entries = entries_of(r, 0);
        }
        if (entries)
            for (size_t i = 0; i < entries->elements && !atomic_load(&f->stopping); i++)
                process_entry(s, c, entries->element[i]);
        if (r && r->type == REDIS_REPLY_ERROR && !strncmp(r->str, "NOGROUP", 7)) {
            /* Redis lost its data (restarted without persistence): the group again. */
            redisReply *g = redisCommand(c, "XGROUP CREATE " K_STREAM " " K_GROUP " 0 MKSTREAM");
            if (g) freeReplyObject(g);
        } else if (r && r->type == REDIS_REPLY_ERROR) {
            ZLOG_WARN(f->log, "fleet %s: %s", s->consumer, r->str);
            sleep_ms(CONNECT_RETRY_MS);
        }
        if (r) freeReplyObject(r);
    }
    if (c) redisFree(c);
    zmix_examples_free(&s->ex);
    free(s);
    return NULL;
}

/* ---- Joining --------------------------------------------------------------------------- */

/* The first member records the fleet's model and experts; every other must match them. */
static int check_identity(fleet *f, redisContext *c, zmix_error *err)
{
    char mine[160];
    snprintf(mine, sizeof mine, "%s %s", f->model_fingerprint, f->experts_digest);
    redisReply *r = redisCommand(c, "SET " K_IDENTITY " %s NX", mine);
    if (command_ok(c, r) != 0)
        return zmix_error_set(err, ZMIX_EIO, "--store %s: recording the fleet's identity: %s",
                              f->url, c->err ? c->errstr : "refused");
    r = redisCommand(c, "GET " K_IDENTITY);
    if (!r || r->type != REDIS_REPLY_STRING) {
        if (r) freeReplyObject(r);
        return zmix_error_set(err, ZMIX_EIO, "--store %s: reading the fleet's identity", f->url);
    }
    char model[65] = "", experts[65] = "";
    if (sscanf(r->str, "%64s %64s", model, experts) != 2) {
        freeReplyObject(r);
        return zmix_error_set(err, ZMIX_EFORMAT,
                              "--store %s: " K_IDENTITY " is not 'MODEL EXPERTS' (two SHA-256 "
                              "hex digests)",
                              f->url);
    }
    freeReplyObject(r);
    int model_differs = strcmp(model, f->model_fingerprint) != 0;
    int experts_differ = strcmp(experts, f->experts_digest) != 0;
    if (!model_differs && !experts_differ) return 0;
    char what[512];
    if (model_differs && experts_differ)
        snprintf(what, sizeof what,
                 "both differ: base model %.16s (the fleet's %.16s) and experts %.16s (the "
                 "fleet's %.16s)",
                 f->model_fingerprint, model, f->experts_digest, experts);
    else if (model_differs)
        snprintf(what, sizeof what, "the base model differs: %.16s, the fleet's is %.16s",
                 f->model_fingerprint, model);
    else
        snprintf(what, sizeof what,
                 "the experts differ: digest %.16s, the fleet's is %.16s (the expert files, "
                 "their order and --adapt must be the same on every member)",
                 f->experts_digest, experts);
    return zmix_error_set(err, ZMIX_ESTATE, "--store %s: this daemon cannot join the fleet: %s",
                          f->url, what);
}

static void make_member_id(fleet *f)
{
    char host[128] = "host";
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = '\0';
    for (char *p = host; *p; p++)
        if (*p == ':' || *p == ' ') *p = '_';
    unsigned rnd = (unsigned)(zmix_now_ns() ^ ((uint64_t)getpid() << 16));
    FILE *u = fopen("/dev/urandom", "rb");
    if (u) {
        if (fread(&rnd, sizeof rnd, 1, u) != 1) rnd ^= 0x5bd1e995u;
        fclose(u);
    }
    snprintf(f->member, sizeof f->member, "%.48s-%d-%08x", host, (int)getpid(), rnd);
}

static int count_members(redisContext *c)
{
    int n = 0;
    char cursor[32] = "0";
    do {
        redisReply *r = redisCommand(c, "SCAN %s MATCH " K_MEMBER "* COUNT 100", cursor);
        if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
            if (r) freeReplyObject(r);
            return n;
        }
        snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
        for (size_t i = 0; i < r->element[1]->elements; i++)
            if (!strstr(r->element[1]->element[i]->str, ":info")) n++;
        freeReplyObject(r);
    } while (strcmp(cursor, "0"));
    return n;
}

int fleet_open(const fleet_config *cfg, fleet **out, zmix_error *err)
{
    *out = NULL;
    fleet *f = calloc(1, sizeof *f);
    if (!f) return zmix_error_set(err, ZMIX_ENOMEM, "fleet: out of memory");
    snprintf(f->url, sizeof f->url, "%s", cfg->url);
    snprintf(f->host, sizeof f->host, "%s", cfg->host);
    f->port = cfg->port;
    f->db = cfg->db;
    if (cfg->password) {
        snprintf(f->password, sizeof f->password, "%s", cfg->password);
        f->has_password = 1;
    }
    f->scorers = cfg->scorers > 0 ? cfg->scorers : 1;
    f->claim_ms = cfg->claim_ms > 0 ? cfg->claim_ms : 30000;
    f->model = cfg->model;
    f->rt = cfg->rt;
    snprintf(f->model_fingerprint, sizeof f->model_fingerprint, "%s", cfg->model_fingerprint);
    snprintf(f->experts_digest, sizeof f->experts_digest, "%s", cfg->experts_digest);
    f->log = cfg->log;
    f->pool = cfg->pool;
    atomic_init(&f->stopping, 0);
    atomic_init(&f->chunks_scored, 0);
    atomic_init(&f->fleet_scorers, 0);
    pthread_mutex_init(&f->lock, NULL);
    pthread_cond_init(&f->wake, NULL);
    make_member_id(f);

    redisContext *c = connect_redis(f, err);
    if (!c) goto fail;
    int rc = check_identity(f, c, err);
    if (rc) goto fail_conn;
    redisReply *r = redisCommand(c, "XGROUP CREATE " K_STREAM " " K_GROUP " 0 MKSTREAM");
    if (!r || (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "BUSYGROUP", 9))) {
        zmix_error_set(err, ZMIX_EIO, "--store %s: creating the consumer group: %s", f->url,
                       reply_text(c, r));
        if (r) freeReplyObject(r);
        goto fail_conn;
    }
    freeReplyObject(r);
    heartbeat(f, c);
    int members = count_members(c);
    redisFree(c);

    f->scorer_threads = calloc((size_t)f->scorers, sizeof *f->scorer_threads);
    if (!f->scorer_threads) {
        zmix_error_set(err, ZMIX_ENOMEM, "fleet: out of memory");
        goto fail;
    }
    if (pthread_create(&f->driver, NULL, driver_main, f) != 0) {
        zmix_error_set(err, ZMIX_ENOMEM, "fleet: cannot start the driver thread");
        goto fail;
    }
    f->driver_started = 1;
    for (int i = 0; i < f->scorers; i++) {
        scorer *s = calloc(1, sizeof *s);
        if (!s) break;
        s->f = f;
        s->index = i;
        snprintf(s->consumer, sizeof s->consumer, "%s/%d", f->member, i);
        if (pthread_create(&f->scorer_threads[i], NULL, scorer_main, s) != 0) {
            free(s);
            break;
        }
        f->n_scorers_started++;
    }
    if (f->n_scorers_started == 0) {
        zmix_error_set(err, ZMIX_ENOMEM, "fleet: cannot start a scorer thread");
        fleet_free(f);
        return ZMIX_ENOMEM;
    }
    ZLOG_INFO(f->log,
              "fleet: joined %s as member %s (%d members alive, %d scorers here, chunks "
              "taken over after %d ms)",
              f->url, f->member, members, f->n_scorers_started, f->claim_ms);
    *out = f;
    return 0;
fail_conn:
    redisFree(c);
fail:
    rc = err->code ? err->code : ZMIX_EIO;
    fleet_free(f);
    return rc;
}

void fleet_stop(fleet *f)
{
    if (!f) return;
    atomic_store(&f->stopping, 1);
    pthread_mutex_lock(&f->lock);
    pthread_cond_broadcast(&f->wake);
    pthread_mutex_unlock(&f->lock);
    if (f->driver_started) pthread_join(f->driver, NULL);
    f->driver_started = 0;
    for (int i = 0; i < f->n_scorers_started; i++) pthread_join(f->scorer_threads[i], NULL);
    if (f->n_scorers_started)
        ZLOG_INFO(f->log, "fleet: left; %ld chunks scored here", fleet_chunks_scored(f));
    f->n_scorers_started = 0;
}

void fleet_free(fleet *f)
{
    if (!f) return;
    fleet_stop(f);
    pthread_mutex_destroy(&f->lock);
    pthread_cond_destroy(&f->wake);
    free(f->scorer_threads);
    memset(f->password, 0, sizeof f->password);
    free(f);
}

const char *fleet_member(const fleet *f)
{
    return f->member;
}

const char *fleet_url(const fleet *f)
{
    return f->url;
}

redisContext *fleet_connect(const fleet *f, zmix_error *err)
{
    return connect_redis(f, err);
}

int fleet_scorers(const fleet *f)
{
    int total = atomic_load(&((fleet *)f)->fleet_scorers);
    return total > f->scorers ? total : f->scorers;
}

long fleet_chunks_scored(const fleet *f)
{
    return atomic_load(&((fleet *)f)->chunks_scored);
}
