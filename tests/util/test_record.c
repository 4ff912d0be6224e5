/* The record frame every persisted file uses (util/record.h) and its checksum (util/crc32c.h):
 * known CRC vectors, damage of every kind refused before a field is read, every field type
 * written and read back bit for bit, and a reader that never runs past the payload. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util/crc32c.h"
#include "util/record.h"

static void test_crc32c_vectors(void **state)
{
    (void)state;
    /* "123456789" is the standard check value; the 32-byte patterns are from RFC 3720
     * (iSCSI), appendix B.4. */
    assert_int_equal(crc32c_update(0, "123456789", 9), 0xE3069283u);
    uint8_t buf[32];
    memset(buf, 0, sizeof buf);
    assert_int_equal(crc32c_update(0, buf, 32), 0x8A9136AAu);
    memset(buf, 0xff, sizeof buf);
    assert_int_equal(crc32c_update(0, buf, 32), 0x62A8AB43u);
    for (int i = 0; i < 32; i++) buf[i] = (uint8_t)i;
    assert_int_equal(crc32c_update(0, buf, 32), 0x46DD794Eu);
    uint32_t part = crc32c_update(crc32c_update(0, buf, 13), buf + 13, 19);
    assert_int_equal(part, 0x46DD794Eu);
    assert_int_equal(crc32c_update(0, buf, 0), 0u);
}

static void test_record_frame_rejects_damage(void **state)
{
    (void)state;
    rec_writer w;
    recw_begin(&w, "TESTTEST", 1);
    recw_u64(&w, 42);
    recw_str16(&w, "hello");
    assert_int_equal(recw_finish(&w, NULL, NULL), 0);
    assert_int_equal(w.len, REC_OVERHEAD + 8 + 2 + 5);
    rec_reader rd;
    zmix_error err;
    assert_int_equal(rec_open(w.buf, w.len, "TESTTEST", 1, NULL, &rd, &err), 0);
    assert_true(recr_u64(&rd) == 42);
    char s[8];
    recr_str16(&rd, s, sizeof s);
    assert_string_equal(s, "hello");
    assert_int_equal(recr_end(&rd, "t", &err), 0);
    /* Every single-byte flip anywhere in the file is caught before any field is read. */
    for (size_t i = 0; i < w.len; i++) {
        w.buf[i] ^= 0x01;
        assert_int_equal(rec_open(w.buf, w.len, "TESTTEST", 1, NULL, &rd, &err), ZMIX_EFORMAT);
        w.buf[i] ^= 0x01;
    }
    for (size_t len = 0; len < w.len; len++)
        assert_int_equal(rec_open(w.buf, len, "TESTTEST", 1, NULL, &rd, &err), ZMIX_EFORMAT);
    assert_int_equal(rec_open(w.buf, w.len, "OTHERMAG", 1, NULL, &rd, &err), ZMIX_EFORMAT);
    assert_non_null(strstr(err.msg, "magic"));
    /* The reserved field must be 0 even under a valid CRC. */
    w.buf[12] = 1;
    uint32_t c = crc32c_update(0, w.buf, w.len - 4);
    for (int i = 0; i < 4; i++) w.buf[w.len - 4 + (size_t)i] = (uint8_t)(c >> (8 * i));
    assert_int_equal(rec_open(w.buf, w.len, "TESTTEST", 1, NULL, &rd, &err), ZMIX_EFORMAT);
    assert_non_null(strstr(err.msg, "reserved"));
    recw_free(&w);
}

static void test_record_fields_round_trip(void **state)
{
    (void)state;
    const float floats[3] = {1.5f, -0.0f, NAN};
    const uint8_t blob[5] = {0, 1, 2, 0xfe, 0xff};
    rec_writer w;
    recw_begin(&w, "TESTTEST", 3);
    recw_u16(&w, 0xbeef);
    recw_u32(&w, 0xdeadbeefu);
    recw_u64(&w, UINT64_MAX - 1);
    recw_i32(&w, INT32_MIN);
    recw_i64(&w, INT64_MIN);
    recw_f64(&w, -NAN);
    recw_f32s(&w, floats, 3);
    recw_str16(&w, "");
    recw_blob32(&w, blob, sizeof blob);
    recw_blob32(&w, NULL, 0);
    uint32_t crc = 0;
    zmix_error err;
    assert_int_equal(recw_finish(&w, &crc, &err), 0);
    assert_int_equal(w.len, REC_OVERHEAD + 2 + 4 + 8 + 4 + 8 + 8 + 12 + 2 + 4 + 5 + 4);
    assert_int_equal(crc, crc32c_update(0, w.buf, w.len - 4));

    rec_reader rd;
    uint32_t version = 0;
    assert_int_equal(rec_open(w.buf, w.len, "TESTTEST", 3, &version, &rd, &err), 0);
    assert_int_equal(version, 3);
    assert_int_equal(recr_u16(&rd), 0xbeef);
    assert_true(recr_u32(&rd) == 0xdeadbeefu);
    assert_true(recr_u64(&rd) == UINT64_MAX - 1);
    assert_true(recr_i32(&rd) == INT32_MIN);
    assert_true(recr_i64(&rd) == INT64_MIN);
    double d = recr_f64(&rd), want_d = -NAN;
    assert_memory_equal(&d, &want_d, sizeof d); /* the NaN's sign and payload survive */
    float f[3];
    assert_int_equal(recr_f32s(&rd, f, 3), 0);
    assert_memory_equal(f, floats, sizeof f);
    char s[4] = "xyz";
    recr_str16(&rd, s, sizeof s);
    assert_string_equal(s, "");
    size_t n = 0;
    const uint8_t *b = recr_blob32(&rd, &n);
    assert_int_equal(n, sizeof blob);
    assert_memory_equal(b, blob, sizeof blob);
    assert_non_null(recr_blob32(&rd, &n));
    assert_int_equal(n, 0);
    assert_int_equal(recr_end(&rd, "t", &err), 0);
    /* A newer version than the reader knows, and version 0, are refused by name. */
    assert_int_equal(rec_open(w.buf, w.len, "TESTTEST", 2, NULL, &rd, &err), ZMIX_EFORMAT);
    assert_non_null(strstr(err.msg, "version 3"));
    recw_free(&w);
    recw_begin(&w, "TESTTEST", 0);
    assert_int_equal(recw_finish(&w, NULL, &err), 0);
    assert_int_equal(rec_open(w.buf, w.len, "TESTTEST", 2, NULL, &rd, &err), ZMIX_EFORMAT);
    recw_free(&w);
}

static void test_record_reader_stays_inside_the_payload(void **state)
{
    (void)state;
    rec_writer w;
    recw_begin(&w, "TESTTEST", 1);
    recw_u32(&w, 1000); /* a blob32 length far beyond the payload */
    recw_u16(&w, 7);
    zmix_error err;
    assert_int_equal(recw_finish(&w, NULL, &err), 0);

    rec_reader rd;
    assert_int_equal(rec_open(w.buf, w.len, "TESTTEST", 1, NULL, &rd, &err), 0);
    size_t n = 1;
    assert_null(recr_blob32(&rd, &n));
    assert_int_equal(n, 0);
    assert_true(rd.failed);
    assert_int_equal(recr_u16(&rd), 0); /* every read after a failure yields zeros */
    assert_int_equal(recr_end(&rd, "blob", &err), ZMIX_EFORMAT);
    assert_non_null(strstr(err.msg, "blob: a field runs past the end"));

    /* f32s checks the count against what is left before multiplying it. */
    assert_int_equal(rec_open(w.buf, w.len, "TESTTEST", 1, NULL, &rd, &err), 0);
    float f[2];
    assert_int_equal(recr_f32s(&rd, f, SIZE_MAX / 2), -1);
    assert_true(rd.failed);

    /* A u16 string that does not fit the caller's buffer, or holds a NUL, fails the read. */
    recw_free(&w);
    recw_begin(&w, "TESTTEST", 1);
    recw_str16(&w, "abcdef");
    recw_u16(&w, 3);
    recw_bytes(&w, "a\0b", 3);
    assert_int_equal(recw_finish(&w, NULL, &err), 0);
    assert_int_equal(rec_open(w.buf, w.len, "TESTTEST", 1, NULL, &rd, &err), 0);
    char small[6];
    recr_str16(&rd, small, sizeof small);
    assert_true(rd.failed);
    assert_string_equal(small, "");
    rd.failed = 0;
    char big[8];
    recr_str16(&rd, big, sizeof big);
    assert_true(rd.failed);

    /* Fields left unread are reported too. */
    assert_int_equal(rec_open(w.buf, w.len, "TESTTEST", 1, NULL, &rd, &err), 0);
    recr_str16(&rd, big, sizeof big);
    assert_int_equal(recr_end(&rd, "tail", &err), ZMIX_EFORMAT);
    assert_non_null(strstr(err.msg, "tail: 5 unexpected bytes"));
    recw_free(&w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32c_vectors),
        cmocka_unit_test(test_record_frame_rejects_damage),
        cmocka_unit_test(test_record_fields_round_trip),
        cmocka_unit_test(test_record_reader_stays_inside_the_payload),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
