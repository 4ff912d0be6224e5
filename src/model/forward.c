/*
 * The LLaMA forward pass over a stack of sequences (see compute.h for the layout), and the
 * plain full-position reference zmix_model_forward_logits built on it.
 *
 * Per layer, as in llama2.c's run.c, but with every linear map one GEMM over all rows:
 *   h = rmsnorm(x); q, k, v = Wq h, Wk h, Wv h (+ biases); RoPE on q, k;
 *   causal softmax(q·kᵀ/√d)·v per sequence and head (GQA: query head h reads kv head
 *   h / (n_heads / n_kv_heads)); x += Wo·att;
 *   h = rmsnorm(x); x += Wdown·(silu(Wgate h) ⊙ Wup h).
 */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "compute.h"

/* Views into one scratch block; sizes in zmix_forward_scratch_floats. */
typedef struct fwd_buffers {
    float *x, *xb, *xq, *q, *k, *v, *att, *h1, *h3, *scores, *tmp;
    float *rope; /* per-sequence cos/sin tables (dynamic RoPE scaling only), by first row */
} fwd_buffers;

static int max_int(int a, int b)
{
    return a > b ? a : b;
}

static size_t carve(const zmix_model_config *c, int n_rows, int max_len, float *base,
                    fwd_buffers *b)
{
    size_t R = (size_t)n_rows, q_dim = (size_t)c->n_heads * c->head_dim,
           kv_dim = (size_t)c->n_kv_heads * c->head_dim;
    size_t widest = (size_t)max_int(max_int(c->dim, c->hidden_dim), (int)q_dim);
    /* Dynamic scaling: room for a table (cos and sin) per row, so every sequence can have its
     * own, at the offset of its first row. */
    size_t rope = c->rope_scaling.type == ZMIX_ROPE_DYNAMIC ? R * (size_t)c->head_dim : 0;
    size_t sizes[12] = {
        R * c->dim, R * c->dim, R * c->dim,        R * q_dim,         R * kv_dim,
        R * kv_dim, R * q_dim,  R * c->hidden_dim, R * c->hidden_dim, (size_t)max_len * max_len,
        R * widest, rope};
    float **slots[12] = {&b->x,   &b->xb, &b->xq, &b->q,      &b->k,   &b->v,
                         &b->att, &b->h1, &b->h3, &b->scores, &b->tmp, &b->rope};
    size_t off = 0;
    for (int i = 0; i < 12; i++) {
        if (base) *slots[i] = base + off;
        /* Keep every buffer 64-byte aligned for the GEMM kernels. */
        off += (sizes[i] + 15) & ~(size_t)15;
    }
    return off;
}

size_t zmix_forward_scratch_floats(const zmix_model_config *cfg, int n_rows, int max_len)
{
    fwd_buffers b;
    return carve(cfg, n_rows, max_len, NULL, &b);
}

int zmix_layer_base(void *model, int layer, zmix_linear lin[ZMIX_MAT_COUNT], zmix_error *err)
{
    const zmix_model *m = model;
    for (int k = 0; k < ZMIX_MAT_COUNT; k++) {
        memset(&lin[k], 0, sizeof lin[k]);
        lin[k].W = zmix_model_matrix_ref(m, layer, (zmix_matrix_kind)k, &lin[k].rows, &lin[k].cols);
    }
    return 0;
}

/* Rotates rows [0, n) of a (n × n_heads·head_dim) block whose row i sits at position pos0+i,
 * with the tables cos_t/sin_t ([pos][half]) of its sequence. */
void zmix_rope_rows(float *x, int n, int n_heads, int head_dim, int pos0, const float *cos_t,
                    const float *sin_t, int interleaved)
{
    int half = head_dim / 2;
    for (int i = 0; i < n; i++) {
        const float *c = cos_t + (size_t)(pos0 + i) * half;
        const float *s = sin_t + (size_t)(pos0 + i) * half;
        for (int h = 0; h < n_heads; h++) {
            float *v = x + ((size_t)i * n_heads + h) * head_dim;
            for (int j = 0; j < half; j++) {
                /* llama2.c pairs neighbours (2j, 2j+1); HF pairs j with j + d/2. */
                int a = interleaved ? 2 * j : j, b = interleaved ? 2 * j + 1 : j + half;
                float v0 = v[a], v1 = v[b];
                v[a] = v0 * c[j] - v1 * s[j];
                v[b] = v0 * s[j] + v1 * c[j];
            }
        }
    }
}

static void add_bias(float *y, const float *bias, int n, int width)
{
    if (!bias) return;
    for (int i = 0; i < n; i++) zmix_vec_add(y + (size_t)i * width, bias, (size_t)width);
}

/* Models with heads this narrow are attended with plain loops: on stories260K-sized models
 * (head_dim 8) the four BLAS calls per head and sequence cost more in call overhead than in
 * arithmetic. Per head, the visible scores of every query are packed row after row, shifted
 * by their row's maximum, and exponentiated in one vector call. The choice depends on the
 * model alone, never on the sequence: a row's attention is then the same bits whatever the
 * number of queries and keys around it, which the KV-cached generation relies on (it attends
 * one query where the cache-free pass attends all). */
#define LOOP_HEAD_DIM 16

/* 8 lanes (two SSE registers in the baseline build): a head's dot products and its p·v rows
 * are too short for a vector call, and GCC does not vectorise a float reduction itself. */
/* The helpers are static and inlined: the AVX-vs-SSE argument-passing ABI note GCC prints
 * for them in the baseline build concerns no real call. */
#pragma GCC diagnostic ignored "-Wpsabi"
typedef float f8 __attribute__((vector_size(32)));

static inline f8 load_f8(const float *p)
{
    f8 v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* a·b with 8 partial sums combined in a fixed order (n % 8 == 0), else in sequence. */
static inline __attribute__((always_inline)) float dot(const float *a, const float *b, int n)
{
    if (n % 8 == 0) {
        f8 acc = load_f8(a) * load_f8(b);
        for (int t = 8; t < n; t += 8) acc += load_f8(a + t) * load_f8(b + t);
        return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    }
    float d = 0.0f;
    for (int t = 0; t < n; t++) d += a[t] * b[t];
    return d;
}

/* o += p·v over n floats. */
static inline __attribute__((always_inline)) void axpy_short(float *o, float p, const float *v,
                                                             int n)
{
    if (n % 8 == 0) {
        for (int t = 0; t < n; t += 8) {
            f8 x = load_f8(o + t) + p * load_f8(v + t);
            memcpy(o + t, &x, sizeof x);
        }
        return;
    }
    for (int t = 0; t < n; t++) o[t] += p * v[t];
}

/* The scaled scores of query qh against 8 keys at once, keys j..j+7 of a head whose keys are
 * laid out transposed (kt[t * stride + j]: dimension t of key j). The same arithmetic, in the
 * same order, as dot() on each key — the products rounded, then for hd % 8 == 0 summed per
 * lane across blocks of 8 dimensions and the 8 lanes combined in dot's tree, else summed in
 * sequence — so the scores are the bits the per-key loop gives; only the 8 keys share the
 * instructions. */
static inline __attribute__((always_inline)) void
scores_8(float *out, const float *qh, const float *kt, size_t stride, int hd, float scale)
{
    f8 s;
    if (hd == 8) { /* stories260K-sized heads: every product in a register */
#define KT_(l) (qh[l] * load_f8(kt + (size_t)(l)*stride))
        s = ((KT_(0) + KT_(4)) + (KT_(1) + KT_(5))) + ((KT_(2) + KT_(6)) + (KT_(3) + KT_(7)));
#undef KT_
    } else if (hd % 8 == 0) {
        f8 lane[8];
        for (int l = 0; l < 8; l++) lane[l] = qh[l] * load_f8(kt + (size_t)l * stride);
        for (int b = 8; b < hd; b += 8)
            for (int l = 0; l < 8; l++)
                lane[l] += qh[b + l] * load_f8(kt + (size_t)(b + l) * stride);
        s = ((lane[0] + lane[4]) + (lane[1] + lane[5])) +
            ((lane[2] + lane[6]) + (lane[3] + lane[7]));
    } else {
        s = qh[0] * load_f8(kt);
        s = (f8){0} + s;
        for (int t = 1; t < hd; t++) s += qh[t] * load_f8(kt + (size_t)t * stride);
    }
    s = s * scale;
    memcpy(out, &s, sizeof s);
}

typedef int32_t i8v __attribute__((vector_size(32)));

/* Attention of 8 queries at once (rows i0..i0+nb-1 of a head whose width is a multiple of 8):
 * the lanes are the queries, so a key's 8 scores, a row's maximum, sum and output are each
 * one vector chain where the row-by-row loop had a scalar chain per row, waiting on its
 * latency. Every lane does its row's arithmetic in its row's order (the products of dot()
 * and its tree, the maximum and the sum over keys in order, (p · 1/sum) · v added key by
 * key), so a row's bits are those of the row-by-row loop; keys a row does not see are -inf
 * before the exponential and exactly 0 after it, which adds nothing to its sum or output. t
 * holds the block's scores, key after key, 8 lanes each. */
static inline __attribute__((always_inline)) void
attend_block8(const zmix_model_config *c, const float *q, const float *k1, const float *v1, int n1,
              const float *k2, const float *v2, int h, int i0, int nb, int pos0, float *t,
              float *att)
{
    int hd = c->head_dim, q_dim = c->n_heads * hd, kv_dim = c->n_kv_heads * hd;
    size_t off = (size_t)(h / (c->n_heads / c->n_kv_heads)) * hd;
    float scale = 1.0f / sqrtf((float)hd);
    f8 qt[LOOP_HEAD_DIM]; /* qt[d]: dimension d of the 8 queries */
    for (int d = 0; d < hd; d++)
        for (int k = 0; k < 8; k++)
            qt[d][k] = k < nb ? q[(size_t)(i0 + k) * q_dim + (size_t)h * hd + d] : 0.0f;
    const i8v lane = {0, 1, 2, 3, 4, 5, 6, 7};
    const f8 minus_inf = (f8){0} - __builtin_inff();
    int first = pos0 + i0 + 1, last = pos0 + i0 + nb; /* keys the block's first, last row see */
    f8 mx = {0};
    for (int j = 0; j < last; j++) {
        const float *kj =
            j < n1 ? k1 + (size_t)j * kv_dim + off : k2 + (size_t)(j - n1) * kv_dim + off;
        f8 s;
        if (hd == 8) {
#define QK_(l) (qt[l] * kj[l])
            s = ((QK_(0) + QK_(4)) + (QK_(1) + QK_(5))) + ((QK_(2) + QK_(6)) + (QK_(3) + QK_(7)));
#undef QK_
        } else {
            f8 acc[8];
            for (int l = 0; l < 8; l++) acc[l] = qt[l] * kj[l];
            for (int b = 8; b < hd; b += 8)
                for (int l = 0; l < 8; l++) acc[l] += qt[b + l] * kj[b + l];
            s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
        }
        s = s * scale;
        if (j >= first) { /* rows i0 + k with k < j - pos0 - i0 do not see key j */
            i8v hidden = lane < (j - pos0 - i0);
            s = (f8)(((i8v)minus_inf & hidden) | ((i8v)s & ~hidden));
        }
        memcpy(t + (size_t)j * 8, &s, sizeof s);
        if (j == 0) {
            mx = s;
        } else {
            i8v more = s > mx;
            mx = (f8)(((i8v)s & more) | ((i8v)mx & ~more));
        }
    }
    for (int j = 0; j < last; j++) {
        f8 s = load_f8(t + (size_t)j * 8) - mx;
        memcpy(t + (size_t)j * 8, &s, sizeof s);
    }
    zmix_vec_exp_shift(t, 0.0f, (size_t)last * 8);
    f8 sum = {0};
    for (int j = 0; j < last; j++) {
        f8 e = load_f8(t + (size_t)j * 8);
        if (j >= first) { /* exp(-inf) is clamped to a tiny number: hidden keys are 0 again */
            i8v hidden = lane < (j - pos0 - i0);
            e = (f8)((i8v)e & ~hidden);
            memcpy(t + (size_t)j * 8, &e, sizeof e);
        }
        sum += e;
    }
    f8 inv = 1.0f / sum, out[LOOP_HEAD_DIM];
    for (int d = 0; d < hd; d++) out[d] = (f8){0};
    for (int j = 0; j < last; j++) {
        const float *vj =
            j < n1 ? v1 + (size_t)j * kv_dim + off : v2 + (size_t)(j - n1) * kv_dim + off;
        f8 p = load_f8(t + (size_t)j * 8) * inv;
        for (int d = 0; d < hd; d++) out[d] = out[d] + p * vj[d];
    }
    for (int k = 0; k < nb; k++)
        for (int d = 0; d < hd; d++) att[(size_t)(i0 + k) * q_dim + (size_t)h * hd + d] = out[d][k];
}

/* Compiled for AVX2 and the baseline, picked at load time, as vec.c's kernels (not under
 * the sanitizers, for the same reason). Per head: the keys are laid out transposed once (in
 * kt, n1 + n2 rows of hd, or NULL when there was no memory for it: then key by key), so that
 * a query's scores come 8 keys at a time with the arithmetic of the key-by-key loop. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) &&                             \
    !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
__attribute__((target_clones("avx2", "default")))
#endif
static void
attend_short(const zmix_model_config *c, const float *q, const float *k1, const float *v1, int n1,
             const float *k2, const float *v2, int n2, int nq, int pos0, float *scores, float *att,
             float *kt)
{
    int hd = c->head_dim, q_dim = c->n_heads * hd, kv_dim = c->n_kv_heads * hd;
    int group = c->n_heads / c->n_kv_heads, len = n1 + n2;
    /* Rows of kt padded to whole blocks of 8 keys. */
    size_t stride = (size_t)(len + 7) / 8 * 8;
    float scale = 1.0f / sqrtf((float)hd);
    if (kt && hd % 8 == 0) { /* kt (at least 8 floats per key) holds a block's scores */
        for (int h = 0; h < c->n_heads; h++)
            for (int i0 = 0; i0 < nq; i0 += 8)
                attend_block8(c, q, k1, v1, n1, k2, v2, h, i0, nq - i0 < 8 ? nq - i0 : 8, pos0, kt,
                              att);
        return;
    }
    for (int h = 0; h < c->n_heads; h++) {
        size_t off = (size_t)(h / group) * hd;
        if (kt && h % group == 0)
            for (int j = 0; j < len; j++) {
                const float *kj =
                    j < n1 ? k1 + (size_t)j * kv_dim + off : k2 + (size_t)(j - n1) * kv_dim + off;
                for (int t = 0; t < hd; t++) kt[(size_t)t * stride + j] = kj[t];
            }
        float *row = scores;
        for (int i = 0; i < nq; i++) {
            const float *qh = q + (size_t)i * q_dim + (size_t)h * hd;
            int n_vis = pos0 + i + 1, na = n_vis < n1 ? n_vis : n1, j0 = 0;
            if (kt)
                for (; j0 + 8 <= n_vis; j0 += 8) scores_8(row + j0, qh, kt + j0, stride, hd, scale);
            for (int j = j0; j < na; j++)
                row[j] = dot(qh, k1 + (size_t)j * kv_dim + off, hd) * scale;
            for (int j = j0 > na ? j0 : na; j < n_vis; j++)
                row[j] = dot(qh, k2 + (size_t)(j - n1) * kv_dim + off, hd) * scale;
            float mx = row[0];
            for (int j = 1; j < n_vis; j++) mx = row[j] > mx ? row[j] : mx;
            for (int j = 0; j < n_vis; j++) row[j] -= mx;
            row += n_vis;
        }
        zmix_vec_exp_shift(scores, 0.0f, (size_t)(row - scores));
        row = scores;
        for (int i = 0; i < nq; i++) {
            int n_vis = pos0 + i + 1, na = n_vis < n1 ? n_vis : n1;
            float sum = 0.0f;
            for (int j = 0; j < n_vis; j++) sum += row[j];
            float inv = 1.0f / sum, *o = att + (size_t)i * q_dim + (size_t)h * hd;
            if (hd == 8) { /* the output row in a register across the keys */
                f8 acc = {0};
                for (int j = 0; j < n_vis; j++) {
                    const float *vj = j < na ? v1 + (size_t)j * kv_dim + off
                                             : v2 + (size_t)(j - n1) * kv_dim + off;
                    acc = acc + (row[j] * inv) * load_f8(vj);
                }
                memcpy(o, &acc, sizeof acc);
            } else {
                for (int t = 0; t < hd; t++) o[t] = 0.0f;
                for (int j = 0; j < n_vis; j++) {
                    const float *vj = j < na ? v1 + (size_t)j * kv_dim + off
                                             : v2 + (size_t)(j - n1) * kv_dim + off;
                    axpy_short(o, row[j] * inv, vj, hd);
                }
            }
            row += n_vis;
        }
    }
}

/* Causal attention of nq query rows at positions pos0.. over two runs of keys: n1 rows
 * (k1, v1) at positions 0..n1-1, then n2 rows (k2, v2) following them (a plain sequence has
 * n2 = 0; a branch reads its prefix as the first run and itself as the second). Query row i
 * sees the keys at positions 0..pos0+i. */
static void attend(const zmix_model_config *c, const float *q, const float *k1, const float *v1,
                   int n1, const float *k2, const float *v2, int n2, int nq, int pos0,
                   float *scores, float *att)
{
    int hd = c->head_dim, q_dim = c->n_heads * hd, kv_dim = c->n_kv_heads * hd;
    int group = c->n_heads / c->n_kv_heads, len = n1 + n2;
    float scale = 1.0f / sqrtf((float)hd);
    if (hd <= LOOP_HEAD_DIM) {
        /* A few kilobytes; without them the same scores come key by key. */
        float *kt = malloc((size_t)(len + 7) / 8 * 8 * (size_t)hd * sizeof *kt);
        attend_short(c, q, k1, v1, n1, k2, v2, n2, nq, pos0, scores, att, kt);
        free(kt);
        return;
    }
    for (int h = 0; h < c->n_heads; h++) {
        size_t off = (size_t)(h / group) * hd;
        const float *qh = q + (size_t)h * hd;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, n1, hd, scale, qh, q_dim, k1 + off,
                    kv_dim, 0.0f, scores, len);
        if (n2 > 0)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, n2, hd, scale, qh, q_dim,
                        k2 + off, kv_dim, 0.0f, scores + n1, len);
        for (int i = 0; i < nq; i++) {
            float *row = scores + (size_t)i * len;
            int n_vis = pos0 + i + 1; /* keys 0..pos are visible */
            float mx = zmix_vec_max(row, (size_t)n_vis);
            float sum = zmix_vec_exp_shift(row, mx, (size_t)n_vis);
            zmix_vec_scal(row, 1.0f / sum, (size_t)n_vis);
            memset(row + n_vis, 0, (size_t)(len - n_vis) * sizeof *row);
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, hd, n1, 1.0f, scores, len,
                    v1 + off, kv_dim, 0.0f, att + (size_t)h * hd, q_dim);
        if (n2 > 0)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, hd, n2, 1.0f, scores + n1,
                        len, v2 + off, kv_dim, 1.0f, att + (size_t)h * hd, q_dim);
    }
}

void zmix_attend(const zmix_model_config *c, const float *q, const float *k, const float *v, int nq,
                 int pos0, int len, float *scores, float *att)
{
    attend(c, q, k, v, len, NULL, NULL, 0, nq, pos0, scores, att);
}

/* RoPE and attention of sequence s, whose rows start at row start and whose queries at qrow
 * (nq of them: all its rows, or its wanted tail at the last layer). Returns the queries done. */
static int attend_sequence(const zmix_model_config *c, const zmix_batch *batch, int s,
                           const int *branch_len, int start, int nq, const float *cos_t,
                           const float *sin_t, fwd_buffers *b, int qrow)
{
    int len = batch->len[s], nb = batch->n_branch ? batch->n_branch[s] : 0;
    int q_dim = c->n_heads * c->head_dim, kv_dim = c->n_kv_heads * c->head_dim;
    int il = c->rope_interleaved;
    float *qs = b->q + (size_t)qrow * q_dim, *att = b->att + (size_t)qrow * q_dim;
    float *ks = b->k + (size_t)start * kv_dim, *vs = b->v + (size_t)start * kv_dim;
    if (nb == 0) {
        int pos0 = len - nq;
        zmix_rope_rows(qs, nq, c->n_heads, c->head_dim, pos0, cos_t, sin_t, il);
        zmix_rope_rows(ks, len, c->n_kv_heads, c->head_dim, 0, cos_t, sin_t, il);
        attend(c, qs, ks, vs, len, NULL, NULL, 0, nq, pos0, b->scores, att);
        return nq;
    }
    int p = len, n_branch_rows = 0;
    for (int j = 0; j < nb; j++) n_branch_rows += branch_len[j];
    p -= n_branch_rows;
    /* The prefix: its queries are the tail of it that is wanted (all but the branch rows). */
    int nqp = nq - n_branch_rows;
    zmix_rope_rows(qs, nqp, c->n_heads, c->head_dim, p - nqp, cos_t, sin_t, il);
    zmix_rope_rows(ks, p, c->n_kv_heads, c->head_dim, 0, cos_t, sin_t, il);
    if (nqp > 0) attend(c, qs, ks, vs, p, NULL, NULL, 0, nqp, p - nqp, b->scores, att);
    int done = nqp, row = p;
    for (int j = 0; j < nb; row += branch_len[j], done += branch_len[j], j++) {
        int n = branch_len[j];
        if (n == 0) continue;
        float *qb = qs + (size_t)done * q_dim, *kb = ks + (size_t)row * kv_dim;
        zmix_rope_rows(qb, n, c->n_heads, c->head_dim, p, cos_t, sin_t, il);
        zmix_rope_rows(kb, n, c->n_kv_heads, c->head_dim, p, cos_t, sin_t, il);
        attend(c, qb, ks, vs, p, kb, vs + (size_t)row * kv_dim, n, n, p, b->scores,
               att + (size_t)done * q_dim);
    }
    return done;
}

/* Stage timing of the per-candidate pass: adds the time since t0 to stage s and returns it. */
static unsigned long long stage_lap(zmix_stage s, unsigned long long t0)
{
    if (!t0) return 0;
    unsigned long long d = zmix_stage_clock() - t0;
    atomic_fetch_add(&zmix_stage_ns[s], d);
    return d;
}

static void timed_apply(unsigned long long *parts, const zmix_linear *lin, const float *x, int n,
                        float *y, float *tmp, float *tile)
{
    unsigned long long t0 = zmix_stage_clock();
    zmix_linear_apply(lin, x, n, y, tmp, tile);
    *parts += stage_lap(ZMIX_STAGE_GEMM, t0);
}

/* A batch's rows, output rows and max_len: the longest span of positions a sequence reads,
 * which is what the RoPE table and the attention scores need: its length, or for a branched
 * one its prefix and its longest branch (the branches sit side by side, not one after the
 * other). Fails when the RoPE table is too short. */
static int batch_shape(const zmix_batch *batch, const zmix_rope *rope, int *n_rows, int *n_out_rows,
                       int *max_len, zmix_error *err)
{
    *n_rows = *n_out_rows = *max_len = 0;
    const int *bl = batch->branch_len;
    for (int s = 0; s < batch->n_seq; s++) {
        *n_rows += batch->len[s];
        *n_out_rows += batch->n_out[s];
        int nb = batch->n_branch ? batch->n_branch[s] : 0, span = batch->len[s], longest = 0;
        for (int j = 0; j < nb; j++) {
            span -= bl[j];
            longest = max_int(longest, bl[j]);
        }
        *max_len = max_int(*max_len, span + longest);
        bl += nb;
    }
    if (*max_len > rope->max_pos)
        return zmix_error_set(err, ZMIX_EINTERNAL, "sequence of %d tokens past the RoPE table (%d)",
                              *max_len, rope->max_pos);
    return 0;
}

int zmix_forward_hidden(const zmix_model *model, const zmix_rope *rope, const zmix_batch *batch,
                        zmix_layer_fn layer_fn, void *user, float *scratch, float *tile, float *out,
                        const atomic_int *stop, zmix_error *err)
{
    const zmix_model_config *c = &model->cfg;
    int n_rows, n_out_rows, max_len;
    int shape_rc = batch_shape(batch, rope, &n_rows, &n_out_rows, &max_len, err);
    if (shape_rc) return shape_rc;
    fwd_buffers b;
    carve(c, n_rows, max_len, scratch, &b);
    int dim = c->dim, q_dim = c->n_heads * c->head_dim, kv_dim = c->n_kv_heads * c->head_dim;

    unsigned long long t_all = zmix_stage_clock(), t0 = t_all, parts = 0;
    zmix_model_embed_rows(model, batch->tokens, n_rows, b.x);
    /* Sequences past the shared table's length (dynamic scaling) get their own, once. */
    size_t half = (size_t)c->head_dim / 2;
    for (int s = 0, start = 0; s < batch->n_seq; start += batch->len[s], s++)
        if (batch->len[s] > rope->shared_len && !(batch->n_branch && batch->n_branch[s])) {
            float *t = b.rope + (size_t)start * 2 * half;
            zmix_rope_fill(c, batch->len[s], batch->len[s], t, t + (size_t)batch->len[s] * half);
        }

    parts += stage_lap(ZMIX_STAGE_PREFIX, t0);
    zmix_linear lin[ZMIX_MAT_COUNT];
    int rows = n_rows; /* rows of x still alive: all of them until the last layer */
    for (int l = 0; l < c->n_layers; l++) {
        /* An atomic read: the event loop sets the flag while this worker runs. */
        if (stop && atomic_load_explicit(stop, memory_order_relaxed))
            return zmix_error_set(err, ZMIX_ECANCELED, "forward pass cancelled");
        t0 = zmix_stage_clock();
        int rc = layer_fn(user, l, lin, err);
        parts += stage_lap(ZMIX_STAGE_COMPOSE, t0);
        if (rc) return rc;
        const zmix_layer *L = &model->layers[l];
        int last = l == c->n_layers - 1;

        zmix_rmsnorm_rows(b.xb, b.x, L->attn_norm, rows, dim, c->norm_eps);
        timed_apply(&parts, &lin[ZMIX_MAT_K], b.xb, rows, b.k, b.tmp, tile);
        timed_apply(&parts, &lin[ZMIX_MAT_V], b.xb, rows, b.v, b.tmp, tile);
        add_bias(b.k, L->bk, rows, kv_dim);
        add_bias(b.v, L->bv, rows, kv_dim);

        /* The last layer only needs queries (and everything after attention) for the rows
         * whose hidden state is wanted: the tail of each sequence. */
        const float *q_in = b.xb;
        int nq_total = rows;
        if (last) {
            nq_total = 0;
            for (int s = 0, start = 0; s < batch->n_seq; start += batch->len[s], s++) {
                int skip = batch->len[s] - batch->n_out[s];
                memcpy(b.xq + (size_t)nq_total * dim, b.xb + (size_t)(start + skip) * dim,
                       (size_t)batch->n_out[s] * dim * sizeof(float));
                nq_total += batch->n_out[s];
            }
            q_in = b.xq;
        }
        timed_apply(&parts, &lin[ZMIX_MAT_Q], q_in, nq_total, b.q, b.tmp, tile);
        add_bias(b.q, L->bq, nq_total, q_dim);

        const int *branch_len = batch->branch_len;
        t0 = zmix_stage_clock();
        for (int s = 0, start = 0, qrow = 0; s < batch->n_seq; start += batch->len[s], s++) {
            int len = batch->len[s];
            const float *cos_t = rope->cos, *sin_t = rope->sin;
            /* A branched sequence is scored as its prefix + one branch at a time, within the
             * shared table (the scorer checks). */
            if (len > rope->shared_len && !(batch->n_branch && batch->n_branch[s])) {
                cos_t = b.rope + (size_t)start * 2 * half;
                sin_t = cos_t + (size_t)len * half;
            }
            qrow += attend_sequence(c, batch, s, branch_len, start, last ? batch->n_out[s] : len,
                                    cos_t, sin_t, &b, qrow);
            if (batch->n_branch) branch_len += batch->n_branch[s];
        }
        parts += stage_lap(ZMIX_STAGE_ATTN, t0);
        timed_apply(&parts, &lin[ZMIX_MAT_O], b.att, nq_total, b.xb, b.tmp, tile);

        if (last) { /* compact the residual stream to the wanted rows (moving rows forward) */
            for (int s = 0, start = 0, dst = 0; s < batch->n_seq; start += batch->len[s], s++) {
                int skip = batch->len[s] - batch->n_out[s];
                memmove(b.x + (size_t)dst * dim, b.x + (size_t)(start + skip) * dim,
                        (size_t)batch->n_out[s] * dim * sizeof(float));
                dst += batch->n_out[s];
            }
            rows = nq_total;
        }
        zmix_vec_add(b.x, b.xb, (size_t)rows * dim);

        zmix_rmsnorm_rows(b.xb, b.x, L->ffn_norm, rows, dim, c->norm_eps);
        timed_apply(&parts, &lin[ZMIX_MAT_GATE], b.xb, rows, b.h1, b.tmp, tile);
        timed_apply(&parts, &lin[ZMIX_MAT_UP], b.xb, rows, b.h3, b.tmp, tile);
        zmix_vec_swiglu(b.h1, b.h3, (size_t)rows * c->hidden_dim);
        timed_apply(&parts, &lin[ZMIX_MAT_DOWN], b.h1, rows, b.xb, b.tmp, tile);
        zmix_vec_add(b.x, b.xb, (size_t)rows * dim);
    }
    if (c->n_layers == 0) { /* degenerate but well-defined: keep only the wanted rows */
        for (int s = 0, start = 0, dst = 0; s < batch->n_seq; start += batch->len[s], s++) {
            int skip = batch->len[s] - batch->n_out[s];
            memmove(b.x + (size_t)dst * dim, b.x + (size_t)(start + skip) * dim,
                    (size_t)batch->n_out[s] * dim * sizeof(float));
            dst += batch->n_out[s];
        }
    }
    zmix_rmsnorm_rows(out, b.x, model->final_norm, n_out_rows, dim, c->norm_eps);
    /* What the parts timed above leave is element-wise work. */
    if (t_all) {
        unsigned long long all = zmix_stage_clock() - t_all;
        atomic_fetch_add(&zmix_stage_ns[ZMIX_STAGE_ELEM], all > parts ? all - parts : 0);
    }
    return 0;
}

/* ---- Population forward pass ------------------------------------------------------------ */

size_t zmix_forward_pop_scratch_floats(const zmix_model_config *cfg, int n_rows, int n_copies,
                                       int max_len)
{
    fwd_buffers b;
    return carve(cfg, (int)(zmix_pop_pad((size_t)n_rows) * n_copies), max_len, NULL, &b);
}

typedef struct pop_ctx {
    const zmix_pop_ops *ops;
    float *tmp, *tile;
    int layer;
    zmix_error *err;
} pop_ctx;

/* Rows [n, stride) of each of C copies of a block of width cols: zeroed, so that the padding
 * rows a stacked GEMM reads hold no stale values (their results are never used; each output
 * row of a GEMM reads only its own input row). */
static void zero_pad(float *x, int C, int n, int stride, int cols)
{
    if (stride == n) return;
    for (int c = 0; c < C; c++)
        memset(x + ((size_t)c * stride + n) * cols, 0, (size_t)(stride - n) * cols * sizeof *x);
}

/* y = x·Wᵀ (beta 0) or y += x·Wᵀ (beta 1) over M rows with a single map. */
static void apply_one(const zmix_linear *lin, const float *x, int M, float beta, float *y,
                      float *tmp, float *tile)
{
    if (lin->W.data) {
        zmix_gemm_xwt_beta(x, lin->cols, M, lin->W, lin->rows, lin->cols, beta, y, lin->rows, tile);
        return;
    }
    int r = lin->rank;
    zmix_gemm_xwt(x, lin->cols, M, lin->Vt, r, lin->cols, tmp, r, tile);
    for (int i = 0; i < M; i++) zmix_vec_mul(tmp + (size_t)i * r, lin->scale, (size_t)r);
    zmix_gemm_xwt_beta(tmp, r, M, lin->U, lin->rows, r, beta, y, lin->rows, tile);
}

/* The map of one kind over C copies of n real rows each, copy c at rows [c·stride, c·stride
 * + n) (stride a multiple of ZMIX_POP_ROW_BLOCK; rows up to the stride are padding). x holds
 * C copies, or, when x_shared, one copy that every copy reads. beta 1 adds into y. */
static int pop_apply(pop_ctx *p, int kind, const zmix_linear *lin, const zmix_pop_map *map, int C,
                     const float *x, int x_shared, int n, int stride, float beta, float *y)
{
    int cols = lin->cols, rows = lin->rows;
    size_t span = (size_t)C * stride;
    unsigned long long t0 = zmix_stage_clock();
    if (map->kind == ZMIX_POP_SHARED) {
        if (x_shared) { /* one product, copied (only the first maps of a block read x shared) */
            apply_one(lin, x, stride, 0.0f, y, p->tmp, p->tile);
            for (int c = 1; c < C; c++)
                memcpy(y + (size_t)c * stride * rows, y, (size_t)stride * rows * sizeof *y);
        } else {
            apply_one(lin, x, (int)span, beta, y, p->tmp, p->tile);
        }
        zmix_stage_add(ZMIX_STAGE_GEMM, t0);
        return 0;
    }
    if (map->kind == ZMIX_POP_FACTORED) {
        int r = lin->rank;
        float *t = p->tmp;
        if (x_shared) { /* Vt·x once for all copies */
            zmix_gemm_xwt(x, cols, stride, lin->Vt, r, cols, t, r, p->tile);
            for (int c = 1; c < C; c++)
                memcpy(t + (size_t)c * stride * r, t, (size_t)stride * r * sizeof *t);
        } else {
            zmix_gemm_xwt(x, cols, (int)span, lin->Vt, r, cols, t, r, p->tile);
        }
        for (int c = 0; c < C; c++) {
            float *tc = t + (size_t)c * stride * r;
            if (map->dense && map->dense[c]) { /* its product comes from its own map below */
                memset(tc, 0, (size_t)stride * r * sizeof *tc);
                continue;
            }
            const float *sc = map->scale + (size_t)c * map->scale_stride;
            for (int i = 0; i < n; i++) zmix_vec_mul(tc + (size_t)i * r, sc, (size_t)r);
        }
        zmix_gemm_xwt_beta(t, r, (int)span, lin->U, rows, r, beta, y, rows, p->tile);
        zmix_stage_add(ZMIX_STAGE_GEMM, t0);
        if (!map->dense) return 0;
    }
    for (int c = 0; c < C; c++) {
        if (map->kind == ZMIX_POP_FACTORED && !map->dense[c]) continue;
        zmix_linear one;
        t0 = zmix_stage_clock();
        int rc = p->ops->copy(p->ops->user, p->layer, kind, c, &one, p->err);
        zmix_stage_add(ZMIX_STAGE_COMPOSE, t0);
        if (rc) return rc;
        t0 = zmix_stage_clock();
        /* One copy's rows: M = n, fixed by the examples. (A factored copy's U product above
         * added exactly 0 to its rows.) */
        float *yc = y + (size_t)c * stride * rows;
        apply_one(&one, x_shared ? x : x + (size_t)c * stride * cols, n, beta, yc, p->tmp, p->tile);
        if (beta == 0.0f) zero_pad(yc, 1, n, stride, rows);
        zmix_stage_add(ZMIX_STAGE_GEMM, t0);
    }
    return 0;
}

/* Copies 1..C-1 of a block (stride rows per copy) become copy 0. */
static void replicate(float *x, int C, int stride, int width)
{
    for (int c = 1; c < C; c++)
        memcpy(x + (size_t)c * stride * width, x, (size_t)stride * width * sizeof *x);
}

static int block_shared(const zmix_pop_map *map, int k0, int k1)
{
    for (int k = k0; k <= k1; k++)
        if (map[k].kind != ZMIX_POP_SHARED) return 0;
    return 1;
}

/* The wanted rows of each copy (the tail of each sequence) from src (copy stride sstride) to
 * dst (copy stride dstride); dst may be src (rows only move forward). */
static void gather_wanted(const zmix_batch *batch, int C, const float *src, int sstride, float *dst,
                          int dstride, int width)
{
    for (int c = 0; c < C; c++)
        for (int s = 0, start = 0, d = 0; s < batch->n_seq; start += batch->len[s], s++) {
            int skip = batch->len[s] - batch->n_out[s];
            memmove(dst + ((size_t)c * dstride + d) * width,
                    src + ((size_t)c * sstride + start + skip) * width,
                    (size_t)batch->n_out[s] * width * sizeof *dst);
            d += batch->n_out[s];
        }
}

int zmix_forward_pop(const zmix_model *model, const zmix_rope *rope, const zmix_batch *batch,
                     int n_copies, const zmix_pop_ops *ops, float *scratch, float *tile, float *out,
                     const atomic_int *stop, zmix_error *err)
{
    const zmix_model_config *c = &model->cfg;
    const int C = n_copies;
    int R, O, max_len;
    int shape_rc = batch_shape(batch, rope, &R, &O, &max_len, err);
    if (shape_rc) return shape_rc;
    const int Rs = (int)zmix_pop_pad((size_t)R), Os = (int)zmix_pop_pad((size_t)O);
    fwd_buffers b;
    carve(c, Rs * C, max_len, scratch, &b);
    int dim = c->dim, q_dim = c->n_heads * c->head_dim, kv_dim = c->n_kv_heads * c->head_dim;
    pop_ctx pc = {ops, b.tmp, tile, 0, err};
    zmix_stage_redirect(-1); /* an earlier call may have returned inside a shared block */

    unsigned long long t0 = zmix_stage_clock();
    zmix_model_embed_rows(model, batch->tokens, R, b.x);
    zero_pad(b.x, 1, R, Rs, dim);
    int shared = ops->shared_prefix;
    if (!shared) replicate(b.x, C, Rs, dim);
    size_t half = (size_t)c->head_dim / 2;
    for (int s = 0, start = 0; s < batch->n_seq; start += batch->len[s], s++)
        if (batch->len[s] > rope->shared_len && !(batch->n_branch && batch->n_branch[s])) {
            float *t = b.rope + (size_t)start * 2 * half;
            zmix_rope_fill(c, batch->len[s], batch->len[s], t, t + (size_t)batch->len[s] * half);
        }
    zmix_stage_add(ZMIX_STAGE_PREFIX, t0);

    zmix_linear lin[ZMIX_MAT_COUNT];
    zmix_pop_map map[ZMIX_MAT_COUNT];
    int rows = R, stride = Rs; /* real rows per copy still alive, and their stride */
    int rc = 0;
    for (int l = 0; l < c->n_layers && !rc; l++) {
        if (stop && atomic_load_explicit(stop, memory_order_relaxed))
            return zmix_error_set(err, ZMIX_ECANCELED, "forward pass cancelled");
        rc = ops->layer(ops->user, l, lin, map, err);
        if (rc) return rc;
        pc.layer = l;
        const zmix_layer *L = &model->layers[l];
        int last = l == c->n_layers - 1;

        /* Attention block: on one copy while every map so far is the same for all. */
        int blk = shared && !last && block_shared(map, ZMIX_MAT_Q, ZMIX_MAT_O);
        int Cb = blk ? 1 : C, in_shared = shared && !blk;
        zmix_stage_redirect(blk ? ZMIX_STAGE_PREFIX : -1);
        t0 = zmix_stage_clock();
        zmix_rmsnorm_rows(b.xb, b.x, L->attn_norm, (in_shared ? 1 : Cb) * stride, dim, c->norm_eps);
        if (in_shared) replicate(b.x, C, stride, dim), shared = 0;
        zmix_stage_add(ZMIX_STAGE_ELEM, t0);
        rc = pop_apply(&pc, ZMIX_MAT_K, &lin[ZMIX_MAT_K], &map[ZMIX_MAT_K], Cb, b.xb, in_shared,
                       rows, stride, 0.0f, b.k);
        if (!rc)
            rc = pop_apply(&pc, ZMIX_MAT_V, &lin[ZMIX_MAT_V], &map[ZMIX_MAT_V], Cb, b.xb, in_shared,
                           rows, stride, 0.0f, b.v);
        if (rc) break;
        t0 = zmix_stage_clock();
        add_bias(b.k, L->bk, Cb * stride, kv_dim);
        add_bias(b.v, L->bv, Cb * stride, kv_dim);
        /* The last layer: queries only for the wanted rows of each copy. */
        const float *q_in = b.xb;
        int nq = rows, qstride = stride;
        if (last) {
            nq = O, qstride = Os;
            int Cq = in_shared ? 1 : Cb;
            gather_wanted(batch, Cq, b.xb, stride, b.xq, Os, dim);
            zero_pad(b.xq, Cq, O, Os, dim);
            q_in = b.xq;
        }
        zmix_stage_add(ZMIX_STAGE_ELEM, t0);
        rc = pop_apply(&pc, ZMIX_MAT_Q, &lin[ZMIX_MAT_Q], &map[ZMIX_MAT_Q], Cb, q_in, in_shared, nq,
                       qstride, 0.0f, b.q);
        if (rc) break;
        t0 = zmix_stage_clock();
        add_bias(b.q, L->bq, Cb * qstride, q_dim);
        zmix_stage_add(ZMIX_STAGE_ELEM, t0);
        t0 = zmix_stage_clock();
        for (int cp = 0; cp < Cb; cp++) {
            fwd_buffers bc = b;
            bc.q = b.q + (size_t)cp * qstride * q_dim;
            bc.att = b.att + (size_t)cp * qstride * q_dim;
            bc.k = b.k + (size_t)cp * stride * kv_dim;
            bc.v = b.v + (size_t)cp * stride * kv_dim;
            const int *branch_len = batch->branch_len;
            for (int s = 0, start = 0, qrow = 0; s < batch->n_seq; start += batch->len[s], s++) {
                int len = batch->len[s];
                const float *cos_t = rope->cos, *sin_t = rope->sin;
                if (len > rope->shared_len && !(batch->n_branch && batch->n_branch[s])) {
                    cos_t = b.rope + (size_t)start * 2 * half;
                    sin_t = cos_t + (size_t)len * half;
                }
                qrow += attend_sequence(c, batch, s, branch_len, start,
                                        last ? batch->n_out[s] : len, cos_t, sin_t, &bc, qrow);
                if (batch->n_branch) branch_len += batch->n_branch[s];
            }
        }
        zero_pad(b.att, Cb, nq, qstride, q_dim);
        zmix_stage_add(ZMIX_STAGE_ATTN, t0);
        if (last) { /* compact every copy's residual stream to its wanted rows */
            t0 = zmix_stage_clock();
            gather_wanted(batch, Cb, b.x, stride, b.x, Os, dim);
            zero_pad(b.x, Cb, O, Os, dim);
            rows = O, stride = Os;
            zmix_stage_add(ZMIX_STAGE_ELEM, t0);
        }
        /* x += att·Woᵀ, the residual add fused into the GEMM (β = 1). */
        rc = pop_apply(&pc, ZMIX_MAT_O, &lin[ZMIX_MAT_O], &map[ZMIX_MAT_O], Cb, b.att, 0, rows,
                       stride, 1.0f, b.x);
        if (rc) break;

        /* MLP block. */
        blk = shared && !last && block_shared(map, ZMIX_MAT_GATE, ZMIX_MAT_DOWN);
        Cb = blk ? 1 : C, in_shared = shared && !blk;
        zmix_stage_redirect(blk ? ZMIX_STAGE_PREFIX : -1);
        t0 = zmix_stage_clock();
        zmix_rmsnorm_rows(b.xb, b.x, L->ffn_norm, (in_shared ? 1 : Cb) * stride, dim, c->norm_eps);
        if (in_shared) replicate(b.x, C, stride, dim), shared = 0;
        zmix_stage_add(ZMIX_STAGE_ELEM, t0);
        rc = pop_apply(&pc, ZMIX_MAT_GATE, &lin[ZMIX_MAT_GATE], &map[ZMIX_MAT_GATE], Cb, b.xb,
                       in_shared, rows, stride, 0.0f, b.h1);
        if (!rc)
            rc = pop_apply(&pc, ZMIX_MAT_UP, &lin[ZMIX_MAT_UP], &map[ZMIX_MAT_UP], Cb, b.xb,
                           in_shared, rows, stride, 0.0f, b.h3);
        if (rc) break;
        t0 = zmix_stage_clock();
        zmix_vec_swiglu(b.h1, b.h3, (size_t)Cb * stride * c->hidden_dim);
        zmix_stage_add(ZMIX_STAGE_ELEM, t0);
        rc = pop_apply(&pc, ZMIX_MAT_DOWN, &lin[ZMIX_MAT_DOWN], &map[ZMIX_MAT_DOWN], Cb, b.h1, 0,
                       rows, stride, 1.0f, b.x);
        zmix_stage_redirect(-1);
    }
    zmix_stage_redirect(-1);
    if (rc) return rc;
    t0 = zmix_stage_clock();
    if (c->n_layers == 0) { /* every copy is the embeddings' wanted rows */
        if (shared) replicate(b.x, C, Rs, dim);
        gather_wanted(batch, C, b.x, Rs, b.x, Os, dim);
        zero_pad(b.x, C, O, Os, dim);
    }
    zmix_rmsnorm_rows(out, b.x, model->final_norm, C * Os, dim, c->norm_eps);
    zmix_stage_add(ZMIX_STAGE_ELEM, t0);
    return 0;
}

void zmix_lm_head(const zmix_model *model, const float *hidden, int n, float *logits, float *tile)
{
    const zmix_model_config *c = &model->cfg;
    zmix_gemm_xwt(hidden, c->dim, n, zmix_model_lm_head_ref(model), c->vocab_size, c->dim, logits,
                  c->vocab_size, tile);
}

int zmix_model_forward_logits(const zmix_model *model, const int32_t *tokens, int n_tokens,
                              float *logits, zmix_error *err)
{
    const zmix_model_config *c = &model->cfg;
    if (n_tokens < 1) return zmix_error_set(err, ZMIX_EINVAL, "forward: no tokens");
    if (c->max_seq_len > 0 && n_tokens > c->max_seq_len)
        return zmix_error_set(err, ZMIX_ERANGE, "forward: %d tokens exceed the context length %d",
                              n_tokens, c->max_seq_len);
    for (int i = 0; i < n_tokens; i++)
        if (tokens[i] < 0 || tokens[i] >= c->vocab_size)
            return zmix_error_set(err, ZMIX_ERANGE,
                                  "forward: token %d at position %d is outside the vocabulary "
                                  "[0, %d)",
                                  (int)tokens[i], i, c->vocab_size);
    zmix_rope rope;
    int rc = zmix_rope_init(&rope, c, n_tokens, err);
    if (rc) return rc;
    size_t n_scratch = zmix_forward_scratch_floats(c, n_tokens, n_tokens);
    float *scratch = malloc(n_scratch * sizeof(float));
    float *hidden = malloc((size_t)n_tokens * c->dim * sizeof(float));
    float *tile = zmix_model_has_half(model) ? malloc(ZMIX_TILE_FLOATS * sizeof(float)) : NULL;
    if (!scratch || !hidden || (zmix_model_has_half(model) && !tile)) {
        rc = zmix_error_set(err, ZMIX_ENOMEM, "forward: out of memory for %d tokens", n_tokens);
    } else {
        zmix_batch batch = {1, tokens, &n_tokens, &n_tokens, NULL, NULL};
        rc = zmix_forward_hidden(model, &rope, &batch, zmix_layer_base, (void *)model, scratch,
                                 tile, hidden, NULL, err);
        if (!rc) zmix_lm_head(model, hidden, n_tokens, logits, tile);
    }
    free(scratch);
    free(hidden);
    free(tile);
    zmix_rope_free(&rope);
    return rc;
}
