/* Numeric building blocks of the forward pass: RoPE frequencies and tables (with the scalings
 * of rope_scaling), RMSNorm, linear maps over float32 or 16-bit matrices. */
#include <cblas.h>
#include <time.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>

#include "compute.h"

#define ZMIX_PI 3.14159265358979323846

/* What the frequency of every pair of a head depends on, for one sequence length. */
typedef struct rope_params {
    const zmix_model_config *cfg;
    float theta, factor, mscale;
    float yarn_lo, yarn_span; /* ramp over the pair index */
} rope_params;

static void rope_params_init(rope_params *p, const zmix_model_config *cfg, int seq_len)
{
    const zmix_rope_scaling *r = &cfg->rope_scaling;
    int dim = cfg->head_dim;
    p->cfg = cfg;
    p->theta = cfg->rope_theta;
    p->factor = (float)r->factor;
    p->mscale = 1.0f;
    if (r->type == ZMIX_ROPE_DYNAMIC && seq_len > r->original_max_pos) {
        /* NTK: θ grows with the sequence, as transformers recomputes it for seq_len. */
        double grow = r->factor * seq_len / r->original_max_pos - (r->factor - 1.0);
        p->theta = (float)(cfg->rope_theta * pow(grow, (double)dim / (dim - 2)));
    }
    if (r->type == ZMIX_ROPE_YARN) {
        /* Pairs that turn fewer than beta_slow times over the original context are
         * interpolated (divided by factor), those turning more than beta_fast times are kept,
         * and a linear ramp over the pair index joins the two. */
        double base = cfg->rope_theta, orig = r->original_max_pos;
        double lo = dim * log(orig / (r->beta_fast * 2 * ZMIX_PI)) / (2 * log(base));
        double hi = dim * log(orig / (r->beta_slow * 2 * ZMIX_PI)) / (2 * log(base));
        if (r->truncate) lo = floor(lo), hi = ceil(hi);
        lo = fmax(lo, 0.0);
        hi = fmin(hi, dim - 1.0);
        if (lo == hi) hi += 0.001; /* transformers' guard against a zero-width ramp */
        p->yarn_lo = (float)lo;
        p->yarn_span = (float)(hi - lo);
        p->mscale = (float)r->attention_factor;
    }
}

/* The inverse frequency of pair i, in float in the order transformers computes it. */
static float rope_freq(const rope_params *p, int i)
{
    const zmix_rope_scaling *r = &p->cfg->rope_scaling;
    /* Same float expression as llama2.c's run.c and HF's inv_freq, so that the angles (and
     * the known greedy outputs) match theirs. */
    float pos_freq = powf(p->theta, (float)(2 * i) / (float)p->cfg->head_dim);
    float inv = 1.0f / pos_freq;
    switch (r->type) {
    case ZMIX_ROPE_LINEAR: return inv / p->factor;
    case ZMIX_ROPE_LLAMA3: {
        /* Wavelengths shorter than original/high_freq_factor stay, longer than
         * original/low_freq_factor are stretched by factor, those between are blended. */
        float ctx = (float)r->original_max_pos, lff = (float)r->low_freq_factor,
              hff = (float)r->high_freq_factor;
        float wavelen = (float)(2.0 * ZMIX_PI) / inv;
        if (wavelen > ctx / lff) return inv / p->factor;
        if (wavelen < ctx / hff) return inv;
        float smooth = (ctx / wavelen - lff) / (hff - lff);
        return (1.0f - smooth) * inv / p->factor + smooth * inv;
    }
    case ZMIX_ROPE_YARN: {
        float interpolation = 1.0f / (p->factor * pos_freq);
        float ramp = ((float)i - p->yarn_lo) / p->yarn_span;
        ramp = ramp < 0.0f ? 0.0f : ramp > 1.0f ? 1.0f : ramp;
        float keep = 1.0f - ramp;
        return interpolation * (1.0f - keep) + inv * keep;
    }
    default: return inv;
    }
}

void zmix_rope_fill(const zmix_model_config *cfg, int seq_len, int n_pos, float *cos_out,
                    float *sin_out)
{
    int half = cfg->head_dim / 2;
    rope_params p;
    rope_params_init(&p, cfg, seq_len);
    for (int i = 0; i < half; i++) {
        float freq = rope_freq(&p, i);
        for (int pos = 0; pos < n_pos; pos++) {
            float angle = (float)pos * freq;
            /* YaRN scales cos and sin, hence q and k, as transformers does. */
            cos_out[(size_t)pos * half + i] = cosf(angle) * p.mscale;
            sin_out[(size_t)pos * half + i] = sinf(angle) * p.mscale;
        }
    }
}

int zmix_rope_init(zmix_rope *rope, const zmix_model_config *cfg, int max_pos, zmix_error *err)
{
    rope->max_pos = max_pos;
    rope->half = cfg->head_dim / 2;
    /* Dynamic scaling gives each sequence longer than original_max_pos its own frequencies:
     * the shared table serves the shorter ones, the forward pass fills the others. */
    rope->shared_len =
        cfg->rope_scaling.type == ZMIX_ROPE_DYNAMIC ? cfg->rope_scaling.original_max_pos : INT_MAX;
    size_t n = (size_t)max_pos * (size_t)rope->half;
    rope->cos = malloc((n ? n : 1) * sizeof(float));
    rope->sin = malloc((n ? n : 1) * sizeof(float));
    if (!rope->cos || !rope->sin) {
        zmix_rope_free(rope);
        return zmix_error_set(err, ZMIX_ENOMEM, "RoPE table for %d positions: out of memory",
                              max_pos);
    }
    /* The frequencies of a sequence no longer than shared_len (only dynamic scaling depends
     * on the length, and only past it). */
    zmix_rope_fill(cfg, 0, max_pos, rope->cos, rope->sin);
    return 0;
}

void zmix_rope_free(zmix_rope *rope)
{
    free(rope->cos);
    free(rope->sin);
    rope->cos = rope->sin = NULL;
}

/* Blocks of a 16-bit matrix widened at a time: at most ZMIX_TILE_K along the reduction
 * dimension (so that each block's GEMM still has a full-width N), ZMIX_TILE_FLOATS in all.
 * The blocking depends on the shape alone, so results do not depend on who calls. */
static void tile_shape(int k_dim, int n_dim, int *kb, int *nb)
{
    *kb = k_dim < ZMIX_TILE_K ? k_dim : ZMIX_TILE_K;
    size_t n = ZMIX_TILE_FLOATS / (size_t)(*kb > 0 ? *kb : 1);
    *nb = n < (size_t)n_dim ? (int)n : n_dim;
}

/* tile (r × c, packed) = W[r0.., c0..] widened; ld: W's row length. */
static void widen_block(const uint16_t *w, size_t ld, int r0, int c0, int r, int c,
                        zmix_dtype dtype, float *tile)
{
    for (int i = 0; i < r; i++)
        zmix_half_to_float(tile + (size_t)i * c, w + (size_t)(r0 + i) * ld + c0, (size_t)c, dtype);
}

/* y = x·Wᵀ (trans) or x·W, W [rows][cols]; one SGEMM over float32 W. A 16-bit W is walked in
 * blocks: along the output dimension N (W's rows when trans, its columns otherwise), and
 * within each, along the reduction dimension K, each block widened into tile and its product
 * accumulated into y (β = 1 after the first K block). */
static void gemm_w(int trans, const float *x, int ldx, int n, zmix_wref w, int rows, int cols,
                   float beta, float *y, int ldy, float *tile)
{
    enum CBLAS_TRANSPOSE tw = trans ? CblasTrans : CblasNoTrans;
    int n_dim = trans ? rows : cols, k_dim = trans ? cols : rows;
    if (w.dtype == ZMIX_DT_F32) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, tw, n, n_dim, k_dim, 1.0f, x, ldx, w.data, cols,
                    beta, y, ldy);
        return;
    }
    int kb, nb;
    tile_shape(k_dim, n_dim, &kb, &nb);
    for (int n0 = 0; n0 < n_dim; n0 += nb) {
        int nn = n_dim - n0 < nb ? n_dim - n0 : nb;
        for (int k0 = 0; k0 < k_dim; k0 += kb) {
            int kk = k_dim - k0 < kb ? k_dim - k0 : kb;
            /* The block of W: rows × columns = (N × K) when trans, (K × N) otherwise. */
            int r0 = trans ? n0 : k0, c0 = trans ? k0 : n0, r = trans ? nn : kk,
                c = trans ? kk : nn;
            widen_block(w.data, (size_t)cols, r0, c0, r, c, w.dtype, tile);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, tw, n, nn, kk, 1.0f, x + k0, ldx, tile, c,
                        k0 ? 1.0f : beta, y + n0, ldy);
        }
    }
}

void zmix_gemm_xwt(const float *x, int ldx, int n, zmix_wref w, int rows, int cols, float *y,
                   int ldy, float *tile)
{
    gemm_w(1, x, ldx, n, w, rows, cols, 0.0f, y, ldy, tile);
}

void zmix_gemm_xwt_beta(const float *x, int ldx, int n, zmix_wref w, int rows, int cols, float beta,
                        float *y, int ldy, float *tile)
{
    gemm_w(1, x, ldx, n, w, rows, cols, beta, y, ldy, tile);
}

void zmix_gemm_xw(const float *x, int ldx, int n, zmix_wref w, int rows, int cols, float *y,
                  int ldy, float *tile)
{
    gemm_w(0, x, ldx, n, w, rows, cols, 0.0f, y, ldy, tile);
}

void zmix_linear_apply(const zmix_linear *lin, const float *x, int n, float *y, float *tmp,
                       float *tile)
{
    if (lin->W.data) {
        zmix_gemm_xwt(x, lin->cols, n, lin->W, lin->rows, lin->cols, y, lin->rows, tile);
        return;
    }
    int r = lin->rank;
    zmix_gemm_xwt(x, lin->cols, n, lin->Vt, r, lin->cols, tmp, r, tile);
    for (int i = 0; i < n; i++) zmix_vec_mul(tmp + (size_t)i * r, lin->scale, (size_t)r);
    zmix_gemm_xwt(tmp, r, n, lin->U, lin->rows, r, y, lin->rows, tile);
}

void zmix_rmsnorm_rows(float *out, const float *x, const float *w, int n_rows, int dim, float eps)
{
    for (int i = 0; i < n_rows; i++) {
        const float *xi = x + (size_t)i * dim;
        float ss = zmix_vec_sum_squares(xi, (size_t)dim);
        float inv = 1.0f / sqrtf(ss / (float)dim + eps);
        zmix_vec_scale_weight(out + (size_t)i * dim, w, inv, xi, (size_t)dim);
    }
}

/* ---- Stage timing ----------------------------------------------------------------------- */

atomic_int zmix_stage_timing;
_Atomic unsigned long long zmix_stage_ns[ZMIX_STAGE_COUNT];

const char *zmix_stage_name(zmix_stage s)
{
    static const char *names[ZMIX_STAGE_COUNT] = {"embedding+shared prefix",
                                                  "compose",
                                                  "weight GEMMs",
                                                  "attention",
                                                  "element-wise",
                                                  "LM head",
                                                  "loss"};
    return (unsigned)s < ZMIX_STAGE_COUNT ? names[s] : "?";
}

unsigned long long zmix_stage_clock(void)
{
    if (!atomic_load_explicit(&zmix_stage_timing, memory_order_relaxed)) return 0;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec;
}

static _Thread_local int stage_redirect = -1;

void zmix_stage_redirect(int s)
{
    stage_redirect = s;
}

void zmix_stage_add(zmix_stage s, unsigned long long t0)
{
    if (!t0) return;
    if (stage_redirect >= 0) s = (zmix_stage)stage_redirect;
    unsigned long long t1 = zmix_stage_clock();
    if (t1) atomic_fetch_add_explicit(&zmix_stage_ns[s], t1 - t0, memory_order_relaxed);
}
