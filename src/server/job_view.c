/*
 * What clients see of jobs and results: the maps that status, wait, jobs, get, submit (on a
 * cache hit) and progress notifications carry, exactly as proto/PROTOCOL.md §4 describes
 * them. Pure packing: reads a job or a cached result, writes msgpack.
 */
#include <stdlib.h>
#include <string.h>

#include "server.h"
#include "util/clock.h"

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

static const char *phase_name(int phase)
{
    switch (phase) {
    case PH_ACCEPTING: return "accepting";
    case PH_QUEUED: return "queued";
    case PH_IO: return "saving";
    case PH_SCORING: return "scoring";
    case PH_EXTRAS: return "baselines";
    default: return "finished";
    }
}

void jobs_pack_brief(const job *j, msgpack_packer *pk)
{
    msgpack_pack_map(pk, 6);
    rpc_pack_cstr(pk, "job");
    msgpack_pack_uint64(pk, j->id);
    rpc_pack_cstr(pk, "task");
    rpc_pack_cstr(pk, j->spec.task);
    rpc_pack_cstr(pk, "state");
    rpc_pack_cstr(pk, job_state_name(j->state));
    rpc_pack_cstr(pk, "priority");
    msgpack_pack_int(pk, j->spec.priority);
    rpc_pack_cstr(pk, "generation");
    msgpack_pack_int(pk, j->cem ? zmix_cem_generation(j->cem) : 0);
    rpc_pack_cstr(pk, "submitted");
    msgpack_pack_double(pk, (double)j->submit_ms / 1000.0);
}

void jobs_pack_status(server *srv, const job *j, msgpack_packer *pk)
{
    int dim = j->spec.cem.dim;
    zmix_score best = {0};
    float *alpha = NULL;
    int have_best = 0;
    if (j->cem && zmix_cem_generation(j->cem) > 0) {
        alpha = malloc((size_t)dim * sizeof *alpha);
        have_best = alpha && zmix_cem_best(j->cem, alpha, &best) == 0;
    }
    double mean_std = 0;
    if (j->cem) {
        const double *sd = zmix_cem_std(j->cem);
        for (int i = 0; i < dim; i++) mean_std += sd[i];
        mean_std /= dim > 0 ? dim : 1;
    }
    uint64_t run_ns = j->run_ns;
    if (j->phase == PH_SCORING) run_ns += (uint64_t)(zmix_now_ns() - j->gen_started_ns);
    msgpack_pack_map(pk, 21);
    rpc_pack_cstr(pk, "job");
    msgpack_pack_uint64(pk, j->id);
    rpc_pack_cstr(pk, "task");
    rpc_pack_cstr(pk, j->spec.task);
    rpc_pack_cstr(pk, "state");
    rpc_pack_cstr(pk, job_state_name(j->state));
    rpc_pack_cstr(pk, "phase");
    rpc_pack_cstr(pk, phase_name(j->phase));
    rpc_pack_cstr(pk, "priority");
    msgpack_pack_int(pk, j->spec.priority);
    rpc_pack_cstr(pk, "generation");
    msgpack_pack_int(pk, j->cem ? zmix_cem_generation(j->cem) : 0);
    rpc_pack_cstr(pk, "max_generations");
    msgpack_pack_int(pk, j->spec.cem.max_generations);
    rpc_pack_cstr(pk, "pop");
    msgpack_pack_int(pk, j->spec.cem.pop_size);
    rpc_pack_cstr(pk, "dim");
    msgpack_pack_int(pk, dim);
    rpc_pack_cstr(pk, "evaluations");
    msgpack_pack_long(pk, j->cem ? zmix_cem_evaluations(j->cem) : 0);
    rpc_pack_cstr(pk, "skipped");
    msgpack_pack_long(pk, j->cem ? zmix_cem_skipped(j->cem) : 0);
    rpc_pack_cstr(pk, "best");
    if (have_best)
        pack_score(pk, &best);
    else
        msgpack_pack_nil(pk);
    rpc_pack_cstr(pk, "best_alpha");
    if (have_best)
        pack_floats(pk, alpha, (size_t)dim);
    else
        msgpack_pack_nil(pk);
    rpc_pack_cstr(pk, "mean_std");
    if (j->cem)
        msgpack_pack_double(pk, mean_std);
    else
        msgpack_pack_nil(pk);
    rpc_pack_cstr(pk, "elapsed");
    msgpack_pack_double(pk, (double)run_ns * 1e-9);
    rpc_pack_cstr(pk, "stop_reason");
    zmix_cem_stop stop = j->cem ? zmix_cem_done(j->cem) : ZMIX_CEM_RUNNING;
    if (stop != ZMIX_CEM_RUNNING)
        rpc_pack_cstr(pk, zmix_cem_stop_name(stop));
    else
        msgpack_pack_nil(pk);
    rpc_pack_cstr(pk, "reason");
    rpc_pack_cstr(pk, j->reason);
    rpc_pack_cstr(pk, "warning");
    rpc_pack_cstr(pk, j->warning);
    rpc_pack_cstr(pk, "submitted");
    msgpack_pack_double(pk, (double)j->submit_ms / 1000.0);
    rpc_pack_cstr(pk, "started");
    if (j->start_ms)
        msgpack_pack_double(pk, (double)j->start_ms / 1000.0);
    else
        msgpack_pack_nil(pk);
    rpc_pack_cstr(pk, "ended");
    if (j->end_ms)
        msgpack_pack_double(pk, (double)j->end_ms / 1000.0);
    else
        msgpack_pack_nil(pk);
    free(alpha);
    (void)srv;
}

/* Everything a client needs from a cached result. Vectors only when asked (they can be
 * large): z′ per adapted matrix as float32 little-endian bytes. */
void jobs_pack_result(server *srv, const task_result *r, int with_vectors, msgpack_packer *pk)
{
    msgpack_pack_map(pk, with_vectors ? 17 : 16);
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
    /* Provenance: a map written by jobs.c; anything else (a damaged or foreign blob) is
     * reported as unknown rather than trusted. */
    const char *fields[3] = {"examples_digest", "model_fingerprint", "experts_digest"};
    char values[3][72] = {"", "", ""};
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    if (r->examples_len > 0 && msgpack_unpack_next(&u, (const char *)r->examples, r->examples_len,
                                                   &off) == MSGPACK_UNPACK_SUCCESS) {
        for (int f = 0; f < 3; f++) {
            const msgpack_object *v = rpc_map_get(&u.data, fields[f]);
            if (v && v->type == MSGPACK_OBJECT_STR && v->via.str.size < sizeof values[f]) {
                memcpy(values[f], v->via.str.ptr, v->via.str.size);
                values[f][v->via.str.size] = '\0';
            }
        }
    }
    msgpack_unpacked_destroy(&u);
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
