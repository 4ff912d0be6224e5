/*
 * The task cache (see task_cache.h for the contract, docs/persistence.md for the formats).
 * Thread: any; two mutexes, below (callers in zmixd: libuv's threadpool, and the loop for
 * listings and stats, which never wait on the disk).
 *
 * Structure: an array of entries, one per known task, each with a summary (always) and the
 * full result (when resident). Lookups scan the array: a daemon caches hundreds to a few
 * thousand tasks, where a scan of short strings costs microseconds and an index would only
 * add invariants to keep. LRU is a use counter per entry; eviction picks the smallest.
 *
 * Locks: io_mu serialises every disk mutation (puts, flushes, evictions) and guards the
 * fault budget; mu guards the entries and counters and is held only for memory work. Order:
 * io_mu before mu. Every entry carries a version, bumped by each put, so that a thread which
 * dropped mu to write or read a file can tell, when it takes mu again, whether what it did
 * still applies to the entry it finds.
 */
#include "store/task_cache.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/task_record.h"
#include "util/record.h"

#define TASK_EXT ".zmt"
#define ST_EXT   ".safetensors"
#define TMP_EXT  ".tmp"

typedef struct tc_entry {
    task_cache_info info; /* summary, kept whether or not the result is resident */
    task_result *data;    /* the full result, or NULL when not resident */
    uint64_t version;     /* bumped by each put of this task */
    float *alpha;         /* the result's α, kept whether or not it is resident (warm starts) */
    int n_alpha;
    uint64_t last_use; /* LRU clock value of the last put or lookup */
} tc_entry;

struct task_cache {
    char dir[4096]; /* <cfg->dir>/tasks */
    size_t budget;
    size_t max_record;
    pthread_mutex_t io_mu; /* disk mutations, fault; taken before mu */
    pthread_mutex_t mu;    /* everything below */
    fs_fault fault;
    unsigned file_mode; /* of new files (task_cache_config) */
    int lock_fd;        /* holds <dir>/.lock: one process per cache directory */
    tc_entry **entries;
    size_t n, cap;
    uint64_t tick, next_version;
    size_t resident_bytes;
    uint64_t hits, misses, loads, evictions, write_errors;
};

/* ---- entries -------------------------------------------------------------------------- */

static tc_entry *entry_find(task_cache *c, const char *task)
{
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->entries[i]->info.task, task) == 0) return c->entries[i];
    return NULL;
}

static tc_entry *entry_add(task_cache *c, const char *task)
{
    if (c->n == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 16;
        tc_entry **grown = realloc(c->entries, cap * sizeof *grown);
        if (!grown) return NULL;
        c->entries = grown;
        c->cap = cap;
    }
    tc_entry *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    snprintf(e->info.task, sizeof e->info.task, "%s", task);
    c->entries[c->n++] = e;
    return e;
}

static void entry_drop_data(task_cache *c, tc_entry *e)
{
    if (!e->data) return;
    c->resident_bytes -= e->info.bytes;
    task_result_free(e->data);
    free(e->data);
    e->data = NULL;
    e->info.resident = 0;
}

static void entry_remove(task_cache *c, tc_entry *e)
{
    entry_drop_data(c, e);
    for (size_t i = 0; i < c->n; i++)
        if (c->entries[i] == e) {
            c->entries[i] = c->entries[--c->n];
            break;
        }
    free(e->alpha);
    free(e);
}

/* Makes data (heap-allocated, ownership taken) the resident result of e. */
static void entry_set_data(task_cache *c, tc_entry *e, task_result *data)
{
    entry_drop_data(c, e);
    e->data = data;
    snprintf(e->info.key, sizeof e->info.key, "%s", data->key);
    e->info.job_id = data->job_id;
    e->info.created_ms = data->created_ms;
    e->info.score = data->score;
    e->info.bytes = result_bytes(data);
    float *alpha = malloc((size_t)(data->n_alpha ? data->n_alpha : 1) * sizeof *alpha);
    if (alpha) { /* without memory, only warm starts from it are refused */
        memcpy(alpha, data->alpha, (size_t)data->n_alpha * sizeof *alpha);
        free(e->alpha);
        e->alpha = alpha;
        e->n_alpha = data->n_alpha;
    }
    task_provenance prov;
    task_result_provenance(data, &prov);
    memcpy(e->info.model_fingerprint, prov.model_fingerprint, sizeof prov.model_fingerprint);
    memcpy(e->info.experts_digest, prov.experts_digest, sizeof prov.experts_digest);
    e->info.resident = 1;
    c->resident_bytes += e->info.bytes;
}

/* Drops resident results, least recently used first, until the budget holds. Never drops
 * keep (the result being inserted or read) nor a result that exists only in memory. */
static void enforce_budget(task_cache *c, const tc_entry *keep)
{
    while (c->budget && c->resident_bytes > c->budget) {
        tc_entry *victim = NULL;
        for (size_t i = 0; i < c->n; i++) {
            tc_entry *e = c->entries[i];
            if (!e->data || e == keep || !e->info.persisted) continue;
            if (!victim || e->last_use < victim->last_use) victim = e;
        }
        if (!victim) return;
        entry_drop_data(c, victim);
        c->evictions++;
    }
}

/* ---- files ---------------------------------------------------------------------------- */

static int file_name(char *out, size_t size, const char *task, const char *ext)
{
    return snprintf(out, size, "%s%s", task, ext) < (int)size ? 0 : -1;
}

static int record_load(const task_cache *c, const char *task, task_result *out, uint32_t *crc,
                       zmix_error *err)
{
    char name[TASK_NAME_MAX + 16], path[4200];
    file_name(name, sizeof name, task, TASK_EXT);
    int rc = fs_join(path, sizeof path, c->dir, name, err);
    uint8_t *buf = NULL;
    size_t len = 0;
    if (rc == 0) rc = fs_read_file(path, c->max_record, &buf, &len, err);
    if (rc == 0) {
        rc = record_decode(buf, len, out, crc, err);
        if (rc == 0 && strcmp(out->task, task) != 0) {
            rc = zmix_error_set(err, ZMIX_EFORMAT, "record is for task \"%s\"", out->task);
            task_result_free(out);
        }
        if (rc) zmix_error_prefix(err, "%s", path);
    }
    free(buf);
    return rc;
}

/* Writes the safetensors file, then the record: the record is the commit point, and a
 * safetensors file that is newer than its record (the record write failed or the process
 * died in between) is found stale by its record_crc32c at the next open and rebuilt. */
static int files_write(task_cache *c, const task_result *r, zmix_error *err)
{
    rec_writer rec, st;
    uint32_t crc = 0;
    int rc = record_encode(r, &rec, &crc, err);
    if (rc) return rc;
    rc = safetensors_encode(r, crc, &st, err);
    if (rc) {
        recw_free(&rec);
        return rc;
    }
    char name[TASK_NAME_MAX + 16], path[4200];
    fs_write_opts opts = {.mode = c->file_mode, .fault = &c->fault};
    file_name(name, sizeof name, r->task, ST_EXT);
    fs_piece piece = {st.buf, st.len};
    rc = fs_join(path, sizeof path, c->dir, name, err);
    if (rc == 0) rc = fs_write_atomic(path, &piece, 1, &opts, err);
    if (rc == 0) {
        file_name(name, sizeof name, r->task, TASK_EXT);
        piece = (fs_piece){rec.buf, rec.len};
        rc = fs_join(path, sizeof path, c->dir, name, err);
        if (rc == 0) rc = fs_write_atomic(path, &piece, 1, &opts, err);
    }
    recw_free(&rec);
    recw_free(&st);
    return rc;
}

/* At open: rewrites the safetensors file when it is missing or differs from what the record
 * says it should be (stale, truncated, edited). */
static void safetensors_sync(task_cache *c, const task_result *r, uint32_t crc,
                             persist_problems *problems)
{
    zmix_error err;
    zmix_error_clear(&err);
    rec_writer st;
    if (safetensors_encode(r, crc, &st, &err)) {
        persist_problems_add(problems, &err);
        return;
    }
    char name[TASK_NAME_MAX + 16], path[4200];
    file_name(name, sizeof name, r->task, ST_EXT);
    uint8_t *have = NULL;
    size_t have_len = 0;
    int joined = fs_join(path, sizeof path, c->dir, name, &err) == 0;
    int same = joined && fs_read_file(path, st.len, &have, &have_len, NULL) == 0 &&
               have_len == st.len && memcmp(have, st.buf, st.len) == 0;
    free(have);
    if (!same) {
        fs_piece piece = {st.buf, st.len};
        fs_write_opts opts = {.mode = c->file_mode, .fault = &c->fault};
        if (!joined || fs_write_atomic(path, &piece, 1, &opts, &err) != 0) {
            zmix_error_prefix(&err, "task %s: rebuilding the safetensors file", r->task);
            persist_problems_add(problems, &err);
        }
    }
    recw_free(&st);
}

/* Loads one task record found at open into the index (a bad one is quarantined). */
static void load_found_record(task_cache *c, const char *file, persist_problems *problems)
{
    zmix_error e;
    zmix_error_clear(&e);
    char task[TASK_NAME_MAX + 1];
    size_t tn = strlen(file) - strlen(TASK_EXT);
    if (tn > TASK_NAME_MAX || tn == 0) return;
    memcpy(task, file, tn);
    task[tn] = '\0';
    if (task_name_check(task, &e) != 0) return;
    task_result *r = calloc(1, sizeof *r);
    uint32_t crc = 0;
    if (!r) return;
    if (record_load(c, task, r, &crc, &e) != 0) {
        free(r);
        fs_quarantine(c->dir, file, &e, problems);
        return;
    }
    safetensors_sync(c, r, crc, problems);
    tc_entry *en = entry_add(c, task);
    if (!en) {
        task_result_free(r);
        free(r);
        zmix_error_set(&e, ZMIX_ENOMEM, "task %s: no memory for its index entry", task);
        persist_problems_add(problems, &e);
        return;
    }
    entry_set_data(c, en, r);
    en->info.persisted = 1;
    en->version = ++c->next_version;
    /* Until something is used, the newest results count as the most recent. */
    en->last_use = (uint64_t)(r->created_ms > 0 ? r->created_ms : 0);
    if (en->last_use > c->tick) c->tick = en->last_use;
    enforce_budget(c, NULL); /* may drop r itself when it is the oldest */
}

/* A safetensors file without a valid record cannot be vouched for: removes it. Returns 1
 * when it was removed. */
static int drop_if_orphan(task_cache *c, const char *file)
{
    char task[TASK_NAME_MAX + 1];
    size_t tn = strlen(file) - strlen(ST_EXT);
    if (tn <= TASK_NAME_MAX) {
        memcpy(task, file, tn);
        task[tn] = '\0';
        if (entry_find(c, task)) return 0;
    }
    fs_remove(c->dir, file, NULL);
    return 1;
}

static int scan_directory(task_cache *c, persist_problems *problems, zmix_error *err)
{
    DIR *d = opendir(c->dir);
    if (!d) return zmix_error_set(err, ZMIX_EIO, "%s: opendir: %s", c->dir, strerror(errno));
    char **st_files = NULL;
    size_t n_st = 0;
    int dirty = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        const char *file = de->d_name;
        if (file[0] == '.') continue;
        if (fs_has_suffix(file, TMP_EXT)) {
            /* A write that never reached its rename: the old file, if any, is intact. */
            fs_remove(c->dir, file, NULL);
            dirty = 1;
        } else if (fs_has_suffix(file, ST_EXT)) {
            /* Judged once every record is loaded. */
            char **grown = realloc(st_files, (n_st + 1) * sizeof *grown);
            char *copy = strdup(file);
            if (grown) st_files = grown;
            if (grown && copy)
                st_files[n_st++] = copy;
            else
                free(copy);
        } else if (fs_has_suffix(file, TASK_EXT)) {
            load_found_record(c, file, problems);
        }
    }
    closedir(d);
    for (size_t i = 0; i < n_st; i++) {
        dirty |= drop_if_orphan(c, st_files[i]);
        free(st_files[i]);
    }
    free(st_files);
    if (dirty) fs_fsync_dir(c->dir, NULL);
    return 0;
}

/* ---- public API ----------------------------------------------------------------------- */

void task_cache_config_default(task_cache_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->fault_write_after_bytes = -1;
}

int task_cache_open(const task_cache_config *cfg, task_cache **out, persist_problems *problems,
                    zmix_error *err)
{
    *out = NULL;
    if (!cfg->dir || !cfg->dir[0])
        return zmix_error_set(err, ZMIX_EINVAL, "task cache: no directory given");
    task_cache *c = calloc(1, sizeof *c);
    if (!c) return zmix_error_set(err, ZMIX_ENOMEM, "task cache: out of memory");
    if (snprintf(c->dir, sizeof c->dir, "%s/tasks", cfg->dir) >= (int)sizeof c->dir) {
        free(c);
        return zmix_error_set(err, ZMIX_ELIMIT, "task cache: directory path too long");
    }
    c->budget = cfg->memory_budget;
    c->max_record = cfg->max_record_bytes ? cfg->max_record_bytes : (size_t)1 << 30;
    c->fault.write_budget = cfg->fault_write_after_bytes;
    c->file_mode = cfg->file_mode;
    c->lock_fd = -1;
    pthread_mutex_init(&c->io_mu, NULL);
    pthread_mutex_init(&c->mu, NULL);
    int rc = fs_mkdirs(c->dir, err);
    if (rc == 0) rc = fs_lock_dir(c->dir, &c->lock_fd, err);
    if (rc == 0) rc = scan_directory(c, problems, err);
    if (rc) {
        zmix_error_prefix(err, "task cache");
        task_cache_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

void task_cache_free(task_cache *c)
{
    if (!c) return;
    while (c->n) entry_remove(c, c->entries[c->n - 1]);
    free(c->entries);
    fs_unlock_dir(c->lock_fd);
    pthread_mutex_destroy(&c->mu);
    pthread_mutex_destroy(&c->io_mu);
    free(c);
}

int task_cache_put(task_cache *c, const task_result *r, zmix_error *err)
{
    int rc = result_check(r, err);
    if (rc) return rc;
    task_result *copy = malloc(sizeof *copy);
    if (!copy) return zmix_error_set(err, ZMIX_ENOMEM, "task %s: out of memory", r->task);
    rc = task_result_copy(r, copy, err);
    if (rc) {
        free(copy);
        return rc;
    }

    pthread_mutex_lock(&c->io_mu);
    pthread_mutex_lock(&c->mu);
    tc_entry *e = entry_find(c, r->task);
    if (!e) e = entry_add(c, r->task);
    if (!e) {
        pthread_mutex_unlock(&c->mu);
        pthread_mutex_unlock(&c->io_mu);
        task_result_free(copy);
        free(copy);
        return zmix_error_set(err, ZMIX_ENOMEM, "task %s: out of memory", r->task);
    }
    entry_set_data(c, e, copy);
    e->info.persisted = 0;
    e->version = ++c->next_version;
    e->last_use = ++c->tick;
    uint64_t version = e->version;
    enforce_budget(c, e);
    pthread_mutex_unlock(&c->mu);

    /* From here the result is served from memory whatever happens to the write. io_mu keeps
     * other writers of this directory out, so the files are ours until we release it. */
    rc = files_write(c, r, err);

    pthread_mutex_lock(&c->mu);
    e = entry_find(c, r->task);
    if (rc) c->write_errors++;
    if (rc == 0 && e && e->version == version) {
        e->info.persisted = 1;
        enforce_budget(c, e);
    }
    pthread_mutex_unlock(&c->mu);
    pthread_mutex_unlock(&c->io_mu);
    if (rc) zmix_error_prefix(err, "task %s: kept in memory only, not written to disk", r->task);
    return rc;
}

/* The lookup behind get, get_if_key and find_key: task selects by name (or NULL), key by
 * key (or NULL); among several matches the most recently used wins. */
static int lookup(task_cache *c, const char *task, const char *key, task_result *out,
                  zmix_error *err)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&c->mu);
    tc_entry *e = NULL;
    for (size_t i = 0; i < c->n; i++) {
        tc_entry *x = c->entries[i];
        if (task && strcmp(x->info.task, task) != 0) continue;
        if (key && strcmp(x->info.key, key) != 0) continue;
        if (!e || x->last_use > e->last_use) e = x;
    }
    if (!e) {
        c->misses++;
        pthread_mutex_unlock(&c->mu);
        if (task && key)
            return zmix_error_set(err, ZMIX_ENOTFOUND, "task %s: no cached result with key %s",
                                  task, key);
        if (task) return zmix_error_set(err, ZMIX_ENOTFOUND, "task %s: not cached", task);
        return zmix_error_set(err, ZMIX_ENOTFOUND, "no cached task has key %s", key);
    }
    char name[TASK_NAME_MAX + 1];
    memcpy(name, e->info.task, sizeof name);
    for (;;) {
        if (e->data) {
            int rc = task_result_copy(e->data, out, err);
            if (rc == 0) {
                e->last_use = ++c->tick;
                c->hits++;
            }
            pthread_mutex_unlock(&c->mu);
            return rc;
        }
        /* Not resident: read the file without holding the lock, then check that no put or
         * evict happened meanwhile before trusting what we read. */
        uint64_t version = e->version;
        pthread_mutex_unlock(&c->mu);
        task_result *r = calloc(1, sizeof *r);
        if (!r) return zmix_error_set(err, ZMIX_ENOMEM, "task %s: out of memory", name);
        zmix_error lerr;
        zmix_error_clear(&lerr);
        int rc = record_load(c, name, r, NULL, &lerr);
        pthread_mutex_lock(&c->mu);
        e = entry_find(c, name);
        if (!e) {
            if (rc == 0) task_result_free(r);
            free(r);
            c->misses++;
            pthread_mutex_unlock(&c->mu);
            return zmix_error_set(err, ZMIX_ENOTFOUND, "task %s: evicted during lookup", name);
        }
        if (e->version != version || e->data) { /* replaced meanwhile: serve the new one */
            if (rc == 0) task_result_free(r);
            free(r);
            continue;
        }
        if (rc) {
            /* Bit rot or tampering since open: never serve it, forget the task. */
            free(r);
            entry_remove(c, e);
            c->misses++;
            pthread_mutex_unlock(&c->mu);
            return zmix_error_set(err, lerr.code, "task %s: dropped from the cache: %s", name,
                                  lerr.msg);
        }
        if (key && strcmp(r->key, key) != 0) { /* file changed behind our back */
            task_result_free(r);
            free(r);
            c->misses++;
            pthread_mutex_unlock(&c->mu);
            return zmix_error_set(err, ZMIX_ENOTFOUND, "task %s: no cached result with key %s",
                                  name, key);
        }
        entry_set_data(c, e, r);
        c->loads++;
        enforce_budget(c, e);
    }
}

int task_cache_get(task_cache *c, const char *task, task_result *out, zmix_error *err)
{
    return lookup(c, task, NULL, out, err);
}

int task_cache_get_if_key(task_cache *c, const char *task, const char *key, task_result *out,
                          zmix_error *err)
{
    return lookup(c, task, key, out, err);
}

int task_cache_find_key(task_cache *c, const char *key, task_result *out, zmix_error *err)
{
    return lookup(c, NULL, key, out, err);
}

int task_cache_evict(task_cache *c, const char *task, zmix_error *err)
{
    int rc = task_name_check(task, err);
    if (rc) return rc;
    pthread_mutex_lock(&c->io_mu);
    pthread_mutex_lock(&c->mu);
    tc_entry *e = entry_find(c, task);
    int known = e != NULL;
    if (e) entry_remove(c, e);
    pthread_mutex_unlock(&c->mu);

    /* The files go even when the task is not in the index (a quarantined or unreadable
     * record), so that evict is also how a user clears a bad entry. */
    char name[TASK_NAME_MAX + 16], path[4200];
    int existed = 0;
    const char *exts[] = {TASK_EXT, ST_EXT};
    for (int i = 0; i < 2 && rc == 0; i++) {
        file_name(name, sizeof name, task, exts[i]);
        rc = fs_join(path, sizeof path, c->dir, name, err);
        if (rc == 0 && access(path, F_OK) == 0) existed = 1;
        if (rc == 0) rc = fs_remove(c->dir, name, err);
    }
    if (rc == 0 && existed) rc = fs_fsync_dir(c->dir, err);
    pthread_mutex_unlock(&c->io_mu);
    if (rc) {
        zmix_error_prefix(err, "task %s: evict", task);
        return rc;
    }
    if (!known && !existed) return zmix_error_set(err, ZMIX_ENOTFOUND, "task %s: not cached", task);
    return 0;
}

int task_cache_flush(task_cache *c, zmix_error *err)
{
    pthread_mutex_lock(&c->io_mu);
    int rc = 0;
    for (;;) {
        pthread_mutex_lock(&c->mu);
        tc_entry *e = NULL;
        for (size_t i = 0; i < c->n && !e; i++)
            if (!c->entries[i]->info.persisted && c->entries[i]->data) e = c->entries[i];
        if (!e) {
            pthread_mutex_unlock(&c->mu);
            break;
        }
        /* A copy, so the write runs without mu; io_mu keeps puts and evicts out meanwhile,
         * so the entry cannot change under us. */
        task_result copy;
        rc = task_result_copy(e->data, &copy, err);
        pthread_mutex_unlock(&c->mu);
        if (rc) break;
        rc = files_write(c, &copy, err);
        pthread_mutex_lock(&c->mu);
        if (rc) c->write_errors++;
        e = entry_find(c, copy.task);
        if (rc == 0 && e) {
            e->info.persisted = 1;
            enforce_budget(c, NULL);
        }
        pthread_mutex_unlock(&c->mu);
        if (rc) zmix_error_prefix(err, "task %s: flush", copy.task);
        task_result_free(&copy);
        if (rc) break;
    }
    pthread_mutex_unlock(&c->io_mu);
    return rc;
}

static int info_by_recency(const void *a, const void *b)
{
    const tc_entry *x = *(const tc_entry *const *)a, *y = *(const tc_entry *const *)b;
    return x->last_use < y->last_use ? 1 : x->last_use > y->last_use ? -1 : 0;
}

int task_cache_list(task_cache *c, task_cache_info **out, size_t *n, zmix_error *err)
{
    pthread_mutex_lock(&c->mu);
    tc_entry **order = malloc((c->n ? c->n : 1) * sizeof *order);
    task_cache_info *infos = malloc((c->n ? c->n : 1) * sizeof *infos);
    if (!order || !infos) {
        pthread_mutex_unlock(&c->mu);
        free(order);
        free(infos);
        return zmix_error_set(err, ZMIX_ENOMEM, "task cache: cannot list %zu tasks", c->n);
    }
    if (c->n) memcpy(order, c->entries, c->n * sizeof *order); /* entries is NULL when empty */
    qsort(order, c->n, sizeof *order, info_by_recency);
    for (size_t i = 0; i < c->n; i++) infos[i] = order[i]->info;
    *n = c->n;
    pthread_mutex_unlock(&c->mu);
    free(order);
    *out = infos;
    return 0;
}

void task_cache_get_stats(task_cache *c, task_cache_stats *s)
{
    memset(s, 0, sizeof *s);
    pthread_mutex_lock(&c->mu);
    s->tasks = c->n;
    for (size_t i = 0; i < c->n; i++) {
        s->resident += c->entries[i]->data != NULL;
        s->unpersisted += !c->entries[i]->info.persisted;
    }
    s->resident_bytes = c->resident_bytes;
    s->memory_budget = c->budget;
    s->hits = c->hits;
    s->misses = c->misses;
    s->loads = c->loads;
    s->evictions = c->evictions;
    s->write_errors = c->write_errors;
    pthread_mutex_unlock(&c->mu);
}

void task_cache_set_write_fault(task_cache *c, long long bytes)
{
    pthread_mutex_lock(&c->io_mu);
    c->fault.write_budget = bytes;
    pthread_mutex_unlock(&c->io_mu);
}

int task_cache_safetensors_path(const task_cache *c, const char *task, char *out, size_t size,
                                zmix_error *err)
{
    int rc = task_name_check(task, err);
    if (rc) return rc;
    char name[TASK_NAME_MAX + 16];
    file_name(name, sizeof name, task, ST_EXT);
    return fs_join(out, size, c->dir, name, err);
}

int task_cache_alpha(task_cache *c, const char *task, float **alpha, int *n_alpha,
                     task_cache_info *info, zmix_error *err)
{
    *alpha = NULL;
    *n_alpha = 0;
    pthread_mutex_lock(&c->mu);
    tc_entry *e = entry_find(c, task);
    int rc = 0;
    if (!e)
        rc = zmix_error_set(err, ZMIX_ENOTFOUND, "task %s: not cached", task);
    else if (!e->alpha)
        rc = zmix_error_set(err, ZMIX_ENOMEM, "task %s: its alpha is not in memory", task);
    else if (!(*alpha = malloc((size_t)(e->n_alpha ? e->n_alpha : 1) * sizeof **alpha)))
        rc = zmix_error_set(err, ZMIX_ENOMEM, "task %s: out of memory", task);
    if (!rc) {
        memcpy(*alpha, e->alpha, (size_t)e->n_alpha * sizeof **alpha);
        *n_alpha = e->n_alpha;
        if (info) *info = e->info;
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}
