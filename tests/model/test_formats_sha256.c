/* SHA-256 against the FIPS 180-4 / NIST example vectors, and streaming == one-shot. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "util/sha256.h"

static void test_nist_vectors(void **unused)
{
    char hex[ZMIX_SHA256_HEX];
    zmix_sha256_hex_of("", 0, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    zmix_sha256_hex_of("abc", 3, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    zmix_sha256_hex_of(two_blocks, strlen(two_blocks), hex);
    assert_string_equal(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    const char *four = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnop"
                       "jklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";
    zmix_sha256_hex_of(four, strlen(four), hex);
    assert_string_equal(hex, "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
}

static void test_million_a(void **unused)
{
    /* One million 'a', fed in uneven pieces so that partial-block buffering is exercised. */
    zmix_sha256 s;
    zmix_sha256_init(&s);
    char chunk[997];
    memset(chunk, 'a', sizeof chunk);
    size_t left = 1000000;
    for (size_t piece = 1; left; piece = piece % 980 + 13) {
        size_t take = piece < left ? piece : left;
        zmix_sha256_update(&s, chunk, take);
        left -= take;
    }
    uint8_t digest[ZMIX_SHA256_BYTES];
    char hex[ZMIX_SHA256_HEX];
    zmix_sha256_final(&s, digest);
    zmix_sha256_hex(digest, hex);
    assert_string_equal(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

static void test_padding_boundaries(void **unused)
{
    /* Lengths around the 55/56/64-byte padding edges: streaming byte by byte must equal the
     * one-shot digest, and neighbouring lengths must differ. */
    uint8_t buf[130];
    for (int i = 0; i < 130; i++) buf[i] = (uint8_t)(i * 7 + 1);
    char prev[ZMIX_SHA256_HEX] = "";
    for (size_t len = 50; len <= 130; len++) {
        char one[ZMIX_SHA256_HEX], streamed[ZMIX_SHA256_HEX];
        zmix_sha256_hex_of(buf, len, one);
        zmix_sha256 s;
        zmix_sha256_init(&s);
        for (size_t i = 0; i < len; i++) zmix_sha256_update(&s, buf + i, 1);
        uint8_t digest[ZMIX_SHA256_BYTES];
        zmix_sha256_final(&s, digest);
        zmix_sha256_hex(digest, streamed);
        assert_string_equal(one, streamed);
        assert_string_not_equal(one, prev);
        memcpy(prev, one, sizeof prev);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nist_vectors),
        cmocka_unit_test(test_million_a),
        cmocka_unit_test(test_padding_boundaries),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
