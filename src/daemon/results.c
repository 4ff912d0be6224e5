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
    parked *p = op ? calloc(1, sizeof *p) : NULL;
    if (!p) {
        free(op);
        conn_reply_error(c, msgid, ZMIX_ENOMEM, "out of memory");
        return;
    }
    p->msgid = msgid;
    p->kind = PARK_IO;
    conn_park(c, p);
    op->p = p;
    op->base.work = work;
    op->base.after = after;
    io_submit(srv, &op->base);
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

static void get_work(io_op *o) /* threadpool */
{
    read_op *op = (read_op *)o;
    op->rc = task_cache_get(o->srv->cache, op->task, &op->res, &op->err);
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
    cJSON *doc =
        rec.result_len ? cJSON_ParseWithLength((const char *)rec.result, rec.result_len) : NULL;
    if (!doc)
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
    if (op->rc == 0) {
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        jobs_pack_history(op->job_id, &op->history, &pk);
        zmix_adapt_result_free(&op->history);
    }
    answer(op, &sb);
    msgpack_sbuffer_destroy(&sb);
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
