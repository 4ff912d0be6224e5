/*
 * PCG32 random numbers (O'Neill 2014, "PCG: A Family of Simple Fast Space-Efficient
 * Statistically Good Algorithms for Random Number Generation"), the pcg_setseq_64_xsh_rr_32
 * member: 64-bit LCG state, a selectable odd increment (the "stream"), XSH-RR output.
 *
 * Why PCG: two 64-bit words are the whole state, so a job's random-stream position is
 * checkpointed by copying them, and distinct stream ids give independent sequences for
 * each job and each worker from one seed.
 */
#ifndef ZMIX_UTIL_PCG_H
#define ZMIX_UTIL_PCG_H

#include <stddef.h>
#include <stdint.h>

typedef struct pcg32 {
    uint64_t state; /* current LCG state */
    uint64_t inc;   /* stream increment, always odd */
} pcg32;

/* Seeds exactly as pcg32_srandom_r in the reference implementation, so that the published
 * demo outputs (seed 42, stream 54) are reproduced. */
void pcg32_seed(pcg32 *rng, uint64_t initstate, uint64_t stream);

uint32_t pcg32_next(pcg32 *rng);

/* Uniform integer in [0, bound) without modulo bias (bound > 0), as pcg32_boundedrand_r. */
uint32_t pcg32_bounded(pcg32 *rng, uint32_t bound);

/* Jumps ahead by delta steps in O(log delta) (Brown, "Random number generation with
 * arbitrary strides"); negative strides wrap around the 2^64 period. */
void pcg32_advance(pcg32 *rng, uint64_t delta);

/* Uniform double in [0, 1) with 53 random bits (two draws). */
double pcg32_uniform(pcg32 *rng);

/* Fills out[0..n) with independent standard normal draws (Box-Muller on pairs of uniforms;
 * an odd n discards the last partner). Consumes exactly 4 * ceil(n / 2) draws, so the
 * stream position after a fill depends only on n. */
void pcg32_normal_fill(pcg32 *rng, double *out, size_t n);

/* One standard normal draw (consumes 4 draws; the partner value is discarded). */
double pcg32_normal(pcg32 *rng);

#endif
