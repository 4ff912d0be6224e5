#include "util/utf8.h"

#include <stdio.h>
#include <string.h>

size_t utf8_sequence_len(const unsigned char *s, size_t n)
{
    if (n == 0) return 0;
    unsigned c = s[0];
    if (c < 0x80) return 1;
    size_t len;
    unsigned lo = 0x80, hi = 0xbf; /* allowed range of the second byte */
    if (c >= 0xc2 && c <= 0xdf)
        len = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0)
            lo = 0xa0; /* overlong */
        else if (c == 0xed)
            hi = 0x9f; /* surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0)
            lo = 0x90; /* overlong */
        else if (c == 0xf4)
            hi = 0x8f; /* above U+10FFFF */
    } else
        return 0;
    if (n < len || s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < len; i++)
        if ((s[i] & 0xc0) != 0x80) return 0;
    return len;
}

int utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t k = utf8_sequence_len(p + i, n - i);
        if (!k) return 0;
        i += k;
    }
    return 1;
}

size_t utf8_cut(const char *s, size_t n, size_t max)
{
    if (n <= max) return n;
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < max) {
        size_t k = utf8_sequence_len(p + i, n - i);
        if (!k) k = 1; /* a malformed byte stands alone */
        if (i + k > max) break;
        i += k;
    }
    return i;
}

size_t utf8_trim_tail(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t back = 1; back <= 3 && back <= n; back++) {
        unsigned c = p[n - back];
        if ((c & 0xc0) == 0x80) continue; /* a continuation byte: look further back */
        size_t want = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
        return want > back ? n - back : n;
    }
    return n;
}

void utf8_trim_cstr(char *s)
{
    s[utf8_trim_tail(s, strlen(s))] = '\0';
}

size_t utf8_escape(const char *s, size_t n, char *out, size_t cap)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t need = 0, w = 0;
    int full = cap == 0;
    for (size_t i = 0; i < n;) {
        size_t k = utf8_sequence_len(p + i, n - i);
        char esc[5];
        const char *piece = s + i;
        size_t piece_len = k;
        if (!k) {
            snprintf(esc, sizeof esc, "\\x%02x", p[i]);
            piece = esc;
            piece_len = 4;
            k = 1;
        }
        if (!full && w + piece_len <= cap - 1) {
            memcpy(out + w, piece, piece_len);
            w += piece_len;
        } else {
            full = 1;
        }
        need += piece_len;
        i += k;
    }
    if (cap) out[w] = '\0';
    return need;
}
