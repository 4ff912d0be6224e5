#include "submit_examples.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/file.h"

/* The limit of the in-process examples loader (src/model/examples.c). */
#define EXAMPLES_FILE_MAX ((size_t)64 << 20)

static void client_part(const zmix_example_part *p, const int32_t **ids, size_t *n_ids,
                        const char **text)
{
    *ids = p->ids;
    *n_ids = p->ids ? (size_t)p->n_ids : 0;
    *text = p->text;
}

int submit_examples_load(const char *path, submit_examples *out, zmix_error *err)
{
    memset(out, 0, sizeof *out);
    uint8_t *text;
    size_t len;
    /* "-" is standard input, named so in messages */
    int is_stdin = !strcmp(path, "-");
    int rc = fs_read_file(is_stdin ? "/dev/stdin" : path, EXAMPLES_FILE_MAX, &text, &len, err);
    if (is_stdin) path = "standard input";
    if (rc) return rc;
    rc = zmix_examples_json_parse((const char *)text, len, path, &out->parsed, err);
    free(text);
    if (rc) return rc;
    size_t n_parts = 1;
    for (int i = 0; i < out->parsed.n; i++) n_parts += (size_t)out->parsed.items[i].n_choices;
    out->items = calloc((size_t)out->parsed.n, sizeof *out->items);
    out->choice_ids = calloc(n_parts, sizeof *out->choice_ids);
    out->choice_len = calloc(n_parts, sizeof *out->choice_len);
    out->choice_text = calloc(n_parts, sizeof *out->choice_text);
    if (!out->items || !out->choice_ids || !out->choice_len || !out->choice_text) {
        submit_examples_free(out);
        return zmix_error_set(err, ZMIX_ENOMEM, "%s: out of memory", path);
    }
    for (int i = 0; i < out->parsed.n; i++) {
        const zmix_example_json *e = &out->parsed.items[i];
        zmix_client_example *x = &out->items[i];
        client_part(&e->prompt, &x->prompt, &x->n_prompt, &x->prompt_text);
        client_part(&e->target, &x->target, &x->n_target, &x->target_text);
        if (!e->n_choices) continue;
        size_t first = (size_t)(e->choices - out->parsed.parts);
        for (int c = 0; c < e->n_choices; c++)
            client_part(&e->choices[c], &out->choice_ids[first + c], &out->choice_len[first + c],
                        &out->choice_text[first + c]);
        x->n_choices = (size_t)e->n_choices;
        x->choice_ids = out->choice_ids + first;
        x->choice_len = out->choice_len + first;
        x->choice_text = out->choice_text + first;
        x->answer = e->answer;
    }
    out->n = out->parsed.n;
    return 0;
}

void submit_examples_free(submit_examples *ex)
{
    free(ex->items);
    free(ex->choice_ids);
    free(ex->choice_len);
    free(ex->choice_text);
    zmix_examples_json_free(&ex->parsed);
    memset(ex, 0, sizeof *ex);
}
