/*
 * The conventions every client shares (zmix_client_resolve_address, zmix_client_connect_env):
 * the address given, else $ZMIX_ADDR, else the default socket; the token file $ZMIX_TOKEN_FILE
 * names. Connecting with the token against a real daemon: tests/install/test_install.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "testutil.h"
#include "zmix/client.h"

static void test_resolve_order(void **state)
{
    (void)state;
    char buf[256];
    zmix_error err;
    setenv("XDG_CACHE_HOME", "/x/cache", 1);
    unsetenv("ZMIX_ADDR");
    assert_int_equal(zmix_client_resolve_address(NULL, buf, sizeof buf, &err), 0);
    assert_string_equal(buf, "unix:/x/cache/zmix/zmixd.sock");
    setenv("ZMIX_ADDR", "", 1); /* empty: as unset */
    assert_int_equal(zmix_client_resolve_address("", buf, sizeof buf, &err), 0);
    assert_string_equal(buf, "unix:/x/cache/zmix/zmixd.sock");
    setenv("ZMIX_ADDR", "tcp:127.0.0.1:7878", 1);
    assert_int_equal(zmix_client_resolve_address(NULL, buf, sizeof buf, &err), 0);
    assert_string_equal(buf, "tcp:127.0.0.1:7878");
    /* the address given wins over the variable */
    assert_int_equal(zmix_client_resolve_address("unix:/a.sock", buf, sizeof buf, &err), 0);
    assert_string_equal(buf, "unix:/a.sock");
    assert_int_equal(zmix_client_resolve_address(NULL, buf, 8, &err), ZMIX_ERANGE);
    assert_non_null(strstr(err.msg, "tcp:127.0.0.1:7878"));
    unsetenv("ZMIX_ADDR");
}

static void test_connect_env_token_file(void **state)
{
    (void)state;
    char dir[256], path[300];
    testutil_mkdtemp(dir, sizeof dir);
    zmix_client *c = (zmix_client *)1;
    zmix_error err;
    snprintf(path, sizeof path, "%s/missing-token", dir);
    setenv("ZMIX_TOKEN_FILE", path, 1);
    /* the token file is read before connecting, and its failure names the variable */
    int rc = zmix_client_connect_env("unix:/nonexistent/zmixd.sock", NULL, &c, &err);
    assert_int_equal(rc, ZMIX_ENOTFOUND);
    assert_null(c);
    assert_non_null(strstr(err.msg, "ZMIX_TOKEN_FILE"));
    assert_non_null(strstr(err.msg, path));
    snprintf(path, sizeof path, "%s/empty-token", dir);
    testutil_write_text(path, "\n");
    setenv("ZMIX_TOKEN_FILE", path, 1);
    assert_int_equal(zmix_client_connect_env("unix:/nonexistent/zmixd.sock", NULL, &c, &err),
                     ZMIX_EINVAL);
    /* a token set in the options wins: the file is not read, the connection is tried */
    zmix_client_opts o;
    zmix_client_opts_default(&o);
    o.token = "0123456789abcdef";
    assert_int_equal(zmix_client_connect_env("unix:/nonexistent/zmixd.sock", &o, &c, &err),
                     ZMIX_ECONNECT);
    assert_non_null(strstr(err.msg, "/nonexistent/zmixd.sock"));
    /* ZMIX_ADDR is where it connects when no address is given */
    unsetenv("ZMIX_TOKEN_FILE");
    setenv("ZMIX_ADDR", "unix:/nonexistent/other.sock", 1);
    assert_int_equal(zmix_client_connect_env(NULL, NULL, &c, &err), ZMIX_ECONNECT);
    assert_non_null(strstr(err.msg, "/nonexistent/other.sock"));
    unsetenv("ZMIX_ADDR");
    testutil_rmrf(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resolve_order),
        cmocka_unit_test(test_connect_env_token_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
