/*
 * Hugging Face config.json -> zmix_model_config. Absent optional fields take the defaults of
 * the transformers config class for the model type, so that a minimal config means what it
 * means to transformers. RoPE scaling (linear, dynamic, llama3, yarn) is read into
 * cfg->rope_scaling. Fields that would change the computation in ways zmix does not implement
 * (another rope type, biases other than qwen2's q/k/v, another activation, partial rotary
 * embeddings, quantisation) are refused by name with their value rather than ignored.
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

/* The JSON text of a value for messages, cut to fit out. */
static void json_text(const cJSON *item, char *out, size_t size)
{
    char *text = item ? cJSON_PrintUnformatted(item) : NULL;
    snprintf(out, size, "%s", text ? text : "null");
    if (text && strlen(text) >= size && size > 4) memcpy(out + size - 4, "...", 4);
    free(text);
}

/* A number inside a nested object ("rope_scaling.factor"); def when absent and not required. */
static int get_sub_number(const cJSON *obj, const char *path, const char *obj_name,
                          const char *name, int required, double def, double *out, zmix_error *err)
{
    const cJSON *item = field(obj, name);
    if (!item) {
        if (required)
            return zmix_error_set(err, ZMIX_EFORMAT, "%s: field '%s.%s' is missing", path, obj_name,
                                  name);
        *out = def;
        return 0;
    }
    if (!cJSON_IsNumber(item) || !isfinite(item->valuedouble)) {
        char text[64];
        json_text(item, text, sizeof text);
        return zmix_error_set(err, ZMIX_EFORMAT, "%s: field '%s.%s' = %s is not a number", path,
                              obj_name, name, text);
    }
    *out = item->valuedouble;
    return 0;
}

static int refuse_value(const char *path, const char *obj_name, const cJSON *item, const char *why,
                        zmix_error *err)
{
    char text[64];
    json_text(item, text, sizeof text);
    return zmix_error_set(err, ZMIX_EFORMAT, "%s: field '%s%s%s' = %s %s", path,
                          obj_name ? obj_name : "", obj_name ? "." : "", item->string, text, why);
}

static int refuse_unsupported(const cJSON *root, const char *path, int is_qwen2, zmix_error *err)
{
    const cJSON *act = field(root, "hidden_act");
    if (act && (!cJSON_IsString(act) || strcmp(act->valuestring, "silu")))
        return refuse_value(path, NULL, act, "is not supported (only \"silu\": SwiGLU MLPs)", err);
    static const char *const no_bias[] = {"attention_bias", "mlp_bias"};
    for (int i = 0; i < 2; i++) {
        const cJSON *b = field(root, no_bias[i]);
        /* qwen2 has q/k/v biases by construction and no such switch. */
        if (b && !cJSON_IsFalse(b) && !(is_qwen2 && cJSON_IsTrue(b)))
            return refuse_value(path, NULL, b, "is not supported (only false)", err);
    }
    /* A rotary embedding over part of each head only (GPT-NeoX style). */
    const cJSON *partial = field(root, "partial_rotary_factor");
    if (partial && !(cJSON_IsNumber(partial) && partial->valuedouble == 1.0))
        return refuse_value(path, NULL, partial, "is not supported (only 1)", err);
    /* Quantised checkpoints (GPTQ, AWQ, bitsandbytes...) store other tensors entirely. */
    const cJSON *quant = field(root, "quantization_config");
    if (quant)
        return refuse_value(path, NULL, quant, "is not supported (F32, F16, BF16 only)", err);
    return 0;
}

/* Keys each rope_type reads (besides rope_type/type, and rope_theta and partial_rotary_factor
 * inside rope_parameters). Anything else is refused: transformers would only warn, and zmix
 * cannot tell whether the key changes what the model computes. */
static const struct rope_kind {
    const char *name;
    zmix_rope_type type;
    const char *keys[9];
} rope_kinds[] = {
    {"default", ZMIX_ROPE_DEFAULT, {NULL}},
    {"linear", ZMIX_ROPE_LINEAR, {"factor", NULL}},
    {"dynamic", ZMIX_ROPE_DYNAMIC, {"factor", "original_max_position_embeddings", NULL}},
    {"llama3",
     ZMIX_ROPE_LLAMA3,
     {"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings", NULL}},
    {"yarn",
     ZMIX_ROPE_YARN,
     {"factor", "attention_factor", "beta_fast", "beta_slow", "mscale", "mscale_all_dim",
      "original_max_position_embeddings", "truncate", NULL}},
};

/* YaRN's attention scaling of a context extension by scale (transformers' get_mscale). */
static double yarn_mscale(double scale, double mscale)
{
    return scale <= 1.0 ? 1.0 : 0.1 * mscale * log(scale) + 1.0;
}

static int read_yarn(const cJSON *o, const char *path, const char *on, int max_pos, int has_orig,
                     zmix_rope_scaling *rs, zmix_error *err)
{
    int rc;
    double orig = rs->original_max_pos;
    if (!field(o, "factor")) {
        /* transformers derives it from the two context lengths when only those are given. */
        if (!has_orig)
            return zmix_error_set(err, ZMIX_EFORMAT, "%s: field '%s.factor' is missing", path, on);
        rs->factor = (double)max_pos / orig;
    } else if (has_orig && rs->original_max_pos != max_pos &&
               fabs((double)max_pos / orig - rs->factor) > 1e-9 * rs->factor) {
        /* transformers releases disagree here: some use factor, some max/original. */
        return zmix_error_set(err, ZMIX_EFORMAT,
                              "%s: %s.factor = %g but max_position_embeddings / "
                              "%s.original_max_position_embeddings = %d / %d; transformers "
                              "versions compute this YaRN configuration differently, so zmix "
                              "refuses it (make the two agree)",
                              path, on, rs->factor, on, max_pos, rs->original_max_pos);
    }
    double mscale, mscale_all_dim, attn;
    if ((rc = get_sub_number(o, path, on, "beta_fast", 0, 32.0, &rs->beta_fast, err)) ||
        (rc = get_sub_number(o, path, on, "beta_slow", 0, 1.0, &rs->beta_slow, err)) ||
        (rc = get_sub_number(o, path, on, "mscale", 0, 0.0, &mscale, err)) ||
        (rc = get_sub_number(o, path, on, "mscale_all_dim", 0, 0.0, &mscale_all_dim, err)) ||
        (rc = get_sub_number(o, path, on, "attention_factor", 0, 0.0, &attn, err)))
        return rc;
    /* transformers reads beta_fast/beta_slow with `or`: 0 means the default too. */
    if (rs->beta_fast == 0.0) rs->beta_fast = 32.0;
    if (rs->beta_slow == 0.0) rs->beta_slow = 1.0;
    if (!(rs->beta_fast > 0) || !(rs->beta_slow > 0))
        return zmix_error_set(err, ZMIX_ERANGE,
                              "%s: %s.beta_fast = %g and beta_slow = %g must be positive", path, on,
                              rs->beta_fast, rs->beta_slow);
    if (field(o, "attention_factor"))
        rs->attention_factor = attn;
    else if (mscale != 0.0 && mscale_all_dim != 0.0)
        rs->attention_factor =
            yarn_mscale(rs->factor, mscale) / yarn_mscale(rs->factor, mscale_all_dim);
    else
        rs->attention_factor = yarn_mscale(rs->factor, 1.0);
    if (!(rs->attention_factor > 0) || !isfinite(rs->attention_factor))
        return zmix_error_set(err, ZMIX_ERANGE, "%s: %s: attention factor %g must be positive",
                              path, on, rs->attention_factor);
    rs->truncate = 1;
    return get_bool(o, path, "truncate", 1, &rs->truncate, err);
}

/* rope_scaling (transformers 4.x) or rope_parameters (5.x): the type, its parameters, and the
 * context length the scaling is meant for (*context, from max_position_embeddings). */
static int read_rope(const cJSON *root, const char *path, zmix_model_config *cfg, int *context,
                     zmix_error *err)
{
    const cJSON *rs_item = field(root, "rope_scaling"), *rp_item = field(root, "rope_parameters");
    if (rs_item && rp_item)
        return zmix_error_set(err, ZMIX_EFORMAT,
                              "%s: both 'rope_scaling' and 'rope_parameters' are set", path);
    const cJSON *o = rs_item ? rs_item : rp_item;
    const char *on = rs_item ? "rope_scaling" : "rope_parameters";
    zmix_rope_scaling *rs = &cfg->rope_scaling;
    memset(rs, 0, sizeof *rs);
    if (!o) return 0;
    if (!cJSON_IsObject(o)) return refuse_value(path, NULL, o, "is not an object", err);

    const cJSON *t1 = field(o, "rope_type"), *t2 = field(o, "type"), *t = t1 ? t1 : t2;
    if ((t1 && !cJSON_IsString(t1)) || (t2 && !cJSON_IsString(t2)))
        return refuse_value(path, on, t1 && !cJSON_IsString(t1) ? t1 : t2, "is not a string", err);
    if (t1 && t2 && strcmp(t1->valuestring, t2->valuestring))
        return zmix_error_set(err, ZMIX_EFORMAT,
                              "%s: %s.rope_type = \"%.32s\" and %s.type = \"%.32s\" disagree", path,
                              on, t1->valuestring, on, t2->valuestring);
    const struct rope_kind *kind = &rope_kinds[0];
    if (t) {
        kind = NULL;
        for (size_t i = 0; i < sizeof rope_kinds / sizeof rope_kinds[0]; i++)
            if (!strcmp(t->valuestring, rope_kinds[i].name)) kind = &rope_kinds[i];
        if (!kind)
            return refuse_value(path, on, t,
                                "is not supported (default, linear, dynamic, llama3, yarn)", err);
    }
    const cJSON *item;
    cJSON_ArrayForEach(item, o)
    {
        int known = !strcmp(item->string, "rope_type") || !strcmp(item->string, "type") ||
                    (rp_item && !strcmp(item->string, "rope_theta"));
        for (int k = 0; !known && kind->keys[k]; k++) known = !strcmp(item->string, kind->keys[k]);
        if (rp_item && !strcmp(item->string, "partial_rotary_factor"))
            known = cJSON_IsNumber(item) && item->valuedouble == 1.0;
        if (known || cJSON_IsNull(item)) continue;
        char why[96];
        snprintf(why, sizeof why, "is not supported with rope_type \"%s\"", kind->name);
        return refuse_value(path, on, item, why, err);
    }
    int rc;
    if (rp_item && field(o, "rope_theta")) {
        double theta;
        if (field(root, "rope_theta"))
            return zmix_error_set(err, ZMIX_EFORMAT,
                                  "%s: rope_theta is set both at the top level and in "
                                  "rope_parameters",
                                  path);
        if ((rc = get_sub_number(o, path, on, "rope_theta", 1, 0, &theta, err))) return rc;
        cfg->rope_theta = (float)theta;
    }
    rs->type = kind->type;
    if (rs->type == ZMIX_ROPE_DEFAULT) return 0;

    int max_pos = cfg->max_seq_len, has_orig = field(o, "original_max_position_embeddings") != NULL;
    rs->original_max_pos = max_pos;
    if ((rc = get_sub_number(o, path, on, "factor", rs->type != ZMIX_ROPE_YARN, 0.0, &rs->factor,
                             err)))
        return rc;
    if (has_orig) {
        double v;
        if ((rc = get_sub_number(o, path, on, "original_max_position_embeddings", 1, 0, &v, err)))
            return rc;
        if (v != floor(v) || v < 1 || v > ZMIX_MAX_SEQ_LEN)
            return zmix_error_set(err, ZMIX_ERANGE,
                                  "%s: %s.original_max_position_embeddings = %g is not an "
                                  "integer in [1, %d]",
                                  path, on, v, ZMIX_MAX_SEQ_LEN);
        rs->original_max_pos = (int)v;
    }
    if (rs->type == ZMIX_ROPE_DYNAMIC && rs->original_max_pos != max_pos)
        /* transformers (every release so far) grows θ past max_position_embeddings only. */
        return zmix_error_set(err, ZMIX_EFORMAT,
                              "%s: %s.original_max_position_embeddings = %d differs from "
                              "max_position_embeddings = %d, which dynamic scaling uses",
                              path, on, rs->original_max_pos, max_pos);
    if (rs->type == ZMIX_ROPE_YARN && (rc = read_yarn(o, path, on, max_pos, has_orig, rs, err)))
        return rc;
    if (!(rs->factor > 0) || !isfinite(rs->factor))
        return zmix_error_set(err, ZMIX_ERANGE, "%s: %s.factor = %g must be positive", path, on,
                              rs->factor);
    if (rs->type == ZMIX_ROPE_LLAMA3) {
        if (!has_orig)
            return zmix_error_set(err, ZMIX_EFORMAT,
                                  "%s: field '%s.original_max_position_embeddings' is missing",
                                  path, on);
        if ((rc =
                 get_sub_number(o, path, on, "low_freq_factor", 1, 0, &rs->low_freq_factor, err)) ||
            (rc =
                 get_sub_number(o, path, on, "high_freq_factor", 1, 0, &rs->high_freq_factor, err)))
            return rc;
        if (!(rs->low_freq_factor > 0) || !(rs->high_freq_factor > rs->low_freq_factor))
            return zmix_error_set(err, ZMIX_ERANGE,
                                  "%s: %s.low_freq_factor = %g and high_freq_factor = %g: need "
                                  "0 < low < high",
                                  path, on, rs->low_freq_factor, rs->high_freq_factor);
    }
    /* The context the scaling is made for: dynamic scaling exists to run past
     * max_position_embeddings (factor times), YaRN extends the original context factor times. */
    double ctx = max_pos;
    if (rs->type == ZMIX_ROPE_DYNAMIC) ctx = fmax(ctx, floor(rs->factor * max_pos));
    if (rs->type == ZMIX_ROPE_YARN) ctx = fmax(ctx, floor(rs->factor * rs->original_max_pos));
    *context = ctx > ZMIX_MAX_SEQ_LEN ? ZMIX_MAX_SEQ_LEN : (int)ctx;
    return 0;
}

/* Sliding-window attention (mistral, qwen2 with use_sliding_window, layer_types): a window
 * shorter than the context changes the attention of long sequences, which zmix does not
 * implement, so the usable context is capped at the window instead. */
static int read_window(const cJSON *root, const char *path, zmix_model_config *cfg, zmix_error *err)
{
    int use_window = 1, rc;
    if (cfg->qkv_bias && (rc = get_bool(root, path, "use_sliding_window", 0, &use_window, err)))
        return rc;
    const cJSON *types = field(root, "layer_types");
    if (types) {
        int any_sliding = 0;
        if (!cJSON_IsArray(types)) return refuse_value(path, NULL, types, "is not an array", err);
        const cJSON *t;
        cJSON_ArrayForEach(t, types)
        {
            int full = cJSON_IsString(t) && !strcmp(t->valuestring, "full_attention");
            int sliding = cJSON_IsString(t) && !strcmp(t->valuestring, "sliding_attention");
            if (!full && !sliding)
                return refuse_value(path, NULL, types,
                                    "is not supported (full_attention or sliding_attention "
                                    "layers only)",
                                    err);
            any_sliding |= sliding;
        }
        /* Explicit layer types replace use_sliding_window in transformers 5. */
        use_window = any_sliding;
    }
    int window = 0;
    if (use_window && (rc = get_int(root, path, "sliding_window", 0, 0, &window, err))) return rc;
    if (window > 0 && window < cfg->max_seq_len) cfg->max_seq_len = window;
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
    int context = cfg->max_seq_len;
    if ((rc = read_rope(root, path, cfg, &context, err))) goto done;
    cfg->max_seq_len = context;
    if ((rc = read_window(root, path, cfg, err))) goto done;
    cfg->rope_interleaved = 0;
    rc = zmix_model_config_check(cfg, path, err);
done:
    cJSON_Delete(root);
    return rc;
}
