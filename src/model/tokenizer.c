/*
 * The model's tokenizer: text to token ids and back, for few-shot examples written as text.
 * Two kinds, told apart by the model directory's tokenizer.json:
 *   - zmix's byte tokenizer ({"type": "bytes", ...}, the demo's): token id = byte value for
 *     0..255, plus BOS and EOS; encoding is a copy.
 *   - a Hugging Face tokenizers file (no top-level "type"): byte-level BPE (GPT-2, Llama 3,
 *     Qwen2, SmolLM) or SentencePiece-style BPE with byte fallback (Llama 2, Mistral,
 *     TinyLlama), with tokenizer_config.json beside it (tok_hf*.c).
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
#include "model_internal.h"
#include "tok_hf.h"
#include "util/file.h"

/* Llama 3's tokenizer.json is 9 MB and Gemma's 34 MB; this leaves room without letting a
 * stray file exhaust memory. */
#define MAX_TOKENIZER_FILE_BYTES (256u << 20)

struct zmix_tokenizer {
    int bos_id, eos_id;
    int vocab_size;
    tok_hf *hf; /* NULL for the byte tokenizer */
};

int zmix_tokenizer_create_bytes(int bos_id, int eos_id, int vocab_size, zmix_tokenizer **out,
                                zmix_error *err)
{
    *out = NULL;
    if (vocab_size < 258)
        return zmix_error_set(err, ZMIX_ERANGE,
                              "tokenizer: vocab_size = %d, a byte tokenizer needs at least 258 "
                              "(256 bytes, BOS, EOS)",
                              vocab_size);
    if (bos_id < 256 || bos_id >= vocab_size)
        return zmix_error_set(err, ZMIX_ERANGE, "tokenizer: bos_id = %d is outside [256, %d)",
                              bos_id, vocab_size);
    if (eos_id < 256 || eos_id >= vocab_size)
        return zmix_error_set(err, ZMIX_ERANGE, "tokenizer: eos_id = %d is outside [256, %d)",
                              eos_id, vocab_size);
    if (bos_id == eos_id)
        return zmix_error_set(err, ZMIX_EINVAL, "tokenizer: bos_id and eos_id are both %d", bos_id);
    zmix_tokenizer *t = malloc(sizeof *t);
    if (!t) return zmix_error_set(err, ZMIX_ENOMEM, "tokenizer: out of memory");
    *t = (zmix_tokenizer){bos_id, eos_id, vocab_size, NULL};
    *out = t;
    return 0;
}

void zmix_tokenizer_free(zmix_tokenizer *tok)
{
    if (tok) tok_hf_free(tok->hf);
    free(tok);
}

const char *zmix_tokenizer_describe(const zmix_tokenizer *tok)
{
    return tok->hf ? tok->hf->summary : "bytes (zmix)";
}

int zmix_tokenizer_is_bytes(const zmix_tokenizer *tok)
{
    return tok->hf == NULL;
}

int zmix_tokenizer_bos(const zmix_tokenizer *tok)
{
    return tok->bos_id;
}

int zmix_tokenizer_eos(const zmix_tokenizer *tok)
{
    return tok->eos_id;
}

const zmix_tokenizer *zmix_model_tokenizer(const zmix_model *model)
{
    return model->tokenizer;
}

static int get_id(const cJSON *root, const char *path, const char *name, int *out, zmix_error *err)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, name);
    if (!item) return zmix_error_set(err, ZMIX_EFORMAT, "%s: field '%s' is missing", path, name);
    double d = item->valuedouble;
    if (!cJSON_IsNumber(item) || d != floor(d) || d < -1e9 || d > 1e9)
        return zmix_error_set(err, ZMIX_EFORMAT, "%s: field '%s' is not an integer", path, name);
    *out = (int)d;
    return 0;
}

/* Parses either format: zmix's has a top-level "type", a Hugging Face file has not. */
static int tokenizer_from_json(const cJSON *root, const char *path, int vocab_size,
                               zmix_tokenizer **out, zmix_error *err)
{
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(root, "type");
    if (!type) {
        zmix_tokenizer *t = calloc(1, sizeof *t);
        if (!t) return zmix_error_set(err, ZMIX_ENOMEM, "%s: out of memory", path);
        int rc = tok_hf_load(root, path, vocab_size, &t->hf, err);
        if (rc) {
            free(t);
            return rc;
        }
        t->bos_id = t->hf->bos_id;
        t->eos_id = t->hf->eos_id;
        t->vocab_size = vocab_size;
        *out = t;
        return 0;
    }
    if (!cJSON_IsString(type) || strcmp(type->valuestring, "bytes") != 0)
        return zmix_error_set(err, ZMIX_EFORMAT,
                              "%s: field 'type' must be \"bytes\" (zmix's byte tokenizer; a "
                              "Hugging Face tokenizer.json has no 'type')",
                              path);
    for (const cJSON *k = root->child; k; k = k->next)
        if (strcmp(k->string, "type") && strcmp(k->string, "bos_id") && strcmp(k->string, "eos_id"))
            return zmix_error_set(err, ZMIX_EFORMAT,
                                  "%s: unknown field '%.64s' (expected type, bos_id, eos_id)", path,
                                  k->string);
    int bos = 0, eos = 0, rc;
    if ((rc = get_id(root, path, "bos_id", &bos, err)) ||
        (rc = get_id(root, path, "eos_id", &eos, err)))
        return rc;
    rc = zmix_tokenizer_create_bytes(bos, eos, vocab_size, out, err);
    if (rc) zmix_error_prefix(err, "%s", path);
    return rc;
}

int zmix_tokenizer_load(const char *path, int vocab_size, zmix_tokenizer **out, zmix_error *err)
{
    *out = NULL;
    struct stat st;
    if (stat(path, &st) != 0)
        return zmix_error_set(err, errno == ENOENT ? ZMIX_ENOTFOUND : ZMIX_EIO, "%s: %s", path,
                              strerror(errno));
    cJSON *root;
    int rc = zmix_json_load_file(path, MAX_TOKENIZER_FILE_BYTES, &root, err);
    if (rc) return rc;
    rc = tokenizer_from_json(root, path, vocab_size, out, err);
    cJSON_Delete(root);
    return rc;
}

int zmix_tokenizer_save(const zmix_tokenizer *tok, const char *path, zmix_error *err)
{
    if (tok->hf)
        return zmix_error_set(err, ZMIX_EINVAL,
                              "%s: only zmix's byte tokenizer is written by zmix (a Hugging Face "
                              "tokenizer stays the file it was loaded from)",
                              path);
    char text[128];
    int len = snprintf(text, sizeof text, "{\"type\": \"bytes\", \"bos_id\": %d, \"eos_id\": %d}\n",
                       tok->bos_id, tok->eos_id);
    fs_piece piece = {text, (size_t)len};
    fs_write_opts opts = {.mode = 0666}; /* before the umask, as fopen creates files */
    return fs_write_atomic(path, &piece, 1, &opts, err);
}

size_t zmix_tokenizer_max_tokens(const zmix_tokenizer *tok, size_t len, int flags)
{
    if (!tok->hf) return len + (flags & ZMIX_TOK_BOS ? 1 : 0) + (flags & ZMIX_TOK_EOS ? 1 : 0);
    const tok_hf *h = tok->hf;
    size_t specials = (flags & ZMIX_TOK_BOS ? (size_t)h->n_prefix : 0) +
                      (flags & ZMIX_TOK_EOS ? (size_t)h->n_suffix : 0);
    if (len > (SIZE_MAX - specials - h->per_text) / h->per_byte) return SIZE_MAX;
    return len * h->per_byte + h->per_text + specials;
}

int zmix_tokenizer_encode(const zmix_tokenizer *tok, const char *text, size_t len, int flags,
                          int32_t *ids, zmix_error *err)
{
    size_t cap = zmix_tokenizer_max_tokens(tok, len, flags);
    if (cap > (size_t)INT_MAX)
        return zmix_error_set(err, ZMIX_ELIMIT, "tokenizer: text of %zu bytes is too long", len);
    if (tok->hf) return tok_hf_encode(tok->hf, text, len, flags, ids, cap, err);
    int n = 0;
    if (flags & ZMIX_TOK_BOS) ids[n++] = tok->bos_id;
    const unsigned char *bytes = (const unsigned char *)text;
    for (size_t i = 0; i < len; i++) ids[n++] = (int32_t)bytes[i];
    if (flags & ZMIX_TOK_EOS) ids[n++] = tok->eos_id;
    return n;
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

size_t zmix_tokenizer_decode(const zmix_tokenizer *tok, const int32_t *ids, int n, int mode,
                             char *out, size_t out_size)
{
    if (tok->hf) return tok_hf_decode(tok->hf, ids, n, mode, out, out_size);
    int escape = (mode & ZMIX_DECODE_SHOW) != 0;
    size_t need = 0;
    for (int i = 0; i < n; i++) {
        int32_t id = ids[i];
        char buf[32];
        int len;
        if (id >= 0 && id < 256) {
            unsigned char c = (unsigned char)id;
            if (!escape || (c >= 0x20 && c < 0x7f && c != '\\')) {
                buf[0] = (char)c;
                len = 1;
            } else if (c == '\\' || c == '\n' || c == '\t' || c == '\r') {
                buf[0] = '\\';
                buf[1] = c == '\\' ? '\\' : c == '\n' ? 'n' : c == '\t' ? 't' : 'r';
                len = 2;
            } else {
                len = snprintf(buf, sizeof buf, "\\x%02x", c);
            }
        } else if (!escape) {
            continue; /* raw text has no place for special tokens */
        } else if (id == tok->bos_id) {
            len = snprintf(buf, sizeof buf, "<bos>");
        } else if (id == tok->eos_id) {
            len = snprintf(buf, sizeof buf, "<eos>");
        } else {
            len = snprintf(buf, sizeof buf, "<id %d>", (int)id);
        }
        put(out, out_size, &need, buf, (size_t)len);
    }
    if (out_size) out[need < out_size ? need : out_size - 1] = '\0';
    return need;
}

/* Called by zmix_model_load for model directories: a missing tokenizer.json leaves the model
 * without a tokenizer; one zmix cannot use exactly is an error. */
int zmix_tokenizer_load_dir(struct zmix_model *model, const char *dir, zmix_error *err)
{
    char path[1100];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    zmix_tokenizer *tok = NULL;
    int rc = zmix_tokenizer_load(path, model->cfg.vocab_size, &tok, err);
    if (rc == ZMIX_ENOTFOUND) {
        zmix_error_clear(err);
        return 0;
    }
    if (rc) return rc;
    /* The byte tokenizer's specials are the model's own; a Hugging Face model's config.json
     * may name other ids (Llama 3 Instruct ends turns with <|eot_id|> but lists two EOS ids),
     * so its tokenizer files are taken as they are. */
    const zmix_model_config *c = &model->cfg;
    if (!tok->hf && ((c->bos_id >= 0 && c->bos_id != tok->bos_id) ||
                     (c->eos_id >= 0 && c->eos_id != tok->eos_id))) {
        rc = zmix_error_set(err, ZMIX_EFORMAT,
                            "%s: bos_id %d / eos_id %d disagree with config.json's "
                            "bos_token_id %d / eos_token_id %d",
                            path, tok->bos_id, tok->eos_id, c->bos_id, c->eos_id);
        zmix_tokenizer_free(tok);
        return rc;
    }
    model->tokenizer = tok;
    return 0;
}
