/* MessagePack-RPC framing and decoding (src/server/rpc.c): the frame scanner agrees with
 * msgpack-c on every valid message and every prefix of it, and rejects hostile size fields
 * before anything is allocated; requests decode with errors that name the problem. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "wire/job_spec.h"
#include "wire/rpc.h"
#include "util/pcg.h"

#define LIMIT     (1u << 20)
#define BIG_LIMIT (1u << 28)

static int scan(const void *buf, size_t len, size_t limit, size_t *frame_len)
{
    zmix_error err = {0};
    return rpc_frame_scan(buf, len, limit, frame_len, &err);
}

/* Packs a random object of every msgpack type, nested up to depth levels. */
static void pack_random(msgpack_packer *pk, pcg32 *rng, int depth)
{
    uint32_t kind = pcg32_bounded(rng, depth > 0 ? 14 : 12);
    switch (kind) {
    case 0: msgpack_pack_nil(pk); break;
    case 1: msgpack_pack_true(pk); break;
    case 2: msgpack_pack_int64(pk, (int64_t)pcg32_next(rng) - (1LL << 31)); break;
    case 3: msgpack_pack_uint64(pk, (uint64_t)pcg32_next(rng) << 32 | pcg32_next(rng)); break;
    case 4: msgpack_pack_uint32(pk, pcg32_bounded(rng, 200)); break;
    case 5: msgpack_pack_float(pk, 1.5f); break;
    case 6: msgpack_pack_double(pk, -2.25); break;
    case 7:
    case 8: {
        size_t n = pcg32_bounded(rng, 2) ? pcg32_bounded(rng, 40) : pcg32_bounded(rng, 70000);
        char *s = calloc(n + 1, 1);
        memset(s, 'x', n);
        msgpack_pack_str(pk, n);
        msgpack_pack_str_body(pk, s, n);
        free(s);
        break;
    }
    case 9: {
        size_t n = pcg32_bounded(rng, 300);
        char *s = calloc(n + 1, 1);
        msgpack_pack_bin(pk, n);
        msgpack_pack_bin_body(pk, s, n);
        free(s);
        break;
    }
    case 10: {
        size_t n = pcg32_bounded(rng, 20);
        char s[20] = {0};
        msgpack_pack_ext(pk, n, 5);
        msgpack_pack_ext_body(pk, s, n);
        break;
    }
    case 11: msgpack_pack_int8(pk, -3); break;
    case 12: {
        uint32_t n = pcg32_bounded(rng, 2) ? pcg32_bounded(rng, 5) : pcg32_bounded(rng, 40);
        msgpack_pack_array(pk, n);
        for (uint32_t i = 0; i < n; i++) pack_random(pk, rng, depth - 1);
        break;
    }
    default: {
        uint32_t n = pcg32_bounded(rng, 20);
        msgpack_pack_map(pk, n);
        for (uint32_t i = 0; i < 2 * n; i++) pack_random(pk, rng, depth - 1);
        break;
    }
    }
}

static void test_scan_agrees_with_msgpack(void **unused)
{
    pcg32 rng;
    pcg32_seed(&rng, 42, 54);
    for (int round = 0; round < 200; round++) {
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        pack_random(&pk, &rng, 4);
        size_t first = sb.size;
        pack_random(&pk, &rng, 2); /* a second message right behind: must not be included */
        size_t frame = 0;
        assert_int_equal(scan(sb.data, sb.size, BIG_LIMIT, &frame), RPC_FRAME_COMPLETE);
        assert_int_equal(frame, first);
        /* msgpack-c reads exactly the same length. */
        size_t off = 0;
        msgpack_unpacked u;
        msgpack_unpacked_init(&u);
        assert_int_equal(msgpack_unpack_next(&u, sb.data, sb.size, &off), MSGPACK_UNPACK_SUCCESS);
        assert_int_equal(off, first);
        msgpack_unpacked_destroy(&u);
        /* Every strict prefix is incomplete (checking a sample of cut points keeps it fast). */
        for (size_t cut = 0; cut < first; cut += 1 + first / 64)
            assert_int_equal(scan(sb.data, cut, BIG_LIMIT, &frame), RPC_FRAME_NEED_MORE);
        assert_int_equal(scan(sb.data, first - 1, BIG_LIMIT, &frame), RPC_FRAME_NEED_MORE);
        /* Fed in pieces, the resumable scanner gives the same answer. */
        rpc_scanner sc;
        rpc_scanner_reset(&sc);
        zmix_error err = {0};
        size_t step = 1 + pcg32_bounded(&rng, 4096), have = 0;
        int st = RPC_FRAME_NEED_MORE;
        while (st == RPC_FRAME_NEED_MORE) {
            have = have + step < sb.size ? have + step : sb.size;
            st = rpc_scanner_scan(&sc, (const uint8_t *)sb.data, have, BIG_LIMIT, &frame, &err);
            if (have == sb.size) break;
        }
        assert_int_equal(st, RPC_FRAME_COMPLETE);
        assert_int_equal(frame, first);
        assert_int_equal(sc.pos, 0); /* reset for the next message */
        /* With the limit one byte short, the same message is refused. */
        if (first > 1)
            assert_int_equal(scan(sb.data, sb.size, first - 1, &frame), RPC_FRAME_TOO_LARGE);
        msgpack_sbuffer_destroy(&sb);
    }
}

static void test_scan_rejects_hostile_sizes_early(void **unused)
{
    size_t frame;
    zmix_error err = {0};
    /* array32 claiming 4 billion elements: 5 bytes, refused before any element arrives. */
    const uint8_t huge_array[] = {0xdd, 0xff, 0xff, 0xff, 0xff};
    assert_int_equal(rpc_frame_scan(huge_array, sizeof huge_array, LIMIT, &frame, &err),
                     RPC_FRAME_TOO_LARGE);
    assert_int_equal(err.code, ZMIX_ELIMIT);
    assert_non_null(strstr(err.msg, "frame limit"));
    const uint8_t huge_map[] = {0x91, 0xdf, 0x10, 0x00, 0x00, 0x00};
    assert_int_equal(scan(huge_map, sizeof huge_map, LIMIT, &frame), RPC_FRAME_TOO_LARGE);
    const uint8_t huge_str[] = {0xdb, 0x7f, 0xff, 0xff, 0xff, 'a'};
    assert_int_equal(scan(huge_str, sizeof huge_str, LIMIT, &frame), RPC_FRAME_TOO_LARGE);
    const uint8_t huge_bin[] = {0xc6, 0x00, 0x20, 0x00, 0x00};
    assert_int_equal(scan(huge_bin, sizeof huge_bin, LIMIT, &frame), RPC_FRAME_TOO_LARGE);
    const uint8_t huge_ext[] = {0xc9, 0x00, 0x20, 0x00, 0x00, 0x01};
    assert_int_equal(scan(huge_ext, sizeof huge_ext, LIMIT, &frame), RPC_FRAME_TOO_LARGE);
    /* A header cut before its length field is complete: need more, not a guess. */
    assert_int_equal(scan(huge_array, 3, LIMIT, &frame), RPC_FRAME_NEED_MORE);
    /* 0xc1 is never used by msgpack. */
    const uint8_t bad[] = {0x93, 0x00, 0xc1, 0x00};
    assert_int_equal(rpc_frame_scan(bad, sizeof bad, LIMIT, &frame, &err), RPC_FRAME_MALFORMED);
    assert_int_equal(err.code, ZMIX_EFORMAT);
    assert_non_null(strstr(err.msg, "offset 2"));
    /* Nesting deeper than RPC_MAX_DEPTH. */
    uint8_t deep[RPC_MAX_DEPTH + 2];
    memset(deep, 0x91, sizeof deep);
    deep[sizeof deep - 1] = 0x00;
    assert_int_equal(scan(deep, sizeof deep, LIMIT, &frame), RPC_FRAME_MALFORMED);
    uint8_t ok_deep[RPC_MAX_DEPTH + 1];
    memset(ok_deep, 0x91, sizeof ok_deep);
    ok_deep[sizeof ok_deep - 1] = 0x00;
    assert_int_equal(scan(ok_deep, sizeof ok_deep, LIMIT, &frame), RPC_FRAME_COMPLETE);
    assert_int_equal(frame, sizeof ok_deep);
    /* Many small elements past the limit while still arriving. */
    uint8_t many[64];
    many[0] = 0xdc;
    many[1] = 0x00;
    many[2] = 0x3c; /* 60 elements, one byte each, 63 bytes in total */
    memset(many + 3, 0x01, sizeof many - 3);
    assert_int_equal(scan(many, sizeof many, 63, &frame), RPC_FRAME_COMPLETE);
    assert_int_equal(scan(many, 40, 62, &frame), RPC_FRAME_TOO_LARGE);
}

/* Unpacks bytes built by a packer into obj (zone kept in *u). */
static msgpack_object unpack(msgpack_sbuffer *sb, msgpack_unpacked *u)
{
    size_t off = 0;
    msgpack_unpacked_init(u);
    assert_int_equal(msgpack_unpack_next(u, sb->data, sb->size, &off), MSGPACK_UNPACK_SUCCESS);
    return u->data;
}

static void test_decode_requests(void **unused)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_unpacked u;
    rpc_request req;
    int known;
    zmix_error err = {0};

    /* [0, 7, "status", {"job": 3}] */
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 4);
    msgpack_pack_int(&pk, 0);
    msgpack_pack_int(&pk, 7);
    rpc_pack_cstr(&pk, "status");
    msgpack_pack_map(&pk, 1);
    rpc_pack_cstr(&pk, "job");
    msgpack_pack_int(&pk, 3);
    msgpack_object o = unpack(&sb, &u);
    assert_int_equal(rpc_request_decode(&o, &req, &known, &err), 0);
    assert_int_equal(req.type, RPC_REQUEST);
    assert_int_equal(req.msgid, 7);
    assert_string_equal(req.method, "status");
    int64_t job = 0;
    assert_int_equal(rpc_get_int(&req.params, "job", 1, 1, 100, 0, &job, &err), 0);
    assert_int_equal(job, 3);
    msgpack_unpacked_destroy(&u);
    msgpack_sbuffer_destroy(&sb);

    /* Params as [ {map} ] (generic clients) and as nil. */
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 4);
    msgpack_pack_int(&pk, 0);
    msgpack_pack_int(&pk, 8);
    rpc_pack_cstr(&pk, "ping");
    msgpack_pack_array(&pk, 1);
    msgpack_pack_map(&pk, 0);
    o = unpack(&sb, &u);
    assert_int_equal(rpc_request_decode(&o, &req, &known, &err), 0);
    assert_int_equal(req.params.type, MSGPACK_OBJECT_MAP);
    msgpack_unpacked_destroy(&u);
    msgpack_sbuffer_destroy(&sb);

    /* Params that are a string: error, but the msgid is known so it can be answered. */
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 4);
    msgpack_pack_int(&pk, 0);
    msgpack_pack_int(&pk, 9);
    rpc_pack_cstr(&pk, "ping");
    rpc_pack_cstr(&pk, "oops");
    o = unpack(&sb, &u);
    assert_int_equal(rpc_request_decode(&o, &req, &known, &err), ZMIX_EINVAL);
    assert_true(known);
    assert_int_equal(req.msgid, 9);
    assert_non_null(strstr(err.msg, "params must be a map"));
    assert_non_null(strstr(err.msg, "string"));
    msgpack_unpacked_destroy(&u);
    msgpack_sbuffer_destroy(&sb);

    /* Not an array; a response; wrong arity; msgid out of range; method not a string. */
    struct {
        const char *hex_desc;
        uint8_t bytes[16];
        size_t len;
        int known;
        const char *needle;
    } bad[] = {
        {"map", {0x80}, 1, 0, "must be an array"},
        {"response", {0x94, 0x01, 0x01, 0xc0, 0xc0}, 5, 0, "not accepted"},
        {"3 elems", {0x93, 0x00, 0x01, 0xa1, 'x'}, 5, 0, "got 3 elements"},
        {"msgid 2^32", {0x94, 0x00, 0xcf, 0, 0, 0, 1, 0, 0, 0, 0, 0xa1, 'x', 0x80}, 14, 0, "msgid"},
        {"method int", {0x94, 0x00, 0x05, 0x07, 0x80}, 5, 1, "method must be a string"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        size_t off = 0;
        msgpack_unpacked_init(&u);
        assert_int_equal(msgpack_unpack_next(&u, (const char *)bad[i].bytes, bad[i].len, &off),
                         MSGPACK_UNPACK_SUCCESS);
        err.msg[0] = 0;
        assert_int_not_equal(rpc_request_decode(&u.data, &req, &known, &err), 0);
        assert_int_equal(known, bad[i].known);
        if (!strstr(err.msg, bad[i].needle)) fail_msg("%s: got '%s'", bad[i].hex_desc, err.msg);
        msgpack_unpacked_destroy(&u);
    }
}

static void test_param_getters_name_the_field(void **unused)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 5);
    rpc_pack_cstr(&pk, "pop");
    rpc_pack_cstr(&pk, "many");
    rpc_pack_cstr(&pk, "iters");
    msgpack_pack_int(&pk, 5000);
    rpc_pack_cstr(&pk, "elite");
    msgpack_pack_double(&pk, 0.25);
    rpc_pack_cstr(&pk, "name");
    rpc_pack_cstr(&pk, "abcdef");
    rpc_pack_cstr(&pk, "popsize");
    msgpack_pack_true(&pk);
    msgpack_unpacked u;
    msgpack_object m = unpack(&sb, &u);
    zmix_error err = {0};
    int64_t i64;
    double d;
    char s[4];
    assert_int_equal(rpc_get_int(&m, "pop", 0, 2, 100, 32, &i64, &err), ZMIX_EINVAL);
    assert_string_equal(err.msg, "field 'pop' must be an integer, got string");
    assert_int_equal(rpc_get_int(&m, "iters", 0, 1, 1000, 50, &i64, &err), ZMIX_ERANGE);
    assert_string_equal(err.msg, "field 'iters': 5000 outside [1, 1000]");
    assert_int_equal(rpc_get_int(&m, "absent", 0, 1, 1000, 50, &i64, &err), 0);
    assert_int_equal(i64, 50);
    assert_int_equal(rpc_get_int(&m, "absent", 1, 1, 1000, 50, &i64, &err), ZMIX_EINVAL);
    assert_string_equal(err.msg, "missing field 'absent'");
    assert_int_equal(rpc_get_double(&m, "elite", 1, 0, 1, 0, &d, &err), 0);
    assert_true(d == 0.25);
    assert_int_equal(rpc_get_str(&m, "name", 1, NULL, s, sizeof s, &err), ZMIX_ERANGE);
    assert_non_null(strstr(err.msg, "'name'"));
    static const char *const allowed[] = {"pop", "iters", "elite", "name", NULL};
    assert_int_equal(rpc_map_check_keys(&m, allowed, "cem", &err), ZMIX_EINVAL);
    assert_string_equal(err.msg, "cem: unknown field 'popsize'");
    msgpack_unpacked_destroy(&u);
    msgpack_sbuffer_destroy(&sb);
}

static void test_pack_error_round_trip(void **unused)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    assert_int_equal(rpc_pack_error(&sb, 41, "EINVAL", "field 'x' is bad"), 0);
    /* [1, 41, {"code": "EINVAL", "message": "field 'x' is bad"}, nil] */
    msgpack_unpacked u;
    msgpack_object o = unpack(&sb, &u);
    assert_int_equal(o.type, MSGPACK_OBJECT_ARRAY);
    assert_int_equal(o.via.array.size, 4);
    assert_int_equal(o.via.array.ptr[0].via.u64, 1);
    assert_int_equal(o.via.array.ptr[1].via.u64, 41);
    const msgpack_object *code = rpc_map_get(&o.via.array.ptr[2], "code");
    assert_non_null(code);
    assert_memory_equal(code->via.str.ptr, "EINVAL", 6);
    assert_int_equal(o.via.array.ptr[3].type, MSGPACK_OBJECT_NIL);
    msgpack_unpacked_destroy(&u);
    msgpack_sbuffer_destroy(&sb);
}

/* A valid submit request, to be mutated. */
static void pack_submit(msgpack_sbuffer *sb)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 4);
    msgpack_pack_int(&pk, 0);
    msgpack_pack_int(&pk, 77);
    rpc_pack_cstr(&pk, "submit");
    msgpack_pack_map(&pk, 4);
    rpc_pack_cstr(&pk, "task");
    rpc_pack_cstr(&pk, "mutant");
    rpc_pack_cstr(&pk, "priority");
    msgpack_pack_int(&pk, -3);
    rpc_pack_cstr(&pk, "cem");
    msgpack_pack_map(&pk, 3);
    rpc_pack_cstr(&pk, "pop");
    msgpack_pack_int(&pk, 16);
    rpc_pack_cstr(&pk, "bounds");
    msgpack_pack_array(&pk, 2);
    msgpack_pack_double(&pk, -0.5);
    msgpack_pack_double(&pk, 1.5);
    rpc_pack_cstr(&pk, "metric");
    rpc_pack_cstr(&pk, "loglik");
    rpc_pack_cstr(&pk, "examples");
    msgpack_pack_array(&pk, 3);
    for (int i = 0; i < 3; i++) {
        msgpack_pack_map(&pk, 2);
        rpc_pack_cstr(&pk, "prompt");
        msgpack_pack_array(&pk, 4);
        for (int j = 0; j < 4; j++) msgpack_pack_int(&pk, 1 + 100 * j + i);
        rpc_pack_cstr(&pk, "target");
        msgpack_pack_array(&pk, 2);
        msgpack_pack_int(&pk, 300 + i);
        msgpack_pack_int(&pk, 511 - i);
    }
}

/* Random damage to valid requests, through the whole server-side path: scan, unpack, decode,
 * parse. Nothing may crash (ASan/UBSan watch in CI), and the scanner must agree with
 * msgpack-c wherever both accept: a message the scanner calls complete is exactly the
 * message msgpack-c reads, and a prefix it calls incomplete is one msgpack-c wants more of. */
static void test_mutated_requests(void **unused)
{
    msgpack_sbuffer base;
    msgpack_sbuffer_init(&base);
    pack_submit(&base);
    job_limits lim;
    job_limits_default(&lim);
    lim.vocab_size = 512;
    lim.context = 64;
    lim.n_experts = 3;
    lim.n_matrices = 15;
    zmix_cem_settings d;
    memset(&d, 0, sizeof d);
    d.pop_size = 32;
    d.elite_ratio = 0.2;
    d.hi = 1;
    d.init_std = -1;
    d.max_generations = 50;
    pcg32 rng;
    pcg32_seed(&rng, 2026, 5);
    uint8_t buf[1024];
    int complete = 0, parsed = 0;
    for (int round = 0; round < 20000; round++) {
        size_t len = base.size;
        memcpy(buf, base.data, len);
        int edits = 1 + (int)pcg32_bounded(&rng, 4);
        for (int e = 0; e < edits; e++) {
            size_t at = pcg32_bounded(&rng, (uint32_t)len);
            switch (pcg32_bounded(&rng, 4)) {
            case 0: buf[at] = (uint8_t)pcg32_next(&rng); break;
            case 1: buf[at] ^= (uint8_t)(1u << pcg32_bounded(&rng, 8)); break;
            case 2: /* delete a byte */
                memmove(buf + at, buf + at + 1, len - at - 1);
                len--;
                break;
            default: /* insert an interesting byte */
                if (len < sizeof buf) {
                    static const uint8_t interesting[] = {0xc1, 0xdd, 0xdf, 0xdb, 0xc6, 0xcf,
                                                          0xff, 0x00, 0x7f, 0x80, 0x90, 0xc0};
                    memmove(buf + at + 1, buf + at, len - at);
                    buf[at] = interesting[pcg32_bounded(&rng, sizeof interesting)];
                    len++;
                }
            }
        }
        size_t frame = 0;
        zmix_error err = {0};
        int st = rpc_frame_scan(buf, len, 4096, &frame, &err);
        msgpack_unpacked u;
        msgpack_unpacked_init(&u);
        size_t off = 0;
        if (st == RPC_FRAME_COMPLETE) {
            complete++;
            assert_true(frame <= len);
            int rc = msgpack_unpack_next(&u, (const char *)buf, frame, &off);
            assert_int_equal(rc, MSGPACK_UNPACK_SUCCESS);
            assert_int_equal(off, frame);
            rpc_request req;
            int known;
            if (rpc_request_decode(&u.data, &req, &known, &err) == 0 &&
                !strcmp(req.method, "submit")) {
                job_spec spec;
                if (job_spec_parse(&req.params, &lim, &d, &spec, &err) == 0) {
                    parsed++;
                    assert_true(spec.examples.n >= 1);
                    for (size_t t = 0; t < spec.examples.n_tokens; t++)
                        assert_true(spec.examples.tokens[t] >= 0 &&
                                    spec.examples.tokens[t] < lim.vocab_size);
                    job_spec_free(&spec);
                } else {
                    assert_true(err.code < 0 && err.msg[0] != '\0');
                }
            }
        } else if (st == RPC_FRAME_NEED_MORE) {
            int rc = msgpack_unpack_next(&u, (const char *)buf, len, &off);
            assert_int_equal(rc, MSGPACK_UNPACK_CONTINUE);
        } else {
            assert_true(err.code == ZMIX_ELIMIT || err.code == ZMIX_EFORMAT);
        }
        msgpack_unpacked_destroy(&u);
    }
    /* The mutations must exercise the deep paths, not only the scanner's refusals. */
    assert_true(complete > 2000);
    assert_true(parsed > 100);
    print_message("mutated requests: %d complete, %d parsed as a submit\n", complete, parsed);
    msgpack_sbuffer_destroy(&base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scan_agrees_with_msgpack),
        cmocka_unit_test(test_scan_rejects_hostile_sizes_early),
        cmocka_unit_test(test_decode_requests),
        cmocka_unit_test(test_param_getters_name_the_field),
        cmocka_unit_test(test_pack_error_round_trip),
        cmocka_unit_test(test_mutated_requests),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
