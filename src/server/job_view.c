/*
 * What clients see of jobs and results: the maps that status, wait, jobs, get, submit (on a
 * cache hit) and progress notifications carry, exactly as proto/PROTOCOL.md §4 describes
 * them. Pure packing: reads a job or a cached result, writes msgpack.
 */
#include <cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "server.h"
#include "util/clock.h"
#include "zmix/adapt.h"

static void pack_score(msgpack_packer *pk, const zmix_score *s)
{
    msgpack_pack_map(pk, 2);
    rpc_pack_cstr(pk, "accuracy");
    msgpack_pack_double(pk, s->accuracy);
    rpc_pack_cstr(pk, "loglik");
    msgpack_pack_double(pk, s->loglik);
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
    const zmix_cem *cem = zmix_session_cem(ses);
    int dim = zmix_cem_dim(cem);
    out->generation = zmix_cem_generation(cem);
    out->evaluations = zmix_cem_evaluations(cem);
    out->skipped = zmix_cem_skipped(cem);
    out->stop = zmix_cem_done(cem);
    out->elapsed_s = zmix_session_elapsed(ses);
    out->have_mean_std = 1;
    out->mean_std = mean_of(zmix_cem_std(cem), dim);
    if (out->generation > 0) {
        float *alpha = malloc((size_t)dim * sizeof *alpha);
        zmix_score best;
        int ok = alpha && zmix_cem_best(cem, alpha, &best) == 0;
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
    msgpack_pack_map(pk, 6);
    rpc_pack_kv_u64(pk, "job", j->id);
    rpc_pack_kv_str(pk, "task", j->spec.task);
    rpc_pack_kv_str(pk, "state", job_state_name(j->state));
    rpc_pack_cstr(pk, "priority");
    msgpack_pack_int(pk, j->spec.priority);
    rpc_pack_cstr(pk, "generation");
    msgpack_pack_int(pk, s->generation);
    rpc_pack_cstr(pk, "submitted");
    msgpack_pack_double(pk, (double)j->submit_ms / 1000.0);
    job_summary_free(&tmp);
}

static void pack_time_or_nil(msgpack_packer *pk, const char *key, int64_t ms)
{
    rpc_pack_cstr(pk, key);
    if (ms)
        msgpack_pack_double(pk, (double)ms / 1000.0);
    else
        msgpack_pack_nil(pk);
}

void jobs_pack_status(server *srv, const job *j, msgpack_packer *pk)
{
    job_summary tmp;
    const job_summary *s = summary_of(j, &tmp);
    int dim = j->spec.cem.dim;
    double elapsed = s->elapsed_s;
    if (j->phase == JOB_PH_SCORING) elapsed += (double)(zmix_now_ns() - j->step_started_ns) * 1e-9;
    msgpack_pack_map(pk, 22);
    rpc_pack_kv_u64(pk, "job", j->id);
    rpc_pack_kv_str(pk, "task", j->spec.task);
    rpc_pack_kv_str(pk, "state", job_state_name(j->state));
    rpc_pack_kv_str(pk, "phase", phase_name(j));
    rpc_pack_cstr(pk, "priority");
    msgpack_pack_int(pk, j->spec.priority);
    rpc_pack_cstr(pk, "generation");
    msgpack_pack_int(pk, s->generation);
    rpc_pack_cstr(pk, "max_generations");
    msgpack_pack_int(pk, j->spec.cem.max_generations);
    rpc_pack_cstr(pk, "pop");
    msgpack_pack_int(pk, j->spec.cem.pop_size);
    rpc_pack_cstr(pk, "dim");
    msgpack_pack_int(pk, dim);
    rpc_pack_cstr(pk, "settings");
    job_spec_pack_settings(&j->spec, pk);
    rpc_pack_cstr(pk, "evaluations");
    msgpack_pack_long(pk, s->evaluations);
    rpc_pack_cstr(pk, "skipped");
    msgpack_pack_long(pk, s->skipped);
    rpc_pack_cstr(pk, "best");
    if (s->have_best)
        pack_score(pk, &s->best);
    else
        msgpack_pack_nil(pk);
    rpc_pack_cstr(pk, "best_alpha");
    if (s->have_best)
        pack_floats(pk, s->best_alpha, (size_t)dim);
    else
        msgpack_pack_nil(pk);
    rpc_pack_cstr(pk, "mean_std");
    if (s->have_mean_std)
        msgpack_pack_double(pk, s->mean_std);
    else
        msgpack_pack_nil(pk);
    rpc_pack_cstr(pk, "elapsed");
    msgpack_pack_double(pk, elapsed);
    rpc_pack_cstr(pk, "stop_reason");
    if (s->stop != ZMIX_CEM_RUNNING)
        rpc_pack_cstr(pk, zmix_cem_stop_name(s->stop));
    else
        msgpack_pack_nil(pk);
    rpc_pack_kv_str(pk, "reason", j->reason);
    rpc_pack_kv_str(pk, "warning", j->warning);
    pack_time_or_nil(pk, "submitted", j->submit_ms);
    pack_time_or_nil(pk, "started", j->start_ms);
    pack_time_or_nil(pk, "ended", j->end_ms);
    job_summary_free(&tmp);
    (void)srv;
}

static void pack_score_kv(msgpack_packer *pk, const char *k, const zmix_score *s)
{
    rpc_pack_cstr(pk, k);
    pack_score(pk, s);
}

/* history: what `zmix plot JOB` draws (best so far, elite and population means, the
 * distribution's mean and std as float32), per generation. */
void jobs_pack_history(uint64_t id, const zmix_adapt_result *r, msgpack_packer *pk)
{
    msgpack_pack_map(pk, 2);
    rpc_pack_kv_u64(pk, "job", id);
    rpc_pack_cstr(pk, "history");
    msgpack_pack_array(pk, (size_t)r->n_history);
    size_t dim = (size_t)r->dim;
    for (int g = 0; g < r->n_history; g++) {
        const zmix_cem_gen_stats *h = &r->history[g];
        msgpack_pack_map(pk, 7);
        rpc_pack_cstr(pk, "generation");
        msgpack_pack_int(pk, g + 1);
        pack_score_kv(pk, "best", &h->best);
        pack_score_kv(pk, "elite_mean", &h->elite_mean);
        pack_score_kv(pk, "pop_mean", &h->pop_mean);
        rpc_pack_cstr(pk, "mean_std");
        msgpack_pack_double(pk, h->mean_std);
        const double *v[2] = {r->history_mean + (size_t)g * dim, r->history_std + (size_t)g * dim};
        for (int w = 0; w < 2; w++) {
            rpc_pack_cstr(pk, w ? "std" : "mean");
            msgpack_pack_array(pk, dim);
            for (size_t i = 0; i < dim; i++) msgpack_pack_float(pk, (float)v[w][i]);
        }
    }
}

/* ---- Results --------------------------------------------------------------------------- */

/* Everything a client needs from a cached result. Vectors only when asked (they can be
 * large): z′ per adapted matrix as float32 little-endian bytes. */
/* Provenance of a cached result: from its result document (docs/cem.md), or, in a record
 * written before results carried one, from the small msgpack map stored in its place.
 * Anything else (a damaged or foreign blob) is reported as unknown rather than trusted. */
static void provenance_of(const task_result *r, char values[3][72])
{
    static const char *const fields[3] = {"examples_digest", "model_fingerprint", "experts_digest"};
    cJSON *doc = r->document_len && r->document[0] == '{'
                     ? cJSON_ParseWithLength((const char *)r->document, r->document_len)
                     : NULL;
    for (int f = 0; doc && f < 3; f++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(doc, fields[f]);
        if (cJSON_IsString(v) && strlen(v->valuestring) < 72) strcpy(values[f], v->valuestring);
    }
    cJSON_Delete(doc);
    if (doc || !r->document_len) return;
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    if (msgpack_unpack_next(&u, (const char *)r->document, r->document_len, &off) ==
        MSGPACK_UNPACK_SUCCESS) {
        for (int f = 0; f < 3; f++) {
            const msgpack_object *v = rpc_map_get(&u.data, fields[f]);
            if (v && v->type == MSGPACK_OBJECT_STR && v->via.str.size < 72) {
                memcpy(values[f], v->via.str.ptr, v->via.str.size);
                values[f][v->via.str.size] = '\0';
            }
        }
    }
    msgpack_unpacked_destroy(&u);
}

void jobs_pack_result(server *srv, const task_result *r, int with_vectors, int with_document,
                      msgpack_packer *pk)
{
    int has_doc = with_document && r->document_len && r->document[0] == '{';
    msgpack_pack_map(pk, 16 + (with_vectors != 0) + (with_document != 0));
    rpc_pack_cstr(pk, "task");
    rpc_pack_cstr(pk, r->task);
    rpc_pack_cstr(pk, "key");
    rpc_pack_cstr(pk, r->key);
    rpc_pack_cstr(pk, "job");
    msgpack_pack_uint64(pk, r->job_id);
    rpc_pack_cstr(pk, "created");
    msgpack_pack_double(pk, (double)r->created_ms / 1000.0);
    rpc_pack_cstr(pk, "score");
    pack_score(pk, &r->score);
    rpc_pack_cstr(pk, "base_score");
    pack_score(pk, &r->base_score);
    rpc_pack_cstr(pk, "expert_scores");
    msgpack_pack_array(pk, (size_t)r->n_experts);
    for (int k = 0; k < r->n_experts; k++) {
        msgpack_pack_map(pk, 3);
        rpc_pack_cstr(pk, "expert");
        rpc_pack_cstr(pk, k < zmix_runtime_n_experts(srv->rt) ? zmix_runtime_expert_name(srv->rt, k)
                                                              : "?");
        rpc_pack_cstr(pk, "accuracy");
        msgpack_pack_double(pk, r->expert_scores[k].accuracy);
        rpc_pack_cstr(pk, "loglik");
        msgpack_pack_double(pk, r->expert_scores[k].loglik);
    }
    rpc_pack_cstr(pk, "alpha");
    pack_floats(pk, r->alpha, (size_t)r->n_alpha);
    rpc_pack_cstr(pk, "settings");
    if (r->settings_len > 0)
        msgpack_sbuffer_write(pk->data, (const char *)r->settings, r->settings_len);
    else
        msgpack_pack_nil(pk);
    const char *fields[3] = {"examples_digest", "model_fingerprint", "experts_digest"};
    char values[3][72] = {"", "", ""};
    provenance_of(r, values);
    for (int f = 0; f < 3; f++) {
        rpc_pack_cstr(pk, fields[f]);
        if (values[f][0])
            rpc_pack_cstr(pk, values[f]);
        else
            msgpack_pack_nil(pk);
    }
    /* Whether z′ was made for the model and experts this daemon holds now. */
    rpc_pack_cstr(pk, "current");
    int current = !strcmp(values[1], zmix_model_fingerprint(srv->model)) &&
                  !strcmp(values[2], srv->experts_digest);
    current ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
    rpc_pack_cstr(pk, "matrices");
    msgpack_pack_array(pk, (size_t)r->n_matrices);
    for (int m = 0; m < r->n_matrices; m++) {
        msgpack_pack_map(pk, 2);
        rpc_pack_cstr(pk, "name");
        rpc_pack_cstr(pk, r->matrix_names[m]);
        rpc_pack_cstr(pk, "rank");
        msgpack_pack_uint32(pk, r->ranks[m]);
    }
    char path[CONFIG_PATH_MAX + 300];
    rpc_pack_cstr(pk, "safetensors");
    if (task_cache_safetensors_path(srv->cache, r->task, path, sizeof path, NULL) == 0)
        rpc_pack_cstr(pk, path);
    else
        msgpack_pack_nil(pk);
    rpc_pack_cstr(pk, "z_dtype");
    rpc_pack_cstr(pk, "float32-le");
    if (with_document) {
        /* The result document, the same JSON text `zmix adapt` writes (without z′). */
        rpc_pack_cstr(pk, "document");
        if (has_doc) {
            msgpack_pack_str(pk, r->document_len);
            msgpack_pack_str_body(pk, r->document, r->document_len);
        } else {
            msgpack_pack_nil(pk);
        }
    }
    if (with_vectors) {
        rpc_pack_cstr(pk, "z");
        msgpack_pack_map(pk, (size_t)r->n_matrices);
        size_t at = 0;
        for (int m = 0; m < r->n_matrices; m++) {
            rpc_pack_cstr(pk, r->matrix_names[m]);
            size_t bytes = (size_t)r->ranks[m] * sizeof(float);
            msgpack_pack_bin(pk, bytes);
            msgpack_pack_bin_body(pk, r->z + at, bytes);
            at += r->ranks[m];
        }
    }
}
