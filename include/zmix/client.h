/*
 * The zmix client library: talks to a running zmixd over its Unix or TCP socket
 * (MessagePack-RPC, proto/PROTOCOL.md). One function per protocol method, each a
 * synchronous call bounded by the connection's timeout.
 *
 *     zmix_client *c;
 *     zmix_error err;
 *     if (zmix_client_connect("unix:/home/me/.cache/zmix/zmixd.sock", NULL, &c, &err) != 0)
 *         fprintf(stderr, "%s\n", err.msg);
 *     zmix_client_submitted sub;
 *     zmix_client_submit(c, &req, &sub, &err);             // a job id, or a cached result
 *     zmix_client_status st;
 *     zmix_client_wait(c, sub.job, 60.0, &st, &err);       // long-poll until it ends
 *     zmix_client_result res;
 *     zmix_client_get(c, "sentiment", 1, &res, &err);      // α, scores and z' per matrix
 *     ... zmix_client_status_free(&st); zmix_client_result_free(&res); zmix_client_close(c);
 *
 * Conventions: functions return 0 or a negative code (ZMIX_E* from common.h, or the two
 * client codes below) and fill err with a message naming what failed; an error answered by
 * the daemon keeps its code (EINVAL, ENOTFOUND, ...) and message. Every result struct is
 * filled completely or zeroed, and is released with its _free function (which accepts a
 * zeroed struct). Strings in results are NUL-terminated and truncated to their buffer;
 * variable-length data is heap-allocated and owned by the struct.
 *
 * Threads: a connection is used by one thread at a time (one connection per thread); the
 * library has no global state. Progress notifications the daemon sends while a call waits
 * for its response are handed to the callback set with zmix_client_on_progress.
 */
#ifndef ZMIX_CLIENT_H
#define ZMIX_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "zmix/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Client-side failures, beyond the codes the daemon can answer (common.h). */
#define ZMIX_ECONNECT  (-101) /* the daemon could not be reached, or closed the connection */
#define ZMIX_ETIMEDOUT (-102) /* no response within the call's timeout */

/* "ECONNECT", "ETIMEDOUT", or zmix_strerror(code). */
const char *zmix_client_strerror(int code);

/* ---- Addresses ------------------------------------------------------------------------ */

typedef enum zmix_client_addr_kind { ZMIX_ADDR_UNIX = 1, ZMIX_ADDR_TCP = 2 } zmix_client_addr_kind;

typedef struct zmix_client_addr {
    zmix_client_addr_kind kind;
    char path[108]; /* Unix socket path (sun_path holds 107 bytes and the NUL) */
    char host[256]; /* TCP host name or address, without IPv6 brackets */
    char port[8];   /* TCP port, 1..65535 as decimal text */
} zmix_client_addr;

/* Accepts "unix:PATH", "tcp:HOST:PORT", "tcp:[V6ADDR]:PORT", and a bare path containing a
 * '/' (taken as a Unix socket). Errors name the address and what is wrong with it. */
int zmix_client_addr_parse(const char *spec, zmix_client_addr *out, zmix_error *err);

/* The daemon's default socket: unix:$XDG_CACHE_HOME/zmix/zmixd.sock, else
 * unix:$HOME/.cache/zmix/zmixd.sock, else unix:/tmp/zmix-UID/zmixd.sock. Does not look at
 * ZMIX_ADDR (zmix_client_resolve_address does). Returns 0, or ZMIX_ERANGE if cap is short. */
int zmix_client_default_address(char *out, size_t cap);

/* ---- Connections ---------------------------------------------------------------------- */

typedef struct zmix_client zmix_client;

typedef struct zmix_client_opts {
    int timeout_ms;          /* per call (and for connecting); default 30000 */
    const char *token;       /* sent with auth right after connecting; NULL: none */
    size_t max_message_size; /* a larger response fails with ZMIX_ELIMIT (checked between
                              * 64 KiB reads); default 256 MiB */
} zmix_client_opts;

void zmix_client_opts_default(zmix_client_opts *opts);

/* Connects (and authenticates when opts->token is set). opts may be NULL for the defaults.
 * A daemon that is not running gives ZMIX_ECONNECT naming the address and the reason. */
int zmix_client_connect(const char *address, const zmix_client_opts *opts, zmix_client **out,
                        zmix_error *err);
void zmix_client_close(zmix_client *c); /* NULL ok */
void zmix_client_set_timeout(zmix_client *c, int timeout_ms);
/* The conventions every zmix client shares (zmix, this library, the Python client):
 *   the address is `address` when not NULL or empty, else $ZMIX_ADDR when set and not
 *   empty, else zmix_client_default_address();
 *   the token is opts->token when set, else the contents of the file $ZMIX_TOKEN_FILE names
 *   (read as the daemon reads --token-file: trailing newlines and spaces dropped).
 * zmix_client_resolve_address writes the address into out (cap bytes); ZMIX_ERANGE if short.
 * zmix_client_connect_env then connects as zmix_client_connect does; an unreadable token file
 * fails with a message naming ZMIX_TOKEN_FILE and the file. */
int zmix_client_resolve_address(const char *address, char *out, size_t cap, zmix_error *err);
int zmix_client_connect_env(const char *address, const zmix_client_opts *opts, zmix_client **out,
                            zmix_error *err);
/* The address as given to connect, normalised ("unix:/x.sock", "tcp:host:port"). */
const char *zmix_client_address(const zmix_client *c);

/* After a call failed with ZMIX_ECONNECT or ZMIX_ETIMEDOUT the stream may hold half a
 * message: the connection refuses further calls (ZMIX_ESTATE); close it and reconnect. */

/* The result of the last successful call, rendered as JSON text (caller frees with free()).
 * Binary vectors (z') appear as arrays of floats. For `--json` output and logging. */
int zmix_client_last_json(const zmix_client *c, char **json, zmix_error *err);

/* ---- Results -------------------------------------------------------------------------- */

#define ZMIX_CLIENT_TASK_MAX 129 /* task names: 1..127 bytes of [A-Za-z0-9._-] (and a NUL) */

typedef struct zmix_client_gen {
    int generation; /* 1-based */
    zmix_score best, elite_mean, pop_mean;
    double mean_std;
    int dim;      /* entries of mean and std (0 when the daemon did not send them) */
    double *mean; /* distribution after the refit, owned */
    double *std;
} zmix_client_gen;

typedef struct zmix_client_status {
    uint64_t job;
    char task[ZMIX_CLIENT_TASK_MAX];
    char state[16]; /* queued, running, done, failed, cancelled */
    char phase[16];
    int priority;
    int generation, max_generations, pop, dim;
    int64_t evaluations, skipped;
    int has_best; /* best and best_alpha are set once a generation has finished */
    zmix_score best;
    int n_best_alpha;
    float *best_alpha;    /* owned */
    double mean_std;      /* mean std of the search distribution (NaN before the first) */
    double elapsed;       /* seconds of scoring so far */
    char stop_reason[32]; /* "" while running */
    char reason[256];     /* why it failed or was cancelled; "" otherwise */
    double submitted, started, ended; /* Unix seconds; 0: not yet */
    int timed_out; /* zmix_client_wait only: the timeout passed before the job ended */
    int n_history; /* per generation, when asked for and sent by the daemon */
    zmix_client_gen *history;
} zmix_client_status;

void zmix_client_status_free(zmix_client_status *s);
/* 1 when state is done, failed or cancelled. */
int zmix_client_state_is_final(const char *state);

typedef struct zmix_client_matrix {
    char name[128]; /* HF tensor name, e.g. model.layers.0.mlp.gate_proj.weight */
    uint32_t rank;  /* floats of z' */
    float *z;       /* owned; NULL when vectors were not requested */
} zmix_client_matrix;

typedef struct zmix_client_expert_score {
    char name[128];
    zmix_score score;
} zmix_client_expert_score;

typedef struct zmix_client_result {
    char task[ZMIX_CLIENT_TASK_MAX];
    char key[65];     /* digest of model + experts + examples + settings */
    uint64_t job;     /* the job that made it */
    double created;   /* Unix seconds */
    zmix_score score; /* best α on the examples */
    zmix_score base_score;
    int n_experts;
    zmix_client_expert_score *expert_scores; /* each expert alone, owned */
    int n_alpha;                             /* K, or M·K with per-layer α (α[m·K + k]) */
    float *alpha;
    int n_matrices;
    zmix_client_matrix *matrices;
    char examples_digest[65];
    char safetensors[4096]; /* the daemon's copy of z' as a file; "" when not persisted */
    int current;            /* made with the daemon's current model and experts */
    char mismatch[256];     /* when not current, why (another model, another expert set) */
} zmix_client_result;

void zmix_client_result_free(zmix_client_result *r);

/* Writes z' (one F32 tensor per matrix, named as the experts' tensors) as a safetensors
 * file, with the task, key and α in its metadata. Needs a result fetched with vectors. */
int zmix_client_result_save_safetensors(const zmix_client_result *r, const char *path,
                                        zmix_error *err);

typedef struct zmix_client_job {
    uint64_t job;
    char task[ZMIX_CLIENT_TASK_MAX];
    char state[16];
    int priority;
    int generation;
    double submitted;
} zmix_client_job;

typedef struct zmix_client_job_list {
    size_t n;
    zmix_client_job *jobs; /* owned */
} zmix_client_job_list;

void zmix_client_job_list_free(zmix_client_job_list *l);

typedef struct zmix_client_task {
    char task[ZMIX_CLIENT_TASK_MAX];
    char key[65];
    uint64_t job;
    double created;
    zmix_score score;
    int64_t bytes;
    int resident, persisted;
    int current;        /* made with the daemon's current model and experts */
    char mismatch[256]; /* when not current, why */
} zmix_client_task;

typedef struct zmix_client_task_list {
    size_t n;
    zmix_client_task *tasks; /* owned */
} zmix_client_task_list;

void zmix_client_task_list_free(zmix_client_task_list *l);

typedef struct zmix_client_info {
    char version[32];
    char model_path[4096];
    char fingerprint[80];
    char model_type[32];
    int dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, max_seq_len, bos_id, eos_id;
    char adapt[16]; /* mlp, attn or all */
    int n_matrices;
    zmix_client_matrix *matrices; /* names and ranks (z is NULL), owned */
    int n_experts;
    char (*experts)[128]; /* n_experts names, owned */
    char experts_digest[80];
    int alpha_dim_per_expert, alpha_dim_per_layer;
    /* limits */
    int max_examples, max_pop, max_generations, max_dim, max_jobs, workers;
    int64_t max_tokens, context, frame_limit;
} zmix_client_info;

void zmix_client_info_free(zmix_client_info *i);

typedef struct zmix_client_stats {
    double uptime;
    int64_t requests, connections;
    int workers_total, workers_busy, pending_chunks;
    int queued, running, unfinished, max_jobs;
    int64_t evaluations;
    double evals_per_s;
    int64_t jobs_done, jobs_failed, jobs_cancelled, cached_submits, coalesced_submits;
    int64_t cache_tasks, cache_resident, cache_resident_bytes, cache_memory_budget;
    int64_t cache_hits, cache_misses, cache_loads, cache_evictions, cache_write_errors,
        cache_unpersisted;
    int64_t rss_bytes;
    int shutting_down;
} zmix_client_stats;

/* ---- Submitting ------------------------------------------------------------------------ */

/* Token ids; or, for a daemon whose model has a tokenizer, text: a field whose ids are NULL
 * is sent as its _text (the prompt is encoded as BOS + tokens, the target as tokens).
 * Multiple choice (n_choices >= 2; target and target_text unused, and every example of a
 * submit of this kind): choice c is choice_ids[c] (choice_len[c] ids) or, when choice_ids
 * or choice_ids[c] is NULL, choice_text[c]; answer is the index of the right one. */
typedef struct zmix_client_example {
    const int32_t *prompt;
    size_t n_prompt;
    const int32_t *target;
    size_t n_target;
    const char *prompt_text;
    const char *target_text;
    size_t n_choices;
    const int32_t *const *choice_ids;
    const size_t *choice_len;
    const char *const *choice_text;
    int answer;
} zmix_client_example;

/* CEM settings as in `zmix adapt` (docs/cem.md). Fields left unset (as set by
 * zmix_client_cem_init: -1 for ints and flags, NaN for numbers, NULL for metric) are not
 * sent, so the daemon's defaults apply. */
typedef struct zmix_client_cem {
    int per_layer, normalize, rescale, elitism;                       /* -1 unset, 0 or 1 */
    int pop, iters, patience;                                         /* -1 unset */
    double elite, init_std, ema, std_floor, std_tol, target_accuracy; /* NaN unset */
    double lo, hi;                                                    /* bounds; NaN unset */
    int seed_set;
    uint64_t seed;
    const char *metric; /* "accuracy", "loglik"; NULL unset */
    double validation;  /* held-out fraction (docs/cem.md); NaN unset */
    const char *method; /* "sep-cma", "cem"; NULL unset */
} zmix_client_cem;

void zmix_client_cem_init(zmix_client_cem *cem);

typedef struct zmix_client_submit_req {
    const char *task;
    const zmix_client_example *examples;
    size_t n_examples;
    const zmix_client_cem *cem; /* NULL: daemon defaults */
    int priority;               /* -10..10, higher first; default 0 */
    int recompute;              /* 1: ignore a cached result */
    const char *warm_start;     /* NULL, or a cached task whose α the search begins from */
} zmix_client_submit_req;

typedef struct zmix_client_submitted {
    uint64_t job;
    char task[ZMIX_CLIENT_TASK_MAX];
    char state[16];
    int cached;                /* answered from the task cache: result is set, no job ran */
    int coalesced;             /* joined an identical job already in progress */
    zmix_client_result result; /* when cached (without vectors) */
} zmix_client_submitted;

void zmix_client_submitted_free(zmix_client_submitted *s);

/* ---- One function per protocol method --------------------------------------------------- */

int zmix_client_auth(zmix_client *c, const char *token, zmix_error *err);
int zmix_client_ping(zmix_client *c, char *version, size_t cap, zmix_error *err);
int zmix_client_info_get(zmix_client *c, zmix_client_info *out, zmix_error *err);
int zmix_client_stats_get(zmix_client *c, zmix_client_stats *out, zmix_error *err);
int zmix_client_submit(zmix_client *c, const zmix_client_submit_req *req,
                       zmix_client_submitted *out, zmix_error *err);
/* with_history also fetches the per-generation history (method history: best, elite and
 * population means, the distribution's mean and std) into out->history; a daemon without
 * that method answers ENOTFOUND "unknown method 'history'", one that no longer holds the
 * job's search state (ended before a restart) ESTATE. */
int zmix_client_status_get(zmix_client *c, uint64_t job, int with_history, zmix_client_status *out,
                           zmix_error *err);
/* Long-poll: returns when the job ends or timeout_s passes (out->timed_out); the call's own
 * deadline is stretched to cover timeout_s. */
int zmix_client_wait(zmix_client *c, uint64_t job, double timeout_s, zmix_client_status *out,
                     zmix_error *err);
/* state_out (may be NULL, cap >= 16): the job's end state once the cancel is on disk
 * ("cancelled"), or "withdrawn" when a tenant's cancel only withdrew its interest in a job
 * that other submits of the tenant still want (PROTOCOL.md §4.8). */
int zmix_client_cancel(zmix_client *c, uint64_t job, char *state_out, size_t cap, zmix_error *err);
/* state: NULL or "" for all, else queued, running, done, failed or cancelled. */
int zmix_client_jobs(zmix_client *c, const char *state, zmix_client_job_list *out, zmix_error *err);
int zmix_client_get(zmix_client *c, const char *task, int with_vectors, zmix_client_result *out,
                    zmix_error *err);
/* The task's result document: the JSON text `zmix adapt` writes (docs/cem.md), without z'.
 * *json is malloc'ed (free with free()). ZMIX_ENOTFOUND when the task is not cached or its
 * result predates result documents. */
int zmix_client_get_document(zmix_client *c, const char *task, char **json, zmix_error *err);
int zmix_client_tasks(zmix_client *c, zmix_client_task_list *out, zmix_error *err);
int zmix_client_evict(zmix_client *c, const char *task, zmix_error *err);
/* Asks the daemon to send a progress notification (a job status) after every generation of
 * every job; they reach the callback below during later calls. */
int zmix_client_subscribe(zmix_client *c, int on, zmix_error *err);

/* generate: a continuation of a prompt under a cached task's adaptation (task NULL: the
 * base model). Unset numbers (0) take the daemon's defaults: 16 tokens, greedy, top_p 1. */
typedef struct zmix_client_gen_req {
    const char *task;      /* NULL: the base model */
    const int32_t *prompt; /* n_prompt token ids, or NULL and text */
    int n_prompt;
    const char *text;          /* the prompt as text (the model needs a tokenizer) */
    int max_tokens;            /* 0: the daemon's default */
    double temperature, top_p; /* 0: greedy / 1 */
    uint64_t seed;
    const int32_t *stop; /* n_stop ids that end the generation */
    int n_stop;
} zmix_client_gen_req;

typedef struct zmix_client_generation {
    int32_t *tokens; /* n_tokens, malloc'ed */
    int n_tokens;
    char *text;             /* the tokens' text, or NULL when the model has no tokenizer */
    char finish_reason[16]; /* "length" or "stop" */
    int32_t stop_token;     /* the stop id that ended it, -1 when none */
    int prompt_tokens;
} zmix_client_generation;

void zmix_client_generation_free(zmix_client_generation *g);
int zmix_client_generate(zmix_client *c, const zmix_client_gen_req *req,
                         zmix_client_generation *out, zmix_error *err);

typedef void (*zmix_client_progress_fn)(void *user, const zmix_client_status *status);
void zmix_client_on_progress(zmix_client *c, zmix_client_progress_fn fn, void *user);

#ifdef __cplusplus
}
#endif

#endif
