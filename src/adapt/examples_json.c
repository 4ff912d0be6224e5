/*
 * Writes an example set in the format zmix_examples_load_json reads:
 *     {"examples":[{"prompt":[ids],"target":[ids]}, ...]}
 * or, for multiple choice, {"prompt":[ids],"choices":[[ids], ...],"answer":i} per example.
 * Planted tasks and the demo data are saved with it so that `zmix adapt` can read them back.
 */
#include <cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zmix/adapt.h"

static cJSON *ids_json(const int32_t *ids, int n)
{
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(ids[i]));
    return a;
}

int zmix_adapt_examples_save_json(const char *path, const zmix_examples *ex, zmix_error *err)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *list = root ? cJSON_AddArrayToObject(root, "examples") : NULL;
    for (int i = 0; list && i < ex->n; i++) {
        cJSON *e = cJSON_CreateObject();
        if (!e) break;
        const zmix_example *x = &ex->items[i];
        cJSON_AddItemToObject(e, "prompt", ids_json(x->prompt, x->n_prompt));
        if (x->n_choices) {
            cJSON *choices = cJSON_AddArrayToObject(e, "choices");
            const int32_t *ch = x->choices;
            for (int c = 0; choices && c < x->n_choices; ch += x->choice_len[c], c++)
                cJSON_AddItemToArray(choices, ids_json(ch, x->choice_len[c]));
            cJSON_AddNumberToObject(e, "answer", x->answer);
        } else {
            cJSON_AddItemToObject(e, "target", ids_json(x->target, x->n_target));
        }
        cJSON_AddItemToArray(list, e);
    }
    char *text = list ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (!text) return zmix_error_set(err, ZMIX_ENOMEM, "%s: out of memory for the JSON", path);
    FILE *f = fopen(path, "w");
    if (!f) {
        int e = errno;
        free(text);
        return zmix_error_set(err, ZMIX_EIO, "%s: cannot create: %s", path, strerror(e));
    }
    size_t n = strlen(text);
    int ok = fwrite(text, 1, n, f) == n && fputc('\n', f) != EOF;
    ok = (fclose(f) == 0) && ok;
    free(text);
    if (!ok) return zmix_error_set(err, ZMIX_EIO, "%s: write failed", path);
    return 0;
}
