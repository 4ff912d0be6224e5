/*
 * zmix model runtime: a LLaMA-family base model, the SVD factors of its adapted matrices,
 * a library of K SVF experts, and the scorer that runs the model with
 *     W'(z') = U · diag(σ ⊙ z') · Vᵀ · c,   c = Σσ / Σ(σ ⊙ z')  (or 1 without rescale),
 *     z' = Σ_k α_k z_k
 * on a few-shot example set (teacher-forced: exact-match accuracy and mean target
 * log-likelihood from one causal pass).
 *
 * Pure compute: no sockets, no event loop, no logging. Every function returns 0 or a
 * negative ZMIX_E* code and fills the zmix_error it is given.
 *
 * Thread safety: a zmix_model and a zmix_runtime are immutable once created; the scoring
 * functions may be called concurrently from several threads on the same runtime.
 *
 * Search-vector layout (α): with per_layer = 0, α has K entries, one per expert, shared by
 * every adapted matrix. With per_layer = 1, α has M·K entries, α[m·K + k] being expert k's
 * coefficient on adapted matrix m (matrices in zmix_runtime_matrix_name order).
 */
#ifndef ZMIX_MODEL_H
#define ZMIX_MODEL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "zmix/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Base model --------------------------------------------------------------------- */

/* RoPE frequency scaling, from config.json's "rope_scaling" (or "rope_parameters"), computed
 * as transformers does (docs/model-formats.md gives the formulas and the refused cases). */
typedef enum zmix_rope_type {
    ZMIX_ROPE_DEFAULT = 0, /* plain RoPE: θ^(-2i/d) */
    ZMIX_ROPE_LINEAR,      /* every frequency divided by factor */
    ZMIX_ROPE_DYNAMIC,     /* NTK: a sequence longer than original_max_pos gets a larger θ */
    ZMIX_ROPE_LLAMA3,      /* Llama 3.1: long wavelengths divided by factor, smooth between */
    ZMIX_ROPE_YARN         /* YaRN: ramp from extrapolation to interpolation, scaled cos/sin */
} zmix_rope_type;

typedef struct zmix_rope_scaling {
    zmix_rope_type type;
    double factor;                            /* all but default */
    double low_freq_factor, high_freq_factor; /* llama3 */
    int original_max_pos;        /* llama3, yarn: original_max_position_embeddings; dynamic: the
                                    max_position_embeddings past which θ grows */
    double beta_fast, beta_slow; /* yarn: correction range, in rotations */
    double attention_factor;     /* yarn: cos/sin multiplier (given, or derived from factor) */
    int truncate;                /* yarn: correction range rounded outwards to integers */
} zmix_rope_scaling;

typedef struct zmix_model_config {
    char model_type[32]; /* "llama", "mistral", "qwen2"; "llama2c" for legacy checkpoints */
    int dim;             /* hidden_size */
    int hidden_dim;      /* intermediate_size */
    int n_layers;
    int n_heads;
    int n_kv_heads;
    int head_dim;
    int vocab_size;
    int max_seq_len; /* max_position_embeddings, or seq_len of a llama2.c checkpoint */
    float norm_eps;
    float rope_theta;
    int tied_embeddings;            /* LM head shares the token embedding */
    int rope_interleaved;           /* 1: llama2.c pairs (2i, 2i+1); 0: HF rotate-half (i, i+d/2) */
    int qkv_bias;                   /* q/k/v projections carry biases (qwen2) */
    int bos_id;                     /* -1 when unknown */
    int eos_id;                     /* -1 when unknown */
    zmix_rope_scaling rope_scaling; /* zero: plain RoPE */
} zmix_model_config;

typedef struct zmix_model zmix_model;

/* Loads a Hugging Face directory (config.json + model.safetensors or a sharded index) or a
 * llama2.c legacy checkpoint file (.bin). */
int zmix_model_load(const char *path, zmix_model **out, zmix_error *err);
void zmix_model_free(zmix_model *model);
const zmix_model_config *zmix_model_get_config(const zmix_model *model);
/* Hex digest identifying the model's weights and configuration (stable across formats is
 * not required; stable across loads of the same files is). */
const char *zmix_model_fingerprint(const zmix_model *model);

/* ---- Few-shot examples -------------------------------------------------------------- */

/* An example is of one of two kinds, and a set holds one kind only:
 *   exact match:     a target the model must reproduce (n_target >= 1, n_choices 0);
 *   multiple choice: n_choices >= 2 continuations of the prompt (choice c is choice_len[c]
 *                    tokens from choices + Σ_{d<c} choice_len[d]) of which answer is the right
 *                    one (target NULL, n_target 0). docs/scoring.md says how it is scored. */
#define ZMIX_MAX_CHOICES 64

typedef struct zmix_example {
    const int32_t *prompt;
    int n_prompt; /* >= 1 */
    const int32_t *target;
    int n_target;              /* >= 1 for exact match, 0 for multiple choice */
    int n_choices;             /* 0 for exact match, else in [2, ZMIX_MAX_CHOICES] */
    const int32_t *choices;    /* Σ choice_len tokens, choice after choice */
    const int32_t *choice_len; /* n_choices lengths, each >= 1 */
    int answer;                /* in [0, n_choices) */
} zmix_example;

typedef struct zmix_examples {
    zmix_example *items; /* n entries, pointing into tokens */
    int n;
    int32_t *tokens; /* owns every token (and every choice length) of every example */
    size_t n_tokens;
} zmix_examples;

/* 1 when the set's examples are multiple choice (the set's first example says it). */
int zmix_examples_are_choice(const zmix_examples *ex);
/* The tokens of an example the model reads: prompt + target, or prompt + every choice. */
size_t zmix_example_tokens(const zmix_example *e);

/* Reads {"examples":[{"prompt":[ids],"target":[ids]}, ...]} or, for multiple choice,
 * {"examples":[{"prompt":[ids],"choices":[[ids], ...],"answer":i}, ...]}. Errors name the file
 * and the example ("ex.json: examples[3].target is empty"). */
int zmix_examples_load_json(const char *path, zmix_examples *out, zmix_error *err);
/* Copies n examples from caller-owned arrays into a self-owned set. */
int zmix_examples_copy(const zmix_example *items, int n, zmix_examples *out, zmix_error *err);
void zmix_examples_free(zmix_examples *ex);
/* Checks a set against a model: non-empty, one kind of example only, every prompt and target
 * (or choice) non-empty, an answer among the choices, every id in [0, vocab), and every
 * example within the context by the scorer's rule: the model reads n_prompt + n_target - 1
 * positions (the last target token is never fed), so an example fits when
 * n_prompt + n_target - 1 <= max_seq_len (for multiple choice: with the longest choice as
 * the target). Messages name the example, field, position,
 * value and range ("examples[3].target[1]: token id 9999 outside the vocabulary [0, 512)");
 * codes: ZMIX_EINVAL (empty), ZMIX_ERANGE (token id), ZMIX_ELIMIT (context). */
int zmix_examples_check(const zmix_model *model, const zmix_examples *ex, zmix_error *err);
/* The same check against a vocabulary size and a context length given directly, for callers
 * that hold the model's numbers but not the model (the daemon's request parser). */
int zmix_examples_check_vocab_context(const zmix_examples *ex, int vocab_size, int context,
                                      zmix_error *err);

/* ---- Runtime: SVD factors + experts ------------------------------------------------- */

typedef enum zmix_adapt_set {
    ZMIX_ADAPT_MLP = 1,  /* gate, up, down of every layer (the default, as in the reference) */
    ZMIX_ADAPT_ATTN = 2, /* q, k, v, o of every layer */
    ZMIX_ADAPT_ALL = 3
} zmix_adapt_set;

/* Parses "mlp", "attn", "all". */
int zmix_adapt_set_parse(const char *s, zmix_adapt_set *out, zmix_error *err);
const char *zmix_adapt_set_name(zmix_adapt_set set);

/* How U and Vt of the SVD factors are stored (S is always float32). 16 bits halve the
 * factors' memory (for the MLP of an 8B model: 29 GB in float32); the factors are computed in
 * float32 either way. */
typedef enum zmix_factor_dtype {
    ZMIX_FACTORS_AUTO = 0, /* F16 when the model's weights are 16-bit, else F32 */
    ZMIX_FACTORS_F32,
    ZMIX_FACTORS_F16, /* more precise than BF16 for orthonormal factors (all entries <= 1) */
    ZMIX_FACTORS_BF16
} zmix_factor_dtype;

/* Parses "auto", "f32", "f16", "bf16". */
int zmix_factor_dtype_parse(const char *s, zmix_factor_dtype *out, zmix_error *err);
const char *zmix_factor_dtype_name(zmix_factor_dtype dtype);

/* What the runtime keeps to apply W' (docs/sizing.md, "Memory per mode"). */
typedef enum zmix_wprime_keep {
    /* The K expert matrices W_k when they fit a 3 GiB cap, so that the scorer can use the
     * linear mode (W' = c·Σ α_k W_k); U and Vt are then not kept resident when a factor cache
     * holds them. Above the cap, as ZMIX_WPRIME_KEEP_FACTORS. */
    ZMIX_WPRIME_KEEP_AUTO = 0,
    /* The factors only, no expert matrices: W' is composed from U, σ, Vt or applied factored.
     * K times the adapted weights less memory; slower on long example sets, and the scores
     * differ from AUTO's in the last bits (another way to compute the same W'). */
    ZMIX_WPRIME_KEEP_FACTORS
} zmix_wprime_keep;

/* Parses "auto", "factored". */
int zmix_wprime_keep_parse(const char *s, zmix_wprime_keep *out, zmix_error *err);
const char *zmix_wprime_keep_name(zmix_wprime_keep keep);

typedef struct zmix_runtime_opts {
    zmix_adapt_set adapt;
    const char *factor_cache_dir; /* where SVD factors are cached; NULL: no cache */
    unsigned factor_file_mode;    /* permission bits of a new factor file; 0: 0600 (the
                                     cache is the user's own, like every cache file) */
    size_t memory_budget;         /* bytes for activations per scoring call; 0: default */
    zmix_factor_dtype factor_dtype;
    zmix_wprime_keep wprime;
} zmix_runtime_opts;

void zmix_runtime_opts_default(zmix_runtime_opts *opts);

typedef struct zmix_runtime zmix_runtime;

/* Factors the adapted matrices of model (or loads the factors from the cache) and loads the
 * K expert files. The runtime borrows model, which must outlive it. */
int zmix_runtime_create(const zmix_model *model, const zmix_runtime_opts *opts,
                        const char *const *expert_paths, int n_experts, zmix_runtime **out,
                        zmix_error *err);
void zmix_runtime_free(zmix_runtime *rt);

const zmix_model *zmix_runtime_model(const zmix_runtime *rt);
int zmix_runtime_n_experts(const zmix_runtime *rt);
const char *zmix_runtime_expert_name(const zmix_runtime *rt, int k);
int zmix_runtime_n_matrices(const zmix_runtime *rt);                 /* M */
const char *zmix_runtime_matrix_name(const zmix_runtime *rt, int m); /* HF tensor name */
int zmix_runtime_matrix_rank(const zmix_runtime *rt, int m);         /* r_m = min(out, in) */
size_t zmix_runtime_z_offset(const zmix_runtime *rt, int m);         /* offset of matrix m in z */
size_t zmix_runtime_z_total(const zmix_runtime *rt);                 /* Σ_m r_m */
zmix_adapt_set
zmix_runtime_adapt_set(const zmix_runtime *rt); /* the adapted set it was made with */
const float *zmix_runtime_expert_z(const zmix_runtime *rt, int k); /* z_total floats */

/* What a runtime holds, in bytes, by term (what zmix_memory_plan_compute plans). */
typedef struct zmix_runtime_memory {
    const char *mode;       /* "linear" (expert matrices kept) or "factored" */
    size_t factors;         /* U and Vt on the heap (computed without a cache, or copied) */
    size_t factors_mapped;  /* U and Vt in the factor cache's mapping, paged in when read */
    size_t sigma;           /* S of every matrix */
    size_t experts;         /* K z vectors and Σσ⊙z_k */
    size_t expert_matrices; /* the K expert matrices W_k, 0 when not kept */
} zmix_runtime_memory;

void zmix_runtime_memory_get(const zmix_runtime *rt, zmix_runtime_memory *out);

/* ---- Memory plan (memory_plan.c) ---------------------------------------------------- */

/* What a model will take, read without loading it: config.json and the safetensors headers
 * (every name and shape checked as the loader would), or a llama2.c header. No tensor byte
 * is read, so this is instant even for a model that does not fit. */
typedef struct zmix_model_probe {
    zmix_model_config cfg;
    int half;            /* the matrices are stored in 16 bits (and stay so) */
    size_t weight_bytes; /* the weights as the loader keeps them (mapped or copied) */
} zmix_model_probe;

int zmix_model_probe_path(const char *path, zmix_model_probe *out, zmix_error *err);

/* What the program will do with the model. */
typedef struct zmix_memory_settings {
    zmix_adapt_set adapt;
    zmix_factor_dtype factor_dtype;
    int n_experts;        /* K */
    int workers;          /* scoring calls running at once */
    size_t memory_budget; /* the scorer's activation budget per call; 0: its default */
    long max_tokens;      /* tokens of the largest example set allowed; 0: the context */
    size_t other;         /* further memory the program holds (a cache budget) */
    zmix_wprime_keep wprime;
    int factor_cache; /* the factors come from (and go to) a factor cache directory */
    /* The program's names for its settings, used in the refusal ("--workers"), or NULL when
     * it has no such setting. */
    const char *workers_option, *factor_option, *limit_option, *wprime_option;
} zmix_memory_settings;

void zmix_memory_settings_default(zmix_memory_settings *s);

/* Bytes, by what holds them. */
typedef struct zmix_memory_plan {
    size_t weights;
    size_t factors;                 /* U, S, Vt of the adapted matrices */
    zmix_factor_dtype factor_dtype; /* AUTO resolved */
    /* The part of factors resident while scoring: all of it, or only S (σ) when the expert
     * matrices are kept and U, Vt are read from the factor cache's mapping (they are paged
     * in, as reclaimable file pages, only by what composes from them). */
    size_t factors_kept;
    int factors_mapped; /* U and Vt are used from the factor cache's mapping */
    const char *mode;   /* "linear" (expert matrices kept) or "factored" */
    size_t experts;     /* K z vectors and, when kept, the K expert matrices W_k */
    int expert_matrices;
    size_t svd;                /* the transient of factoring one matrix (no factor cache) */
    size_t worker;             /* one scoring call: worker_fixed + worker_activations */
    size_t worker_fixed;       /* one layer's composed W', temporaries, the 16-bit tile */
    size_t worker_activations; /* at most the memory budget */
    size_t pop_chunk;          /* of which a population chunk may take (ZMIX_POP_CHUNK_BYTES,
                                  or one candidate's when larger) */
    int workers;
    size_t other;
    size_t overhead; /* the process and the per-thread BLAS buffers */
    /* The first start's peak: overhead + weights + the larger of factoring (factors + svd)
     * and, with mapped factors, building the expert matrices (factors_kept + experts + one
     * matrix's U and Vt). */
    size_t setup;
    size_t steady; /* overhead + weights + factors_kept + experts + workers·worker + other */
    size_t peak;   /* the larger of the two: what must fit */
} zmix_memory_plan;

void zmix_memory_plan_compute(const zmix_model_probe *m, const zmix_memory_settings *s,
                              zmix_memory_plan *out);
/* One line for a log; returns its length (as snprintf). */
size_t zmix_memory_plan_format(const zmix_memory_plan *p, char *out, size_t size);
/* MemAvailable of /proc/meminfo, in bytes. */
int zmix_memory_available(size_t *bytes, zmix_error *err);
/* ZMIX_ENOMEM when p->peak exceeds limit, naming what would make it fit in the program's
 * option names ("it fits with --workers 1"); limit_source names the limit ("MemAvailable"). */
int zmix_memory_plan_check(const zmix_model_probe *m, const zmix_memory_settings *s,
                           const zmix_memory_plan *p, size_t limit, const char *limit_source,
                           zmix_error *err);
/* All of the above for a program about to load path: probe, plan (one line into report),
 * check against limit (0: MemAvailable). */
int zmix_memory_preflight(const char *path, const zmix_memory_settings *s, size_t limit,
                          char *report, size_t report_size, zmix_error *err);

/* ---- Composition and scoring -------------------------------------------------------- */

typedef struct zmix_compose_opts {
    int per_layer; /* α is M·K (per adapted matrix) instead of K */
    int normalize; /* scale α to sum 1 (per matrix when per_layer) before composing */
    int rescale;   /* multiply W' by Σσ / Σ(σ ⊙ z'), as the reference does (default 1) */
} zmix_compose_opts;

void zmix_compose_opts_default(zmix_compose_opts *opts);
/* Number of α entries: K, or M·K when per_layer. */
size_t zmix_alpha_dim(const zmix_runtime *rt, const zmix_compose_opts *opts);

/* z' = Σ_k α_k z_k for every adapted matrix, written to z_out (z_total floats). */
int zmix_compose_z(const zmix_runtime *rt, const zmix_compose_opts *opts, const float *alpha,
                   float *z_out, zmix_error *err);

/* Per-example detail of a score (optional output). */
typedef struct zmix_example_score {
    int exact;     /* 1 when every target token is the argmax (multiple choice: when the
                      answer is the choice the model prefers, strictly) */
    double loglik; /* mean log-probability of the target tokens (multiple choice: the
                      answer's log-likelihood margin over the best other choice) */
    int chosen;    /* multiple choice: the preferred choice (first on ties); else -1 */
    double margin; /* this example's part of zmix_score.margin */
} zmix_example_score;

/* How the log-likelihoods of the choices of a multiple-choice example are compared. */
typedef enum zmix_choice_norm {
    ZMIX_CHOICE_PER_TOKEN = 0, /* mean over the choice's tokens (the default) */
    ZMIX_CHOICE_SUM = 1        /* the sum: no length normalisation */
} zmix_choice_norm;

typedef struct zmix_score_ctl {
    int n_threads;                /* threads for this call; <= 1 runs on the caller's thread */
    const atomic_int *stop;       /* when non-NULL and set, the call returns ZMIX_ECANCELED */
    zmix_choice_norm choice_norm; /* multiple-choice sets only */
} zmix_score_ctl;

/* Scores n_cand candidates given as α vectors (n_cand × zmix_alpha_dim, row-major).
 * out: n_cand scores. detail: NULL or n_cand × ex->n entries.
 * Deterministic: a candidate's score is bit-identical whatever n_cand, the other candidates
 * in the call, and ctl->n_threads. */
int zmix_score_alpha(const zmix_runtime *rt, const zmix_compose_opts *opts, const zmix_examples *ex,
                     int n_cand, const float *alpha, const zmix_score_ctl *ctl, zmix_score *out,
                     zmix_example_score *detail, zmix_error *err);

/* Same, for candidates given directly as z' vectors (n_cand × z_total). z' = 1 everywhere
 * is the unadapted base model. */
int zmix_score_z(const zmix_runtime *rt, int rescale, const zmix_examples *ex, int n_cand,
                 const float *z, const zmix_score_ctl *ctl, zmix_score *out,
                 zmix_example_score *detail, zmix_error *err);

/* Greedy continuation of prompt under z' (NULL: base model), n_new tokens into out. */
int zmix_generate(const zmix_runtime *rt, int rescale, const float *z, const int32_t *prompt,
                  int n_prompt, int n_new, int32_t *out, zmix_error *err);

/* Full-position logits of one sequence through the base model only (no runtime needed):
 * logits is n_tokens × vocab. For tests and tools; not a fast path. */
int zmix_model_forward_logits(const zmix_model *model, const int32_t *tokens, int n_tokens,
                              float *logits, zmix_error *err);

/* ---- Tokenizers and text examples (tokenizer.c, tok_hf*.c, examples.c) ----------------
 *
 * A model directory may hold a tokenizer.json, which zmix_model_load reads when present:
 *   - zmix's byte tokenizer, {"type": "bytes", "bos_id": 256, "eos_id": 257} (docs/demo.md):
 *     token ids 0..255 are the bytes of the text, bos_id and eos_id the two special tokens
 *     (both >= 256 and < vocab_size, and equal to config.json's when it names them);
 *   - a Hugging Face tokenizers file (it has no top-level "type"): byte-level BPE (GPT-2,
 *     Llama 3, Qwen2, SmolLM) or SentencePiece-style BPE with byte fallback (Llama 2, Mistral,
 *     TinyLlama), with the tokenizer_config.json beside it. What zmix does not implement
 *     exactly is refused when the model loads, by name (docs/model-formats.md, "Tokenizers").
 * A tokenizer is immutable once loaded and may be used from several threads. */

typedef struct zmix_tokenizer zmix_tokenizer;

/* A byte tokenizer with the given special ids (each in [256, vocab_size), distinct). */
int zmix_tokenizer_create_bytes(int bos_id, int eos_id, int vocab_size, zmix_tokenizer **out,
                                zmix_error *err);
/* Reads a tokenizer.json file of either kind and checks every id against vocab_size. For a
 * Hugging Face file, tokenizer_config.json in the same directory is read when present. */
int zmix_tokenizer_load(const char *path, int vocab_size, zmix_tokenizer **out, zmix_error *err);
/* Writes a byte tokenizer as tokenizer.json (atomic: temporary file, then rename); ZMIX_EINVAL
 * for a Hugging Face tokenizer. */
int zmix_tokenizer_save(const zmix_tokenizer *tok, const char *path, zmix_error *err);
void zmix_tokenizer_free(zmix_tokenizer *tok);
/* The BOS and EOS ids (from tokenizer_config.json's bos_token / eos_token or the
 * post-processor's template for a Hugging Face tokenizer), -1 when unknown. */
int zmix_tokenizer_bos(const zmix_tokenizer *tok);
int zmix_tokenizer_eos(const zmix_tokenizer *tok);
/* One line saying what the tokenizer is ("byte-level BPE (Llama 3 split), 128256 ids"). */
const char *zmix_tokenizer_describe(const zmix_tokenizer *tok);
int zmix_tokenizer_is_bytes(const zmix_tokenizer *tok);

/* The model's tokenizer, or NULL when its directory has none (and for llama2.c files). */
const zmix_tokenizer *zmix_model_tokenizer(const zmix_model *model);

/* Flags of zmix_tokenizer_encode: the special tokens the model puts before a text (BOS; for a
 * Hugging Face tokenizer, what its post-processor or tokenizer_config.json's add_bos_token
 * puts there) and after it (EOS; add_eos_token). */
#define ZMIX_TOK_BOS 1
#define ZMIX_TOK_EOS 2

/* How many ids encoding len bytes can give at most: what ids must hold. */
size_t zmix_tokenizer_max_tokens(const zmix_tokenizer *tok, size_t len, int flags);

/* Encodes len bytes of text (not necessarily NUL-terminated) into ids, which must hold
 * zmix_tokenizer_max_tokens(tok, len, flags) entries; returns the count or a negative code.
 * A prompt is encoded with ZMIX_TOK_BOS, a target with 0. A Hugging Face tokenizer needs
 * valid UTF-8 (ZMIX_EINVAL names the byte offset of the first bad byte); added and special
 * tokens written in the text ("<|im_start|>") are those tokens, as in transformers. */
int zmix_tokenizer_encode(const zmix_tokenizer *tok, const char *text, size_t len, int flags,
                          int32_t *ids, zmix_error *err);

/* Decodes ids into out (NUL-terminated, truncated to out_size) and returns the length the
 * whole text needs (like snprintf). mode 0: the text, special tokens and unknown ids left out.
 * ZMIX_DECODE_SPECIAL: the text with the special tokens in it (transformers' decode with
 * skip_special_tokens=False). ZMIX_DECODE_SHOW: for display, special tokens kept, backslash as
 * \\, \n \t \r and other control bytes as \xHH (the byte tokenizer writes <bos>/<eos> and
 * every non-ASCII byte as \xHH), ids the tokenizer does not know as <id N>. */
#define ZMIX_DECODE_SHOW    1
#define ZMIX_DECODE_SPECIAL 2
size_t zmix_tokenizer_decode(const zmix_tokenizer *tok, const int32_t *ids, int n, int mode,
                             char *out, size_t out_size);

/* One example given as text (not necessarily NUL-terminated). */
typedef struct zmix_text_example {
    const char *prompt;
    size_t prompt_len; /* may be 0: the prompt is then BOS alone */
    const char *target;
    size_t target_len; /* >= 1 */
} zmix_text_example;

/* Encodes n text examples into a self-owned set (prompt: with ZMIX_TOK_BOS; target: its tokens
 * alone). Errors name the example. */
int zmix_examples_from_text(const zmix_tokenizer *tok, const zmix_text_example *items, int n,
                            zmix_examples *out, zmix_error *err);

/* Like zmix_examples_load_json, but "prompt" and "target" may also be strings, encoded with
 * tok. With tok NULL a string is refused with a message naming the example. */
int zmix_examples_load_json_tok(const char *path, const zmix_tokenizer *tok, zmix_examples *out,
                                zmix_error *err);

/* An examples file as written, before any encoding: the one parser of the format, shared by
 * the loaders above (which encode it for a model) and `zmix submit` (which sends it to the
 * daemon as it is, text included). Each prompt and target is token ids or text. */
typedef struct zmix_example_part {
    const int32_t *ids; /* n_ids token ids, or NULL when the part is text */
    int n_ids;
    const char *text; /* NUL-terminated; NULL when the part is token ids */
} zmix_example_part;

typedef struct zmix_example_json {
    zmix_example_part prompt, target; /* target all NULL/0 for multiple choice */
    int n_choices;                    /* 0: exact match */
    const zmix_example_part *choices; /* n_choices, pointing into parts */
    int answer;
} zmix_example_json;

typedef struct zmix_examples_json {
    int n;
    zmix_example_json *items; /* n entries, pointing into ids and texts */
    int32_t *ids;             /* owns every id */
    char *texts;              /* owns every text, NUL-separated */
    zmix_example_part *parts; /* owns every choice */
} zmix_examples_json;

/* Parses len bytes of an examples file. Checks the structure: at least one example, each an
 * object with exactly the keys prompt and target, or prompt, choices (2 to ZMIX_MAX_CHOICES)
 * and answer (an integer index of a choice), all examples of one kind; prompt, target and each
 * choice a non-empty array of integers in [0, 2^31) or a string (only a prompt string may be
 * empty). path names the file in every message
 * ("ex.json: examples[3].target is empty"). What needs a model (vocabulary, context, a
 * tokenizer for text) is checked later, by zmix_examples_check or by the daemon. */
int zmix_examples_json_parse(const char *text, size_t len, const char *path,
                             zmix_examples_json *out, zmix_error *err);
void zmix_examples_json_free(zmix_examples_json *ex);

#ifdef __cplusplus
}
#endif

#endif
