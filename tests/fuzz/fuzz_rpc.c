/*
 * The daemon's input path, bytes to parsed job: the frame scanner (one-shot, and resumable
 * fed in two pieces, which must agree), msgpack-c on the frames the scanner accepts (it must
 * accept exactly those), the request decoder, the parameter getters, and for "submit" the
 * job spec parser with its memory estimate, cache key and settings round trip.
 */
#include <msgpack.h>
#include <string.h>

#include "fuzz_common.h"
#include "wire/job_spec.h"
#include "wire/rpc.h"

#define FRAME_LIMIT 65536

static void fuzz_params(const rpc_request *req)
{
    zmix_error err = {0};
    static const char *const allowed[] = {"task", "id", "timeout_ms", "recompute", NULL};
    (void)rpc_map_check_keys(&req->params, allowed, "params", &err);
    int64_t i;
    uint64_t u;
    double d;
    int b;
    char s[64];
    const msgpack_object *m;
    (void)rpc_get_int(&req->params, "id", 0, 0, INT64_MAX, 0, &i, &err);
    (void)rpc_get_uint64(&req->params, "id", 0, &u, &err);
    (void)rpc_get_double(&req->params, "timeout_ms", 0, 0, 1e9, 0, &d, &err);
    (void)rpc_get_bool(&req->params, "recompute", 0, &b, &err);
    (void)rpc_get_str(&req->params, "task", 0, "", s, sizeof s, &err);
    (void)rpc_get_map(&req->params, "cem", &m, &err);
}

static void fuzz_submit(const rpc_request *req)
{
    job_limits lim;
    job_limits_default(&lim);
    lim.vocab_size = 512; /* stories260K */
    lim.context = 512;
    lim.n_experts = 3;
    lim.n_matrices = 15;
    zmix_cem_settings d;
    zmix_cem_settings_default(&d);
    d.n_experts = 3;
    job_spec spec;
    zmix_error err = {0};
    if (job_spec_parse(&req->params, &lim, &d, &spec, &err) != 0) {
        FUZZ_CHECK(err.code < 0 && err.msg[0]);
        return;
    }
    FUZZ_CHECK(spec.examples.n >= 1 && spec.examples.n <= lim.max_examples);
    /* Every token (prompts, targets, choices; the block also holds the choices' lengths) is
     * in the vocabulary, and the tokens together within the limit. */
    long n_tok = 0;
    for (int i = 0; i < spec.examples.n; i++) {
        const zmix_example *e = &spec.examples.items[i];
        const int32_t *parts[3] = {e->prompt, e->target, e->choices};
        size_t lens[3] = {(size_t)e->n_prompt, (size_t)e->n_target, 0};
        for (int c = 0; c < e->n_choices; c++) lens[2] += (size_t)e->choice_len[c];
        for (int p = 0; p < 3; p++)
            for (size_t t = 0; t < lens[p]; t++)
                FUZZ_CHECK(parts[p][t] >= 0 && parts[p][t] < lim.vocab_size);
        n_tok += (long)(lens[0] + lens[1] + lens[2]);
    }
    FUZZ_CHECK(n_tok <= lim.max_tokens);
    FUZZ_CHECK(task_name_check(spec.task, &err) == 0);
    (void)job_spec_memory(&spec);
    char key[65], key2[65];
    job_spec_key(&spec, "model", "experts", key);

    /* What the job store keeps must rebuild the same job (same cache key) after a restart. */
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    job_spec_pack_settings(&spec, &pk);
    job_spec back;
    int rc = job_spec_restore((const uint8_t *)sb.data, sb.size, &spec.examples, spec.task,
                              spec.priority, lim.n_experts, lim.n_matrices, &d, &back, &err);
    if (rc != 0) fprintf(stderr, "restore failed: %s\n", err.msg);
    FUZZ_CHECK(rc == 0);
    job_spec_key(&back, "model", "experts", key2);
    FUZZ_CHECK(strcmp(key, key2) == 0);
    job_spec_free(&back);
    msgpack_sbuffer_destroy(&sb);
    job_spec_free(&spec);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t frame = 0;
    zmix_error err = {0};
    int st = rpc_frame_scan(data, size, FRAME_LIMIT, &frame, &err);

    /* Resumable scan over two pieces must reach the same verdict. */
    if (size > 1) {
        rpc_scanner sc;
        rpc_scanner_reset(&sc);
        size_t cut = (size_t)data[0] % size, frame2 = 0;
        zmix_error err2 = {0};
        int st2 = rpc_scanner_scan(&sc, data, cut, FRAME_LIMIT, &frame2, &err2);
        if (st2 == RPC_FRAME_NEED_MORE)
            st2 = rpc_scanner_scan(&sc, data, size, FRAME_LIMIT, &frame2, &err2);
        FUZZ_CHECK(st2 == st);
        if (st == RPC_FRAME_COMPLETE) FUZZ_CHECK(frame2 == frame);
    }
    if (st != RPC_FRAME_COMPLETE) {
        if (st != RPC_FRAME_NEED_MORE) FUZZ_CHECK(err.code < 0 && err.msg[0]);
        return 0;
    }
    FUZZ_CHECK(frame >= 1 && frame <= size && frame <= FRAME_LIMIT);

    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    int rc = msgpack_unpack_next(&u, (const char *)data, frame, &off);
    FUZZ_CHECK(rc == MSGPACK_UNPACK_SUCCESS && off == frame); /* the scanner never lies */
    rpc_request req;
    int msgid_known = 0;
    if (rpc_request_decode(&u.data, &req, &msgid_known, &err) == 0) {
        FUZZ_CHECK(req.params.type == MSGPACK_OBJECT_MAP);
        FUZZ_CHECK(memchr(req.method, '\0', sizeof req.method) != NULL);
        fuzz_params(&req);
        if (!strcmp(req.method, "submit")) fuzz_submit(&req);
    } else {
        FUZZ_CHECK(err.code < 0 && err.msg[0]);
    }
    msgpack_unpacked_destroy(&u);
    return 0;
}
