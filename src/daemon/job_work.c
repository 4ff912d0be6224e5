/*
 * What the scoring pool runs. Thread: a pool worker, every function.
 *
 * A pool item is one piece of a job's open session step. The worker reads the session's
 * candidates and writes the scores of its own rows only (zmix_session_score), so pieces of
 * one step run side by side without a lock; it reads the job's stop flag through the scorer
 * and writes nothing else of the job. The loop collects the item afterwards.
 */
#include "daemon/server.h"

void job_work_run(pool_item *it)
{
    job *j = it->owner;
    zmix_score_ctl ctl = {.n_threads = 1, .stop = &j->stop};
    zmix_work w = {.begin = it->begin, .end = it->end};
    it->rc = zmix_session_score(j->session, &w, &ctl);
    it->err = w.err;
}
