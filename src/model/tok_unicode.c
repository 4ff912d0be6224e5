/*
 * UTF-8, general categories, White_Space and NFC for the tokenizers (tok_unicode.h). The
 * tables come from scripts/gen_unicode_tables.py; everything here is a lookup or a textbook
 * algorithm over them (NFC as in UAX #15: full canonical decomposition, canonical ordering,
 * canonical composition).
 */
#include "tok_unicode.h"

#include <stdlib.h>
#include <string.h>

#include "tok_unicode_tables.h"

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

const char *ucd_version(void)
{
    return ZMIX_UNICODE_VERSION;
}

/* Index of the last run whose first code point is <= cp, in runs of (start << shift | v). */
static size_t run_of(const uint32_t *runs, size_t n, int shift, uint32_t cp)
{
    size_t lo = 0, hi = n; /* runs[0] starts at 0, so the answer exists */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if ((runs[mid] >> shift) <= cp)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

int ucd_category(uint32_t cp)
{
    if (cp >= 0x110000) return UCD_CN;
    return (int)(ucd_gc_runs[run_of(ucd_gc_runs, N_OF(ucd_gc_runs), 5, cp)] & 31u);
}

int ucd_ccc(uint32_t cp)
{
    if (cp < 0x300 || cp >= 0x110000) return 0;
    return (int)(ucd_ccc_runs[run_of(ucd_ccc_runs, N_OF(ucd_ccc_runs), 8, cp)] & 255u);
}

int ucd_is_white_space(uint32_t cp)
{
    /* PropList.txt's White_Space, unchanged since Unicode 6.3. */
    if (cp <= 0x20) return cp == 0x20 || (cp >= 0x09 && cp <= 0x0D);
    switch (cp) {
    case 0x85:
    case 0xA0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202F:
    case 0x205F:
    case 0x3000: return 1;
    default: return cp >= 0x2000 && cp <= 0x200A;
    }
}

uint32_t utf8_next(const unsigned char *s, size_t *i)
{
    unsigned char c = s[*i];
    if (c < 0x80) {
        *i += 1;
        return c;
    }
    if (c < 0xE0) {
        uint32_t cp = ((uint32_t)(c & 0x1F) << 6) | (s[*i + 1] & 0x3Fu);
        *i += 2;
        return cp;
    }
    if (c < 0xF0) {
        uint32_t cp = ((uint32_t)(c & 0x0F) << 12) | ((uint32_t)(s[*i + 1] & 0x3F) << 6) |
                      (s[*i + 2] & 0x3Fu);
        *i += 3;
        return cp;
    }
    uint32_t cp = ((uint32_t)(c & 0x07) << 18) | ((uint32_t)(s[*i + 1] & 0x3F) << 12) |
                  ((uint32_t)(s[*i + 2] & 0x3F) << 6) | (s[*i + 3] & 0x3Fu);
    *i += 4;
    return cp;
}

size_t utf8_invalid_at(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        /* The second byte's range depends on the lead (RFC 3629, table 3-7 of the standard):
         * that is what rules out overlong forms, surrogates and code points past U+10FFFF. */
        unsigned char lo = 0x80, hi = 0xBF;
        int n;
        if (c >= 0xC2 && c <= 0xDF)
            n = 2;
        else if (c >= 0xE0 && c <= 0xEF) {
            n = 3;
            if (c == 0xE0) lo = 0xA0;
            if (c == 0xED) hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 4;
            if (c == 0xF0) lo = 0x90;
            if (c == 0xF4) hi = 0x8F;
        } else
            return i;
        if (len - i < (size_t)n) return i;
        if (s[i + 1] < lo || s[i + 1] > hi) return i;
        for (int k = 2; k < n; k++)
            if ((s[i + k] & 0xC0) != 0x80) return i;
        i += (size_t)n;
    }
    return len;
}

int utf8_put(uint32_t cp, unsigned char *out)
{
    if (cp < 0x80) {
        out[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (unsigned char)(0xC0 | (cp >> 6));
        out[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (unsigned char)(0xE0 | (cp >> 12));
        out[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (unsigned char)(0xF0 | (cp >> 18));
    out[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* ---- NFC ---------------------------------------------------------------------------- */

enum {
    S_BASE = 0xAC00,
    L_BASE = 0x1100,
    V_BASE = 0x1161,
    T_BASE = 0x11A7,
    L_COUNT = 19,
    V_COUNT = 21,
    T_COUNT = 28,
    N_COUNT = V_COUNT * T_COUNT,
    S_COUNT = L_COUNT * N_COUNT
};

static const uint32_t *decomp_of(uint32_t cp)
{
    size_t lo = 0, hi = N_OF(ucd_decomp);
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (ucd_decomp[mid][0] < cp)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < N_OF(ucd_decomp) && ucd_decomp[lo][0] == cp ? ucd_decomp[lo] : NULL;
}

/* The primary composite of (a, b), or 0. */
static uint32_t compose(uint32_t a, uint32_t b)
{
    if (a >= L_BASE && a < L_BASE + L_COUNT && b >= V_BASE && b < V_BASE + V_COUNT)
        return S_BASE + ((a - L_BASE) * V_COUNT + (b - V_BASE)) * T_COUNT;
    if (a >= S_BASE && a < S_BASE + S_COUNT && (a - S_BASE) % T_COUNT == 0 && b > T_BASE &&
        b < T_BASE + T_COUNT)
        return a + (b - T_BASE);
    size_t lo = 0, hi = N_OF(ucd_comp);
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (ucd_comp[mid][0] < a || (ucd_comp[mid][0] == a && ucd_comp[mid][1] < b))
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < N_OF(ucd_comp) && ucd_comp[lo][0] == a && ucd_comp[lo][1] == b ? ucd_comp[lo][2]
                                                                               : 0;
}

typedef struct cp_vec {
    uint32_t *v;
    size_t n, cap;
} cp_vec;

static int cp_push(cp_vec *a, uint32_t cp)
{
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        uint32_t *v = realloc(a->v, cap * sizeof *v);
        if (!v) return -1;
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n++] = cp;
    return 0;
}

/* Appends the full canonical decomposition of cp (recursive: a decomposition's parts may
 * decompose further). Depth is bounded by the data (at most 4 levels). */
static int decompose(cp_vec *out, uint32_t cp)
{
    if (cp >= S_BASE && cp < S_BASE + S_COUNT) {
        uint32_t s = cp - S_BASE;
        if (cp_push(out, L_BASE + s / N_COUNT) || cp_push(out, V_BASE + (s % N_COUNT) / T_COUNT))
            return -1;
        return s % T_COUNT ? cp_push(out, T_BASE + s % T_COUNT) : 0;
    }
    const uint32_t *d = decomp_of(cp);
    if (!d) return cp_push(out, cp);
    if (decompose(out, d[1])) return -1;
    return d[2] ? decompose(out, d[2]) : 0;
}

size_t ucd_nfc(const unsigned char *s, size_t len, unsigned char **out)
{
    *out = NULL;
    /* Below U+0300 every code point is a starter that nothing before it composes with, so a
     * text without a lead byte of U+0300 or above is its own NFC. */
    size_t k = 0;
    while (k < len && s[k] < 0xCC) k++;
    if (k == len) {
        *out = malloc(len + 1);
        if (!*out) return (size_t)-1;
        memcpy(*out, s, len);
        return len;
    }
    cp_vec d = {0};
    size_t i = 0;
    while (i < len)
        if (decompose(&d, utf8_next(s, &i))) goto oom;
    /* Canonical ordering: a stable sort of each run of non-starters by combining class. */
    for (size_t a = 1; a < d.n; a++) {
        int ca = ucd_ccc(d.v[a]);
        if (ca == 0) continue;
        size_t b = a;
        while (b > 0) {
            int cb = ucd_ccc(d.v[b - 1]);
            if (cb == 0 || cb <= ca) break;
            uint32_t t = d.v[b];
            d.v[b] = d.v[b - 1];
            d.v[b - 1] = t;
            b--;
        }
    }
    /* Canonical composition (the algorithm of UAX #15's sample code): a character composes
     * with the last starter unless a character of the same or a higher class, or a starter,
     * stands between them. */
    size_t n = 0;
    if (d.n) {
        size_t starter = 0;
        int last_class = ucd_ccc(d.v[0]) ? 256 : 0;
        n = 1;
        for (size_t a = 1; a < d.n; a++) {
            uint32_t ch = d.v[a];
            int cls = ucd_ccc(ch);
            uint32_t c = compose(d.v[starter], ch);
            if (c && (last_class < cls || last_class == 0)) {
                d.v[starter] = c;
                continue;
            }
            if (cls == 0) starter = n;
            last_class = cls;
            d.v[n++] = ch;
        }
    }
    unsigned char *o = malloc(n * 4 + 1);
    if (!o) goto oom;
    size_t at = 0;
    for (size_t a = 0; a < n; a++) at += (size_t)utf8_put(d.v[a], o + at);
    free(d.v);
    *out = o;
    return at;
oom:
    free(d.v);
    return (size_t)-1;
}
