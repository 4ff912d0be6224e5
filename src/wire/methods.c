/*
 * The method table: one handler per protocol method, each a direct transcription of its
 * section in proto/PROTOCOL.md. Handlers run on the event loop and only read small state;
 * anything that may block (persistence) or compute (scoring) is handed to jobs.c.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "daemon/server.h"
#include "util/clock.h"
#include "zmix/version.h"

typedef void (*method_fn)(server *srv, conn *c, const rpc_request *req);

#define REPLY_BEGIN                                                                                \
    msgpack_sbuffer sb;                                                                            \
    msgpack_sbuffer_init(&sb);                                                                     \
    msgpack_packer pk;                                                                             \
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write)
#define REPLY_END                                                                                  \
    conn_reply_result(c, req->msgid, &sb);                                                         \
    msgpack_sbuffer_destroy(&sb)

static int check_keys(conn *c, const rpc_request *req, const char *const *keys)
{
    zmix_error err = {0};
    if (rpc_map_check_keys(&req->params, keys, req->method, &err) != 0) {
        conn_reply_error(c, req->msgid, err.code, err.msg);
        return -1;
    }
    return 0;
}

static void reply_err(conn *c, const rpc_request *req, const zmix_error *err)
{
    char msg[ZMIX_ERROR_MSG_MAX + 40];
    snprintf(msg, sizeof msg, "%s: %s", req->method, err->msg);
    conn_reply_error(c, req->msgid, err->code, msg);
}

static void m_ping(server *srv, conn *c, const rpc_request *req)
{
    static const char *const keys[] = {NULL};
    if (check_keys(c, req, keys)) return;
    REPLY_BEGIN;
    msgpack_pack_map(&pk, 2);
    rpc_pack_cstr(&pk, "pong");
    msgpack_pack_true(&pk);
    rpc_pack_cstr(&pk, "version");
    rpc_pack_cstr(&pk, ZMIX_VERSION_STRING);
    REPLY_END;
}

static void m_auth(server *srv, conn *c, const rpc_request *req)
{
    static const char *const keys[] = {"token", NULL};
    if (check_keys(c, req, keys)) return;
    const msgpack_object *t = rpc_map_get(&req->params, "token");
    if (!t || t->type != MSGPACK_OBJECT_STR) {
        conn_reply_error(c, req->msgid, ZMIX_EINVAL, "auth: field 'token' (string) is required");
        return;
    }
    int ok = 1;
    if (srv->token_len > 0) {
        /* Constant time in the token's content: every byte is compared whatever the first
         * mismatch, and the length difference is folded in rather than returned early. */
        unsigned diff = (unsigned)(t->via.str.size ^ srv->token_len);
        for (size_t i = 0; i < srv->token_len; i++) {
            unsigned char a = (unsigned char)srv->token[i];
            unsigned char b = i < t->via.str.size ? (unsigned char)t->via.str.ptr[i] : 0;
            diff |= (unsigned)(a ^ b);
        }
        ok = diff == 0;
    }
    if (!ok) {
        ZLOG_WARN(srv->log, "conn %llu: wrong token", (unsigned long long)c->id);
        conn_reply_error(c, req->msgid, ZMIX_EAUTH, "auth: wrong token");
        return;
    }
    c->authed = 1;
    REPLY_BEGIN;
    msgpack_pack_map(&pk, 1);
    rpc_pack_cstr(&pk, "authenticated");
    msgpack_pack_true(&pk);
    REPLY_END;
}

static void pack_int_kv(msgpack_packer *pk, const char *k, long v)
{
    rpc_pack_cstr(pk, k);
    msgpack_pack_long(pk, v);
}

static void m_info(server *srv, conn *c, const rpc_request *req)
{
    static const char *const keys[] = {NULL};
    if (check_keys(c, req, keys)) return;
    const zmix_model_config *mc = zmix_model_get_config(srv->model);
    int K = zmix_runtime_n_experts(srv->rt), M = zmix_runtime_n_matrices(srv->rt);
    REPLY_BEGIN;
    msgpack_pack_map(&pk, 8);
    rpc_pack_cstr(&pk, "version");
    rpc_pack_cstr(&pk, ZMIX_VERSION_STRING);
    rpc_pack_cstr(&pk, "model");
    msgpack_pack_map(&pk, 12);
    rpc_pack_cstr(&pk, "path");
    rpc_pack_cstr(&pk, srv->cfg->model);
    rpc_pack_cstr(&pk, "fingerprint");
    rpc_pack_cstr(&pk, zmix_model_fingerprint(srv->model));
    rpc_pack_cstr(&pk, "model_type");
    rpc_pack_cstr(&pk, mc->model_type);
    pack_int_kv(&pk, "dim", mc->dim);
    pack_int_kv(&pk, "hidden_dim", mc->hidden_dim);
    pack_int_kv(&pk, "n_layers", mc->n_layers);
    pack_int_kv(&pk, "n_heads", mc->n_heads);
    pack_int_kv(&pk, "n_kv_heads", mc->n_kv_heads);
    pack_int_kv(&pk, "vocab_size", mc->vocab_size);
    pack_int_kv(&pk, "max_seq_len", mc->max_seq_len);
    pack_int_kv(&pk, "bos_id", mc->bos_id);
    pack_int_kv(&pk, "eos_id", mc->eos_id);
    rpc_pack_cstr(&pk, "adapt");
    rpc_pack_cstr(&pk, srv->cfg->adapt);
    rpc_pack_cstr(&pk, "matrices");
    msgpack_pack_array(&pk, (size_t)M);
    for (int m = 0; m < M; m++) {
        msgpack_pack_map(&pk, 2);
        rpc_pack_cstr(&pk, "name");
        rpc_pack_cstr(&pk, zmix_runtime_matrix_name(srv->rt, m));
        pack_int_kv(&pk, "rank", zmix_runtime_matrix_rank(srv->rt, m));
    }
    rpc_pack_cstr(&pk, "experts");
    msgpack_pack_array(&pk, (size_t)K);
    for (int k = 0; k < K; k++) rpc_pack_cstr(&pk, zmix_runtime_expert_name(srv->rt, k));
    rpc_pack_cstr(&pk, "experts_digest");
    rpc_pack_cstr(&pk, srv->experts_digest);
    rpc_pack_cstr(&pk, "alpha_dim");
    msgpack_pack_map(&pk, 2);
    pack_int_kv(&pk, "per_expert", K);
    pack_int_kv(&pk, "per_layer", (long)K * M);
    rpc_pack_cstr(&pk, "limits");
    msgpack_pack_map(&pk, 10);
    pack_int_kv(&pk, "max_examples", srv->limits.max_examples);
    pack_int_kv(&pk, "max_tokens", srv->limits.max_tokens);
    pack_int_kv(&pk, "context", srv->limits.context);
    pack_int_kv(&pk, "max_pop", srv->limits.max_pop);
    pack_int_kv(&pk, "max_generations", srv->limits.max_generations);
    pack_int_kv(&pk, "max_dim", srv->limits.max_dim);
    pack_int_kv(&pk, "max_jobs", srv->cfg->max_jobs);
    pack_int_kv(&pk, "frame_limit", (long)srv->cfg->frame_limit);
    pack_int_kv(&pk, "workers", pool_workers(srv->pool));
    pack_int_kv(&pk, "job_memory", (long)srv->limits.max_job_bytes);
    REPLY_END;
}

static long rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, rss = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &rss) != 2) rss = 0;
        fclose(f);
    }
    return rss * sysconf(_SC_PAGESIZE);
}

static void m_stats(server *srv, conn *c, const rpc_request *req)
{
    static const char *const keys[] = {NULL};
    if (check_keys(c, req, keys)) return;
    task_cache_stats cs;
    task_cache_get_stats(srv->cache, &cs);
    int queued = 0;
    for (job *j = srv->jobs; j; j = j->next) queued += j->phase == JOB_PH_QUEUED;
    REPLY_BEGIN;
    msgpack_pack_map(&pk, 11);
    rpc_pack_cstr(&pk, "uptime");
    msgpack_pack_double(&pk, (double)(zmix_now_ns() - srv->start_ns) * 1e-9);
    pack_int_kv(&pk, "requests", (long)srv->requests);
    pack_int_kv(&pk, "connections", srv->n_conns);
    rpc_pack_cstr(&pk, "workers");
    msgpack_pack_map(&pk, 3);
    pack_int_kv(&pk, "total", pool_workers(srv->pool));
    pack_int_kv(&pk, "busy", pool_busy(srv->pool));
    pack_int_kv(&pk, "pending_chunks", pool_pending(srv->pool));
    rpc_pack_cstr(&pk, "queue");
    msgpack_pack_map(&pk, 4);
    pack_int_kv(&pk, "queued", queued);
    pack_int_kv(&pk, "running", srv->n_running);
    pack_int_kv(&pk, "unfinished", srv->n_unfinished);
    pack_int_kv(&pk, "max_jobs", srv->cfg->max_jobs);
    pack_int_kv(&pk, "evaluations", (long)srv->evals_total);
    rpc_pack_cstr(&pk, "evals_per_s");
    msgpack_pack_double(&pk, srv->evals_per_s);
    rpc_pack_cstr(&pk, "jobs");
    msgpack_pack_map(&pk, 5);
    pack_int_kv(&pk, "done", (long)srv->jobs_done);
    pack_int_kv(&pk, "failed", (long)srv->jobs_failed);
    pack_int_kv(&pk, "cancelled", (long)srv->jobs_cancelled);
    pack_int_kv(&pk, "cached_submits", (long)srv->submits_cached);
    pack_int_kv(&pk, "coalesced_submits", (long)srv->submits_coalesced);
    rpc_pack_cstr(&pk, "cache");
    msgpack_pack_map(&pk, 10);
    pack_int_kv(&pk, "tasks", (long)cs.tasks);
    pack_int_kv(&pk, "resident", (long)cs.resident);
    pack_int_kv(&pk, "resident_bytes", (long)cs.resident_bytes);
    pack_int_kv(&pk, "memory_budget", (long)cs.memory_budget);
    pack_int_kv(&pk, "hits", (long)cs.hits);
    pack_int_kv(&pk, "misses", (long)cs.misses);
    pack_int_kv(&pk, "loads", (long)cs.loads);
    pack_int_kv(&pk, "evictions", (long)cs.evictions);
    pack_int_kv(&pk, "write_errors", (long)cs.write_errors);
    pack_int_kv(&pk, "unpersisted", (long)cs.unpersisted);
    pack_int_kv(&pk, "rss_bytes", rss_bytes());
    rpc_pack_cstr(&pk, "shutting_down");
    srv->shutting_down ? msgpack_pack_true(&pk) : msgpack_pack_false(&pk);
    REPLY_END;
}

static void m_submit(server *srv, conn *c, const rpc_request *req)
{
    job_spec spec;
    zmix_error err = {0};
    if (job_spec_parse(&req->params, &srv->limits, &srv->cem_defaults, &spec, &err) != 0) {
        reply_err(c, req, &err);
        return;
    }
    /* job_spec_parse ran the engine's settings check and the one examples check. */
    jobs_submit(srv, c, req->msgid, &spec);
}

static job *job_param(server *srv, conn *c, const rpc_request *req)
{
    int64_t id;
    zmix_error err = {0};
    if (rpc_get_int(&req->params, "job", 1, 1, INT64_MAX, 0, &id, &err) != 0) {
        reply_err(c, req, &err);
        return NULL;
    }
    job *j = jobs_find(srv, (uint64_t)id);
    if (!j) {
        char msg[96];
        snprintf(msg, sizeof msg, "%s: no job %lld", req->method, (long long)id);
        conn_reply_error(c, req->msgid, ZMIX_ENOTFOUND, msg);
    }
    return j;
}

static void m_status(server *srv, conn *c, const rpc_request *req)
{
    static const char *const keys[] = {"job", NULL};
    if (check_keys(c, req, keys)) return;
    job *j = job_param(srv, c, req);
    if (!j) return;
    REPLY_BEGIN;
    jobs_pack_status(srv, j, &pk);
    REPLY_END;
}

static void m_wait(server *srv, conn *c, const rpc_request *req)
{
    static const char *const keys[] = {"job", "timeout", NULL};
    if (check_keys(c, req, keys)) return;
    double timeout;
    zmix_error err = {0};
    if (rpc_get_double(&req->params, "timeout", 0, 0.0, 3600.0, 30.0, &timeout, &err) != 0) {
        reply_err(c, req, &err);
        return;
    }
    job *j = job_param(srv, c, req);
    if (!j) return;
    jobs_add_waiter(srv, j, c, req->msgid, (uint64_t)(timeout * 1000.0));
}

static void m_cancel(server *srv, conn *c, const rpc_request *req)
{
    static const char *const keys[] = {"job", NULL};
    if (check_keys(c, req, keys)) return;
    job *j = job_param(srv, c, req);
    if (!j) return;
    zmix_error err = {0};
    if (jobs_cancel(srv, j, &err) != 0) {
        reply_err(c, req, &err);
        return;
    }
    REPLY_BEGIN;
    msgpack_pack_map(&pk, 2);
    rpc_pack_cstr(&pk, "job");
    msgpack_pack_uint64(&pk, j->id);
    rpc_pack_cstr(&pk, "state");
    rpc_pack_cstr(&pk, j->phase == JOB_PH_FINISHED ? job_state_name(j->state) : "cancelling");
    REPLY_END;
}

static void m_jobs(server *srv, conn *c, const rpc_request *req)
{
    static const char *const keys[] = {"state", NULL};
    if (check_keys(c, req, keys)) return;
    char state[16];
    zmix_error err = {0};
    if (rpc_get_str(&req->params, "state", 0, "", state, sizeof state, &err) != 0) {
        reply_err(c, req, &err);
        return;
    }
    static const char *const states[] = {"", "queued", "running", "done", "failed", "cancelled"};
    int known = 0;
    for (size_t i = 0; i < sizeof states / sizeof *states; i++) known |= !strcmp(state, states[i]);
    if (!known) {
        conn_reply_error(c, req->msgid, ZMIX_EINVAL,
                         "jobs: field 'state' must be queued, running, done, failed or cancelled");
        return;
    }
    size_t n = 0;
    for (job *j = srv->jobs; j; j = j->next)
        n += j->id != 0 && (!state[0] || !strcmp(state, job_state_name(j->state)));
    REPLY_BEGIN;
    msgpack_pack_map(&pk, 1);
    rpc_pack_cstr(&pk, "jobs");
    msgpack_pack_array(&pk, n);
    for (job *j = srv->jobs; j; j = j->next)
        if (j->id != 0 && (!state[0] || !strcmp(state, job_state_name(j->state))))
            jobs_pack_brief(j, &pk);
    REPLY_END;
}

static int task_param(conn *c, const rpc_request *req, char *task)
{
    zmix_error err = {0};
    if (job_task_param(&req->params, task, &err) != 0) {
        reply_err(c, req, &err);
        return -1;
    }
    return 0;
}

static void m_get(server *srv, conn *c, const rpc_request *req)
{
    static const char *const keys[] = {"task", "vectors", "document", NULL};
    if (check_keys(c, req, keys)) return;
    char task[TASK_NAME_MAX + 1];
    int vectors, document;
    zmix_error err = {0};
    if (task_param(c, req, task)) return;
    if (rpc_get_bool(&req->params, "vectors", 1, &vectors, &err) != 0 ||
        rpc_get_bool(&req->params, "document", 0, &document, &err) != 0) {
        reply_err(c, req, &err);
        return;
    }
    results_get(srv, c, req->msgid, task, vectors, document);
}

static void m_evict(server *srv, conn *c, const rpc_request *req)
{
    static const char *const keys[] = {"task", NULL};
    if (check_keys(c, req, keys)) return;
    char task[TASK_NAME_MAX + 1];
    if (task_param(c, req, task)) return;
    results_evict(srv, c, req->msgid, task);
}

static void m_tasks(server *srv, conn *c, const rpc_request *req)
{
    static const char *const keys[] = {NULL};
    if (check_keys(c, req, keys)) return;
    task_cache_info *list = NULL;
    size_t n = 0;
    zmix_error err = {0};
    if (task_cache_list(srv->cache, &list, &n, &err) != 0) {
        reply_err(c, req, &err);
        return;
    }
    REPLY_BEGIN;
    msgpack_pack_map(&pk, 1);
    rpc_pack_cstr(&pk, "tasks");
    msgpack_pack_array(&pk, n);
    for (size_t i = 0; i < n; i++) {
        msgpack_pack_map(&pk, 8);
        rpc_pack_cstr(&pk, "task");
        rpc_pack_cstr(&pk, list[i].task);
        rpc_pack_cstr(&pk, "key");
        rpc_pack_cstr(&pk, list[i].key);
        pack_int_kv(&pk, "job", (long)list[i].job_id);
        rpc_pack_cstr(&pk, "created");
        msgpack_pack_double(&pk, (double)list[i].created_ms / 1000.0);
        rpc_pack_cstr(&pk, "score");
        msgpack_pack_map(&pk, 2);
        rpc_pack_cstr(&pk, "accuracy");
        msgpack_pack_double(&pk, list[i].score.accuracy);
        rpc_pack_cstr(&pk, "loglik");
        msgpack_pack_double(&pk, list[i].score.loglik);
        pack_int_kv(&pk, "bytes", (long)list[i].bytes);
        rpc_pack_cstr(&pk, "resident");
        list[i].resident ? msgpack_pack_true(&pk) : msgpack_pack_false(&pk);
        rpc_pack_cstr(&pk, "persisted");
        list[i].persisted ? msgpack_pack_true(&pk) : msgpack_pack_false(&pk);
    }
    free(list);
    REPLY_END;
}

/* history {job}: the per-generation record of the job's search (from its session while it
 * runs, from its record in the job store once it has ended). */
static void m_history(server *srv, conn *c, const rpc_request *req)
{
    static const char *const keys[] = {"job", NULL};
    if (check_keys(c, req, keys)) return;
    job *j = job_param(srv, c, req);
    if (j) results_history(srv, c, req->msgid, j);
}

static void m_subscribe(server *srv, conn *c, const rpc_request *req)
{
    static const char *const keys[] = {"on", "job", NULL};
    if (check_keys(c, req, keys)) return;
    zmix_error err = {0};
    int on;
    int64_t job_id = 0;
    if (rpc_get_bool(&req->params, "on", 1, &on, &err) != 0 ||
        rpc_get_int(&req->params, "job", 0, 1, INT64_MAX, 0, &job_id, &err) != 0) {
        reply_err(c, req, &err);
        return;
    }
    if (job_id && !jobs_find(srv, (uint64_t)job_id)) {
        char msg[96];
        snprintf(msg, sizeof msg, "subscribe: no job %lld", (long long)job_id);
        conn_reply_error(c, req->msgid, ZMIX_ENOTFOUND, msg);
        return;
    }
    c->subscribed = on;
    c->subscribed_job = on ? (uint64_t)job_id : 0;
    REPLY_BEGIN;
    msgpack_pack_map(&pk, 2);
    rpc_pack_cstr(&pk, "subscribed");
    c->subscribed ? msgpack_pack_true(&pk) : msgpack_pack_false(&pk);
    rpc_pack_cstr(&pk, "job");
    if (c->subscribed_job)
        msgpack_pack_uint64(&pk, c->subscribed_job);
    else
        msgpack_pack_nil(&pk);
    REPLY_END;
}

static const struct {
    const char *name;
    method_fn fn;
} methods[] = {
    {"auth", m_auth},           {"ping", m_ping},       {"info", m_info},   {"stats", m_stats},
    {"submit", m_submit},       {"status", m_status},   {"wait", m_wait},   {"cancel", m_cancel},
    {"jobs", m_jobs},           {"get", m_get},         {"tasks", m_tasks}, {"evict", m_evict},
    {"subscribe", m_subscribe}, {"history", m_history},
};

void methods_dispatch(server *srv, conn *c, const rpc_request *req)
{
    if (!c->authed && strcmp(req->method, "auth") != 0) {
        conn_reply_error(c, req->msgid, ZMIX_EAUTH,
                         "authentication required: call auth {token} first");
        return;
    }
    for (size_t i = 0; i < sizeof methods / sizeof *methods; i++) {
        if (!strcmp(methods[i].name, req->method)) {
            methods[i].fn(srv, c, req);
            return;
        }
    }
    char msg[96];
    snprintf(msg, sizeof msg, "unknown method '%s'", req->method);
    conn_reply_error(c, req->msgid, ZMIX_ENOTFOUND, msg);
}
