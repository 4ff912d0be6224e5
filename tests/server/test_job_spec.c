/* Submit parameters (src/server/job_spec.c): a valid request parses into the spec with every
 * default; each limit and each bad field is refused with a message naming it; the cache key
 * changes exactly when something that changes the result changes; settings survive the
 * round trip through the job store's encoding. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <string.h>

#include "adapt/cem_options.h"
#include "wire/job_spec.h"
#include "wire/rpc.h"

static job_limits limits(void)
{
    job_limits lim;
    job_limits_default(&lim);
    lim.vocab_size = 512;
    lim.context = 64;
    lim.n_experts = 3;
    lim.n_matrices = 15;
    return lim;
}

static zmix_cem_settings defaults(void)
{
    /* What zmix_cem_settings_default gives (the daemon passes the real one). */
    zmix_cem_settings s;
    memset(&s, 0, sizeof s);
    s.pop_size = 32;
    s.elite_ratio = 0.2;
    s.lo = 0;
    s.hi = 1;
    s.init_std = -1;
    s.max_generations = 50;
    s.elitism = 1;
    s.std_tol = 1e-4;
    s.target_accuracy = 2;
    return s;
}

typedef struct built {
    msgpack_sbuffer sb;
    msgpack_unpacked u;
} built;

/* Builds {"task": task, "examples": [{prompt:[1,2,3], target:[t0]} x n], "cem": {...}} with
 * optional overrides: bad_token puts that id in example 1's target; cem_key/cem_val add one
 * integer CEM field. */
static msgpack_object build(built *b, const char *task, int n, long bad_token, const char *cem_key,
                            long cem_val, int prompt_len)
{
    msgpack_sbuffer_init(&b->sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &b->sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, cem_key ? 4 : 3);
    rpc_pack_cstr(&pk, "task");
    rpc_pack_cstr(&pk, task);
    rpc_pack_cstr(&pk, "priority");
    msgpack_pack_int(&pk, 2);
    rpc_pack_cstr(&pk, "examples");
    msgpack_pack_array(&pk, (size_t)n);
    for (int i = 0; i < n; i++) {
        msgpack_pack_map(&pk, 2);
        rpc_pack_cstr(&pk, "prompt");
        msgpack_pack_array(&pk, (size_t)prompt_len);
        for (int j = 0; j < prompt_len; j++) msgpack_pack_int(&pk, 1 + j + i);
        rpc_pack_cstr(&pk, "target");
        msgpack_pack_array(&pk, 1);
        msgpack_pack_long(&pk, i == 1 && bad_token ? bad_token : 100 + i);
    }
    if (cem_key) {
        rpc_pack_cstr(&pk, "cem");
        msgpack_pack_map(&pk, 1);
        rpc_pack_cstr(&pk, cem_key);
        msgpack_pack_long(&pk, cem_val);
    }
    size_t off = 0;
    msgpack_unpacked_init(&b->u);
    assert_int_equal(msgpack_unpack_next(&b->u, b->sb.data, b->sb.size, &off),
                     MSGPACK_UNPACK_SUCCESS);
    return b->u.data;
}

/* "examples": [{"prompt": [1], "target": [2]}], a key and its value of a params map. */
static void pack_one_example(msgpack_packer *pk)
{
    rpc_pack_cstr(pk, "examples");
    msgpack_pack_array(pk, 1);
    msgpack_pack_map(pk, 2);
    rpc_pack_cstr(pk, "prompt");
    msgpack_pack_array(pk, 1);
    msgpack_pack_int(pk, 1);
    rpc_pack_cstr(pk, "target");
    msgpack_pack_array(pk, 1);
    msgpack_pack_int(pk, 2);
}

static void done(built *b)
{
    msgpack_unpacked_destroy(&b->u);
    msgpack_sbuffer_destroy(&b->sb);
}

static int parse(msgpack_object o, job_spec *spec, zmix_error *err)
{
    job_limits lim = limits();
    zmix_cem_settings d = defaults();
    return job_spec_parse(&o, &lim, &d, spec, err);
}

static void test_valid_submit(void **unused)
{
    built b;
    job_spec spec;
    zmix_error err = {0};
    msgpack_object o = build(&b, "sentiment.v2", 4, 0, "pop", 16, 3);
    assert_int_equal(parse(o, &spec, &err), 0);
    assert_string_equal(spec.task, "sentiment.v2");
    assert_int_equal(spec.priority, 2);
    assert_int_equal(spec.examples.n, 4);
    assert_int_equal(spec.examples.n_tokens, 16);
    assert_int_equal(spec.examples.items[2].n_prompt, 3);
    assert_int_equal(spec.examples.items[2].prompt[0], 3);
    assert_int_equal(spec.examples.items[3].target[0], 103);
    assert_int_equal(spec.cem.pop_size, 16);
    assert_int_equal(spec.cem.max_generations, 50);
    assert_int_equal(spec.cem.dim, 3); /* per-expert α by default */
    assert_int_equal(spec.compose.rescale, 1);
    assert_int_equal(spec.compose.per_layer, 0);
    job_spec_free(&spec);
    done(&b);

    /* At the context limit: prompt 64 + target 1 puts 64 tokens in front of the model (the last
     * target token is never read), exactly its context. One more is refused (see below). */
    o = build(&b, "t", 1, 0, NULL, 0, 64);
    assert_int_equal(parse(o, &spec, &err), 0);
    assert_int_equal(spec.examples.items[0].n_prompt + spec.examples.items[0].n_target, 65);
    job_spec_free(&spec);
    done(&b);

    o = build(&b, "t", 1, 0, "per_layer", 0, 3);
    /* per_layer must be a boolean: an integer is refused with the field named. */
    assert_int_equal(parse(o, &spec, &err), ZMIX_EINVAL);
    assert_string_equal(err.msg, "cem: field 'per_layer' must be a boolean, got positive integer");
    done(&b);
}

static void test_bad_submits_name_the_problem(void **unused)
{
    built b;
    job_spec spec;
    zmix_error err = {0};
    struct {
        const char *task;
        int n;
        long bad_token;
        const char *cem_key;
        long cem_val;
        int prompt_len;
        int code;
        const char *msg;
    } cases[] = {
        {"t", 3, 600, NULL, 0, 3, ZMIX_ERANGE,
         "examples[1].target[0]: token id 600 outside the vocabulary [0, 512)"},
        {"t", 3, -4, NULL, 0, 3, ZMIX_ERANGE,
         "examples[1].target[0]: token id -4 outside the vocabulary [0, 512)"},
        {"t", 2, 0, NULL, 0, 65, ZMIX_ELIMIT,
         "examples[0]: 66 tokens (prompt 65 + target 1): the model reads 65 of them (all but the "
         "last target token), over its context of 64"},
        {"t", 257, 0, NULL, 0, 2, ZMIX_ELIMIT, "field 'examples': 257 examples, at most 256"},
        {"t", 0, 0, NULL, 0, 2, ZMIX_EINVAL, "field 'examples' is empty"},
        {"t", 2, 0, "pop", 1, 2, ZMIX_ERANGE, "cem: field 'pop': 1 outside [2, 1024]"},
        {"t", 2, 0, "iters", 5000, 2, ZMIX_ERANGE,
         "cem: field 'iters': 5000 outside [1, 1000] (1000 is this daemon's --max-generations)"},
        {"t", 2, 0, "popsize", 8, 2, ZMIX_EINVAL, "cem: unknown field 'popsize'"},
        {"bad/name", 2, 0, NULL, 0, 2, ZMIX_EINVAL,
         "task name: byte 0x2f at 3 is not allowed (" TASK_NAME_RULE ")"},
        {".hidden", 2, 0, NULL, 0, 2, ZMIX_EINVAL,
         "task name starts with '.' (" TASK_NAME_RULE ")"},
        {"", 2, 0, NULL, 0, 2, ZMIX_EINVAL, "task name is empty (" TASK_NAME_RULE ")"},
        {"a1234567890123456789012345678901234567890123456789012345678901234567890123456789012"
         "345678901234567890123456789012345678901234567",
         2, 0, NULL, 0, 2, ZMIX_EINVAL, "task name of 128 bytes is too long (" TASK_NAME_RULE ")"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        msgpack_object o = build(&b, cases[i].task, cases[i].n, cases[i].bad_token,
                                 cases[i].cem_key, cases[i].cem_val, cases[i].prompt_len);
        err.msg[0] = 0;
        int rc = parse(o, &spec, &err);
        if (rc != cases[i].code || strcmp(err.msg, cases[i].msg) != 0)
            fail_msg("case %zu: rc %d, message '%s'; expected %d '%s'", i, rc, err.msg,
                     cases[i].code, cases[i].msg);
        done(&b);
    }
}

static void test_dimension_and_token_limits(void **unused)
{
    built b;
    job_spec spec;
    zmix_error err = {0};
    job_limits lim = limits();
    zmix_cem_settings d = defaults();
    lim.max_dim = 40; /* per-layer α is 45 here */
    msgpack_sbuffer_init(&b.sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &b.sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    rpc_pack_cstr(&pk, "task");
    rpc_pack_cstr(&pk, "t");
    rpc_pack_cstr(&pk, "cem");
    msgpack_pack_map(&pk, 1);
    rpc_pack_cstr(&pk, "per_layer");
    msgpack_pack_true(&pk);
    pack_one_example(&pk);
    size_t off = 0;
    msgpack_unpacked_init(&b.u);
    assert_int_equal(msgpack_unpack_next(&b.u, b.sb.data, b.sb.size, &off), MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(job_spec_parse(&b.u.data, &lim, &d, &spec, &err), ZMIX_ELIMIT);
    assert_string_equal(err.msg, "cem: search dimension 45 (per-layer), at most 40");
    lim.max_dim = 45;
    assert_int_equal(job_spec_parse(&b.u.data, &lim, &d, &spec, &err), 0);
    assert_int_equal(spec.cem.dim, 45);
    job_spec_free(&spec);
    /* Memory: estimated up front and refused by name when over the per-job limit. */
    job_spec big;
    assert_int_equal(job_spec_parse(&b.u.data, &lim, &d, &big, &err), 0);
    size_t need = job_spec_memory(&big);
    /* At least the history (2·dim doubles per generation) and the population. */
    assert_true(need >= (size_t)50 * 2 * 45 * sizeof(double) + (size_t)32 * 45 * sizeof(float));
    big.cem.max_generations *= 2;
    assert_true(job_spec_memory(&big) > need);
    job_spec_free(&big);
    lim.max_job_bytes = need - 1;
    assert_int_equal(job_spec_parse(&b.u.data, &lim, &d, &spec, &err), ZMIX_ELIMIT);
    assert_non_null(strstr(err.msg, "over the per-job limit"));
    assert_non_null(strstr(err.msg, "population 32 x dimension 45, 50 generations"));
    lim.max_job_bytes = need;
    assert_int_equal(job_spec_parse(&b.u.data, &lim, &d, &spec, &err), 0);
    job_spec_free(&spec);
    lim.max_tokens = 1;
    assert_int_equal(job_spec_parse(&b.u.data, &lim, &d, &spec, &err), ZMIX_ELIMIT);
    assert_non_null(strstr(err.msg, "tokens in total, over the limit of 1"));
    done(&b);
}

static void test_key_tracks_what_changes_the_result(void **unused)
{
    built b1, b2, b3;
    job_spec s1, s2, s3;
    zmix_error err = {0};
    assert_int_equal(parse(build(&b1, "a", 3, 0, "seed", 1, 3), &s1, &err), 0);
    assert_int_equal(parse(build(&b2, "a", 3, 0, "seed", 1, 3), &s2, &err), 0);
    assert_int_equal(parse(build(&b3, "a", 3, 0, "seed", 2, 3), &s3, &err), 0);
    char k1[65], k2[65], k3[65], k4[65], k5[65];
    job_spec_key(&s1, "model-fp", "experts-fp", k1);
    s2.priority = 9; /* when, not what */
    s2.recompute = 1;
    job_spec_key(&s2, "model-fp", "experts-fp", k2);
    job_spec_key(&s3, "model-fp", "experts-fp", k3);
    job_spec_key(&s1, "other-model", "experts-fp", k4);
    job_spec_key(&s1, "model-fp", "other-experts", k5);
    assert_string_equal(k1, k2);
    assert_string_not_equal(k1, k3);
    assert_string_not_equal(k1, k4);
    assert_string_not_equal(k1, k5);
    assert_int_equal(strlen(k1), 64);
    s2.examples.tokens[0]++; /* one token of the examples */
    job_spec_key(&s2, "model-fp", "experts-fp", k2);
    assert_string_not_equal(k1, k2);
    char d1[65], d2[65];
    zmix_adapt_examples_digest(&s1.examples, d1);
    zmix_adapt_examples_digest(&s3.examples, d2);
    assert_string_equal(d1, d2); /* same examples, different seed */
    job_spec_free(&s1);
    job_spec_free(&s2);
    job_spec_free(&s3);
    done(&b1);
    done(&b2);
    done(&b3);
}

static void test_settings_round_trip(void **unused)
{
    built b;
    job_spec s, r;
    zmix_error err = {0};
    assert_int_equal(parse(build(&b, "rt", 3, 0, "patience", 4, 5), &s, &err), 0);
    s.cem.seed = 99;
    s.compose.per_layer = 1;
    s.cem.dim = 45;
    s.cem.elite_ratio = 0.25;
    s.cem.method = ZMIX_CEM_METHOD_SEP_CMA;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    job_spec_pack_settings(&s, &pk);
    job_limits lim = limits();
    zmix_cem_settings d = defaults();
    d.method = ZMIX_CEM_METHOD_SEP_CMA; /* the daemon's default today */
    assert_int_equal(job_spec_restore((const uint8_t *)sb.data, sb.size, &s.examples, s.task,
                                      s.priority, lim.n_experts, lim.n_matrices, &d, &r, &err),
                     0);
    char k1[65], k2[65];
    job_spec_key(&s, "m", "e", k1);
    job_spec_key(&r, "m", "e", k2);
    assert_string_equal(k1, k2);
    assert_int_equal(r.cem.patience, 4);
    assert_int_equal(r.cem.dim, 45);
    assert_int_equal(r.cem.method, ZMIX_CEM_METHOD_SEP_CMA);
    assert_int_equal(r.examples.items[2].prompt[4], s.examples.items[2].prompt[4]);
    assert_ptr_not_equal(r.examples.tokens, s.examples.tokens);
    job_spec_free(&r);
    /* Settings stored before the method was a setting (no "method") were a CEM search: the
     * job resumes as one whatever today's default is, so its key still says what ran. */
    msgpack_sbuffer old_sb;
    msgpack_sbuffer_init(&old_sb);
    msgpack_packer old_pk;
    msgpack_packer_init(&old_pk, &old_sb, msgpack_sbuffer_write);
    msgpack_pack_map(&old_pk, 1);
    rpc_pack_cstr(&old_pk, "pop");
    msgpack_pack_int(&old_pk, 8);
    assert_int_equal(job_spec_restore((const uint8_t *)old_sb.data, old_sb.size, &s.examples,
                                      s.task, s.priority, lim.n_experts, lim.n_matrices, &d, &r,
                                      &err),
                     0);
    assert_int_equal(r.cem.method, ZMIX_CEM_METHOD_CEM);
    assert_int_equal(r.cem.pop_size, 8);
    job_spec_free(&r);
    msgpack_sbuffer_destroy(&old_sb);
    /* A corrupt settings blob is an error, not a crash. */
    assert_int_equal(job_spec_restore((const uint8_t *)"\xc1", 1, &s.examples, s.task, 0,
                                      lim.n_experts, lim.n_matrices, &d, &r, &err),
                     ZMIX_EFORMAT);
    msgpack_sbuffer_destroy(&sb);
    job_spec_free(&s);
    done(&b);
}

/* The wire keys and the command-line flags are one table: every setting given both ways lands
 * in the same field, and the settings map the daemon reports gives back what was sent. */
static void test_wire_keys_and_flags_agree(void **unused)
{
    static const struct {
        const char *flag, *arg;
    } flags[] = {{"--per-layer", NULL},   {"--pop", "7"},          {"--elite", "0.5"},
                 {"--iters", "9"},        {"--seed", "12345"},     {"--init-std", "0.25"},
                 {"--bounds", "0.1,2.5"}, {"--normalize", NULL},   {"--metric", "loglik"},
                 {"--patience", "4"},     {"--std-tol", "0.01"},   {"--std-floor", "0.02"},
                 {"--ema", "0.3"},        {"--no-elitism", NULL},  {"--no-rescale", NULL},
                 {"--target-acc", "0.9"}, {"--validation", "0.4"}, {"--method", "cem"}};
    assert_int_equal(sizeof flags / sizeof *flags, CEM_OPT_COUNT);
    zmix_adapt_opts cli;
    zmix_adapt_opts_default(&cli);
    zmix_error err = {0};
    for (size_t i = 0; i < sizeof flags / sizeof *flags; i++)
        assert_int_equal(
            cem_option_apply_arg(cem_option_by_flag(flags[i].flag), flags[i].arg, &cli, &err), 0);

    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    rpc_pack_cstr(&pk, "task");
    rpc_pack_cstr(&pk, "t");
    pack_one_example(&pk);
    rpc_pack_cstr(&pk, "cem");
    msgpack_pack_map(&pk, 17);
    rpc_pack_cstr(&pk, "method");
    rpc_pack_cstr(&pk, "cem");
    rpc_pack_cstr(&pk, "per_layer");
    msgpack_pack_true(&pk);
    rpc_pack_cstr(&pk, "pop");
    msgpack_pack_int(&pk, 7);
    rpc_pack_cstr(&pk, "elite");
    msgpack_pack_double(&pk, 0.5);
    rpc_pack_cstr(&pk, "iters");
    msgpack_pack_int(&pk, 9);
    rpc_pack_cstr(&pk, "seed");
    msgpack_pack_uint64(&pk, 12345);
    rpc_pack_cstr(&pk, "init_std");
    msgpack_pack_double(&pk, 0.25);
    rpc_pack_cstr(&pk, "bounds");
    msgpack_pack_array(&pk, 2);
    msgpack_pack_double(&pk, 0.1);
    msgpack_pack_double(&pk, 2.5);
    rpc_pack_cstr(&pk, "normalize");
    msgpack_pack_true(&pk);
    rpc_pack_cstr(&pk, "metric");
    rpc_pack_cstr(&pk, "loglik");
    rpc_pack_cstr(&pk, "patience");
    msgpack_pack_int(&pk, 4);
    rpc_pack_cstr(&pk, "std_tol");
    msgpack_pack_double(&pk, 0.01);
    rpc_pack_cstr(&pk, "std_floor");
    msgpack_pack_double(&pk, 0.02);
    rpc_pack_cstr(&pk, "ema");
    msgpack_pack_double(&pk, 0.3);
    rpc_pack_cstr(&pk, "elitism");
    msgpack_pack_false(&pk);
    rpc_pack_cstr(&pk, "rescale");
    msgpack_pack_false(&pk);
    rpc_pack_cstr(&pk, "target_accuracy");
    msgpack_pack_double(&pk, 0.9);
    msgpack_unpacked u;
    size_t off = 0;
    msgpack_unpacked_init(&u);
    assert_int_equal(msgpack_unpack_next(&u, sb.data, sb.size, &off), MSGPACK_UNPACK_SUCCESS);
    job_limits lim = limits();
    zmix_cem_settings d = defaults();
    job_spec spec;
    assert_int_equal(job_spec_parse(&u.data, &lim, &d, &spec, &err), 0);
    assert_int_equal(spec.compose.per_layer, cli.per_layer);
    assert_int_equal(spec.compose.rescale, cli.rescale);
    assert_int_equal(spec.compose.normalize, 0); /* normalised by the engine, not the scorer */
    const zmix_cem_settings *w = &spec.cem, *c = &cli.cem;
    assert_int_equal(w->pop_size, c->pop_size);
    assert_true(w->elite_ratio == c->elite_ratio);
    assert_int_equal(w->max_generations, c->max_generations);
    assert_true(w->seed == c->seed);
    assert_true(w->init_std == c->init_std);
    assert_true(w->lo == c->lo && w->hi == c->hi);
    assert_int_equal(w->normalize, c->normalize);
    assert_int_equal(w->metric, c->metric);
    assert_int_equal(w->method, c->method);
    assert_int_equal(w->method, ZMIX_CEM_METHOD_CEM);
    assert_int_equal(w->patience, c->patience);
    assert_true(w->std_tol == c->std_tol);
    assert_true(w->std_floor == c->std_floor);
    assert_true(w->ema == c->ema);
    assert_int_equal(w->elitism, c->elitism);
    assert_true(w->target_accuracy == c->target_accuracy);

    /* The reported settings map: every key once, with what was sent. */
    msgpack_sbuffer out;
    msgpack_sbuffer_init(&out);
    msgpack_packer opk;
    msgpack_packer_init(&opk, &out, msgpack_sbuffer_write);
    job_spec_pack_settings(&spec, &opk);
    msgpack_unpacked back;
    off = 0;
    msgpack_unpacked_init(&back);
    assert_int_equal(msgpack_unpack_next(&back, out.data, out.size, &off), MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(back.data.via.map.size, CEM_OPT_COUNT);
    for (int i = 0; i < CEM_OPT_COUNT; i++)
        assert_non_null(rpc_map_get(&back.data, cem_options[i].key));
    assert_int_equal(rpc_map_get(&back.data, "pop")->via.u64, 7);
    const msgpack_object *metric = rpc_map_get(&back.data, "metric");
    assert_int_equal(metric->via.str.size, 6);
    assert_memory_equal(metric->via.str.ptr, "loglik", 6);
    msgpack_unpacked_destroy(&back);
    msgpack_sbuffer_destroy(&out);
    job_spec_free(&spec);
    msgpack_unpacked_destroy(&u);
    msgpack_sbuffer_destroy(&sb);
}

/* Jobs keep what they were: under low limits an unset pop or iters is lowered to the limit (the
 * job runs and reports what it can have), a value the client gave above it is refused naming
 * the limit, and a stored job is restored with its settings whatever the limits are now. */
static void test_limits_lower_defaults_and_jobs_keep_their_settings(void **unused)
{
    job_limits lim = limits();
    lim.max_pop = 8;
    lim.max_generations = 3;
    zmix_cem_settings d = defaults();
    job_spec spec;
    zmix_error err = {0};
    built b;
    msgpack_object o = build(&b, "t", 2, 0, NULL, 0, 3);
    assert_int_equal(job_spec_parse(&o, &lim, &d, &spec, &err), 0);
    assert_int_equal(spec.cem.pop_size, 8);        /* default 32, lowered */
    assert_int_equal(spec.cem.max_generations, 3); /* default 50, lowered */
    assert_int_equal(spec.cem.patience, 0);        /* default 0, within the limit */
    job_spec_free(&spec);
    done(&b);
    lim.max_pop = 64; /* a default within the limit is left alone */
    o = build(&b, "t", 2, 0, NULL, 0, 3);
    assert_int_equal(job_spec_parse(&o, &lim, &d, &spec, &err), 0);
    assert_int_equal(spec.cem.pop_size, 32);
    job_spec_free(&spec);
    done(&b);
    lim.max_pop = 8;

    struct {
        const char *key;
        long value;
        const char *msg; /* NULL: accepted */
    } cases[] = {
        {"pop", 8, NULL},
        {"pop", 9, "cem: field 'pop': 9 outside [2, 8] (8 is this daemon's --max-pop)"},
        {"pop", 1, "cem: field 'pop': 1 outside [2, 8]"},
        {"iters", 3, NULL},
        {"iters", 4, "cem: field 'iters': 4 outside [1, 3] (3 is this daemon's --max-generations)"},
        {"patience", 4,
         "cem: field 'patience': 4 outside [0, 3] (3 is this daemon's --max-generations)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        o = build(&b, "t", 2, 0, cases[i].key, cases[i].value, 3);
        err.msg[0] = '\0';
        int rc = job_spec_parse(&o, &lim, &d, &spec, &err);
        if (!cases[i].msg) {
            assert_int_equal(rc, 0);
            job_spec_free(&spec);
        } else if (rc != ZMIX_ERANGE || strcmp(err.msg, cases[i].msg) != 0) {
            fail_msg("%s %ld: rc %d '%s', expected '%s'", cases[i].key, cases[i].value, rc, err.msg,
                     cases[i].msg);
        }
        done(&b);
    }

    /* Accepted under the default limits with pop 64 and 40 generations, stored, restored after
     * a restart with the limits above: same settings, same cache key (so the same α). */
    job_limits wide = limits();
    o = build(&b, "t", 2, 0, "pop", 64, 3);
    assert_int_equal(job_spec_parse(&o, &wide, &d, &spec, &err), 0);
    spec.cem.max_generations = 40;
    uint8_t *blob;
    size_t blob_len;
    job_spec_settings_bytes(&spec, &blob, &blob_len);
    job_spec back;
    assert_int_equal(job_spec_restore(blob, blob_len, &spec.examples, spec.task, spec.priority,
                                      lim.n_experts, lim.n_matrices, &d, &back, &err),
                     0);
    assert_int_equal(back.cem.pop_size, 64);
    assert_int_equal(back.cem.max_generations, 40);
    char k1[65], k2[65];
    job_spec_key(&spec, "m", "e", k1);
    job_spec_key(&back, "m", "e", k2);
    assert_string_equal(k1, k2);
    job_spec_free(&back);
    free(blob);
    /* The engine's own check still applies to a restored job: a normalised search needs
     * bounds >= 0. */
    spec.cem.normalize = 1;
    spec.cem.lo = -1;
    job_spec_settings_bytes(&spec, &blob, &blob_len);
    assert_int_equal(job_spec_restore(blob, blob_len, &spec.examples, spec.task, spec.priority,
                                      lim.n_experts, lim.n_matrices, &d, &back, &err),
                     ZMIX_EINVAL);
    assert_non_null(strstr(err.msg, "job settings: cem settings: normalize needs bounds"));
    free(blob);
    job_spec_free(&spec);
    done(&b);
}

/* Packs a submit's params map {"task": "mc", "examples": [...]} from a JSON-like spec of its
 * examples: each "P|C1;C2;...|A" (ids comma-separated) is {prompt, choices, answer}, and
 * "P|T" is {prompt, target}. Returns the unpacked map (b owns it). */
static msgpack_object build_choices(built *b, const char *const *spec, int n)
{
    msgpack_sbuffer_init(&b->sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &b->sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    rpc_pack_cstr(&pk, "task");
    rpc_pack_cstr(&pk, "mc");
    rpc_pack_cstr(&pk, "examples");
    msgpack_pack_array(&pk, (size_t)n);
    for (int i = 0; i < n; i++) {
        char text[128], *parts[3] = {NULL, NULL, NULL}, *save;
        snprintf(text, sizeof text, "%s", spec[i]);
        int n_parts = 0;
        for (char *t = strtok_r(text, "|", &save); t && n_parts < 3; t = strtok_r(NULL, "|", &save))
            parts[n_parts++] = t;
        msgpack_pack_map(&pk, (size_t)n_parts);
        for (int k = 0; k < 2; k++) {
            rpc_pack_cstr(&pk, k == 0 ? "prompt" : n_parts == 3 ? "choices" : "target");
            char *lists[8], *s2;
            int n_lists = 0;
            for (char *l = strtok_r(parts[k], ";", &s2); l && n_lists < 8;
                 l = strtok_r(NULL, ";", &s2))
                lists[n_lists++] = l;
            if (k == 1 && n_parts == 3) msgpack_pack_array(&pk, (size_t)n_lists);
            for (int l = 0; l < n_lists; l++) {
                int ids[16], m = 0;
                char *s3;
                for (char *id = strtok_r(lists[l], ",", &s3); id && m < 16;
                     id = strtok_r(NULL, ",", &s3))
                    ids[m++] = atoi(id);
                msgpack_pack_array(&pk, (size_t)m);
                for (int j = 0; j < m; j++) msgpack_pack_int(&pk, ids[j]);
            }
        }
        if (n_parts == 3) {
            rpc_pack_cstr(&pk, "answer");
            msgpack_pack_int(&pk, atoi(parts[2]));
        }
    }
    size_t off = 0;
    msgpack_unpacked_init(&b->u);
    assert_int_equal(msgpack_unpack_next(&b->u, b->sb.data, b->sb.size, &off),
                     MSGPACK_UNPACK_SUCCESS);
    return b->u.data;
}

/* Multiple-choice examples over the wire: parsed into choices and answer, kept by a restore,
 * part of the inputs key; a malformed one or a set mixing kinds is refused by name. */
static void test_choice_examples(void **unused)
{
    built b;
    job_spec spec, back;
    zmix_error err = {0};
    const char *good[] = {"1,2|3;4,5|1", "7|8,9;10;11|2"};
    assert_int_equal(parse(build_choices(&b, good, 2), &spec, &err), 0);
    const zmix_example *x = &spec.examples.items[0];
    assert_int_equal(x->n_choices, 2);
    assert_int_equal(x->answer, 1);
    assert_int_equal(x->choice_len[1], 2);
    assert_memory_equal(x->choices, ((int32_t[]){3, 4, 5}), 3 * sizeof(int32_t));
    assert_null(x->target);
    assert_int_equal(spec.examples.items[1].n_choices, 3);
    assert_int_equal(spec.examples.items[1].choices[3], 11);
    done(&b);
    /* A recovered job gets its examples back, choices and all. */
    zmix_cem_settings d = defaults();
    assert_int_equal(job_spec_restore((const uint8_t *)"\x80", 1, &spec.examples, "mc", 0, 3, 15,
                                      &d, &back, &err),
                     0);
    assert_int_equal(back.examples.items[1].answer, 2);
    assert_memory_equal(back.examples.items[1].choices, spec.examples.items[1].choices,
                        4 * sizeof(int32_t));
    /* The answer is part of the task: another answer is another key. */
    char k1[65], k2[65];
    job_spec_key(&spec, "m", "e", k1);
    back.examples.items[0].answer = 0;
    job_spec_key(&back, "m", "e", k2);
    assert_string_not_equal(k1, k2);
    job_spec_free(&back);
    job_spec_free(&spec);

    struct {
        const char *ex[2];
        int n;
        const char *msg;
    } bad[] = {
        {{"1|2;3|0", "1|2"},
         2,
         "examples[1].target: examples[0] is multiple-choice, and a set is all exact-match "
         "(target) or all multiple-choice (choices, answer)"},
        {{"1|2", "1|2;3|0"}, 2, "examples[1].choices: examples[0] is exact-match"},
        {{"1|2;3|2", NULL},
         1,
         "examples[0].answer must be the index of a choice, an integer in [0, 2)"},
        {{"1|2|0", NULL}, 1, "examples[0].choices: 1 choices, expected 2 to 64"},
        {{"1|2;600|0", NULL},
         1,
         "examples[0].choices[1][0]: token id 600 outside the vocabulary [0, 512)"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        err.msg[0] = 0;
        int rc = parse(build_choices(&b, bad[i].ex, bad[i].n), &spec, &err);
        if (rc == 0 || !strstr(err.msg, bad[i].msg))
            fail_msg("case %zu: rc %d, message '%s'; expected '%s'", i, rc, err.msg, bad[i].msg);
        done(&b);
    }
}

static void test_text_examples(void **unused)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    rpc_pack_cstr(&pk, "task");
    rpc_pack_cstr(&pk, "text");
    rpc_pack_cstr(&pk, "examples");
    msgpack_pack_array(&pk, 2);
    msgpack_pack_map(&pk, 2);
    rpc_pack_cstr(&pk, "prompt");
    rpc_pack_cstr(&pk, "ab");
    rpc_pack_cstr(&pk, "target");
    rpc_pack_cstr(&pk, "c");
    msgpack_pack_map(&pk, 2); /* ids and text can be mixed */
    rpc_pack_cstr(&pk, "prompt");
    msgpack_pack_array(&pk, 1);
    msgpack_pack_int(&pk, 256);
    rpc_pack_cstr(&pk, "target");
    rpc_pack_cstr(&pk, "");
    msgpack_unpacked u;
    size_t off = 0;
    msgpack_unpacked_init(&u);
    assert_int_equal(msgpack_unpack_next(&u, sb.data, sb.size, &off), MSGPACK_UNPACK_SUCCESS);
    job_limits lim = limits();
    zmix_cem_settings d = defaults();
    job_spec spec;
    zmix_error err = {0};
    /* Without a tokenizer, text is refused by name. */
    assert_int_equal(job_spec_parse(&u.data, &lim, &d, &spec, &err), ZMIX_EINVAL);
    assert_string_equal(
        err.msg, "examples[0].prompt is text but the model has no tokenizer: send token ids");
    zmix_tokenizer *tok;
    assert_int_equal(zmix_tokenizer_create_bytes(256, 257, 512, &tok, &err), 0);
    lim.tokenizer = tok;
    /* The empty target of example 1 is refused... */
    assert_int_equal(job_spec_parse(&u.data, &lim, &d, &spec, &err), ZMIX_EINVAL);
    assert_string_equal(err.msg, "examples[1].target is empty");
    msgpack_unpacked_destroy(&u);
    /* ...and once fixed, text is encoded as the tokenizer does: BOS + bytes for a prompt. */
    sb.data[sb.size - 1] = (char)0xa1; /* "" -> a 1-byte string follows */
    msgpack_sbuffer_write(&sb, "d", 1);
    off = 0;
    msgpack_unpacked_init(&u);
    assert_int_equal(msgpack_unpack_next(&u, sb.data, sb.size, &off), MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(job_spec_parse(&u.data, &lim, &d, &spec, &err), 0);
    assert_int_equal(spec.examples.items[0].n_prompt, 3);
    assert_int_equal(spec.examples.items[0].prompt[0], 256);
    assert_int_equal(spec.examples.items[0].prompt[1], 'a');
    assert_int_equal(spec.examples.items[0].prompt[2], 'b');
    assert_int_equal(spec.examples.items[0].n_target, 1);
    assert_int_equal(spec.examples.items[0].target[0], 'c');
    assert_int_equal(spec.examples.items[1].target[0], 'd');
    assert_int_equal(spec.examples.n_tokens, 6);
    job_spec_free(&spec);
    zmix_tokenizer_free(tok);
    msgpack_unpacked_destroy(&u);
    msgpack_sbuffer_destroy(&sb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_submit),
        cmocka_unit_test(test_bad_submits_name_the_problem),
        cmocka_unit_test(test_dimension_and_token_limits),
        cmocka_unit_test(test_key_tracks_what_changes_the_result),
        cmocka_unit_test(test_settings_round_trip),
        cmocka_unit_test(test_wire_keys_and_flags_agree),
        cmocka_unit_test(test_limits_lower_defaults_and_jobs_keep_their_settings),
        cmocka_unit_test(test_text_examples),
        cmocka_unit_test(test_choice_examples),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
