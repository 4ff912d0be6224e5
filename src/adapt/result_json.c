/*
 * The result of a search as JSON: the one format shared by `zmix adapt` and the daemon.
 * docs/cem.md is the reference for every field; keep the two in step.
 */
#include <cJSON.h>
#include <math.h>
#include <stdio.h>

#include "zmix/adapt.h"
#include "zmix/version.h"

#define ADAPT_RESULT_FORMAT  "zmix.adapt_result"
#define ADAPT_RESULT_VERSION 1

/* JSON has no NaN or infinity: non-finite numbers (a score before the first generation, say)
 * become null rather than an unparseable token. */
static cJSON *number(double v)
{
    return isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateNull();
}

static cJSON *score_json(const zmix_score *s)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddItemToObject(o, "accuracy", number(s->accuracy));
    cJSON_AddItemToObject(o, "loglik", number(s->loglik));
    return o;
}

static cJSON *floats_json(const float *v, size_t n)
{
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; a && i < n; i++) cJSON_AddItemToArray(a, number(v[i]));
    return a;
}

static cJSON *doubles_json(const double *v, size_t n)
{
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; a && i < n; i++) cJSON_AddItemToArray(a, number(v[i]));
    return a;
}

static cJSON *settings_json(const zmix_adapt_result *r)
{
    const zmix_cem_settings *s = &r->settings;
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddNumberToObject(o, "pop_size", s->pop_size);
    cJSON_AddNumberToObject(o, "elite_ratio", s->elite_ratio);
    cJSON_AddNumberToObject(o, "n_elites", r->n_elites);
    cJSON *b = cJSON_AddArrayToObject(o, "bounds");
    if (b) {
        cJSON_AddItemToArray(b, number(s->lo));
        cJSON_AddItemToArray(b, number(s->hi));
    }
    cJSON_AddNumberToObject(o, "init_std", s->init_std);
    cJSON_AddNumberToObject(o, "ema", s->ema);
    cJSON_AddNumberToObject(o, "std_floor", s->std_floor);
    cJSON_AddNumberToObject(o, "max_generations", s->max_generations);
    cJSON_AddBoolToObject(o, "elitism", s->elitism);
    cJSON_AddStringToObject(o, "metric", s->metric == ZMIX_METRIC_LOGLIK ? "loglik" : "accuracy");
    cJSON_AddBoolToObject(o, "normalize", s->normalize);
    cJSON_AddNumberToObject(o, "std_tol", s->std_tol);
    cJSON_AddNumberToObject(o, "patience", s->patience);
    cJSON_AddItemToObject(o, "target_accuracy",
                          s->target_accuracy > 1.0 ? cJSON_CreateNull()
                                                   : number(s->target_accuracy));
    cJSON_AddNumberToObject(o, "target_loglik_tol", s->target_loglik_tol);
    /* 64-bit seeds do not fit a JSON number exactly: decimal strings keep every bit. */
    char buf[32];
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)s->seed);
    cJSON_AddStringToObject(o, "seed", buf);
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)s->stream);
    cJSON_AddStringToObject(o, "stream", buf);
    return o;
}

cJSON *zmix_adapt_result_to_json(const zmix_adapt_result *r, int include_z)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddStringToObject(o, "format", ADAPT_RESULT_FORMAT);
    cJSON_AddNumberToObject(o, "version", ADAPT_RESULT_VERSION);
    cJSON_AddStringToObject(o, "zmix_version", ZMIX_VERSION_STRING);
    cJSON_AddStringToObject(o, "stop_reason", zmix_cem_stop_name(r->stop));
    /* Provenance: what the result was made from, so that a consumer can tell whether it
     * applies to the model and experts it holds. */
    cJSON_AddStringToObject(o, "key", r->key);
    cJSON_AddStringToObject(o, "model_fingerprint", r->model_fingerprint);
    cJSON_AddStringToObject(o, "experts_digest", r->experts_digest);
    cJSON_AddStringToObject(o, "examples_digest", r->examples_digest);
    cJSON_AddStringToObject(o, "adapt", zmix_adapt_set_name(r->adapt));
    cJSON_AddBoolToObject(o, "per_layer", r->per_layer);
    cJSON_AddBoolToObject(o, "normalize", r->normalize);
    cJSON_AddBoolToObject(o, "rescale", r->rescale);
    cJSON_AddNumberToObject(o, "n_examples", r->n_examples);

    cJSON *names = cJSON_AddArrayToObject(o, "experts");
    for (int k = 0; names && k < r->n_experts; k++)
        cJSON_AddItemToArray(names, cJSON_CreateString(r->expert_names[k]));

    cJSON_AddItemToObject(o, "alpha", floats_json(r->alpha, (size_t)r->dim));
    cJSON_AddItemToObject(o, "best", score_json(&r->best));
    cJSON_AddItemToObject(o, "base", score_json(&r->base));
    cJSON *single = cJSON_AddArrayToObject(o, "single_experts");
    for (int k = 0; single && k < r->n_experts; k++) {
        cJSON *e = score_json(&r->experts[k]);
        if (e) cJSON_AddStringToObject(e, "name", r->expert_names[k]);
        cJSON_AddItemToArray(single, e);
    }
    cJSON_AddNumberToObject(o, "generations", r->generations);
    cJSON_AddNumberToObject(o, "evaluations", (double)r->evaluations);
    cJSON_AddNumberToObject(o, "skipped", (double)r->skipped);
    cJSON_AddNumberToObject(o, "elapsed_s", r->elapsed_s);
    cJSON_AddItemToObject(o, "settings", settings_json(r));

    cJSON *mats = cJSON_AddArrayToObject(o, "matrices");
    for (int m = 0; mats && m < r->n_matrices; m++) {
        cJSON *e = cJSON_CreateObject();
        if (e) {
            cJSON_AddStringToObject(e, "name", r->matrix_names[m]);
            cJSON_AddNumberToObject(e, "rank", r->matrix_ranks[m]);
        }
        cJSON_AddItemToArray(mats, e);
    }

    cJSON *hist = cJSON_AddArrayToObject(o, "history");
    for (int g = 0; hist && g < r->n_history; g++) {
        const zmix_cem_gen_stats *h = &r->history[g];
        cJSON *e = cJSON_CreateObject();
        if (!e) break;
        cJSON_AddNumberToObject(e, "generation", g + 1);
        cJSON_AddItemToObject(e, "best", score_json(&h->best));
        cJSON_AddItemToObject(e, "elite_mean", score_json(&h->elite_mean));
        cJSON_AddItemToObject(e, "pop_mean", score_json(&h->pop_mean));
        cJSON_AddItemToObject(e, "mean_std", number(h->mean_std));
        cJSON_AddItemToObject(e, "mean",
                              doubles_json(r->history_mean + (size_t)g * r->dim, (size_t)r->dim));
        cJSON_AddItemToObject(e, "std",
                              doubles_json(r->history_std + (size_t)g * r->dim, (size_t)r->dim));
        cJSON_AddItemToArray(hist, e);
    }

    if (include_z) {
        if (r->z) {
            cJSON *z = cJSON_AddObjectToObject(o, "z");
            size_t off = 0;
            for (int m = 0; z && m < r->n_matrices; m++) {
                cJSON_AddItemToObject(z, r->matrix_names[m],
                                      floats_json(r->z + off, (size_t)r->matrix_ranks[m]));
                off += (size_t)r->matrix_ranks[m];
            }
        } else {
            cJSON_AddNullToObject(o, "z");
        }
    }
    return o;
}
