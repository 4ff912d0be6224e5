/* Loading models: both stories260K formats, tiny synthetic HF directories (F32, F16, BF16,
 * sharded, tied/untied, qwen2 biases) and llama2.c files, and every malformed input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_formats_fixtures.h"
#include "zmix/model.h"

typedef fixture_ctx ctx;

static void load_ok(const char *path, zmix_model **out)
{
    zmix_error err = {0};
    int rc = zmix_model_load(path, out, &err);
    if (rc) fail_msg("load %s: %s", path, err.msg);
}

#define load_fails(...) load_fails_at(__LINE__, __VA_ARGS__)
static void load_fails_at(int line, const char *path, int code, const char *n1, const char *n2)
{
    zmix_model *model = (zmix_model *)1;
    zmix_error err = {0};
    expect_error_at(__FILE__, line, zmix_model_load(path, &model, &err), &err, code, n1, n2);
    assert_null(model);
}

/* ---- stories260K ------------------------------------------------------------------------ */

static void test_stories_both_formats(void **unused)
{
    char dir[1024], bin[1100];
    if (!stories_dir(dir, sizeof dir)) skip();
    snprintf(bin, sizeof bin, "%s/stories260K.bin", dir);
    zmix_model *hf, *l2, *hf2;
    load_ok(dir, &hf);
    load_ok(bin, &l2);
    load_ok(dir, &hf2);
    const zmix_model_config *a = zmix_model_get_config(hf), *b = zmix_model_get_config(l2);
    assert_string_equal(a->model_type, "llama");
    assert_string_equal(b->model_type, "llama2c");
    assert_int_equal(a->dim, 64);
    assert_int_equal(a->hidden_dim, 172);
    assert_int_equal(a->n_layers, 5);
    assert_int_equal(a->n_heads, 8);
    assert_int_equal(a->n_kv_heads, 4);
    assert_int_equal(a->head_dim, 8);
    assert_int_equal(a->vocab_size, 512);
    assert_int_equal(a->max_seq_len, 512);
    assert_int_equal(a->bos_id, 1);
    assert_int_equal(a->eos_id, 2);
    assert_true(a->tied_embeddings && b->tied_embeddings);
    assert_int_equal(a->rope_interleaved, 0);
    assert_int_equal(b->rope_interleaved, 1);
    /* Apart from the name and the rotary layout the two configs are the same. */
    zmix_model_config bb = *b;
    memcpy(bb.model_type, a->model_type, sizeof bb.model_type);
    bb.rope_interleaved = a->rope_interleaved;
    assert_memory_equal(&bb, a, sizeof bb);

    /* Fingerprint: 64 hex digits, stable across loads, different between the formats. */
    assert_int_equal(strlen(zmix_model_fingerprint(hf)), 64);
    assert_int_equal(strspn(zmix_model_fingerprint(hf), "0123456789abcdef"), 64);
    assert_string_equal(zmix_model_fingerprint(hf), zmix_model_fingerprint(hf2));
    assert_string_not_equal(zmix_model_fingerprint(hf), zmix_model_fingerprint(l2));

    /* Weights: identical except q/k rows, which the README's permutation maps across. */
    assert_memory_equal(hf->embed, l2->embed, 512 * 64 * sizeof(float));
    assert_ptr_equal(hf->lm_head, hf->embed);
    assert_ptr_equal(l2->lm_head, l2->embed);
    assert_memory_equal(hf->final_norm, l2->final_norm, 64 * sizeof(float));
    for (int l = 0; l < 5; l++) {
        const zmix_layer *x = &hf->layers[l], *y = &l2->layers[l];
        assert_memory_equal(x->attn_norm, y->attn_norm, 64 * sizeof(float));
        assert_memory_equal(x->ffn_norm, y->ffn_norm, 64 * sizeof(float));
        assert_memory_equal(x->wv, y->wv, 32 * 64 * sizeof(float));
        assert_memory_equal(x->wo, y->wo, 64 * 64 * sizeof(float));
        assert_memory_equal(x->w_gate, y->w_gate, 172 * 64 * sizeof(float));
        assert_memory_equal(x->w_up, y->w_up, 172 * 64 * sizeof(float));
        assert_memory_equal(x->w_down, y->w_down, 64 * 172 * sizeof(float));
        for (int which = 0; which < 2; which++) {
            int heads = which ? 4 : 8, hs = 8;
            const float *h = which ? x->wk : x->wq, *c = which ? y->wk : y->wq;
            for (int head = 0; head < heads; head++)
                for (int i = 0; i < hs / 2; i++)
                    for (int parity = 0; parity < 2; parity++) {
                        int row_l2 = head * hs + 2 * i + parity;
                        int row_hf = head * hs + parity * (hs / 2) + i;
                        assert_memory_equal(h + row_hf * 64, c + row_l2 * 64, 64 * sizeof(float));
                    }
            /* And the permutation is not the identity, so the check above has teeth. */
            assert_memory_not_equal(h + 64, c + 64, 64 * sizeof(float));
        }
    }
    zmix_model_free(hf);
    zmix_model_free(hf2);
    zmix_model_free(l2);
}

static void copy_prefix(const char *from, const char *to, size_t keep)
{
    size_t len;
    char *data = testutil_read_file(from, &len);
    testutil_write_file(to, data, keep < len ? keep : len);
    free(data);
}

static void test_stories_truncated(void **state)
{
    ctx *c = *state;
    char dir[1024], src[1100], dst[1100];
    if (!stories_dir(dir, sizeof dir)) skip();
    snprintf(src, sizeof src, "%s/stories260K.bin", dir);
    snprintf(dst, sizeof dst, "%s/short.bin", c->dir);
    copy_prefix(src, dst, 1056540 - 4);
    load_fails(dst, ZMIX_EFORMAT, "1056536 bytes", "implies 1056540");

    /* An HF copy whose safetensors lost its tail: the last tensors' offsets run past it. */
    snprintf(src, sizeof src, "%s/config.json", dir);
    snprintf(dst, sizeof dst, "%s/config.json", c->dir);
    copy_prefix(src, dst, (size_t)-1);
    snprintf(src, sizeof src, "%s/model.safetensors", dir);
    snprintf(dst, sizeof dst, "%s/model.safetensors", c->dir);
    copy_prefix(src, dst, 600000);
    load_fails(c->dir, ZMIX_EFORMAT, "model.safetensors", "outside the data area");
}

/* ---- synthetic HF directories ----------------------------------------------------------- */

/* The values a matrix holds, whatever its storage, against the fixture's (bit for bit). */
static void assert_matrix_values(zmix_wref w, const float *want, size_t n)
{
    assert_non_null(w.data);
    float *got = malloc(n * sizeof *got);
    if (w.dtype == ZMIX_DT_F32)
        memcpy(got, w.data, n * sizeof *got);
    else
        zmix_half_to_float(got, w.data, n, w.dtype);
    assert_memory_equal(got, want, n * sizeof *got);
    free(got);
}

static void assert_weights_match(const zmix_model *model, fixture_model *m)
{
    assert_matrix_values(zmix_model_embed_ref(model),
                         fixture_find(m, "model.embed_tokens.weight")->values,
                         (size_t)m->vocab * (size_t)m->dim);
    for (int l = 0; l < m->layers; l++) {
        char n[96];
        int rows, cols;
        snprintf(n, sizeof n, "model.layers.%d.mlp.down_proj.weight", l);
        assert_matrix_values(zmix_model_matrix_ref(model, l, ZMIX_MAT_DOWN, &rows, &cols),
                             fixture_find(m, n)->values, (size_t)m->dim * (size_t)m->hidden);
        snprintf(n, sizeof n, "model.layers.%d.self_attn.k_proj.weight", l);
        assert_matrix_values(zmix_model_matrix_ref(model, l, ZMIX_MAT_K, &rows, &cols),
                             fixture_find(m, n)->values, (size_t)m->dim / 2 * (size_t)m->dim);
        snprintf(n, sizeof n, "model.layers.%d.input_layernorm.weight", l);
        assert_memory_equal(model->layers[l].attn_norm, fixture_find(m, n)->values,
                            (size_t)m->dim * sizeof(float));
    }
}

static void test_hf_f32_single_and_sharded(void **state)
{
    ctx *c = *state;
    fixture_model_init(&c->m, "llama", 0, 1, "F32", 11);
    fixture_write_config(&c->m, c->dir,
                         "\"rms_norm_eps\": 1e-5, \"bos_token_id\": 1, \"eos_token_id\": [2, 3]");
    fixture_write_weights(&c->m, c->dir, 1);
    zmix_model *single;
    load_ok(c->dir, &single);
    const zmix_model_config *cfg = zmix_model_get_config(single);
    assert_int_equal(cfg->head_dim, 4);
    assert_int_equal(cfg->n_kv_heads, 1);
    assert_true(cfg->norm_eps == 1e-5f);
    assert_true(cfg->rope_theta == 10000.0f);
    assert_int_equal(cfg->max_seq_len, 64);
    assert_int_equal(cfg->tied_embeddings, 0);
    assert_int_equal(cfg->qkv_bias, 0);
    assert_int_equal(cfg->bos_id, 1);
    assert_int_equal(cfg->eos_id, 2);
    assert_weights_match(single, &c->m);
    assert_ptr_not_equal(single->lm_head, single->embed);
    assert_memory_equal(single->lm_head, fixture_find(&c->m, "lm_head.weight")->values,
                        16 * 8 * sizeof(float));

    /* The same tensors over three shards and an index: same model, same fingerprint. */
    char path[700];
    snprintf(path, sizeof path, "%s/model.safetensors", c->dir);
    remove(path);
    fixture_write_weights(&c->m, c->dir, 3);
    zmix_model *sharded;
    load_ok(c->dir, &sharded);
    assert_weights_match(sharded, &c->m);
    assert_string_equal(zmix_model_fingerprint(single), zmix_model_fingerprint(sharded));
    assert_int_equal(sharded->n_maps, 3);
    zmix_model_free(single);
    zmix_model_free(sharded);
}

static void test_hf_f16_and_bf16(void **state)
{
    ctx *c = *state;
    const char *dtypes[] = {"F16", "BF16"};
    for (int i = 0; i < 2; i++) {
        fixture_model_free(&c->m);
        fixture_model_init(&c->m, "mistral", 1, 0, dtypes[i], 5);
        fixture_write_config(&c->m, c->dir, "\"sliding_window\": 32");
        fixture_write_weights(&c->m, c->dir, 1);
        zmix_model *model;
        load_ok(c->dir, &model);
        assert_weights_match(model, &c->m); /* the stored values, bit for bit */
        /* The matrices stay 16-bit, in the file mapping (kept by the model); only the norms
         * are converted. */
        zmix_dtype dt = i ? ZMIX_DT_BF16 : ZMIX_DT_F16;
        assert_null(model->embed);
        assert_int_equal(model->embed_dtype, dt);
        assert_ptr_equal(model->lm_head_half, model->embed_half);
        assert_true(zmix_model_has_half(model));
        assert_int_equal(model->n_maps, 1);
        const uint8_t *map = model->maps[0].addr;
        for (int l = 0; l < c->m.layers; l++)
            for (int k = 0; k < ZMIX_MAT_COUNT; k++) {
                const uint8_t *p = (const uint8_t *)model->layers[l].half[k];
                assert_true(p >= map && p < map + model->maps[0].len);
                assert_int_equal(model->layers[l].half_dtype[k], dt);
            }
        assert_int_equal(model->n_allocs, 2 * c->m.layers + 1); /* the norms */
        assert_int_equal(zmix_model_get_config(model)->max_seq_len, 32);
        zmix_model_free(model);
    }
}

static void test_hf_qwen2_biases(void **state)
{
    ctx *c = *state;
    fixture_model_init(&c->m, "qwen2", 1, 1, "F32", 3);
    fixture_write_config(&c->m, c->dir, "\"head_dim\": 4, \"rope_theta\": 1000000.0");
    fixture_write_weights(&c->m, c->dir, 1);
    zmix_model *model;
    load_ok(c->dir, &model);
    assert_int_equal(zmix_model_get_config(model)->qkv_bias, 1);
    assert_true(zmix_model_get_config(model)->rope_theta == 1e6f);
    assert_memory_equal(model->layers[1].bk,
                        fixture_find(&c->m, "model.layers.1.self_attn.k_proj.bias")->values,
                        4 * sizeof(float));
    zmix_model_free(model);

    fixture_drop(&c->m, "model.layers.1.self_attn.v_proj.bias");
    fixture_write_weights(&c->m, c->dir, 1);
    load_fails(c->dir, ZMIX_ENOTFOUND, "model.layers.1.self_attn.v_proj.bias", "missing");
}

static void test_hf_tied_head_must_agree(void **state)
{
    ctx *c = *state;
    fixture_model_init(&c->m, "llama", 1, 1, "F32", 9);
    fixture_find(&c->m, "lm_head.weight")->values[37] += 1.0f;
    fixture_write_config(&c->m, c->dir, "");
    fixture_write_weights(&c->m, c->dir, 1);
    load_fails(c->dir, ZMIX_EFORMAT, "lm_head.weight differs", "row 4, column 5");
}

static void test_hf_bad_tensors(void **state)
{
    ctx *c = *state;
    char path[700];
    snprintf(path, sizeof path, "%s/model.safetensors", c->dir);
    fixture_model_init(&c->m, "llama", 0, 1, "F32", 1);
    fixture_write_config(&c->m, c->dir, "");

    /* Untied without lm_head. */
    fixture_drop(&c->m, "lm_head.weight");
    fixture_write_weights(&c->m, c->dir, 1);
    load_fails(c->dir, ZMIX_ENOTFOUND, "lm_head.weight", path);

    /* A missing layer tensor. */
    fixture_model_free(&c->m);
    fixture_model_init(&c->m, "llama", 0, 1, "F32", 1);
    fixture_drop(&c->m, "model.layers.1.mlp.up_proj.weight");
    fixture_write_weights(&c->m, c->dir, 1);
    load_fails(c->dir, ZMIX_ENOTFOUND, "model.layers.1.mlp.up_proj.weight", "missing");

    /* A wrong shape. */
    fixture_model_free(&c->m);
    fixture_model_init(&c->m, "llama", 0, 1, "F32", 1);
    fixture_tensor *t = fixture_find(&c->m, "model.layers.0.mlp.gate_proj.weight");
    t->shape[0] = 8, t->shape[1] = 12;
    fixture_write_weights(&c->m, c->dir, 1);
    load_fails(c->dir, ZMIX_EFORMAT, "'model.layers.0.mlp.gate_proj.weight': shape [8, 12]",
               "expected [12, 8]");

    /* NaN and Inf in weights. */
    fixture_model_free(&c->m);
    fixture_model_init(&c->m, "llama", 0, 1, "F32", 1);
    fixture_find(&c->m, "model.layers.1.self_attn.o_proj.weight")->values[5] = NAN;
    fixture_write_weights(&c->m, c->dir, 1);
    load_fails(c->dir, ZMIX_ENUMERIC, "'model.layers.1.self_attn.o_proj.weight'",
               "element 5 is NaN");
    fixture_find(&c->m, "model.layers.1.self_attn.o_proj.weight")->values[5] = 0;
    fixture_find(&c->m, "model.norm.weight")->values[2] = -INFINITY;
    fixture_write_weights(&c->m, c->dir, 1);
    load_fails(c->dir, ZMIX_ENUMERIC, "'model.norm.weight'", "Inf");
}

static void test_hf_extra_tensor_rejected(void **state)
{
    ctx *c = *state;
    fixture_model_init(&c->m, "llama", 1, 1, "F32", 1);
    fixture_write_config(&c->m, c->dir, "");
    /* Rename the (tied, optional) lm_head into a bias the config does not declare. */
    fixture_tensor *t = fixture_find(&c->m, "lm_head.weight");
    snprintf(t->name, sizeof t->name, "model.layers.0.self_attn.q_proj.bias");
    fixture_write_weights(&c->m, c->dir, 1);
    load_fails(c->dir, ZMIX_EFORMAT, "'model.layers.0.self_attn.q_proj.bias' is not part", "llama");

    /* Stored RoPE frequencies are the one kind of extra tensor accepted (and ignored). */
    t = fixture_find(&c->m, "model.layers.0.self_attn.q_proj.bias");
    snprintf(t->name, sizeof t->name, "model.layers.0.self_attn.rotary_emb.inv_freq");
    fixture_write_weights(&c->m, c->dir, 1);
    zmix_model *model;
    load_ok(c->dir, &model);
    zmix_model_free(model);
}

static void test_hf_bad_index(void **state)
{
    ctx *c = *state;
    fixture_model_init(&c->m, "llama", 0, 1, "F32", 2);
    fixture_write_config(&c->m, c->dir, "");
    fixture_write_weights(&c->m, c->dir, 2);
    char path[700];
    snprintf(path, sizeof path, "%s/model-00002-of-00002.safetensors", c->dir);
    remove(path);
    load_fails(c->dir, ZMIX_ENOTFOUND, "model-00002-of-00002.safetensors", "cannot open");

    snprintf(path, sizeof path, "%s/model.safetensors.index.json", c->dir);
    testutil_write_text(path, "{\"weight_map\": {\"model.norm.weight\": \"../x.safetensors\"}}");
    load_fails(c->dir, ZMIX_EFORMAT, "weight_map['model.norm.weight']", "not a file name");
    testutil_write_text(path, "{\"weight_map\": [1]}");
    load_fails(c->dir, ZMIX_EFORMAT, "weight_map", "not an object");
    remove(path);
    load_fails(c->dir, ZMIX_ENOTFOUND, "neither model.safetensors", NULL);
}

static void test_hf_bad_configs(void **state)
{
    ctx *c = *state;
    fixture_model_init(&c->m, "llama", 0, 1, "F32", 4);
    fixture_write_weights(&c->m, c->dir, 1);
    char path[700];
    snprintf(path, sizeof path, "%s/config.json", c->dir);
    load_fails(c->dir, ZMIX_ENOTFOUND, path, NULL);

    testutil_write_text(path, "{\"model_type\": \"llama\", ");
    load_fails(c->dir, ZMIX_EFORMAT, path, "malformed JSON");

    fixture_write_config(&c->m, c->dir, "\"head_dim\": 3");
    load_fails(c->dir, ZMIX_ERANGE, "head_dim = 3", NULL);
    fixture_write_config(&c->m, c->dir, "\"rope_scaling\": {\"type\": \"linear\"}");
    load_fails(c->dir, ZMIX_EFORMAT, "rope_scaling", NULL);
    fixture_write_config(&c->m, c->dir, "\"hidden_act\": \"gelu\"");
    load_fails(c->dir, ZMIX_EFORMAT, "hidden_act", NULL);
    fixture_write_config(&c->m, c->dir, "\"attention_bias\": true");
    load_fails(c->dir, ZMIX_EFORMAT, "attention_bias", NULL);
    fixture_write_config(&c->m, c->dir, "\"rms_norm_eps\": -1");
    load_fails(c->dir, ZMIX_ERANGE, "rms_norm_eps", NULL);
    fixture_write_config(&c->m, c->dir, "\"eos_token_id\": 99");
    load_fails(c->dir, ZMIX_ERANGE, "eos_token_id", NULL);
    fixture_write_config(&c->m, c->dir, "\"vocab_size\": 16");
    load_fails(c->dir, ZMIX_EFORMAT, "key 'vocab_size' appears twice", NULL);
    fixture_write_config(&c->m, c->dir, "\"rope_theta\": \"big\"");
    load_fails(c->dir, ZMIX_EFORMAT, "'rope_theta' is not a number", NULL);

    fixture_model *m = &c->m;
    m->dim = 0;
    fixture_write_config(m, c->dir, "");
    load_fails(c->dir, ZMIX_ERANGE, "num_attention_heads = 2 does not divide hidden_size = 0",
               NULL);
    fixture_write_config(m, c->dir, "\"head_dim\": 4");
    load_fails(c->dir, ZMIX_ERANGE, "dim (hidden_size) = 0", NULL);
    m->dim = 9;
    fixture_write_config(m, c->dir, "");
    load_fails(c->dir, ZMIX_ERANGE, "does not divide hidden_size = 9", NULL);
    m->dim = 8, m->kv_heads = 3, m->heads = 4;
    fixture_write_config(m, c->dir, "");
    load_fails(c->dir, ZMIX_ERANGE, "n_kv_heads = 3 does not divide n_heads = 4", NULL);
    m->kv_heads = -1;
    fixture_write_config(m, c->dir, "");
    load_fails(c->dir, ZMIX_ERANGE, "n_kv_heads = -1", NULL);
    m->kv_heads = 1, m->heads = 2, m->hidden = -5;
    fixture_write_config(m, c->dir, "");
    load_fails(c->dir, ZMIX_ERANGE, "intermediate_size", NULL);
    m->hidden = 12;
    snprintf(m->model_type, sizeof m->model_type, "gpt2");
    fixture_write_config(m, c->dir, "");
    load_fails(c->dir, ZMIX_EFORMAT, "model_type 'gpt2' is not supported", NULL);
    testutil_write_text(path, "{\"model_type\": \"llama\", \"hidden_size\": 8}");
    load_fails(c->dir, ZMIX_EFORMAT, "'intermediate_size' is missing", NULL);
    testutil_write_text(path, "{\"model_type\": \"llama\", \"hidden_size\": 8.5}");
    load_fails(c->dir, ZMIX_EFORMAT, "'hidden_size' is not an integer", NULL);
}

/* RoPE scaling and the other architecture fields: what is read, and every unsupported field or
 * value refused naming the field and its value. (That the accepted ones compute what
 * transformers computes is test_arch_reference.py's job.) */
static void test_hf_arch_configs(void **state)
{
    ctx *c = *state;
    fixture_model_init(&c->m, "llama", 0, 1, "BF16", 4);
    fixture_write_weights(&c->m, c->dir, 1);
    static const struct {
        const char *extra;
        int code;
        const char *n1, *n2;
    } bad[] = {
        {"\"rope_scaling\": {\"type\": \"longrope\", \"factor\": 2}", ZMIX_EFORMAT,
         "'rope_scaling.type' = \"longrope\" is not supported", NULL},
        {"\"rope_scaling\": {\"rope_type\": \"su\"}", ZMIX_EFORMAT, "rope_type' = \"su\"", NULL},
        {"\"rope_scaling\": 8", ZMIX_EFORMAT, "'rope_scaling' = 8 is not an object", NULL},
        {"\"rope_scaling\": {\"factor\": 2}", ZMIX_EFORMAT,
         "'rope_scaling.factor' = 2 is not supported with rope_type \"default\"", NULL},
        {"\"rope_scaling\": {\"rope_type\": \"linear\"}", ZMIX_EFORMAT,
         "'rope_scaling.factor' is missing", NULL},
        {"\"rope_scaling\": {\"rope_type\": \"linear\", \"factor\": \"x\"}", ZMIX_EFORMAT,
         "'rope_scaling.factor' = \"x\" is not a number", NULL},
        {"\"rope_scaling\": {\"rope_type\": \"linear\", \"factor\": -2}", ZMIX_ERANGE,
         "rope_scaling.factor = -2", NULL},
        {"\"rope_scaling\": {\"rope_type\": \"linear\", \"type\": \"dynamic\", \"factor\": 2}",
         ZMIX_EFORMAT, "rope_type = \"linear\" and rope_scaling.type = \"dynamic\" disagree", NULL},
        {"\"rope_scaling\": {\"rope_type\": \"linear\", \"factor\": 2, \"low_freq_factor\": 1}",
         ZMIX_EFORMAT, "'rope_scaling.low_freq_factor' = 1 is not supported with rope_type",
         "\"linear\""},
        {"\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8, \"low_freq_factor\": 1, "
         "\"original_max_position_embeddings\": 8}",
         ZMIX_EFORMAT, "'rope_scaling.high_freq_factor' is missing", NULL},
        {"\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8, \"low_freq_factor\": 4, "
         "\"high_freq_factor\": 4, \"original_max_position_embeddings\": 8}",
         ZMIX_ERANGE, "low_freq_factor = 4 and high_freq_factor = 4", NULL},
        {"\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8, \"low_freq_factor\": 1, "
         "\"high_freq_factor\": 4, \"original_max_position_embeddings\": 8.5}",
         ZMIX_ERANGE, "original_max_position_embeddings = 8.5", NULL},
        {"\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8, \"low_freq_factor\": 1, "
         "\"high_freq_factor\": 4}",
         ZMIX_EFORMAT, "'rope_scaling.original_max_position_embeddings' is missing", NULL},
        {"\"rope_scaling\": {\"rope_type\": \"dynamic\", \"factor\": 2, "
         "\"original_max_position_embeddings\": 32}",
         ZMIX_EFORMAT, "original_max_position_embeddings = 32 differs from",
         "max_position_embeddings = 64"},
        {"\"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 2, "
         "\"original_max_position_embeddings\": 16}",
         ZMIX_EFORMAT, "rope_scaling.factor = 2 but max_position_embeddings", "64 / 16"},
        {"\"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 2, \"beta_fast\": -1}",
         ZMIX_ERANGE, "beta_fast = -1", NULL},
        {"\"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 2, \"truncate\": 1}",
         ZMIX_EFORMAT, "'truncate' is not true or false", NULL},
        {"\"rope_scaling\": {\"rope_type\": \"yarn\"}", ZMIX_EFORMAT,
         "'rope_scaling.factor' is missing", NULL},
        {"\"rope_scaling\": {\"rope_type\": \"linear\", \"factor\": 2}, \"rope_parameters\": {}",
         ZMIX_EFORMAT, "both 'rope_scaling' and 'rope_parameters'", NULL},
        {"\"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": 1e4, "
         "\"partial_rotary_factor\": 0.5}",
         ZMIX_EFORMAT, "'rope_parameters.partial_rotary_factor' = 0.5 is not supported", NULL},
        {"\"rope_theta\": 1e4, \"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": "
         "1e4}",
         ZMIX_EFORMAT, "rope_theta is set both", NULL},
        {"\"partial_rotary_factor\": 0.5", ZMIX_EFORMAT,
         "'partial_rotary_factor' = 0.5 is not supported", NULL},
        {"\"quantization_config\": {\"quant_method\": \"gptq\"}", ZMIX_EFORMAT,
         "'quantization_config' = {\"quant_method\":\"gptq\"} is not supported", NULL},
        {"\"hidden_act\": \"gelu\"", ZMIX_EFORMAT, "'hidden_act' = \"gelu\" is not supported",
         NULL},
        {"\"attention_bias\": true", ZMIX_EFORMAT, "'attention_bias' = true is not supported",
         NULL},
        {"\"mlp_bias\": 1", ZMIX_EFORMAT, "'mlp_bias' = 1 is not supported", NULL},
        {"\"layer_types\": [\"full_attention\", \"chunked_attention\"]", ZMIX_EFORMAT,
         "'layer_types' = [\"full_attention\",\"chunked_attention\"] is not supported", NULL},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fixture_write_config(&c->m, c->dir, bad[i].extra);
        load_fails(c->dir, bad[i].code, bad[i].n1, bad[i].n2);
    }

    /* Accepted: what each reads into the config. */
    zmix_model *m;
    fixture_write_config(&c->m, c->dir, "\"rope_scaling\": null, \"attention_bias\": false");
    load_ok(c->dir, &m);
    assert_int_equal(m->cfg.rope_scaling.type, ZMIX_ROPE_DEFAULT);
    char plain[65];
    memcpy(plain, m->fingerprint, sizeof plain);
    zmix_model_free(m);
    fixture_write_config(&c->m, c->dir, "\"rope_scaling\": {\"rope_type\": \"default\"}");
    load_ok(c->dir, &m);
    assert_string_equal(m->fingerprint, plain); /* plain RoPE: same model */
    zmix_model_free(m);

    fixture_write_config(&c->m, c->dir,
                         "\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0, "
                         "\"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, "
                         "\"original_max_position_embeddings\": 8}");
    load_ok(c->dir, &m);
    const zmix_rope_scaling *r = &m->cfg.rope_scaling;
    assert_int_equal(r->type, ZMIX_ROPE_LLAMA3);
    assert_true(r->factor == 8.0 && r->low_freq_factor == 1.0 && r->high_freq_factor == 4.0);
    assert_int_equal(r->original_max_pos, 8);
    assert_int_equal(m->cfg.max_seq_len, 64);
    assert_string_not_equal(m->fingerprint, plain);
    zmix_model_free(m);

    fixture_write_config(&c->m, c->dir,
                         "\"rope_scaling\": {\"type\": \"yarn\", \"factor\": 4.0, "
                         "\"original_max_position_embeddings\": 64}");
    load_ok(c->dir, &m);
    r = &m->cfg.rope_scaling;
    assert_int_equal(r->type, ZMIX_ROPE_YARN);
    assert_true(r->beta_fast == 32.0 && r->beta_slow == 1.0 && r->truncate == 1);
    assert_true(fabs(r->attention_factor - (0.1 * log(4.0) + 1.0)) < 1e-15);
    assert_int_equal(m->cfg.max_seq_len, 256); /* factor × original */
    zmix_model_free(m);

    /* transformers 5: no factor, derived from the two lengths. */
    fixture_write_config(&c->m, c->dir,
                         "\"rope_parameters\": {\"rope_type\": \"yarn\", \"rope_theta\": 5e5, "
                         "\"original_max_position_embeddings\": 16, \"attention_factor\": 1.5}");
    load_ok(c->dir, &m);
    r = &m->cfg.rope_scaling;
    assert_true(r->factor == 4.0 && r->attention_factor == 1.5);
    assert_true(m->cfg.rope_theta == 5e5f);
    zmix_model_free(m);

    /* Sliding windows cap the context; a window at least as long is a no-op. */
    static const struct {
        const char *type, *extra;
        int context;
    } windows[] = {
        {"mistral", "\"sliding_window\": 40", 40},
        {"mistral", "\"sliding_window\": 4096", 64},
        {"mistral", "\"sliding_window\": null", 64},
        {"llama",
         "\"sliding_window\": 40, \"layer_types\": [\"full_attention\", "
         "\"full_attention\"]",
         64},
        {"llama",
         "\"sliding_window\": 40, \"layer_types\": [\"sliding_attention\", "
         "\"full_attention\"]",
         40},
    };
    for (size_t i = 0; i < sizeof windows / sizeof windows[0]; i++) {
        snprintf(c->m.model_type, sizeof c->m.model_type, "%s", windows[i].type);
        fixture_write_config(&c->m, c->dir, windows[i].extra);
        load_ok(c->dir, &m);
        assert_int_equal(m->cfg.max_seq_len, windows[i].context);
        zmix_model_free(m);
    }
}

/* ---- llama2.c files --------------------------------------------------------------------- */

static void test_llama2c_synthetic(void **state)
{
    ctx *c = *state;
    char path[700];
    snprintf(path, sizeof path, "%s/m.bin", c->dir);
    int32_t h[7] = {8, 12, 2, 2, 1, -16, 10};
    size_t n = fixture_write_llama2c(path, h, 1);
    zmix_model *model;
    load_ok(path, &model);
    const zmix_model_config *cfg = zmix_model_get_config(model);
    assert_int_equal(cfg->vocab_size, 16);
    assert_int_equal(cfg->tied_embeddings, 0);
    assert_int_equal(cfg->head_dim, 4);
    assert_int_equal(cfg->max_seq_len, 10);
    /* The classifier is the last tensor of the file, after the RoPE tables. */
    size_t len;
    char *raw = testutil_read_file(path, &len);
    assert_int_equal(len, 28 + 4 * n);
    assert_memory_equal(model->lm_head, raw + len - 16 * 8 * 4, 16 * 8 * 4);
    assert_memory_equal(model->layers[1].w_up,
                        raw + len - 16 * 8 * 4 - 10 * 4 * 4 - 8 * 4 - 12 * 8 * 4, 12 * 8 * 4);
    free(raw);
    zmix_model_free(model);

    h[5] = 16; /* tied: now the file is one classifier too long */
    fixture_write_llama2c(path, (int32_t[7]){8, 12, 2, 2, 1, -16, 10}, 1);
    FILE *f = fopen(path, "r+b");
    fwrite(h, 4, 7, f);
    fclose(f);
    load_fails(path, ZMIX_EFORMAT, path, "implies");
}

static void test_llama2c_malformed(void **state)
{
    ctx *c = *state;
    char path[700];
    snprintf(path, sizeof path, "%s/m.bin", c->dir);
    testutil_write_file(path, "\x08\0\0\0", 4);
    load_fails(path, ZMIX_EFORMAT, "shorter than the 28-byte", NULL);

    struct {
        int32_t h[7];
        int code;
        const char *msg;
    } cases[] = {
        {{8, 12, 0, 2, 1, 16, 10}, ZMIX_ERANGE, "n_layers = 0"},
        {{8, 12, 2, -2, 1, 16, 10}, ZMIX_ERANGE, "n_heads = -2"},
        {{8, 12, 2, 3, 1, 16, 10}, ZMIX_ERANGE, "n_heads = 3 does not divide dim = 8"},
        {{8, 12, 2, 4, 3, 16, 10}, ZMIX_ERANGE, "n_kv_heads = 3 does not divide n_heads = 4"},
        {{8, 12, 2, 8, 8, 16, 10}, ZMIX_ERANGE, "head_dim = 1 is odd"},
        {{8, 12, 2, 2, 1, 16, 1 << 30}, ZMIX_ERANGE, "max_seq_len"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t buf[28 + 64] = {0};
        memcpy(buf, cases[i].h, 28);
        testutil_write_file(path, buf, sizeof buf);
        load_fails(path, cases[i].code, cases[i].msg, path);
    }

    /* A huge header with a tiny file: refused by size, never read past the end. */
    int32_t big[7] = {4096, 11008, 32, 32, 32, 32000, 2048};
    testutil_write_file(path, big, 28);
    load_fails(path, ZMIX_EFORMAT, "file is 28 bytes", NULL);

    /* NaN in w2 of layer 1. */
    int32_t h[7] = {8, 12, 2, 2, 1, 16, 10};
    fixture_write_llama2c(path, h, 2);
    size_t w2_layer1 = 16 * 8 + 2 * 8 + 2 * 64 + 2 * 32 + 2 * 32 + 2 * 64 + 2 * 8 + 2 * 96 + 96 + 3;
    FILE *f = fopen(path, "r+b");
    fseek(f, (long)(28 + 4 * w2_layer1), SEEK_SET);
    float nan = NAN;
    fwrite(&nan, 4, 1, f);
    fclose(f);
    load_fails(path, ZMIX_ENUMERIC, "tensor 'w2': element 99 is NaN", NULL);
}

static void test_load_missing_path(void **state)
{
    ctx *c = *state;
    char path[700];
    snprintf(path, sizeof path, "%s/nope", c->dir);
    load_fails(path, ZMIX_ENOTFOUND, path, NULL);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, fixture_ctx_setup, fixture_ctx_teardown)
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stories_both_formats),
        T(test_stories_truncated),
        T(test_hf_f32_single_and_sharded),
        T(test_hf_f16_and_bf16),
        T(test_hf_qwen2_biases),
        T(test_hf_tied_head_must_agree),
        T(test_hf_bad_tensors),
        T(test_hf_extra_tensor_rejected),
        T(test_hf_bad_index),
        T(test_hf_bad_configs),
        T(test_hf_arch_configs),
        T(test_llama2c_synthetic),
        T(test_llama2c_malformed),
        T(test_load_missing_path),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
