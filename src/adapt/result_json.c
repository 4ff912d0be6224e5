/*
 * The result of a search as JSON: the one format shared by `zmix adapt` and the daemon.
 * docs/cem.md is the reference for every field; keep the two in step.
 */
#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapt/cem_options.h"
#include "adapt_internal.h"
#include "util/json_double.h"
#include "zmix/adapt.h"
#include "zmix/version.h"

#define ADAPT_RESULT_FORMAT  "zmix.adapt_result"
#define ADAPT_RESULT_VERSION 1

/* JSON has no NaN or infinity: non-finite numbers (a score before the first generation, say)
 * become null rather than an unparseable token. Finite ones are written with the fewest
 * digits that read back to the same double, so a document read back (the daemon keeps one
 * per finished job) holds exactly the numbers the search produced. */
static cJSON *number(double v)
{
    char buf[32];
    zmix_json_double(buf, v);
    return cJSON_CreateRaw(buf);
}

static double num_or_nan(const cJSON *o);

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
    cJSON_AddStringToObject(o, "method", zmix_cem_method_name(s->method));
    cJSON_AddNumberToObject(o, "pop_size", s->pop_size);
    cJSON_AddItemToObject(o, "elite_ratio", number(s->elite_ratio));
    cJSON_AddNumberToObject(o, "n_elites", r->n_elites);
    cJSON *b = cJSON_AddArrayToObject(o, "bounds");
    if (b) {
        cJSON_AddItemToArray(b, number(s->lo));
        cJSON_AddItemToArray(b, number(s->hi));
    }
    cJSON_AddItemToObject(o, "init_std", number(s->init_std));
    cJSON_AddItemToObject(o, "ema", number(s->ema));
    cJSON_AddItemToObject(o, "std_floor", number(s->std_floor));
    cJSON_AddNumberToObject(o, "max_generations", s->max_generations);
    cJSON_AddBoolToObject(o, "elitism", s->elitism);
    cJSON_AddStringToObject(o, "metric", cem_metric_name(s->metric));
    cJSON_AddBoolToObject(o, "normalize", s->normalize);
    cJSON_AddItemToObject(o, "std_tol", number(s->std_tol));
    cJSON_AddNumberToObject(o, "patience", s->patience);
    cJSON_AddItemToObject(o, "target_accuracy",
                          s->target_accuracy > 1.0 ? cJSON_CreateNull()
                                                   : number(s->target_accuracy));
    cJSON_AddItemToObject(o, "target_loglik_tol", number(s->target_loglik_tol));
    /* 64-bit seeds do not fit a JSON number exactly: decimal strings keep every bit. */
    char buf[32];
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)s->seed);
    cJSON_AddStringToObject(o, "seed", buf);
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)s->stream);
    cJSON_AddStringToObject(o, "stream", buf);
    return o;
}

/* The held-out estimate, or null when no example was held out (or before it is measured). */
static cJSON *validation_json(const zmix_adapt_result *r)
{
    if (!r->have_validation) return cJSON_CreateNull();
    cJSON *v = cJSON_CreateObject();
    if (!v) return NULL;
    cJSON_AddNumberToObject(v, "n_examples", r->n_validation);
    cJSON *best = score_json(&r->val_best);
    if (best) {
        cJSON *ci = cJSON_AddArrayToObject(best, "accuracy_interval");
        if (ci) {
            cJSON_AddItemToArray(ci, number(r->val_acc_lo));
            cJSON_AddItemToArray(ci, number(r->val_acc_hi));
        }
    }
    cJSON_AddItemToObject(v, "best", best);
    cJSON_AddItemToObject(v, "base", score_json(&r->val_base));
    cJSON *single = cJSON_AddArrayToObject(v, "single_experts");
    for (int k = 0; single && k < r->n_experts; k++) {
        cJSON *e = score_json(&r->val_experts[k]);
        if (e) cJSON_AddStringToObject(e, "name", r->expert_names[k]);
        cJSON_AddItemToArray(single, e);
    }
    return v;
}

/* A float32 setting (eps, theta) with the fewest digits that read back to the same float, so
 * that 1e-05 reads 1e-05 and not the double nearest the float. */
static cJSON *number_f32(float v)
{
    if (!isfinite(v)) return cJSON_CreateNull();
    char buf[32];
    for (int digits = 6; digits <= 9; digits++) {
        snprintf(buf, sizeof buf, "%.*g", digits, (double)v);
        if (strtof(buf, NULL) == v) break;
    }
    return cJSON_CreateRaw(buf);
}

/* The architecture under Hugging Face config.json names, so that a reader can compare it with
 * a model's config at a glance. */
cJSON *zmix_adapt_model_json(const zmix_model_config *c)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddStringToObject(o, "model_type", c->model_type);
    cJSON_AddNumberToObject(o, "hidden_size", c->dim);
    cJSON_AddNumberToObject(o, "intermediate_size", c->hidden_dim);
    cJSON_AddNumberToObject(o, "num_hidden_layers", c->n_layers);
    cJSON_AddNumberToObject(o, "num_attention_heads", c->n_heads);
    cJSON_AddNumberToObject(o, "num_key_value_heads", c->n_kv_heads);
    cJSON_AddNumberToObject(o, "head_dim", c->head_dim);
    cJSON_AddNumberToObject(o, "vocab_size", c->vocab_size);
    cJSON_AddNumberToObject(o, "max_position_embeddings", c->max_seq_len);
    cJSON_AddItemToObject(o, "rms_norm_eps", number_f32(c->norm_eps));
    cJSON_AddItemToObject(o, "rope_theta", number_f32(c->rope_theta));
    cJSON_AddBoolToObject(o, "tie_word_embeddings", c->tied_embeddings);
    return o;
}

static int int_field(const cJSON *o, const char *key, int *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v)) return -1;
    *out = (int)v->valuedouble;
    return 0;
}

int zmix_adapt_model_from_json(const cJSON *o, zmix_model_config *c)
{
    memset(c, 0, sizeof *c);
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(o, "model_type");
    if (!cJSON_IsObject(o) || !cJSON_IsString(type)) return -1;
    snprintf(c->model_type, sizeof c->model_type, "%s", type->valuestring);
    c->norm_eps = (float)num_or_nan(cJSON_GetObjectItemCaseSensitive(o, "rms_norm_eps"));
    c->rope_theta = (float)num_or_nan(cJSON_GetObjectItemCaseSensitive(o, "rope_theta"));
    c->tied_embeddings = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "tie_word_embeddings"));
    if (int_field(o, "hidden_size", &c->dim) || int_field(o, "intermediate_size", &c->hidden_dim) ||
        int_field(o, "num_hidden_layers", &c->n_layers) ||
        int_field(o, "num_attention_heads", &c->n_heads) ||
        int_field(o, "num_key_value_heads", &c->n_kv_heads) ||
        int_field(o, "head_dim", &c->head_dim) || int_field(o, "vocab_size", &c->vocab_size) ||
        int_field(o, "max_position_embeddings", &c->max_seq_len))
        return -1;
    return 0;
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

    if (r->model.model_type[0]) cJSON_AddItemToObject(o, "model", zmix_adapt_model_json(&r->model));

    cJSON *names = cJSON_AddArrayToObject(o, "experts");
    for (int k = 0; names && k < r->n_experts; k++)
        cJSON_AddItemToArray(names, cJSON_CreateString(r->expert_names[k]));
    if (r->expert_fingerprints) {
        cJSON *fps = cJSON_AddArrayToObject(o, "expert_fingerprints");
        for (int k = 0; fps && k < r->n_experts; k++)
            cJSON_AddItemToArray(fps, cJSON_CreateString(r->expert_fingerprints[k]));
    }

    cJSON_AddItemToObject(o, "alpha", floats_json(r->alpha, (size_t)r->dim));
    cJSON_AddItemToObject(o, "best", score_json(&r->best));
    cJSON_AddItemToObject(o, "base", score_json(&r->base));
    cJSON *single = cJSON_AddArrayToObject(o, "single_experts");
    for (int k = 0; single && k < r->n_experts; k++) {
        cJSON *e = score_json(&r->experts[k]);
        if (e) cJSON_AddStringToObject(e, "name", r->expert_names[k]);
        cJSON_AddItemToArray(single, e);
    }
    cJSON_AddNumberToObject(o, "n_train", r->n_train);
    cJSON_AddNumberToObject(o, "n_validation", r->n_validation);
    cJSON_AddItemToObject(o, "validation", validation_json(r));
    cJSON_AddItemToObject(o, "base_weight", number(r->base_weight));
    if (r->warm_alpha) {
        cJSON *w = cJSON_AddObjectToObject(o, "warm_start");
        if (w) {
            cJSON_AddStringToObject(w, "from", r->warm_from);
            cJSON_AddItemToObject(w, "alpha", floats_json(r->warm_alpha, (size_t)r->dim));
        }
    } else {
        cJSON_AddNullToObject(o, "warm_start");
    }
    cJSON *warnings = cJSON_AddArrayToObject(o, "warnings");
    for (int i = 0; warnings && i < r->n_warnings; i++)
        cJSON_AddItemToArray(warnings, cJSON_CreateString(r->warnings[i]));
    cJSON_AddNumberToObject(o, "generations", r->generations);
    cJSON_AddNumberToObject(o, "evaluations", (double)r->evaluations);
    cJSON_AddNumberToObject(o, "skipped", (double)r->skipped);
    cJSON_AddItemToObject(o, "elapsed_s", number(r->elapsed_s));
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

/* ---- Reading a result document back --------------------------------------------------- */

static double num_or_nan(const cJSON *o)
{
    return cJSON_IsNumber(o) ? o->valuedouble : NAN;
}

static zmix_score score_from(const cJSON *o)
{
    zmix_score s = {num_or_nan(cJSON_GetObjectItemCaseSensitive(o, "accuracy")),
                    num_or_nan(cJSON_GetObjectItemCaseSensitive(o, "loglik")), 0.0};
    return s;
}

static void copy_str(char *dst, size_t size, const cJSON *o)
{
    snprintf(dst, size, "%s", cJSON_IsString(o) ? o->valuestring : "");
}

static char *dup_json_str(const cJSON *o)
{
    const char *s = cJSON_IsString(o) ? o->valuestring : "";
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static zmix_cem_stop stop_from(const cJSON *o)
{
    const char *s = cJSON_IsString(o) ? o->valuestring : "";
    for (int r = ZMIX_CEM_STOP_MAX_GENERATIONS; r <= ZMIX_CEM_STOP_FLAT; r++)
        if (!strcmp(s, zmix_cem_stop_name((zmix_cem_stop)r))) return (zmix_cem_stop)r;
    return ZMIX_CEM_RUNNING;
}

/* Reads n numbers of an array (null → NaN) into doubles; -1 when it is not such an array. */
static int doubles_from(const cJSON *a, double *out, int n)
{
    if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) != n) return -1;
    int i = 0;
    for (const cJSON *v = a->child; v; v = v->next) out[i++] = num_or_nan(v);
    return 0;
}

static int settings_from(const cJSON *o, zmix_adapt_result *r)
{
    zmix_cem_settings *s = &r->settings;
    zmix_cem_settings_default(s);
    if (!cJSON_IsObject(o)) return 0;
    const cJSON *method = cJSON_GetObjectItemCaseSensitive(o, "method");
    if (cJSON_IsString(method) && !strcmp(method->valuestring, "sep-cma"))
        s->method = ZMIX_CEM_METHOD_SEP_CMA; /* else (or absent, before it was reported) CEM */
    s->pop_size = (int)num_or_nan(cJSON_GetObjectItemCaseSensitive(o, "pop_size"));
    s->elite_ratio = num_or_nan(cJSON_GetObjectItemCaseSensitive(o, "elite_ratio"));
    r->n_elites = (int)num_or_nan(cJSON_GetObjectItemCaseSensitive(o, "n_elites"));
    double b[2];
    if (doubles_from(cJSON_GetObjectItemCaseSensitive(o, "bounds"), b, 2) == 0)
        s->lo = b[0], s->hi = b[1];
    s->init_std = num_or_nan(cJSON_GetObjectItemCaseSensitive(o, "init_std"));
    s->ema = num_or_nan(cJSON_GetObjectItemCaseSensitive(o, "ema"));
    s->std_floor = num_or_nan(cJSON_GetObjectItemCaseSensitive(o, "std_floor"));
    s->max_generations = (int)num_or_nan(cJSON_GetObjectItemCaseSensitive(o, "max_generations"));
    s->elitism = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "elitism"));
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(o, "metric");
    if (!cJSON_IsString(m) || cem_metric_parse(m->valuestring, &s->metric))
        s->metric = ZMIX_METRIC_ACCURACY;
    s->normalize = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "normalize"));
    s->std_tol = num_or_nan(cJSON_GetObjectItemCaseSensitive(o, "std_tol"));
    s->patience = (int)num_or_nan(cJSON_GetObjectItemCaseSensitive(o, "patience"));
    const cJSON *ta = cJSON_GetObjectItemCaseSensitive(o, "target_accuracy");
    s->target_accuracy = cJSON_IsNumber(ta) ? ta->valuedouble : 2.0;
    s->target_loglik_tol = num_or_nan(cJSON_GetObjectItemCaseSensitive(o, "target_loglik_tol"));
    const cJSON *seed = cJSON_GetObjectItemCaseSensitive(o, "seed");
    const cJSON *stream = cJSON_GetObjectItemCaseSensitive(o, "stream");
    s->seed = cJSON_IsString(seed) ? strtoull(seed->valuestring, NULL, 10) : 0;
    s->stream = cJSON_IsString(stream) ? strtoull(stream->valuestring, NULL, 10) : 0;
    return 0;
}

static int history_from(const cJSON *hist, zmix_adapt_result *r, zmix_error *err)
{
    int n = cJSON_IsArray(hist) ? cJSON_GetArraySize(hist) : 0;
    size_t d = (size_t)r->dim;
    r->history = calloc(n ? (size_t)n : 1, sizeof *r->history);
    r->history_mean = calloc(n ? (size_t)n * d : 1, sizeof *r->history_mean);
    r->history_std = calloc(n ? (size_t)n * d : 1, sizeof *r->history_std);
    if (!r->history || !r->history_mean || !r->history_std)
        return zmix_error_set(err, ZMIX_ENOMEM, "result: out of memory for %d generations", n);
    int g = 0;
    for (const cJSON *e = n ? hist->child : NULL; e; e = e->next, g++) {
        zmix_cem_gen_stats *h = &r->history[g];
        h->best = score_from(cJSON_GetObjectItemCaseSensitive(e, "best"));
        h->elite_mean = score_from(cJSON_GetObjectItemCaseSensitive(e, "elite_mean"));
        h->pop_mean = score_from(cJSON_GetObjectItemCaseSensitive(e, "pop_mean"));
        h->mean_std = num_or_nan(cJSON_GetObjectItemCaseSensitive(e, "mean_std"));
        if (doubles_from(cJSON_GetObjectItemCaseSensitive(e, "mean"), r->history_mean + g * d,
                         r->dim) ||
            doubles_from(cJSON_GetObjectItemCaseSensitive(e, "std"), r->history_std + g * d,
                         r->dim))
            return zmix_error_set(err, ZMIX_EFORMAT,
                                  "result: history[%d]: mean and std must have %d numbers", g,
                                  r->dim);
    }
    r->n_history = n;
    return 0;
}

/* "z": {matrix name: [r floats]} as include_z writes it, in the order of "matrices". Absent
 * or null leaves r->z NULL; anything else must be exactly one finite vector per matrix. */
static int z_from(const cJSON *z, zmix_adapt_result *r, zmix_error *err)
{
    if (!z || cJSON_IsNull(z)) return 0;
    if (!cJSON_IsObject(z) || cJSON_GetArraySize(z) != r->n_matrices)
        return zmix_error_set(err, ZMIX_EFORMAT,
                              "result: 'z' must be an object with one vector per matrix (%d)",
                              r->n_matrices);
    size_t total = 0;
    for (int m = 0; m < r->n_matrices; m++) {
        if (r->matrix_ranks[m] < 1 || r->matrix_ranks[m] > (1 << 20))
            return zmix_error_set(err, ZMIX_EFORMAT, "result: matrices[%d].rank is %d", m,
                                  r->matrix_ranks[m]);
        total += (size_t)r->matrix_ranks[m];
    }
    r->z = malloc(total * sizeof *r->z);
    if (!r->z) return zmix_error_set(err, ZMIX_ENOMEM, "result: out of memory for z'");
    r->z_total = total;
    size_t off = 0;
    for (int m = 0; m < r->n_matrices; m++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(z, r->matrix_names[m]);
        int n = r->matrix_ranks[m];
        if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != n)
            return zmix_error_set(err, ZMIX_EFORMAT, "result: z.%s must be an array of %d numbers",
                                  r->matrix_names[m], n);
        int i = 0;
        for (const cJSON *e = v->child; e; e = e->next, i++) {
            if (!cJSON_IsNumber(e) || !isfinite(e->valuedouble))
                return zmix_error_set(err, ZMIX_EFORMAT, "result: z.%s[%d] is not a finite number",
                                      r->matrix_names[m], i);
            r->z[off + (size_t)i] = (float)e->valuedouble;
        }
        off += (size_t)n;
    }
    return 0;
}

int zmix_adapt_result_from_json(const cJSON *o, zmix_adapt_result *out, zmix_error *err)
{
    zmix_adapt_result r;
    memset(&r, 0, sizeof r);
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(o, "format");
    if (!cJSON_IsString(fmt) || strcmp(fmt->valuestring, ADAPT_RESULT_FORMAT) != 0)
        return zmix_error_set(err, ZMIX_EFORMAT, "not a zmix result document (format '%s')",
                              cJSON_IsString(fmt) ? fmt->valuestring : "");
    const cJSON *alpha = cJSON_GetObjectItemCaseSensitive(o, "alpha");
    const cJSON *names = cJSON_GetObjectItemCaseSensitive(o, "experts");
    const cJSON *mats = cJSON_GetObjectItemCaseSensitive(o, "matrices");
    if (!cJSON_IsArray(alpha) || !cJSON_IsArray(names) || cJSON_GetArraySize(names) < 1 ||
        cJSON_GetArraySize(alpha) < 1)
        return zmix_error_set(err, ZMIX_EFORMAT, "result: 'alpha' and 'experts' must be arrays");
    r.dim = cJSON_GetArraySize(alpha);
    r.n_experts = cJSON_GetArraySize(names);
    r.n_matrices = cJSON_IsArray(mats) ? cJSON_GetArraySize(mats) : 0;
    copy_str(r.key, sizeof r.key, cJSON_GetObjectItemCaseSensitive(o, "key"));
    copy_str(r.model_fingerprint, sizeof r.model_fingerprint,
             cJSON_GetObjectItemCaseSensitive(o, "model_fingerprint"));
    copy_str(r.experts_digest, sizeof r.experts_digest,
             cJSON_GetObjectItemCaseSensitive(o, "experts_digest"));
    copy_str(r.examples_digest, sizeof r.examples_digest,
             cJSON_GetObjectItemCaseSensitive(o, "examples_digest"));
    const cJSON *set = cJSON_GetObjectItemCaseSensitive(o, "adapt");
    zmix_error ignored;
    if (!cJSON_IsString(set) || zmix_adapt_set_parse(set->valuestring, &r.adapt, &ignored))
        r.adapt = ZMIX_ADAPT_MLP;
    r.per_layer = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "per_layer"));
    r.normalize = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "normalize"));
    r.rescale = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "rescale"));
    r.n_examples = (int)num_or_nan(cJSON_GetObjectItemCaseSensitive(o, "n_examples"));
    r.stop = stop_from(cJSON_GetObjectItemCaseSensitive(o, "stop_reason"));
    r.best = score_from(cJSON_GetObjectItemCaseSensitive(o, "best"));
    r.base = score_from(cJSON_GetObjectItemCaseSensitive(o, "base"));
    r.generations = (int)num_or_nan(cJSON_GetObjectItemCaseSensitive(o, "generations"));
    r.evaluations = (long)num_or_nan(cJSON_GetObjectItemCaseSensitive(o, "evaluations"));
    r.skipped = (long)num_or_nan(cJSON_GetObjectItemCaseSensitive(o, "skipped"));
    r.elapsed_s = num_or_nan(cJSON_GetObjectItemCaseSensitive(o, "elapsed_s"));
    const cJSON *bw = cJSON_GetObjectItemCaseSensitive(o, "base_weight");
    r.base_weight = cJSON_IsNumber(bw) ? (float)bw->valuedouble : 0.0f;
    const cJSON *nt = cJSON_GetObjectItemCaseSensitive(o, "n_train");
    const cJSON *nv = cJSON_GetObjectItemCaseSensitive(o, "n_validation");
    r.n_train = cJSON_IsNumber(nt) ? nt->valueint : r.n_examples;
    r.n_validation = cJSON_IsNumber(nv) ? nv->valueint : 0;
    const cJSON *w;
    cJSON_ArrayForEach(w, cJSON_GetObjectItemCaseSensitive(o, "warnings"))
    {
        if (cJSON_IsString(w) && r.n_warnings < ZMIX_ADAPT_MAX_WARNINGS)
            snprintf(r.warnings[r.n_warnings++], sizeof r.warnings[0], "%s", w->valuestring);
    }
    settings_from(cJSON_GetObjectItemCaseSensitive(o, "settings"), &r);

    double *a = malloc((size_t)r.dim * sizeof *a);
    r.alpha = malloc((size_t)r.dim * sizeof *r.alpha);
    r.expert_names = calloc((size_t)r.n_experts, sizeof *r.expert_names);
    r.experts = calloc((size_t)r.n_experts, sizeof *r.experts);
    r.matrix_names = calloc(r.n_matrices ? (size_t)r.n_matrices : 1, sizeof *r.matrix_names);
    r.matrix_ranks = calloc(r.n_matrices ? (size_t)r.n_matrices : 1, sizeof *r.matrix_ranks);
    r.expert_fingerprints = calloc((size_t)r.n_experts, sizeof *r.expert_fingerprints);
    int rc = 0;
    if (!a || !r.alpha || !r.expert_names || !r.experts || !r.matrix_names || !r.matrix_ranks ||
        !r.expert_fingerprints) {
        rc = zmix_error_set(err, ZMIX_ENOMEM, "result: out of memory");
        goto out;
    }
    doubles_from(alpha, a, r.dim);
    for (int i = 0; i < r.dim; i++) r.alpha[i] = (float)a[i];
    const cJSON *warm = cJSON_GetObjectItemCaseSensitive(o, "warm_start");
    const cJSON *warm_alpha = cJSON_GetObjectItemCaseSensitive(warm, "alpha");
    if (cJSON_IsArray(warm_alpha) && cJSON_GetArraySize(warm_alpha) == r.dim) {
        r.warm_alpha = malloc((size_t)r.dim * sizeof *r.warm_alpha);
        if (!r.warm_alpha) {
            rc = zmix_error_set(err, ZMIX_ENOMEM, "result: out of memory");
            goto out;
        }
        doubles_from(warm_alpha, a, r.dim);
        for (int i = 0; i < r.dim; i++) r.warm_alpha[i] = (float)a[i];
        copy_str(r.warm_from, sizeof r.warm_from, cJSON_GetObjectItemCaseSensitive(warm, "from"));
        doubles_from(alpha, a, r.dim); /* a is alpha's again below */
    }
    int k = 0;
    for (const cJSON *e = names->child; e; e = e->next, k++)
        if (!(r.expert_names[k] = dup_json_str(e))) rc = ZMIX_ENOMEM;
    const cJSON *fps = cJSON_GetObjectItemCaseSensitive(o, "expert_fingerprints");
    k = 0;
    for (const cJSON *e = cJSON_IsArray(fps) ? fps->child : NULL; e && k < r.n_experts;
         e = e->next, k++)
        copy_str(r.expert_fingerprints[k], sizeof r.expert_fingerprints[k], e);
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(o, "model");
    if (model && zmix_adapt_model_from_json(model, &r.model)) {
        rc = zmix_error_set(err, ZMIX_EFORMAT,
                            "result: 'model' is not an architecture summary (model_type, "
                            "hidden_size, ...)");
        goto out;
    }
    const cJSON *single = cJSON_GetObjectItemCaseSensitive(o, "single_experts");
    k = 0;
    for (const cJSON *e = cJSON_IsArray(single) ? single->child : NULL; e && k < r.n_experts;
         e = e->next, k++)
        r.experts[k] = score_from(e);
    int m = 0;
    for (const cJSON *e = r.n_matrices ? mats->child : NULL; e; e = e->next, m++) {
        if (!(r.matrix_names[m] = dup_json_str(cJSON_GetObjectItemCaseSensitive(e, "name"))))
            rc = ZMIX_ENOMEM;
        r.matrix_ranks[m] = (int)num_or_nan(cJSON_GetObjectItemCaseSensitive(e, "rank"));
    }
    if (rc) {
        rc = zmix_error_set(err, ZMIX_ENOMEM, "result: out of memory");
        goto out;
    }
    rc = history_from(cJSON_GetObjectItemCaseSensitive(o, "history"), &r, err);
    if (!rc) rc = z_from(cJSON_GetObjectItemCaseSensitive(o, "z"), &r, err);
out:
    free(a);
    if (rc) {
        zmix_adapt_result_free(&r);
        return rc;
    }
    *out = r;
    return 0;
}
