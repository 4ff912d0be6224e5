/*
 * Internal interface of the compute half of the model runtime: the numeric kernels, the
 * stacked forward pass, the runtime layout and the ways an adapted matrix W' can be applied.
 * Not installed. The loaders never include this file.
 *
 * How a forward pass is organised (forward.c). Several sequences are stacked row-wise into
 * one activation matrix, so every linear map is a single GEMM over all their rows; attention
 * is computed per sequence and per head. Before each layer a callback chooses the layer's
 * seven linear maps (the base matrix, a composed W', or the factored form), which is how
 * the scorer plugs a candidate's adaptation into the same code the reference forward uses.
 * At the last layer only the rows whose hidden state the caller wants (the tail of each
 * sequence: the positions that predict target tokens) go through the query projection,
 * attention output, MLP and final norm.
 */
#ifndef ZMIX_MODEL_COMPUTE_H
#define ZMIX_MODEL_COMPUTE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "model_internal.h"

/* ---- Kernels (kernels.c) -------------------------------------------------------------- */

/* RoPE angles for positions 0..max_pos-1: cos/sin[pos * half + i] for pair i of a head,
 * angle pos · inv_freq(i), computed in float as llama2.c and HF do, with cfg->rope_scaling
 * applied (YaRN also scales cos and sin by its attention factor). Dynamic (NTK) scaling gives a
 * sequence longer than shared_len frequencies of its own: the forward pass fills its table
 * with zmix_rope_fill; every other sequence uses this one. */
typedef struct zmix_rope {
    int max_pos, half;
    int shared_len; /* INT_MAX unless dynamic scaling */
    float *cos, *sin;
} zmix_rope;

int zmix_rope_init(zmix_rope *rope, const zmix_model_config *cfg, int max_pos, zmix_error *err);
void zmix_rope_free(zmix_rope *rope);
/* cos/sin tables (n_pos × half each) of a sequence of seq_len tokens. */
void zmix_rope_fill(const zmix_model_config *cfg, int seq_len, int n_pos, float *cos_out,
                    float *sin_out);

/* One linear map y = x·Wᵀ (x: n × cols, y: n × rows), dense or factored:
 *   dense:    W [rows][cols]
 *   factored: y = ((x·Vtᵀ) ⊙ scale)·Uᵀ, U [rows][rank], Vt [rank][cols], scale [rank].
 * Matrices may be float32 or 16-bit (then widened ZMIX_TILE_FLOATS at a time into tile). */
typedef struct zmix_linear {
    int rows, cols, rank;
    zmix_wref W; /* W.data NULL: factored */
    zmix_wref U, Vt;
    const float *scale;
} zmix_linear;

/* The tile a 16-bit matrix is widened into before each GEMM: 1 MB per worker. */
#define ZMIX_TILE_FLOATS ((size_t)1 << 18)
#define ZMIX_TILE_K      1024

/* tmp: n × rank floats, used by the factored form only; tile: ZMIX_TILE_FLOATS floats, used
 * by 16-bit matrices only (may be NULL when every matrix is float32). */
void zmix_linear_apply(const zmix_linear *lin, const float *x, int n, float *y, float *tmp,
                       float *tile);
/* y (n × rows, row stride ldy) = x (n × cols, stride ldx) · Wᵀ for W [rows][cols]. One SGEMM
 * for float32; 16-bit W is widened block by block (at most ZMIX_TILE_K columns, ZMIX_TILE_FLOATS
 * in all) into tile, each block's product accumulated into y. */
void zmix_gemm_xwt(const float *x, int ldx, int n, zmix_wref w, int rows, int cols, float *y,
                   int ldy, float *tile);
/* y (n × cols) = x (n × rows) · W for W [rows][cols], blocked the same way. */
void zmix_gemm_xw(const float *x, int ldx, int n, zmix_wref w, int rows, int cols, float *y,
                  int ldy, float *tile);

/* Element-wise kernels (vec.c); restrict arguments must not overlap. */
/* exp(x) for x in [-87, 88] (clamped outside): 2^n · p(r), x = n·ln2 + r, |r| <= ln2/2.
 * Inline for loops too short for a vector call (the attention of short sequences). */
static inline float zmix_exp_poly(float x)
{
    x = x < -87.0f ? -87.0f : x > 88.0f ? 88.0f : x;
    const float magic = 12582912.0f; /* 1.5·2^23: adding it rounds to an integer */
    float t = x * 1.44269504088896341f + magic;
    float n = t - magic;
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    int32_t ni = (int32_t)n;
    uint32_t bits = (uint32_t)(ni + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

float zmix_exp(float x); /* polynomial exp, relative error < 1e-7, clamped to [-87, 88] */
void zmix_vec_add(float *restrict y, const float *restrict x, size_t n);            /* y += x */
void zmix_vec_mul(float *restrict y, const float *restrict x, size_t n);            /* y ⊙= x */
void zmix_vec_scal(float *x, float a, size_t n);                                    /* x *= a */
void zmix_vec_scale(float *restrict y, float a, const float *restrict x, size_t n); /* y = a·x */
void zmix_vec_axpy(float *restrict y, float a, const float *restrict x, size_t n);  /* y += a·x */
void zmix_vec_swiglu(float *restrict g, const float *restrict u, size_t n); /* g = silu(g)⊙u */
float zmix_vec_max(const float *restrict x, size_t n);                      /* n >= 1 */
float zmix_vec_exp_shift(float *restrict x, float shift, size_t n); /* x = e^(x-shift); Σ */
float zmix_vec_sum_exp_shift(const float *restrict x, float shift, size_t n); /* Σ e^(x-shift) */
float zmix_vec_sum_squares(const float *restrict x, size_t n);
void zmix_vec_scale_weight(float *restrict out, const float *restrict w, float a,
                           const float *restrict x, size_t n); /* out = w ⊙ (a·x) */

void zmix_rmsnorm_rows(float *out, const float *x, const float *w, int n_rows, int dim, float eps);

/* ---- Stacked forward pass (forward.c) ------------------------------------------------- */

/* n_seq sequences stacked row-wise: sequence s holds len[s] tokens (positions 0..len-1);
 * the caller wants the final hidden state of its last n_out[s] rows (1 <= n_out <= len).
 *
 * Shared prefixes (multiple choice): when n_branch is non-NULL and n_branch[s] > 0, sequence
 * s is a prefix followed by n_branch[s] branches, each a continuation of the prefix alone:
 * branch b's branch_len rows sit at positions p, p+1, ... (p = len[s] - Σ its branch_len)
 * and attend to the prefix and to the rows of their own branch before them, never to another
 * branch. So the prefix is computed once for all its continuations. A branch may have no
 * rows. branch_len lists the branches of every branched sequence in order. */
typedef struct zmix_batch {
    int n_seq;
    const int32_t *tokens; /* Σ len, sequence after sequence */
    const int *len;
    const int *n_out;
    const int *n_branch;   /* NULL: no sequence is branched */
    const int *branch_len; /* Σ n_branch entries */
} zmix_batch;

/* Chooses the seven linear maps of one layer (lin[kind]) before the layer runs. */
typedef int (*zmix_layer_fn)(void *user, int layer, zmix_linear lin[ZMIX_MAT_COUNT],
                             zmix_error *err);

/* The base model's own matrices for a layer (user: the zmix_model). */
int zmix_layer_base(void *model, int layer, zmix_linear lin[ZMIX_MAT_COUNT], zmix_error *err);

/* Floats of scratch zmix_forward_hidden needs for a batch with n_rows rows in total and
 * sequences of at most max_len tokens (a branched sequence counts its prefix and its longest
 * branch). */
size_t zmix_forward_scratch_floats(const zmix_model_config *cfg, int n_rows, int max_len);

/* Runs the model over the batch and writes the final-normed hidden states of the wanted rows
 * (Σ n_out rows × dim, sequence after sequence) to out. rope must cover max_len positions.
 * tile: ZMIX_TILE_FLOATS floats when the model or the layer_fn's maps hold 16-bit matrices
 * (else may be NULL). stop (may be NULL) is checked between layers. */
int zmix_forward_hidden(const zmix_model *model, const zmix_rope *rope, const zmix_batch *batch,
                        zmix_layer_fn layer_fn, void *user, float *scratch, float *tile, float *out,
                        const atomic_int *stop, zmix_error *err);

/* ---- Population forward pass (forward.c) ----------------------------------------------
 *
 * The same examples for C candidates ("copies") at once: the activation matrix holds C
 * copies of one batch's R rows, copy c at rows [c·R', c·R' + R) with R' = zmix_pop_pad(R).
 * A map that is the same for every copy (an unadapted matrix) is one GEMM over all C·R'
 * rows; an adapted
 * matrix in the factored form is one GEMM by Vt over all rows, the per-copy scaling, and one
 * GEMM by U; a dense per-copy W' is one GEMM per copy over its R rows.
 *
 * Determinism across populations: OpenBLAS computes the rows of x·Wᵀ in register blocks
 * (12 rows with its Zen/Haswell SGEMM kernel), and the rows of a block do not share one
 * summation order: a row's bits depend on its position within the block and on whether the
 * block is full. So every copy starts at a multiple of ZMIX_POP_ROW_BLOCK rows (a multiple of
 * the 4, 8, 12, 16 and 24-row blocks of the x86 kernels; the copy's own rows are padded up to
 * it with zero rows), and every stacked GEMM covers whole copies: a candidate's rows then sit
 * at the same positions in full blocks whatever C is and wherever its copy is. GEMMs over one
 * copy's rows (a per-copy W', the shared prefix) have M fixed by the examples.
 * test_pop_gemm_rows_do_not_depend_on_m checks the BLAS property this rests on.
 *
 * Shared prefix: while every map so far is the same for all copies (embeddings, and with
 * MLP-only adaptation the first layer's attention block), the pass runs on one copy's R rows
 * and replicates the result; the first per-copy map then reads the shared input once where
 * it can (the factored Vt·x). */
#define ZMIX_POP_ROW_BLOCK 48

static inline size_t zmix_pop_pad(size_t rows)
{
    return (rows + ZMIX_POP_ROW_BLOCK - 1) / ZMIX_POP_ROW_BLOCK * ZMIX_POP_ROW_BLOCK;
}

typedef enum zmix_pop_kind {
    ZMIX_POP_SHARED = 0, /* lin applies to every copy */
    ZMIX_POP_FACTORED,   /* lin's U, Vt; copy c's scale at scale + c·scale_stride */
    ZMIX_POP_DENSE       /* copy c's map from zmix_pop_ops.copy */
} zmix_pop_kind;

typedef struct zmix_pop_map {
    zmix_pop_kind kind;
    const float *scale;
    size_t scale_stride;
    const char *dense; /* FACTORED: copies (C flags, or NULL) whose map comes from ops.copy */
} zmix_pop_map;

typedef struct zmix_pop_ops {
    int (*layer)(void *user, int layer, zmix_linear lin[ZMIX_MAT_COUNT],
                 zmix_pop_map map[ZMIX_MAT_COUNT], zmix_error *err);
    /* The dense map of one copy; a W' it composes must stay valid until the next call. */
    int (*copy)(void *user, int layer, int kind, int copy, zmix_linear *lin, zmix_error *err);
    void *user;
    int shared_prefix; /* 0: replicate from the embeddings on (for the on/off test) */
} zmix_pop_ops;

/* Floats of scratch for n_copies copies of a batch of n_rows rows (max_len as above). */
size_t zmix_forward_pop_scratch_floats(const zmix_model_config *cfg, int n_rows, int n_copies,
                                       int max_len);

/* The final-normed hidden states of the wanted rows of every copy into out: copy c's Σ n_out
 * rows × dim at row c·zmix_pop_pad(Σ n_out) (out holds C times that many rows). */
int zmix_forward_pop(const zmix_model *model, const zmix_rope *rope, const zmix_batch *batch,
                     int n_copies, const zmix_pop_ops *ops, float *scratch, float *tile, float *out,
                     const atomic_int *stop, zmix_error *err);

/* y (+)= x·Wᵀ with β = 0 or 1 (the residual add fused into the GEMM). */
void zmix_gemm_xwt_beta(const float *x, int ldx, int n, zmix_wref w, int rows, int cols, float beta,
                        float *y, int ldy, float *tile);

/* ---- Where the time goes (bench_score) ------------------------------------------------ */

typedef enum zmix_stage {
    ZMIX_STAGE_PREFIX, /* embeddings and the shared prefix */
    ZMIX_STAGE_COMPOSE,
    ZMIX_STAGE_GEMM, /* weight GEMMs (and the factored scaling) */
    ZMIX_STAGE_ATTN,
    ZMIX_STAGE_ELEM, /* RMSNorm, SwiGLU, biases, residual adds, replication */
    ZMIX_STAGE_LM_HEAD,
    ZMIX_STAGE_LOSS,
    ZMIX_STAGE_COUNT
} zmix_stage;

/* Off unless a benchmark turns it on; then every stage adds its wall nanoseconds. */
extern atomic_int zmix_stage_timing;
extern _Atomic unsigned long long zmix_stage_ns[ZMIX_STAGE_COUNT];
const char *zmix_stage_name(zmix_stage s);
unsigned long long zmix_stage_clock(void); /* 0 when timing is off */
void zmix_stage_add(zmix_stage s, unsigned long long t0);
/* Until called with -1, this thread's stages all count as stage s (the shared prefix). */
void zmix_stage_redirect(int s);

/* Scorer switches for the tests and the benchmark (defaults: both 1). batch 0 scores one
 * candidate at a time (the per-candidate path); shared_prefix 0 replicates every copy from
 * the embeddings. Set them only while no scoring call runs. */
extern int zmix_score_batched;
extern int zmix_score_shared_prefix;
/* Candidates per population pass at most (0: as many as the memory budget allows). */
extern int zmix_score_chunk;

/* Rotates rows [0, n) of a (n × n_heads·head_dim) block whose row i sits at position pos0+i,
 * with the tables cos_t/sin_t ([pos][half]) of its sequence. */
void zmix_rope_rows(float *x, int n, int n_heads, int head_dim, int pos0, const float *cos_t,
                    const float *sin_t, int interleaved);

/* Causal attention of one sequence: nq query rows (n_heads·head_dim wide) at positions
 * pos0.., over len key and value rows (n_kv_heads·head_dim wide); scores: nq × len floats;
 * att: nq rows of n_heads·head_dim. */
void zmix_attend(const zmix_model_config *c, const float *q, const float *k, const float *v, int nq,
                 int pos0, int len, float *scores, float *att);

/* logits (n × vocab) = hidden (n × dim) · lm_headᵀ. tile as for zmix_linear_apply. */
void zmix_lm_head(const zmix_model *model, const float *hidden, int n, float *logits, float *tile);

/* ---- Runtime (runtime.c) -------------------------------------------------------------- */

struct zmix_runtime {
    const zmix_model *model;
    zmix_runtime_opts opts;
    zmix_adapted *list; /* M adapted matrices */
    int n_mat;
    size_t z_total;
    zmix_factors *factors;   /* M */
    zmix_dtype factor_dtype; /* of U and Vt: opts.factor_dtype resolved */
    float *sigma_sum;        /* [M]: Σσ per matrix */
    int n_experts;
    zmix_expert *experts; /* K */
    /* Expert matrices W_k = U·diag(σ⊙z_k)·Vᵀ, [M][K] pointers into one block, or NULL when
     * they would not fit the memory cap (the scorer then composes or factors instead). */
    float **expert_w;
    float *expert_w_block;
    double *expert_sigma_z;  /* [M][K]: Σ σ⊙z_k, so the rescale needs no z' */
    int *adapted_index;      /* [n_layers·7]: m of (layer, kind), or -1 when not adapted */
    zmix_mapping factor_map; /* the factor cache file U and Vt are read from, or none */
};

/* Creates a runtime from experts already in memory (z[k]: z_total floats, copied). The
 * public zmix_runtime_create loads expert files and calls this. */
int zmix_runtime_create_from_z(const zmix_model *model, const zmix_runtime_opts *opts,
                               const float *const *z, const char *const *names, int n_experts,
                               zmix_runtime **out, zmix_error *err);

/* Floats of the tile a worker widens 16-bit matrices into: ZMIX_TILE_FLOATS when the model's
 * weights or the runtime's factors are 16-bit, else 0. */
size_t zmix_runtime_tile_floats(const zmix_runtime *rt);

/* Bytes the expert matrices of a runtime may use before the scorer falls back to composing
 * from the factors (see runtime.c). */
#define ZMIX_EXPERT_MATRIX_CAP ((size_t)3 << 30)

/* ---- Composition (compose.c) ---------------------------------------------------------- */

/* How an adapted matrix is applied for one candidate. */
typedef enum zmix_wprime_mode {
    ZMIX_WPRIME_AUTO = 0, /* chosen by the cost model */
    ZMIX_WPRIME_LINEAR,   /* W' = c·Σ_k α_k W_k from the expert matrices (α candidates only) */
    ZMIX_WPRIME_COMPOSE,  /* W' = (U·diag(c·σ⊙z'))·Vt by GEMM */
    ZMIX_WPRIME_FACTORED  /* y = U·(c·σ⊙z'⊙(Vt·x)), nothing composed */
} zmix_wprime_mode;

const char *zmix_wprime_mode_name(zmix_wprime_mode mode);

/* The scale of the rescale option: Σσ / Σ(σ⊙z') of matrix m, or 1 without rescale. Returns
 * 0 when the composition is degenerate (the denominator is zero or not finite). */
float zmix_rescale_factor(const zmix_runtime *rt, int m, const float *z_m, int rescale);

/* Effective α of matrix m (normalised when asked): alpha_m[K]. Returns -1 when an entry is
 * not finite or when normalising a group that sums to zero. */
int zmix_alpha_for_matrix(const zmix_runtime *rt, const zmix_compose_opts *opts, const float *alpha,
                          int m, float *alpha_m);

/* W' of matrix m, dense, into w (rows × cols): (U·diag(c·σ⊙z'_m))·Vt. tmp: rows × rank;
 * tile: zmix_runtime_tile_floats(rt) floats (16-bit factors only). */
void zmix_wprime_compose(const zmix_runtime *rt, int m, const float *z_m, float c, float *w,
                         float *tmp, float *tile);

/* A shallow copy of the runtime's model whose adapted matrices are W' materialised from
 * U, σ, z', Vt (the reference the scorer is checked against, and the naive path of the
 * benchmark). It borrows the unadapted weights of rt's model; free it with zmix_model_free
 * before the runtime's model. */
int zmix_model_with_wprime(const zmix_runtime *rt, int rescale, const float *z, zmix_model **out,
                           zmix_error *err);

/* ---- Scoring (score.c) ---------------------------------------------------------------- */

/* Exactness and mean target log-probability of one example from its target-position logits
 * (n_target × vocab; row t predicts target[t]; argmax takes the first index on ties). */
void zmix_example_score_logits(const float *logits, const int32_t *target, int n_target, int vocab,
                               zmix_example_score *out);

/* Whether the answer of multiple-choice example e wins, its margin and the preferred choice,
 * from the rows the scorer computes for it: the prompt's last row, then the rows of each
 * choice but its last token, choice after choice (1 + Σ (choice_len - 1) rows × vocab). */
void zmix_choice_score_logits(const float *logits, const zmix_example *e, int vocab,
                              zmix_choice_norm norm, zmix_example_score *out);

/* Activations of one population chunk at most (one candidate's when larger). Past a few
 * candidates of a 15M-sized model, stacking more only made every GEMM stream its output from
 * memory (measured: chunks of 3 and 26 within noise of each other on stories15M), and filling
 * the whole budget would cost a daemon worker hundreds of MB for nothing. */
#define ZMIX_POP_CHUNK_BYTES ((size_t)64 << 20)

/* Logits of at most this many floats (256 KiB) per LM head GEMM, so that the loss reads them
 * from cache; one candidate's rows at least. */
#define ZMIX_LOGITS_CHUNK_FLOATS ((size_t)64 << 10)

/* Bytes a worker holds for a population chunk of n_copies candidates, each n_rows rows of
 * which n_out_rows are wanted (sequences of at most max_len), for a runtime of n_mat adapted
 * matrices, z_total and K experts: the activations, hidden states, the LM head's logits and
 * every candidate's z', scales, α and rescale factors. What ZMIX_POP_CHUNK_BYTES bounds. */
size_t zmix_score_pop_bytes(const zmix_model_config *c, int n_rows, int n_out_rows, int n_copies,
                            int max_len, size_t z_total, int n_mat, int n_experts);

/* The scorer's default activation budget per call (zmix_runtime_opts.memory_budget 0). */
#define ZMIX_DEFAULT_MEMORY_BUDGET ((size_t)512 << 20)

/* Bytes of activations one worker holds for a group of n_rows rows (n_out_rows of them
 * wanted, sequences of at most max_len tokens): what the memory budget bounds. */
size_t zmix_score_activation_bytes(const zmix_model_config *c, int n_rows, int n_out_rows,
                                   int max_len);

/* zmix_score_alpha / zmix_score_z with the W' mode forced (tests and benchmark). Exactly one
 * of alpha and z is non-NULL. */
int zmix_score_mode(const zmix_runtime *rt, const zmix_compose_opts *opts, int rescale,
                    const zmix_examples *ex, int n_cand, const float *alpha, const float *z,
                    const zmix_score_ctl *ctl, zmix_wprime_mode mode, zmix_score *out,
                    zmix_example_score *detail, zmix_error *err);

/* The wanted-row logits one candidate's score is computed from (Σ n_out × vocab: the target
 * rows, or for multiple choice the rows zmix_choice_score_logits reads,
 * example after example), through exactly the scorer's path. For tests. */
int zmix_candidate_logits(const zmix_runtime *rt, const zmix_compose_opts *opts, int rescale,
                          const zmix_examples *ex, const float *alpha, const float *z,
                          zmix_wprime_mode mode, float *logits, zmix_error *err);

#endif
