#include "util/record.h"

#include <stdlib.h>
#include <string.h>

#include "util/crc32c.h"

static void put_le(uint8_t *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static uint8_t *recw_grow(rec_writer *w, size_t len)
{
    if (w->failed) return NULL;
    if (len > SIZE_MAX - w->len) {
        w->failed = 1;
        return NULL;
    }
    if (w->len + len > w->cap) {
        size_t cap = w->cap ? w->cap : 256;
        while (cap < w->len + len) cap = cap > SIZE_MAX / 2 ? w->len + len : cap * 2;
        uint8_t *grown = realloc(w->buf, cap);
        if (!grown) {
            w->failed = 1;
            return NULL;
        }
        w->buf = grown;
        w->cap = cap;
    }
    uint8_t *at = w->buf + w->len;
    w->len += len;
    return at;
}

void recw_begin(rec_writer *w, const char magic[REC_MAGIC_LEN], uint32_t version)
{
    memset(w, 0, sizeof *w);
    uint8_t *h = recw_grow(w, REC_HEADER);
    if (!h) return;
    memcpy(h, magic, REC_MAGIC_LEN);
    put_le(h + 8, version, 4);
    put_le(h + 12, 0, 4);
    put_le(h + 16, 0, 8); /* payload length, patched by finish */
}

void recw_bytes(rec_writer *w, const void *data, size_t len)
{
    uint8_t *p = recw_grow(w, len);
    if (p && len) memcpy(p, data, len);
}

static void recw_le(rec_writer *w, uint64_t v, int n)
{
    uint8_t *p = recw_grow(w, (size_t)n);
    if (p) put_le(p, v, n);
}

void recw_u16(rec_writer *w, uint16_t v)
{
    recw_le(w, v, 2);
}

void recw_u32(rec_writer *w, uint32_t v)
{
    recw_le(w, v, 4);
}

void recw_u64(rec_writer *w, uint64_t v)
{
    recw_le(w, v, 8);
}

void recw_i32(rec_writer *w, int32_t v)
{
    recw_le(w, (uint32_t)v, 4);
}

void recw_i64(rec_writer *w, int64_t v)
{
    recw_le(w, (uint64_t)v, 8);
}

void recw_f32s(rec_writer *w, const float *v, size_t n)
{
    if (n > SIZE_MAX / 4) {
        w->failed = 1;
        return;
    }
    uint8_t *p = recw_grow(w, 4 * n);
    if (!p) return;
    for (size_t i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, &v[i], 4);
        put_le(p + 4 * i, bits, 4);
    }
}

void recw_f64(rec_writer *w, double v)
{
    uint64_t bits;
    memcpy(&bits, &v, 8);
    recw_le(w, bits, 8);
}

void recw_str16(rec_writer *w, const char *s)
{
    size_t n = strlen(s);
    if (n > UINT16_MAX) {
        w->failed = 1;
        return;
    }
    recw_u16(w, (uint16_t)n);
    recw_bytes(w, s, n);
}

void recw_blob32(rec_writer *w, const void *data, size_t len)
{
    if (len > UINT32_MAX) {
        w->failed = 1;
        return;
    }
    recw_u32(w, (uint32_t)len);
    recw_bytes(w, data, len);
}

int recw_finish(rec_writer *w, uint32_t *crc, zmix_error *err)
{
    if (w->failed || !w->buf)
        return zmix_error_set(err, ZMIX_ENOMEM, "cannot allocate a record of %zu+ bytes", w->len);
    put_le(w->buf + 16, w->len - REC_HEADER, 8);
    uint32_t c = crc32c_update(0, w->buf, w->len);
    recw_u32(w, c);
    if (w->failed) return zmix_error_set(err, ZMIX_ENOMEM, "cannot allocate a record");
    if (crc) *crc = c;
    return 0;
}

void recw_free(rec_writer *w)
{
    free(w->buf);
    memset(w, 0, sizeof *w);
}

int rec_open(const uint8_t *buf, size_t len, const char magic[REC_MAGIC_LEN], uint32_t max_version,
             uint32_t *version, rec_reader *r, zmix_error *err)
{
    memset(r, 0, sizeof *r);
    if (len < REC_OVERHEAD)
        return zmix_error_set(err, ZMIX_EFORMAT,
                              "truncated: %zu bytes, less than the %d-byte frame", len,
                              REC_OVERHEAD);
    if (memcmp(buf, magic, REC_MAGIC_LEN) != 0)
        return zmix_error_set(err, ZMIX_EFORMAT, "bad magic (expected \"%.8s\")", magic);
    uint32_t v = (uint32_t)get_le(buf + 8, 4);
    if (v == 0 || v > max_version)
        return zmix_error_set(err, ZMIX_EFORMAT, "format version %u not supported (max %u)", v,
                              max_version);
    uint64_t payload = get_le(buf + 16, 8);
    if (payload != len - REC_OVERHEAD)
        return zmix_error_set(err, ZMIX_EFORMAT,
                              "length mismatch: header says %llu payload bytes, file holds %zu "
                              "(truncated or extended)",
                              (unsigned long long)payload, len - REC_OVERHEAD);
    uint32_t stored = (uint32_t)get_le(buf + len - 4, 4);
    uint32_t actual = crc32c_update(0, buf, len - 4);
    if (stored != actual)
        return zmix_error_set(err, ZMIX_EFORMAT, "checksum mismatch: stored %08x, computed %08x",
                              stored, actual);
    /* Checked, not skipped: a reader that ignored it would accept two different files as the
     * same record, and re-encoding would not give the bytes back. */
    uint32_t reserved = (uint32_t)get_le(buf + 12, 4);
    if (reserved != 0)
        return zmix_error_set(err, ZMIX_EFORMAT, "reserved header field is %u, not 0", reserved);
    if (version) *version = v;
    r->p = buf + REC_HEADER;
    r->len = (size_t)payload;
    return 0;
}

const uint8_t *recr_bytes(rec_reader *r, size_t len)
{
    if (r->failed || len > r->len - r->pos) {
        r->failed = 1;
        return NULL;
    }
    const uint8_t *at = r->p + r->pos;
    r->pos += len;
    return at;
}

static uint64_t recr_le(rec_reader *r, int n)
{
    const uint8_t *p = recr_bytes(r, (size_t)n);
    return p ? get_le(p, n) : 0;
}

uint16_t recr_u16(rec_reader *r)
{
    return (uint16_t)recr_le(r, 2);
}

uint32_t recr_u32(rec_reader *r)
{
    return (uint32_t)recr_le(r, 4);
}

uint64_t recr_u64(rec_reader *r)
{
    return recr_le(r, 8);
}

int32_t recr_i32(rec_reader *r)
{
    return (int32_t)recr_le(r, 4);
}

int64_t recr_i64(rec_reader *r)
{
    return (int64_t)recr_le(r, 8);
}

double recr_f64(rec_reader *r)
{
    uint64_t bits = recr_le(r, 8);
    double v;
    memcpy(&v, &bits, 8);
    return v;
}

int recr_f32s(rec_reader *r, float *out, size_t n)
{
    if (n > (r->len - r->pos) / 4) {
        r->failed = 1;
        return -1;
    }
    const uint8_t *p = recr_bytes(r, 4 * n);
    if (!p) return -1;
    for (size_t i = 0; i < n; i++) {
        uint32_t bits = (uint32_t)get_le(p + 4 * i, 4);
        memcpy(&out[i], &bits, 4);
    }
    return 0;
}

void recr_str16(rec_reader *r, char *out, size_t size)
{
    size_t n = recr_u16(r);
    const uint8_t *p = recr_bytes(r, n);
    if (!p || n >= size || memchr(p, '\0', n)) {
        r->failed = 1;
        if (size) out[0] = '\0';
        return;
    }
    memcpy(out, p, n);
    out[n] = '\0';
}

const uint8_t *recr_blob32(rec_reader *r, size_t *len)
{
    size_t n = recr_u32(r);
    const uint8_t *p = recr_bytes(r, n);
    *len = p ? n : 0;
    return p;
}

int recr_end(const rec_reader *r, const char *what, zmix_error *err)
{
    if (r->failed)
        return zmix_error_set(err, ZMIX_EFORMAT, "%s: a field runs past the end of the payload",
                              what);
    if (r->pos != r->len)
        return zmix_error_set(err, ZMIX_EFORMAT, "%s: %zu unexpected bytes after the last field",
                              what, r->len - r->pos);
    return 0;
}
