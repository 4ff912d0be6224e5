/*
 * The fleet's job store: with --store redis://..., every job's record, state, checkpoint,
 * result and published status live in Redis (proto/FLEET.md §8), so that any member can
 * answer for any job, and a job whose driver dies is resumed by another member.
 *
 * Driving is leased. The member that accepts a job holds its lease (zmix:lease:ID, value
 * "EPOCH MEMBER", expiring after --fleet-lease-ms) and renews it from the keeper thread. A
 * lease that expires (its member died or stalled) is claimed by another member's keeper: the
 * claim increments the job's epoch, and hands the job with its last checkpoint to that
 * member's loop, which resumes it exactly as a restarted daemon resumes a job from its local
 * store. Every write a driver makes carries its epoch and is refused (ZMIX_ESTATE, "fenced")
 * once the epoch has moved on: a member that wakes up from a stall cannot overwrite its
 * successor's state. The writes happen in Lua scripts, so a check and its write are atomic.
 *
 * Threads: fleet_jobs_open, _free, _take_events and _release are called from the event loop;
 * the functions that talk to Redis (create, set_state, checkpoint, finish, get, peek,
 * request_cancel) block and are called from libuv's threadpool, like the job_store_*
 * functions they stand in for; they share one connection under a mutex. The keeper thread
 * renews this member's leases and claims the expired leases of others; what it learns goes to
 * the loop as events (notify is called from the keeper thread).
 */
#ifndef ZMIX_FLEET_JOBS_H
#define ZMIX_FLEET_JOBS_H

#include <stddef.h>
#include <stdint.h>

#include "store/job_store.h"
#include "util/log.h"

typedef struct fleet_jobs fleet_jobs;

struct redisContext;

typedef struct fleet_jobs_config {
    const char *member; /* this member's id (fleet_member) */
    const char *url;    /* the store, for messages */
    /* A new connection, ready for commands (fleet_connect); NULL with err set. */
    struct redisContext *(*connect)(void *arg, zmix_error *err);
    void *connect_arg;
    int lease_ms; /* a lease not renewed for this long is claimed by another member */
    zmix_log *log;
    void (*notify)(void *arg); /* events are waiting (keeper thread) */
    void *notify_arg;
} fleet_jobs_config;

/* Checks that Redis answers; starts the keeper thread. */
int fleet_jobs_open(const fleet_jobs_config *cfg, fleet_jobs **out, zmix_error *err);
/* Stops the keeper and gives up every lease still held, so that other members resume those
 * jobs at once rather than after the lease time. */
void fleet_jobs_free(fleet_jobs *fj);

enum fleet_job_event_kind {
    FLEET_JOB_CLAIMED = 1, /* this member now drives rec (resume it) */
    FLEET_JOB_LOST,        /* this member's lease on id is gone: stop driving it */
    FLEET_JOB_CANCEL       /* a client of some member asked to cancel id */
};

typedef struct fleet_job_event fleet_job_event;
struct fleet_job_event {
    fleet_job_event *next;
    int kind;
    uint64_t id;
    uint64_t epoch;       /* CLAIMED: the epoch of the lease */
    int cancel_requested; /* CLAIMED: a cancel was asked while nobody drove it */
    job_recovered rec;    /* CLAIMED: the record, with its last checkpoint */
};

/* Loop: every event queued since the last call, oldest first; free with
 * fleet_job_events_free. */
fleet_job_event *fleet_jobs_take_events(fleet_jobs *fj);
void fleet_job_events_free(fleet_job_event *e);

/* Loop: how many more jobs this member has room to run (its free running slots). The keeper
 * claims lapsed jobs only up to that; until it is first said, one per look. */
void fleet_jobs_set_capacity(fleet_jobs *fj, int free_slots);

/* Loop: stop renewing the lease on id (the job ended here, or was lost). */
void fleet_jobs_release(fleet_jobs *fj, uint64_t id);

/* A job another member already runs for the same task and inputs. */
typedef struct fleet_job_joined {
    uint64_t id; /* 0: none, a new job was created */
    job_state state;
} fleet_job_joined;

/* Threadpool: assigns rec->id (a fleet-wide counter), stores the record as queued and takes
 * the lease for this member; 0 only once Redis has answered (with appendfsync always, once it
 * is on disk). *epoch: the lease's epoch, for the writes that follow. When a job of the fleet
 * that has not ended computes the same task from the same inputs (rec->key), nothing is
 * created: rec->id is 0 and *joined names that job. */
int fleet_jobs_create(fleet_jobs *fj, job_record *rec, uint64_t *epoch, fleet_job_joined *joined,
                      zmix_error *err);

/* Threadpool: one command on the store's connection (fleet_tasks.c); the reply (caller frees)
 * or NULL with err set (an error reply becomes ZMIX_EIO with its text). */
struct redisReply;
struct redisReply *fleet_jobs_command(fleet_jobs *fj, int argc, const char **argv,
                                      const size_t *lens, zmix_error *err);
/* The store's URL, for messages. */
const char *fleet_jobs_url(const fleet_jobs *fj);

/* Threadpool: the fenced writes. status: the job's status map as a client sees it
 * (PROTOCOL.md), published for the members that do not drive the job; may be NULL. */
int fleet_jobs_set_state(fleet_jobs *fj, uint64_t id, uint64_t epoch, job_state state,
                         const char *reason, int64_t now_ms, zmix_error *err);
int fleet_jobs_checkpoint(fleet_jobs *fj, uint64_t id, uint64_t epoch, int generation,
                          const uint8_t *data, size_t len, const uint8_t *status, size_t status_len,
                          zmix_error *err);
/* The end state and result document; removes the checkpoint and the lease. */
int fleet_jobs_finish(fleet_jobs *fj, uint64_t id, uint64_t epoch, job_state state,
                      const char *reason, int64_t now_ms, const uint8_t *result, size_t result_len,
                      zmix_error *err);
/* The job's status map alone (fenced the same way): at submit, and at the end after
 * fleet_jobs_finish with final set. */
int fleet_jobs_publish_status(fleet_jobs *fj, uint64_t id, uint64_t epoch, const uint8_t *status,
                              size_t status_len, int final, zmix_error *err);

/* Threadpool: the job's record as it is now (state, times, reason, result). ZMIX_ENOTFOUND
 * for an unknown id. */
int fleet_jobs_get(fleet_jobs *fj, uint64_t id, job_record *out, zmix_error *err);

/* What a member that does not drive a job tells its clients about it. */
typedef struct fleet_job_peek {
    char task[TASK_NAME_MAX + 1];
    job_state state;
    int final;       /* status is the finished job's final one */
    uint8_t *status; /* the published status map (msgpack), or NULL before the first */
    size_t status_len;
} fleet_job_peek;
void fleet_job_peek_free(fleet_job_peek *p);
/* Threadpool. ZMIX_ENOTFOUND for an unknown id. */
int fleet_jobs_peek(fleet_jobs *fj, uint64_t id, fleet_job_peek *out, zmix_error *err);

/* The fleet's jobs listed (jobs): the newest this many; older ended jobs are deleted from
 * Redis as new ones come (the local job store keeps as many). */
#define FLEET_JOBS_KEPT 1000
/* Threadpool: the ids of every job listed (newest first), or of the jobs not ended. */
int fleet_jobs_ids(fleet_jobs *fj, int open_only, uint64_t **ids, size_t *n, zmix_error *err);

/* Threadpool: asks the job's driver, whoever it is, to cancel it (it sees the request within
 * a lease renewal). ZMIX_ESTATE when the job is already finished. */
int fleet_jobs_request_cancel(fleet_jobs *fj, uint64_t id, zmix_error *err);

#endif
