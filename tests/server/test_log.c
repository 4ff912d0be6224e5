/* The logger (src/util/log.c): levels filter, lines carry a timestamp and level, and reopen
 * starts a new file after the old one was moved away (what logrotate does before SIGHUP). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/log.h"

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    static char buf[4096];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    return buf;
}

static void test_levels_and_reopen(void **unused)
{
    char dir[] = "/tmp/zmix-test-log-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128], moved[128];
    snprintf(path, sizeof path, "%s/zmixd.log", dir);
    snprintf(moved, sizeof moved, "%s/zmixd.log.1", dir);
    zmix_log *log;
    zmix_error err = {0};
    assert_int_equal(zmix_log_open(path, ZMIX_LOG_INFO, &log, &err), 0);
    ZLOG_INFO(log, "job %d accepted", 7);
    ZLOG_DEBUG(log, "not shown");
    ZLOG_ERROR(log, "disk full");
    char *text = slurp(path);
    assert_non_null(strstr(text, " INFO job 7 accepted\n"));
    assert_non_null(strstr(text, " ERROR disk full\n"));
    assert_null(strstr(text, "not shown"));
    assert_true(text[4] == '-' && text[10] == 'T' && strchr(text, 'Z') != NULL);
    assert_int_equal(rename(path, moved), 0);
    assert_int_equal(zmix_log_reopen(log, &err), 0);
    ZLOG_WARN(log, "after rotation");
    text = slurp(path);
    assert_non_null(strstr(text, " WARN after rotation\n"));
    assert_null(strstr(text, "disk full"));
    zmix_log_close(log);
    unlink(path);
    unlink(moved);
    rmdir(dir);

    zmix_log_level level;
    assert_int_equal(zmix_log_level_parse("debug", &level, &err), 0);
    assert_int_equal(level, ZMIX_LOG_DEBUG);
    assert_int_equal(zmix_log_level_parse("loud", &level, &err), ZMIX_EINVAL);
    assert_non_null(strstr(err.msg, "'loud'"));
    assert_int_equal(zmix_log_open("/nonexistent-dir/x.log", ZMIX_LOG_INFO, &log, &err), ZMIX_EIO);
    assert_non_null(strstr(err.msg, "/nonexistent-dir/x.log"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_levels_and_reopen),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
