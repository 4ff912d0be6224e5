/*
 * z' as a safetensors file: one 1-D F32 tensor per adapted matrix, named as in the expert
 * files, so a serving system loads it with any safetensors reader exactly like an expert.
 * Written by the project's one atomic writer (util/file.h), so a reader never sees half a
 * file.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/file.h"
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

/* n floats as little-endian IEEE-754 singles, whatever the host's byte order. */
static void put_le32s(uint8_t *out, const float *v, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &v[i], 4);
        for (int b = 0; b < 4; b++) out[4 * (size_t)i + (size_t)b] = (uint8_t)(u >> (8 * b));
    }
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
    uint8_t *data = malloc(off ? (size_t)off : 1);
    if (!data) {
        free(h);
        return zmix_error_set(err, ZMIX_ENOMEM, "%s: out of memory for %llu bytes of z'", path,
                              (unsigned long long)off);
    }
    size_t at = 0;
    for (int m = 0; m < r->n_matrices; m++) {
        put_le32s(data + at, r->matrices[m].z, r->matrices[m].rank);
        at += (size_t)r->matrices[m].rank * 4;
    }
    uint8_t n8[8];
    for (int i = 0; i < 8; i++) n8[i] = (uint8_t)((uint64_t)len >> (8 * i));
    fs_piece pieces[3] = {{n8, 8}, {h, len}, {data, at}};
    fs_write_opts opts = {.mode = 0666}; /* before the umask, as fopen creates files */
    int rc = fs_write_atomic(path, pieces, 3, &opts, err);
    free(data);
    free(h);
    return rc;
}
