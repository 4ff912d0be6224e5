/* The generate method (proto/PROTOCOL.md, "generate"): pack the request, decode the tokens. */
#include <stdlib.h>
#include <string.h>

#include "client_internal.h"

/* A generation may take a while on a large model, scheduled below adaptation work: the call's
 * deadline grows with the tokens asked for. */
#define GEN_MS_PER_TOKEN 200

void zmix_client_generation_free(zmix_client_generation *g)
{
    if (!g) return;
    free(g->tokens);
    free(g->text);
    memset(g, 0, sizeof *g);
}

static void pack_ids(msgpack_packer *pk, const char *key, const int32_t *ids, int n)
{
    zcli_pack_str(pk, key);
    msgpack_pack_array(pk, (size_t)n);
    for (int i = 0; i < n; i++) msgpack_pack_int32(pk, ids[i]);
}

static int decode_generation(const msgpack_object *res, zmix_client_generation *out,
                             zmix_error *err)
{
    const msgpack_object *tokens = zcli_mp_get(res, "tokens"), *text = zcli_mp_get(res, "text");
    if (!tokens || tokens->type != MSGPACK_OBJECT_ARRAY)
        return zmix_error_set(err, ZMIX_EFORMAT, "generate: the result has no token array");
    uint32_t n = tokens->via.array.size;
    if (!(out->tokens = malloc((n ? n : 1) * sizeof *out->tokens)))
        return zmix_error_set(err, ZMIX_ENOMEM, "generate: out of memory");
    for (uint32_t i = 0; i < n; i++) {
        const msgpack_object *t = &tokens->via.array.ptr[i];
        if (t->type != MSGPACK_OBJECT_POSITIVE_INTEGER || t->via.u64 > INT32_MAX)
            return zmix_error_set(err, ZMIX_EFORMAT, "generate: tokens[%u] is not a token id", i);
        out->tokens[i] = (int32_t)t->via.u64;
    }
    out->n_tokens = (int)n;
    if (text && text->type == MSGPACK_OBJECT_STR) {
        if (!(out->text = malloc(text->via.str.size + 1)))
            return zmix_error_set(err, ZMIX_ENOMEM, "generate: out of memory");
        memcpy(out->text, text->via.str.ptr, text->via.str.size);
        out->text[text->via.str.size] = '\0';
    }
    int64_t stop = -1;
    int rc = zcli_mp_str(res, "finish_reason", out->finish_reason, sizeof out->finish_reason, err);
    if (!rc) rc = zcli_mp_int(res, "stop_token", &stop, err);
    if (!rc) rc = zcli_mp_int32(res, "prompt_tokens", &out->prompt_tokens, err);
    out->stop_token = (int32_t)stop;
    return rc;
}

int zmix_client_generate(zmix_client *c, const zmix_client_gen_req *req,
                         zmix_client_generation *out, zmix_error *err)
{
    memset(out, 0, sizeof *out);
    out->stop_token = -1;
    if (!req->prompt == !req->text)
        return zmix_error_set(err, ZMIX_EINVAL, "generate: give the prompt as ids or as text");
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    int n_keys = 2 + (req->task != NULL) + (req->max_tokens > 0) + (req->temperature > 0) +
                 (req->top_p > 0) + (req->n_stop > 0);
    msgpack_pack_map(&pk, (size_t)n_keys);
    if (req->task) {
        zcli_pack_str(&pk, "task");
        zcli_pack_str(&pk, req->task);
    }
    if (req->prompt) {
        pack_ids(&pk, "prompt", req->prompt, req->n_prompt);
    } else {
        zcli_pack_str(&pk, "prompt");
        zcli_pack_str(&pk, req->text);
    }
    if (req->max_tokens > 0) {
        zcli_pack_str(&pk, "max_tokens");
        msgpack_pack_int(&pk, req->max_tokens);
    }
    if (req->temperature > 0) {
        zcli_pack_str(&pk, "temperature");
        msgpack_pack_double(&pk, req->temperature);
    }
    if (req->top_p > 0) {
        zcli_pack_str(&pk, "top_p");
        msgpack_pack_double(&pk, req->top_p);
    }
    zcli_pack_str(&pk, "seed");
    msgpack_pack_uint64(&pk, req->seed);
    if (req->n_stop > 0) pack_ids(&pk, "stop", req->stop, req->n_stop);
    const msgpack_object *res = NULL;
    int max_tokens = req->max_tokens > 0 ? req->max_tokens : 16;
    int rc = zcli_call(c, "generate", sb.data, sb.size, max_tokens * GEN_MS_PER_TOKEN, &res, err);
    msgpack_sbuffer_destroy(&sb);
    if (!rc && res->type != MSGPACK_OBJECT_MAP)
        rc = zmix_error_set(err, ZMIX_EFORMAT, "generate: the result is not a map");
    if (!rc) rc = decode_generation(res, out, err);
    if (rc) zmix_client_generation_free(out);
    if (rc) out->stop_token = -1;
    return rc;
}
