/*
 * The fleet's messages (see codec.h and proto/FLEET.md).
 */
#include "fleet/codec.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- Packing --------------------------------------------------------------------------- */

static void pack_str(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

static void pack_kv_str(msgpack_packer *pk, const char *k, const char *v)
{
    pack_str(pk, k);
    pack_str(pk, v);
}

static void pack_kv_int(msgpack_packer *pk, const char *k, int64_t v)
{
    pack_str(pk, k);
    msgpack_pack_int64(pk, v);
}

/* Rows as little-endian float32, whatever the host's order: the bytes are the contract. */
static int pack_rows(msgpack_packer *pk, const float *rows, size_t count)
{
    size_t bytes = count * 4;
    uint8_t *buf = malloc(bytes ? bytes : 1);
    if (!buf) return ZMIX_ENOMEM;
    for (size_t i = 0; i < count; i++) {
        uint32_t u;
        memcpy(&u, &rows[i], 4);
        buf[4 * i] = (uint8_t)u;
        buf[4 * i + 1] = (uint8_t)(u >> 8);
        buf[4 * i + 2] = (uint8_t)(u >> 16);
        buf[4 * i + 3] = (uint8_t)(u >> 24);
    }
    msgpack_pack_bin(pk, bytes);
    msgpack_pack_bin_body(pk, buf, bytes);
    free(buf);
    return 0;
}

int fleet_chunk_encode(const fleet_chunk *c, msgpack_sbuffer *sb)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    const seam_call *k = &c->call;
    msgpack_pack_map(&pk, 19);
    pack_kv_int(&pk, "v", FLEET_FORMAT);
    pack_kv_str(&pk, "id", c->id);
    pack_str(&pk, "job");
    msgpack_pack_uint64(&pk, c->job);
    pack_kv_str(&pk, "step_key", c->step_key);
    pack_kv_str(&pk, "results", c->results);
    pack_kv_str(&pk, "field", c->field);
    pack_kv_str(&pk, "done", c->done);
    pack_kv_str(&pk, "model_fingerprint", c->model_fingerprint);
    pack_kv_str(&pk, "experts_digest", c->experts_digest);
    pack_kv_str(&pk, "examples", c->examples);
    pack_kv_str(&pk, "kind", k->kind == SEAM_Z ? "z" : "alpha");
    pack_kv_int(&pk, "n", k->n);
    pack_kv_int(&pk, "dim", k->dim);
    pack_str(&pk, "rows");
    if (pack_rows(&pk, k->rows, (size_t)k->n * (size_t)k->dim) != 0) return ZMIX_ENOMEM;
    pack_kv_int(&pk, "per_layer", k->per_layer);
    pack_kv_int(&pk, "normalize", k->normalize);
    pack_kv_int(&pk, "rescale", k->rescale);
    pack_kv_str(&pk, "choice_norm", k->choice_norm == ZMIX_CHOICE_SUM ? "sum" : "per_token");
    pack_str(&pk, "detail");
    msgpack_pack_nil(&pk); /* reserved: per-example scores are not asked yet */
    return 0;
}

int fleet_result_encode(const char *id, const char *member, int rc, const char *error, int n,
                        const zmix_score *scores, double seconds, msgpack_sbuffer *sb)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, rc == 0 ? 6 : 5);
    pack_kv_int(&pk, "v", FLEET_FORMAT);
    pack_kv_str(&pk, "id", id);
    pack_kv_str(&pk, "member", member);
    pack_str(&pk, "ok");
    if (rc == 0) {
        msgpack_pack_true(&pk);
        pack_str(&pk, "seconds");
        msgpack_pack_double(&pk, seconds);
        pack_str(&pk, "scores");
        msgpack_pack_array(&pk, (size_t)n);
        for (int i = 0; i < n; i++) {
            msgpack_pack_map(&pk, 3);
            pack_str(&pk, "accuracy");
            msgpack_pack_double(&pk, scores[i].accuracy);
            pack_str(&pk, "loglik");
            msgpack_pack_double(&pk, scores[i].loglik);
            pack_str(&pk, "margin");
            msgpack_pack_double(&pk, scores[i].margin);
        }
    } else {
        msgpack_pack_false(&pk);
        pack_kv_str(&pk, "error", error && *error ? error : "failed");
    }
    return 0;
}

/* ---- Reading --------------------------------------------------------------------------- */

static const msgpack_object *map_get(const msgpack_object *o, const char *key)
{
    if (o->type != MSGPACK_OBJECT_MAP) return NULL;
    size_t n = strlen(key);
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object *k = &o->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == n &&
            !memcmp(k->via.str.ptr, key, n))
            return &o->via.map.ptr[i].val;
    }
    return NULL;
}

static int get_str(const msgpack_object *m, const char *key, char *out, size_t size,
                   zmix_error *err)
{
    const msgpack_object *v = map_get(m, key);
    if (!v || v->type != MSGPACK_OBJECT_STR)
        return zmix_error_set(err, ZMIX_EFORMAT, "'%s' missing or not a string", key);
    if (v->via.str.size >= size)
        return zmix_error_set(err, ZMIX_EFORMAT, "'%s' longer than %zu bytes", key, size - 1);
    memcpy(out, v->via.str.ptr, v->via.str.size);
    out[v->via.str.size] = '\0';
    return 0;
}

static int get_int(const msgpack_object *m, const char *key, int64_t lo, int64_t hi, int64_t *out,
                   zmix_error *err)
{
    const msgpack_object *v = map_get(m, key);
    int64_t x;
    if (v && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER && v->via.u64 <= (uint64_t)INT64_MAX)
        x = (int64_t)v->via.u64;
    else if (v && v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        x = v->via.i64;
    else if (v && v->type == MSGPACK_OBJECT_BOOLEAN)
        x = v->via.boolean;
    else
        return zmix_error_set(err, ZMIX_EFORMAT, "'%s' missing or not an integer", key);
    if (x < lo || x > hi)
        return zmix_error_set(err, ZMIX_EFORMAT, "'%s' is %lld, expected %lld..%lld", key,
                              (long long)x, (long long)lo, (long long)hi);
    *out = x;
    return 0;
}

static double get_double(const msgpack_object *o)
{
    switch (o->type) {
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: return o->via.f64;
    case MSGPACK_OBJECT_POSITIVE_INTEGER: return (double)o->via.u64;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return (double)o->via.i64;
    default: return NAN;
    }
}

static int check_version(const msgpack_object *m, zmix_error *err)
{
    int64_t v;
    if (get_int(m, "v", 0, INT32_MAX, &v, err)) return ZMIX_EFORMAT;
    if (v != FLEET_FORMAT)
        return zmix_error_set(err, ZMIX_EFORMAT, "format %lld, this build reads %d", (long long)v,
                              FLEET_FORMAT);
    return 0;
}

/* Chunks big enough to matter are far below this; a bigger one is a corrupt message. */
#define FLEET_MAX_FLOATS (256u << 20)

int fleet_chunk_decode(const char *data, size_t len, fleet_chunk *c, zmix_error *err)
{
    memset(c, 0, sizeof *c);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    int rc = 0;
    if (msgpack_unpack_next(&u, data, len, &off) != MSGPACK_UNPACK_SUCCESS ||
        u.data.type != MSGPACK_OBJECT_MAP) {
        rc = zmix_error_set(err, ZMIX_EFORMAT, "chunk: not a MessagePack map");
        goto out;
    }
    const msgpack_object *m = &u.data;
    char kind[16];
    int64_t n, dim, job, per_layer, normalize, rescale;
    /* Where the answer goes first: a chunk that cannot be read can still be answered with a
     * failure, instead of leaving its driver waiting. */
    if ((rc = get_str(m, "id", c->id, sizeof c->id, err)) ||
        (rc = get_str(m, "results", c->results, sizeof c->results, err)) ||
        (rc = get_str(m, "field", c->field, sizeof c->field, err)) ||
        (rc = get_str(m, "done", c->done, sizeof c->done, err)) || (rc = check_version(m, err)) ||
        (rc = get_int(m, "job", 0, INT64_MAX, &job, err)) ||
        (rc = get_str(m, "step_key", c->step_key, sizeof c->step_key, err)) ||
        (rc = get_str(m, "model_fingerprint", c->model_fingerprint, sizeof c->model_fingerprint,
                      err)) ||
        (rc = get_str(m, "experts_digest", c->experts_digest, sizeof c->experts_digest, err)) ||
        (rc = get_str(m, "examples", c->examples, sizeof c->examples, err)) ||
        (rc = get_str(m, "kind", kind, sizeof kind, err)) ||
        (rc = get_int(m, "n", 1, 1 << 20, &n, err)) ||
        (rc = get_int(m, "dim", 1, 1 << 30, &dim, err)) ||
        (rc = get_int(m, "per_layer", 0, 1, &per_layer, err)) ||
        (rc = get_int(m, "normalize", 0, 1, &normalize, err)) ||
        (rc = get_int(m, "rescale", 0, 1, &rescale, err)))
        goto out;
    c->job = (uint64_t)job;
    seam_call *k = &c->call;
    if (!strcmp(kind, "alpha"))
        k->kind = SEAM_ALPHA;
    else if (!strcmp(kind, "z"))
        k->kind = SEAM_Z;
    else {
        rc = zmix_error_set(err, ZMIX_EFORMAT, "'kind' is '%s', expected alpha or z", kind);
        goto out;
    }
    char norm[16];
    if ((rc = get_str(m, "choice_norm", norm, sizeof norm, err))) goto out;
    if (!strcmp(norm, "per_token"))
        k->choice_norm = ZMIX_CHOICE_PER_TOKEN;
    else if (!strcmp(norm, "sum"))
        k->choice_norm = ZMIX_CHOICE_SUM;
    else {
        rc = zmix_error_set(err, ZMIX_EFORMAT, "'choice_norm' is '%s', expected per_token or sum",
                            norm);
        goto out;
    }
    k->n = (int)n;
    k->dim = (int)dim;
    k->per_layer = (int)per_layer;
    k->normalize = (int)normalize;
    k->rescale = (int)rescale;
    uint64_t count = (uint64_t)n * (uint64_t)dim;
    const msgpack_object *rows = map_get(m, "rows");
    if (count > FLEET_MAX_FLOATS || !rows || rows->type != MSGPACK_OBJECT_BIN ||
        rows->via.bin.size != count * 4) {
        rc = zmix_error_set(err, ZMIX_EFORMAT, "'rows' is not n·dim = %llu float32 values",
                            (unsigned long long)count);
        goto out;
    }
    k->rows = malloc((size_t)count * sizeof *k->rows);
    if (!k->rows) {
        rc = zmix_error_set(err, ZMIX_ENOMEM, "chunk: out of memory for %llu floats",
                            (unsigned long long)count);
        goto out;
    }
    const uint8_t *b = (const uint8_t *)rows->via.bin.ptr;
    for (uint64_t i = 0; i < count; i++) {
        uint32_t x = (uint32_t)b[4 * i] | (uint32_t)b[4 * i + 1] << 8 |
                     (uint32_t)b[4 * i + 2] << 16 | (uint32_t)b[4 * i + 3] << 24;
        memcpy(&k->rows[i], &x, 4);
    }
out:
    msgpack_unpacked_destroy(&u);
    if (rc) {
        zmix_error_prefix(err, "chunk");
        seam_call_free(&c->call);
    }
    return rc;
}

int fleet_result_decode(const char *data, size_t len, seam_call *call, char *by, size_t by_size,
                        zmix_error *err)
{
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    int rc = 0;
    if (by_size) by[0] = '\0';
    if (msgpack_unpack_next(&u, data, len, &off) != MSGPACK_UNPACK_SUCCESS ||
        u.data.type != MSGPACK_OBJECT_MAP) {
        rc = zmix_error_set(err, ZMIX_EFORMAT, "result: not a MessagePack map");
        goto out;
    }
    const msgpack_object *m = &u.data;
    if ((rc = check_version(m, err))) goto out;
    get_str(m, "member", by, by_size, err); /* optional: only for messages */
    const msgpack_object *ok = map_get(m, "ok");
    if (!ok || ok->type != MSGPACK_OBJECT_BOOLEAN) {
        rc = zmix_error_set(err, ZMIX_EFORMAT, "result: 'ok' missing or not a boolean");
        goto out;
    }
    call->have_result = 1;
    if (!ok->via.boolean) {
        const msgpack_object *e = map_get(m, "error");
        call->result_rc = ZMIX_EIO;
        if (e && e->type == MSGPACK_OBJECT_STR)
            snprintf(call->result_error, sizeof call->result_error, "%.*s",
                     (int)(e->via.str.size > 200 ? 200 : e->via.str.size), e->via.str.ptr);
        else
            snprintf(call->result_error, sizeof call->result_error, "failed, without a reason");
        goto out;
    }
    const msgpack_object *s = map_get(m, "scores");
    if (!s || s->type != MSGPACK_OBJECT_ARRAY || (int)s->via.array.size != call->n) {
        call->result_rc = ZMIX_EFORMAT;
        snprintf(call->result_error, sizeof call->result_error,
                 "the result does not hold %d scores", call->n);
        goto out;
    }
    free(call->scores);
    call->scores = malloc((size_t)call->n * sizeof *call->scores);
    if (!call->scores) {
        call->have_result = 0;
        rc = zmix_error_set(err, ZMIX_ENOMEM, "result: out of memory");
        goto out;
    }
    for (int i = 0; i < call->n; i++) {
        const msgpack_object *a = map_get(&s->via.array.ptr[i], "accuracy");
        const msgpack_object *l = map_get(&s->via.array.ptr[i], "loglik");
        if (!a || !l) {
            call->result_rc = ZMIX_EFORMAT;
            snprintf(call->result_error, sizeof call->result_error,
                     "scores[%d] lacks accuracy or loglik", i);
            goto out;
        }
        const msgpack_object *mg = map_get(&s->via.array.ptr[i], "margin");
        call->scores[i].accuracy = get_double(a);
        call->scores[i].loglik = get_double(l);
        /* Only a per-layer search ranks by the margin; an evaluator that leaves it out
         * scores every other search the same. */
        call->scores[i].margin = mg ? get_double(mg) : 0.0;
    }
    call->result_rc = 0;
out:
    msgpack_unpacked_destroy(&u);
    return rc;
}

/* ---- Example sets ---------------------------------------------------------------------- */

static void pack_ids(msgpack_packer *pk, const int32_t *ids, int n)
{
    msgpack_pack_array(pk, (size_t)n);
    for (int i = 0; i < n; i++) msgpack_pack_int32(pk, ids[i]);
}

int fleet_examples_encode(const zmix_examples *ex, msgpack_sbuffer *sb)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    pack_kv_int(&pk, "v", FLEET_FORMAT);
    pack_str(&pk, "examples");
    msgpack_pack_array(&pk, (size_t)ex->n);
    for (int i = 0; i < ex->n; i++) {
        const zmix_example *e = &ex->items[i];
        if (e->n_choices > 0) {
            msgpack_pack_map(&pk, 3);
            pack_str(&pk, "prompt");
            pack_ids(&pk, e->prompt, e->n_prompt);
            pack_str(&pk, "choices");
            msgpack_pack_array(&pk, (size_t)e->n_choices);
            const int32_t *c = e->choices;
            for (int j = 0; j < e->n_choices; j++) {
                pack_ids(&pk, c, e->choice_len[j]);
                c += e->choice_len[j];
            }
            pack_kv_int(&pk, "answer", e->answer);
        } else {
            msgpack_pack_map(&pk, 2);
            pack_str(&pk, "prompt");
            pack_ids(&pk, e->prompt, e->n_prompt);
            pack_str(&pk, "target");
            pack_ids(&pk, e->target, e->n_target);
        }
    }
    return 0;
}

/* Token ids of an array into dst (room checked by the caller's count). */
static int read_ids(const msgpack_object *a, int32_t *dst, int *n)
{
    if (!a || a->type != MSGPACK_OBJECT_ARRAY || a->via.array.size == 0) return -1;
    for (uint32_t i = 0; i < a->via.array.size; i++) {
        const msgpack_object *t = &a->via.array.ptr[i];
        if (t->type != MSGPACK_OBJECT_POSITIVE_INTEGER || t->via.u64 > INT32_MAX) return -1;
        dst[i] = (int32_t)t->via.u64;
    }
    *n = (int)a->via.array.size;
    return 0;
}

/* Every integer in o, at any depth: an upper bound on the tokens an example set needs. */
static size_t count_ints(const msgpack_object *o)
{
    size_t n = 0;
    if (o->type == MSGPACK_OBJECT_ARRAY) /* its size too: a list of choices needs its lengths */
        for (uint32_t i = 0; i < o->via.array.size; i++) n += count_ints(&o->via.array.ptr[i]) + 1;
    else if (o->type == MSGPACK_OBJECT_MAP)
        for (uint32_t i = 0; i < o->via.map.size; i++) n += count_ints(&o->via.map.ptr[i].val) + 1;
    else
        n = 1;
    return n;
}

int fleet_examples_decode(const char *data, size_t len, zmix_examples *out, zmix_error *err)
{
    memset(out, 0, sizeof *out);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    int rc = 0;
    int32_t *tok = NULL;
    zmix_example *items = NULL;
    if (msgpack_unpack_next(&u, data, len, &off) != MSGPACK_UNPACK_SUCCESS ||
        u.data.type != MSGPACK_OBJECT_MAP) {
        rc = zmix_error_set(err, ZMIX_EFORMAT, "examples: not a MessagePack map");
        goto out;
    }
    if ((rc = check_version(&u.data, err))) goto out;
    const msgpack_object *a = map_get(&u.data, "examples");
    if (!a || a->type != MSGPACK_OBJECT_ARRAY || a->via.array.size == 0) {
        rc = zmix_error_set(err, ZMIX_EFORMAT, "examples: 'examples' missing or empty");
        goto out;
    }
    int n = (int)a->via.array.size;
    size_t room = count_ints(a) + 1;
    tok = malloc(room * sizeof *tok);
    items = calloc((size_t)n, sizeof *items);
    if (!tok || !items) {
        rc = zmix_error_set(err, ZMIX_ENOMEM, "examples: out of memory");
        goto out;
    }
    size_t used = 0;
    for (int i = 0; i < n; i++) {
        const msgpack_object *e = &a->via.array.ptr[i];
        zmix_example *x = &items[i];
        x->prompt = tok + used;
        if (read_ids(map_get(e, "prompt"), tok + used, &x->n_prompt) != 0) {
            rc = zmix_error_set(err, ZMIX_EFORMAT, "examples[%d].prompt: not token ids", i);
            goto out;
        }
        used += (size_t)x->n_prompt;
        const msgpack_object *ch = map_get(e, "choices");
        if (!ch) {
            x->target = tok + used;
            if (read_ids(map_get(e, "target"), tok + used, &x->n_target) != 0) {
                rc = zmix_error_set(err, ZMIX_EFORMAT, "examples[%d].target: not token ids", i);
                goto out;
            }
            used += (size_t)x->n_target;
            continue;
        }
        if (ch->type != MSGPACK_OBJECT_ARRAY || ch->via.array.size < 2 ||
            ch->via.array.size > ZMIX_MAX_CHOICES) {
            rc = zmix_error_set(err, ZMIX_EFORMAT, "examples[%d].choices: 2..%d lists expected", i,
                                ZMIX_MAX_CHOICES);
            goto out;
        }
        x->n_choices = (int)ch->via.array.size;
        int32_t *lens = tok + used;
        used += (size_t)x->n_choices;
        x->choice_len = lens;
        x->choices = tok + used;
        for (int j = 0; j < x->n_choices; j++) {
            int cn = 0;
            if (read_ids(&ch->via.array.ptr[j], tok + used, &cn) != 0) {
                rc = zmix_error_set(err, ZMIX_EFORMAT, "examples[%d].choices[%d]: not token ids", i,
                                    j);
                goto out;
            }
            lens[j] = cn;
            used += (size_t)cn;
        }
        int64_t answer;
        if ((rc = get_int(e, "answer", 0, x->n_choices - 1, &answer, err))) {
            zmix_error_prefix(err, "examples[%d]", i);
            goto out;
        }
        x->answer = (int)answer;
    }
    rc = zmix_examples_copy(items, n, out, err);
out:
    free(tok);
    free(items);
    msgpack_unpacked_destroy(&u);
    return rc;
}
