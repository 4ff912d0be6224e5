/*
 * The Unicode the tokenizers need (tok_unicode.c): UTF-8 decoding and validation, general
 * categories (the \p{L} and \p{N} of the split patterns), White_Space (their \s), and NFC
 * (Qwen2's normalizer). The data is generated into tok_unicode_tables.h by
 * scripts/gen_unicode_tables.py; ZMIX_UNICODE_VERSION names the Unicode version.
 */
#ifndef ZMIX_TOK_UNICODE_H
#define ZMIX_TOK_UNICODE_H

#include <stddef.h>
#include <stdint.h>

/* General categories, numbered as the generator numbers them. */
enum ucd_category {
    UCD_CN = 0, /* unassigned */
    UCD_LU,
    UCD_LL,
    UCD_LT,
    UCD_LM,
    UCD_LO,
    UCD_MN,
    UCD_MC,
    UCD_ME,
    UCD_ND,
    UCD_NL,
    UCD_NO,
    UCD_PC,
    UCD_PD,
    UCD_PS,
    UCD_PE,
    UCD_PI,
    UCD_PF,
    UCD_PO,
    UCD_SM,
    UCD_SC,
    UCD_SK,
    UCD_SO,
    UCD_ZS,
    UCD_ZL,
    UCD_ZP,
    UCD_CC,
    UCD_CF,
    UCD_CS,
    UCD_CO
};

const char *ucd_version(void);
int ucd_category(uint32_t cp);
static inline int ucd_is_letter(int cat)
{
    return cat >= UCD_LU && cat <= UCD_LO;
}
static inline int ucd_is_number(int cat)
{
    return cat >= UCD_ND && cat <= UCD_NO;
}
/* The White_Space property (what \s matches in the tokenizers' regex engine). */
int ucd_is_white_space(uint32_t cp);
int ucd_ccc(uint32_t cp);

/* Decodes the code point at s[*i] (len bytes in all) and advances *i. The input must be valid
 * UTF-8 (checked once with utf8_invalid_at). */
uint32_t utf8_next(const unsigned char *s, size_t *i);
/* Offset of the first byte that is not part of valid UTF-8 (overlong forms, surrogates and
 * code points above U+10FFFF are invalid), or len when all of it is valid. */
size_t utf8_invalid_at(const unsigned char *s, size_t len);
/* Writes cp as UTF-8 into out (4 bytes of room); returns the byte count. */
int utf8_put(uint32_t cp, unsigned char *out);
/* Valid UTF-8 of len bytes (malloc'ed, NUL-terminated, *out_len bytes): invalid sequences each
 * become U+FFFD (the maximal-subpart rule of the standard, which String::from_utf8_lossy
 * follows). NULL when out of memory. */
char *tok_lossy_utf8(const unsigned char *p, size_t len, size_t *out_len);
static inline int utf8_len_of_lead(unsigned char c)
{
    return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
}

/* NFC of len bytes of valid UTF-8 into *out (malloc'ed); returns its length, or (size_t)-1
 * when out of memory. */
size_t ucd_nfc(const unsigned char *s, size_t len, unsigned char **out);

#endif
