#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <string.h>

#include "util/utf8.h"
#include "zmix/common.h"

static void test_valid_and_malformed(void **unused)
{
    (void)unused;
    assert_true(utf8_valid("", 0));
    assert_true(utf8_valid("plain", 5));
    assert_true(utf8_valid("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9)); /* é € 😀 */
    assert_false(utf8_valid("\xff\xfe", 2));
    assert_false(utf8_valid("\xc3", 1));             /* truncated */
    assert_false(utf8_valid("\xc0\xaf", 2));         /* overlong '/' */
    assert_false(utf8_valid("\xe0\x80\xaf", 3));     /* overlong */
    assert_false(utf8_valid("\xed\xa0\x80", 3));     /* surrogate U+D800 */
    assert_false(utf8_valid("\xf4\x90\x80\x80", 4)); /* above U+10FFFF */
    assert_false(utf8_valid("a\x80z", 3));           /* stray continuation byte */
}

static void test_cut_never_splits_a_character(void **unused)
{
    (void)unused;
    char s[70];
    memset(s, 'a', 63);
    memcpy(s + 63, "\xc3\xa9", 2); /* é across the 64-byte boundary */
    assert_int_equal(utf8_cut(s, 65, 64), 63);
    assert_int_equal(utf8_cut(s, 65, 65), 65);
    assert_int_equal(utf8_cut("\xff\xfe", 2, 1), 1); /* malformed bytes stand alone */
    assert_int_equal(utf8_trim_tail(s, 64), 63);
    assert_int_equal(utf8_trim_tail(s, 65), 65);
    assert_int_equal(utf8_trim_tail("\xf0\x9f\x98", 3), 0);
    assert_int_equal(utf8_trim_tail("ab", 2), 2);
}

static void test_escape_makes_valid_text(void **unused)
{
    (void)unused;
    char out[64];
    size_t n = utf8_escape("m\xff\xfe\xc3\xa9", 5, out, sizeof out);
    assert_string_equal(out, "m\\xff\\xfe\xc3\xa9");
    assert_int_equal(n, strlen(out));
    assert_true(utf8_valid(out, n));
    /* Cut to the buffer, an escape or a character is written whole or not at all. */
    char small[6];
    size_t need = utf8_escape("ab\xff", 3, small, sizeof small);
    assert_int_equal(need, 6);
    assert_string_equal(small, "ab");
    assert_int_equal(utf8_escape("x", 1, NULL, 0), 1);
}

static void test_error_messages_are_cut_on_characters(void **unused)
{
    (void)unused;
    char big[ZMIX_ERROR_MSG_MAX + 8];
    memset(big, 'e', sizeof big);
    /* 510 bytes, then a 2-byte character that would straddle the 511-byte limit */
    memcpy(big + 510, "\xc3\xa9", 2);
    big[512] = '\0';
    zmix_error err;
    zmix_error_set(&err, ZMIX_EINVAL, "%s", big);
    assert_int_equal(strlen(err.msg), 510);
    assert_true(utf8_valid(err.msg, strlen(err.msg)));
    zmix_error_set(&err, ZMIX_EINVAL, "%s", big + 300);
    zmix_error_prefix(&err, "%.*s", 290, big);
    assert_true(utf8_valid(err.msg, strlen(err.msg)));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_and_malformed),
        cmocka_unit_test(test_cut_never_splits_a_character),
        cmocka_unit_test(test_escape_makes_valid_text),
        cmocka_unit_test(test_error_messages_are_cut_on_characters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
