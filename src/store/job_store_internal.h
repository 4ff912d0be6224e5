/*
 * Inside src/store: the job store's state and the file helpers its parts share (job_store.c:
 * the operations; job_store_open.c: finding what is on disk at open). Callers hold
 * store->mu, except during open.
 */
#ifndef ZMIX_STORE_JOB_STORE_INTERNAL_H
#define ZMIX_STORE_JOB_STORE_INTERNAL_H

#include <pthread.h>

#include "store/job_store.h"
#include "util/record.h"

#define CKPT_MAGIC   "ZMIXCKPT"
#define NEXTID_MAGIC "ZMIXNXID"
#define FORMAT_V1    1
#define NEXTID_FILE  "next_id"
#define JOB_EXT      ".job"
#define TMP_EXT      ".tmp"
#define ID_DIGITS    20

typedef struct js_entry {
    uint64_t id;
    job_state state;
    int64_t end_ms;
    int slot_gen[2]; /* generation held by each checkpoint slot; -1: none or unreadable */
    int has_record;  /* a valid record exists (always, except while open scans) */
} js_entry;

struct job_store {
    char dir[4096]; /* <cfg->dir>/jobs */
    size_t retain;
    size_t max_record;
    pthread_mutex_t mu; /* everything, including the disk writes */
    fs_fault fault;
    unsigned file_mode; /* of new files (job_store_config) */
    int lock_fd;        /* holds <dir>/.lock: one process per job directory */
    js_entry *entries;  /* ascending id */
    size_t n, cap;
    uint64_t next_id;
};

void js_job_file(char *out, size_t size, uint64_t id);
void js_ckpt_file(char *out, size_t size, uint64_t id, int slot);
int js_parse_id_name(const char *name, const char *suffix, uint64_t *id);
js_entry *js_entry_find(job_store *s, uint64_t id);
js_entry *js_entry_insert(job_store *s, uint64_t id);
void js_entry_erase(job_store *s, js_entry *e);
int js_write_file(job_store *s, const char *name, const rec_writer *w, zmix_error *err);
int js_read_verified(job_store *s, const char *name, uint8_t **buf, size_t *len, zmix_error *err);
int js_job_read(job_store *s, uint64_t id, job_record *out, zmix_error *err);
int js_job_write(job_store *s, const job_record *r, zmix_error *err);
int js_ckpt_read(job_store *s, uint64_t id, int slot, uint8_t **data, size_t *len, int *gen,
                 zmix_error *err);
int js_ckpt_best(job_store *s, js_entry *e, uint8_t **data, size_t *len, int *gen, zmix_error *err);
int js_ckpt_remove_all(job_store *s, js_entry *e, zmix_error *err);
int js_next_id_write(job_store *s, uint64_t next, zmix_error *err);
int js_job_delete_files(job_store *s, js_entry *e, zmix_error *err);
void js_apply_retention(job_store *s);

#endif
