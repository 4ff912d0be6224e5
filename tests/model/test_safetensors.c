/* The safetensors reader and writer: round trips, dtype conversion, and every malformed
 * header the reader must refuse (each file built here, in a temporary directory). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "safetensors.h"
#include "test_formats_fixtures.h"
#include "util/sha256.h"
#include <unistd.h>

typedef struct ctx {
    char dir[512];
    char path[600];
} ctx;

static int setup(void **state)
{
    ctx *c = calloc(1, sizeof *c);
    testutil_mkdtemp(c->dir, sizeof c->dir);
    snprintf(c->path, sizeof c->path, "%s/t.safetensors", c->dir);
    *state = c;
    return 0;
}

static int teardown(void **state)
{
    ctx *c = *state;
    testutil_rmrf(c->dir);
    free(c);
    return 0;
}

static void test_write_read_round_trip(void **state)
{
    ctx *c = *state;
    float a[6] = {1, -2, 3.5f, 1e-30f, -0.0f, 65504};
    float b[3] = {0.25f, 0.5f, 0.75f};
    zmix_st_out t[] = {{"zeta", 2, {2, 3}, a, ZMIX_ST_F32, NULL},
                       {"alpha", 1, {3}, b, ZMIX_ST_F32, NULL}};
    const char *keys[] = {"name", "note"}, *values[] = {"x \"quoted\"", "two"};
    zmix_error err = {0};
    assert_int_equal(zmix_st_write(c->path, t, 2, keys, values, 2, &err), 0);

    /* No temporary file left behind; header length a multiple of 8; names sorted. */
    char tmp[700];
    snprintf(tmp, sizeof tmp, "%s.%ld.tmp", c->path, (long)getpid());
    struct stat st;
    assert_int_not_equal(stat(tmp, &st), 0);
    size_t len;
    char *raw = testutil_read_file(c->path, &len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | (uint8_t)raw[i];
    assert_int_equal(hlen % 8, 0);
    assert_int_equal(len, 8 + hlen + sizeof a + sizeof b);
    assert_true(strstr(raw + 8, "\"alpha\"") < strstr(raw + 8, "\"zeta\""));
    free(raw);

    zmix_st_file f;
    assert_int_equal(zmix_st_open(c->path, &f, &err), 0);
    assert_int_equal(f.n_tensors, 2);
    assert_string_equal(zmix_st_meta(&f, "name"), "x \"quoted\"");
    assert_string_equal(zmix_st_meta(&f, "note"), "two");
    assert_null(zmix_st_meta(&f, "absent"));
    const zmix_st_tensor *za = zmix_st_find(&f, "zeta");
    assert_non_null(za);
    assert_int_equal(za->ndim, 2);
    assert_int_equal(za->shape[0], 2);
    assert_int_equal(za->shape[1], 3);
    assert_null(zmix_st_find(&f, "beta"));
    const float *data;
    float *copy;
    assert_int_equal(zmix_st_tensor_f32(&f, za, &data, &copy, &err), 0);
    assert_null(copy); /* aligned F32: used in place from the mapping */
    assert_memory_equal(data, a, sizeof a);
    assert_true((const uint8_t *)data >= (const uint8_t *)f.map.addr &&
                (const uint8_t *)data < (const uint8_t *)f.map.addr + f.map.len);

    /* The data checksum helper agrees with a hash of the data area as written. */
    char expect[65], got[65];
    assert_int_equal(zmix_st_data_sha256(t, 2, expect, &err), 0);
    zmix_sha256_hex_of(f.data, f.data_len, got);
    assert_string_equal(expect, got);
    zmix_st_close(&f);
}

static void test_writer_rejects_duplicates(void **state)
{
    ctx *c = *state;
    float a[1] = {1};
    zmix_st_out t[] = {{"x", 1, {1}, a, ZMIX_ST_F32, NULL}, {"x", 1, {1}, a, ZMIX_ST_F32, NULL}};
    zmix_error err = {0};
    expect_error(zmix_st_write(c->path, t, 2, NULL, NULL, 0, &err), &err, ZMIX_EINVAL, "'x'",
                 "twice");
}

static float ref_f16(uint16_t h)
{
    int e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
    return (float)((h & 0x8000) ? -v : v);
}

static void test_f16_bf16_conversion_exact(void **unused)
{
    /* Every one of the 65536 half-precision values against the definition. */
    for (uint32_t h = 0; h < 65536; h++) {
        float got = zmix_f16_to_f32((uint16_t)h), want = ref_f16((uint16_t)h);
        if (isnan(want)) {
            assert_true(isnan(got));
        } else {
            assert_memory_equal(&got, &want, sizeof got);
        }
    }
    assert_true(zmix_f16_to_f32(0x3c00) == 1.0f);
    assert_true(zmix_f16_to_f32(0xc000) == -2.0f);
    assert_true(zmix_f16_to_f32(0x7bff) == 65504.0f);
    assert_true(zmix_f16_to_f32(0x0001) == ldexpf(1, -24));
    assert_true(zmix_bf16_to_f32(0x3f80) == 1.0f);
    assert_true(zmix_bf16_to_f32(0xc049) == -3.140625f);
    assert_true(isinf(zmix_bf16_to_f32(0x7f80)));
}

static void test_f16_bf16_tensors_converted(void **state)
{
    ctx *c = *state;
    /* h: 1.0, -2.0, smallest subnormal; b: 1.0, -3.140625, 0.5 */
    uint8_t data[12] = {0x00, 0x3c, 0x00, 0xc0, 0x01, 0x00, 0x80, 0x3f, 0x49, 0xc0, 0x00, 0x3f};
    write_raw_safetensors(c->path,
                          "{\"h\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[0,6]},"
                          "\"b\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[6,12]}}",
                          (uint64_t)-1, data, sizeof data);
    zmix_st_file f;
    zmix_error err = {0};
    assert_int_equal(zmix_st_open(c->path, &f, &err), 0);
    const float *v;
    float *copy;
    assert_int_equal(zmix_st_tensor_f32(&f, zmix_st_find(&f, "h"), &v, &copy, &err), 0);
    assert_non_null(copy);
    assert_true(v[0] == 1.0f && v[1] == -2.0f && v[2] == ldexpf(1, -24));
    free(copy);
    assert_int_equal(zmix_st_tensor_f32(&f, zmix_st_find(&f, "b"), &v, &copy, &err), 0);
    assert_true(v[0] == 1.0f && v[1] == -3.140625f && v[2] == 0.5f);
    free(copy);
    zmix_st_close(&f);
}

static void test_unaligned_f32_is_copied(void **state)
{
    ctx *c = *state;
    /* A 2-byte F16 tensor first puts the F32 tensor at data offset 2: not 4-byte aligned. */
    uint8_t data[10] = {0x00, 0x3c};
    float x[2] = {1.5f, -7.25f};
    memcpy(data + 2, x, sizeof x);
    write_raw_safetensors(c->path,
                          "{\"a\":{\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[0,2]},"
                          "\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[2,10]}}    ",
                          (uint64_t)-1, data, sizeof data);
    zmix_st_file f;
    zmix_error err = {0};
    assert_int_equal(zmix_st_open(c->path, &f, &err), 0);
    const float *v;
    float *copy;
    assert_int_equal(zmix_st_tensor_f32(&f, zmix_st_find(&f, "x"), &v, &copy, &err), 0);
    assert_non_null(copy);
    assert_memory_equal(v, x, sizeof x);
    free(copy);
    zmix_st_close(&f);
}

/* Writes header + data and expects zmix_st_open to fail with code and message parts. */
static void expect_open_error(ctx *c, const char *header, uint64_t len_field, size_t data_len,
                              int code, const char *n1, const char *n2)
{
    uint8_t data[64] = {0};
    write_raw_safetensors(c->path, header, len_field, data, data_len);
    zmix_st_file f;
    zmix_error err = {0};
    expect_error(zmix_st_open(c->path, &f, &err), &err, code, n1, n2);
    assert_non_null(strstr(err.msg, c->path));
    assert_null(f.map.addr); /* nothing left open */
}

static void test_malformed_files(void **state)
{
    ctx *c = *state;
    const char *good = "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    testutil_write_file(c->path, "\x05\0\0", 3);
    zmix_st_file f;
    zmix_error err = {0};
    expect_error(zmix_st_open(c->path, &f, &err), &err, ZMIX_EFORMAT, "too short", NULL);

    expect_open_error(c, good, 1000, 8, ZMIX_EFORMAT, "header length 1000", "past the end");
    expect_open_error(c, good, (uint64_t)-2, 8, ZMIX_EFORMAT, "past the end", NULL);
    expect_open_error(c, "{\"w\":{\"dtype\":\"F32\",", (uint64_t)-1, 8, ZMIX_EFORMAT, "malformed",
                      NULL);
    expect_open_error(c, "{} x", (uint64_t)-1, 0, ZMIX_EFORMAT, "trailing", NULL);
    expect_open_error(c, "[1, 2]", (uint64_t)-1, 0, ZMIX_EFORMAT, "not an object", NULL);
    expect_open_error(c, "{\"w\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]}}",
                      (uint64_t)-1, 8, ZMIX_EFORMAT, "tensor 'w'", "dtype 'I64'");
    expect_open_error(c, "{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", (uint64_t)-1, 4,
                      ZMIX_EFORMAT, "'w'", "dtype");
    expect_open_error(c, "{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", (uint64_t)-1, 4,
                      ZMIX_EFORMAT, "'w'", "shape");
    expect_open_error(c, "{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}",
                      (uint64_t)-1, 4, ZMIX_EFORMAT, "'w'", "shape[0]");
    expect_open_error(c, "{\"w\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}",
                      (uint64_t)-1, 4, ZMIX_EFORMAT, "'w'", "shape[0]");
    expect_open_error(c, "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
                      (uint64_t)-1, 4, ZMIX_EFORMAT, "'w'", "outside the data area");
    expect_open_error(c, "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,4]}}",
                      (uint64_t)-1, 8, ZMIX_EFORMAT, "'w'", "outside");
    expect_open_error(c, "{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}",
                      (uint64_t)-1, 8, ZMIX_EFORMAT, "'w'", "need 12");
    expect_open_error(c, "{\"w\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,8]}}",
                      (uint64_t)-1, 8, ZMIX_EFORMAT, "'w'", "need 4");
    /* Shapes whose product overflows 64 bits must not wrap around to a small size. */
    expect_open_error(c,
                      "{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],"
                      "\"data_offsets\":[0,0]}}",
                      (uint64_t)-1, 0, ZMIX_EFORMAT, "'w'", "need");
    expect_open_error(c, "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}",
                      (uint64_t)-1, 4, ZMIX_EFORMAT, "'w'", "data_offsets");
    expect_open_error(c,
                      "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                      "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                      (uint64_t)-1, 8, ZMIX_EFORMAT, "'w'", "twice");
    expect_open_error(c, "{\"__metadata__\":{\"n\":3}}", (uint64_t)-1, 0, ZMIX_EFORMAT,
                      "__metadata__ 'n'", "not a string");
    expect_open_error(c, "{\"w\":[1,2]}", (uint64_t)-1, 0, ZMIX_EFORMAT, "'w'",
                      "not a JSON object");
}

static void test_missing_file(void **state)
{
    ctx *c = *state;
    zmix_st_file f;
    zmix_error err = {0};
    expect_error(zmix_st_open(c->path, &f, &err), &err, ZMIX_ENOTFOUND, c->path, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_write_read_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_writer_rejects_duplicates, setup, teardown),
        cmocka_unit_test(test_f16_bf16_conversion_exact),
        cmocka_unit_test_setup_teardown(test_f16_bf16_tensors_converted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unaligned_f32_is_copied, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_file, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
