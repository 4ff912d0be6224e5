/*
 * The job store (see job_store.h for the contract, docs/persistence.md for the formats).
 *
 * Memory holds only an index (id, state, end time, which checkpoint slot holds which
 * generation); records are read back from disk when needed, because after a submit is
 * acknowledged the daemon's job registry is the in-memory copy and this store is only the
 * durable one.
 *
 * Checkpoints alternate between two slots, <id>.ckpt0 and <id>.ckpt1 (generation g goes to
 * slot g % 2), each replaced atomically. So while generation g is being written, generation
 * g - 1 sits complete in the other slot: a crash, or a checkpoint that later fails its CRC,
 * costs at most one generation, never the whole run, and no step needs more than one rename.
 */
#include "store/job_store.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/record.h"

#define JOB_MAGIC    "ZMIXJOBR"
#define CKPT_MAGIC   "ZMIXCKPT"
#define NEXTID_MAGIC "ZMIXNXID"
#define FORMAT_V1    1
#define JOB_FORMAT   2 /* v2 appends the final result document */
#define NEXTID_FILE  "next_id"
#define JOB_EXT      ".job"
#define TMP_EXT      ".tmp"
#define CORRUPT_EXT  ".corrupt"
#define ID_DIGITS    20
#define MAX_EXAMPLES (1 << 20)

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
    int lock_fd;       /* holds <dir>/.lock: one process per job directory */
    js_entry *entries; /* ascending id */
    size_t n, cap;
    uint64_t next_id;
};

const char *job_state_name(job_state s)
{
    switch (s) {
    case JOB_QUEUED: return "queued";
    case JOB_RUNNING: return "running";
    case JOB_DONE: return "done";
    case JOB_FAILED: return "failed";
    case JOB_CANCELLED: return "cancelled";
    default: return "unknown";
    }
}

int job_state_finished(job_state s)
{
    return s == JOB_DONE || s == JOB_FAILED || s == JOB_CANCELLED;
}

void job_record_free(job_record *r)
{
    if (!r) return;
    free(r->examples.items);
    free(r->examples.tokens);
    free(r->settings);
    free(r->result);
    memset(r, 0, sizeof *r);
}

void job_recovered_free(job_recovered *list, size_t n)
{
    if (!list) return;
    for (size_t i = 0; i < n; i++) {
        job_record_free(&list[i].record);
        free(list[i].checkpoint);
    }
    free(list);
}

void job_store_config_default(job_store_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->fault_write_after_bytes = -1;
}

/* ---- names ---------------------------------------------------------------------------- */

static void job_file(char *out, size_t size, uint64_t id)
{
    snprintf(out, size, "%020" PRIu64 JOB_EXT, id);
}

static void ckpt_file(char *out, size_t size, uint64_t id, int slot)
{
    snprintf(out, size, "%020" PRIu64 ".ckpt%d", id, slot);
}

/* Parses "<20 digits><suffix>" into *id; 0 when name has another shape. */
static int parse_id_name(const char *name, const char *suffix, uint64_t *id)
{
    if (strlen(name) != ID_DIGITS + strlen(suffix) || strcmp(name + ID_DIGITS, suffix) != 0)
        return 0;
    uint64_t v = 0;
    for (int i = 0; i < ID_DIGITS; i++) {
        if (name[i] < '0' || name[i] > '9') return 0;
        uint64_t d = (uint64_t)(name[i] - '0');
        if (v > (UINT64_MAX - d) / 10) return 0;
        v = v * 10 + d;
    }
    *id = v;
    return 1;
}

static js_entry *entry_find(job_store *s, uint64_t id)
{
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->entries[mid].id == id) return &s->entries[mid];
        if (s->entries[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* Inserts keeping ascending order (ids arrive in order at create; at open in any order). */
static js_entry *entry_insert(job_store *s, uint64_t id)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 64;
        js_entry *grown = realloc(s->entries, cap * sizeof *grown);
        if (!grown) return NULL;
        s->entries = grown;
        s->cap = cap;
    }
    size_t at = s->n;
    while (at > 0 && s->entries[at - 1].id > id) at--;
    memmove(&s->entries[at + 1], &s->entries[at], (s->n - at) * sizeof *s->entries);
    s->n++;
    js_entry *e = &s->entries[at];
    memset(e, 0, sizeof *e);
    e->id = id;
    e->slot_gen[0] = e->slot_gen[1] = -1;
    return e;
}

static void entry_erase(job_store *s, js_entry *e)
{
    size_t at = (size_t)(e - s->entries);
    memmove(&s->entries[at], &s->entries[at + 1], (s->n - at - 1) * sizeof *s->entries);
    s->n--;
}

/* ---- encoding ------------------------------------------------------------------------- */

static int job_encode(const job_record *r, rec_writer *w, zmix_error *err)
{
    recw_begin(w, JOB_MAGIC, JOB_FORMAT);
    recw_u64(w, r->id);
    recw_str16(w, r->task);
    recw_str16(w, r->key);
    recw_u32(w, (uint32_t)r->priority);
    recw_u32(w, (uint32_t)r->state);
    recw_i64(w, r->submit_ms);
    recw_i64(w, r->start_ms);
    recw_i64(w, r->end_ms);
    recw_str16(w, r->reason);
    recw_u32(w, (uint32_t)r->examples.n);
    for (int i = 0; i < r->examples.n; i++) {
        recw_u32(w, (uint32_t)r->examples.items[i].n_prompt);
        recw_u32(w, (uint32_t)r->examples.items[i].n_target);
    }
    for (int i = 0; i < r->examples.n; i++) {
        const zmix_example *x = &r->examples.items[i];
        for (int t = 0; t < x->n_prompt; t++) recw_u32(w, (uint32_t)x->prompt[t]);
        for (int t = 0; t < x->n_target; t++) recw_u32(w, (uint32_t)x->target[t]);
    }
    recw_blob32(w, r->settings, r->settings_len);
    recw_blob32(w, r->result, r->result_len);
    int rc = recw_finish(w, NULL, err);
    if (rc) recw_free(w);
    return rc;
}

static int job_decode(const uint8_t *buf, size_t len, job_record *out, zmix_error *err)
{
    memset(out, 0, sizeof *out);
    rec_reader rd;
    uint32_t version;
    int rc = rec_open(buf, len, JOB_MAGIC, JOB_FORMAT, &version, &rd, err);
    if (rc) return rc;
    out->id = recr_u64(&rd);
    recr_str16(&rd, out->task, sizeof out->task);
    recr_str16(&rd, out->key, sizeof out->key);
    out->priority = (int32_t)recr_u32(&rd);
    uint32_t state = recr_u32(&rd);
    out->submit_ms = recr_i64(&rd);
    out->start_ms = recr_i64(&rd);
    out->end_ms = recr_i64(&rd);
    recr_str16(&rd, out->reason, sizeof out->reason);
    uint32_t n = recr_u32(&rd);
    if (rd.failed || state > JOB_CANCELLED || n > MAX_EXAMPLES || n > (rd.len - rd.pos) / 8)
        return zmix_error_set(err, ZMIX_EFORMAT, "job record: bad state or example count");
    out->state = (job_state)state;
    out->examples.n = (int)n;
    out->examples.items = malloc((n ? n : 1) * sizeof *out->examples.items);
    if (!out->examples.items) goto nomem;
    uint64_t total = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t np = recr_u32(&rd), nt = recr_u32(&rd);
        if (np > INT32_MAX || nt > INT32_MAX) rd.failed = 1;
        out->examples.items[i].n_prompt = (int)np;
        out->examples.items[i].n_target = (int)nt;
        total += (uint64_t)np + nt;
    }
    if (rd.failed || total > (rd.len - rd.pos) / 4) {
        job_record_free(out);
        return zmix_error_set(err, ZMIX_EFORMAT, "job record: token counts run past the end");
    }
    out->examples.n_tokens = (size_t)total;
    out->examples.tokens = malloc((total ? total : 1) * sizeof *out->examples.tokens);
    if (!out->examples.tokens) goto nomem;
    size_t at = 0;
    for (uint32_t i = 0; i < n; i++) {
        zmix_example *x = &out->examples.items[i];
        x->prompt = out->examples.tokens + at;
        for (int t = 0; t < x->n_prompt; t++) out->examples.tokens[at++] = (int32_t)recr_u32(&rd);
        x->target = out->examples.tokens + at;
        for (int t = 0; t < x->n_target; t++) out->examples.tokens[at++] = (int32_t)recr_u32(&rd);
    }
    size_t slen;
    const uint8_t *settings = recr_blob32(&rd, &slen);
    out->settings = malloc(slen ? slen : 1);
    if (!out->settings) goto nomem;
    if (slen) memcpy(out->settings, settings, slen);
    out->settings_len = slen;
    if (version >= 2) {
        size_t rlen;
        const uint8_t *result = recr_blob32(&rd, &rlen);
        if (rlen) {
            if (!(out->result = malloc(rlen))) goto nomem;
            memcpy(out->result, result, rlen);
            out->result_len = rlen;
        }
    }
    rc = recr_end(&rd, "job record", err);
    zmix_error name_err;
    if (rc == 0 && task_name_check(out->task, &name_err) != 0)
        rc = zmix_error_set(err, ZMIX_EFORMAT, "job record: %s", name_err.msg);
    if (rc) job_record_free(out);
    return rc;
nomem:
    job_record_free(out);
    return zmix_error_set(err, ZMIX_ENOMEM, "job record: cannot allocate the examples");
}

int job_record_parse(const uint8_t *buf, size_t len, job_record *out, zmix_error *err)
{
    return job_decode(buf, len, out, err);
}

/* ---- files ---------------------------------------------------------------------------- */

static int write_file(job_store *s, const char *name, const rec_writer *w, zmix_error *err)
{
    char path[4200];
    int rc = fs_join(path, sizeof path, s->dir, name, err);
    fs_piece piece = {w->buf, w->len};
    fs_write_opts opts = {.mode = 0600, .fault = &s->fault};
    return rc ? rc : fs_write_atomic(path, &piece, 1, &opts, err);
}

static int read_verified(job_store *s, const char *name, uint8_t **buf, size_t *len,
                         zmix_error *err)
{
    char path[4200];
    int rc = fs_join(path, sizeof path, s->dir, name, err);
    if (rc == 0) rc = fs_read_file(path, s->max_record, buf, len, err);
    return rc;
}

static int job_read(job_store *s, uint64_t id, job_record *out, zmix_error *err)
{
    char name[64];
    job_file(name, sizeof name, id);
    uint8_t *buf;
    size_t len;
    int rc = read_verified(s, name, &buf, &len, err);
    if (rc) return rc;
    rc = job_decode(buf, len, out, err);
    free(buf);
    if (rc == 0 && out->id != id) {
        rc = zmix_error_set(err, ZMIX_EFORMAT, "record holds job %" PRIu64, out->id);
        job_record_free(out);
    }
    if (rc) zmix_error_prefix(err, "%s/%s", s->dir, name);
    return rc;
}

static int job_write(job_store *s, const job_record *r, zmix_error *err)
{
    rec_writer w;
    int rc = job_encode(r, &w, err);
    if (rc) return rc;
    char name[64];
    job_file(name, sizeof name, r->id);
    rc = write_file(s, name, &w, err);
    recw_free(&w);
    return rc;
}

/* Reads one checkpoint slot. data may be NULL to only learn the generation. */
static int ckpt_read(job_store *s, uint64_t id, int slot, uint8_t **data, size_t *len, int *gen,
                     zmix_error *err)
{
    char name[64];
    ckpt_file(name, sizeof name, id, slot);
    uint8_t *buf;
    size_t blen;
    int rc = read_verified(s, name, &buf, &blen, err);
    if (rc) return rc;
    rec_reader rd;
    rc = rec_open(buf, blen, CKPT_MAGIC, FORMAT_V1, NULL, &rd, err);
    if (rc == 0) {
        uint64_t rid = recr_u64(&rd);
        uint32_t g = recr_u32(&rd);
        size_t dlen;
        const uint8_t *d = recr_blob32(&rd, &dlen);
        rc = recr_end(&rd, "checkpoint", err);
        if (rc == 0 && (rid != id || g > INT32_MAX))
            rc = zmix_error_set(err, ZMIX_EFORMAT, "checkpoint holds job %" PRIu64 " generation %u",
                                rid, g);
        if (rc == 0) {
            *gen = (int)g;
            if (data) {
                *data = malloc(dlen ? dlen : 1);
                if (!*data)
                    rc = zmix_error_set(err, ZMIX_ENOMEM, "checkpoint of %zu bytes", dlen);
                else if (dlen)
                    memcpy(*data, d, dlen);
                if (len) *len = dlen;
            }
        }
    }
    free(buf);
    if (rc) zmix_error_prefix(err, "%s/%s", s->dir, name);
    return rc;
}

/* The better of the two slots: the valid one with the higher generation. */
static int ckpt_best(job_store *s, js_entry *e, uint8_t **data, size_t *len, int *gen,
                     zmix_error *err)
{
    int order[2] = {0, 1};
    if (e->slot_gen[1] > e->slot_gen[0]) order[0] = 1, order[1] = 0;
    for (int i = 0; i < 2; i++) {
        int slot = order[i];
        if (e->slot_gen[slot] < 0) continue;
        zmix_error ignored;
        int g;
        if (ckpt_read(s, e->id, slot, data, len, &g, &ignored) == 0) {
            *gen = g;
            return 0;
        }
        e->slot_gen[slot] = -1; /* went bad since open: never offer it again */
    }
    return zmix_error_set(err, ZMIX_ENOTFOUND, "job %" PRIu64 ": no valid checkpoint", e->id);
}

static int ckpt_remove_all(job_store *s, js_entry *e, zmix_error *err)
{
    char name[64];
    int rc = 0;
    for (int slot = 0; slot < 2 && rc == 0; slot++) {
        ckpt_file(name, sizeof name, e->id, slot);
        rc = fs_remove(s->dir, name, err);
        e->slot_gen[slot] = -1;
    }
    return rc;
}

static int next_id_write(job_store *s, uint64_t next, zmix_error *err)
{
    rec_writer w;
    recw_begin(&w, NEXTID_MAGIC, FORMAT_V1);
    recw_u64(&w, next);
    int rc = recw_finish(&w, NULL, err);
    if (rc == 0) rc = write_file(s, NEXTID_FILE, &w, err);
    recw_free(&w);
    return rc;
}

/* Deletes a job's files (record last, so a crash midway leaves a record whose missing
 * checkpoints only mean "restart from scratch" or nothing at all for a finished job). */
static int job_delete_files(job_store *s, js_entry *e, zmix_error *err)
{
    int rc = ckpt_remove_all(s, e, err);
    char name[64];
    job_file(name, sizeof name, e->id);
    if (rc == 0) rc = fs_remove(s->dir, name, err);
    return rc;
}

/* Keeps at most s->retain finished records, dropping the oldest-ended first. */
static void apply_retention(job_store *s)
{
    int removed = 0;
    for (;;) {
        size_t finished = 0;
        js_entry *oldest = NULL;
        for (size_t i = 0; i < s->n; i++) {
            js_entry *e = &s->entries[i];
            if (!job_state_finished(e->state)) continue;
            finished++;
            if (!oldest || e->end_ms < oldest->end_ms) oldest = e;
        }
        if (finished <= s->retain || !oldest) break;
        if (job_delete_files(s, oldest, NULL) != 0) break;
        entry_erase(s, oldest);
        removed = 1;
    }
    if (removed) fs_fsync_dir(s->dir, NULL);
}

/* ---- open ----------------------------------------------------------------------------- */

static void quarantine(job_store *s, const char *file, zmix_error *why, persist_problems *problems)
{
    char from[4200], to[4300];
    snprintf(from, sizeof from, "%s/%s", s->dir, file);
    snprintf(to, sizeof to, "%s%s", from, CORRUPT_EXT);
    if (rename(from, to) == 0)
        zmix_error_prefix(why, "skipped (moved to %s%s)", file, CORRUPT_EXT);
    else
        zmix_error_prefix(why, "skipped");
    persist_problems_add(problems, why);
}

static int has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static int scan(job_store *s, persist_problems *problems, zmix_error *err)
{
    uint64_t max_seen = 0;
    int any_seen = 0;
    zmix_error e;

    /* The counter first: ids are never reused even after retention dropped their records. */
    uint8_t *buf;
    size_t len;
    zmix_error_clear(&e);
    int rc = read_verified(s, NEXTID_FILE, &buf, &len, &e);
    if (rc == 0) {
        rec_reader rd;
        rc = rec_open(buf, len, NEXTID_MAGIC, FORMAT_V1, NULL, &rd, &e);
        if (rc == 0) {
            s->next_id = recr_u64(&rd);
            rc = recr_end(&rd, "next_id", &e);
        }
        free(buf);
        if (rc) {
            zmix_error_prefix(&e,
                              "%s/%s: id counter unreadable, continuing past the largest id "
                              "on disk",
                              s->dir, NEXTID_FILE);
            persist_problems_add(problems, &e);
        }
    } else if (rc != ZMIX_ENOTFOUND) {
        persist_problems_add(problems, &e);
    }

    DIR *d = opendir(s->dir);
    if (!d) return zmix_error_set(err, ZMIX_EIO, "%s: opendir: %s", s->dir, strerror(errno));
    struct dirent *de;
    int dirty = 0;
    while ((de = readdir(d)) != NULL) {
        const char *file = de->d_name;
        uint64_t id;
        zmix_error_clear(&e);
        if (file[0] == '.') continue;
        if (has_suffix(file, TMP_EXT)) {
            fs_remove(s->dir, file, NULL); /* a write that never reached its rename */
            dirty = 1;
            continue;
        }
        int slot = -1;
        if (parse_id_name(file, ".ckpt0", &id))
            slot = 0;
        else if (parse_id_name(file, ".ckpt1", &id))
            slot = 1;
        else if (!parse_id_name(file, JOB_EXT, &id))
            continue;
        /* Any id seen on disk, even in a bad file, is used up. */
        if (!any_seen || id > max_seen) max_seen = id;
        any_seen = 1;
        js_entry *en = entry_find(s, id);
        if (!en) en = entry_insert(s, id);
        if (!en) return zmix_error_set(err, ZMIX_ENOMEM, "job store: index of %zu jobs", s->n);
        if (slot >= 0) {
            int g;
            if (ckpt_read(s, id, slot, NULL, NULL, &g, &e) == 0)
                en->slot_gen[slot] = g;
            else
                quarantine(s, file, &e, problems);
            continue;
        }
        job_record r;
        if (job_read(s, id, &r, &e) != 0) {
            quarantine(s, file, &e, problems);
            continue;
        }
        en->has_record = 1;
        en->state = r.state;
        en->end_ms = r.end_ms;
        job_record_free(&r);
    }
    closedir(d);

    /* Checkpoints are worth nothing without their record (no examples, no settings), and
     * nothing once the job has finished (a crash came between the two writes). */
    for (size_t i = 0; i < s->n;) {
        js_entry *en = &s->entries[i];
        if (en->has_record && !job_state_finished(en->state)) {
            i++;
            continue;
        }
        if (en->slot_gen[0] >= 0 || en->slot_gen[1] >= 0) {
            ckpt_remove_all(s, en, NULL);
            dirty = 1;
        }
        if (en->has_record)
            i++;
        else
            entry_erase(s, en);
    }
    if (dirty) fs_fsync_dir(s->dir, NULL);
    if (any_seen && max_seen + 1 > s->next_id) s->next_id = max_seen + 1;
    if (s->next_id == 0) s->next_id = 1;
    return 0;
}

/* ---- public API ----------------------------------------------------------------------- */

int job_store_open(const job_store_config *cfg, job_store **out, job_recovered **recovered,
                   size_t *n_recovered, persist_problems *problems, zmix_error *err)
{
    *out = NULL;
    *recovered = NULL;
    *n_recovered = 0;
    if (!cfg->dir || !cfg->dir[0])
        return zmix_error_set(err, ZMIX_EINVAL, "job store: no directory given");
    job_store *s = calloc(1, sizeof *s);
    if (!s) return zmix_error_set(err, ZMIX_ENOMEM, "job store: out of memory");
    if (snprintf(s->dir, sizeof s->dir, "%s/jobs", cfg->dir) >= (int)sizeof s->dir) {
        free(s);
        return zmix_error_set(err, ZMIX_ELIMIT, "job store: directory path too long");
    }
    s->retain = cfg->retain_finished ? cfg->retain_finished : 1000;
    s->max_record = cfg->max_record_bytes ? cfg->max_record_bytes : (size_t)256 << 20;
    s->fault.write_budget = cfg->fault_write_after_bytes;
    s->lock_fd = -1;
    pthread_mutex_init(&s->mu, NULL);
    int rc = fs_mkdirs(s->dir, err);
    if (rc == 0) rc = fs_lock_dir(s->dir, &s->lock_fd, err);
    if (rc == 0) rc = scan(s, problems, err);
    if (rc == 0) apply_retention(s);

    job_recovered *list = NULL;
    size_t n = 0;
    if (rc == 0 && s->n) {
        list = calloc(s->n, sizeof *list);
        if (!list) rc = zmix_error_set(err, ZMIX_ENOMEM, "job store: %zu recovered jobs", s->n);
    }
    for (size_t i = 0; rc == 0 && i < s->n; i++) {
        js_entry *en = &s->entries[i];
        job_recovered *jr = &list[n];
        zmix_error e;
        zmix_error_clear(&e);
        /* Read again: a record that went bad since the scan is reported, not returned. */
        if (job_read(s, en->id, &jr->record, &e) != 0) {
            persist_problems_add(problems, &e);
            continue;
        }
        jr->generation = -1;
        if (!job_state_finished(en->state) &&
            ckpt_best(s, en, &jr->checkpoint, &jr->checkpoint_len, &jr->generation, &e) != 0) {
            jr->checkpoint = NULL;
            jr->checkpoint_len = 0;
            jr->generation = -1;
        }
        n++;
    }
    if (rc) {
        job_recovered_free(list, n);
        zmix_error_prefix(err, "job store");
        job_store_free(s);
        return rc;
    }
    *recovered = list;
    *n_recovered = n;
    *out = s;
    return 0;
}

void job_store_free(job_store *s)
{
    if (!s) return;
    free(s->entries);
    fs_unlock_dir(s->lock_fd);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

static int record_check(const job_record *r, zmix_error *err)
{
    int rc = task_name_check(r->task, err);
    if (rc) return rc;
    if (strnlen(r->key, sizeof r->key) == sizeof r->key)
        return zmix_error_set(err, ZMIX_EINVAL, "job for task %s: key longer than %d bytes",
                              r->task, TASK_KEY_MAX);
    if (r->examples.n < 0 || r->examples.n > MAX_EXAMPLES || (r->examples.n && !r->examples.items))
        return zmix_error_set(err, ZMIX_EINVAL, "job for task %s: %d examples", r->task,
                              r->examples.n);
    for (int i = 0; i < r->examples.n; i++) {
        const zmix_example *x = &r->examples.items[i];
        if (x->n_prompt < 0 || x->n_target < 0 || (x->n_prompt && !x->prompt) ||
            (x->n_target && !x->target))
            return zmix_error_set(err, ZMIX_EINVAL, "job for task %s: example %d: bad token array",
                                  r->task, i);
    }
    if (r->settings_len && !r->settings)
        return zmix_error_set(err, ZMIX_EINVAL, "job for task %s: settings missing", r->task);
    if (strnlen(r->reason, sizeof r->reason) == sizeof r->reason)
        return zmix_error_set(err, ZMIX_EINVAL, "job for task %s: reason not terminated", r->task);
    return 0;
}

int job_store_create(job_store *s, job_record *rec, zmix_error *err)
{
    int rc = record_check(rec, err);
    if (rc) return rc;
    pthread_mutex_lock(&s->mu);
    uint64_t id = s->next_id;
    /* The counter is durable before the record, so a crash between the two leaves the id
     * used up rather than handed out twice. */
    rc = next_id_write(s, id + 1, err);
    if (rc == 0) {
        s->next_id = id + 1;
        rec->id = id;
        rec->state = JOB_QUEUED;
        rec->start_ms = rec->end_ms = 0;
        rc = job_write(s, rec, err);
    }
    if (rc == 0) {
        js_entry *en = entry_insert(s, id);
        if (en) {
            en->has_record = 1;
            en->state = JOB_QUEUED;
        } else {
            char name[64];
            job_file(name, sizeof name, id);
            fs_remove(s->dir, name, NULL);
            rc = zmix_error_set(err, ZMIX_ENOMEM, "job store: index full");
        }
    }
    pthread_mutex_unlock(&s->mu);
    if (rc) zmix_error_prefix(err, "job for task %s not stored", rec->task);
    return rc;
}

int job_store_set_state(job_store *s, uint64_t id, job_state state, const char *reason,
                        int64_t now_ms, zmix_error *err)
{
    return job_store_finish(s, id, state, reason, now_ms, NULL, 0, err);
}

int job_store_finish(job_store *s, uint64_t id, job_state state, const char *reason, int64_t now_ms,
                     const uint8_t *result, size_t result_len, zmix_error *err)
{
    if ((int)state < JOB_QUEUED || state > JOB_CANCELLED)
        return zmix_error_set(err, ZMIX_EINVAL, "job %" PRIu64 ": state %d", id, (int)state);
    pthread_mutex_lock(&s->mu);
    js_entry *en = entry_find(s, id);
    int rc = 0;
    job_record r;
    memset(&r, 0, sizeof r);
    if (!en)
        rc = zmix_error_set(err, ZMIX_ENOTFOUND, "job %" PRIu64 ": unknown", id);
    else if (job_state_finished(en->state))
        rc = zmix_error_set(err, ZMIX_ESTATE, "job %" PRIu64 ": already %s, cannot become %s", id,
                            job_state_name(en->state), job_state_name(state));
    if (rc == 0) rc = job_read(s, id, &r, err);
    if (rc == 0) {
        r.state = state;
        if (state == JOB_RUNNING && r.start_ms == 0) r.start_ms = now_ms;
        if (job_state_finished(state)) r.end_ms = now_ms;
        if (reason) snprintf(r.reason, sizeof r.reason, "%s", reason);
        if (result_len) {
            free(r.result);
            r.result = malloc(result_len);
            if (!r.result)
                rc = zmix_error_set(err, ZMIX_ENOMEM, "job %" PRIu64 ": result of %zu bytes", id,
                                    result_len);
            else
                memcpy(r.result, result, result_len);
            r.result_len = r.result ? result_len : 0;
        }
        if (rc == 0) rc = job_write(s, &r, err);
    }
    if (rc == 0) {
        en->state = state;
        en->end_ms = r.end_ms;
        if (job_state_finished(state)) {
            /* The record now says finished, so the checkpoints are dead weight; failing to
             * delete them is harmless (open deletes them too). */
            ckpt_remove_all(s, en, NULL);
            apply_retention(s);
        }
    }
    job_record_free(&r);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int job_store_checkpoint(job_store *s, uint64_t id, int generation, const uint8_t *data, size_t len,
                         zmix_error *err)
{
    if (generation < 0 || (len && !data))
        return zmix_error_set(err, ZMIX_EINVAL, "job %" PRIu64 ": checkpoint generation %d", id,
                              generation);
    pthread_mutex_lock(&s->mu);
    js_entry *en = entry_find(s, id);
    int rc = 0;
    if (!en)
        rc = zmix_error_set(err, ZMIX_ENOTFOUND, "job %" PRIu64 ": unknown", id);
    else if (job_state_finished(en->state))
        rc = zmix_error_set(err, ZMIX_ESTATE, "job %" PRIu64 ": %s, no checkpoints", id,
                            job_state_name(en->state));
    if (rc == 0) {
        rec_writer w;
        recw_begin(&w, CKPT_MAGIC, FORMAT_V1);
        recw_u64(&w, id);
        recw_u32(&w, (uint32_t)generation);
        recw_blob32(&w, data, len);
        rc = recw_finish(&w, NULL, err);
        int slot = generation % 2;
        char name[64];
        ckpt_file(name, sizeof name, id, slot);
        if (rc == 0) rc = write_file(s, name, &w, err);
        recw_free(&w);
        if (rc == 0) {
            en->slot_gen[slot] = generation;
            /* A later generation in the other slot belongs to an abandoned run (the job was
             * restarted from an earlier point): it must not win at the next open. */
            if (en->slot_gen[1 - slot] > generation) {
                ckpt_file(name, sizeof name, id, 1 - slot);
                if (fs_remove(s->dir, name, NULL) == 0) en->slot_gen[1 - slot] = -1;
                fs_fsync_dir(s->dir, NULL);
            }
        }
    }
    pthread_mutex_unlock(&s->mu);
    if (rc) zmix_error_prefix(err, "job %" PRIu64 ": checkpoint of generation %d", id, generation);
    return rc;
}

int job_store_get(job_store *s, uint64_t id, job_record *out, zmix_error *err)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&s->mu);
    int rc = entry_find(s, id)
                 ? job_read(s, id, out, err)
                 : zmix_error_set(err, ZMIX_ENOTFOUND, "job %" PRIu64 ": unknown", id);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int job_store_load_checkpoint(job_store *s, uint64_t id, uint8_t **data, size_t *len,
                              int *generation, zmix_error *err)
{
    *data = NULL;
    *len = 0;
    pthread_mutex_lock(&s->mu);
    js_entry *en = entry_find(s, id);
    int rc = en ? ckpt_best(s, en, data, len, generation, err)
                : zmix_error_set(err, ZMIX_ENOTFOUND, "job %" PRIu64 ": unknown", id);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int job_store_remove(job_store *s, uint64_t id, zmix_error *err)
{
    pthread_mutex_lock(&s->mu);
    js_entry *en = entry_find(s, id);
    int rc = 0;
    if (!en)
        rc = zmix_error_set(err, ZMIX_ENOTFOUND, "job %" PRIu64 ": unknown", id);
    else if (!job_state_finished(en->state))
        rc = zmix_error_set(err, ZMIX_ESTATE, "job %" PRIu64 ": %s, cancel it first", id,
                            job_state_name(en->state));
    if (rc == 0) rc = job_delete_files(s, en, err);
    if (rc == 0) {
        entry_erase(s, en);
        rc = fs_fsync_dir(s->dir, err);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

uint64_t job_store_next_id(job_store *s)
{
    pthread_mutex_lock(&s->mu);
    uint64_t v = s->next_id;
    pthread_mutex_unlock(&s->mu);
    return v;
}

size_t job_store_count(job_store *s)
{
    pthread_mutex_lock(&s->mu);
    size_t v = s->n;
    pthread_mutex_unlock(&s->mu);
    return v;
}

void job_store_set_write_fault(job_store *s, long long bytes)
{
    pthread_mutex_lock(&s->mu);
    s->fault.write_budget = bytes;
    pthread_mutex_unlock(&s->mu);
}
