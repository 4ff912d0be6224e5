/* Helpers shared by the persistence tests: scratch directories and file surgery. */
#ifndef ZMIX_TESTS_PERSIST_TESTUTIL_H
#define ZMIX_TESTS_PERSIST_TESTUTIL_H

#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

static inline long testutil_file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

static inline int testutil_exists(const char *path)
{
    return access(path, F_OK) == 0;
}

/* XORs one byte at offset (negative: from the end). */
static inline void testutil_flip_byte(const char *path, long offset)
{
    int fd = open(path, O_RDWR);
    if (fd < 0) abort();
    if (offset < 0) offset += testutil_file_size(path);
    uint8_t b;
    if (pread(fd, &b, 1, offset) != 1) abort();
    b ^= 0x5a;
    if (pwrite(fd, &b, 1, offset) != 1) abort();
    close(fd);
}

static inline void testutil_truncate(const char *path, long len)
{
    if (truncate(path, len) != 0) abort();
}

/* Number of entries in dir whose name ends with suffix. */
static inline int testutil_count_suffix(const char *dir, const char *suffix)
{
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    size_t k = strlen(suffix);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        if (len >= k && strcmp(de->d_name + len - k, suffix) == 0) n++;
    }
    closedir(d);
    return n;
}

#endif
