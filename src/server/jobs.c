/*
 * The job registry and each job's pipeline, driven from the event loop.
 *
 *   submit ──io──▶ accepted (on disk) ──▶ queued ──io──▶ running:
 *       ask → chunks on the pool → all back → tell → checkpoint ──io──▶ ask → …
 *   CEM done ──pool──▶ baselines, z′ ──io──▶ cache put + state done ──▶ waiters answered
 *
 * A job has at most one step in flight (a set of pool chunks, or one libuv work request for
 * a blocking persistence call), so its fields are touched by one thread at a time and the
 * job store sees its writes in order. Persistence calls fsync and must never run on the loop;
 * scoring runs on the pool; the loop only moves small state and answers clients.
 *
 * Determinism: a job's random stream is derived from its cache key, so the same request
 * gives the same α; the checkpoint written after each generation holds the whole CEM state,
 * so a job resumed after a crash replays exactly the generations it had not finished.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "server.h"
#include "util/clock.h"

enum { ITEM_CHUNK = 1, ITEM_EXTRAS = 2 };
enum io_kind { IO_ACCEPT = 1, IO_START, IO_CHECKPOINT, IO_FINISH, IO_GET, IO_EVICT };

typedef struct io_op {
    uv_work_t req;
    server *srv;
    job *j;
    int kind;
    int rc;
    zmix_error err;
    /* IO_ACCEPT */
    int cache_hit;
    uint64_t new_id;
    task_result res;
    /* IO_CHECKPOINT */
    uint8_t *data;
    size_t len;
    int generation;
    /* IO_FINISH */
    job_state target;
    char reason[JOB_REASON_MAX];
    int put_rc;
    zmix_error put_err;
    /* IO_GET / IO_EVICT */
    parked *p;
    char task[TASK_NAME_MAX + 1];
    int with_vectors;
} io_op;

static void schedule(server *srv);
static void begin_generation(job *j);
static void generation_scored(job *j);
static void finish(job *j, job_state state, const char *reason);
static void io_submit(io_op *op);

/* ---- Registry -------------------------------------------------------------------------- */

static job *job_new(server *srv)
{
    job *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    j->srv = srv;
    j->next = srv->jobs;
    if (srv->jobs) srv->jobs->prev = j;
    srv->jobs = j;
    return j;
}

static void job_release_work(job *j)
{
    free(j->pop);
    free(j->scores);
    free(j->items);
    j->pop = NULL;
    j->scores = NULL;
    j->items = NULL;
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
    if (j->prev)
        j->prev->next = j->next;
    else
        srv->jobs = j->next;
    if (j->next) j->next->prev = j->prev;
    free_waiters(j);
    job_release_work(j);
    zmix_cem_free(j->cem);
    job_spec_free(&j->spec);
    free(j->expert_scores);
    free(j->best_alpha);
    free(j->z);
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
    while (srv->jobs) job_destroy(srv->jobs);
}

int jobs_idle(const server *srv)
{
    if (srv->io_inflight > 0) return 0;
    for (const job *j = srv->jobs; j; j = j->next)
        if (j->chunks_out > 0) return 0;
    return 1;
}

/* ---- Answers ------------------------------------------------------------------------- */

static void reply_status(parked *p, server *srv, const job *j, int timed_out)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    rpc_pack_cstr(&pk, "timed_out");
    timed_out ? msgpack_pack_true(&pk) : msgpack_pack_false(&pk);
    rpc_pack_cstr(&pk, "status");
    jobs_pack_status(srv, j, &pk);
    parked_reply_result(p, &sb);
    msgpack_sbuffer_destroy(&sb);
}

static void reply_submitted(parked *p, const job *j)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 5);
    rpc_pack_cstr(&pk, "job");
    msgpack_pack_uint64(&pk, j->id);
    rpc_pack_cstr(&pk, "task");
    rpc_pack_cstr(&pk, j->spec.task);
    rpc_pack_cstr(&pk, "state");
    rpc_pack_cstr(&pk, job_state_name(j->state));
    rpc_pack_cstr(&pk, "cached");
    msgpack_pack_false(&pk);
    rpc_pack_cstr(&pk, "coalesced");
    p->coalesced ? msgpack_pack_true(&pk) : msgpack_pack_false(&pk);
    parked_reply_result(p, &sb);
    msgpack_sbuffer_destroy(&sb);
}

static void reply_cached(parked *p, server *srv, const task_result *r)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 4);
    rpc_pack_cstr(&pk, "job");
    msgpack_pack_uint64(&pk, r->job_id);
    rpc_pack_cstr(&pk, "task");
    rpc_pack_cstr(&pk, r->task);
    rpc_pack_cstr(&pk, "cached");
    msgpack_pack_true(&pk);
    rpc_pack_cstr(&pk, "result");
    jobs_pack_result(srv, r, 0, &pk);
    parked_reply_result(p, &sb);
    msgpack_sbuffer_destroy(&sb);
}

static void notify_progress(server *srv, const job *j)
{
    int any = 0;
    for (conn *c = srv->conns; c && !any; c = c->next)
        any = c->subscribed && (!c->subscribed_job || c->subscribed_job == j->id);
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
        if (c->subscribed && (!c->subscribed_job || c->subscribed_job == j->id))
            conn_send(c, out.data, out.size);
    }
    msgpack_sbuffer_destroy(&out);
    msgpack_sbuffer_destroy(&params);
}

/* ---- Waiters --------------------------------------------------------------------------- */

void jobs_add_waiter(server *srv, job *j, conn *c, uint32_t msgid, uint64_t timeout_ms)
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
    if (j->phase == PH_FINISHED || timeout_ms == 0) {
        reply_status(p, srv, j, j->phase != PH_FINISHED);
        free(p);
        return;
    }
    p->job_next = j->waiters;
    j->waiters = p;
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
                if (!gone) reply_status(p, srv, j, 1);
                free(p);
            } else {
                pp = &p->job_next;
            }
        }
    }
}

/* Answers every waiter of a finished job (and the submit acks still parked on it). */
static void answer_waiters(job *j)
{
    server *srv = j->srv;
    while (j->waiters) {
        parked *p = j->waiters;
        j->waiters = p->job_next;
        if (p->kind == PARK_SUBMIT)
            reply_submitted(p, j);
        else
            reply_status(p, srv, j, 0);
        free(p);
    }
}

/* ---- Pool items ------------------------------------------------------------------------ */

static void run_chunk(pool_item *it)
{
    job *j = it->owner;
    const zmix_runtime *rt = j->srv->rt;
    zmix_score_ctl ctl = {.n_threads = 1, .stop = &j->stop};
    size_t dim = (size_t)j->spec.cem.dim;
    zmix_error_clear(&it->err);
    it->rc = zmix_score_alpha(rt, &j->spec.compose, &j->spec.examples, it->end - it->begin,
                              j->pop + (size_t)it->begin * dim, &ctl, j->scores + it->begin, NULL,
                              &it->err);
}

/* The result's extras: z′ of the best α, the base model's score, each expert's alone. */
static void run_extras(pool_item *it)
{
    job *j = it->owner;
    const zmix_runtime *rt = j->srv->rt;
    zmix_score_ctl ctl = {.n_threads = 1, .stop = &j->stop};
    int dim = j->spec.cem.dim, K = zmix_runtime_n_experts(rt);
    size_t zt = zmix_runtime_z_total(rt);
    zmix_error_clear(&it->err);
    float *ones = malloc(zt * sizeof *ones);
    float *alphas = calloc((size_t)K * (size_t)dim, sizeof *alphas);
    if (!ones || !alphas || !j->best_alpha || !j->z || !j->expert_scores) {
        it->rc = zmix_error_set(&it->err, ZMIX_ENOMEM, "out of memory for the result");
        goto out;
    }
    it->rc = zmix_cem_best(j->cem, j->best_alpha, &j->best_score);
    if (it->rc) {
        zmix_error_set(&it->err, it->rc, "no best candidate");
        goto out;
    }
    it->rc = zmix_compose_z(rt, &j->spec.compose, j->best_alpha, j->z, &it->err);
    if (it->rc) goto out;
    for (size_t i = 0; i < zt; i++) ones[i] = 1.0f;
    it->rc = zmix_score_z(rt, j->spec.compose.rescale, &j->spec.examples, 1, ones, &ctl,
                          &j->base_score, NULL, &it->err);
    if (it->rc) goto out;
    /* Expert k alone: α = e_k (on every matrix when α is per layer). */
    for (int k = 0; k < K; k++)
        for (int m = 0; m < dim / K; m++) alphas[(size_t)k * dim + (size_t)m * K + k] = 1.0f;
    it->rc = zmix_score_alpha(rt, &j->spec.compose, &j->spec.examples, K, alphas, &ctl,
                              j->expert_scores, NULL, &it->err);
out:
    free(ones);
    free(alphas);
}

static void fail(job *j, const char *fmt_reason)
{
    ZLOG_WARN(j->srv->log, "job %llu (%s) failed: %s", (unsigned long long)j->id, j->spec.task,
              fmt_reason);
    finish(j, JOB_FAILED, fmt_reason);
}

static void begin_extras(job *j)
{
    server *srv = j->srv;
    int K = zmix_runtime_n_experts(srv->rt);
    free(j->items);
    j->items = calloc(1, sizeof *j->items);
    if (!j->best_alpha) j->best_alpha = malloc((size_t)j->spec.cem.dim * sizeof(float));
    if (!j->z) j->z = malloc(zmix_runtime_z_total(srv->rt) * sizeof(float));
    if (!j->expert_scores) j->expert_scores = calloc((size_t)K, sizeof(zmix_score));
    if (!j->items) {
        fail(j, "out of memory");
        return;
    }
    j->items->run = run_extras;
    j->items->owner = j;
    j->items->kind = ITEM_EXTRAS;
    j->chunks_out = 1;
    j->phase = PH_EXTRAS;
    j->gen_started_ns = zmix_now_ns();
    pool_submit(srv->pool, &j->queue, j->items);
}

static void begin_generation(job *j)
{
    server *srv = j->srv;
    zmix_error err = {0};
    if (srv->shutting_down) {
        j->phase = PH_QUEUED; /* resumed from its checkpoint at the next start */
        return;
    }
    if (j->cancel_requested) {
        finish(j, JOB_CANCELLED, "cancelled by a client");
        return;
    }
    if (!j->cem && zmix_cem_create(&j->spec.cem, &j->cem, &err) != 0) {
        fail(j, err.msg);
        return;
    }
    if (zmix_cem_done(j->cem) != ZMIX_CEM_RUNNING) {
        begin_extras(j);
        return;
    }
    int pop = j->spec.cem.pop_size, dim = j->spec.cem.dim;
    if (!j->pop) j->pop = malloc((size_t)pop * (size_t)dim * sizeof *j->pop);
    if (!j->scores) j->scores = calloc((size_t)pop, sizeof *j->scores);
    if (!j->pop || !j->scores) {
        fail(j, "out of memory for the population");
        return;
    }
    j->first_unscored = zmix_cem_ask(j->cem, j->pop);
    int n = pop - j->first_unscored;
    /* Chunks small enough that every worker gets some and other jobs can interleave, large
     * enough that per-call overhead stays small. Scores do not depend on the split. */
    int workers = pool_workers(srv->pool);
    int chunk = (n + 2 * workers - 1) / (2 * workers);
    if (chunk < 1) chunk = 1;
    int n_items = (n + chunk - 1) / chunk;
    free(j->items);
    j->items = calloc((size_t)(n_items > 0 ? n_items : 1), sizeof *j->items);
    if (!j->items) {
        fail(j, "out of memory");
        return;
    }
    for (int i = 0; i < n_items; i++) {
        pool_item *it = &j->items[i];
        it->run = run_chunk;
        it->owner = j;
        it->kind = ITEM_CHUNK;
        it->begin = j->first_unscored + i * chunk;
        it->end = it->begin + chunk < pop ? it->begin + chunk : pop;
        it->next = i + 1 < n_items ? &j->items[i + 1] : NULL;
    }
    j->chunks_out = n_items;
    j->phase = PH_SCORING;
    j->gen_started_ns = zmix_now_ns();
    if (n_items == 0) { /* every member's score already known: nothing to wait for */
        generation_scored(j);
        return;
    }
    pool_submit(srv->pool, &j->queue, j->items);
}

static void generation_scored(job *j)
{
    server *srv = j->srv;
    zmix_error err = {0};
    j->run_ns += zmix_now_ns() - j->gen_started_ns;
    if (j->fail_pending) {
        fail(j, j->reason);
        return;
    }
    if (j->cancel_requested) {
        finish(j, JOB_CANCELLED, "cancelled by a client");
        return;
    }
    if (srv->shutting_down) {
        j->phase = PH_QUEUED;
        return;
    }
    int pop = j->spec.cem.pop_size;
    /* A single NaN is a degenerate candidate (e.g. every α clamped to 0, so z′ has no mass
     * to rescale): the engine ranks it below everything and the search goes on. A generation
     * with nothing but NaN means the model or experts are broken: the job fails. */
    int n_nan = 0, first_nan = -1;
    for (int i = j->first_unscored; i < pop; i++) {
        if (isnan(j->scores[i].accuracy) || isnan(j->scores[i].loglik)) {
            if (first_nan < 0) first_nan = i;
            n_nan++;
        }
    }
    if (n_nan > 0 && n_nan == pop - j->first_unscored) {
        char why[JOB_REASON_MAX];
        snprintf(why, sizeof why, "every candidate of generation %d scored NaN",
                 zmix_cem_generation(j->cem) + 1);
        fail(j, why);
        return;
    }
    if (n_nan > 0)
        ZLOG_DEBUG(srv->log, "job %llu: generation %d: %d candidates scored NaN (first: %d)",
                   (unsigned long long)j->id, zmix_cem_generation(j->cem) + 1, n_nan, first_nan);
    if (zmix_cem_tell(j->cem, j->scores, &err) != 0) {
        fail(j, err.msg);
        return;
    }
    long n = pop - j->first_unscored;
    j->evals_here += n;
    srv->evals_total += (uint64_t)n;
    notify_progress(srv, j);
    io_op *op = calloc(1, sizeof *op);
    if (!op) {
        fail(j, "out of memory for the checkpoint");
        return;
    }
    /* The state is serialised on the I/O thread, not here: with a long history it is
     * megabytes, and the loop must stay free. Nothing touches the engine meanwhile (the job
     * is in PH_IO; status only reads it). */
    op->kind = IO_CHECKPOINT;
    op->j = j;
    op->generation = zmix_cem_generation(j->cem);
    j->phase = PH_IO;
    io_submit(op);
}

static void extras_done(job *j, pool_item *it)
{
    j->run_ns += zmix_now_ns() - j->gen_started_ns;
    if (j->cancel_requested) {
        finish(j, JOB_CANCELLED, "cancelled by a client");
        return;
    }
    if (j->srv->shutting_down) {
        j->phase = PH_QUEUED;
        return;
    }
    if (it->rc != 0) {
        fail(j, it->err.msg);
        return;
    }
    finish(j, JOB_DONE, zmix_cem_stop_name(zmix_cem_done(j->cem)));
}

void jobs_on_pool_async(uv_async_t *h)
{
    server *srv = h->data;
    pool_item *items = pool_take_done(srv->pool);
    while (items) {
        pool_item *it = items;
        items = it->next;
        job *j = it->owner;
        j->chunks_out--;
        if (it->kind == ITEM_EXTRAS) {
            extras_done(j, it);
            continue;
        }
        if (it->rc != 0 && it->rc != ZMIX_ECANCELED && !j->fail_pending) {
            /* One chunk failed: the job fails alone. Stop its other chunks early. */
            j->fail_pending = 1;
            snprintf(j->reason, sizeof j->reason, "generation %d: %.200s",
                     zmix_cem_generation(j->cem) + 1, it->err.msg);
            __atomic_store_n(&j->stop, 1, __ATOMIC_RELAXED);
            for (pool_item *w = pool_withdraw(srv->pool, &j->queue); w; w = w->next)
                j->chunks_out--;
        }
        if (j->chunks_out == 0) generation_scored(j);
    }
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
        if (j->phase != PH_FINISHED) continue;
        n++;
        if (!j->waiters) oldest = j; /* the list is newest first */
    }
    if (n > FINISHED_JOBS_KEPT && oldest) job_destroy(oldest);
}

/* ---- Persistence steps (libuv threadpool) ---------------------------------------------- */

/* The provenance of a result, kept in the record's "examples" blob (opaque to the cache):
 * what it was made from, so that `get` can tell a serving system whether the z′ applies to
 * the model and experts this daemon holds. */
static void pack_provenance(server *srv, const job *j, msgpack_sbuffer *sb)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    rpc_pack_cstr(&pk, "examples_digest");
    rpc_pack_cstr(&pk, j->examples_digest);
    rpc_pack_cstr(&pk, "model_fingerprint");
    rpc_pack_cstr(&pk, zmix_model_fingerprint(srv->model));
    rpc_pack_cstr(&pk, "experts_digest");
    rpc_pack_cstr(&pk, srv->experts_digest);
}

static void fill_task_result(job *j, task_result *r, uint8_t **settings, size_t *settings_len,
                             char ***names, uint32_t **ranks, msgpack_sbuffer *provenance)
{
    server *srv = j->srv;
    memset(r, 0, sizeof *r);
    snprintf(r->task, sizeof r->task, "%s", j->spec.task);
    snprintf(r->key, sizeof r->key, "%s", j->key);
    r->job_id = j->id;
    r->created_ms = server_wall_ms();
    r->score = j->best_score;
    r->base_score = j->base_score;
    r->n_experts = zmix_runtime_n_experts(srv->rt);
    r->expert_scores = j->expert_scores;
    r->n_alpha = j->spec.cem.dim;
    r->alpha = j->best_alpha;
    int M = zmix_runtime_n_matrices(srv->rt);
    *names = calloc((size_t)M, sizeof **names);
    *ranks = calloc((size_t)M, sizeof **ranks);
    if (*names && *ranks) {
        for (int m = 0; m < M; m++) {
            (*names)[m] = (char *)zmix_runtime_matrix_name(srv->rt, m);
            (*ranks)[m] = (uint32_t)zmix_runtime_matrix_rank(srv->rt, m);
        }
        r->n_matrices = M;
    }
    r->matrix_names = *names;
    r->ranks = *ranks;
    r->z = j->z;
    job_spec_settings_bytes(&j->spec, settings, settings_len);
    r->settings = *settings;
    r->settings_len = *settings_len;
    pack_provenance(srv, j, provenance);
    r->examples = (uint8_t *)provenance->data;
    r->examples_len = provenance->size;
}

static void io_work(uv_work_t *req)
{
    io_op *op = req->data;
    server *srv = op->srv;
    job *j = op->j;
    zmix_error_clear(&op->err);
    switch (op->kind) {
    case IO_ACCEPT: {
        if (!j->spec.recompute &&
            task_cache_get_if_key(srv->cache, j->spec.task, j->key, &op->res, NULL) == 0) {
            op->cache_hit = 1;
            break;
        }
        job_record rec;
        memset(&rec, 0, sizeof rec);
        snprintf(rec.task, sizeof rec.task, "%s", j->spec.task);
        snprintf(rec.key, sizeof rec.key, "%s", j->key);
        rec.priority = j->spec.priority;
        rec.submit_ms = j->submit_ms;
        rec.examples = j->spec.examples;
        job_spec_settings_bytes(&j->spec, &rec.settings, &rec.settings_len);
        op->rc = job_store_create(srv->store, &rec, &op->err);
        op->generation = 0;
        op->new_id = rec.id; /* j->id is set on the loop, which reads it at any time */
        free(rec.settings);
        break;
    }
    case IO_START:
        op->rc =
            job_store_set_state(srv->store, j->id, JOB_RUNNING, NULL, server_wall_ms(), &op->err);
        break;
    case IO_CHECKPOINT:
        op->rc = zmix_cem_save(j->cem, &op->data, &op->len, &op->err);
        if (op->rc == 0)
            op->rc = job_store_checkpoint(srv->store, j->id, op->generation, op->data, op->len,
                                          &op->err);
        free(op->data);
        op->data = NULL;
        break;
    case IO_FINISH:
        if (op->target == JOB_DONE) {
            task_result r;
            uint8_t *settings;
            size_t settings_len;
            char **names;
            uint32_t *ranks;
            msgpack_sbuffer provenance;
            msgpack_sbuffer_init(&provenance);
            fill_task_result(j, &r, &settings, &settings_len, &names, &ranks, &provenance);
            op->put_rc = task_cache_put(srv->cache, &r, &op->put_err);
            msgpack_sbuffer_destroy(&provenance);
            free(settings);
            free(names);
            free(ranks);
        }
        /* A result that could not be written stays in memory only. The job record then stays
         * "running" so that, after a crash, the job resumes from its final checkpoint and
         * writes the (bit-identical) result again, instead of being remembered as done with
         * its result lost. */
        if (op->target == JOB_DONE && op->put_rc != 0) break;
        op->rc = job_store_set_state(srv->store, j->id, op->target, op->reason, server_wall_ms(),
                                     &op->err);
        break;
    case IO_GET: op->rc = task_cache_get(srv->cache, op->task, &op->res, &op->err); break;
    case IO_EVICT: op->rc = task_cache_evict(srv->cache, op->task, &op->err); break;
    }
}

static void io_after(uv_work_t *req, int status)
{
    io_op *op = req->data;
    server *srv = op->srv;
    job *j = op->j;
    srv->io_inflight--;
    switch (op->kind) {
    case IO_ACCEPT:
        if (op->cache_hit) {
            srv->submits_cached++;
            while (j->waiters) {
                parked *p = j->waiters;
                j->waiters = p->job_next;
                reply_cached(p, srv, &op->res);
                free(p);
            }
            task_result_free(&op->res);
            srv->n_unfinished--;
            job_destroy(j);
        } else if (op->rc != 0) {
            ZLOG_ERROR(srv->log, "submit %s: job store: %s", j->spec.task, op->err.msg);
            while (j->waiters) {
                parked *p = j->waiters;
                j->waiters = p->job_next;
                parked_reply_error(p, op->rc, op->err.msg);
                free(p);
            }
            srv->n_unfinished--;
            job_destroy(j);
        } else {
            j->id = op->new_id;
            j->state = JOB_QUEUED;
            j->phase = PH_QUEUED;
            ZLOG_INFO(srv->log, "job %llu: task %s accepted (%d examples, pop %d, %d generations)",
                      (unsigned long long)j->id, j->spec.task, j->spec.examples.n,
                      j->spec.cem.pop_size, j->spec.cem.max_generations);
            while (j->waiters) {
                parked *p = j->waiters;
                j->waiters = p->job_next;
                reply_submitted(p, j);
                free(p);
            }
            if (j->cancel_requested)
                finish(j, JOB_CANCELLED, "cancelled by a client");
            else
                schedule(srv);
        }
        break;
    case IO_START:
        if (op->rc != 0)
            ZLOG_WARN(srv->log, "job %llu: %s", (unsigned long long)j->id, op->err.msg);
        j->started = 1;
        begin_generation(j);
        break;
    case IO_CHECKPOINT:
        if (op->rc != 0)
            ZLOG_WARN(srv->log, "job %llu: checkpoint of generation %d not saved: %s",
                      (unsigned long long)j->id, op->generation, op->err.msg);
        begin_generation(j);
        break;
    case IO_FINISH:
        if (op->put_rc != 0) {
            ZLOG_ERROR(srv->log,
                       "job %llu: result of %s kept in memory only (the job is redone from "
                       "its last checkpoint after a restart): %s",
                       (unsigned long long)j->id, j->spec.task, op->put_err.msg);
            snprintf(j->warning, sizeof j->warning,
                     "result not saved to disk (served from memory, redone after a restart): "
                     "%.160s",
                     op->put_err.msg);
        }
        if (op->rc != 0)
            ZLOG_WARN(srv->log, "job %llu: job store: %s", (unsigned long long)j->id, op->err.msg);
        j->state = op->target;
        j->phase = PH_FINISHED;
        j->end_ms = server_wall_ms();
        snprintf(j->reason, sizeof j->reason, "%s", op->reason);
        if (op->target == JOB_DONE)
            srv->jobs_done++;
        else if (op->target == JOB_FAILED)
            srv->jobs_failed++;
        else
            srv->jobs_cancelled++;
        ZLOG_INFO(srv->log, "job %llu: %s (%s)", (unsigned long long)j->id,
                  job_state_name(op->target), op->reason);
        job_release_work(j);
        job_spec_free(&j->spec); /* the examples; status and history need only the rest */
        answer_waiters(j);
        notify_progress(srv, j);
        prune_finished(srv);
        schedule(srv);
        break;
    case IO_GET:
        if (op->rc != 0) {
            parked_reply_error(op->p, op->rc, op->err.msg);
        } else {
            msgpack_sbuffer sb;
            msgpack_sbuffer_init(&sb);
            msgpack_packer pk;
            msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
            jobs_pack_result(srv, &op->res, op->with_vectors, &pk);
            parked_reply_result(op->p, &sb);
            msgpack_sbuffer_destroy(&sb);
            task_result_free(&op->res);
        }
        free(op->p);
        break;
    case IO_EVICT:
        if (op->rc != 0) {
            parked_reply_error(op->p, op->rc, op->err.msg);
        } else {
            msgpack_sbuffer sb;
            msgpack_sbuffer_init(&sb);
            msgpack_packer pk;
            msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
            msgpack_pack_map(&pk, 1);
            rpc_pack_cstr(&pk, "evicted");
            rpc_pack_cstr(&pk, op->task);
            parked_reply_result(op->p, &sb);
            msgpack_sbuffer_destroy(&sb);
        }
        free(op->p);
        break;
    }
    (void)status;
    free(op);
}

static void io_submit(io_op *op)
{
    server *srv = op->j ? op->j->srv : op->srv;
    op->srv = srv;
    op->req.data = op;
    srv->io_inflight++;
    int rc = uv_queue_work(srv->loop, &op->req, io_work, io_after);
    if (rc != 0) { /* cannot happen with a valid loop; run inline rather than lose the step */
        io_work(&op->req);
        io_after(&op->req, rc);
    }
}

static void finish(job *j, job_state state, const char *reason)
{
    server *srv = j->srv;
    if (j->phase == PH_SCORING || j->phase == PH_EXTRAS || j->phase == PH_IO) srv->n_running--;
    if (j->phase != PH_FINISHED) srv->n_unfinished--;
    io_op *op = calloc(1, sizeof *op);
    if (!op) { /* keep the record consistent in memory at least */
        j->state = state;
        j->phase = PH_FINISHED;
        answer_waiters(j);
        return;
    }
    op->kind = IO_FINISH;
    op->j = j;
    j->finishing = 1;
    op->target = state;
    snprintf(op->reason, sizeof op->reason, "%s", reason ? reason : "");
    j->phase = PH_IO;
    /* Not counted as running any more: n_running was released above. */
    j->fail_pending = 0;
    io_submit(op);
}

static void start_job(job *j)
{
    server *srv = j->srv;
    srv->n_running++;
    j->phase = PH_IO;
    if (!j->start_ms) j->start_ms = server_wall_ms();
    j->state = JOB_RUNNING;
    if (j->started) {
        begin_generation(j);
        return;
    }
    io_op *op = calloc(1, sizeof *op);
    if (!op) {
        begin_generation(j);
        return;
    }
    op->kind = IO_START;
    op->j = j;
    io_submit(op);
}

static void schedule(server *srv)
{
    while (!srv->shutting_down && srv->n_running < srv->cfg->max_running) {
        job *best = NULL;
        for (job *j = srv->jobs; j; j = j->next) {
            if (j->phase != PH_QUEUED || j->id == 0) continue;
            if (!best || j->spec.priority > best->spec.priority ||
                (j->spec.priority == best->spec.priority && j->id < best->id))
                best = j;
        }
        if (!best) return;
        pool_queue_init(&best->queue, best->spec.priority);
        start_job(best);
    }
}

/* ---- Public entry points --------------------------------------------------------------- */

static void derive_stream(job *j)
{
    /* The job's own random stream, from its key: the same request draws the same numbers
     * (reproducible, and what makes a resumed job end bit-identical), different requests
     * draw independent ones. */
    uint64_t s = 0;
    for (int i = 0; i < 16; i++) {
        char ch = j->key[i];
        s = s << 4 | (uint64_t)(ch <= '9' ? ch - '0' : ch - 'a' + 10);
    }
    j->spec.cem.stream = s;
}

void jobs_submit(server *srv, conn *c, uint32_t msgid, job_spec *spec)
{
    char key[65];
    job_spec_key(spec, zmix_model_fingerprint(srv->model), srv->experts_digest, key);
    if (srv->shutting_down) {
        job_spec_free(spec);
        conn_reply_error(c, msgid, ZMIX_ESTATE, "the daemon is shutting down");
        return;
    }
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
        if (j->phase == PH_FINISHED || j->cancel_requested || strcmp(j->key, key) ||
            strcmp(j->spec.task, spec->task))
            continue;
        job_spec_free(spec);
        srv->submits_coalesced++;
        p->coalesced = 1;
        conn_park(c, p);
        if (j->phase == PH_ACCEPTING) {
            p->job_next = j->waiters;
            j->waiters = p;
        } else {
            reply_submitted(p, j);
            free(p);
        }
        return;
    }
    if (srv->n_unfinished >= srv->cfg->max_jobs) {
        job_spec_free(spec);
        free(p);
        char msg[128];
        snprintf(msg, sizeof msg, "job queue full: %d unfinished jobs (--max-jobs %d)",
                 srv->n_unfinished, srv->cfg->max_jobs);
        conn_reply_error(c, msgid, ZMIX_ELIMIT, msg);
        return;
    }
    io_op *op = calloc(1, sizeof *op);
    job *j = op ? job_new(srv) : NULL;
    if (!j) {
        free(op);
        job_spec_free(spec);
        free(p);
        conn_reply_error(c, msgid, ZMIX_ENOMEM, "submit: out of memory");
        return;
    }
    j->spec = *spec;
    memset(spec, 0, sizeof *spec);
    memcpy(j->key, key, sizeof key);
    derive_stream(j);
    job_examples_digest(&j->spec.examples, j->examples_digest);
    j->state = JOB_QUEUED;
    j->phase = PH_ACCEPTING;
    j->submit_ms = server_wall_ms();
    srv->n_unfinished++;
    conn_park(c, p);
    p->job_next = j->waiters;
    j->waiters = p;
    op->kind = IO_ACCEPT;
    op->j = j;
    io_submit(op);
}

int jobs_cancel(server *srv, job *j, zmix_error *err)
{
    if (j->phase == PH_FINISHED || j->state == JOB_DONE || j->state == JOB_FAILED ||
        j->state == JOB_CANCELLED)
        return zmix_error_set(err, ZMIX_ESTATE, "job %llu is already %s", (unsigned long long)j->id,
                              job_state_name(j->state));
    /* The end state is being written (result saved, record updated): a cancel cannot change
     * it any more, so say so rather than answer "cancelling" for a job that ends done. */
    if (j->finishing)
        return zmix_error_set(
            err, ZMIX_ESTATE, "job %llu is already finishing (%s)", (unsigned long long)j->id,
            j->cancel_requested ? "being cancelled" : "its end state is being saved");
    if (j->cancel_requested) return 0;
    j->cancel_requested = 1;
    switch (j->phase) {
    case PH_QUEUED: finish(j, JOB_CANCELLED, "cancelled by a client"); break;
    case PH_SCORING:
    case PH_EXTRAS:
        __atomic_store_n(&j->stop, 1, __ATOMIC_RELAXED);
        for (pool_item *w = pool_withdraw(srv->pool, &j->queue); w; w = w->next) j->chunks_out--;
        if (j->chunks_out == 0) {
            if (j->phase == PH_EXTRAS)
                finish(j, JOB_CANCELLED, "cancelled by a client");
            else
                generation_scored(j);
        }
        break;
    default: break; /* accepting or saving: the step's completion looks at cancel_requested */
    }
    return 0;
}

int jobs_recover(server *srv, job_recovered *rec, size_t n, zmix_error *err)
{
    for (size_t i = 0; i < n; i++) {
        job_record *r = &rec[i].record;
        job *j = job_new(srv);
        if (!j) return zmix_error_set(err, ZMIX_ENOMEM, "out of memory recovering jobs");
        zmix_error e = {0};
        int rc = job_spec_restore(r->settings, r->settings_len, &r->examples, r->task, r->priority,
                                  srv->limits.n_experts, srv->limits.n_matrices, &srv->cem_defaults,
                                  &j->spec, &e);
        j->id = r->id;
        if (strlen(r->key) == sizeof j->key - 1) memcpy(j->key, r->key, sizeof j->key);
        j->submit_ms = r->submit_ms;
        j->start_ms = r->start_ms;
        j->end_ms = r->end_ms;
        j->state = r->state;
        snprintf(j->reason, sizeof j->reason, "%s", r->reason);
        if (rc != 0) snprintf(j->spec.task, sizeof j->spec.task, "%.127s", r->task);
        if (job_state_finished(r->state)) {
            j->phase = PH_FINISHED;
            job_spec_free(&j->spec); /* kept for status only: the examples are not needed */
            continue;
        }
        /* Resume only what would give the result the client asked for: the same model,
         * experts and adapted set (the key covers them all, and the α dimension with them).
         * Anything else would file a result under a key that does not describe it. */
        if (rc == 0) {
            char key_now[65];
            job_spec_key(&j->spec, zmix_model_fingerprint(srv->model), srv->experts_digest,
                         key_now);
            if (strcmp(key_now, j->key) != 0)
                rc = zmix_error_set(&e, ZMIX_ESTATE,
                                    "the model, experts or adapted matrices changed since it "
                                    "was submitted");
        }
        if (rc == 0) rc = zmix_examples_check(srv->model, &j->spec.examples, &e);
        if (rc != 0 || strlen(j->key) != 64) {
            ZLOG_ERROR(srv->log, "job %llu: cannot resume: %s", (unsigned long long)j->id,
                       rc ? e.msg : "no key");
            j->phase = PH_FINISHED;
            j->state = JOB_FAILED;
            snprintf(j->reason, sizeof j->reason, "cannot resume after restart: %.180s",
                     rc ? e.msg : "no key");
            job_store_set_state(srv->store, j->id, JOB_FAILED, j->reason, server_wall_ms(), NULL);
            continue;
        }
        derive_stream(j);
        job_examples_digest(&j->spec.examples, j->examples_digest);
        if (rec[i].checkpoint) {
            if (zmix_cem_restore(rec[i].checkpoint, rec[i].checkpoint_len, &j->cem, &e) != 0) {
                ZLOG_WARN(srv->log, "job %llu: checkpoint unusable (%s): restarting it",
                          (unsigned long long)j->id, e.msg);
                j->cem = NULL;
            } else if (zmix_cem_dim(j->cem) != j->spec.cem.dim ||
                       zmix_cem_pop_size(j->cem) != j->spec.cem.pop_size) {
                ZLOG_WARN(srv->log,
                          "job %llu: checkpoint does not match its settings: restarting it",
                          (unsigned long long)j->id);
                zmix_cem_free(j->cem);
                j->cem = NULL;
            }
        }
        j->started = r->state == JOB_RUNNING;
        j->state = JOB_QUEUED;
        j->phase = PH_QUEUED;
        srv->n_unfinished++;
        ZLOG_INFO(srv->log, "job %llu: task %s resumes at generation %d", (unsigned long long)j->id,
                  j->spec.task, j->cem ? zmix_cem_generation(j->cem) : 0);
    }
    schedule(srv);
    return 0;
}

void jobs_begin_shutdown(server *srv)
{
    for (job *j = srv->jobs; j; j = j->next) {
        if (j->phase == PH_SCORING || j->phase == PH_EXTRAS) {
            __atomic_store_n(&j->stop, 1, __ATOMIC_RELAXED);
            for (pool_item *w = pool_withdraw(srv->pool, &j->queue); w; w = w->next)
                j->chunks_out--;
            if (j->chunks_out == 0) j->phase = PH_QUEUED;
        }
        free_waiters(j);
    }
}

void jobs_get_async(server *srv, conn *c, uint32_t msgid, const char *task, int with_vectors)
{
    io_op *op = calloc(1, sizeof *op);
    parked *p = calloc(1, sizeof *p);
    if (!op || !p) {
        free(op);
        free(p);
        conn_reply_error(c, msgid, ZMIX_ENOMEM, "out of memory");
        return;
    }
    p->msgid = msgid;
    p->kind = PARK_IO;
    conn_park(c, p);
    op->srv = srv;
    op->p = p;
    op->kind = with_vectors < 0 ? IO_EVICT : IO_GET;
    op->with_vectors = with_vectors > 0;
    snprintf(op->task, sizeof op->task, "%s", task);
    io_submit(op);
}
