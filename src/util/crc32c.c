#include "util/crc32c.h"

/* The byte-at-a-time table for the reflected Castagnoli polynomial, computed by the
 * preprocessor from the definition (entry n = n shifted through eight bit-steps), so there
 * is no magic table to mistype and no initialisation at run time. */
#define CRC_STEP(c) (((c) >> 1) ^ (0x82F63B78u & (0u - ((c)&1u))))
#define CRC_BYTE(c)                                                                                \
    CRC_STEP(CRC_STEP(CRC_STEP(CRC_STEP(CRC_STEP(CRC_STEP(CRC_STEP(CRC_STEP((uint32_t)(c)))))))))
#define CRC_ROW4(n)  CRC_BYTE(n), CRC_BYTE((n) + 1), CRC_BYTE((n) + 2), CRC_BYTE((n) + 3)
#define CRC_ROW16(n) CRC_ROW4(n), CRC_ROW4((n) + 4), CRC_ROW4((n) + 8), CRC_ROW4((n) + 12)
#define CRC_ROW64(n) CRC_ROW16(n), CRC_ROW16((n) + 16), CRC_ROW16((n) + 32), CRC_ROW16((n) + 48)

static const uint32_t crc32c_table[256] = {CRC_ROW64(0u), CRC_ROW64(64u), CRC_ROW64(128u),
                                           CRC_ROW64(192u)};

uint32_t crc32c_update(uint32_t crc, const void *data, size_t len)
{
    const uint8_t *p = data;
    crc = ~crc;
    for (size_t i = 0; i < len; i++) crc = crc32c_table[(crc ^ p[i]) & 0xffu] ^ (crc >> 8);
    return ~crc;
}
