/*
 * The method table: one handler per protocol method, each a direct transcription of its
 * section in proto/PROTOCOL.md. Handlers run on the event loop and only read small state;
 * anything that may block (persistence) or compute (scoring) is handed to jobs.c.
 * Thread: the event loop, every function.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/server.h"
#include "util/clock.h"
#include "zmix/version.h"

typedef void (*method_fn)(server *srv, conn *c, const rpc_request *req);

/* Every reply is a map, built with rpc_map (entries counted as they are packed). */
static void reply_map(conn *c, const rpc_request *req, rpc_map *m)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    rpc_map_end(m, &pk);
    conn_reply_result(c, req->msgid, &sb);
    msgpack_sbuffer_destroy(&sb);
}

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
    rpc_map m;
    rpc_map_begin(&m);
    rpc_map_bool(&m, "pong", 1);
    rpc_map_str(&m, "version", ZMIX_VERSION_STRING);
    reply_map(c, req, &m);
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
    /* Every token is compared in full (constant time in the tokens' content): the
     * administrator's, then each tenant's. The token says who the connection acts for. */
    int ok = 1;
    const tenant *who = NULL;
    if (server_tokens_required(srv)) {
        int admin = srv->token_len > 0 &&
                    tenant_token_equal(srv->token, srv->token_len, t->via.str.ptr, t->via.str.size);
        who = tenants_match(&srv->tenants, t->via.str.ptr, t->via.str.size);
        ok = admin || who;
        if (admin) who = NULL;
    }
    if (!ok) {
        /* Also after a successful auth: a client sending a wrong token is told so, and
         * repeated guesses close the connection either way (PROTOCOL §4.1). */
        int close_now = conn_auth_failed(c);
        conn_reply_error(c, req->msgid, ZMIX_EAUTH, "auth: wrong token");
        if (close_now) {
            char msg[96];
            snprintf(msg, sizeof msg, "%d wrong tokens: closing the connection",
                     CONN_AUTH_MAX_FAILURES);
            conn_send_error_notify(c, ZMIX_EAUTH, msg);
            conn_close_after_write(c);
        }
        return;
    }
    conn_auth_succeeded(c);
    c->tenant = who;
    rpc_map m;
    rpc_map_begin(&m);
    rpc_map_bool(&m, "authenticated", 1);
    if (who) rpc_map_str(&m, "tenant", who->name);
    reply_map(c, req, &m);
}

static void m_info(server *srv, conn *c, const rpc_request *req)
{
    static const char *const keys[] = {NULL};
    if (check_keys(c, req, keys)) return;
    const zmix_model_config *mc = zmix_model_get_config(srv->model);
    int K = zmix_runtime_n_experts(srv->rt), M = zmix_runtime_n_matrices(srv->rt);
    rpc_map m, model, dims, lim;
    rpc_map_begin(&m);
    rpc_map_str(&m, "version", ZMIX_VERSION_STRING);
    rpc_map_begin(&model);
    rpc_map_str(&model, "path", srv->cfg->model);
    rpc_map_str(&model, "fingerprint", zmix_model_fingerprint(srv->model));
    rpc_map_str(&model, "model_type", mc->model_type);
    rpc_map_int(&model, "dim", mc->dim);
    rpc_map_int(&model, "hidden_dim", mc->hidden_dim);
    rpc_map_int(&model, "n_layers", mc->n_layers);
    rpc_map_int(&model, "n_heads", mc->n_heads);
    rpc_map_int(&model, "n_kv_heads", mc->n_kv_heads);
    rpc_map_int(&model, "vocab_size", mc->vocab_size);
    rpc_map_int(&model, "max_seq_len", mc->max_seq_len);
    rpc_map_int(&model, "bos_id", mc->bos_id);
    rpc_map_int(&model, "eos_id", mc->eos_id);
    rpc_map_end(&model, rpc_map_key(&m, "model"));
    rpc_map_str(&m, "adapt", srv->cfg->adapt);
    msgpack_packer *mats = rpc_map_key(&m, "matrices");
    msgpack_pack_array(mats, (size_t)M);
    for (int i = 0; i < M; i++) {
        rpc_map e;
        rpc_map_begin(&e);
        rpc_map_str(&e, "name", zmix_runtime_matrix_name(srv->rt, i));
        rpc_map_int(&e, "rank", zmix_runtime_matrix_rank(srv->rt, i));
        rpc_map_end(&e, mats);
    }
    msgpack_packer *names = rpc_map_key(&m, "experts");
    msgpack_pack_array(names, (size_t)K);
    for (int k = 0; k < K; k++) rpc_pack_cstr(names, zmix_runtime_expert_name(srv->rt, k));
    rpc_map_str(&m, "experts_digest", srv->experts_digest);
    rpc_map_begin(&dims);
    rpc_map_int(&dims, "per_expert", K);
    rpc_map_int(&dims, "per_layer", (int64_t)K * M);
    rpc_map_end(&dims, rpc_map_key(&m, "alpha_dim"));
    rpc_map_begin(&lim);
    rpc_map_int(&lim, "max_examples", srv->limits.max_examples);
    rpc_map_int(&lim, "max_tokens", srv->limits.max_tokens);
    rpc_map_int(&lim, "context", srv->limits.context);
    rpc_map_int(&lim, "max_pop", srv->limits.max_pop);
    rpc_map_int(&lim, "max_generations", srv->limits.max_generations);
    rpc_map_int(&lim, "max_dim", srv->limits.max_dim);
    rpc_map_int(&lim, "max_jobs", srv->cfg->max_jobs);
    rpc_map_int(&lim, "frame_limit", (int64_t)srv->cfg->frame_limit);
    rpc_map_int(&lim, "workers", pool_workers(srv->pool));
    rpc_map_int(&lim, "job_memory", (int64_t)srv->limits.max_job_bytes);
    rpc_map_end(&lim, rpc_map_key(&m, "limits"));
    rpc_map store;
    rpc_map_begin(&store);
    if (srv->fleet) { /* the URL carries no password: --store refuses one */
        rpc_map_str(&store, "kind", "redis");
        rpc_map_str(&store, "url", srv->cfg->store);
        rpc_map_str(&store, "member", fleet_member(srv->fleet));
        rpc_map_int(&store, "lease_ms", srv->cfg->fleet_lease_ms);
        rpc_map_int(&store, "claim_ms", srv->cfg->fleet_claim_ms);
    } else {
        rpc_map_str(&store, "kind", "local");
    }
    rpc_map_end(&store, rpc_map_key(&m, "store"));
    reply_map(c, req, &m);
}

static void m_stats(server *srv, conn *c, const rpc_request *req)
{
    static const char *const keys[] = {NULL};
    if (check_keys(c, req, keys)) return;
    task_cache_stats cs;
    task_cache_get_stats(srv->cache, &cs);
    int queued = 0;
    for (job *j = srv->jobs; j; j = j->next) queued += j->phase == JOB_PH_QUEUED;
    rpc_map m, w, q, jobs, cache;
    rpc_map_begin(&m);
    rpc_map_double(&m, "uptime", (double)(zmix_now_ns() - srv->start_ns) * 1e-9);
    rpc_map_int(&m, "requests", (int64_t)srv->requests);
    rpc_map_int(&m, "connections", srv->n_conns);
    rpc_map_begin(&w);
    rpc_map_int(&w, "total", pool_workers(srv->pool));
    rpc_map_int(&w, "busy", pool_busy(srv->pool));
    rpc_map_int(&w, "pending_chunks", pool_pending(srv->pool));
    rpc_map_end(&w, rpc_map_key(&m, "workers"));
    rpc_map_begin(&q);
    rpc_map_int(&q, "queued", queued);
    rpc_map_int(&q, "running", srv->n_running);
    rpc_map_int(&q, "unfinished", srv->n_unfinished);
    rpc_map_int(&q, "max_jobs", srv->cfg->max_jobs);
    rpc_map_end(&q, rpc_map_key(&m, "queue"));
    rpc_map_int(&m, "evaluations", (int64_t)srv->evals_total);
    rpc_map_double(&m, "evals_per_s", srv->evals_per_s);
    rpc_map_begin(&jobs);
    rpc_map_int(&jobs, "done", (int64_t)srv->jobs_done);
    rpc_map_int(&jobs, "failed", (int64_t)srv->jobs_failed);
    rpc_map_int(&jobs, "cancelled", (int64_t)srv->jobs_cancelled);
    rpc_map_int(&jobs, "cached_submits", (int64_t)srv->submits_cached);
    rpc_map_int(&jobs, "coalesced_submits", (int64_t)srv->submits_coalesced);
    rpc_map_end(&jobs, rpc_map_key(&m, "jobs"));
    rpc_map_begin(&cache);
    rpc_map_int(&cache, "tasks", (int64_t)cs.tasks);
    rpc_map_int(&cache, "resident", (int64_t)cs.resident);
    rpc_map_int(&cache, "resident_bytes", (int64_t)cs.resident_bytes);
    rpc_map_int(&cache, "memory_budget", (int64_t)cs.memory_budget);
    rpc_map_int(&cache, "hits", (int64_t)cs.hits);
    rpc_map_int(&cache, "misses", (int64_t)cs.misses);
    rpc_map_int(&cache, "loads", (int64_t)cs.loads);
    rpc_map_int(&cache, "evictions", (int64_t)cs.evictions);
    rpc_map_int(&cache, "write_errors", (int64_t)cs.write_errors);
    rpc_map_int(&cache, "unpersisted", (int64_t)cs.unpersisted);
    rpc_map_end(&cache, rpc_map_key(&m, "cache"));
    rpc_map_int(&m, "rss_bytes", metrics_rss_bytes());
    rpc_map_bool(&m, "shutting_down", srv->shutting_down);
    if (srv->fleet) {
        rpc_map fl;
        rpc_map_begin(&fl);
        rpc_map_int(&fl, "scorers", fleet_scorers(srv->fleet));
        rpc_map_int(&fl, "chunks_scored", fleet_chunks_scored(srv->fleet));
        rpc_map_int(&fl, "jobs_claimed", (int64_t)srv->fleet_claimed);
        rpc_map_int(&fl, "leases_lost", (int64_t)srv->fleet_lost);
        rpc_map_end(&fl, rpc_map_key(&m, "fleet"));
    } else {
        rpc_map_nil(&m, "fleet");
    }
    reply_map(c, req, &m);
}

/* submit's warm_start: the named task's α (the caller's own task: tenant-scoped), from the
 * task cache's memory, checked against this daemon's model and experts and shaped to the
 * job's dimension (zmix_adapt_warm_mean). */
static int warm_start(server *srv, const conn *c, job_spec *spec, zmix_error *err)
{
    if (!spec->warm_start[0]) return 0;
    char shown[TASK_NAME_MAX + 1];
    snprintf(shown, sizeof shown, "%s", spec->warm_start);
    int rc = conn_scope_task(c, spec->warm_start, err);
    float *alpha = NULL;
    int n_alpha = 0;
    task_cache_info info;
    if (!rc) rc = task_cache_alpha(srv->cache, spec->warm_start, &alpha, &n_alpha, &info, err);
    if (rc == ZMIX_ENOTFOUND)
        zmix_error_set(err, ZMIX_ENOTFOUND,
                       "field 'warm_start': task %s is not cached (zmix tasks lists the cached "
                       "tasks)",
                       shown);
    if (!rc) {
        zmix_adapt_opts opts;
        job_spec_adapt_opts(spec, &opts);
        rc = zmix_adapt_warm_mean(srv->rt, srv->experts_digest, &opts, alpha, n_alpha,
                                  info.model_fingerprint, info.experts_digest, &spec->warm_mean,
                                  err);
        if (rc) zmix_error_prefix(err, "field 'warm_start': task %s", shown);
        spec->cem.init_mean = spec->warm_mean;
    }
    free(alpha);
    return rc;
}

static void m_submit(server *srv, conn *c, const rpc_request *req)
{
    job_spec spec;
    zmix_error err = {0};
    if (job_spec_parse(&req->params, &srv->limits, &srv->cem_defaults, &spec, &err) != 0) {
        reply_err(c, req, &err);
        return;
    }
    if (conn_scope_task(c, spec.task, &err) != 0 || warm_start(srv, c, &spec, &err) != 0) {
        job_spec_free(&spec);
        reply_err(c, req, &err);
        return;
    }
    /* job_spec_parse ran the engine's settings check and the one examples check. */
    jobs_submit(srv, c, req->msgid, &spec);
}

/* The job a request names. NULL when it is answered already, or, with *remote set, when in a
 * fleet the job is not driven here: the caller asks the fleet (remote_jobs.c). */
static job *job_param(server *srv, conn *c, const rpc_request *req, uint64_t *remote)
{
    int64_t id;
    zmix_error err = {0};
    if (remote) *remote = 0;
    if (rpc_get_int(&req->params, "job", 1, 1, INT64_MAX, 0, &id, &err) != 0) {
        reply_err(c, req, &err);
        return NULL;
    }
    job *j = jobs_find(srv, (uint64_t)id);
    if (!j && remote && srv->fleet_jobs) {
        *remote = (uint64_t)id;
        return NULL;
    }
    /* Another tenant's job is answered exactly as a job that does not exist. */
    if (j && !conn_sees_task(c, j->spec.task)) j = NULL;
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
    uint64_t remote;
    job *j = job_param(srv, c, req, &remote);
    if (remote) remote_status(srv, c, req->msgid, remote);
    if (!j) return;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    jobs_pack_status(srv, j, &pk);
    conn_reply_result(c, req->msgid, &sb);
    msgpack_sbuffer_destroy(&sb);
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
    uint64_t remote;
    job *j = job_param(srv, c, req, &remote);
    if (remote) remote_wait(srv, c, req->msgid, remote, (uint64_t)(timeout * 1000.0));
    if (!j) return;
    jobs_add_waiter(srv, j, c, req->msgid, (uint64_t)(timeout * 1000.0));
}

static void m_cancel(server *srv, conn *c, const rpc_request *req)
{
    static const char *const keys[] = {"job", NULL};
    if (check_keys(c, req, keys)) return;
    uint64_t remote;
    job *j = job_param(srv, c, req, &remote);
    if (remote) remote_cancel(srv, c, req->msgid, remote);
    if (!j) return;
    zmix_error err = {0};
    int rc = jobs_cancel(srv, j, c->tenant != NULL, &err);
    if (rc < 0) {
        reply_err(c, req, &err);
        return;
    }
    if (rc == 1) { /* other submits of this tenant still want the job */
        rpc_map m;
        rpc_map_begin(&m);
        rpc_map_u64(&m, "job", j->id);
        rpc_map_str(&m, "state", job_state_name(j->state));
        rpc_map_bool(&m, "withdrawn", 1);
        rpc_map_int(&m, "interest", j->interest);
        reply_map(c, req, &m);
        return;
    }
    jobs_park_cancel(srv, j, c, req->msgid); /* answered once the end state is on disk */
}

static int job_cmp_newest_first(const void *a, const void *b)
{
    uint64_t x = (*(const job *const *)a)->id, y = (*(const job *const *)b)->id;
    return x < y ? 1 : x > y ? -1 : 0;
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
    if (srv->fleet_jobs) { /* the fleet's jobs, from Redis off the loop */
        remote_jobs_list(srv, c, req->msgid, state);
        return;
    }
    size_t n = 0;
    for (job *j = srv->jobs; j; j = j->next)
        n += j->id != 0 && (!state[0] || !strcmp(state, job_state_name(j->state))) &&
             conn_sees_task(c, j->spec.task);
    /* Newest first by id: the list itself is in the order jobs reached the loop, and
     * pipelined submits get their ids from the job store in another order. */
    const job **sorted = n ? malloc(n * sizeof *sorted) : NULL;
    if (n && !sorted) {
        conn_reply_error(c, req->msgid, ZMIX_ENOMEM, "jobs: out of memory");
        return;
    }
    size_t k = 0;
    for (job *j = srv->jobs; j; j = j->next)
        if (j->id != 0 && (!state[0] || !strcmp(state, job_state_name(j->state))) &&
            conn_sees_task(c, j->spec.task))
            sorted[k++] = j;
    if (n > 1) qsort(sorted, n, sizeof *sorted, job_cmp_newest_first);
    rpc_map m;
    rpc_map_begin(&m);
    msgpack_packer *list = rpc_map_key(&m, "jobs");
    msgpack_pack_array(list, n);
    for (size_t i = 0; i < n; i++) jobs_pack_brief(sorted[i], list);
    free(sorted);
    reply_map(c, req, &m);
}

static int task_param(conn *c, const rpc_request *req, char *task)
{
    zmix_error err = {0};
    if (job_task_param(&req->params, task, &err) != 0 || conn_scope_task(c, task, &err) != 0) {
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
    if (srv->fleet_jobs) { /* the fleet's tasks, read from Redis off the loop */
        results_tasks_fleet(srv, c, req->msgid);
        return;
    }
    task_cache_info *list = NULL;
    size_t n = 0;
    zmix_error err = {0};
    if (task_cache_list(srv->cache, &list, &n, &err) != 0) {
        reply_err(c, req, &err);
        return;
    }
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    jobs_pack_tasks(srv, c, list, n, &pk);
    conn_reply_result(c, req->msgid, &sb);
    msgpack_sbuffer_destroy(&sb);
    free(list);
}

/* history {job}: the per-generation record of the job's search (from its session while it
 * runs, from its record in the job store once it has ended). */
static void m_history(server *srv, conn *c, const rpc_request *req)
{
    static const char *const keys[] = {"job", NULL};
    if (check_keys(c, req, keys)) return;
    uint64_t remote;
    job *j = job_param(srv, c, req, &remote);
    if (remote) results_history_remote(srv, c, req->msgid, remote);
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
    job *sj = job_id ? jobs_find(srv, (uint64_t)job_id) : NULL;
    if (job_id && on && !sj && srv->fleet_jobs) { /* another member's job */
        remote_subscribe(srv, c, req->msgid, (uint64_t)job_id);
        return;
    }
    if (job_id && (!sj || !conn_sees_task(c, sj->spec.task))) {
        char msg[96];
        snprintf(msg, sizeof msg, "subscribe: no job %lld", (long long)job_id);
        conn_reply_error(c, req->msgid, ZMIX_ENOTFOUND, msg);
        return;
    }
    c->subscribed = on;
    c->subscribed_job = on ? (uint64_t)job_id : 0;
    rpc_map m;
    rpc_map_begin(&m);
    rpc_map_bool(&m, "subscribed", c->subscribed);
    if (c->subscribed_job)
        rpc_map_u64(&m, "job", c->subscribed_job);
    else
        rpc_map_nil(&m, "job");
    reply_map(c, req, &m);
}

static const struct {
    const char *name;
    method_fn fn;
} methods[] = {
    {"auth", m_auth},
    {"ping", m_ping},
    {"info", m_info},
    {"stats", m_stats},
    {"submit", m_submit},
    {"status", m_status},
    {"wait", m_wait},
    {"cancel", m_cancel},
    {"jobs", m_jobs},
    {"get", m_get},
    {"tasks", m_tasks},
    {"evict", m_evict},
    {"subscribe", m_subscribe},
    {"history", m_history},
    {"generate", generate_request},
};

int methods_known(const char *name)
{
    for (size_t i = 0; i < sizeof methods / sizeof *methods; i++)
        if (!strcmp(methods[i].name, name)) return 1;
    return 0;
}

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
