/*
 * The job lifecycle's rules (see job_phase.h). Thread: any; no state.
 *
 *   new ─▶ accepting ─▶ queued ─▶ starting ─▶ scoring ⇄ saving
 *     │         │          │          │          │        │
 *     │         └─▶ finished (a cache hit or a store error: the job never existed)
 *     │                    └──────────┴──────────┴────────┴─▶ finishing ─▶ finished
 *     └─▶ queued, finished (recovered at startup)
 *
 * starting, scoring and saving may also go back to queued (the daemon shuts down and the job
 * resumes from its checkpoint at the next start).
 */
#include "daemon/job_phase.h"

int job_phase_counts_unfinished(job_phase p)
{
    return p >= JOB_PH_ACCEPTING && p <= JOB_PH_SAVING;
}

int job_phase_counts_running(job_phase p)
{
    return p == JOB_PH_STARTING || p == JOB_PH_SCORING || p == JOB_PH_SAVING;
}

int job_phase_legal(job_phase from, job_phase to)
{
    switch (from) {
    case JOB_PH_NEW: return to == JOB_PH_ACCEPTING || to == JOB_PH_QUEUED || to == JOB_PH_FINISHED;
    case JOB_PH_ACCEPTING: return to == JOB_PH_QUEUED || to == JOB_PH_FINISHED;
    case JOB_PH_QUEUED: return to == JOB_PH_STARTING || to == JOB_PH_FINISHING;
    case JOB_PH_STARTING:
    case JOB_PH_SAVING:
        return to == JOB_PH_SCORING || to == JOB_PH_QUEUED || to == JOB_PH_FINISHING;
    case JOB_PH_SCORING:
        return to == JOB_PH_SAVING || to == JOB_PH_QUEUED || to == JOB_PH_FINISHING;
    case JOB_PH_FINISHING: return to == JOB_PH_FINISHED;
    case JOB_PH_FINISHED: return 0;
    }
    return 0;
}

int job_phase_apply(job_phase from, job_phase to, int *n_unfinished, int *n_running)
{
    if (!job_phase_legal(from, to)) return -1;
    int unfinished =
        *n_unfinished + job_phase_counts_unfinished(to) - job_phase_counts_unfinished(from);
    int running = *n_running + job_phase_counts_running(to) - job_phase_counts_running(from);
    if (unfinished < 0 || running < 0) return -1;
    *n_unfinished = unfinished;
    *n_running = running;
    return 0;
}
