#include "submit_examples.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *read_file(const char *path, zmix_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        zmix_error_set(err, ZMIX_EIO, "%s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 1 >= cap) {
            size_t c = cap ? cap * 2 : 1 << 16;
            char *b = realloc(buf, c);
            if (!b) {
                free(buf);
                fclose(f);
                zmix_error_set(err, ZMIX_ENOMEM, "%s: out of memory", path);
                return NULL;
            }
            buf = b;
            cap = c;
        }
        size_t n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
        if (n == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        zmix_error_set(err, ZMIX_EIO, "%s: read failed", path);
        return NULL;
    }
    buf[len] = '\0';
    return buf;
}

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
    char *text = read_file(path, err);
    if (!text) return err->code;
    int rc = zmix_examples_json_parse(text, strlen(text), path, &out->parsed, err);
    free(text);
    if (rc) return rc;
    out->items = calloc((size_t)out->parsed.n, sizeof *out->items);
    if (!out->items) {
        submit_examples_free(out);
        return zmix_error_set(err, ZMIX_ENOMEM, "%s: out of memory", path);
    }
    for (int i = 0; i < out->parsed.n; i++) {
        const zmix_example_json *e = &out->parsed.items[i];
        zmix_client_example *x = &out->items[i];
        client_part(&e->prompt, &x->prompt, &x->n_prompt, &x->prompt_text);
        client_part(&e->target, &x->target, &x->n_target, &x->target_text);
    }
    out->n = out->parsed.n;
    return 0;
}

void submit_examples_free(submit_examples *ex)
{
    free(ex->items);
    zmix_examples_json_free(&ex->parsed);
    memset(ex, 0, sizeof *ex);
}
