/* PCG32 against the published output of the reference pcg32-demo (seed 42, stream 54),
 * plus the properties zmix relies on: stream independence, advance, and the normal sampler. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util/pcg.h"

/* pcg32-demo, round 1: after pcg32_srandom_r(&rng, 42u, 54u). */
static const uint32_t demo_numbers[6] = {0xa15c02b7, 0x7b47f409, 0xba1d3330,
                                         0x83d2f293, 0xbfa4784b, 0xcbed606e};
static const char demo_coins[] =
    "HHTTTHTHHHTHTTTHHHHHTTTHHHTHTHTHTTHTTTHHHHHHTTTTHHTTTTTHTTTTTTTHT";
static const int demo_rolls[33] = {3, 4, 1, 1, 2, 2, 3, 2, 4, 3, 2, 4, 3, 3, 5, 2, 3,
                                   1, 3, 1, 5, 1, 4, 1, 5, 6, 4, 6, 6, 2, 6, 3, 3};

static void test_seed_state_matches_reference(void **unused)
{
    pcg32 rng;
    pcg32_seed(&rng, 42u, 54u);
    /* The demo prints "6364136223846793005 109 1753877967969059832": mult, inc, state. */
    assert_int_equal(rng.inc, 109u);
    assert_int_equal(rng.state, 1753877967969059832ull);
}

static void test_demo_round1(void **unused)
{
    pcg32 rng;
    pcg32_seed(&rng, 42u, 54u);
    for (int i = 0; i < 6; i++) assert_int_equal(pcg32_next(&rng), demo_numbers[i]);
    /* The demo continues on the same generator with coins, then dice. */
    char coins[sizeof demo_coins];
    for (size_t i = 0; i + 1 < sizeof demo_coins; i++)
        coins[i] = pcg32_bounded(&rng, 2) ? 'H' : 'T';
    coins[sizeof demo_coins - 1] = '\0';
    assert_string_equal(coins, demo_coins);
    for (int i = 0; i < 33; i++) assert_int_equal((int)pcg32_bounded(&rng, 6) + 1, demo_rolls[i]);
}

static void test_streams_differ(void **unused)
{
    pcg32 a, b;
    pcg32_seed(&a, 42u, 1u);
    pcg32_seed(&b, 42u, 2u);
    int same = 0;
    for (int i = 0; i < 1000; i++) same += pcg32_next(&a) == pcg32_next(&b);
    assert_true(same < 5);
}

static void test_advance_matches_stepping(void **unused)
{
    pcg32 a, b;
    pcg32_seed(&a, 7u, 3u);
    b = a;
    for (int i = 0; i < 12345; i++) pcg32_next(&a);
    pcg32_advance(&b, 12345);
    assert_int_equal(a.state, b.state);
    assert_int_equal(pcg32_next(&a), pcg32_next(&b));
    /* Advancing by 2^64 - 1 then one step is a full period: back where we started. */
    pcg32 c = b, d = b;
    pcg32_advance(&c, UINT64_MAX);
    pcg32_next(&c);
    assert_int_equal(c.state, d.state);
}

static void test_uniform_range(void **unused)
{
    pcg32 rng;
    pcg32_seed(&rng, 1u, 1u);
    double sum = 0;
    for (int i = 0; i < 100000; i++) {
        double u = pcg32_uniform(&rng);
        assert_true(u >= 0.0 && u < 1.0);
        sum += u;
    }
    assert_true(fabs(sum / 100000 - 0.5) < 0.01);
}

static void test_bounded_is_unbiased(void **unused)
{
    pcg32 rng;
    pcg32_seed(&rng, 99u, 5u);
    int counts[7] = {0};
    for (int i = 0; i < 70000; i++) counts[pcg32_bounded(&rng, 7)]++;
    for (int i = 0; i < 7; i++) assert_true(abs(counts[i] - 10000) < 400);
}

static void test_normal_moments(void **unused)
{
    enum { N = 1000000 };
    double *z = malloc(N * sizeof *z);
    assert_non_null(z);
    pcg32 rng;
    pcg32_seed(&rng, 2025u, 11u);
    pcg32_normal_fill(&rng, z, N);
    double mean = 0, m2 = 0, m3 = 0, m4 = 0;
    for (int i = 0; i < N; i++) mean += z[i];
    mean /= N;
    for (int i = 0; i < N; i++) {
        double d = z[i] - mean, d2 = d * d;
        m2 += d2;
        m3 += d2 * d;
        m4 += d2 * d2;
    }
    m2 /= N;
    m3 /= N;
    m4 /= N;
    assert_true(fabs(mean) < 0.01);
    assert_true(fabs(m2 - 1.0) < 0.01);
    assert_true(fabs(m3) < 0.02);       /* symmetric */
    assert_true(fabs(m4 - 3.0) < 0.05); /* Gaussian kurtosis, catches a uniform or a bad tail */
    free(z);
}

static void test_normal_fill_is_deterministic_and_consumes_fixed_draws(void **unused)
{
    pcg32 a, b;
    pcg32_seed(&a, 5u, 6u);
    b = a;
    double x[5], y[5];
    pcg32_normal_fill(&a, x, 5);
    pcg32_normal_fill(&b, y, 5);
    assert_memory_equal(x, y, sizeof x);
    pcg32 c;
    pcg32_seed(&c, 5u, 6u);
    pcg32_advance(&c, 4 * 3);
    assert_int_equal(a.state, c.state);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seed_state_matches_reference),
        cmocka_unit_test(test_demo_round1),
        cmocka_unit_test(test_streams_differ),
        cmocka_unit_test(test_advance_matches_stepping),
        cmocka_unit_test(test_uniform_range),
        cmocka_unit_test(test_bounded_is_unbiased),
        cmocka_unit_test(test_normal_moments),
        cmocka_unit_test(test_normal_fill_is_deterministic_and_consumes_fixed_draws),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
