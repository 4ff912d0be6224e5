/*
 * Generation (include/zmix/generate.h): the KV cache gives exactly the ids of the cache-free
 * path, greedy and sampled, with the base model and under z', on random models covering every
 * architecture the loaders accept (GQA, each RoPE scaling type, q/k/v biases, untied LM head,
 * 16-bit weights) and on the real stories260K in both formats; seeded sampling is reproducible
 * and seeds differ; stop tokens end a generation and are not output; bad options are refused
 * by name.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "compute.h"
#include "util/pcg.h"
#include "zmix/generate.h"

#define MAX_NEW 48

/* Generates with and without the cache and checks the ids and the finish are the same. */
static void check_cache_matches_reference(const zmix_model *m, const zmix_runtime *rt,
                                          const float *z, const int32_t *prompt, int n_prompt,
                                          const zmix_gen_opts *base_opts, const char *what)
{
    zmix_error err = {0, ""};
    zmix_generator *g;
    if (zmix_generator_create(m, rt, 1, z, &g, &err)) fail_msg("%s: %s", what, err.msg);
    int32_t with[MAX_NEW], without[MAX_NEW];
    int n_with, n_without;
    zmix_gen_finish f_with, f_without;
    zmix_gen_opts o = *base_opts;
    o.no_cache = 0;
    if (zmix_generate_tokens(g, prompt, n_prompt, &o, with, &n_with, &f_with, &err))
        fail_msg("%s (cache): %s", what, err.msg);
    o.no_cache = 1;
    if (zmix_generate_tokens(g, prompt, n_prompt, &o, without, &n_without, &f_without, &err))
        fail_msg("%s (no cache): %s", what, err.msg);
    if (n_with != n_without || f_with != f_without)
        fail_msg("%s: %d ids (%s) with the cache, %d (%s) without", what, n_with,
                 zmix_gen_finish_name(f_with), n_without, zmix_gen_finish_name(f_without));
    for (int i = 0; i < n_with; i++)
        if (with[i] != without[i])
            fail_msg("%s: id %d is %d with the cache, %d without", what, i, (int)with[i],
                     (int)without[i]);
    zmix_generator_free(g);
}

static zmix_model_config small_config(void)
{
    zmix_model_config c;
    memset(&c, 0, sizeof c);
    snprintf(c.model_type, sizeof c.model_type, "llama");
    c.dim = 32;
    c.hidden_dim = 48;
    c.n_layers = 3;
    c.n_heads = 4;
    c.n_kv_heads = 2; /* GQA */
    c.head_dim = 8;
    c.vocab_size = 61;
    c.max_seq_len = 64;
    c.norm_eps = 1e-5f;
    c.rope_theta = 10000.0f;
    c.bos_id = c.eos_id = -1;
    return c;
}

/* Greedy and sampled (two temperatures, a nucleus) generations of a few prompts. */
static void check_model(const zmix_model *m, const zmix_runtime *rt, const float *z,
                        const char *what)
{
    static const int32_t prompts[3][6] = {{1}, {5, 9, 2}, {3, 14, 15, 9, 26, 5}};
    static const int n_prompt[3] = {1, 3, 6};
    static const double temps[3] = {0.0, 0.8, 1.5};
    static const double top_ps[3] = {1.0, 1.0, 0.9};
    char label[160];
    for (int p = 0; p < 3; p++)
        for (int t = 0; t < 3; t++) {
            zmix_gen_opts o;
            zmix_gen_opts_default(&o);
            o.max_tokens = 40;
            o.temperature = temps[t];
            o.top_p = top_ps[t];
            o.seed = (uint64_t)(7 + p);
            o.ignore_eos = 1;
            snprintf(label, sizeof label, "%s, prompt %d, temperature %g, top_p %g", what, p,
                     temps[t], top_ps[t]);
            check_cache_matches_reference(m, rt, z, prompts[p], n_prompt[p], &o, label);
        }
}

static void check_random_arch(zmix_model_config c, const char *what)
{
    zmix_model *m, *m16;
    zmix_error err = {0, ""};
    if (zmix_model_create_random(&c, 11, &m, &err)) fail_msg("%s: %s", what, err.msg);
    check_model(m, NULL, NULL, what);

    /* Under z' on every matrix: W' materialised from the factors. */
    zmix_runtime_opts ro;
    zmix_runtime_opts_default(&ro);
    ro.adapt = ZMIX_ADAPT_ALL;
    zmix_runtime *rt;
    if (zmix_runtime_create(m, &ro, NULL, 0, &rt, &err)) fail_msg("%s: %s", what, err.msg);
    size_t zt = zmix_runtime_z_total(rt);
    float *z = malloc(zt * sizeof *z);
    assert_non_null(z);
    pcg32 rng;
    pcg32_seed(&rng, 3, 4);
    for (size_t i = 0; i < zt; i++) z[i] = (float)(0.5 + pcg32_uniform(&rng));
    char label[128];
    snprintf(label, sizeof label, "%s under z'", what);
    check_model(m, rt, z, label);
    free(z);
    zmix_runtime_free(rt);

    /* 16-bit weights, used in place. */
    if (zmix_model_convert(m, ZMIX_DT_BF16, &m16, &err)) fail_msg("%s: %s", what, err.msg);
    snprintf(label, sizeof label, "%s in BF16", what);
    check_model(m16, NULL, NULL, label);
    zmix_model_free(m16);
    zmix_model_free(m);
}

static void test_cache_matches_reference_plain(void **state)
{
    (void)state;
    check_random_arch(small_config(), "GQA, rotate-half RoPE, tied");
    zmix_model_config c = small_config();
    c.rope_interleaved = 1;
    c.qkv_bias = 1;
    c.tied_embeddings = 0;
    check_random_arch(c, "interleaved RoPE, q/k/v biases, untied");
}

static zmix_model_config scaled_config(zmix_rope_type type, double factor, int original_max_pos)
{
    zmix_model_config c = small_config();
    c.rope_scaling.type = type;
    c.rope_scaling.factor = factor;
    c.rope_scaling.original_max_pos = original_max_pos;
    return c;
}

static void test_cache_matches_reference_rope_scaling(void **state)
{
    (void)state;
    check_random_arch(scaled_config(ZMIX_ROPE_LINEAR, 2.0, 32), "linear RoPE scaling");
    /* Dynamic: the sequence passes original_max_pos mid-generation, where θ starts to change
     * with every step. */
    check_random_arch(scaled_config(ZMIX_ROPE_DYNAMIC, 2.0, 12), "dynamic RoPE scaling");

    zmix_model_config c = scaled_config(ZMIX_ROPE_LLAMA3, 8.0, 16);
    c.rope_scaling.low_freq_factor = 1.0;
    c.rope_scaling.high_freq_factor = 4.0;
    check_random_arch(c, "llama3 RoPE scaling");

    c = scaled_config(ZMIX_ROPE_YARN, 4.0, 16);
    c.rope_scaling.beta_fast = 32.0;
    c.rope_scaling.beta_slow = 1.0;
    c.rope_scaling.attention_factor = 0.1 * log(4.0) + 1.0;
    c.rope_scaling.truncate = 1;
    check_random_arch(c, "yarn RoPE scaling");
}

/* ---- stories260K, both formats -------------------------------------------------------- */

/* The greedy ids of stories260K's (known_b in test_compute_forward.c: llama2.c's run.c). */
static const int32_t known_prompt[] = {1, 403, 407};
static const int32_t known_greedy[16] = {405, 292, 303, 416, 377, 482, 482, 482,
                                         466, 466, 288, 292, 330, 283, 427, 427};

static void check_stories(const char *leaf)
{
    const char *shared = getenv("ZMIX_SHARED_DIR");
    char path[1024];
    snprintf(path, sizeof path, "%s/models/stories260K%s", shared ? shared : ".", leaf);
    if (!shared || access(path, R_OK)) skip(); /* the test data is not on this machine */
    zmix_model *m;
    zmix_error err = {0, ""};
    if (zmix_model_load(path, &m, &err)) fail_msg("%s", err.msg);
    check_model(m, NULL, NULL, path);

    zmix_generator *g;
    assert_int_equal(zmix_generator_create(m, NULL, 0, NULL, &g, &err), 0);
    zmix_gen_opts o;
    zmix_gen_opts_default(&o);
    o.max_tokens = 16;
    int32_t out[MAX_NEW];
    int n;
    zmix_gen_finish f;
    assert_int_equal(zmix_generate_tokens(g, known_prompt, 3, &o, out, &n, &f, &err), 0);
    assert_int_equal(n, 16);
    assert_int_equal(f, ZMIX_GEN_LENGTH);
    assert_memory_equal(out, known_greedy, sizeof known_greedy);

    /* A stop id ends the generation before it: the ids up to its first occurrence. */
    int32_t stop = known_greedy[5];
    o.stop = &stop;
    o.n_stop = 1;
    assert_int_equal(zmix_generate_tokens(g, known_prompt, 3, &o, out, &n, &f, &err), 0);
    assert_int_equal(n, 5);
    assert_int_equal(f, ZMIX_GEN_STOP);
    assert_int_equal(zmix_generator_stop_token(g), stop);
    assert_memory_equal(out, known_greedy, 5 * sizeof *out);

    /* The EOS generation stops at: the configuration's (no tokenizer here). */
    assert_int_equal(zmix_model_eos(m), 2);
    zmix_generator_free(g);
    zmix_model_free(m);
}

static void test_stories260k_llama2c(void **state)
{
    (void)state;
    check_stories("/stories260K.bin");
}

static void test_stories260k_hf(void **state)
{
    (void)state;
    check_stories("");
}

/* ---- Sampling ------------------------------------------------------------------------- */

static void sample(zmix_generator *g, uint64_t seed, double temperature, double top_p, int32_t *out)
{
    static const int32_t prompt[] = {4, 8, 15};
    zmix_gen_opts o;
    zmix_gen_opts_default(&o);
    o.max_tokens = 32;
    o.temperature = temperature;
    o.top_p = top_p;
    o.seed = seed;
    o.ignore_eos = 1;
    int n;
    zmix_gen_finish f;
    zmix_error err = {0, ""};
    if (zmix_generate_tokens(g, prompt, 3, &o, out, &n, &f, &err)) fail_msg("%s", err.msg);
    assert_int_equal(n, 32);
}

/* A generator of a small random model (GQA, plain RoPE), the base model. */
static zmix_generator *base_generator(zmix_model **m)
{
    zmix_model_config c = small_config();
    zmix_error err = {0, ""};
    zmix_generator *g;
    if (zmix_model_create_random(&c, 5, m, &err) ||
        zmix_generator_create(*m, NULL, 0, NULL, &g, &err))
        fail_msg("%s", err.msg);
    return g;
}

static void test_sampling_seeded(void **state)
{
    (void)state;
    zmix_model *m;
    zmix_generator *g = base_generator(&m);
    int32_t a[32], b[32], greedy[32];
    sample(g, 42, 1.0, 1.0, a);
    sample(g, 42, 1.0, 1.0, b);
    assert_memory_equal(a, b, sizeof a); /* the same seed, the same ids */
    sample(g, 43, 1.0, 1.0, b);
    assert_memory_not_equal(a, b, sizeof a);
    /* A nucleus so small it holds only the likeliest id is greedy decoding, and temperature
     * 0 ignores the seed. */
    sample(g, 1, 0.0, 1.0, greedy);
    sample(g, 42, 1.0, 1e-9, a);
    assert_memory_equal(a, greedy, sizeof a);
    sample(g, 99, 0.0, 0.5, a);
    assert_memory_equal(a, greedy, sizeof a);
    /* Sampling at a high temperature is not greedy decoding. */
    sample(g, 42, 2.0, 1.0, a);
    assert_memory_not_equal(a, greedy, sizeof a);
    zmix_generator_free(g);
    zmix_model_free(m);
}

/* ---- Bad input ------------------------------------------------------------------------ */

static void expect_refused(zmix_generator *g, const int32_t *prompt, int n_prompt,
                           const zmix_gen_opts *o, int code, const char *words)
{
    zmix_error err = {0, ""};
    assert_int_equal(zmix_generator_start(g, prompt, n_prompt, o, &err), code);
    if (!strstr(err.msg, words)) fail_msg("'%s' does not say '%s'", err.msg, words);
}

static void test_bad_options_refused(void **state)
{
    (void)state;
    zmix_model *m;
    zmix_generator *g = base_generator(&m);
    zmix_error err = {0, ""};
    int32_t prompt[2] = {1, 2}, bad_id = 61;
    zmix_gen_opts o;
    zmix_gen_opts_default(&o);
    o.max_tokens = 0;
    expect_refused(g, prompt, 2, &o, ZMIX_ERANGE, "max_tokens");
    o.max_tokens = 64; /* 2 + 64 - 1 > 64 */
    expect_refused(g, prompt, 2, &o, ZMIX_ERANGE, "context length 64");
    o.max_tokens = 4;
    o.temperature = -1;
    expect_refused(g, prompt, 2, &o, ZMIX_ERANGE, "temperature");
    o.temperature = 1;
    o.top_p = 0;
    expect_refused(g, prompt, 2, &o, ZMIX_ERANGE, "top_p");
    o.top_p = NAN;
    expect_refused(g, prompt, 2, &o, ZMIX_ERANGE, "top_p");
    o.top_p = 1;
    o.stop = &bad_id;
    o.n_stop = 1;
    expect_refused(g, prompt, 2, &o, ZMIX_ERANGE, "stop[0] is 61");
    o.n_stop = 0;
    expect_refused(g, &bad_id, 1, &o, ZMIX_ERANGE, "prompt token 0 is 61");
    expect_refused(g, prompt, 0, &o, ZMIX_EINVAL, "empty");
    /* Stepping a generator never started is refused, not undefined. */
    int32_t tok;
    zmix_gen_finish f;
    assert_int_equal(zmix_generator_step(g, &tok, &f, NULL, &err), ZMIX_ESTATE);
    zmix_generator_free(g);
    zmix_model_free(m);
}

/* A degenerate z' (no rescale, every σ times 1e30) overflows the activations: the generation
 * fails naming the logit, rather than picking an arbitrary id. */
static void test_non_finite_logits_refused(void **state)
{
    (void)state;
    zmix_model *m;
    zmix_generator *g = base_generator(&m);
    zmix_generator_free(g);
    zmix_runtime *rt;
    zmix_error err = {0, ""};
    if (zmix_runtime_create(m, NULL, NULL, 0, &rt, &err)) fail_msg("%s", err.msg);
    size_t zt = zmix_runtime_z_total(rt);
    float *z = malloc(zt * sizeof *z);
    assert_non_null(z);
    for (size_t i = 0; i < zt; i++) z[i] = 1e30f;
    assert_int_equal(zmix_generator_create(m, rt, 0, z, &g, &err), 0);
    static const int32_t prompt[] = {1, 2};
    zmix_gen_opts o;
    zmix_gen_opts_default(&o);
    int32_t out[16];
    int n;
    zmix_gen_finish f;
    assert_int_equal(zmix_generate_tokens(g, prompt, 2, &o, out, &n, &f, &err), ZMIX_ENUMERIC);
    if (!strstr(err.msg, "logit")) fail_msg("'%s' does not name the logit", err.msg);
    zmix_generator_free(g);
    free(z);
    zmix_runtime_free(rt);
    zmix_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cache_matches_reference_plain),
        cmocka_unit_test(test_cache_matches_reference_rope_scaling),
        cmocka_unit_test(test_stories260k_llama2c),
        cmocka_unit_test(test_stories260k_hf),
        cmocka_unit_test(test_sampling_seeded),
        cmocka_unit_test(test_bad_options_refused),
        cmocka_unit_test(test_non_finite_logits_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
