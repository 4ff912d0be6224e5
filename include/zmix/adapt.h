/*
 * zmix adapt: one adaptation search, from examples and settings to a result.
 *
 * The search is a session (zmix_session): a steppable object with no threads and no I/O that
 * owns everything a search is — the example check, the CEM engine, the baselines (the base
 * model and each single expert), the NaN policy, the best so far and the history, the
 * result, and checkpoint/restore. Its caller only decides where candidates are scored:
 *
 *     zmix_session_create(rt, ex, &opts, &s, &err);          // or zmix_session_restore
 *     while (zmix_session_begin_step(s, &err) > 0) {          // baselines first, then
 *         n = zmix_session_split(s, workers, work, max);      //   one step per generation
 *         ... zmix_session_score(s, &work[i], &ctl) for each i, on any threads ...
 *         zmix_session_end_step(s, seconds, &err);            // tell, NaN policy, stop test
 *         zmix_session_save(s, &ckpt, &len, &err);             // optional checkpoint
 *     }
 *     zmix_session_result(s, &res, &err);  cJSON *doc = zmix_adapt_result_to_json(&res, 0);
 *
 * `zmix adapt` runs this loop in-process (zmix_adapt_run); zmixd runs the same loop from its
 * event loop, with the chunks on its worker pool and every checkpoint in its job store. So
 * the same examples, settings and seed give the same α and the same result document (the
 * JSON of docs/cem.md) from both.
 *
 * Normalisation happens in exactly one place: the CEM engine (settings.normalize) scales each
 * group of K coefficients to sum 1 before the population is handed out, so the α that is
 * scored, ranked and reported is the same vector. The scorer is therefore always called with
 * compose.normalize = 0 (zmix_adapt_compose_opts does that).
 */
#ifndef ZMIX_ADAPT_H
#define ZMIX_ADAPT_H

#include <stddef.h>
#include <stdint.h>

#include "zmix/cem.h"
#include "zmix/common.h"
#include "zmix/model.h"

#ifdef __cplusplus
extern "C" {
#endif

struct cJSON;

typedef struct zmix_adapt_opts {
    /* CEM settings; dim and n_experts are filled from the runtime (any value given is
     * ignored), everything else is used as is. cem.normalize is the normalise option.
     * cem.init_mean, when set, must hold zmix_alpha_dim entries (K, or M·K per-layer). */
    zmix_cem_settings cem;
    int per_layer; /* one α per expert per adapted matrix (M·K) instead of K; default 0 */
    int rescale;   /* keep each matrix's singular-value mass (the reference's rescale); 1 */
    int n_threads; /* scoring threads in zmix_adapt_run (<= 1: caller's thread); default 1 */
    /* Fraction of the examples held out of the search to estimate how the result does on
     * examples it never saw: < 0 automatic (a quarter when there are 4 or more, else none),
     * 0 none, else in (0, 0.5]. The split is a fixed function of the examples. */
    double validation;
    /* A warm start (docs/cem.md, "Warm start"): cem.init_mean holds the α the search starts
     * from (zmix_alpha_dim values) and warm_from names where it came from (a task, a file),
     * for the result to say; "" when the search starts cold. A warm start's spread is a
     * quarter of the bounds' width unless cem.init_std is given, and per-layer searches start
     * per layer at once (no shared stage). */
    char warm_from[160];
} zmix_adapt_opts;

void zmix_adapt_opts_default(zmix_adapt_opts *opts);

/* The compose options the scorer must be called with for these adapt options. */
zmix_compose_opts zmix_adapt_compose_opts(const zmix_adapt_opts *opts);

/* The search dimension for these options: K, or M·K with per-layer α. */
int zmix_adapt_alpha_dim(const zmix_runtime *rt, const zmix_adapt_opts *opts);
/* What a search with these options and dim coordinates runs (docs/cem.md, "Methods"): with
 * the sep-cma method its own population, spending the options' budget pop_size ×
 * max_generations; with the CEM the options as given. The engine settings are the options'
 * cem settings with these three replaced. */
void zmix_adapt_search_shape(const zmix_adapt_opts *opts, int dim, zmix_cem_method *method,
                             int *pop_size, int *max_generations);

/* The α a warm-started search begins from (opts->cem.init_mean), from an earlier result's
 * alpha (n_alpha values) and provenance: refused (ZMIX_EINVAL, saying why) when it was made
 * for another base model or expert set, or has the wrong size; a shared α is tiled over the
 * matrices of a per-layer search; values are clamped into the bounds. experts_now is the
 * runtime's zmix_adapt_experts_digest (the caller's copy: hashing every expert vector per call
 * is not needed). *out (dim doubles, malloc'ed) is the caller's. */
int zmix_adapt_warm_mean(const zmix_runtime *rt, const char *experts_now,
                         const zmix_adapt_opts *opts, const float *alpha, int n_alpha,
                         const char *model_fingerprint, const char *experts_digest, double **out,
                         zmix_error *err);

/* ---- Provenance: what a result was made from ------------------------------------------ */

/* Whether a result made with (model_fingerprint, experts_digest) does not apply to the model
 * and experts at hand (model_now, experts_now: zmix_adapt_experts_digest): 1 with the reason
 * in words in why (another model, another expert set — the same experts in another order
 * included —, or no record of either), else 0 with why "". The one rule behind the daemon's
 * `current` and the warm start's refusal. */
int zmix_adapt_provenance_mismatch(const char *model_now, const char *experts_now,
                                   const char *model_fingerprint, const char *experts_digest,
                                   char *why, size_t size);

/* SHA-256 (hex) of the experts a runtime holds: names, vectors and the adapted set. Changes
 * when any of them does. */
void zmix_adapt_experts_digest(const zmix_runtime *rt, char hex[65]);
/* SHA-256 (hex) of expert k's vector alone: its z_total floats as little-endian float32 in
 * the runtime's matrix order. Independent of the expert's name, so a renamed file keeps it. */
void zmix_adapt_expert_fingerprint(const zmix_runtime *rt, int k, char hex[65]);
/* SHA-256 (hex) of an example set as token ids. */
void zmix_adapt_examples_digest(const zmix_examples *ex, char hex[65]);
/* The inputs key: SHA-256 (hex) over the model fingerprint, the experts digest, the examples
 * and every setting that changes the result (not n_threads). Two searches with the same key
 * give the same α; the daemon's task cache files results under it. */
void zmix_adapt_key(const zmix_runtime *rt, const zmix_examples *ex, const zmix_adapt_opts *opts,
                    char hex[65]);
/* The same from its parts: the model fingerprint, the experts digest, K and the search
 * dimension (K or M·K) given directly. */
void zmix_adapt_key_from(const char *model_fingerprint, const char *experts_digest, int n_experts,
                         int dim, const zmix_examples *ex, const zmix_adapt_opts *opts,
                         char hex[65]);
/* The PCG stream a search with this key uses when opts->cem.stream is 0: the key's first
 * 64 bits, so that the same request draws the same numbers and different ones draw
 * independent numbers. */
uint64_t zmix_adapt_key_stream(const char key[65]);

#define ZMIX_ADAPT_MAX_WARNINGS 6

/* The outcome of a search (finished or in progress). Owns every array. */
typedef struct zmix_adapt_result {
    char model_fingerprint[65]; /* the base model it was made for */
    char experts_digest[65];    /* zmix_adapt_experts_digest */
    char examples_digest[65];   /* zmix_adapt_examples_digest */
    char key[65];               /* zmix_adapt_key */
    zmix_adapt_set adapt;       /* the adapted matrices */
    int n_experts;              /* K */
    char **expert_names;        /* K */
    int n_matrices;             /* M */
    char **matrix_names;        /* M, in z' order */
    int *matrix_ranks;          /* M */
    int per_layer, normalize, rescale;
    zmix_cem_settings settings; /* as run; init_std is the effective value, init_mean NULL */
    int n_elites;
    int n_examples;

    int dim;      /* K or M·K */
    float *alpha; /* dim: the best α (all NaN when no generation has finished) */
    size_t z_total;
    float *z;        /* z_total: z' composed from alpha (NULL when no generation finished) */
    zmix_score best; /* alpha's score (NaN before the first generation) */
    zmix_score base;
    zmix_score *experts; /* K: each single expert's score */

    /* The search examples and the held-out ones (validation; none when n_validation is 0).
     * best, base and experts above are measured on the search examples. */
    int n_train, n_validation;
    int have_validation;           /* the validation step has run */
    zmix_score val_best;           /* the result's score on the held-out examples */
    double val_acc_lo, val_acc_hi; /* 95% Wilson interval of val_best.accuracy */
    zmix_score val_base;
    zmix_score *val_experts; /* K (NULL without validation) */
    /* 1 when the base model beat every mixture on the search examples: the result is then
     * the unchanged model (z' = 1, alpha all 0). z' = base_weight·1 + Σ alpha_k z_k. */
    float base_weight;
    int n_warnings;
    char warnings[ZMIX_ADAPT_MAX_WARNINGS][256]; /* what the user should know, in words */

    int generations;
    long evaluations, skipped;
    zmix_cem_stop stop; /* ZMIX_CEM_RUNNING for an unfinished search */
    double elapsed_s;

    int n_history;               /* = generations */
    zmix_cem_gen_stats *history; /* n_history */
    double *history_mean;        /* n_history × dim: distribution mean after each generation */
    double *history_std;         /* n_history × dim */

    /* Self-description (docs/results.md): enough to tell, without the search's inputs, which
     * base model and experts the result applies to. */
    zmix_model_config model;         /* the base model's architecture; model_type "" unknown */
    char (*expert_fingerprints)[65]; /* K: zmix_adapt_expert_fingerprint; "" when unknown */

    /* The warm start the search began from (zmix_adapt_opts.warm_from and cem.init_mean):
     * warm_alpha (dim) NULL for a cold start. */
    char warm_from[160];
    float *warm_alpha;
} zmix_adapt_result;

void zmix_adapt_result_free(zmix_adapt_result *res);

/* The result as JSON (see docs/cem.md). include_z adds the composed z' per matrix (large for
 * big models). Returns NULL only when out of memory; free with cJSON_Delete. */
struct cJSON *zmix_adapt_result_to_json(const zmix_adapt_result *res, int include_z);
/* Reads a result document back; out->z holds z' when the document has "z" (include_z), else
 * it is NULL. ZMIX_EFORMAT naming the field for anything that is not one; missing numbers
 * read as NaN. */
int zmix_adapt_result_from_json(const struct cJSON *doc, zmix_adapt_result *out, zmix_error *err);

/* ---- Result files (docs/results.md) ------------------------------------------------- */

/* Writes res's z' as a safetensors file: one F32 tensor [r] per adapted matrix, named by the
 * matrix (the layout of an expert file, so it also loads as one), and the result's
 * self-description in __metadata__, with a SHA-256 of the data. task may be NULL. Atomic. */
int zmix_adapt_result_save_z(const zmix_adapt_result *res, const char *task, const char *path,
                             zmix_error *err);
/* Reads a result file: a result document (JSON; z' present only when it was written with
 * include_z) or a z' safetensors file from zmix_adapt_result_save_z, told apart by content.
 * Refuses, naming the file and what is wrong: unparseable or truncated files, a data checksum
 * that does not match, z' that is not finite or not one vector per listed matrix, and files
 * that do not say which base model they were made for. Matrices of a safetensors file come
 * in name order. */
int zmix_adapt_result_load(const char *path, zmix_adapt_result *out, zmix_error *err);

/* ---- The adaptation session ------------------------------------------------------- */

typedef struct zmix_session zmix_session;

typedef enum zmix_session_phase {
    ZMIX_SESSION_BASELINES = 0, /* the base model and each single expert are scored first */
    ZMIX_SESSION_SEARCH,        /* CEM generations */
    ZMIX_SESSION_VALIDATION,    /* the result, the base and each expert on the held-out set */
    ZMIX_SESSION_DONE,          /* the search stopped (zmix_session_stop says why) */
    ZMIX_SESSION_FAILED         /* a step failed for good (zmix_session_error says why) */
} zmix_session_phase;

const char *zmix_session_phase_name(zmix_session_phase p); /* "baselines", "search", ... */

/* A piece of the open step: candidates [begin, end). Filled by zmix_session_split (or by
 * the caller, any split works: scores do not depend on it); rc and err by zmix_session_score. */
typedef struct zmix_work {
    int begin, end;
    int rc;
    zmix_error err;
} zmix_work;

/* Starts a search: checks the examples (zmix_examples_check) and the settings, sizes the CEM
 * engine (dim K or M·K; a cem.stream of 0 becomes zmix_adapt_key_stream of the inputs key).
 * Borrows rt and ex: both must outlive the session. */
int zmix_session_create(const zmix_runtime *rt, const zmix_examples *ex,
                        const zmix_adapt_opts *opts, zmix_session **out, zmix_error *err);
/* Resumes a search from zmix_session_save bytes, made with the same runtime, examples and
 * options (ZMIX_ESTATE naming what differs otherwise; ZMIX_EFORMAT for damaged bytes). A
 * restored session continues bit for bit as the saved one would have. */
int zmix_session_restore(const zmix_runtime *rt, const zmix_examples *ex,
                         const zmix_adapt_opts *opts, const uint8_t *buf, size_t len,
                         zmix_session **out, zmix_error *err);
void zmix_session_free(zmix_session *s);

/* Opens the next step and returns how many candidates it has to score (> 0), or 0 when the
 * search is over (done or failed). Calling it again before end_step returns the same step. */
int zmix_session_begin_step(zmix_session *s, zmix_error *err);
/* Splits the open step into at most max_work pieces, small enough that n_workers workers
 * all get some and other searches can interleave between them. Returns the number written. */
int zmix_session_split(const zmix_session *s, int n_workers, zmix_work *work, int max_work);
/* Scores one piece of the open step. Safe to call concurrently for disjoint pieces (and
 * concurrently with the read-only accessors below); returns work->rc. ZMIX_ECANCELED when
 * ctl->stop was raised. */
int zmix_session_score(zmix_session *s, zmix_work *work, const zmix_score_ctl *ctl);

/* One scorer call of a piece, as zmix_session_score makes it: everything that changes the
 * scores. rows are α (dim of the search, composed with compose) or, for the base model's row,
 * z' (z_total floats, rescale applies). */
typedef struct zmix_score_request {
    enum { ZMIX_SCORE_ALPHA = 1, ZMIX_SCORE_Z = 2 } kind;
    const zmix_runtime *rt;
    const zmix_compose_opts *compose; /* ZMIX_SCORE_ALPHA */
    int rescale;
    const zmix_examples *ex; /* the session's search or held-out view */
    int n, dim;              /* rows, floats per row */
    const float *rows;
    const zmix_score_ctl *ctl;
} zmix_score_request;

/* Scores a request into out (n scores), or fails with err. */
typedef int (*zmix_score_route)(void *user, const zmix_score_request *req, zmix_score *out,
                                zmix_error *err);

/* zmix_session_score with the scorer calls sent to route instead of the model's scorer in
 * this process (zmixd's fleet publishes them to other daemons). A piece scored twice with
 * the same step open makes the same calls in the same order, so a route may first collect
 * them and answer them on a second pass. */
int zmix_session_score_routed(zmix_session *s, zmix_work *work, const zmix_score_ctl *ctl,
                              zmix_score_route route, void *user);
/* Closes the step once every piece was scored successfully: records the baselines, or tells
 * the engine the generation's scores. A generation whose every candidate scored NaN fails
 * the session (a single NaN candidate only ranks last). seconds: the step's scoring time,
 * summed into the result's elapsed_s. Returns nonzero (and the session FAILED) on failure. */
int zmix_session_end_step(zmix_session *s, double seconds, zmix_error *err);
/* Abandons the open step without scores (cancelled or a piece failed): the next begin_step
 * opens the same step again. */
void zmix_session_abort_step(zmix_session *s);
/* Marks the session failed with this message (a piece failed and the caller gives up). */
void zmix_session_fail(zmix_session *s, const char *message);

zmix_session_phase zmix_session_phase_get(const zmix_session *s);
/* Completed generations over the whole search (both stages of a per-layer search). */
int zmix_session_generation(const zmix_session *s);
void zmix_session_counts(const zmix_session *s, long *evaluations, long *skipped);
/* The best α so far in the session's dimension (zmix_session_dim: a per-layer search's shared
 * stage reports its α on every matrix) and its score; ZMIX_ESTATE before any generation. */
int zmix_session_best(const zmix_session *s, float *alpha, zmix_score *score);
double zmix_session_mean_std(const zmix_session *s); /* of the current distribution */
zmix_cem_stop zmix_session_stop(const zmix_session *s);
const char *zmix_session_error(const zmix_session *s); /* "" unless FAILED */
const zmix_cem *zmix_session_cem(const zmix_session *s);
int zmix_session_dim(const zmix_session *s);
double zmix_session_elapsed(const zmix_session *s); /* scoring seconds over every step */
/* The inputs key (zmix_adapt_key) of this search. */
const char *zmix_session_key(const zmix_session *s);
/* The baseline scores, once the baselines step is over; ZMIX_ESTATE before. */
int zmix_session_baselines(const zmix_session *s, zmix_score *base, zmix_score *experts);

/* The complete state as bytes (framed and checksummed like every zmix file): phase,
 * baselines, elapsed time and the CEM engine. *buf is malloc'ed. */
int zmix_session_save(const zmix_session *s, uint8_t **buf, size_t *len, zmix_error *err);
/* The outcome so far (finished or not): best α and its z', scores, baselines, counters,
 * history, provenance. Best and z' are NaN/NULL before the first generation. */
int zmix_session_result(const zmix_session *s, zmix_adapt_result *out, zmix_error *err);

/* Called after every generation of zmix_adapt_run; return nonzero to cancel the search
 * (zmix_adapt_run then returns ZMIX_ECANCELED). */
typedef int (*zmix_adapt_progress_fn)(void *user, const zmix_session *s);

/* The whole search in-process: a session stepped to its end with opts->n_threads scoring
 * threads, then its result. */
int zmix_adapt_run(const zmix_runtime *rt, const zmix_examples *ex, const zmix_adapt_opts *opts,
                   zmix_adapt_progress_fn progress, void *user, zmix_adapt_result *out,
                   zmix_error *err);

/* ---- Planted tasks: a search problem with a known answer ----------------------------- */

/* K random experts, a hidden mix α*, and examples whose targets are the model's greedy
 * continuations under z'(α*). The recovery test and the demo data are built with it. */
typedef struct zmix_planted_opts {
    int n_experts;           /* K, default 4 */
    int n_examples;          /* default 16 */
    int prompt_len;          /* random token ids after BOS, default 4 */
    int target_len;          /* greedy tokens per target, default 4 */
    double z_log_std;        /* z = exp(N(0, s²)) per singular value, default 0.5 */
    zmix_adapt_set adapt;    /* default ZMIX_ADAPT_MLP */
    int rescale;             /* default 1, as the search's scorer */
    const float *alpha_star; /* K values (M·K with per_layer), or NULL to draw them
                                uniformly in [0.1, 0.9] */
    int per_layer;           /* α* per expert per adapted matrix; default 0 */
    int distinct_from_base;  /* keep only prompts whose target differs from the base
                                model's greedy continuation (multiple choice: whose
                                answer the base model does not prefer); default 0 */
    /* Multiple choice: 0 (the default) plants exact-match targets; n >= 2 plants examples
     * with n choices of target_len tokens each (continuations of the prompt: greedy under
     * z'(α*), under the base model, under each expert, then greedy under z'(α*) after a
     * random first token), the answer being the choice z'(α*) prefers by at least
     * choice_margin in per-token log-likelihood (default 0.1); others are drawn again. */
    int n_choices;
    double choice_margin;
    /* Exact-match targets: keep only prompts whose every target token leads the best other
     * token by at least this much in logit under z'(α*) (default 0: any greedy target). A
     * target decided by a near tie is a needle no search can be expected to hit: float noise
     * in the experts' z decides it. */
    double target_margin;
    const char *factor_cache_dir; /* for the runtime used to generate; NULL: none */
    uint64_t seed;
} zmix_planted_opts;

void zmix_planted_opts_default(zmix_planted_opts *opts);

typedef struct zmix_planted {
    int n_experts;
    char **expert_paths; /* K files written into the directory given */
    int alpha_dim;       /* K, or M·K with per_layer */
    float *alpha_star;   /* alpha_dim */
    zmix_examples examples;
    int n_tried; /* prompts drawn to find n_examples that qualified */
} zmix_planted;

/* Writes dir/expert_<k>.st for k < K (the directory must exist) and builds the examples. */
int zmix_planted_create(const zmix_model *model, const char *dir, const zmix_planted_opts *opts,
                        zmix_planted *out, zmix_error *err);
void zmix_planted_free(zmix_planted *p);

/* ZMIX_EINVAL when the metric cannot rank this example set: choice and choice-sum need
 * multiple-choice examples. (Under accuracy, the default, a multiple-choice set is ranked as
 * under choice, and the search reports choice.) */
int zmix_adapt_metric_check(zmix_metric metric, const zmix_examples *ex, zmix_error *err);

/* Writes an example set as {"examples":[{"prompt":[..],"target":[..]}, ...]} (or with
 * "choices" and "answer" for multiple choice). */
int zmix_adapt_examples_save_json(const char *path, const zmix_examples *ex, zmix_error *err);

#ifdef __cplusplus
}
#endif

#endif
