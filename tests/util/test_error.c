#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "zmix/common.h"

static void test_error_set_and_prefix(void **unused)
{
    zmix_error err;
    zmix_error_clear(&err);
    assert_int_equal(err.code, 0);
    int rc = zmix_error_set(&err, ZMIX_EFORMAT, "tensor %s: dtype %s", "w", "Q4");
    assert_int_equal(rc, ZMIX_EFORMAT);
    zmix_error_prefix(&err, "%s", "model.safetensors");
    assert_string_equal(err.msg, "model.safetensors: tensor w: dtype Q4");
    assert_string_equal(zmix_strerror(err.code), "EFORMAT");
    assert_int_equal(zmix_error_set(NULL, ZMIX_EIO, "ignored"), ZMIX_EIO);
}

static void test_score_order(void **unused)
{
    zmix_score hi_acc = {0.75, -3.0, 0.0}, lo_acc = {0.5, -0.1, 0.0}, tie = {0.75, -2.0, 0.0};
    zmix_score nan_ll = {0.75, NAN, 0.0};
    assert_true(zmix_score_cmp(&hi_acc, &lo_acc, ZMIX_METRIC_ACCURACY) > 0);
    assert_true(zmix_score_cmp(&hi_acc, &lo_acc, ZMIX_METRIC_LOGLIK) < 0);
    assert_true(zmix_score_cmp(&tie, &hi_acc, ZMIX_METRIC_ACCURACY) > 0);
    assert_true(zmix_score_cmp(&nan_ll, &hi_acc, ZMIX_METRIC_ACCURACY) < 0);
    assert_int_equal(zmix_score_cmp(&nan_ll, &nan_ll, ZMIX_METRIC_LOGLIK), 0);
    assert_int_equal(zmix_score_cmp(&tie, &tie, ZMIX_METRIC_ACCURACY), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_error_set_and_prefix),
        cmocka_unit_test(test_score_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
