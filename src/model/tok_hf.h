/*
 * Hugging Face tokenizers (tokenizer.json) inside zmix: the loaded form of a BPE tokenizer
 * and the three halves that use it — tok_hf_load.c (tokenizer.json and tokenizer_config.json
 * to this struct, refusing what it does not implement by name), tok_hf_encode.c (text to ids:
 * added tokens, normalizer, pre-tokenizer, BPE, post-processor) and tok_hf_decode.c (ids to
 * text through the decoder chain). The semantics are those of the tokenizers library (the
 * Rust one transformers uses); docs/model-formats.md lists what is supported.
 *
 * Immutable once loaded: encoding and decoding allocate their own scratch, so one tokenizer
 * serves any number of threads.
 */
#ifndef ZMIX_TOK_HF_H
#define ZMIX_TOK_HF_H

#include <stddef.h>
#include <stdint.h>

#include "zmix/common.h"

/* A byte string held in a tok_hf's string arena. */
typedef struct tok_str {
    uint32_t off, len;
} tok_str;

/* Open-addressing map from byte strings (in the arena) to int32 values. */
typedef struct tok_map {
    struct tok_map_slot *slots;
    size_t mask; /* slots - 1, a power of two minus one */
    size_t n;
} tok_map;

/* The three split patterns zmix scans by hand (tok_split.c). */
enum tok_pattern {
    TOK_PAT_GPT2 = 0, /* GPT-2's, built into the ByteLevel pre-tokenizer */
    TOK_PAT_LLAMA3,   /* Llama 3's (and SmolLM3's, ...): numbers in runs of up to 3 */
    TOK_PAT_QWEN2,    /* Qwen2's: the same with single-digit numbers */
    TOK_PAT_COUNT
};

enum tok_norm_kind { NORM_NFC, NORM_PREPEND, NORM_REPLACE };
typedef struct tok_norm {
    int kind;
    tok_str a, b; /* PREPEND: a; REPLACE: every a becomes b */
} tok_norm;

enum tok_pre_kind { PRE_SPLIT, PRE_BYTELEVEL, PRE_METASPACE, PRE_DIGITS };
enum tok_prepend { PREPEND_NEVER, PREPEND_FIRST, PREPEND_ALWAYS };
typedef struct tok_pre {
    int kind;
    int pattern;          /* SPLIT; BYTELEVEL with use_regex (TOK_PAT_GPT2), else -1 */
    int add_prefix_space; /* BYTELEVEL */
    tok_str replacement;  /* METASPACE: the replacement character's UTF-8 */
    int prepend;          /* METASPACE: enum tok_prepend */
    int split;            /* METASPACE: split before each replacement character */
    int individual;       /* DIGITS: each digit alone */
} tok_pre;

enum tok_dec_kind {
    DEC_BYTELEVEL,
    DEC_REPLACE,
    DEC_BYTEFALLBACK,
    DEC_FUSE,
    DEC_STRIP,
    DEC_METASPACE
};
typedef struct tok_dec {
    int kind;
    tok_str a, b;    /* REPLACE: a becomes b; METASPACE: a is the replacement */
    tok_str content; /* STRIP: the character to strip */
    int start, stop; /* STRIP: how many at most at each end */
    int prepend;     /* METASPACE: enum tok_prepend */
} tok_dec;

typedef struct tok_added {
    tok_str content; /* what is matched: the content, normalized when the token is */
    int32_t id;
    uint8_t special, lstrip, rstrip;
} tok_added;

#define TOK_MAX_SPECIALS 8 /* tokens a template may put before or after a text */

typedef struct tok_hf {
    char *strings; /* the arena every tok_str points into */
    size_t strings_len, strings_cap;

    int byte_level; /* the model works on bytes (ByteLevel pre-tokenizer) */
    char summary[160];

    /* Every id the tokenizer knows (model vocabulary and added tokens): its token string as
     * tokenizer.json writes it (len UINT32_MAX: no token has this id), and whether it is an
     * added token marked special. */
    int n_ids;
    tok_str *id_text;
    uint8_t *id_special;

    /* The BPE model. vocab maps the model's strings — for byte-level models the bytes they
     * stand for — to ids; merges maps (left id << 32 | right id) to an index into merge_to. */
    tok_map vocab;
    struct tok_merge_slot *merges;
    size_t merges_mask;
    int32_t byte_ids[256]; /* byte-level: each byte's token; byte fallback: <0xXX>; else -1 */
    int byte_fallback;
    int32_t unk_id; /* -1: none */
    int fuse_unk, ignore_merges;

    /* Added tokens, matched before the model: those matched on the raw text, and those
     * matched on the normalized text (content normalized). Each list longest first. */
    tok_added *added_raw, *added_norm;
    int n_added_raw, n_added_norm;

    tok_norm *norms;
    int n_norms;
    tok_pre *pres;
    int n_pres;
    tok_dec *decs;
    int n_decs;

    /* What the post-processor (or tokenizer_config.json's add_bos_token / add_eos_token)
     * puts around a text. */
    int32_t prefix[TOK_MAX_SPECIALS], suffix[TOK_MAX_SPECIALS];
    int n_prefix, n_suffix;
    int bos_id, eos_id; /* -1 when unknown */
    /* Bound on tokens per input byte and per text, for zmix_tokenizer_max_tokens. */
    size_t per_byte, per_text;
} tok_hf;

struct cJSON;
/* Builds a tokenizer from the parsed tokenizer.json at path (root) and, when present beside
 * it, tokenizer_config.json. Every id must lie below vocab_size. */
int tok_hf_load(const struct cJSON *root, const char *path, int vocab_size, tok_hf **out,
                zmix_error *err);
void tok_hf_free(tok_hf *t);

/* Encodes len bytes of text; flags as zmix_tokenizer_encode. ids has room for cap ids
 * (zmix_tokenizer_max_tokens); returns the count or a negative code. */
int tok_hf_encode(const tok_hf *t, const char *text, size_t len, int flags, int32_t *ids,
                  size_t cap, zmix_error *err);

/* Decodes like zmix_tokenizer_decode. */
size_t tok_hf_decode(const tok_hf *t, const int32_t *ids, int n, int mode, char *out,
                     size_t out_size);

/* The normalizer chain over one text (*out malloc'ed); -1 when out of memory. */
int tok_hf_normalize(const tok_hf *t, const char *s, size_t len, char **out, size_t *out_len);

/* s with every occurrence of a (left to right, not overlapping) replaced by b: malloc'ed,
 * NUL-terminated, its length in *out_len; NULL when out of memory. */
char *tok_replace_all(const char *s, size_t len, const char *a, size_t a_len, const char *b,
                      size_t b_len, size_t *out_len);

/* Arena and map helpers shared by the three files. */
int tok_arena_add(tok_hf *t, const void *p, size_t len, tok_str *out);
static inline const char *tok_s(const tok_hf *t, tok_str s)
{
    return t->strings + s.off;
}
int tok_map_init(tok_map *m, size_t n_expected);
void tok_map_free(tok_map *m);
/* The value of key, or -1. */
int32_t tok_map_get(const tok_map *m, const char *arena, const void *key, size_t len);
/* Inserts key (already in the arena at s) unless present; returns the value it maps to. */
int32_t tok_map_put(tok_map *m, const char *arena, tok_str s, int32_t value);
/* The id of the merge (left, right) and its rank, or -1. */
int32_t tok_merge_get(const tok_hf *t, int32_t left, int32_t right, int32_t *rank);

/* The split patterns (tok_split.c). Returns the pattern a tokenizer.json regex is, or -1. */
int tok_pattern_find(const char *regex, size_t len);
const char *tok_pattern_name(int pattern);
/* Length in code points of the pattern's match at cps[i] (cls: the classes tok_classify
 * gave); 0 when no alternative matches there. */
size_t tok_pattern_match(int pattern, const uint32_t *cps, const uint8_t *cls, size_t n, size_t i);
enum { TOK_C_LETTER = 1, TOK_C_NUMBER = 2, TOK_C_SPACE = 4, TOK_C_CRLF = 8 };
uint8_t tok_classify(uint32_t cp);

/* GPT-2's byte <-> character mapping of byte-level vocabularies. */
uint32_t tok_byte_to_char(unsigned char b);
int tok_char_to_byte(uint32_t cp); /* -1 when cp is not one of the 256 */

#endif
