/*
 * Internal layout of the model runtime, shared by the loaders (file formats) and the
 * compute code (forward pass, SVD, composition, scoring). Not installed.
 *
 * Weights are row-major [out][in] (y[i] = Σ_j W[i][j] x[j]). The big ones (the seven
 * matrices of every layer, the embedding, the LM head) keep the dtype the file holds: F32, or
 * BF16/F16 used in place from the read-only mapping (never expanded to a float32 copy; the
 * compute converts them tile by tile). Norm weights and biases are always float32 (F16/BF16
 * ones are converted on load: they are small).
 */
#ifndef ZMIX_MODEL_INTERNAL_H
#define ZMIX_MODEL_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "zmix/model.h"

/* The seven matrices of a LLaMA layer, in the canonical order used for adapted-matrix
 * enumeration within a layer (attention first, then MLP). */
typedef enum zmix_matrix_kind {
    ZMIX_MAT_Q = 0,
    ZMIX_MAT_K,
    ZMIX_MAT_V,
    ZMIX_MAT_O,
    ZMIX_MAT_GATE,
    ZMIX_MAT_UP,
    ZMIX_MAT_DOWN,
    ZMIX_MAT_COUNT
} zmix_matrix_kind;

/* Element type of a stored matrix; the same numbering as zmix_st_dtype. */
typedef enum zmix_dtype { ZMIX_DT_F32 = 0, ZMIX_DT_F16 = 1, ZMIX_DT_BF16 = 2 } zmix_dtype;

/* A row-major matrix in any dtype: float32, or 16-bit values (uint16_t). */
typedef struct zmix_wref {
    const void *data;
    zmix_dtype dtype;
} zmix_wref;

typedef struct zmix_layer {
    const float *attn_norm;    /* [dim] */
    const float *wq;           /* [n_heads*head_dim][dim] */
    const float *wk;           /* [n_kv_heads*head_dim][dim] */
    const float *wv;           /* [n_kv_heads*head_dim][dim] */
    const float *wo;           /* [dim][n_heads*head_dim] */
    const float *bq, *bk, *bv; /* NULL unless cfg.qkv_bias */
    const float *ffn_norm;     /* [dim] */
    const float *w_gate;       /* [hidden_dim][dim] */
    const float *w_up;         /* [hidden_dim][dim] */
    const float *w_down;       /* [dim][hidden_dim] */
    /* Matrices stored in 16 bits, by zmix_matrix_kind: the float pointer above is then NULL
     * (a float pointer, when set, is the matrix: zmix_model_with_wprime sets W' that way). */
    const uint16_t *half[ZMIX_MAT_COUNT];
    zmix_dtype half_dtype[ZMIX_MAT_COUNT];
} zmix_layer;

typedef struct zmix_mapping {
    void *addr;
    size_t len;
} zmix_mapping;

struct zmix_model {
    zmix_model_config cfg;
    const float *embed;      /* [vocab][dim] */
    zmix_layer *layers;      /* n_layers, owned */
    const float *final_norm; /* [dim] */
    const float *lm_head;    /* [vocab][dim]; == embed when tied */
    /* The embedding and LM head when stored in 16 bits (the float pointers are then NULL;
     * tied: lm_head_half == embed_half). */
    const uint16_t *embed_half, *lm_head_half;
    zmix_dtype embed_dtype, lm_head_dtype;
    char fingerprint[65]; /* hex SHA-256-class digest of config + weights */
    char source[1024];    /* path it was loaded from ("" for synthetic models) */

    /* Owned; NULL when the model directory has no zmix tokenizer.json (tokenizer.c). */
    zmix_tokenizer *tokenizer;

    /* Storage, released by zmix_model_free: heap blocks and read-only file mappings. */
    void **allocs;
    int n_allocs;
    zmix_mapping *maps;
    int n_maps;
};

/* Registers a heap block (malloc'ed) to be freed with the model. Returns 0 or ZMIX_ENOMEM;
 * the block passes to the model either way (on ENOMEM it is freed at once). */
int zmix_model_own(struct zmix_model *model, void *block);

/* Fills model->fingerprint (SHA-256 hex of config + weights, model.c) once the config and
 * every weight pointer are set; zmix_model_load does it, builders of synthetic models must. */
void zmix_model_compute_fingerprint(struct zmix_model *model);

/* Float pointer and shape of one matrix of one layer; NULL when it is stored in 16 bits. */
const float *zmix_model_matrix(const zmix_model *model, int layer, zmix_matrix_kind kind, int *rows,
                               int *cols);
/* The float pointer field of a layer's matrix, and the setter of a matrix in any dtype (the
 * float pointer, or the 16-bit one with its dtype). */
const float **zmix_layer_matrix_slot(zmix_layer *layer, zmix_matrix_kind kind);
void zmix_layer_set_matrix(zmix_layer *layer, zmix_matrix_kind kind, zmix_wref w);
/* The same matrix in whatever dtype it is stored. */
zmix_wref zmix_model_matrix_ref(const zmix_model *model, int layer, zmix_matrix_kind kind,
                                int *rows, int *cols);
zmix_wref zmix_model_embed_ref(const zmix_model *model);
/* The embeddings of n tokens, row after row (dim floats each) into x, as float32. */
void zmix_model_embed_rows(const zmix_model *model, const int32_t *tokens, int n, float *x);
zmix_wref zmix_model_lm_head_ref(const zmix_model *model);
/* 1 when some matrix, the embedding or the LM head is stored in 16 bits. */
int zmix_model_has_half(const zmix_model *model);

/* Exact conversions of n 16-bit values (BF16 or F16) to float32, and float32 to the nearest
 * 16-bit value (ties to even; F16 overflows to ±Inf). vec.c. */
void zmix_half_to_float(float *dst, const uint16_t *src, size_t n, zmix_dtype dtype);
void zmix_float_to_half(uint16_t *dst, const float *src, size_t n, zmix_dtype dtype);
/* A copy of model whose matrices, embedding and LM head are stored in dtype (rounded to
 * nearest when narrowing, exact when widening); norms and biases are copied as they are. For
 * tests and benchmarks: the F32 copy of a BF16 model is the same model, value for value. */
int zmix_model_convert(const zmix_model *model, zmix_dtype dtype, zmix_model **out,
                       zmix_error *err);
const char *zmix_matrix_kind_hf_suffix(zmix_matrix_kind kind); /* "self_attn.q_proj", ... */

/* One adapted matrix: its place in the model and in the z vector. */
typedef struct zmix_adapted {
    char name[96]; /* HF name: "model.layers.3.mlp.gate_proj.weight" */
    int layer;
    zmix_matrix_kind kind;
    int rows, cols, rank; /* rank = min(rows, cols) */
    size_t z_offset;      /* start of this matrix's entries in a z vector */
} zmix_adapted;

/* Enumerates the adapted matrices of set in canonical order: layer-major, and within a
 * layer in zmix_matrix_kind order. *out is malloc'ed (free with free()); *z_total receives
 * Σ rank. */
int zmix_adapted_list(const zmix_model *model, zmix_adapt_set set, zmix_adapted **out, int *n_out,
                      size_t *z_total, zmix_error *err);

/* SVD factors of one adapted matrix: W = U · diag(S) · Vt. U and Vt are float32, or 16-bit
 * (zmix_runtime_opts.factor_dtype) to halve the factors' memory; S is always float32. */
typedef struct zmix_factors {
    int rows, cols, rank;
    float *U;  /* [rows][rank]; NULL when 16-bit */
    float *S;  /* [rank], descending, >= 0 */
    float *Vt; /* [rank][cols]; NULL when 16-bit */
    zmix_dtype dtype;
    uint16_t *U16, *Vt16; /* the 16-bit U and Vt (dtype F16 or BF16), else NULL */
    /* U and Vt point into a read-only mapping of the factor cache file, which their owner
     * unmaps (zmix_factors_free leaves them): resident only while something reads them. */
    int mapped;
} zmix_factors;

static inline zmix_wref zmix_factors_U(const zmix_factors *f)
{
    return f->U ? (zmix_wref){f->U, ZMIX_DT_F32} : (zmix_wref){f->U16, f->dtype};
}

static inline zmix_wref zmix_factors_Vt(const zmix_factors *f)
{
    return f->Vt ? (zmix_wref){f->Vt, ZMIX_DT_F32} : (zmix_wref){f->Vt16, f->dtype};
}

/* Computes the factors of every listed matrix with LAPACKE (svd.c), U and Vt stored in dtype
 * (computed in float32, then rounded one matrix at a time). factors: n entries. */
int zmix_factors_compute(const zmix_model *model, const zmix_adapted *list, int n, zmix_dtype dtype,
                         zmix_factors *factors, zmix_error *err);
void zmix_factors_free(zmix_factors *factors, int n);
/* Rounds a factor's float32 U and Vt to 16-bit dtype (freeing the float32 ones). */
int zmix_factors_narrow(zmix_factors *f, zmix_dtype dtype);

/* On-disk cache of the factors (factor_cache.c), keyed by the model fingerprint, the adapt
 * set and the dtype of U and Vt. load returns ZMIX_ENOTFOUND when absent and ZMIX_EFORMAT when the
 * file is corrupt or belongs to another model/setting (the caller then recomputes and saves). save
 * writes atomically (temporary file, fsync, rename). */
int zmix_factor_cache_load(const char *dir, const zmix_model *model, zmix_adapt_set set,
                           zmix_dtype dtype, const zmix_adapted *list, int n, zmix_factors *factors,
                           zmix_error *err);
/* Like load, but U and Vt stay in the file's read-only mapping (zmix_factors.mapped; S is
 * copied), which passes to *map: the caller munmaps it after zmix_factors_free. After the
 * checksum nothing of U and Vt is resident until something reads it. */
int zmix_factor_cache_map(const char *dir, const zmix_model *model, zmix_adapt_set set,
                          zmix_dtype dtype, const zmix_adapted *list, int n, zmix_factors *factors,
                          zmix_mapping *map, zmix_error *err);
/* Drops the pages of a mapped factor's U and Vt from this process (they stay in the page
 * cache and fault back in when read; safe while other threads read them). No-op otherwise. */
void zmix_factors_release(const zmix_factors *f);
int zmix_factor_cache_save(const char *dir, const zmix_model *model, zmix_adapt_set set,
                           const zmix_adapted *list, int n, const zmix_factors *factors,
                           unsigned mode, zmix_error *err);

/* One SVF expert: z for every adapted matrix, concatenated (z_total floats, malloc'ed). */
typedef struct zmix_expert {
    char name[128];
    float *z;
} zmix_expert;

/* Loads an expert safetensors file and checks it against the adapted list: every listed
 * matrix present with a float32 vector of exactly its rank, no extra keys, no NaN/Inf.
 * The name is the file's base name without extension unless __metadata__.name is set. */
int zmix_expert_load(const char *path, const zmix_adapted *list, int n, size_t z_total,
                     zmix_expert *out, zmix_error *err);
/* Writes z (z_total floats) as an expert file: one F32 tensor per adapted matrix, with
 * optional metadata pairs (keys[i], values[i]). Atomic like the factor cache. */
int zmix_expert_save(const char *path, const zmix_adapted *list, int n, const float *z,
                     const char *const *meta_keys, const char *const *meta_values, int n_meta,
                     zmix_error *err);

/* Reads dir/tokenizer.json into model->tokenizer when it is zmix's (tokenizer.c). */
int zmix_tokenizer_load_dir(struct zmix_model *model, const char *dir, zmix_error *err);

/* A model with random weights of the given shape (synthetic.c), for tests and benchmarks:
 * weights ~ N(0, 1/in) per matrix, norms 1, deterministic from seed. */
int zmix_model_create_random(const zmix_model_config *cfg, uint64_t seed, zmix_model **out,
                             zmix_error *err);

#endif
