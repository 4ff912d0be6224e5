/*
 * Reading results: typed getters over msgpack maps and the decoders of the shared result
 * shapes (job status, task result). Unknown keys are ignored so that a newer daemon that
 * adds fields still talks to an older client; a known key with the wrong type is an error
 * naming the key, because silently reading it as 0 would hide a protocol mismatch.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client_internal.h"

const msgpack_object *zcli_mp_get(const msgpack_object *map, const char *key)
{
    if (!map || map->type != MSGPACK_OBJECT_MAP) return NULL;
    size_t n = strlen(key);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == n &&
            !memcmp(k->via.str.ptr, key, n))
            return &map->via.map.ptr[i].val;
    }
    return NULL;
}

static int bad_type(const char *key, const char *want, zmix_error *err)
{
    return zmix_error_set(err, ZMIX_EFORMAT, "response field '%s' is not %s", key, want);
}

int zcli_mp_int(const msgpack_object *map, const char *key, int64_t *out, zmix_error *err)
{
    const msgpack_object *v = zcli_mp_get(map, key);
    if (!v || v->type == MSGPACK_OBJECT_NIL) return 0;
    if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER && v->via.u64 <= INT64_MAX)
        *out = (int64_t)v->via.u64;
    else if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        *out = v->via.i64;
    else
        return bad_type(key, "an integer", err);
    return 0;
}

int zcli_mp_int32(const msgpack_object *map, const char *key, int *out, zmix_error *err)
{
    int64_t v = *out;
    int rc = zcli_mp_int(map, key, &v, err);
    if (rc) return rc;
    if (v < INT32_MIN || v > INT32_MAX) return bad_type(key, "a 32-bit integer", err);
    *out = (int)v;
    return 0;
}

int zcli_mp_u64(const msgpack_object *map, const char *key, uint64_t *out, zmix_error *err)
{
    const msgpack_object *v = zcli_mp_get(map, key);
    if (!v || v->type == MSGPACK_OBJECT_NIL) return 0;
    if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return bad_type(key, "an unsigned integer", err);
    *out = v->via.u64;
    return 0;
}

static int num_of(const msgpack_object *v, double *out)
{
    switch (v->type) {
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: *out = v->via.f64; return 0;
    case MSGPACK_OBJECT_POSITIVE_INTEGER: *out = (double)v->via.u64; return 0;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: *out = (double)v->via.i64; return 0;
    case MSGPACK_OBJECT_NIL: *out = NAN; return 0;
    default: return -1;
    }
}

int zcli_mp_double(const msgpack_object *map, const char *key, double *out, zmix_error *err)
{
    const msgpack_object *v = zcli_mp_get(map, key);
    if (!v) return 0;
    return num_of(v, out) ? bad_type(key, "a number", err) : 0;
}

int zcli_mp_bool(const msgpack_object *map, const char *key, int *out, zmix_error *err)
{
    const msgpack_object *v = zcli_mp_get(map, key);
    if (!v || v->type == MSGPACK_OBJECT_NIL) return 0;
    if (v->type != MSGPACK_OBJECT_BOOLEAN) return bad_type(key, "a boolean", err);
    *out = v->via.boolean;
    return 0;
}

int zcli_mp_str(const msgpack_object *map, const char *key, char *out, size_t cap, zmix_error *err)
{
    const msgpack_object *v = zcli_mp_get(map, key);
    if (!v || v->type == MSGPACK_OBJECT_NIL) return 0;
    if (v->type != MSGPACK_OBJECT_STR) return bad_type(key, "a string", err);
    size_t n = v->via.str.size < cap ? v->via.str.size : cap - 1;
    memcpy(out, v->via.str.ptr, n);
    out[n] = '\0';
    return 0;
}

int zcli_mp_score(const msgpack_object *map, const char *key, zmix_score *out, int *present,
                  zmix_error *err)
{
    const msgpack_object *v = zcli_mp_get(map, key);
    if (present) *present = 0;
    if (!v || v->type == MSGPACK_OBJECT_NIL) return 0;
    if (v->type != MSGPACK_OBJECT_MAP) return bad_type(key, "a score map", err);
    out->accuracy = out->loglik = NAN;
    int rc = zcli_mp_double(v, "accuracy", &out->accuracy, err);
    if (!rc) rc = zcli_mp_double(v, "loglik", &out->loglik, err);
    if (rc) return zmix_error_prefix(err, "%s", key);
    if (present) *present = 1;
    return 0;
}

static int numbers(const msgpack_object *map, const char *key, float **fo, double **dout, int *n,
                   zmix_error *err)
{
    const msgpack_object *v = zcli_mp_get(map, key);
    *n = 0;
    if (!v || v->type == MSGPACK_OBJECT_NIL) return 0;
    if (v->type != MSGPACK_OBJECT_ARRAY) return bad_type(key, "an array of numbers", err);
    uint32_t m = v->via.array.size;
    void *buf = calloc(m ? m : 1, fo ? sizeof(float) : sizeof(double));
    if (!buf) return zmix_error_set(err, ZMIX_ENOMEM, "out of memory for '%s'", key);
    for (uint32_t i = 0; i < m; i++) {
        double x;
        if (num_of(&v->via.array.ptr[i], &x)) {
            free(buf);
            return zmix_error_set(err, ZMIX_EFORMAT, "response field '%s'[%u] is not a number", key,
                                  i);
        }
        if (fo)
            ((float *)buf)[i] = (float)x;
        else
            ((double *)buf)[i] = x;
    }
    if (fo)
        *fo = buf;
    else
        *dout = buf;
    *n = (int)m;
    return 0;
}

int zcli_mp_floats(const msgpack_object *map, const char *key, float **out, int *n, zmix_error *err)
{
    *out = NULL;
    return numbers(map, key, out, NULL, n, err);
}

int zcli_mp_doubles(const msgpack_object *map, const char *key, double **out, int *n,
                    zmix_error *err)
{
    *out = NULL;
    return numbers(map, key, NULL, out, n, err);
}

void zmix_client_status_free(zmix_client_status *s)
{
    if (!s) return;
    free(s->best_alpha);
    for (int g = 0; g < s->n_history; g++) {
        free(s->history[g].mean);
        free(s->history[g].std);
    }
    free(s->history);
    memset(s, 0, sizeof *s);
}

int zmix_client_state_is_final(const char *state)
{
    return !strcmp(state, "done") || !strcmp(state, "failed") || !strcmp(state, "cancelled");
}

int zcli_decode_history(const msgpack_object *h, zmix_client_status *out, zmix_error *err)
{
    if (h->type != MSGPACK_OBJECT_ARRAY) return bad_type("history", "an array", err);
    uint32_t n = h->via.array.size;
    out->history = calloc(n ? n : 1, sizeof *out->history);
    if (!out->history) return zmix_error_set(err, ZMIX_ENOMEM, "out of memory for the history");
    out->n_history = (int)n;
    for (uint32_t g = 0; g < n; g++) {
        const msgpack_object *e = &h->via.array.ptr[g];
        zmix_client_gen *x = &out->history[g];
        if (e->type != MSGPACK_OBJECT_MAP) return bad_type("history[]", "a map", err);
        x->generation = (int)g + 1;
        x->mean_std = NAN;
        int dm = 0, ds = 0;
        int rc = zcli_mp_int32(e, "generation", &x->generation, err);
        if (!rc) rc = zcli_mp_score(e, "best", &x->best, NULL, err);
        if (!rc) rc = zcli_mp_score(e, "elite_mean", &x->elite_mean, NULL, err);
        if (!rc) rc = zcli_mp_score(e, "pop_mean", &x->pop_mean, NULL, err);
        if (!rc) rc = zcli_mp_double(e, "mean_std", &x->mean_std, err);
        if (!rc) rc = zcli_mp_doubles(e, "mean", &x->mean, &dm, err);
        if (!rc) rc = zcli_mp_doubles(e, "std", &x->std, &ds, err);
        if (!rc && dm != ds) rc = zmix_error_set(err, ZMIX_EFORMAT, "%d means but %d stds", dm, ds);
        if (rc) return zmix_error_prefix(err, "history[%u]", g);
        x->dim = dm;
    }
    return 0;
}

int zcli_decode_status(const msgpack_object *o, zmix_client_status *out, zmix_error *err)
{
    memset(out, 0, sizeof *out);
    out->mean_std = NAN;
    if (o->type != MSGPACK_OBJECT_MAP) return bad_type("status", "a map", err);
    int rc = zcli_mp_u64(o, "job", &out->job, err);
    if (!rc) rc = zcli_mp_str(o, "task", out->task, sizeof out->task, err);
    if (!rc) rc = zcli_mp_str(o, "state", out->state, sizeof out->state, err);
    if (!rc) rc = zcli_mp_str(o, "phase", out->phase, sizeof out->phase, err);
    if (!rc) rc = zcli_mp_int32(o, "priority", &out->priority, err);
    if (!rc) rc = zcli_mp_int32(o, "generation", &out->generation, err);
    if (!rc) rc = zcli_mp_int32(o, "max_generations", &out->max_generations, err);
    if (!rc) rc = zcli_mp_int32(o, "pop", &out->pop, err);
    if (!rc) rc = zcli_mp_int32(o, "dim", &out->dim, err);
    if (!rc) rc = zcli_mp_int(o, "evaluations", &out->evaluations, err);
    if (!rc) rc = zcli_mp_int(o, "skipped", &out->skipped, err);
    if (!rc) rc = zcli_mp_score(o, "best", &out->best, &out->has_best, err);
    if (!rc) rc = zcli_mp_floats(o, "best_alpha", &out->best_alpha, &out->n_best_alpha, err);
    if (!rc) rc = zcli_mp_double(o, "mean_std", &out->mean_std, err);
    if (!rc) rc = zcli_mp_double(o, "elapsed", &out->elapsed, err);
    if (!rc) rc = zcli_mp_str(o, "stop_reason", out->stop_reason, sizeof out->stop_reason, err);
    if (!rc) rc = zcli_mp_str(o, "reason", out->reason, sizeof out->reason, err);
    if (!rc) rc = zcli_mp_double(o, "submitted", &out->submitted, err);
    if (!rc) rc = zcli_mp_double(o, "started", &out->started, err);
    if (!rc) rc = zcli_mp_double(o, "ended", &out->ended, err);
    const msgpack_object *h = zcli_mp_get(o, "history");
    if (!rc && h && h->type != MSGPACK_OBJECT_NIL) rc = zcli_decode_history(h, out, err);
    if (isnan(out->started)) out->started = 0;
    if (isnan(out->ended)) out->ended = 0;
    if (rc) zmix_client_status_free(out);
    return rc;
}

void zmix_client_result_free(zmix_client_result *r)
{
    if (!r) return;
    free(r->expert_scores);
    free(r->alpha);
    for (int m = 0; m < r->n_matrices; m++) free(r->matrices[m].z);
    free(r->matrices);
    memset(r, 0, sizeof *r);
}

static int decode_z(const msgpack_object *zmap, zmix_client_result *out, zmix_error *err)
{
    if (zmap->type != MSGPACK_OBJECT_MAP) return bad_type("z", "a map", err);
    for (int m = 0; m < out->n_matrices; m++) {
        zmix_client_matrix *mx = &out->matrices[m];
        const msgpack_object *b = zcli_mp_get(zmap, mx->name);
        if (!b)
            return zmix_error_set(err, ZMIX_EFORMAT, "response: z has no vector for %s", mx->name);
        if (b->type != MSGPACK_OBJECT_BIN || b->via.bin.size != (size_t)mx->rank * 4)
            return zmix_error_set(err, ZMIX_EFORMAT,
                                  "response: z[%s] is not %u float32 values as bytes", mx->name,
                                  mx->rank);
        mx->z = malloc(mx->rank ? (size_t)mx->rank * sizeof(float) : 1);
        if (!mx->z) return zmix_error_set(err, ZMIX_ENOMEM, "out of memory for z[%s]", mx->name);
        /* float32 little-endian on the wire, whatever the host order */
        const unsigned char *p = (const unsigned char *)b->via.bin.ptr;
        for (uint32_t i = 0; i < mx->rank; i++) {
            uint32_t u = (uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 |
                         (uint32_t)p[4 * i + 2] << 16 | (uint32_t)p[4 * i + 3] << 24;
            memcpy(&mx->z[i], &u, 4);
        }
    }
    return 0;
}

static int decode_result_fields(const msgpack_object *o, zmix_client_result *out, zmix_error *err)
{
    int rc = zcli_mp_str(o, "task", out->task, sizeof out->task, err);
    if (!rc) rc = zcli_mp_str(o, "key", out->key, sizeof out->key, err);
    if (!rc) rc = zcli_mp_u64(o, "job", &out->job, err);
    if (!rc) rc = zcli_mp_double(o, "created", &out->created, err);
    if (!rc) rc = zcli_mp_score(o, "score", &out->score, NULL, err);
    if (!rc) rc = zcli_mp_score(o, "base_score", &out->base_score, NULL, err);
    if (!rc) rc = zcli_mp_floats(o, "alpha", &out->alpha, &out->n_alpha, err);
    if (!rc)
        rc = zcli_mp_str(o, "examples_digest", out->examples_digest, sizeof out->examples_digest,
                         err);
    if (!rc) rc = zcli_mp_str(o, "safetensors", out->safetensors, sizeof out->safetensors, err);
    out->current = 1; /* a daemon that does not say made it with what it holds */
    if (!rc) rc = zcli_mp_bool(o, "current", &out->current, err);
    if (!rc) rc = zcli_mp_str(o, "mismatch", out->mismatch, sizeof out->mismatch, err);
    if (rc) return rc;
    const msgpack_object *es = zcli_mp_get(o, "expert_scores");
    if (es && es->type == MSGPACK_OBJECT_ARRAY) {
        uint32_t n = es->via.array.size;
        out->expert_scores = calloc(n ? n : 1, sizeof *out->expert_scores);
        if (!out->expert_scores) return zmix_error_set(err, ZMIX_ENOMEM, "out of memory");
        out->n_experts = (int)n;
        for (uint32_t k = 0; k < n; k++) {
            const msgpack_object *e = &es->via.array.ptr[k];
            zmix_client_expert_score *x = &out->expert_scores[k];
            x->score.accuracy = x->score.loglik = NAN;
            rc = zcli_mp_str(e, "expert", x->name, sizeof x->name, err);
            if (!rc) rc = zcli_mp_double(e, "accuracy", &x->score.accuracy, err);
            if (!rc) rc = zcli_mp_double(e, "loglik", &x->score.loglik, err);
            if (rc) return zmix_error_prefix(err, "expert_scores[%u]", k);
        }
    }
    const msgpack_object *ms = zcli_mp_get(o, "matrices");
    if (ms && ms->type == MSGPACK_OBJECT_ARRAY) {
        uint32_t n = ms->via.array.size;
        out->matrices = calloc(n ? n : 1, sizeof *out->matrices);
        if (!out->matrices) return zmix_error_set(err, ZMIX_ENOMEM, "out of memory");
        out->n_matrices = (int)n;
        for (uint32_t m = 0; m < n; m++) {
            const msgpack_object *e = &ms->via.array.ptr[m];
            int64_t rank = 0;
            rc = zcli_mp_str(e, "name", out->matrices[m].name, sizeof out->matrices[m].name, err);
            if (!rc) rc = zcli_mp_int(e, "rank", &rank, err);
            if (!rc && (rank < 0 || rank > UINT32_MAX))
                rc = zmix_error_set(err, ZMIX_EFORMAT, "rank %lld out of range", (long long)rank);
            if (rc) return zmix_error_prefix(err, "matrices[%u]", m);
            out->matrices[m].rank = (uint32_t)rank;
        }
    }
    const msgpack_object *z = zcli_mp_get(o, "z");
    if (z && z->type != MSGPACK_OBJECT_NIL) return decode_z(z, out, err);
    return 0;
}

int zcli_decode_result(const msgpack_object *o, zmix_client_result *out, zmix_error *err)
{
    memset(out, 0, sizeof *out);
    if (o->type != MSGPACK_OBJECT_MAP) return bad_type("result", "a map", err);
    int rc = decode_result_fields(o, out, err);
    if (rc) zmix_client_result_free(out);
    return rc;
}
