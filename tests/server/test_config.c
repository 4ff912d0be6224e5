/* zmixd settings (src/server/config.c): command line, config file, listen addresses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/config.h"
#include "testutil.h"

static int parse(server_config *cfg, int argc, const char **argv, zmix_error *err)
{
    const char *action;
    return config_parse_args(cfg, argc, (char **)argv, &action, err);
}

static void test_args(void **unused)
{
    server_config cfg;
    config_default(&cfg);
    zmix_error err = {0};
    const char *argv[] = {"zmixd",         "--model",     "/m",          "--experts",
                          "a.st,b.st",     "--workers=3", "--listen",    "tcp:127.0.0.1:7878",
                          "--cache-bytes", "16M",         "--cache-dir", "/tmp/zc"};
    assert_int_equal(parse(&cfg, 12, argv, &err), 0);
    assert_string_equal(cfg.model, "/m");
    assert_int_equal(cfg.n_experts, 2);
    assert_string_equal(cfg.experts[1], "b.st");
    assert_int_equal(cfg.workers, 3);
    assert_int_equal(cfg.cache_bytes, 16u << 20);
    assert_int_equal(config_finish(&cfg, &err), 0);
    /* a TCP listener keeps the default socket beside it */
    assert_int_equal(cfg.n_listen, 2);
    assert_string_equal(cfg.listen[0], "tcp:127.0.0.1:7878");
    assert_string_equal(cfg.listen[1], "unix:/tmp/zc/zmixd.sock");
    config_free(&cfg);

    /* a listed Unix socket replaces the default one */
    config_default(&cfg);
    const char *argv3[] = {"zmixd",    "--model",      "/m",       "--experts",       "a.st",
                           "--listen", "unix:/x.sock", "--listen", "tcp:127.0.0.1:1", "--cache-dir",
                           "/tmp/zc"};
    assert_int_equal(parse(&cfg, 11, argv3, &err), 0);
    assert_int_equal(config_finish(&cfg, &err), 0);
    assert_int_equal(cfg.n_listen, 2);
    assert_string_equal(cfg.listen[0], "unix:/x.sock");
    assert_string_equal(cfg.listen[1], "tcp:127.0.0.1:1");
    config_free(&cfg);

    /* four TCP listeners leave no room for the default socket: said so */
    config_default(&cfg);
    const char *argv4[] = {"zmixd",
                           "--model",
                           "/m",
                           "--experts",
                           "a.st",
                           "--listen",
                           "tcp:127.0.0.1:1",
                           "--listen",
                           "tcp:127.0.0.1:2",
                           "--listen",
                           "tcp:127.0.0.1:3",
                           "--listen",
                           "tcp:127.0.0.1:4"};
    assert_int_equal(parse(&cfg, 13, argv4, &err), 0);
    assert_int_equal(config_finish(&cfg, &err), ZMIX_ELIMIT);
    assert_non_null(strstr(err.msg, "no room for the default Unix socket"));
    config_free(&cfg);

    config_default(&cfg);
    const char *argv2[] = {"zmixd", "--model", "/m", "--experts", "a.st", "--cache-dir", "/tmp/zc"};
    assert_int_equal(parse(&cfg, 7, argv2, &err), 0);
    assert_int_equal(config_finish(&cfg, &err), 0);
    assert_string_equal(cfg.listen[0], "unix:/tmp/zc/zmixd.sock");
    assert_true(cfg.workers >= 1);
    config_free(&cfg);

    struct {
        int argc;
        const char *argv[4];
        const char *msg;
    } bad[] = {
        {3, {"zmixd", "--workers", "0"}, "--workers: '0' is not an integer in [1, 1024]"},
        {3, {"zmixd", "--frobnicate", "1"}, "unknown option --frobnicate"},
        {2, {"zmixd", "--model"}, "--model needs a value"},
        {3, {"zmixd", "--experts", "a,,b"}, "--experts: empty path in 'a,,b'"},
        {3, {"zmixd", "--adapt", "ffn"}, "--adapt: 'ffn', expected mlp, attn or all"},
        {3,
         {"zmixd", "--listen", "tcp:1.2.3.4:99999"},
         "--listen tcp:1.2.3.4:99999: port must be 1..65535"},
        {3,
         {"zmixd", "--listen", "http://x"},
         "--listen http://x: expected unix:PATH or tcp:HOST:PORT"},
        {2, {"zmixd", "stray"}, "unexpected argument 'stray'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        config_default(&cfg);
        err.msg[0] = 0;
        assert_int_not_equal(parse(&cfg, bad[i].argc, bad[i].argv, &err), 0);
        if (strcmp(err.msg, bad[i].msg)) fail_msg("case %zu: '%s'", i, err.msg);
        config_free(&cfg);
    }
    config_default(&cfg);
    assert_int_equal(config_finish(&cfg, &err), ZMIX_EINVAL);
    assert_string_equal(err.msg, "--model is required");
}

/* The connection budgets and the cache's modes (PROTOCOL §6, docs/persistence.md). */
static void test_auth_and_mode_options(void **unused)
{
    server_config cfg;
    config_default(&cfg);
    zmix_error err = {0};
    assert_int_equal(cfg.auth_timeout_ms, 10000);
    assert_int_equal(cfg.max_unauth_connections, 16);
    assert_int_equal(cfg.group_readable, 0);
    const char *argv[] = {"zmixd", "--group-readable", "--auth-timeout-ms", "2500",
                          "--max-unauth-connections=4"};
    assert_int_equal(parse(&cfg, 5, argv, &err), 0);
    assert_int_equal(cfg.group_readable, 1);
    assert_int_equal(cfg.auth_timeout_ms, 2500);
    assert_int_equal(cfg.max_unauth_connections, 4);
    assert_int_equal(config_set(&cfg, "group-readable", "no", &err), 0);
    assert_int_equal(cfg.group_readable, 0);
    assert_int_not_equal(config_set(&cfg, "group-readable", "maybe", &err), 0);
    assert_string_equal(err.msg, "--group-readable: 'maybe', expected yes or no");
    assert_int_not_equal(config_set(&cfg, "auth-timeout-ms", "50", &err), 0);
    assert_string_equal(err.msg, "--auth-timeout-ms: '50' is not an integer in [100, 600000]");
    assert_int_not_equal(config_set(&cfg, "max-unauth-connections", "0", &err), 0);
    /* The memory plan's limit and the factors' dtype. */
    assert_true(cfg.memory_limit == 0 && cfg.factor_dtype == ZMIX_FACTORS_AUTO);
    assert_int_equal(config_set(&cfg, "memory-limit", "3G", &err), 0);
    assert_true(cfg.memory_limit == (size_t)3 << 30);
    assert_int_equal(config_set(&cfg, "factor-dtype", "bf16", &err), 0);
    assert_int_equal(cfg.factor_dtype, ZMIX_FACTORS_BF16);
    assert_int_not_equal(config_set(&cfg, "factor-dtype", "f64", &err), 0);
    assert_non_null(strstr(err.msg, "--factor-dtype"));
    assert_non_null(strstr(err.msg, "f64"));
    /* What the runtime keeps to apply W'. */
    assert_int_equal(cfg.wprime, ZMIX_WPRIME_KEEP_AUTO);
    assert_int_equal(config_set(&cfg, "wprime", "factored", &err), 0);
    assert_int_equal(cfg.wprime, ZMIX_WPRIME_KEEP_FACTORS);
    assert_int_not_equal(config_set(&cfg, "wprime", "linear", &err), 0);
    assert_string_equal(err.msg, "--wprime: W' mode 'linear': expected auto or factored");
    config_free(&cfg);
}

static void test_config_file(void **unused)
{
    char path[] = "/tmp/zmix-test-config-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fprintf(f, "# zmixd settings\nmodel = /models/x\n\n  workers=2   # two\nexperts = a.st\n"
               "max-jobs = 0\n");
    fclose(f);
    server_config cfg;
    config_default(&cfg);
    zmix_error err = {0};
    const char *argv[] = {"zmixd", "--config", path};
    assert_int_not_equal(parse(&cfg, 3, argv, &err), 0);
    char expect[256];
    snprintf(expect, sizeof expect, "config %s:6: --max-jobs: '0' is not an integer in [1, 100000]",
             path);
    assert_string_equal(err.msg, expect);
    /* Settings before the bad line were applied; later command-line options override. */
    assert_string_equal(cfg.model, "/models/x");
    assert_int_equal(cfg.workers, 2);
    config_free(&cfg);
    f = fopen(path, "w");
    fprintf(f, "model = /models/x\nworkers = 2\nexperts = a.st\n");
    fclose(f);
    config_default(&cfg);
    const char *argv2[] = {"zmixd", "--config", path, "--workers", "5"};
    assert_int_equal(parse(&cfg, 5, argv2, &err), 0);
    assert_int_equal(cfg.workers, 5);
    config_free(&cfg);
    unlink(path);
}

/* The per-job limits are one table: the daemon's defaults, the options that set them (with the
 * table's range in the message) and the numbers the protocol and the daemon's manual state. */
static void test_job_limits_table(void **unused)
{
    server_config cfg;
    config_default(&cfg);
    zmix_error err = {0};
    assert_int_equal(cfg.limits.max_pop, 1024);
    assert_int_equal(cfg.limits.max_generations, 1000);
    assert_int_equal(cfg.limits.max_job_bytes, (size_t)256 << 20);
    job_limits lim;
    job_limits_default(&lim);
    assert_memory_equal(&lim, &cfg.limits, sizeof lim);
    assert_int_equal(config_set(&cfg, "max-pop", "8", &err), 0);
    assert_int_equal(config_set(&cfg, "job-memory", "2M", &err), 0);
    assert_int_equal(cfg.limits.max_pop, 8);
    assert_int_equal(cfg.limits.max_job_bytes, (size_t)2 << 20);
    assert_int_equal(config_set(&cfg, "max-pop", "1", &err), ZMIX_EINVAL);
    assert_string_equal(err.msg, "--max-pop: '1' is not an integer in [2, 1000000]");
    assert_int_equal(cfg.limits.max_pop, 8);
    config_free(&cfg);

    const char *src = getenv("ZMIX_SOURCE_DIR");
    if (!src) skip();
    char path[1024];
    size_t len;
    snprintf(path, sizeof path, "%s/proto/PROTOCOL.md", src);
    char *protocol = testutil_read_file(path, &len);
    snprintf(path, sizeof path, "%s/docs/daemon.md", src);
    char *manual = testutil_read_file(path, &len);
    for (int i = 0; i < JOB_LIMIT_OPTIONS; i++) {
        const job_limit_option *o = &job_limit_options[i];
        char def[32], key[32], want[96];
        job_limit_format(o, o->default_value, def, sizeof def);
        snprintf(key, sizeof key, "%s", o->name);
        for (char *c = key; *c; c++)
            if (*c == '-') *c = '_';
        snprintf(want, sizeof want, "`%s` (default %s", key, def);
        if (!strstr(protocol, want)) fail_msg("proto/PROTOCOL.md does not say %s)", want);
        snprintf(want, sizeof want, "| `--%s N` | %s |", o->name, def);
        if (!strstr(manual, want)) fail_msg("docs/daemon.md has no row %s", want);
    }
    free(protocol);
    free(manual);
}

static void test_listen_addresses(void **unused)
{
    listen_addr a;
    zmix_error err = {0};
    assert_int_equal(config_parse_listen("tcp:127.0.0.1:7878", &a, &err), 0);
    assert_true(a.is_tcp && a.loopback && a.port == 7878);
    assert_int_equal(config_parse_listen("tcp:0.0.0.0:7878", &a, &err), 0);
    assert_false(a.loopback);
    assert_int_equal(config_parse_listen("tcp:[::1]:80", &a, &err), 0);
    assert_true(a.loopback);
    assert_string_equal(a.host, "::1");
    assert_int_equal(config_parse_listen("unix:/run/z.sock", &a, &err), 0);
    assert_false(a.is_tcp);
    assert_string_equal(a.path, "/run/z.sock");
    char longpath[200] = "unix:/";
    memset(longpath + 6, 'a', 150);
    longpath[156] = 0;
    assert_int_equal(config_parse_listen(longpath, &a, &err), ZMIX_ERANGE);
}

static void test_store_urls(void **unused)
{
    store_addr a;
    zmix_error err = {0};
    assert_int_equal(config_parse_store("local", &a, &err), 0);
    assert_false(a.redis);
    assert_int_equal(config_parse_store("redis://10.0.0.5:6390/3", &a, &err), 0);
    assert_true(a.redis && a.port == 6390 && a.db == 3);
    assert_string_equal(a.host, "10.0.0.5");
    assert_int_equal(config_parse_store("redis://cache.internal", &a, &err), 0);
    assert_true(a.port == 6379 && a.db == 0);
    assert_string_equal(a.host, "cache.internal");
    assert_int_equal(config_parse_store("redis://[::1]:7000/", &a, &err), 0);
    assert_true(a.port == 7000 && a.db == 0);
    assert_string_equal(a.host, "::1");
    const char *bad[] = {"redis://",      "redis://h:0",  "redis://h:99999", "redis://h:12x",
                         "redis://h/abc", "redis://h/-1", "redis://[::1",    "memcached://h",
                         "redis://h:1/2/3"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        err.msg[0] = '\0';
        assert_int_equal(config_parse_store(bad[i], &a, &err), ZMIX_EINVAL);
        assert_non_null(strstr(err.msg, bad[i])); /* the message names what was given */
    }
    /* Credentials are refused and never echoed. */
    assert_int_equal(config_parse_store("redis://u:hunter2@h:1", &a, &err), ZMIX_EINVAL);
    assert_null(strstr(err.msg, "hunter2"));
    assert_non_null(strstr(err.msg, "--store-password-file"));
    /* A password file without a Redis store is a mistake worth saying. */
    server_config cfg;
    config_default(&cfg);
    assert_string_equal(cfg.store, "local");
    assert_int_equal(config_set(&cfg, "model", "m", &err), 0);
    assert_int_equal(config_set(&cfg, "experts", "a.st", &err), 0);
    assert_int_equal(config_set(&cfg, "store-password-file", "/p", &err), 0);
    assert_int_equal(config_finish(&cfg, &err), ZMIX_EINVAL);
    assert_non_null(strstr(err.msg, "--store redis://"));
    assert_int_equal(config_set(&cfg, "store", "redis://127.0.0.1:6379", &err), 0);
    assert_int_equal(config_finish(&cfg, &err), 0);
    config_free(&cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_args),
        cmocka_unit_test(test_config_file),
        cmocka_unit_test(test_job_limits_table),
        cmocka_unit_test(test_listen_addresses),
        cmocka_unit_test(test_auth_and_mode_options),
        cmocka_unit_test(test_store_urls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
