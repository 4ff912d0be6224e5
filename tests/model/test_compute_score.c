/*
 * SVD, composition and scoring, checked against the plain definition: W' materialised from
 * U, σ, z', Vt into a copy of the model, then the full-position forward of each example.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>
#include <dirent.h>
#include <pthread.h>
#include <unistd.h>

#include "compute.h"
#include "util/pcg.h"

#define K 3

typedef struct fixture {
    zmix_model *model;
    zmix_model *model32; /* the float32 model model was rounded from (or NULL) */
    zmix_runtime *rt;
    zmix_examples ex;
    float *z[K];
} fixture;

/* How the weights and the factors are stored; tests given a variant as their state run on it
 * (NULL: float32 both). */
typedef struct variant {
    zmix_dtype weights;
    zmix_factor_dtype factors;
} variant;

static const variant f32_weights = {ZMIX_DT_F32, ZMIX_FACTORS_AUTO};
static const variant bf16_weights = {ZMIX_DT_BF16, ZMIX_FACTORS_AUTO}; /* F16 factors */
static const variant bf16_factors = {ZMIX_DT_F32, ZMIX_FACTORS_BF16};

static zmix_model_config config(void)
{
    zmix_model_config c;
    memset(&c, 0, sizeof c);
    snprintf(c.model_type, sizeof c.model_type, "llama");
    c.dim = 24;
    c.hidden_dim = 40;
    c.n_layers = 2;
    c.n_heads = 6;
    c.n_kv_heads = 3;
    c.head_dim = 4;
    c.vocab_size = 29;
    c.max_seq_len = 64;
    c.norm_eps = 1e-5f;
    c.rope_theta = 10000.0f;
    c.tied_embeddings = 1;
    c.qkv_bias = 1;
    c.bos_id = c.eos_id = -1;
    return c;
}

static void make_examples(zmix_examples *ex, int n, uint64_t seed, int vocab)
{
    pcg32 rng;
    pcg32_seed(&rng, seed, 7);
    zmix_example items[16];
    int32_t tok[16][40];
    for (int e = 0; e < n; e++) {
        memset(&items[e], 0, sizeof items[e]);
        items[e].n_prompt = 2 + (int)pcg32_bounded(&rng, 12);
        items[e].n_target = 1 + (int)pcg32_bounded(&rng, 4);
        for (int j = 0; j < items[e].n_prompt + items[e].n_target; j++)
            tok[e][j] = (int32_t)pcg32_bounded(&rng, (uint32_t)vocab);
        items[e].prompt = tok[e];
        items[e].target = tok[e] + items[e].n_prompt;
    }
    zmix_error err;
    if (zmix_examples_copy(items, n, ex, &err)) fail_msg("%s", err.msg);
}

static fixture *fixture_make_variant(zmix_adapt_set set, int ones, const variant *v)
{
    fixture *f = calloc(1, sizeof *f);
    zmix_model_config cfg = config();
    zmix_error err = {0, ""};
    if (!v) v = &f32_weights;
    assert_int_equal(zmix_model_create_random(&cfg, 11, &f->model, &err), 0);
    if (v->weights != ZMIX_DT_F32) {
        f->model32 = f->model;
        assert_int_equal(zmix_model_convert(f->model32, v->weights, &f->model, &err), 0);
        assert_true(zmix_model_has_half(f->model));
    }
    zmix_adapted *list;
    int n;
    size_t zt;
    assert_int_equal(zmix_adapted_list(f->model, set, &list, &n, &zt, &err), 0);
    free(list);
    pcg32 rng;
    pcg32_seed(&rng, 5, 3);
    for (int k = 0; k < K; k++) {
        f->z[k] = malloc(zt * sizeof(float));
        for (size_t i = 0; i < zt; i++)
            f->z[k][i] = ones ? 1.0f : (float)(1.0 + 0.4 * pcg32_normal(&rng));
    }
    zmix_runtime_opts opts;
    zmix_runtime_opts_default(&opts);
    opts.adapt = set;
    opts.factor_dtype = v->factors;
    const char *names[K] = {"math", "code", "reasoning"};
    if (zmix_runtime_create_from_z(f->model, &opts, (const float *const *)f->z, names, K, &f->rt,
                                   &err))
        fail_msg("%s", err.msg);
    make_examples(&f->ex, 6, 99, cfg.vocab_size);
    return f;
}

static fixture *fixture_make(zmix_adapt_set set, int ones)
{
    return fixture_make_variant(set, ones, NULL);
}

static void fixture_free(fixture *f)
{
    zmix_runtime_free(f->rt);
    zmix_model_free(f->model);
    zmix_model_free(f->model32);
    zmix_examples_free(&f->ex);
    for (int k = 0; k < K; k++) free(f->z[k]);
    free(f);
}

static double max_rel_err(const float *a, const float *b, size_t n)
{
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        num = d > num ? d : num;
        den = fabs((double)b[i]) > den ? fabs((double)b[i]) : den;
    }
    return num / (den > 0 ? den : 1.0);
}

/* The definition: W' materialised, a plain full-position forward per example, then the
 * target-position rows. */
static void reference_target_logits(const fixture *f, const zmix_model *m, float *out)
{
    int V = m->cfg.vocab_size;
    zmix_error err;
    for (int e = 0; e < f->ex.n; e++) {
        const zmix_example *it = &f->ex.items[e];
        int len = it->n_prompt + it->n_target - 1;
        int32_t seq[64];
        memcpy(seq, it->prompt, (size_t)it->n_prompt * sizeof *seq);
        memcpy(seq + it->n_prompt, it->target, (size_t)(it->n_target - 1) * sizeof *seq);
        float *all = malloc((size_t)len * V * sizeof(float));
        assert_int_equal(zmix_model_forward_logits(m, seq, len, all, &err), 0);
        memcpy(out, all + (size_t)(it->n_prompt - 1) * V, (size_t)it->n_target * V * sizeof(float));
        out += (size_t)it->n_target * V;
        free(all);
    }
}

static size_t n_target_rows(const zmix_examples *ex)
{
    size_t n = 0;
    for (int e = 0; e < ex->n; e++) n += (size_t)ex->items[e].n_target;
    return n;
}

/* U·diag(σ)·Vt gives W back: to float rounding with float32 factors, to the precision of the
 * factors' 16-bit storage otherwise (F16 keeps 11 significant bits, BF16 8). */
static void test_svd_reconstructs(void **state)
{
    const variant *v = *state;
    fixture *f = fixture_make_variant(ZMIX_ADAPT_ALL, 0, v);
    const zmix_runtime *rt = f->rt;
    double tol = rt->factor_dtype == ZMIX_DT_F32   ? 1e-5
                 : rt->factor_dtype == ZMIX_DT_F16 ? 2e-3
                                                   : 2e-2;
    assert_int_equal(zmix_runtime_n_matrices(rt), 14);
    float *tile = malloc(ZMIX_TILE_FLOATS * sizeof *tile);
    double worst = 0;
    for (int m = 0; m < rt->n_mat; m++) {
        const zmix_factors *fa = &rt->factors[m];
        assert_int_equal(fa->dtype, rt->factor_dtype);
        assert_true(rt->factor_dtype == ZMIX_DT_F32 ? fa->U && !fa->U16 : !fa->U && fa->U16);
        int rows, cols;
        zmix_wref wr =
            zmix_model_matrix_ref(f->model, rt->list[m].layer, rt->list[m].kind, &rows, &cols);
        float *w = malloc((size_t)rows * cols * sizeof *w);
        if (wr.dtype == ZMIX_DT_F32)
            memcpy(w, wr.data, (size_t)rows * cols * sizeof *w);
        else
            zmix_half_to_float(w, wr.data, (size_t)rows * cols, wr.dtype);
        float *ones = malloc((size_t)fa->rank * sizeof(float)), *tmp, *back;
        for (int i = 0; i < fa->rank; i++) ones[i] = 1.0f;
        tmp = malloc((size_t)rows * fa->rank * sizeof(float));
        back = malloc((size_t)rows * cols * sizeof(float));
        zmix_wprime_compose(rt, m, ones, 1.0f, back, tmp, tile);
        double e = max_rel_err(back, w, (size_t)rows * cols);
        worst = e > worst ? e : worst;
        for (int i = 1; i < fa->rank; i++) assert_true(fa->S[i - 1] >= fa->S[i]);
        free(ones), free(tmp), free(back), free(w);
    }
    print_message("factors %d: max relative reconstruction error %.3g\n", (int)rt->factor_dtype,
                  worst);
    assert_true(worst < tol);
    /* 16-bit factors really are rounded: not float32 exact. */
    if (rt->factor_dtype != ZMIX_DT_F32) assert_true(worst > 1e-5);
    free(tile);
    fixture_free(f);
}

static void test_compose_z_by_hand(void **state)
{
    fixture *f = fixture_make(ZMIX_ADAPT_MLP, 0);
    const zmix_runtime *rt = f->rt;
    int M = zmix_runtime_n_matrices(rt);
    assert_int_equal(M, 6);
    assert_string_equal(zmix_runtime_matrix_name(rt, 2), "model.layers.0.mlp.down_proj.weight");
    assert_string_equal(zmix_runtime_expert_name(rt, 1), "code");
    zmix_compose_opts o;
    zmix_compose_opts_default(&o);
    assert_int_equal(o.rescale, 1);
    o.per_layer = 1;
    o.normalize = 1;
    assert_int_equal(zmix_alpha_dim(rt, &o), (size_t)M * K);
    float alpha[6 * K];
    for (int i = 0; i < M * K; i++) alpha[i] = (float)(i % 4 + 1);
    size_t zt = zmix_runtime_z_total(rt);
    float *z = malloc(zt * sizeof(float));
    zmix_error err;
    assert_int_equal(zmix_compose_z(rt, &o, alpha, z, &err), 0);
    for (int m = 0; m < M; m++) {
        const float *a = alpha + m * K;
        float s = a[0] + a[1] + a[2];
        size_t off = zmix_runtime_z_offset(rt, m);
        for (int i = 0; i < zmix_runtime_matrix_rank(rt, m); i++) {
            float want = a[0] / s * f->z[0][off + i] + a[1] / s * f->z[1][off + i] +
                         a[2] / s * f->z[2][off + i];
            assert_float_equal(z[off + i], want, 1e-5);
        }
    }
    alpha[3 * K + 0] = alpha[3 * K + 1] = alpha[3 * K + 2] = 0.0f; /* matrix 3 sums to 0 */
    assert_int_equal(zmix_compose_z(rt, &o, alpha, z, &err), ZMIX_EINVAL);
    assert_non_null(strstr(err.msg, "model.layers.1.mlp.gate_proj.weight"));
    free(z);
    fixture_free(f);
}

/* Every W' mode, α and z' candidates, against the materialised definition. */
static void test_modes_match_materialised_reference(void **state)
{
    fixture *f = fixture_make_variant(ZMIX_ADAPT_ALL, 0, *state);
    const zmix_runtime *rt = f->rt;
    int V = f->model->cfg.vocab_size;
    size_t rows = n_target_rows(&f->ex), zt = zmix_runtime_z_total(rt);
    zmix_compose_opts o;
    zmix_compose_opts_default(&o);
    o.per_layer = 1;
    float alpha[14 * K];
    pcg32 rng;
    pcg32_seed(&rng, 1, 1);
    for (int i = 0; i < 14 * K; i++) alpha[i] = (float)pcg32_uniform(&rng);
    float *z = malloc(zt * sizeof(float));
    float *ref = malloc(rows * V * sizeof(float)), *got = malloc(rows * V * sizeof(float));
    zmix_error err = {0, ""};
    assert_int_equal(zmix_compose_z(rt, &o, alpha, z, &err), 0);
    for (int rescale = 0; rescale <= 1; rescale++) {
        o.rescale = rescale;
        zmix_model *wm;
        assert_int_equal(zmix_model_with_wprime(rt, rescale, z, &wm, &err), 0);
        reference_target_logits(f, wm, ref);
        zmix_model_free(wm);
        zmix_wprime_mode modes[3] = {ZMIX_WPRIME_LINEAR, ZMIX_WPRIME_COMPOSE, ZMIX_WPRIME_FACTORED};
        for (int i = 0; i < 3; i++) {
            if (zmix_candidate_logits(rt, &o, rescale, &f->ex, alpha, NULL, modes[i], got, &err))
                fail_msg("%s", err.msg);
            double e = max_rel_err(got, ref, rows * V);
            if (e > 1e-4)
                fail_msg("α, mode %s, rescale %d: relative logit error %g",
                         zmix_wprime_mode_name(modes[i]), rescale, e);
            if (modes[i] == ZMIX_WPRIME_LINEAR) continue;
            if (zmix_candidate_logits(rt, &o, rescale, &f->ex, NULL, z, modes[i], got, &err))
                fail_msg("%s", err.msg);
            e = max_rel_err(got, ref, rows * V);
            if (e > 1e-4)
                fail_msg("z', mode %s, rescale %d: relative logit error %g",
                         zmix_wprime_mode_name(modes[i]), rescale, e);
        }
    }
    /* Linear mode needs α: with z' candidates it is refused, not silently replaced. */
    assert_int_equal(
        zmix_candidate_logits(rt, &o, 1, &f->ex, NULL, z, ZMIX_WPRIME_LINEAR, got, &err),
        ZMIX_EINVAL);
    free(z), free(ref), free(got);
    fixture_free(f);
}

/* Scores (not just logits) agree with scores computed from the reference logits. */
static void test_scores_from_reference_logits(void **state)
{
    fixture *f = fixture_make(ZMIX_ADAPT_MLP, 0);
    int V = f->model->cfg.vocab_size;
    size_t rows = n_target_rows(&f->ex), zt = zmix_runtime_z_total(f->rt);
    float alpha[K] = {0.5f, 0.3f, 0.2f};
    zmix_compose_opts o;
    zmix_compose_opts_default(&o);
    float *z = malloc(zt * sizeof(float)), *ref = malloc(rows * V * sizeof(float));
    zmix_error err;
    assert_int_equal(zmix_compose_z(f->rt, &o, alpha, z, &err), 0);
    zmix_model *wm;
    assert_int_equal(zmix_model_with_wprime(f->rt, 1, z, &wm, &err), 0);
    reference_target_logits(f, wm, ref);
    zmix_model_free(wm);
    zmix_score s;
    zmix_example_score d[6];
    assert_int_equal(zmix_score_alpha(f->rt, &o, &f->ex, 1, alpha, NULL, &s, d, &err), 0);
    const float *lg = ref;
    int n_exact = 0;
    double sum = 0.0;
    for (int e = 0; e < f->ex.n; e++) {
        zmix_example_score want;
        zmix_example_score_logits(lg, f->ex.items[e].target, f->ex.items[e].n_target, V, &want);
        lg += (size_t)f->ex.items[e].n_target * V;
        assert_int_equal(d[e].exact, want.exact);
        assert_float_equal(d[e].loglik, want.loglik, 1e-4);
        n_exact += d[e].exact;
        sum += d[e].loglik;
    }
    assert_float_equal(s.accuracy, (double)n_exact / f->ex.n, 1e-12);
    assert_float_equal(s.loglik, sum / f->ex.n, 1e-12);
    assert_true(s.loglik < 0.0);
    free(z), free(ref);
    fixture_free(f);
}

/* Multiple choice: a set of 5 examples with 2 to 4 choices of 1 to 4 tokens (a random set;
 * the last has 12 choices of 5 tokens, whose sum far exceeds the span its attention reads),
 * and the same examples as one exact-match example per (prompt, choice). */
typedef struct choice_sets {
    zmix_examples mc, sep;
} choice_sets;

static void make_choice_sets(choice_sets *cs, int vocab, uint64_t seed)
{
    pcg32 rng;
    pcg32_seed(&rng, seed, 9);
    enum { N = 5 };
    zmix_example items[N], sep[N * 12];
    int32_t tok[N][128], lens[N][12];
    int n_sep = 0;
    for (int e = 0; e < N; e++) {
        zmix_example *x = &items[e];
        memset(x, 0, sizeof *x);
        x->n_prompt = 1 + (int)pcg32_bounded(&rng, 10);
        x->n_choices = e == N - 1 ? 12 : 2 + (int)pcg32_bounded(&rng, 3);
        x->answer = (int)pcg32_bounded(&rng, (uint32_t)x->n_choices);
        int at = x->n_prompt;
        for (int c = 0; c < x->n_choices; c++) {
            lens[e][c] = e == N - 1 ? 5 : c == 0 ? 1 : 1 + (int)pcg32_bounded(&rng, 4);
            at += lens[e][c];
        }
        for (int j = 0; j < at; j++) tok[e][j] = (int32_t)pcg32_bounded(&rng, (uint32_t)vocab);
        x->prompt = tok[e];
        x->choices = tok[e] + x->n_prompt;
        x->choice_len = lens[e];
        const int32_t *ch = x->choices;
        for (int c = 0; c < x->n_choices; ch += lens[e][c], c++)
            sep[n_sep++] = (zmix_example){x->prompt, x->n_prompt, ch, lens[e][c], 0, NULL, NULL, 0};
    }
    zmix_error err;
    if (zmix_examples_copy(items, N, &cs->mc, &err) ||
        zmix_examples_copy(sep, n_sep, &cs->sep, &err))
        fail_msg("%s", err.msg);
}

/* The choices of an example share the prompt's pass (the prompt once, each choice a branch
 * attending to it), and that gives what scoring prompt + choice as separate sequences gives:
 * the same logits to float rounding, checked against the plain full-position forward of each
 * prompt + choice on W' materialised, and the same scores computed from those logits by the
 * definition (per-token and summed log-likelihoods, margin, strict win). */
static void test_choices_share_the_prompt_pass(void **state)
{
    fixture *f = fixture_make_variant(ZMIX_ADAPT_ALL, 0, *state);
    int V = f->model->cfg.vocab_size;
    choice_sets cs;
    make_choice_sets(&cs, V, 17);
    size_t zt = zmix_runtime_z_total(f->rt), rows = n_target_rows(&cs.sep);
    float alpha[K] = {0.7f, 0.5f, -0.2f};
    zmix_compose_opts o;
    zmix_compose_opts_default(&o);
    float *z = malloc(zt * sizeof(float));
    float *ref = malloc(rows * V * sizeof(float)), *got = malloc(rows * V * sizeof(float));
    zmix_error err = {0, ""};
    assert_int_equal(zmix_compose_z(f->rt, &o, alpha, z, &err), 0);
    zmix_model *wm;
    assert_int_equal(zmix_model_with_wprime(f->rt, 1, z, &wm, &err), 0);
    zmix_examples keep = f->ex;
    f->ex = cs.sep;
    reference_target_logits(f, wm, ref);
    f->ex = keep;
    zmix_model_free(wm);

    zmix_wprime_mode modes[3] = {ZMIX_WPRIME_LINEAR, ZMIX_WPRIME_COMPOSE, ZMIX_WPRIME_FACTORED};
    for (int i = 0; i < 3; i++) {
        if (zmix_candidate_logits(f->rt, &o, 1, &cs.mc, alpha, NULL, modes[i], got, &err))
            fail_msg("%s", err.msg);
        /* got: per example, the prompt's last row, then each choice's rows after its first
         * token; ref: per (example, choice), the rows predicting each choice token. */
        const float *g = got, *r = ref;
        for (int e = 0; e < cs.mc.n; e++) {
            const zmix_example *x = &cs.mc.items[e];
            const float *first = g;
            g += V;
            for (int c = 0; c < x->n_choices; c++) {
                int n = x->choice_len[c];
                double e0 = max_rel_err(first, r, (size_t)V);
                double e1 = n > 1 ? max_rel_err(g, r + V, (size_t)(n - 1) * V) : 0.0;
                if (e0 > 1e-5 || e1 > 1e-5)
                    fail_msg("mode %s, examples[%d].choices[%d]: relative logit error %g / %g",
                             zmix_wprime_mode_name(modes[i]), e, c, e0, e1);
                g += (size_t)(n - 1) * V;
                r += (size_t)n * V;
            }
        }
    }

    for (int norm = 0; norm <= 1; norm++) {
        zmix_score_ctl ctl = {1, NULL, norm ? ZMIX_CHOICE_SUM : ZMIX_CHOICE_PER_TOKEN};
        zmix_score s;
        zmix_example_score d[5];
        assert_int_equal(zmix_score_alpha(f->rt, &o, &cs.mc, 1, alpha, &ctl, &s, d, &err), 0);
        const float *r = ref;
        int right = 0;
        double margins = 0.0;
        for (int e = 0; e < cs.mc.n; e++) {
            const zmix_example *x = &cs.mc.items[e];
            double ll[12], other = -INFINITY;
            int best = 0;
            const int32_t *ch = x->choices;
            for (int c = 0; c < x->n_choices; c++) {
                zmix_example_score one;
                zmix_example_score_logits(r, ch, x->choice_len[c], V, &one);
                ll[c] = norm ? one.loglik * x->choice_len[c] : one.loglik;
                r += (size_t)x->choice_len[c] * V;
                ch += x->choice_len[c];
                if (ll[c] > ll[best]) best = c;
            }
            for (int c = 0; c < x->n_choices; c++)
                if (c != x->answer && ll[c] > other) other = ll[c];
            assert_float_equal(d[e].loglik, ll[x->answer] - other, 1e-4);
            assert_int_equal(d[e].exact, ll[x->answer] > other);
            assert_int_equal(d[e].chosen, best);
            right += d[e].exact;
            margins += d[e].loglik;
        }
        assert_float_equal(s.accuracy, (double)right / cs.mc.n, 1e-12);
        assert_float_equal(s.loglik, margins / cs.mc.n, 1e-12);
    }

    /* Branched examples on the population path: 7 candidates in one call or one at a time,
     * the same bits (the branches' rows are padded like any copy's). */
    size_t adim = zmix_alpha_dim(f->rt, &o);
    enum { P = 7 };
    float *pa = malloc(P * adim * sizeof(float));
    for (size_t i = 0; i < P * adim; i++) pa[i] = 0.2f + 0.1f * (float)(i % 7);
    zmix_score all[P], one;
    zmix_score_ctl c1 = {1, NULL, ZMIX_CHOICE_PER_TOKEN};
    assert_int_equal(zmix_score_alpha(f->rt, &o, &cs.mc, P, pa, &c1, all, NULL, &err), 0);
    for (int i = 0; i < P; i++) {
        assert_int_equal(
            zmix_score_alpha(f->rt, &o, &cs.mc, 1, pa + i * adim, &c1, &one, NULL, &err), 0);
        assert_memory_equal(&one, &all[i], sizeof one);
    }
    free(pa);
    zmix_examples_free(&cs.mc);
    zmix_examples_free(&cs.sep);
    free(z), free(ref), free(got);
    fixture_free(f);
}

/* Two identical choices tie whatever the model: the tie is wrong (margin 0), and the
 * preferred choice is the first of them. A longer choice made of the same first token is
 * compared per token by default and summed with ZMIX_CHOICE_SUM. */
static void test_choice_ties_and_norms(void **state)
{
    (void)state;
    fixture *f = fixture_make(ZMIX_ADAPT_MLP, 0);
    int32_t prompt[3] = {4, 9, 2}, choices[2] = {7, 7}, lens[2] = {1, 1};
    zmix_example x = {prompt, 3, NULL, 0, 2, choices, lens, 1};
    zmix_examples ex;
    zmix_error err;
    assert_int_equal(zmix_examples_copy(&x, 1, &ex, &err), 0);
    float alpha[K] = {0.3f, 0.3f, 0.4f};
    zmix_score s;
    zmix_example_score d;
    assert_int_equal(zmix_score_alpha(f->rt, NULL, &ex, 1, alpha, NULL, &s, &d, &err), 0);
    assert_int_equal(d.exact, 0);
    assert_int_equal(d.chosen, 0);
    assert_true(d.loglik == 0.0);
    assert_true(s.accuracy == 0.0);
    zmix_examples_free(&ex);
    fixture_free(f);
}

/* Dynamic (NTK) RoPE scaling gives a sequence longer than original_max_pos frequencies of its
 * own, which a prompt shared by choices of different lengths cannot have: a prompt + choice
 * within original_max_pos is scored (and equals its separate sequence), a longer one is
 * refused by name rather than scored with the wrong frequencies. */
static void test_choices_with_dynamic_rope(void **state)
{
    (void)state;
    zmix_model_config cfg = config();
    cfg.rope_scaling.type = ZMIX_ROPE_DYNAMIC;
    cfg.rope_scaling.factor = 2.0;
    cfg.rope_scaling.original_max_pos = 8;
    zmix_model *model;
    zmix_error err = {0, ""};
    assert_int_equal(zmix_model_create_random(&cfg, 3, &model, &err), 0);
    zmix_runtime_opts opts;
    zmix_runtime_opts_default(&opts);
    zmix_runtime *rt;
    if (zmix_runtime_create_from_z(model, &opts, NULL, NULL, 0, &rt, &err)) fail_msg("%s", err.msg);
    int32_t prompt[6] = {1, 2, 3, 4, 5, 6}, choices[5] = {7, 8, 9, 10, 11}, lens[2] = {2, 3};
    zmix_example mc = {prompt, 5, NULL, 0, 2, choices, lens, 1}; /* 5 + 3 - 1 = 7 positions */
    zmix_example sep = {prompt, 5, choices + 2, 3, 0, NULL, NULL, 0};
    zmix_examples one, alone;
    assert_int_equal(zmix_examples_copy(&mc, 1, &one, &err), 0);
    assert_int_equal(zmix_examples_copy(&sep, 1, &alone, &err), 0);
    size_t zt = zmix_runtime_z_total(rt);
    float *ones = malloc(zt * sizeof *ones);
    for (size_t i = 0; i < zt; i++) ones[i] = 1.0f;
    int V = cfg.vocab_size;
    float got[1 + 1 + 2][29], ref[3][29];
    zmix_compose_opts co;
    zmix_compose_opts_default(&co);
    assert_int_equal(
        zmix_candidate_logits(rt, &co, 1, &one, NULL, ones, ZMIX_WPRIME_AUTO, &got[0][0], &err), 0);
    assert_int_equal(
        zmix_candidate_logits(rt, &co, 1, &alone, NULL, ones, ZMIX_WPRIME_AUTO, &ref[0][0], &err),
        0);
    /* got: the prompt's last row, choice 0's row, choice 1's two rows */
    assert_true(max_rel_err(got[0], ref[0], (size_t)V) < 1e-5);
    assert_true(max_rel_err(got[2], ref[1], 2 * (size_t)V) < 1e-5);
    zmix_examples_free(&one);
    /* 6 + 3 - 1 = 8 positions: still within; 7 + 3 - 1 = 9: refused. */
    mc.n_prompt = 6;
    assert_int_equal(zmix_examples_copy(&mc, 1, &one, &err), 0);
    zmix_score sc;
    assert_int_equal(zmix_score_z(rt, 1, &one, 1, ones, NULL, &sc, NULL, &err), 0);
    zmix_examples_free(&one);
    int32_t longer[7] = {1, 2, 3, 4, 5, 6, 7};
    mc.prompt = longer;
    mc.n_prompt = 7;
    assert_int_equal(zmix_examples_copy(&mc, 1, &one, &err), 0);
    assert_int_equal(zmix_score_z(rt, 1, &one, 1, ones, NULL, &sc, NULL, &err), ZMIX_EINVAL);
    assert_non_null(strstr(err.msg, "dynamic RoPE scaling"));
    assert_non_null(strstr(err.msg, "examples[0]: the prompt and its longest choice read 9"));
    zmix_examples_free(&one);
    zmix_examples_free(&alone);
    free(ones);
    zmix_runtime_free(rt);
    zmix_model_free(model);
}

static void test_all_ones_experts_reproduce_base(void **state)
{
    fixture *f = fixture_make_variant(ZMIX_ADAPT_ALL, 1, *state);
    int V = f->model->cfg.vocab_size;
    size_t rows = n_target_rows(&f->ex);
    float *base = malloc(rows * V * sizeof(float)), *got = malloc(rows * V * sizeof(float));
    reference_target_logits(f, f->model, base);
    /* W' built from the factors (the expert matrices of the linear mode) is W only to the
     * precision the factors are stored in. */
    zmix_dtype fd = f->rt->factor_dtype;
    double tol = fd == ZMIX_DT_F32 ? 1e-4 : fd == ZMIX_DT_F16 ? 5e-3 : 3e-2;
    zmix_compose_opts o;
    zmix_compose_opts_default(&o);
    float alpha[K] = {0.2f, 0.5f, 0.3f}; /* sums to 1: z' = 1 */
    zmix_wprime_mode modes[3] = {ZMIX_WPRIME_LINEAR, ZMIX_WPRIME_COMPOSE, ZMIX_WPRIME_FACTORED};
    zmix_error err;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(
            zmix_candidate_logits(f->rt, &o, 1, &f->ex, alpha, NULL, modes[i], got, &err), 0);
        double e = max_rel_err(got, base, rows * V);
        if (e > tol) fail_msg("mode %s: relative error %g", zmix_wprime_mode_name(modes[i]), e);
    }
    /* Any α with the rescale: z' = s·1, c = 1/s, W' = W. */
    float big[K] = {2.0f, 1.0f, 0.5f};
    assert_int_equal(
        zmix_candidate_logits(f->rt, &o, 1, &f->ex, big, NULL, ZMIX_WPRIME_AUTO, got, &err), 0);
    assert_true(max_rel_err(got, base, rows * V) < tol);
    /* Without the rescale the same α scales every adapted matrix by 3.5: not the base. */
    o.rescale = 0;
    assert_int_equal(
        zmix_candidate_logits(f->rt, &o, 0, &f->ex, big, NULL, ZMIX_WPRIME_AUTO, got, &err), 0);
    assert_true(max_rel_err(got, base, rows * V) > 10 * tol);
    /* z' = 1 exactly is the base model itself: every mode skips W' and gives the same bits. */
    size_t zt = zmix_runtime_z_total(f->rt);
    float *ones = malloc(zt * sizeof(float)), *again = malloc(rows * V * sizeof(float));
    for (size_t i = 0; i < zt; i++) ones[i] = 1.0f;
    assert_int_equal(
        zmix_candidate_logits(f->rt, &o, 1, &f->ex, NULL, ones, ZMIX_WPRIME_COMPOSE, got, &err), 0);
    assert_int_equal(
        zmix_candidate_logits(f->rt, &o, 0, &f->ex, NULL, ones, ZMIX_WPRIME_FACTORED, again, &err),
        0);
    assert_memory_equal(got, again, rows * V * sizeof(float));
    assert_true(max_rel_err(got, base, rows * V) < 1e-5);
    free(ones), free(again);
    free(base), free(got);
    fixture_free(f);
}

/* Bitwise equality of per-example details (field by field: the struct has padding). */
static void assert_same_details(const zmix_example_score *a, const zmix_example_score *b, int n)
{
    for (int i = 0; i < n; i++) {
        assert_int_equal(a[i].exact, b[i].exact);
        assert_memory_equal(&a[i].loglik, &b[i].loglik, sizeof a[i].loglik);
    }
}

/* A candidate's score is the same bits alone, in a batch of 64, on 1 thread or 2. */
static void test_batch_and_thread_independence(void **state)
{
    fixture *f = fixture_make_variant(ZMIX_ADAPT_MLP, 0, *state);
    zmix_compose_opts o;
    zmix_compose_opts_default(&o);
    o.per_layer = 1;
    size_t dim = zmix_alpha_dim(f->rt, &o);
    enum { P = 64 };
    float *alpha = malloc(P * dim * sizeof(float));
    pcg32 rng;
    pcg32_seed(&rng, 8, 8);
    for (size_t i = 0; i < P * dim; i++) alpha[i] = (float)pcg32_uniform(&rng);
    zmix_wprime_mode modes[4] = {ZMIX_WPRIME_AUTO, ZMIX_WPRIME_LINEAR, ZMIX_WPRIME_COMPOSE,
                                 ZMIX_WPRIME_FACTORED};
    zmix_error err;
    for (int mi = 0; mi < 4; mi++) {
        zmix_score one[P], two[P], alone;
        zmix_example_score d1[P * 6], d2[P * 6], dalone[6];
        zmix_score_ctl c1 = {1, NULL, ZMIX_CHOICE_PER_TOKEN}, c2 = {2, NULL, ZMIX_CHOICE_PER_TOKEN};
        assert_int_equal(
            zmix_score_mode(f->rt, &o, 1, &f->ex, P, alpha, NULL, &c1, modes[mi], one, d1, &err),
            0);
        assert_int_equal(
            zmix_score_mode(f->rt, &o, 1, &f->ex, P, alpha, NULL, &c2, modes[mi], two, d2, &err),
            0);
        assert_memory_equal(one, two, sizeof one);
        assert_same_details(d1, d2, P * 6);
        for (int i = 0; i < P; i += 9) {
            assert_int_equal(zmix_score_mode(f->rt, &o, 1, &f->ex, 1, alpha + i * dim, NULL, &c2,
                                             modes[mi], &alone, dalone, &err),
                             0);
            assert_memory_equal(&alone, &one[i], sizeof alone);
            assert_same_details(dalone, d1 + i * 6, 6);
        }
        /* Different α give different scores: the batch really holds 64 candidates. */
        assert_true(one[0].loglik != one[1].loglik);
    }
    free(alpha);
    fixture_free(f);
}

/* The BLAS property the population path rests on (compute.h): in a GEMM whose M is a multiple
 * of ZMIX_POP_ROW_BLOCK, a row's result depends on the row, W and the row's position within
 * its 48-row block alone, not on M nor on which block it is in. Checked on the shapes the
 * scorer multiplies. (Shifting rows by a non-multiple of the kernel's register block does
 * change bits with OpenBLAS 0.3.21 on Zen: each of its 12 rows has its own FMA order.) */
static void test_pop_gemm_rows_do_not_depend_on_m(void **state)
{
    (void)state;
    int shapes[][2] = {{32, 32}, {64, 64}, {172, 64}, {64, 172}, {512, 64}, {768, 288}, {8, 32}};
    enum { MAXM = 6 * ZMIX_POP_ROW_BLOCK };
    pcg32 rng;
    pcg32_seed(&rng, 3, 3);
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        int N = shapes[s][0], Kd = shapes[s][1];
        float *x = malloc((size_t)MAXM * Kd * sizeof(float));
        float *w = malloc((size_t)N * Kd * sizeof(float));
        float *ref = malloc((size_t)MAXM * N * sizeof(float));
        float *y = malloc((size_t)MAXM * N * sizeof(float));
        for (size_t i = 0; i < (size_t)MAXM * Kd; i++) x[i] = (float)pcg32_normal(&rng);
        for (size_t i = 0; i < (size_t)N * Kd; i++) w[i] = (float)pcg32_normal(&rng);
        zmix_wref wr = {w, ZMIX_DT_F32};
        zmix_gemm_xwt(x, Kd, MAXM, wr, N, Kd, ref, N, NULL);
        for (int M = ZMIX_POP_ROW_BLOCK; M < MAXM; M += ZMIX_POP_ROW_BLOCK)
            for (int off = 0; off + M <= MAXM; off += ZMIX_POP_ROW_BLOCK) {
                zmix_gemm_xwt(x + (size_t)off * Kd, Kd, M, wr, N, Kd, y, N, NULL);
                assert_memory_equal(y, ref + (size_t)off * N, (size_t)M * N * sizeof(float));
            }
        free(x), free(w), free(ref), free(y);
    }
}

/* The population path against the per-candidate path: the same accuracy and log-likelihoods
 * within 1e-5 (relative), in every W' mode, with a degenerate candidate in the middle. */
static void test_population_matches_per_candidate(void **state)
{
    static const zmix_adapt_set sets[2] = {ZMIX_ADAPT_MLP, ZMIX_ADAPT_ALL};
    for (int si = 0; si < 2; si++) {
        fixture *f = fixture_make_variant(sets[si], 0, *state);
        zmix_compose_opts o;
        zmix_compose_opts_default(&o);
        o.per_layer = 1;
        size_t dim = zmix_alpha_dim(f->rt, &o);
        enum { P = 13 };
        float *alpha = malloc(P * dim * sizeof(float));
        pcg32 rng;
        pcg32_seed(&rng, 21, 4);
        for (size_t i = 0; i < P * dim; i++) alpha[i] = (float)pcg32_uniform(&rng);
        alpha[5 * dim] = NAN;
        zmix_wprime_mode modes[4] = {ZMIX_WPRIME_AUTO, ZMIX_WPRIME_LINEAR, ZMIX_WPRIME_COMPOSE,
                                     ZMIX_WPRIME_FACTORED};
        zmix_error err;
        for (int mi = 0; mi < 4; mi++) {
            zmix_score pop[P], per[P];
            zmix_score_ctl c1 = {1, NULL, ZMIX_CHOICE_PER_TOKEN};
            assert_int_equal(zmix_score_mode(f->rt, &o, 1, &f->ex, P, alpha, NULL, &c1, modes[mi],
                                             pop, NULL, &err),
                             0);
            zmix_score_batched = 0;
            int rc = zmix_score_mode(f->rt, &o, 1, &f->ex, P, alpha, NULL, &c1, modes[mi], per,
                                     NULL, &err);
            zmix_score_batched = 1;
            assert_int_equal(rc, 0);
            for (int i = 0; i < P; i++) {
                if (i == 5) {
                    assert_true(isnan(pop[i].loglik) && isnan(per[i].loglik));
                    assert_true(isnan(pop[i].margin) && isnan(per[i].margin));
                    continue;
                }
                assert_true(pop[i].accuracy == per[i].accuracy);
                assert_true(fabs(pop[i].loglik - per[i].loglik) <=
                            1e-5 * fmax(1.0, fabs(per[i].loglik)));
                /* the margin steers the search: both paths report it */
                assert_true(pop[i].margin <= 0.0);
                assert_true(fabs(pop[i].margin - per[i].margin) <= 1e-4);
            }
        }
        free(alpha);
        fixture_free(f);
    }
}

/* A candidate's score is the same bits whatever population it is scored in: every split of
 * 37 candidates into pieces (as the daemon's pool makes), 1 or 2 threads, with the shared
 * prefix on or off, and under a small memory budget (smaller chunks). */
static void test_population_split_independence(void **state)
{
    static const zmix_adapt_set sets[2] = {ZMIX_ADAPT_MLP, ZMIX_ADAPT_ATTN};
    for (int si = 0; si < 2; si++) {
        fixture *f = fixture_make_variant(sets[si], 0, *state);
        zmix_compose_opts o;
        zmix_compose_opts_default(&o);
        o.per_layer = 1;
        size_t dim = zmix_alpha_dim(f->rt, &o);
        enum { P = 37 };
        float *alpha = malloc(P * dim * sizeof(float));
        pcg32 rng;
        pcg32_seed(&rng, 5, 6);
        for (size_t i = 0; i < P * dim; i++) alpha[i] = (float)pcg32_uniform(&rng);
        zmix_wprime_mode modes[3] = {ZMIX_WPRIME_AUTO, ZMIX_WPRIME_LINEAR, ZMIX_WPRIME_FACTORED};
        zmix_error err;
        for (int mi = 0; mi < 3; mi++) {
            zmix_score all[P], piece[P];
            zmix_example_score dall[P * 6], dpiece[P * 6];
            zmix_score_ctl c1 = {1, NULL, ZMIX_CHOICE_PER_TOKEN};
            zmix_score_ctl c2 = {2, NULL, ZMIX_CHOICE_PER_TOKEN};
            assert_int_equal(zmix_score_mode(f->rt, &o, 1, &f->ex, P, alpha, NULL, &c1, modes[mi],
                                             all, dall, &err),
                             0);
            static const int cuts[][5] = {{1, 5, 13, 18, 0}, {36, 1, 0}, {2, 3, 32, 0}};
            for (size_t ci = 0; ci < sizeof cuts / sizeof *cuts; ci++) {
                int at = 0;
                for (int j = 0; cuts[ci][j]; j++) {
                    int n = cuts[ci][j];
                    assert_int_equal(zmix_score_mode(f->rt, &o, 1, &f->ex, n,
                                                     alpha + (size_t)at * dim, NULL,
                                                     ci == 1 ? &c2 : &c1, modes[mi], piece + at,
                                                     dpiece + at * 6, &err),
                                     0);
                    at += n;
                }
                assert_int_equal(at, P);
                assert_memory_equal(all, piece, sizeof all);
                assert_same_details(dall, dpiece, P * 6);
            }
            zmix_score_shared_prefix = 0;
            int rc = zmix_score_mode(f->rt, &o, 1, &f->ex, P, alpha, NULL, &c2, modes[mi], piece,
                                     dpiece, &err);
            zmix_score_shared_prefix = 1;
            assert_int_equal(rc, 0);
            assert_memory_equal(all, piece, sizeof all);
            assert_same_details(dall, dpiece, P * 6);
        }
        free(alpha);
        fixture_free(f);
    }
}

static void test_memory_budget_chunks_examples(void **state)
{
    fixture *f = fixture_make(ZMIX_ADAPT_MLP, 0);
    zmix_compose_opts o;
    zmix_compose_opts_default(&o);
    float alpha[2 * K] = {0.5f, 0.3f, 0.2f, 0.1f, 0.1f, 0.9f};
    zmix_score whole[2], chunked[2];
    zmix_error err;
    zmix_score_ctl c2 = {2, NULL, ZMIX_CHOICE_PER_TOKEN};
    assert_int_equal(zmix_score_alpha(f->rt, &o, &f->ex, 2, alpha, &c2, whole, NULL, &err), 0);
    /* A budget that holds the activations of the largest example, far from all six. */
    size_t one = 0;
    int all_rows = 0, all_out = 0, all_len = 0;
    for (int e = 0; e < f->ex.n; e++) {
        int len = f->ex.items[e].n_prompt + f->ex.items[e].n_target - 1;
        int nt = f->ex.items[e].n_target;
        size_t b = zmix_score_activation_bytes(&f->model->cfg, len, nt, len);
        one = b > one ? b : one;
        all_rows += len, all_out += nt, all_len = len > all_len ? len : all_len;
    }
    assert_true(2 * one < zmix_score_activation_bytes(&f->model->cfg, all_rows, all_out, all_len));
    zmix_runtime *small;
    zmix_runtime_opts ro;
    zmix_runtime_opts_default(&ro);
    ro.memory_budget = one;
    assert_int_equal(zmix_runtime_create_from_z(f->model, &ro, (const float *const *)f->z, NULL, K,
                                                &small, &err),
                     0);
    assert_string_equal(zmix_runtime_expert_name(small, 2), "expert2");
    assert_int_equal(zmix_score_alpha(small, &o, &f->ex, 2, alpha, &c2, chunked, NULL, &err), 0);
    for (int i = 0; i < 2; i++) {
        assert_float_equal(chunked[i].accuracy, whole[i].accuracy, 1e-12);
        assert_float_equal(chunked[i].loglik, whole[i].loglik, 1e-5);
    }
    zmix_runtime_free(small);
    ro.memory_budget = 1000; /* not even one example */
    assert_int_equal(zmix_runtime_create_from_z(f->model, &ro, (const float *const *)f->z, NULL, K,
                                                &small, &err),
                     0);
    assert_int_equal(zmix_score_alpha(small, &o, &f->ex, 2, alpha, &c2, chunked, NULL, &err),
                     ZMIX_ENOMEM);
    assert_non_null(strstr(err.msg, "example 0"));
    zmix_runtime_free(small);
    fixture_free(f);
}

/* The context rule is the scorer's: it reads prompt + target - 1 positions, so an example with
 * exactly max_seq_len of them is accepted by the validator and scored as the definition says,
 * and one more token is refused by both, naming the context. */
static void test_example_at_the_context_limit(void **state)
{
    fixture *f = fixture_make(ZMIX_ADAPT_MLP, 0);
    int V = f->model->cfg.vocab_size, ctx = f->model->cfg.max_seq_len;
    int32_t tok[66];
    for (int j = 0; j < 66; j++) tok[j] = (int32_t)((j * 7 + 3) % V);
    zmix_example item = {tok, ctx - 4, tok + ctx - 4, 5,
                         0,   NULL,    NULL,          0}; /* 60 + 5 - 1 = 64 = ctx */
    zmix_examples_free(&f->ex);
    zmix_error err;
    assert_int_equal(zmix_examples_copy(&item, 1, &f->ex, &err), 0);
    assert_int_equal(zmix_examples_check(f->model, &f->ex, &err), 0);

    float alpha[K] = {0.5f, 0.3f, 0.2f};
    zmix_compose_opts o;
    zmix_compose_opts_default(&o);
    size_t zt = zmix_runtime_z_total(f->rt);
    float *z = malloc(zt * sizeof(float)), *ref = malloc((size_t)5 * V * sizeof(float));
    assert_int_equal(zmix_compose_z(f->rt, &o, alpha, z, &err), 0);
    zmix_model *wm;
    assert_int_equal(zmix_model_with_wprime(f->rt, 1, z, &wm, &err), 0);
    reference_target_logits(f, wm, ref);
    zmix_model_free(wm);
    zmix_example_score want, got;
    zmix_example_score_logits(ref, item.target, item.n_target, V, &want);
    zmix_score s;
    assert_int_equal(zmix_score_alpha(f->rt, &o, &f->ex, 1, alpha, NULL, &s, &got, &err), 0);
    assert_int_equal(got.exact, want.exact);
    assert_float_equal(got.loglik, want.loglik, 1e-4);
    assert_true(isfinite(s.loglik));

    item.n_prompt++; /* 61 + 5 - 1 = 65 positions: one over */
    zmix_examples over;
    assert_int_equal(zmix_examples_copy(&item, 1, &over, &err), 0);
    assert_int_equal(zmix_examples_check(f->model, &over, &err), ZMIX_ELIMIT);
    assert_string_equal(err.msg, "examples[0]: 66 tokens (prompt 61 + target 5): the model reads "
                                 "65 of them (all but the last target token), over its context "
                                 "of 64");
    err.msg[0] = '\0';
    assert_int_equal(zmix_score_alpha(f->rt, &o, &over, 1, alpha, NULL, &s, NULL, &err),
                     ZMIX_ELIMIT);
    assert_non_null(strstr(err.msg, "over its context of 64"));
    zmix_examples_free(&over);
    free(z), free(ref);
    fixture_free(f);
}

static void test_hand_checked_scores(void **state)
{
    /* Two target positions over a vocabulary of 3:
     *   row 0 = log(1, 2, 1): p = (.25, .5, .25), target 1 is the argmax, log p = log .5
     *   row 1 = (0, 0, 0): a three-way tie, argmax is index 0, target 2 is not it, log 1/3. */
    float logits[6] = {0.0f, logf(2.0f), 0.0f, 0.0f, 0.0f, 0.0f};
    int32_t target[2] = {1, 2};
    zmix_example_score s;
    zmix_example_score_logits(logits, target, 2, 3, &s);
    assert_int_equal(s.exact, 0);
    assert_float_equal(s.loglik, (log(0.5) + log(1.0 / 3.0)) / 2, 1e-6);
    zmix_example_score_logits(logits, target, 1, 3, &s);
    assert_int_equal(s.exact, 1);
    assert_float_equal(s.loglik, log(0.5), 1e-6);
    target[0] = 0; /* tie at row 1 goes to the first index */
    zmix_example_score_logits(logits + 3, target, 1, 3, &s);
    assert_int_equal(s.exact, 1);
    assert_float_equal(s.loglik, log(1.0 / 3.0), 1e-6);
}

static void test_degenerate_candidates_and_errors(void **state)
{
    fixture *f = fixture_make(ZMIX_ADAPT_MLP, 0);
    zmix_compose_opts o;
    zmix_compose_opts_default(&o);
    o.normalize = 1;
    float alpha[2 * K] = {0.0f, 0.0f, 0.0f, 0.2f, 0.3f, 0.5f};
    zmix_score s[2];
    zmix_example_score d[12];
    zmix_error err;
    assert_int_equal(zmix_score_alpha(f->rt, &o, &f->ex, 2, alpha, NULL, s, d, &err), 0);
    assert_true(isnan(s[0].accuracy) && isnan(s[0].loglik));
    assert_true(zmix_score_cmp(&s[1], &s[0], ZMIX_METRIC_ACCURACY) > 0);
    assert_true(!isnan(s[1].loglik) && s[1].accuracy >= 0.0);
    o.normalize = 0; /* α = 0 without normalising: the rescale divides by zero */
    assert_int_equal(zmix_score_alpha(f->rt, &o, &f->ex, 2, alpha, NULL, s, NULL, &err), 0);
    assert_true(isnan(s[0].loglik));

    /* Non-finite α or z' is degenerate too, with or without the rescale. */
    float nan_alpha[2 * K] = {NAN, 0.2f, 0.3f, 0.2f, 0.3f, 0.5f};
    o.rescale = 0;
    assert_int_equal(zmix_score_alpha(f->rt, &o, &f->ex, 2, nan_alpha, NULL, s, NULL, &err), 0);
    assert_true(isnan(s[0].accuracy) && isnan(s[0].loglik));
    assert_true(!isnan(s[1].loglik));
    size_t zt0 = zmix_runtime_z_total(f->rt);
    float *zinf = malloc(zt0 * sizeof(float));
    for (size_t i = 0; i < zt0; i++) zinf[i] = 0.9f;
    zinf[zt0 - 1] = INFINITY;
    assert_int_equal(zmix_score_z(f->rt, 0, &f->ex, 1, zinf, NULL, s, NULL, &err), 0);
    assert_true(isnan(s[0].accuracy));
    free(zinf);
    o.rescale = 1;

    /* Cancelled before the first candidate. */
    atomic_int stop = 1;
    zmix_score_ctl ctl = {2, &stop, ZMIX_CHOICE_PER_TOKEN};
    assert_int_equal(zmix_score_alpha(f->rt, &o, &f->ex, 2, alpha, &ctl, s, NULL, &err),
                     ZMIX_ECANCELED);

    /* A token outside the vocabulary is named by example and position. */
    int32_t bad_prompt[2] = {1, 29}, target[1] = {3};
    zmix_example item = {bad_prompt, 2, target, 1, 0, NULL, NULL, 0};
    zmix_examples bad = {&item, 1, NULL, 0};
    assert_int_equal(zmix_score_alpha(f->rt, &o, &bad, 1, alpha + K, NULL, s, NULL, &err),
                     ZMIX_ERANGE);
    assert_string_equal(err.msg,
                        "examples[0].prompt[1]: token id 29 outside the vocabulary [0, 29)");
    item.n_target = 0;
    assert_int_equal(zmix_score_alpha(f->rt, &o, &bad, 1, alpha + K, NULL, s, NULL, &err),
                     ZMIX_EINVAL);

    /* A runtime without experts scores z' but refuses α. */
    zmix_runtime *bare;
    assert_int_equal(zmix_runtime_create_from_z(f->model, NULL, NULL, NULL, 0, &bare, &err), 0);
    assert_int_equal(zmix_score_alpha(bare, &o, &f->ex, 1, alpha, NULL, s, NULL, &err),
                     ZMIX_EINVAL);
    size_t zt = zmix_runtime_z_total(bare);
    float *ones = malloc(zt * sizeof(float));
    for (size_t i = 0; i < zt; i++) ones[i] = 1.0f;
    assert_int_equal(zmix_score_z(bare, 1, &f->ex, 1, ones, NULL, s, NULL, &err), 0);
    assert_true(s[0].loglik < 0.0);
    free(ones);
    zmix_runtime_free(bare);
    fixture_free(f);
}

/* Truncates every file in dir to half its size. Returns how many it touched. */
static int corrupt_dir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[2400];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        FILE *f = fopen(path, "rb");
        fseek(f, 0, SEEK_END);
        long size = ftell(f);
        fclose(f);
        assert_int_equal(truncate(path, size / 2), 0);
        n++;
    }
    if (d) closedir(d);
    return n;
}

static void remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[2400];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    if (d) closedir(d);
    rmdir(dir);
}

static void assert_same_factors(const zmix_runtime *a, const zmix_runtime *b)
{
    assert_int_equal(a->n_mat, b->n_mat);
    for (int m = 0; m < a->n_mat; m++) {
        const zmix_factors *x = &a->factors[m], *y = &b->factors[m];
        assert_int_equal(x->dtype, y->dtype);
        size_t es = x->dtype == ZMIX_DT_F32 ? sizeof(float) : sizeof(uint16_t);
        assert_memory_equal(x->S, y->S, (size_t)x->rank * sizeof(float));
        assert_memory_equal(zmix_factors_U(x).data, zmix_factors_U(y).data,
                            (size_t)x->rows * x->rank * es);
        assert_memory_equal(zmix_factors_Vt(x).data, zmix_factors_Vt(y).data,
                            (size_t)x->rank * x->cols * es);
    }
}

/* The one file name in dir (the cache holds one file per model, set and factor dtype). */
static void only_file(const char *dir, char *name, size_t size)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    while (d && (e = readdir(d)))
        if (e->d_name[0] != '.') snprintf(name, size, "%s", e->d_name), n++;
    if (d) closedir(d);
    assert_int_equal(n, 1);
}

/* The runtime saves the factors, loads them next time, and rebuilds a corrupt cache. Experts
 * come from files. */
static void test_runtime_factor_cache_and_expert_files(void **state)
{
    const variant *v = *state;
    fixture *f = fixture_make_variant(ZMIX_ADAPT_MLP, 0, v);
    char dir[] = "/tmp/zmix-compute-test-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char cache[1100], e0[1100], e1[1100];
    snprintf(cache, sizeof cache, "%s/cache", dir);
    assert_int_equal(mkdir(cache, 0700), 0);
    snprintf(e0, sizeof e0, "%s/math.safetensors", dir);
    snprintf(e1, sizeof e1, "%s/code.safetensors", dir);
    zmix_error err = {0, ""};
    const zmix_runtime *rt = f->rt;
    assert_int_equal(zmix_expert_save(e0, rt->list, rt->n_mat, f->z[0], NULL, NULL, 0, &err), 0);
    assert_int_equal(zmix_expert_save(e1, rt->list, rt->n_mat, f->z[1], NULL, NULL, 0, &err), 0);
    const char *paths[2] = {e0, e1};
    zmix_runtime_opts ro;
    zmix_runtime_opts_default(&ro);
    ro.factor_cache_dir = cache;
    ro.factor_dtype = v->factors;
    zmix_runtime *first, *second, *third;
    if (zmix_runtime_create(f->model, &ro, paths, 2, &first, &err)) fail_msg("%s", err.msg);
    assert_string_equal(zmix_runtime_expert_name(first, 0), "math");
    assert_memory_equal(zmix_runtime_expert_z(first, 1), f->z[1], rt->z_total * sizeof(float));
    assert_same_factors(first, rt);
    char name[256], want[64];
    only_file(cache, name, sizeof name);
    snprintf(want, sizeof want, "factors-%.16s-mlp%s.safetensors", zmix_model_fingerprint(f->model),
             rt->factor_dtype == ZMIX_DT_F16    ? "-f16"
             : rt->factor_dtype == ZMIX_DT_BF16 ? "-bf16"
                                                : "");
    assert_string_equal(name, want);
    if (zmix_runtime_create(f->model, &ro, paths, 2, &second, &err)) fail_msg("%s", err.msg);
    assert_same_factors(second, first);
    /* Same α, same scores, whichever way the factors arrived (computed here, saved and mapped
     * back, or mapped from the cache). */
    float alpha[2] = {0.7f, 0.4f};
    zmix_score s0, s1, s2, s3;
    zmix_runtime *ref; /* the same two experts, factors computed and kept on the heap */
    zmix_runtime_opts nocache = ro;
    nocache.factor_cache_dir = NULL;
    const float *zs[2] = {f->z[0], f->z[1]};
    if (zmix_runtime_create_from_z(f->model, &nocache, zs, NULL, 2, &ref, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(zmix_score_alpha(ref, NULL, &f->ex, 1, alpha, NULL, &s0, NULL, &err), 0);
    zmix_runtime_free(ref);
    assert_int_equal(zmix_score_alpha(first, NULL, &f->ex, 1, alpha, NULL, &s1, NULL, &err), 0);
    assert_int_equal(zmix_score_alpha(second, NULL, &f->ex, 1, alpha, NULL, &s2, NULL, &err), 0);
    assert_memory_equal(&s0, &s1, sizeof s1);
    assert_memory_equal(&s0, &s2, sizeof s2);
    /* Both map the cache file: truncating it under them would fault their next read (as for
     * the model's own mapped weights), so they go before the file is corrupted in place. */
    zmix_runtime_free(first);
    zmix_runtime_free(second);
    assert_int_equal(corrupt_dir(cache), 1);
    if (zmix_runtime_create(f->model, &ro, paths, 2, &third, &err)) fail_msg("%s", err.msg);
    assert_same_factors(third, rt);
    /* Factors of another dtype are another file: asking for them recomputes, and leaves the
     * first file alone. */
    zmix_runtime_opts other = ro;
    other.factor_dtype = rt->factor_dtype == ZMIX_DT_F32 ? ZMIX_FACTORS_F16 : ZMIX_FACTORS_F32;
    zmix_runtime *fourth;
    if (zmix_runtime_create(f->model, &other, paths, 2, &fourth, &err)) fail_msg("%s", err.msg);
    assert_int_not_equal(fourth->factor_dtype, third->factor_dtype);
    zmix_runtime_free(fourth);
    assert_int_equal(zmix_score_alpha(third, NULL, &f->ex, 1, alpha, NULL, &s3, NULL, &err), 0);
    assert_memory_equal(&s0, &s3, sizeof s3);
    zmix_runtime_free(third);
    /* A missing expert file fails the create, naming it. */
    paths[1] = "/nonexistent/expert.safetensors";
    assert_true(zmix_runtime_create(f->model, &ro, paths, 2, &first, &err) < 0);
    assert_non_null(strstr(err.msg, "/nonexistent/expert.safetensors"));
    snprintf(e0, sizeof e0, "%s", cache);
    remove_dir(e0);
    remove_dir(dir);
    fixture_free(f);
}

typedef struct concurrent_arg {
    const fixture *f;
    const float *alpha;
    zmix_score out[8];
    int rc;
} concurrent_arg;

static void *score_in_thread(void *p)
{
    concurrent_arg *a = p;
    zmix_error err;
    zmix_compose_opts o;
    zmix_compose_opts_default(&o);
    a->rc = zmix_score_alpha(a->f->rt, &o, &a->f->ex, 8, a->alpha, NULL, a->out, NULL, &err);
    return NULL;
}

/* Two callers on one runtime at once (the daemon's worker pool) get the sequential scores. */
static void test_concurrent_callers(void **state)
{
    fixture *f = fixture_make(ZMIX_ADAPT_ALL, 0);
    float alpha[8 * K];
    for (int i = 0; i < 8 * K; i++) alpha[i] = (float)((i * 37) % 11) / 10.0f + 0.05f;
    concurrent_arg a, b, seq;
    memset(&a, 0, sizeof a);
    a.f = f;
    a.alpha = alpha;
    a.rc = -1;
    b = seq = a;
    score_in_thread(&seq);
    pthread_t ta, tb;
    pthread_create(&ta, NULL, score_in_thread, &a);
    pthread_create(&tb, NULL, score_in_thread, &b);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    assert_int_equal(a.rc, 0);
    assert_int_equal(b.rc, 0);
    assert_memory_equal(a.out, seq.out, sizeof a.out);
    assert_memory_equal(b.out, seq.out, sizeof b.out);
    fixture_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define VARIANTS(t)                                                                                \
    cmocka_unit_test_prestate(t, (void *)&f32_weights),                                            \
        cmocka_unit_test_prestate(t, (void *)&bf16_weights),                                       \
        cmocka_unit_test_prestate(t, (void *)&bf16_factors)
        VARIANTS(test_svd_reconstructs),
        cmocka_unit_test(test_compose_z_by_hand),
        VARIANTS(test_modes_match_materialised_reference),
        cmocka_unit_test(test_scores_from_reference_logits),
        VARIANTS(test_choices_share_the_prompt_pass),
        cmocka_unit_test(test_choice_ties_and_norms),
        cmocka_unit_test(test_choices_with_dynamic_rope),
        VARIANTS(test_all_ones_experts_reproduce_base),
        VARIANTS(test_batch_and_thread_independence),
        cmocka_unit_test(test_pop_gemm_rows_do_not_depend_on_m),
        VARIANTS(test_population_matches_per_candidate),
        VARIANTS(test_population_split_independence),
        cmocka_unit_test(test_memory_budget_chunks_examples),
        cmocka_unit_test(test_example_at_the_context_limit),
        cmocka_unit_test(test_hand_checked_scores),
        cmocka_unit_test(test_degenerate_candidates_and_errors),
        VARIANTS(test_runtime_factor_cache_and_expert_files),
        cmocka_unit_test(test_concurrent_callers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
