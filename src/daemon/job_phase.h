/*
 * The job lifecycle's rules: which phase may follow which, and which phases count as
 * unfinished (towards --max-jobs) and as running (towards --max-running). Pure functions, so
 * that the rules are tested alone (tests/server/test_job_phase.c); job_set_phase in jobs.c is
 * their only user in the daemon.
 */
#ifndef ZMIX_DAEMON_JOB_PHASE_H
#define ZMIX_DAEMON_JOB_PHASE_H

typedef enum job_phase {
    JOB_PH_NEW = 0,   /* just allocated */
    JOB_PH_ACCEPTING, /* being written to the job store */
    JOB_PH_QUEUED,    /* accepted, waiting for a running slot */
    JOB_PH_STARTING,  /* its start is being recorded */
    JOB_PH_SCORING,   /* a step's pieces are on the pool */
    JOB_PH_SAVING,    /* the step's checkpoint is being written */
    JOB_PH_FINISHING, /* its end state (and result) is being written: too late to cancel */
    JOB_PH_FINISHED
} job_phase;

int job_phase_legal(job_phase from, job_phase to);
int job_phase_counts_unfinished(job_phase p); /* accepting .. saving */
int job_phase_counts_running(job_phase p);    /* starting, scoring, saving */

/* Moves the counters for a transition: -1 (and nothing changed) when it is illegal or would
 * make a counter negative. */
int job_phase_apply(job_phase from, job_phase to, int *n_unfinished, int *n_running);

#endif
