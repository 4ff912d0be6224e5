/*
 * Opening the job store: the id counter, every record and checkpoint found on disk (bad ones
 * quarantined), stale temporaries and dead checkpoints removed, retention applied, and the
 * jobs handed back. Thread: the caller's (startup), before the store is shared.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "store/job_record.h"
#include "store/job_store_internal.h"

/* ---- open ----------------------------------------------------------------------------- */

/* The id counter: ids are never reused even after retention dropped their records. */
static void read_next_id(job_store *s, persist_problems *problems)
{
    zmix_error e;
    zmix_error_clear(&e);
    uint8_t *buf;
    size_t len;
    int rc = js_read_verified(s, NEXTID_FILE, &buf, &len, &e);
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
}

/* Indexes one job file found at open (a record or a checkpoint slot; a bad one is
 * quarantined). ZMIX_ENOMEM only when the index cannot grow. */
static int index_found_file(job_store *s, const char *file, uint64_t id, int slot,
                            persist_problems *problems, zmix_error *err)
{
    zmix_error e;
    zmix_error_clear(&e);
    js_entry *en = js_entry_find(s, id);
    if (!en) en = js_entry_insert(s, id);
    if (!en) return zmix_error_set(err, ZMIX_ENOMEM, "job store: index of %zu jobs", s->n);
    if (slot >= 0) {
        int g;
        if (js_ckpt_read(s, id, slot, NULL, NULL, &g, &e) == 0)
            en->slot_gen[slot] = g;
        else
            fs_quarantine(s->dir, file, &e, problems);
        return 0;
    }
    job_record r;
    if (js_job_read(s, id, &r, &e) != 0) {
        fs_quarantine(s->dir, file, &e, problems);
        return 0;
    }
    en->has_record = 1;
    en->state = r.state;
    en->end_ms = r.end_ms;
    job_record_free(&r);
    return 0;
}

/* Checkpoints are worth nothing without their record (no examples, no settings), and nothing
 * once the job has finished (a crash came between the two writes). Returns 1 when it
 * removed files. */
static int drop_dead_checkpoints(job_store *s)
{
    int dirty = 0;
    for (size_t i = 0; i < s->n;) {
        js_entry *en = &s->entries[i];
        if (en->has_record && !job_state_finished(en->state)) {
            i++;
            continue;
        }
        if (en->slot_gen[0] >= 0 || en->slot_gen[1] >= 0) {
            js_ckpt_remove_all(s, en, NULL);
            dirty = 1;
        }
        if (en->has_record)
            i++;
        else
            js_entry_erase(s, en);
    }
    return dirty;
}

static int scan(job_store *s, persist_problems *problems, zmix_error *err)
{
    read_next_id(s, problems);
    DIR *d = opendir(s->dir);
    if (!d) return zmix_error_set(err, ZMIX_EIO, "%s: opendir: %s", s->dir, strerror(errno));
    uint64_t max_seen = 0;
    int any_seen = 0, dirty = 0, rc = 0;
    struct dirent *de;
    while (rc == 0 && (de = readdir(d)) != NULL) {
        const char *file = de->d_name;
        uint64_t id;
        if (file[0] == '.') continue;
        if (fs_has_suffix(file, TMP_EXT)) {
            fs_remove(s->dir, file, NULL); /* a write that never reached its rename */
            dirty = 1;
            continue;
        }
        int slot = -1;
        if (js_parse_id_name(file, ".ckpt0", &id))
            slot = 0;
        else if (js_parse_id_name(file, ".ckpt1", &id))
            slot = 1;
        else if (!js_parse_id_name(file, JOB_EXT, &id))
            continue;
        /* Any id seen on disk, even in a bad file, is used up. */
        if (!any_seen || id > max_seen) max_seen = id;
        any_seen = 1;
        rc = index_found_file(s, file, id, slot, problems, err);
    }
    closedir(d);
    if (rc) return rc;
    dirty |= drop_dead_checkpoints(s);
    if (dirty) fs_fsync_dir(s->dir, NULL);
    if (any_seen && max_seen + 1 > s->next_id) s->next_id = max_seen + 1;
    if (s->next_id == 0) s->next_id = 1;
    return 0;
}

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
    s->file_mode = cfg->file_mode;
    s->lock_fd = -1;
    pthread_mutex_init(&s->mu, NULL);
    int rc = fs_mkdirs(s->dir, err);
    if (rc == 0) rc = fs_lock_dir(s->dir, &s->lock_fd, err);
    if (rc == 0) rc = scan(s, problems, err);
    if (rc == 0) js_apply_retention(s);

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
        if (js_job_read(s, en->id, &jr->record, &e) != 0) {
            persist_problems_add(problems, &e);
            continue;
        }
        jr->generation = -1;
        if (!job_state_finished(en->state) &&
            js_ckpt_best(s, en, &jr->checkpoint, &jr->checkpoint_len, &jr->generation, &e) != 0) {
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
