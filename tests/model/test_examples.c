/* Few-shot example sets: JSON loading, copying, and the checks against a model. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_formats_fixtures.h"
#include "zmix/model.h"

typedef struct ctx {
    char dir[512];
    char path[600];
} ctx;

static int setup(void **state)
{
    ctx *c = calloc(1, sizeof *c);
    testutil_mkdtemp(c->dir, sizeof c->dir);
    snprintf(c->path, sizeof c->path, "%s/ex.json", c->dir);
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

static void test_load_good(void **state)
{
    ctx *c = *state;
    testutil_write_text(c->path, "{\"task\": \"ignored\", \"examples\": [\n"
                                 "  {\"prompt\": [1, 403, 407], \"target\": [405, 292]},\n"
                                 "  {\"target\": [7], \"prompt\": [1]}\n]}\n");
    zmix_examples ex;
    zmix_error err = {0};
    assert_int_equal(zmix_examples_load_json(c->path, &ex, &err), 0);
    assert_int_equal(ex.n, 2);
    assert_int_equal(ex.n_tokens, 7);
    assert_int_equal(ex.items[0].n_prompt, 3);
    assert_int_equal(ex.items[0].n_target, 2);
    assert_int_equal(ex.items[0].prompt[2], 407);
    assert_int_equal(ex.items[0].target[1], 292);
    assert_int_equal(ex.items[1].n_prompt, 1);
    assert_int_equal(ex.items[1].target[0], 7);
    /* Every item points into the single owned block. */
    assert_true(ex.items[1].target >= ex.tokens && ex.items[1].target < ex.tokens + ex.n_tokens);

    zmix_examples copy;
    assert_int_equal(zmix_examples_copy(ex.items, ex.n, &copy, &err), 0);
    assert_int_equal(copy.n, 2);
    assert_int_equal(copy.n_tokens, 7);
    assert_ptr_not_equal(copy.tokens, ex.tokens);
    assert_memory_equal(copy.tokens, ex.tokens, 7 * sizeof(int32_t));
    assert_int_equal(copy.items[0].target[0], 405);
    zmix_examples_free(&ex);
    assert_null(ex.tokens);
    assert_int_equal(copy.items[1].prompt[0], 1); /* independent of the freed original */
    zmix_examples_free(&copy);
}

static void load_fails(ctx *c, const char *text, int code, const char *n1, const char *n2)
{
    testutil_write_text(c->path, text);
    zmix_examples ex;
    zmix_error err = {0};
    expect_error(zmix_examples_load_json(c->path, &ex, &err), &err, code, n1, n2);
    assert_non_null(strstr(err.msg, c->path));
    assert_null(ex.items);
    assert_null(ex.tokens);
}

static void test_load_errors(void **state)
{
    ctx *c = *state;
    load_fails(c, "{\"examples\": [", ZMIX_EFORMAT, "malformed JSON", NULL);
    load_fails(c, "[]", ZMIX_EFORMAT, "not a JSON object", NULL);
    load_fails(c, "{\"example\": []}", ZMIX_EFORMAT, "'examples' is missing", NULL);
    load_fails(c, "{\"examples\": []}", ZMIX_EFORMAT, "'examples' is empty", NULL);
    load_fails(c, "{\"examples\": [{\"prompt\": [1], \"target\": [2]}, 5]}", ZMIX_EFORMAT,
               "examples[1] is not an object", NULL);
    load_fails(c,
               "{\"examples\": [{\"prompt\": [1], \"target\": [2]}, {\"prompt\": [1], "
               "\"target\": [2]}, {\"prompt\": [1], \"target\": [2]}, {\"prompt\": [1], "
               "\"target\": []}]}",
               ZMIX_EFORMAT, "examples[3].target is empty", NULL);
    load_fails(c, "{\"examples\": [{\"prompt\": [1]}]}", ZMIX_EFORMAT,
               "examples[0].target is missing", NULL);
    load_fails(c, "{\"examples\": [{\"prompt\": 1, \"target\": [2]}]}", ZMIX_EFORMAT,
               "examples[0].prompt is not an array of token ids or a string", NULL);
    load_fails(c, "{\"examples\": [{\"prompt\": [1, -3], \"target\": [2]}]}", ZMIX_EFORMAT,
               "examples[0].prompt[1] is not a token id", NULL);
    load_fails(c, "{\"examples\": [{\"prompt\": [1], \"target\": [2, 2.5]}]}", ZMIX_EFORMAT,
               "examples[0].target[1] is not a token id", NULL);
    load_fails(c, "{\"examples\": [{\"prompt\": [1], \"target\": [\"a\"]}]}", ZMIX_EFORMAT,
               "examples[0].target[0] is not a token id", NULL);
    load_fails(c, "{\"examples\": [{\"prompt\": [1], \"target\": [3000000000]}]}", ZMIX_EFORMAT,
               "target[0]", NULL);
    load_fails(c, "{\"examples\": [{\"prompt\": [1], \"targets\": [2]}]}", ZMIX_EFORMAT,
               "examples[0]: unknown key 'targets'", NULL);
    load_fails(c, "{\"examples\": [{\"prompt\": [1], \"target\": [2], \"prompt\": [3]}]}",
               ZMIX_EFORMAT, "examples[0].prompt appears twice", NULL);
    load_fails(c, "{\"examples\": [], \"examples\": [{\"prompt\": [1], \"target\": [2]}]}",
               ZMIX_EFORMAT, "key 'examples' appears twice", NULL);
    zmix_examples ex;
    zmix_error err = {0};
    char missing[700];
    snprintf(missing, sizeof missing, "%s/none.json", c->dir);
    expect_error(zmix_examples_load_json(missing, &ex, &err), &err, ZMIX_ENOTFOUND, missing, NULL);
}

/* Multiple-choice examples: choices as ids or text, the answer an index; every malformed one
 * and a set mixing kinds are refused naming the file, the example and the field. */
static void test_load_choices(void **state)
{
    ctx *c = *state;
    testutil_write_text(c->path,
                        "{\"examples\": [\n"
                        "  {\"prompt\": [1, 5], \"choices\": [[7], [8, 9], [10]], "
                        "\"answer\": 1},\n"
                        "  {\"answer\": 0, \"prompt\": [2], \"choices\": [[3, 4], [6]]}\n]}");
    zmix_examples ex;
    zmix_error err = {0};
    assert_int_equal(zmix_examples_load_json(c->path, &ex, &err), 0);
    assert_true(zmix_examples_are_choice(&ex));
    assert_int_equal(ex.items[0].n_choices, 3);
    assert_int_equal(ex.items[0].answer, 1);
    assert_int_equal(ex.items[0].n_target, 0);
    assert_null(ex.items[0].target);
    assert_int_equal(ex.items[0].choice_len[1], 2);
    assert_int_equal(ex.items[0].choices[2], 9);
    assert_int_equal(ex.items[0].choices[3], 10);
    assert_int_equal(ex.items[1].answer, 0);
    assert_int_equal(ex.items[1].choice_len[0], 2);
    assert_int_equal(ex.items[1].choices[2], 6);
    assert_int_equal(zmix_example_tokens(&ex.items[0]), 6);

    zmix_model model;
    memset(&model, 0, sizeof model);
    model.cfg.vocab_size = 10;
    model.cfg.max_seq_len = 3;
    /* The longest choice decides the context: prompt 2 + choice 2 - 1 = 3 positions. */
    expect_error(zmix_examples_check(&model, &ex, &err), &err, ZMIX_ERANGE,
                 "examples[0].choices[2][0]: token id 10", NULL);
    model.cfg.vocab_size = 11;
    assert_int_equal(zmix_examples_check(&model, &ex, &err), 0);
    model.cfg.max_seq_len = 2;
    expect_error(zmix_examples_check(&model, &ex, &err), &err, ZMIX_ELIMIT, "longest choice 2",
                 NULL);

    zmix_examples copy;
    assert_int_equal(zmix_examples_copy(ex.items, ex.n, &copy, &err), 0);
    assert_int_equal(copy.items[1].choices[1], 4);
    assert_int_equal(copy.items[0].choice_len[2], 1);
    assert_int_equal(copy.items[0].answer, 1);
    zmix_examples_free(&ex);
    zmix_examples_free(&copy);

    load_fails(c,
               "{\"examples\": [{\"prompt\": [1], \"choices\": [[2], [3]], \"answer\": 0}, "
               "{\"prompt\": [1], \"target\": [2]}]}",
               ZMIX_EFORMAT, "examples[1].target: examples[0] is multiple-choice", NULL);
    load_fails(c,
               "{\"examples\": [{\"prompt\": [1], \"target\": [2]}, "
               "{\"prompt\": [1], \"choices\": [[2], [3]], \"answer\": 0}]}",
               ZMIX_EFORMAT, "examples[1].choices: examples[0] is exact-match", NULL);
    load_fails(c, "{\"examples\": [{\"prompt\": [1], \"choices\": [[2], [3]], \"answer\": 2}]}",
               ZMIX_EFORMAT, "examples[0].answer must be the index of a choice", "[0, 2)");
    load_fails(c, "{\"examples\": [{\"prompt\": [1], \"choices\": [[2], [3]], \"answer\": 0.5}]}",
               ZMIX_EFORMAT, "examples[0].answer", NULL);
    load_fails(c, "{\"examples\": [{\"prompt\": [1], \"choices\": [[2]], \"answer\": 0}]}",
               ZMIX_EFORMAT, "examples[0].choices: 1 choices, expected 2 to 64", NULL);
    load_fails(c, "{\"examples\": [{\"prompt\": [1], \"choices\": [[2], []], \"answer\": 0}]}",
               ZMIX_EFORMAT, "examples[0].choices[1] is empty", NULL);
    load_fails(c, "{\"examples\": [{\"prompt\": [1], \"choices\": [[2], \"\"], \"answer\": 0}]}",
               ZMIX_EFORMAT, "examples[0].choices[1] is empty", NULL);
    load_fails(c, "{\"examples\": [{\"prompt\": [1], \"choices\": [[2], [3]]}]}", ZMIX_EFORMAT,
               "examples[0].answer is missing", NULL);
    load_fails(c,
               "{\"examples\": [{\"prompt\": [1], \"target\": [4], \"choices\": [[2], [3]], "
               "\"answer\": 1}]}",
               ZMIX_EFORMAT, "examples[0] has both target and choices", NULL);
    /* Text needs a tokenizer: without one the choice is named. */
    load_fails(c, "{\"examples\": [{\"prompt\": [1], \"choices\": [[2], \"b\"], \"answer\": 0}]}",
               ZMIX_EFORMAT, "examples[0].choices is text", NULL);

    /* The parser keeps the file as written: text choices stay text. */
    const char text[] = "{\"examples\": [{\"prompt\": \"Q\", \"choices\": [\" yes\", [4, 5]], "
                        "\"answer\": 1}]}";
    zmix_examples_json js;
    assert_int_equal(zmix_examples_json_parse(text, sizeof text - 1, "mem.json", &js, &err), 0);
    assert_int_equal(js.items[0].n_choices, 2);
    assert_string_equal(js.items[0].choices[0].text, " yes");
    assert_int_equal(js.items[0].choices[1].n_ids, 2);
    assert_int_equal(js.items[0].answer, 1);
    zmix_examples_json_free(&js);

    /* With a tokenizer, text choices are encoded as targets are: without BOS. */
    zmix_tokenizer *tok;
    assert_int_equal(zmix_tokenizer_create_bytes(256, 257, 300, &tok, &err), 0);
    testutil_write_text(c->path, text);
    assert_int_equal(zmix_examples_load_json_tok(c->path, tok, &ex, &err), 0);
    assert_int_equal(ex.items[0].n_prompt, 2); /* BOS, 'Q' */
    assert_int_equal(ex.items[0].choice_len[0], 4);
    assert_int_equal(ex.items[0].choice_len[1], 2);
    assert_memory_equal(ex.items[0].choices, ((int32_t[]){' ', 'y', 'e', 's', 4, 5}),
                        6 * sizeof(int32_t));
    zmix_examples_free(&ex);
    zmix_tokenizer_free(tok);
}

/* The file as written (what `zmix submit` sends): ids stay ids, text stays text, an empty
 * prompt text is allowed (BOS alone once encoded), and every part points into owned memory. */
static void test_parse_as_written(void **unused)
{
    const char text[] = "{\"examples\": [{\"prompt\": \"Once\", \"target\": [7, 8]},\n"
                        "  {\"prompt\": [1, 2, 3], \"target\": \" upon\"},\n"
                        "  {\"prompt\": \"\", \"target\": [9]}]}";
    zmix_examples_json ex;
    zmix_error err = {0};
    assert_int_equal(zmix_examples_json_parse(text, sizeof text - 1, "mem.json", &ex, &err), 0);
    assert_int_equal(ex.n, 3);
    assert_string_equal(ex.items[0].prompt.text, "Once");
    assert_null(ex.items[0].prompt.ids);
    assert_int_equal(ex.items[0].target.n_ids, 2);
    assert_int_equal(ex.items[0].target.ids[1], 8);
    assert_null(ex.items[0].target.text);
    assert_int_equal(ex.items[1].prompt.n_ids, 3);
    assert_int_equal(ex.items[1].prompt.ids[2], 3);
    assert_string_equal(ex.items[1].target.text, " upon");
    assert_string_equal(ex.items[2].prompt.text, "");
    assert_true(ex.items[1].prompt.ids >= ex.ids && ex.items[2].target.ids < ex.ids + 6);
    zmix_examples_json_free(&ex);
    assert_null(ex.items);

    /* The messages name the source given and the example, as the file loader's do. */
    const char empty_target[] = "{\"examples\": [{\"prompt\": \"a\", \"target\": \"\"}]}";
    expect_error(
        zmix_examples_json_parse(empty_target, sizeof empty_target - 1, "mem.json", &ex, &err),
        &err, ZMIX_EFORMAT, "mem.json: examples[0].target is empty", NULL);
    assert_null(ex.items);
    expect_error(zmix_examples_json_parse("{\"examples\": [", 14, "mem.json", &ex, &err), &err,
                 ZMIX_EFORMAT, "mem.json: malformed JSON", NULL);
}

static void test_check_against_model(void **unused)
{
    zmix_model model;
    memset(&model, 0, sizeof model);
    model.cfg.vocab_size = 512;
    model.cfg.max_seq_len = 6;
    int32_t p0[] = {1, 2, 3}, t0[] = {4, 5}, p1[] = {1, 511}, t1[] = {0, 512};
    zmix_example items[2] = {{p0, 3, t0, 2, 0, NULL, NULL, 0}, {p1, 2, t1, 2, 0, NULL, NULL, 0}};
    zmix_examples ex;
    zmix_error err = {0};
    assert_int_equal(zmix_examples_copy(items, 2, &ex, &err), 0);
    expect_error(zmix_examples_check(&model, &ex, &err), &err, ZMIX_ERANGE,
                 "examples[1].target[1]: token id 512 outside the vocabulary [0, 512)", NULL);
    ex.tokens[6] = -1; /* example 1, prompt[1] */
    expect_error(zmix_examples_check(&model, &ex, &err), &err, ZMIX_ERANGE,
                 "examples[1].prompt[1]: token id -1 outside the vocabulary [0, 512)", NULL);
    ex.tokens[6] = 511;
    ex.tokens[8] = 511;
    assert_int_equal(zmix_examples_check(&model, &ex, &err), 0);
    /* The context rule is the scorer's: prompt + target - 1 tokens are read. Example 0 (3 + 2)
     * fits a context of 4 exactly and is refused by one of 3. */
    model.cfg.max_seq_len = 4;
    assert_int_equal(zmix_examples_check(&model, &ex, &err), 0);
    model.cfg.max_seq_len = 3;
    expect_error(zmix_examples_check(&model, &ex, &err), &err, ZMIX_ELIMIT,
                 "examples[0]: 5 tokens (prompt 3 + target 2): the model reads 4 of them (all but "
                 "the last target token), over its context of 3",
                 NULL);
    assert_int_equal(zmix_examples_check_vocab_context(&ex, 512, 4, &err), 0);
    expect_error(zmix_examples_check_vocab_context(&ex, 511, 4, &err), &err, ZMIX_ERANGE,
                 "examples[1].prompt[1]: token id 511 outside the vocabulary [0, 511)", NULL);
    model.cfg.max_seq_len = 5;
    ex.items[1].n_target = 0;
    expect_error(zmix_examples_check(&model, &ex, &err), &err, ZMIX_EINVAL,
                 "examples[1].target is empty", NULL);
    zmix_examples_free(&ex);
    zmix_examples empty = {0};
    expect_error(zmix_examples_check(&model, &empty, &err), &err, ZMIX_EINVAL, "empty", NULL);

    zmix_example bad = {p0, 0, t0, 2, 0, NULL, NULL, 0};
    expect_error(zmix_examples_copy(&bad, 1, &ex, &err), &err, ZMIX_EINVAL,
                 "examples[0].prompt is empty", NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_load_good, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_choices, setup, teardown),
        cmocka_unit_test(test_parse_as_written),
        cmocka_unit_test(test_check_against_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
