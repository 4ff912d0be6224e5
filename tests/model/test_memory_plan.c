/*
 * The memory plan: the probe reads what the loader would keep without reading a tensor, each
 * term of the plan equals what the runtime then allocates (factors, expert matrices), and the
 * check refuses a plan above the limit naming the setting that would make it fit.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compute.h"
#include "test_formats_fixtures.h"
#include "zmix/model.h"

typedef fixture_ctx ctx;

/* What the loader keeps, from the fixture's own tensor list: matrices as stored (mapped),
 * vectors as stored plus a float32 copy when 16-bit. */
static size_t expected_weight_bytes(const fixture_model *m)
{
    size_t total = 0;
    for (int i = 0; i < m->n; i++) {
        const fixture_tensor *t = &m->t[i];
        size_t es = strcmp(t->dtype, "F32") ? 2 : 4;
        total += t->numel * es;
        if (t->ndim == 1 && es == 2) total += t->numel * 4;
    }
    return total;
}

static void test_probe_reads_what_the_loader_keeps(void **state)
{
    ctx *c = *state;
    const char *dtypes[3] = {"BF16", "F16", "F32"};
    for (int i = 0; i < 3; i++) {
        fixture_model_free(&c->m);
        fixture_model_init(&c->m, i == 1 ? "qwen2" : "llama", i == 2, 1, dtypes[i], 3 + i);
        fixture_write_config(&c->m, c->dir,
                             "\"rope_scaling\": {\"rope_type\": \"linear\", \"factor\": 2.0}");
        fixture_write_weights(&c->m, c->dir, i == 0 ? 3 : 1);
        zmix_model_probe p;
        zmix_error err = {0};
        if (zmix_model_probe_path(c->dir, &p, &err)) fail_msg("%s", err.msg);
        zmix_model *model;
        if (zmix_model_load(c->dir, &model, &err)) fail_msg("%s", err.msg);
        assert_memory_equal(&p.cfg, zmix_model_get_config(model), sizeof p.cfg);
        assert_int_equal(p.half, zmix_model_has_half(model));
        assert_int_equal(p.weight_bytes, expected_weight_bytes(&c->m));
        zmix_model_free(model);
    }
}

/* The probe refuses what the loader refuses, in the same words, without reading tensors. */
static void test_probe_refuses_like_the_loader(void **state)
{
    ctx *c = *state;
    fixture_model_init(&c->m, "llama", 0, 1, "BF16", 9);
    fixture_write_weights(&c->m, c->dir, 1);
    const char *configs[] = {"\"rope_scaling\": {\"type\": \"longrope\"}", "\"vocab_size\": 99",
                             "\"head_dim\": 8"};
    for (int i = 0; i < 3; i++) {
        fixture_write_config(&c->m, c->dir, configs[i]);
        zmix_error a = {0}, b = {0};
        zmix_model_probe p;
        zmix_model *model = NULL;
        int ra = zmix_model_probe_path(c->dir, &p, &a), rb = zmix_model_load(c->dir, &model, &b);
        assert_true(ra < 0);
        assert_int_equal(ra, rb);
        assert_string_equal(a.msg, b.msg);
    }
    fixture_write_config(&c->m, c->dir, "");
    fixture_drop(&c->m, "model.layers.1.mlp.up_proj.weight");
    fixture_write_weights(&c->m, c->dir, 1);
    zmix_error a = {0}, b = {0};
    zmix_model_probe p;
    zmix_model *model = NULL;
    assert_int_equal(zmix_model_probe_path(c->dir, &p, &a), ZMIX_ENOTFOUND);
    assert_int_equal(zmix_model_load(c->dir, &model, &b), ZMIX_ENOTFOUND);
    assert_string_equal(a.msg, b.msg);
    char missing[600];
    snprintf(missing, sizeof missing, "%s/nope", c->dir);
    assert_int_equal(zmix_model_probe_path(missing, &p, &a), ZMIX_ENOTFOUND);
    assert_int_equal(zmix_model_load(missing, &model, &b), ZMIX_ENOTFOUND);
    assert_string_equal(a.msg, b.msg);
}

/* The plan's factor and expert terms are what the runtime allocates, for each factor dtype
 * and adapt set. */
static void test_plan_matches_the_runtime(void **state)
{
    ctx *c = *state;
    fixture_model_init(&c->m, "llama", 0, 1, "BF16", 4);
    fixture_write_config(&c->m, c->dir, "");
    fixture_write_weights(&c->m, c->dir, 1);
    zmix_model_probe p;
    zmix_model *model;
    zmix_error err = {0};
    assert_int_equal(zmix_model_probe_path(c->dir, &p, &err), 0);
    assert_int_equal(zmix_model_load(c->dir, &model, &err), 0);
    zmix_factor_dtype fds[4] = {ZMIX_FACTORS_AUTO, ZMIX_FACTORS_F32, ZMIX_FACTORS_F16,
                                ZMIX_FACTORS_BF16};
    zmix_adapt_set sets[2] = {ZMIX_ADAPT_MLP, ZMIX_ADAPT_ALL};
    for (int si = 0; si < 2; si++)
        for (int fi = 0; fi < 4; fi++) {
            zmix_memory_settings s;
            zmix_memory_settings_default(&s);
            s.adapt = sets[si];
            s.factor_dtype = fds[fi];
            s.n_experts = 2;
            zmix_memory_plan plan;
            zmix_memory_plan_compute(&p, &s, &plan);
            zmix_runtime_opts ro;
            zmix_runtime_opts_default(&ro);
            ro.adapt = sets[si];
            ro.factor_dtype = fds[fi];
            zmix_adapted *list;
            int n;
            size_t zt;
            assert_int_equal(zmix_adapted_list(model, sets[si], &list, &n, &zt, &err), 0);
            free(list);
            float *z = malloc(zt * sizeof *z);
            for (size_t i = 0; i < zt; i++) z[i] = 1.0f + 0.01f * (float)(i % 7);
            const float *zs[2] = {z, z};
            zmix_runtime *rt;
            if (zmix_runtime_create_from_z(model, &ro, zs, NULL, 2, &rt, &err))
                fail_msg("%s", err.msg);
            size_t factors = 0, wk = 0;
            for (int m = 0; m < rt->n_mat; m++) {
                const zmix_factors *f = &rt->factors[m];
                size_t es = f->dtype == ZMIX_DT_F32 ? 4 : 2;
                factors += ((size_t)f->rows * f->rank + (size_t)f->rank * f->cols) * es +
                           (size_t)f->rank * 4;
                wk += (size_t)rt->list[m].rows * rt->list[m].cols;
            }
            assert_int_equal(plan.factor_dtype, rt->factor_dtype == ZMIX_DT_F32 ? ZMIX_FACTORS_F32
                                                : rt->factor_dtype == ZMIX_DT_F16
                                                    ? ZMIX_FACTORS_F16
                                                    : ZMIX_FACTORS_BF16);
            assert_int_equal(plan.factors, factors);
            assert_int_equal(plan.expert_matrices, rt->expert_w_block != NULL);
            assert_int_equal(plan.experts, 2 * zt * 4 + (size_t)rt->n_mat * 2 * 8 + 2 * wk * 4);
            assert_int_equal(plan.weights, p.weight_bytes);
            assert_true(plan.svd > 0 &&
                        plan.setup == plan.overhead + plan.weights + plan.factors + plan.svd);
            /* Without a factor cache, U and Vt are heap blocks and stay. */
            assert_int_equal(plan.factors_kept, plan.factors);
            assert_int_equal(plan.steady, plan.overhead + plan.weights + plan.factors +
                                              plan.experts + plan.worker * 1 + plan.other);
            zmix_runtime_free(rt);
            free(z);
        }
    zmix_model_free(model);
}

/* Llama-3.1-8B's shape, as a probe would read it from a BF16 checkpoint: the plan's terms
 * checked against the arithmetic written out here. */
static zmix_model_probe llama8b(void)
{
    zmix_model_probe p;
    memset(&p, 0, sizeof p);
    zmix_model_config *c = &p.cfg;
    snprintf(c->model_type, sizeof c->model_type, "llama");
    c->dim = 4096, c->hidden_dim = 14336, c->n_layers = 32, c->n_heads = 32, c->n_kv_heads = 8;
    c->head_dim = 128, c->vocab_size = 128256, c->max_seq_len = 131072;
    p.half = 1;
    p.weight_bytes = (size_t)8030261248 * 2;
    return p;
}

static void test_plan_of_an_8b_model(void **state)
{
    zmix_model_probe p = llama8b();
    zmix_memory_settings s;
    zmix_memory_settings_default(&s);
    s.n_experts = 3;
    s.workers = 2;
    s.max_tokens = 65536;
    zmix_memory_plan plan;
    zmix_memory_plan_compute(&p, &s, &plan);
    size_t big = 14336, d = 4096; /* every MLP matrix has rank 4096 */
    size_t per_matrix = (big * d + d * d) * 2 + d * 4;
    assert_int_equal(plan.factor_dtype, ZMIX_FACTORS_F16);
    assert_int_equal(plan.factors, 96 * per_matrix); /* 14.5 GB in F16, 29 GB in F32 */
    assert_false(plan.expert_matrices);              /* 3 × 22.5 GB: above the cap */
    assert_int_equal(plan.experts, 3 * (96 * d) * 4 + 96 * 3 * 8);
    assert_true(plan.worker_fixed > 3 * big * d * 4);             /* one layer's W' */
    assert_int_equal(plan.worker_activations, (size_t)512 << 20); /* the budget binds */
    assert_true(plan.svd > 2 * big * d * 4);
    s.factor_dtype = ZMIX_FACTORS_F32;
    zmix_memory_plan f32;
    zmix_memory_plan_compute(&p, &s, &f32);
    assert_int_equal(f32.factors, 96 * ((big * d + d * d) * 4 + d * 4));
}

/* Over the limit: refused, naming the largest worker count that fits, or 16-bit factors, or
 * saying that no setting does; the option names are the caller's. */
static void test_check_names_what_fits(void **state)
{
    zmix_model_probe p = llama8b();
    zmix_error err = {0};
    zmix_memory_settings s;
    zmix_memory_settings_default(&s);
    s.n_experts = 3;
    s.workers = 8;
    s.workers_option = "--workers";
    zmix_memory_plan plan, three;
    zmix_memory_plan_compute(&p, &s, &plan);
    assert_int_equal(zmix_memory_plan_check(&p, &s, &plan, plan.peak, "MemAvailable", &err), 0);
    assert_int_equal(zmix_memory_plan_check(&p, &s, &plan, plan.peak - 1, "MemAvailable", &err),
                     ZMIX_ENOMEM);
    assert_non_null(strstr(err.msg, "it fits with --workers 7"));
    assert_non_null(strstr(err.msg, "while scoring but MemAvailable is"));
    zmix_memory_settings t = s;
    t.workers = 3;
    zmix_memory_plan_compute(&p, &t, &three);
    assert_int_equal(zmix_memory_plan_check(&p, &s, &plan, three.peak, "MemAvailable", &err),
                     ZMIX_ENOMEM);
    assert_non_null(strstr(err.msg, "it fits with --workers 3"));
    /* 16-bit factors when the program has the option and fewer workers are not enough. */
    s.workers = 1;
    s.factor_dtype = ZMIX_FACTORS_F32;
    s.factor_option = "--factor-dtype";
    s.limit_option = "--memory-limit";
    zmix_memory_plan_compute(&p, &s, &plan);
    t = s;
    t.factor_dtype = ZMIX_FACTORS_F16;
    zmix_memory_plan f16;
    zmix_memory_plan_compute(&p, &t, &f16);
    assert_int_equal(zmix_memory_plan_check(&p, &s, &plan, f16.peak, "MemAvailable", &err),
                     ZMIX_ENOMEM);
    assert_non_null(strstr(err.msg, "it fits with --factor-dtype f16"));
    assert_non_null(strstr(err.msg, "(--memory-limit sets the limit instead)"));
    assert_int_equal(zmix_memory_plan_check(&p, &s, &plan, f16.peak - 1, "MemAvailable", &err),
                     ZMIX_ENOMEM);
    assert_non_null(strstr(err.msg, "no setting of --workers or --factor-dtype makes it fit"));
    /* Without the program's option names, nothing is suggested that it does not have. */
    s.factor_option = s.limit_option = NULL;
    assert_int_equal(zmix_memory_plan_check(&p, &s, &plan, f16.peak, "MemAvailable", &err),
                     ZMIX_ENOMEM);
    assert_null(strstr(err.msg, "f16"));
}

/* The preflight on files: the plan line, the path in the refusal, the limit's name. */
static void test_preflight(void **state)
{
    ctx *c = *state;
    fixture_model_init(&c->m, "llama", 0, 1, "BF16", 6);
    fixture_write_config(&c->m, c->dir, "");
    fixture_write_weights(&c->m, c->dir, 1);
    zmix_memory_settings s;
    zmix_memory_settings_default(&s);
    s.limit_option = "--memory-limit";
    zmix_error err = {0};
    char report[1024];
    assert_int_equal(zmix_memory_preflight(c->dir, &s, 1000, report, sizeof report, &err),
                     ZMIX_ENOMEM);
    assert_non_null(strstr(report, "memory plan: weights "));
    assert_non_null(strstr(report, "(U, Vt F16)"));
    assert_non_null(strstr(err.msg, c->dir));
    assert_non_null(strstr(err.msg, "but --memory-limit is 1000 B"));
    assert_int_equal(
        zmix_memory_preflight(c->dir, &s, (size_t)1 << 40, report, sizeof report, &err), 0);
    assert_int_equal(zmix_memory_preflight(c->dir, &s, 0, report, sizeof report, &err), 0);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, fixture_ctx_setup, fixture_ctx_teardown)
    const struct CMUnitTest tests[] = {
        T(test_probe_reads_what_the_loader_keeps),
        T(test_probe_refuses_like_the_loader),
        T(test_plan_matches_the_runtime),
        cmocka_unit_test(test_plan_of_an_8b_model),
        cmocka_unit_test(test_check_names_what_fits),
        T(test_preflight),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
