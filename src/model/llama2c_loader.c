/*
 * llama2.c legacy checkpoints: a 28-byte header of seven little-endian int32 (dim,
 * hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len), then float32 tensors back
 * to back with the layer index outermost. A negative vocab_size flags a separate classifier
 * stored after the RoPE tables. The file must be exactly as long as the header implies: a
 * longer file is as suspect as a shorter one (a different layout, or a version-2 header).
 *
 * The whole file is mapped; every tensor starts at a multiple of 4 bytes, so the weights are
 * used in place. q/k rows stay in llama2.c's interleaved-pair order (rope_interleaved = 1).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "loaders.h"

#define HEADER_BYTES 28

static const char *const header_fields[7] = {"dim",        "hidden_dim", "n_layers", "n_heads",
                                             "n_kv_heads", "vocab_size", "seq_len"};

/* One stacked tensor of the file: where it starts (in floats after the header) and its size. */
typedef struct stacked {
    const char *name;
    size_t per_layer; /* floats per layer, or the whole tensor when layered = 0 */
    int layered;
    const float *base;
} stacked;

/* The seven header fields of bytes (at least HEADER_BYTES) into h and the config. */
static int config_from_header(const uint8_t *bytes, const char *path, int32_t h[7],
                              zmix_model_config *c, zmix_error *err)
{
    for (int i = 0; i < 7; i++)
        h[i] = (int32_t)((uint32_t)bytes[4 * i] | (uint32_t)bytes[4 * i + 1] << 8 |
                         (uint32_t)bytes[4 * i + 2] << 16 | (uint32_t)bytes[4 * i + 3] << 24);
    for (int i = 0; i < 7; i++)
        if (h[i] == 0 || (h[i] < 0 && i != 5) || h[i] == INT32_MIN)
            return zmix_error_set(err, ZMIX_ERANGE, "%s: header field %s = %d is not positive",
                                  path, header_fields[i], (int)h[i]);
    snprintf(c->model_type, sizeof c->model_type, "llama2c");
    c->dim = h[0];
    c->hidden_dim = h[1];
    c->n_layers = h[2];
    c->n_heads = h[3];
    c->n_kv_heads = h[4];
    c->vocab_size = h[5] < 0 ? -h[5] : h[5];
    c->max_seq_len = h[6];
    c->tied_embeddings = h[5] > 0;
    c->norm_eps = 1e-5f;
    c->rope_theta = 10000.0f;
    c->rope_interleaved = 1;
    c->qkv_bias = 0;
    c->bos_id = 1;
    c->eos_id = 2;
    if (c->dim % c->n_heads != 0)
        return zmix_error_set(err, ZMIX_ERANGE, "%s: n_heads = %d does not divide dim = %d", path,
                              c->n_heads, c->dim);
    c->head_dim = c->dim / c->n_heads;
    if (c->vocab_size < 3) c->bos_id = c->eos_id = -1;
    return zmix_model_config_check(c, path, err);
}

int zmix_llama2c_probe(const char *path, zmix_model_config *cfg, size_t *bytes, zmix_error *err)
{
    memset(cfg, 0, sizeof *cfg);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return zmix_error_set(err, errno == ENOENT ? ZMIX_ENOTFOUND : ZMIX_EIO,
                              "%s: cannot open: %s", path, strerror(errno));
    uint8_t header[HEADER_BYTES];
    struct stat st;
    ssize_t got = pread(fd, header, sizeof header, 0);
    int ok = fstat(fd, &st) == 0;
    close(fd);
    if (!ok) return zmix_error_set(err, ZMIX_EIO, "%s: cannot stat: %s", path, strerror(errno));
    if (got != (ssize_t)sizeof header)
        return zmix_error_set(err, ZMIX_EFORMAT,
                              "%s: file is %zu bytes, shorter than the 28-byte llama2.c header",
                              path, (size_t)st.st_size);
    int32_t h[7];
    *bytes = (size_t)st.st_size; /* mapped whole, used in place */
    return config_from_header(header, path, h, cfg, err);
}

int zmix_llama2c_load(const char *path, zmix_model *model, zmix_error *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return zmix_error_set(err, errno == ENOENT ? ZMIX_ENOTFOUND : ZMIX_EIO,
                              "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return zmix_error_set(err, ZMIX_EIO, "%s: cannot stat: %s", path, strerror(errno));
    }
    size_t size = (size_t)st.st_size;
    if (size < HEADER_BYTES) {
        close(fd);
        return zmix_error_set(err, ZMIX_EFORMAT,
                              "%s: file is %zu bytes, shorter than the 28-byte llama2.c header",
                              path, size);
    }
    void *addr = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (addr == MAP_FAILED)
        return zmix_error_set(err, ZMIX_EIO, "%s: mmap failed: %s", path, strerror(errno));
    int rc = zmix_model_own_mapping(model, (zmix_mapping){addr, size});
    if (rc) return zmix_error_set(err, rc, "%s: out of memory", path);

    const uint8_t *bytes = addr;
    int32_t h[7];
    zmix_model_config *c = &model->cfg;
    if ((rc = config_from_header(bytes, path, h, c, err))) return rc;

    /* The config limits keep every product below 2^62: no overflow in size_t. */
    size_t dim = (size_t)c->dim, hidden = (size_t)c->hidden_dim, L = (size_t)c->n_layers;
    size_t q_dim = (size_t)c->n_heads * (size_t)c->head_dim;
    size_t kv_dim = (size_t)c->n_kv_heads * (size_t)c->head_dim, vocab = (size_t)c->vocab_size;
    size_t rope = (size_t)c->max_seq_len * (size_t)c->head_dim / 2;
    stacked t[] = {
        {"token_embedding_table", vocab * dim, 0, NULL},
        {"rms_att_weight", dim, 1, NULL},
        {"wq", q_dim * dim, 1, NULL},
        {"wk", kv_dim * dim, 1, NULL},
        {"wv", kv_dim * dim, 1, NULL},
        {"wo", dim * q_dim, 1, NULL},
        {"rms_ffn_weight", dim, 1, NULL},
        {"w1", hidden * dim, 1, NULL},
        {"w2", dim * hidden, 1, NULL},
        {"w3", hidden * dim, 1, NULL},
        {"rms_final_weight", dim, 0, NULL},
        {"freq_cis_real", rope, 0, NULL},
        {"freq_cis_imag", rope, 0, NULL},
        {"wcls", vocab * dim, 0, NULL},
    };
    int n_tensors = c->tied_embeddings ? 13 : 14;
    size_t expected = 0;
    const float *floats = (const float *)(const void *)(bytes + HEADER_BYTES);
    size_t offsets[14];
    for (int i = 0; i < n_tensors; i++) {
        offsets[i] = expected;
        expected += t[i].per_layer * (t[i].layered ? L : 1);
    }
    if (size - HEADER_BYTES != expected * sizeof(float))
        return zmix_error_set(err, ZMIX_EFORMAT,
                              "%s: file is %zu bytes but its header (dim %d, hidden_dim %d, "
                              "n_layers %d, n_heads %d, n_kv_heads %d, vocab_size %d, seq_len %d) "
                              "implies %zu",
                              path, size, h[0], h[1], h[2], h[3], h[4], h[5], h[6],
                              HEADER_BYTES + expected * sizeof(float));
    /* Pointers are formed only now that the file is known to hold every tensor. */
    for (int i = 0; i < n_tensors; i++) t[i].base = floats + offsets[i];
    for (int i = 0; i < n_tensors; i++) {
        if (i == 11 || i == 12) continue; /* RoPE tables: recomputed, never read */
        size_t n = t[i].per_layer * (t[i].layered ? L : 1);
        if ((rc = zmix_check_finite(t[i].base, n, path, t[i].name, err))) return rc;
    }
    model->embed = t[0].base;
    model->final_norm = t[10].base;
    model->lm_head = c->tied_embeddings ? model->embed : t[13].base;
    model->layers = calloc(L, sizeof *model->layers);
    if (!model->layers) return zmix_error_set(err, ZMIX_ENOMEM, "%s: out of memory", path);
    for (size_t l = 0; l < L; l++) {
        zmix_layer *y = &model->layers[l];
        y->attn_norm = t[1].base + l * t[1].per_layer;
        y->wq = t[2].base + l * t[2].per_layer;
        y->wk = t[3].base + l * t[3].per_layer;
        y->wv = t[4].base + l * t[4].per_layer;
        y->wo = t[5].base + l * t[5].per_layer;
        y->ffn_norm = t[6].base + l * t[6].per_layer;
        y->w_gate = t[7].base + l * t[7].per_layer;
        y->w_down = t[8].base + l * t[8].per_layer;
        y->w_up = t[9].base + l * t[9].per_layer;
    }
    return 0;
}
