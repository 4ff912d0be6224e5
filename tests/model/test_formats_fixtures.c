#include "test_formats_fixtures.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/pcg.h"

void write_raw_safetensors(const char *path, const char *header, uint64_t header_len_field,
                           const void *data, size_t data_len)
{
    size_t hlen = strlen(header);
    uint64_t field = header_len_field == (uint64_t)-1 ? hlen : header_len_field;
    size_t total = 8 + hlen + data_len;
    uint8_t *buf = malloc(total);
    assert_non_null(buf);
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)(field >> (8 * i));
    memcpy(buf + 8, header, hlen);
    if (data_len) memcpy(buf + 8 + hlen, data, data_len);
    testutil_write_file(path, buf, total);
    free(buf);
}

/* ---- tiny HF models ---------------------------------------------------------------------- */

static void add_tensor(fixture_model *m, const char *name, int64_t d0, int64_t d1,
                       const char *dtype, pcg32 *rng)
{
    fixture_tensor *t = &m->t[m->n++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->dtype = dtype;
    t->ndim = d1 ? 2 : 1;
    t->shape[0] = d0;
    t->shape[1] = d1;
    t->numel = (size_t)d0 * (size_t)(d1 ? d1 : 1);
    t->values = malloc(t->numel * sizeof *t->values);
    assert_non_null(t->values);
    for (size_t i = 0; i < t->numel; i++) {
        /* k/64 with |k| <= 128 is exact in F16 and BF16; F32 gets full-precision values. */
        if (strcmp(dtype, "F32"))
            t->values[i] = (float)((int)pcg32_bounded(rng, 257) - 128) / 64.0f;
        else
            t->values[i] = (float)pcg32_normal(rng) * 0.1f;
    }
}

void fixture_model_init(fixture_model *m, const char *model_type, int tied, int with_lm_head,
                        const char *dtype, uint64_t seed)
{
    memset(m, 0, sizeof *m);
    snprintf(m->model_type, sizeof m->model_type, "%s", model_type);
    m->dim = 8, m->hidden = 12, m->layers = 2, m->heads = 2, m->kv_heads = 1, m->vocab = 16;
    m->tied = tied, m->with_lm_head = with_lm_head;
    m->t = calloc(64, sizeof *m->t);
    assert_non_null(m->t);
    pcg32 rng;
    pcg32_seed(&rng, seed, 7);
    int hd = m->dim / m->heads, q = m->heads * hd, kv = m->kv_heads * hd;
    add_tensor(m, "model.embed_tokens.weight", m->vocab, m->dim, dtype, &rng);
    for (int l = 0; l < m->layers; l++) {
        char n[96];
#define ADD(suffix, d0, d1)                                                                        \
    snprintf(n, sizeof n, "model.layers.%d.%s", l, suffix), add_tensor(m, n, d0, d1, dtype, &rng)
        ADD("input_layernorm.weight", m->dim, 0);
        ADD("self_attn.q_proj.weight", q, m->dim);
        ADD("self_attn.k_proj.weight", kv, m->dim);
        ADD("self_attn.v_proj.weight", kv, m->dim);
        ADD("self_attn.o_proj.weight", m->dim, q);
        if (!strcmp(model_type, "qwen2")) {
            ADD("self_attn.q_proj.bias", q, 0);
            ADD("self_attn.k_proj.bias", kv, 0);
            ADD("self_attn.v_proj.bias", kv, 0);
        }
        ADD("post_attention_layernorm.weight", m->dim, 0);
        ADD("mlp.gate_proj.weight", m->hidden, m->dim);
        ADD("mlp.up_proj.weight", m->hidden, m->dim);
        ADD("mlp.down_proj.weight", m->dim, m->hidden);
#undef ADD
    }
    add_tensor(m, "model.norm.weight", m->dim, 0, dtype, &rng);
    if (with_lm_head) {
        add_tensor(m, "lm_head.weight", m->vocab, m->dim, dtype, &rng);
        if (tied) {
            fixture_tensor *e = fixture_find(m, "model.embed_tokens.weight");
            memcpy(m->t[m->n - 1].values, e->values, e->numel * sizeof(float));
        }
    }
}

void fixture_model_free(fixture_model *m)
{
    for (int i = 0; i < m->n; i++) free(m->t[i].values);
    free(m->t);
    memset(m, 0, sizeof *m);
}

fixture_tensor *fixture_find(fixture_model *m, const char *name)
{
    for (int i = 0; i < m->n; i++)
        if (!strcmp(m->t[i].name, name)) return &m->t[i];
    return NULL;
}

void fixture_drop(fixture_model *m, const char *name)
{
    fixture_tensor *t = fixture_find(m, name);
    assert_non_null(t);
    free(t->values);
    *t = m->t[--m->n];
}

void fixture_write_config(const fixture_model *m, const char *dir, const char *extra)
{
    char path[512], text[2048];
    snprintf(path, sizeof path, "%s/config.json", dir);
    snprintf(
        text, sizeof text,
        "{\"model_type\": \"%s\", \"hidden_size\": %d, \"intermediate_size\": %d,\n"
        " \"num_hidden_layers\": %d, \"num_attention_heads\": %d, \"num_key_value_heads\": %d,\n"
        " \"vocab_size\": %d, \"max_position_embeddings\": 64,\n"
        " \"tie_word_embeddings\": %s%s%s}\n",
        m->model_type, m->dim, m->hidden, m->layers, m->heads, m->kv_heads, m->vocab,
        m->tied ? "true" : "false", extra[0] ? ", " : "", extra);
    testutil_write_text(path, text);
}

static uint16_t f32_to_f16_exact(float f)
{
    uint32_t b;
    memcpy(&b, &f, 4);
    uint32_t sign = (b >> 16) & 0x8000, exp = (b >> 23) & 0xff, mant = b & 0x7fffff;
    if (exp == 0) return (uint16_t)sign;
    return (uint16_t)(sign | ((exp - 112) << 10) | (mant >> 13));
}

static void write_shard(const fixture_model *m, const char *path, int shard, int n_shards)
{
    size_t cap = 1 << 16, hlen = 0, off = 0, data_cap = 1 << 20;
    char *header = malloc(cap);
    uint8_t *data = malloc(data_cap);
    assert_non_null(header);
    assert_non_null(data);
    hlen += (size_t)snprintf(header + hlen, cap - hlen, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int i = 0; i < m->n; i++) {
        if (i % n_shards != shard) continue;
        const fixture_tensor *t = &m->t[i];
        size_t es = strcmp(t->dtype, "F32") ? 2 : 4, bytes = t->numel * es;
        char shape[64];
        if (t->ndim == 2)
            snprintf(shape, sizeof shape, "%lld,%lld", (long long)t->shape[0],
                     (long long)t->shape[1]);
        else
            snprintf(shape, sizeof shape, "%lld", (long long)t->shape[0]);
        hlen +=
            (size_t)snprintf(header + hlen, cap - hlen,
                             ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%s],\"data_offsets\":[%zu,%zu]}",
                             t->name, t->dtype, shape, off, off + bytes);
        assert_true(off + bytes <= data_cap);
        for (size_t j = 0; j < t->numel; j++) {
            if (es == 4) {
                memcpy(data + off + 4 * j, &t->values[j], 4);
            } else {
                uint32_t b;
                memcpy(&b, &t->values[j], 4);
                uint16_t h =
                    strcmp(t->dtype, "F16") ? (uint16_t)(b >> 16) : f32_to_f16_exact(t->values[j]);
                memcpy(data + off + 2 * j, &h, 2);
            }
        }
        off += bytes;
    }
    hlen += (size_t)snprintf(header + hlen, cap - hlen, "}");
    while (hlen % 8) header[hlen++] = ' ';
    header[hlen] = '\0';
    write_raw_safetensors(path, header, (uint64_t)-1, data, off);
    free(header);
    free(data);
}

void fixture_write_weights(const fixture_model *m, const char *dir, int n_shards)
{
    char path[512];
    if (n_shards <= 1) {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        write_shard(m, path, 0, 1);
        return;
    }
    size_t cap = 1 << 16, len = 0;
    char *index = malloc(cap);
    assert_non_null(index);
    len += (size_t)snprintf(index, cap, "{\"metadata\": {\"total_size\": 0}, \"weight_map\": {");
    for (int s = 0; s < n_shards; s++) {
        snprintf(path, sizeof path, "%s/model-%05d-of-%05d.safetensors", dir, s + 1, n_shards);
        write_shard(m, path, s, n_shards);
    }
    for (int i = 0; i < m->n; i++)
        len +=
            (size_t)snprintf(index + len, cap - len, "%s\"%s\": \"model-%05d-of-%05d.safetensors\"",
                             i ? ", " : "", m->t[i].name, i % n_shards + 1, n_shards);
    len += (size_t)snprintf(index + len, cap - len, "}}\n");
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    testutil_write_file(path, index, len);
    free(index);
}

size_t fixture_write_llama2c(const char *path, const int32_t header[7], uint64_t seed)
{
    size_t dim = (size_t)header[0], hidden = (size_t)header[1], L = (size_t)header[2];
    size_t heads = (size_t)header[3], kv = (size_t)header[4];
    size_t vocab = (size_t)(header[5] < 0 ? -header[5] : header[5]), seq = (size_t)header[6];
    size_t hd = dim / heads;
    size_t n = vocab * dim + L * dim + L * dim * dim + 2 * L * kv * hd * dim + L * dim * dim +
               L * dim + 3 * L * hidden * dim + dim + seq * hd;
    if (header[5] < 0) n += vocab * dim;
    float *w = malloc(n * sizeof *w);
    assert_non_null(w);
    pcg32 rng;
    pcg32_seed(&rng, seed, 3);
    for (size_t i = 0; i < n; i++) w[i] = (float)pcg32_normal(&rng) * 0.1f;
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(header, 4, 7, f), 7);
    assert_int_equal(fwrite(w, sizeof *w, n, f), n);
    assert_int_equal(fclose(f), 0);
    free(w);
    return n;
}

int stories_dir(char *dir, size_t size)
{
    const char *shared = getenv("ZMIX_SHARED_DIR");
    if (!shared) return 0;
    snprintf(dir, size, "%s/models/stories260K", shared);
    char probe[1200];
    snprintf(probe, sizeof probe, "%s/stories260K.bin", dir);
    return access(probe, R_OK) == 0;
}

void expect_error_at(const char *file, int line, int rc, const zmix_error *err, int code,
                     const char *needle1, const char *needle2)
{
    if (rc != code || err->code != code || (needle1 && !strstr(err->msg, needle1)) ||
        (needle2 && !strstr(err->msg, needle2)))
        print_error("%s:%d: unexpected result\n", file, line);
    if (rc != code || err->code != code)
        fail_msg("rc %d (%s), err.code %d, expected %s; message: %s", rc, zmix_strerror(rc),
                 err->code, zmix_strerror(code), err->msg);
    if (needle1 && !strstr(err->msg, needle1))
        fail_msg("message '%s' does not mention '%s'", err->msg, needle1);
    if (needle2 && !strstr(err->msg, needle2))
        fail_msg("message '%s' does not mention '%s'", err->msg, needle2);
}

int fixture_ctx_setup(void **state)
{
    fixture_ctx *c = calloc(1, sizeof *c);
    assert_non_null(c);
    testutil_mkdtemp(c->dir, sizeof c->dir);
    *state = c;
    return 0;
}

int fixture_ctx_teardown(void **state)
{
    fixture_ctx *c = *state;
    fixture_model_free(&c->m);
    testutil_rmrf(c->dir);
    free(c);
    return 0;
}
