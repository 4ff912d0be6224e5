/* The factor cache as the runtime uses it: the first runtime computes and saves, the second
 * loads (the file is not rewritten) and scores bit-identically, and a corrupted file is
 * detected, recomputed and replaced. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "test_formats_fixtures.h"
#include "util/pcg.h"
#include "zmix/model.h"

typedef struct ctx {
    char dir[512];
    char cache[700];
    char experts[2][700];
    zmix_model *model;
    zmix_examples ex;
} ctx;

static int setup(void **state)
{
    ctx *c = calloc(1, sizeof *c);
    testutil_mkdtemp(c->dir, sizeof c->dir);
    zmix_model_config cfg = {.model_type = "llama",
                             .dim = 16,
                             .hidden_dim = 40,
                             .n_layers = 2,
                             .n_heads = 4,
                             .n_kv_heads = 2,
                             .head_dim = 4,
                             .vocab_size = 32,
                             .max_seq_len = 32,
                             .norm_eps = 1e-5f,
                             .rope_theta = 10000.0f,
                             .tied_embeddings = 1,
                             .bos_id = 1,
                             .eos_id = 2};
    zmix_error err = {0};
    assert_int_equal(zmix_model_create_random(&cfg, 17, &c->model, &err), 0);
    snprintf(c->cache, sizeof c->cache, "%s/factors-%.16s-mlp.safetensors", c->dir,
             zmix_model_fingerprint(c->model));

    /* Two experts with random z near 1. */
    zmix_adapted *list;
    int n;
    size_t z_total;
    assert_int_equal(zmix_adapted_list(c->model, ZMIX_ADAPT_MLP, &list, &n, &z_total, &err), 0);
    float *z = malloc(z_total * sizeof *z);
    pcg32 rng;
    pcg32_seed(&rng, 5, 5);
    for (int k = 0; k < 2; k++) {
        for (size_t i = 0; i < z_total; i++) z[i] = 1.0f + 0.3f * (float)pcg32_normal(&rng);
        snprintf(c->experts[k], sizeof c->experts[k], "%s/expert%d.safetensors", c->dir, k);
        assert_int_equal(zmix_expert_save(c->experts[k], list, n, z, NULL, NULL, 0, &err), 0);
    }
    free(z);
    free(list);

    int32_t p0[] = {1, 5, 9, 3}, t0[] = {7, 8}, p1[] = {1, 30}, t1[] = {4, 4, 2};
    zmix_example items[2] = {{p0, 4, t0, 2, 0, NULL, NULL, 0}, {p1, 2, t1, 3, 0, NULL, NULL, 0}};
    assert_int_equal(zmix_examples_copy(items, 2, &c->ex, &err), 0);
    *state = c;
    return 0;
}

static int teardown(void **state)
{
    ctx *c = *state;
    zmix_examples_free(&c->ex);
    zmix_model_free(c->model);
    testutil_rmrf(c->dir);
    free(c);
    return 0;
}

/* Creates a runtime on the cache dir and returns the score of a fixed α. */
static zmix_score score_with_cache(ctx *c)
{
    zmix_runtime_opts opts;
    zmix_runtime_opts_default(&opts);
    opts.adapt = ZMIX_ADAPT_MLP;
    opts.factor_cache_dir = c->dir;
    const char *paths[2] = {c->experts[0], c->experts[1]};
    zmix_runtime *rt;
    zmix_error err = {0};
    if (zmix_runtime_create(c->model, &opts, paths, 2, &rt, &err)) fail_msg("%s", err.msg);
    zmix_compose_opts co;
    zmix_compose_opts_default(&co);
    float alpha[2] = {0.7f, 0.4f};
    zmix_score s;
    if (zmix_score_alpha(rt, &co, &c->ex, 1, alpha, NULL, &s, NULL, &err)) fail_msg("%s", err.msg);
    zmix_runtime_free(rt);
    return s;
}

static void test_cache_used_and_rebuilt(void **state)
{
    ctx *c = *state;
    struct stat st1, st2, st3;
    assert_int_not_equal(stat(c->cache, &st1), 0);
    zmix_score first = score_with_cache(c);
    assert_int_equal(stat(c->cache, &st1), 0);
    size_t len;
    char *saved = testutil_read_file(c->cache, &len);

    zmix_score second = score_with_cache(c);
    assert_int_equal(stat(c->cache, &st2), 0);
    assert_int_equal(st1.st_ino, st2.st_ino); /* loaded, not recomputed and rewritten */
    assert_memory_equal(&first, &second, sizeof first);

    /* Flip one byte of the data area: detected, recomputed, replaced by a good file. */
    char *bad = malloc(len);
    memcpy(bad, saved, len);
    bad[len - 123] ^= 0x40;
    testutil_write_file(c->cache, bad, len);
    assert_int_equal(stat(c->cache, &st2), 0);
    zmix_score third = score_with_cache(c);
    assert_int_equal(stat(c->cache, &st3), 0);
    assert_int_not_equal(st2.st_ino, st3.st_ino);
    assert_memory_equal(&first, &third, sizeof first);
    size_t len3;
    char *rebuilt = testutil_read_file(c->cache, &len3);
    assert_int_equal(len3, len);
    assert_memory_equal(rebuilt, saved, len); /* the SVD is deterministic */
    free(rebuilt);
    free(bad);
    free(saved);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_cache_used_and_rebuilt, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
