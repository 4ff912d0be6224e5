/* The params of generate (gen_request.h). */
#include "wire/gen_request.h"

#include <stdlib.h>
#include <string.h>

#include "wire/job_spec.h"
#include "wire/rpc.h"

const char *const gen_request_keys[] = {"task",  "prompt", "max_tokens", "temperature",
                                        "top_p", "seed",   "stop",       NULL};

/* One id of an array field: an integer within int32 (ZMIX_EINVAL / ZMIX_ERANGE otherwise). */
static int id_at(const msgpack_object *arr, uint32_t i, const char *field, int32_t *out,
                 zmix_error *err)
{
    const msgpack_object *t = &arr->via.array.ptr[i];
    if (t->type == MSGPACK_OBJECT_POSITIVE_INTEGER && t->via.u64 <= INT32_MAX) {
        *out = (int32_t)t->via.u64;
        return 0;
    }
    if (t->type == MSGPACK_OBJECT_NEGATIVE_INTEGER && t->via.i64 >= INT32_MIN) {
        *out = (int32_t)t->via.i64;
        return 0;
    }
    if (t->type == MSGPACK_OBJECT_POSITIVE_INTEGER || t->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        return zmix_error_set(err, ZMIX_ERANGE, "%s[%u] is not a 32-bit integer", field, i);
    return zmix_error_set(err, ZMIX_EINVAL, "%s[%u] must be an integer, got %s", field, i,
                          rpc_type_name(t));
}

static int parse_prompt(const msgpack_object *v, const job_limits *lim, gen_request *out,
                        zmix_error *err)
{
    if (!v || v->type == MSGPACK_OBJECT_NIL)
        return zmix_error_set(err, ZMIX_EINVAL, "missing field 'prompt'");
    if (v->type == MSGPACK_OBJECT_STR) {
        if (!lim->tokenizer)
            return zmix_error_set(err, ZMIX_EINVAL,
                                  "field 'prompt' is text but the model has no tokenizer: send "
                                  "token ids");
        size_t bound = zmix_tokenizer_max_tokens(lim->tokenizer, v->via.str.size, ZMIX_TOK_BOS);
        if (!(out->prompt = malloc((bound ? bound : 1) * sizeof *out->prompt)))
            return zmix_error_set(err, ZMIX_ENOMEM, "out of memory for the prompt");
        int n = zmix_tokenizer_encode(lim->tokenizer, v->via.str.ptr, v->via.str.size, ZMIX_TOK_BOS,
                                      out->prompt, err);
        if (n < 0) return zmix_error_prefix(err, "field 'prompt'");
        out->n_prompt = n;
        out->prompt_was_text = 1;
    } else if (v->type == MSGPACK_OBJECT_ARRAY) {
        uint32_t n = v->via.array.size;
        if (n > (uint32_t)lim->context)
            return zmix_error_set(err, ZMIX_ELIMIT,
                                  "field 'prompt': %u tokens, past the context length %d", n,
                                  lim->context);
        if (!(out->prompt = malloc((n ? n : 1) * sizeof *out->prompt)))
            return zmix_error_set(err, ZMIX_ENOMEM, "out of memory for the prompt");
        for (uint32_t i = 0; i < n; i++) {
            int rc = id_at(v, i, "prompt", &out->prompt[i], err);
            if (rc) return rc;
        }
        out->n_prompt = (int)n;
    } else {
        return zmix_error_set(err, ZMIX_EINVAL,
                              "field 'prompt' must be an array of token ids%s, got %s",
                              lim->tokenizer ? " or a string" : "", rpc_type_name(v));
    }
    if (out->n_prompt == 0) return zmix_error_set(err, ZMIX_EINVAL, "field 'prompt' is empty");
    for (int i = 0; i < out->n_prompt; i++)
        if (out->prompt[i] < 0 || out->prompt[i] >= lim->vocab_size)
            return zmix_error_set(err, ZMIX_ERANGE,
                                  "prompt[%d]: token id %d outside the vocabulary [0, %d)", i,
                                  (int)out->prompt[i], lim->vocab_size);
    return 0;
}

static int parse_stop(const msgpack_object *v, const job_limits *lim, gen_request *out,
                      zmix_error *err)
{
    if (!v || v->type == MSGPACK_OBJECT_NIL) return 0;
    if (v->type != MSGPACK_OBJECT_ARRAY)
        return zmix_error_set(err, ZMIX_EINVAL,
                              "field 'stop' must be an array of token ids, got %s",
                              rpc_type_name(v));
    if (v->via.array.size > ZMIX_GEN_MAX_STOP)
        return zmix_error_set(err, ZMIX_ERANGE, "field 'stop': %u ids, at most %d",
                              v->via.array.size, ZMIX_GEN_MAX_STOP);
    for (uint32_t i = 0; i < v->via.array.size; i++) {
        int rc = id_at(v, i, "stop", &out->stop[i], err);
        if (rc) return rc;
        if (out->stop[i] < 0 || out->stop[i] >= lim->vocab_size)
            return zmix_error_set(err, ZMIX_ERANGE,
                                  "stop[%u]: token id %d outside the vocabulary [0, %d)", i,
                                  (int)out->stop[i], lim->vocab_size);
    }
    out->opts.n_stop = (int)v->via.array.size;
    return 0;
}

int gen_request_parse(const msgpack_object *params, const job_limits *lim, gen_request *out,
                      zmix_error *err)
{
    memset(out, 0, sizeof *out);
    zmix_gen_opts_default(&out->opts);
    out->opts.stop = out->stop;
    int rc;
    const msgpack_object *task = rpc_map_get(params, "task");
    if (task && task->type != MSGPACK_OBJECT_NIL) {
        if ((rc = job_task_param(params, out->task, err))) return rc;
        out->has_task = 1;
    }
    int64_t max_tokens;
    double temperature, top_p;
    if ((rc = rpc_get_int(params, "max_tokens", 0, 1, GEN_MAX_TOKENS, 16, &max_tokens, err)) ||
        (rc = rpc_get_double(params, "temperature", 0, 0.0, 100.0, 0.0, &temperature, err)) ||
        (rc = rpc_get_double(params, "top_p", 0, 0.0, 1.0, 1.0, &top_p, err)) ||
        (rc = rpc_get_uint64(params, "seed", 0, &out->opts.seed, err)))
        return rc;
    if (top_p == 0.0)
        return zmix_error_set(err, ZMIX_ERANGE, "field 'top_p' must be in (0, 1], got 0");
    out->opts.max_tokens = (int)max_tokens;
    out->opts.temperature = temperature;
    out->opts.top_p = top_p;
    if ((rc = parse_prompt(rpc_map_get(params, "prompt"), lim, out, err)) ||
        (rc = parse_stop(rpc_map_get(params, "stop"), lim, out, err)))
        return rc;
    if ((long)out->n_prompt + out->opts.max_tokens - 1 > lim->context)
        return zmix_error_set(err, ZMIX_ELIMIT,
                              "%d prompt tokens + max_tokens %d - 1 exceed the context length %d",
                              out->n_prompt, out->opts.max_tokens, lim->context);
    return 0;
}

void gen_request_free(gen_request *r)
{
    free(r->prompt);
    r->prompt = NULL;
}
