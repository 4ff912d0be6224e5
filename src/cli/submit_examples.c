#include "submit_examples.h"

#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/file.h"

/* The limit of the in-process examples loader (src/model/examples.c). */
#define EXAMPLES_FILE_MAX ((size_t)64 << 20)

/* Checks one field; adds its ids or text bytes to the counts. */
static int check_field(const cJSON *v, const char *path, int i, const char *what, size_t *n_ids,
                       size_t *n_text, zmix_error *err)
{
    if (!v)
        return zmix_error_set(err, ZMIX_EFORMAT, "%s: example %d: %s is missing", path, i, what);
    if (cJSON_IsString(v)) {
        if (!v->valuestring[0])
            return zmix_error_set(err, ZMIX_EFORMAT, "%s: example %d: %s is empty", path, i, what);
        *n_text += strlen(v->valuestring) + 1;
        return 0;
    }
    if (!cJSON_IsArray(v))
        return zmix_error_set(err, ZMIX_EFORMAT,
                              "%s: example %d: %s is not an array of token ids or a string", path,
                              i, what);
    int n = cJSON_GetArraySize(v);
    if (n == 0)
        return zmix_error_set(err, ZMIX_EFORMAT, "%s: example %d: %s is empty", path, i, what);
    int j = 0;
    const cJSON *id;
    cJSON_ArrayForEach(id, v)
    {
        double d = id->valuedouble;
        if (!cJSON_IsNumber(id) || d != floor(d) || d < 0 || d > 2147483647.0)
            return zmix_error_set(err, ZMIX_EFORMAT,
                                  "%s: example %d: %s[%d] is not a token id (a non-negative "
                                  "integer)",
                                  path, i, what, j);
        j++;
    }
    *n_ids += (size_t)n;
    return 0;
}

static void fill_field(const cJSON *v, int32_t **ids, char **text, const int32_t **out_ids,
                       size_t *out_n, const char **out_text)
{
    if (cJSON_IsString(v)) {
        size_t n = strlen(v->valuestring);
        memcpy(*text, v->valuestring, n + 1);
        *out_text = *text;
        *text += n + 1;
        return;
    }
    *out_ids = *ids;
    const cJSON *id;
    cJSON_ArrayForEach(id, v) * (*ids)++ = (int32_t)id->valuedouble;
    *out_n = (size_t)(*ids - *out_ids);
}

int submit_examples_load(const char *path, submit_examples *out, zmix_error *err)
{
    memset(out, 0, sizeof *out);
    uint8_t *text;
    size_t len;
    int read_rc = fs_read_file(path, EXAMPLES_FILE_MAX, &text, &len, err);
    if (read_rc) return read_rc;
    cJSON *root = cJSON_Parse((const char *)text);
    free(text);
    if (!root) return zmix_error_set(err, ZMIX_EFORMAT, "%s: not valid JSON", path);
    int rc = 0;
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(root, "examples");
    int n = cJSON_IsArray(list) ? cJSON_GetArraySize(list) : 0;
    size_t n_ids = 0, n_text = 0;
    if (!cJSON_IsArray(list))
        rc = zmix_error_set(err, ZMIX_EFORMAT, "%s: 'examples' is missing or not an array", path);
    else if (n == 0)
        rc = zmix_error_set(err, ZMIX_EFORMAT, "%s: 'examples' is empty", path);
    for (int i = 0; rc == 0 && i < n; i++) {
        const cJSON *e = cJSON_GetArrayItem(list, i);
        if (!cJSON_IsObject(e)) {
            rc = zmix_error_set(err, ZMIX_EFORMAT, "%s: example %d is not an object", path, i);
            break;
        }
        const cJSON *k;
        cJSON_ArrayForEach(k, e)
        {
            if (strcmp(k->string, "prompt") && strcmp(k->string, "target")) {
                rc = zmix_error_set(err, ZMIX_EFORMAT,
                                    "%s: example %d: unknown field '%s' (expected prompt, target)",
                                    path, i, k->string);
                break;
            }
        }
        if (rc == 0)
            rc = check_field(cJSON_GetObjectItemCaseSensitive(e, "prompt"), path, i, "prompt",
                             &n_ids, &n_text, err);
        if (rc == 0)
            rc = check_field(cJSON_GetObjectItemCaseSensitive(e, "target"), path, i, "target",
                             &n_ids, &n_text, err);
    }
    if (rc == 0) {
        out->items = calloc(n > 0 ? (size_t)n : 1, sizeof *out->items);
        out->ids = malloc((n_ids ? n_ids : 1) * sizeof *out->ids);
        out->texts = malloc(n_text ? n_text : 1);
        if (!out->items || !out->ids || !out->texts)
            rc = zmix_error_set(err, ZMIX_ENOMEM, "%s: out of memory", path);
    }
    if (rc == 0) {
        int32_t *ids = out->ids;
        char *t = out->texts;
        for (int i = 0; i < n; i++) {
            const cJSON *e = cJSON_GetArrayItem(list, i);
            zmix_client_example *x = &out->items[i];
            fill_field(cJSON_GetObjectItemCaseSensitive(e, "prompt"), &ids, &t, &x->prompt,
                       &x->n_prompt, &x->prompt_text);
            fill_field(cJSON_GetObjectItemCaseSensitive(e, "target"), &ids, &t, &x->target,
                       &x->n_target, &x->target_text);
        }
        out->n = n;
    }
    cJSON_Delete(root);
    if (rc) submit_examples_free(out);
    return rc;
}

void submit_examples_free(submit_examples *ex)
{
    free(ex->items);
    free(ex->ids);
    free(ex->texts);
    memset(ex, 0, sizeof *ex);
}
