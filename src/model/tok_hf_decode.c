/*
 * Ids to text for a Hugging Face tokenizer: each id's token string goes through the decoder
 * chain of tokenizer.json (ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace), as the
 * tokenizers library's decode does. Byte sequences that are not UTF-8 (a token sequence cut in
 * the middle of a character) become U+FFFD, as there.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok_hf.h"
#include "tok_unicode.h"
#include "zmix/model.h"

typedef struct strv {
    char **s;
    size_t *len;
    size_t n;
    int failed; /* out of memory somewhere: the output is cut short */
} strv;

static void strv_free(strv *v)
{
    for (size_t i = 0; i < v->n; i++) free(v->s[i]);
    free(v->s);
    free(v->len);
    v->s = NULL;
    v->len = NULL;
    v->n = 0;
}

/* Takes ownership of s (len bytes); on failure frees it and marks the list. */
static void strv_push(strv *v, char *s, size_t len)
{
    if (!s) {
        v->failed = 1;
        return;
    }
    char **ns = realloc(v->s, (v->n + 1) * sizeof *ns);
    if (ns) v->s = ns;
    size_t *nl = realloc(v->len, (v->n + 1) * sizeof *nl);
    if (nl) v->len = nl;
    if (!ns || !nl) {
        free(s);
        v->failed = 1;
        return;
    }
    v->s[v->n] = s;
    v->len[v->n++] = len;
}

static char *dup_bytes(const char *p, size_t len)
{
    char *s = malloc(len + 1);
    if (s) {
        memcpy(s, p, len);
        s[len] = '\0';
    }
    return s;
}

char *tok_lossy_utf8(const unsigned char *p, size_t len, size_t *out_len)
{
    char *o = malloc(len * 3 + 1);
    if (!o) return NULL;
    size_t at = 0, i = 0;
    while (i < len) {
        size_t ok = utf8_invalid_at(p + i, len - i);
        memcpy(o + at, p + i, ok);
        at += ok;
        i += ok;
        if (i >= len) break;
        /* Skip the maximal prefix of a well-formed sequence (at least one byte). */
        size_t skip = 1;
        unsigned char c = p[i];
        int need = c >= 0xC2 && c <= 0xDF   ? 2
                   : c >= 0xE0 && c <= 0xEF ? 3
                   : c >= 0xF0 && c <= 0xF4 ? 4
                                            : 1;
        while (skip < (size_t)need && i + skip < len) {
            unsigned char lo = 0x80, hi = 0xBF, d = p[i + skip];
            if (skip == 1) {
                if (c == 0xE0) lo = 0xA0;
                if (c == 0xED) hi = 0x9F;
                if (c == 0xF0) lo = 0x90;
                if (c == 0xF4) hi = 0x8F;
            }
            if (d < lo || d > hi) break;
            skip++;
        }
        memcpy(o + at, "\xEF\xBF\xBD", 3);
        at += 3;
        i += skip;
    }
    o[at] = '\0';
    *out_len = at;
    return o;
}

static void dec_bytelevel(strv *v)
{
    size_t total = 0;
    for (size_t i = 0; i < v->n; i++) total += v->len[i];
    unsigned char *bytes = malloc(total + 1);
    if (!bytes) {
        v->failed = 1;
        return;
    }
    size_t at = 0;
    for (size_t i = 0; i < v->n; i++) {
        /* A token whose characters all stand for bytes gives those bytes; any other (an added
         * token such as "<|im_start|>" written with spaces, say) gives its own text. */
        const unsigned char *s = (const unsigned char *)v->s[i];
        size_t start = at, j = 0;
        int all = 1;
        while (j < v->len[i] && all) {
            int b = tok_char_to_byte(utf8_next(s, &j));
            if (b < 0)
                all = 0;
            else
                bytes[at++] = (unsigned char)b;
        }
        if (!all) {
            memcpy(bytes + start, s, v->len[i]);
            at = start + v->len[i];
        }
    }
    size_t len = 0;
    char *text = tok_lossy_utf8(bytes, at, &len);
    free(bytes);
    strv_free(v);
    strv_push(v, text, len);
}

/* Replaces a by b in token i of v. */
static void strv_replace(strv *v, size_t i, const char *a, size_t a_len, const char *b,
                         size_t b_len)
{
    size_t len;
    char *s = tok_replace_all(v->s[i], v->len[i], a, a_len, b, b_len, &len);
    if (!s) {
        v->failed = 1;
        return;
    }
    free(v->s[i]);
    v->s[i] = s;
    v->len[i] = len;
}

static void dec_replace(const tok_hf *t, const tok_dec *d, strv *v)
{
    for (size_t i = 0; i < v->n && !v->failed; i++)
        strv_replace(v, i, tok_s(t, d->a), d->a.len, tok_s(t, d->b), d->b.len);
}

static int hex(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* <0xXX> tokens in a row become the text their bytes spell, or one U+FFFD per byte when they
 * do not spell UTF-8 (the library's rule, not the lossy one). */
static void dec_bytefallback(strv *v)
{
    strv out = {0};
    unsigned char *bytes = malloc(v->n + 1);
    if (!bytes) {
        v->failed = 1;
        return;
    }
    size_t nb = 0;
    for (size_t i = 0; i <= v->n; i++) {
        const char *s = i < v->n ? v->s[i] : NULL;
        int byte = -1;
        if (s && v->len[i] == 6 && !memcmp(s, "<0x", 3) && s[5] == '>' && hex(s[3]) >= 0 &&
            hex(s[4]) >= 0)
            byte = hex(s[3]) * 16 + hex(s[4]);
        if (byte >= 0) {
            bytes[nb++] = (unsigned char)byte;
            continue;
        }
        if (nb) {
            if (utf8_invalid_at(bytes, nb) == nb) {
                strv_push(&out, dup_bytes((const char *)bytes, nb), nb);
            } else {
                char *r = malloc(nb * 3 + 1);
                if (r) {
                    for (size_t k = 0; k < nb; k++) memcpy(r + 3 * k, "\xEF\xBF\xBD", 3);
                    r[nb * 3] = '\0';
                }
                strv_push(&out, r, nb * 3);
            }
            nb = 0;
        }
        if (s) {
            strv_push(&out, v->s[i], v->len[i]);
            v->s[i] = NULL;
        }
    }
    free(bytes);
    out.failed |= v->failed;
    strv_free(v);
    *v = out;
}

static void dec_fuse(strv *v)
{
    size_t total = 0;
    for (size_t i = 0; i < v->n; i++) total += v->len[i];
    char *s = malloc(total + 1);
    if (!s) {
        v->failed = 1;
        return;
    }
    size_t at = 0;
    for (size_t i = 0; i < v->n; i++) {
        memcpy(s + at, v->s[i], v->len[i]);
        at += v->len[i];
    }
    s[at] = '\0';
    strv_free(v);
    strv_push(v, s, at);
}

static void dec_strip(const tok_hf *t, const tok_dec *d, strv *v)
{
    const char *c = tok_s(t, d->content);
    size_t cl = d->content.len;
    for (size_t i = 0; i < v->n; i++) {
        char *s = v->s[i];
        size_t a = 0, b = v->len[i];
        for (int k = 0; k < d->start && b - a >= cl && !memcmp(s + a, c, cl); k++) a += cl;
        for (int k = 0; k < d->stop && b - a >= cl && !memcmp(s + b - cl, c, cl); k++) b -= cl;
        memmove(s, s + a, b - a);
        s[b - a] = '\0';
        v->len[i] = b - a;
    }
}

/* The replacement becomes a space; in the first token it is dropped when the pre-tokenizer
 * prepends one (the library's Metaspace decoder). */
static void dec_metaspace(const tok_hf *t, const tok_dec *d, strv *v)
{
    for (size_t i = 0; i < v->n && !v->failed; i++) {
        int drop = i == 0 && d->prepend != PREPEND_NEVER;
        strv_replace(v, i, tok_s(t, d->a), d->a.len, drop ? "" : " ", drop ? 0 : 1);
    }
}

/* Appends s to out (NUL-terminated, truncated) and counts its length in *need. */
static void put(char *out, size_t out_size, size_t *need, const char *s, size_t n)
{
    if (*need < out_size) {
        size_t room = out_size - 1 - *need;
        memcpy(out + *need, s, n < room ? n : room);
    }
    *need += n;
}

/* Decodes ids[0..n) (all known) through the chain and appends the text. */
static void decode_run(const tok_hf *t, const int32_t *ids, int n, int escape, char *out,
                       size_t out_size, size_t *need)
{
    strv v = {0};
    for (int i = 0; i < n; i++) {
        tok_str s = t->id_text[ids[i]];
        strv_push(&v, dup_bytes(tok_s(t, s), s.len), s.len);
    }
    for (int k = 0; k < t->n_decs && !v.failed; k++) {
        const tok_dec *d = &t->decs[k];
        switch (d->kind) {
        case DEC_BYTELEVEL: dec_bytelevel(&v); break;
        case DEC_REPLACE: dec_replace(t, d, &v); break;
        case DEC_BYTEFALLBACK: dec_bytefallback(&v); break;
        case DEC_FUSE: dec_fuse(&v); break;
        case DEC_STRIP: dec_strip(t, d, &v); break;
        case DEC_METASPACE: dec_metaspace(t, d, &v); break;
        }
    }
    for (size_t i = 0; i < v.n; i++) {
        /* Without a decoder the library joins the tokens with spaces. */
        if (i && !t->n_decs) put(out, out_size, need, " ", 1);
        const unsigned char *s = (const unsigned char *)v.s[i];
        for (size_t j = 0; j < v.len[i]; j++) {
            unsigned char ch = s[j];
            char buf[8];
            size_t len = 1;
            buf[0] = (char)ch;
            if (escape && (ch == '\\' || ch == '\n' || ch == '\t' || ch == '\r')) {
                buf[0] = '\\';
                buf[1] = ch == '\\' ? '\\' : ch == '\n' ? 'n' : ch == '\t' ? 't' : 'r';
                len = 2;
            } else if (escape && (ch < 0x20 || ch == 0x7f)) {
                len = (size_t)snprintf(buf, sizeof buf, "\\x%02x", ch);
            }
            put(out, out_size, need, buf, len);
        }
    }
    strv_free(&v);
}

size_t tok_hf_decode(const tok_hf *t, const int32_t *ids, int n, int mode, char *out,
                     size_t out_size)
{
    int escape = (mode & ZMIX_DECODE_SHOW) != 0;
    int special = (mode & (ZMIX_DECODE_SHOW | ZMIX_DECODE_SPECIAL)) != 0;
    size_t need = 0;
    int32_t *run = malloc(((size_t)n + 1) * sizeof *run);
    if (!run) {
        if (out_size) out[0] = '\0';
        return 0;
    }
    int m = 0;
    for (int i = 0; i <= n; i++) {
        int32_t id = i < n ? ids[i] : -1;
        int known = i < n && id >= 0 && id < t->n_ids && t->id_text[id].len != UINT32_MAX;
        if (known && (special || !t->id_special[id])) {
            run[m++] = id;
            continue;
        }
        /* Plain text leaves out special tokens and ids the tokenizer does not know (as the
         * library does); the display form shows the unknown ones in place. */
        if (i < n && (known || !escape)) continue;
        if (m) decode_run(t, run, m, escape, out, out_size, &need);
        m = 0;
        if (i < n) {
            char buf[32];
            int len = snprintf(buf, sizeof buf, "<id %d>", (int)id);
            put(out, out_size, &need, buf, (size_t)len);
        }
    }
    free(run);
    if (out_size) out[need < out_size ? need : out_size - 1] = '\0';
    return need;
}
