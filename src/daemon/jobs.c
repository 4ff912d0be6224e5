/*
 * The job registry and each job's lifecycle. Thread: the event loop, every function.
 *
 *   submit ──io──▶ accepted (on disk) ──▶ queued ──io──▶ starting ──▶ scoring ──▶ saving ─┐
 *                                                                    ▲                     │
 *                                                                    └── next step ◀───────┘
 *   session over (done, failed) or cancelled ──io──▶ finishing ──▶ finished, waiters answered
 *
 * A job runs an adaptation session (zmix/adapt.h): the session decides what to score (the
 * baselines, then one CEM generation per step), this file only spreads each step's pieces
 * over the pool, has each step checkpointed, and answers clients. A job has at most one step
 * in flight — its pieces on the pool, or one I/O operation — so the session is touched by one
 * thread at a time and the job store sees the job's writes in order.
 *
 * Determinism: the session derives its random stream from the inputs key, and a checkpoint
 * holds its whole state, so a job resumed after a crash ends exactly as an uninterrupted run.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/server.h"
#include "util/utf8.h"
#include "util/clock.h"

static void begin_step(job *j);
static void finish(job *j, job_state state, const char *reason);

/* ---- Lifecycle ------------------------------------------------------------------------- */

void job_set_phase(job *j, job_phase to)
{
    server *srv = j->srv;
    SERVER_ON_LOOP(srv);
    int ok = job_phase_apply(j->phase, to, &srv->n_unfinished, &srv->n_running) == 0;
    SERVER_CHECK(ok); /* an illegal transition or a counter below zero: a bug */
    j->phase = to;
}

/* ---- Registry -------------------------------------------------------------------------- */

job *jobs_new(server *srv)
{
    job *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    j->srv = srv;
    j->interest = 1; /* its submit (a recovered job: the one it was acknowledged to) */
    atomic_init(&j->stop, 0);
    j->next = srv->jobs;
    if (srv->jobs) srv->jobs->prev = j;
    srv->jobs = j;
    return j;
}

static void free_waiters(job *j)
{
    while (j->waiters) {
        parked *p = j->waiters;
        j->waiters = p->job_next;
        conn_unpark(p);
        free(p);
    }
}

static void job_destroy(job *j)
{
    server *srv = j->srv;
    if (job_phase_counts_unfinished(j->phase)) job_set_phase(j, JOB_PH_FINISHED);
    if (j->prev)
        j->prev->next = j->next;
    else
        srv->jobs = j->next;
    if (j->next) j->next->prev = j->prev;
    free_waiters(j);
    free(j->items);
    zmix_session_free(j->session);
    job_spec_free(&j->spec);
    job_summary_free(&j->final);
    free(j->resume);
    free(j);
}

job *jobs_find(server *srv, uint64_t id)
{
    for (job *j = srv->jobs; j; j = j->next)
        if (j->id == id && id != 0) return j;
    return NULL;
}

void jobs_free_all(server *srv)
{
    while (srv->jobs) {
        job *j = srv->jobs;
        j->phase = JOB_PH_FINISHED; /* teardown: the counters no longer matter */
        job_destroy(j);
    }
}

int jobs_idle(const server *srv)
{
    if (srv->io_inflight > 0 || srv->n_generating > 0) return 0;
    for (const job *j = srv->jobs; j; j = j->next)
        if (j->items_out > 0) return 0;
    return 1;
}

/* A daemon that runs for months must not keep every job it ever ran: beyond this many, the
 * oldest finished jobs are forgotten (the job store applies the same retention on disk, and
 * their results stay in the task cache). */
#define FINISHED_JOBS_KEPT 1000

static void prune_finished(server *srv)
{
    int n = 0;
    job *oldest = NULL;
    for (job *j = srv->jobs; j; j = j->next) {
        if (j->phase != JOB_PH_FINISHED) continue;
        n++;
        if (!j->waiters) oldest = j; /* the list is newest first */
    }
    if (n > FINISHED_JOBS_KEPT && oldest) job_destroy(oldest);
}

/* ---- Steps ----------------------------------------------------------------------------- */

static void fail(job *j, const char *reason)
{
    ZLOG_WARN(j->srv->log, "job %llu (%s) failed: %s", (unsigned long long)j->id, j->spec.task,
              reason);
    finish(j, JOB_FAILED, reason);
}

/* A session for a job about to run: restored from its recovered checkpoint when it has a
 * usable one, else new. */
static int open_session(job *j, zmix_error *err)
{
    if (j->session) return 0;
    if (j->resume) {
        zmix_error e = {0};
        int rc = zmix_session_restore(j->srv->rt, &j->spec.examples, &j->opts, j->resume,
                                      j->resume_len, &j->session, &e);
        free(j->resume);
        j->resume = NULL;
        if (rc == 0) return 0;
        ZLOG_WARN(j->srv->log, "job %llu: checkpoint unusable (%s): restarting it",
                  (unsigned long long)j->id, e.msg);
    }
    return zmix_session_create(j->srv->rt, &j->spec.examples, &j->opts, &j->session, err);
}

/* The session is over, or the job was cancelled: its end state is written next. */
static int session_over(job *j)
{
    zmix_session_phase ph = zmix_session_phase_get(j->session);
    if (ph == ZMIX_SESSION_DONE) {
        finish(j, JOB_DONE, zmix_cem_stop_name(zmix_session_stop(j->session)));
        return 1;
    }
    if (ph == ZMIX_SESSION_FAILED) {
        fail(j, zmix_session_error(j->session));
        return 1;
    }
    return 0;
}

static void begin_step(job *j)
{
    server *srv = j->srv;
    zmix_error err = {0};
    if (j->abandoned) {
        jobs_drop(j);
        return;
    }
    if (j->resume_failed) {
        fail(j, j->reason);
        return;
    }
    if (j->cancel_requested) { /* before shutdown: an acknowledged cancel is kept */
        finish(j, JOB_CANCELLED, "cancelled by a client");
        return;
    }
    if (srv->shutting_down) { /* resumed from its checkpoint at the next start */
        job_set_phase(j, JOB_PH_QUEUED);
        return;
    }
    if (open_session(j, &err) != 0) {
        fail(j, err.msg);
        return;
    }
    int n = zmix_session_begin_step(j->session, &err);
    if (n < 0) {
        fail(j, err.msg);
        return;
    }
    if (n == 0) {
        if (!session_over(j)) fail(j, "the session has nothing to score but has not ended");
        return;
    }
    int workers = pool_workers(srv->pool);
    /* A fleet member splits for the fleet: a piece per scorer anywhere, not per local worker
     * (scores do not depend on the split, docs/scoring.md). */
    if (srv->fleet && (fleet_scorers(srv->fleet) + 1) / 2 > workers)
        workers = (fleet_scorers(srv->fleet) + 1) / 2;
    int max = 4 * workers + 4;
    zmix_work *work = calloc((size_t)max, sizeof *work);
    free(j->items);
    j->items = calloc((size_t)max, sizeof *j->items);
    if (!work || !j->items) {
        free(work);
        fail(j, "out of memory for a step");
        return;
    }
    int n_items = zmix_session_split(j->session, workers, work, max);
    for (int i = 0; i < n_items; i++) {
        pool_item *it = &j->items[i];
        it->run = job_work_run;
        it->owner = j;
        it->begin = work[i].begin;
        it->end = work[i].end;
        it->next = i + 1 < n_items ? &j->items[i + 1] : NULL;
    }
    free(work);
    atomic_store_explicit(&j->stop, 0, memory_order_relaxed);
    j->items_out = n_items;
    j->step_started_ns = zmix_now_ns();
    job_set_phase(j, JOB_PH_SCORING);
    /* A fleet member scores its steps through the fleet's stream (src/fleet/fleet.h); the
     * pieces come back through the pool's done list either way. */
    if (!srv->fleet || fleet_submit_step(srv->fleet, j->session, j->items, &j->stop, j->id) != 0)
        pool_submit(srv->pool, &j->queue, j->items);
}

/* Every piece of the step is back (scored, failed or withdrawn). */
static void step_scored(job *j)
{
    server *srv = j->srv;
    zmix_error err = {0};
    uint64_t ns = zmix_now_ns() - j->step_started_ns;
    j->run_ns += ns;
    if (j->abandoned) {
        zmix_session_abort_step(j->session);
        jobs_drop(j);
        return;
    }
    if (j->fail_pending) {
        j->fail_pending = 0;
        zmix_session_abort_step(j->session);
        fail(j, j->reason);
        return;
    }
    if (j->cancel_requested) {
        zmix_session_abort_step(j->session);
        finish(j, JOB_CANCELLED, "cancelled by a client");
        return;
    }
    if (srv->shutting_down) {
        zmix_session_abort_step(j->session);
        job_set_phase(j, JOB_PH_QUEUED);
        return;
    }
    int scored = zmix_session_begin_step(j->session, &err); /* the open step's size */
    int generation = zmix_session_phase_get(j->session) == ZMIX_SESSION_SEARCH;
    if (zmix_session_end_step(j->session, (double)ns * 1e-9, &err) != 0) {
        fail(j, err.msg);
        return;
    }
    srv->evals_total += (uint64_t)(scored > 0 ? scored : 0);
    srv->scoring_ns_total += ns;
    srv->generations_total += (uint64_t)generation;
    if (generation && zmix_session_generation(j->session) == 1) {
        /* The first measured generation tells the operator what the job will cost
         * (docs/sizing.md): other jobs share the workers, so this is an upper bound
         * per generation only while the job runs alone. */
        double s = (double)ns * 1e-9;
        zmix_cem_method method;
        int pop, gens;
        zmix_adapt_search_shape(&j->opts, j->spec.cem.dim, &method, &pop, &gens);
        int left = gens - 1;
        ZLOG_INFO(srv->log,
                  "job %llu: first generation took %.3f s (%d candidates x %d examples, %d "
                  "workers): expect about %.3f s per generation, at most %.0f s for the %d "
                  "generations left",
                  (unsigned long long)j->id, s, scored, j->spec.examples.n, pool_workers(srv->pool),
                  s, s * (left > 0 ? left : 0), left > 0 ? left : 0);
    }
    if (generation) jobs_notify_progress(srv, j); /* progress is per generation (PROTOCOL.md §2) */
    job_set_phase(j, JOB_PH_SAVING);
    if (job_io_checkpoint(j) != 0) begin_step(j); /* no memory for the op: go on unsaved */
}

void jobs_on_pool_async(uv_async_t *h)
{
    server *srv = h->data;
    pool_item *items = pool_take_done(srv->pool);
    while (items) {
        pool_item *it = items;
        items = it->next;
        if (it->kind == POOL_KIND_GENERATE) {
            generate_step_done(srv, it);
            continue;
        }
        job *j = it->owner;
        j->items_out--;
        SERVER_CHECK(j->items_out >= 0 && j->phase == JOB_PH_SCORING);
        if (it->rc != 0 && it->rc != ZMIX_ECANCELED && !j->fail_pending) {
            /* One piece failed: the job fails alone. Stop its other pieces early. */
            j->fail_pending = 1;
            snprintf(j->reason, sizeof j->reason, "%.250s", it->err.msg);
            utf8_trim_cstr(j->reason);
            atomic_store_explicit(&j->stop, 1, memory_order_relaxed);
            for (pool_item *w = pool_withdraw(srv->pool, &j->queue); w; w = w->next) j->items_out--;
        }
        if (j->items_out == 0) step_scored(j);
    }
}

/* ---- Completions of the job's I/O steps (called by job_io.c) ----------------------------- */

void jobs_accepted(job *j, int rc, const zmix_error *err, uint64_t id, task_result *cached)
{
    server *srv = j->srv;
    if (cached) {
        srv->submits_cached++;
        while (j->waiters) {
            parked *p = j->waiters;
            j->waiters = p->job_next;
            jobs_reply_cached(p, srv, cached);
            free(p);
        }
        job_destroy(j);
        return;
    }
    if (rc != 0) {
        if (!j->refusal[0])
            ZLOG_ERROR(srv->log, "submit %s: job store: %s", j->spec.task, err->msg);
        while (j->waiters) {
            parked *p = j->waiters;
            j->waiters = p->job_next;
            parked_reply_error(p, rc, err->msg);
            free(p);
        }
        job_destroy(j);
        return;
    }
    j->id = id;
    j->state = JOB_QUEUED;
    job_set_phase(j, JOB_PH_QUEUED);
    zmix_cem_method method; /* what the search runs: sep-cma has its own population */
    int pop, gens;
    zmix_adapt_search_shape(&j->opts, j->spec.cem.dim, &method, &pop, &gens);
    ZLOG_INFO(srv->log,
              "job %llu: task %s accepted (%d examples, %s, pop %d, at most %d generations)",
              (unsigned long long)j->id, j->spec.task, j->spec.examples.n,
              zmix_cem_method_name(method), pop, gens);
    jobs_answer_waiters(j);
    if (srv->fleet_jobs) job_io_publish_status(j);
    if (j->cancel_requested)
        finish(j, JOB_CANCELLED, "cancelled by a client");
    else
        jobs_schedule(srv);
}

void jobs_joined(job *j, uint64_t id, job_state state)
{
    server *srv = j->srv;
    srv->submits_coalesced++;
    j->id = id;
    j->state = state;
    for (parked *p = j->waiters; p; p = p->job_next) p->coalesced = 1;
    ZLOG_INFO(srv->log, "submit %s: joins job %llu (same inputs, run by the fleet)", j->spec.task,
              (unsigned long long)id);
    jobs_answer_waiters(j);
    j->id = 0; /* the job is the fleet's, not this registry's */
    job_destroy(j);
}

void jobs_started(job *j)
{
    j->started = 1;
    begin_step(j);
}

void jobs_saved(job *j)
{
    begin_step(j);
}

void jobs_finished(job *j, job_state state, const char *reason, job_summary *summary, int put_rc,
                   const zmix_error *put_err)
{
    server *srv = j->srv;
    if (put_rc != 0) {
        ZLOG_ERROR(srv->log,
                   "job %llu: result of %s kept in memory only (the job is redone from its last "
                   "checkpoint after a restart): %s",
                   (unsigned long long)j->id, j->spec.task, put_err->msg);
        snprintf(j->warning, sizeof j->warning,
                 "result not saved to disk (served from memory, redone after a restart): %.160s",
                 put_err->msg);
        utf8_trim_cstr(j->warning);
    }
    j->state = state;
    snprintf(j->reason, sizeof j->reason, "%s", reason);
    /* Memory keeps the summary; the history is on disk (results_history reads it back). */
    job_summary_free(&j->final);
    j->final = *summary;
    memset(summary, 0, sizeof *summary);
    j->have_final = 1;
    zmix_session_free(j->session);
    j->session = NULL;
    free(j->items);
    j->items = NULL;
    job_set_phase(j, JOB_PH_FINISHED);
    if (state == JOB_DONE)
        srv->jobs_done++;
    else if (state == JOB_FAILED)
        srv->jobs_failed++;
    else
        srv->jobs_cancelled++;
    ZLOG_INFO(srv->log, "job %llu: %s (%s)", (unsigned long long)j->id, job_state_name(state),
              reason);
    job_spec_drop_examples(&j->spec); /* the examples; status needs only the settings */
    /* The other members answer for the job from what it published last. */
    if (srv->fleet_jobs && !j->end_unsaved) job_io_publish_status(j);
    jobs_answer_waiters(j);
    jobs_notify_progress(srv, j);
    prune_finished(srv);
    jobs_schedule(srv);
}

static void finish(job *j, job_state state, const char *reason)
{
    job_set_phase(j, JOB_PH_FINISHING);
    j->fail_pending = 0;
    j->end_ms = server_wall_ms(); /* the same time in memory and in the job store */
    if (job_io_finish(j, state, reason) != 0) {
        /* No memory for the op: keep the record consistent in memory at least. */
        job_summary none = {0};
        jobs_finished(j, state, reason, &none, 0, NULL);
    }
}

static void start_job(job *j)
{
    server *srv = j->srv;
    pool_queue_init(&j->queue, j->spec.priority);
    job_set_phase(j, JOB_PH_STARTING);
    if (!j->start_ms) j->start_ms = server_wall_ms();
    j->state = JOB_RUNNING;
    if (j->started || job_io_start(j) != 0) begin_step(j);
    (void)srv;
}

/* Jobs of a tenant (scoped task names TENANT@...) counted by phase. */
static int tenant_jobs(const server *srv, const char *tenant_name, int running)
{
    size_t n = strlen(tenant_name);
    int count = 0;
    for (const job *j = srv->jobs; j; j = j->next) {
        if (strncmp(j->spec.task, tenant_name, n) || j->spec.task[n] != TASK_SCOPE_SEP) continue;
        if (running ? job_phase_counts_running(j->phase)
                    : j->phase == JOB_PH_ACCEPTING || j->phase == JOB_PH_QUEUED)
            count++;
    }
    return count;
}

/* The tenant's own limit on waiting jobs, as the refusal of a submit that is not a cache
 * hit; "" when there is room (or no tenant). */
static void tenant_queue_full(const server *srv, const tenant *t, char *msg, size_t size)
{
    msg[0] = '\0';
    if (!t || t->max_queued <= 0) return;
    int queued = tenant_jobs(srv, t->name, 0);
    if (queued >= t->max_queued)
        snprintf(msg, size, "tenant %s: %d jobs waiting to start, at most %d (its max_queued)",
                 t->name, queued, t->max_queued);
}

/* The tenant's limit on running jobs: whether a job of this scoped task may start now. */
static int tenant_may_start(const server *srv, const job *j)
{
    char name[TENANT_NAME_MAX + 1];
    task_name_tenant(j->spec.task, name);
    if (!name[0]) return 1;
    for (int i = 0; i < srv->tenants.n; i++)
        if (!strcmp(srv->tenants.v[i].name, name))
            return srv->tenants.v[i].max_running <= 0 ||
                   tenant_jobs(srv, name, 1) < srv->tenants.v[i].max_running;
    return 1; /* a tenant no longer in the file: only the daemon's limits */
}

void jobs_schedule(server *srv)
{
    while (!srv->shutting_down && srv->n_running < srv->cfg->max_running) {
        job *best = NULL;
        for (job *j = srv->jobs; j; j = j->next) {
            if (j->phase != JOB_PH_QUEUED || j->id == 0 || !tenant_may_start(srv, j)) continue;
            if (!best || j->spec.priority > best->spec.priority ||
                (j->spec.priority == best->spec.priority && j->id < best->id))
                best = j;
        }
        if (!best) return;
        start_job(best);
    }
}

/* ---- Public entry points --------------------------------------------------------------- */

void jobs_submit(server *srv, conn *c, uint32_t msgid, job_spec *spec)
{
    SERVER_ON_LOOP(srv);
    if (srv->shutting_down) {
        job_spec_free(spec);
        conn_reply_error(c, msgid, ZMIX_ESTATE, "the daemon is shutting down");
        return;
    }
    zmix_adapt_opts opts;
    job_spec_adapt_opts(spec, &opts);
    char key[65];
    /* The experts digest computed once at startup, not the expert vectors hashed on the
     * loop for every submit. */
    job_spec_key(spec, zmix_model_fingerprint(srv->model), srv->experts_digest, key);
    parked *p = calloc(1, sizeof *p);
    if (!p) {
        job_spec_free(spec);
        conn_reply_error(c, msgid, ZMIX_ENOMEM, "submit: out of memory");
        return;
    }
    p->msgid = msgid;
    p->kind = PARK_SUBMIT;
    /* Identical work already in progress: join it instead of running it twice. */
    for (job *j = srv->jobs; j; j = j->next) {
        if (j->phase == JOB_PH_FINISHED || j->phase == JOB_PH_FINISHING || j->cancel_requested ||
            strcmp(j->key, key) || strcmp(j->spec.task, spec->task))
            continue;
        job_spec_free(spec);
        srv->submits_coalesced++;
        j->interest++;
        p->coalesced = 1;
        conn_park(c, p);
        if (j->phase == JOB_PH_ACCEPTING) {
            p->job_next = j->waiters;
            j->waiters = p;
        } else {
            jobs_reply_submitted(p, j);
            free(p);
        }
        return;
    }
    /* A full queue refuses new work, not a cache hit (§4.5): without recompute the cache is
     * still asked, off the loop, and only a miss is refused. */
    char refusal[192] = "";
    if (srv->n_unfinished >= srv->cfg->max_jobs)
        snprintf(refusal, sizeof refusal, "job queue full: %d unfinished jobs (--max-jobs %d)",
                 srv->n_unfinished, srv->cfg->max_jobs);
    else
        tenant_queue_full(srv, c->tenant, refusal, sizeof refusal);
    if (refusal[0] && spec->recompute) {
        job_spec_free(spec);
        free(p);
        conn_reply_error(c, msgid, ZMIX_ELIMIT, refusal);
        return;
    }
    job *j = jobs_new(srv);
    if (!j) {
        job_spec_free(spec);
        free(p);
        conn_reply_error(c, msgid, ZMIX_ENOMEM, "submit: out of memory");
        return;
    }
    j->spec = *spec;
    memset(spec, 0, sizeof *spec);
    j->opts = opts;
    memcpy(j->key, key, sizeof key);
    j->state = JOB_QUEUED;
    snprintf(j->refusal, sizeof j->refusal, "%s", refusal);
    j->submit_ms = server_wall_ms();
    job_set_phase(j, JOB_PH_ACCEPTING);
    conn_park(c, p);
    p->job_next = j->waiters;
    j->waiters = p;
    if (job_io_accept(j) != 0) {
        zmix_error e;
        zmix_error_set(&e, ZMIX_ENOMEM, "submit: out of memory");
        jobs_accepted(j, e.code, &e, 0, NULL);
    }
}

int jobs_cancel(server *srv, job *j, int withdraw_only, zmix_error *err)
{
    SERVER_ON_LOOP(srv);
    if (j->phase == JOB_PH_FINISHED)
        return zmix_error_set(err, ZMIX_ESTATE, "job %llu is already %s", (unsigned long long)j->id,
                              job_state_name(j->state));
    /* The end state is being written (result saved, record updated): a cancel cannot change
     * it any more, so say so rather than answer "cancelling" for a job that ends done. */
    if (j->phase == JOB_PH_FINISHING)
        return zmix_error_set(
            err, ZMIX_ESTATE, "job %llu is already finishing (%s)", (unsigned long long)j->id,
            j->cancel_requested ? "being cancelled" : "its end state is being saved");
    if (j->cancel_requested) return 0;
    if (withdraw_only && j->interest > 1) {
        j->interest--;
        return 1;
    }
    j->cancel_requested = 1;
    if (j->phase == JOB_PH_QUEUED) {
        finish(j, JOB_CANCELLED, "cancelled by a client");
    } else if (j->phase == JOB_PH_SCORING) {
        atomic_store_explicit(&j->stop, 1, memory_order_relaxed);
        for (pool_item *w = pool_withdraw(srv->pool, &j->queue); w; w = w->next) j->items_out--;
        if (j->items_out == 0) step_scored(j);
    }
    /* accepting, starting or saving: the step's completion looks at cancel_requested */
    return 0;
}

/* ---- In a fleet: leases claimed and lost ------------------------------------------------ */

void jobs_drop(job *j)
{
    server *srv = j->srv;
    ZLOG_INFO(srv->log, "job %llu: dropped here (another member drives it)",
              (unsigned long long)j->id);
    srv->fleet_lost++; /* whether the keeper or a fenced write found out first */
    if (srv->fleet_jobs) fleet_jobs_release(srv->fleet_jobs, j->id);
    while (j->waiters) {
        parked *p = j->waiters;
        j->waiters = p->job_next;
        p->job_next = NULL;
        if (p->conn && (p->kind == PARK_WAIT || p->kind == PARK_CANCEL)) {
            remote_park(srv, p, j->id);
        } else {
            conn_unpark(p);
            free(p);
        }
    }
    /* Out of the lifecycle the way a job leaves it: through finishing (its end is written by
     * the member that drives it now). */
    if (j->phase == JOB_PH_QUEUED || job_phase_counts_running(j->phase))
        job_set_phase(j, JOB_PH_FINISHING);
    job_destroy(j);
    jobs_schedule(srv);
}

void jobs_abandon(job *j)
{
    server *srv = j->srv;
    if (j->phase == JOB_PH_FINISHED || j->abandoned) return;
    j->abandoned = 1;
    if (srv->fleet_jobs) fleet_jobs_release(srv->fleet_jobs, j->id);
    switch (j->phase) {
    case JOB_PH_SCORING:
        atomic_store_explicit(&j->stop, 1, memory_order_relaxed);
        for (pool_item *w = pool_withdraw(srv->pool, &j->queue); w; w = w->next) j->items_out--;
        if (j->items_out == 0) step_scored(j);
        return;
    case JOB_PH_ACCEPTING:
    case JOB_PH_STARTING:
    case JOB_PH_SAVING:
    case JOB_PH_FINISHING: return; /* the op's completion drops it (or, finishing, ends it) */
    default: jobs_drop(j); return;
    }
}

void jobs_on_fleet_async(uv_async_t *h)
{
    server *srv = h->data;
    if (!srv->fleet_jobs) return;
    fleet_job_event *events = fleet_jobs_take_events(srv->fleet_jobs);
    for (fleet_job_event *e = events; e; e = e->next) {
        job *j = jobs_find(srv, e->id);
        zmix_error err = {0};
        switch (e->kind) {
        case FLEET_JOB_CLAIMED:
            if (srv->shutting_down) {
                fleet_jobs_release(srv->fleet_jobs, e->id);
            } else if (j && j->phase != JOB_PH_FINISHED) {
                /* Lost and claimed back before its step returned: the run here goes on (it is
                 * the one the checkpoint would resume, deterministically), under the new
                 * epoch. */
                j->epoch = e->epoch;
                j->abandoned = 0;
            } else {
                if (j) job_destroy(j);
                if (jobs_resume_claimed(srv, &e->rec, e->epoch, e->cancel_requested) != 0)
                    fleet_jobs_release(srv->fleet_jobs, e->id);
                else
                    srv->fleet_claimed++;
            }
            break;
        case FLEET_JOB_LOST:
            if (j) jobs_abandon(j);
            break;
        case FLEET_JOB_CANCEL:
            if (j && jobs_cancel(srv, j, 0, &err) < 0)
                ZLOG_INFO(srv->log, "job %llu: cancel from another member: %s",
                          (unsigned long long)e->id, err.msg);
            break;
        }
    }
    fleet_job_events_free(events);
}

void jobs_begin_shutdown(server *srv)
{
    for (job *j = srv->jobs; j; j = j->next) {
        if (j->phase == JOB_PH_SCORING) {
            atomic_store_explicit(&j->stop, 1, memory_order_relaxed);
            for (pool_item *w = pool_withdraw(srv->pool, &j->queue); w; w = w->next) j->items_out--;
            if (j->items_out == 0) step_scored(j);
        }
        free_waiters(j);
    }
}
