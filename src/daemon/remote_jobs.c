/*
 * In a fleet, status, wait and cancel of a job this member does not drive: answered from what
 * the job's driver publishes in Redis (its status map after every generation and at the end,
 * fleet_jobs.h), so that a client gets the same answers from every member. Waits and cancels
 * are parked on srv->remote_waits and answered by a poll of Redis from the tick, a few times
 * a second, when the job has ended (or the wait has timed out).
 *
 * Threads: the loop, except the work halves of the ops (libuv's threadpool), which only read
 * Redis into the op.
 */
#include <stdlib.h>
#include <string.h>

#include "daemon/server.h"

#define REMOTE_POLL_MS  250
#define REMOTE_POLL_MAX 64 /* jobs read per poll */

/* ---- Replies ----------------------------------------------------------------------------- */

/* The job's status as published, or, before its driver published any, the little every
 * member knows: id, task and state. Into m under key. */
static void pack_status_value(rpc_map *m, const char *key, uint64_t id, const fleet_job_peek *pk)
{
    msgpack_packer *out = rpc_map_key(m, key);
    if (pk->status) {
        msgpack_sbuffer_write(&m->body, (const char *)pk->status, pk->status_len);
        return;
    }
    rpc_map s;
    rpc_map_begin(&s);
    rpc_map_u64(&s, "job", id);
    jobs_pack_task_name(&s, pk->task);
    rpc_map_str(&s, "state", job_state_name(pk->state));
    rpc_map_end(&s, out);
}

static void reply_map_to(parked *p, rpc_map *m)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    rpc_map_end(m, &pk);
    parked_reply_result(p, &sb);
    msgpack_sbuffer_destroy(&sb);
}

static void reply_raw(parked *p, const uint8_t *data, size_t len)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_sbuffer_write(&sb, (const char *)data, len);
    parked_reply_result(p, &sb);
    msgpack_sbuffer_destroy(&sb);
}

static void reply_not_found(parked *p, const char *method, uint64_t id)
{
    char msg[96];
    snprintf(msg, sizeof msg, "%s: no job %llu", method, (unsigned long long)id);
    parked_reply_error(p, ZMIX_ENOTFOUND, msg);
}

/* Whether p's connection may see the job (another tenant's job does not exist for it). */
static int visible(const parked *p, const fleet_job_peek *pk)
{
    return p->conn && conn_sees_task(p->conn, pk->task);
}

/* ---- One job read: status and cancel ----------------------------------------------------- */

typedef struct peek_op {
    io_op base;
    parked *p;
    uint64_t id;
    int cancel; /* ask the driver to cancel, once the job is found visible */
    int rc;
    zmix_error err;
    fleet_job_peek peek;
} peek_op;

static void peek_work(io_op *o) /* threadpool */
{
    peek_op *op = (peek_op *)o;
    op->rc = fleet_jobs_peek(o->srv->fleet_jobs, op->id, &op->peek, &op->err);
    if (op->rc == 0 && op->cancel) {
        op->rc = fleet_jobs_request_cancel(o->srv->fleet_jobs, op->id, &op->err);
        if (op->rc == ZMIX_ESTATE) op->rc = 0; /* ended meanwhile: answered with its state */
    }
}

static void peek_after(io_op *o) /* loop */
{
    peek_op *op = (peek_op *)o;
    parked *p = op->p;
    server *srv = o->srv;
    const char *method = op->cancel ? "cancel" : "status";
    if (!p->conn) {
        free(p);
    } else if (op->rc == ZMIX_ENOTFOUND || (op->rc == 0 && !visible(p, &op->peek))) {
        reply_not_found(p, method, op->id);
        free(p);
    } else if (op->rc != 0) {
        parked_reply_error(p, op->rc, op->err.msg);
        free(p);
    } else if (!op->cancel) {
        if (op->peek.status) {
            reply_raw(p, op->peek.status, op->peek.status_len);
        } else {
            rpc_map m;
            rpc_map_begin(&m);
            rpc_map_u64(&m, "job", op->id);
            jobs_pack_task_name(&m, op->peek.task);
            rpc_map_str(&m, "state", job_state_name(op->peek.state));
            reply_map_to(p, &m);
        }
        free(p);
    } else {
        /* Answered once the end state is in Redis, as a local cancel is once it is on disk. */
        p->kind = PARK_CANCEL;
        remote_park(srv, p, op->id);
    }
    fleet_job_peek_free(&op->peek);
    free(op);
}

static void submit_peek(server *srv, conn *c, uint32_t msgid, uint64_t id, int cancel)
{
    peek_op *op = calloc(1, sizeof *op);
    if (op) {
        op->id = id;
        op->cancel = cancel;
    }
    io_submit_parked(srv, c, msgid, op ? &op->base : NULL, op ? &op->p : NULL, peek_work,
                     peek_after);
}

void remote_status(server *srv, conn *c, uint32_t msgid, uint64_t id)
{
    submit_peek(srv, c, msgid, id, 0);
}

void remote_cancel(server *srv, conn *c, uint32_t msgid, uint64_t id)
{
    submit_peek(srv, c, msgid, id, 1);
}

/* ---- Waits, answered by the poll ---------------------------------------------------------- */

void remote_park(server *srv, parked *p, uint64_t id)
{
    p->job_id = id;
    p->job_next = srv->remote_waits;
    srv->remote_waits = p;
    srv->remote_polled_ms = 0; /* look at once */
}

void remote_wait(server *srv, conn *c, uint32_t msgid, uint64_t id, uint64_t timeout_ms)
{
    parked *p = calloc(1, sizeof *p);
    if (!p) {
        conn_reply_error(c, msgid, ZMIX_ENOMEM, "wait: out of memory");
        return;
    }
    p->msgid = msgid;
    p->kind = PARK_WAIT;
    p->deadline_ms = server_now_ms() + timeout_ms;
    conn_park(c, p);
    remote_park(srv, p, id);
}

typedef struct poll_op {
    io_op base;
    int n;
    uint64_t ids[REMOTE_POLL_MAX];
    int rc[REMOTE_POLL_MAX];
    zmix_error err[REMOTE_POLL_MAX];
    fleet_job_peek peek[REMOTE_POLL_MAX];
} poll_op;

static void poll_work(io_op *o) /* threadpool */
{
    poll_op *op = (poll_op *)o;
    for (int i = 0; i < op->n; i++)
        op->rc[i] = fleet_jobs_peek(o->srv->fleet_jobs, op->ids[i], &op->peek[i], &op->err[i]);
}

/* Answers p if its job has ended, its wait timed out, or the job is gone: 1 when answered. */
static int settle(parked *p, const poll_op *op, int i, uint64_t now_ms)
{
    const char *method = p->kind == PARK_CANCEL ? "cancel" : "wait";
    if (op->rc[i] == ZMIX_ENOTFOUND || (op->rc[i] == 0 && !visible(p, &op->peek[i]))) {
        reply_not_found(p, method, p->job_id);
        return 1;
    }
    if (op->rc[i] != 0) return 0; /* Redis trouble: asked again at the next poll */
    const fleet_job_peek *pk = &op->peek[i];
    int ended = job_state_finished(pk->state) && pk->final;
    if (p->kind == PARK_CANCEL) {
        if (!job_state_finished(pk->state)) return 0;
        rpc_map m;
        rpc_map_begin(&m);
        rpc_map_u64(&m, "job", p->job_id);
        rpc_map_str(&m, "state", job_state_name(pk->state));
        reply_map_to(p, &m);
        return 1;
    }
    if (!ended && now_ms < p->deadline_ms) return 0;
    rpc_map m;
    rpc_map_begin(&m);
    rpc_map_bool(&m, "timed_out", !ended);
    pack_status_value(&m, "status", p->job_id, pk);
    reply_map_to(p, &m);
    return 1;
}

static void poll_after(io_op *o) /* loop */
{
    poll_op *op = (poll_op *)o;
    server *srv = o->srv;
    srv->remote_poll_inflight = 0;
    uint64_t now = server_now_ms();
    parked **pp = &srv->remote_waits;
    while (*pp) {
        parked *p = *pp;
        int i = 0;
        while (i < op->n && op->ids[i] != p->job_id) i++;
        int done = !p->conn || (i < op->n && settle(p, op, i, now));
        if (done) {
            *pp = p->job_next;
            free(p);
        } else {
            pp = &p->job_next;
        }
    }
    for (int i = 0; i < op->n; i++) fleet_job_peek_free(&op->peek[i]);
    free(op);
}

void remote_poll(server *srv, uint64_t now_ms)
{
    if (!srv->remote_waits || srv->remote_poll_inflight || !srv->fleet_jobs) return;
    if (now_ms - srv->remote_polled_ms < REMOTE_POLL_MS) return;
    poll_op *op = calloc(1, sizeof *op);
    if (!op) return;
    for (parked *p = srv->remote_waits; p && op->n < REMOTE_POLL_MAX; p = p->job_next) {
        int seen = 0;
        for (int i = 0; i < op->n && !seen; i++) seen = op->ids[i] == p->job_id;
        if (!seen) op->ids[op->n++] = p->job_id;
    }
    srv->remote_polled_ms = now_ms;
    srv->remote_poll_inflight = 1;
    op->base.work = poll_work;
    op->base.after = poll_after;
    io_submit(srv, &op->base);
}
