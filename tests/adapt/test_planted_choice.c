/*
 * Planted multiple-choice tasks are recovered as planted exact-match ones are: on the real
 * stories260K model (skipped when ZMIX_SHARED_DIR does not hold it) and on the demo model
 * (generated here). The choices are the model's own continuations under different mixes, the
 * answer the one z'(α*) prefers by a margin; the search must find a mix that picks the answer
 * on (nearly) every example, where the base model picks none and no single expert all.
 */
#include <cJSON.h>
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

#include "planted_search.h"

#ifndef ZMIX_CLI_PATH
#error "ZMIX_CLI_PATH must name the zmix binary"
#endif

static char tmp_dir[256];

static int make_tmp(void **state)
{
    (void)state;
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/zmix-test-planted-choice-XXXXXX");
    assert_non_null(mkdtemp(tmp_dir));
    return 0;
}

static int remove_tmp(void **state)
{
    (void)state;
    testutil_rmrf(tmp_dir);
    return 0;
}

static const float alpha_star[4] = {0.7f, 0.1f, 0.5f, 0.2f};

/* Plants a 4-choice task on the model at model_path, checks it is well posed, searches, and
 * (with_cli) runs `zmix adapt` on the same files, which must give the same α. */
static void recover(const char *model_path, uint64_t seed, int with_cli)
{
    zmix_error err;
    zmix_model *model = NULL;
    if (zmix_model_load(model_path, &model, &err)) fail_msg("load: %s", err.msg);
    char dir[512];
    snprintf(dir, sizeof dir, "%s/task-%llu", tmp_dir, (unsigned long long)seed);
    assert_int_equal(mkdir(dir, 0700), 0);
    zmix_planted_opts po;
    zmix_planted_opts_default(&po);
    po.seed = seed;
    po.n_examples = 16;
    po.n_choices = 4;
    po.alpha_star = alpha_star;
    po.distinct_from_base = 1;
    zmix_planted p;
    if (zmix_planted_create(model, dir, &po, &p, &err)) fail_msg("planted: %s", err.msg);

    /* The task as planted: 4 distinct choices per example, answers in shuffled places. */
    assert_int_equal(p.examples.n, 16);
    int places = 0;
    for (int i = 0; i < p.examples.n; i++) {
        const zmix_example *x = &p.examples.items[i];
        assert_int_equal(x->n_choices, 4);
        assert_int_equal(x->n_target, 0);
        assert_true(x->answer >= 0 && x->answer < 4);
        places |= 1 << x->answer;
        for (int a = 0; a < 4; a++)
            for (int b = a + 1; b < 4; b++)
                assert_true(memcmp(x->choices + a * po.target_len, x->choices + b * po.target_len,
                                   (size_t)po.target_len * sizeof(int32_t)));
    }
    assert_true(places != 1 && places != 2 && places != 4 && places != 8);

    zmix_runtime *rt;
    zmix_adapt_opts o;
    zmix_adapt_result r;
    planted_search(model, &p, &rt, &o, &r);
    /* Well posed: α* picks every answer by the margin (and the base model picks none). */
    zmix_compose_opts co = zmix_adapt_compose_opts(&o);
    zmix_score star;
    assert_int_equal(zmix_score_alpha(rt, &co, &p.examples, 1, alpha_star, NULL, &star, NULL, &err),
                     0);
    assert_true(star.accuracy == 1.0);
    assert_true(star.loglik >= po.choice_margin);
    print_message("%s seed %llu: best acc %.4f margin %.4f after %d generations (%s); base acc "
                  "%.4f; experts acc %.4f %.4f %.4f %.4f\n",
                  model_path, (unsigned long long)seed, r.best.accuracy, r.best.loglik,
                  r.generations, zmix_cem_stop_name(r.stop), r.base.accuracy, r.experts[0].accuracy,
                  r.experts[1].accuracy, r.experts[2].accuracy, r.experts[3].accuracy);
    assert_int_equal(r.settings.metric, ZMIX_METRIC_CHOICE);
    assert_true(r.base.accuracy == 0.0);
    assert_true(r.best.accuracy >= 0.9);
    for (int k = 0; k < 4; k++)
        assert_true(zmix_score_cmp(&r.best, &r.experts[k], ZMIX_METRIC_CHOICE) > 0);

    if (with_cli) {
        char ex_path[600], res_path[600], out[1 << 16];
        snprintf(ex_path, sizeof ex_path, "%s/ex.json", dir);
        snprintf(res_path, sizeof res_path, "%s/result.json", dir);
        assert_int_equal(zmix_adapt_examples_save_json(ex_path, &p.examples, &err), 0);
        planted_search_cli(ZMIX_CLI_PATH, model_path, &p, ex_path, res_path, out, sizeof out);
        assert_non_null(strstr(out, "generation 1/30: best acc"));
        assert_non_null(strstr(out, "margin"));
        size_t len;
        char *text = testutil_read_file(res_path, &len);
        cJSON *j = cJSON_Parse(text);
        free(text);
        assert_non_null(j);
        /* The same search as the library's: the metric named, α and accuracy bit for bit. */
        const cJSON *metric = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "settings"), "metric");
        assert_string_equal(metric->valuestring, "choice");
        const cJSON *a = cJSON_GetObjectItem(j, "alpha");
        for (int k = 0; k < 4; k++)
            assert_true((float)cJSON_GetArrayItem(a, k)->valuedouble == r.alpha[k]);
        const cJSON *best = cJSON_GetObjectItem(j, "best");
        assert_true(cJSON_GetObjectItem(best, "accuracy")->valuedouble == r.best.accuracy);
        cJSON_Delete(j);

        /* zmix score with α*: every answer right and chosen, by its margin, under both norms
         * (the choices have equal lengths, so per token and summed agree on the choice). */
        for (int norm = 0; norm < 2; norm++) {
            char cmd[8192];
            snprintf(cmd, sizeof cmd,
                     "%s score --model %s --experts %s,%s,%s,%s --alpha 0.7,0.1,0.5,0.2 "
                     "--examples %s --choice-norm %s 2>/dev/null",
                     ZMIX_CLI_PATH, model_path, p.expert_paths[0], p.expert_paths[1],
                     p.expert_paths[2], p.expert_paths[3], ex_path, norm ? "none" : "token");
            int code = testutil_run_capture(cmd, out, sizeof out);
            if (code != 0) fail_msg("zmix score exited %d: %s", code, out);
            cJSON *sj = cJSON_Parse(out);
            assert_non_null(sj);
            assert_true(cJSON_GetObjectItem(sj, "accuracy")->valuedouble == 1.0);
            assert_string_equal(cJSON_GetObjectItem(sj, "choice_norm")->valuestring,
                                norm ? "none" : "token");
            const cJSON *list = cJSON_GetObjectItem(sj, "examples");
            assert_int_equal(cJSON_GetArraySize(list), p.examples.n);
            for (int i = 0; i < p.examples.n; i++) {
                const cJSON *e = cJSON_GetArrayItem(list, i);
                assert_true(cJSON_IsTrue(cJSON_GetObjectItem(e, "right")));
                assert_int_equal(cJSON_GetObjectItem(e, "chosen")->valueint,
                                 p.examples.items[i].answer);
                double m = cJSON_GetObjectItem(e, "margin")->valuedouble;
                assert_true(m >= (norm ? po.target_len : 1) * po.choice_margin);
            }
            cJSON_Delete(sj);
        }
    }
    zmix_adapt_result_free(&r);
    zmix_runtime_free(rt);
    zmix_planted_free(&p);
    zmix_model_free(model);
}

static void test_stories260k(void **state)
{
    (void)state;
    const char *shared = getenv("ZMIX_SHARED_DIR");
    char model_path[1024], cfg[1100];
    snprintf(model_path, sizeof model_path, "%s/models/stories260K", shared ? shared : "");
    snprintf(cfg, sizeof cfg, "%s/config.json", model_path);
    if (!shared || access(cfg, R_OK)) {
        print_message("stories260K not found under ZMIX_SHARED_DIR: skipping\n");
        skip();
    }
    recover(model_path, 2026, 1);
}

/* Writes the demo (model, experts, its exact-match task) into tmp_dir/demo. */
static void make_demo(char *demo, size_t demo_size, char *model_path, size_t path_size,
                      zmix_demo_info *info)
{
    snprintf(demo, demo_size, "%s/demo", tmp_dir);
    zmix_demo_opts o;
    zmix_demo_opts_default(&o);
    o.n_examples = 4;
    o.n_heldout = 0;
    zmix_error err;
    if (zmix_demo_create(demo, &o, info, &err)) fail_msg("demo: %s", err.msg);
    snprintf(model_path, path_size, "%s/model", demo);
}

static void test_demo_model(void **state)
{
    (void)state;
    char demo[600], model_path[700];
    zmix_demo_info info;
    make_demo(demo, sizeof demo, model_path, sizeof model_path, &info);
    recover(model_path, 7, 0);
}

/* A choice metric asks for multiple-choice examples: an exact-match set is refused. */
static void test_choice_metric_needs_choices(void **state)
{
    (void)state;
    char demo[600], model_path[700];
    zmix_demo_info info;
    make_demo(demo, sizeof demo, model_path, sizeof model_path, &info);
    char cmd[8192], out[4096];
    snprintf(cmd, sizeof cmd,
             "%s adapt --model %s --experts %s/experts/%s.safetensors --examples %s/task.json "
             "--metric choice --quiet",
             ZMIX_CLI_PATH, model_path, demo, info.expert_names[0], demo);
    int code = testutil_run_capture(cmd, out, sizeof out);
    if (code != 1 || !strstr(out, "metric 'choice' scores multiple-choice examples"))
        fail_msg("exit %d: %s", code, out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_stories260k, make_tmp, remove_tmp),
        cmocka_unit_test_setup_teardown(test_demo_model, make_tmp, remove_tmp),
        cmocka_unit_test_setup_teardown(test_choice_metric_needs_choices, make_tmp, remove_tmp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
