/*
 * The forward pass: checked against an independent token-by-token implementation written
 * here the llama2.c way (matrix-vector products, a KV cache, scalar loops), on random models
 * covering GQA, both RoPE layouts, q/k/v biases and an untied LM head; against the known
 * greedy outputs of the real stories260K model in both formats; and the stacked batch against
 * single sequences.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "compute.h"
#include "safetensors.h"
#include "util/pcg.h"

static zmix_model_config small_config(int rope_interleaved, int qkv_bias, int tied)
{
    zmix_model_config c;
    memset(&c, 0, sizeof c);
    snprintf(c.model_type, sizeof c.model_type, "llama");
    c.dim = 24;
    c.hidden_dim = 40;
    c.n_layers = 2;
    c.n_heads = 6;
    c.n_kv_heads = 2;
    c.head_dim = 4;
    c.vocab_size = 37;
    c.max_seq_len = 64;
    c.norm_eps = 1e-5f;
    c.rope_theta = 10000.0f;
    c.tied_embeddings = tied;
    c.rope_interleaved = rope_interleaved;
    c.qkv_bias = qkv_bias;
    c.bos_id = c.eos_id = -1;
    return c;
}

/* ---- Independent reference: one token at a time, as llama2.c's run.c ----------------- */

static void matvec(float *y, const float *W, const float *x, int rows, int cols)
{
    for (int i = 0; i < rows; i++) {
        double s = 0.0;
        for (int j = 0; j < cols; j++) s += (double)W[(size_t)i * cols + j] * x[j];
        y[i] = (float)s;
    }
}

static void rmsnorm(float *o, const float *x, const float *w, int n, float eps)
{
    double ss = 0.0;
    for (int j = 0; j < n; j++) ss += (double)x[j] * x[j];
    double inv = 1.0 / sqrt(ss / n + eps);
    for (int j = 0; j < n; j++) o[j] = (float)(w[j] * x[j] * inv);
}

static void rope(float *v, int n_heads, int hd, int pos, float theta, int interleaved)
{
    for (int h = 0; h < n_heads; h++)
        for (int i = 0; i < hd / 2; i++) {
            double angle = pos * pow(theta, -2.0 * i / hd);
            int a = interleaved ? 2 * i : i, b = interleaved ? 2 * i + 1 : i + hd / 2;
            float *p = v + h * hd;
            double v0 = p[a], v1 = p[b];
            p[a] = (float)(v0 * cos(angle) - v1 * sin(angle));
            p[b] = (float)(v0 * sin(angle) + v1 * cos(angle));
        }
}

static void reference_logits(const zmix_model *m, const int32_t *tok, int n, float *logits)
{
    const zmix_model_config *c = &m->cfg;
    int D = c->dim, H = c->hidden_dim, hd = c->head_dim, qd = c->n_heads * hd,
        kvd = c->n_kv_heads * hd;
    float *kc = calloc((size_t)c->n_layers * n * kvd, sizeof(float));
    float *vc = calloc((size_t)c->n_layers * n * kvd, sizeof(float));
    float *x = malloc(D * sizeof(float)), *xb = malloc(D * sizeof(float));
    float *q = malloc(qd * sizeof(float)), *att = malloc(qd * sizeof(float));
    float *o = malloc(D * sizeof(float)), *h1 = malloc(H * sizeof(float));
    float *h3 = malloc(H * sizeof(float)), *sc = malloc(n * sizeof(float));
    for (int pos = 0; pos < n; pos++) {
        memcpy(x, m->embed + (size_t)tok[pos] * D, D * sizeof(float));
        for (int l = 0; l < c->n_layers; l++) {
            const zmix_layer *L = &m->layers[l];
            float *k = kc + ((size_t)l * n + pos) * kvd, *v = vc + ((size_t)l * n + pos) * kvd;
            rmsnorm(xb, x, L->attn_norm, D, c->norm_eps);
            matvec(q, L->wq, xb, qd, D);
            matvec(k, L->wk, xb, kvd, D);
            matvec(v, L->wv, xb, kvd, D);
            for (int i = 0; L->bq && i < qd; i++) q[i] += L->bq[i];
            for (int i = 0; L->bk && i < kvd; i++) k[i] += L->bk[i], v[i] += L->bv[i];
            rope(q, c->n_heads, hd, pos, c->rope_theta, c->rope_interleaved);
            rope(k, c->n_kv_heads, hd, pos, c->rope_theta, c->rope_interleaved);
            for (int h = 0; h < c->n_heads; h++) {
                int kvh = h / (c->n_heads / c->n_kv_heads);
                double mx = -1e30, sum = 0.0;
                for (int t = 0; t <= pos; t++) {
                    const float *kt = kc + ((size_t)l * n + t) * kvd + kvh * hd;
                    double s = 0.0;
                    for (int i = 0; i < hd; i++) s += (double)q[h * hd + i] * kt[i];
                    sc[t] = (float)(s / sqrt((double)hd));
                    mx = sc[t] > mx ? sc[t] : mx;
                }
                for (int t = 0; t <= pos; t++) sum += exp(sc[t] - mx);
                for (int i = 0; i < hd; i++) {
                    double a = 0.0;
                    for (int t = 0; t <= pos; t++)
                        a += exp(sc[t] - mx) / sum * vc[((size_t)l * n + t) * kvd + kvh * hd + i];
                    att[h * hd + i] = (float)a;
                }
            }
            matvec(o, L->wo, att, D, qd);
            for (int i = 0; i < D; i++) x[i] += o[i];
            rmsnorm(xb, x, L->ffn_norm, D, c->norm_eps);
            matvec(h1, L->w_gate, xb, H, D);
            matvec(h3, L->w_up, xb, H, D);
            for (int i = 0; i < H; i++) h1[i] = (float)(h1[i] / (1.0 + exp(-h1[i])) * h3[i]);
            matvec(o, L->w_down, h1, D, H);
            for (int i = 0; i < D; i++) x[i] += o[i];
        }
        rmsnorm(xb, x, m->final_norm, D, c->norm_eps);
        matvec(logits + (size_t)pos * c->vocab_size, m->lm_head, xb, c->vocab_size, D);
    }
    free(kc), free(vc), free(x), free(xb), free(q), free(att), free(o), free(h1), free(h3),
        free(sc);
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

static void check_against_reference(zmix_model_config cfg, uint64_t seed)
{
    zmix_model *m;
    zmix_error err = {0, ""};
    assert_int_equal(zmix_model_create_random(&cfg, seed, &m, &err), 0);
    int32_t tok[19];
    for (int i = 0; i < 19; i++) tok[i] = (int32_t)((i * 7 + 3) % cfg.vocab_size);
    float *fast = malloc(19 * (size_t)cfg.vocab_size * sizeof(float));
    float *ref = malloc(19 * (size_t)cfg.vocab_size * sizeof(float));
    assert_int_equal(zmix_model_forward_logits(m, tok, 19, fast, &err), 0);
    reference_logits(m, tok, 19, ref);
    double e = max_rel_err(fast, ref, 19 * (size_t)cfg.vocab_size);
    if (e > 1e-5) fail_msg("forward vs token-by-token reference: relative error %g", e);
    free(fast);
    free(ref);
    zmix_model_free(m);
}

static void test_forward_matches_reference_hf_layout(void **state)
{
    check_against_reference(small_config(0, 0, 1), 1);
}

static void test_forward_matches_reference_llama2c_layout(void **state)
{
    check_against_reference(small_config(1, 0, 1), 2);
}

static void test_forward_matches_reference_bias_untied(void **state)
{
    check_against_reference(small_config(0, 1, 0), 3);
}

static void test_rope_layout_matters(void **state)
{
    /* Same weights, other pairing: the logits must differ, or the flag is ignored. */
    zmix_model_config a = small_config(0, 0, 1), b = small_config(1, 0, 1);
    zmix_model *ma, *mb;
    zmix_error err;
    assert_int_equal(zmix_model_create_random(&a, 9, &ma, &err), 0);
    assert_int_equal(zmix_model_create_random(&b, 9, &mb, &err), 0);
    int32_t tok[6] = {1, 5, 9, 2, 30, 4};
    float la[6 * 37], lb[6 * 37];
    assert_int_equal(zmix_model_forward_logits(ma, tok, 6, la, &err), 0);
    assert_int_equal(zmix_model_forward_logits(mb, tok, 6, lb, &err), 0);
    assert_true(memcmp(la, lb, 37 * sizeof(float)) == 0);          /* position 0: no rotation */
    assert_true(max_rel_err(la + 37 * 5, lb + 37 * 5, 37) > 1e-3); /* later positions differ */
    zmix_model_free(ma);
    zmix_model_free(mb);
}

static void test_stacked_batch_matches_single(void **state)
{
    zmix_model_config cfg = small_config(0, 1, 0);
    zmix_model *m;
    zmix_error err;
    assert_int_equal(zmix_model_create_random(&cfg, 5, &m, &err), 0);
    int32_t tok[5 + 9 + 3] = {1, 2, 3, 4, 5, 9, 8, 7, 6, 5, 4, 3, 2, 1, 11, 12, 13};
    int len[3] = {5, 9, 3}, n_out[3] = {2, 9, 1};
    zmix_batch batch = {3, tok, len, n_out, NULL, NULL};
    zmix_rope rope;
    assert_int_equal(zmix_rope_init(&rope, &cfg, 9, &err), 0);
    float *scratch = malloc(zmix_forward_scratch_floats(&cfg, 17, 9) * sizeof(float));
    float hidden[12 * 24], logits[12 * 37], single[9 * 37];
    assert_int_equal(zmix_forward_hidden(m, &rope, &batch, zmix_layer_base, m, scratch, NULL,
                                         hidden, NULL, &err),
                     0);
    zmix_lm_head(m, hidden, 12, logits, NULL);
    int row = 0;
    for (int s = 0, off = 0; s < 3; off += len[s], s++) {
        assert_int_equal(zmix_model_forward_logits(m, tok + off, len[s], single, &err), 0);
        for (int r = len[s] - n_out[s]; r < len[s]; r++, row++) {
            double e = max_rel_err(logits + row * 37, single + r * 37, 37);
            if (e > 1e-5) fail_msg("sequence %d row %d: relative error %g", s, r, e);
        }
    }
    atomic_int stop = 1;
    assert_int_equal(zmix_forward_hidden(m, &rope, &batch, zmix_layer_base, m, scratch, NULL,
                                         hidden, &stop, &err),
                     ZMIX_ECANCELED);
    free(scratch);
    zmix_rope_free(&rope);
    zmix_model_free(m);
}

static void test_forward_rejects_bad_tokens(void **state)
{
    zmix_model_config cfg = small_config(0, 0, 1);
    zmix_model *m;
    zmix_error err;
    assert_int_equal(zmix_model_create_random(&cfg, 5, &m, &err), 0);
    int32_t tok[3] = {1, 37, 2};
    float logits[3 * 37];
    assert_int_equal(zmix_model_forward_logits(m, tok, 3, logits, &err), ZMIX_ERANGE);
    assert_non_null(strstr(err.msg, "position 1"));
    assert_int_equal(zmix_model_forward_logits(m, tok, 0, logits, &err), ZMIX_EINVAL);
    zmix_model_free(m);
}

static void test_random_model_is_deterministic(void **state)
{
    zmix_model_config cfg = small_config(0, 1, 0);
    zmix_model *a, *b, *c;
    zmix_error err;
    assert_int_equal(zmix_model_create_random(&cfg, 42, &a, &err), 0);
    assert_int_equal(zmix_model_create_random(&cfg, 42, &b, &err), 0);
    assert_int_equal(zmix_model_create_random(&cfg, 43, &c, &err), 0);
    size_t n = (size_t)cfg.hidden_dim * cfg.dim;
    assert_memory_equal(a->layers[1].w_up, b->layers[1].w_up, n * sizeof(float));
    assert_memory_not_equal(a->layers[1].w_up, c->layers[1].w_up, n * sizeof(float));
    assert_string_equal(a->fingerprint, b->fingerprint);
    assert_string_not_equal(a->fingerprint, c->fingerprint);
    /* N(0, 1/in): the sample variance of a 40x24 matrix is near 1/24. */
    double ss = 0.0;
    for (size_t i = 0; i < n; i++) ss += (double)a->layers[1].w_up[i] * a->layers[1].w_up[i];
    assert_true(fabs(ss / n * cfg.dim - 1.0) < 0.2);
    cfg.n_kv_heads = 4; /* does not divide 6 heads */
    zmix_model *bad;
    assert_int_equal(zmix_model_create_random(&cfg, 1, &bad, &err), ZMIX_ERANGE);
    assert_null(bad);
    assert_non_null(strstr(err.msg, "n_kv_heads"));
    zmix_model_free(a);
    zmix_model_free(b);
    zmix_model_free(c);
}

/* The polynomial exp: accurate to ~1 ulp, and the SIMD lanes give the scalar's bits. */
static void test_exp_accuracy_and_simd_lanes(void **state)
{
    double worst = 0.0;
    for (int i = 0; i <= 1000000; i++) {
        float x = -87.0f + 175.0f * (float)i / 1000000.0f;
        double want = exp((double)x), rel = fabs((double)zmix_exp(x) - want) / want;
        worst = rel > worst ? rel : worst;
    }
    if (worst > 1e-7) fail_msg("zmix_exp: max relative error %g", worst);
    assert_true(zmix_exp(-1000.0f) > 0.0f && zmix_exp(-1000.0f) < 1e-37f); /* clamped */
    assert_true(isfinite(zmix_exp(1000.0f)));
    float v[37], w[37];
    for (int i = 0; i < 37; i++) v[i] = w[i] = (float)i * 0.73f - 11.0f;
    float sum = zmix_vec_exp_shift(v, 0.5f, 37);
    double want_sum = 0.0;
    for (int i = 0; i < 37; i++) {
        float e = zmix_exp(w[i] - 0.5f);
        assert_memory_equal(&v[i], &e, sizeof e);
        want_sum += e;
    }
    assert_float_equal(sum, want_sum, 1e-5 * want_sum);
}

/* ---- 16-bit storage -------------------------------------------------------------------- */

static float bits_float(uint32_t b)
{
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

static uint32_t float_bits(float f)
{
    uint32_t b;
    memcpy(&b, &f, sizeof b);
    return b;
}

/* Widening is exact for all 65536 values of each type (F16 against the loader's scalar
 * conversion, itself checked exhaustively in test_safetensors), narrowing undoes it, and
 * narrowing rounds to nearest with ties to even, F16 overflowing to Inf. */
static void test_half_conversions(void **state)
{
    enum { N = 65536 };
    uint16_t *h = malloc(N * sizeof *h), *back = malloc(N * sizeof *back);
    float *f = malloc(N * sizeof *f);
    for (int i = 0; i < N; i++) h[i] = (uint16_t)i;
    zmix_dtype types[2] = {ZMIX_DT_F16, ZMIX_DT_BF16};
    for (int t = 0; t < 2; t++) {
        zmix_half_to_float(f, h, N, types[t]); /* the SIMD blocks and the scalar tail */
        for (int i = 0; i < N; i++) {
            float want =
                types[t] == ZMIX_DT_F16 ? zmix_f16_to_f32(h[i]) : bits_float((uint32_t)h[i] << 16);
            if (float_bits(f[i]) != float_bits(want))
                fail_msg("dtype %d: 0x%04x widens to %a, expected %a", (int)types[t], i,
                         (double)f[i], (double)want);
        }
        zmix_float_to_half(back, f, N, types[t]);
        for (int i = 0; i < N; i++)
            if (!isnan(f[i]) && back[i] != h[i])
                fail_msg("dtype %d: 0x%04x narrows back to 0x%04x", (int)types[t], i, back[i]);
        /* Halfway between neighbours (exact in float): ties to the even one; a float step
         * either side goes to the nearer. Positive finite values below the largest. */
        uint16_t top = types[t] == ZMIX_DT_F16 ? 0x7bff : 0x7f7f;
        for (uint16_t i = 0; i < top; i++) {
            double lo = f[i], hi = f[i + 1];
            float mid = (float)((lo + hi) / 2);
            assert_true((double)mid == (lo + hi) / 2);
            uint16_t r;
            zmix_float_to_half(&r, &mid, 1, types[t]);
            assert_int_equal(r, (i & 1) ? i + 1 : i);
            float above = nextafterf(mid, INFINITY), below = nextafterf(mid, 0.0f);
            zmix_float_to_half(&r, &above, 1, types[t]);
            assert_int_equal(r, i + 1);
            zmix_float_to_half(&r, &below, 1, types[t]);
            assert_int_equal(r, i);
        }
    }
    float big[3] = {65519.99f, 65520.0f, -1e30f};
    uint16_t r[3];
    zmix_float_to_half(r, big, 3, ZMIX_DT_F16);
    assert_int_equal(r[0], 0x7bff);
    assert_int_equal(r[1], 0x7c00);
    assert_int_equal(r[2], 0xfc00);
    free(h), free(back), free(f);
}

static void fill_half(uint16_t *h, float *wide, size_t n, zmix_dtype dtype, uint64_t seed)
{
    pcg32 rng;
    pcg32_seed(&rng, seed, 1);
    for (size_t i = 0; i < n; i++) wide[i] = (float)pcg32_normal(&rng);
    zmix_float_to_half(h, wide, n, dtype);
    zmix_half_to_float(wide, h, n, dtype);
}

static double rel_diff(const float *a, const float *b, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num = fmax(num, fabs((double)a[i] - b[i]));
        den = fmax(den, fabs((double)b[i]));
    }
    return num / den;
}

/* A 16-bit matrix, widened in blocks (here 3 × 3 of them, ragged at the edges) into the tile,
 * gives the product of its float32 values to float rounding, the same bits every time. */
static void test_half_gemm_tiles(void **state)
{
    enum { N = 7, ROWS = 600, COLS = 2500 };
    float *x = malloc((size_t)N * COLS * sizeof *x), *wide = malloc((size_t)ROWS * COLS * 4);
    uint16_t *h = malloc((size_t)ROWS * COLS * sizeof *h);
    float *y = malloc((size_t)N * COLS * sizeof *y), *want = malloc((size_t)N * COLS * sizeof *y);
    float *again = malloc((size_t)N * COLS * sizeof *y);
    float *tile = malloc(ZMIX_TILE_FLOATS * sizeof *tile);
    pcg32 rng;
    pcg32_seed(&rng, 3, 3);
    for (size_t i = 0; i < (size_t)N * COLS; i++) x[i] = (float)pcg32_normal(&rng);
    zmix_dtype types[2] = {ZMIX_DT_BF16, ZMIX_DT_F16};
    for (int t = 0; t < 2; t++) {
        fill_half(h, wide, (size_t)ROWS * COLS, types[t], 9 + t);
        /* y = x·Wᵀ, W [ROWS][COLS]: reduction over COLS (3 blocks of ≤ 1024). */
        zmix_wref w16 = {h, types[t]}, w32 = {wide, ZMIX_DT_F32};
        zmix_gemm_xwt(x, COLS, N, w32, ROWS, COLS, want, ROWS, NULL);
        zmix_gemm_xwt(x, COLS, N, w16, ROWS, COLS, y, ROWS, tile);
        zmix_gemm_xwt(x, COLS, N, w16, ROWS, COLS, again, ROWS, tile);
        assert_true(rel_diff(y, want, (size_t)N * ROWS) < 1e-5);
        assert_memory_equal(y, again, (size_t)N * ROWS * sizeof *y);
        /* y = x·W, W [ROWS][COLS] read as K × N: reduction over ROWS. */
        zmix_gemm_xw(x, COLS, N, w32, ROWS, COLS, want, COLS, NULL);
        zmix_gemm_xw(x, COLS, N, w16, ROWS, COLS, y, COLS, tile);
        assert_true(rel_diff(y, want, (size_t)N * COLS) < 1e-5);
        /* Taller than one tile in the reduction too: [COLS][ROWS] as K × N. */
        zmix_wref t16 = {h, types[t]}, t32 = {wide, ZMIX_DT_F32};
        zmix_gemm_xw(x, COLS, N, t32, COLS, ROWS, want, ROWS, NULL);
        zmix_gemm_xw(x, COLS, N, t16, COLS, ROWS, y, ROWS, tile);
        assert_true(rel_diff(y, want, (size_t)N * ROWS) < 1e-5);
    }
    free(x), free(wide), free(h), free(y), free(want), free(again), free(tile);
}

/* A BF16 (and F16) model computes what the float32 model of the same values computes: the same
 * fingerprint, logits to float rounding, through the forward pass and the stacked batch. */
static void test_half_model_matches_float(void **state)
{
    zmix_model_config cfg = small_config(0, 1, 0);
    cfg.vocab_size = 300;
    zmix_model *m32, *h, *back;
    zmix_error err;
    assert_int_equal(zmix_model_create_random(&cfg, 8, &m32, &err), 0);
    assert_false(zmix_model_has_half(m32));
    zmix_dtype types[2] = {ZMIX_DT_BF16, ZMIX_DT_F16};
    int32_t tok[20];
    for (int i = 0; i < 20; i++) tok[i] = (int32_t)((i * 41 + 7) % cfg.vocab_size);
    float *a = malloc(20 * 300 * sizeof *a), *b = malloc(20 * 300 * sizeof *b);
    for (int t = 0; t < 2; t++) {
        assert_int_equal(zmix_model_convert(m32, types[t], &h, &err), 0);
        assert_int_equal(zmix_model_convert(h, ZMIX_DT_F32, &back, &err), 0);
        assert_true(zmix_model_has_half(h));
        assert_null(h->embed);
        assert_non_null(h->layers[1].half[ZMIX_MAT_DOWN]);
        assert_false(zmix_model_has_half(back));
        assert_string_equal(h->fingerprint, back->fingerprint);
        assert_string_not_equal(h->fingerprint, m32->fingerprint); /* rounded: other values */
        assert_int_equal(zmix_model_forward_logits(h, tok, 20, a, &err), 0);
        assert_int_equal(zmix_model_forward_logits(back, tok, 20, b, &err), 0);
        double e = rel_diff(a, b, 20 * 300);
        if (e > 1e-5) fail_msg("dtype %d: relative logit difference %g", (int)types[t], e);
        zmix_model_free(back);
        zmix_model_free(h);
    }
    free(a), free(b);
    zmix_model_free(m32);
}

/* ---- stories260K: the real model, both formats ---------------------------------------- */

static const int32_t known_prompt_a[] = {1};
static const int32_t known_a[40] = {461, 461, 401, 401, 401, 461, 378, 455, 473, 456,
                                    435, 299, 362, 409, 283, 264, 283, 452, 288, 13,
                                    431, 431, 431, 431, 431, 431, 431, 431, 431, 431,
                                    431, 431, 431, 293, 430, 417, 363, 416, 315, 342};
static const int32_t known_prompt_b[] = {1, 403, 407};
static const int32_t known_b[40] = {405, 292, 303, 416, 377, 482, 482, 482, 466, 466,
                                    288, 292, 330, 283, 427, 427, 460, 473, 465, 466,
                                    466, 466, 465, 466, 466, 466, 466, 466, 465, 465,
                                    403, 440, 473, 473, 473, 473, 473, 473, 473, 473};
static const int32_t known_prompt_c[] = {1, 32, 300, 45, 270, 511, 3, 99};
static const int32_t known_c[40] = {465, 465, 466, 471, 465, 465, 465, 465, 466, 466,
                                    471, 319, 327, 224, 288, 333, 299, 483, 343, 458,
                                    458, 458, 458, 465, 466, 465, 465, 466, 465, 465,
                                    465, 465, 465, 465, 465, 465, 465, 465, 465, 465};

static int stories_path(char *buf, size_t size, const char *leaf)
{
    const char *dir = getenv("ZMIX_SHARED_DIR");
    if (!dir) return 0;
    snprintf(buf, size, "%s/models/stories260K%s", dir, leaf);
    FILE *f = fopen(buf, "rb");
    if (!f) {
        char probe[1200];
        snprintf(probe, sizeof probe, "%s/config.json", buf);
        f = fopen(probe, "rb");
    }
    if (!f) return 0;
    fclose(f);
    return 1;
}

static void check_greedy(const char *leaf)
{
    char path[1024];
    if (!stories_path(path, sizeof path, leaf)) skip();
    zmix_model *m;
    zmix_runtime *rt;
    zmix_error err = {0, ""};
    if (zmix_model_load(path, &m, &err)) fail_msg("%s", err.msg);
    zmix_runtime_opts opts;
    zmix_runtime_opts_default(&opts);
    if (zmix_runtime_create(m, &opts, NULL, 0, &rt, &err)) fail_msg("%s", err.msg);
    int32_t out[40];
    const int32_t *prompts[3] = {known_prompt_a, known_prompt_b, known_prompt_c};
    const int n_prompt[3] = {1, 3, 8};
    const int32_t *expect[3] = {known_a, known_b, known_c};
    for (int p = 0; p < 3; p++) {
        assert_int_equal(zmix_generate(rt, 1, NULL, prompts[p], n_prompt[p], 40, out, &err), 0);
        assert_memory_equal(out, expect[p], sizeof out);
    }
    /* z' = 1 with the rescale (c = 1): W' rebuilt from the factors gives the same tokens. */
    float *ones = malloc(zmix_runtime_z_total(rt) * sizeof(float));
    for (size_t i = 0; i < zmix_runtime_z_total(rt); i++) ones[i] = 1.0f;
    assert_int_equal(zmix_generate(rt, 1, ones, known_prompt_a, 1, 40, out, &err), 0);
    assert_memory_equal(out, known_a, sizeof out);
    free(ones);
    zmix_runtime_free(rt);
    zmix_model_free(m);
}

static void test_stories260k_greedy_llama2c(void **state)
{
    check_greedy("/stories260K.bin");
}

static void test_stories260k_greedy_hf(void **state)
{
    check_greedy("");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward_matches_reference_hf_layout),
        cmocka_unit_test(test_forward_matches_reference_llama2c_layout),
        cmocka_unit_test(test_forward_matches_reference_bias_untied),
        cmocka_unit_test(test_rope_layout_matters),
        cmocka_unit_test(test_stacked_batch_matches_single),
        cmocka_unit_test(test_forward_rejects_bad_tokens),
        cmocka_unit_test(test_random_model_is_deterministic),
        cmocka_unit_test(test_exp_accuracy_and_simd_lanes),
        cmocka_unit_test(test_half_conversions),
        cmocka_unit_test(test_half_gemm_tiles),
        cmocka_unit_test(test_half_model_matches_float),
        cmocka_unit_test(test_stories260k_greedy_llama2c),
        cmocka_unit_test(test_stories260k_greedy_hf),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
