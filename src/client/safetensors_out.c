/*
 * z' as a safetensors file: one 1-D F32 tensor per adapted matrix, named as in the expert
 * files, so a serving system loads it with any safetensors reader exactly like an expert.
 * Written to PATH.tmp and renamed, so a reader never sees half a file.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zmix/client.h"

static int append(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#include <stdarg.h>
static int append(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(*buf ? *buf + *len : NULL, *buf ? *cap - *len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) return -1;
        if (*buf && *len + (size_t)n < *cap) {
            *len += (size_t)n;
            return 0;
        }
        size_t c = *cap ? *cap * 2 : 1024;
        while (c < *len + (size_t)n + 1) c *= 2;
        char *p = realloc(*buf, c);
        if (!p) return -1;
        *buf = p;
        *cap = c;
    }
}

static int write_le32(FILE *f, const float *v, uint32_t n)
{
    unsigned char b[4];
    for (uint32_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &v[i], 4);
        b[0] = (unsigned char)u;
        b[1] = (unsigned char)(u >> 8);
        b[2] = (unsigned char)(u >> 16);
        b[3] = (unsigned char)(u >> 24);
        if (fwrite(b, 1, 4, f) != 4) return -1;
    }
    return 0;
}

int zmix_client_result_save_safetensors(const zmix_client_result *r, const char *path,
                                        zmix_error *err)
{
    if (r->n_matrices <= 0)
        return zmix_error_set(err, ZMIX_EINVAL, "%s: the result has no matrices", path);
    for (int m = 0; m < r->n_matrices; m++)
        if (!r->matrices[m].z)
            return zmix_error_set(err, ZMIX_EINVAL,
                                  "%s: the result has no z' vectors (fetch it with vectors)", path);
    char *h = NULL;
    size_t len = 0, cap = 0;
    uint64_t off = 0;
    int bad = append(&h, &len, &cap,
                     "{\"__metadata__\":{\"format\":\"pt\",\"task\":\"%s\","
                     "\"key\":\"%s\",\"alpha\":\"",
                     r->task, r->key);
    for (int i = 0; !bad && i < r->n_alpha; i++)
        bad = append(&h, &len, &cap, "%s%.9g", i ? "," : "", (double)r->alpha[i]);
    bad = bad || append(&h, &len, &cap, "\"}");
    for (int m = 0; !bad && m < r->n_matrices; m++) {
        const zmix_client_matrix *mx = &r->matrices[m];
        /* Tensor names are HF names ([A-Za-z0-9._]), no escaping needed; refuse anything else
         * rather than write a header another reader would misparse. */
        for (const char *p = mx->name; *p; p++)
            if (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20) {
                free(h);
                return zmix_error_set(err, ZMIX_EINVAL, "%s: tensor name '%s' needs escaping", path,
                                      mx->name);
            }
        uint64_t bytes = (uint64_t)mx->rank * 4;
        bad =
            append(&h, &len, &cap,
                   ",\"%s\":{\"dtype\":\"F32\",\"shape\":[%u],\"data_offsets\":[%llu,%llu]}",
                   mx->name, mx->rank, (unsigned long long)off, (unsigned long long)(off + bytes));
        off += bytes;
    }
    bad = bad || append(&h, &len, &cap, "}");
    while (!bad && len % 8) bad = append(&h, &len, &cap, " "); /* align the data to 8 bytes */
    if (bad) {
        free(h);
        return zmix_error_set(err, ZMIX_ENOMEM, "%s: out of memory for the header", path);
    }
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 5);
    if (!tmp) {
        free(h);
        return zmix_error_set(err, ZMIX_ENOMEM, "%s: out of memory", path);
    }
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp", 5);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        int e = errno;
        free(h);
        free(tmp);
        return zmix_error_set(err, ZMIX_EIO, "%s: cannot create: %s", path, strerror(e));
    }
    unsigned char n8[8];
    for (int i = 0; i < 8; i++) n8[i] = (unsigned char)((uint64_t)len >> (8 * i));
    int ok = fwrite(n8, 1, 8, f) == 8 && fwrite(h, 1, len, f) == len;
    for (int m = 0; ok && m < r->n_matrices; m++)
        ok = write_le32(f, r->matrices[m].z, r->matrices[m].rank) == 0;
    ok = (fclose(f) == 0) && ok;
    free(h);
    if (!ok || rename(tmp, path) != 0) {
        int e = errno;
        remove(tmp);
        free(tmp);
        return zmix_error_set(err, ZMIX_EIO, "%s: write failed: %s", path, strerror(e));
    }
    free(tmp);
    return 0;
}
