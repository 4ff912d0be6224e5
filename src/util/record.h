/*
 * The one container of every binary format zmix defines itself (the daemon's task records,
 * job records, checkpoints and id counter; the CEM engine's checkpoint; model files stay in
 * their standard formats), and bounds-checked little-endian encoding inside it:
 *
 *   offset 0   8 bytes  magic, names the kind of file ("ZMIXTASK", "ZMIXCEMS", ...)
 *   offset 8   u32      format version
 *   offset 12  u32      reserved, 0
 *   offset 16  u64      payload length P
 *   offset 24  P bytes  payload (fields in a fixed order, see docs/persistence.md)
 *   offset 24+P u32     CRC-32C of bytes [0, 24+P)
 *
 * A file is accepted only when its length is exactly 28 + P, the CRC matches and the reserved
 * field is 0, so a truncated, extended, torn or bit-flipped file is rejected before any field
 * is trusted; the reader still checks every length against what is left, so even a file with
 * a valid CRC but nonsense fields (a bug, or a hand-made file) cannot make it read out of
 * bounds.
 *
 * Pure functions over caller-owned buffers: safe on any thread.
 */
#ifndef ZMIX_UTIL_RECORD_H
#define ZMIX_UTIL_RECORD_H

#include <stddef.h>
#include <stdint.h>

#include "zmix/common.h"

#define REC_MAGIC_LEN 8
#define REC_HEADER    24
#define REC_OVERHEAD  28 /* header + trailing CRC */

/* A growable output buffer. An allocation failure is remembered and reported by finish, so
 * encoders can append without checking every call. */
typedef struct rec_writer {
    uint8_t *buf;
    size_t len, cap;
    int failed;
} rec_writer;

void recw_begin(rec_writer *w, const char magic[REC_MAGIC_LEN], uint32_t version);
void recw_bytes(rec_writer *w, const void *data, size_t len);
void recw_u16(rec_writer *w, uint16_t v);
void recw_u32(rec_writer *w, uint32_t v);
void recw_u64(rec_writer *w, uint64_t v);
void recw_i32(rec_writer *w, int32_t v);
void recw_i64(rec_writer *w, int64_t v);
void recw_f32s(rec_writer *w, const float *v, size_t n); /* n IEEE-754 singles, LE */
void recw_f64(rec_writer *w, double v);
void recw_str16(rec_writer *w, const char *s);                 /* u16 length + bytes (no NUL) */
void recw_blob32(rec_writer *w, const void *data, size_t len); /* u32 length + bytes */
/* Patches the payload length and appends the CRC. On success w->buf/w->len is the file and
 * *crc (if non-NULL) its checksum; ZMIX_ENOMEM when any append failed. */
int recw_finish(rec_writer *w, uint32_t *crc, zmix_error *err);
void recw_free(rec_writer *w);

/* A cursor over a verified payload. Reads past the end set failed and return zeros. */
typedef struct rec_reader {
    const uint8_t *p;
    size_t len, pos;
    int failed;
} rec_reader;

/* Verifies magic, version (1..max_version, returned in *version), exact length, CRC and the
 * reserved field, and positions r at the payload. ZMIX_EFORMAT naming the first check that
 * failed. */
int rec_open(const uint8_t *buf, size_t len, const char magic[REC_MAGIC_LEN], uint32_t max_version,
             uint32_t *version, rec_reader *r, zmix_error *err);

const uint8_t *recr_bytes(rec_reader *r, size_t len); /* NULL (and failed) past the end */
uint16_t recr_u16(rec_reader *r);
uint32_t recr_u32(rec_reader *r);
uint64_t recr_u64(rec_reader *r);
int32_t recr_i32(rec_reader *r);
int64_t recr_i64(rec_reader *r);
double recr_f64(rec_reader *r);
/* n floats into out (which must hold n). Returns 0, or -1 (and failed) past the end. */
int recr_f32s(rec_reader *r, float *out, size_t n);
/* A u16-length string into out (size bytes, NUL-terminated); failed when it does not fit. */
void recr_str16(rec_reader *r, char *out, size_t size);
/* A u32-length blob; returns a pointer into the buffer and its length. */
const uint8_t *recr_blob32(rec_reader *r, size_t *len);
/* ZMIX_EFORMAT unless every read succeeded and the whole payload was consumed. */
int recr_end(const rec_reader *r, const char *what, zmix_error *err);

#endif
