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

#define REMOTE_POLL_MS        250
#define REMOTE_POLL_MAX       64 /* jobs read per poll */
#define REMOTE_FINAL_GRACE_MS 2000

/* ---- Replies ----------------------------------------------------------------------------- */

/* The job's status map into out: as its driver published it last, but with the id, task and
 * state Redis holds (the end is written a moment before the final status); before its driver
 * published any, only those. With pick (a NULL-terminated list), only the fields named: the
 * brief jobs lists. */
static void pack_status(msgpack_packer *out, uint64_t id, const fleet_job_peek *peek,
                        const char *const *pick)
{
    static const char *const from_redis[] = {"job", "task", "tenant", "state", NULL};
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    int ok = peek->status &&
             msgpack_unpack_next(&u, (const char *)peek->status, peek->status_len, NULL) ==
                 MSGPACK_UNPACK_SUCCESS &&
             u.data.type == MSGPACK_OBJECT_MAP;
    rpc_map m;
    rpc_map_begin(&m);
    rpc_map_u64(&m, "job", id);
    jobs_pack_task_name(&m, peek->task);
    rpc_map_str(&m, "state", job_state_name(peek->state));
    const msgpack_object_map *map = &u.data.via.map;
    for (uint32_t i = 0; ok && i < map->size; i++) {
        const msgpack_object *k = &map->ptr[i].key;
        if (k->type != MSGPACK_OBJECT_STR) continue;
        char name[32];
        snprintf(name, sizeof name, "%.*s", (int)k->via.str.size, k->via.str.ptr);
        int wanted = !pick;
        for (int f = 0; pick && pick[f] && !wanted; f++) wanted = !strcmp(pick[f], name);
        for (int f = 0; from_redis[f] && wanted; f++) wanted = strcmp(from_redis[f], name) != 0;
        if (wanted) msgpack_pack_object(rpc_map_key(&m, name), map->ptr[i].val);
    }
    rpc_map_end(&m, out);
    msgpack_unpacked_destroy(&u);
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

static void reply_status(parked *p, uint64_t id, const fleet_job_peek *peek)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    pack_status(&pk, id, peek, NULL);
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

/* ---- One job read: status, cancel, subscribe ---------------------------------------------- */

enum peek_for { PEEK_STATUS, PEEK_CANCEL, PEEK_SUBSCRIBE };

typedef struct peek_op {
    io_op base;
    parked *p;
    uint64_t id;
    int what; /* peek_for */
    /* The asker's tenant ("" for the administrator), copied on the loop: the cancel is asked
     * off the loop, and only of a job the asker may see. */
    char tenant[TENANT_NAME_MAX + 1];
    int rc;
    zmix_error err;
    fleet_job_peek peek;
} peek_op;

static const char *peek_method(int what)
{
    return what == PEEK_CANCEL ? "cancel" : what == PEEK_SUBSCRIBE ? "subscribe" : "status";
}

static void peek_work(io_op *o) /* threadpool */
{
    peek_op *op = (peek_op *)o;
    op->rc = fleet_jobs_peek(o->srv->fleet_jobs, op->id, &op->peek, &op->err);
    if (op->rc == 0 && !task_name_seen_by(op->tenant, op->peek.task))
        op->rc = ZMIX_ENOTFOUND; /* another tenant's job does not exist for the asker */
    if (op->rc == 0 && op->what == PEEK_CANCEL) {
        op->rc = fleet_jobs_request_cancel(o->srv->fleet_jobs, op->id, &op->err);
        if (op->rc == ZMIX_ESTATE) op->rc = 0; /* ended meanwhile: answered with its state */
    }
}

static void peek_after(io_op *o) /* loop */
{
    peek_op *op = (peek_op *)o;
    parked *p = op->p;
    server *srv = o->srv;
    if (!p->conn) {
        free(p);
    } else if (op->rc == ZMIX_ENOTFOUND) {
        reply_not_found(p, peek_method(op->what), op->id);
        free(p);
    } else if (op->rc != 0) {
        parked_reply_error(p, op->rc, op->err.msg);
        free(p);
    } else if (op->what == PEEK_STATUS) {
        reply_status(p, op->id, &op->peek);
        free(p);
    } else if (op->what == PEEK_SUBSCRIBE) {
        p->conn->subscribed = 1;
        p->conn->subscribed_job = op->id;
        rpc_map m;
        rpc_map_begin(&m);
        rpc_map_bool(&m, "subscribed", 1);
        rpc_map_u64(&m, "job", op->id);
        reply_map_to(p, &m);
        free(p);
    } else {
        /* Answered once the end state is in Redis, as a local cancel is once it is on disk. */
        p->kind = PARK_CANCEL;
        remote_park(srv, p, op->id);
    }
    fleet_job_peek_free(&op->peek);
    free(op);
}

static void submit_peek(server *srv, conn *c, uint32_t msgid, uint64_t id, int what)
{
    peek_op *op = calloc(1, sizeof *op);
    if (op) {
        op->id = id;
        op->what = what;
        snprintf(op->tenant, sizeof op->tenant, "%s", c->tenant ? c->tenant->name : "");
    }
    io_submit_parked(srv, c, msgid, op ? &op->base : NULL, op ? &op->p : NULL, peek_work,
                     peek_after);
}

void remote_status(server *srv, conn *c, uint32_t msgid, uint64_t id)
{
    submit_peek(srv, c, msgid, id, PEEK_STATUS);
}

void remote_cancel(server *srv, conn *c, uint32_t msgid, uint64_t id)
{
    submit_peek(srv, c, msgid, id, PEEK_CANCEL);
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
    /* The end is written a moment before the final status; a driver that died in between
     * leaves the status of its last generation, answered (with the end's state) after a grace
     * period rather than never. */
    if (job_state_finished(pk->state) && !pk->final) {
        if (!p->ended_seen_ms) p->ended_seen_ms = now_ms;
        ended = now_ms - p->ended_seen_ms >= REMOTE_FINAL_GRACE_MS;
    }
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
    pack_status(rpc_map_key(&m, "status"), p->job_id, pk, NULL);
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

/* ---- jobs: the fleet's list ---------------------------------------------------------------- */

/* The brief of a job (as jobs lists it, PROTOCOL.md) from its published status. */
static const char *const brief_fields[] = {"job",      "task",       "tenant",    "state",
                                           "priority", "generation", "submitted", NULL};

typedef struct list_op {
    io_op base;
    parked *p;
    char state[16];
    size_t limit; /* the dashboard's list (remote_jobs_statuses): whole statuses, else briefs */
    int rc;
    zmix_error err;
    uint64_t *ids;
    size_t n;
    int *peek_rc;
    fleet_job_peek *peek;
} list_op;

/* Keeps every open job and, newest first, others while fewer than limit are kept: the rule
 * of the dashboard's local list. */
static int list_keep_open_and_newest(list_op *op, fleet_jobs *fj)
{
    uint64_t *open = NULL;
    size_t n_open = 0;
    op->rc = fleet_jobs_ids(fj, 1, &open, &n_open, &op->err);
    if (op->rc) return op->rc;
    size_t kept = 0;
    for (size_t i = 0; i < op->n; i++) {
        int is_open = 0;
        for (size_t k = 0; k < n_open && !is_open; k++) is_open = open[k] == op->ids[i];
        if (is_open || kept < op->limit) op->ids[kept++] = op->ids[i];
    }
    op->n = kept;
    for (size_t k = 0; k < n_open; k++) { /* open, yet older than the newest listed */
        int listed = 0;
        for (size_t i = 0; i < op->n && !listed; i++) listed = op->ids[i] == open[k];
        if (listed) continue;
        uint64_t *grown = realloc(op->ids, (op->n + 1) * sizeof *grown);
        if (!grown) break;
        op->ids = grown;
        op->ids[op->n++] = open[k];
    }
    free(open);
    return 0;
}

static void list_work(io_op *o) /* threadpool */
{
    list_op *op = (list_op *)o;
    op->rc = fleet_jobs_ids(o->srv->fleet_jobs, 0, &op->ids, &op->n, &op->err);
    if (!op->rc && op->limit) list_keep_open_and_newest(op, o->srv->fleet_jobs);
    if (op->rc || !op->n) return;
    op->peek = calloc(op->n, sizeof *op->peek);
    op->peek_rc = calloc(op->n, sizeof *op->peek_rc);
    if (!op->peek || !op->peek_rc) {
        op->rc = zmix_error_set(&op->err, ZMIX_ENOMEM, "jobs: out of memory");
        return;
    }
    for (size_t i = 0; i < op->n; i++) {
        zmix_error e = {0};
        op->peek_rc[i] = fleet_jobs_peek(o->srv->fleet_jobs, op->ids[i], &op->peek[i], &e);
    }
}

static void list_after(io_op *o) /* loop */
{
    list_op *op = (list_op *)o;
    parked *p = op->p;
    if (op->rc != 0) {
        parked_reply_error(p, op->rc, op->err.msg);
    } else if (p->conn) {
        size_t shown = 0;
        for (size_t i = 0; i < op->n; i++) {
            op->peek_rc[i] =
                op->peek_rc[i] == 0 && visible(p, &op->peek[i]) &&
                        (!op->state[0] || !strcmp(op->state, job_state_name(op->peek[i].state)))
                    ? 0
                    : -1;
            shown += op->peek_rc[i] == 0;
        }
        rpc_map m;
        rpc_map_begin(&m);
        msgpack_packer *list = rpc_map_key(&m, "jobs");
        msgpack_pack_array(list, shown);
        for (size_t i = 0; i < op->n; i++) {
            if (op->peek_rc[i] != 0) continue;
            const job *j = jobs_find(o->srv, op->ids[i]);
            if (j && !j->abandoned && op->limit) /* driven here: the live numbers */
                jobs_pack_status(o->srv, j, list);
            else if (j && !j->abandoned)
                jobs_pack_brief(j, list);
            else
                pack_status(list, op->ids[i], &op->peek[i], op->limit ? NULL : brief_fields);
        }
        reply_map_to(p, &m);
    }
    for (size_t i = 0; op->peek && i < op->n; i++) fleet_job_peek_free(&op->peek[i]);
    free(op->peek);
    free(op->peek_rc);
    free(op->ids);
    free(p);
    free(op);
}

static void list_submit(server *srv, conn *c, uint32_t msgid, const char *state, size_t limit)
{
    list_op *op = calloc(1, sizeof *op);
    if (op) {
        snprintf(op->state, sizeof op->state, "%s", state);
        op->limit = limit;
    }
    io_submit_parked(srv, c, msgid, op ? &op->base : NULL, op ? &op->p : NULL, list_work,
                     list_after);
}

void remote_jobs_list(server *srv, conn *c, uint32_t msgid, const char *state)
{
    list_submit(srv, c, msgid, state, 0);
}

void remote_jobs_statuses(server *srv, conn *c, uint32_t msgid, size_t limit)
{
    list_submit(srv, c, msgid, "", limit ? limit : 1);
}

/* ---- subscribe: progress of jobs other members drive ---------------------------------------- */

/* What a subscriber was last told of a remote job: a hash of its published status. */
typedef struct remote_seen {
    uint64_t id, hash;
} remote_seen;

static uint64_t fnv1a(const uint8_t *p, size_t n, uint64_t h)
{
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

typedef struct watch_op {
    io_op base;
    int all;       /* some connection follows every job: the open ones are read too */
    uint64_t *ids; /* asked for, then the open ones appended */
    size_t n, cap;
    int *rc;
    fleet_job_peek *peek;
} watch_op;

static int watch_add(watch_op *op, uint64_t id)
{
    for (size_t i = 0; i < op->n; i++)
        if (op->ids[i] == id) return 0;
    if (op->n == op->cap) {
        size_t cap = op->cap ? 2 * op->cap : 16;
        uint64_t *grown = realloc(op->ids, cap * sizeof *grown);
        if (!grown) return -1;
        op->ids = grown;
        op->cap = cap;
    }
    op->ids[op->n++] = id;
    return 0;
}

static void watch_work(io_op *o) /* threadpool */
{
    watch_op *op = (watch_op *)o;
    if (op->all) {
        uint64_t *open = NULL;
        size_t n = 0;
        zmix_error e = {0};
        if (fleet_jobs_ids(o->srv->fleet_jobs, 1, &open, &n, &e) == 0)
            for (size_t i = 0; i < n; i++) watch_add(op, open[i]);
        free(open);
    }
    op->peek = calloc(op->n ? op->n : 1, sizeof *op->peek);
    op->rc = calloc(op->n ? op->n : 1, sizeof *op->rc);
    for (size_t i = 0; op->peek && op->rc && i < op->n; i++) {
        zmix_error e = {0};
        op->rc[i] = fleet_jobs_peek(o->srv->fleet_jobs, op->ids[i], &op->peek[i], &e);
    }
}

static void notify_remote(server *srv, uint64_t id, const fleet_job_peek *pk)
{
    msgpack_sbuffer out;
    msgpack_sbuffer_init(&out);
    rpc_pack_notify(&out, "progress", (const char *)pk->status, pk->status_len);
    for (conn *c = srv->conns, *next; c; c = next) {
        next = c->next; /* conn_send may close c */
        if (c->subscribed && (!c->subscribed_job || c->subscribed_job == id) &&
            conn_sees_task(c, pk->task))
            conn_send(c, out.data, out.size);
    }
    msgpack_sbuffer_destroy(&out);
}

static void watch_after(io_op *o) /* loop */
{
    watch_op *op = (watch_op *)o;
    server *srv = o->srv;
    srv->remote_watch_inflight = 0;
    remote_seen *seen = srv->remote_seen;
    size_t n_seen = srv->n_remote_seen;
    for (size_t i = 0; op->peek && op->rc && i < op->n; i++) {
        uint64_t id = op->ids[i];
        const job *j = jobs_find(srv, id);
        size_t k = 0;
        while (k < n_seen && seen[k].id != id) k++;
        int local = j && !j->abandoned; /* its driver here notifies */
        int ended = op->rc[i] == 0 && job_state_finished(op->peek[i].state) && op->peek[i].final;
        if (!local && op->rc[i] == 0 && op->peek[i].status) {
            uint64_t h = fnv1a(op->peek[i].status, op->peek[i].status_len, 1469598103934665603ull);
            if (k == n_seen || seen[k].hash != h) notify_remote(srv, id, &op->peek[i]);
            if (k == n_seen && !ended) {
                remote_seen *grown = realloc(seen, (n_seen + 1) * sizeof *grown);
                if (grown) {
                    seen = grown;
                    seen[n_seen++] = (remote_seen){id, h};
                }
            } else if (k < n_seen) {
                seen[k].hash = h;
            }
        }
        /* Forgotten once ended (told), gone, or driven here. */
        k = 0;
        while (k < n_seen && seen[k].id != id) k++;
        if (k < n_seen && (local || ended || op->rc[i] == ZMIX_ENOTFOUND)) seen[k] = seen[--n_seen];
    }
    srv->remote_seen = seen;
    srv->n_remote_seen = n_seen;
    for (size_t i = 0; op->peek && i < op->n; i++) fleet_job_peek_free(&op->peek[i]);
    free(op->peek);
    free(op->rc);
    free(op->ids);
    free(op);
}

void remote_watch(server *srv, uint64_t now_ms)
{
    if (!srv->fleet_jobs || srv->remote_watch_inflight) return;
    if (now_ms - srv->remote_watched_ms < REMOTE_POLL_MS) return;
    watch_op *op = calloc(1, sizeof *op);
    if (!op) return;
    int any = 0;
    for (conn *c = srv->conns; c; c = c->next) {
        if (!c->subscribed) continue;
        any = 1;
        if (!c->subscribed_job)
            op->all = 1;
        else if (!jobs_find(srv, c->subscribed_job))
            watch_add(op, c->subscribed_job);
    }
    for (size_t i = 0; any && i < srv->n_remote_seen; i++) watch_add(op, srv->remote_seen[i].id);
    if (!any) {
        free(op->ids);
        free(op);
        srv->n_remote_seen = 0;
        return;
    }
    srv->remote_watched_ms = now_ms;
    srv->remote_watch_inflight = 1;
    op->base.work = watch_work;
    op->base.after = watch_after;
    io_submit(srv, &op->base);
}

/* subscribe {job} for a job another member drives: answered once the job is found. */
void remote_subscribe(server *srv, conn *c, uint32_t msgid, uint64_t id)
{
    submit_peek(srv, c, msgid, id, PEEK_SUBSCRIBE);
}
