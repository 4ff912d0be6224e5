/*
 * Jobs found in the job store at startup. Thread: the event loop, before it runs.
 *
 * Finished jobs come back for status, jobs and history: their summary is read from the
 * result document their record keeps (the history itself stays on disk). Unfinished jobs
 * resume under the same id, with the settings they were accepted with whatever the daemon's
 * limits are now, from their last checkpoint — but only on the model, experts and adapted set
 * they were submitted for: the inputs key covers them all, and a job whose key no longer
 * matches would file a result under a key that does not describe it.
 */
#include <cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/server.h"
#include "util/utf8.h"

static void restore_final(job *j, const job_record *r)
{
    if (!r->result_len) return;
    cJSON *doc = cJSON_ParseWithLength((const char *)r->result, r->result_len);
    zmix_adapt_result res;
    zmix_error err;
    if (doc && zmix_adapt_result_from_json(doc, &res, &err) == 0) {
        j->have_final = job_summary_of_result(&res, &j->final) == 0;
        zmix_adapt_result_free(&res);
    } else {
        ZLOG_WARN(j->srv->log,
                  "job %llu: its result document is unreadable: status shows no "
                  "search",
                  (unsigned long long)j->id);
    }
    cJSON_Delete(doc);
}

static void cannot_resume(server *srv, job *j, const char *why)
{
    ZLOG_ERROR(srv->log, "job %llu: cannot resume: %s", (unsigned long long)j->id, why);
    snprintf(j->reason, sizeof j->reason, "cannot resume after restart: %.180s", why);
    utf8_trim_cstr(j->reason);
    if (srv->fleet_jobs) {
        /* The end state is written like any other, off the loop, under the lease. */
        j->resume_failed = 1;
        j->state = JOB_QUEUED;
        job_set_phase(j, JOB_PH_QUEUED);
        return;
    }
    j->state = JOB_FAILED;
    job_set_phase(j, JOB_PH_FINISHED);
    job_store_set_state(srv->store, j->id, JOB_FAILED, j->reason, server_wall_ms(), NULL);
}

static void recover_one(server *srv, job *j, job_recovered *rec)
{
    job_record *r = &rec->record;
    zmix_error e = {0};
    int rc = job_spec_restore(r->settings, r->settings_len, &r->examples, r->task, r->priority,
                              srv->limits.n_experts, srv->limits.n_matrices, &srv->cem_defaults,
                              &j->spec, &e);
    j->id = r->id;
    if (strlen(r->key) == sizeof j->key - 1) memcpy(j->key, r->key, sizeof j->key);
    j->submit_ms = r->submit_ms;
    j->start_ms = r->start_ms;
    j->end_ms = r->end_ms;
    j->state = r->state;
    snprintf(j->reason, sizeof j->reason, "%s", r->reason);
    if (rc != 0) snprintf(j->spec.task, sizeof j->spec.task, "%.127s", r->task);
    job_spec_adapt_opts(&j->spec, &j->opts);
    if (job_state_finished(r->state)) {
        job_set_phase(j, JOB_PH_FINISHED);
        restore_final(j, r);
        job_spec_drop_examples(&j->spec); /* kept for status only: the examples are not needed */
        return;
    }
    if (rc != 0) {
        cannot_resume(srv, j, e.msg);
        return;
    }
    char key_now[65];
    job_spec_key(&j->spec, zmix_model_fingerprint(srv->model), srv->experts_digest, key_now);
    if (strcmp(key_now, j->key) != 0) {
        cannot_resume(srv, j,
                      "the model, experts or adapted matrices changed since it was submitted");
        return;
    }
    if (rec->checkpoint) {
        rc = zmix_session_restore(srv->rt, &j->spec.examples, &j->opts, rec->checkpoint,
                                  rec->checkpoint_len, &j->session, &e);
        if (rc != 0)
            ZLOG_WARN(srv->log, "job %llu: checkpoint unusable (%s): restarting it",
                      (unsigned long long)j->id, e.msg);
    }
    j->started = r->state == JOB_RUNNING;
    j->state = JOB_QUEUED;
    job_set_phase(j, JOB_PH_QUEUED);
    ZLOG_INFO(srv->log, "job %llu: task %s resumes at generation %d", (unsigned long long)j->id,
              j->spec.task, j->session ? zmix_session_generation(j->session) : 0);
}

int jobs_recover(server *srv, job_recovered *rec, size_t n, zmix_error *err)
{
    for (size_t i = 0; i < n; i++) {
        job *j = jobs_new(srv);
        if (!j) return zmix_error_set(err, ZMIX_ENOMEM, "out of memory recovering jobs");
        recover_one(srv, j, &rec[i]);
    }
    jobs_schedule(srv);
    return 0;
}

int jobs_resume_claimed(server *srv, job_recovered *rec, uint64_t epoch, int cancel_requested)
{
    job *j = jobs_new(srv);
    if (!j) return ZMIX_ENOMEM;
    j->epoch = epoch;
    recover_one(srv, j, rec);
    j->cancel_requested = cancel_requested;
    jobs_schedule(srv);
    return 0;
}
