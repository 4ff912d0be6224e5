/*
 * Few-shot example sets: {"examples":[{"prompt":[ids],"target":[ids]}, ...]}, where prompt and
 * target may also be strings for a model with a tokenizer (encoded as zmix_examples_from_text
 * does: the prompt with what the model puts before a text, BOS, the target alone).
 * All tokens live in one block owned by the set; each example points into it. Loading checks
 * the structure (every id a non-negative integer); zmix_examples_check adds what needs the
 * model (vocabulary, context length). That check is the one examples validator: the daemon's
 * submit, `zmix adapt`, `zmix score` and the scorer itself all call it.
 */
#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loaders.h"
#include "model_internal.h"
#include "util/file.h"

#define MAX_EXAMPLES_FILE_BYTES (64u << 20)
#define EXAMPLES_SHAPE          "{\"examples\": [{\"prompt\": [ids] or \"text\", \"target\": ...}, ...]}"

/* The root object of an examples document; a bare list of examples is named as such. */
static int examples_root(const char *text, size_t len, const char *path, cJSON **root,
                         zmix_error *err)
{
    int rc = zmix_json_parse_object(text, len, path, root, err);
    if (rc == ZMIX_EFORMAT && strstr(err->msg, "top level is not")) {
        size_t i = 0;
        while (i < len && (text[i] == ' ' || text[i] == '\t' || text[i] == '\r' || text[i] == '\n'))
            i++;
        if (i < len && text[i] == '[')
            return zmix_error_set(
                err, ZMIX_EFORMAT,
                "%s: the top level is a list, not a JSON object; expected " EXAMPLES_SHAPE
                " (put the list under \"examples\")",
                path);
        return zmix_error_set(err, ZMIX_EFORMAT, "%s: expected an object " EXAMPLES_SHAPE, path);
    }
    return rc;
}

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

int zmix_examples_are_choice(const zmix_examples *ex)
{
    return ex && ex->n > 0 && ex->items && ex->items[0].n_choices > 0;
}

/* Tokens of the choices of e (0 for exact match). */
static size_t choice_tokens(const zmix_example *e)
{
    size_t n = 0;
    for (int c = 0; c < e->n_choices; c++) n += (size_t)e->choice_len[c];
    return n;
}

size_t zmix_example_tokens(const zmix_example *e)
{
    return (size_t)e->n_prompt + (size_t)e->n_target + choice_tokens(e);
}

/* The structure of example i, whatever the model: a prompt, and a target or 2 to
 * ZMIX_MAX_CHOICES non-empty choices with an answer among them. */
static int example_shape_check(const zmix_example *e, int i, zmix_error *err)
{
    if (e->n_prompt < 1 || !e->prompt)
        return zmix_error_set(err, ZMIX_EINVAL, "examples[%d].prompt is empty", i);
    if (e->n_choices == 0) {
        if (e->n_target < 1 || !e->target)
            return zmix_error_set(err, ZMIX_EINVAL, "examples[%d].target is empty", i);
        return 0;
    }
    if (e->n_target != 0 || e->target)
        return zmix_error_set(err, ZMIX_EINVAL,
                              "examples[%d] has both a target and choices: give one or the other",
                              i);
    if (e->n_choices < 2 || e->n_choices > ZMIX_MAX_CHOICES || !e->choices || !e->choice_len)
        return zmix_error_set(err, ZMIX_EINVAL,
                              "examples[%d].choices: %d choices, expected 2 to %d", i, e->n_choices,
                              ZMIX_MAX_CHOICES);
    for (int c = 0; c < e->n_choices; c++)
        if (e->choice_len[c] < 1)
            return zmix_error_set(err, ZMIX_EINVAL, "examples[%d].choices[%d] is empty", i, c);
    if (e->answer < 0 || e->answer >= e->n_choices)
        return zmix_error_set(err, ZMIX_EINVAL,
                              "examples[%d].answer: %d is not the index of a choice [0, %d)", i,
                              e->answer, e->n_choices);
    return 0;
}

/* The one rule of a set's kinds: every example of the kind of the first. */
static int example_kind_check(const zmix_example *first, const zmix_example *e, int i,
                              zmix_error *err)
{
    if ((first->n_choices > 0) == (e->n_choices > 0)) return 0;
    return zmix_error_set(err, ZMIX_EINVAL,
                          "examples[%d].%s: examples[0] is %s, and a set is all exact-match "
                          "(target) or all multiple-choice (choices, answer)",
                          i, e->n_choices ? "choices" : "target",
                          first->n_choices ? "multiple-choice" : "exact-match");
}

int zmix_examples_copy(const zmix_example *items, int n, zmix_examples *out, zmix_error *err)
{
    memset(out, 0, sizeof *out);
    if (n < 0) return zmix_error_set(err, ZMIX_EINVAL, "examples: negative count %d", n);
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        const zmix_example *e = &items[i];
        int rc = example_shape_check(e, i, err);
        if (!rc) rc = example_kind_check(&items[0], e, i, err);
        if (rc) return rc;
        total += zmix_example_tokens(e) + (size_t)e->n_choices;
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
        if (e->n_choices) {
            size_t nc = choice_tokens(e);
            memcpy(out->tokens + at, e->choices, nc * sizeof *e->choices);
            d->choices = out->tokens + at;
            at += nc;
            memcpy(out->tokens + at, e->choice_len, (size_t)e->n_choices * sizeof *e->choice_len);
            d->choice_len = out->tokens + at;
            at += (size_t)e->n_choices;
            d->n_choices = e->n_choices;
            d->answer = e->answer;
            continue;
        }
        memcpy(out->tokens + at, e->target, (size_t)e->n_target * sizeof *e->target);
        d->target = out->tokens + at;
        d->n_target = e->n_target;
        at += (size_t)e->n_target;
    }
    return 0;
}

/* ---- The examples file as written: ids or text per prompt and target ------------------ */

#define MAX_TEXT_BYTES (1u << 24) /* one prompt or target given as text */

void zmix_examples_json_free(zmix_examples_json *ex)
{
    if (!ex) return;
    free(ex->items);
    free(ex->ids);
    free(ex->texts);
    free(ex->parts);
    memset(ex, 0, sizeof *ex);
}

/* Checks one prompt or target of example i and adds what it holds to *n_ids, or to *n_text
 * (bytes with the NUL). */
static int part_check(const cJSON *v, const char *path, int i, const char *what, size_t *n_ids,
                      size_t *n_text, zmix_error *err)
{
    if (!v)
        return zmix_error_set(err, ZMIX_EFORMAT, "%s: examples[%d].%s is missing", path, i, what);
    if (cJSON_IsString(v)) {
        size_t len = strlen(v->valuestring);
        /* An empty prompt is BOS alone; an empty target or choice would leave nothing to
         * score. */
        if (len == 0 && strcmp(what, "prompt"))
            return zmix_error_set(err, ZMIX_EFORMAT, "%s: examples[%d].%s is empty", path, i, what);
        if (len > MAX_TEXT_BYTES)
            return zmix_error_set(err, ZMIX_ELIMIT,
                                  "%s: examples[%d].%s: %zu bytes of text, at most %u", path, i,
                                  what, len, MAX_TEXT_BYTES);
        *n_text += len + 1;
        return 0;
    }
    if (!cJSON_IsArray(v))
        return zmix_error_set(err, ZMIX_EFORMAT,
                              "%s: examples[%d].%s is not an array of token ids or a string", path,
                              i, what);
    int n = cJSON_GetArraySize(v);
    if (n == 0)
        return zmix_error_set(err, ZMIX_EFORMAT, "%s: examples[%d].%s is empty", path, i, what);
    int j = 0;
    const cJSON *id;
    cJSON_ArrayForEach(id, v)
    {
        double d = id->valuedouble;
        if (!cJSON_IsNumber(id) || d != floor(d) || d < 0 || d > 2147483647.0)
            return zmix_error_set(err, ZMIX_EFORMAT,
                                  "%s: examples[%d].%s[%d] is not a token id (a non-negative "
                                  "integer)",
                                  path, i, what, j);
        j++;
    }
    *n_ids += (size_t)n;
    return 0;
}

/* Copies a checked prompt or target to the next free ids or text and points out at them. */
static void part_fill(const cJSON *v, int32_t **ids, char **text, zmix_example_part *out)
{
    memset(out, 0, sizeof *out);
    if (cJSON_IsString(v)) {
        size_t n = strlen(v->valuestring);
        memcpy(*text, v->valuestring, n + 1);
        out->text = *text;
        *text += n + 1;
        return;
    }
    out->ids = *ids;
    const cJSON *id;
    cJSON_ArrayForEach(id, v) * (*ids)++ = (int32_t)id->valuedouble;
    out->n_ids = (int)(*ids - out->ids);
}

/* Checks the keys of example i: prompt and target, or prompt, choices and answer, each once,
 * so that a misspelt or repeated key cannot vanish without a trace; *is_choice tells which. */
static int item_keys_check(const cJSON *e, const char *path, int i, int *is_choice, zmix_error *err)
{
    static const char *const names[4] = {"prompt", "target", "choices", "answer"};
    if (!cJSON_IsObject(e))
        return zmix_error_set(err, ZMIX_EFORMAT, "%s: examples[%d] is not an object", path, i);
    int seen[4] = {0, 0, 0, 0};
    const cJSON *key;
    cJSON_ArrayForEach(key, e)
    {
        int which = 0;
        while (which < 4 && strcmp(key->string, names[which])) which++;
        if (which == 4)
            return zmix_error_set(err, ZMIX_EFORMAT,
                                  "%s: examples[%d]: unknown key '%.64s' (expected prompt and "
                                  "target, or prompt, choices and answer)",
                                  path, i, key->string);
        if (seen[which]++)
            return zmix_error_set(err, ZMIX_EFORMAT, "%s: examples[%d].%s appears twice", path, i,
                                  key->string);
    }
    *is_choice = seen[2] || seen[3];
    if (*is_choice && seen[1])
        return zmix_error_set(err, ZMIX_EFORMAT,
                              "%s: examples[%d] has both target and %s: give a target (exact "
                              "match) or choices and answer (multiple choice)",
                              path, i, seen[2] ? "choices" : "answer");
    if (*is_choice && !(seen[2] && seen[3]))
        return zmix_error_set(err, ZMIX_EFORMAT, "%s: examples[%d].%s is missing", path, i,
                              seen[2] ? "answer" : "choices");
    return 0;
}

/* Checks the choices and answer of example i, adding their tokens or text as part_check does,
 * and the count of choices to *n_parts. */
static int choices_check(const cJSON *e, const char *path, int i, size_t *n_ids, size_t *n_text,
                         size_t *n_parts, zmix_error *err)
{
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(e, "choices");
    const cJSON *answer = cJSON_GetObjectItemCaseSensitive(e, "answer");
    int n = cJSON_IsArray(list) ? cJSON_GetArraySize(list) : -1;
    if (n < 0)
        return zmix_error_set(err, ZMIX_EFORMAT,
                              "%s: examples[%d].choices is not an array of choices", path, i);
    if (n < 2 || n > ZMIX_MAX_CHOICES)
        return zmix_error_set(err, ZMIX_EFORMAT,
                              "%s: examples[%d].choices: %d choices, expected 2 to %d", path, i, n,
                              ZMIX_MAX_CHOICES);
    int c = 0, rc;
    const cJSON *ch;
    cJSON_ArrayForEach(ch, list)
    {
        char what[32];
        snprintf(what, sizeof what, "choices[%d]", c++);
        if ((rc = part_check(ch, path, i, what, n_ids, n_text, err))) return rc;
    }
    double d = cJSON_IsNumber(answer) ? answer->valuedouble : -1.0;
    if (!cJSON_IsNumber(answer) || d != floor(d) || d < 0 || d >= n)
        return zmix_error_set(err, ZMIX_EFORMAT,
                              "%s: examples[%d].answer must be the index of a choice, an integer "
                              "in [0, %d)",
                              path, i, n);
    *n_parts += (size_t)n;
    return 0;
}

static int examples_json_from_root(const cJSON *root, const char *path, zmix_examples_json *out,
                                   zmix_error *err)
{
    memset(out, 0, sizeof *out);
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(root, "examples");
    if (!cJSON_IsArray(list))
        return zmix_error_set(err, ZMIX_EFORMAT,
                              "%s: 'examples' is missing or not an array; expected " EXAMPLES_SHAPE,
                              path);
    int n = cJSON_GetArraySize(list);
    if (n == 0) return zmix_error_set(err, ZMIX_EFORMAT, "%s: 'examples' is empty", path);
    size_t n_ids = 0, n_text = 0, n_parts = 0;
    int i = 0, rc, first_choice = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, list)
    {
        int is_choice;
        if ((rc = item_keys_check(e, path, i, &is_choice, err)) ||
            (rc = part_check(cJSON_GetObjectItemCaseSensitive(e, "prompt"), path, i, "prompt",
                             &n_ids, &n_text, err)))
            return rc;
        if (i == 0) first_choice = is_choice;
        if (is_choice != first_choice)
            return zmix_error_set(err, ZMIX_EFORMAT,
                                  "%s: examples[%d].%s: examples[0] is %s, and a set is all "
                                  "exact-match (target) or all multiple-choice (choices, answer)",
                                  path, i, is_choice ? "choices" : "target",
                                  first_choice ? "multiple-choice" : "exact-match");
        rc = is_choice ? choices_check(e, path, i, &n_ids, &n_text, &n_parts, err)
                       : part_check(cJSON_GetObjectItemCaseSensitive(e, "target"), path, i,
                                    "target", &n_ids, &n_text, err);
        if (rc) return rc;
        i++;
    }
    out->items = calloc((size_t)n, sizeof *out->items);
    out->ids = malloc((n_ids + 1) * sizeof *out->ids);
    out->texts = malloc(n_text + 1);
    out->parts = calloc(n_parts + 1, sizeof *out->parts);
    if (!out->items || !out->ids || !out->texts || !out->parts) {
        zmix_examples_json_free(out);
        return zmix_error_set(err, ZMIX_ENOMEM, "%s: out of memory for %d examples", path, n);
    }
    int32_t *ids = out->ids;
    char *text = out->texts;
    zmix_example_part *part = out->parts;
    i = 0;
    cJSON_ArrayForEach(e, list)
    {
        zmix_example_json *x = &out->items[i++];
        part_fill(cJSON_GetObjectItemCaseSensitive(e, "prompt"), &ids, &text, &x->prompt);
        if (!first_choice) {
            part_fill(cJSON_GetObjectItemCaseSensitive(e, "target"), &ids, &text, &x->target);
            continue;
        }
        const cJSON *ch;
        x->choices = part;
        cJSON_ArrayForEach(ch, cJSON_GetObjectItemCaseSensitive(e, "choices"))
            part_fill(ch, &ids, &text, part++);
        x->n_choices = (int)(part - x->choices);
        x->answer = (int)cJSON_GetObjectItemCaseSensitive(e, "answer")->valuedouble;
    }
    out->n = n;
    return 0;
}

int zmix_examples_json_parse(const char *text, size_t len, const char *path,
                             zmix_examples_json *out, zmix_error *err)
{
    memset(out, 0, sizeof *out);
    cJSON *root;
    int rc = examples_root(text, len, path, &root, err);
    if (rc) return rc;
    rc = examples_json_from_root(root, path, out, err);
    cJSON_Delete(root);
    return rc;
}

/* Room for the tokens of one part: its ids, or what its text can become (a prompt with the
 * tokens the model puts before a text). */
static size_t part_tokens(const zmix_example_part *p, const zmix_tokenizer *tok, int is_prompt)
{
    return p->text ? zmix_tokenizer_max_tokens(tok, strlen(p->text), is_prompt ? ZMIX_TOK_BOS : 0)
                   : (size_t)p->n_ids;
}

static int part_encode(const zmix_example_part *p, const zmix_tokenizer *tok, int is_prompt,
                       int32_t *dst, zmix_error *err)
{
    if (p->text)
        return zmix_tokenizer_encode(tok, p->text, strlen(p->text), is_prompt ? ZMIX_TOK_BOS : 0,
                                     dst, err);
    memcpy(dst, p->ids, (size_t)p->n_ids * sizeof *dst);
    return p->n_ids;
}

/* The set a model scores: ids as they are, text encoded with tok. */
static int examples_encode(const zmix_examples_json *src, const zmix_tokenizer *tok,
                           const char *path, zmix_examples *out, zmix_error *err)
{
    size_t total = 0;
    for (int i = 0; i < src->n; i++) {
        const zmix_example_json *e = &src->items[i];
        int text_choice = -1;
        for (int c = 0; c < e->n_choices && text_choice < 0; c++)
            if (e->choices[c].text) text_choice = c;
        if (!tok && (e->prompt.text || e->target.text || text_choice >= 0))
            return zmix_error_set(err, ZMIX_EFORMAT,
                                  "%s: examples[%d].%s is text, but the model has no tokenizer "
                                  "(tokenizer.json); give token ids",
                                  path, i,
                                  e->prompt.text   ? "prompt"
                                  : e->target.text ? "target"
                                                   : "choices");
        total += part_tokens(&e->prompt, tok, 1) + part_tokens(&e->target, tok, 0);
        for (int c = 0; c < e->n_choices; c++) total += part_tokens(&e->choices[c], tok, 0) + 1;
    }
    int rc = examples_alloc(out, src->n, total, err);
    if (rc) return rc;
    size_t at = 0;
    for (int i = 0; rc == 0 && i < src->n; i++) {
        const zmix_example_json *e = &src->items[i];
        zmix_example *d = &out->items[i];
        int np = part_encode(&e->prompt, tok, 1, out->tokens + at, err);
        if (np >= 0) d->prompt = out->tokens + at, d->n_prompt = np, at += (size_t)np;
        if (np >= 0 && !e->n_choices) {
            int nt = part_encode(&e->target, tok, 0, out->tokens + at, err);
            if (nt >= 0) d->target = out->tokens + at, d->n_target = nt, at += (size_t)nt;
            np = nt;
        }
        /* The choices' tokens, then their lengths. */
        int32_t lens[ZMIX_MAX_CHOICES];
        d->choices = out->tokens + at;
        for (int c = 0; np >= 0 && c < e->n_choices; c++) {
            int nc = part_encode(&e->choices[c], tok, 0, out->tokens + at, err);
            if (nc == 0)
                np = zmix_error_set(err, ZMIX_EINVAL, "choices[%d] encodes to no tokens", c);
            else if (nc < 0)
                np = zmix_error_prefix(err, "choices[%d]", c);
            else
                at += (size_t)nc, lens[c] = nc;
        }
        if (np >= 0 && e->n_choices) {
            memcpy(out->tokens + at, lens, (size_t)e->n_choices * sizeof *lens);
            d->choice_len = out->tokens + at;
            d->n_choices = e->n_choices;
            d->answer = e->answer;
            at += (size_t)e->n_choices;
        } else {
            d->choices = NULL;
        }
        if (np < 0) {
            rc = zmix_error_prefix(err, "%s: examples[%d]", path, i);
            break;
        }
    }
    /* A tokenizer may need fewer tokens than the bound allocated for. */
    out->n_tokens = at;
    if (rc) zmix_examples_free(out);
    return rc;
}

int zmix_examples_load_json_tok(const char *path, const zmix_tokenizer *tok, zmix_examples *out,
                                zmix_error *err)
{
    memset(out, 0, sizeof *out);
    /* "-" is standard input, named so in messages */
    int is_stdin = !strcmp(path, "-");
    const char *file = is_stdin ? "/dev/stdin" : path;
    if (is_stdin) path = "standard input";
    uint8_t *bytes = NULL;
    size_t len = 0;
    int rc = fs_read_file(file, MAX_EXAMPLES_FILE_BYTES, &bytes, &len, err);
    if (rc) return rc;
    cJSON *root;
    rc = examples_root((const char *)bytes, len, path, &root, err);
    free(bytes);
    if (rc) return rc;
    zmix_examples_json src;
    rc = examples_json_from_root(root, path, &src, err);
    cJSON_Delete(root);
    if (rc) return rc;
    rc = examples_encode(&src, tok, path, out, err);
    zmix_examples_json_free(&src);
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
            return zmix_error_set(err, ZMIX_EINVAL, "examples[%d].target is empty", i);
        if ((e->prompt_len && !e->prompt) || e->prompt_len > (1u << 24) ||
            e->target_len > (1u << 24))
            return zmix_error_set(err, ZMIX_ELIMIT,
                                  "examples[%d]: prompt (%zu bytes) or target (%zu bytes) too long",
                                  i, e->prompt_len, e->target_len);
        total += zmix_tokenizer_max_tokens(tok, e->prompt_len, ZMIX_TOK_BOS) +
                 zmix_tokenizer_max_tokens(tok, e->target_len, 0);
    }
    int rc = examples_alloc(out, n, total, err);
    if (rc) return rc;
    size_t at = 0;
    for (int i = 0; i < n; i++) {
        const zmix_text_example *e = &items[i];
        zmix_example *d = &out->items[i];
        int np = zmix_tokenizer_encode(tok, e->prompt ? e->prompt : "", e->prompt_len, ZMIX_TOK_BOS,
                                       out->tokens + at, err);
        int nt = np < 0 ? np
                        : zmix_tokenizer_encode(tok, e->target, e->target_len, 0,
                                                out->tokens + at + np, err);
        if (nt < 0) {
            zmix_examples_free(out);
            return zmix_error_prefix(err, "examples[%d].%s", i, np < 0 ? "prompt" : "target");
        }
        /* An empty prompt is no tokens at all for a model that puts nothing before a text. */
        if (nt == 0 || np == 0) {
            zmix_examples_free(out);
            return zmix_error_set(err, ZMIX_EINVAL, "examples[%d].%s encodes to no tokens", i,
                                  np == 0 ? "prompt" : "target");
        }
        d->prompt = out->tokens + at;
        d->n_prompt = np;
        d->target = out->tokens + at + np;
        d->n_target = nt;
        at += (size_t)np + (size_t)nt;
    }
    out->n_tokens = at;
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
        int rc = example_shape_check(e, i, err);
        if (!rc) rc = example_kind_check(&ex->items[0], e, i, err);
        if (!rc) rc = check_ids(e->prompt, e->n_prompt, vocab_size, i, "prompt", err);
        if (!rc) rc = check_ids(e->target, e->n_target, vocab_size, i, "target", err);
        const int32_t *ch = e->choices;
        int longest = e->n_target;
        for (int c = 0; !rc && c < e->n_choices; ch += e->choice_len[c], c++) {
            char what[32];
            snprintf(what, sizeof what, "choices[%d]", c);
            rc = check_ids(ch, e->choice_len[c], vocab_size, i, what, err);
            longest = e->choice_len[c] > longest ? e->choice_len[c] : longest;
        }
        if (rc) return rc;
        /* Teacher forcing predicts target token t from everything before it, so the last
         * target token is never an input: the model reads prompt + target - 1 positions. A
         * choice is a target of its own after the same prompt. */
        long long total = (long long)e->n_prompt + longest;
        if (total - 1 > context)
            return zmix_error_set(err, ZMIX_ELIMIT,
                                  "examples[%d]: %lld tokens (prompt %d + %s %d): the model "
                                  "reads %lld of them (all but the last %s token), over its "
                                  "context of %d",
                                  i, total, e->n_prompt, e->n_choices ? "longest choice" : "target",
                                  longest, total - 1, e->n_choices ? "choice" : "target", context);
    }
    return 0;
}

int zmix_examples_check(const zmix_model *model, const zmix_examples *ex, zmix_error *err)
{
    return zmix_examples_check_vocab_context(ex, model->cfg.vocab_size, model->cfg.max_seq_len,
                                             err);
}
