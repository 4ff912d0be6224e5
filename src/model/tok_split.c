/*
 * The split patterns of byte-level BPE tokenizers, as hand-written scanners. A tokenizer.json
 * gives its pattern as an Oniguruma regex; zmix recognises the few that LLaMA-family models
 * use by their exact text and scans for what they match, alternative by alternative, with the
 * regex engine's rule (the first alternative that matches at a position wins, quantifiers
 * greedy with backtracking). Anything else is refused by name when the tokenizer loads:
 * implementing a general regex engine to run patterns nobody has checked would trade a clear
 * error for silently different tokens.
 *
 * Classes: \p{L} is general category L*, \p{N} is N*, \s is White_Space (tok_unicode.c).
 */
#include <string.h>

#include "tok_hf.h"
#include "tok_unicode.h"

static const char *const pattern_text[TOK_PAT_COUNT] = {
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+",
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
};

static const char *const pattern_names[TOK_PAT_COUNT] = {"GPT-2", "Llama 3", "Qwen2"};

int tok_pattern_find(const char *regex, size_t len)
{
    for (int p = 0; p < TOK_PAT_COUNT; p++)
        if (strlen(pattern_text[p]) == len && memcmp(pattern_text[p], regex, len) == 0) return p;
    return -1;
}

const char *tok_pattern_name(int pattern)
{
    return pattern >= 0 && pattern < TOK_PAT_COUNT ? pattern_names[pattern] : "none";
}

uint8_t tok_classify(uint32_t cp)
{
    if (cp < 0x80) {
        /* ASCII without the table: the common case. */
        if ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z') return TOK_C_LETTER;
        if (cp >= '0' && cp <= '9') return TOK_C_NUMBER;
        if (cp == '\r' || cp == '\n') return TOK_C_SPACE | TOK_C_CRLF;
        return ucd_is_white_space(cp) ? TOK_C_SPACE : 0;
    }
    if (ucd_is_white_space(cp)) return TOK_C_SPACE;
    int cat = ucd_category(cp);
    if (ucd_is_letter(cat)) return TOK_C_LETTER;
    if (ucd_is_number(cat)) return TOK_C_NUMBER;
    return 0;
}

#define IS(c, f) (((c) & (f)) != 0)
#define OTHER(c) (((c) & (TOK_C_LETTER | TOK_C_NUMBER | TOK_C_SPACE)) == 0)

static size_t run(const uint8_t *cls, size_t n, size_t i, uint8_t flag)
{
    size_t j = i;
    while (j < n && IS(cls[j], flag)) j++;
    return j;
}

static size_t run_other(const uint8_t *cls, size_t n, size_t i)
{
    size_t j = i;
    while (j < n && OTHER(cls[j])) j++;
    return j;
}

static uint32_t lower_ascii(uint32_t c)
{
    return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

/* 's 't 're 've 'm 'll 'd at i: the match length, or 0. fold: ASCII case-insensitively. */
static size_t contraction(const uint32_t *cps, size_t n, size_t i, int fold)
{
    if (cps[i] != '\'' || i + 1 >= n) return 0;
    uint32_t a = fold ? lower_ascii(cps[i + 1]) : cps[i + 1];
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    if (i + 2 >= n) return 0;
    uint32_t b = fold ? lower_ascii(cps[i + 2]) : cps[i + 2];
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    return 0;
}

/* \s+(?!\S)|\s+ at i (cls[i] is a space): the run, less its last space when a non-space
 * follows and the run has more than one. */
static size_t spaces(const uint8_t *cls, size_t n, size_t i)
{
    size_t j = run(cls, n, i, TOK_C_SPACE);
    if (j < n && j - i >= 2) j--;
    return j - i;
}

/* 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
static size_t match_gpt2(const uint32_t *cps, const uint8_t *cls, size_t n, size_t i)
{
    size_t m = contraction(cps, n, i, 0);
    if (m) return m;
    size_t j = i + (cps[i] == ' ' && i + 1 < n);
    if (j < n) {
        if (IS(cls[j], TOK_C_LETTER)) return run(cls, n, j, TOK_C_LETTER) - i;
        if (IS(cls[j], TOK_C_NUMBER)) return run(cls, n, j, TOK_C_NUMBER) - i;
        if (OTHER(cls[j])) return run_other(cls, n, j) - i;
    }
    return IS(cls[i], TOK_C_SPACE) ? spaces(cls, n, i) : 0;
}

/* (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,max_digits}|
 *  ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
static size_t match_llama3(const uint32_t *cps, const uint8_t *cls, size_t n, size_t i,
                           size_t max_digits)
{
    size_t m = contraction(cps, n, i, 1);
    if (m) return m;
    uint8_t c = cls[i];
    /* [^\r\n\p{L}\p{N}]?\p{L}+: the optional character is anything but CR, LF, a letter or a
     * number (a space or a tab among others), taken when a letter follows it. */
    if (!IS(c, TOK_C_CRLF | TOK_C_LETTER | TOK_C_NUMBER) && i + 1 < n &&
        IS(cls[i + 1], TOK_C_LETTER))
        return run(cls, n, i + 1, TOK_C_LETTER) - i;
    if (IS(c, TOK_C_LETTER)) return run(cls, n, i, TOK_C_LETTER) - i;
    if (IS(c, TOK_C_NUMBER)) {
        size_t j = run(cls, n, i, TOK_C_NUMBER);
        return j - i < max_digits ? j - i : max_digits;
    }
    size_t j = i + (cps[i] == ' ' && i + 1 < n);
    if (OTHER(cls[j])) {
        j = run_other(cls, n, j);
        return run(cls, n, j, TOK_C_CRLF) - i;
    }
    if (!IS(c, TOK_C_SPACE)) return 0;
    /* \s*[\r\n]+: the space run up to and including its last CR or LF. */
    size_t end = run(cls, n, i, TOK_C_SPACE);
    for (size_t k = end; k > i; k--)
        if (IS(cls[k - 1], TOK_C_CRLF)) return k - i;
    return spaces(cls, n, i);
}

size_t tok_pattern_match(int pattern, const uint32_t *cps, const uint8_t *cls, size_t n, size_t i)
{
    switch (pattern) {
    case TOK_PAT_GPT2: return match_gpt2(cps, cls, n, i);
    case TOK_PAT_LLAMA3: return match_llama3(cps, cls, n, i, 3);
    case TOK_PAT_QWEN2: return match_llama3(cps, cls, n, i, 1);
    default: return 0;
    }
}
