/*
 * The demo pipeline, offline: `zmix demo-init` writes the same bytes for the same seed and
 * refuses to overwrite; the files are what docs/demo.md says (text task, secret α*, named
 * experts); and a search with a small budget (population 16, 12 generations) on the text task
 * finds a mix that beats the base model and every single expert, on the few-shot examples
 * and on the held-out ones, close to the hidden α*.
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

#include "zmix/adapt.h"
#include "zmix/demo.h"

#ifndef ZMIX_CLI_PATH
#error "ZMIX_CLI_PATH must name the zmix binary"
#endif

static cJSON *read_json(const char *path)
{
    size_t len;
    char *text = testutil_read_file(path, &len);
    cJSON *j = cJSON_Parse(text);
    free(text);
    if (!j) fail_msg("%s: not JSON", path);
    return j;
}

static int files_equal(const char *a, const char *b)
{
    size_t la, lb;
    char *x = testutil_read_file(a, &la), *y = testutil_read_file(b, &lb);
    int eq = la == lb && !memcmp(x, y, la);
    free(x);
    free(y);
    return eq;
}

/* Every file a demo holds, relative to its directory. */
static const char *const demo_files[] = {"demo.json",
                                         "model/config.json",
                                         "model/model.safetensors",
                                         "task.json",
                                         "model/tokenizer.json",
                                         "experts/red.safetensors",
                                         "heldout.json",
                                         "experts/green.safetensors",
                                         "experts/blue.safetensors",
                                         "experts/gold.safetensors",
                                         "secret/alpha_star.json",
                                         "task.tokens.json"};
#define N_DEMO_FILES (int)(sizeof demo_files / sizeof demo_files[0])

typedef struct fixture {
    char dir[64];
    zmix_demo_info info;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f) return -1;
    snprintf(f->dir, sizeof f->dir, "/tmp/zmix-test-demo-XXXXXX");
    if (!mkdtemp(f->dir)) return -1;
    zmix_demo_opts o;
    zmix_demo_opts_default(&o); /* the demo as shipped: seed 1, 16 + 16 examples */
    zmix_error err;
    if (zmix_demo_create(f->dir, &o, &f->info, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    testutil_rmrf(f->dir);
    free(f);
    return 0;
}

static void test_files(void **state)
{
    fixture *f = *state;
    char path[256];
    for (int i = 0; i < N_DEMO_FILES; i++) {
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", f->dir, demo_files[i]);
        if (stat(path, &st) != 0 || st.st_size == 0) fail_msg("%s is missing or empty", path);
    }
    /* The task is text; every target is 8 printable characters. */
    snprintf(path, sizeof path, "%s/task.json", f->dir);
    cJSON *task = read_json(path);
    const cJSON *list = cJSON_GetObjectItem(task, "examples");
    assert_int_equal(cJSON_GetArraySize(list), 16);
    const cJSON *e;
    cJSON_ArrayForEach(e, list)
    {
        const cJSON *p = cJSON_GetObjectItem(e, "prompt"), *t = cJSON_GetObjectItem(e, "target");
        assert_true(cJSON_IsString(p) && cJSON_IsString(t));
        assert_int_equal(strlen(t->valuestring), 8);
        for (const char *c = t->valuestring; *c; c++) assert_true(*c >= 0x20 && *c < 0x7f);
    }
    cJSON_Delete(task);
    /* α* is a mixture on the simplex and matches what the generator reported. */
    snprintf(path, sizeof path, "%s/secret/alpha_star.json", f->dir);
    cJSON *secret = read_json(path);
    const cJSON *a = cJSON_GetObjectItem(secret, "alpha_star");
    const cJSON *names = cJSON_GetObjectItem(secret, "experts");
    assert_int_equal(cJSON_GetArraySize(a), ZMIX_DEMO_N_EXPERTS);
    double sum = 0;
    for (int k = 0; k < ZMIX_DEMO_N_EXPERTS; k++) {
        double v = cJSON_GetArrayItem(a, k)->valuedouble;
        assert_true(v > 0.0 && v < 0.9);
        assert_float_equal(v, f->info.alpha_star[k], 1e-6);
        assert_string_equal(cJSON_GetArrayItem(names, k)->valuestring, f->info.expert_names[k]);
        sum += v;
    }
    assert_float_equal(sum, 1.0, 1e-5);
    cJSON_Delete(secret);
    /* The manifest does not give α* away, only where it is. */
    snprintf(path, sizeof path, "%s/demo.json", f->dir);
    size_t len;
    char *manifest = testutil_read_file(path, &len);
    assert_null(strstr(manifest, "0."));
    free(manifest);
}

static void test_same_seed_same_bytes(void **state)
{
    fixture *f = *state;
    char dir[] = "/tmp/zmix-test-demo2-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char cmd[512], out[4096], a[256], b[256];
    snprintf(cmd, sizeof cmd, "%s demo-init %s --seed 1", ZMIX_CLI_PATH, dir);
    assert_int_equal(testutil_run_capture(cmd, out, sizeof out), 0);
    assert_non_null(strstr(out, "experts/gold.safetensors"));
    assert_null(strstr(out, "0.")); /* α* stays secret */
    for (int i = 0; i < N_DEMO_FILES; i++) {
        snprintf(a, sizeof a, "%s/%s", f->dir, demo_files[i]);
        snprintf(b, sizeof b, "%s/%s", dir, demo_files[i]);
        if (!files_equal(a, b)) fail_msg("%s differs between two runs with seed 1", demo_files[i]);
    }
    /* A complete demo is not overwritten by accident... */
    assert_int_equal(testutil_run_capture(cmd, out, sizeof out), 1);
    assert_non_null(strstr(out, "already there"));
    /* ...and --force with another seed gives another model and task. */
    snprintf(cmd, sizeof cmd, "%s demo-init %s --seed 2 --force", ZMIX_CLI_PATH, dir);
    assert_int_equal(testutil_run_capture(cmd, out, sizeof out), 0);
    const char *differ[] = {"model/model.safetensors", "task.json", "experts/red.safetensors",
                            "secret/alpha_star.json"};
    for (int i = 0; i < 4; i++) {
        snprintf(a, sizeof a, "%s/%s", f->dir, differ[i]);
        snprintf(b, sizeof b, "%s/%s", dir, differ[i]);
        if (files_equal(a, b)) fail_msg("%s is the same for seeds 1 and 2", differ[i]);
    }
    snprintf(cmd, sizeof cmd, "%s demo-init %s --seed x", ZMIX_CLI_PATH, dir);
    assert_int_equal(testutil_run_capture(cmd, out, sizeof out), 2);
    testutil_rmrf(dir);
}

/* Loads the demo's runtime and one of its example files (text, through the tokenizer). */
static void open_demo(const fixture *f, zmix_model **model, zmix_runtime **rt)
{
    char path[256], paths[ZMIX_DEMO_N_EXPERTS][256];
    const char *p[ZMIX_DEMO_N_EXPERTS];
    zmix_error err;
    snprintf(path, sizeof path, "%s/model", f->dir);
    if (zmix_model_load(path, model, &err)) fail_msg("%s", err.msg);
    for (int k = 0; k < ZMIX_DEMO_N_EXPERTS; k++) {
        snprintf(paths[k], sizeof paths[k], "%s/experts/%s.safetensors", f->dir,
                 f->info.expert_names[k]);
        p[k] = paths[k];
    }
    zmix_runtime_opts ro;
    zmix_runtime_opts_default(&ro);
    if (zmix_runtime_create(*model, &ro, p, ZMIX_DEMO_N_EXPERTS, rt, &err)) fail_msg("%s", err.msg);
    /* Readable names, from the files' metadata. */
    for (int k = 0; k < ZMIX_DEMO_N_EXPERTS; k++)
        assert_string_equal(zmix_runtime_expert_name(*rt, k), f->info.expert_names[k]);
}

static void load_examples(const fixture *f, const zmix_model *model, const char *name,
                          zmix_examples *ex)
{
    char path[256];
    zmix_error err;
    snprintf(path, sizeof path, "%s/%s", f->dir, name);
    if (zmix_examples_load_json_tok(path, zmix_model_tokenizer(model), ex, &err))
        fail_msg("%s", err.msg);
}

static void test_offline_adaptation_beats_base_and_experts(void **state)
{
    fixture *f = *state;
    zmix_model *model = NULL;
    zmix_runtime *rt = NULL;
    open_demo(f, &model, &rt);
    zmix_examples ex, held;
    load_examples(f, model, "task.json", &ex);
    load_examples(f, model, "heldout.json", &held);
    /* The token-id copy of the task is the same examples. */
    zmix_examples ids;
    load_examples(f, model, "task.tokens.json", &ids);
    assert_int_equal(ids.n, ex.n);
    assert_int_equal(ids.n_tokens, ex.n_tokens);
    assert_memory_equal(ids.tokens, ex.tokens, ex.n_tokens * sizeof *ex.tokens);
    zmix_examples_free(&ids);

    zmix_adapt_opts o;
    zmix_adapt_opts_default(&o);
    o.cem.pop_size = 32; /* the demo's budget */
    o.cem.max_generations = 25;
    o.cem.normalize = 1;
    o.n_threads = 2;
    zmix_adapt_result res;
    zmix_error err;
    if (zmix_adapt_run(rt, &ex, &o, NULL, NULL, &res, &err)) fail_msg("%s", err.msg);
    print_message("base %.3f | experts %.3f %.3f %.3f %.3f | adapted %.3f after %ld evaluations\n",
                  res.base.accuracy, res.experts[0].accuracy, res.experts[1].accuracy,
                  res.experts[2].accuracy, res.experts[3].accuracy, res.best.accuracy,
                  res.evaluations);
    assert_true(res.best.accuracy > res.base.accuracy);
    for (int k = 0; k < ZMIX_DEMO_N_EXPERTS; k++)
        assert_true(res.best.accuracy > res.experts[k].accuracy);
    assert_true(res.best.accuracy >= 0.75);
    /* Recovered mix: on the simplex (normalised) and near α*. */
    double l1 = 0;
    for (int k = 0; k < ZMIX_DEMO_N_EXPERTS; k++) l1 += fabs(res.alpha[k] - f->info.alpha_star[k]);
    print_message("|alpha - alpha*|_1 = %.3f\n", l1);
    assert_true(l1 < 0.3);

    /* The mix generalises to prompts the search never saw. */
    zmix_compose_opts co = zmix_adapt_compose_opts(&o);
    zmix_score_ctl ctl = {2, NULL, ZMIX_CHOICE_PER_TOKEN};
    zmix_score adapted_held, base_held;
    if (zmix_score_alpha(rt, &co, &held, 1, res.alpha, &ctl, &adapted_held, NULL, &err))
        fail_msg("%s", err.msg);
    size_t zt = zmix_runtime_z_total(rt);
    float *ones = malloc(zt * sizeof *ones);
    assert_non_null(ones);
    for (size_t i = 0; i < zt; i++) ones[i] = 1.0f;
    if (zmix_score_z(rt, 0, &held, 1, ones, &ctl, &base_held, NULL, &err)) fail_msg("%s", err.msg);
    print_message("held out: base %.3f adapted %.3f\n", base_held.accuracy, adapted_held.accuracy);
    assert_true(adapted_held.accuracy > base_held.accuracy);
    /* Looser than on the few-shot set: many mixes near α* reproduce 16 examples, and the
     * small budget stops at one of them (the full demo's search lands closer). */
    assert_true(adapted_held.accuracy >= base_held.accuracy + 0.25);
    free(ones);
    zmix_adapt_result_free(&res);
    zmix_examples_free(&ex);
    zmix_examples_free(&held);
    zmix_runtime_free(rt);
    zmix_model_free(model);
}

/* `zmix score` reads the text task through the model's tokenizer: the base model's accuracy
 * it prints is the library's. */
static void test_cli_scores_text_task(void **state)
{
    fixture *f = *state;
    zmix_model *model = NULL;
    zmix_runtime *rt = NULL;
    open_demo(f, &model, &rt);
    zmix_examples ex;
    load_examples(f, model, "task.json", &ex);
    zmix_adapt_opts o;
    zmix_adapt_opts_default(&o);
    o.validation = 0; /* the baselines on every example, as zmix score measures */
    zmix_score base;
    zmix_error err;
    /* The base model's score as a search computes it: the baselines step of a session. */
    zmix_session *s = NULL;
    if (zmix_session_create(rt, &ex, &o, &s, &err)) fail_msg("%s", err.msg);
    assert_int_equal(zmix_session_begin_step(s, &err), 1 + ZMIX_DEMO_N_EXPERTS);
    zmix_work w = {0, 1 + ZMIX_DEMO_N_EXPERTS, 0, {0}};
    zmix_score_ctl ctl = {1, NULL, ZMIX_CHOICE_PER_TOKEN};
    if (zmix_session_score(s, &w, &ctl)) fail_msg("%s", w.err.msg);
    assert_int_equal(zmix_session_end_step(s, 0.0, &err), 0);
    assert_int_equal(zmix_session_baselines(s, &base, NULL), 0);
    zmix_session_free(s);

    char cmd[1024], out[8192];
    snprintf(cmd, sizeof cmd, "%s score --model %s/model --examples %s/task.json", ZMIX_CLI_PATH,
             f->dir, f->dir);
    assert_int_equal(testutil_run_capture(cmd, out, sizeof out), 0);
    cJSON *j = cJSON_Parse(out);
    if (!j) fail_msg("zmix score printed: %s", out);
    assert_float_equal(cJSON_GetObjectItem(j, "accuracy")->valuedouble, base.accuracy, 1e-12);
    assert_int_equal(cJSON_GetObjectItem(j, "n_examples")->valueint, 16);
    cJSON_Delete(j);

    /* The same file where the model has no tokenizer: refused, naming the example. */
    char bare[256];
    snprintf(bare, sizeof bare, "%s/bare", f->dir);
    assert_int_equal(mkdir(bare, 0777), 0);
    const char *files[] = {"config.json", "model.safetensors"};
    for (int i = 0; i < 2; i++) {
        char src[300], dst[300];
        snprintf(src, sizeof src, "%s/model/%s", f->dir, files[i]);
        snprintf(dst, sizeof dst, "%s/%s", bare, files[i]);
        assert_int_equal(symlink(src, dst), 0);
    }
    snprintf(cmd, sizeof cmd, "%s score --model %s --examples %s/task.json", ZMIX_CLI_PATH, bare,
             f->dir);
    assert_int_equal(testutil_run_capture(cmd, out, sizeof out), 1);
    assert_non_null(strstr(out, "examples[0].prompt is text"));
    testutil_rmrf(bare);
    zmix_examples_free(&ex);
    zmix_runtime_free(rt);
    zmix_model_free(model);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_files),
        cmocka_unit_test(test_same_seed_same_bytes),
        cmocka_unit_test(test_offline_adaptation_beats_base_and_experts),
        cmocka_unit_test(test_cli_scores_text_task),
    };
    return cmocka_run_group_tests_name("demo_pipeline", tests, setup, teardown);
}
