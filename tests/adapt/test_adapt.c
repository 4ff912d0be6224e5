/*
 * The adaptation driver against the real scorer: baselines, the result and its JSON, and the
 * planted recovery test on ../shared/models/stories260K (skipped when the model is absent),
 * through the library and through the `zmix adapt` command.
 */
#define _GNU_SOURCE /* popen, mkdtemp */
#include <cJSON.h>
#include <dirent.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "testutil.h"

#include "model/model_internal.h"
#include "zmix/adapt.h"

#include "planted_search.h"

#ifndef ZMIX_CLI_PATH
#error "ZMIX_CLI_PATH must name the zmix binary"
#endif

/* ---- helpers ----------------------------------------------------------------------- */

/* Directories made by the running test, removed by its teardown even when an assertion
 * fails half-way (cmocka leaves the test with a longjmp). */
static char made_dirs[4][256];
static int n_made_dirs;

static void make_tmpdir(char *buf, size_t n)
{
    snprintf(buf, n, "/tmp/zmix-test-adapt-XXXXXX");
    assert_non_null(mkdtemp(buf));
    if (n_made_dirs < 4) snprintf(made_dirs[n_made_dirs++], sizeof made_dirs[0], "%s", buf);
}

static int remove_made_dirs(void **state)
{
    for (int i = 0; i < n_made_dirs; i++) testutil_rmrf(made_dirs[i]);
    n_made_dirs = 0;
    return 0;
}

static int shared_model_path(char *buf, size_t n)
{
    const char *shared = getenv("ZMIX_SHARED_DIR");
    if (!shared) return -1;
    snprintf(buf, n, "%s/models/stories260K", shared);
    char cfg[1100];
    snprintf(cfg, sizeof cfg, "%s/config.json", buf);
    return access(cfg, R_OK);
}

/* A small random model (no file needed) for the checks that do not care about quality. */
static zmix_model *random_model(void)
{
    zmix_model_config cfg;
    memset(&cfg, 0, sizeof cfg);
    snprintf(cfg.model_type, sizeof cfg.model_type, "llama");
    cfg.dim = 16;
    cfg.hidden_dim = 24;
    cfg.n_layers = 2;
    cfg.n_heads = 2;
    cfg.n_kv_heads = 2;
    cfg.head_dim = 8;
    cfg.vocab_size = 40;
    cfg.max_seq_len = 32;
    cfg.norm_eps = 1e-5f;
    cfg.rope_theta = 10000.0f;
    cfg.tied_embeddings = 1;
    cfg.rope_interleaved = 1;
    cfg.bos_id = 1;
    cfg.eos_id = 2;
    zmix_model *m = NULL;
    zmix_error err;
    if (zmix_model_create_random(&cfg, 77, &m, &err)) fail_msg("random model: %s", err.msg);
    return m;
}

/* A result document as a reader sees it: printed, then parsed. */
static cJSON *as_text_and_back(cJSON *tree)
{
    char *text = cJSON_PrintUnformatted(tree);
    cJSON_Delete(tree);
    assert_non_null(text);
    cJSON *j = cJSON_Parse(text);
    free(text);
    return j;
}

/* ---- the driver on a random model -------------------------------------------------- */

typedef struct small_task {
    char dir[256];
    zmix_model *model;
    zmix_runtime *rt;
    zmix_examples ex;
    char *paths[3];
} small_task;

/* Three random experts written with zmix_expert_save, and four hand-made examples. */
/* z of expert k at singular value i: mild by default, or far from the base model. */
static float expert_z(int k, size_t i, int extreme)
{
    /* Every expert with the same lopsided pattern: no mixture comes near z' = 1. */
    if (extreme) return (i % 2 ? 3.0f : 0.05f) * (1.0f + 0.1f * (float)k);
    return 0.5f + 0.25f * (float)((i * 7 + (size_t)k * 3) % 5);
}

static void small_task_make_z(small_task *t, int n_experts, int extreme);

static void small_task_make(small_task *t, int n_experts)
{
    small_task_make_z(t, n_experts, 0);
}

static void small_task_make_z(small_task *t, int n_experts, int extreme)
{
    memset(t, 0, sizeof *t);
    make_tmpdir(t->dir, sizeof t->dir);
    t->model = random_model();
    zmix_error err;
    zmix_adapted *list;
    int n;
    size_t z_total;
    assert_int_equal(zmix_adapted_list(t->model, ZMIX_ADAPT_MLP, &list, &n, &z_total, &err), 0);
    float *z = malloc(z_total * sizeof *z);
    for (int k = 0; k < n_experts; k++) {
        for (size_t i = 0; i < z_total; i++) z[i] = expert_z(k, i, extreme);
        t->paths[k] = malloc(512);
        snprintf(t->paths[k], 512, "%s/e%d.st", t->dir, k);
        if (zmix_expert_save(t->paths[k], list, n, z, NULL, NULL, 0, &err))
            fail_msg("expert save: %s", err.msg);
    }
    free(z);
    free(list);
    zmix_runtime_opts ro;
    zmix_runtime_opts_default(&ro);
    if (zmix_runtime_create(t->model, &ro, (const char *const *)t->paths, n_experts, &t->rt, &err))
        fail_msg("runtime: %s", err.msg);
    int32_t p0[] = {1, 5, 9}, t0[] = {4, 4}, p1[] = {1, 12}, t1[] = {30}, p2[] = {1, 3, 3, 3},
            t2[] = {8, 9, 10}, p3[] = {1}, t3[] = {20};
    zmix_example items[4] = {{p0, 3, t0, 2, 0, NULL, NULL, 0},
                             {p1, 2, t1, 1, 0, NULL, NULL, 0},
                             {p2, 4, t2, 3, 0, NULL, NULL, 0},
                             {p3, 1, t3, 1, 0, NULL, NULL, 0}};
    assert_int_equal(zmix_examples_copy(items, 4, &t->ex, &err), 0);
}

static void small_task_free(small_task *t)
{
    zmix_examples_free(&t->ex);
    zmix_runtime_free(t->rt);
    zmix_model_free(t->model);
    for (int k = 0; k < 3; k++) free(t->paths[k]);
    testutil_rmrf(t->dir);
}

static void test_baselines_and_result(void **state)
{
    small_task t;
    small_task_make(&t, 3);
    zmix_error err;
    zmix_adapt_opts o;
    zmix_adapt_opts_default(&o);
    o.cem.method = ZMIX_CEM_METHOD_CEM; /* the engine's CEM mechanics: elitism, elites */
    o.cem.pop_size = 8;
    o.cem.elite_ratio = 0.5; /* one elite would have std 0 and stop on std_tolerance at once */
    o.cem.max_generations = 4;
    o.cem.seed = 5;
    o.cem.target_accuracy = 2; /* four generations whatever the scores */
    o.validation = 0;          /* every example searched: compared with direct scoring below */
    zmix_score_ctl ctl = {1, NULL, ZMIX_CHOICE_PER_TOKEN};
    zmix_adapt_result r;
    assert_int_equal(zmix_adapt_run(t.rt, &t.ex, &o, NULL, NULL, &r, &err), 0);
    zmix_score base = r.base, experts[3];
    memcpy(experts, r.experts, sizeof experts);
    /* the base is z' = 1 and each expert is its own z: compare with direct z scoring */
    size_t zt = zmix_runtime_z_total(t.rt);
    float *ones = malloc(zt * sizeof *ones);
    for (size_t i = 0; i < zt; i++) ones[i] = 1.0f;
    zmix_score s;
    assert_int_equal(zmix_score_z(t.rt, 1, &t.ex, 1, ones, &ctl, &s, NULL, &err), 0);
    s.margin = 0.0; /* a result does not report the margin */
    assert_memory_equal(&s, &base, sizeof s);
    for (int k = 0; k < 3; k++) {
        assert_int_equal(
            zmix_score_z(t.rt, 1, &t.ex, 1, zmix_runtime_expert_z(t.rt, k), &ctl, &s, NULL, &err),
            0);
        assert_true(fabs(s.loglik - experts[k].loglik) < 1e-5);
        assert_true(s.accuracy == experts[k].accuracy);
    }
    free(ones);

    assert_int_equal(r.dim, 3);
    assert_int_equal(r.n_experts, 3);
    assert_int_equal(r.generations, 4);
    assert_int_equal(r.n_history, 4);
    assert_int_equal(r.stop, ZMIX_CEM_STOP_MAX_GENERATIONS);
    assert_int_equal(r.evaluations, 8 + 3 * 7);
    assert_int_equal(r.skipped, 3);
    assert_memory_equal(&r.base, &base, sizeof base);
    assert_memory_equal(r.experts, experts, sizeof experts);
    /* the reported score is the score of the reported α */
    zmix_compose_opts co = zmix_adapt_compose_opts(&o);
    assert_int_equal(zmix_score_alpha(t.rt, &co, &t.ex, 1, r.alpha, &ctl, &s, NULL, &err), 0);
    s.margin = 0.0;
    assert_memory_equal(&s, &r.best, sizeof s);
    /* and z' is Σ α_k z_k */
    for (size_t i = 0; i < zt; i += 17) {
        double zi = 0.0;
        for (int k = 0; k < 3; k++) zi += r.alpha[k] * zmix_runtime_expert_z(t.rt, k)[i];
        assert_true(fabs(zi - r.z[i]) < 1e-5);
    }

    cJSON *j = as_text_and_back(zmix_adapt_result_to_json(&r, 1));
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "stop_reason")->valuestring, "max_generations");
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "alpha")), 3);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "history")), 4);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "single_experts")), 3);
    assert_int_equal(cJSON_GetObjectItem(j, "evaluations")->valueint, 29);
    assert_true((float)cJSON_GetArrayItem(cJSON_GetObjectItem(j, "alpha"), 1)->valuedouble ==
                r.alpha[1]);
    cJSON *z = cJSON_GetObjectItem(j, "z");
    assert_int_equal(cJSON_GetArraySize(z), zmix_runtime_n_matrices(t.rt));
    assert_string_equal(
        cJSON_GetObjectItem(cJSON_GetObjectItem(j, "settings"), "seed")->valuestring, "5");
    /* Read back, the document holds exactly the numbers of the search (the daemon keeps one
     * per finished job and serves status and history from it after a restart). */
    zmix_adapt_result back;
    assert_int_equal(zmix_adapt_result_from_json(j, &back, &err), 0);
    assert_int_equal(back.dim, r.dim);
    assert_memory_equal(back.alpha, r.alpha, (size_t)r.dim * sizeof *r.alpha);
    assert_memory_equal(&back.best, &r.best, sizeof r.best);
    assert_memory_equal(&back.base, &r.base, sizeof r.base);
    assert_int_equal(back.n_history, r.n_history);
    assert_memory_equal(back.history, r.history, (size_t)r.n_history * sizeof *r.history);
    assert_memory_equal(back.history_std, r.history_std,
                        (size_t)r.n_history * (size_t)r.dim * sizeof(double));
    assert_memory_equal(&back.settings.elite_ratio, &r.settings.elite_ratio, sizeof(double));
    assert_int_equal(back.stop, r.stop);
    assert_int_equal(back.evaluations, r.evaluations);
    assert_string_equal(back.key, r.key);
    assert_string_equal(back.model_fingerprint, r.model_fingerprint);
    assert_string_equal(back.expert_names[2], r.expert_names[2]);
    zmix_adapt_result_free(&back);
    cJSON_Delete(j);
    zmix_adapt_result_free(&r);

    /* per-layer: M·K coordinates */
    o.per_layer = 1;
    assert_int_equal(zmix_adapt_run(t.rt, &t.ex, &o, NULL, NULL, &r, &err), 0);
    assert_int_equal(r.dim, 3 * zmix_runtime_n_matrices(t.rt));
    zmix_adapt_result_free(&r);

    /* engine settings errors come back from the driver naming the field */
    o.cem.pop_size = 1;
    assert_int_equal(zmix_adapt_run(t.rt, &t.ex, &o, NULL, NULL, &r, &err), ZMIX_EINVAL);
    assert_non_null(strstr(err.msg, "pop_size = 1"));
    o.cem.pop_size = 8;
    o.cem.elite_ratio = 1.5;
    assert_int_equal(zmix_adapt_run(t.rt, &t.ex, &o, NULL, NULL, &r, &err), ZMIX_EINVAL);
    assert_non_null(strstr(err.msg, "elite_ratio = 1.5"));
    o.cem.elite_ratio = 0.2;
    o.cem.lo = 1.0;
    o.cem.hi = 0.0;
    assert_int_equal(zmix_adapt_run(t.rt, &t.ex, &o, NULL, NULL, &r, &err), ZMIX_EINVAL);
    assert_non_null(strstr(err.msg, "min must be below max"));
    small_task_free(&t);
}

/* One step of a session, dealt to "workers" in pieces of three candidates, last piece first:
 * any split and order gives the same scores. */
static void step_in_reverse_pieces(zmix_session *s)
{
    zmix_error err;
    int n = zmix_session_begin_step(s, &err);
    assert_true(n > 0);
    zmix_work all;
    assert_int_equal(zmix_session_split(s, 1, &all, 1), 1);
    zmix_score_ctl ctl = {1, NULL, ZMIX_CHOICE_PER_TOKEN};
    for (int end = all.end; end > all.begin; end -= 3) {
        zmix_work w = {end - 3 < all.begin ? all.begin : end - 3, end, 0, {0}};
        assert_int_equal(zmix_session_score(s, &w, &ctl), 0);
    }
    assert_int_equal(zmix_session_end_step(s, 0.0, &err), 0);
}

/* The daemon's way: step the session with the candidates split into pieces scored in any
 * order, and save/restore it between steps. Same α, history and baselines bit for bit as
 * zmix_adapt_run; and a result taken before the first generation is a valid, empty one. */
static void test_piecewise_matches_run(void **state)
{
    small_task t;
    small_task_make(&t, 3);
    zmix_error err;
    zmix_adapt_opts o;
    zmix_adapt_opts_default(&o);
    o.cem.pop_size = 10;
    o.cem.elite_ratio = 0.3;
    o.cem.max_generations = 6;
    o.cem.seed = 9;
    o.cem.stream = 3;
    zmix_adapt_result ref;
    assert_int_equal(zmix_adapt_run(t.rt, &t.ex, &o, NULL, NULL, &ref, &err), 0);

    zmix_session *s;
    assert_int_equal(zmix_session_create(t.rt, &t.ex, &o, &s, &err), 0);
    assert_int_equal(zmix_session_phase_get(s), ZMIX_SESSION_BASELINES);
    assert_int_equal(zmix_session_begin_step(s, &err), 4); /* the base and three experts */
    zmix_work pieces[8];
    assert_int_equal(zmix_session_split(s, 2, pieces, 8), 4); /* ceil(4 / (2·2)) = 1 each */
    zmix_session_abort_step(s);

    zmix_adapt_result early;
    assert_int_equal(zmix_session_result(s, &early, &err), 0);
    assert_int_equal(early.stop, ZMIX_CEM_RUNNING);
    assert_null(early.z);
    assert_true(isnan(early.alpha[0]));
    assert_true(isnan(early.base.accuracy));
    cJSON *j = as_text_and_back(zmix_adapt_result_to_json(&early, 1));
    assert_true(cJSON_IsNull(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "alpha"), 0)));
    assert_string_equal(cJSON_GetObjectItem(j, "stop_reason")->valuestring, "running");
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(j, "z")));
    assert_int_equal(strlen(cJSON_GetObjectItem(j, "key")->valuestring), 64);
    cJSON_Delete(j);
    zmix_adapt_result_free(&early);

    int steps = 0;
    while (zmix_session_phase_get(s) != ZMIX_SESSION_DONE) {
        step_in_reverse_pieces(s);
        if (++steps == 3) { /* a checkpoint mid-search, resumed into a fresh session */
            uint8_t *buf;
            size_t len;
            assert_int_equal(zmix_session_save(s, &buf, &len, &err), 0);
            zmix_session_free(s);
            assert_int_equal(zmix_session_restore(t.rt, &t.ex, &o, buf, len, &s, &err), 0);
            buf[len / 2] ^= 1; /* a damaged checkpoint is refused, not trusted */
            zmix_session *bad = NULL;
            assert_int_equal(zmix_session_restore(t.rt, &t.ex, &o, buf, len, &bad, &err),
                             ZMIX_EFORMAT);
            assert_null(bad);
            free(buf);
        }
    }
    assert_int_equal(zmix_session_begin_step(s, &err), 0);
    zmix_adapt_result r;
    assert_int_equal(zmix_session_result(s, &r, &err), 0);
    assert_memory_equal(r.alpha, ref.alpha, 3 * sizeof(float));
    assert_memory_equal(&r.best, &ref.best, sizeof r.best);
    assert_memory_equal(&r.base, &ref.base, sizeof r.base);
    assert_memory_equal(r.experts, ref.experts, 3 * sizeof *r.experts);
    assert_int_equal(r.n_history, ref.n_history);
    assert_memory_equal(r.history_mean, ref.history_mean, (size_t)r.n_history * 3 * sizeof(double));
    assert_string_equal(r.key, ref.key);
    zmix_adapt_result_free(&r);
    zmix_adapt_result_free(&ref);
    zmix_session_free(s);
    small_task_free(&t);
}

static int has_warning(const zmix_adapt_result *r, const char *needle)
{
    for (int i = 0; i < r->n_warnings; i++)
        if (strstr(r->warnings[i], needle)) return 1;
    return 0;
}

/* Held out: a quarter of the examples by default, the same ones whatever the seed, scored
 * only after the search; the result reports them with a Wilson interval. */
static void test_validation_is_held_out(void **state)
{
    small_task t;
    small_task_make(&t, 3);
    zmix_error err;
    zmix_adapt_opts o;
    zmix_adapt_opts_default(&o);
    o.cem.pop_size = 8;
    o.cem.max_generations = 3;
    zmix_adapt_result a, b;
    assert_int_equal(zmix_adapt_run(t.rt, &t.ex, &o, NULL, NULL, &a, &err), 0);
    assert_int_equal(a.n_train, 3);
    assert_int_equal(a.n_validation, 1);
    assert_true(a.have_validation);
    assert_true(a.val_acc_lo <= a.val_best.accuracy && a.val_best.accuracy <= a.val_acc_hi);
    assert_true(a.val_acc_lo >= 0.0 && a.val_acc_hi <= 1.0 && a.val_acc_hi - a.val_acc_lo > 0.5);
    /* Which example is held out depends on the examples only: the base model's held-out
     * score is the same under another seed, and it is the score of one of the examples. */
    o.cem.seed = 99;
    assert_int_equal(zmix_adapt_run(t.rt, &t.ex, &o, NULL, NULL, &b, &err), 0);
    assert_memory_equal(&a.val_base, &b.val_base, sizeof a.val_base);
    zmix_score_ctl ctl = {1, NULL, ZMIX_CHOICE_PER_TOKEN};
    size_t zt = zmix_runtime_z_total(t.rt);
    float *ones = malloc(zt * sizeof *ones);
    for (size_t i = 0; i < zt; i++) ones[i] = 1.0f;
    int matches = 0;
    for (int i = 0; i < t.ex.n; i++) {
        zmix_examples one = {t.ex.items + i, 1, NULL, 0};
        zmix_score sc;
        assert_int_equal(zmix_score_z(t.rt, 1, &one, 1, ones, &ctl, &sc, NULL, &err), 0);
        sc.margin = 0.0; /* a result does not report the margin */
        matches += !memcmp(&sc, &a.val_base, sizeof sc);
    }
    free(ones);
    assert_true(matches >= 1);
    cJSON *j = as_text_and_back(zmix_adapt_result_to_json(&a, 0));
    cJSON *v = cJSON_GetObjectItem(j, "validation");
    assert_int_equal(cJSON_GetObjectItem(v, "n_examples")->valueint, 1);
    assert_int_equal(cJSON_GetArraySize(
                         cJSON_GetObjectItem(cJSON_GetObjectItem(v, "best"), "accuracy_interval")),
                     2);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(v, "single_experts")), 3);
    cJSON_Delete(j);
    zmix_adapt_result_free(&a);
    zmix_adapt_result_free(&b);
    /* None held out: said so. */
    o.validation = 0;
    assert_int_equal(zmix_adapt_run(t.rt, &t.ex, &o, NULL, NULL, &a, &err), 0);
    assert_int_equal(a.n_validation, 0);
    assert_false(a.have_validation);
    assert_true(has_warning(&a, "no held-out estimate"));
    zmix_adapt_result_free(&a);
    o.validation = 0.75;
    assert_int_equal(zmix_adapt_run(t.rt, &t.ex, &o, NULL, NULL, &a, &err), ZMIX_ERANGE);
    assert_non_null(strstr(err.msg, "validation"));
    small_task_free(&t);
}

/* A task the unchanged model already solves, with experts far from it: no mixture does as
 * well, and the result is the base model, said out loud, instead of something worse. */
static void test_base_model_in_reach(void **state)
{
    small_task t;
    small_task_make_z(&t, 3, 1);
    zmix_error err;
    for (int i = 0; i < t.ex.n; i++) { /* targets: the base model's own continuations */
        zmix_example *e = &t.ex.items[i];
        int32_t *target = t.ex.tokens + (e->target - t.ex.tokens);
        assert_int_equal(
            zmix_generate(t.rt, 1, NULL, e->prompt, e->n_prompt, e->n_target, target, &err), 0);
    }
    zmix_adapt_opts o;
    zmix_adapt_opts_default(&o);
    o.cem.pop_size = 8;
    o.cem.max_generations = 3;
    o.validation = 0;
    zmix_adapt_result r;
    assert_int_equal(zmix_adapt_run(t.rt, &t.ex, &o, NULL, NULL, &r, &err), 0);
    assert_true(r.base.accuracy == 1.0);
    assert_true(zmix_score_cmp(&r.best, &r.base, ZMIX_METRIC_ACCURACY) >= 0); /* never worse */
    assert_true(r.base_weight == 1.0f);
    assert_memory_equal(&r.best, &r.base, sizeof r.best);
    for (int i = 0; i < r.dim; i++) assert_true(r.alpha[i] == 0.0f);
    for (size_t i = 0; i < r.z_total; i++) assert_true(r.z[i] == 1.0f);
    assert_true(has_warning(&r, "unchanged model"));
    /* and, since it reaches the target, no search was run for nothing */
    assert_true(has_warning(&r, "no search was run"));
    assert_int_equal(r.generations, 0);
    assert_int_equal(r.evaluations, 0);
    assert_int_equal(r.stop, ZMIX_CEM_STOP_TARGET);
    zmix_adapt_result_free(&r);
    small_task_free(&t);
}

/* Per-layer α by separable CMA-ES: its own population (4 + ⌊3 ln M·K⌋) spends the budget
 * pop × generations; the result is M·K wide, its history differs between matrices, and a
 * checkpoint taken at every step resumes bit for bit. */
static void test_per_layer_by_sep_cma(void **state)
{
    small_task t;
    small_task_make(&t, 3);
    zmix_error err;
    zmix_adapt_opts o;
    zmix_adapt_opts_default(&o);
    o.per_layer = 1;
    o.cem.pop_size = 8;
    o.cem.max_generations = 6;
    o.cem.target_accuracy = 2;
    o.validation = 0;
    int mk = 3 * zmix_runtime_n_matrices(t.rt);
    int lambda = zmix_cem_sep_cma_pop_size(mk);
    int gens = (8 * 6 + lambda - 1) / lambda;
    zmix_adapt_result ref;
    assert_int_equal(zmix_adapt_run(t.rt, &t.ex, &o, NULL, NULL, &ref, &err), 0);
    assert_int_equal(ref.dim, mk);
    assert_int_equal(ref.settings.method, ZMIX_CEM_METHOD_SEP_CMA);
    assert_int_equal(ref.settings.pop_size, lambda);
    assert_int_equal(ref.generations, gens);
    assert_int_equal(ref.n_history, gens);
    assert_int_equal(ref.evaluations, (long)gens * lambda);
    const double *last = ref.history_mean + (size_t)(gens - 1) * mk;
    int differs = 0;
    for (int i = 3; i < mk; i++) differs |= last[i] != last[i % 3];
    assert_true(differs);
    /* the reference's direct search is the CEM method with the options' population */
    o.cem.method = ZMIX_CEM_METHOD_CEM;
    zmix_adapt_result direct;
    assert_int_equal(zmix_adapt_run(t.rt, &t.ex, &o, NULL, NULL, &direct, &err), 0);
    assert_int_equal(direct.settings.method, ZMIX_CEM_METHOD_CEM);
    assert_int_equal(direct.settings.pop_size, 8);
    assert_int_equal(direct.generations, 6);
    zmix_adapt_result_free(&direct);
    o.cem.method = ZMIX_CEM_METHOD_SEP_CMA;

    zmix_session *s;
    assert_int_equal(zmix_session_create(t.rt, &t.ex, &o, &s, &err), 0);
    int last_gen = 0;
    while (zmix_session_begin_step(s, &err) > 0) {
        step_in_reverse_pieces(s);
        assert_true(zmix_session_generation(s) >= last_gen);
        last_gen = zmix_session_generation(s);
        float alpha[512];
        zmix_score sc;
        if (last_gen > 0) assert_int_equal(zmix_session_best(s, alpha, &sc), 0);
        uint8_t *buf;
        size_t len;
        assert_int_equal(zmix_session_save(s, &buf, &len, &err), 0);
        zmix_session_free(s);
        assert_int_equal(zmix_session_restore(t.rt, &t.ex, &o, buf, len, &s, &err), 0);
        free(buf);
    }
    assert_int_equal(zmix_session_generation(s), gens);
    zmix_adapt_result r;
    assert_int_equal(zmix_session_result(s, &r, &err), 0);
    assert_memory_equal(r.alpha, ref.alpha, (size_t)mk * sizeof(float));
    assert_memory_equal(r.history_std, ref.history_std, (size_t)gens * mk * sizeof(double));
    assert_int_equal(r.evaluations, ref.evaluations);
    zmix_adapt_result_free(&r);
    zmix_adapt_result_free(&ref);
    zmix_session_free(s);
    small_task_free(&t);
}

static int cancel_after_two(void *user, const zmix_session *s)
{
    int *calls = user;
    (*calls)++;
    return zmix_session_generation(s) >= 2;
}

static void test_single_expert_and_cancel(void **state)
{
    small_task t;
    small_task_make(&t, 1); /* K = 1: a one-dimensional search, allowed */
    zmix_error err;
    zmix_adapt_opts o;
    zmix_adapt_opts_default(&o);
    o.cem.pop_size = 6;
    o.cem.elite_ratio = 0.5;
    o.cem.max_generations = 5;
    zmix_adapt_result r;
    /* With the rescale, α·z has the mass of z whatever α: every candidate is the same model,
     * and the search says so after one generation instead of sampling float noise. */
    assert_int_equal(zmix_adapt_run(t.rt, &t.ex, &o, NULL, NULL, &r, &err), 0);
    assert_int_equal(r.dim, 1);
    assert_int_equal(r.stop, ZMIX_CEM_STOP_FLAT);
    assert_int_equal(r.generations, 1);
    assert_true(r.alpha[0] >= 0.0f && r.alpha[0] <= 1.0f);
    zmix_adapt_result_free(&r);
    /* Without it the scale matters: a real one-dimensional search, which a progress callback
     * cancels after two generations. */
    o.rescale = 0;
    int calls = 0;
    assert_int_equal(zmix_adapt_run(t.rt, &t.ex, &o, cancel_after_two, &calls, &r, &err),
                     ZMIX_ECANCELED);
    assert_int_equal(calls, 2);
    /* an empty example set is refused before any scoring */
    zmix_examples none = {NULL, 0, NULL, 0};
    assert_int_equal(zmix_adapt_run(t.rt, &none, &o, NULL, NULL, &r, &err), ZMIX_EINVAL);
    assert_non_null(strstr(err.msg, "empty"));
    small_task_free(&t);
}

/* Settings are judged before any file is opened: no model needed. One line, exit 2. */
static void test_cli_usage_errors(void **state)
{
    struct {
        const char *args;
        const char *needle;
    } bad[] = {
        /* the ranges of the settings table (adapt/cem_options.c), as zmix submit has them */
        {"--pop 1", "--pop: '1' is not an integer in [2, 1000000]"},
        {"--elite 0", "--elite: '0' is not a number in [1e-09, 1]"},
        {"--elite 1.5", "--elite: '1.5' is not a number in [1e-09, 1]"},
        /* what only the engine can judge: its own message */
        {"--pop 70000", "pop_size = 70000"},
        {"--bounds 1,0", "min must be below max"},
        {"--bounds 1", "--bounds"},
        {"--metric best", "--metric"},
        {"--iters x", "--iters"},
        {"--normalize --bounds -1,1", "normalize"},
        {"--adapt everything", "--adapt"},
        {"--frobnicate 1", "unknown option '--frobnicate'"},
    };
    char cmd[2048], out[4096];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(cmd, sizeof cmd,
                 "%s adapt --model /nonexistent --experts a.st,b.st --examples /nonexistent %s",
                 ZMIX_CLI_PATH, bad[i].args);
        int code = testutil_run_capture(cmd, out, sizeof out);
        if (code != 2 || !strstr(out, bad[i].needle) || strchr(out, '\n') != out + strlen(out) - 1)
            fail_msg("'%s': exit %d, output '%s' (expected one line naming '%s')", bad[i].args,
                     code, out, bad[i].needle);
    }
    snprintf(cmd, sizeof cmd, "%s adapt --experts a.st --examples x.json", ZMIX_CLI_PATH);
    assert_int_equal(testutil_run_capture(cmd, out, sizeof out), 2);
    assert_non_null(strstr(out, "--model"));
    snprintf(cmd, sizeof cmd, "%s adapt --model m --experts a.st,,b.st --examples x.json",
             ZMIX_CLI_PATH);
    assert_int_equal(testutil_run_capture(cmd, out, sizeof out), 2);
    assert_non_null(strstr(out, "empty entry"));
    /* a missing file is a runtime failure (exit 1) that names it */
    snprintf(cmd, sizeof cmd,
             "%s adapt --model /nonexistent/m --experts a.st --examples /nonexistent/ex.json",
             ZMIX_CLI_PATH);
    assert_int_equal(testutil_run_capture(cmd, out, sizeof out), 1);
    assert_non_null(
        strstr(out, "/nonexistent/")); /* the model or the examples, whichever is read first */
}

/* ---- planted recovery on the real model -------------------------------------------- */

static const float planted_alpha[4] = {0.7f, 0.1f, 0.5f, 0.2f};

/* The per-layer planted task of bench_search (60 coordinates, each target token leading by
 * 0.1 under α*), two of its seeds: the default search (separable CMA-ES steered by the margin)
 * solves them within the reference's 1,600 evaluations, where the CEM did not (docs/cem.md,
 * "Per-layer α"). A fast regression test of the benchmark's 10 seeds. */
static void test_planted_per_layer(void **state)
{
    char model_path[1024];
    if (shared_model_path(model_path, sizeof model_path) != 0) {
        print_message("stories260K not found under ZMIX_SHARED_DIR: skipping\n");
        skip();
    }
    zmix_error err;
    zmix_model *model = NULL;
    if (zmix_model_load(model_path, &model, &err)) fail_msg("load: %s", err.msg);
    for (int seed = 1; seed <= 2; seed++) {
        char dir[256];
        make_tmpdir(dir, sizeof dir);
        zmix_planted_opts po;
        zmix_planted_opts_default(&po);
        po.seed = 1000 + (uint64_t)seed;
        po.n_examples = 16;
        po.per_layer = 1;
        po.distinct_from_base = 1;
        po.target_margin = 0.1;
        zmix_planted p;
        if (zmix_planted_create(model, dir, &po, &p, &err)) fail_msg("planted: %s", err.msg);
        zmix_runtime_opts ro;
        zmix_runtime_opts_default(&ro);
        zmix_runtime *rt = NULL;
        if (zmix_runtime_create(model, &ro, (const char *const *)p.expert_paths, 4, &rt, &err))
            fail_msg("runtime: %s", err.msg);
        zmix_adapt_opts o;
        zmix_adapt_opts_default(&o);
        o.per_layer = 1;
        o.cem.seed = (uint64_t)seed;
        zmix_adapt_result r;
        if (zmix_adapt_run(rt, &p.examples, &o, NULL, NULL, &r, &err)) fail_msg("run: %s", err.msg);
        print_message("per-layer seed %d: best acc %.4f after %ld evaluations (%s)\n", seed,
                      r.best.accuracy, r.evaluations, zmix_cem_stop_name(r.stop));
        assert_int_equal(r.dim, 60);
        assert_int_equal(r.settings.method, ZMIX_CEM_METHOD_SEP_CMA);
        assert_true(r.best.accuracy == 1.0);
        assert_true(r.base_weight == 0.0f);
        assert_true(r.evaluations <= 1600);
        zmix_adapt_result_free(&r);
        zmix_runtime_free(rt);
        zmix_planted_free(&p);
    }
    zmix_model_free(model);
}

static void test_planted_recovery(void **state)
{
    char model_path[1024];
    if (shared_model_path(model_path, sizeof model_path) != 0) {
        print_message("stories260K not found under ZMIX_SHARED_DIR: skipping\n");
        skip();
    }
    zmix_error err;
    zmix_model *model = NULL;
    if (zmix_model_load(model_path, &model, &err)) fail_msg("load: %s", err.msg);
    char dir[256];
    make_tmpdir(dir, sizeof dir);

    zmix_planted_opts po;
    zmix_planted_opts_default(&po);
    po.seed = 2026;
    po.n_examples = 16;
    po.alpha_star = planted_alpha;
    zmix_planted p;
    if (zmix_planted_create(model, dir, &po, &p, &err)) fail_msg("planted: %s", err.msg);
    assert_int_equal(p.examples.n, 16);
    char ex_path[512];
    snprintf(ex_path, sizeof ex_path, "%s/ex.json", dir);
    assert_int_equal(zmix_adapt_examples_save_json(ex_path, &p.examples, &err), 0);

    /* The library path. */
    zmix_runtime *rt;
    zmix_adapt_opts o;
    zmix_adapt_result r;
    planted_search(model, &p, &rt, &o, &r);
    print_message("planted: best acc %.4f loglik %.4f after %d generations (%s); base acc %.4f "
                  "loglik %.4f; experts acc %.4f %.4f %.4f %.4f; alpha %.3f %.3f %.3f %.3f\n",
                  r.best.accuracy, r.best.loglik, r.generations, zmix_cem_stop_name(r.stop),
                  r.base.accuracy, r.base.loglik, r.experts[0].accuracy, r.experts[1].accuracy,
                  r.experts[2].accuracy, r.experts[3].accuracy, r.alpha[0], r.alpha[1], r.alpha[2],
                  r.alpha[3]);
    assert_true(r.best.accuracy >= 0.9);
    assert_true(zmix_score_cmp(&r.best, &r.base, ZMIX_METRIC_ACCURACY) > 0);
    for (int k = 0; k < 4; k++)
        assert_true(zmix_score_cmp(&r.best, &r.experts[k], ZMIX_METRIC_ACCURACY) > 0);
    /* α* itself decodes every target, by construction */
    zmix_compose_opts co = zmix_adapt_compose_opts(&o);
    zmix_score_ctl ctl = {1, NULL, ZMIX_CHOICE_PER_TOKEN};
    zmix_score star;
    assert_int_equal(
        zmix_score_alpha(rt, &co, &p.examples, 1, planted_alpha, &ctl, &star, NULL, &err), 0);
    assert_true(star.accuracy == 1.0);

    /* The command, on the same files and settings but two scoring threads: same α bit for
     * bit. */
    char cmd[16384], out[1 << 16], res_path[512];
    snprintf(res_path, sizeof res_path, "%s/result.json", dir);
    planted_search_cli(ZMIX_CLI_PATH, model_path, &p, ex_path, res_path, out, sizeof out);
    assert_non_null(strstr(out, "generation 1/30"));
    FILE *f = fopen(res_path, "r");
    assert_non_null(f);
    static char text[1 << 20];
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = '\0';
    fclose(f);
    cJSON *j = cJSON_Parse(text);
    assert_non_null(j);
    cJSON *alpha = cJSON_GetObjectItem(j, "alpha");
    assert_int_equal(cJSON_GetArraySize(alpha), 4);
    for (int k = 0; k < 4; k++)
        assert_true((float)cJSON_GetArrayItem(alpha, k)->valuedouble == r.alpha[k]);
    cJSON *best = cJSON_GetObjectItem(j, "best");
    assert_true(cJSON_GetObjectItem(best, "accuracy")->valuedouble == r.best.accuracy);
    assert_true(cJSON_GetObjectItem(j, "generations")->valueint == r.generations);
    cJSON_Delete(j);

    /* K = 1 runs */
    snprintf(cmd, sizeof cmd, "%s adapt --model %s --experts %s --examples %s --iters 2 --quiet",
             ZMIX_CLI_PATH, model_path, p.expert_paths[0], ex_path);
    int code = testutil_run_capture(cmd, out, sizeof out);
    if (code != 0) fail_msg("K = 1: exit %d: %s", code, out);
    /* example files with an empty target, an out-of-vocabulary id, no examples */
    const char *bad_ex[][2] = {
        {"{\"examples\":[{\"prompt\":[1,5],\"target\":[]}]}", "target"},
        {"{\"examples\":[{\"prompt\":[1,5],\"target\":[600]}]}", "600"},
        {"{\"examples\":[]}", "empty"},
    };
    for (size_t i = 0; i < sizeof bad_ex / sizeof bad_ex[0]; i++) {
        char bad_path[512];
        snprintf(bad_path, sizeof bad_path, "%s/bad%zu.json", dir, i);
        f = fopen(bad_path, "w");
        fputs(bad_ex[i][0], f);
        fclose(f);
        snprintf(cmd, sizeof cmd, "%s adapt --model %s --experts %s --examples %s --quiet",
                 ZMIX_CLI_PATH, model_path, p.expert_paths[0], bad_path);
        code = testutil_run_capture(cmd, out, sizeof out);
        if (code == 0 || !strstr(out, bad_ex[i][1]))
            fail_msg("%s: exit %d, output '%s' (expected '%s')", bad_ex[i][0], code, out,
                     bad_ex[i][1]);
    }

    zmix_adapt_result_free(&r);
    zmix_runtime_free(rt);
    zmix_planted_free(&p);
    zmix_model_free(model);
    testutil_rmrf(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_baselines_and_result, remove_made_dirs),
        cmocka_unit_test_teardown(test_validation_is_held_out, remove_made_dirs),
        cmocka_unit_test_teardown(test_base_model_in_reach, remove_made_dirs),
        cmocka_unit_test_teardown(test_piecewise_matches_run, remove_made_dirs),
        cmocka_unit_test_teardown(test_per_layer_by_sep_cma, remove_made_dirs),
        cmocka_unit_test_teardown(test_planted_per_layer, remove_made_dirs),
        cmocka_unit_test_teardown(test_single_expert_and_cancel, remove_made_dirs),
        cmocka_unit_test_teardown(test_cli_usage_errors, remove_made_dirs),
        cmocka_unit_test_teardown(test_planted_recovery, remove_made_dirs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
