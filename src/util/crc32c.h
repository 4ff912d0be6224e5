/*
 * CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of every persisted
 * record. Why CRC-32C and not a cryptographic hash: the threat is a torn write, a truncated
 * file or a flipped bit, not an adversary; a CRC detects every burst shorter than 32 bits and
 * all odd-weight errors, costs a table lookup per byte, and is the checksum used by ext4,
 * iSCSI and SSE4.2, so any reader can verify our files with a stock implementation.
 */
#ifndef ZMIX_UTIL_CRC32C_H
#define ZMIX_UTIL_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Continues a running CRC: crc32c_update(0, "123456789", 9) == 0xE3069283.
 * Feeding a buffer in pieces gives the same result as feeding it whole. */
uint32_t crc32c_update(uint32_t crc, const void *data, size_t len);

#endif
