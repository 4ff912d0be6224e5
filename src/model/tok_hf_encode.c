/*
 * Text to ids for a Hugging Face BPE tokenizer, in the tokenizers library's order:
 *   1. added tokens whose content is matched as written, found in the raw text
 *      (leftmost-longest; lstrip/rstrip take the whitespace beside them);
 *   2. the normalizer over each remaining piece, then the added tokens matched in normalized
 *      form;
 *   3. the pre-tokenizers, each splitting (and for Metaspace and ByteLevel rewriting) the
 *      pieces the previous one left;
 *   4. BPE over each piece: its characters (its bytes, for byte-level models) as symbols,
 *      then the merges, lowest rank first and leftmost among equals;
 *   5. the special tokens the post-processor puts around the text.
 * Pieces live in one growing buffer and are referred to by offset.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok_hf.h"
#include "tok_unicode.h"

typedef struct piece {
    size_t off, len;
    int32_t id; /* an added token's id, or -1 for text */
    int first;  /* starts at offset 0 of the original text (Metaspace's prepend_scheme first) */
} piece;

typedef struct pieces {
    piece *v;
    size_t n, cap;
} pieces;

typedef struct work {
    char *buf; /* every piece's bytes */
    size_t len, cap;
    int32_t *ids; /* the output */
    size_t n_ids, cap_ids;
    zmix_error *err;
} work;

static int oom(work *w)
{
    return zmix_error_set(w->err, ZMIX_ENOMEM, "tokenizer: out of memory");
}

/* Appends len bytes (p may point into w->buf) and returns their offset, or SIZE_MAX. */
static size_t buf_add(work *w, const char *p, size_t len)
{
    if (w->len + len + 1 > w->cap) {
        size_t cap = w->cap ? w->cap : 256;
        while (cap < w->len + len + 1) cap *= 2;
        /* Compared as integers: p may be any pointer, and w->buf NULL before the first add. */
        uintptr_t pi = (uintptr_t)p, bi = (uintptr_t)w->buf;
        size_t at = w->buf && pi >= bi && pi < bi + w->len ? (size_t)(pi - bi) : SIZE_MAX;
        char *b = realloc(w->buf, cap);
        if (!b) return SIZE_MAX;
        w->buf = b;
        w->cap = cap;
        if (at != SIZE_MAX) p = b + at;
    }
    size_t off = w->len;
    memmove(w->buf + off, p, len);
    w->len += len;
    return off;
}

static int push_piece(work *w, pieces *ps, size_t off, size_t len, int32_t id, int first)
{
    if (len == 0 && id < 0) return 0; /* empty text pieces vanish, as in the library */
    if (ps->n == ps->cap) {
        size_t cap = ps->cap ? ps->cap * 2 : 64;
        piece *v = realloc(ps->v, cap * sizeof *v);
        if (!v) return oom(w);
        ps->v = v;
        ps->cap = cap;
    }
    ps->v[ps->n++] = (piece){off, len, id, first};
    return 0;
}

static int push_id(work *w, int32_t id)
{
    if (w->n_ids == w->cap_ids) {
        size_t cap = w->cap_ids ? w->cap_ids * 2 : 256;
        int32_t *v = realloc(w->ids, cap * sizeof *v);
        if (!v) return oom(w);
        w->ids = v;
        w->cap_ids = cap;
    }
    w->ids[w->n_ids++] = id;
    return 0;
}

/* ---- normalizers ------------------------------------------------------------------------ */

char *tok_replace_all(const char *s, size_t len, const char *a, size_t a_len, const char *b,
                      size_t b_len, size_t *out_len)
{
    size_t count = 0;
    for (size_t i = 0; i + a_len <= len;)
        if (!memcmp(s + i, a, a_len)) {
            count++;
            i += a_len;
        } else {
            i++;
        }
    size_t n = len - count * a_len + count * b_len;
    char *o = malloc(n + 1);
    if (!o) return NULL;
    size_t at = 0;
    for (size_t i = 0; i < len;)
        if (i + a_len <= len && !memcmp(s + i, a, a_len)) {
            memcpy(o + at, b, b_len);
            at += b_len;
            i += a_len;
        } else {
            o[at++] = s[i++];
        }
    o[at] = '\0';
    *out_len = at;
    return o;
}

int tok_hf_normalize(const tok_hf *t, const char *s, size_t len, char **out, size_t *out_len)
{
    char *cur = malloc(len + 1);
    if (!cur) return -1;
    memcpy(cur, s, len);
    size_t n = len;
    for (int i = 0; i < t->n_norms; i++) {
        const tok_norm *nm = &t->norms[i];
        char *next = NULL;
        size_t next_len = 0;
        if (nm->kind == NORM_NFC) {
            unsigned char *o;
            next_len = ucd_nfc((const unsigned char *)cur, n, &o);
            if (next_len == (size_t)-1) {
                free(cur);
                return -1;
            }
            next = (char *)o;
        } else if (nm->kind == NORM_PREPEND) {
            if (n == 0) continue; /* nothing to prepend to */
            next_len = nm->a.len + n;
            next = malloc(next_len + 1);
            if (next) {
                memcpy(next, tok_s(t, nm->a), nm->a.len);
                memcpy(next + nm->a.len, cur, n);
            }
        } else {
            next = tok_replace_all(cur, n, tok_s(t, nm->a), nm->a.len, tok_s(t, nm->b), nm->b.len,
                                   &next_len);
        }
        free(cur);
        if (!next) return -1;
        cur = next;
        n = next_len;
    }
    *out = cur;
    *out_len = n;
    return 0;
}

/* ---- added tokens --------------------------------------------------------------------- */

/* Splits text piece p on the added tokens of list (longest first): leftmost match, the
 * longest there; lstrip takes the whitespace before a match (not past the previous one),
 * rstrip the whitespace after it. */
static int split_added(work *w, const tok_added *list, int n_list, const tok_hf *t, piece p,
                       pieces *out)
{
    size_t start = 0; /* relative to p.off: where the current text piece starts */
    size_t i = 0;
    while (i < p.len) {
        const char *s = w->buf + p.off;
        int hit = -1;
        for (int k = 0; k < n_list && hit < 0; k++)
            if (list[k].content.len <= p.len - i &&
                !memcmp(s + i, tok_s(t, list[k].content), list[k].content.len))
                hit = k;
        if (hit < 0) {
            i++;
            continue;
        }
        const tok_added *a = &list[hit];
        size_t m_start = i, m_end = i + a->content.len;
        if (a->lstrip) {
            /* Back over whitespace characters, by code point. */
            size_t j = m_start;
            while (j > start) {
                size_t k = j - 1;
                while (k > start && ((unsigned char)s[k] & 0xC0) == 0x80) k--;
                size_t q = k;
                if (!ucd_is_white_space(utf8_next((const unsigned char *)s, &q))) break;
                j = k;
            }
            m_start = j;
        }
        if (a->rstrip) {
            size_t j = m_end;
            while (j < p.len) {
                size_t q = j;
                if (!ucd_is_white_space(utf8_next((const unsigned char *)s, &q))) break;
                j = q;
            }
            m_end = j;
        }
        int rc;
        if ((rc = push_piece(w, out, p.off + start, m_start - start, -1, p.first && start == 0)) ||
            (rc = push_piece(w, out, p.off + m_start, m_end - m_start, a->id, 0)))
            return rc;
        start = i = m_end;
    }
    return push_piece(w, out, p.off + start, p.len - start, -1, p.first && start == 0);
}

/* ---- pre-tokenizers --------------------------------------------------------------------- */

typedef struct cps_buf {
    uint32_t *cps;
    uint8_t *cls;
    size_t *offs; /* byte offset of each code point, and the end */
    size_t cap;
} cps_buf;

/* Decodes a piece into code points, their classes and byte offsets. */
static int decode_piece(work *w, cps_buf *c, piece p, size_t *n_out)
{
    if (p.len + 1 > c->cap) {
        size_t cap = p.len + 1;
        uint32_t *cps = realloc(c->cps, cap * sizeof *cps);
        if (cps) c->cps = cps;
        uint8_t *cls = realloc(c->cls, cap);
        if (cls) c->cls = cls;
        size_t *offs = realloc(c->offs, cap * sizeof *offs);
        if (offs) c->offs = offs;
        if (!cps || !cls || !offs) return oom(w);
        c->cap = cap;
    }
    const unsigned char *s = (const unsigned char *)w->buf + p.off;
    size_t i = 0, n = 0;
    while (i < p.len) {
        c->offs[n] = i;
        c->cps[n] = utf8_next(s, &i);
        c->cls[n] = tok_classify(c->cps[n]);
        n++;
    }
    c->offs[n] = p.len;
    *n_out = n;
    return 0;
}

/* Isolated split by one of the scanned patterns: every match is a piece, and so is every run
 * of characters no alternative matches. */
static int pre_split(work *w, cps_buf *c, int pattern, piece p, pieces *out)
{
    size_t n;
    int rc = decode_piece(w, c, p, &n);
    if (rc) return rc;
    size_t gap = 0, i = 0;
    while (i < n) {
        size_t m = tok_pattern_match(pattern, c->cps, c->cls, n, i);
        if (m == 0) {
            i++;
            continue;
        }
        if (gap < i && (rc = push_piece(w, out, p.off + c->offs[gap], c->offs[i] - c->offs[gap], -1,
                                        p.first && gap == 0)))
            return rc;
        if ((rc = push_piece(w, out, p.off + c->offs[i], c->offs[i + m] - c->offs[i], -1,
                             p.first && i == 0)))
            return rc;
        i += m;
        gap = i;
    }
    if (gap < n)
        rc = push_piece(w, out, p.off + c->offs[gap], c->offs[n] - c->offs[gap], -1,
                        p.first && gap == 0);
    return rc;
}

/* Digits: numeric characters (N*) apart from the rest, one by one or in runs. */
static int pre_digits(work *w, cps_buf *c, int individual, piece p, pieces *out)
{
    size_t n;
    int rc = decode_piece(w, c, p, &n);
    if (rc) return rc;
    size_t i = 0;
    while (i < n) {
        int num = (c->cls[i] & TOK_C_NUMBER) != 0;
        size_t j = i + 1;
        if (!num || !individual)
            while (j < n && ((c->cls[j] & TOK_C_NUMBER) != 0) == num) j++;
        if ((rc = push_piece(w, out, p.off + c->offs[i], c->offs[j] - c->offs[i], -1,
                             p.first && i == 0)))
            return rc;
        i = j;
    }
    return 0;
}

/* Metaspace: spaces become the replacement, which is prepended (always, or to the piece at
 * the very start of the text) unless the piece begins with it; with split, each replacement
 * begins a new piece. */
static int pre_metaspace(work *w, const tok_hf *t, const tok_pre *m, piece p, pieces *out)
{
    const char *r = tok_s(t, m->replacement);
    size_t r_len = m->replacement.len;
    char *text;
    size_t len;
    text = tok_replace_all(w->buf + p.off, p.len, " ", 1, r, r_len, &len);
    if (!text) return oom(w);
    int prepend = (m->prepend == PREPEND_ALWAYS || (m->prepend == PREPEND_FIRST && p.first)) &&
                  !(len >= r_len && !memcmp(text, r, r_len));
    size_t off = w->len;
    if ((prepend && buf_add(w, r, r_len) == SIZE_MAX) || buf_add(w, text, len) == SIZE_MAX) {
        free(text);
        return oom(w);
    }
    free(text);
    size_t total = w->len - off;
    if (!m->split) return push_piece(w, out, off, total, -1, p.first);
    size_t start = 0;
    int rc = 0;
    for (size_t i = 1; i + r_len <= total; i++)
        if (!memcmp(w->buf + off + i, r, r_len)) {
            if ((rc = push_piece(w, out, off + start, i - start, -1, p.first && start == 0)))
                return rc;
            start = i;
        }
    return push_piece(w, out, off + start, total - start, -1, p.first && start == 0);
}

static int pre_bytelevel(work *w, cps_buf *c, const tok_pre *b, piece p, pieces *out)
{
    if (b->add_prefix_space && w->buf[p.off] != ' ') {
        size_t off = buf_add(w, " ", 1);
        if (off == SIZE_MAX || buf_add(w, w->buf + p.off, p.len) == SIZE_MAX) return oom(w);
        p.off = off;
        p.len += 1;
    }
    if (b->pattern < 0) return push_piece(w, out, p.off, p.len, -1, p.first);
    return pre_split(w, c, b->pattern, p, out);
}

/* ---- BPE -------------------------------------------------------------------------------- */

typedef struct symbol {
    int32_t id;
    int32_t prev, next; /* -1 at the ends */
} symbol;

typedef struct merge_cand {
    int32_t rank, pos, id;
} merge_cand;

typedef struct bpe_scratch {
    symbol *sym;
    size_t sym_cap;
    merge_cand *heap;
    size_t heap_n, heap_cap;
} bpe_scratch;

static int cand_less(const merge_cand *a, const merge_cand *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static int heap_push(work *w, bpe_scratch *s, merge_cand c)
{
    if (s->heap_n == s->heap_cap) {
        size_t cap = s->heap_cap ? s->heap_cap * 2 : 64;
        merge_cand *h = realloc(s->heap, cap * sizeof *h);
        if (!h) return oom(w);
        s->heap = h;
        s->heap_cap = cap;
    }
    size_t i = s->heap_n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!cand_less(&c, &s->heap[parent])) break;
        s->heap[i] = s->heap[parent];
        i = parent;
    }
    s->heap[i] = c;
    return 0;
}

static merge_cand heap_pop(bpe_scratch *s)
{
    merge_cand top = s->heap[0], last = s->heap[--s->heap_n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const merge_cand *best = &last;
        if (l < s->heap_n && cand_less(&s->heap[l], best)) {
            m = l;
            best = &s->heap[l];
        }
        if (r < s->heap_n && cand_less(&s->heap[r], best)) m = r;
        if (m == i) break;
        s->heap[i] = s->heap[m];
        i = m;
    }
    if (s->heap_n) s->heap[i] = last;
    return top;
}

static int add_symbol(work *w, bpe_scratch *s, size_t *n, int32_t id)
{
    if (*n == s->sym_cap) {
        size_t cap = s->sym_cap ? s->sym_cap * 2 : 64;
        symbol *v = realloc(s->sym, cap * sizeof *v);
        if (!v) return oom(w);
        s->sym = v;
        s->sym_cap = cap;
    }
    s->sym[*n] = (symbol){id, (int32_t)*n - 1, (int32_t)*n + 1};
    (*n)++;
    return 0;
}

static int queue_pair(work *w, const tok_hf *t, bpe_scratch *s, int32_t pos)
{
    int32_t next = s->sym[pos].next, rank;
    if (next < 0) return 0;
    int32_t id = tok_merge_get(t, s->sym[pos].id, s->sym[next].id, &rank);
    return id < 0 ? 0 : heap_push(w, s, (merge_cand){rank, pos, id});
}

/* The initial symbols of a piece: one per byte (byte-level), or one per character with byte
 * fallback and the unknown token for characters the vocabulary lacks. */
static int initial_symbols(work *w, const tok_hf *t, bpe_scratch *s, const unsigned char *p,
                           size_t len, size_t *n)
{
    int rc;
    if (t->byte_level) {
        for (size_t i = 0; i < len; i++)
            if ((rc = add_symbol(w, s, n, t->byte_ids[p[i]]))) return rc;
        return 0;
    }
    int unk_pending = 0;
    size_t i = 0;
    while (i < len) {
        size_t start = i;
        uint32_t cp = utf8_next(p, &i);
        int32_t id = tok_map_get(&t->vocab, t->strings, p + start, i - start);
        if (id >= 0) {
            if (unk_pending && (rc = add_symbol(w, s, n, t->unk_id))) return rc;
            unk_pending = 0;
            if ((rc = add_symbol(w, s, n, id))) return rc;
        } else if (t->byte_fallback) {
            for (size_t k = start; k < i; k++)
                if ((rc = add_symbol(w, s, n, t->byte_ids[p[k]]))) return rc;
        } else if (t->unk_id >= 0) {
            /* fuse_unk: a run of unknown characters is one unknown token. */
            if (unk_pending && !t->fuse_unk && (rc = add_symbol(w, s, n, t->unk_id))) return rc;
            unk_pending = 1;
        } else {
            return zmix_error_set(w->err, ZMIX_EINVAL,
                                  "tokenizer: the text has U+%04X, which the vocabulary has no "
                                  "token for (and no byte fallback, no unk_token)",
                                  (unsigned)cp);
        }
    }
    return unk_pending ? add_symbol(w, s, n, t->unk_id) : 0;
}

static int bpe(work *w, const tok_hf *t, bpe_scratch *s, piece p)
{
    const unsigned char *text = (const unsigned char *)w->buf + p.off;
    if (t->ignore_merges) {
        /* Llama 3: a piece that is a whole vocabulary entry is that token, merges or not. */
        int32_t id = tok_map_get(&t->vocab, t->strings, text, p.len);
        if (id >= 0) return push_id(w, id);
    }
    size_t n = 0;
    int rc = initial_symbols(w, t, s, text, p.len, &n);
    if (rc || n == 0) return rc;
    s->sym[n - 1].next = -1;
    s->heap_n = 0;
    for (size_t i = 0; i + 1 < n; i++)
        if ((rc = queue_pair(w, t, s, (int32_t)i))) return rc;
    while (s->heap_n) {
        merge_cand c = heap_pop(s);
        symbol *a = &s->sym[c.pos];
        if (a->id < 0 || a->next < 0) continue;
        symbol *b = &s->sym[a->next];
        int32_t rank, id = tok_merge_get(t, a->id, b->id, &rank);
        if (id != c.id) continue; /* stale: one side has merged since */
        a->id = id;
        b->id = -1;
        a->next = b->next;
        if (a->next >= 0) s->sym[a->next].prev = c.pos;
        if (a->prev >= 0 && (rc = queue_pair(w, t, s, a->prev))) return rc;
        if ((rc = queue_pair(w, t, s, c.pos))) return rc;
    }
    for (int32_t i = 0; i >= 0; i = s->sym[i].next)
        if ((rc = push_id(w, s->sym[i].id))) return rc;
    return 0;
}

/* ---- the pipeline ------------------------------------------------------------------------ */

int tok_hf_encode(const tok_hf *t, const char *text, size_t len, int flags, int32_t *ids,
                  size_t cap, zmix_error *err)
{
    size_t bad = utf8_invalid_at((const unsigned char *)text, len);
    if (bad < len)
        return zmix_error_set(err, ZMIX_EINVAL,
                              "tokenizer: the text is not valid UTF-8 (byte 0x%02X at byte "
                              "offset %zu)",
                              (unsigned char)text[bad], bad);
    work w = {.err = err};
    pieces a = {0}, b = {0};
    cps_buf c = {0};
    bpe_scratch s = {0};
    int rc = 0;
    if (flags & 1)
        for (int i = 0; i < t->n_prefix && !rc; i++) rc = push_id(&w, t->prefix[i]);
    size_t off = len ? buf_add(&w, text, len) : 0;
    if (off == SIZE_MAX) rc = oom(&w);
    /* 1. added tokens as written */
    if (!rc && len)
        rc = split_added(&w, t->added_raw, t->n_added_raw, t, (piece){0, len, -1, 1}, &a);
    /* 2. normalizer, then added tokens in normalized form */
    for (size_t i = 0; !rc && i < a.n; i++) {
        piece p = a.v[i];
        if (p.id >= 0 || !t->n_norms) {
            rc = p.id >= 0 ? push_piece(&w, &b, p.off, p.len, p.id, 0)
                           : split_added(&w, t->added_norm, t->n_added_norm, t, p, &b);
            continue;
        }
        char *norm;
        size_t norm_len;
        if (tok_hf_normalize(t, w.buf + p.off, p.len, &norm, &norm_len)) {
            rc = oom(&w);
            break;
        }
        size_t at = norm_len ? buf_add(&w, norm, norm_len) : 0;
        free(norm);
        if (at == SIZE_MAX) {
            rc = oom(&w);
            break;
        }
        if (norm_len)
            rc = split_added(&w, t->added_norm, t->n_added_norm, t,
                             (piece){at, norm_len, -1, p.first}, &b);
    }
    /* 3. pre-tokenizers, one pass each over the pieces of the pass before */
    for (int k = 0; !rc && k < t->n_pres; k++) {
        const tok_pre *pre = &t->pres[k];
        a.n = 0;
        for (size_t i = 0; !rc && i < b.n; i++) {
            piece p = b.v[i];
            if (p.id >= 0)
                rc = push_piece(&w, &a, p.off, p.len, p.id, 0);
            else if (pre->kind == PRE_SPLIT)
                rc = pre_split(&w, &c, pre->pattern, p, &a);
            else if (pre->kind == PRE_DIGITS)
                rc = pre_digits(&w, &c, pre->individual, p, &a);
            else if (pre->kind == PRE_METASPACE)
                rc = pre_metaspace(&w, t, pre, p, &a);
            else
                rc = pre_bytelevel(&w, &c, pre, p, &a);
        }
        pieces tmp = a;
        a = b;
        b = tmp;
    }
    /* 4. the model */
    for (size_t i = 0; !rc && i < b.n; i++)
        rc = b.v[i].id >= 0 ? push_id(&w, b.v[i].id) : bpe(&w, t, &s, b.v[i]);
    /* 5. what follows the text */
    if (flags & 2)
        for (int i = 0; i < t->n_suffix && !rc; i++) rc = push_id(&w, t->suffix[i]);
    if (!rc && w.n_ids > cap)
        rc = zmix_error_set(err, ZMIX_EINTERNAL,
                            "tokenizer: %zu tokens from %zu bytes, over the bound of %zu", w.n_ids,
                            len, cap);
    if (!rc && w.n_ids > INT_MAX)
        rc = zmix_error_set(err, ZMIX_ELIMIT, "tokenizer: text of %zu bytes is too long", len);
    if (!rc && w.n_ids) memcpy(ids, w.ids, w.n_ids * sizeof *ids);
    int n = rc ? rc : (int)w.n_ids;
    free(w.buf);
    free(w.ids);
    free(a.v);
    free(b.v);
    free(c.cps);
    free(c.cls);
    free(c.offs);
    free(s.sym);
    free(s.heap);
    return n;
}
