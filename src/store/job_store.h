/*
 * The job store: makes accepted jobs durable. A job's record (id, task, examples, settings,
 * priority, times, state) is on disk, fsync'ed, before its submit is acknowledged; its CEM
 * checkpoint (the opaque zmix_cem_save bytes) is rewritten after every generation. After a
 * crash or restart, job_store_open hands back every unfinished job with its latest valid
 * checkpoint so the daemon resumes it under the same id; finished, failed and cancelled jobs
 * are handed back for status queries only, and kept until the retention limit drops them.
 *
 * On disk, under <dir>/jobs/ (format byte by byte in docs/persistence.md):
 *   next_id                    the next job id to hand out (ids are never reused)
 *   <id:020>.job               the job record, rewritten atomically on every state change
 *   <id:020>.ckpt0, .ckpt1     checkpoints: generation g goes to slot g % 2, so the one
 *                              before the latest is always whole on disk as a fallback
 * Every file carries a CRC-32C over all its bytes and is written by fs_write_atomic. A file
 * that fails its check is reported and renamed to <file>.corrupt.
 *
 * Why rewrite-and-rename rather than an append-only log: only the latest checkpoint matters,
 * it is small (distribution, best, history, random-stream position), and a replaced file
 * needs no compaction, no log replay and no truncation of a torn tail — the rename is the
 * commit. The price, two fsyncs per generation, is nothing next to scoring a generation.
 *
 * Thread safety: one mutex per store; every function may be called from any thread. Disk
 * writes happen under the mutex (they are small and rare: submit, state change, once per
 * generation), so call the store from worker threads, not from the event loop.
 */
#ifndef ZMIX_STORE_JOB_STORE_H
#define ZMIX_STORE_JOB_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "zmix/common.h"
#include "zmix/model.h" /* zmix_example(s): header only, no link dependency */
#include "util/file.h"
#include "store/task_cache.h" /* TASK_NAME_MAX, TASK_KEY_MAX */

typedef enum job_state {
    JOB_QUEUED = 0,
    JOB_RUNNING = 1,
    JOB_DONE = 2,
    JOB_FAILED = 3,
    JOB_CANCELLED = 4
} job_state;

const char *job_state_name(job_state s); /* "queued", "running", "done", "failed", "cancelled" */
int job_state_finished(job_state s);     /* done, failed or cancelled */

#define JOB_REASON_MAX 256

/* A job's durable record. From job_store_create the caller passes it with borrowed pointers
 * (examples.items may point anywhere; examples.tokens is ignored). A record the store returns
 * owns examples.items, examples.tokens (items point into tokens) and settings; free it with
 * job_record_free. */
typedef struct job_record {
    uint64_t id; /* assigned by job_store_create */
    char task[TASK_NAME_MAX + 1];
    char key[TASK_KEY_MAX + 1]; /* cache key of the inputs ("" if none) */
    int32_t priority;
    job_state state;
    int64_t submit_ms, start_ms, end_ms; /* wall-clock ms since the epoch; 0 = not yet */
    char reason[JOB_REASON_MAX];         /* failure reason or stop reason; "" if none */
    zmix_examples examples;              /* the few-shot set as token ids */
    uint8_t *settings;                   /* opaque: the core's encoding of every setting */
    size_t settings_len;
    uint8_t *result; /* opaque: the final result document of a finished job, or NULL */
    size_t result_len;
} job_record;

void job_record_free(job_record *r); /* NULL ok; zeroes r */

/* Decodes the bytes of a job record file (<id>.job) into *out (caller frees). Every check
 * the loader makes, exposed for tests and fuzzers: ZMIX_EFORMAT for anything but a whole,
 * valid record. */
int job_record_parse(const uint8_t *buf, size_t len, job_record *out, zmix_error *err);

/* A job found at open. For unfinished jobs, checkpoint is the latest valid one (NULL and
 * generation -1 when there is none: restart the job from scratch). */
typedef struct job_recovered {
    job_record record;
    uint8_t *checkpoint; /* zmix_cem_save bytes, owned; free with free() */
    size_t checkpoint_len;
    int generation; /* the generation stored with the checkpoint */
} job_recovered;

void job_recovered_free(job_recovered *list, size_t n); /* frees the entries and the array */

typedef struct job_store_config {
    const char *dir;         /* state directory; jobs live in <dir>/jobs/ (created 0700) */
    size_t retain_finished;  /* finished records kept (oldest end time dropped first);
                                0: 1000 */
    size_t max_record_bytes; /* larger files are refused at load; 0: 256 MiB */
    unsigned file_mode;      /* permission bits of new files; 0: 0600 (group-readable: 0640) */
    long long fault_write_after_bytes; /* test-only, as in task_cache_config; -1 disables */
} job_store_config;

void job_store_config_default(job_store_config *cfg);

typedef struct job_store job_store;

/* Opens (creating if needed) the store: deletes stale *.tmp files, loads every job record
 * (a corrupt one is appended to problems and skipped), applies the retention limit, and
 * returns in *recovered (n_recovered entries, caller frees with job_recovered_free) every
 * loaded job, ascending id: unfinished ones with their checkpoint, finished ones without.
 * The next id is past every id ever handed out, even if its record was dropped.
 * ZMIX_ESTATE when another process has the directory open (lock on <dir>/jobs/.lock). */
int job_store_open(const job_store_config *cfg, job_store **out, job_recovered **recovered,
                   size_t *n_recovered, persist_problems *problems, zmix_error *err);
void job_store_free(job_store *store);

/* Assigns the next id to rec->id, sets state = JOB_QUEUED, and writes the record durably
 * (the id counter first, then the record). Returns 0 only once both are on disk; on error no
 * job exists (the id may be skipped, never reused). Acknowledge the submit after this. */
int job_store_create(job_store *store, job_record *rec, zmix_error *err);

/* Records a state change (and the time: start_ms when entering running, end_ms when
 * finishing) durably. reason may be NULL. Finishing a job removes its checkpoints and
 * applies the retention limit. ZMIX_ESTATE for a change out of a finished state;
 * ZMIX_ENOTFOUND for an unknown id. */
int job_store_set_state(job_store *store, uint64_t id, job_state state, const char *reason,
                        int64_t now_ms, zmix_error *err);

/* The same, storing with the record the bytes a finished job leaves behind (the daemon's
 * result document: final status and history), so that they survive restarts. */
int job_store_finish(job_store *store, uint64_t id, job_state state, const char *reason,
                     int64_t now_ms, const uint8_t *result, size_t result_len, zmix_error *err);

/* Durably stores these bytes as the job's latest checkpoint (generation = completed
 * generations they describe; a checkpoint of a later generation from an abandoned run is
 * discarded). ZMIX_ESTATE when the job is finished. */
int job_store_checkpoint(job_store *store, uint64_t id, int generation, const uint8_t *data,
                         size_t len, zmix_error *err);

/* Reads back a job's record (copy, caller frees). ZMIX_ENOTFOUND when unknown or dropped. */
int job_store_get(job_store *store, uint64_t id, job_record *out, zmix_error *err);

/* Reads back the latest valid checkpoint (caller frees *data). ZMIX_ENOTFOUND when none. */
int job_store_load_checkpoint(job_store *store, uint64_t id, uint8_t **data, size_t *len,
                              int *generation, zmix_error *err);

/* Deletes a finished job's files now (e.g. when the client has read its result). */
int job_store_remove(job_store *store, uint64_t id, zmix_error *err);

uint64_t job_store_next_id(job_store *store); /* the id the next create will assign */
size_t job_store_count(job_store *store);     /* records on disk */

/* Test-only: sets the fault budget; -1 disables. */
void job_store_set_write_fault(job_store *store, long long bytes);

#endif
