/* Scratch-file helpers shared by the unit tests: temporary directories, whole-file writes
 * and reads, recursive removal. A failure inside a helper fails the calling test (cmocka
 * assertion), so callers need no error handling. */
#ifndef ZMIX_TESTS_TESTUTIL_H
#define ZMIX_TESTS_TESTUTIL_H

#include <stddef.h>

/* A fresh directory under $TMPDIR (or /tmp); path receives it. */
void testutil_mkdtemp(char *path, size_t size);
/* Removes path and, when it is a directory, everything below it; a missing path is fine. */
void testutil_rmrf(const char *path);

void testutil_write_file(const char *path, const void *data, size_t len);
void testutil_write_text(const char *path, const char *text);
/* Reads a whole file (malloc'ed, NUL-terminated); *len receives its size. */
char *testutil_read_file(const char *path, size_t *len);
/* Runs a shell command, captures its stdout and stderr (up to cap - 1 bytes, NUL-terminated)
 * and returns its exit code (-1 when it did not exit). */
int testutil_run_capture(const char *cmd, char *out, size_t cap);

#endif
