/*
 * zmixd's core, shared by the daemon's files (not a public API). The daemon is three folders:
 * src/wire (what travels on the socket: framing, msgpack-RPC, the method table, the maps
 * clients see), src/store (the task cache and the job store), and this one:
 *
 *   server.c       setup and teardown: model, runtime, persistence, pool, listeners, signals,
 *                  the periodic tick (timeouts, rates), graceful shutdown
 *   conn.c         connections: accept, read + frame + decode, write queue and backpressure,
 *                  idle timeout; hands each request to the handler it was given
 *   conn_admit.c   connection budgets per transport, the unauthenticated budget, the auth
 *                  deadline and failed auth calls
 *   jobs.c         the job registry and each job's lifecycle: one phase setter (rules in
 *                  job_phase.c), submit, cancel, scheduling, and the steps of the job's
 *                  adaptation session (zmix/adapt.h)
 *   job_reply.c    what jobs answer: acks, status replies, progress, waiters
 *   job_recover.c  jobs found in the job store at startup
 *   job_work.c     what pool workers run: one piece of a session step
 *   job_io.c       the blocking persistence steps, on libuv's threadpool, and their completions
 *   results.c      reads for clients: get, evict, and the history of a finished job
 *   pool.c         the scoring worker pool
 *   metrics.c      /metrics: request histograms, errors by code, the page
 *   http.c         --http: libmicrohttpd's thread, the dashboard and the JSON API
 *
 * Threads: the event loop runs everything except pool items (job_work.c), the work half of
 * I/O operations (job_io.c, results.c), the HTTP thread (http.c) and, with --store redis://,
 * the fleet's threads (src/fleet: a step's pieces scored through Redis, handed back through
 * the pool's done list), which only touch what their op, piece, step or request was handed
 * and report back through the loop. Each struct field below
 * says who writes it.
 */
#ifndef ZMIX_DAEMON_SERVER_H
#define ZMIX_DAEMON_SERVER_H

#include <msgpack.h>
#include <stdint.h>
#include <uv.h>

#include "daemon/config.h"
#include "daemon/job_phase.h"
#include "daemon/metrics.h"
#include "wire/job_spec.h"
#include "daemon/pool.h"
#include "daemon/tenants.h"
#include "fleet/fleet.h"
#include "fleet/fleet_jobs.h"
#include "wire/rpc.h"
#include "store/job_store.h"
#include "store/task_cache.h"
#include "util/log.h"
#include "zmix/adapt.h"
#include "zmix/cem.h"
#include "zmix/model.h"

typedef struct server server;
typedef struct conn conn;
typedef struct job job;
typedef struct parked parked;
typedef struct http_server http_server;

/* A request answered later: a wait (job end or timeout), a submit being persisted, a get
 * reading a file. Owned by whatever will answer it (the job's waiter list or a work request);
 * when its connection closes first, conn is set to NULL and the answer is dropped. */
enum parked_kind { PARK_WAIT = 1, PARK_SUBMIT, PARK_IO, PARK_CANCEL };
struct parked {
    conn *conn;
    uint32_t msgid;
    int kind;
    int coalesced;          /* PARK_SUBMIT: joined a job somebody else submitted */
    uint64_t deadline_ms;   /* PARK_WAIT: monotonic ms */
    uint64_t job_id;        /* on srv->remote_waits: the job driven by another member */
    uint64_t ended_seen_ms; /* ... when its end was first seen without its final status */
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
    int authed; /* the token was presented, or none is needed (conn_auth_succeeded) */
    int is_tcp;
    int auth_failures;    /* wrong tokens so far (conn_admit.c) */
    const tenant *tenant; /* who this connection acts for; NULL: the administrator (the Unix
                           * socket's owner, the --token-file token, or a daemon without
                           * tenants), who sees every job and task */
    uint64_t accepted_ms; /* monotonic: the authentication deadline counts from here */
    int closing;
    int reading;
    int subscribed;          /* wants progress notifications */
    uint64_t subscribed_job; /* ... of this job only; 0: of every job */
    parked *parked;          /* requests of this connection answered later */
    /* Set on the HTTP listener's administrator connection (http.c), which has no stream:
     * what would be written to the socket goes to sink. */
    void (*sink)(conn *c, const char *data, size_t len);
    void *sink_arg;
    conn *prev, *next;
};

/* What status shows of a search: read live from the session while there is one, frozen at
 * the end (or read back from the job store after a restart). */
typedef struct job_summary {
    int generation;
    long evaluations, skipped;
    int have_best;
    zmix_score best;
    float *best_alpha; /* dim, owned; NULL when !have_best */
    int have_mean_std;
    double mean_std;
    zmix_cem_stop stop;
    double elapsed_s; /* scoring seconds over the whole search */
    int n_warnings;   /* the result's warnings (zmix_adapt_result), once it has one */
    char warnings[ZMIX_ADAPT_MAX_WARNINGS][256];
} job_summary;

void job_summary_free(job_summary *s);
/* The summary of a live session (allocates best_alpha). */
int job_summary_of_session(const zmix_session *ses, job_summary *out);
/* The summary of a result (allocates best_alpha). */
int job_summary_of_result(const zmix_adapt_result *r, job_summary *out);

struct job {
    /* Set before the job is visible, then read-only (loop thread): */
    server *srv;
    char key[65]; /* the inputs key (zmix_adapt_key) */
    zmix_adapt_opts opts;

    /* Loop thread only: */
    uint64_t id;   /* 0 until the job store assigned one */
    job_spec spec; /* examples freed when the job finishes; the settings stay for status */
    job_state state;
    job_phase phase;
    int started; /* the store knows it as running */
    int cancel_requested;
    int end_unsaved; /* the end state could not be written to the job store */
    int interest;    /* submits answered with this job (one, plus one per coalesced submit):
                      * a tenant's cancel withdraws one, and cancels at the last */
    /* Non-empty when the queue (or the tenant's) was full at submit: the job is answered from
     * the task cache or refused with this ELIMIT message. */
    char refusal[192];
    int fail_pending; /* a piece failed: fail once the others are back */
    char reason[JOB_REASON_MAX];
    char warning[JOB_REASON_MAX]; /* e.g. the result could not be written to disk */
    pool_queue queue;
    int64_t submit_ms, start_ms, end_ms; /* wall clock */
    uint64_t run_ns;                     /* scoring time in this process */
    uint64_t step_started_ns;
    parked *waiters;
    job_summary final; /* the frozen summary of a finished job */
    int have_final;
    uint8_t *resume; /* a recovered checkpoint, until the job starts */
    size_t resume_len;
    uint64_t epoch;    /* in a fleet: the epoch of this member's lease on the job (fleet_jobs.h) */
    int abandoned;     /* in a fleet: the lease was lost; dropped once its step is back */
    int resume_failed; /* in a fleet: cannot resume (reason says why): fails when started */

    /* Owned by the step in flight while the phase is SCORING, SAVING or FINISHING (pool
     * workers score pieces of it; the I/O thread saves it or builds its result), else by
     * the loop. Status reads it from the loop at any time: the step only writes the
     * candidates and scores, which status does not read. */
    zmix_session *session;
    pool_item *items; /* this step's pieces (owned) */
    int items_out;    /* pool items not yet back */

    /* Written by the loop, read by workers: */
    atomic_int stop; /* tells scoring calls to return early */

    job *prev, *next;
};

/* What a connection does with each decoded request. The connection layer knows only this
 * handler, not the protocol's methods (server.c installs methods_dispatch). */
typedef void (*request_handler)(server *srv, conn *c, const rpc_request *req);

struct server {
    server_config *cfg;
    request_handler on_request;
    zmix_log *log;
    uv_loop_t *loop;

    zmix_model *model;
    zmix_runtime *rt;
    char experts_digest[65]; /* zmix_adapt_experts_digest */
#ifdef ZMIX_CHECKED
    pthread_t loop_thread; /* checked builds assert that loop-only code runs there */
#endif
    job_limits limits;
    zmix_cem_settings cem_defaults;

    task_cache *cache;
    job_store *store;
    pool *pool;
    uv_async_t pool_async;
    fleet *fleet;           /* --store redis://...: the fleet this daemon belongs to; NULL: none */
    fleet_jobs *fleet_jobs; /* ... and its job store; then store is NULL */
    uv_async_t fleet_async; /* the fleet's job events are waiting */
    parked *remote_waits;   /* waits and cancels on jobs another member drives */
    int remote_poll_inflight;
    uint64_t remote_polled_ms;
    struct remote_seen *remote_seen; /* remote jobs' progress told to subscribers */
    size_t n_remote_seen;
    int remote_watch_inflight;
    uint64_t remote_watched_ms;
    uint64_t fleet_claimed, fleet_lost; /* jobs claimed from other members, leases lost */

    uv_stream_t *listeners[CONFIG_MAX_LISTEN];
    int n_listeners;
    char unix_paths[CONFIG_MAX_LISTEN][CONFIG_PATH_MAX]; /* to unlink at exit */
    int n_unix_paths;
    char token[256];
    size_t token_len;     /* 0: no administrator token */
    tenant_table tenants; /* --tenants; n == 0: no tenants */

    conn *conns;
    int n_conns;  /* every open connection (stats) */
    int n_unix;   /* ... of them on Unix sockets: its own budget, never TCP's */
    int n_tcp;    /* ... on TCP */
    int n_unauth; /* ... not authenticated yet (conn_admit.c) */
    uint64_t next_conn_id;

    job *jobs;        /* every job this process knows, newest first */
    int n_unfinished; /* accepting, queued, starting, scoring or saving (job_set_phase) */
    int n_running;    /* starting, scoring or saving (job_set_phase) */
    int io_inflight;  /* libuv work requests in flight */

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
    int n_generating;                             /* generate requests in progress (generate.c) */
    uint64_t generations_total, scoring_ns_total; /* /metrics */
    metrics_state metrics;                        /* request latencies, errors (metrics.c) */
    http_server *http;                            /* --http (http.c); NULL without */
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
void conn_sweep(server *srv, uint64_t now_ms); /* idle timeouts, auth deadlines */
/* Sends an error notification, then closes once it is written. */
void conn_send_error_notify(conn *c, int code, const char *message);
void conn_close_after_write(conn *c);

/* conn_admit.c: budgets, the unauthenticated ones, auth deadline and failures (PROTOCOL §6) */
#define CONN_PREAUTH_FRAME_LIMIT 4096 /* largest frame before auth: an auth call fits */
#define CONN_AUTH_MAX_FAILURES   3    /* wrong tokens before the connection is closed */
/* NULL to admit c (not linked yet; may close the oldest unauthenticated connection to make
 * room), else the reason it is refused. */
const char *conn_admit(server *srv, conn *c);
void conn_count(conn *c, int delta); /* adds c to (+1) or removes it from (-1) the counters */
void conn_unlink(conn *c);           /* out of the list and the counters */
int conn_unauth_budget(const server *srv);
size_t conn_preauth_room(const conn *c); /* bytes an unauthenticated connection may still read */
void conn_auth_succeeded(conn *c);
int conn_auth_failed(conn *c); /* logs; 1 when the connection must now be closed */
int conn_auth_expired(conn *c, uint64_t now_ms); /* closes it past its deadline: 1 */
void conn_park(conn *c, parked *p);              /* links p into c's list */
void conn_unpark(parked *p);                     /* unlinks (conn stays alive) */
/* Answers a parked request (when its connection is still open) and unlinks it; does not free. */
void parked_reply_result(parked *p, const msgpack_sbuffer *result);
void parked_reply_error(parked *p, int code, const char *message);

/* wire/methods.c: the method table, the request handler the daemon gives its connections */
void methods_dispatch(server *srv, conn *c, const rpc_request *req);

/* jobs.c (loop thread) */
void jobs_on_pool_async(uv_async_t *h);
/* Takes ownership of spec. Answers the request itself (now or when persisted). */
void jobs_submit(server *srv, conn *c, uint32_t msgid, job_spec *spec);
job *jobs_find(server *srv, uint64_t id);
/* 1 when TCP connections must call auth (an administrator token or tenants exist). */
int server_tokens_required(const server *srv);
/* Whether connection c may see a job or task stored under the scoped name `task`. */
int conn_sees_task(const conn *c, const char *task);
/* A task name from a client, as stored: a tenant's names live under TENANT@ (a tenant cannot
 * name another's tasks); the administrator names anyone's as TENANT@TASK. */
int conn_scope_task(const conn *c, char task[TASK_NAME_MAX + 1], zmix_error *err);

/* Cancels j, or, for a tenant's connection and a job other submits still want, withdraws
 * one interest: then 1 (nothing more to do), else 0 and the cancel proceeds. */
int jobs_cancel(server *srv, job *j, int withdraw_only, zmix_error *err);
/* Parks a cancel request on a job being cancelled: it is answered once the job's end state
 * is on disk, so an acknowledged cancel survives a crash (PROTOCOL.md §4.8). */
void jobs_park_cancel(server *srv, job *j, conn *c, uint32_t msgid);
void jobs_add_waiter(server *srv, job *j, conn *c, uint32_t msgid, uint64_t timeout_ms);
void jobs_sweep_waiters(server *srv, uint64_t now_ms);
int jobs_recover(server *srv, job_recovered *rec, size_t n, zmix_error *err);
void jobs_begin_shutdown(server *srv);
int jobs_idle(const server *srv); /* nothing on the pool and no I/O in flight */
void jobs_free_all(server *srv);
void job_set_phase(job *j, job_phase to);
job *jobs_new(server *srv);      /* a job in phase NEW, linked into the registry */
void jobs_schedule(server *srv); /* starts queued jobs while running slots are free */
/* Called by job_io.c when a step's I/O completes. */
void jobs_accepted(job *j, int rc, const zmix_error *err, uint64_t id, task_result *cached);
/* In a fleet: the submit joined job id, which another member runs for the same inputs. */
void jobs_joined(job *j, uint64_t id, job_state state);
void jobs_started(job *j);
void jobs_saved(job *j);
void jobs_finished(job *j, job_state state, const char *reason, job_summary *summary, int put_rc,
                   const zmix_error *put_err);

/* In a fleet (loop thread): the job events of fleet_jobs.h (claimed, lost, cancel). */
void jobs_on_fleet_async(uv_async_t *h);
/* The lease on j is lost: it is dropped here once no step of it is in flight. */
void jobs_abandon(job *j);
/* Drops an abandoned job now (nothing of it in flight); its waiters wait on the fleet. */
void jobs_drop(job *j);
/* A job whose lease this member just claimed: resumed from rec (job_recover.c). */
int jobs_resume_claimed(server *srv, job_recovered *rec, uint64_t epoch, int cancel_requested);

/* remote_jobs.c: status, wait and cancel of jobs another fleet member drives (loop thread) */
void remote_status(server *srv, conn *c, uint32_t msgid, uint64_t id);
void remote_wait(server *srv, conn *c, uint32_t msgid, uint64_t id, uint64_t timeout_ms);
void remote_cancel(server *srv, conn *c, uint32_t msgid, uint64_t id);
void remote_poll(server *srv, uint64_t now_ms);  /* the tick: answers remote waits */
void remote_watch(server *srv, uint64_t now_ms); /* the tick: progress of remote jobs */
void remote_jobs_list(server *srv, conn *c, uint32_t msgid, const char *state);
/* The dashboard's list of a fleet (/api/jobs): every open job and the newest others up to
 * limit, each with its whole status, answered as {"jobs": [...]} to c. */
void remote_jobs_statuses(server *srv, conn *c, uint32_t msgid, size_t limit);
void remote_subscribe(server *srv, conn *c, uint32_t msgid, uint64_t id);
void remote_park(server *srv, parked *p, uint64_t id); /* a local waiter of an abandoned job */

/* job_reply.c (loop thread) */
void jobs_reply_submitted(parked *p, const job *j);
void jobs_reply_cached(parked *p, server *srv, const task_result *r);
void jobs_answer_waiters(job *j); /* every waiter: submit acks and waits */
void jobs_notify_progress(server *srv, const job *j);

/* generate.c: the generate method. Its pool items carry kind POOL_KIND_GENERATE (jobs' 0);
 * jobs_on_pool_async hands them back to generate_step_done. */
#define POOL_KIND_GENERATE 1
void generate_request(server *srv, conn *c, const rpc_request *req);
void generate_step_done(server *srv, pool_item *it);

/* job_work.c (pool workers) */
void job_work_run(pool_item *it);

/* job_io.c: blocking persistence on libuv's threadpool, completions on the loop */
typedef struct io_op io_op;
struct io_op {
    uv_work_t req;
    server *srv;
    void (*work)(io_op *op);  /* threadpool */
    void (*after)(io_op *op); /* loop; frees op */
};
void io_submit(server *srv, io_op *op);
/* A client's request answered by an op's completion: parks it on c (PARK_IO), stores it in
 * *slot (the op's own field) and queues op. Out of memory (op may be NULL): answers ENOMEM
 * and frees op. */
void io_submit_parked(server *srv, conn *c, uint32_t msgid, io_op *op, parked **slot,
                      void (*work)(io_op *), void (*after)(io_op *));
int job_io_accept(job *j);
int job_io_start(job *j);
int job_io_checkpoint(job *j);
int job_io_finish(job *j, job_state state, const char *reason);
/* In a fleet: publishes the job's status for the other members (at submit, at the end). */
int job_io_publish_status(job *j);
/* The job's status map as clients see it, packed (malloc'd), for the fleet. */
int jobs_status_bytes(server *srv, const job *j, uint8_t **out, size_t *len);

/* results.c: client reads answered from the loop after a threadpool step */
void results_get(server *srv, conn *c, uint32_t msgid, const char *task, int with_vectors,
                 int with_document);
void results_evict(server *srv, conn *c, uint32_t msgid, const char *task);
void results_history(server *srv, conn *c, uint32_t msgid, job *j);
/* In a fleet: the history of a job another member drove, from its record in Redis. */
void results_history_remote(server *srv, conn *c, uint32_t msgid, uint64_t id);
/* In a fleet: tasks, listed from Redis. */
void results_tasks_fleet(server *srv, conn *c, uint32_t msgid);
/* Threadpool: the task's cached result, the fleet's in a fleet (kept here too). */
int results_cached(server *srv, const char *task, task_result *out, zmix_error *err);

/* job_view.c */
void jobs_pack_status(server *srv, const job *j, msgpack_packer *pk);
void jobs_pack_brief(const job *j, msgpack_packer *pk);
/* Whether a result made with this model fingerprint and experts digest is not current for
 * this daemon: 1 with the reason in why, else 0 with why "". */
/* Packs "task" (the name as its tenant knows it) and, for a tenant's task, "tenant". */
void jobs_pack_task_name(rpc_map *m, const char *scoped);
/* The tasks reply ({"tasks": [...]}) of the tasks c may see. */
void jobs_pack_tasks(server *srv, const conn *c, const task_cache_info *list, size_t n,
                     msgpack_packer *pk);
int jobs_result_mismatch(const server *srv, const char *model_fingerprint,
                         const char *experts_digest, char *why, size_t size);
void jobs_pack_result(server *srv, const task_result *r, int with_vectors, int with_document,
                      msgpack_packer *pk);
void jobs_pack_history(uint64_t id, const zmix_adapt_result *r, msgpack_packer *pk);

/* Checked builds (Debug, ASan, TSan): invariants abort with a message. */
#ifdef ZMIX_CHECKED
#define SERVER_CHECK(cond)  ((cond) ? (void)0 : server_check_failed(#cond, __FILE__, __LINE__))
#define SERVER_ON_LOOP(srv) SERVER_CHECK(pthread_equal(pthread_self(), (srv)->loop_thread))
void server_check_failed(const char *what, const char *file, int line);
#else
#define SERVER_CHECK(cond)  ((void)sizeof(cond)) /* compiled, never evaluated */
#define SERVER_ON_LOOP(srv) ((void)0)
#endif

/* metrics.c: the /metrics page; the resident memory of the process */
void metrics_render(server *srv, metrics_buf *b);
long metrics_rss_bytes(void);

/* http.c: the --http listener (nothing without the option) */
int http_start(server *srv, zmix_error *err);
void http_stop(server *srv);
int http_connections(const server *srv);

/* wire/methods.c: whether the protocol has this method */
int methods_known(const char *name);

/* server.c */
void server_begin_shutdown(server *srv, const char *why);
int server_run(server_config *cfg, zmix_log *log, zmix_error *err);

#endif
