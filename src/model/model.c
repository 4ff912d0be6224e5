/*
 * Model lifetime: load (dispatch to the format's loader, then fingerprint), free, accessors,
 * and the storage registry every loader and the synthetic-model builder share.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "loaders.h"
#include "model_internal.h"
#include "util/sha256.h"

/* Arrays grow by doubling; the capacity is implied by the count (next power of two), which
 * keeps the registry to the two fields the shared struct already has. */
static int needs_growth(int n)
{
    return n == 0 || (n & (n - 1)) == 0;
}

int zmix_model_own(struct zmix_model *model, void *block)
{
    if (!block) return 0;
    if (needs_growth(model->n_allocs)) {
        size_t cap = model->n_allocs ? 2 * (size_t)model->n_allocs : 8;
        void **grown = realloc(model->allocs, cap * sizeof *grown);
        if (!grown) {
            free(block);
            return ZMIX_ENOMEM;
        }
        model->allocs = grown;
    }
    model->allocs[model->n_allocs++] = block;
    return 0;
}

int zmix_model_own_mapping(struct zmix_model *model, zmix_mapping map)
{
    if (!map.addr) return 0;
    if (needs_growth(model->n_maps)) {
        size_t cap = model->n_maps ? 2 * (size_t)model->n_maps : 4;
        zmix_mapping *grown = realloc(model->maps, cap * sizeof *grown);
        if (!grown) {
            munmap(map.addr, map.len);
            return ZMIX_ENOMEM;
        }
        model->maps = grown;
    }
    model->maps[model->n_maps++] = map;
    return 0;
}

void zmix_model_free(zmix_model *model)
{
    if (!model) return;
    for (int i = 0; i < model->n_allocs; i++) free(model->allocs[i]);
    free(model->allocs);
    for (int i = 0; i < model->n_maps; i++) munmap(model->maps[i].addr, model->maps[i].len);
    free(model->maps);
    free(model->layers);
    zmix_tokenizer_free(model->tokenizer);
    free(model);
}

const zmix_model_config *zmix_model_get_config(const zmix_model *model)
{
    return &model->cfg;
}

const char *zmix_model_fingerprint(const zmix_model *model)
{
    return model->fingerprint;
}

int zmix_check_finite(const float *p, size_t n, const char *file, const char *tensor,
                      zmix_error *err)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(p[i]))
            return zmix_error_set(err, ZMIX_ENUMERIC, "%s: tensor '%s': element %zu is %s", file,
                                  tensor, i, isnan(p[i]) ? "NaN" : "Inf");
    return 0;
}

static int check_int(int v, int max, const char *field, const char *where, zmix_error *err)
{
    if (v < 1 || v > max)
        return zmix_error_set(err, ZMIX_ERANGE, "%s: %s = %d is outside [1, %d]", where, field, v,
                              max);
    return 0;
}

static int check_rope_scaling(const zmix_rope_scaling *r, int head_dim, const char *where,
                              zmix_error *err)
{
    if (r->type == ZMIX_ROPE_DEFAULT) return 0;
    if (r->type < ZMIX_ROPE_DEFAULT || r->type > ZMIX_ROPE_YARN)
        return zmix_error_set(err, ZMIX_ERANGE, "%s: RoPE scaling type %d is unknown", where,
                              (int)r->type);
    if (!(r->factor > 0) || !isfinite(r->factor))
        return zmix_error_set(err, ZMIX_ERANGE, "%s: RoPE scaling factor = %g must be positive",
                              where, r->factor);
    if (r->original_max_pos < 1 || r->original_max_pos > ZMIX_MAX_SEQ_LEN)
        return zmix_error_set(err, ZMIX_ERANGE,
                              "%s: RoPE original_max_position_embeddings = %d is outside [1, %d]",
                              where, r->original_max_pos, ZMIX_MAX_SEQ_LEN);
    if (r->type == ZMIX_ROPE_DYNAMIC && head_dim <= 2) /* θ grows by a power d/(d-2). */
        return zmix_error_set(err, ZMIX_ERANGE,
                              "%s: dynamic RoPE scaling needs head_dim > 2 (head_dim = %d)", where,
                              head_dim);
    if (r->type == ZMIX_ROPE_LLAMA3 &&
        (!(r->low_freq_factor > 0) || !(r->high_freq_factor > r->low_freq_factor) ||
         !isfinite(r->high_freq_factor)))
        return zmix_error_set(err, ZMIX_ERANGE,
                              "%s: llama3 RoPE low_freq_factor = %g, high_freq_factor = %g: need "
                              "0 < low < high",
                              where, r->low_freq_factor, r->high_freq_factor);
    if (r->type == ZMIX_ROPE_YARN &&
        (!(r->beta_fast > 0) || !(r->beta_slow > 0) || !isfinite(r->beta_fast) ||
         !isfinite(r->beta_slow) || !(r->attention_factor > 0) || !isfinite(r->attention_factor)))
        return zmix_error_set(err, ZMIX_ERANGE,
                              "%s: YaRN beta_fast = %g, beta_slow = %g, attention factor = %g "
                              "must be positive",
                              where, r->beta_fast, r->beta_slow, r->attention_factor);
    return 0;
}

int zmix_model_config_check(const zmix_model_config *c, const char *where, zmix_error *err)
{
    int rc;
    if ((rc = check_int(c->dim, ZMIX_MAX_DIM, "dim (hidden_size)", where, err)) ||
        (rc = check_int(c->hidden_dim, ZMIX_MAX_DIM, "hidden_dim (intermediate_size)", where,
                        err)) ||
        (rc = check_int(c->n_layers, ZMIX_MAX_LAYERS, "n_layers", where, err)) ||
        (rc = check_int(c->n_heads, ZMIX_MAX_HEADS, "n_heads", where, err)) ||
        (rc = check_int(c->n_kv_heads, ZMIX_MAX_HEADS, "n_kv_heads", where, err)) ||
        (rc = check_int(c->head_dim, ZMIX_MAX_DIM, "head_dim", where, err)) ||
        (rc = check_int(c->vocab_size, ZMIX_MAX_VOCAB, "vocab_size", where, err)) ||
        (rc = check_int(c->max_seq_len, ZMIX_MAX_SEQ_LEN, "max_seq_len", where, err)))
        return rc;
    if (c->n_heads % c->n_kv_heads != 0)
        return zmix_error_set(err, ZMIX_ERANGE, "%s: n_kv_heads = %d does not divide n_heads = %d",
                              where, c->n_kv_heads, c->n_heads);
    if (c->head_dim % 2 != 0)
        return zmix_error_set(err, ZMIX_ERANGE,
                              "%s: head_dim = %d is odd (rotary embeddings rotate pairs)", where,
                              c->head_dim);
    if (!(c->norm_eps > 0) || !isfinite(c->norm_eps))
        return zmix_error_set(err, ZMIX_ERANGE, "%s: rms_norm_eps = %g must be positive", where,
                              (double)c->norm_eps);
    if (!(c->rope_theta > 0) || !isfinite(c->rope_theta))
        return zmix_error_set(err, ZMIX_ERANGE, "%s: rope_theta = %g must be positive", where,
                              (double)c->rope_theta);
    if ((rc = check_rope_scaling(&c->rope_scaling, c->head_dim, where, err))) return rc;
    if (c->bos_id < -1 || c->bos_id >= c->vocab_size || c->eos_id < -1 ||
        c->eos_id >= c->vocab_size)
        return zmix_error_set(err, ZMIX_ERANGE,
                              "%s: bos_token_id = %d / eos_token_id = %d outside [0, %d)", where,
                              c->bos_id, c->eos_id, c->vocab_size);
    return 0;
}

static void hash_floats(zmix_sha256 *s, const float *p, size_t n)
{
    if (p) zmix_sha256_update(s, p, n * sizeof *p);
}

/* A matrix's values as float32 bytes, whatever its storage: the same digest for the same
 * values stored in BF16 or F32. */
static void hash_matrix(zmix_sha256 *s, zmix_wref w, size_t n)
{
    if (!w.data) return;
    if (w.dtype == ZMIX_DT_F32) {
        hash_floats(s, w.data, n);
        return;
    }
    float buf[4096];
    const uint16_t *p = w.data;
    for (size_t i = 0; i < n; i += 4096) {
        size_t k = n - i < 4096 ? n - i : 4096;
        zmix_half_to_float(buf, p + i, k, w.dtype);
        hash_floats(s, buf, k);
    }
}

void zmix_model_compute_fingerprint(struct zmix_model *model)
{
    /* The configuration as canonical text, then every weight in a fixed order as float32
     * little-endian bytes: the digest follows what the model computes, not the file layout,
     * so converting F16 weights to F32 on disk would keep the fingerprint only if the values
     * are the same. */
    const zmix_model_config *c = &model->cfg;
    char text[1024];
    int len = snprintf(text, sizeof text,
                       "zmix-model-v1 type=%s dim=%d hidden=%d layers=%d heads=%d kv=%d hd=%d "
                       "vocab=%d seq=%d eps=%.9g theta=%.9g tied=%d interleaved=%d bias=%d "
                       "bos=%d eos=%d",
                       c->model_type, c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads,
                       c->head_dim, c->vocab_size, c->max_seq_len, (double)c->norm_eps,
                       (double)c->rope_theta, c->tied_embeddings, c->rope_interleaved, c->qkv_bias,
                       c->bos_id, c->eos_id);
    /* RoPE scaling changes the computation, so it is part of the digest; appended only when
     * set, so that the fingerprints of plain-RoPE models (and their factor caches) stay. */
    const zmix_rope_scaling *r = &c->rope_scaling;
    if (r->type != ZMIX_ROPE_DEFAULT && len > 0 && (size_t)len < sizeof text)
        len += snprintf(text + len, sizeof text - (size_t)len,
                        " rope=%d factor=%.17g low=%.17g high=%.17g orig=%d beta=%.17g,%.17g "
                        "attn=%.17g trunc=%d",
                        (int)r->type, r->factor, r->low_freq_factor, r->high_freq_factor,
                        r->original_max_pos, r->beta_fast, r->beta_slow, r->attention_factor,
                        r->truncate);
    if (len < 0 || (size_t)len >= sizeof text) len = (int)sizeof text - 1;
    zmix_sha256 s;
    zmix_sha256_init(&s);
    zmix_sha256_update(&s, text, (size_t)len + 1);
    size_t dim = (size_t)c->dim, q_dim = (size_t)c->n_heads * (size_t)c->head_dim;
    size_t kv_dim = (size_t)c->n_kv_heads * (size_t)c->head_dim;
    zmix_wref embed = zmix_model_embed_ref(model), head = zmix_model_lm_head_ref(model);
    hash_matrix(&s, embed, (size_t)c->vocab_size * dim);
    for (int l = 0; l < c->n_layers; l++) {
        const zmix_layer *L = &model->layers[l];
        /* Shape first: the arguments of one call are evaluated in no fixed order. */
#define MATRIX(kind)                                                                               \
    do {                                                                                           \
        int rows, cols;                                                                            \
        zmix_wref w = zmix_model_matrix_ref(model, l, kind, &rows, &cols);                         \
        hash_matrix(&s, w, (size_t)rows *(size_t)cols);                                            \
    } while (0)
        hash_floats(&s, L->attn_norm, dim);
        MATRIX(ZMIX_MAT_Q);
        MATRIX(ZMIX_MAT_K);
        MATRIX(ZMIX_MAT_V);
        MATRIX(ZMIX_MAT_O);
        hash_floats(&s, L->bq, q_dim);
        hash_floats(&s, L->bk, kv_dim);
        hash_floats(&s, L->bv, kv_dim);
        hash_floats(&s, L->ffn_norm, dim);
        MATRIX(ZMIX_MAT_GATE);
        MATRIX(ZMIX_MAT_UP);
        MATRIX(ZMIX_MAT_DOWN);
#undef MATRIX
    }
    hash_floats(&s, model->final_norm, dim);
    if (head.data != embed.data) hash_matrix(&s, head, (size_t)c->vocab_size * dim);
    uint8_t digest[ZMIX_SHA256_BYTES];
    zmix_sha256_final(&s, digest);
    zmix_sha256_hex(digest, model->fingerprint);
}

int zmix_model_path_kind(const char *path, int *is_dir, zmix_error *err)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return zmix_error_set(err, errno == ENOENT ? ZMIX_ENOTFOUND : ZMIX_EIO, "%s: %s", path,
                              strerror(errno));
    if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode))
        return zmix_error_set(err, ZMIX_EINVAL,
                              "%s: neither a Hugging Face model directory nor a llama2.c file",
                              path);
    *is_dir = S_ISDIR(st.st_mode);
    return 0;
}

int zmix_model_load(const char *path, zmix_model **out, zmix_error *err)
{
    *out = NULL;
    int is_dir, rc = zmix_model_path_kind(path, &is_dir, err);
    if (rc) return rc;
    zmix_model *model = calloc(1, sizeof *model);
    if (!model) return zmix_error_set(err, ZMIX_ENOMEM, "%s: out of memory", path);
    rc = is_dir ? zmix_hf_load(path, model, err) : zmix_llama2c_load(path, model, err);
    if (!rc && is_dir) rc = zmix_tokenizer_load_dir(model, path, err);
    if (rc) {
        zmix_model_free(model);
        return rc;
    }
    snprintf(model->source, sizeof model->source, "%s", path);
    zmix_model_compute_fingerprint(model);
    *out = model;
    return 0;
}
