#include "pcg.h"

#include <math.h>

#define PCG32_MULT 6364136223846793005ULL

void pcg32_seed(pcg32 *rng, uint64_t initstate, uint64_t stream)
{
    rng->state = 0;
    rng->inc = (stream << 1u) | 1u;
    pcg32_next(rng);
    rng->state += initstate;
    pcg32_next(rng);
}

uint32_t pcg32_next(pcg32 *rng)
{
    uint64_t old = rng->state;
    rng->state = old * PCG32_MULT + rng->inc;
    uint32_t xorshifted = (uint32_t)(((old >> 18u) ^ old) >> 27u);
    uint32_t rot = (uint32_t)(old >> 59u);
    return (xorshifted >> rot) | (xorshifted << ((-rot) & 31u));
}

uint32_t pcg32_bounded(pcg32 *rng, uint32_t bound)
{
    /* Reject the low (2^32 mod bound) outputs so that every residue is equally likely. */
    uint32_t threshold = (-bound) % bound;
    for (;;) {
        uint32_t r = pcg32_next(rng);
        if (r >= threshold) return r % bound;
    }
}

void pcg32_advance(pcg32 *rng, uint64_t delta)
{
    uint64_t cur_mult = PCG32_MULT, cur_plus = rng->inc;
    uint64_t acc_mult = 1, acc_plus = 0;
    while (delta > 0) {
        if (delta & 1) {
            acc_mult *= cur_mult;
            acc_plus = acc_plus * cur_mult + cur_plus;
        }
        cur_plus = (cur_mult + 1) * cur_plus;
        cur_mult *= cur_mult;
        delta >>= 1;
    }
    rng->state = acc_mult * rng->state + acc_plus;
}

double pcg32_uniform(pcg32 *rng)
{
    uint64_t hi = pcg32_next(rng) >> 5; /* 27 bits */
    uint64_t lo = pcg32_next(rng) >> 6; /* 26 bits */
    return (double)((hi << 26) | lo) * (1.0 / 9007199254740992.0);
}

static void normal_pair(pcg32 *rng, double *z0, double *z1)
{
    /* 1 - u lies in (0, 1], so the logarithm is finite. */
    double u1 = 1.0 - pcg32_uniform(rng);
    double u2 = pcg32_uniform(rng);
    double r = sqrt(-2.0 * log(u1));
    double t = 2.0 * M_PI * u2;
    *z0 = r * cos(t);
    *z1 = r * sin(t);
}

void pcg32_normal_fill(pcg32 *rng, double *out, size_t n)
{
    size_t i = 0;
    for (; i + 1 < n; i += 2) normal_pair(rng, &out[i], &out[i + 1]);
    if (i < n) {
        double spare;
        normal_pair(rng, &out[i], &spare);
    }
}

double pcg32_normal(pcg32 *rng)
{
    double z0, z1;
    normal_pair(rng, &z0, &z1);
    return z0;
}
