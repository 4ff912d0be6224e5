/*
 * Job records as bytes (see job_record.h; format in docs/persistence.md). Version 2 appends
 * the finished job's result document; version-1 records read with an empty one. Version 3
 * appends the choices of multiple-choice examples; older records hold exact-match ones only.
 * Thread: any; no state.
 */
#include "store/job_record.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JOB_MAGIC  "ZMIXJOBR"
#define JOB_FORMAT 3

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

/* ---- encoding ------------------------------------------------------------------------- */

int job_encode(const job_record *r, rec_writer *w, zmix_error *err)
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
    for (int i = 0; i < r->examples.n; i++) {
        const zmix_example *x = &r->examples.items[i];
        recw_u32(w, (uint32_t)x->n_choices);
        if (!x->n_choices) continue;
        recw_u32(w, (uint32_t)x->answer);
        size_t total = 0;
        for (int c = 0; c < x->n_choices; c++) {
            recw_u32(w, (uint32_t)x->choice_len[c]);
            total += (size_t)x->choice_len[c];
        }
        for (size_t t = 0; t < total; t++) recw_u32(w, (uint32_t)x->choices[t]);
    }
    int rc = recw_finish(w, NULL, err);
    if (rc) recw_free(w);
    return rc;
}

/* The choices section of a version-3 record: per example a u32 count (0: exact match), then
 * the answer, the lengths and the tokens, appended to the examples' token block. Their shape
 * (answer, lengths) is checked where the job's examples are rebuilt (job_spec_restore). */
static int decode_choices(rec_reader *rd, zmix_examples *ex, zmix_error *err)
{
    size_t left = (rd->len - rd->pos) / 4, need = 0, old = ex->n_tokens;
    int32_t *block = malloc((old + left + 1) * sizeof *block);
    size_t *at = calloc((size_t)ex->n + 1, sizeof *at); /* each example's lengths in block */
    if (!block || !at) {
        free(block);
        free(at);
        return zmix_error_set(err, ZMIX_ENOMEM, "job record: out of memory");
    }
    memcpy(block, ex->tokens, old * sizeof *block);
    for (int i = 0; i < ex->n && !rd->failed; i++) {
        zmix_example *x = &ex->items[i];
        uint32_t n = recr_u32(rd);
        if (n == 0) continue;
        if (n > ZMIX_MAX_CHOICES || x->n_target != 0 || need + 1 + n > left) {
            rd->failed = 1;
            break;
        }
        x->n_choices = (int)n;
        x->answer = (int)recr_u32(rd);
        at[i] = old + need;
        uint64_t total = 0;
        for (uint32_t c = 0; c < n; c++)
            total += (uint32_t)(block[old + need + c] = (int32_t)recr_u32(rd));
        need += n;
        if (total > left - need) {
            rd->failed = 1;
            break;
        }
        for (uint64_t t = 0; t < total; t++) block[old + need + t] = (int32_t)recr_u32(rd);
        need += (size_t)total;
    }
    if (rd->failed) {
        free(block);
        free(at);
        return zmix_error_set(err, ZMIX_EFORMAT, "job record: the choices run past the end");
    }
    /* Every pointer moves to the new block. */
    for (int i = 0; i < ex->n; i++) {
        zmix_example *x = &ex->items[i];
        x->prompt = block + (x->prompt - ex->tokens);
        if (x->n_choices) {
            x->target = NULL;
            x->choice_len = block + at[i];
            x->choices = block + at[i] + x->n_choices;
        } else {
            x->target = block + (x->target - ex->tokens);
        }
    }
    free(ex->tokens);
    ex->tokens = block;
    ex->n_tokens = old + need;
    free(at);
    return 0;
}

int job_decode(const uint8_t *buf, size_t len, job_record *out, zmix_error *err)
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
    if (rd.failed || state > JOB_CANCELLED || n > JOB_RECORD_MAX_EXAMPLES ||
        n > (rd.len - rd.pos) / 8)
        return zmix_error_set(err, ZMIX_EFORMAT, "job record: bad state or example count");
    out->state = (job_state)state;
    out->examples.n = (int)n;
    out->examples.items = calloc(n ? n : 1, sizeof *out->examples.items);
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
    if (version >= 3 && (rc = decode_choices(&rd, &out->examples, err))) {
        job_record_free(out);
        return rc;
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
