/*
 * UTF-8 checks for text the daemon sends: every string on the wire must be valid UTF-8
 * (a strict msgpack decoder refuses anything else), yet error messages quote what clients
 * sent, which may be any bytes, and are cut to fixed sizes. Thread: any.
 */
#ifndef ZMIX_UTIL_UTF8_H
#define ZMIX_UTIL_UTF8_H

#include <stddef.h>

/* Length of the well-formed UTF-8 sequence at s (at most n bytes available): 1..4, or 0
 * when the bytes there are not one (overlong forms, surrogates and code points above
 * U+10FFFF are not well formed). */
size_t utf8_sequence_len(const unsigned char *s, size_t n);

/* 1 when s[0..n) is well-formed UTF-8. */
int utf8_valid(const char *s, size_t n);

/* The largest length <= max at which s[0..n) can be cut without splitting a character
 * (a cut inside a malformed run of bytes is left where it is: escaping will show them). */
size_t utf8_cut(const char *s, size_t n, size_t max);

/* The length of s[0..n) without a character that a byte-count cut left incomplete at its
 * end (a lead byte followed by fewer continuation bytes than it announces); n otherwise. */
size_t utf8_trim_tail(const char *s, size_t n);

/* Drops, in place, a character that a fixed-size snprintf cut left incomplete at the end
 * of the NUL-terminated string s. */
void utf8_trim_cstr(char *s);

/* Copies s[0..n) into out as well-formed UTF-8, each byte that is not part of a
 * well-formed sequence written as the four characters \xHH. Writes at most cap - 1 bytes
 * plus a NUL, never splitting a character or an escape; returns the length the whole
 * copy needs (excluding the NUL), like snprintf. */
size_t utf8_escape(const char *s, size_t n, char *out, size_t cap);

#endif
