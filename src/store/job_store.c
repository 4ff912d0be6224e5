/*
 * The job store (see job_store.h for the contract, docs/persistence.md for the formats).
 * Thread: any; one mutex per store (callers in zmixd: libuv's threadpool, never the loop).
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

#include "store/job_record.h"
#include "store/job_store_internal.h"
#include "util/record.h"

void job_store_config_default(job_store_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->fault_write_after_bytes = -1;
}

/* ---- names ---------------------------------------------------------------------------- */

void js_job_file(char *out, size_t size, uint64_t id)
{
    snprintf(out, size, "%020" PRIu64 JOB_EXT, id);
}

void js_ckpt_file(char *out, size_t size, uint64_t id, int slot)
{
    snprintf(out, size, "%020" PRIu64 ".ckpt%d", id, slot);
}

/* Parses "<20 digits><suffix>" into *id; 0 when name has another shape. */
int js_parse_id_name(const char *name, const char *suffix, uint64_t *id)
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

js_entry *js_entry_find(job_store *s, uint64_t id)
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
js_entry *js_entry_insert(job_store *s, uint64_t id)
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

void js_entry_erase(job_store *s, js_entry *e)
{
    size_t at = (size_t)(e - s->entries);
    memmove(&s->entries[at], &s->entries[at + 1], (s->n - at - 1) * sizeof *s->entries);
    s->n--;
}

/* ---- files ---------------------------------------------------------------------------- */

int js_write_file(job_store *s, const char *name, const rec_writer *w, zmix_error *err)
{
    char path[4200];
    int rc = fs_join(path, sizeof path, s->dir, name, err);
    fs_piece piece = {w->buf, w->len};
    fs_write_opts opts = {.mode = s->file_mode, .fault = &s->fault};
    return rc ? rc : fs_write_atomic(path, &piece, 1, &opts, err);
}

int js_read_verified(job_store *s, const char *name, uint8_t **buf, size_t *len, zmix_error *err)
{
    char path[4200];
    int rc = fs_join(path, sizeof path, s->dir, name, err);
    if (rc == 0) rc = fs_read_file(path, s->max_record, buf, len, err);
    return rc;
}

int js_job_read(job_store *s, uint64_t id, job_record *out, zmix_error *err)
{
    char name[64];
    js_job_file(name, sizeof name, id);
    uint8_t *buf;
    size_t len;
    int rc = js_read_verified(s, name, &buf, &len, err);
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

int js_job_write(job_store *s, const job_record *r, zmix_error *err)
{
    rec_writer w;
    int rc = job_encode(r, &w, err);
    if (rc) return rc;
    char name[64];
    js_job_file(name, sizeof name, r->id);
    rc = js_write_file(s, name, &w, err);
    recw_free(&w);
    return rc;
}

/* Reads one checkpoint slot. data may be NULL to only learn the generation. */
int js_ckpt_read(job_store *s, uint64_t id, int slot, uint8_t **data, size_t *len, int *gen,
                 zmix_error *err)
{
    char name[64];
    js_ckpt_file(name, sizeof name, id, slot);
    uint8_t *buf;
    size_t blen;
    int rc = js_read_verified(s, name, &buf, &blen, err);
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
int js_ckpt_best(job_store *s, js_entry *e, uint8_t **data, size_t *len, int *gen, zmix_error *err)
{
    int order[2] = {0, 1};
    if (e->slot_gen[1] > e->slot_gen[0]) order[0] = 1, order[1] = 0;
    for (int i = 0; i < 2; i++) {
        int slot = order[i];
        if (e->slot_gen[slot] < 0) continue;
        zmix_error ignored;
        int g;
        if (js_ckpt_read(s, e->id, slot, data, len, &g, &ignored) == 0) {
            *gen = g;
            return 0;
        }
        e->slot_gen[slot] = -1; /* went bad since open: never offer it again */
    }
    return zmix_error_set(err, ZMIX_ENOTFOUND, "job %" PRIu64 ": no valid checkpoint", e->id);
}

int js_ckpt_remove_all(job_store *s, js_entry *e, zmix_error *err)
{
    char name[64];
    int rc = 0;
    for (int slot = 0; slot < 2 && rc == 0; slot++) {
        js_ckpt_file(name, sizeof name, e->id, slot);
        rc = fs_remove(s->dir, name, err);
        e->slot_gen[slot] = -1;
    }
    return rc;
}

int js_next_id_write(job_store *s, uint64_t next, zmix_error *err)
{
    rec_writer w;
    recw_begin(&w, NEXTID_MAGIC, FORMAT_V1);
    recw_u64(&w, next);
    int rc = recw_finish(&w, NULL, err);
    if (rc == 0) rc = js_write_file(s, NEXTID_FILE, &w, err);
    recw_free(&w);
    return rc;
}

/* Deletes a job's files (record last, so a crash midway leaves a record whose missing
 * checkpoints only mean "restart from scratch" or nothing at all for a finished job). */
int js_job_delete_files(job_store *s, js_entry *e, zmix_error *err)
{
    int rc = js_ckpt_remove_all(s, e, err);
    char name[64];
    js_job_file(name, sizeof name, e->id);
    if (rc == 0) rc = fs_remove(s->dir, name, err);
    return rc;
}

/* Keeps at most s->retain finished records, dropping the oldest-ended first. */
void js_apply_retention(job_store *s)
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
        if (js_job_delete_files(s, oldest, NULL) != 0) break;
        js_entry_erase(s, oldest);
        removed = 1;
    }
    if (removed) fs_fsync_dir(s->dir, NULL);
}

/* ---- public API ----------------------------------------------------------------------- */

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
    if (r->examples.n < 0 || r->examples.n > JOB_RECORD_MAX_EXAMPLES ||
        (r->examples.n && !r->examples.items))
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
    rc = js_next_id_write(s, id + 1, err);
    if (rc == 0) {
        s->next_id = id + 1;
        rec->id = id;
        rec->state = JOB_QUEUED;
        rec->start_ms = rec->end_ms = 0;
        rc = js_job_write(s, rec, err);
    }
    if (rc == 0) {
        js_entry *en = js_entry_insert(s, id);
        if (en) {
            en->has_record = 1;
            en->state = JOB_QUEUED;
        } else {
            char name[64];
            js_job_file(name, sizeof name, id);
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
    js_entry *en = js_entry_find(s, id);
    int rc = 0;
    job_record r;
    memset(&r, 0, sizeof r);
    if (!en)
        rc = zmix_error_set(err, ZMIX_ENOTFOUND, "job %" PRIu64 ": unknown", id);
    else if (job_state_finished(en->state))
        rc = zmix_error_set(err, ZMIX_ESTATE, "job %" PRIu64 ": already %s, cannot become %s", id,
                            job_state_name(en->state), job_state_name(state));
    if (rc == 0) rc = js_job_read(s, id, &r, err);
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
        if (rc == 0) rc = js_job_write(s, &r, err);
    }
    if (rc == 0) {
        en->state = state;
        en->end_ms = r.end_ms;
        if (job_state_finished(state)) {
            /* The record now says finished, so the checkpoints are dead weight; failing to
             * delete them is harmless (open deletes them too). */
            js_ckpt_remove_all(s, en, NULL);
            js_apply_retention(s);
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
    js_entry *en = js_entry_find(s, id);
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
        js_ckpt_file(name, sizeof name, id, slot);
        if (rc == 0) rc = js_write_file(s, name, &w, err);
        recw_free(&w);
        if (rc == 0) {
            en->slot_gen[slot] = generation;
            /* A later generation in the other slot belongs to an abandoned run (the job was
             * restarted from an earlier point): it must not win at the next open. */
            if (en->slot_gen[1 - slot] > generation) {
                js_ckpt_file(name, sizeof name, id, 1 - slot);
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
    int rc = js_entry_find(s, id)
                 ? js_job_read(s, id, out, err)
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
    js_entry *en = js_entry_find(s, id);
    int rc = en ? js_ckpt_best(s, en, data, len, generation, err)
                : zmix_error_set(err, ZMIX_ENOTFOUND, "job %" PRIu64 ": unknown", id);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int job_store_remove(job_store *s, uint64_t id, zmix_error *err)
{
    pthread_mutex_lock(&s->mu);
    js_entry *en = js_entry_find(s, id);
    int rc = 0;
    if (!en)
        rc = zmix_error_set(err, ZMIX_ENOTFOUND, "job %" PRIu64 ": unknown", id);
    else if (!job_state_finished(en->state))
        rc = zmix_error_set(err, ZMIX_ESTATE, "job %" PRIu64 ": %s, cancel it first", id,
                            job_state_name(en->state));
    if (rc == 0) rc = js_job_delete_files(s, en, err);
    if (rc == 0) {
        js_entry_erase(s, en);
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
