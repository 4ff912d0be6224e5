#include "fuzz_common.h"

#include <string.h>
#include <unistd.h>

#include "util/crc32c.h"

/* One path per process (a fuzzer or replay run is one process), so parallel fuzz jobs never
 * share a file. Test code, not library code: a static is the simplest owner. */
static char temp_path[256];

static void remove_temp(void)
{
    if (temp_path[0]) unlink(temp_path);
}

const char *fuzz_temp_path(const char *suffix)
{
    char *path = temp_path;
    static char last_suffix[64];
    if (!path[0]) atexit(remove_temp);
    if (!path[0] || strcmp(last_suffix, suffix) != 0) {
        const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(path, sizeof temp_path, "%s/zmix-fuzz-%ld%s", dir, (long)getpid(), suffix);
        snprintf(last_suffix, sizeof last_suffix, "%s", suffix);
    }
    return path;
}

void fuzz_write_file(const char *path, const uint8_t *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        abort();
    }
    if (size && fwrite(data, 1, size, f) != size) abort();
    if (fclose(f) != 0) abort();
}

static void put_le(uint8_t *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++) p[i] = (uint8_t)(v >> (8 * i));
}

void fuzz_record_fix(uint8_t *buf, size_t len)
{
    if (len < 28) return;
    put_le(buf + 16, len - 28, 8);
    put_le(buf + len - 4, crc32c_update(0, buf, len - 4), 4);
}
