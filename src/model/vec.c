/*
 * Element-wise kernels of the forward pass and the scorer (everything that is not a GEMM).
 *
 * Why they look like this. The project builds at -O2, where GCC only vectorises loops whose
 * trip count needs no scalar epilogue; and the default x86-64 target has SSE2 only. So each
 * loop runs over fixed blocks of BLOCK floats (which GCC turns into SIMD) plus a scalar
 * tail, and each function is compiled for AVX-512, AVX2 and the baseline, picked once at
 * load time (GCC target_clones). Reductions accumulate BLOCK partial sums in a fixed order,
 * so results depend only on n, never on alignment or on who calls.
 *
 * exp is a Cephes-style polynomial (relative error below 1e-7 over the clamped range):
 * glibc's expf does not vectorise, and the SwiGLU, softmax and log-sum-exp together call it
 * about ten million times per candidate on the stories15M shape.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "compute.h"

#define BLOCK 16

/* Not under the sanitizers: the clones' ifunc resolvers run during relocation, before the
 * sanitizer runtime is up, and ThreadSanitizer's instrumented resolver crashes there. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) &&                             \
    !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
#define VEC_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define VEC_CLONES
#endif

/* The scalar exp (compute.h) under the name the vector code below mirrors. */
static inline float exp_poly(float x)
{
    return zmix_exp_poly(x);
}

/* The same polynomial on 8 lanes with GCC vector extensions (the clamps are selects, not
 * branches, so the loop stays SIMD); lane for lane bit-identical to exp_poly. */
/* The helpers are static and always inlined, so the AVX-vs-SSE argument-passing ABI note
 * GCC prints for them in the baseline clone concerns no real call. */
#pragma GCC diagnostic ignored "-Wpsabi"
typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

static inline v8f load8(const float *p)
{
    v8f v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void store8(float *p, v8f v)
{
    memcpy(p, &v, sizeof v);
}

static inline v8f select8(v8i mask, v8f a, v8f b)
{
    return (v8f)(((v8i)a & mask) | ((v8i)b & ~mask));
}

static inline v8f exp8(v8f x)
{
    const v8f lo = {-87.0f, -87.0f, -87.0f, -87.0f, -87.0f, -87.0f, -87.0f, -87.0f};
    const v8f hi = {88.0f, 88.0f, 88.0f, 88.0f, 88.0f, 88.0f, 88.0f, 88.0f};
    x = select8(x < lo, lo, x);
    x = select8(x > hi, hi, x);
    const float magic = 12582912.0f;
    v8f t = x * 1.44269504088896341f + magic;
    v8f n = t - magic;
    v8f r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    v8f p = r * 1.9875691500e-4f + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    v8i bits = (__builtin_convertvector(n, v8i) + 127) << 23;
    return p * (v8f)bits;
}

float zmix_exp(float x)
{
    return exp_poly(x);
}

VEC_CLONES void zmix_vec_add(float *restrict y, const float *restrict x, size_t n)
{
    size_t i = 0;
    for (; i + BLOCK <= n; i += BLOCK)
        for (int j = 0; j < BLOCK; j++) y[i + j] += x[i + j];
    for (; i < n; i++) y[i] += x[i];
}

VEC_CLONES void zmix_vec_mul(float *restrict y, const float *restrict x, size_t n)
{
    size_t i = 0;
    for (; i + BLOCK <= n; i += BLOCK)
        for (int j = 0; j < BLOCK; j++) y[i + j] *= x[i + j];
    for (; i < n; i++) y[i] *= x[i];
}

VEC_CLONES void zmix_vec_scale(float *restrict y, float a, const float *restrict x, size_t n)
{
    size_t i = 0;
    for (; i + BLOCK <= n; i += BLOCK)
        for (int j = 0; j < BLOCK; j++) y[i + j] = a * x[i + j];
    for (; i < n; i++) y[i] = a * x[i];
}

VEC_CLONES void zmix_vec_scal(float *x, float a, size_t n)
{
    size_t i = 0;
    for (; i + BLOCK <= n; i += BLOCK)
        for (int j = 0; j < BLOCK; j++) x[i + j] *= a;
    for (; i < n; i++) x[i] *= a;
}

VEC_CLONES void zmix_vec_axpy(float *restrict y, float a, const float *restrict x, size_t n)
{
    size_t i = 0;
    for (; i + BLOCK <= n; i += BLOCK)
        for (int j = 0; j < BLOCK; j++) y[i + j] += a * x[i + j];
    for (; i < n; i++) y[i] += a * x[i];
}

VEC_CLONES void zmix_vec_swiglu(float *restrict g, const float *restrict u, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        v8f gv = load8(g + i);
        store8(g + i, gv / (1.0f + exp8(-gv)) * load8(u + i));
    }
    for (; i < n; i++) g[i] = g[i] / (1.0f + exp_poly(-g[i])) * u[i];
}

VEC_CLONES float zmix_vec_max(const float *restrict x, size_t n)
{
    float m[BLOCK];
    for (int j = 0; j < BLOCK; j++) m[j] = x[0];
    size_t i = 0;
    for (; i + BLOCK <= n; i += BLOCK)
        for (int j = 0; j < BLOCK; j++) m[j] = x[i + j] > m[j] ? x[i + j] : m[j];
    float mx = m[0];
    for (int j = 1; j < BLOCK; j++) mx = m[j] > mx ? m[j] : mx;
    for (; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    return mx;
}

static float sum8(v8f v)
{
    float s = 0.0f;
    for (int j = 0; j < 8; j++) s += v[j];
    return s;
}

VEC_CLONES float zmix_vec_exp_shift(float *restrict x, float shift, size_t n)
{
    v8f acc = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        v8f e = exp8(load8(x + i) - shift);
        store8(x + i, e);
        acc += e;
    }
    float sum = sum8(acc);
    for (; i < n; i++) {
        x[i] = exp_poly(x[i] - shift);
        sum += x[i];
    }
    return sum;
}

VEC_CLONES float zmix_vec_sum_exp_shift(const float *restrict x, float shift, size_t n)
{
    v8f acc = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8) acc += exp8(load8(x + i) - shift);
    float sum = sum8(acc);
    for (; i < n; i++) sum += exp_poly(x[i] - shift);
    return sum;
}

VEC_CLONES float zmix_vec_sum_squares(const float *restrict x, size_t n)
{
    float s[BLOCK] = {0};
    size_t i = 0;
    for (; i + BLOCK <= n; i += BLOCK)
        for (int j = 0; j < BLOCK; j++) s[j] += x[i + j] * x[i + j];
    float sum = 0.0f;
    for (int j = 0; j < BLOCK; j++) sum += s[j];
    for (; i < n; i++) sum += x[i] * x[i];
    return sum;
}

/* out = w ⊙ (a·x) */
VEC_CLONES void zmix_vec_scale_weight(float *restrict out, const float *restrict w, float a,
                                      const float *restrict x, size_t n)
{
    size_t i = 0;
    for (; i + BLOCK <= n; i += BLOCK)
        for (int j = 0; j < BLOCK; j++) out[i + j] = w[i + j] * (a * x[i + j]);
    for (; i < n; i++) out[i] = w[i] * (a * x[i]);
}

/* ---- 16-bit storage ----------------------------------------------------------------------
 * Weights and factors kept in BF16/F16 are widened block by block right before a GEMM, so
 * these run once per stored value per use: plain integer shifts and selects that vectorise. */

/* The float32 bits of F16 h (exact, also subnormals, Inf and NaN): rebias the exponent;
 * Inf/NaN get the maximal exponent; a subnormal m·2^-24 is rebuilt in float as
 * (1 + m/1024)·2^-14 − 2^-14. */
static inline uint32_t f16_bits(uint16_t h)
{
    uint32_t o = (uint32_t)(h & 0x7fffu) << 13, exp = o & 0x0f800000u;
    o += (uint32_t)(127 - 15) << 23;
    uint32_t inf_nan = o + ((uint32_t)(128 - 16) << 23);
    float sub;
    uint32_t sub_bits = o + (1u << 23);
    memcpy(&sub, &sub_bits, sizeof sub);
    sub -= 6.103515625e-05f; /* 2^-14 */
    memcpy(&sub_bits, &sub, sizeof sub);
    o = exp == 0x0f800000u ? inf_nan : exp == 0 ? sub_bits : o;
    return o | (uint32_t)(h & 0x8000u) << 16;
}

VEC_CLONES void zmix_half_to_float(float *dst, const uint16_t *src, size_t n, zmix_dtype dtype)
{
    uint32_t bits[BLOCK];
    size_t i = 0;
    if (dtype == ZMIX_DT_BF16) {
        for (; i + BLOCK <= n; i += BLOCK) {
            for (int j = 0; j < BLOCK; j++) bits[j] = (uint32_t)src[i + j] << 16;
            memcpy(dst + i, bits, sizeof bits);
        }
        for (; i < n; i++) {
            uint32_t b = (uint32_t)src[i] << 16;
            memcpy(dst + i, &b, sizeof b);
        }
        return;
    }
    for (; i + BLOCK <= n; i += BLOCK) {
        for (int j = 0; j < BLOCK; j++) bits[j] = f16_bits(src[i + j]);
        memcpy(dst + i, bits, sizeof bits);
    }
    for (; i < n; i++) {
        uint32_t b = f16_bits(src[i]);
        memcpy(dst + i, &b, sizeof b);
    }
}

static uint16_t float_to_bf16(float f)
{
    uint32_t b;
    memcpy(&b, &f, sizeof b);
    if ((b & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((b >> 16) | 0x40u); /* quiet NaN */
    return (uint16_t)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}

static uint16_t float_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return sign | 0x7e00u;  /* NaN */
    if (ax >= 0x477ff000u) return sign | 0x7c00u; /* ≥ 65520 rounds to Inf */
    if (ax >= 0x38800000u) {                      /* normal in F16: round at mantissa bit 13 */
        uint32_t r = ax + 0xfffu + ((ax >> 13) & 1u) - ((uint32_t)112 << 23);
        return sign | (uint16_t)(r >> 13);
    }
    uint32_t e = ax >> 23; /* subnormal in F16: a multiple of 2^-24 */
    if (e < 102) return sign;
    uint32_t m = (ax & 0x7fffffu) | 0x800000u, shift = 126 - e;
    uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1u))) q++;
    return sign | (uint16_t)q;
}

void zmix_float_to_half(uint16_t *dst, const float *src, size_t n, zmix_dtype dtype)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = dtype == ZMIX_DT_BF16 ? float_to_bf16(src[i]) : float_to_f16(src[i]);
}
