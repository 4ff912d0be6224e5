/*
 * One function per protocol method (proto/PROTOCOL.md): pack the parameters, call, decode
 * the result into the method's struct.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client_internal.h"

typedef struct params {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} params;

static void params_begin(params *p, size_t n_keys)
{
    msgpack_sbuffer_init(&p->sb);
    msgpack_packer_init(&p->pk, &p->sb, msgpack_sbuffer_write);
    msgpack_pack_map(&p->pk, n_keys);
}

static int call_with(zmix_client *c, const char *method, params *p, int extra_ms,
                     const msgpack_object **res, zmix_error *err)
{
    int rc = zcli_call(c, method, p ? p->sb.data : NULL, p ? p->sb.size : 0, extra_ms, res, err);
    if (p) msgpack_sbuffer_destroy(&p->sb);
    return rc;
}

static int need_map(const msgpack_object *o, const char *method, zmix_error *err)
{
    if (o->type == MSGPACK_OBJECT_MAP) return 0;
    return zmix_error_set(err, ZMIX_EFORMAT, "%s: the result is not a map", method);
}

int zmix_client_auth(zmix_client *c, const char *token, zmix_error *err)
{
    params p;
    params_begin(&p, 1);
    zcli_pack_str(&p.pk, "token");
    zcli_pack_str(&p.pk, token);
    const msgpack_object *res = NULL;
    return call_with(c, "auth", &p, 0, &res, err);
}

int zmix_client_ping(zmix_client *c, char *version, size_t cap, zmix_error *err)
{
    const msgpack_object *res = NULL;
    int rc = call_with(c, "ping", NULL, 0, &res, err);
    if (!rc && version && cap) {
        version[0] = '\0';
        rc = zcli_mp_str(res, "version", version, cap, err);
    }
    return rc;
}

void zmix_client_info_free(zmix_client_info *i)
{
    if (!i) return;
    free(i->matrices);
    free(i->experts);
    memset(i, 0, sizeof *i);
}

int zmix_client_info_get(zmix_client *c, zmix_client_info *out, zmix_error *err)
{
    memset(out, 0, sizeof *out);
    const msgpack_object *res = NULL;
    int rc = call_with(c, "info", NULL, 0, &res, err);
    if (!rc) rc = need_map(res, "info", err);
    if (rc) return rc;
    const msgpack_object *m = zcli_mp_get(res, "model"), *l = zcli_mp_get(res, "limits"),
                         *ad = zcli_mp_get(res, "alpha_dim");
    rc = zcli_mp_str(res, "version", out->version, sizeof out->version, err);
    if (!rc) rc = zcli_mp_str(m, "path", out->model_path, sizeof out->model_path, err);
    if (!rc) rc = zcli_mp_str(m, "fingerprint", out->fingerprint, sizeof out->fingerprint, err);
    if (!rc) rc = zcli_mp_str(m, "model_type", out->model_type, sizeof out->model_type, err);
    if (!rc) rc = zcli_mp_int32(m, "dim", &out->dim, err);
    if (!rc) rc = zcli_mp_int32(m, "hidden_dim", &out->hidden_dim, err);
    if (!rc) rc = zcli_mp_int32(m, "n_layers", &out->n_layers, err);
    if (!rc) rc = zcli_mp_int32(m, "n_heads", &out->n_heads, err);
    if (!rc) rc = zcli_mp_int32(m, "n_kv_heads", &out->n_kv_heads, err);
    if (!rc) rc = zcli_mp_int32(m, "vocab_size", &out->vocab_size, err);
    if (!rc) rc = zcli_mp_int32(m, "max_seq_len", &out->max_seq_len, err);
    if (!rc) rc = zcli_mp_int32(m, "bos_id", &out->bos_id, err);
    if (!rc) rc = zcli_mp_int32(m, "eos_id", &out->eos_id, err);
    if (!rc) rc = zcli_mp_str(res, "adapt", out->adapt, sizeof out->adapt, err);
    if (!rc)
        rc = zcli_mp_str(res, "experts_digest", out->experts_digest, sizeof out->experts_digest,
                         err);
    if (!rc) rc = zcli_mp_int32(ad, "per_expert", &out->alpha_dim_per_expert, err);
    if (!rc) rc = zcli_mp_int32(ad, "per_layer", &out->alpha_dim_per_layer, err);
    if (!rc) rc = zcli_mp_int32(l, "max_examples", &out->max_examples, err);
    if (!rc) rc = zcli_mp_int(l, "max_tokens", &out->max_tokens, err);
    if (!rc) rc = zcli_mp_int(l, "context", &out->context, err);
    if (!rc) rc = zcli_mp_int32(l, "max_pop", &out->max_pop, err);
    if (!rc) rc = zcli_mp_int32(l, "max_generations", &out->max_generations, err);
    if (!rc) rc = zcli_mp_int32(l, "max_dim", &out->max_dim, err);
    if (!rc) rc = zcli_mp_int32(l, "max_jobs", &out->max_jobs, err);
    if (!rc) rc = zcli_mp_int(l, "frame_limit", &out->frame_limit, err);
    if (!rc) rc = zcli_mp_int32(l, "workers", &out->workers, err);
    const msgpack_object *mx = zcli_mp_get(res, "matrices"), *ex = zcli_mp_get(res, "experts");
    if (!rc && mx && mx->type == MSGPACK_OBJECT_ARRAY) {
        uint32_t n = mx->via.array.size;
        out->matrices = calloc(n ? n : 1, sizeof *out->matrices);
        if (!out->matrices) rc = zmix_error_set(err, ZMIX_ENOMEM, "info: out of memory");
        for (uint32_t i = 0; !rc && i < n; i++) {
            int64_t rank = 0;
            const msgpack_object *e = &mx->via.array.ptr[i];
            rc = zcli_mp_str(e, "name", out->matrices[i].name, sizeof out->matrices[i].name, err);
            if (!rc) rc = zcli_mp_int(e, "rank", &rank, err);
            out->matrices[i].rank = (uint32_t)rank;
            out->n_matrices = (int)i + 1;
        }
    }
    if (!rc && ex && ex->type == MSGPACK_OBJECT_ARRAY) {
        uint32_t n = ex->via.array.size;
        out->experts = calloc(n ? n : 1, sizeof *out->experts);
        if (!out->experts) rc = zmix_error_set(err, ZMIX_ENOMEM, "info: out of memory");
        for (uint32_t i = 0; !rc && i < n; i++) {
            const msgpack_object *e = &ex->via.array.ptr[i];
            if (e->type != MSGPACK_OBJECT_STR) {
                rc = zmix_error_set(err, ZMIX_EFORMAT, "info: experts[%u] is not a string", i);
                break;
            }
            snprintf(out->experts[i], sizeof out->experts[i], "%.*s", (int)e->via.str.size,
                     e->via.str.ptr);
            out->n_experts = (int)i + 1;
        }
    }
    if (rc) {
        zmix_error_prefix(err, "info");
        zmix_client_info_free(out);
    }
    return rc;
}

int zmix_client_stats_get(zmix_client *c, zmix_client_stats *out, zmix_error *err)
{
    memset(out, 0, sizeof *out);
    const msgpack_object *res = NULL;
    int rc = call_with(c, "stats", NULL, 0, &res, err);
    if (!rc) rc = need_map(res, "stats", err);
    if (rc) return rc;
    const msgpack_object *w = zcli_mp_get(res, "workers"), *q = zcli_mp_get(res, "queue"),
                         *j = zcli_mp_get(res, "jobs"), *ca = zcli_mp_get(res, "cache");
    rc = zcli_mp_double(res, "uptime", &out->uptime, err);
    if (!rc) rc = zcli_mp_int(res, "requests", &out->requests, err);
    if (!rc) rc = zcli_mp_int(res, "connections", &out->connections, err);
    if (!rc) rc = zcli_mp_int32(w, "total", &out->workers_total, err);
    if (!rc) rc = zcli_mp_int32(w, "busy", &out->workers_busy, err);
    if (!rc) rc = zcli_mp_int32(w, "pending_chunks", &out->pending_chunks, err);
    if (!rc) rc = zcli_mp_int32(q, "queued", &out->queued, err);
    if (!rc) rc = zcli_mp_int32(q, "running", &out->running, err);
    if (!rc) rc = zcli_mp_int32(q, "unfinished", &out->unfinished, err);
    if (!rc) rc = zcli_mp_int32(q, "max_jobs", &out->max_jobs, err);
    if (!rc) rc = zcli_mp_int(res, "evaluations", &out->evaluations, err);
    if (!rc) rc = zcli_mp_double(res, "evals_per_s", &out->evals_per_s, err);
    if (!rc) rc = zcli_mp_int(j, "done", &out->jobs_done, err);
    if (!rc) rc = zcli_mp_int(j, "failed", &out->jobs_failed, err);
    if (!rc) rc = zcli_mp_int(j, "cancelled", &out->jobs_cancelled, err);
    if (!rc) rc = zcli_mp_int(j, "cached_submits", &out->cached_submits, err);
    if (!rc) rc = zcli_mp_int(j, "coalesced_submits", &out->coalesced_submits, err);
    if (!rc) rc = zcli_mp_int(ca, "tasks", &out->cache_tasks, err);
    if (!rc) rc = zcli_mp_int(ca, "resident", &out->cache_resident, err);
    if (!rc) rc = zcli_mp_int(ca, "resident_bytes", &out->cache_resident_bytes, err);
    if (!rc) rc = zcli_mp_int(ca, "memory_budget", &out->cache_memory_budget, err);
    if (!rc) rc = zcli_mp_int(ca, "hits", &out->cache_hits, err);
    if (!rc) rc = zcli_mp_int(ca, "misses", &out->cache_misses, err);
    if (!rc) rc = zcli_mp_int(ca, "loads", &out->cache_loads, err);
    if (!rc) rc = zcli_mp_int(ca, "evictions", &out->cache_evictions, err);
    if (!rc) rc = zcli_mp_int(ca, "write_errors", &out->cache_write_errors, err);
    if (!rc) rc = zcli_mp_int(ca, "unpersisted", &out->cache_unpersisted, err);
    if (!rc) rc = zcli_mp_int(res, "rss_bytes", &out->rss_bytes, err);
    if (!rc) rc = zcli_mp_bool(res, "shutting_down", &out->shutting_down, err);
    if (rc) zmix_error_prefix(err, "stats");
    return rc;
}

void zmix_client_cem_init(zmix_client_cem *cem)
{
    memset(cem, 0, sizeof *cem);
    cem->per_layer = cem->normalize = cem->rescale = cem->elitism = -1;
    cem->pop = cem->iters = cem->patience = -1;
    cem->elite = cem->init_std = cem->ema = cem->std_floor = cem->std_tol = NAN;
    cem->target_accuracy = cem->lo = cem->hi = cem->validation = NAN;
}

static void pack_cem(msgpack_packer *pk, const zmix_client_cem *c)
{
    const struct {
        const char *key;
        int v;
    } flags[] = {{"per_layer", c->per_layer},
                 {"normalize", c->normalize},
                 {"rescale", c->rescale},
                 {"elitism", c->elitism}},
      ints[] = {{"pop", c->pop}, {"iters", c->iters}, {"patience", c->patience}};
    const struct {
        const char *key;
        double v;
    } nums[] = {{"elite", c->elite},
                {"init_std", c->init_std},
                {"ema", c->ema},
                {"std_floor", c->std_floor},
                {"std_tol", c->std_tol},
                {"target_accuracy", c->target_accuracy},
                {"validation", c->validation}};
    const size_t n_nums = sizeof nums / sizeof *nums;
    size_t n = 0;
    for (size_t i = 0; i < 4; i++) n += flags[i].v >= 0;
    for (size_t i = 0; i < 3; i++) n += ints[i].v >= 0;
    for (size_t i = 0; i < n_nums; i++) n += !isnan(nums[i].v);
    n += c->seed_set + (c->metric != NULL) + (c->method != NULL) + (!isnan(c->lo) && !isnan(c->hi));
    msgpack_pack_map(pk, n);
    for (size_t i = 0; i < 4; i++)
        if (flags[i].v >= 0) {
            zcli_pack_str(pk, flags[i].key);
            flags[i].v ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
        }
    for (size_t i = 0; i < 3; i++)
        if (ints[i].v >= 0) {
            zcli_pack_str(pk, ints[i].key);
            msgpack_pack_int(pk, ints[i].v);
        }
    for (size_t i = 0; i < n_nums; i++)
        if (!isnan(nums[i].v)) {
            zcli_pack_str(pk, nums[i].key);
            msgpack_pack_double(pk, nums[i].v);
        }
    if (c->seed_set) {
        zcli_pack_str(pk, "seed");
        msgpack_pack_uint64(pk, c->seed);
    }
    if (c->metric) {
        zcli_pack_str(pk, "metric");
        zcli_pack_str(pk, c->metric);
    }
    if (c->method) {
        zcli_pack_str(pk, "method");
        zcli_pack_str(pk, c->method);
    }
    if (!isnan(c->lo) && !isnan(c->hi)) {
        zcli_pack_str(pk, "bounds");
        msgpack_pack_array(pk, 2);
        msgpack_pack_double(pk, c->lo);
        msgpack_pack_double(pk, c->hi);
    }
}

static void pack_ids(msgpack_packer *pk, const int32_t *ids, size_t n)
{
    msgpack_pack_array(pk, n);
    for (size_t i = 0; i < n; i++) msgpack_pack_int32(pk, ids[i]);
}

void zmix_client_submitted_free(zmix_client_submitted *s)
{
    if (!s) return;
    zmix_client_result_free(&s->result);
    memset(s, 0, sizeof *s);
}

int zmix_client_submit(zmix_client *c, const zmix_client_submit_req *req,
                       zmix_client_submitted *out, zmix_error *err)
{
    memset(out, 0, sizeof *out);
    if (!req->task) return zmix_error_set(err, ZMIX_EINVAL, "submit: task is NULL");
    if (req->n_examples && !req->examples)
        return zmix_error_set(err, ZMIX_EINVAL, "submit: examples is NULL");
    params p;
    params_begin(&p, 4 + (req->cem != NULL) + (req->warm_start != NULL));
    zcli_pack_str(&p.pk, "task");
    zcli_pack_str(&p.pk, req->task);
    if (req->warm_start) {
        zcli_pack_str(&p.pk, "warm_start");
        zcli_pack_str(&p.pk, req->warm_start);
    }
    zcli_pack_str(&p.pk, "priority");
    msgpack_pack_int(&p.pk, req->priority);
    zcli_pack_str(&p.pk, "recompute");
    req->recompute ? msgpack_pack_true(&p.pk) : msgpack_pack_false(&p.pk);
    zcli_pack_str(&p.pk, "examples");
    msgpack_pack_array(&p.pk, req->n_examples);
    for (size_t i = 0; i < req->n_examples; i++) {
        const zmix_client_example *e = &req->examples[i];
        msgpack_pack_map(&p.pk, e->n_choices ? 3 : 2);
        zcli_pack_str(&p.pk, "prompt");
        if (!e->prompt && e->prompt_text)
            zcli_pack_str(&p.pk, e->prompt_text);
        else
            pack_ids(&p.pk, e->prompt, e->n_prompt);
        if (e->n_choices) {
            zcli_pack_str(&p.pk, "choices");
            msgpack_pack_array(&p.pk, e->n_choices);
            for (size_t k = 0; k < e->n_choices; k++) {
                const int32_t *ids = e->choice_ids ? e->choice_ids[k] : NULL;
                if (!ids && e->choice_text && e->choice_text[k])
                    zcli_pack_str(&p.pk, e->choice_text[k]);
                else
                    pack_ids(&p.pk, ids, ids ? e->choice_len[k] : 0);
            }
            zcli_pack_str(&p.pk, "answer");
            msgpack_pack_int(&p.pk, e->answer);
            continue;
        }
        zcli_pack_str(&p.pk, "target");
        if (!e->target && e->target_text)
            zcli_pack_str(&p.pk, e->target_text);
        else
            pack_ids(&p.pk, e->target, e->n_target);
    }
    if (req->cem) {
        zcli_pack_str(&p.pk, "cem");
        pack_cem(&p.pk, req->cem);
    }
    const msgpack_object *res = NULL;
    int rc = call_with(c, "submit", &p, 0, &res, err);
    if (rc) return rc; /* the daemon's message already names the method */
    rc = need_map(res, "submit", err);
    if (!rc) rc = zcli_mp_u64(res, "job", &out->job, err);
    if (!rc) rc = zcli_mp_str(res, "task", out->task, sizeof out->task, err);
    if (!rc) rc = zcli_mp_str(res, "state", out->state, sizeof out->state, err);
    if (!rc) rc = zcli_mp_bool(res, "cached", &out->cached, err);
    if (!rc) rc = zcli_mp_bool(res, "coalesced", &out->coalesced, err);
    const msgpack_object *r = rc ? NULL : zcli_mp_get(res, "result");
    if (!rc && out->cached && r) rc = zcli_decode_result(r, &out->result, err);
    if (!rc && out->cached && !out->state[0]) snprintf(out->state, sizeof out->state, "done");
    if (rc) {
        zmix_error_prefix(err, "submit");
        zmix_client_submitted_free(out);
    }
    return rc;
}

static int job_call(zmix_client *c, const char *method, uint64_t job, const char *k2, int v2,
                    double timeout_s, const msgpack_object **res, zmix_error *err)
{
    params p;
    params_begin(&p, 1 + (k2 != NULL) + (timeout_s >= 0));
    zcli_pack_str(&p.pk, "job");
    msgpack_pack_uint64(&p.pk, job);
    if (k2) {
        zcli_pack_str(&p.pk, k2);
        v2 ? msgpack_pack_true(&p.pk) : msgpack_pack_false(&p.pk);
    }
    int extra_ms = 0;
    if (timeout_s >= 0) {
        zcli_pack_str(&p.pk, "timeout");
        msgpack_pack_double(&p.pk, timeout_s);
        extra_ms = (int)(timeout_s * 1000.0) + 1000;
    }
    return call_with(c, method, &p, extra_ms, res, err);
}

int zmix_client_status_get(zmix_client *c, uint64_t job, int with_history, zmix_client_status *out,
                           zmix_error *err)
{
    memset(out, 0, sizeof *out);
    const msgpack_object *res = NULL;
    int rc = job_call(c, "status", job, NULL, 0, -1, &res, err);
    if (!rc) rc = zcli_decode_status(res, out, err);
    if (rc || !with_history) return rc;
    /* The history is its own method (it can be large): fetched second, decoded into out. */
    rc = job_call(c, "history", job, NULL, 0, -1, &res, err);
    const msgpack_object *h = rc ? NULL : zcli_mp_get(res, "history");
    if (!rc && !h) rc = zmix_error_set(err, ZMIX_EFORMAT, "history: the result has no history");
    if (!rc) rc = zcli_decode_history(h, out, err);
    if (rc) zmix_client_status_free(out);
    return rc;
}

int zmix_client_wait(zmix_client *c, uint64_t job, double timeout_s, zmix_client_status *out,
                     zmix_error *err)
{
    memset(out, 0, sizeof *out);
    if (!(timeout_s >= 0) || timeout_s > 3600)
        return zmix_error_set(err, ZMIX_ERANGE, "wait: timeout %g s outside [0, 3600]", timeout_s);
    const msgpack_object *res = NULL;
    int rc = job_call(c, "wait", job, NULL, 0, timeout_s, &res, err);
    if (!rc) rc = need_map(res, "wait", err);
    if (rc) return rc;
    const msgpack_object *st = zcli_mp_get(res, "status");
    if (!st) return zmix_error_set(err, ZMIX_EFORMAT, "wait: the result has no status");
    int timed_out = 0;
    rc = zcli_mp_bool(res, "timed_out", &timed_out, err);
    if (!rc) rc = zcli_decode_status(st, out, err);
    out->timed_out = timed_out;
    return rc;
}

int zmix_client_cancel(zmix_client *c, uint64_t job, char *state_out, size_t cap, zmix_error *err)
{
    const msgpack_object *res = NULL;
    int rc = job_call(c, "cancel", job, NULL, 0, -1, &res, err);
    if (!rc && state_out && cap) {
        state_out[0] = '\0';
        int withdrawn = 0;
        rc = zcli_mp_str(res, "state", state_out, cap, err);
        if (!rc) rc = zcli_mp_bool(res, "withdrawn", &withdrawn, err);
        if (!rc && withdrawn) snprintf(state_out, cap, "withdrawn");
    }
    return rc;
}

void zmix_client_job_list_free(zmix_client_job_list *l)
{
    if (!l) return;
    free(l->jobs);
    memset(l, 0, sizeof *l);
}

static int list_of(const msgpack_object *res, const char *key, const char *method,
                   const msgpack_object **arr, zmix_error *err)
{
    *arr = zcli_mp_get(res, key);
    if (!*arr || (*arr)->type != MSGPACK_OBJECT_ARRAY)
        return zmix_error_set(err, ZMIX_EFORMAT, "%s: the result has no '%s' array", method, key);
    return 0;
}

int zmix_client_jobs(zmix_client *c, const char *state, zmix_client_job_list *out, zmix_error *err)
{
    memset(out, 0, sizeof *out);
    int with_state = state && *state;
    params p;
    params_begin(&p, with_state);
    if (with_state) {
        zcli_pack_str(&p.pk, "state");
        zcli_pack_str(&p.pk, state);
    }
    const msgpack_object *res = NULL, *arr = NULL;
    int rc = call_with(c, "jobs", &p, 0, &res, err);
    if (!rc) rc = list_of(res, "jobs", "jobs", &arr, err);
    if (rc) return rc;
    uint32_t n = arr->via.array.size;
    out->jobs = calloc(n ? n : 1, sizeof *out->jobs);
    if (!out->jobs) return zmix_error_set(err, ZMIX_ENOMEM, "jobs: out of memory");
    for (uint32_t i = 0; !rc && i < n; i++) {
        const msgpack_object *e = &arr->via.array.ptr[i];
        zmix_client_job *j = &out->jobs[i];
        rc = zcli_mp_u64(e, "job", &j->job, err);
        if (!rc) rc = zcli_mp_str(e, "task", j->task, sizeof j->task, err);
        if (!rc) rc = zcli_mp_str(e, "state", j->state, sizeof j->state, err);
        if (!rc) rc = zcli_mp_int32(e, "priority", &j->priority, err);
        if (!rc) rc = zcli_mp_int32(e, "generation", &j->generation, err);
        if (!rc) rc = zcli_mp_double(e, "submitted", &j->submitted, err);
        out->n = i + 1;
    }
    if (rc) {
        zmix_error_prefix(err, "jobs");
        zmix_client_job_list_free(out);
    }
    return rc;
}

static int task_call(zmix_client *c, const char *method, const char *task, int vectors,
                     const msgpack_object **res, zmix_error *err)
{
    if (!task) return zmix_error_set(err, ZMIX_EINVAL, "%s: task is NULL", method);
    params p;
    params_begin(&p, 1 + (vectors >= 0));
    zcli_pack_str(&p.pk, "task");
    zcli_pack_str(&p.pk, task);
    if (vectors >= 0) {
        zcli_pack_str(&p.pk, "vectors");
        vectors ? msgpack_pack_true(&p.pk) : msgpack_pack_false(&p.pk);
    }
    return call_with(c, method, &p, 0, res, err);
}

int zmix_client_get(zmix_client *c, const char *task, int with_vectors, zmix_client_result *out,
                    zmix_error *err)
{
    memset(out, 0, sizeof *out);
    const msgpack_object *res = NULL;
    int rc = task_call(c, "get", task, with_vectors != 0, &res, err);
    if (!rc) rc = zcli_decode_result(res, out, err);
    if (!rc && with_vectors && out->n_matrices > 0 && !out->matrices[0].z) {
        zmix_client_result_free(out);
        rc = zmix_error_set(err, ZMIX_EFORMAT, "get: vectors asked for but not sent");
    }
    return rc;
}

int zmix_client_get_document(zmix_client *c, const char *task, char **json, zmix_error *err)
{
    *json = NULL;
    if (!task) return zmix_error_set(err, ZMIX_EINVAL, "get: task is NULL");
    params p;
    params_begin(&p, 3);
    zcli_pack_str(&p.pk, "task");
    zcli_pack_str(&p.pk, task);
    zcli_pack_str(&p.pk, "vectors");
    msgpack_pack_false(&p.pk);
    zcli_pack_str(&p.pk, "document");
    msgpack_pack_true(&p.pk);
    const msgpack_object *res = NULL;
    int rc = call_with(c, "get", &p, 0, &res, err);
    if (rc) return rc;
    const msgpack_object *d = zcli_mp_get(res, "document");
    if (!d || d->type == MSGPACK_OBJECT_NIL)
        return zmix_error_set(err, ZMIX_ENOTFOUND,
                              "get: task '%s' was cached by a daemon that kept no result document",
                              task);
    if (d->type != MSGPACK_OBJECT_STR)
        return zmix_error_set(err, ZMIX_EFORMAT, "get: 'document' is not a string");
    *json = malloc((size_t)d->via.str.size + 1);
    if (!*json) return zmix_error_set(err, ZMIX_ENOMEM, "get: out of memory for the document");
    memcpy(*json, d->via.str.ptr, d->via.str.size);
    (*json)[d->via.str.size] = '\0';
    return 0;
}

int zmix_client_evict(zmix_client *c, const char *task, zmix_error *err)
{
    const msgpack_object *res = NULL;
    return task_call(c, "evict", task, -1, &res, err);
}

void zmix_client_task_list_free(zmix_client_task_list *l)
{
    if (!l) return;
    free(l->tasks);
    memset(l, 0, sizeof *l);
}

int zmix_client_tasks(zmix_client *c, zmix_client_task_list *out, zmix_error *err)
{
    memset(out, 0, sizeof *out);
    const msgpack_object *res = NULL, *arr = NULL;
    int rc = call_with(c, "tasks", NULL, 0, &res, err);
    if (!rc) rc = list_of(res, "tasks", "tasks", &arr, err);
    if (rc) return rc;
    uint32_t n = arr->via.array.size;
    out->tasks = calloc(n ? n : 1, sizeof *out->tasks);
    if (!out->tasks) return zmix_error_set(err, ZMIX_ENOMEM, "tasks: out of memory");
    for (uint32_t i = 0; !rc && i < n; i++) {
        const msgpack_object *e = &arr->via.array.ptr[i];
        zmix_client_task *t = &out->tasks[i];
        rc = zcli_mp_str(e, "task", t->task, sizeof t->task, err);
        if (!rc) rc = zcli_mp_str(e, "key", t->key, sizeof t->key, err);
        if (!rc) rc = zcli_mp_u64(e, "job", &t->job, err);
        if (!rc) rc = zcli_mp_double(e, "created", &t->created, err);
        if (!rc) rc = zcli_mp_score(e, "score", &t->score, NULL, err);
        if (!rc) rc = zcli_mp_int(e, "bytes", &t->bytes, err);
        if (!rc) rc = zcli_mp_bool(e, "resident", &t->resident, err);
        if (!rc) rc = zcli_mp_bool(e, "persisted", &t->persisted, err);
        t->current = 1;
        if (!rc) rc = zcli_mp_bool(e, "current", &t->current, err);
        if (!rc) rc = zcli_mp_str(e, "mismatch", t->mismatch, sizeof t->mismatch, err);
        out->n = i + 1;
    }
    if (rc) {
        zmix_error_prefix(err, "tasks");
        zmix_client_task_list_free(out);
    }
    return rc;
}

int zmix_client_subscribe(zmix_client *c, int on, zmix_error *err)
{
    params p;
    params_begin(&p, 1);
    zcli_pack_str(&p.pk, "on");
    on ? msgpack_pack_true(&p.pk) : msgpack_pack_false(&p.pk);
    const msgpack_object *res = NULL;
    return call_with(c, "subscribe", &p, 0, &res, err);
}
