/*
 * A job's blocking persistence steps: accept (task cache lookup, then the job record),
 * start, checkpoint, finish (result and end state). Each step is an op whose work half runs
 * on libuv's threadpool — fsync must never run on the loop — and whose completion runs on
 * the loop and hands the outcome to jobs.c. Threads are named on each function.
 *
 * While a job's op is in flight the job is in a phase (accepting, starting, saving,
 * finishing) in which nothing else touches its session, so the work half may read it.
 */
#include <cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/server.h"
#include "fleet/fleet_tasks.h"

/* Threadpool. */
static void io_work_cb(uv_work_t *req)
{
    io_op *op = req->data;
    op->work(op);
}

/* Loop. */
static void io_after_cb(uv_work_t *req, int status)
{
    io_op *op = req->data;
    op->srv->io_inflight--;
    op->after(op);
    (void)status;
}

/* Loop: queues an op. */
void io_submit(server *srv, io_op *op)
{
    op->srv = srv;
    op->req.data = op;
    srv->io_inflight++;
    if (uv_queue_work(srv->loop, &op->req, io_work_cb, io_after_cb) != 0) {
        /* cannot happen with a valid loop; run inline rather than lose the step */
        op->work(op);
        srv->io_inflight--;
        op->after(op);
    }
}

void io_submit_parked(server *srv, conn *c, uint32_t msgid, io_op *op, parked **slot,
                      void (*work)(io_op *), void (*after)(io_op *))
{
    parked *p = op ? calloc(1, sizeof *p) : NULL;
    if (!p) {
        free(op);
        conn_reply_error(c, msgid, ZMIX_ENOMEM, "out of memory");
        return;
    }
    p->msgid = msgid;
    p->kind = PARK_IO;
    conn_park(c, p);
    *slot = p;
    op->work = work;
    op->after = after;
    io_submit(srv, op);
}

/* Every op of a job: the job, and the outcome of the work half. Ops of a kind with more to
 * carry embed it first. */
typedef struct job_op {
    io_op base;
    job *j;
    int rc;
    zmix_error err;
    uint8_t *status; /* checkpoint, in a fleet: the status published with it (owned) */
    size_t status_len;
} job_op;

/* In a fleet, where the job store is Redis (fleet_jobs.h), a write refused because another
 * member drives the job now. */
static int fenced(const server *srv, int rc)
{
    return srv->fleet_jobs && rc == ZMIX_ESTATE;
}

/* ---- accept ---------------------------------------------------------------------------- */

typedef struct accept_op {
    job_op jo;
    int cache_hit;
    uint64_t id, epoch;
    fleet_job_joined joined; /* in a fleet: another member's job for the same inputs */
    task_result cached;
} accept_op;

/* Threadpool: a cached result for the same inputs answers the submit; else the job is made
 * durable before it is acknowledged. */
static void accept_work(io_op *o)
{
    accept_op *op = (accept_op *)o;
    job *j = op->jo.j;
    server *srv = o->srv;
    if (!j->spec.recompute && results_cached(srv, j->spec.task, &op->cached, NULL) == 0) {
        if (!strcmp(op->cached.key, j->key)) {
            op->cache_hit = 1;
            return;
        }
        task_result_free(&op->cached);
    }
    if (j->refusal[0]) {
        op->jo.rc =
            zmix_error_set(&op->jo.err, ZMIX_ELIMIT,
                           "%s, and the task has no cached result for these inputs", j->refusal);
        return;
    }
    job_record rec;
    memset(&rec, 0, sizeof rec);
    snprintf(rec.task, sizeof rec.task, "%s", j->spec.task);
    snprintf(rec.key, sizeof rec.key, "%s", j->key);
    rec.priority = j->spec.priority;
    rec.submit_ms = j->submit_ms;
    rec.examples = j->spec.examples;
    job_spec_settings_bytes(&j->spec, &rec.settings, &rec.settings_len);
    if (srv->fleet_jobs)
        op->jo.rc = fleet_jobs_create(srv->fleet_jobs, &rec, &op->epoch, &op->joined, &op->jo.err);
    else
        op->jo.rc = job_store_create(srv->store, &rec, &op->jo.err);
    op->id = rec.id; /* j->id is set on the loop, which reads it at any time */
    free(rec.settings);
}

/* Loop. */
static void accept_after(io_op *o)
{
    accept_op *op = (accept_op *)o;
    op->jo.j->epoch = op->epoch;
    if (op->jo.rc == 0 && op->joined.id) {
        jobs_joined(op->jo.j, op->joined.id, op->joined.state);
        free(op);
        return;
    }
    jobs_accepted(op->jo.j, op->jo.rc, &op->jo.err, op->id, op->cache_hit ? &op->cached : NULL);
    if (op->cache_hit) task_result_free(&op->cached);
    free(op);
}

/* ---- start ----------------------------------------------------------------------------- */

/* Threadpool. */
static void start_work(io_op *o)
{
    job_op *op = (job_op *)o;
    if (o->srv->fleet_jobs)
        op->rc = fleet_jobs_set_state(o->srv->fleet_jobs, op->j->id, op->j->epoch, JOB_RUNNING,
                                      NULL, op->j->start_ms, &op->err);
    else
        op->rc = job_store_set_state(o->srv->store, op->j->id, JOB_RUNNING, NULL, op->j->start_ms,
                                     &op->err);
}

/* Loop. */
static void start_after(io_op *o)
{
    job_op *op = (job_op *)o;
    if (op->rc != 0)
        ZLOG_WARN(o->srv->log, "job %llu: %s", (unsigned long long)op->j->id, op->err.msg);
    if (fenced(o->srv, op->rc)) op->j->abandoned = 1;
    jobs_started(op->j);
    free(op);
}

/* ---- checkpoint ------------------------------------------------------------------------ */

/* Threadpool: the session is serialised here, not on the loop: with a long history it is
 * megabytes. The store's generation counts finished steps (baselines, then generations). */
static void checkpoint_work(io_op *o)
{
    job_op *op = (job_op *)o;
    job *j = op->j;
    uint8_t *data = NULL;
    size_t len = 0;
    op->rc = zmix_session_save(j->session, &data, &len, &op->err);
    int steps =
        zmix_session_generation(j->session) + (zmix_session_baselines(j->session, NULL, NULL) == 0);
    if (op->rc == 0 && o->srv->fleet_jobs)
        op->rc = fleet_jobs_checkpoint(o->srv->fleet_jobs, j->id, j->epoch, steps, data, len,
                                       op->status, op->status_len, &op->err);
    else if (op->rc == 0)
        op->rc = job_store_checkpoint(o->srv->store, j->id, steps, data, len, &op->err);
    free(data);
}

/* Loop. */
static void checkpoint_after(io_op *o)
{
    job_op *op = (job_op *)o;
    if (op->rc != 0)
        ZLOG_WARN(o->srv->log, "job %llu: checkpoint not saved: %s", (unsigned long long)op->j->id,
                  op->err.msg);
    if (fenced(o->srv, op->rc)) op->j->abandoned = 1;
    jobs_saved(op->j);
    free(op->status);
    free(op);
}

/* ---- finish ---------------------------------------------------------------------------- */

typedef struct finish_op {
    job_op jo;
    job_state state;
    char reason[JOB_REASON_MAX];
    job_summary summary;
    int put_rc;
    zmix_error put_err;
    int store_rc; /* writing the end state to the job store */
} finish_op;

/* The task cache's copy of a result: α and z′ as arrays, the document as bytes. */
static void task_result_of(const job *j, const zmix_adapt_result *r, const char *doc,
                           task_result *out, uint32_t *ranks, uint8_t **settings, size_t *slen)
{
    memset(out, 0, sizeof *out);
    snprintf(out->task, sizeof out->task, "%s", j->spec.task);
    snprintf(out->key, sizeof out->key, "%s", j->key);
    out->job_id = j->id;
    out->created_ms = server_wall_ms();
    out->score = r->best;
    out->base_score = r->base;
    out->n_experts = r->n_experts;
    out->expert_scores = r->experts;
    out->n_alpha = r->dim;
    out->alpha = r->alpha;
    out->n_matrices = r->n_matrices;
    out->matrix_names = r->matrix_names;
    for (int m = 0; m < r->n_matrices; m++) ranks[m] = (uint32_t)r->matrix_ranks[m];
    out->ranks = ranks;
    out->z = r->z;
    job_spec_settings_bytes(&j->spec, settings, slen);
    out->settings = *settings;
    out->settings_len = *slen;
    out->document = (uint8_t *)doc;
    out->document_len = doc ? strlen(doc) : 0;
}

/* Threadpool: the result document (with the whole history) goes into the job record, so
 * that status, jobs and history show the same after a restart; a finished search's result
 * also goes into the task cache. A result that could not be written stays in memory only,
 * and the job record then stays "running": after a crash the job resumes from its final
 * checkpoint and writes the (bit-identical) result again, instead of being remembered as
 * done with its result lost. */
static void finish_work(io_op *o)
{
    finish_op *op = (finish_op *)o;
    job *j = op->jo.j;
    server *srv = o->srv;
    zmix_adapt_result r;
    char *doc = NULL;
    int have = j->session && zmix_session_result(j->session, &r, &op->put_err) == 0;
    if (have) {
        job_summary_of_result(&r, &op->summary);
        cJSON *json = zmix_adapt_result_to_json(&r, 0);
        doc = json ? cJSON_PrintUnformatted(json) : NULL;
        cJSON_Delete(json);
    }
    if (op->state == JOB_DONE && have) {
        task_result tr;
        uint32_t *ranks = calloc((size_t)r.n_matrices + 1, sizeof *ranks);
        uint8_t *settings = NULL;
        size_t slen = 0;
        if (!ranks) {
            op->put_rc = zmix_error_set(&op->put_err, ZMIX_ENOMEM, "out of memory");
        } else {
            task_result_of(j, &r, doc, &tr, ranks, &settings, &slen);
            op->put_rc = task_cache_put(srv->cache, &tr, &op->put_err);
            /* In a fleet the result is the fleet's: a job whose result is not in Redis is not
             * done, and is redone (by whichever member claims it). */
            if (op->put_rc == 0 && srv->fleet_jobs)
                op->put_rc = fleet_tasks_put(srv->fleet_jobs, &tr, &op->put_err);
        }
        free(ranks);
        free(settings);
    }
    if (have) zmix_adapt_result_free(&r);
    if (op->put_rc == 0) {
        zmix_error err;
        if (srv->fleet_jobs)
            op->store_rc =
                fleet_jobs_finish(srv->fleet_jobs, j->id, j->epoch, op->state, op->reason,
                                  j->end_ms, (const uint8_t *)doc, doc ? strlen(doc) : 0, &err);
        else
            op->store_rc = job_store_finish(srv->store, j->id, op->state, op->reason, j->end_ms,
                                            (const uint8_t *)doc, doc ? strlen(doc) : 0, &err);
        if (op->store_rc != 0)
            ZLOG_WARN(srv->log, "job %llu: job store: %s", (unsigned long long)j->id, err.msg);
    } else {
        op->store_rc = op->put_rc;
    }
    free(doc);
}

/* Loop. */
static void finish_after(io_op *o)
{
    finish_op *op = (finish_op *)o;
    op->jo.j->end_unsaved = op->store_rc != 0;
    /* In a fleet, an end not written to Redis is nobody's: the lease lapses and the job is
     * done again (deterministically the same) by the member that claims it. */
    if (o->srv->fleet_jobs && op->store_rc != 0)
        fleet_jobs_release(o->srv->fleet_jobs, op->jo.j->id);
    if (fenced(o->srv, op->store_rc)) {
        /* Another member drives the job now and writes its end: this run's is not the
         * job's. */
        job_summary_free(&op->summary);
        jobs_drop(op->jo.j);
        free(op);
        return;
    }
    jobs_finished(op->jo.j, op->state, op->reason, &op->summary, op->put_rc, &op->put_err);
    job_summary_free(&op->summary);
    free(op);
}

/* ---- Entry points (loop) --------------------------------------------------------------- */

/* A zeroed op of this size for the job, or NULL when out of memory. */
static void *new_job_op(job *j, size_t size, void (*work)(io_op *), void (*after)(io_op *))
{
    job_op *op = calloc(1, size);
    if (!op) return NULL;
    op->j = j;
    op->base.work = work;
    op->base.after = after;
    return op;
}

static int submit(job *j, void *op)
{
    if (!op) return ZMIX_ENOMEM;
    io_submit(j->srv, &((job_op *)op)->base);
    return 0;
}

int job_io_accept(job *j)
{
    return submit(j, new_job_op(j, sizeof(accept_op), accept_work, accept_after));
}

int job_io_start(job *j)
{
    return submit(j, new_job_op(j, sizeof(job_op), start_work, start_after));
}

int job_io_checkpoint(job *j)
{
    job_op *op = new_job_op(j, sizeof(job_op), checkpoint_work, checkpoint_after);
    /* Status is packed here, on the loop, which owns what it reads. */
    if (op && j->srv->fleet_jobs && jobs_status_bytes(j->srv, j, &op->status, &op->status_len))
        op->status = NULL;
    return submit(j, op);
}

int job_io_finish(job *j, job_state state, const char *reason)
{
    finish_op *op = new_job_op(j, sizeof(finish_op), finish_work, finish_after);
    if (op) {
        op->state = state;
        snprintf(op->reason, sizeof op->reason, "%s", reason ? reason : "");
    }
    return submit(j, op);
}

/* ---- The final status, in a fleet ------------------------------------------------------- */

typedef struct status_op {
    io_op base;
    uint64_t id, epoch;
    uint8_t *status;
    size_t len;
    int final;
    int rc;
    zmix_error err;
} status_op;

/* Threadpool. */
static void status_work(io_op *o)
{
    status_op *op = (status_op *)o;
    op->rc = fleet_jobs_publish_status(o->srv->fleet_jobs, op->id, op->epoch, op->status, op->len,
                                       op->final, &op->err);
}

/* Loop. */
static void status_after(io_op *o)
{
    status_op *op = (status_op *)o;
    if (op->rc != 0)
        ZLOG_WARN(o->srv->log, "job %llu: final status not published: %s",
                  (unsigned long long)op->id, op->err.msg);
    free(op->status);
    free(op);
}

/* Loop: the op copies what it needs, so the job may go away before it runs. */
int job_io_publish_status(job *j)
{
    status_op *op = calloc(1, sizeof *op);
    if (!op) return ZMIX_ENOMEM;
    op->id = j->id;
    op->epoch = j->epoch;
    op->final = j->phase == JOB_PH_FINISHED;
    if (jobs_status_bytes(j->srv, j, &op->status, &op->len) != 0) {
        free(op);
        return ZMIX_ENOMEM;
    }
    op->base.work = status_work;
    op->base.after = status_after;
    io_submit(j->srv, &op->base);
    return 0;
}
