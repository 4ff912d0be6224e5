/*
 * Hugging Face config.json -> zmix_model_config. Absent optional fields take the defaults of
 * the transformers config class for the model type, so that a minimal config means what it
 * means to transformers. Fields that would change the computation in ways zmix does not
 * implement (rope_scaling, biases other than qwen2's q/k/v, another activation) are refused
 * rather than ignored.
 */
#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loaders.h"
#include "util/file.h"

#define MAX_CONFIG_BYTES (16u << 20)

int zmix_json_parse_object(const char *text, size_t len, const char *path, struct cJSON **out,
                           zmix_error *err)
{
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (root) {
        while (end < text + len && strchr(" \t\r\n", *end) && *end) end++;
        if (end != text + len) {
            cJSON_Delete(root);
            root = NULL;
        }
    }
    if (!root) {
        size_t at = (end && end >= text && end <= text + len) ? (size_t)(end - text) : 0;
        return zmix_error_set(err, ZMIX_EFORMAT, "%s: malformed JSON near byte %zu", path, at);
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return zmix_error_set(err, ZMIX_EFORMAT, "%s: top level is not a JSON object", path);
    }
    /* cJSON keeps duplicate keys and lookups see the first: refuse them rather than let the
     * file mean something other than what its last line says. */
    for (const cJSON *a = root->child; a; a = a->next)
        for (const cJSON *b = a->next; b; b = b->next)
            if (!strcmp(a->string, b->string)) {
                int rc = zmix_error_set(err, ZMIX_EFORMAT, "%s: key '%.64s' appears twice", path,
                                        a->string);
                cJSON_Delete(root);
                return rc;
            }
    *out = root;
    return 0;
}

int zmix_json_load_file(const char *path, size_t max_bytes, struct cJSON **out, zmix_error *err)
{
    uint8_t *bytes = NULL;
    size_t len = 0;
    int rc = fs_read_file(path, max_bytes, &bytes, &len, err);
    if (rc) return rc;
    rc = zmix_json_parse_object((const char *)bytes, len, path, out, err);
    free(bytes);
    return rc;
}

static const cJSON *field(const cJSON *root, const char *name)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, name);
    return (item && !cJSON_IsNull(item)) ? item : NULL;
}

/* An integer field: required (def unused) or optional with default def. */
static int get_int(const cJSON *root, const char *path, const char *name, int required, int def,
                   int *out, zmix_error *err)
{
    const cJSON *item = field(root, name);
    if (!item) {
        if (required)
            return zmix_error_set(err, ZMIX_EFORMAT, "%s: field '%s' is missing", path, name);
        *out = def;
        return 0;
    }
    double d = item->valuedouble;
    if (!cJSON_IsNumber(item) || d != floor(d) || d < -2147483648.0 || d > 2147483647.0)
        return zmix_error_set(err, ZMIX_EFORMAT, "%s: field '%s' is not an integer", path, name);
    *out = (int)d;
    return 0;
}

static int get_float(const cJSON *root, const char *path, const char *name, float def, float *out,
                     zmix_error *err)
{
    const cJSON *item = field(root, name);
    if (!item) {
        *out = def;
        return 0;
    }
    if (!cJSON_IsNumber(item))
        return zmix_error_set(err, ZMIX_EFORMAT, "%s: field '%s' is not a number", path, name);
    *out = (float)item->valuedouble;
    return 0;
}

static int get_bool(const cJSON *root, const char *path, const char *name, int def, int *out,
                    zmix_error *err)
{
    const cJSON *item = field(root, name);
    if (!item) {
        *out = def;
        return 0;
    }
    if (!cJSON_IsBool(item))
        return zmix_error_set(err, ZMIX_EFORMAT, "%s: field '%s' is not true or false", path, name);
    *out = cJSON_IsTrue(item);
    return 0;
}

/* bos/eos ids: an integer, a list (the first entry counts: generation stops on any, and zmix
 * keeps one), or absent/null (-1). */
static int get_token_id(const cJSON *root, const char *path, const char *name, int *out,
                        zmix_error *err)
{
    const cJSON *item = field(root, name);
    *out = -1;
    if (!item) return 0;
    if (cJSON_IsArray(item)) {
        item = cJSON_GetArrayItem(item, 0);
        if (!item) return 0;
    }
    double d = item->valuedouble;
    if (!cJSON_IsNumber(item) || d != floor(d) || d < 0 || d > 2147483647.0)
        return zmix_error_set(err, ZMIX_EFORMAT, "%s: field '%s' is not a token id", path, name);
    *out = (int)d;
    return 0;
}

static int refuse_unsupported(const cJSON *root, const char *path, int is_qwen2, zmix_error *err)
{
    if (field(root, "rope_scaling"))
        return zmix_error_set(err, ZMIX_EFORMAT,
                              "%s: field 'rope_scaling' is set; only plain RoPE is supported",
                              path);
    const cJSON *act = field(root, "hidden_act");
    if (act && (!cJSON_IsString(act) || strcmp(act->valuestring, "silu")))
        return zmix_error_set(err, ZMIX_EFORMAT,
                              "%s: field 'hidden_act' is not \"silu\"; only SwiGLU MLPs are "
                              "supported",
                              path);
    static const char *const no_bias[] = {"attention_bias", "mlp_bias"};
    for (int i = 0; i < 2; i++) {
        const cJSON *b = field(root, no_bias[i]);
        /* qwen2 has q/k/v biases by construction and no such switch. */
        if (b && cJSON_IsTrue(b) && !is_qwen2)
            return zmix_error_set(err, ZMIX_EFORMAT, "%s: field '%s' is true; not supported", path,
                                  no_bias[i]);
    }
    return 0;
}

int zmix_hf_config_load(const char *path, zmix_model_config *cfg, zmix_error *err)
{
    cJSON *root;
    int rc = zmix_json_load_file(path, MAX_CONFIG_BYTES, &root, err);
    if (rc) return rc;
    memset(cfg, 0, sizeof *cfg);

    const cJSON *type = field(root, "model_type");
    int max_pos_default;
    if (!cJSON_IsString(type)) {
        rc = zmix_error_set(err, ZMIX_EFORMAT, "%s: field 'model_type' is missing or not a string",
                            path);
        goto done;
    }
    if (!strcmp(type->valuestring, "llama")) {
        max_pos_default = 2048;
    } else if (!strcmp(type->valuestring, "mistral")) {
        max_pos_default = 4096 * 32;
    } else if (!strcmp(type->valuestring, "qwen2")) {
        max_pos_default = 32768;
        cfg->qkv_bias = 1;
    } else {
        rc = zmix_error_set(err, ZMIX_EFORMAT,
                            "%s: model_type '%.64s' is not supported (llama, mistral, qwen2)", path,
                            type->valuestring);
        goto done;
    }
    snprintf(cfg->model_type, sizeof cfg->model_type, "%s", type->valuestring);
    if ((rc = refuse_unsupported(root, path, cfg->qkv_bias, err))) goto done;

    if ((rc = get_int(root, path, "hidden_size", 1, 0, &cfg->dim, err)) ||
        (rc = get_int(root, path, "intermediate_size", 1, 0, &cfg->hidden_dim, err)) ||
        (rc = get_int(root, path, "num_hidden_layers", 1, 0, &cfg->n_layers, err)) ||
        (rc = get_int(root, path, "num_attention_heads", 1, 0, &cfg->n_heads, err)) ||
        (rc = get_int(root, path, "num_key_value_heads", 0, cfg->n_heads, &cfg->n_kv_heads, err)) ||
        (rc = get_int(root, path, "vocab_size", 1, 0, &cfg->vocab_size, err)) ||
        (rc = get_int(root, path, "max_position_embeddings", 0, max_pos_default, &cfg->max_seq_len,
                      err)) ||
        (rc = get_float(root, path, "rms_norm_eps", 1e-6f, &cfg->norm_eps, err)) ||
        (rc = get_float(root, path, "rope_theta", 10000.0f, &cfg->rope_theta, err)) ||
        (rc = get_bool(root, path, "tie_word_embeddings", 0, &cfg->tied_embeddings, err)) ||
        (rc = get_token_id(root, path, "bos_token_id", &cfg->bos_id, err)) ||
        (rc = get_token_id(root, path, "eos_token_id", &cfg->eos_id, err)))
        goto done;
    if (field(root, "head_dim")) {
        if ((rc = get_int(root, path, "head_dim", 1, 0, &cfg->head_dim, err))) goto done;
    } else {
        if (cfg->n_heads <= 0 || cfg->dim <= 0 || cfg->dim % cfg->n_heads != 0) {
            rc = zmix_error_set(err, ZMIX_ERANGE,
                                "%s: num_attention_heads = %d does not divide hidden_size = %d "
                                "and head_dim is absent",
                                path, cfg->n_heads, cfg->dim);
            goto done;
        }
        cfg->head_dim = cfg->dim / cfg->n_heads;
    }
    /* A sliding attention window shorter than the context changes the attention of long
     * sequences, which zmix does not implement: cap the usable length at the window. */
    int use_window = 1;
    if (cfg->qkv_bias && (rc = get_bool(root, path, "use_sliding_window", 0, &use_window, err)))
        goto done;
    int window = 0;
    if (use_window && (rc = get_int(root, path, "sliding_window", 0, 0, &window, err))) goto done;
    if (window > 0 && window < cfg->max_seq_len) cfg->max_seq_len = window;
    cfg->rope_interleaved = 0;
    rc = zmix_model_config_check(cfg, path, err);
done:
    cJSON_Delete(root);
    return rc;
}
