/*
 * Byte-level tokenizer: token id = byte value for 0..255, plus BOS and EOS. It is what lets
 * few-shot examples be written as text for models whose vocabulary is bytes (the demo model
 * zmix generates, docs/demo.md). No merges, no normaliser: encoding is a copy, so the only
 * things to get right are the special ids and the file that declares them.
 *
 * The file is tokenizer.json in the model directory. Hugging Face directories hold a file of
 * the same name in another format; it has no top-level "type", so zmix can tell the two
 * apart without guessing and leaves that one alone.
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
#include "util/file.h"

/* Ours is a few dozen bytes; a Hugging Face tokenizer.json is megabytes and is not ours. */
#define MAX_TOKENIZER_FILE_BYTES (64u << 10)

struct zmix_tokenizer {
    int bos_id, eos_id;
    int vocab_size;
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
    *t = (zmix_tokenizer){bos_id, eos_id, vocab_size};
    *out = t;
    return 0;
}

void zmix_tokenizer_free(zmix_tokenizer *tok)
{
    free(tok);
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

/* Parses our format; ENOTFOUND means "a tokenizer.json, but not zmix's". */
static int tokenizer_from_json(const cJSON *root, const char *path, int vocab_size,
                               zmix_tokenizer **out, zmix_error *err)
{
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(root, "type");
    if (!type)
        return zmix_error_set(err, ZMIX_ENOTFOUND, "%s: not a zmix tokenizer (no \"type\")", path);
    if (!cJSON_IsString(type) || strcmp(type->valuestring, "bytes") != 0)
        return zmix_error_set(err, ZMIX_EFORMAT,
                              "%s: field 'type' must be \"bytes\" (the one tokenizer zmix has)",
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
    if (st.st_size > (off_t)MAX_TOKENIZER_FILE_BYTES)
        return zmix_error_set(err, ZMIX_ENOTFOUND, "%s: not a zmix tokenizer (%lld bytes)", path,
                              (long long)st.st_size);
    cJSON *root;
    int rc = zmix_json_load_file(path, MAX_TOKENIZER_FILE_BYTES, &root, err);
    if (rc) return rc;
    rc = tokenizer_from_json(root, path, vocab_size, out, err);
    cJSON_Delete(root);
    return rc;
}

int zmix_tokenizer_save(const zmix_tokenizer *tok, const char *path, zmix_error *err)
{
    char text[128];
    int len = snprintf(text, sizeof text, "{\"type\": \"bytes\", \"bos_id\": %d, \"eos_id\": %d}\n",
                       tok->bos_id, tok->eos_id);
    fs_piece piece = {text, (size_t)len};
    fs_write_opts opts = {.mode = 0666}; /* before the umask, as fopen creates files */
    return fs_write_atomic(path, &piece, 1, &opts, err);
}

int zmix_tokenizer_encode(const zmix_tokenizer *tok, const char *text, size_t len, int add_bos,
                          int32_t *ids, zmix_error *err)
{
    int n_bos = add_bos ? 1 : 0;
    if (len > (size_t)INT_MAX - (size_t)n_bos)
        return zmix_error_set(err, ZMIX_ELIMIT, "tokenizer: text of %zu bytes is too long", len);
    if (add_bos) ids[0] = tok->bos_id;
    const unsigned char *bytes = (const unsigned char *)text;
    for (size_t i = 0; i < len; i++) ids[n_bos + i] = (int32_t)bytes[i];
    return (int)len + n_bos;
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

size_t zmix_tokenizer_decode(const zmix_tokenizer *tok, const int32_t *ids, int n, int escape,
                             char *out, size_t out_size)
{
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

/* Called by zmix_model_load for model directories: a missing or foreign tokenizer.json
 * leaves the model without a tokenizer; a malformed one of ours is an error. */
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
    const zmix_model_config *c = &model->cfg;
    if ((c->bos_id >= 0 && c->bos_id != tok->bos_id) ||
        (c->eos_id >= 0 && c->eos_id != tok->eos_id)) {
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
