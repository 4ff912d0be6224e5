/*
 * What a runtime keeps per W' mode (docs/sizing.md, "Memory per mode"): with expert matrices
 * and a factor cache, U and Vt are read from the cache file's mapping and are not resident
 * once the expert matrices are built; they fault back in, with the same values, when a call
 * composes from them. The factored mode builds no expert matrices. The memory plan's terms
 * are what the runtime holds in each mode, and every mode scores as a runtime whose factors
 * were computed and kept on the heap does, bit for bit.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "compute.h"
#include "util/pcg.h"
#include "zmix/model.h"

#define K     3
#define N_EX  4
#define N_CAN 3

static zmix_model_config config(void)
{
    zmix_model_config c;
    memset(&c, 0, sizeof c);
    snprintf(c.model_type, sizeof c.model_type, "llama");
    /* MLP matrices of 512 x 256: 768 KiB of U and Vt each in float32, against which a few
     * edge pages shared with σ are noise. */
    c.dim = 256;
    c.hidden_dim = 512;
    c.n_layers = 2;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.head_dim = 64;
    c.vocab_size = 64;
    c.max_seq_len = 64;
    c.norm_eps = 1e-5f;
    c.rope_theta = 10000.0f;
    c.bos_id = -1;
    c.eos_id = -1;
    return c;
}

typedef struct fixture {
    zmix_model *model;
    float *z[K];
    size_t z_total;
    zmix_examples ex;
    char dir[64];
    char cache[96];
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    zmix_model_config cfg = config();
    zmix_error err = {0, ""};
    assert_int_equal(zmix_model_create_random(&cfg, 17, &f->model, &err), 0);
    zmix_adapted *list;
    int n;
    assert_int_equal(zmix_adapted_list(f->model, ZMIX_ADAPT_MLP, &list, &n, &f->z_total, &err), 0);
    free(list);
    pcg32 rng;
    pcg32_seed(&rng, 9, 1);
    for (int k = 0; k < K; k++) {
        f->z[k] = malloc(f->z_total * sizeof(float));
        for (size_t i = 0; i < f->z_total; i++)
            f->z[k][i] = (float)(1.0 + 0.3 * pcg32_normal(&rng));
    }
    /* Examples of 12 + 3 tokens. */
    int32_t tok[N_EX][15];
    zmix_example items[N_EX];
    for (int e = 0; e < N_EX; e++) {
        for (int t = 0; t < 15; t++) tok[e][t] = (int32_t)pcg32_bounded(&rng, 64);
        items[e] = (zmix_example){tok[e], 12, tok[e] + 12, 3, 0, NULL, NULL, 0};
    }
    assert_int_equal(zmix_examples_copy(items, N_EX, &f->ex, &err), 0);
    snprintf(f->dir, sizeof f->dir, "/tmp/zmix-memory-test-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->cache, sizeof f->cache, "%s/factors", f->dir);
    assert_int_equal(mkdir(f->cache, 0700), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    DIR *d = opendir(f->cache);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[400];
        snprintf(path, sizeof path, "%s/%s", f->cache, e->d_name);
        unlink(path);
    }
    if (d) closedir(d);
    rmdir(f->cache);
    rmdir(f->dir);
    for (int k = 0; k < K; k++) free(f->z[k]);
    zmix_examples_free(&f->ex);
    zmix_model_free(f->model);
    free(f);
    return 0;
}

static zmix_runtime *make(const fixture *f, int cached, zmix_wprime_keep keep,
                          zmix_factor_dtype dtype)
{
    zmix_runtime_opts ro;
    zmix_runtime_opts_default(&ro);
    ro.factor_cache_dir = cached ? f->cache : NULL;
    ro.wprime = keep;
    ro.factor_dtype = dtype;
    zmix_runtime *rt;
    zmix_error err = {0, ""};
    if (zmix_runtime_create_from_z(f->model, &ro, (const float *const *)f->z, NULL, K, &rt, &err))
        fail_msg("%s", err.msg);
    return rt;
}

/* Resident kB of this process's mappings of files under dir (from /proc/self/smaps). */
static long mapped_rss_kb(const char *dir)
{
    FILE *fp = fopen("/proc/self/smaps", "r");
    assert_non_null(fp);
    char line[1024];
    int inside = 0;
    long kb = 0, v;
    unsigned long lo, hi;
    while (fgets(line, sizeof line, fp)) {
        /* A mapping's first line, "start-end perms offset dev inode [path]", is the only one
         * that starts with a (lower-case) hex digit; its fields follow as "Key: value". */
        if ((line[0] >= '0' && line[0] <= '9') || (line[0] >= 'a' && line[0] <= 'f')) {
            if (sscanf(line, "%lx-%lx", &lo, &hi) == 2) inside = strstr(line, dir) != NULL;
            continue;
        }
        if (inside && sscanf(line, "Rss: %ld kB", &v) == 1) kb += v;
    }
    fclose(fp);
    return kb;
}

/* Bytes of U and Vt of the runtime's factors. */
static size_t uv_bytes(const zmix_runtime *rt)
{
    size_t total = 0;
    for (int m = 0; m < rt->n_mat; m++) {
        const zmix_factors *x = &rt->factors[m];
        size_t es = x->dtype == ZMIX_DT_F32 ? 4 : 2;
        total += ((size_t)x->rows * x->rank + (size_t)x->rank * x->cols) * es;
    }
    return total;
}

static void alphas(float *a)
{
    const float v[N_CAN][K] = {{0.6f, 0.3f, 0.2f}, {-0.4f, 1.1f, 0.5f}, {0.0f, 0.0f, 1.0f}};
    memcpy(a, v, sizeof v);
}

/* Scores of N_CAN α candidates and of z' = z_0 and z' = 1, in mode, into out[N_CAN + 2]. */
static void score_all(const fixture *f, const zmix_runtime *rt, zmix_wprime_mode mode,
                      zmix_score *out)
{
    zmix_compose_opts o;
    zmix_compose_opts_default(&o);
    float a[N_CAN * K];
    alphas(a);
    zmix_error err = {0, ""};
    assert_int_equal(
        zmix_score_mode(rt, &o, 1, &f->ex, N_CAN, a, NULL, NULL, mode, out, NULL, &err), 0);
    if (mode == ZMIX_WPRIME_LINEAR) return; /* α candidates only */
    float *z = malloc(2 * f->z_total * sizeof *z);
    memcpy(z, f->z[0], f->z_total * sizeof *z);
    for (size_t i = 0; i < f->z_total; i++) z[f->z_total + i] = 1.0f;
    assert_int_equal(
        zmix_score_mode(rt, &o, 1, &f->ex, 2, NULL, z, NULL, mode, out + N_CAN, NULL, &err), 0);
    free(z);
}

/* Linear mode with a factor cache: U and Vt not resident after set-up, on the first start
 * (factors computed, saved, mapped back) and on the next (mapped from the cache); every mode
 * scores as with heap factors; a call that composes pages them back in. */
static void test_linear_mode_drops_the_factors(void **state)
{
    fixture *f = *state;
    zmix_factor_dtype dtypes[2] = {ZMIX_FACTORS_F32, ZMIX_FACTORS_F16};
    for (int di = 0; di < 2; di++) {
        zmix_runtime *heap = make(f, 0, ZMIX_WPRIME_KEEP_AUTO, dtypes[di]);
        zmix_runtime_memory hm;
        zmix_runtime_memory_get(heap, &hm);
        assert_string_equal(hm.mode, "linear");
        assert_int_equal(hm.factors, uv_bytes(heap)); /* no cache: kept on the heap */
        assert_int_equal(hm.factors_mapped, 0);
        for (int start = 0; start < 2; start++) {
            long before = mapped_rss_kb(f->cache);
            zmix_runtime *rt = make(f, 1, ZMIX_WPRIME_KEEP_AUTO, dtypes[di]);
            zmix_runtime_memory m;
            zmix_runtime_memory_get(rt, &m);
            assert_string_equal(m.mode, "linear");
            assert_int_equal(m.factors, 0);
            assert_int_equal(m.factors_mapped, uv_bytes(rt));
            assert_int_equal(m.expert_matrices, hm.expert_matrices);
            for (int mi = 0; mi < rt->n_mat; mi++) assert_true(rt->factors[mi].mapped);
            /* What stays are the pages U and Vt share with σ at their edges. */
            long kb = mapped_rss_kb(f->cache) - before;
            assert_true(kb * 1024 < (long)(uv_bytes(rt) / 10));

            /* The base model (z' = 1, every job's first baseline) reads no factor in any mode
             * (the population pass gives every copy the base matrix itself). */
            float *ones = malloc(2 * f->z_total * sizeof *ones);
            for (size_t i = 0; i < 2 * f->z_total; i++) ones[i] = 1.0f;
            zmix_compose_opts o;
            zmix_compose_opts_default(&o);
            zmix_wprime_mode zmodes[3] = {ZMIX_WPRIME_AUTO, ZMIX_WPRIME_COMPOSE,
                                          ZMIX_WPRIME_FACTORED};
            for (int i = 0; i < 3; i++) {
                zmix_score got[2], want[2];
                zmix_error e = {0, ""};
                assert_int_equal(zmix_score_mode(rt, &o, 1, &f->ex, 2, NULL, ones, NULL, zmodes[i],
                                                 got, NULL, &e),
                                 0);
                assert_int_equal(zmix_score_mode(heap, &o, 1, &f->ex, 2, NULL, ones, NULL,
                                                 zmodes[i], want, NULL, &e),
                                 0);
                assert_memory_equal(got, want, sizeof got);
                assert_memory_equal(&got[0], &got[1], sizeof got[0]);
            }
            free(ones);
            kb = mapped_rss_kb(f->cache) - before;
            assert_true(kb * 1024 < (long)(uv_bytes(rt) / 10));

            zmix_wprime_mode modes[4] = {ZMIX_WPRIME_LINEAR, ZMIX_WPRIME_AUTO, ZMIX_WPRIME_COMPOSE,
                                         ZMIX_WPRIME_FACTORED};
            for (int i = 0; i < 4; i++) {
                zmix_score want[N_CAN + 2], got[N_CAN + 2];
                memset(want, 0, sizeof want);
                memset(got, 0, sizeof got);
                score_all(f, heap, modes[i], want);
                score_all(f, rt, modes[i], got);
                for (int c = 0; c < N_CAN + 2; c++)
                    if (memcmp(&want[c], &got[c], sizeof want[c]))
                        fail_msg("dtype %d start %d mode %s candidate %d: %.9g %.9g vs %.9g %.9g",
                                 di, start, zmix_wprime_mode_name(modes[i]), c, got[c].accuracy,
                                 got[c].loglik, want[c].accuracy, want[c].loglik);
            }
            /* The factored calls above read every U and Vt: back in memory. */
            kb = mapped_rss_kb(f->cache) - before;
            assert_true(kb * 1024 > (long)(uv_bytes(rt) / 2));
            /* A generator's one-off W' (composed from U and Vt) leaves them out again, and is
             * the W' the heap runtime composes. */
            zmix_model *a, *b;
            zmix_error err = {0, ""};
            assert_int_equal(zmix_model_with_wprime(rt, 1, f->z[1], &a, &err), 0);
            kb = mapped_rss_kb(f->cache) - before;
            assert_true(kb * 1024 < (long)(uv_bytes(rt) / 10));
            assert_int_equal(zmix_model_with_wprime(heap, 1, f->z[1], &b, &err), 0);
            for (int mi = 0; mi < rt->n_mat; mi++) {
                const zmix_adapted *ad = &rt->list[mi];
                int rows, cols;
                const float *wa = zmix_model_matrix(a, ad->layer, ad->kind, &rows, &cols);
                const float *wb = zmix_model_matrix(b, ad->layer, ad->kind, &rows, &cols);
                assert_memory_equal(wa, wb, (size_t)rows * cols * sizeof(float));
            }
            zmix_model_free(a);
            zmix_model_free(b);
            zmix_runtime_free(rt);
        }
        zmix_runtime_free(heap);
    }
}

/* The factored mode builds no expert matrices, refuses the linear mode, and scores as the
 * runtime with expert matrices does in the modes both have. */
static void test_factored_mode_builds_no_expert_matrices(void **state)
{
    fixture *f = *state;
    zmix_runtime *full = make(f, 1, ZMIX_WPRIME_KEEP_AUTO, ZMIX_FACTORS_AUTO);
    zmix_runtime *fact = make(f, 1, ZMIX_WPRIME_KEEP_FACTORS, ZMIX_FACTORS_AUTO);
    assert_non_null(full->expert_w_block);
    assert_null(fact->expert_w_block);
    assert_null(fact->expert_w);
    zmix_runtime_memory m;
    zmix_runtime_memory_get(fact, &m);
    assert_string_equal(m.mode, "factored");
    assert_int_equal(m.expert_matrices, 0);
    zmix_wprime_mode modes[2] = {ZMIX_WPRIME_COMPOSE, ZMIX_WPRIME_FACTORED};
    for (int i = 0; i < 2; i++) {
        zmix_score want[N_CAN + 2], got[N_CAN + 2];
        memset(want, 0, sizeof want);
        memset(got, 0, sizeof got);
        score_all(f, full, modes[i], want);
        score_all(f, fact, modes[i], got);
        assert_memory_equal(want, got, sizeof want);
    }
    zmix_compose_opts o;
    zmix_compose_opts_default(&o);
    float a[N_CAN * K];
    alphas(a);
    zmix_score s[N_CAN];
    zmix_error err = {0, ""};
    assert_int_equal(zmix_score_mode(fact, &o, 1, &f->ex, N_CAN, a, NULL, NULL, ZMIX_WPRIME_LINEAR,
                                     s, NULL, &err),
                     ZMIX_EINVAL);
    /* The default search scores α with whatever the cost model picks among the modes left. */
    assert_int_equal(zmix_score_alpha(fact, &o, &f->ex, N_CAN, a, NULL, s, NULL, &err), 0);
    zmix_runtime_free(full);
    zmix_runtime_free(fact);
}

/* The plan's factor and expert terms, per mode and with or without a factor cache, are what
 * the runtime holds. */
static void test_plan_per_mode_matches_the_runtime(void **state)
{
    fixture *f = *state;
    zmix_model_probe p;
    memset(&p, 0, sizeof p);
    p.cfg = config();
    zmix_wprime_keep keeps[2] = {ZMIX_WPRIME_KEEP_AUTO, ZMIX_WPRIME_KEEP_FACTORS};
    zmix_factor_dtype dtypes[2] = {ZMIX_FACTORS_F32, ZMIX_FACTORS_BF16};
    for (int ki = 0; ki < 2; ki++)
        for (int cached = 0; cached < 2; cached++)
            for (int di = 0; di < 2; di++) {
                zmix_memory_settings s;
                zmix_memory_settings_default(&s);
                s.n_experts = K;
                s.wprime = keeps[ki];
                s.factor_cache = cached;
                s.factor_dtype = dtypes[di];
                zmix_memory_plan plan;
                zmix_memory_plan_compute(&p, &s, &plan);
                zmix_runtime *rt = make(f, cached, keeps[ki], dtypes[di]);
                zmix_runtime_memory m;
                zmix_runtime_memory_get(rt, &m);
                assert_string_equal(plan.mode, m.mode);
                assert_int_equal(plan.expert_matrices, m.expert_matrices > 0);
                assert_int_equal(plan.experts, m.experts + m.expert_matrices);
                assert_int_equal(plan.factors, m.factors + m.factors_mapped + m.sigma);
                assert_int_equal(plan.factors_mapped, m.factors_mapped > 0);
                /* Resident while scoring: σ and the heap factors, and the mapped ones when
                 * the scorer reads them on every call (no expert matrices). */
                size_t kept = m.sigma + m.factors + (m.expert_matrices ? 0 : m.factors_mapped);
                assert_int_equal(plan.factors_kept, kept);
                assert_int_equal(plan.steady, plan.overhead + plan.weights + plan.factors_kept +
                                                  plan.experts + plan.worker + plan.other);
                assert_true(plan.setup >= plan.overhead + plan.weights + plan.factors + plan.svd);
                if (plan.expert_matrices && cached) /* building them from the mapping */
                    assert_true(plan.setup >=
                                plan.overhead + plan.weights + plan.factors_kept + plan.experts);
                zmix_runtime_free(rt);
            }
}

/* A population chunk may take ZMIX_POP_CHUNK_BYTES per worker whatever the examples: the
 * plan counts it even when max_tokens makes a group of examples small. */
static void test_plan_counts_the_population_chunk(void **state)
{
    (void)state;
    zmix_model_probe p;
    memset(&p, 0, sizeof p);
    p.cfg = config();
    zmix_memory_settings s;
    zmix_memory_settings_default(&s);
    s.n_experts = K;
    s.max_tokens = 20;
    zmix_memory_plan plan;
    zmix_memory_plan_compute(&p, &s, &plan);
    size_t group = zmix_score_activation_bytes(&p.cfg, 20, 20, 20);
    assert_true(group < ZMIX_POP_CHUNK_BYTES);
    assert_int_equal(plan.pop_chunk, ZMIX_POP_CHUNK_BYTES);
    assert_int_equal(plan.worker_activations, ZMIX_POP_CHUNK_BYTES);
    /* Never above the budget, which the scorer keeps to as well. */
    s.memory_budget = (size_t)16 << 20;
    zmix_memory_plan_compute(&p, &s, &plan);
    assert_int_equal(plan.worker_activations, s.memory_budget);
    /* The chunk's bytes count each candidate's z', scales and α. */
    size_t one = zmix_score_pop_bytes(&p.cfg, 20, 3, 1, 20, 1000, 6, K);
    size_t two = zmix_score_pop_bytes(&p.cfg, 20, 3, 2, 20, 1000, 6, K);
    size_t no_z = zmix_score_pop_bytes(&p.cfg, 20, 3, 2, 20, 1, 6, K);
    assert_true(two - no_z >= 2 * 2 * 999 * sizeof(float));
    assert_true(two > one);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_linear_mode_drops_the_factors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_factored_mode_builds_no_expert_matrices, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_plan_per_mode_matches_the_runtime, setup, teardown),
        cmocka_unit_test(test_plan_counts_the_population_chunk),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
