/*
 * Hugging Face tokenizers (tok_hf*.c, tok_split.c, tok_unicode.c) through the public API, on
 * the small tokenizers of tests/model/tokenizers/: ids known from the reference implementation,
 * what tokenizer_config.json changes, the encode bound, decoding for display, invalid UTF-8,
 * and every refusal of a feature zmix does not implement, by name. Parity on thousands of
 * strings is test_tokenizer_parity.py's job.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "test_formats_fixtures.h"
#include "testutil.h"
#include "tok_unicode.h"

#include "zmix/model.h"

#ifndef ZMIX_TOKENIZER_FIXTURES
#error "ZMIX_TOKENIZER_FIXTURES must name tests/model/tokenizers"
#endif

#define VOCAB (1 << 20)

static zmix_tokenizer *load_fixture(const char *name)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s/tokenizer.json", ZMIX_TOKENIZER_FIXTURES, name);
    zmix_tokenizer *tok = NULL;
    zmix_error err;
    if (zmix_tokenizer_load(path, VOCAB, &tok, &err)) fail_msg("%s: %s", name, err.msg);
    return tok;
}

/* Encodes text and checks the ids against want (n_want of them). */
static void expect_ids(const zmix_tokenizer *tok, const char *text, int flags, const int32_t *want,
                       int n_want)
{
    size_t len = strlen(text);
    int32_t *ids = malloc((zmix_tokenizer_max_tokens(tok, len, flags) + 1) * sizeof *ids);
    assert_non_null(ids);
    zmix_error err;
    int n = zmix_tokenizer_encode(tok, text, len, flags, ids, &err);
    if (n < 0) fail_msg("'%s': %s", text, err.msg);
    int same = n == n_want;
    for (int i = 0; same && i < n; i++) same = ids[i] == want[i];
    if (!same) {
        char got[512] = "";
        for (int i = 0; i < n && strlen(got) < 480; i++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%d ", (int)ids[i]);
        fail_msg("'%s': got %s", text, got);
    }
    free(ids);
}

#define IDS(...) ((const int32_t[]){__VA_ARGS__}), (int)(sizeof((int32_t[]){__VA_ARGS__}) / 4)

/* ---- known ids (from the tokenizers library on the same files) -------------------------- */

static void test_known_ids(void **state)
{
    (void)state;
    zmix_tokenizer *l3 = load_fixture("llama3-mini");
    /* BOS from the template (nothing after the text); "'S" case-insensitively a contraction;
     * " tokenization" a whole vocabulary entry taken as it is (ignore_merges). */
    expect_ids(l3, "It'S tokenization 12345", ZMIX_TOK_BOS,
               IDS(709, 73, 116, 39, 83, 706, 32, 49, 50, 51, 52, 53));
    expect_ids(l3, "<|eot_id|>hi", 0, IDS(713, 104, 105));
    expect_ids(l3, "<s>x", ZMIX_TOK_BOS | ZMIX_TOK_EOS, IDS(709, 60, 115, 62, 120));
    assert_int_equal(zmix_tokenizer_bos(l3), 709);
    assert_int_equal(zmix_tokenizer_eos(l3), 713); /* tokenizer_config.json's eos_token */
    zmix_tokenizer_free(l3);

    zmix_tokenizer *l2 = load_fixture("llama2-mini");
    /* Prepend ▁ to the text, spaces as ▁, byte fallback for the emoji. */
    expect_ids(
        l2, "Hello world 🎉", ZMIX_TOK_BOS,
        IDS(1, 259, 339, 388, 273, 266, 259, 289, 266, 263, 273, 268, 259, 243, 162, 145, 140));
    expect_ids(l2, "<s>x", 0, IDS(1, 259, 280));
    zmix_tokenizer_free(l2);
}

static void test_known_ids_real_gpt2(void **state)
{
    (void)state;
    const char *shared = getenv("ZMIX_SHARED_DIR");
    char path[512];
    snprintf(path, sizeof path, "%s/tokenizers/gpt2/tokenizer.json", shared ? shared : "");
    FILE *f = shared ? fopen(path, "r") : NULL;
    if (!f) skip();
    fclose(f);
    zmix_tokenizer *tok;
    zmix_error err;
    assert_int_equal(zmix_tokenizer_load(path, 50257, &tok, &err), 0);
    expect_ids(tok, "Hello", ZMIX_TOK_BOS, IDS(15496));
    expect_ids(tok, " world", 0, IDS(995));
    expect_ids(tok, "Hello world<|endoftext|>", 0, IDS(15496, 995, 50256));
    zmix_tokenizer_free(tok);
    /* GPT-2's vocabulary does not fit a smaller model. */
    assert_int_equal(zmix_tokenizer_load(path, 50000, &tok, &err), ZMIX_ERANGE);
    assert_non_null(strstr(err.msg, "outside the model's vocabulary [0, 50000)"));
}

/* ---- tokenizer_config.json decides BOS/EOS when it says so ------------------------------ */

static void copy_fixture(const char *name, const char *dir)
{
    const char *files[] = {"tokenizer.json", "tokenizer_config.json"};
    for (int i = 0; i < 2; i++) {
        char src[512], dst[512];
        snprintf(src, sizeof src, "%s/%s/%s", ZMIX_TOKENIZER_FIXTURES, name, files[i]);
        snprintf(dst, sizeof dst, "%s/%s", dir, files[i]);
        size_t len;
        char *text = testutil_read_file(src, &len);
        testutil_write_file(dst, text, len);
        free(text);
    }
}

static void test_config_flags(void **state)
{
    (void)state;
    char dir[256], path[300], cfg[300];
    testutil_mkdtemp(dir, sizeof dir);
    copy_fixture("llama2-mini", dir);
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    snprintf(cfg, sizeof cfg, "%s/tokenizer_config.json", dir);
    zmix_tokenizer *tok;
    zmix_error err;

    testutil_write_text(cfg, "{\"add_bos_token\": true, \"add_eos_token\": true, "
                             "\"bos_token\": \"<s>\", \"eos_token\": {\"content\": \"</s>\"}}");
    assert_int_equal(zmix_tokenizer_load(path, VOCAB, &tok, &err), 0);
    expect_ids(tok, "x", ZMIX_TOK_BOS | ZMIX_TOK_EOS, IDS(1, 259, 280, 2));
    expect_ids(tok, "x", ZMIX_TOK_BOS, IDS(1, 259, 280));
    expect_ids(tok, "x", 0, IDS(259, 280));
    zmix_tokenizer_free(tok);

    testutil_write_text(cfg, "{\"add_bos_token\": false, \"bos_token\": \"<s>\"}");
    assert_int_equal(zmix_tokenizer_load(path, VOCAB, &tok, &err), 0);
    expect_ids(tok, "x", ZMIX_TOK_BOS | ZMIX_TOK_EOS, IDS(259, 280));
    zmix_tokenizer_free(tok);

    /* Without the flags, the post-processor's template decides. */
    testutil_write_text(cfg, "{}");
    assert_int_equal(zmix_tokenizer_load(path, VOCAB, &tok, &err), 0);
    expect_ids(tok, "x", ZMIX_TOK_BOS | ZMIX_TOK_EOS, IDS(1, 259, 280));
    zmix_tokenizer_free(tok);

    testutil_write_text(cfg, "{\"add_eos_token\": true}");
    expect_error(zmix_tokenizer_load(path, VOCAB, &tok, &err), &err, ZMIX_EFORMAT, cfg,
                 "add_eos_token is true but eos_token is not set");
    testutil_write_text(cfg, "{\"bos_token\": \"<nope>\"}");
    expect_error(zmix_tokenizer_load(path, VOCAB, &tok, &err), &err, ZMIX_EFORMAT,
                 "bos_token '<nope>' is not a token", NULL);
    testutil_rmrf(dir);
}

/* ---- the bound, decoding, invalid input --------------------------------------------------- */

static void test_bound_holds_on_worst_cases(void **state)
{
    (void)state;
    /* Inputs that make many tokens of few bytes: added tokens back to back, a space or a
     * single character between them (each gets its own prepended ▁), characters outside the
     * vocabulary (byte fallback), combining marks under NFC. zmix_tokenizer_encode fails with
     * EINTERNAL when the bound is exceeded. */
    const char *names[] = {"gpt2-mini",   "llama3-mini", "qwen2-mini",
                           "smollm-mini", "llama2-mini", "mistral-mini"};
    const char *texts[] = {"",
                           " ",
                           "a",
                           "<s><s></s><s>",
                           "a<s>b<s> <s>\n<s>",
                           "[INST] [INST]x",
                           "<mask> <mask><sep> <sep>",
                           "\xF0\x9F\x8E\x89\xF0\x9F\x8E\x89",
                           "\xE2\x96\x81 \xE2\x96\x81",
                           "e\xCC\x81\xCC\xA7\xEF\xAC\xAC",
                           "\xF0\x9D\x85\xA0",
                           "1 2 3 4 5",
                           "<|im_start|><|im_end|>x"};
    for (size_t k = 0; k < sizeof names / sizeof *names; k++) {
        zmix_tokenizer *tok = load_fixture(names[k]);
        for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
            size_t len = strlen(texts[i]);
            size_t cap = zmix_tokenizer_max_tokens(tok, len, 3);
            int32_t *ids = malloc((cap + 1) * sizeof *ids);
            zmix_error err;
            int n = zmix_tokenizer_encode(tok, texts[i], len, 3, ids, &err);
            if (n < 0) fail_msg("%s on '%s': %s", names[k], texts[i], err.msg);
            assert_true((size_t)n <= cap);
            free(ids);
        }
        zmix_tokenizer_free(tok);
    }
}

static void test_invalid_utf8_names_the_offset(void **state)
{
    (void)state;
    zmix_tokenizer *tok = load_fixture("qwen2-mini");
    struct {
        const char *text;
        const char *where;
    } cases[] = {
        {"ab\xFF", "byte 0xFF at byte offset 2"},
        {"\xC0\x80", "byte 0xC0 at byte offset 0"},         /* overlong NUL */
        {"x\xED\xA0\x80", "byte 0xED at byte offset 1"},    /* a surrogate */
        {"xy\xE2\x82", "byte 0xE2 at byte offset 2"},       /* cut short */
        {"\xF4\x90\x80\x80", "byte 0xF4 at byte offset 0"}, /* past U+10FFFF */
        {"ok \x80", "byte 0x80 at byte offset 3"},
    };
    int32_t ids[64];
    zmix_error err;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        expect_error(zmix_tokenizer_encode(tok, cases[i].text, strlen(cases[i].text), 0, ids, &err),
                     &err, ZMIX_EINVAL, "not valid UTF-8", cases[i].where);
    zmix_tokenizer_free(tok);
}

static void test_decode(void **state)
{
    (void)state;
    zmix_tokenizer *tok = load_fixture("llama3-mini");
    const char *text = "Hi\tthere\n<|eot_id|>";
    int32_t ids[64];
    zmix_error err;
    int n = zmix_tokenizer_encode(tok, text, strlen(text), ZMIX_TOK_BOS, ids, &err);
    assert_true(n > 2);
    char out[256];
    zmix_tokenizer_decode(tok, ids, n, 0, out, sizeof out);
    assert_string_equal(out, "Hi\tthere\n");
    zmix_tokenizer_decode(tok, ids, n, ZMIX_DECODE_SPECIAL, out, sizeof out);
    assert_string_equal(out, "<|begin_of_text|>Hi\tthere\n<|eot_id|>");
    ids[n++] = 99999; /* not a token */
    size_t need = zmix_tokenizer_decode(tok, ids, n, ZMIX_DECODE_SHOW, out, sizeof out);
    assert_string_equal(out, "<|begin_of_text|>Hi\\tthere\\n<|eot_id|><id 99999>");
    assert_int_equal(need, strlen(out));
    /* Truncated like snprintf. */
    char small[8];
    assert_int_equal(zmix_tokenizer_decode(tok, ids, n, ZMIX_DECODE_SHOW, small, sizeof small),
                     need);
    assert_string_equal(small, "<|begin");
    zmix_tokenizer_free(tok);

    /* Byte fallback cut inside a character: U+FFFD per byte, as the library does. */
    tok = load_fixture("llama2-mini");
    int32_t cut[] = {259 /* ▁ */, 243 /* <0xF0> */, 162 /* <0x9F> */};
    zmix_tokenizer_decode(tok, cut, 3, 0, out, sizeof out);
    assert_string_equal(out, "\xEF\xBF\xBD\xEF\xBF\xBD");
    assert_true(strstr(zmix_tokenizer_describe(tok), "SentencePiece") != NULL);
    assert_int_equal(zmix_tokenizer_is_bytes(tok), 0);
    assert_int_equal(zmix_tokenizer_save(tok, "/nonexistent/x.json", &err), ZMIX_EINVAL);
    zmix_tokenizer_free(tok);
}

static void test_unicode_tables(void **state)
{
    (void)state;
    assert_int_equal(ucd_category('A'), UCD_LU);
    assert_int_equal(ucd_category(0x4E00), UCD_LO);
    assert_int_equal(ucd_category(0x0663), UCD_ND); /* ARABIC-INDIC DIGIT THREE */
    assert_int_equal(ucd_category(0x216B), UCD_NL); /* ROMAN NUMERAL TWELVE */
    assert_int_equal(ucd_category(0x0301), UCD_MN);
    assert_int_equal(ucd_category(0x1F389), UCD_SO);
    assert_int_equal(ucd_category(0x10FFFF), UCD_CN);
    assert_true(ucd_is_white_space(0x85) && ucd_is_white_space(0x3000));
    assert_false(ucd_is_white_space(0xFEFF) || ucd_is_white_space(0x200B));
    struct {
        const char *in, *out;
    } nfc[] = {
        {"e\xCC\x81", "\xC3\xA9"},                                /* e + acute -> é */
        {"\xE2\x84\xAB", "\xC3\x85"},                             /* ANGSTROM SIGN -> Å */
        {"\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8", "\xEA\xB0\x81"}, /* jamo -> 각 */
        {"q\xCC\x87\xCC\xA3", "q\xCC\xA3\xCC\x87"},               /* reordered by class */
        {"\xEF\xAC\xAC", "\xD7\xA9\xD6\xBC\xD7\x81"},             /* excluded: stays decomposed */
        {"a\xCC\x80\xCC\x80", "\xC3\xA0\xCC\x80"},                /* the second grave is blocked */
        {"\xCC\x81"
         "e",
         "\xCC\x81"
         "e"}, /* a leading mark composes with nothing */
    };
    for (size_t i = 0; i < sizeof nfc / sizeof *nfc; i++) {
        unsigned char *out;
        size_t n = ucd_nfc((const unsigned char *)nfc[i].in, strlen(nfc[i].in), &out);
        assert_int_equal(n, strlen(nfc[i].out));
        assert_memory_equal(out, nfc[i].out, n);
        free(out);
    }
}

/* ---- refusals -------------------------------------------------------------------------- */

/* Writes gpt2-mini's tokenizer.json with one substring replaced, then expects the load to fail
 * with a message holding needle. */
static void expect_refused(const char *fixture, const char *from, const char *to, int code,
                           const char *needle)
{
    char src[512];
    snprintf(src, sizeof src, "%s/%s/tokenizer.json", ZMIX_TOKENIZER_FIXTURES, fixture);
    size_t len;
    char *text = testutil_read_file(src, &len);
    char *at = strstr(text, from);
    if (!at) fail_msg("%s has no '%s'", fixture, from);
    size_t head = (size_t)(at - text), from_len = strlen(from), to_len = strlen(to);
    char *edited = malloc(len - from_len + to_len + 1);
    memcpy(edited, text, head);
    memcpy(edited + head, to, to_len);
    memcpy(edited + head + to_len, at + from_len, len - head - from_len + 1);
    char dir[256], path[300];
    testutil_mkdtemp(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    testutil_write_text(path, edited);
    zmix_tokenizer *tok = NULL;
    zmix_error err;
    expect_error(zmix_tokenizer_load(path, VOCAB, &tok, &err), &err, code, path, needle);
    assert_null(tok);
    testutil_rmrf(dir);
    free(text);
    free(edited);
}

static void test_refusals_by_name(void **state)
{
    (void)state;
    const int F = ZMIX_EFORMAT;
    expect_refused("gpt2-mini", "\"type\": \"BPE\"", "\"type\": \"Unigram\"", F,
                   "model type 'Unigram' is not supported");
    expect_refused("gpt2-mini", "\"type\": \"BPE\"", "\"type\": \"WordPiece\"", F,
                   "model type 'WordPiece' is not supported");
    expect_refused("gpt2-mini", "\"normalizer\": null", "\"normalizer\": {\"type\": \"NFKC\"}", F,
                   "normalizer type 'NFKC' is not supported");
    expect_refused("gpt2-mini", "\"normalizer\": null",
                   "\"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": "
                   "\"NFC\"}, {\"type\": \"Lowercase\"}]}",
                   F, "normalizer.normalizers[1] type 'Lowercase' is not supported");
    expect_refused("gpt2-mini", "\"normalizer\": null",
                   "\"normalizer\": {\"type\": \"Replace\", \"pattern\": {\"Regex\": \" +\"}, "
                   "\"content\": \" \"}",
                   F, "is a regex");
    expect_refused("gpt2-mini", "\"pre_tokenizer\": {",
                   "\"pre_tokenizer\": {\"type\": "
                   "\"Whitespace\"}, \"x\": {",
                   F, "the top level has the field 'x'");
    expect_refused("gpt2-mini", "\"type\": \"ByteLevel\",\n  \"add_prefix_space\": false",
                   "\"type\": \"Whitespace\",\n  \"add_prefix_space\": false", F,
                   "pre_tokenizer type 'Whitespace' is not supported");
    expect_refused("llama3-mini", "(?i:'s|'t|'re|'ve|'m|'ll|'d)|", "(?i:'s|'t)|", F,
                   "is not a split pattern zmix knows");
    expect_refused("llama3-mini", "\"behavior\": \"Isolated\"", "\"behavior\": \"Removed\"", F,
                   "Split with behavior 'Removed' is not supported");
    expect_refused("gpt2-mini", "\"dropout\": null", "\"dropout\": 0.1", F, "model.dropout");
    expect_refused("gpt2-mini", "\"fuse_unk\": false", "\"fuse_unk\": false, \"extra\": 1", F,
                   "model has the field 'extra'");
    expect_refused("gpt2-mini", "\"end_of_word_suffix\": null", "\"end_of_word_suffix\": \"</w>\"",
                   F, "model.end_of_word_suffix is set");
    expect_refused("gpt2-mini", "\"single_word\": false", "\"single_word\": true", F,
                   "single_word");
    expect_refused("gpt2-mini", "\"decoder\": {\n  \"type\": \"ByteLevel\"",
                   "\"decoder\": {\n  \"type\": \"WordPiece\"", F,
                   "decoder type 'WordPiece' is not supported");
    expect_refused("gpt2-mini", "\"post_processor\": {\n  \"type\": \"ByteLevel\"",
                   "\"post_processor\": {\n  \"type\": \"RobertaProcessing\"", F,
                   "post_processor type 'RobertaProcessing' is not supported");
    expect_refused("gpt2-mini", "\"Ā\": 0,", "", F, "byte 0x00");
    expect_refused("llama2-mini", "\"<0x41>\": 68,", "", F, "has no '<0x41>'");
    expect_refused("gpt2-mini", "\"Ġ t\"", "\"Ġ zz\"", F, "'zz' is not in the vocabulary");
    expect_refused("gpt2-mini", "\"id\": 706", "\"id\": 2000000", ZMIX_ERANGE,
                   "outside the model's vocabulary");
    expect_refused("llama3-mini", "\"pretokenizers\": [\n   {\n    \"type\": \"Split\"",
                   "\"pretokenizers\": [{\"type\": \"ByteLevel\"},\n   {\n    \"type\": "
                   "\"Split\"",
                   F, "follows a ByteLevel pre-tokenizer");
    expect_refused("mistral-mini", "\"prepend_scheme\": \"first\"", "\"prepend_scheme\": \"some\"",
                   F, "prepend_scheme");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_ids),
        cmocka_unit_test(test_known_ids_real_gpt2),
        cmocka_unit_test(test_config_flags),
        cmocka_unit_test(test_bound_holds_on_worst_cases),
        cmocka_unit_test(test_invalid_utf8_names_the_offset),
        cmocka_unit_test(test_decode),
        cmocka_unit_test(test_unicode_tables),
        cmocka_unit_test(test_refusals_by_name),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
