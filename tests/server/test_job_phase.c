/* The job lifecycle's rules (src/server/job_phase.c): every path a job can take keeps the
 * daemon's counters right, and nothing else is allowed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "daemon/job_phase.h"

#define N_PHASES (JOB_PH_FINISHED + 1)

/* Walks a path of phases from NEW, checking every step is accepted and where the counters
 * stand after each. */
static void walk(const job_phase *path, int n, const int *unfinished, const int *running)
{
    int unf = 0, run = 0;
    job_phase at = JOB_PH_NEW;
    for (int i = 0; i < n; i++) {
        assert_int_equal(job_phase_apply(at, path[i], &unf, &run), 0);
        assert_int_equal(unf, unfinished[i]);
        assert_int_equal(run, running[i]);
        at = path[i];
    }
    assert_int_equal(unf, 0); /* every path ends finished, counting nothing */
    assert_int_equal(run, 0);
}

static void test_the_paths_a_job_takes(void **state)
{
    (void)state;
    /* submitted, run for two steps, done */
    const job_phase done[] = {JOB_PH_ACCEPTING, JOB_PH_QUEUED,    JOB_PH_STARTING,
                              JOB_PH_SCORING,   JOB_PH_SAVING,    JOB_PH_SCORING,
                              JOB_PH_SAVING,    JOB_PH_FINISHING, JOB_PH_FINISHED};
    const int done_unf[] = {1, 1, 1, 1, 1, 1, 1, 0, 0}, done_run[] = {0, 0, 1, 1, 1, 1, 1, 0, 0};
    walk(done, 9, done_unf, done_run);
    /* a cache hit: accepted into nothing */
    const job_phase hit[] = {JOB_PH_ACCEPTING, JOB_PH_FINISHED};
    const int hit_unf[] = {1, 0}, hit_run[] = {0, 0};
    walk(hit, 2, hit_unf, hit_run);
    /* cancelled while queued */
    const job_phase cancelled[] = {JOB_PH_ACCEPTING, JOB_PH_QUEUED, JOB_PH_FINISHING,
                                   JOB_PH_FINISHED};
    const int can_unf[] = {1, 1, 0, 0}, can_run[] = {0, 0, 0, 0};
    walk(cancelled, 4, can_unf, can_run);
    /* shut down while scoring, recovered at the next start, then done */
    const job_phase resumed[] = {JOB_PH_ACCEPTING, JOB_PH_QUEUED,   JOB_PH_STARTING, JOB_PH_SCORING,
                                 JOB_PH_QUEUED,    JOB_PH_STARTING, JOB_PH_SCORING,  JOB_PH_SAVING,
                                 JOB_PH_FINISHING, JOB_PH_FINISHED};
    const int res_unf[] = {1, 1, 1, 1, 1, 1, 1, 1, 0, 0};
    const int res_run[] = {0, 0, 1, 1, 0, 1, 1, 1, 0, 0};
    walk(resumed, 10, res_unf, res_run);
    /* recovered finished */
    const job_phase old[] = {JOB_PH_FINISHED};
    const int zero[] = {0};
    walk(old, 1, zero, zero);
}

static void test_nothing_else_is_allowed(void **state)
{
    (void)state;
    int legal = 0;
    for (int from = 0; from < N_PHASES; from++)
        for (int to = 0; to < N_PHASES; to++) {
            int unf = 5, run = 5;
            int ok = job_phase_apply((job_phase)from, (job_phase)to, &unf, &run) == 0;
            assert_int_equal(ok, job_phase_legal((job_phase)from, (job_phase)to));
            if (!ok) assert_true(unf == 5 && run == 5); /* refused: nothing moved */
            legal += ok;
        }
    /* The table in job_phase.c: 3 + 2 + 2 + 3 + 3 + 3 + 1 + 0 transitions. */
    assert_int_equal(legal, 17);
    /* A few that would be bugs. */
    assert_false(job_phase_legal(JOB_PH_FINISHED, JOB_PH_QUEUED));
    assert_false(job_phase_legal(JOB_PH_QUEUED, JOB_PH_SCORING));
    assert_false(job_phase_legal(JOB_PH_FINISHING, JOB_PH_QUEUED)); /* too late to cancel */
    assert_false(job_phase_legal(JOB_PH_SCORING, JOB_PH_SCORING));
    /* A transition that would take a counter below zero is refused too. */
    int unf = 0, run = 0;
    assert_int_equal(job_phase_apply(JOB_PH_SCORING, JOB_PH_SAVING, &unf, &run), 0);
    assert_int_equal(job_phase_apply(JOB_PH_SCORING, JOB_PH_FINISHING, &unf, &run), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_the_paths_a_job_takes),
        cmocka_unit_test(test_nothing_else_is_allowed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
