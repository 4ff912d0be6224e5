/*
 * What jobs answer: submit acknowledgements, wait and status replies, progress notifications,
 * and the waiters parked on a job until it ends. Thread: the event loop, every function.
 */
#include <stdio.h>
#include <stdlib.h>

#include "daemon/server.h"

/* ---- Answers --------------------------------------------------------------------------- */

static void pack_reply(parked *p, void (*fill)(msgpack_packer *, const void *, const void *),
                       const void *a, const void *b)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    fill(&pk, a, b);
    parked_reply_result(p, &sb);
    msgpack_sbuffer_destroy(&sb);
}

static void fill_status(msgpack_packer *pk, const void *jv, const void *timed_out)
{
    const job *j = jv;
    rpc_map m;
    rpc_map_begin(&m);
    rpc_map_bool(&m, "timed_out", *(const int *)timed_out);
    jobs_pack_status(j->srv, j, rpc_map_key(&m, "status"));
    rpc_map_end(&m, pk);
}

static void fill_submitted(msgpack_packer *pk, const void *jv, const void *pv)
{
    const job *j = jv;
    const parked *p = pv;
    rpc_map m;
    rpc_map_begin(&m);
    rpc_map_u64(&m, "job", j->id);
    jobs_pack_task_name(&m, j->spec.task);
    rpc_map_str(&m, "state", job_state_name(j->state));
    rpc_map_bool(&m, "cached", 0);
    rpc_map_bool(&m, "coalesced", p->coalesced);
    rpc_map_end(&m, pk);
}

static void fill_cached(msgpack_packer *pk, const void *srvv, const void *rv)
{
    const task_result *r = rv;
    rpc_map m;
    rpc_map_begin(&m);
    rpc_map_u64(&m, "job", r->job_id);
    jobs_pack_task_name(&m, r->task);
    rpc_map_bool(&m, "cached", 1);
    jobs_pack_result((server *)srvv, r, 0, 0, rpc_map_key(&m, "result"));
    rpc_map_end(&m, pk);
}

static void fill_cancelled(msgpack_packer *pk, const void *jv, const void *unused)
{
    const job *j = jv;
    (void)unused;
    rpc_map m;
    rpc_map_begin(&m);
    rpc_map_u64(&m, "job", j->id);
    rpc_map_str(&m, "state", job_state_name(j->state));
    rpc_map_end(&m, pk);
}

static void reply_status(parked *p, const job *j, int timed_out)
{
    pack_reply(p, fill_status, j, &timed_out);
}

void jobs_notify_progress(server *srv, const job *j)
{
    int any = 0;
    for (conn *c = srv->conns; c && !any; c = c->next)
        any = c->subscribed && (!c->subscribed_job || c->subscribed_job == j->id) &&
              conn_sees_task(c, j->spec.task);
    if (!any) return;
    msgpack_sbuffer params;
    msgpack_sbuffer_init(&params);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &params, msgpack_sbuffer_write);
    jobs_pack_status(srv, j, &pk);
    msgpack_sbuffer out;
    msgpack_sbuffer_init(&out);
    rpc_pack_notify(&out, "progress", params.data, params.size);
    for (conn *c = srv->conns, *next; c; c = next) {
        next = c->next; /* conn_send may close c */
        if (c->subscribed && (!c->subscribed_job || c->subscribed_job == j->id) &&
            conn_sees_task(c, j->spec.task))
            conn_send(c, out.data, out.size);
    }
    msgpack_sbuffer_destroy(&out);
    msgpack_sbuffer_destroy(&params);
}

int jobs_status_bytes(server *srv, const job *j, uint8_t **out, size_t *len)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    jobs_pack_status(srv, j, &pk);
    *len = sb.size;
    *out = (uint8_t *)msgpack_sbuffer_release(&sb);
    return *out ? 0 : ZMIX_ENOMEM;
}

/* ---- Waiters --------------------------------------------------------------------------- */

/* A request parked on its connection until a job answers it; NULL (ENOMEM answered) when out
 * of memory. */
static parked *park(conn *c, uint32_t msgid, int kind, const char *method)
{
    parked *p = calloc(1, sizeof *p);
    if (!p) {
        char msg[64];
        snprintf(msg, sizeof msg, "%s: out of memory", method);
        conn_reply_error(c, msgid, ZMIX_ENOMEM, msg);
        return NULL;
    }
    p->msgid = msgid;
    p->kind = kind;
    conn_park(c, p);
    return p;
}

void jobs_add_waiter(server *srv, job *j, conn *c, uint32_t msgid, uint64_t timeout_ms)
{
    parked *p = park(c, msgid, PARK_WAIT, "wait");
    if (!p) return;
    p->deadline_ms = server_now_ms() + timeout_ms;
    if (j->phase == JOB_PH_FINISHED || timeout_ms == 0) {
        reply_status(p, j, j->phase != JOB_PH_FINISHED);
        free(p);
        return;
    }
    p->job_next = j->waiters;
    j->waiters = p;
    (void)srv;
}

void jobs_park_cancel(server *srv, job *j, conn *c, uint32_t msgid)
{
    /* Out of memory: the cancel is requested all the same; only its acknowledgement is lost. */
    parked *p = park(c, msgid, PARK_CANCEL, "cancel");
    if (!p) return;
    p->job_next = j->waiters;
    j->waiters = p;
    if (j->phase == JOB_PH_FINISHED) jobs_answer_waiters(j); /* its end op could not be queued */
    (void)srv;
}

void jobs_sweep_waiters(server *srv, uint64_t now_ms)
{
    for (job *j = srv->jobs; j; j = j->next) {
        parked **pp = &j->waiters;
        while (*pp) {
            parked *p = *pp;
            int gone = p->conn == NULL;
            if (gone || (p->kind == PARK_WAIT && now_ms >= p->deadline_ms)) {
                *pp = p->job_next;
                if (!gone) reply_status(p, j, 1);
                free(p);
            } else {
                pp = &p->job_next;
            }
        }
    }
}

/* Answers every waiter of a job: submit acks with the job, waits with its status. */
void jobs_answer_waiters(job *j)
{
    while (j->waiters) {
        parked *p = j->waiters;
        j->waiters = p->job_next;
        if (p->kind == PARK_SUBMIT)
            jobs_reply_submitted(p, j);
        else if (p->kind == PARK_CANCEL && j->end_unsaved)
            parked_reply_error(p, ZMIX_EIO,
                               "cancel: the job stopped, but its end state could not be written "
                               "to disk: it may run again after a restart");
        else if (p->kind == PARK_CANCEL)
            pack_reply(p, fill_cancelled, j, NULL);
        else
            reply_status(p, j, 0);
        free(p);
    }
}

void jobs_reply_submitted(parked *p, const job *j)
{
    pack_reply(p, fill_submitted, j, p);
}

void jobs_reply_cached(parked *p, server *srv, const task_result *r)
{
    pack_reply(p, fill_cached, srv, r);
}
