/* The tenants file (daemon/tenants.c) and scoped task names (store/task_name.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/tenants.h"

#define TOK_A "aaaaaaaaaaaaaaaa-1"
#define TOK_B "bbbbbbbbbbbbbbbb-2"

static int parse(const char *text, tenant_table *t, zmix_error *err)
{
    return tenants_parse(text, strlen(text), "tenants.txt", 3, 7, t, err);
}

static void test_parse_good_file(void **unused)
{
    (void)unused;
    tenant_table t;
    zmix_error err = {0};
    assert_int_equal(parse("# comment\n\nacme " TOK_A " max_running=1\n"
                           "  bolt\t" TOK_B " max_queued=0 max_running=2 # trailing\n",
                           &t, &err),
                     0);
    assert_int_equal(t.n, 2);
    assert_string_equal(t.v[0].name, "acme");
    assert_int_equal(t.v[0].max_running, 1);
    assert_int_equal(t.v[0].max_queued, 7); /* the default */
    assert_string_equal(t.v[1].name, "bolt");
    assert_int_equal(t.v[1].max_running, 2);
    assert_int_equal(t.v[1].max_queued, 0);
    assert_ptr_equal(tenants_match(&t, TOK_B, strlen(TOK_B)), &t.v[1]);
    assert_ptr_equal(tenants_match(&t, TOK_A, strlen(TOK_A)), &t.v[0]);
    assert_null(tenants_match(&t, TOK_A, strlen(TOK_A) - 1)); /* a prefix is not the token */
    assert_null(tenants_match(&t, TOK_A "x", strlen(TOK_A) + 1));
    assert_null(tenants_match(&t, "", 0));
    tenants_free(&t);
}

static void test_bad_files_name_line_and_field(void **unused)
{
    (void)unused;
    static const struct {
        const char *text, *words;
    } bad[] = {
        {"acme\n", "tenants.txt:1: expected 'NAME TOKEN"},
        {"ac.me " TOK_A "\n", "tenants.txt:1: tenant name: byte 0x2e"},
        {"acme@x " TOK_A "\n", "byte 0x40"},
        {"acme short\n", "tenants.txt:1: tenant acme: token of 5 bytes"},
        {"acme " TOK_A "\nbolt " TOK_A "\n",
         "tenants.txt:2: tenant bolt has the token of tenant acme"},
        {"acme " TOK_A "\nacme " TOK_B "\n", "tenants.txt:2: tenant acme listed twice"},
        {"acme " TOK_A " max_running=-1\n", "'max_running=-1' is not max_running=N"},
        {"acme " TOK_A " speed=3\n", "'speed=3' is not"},
        {"# nobody\n", "no tenant in it"},
        {"acme aaaaaaaaaaaaaaaa\x01\n", "not printable ASCII"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        tenant_table t;
        zmix_error err = {0};
        assert_int_not_equal(parse(bad[i].text, &t, &err), 0);
        if (!strstr(err.msg, bad[i].words)) fail_msg("case %zu: '%s'", i, err.msg);
        assert_null(strstr(err.msg, TOK_A)); /* tokens are never quoted */
        assert_int_equal(t.n, 0);
    }
    tenant_table t;
    zmix_error err = {0};
    static const char with_nul[] = "acme " TOK_A "\0x\n";
    assert_int_not_equal(tenants_parse(with_nul, sizeof with_nul - 1, "f", 0, 0, &t, &err), 0);
    assert_non_null(strstr(err.msg, "NUL"));
}

static void test_load_refuses_a_file_others_can_read(void **unused)
{
    (void)unused;
    char path[] = "/tmp/zmix-tenants-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "acme " TOK_A "\n", strlen("acme " TOK_A "\n")),
                     (ssize_t)strlen("acme " TOK_A "\n"));
    close(fd);
    tenant_table t;
    zmix_error err = {0};
    chmod(path, 0600);
    assert_int_equal(tenants_load(path, 0, 0, &t, &err), 0);
    assert_int_equal(t.n, 1);
    tenants_free(&t);
    chmod(path, 0640);
    assert_int_equal(tenants_load(path, 0, 0, &t, &err), ZMIX_EAUTH);
    assert_non_null(strstr(err.msg, "chmod 600"));
    assert_non_null(strstr(err.msg, "640"));
    unlink(path);
    assert_int_equal(tenants_load(path, 0, 0, &t, &err), ZMIX_EIO);
}

static void test_scoped_task_names(void **unused)
{
    (void)unused;
    zmix_error err = {0};
    assert_int_equal(task_name_check("acme@greet.v2", &err), 0);
    assert_int_equal(task_name_check("@greet", &err), ZMIX_EINVAL);
    assert_int_equal(task_name_check("acme@", &err), ZMIX_EINVAL);
    assert_int_equal(task_name_check("acme@.hidden", &err), ZMIX_EINVAL);
    assert_int_equal(task_name_check("a@b@c", &err), ZMIX_EINVAL);
    assert_int_equal(task_name_check("ac.me@x", &err), ZMIX_EINVAL);
    char t[TENANT_NAME_MAX + 1];
    task_name_tenant("acme@greet", t);
    assert_string_equal(t, "acme");
    assert_string_equal(task_name_local("acme@greet"), "greet");
    task_name_tenant("plain", t);
    assert_string_equal(t, "");
    assert_string_equal(task_name_local("plain"), "plain");
    char longest[TASK_NAME_MAX + 2];
    memset(longest, 'x', sizeof longest);
    memcpy(longest, "acme@", 5);
    longest[TASK_NAME_MAX] = '\0';
    assert_int_equal(task_name_check(longest, &err), 0);
    longest[TASK_NAME_MAX] = 'x';
    longest[TASK_NAME_MAX + 1] = '\0';
    assert_int_equal(task_name_check(longest, &err), ZMIX_EINVAL);
}

static void test_token_compare(void **unused)
{
    (void)unused;
    assert_true(tenant_token_equal("abc", 3, "abc", 3));
    assert_false(tenant_token_equal("abc", 3, "abd", 3));
    assert_false(tenant_token_equal("abc", 3, "ab", 2));
    assert_false(tenant_token_equal("abc", 3, "abcd", 4));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_good_file),
        cmocka_unit_test(test_bad_files_name_line_and_field),
        cmocka_unit_test(test_load_refuses_a_file_others_can_read),
        cmocka_unit_test(test_scoped_task_names),
        cmocka_unit_test(test_token_compare),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
