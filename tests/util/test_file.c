/* The one atomic writer, the one whole-file reader and the token-file reader (util/file.h):
 * replacing a file, the caller's mode, entries planted under the temporary name (a symbolic
 * link to a victim, a regular file) and a link at the final name, an injected full disk,
 * size limits on files and pipes, the token rules, and the check that refuses a directory
 * another user could write. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"
#include "util/file.h"

typedef struct fixture {
    char dir[256];
    char path[320];   /* <dir>/out.bin, the file written */
    char tmp[360];    /* the writer's temporary name for path */
    char victim[320]; /* <dir>/victim, a file a planted link points at */
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    testutil_mkdtemp(f->dir, sizeof f->dir);
    snprintf(f->path, sizeof f->path, "%s/out.bin", f->dir);
    snprintf(f->tmp, sizeof f->tmp, "%s.%ld.tmp", f->path, (long)getpid());
    snprintf(f->victim, sizeof f->victim, "%s/victim", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    testutil_rmrf(f->dir);
    free(f);
    return 0;
}

static void write_text(const char *path, const char *text, const fs_write_opts *opts)
{
    fs_piece pieces[2] = {{text, strlen(text) / 2},
                          {text + strlen(text) / 2, strlen(text) - strlen(text) / 2}};
    zmix_error err;
    int rc = fs_write_atomic(path, pieces, 2, opts, &err);
    if (rc) fail_msg("fs_write_atomic(%s): %s", path, err.msg);
}

static void assert_file_text(const char *path, const char *text)
{
    size_t len;
    char *have = testutil_read_file(path, &len);
    assert_int_equal(len, strlen(text));
    assert_string_equal(have, text);
    free(have);
}

static void assert_no_temp(const fixture *f)
{
    struct stat st;
    assert_int_not_equal(lstat(f->tmp, &st), 0);
}

static void test_write_replaces_with_the_callers_mode(void **state)
{
    fixture *f = *state;
    mode_t old_mask = umask(022);
    write_text(f->path, "first version", NULL);
    assert_file_text(f->path, "first version");
    struct stat st;
    assert_int_equal(stat(f->path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600); /* the default */
    assert_no_temp(f);

    fs_write_opts opts = {.mode = 0644};
    write_text(f->path, "second, longer version", &opts);
    assert_file_text(f->path, "second, longer version");
    assert_int_equal(stat(f->path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0644);
    assert_no_temp(f);

    /* No pieces at all: an empty file. */
    zmix_error err;
    assert_int_equal(fs_write_atomic(f->path, NULL, 0, NULL, &err), 0);
    assert_file_text(f->path, "");
    umask(old_mask);
}

static void test_write_never_follows_planted_entries(void **state)
{
    fixture *f = *state;
    testutil_write_text(f->victim, "victim's bytes");

    /* A symbolic link under the temporary name: the writer must not write through it. */
    assert_int_equal(symlink(f->victim, f->tmp), 0);
    write_text(f->path, "through no link", NULL);
    assert_file_text(f->path, "through no link");
    assert_file_text(f->victim, "victim's bytes");
    assert_no_temp(f);

    /* A dangling link there: not created through either. */
    char absent[400];
    snprintf(absent, sizeof absent, "%s/absent", f->dir);
    assert_int_equal(symlink(absent, f->tmp), 0);
    write_text(f->path, "dangling", NULL);
    assert_file_text(f->path, "dangling");
    struct stat st;
    assert_int_not_equal(lstat(absent, &st), 0);
    assert_no_temp(f);

    /* A regular file there (left by a crash, or planted with wide permissions): replaced by a
     * fresh file with the writer's mode, not reused. */
    testutil_write_text(f->tmp, "stale temporary bytes, longer than the new content");
    assert_int_equal(chmod(f->tmp, 0666), 0);
    write_text(f->path, "fresh", NULL);
    assert_file_text(f->path, "fresh");
    assert_int_equal(stat(f->path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_no_temp(f);

    /* A link at the final name is replaced, its target untouched. */
    assert_int_equal(unlink(f->path), 0);
    assert_int_equal(symlink(f->victim, f->path), 0);
    write_text(f->path, "replaces the link", NULL);
    assert_int_equal(lstat(f->path, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_file_text(f->path, "replaces the link");
    assert_file_text(f->victim, "victim's bytes");
}

static void test_write_failure_keeps_the_old_file(void **state)
{
    fixture *f = *state;
    write_text(f->path, "old and complete", NULL);
    fs_fault fault = {.write_budget = 5};
    fs_write_opts opts = {.fault = &fault};
    fs_piece piece = {"new bytes that do not fit", 25};
    zmix_error err;
    assert_int_equal(fs_write_atomic(f->path, &piece, 1, &opts, &err), ZMIX_EIO);
    assert_non_null(strstr(err.msg, f->tmp));
    assert_non_null(strstr(err.msg, "injected"));
    assert_file_text(f->path, "old and complete");
    assert_no_temp(f);

    /* A directory in the way of the temporary name cannot be unlinked: refused, named. */
    assert_int_equal(mkdir(f->tmp, 0700), 0);
    assert_int_equal(fs_write_atomic(f->path, &piece, 1, NULL, &err), ZMIX_EIO);
    assert_non_null(strstr(err.msg, f->tmp));
    assert_file_text(f->path, "old and complete");
    assert_int_equal(rmdir(f->tmp), 0);
}

static void test_write_relative_path(void **state)
{
    fixture *f = *state;
    char cwd[4096];
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(f->dir), 0);
    write_text("plain-name", "in the current directory", NULL);
    assert_int_equal(chdir(cwd), 0);
    char path[400];
    snprintf(path, sizeof path, "%s/plain-name", f->dir);
    assert_file_text(path, "in the current directory");
}

static void test_read_file_limits(void **state)
{
    fixture *f = *state;
    testutil_write_text(f->path, "0123456789");
    uint8_t *buf;
    size_t len;
    zmix_error err;
    assert_int_equal(fs_read_file(f->path, 10, &buf, &len, &err), 0);
    assert_int_equal(len, 10);
    assert_int_equal(buf[10], '\0'); /* usable as a string */
    assert_memory_equal(buf, "0123456789", 10);
    free(buf);

    assert_int_equal(fs_read_file(f->path, 9, &buf, &len, &err), ZMIX_ELIMIT);
    assert_null(buf);
    assert_non_null(strstr(err.msg, f->path));
    assert_non_null(strstr(err.msg, "10 bytes, more than the limit of 9 bytes"));

    testutil_write_text(f->path, "");
    assert_int_equal(fs_read_file(f->path, 9, &buf, &len, &err), 0);
    assert_int_equal(len, 0);
    assert_int_equal(buf[0], '\0');
    free(buf);

    assert_int_equal(fs_read_file(f->victim, 9, &buf, &len, &err), ZMIX_ENOTFOUND);
    assert_non_null(strstr(err.msg, f->victim));
    assert_int_equal(fs_read_file(f->dir, 9, &buf, &len, &err), ZMIX_EIO);
    assert_non_null(strstr(err.msg, "is a directory"));
}

/* Reads what was written into a pipe through /dev/fd/N, as for `--examples <(...)`. */
static int read_pipe(const char *data, size_t n, size_t limit, uint8_t **buf, size_t *len,
                     zmix_error *err)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    assert_int_equal(write(fds[1], data, n), (ssize_t)n); /* fits in the pipe's buffer */
    close(fds[1]);
    char path[64];
    snprintf(path, sizeof path, "/dev/fd/%d", fds[0]);
    int rc = fs_read_file(path, limit, buf, len, err);
    close(fds[0]);
    return rc;
}

static void test_read_file_from_a_pipe(void **state)
{
    (void)state;
    static char data[40000];
    for (size_t i = 0; i < sizeof data; i++) data[i] = (char)('a' + i % 26);
    uint8_t *buf;
    size_t len;
    zmix_error err;
    assert_int_equal(read_pipe(data, sizeof data, sizeof data, &buf, &len, &err), 0);
    assert_int_equal(len, sizeof data);
    assert_memory_equal(buf, data, sizeof data);
    assert_int_equal(buf[len], '\0');
    free(buf);
    assert_int_equal(read_pipe(data, 100, 99, &buf, &len, &err), ZMIX_ELIMIT);
    assert_non_null(strstr(err.msg, "more than the limit of 99 bytes"));

    /* A file whose stat size (0) is not its length, read by growing the buffer. */
    assert_int_equal(fs_read_file("/proc/self/status", 1 << 20, &buf, &len, &err), 0);
    assert_true(len > 0 && strlen((char *)buf) == len);
    assert_non_null(strstr((char *)buf, "Name:"));
    free(buf);
}

/* The cache directory check: owner only is fine, group or other write is refused naming the
 * directory, its mode and the fix; so is another owner (the tests run as root, which may give a
 * directory away), a link to such a directory, and a path that is not a directory. */
static void test_private_dir(void **state)
{
    fixture *f = *state;
    char sub[400], link[400];
    zmix_error err = {0};
    snprintf(sub, sizeof sub, "%s/a/b", f->dir);
    assert_int_equal(fs_check_private_dir(sub, "--cache-dir", &err), 0); /* absent: created later */
    assert_int_equal(fs_mkdirs_mode(sub, 0750, &err), 0);
    struct stat st;
    assert_int_equal(stat(sub, &st), 0);
    mode_t mask = umask(0);
    umask(mask);
    assert_int_equal(st.st_mode & 0777, 0750 & ~mask);
    assert_int_equal(fs_check_private_dir(sub, "--cache-dir", &err), 0);
    assert_int_equal(chmod(sub, 0770), 0);
    assert_int_equal(fs_check_private_dir(sub, "--cache-dir", &err), ZMIX_EIO);
    assert_non_null(strstr(err.msg, sub));
    assert_non_null(strstr(err.msg, "mode 0770"));
    assert_non_null(strstr(err.msg, "chmod 700"));
    assert_int_equal(chmod(sub, 0702), 0);
    assert_int_equal(fs_check_private_dir(sub, "--cache-dir", &err), ZMIX_EIO);
    assert_int_equal(chmod(sub, 0700), 0);
    if (geteuid() == 0) {
        assert_int_equal(chown(sub, 65534, (gid_t)-1), 0);
        assert_int_equal(fs_check_private_dir(sub, "--cache-dir", &err), ZMIX_EIO);
        assert_non_null(strstr(err.msg, "owned by uid 65534"));
        assert_int_equal(chown(sub, 0, (gid_t)-1), 0);
    }
    /* A link to a directory is judged by that directory (a cache moved to another disk). */
    snprintf(link, sizeof link, "%s/link", f->dir);
    assert_int_equal(symlink(sub, link), 0);
    assert_int_equal(fs_check_private_dir(link, "--cache-dir", &err), 0);
    assert_int_equal(chmod(sub, 0777), 0);
    assert_int_equal(fs_check_private_dir(link, "--cache-dir", &err), ZMIX_EIO);
    write_text(f->victim, "x", NULL);
    assert_int_equal(fs_check_private_dir(f->victim, "--cache-dir", &err), ZMIX_EIO);
    assert_non_null(strstr(err.msg, "not a directory"));
}

static void test_read_token_file(void **state)
{
    fixture *f = *state;
    char token[16];
    size_t len = 0;
    zmix_error err;
    testutil_write_text(f->path, "s3cret-token\r\n \n");
    assert_int_equal(fs_read_token_file(f->path, token, sizeof token, &len, &err), 0);
    assert_string_equal(token, "s3cret-token");
    assert_int_equal(len, 12);

    testutil_write_text(f->path, "0123456789abcdef\n"); /* 16 bytes: one more than fits */
    assert_int_equal(fs_read_token_file(f->path, token, sizeof token, &len, &err), ZMIX_ELIMIT);
    assert_non_null(strstr(err.msg, "token of 16 bytes, more than 15"));
    testutil_write_text(f->path, "\r\n");
    assert_int_equal(fs_read_token_file(f->path, token, sizeof token, &len, &err), ZMIX_EINVAL);
    assert_non_null(strstr(err.msg, "empty"));
    testutil_write_file(f->path, "ab\0cd", 5);
    assert_int_equal(fs_read_token_file(f->path, token, sizeof token, &len, &err), ZMIX_EFORMAT);
    assert_int_equal(fs_read_token_file(f->victim, token, sizeof token, &len, &err),
                     ZMIX_ENOTFOUND);
    char want[400];
    snprintf(want, sizeof want, "token file %s: open", f->victim);
    assert_non_null(strstr(err.msg, want));
    static char huge[FS_TOKEN_FILE_MAX + 1];
    memset(huge, 'x', sizeof huge);
    testutil_write_file(f->path, huge, sizeof huge);
    assert_int_equal(fs_read_token_file(f->path, token, sizeof token, &len, &err), ZMIX_ELIMIT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_write_replaces_with_the_callers_mode, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_never_follows_planted_entries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_failure_keeps_the_old_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_relative_path, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_file_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_file_from_a_pipe, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_token_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_private_dir, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
