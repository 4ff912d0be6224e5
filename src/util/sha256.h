/*
 * SHA-256 (FIPS 180-4), streaming. Used to fingerprint models (the key of the factor cache)
 * and to checksum cached files; not for anything security-sensitive.
 */
#ifndef ZMIX_UTIL_SHA256_H
#define ZMIX_UTIL_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define ZMIX_SHA256_BYTES 32
#define ZMIX_SHA256_HEX   (2 * ZMIX_SHA256_BYTES + 1) /* 64 hex digits and a NUL */

typedef struct zmix_sha256 {
    uint32_t h[8];
    uint64_t n_bytes;  /* total message length so far */
    uint8_t block[64]; /* pending partial block */
    size_t block_used;
} zmix_sha256;

void zmix_sha256_init(zmix_sha256 *s);
void zmix_sha256_update(zmix_sha256 *s, const void *data, size_t len);
void zmix_sha256_final(zmix_sha256 *s, uint8_t digest[ZMIX_SHA256_BYTES]);

/* Lower-case hex of a digest into hex (ZMIX_SHA256_HEX bytes). */
void zmix_sha256_hex(const uint8_t digest[ZMIX_SHA256_BYTES], char hex[ZMIX_SHA256_HEX]);

/* One-shot: hex digest of a buffer. */
void zmix_sha256_hex_of(const void *data, size_t len, char hex[ZMIX_SHA256_HEX]);

#endif
