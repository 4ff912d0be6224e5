/*
 * Reading a Hugging Face tokenizer.json (and tokenizer_config.json beside it) into a tok_hf.
 * Every component is checked against what tok_hf_encode.c and tok_hf_decode.c implement; an
 * unknown type, an unknown field in a known component, or a setting that would change the
 * tokens (a regex zmix does not scan, BPE dropout, single_word added tokens...) is refused with
 * its name and its place in the file, so that a tokenizer zmix cannot run exactly is never run
 * approximately.
 */
#include <cJSON.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "loaders.h"
#include "tok_hf.h"
#include "tok_unicode.h"

#define MAX_CONFIG_BYTES (16u << 20)
#define MAX_IDS          (1 << 24) /* as ZMIX_MAX_VOCAB */
#define MAX_COMPONENTS   64        /* normalizers, pre-tokenizers, decoders */

/* ---- arena and maps -------------------------------------------------------------------- */

struct tok_map_slot {
    uint32_t off, len;
    int32_t value; /* -1: empty slot */
};

struct tok_merge_slot {
    uint64_t key;     /* left << 32 | right */
    int32_t rank, id; /* id -1: empty slot */
};

int tok_arena_add(tok_hf *t, const void *p, size_t len, tok_str *out)
{
    if (len > UINT32_MAX - t->strings_len - 1) return -1;
    if (t->strings_len + len + 1 > t->strings_cap) {
        size_t cap = t->strings_cap ? t->strings_cap : 1 << 16;
        while (cap < t->strings_len + len + 1) cap *= 2;
        if (cap > UINT32_MAX) cap = UINT32_MAX;
        char *s = realloc(t->strings, cap);
        if (!s) return -1;
        t->strings = s;
        t->strings_cap = cap;
    }
    if (len) memcpy(t->strings + t->strings_len, p, len);
    t->strings[t->strings_len + len] = '\0';
    *out = (tok_str){(uint32_t)t->strings_len, (uint32_t)len};
    t->strings_len += len + 1;
    return 0;
}

static uint64_t hash_bytes(const void *p, size_t len)
{
    /* FNV-1a with a final mix: keys are short and the table is open-addressed. */
    const unsigned char *s = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++) h = (h ^ s[i]) * 1099511628211ull;
    h ^= h >> 29;
    return h * 0xbf58476d1ce4e5b9ull;
}

static uint64_t hash_u64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static size_t table_size(size_t n)
{
    size_t size = 16;
    while (size < 2 * n + 2) size *= 2;
    return size;
}

int tok_map_init(tok_map *m, size_t n_expected)
{
    size_t size = table_size(n_expected);
    m->slots = malloc(size * sizeof *m->slots);
    if (!m->slots) return -1;
    for (size_t i = 0; i < size; i++) m->slots[i].value = -1;
    m->mask = size - 1;
    m->n = 0;
    return 0;
}

void tok_map_free(tok_map *m)
{
    free(m->slots);
    memset(m, 0, sizeof *m);
}

int32_t tok_map_get(const tok_map *m, const char *arena, const void *key, size_t len)
{
    if (!m->slots) return -1;
    for (size_t i = hash_bytes(key, len) & m->mask;; i = (i + 1) & m->mask) {
        const struct tok_map_slot *s = &m->slots[i];
        if (s->value < 0) return -1;
        if (s->len == len && memcmp(arena + s->off, key, len) == 0) return s->value;
    }
}

int32_t tok_map_put(tok_map *m, const char *arena, tok_str k, int32_t value)
{
    for (size_t i = hash_bytes(arena + k.off, k.len) & m->mask;; i = (i + 1) & m->mask) {
        struct tok_map_slot *s = &m->slots[i];
        if (s->value < 0) {
            *s = (struct tok_map_slot){k.off, k.len, value};
            m->n++;
            return value;
        }
        if (s->len == k.len && memcmp(arena + s->off, arena + k.off, k.len) == 0) return s->value;
    }
}

int32_t tok_merge_get(const tok_hf *t, int32_t left, int32_t right, int32_t *rank)
{
    uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    for (size_t i = hash_u64(key) & t->merges_mask;; i = (i + 1) & t->merges_mask) {
        const struct tok_merge_slot *s = &t->merges[i];
        if (s->id < 0) return -1;
        if (s->key == key) {
            *rank = s->rank;
            return s->id;
        }
    }
}

/* ---- GPT-2's byte <-> character mapping ---------------------------------------------- */

/* Printable Latin-1 bytes stand for themselves; the other 68 (controls, space, 0x7F-0xA0,
 * 0xAD) are moved to U+0100 onwards, in byte order. This is bytes_to_unicode() of GPT-2's
 * encoder.py, which every byte-level vocabulary is written in. */
static int byte_is_printable(unsigned b)
{
    return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
}

uint32_t tok_byte_to_char(unsigned char b)
{
    if (byte_is_printable(b)) return b;
    uint32_t n = 0;
    for (unsigned x = 0; x < b; x++) n += !byte_is_printable(x);
    return 256 + n;
}

int tok_char_to_byte(uint32_t cp)
{
    if (cp < 256) return byte_is_printable(cp) ? (int)cp : -1;
    if (cp >= 256 + 68) return -1;
    uint32_t n = cp - 256;
    for (unsigned b = 0; b < 256; b++)
        if (!byte_is_printable(b) && n-- == 0) return (int)b;
    return -1;
}

/* ---- loading ------------------------------------------------------------------------- */

typedef struct loader {
    tok_hf *t;
    const char *path;
    zmix_error *err;
    int vocab_size;
} loader;

void tok_hf_free(tok_hf *t)
{
    if (!t) return;
    free(t->strings);
    free(t->id_text);
    free(t->id_special);
    tok_map_free(&t->vocab);
    free(t->merges);
    free(t->added_raw);
    free(t->added_norm);
    free(t->norms);
    free(t->pres);
    free(t->decs);
    free(t);
}

static int oom(loader *L)
{
    return zmix_error_set(L->err, ZMIX_ENOMEM, "%s: out of memory", L->path);
}

static int bad(loader *L, const char *where, const char *what)
{
    return zmix_error_set(L->err, ZMIX_EFORMAT, "%s: %s %s", L->path, where, what);
}

/* A component of a type zmix does not implement: refused naming the type. */
static int unsupported(loader *L, const char *where, const cJSON *obj)
{
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(obj, "type");
    return zmix_error_set(L->err, ZMIX_EFORMAT, "%s: %s type '%.64s' is not supported", L->path,
                          where, cJSON_IsString(type) ? type->valuestring : "?");
}

/* Refuses any member of obj not named in allowed (NULL-terminated): a field zmix does not
 * know may change what the component does. */
static int only_keys(loader *L, const cJSON *obj, const char *where, const char *const *allowed)
{
    for (const cJSON *k = obj->child; k; k = k->next) {
        int ok = 0;
        for (int i = 0; allowed[i] && !ok; i++) ok = !strcmp(k->string, allowed[i]);
        if (!ok)
            return zmix_error_set(L->err, ZMIX_EFORMAT,
                                  "%s: %s has the field '%.64s', which zmix does not implement",
                                  L->path, where, k->string);
    }
    return 0;
}

static const cJSON *get(const cJSON *obj, const char *key)
{
    return cJSON_GetObjectItemCaseSensitive(obj, key);
}

/* A boolean field: absent or null gives def. */
static int get_bool(loader *L, const cJSON *obj, const char *where, const char *key, int def,
                    int *out)
{
    const cJSON *v = get(obj, key);
    *out = def;
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsBool(v)) {
        char w[160];
        snprintf(w, sizeof w, "%s.%s", where, key);
        return bad(L, w, "is not true or false");
    }
    *out = cJSON_IsTrue(v);
    return 0;
}

static int get_string(loader *L, const cJSON *obj, const char *where, const char *key,
                      const char **out)
{
    const cJSON *v = get(obj, key);
    *out = "";
    if (!cJSON_IsString(v)) {
        char w[160];
        snprintf(w, sizeof w, "%s.%s", where, key);
        return bad(L, w, v ? "is not a string" : "is missing");
    }
    *out = v->valuestring;
    return 0;
}

static int add_str(loader *L, const char *s, tok_str *out)
{
    return tok_arena_add(L->t, s, strlen(s), out) ? oom(L) : 0;
}

/* The string of a {"String": s} pattern; Regex patterns are refused (zmix scans only the
 * split patterns it knows, and those only in Split pre-tokenizers). */
static int string_pattern(loader *L, const cJSON *obj, const char *where, tok_str *out)
{
    const cJSON *pat = get(obj, "pattern");
    const cJSON *s = pat ? get(pat, "String") : NULL;
    char w[160];
    snprintf(w, sizeof w, "%s.pattern", where);
    if (pat && get(pat, "Regex"))
        return bad(L, w, "is a regex; zmix implements only string patterns here");
    if (!cJSON_IsString(s) || !s->valuestring[0]) return bad(L, w, "is not {\"String\": text}");
    return add_str(L, s->valuestring, out);
}

static int is_type(const cJSON *obj, const char *type)
{
    const cJSON *t = get(obj, "type");
    return cJSON_IsString(t) && !strcmp(t->valuestring, type);
}

/* Growable component lists (normalizers, pre-tokenizers, decoders). */
static void *push(loader *L, void **items, int *n, size_t size, int *rc)
{
    if (*n >= MAX_COMPONENTS) {
        *rc = zmix_error_set(L->err, ZMIX_EFORMAT, "%s: more than %d components in a sequence",
                             L->path, MAX_COMPONENTS);
        return NULL;
    }
    void *p = realloc(*items, (size_t)(*n + 1) * size);
    if (!p) {
        *rc = oom(L);
        return NULL;
    }
    *items = p;
    void *item = (char *)p + (size_t)*n * size;
    memset(item, 0, size);
    (*n)++;
    *rc = 0;
    return item;
}

typedef int (*component_parser)(loader *L, const cJSON *obj, const char *where, int depth);

/* A component object, or a Sequence of them (its members in the array named list_key, each
 * parsed by parse, sequences nested at most 8 deep). Returns 1 when obj was a Sequence (then
 * *rc is the result), 0 when the caller parses obj itself; null and absent are empty. */
static int sequence(loader *L, const cJSON *obj, const char *where, int depth, const char *list_key,
                    component_parser parse, int *rc)
{
    *rc = 0;
    if (!obj || cJSON_IsNull(obj)) return 1;
    if (!cJSON_IsObject(obj)) return *rc = bad(L, where, "is not an object"), 1;
    if (depth > 8) return *rc = bad(L, where, "nests sequences too deeply"), 1;
    if (!is_type(obj, "Sequence")) return 0;
    const char *const keys[] = {"type", list_key, NULL};
    if ((*rc = only_keys(L, obj, where, keys))) return 1;
    const cJSON *list = get(obj, list_key);
    if (!cJSON_IsArray(list)) {
        char what[64];
        snprintf(what, sizeof what, "has no '%s' array", list_key);
        return *rc = bad(L, where, what), 1;
    }
    int i = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, list)
    {
        char w[160];
        snprintf(w, sizeof w, "%s.%s[%d]", where, list_key, i++);
        if ((*rc = parse(L, item, w, depth + 1))) return 1;
    }
    return 1;
}

static int parse_normalizer(loader *L, const cJSON *n, const char *where, int depth)
{
    int rc;
    if (sequence(L, n, where, depth, "normalizers", parse_normalizer, &rc)) return rc;
    tok_hf *t = L->t;
    tok_norm *x;
    if (is_type(n, "NFC")) {
        static const char *const keys[] = {"type", NULL};
        if ((rc = only_keys(L, n, where, keys))) return rc;
        if (!(x = push(L, (void **)&t->norms, &t->n_norms, sizeof *x, &rc))) return rc;
        x->kind = NORM_NFC;
        return 0;
    }
    if (is_type(n, "Prepend")) {
        static const char *const keys[] = {"type", "prepend", NULL};
        const char *s;
        if ((rc = only_keys(L, n, where, keys)) || (rc = get_string(L, n, where, "prepend", &s)))
            return rc;
        if (!(x = push(L, (void **)&t->norms, &t->n_norms, sizeof *x, &rc))) return rc;
        x->kind = NORM_PREPEND;
        return add_str(L, s, &x->a);
    }
    if (is_type(n, "Replace")) {
        static const char *const keys[] = {"type", "pattern", "content", NULL};
        const char *content;
        tok_str pat;
        if ((rc = only_keys(L, n, where, keys)) || (rc = string_pattern(L, n, where, &pat)) ||
            (rc = get_string(L, n, where, "content", &content)))
            return rc;
        if (!(x = push(L, (void **)&t->norms, &t->n_norms, sizeof *x, &rc))) return rc;
        x->kind = NORM_REPLACE;
        x->a = pat;
        return add_str(L, content, &x->b);
    }
    return unsupported(L, where, n);
}

static int parse_prepend_scheme(loader *L, const cJSON *obj, const char *where, int *out)
{
    *out = PREPEND_ALWAYS;
    const cJSON *scheme = get(obj, "prepend_scheme");
    if (scheme && !cJSON_IsNull(scheme)) {
        const char *s = cJSON_IsString(scheme) ? scheme->valuestring : "";
        if (!strcmp(s, "always"))
            *out = PREPEND_ALWAYS;
        else if (!strcmp(s, "first"))
            *out = PREPEND_FIRST;
        else if (!strcmp(s, "never"))
            *out = PREPEND_NEVER;
        else
            return bad(L, where, "has a prepend_scheme other than always, first, never");
        return 0;
    }
    /* Files written before prepend_scheme existed say add_prefix_space (default true). */
    int add = 1;
    int rc = get_bool(L, obj, where, "add_prefix_space", 1, &add);
    *out = add ? PREPEND_ALWAYS : PREPEND_NEVER;
    return rc;
}

static int parse_replacement(loader *L, const cJSON *obj, const char *where, tok_str *out)
{
    const char *r;
    int rc = get_string(L, obj, where, "replacement", &r);
    if (rc) return rc;
    const unsigned char *u = (const unsigned char *)r;
    size_t len = strlen(r);
    if (len == 0 || (size_t)utf8_len_of_lead(u[0]) != len)
        return bad(L, where, "has a replacement that is not one character");
    return add_str(L, r, out);
}

static int parse_pre_tokenizer(loader *L, const cJSON *p, const char *where, int depth)
{
    int rc;
    if (sequence(L, p, where, depth, "pretokenizers", parse_pre_tokenizer, &rc)) return rc;
    tok_hf *t = L->t;
    if (t->n_pres && t->pres[t->n_pres - 1].kind == PRE_BYTELEVEL)
        return bad(L, where, "follows a ByteLevel pre-tokenizer (zmix needs ByteLevel last)");
    tok_pre *x;
    if (is_type(p, "ByteLevel")) {
        static const char *const keys[] = {"type", "add_prefix_space", "trim_offsets", "use_regex",
                                           NULL};
        int prefix, regex;
        if ((rc = only_keys(L, p, where, keys)) ||
            (rc = get_bool(L, p, where, "add_prefix_space", 1, &prefix)) ||
            (rc = get_bool(L, p, where, "use_regex", 1, &regex)))
            return rc;
        if (!(x = push(L, (void **)&t->pres, &t->n_pres, sizeof *x, &rc))) return rc;
        x->kind = PRE_BYTELEVEL;
        x->add_prefix_space = prefix;
        x->pattern = regex ? TOK_PAT_GPT2 : -1;
        t->byte_level = 1;
        return 0;
    }
    if (is_type(p, "Split")) {
        static const char *const keys[] = {"type", "pattern", "behavior", "invert", NULL};
        const char *behavior;
        int invert;
        if ((rc = only_keys(L, p, where, keys)) ||
            (rc = get_string(L, p, where, "behavior", &behavior)) ||
            (rc = get_bool(L, p, where, "invert", 0, &invert)))
            return rc;
        if (strcmp(behavior, "Isolated") || invert)
            return zmix_error_set(L->err, ZMIX_EFORMAT,
                                  "%s: %s: Split with behavior '%.32s'%s is not supported (zmix "
                                  "implements Isolated, not inverted)",
                                  L->path, where, behavior, invert ? " inverted" : "");
        const cJSON *pat = get(p, "pattern");
        const cJSON *re = pat ? get(pat, "Regex") : NULL;
        if (!cJSON_IsString(re))
            return bad(L, where,
                       "has a pattern that is not {\"Regex\": ...} (zmix splits by the "
                       "regexes it knows)");
        int which = tok_pattern_find(re->valuestring, strlen(re->valuestring));
        if (which < 0)
            return zmix_error_set(L->err, ZMIX_EFORMAT,
                                  "%s: %s.pattern.Regex '%.120s' is not a split pattern zmix "
                                  "knows (GPT-2's, Llama 3's, Qwen2's)",
                                  L->path, where, re->valuestring);
        if (!(x = push(L, (void **)&t->pres, &t->n_pres, sizeof *x, &rc))) return rc;
        x->kind = PRE_SPLIT;
        x->pattern = which;
        return 0;
    }
    if (is_type(p, "Metaspace")) {
        static const char *const keys[] = {
            "type", "replacement", "prepend_scheme", "split", "str_rep", "add_prefix_space", NULL};
        tok_str repl;
        int scheme, split;
        if ((rc = only_keys(L, p, where, keys)) || (rc = parse_replacement(L, p, where, &repl)) ||
            (rc = parse_prepend_scheme(L, p, where, &scheme)) ||
            (rc = get_bool(L, p, where, "split", 1, &split)))
            return rc;
        const cJSON *str_rep = get(p, "str_rep");
        if (str_rep && (!cJSON_IsString(str_rep) || strcmp(str_rep->valuestring, tok_s(t, repl))))
            return bad(L, where, "has a str_rep other than its replacement");
        if (!(x = push(L, (void **)&t->pres, &t->n_pres, sizeof *x, &rc))) return rc;
        x->kind = PRE_METASPACE;
        x->replacement = repl;
        x->prepend = scheme;
        x->split = split;
        return 0;
    }
    if (is_type(p, "Digits")) {
        static const char *const keys[] = {"type", "individual_digits", NULL};
        int individual;
        if ((rc = only_keys(L, p, where, keys)) ||
            (rc = get_bool(L, p, where, "individual_digits", 0, &individual)))
            return rc;
        if (!(x = push(L, (void **)&t->pres, &t->n_pres, sizeof *x, &rc))) return rc;
        x->kind = PRE_DIGITS;
        x->individual = individual;
        return 0;
    }
    return unsupported(L, where, p);
}

static int parse_decoder(loader *L, const cJSON *d, const char *where, int depth)
{
    int rc;
    if (sequence(L, d, where, depth, "decoders", parse_decoder, &rc)) return rc;
    tok_hf *t = L->t;
    tok_dec *x;
    if (is_type(d, "ByteLevel")) {
        static const char *const keys[] = {"type", "add_prefix_space", "trim_offsets", "use_regex",
                                           NULL};
        if ((rc = only_keys(L, d, where, keys))) return rc;
        if (!(x = push(L, (void **)&t->decs, &t->n_decs, sizeof *x, &rc))) return rc;
        x->kind = DEC_BYTELEVEL;
        return 0;
    }
    if (is_type(d, "ByteFallback") || is_type(d, "Fuse")) {
        static const char *const keys[] = {"type", NULL};
        if ((rc = only_keys(L, d, where, keys))) return rc;
        if (!(x = push(L, (void **)&t->decs, &t->n_decs, sizeof *x, &rc))) return rc;
        x->kind = is_type(d, "Fuse") ? DEC_FUSE : DEC_BYTEFALLBACK;
        return 0;
    }
    if (is_type(d, "Replace")) {
        static const char *const keys[] = {"type", "pattern", "content", NULL};
        const char *content;
        tok_str pat;
        if ((rc = only_keys(L, d, where, keys)) || (rc = string_pattern(L, d, where, &pat)) ||
            (rc = get_string(L, d, where, "content", &content)))
            return rc;
        if (!(x = push(L, (void **)&t->decs, &t->n_decs, sizeof *x, &rc))) return rc;
        x->kind = DEC_REPLACE;
        x->a = pat;
        return add_str(L, content, &x->b);
    }
    if (is_type(d, "Strip")) {
        static const char *const keys[] = {"type", "content", "start", "stop", NULL};
        const char *content;
        if ((rc = only_keys(L, d, where, keys)) ||
            (rc = get_string(L, d, where, "content", &content)))
            return rc;
        const cJSON *start = get(d, "start"), *stop = get(d, "stop");
        if (!cJSON_IsNumber(start) || !cJSON_IsNumber(stop) || start->valuedouble < 0 ||
            stop->valuedouble < 0 || start->valuedouble > 1e6 || stop->valuedouble > 1e6)
            return bad(L, where, "has a start or stop that is not a small count");
        if (!content[0] || (size_t)utf8_len_of_lead((unsigned char)content[0]) != strlen(content))
            return bad(L, where, "has a content that is not one character");
        if (!(x = push(L, (void **)&t->decs, &t->n_decs, sizeof *x, &rc))) return rc;
        x->kind = DEC_STRIP;
        x->start = (int)start->valuedouble;
        x->stop = (int)stop->valuedouble;
        return add_str(L, content, &x->content);
    }
    if (is_type(d, "Metaspace")) {
        static const char *const keys[] = {
            "type", "replacement", "prepend_scheme", "split", "str_rep", "add_prefix_space", NULL};
        tok_str repl;
        int scheme;
        if ((rc = only_keys(L, d, where, keys)) || (rc = parse_replacement(L, d, where, &repl)) ||
            (rc = parse_prepend_scheme(L, d, where, &scheme)))
            return rc;
        if (!(x = push(L, (void **)&t->decs, &t->n_decs, sizeof *x, &rc))) return rc;
        x->kind = DEC_METASPACE;
        x->a = repl;
        x->prepend = scheme;
        return 0;
    }
    return unsupported(L, where, d);
}

/* ---- the model ----------------------------------------------------------------------- */

/* Records the token string of id (as the file writes it). */
static int set_id_text(loader *L, int32_t id, const char *text, const char *where)
{
    tok_hf *t = L->t;
    if (id < 0 || id >= MAX_IDS) return bad(L, where, "has an id outside [0, 2^24)");
    if (id >= L->vocab_size)
        return zmix_error_set(L->err, ZMIX_ERANGE,
                              "%s: %s: token '%.64s' has id %d, outside the model's vocabulary "
                              "[0, %d)",
                              L->path, where, text, (int)id, L->vocab_size);
    if (id >= t->n_ids) {
        int n = t->n_ids ? t->n_ids : 1024;
        while (n <= id) n *= 2;
        tok_str *texts = realloc(t->id_text, (size_t)n * sizeof *texts);
        if (!texts) return oom(L);
        t->id_text = texts;
        uint8_t *sp = realloc(t->id_special, (size_t)n);
        if (!sp) return oom(L);
        t->id_special = sp;
        for (int i = t->n_ids; i < n; i++) {
            t->id_text[i] = (tok_str){0, UINT32_MAX};
            t->id_special[i] = 0;
        }
        t->n_ids = n;
    }
    return add_str(L, text, &t->id_text[id]);
}

/* The string BPE works on for a vocabulary entry: the text itself, or for byte-level
 * models the bytes its characters stand for. 0 when the entry has characters outside the
 * byte alphabet (no byte sequence produces it; it stays decodable). */
static int model_form(const tok_hf *t, const char *text, unsigned char *buf, size_t *len)
{
    size_t n = strlen(text);
    if (!t->byte_level) {
        memcpy(buf, text, n);
        *len = n;
        return 1;
    }
    size_t i = 0, o = 0;
    while (i < n) {
        int b = tok_char_to_byte(utf8_next((const unsigned char *)text, &i));
        if (b < 0) return 0;
        buf[o++] = (unsigned char)b;
    }
    *len = o;
    return 1;
}

static int parse_vocab(loader *L, const cJSON *vocab)
{
    tok_hf *t = L->t;
    if (!cJSON_IsObject(vocab)) return bad(L, "model.vocab", "is not an object");
    int n = cJSON_GetArraySize(vocab);
    if (n < 1 || n > MAX_IDS) return bad(L, "model.vocab", "is empty or larger than 2^24");
    if (tok_map_init(&t->vocab, (size_t)n)) return oom(L);
    unsigned char *buf = NULL;
    size_t buf_cap = 0;
    int rc = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, vocab)
    {
        double d = e->valuedouble;
        if (!cJSON_IsNumber(e) || d != floor(d) || d < 0 || d >= MAX_IDS) {
            rc = zmix_error_set(L->err, ZMIX_EFORMAT, "%s: model.vocab['%.64s'] is not a token id",
                                L->path, e->string);
            break;
        }
        int32_t id = (int32_t)d;
        if (id < t->n_ids && t->id_text[id].len != UINT32_MAX) {
            rc = zmix_error_set(L->err, ZMIX_EFORMAT,
                                "%s: model.vocab: id %d belongs to '%.64s' and '%.64s'", L->path,
                                (int)id, tok_s(t, t->id_text[id]), e->string);
            break;
        }
        if ((rc = set_id_text(L, id, e->string, "model.vocab"))) break;
        size_t need = strlen(e->string) + 1;
        if (need > buf_cap) {
            unsigned char *nb = realloc(buf, need * 2);
            if (!nb) {
                rc = oom(L);
                break;
            }
            buf = nb;
            buf_cap = need * 2;
        }
        size_t len;
        if (!model_form(t, e->string, buf, &len)) continue;
        tok_str key;
        if (tok_arena_add(t, buf, len, &key)) {
            rc = oom(L);
            break;
        }
        if (tok_map_put(&t->vocab, t->strings, key, id) != id) {
            rc = zmix_error_set(L->err, ZMIX_EFORMAT, "%s: model.vocab: '%.64s' appears twice",
                                L->path, e->string);
            break;
        }
    }
    free(buf);
    return rc;
}

static int32_t vocab_id(const tok_hf *t, const char *text)
{
    unsigned char small[256];
    size_t n = strlen(text), len;
    unsigned char *buf = n < sizeof small ? small : malloc(n + 1);
    if (!buf) return -1;
    int32_t id = model_form(t, text, buf, &len) ? tok_map_get(&t->vocab, t->strings, buf, len) : -1;
    if (buf != small) free(buf);
    return id;
}

static int parse_merges(loader *L, const cJSON *merges)
{
    tok_hf *t = L->t;
    if (!cJSON_IsArray(merges)) return bad(L, "model.merges", "is not an array");
    int n = cJSON_GetArraySize(merges);
    size_t size = table_size((size_t)n);
    t->merges = malloc(size * sizeof *t->merges);
    if (!t->merges) return oom(L);
    for (size_t i = 0; i < size; i++) t->merges[i].id = -1;
    t->merges_mask = size - 1;
    int rank = 0;
    const cJSON *m;
    char *joined = NULL;
    size_t joined_cap = 0;
    int rc = 0;
    cJSON_ArrayForEach(m, merges)
    {
        /* "left right", or ["left", "right"] in files written since tokenizers 0.20. */
        char left_buf[512];
        const char *left, *right;
        if (cJSON_IsString(m)) {
            const char *sp = strchr(m->valuestring, ' ');
            size_t ll = sp ? (size_t)(sp - m->valuestring) : 0;
            if (!sp || strchr(sp + 1, ' ') || ll >= sizeof left_buf) {
                rc = zmix_error_set(L->err, ZMIX_EFORMAT,
                                    "%s: model.merges[%d] '%.64s' is not two tokens", L->path, rank,
                                    m->valuestring);
                break;
            }
            memcpy(left_buf, m->valuestring, ll);
            left_buf[ll] = '\0';
            left = left_buf;
            right = sp + 1;
        } else if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2 &&
                   cJSON_IsString(cJSON_GetArrayItem(m, 0)) &&
                   cJSON_IsString(cJSON_GetArrayItem(m, 1))) {
            left = cJSON_GetArrayItem(m, 0)->valuestring;
            right = cJSON_GetArrayItem(m, 1)->valuestring;
        } else {
            rc = zmix_error_set(L->err, ZMIX_EFORMAT, "%s: model.merges[%d] is not two tokens",
                                L->path, rank);
            break;
        }
        size_t need = strlen(left) + strlen(right) + 1;
        if (need > joined_cap) {
            char *nj = realloc(joined, need * 2);
            if (!nj) {
                rc = oom(L);
                break;
            }
            joined = nj;
            joined_cap = need * 2;
        }
        snprintf(joined, joined_cap, "%s%s", left, right);
        int32_t a = vocab_id(t, left), b = vocab_id(t, right), ab = vocab_id(t, joined);
        if (a < 0 || b < 0 || ab < 0) {
            rc = zmix_error_set(L->err, ZMIX_EFORMAT,
                                "%s: model.merges[%d] ('%.48s', '%.48s'): '%.64s' is not in the "
                                "vocabulary",
                                L->path, rank, left, right,
                                a < 0   ? left
                                : b < 0 ? right
                                        : joined);
            break;
        }
        uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
        size_t i = hash_u64(key) & t->merges_mask;
        while (t->merges[i].id >= 0 && t->merges[i].key != key) i = (i + 1) & t->merges_mask;
        /* A pair listed twice keeps its first (best) rank, as the tokenizers library does. */
        if (t->merges[i].id < 0) t->merges[i] = (struct tok_merge_slot){key, rank, ab};
        rank++;
    }
    free(joined);
    return rc;
}

static int parse_model(loader *L, const cJSON *model)
{
    tok_hf *t = L->t;
    if (!cJSON_IsObject(model)) return bad(L, "model", "is missing or not an object");
    const cJSON *type = get(model, "type");
    if (!cJSON_IsString(type)) return bad(L, "model.type", "is missing");
    if (strcmp(type->valuestring, "BPE"))
        return zmix_error_set(L->err, ZMIX_EFORMAT,
                              "%s: model type '%.32s' is not supported (zmix implements BPE)",
                              L->path, type->valuestring);
    static const char *const keys[] = {"type",
                                       "dropout",
                                       "unk_token",
                                       "continuing_subword_prefix",
                                       "end_of_word_suffix",
                                       "fuse_unk",
                                       "byte_fallback",
                                       "ignore_merges",
                                       "vocab",
                                       "merges",
                                       NULL};
    int rc;
    if ((rc = only_keys(L, model, "model", keys))) return rc;
    const cJSON *dropout = get(model, "dropout");
    if (dropout && !cJSON_IsNull(dropout) &&
        !(cJSON_IsNumber(dropout) && dropout->valuedouble == 0))
        return bad(L, "model.dropout", "is set: BPE dropout makes tokens random; zmix refuses it");
    static const char *const affixes[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        const cJSON *v = get(model, affixes[i]);
        if (v && !cJSON_IsNull(v) && !(cJSON_IsString(v) && !v->valuestring[0]))
            return zmix_error_set(L->err, ZMIX_EFORMAT,
                                  "%s: model.%s is set, which zmix does not implement", L->path,
                                  affixes[i]);
    }
    if ((rc = get_bool(L, model, "model", "fuse_unk", 0, &t->fuse_unk)) ||
        (rc = get_bool(L, model, "model", "byte_fallback", 0, &t->byte_fallback)) ||
        (rc = get_bool(L, model, "model", "ignore_merges", 0, &t->ignore_merges)) ||
        (rc = parse_vocab(L, get(model, "vocab"))) || (rc = parse_merges(L, get(model, "merges"))))
        return rc;
    t->unk_id = -1;
    const cJSON *unk = get(model, "unk_token");
    if (unk && !cJSON_IsNull(unk)) {
        if (!cJSON_IsString(unk)) return bad(L, "model.unk_token", "is not a string");
        t->unk_id = vocab_id(t, unk->valuestring);
        if (t->unk_id < 0)
            return zmix_error_set(L->err, ZMIX_EFORMAT,
                                  "%s: model.unk_token '%.64s' is not in the vocabulary", L->path,
                                  unk->valuestring);
    }
    for (int b = 0; b < 256; b++) {
        t->byte_ids[b] = -1;
        char name[8];
        unsigned char one = (unsigned char)b;
        if (t->byte_level) {
            t->byte_ids[b] = tok_map_get(&t->vocab, t->strings, &one, 1);
            if (t->byte_ids[b] < 0) {
                unsigned char u[4];
                u[utf8_put(tok_byte_to_char(one), u)] = 0;
                return zmix_error_set(L->err, ZMIX_EFORMAT,
                                      "%s: model.vocab: a byte-level vocabulary needs a token for "
                                      "every byte; byte 0x%02X ('%s') has none",
                                      L->path, b, (const char *)u);
            }
        } else if (t->byte_fallback) {
            snprintf(name, sizeof name, "<0x%02X>", b);
            t->byte_ids[b] = tok_map_get(&t->vocab, t->strings, name, strlen(name));
            if (t->byte_ids[b] < 0)
                return zmix_error_set(L->err, ZMIX_EFORMAT,
                                      "%s: model.byte_fallback is true but the vocabulary has no "
                                      "'%s'",
                                      L->path, name);
        }
    }
    if (t->byte_level && t->byte_fallback)
        return bad(L, "model.byte_fallback", "is true in a byte-level tokenizer");
    return 0;
}

/* ---- added tokens -------------------------------------------------------------------- */

typedef struct pending_added {
    const char *content;
    int32_t id;
    int special, lstrip, rstrip, normalized;
} pending_added;

static int by_length_desc(const void *a, const void *b)
{
    const tok_added *x = a, *y = b;
    return x->content.len < y->content.len ? 1 : x->content.len > y->content.len ? -1 : 0;
}

static int parse_added(loader *L, const cJSON *list)
{
    tok_hf *t = L->t;
    if (!list || cJSON_IsNull(list)) return 0;
    if (!cJSON_IsArray(list)) return bad(L, "added_tokens", "is not an array");
    int n = cJSON_GetArraySize(list);
    t->added_raw = calloc((size_t)n + 1, sizeof *t->added_raw);
    t->added_norm = calloc((size_t)n + 1, sizeof *t->added_norm);
    if (!t->added_raw || !t->added_norm) return oom(L);
    int i = 0, rc;
    const cJSON *a;
    cJSON_ArrayForEach(a, list)
    {
        char w[64];
        snprintf(w, sizeof w, "added_tokens[%d]", i++);
        static const char *const keys[] = {"id",     "content",    "single_word", "lstrip",
                                           "rstrip", "normalized", "special",     NULL};
        if (!cJSON_IsObject(a)) return bad(L, w, "is not an object");
        const char *content;
        int single, lstrip, rstrip, special, normalized;
        if ((rc = only_keys(L, a, w, keys)) || (rc = get_string(L, a, w, "content", &content)) ||
            (rc = get_bool(L, a, w, "single_word", 0, &single)) ||
            (rc = get_bool(L, a, w, "lstrip", 0, &lstrip)) ||
            (rc = get_bool(L, a, w, "rstrip", 0, &rstrip)) ||
            (rc = get_bool(L, a, w, "special", 0, &special)) ||
            (rc = get_bool(L, a, w, "normalized", !special, &normalized)))
            return rc;
        const cJSON *idv = get(a, "id");
        if (!cJSON_IsNumber(idv) || idv->valuedouble != floor(idv->valuedouble) ||
            idv->valuedouble < 0 || idv->valuedouble >= MAX_IDS)
            return bad(L, w, "has no integer id");
        int32_t id = (int32_t)idv->valuedouble;
        if (!content[0]) return bad(L, w, "has empty content");
        if (single)
            return zmix_error_set(L->err, ZMIX_EFORMAT,
                                  "%s: %s ('%.64s') has single_word set, which zmix does not "
                                  "implement",
                                  L->path, w, content);
        /* An added token may repeat a vocabulary entry (Llama 2's <s>); with another id it
         * would make the two disagree. */
        if (id < t->n_ids && t->id_text[id].len != UINT32_MAX &&
            strcmp(tok_s(t, t->id_text[id]), content))
            return zmix_error_set(L->err, ZMIX_EFORMAT,
                                  "%s: %s: id %d is '%.64s' here and '%.64s' in the vocabulary",
                                  L->path, w, (int)id, content, tok_s(t, t->id_text[id]));
        if ((rc = set_id_text(L, id, content, w))) return rc;
        t->id_special[id] = (uint8_t)special;
        tok_added x = {{0, 0}, id, (uint8_t)special, (uint8_t)lstrip, (uint8_t)rstrip};
        if (normalized && t->n_norms) {
            char *norm;
            size_t norm_len;
            if (tok_hf_normalize(t, content, strlen(content), &norm, &norm_len)) return oom(L);
            int r = norm_len ? tok_arena_add(t, norm, norm_len, &x.content) : 0;
            free(norm);
            if (r) return oom(L);
            if (norm_len) t->added_norm[t->n_added_norm++] = x;
        } else {
            if ((rc = add_str(L, content, &x.content))) return rc;
            if (normalized)
                t->added_norm[t->n_added_norm++] = x;
            else
                t->added_raw[t->n_added_raw++] = x;
        }
    }
    qsort(t->added_raw, (size_t)t->n_added_raw, sizeof *t->added_raw, by_length_desc);
    qsort(t->added_norm, (size_t)t->n_added_norm, sizeof *t->added_norm, by_length_desc);
    return 0;
}

/* ---- post-processor and tokenizer_config.json ------------------------------------------- */

static int parse_template(loader *L, const cJSON *p, const char *where)
{
    tok_hf *t = L->t;
    static const char *const keys[] = {"type", "single", "pair", "special_tokens", NULL};
    int rc = only_keys(L, p, where, keys);
    if (rc) return rc;
    const cJSON *single = get(p, "single"), *specials = get(p, "special_tokens");
    if (!cJSON_IsArray(single)) return bad(L, where, "has no 'single' template");
    int seen_a = 0, i = 0;
    t->n_prefix = t->n_suffix = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, single)
    {
        char w[160];
        snprintf(w, sizeof w, "%s.single[%d]", where, i++);
        const cJSON *seq = get(item, "Sequence"), *sp = get(item, "SpecialToken");
        if (seq) {
            const cJSON *sid = get(seq, "id");
            if (seen_a || !cJSON_IsString(sid) || strcmp(sid->valuestring, "A"))
                return bad(L, w, "is not the one sequence A");
            seen_a = 1;
            continue;
        }
        const cJSON *name = sp ? get(sp, "id") : NULL;
        if (!cJSON_IsString(name)) return bad(L, w, "is neither a Sequence nor a SpecialToken");
        const cJSON *entry = get(specials, name->valuestring);
        const cJSON *ids = entry ? get(entry, "ids") : NULL;
        if (!cJSON_IsArray(ids))
            return zmix_error_set(L->err, ZMIX_EFORMAT,
                                  "%s: %s: special token '%.64s' is not in %s.special_tokens",
                                  L->path, w, name->valuestring, where);
        const cJSON *idv;
        cJSON_ArrayForEach(idv, ids)
        {
            int32_t *list = seen_a ? t->suffix : t->prefix;
            int *n = seen_a ? &t->n_suffix : &t->n_prefix;
            if (*n >= TOK_MAX_SPECIALS) return bad(L, w, "adds too many special tokens");
            double d = idv->valuedouble;
            if (!cJSON_IsNumber(idv) || d != floor(d) || d < 0 || d >= L->vocab_size)
                return zmix_error_set(L->err, ZMIX_ERANGE,
                                      "%s: %s: special token '%.64s' has an id outside the "
                                      "model's vocabulary [0, %d)",
                                      L->path, w, name->valuestring, L->vocab_size);
            list[(*n)++] = (int32_t)d;
        }
    }
    if (!seen_a) return bad(L, where, "has a single template without sequence A");
    return 0;
}

static int parse_post(loader *L, const cJSON *p, const char *where, int depth)
{
    int rc;
    if (sequence(L, p, where, depth, "processors", parse_post, &rc)) return rc;
    if (is_type(p, "ByteLevel")) return 0; /* offsets only: no effect on ids */
    if (is_type(p, "TemplateProcessing")) return parse_template(L, p, where);
    return unsupported(L, where, p);
}

/* The id of a token named in tokenizer_config.json: an added token or a vocabulary entry. */
static int32_t token_id(const tok_hf *t, const char *content)
{
    for (int i = 0; i < t->n_ids; i++)
        if (t->id_text[i].len != UINT32_MAX && t->id_special[i] &&
            !strcmp(tok_s(t, t->id_text[i]), content))
            return i;
    int32_t id = vocab_id(t, content);
    if (id >= 0) return id;
    for (int i = 0; i < t->n_ids; i++)
        if (t->id_text[i].len != UINT32_MAX && !strcmp(tok_s(t, t->id_text[i]), content)) return i;
    return -1;
}

/* bos_token / eos_token: a string, {"content": ...} (an AddedToken), or null. -1 when absent;
 * an error when it names no token. */
static int config_token(loader *L, const char *cfg_path, const cJSON *cfg, const char *key,
                        int32_t *out)
{
    *out = -1;
    const cJSON *v = get(cfg, key);
    if (!v || cJSON_IsNull(v)) return 0;
    if (cJSON_IsObject(v)) v = get(v, "content");
    if (!cJSON_IsString(v))
        return zmix_error_set(L->err, ZMIX_EFORMAT, "%s: %s is not a token", cfg_path, key);
    *out = token_id(L->t, v->valuestring);
    if (*out < 0)
        return zmix_error_set(L->err, ZMIX_EFORMAT,
                              "%s: %s '%.64s' is not a token of tokenizer.json", cfg_path, key,
                              v->valuestring);
    return 0;
}

static int parse_config(loader *L, const char *cfg_path)
{
    tok_hf *t = L->t;
    struct stat st;
    if (stat(cfg_path, &st) != 0) return 0; /* optional */
    cJSON *cfg;
    int rc = zmix_json_load_file(cfg_path, MAX_CONFIG_BYTES, &cfg, L->err);
    if (rc) return rc;
    int32_t bos, eos;
    if ((rc = config_token(L, cfg_path, cfg, "bos_token", &bos)) ||
        (rc = config_token(L, cfg_path, cfg, "eos_token", &eos)))
        goto out;
    if (bos >= 0) t->bos_id = bos;
    if (eos >= 0) t->eos_id = eos;
    /* add_bos_token / add_eos_token, when given, decide that side of the text as transformers'
     * Llama-family tokenizers do (they rebuild the post-processor from them); when absent,
     * the post-processor of tokenizer.json decides. */
    static const char *const flags[2] = {"add_bos_token", "add_eos_token"};
    for (int side = 0; side < 2; side++) {
        const cJSON *v = get(cfg, flags[side]);
        if (!v || cJSON_IsNull(v)) continue;
        if (!cJSON_IsBool(v)) {
            rc = zmix_error_set(L->err, ZMIX_EFORMAT, "%s: %s is not true or false", cfg_path,
                                flags[side]);
            goto out;
        }
        int32_t id = side ? t->eos_id : t->bos_id;
        int *n = side ? &t->n_suffix : &t->n_prefix;
        int32_t *list = side ? t->suffix : t->prefix;
        *n = 0;
        if (!cJSON_IsTrue(v)) continue;
        if (id < 0) {
            rc = zmix_error_set(L->err, ZMIX_EFORMAT, "%s: %s is true but %s is not set", cfg_path,
                                flags[side], side ? "eos_token" : "bos_token");
            goto out;
        }
        list[(*n)++] = id;
    }
out:
    cJSON_Delete(cfg);
    return rc;
}

/* ---- bounds and summary ---------------------------------------------------------------- */

/* How many tokens s can become at most: its bytes for a byte-level model; for a character
 * model one per character in the vocabulary and one per byte (byte fallback) otherwise. */
static size_t token_cost(const tok_hf *t, tok_str s)
{
    const unsigned char *p = (const unsigned char *)tok_s(t, s);
    if (t->byte_level) return s.len;
    size_t cost = 0, i = 0;
    while (i < s.len) {
        size_t start = i;
        utf8_next(p, &i);
        cost += tok_map_get(&t->vocab, t->strings, p + start, i - start) >= 0 ? 1 : i - start;
    }
    return cost;
}

/* Every token covers at least one byte of what the pre-tokenizers hand the model, so the bound
 * follows what the normalizers and pre-tokenizers can add: per_byte for what grows with the
 * text, per_text for what is added once per piece between added tokens. */
static void compute_bounds(tok_hf *t)
{
    size_t f = 1, c = 0;
    int pieces_are_segments = 1;
    for (int i = 0; i < t->n_norms; i++) {
        const tok_norm *n = &t->norms[i];
        if (n->kind == NORM_NFC) {
            f *= 3; /* NFC grows UTF-8 by at most a factor of 3 */
            c *= 3;
        } else if (n->kind == NORM_PREPEND) {
            c += token_cost(t, n->a);
        } else {
            size_t r = (token_cost(t, n->b) + n->a.len - 1) / n->a.len;
            if (r > 1) {
                f *= r;
                c *= r;
            }
        }
    }
    for (int i = 0; i < t->n_pres; i++) {
        const tok_pre *p = &t->pres[i];
        size_t add = 0;
        if (p->kind == PRE_METASPACE) {
            size_t r = token_cost(t, p->replacement);
            if (r > 1) f *= r; /* each space becomes the replacement */
            if (p->prepend != PREPEND_NEVER) add = r;
        } else if (p->kind == PRE_BYTELEVEL && p->add_prefix_space) {
            add = 1;
        }
        if (add) {
            if (pieces_are_segments)
                c += add;
            else
                f += add; /* once per piece, and a piece has at least one byte */
        }
        if (p->kind != PRE_METASPACE || p->split) pieces_are_segments = 0;
    }
    t->per_byte = f;
    t->per_text = c;
    /* Pieces are separated by added tokens; each covers at least the shortest added token's
     * bytes and becomes one token, so it adds 1 + per_text - per_byte * shortest at most. */
    size_t shortest = SIZE_MAX;
    for (int i = 0; i < t->n_added_raw; i++)
        if (t->added_raw[i].content.len < shortest) shortest = t->added_raw[i].content.len;
    for (int i = 0; i < t->n_added_norm; i++)
        if (t->added_norm[i].content.len < shortest) shortest = t->added_norm[i].content.len;
    if (shortest != SIZE_MAX && 1 + c > f * shortest) t->per_byte = f + (1 + c - f * shortest);
}

static void make_summary(tok_hf *t)
{
    const char *split = "no split";
    for (int i = 0; i < t->n_pres; i++)
        if (t->pres[i].pattern >= 0) split = tok_pattern_name(t->pres[i].pattern);
    if (t->byte_level)
        snprintf(t->summary, sizeof t->summary, "byte-level BPE (%s split%s), %d ids", split,
                 t->n_norms ? ", normalized" : "", t->n_ids);
    else
        snprintf(t->summary, sizeof t->summary, "SentencePiece-style BPE (%s), %d ids",
                 t->byte_fallback ? "byte fallback" : "no byte fallback", t->n_ids);
}

int tok_hf_load(const struct cJSON *root, const char *path, int vocab_size, tok_hf **out,
                zmix_error *err)
{
    *out = NULL;
    tok_hf *t = calloc(1, sizeof *t);
    if (!t) return zmix_error_set(err, ZMIX_ENOMEM, "%s: out of memory", path);
    t->bos_id = t->eos_id = t->unk_id = -1;
    loader L = {t, path, err, vocab_size};
    int rc;
    static const char *const keys[] = {
        "version",       "truncation",     "padding", "added_tokens", "normalizer",
        "pre_tokenizer", "post_processor", "decoder", "model",        NULL};
    /* Normalizer and pre-tokenizer first: the model's vocabulary form depends on whether it is
     * byte-level, and normalized added tokens are matched in normalized form. truncation and
     * padding are batch settings that transformers turns off for a plain call. */
    if ((rc = only_keys(&L, root, "the top level", keys)) ||
        (rc = parse_normalizer(&L, get(root, "normalizer"), "normalizer", 0)) ||
        (rc = parse_pre_tokenizer(&L, get(root, "pre_tokenizer"), "pre_tokenizer", 0)) ||
        (rc = parse_model(&L, get(root, "model"))) ||
        (rc = parse_added(&L, get(root, "added_tokens"))) ||
        (rc = parse_post(&L, get(root, "post_processor"), "post_processor", 0)) ||
        (rc = parse_decoder(&L, get(root, "decoder"), "decoder", 0)))
        goto fail;
    for (int i = 0; i < t->n_pres; i++)
        if (t->pres[i].kind == PRE_METASPACE && t->byte_level) {
            rc = bad(&L, "pre_tokenizer", "mixes Metaspace and ByteLevel");
            goto fail;
        }
    if (t->n_prefix == 1) t->bos_id = t->prefix[0];
    if (t->n_suffix == 1) t->eos_id = t->suffix[0];
    char cfg_path[1100];
    const char *slash = strrchr(path, '/');
    int dir_len = slash ? (int)(slash - path) : 1;
    snprintf(cfg_path, sizeof cfg_path, "%.*s/tokenizer_config.json", dir_len, slash ? path : ".");
    if ((rc = parse_config(&L, cfg_path))) goto fail;
    compute_bounds(t);
    make_summary(t);
    *out = t;
    return 0;
fail:
    tok_hf_free(t);
    return rc;
}
