/*
 * Reads for clients that need the disk: get (a task's cached result), evict (remove it), and
 * the history of a finished job (from its record in the job store). Each is an op whose work
 * half runs on libuv's threadpool and whose answer is packed on the loop; the request is
 * parked on its connection meanwhile, and dropped if the connection closes first.
 */
#include <cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/server.h"
#include "fleet/fleet_tasks.h"

typedef struct read_op {
    io_op base;
    parked *p;
    int rc;
    zmix_error err;
    char task[TASK_NAME_MAX + 1];
    int with_vectors, with_document;
    task_result res;
    uint64_t job_id;
    zmix_adapt_result history;
} read_op;

/* Loop: parks the request and queues the op; answers ENOMEM itself. */
static void submit_read(server *srv, conn *c, uint32_t msgid, read_op *op, void (*work)(io_op *),
                        void (*after)(io_op *))
{
    io_submit_parked(srv, c, msgid, op ? &op->base : NULL, op ? &op->p : NULL, work, after);
}

/* Loop: sends what the packer wrote, or the op's error. */
static void answer(read_op *op, msgpack_sbuffer *sb)
{
    /* A file corrupted at rest is an I/O failure to the client: EFORMAT is the protocol's
     * code for bytes on the wire that are not MessagePack (PROTOCOL.md §3). */
    if (op->rc == ZMIX_EFORMAT) op->rc = ZMIX_EIO;
    if (op->rc != 0)
        parked_reply_error(op->p, op->rc, op->err.msg);
    else
        parked_reply_result(op->p, sb);
    free(op->p);
    free(op);
}

/* ---- get ------------------------------------------------------------------------------- */

/* Threadpool. In a fleet the result in Redis is the task's: this member's copy is served only
 * while it is that result (same key and creation time); otherwise the fleet's is fetched and
 * kept here, and a copy of a task the fleet no longer has is dropped. */
int results_cached(server *srv, const char *task, task_result *out, zmix_error *err)
{
    if (!srv->fleet_jobs) return task_cache_get(srv->cache, task, out, err);
    char key[TASK_KEY_MAX + 1];
    int64_t created = 0;
    int rc = fleet_tasks_version(srv->fleet_jobs, task, key, &created, err);
    if (rc == ZMIX_ENOTFOUND) {
        task_cache_evict(srv->cache, task, NULL); /* evicted through another member */
        return rc;
    }
    if (rc) return rc;
    if (task_cache_get_if_key(srv->cache, task, key, out, NULL) == 0) {
        if (out->created_ms == created) return 0;
        task_result_free(out);
    }
    rc = fleet_tasks_get(srv->fleet_jobs, task, out, err);
    if (rc == 0) {
        zmix_error put_err = {0};
        if (task_cache_put(srv->cache, out, &put_err) != 0)
            ZLOG_WARN(srv->log, "task %s: the fleet's result not kept here: %s", task, put_err.msg);
    }
    return rc;
}

static void get_work(io_op *o) /* threadpool */
{
    read_op *op = (read_op *)o;
    op->rc = results_cached(o->srv, op->task, &op->res, &op->err);
}

static void get_after(io_op *o) /* loop */
{
    read_op *op = (read_op *)o;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    if (op->rc == 0) {
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        jobs_pack_result(o->srv, &op->res, op->with_vectors, op->with_document, &pk);
        task_result_free(&op->res);
    } else {
        zmix_error_prefix(&op->err, "get"); /* as every method's refusal starts */
    }
    answer(op, &sb);
    msgpack_sbuffer_destroy(&sb);
}

void results_get(server *srv, conn *c, uint32_t msgid, const char *task, int with_vectors,
                 int with_document)
{
    read_op *op = calloc(1, sizeof *op);
    if (op) {
        snprintf(op->task, sizeof op->task, "%s", task);
        op->with_vectors = with_vectors;
        op->with_document = with_document;
    }
    submit_read(srv, c, msgid, op, get_work, get_after);
}

/* ---- evict ----------------------------------------------------------------------------- */

static void evict_work(io_op *o) /* threadpool */
{
    read_op *op = (read_op *)o;
    op->rc = task_cache_evict(o->srv->cache, op->task, &op->err);
    if (o->srv->fleet_jobs) { /* the fleet's copy; the other members drop theirs when asked */
        zmix_error err = {0};
        int rc = fleet_tasks_evict(o->srv->fleet_jobs, op->task, &err);
        if (rc != ZMIX_ENOTFOUND && (rc != 0 || op->rc == ZMIX_ENOTFOUND)) {
            op->rc = rc;
            op->err = err;
        }
    }
}

static void evict_after(io_op *o) /* loop */
{
    read_op *op = (read_op *)o;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    rpc_map m;
    rpc_map_begin(&m);
    char tenant_name[TENANT_NAME_MAX + 1];
    task_name_tenant(op->task, tenant_name);
    rpc_map_str(&m, "evicted", task_name_local(op->task));
    if (tenant_name[0]) rpc_map_str(&m, "tenant", tenant_name);
    rpc_map_end(&m, &pk);
    if (op->rc) zmix_error_prefix(&op->err, "evict");
    answer(op, &sb);
    msgpack_sbuffer_destroy(&sb);
}

void results_evict(server *srv, conn *c, uint32_t msgid, const char *task)
{
    read_op *op = calloc(1, sizeof *op);
    if (op) snprintf(op->task, sizeof op->task, "%s", task);
    submit_read(srv, c, msgid, op, evict_work, evict_after);
}

/* ---- history --------------------------------------------------------------------------- */

/* Threadpool: a finished job's history is the one in the result document its record keeps. */
static void history_work(io_op *o)
{
    read_op *op = (read_op *)o;
    job_record rec;
    if (o->srv->fleet_jobs)
        op->rc = fleet_jobs_get(o->srv->fleet_jobs, op->job_id, &rec, &op->err);
    else
        op->rc = job_store_get(o->srv->store, op->job_id, &rec, &op->err);
    if (op->rc) return;
    snprintf(op->task, sizeof op->task, "%s", rec.task);
    cJSON *doc =
        rec.result_len ? cJSON_ParseWithLength((const char *)rec.result, rec.result_len) : NULL;
    if (!doc && !job_state_finished(rec.state))
        op->rc = zmix_error_set(&op->err, ZMIX_ESTATE,
                                "history: job %llu is %s on another member of the fleet: its "
                                "history is read there until it ends",
                                (unsigned long long)op->job_id, job_state_name(rec.state));
    else if (!doc)
        op->rc = zmix_error_set(&op->err, ZMIX_ESTATE,
                                "history: job %llu ended without a search history (before its "
                                "search started, or its record predates histories on disk)",
                                (unsigned long long)op->job_id);
    else if ((op->rc = zmix_adapt_result_from_json(doc, &op->history, &op->err)) != 0)
        zmix_error_prefix(&op->err, "history: job %llu", (unsigned long long)op->job_id);
    cJSON_Delete(doc);
    job_record_free(&rec);
}

static void history_after(io_op *o) /* loop */
{
    read_op *op = (read_op *)o;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    /* Another tenant's job is answered exactly as a job that does not exist. */
    if (op->p->conn && (op->rc == 0 || op->rc == ZMIX_ESTATE) &&
        !conn_sees_task(op->p->conn, op->task)) {
        if (op->rc == 0) zmix_adapt_result_free(&op->history);
        op->rc = zmix_error_set(&op->err, ZMIX_ENOTFOUND, "history: no job %llu",
                                (unsigned long long)op->job_id);
    }
    if (op->rc == ZMIX_ENOTFOUND)
        zmix_error_set(&op->err, ZMIX_ENOTFOUND, "history: no job %llu",
                       (unsigned long long)op->job_id);
    if (op->rc == 0) {
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        jobs_pack_history(op->job_id, &op->history, &pk);
        zmix_adapt_result_free(&op->history);
    }
    answer(op, &sb);
    msgpack_sbuffer_destroy(&sb);
}

void results_history_remote(server *srv, conn *c, uint32_t msgid, uint64_t id)
{
    read_op *op = calloc(1, sizeof *op);
    if (op) op->job_id = id;
    submit_read(srv, c, msgid, op, history_work, history_after);
}

void results_history(server *srv, conn *c, uint32_t msgid, job *j)
{
    if (j->session) { /* running: straight from the session */
        zmix_adapt_result r;
        zmix_error err = {0};
        if (zmix_session_result(j->session, &r, &err) != 0) {
            conn_reply_error(c, msgid, err.code, err.msg);
            return;
        }
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        jobs_pack_history(j->id, &r, &pk);
        conn_reply_result(c, msgid, &sb);
        msgpack_sbuffer_destroy(&sb);
        zmix_adapt_result_free(&r);
        return;
    }
    if (j->phase != JOB_PH_FINISHED) {
        char msg[128];
        snprintf(msg, sizeof msg, "history: job %llu has not started its search yet",
                 (unsigned long long)j->id);
        conn_reply_error(c, msgid, ZMIX_ESTATE, msg);
        return;
    }
    read_op *op = calloc(1, sizeof *op);
    if (op) op->job_id = j->id;
    submit_read(srv, c, msgid, op, history_work, history_after);
}

/* ---- tasks, in a fleet ----------------------------------------------------------------- */

typedef struct tasks_op {
    io_op base;
    parked *p;
    int rc;
    zmix_error err;
    task_cache_info *list;
    size_t n;
} tasks_op;

static void tasks_work(io_op *o) /* threadpool */
{
    tasks_op *op = (tasks_op *)o;
    op->rc = fleet_tasks_list(o->srv->fleet_jobs, &op->list, &op->n, &op->err);
}

static void tasks_after(io_op *o) /* loop */
{
    tasks_op *op = (tasks_op *)o;
    if (op->rc != 0) {
        parked_reply_error(op->p, op->rc, op->err.msg);
    } else if (op->p->conn) {
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        jobs_pack_tasks(o->srv, op->p->conn, op->list, op->n, &pk);
        parked_reply_result(op->p, &sb);
        msgpack_sbuffer_destroy(&sb);
    }
    free(op->list);
    free(op->p);
    free(op);
}

void results_tasks_fleet(server *srv, conn *c, uint32_t msgid)
{
    tasks_op *op = calloc(1, sizeof *op);
    io_submit_parked(srv, c, msgid, op ? &op->base : NULL, op ? &op->p : NULL, tasks_work,
                     tasks_after);
}
