/*
 * zmixd's lifecycle: load the model, its factors and the experts once; open the task cache
 * and the job store (resuming unfinished jobs); start the worker pool; listen; run the loop;
 * on SIGTERM/SIGINT stop accepting, let running scoring calls return early (every finished
 * generation is already checkpointed), flush, exit 0.
 * Thread: main, which runs the event loop.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "daemon/server.h"
#include "util/file.h"
#include "util/sha256.h"
#include "util/clock.h"

#define TICK_MS 50

uint64_t server_now_ms(void)
{
    return zmix_now_ns() / 1000000u;
}

int64_t server_wall_ms(void)
{
    return (int64_t)(zmix_wall_seconds() * 1000.0);
}

static void on_handle_closed(uv_handle_t *h)
{
    (void)h;
}

static void finish_shutdown(server *srv)
{
    zmix_error err = {0};
    if (task_cache_flush(srv->cache, &err) != 0)
        ZLOG_ERROR(srv->log, "flushing the task cache: %s", err.msg);
    http_stop(srv);
    conn_close_all(srv);
    /* Nothing of ours is in flight on the fleet (jobs are idle): leave it before the pool
     * it hands pieces back through goes away. */
    /* Our last checkpoints are written (jobs are idle): give the leases up, so that other
     * members resume our jobs now. */
    fleet_jobs_free(srv->fleet_jobs);
    srv->fleet_jobs = NULL;
    fleet_free(srv->fleet);
    srv->fleet = NULL;
    /* Workers are idle (nothing is on the pool): join them before the async handle they
     * signal goes away. */
    pool_free(srv->pool);
    srv->pool = NULL;
    uv_close((uv_handle_t *)&srv->pool_async, on_handle_closed);
    uv_close((uv_handle_t *)&srv->fleet_async, on_handle_closed);
    uv_close((uv_handle_t *)&srv->tick, on_handle_closed);
    uv_close((uv_handle_t *)&srv->sig_term, on_handle_closed);
    uv_close((uv_handle_t *)&srv->sig_int, on_handle_closed);
    uv_close((uv_handle_t *)&srv->sig_hup, on_handle_closed);
    ZLOG_INFO(srv->log, "shut down cleanly");
}

static void on_tick(uv_timer_t *t)
{
    server *srv = t->data;
    uint64_t now_ms = server_now_ms();
    uint64_t now_ns = zmix_now_ns();
    jobs_sweep_waiters(srv, now_ms);
    remote_poll(srv, now_ms);
    remote_watch(srv, now_ms);
    /* Jobs whose driver died go to the members with room to run them. */
    if (srv->fleet_jobs)
        fleet_jobs_set_capacity(srv->fleet_jobs,
                                srv->shutting_down ? 0 : srv->cfg->max_running - srv->n_unfinished);
    conn_sweep(srv, now_ms);
    if (now_ns - srv->mark_ns >= 1000000000ull) {
        double dt = (double)(now_ns - srv->mark_ns) * 1e-9;
        srv->evals_per_s = (double)(srv->evals_total - srv->evals_at_mark) / dt;
        srv->evals_at_mark = srv->evals_total;
        srv->mark_ns = now_ns;
    }
    if (srv->shutting_down == 1 && jobs_idle(srv)) {
        srv->shutting_down = 2;
        finish_shutdown(srv);
    }
}

void server_begin_shutdown(server *srv, const char *why)
{
    if (srv->shutting_down) return;
    ZLOG_INFO(srv->log, "%s: stopping (running jobs resume from their checkpoints)", why);
    srv->shutting_down = 1;
    conn_close_listeners(srv);
    jobs_begin_shutdown(srv);
}

static void on_signal(uv_signal_t *s, int signum)
{
    server *srv = s->data;
    if (signum == SIGHUP) {
        zmix_error err = {0};
        if (zmix_log_reopen(srv->log, &err) != 0)
            ZLOG_ERROR(srv->log, "SIGHUP: %s", err.msg);
        else
            ZLOG_INFO(srv->log, "SIGHUP: log reopened");
        return;
    }
    server_begin_shutdown(srv, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

static void on_pool_notify(void *arg)
{
    uv_async_send(arg);
}

static int read_token(server *srv, zmix_error *err)
{
    const char *path = srv->cfg->token_file;
    size_t n = 0;
    int rc = fs_read_token_file(path, srv->token, sizeof srv->token, &n, err);
    if (rc) return rc;
    struct stat st;
    if (stat(path, &st) == 0 && (st.st_mode & 077))
        ZLOG_WARN(srv->log, "--token-file %s is readable by other users (mode %03o): chmod 600 it",
                  path, (unsigned)(st.st_mode & 0777));
    /* The daemon's own rule on top of the file format: a short token is guessable. */
    if (n < 16) {
        srv->token[0] = '\0';
        return zmix_error_set(err, ZMIX_EINVAL,
                              "token file %s: token of %zu bytes, at least 16 required", path, n);
    }
    srv->token_len = n;
    return 0;
}

/* The cache directory and its subdirectories, checked before anything is written there and
 * created (0700, or 0750 with --group-readable) when missing. An existing one that another
 * user could write is refused: that user could have planted a link under a name we write. */
static int prepare_cache_dirs(server *srv, zmix_error *err)
{
    static const char *const subdirs[] = {"", "/tasks", "/jobs", "/factors"};
    const server_config *cfg = srv->cfg;
    unsigned mode = cfg->group_readable ? 0750 : 0700;
    for (size_t i = 0; i < sizeof subdirs / sizeof *subdirs; i++) {
        char dir[CONFIG_PATH_MAX + 16];
        snprintf(dir, sizeof dir, "%s%s", cfg->cache_dir, subdirs[i]);
        int rc = fs_check_private_dir(dir, "--cache-dir", err);
        if (!rc) rc = fs_mkdirs_mode(dir, mode, err);
        if (!rc) rc = fs_check_private_dir(dir, "--cache-dir", err); /* created by now */
        if (rc) return rc;
    }
    return 0;
}

int server_tokens_required(const server *srv)
{
    return srv->token_len > 0 || srv->tenants.n > 0;
}

int conn_sees_task(const conn *c, const char *task)
{
    return task_name_seen_by(c->tenant ? c->tenant->name : "", task);
}

/* A task name from a client, as stored: a tenant's names live under TENANT@ (a tenant
 * cannot name another's tasks); the administrator names anyone's as TENANT@TASK, of a tenant
 * the tokens file declares (without tenants, '@' is just not a task-name byte). */
int conn_scope_task(const conn *c, char task[TASK_NAME_MAX + 1], zmix_error *err)
{
    if (!c->tenant) {
        if (!strchr(task, TASK_SCOPE_SEP)) return 0;
        const tenant_table *tt = &c->srv->tenants;
        if (!tt->n)
            return zmix_error_set(err, ZMIX_EINVAL,
                                  "task name: '@' is not allowed: this daemon has no tenants (%s)",
                                  TASK_NAME_RULE);
        char name[TENANT_NAME_MAX + 1];
        task_name_tenant(task, name);
        for (int i = 0; i < tt->n; i++)
            if (!strcmp(tt->v[i].name, name)) return 0;
        return zmix_error_set(err, ZMIX_EINVAL,
                              "task name %s: no tenant '%s' in --tenants (the administrator names "
                              "a tenant's task TENANT@TASK)",
                              task, name);
    }
    if (strchr(task, TASK_SCOPE_SEP))
        return zmix_error_set(err, ZMIX_EINVAL, "task name: '@' is not allowed (%s)",
                              TASK_NAME_RULE);
    size_t room = TASK_NAME_MAX - strlen(c->tenant->name) - 1;
    if (strlen(task) > room)
        return zmix_error_set(err, ZMIX_EINVAL,
                              "task name of %zu bytes is too long: tenant %s's task names are at "
                              "most %zu bytes",
                              strlen(task), c->tenant->name, room);
    char scoped[TENANT_NAME_MAX + 1 + TASK_NAME_MAX + 1]; /* fits TASK_NAME_MAX, checked above */
    snprintf(scoped, sizeof scoped, "%s%c%s", c->tenant->name, TASK_SCOPE_SEP, task);
    memcpy(task, scoped, TASK_NAME_MAX + 1);
    return 0;
}

static int check_security(server *srv, zmix_error *err)
{
    if (srv->cfg->token_file[0]) {
        int rc = read_token(srv, err);
        if (rc) return rc;
    }
    if (srv->cfg->tenants_file[0]) {
        int rc = tenants_load(srv->cfg->tenants_file, srv->cfg->tenant_max_running,
                              srv->cfg->tenant_max_queued, &srv->tenants, err);
        if (rc) return rc;
        ZLOG_INFO(srv->log, "%d tenants from %s", srv->tenants.n, srv->cfg->tenants_file);
    }
    for (int i = 0; i < srv->cfg->n_listen; i++) {
        listen_addr a;
        int rc = config_parse_listen(srv->cfg->listen[i], &a, err);
        if (rc) return rc;
        if (a.is_tcp && !a.loopback && !server_tokens_required(srv))
            return zmix_error_set(err, ZMIX_EAUTH,
                                  "--listen %s is not loopback: a --token-file or --tenants is "
                                  "required",
                                  srv->cfg->listen[i]);
    }
    return 0;
}

#ifdef ZMIX_CHECKED
void server_check_failed(const char *what, const char *file, int line)
{
    fprintf(stderr, "zmixd: invariant violated at %s:%d: %s\n", file, line, what);
    abort();
}
#endif

static void log_problems(server *srv, persist_problems *pp, const char *what)
{
    for (size_t i = 0; i < pp->n; i++)
        ZLOG_WARN(srv->log, "%s: skipped: %s", what, pp->items[i].msg);
    persist_problems_free(pp);
}

/* The memory plan (src/model/memory_plan.c), before any work: logged, and a model that will
 * not fit in MemAvailable is refused, naming the setting that would make it fit. */
static int plan_memory(server *srv, zmix_error *err)
{
    const server_config *cfg = srv->cfg;
    zmix_memory_settings ms;
    zmix_memory_settings_default(&ms);
    int rc = zmix_adapt_set_parse(cfg->adapt, &ms.adapt, err);
    if (rc) return rc;
    ms.n_experts = cfg->n_experts;
    ms.workers = cfg->workers;
    ms.max_tokens = cfg->limits.max_tokens;
    ms.other = cfg->cache_bytes;
    ms.factor_dtype = cfg->factor_dtype;
    ms.wprime = cfg->wprime;
    ms.factor_cache = 1; /* always: under --cache-dir */
    ms.wprime_option = "--wprime";
    ms.workers_option = "--workers";
    ms.factor_option = "--factor-dtype";
    ms.limit_option = "--memory-limit";
    char report[1024];
    rc = zmix_memory_preflight(cfg->model, &ms, cfg->memory_limit, report, sizeof report, err);
    if (report[0]) ZLOG_INFO(srv->log, "%s", report);
    return rc;
}

/* What the runtime holds, as built (the plan above is what it would hold at most). */
static void log_runtime_memory(server *srv)
{
    zmix_runtime_memory m;
    zmix_runtime_memory_get(srv->rt, &m);
    const double mib = 1 << 20;
    ZLOG_INFO(srv->log,
              "W' mode %s: expert matrices %.1f MiB, SVD factors %.1f MiB on the heap and %.1f "
              "MiB mapped from the factor cache%s, σ and experts %.1f MiB",
              m.mode, (double)m.expert_matrices / mib, (double)m.factors / mib,
              (double)m.factors_mapped / mib,
              m.factors_mapped && m.expert_matrices ? " (not resident until composed from)" : "",
              (double)(m.sigma + m.experts) / mib);
}

static int load_model(server *srv, zmix_error *err)
{
    server_config *cfg = srv->cfg;
    int rc = plan_memory(srv, err);
    if (rc) return rc;
    rc = zmix_model_load(cfg->model, &srv->model, err);
    if (rc) return rc;
    zmix_runtime_opts ro;
    zmix_runtime_opts_default(&ro);
    if ((rc = zmix_adapt_set_parse(cfg->adapt, &ro.adapt, err))) return rc;
    char factors[CONFIG_PATH_MAX + 16];
    snprintf(factors, sizeof factors, "%s/factors", cfg->cache_dir);
    ro.factor_cache_dir = factors; /* created by prepare_cache_dirs */
    ro.factor_file_mode = cfg->group_readable ? 0640 : 0600;
    ro.factor_dtype = cfg->factor_dtype;
    ro.wprime = cfg->wprime;
    rc = zmix_runtime_create(srv->model, &ro, (const char *const *)cfg->experts, cfg->n_experts,
                             &srv->rt, err);
    if (rc) return rc;
    log_runtime_memory(srv);
    zmix_adapt_experts_digest(srv->rt, srv->experts_digest);
    const zmix_model_config *mc = zmix_model_get_config(srv->model);
    srv->limits = cfg->limits;
    srv->limits.vocab_size = mc->vocab_size;
    srv->limits.context = mc->max_seq_len;
    srv->limits.n_experts = zmix_runtime_n_experts(srv->rt);
    srv->limits.n_matrices = zmix_runtime_n_matrices(srv->rt);
    srv->limits.tokenizer = zmix_model_tokenizer(srv->model);
    /* The search defaults of zmix adapt, so that the same request gives the same result. */
    zmix_adapt_opts defaults;
    zmix_adapt_opts_default(&defaults);
    srv->cem_defaults = defaults.cem;
    return 0;
}

static int open_persistence(server *srv, zmix_error *err)
{
    persist_problems pp = {0};
    task_cache_config tc;
    task_cache_config_default(&tc);
    tc.dir = srv->cfg->cache_dir;
    tc.memory_budget = srv->cfg->cache_bytes;
    tc.file_mode = srv->cfg->group_readable ? 0640 : 0600;
    int rc = task_cache_open(&tc, &srv->cache, &pp, err);
    log_problems(srv, &pp, "task cache");
    if (rc) return rc;
    if (srv->fleet_jobs) {
        /* The fleet's job store is Redis; jobs of this member's past lives are claimed back
         * from it by whichever member sees their leases expire first. */
        ZLOG_INFO(srv->log, "jobs are kept in the fleet's Redis (%s), not in %s/jobs",
                  fleet_url(srv->fleet), srv->cfg->cache_dir);
        return 0;
    }
    job_store_config jc;
    job_store_config_default(&jc);
    jc.dir = srv->cfg->cache_dir;
    jc.file_mode = tc.file_mode;
    job_recovered *rec = NULL;
    size_t n_rec = 0;
    rc = job_store_open(&jc, &srv->store, &rec, &n_rec, &pp, err);
    log_problems(srv, &pp, "job store");
    if (rc) return rc;
    rc = jobs_recover(srv, rec, n_rec, err);
    job_recovered_free(rec, n_rec);
    return rc;
}

static struct redisContext *connect_fleet(void *f, zmix_error *err)
{
    return fleet_connect(f, err);
}

/* --store redis://...: joins the fleet before recovered jobs start, so that their steps are
 * shared too. */
static int join_fleet(server *srv, zmix_error *err)
{
    server_config *cfg = srv->cfg;
    store_addr sa;
    int rc = config_parse_store(cfg->store, &sa, err);
    if (rc || !sa.redis) return rc;
    char password[512] = "";
    size_t n = 0;
    if (cfg->store_password_file[0]) {
        rc = fs_read_token_file(cfg->store_password_file, password, sizeof password, &n, err);
        if (rc) return zmix_error_prefix(err, "--store-password-file");
        struct stat st;
        if (stat(cfg->store_password_file, &st) == 0 && (st.st_mode & 077))
            ZLOG_WARN(srv->log,
                      "--store-password-file %s is readable by other users (mode %03o): chmod "
                      "600 it",
                      cfg->store_password_file, (unsigned)(st.st_mode & 0777));
    }
    fleet_config fc = {.url = cfg->store,
                       .host = sa.host,
                       .port = sa.port,
                       .db = sa.db,
                       .password = n ? password : NULL,
                       .scorers = cfg->workers,
                       .claim_ms = cfg->fleet_claim_ms,
                       .model = srv->model,
                       .rt = srv->rt,
                       .model_fingerprint = zmix_model_fingerprint(srv->model),
                       .experts_digest = srv->experts_digest,
                       .log = srv->log,
                       .pool = srv->pool};
    rc = fleet_open(&fc, &srv->fleet, err);
    memset(password, 0, sizeof password);
    if (rc) return rc;
    fleet_jobs_config jc = {.member = fleet_member(srv->fleet),
                            .url = fleet_url(srv->fleet),
                            .connect = connect_fleet,
                            .connect_arg = srv->fleet,
                            .lease_ms = cfg->fleet_lease_ms,
                            .log = srv->log,
                            .notify = on_pool_notify,
                            .notify_arg = &srv->fleet_async};
    return fleet_jobs_open(&jc, &srv->fleet_jobs, err);
}

static void teardown(server *srv)
{
    fleet_jobs_free(srv->fleet_jobs);
    srv->fleet_jobs = NULL;
    free(srv->remote_seen);
    srv->remote_seen = NULL;
    while (srv->remote_waits) {
        parked *p = srv->remote_waits;
        srv->remote_waits = p->job_next;
        if (p->conn) conn_unpark(p);
        free(p);
    }
    fleet_free(srv->fleet);
    srv->fleet = NULL;
    pool_free(srv->pool);
    jobs_free_all(srv);
    if (srv->cache) task_cache_free(srv->cache);
    if (srv->store) job_store_free(srv->store);
    zmix_runtime_free(srv->rt);
    zmix_model_free(srv->model);
    tenants_free(&srv->tenants);
}

int server_run(server_config *cfg, zmix_log *log, zmix_error *err)
{
    server srv_storage;
    server *srv = &srv_storage;
    memset(srv, 0, sizeof *srv);
    srv->cfg = cfg;
    srv->on_request = methods_dispatch;
    srv->log = log;
    srv->start_ns = srv->mark_ns = zmix_now_ns();
    uv_loop_t loop;
    int rc = uv_loop_init(&loop);
    if (rc) return zmix_error_set(err, ZMIX_EIO, "event loop: %s", uv_strerror(rc));
    srv->loop = &loop;
#ifdef ZMIX_CHECKED
    srv->loop_thread = pthread_self();
#endif

    if ((rc = check_security(srv, err)) || (rc = prepare_cache_dirs(srv, err))) goto fail_loop;
    uint64_t t0 = zmix_now_ns();
    if ((rc = load_model(srv, err))) goto fail;
    ZLOG_INFO(log, "model %s: %d adapted matrices (%s), %d experts, ready in %.2f s", cfg->model,
              zmix_runtime_n_matrices(srv->rt), cfg->adapt, zmix_runtime_n_experts(srv->rt),
              (double)(zmix_now_ns() - t0) * 1e-9);
    uv_async_init(&loop, &srv->pool_async, jobs_on_pool_async);
    srv->pool_async.data = srv;
    uv_async_init(&loop, &srv->fleet_async, jobs_on_fleet_async);
    srv->fleet_async.data = srv;
    if ((rc = pool_create(cfg->workers, on_pool_notify, &srv->pool_async, &srv->pool, err))) {
        uv_close((uv_handle_t *)&srv->pool_async, NULL);
        uv_close((uv_handle_t *)&srv->fleet_async, NULL);
        goto fail;
    }
    uv_timer_init(&loop, &srv->tick);
    srv->tick.data = srv;
    uv_signal_init(&loop, &srv->sig_term);
    uv_signal_init(&loop, &srv->sig_int);
    uv_signal_init(&loop, &srv->sig_hup);
    srv->sig_term.data = srv->sig_int.data = srv->sig_hup.data = srv;
    if ((rc = join_fleet(srv, err)) || (rc = open_persistence(srv, err)) ||
        (rc = conn_listen_all(srv, err)) || (rc = http_start(srv, err))) {
        conn_close_listeners(srv);
        srv->shutting_down = 2;
        jobs_begin_shutdown(srv);
        /* Let scoring started by recovery stop, then close everything. */
        while (!jobs_idle(srv)) uv_run(&loop, UV_RUN_ONCE);
        fleet_jobs_free(srv->fleet_jobs);
        srv->fleet_jobs = NULL;
        fleet_free(srv->fleet);
        srv->fleet = NULL;
        pool_free(srv->pool);
        srv->pool = NULL;
        uv_close((uv_handle_t *)&srv->pool_async, NULL);
        uv_close((uv_handle_t *)&srv->fleet_async, NULL);
        uv_close((uv_handle_t *)&srv->tick, NULL);
        uv_close((uv_handle_t *)&srv->sig_term, NULL);
        uv_close((uv_handle_t *)&srv->sig_int, NULL);
        uv_close((uv_handle_t *)&srv->sig_hup, NULL);
        uv_run(&loop, UV_RUN_DEFAULT);
        goto fail;
    }
    uv_signal_start(&srv->sig_term, on_signal, SIGTERM);
    uv_signal_start(&srv->sig_int, on_signal, SIGINT);
    uv_signal_start(&srv->sig_hup, on_signal, SIGHUP);
    uv_timer_start(&srv->tick, on_tick, TICK_MS, TICK_MS);
    ZLOG_INFO(log, "zmixd ready: %d workers, cache %s", pool_workers(srv->pool), cfg->cache_dir);
    uv_run(&loop, UV_RUN_DEFAULT);
    teardown(srv);
    uv_loop_close(&loop);
    return 0;
fail:
    teardown(srv);
fail_loop:
    tenants_free(&srv->tenants);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return rc;
}
