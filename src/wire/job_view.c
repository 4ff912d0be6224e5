/*
 * What clients see of jobs and results: the maps that status, wait, jobs, get, submit (on a
 * cache hit) and progress notifications carry, exactly as proto/PROTOCOL.md §4 describes
 * them. Pure packing: reads a job or a cached result, writes msgpack.
 * Thread: the event loop (it reads live sessions); the summaries also on the threadpool.
 */
#include <cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/server.h"
#include "util/clock.h"
#include "zmix/adapt.h"

static void pack_score(msgpack_packer *pk, const zmix_score *s)
{
    rpc_map m;
    rpc_map_begin(&m);
    rpc_map_double(&m, "accuracy", s->accuracy);
    rpc_map_double(&m, "loglik", s->loglik);
    rpc_map_end(&m, pk);
}

static void pack_floats(msgpack_packer *pk, const float *v, size_t n)
{
    msgpack_pack_array(pk, n);
    for (size_t i = 0; i < n; i++) msgpack_pack_float(pk, v[i]);
}

/* ---- Summaries ------------------------------------------------------------------------ */

void job_summary_free(job_summary *s)
{
    free(s->best_alpha);
    memset(s, 0, sizeof *s);
}

static double mean_of(const double *v, int n)
{
    double m = 0;
    for (int i = 0; i < n; i++) m += v[i];
    return n > 0 ? m / n : 0;
}

static int set_best(job_summary *out, const float *alpha, int dim, const zmix_score *best)
{
    out->best_alpha = malloc((size_t)dim * sizeof *out->best_alpha);
    if (!out->best_alpha) return ZMIX_ENOMEM;
    memcpy(out->best_alpha, alpha, (size_t)dim * sizeof *alpha);
    out->best = *best;
    out->have_best = 1;
    return 0;
}

int job_summary_of_session(const zmix_session *ses, job_summary *out)
{
    memset(out, 0, sizeof *out);
    int dim = zmix_session_dim(ses);
    out->generation = zmix_session_generation(ses);
    zmix_session_counts(ses, &out->evaluations, &out->skipped);
    out->stop = out->generation > 0 ? zmix_session_stop(ses) : ZMIX_CEM_RUNNING;
    out->elapsed_s = zmix_session_elapsed(ses);
    out->have_mean_std = 1;
    out->mean_std = zmix_session_mean_std(ses);
    if (out->generation > 0) {
        float *alpha = malloc((size_t)dim * sizeof *alpha);
        zmix_score best;
        int ok = alpha && zmix_session_best(ses, alpha, &best) == 0;
        int rc = ok ? set_best(out, alpha, dim, &best) : 0;
        free(alpha);
        return rc;
    }
    return 0;
}

int job_summary_of_result(const zmix_adapt_result *r, job_summary *out)
{
    memset(out, 0, sizeof *out);
    out->generation = r->generations;
    out->evaluations = r->evaluations;
    out->skipped = r->skipped;
    out->stop = r->stop;
    out->elapsed_s = r->elapsed_s;
    out->n_warnings = r->n_warnings;
    memcpy(out->warnings, r->warnings, sizeof out->warnings);
    if (r->n_history > 0) {
        out->have_mean_std = 1;
        out->mean_std = mean_of(r->history_std + (size_t)(r->n_history - 1) * r->dim, r->dim);
    }
    if (r->generations > 0 && !isnan(r->best.accuracy))
        return set_best(out, r->alpha, r->dim, &r->best);
    return 0;
}

/* ---- Jobs ------------------------------------------------------------------------------ */

static const char *phase_name(const job *j)
{
    switch (j->phase) {
    case JOB_PH_NEW:
    case JOB_PH_ACCEPTING: return "accepting";
    case JOB_PH_QUEUED: return "queued";
    case JOB_PH_STARTING:
    case JOB_PH_SAVING:
    case JOB_PH_FINISHING: return "saving";
    case JOB_PH_SCORING:
        return j->session && zmix_session_phase_get(j->session) == ZMIX_SESSION_BASELINES
                   ? "baselines"
                   : "scoring";
    case JOB_PH_FINISHED: return "finished";
    }
    return "finished";
}

/* The job's summary: live from its session, or the frozen one. Fills *tmp when it had to
 * build one (free it after use). */
static const job_summary *summary_of(const job *j, job_summary *tmp)
{
    memset(tmp, 0, sizeof *tmp);
    if (j->session && job_summary_of_session(j->session, tmp) == 0) return tmp;
    return &j->final;
}

void jobs_pack_brief(const job *j, msgpack_packer *pk)
{
    job_summary tmp;
    const job_summary *s = summary_of(j, &tmp);
    rpc_map m;
    rpc_map_begin(&m);
    rpc_map_u64(&m, "job", j->id);
    jobs_pack_task_name(&m, j->spec.task);
    rpc_map_str(&m, "state", job_state_name(j->state));
    rpc_map_int(&m, "priority", j->spec.priority);
    rpc_map_int(&m, "generation", s->generation);
    rpc_map_double(&m, "submitted", (double)j->submit_ms / 1000.0);
    rpc_map_end(&m, pk);
    job_summary_free(&tmp);
}

static void time_or_nil(rpc_map *m, const char *key, int64_t ms)
{
    if (ms)
        rpc_map_double(m, key, (double)ms / 1000.0);
    else
        rpc_map_nil(m, key);
}

void jobs_pack_status(server *srv, const job *j, msgpack_packer *pk)
{
    job_summary tmp;
    const job_summary *s = summary_of(j, &tmp);
    int dim = j->spec.cem.dim;
    double elapsed = s->elapsed_s;
    if (j->phase == JOB_PH_SCORING) elapsed += (double)(zmix_now_ns() - j->step_started_ns) * 1e-9;
    rpc_map m;
    rpc_map_begin(&m);
    rpc_map_u64(&m, "job", j->id);
    jobs_pack_task_name(&m, j->spec.task);
    rpc_map_str(&m, "state", job_state_name(j->state));
    rpc_map_str(&m, "phase", phase_name(j));
    rpc_map_int(&m, "priority", j->spec.priority);
    rpc_map_int(&m, "generation", s->generation);
    /* What the search runs: a per-layer search's own population and generations. */
    zmix_cem_method method;
    int pop, max_generations;
    zmix_adapt_search_shape(&j->opts, dim, &method, &pop, &max_generations);
    rpc_map_int(&m, "max_generations", max_generations);
    rpc_map_int(&m, "pop", pop);
    rpc_map_str(&m, "method", zmix_cem_method_name(method));
    rpc_map_int(&m, "dim", dim);
    job_spec_pack_settings(&j->spec, rpc_map_key(&m, "settings"));
    rpc_map_int(&m, "evaluations", s->evaluations);
    rpc_map_int(&m, "skipped", s->skipped);
    if (s->have_best) {
        pack_score(rpc_map_key(&m, "best"), &s->best);
        pack_floats(rpc_map_key(&m, "best_alpha"), s->best_alpha, (size_t)dim);
    } else {
        rpc_map_nil(&m, "best");
        rpc_map_nil(&m, "best_alpha");
    }
    if (s->have_mean_std)
        rpc_map_double(&m, "mean_std", s->mean_std);
    else
        rpc_map_nil(&m, "mean_std");
    rpc_map_double(&m, "elapsed", elapsed);
    if (s->stop != ZMIX_CEM_RUNNING)
        rpc_map_str(&m, "stop_reason", zmix_cem_stop_name(s->stop));
    else
        rpc_map_nil(&m, "stop_reason");
    rpc_map_str(&m, "reason", j->reason);
    rpc_map_str(&m, "warning", j->warning);
    msgpack_packer *w = rpc_map_key(&m, "warnings");
    msgpack_pack_array(w, (size_t)s->n_warnings);
    for (int i = 0; i < s->n_warnings; i++) rpc_pack_cstr(w, s->warnings[i]);
    time_or_nil(&m, "submitted", j->submit_ms);
    time_or_nil(&m, "started", j->start_ms);
    time_or_nil(&m, "ended", j->end_ms);
    rpc_map_end(&m, pk);
    job_summary_free(&tmp);
    (void)srv;
}

/* history: what `zmix plot JOB` draws (best so far, elite and population means, the
 * distribution's mean and std as float32), per generation. */
void jobs_pack_history(uint64_t id, const zmix_adapt_result *r, msgpack_packer *pk)
{
    rpc_map m;
    rpc_map_begin(&m);
    rpc_map_u64(&m, "job", id);
    msgpack_packer *hist = rpc_map_key(&m, "history");
    msgpack_pack_array(hist, (size_t)r->n_history);
    size_t dim = (size_t)r->dim;
    for (int g = 0; g < r->n_history; g++) {
        const zmix_cem_gen_stats *h = &r->history[g];
        rpc_map e;
        rpc_map_begin(&e);
        rpc_map_int(&e, "generation", g + 1);
        pack_score(rpc_map_key(&e, "best"), &h->best);
        pack_score(rpc_map_key(&e, "elite_mean"), &h->elite_mean);
        pack_score(rpc_map_key(&e, "pop_mean"), &h->pop_mean);
        rpc_map_double(&e, "mean_std", h->mean_std);
        const double *v[2] = {r->history_mean + (size_t)g * dim, r->history_std + (size_t)g * dim};
        for (int w = 0; w < 2; w++) {
            msgpack_packer *a = rpc_map_key(&e, w ? "std" : "mean");
            msgpack_pack_array(a, dim);
            for (size_t i = 0; i < dim; i++) msgpack_pack_float(a, (float)v[w][i]);
        }
        rpc_map_end(&e, hist);
    }
    rpc_map_end(&m, pk);
}

/* ---- Results --------------------------------------------------------------------------- */

/* Everything a client needs from a cached result. Vectors only when asked (they can be
 * large): z′ per adapted matrix as float32 little-endian bytes. */
void jobs_pack_task_name(rpc_map *m, const char *scoped)
{
    char tenant_name[TENANT_NAME_MAX + 1];
    task_name_tenant(scoped, tenant_name);
    rpc_map_str(m, "task", task_name_local(scoped));
    if (tenant_name[0]) rpc_map_str(m, "tenant", tenant_name);
}

int jobs_result_mismatch(const server *srv, const char *model_fingerprint,
                         const char *experts_digest, char *why, size_t size)
{
    return zmix_adapt_provenance_mismatch(zmix_model_fingerprint(srv->model), srv->experts_digest,
                                          model_fingerprint, experts_digest, why, size);
}

/* The expert names stored with the result (its document's "experts"), or NULL. */
static cJSON *stored_expert_names(const task_result *r)
{
    if (!r->document_len || r->document[0] != '{') return NULL;
    cJSON *doc = cJSON_ParseWithLength((const char *)r->document, r->document_len);
    cJSON *names = cJSON_DetachItemFromObjectCaseSensitive(doc, "experts");
    cJSON_Delete(doc);
    if (cJSON_GetArraySize(names) == r->n_experts) return names;
    cJSON_Delete(names);
    return NULL;
}

void jobs_pack_result(server *srv, const task_result *r, int with_vectors, int with_document,
                      msgpack_packer *pk)
{
    task_provenance prov;
    task_result_provenance(r, &prov);
    char mismatch[256];
    int stale = jobs_result_mismatch(srv, prov.model_fingerprint, prov.experts_digest, mismatch,
                                     sizeof mismatch);
    cJSON *names = stored_expert_names(r);
    rpc_map m;
    rpc_map_begin(&m);
    jobs_pack_task_name(&m, r->task);
    rpc_map_str(&m, "key", r->key);
    rpc_map_u64(&m, "job", r->job_id);
    rpc_map_double(&m, "created", (double)r->created_ms / 1000.0);
    pack_score(rpc_map_key(&m, "score"), &r->score);
    pack_score(rpc_map_key(&m, "base_score"), &r->base_score);
    /* Labelled with the names of the experts that made the result, which are this daemon's
     * only while the result is current. */
    msgpack_packer *ex = rpc_map_key(&m, "expert_scores");
    msgpack_pack_array(ex, (size_t)r->n_experts);
    for (int k = 0; k < r->n_experts; k++) {
        rpc_map e;
        rpc_map_begin(&e);
        const cJSON *name = cJSON_GetArrayItem(names, k);
        char unknown[32];
        snprintf(unknown, sizeof unknown, "expert %d", k);
        rpc_map_str(&e, "expert",
                    cJSON_IsString(name) ? name->valuestring
                    : !stale && k < zmix_runtime_n_experts(srv->rt)
                        ? zmix_runtime_expert_name(srv->rt, k)
                        : unknown);
        rpc_map_double(&e, "accuracy", r->expert_scores[k].accuracy);
        rpc_map_double(&e, "loglik", r->expert_scores[k].loglik);
        rpc_map_end(&e, ex);
    }
    pack_floats(rpc_map_key(&m, "alpha"), r->alpha, (size_t)r->n_alpha);
    msgpack_packer *st = rpc_map_key(&m, "settings");
    if (r->settings_len > 0)
        st->callback(st->data, (const char *)r->settings, r->settings_len);
    else
        msgpack_pack_nil(st);
    const char *fields[3] = {"examples_digest", "model_fingerprint", "experts_digest"};
    const char *values[3] = {prov.examples_digest, prov.model_fingerprint, prov.experts_digest};
    for (int f = 0; f < 3; f++) {
        if (values[f][0])
            rpc_map_str(&m, fields[f], values[f]);
        else
            rpc_map_nil(&m, fields[f]);
    }
    msgpack_packer *en = rpc_map_key(&m, "experts");
    msgpack_pack_array(en, names ? (size_t)r->n_experts : 0);
    for (int k = 0; names && k < r->n_experts; k++) {
        const cJSON *name = cJSON_GetArrayItem(names, k);
        rpc_pack_cstr(en, cJSON_IsString(name) ? name->valuestring : "");
    }
    cJSON_Delete(names);
    /* Whether z′ was made for the model and experts this daemon holds now, and if not, why. */
    rpc_map_bool(&m, "current", !stale);
    rpc_map_str(&m, "mismatch", mismatch);
    msgpack_packer *mats = rpc_map_key(&m, "matrices");
    msgpack_pack_array(mats, (size_t)r->n_matrices);
    for (int i = 0; i < r->n_matrices; i++) {
        rpc_map e;
        rpc_map_begin(&e);
        rpc_map_str(&e, "name", r->matrix_names[i]);
        rpc_map_int(&e, "rank", r->ranks[i]);
        rpc_map_end(&e, mats);
    }
    char path[CONFIG_PATH_MAX + 300];
    if (task_cache_safetensors_path(srv->cache, r->task, path, sizeof path, NULL) == 0)
        rpc_map_str(&m, "safetensors", path);
    else
        rpc_map_nil(&m, "safetensors");
    rpc_map_str(&m, "z_dtype", "float32-le");
    if (with_document) {
        /* The result document, the same JSON text `zmix adapt` writes (without z′). */
        msgpack_packer *d = rpc_map_key(&m, "document");
        if (r->document_len && r->document[0] == '{') {
            rpc_pack_strn(d, (const char *)r->document, r->document_len);
        } else {
            msgpack_pack_nil(d);
        }
    }
    if (with_vectors) {
        msgpack_packer *z = rpc_map_key(&m, "z");
        msgpack_pack_map(z, (size_t)r->n_matrices); /* one entry per matrix, counted above */
        size_t at = 0;
        for (int i = 0; i < r->n_matrices; i++) {
            rpc_pack_cstr(z, r->matrix_names[i]);
            size_t bytes = (size_t)r->ranks[i] * sizeof(float);
            msgpack_pack_bin(z, bytes);
            msgpack_pack_bin_body(z, r->z + at, bytes);
            at += r->ranks[i];
        }
    }
    rpc_map_end(&m, pk);
}

void jobs_pack_tasks(server *srv, const conn *c, const task_cache_info *list, size_t n,
                     msgpack_packer *pk)
{
    size_t shown = 0;
    for (size_t i = 0; i < n; i++) shown += conn_sees_task(c, list[i].task);
    rpc_map m;
    rpc_map_begin(&m);
    msgpack_packer *arr = rpc_map_key(&m, "tasks");
    msgpack_pack_array(arr, shown);
    for (size_t i = 0; i < n; i++) {
        if (!conn_sees_task(c, list[i].task)) continue;
        rpc_map e, sc;
        rpc_map_begin(&e);
        jobs_pack_task_name(&e, list[i].task);
        rpc_map_str(&e, "key", list[i].key);
        rpc_map_u64(&e, "job", list[i].job_id);
        rpc_map_double(&e, "created", (double)list[i].created_ms / 1000.0);
        rpc_map_begin(&sc);
        rpc_map_double(&sc, "accuracy", list[i].score.accuracy);
        rpc_map_double(&sc, "loglik", list[i].score.loglik);
        rpc_map_end(&sc, rpc_map_key(&e, "score"));
        rpc_map_int(&e, "bytes", (int64_t)list[i].bytes);
        rpc_map_bool(&e, "resident", list[i].resident);
        rpc_map_bool(&e, "persisted", list[i].persisted);
        char why[256];
        int stale = jobs_result_mismatch(srv, list[i].model_fingerprint, list[i].experts_digest,
                                         why, sizeof why);
        rpc_map_bool(&e, "current", !stale);
        rpc_map_str(&e, "mismatch", why);
        rpc_map_end(&e, arr);
    }
    rpc_map_end(&m, pk);
}
