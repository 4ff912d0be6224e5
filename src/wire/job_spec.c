/*
 * Submit parameters into a checked job spec, and the spec's settings as the map status, get
 * and the job store keep (see job_spec.h). Pure functions of their arguments.
 * Thread: any (the daemon calls them on the event loop).
 */
#include "wire/job_spec.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapt/cem_options.h"
#include "wire/rpc.h"

int job_task_field(const msgpack_object *params, const char *key, int required,
                   char task[TASK_NAME_MAX + 1], zmix_error *err)
{
    const msgpack_object *v = rpc_map_get(params, key);
    task[0] = '\0';
    if (!required && (!v || v->type == MSGPACK_OBJECT_NIL)) return 0;
    /* A name too long for the buffer is refused by the rule, like every other bad name, not by
     * the string getter's size check. */
    int rc;
    if (v && v->type == MSGPACK_OBJECT_STR && v->via.str.size > TASK_NAME_MAX)
        rc = task_name_check_bytes(v->via.str.ptr, v->via.str.size, err);
    else if ((rc = rpc_get_str(params, key, 1, NULL, task, TASK_NAME_MAX + 1, err)))
        return rc; /* names the field already */
    else
        rc = task_name_check(task, err);
    if (rc && strcmp(key, "task")) zmix_error_prefix(err, "field '%s'", key);
    return rc;
}

int job_task_param(const msgpack_object *params, char task[TASK_NAME_MAX + 1], zmix_error *err)
{
    return job_task_field(params, "task", 1, task, err);
}

/* Checks the form of a prompt or target (token ids, or text for a model with a tokenizer) and
 * returns in *bound how many tokens it can become: an id array's length, or for text the
 * tokenizer's bound (zmix_tokenizer_max_tokens, BOS included for a prompt). What the tokens must
 * satisfy (vocabulary, context) is the examples validator's business, once they are tokens. */
static int check_part_form(const msgpack_object *v, uint32_t idx, const char *which,
                           const job_limits *lim, size_t *bound, zmix_error *err)
{
    if (!v || v->type == MSGPACK_OBJECT_NIL)
        return zmix_error_set(err, ZMIX_EINVAL, "examples[%u]: missing field '%s'", idx, which);
    if (v->type == MSGPACK_OBJECT_STR) {
        if (!lim->tokenizer)
            return zmix_error_set(err, ZMIX_EINVAL,
                                  "examples[%u].%s is text but the model has no tokenizer: send "
                                  "token ids",
                                  idx, which);
        *bound = zmix_tokenizer_max_tokens(lim->tokenizer, v->via.str.size,
                                           !strcmp(which, "prompt") ? ZMIX_TOK_BOS : 0);
        return 0;
    }
    if (v->type != MSGPACK_OBJECT_ARRAY)
        return zmix_error_set(err, ZMIX_EINVAL,
                              "examples[%u].%s must be an array of token ids%s, got %s", idx, which,
                              lim->tokenizer ? " or a string" : "", rpc_type_name(v));
    for (uint32_t j = 0; j < v->via.array.size; j++) {
        const msgpack_object *t = &v->via.array.ptr[j];
        if (t->type != MSGPACK_OBJECT_POSITIVE_INTEGER &&
            t->type != MSGPACK_OBJECT_NEGATIVE_INTEGER)
            return zmix_error_set(err, ZMIX_EINVAL,
                                  "examples[%u].%s[%u] must be an integer, got %s", idx, which, j,
                                  rpc_type_name(t));
        /* Token ids are int32: anything wider cannot be one (and must not wrap into one). */
        int wide = t->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? t->via.u64 > INT32_MAX
                                                              : t->via.i64 < INT32_MIN;
        if (wide)
            return zmix_error_set(err, ZMIX_ERANGE, "examples[%u].%s[%u] is not a 32-bit integer",
                                  idx, which, j);
    }
    *bound = v->via.array.size;
    return 0;
}

/* Writes the tokens of a checked prompt or target at out; returns how many (or a negative
 * code). */
static int copy_part(const msgpack_object *v, uint32_t idx, const char *which,
                     const job_limits *lim, int32_t *out, zmix_error *err)
{
    if (v->type == MSGPACK_OBJECT_STR) {
        int n = zmix_tokenizer_encode(lim->tokenizer, v->via.str.ptr, v->via.str.size,
                                      !strcmp(which, "prompt"), out, err);
        return n < 0 ? zmix_error_prefix(err, "examples[%u].%s", idx, which) : n;
    }
    for (uint32_t j = 0; j < v->via.array.size; j++) {
        const msgpack_object *t = &v->via.array.ptr[j];
        out[j] =
            t->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (int32_t)t->via.u64 : (int32_t)t->via.i64;
    }
    return (int)v->via.array.size;
}

/* Checks the choices and answer of multiple-choice example idx (2 to ZMIX_MAX_CHOICES
 * choices, each as a target is; an answer indexing one) and adds to *bound the tokens they can
 * become and room for their lengths. */
static int check_choices_form(const msgpack_object *e, uint32_t idx, const job_limits *lim,
                              size_t *bound, zmix_error *err)
{
    const msgpack_object *c = rpc_map_get(e, "choices"), *a = rpc_map_get(e, "answer");
    if (rpc_map_get(e, "target"))
        return zmix_error_set(err, ZMIX_EINVAL,
                              "examples[%u] has both 'target' and '%s': give a target (exact "
                              "match) or choices and answer (multiple choice)",
                              idx, c ? "choices" : "answer");
    if (!c || c->type != MSGPACK_OBJECT_ARRAY)
        return zmix_error_set(err, ZMIX_EINVAL, "examples[%u].choices must be an array, got %s",
                              idx, c ? rpc_type_name(c) : "nothing");
    uint32_t n = c->via.array.size;
    if (n < 2 || n > ZMIX_MAX_CHOICES)
        return zmix_error_set(err, ZMIX_EINVAL,
                              "examples[%u].choices: %u choices, expected 2 to %d", idx, n,
                              ZMIX_MAX_CHOICES);
    for (uint32_t j = 0; j < n; j++) {
        char which[32];
        size_t nc = 0;
        snprintf(which, sizeof which, "choices[%u]", j);
        int rc = check_part_form(&c->via.array.ptr[j], idx, which, lim, &nc, err);
        if (rc) return rc;
        *bound += nc + 1;
    }
    if (!a || a->type != MSGPACK_OBJECT_POSITIVE_INTEGER || a->via.u64 >= n)
        return zmix_error_set(err, ZMIX_EINVAL,
                              "examples[%u].answer must be the index of a choice, an integer in "
                              "[0, %u)",
                              idx, n);
    return 0;
}

/* Writes the choices of a checked multiple-choice example at out, then their lengths, and
 * points x at them; returns the int32s written (or a negative code). */
static int copy_choices(const msgpack_object *e, uint32_t idx, const job_limits *lim,
                        zmix_example *x, int32_t *out, zmix_error *err)
{
    const msgpack_object *c = rpc_map_get(e, "choices");
    int32_t lens[ZMIX_MAX_CHOICES];
    int at = 0, n = (int)c->via.array.size;
    for (int j = 0; j < n; j++) {
        char which[32];
        snprintf(which, sizeof which, "choices[%d]", j);
        int nc = copy_part(&c->via.array.ptr[j], idx, which, lim, out + at, err);
        if (nc < 0) return nc;
        lens[j] = nc;
        at += nc;
    }
    memcpy(out + at, lens, (size_t)n * sizeof *lens);
    x->choices = out;
    x->choice_len = out + at;
    x->n_choices = n;
    x->answer = (int)rpc_map_get(e, "answer")->via.u64;
    return at + n;
}

/* The examples of a submit: their form here, their tokens by the one examples validator
 * (zmix_examples_check_vocab_context, the scorer's rule), then the daemon's token limit. */
static int parse_examples(const msgpack_object *v, const job_limits *lim, zmix_examples *out,
                          zmix_error *err)
{
    memset(out, 0, sizeof *out);
    if (!v || v->type == MSGPACK_OBJECT_NIL)
        return zmix_error_set(err, ZMIX_EINVAL, "missing field 'examples'");
    if (v->type != MSGPACK_OBJECT_ARRAY)
        return zmix_error_set(err, ZMIX_EINVAL, "field 'examples' must be an array, got %s",
                              rpc_type_name(v));
    uint32_t n = v->via.array.size;
    if (n == 0) return zmix_error_set(err, ZMIX_EINVAL, "field 'examples' is empty");
    if (n > (uint32_t)lim->max_examples)
        return zmix_error_set(err, ZMIX_ELIMIT, "field 'examples': %u examples, at most %d", n,
                              lim->max_examples);
    static const char *const keys[] = {"prompt", "target", "choices", "answer", NULL};
    size_t bound = 0; /* tokens the examples can become; the frame limit bounds it */
    for (uint32_t i = 0; i < n; i++) {
        const msgpack_object *e = &v->via.array.ptr[i];
        char where[48];
        snprintf(where, sizeof where, "examples[%u]", i);
        if (e->type != MSGPACK_OBJECT_MAP)
            return zmix_error_set(err, ZMIX_EINVAL,
                                  "%s must be a map {prompt, target} or {prompt, choices, "
                                  "answer}, got %s",
                                  where, rpc_type_name(e));
        int rc = rpc_map_check_keys(e, keys, where, err);
        if (rc) return rc;
        size_t np = 0, nt = 0;
        int choice = rpc_map_get(e, "choices") || rpc_map_get(e, "answer");
        if ((rc = check_part_form(rpc_map_get(e, "prompt"), i, "prompt", lim, &np, err)) ||
            (rc = choice ? check_choices_form(e, i, lim, &nt, err)
                         : check_part_form(rpc_map_get(e, "target"), i, "target", lim, &nt, err)))
            return rc;
        bound += np + nt;
    }
    out->items = calloc(n, sizeof *out->items);
    out->tokens = malloc((bound + 1) * sizeof *out->tokens);
    if (!out->items || !out->tokens) {
        zmix_examples_free(out);
        return zmix_error_set(err, ZMIX_ENOMEM, "examples: out of memory for %zu tokens", bound);
    }
    size_t at = 0, n_lengths = 0; /* int32s written; the choices' lengths among them */
    int rc = 0;
    for (uint32_t i = 0; rc == 0 && i < n; i++) {
        const msgpack_object *e = &v->via.array.ptr[i];
        zmix_example *x = &out->items[i];
        int np = copy_part(rpc_map_get(e, "prompt"), i, "prompt", lim, out->tokens + at, err);
        if (np < 0) {
            rc = np;
            break;
        }
        x->prompt = out->tokens + at;
        x->n_prompt = np;
        at += (size_t)np;
        const msgpack_object *t = rpc_map_get(e, "target");
        int nt = t ? copy_part(t, i, "target", lim, out->tokens + at, err)
                   : copy_choices(e, i, lim, x, out->tokens + at, err);
        if (nt < 0) {
            rc = nt;
            break;
        }
        if (t) x->target = out->tokens + at, x->n_target = nt;
        at += (size_t)nt;
        n_lengths += (size_t)x->n_choices;
    }
    out->n = (int)n;
    out->n_tokens = at;
    at -= n_lengths; /* the tokens the limit counts */
    if (rc == 0) rc = zmix_examples_check_vocab_context(out, lim->vocab_size, lim->context, err);
    if (rc == 0 && (long)at > lim->max_tokens)
        rc =
            zmix_error_set(err, ZMIX_ELIMIT, "examples: %zu tokens in total, over the limit of %ld",
                           at, lim->max_tokens);
    if (rc) zmix_examples_free(out);
    return rc;
}

/* The daemon limit that lowers an option's upper bound ("max-pop"), and its value; NULL when
 * none applies (no limits given, or none for this option). */
static const char *option_limit(const cem_option *o, const job_limits *lim, double *value)
{
    if (!lim || o->limit == CEM_LIMIT_NONE) return NULL;
    *value = o->limit == CEM_LIMIT_POP ? lim->max_pop : lim->max_generations;
    return o->limit == CEM_LIMIT_POP ? "max-pop" : "max-generations";
}

/* An integer setting. Under a daemon limit, a value the client gave above it is refused naming
 * the limit, and a default above it is lowered to it: the job states the settings it runs with
 * (status, get), and those are what it resumes with after a restart. */
static int parse_int_option(const msgpack_object *m, const cem_option *o, const job_limits *lim,
                            int *field, zmix_error *err)
{
    double limit = o->hi;
    const char *limit_name = option_limit(o, lim, &limit);
    if (limit > o->hi) limit = o->hi;
    const msgpack_object *given = rpc_map_get(m, o->key);
    if (!given) {
        if (*field > limit) *field = (int)limit;
        return 0;
    }
    if (limit_name && given->type == MSGPACK_OBJECT_POSITIVE_INTEGER &&
        given->via.u64 > (uint64_t)limit)
        return zmix_error_set(err, ZMIX_ERANGE,
                              "field '%s': %llu outside [%lld, %lld] (%lld is this daemon's --%s)",
                              o->key, (unsigned long long)given->via.u64, (long long)o->lo,
                              (long long)limit, (long long)limit, limit_name);
    int64_t x;
    int rc = rpc_get_int(m, o->key, 0, (int64_t)o->lo, (int64_t)limit, *field, &x, err);
    if (rc == 0) *field = (int)x;
    return rc;
}

static int parse_bounds(const msgpack_object *m, const cem_option *o, zmix_adapt_opts *v,
                        zmix_error *err)
{
    const msgpack_object *b = rpc_map_get(m, o->key);
    if (!b || b->type == MSGPACK_OBJECT_NIL) return 0;
    double got[2];
    int ok = b->type == MSGPACK_OBJECT_ARRAY && b->via.array.size == 2;
    for (int k = 0; ok && k < 2; k++) {
        const msgpack_object *x = &b->via.array.ptr[k];
        if (x->type == MSGPACK_OBJECT_FLOAT32 || x->type == MSGPACK_OBJECT_FLOAT64)
            got[k] = x->via.f64;
        else if (x->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
            got[k] = (double)x->via.u64;
        else if (x->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
            got[k] = (double)x->via.i64;
        else
            ok = 0;
    }
    if (!ok) return zmix_error_set(err, ZMIX_EINVAL, "field '%s' must be [lo, hi] numbers", o->key);
    if (!(got[0] < got[1]) || got[0] < o->lo || got[1] > o->hi)
        return zmix_error_set(err, ZMIX_ERANGE, "field '%s': [%g, %g] must have lo < hi within ±%g",
                              o->key, got[0], got[1], o->hi);
    *(double *)cem_option_field(o, v) = got[0];
    *(double *)((char *)v + o->offset_hi) = got[1];
    return 0;
}

/* Reads one setting of the cem map into v, where its default already is. */
static int parse_cem_option(const msgpack_object *m, const cem_option *o, const job_limits *lim,
                            zmix_adapt_opts *v, zmix_error *err)
{
    void *field = cem_option_field(o, v);
    switch (o->type) {
    case CEM_TYPE_BOOL: return rpc_get_bool(m, o->key, *(int *)field, field, err);
    case CEM_TYPE_INT: return parse_int_option(m, o, lim, field, err);
    case CEM_TYPE_UINT64: return rpc_get_uint64(m, o->key, *(uint64_t *)field, field, err);
    case CEM_TYPE_DOUBLE:
        return rpc_get_double(m, o->key, 0, o->lo, o->hi, *(double *)field, field, err);
    case CEM_TYPE_BOUNDS: return parse_bounds(m, o, v, err);
    case CEM_TYPE_METRIC: {
        char name[16];
        int rc = rpc_get_str(m, o->key, 0, cem_metric_name(*(zmix_metric *)field), name,
                             sizeof name, err);
        if (rc == 0 && cem_metric_parse(name, field) != 0)
            rc = zmix_error_set(err, ZMIX_EINVAL,
                                "field '%s': '%s', expected accuracy, loglik, choice or choice-sum",
                                o->key, name);
        return rc;
    }
    case CEM_TYPE_METHOD: {
        char name[16];
        int rc = rpc_get_str(m, o->key, 0, zmix_cem_method_name(*(zmix_cem_method *)field), name,
                             sizeof name, err);
        if (rc == 0 && cem_method_parse(name, field) != 0)
            rc = zmix_error_set(err, ZMIX_EINVAL, "field '%s': '%s', expected sep-cma or cem",
                                o->key, name);
        return rc;
    }
    }
    return zmix_error_set(err, ZMIX_EINVAL, "field '%s': unknown setting type %d", o->key,
                          (int)o->type);
}

/* Reads the cem map (NULL: none given) into s->cem and s->compose: every setting of the table
 * (adapt/cem_options.c), over the defaults. lim: the daemon's limits for a new job; NULL for a
 * job restored from the store, which keeps the settings it was accepted with whatever the
 * limits are now. */
static int parse_cem(const msgpack_object *m, const job_limits *lim, int n_experts, int n_matrices,
                     const zmix_cem_settings *cem_defaults, job_spec *s, zmix_error *err)
{
    /* A stored job's settings (lim NULL) may also hold its warm start (job_spec_pack_settings). */
    const char *keys[CEM_OPT_COUNT + 3];
    for (int i = 0; i < CEM_OPT_COUNT; i++) keys[i] = cem_options[i].key;
    keys[CEM_OPT_COUNT] = lim ? NULL : "warm_start";
    keys[CEM_OPT_COUNT + 1] = "warm_alpha";
    keys[CEM_OPT_COUNT + 2] = NULL;
    static const msgpack_object empty = {.type = MSGPACK_OBJECT_MAP};
    if (!m) m = &empty;
    int rc = rpc_map_check_keys(m, keys, "cem", err);
    if (rc) return rc;
    zmix_adapt_opts v;
    zmix_adapt_opts_default(&v);
    v.cem = *cem_defaults;
    v.cem.init_mean = NULL;
    for (int i = 0; i < CEM_OPT_COUNT; i++)
        if ((rc = parse_cem_option(m, &cem_options[i], lim, &v, err)))
            return zmix_error_prefix(err, "cem");
    s->seed_given = rpc_map_get(m, "seed") != NULL;
    s->cem = v.cem;
    s->compose.per_layer = v.per_layer;
    s->compose.rescale = v.rescale;
    s->validation = v.validation;
    /* Normalisation happens in the engine (include/zmix/adapt.h): the α it hands out is
     * already normalised, so the α scored, ranked and reported is one vector. */
    s->compose.normalize = 0;
    s->cem.n_experts = n_experts;
    long dim = (long)n_experts * (s->compose.per_layer ? n_matrices : 1);
    s->cem.dim = dim > INT_MAX ? INT_MAX : (int)dim;
    return 0;
}

int job_spec_parse(const msgpack_object *params, const job_limits *lim,
                   const zmix_cem_settings *cem_defaults, job_spec *out, zmix_error *err)
{
    static const char *const keys[] = {"task",      "examples",   "cem", "priority",
                                       "recompute", "warm_start", NULL};
    memset(out, 0, sizeof *out);
    if (params->type != MSGPACK_OBJECT_MAP)
        return zmix_error_set(err, ZMIX_EINVAL, "params must be a map");
    int rc = rpc_map_check_keys(params, keys, NULL, err); /* the reply names the method */
    if (rc) return rc;
    if ((rc = job_task_param(params, out->task, err))) return rc;
    int64_t prio;
    if ((rc = rpc_get_int(params, "priority", 0, -10, 10, 0, &prio, err))) return rc;
    out->priority = (int)prio;
    if ((rc = rpc_get_bool(params, "recompute", 0, &out->recompute, err))) return rc;
    /* The task named; its α is looked up by the daemon. */
    if ((rc = job_task_field(params, "warm_start", 0, out->warm_start, err))) return rc;
    const msgpack_object *cem;
    if ((rc = rpc_get_map(params, "cem", &cem, err))) return rc;
    if ((rc = parse_cem(cem, lim, lim->n_experts, lim->n_matrices, cem_defaults, out, err)))
        return rc;
    if (out->cem.dim > lim->max_dim)
        return zmix_error_set(err, ZMIX_ELIMIT, "cem: search dimension %d (%s), at most %d",
                              out->cem.dim, out->compose.per_layer ? "per-layer" : "per-expert",
                              lim->max_dim);
    /* The engine's own check, with its messages (elite count, bounds with normalize,
     * pop × dim): what is accepted here is what the job runs and resumes with. */
    if ((rc = zmix_cem_settings_check(&out->cem, err))) return rc;
    if ((rc = parse_examples(rpc_map_get(params, "examples"), lim, &out->examples, err))) return rc;
    if ((rc = zmix_adapt_metric_check(out->cem.metric, &out->examples, err))) {
        job_spec_free(out);
        return rc;
    }
    size_t need = job_spec_memory(out);
    if (lim->max_job_bytes && need > lim->max_job_bytes) {
        job_spec_free(out);
        return zmix_error_set(err, ZMIX_ELIMIT,
                              "the job needs about %zu MiB (population %d x dimension %d, %d "
                              "generations of history), over the per-job limit of %zu MiB",
                              (need + ((size_t)1 << 20) - 1) >> 20, out->cem.pop_size, out->cem.dim,
                              out->cem.max_generations, lim->max_job_bytes >> 20);
    }
    return 0;
}

size_t job_spec_memory(const job_spec *spec)
{
    size_t pop = (size_t)spec->cem.pop_size, dim = (size_t)spec->cem.dim;
    size_t gens = (size_t)spec->cem.max_generations;
    size_t population = pop * dim * (sizeof(float) + 2 * sizeof(double)); /* ours + engine's */
    size_t per_member = pop * (2 * sizeof(zmix_score) + 2 * sizeof(int));
    size_t history = gens * (2 * dim * sizeof(double) + 4 * sizeof(zmix_score)) * 2;
    size_t distribution = 8 * dim * sizeof(double);
    size_t examples =
        spec->examples.n_tokens * sizeof(int32_t) + (size_t)spec->examples.n * sizeof(zmix_example);
    return population + per_member + history + distribution + examples + 4096;
}

void job_spec_drop_examples(job_spec *spec)
{
    zmix_examples_free(&spec->examples);
}

void job_spec_free(job_spec *spec)
{
    zmix_examples_free(&spec->examples);
    free(spec->warm_mean);
    spec->warm_mean = NULL;
    spec->cem.init_mean = NULL;
}

void job_spec_adapt_opts(const job_spec *spec, zmix_adapt_opts *out)
{
    zmix_adapt_opts_default(out);
    out->cem = spec->cem;
    out->cem.stream = 0; /* derived from the inputs key by the session */
    out->per_layer = spec->compose.per_layer;
    out->rescale = spec->compose.rescale;
    out->validation = spec->validation;
    out->n_threads = 1;
    out->cem.init_mean = spec->warm_mean;
    if (spec->warm_mean)
        snprintf(out->warm_from, sizeof out->warm_from, "task %s",
                 task_name_local(spec->warm_start));
}

void job_spec_key(const job_spec *spec, const char *model_fingerprint, const char *experts_digest,
                  char hex[65])
{
    zmix_adapt_opts opts;
    job_spec_adapt_opts(spec, &opts);
    zmix_adapt_key_from(model_fingerprint, experts_digest, spec->cem.n_experts, spec->cem.dim,
                        &spec->examples, &opts, hex);
}

/* The settings as the table's options see them (the inverse of parse_cem). */
static zmix_adapt_opts spec_settings(const job_spec *spec)
{
    zmix_adapt_opts v;
    zmix_adapt_opts_default(&v);
    v.cem = spec->cem;
    v.per_layer = spec->compose.per_layer;
    v.rescale = spec->compose.rescale;
    v.validation = spec->validation;
    return v;
}

void job_spec_pack_settings(const job_spec *spec, msgpack_packer *pk)
{
    zmix_adapt_opts v = spec_settings(spec);
    msgpack_pack_map(pk, CEM_OPT_COUNT + (spec->warm_mean ? 2 : 0));
    if (spec->warm_mean) { /* what the job was accepted with, kept for a restart */
        rpc_pack_cstr(pk, "warm_start");
        rpc_pack_cstr(pk, spec->warm_start);
        rpc_pack_cstr(pk, "warm_alpha");
        msgpack_pack_array(pk, (size_t)spec->cem.dim);
        for (int i = 0; i < spec->cem.dim; i++) msgpack_pack_double(pk, spec->warm_mean[i]);
    }
    for (int i = 0; i < CEM_OPT_COUNT; i++) {
        const cem_option *o = &cem_options[i];
        const void *field = cem_option_field_const(o, &v);
        rpc_pack_cstr(pk, o->key);
        switch (o->type) {
        case CEM_TYPE_BOOL:
            *(const int *)field ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
            break;
        case CEM_TYPE_INT: msgpack_pack_int(pk, *(const int *)field); break;
        case CEM_TYPE_UINT64: msgpack_pack_uint64(pk, *(const uint64_t *)field); break;
        case CEM_TYPE_DOUBLE: msgpack_pack_double(pk, *(const double *)field); break;
        case CEM_TYPE_BOUNDS:
            msgpack_pack_array(pk, 2);
            msgpack_pack_double(pk, *(const double *)field);
            msgpack_pack_double(pk, *(const double *)((const char *)&v + o->offset_hi));
            break;
        case CEM_TYPE_METRIC:
            rpc_pack_cstr(pk, cem_metric_name(*(const zmix_metric *)field));
            break;
        case CEM_TYPE_METHOD:
            rpc_pack_cstr(pk, zmix_cem_method_name(*(const zmix_cem_method *)field));
            break;
        }
    }
}

void job_spec_settings_bytes(const job_spec *spec, uint8_t **data, size_t *len)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    job_spec_pack_settings(spec, &pk);
    *data = (uint8_t *)sb.data; /* the buffer passes to the caller */
    *len = sb.size;
}

/* The warm start a stored job was accepted with (job_spec_pack_settings), if any. */
static int restore_warm_start(const msgpack_object *m, job_spec *out, zmix_error *err)
{
    const msgpack_object *a = rpc_map_get(m, "warm_alpha");
    if (!a) return 0;
    int rc = rpc_get_str(m, "warm_start", 1, NULL, out->warm_start, sizeof out->warm_start, err);
    if (rc) return rc;
    if (a->type != MSGPACK_OBJECT_ARRAY || a->via.array.size != (uint32_t)out->cem.dim)
        return zmix_error_set(err, ZMIX_EFORMAT, "warm_alpha: not %d numbers", out->cem.dim);
    out->warm_mean = malloc((size_t)(out->cem.dim ? out->cem.dim : 1) * sizeof *out->warm_mean);
    if (!out->warm_mean) return zmix_error_set(err, ZMIX_ENOMEM, "warm_alpha: out of memory");
    for (int i = 0; i < out->cem.dim; i++) {
        const msgpack_object *x = &a->via.array.ptr[i];
        if (x->type != MSGPACK_OBJECT_FLOAT64 && x->type != MSGPACK_OBJECT_FLOAT32) {
            free(out->warm_mean);
            out->warm_mean = NULL;
            return zmix_error_set(err, ZMIX_EFORMAT, "warm_alpha[%d]: not a number", i);
        }
        out->warm_mean[i] = x->via.f64;
    }
    out->cem.init_mean = out->warm_mean;
    return 0;
}

int job_spec_restore(const uint8_t *settings, size_t settings_len, const zmix_examples *ex,
                     const char *task, int priority, int n_experts, int n_matrices,
                     const zmix_cem_settings *cem_defaults, job_spec *out, zmix_error *err)
{
    memset(out, 0, sizeof *out);
    snprintf(out->task, sizeof out->task, "%s", task);
    out->priority = priority;
    msgpack_unpacked msg;
    msgpack_unpacked_init(&msg);
    size_t off = 0;
    int rc;
    if (msgpack_unpack_next(&msg, (const char *)settings, settings_len, &off) !=
            MSGPACK_UNPACK_SUCCESS ||
        msg.data.type != MSGPACK_OBJECT_MAP) {
        rc = zmix_error_set(err, ZMIX_EFORMAT, "job settings: not a msgpack map");
    } else {
        /* The settings the job was accepted with, not today's limits (PROTOCOL.md §5): only
         * the engine's own check applies. A map without a method was stored before there was
         * a choice, when every search was the CEM: its job resumes as one, under the key it
         * was accepted with. */
        zmix_cem_settings stored_defaults = *cem_defaults;
        stored_defaults.method = ZMIX_CEM_METHOD_CEM;
        rc = parse_cem(&msg.data, NULL, n_experts, n_matrices, &stored_defaults, out, err);
        if (rc == 0) rc = restore_warm_start(&msg.data, out, err);
        if (rc == 0) rc = zmix_cem_settings_check(&out->cem, err);
        if (rc) zmix_error_prefix(err, "job settings");
    }
    msgpack_unpacked_destroy(&msg);
    if (rc) {
        job_spec_free(out);
        return rc;
    }
    rc = zmix_examples_copy(ex->items, ex->n, &out->examples, err);
    if (rc) {
        job_spec_free(out);
        return zmix_error_prefix(err, "job examples");
    }
    return 0;
}
