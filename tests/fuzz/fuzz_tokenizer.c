/*
 * Text through the Hugging Face tokenizers (the daemon encodes text that clients send): any
 * bytes, encoded with each test tokenizer of tests/model/tokenizers/, either fail as invalid
 * UTF-8 naming the offset or give at most zmix_tokenizer_max_tokens ids, each a token the
 * tokenizer knows; decoding them for display works, and decoding them with the special tokens
 * gives the text back for the byte-level tokenizers without a normalizer.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "tok_unicode.h"
#include "zmix/model.h"

#ifndef ZMIX_TOKENIZER_FIXTURES
#error "ZMIX_TOKENIZER_FIXTURES must name tests/model/tokenizers"
#endif

static const char *const names[] = {"gpt2-mini",   "llama3-mini", "qwen2-mini",
                                    "smollm-mini", "llama2-mini", "mistral-mini"};
#define N_TOK (sizeof names / sizeof *names)
/* Whether decoding gives the input back: byte-level, no normalizer. */
static const int round_trips[N_TOK] = {1, 1, 0, 1, 0, 0};

/* Loaded once per process: a harness keeps its fixtures across inputs. */
static zmix_tokenizer *toks[N_TOK];

static void load_all(void)
{
    for (size_t k = 0; k < N_TOK; k++) {
        if (toks[k]) continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s/tokenizer.json", ZMIX_TOKENIZER_FIXTURES, names[k]);
        zmix_error err;
        FUZZ_CHECK(zmix_tokenizer_load(path, 1 << 20, &toks[k], &err) == 0);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    load_all();
    int valid = utf8_invalid_at(data, size) == size;
    for (size_t k = 0; k < N_TOK; k++) {
        const zmix_tokenizer *tok = toks[k];
        size_t cap = zmix_tokenizer_max_tokens(tok, size, ZMIX_TOK_BOS | ZMIX_TOK_EOS);
        int32_t *ids = malloc((cap + 1) * sizeof *ids);
        FUZZ_CHECK(ids != NULL);
        zmix_error err = {0};
        int n = zmix_tokenizer_encode(tok, (const char *)data, size, ZMIX_TOK_BOS | ZMIX_TOK_EOS,
                                      ids, &err);
        if (!valid) {
            FUZZ_CHECK(n == ZMIX_EINVAL && strstr(err.msg, "byte offset"));
            free(ids);
            continue;
        }
        FUZZ_CHECK(n >= 0 && (size_t)n <= cap);
        for (int i = 0; i < n; i++) FUZZ_CHECK(ids[i] >= 0 && ids[i] < (1 << 20));
        size_t need = zmix_tokenizer_decode(tok, ids, n, ZMIX_DECODE_SHOW, NULL, 0);
        char *shown = malloc(need + 1);
        FUZZ_CHECK(shown != NULL);
        zmix_tokenizer_decode(tok, ids, n, ZMIX_DECODE_SHOW, shown, need + 1);
        free(shown);
        if (round_trips[k]) {
            int m = zmix_tokenizer_encode(tok, (const char *)data, size, 0, ids, &err);
            FUZZ_CHECK(m >= 0);
            need = zmix_tokenizer_decode(tok, ids, m, ZMIX_DECODE_SPECIAL, NULL, 0);
            char *text = malloc(need + 1);
            FUZZ_CHECK(text != NULL);
            zmix_tokenizer_decode(tok, ids, m, ZMIX_DECODE_SPECIAL, text, need + 1);
            FUZZ_CHECK(need == size && memcmp(text, data, size) == 0);
            free(text);
        }
        free(ids);
    }
    return 0;
}
