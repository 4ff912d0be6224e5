/*
 * The byte tokenizer (tokenizer.json in a model directory) and text examples: encoding and
 * display decoding, the file format and its errors, how zmix_model_load picks the file up (a
 * Hugging Face tokenizer.json too: tests/model/test_tokenizer.c tests those), and examples JSON
 * with text prompts/targets.
 * The model directories are built from the demo generator's model files.
 */
#define _GNU_SOURCE /* mkdtemp */
#include <cJSON.h>
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "testutil.h"

#include "zmix/demo.h"
#include "zmix/model.h"

static void expect_error(int rc, const zmix_error *err, int code, const char *needle1,
                         const char *needle2)
{
    if (rc != code)
        fail_msg("expected %s, got %s: %s", zmix_strerror(code), zmix_strerror(rc), err->msg);
    if (needle1 && !strstr(err->msg, needle1))
        fail_msg("message '%s' lacks '%s'", err->msg, needle1);
    if (needle2 && !strstr(err->msg, needle2))
        fail_msg("message '%s' lacks '%s'", err->msg, needle2);
}

/* ---- the tokenizer alone ------------------------------------------------------------- */

static void test_create_checks_ids(void **state)
{
    (void)state;
    zmix_tokenizer *t = NULL;
    zmix_error err;
    expect_error(zmix_tokenizer_create_bytes(256, 257, 257, &t, &err), &err, ZMIX_ERANGE,
                 "vocab_size = 257", NULL);
    expect_error(zmix_tokenizer_create_bytes(255, 257, 258, &t, &err), &err, ZMIX_ERANGE,
                 "bos_id = 255", NULL);
    expect_error(zmix_tokenizer_create_bytes(256, 258, 258, &t, &err), &err, ZMIX_ERANGE,
                 "eos_id = 258", NULL);
    expect_error(zmix_tokenizer_create_bytes(257, 257, 258, &t, &err), &err, ZMIX_EINVAL,
                 "both 257", NULL);
    assert_null(t);
    assert_int_equal(zmix_tokenizer_create_bytes(257, 256, 300, &t, &err), 0);
    assert_int_equal(zmix_tokenizer_bos(t), 257);
    assert_int_equal(zmix_tokenizer_eos(t), 256);
    zmix_tokenizer_free(t);
}

static void test_encode_decode(void **state)
{
    (void)state;
    zmix_tokenizer *t = NULL;
    zmix_error err;
    assert_int_equal(zmix_tokenizer_create_bytes(256, 257, 258, &t, &err), 0);
    const char text[] = "a\\b\n\xff\t\x01";
    size_t len = sizeof text - 1;
    int32_t ids[16];
    assert_int_equal(zmix_tokenizer_encode(t, text, len, 1, ids, &err), (int)len + 1);
    assert_int_equal(ids[0], 256);
    assert_int_equal(ids[1], 'a');
    assert_int_equal(ids[5], 0xff); /* bytes, not signed chars */
    assert_int_equal(zmix_tokenizer_encode(t, text, len, 0, ids + 1, &err), (int)len);
    assert_int_equal(ids[1], 'a');

    /* Escaped for display: every byte and special token visible, nothing ambiguous. */
    ids[0] = 256;
    ids[len + 1] = 257;
    ids[len + 2] = 300;
    char out[128];
    size_t need = zmix_tokenizer_decode(t, ids, (int)len + 3, 1, out, sizeof out);
    const char *shown = "<bos>a\\\\b\\n\\xff\\t\\x01<eos><id 300>";
    assert_string_equal(out, shown);
    assert_int_equal(need, strlen(shown));
    /* Raw: the bytes back, special tokens dropped. */
    need = zmix_tokenizer_decode(t, ids, (int)len + 3, 0, out, sizeof out);
    assert_int_equal(need, len);
    assert_memory_equal(out, text, len);
    /* Truncation: NUL-terminated within the buffer, the full length still reported. */
    char small[6];
    need = zmix_tokenizer_decode(t, ids, (int)len + 3, 1, small, sizeof small);
    assert_int_equal(need, strlen(shown));
    assert_string_equal(small, "<bos>");
    zmix_tokenizer_free(t);
}

static void test_file_round_trip_and_errors(void **state)
{
    (void)state;
    char dir[] = "/tmp/zmix-test-tok-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    zmix_tokenizer *t = NULL, *back = NULL;
    zmix_error err;
    assert_int_equal(zmix_tokenizer_create_bytes(300, 301, 302, &t, &err), 0);
    assert_int_equal(zmix_tokenizer_save(t, path, &err), 0);
    assert_int_equal(zmix_tokenizer_load(path, 302, &back, &err), 0);
    assert_int_equal(zmix_tokenizer_bos(back), 300);
    assert_int_equal(zmix_tokenizer_eos(back), 301);
    zmix_tokenizer_free(back);
    back = NULL;
    /* The same file against a smaller vocabulary: the id is out of range. */
    expect_error(zmix_tokenizer_load(path, 301, &back, &err), &err, ZMIX_ERANGE, path,
                 "eos_id = 301");
    zmix_tokenizer_free(t);

    testutil_write_text(path, "{\"type\": \"bpe\", \"bos_id\": 256, \"eos_id\": 257}");
    expect_error(zmix_tokenizer_load(path, 258, &back, &err), &err, ZMIX_EFORMAT, path, "bytes");
    testutil_write_text(path, "{\"type\": \"bytes\", \"bos_id\": 256}");
    expect_error(zmix_tokenizer_load(path, 258, &back, &err), &err, ZMIX_EFORMAT, "eos_id",
                 "missing");
    testutil_write_text(path,
                        "{\"type\": \"bytes\", \"bos_id\": 256, \"eos_id\": 257, \"unk\": 3}");
    expect_error(zmix_tokenizer_load(path, 258, &back, &err), &err, ZMIX_EFORMAT, "unk", NULL);
    testutil_write_text(path, "{\"type\": \"bytes\", \"bos_id\": 256.5, \"eos_id\": 257}");
    expect_error(zmix_tokenizer_load(path, 258, &back, &err), &err, ZMIX_EFORMAT, "bos_id",
                 "integer");
    /* A file without "type" is a Hugging Face tokenizers file, read as one. */
    testutil_write_text(path, "{\"version\": \"1.0\", \"model\": {\"type\": \"BPE\"}}");
    expect_error(zmix_tokenizer_load(path, 258, &back, &err), &err, ZMIX_EFORMAT, path,
                 "model.vocab is not an object");
    assert_null(back);
    unlink(path);
    expect_error(zmix_tokenizer_load(path, 258, &back, &err), &err, ZMIX_ENOTFOUND, path, NULL);
    testutil_rmrf(dir);
}

/* ---- through the model loader and the examples loader -------------------------------- */

typedef struct fixture {
    char demo[64];  /* a generated demo (its model directory has the tokenizer) */
    char model[96]; /* a scratch model directory: links to the demo's config and weights */
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f) return -1;
    snprintf(f->demo, sizeof f->demo, "/tmp/zmix-test-tokdemo-XXXXXX");
    if (!mkdtemp(f->demo)) return -1;
    zmix_demo_opts o;
    zmix_demo_opts_default(&o);
    o.n_examples = 2;
    o.n_heldout = 0;
    o.force = 1;
    zmix_demo_info info;
    zmix_error err;
    if (zmix_demo_create(f->demo, &o, &info, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    snprintf(f->model, sizeof f->model, "%s/scratch", f->demo);
    if (mkdir(f->model, 0777)) return -1;
    char src[160], dst[160];
    const char *files[] = {"config.json", "model.safetensors"};
    for (int i = 0; i < 2; i++) {
        snprintf(src, sizeof src, "%s/model/%s", f->demo, files[i]);
        snprintf(dst, sizeof dst, "%s/%s", f->model, files[i]);
        if (symlink(src, dst)) return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    testutil_rmrf(f->demo);
    free(f);
    return 0;
}

static void set_tokenizer_file(const fixture *f, const char *text)
{
    char path[160];
    snprintf(path, sizeof path, "%s/tokenizer.json", f->model);
    if (text)
        testutil_write_text(path, text);
    else
        unlink(path);
}

static void test_model_load_picks_up_tokenizer(void **state)
{
    fixture *f = *state;
    zmix_model *m = NULL;
    zmix_error err;
    char path[160];
    snprintf(path, sizeof path, "%s/model", f->demo);
    assert_int_equal(zmix_model_load(path, &m, &err), 0);
    const zmix_tokenizer *t = zmix_model_tokenizer(m);
    assert_non_null(t);
    assert_int_equal(zmix_tokenizer_bos(t), zmix_model_get_config(m)->bos_id);
    assert_int_equal(zmix_tokenizer_eos(t), zmix_model_get_config(m)->eos_id);
    zmix_model_free(m);

    set_tokenizer_file(f, NULL); /* none: no tokenizer, no error */
    assert_int_equal(zmix_model_load(f->model, &m, &err), 0);
    assert_null(zmix_model_tokenizer(m));
    zmix_model_free(m);

    /* A Hugging Face tokenizer.json is read: one zmix cannot run exactly stops the load,
     * naming what is wrong, rather than leaving a model whose text would be mis-encoded. */
    set_tokenizer_file(f, "{\"version\": \"1.0\", \"added_tokens\": [], \"model\": {}}");
    expect_error(zmix_model_load(f->model, &m, &err), &err, ZMIX_EFORMAT, "tokenizer.json",
                 "model.type is missing");
    assert_null(m);
    set_tokenizer_file(f, "{\"version\": \"1.0\", \"model\": {\"type\": \"Unigram\"}}");
    expect_error(zmix_model_load(f->model, &m, &err), &err, ZMIX_EFORMAT, "tokenizer.json",
                 "model type 'Unigram' is not supported");
    /* ...and one whose ids the model's 258-token vocabulary cannot hold is not its tokenizer. */
    set_tokenizer_file(f, "{\"version\": \"1.0\", \"model\": {\"type\": \"BPE\", "
                          "\"vocab\": {\"a\": 0, \"b\": 300}, \"merges\": []}}");
    expect_error(zmix_model_load(f->model, &m, &err), &err, ZMIX_ERANGE, "tokenizer.json",
                 "token 'b' has id 300, outside the model's vocabulary [0, 258)");

    set_tokenizer_file(f, "{\"type\": \"bytes\", \"bos_id\": 257, \"eos_id\": 256}");
    expect_error(zmix_model_load(f->model, &m, &err), &err, ZMIX_EFORMAT, "tokenizer.json",
                 "bos_token_id 256");
    assert_null(m);
    set_tokenizer_file(f, "{\"type\": \"bytes\", \"bos_id\": 256, \"eos_id\": 300}");
    expect_error(zmix_model_load(f->model, &m, &err), &err, ZMIX_ERANGE, "eos_id = 300", NULL);
    set_tokenizer_file(f, "{\"type\": \"bytes\", ");
    expect_error(zmix_model_load(f->model, &m, &err), &err, ZMIX_EFORMAT, "malformed", NULL);
    set_tokenizer_file(f, NULL);
}

static void test_text_examples_json(void **state)
{
    fixture *f = *state;
    zmix_model *m = NULL;
    zmix_error err;
    char path[160];
    snprintf(path, sizeof path, "%s/model", f->demo);
    assert_int_equal(zmix_model_load(path, &m, &err), 0);
    const zmix_tokenizer *tok = zmix_model_tokenizer(m);
    char ex_path[160];
    snprintf(ex_path, sizeof ex_path, "%s/ex.json", f->demo);

    /* Text and ids mixed: text prompts get BOS, text targets are bare bytes. */
    testutil_write_text(ex_path, "{\"examples\": [{\"prompt\": \"hi \", \"target\": \"yo\"},"
                                 " {\"prompt\": [256, 104], \"target\": \"\\u00e9!\"},"
                                 " {\"prompt\": \"\", \"target\": [33]}]}");
    zmix_examples ex;
    assert_int_equal(zmix_examples_load_json_tok(ex_path, tok, &ex, &err), 0);
    assert_int_equal(ex.n, 3);
    const int32_t p0[] = {256, 'h', 'i', ' '}, t0[] = {'y', 'o'};
    assert_int_equal(ex.items[0].n_prompt, 4);
    assert_memory_equal(ex.items[0].prompt, p0, sizeof p0);
    assert_int_equal(ex.items[0].n_target, 2);
    assert_memory_equal(ex.items[0].target, t0, sizeof t0);
    const int32_t t1[] = {0xc3, 0xa9, '!'}; /* UTF-8 bytes of é */
    assert_int_equal(ex.items[1].n_prompt, 2);
    assert_int_equal(ex.items[1].n_target, 3);
    assert_memory_equal(ex.items[1].target, t1, sizeof t1);
    assert_int_equal(ex.items[2].n_prompt, 1); /* BOS alone */
    assert_int_equal(ex.items[2].prompt[0], 256);
    assert_int_equal(zmix_examples_check(m, &ex, &err), 0);
    assert_int_equal(ex.n_tokens, 4 + 2 + 2 + 3 + 1 + 1);
    zmix_examples_free(&ex);

    /* Without a tokenizer (and through the old entry point), text is refused by name. */
    expect_error(zmix_examples_load_json(ex_path, &ex, &err), &err, ZMIX_EFORMAT,
                 "examples[0].prompt is text", "tokenizer");
    testutil_write_text(ex_path, "{\"examples\": [{\"prompt\": [1], \"target\": [2]},"
                                 " {\"prompt\": \"a\", \"target\": \"\"}]}");
    expect_error(zmix_examples_load_json_tok(ex_path, tok, &ex, &err), &err, ZMIX_EFORMAT,
                 "examples[1].target is empty", ex_path);
    testutil_write_text(ex_path, "{\"examples\": [{\"prompt\": {\"a\": 1}, \"target\": \"x\"}]}");
    expect_error(zmix_examples_load_json_tok(ex_path, tok, &ex, &err), &err, ZMIX_EFORMAT,
                 "examples[0].prompt is not an array of token ids or a string", NULL);
    zmix_model_free(m);
}

static void test_text_examples_from_memory(void **state)
{
    (void)state;
    zmix_tokenizer *t = NULL;
    zmix_error err;
    assert_int_equal(zmix_tokenizer_create_bytes(256, 257, 258, &t, &err), 0);
    /* Not NUL-terminated: lengths count, not terminators. */
    const char buf[] = "abcXYZ";
    zmix_text_example items[2] = {{buf, 3, buf + 3, 2}, {NULL, 0, buf + 5, 1}};
    zmix_examples ex;
    assert_int_equal(zmix_examples_from_text(t, items, 2, &ex, &err), 0);
    const int32_t p0[] = {256, 'a', 'b', 'c'}, t0[] = {'X', 'Y'};
    assert_int_equal(ex.items[0].n_prompt, 4);
    assert_memory_equal(ex.items[0].prompt, p0, sizeof p0);
    assert_int_equal(ex.items[0].n_target, 2);
    assert_memory_equal(ex.items[0].target, t0, sizeof t0);
    assert_int_equal(ex.items[1].n_prompt, 1);
    assert_int_equal(ex.items[1].target[0], 'Z');
    zmix_examples_free(&ex);

    items[1].target_len = 0;
    expect_error(zmix_examples_from_text(t, items, 2, &ex, &err), &err, ZMIX_EINVAL,
                 "examples[1].target is empty", NULL);
    expect_error(zmix_examples_from_text(NULL, items, 1, &ex, &err), &err, ZMIX_EINVAL, "tokenizer",
                 NULL);
    expect_error(zmix_examples_from_text(t, items, 0, &ex, &err), &err, ZMIX_EINVAL, "empty", NULL);
    zmix_tokenizer_free(t);
}

int main(void)
{
    const struct CMUnitTest alone[] = {
        cmocka_unit_test(test_create_checks_ids),
        cmocka_unit_test(test_encode_decode),
        cmocka_unit_test(test_file_round_trip_and_errors),
        cmocka_unit_test(test_text_examples_from_memory),
    };
    const struct CMUnitTest with_model[] = {
        cmocka_unit_test(test_model_load_picks_up_tokenizer),
        cmocka_unit_test(test_text_examples_json),
    };
    int failed = cmocka_run_group_tests_name("tokenizer", alone, NULL, NULL);
    failed += cmocka_run_group_tests_name("tokenizer_with_model", with_model, setup, teardown);
    return failed;
}
