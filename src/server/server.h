/*
 * zmixd's core, shared by its parts (not a public API):
 *
 *   server.c   setup and teardown: model, runtime, persistence, pool, listeners, signals,
 *              the periodic tick (timeouts, rates), graceful shutdown
 *   conn.c     connections: accept, read + frame + decode, write queue and backpressure,
 *              idle timeout, auth gate
 *   methods.c  the method table: one handler per protocol method (proto/PROTOCOL.md)
 *   jobs.c     the job registry and each job's pipeline (accept → queue → generations of
 *              scoring on the pool, checkpoint after each → baselines → cache → done)
 *
 * Threads: everything here runs on the event-loop thread except pool items (scoring) and
 * libuv work requests (blocking persistence calls), which only touch the job fields their
 * submitter handed them and report back through the loop.
 */
#ifndef ZMIX_SERVER_SERVER_H
#define ZMIX_SERVER_SERVER_H

#include <msgpack.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "job_spec.h"
#include "pool.h"
#include "rpc.h"
#include "server/job_store.h"
#include "server/task_cache.h"
#include "util/log.h"
#include "zmix/cem.h"
#include "zmix/model.h"

typedef struct server server;
typedef struct conn conn;
typedef struct job job;
typedef struct parked parked;

/* A request answered later: a wait (job end or timeout), a submit being persisted, a get
 * reading a file. Owned by whatever will answer it (the job's waiter list or a work request);
 * when its connection closes first, conn is set to NULL and the answer is dropped. */
enum parked_kind { PARK_WAIT = 1, PARK_SUBMIT, PARK_IO };
struct parked {
    conn *conn;
    uint32_t msgid;
    int kind;
    int coalesced;        /* PARK_SUBMIT: joined a job somebody else submitted */
    uint64_t deadline_ms; /* PARK_WAIT: monotonic ms */
    parked *conn_prev, *conn_next;
    parked *job_next;
};

struct conn {
    union {
        uv_stream_t stream;
        uv_pipe_t pipe;
        uv_tcp_t tcp;
    } h;
    server *srv;
    uint64_t id;
    msgpack_unpacker unp;
    rpc_scanner scan;    /* how far the message at the head of unp has been walked */
    size_t write_queued; /* bytes handed to uv_write and not yet written */
    uint64_t last_active_ms;
    int authed; /* the token was presented, or none is needed */
    int closing;
    int reading;
    int subscribed;          /* wants progress notifications */
    uint64_t subscribed_job; /* ... of this job only; 0: of every job */
    parked *parked;          /* requests of this connection answered later */
    conn *prev, *next;
};

enum job_phase {
    PH_ACCEPTING = 0, /* being written to the job store */
    PH_QUEUED,        /* accepted, waiting for a running slot */
    PH_IO,            /* a persistence step is in flight (start, checkpoint, finish) */
    PH_SCORING,       /* a generation's chunks are on the pool */
    PH_EXTRAS,        /* baselines and z′ being computed on the pool */
    PH_FINISHED
};

struct job {
    server *srv;
    uint64_t id; /* 0 until the job store assigned one */
    job_spec spec;
    char key[65];
    char examples_digest[65];
    job_state state;
    int phase;
    int started; /* the store knows it as running */
    zmix_cem *cem;
    float *pop;         /* pop_size × dim, the population being scored */
    zmix_score *scores; /* pop_size */
    int first_unscored;
    int chunks_out;    /* pool items not yet back */
    pool_item *items;  /* chunk storage for this generation (owned) */
    volatile int stop; /* tells scoring calls to return early */
    int cancel_requested;
    int fail_pending; /* a chunk failed: fail once the others are back */
    int finishing;    /* its final state is being written: too late to cancel */
    char reason[JOB_REASON_MAX];
    char warning[JOB_REASON_MAX]; /* e.g. the result could not be written to disk */
    pool_queue queue;
    int64_t submit_ms, start_ms, end_ms; /* wall clock */
    uint64_t run_ns;                     /* scoring time accumulated this process */
    uint64_t gen_started_ns;
    long evals_here; /* evaluations made in this process */
    parked *waiters;
    /* Filled by the extras step for the cache entry. */
    zmix_score best_score, base_score;
    zmix_score *expert_scores; /* K */
    float *best_alpha;         /* dim */
    float *z;                  /* z_total */
    job *prev, *next;
};

struct server {
    server_config *cfg;
    zmix_log *log;
    uv_loop_t *loop;

    zmix_model *model;
    zmix_runtime *rt;
    char experts_digest[65];
    job_limits limits;
    zmix_cem_settings cem_defaults;

    task_cache *cache;
    job_store *store;
    pool *pool;
    uv_async_t pool_async;

    uv_stream_t *listeners[CONFIG_MAX_LISTEN];
    int n_listeners;
    char unix_paths[CONFIG_MAX_LISTEN][CONFIG_PATH_MAX]; /* to unlink at exit */
    int n_unix_paths;
    char token[256];
    size_t token_len; /* 0: no token required */

    conn *conns;
    int n_conns;
    uint64_t next_conn_id;

    job *jobs;        /* every job this process knows, newest first */
    int n_unfinished; /* accepting + queued + running */
    int n_running;
    int io_inflight; /* libuv work requests in flight */

    uv_signal_t sig_term, sig_int, sig_hup;
    uv_timer_t tick;
    int shutting_down;

    uint64_t start_ns;
    uint64_t requests;
    uint64_t evals_total;
    uint64_t evals_at_mark;
    uint64_t mark_ns;
    double evals_per_s;
    uint64_t jobs_done, jobs_failed, jobs_cancelled, submits_cached, submits_coalesced;
};

uint64_t server_now_ms(void); /* monotonic */
int64_t server_wall_ms(void);

/* conn.c */
int conn_listen_all(server *srv, zmix_error *err);
void conn_close_listeners(server *srv);
void conn_close(conn *c);
void conn_close_all(server *srv);
/* Sends one packed message (copies the bytes). Closes the connection when its write queue
 * would exceed the limit. */
void conn_send(conn *c, const char *data, size_t len);
void conn_reply_result(conn *c, uint32_t msgid, const msgpack_sbuffer *result);
void conn_reply_error(conn *c, uint32_t msgid, int code, const char *message);
void conn_sweep(server *srv, uint64_t now_ms); /* idle timeouts */
void conn_park(conn *c, parked *p);            /* links p into c's list */
void conn_unpark(parked *p);                   /* unlinks (conn stays alive) */
/* Answers a parked request (when its connection is still open) and unlinks it; does not free. */
void parked_reply_result(parked *p, const msgpack_sbuffer *result);
void parked_reply_error(parked *p, int code, const char *message);

/* methods.c */
void server_dispatch(server *srv, conn *c, const rpc_request *req);

/* jobs.c */
void jobs_on_pool_async(uv_async_t *h);
/* Takes ownership of spec. Answers the request itself (now or when persisted). */
void jobs_submit(server *srv, conn *c, uint32_t msgid, job_spec *spec);
job *jobs_find(server *srv, uint64_t id);
int jobs_cancel(server *srv, job *j, zmix_error *err);
void jobs_pack_status(server *srv, const job *j, msgpack_packer *pk);
void jobs_pack_brief(const job *j, msgpack_packer *pk);
void jobs_add_waiter(server *srv, job *j, conn *c, uint32_t msgid, uint64_t timeout_ms);
void jobs_sweep_waiters(server *srv, uint64_t now_ms);
int jobs_recover(server *srv, job_recovered *rec, size_t n, zmix_error *err);
void jobs_begin_shutdown(server *srv);
int jobs_idle(const server *srv); /* nothing on the pool and no I/O in flight */
void jobs_free_all(server *srv);
void jobs_pack_result(server *srv, const task_result *r, int with_vectors, msgpack_packer *pk);
/* Runs a blocking call on libuv's threadpool and answers p from the loop afterwards. */
void jobs_get_async(server *srv, conn *c, uint32_t msgid, const char *task, int with_vectors);

/* server.c */
void server_begin_shutdown(server *srv, const char *why);
int server_run(server_config *cfg, zmix_log *log, zmix_error *err);

#endif
