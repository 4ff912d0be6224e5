/*
 * The task cache: the finished adaptation result of every task, in memory under a byte budget
 * (least recently used first out) and on disk, one crash-safe file per task, so that results
 * survive restarts and a resubmit with identical inputs is answered at once.
 *
 * On disk, under <dir>/tasks/ (format byte by byte in docs/persistence.md):
 *   <task>.zmt           the record: α, z′ per adapted matrix, scores, settings, key, time,
 *                        with a CRC-32C over the whole file; written by fs_write_atomic.
 *   <task>.safetensors   z′ alone, keys = the HF names of the adapted matrices (like the
 *                        expert files), metadata = task, key, α, scores; readable by any
 *                        safetensors reader. Derived from the record: written before it,
 *                        rebuilt from it at open when missing or stale.
 *
 * Memory: every task known on disk has a small index entry (name, key, size, time); the full
 * result ("resident" data) is kept for as many tasks as the byte budget allows. Eviction from
 * memory keeps the files; task_cache_evict removes both. A result whose file could not be
 * written (disk full) stays resident and is never evicted from memory until
 * task_cache_flush manages to write it.
 *
 * Thread safety: every function may be called from any thread. Two mutexes per cache: one for
 * the in-memory state, held only for copies and bookkeeping, and one that serialises disk
 * writes and unlinks. So a lookup of a resident task never waits on an fsync; a lookup of a
 * non-resident task reads its file (outside both locks).
 */
#ifndef ZMIX_STORE_TASK_CACHE_H
#define ZMIX_STORE_TASK_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "zmix/common.h"
#include "util/file.h"
#include "store/task_name.h" /* TASK_NAME_MAX, task_name_check */

#define TASK_KEY_MAX 128 /* bytes of the cache key (a hex digest from the caller) */

/* One finished adaptation result. In a result the cache returns, every pointer is owned by
 * the result and freed by task_result_free. In a result passed to task_cache_put, the
 * pointers are borrowed (the cache copies what it keeps). */
typedef struct task_result {
    char task[TASK_NAME_MAX + 1];
    char key[TASK_KEY_MAX + 1]; /* hex digest of model + experts + examples + settings */
    uint64_t job_id;            /* the job that made it (0: unknown) */
    int64_t created_ms;         /* wall-clock milliseconds since the epoch */

    zmix_score score;      /* best α's score on the examples */
    zmix_score base_score; /* the unadapted model's score on the same examples */
    int n_experts;
    zmix_score *expert_scores; /* n_experts: each expert alone (α = e_k) */

    int n_alpha; /* K, or M·K with per-layer α */
    float *alpha;

    int n_matrices;      /* M adapted matrices */
    char **matrix_names; /* M HF tensor names ("model.layers.0.mlp.gate_proj.weight") */
    uint32_t *ranks;     /* M: floats of z′ per matrix */
    float *z;            /* Σ ranks floats: matrix 0's z′, then matrix 1's, ... */

    uint8_t *settings; /* opaque to the cache (the core's msgpack/JSON of the job settings) */
    size_t settings_len;
    uint8_t *document; /* opaque to the cache: the result document (docs/cem.md), may be empty */
    size_t document_len;
} task_result;

void task_result_free(task_result *r); /* frees the owned arrays and zeroes r; NULL ok */

/* What a result was made from, read from its result document (docs/results.md); "" for a
 * field the document lacks (a result cached before results carried one). */
typedef struct task_provenance {
    char model_fingerprint[72];
    char experts_digest[72];
    char examples_digest[72];
} task_provenance;
void task_result_provenance(const task_result *r, task_provenance *out);
/* Deep copy of src into *dst (dst owns everything). */
int task_result_copy(const task_result *src, task_result *dst, zmix_error *err);

/* Decodes the bytes of a record file (<task>.zmt) into *out (caller frees with
 * task_result_free). Every check the loader makes, exposed for tests and fuzzers:
 * ZMIX_EFORMAT naming the problem for anything but a whole, valid record. */
int task_record_parse(const uint8_t *buf, size_t len, task_result *out, zmix_error *err);
/* The record file's bytes of a result (*out malloc'd), for copies kept elsewhere (a fleet's
 * Redis); task_record_parse reads them back. ZMIX_EINVAL for an inconsistent result. */
int task_record_bytes(const task_result *r, uint8_t **out, size_t *len, zmix_error *err);

typedef struct task_cache_config {
    const char *dir;         /* cache directory; created (0700) when missing */
    size_t memory_budget;    /* bytes of resident results; 0: unlimited */
    size_t max_record_bytes; /* larger files are refused at load; 0: 1 GiB */
    /* Test-only: disk writes of this cache fail like a full disk after this many bytes.
     * -1 (the default) disables; see also task_cache_set_write_fault. */
    unsigned file_mode; /* permission bits of new files; 0: 0600 (group-readable: 0640) */
    long long fault_write_after_bytes;
} task_cache_config;

void task_cache_config_default(task_cache_config *cfg);

typedef struct task_cache task_cache;

/* Opens (creating if needed) the cache in cfg->dir: deletes stale *.tmp files, verifies
 * every record (a bad one is appended to problems, if non-NULL, renamed to <file>.corrupt
 * for inspection and never served), deletes safetensors files that have no valid record,
 * rebuilds missing or stale ones, and makes the newest results resident up to the budget.
 * Fails when the directory cannot be created or read, and with ZMIX_ESTATE when another
 * process has it open (a lock on <dir>/tasks/.lock; one cache object per directory). */
int task_cache_open(const task_cache_config *cfg, task_cache **out, persist_problems *problems,
                    zmix_error *err);
void task_cache_free(task_cache *cache); /* does not flush: call task_cache_flush first */

/* Inserts or replaces the result for r->task: the copy becomes resident at once (and most
 * recently used), then the safetensors file and the record are written durably. Returns 0
 * once both are on disk. If the disk write fails, the result is still in memory and served,
 * the error is returned (the file of the previous version, if any, is intact), and
 * task_cache_flush retries. ZMIX_EINVAL for a bad name or inconsistent sizes. */
int task_cache_put(task_cache *cache, const task_result *r, zmix_error *err);

/* Copies the result for a task into *out (caller frees with task_result_free) and marks it
 * most recently used. Reads the file when the result is not resident. ZMIX_ENOTFOUND when
 * the task is unknown; a file found corrupt at this point is dropped from the index and
 * reported as ZMIX_EFORMAT. Counts a hit or a miss. */
int task_cache_get(task_cache *cache, const char *task, task_result *out, zmix_error *err);

/* Same, but only when the task's cached result has this key (the resubmit test: same model,
 * experts, examples, settings). ZMIX_ENOTFOUND when absent or made from other inputs. */
int task_cache_get_if_key(task_cache *cache, const char *task, const char *key, task_result *out,
                          zmix_error *err);

/* Finds any task whose result has this key and copies it (first match by recency).
 * ZMIX_ENOTFOUND when none. */
int task_cache_find_key(task_cache *cache, const char *key, task_result *out, zmix_error *err);

/* Removes the task from memory and deletes its files (also those of a task whose record was
 * unreadable and is not in the index). ZMIX_ENOTFOUND when there was nothing to remove. */
int task_cache_evict(task_cache *cache, const char *task, zmix_error *err);

/* Writes every result whose earlier write failed. 0 when nothing is left unwritten. */
int task_cache_flush(task_cache *cache, zmix_error *err);

/* A summary of one cached task, for listings. */
typedef struct task_cache_info {
    char task[TASK_NAME_MAX + 1];
    char key[TASK_KEY_MAX + 1];
    uint64_t job_id;
    int64_t created_ms;
    zmix_score score;
    size_t bytes;               /* resident size of the full result */
    char model_fingerprint[72]; /* what it was made from (task_provenance); "" unknown */
    char experts_digest[72];
    int resident;  /* the full result is in memory */
    int persisted; /* the record on disk is this result */
} task_cache_info;

/* A cached task's α and summary, from memory only (never the disk: the daemon's loop calls
 * it, for warm starts). *alpha is malloc'd. ZMIX_ENOTFOUND when the task is not cached. */
int task_cache_alpha(task_cache *cache, const char *task, float **alpha, int *n_alpha,
                     task_cache_info *info, zmix_error *err);

/* All tasks, most recently used first: *out is malloc'd (free with free()). */
int task_cache_list(task_cache *cache, task_cache_info **out, size_t *n, zmix_error *err);

typedef struct task_cache_stats {
    size_t tasks;          /* known tasks (on disk or in memory) */
    size_t resident;       /* of which resident */
    size_t resident_bytes; /* accounted bytes of resident results */
    size_t memory_budget;
    uint64_t hits, misses; /* lookups by get / get_if_key / find_key */
    uint64_t loads;        /* results read back from disk after memory eviction */
    uint64_t evictions;    /* memory evictions (files kept) */
    uint64_t write_errors; /* failed disk writes */
    size_t unpersisted;    /* results in memory only, waiting for task_cache_flush */
} task_cache_stats;

void task_cache_get_stats(task_cache *cache, task_cache_stats *out);

/* Test-only: sets the fault budget (see task_cache_config); -1 disables. */
void task_cache_set_write_fault(task_cache *cache, long long bytes);

/* Writes the path of a task's safetensors file (whether or not it exists) into out. */
int task_cache_safetensors_path(const task_cache *cache, const char *task, char *out, size_t size,
                                zmix_error *err);

#endif
