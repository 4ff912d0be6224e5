/*
 * The pure parts of the client side: address parsing, the default socket, JSON rendering of
 * results, status decoding, the safetensors writer, progress lines and the SVG plot helpers.
 * (The network paths are exercised against a real daemon in tests/e2e/test_cli_*.py.)
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../src/cli/progress.h"
#include "../../src/cli/svg_plot.h"
#include "../../src/client/client_internal.h"

static void test_addr_forms(void **state)
{
    zmix_client_addr a;
    zmix_error err;
    assert_int_equal(zmix_client_addr_parse("unix:/tmp/x.sock", &a, &err), 0);
    assert_int_equal(a.kind, ZMIX_ADDR_UNIX);
    assert_string_equal(a.path, "/tmp/x.sock");
    assert_int_equal(zmix_client_addr_parse("./rel/x.sock", &a, &err), 0);
    assert_int_equal(a.kind, ZMIX_ADDR_UNIX);
    assert_string_equal(a.path, "./rel/x.sock");
    assert_int_equal(zmix_client_addr_parse("tcp:127.0.0.1:7878", &a, &err), 0);
    assert_int_equal(a.kind, ZMIX_ADDR_TCP);
    assert_string_equal(a.host, "127.0.0.1");
    assert_string_equal(a.port, "7878");
    assert_int_equal(zmix_client_addr_parse("tcp:[::1]:80", &a, &err), 0);
    assert_string_equal(a.host, "::1");
    assert_string_equal(a.port, "80");
    assert_int_equal(zmix_client_addr_parse("tcp:localhost:00065535", &a, &err), 0);
    assert_string_equal(a.port, "65535");
}

static void test_addr_errors(void **state)
{
    zmix_client_addr a;
    zmix_error err;
    assert_int_equal(zmix_client_addr_parse("tcp:host", &a, &err), ZMIX_EINVAL);
    assert_non_null(strstr(err.msg, "tcp:HOST:PORT"));
    assert_int_equal(zmix_client_addr_parse("tcp:host:0", &a, &err), ZMIX_EINVAL);
    assert_non_null(strstr(err.msg, "port '0'"));
    assert_int_equal(zmix_client_addr_parse("tcp:host:65536", &a, &err), ZMIX_EINVAL);
    assert_int_equal(zmix_client_addr_parse("tcp:host:12x", &a, &err), ZMIX_EINVAL);
    assert_int_equal(zmix_client_addr_parse("tcp::80", &a, &err), ZMIX_EINVAL);
    assert_non_null(strstr(err.msg, "host is empty"));
    assert_int_equal(zmix_client_addr_parse("tcp:[::1]80", &a, &err), ZMIX_EINVAL);
    assert_int_equal(zmix_client_addr_parse("zmixd.sock", &a, &err), ZMIX_EINVAL);
    assert_non_null(strstr(err.msg, "'zmixd.sock'"));
    assert_int_equal(zmix_client_addr_parse("unix:", &a, &err), ZMIX_EINVAL);
    assert_int_equal(zmix_client_addr_parse("", &a, &err), ZMIX_EINVAL);
    char longp[200];
    memset(longp, 'a', sizeof longp);
    memcpy(longp, "unix:/", 6);
    longp[sizeof longp - 1] = '\0';
    assert_int_equal(zmix_client_addr_parse(longp, &a, &err), ZMIX_ERANGE);
}

static void test_default_address(void **state)
{
    char buf[256];
    char *old_xdg = getenv("XDG_CACHE_HOME") ? strdup(getenv("XDG_CACHE_HOME")) : NULL;
    char *old_home = getenv("HOME") ? strdup(getenv("HOME")) : NULL;
    setenv("XDG_CACHE_HOME", "/x/cache", 1);
    assert_int_equal(zmix_client_default_address(buf, sizeof buf), 0);
    assert_string_equal(buf, "unix:/x/cache/zmix/zmixd.sock");
    unsetenv("XDG_CACHE_HOME");
    setenv("HOME", "/home/u", 1);
    assert_int_equal(zmix_client_default_address(buf, sizeof buf), 0);
    assert_string_equal(buf, "unix:/home/u/.cache/zmix/zmixd.sock");
    unsetenv("HOME");
    assert_int_equal(zmix_client_default_address(buf, sizeof buf), 0);
    char want[64];
    snprintf(want, sizeof want, "unix:/tmp/zmix-%ld/zmixd.sock", (long)getuid());
    assert_string_equal(buf, want);
    assert_int_equal(zmix_client_default_address(buf, 8), ZMIX_ERANGE);
    if (old_xdg) setenv("XDG_CACHE_HOME", old_xdg, 1);
    if (old_home) setenv("HOME", old_home, 1);
    free(old_xdg);
    free(old_home);
}

static void test_strerror(void **state)
{
    assert_string_equal(zmix_client_strerror(ZMIX_ECONNECT), "ECONNECT");
    assert_string_equal(zmix_client_strerror(ZMIX_ETIMEDOUT), "ETIMEDOUT");
    assert_string_equal(zmix_client_strerror(ZMIX_ENOTFOUND), "ENOTFOUND");
}

/* Packs with msgpack-c and unpacks into obj (zone kept in *u). */
static void unpack(msgpack_sbuffer *sb, msgpack_unpacked *u)
{
    msgpack_unpacked_init(u);
    size_t off = 0;
    assert_int_equal(msgpack_unpack_next(u, sb->data, sb->size, &off), MSGPACK_UNPACK_SUCCESS);
}

static void test_render_json(void **state)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 7);
    zcli_pack_str(&pk, "s");
    zcli_pack_str(&pk, "a\"b\\c\n\x01");
    zcli_pack_str(&pk, "n");
    msgpack_pack_int(&pk, -3);
    zcli_pack_str(&pk, "u");
    msgpack_pack_uint64(&pk, 18446744073709551615ull);
    zcli_pack_str(&pk, "f");
    msgpack_pack_double(&pk, 0.5);
    zcli_pack_str(&pk, "nan");
    msgpack_pack_double(&pk, NAN);
    zcli_pack_str(&pk, "z");
    float zf[2] = {1.5f, -2.0f};
    unsigned char raw[8];
    memcpy(raw, zf, 8); /* the test host is little-endian, like the wire */
    msgpack_pack_bin(&pk, 8);
    msgpack_pack_bin_body(&pk, raw, 8);
    zcli_pack_str(&pk, "a");
    msgpack_pack_array(&pk, 3);
    msgpack_pack_nil(&pk);
    msgpack_pack_true(&pk);
    msgpack_pack_float(&pk, 0.25f);
    msgpack_unpacked u;
    unpack(&sb, &u);
    char *json = NULL;
    zmix_error err;
    assert_int_equal(zcli_render_json(&u.data, &json, &err), 0);
    assert_string_equal(json,
                        "{\"s\":\"a\\\"b\\\\c\\n\\u0001\",\"n\":-3,\"u\":18446744073709551615,"
                        "\"f\":0.5,\"nan\":null,\"z\":[1.5,-2],\"a\":[null,true,0.25]}");
    free(json);
    msgpack_unpacked_destroy(&u);
    msgpack_sbuffer_destroy(&sb);
}

static void pack_score(msgpack_packer *pk, const char *key, double acc, double ll)
{
    zcli_pack_str(pk, key);
    msgpack_pack_map(pk, 2);
    zcli_pack_str(pk, "accuracy");
    msgpack_pack_double(pk, acc);
    zcli_pack_str(pk, "loglik");
    msgpack_pack_double(pk, ll);
}

static void test_decode_status(void **state)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 9);
    zcli_pack_str(&pk, "job");
    msgpack_pack_uint64(&pk, 42);
    zcli_pack_str(&pk, "task");
    zcli_pack_str(&pk, "sent");
    zcli_pack_str(&pk, "state");
    zcli_pack_str(&pk, "running");
    zcli_pack_str(&pk, "generation");
    msgpack_pack_int(&pk, 2);
    pack_score(&pk, "best", 0.75, -1.25);
    zcli_pack_str(&pk, "best_alpha");
    msgpack_pack_array(&pk, 2);
    msgpack_pack_float(&pk, 0.5f);
    msgpack_pack_double(&pk, 0.25);
    zcli_pack_str(&pk, "stop_reason");
    msgpack_pack_nil(&pk);
    zcli_pack_str(&pk, "unknown_future_field");
    msgpack_pack_int(&pk, 1);
    zcli_pack_str(&pk, "history");
    msgpack_pack_array(&pk, 1);
    msgpack_pack_map(&pk, 6);
    zcli_pack_str(&pk, "generation");
    msgpack_pack_int(&pk, 1);
    pack_score(&pk, "best", 0.5, -2);
    pack_score(&pk, "elite_mean", 0.25, -3);
    pack_score(&pk, "pop_mean", 0.125, -4);
    zcli_pack_str(&pk, "mean");
    msgpack_pack_array(&pk, 2);
    msgpack_pack_double(&pk, 0.1);
    msgpack_pack_double(&pk, 0.2);
    zcli_pack_str(&pk, "std");
    msgpack_pack_array(&pk, 2);
    msgpack_pack_double(&pk, 0.3);
    msgpack_pack_double(&pk, 0.4);
    msgpack_unpacked u;
    unpack(&sb, &u);
    zmix_client_status st;
    zmix_error err;
    assert_int_equal(zcli_decode_status(&u.data, &st, &err), 0);
    assert_true(st.job == 42);
    assert_string_equal(st.task, "sent");
    assert_string_equal(st.state, "running");
    assert_int_equal(st.generation, 2);
    assert_true(st.has_best);
    assert_true(st.best.accuracy == 0.75 && st.best.loglik == -1.25);
    assert_int_equal(st.n_best_alpha, 2);
    assert_true(st.best_alpha[0] == 0.5f && st.best_alpha[1] == 0.25f);
    assert_string_equal(st.stop_reason, "");
    assert_int_equal(st.n_history, 1);
    assert_int_equal(st.history[0].dim, 2);
    assert_true(st.history[0].elite_mean.accuracy == 0.25);
    assert_true(st.history[0].pop_mean.loglik == -4);
    assert_true(st.history[0].std[1] == 0.4);
    assert_false(zmix_client_state_is_final(st.state));
    assert_true(zmix_client_state_is_final("cancelled"));
    zmix_client_status_free(&st);
    msgpack_unpacked_destroy(&u);

    /* A known field with the wrong type is an error naming it, not a silent 0. */
    msgpack_sbuffer_clear(&sb);
    msgpack_pack_map(&pk, 1);
    zcli_pack_str(&pk, "generation");
    zcli_pack_str(&pk, "three");
    unpack(&sb, &u);
    assert_int_equal(zcli_decode_status(&u.data, &st, &err), ZMIX_EFORMAT);
    assert_non_null(strstr(err.msg, "'generation'"));
    msgpack_unpacked_destroy(&u);
    msgpack_sbuffer_destroy(&sb);
}

static void test_save_safetensors(void **state)
{
    float z0[3] = {1.0f, 0.5f, 2.0f}, z1[2] = {-1.0f, 3.25f};
    zmix_client_matrix mats[2] = {
        {.name = "model.layers.0.mlp.up_proj.weight", .rank = 3, .z = z0},
        {.name = "model.layers.0.mlp.down_proj.weight", .rank = 2, .z = z1}};
    float alpha[2] = {0.25f, 0.75f};
    zmix_client_result r = {
        .task = "t", .key = "abc", .n_alpha = 2, .alpha = alpha, .n_matrices = 2, .matrices = mats};
    char path[] = "/tmp/zmix_st_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    zmix_error err;
    assert_int_equal(zmix_client_result_save_safetensors(&r, path, &err), 0);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    unsigned char n8[8];
    assert_int_equal(fread(n8, 1, 8, f), 8);
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++) hlen |= (uint64_t)n8[i] << (8 * i);
    assert_int_equal(hlen % 8, 0);
    char *h = calloc(hlen + 1, 1);
    assert_int_equal(fread(h, 1, hlen, f), hlen);
    assert_non_null(strstr(h, "\"model.layers.0.mlp.up_proj.weight\":{\"dtype\":\"F32\","
                              "\"shape\":[3],\"data_offsets\":[0,12]}"));
    assert_non_null(strstr(h, "\"data_offsets\":[12,20]"));
    assert_non_null(strstr(h, "\"alpha\":\"0.25,0.75\""));
    float data[5];
    assert_int_equal(fread(data, 4, 5, f), 5);
    assert_true(data[0] == 1.0f && data[2] == 2.0f && data[3] == -1.0f && data[4] == 3.25f);
    assert_int_equal(fgetc(f), EOF);
    fclose(f);
    free(h);
    unlink(path);
    mats[1].z = NULL; /* fetched without vectors */
    assert_int_equal(zmix_client_result_save_safetensors(&r, path, &err), ZMIX_EINVAL);
    assert_non_null(strstr(err.msg, "no z' vectors"));
}

static void test_progress_lines(void **state)
{
    zmix_client_status s = {.job = 7,
                            .generation = 12,
                            .max_generations = 50,
                            .has_best = 1,
                            .best = {0.75, -1.234567},
                            .evaluations = 800,
                            .elapsed = 2.0};
    snprintf(s.state, sizeof s.state, "running");
    char buf[512];
    progress_format_line(buf, sizeof buf, &s, NULL);
    assert_string_equal(buf,
                        "job 7: generation 12/50: best acc 0.7500 loglik -1.23457, 400 eval/s");
    progress_format_bar(buf, sizeof buf, &s, 100, NULL);
    /* 40 columns of bar: 12/50 of them filled */
    assert_int_equal(strspn(buf + 1, "#"), 40 * 12 / 50);
    assert_int_equal(buf[41], ']');
    assert_non_null(strstr(buf, "12/50  best acc 0.7500 loglik  -1.2346     400 eval/s"));
    assert_true(strlen(buf) < 100);
    /* the line keeps its width from the first generation to the last, with or without a
     * best so far, at any rate: on a 70-column terminal the bar is the same every time */
    {
        zmix_client_status v = s;
        size_t widths[4];
        char line[256];
        v.generation = 0, v.has_best = 0, v.elapsed = 0;
        progress_format_bar(line, sizeof line, &v, 70, NULL);
        widths[0] = strlen(line);
        v.generation = 9, v.has_best = 1, v.elapsed = 1, v.evaluations = 12;
        progress_format_bar(line, sizeof line, &v, 70, NULL);
        widths[1] = strlen(line);
        v.generation = 50, v.best.loglik = -10.5, v.evaluations = 123456;
        progress_format_bar(line, sizeof line, &v, 70, NULL);
        widths[2] = strlen(line);
        v.best.accuracy = 1.0, v.best.loglik = -0.001;
        progress_format_bar(line, sizeof line, &v, 70, NULL);
        widths[3] = strlen(line);
        for (int i = 1; i < 4; i++) assert_int_equal(widths[i], widths[0]);
    }
    progress_format_bar(buf, sizeof buf, &s, 70, NULL); /* narrower terminal: the bar shrinks */
    assert_true(strlen(buf) < 70);
    assert_int_equal(buf[0], '[');
    progress_format_bar(buf, sizeof buf, &s, 40, NULL); /* too narrow for a bar: numbers, cut */
    assert_true(strlen(buf) < 40);
    assert_int_equal(strncmp(buf, "12/50  best acc", 15), 0);
    s.has_best = 0;
    s.generation = 0;
    s.elapsed = 0;
    progress_format_bar(buf, sizeof buf, &s, 100, NULL);
    assert_non_null(strstr(buf, " 0/50  best -  "));
    assert_non_null(strstr(buf, "       0 eval/s"));
    assert_true(progress_evals_per_s(&s) == 0);
}

static void test_expert_colors(void **state)
{
    (void)state;
    /* an expert named after a colour is drawn in it; others take the palette */
    assert_string_equal(plot_expert_color("red", 3), "#d62728");
    assert_string_equal(plot_expert_color("Blue", 0), "#1f77b4");
    assert_string_equal(plot_expert_color("green", 0), "#2ca02c");
    assert_string_equal(plot_expert_color("gold", 1), "#d4a017");
    assert_string_equal(plot_expert_color("math", 1), "#ff7f0e");
    assert_string_equal(plot_expert_color("redish", 0), "#1f77b4");
    assert_string_equal(plot_expert_color("re", 0), "#1f77b4");
}

static void test_ticks_and_scale(void **state)
{
    double t[32], step;
    int n = plot_nice_ticks(0, 1, 6, t, 32, &step);
    assert_int_equal(n, 6);
    assert_true(fabs(step - 0.2) < 1e-12);
    assert_true(t[0] == 0 && fabs(t[5] - 1) < 1e-12);
    n = plot_nice_ticks(-9.3, -1.2, 6, t, 32, &step);
    assert_true(step == 2);
    assert_true(t[0] == -8 && t[n - 1] == -2);
    n = plot_nice_ticks(1, 50, 10, t, 32, &step);
    assert_true(step == 10 && t[0] == 10 && t[n - 1] == 50);
    n = plot_nice_ticks(3, 3, 6, t, 32, &step); /* degenerate: one tick */
    assert_int_equal(n, 1);
    assert_true(t[0] == 3);
    n = plot_nice_ticks(-0.1, 0.1, 3, t, 32, &step);
    for (int i = 0; i < n; i++) assert_false(signbit(t[i]) && t[i] == 0); /* no -0 */
    assert_true(plot_scale(5, 0, 10, 100, 200) == 150);
    assert_true(plot_scale(0, 0, 10, 300, 100) == 300); /* y axes grow upwards */
    assert_true(plot_scale(7, 7, 7, 100, 200) == 150);
    double a[3] = {1, NAN, 3}, lo, hi;
    plot_range(a, NULL, NULL, 3, &lo, &hi);
    assert_true(fabs(lo - 0.9) < 1e-12 && fabs(hi - 3.1) < 1e-12);
    double none[2] = {NAN, INFINITY};
    plot_range(none, NULL, NULL, 2, &lo, &hi);
    assert_true(lo == 0 && hi == 1);
}

static int count(const char *s, const char *needle)
{
    int n = 0;
    for (const char *p = s; (p = strstr(p, needle)); p++) n++;
    return n;
}

static void test_svg_series(void **state)
{
    enum { G = 4, K = 2 };
    int gen[G] = {1, 2, 3, 4};
    double acc[G] = {0.25, 0.5, 0.5, 1}, ll[G] = {-3, -2, NAN, -1};
    double am[G * K] = {0.5, 0.5, 0.6, 0.4, 0.7, 0.3, 0.8, 0.2}, as[G * K];
    for (int i = 0; i < G * K; i++) as[i] = 0.1;
    const char *names[K] = {"math", "c<o>de"};
    plot_data d = {.n_gen = G,
                   .generation = gen,
                   .best_acc = acc,
                   .elite_acc = acc,
                   .pop_acc = acc,
                   .best_ll = ll,
                   .elite_ll = ll,
                   .pop_ll = ll,
                   .n_experts = K,
                   .expert_names = names,
                   .alpha_mean = am,
                   .alpha_std = as,
                   .n_matrices_averaged = 15,
                   .title = "t & t"};
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_int_equal(plot_svg_write(f, &d), 0);
    fclose(f);
    assert_int_equal(count(buf, "<polyline class=\"series\""), 6 + K);
    assert_int_equal(count(buf, "<polygon class=\"band\""), K);
    assert_non_null(strstr(buf, "data-series=\"alpha:c&lt;o&gt;de\""));
    assert_non_null(strstr(buf, "averaged over 15 matrices"));
    assert_non_null(strstr(buf, "<title>t &amp; t</title>"));
    /* the NaN loglik of generation 3 is left out: 3 points in each loglik line */
    const char *p = strstr(buf, "data-series=\"loglik:best\"");
    assert_non_null(p);
    p = strstr(p, "points=\"");
    assert_int_equal(count(p, ",") - count(strstr(p, "\"/>"), ","), 3);
    assert_non_null(strstr(buf, "exact match"));
    free(buf);

    /* A multiple-choice search: its second number is the answer's margin, named so. */
    d.choice = 1;
    f = open_memstream(&buf, &len);
    assert_int_equal(plot_svg_write(f, &d), 0);
    fclose(f);
    assert_non_null(strstr(buf, "multiple choice"));
    assert_non_null(strstr(buf, "data-series=\"margin:best\""));
    assert_null(strstr(buf, "loglik:best"));
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_addr_forms),       cmocka_unit_test(test_addr_errors),
        cmocka_unit_test(test_default_address),  cmocka_unit_test(test_strerror),
        cmocka_unit_test(test_render_json),      cmocka_unit_test(test_decode_status),
        cmocka_unit_test(test_save_safetensors), cmocka_unit_test(test_progress_lines),
        cmocka_unit_test(test_ticks_and_scale),  cmocka_unit_test(test_expert_colors),
        cmocka_unit_test(test_svg_series),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
