/*
 * Few-shot example sets: {"examples":[{"prompt":[ids],"target":[ids]}, ...]}, where prompt and
 * target may also be strings for a model with a tokenizer (encoded as zmix_examples_from_text
 * does: BOS + bytes for the prompt, bytes for the target).
 * All tokens live in one block owned by the set; each example points into it. Loading checks
 * the structure (every id a non-negative integer); zmix_examples_check adds what needs the
 * model (vocabulary, context length). That check is the one examples validator: the daemon's
 * submit, `zmix adapt`, `zmix score` and the scorer itself all call it.
 */
#include <cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "loaders.h"
#include "model_internal.h"

#define MAX_EXAMPLES_FILE_BYTES (64u << 20)

void zmix_examples_free(zmix_examples *ex)
{
    if (!ex) return;
    free(ex->items);
    free(ex->tokens);
    memset(ex, 0, sizeof *ex);
}

/* Allocates items and tokens for n examples of n_tokens in total. */
static int examples_alloc(zmix_examples *out, int n, size_t n_tokens, zmix_error *err)
{
    memset(out, 0, sizeof *out);
    out->items = calloc((size_t)n + 1, sizeof *out->items);
    out->tokens = malloc((n_tokens + 1) * sizeof *out->tokens);
    if (!out->items || !out->tokens) {
        zmix_examples_free(out);
        return zmix_error_set(err, ZMIX_ENOMEM, "examples: out of memory (%zu tokens)", n_tokens);
    }
    out->n = n;
    out->n_tokens = n_tokens;
    return 0;
}

int zmix_examples_copy(const zmix_example *items, int n, zmix_examples *out, zmix_error *err)
{
    memset(out, 0, sizeof *out);
    if (n < 0) return zmix_error_set(err, ZMIX_EINVAL, "examples: negative count %d", n);
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        const zmix_example *e = &items[i];
        if (e->n_prompt < 1 || e->n_target < 1 || !e->prompt || !e->target)
            return zmix_error_set(err, ZMIX_EINVAL, "example %d: %s is empty", i,
                                  (e->n_prompt < 1 || !e->prompt) ? "prompt" : "target");
        total += (size_t)e->n_prompt + (size_t)e->n_target;
    }
    int rc = examples_alloc(out, n, total, err);
    if (rc) return rc;
    size_t at = 0;
    for (int i = 0; i < n; i++) {
        const zmix_example *e = &items[i];
        zmix_example *d = &out->items[i];
        memcpy(out->tokens + at, e->prompt, (size_t)e->n_prompt * sizeof *e->prompt);
        d->prompt = out->tokens + at;
        d->n_prompt = e->n_prompt;
        at += (size_t)e->n_prompt;
        memcpy(out->tokens + at, e->target, (size_t)e->n_target * sizeof *e->target);
        d->target = out->tokens + at;
        d->n_target = e->n_target;
        at += (size_t)e->n_target;
    }
    return 0;
}

/* Number of tokens a text field encodes to: the prompt gets BOS. */
static int text_tokens(const cJSON *text, const char *what)
{
    return (int)strlen(text->valuestring) + !strcmp(what, "prompt");
}

/* Checks one id list (or text, with a tokenizer) of example i and returns its length in
 * tokens (or a negative error code). */
static int check_id_list(const cJSON *list, const zmix_tokenizer *tok, const char *path, int i,
                         const char *what, zmix_error *err)
{
    if (!list)
        return zmix_error_set(err, ZMIX_EFORMAT, "%s: example %d: %s is missing", path, i, what);
    if (cJSON_IsString(list)) {
        if (!tok)
            return zmix_error_set(err, ZMIX_EFORMAT,
                                  "%s: example %d: %s is text, but the model has no tokenizer "
                                  "(tokenizer.json); give token ids",
                                  path, i, what);
        size_t len = strlen(list->valuestring);
        if (len == 0 && !strcmp(what, "target"))
            return zmix_error_set(err, ZMIX_EFORMAT, "%s: example %d: target is empty", path, i);
        if (len > (1u << 24))
            return zmix_error_set(err, ZMIX_ELIMIT, "%s: example %d: %s: %zu bytes of text", path,
                                  i, what, len);
        return text_tokens(list, what);
    }
    if (!cJSON_IsArray(list))
        return zmix_error_set(err, ZMIX_EFORMAT, "%s: example %d: %s is not an array%s", path, i,
                              what, tok ? " or a string" : "");
    int n = cJSON_GetArraySize(list);
    if (n == 0)
        return zmix_error_set(err, ZMIX_EFORMAT, "%s: example %d: %s is empty", path, i, what);
    int j = 0;
    const cJSON *id;
    cJSON_ArrayForEach(id, list)
    {
        double d = id->valuedouble;
        if (!cJSON_IsNumber(id) || d != floor(d) || d < 0 || d > 2147483647.0)
            return zmix_error_set(err, ZMIX_EFORMAT,
                                  "%s: example %d: %s[%d] is not a token id (a non-negative "
                                  "integer)",
                                  path, i, what, j);
        j++;
    }
    return n;
}

/* Writes the tokens of a checked field and returns how many. */
static int copy_ids(const cJSON *list, const zmix_tokenizer *tok, const char *what, int32_t *dst)
{
    if (cJSON_IsString(list))
        return zmix_tokenizer_encode(tok, list->valuestring, strlen(list->valuestring),
                                     !strcmp(what, "prompt"), dst, NULL);
    const cJSON *id;
    int n = 0;
    cJSON_ArrayForEach(id, list) dst[n++] = (int32_t)id->valuedouble;
    return n;
}

static int examples_from_json(const cJSON *root, const zmix_tokenizer *tok, const char *path,
                              zmix_examples *out, zmix_error *err)
{
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(root, "examples");
    if (!cJSON_IsArray(list))
        return zmix_error_set(err, ZMIX_EFORMAT, "%s: 'examples' is missing or not an array", path);
    int n = cJSON_GetArraySize(list);
    if (n == 0) return zmix_error_set(err, ZMIX_EFORMAT, "%s: 'examples' is empty", path);
    size_t total = 0;
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, list)
    {
        if (!cJSON_IsObject(e))
            return zmix_error_set(err, ZMIX_EFORMAT, "%s: example %d is not an object", path, i);
        const cJSON *key;
        int seen[2] = {0, 0};
        cJSON_ArrayForEach(key, e)
        {
            /* A misspelt or repeated key would otherwise vanish without a trace. */
            int which = !strcmp(key->string, "prompt")   ? 0
                        : !strcmp(key->string, "target") ? 1
                                                         : -1;
            if (which < 0)
                return zmix_error_set(err, ZMIX_EFORMAT,
                                      "%s: example %d: unknown key '%.64s' (expected prompt, "
                                      "target)",
                                      path, i, key->string);
            if (seen[which]++)
                return zmix_error_set(err, ZMIX_EFORMAT, "%s: example %d: %s appears twice", path,
                                      i, key->string);
        }
        int np = check_id_list(cJSON_GetObjectItemCaseSensitive(e, "prompt"), tok, path, i,
                               "prompt", err);
        if (np < 0) return np;
        int nt = check_id_list(cJSON_GetObjectItemCaseSensitive(e, "target"), tok, path, i,
                               "target", err);
        if (nt < 0) return nt;
        total += (size_t)np + (size_t)nt;
        i++;
    }
    int rc = examples_alloc(out, n, total, err);
    if (rc) return rc;
    size_t at = 0;
    i = 0;
    cJSON_ArrayForEach(e, list)
    {
        zmix_example *d = &out->items[i++];
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(e, "prompt");
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(e, "target");
        d->prompt = out->tokens + at;
        d->n_prompt = copy_ids(p, tok, "prompt", out->tokens + at);
        at += (size_t)d->n_prompt;
        d->target = out->tokens + at;
        d->n_target = copy_ids(t, tok, "target", out->tokens + at);
        at += (size_t)d->n_target;
    }
    return 0;
}

int zmix_examples_load_json_tok(const char *path, const zmix_tokenizer *tok, zmix_examples *out,
                                zmix_error *err)
{
    memset(out, 0, sizeof *out);
    cJSON *root;
    int rc = zmix_json_load_file(path, MAX_EXAMPLES_FILE_BYTES, &root, err);
    if (rc) return rc;
    rc = examples_from_json(root, tok, path, out, err);
    cJSON_Delete(root);
    return rc;
}

int zmix_examples_load_json(const char *path, zmix_examples *out, zmix_error *err)
{
    return zmix_examples_load_json_tok(path, NULL, out, err);
}

int zmix_examples_from_text(const zmix_tokenizer *tok, const zmix_text_example *items, int n,
                            zmix_examples *out, zmix_error *err)
{
    memset(out, 0, sizeof *out);
    if (!tok)
        return zmix_error_set(err, ZMIX_EINVAL,
                              "examples: text examples need a model with a tokenizer "
                              "(tokenizer.json)");
    if (n < 1) return zmix_error_set(err, ZMIX_EINVAL, "examples: the set is empty");
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        const zmix_text_example *e = &items[i];
        if (e->target_len == 0 || !e->target)
            return zmix_error_set(err, ZMIX_EINVAL, "example %d: target is empty", i);
        if ((e->prompt_len && !e->prompt) || e->prompt_len > (1u << 24) ||
            e->target_len > (1u << 24))
            return zmix_error_set(err, ZMIX_ELIMIT,
                                  "example %d: prompt (%zu bytes) or target (%zu bytes) too long",
                                  i, e->prompt_len, e->target_len);
        total += 1 + e->prompt_len + e->target_len;
    }
    int rc = examples_alloc(out, n, total, err);
    if (rc) return rc;
    size_t at = 0;
    for (int i = 0; i < n; i++) {
        const zmix_text_example *e = &items[i];
        zmix_example *d = &out->items[i];
        d->prompt = out->tokens + at;
        d->n_prompt =
            zmix_tokenizer_encode(tok, e->prompt, e->prompt_len, 1, out->tokens + at, NULL);
        at += (size_t)d->n_prompt;
        d->target = out->tokens + at;
        d->n_target =
            zmix_tokenizer_encode(tok, e->target, e->target_len, 0, out->tokens + at, NULL);
        at += (size_t)d->n_target;
    }
    return 0;
}

static int check_ids(const int32_t *ids, int n, int vocab, int i, const char *what, zmix_error *err)
{
    for (int j = 0; j < n; j++)
        if (ids[j] < 0 || ids[j] >= vocab)
            return zmix_error_set(err, ZMIX_ERANGE,
                                  "examples[%d].%s[%d]: token id %d outside the vocabulary [0, %d)",
                                  i, what, j, (int)ids[j], vocab);
    return 0;
}

int zmix_examples_check_vocab_context(const zmix_examples *ex, int vocab_size, int context,
                                      zmix_error *err)
{
    if (!ex || ex->n < 1 || !ex->items)
        return zmix_error_set(err, ZMIX_EINVAL, "examples: the set is empty");
    for (int i = 0; i < ex->n; i++) {
        const zmix_example *e = &ex->items[i];
        if (e->n_prompt < 1 || !e->prompt)
            return zmix_error_set(err, ZMIX_EINVAL, "examples[%d].prompt is empty", i);
        if (e->n_target < 1 || !e->target)
            return zmix_error_set(err, ZMIX_EINVAL, "examples[%d].target is empty", i);
        int rc;
        if ((rc = check_ids(e->prompt, e->n_prompt, vocab_size, i, "prompt", err)) ||
            (rc = check_ids(e->target, e->n_target, vocab_size, i, "target", err)))
            return rc;
        /* Teacher forcing predicts target token t from everything before it, so the last
         * target token is never an input: the model reads prompt + target - 1 positions. */
        long long total = (long long)e->n_prompt + e->n_target;
        if (total - 1 > context)
            return zmix_error_set(err, ZMIX_ELIMIT,
                                  "examples[%d]: %lld tokens (prompt %d + target %d): the model "
                                  "reads %lld of them (all but the last target token), over its "
                                  "context of %d",
                                  i, total, e->n_prompt, e->n_target, total - 1, context);
    }
    return 0;
}

int zmix_examples_check(const zmix_model *model, const zmix_examples *ex, zmix_error *err)
{
    return zmix_examples_check_vocab_context(ex, model->cfg.vocab_size, model->cfg.max_seq_len,
                                             err);
}
