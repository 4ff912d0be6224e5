/*
 * The fleet's job store and its driving leases (see fleet_jobs.h; keys in proto/FLEET.md §7).
 */
#include "fleet/fleet_jobs.h"

#include <hiredis.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fleet/redis_args.h"
#include "store/job_record.h"
#include "util/clock.h"

#define K_JOB_NEXT "zmix:job:next"
#define K_JOB      "zmix:job:"   /* + id: the job's hash */
#define K_LEASE    "zmix:lease:" /* + id */
#define K_OPEN     "zmix:jobs:open"
#define K_ACTIVE   "zmix:active:" /* + key:task: the job computing these inputs */
#define K_ALL      "zmix:jobs:all"

/* Every driver write: refused unless the job's epoch is still the writer's. ARGV[1] is the
 * epoch, ARGV[2] "finish", "update" or "status", the rest field/value pairs for the job's
 * hash. A finish also drops the checkpoint, the job from the open set and its lease; a
 * "status" write (the one at submit, which may overtake others) never replaces the final
 * status. */
static const char LUA_FENCED_WRITE[] =
    "local e = redis.call('HGET', KEYS[1], 'epoch')\n"
    "if not e then return redis.error_reply('NOJOB no such job') end\n"
    "if e ~= ARGV[1] then return redis.error_reply('FENCED the job is driven under epoch ' .. e "
    ".. ' now, not ' .. ARGV[1]) end\n"
    "if ARGV[2] == 'status' and redis.call('HEXISTS', KEYS[1], 'final') == 1 then return 0 end\n"
    "redis.call('HSET', KEYS[1], unpack(ARGV, 3))\n"
    "if ARGV[2] == 'finish' then\n"
    "  local act = redis.call('HGET', KEYS[1], 'active')\n"
    "  if act and redis.call('GET', act) == ARGV[4] then redis.call('DEL', act) end\n"
    "  redis.call('HDEL', KEYS[1], 'ckpt', 'ckpt_gen')\n"
    "  redis.call('ZREM', KEYS[2], ARGV[4])\n"
    "  redis.call('DEL', KEYS[3])\n"
    "end\n"
    "return 1\n";

/* Creating a job: its hash, its lease, its place in the open set and in the list of every
 * job (KEYS[5], the newest ARGV[6] kept: older ended jobs are deleted), at once — unless the
 * same inputs (KEYS[4], task and key) are being computed by another job that has not ended:
 * then nothing is created and {other id, its state} is returned, and the submit joins it.
 * ARGV: id, record, task, member, lease ms. */
static const char LUA_CREATE[] =
    "local other = redis.call('GET', KEYS[4])\n"
    "if other then\n"
    "  local st = redis.call('HGET', 'zmix:job:' .. other, 'state')\n"
    "  if st == 'queued' or st == 'running' then return {other, st} end\n"
    "end\n"
    "redis.call('HSET', KEYS[1], 'id', ARGV[1], 'record', ARGV[2], 'task', ARGV[3], 'state', "
    "'queued', 'epoch', '1', 'driver', ARGV[4], 'active', KEYS[4])\n"
    "redis.call('SET', KEYS[2], '1 ' .. ARGV[4], 'PX', ARGV[5])\n"
    "redis.call('ZADD', KEYS[3], ARGV[1], ARGV[1])\n"
    "redis.call('SET', KEYS[4], ARGV[1])\n"
    "redis.call('ZADD', KEYS[5], ARGV[1], ARGV[1])\n"
    "for _, old in ipairs(redis.call('ZRANGE', KEYS[5], 0, -(tonumber(ARGV[6]) + 1))) do\n"
    "  local st = redis.call('HGET', 'zmix:job:' .. old, 'state')\n"
    "  if st ~= 'queued' and st ~= 'running' then redis.call('DEL', 'zmix:job:' .. old) end\n"
    "  redis.call('ZREM', KEYS[5], old)\n"
    "end\n"
    "return 1\n";

/* Renewing a lease: 1 renewed, 2 renewed and a cancel is asked, 0 the job is gone from Redis
 * (restarted without its data), -1 lost. A lease that expired while its epoch is still
 * current (nobody claimed the job) is taken back. ARGV: "EPOCH MEMBER", lease ms, epoch. */
static const char LUA_RENEW[] =
    "if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end\n"
    "local v = redis.call('GET', KEYS[1])\n"
    "if v == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
    "elseif (not v) and redis.call('HGET', KEYS[2], 'epoch') == ARGV[3] and "
    "redis.call('HGET', KEYS[2], 'id') then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])\n"
    "else return -1 end\n"
    "if redis.call('HGET', KEYS[2], 'cancel') then return 2 end\n"
    "return 1\n";

/* Claiming a job nobody drives: nil when its lease is held or it has ended; else the new
 * epoch, the record, the state, start time, checkpoint, its generation and the cancel flag.
 * ARGV: member, lease ms, id. */
static const char LUA_CLAIM[] =
    "if redis.call('EXISTS', KEYS[1]) == 1 then return false end\n"
    "local st = redis.call('HGET', KEYS[2], 'state')\n"
    "if (not st) or st == 'done' or st == 'failed' or st == 'cancelled' then\n"
    "  redis.call('ZREM', KEYS[3], ARGV[3]) return false end\n"
    "local e = redis.call('HINCRBY', KEYS[2], 'epoch', 1)\n"
    "redis.call('HSET', KEYS[2], 'driver', ARGV[1])\n"
    "redis.call('SET', KEYS[1], e .. ' ' .. ARGV[1], 'PX', ARGV[2])\n"
    "local h = redis.call('HMGET', KEYS[2], 'record', 'start_ms', 'ckpt', 'ckpt_gen', "
    "'cancel')\n"
    "return {tostring(e), h[1], st, h[2] or '0', h[3] or '', h[4] or '-1', h[5] or '0'}\n";

/* A job its driver still runs, written back into a Redis that lost it: the record, the lease,
 * the open set, and an id counter past it. ARGV: id, record, task, member, lease ms, epoch. */
static const char LUA_RESTORE[] =
    "if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end\n"
    "redis.call('HSET', KEYS[1], 'id', ARGV[1], 'record', ARGV[2], 'task', ARGV[3], 'state', "
    "'running', 'epoch', ARGV[6], 'driver', ARGV[4])\n"
    "redis.call('SET', KEYS[2], ARGV[6] .. ' ' .. ARGV[4], 'PX', ARGV[5])\n"
    "redis.call('ZADD', KEYS[3], ARGV[1], ARGV[1])\n"
    "if tonumber(redis.call('GET', KEYS[4]) or '0') < tonumber(ARGV[1]) then\n"
    "  redis.call('SET', KEYS[4], ARGV[1]) end\n"
    "return 1\n";

/* Giving a lease up: only this member's, at this epoch. ARGV: "EPOCH MEMBER". */
static const char LUA_RELEASE[] = "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
                                  "  return redis.call('DEL', KEYS[1]) end\n"
                                  "return 0\n";

/* A cancel asked from any member: recorded unless the job has ended. */
static const char LUA_CANCEL[] =
    "local st = redis.call('HGET', KEYS[1], 'state')\n"
    "if not st then return redis.error_reply('NOJOB no such job') end\n"
    "if st == 'done' or st == 'failed' or st == 'cancelled' then return st end\n"
    "redis.call('HSET', KEYS[1], 'cancel', '1')\n"
    "return 'ok'\n";

typedef struct held_lease {
    uint64_t id, epoch;
    int cancel_sent;
    char task[TASK_NAME_MAX + 1];
    uint8_t *record; /* the job's record bytes, to write back into a Redis that lost them */
    size_t record_len;
} held_lease;

struct fleet_jobs {
    char member[128], url[512];
    struct redisContext *(*connect)(void *, zmix_error *);
    void *connect_arg;
    int lease_ms;
    zmix_log *log;
    void (*notify)(void *);
    void *notify_arg;

    pthread_mutex_t io_lock; /* the threadpool's connection */
    redisContext *io;

    pthread_mutex_t lock; /* events, held leases */
    pthread_cond_t wake;
    fleet_job_event *events, *events_tail;
    held_lease *held;
    size_t n_held, cap_held;

    atomic_int stopping;
    atomic_int capacity; /* jobs this member may still take on; -1: not said (one a look) */
    pthread_t keeper;
    int keeper_started;
};

/* ---- Small helpers ----------------------------------------------------------------------- */

static int reply_error(const redisContext *c, const redisReply *r)
{
    return !r || c->err || r->type == REDIS_REPLY_ERROR;
}

static const char *reply_why(const redisContext *c, const redisReply *r)
{
    if (c && c->err) return c->errstr;
    if (!r) return "no reply";
    if (r->type == REDIS_REPLY_ERROR) return r->str;
    return "unexpected reply";
}

static int state_parse(const char *s, job_state *out)
{
    static const job_state all[] = {JOB_QUEUED, JOB_RUNNING, JOB_DONE, JOB_FAILED, JOB_CANCELLED};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        if (!strcmp(s, job_state_name(all[i]))) {
            *out = all[i];
            return 0;
        }
    return -1;
}

static void key_of(char *out, size_t size, const char *prefix, uint64_t id)
{
    snprintf(out, size, "%s%llu", prefix, (unsigned long long)id);
}

/* Runs one command on the threadpool's connection (reconnecting once when it was lost).
 * Returns the reply (caller frees) or NULL with err set. */
redisReply *fleet_jobs_command(fleet_jobs *fj, int argc, const char **argv, const size_t *lens,
                               zmix_error *err)
{
    pthread_mutex_lock(&fj->io_lock);
    redisReply *r = NULL;
    for (int attempt = 0; attempt < 2 && !r; attempt++) {
        if (fj->io && fj->io->err) {
            redisFree(fj->io);
            fj->io = NULL;
        }
        if (!fj->io) fj->io = fj->connect(fj->connect_arg, err);
        if (!fj->io) break;
        r = redisCommandArgv(fj->io, argc, argv, lens);
        if (!r) {
            zmix_error_set(err, ZMIX_EIO, "Redis at %s: %s", fj->url, fj->io->errstr);
            redisFree(fj->io);
            fj->io = NULL;
        }
    }
    pthread_mutex_unlock(&fj->io_lock);
    if (r && r->type == REDIS_REPLY_ERROR) {
        int fenced = !strncmp(r->str, "FENCED", 6);
        int nojob = !strncmp(r->str, "NOJOB", 5);
        zmix_error_set(err,
                       fenced  ? ZMIX_ESTATE
                       : nojob ? ZMIX_ENOTFOUND
                               : ZMIX_EIO,
                       "Redis at %s: %s", fj->url, r->str);
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

static int run(fleet_jobs *fj, args *a, zmix_error *err)
{
    redisReply *r = fleet_jobs_command(fj, a->n, a->v, a->len, err);
    if (!r) return err->code ? err->code : ZMIX_EIO;
    freeReplyObject(r);
    return 0;
}

/* ---- Events and leases ------------------------------------------------------------------- */

static void push_event(fleet_jobs *fj, fleet_job_event *e)
{
    pthread_mutex_lock(&fj->lock);
    if (fj->events_tail)
        fj->events_tail->next = e;
    else
        fj->events = e;
    fj->events_tail = e;
    pthread_mutex_unlock(&fj->lock);
}

fleet_job_event *fleet_jobs_take_events(fleet_jobs *fj)
{
    pthread_mutex_lock(&fj->lock);
    fleet_job_event *e = fj->events;
    fj->events = fj->events_tail = NULL;
    pthread_mutex_unlock(&fj->lock);
    return e;
}

void fleet_job_events_free(fleet_job_event *e)
{
    while (e) {
        fleet_job_event *next = e->next;
        job_record_free(&e->rec.record);
        free(e->rec.checkpoint);
        free(e);
        e = next;
    }
}

/* Under lock. */
static int hold(fleet_jobs *fj, uint64_t id, uint64_t epoch, const char *task, const void *record,
                size_t record_len)
{
    uint8_t *copy = malloc(record_len ? record_len : 1);
    if (!copy) return -1;
    memcpy(copy, record, record_len);
    for (size_t i = 0; i < fj->n_held; i++)
        if (fj->held[i].id == id) {
            fj->held[i].epoch = epoch;
            free(fj->held[i].record);
            fj->held[i].record = copy;
            fj->held[i].record_len = record_len;
            return 0;
        }
    if (fj->n_held == fj->cap_held) {
        size_t cap = fj->cap_held ? 2 * fj->cap_held : 16;
        held_lease *h = realloc(fj->held, cap * sizeof *h);
        if (!h) {
            free(copy);
            return -1;
        }
        fj->held = h;
        fj->cap_held = cap;
    }
    held_lease *l = &fj->held[fj->n_held++];
    *l = (held_lease){.id = id, .epoch = epoch, .record = copy, .record_len = record_len};
    snprintf(l->task, sizeof l->task, "%s", task);
    return 0;
}

/* Under lock. */
static void unhold(fleet_jobs *fj, uint64_t id)
{
    for (size_t i = 0; i < fj->n_held; i++)
        if (fj->held[i].id == id) {
            free(fj->held[i].record);
            fj->held[i] = fj->held[--fj->n_held];
            return;
        }
}

void fleet_jobs_set_capacity(fleet_jobs *fj, int free_slots)
{
    atomic_store(&fj->capacity, free_slots > 0 ? free_slots : 0);
}

const char *fleet_jobs_url(const fleet_jobs *fj)
{
    return fj->url;
}

void fleet_jobs_release(fleet_jobs *fj, uint64_t id)
{
    pthread_mutex_lock(&fj->lock);
    unhold(fj, id);
    pthread_mutex_unlock(&fj->lock);
}

static int is_held(fleet_jobs *fj, uint64_t id)
{
    pthread_mutex_lock(&fj->lock);
    int found = 0;
    for (size_t i = 0; i < fj->n_held && !found; i++) found = fj->held[i].id == id;
    pthread_mutex_unlock(&fj->lock);
    return found;
}

/* ---- Records ----------------------------------------------------------------------------- */

/* The record as stored at creation, brought up to date with the hash's fields. r->element:
 * record, state, start_ms, end_ms, reason, result (HMGET order of get_fields). */
static int record_of(const redisReply *r, uint64_t id, job_record *out, zmix_error *err)
{
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 6 ||
        r->element[0]->type != REDIS_REPLY_STRING)
        return zmix_error_set(err, ZMIX_ENOTFOUND, "no job %llu in the fleet",
                              (unsigned long long)id);
    int rc = job_decode((const uint8_t *)r->element[0]->str, r->element[0]->len, out, err);
    if (rc) return zmix_error_prefix(err, "job %llu in Redis", (unsigned long long)id);
    if (r->element[1]->type == REDIS_REPLY_STRING) state_parse(r->element[1]->str, &out->state);
    if (r->element[2]->type == REDIS_REPLY_STRING) out->start_ms = atoll(r->element[2]->str);
    if (r->element[3]->type == REDIS_REPLY_STRING) out->end_ms = atoll(r->element[3]->str);
    if (r->element[4]->type == REDIS_REPLY_STRING)
        snprintf(out->reason, sizeof out->reason, "%s", r->element[4]->str);
    if (r->element[5]->type == REDIS_REPLY_STRING && r->element[5]->len > 0) {
        free(out->result);
        out->result = malloc(r->element[5]->len);
        if (!out->result) {
            job_record_free(out);
            return zmix_error_set(err, ZMIX_ENOMEM, "out of memory reading job %llu",
                                  (unsigned long long)id);
        }
        memcpy(out->result, r->element[5]->str, r->element[5]->len);
        out->result_len = r->element[5]->len;
    }
    return 0;
}

int fleet_jobs_create(fleet_jobs *fj, job_record *rec, uint64_t *epoch, fleet_job_joined *joined,
                      zmix_error *err)
{
    memset(joined, 0, sizeof *joined);
    args a = {0};
    arg_str(&a, "INCR");
    arg_str(&a, K_JOB_NEXT);
    redisReply *r = fleet_jobs_command(fj, a.n, a.v, a.len, err);
    if (!r) return err->code ? err->code : ZMIX_EIO;
    if (r->type != REDIS_REPLY_INTEGER || r->integer <= 0) {
        freeReplyObject(r);
        return zmix_error_set(err, ZMIX_EIO, "Redis at %s: " K_JOB_NEXT " is not a counter",
                              fj->url);
    }
    rec->id = (uint64_t)r->integer;
    freeReplyObject(r);
    rec->state = JOB_QUEUED;
    rec_writer w;
    int rc = job_encode(rec, &w, err);
    if (rc) return rc;
    char job_key[48], lease_key[48], active_key[sizeof K_ACTIVE + TASK_NAME_MAX + TASK_KEY_MAX + 2];
    key_of(job_key, sizeof job_key, K_JOB, rec->id);
    key_of(lease_key, sizeof lease_key, K_LEASE, rec->id);
    snprintf(active_key, sizeof active_key, K_ACTIVE "%s:%s", rec->key, rec->task);
    a = (args){0};
    arg_str(&a, "EVAL");
    arg_str(&a, LUA_CREATE);
    arg_str(&a, "5");
    arg_str(&a, job_key);
    arg_str(&a, lease_key);
    arg_str(&a, K_OPEN);
    arg_str(&a, active_key);
    arg_str(&a, K_ALL);
    arg_u64(&a, rec->id);
    arg_bytes(&a, w.buf, w.len);
    arg_str(&a, rec->task);
    arg_str(&a, fj->member);
    arg_i64(&a, fj->lease_ms);
    arg_i64(&a, FLEET_JOBS_KEPT);
    /* Held before the write, so that the keeper renews it from the first beat. */
    pthread_mutex_lock(&fj->lock);
    int held = hold(fj, rec->id, 1, rec->task, w.buf, w.len);
    pthread_mutex_unlock(&fj->lock);
    if (held) {
        recw_free(&w);
        fleet_jobs_release(fj, rec->id);
        return zmix_error_set(err, ZMIX_ENOMEM, "out of memory");
    }
    r = fleet_jobs_command(fj, a.n, a.v, a.len, err);
    recw_free(&w);
    if (!r) {
        fleet_jobs_release(fj, rec->id);
        return err->code ? err->code : ZMIX_EIO;
    }
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 2) {
        /* Joined: the id counted up for nothing (ids are never reused anyway). */
        fleet_jobs_release(fj, rec->id);
        joined->id = strtoull(r->element[0]->str, NULL, 10);
        state_parse(r->element[1]->str, &joined->state);
        rec->id = 0;
    }
    freeReplyObject(r);
    *epoch = 1;
    return 0;
}

/* One fenced write being built: the job's key, the open set, its lease, its epoch, the kind,
 * then field/value pairs appended to a. */
typedef struct fenced_write {
    args a;
    char job_key[48], lease_key[48];
} fenced_write;

static args *fenced_begin(fenced_write *w, uint64_t id, uint64_t epoch, const char *kind)
{
    memset(w, 0, sizeof *w);
    key_of(w->job_key, sizeof w->job_key, K_JOB, id);
    key_of(w->lease_key, sizeof w->lease_key, K_LEASE, id);
    args *a = &w->a;
    arg_str(a, "EVAL");
    arg_str(a, LUA_FENCED_WRITE);
    arg_str(a, "3");
    arg_str(a, w->job_key);
    arg_str(a, K_OPEN);
    arg_str(a, w->lease_key);
    arg_u64(a, epoch);
    arg_str(a, kind);
    return a;
}

int fleet_jobs_set_state(fleet_jobs *fj, uint64_t id, uint64_t epoch, job_state state,
                         const char *reason, int64_t now_ms, zmix_error *err)
{
    fenced_write w;
    args *a = fenced_begin(&w, id, epoch, "update");
    arg_str(a, "state");
    arg_str(a, job_state_name(state));
    arg_str(a, "reason");
    arg_str(a, reason ? reason : "");
    if (state == JOB_RUNNING) {
        arg_str(a, "start_ms");
        arg_i64(a, now_ms);
    }
    return run(fj, a, err);
}

int fleet_jobs_checkpoint(fleet_jobs *fj, uint64_t id, uint64_t epoch, int generation,
                          const uint8_t *data, size_t len, const uint8_t *status, size_t status_len,
                          zmix_error *err)
{
    fenced_write w;
    args *a = fenced_begin(&w, id, epoch, "update");
    arg_str(a, "ckpt");
    arg_bytes(a, data, len);
    arg_str(a, "ckpt_gen");
    arg_i64(a, generation);
    if (status) {
        arg_str(a, "status");
        arg_bytes(a, status, status_len);
    }
    return run(fj, a, err);
}

int fleet_jobs_finish(fleet_jobs *fj, uint64_t id, uint64_t epoch, job_state state,
                      const char *reason, int64_t now_ms, const uint8_t *result, size_t result_len,
                      zmix_error *err)
{
    fenced_write w;
    args *a = fenced_begin(&w, id, epoch, "finish");
    /* ARGV[4] is the id the open set is keyed by: the first pair's value. */
    arg_str(a, "id");
    arg_u64(a, id);
    arg_str(a, "state");
    arg_str(a, job_state_name(state));
    arg_str(a, "reason");
    arg_str(a, reason ? reason : "");
    arg_str(a, "end_ms");
    arg_i64(a, now_ms);
    arg_str(a, "result");
    arg_bytes(a, result, result_len);
    int rc = run(fj, a, err);
    if (rc == 0) fleet_jobs_release(fj, id);
    return rc;
}

int fleet_jobs_publish_status(fleet_jobs *fj, uint64_t id, uint64_t epoch, const uint8_t *status,
                              size_t status_len, int final, zmix_error *err)
{
    fenced_write w;
    args *a = fenced_begin(&w, id, epoch, final ? "update" : "status");
    arg_str(a, "status");
    arg_bytes(a, status, status_len);
    if (final) {
        arg_str(a, "final");
        arg_str(a, "1");
    }
    return run(fj, a, err);
}

int fleet_jobs_get(fleet_jobs *fj, uint64_t id, job_record *out, zmix_error *err)
{
    char job_key[48];
    key_of(job_key, sizeof job_key, K_JOB, id);
    args a = {0};
    arg_strs(&a, "HMGET", job_key, "record", "state", "start_ms", "end_ms", "reason", "result",
             (char *)NULL);
    redisReply *r = fleet_jobs_command(fj, a.n, a.v, a.len, err);
    if (!r) return err->code ? err->code : ZMIX_EIO;
    memset(out, 0, sizeof *out);
    int rc = record_of(r, id, out, err);
    freeReplyObject(r);
    return rc;
}

void fleet_job_peek_free(fleet_job_peek *p)
{
    if (!p) return;
    free(p->status);
    memset(p, 0, sizeof *p);
}

int fleet_jobs_peek(fleet_jobs *fj, uint64_t id, fleet_job_peek *out, zmix_error *err)
{
    memset(out, 0, sizeof *out);
    char job_key[48];
    key_of(job_key, sizeof job_key, K_JOB, id);
    args a = {0};
    arg_strs(&a, "HMGET", job_key, "task", "state", "status", "final", (char *)NULL);
    redisReply *r = fleet_jobs_command(fj, a.n, a.v, a.len, err);
    if (!r) return err->code ? err->code : ZMIX_EIO;
    int rc = 0;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 4 ||
        r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_STRING) {
        rc = zmix_error_set(err, ZMIX_ENOTFOUND, "no job %llu", (unsigned long long)id);
    } else {
        snprintf(out->task, sizeof out->task, "%s", r->element[0]->str);
        if (state_parse(r->element[1]->str, &out->state) != 0)
            rc = zmix_error_set(err, ZMIX_EFORMAT, "job %llu in Redis: state '%.32s'",
                                (unsigned long long)id, r->element[1]->str);
        out->final = r->element[3]->type == REDIS_REPLY_STRING;
        if (rc == 0 && r->element[2]->type == REDIS_REPLY_STRING && r->element[2]->len) {
            out->status = malloc(r->element[2]->len);
            if (!out->status)
                rc = zmix_error_set(err, ZMIX_ENOMEM, "out of memory");
            else
                memcpy(out->status, r->element[2]->str, r->element[2]->len);
            out->status_len = r->element[2]->len;
        }
    }
    freeReplyObject(r);
    if (rc) fleet_job_peek_free(out);
    return rc;
}

int fleet_jobs_request_cancel(fleet_jobs *fj, uint64_t id, zmix_error *err)
{
    char job_key[48];
    key_of(job_key, sizeof job_key, K_JOB, id);
    args a = {0};
    arg_str(&a, "EVAL");
    arg_str(&a, LUA_CANCEL);
    arg_str(&a, "1");
    arg_str(&a, job_key);
    redisReply *r = fleet_jobs_command(fj, a.n, a.v, a.len, err);
    if (!r) return err->code ? err->code : ZMIX_EIO;
    int rc = 0;
    if (r->type == REDIS_REPLY_STRING && strcmp(r->str, "ok"))
        rc = zmix_error_set(err, ZMIX_ESTATE, "job %llu is already %s", (unsigned long long)id,
                            r->str);
    freeReplyObject(r);
    return rc;
}

/* ---- The keeper thread ------------------------------------------------------------------- */

static void lease_value(char *out, size_t size, uint64_t epoch, const char *member)
{
    snprintf(out, size, "%llu %s", (unsigned long long)epoch, member);
}

/* Writes a job this member drives back into a Redis that lost it (restarted without its
 * data): its record and lease now, its checkpoint with the next generation. */
static void restore(fleet_jobs *fj, redisContext *c, uint64_t id)
{
    args a = {0};
    char job_key[48], lease_key[48], ms[24], epoch[24];
    uint8_t *record = NULL;
    pthread_mutex_lock(&fj->lock);
    for (size_t i = 0; i < fj->n_held && !record; i++) {
        held_lease *l = &fj->held[i];
        if (l->id != id || !(record = malloc(l->record_len ? l->record_len : 1))) continue;
        memcpy(record, l->record, l->record_len);
        key_of(job_key, sizeof job_key, K_JOB, id);
        key_of(lease_key, sizeof lease_key, K_LEASE, id);
        snprintf(ms, sizeof ms, "%d", fj->lease_ms);
        snprintf(epoch, sizeof epoch, "%llu", (unsigned long long)l->epoch);
        arg_str(&a, "EVAL");
        arg_str(&a, LUA_RESTORE);
        arg_str(&a, "4");
        arg_str(&a, job_key);
        arg_str(&a, lease_key);
        arg_str(&a, K_OPEN);
        arg_str(&a, K_JOB_NEXT);
        arg_u64(&a, id);
        arg_bytes(&a, record, l->record_len);
        arg_str(&a, l->task);
        arg_str(&a, fj->member);
        arg_str(&a, ms);
        arg_str(&a, epoch);
    }
    pthread_mutex_unlock(&fj->lock);
    if (!record) return;
    redisReply *r = redisCommandArgv(c, a.n, a.v, a.len);
    if (!reply_error(c, r))
        ZLOG_WARN(fj->log,
                  "fleet: job %llu was gone from Redis (restarted without its data?): written "
                  "back by its driver",
                  (unsigned long long)id);
    if (r) freeReplyObject(r);
    free(record);
}

/* Renews every lease held; reports the lost ones and new cancel requests. Returns how many
 * events were queued. */
static int renew_all(fleet_jobs *fj, redisContext *c)
{
    pthread_mutex_lock(&fj->lock);
    size_t n = fj->n_held;
    held_lease *copy = n ? malloc(n * sizeof *copy) : NULL;
    if (copy) memcpy(copy, fj->held, n * sizeof *copy);
    for (size_t i = 0; copy && i < n; i++) copy[i].record = NULL; /* not ours */
    pthread_mutex_unlock(&fj->lock);
    if (!copy) return 0;
    int events = 0;
    for (size_t i = 0; i < n && !c->err; i++) {
        char lease_key[48], job_key[48], value[160], epoch[24], ms[24];
        key_of(lease_key, sizeof lease_key, K_LEASE, copy[i].id);
        key_of(job_key, sizeof job_key, K_JOB, copy[i].id);
        lease_value(value, sizeof value, copy[i].epoch, fj->member);
        snprintf(epoch, sizeof epoch, "%llu", (unsigned long long)copy[i].epoch);
        snprintf(ms, sizeof ms, "%d", fj->lease_ms);
        redisReply *r = redisCommand(c, "EVAL %s 2 %s %s %s %s %s", LUA_RENEW, lease_key, job_key,
                                     value, ms, epoch);
        if (reply_error(c, r)) {
            if (r) freeReplyObject(r);
            continue; /* Redis trouble is not a lost lease: retried on the next beat */
        }
        long long v = r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
        freeReplyObject(r);
        if (v == 1) continue;
        if (v == 0) {
            restore(fj, c, copy[i].id);
            continue;
        }
        fleet_job_event *e = calloc(1, sizeof *e);
        if (!e) continue;
        e->id = copy[i].id;
        if (v == 2) {
            int first = 0;
            pthread_mutex_lock(&fj->lock);
            for (size_t k = 0; k < fj->n_held; k++)
                if (fj->held[k].id == copy[i].id && !fj->held[k].cancel_sent)
                    first = fj->held[k].cancel_sent = 1;
            pthread_mutex_unlock(&fj->lock);
            if (!first) {
                free(e);
                continue;
            }
            e->kind = FLEET_JOB_CANCEL;
        } else {
            e->kind = FLEET_JOB_LOST;
            ZLOG_WARN(fj->log,
                      "fleet: job %llu: the lease of epoch %llu is gone (this member stalled "
                      "or lost Redis past --fleet-lease-ms): another member drives it now",
                      (unsigned long long)copy[i].id, (unsigned long long)copy[i].epoch);
            pthread_mutex_lock(&fj->lock);
            unhold(fj, copy[i].id);
            pthread_mutex_unlock(&fj->lock);
        }
        push_event(fj, e);
        events++;
    }
    free(copy);
    return events;
}

/* A claimed job as the loop resumes it. r: LUA_CLAIM's reply. */
static fleet_job_event *claimed_event(fleet_jobs *fj, uint64_t id, const redisReply *r)
{
    fleet_job_event *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    e->kind = FLEET_JOB_CLAIMED;
    e->id = id;
    e->epoch = strtoull(r->element[0]->str, NULL, 10);
    zmix_error err = {0};
    if (job_decode((const uint8_t *)r->element[1]->str, r->element[1]->len, &e->rec.record, &err) !=
        0) {
        /* Claimed again and again it would stay unreadable: it fails, once, for everyone. */
        char reason[JOB_REASON_MAX];
        snprintf(reason, sizeof reason, "its record in Redis is unreadable: %.200s", err.msg);
        ZLOG_ERROR(fj->log, "fleet: job %llu: %s", (unsigned long long)id, reason);
        if (fleet_jobs_finish(fj, id, e->epoch, JOB_FAILED, reason,
                              (int64_t)(zmix_wall_seconds() * 1000.0), NULL, 0, &err) != 0)
            ZLOG_ERROR(fj->log, "fleet: job %llu: %s", (unsigned long long)id, err.msg);
        free(e);
        return NULL;
    }
    state_parse(r->element[2]->str, &e->rec.record.state);
    e->rec.record.start_ms = atoll(r->element[3]->str);
    e->rec.generation = atoi(r->element[5]->str);
    e->cancel_requested = !strcmp(r->element[6]->str, "1");
    if (r->element[4]->len > 0) {
        e->rec.checkpoint = malloc(r->element[4]->len);
        if (e->rec.checkpoint) {
            memcpy(e->rec.checkpoint, r->element[4]->str, r->element[4]->len);
            e->rec.checkpoint_len = r->element[4]->len;
        }
    }
    if (!e->rec.checkpoint) e->rec.generation = -1;
    return e;
}

/* Claims jobs whose lease has expired, as many as this member has room for (its free running
 * slots, fleet_jobs_set_capacity), so that the jobs of a member that died go to the members
 * with room, and members that see the same expired leases at once share them out. Returns how
 * many were claimed. */
static int claim_some(fleet_jobs *fj, redisContext *c)
{
    int room = atomic_load(&fj->capacity);
    if (room < 0) room = 1;
    if (room == 0) return 0;
    redisReply *r = redisCommand(c, "ZRANGE " K_OPEN " 0 -1");
    if (reply_error(c, r) || r->type != REDIS_REPLY_ARRAY) {
        if (r) freeReplyObject(r);
        return 0;
    }
    int claimed = 0;
    char ms[24];
    snprintf(ms, sizeof ms, "%d", fj->lease_ms);
    for (size_t i = 0; i < r->elements && claimed < room && !c->err; i++) {
        uint64_t id = strtoull(r->element[i]->str, NULL, 10);
        if (!id || is_held(fj, id)) continue;
        char lease_key[48], job_key[48];
        key_of(lease_key, sizeof lease_key, K_LEASE, id);
        key_of(job_key, sizeof job_key, K_JOB, id);
        redisReply *cl = redisCommand(c, "EVAL %s 3 %s %s " K_OPEN " %s %s %llu", LUA_CLAIM,
                                      lease_key, job_key, fj->member, ms, (unsigned long long)id);
        if (!reply_error(c, cl) && cl->type == REDIS_REPLY_ARRAY && cl->elements == 7) {
            fleet_job_event *e = claimed_event(fj, id, cl);
            if (e) {
                pthread_mutex_lock(&fj->lock);
                int held = hold(fj, id, e->epoch, e->rec.record.task, cl->element[1]->str,
                                cl->element[1]->len);
                pthread_mutex_unlock(&fj->lock);
                (void)held; /* out of memory: the lease lapses and another member claims it */
                ZLOG_INFO(fj->log,
                          "fleet: job %llu: its driver's lease expired; resuming it here "
                          "(epoch %llu, from generation %d)",
                          (unsigned long long)id, (unsigned long long)e->epoch, e->rec.generation);
                push_event(fj, e);
                claimed++;
                /* Until the loop says how much room is left. */
                if (atomic_load(&fj->capacity) > 0) atomic_fetch_sub(&fj->capacity, 1);
            }
        } else if (c->err || (cl && cl->type == REDIS_REPLY_ERROR)) {
            ZLOG_WARN(fj->log, "fleet: claiming job %llu: %s", (unsigned long long)id,
                      reply_why(c, cl));
        }
        if (cl) freeReplyObject(cl);
    }
    freeReplyObject(r);
    return claimed;
}

static void *keeper_main(void *arg)
{
    fleet_jobs *fj = arg;
    redisContext *c = NULL;
    /* Renewed five times per lease: a lease survives a few lost beats. */
    int beat_ms = fj->lease_ms / 5;
    if (beat_ms < 50) beat_ms = 50;
    if (beat_ms > 2000) beat_ms = 2000;
    while (!atomic_load(&fj->stopping)) {
        if (c && c->err) {
            redisFree(c);
            c = NULL;
        }
        if (!c) {
            zmix_error err = {0};
            c = fj->connect(fj->connect_arg, &err);
        }
        int events = 0;
        if (c) {
            events += renew_all(fj, c);
            if (!c->err) events += claim_some(fj, c);
        }
        if (events && fj->notify) fj->notify(fj->notify_arg);
        /* Wait a beat, or until stopped. */
        pthread_mutex_lock(&fj->lock);
        if (!atomic_load(&fj->stopping)) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += (long)beat_ms * 1000000L;
            ts.tv_sec += ts.tv_nsec / 1000000000L;
            ts.tv_nsec %= 1000000000L;
            pthread_cond_timedwait(&fj->wake, &fj->lock, &ts);
        }
        pthread_mutex_unlock(&fj->lock);
    }
    if (c) redisFree(c);
    return NULL;
}

/* ---- Open and close ---------------------------------------------------------------------- */

int fleet_jobs_open(const fleet_jobs_config *cfg, fleet_jobs **out, zmix_error *err)
{
    *out = NULL;
    fleet_jobs *fj = calloc(1, sizeof *fj);
    if (!fj) return zmix_error_set(err, ZMIX_ENOMEM, "fleet: out of memory");
    snprintf(fj->member, sizeof fj->member, "%s", cfg->member);
    snprintf(fj->url, sizeof fj->url, "%s", cfg->url);
    fj->connect = cfg->connect;
    fj->connect_arg = cfg->connect_arg;
    fj->lease_ms = cfg->lease_ms > 0 ? cfg->lease_ms : 10000;
    fj->log = cfg->log;
    fj->notify = cfg->notify;
    fj->notify_arg = cfg->notify_arg;
    pthread_mutex_init(&fj->io_lock, NULL);
    pthread_mutex_init(&fj->lock, NULL);
    pthread_cond_init(&fj->wake, NULL);
    atomic_init(&fj->stopping, 0);
    atomic_init(&fj->capacity, -1);
    fj->io = fj->connect(fj->connect_arg, err);
    if (!fj->io) {
        int rc = err->code ? err->code : ZMIX_EIO;
        fleet_jobs_free(fj);
        return rc;
    }
    if (pthread_create(&fj->keeper, NULL, keeper_main, fj) != 0) {
        fleet_jobs_free(fj);
        return zmix_error_set(err, ZMIX_ENOMEM, "fleet: cannot start the lease keeper");
    }
    fj->keeper_started = 1;
    *out = fj;
    return 0;
}

void fleet_jobs_free(fleet_jobs *fj)
{
    if (!fj) return;
    atomic_store(&fj->stopping, 1);
    pthread_mutex_lock(&fj->lock);
    pthread_cond_broadcast(&fj->wake);
    pthread_mutex_unlock(&fj->lock);
    if (fj->keeper_started) pthread_join(fj->keeper, NULL);
    /* The jobs still held resume elsewhere now, not a lease time later. */
    for (size_t i = 0; i < fj->n_held && fj->io && !fj->io->err; i++) {
        char lease_key[48], value[160];
        key_of(lease_key, sizeof lease_key, K_LEASE, fj->held[i].id);
        lease_value(value, sizeof value, fj->held[i].epoch, fj->member);
        redisReply *r = redisCommand(fj->io, "EVAL %s 1 %s %s", LUA_RELEASE, lease_key, value);
        if (r) freeReplyObject(r);
    }
    if (fj->io) redisFree(fj->io);
    fleet_job_events_free(fj->events);
    for (size_t i = 0; i < fj->n_held; i++) free(fj->held[i].record);
    free(fj->held);
    pthread_mutex_destroy(&fj->io_lock);
    pthread_mutex_destroy(&fj->lock);
    pthread_cond_destroy(&fj->wake);
    free(fj);
}

int fleet_jobs_ids(fleet_jobs *fj, int open_only, uint64_t **ids, size_t *n, zmix_error *err)
{
    *ids = NULL;
    *n = 0;
    args a = {0};
    arg_strs(&a, "ZREVRANGE", open_only ? K_OPEN : K_ALL, "0", "-1", (char *)NULL);
    redisReply *r = fleet_jobs_command(fj, a.n, a.v, a.len, err);
    if (!r) return err->code ? err->code : ZMIX_EIO;
    int rc = 0;
    if (r->type == REDIS_REPLY_ARRAY && r->elements > 0) {
        *ids = malloc(r->elements * sizeof **ids);
        if (!*ids) rc = zmix_error_set(err, ZMIX_ENOMEM, "out of memory listing jobs");
        for (size_t i = 0; *ids && i < r->elements; i++)
            (*ids)[(*n)++] = strtoull(r->element[i]->str, NULL, 10);
    }
    freeReplyObject(r);
    return rc;
}
