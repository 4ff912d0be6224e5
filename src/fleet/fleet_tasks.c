/*
 * The fleet's task cache in Redis (see fleet_tasks.h): one hash per task, zmix:task:NAME, with
 * the record (the <task>.zmt bytes of docs/persistence.md) and the summary a listing needs.
 */
#include "fleet/fleet_tasks.h"

#include <hiredis.h>
#include <stdlib.h>
#include <string.h>

#include "fleet/redis_args.h"

#define K_TASK "zmix:task:" /* + scoped task name */

static void task_key(char *out, size_t size, const char *task)
{
    snprintf(out, size, K_TASK "%s", task);
}

int fleet_tasks_put(fleet_jobs *fj, const task_result *r, zmix_error *err)
{
    uint8_t *bytes = NULL;
    size_t len = 0;
    int rc = task_record_bytes(r, &bytes, &len, err);
    if (rc) return rc;
    task_provenance prov;
    task_result_provenance(r, &prov);
    char key[sizeof K_TASK + TASK_NAME_MAX];
    task_key(key, sizeof key, r->task);
    args a = {0};
    arg_str(&a, "HSET");
    arg_str(&a, key);
    arg_str(&a, "record");
    arg_bytes(&a, bytes, len);
    arg_str(&a, "key");
    arg_str(&a, r->key);
    arg_str(&a, "job");
    arg_u64(&a, r->job_id);
    arg_str(&a, "created_ms");
    arg_i64(&a, r->created_ms);
    arg_str(&a, "accuracy");
    arg_f64(&a, r->score.accuracy);
    arg_str(&a, "loglik");
    arg_f64(&a, r->score.loglik);
    arg_str(&a, "bytes");
    arg_u64(&a, len);
    arg_str(&a, "model_fingerprint");
    arg_str(&a, prov.model_fingerprint);
    arg_str(&a, "experts_digest");
    arg_str(&a, prov.experts_digest);
    redisReply *rep = fleet_jobs_command(fj, a.n, a.v, a.len, err);
    free(bytes);
    if (!rep) return err->code ? err->code : ZMIX_EIO;
    freeReplyObject(rep);
    return 0;
}

int fleet_tasks_get(fleet_jobs *fj, const char *task, task_result *out, zmix_error *err)
{
    memset(out, 0, sizeof *out);
    char key[sizeof K_TASK + TASK_NAME_MAX];
    task_key(key, sizeof key, task);
    args a = {0};
    arg_str(&a, "HGET");
    arg_str(&a, key);
    arg_str(&a, "record");
    redisReply *r = fleet_jobs_command(fj, a.n, a.v, a.len, err);
    if (!r) return err->code ? err->code : ZMIX_EIO;
    int rc;
    if (r->type != REDIS_REPLY_STRING)
        rc = zmix_error_set(err, ZMIX_ENOTFOUND, "task %s: not cached", task);
    else if ((rc = task_record_parse((const uint8_t *)r->str, r->len, out, err)) != 0)
        zmix_error_prefix(err, "task %s in the fleet's Redis (%s)", task, fleet_jobs_url(fj));
    freeReplyObject(r);
    return rc;
}

int fleet_tasks_version(fleet_jobs *fj, const char *task, char key_out[TASK_KEY_MAX + 1],
                        int64_t *created_ms, zmix_error *err)
{
    char key[sizeof K_TASK + TASK_NAME_MAX];
    task_key(key, sizeof key, task);
    args a = {0};
    arg_str(&a, "HMGET");
    arg_str(&a, key);
    arg_str(&a, "key");
    arg_str(&a, "created_ms");
    redisReply *r = fleet_jobs_command(fj, a.n, a.v, a.len, err);
    if (!r) return err->code ? err->code : ZMIX_EIO;
    int rc = 0;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_STRING) {
        rc = zmix_error_set(err, ZMIX_ENOTFOUND, "task %s: not cached", task);
    } else {
        snprintf(key_out, TASK_KEY_MAX + 1, "%s", r->element[0]->str);
        *created_ms = atoll(r->element[1]->str);
    }
    freeReplyObject(r);
    return rc;
}

int fleet_tasks_evict(fleet_jobs *fj, const char *task, zmix_error *err)
{
    char key[sizeof K_TASK + TASK_NAME_MAX];
    task_key(key, sizeof key, task);
    args a = {0};
    arg_str(&a, "DEL");
    arg_str(&a, key);
    redisReply *r = fleet_jobs_command(fj, a.n, a.v, a.len, err);
    if (!r) return err->code ? err->code : ZMIX_EIO;
    int rc = r->type == REDIS_REPLY_INTEGER && r->integer == 1
                 ? 0
                 : zmix_error_set(err, ZMIX_ENOTFOUND, "task %s: not cached", task);
    freeReplyObject(r);
    return rc;
}

/* One summary from HMGET's reply (fields in the order of list_fields). */
static void info_of(const char *task, const redisReply *r, task_cache_info *out)
{
    memset(out, 0, sizeof *out);
    snprintf(out->task, sizeof out->task, "%s", task);
    const char *v[8];
    for (int i = 0; i < 8; i++)
        v[i] = r->element[i]->type == REDIS_REPLY_STRING ? r->element[i]->str : "";
    snprintf(out->key, sizeof out->key, "%s", v[0]);
    out->job_id = strtoull(v[1], NULL, 10);
    out->created_ms = atoll(v[2]);
    out->score.accuracy = atof(v[3]);
    out->score.loglik = atof(v[4]);
    out->bytes = (size_t)strtoull(v[5], NULL, 10);
    snprintf(out->model_fingerprint, sizeof out->model_fingerprint, "%s", v[6]);
    snprintf(out->experts_digest, sizeof out->experts_digest, "%s", v[7]);
    out->resident = out->persisted = 1;
}

static int by_recency(const void *a, const void *b)
{
    int64_t x = ((const task_cache_info *)a)->created_ms;
    int64_t y = ((const task_cache_info *)b)->created_ms;
    return x < y ? 1 : x > y ? -1 : 0;
}

int fleet_tasks_list(fleet_jobs *fj, task_cache_info **out, size_t *n, zmix_error *err)
{
    *out = NULL;
    *n = 0;
    size_t cap = 0;
    char cursor[32] = "0";
    int rc = 0;
    do {
        args a = {0};
        arg_str(&a, "SCAN");
        arg_str(&a, cursor);
        arg_str(&a, "MATCH");
        arg_str(&a, K_TASK "*");
        arg_str(&a, "COUNT");
        arg_str(&a, "200");
        redisReply *r = fleet_jobs_command(fj, a.n, a.v, a.len, err);
        if (!r) {
            rc = err->code ? err->code : ZMIX_EIO;
            break;
        }
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
            freeReplyObject(r);
            rc = zmix_error_set(err, ZMIX_EIO, "SCAN of the fleet's tasks: unexpected reply");
            break;
        }
        snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
        for (size_t i = 0; i < r->element[1]->elements && rc == 0; i++) {
            const char *name = r->element[1]->element[i]->str + strlen(K_TASK);
            args h = {0};
            arg_str(&h, "HMGET");
            arg_str(&h, r->element[1]->element[i]->str);
            static const char *const fields[] = {
                "key",    "job",   "created_ms",        "accuracy",
                "loglik", "bytes", "model_fingerprint", "experts_digest"};
            for (int f = 0; f < 8; f++) arg_str(&h, fields[f]);
            redisReply *hr = fleet_jobs_command(fj, h.n, h.v, h.len, err);
            if (!hr) {
                rc = err->code ? err->code : ZMIX_EIO;
                break;
            }
            if (hr->type == REDIS_REPLY_ARRAY && hr->elements == 8 &&
                hr->element[0]->type == REDIS_REPLY_STRING) { /* else evicted meanwhile */
                if (*n == cap) {
                    cap = cap ? 2 * cap : 32;
                    task_cache_info *grown = realloc(*out, cap * sizeof *grown);
                    if (!grown) {
                        freeReplyObject(hr);
                        rc = zmix_error_set(err, ZMIX_ENOMEM, "out of memory listing tasks");
                        break;
                    }
                    *out = grown;
                }
                info_of(name, hr, &(*out)[(*n)++]);
            }
            freeReplyObject(hr);
        }
        freeReplyObject(r);
    } while (rc == 0 && strcmp(cursor, "0"));
    if (rc) {
        free(*out);
        *out = NULL;
        *n = 0;
        return rc;
    }
    if (*n > 1) qsort(*out, *n, sizeof **out, by_recency);
    return 0;
}
