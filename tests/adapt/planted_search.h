/*
 * The search the planted recovery tests run (test_adapt, test_planted_choice): a runtime on
 * the planted experts and zmix_adapt_run with the settings the tests' `zmix adapt` commands
 * repeat (--seed 11 --iters 30 --std-floor 0.02 --std-tol 0). A small floor keeps the search
 * from collapsing early; without it a few seeds stop on std_tolerance at 0.75-0.875
 * (docs/cem.md, "Planted tasks").
 */
#ifndef ZMIX_TESTS_PLANTED_SEARCH_H
#define ZMIX_TESTS_PLANTED_SEARCH_H

#include <stdio.h>

#include "testutil.h"
#include "zmix/adapt.h"

static void planted_search(const zmix_model *model, const zmix_planted *p, zmix_runtime **rt,
                           zmix_adapt_opts *o, zmix_adapt_result *r)
{
    zmix_error err;
    zmix_runtime_opts ro;
    zmix_runtime_opts_default(&ro);
    *rt = NULL;
    if (zmix_runtime_create(model, &ro, (const char *const *)p->expert_paths, p->n_experts, rt,
                            &err))
        fail_msg("runtime: %s", err.msg);
    zmix_adapt_opts_default(o);
    o->cem.seed = 11;
    o->cem.max_generations = 30;
    o->cem.std_floor = 0.02;
    o->cem.std_tol = 0.0;
    if (zmix_adapt_run(*rt, &p->examples, o, NULL, NULL, r, &err)) fail_msg("run: %s", err.msg);
}

/* The same search by `zmix adapt` (cli: the zmix binary) with two scoring threads, writing
 * the result document to result_path; fails the test unless it exits 0. out receives what it
 * printed. */
static void planted_search_cli(const char *cli, const char *model_path, const zmix_planted *p,
                               const char *ex_path, const char *result_path, char *out, size_t cap)
{
    char cmd[16384];
    snprintf(cmd, sizeof cmd,
             "%s adapt --model %s --experts %s,%s,%s,%s --examples %s --seed 11 --iters 30 "
             "--std-floor 0.02 --std-tol 0 --threads 2 --out %s",
             cli, model_path, p->expert_paths[0], p->expert_paths[1], p->expert_paths[2],
             p->expert_paths[3], ex_path, result_path);
    int code = testutil_run_capture(cmd, out, cap);
    if (code != 0) fail_msg("zmix adapt exited %d: %s", code, out);
}

#endif
