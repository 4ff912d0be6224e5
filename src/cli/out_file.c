#include "out_file.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int out_file_is_stdout(const char *path)
{
    return path && !strcmp(path, "-");
}

int out_file_begin(out_file *f, const char *cmd, const char *path)
{
    memset(f, 0, sizeof *f);
    f->path = f->write = path;
    if (!out_file_is_stdout(path)) return 0;
    const char *dir = getenv("TMPDIR");
    if (!dir || !*dir) dir = "/tmp";
    int n = snprintf(f->tmp, sizeof f->tmp, "%s/zmix-%s-XXXXXX", dir, cmd);
    if (n < 0 || (size_t)n >= sizeof f->tmp) {
        fprintf(stderr, "zmix %s: TMPDIR '%s' is too long\n", cmd, dir);
        return -1;
    }
    int fd = mkstemp(f->tmp);
    if (fd < 0) {
        fprintf(stderr, "zmix %s: cannot create a temporary file in %s for standard output: %s\n",
                cmd, dir, strerror(errno));
        return -1;
    }
    close(fd);
    f->write = f->tmp;
    f->to_stdout = 1;
    return 0;
}

int out_file_finish(out_file *f, const char *cmd, int ok)
{
    if (!f->to_stdout) return 0;
    int rc = 0;
    if (ok) {
        FILE *in = fopen(f->tmp, "rb");
        char buf[1 << 16];
        size_t n;
        if (!in) {
            rc = -1;
        } else {
            while ((n = fread(buf, 1, sizeof buf, in)) > 0)
                if (fwrite(buf, 1, n, stdout) != n) rc = -1;
            if (ferror(in)) rc = -1;
            fclose(in);
        }
        if (fflush(stdout) != 0) rc = -1;
        if (rc) fprintf(stderr, "zmix %s: writing to standard output failed\n", cmd);
    }
    unlink(f->tmp);
    f->to_stdout = 0;
    return rc;
}

FILE *out_file_report(int any_stdout)
{
    return any_stdout ? stderr : stdout;
}
