/*
 * tok_dump TOKENIZER.json CORPUS.json: encodes every string of a JSON array with zmix's
 * tokenizer and prints one JSON line per string — {"ids": [...], "plain": [...], "text": ...,
 * "skip": ...} (ids with the special tokens around the text, plain without, then the decoded
 * ids with and without special tokens) or {"error": "..."} — for the parity test
 * (test_tokenizer_parity.py), which compares them with the reference implementations.
 */
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zmix/model.h"

static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    size_t got;
    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    fclose(f);
    if (buf) buf[n < cap ? n : cap - 1] = '\0';
    *len = n;
    return buf;
}

static cJSON *id_array(const int32_t *ids, int n)
{
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(ids[i]));
    return a;
}

static char *decode(const zmix_tokenizer *tok, const int32_t *ids, int n, int escape)
{
    size_t need = zmix_tokenizer_decode(tok, ids, n, escape, NULL, 0);
    char *s = malloc(need + 1);
    if (s) zmix_tokenizer_decode(tok, ids, n, escape, s, need + 1);
    return s;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: tok_dump TOKENIZER.json CORPUS.json\n");
        return 2;
    }
    zmix_tokenizer *tok;
    zmix_error err;
    if (zmix_tokenizer_load(argv[1], 1 << 24, &tok, &err)) {
        fprintf(stderr, "tok_dump: %s\n", err.msg);
        return 1;
    }
    size_t len;
    char *text = read_all(argv[2], &len);
    cJSON *corpus = text ? cJSON_ParseWithLength(text, len) : NULL;
    free(text);
    if (!cJSON_IsArray(corpus)) {
        fprintf(stderr, "tok_dump: %s is not a JSON array\n", argv[2]);
        return 1;
    }
    const cJSON *item;
    cJSON_ArrayForEach(item, corpus)
    {
        const char *s = cJSON_IsString(item) ? item->valuestring : "";
        size_t n = strlen(s);
        cJSON *line = cJSON_CreateObject();
        int32_t *ids = malloc((zmix_tokenizer_max_tokens(tok, n, 3) + 1) * sizeof *ids);
        int32_t *plain = malloc((zmix_tokenizer_max_tokens(tok, n, 0) + 1) * sizeof *plain);
        int m = zmix_tokenizer_encode(tok, s, n, ZMIX_TOK_BOS | ZMIX_TOK_EOS, ids, &err);
        int k = m < 0 ? m : zmix_tokenizer_encode(tok, s, n, 0, plain, &err);
        if (k < 0) {
            cJSON_AddStringToObject(line, "error", err.msg);
        } else {
            cJSON_AddItemToObject(line, "ids", id_array(ids, m));
            cJSON_AddItemToObject(line, "plain", id_array(plain, k));
            char *with = decode(tok, ids, m, ZMIX_DECODE_SPECIAL), *without = decode(tok, ids, m, 0);
            cJSON_AddStringToObject(line, "shown", with ? with : "");
            cJSON_AddStringToObject(line, "text", without ? without : "");
            free(with);
            free(without);
        }
        free(ids);
        free(plain);
        char *out = cJSON_PrintUnformatted(line);
        puts(out);
        free(out);
        cJSON_Delete(line);
    }
    cJSON_Delete(corpus);
    zmix_tokenizer_free(tok);
    return 0;
}
