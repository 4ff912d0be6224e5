/*
 * The one table of search settings (src/adapt/cem_options.c): every flag sets the field its
 * wire key names, values outside the table's range are refused naming the flag, and the help
 * lists every flag with the default zmix_adapt_opts_default gives.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "adapt/cem_options.h"

static void apply(const char *flag, const char *value, zmix_adapt_opts *opts)
{
    const cem_option *o = cem_option_by_flag(flag);
    if (!o) fail_msg("no option %s", flag);
    zmix_error err;
    if (cem_option_apply_arg(o, value, opts, &err)) fail_msg("%s: %s", flag, err.msg);
}

static void test_every_flag_sets_its_field(void **unused)
{
    zmix_adapt_opts o;
    zmix_adapt_opts_default(&o);
    apply("--per-layer", NULL, &o);
    apply("--pop", "7", &o);
    apply("--elite", "0.5", &o);
    apply("--iters", "9", &o);
    apply("--seed", "18446744073709551615", &o);
    apply("--init-std", "0.25", &o);
    apply("--bounds", "-1,2.5", &o);
    apply("--normalize", NULL, &o);
    apply("--metric", "loglik", &o);
    apply("--patience", "4", &o);
    apply("--std-tol", "0.01", &o);
    apply("--std-floor", "0.02", &o);
    apply("--ema", "0.3", &o);
    apply("--no-elitism", NULL, &o);
    apply("--no-rescale", NULL, &o);
    apply("--target-acc", "0.9", &o);
    assert_int_equal(o.per_layer, 1);
    assert_int_equal(o.cem.pop_size, 7);
    assert_true(o.cem.elite_ratio == 0.5);
    assert_int_equal(o.cem.max_generations, 9);
    assert_true(o.cem.seed == UINT64_MAX);
    assert_true(o.cem.init_std == 0.25);
    assert_true(o.cem.lo == -1.0 && o.cem.hi == 2.5);
    assert_int_equal(o.cem.normalize, 1);
    assert_int_equal(o.cem.metric, ZMIX_METRIC_LOGLIK);
    assert_int_equal(o.cem.patience, 4);
    assert_true(o.cem.std_tol == 0.01);
    assert_true(o.cem.std_floor == 0.02);
    assert_true(o.cem.ema == 0.3);
    assert_int_equal(o.cem.elitism, 0);
    assert_int_equal(o.rescale, 0);
    assert_true(o.cem.target_accuracy == 0.9);

    /* Keys and flags name one option each. */
    for (int i = 0; i < CEM_OPT_COUNT; i++) {
        assert_ptr_equal(cem_option_by_flag(cem_options[i].flag), &cem_options[i]);
        for (int j = i + 1; j < CEM_OPT_COUNT; j++)
            assert_string_not_equal(cem_options[i].key, cem_options[j].key);
    }
    assert_null(cem_option_by_flag("--popsize"));
}

static void test_out_of_range_names_the_flag(void **unused)
{
    struct {
        const char *flag, *value, *msg;
    } bad[] = {
        {"--pop", "1", "--pop: '1' is not an integer in [2, 1000000]"},
        {"--iters", "0", "--iters: '0' is not an integer in [1, 1000000]"},
        {"--elite", "0", "--elite: '0' is not a number in [1e-09, 1]"},
        {"--ema", "1", "--ema: '1' is not a number in [0, 0.999999]"},
        {"--seed", "-3", "--seed: '-3' is not an unsigned integer"},
        {"--bounds", "0", "--bounds: '0' is not LO,HI"},
        {"--bounds", "0,2e6", "--bounds: '2e6' is not a number in [-1e+06, 1e+06]"},
        {"--metric", "f1", "--metric: 'f1' is not accuracy, loglik, choice or choice-sum"},
        {"--pop", "12x", "--pop: '12x' is not an integer in [2, 1000000]"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        zmix_adapt_opts o;
        zmix_adapt_opts_default(&o);
        zmix_error err;
        assert_int_equal(
            cem_option_apply_arg(cem_option_by_flag(bad[i].flag), bad[i].value, &o, &err),
            ZMIX_EINVAL);
        assert_string_equal(err.msg, bad[i].msg);
        assert_int_equal(o.cem.pop_size, 32); /* a refused value changes nothing */
    }
}

static void test_help_shows_every_flag_and_its_default(void **unused)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    cem_options_print_help(f);
    assert_int_equal(fclose(f), 0);
    for (int i = 0; i < CEM_OPT_COUNT; i++) assert_non_null(strstr(text, cem_options[i].flag));
    /* Defaults come from zmix_adapt_opts_default (the engine's for the CEM fields). */
    assert_non_null(strstr(text, "  --pop N              population size (sep-cma: pop × iters is "
                                 "the evaluation budget) (default: 32)\n"));
    assert_non_null(strstr(text,
                           "  --iters N            maximum generations (sep-cma: with pop, the "
                           "budget; at most 8 × iters generations) (default: 50)\n"));
    assert_non_null(strstr(text, "(default: 0,1)\n"));
    assert_non_null(strstr(text, "(default: accuracy)\n"));
    assert_non_null(strstr(text, "  --no-elitism         do not carry the best member over (cem "
                                 "only)\n"));
    int lines = 0;
    for (const char *p = text; *p; p++) lines += *p == '\n';
    assert_int_equal(lines, CEM_OPT_COUNT);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_flag_sets_its_field),
        cmocka_unit_test(test_out_of_range_names_the_flag),
        cmocka_unit_test(test_help_shows_every_flag_and_its_default),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
