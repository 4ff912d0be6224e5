/*
 * The few-shot examples JSON reader ({"examples":[{"prompt":[ids],"target":[ids]}...]}, or
 * {"prompt", "choices", "answer"} for multiple choice): any bytes either fail with a message or
 * give examples of one kind whose items point into the owned token array, with non-empty
 * prompts and targets (or 2 or more non-empty choices and an answer among them).
 */
#include "fuzz_common.h"
#include "zmix/model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_temp_path("-examples.json");
    fuzz_write_file(path, data, size);
    zmix_examples ex;
    zmix_error err = {0};
    if (zmix_examples_load_json(path, &ex, &err) != 0) {
        FUZZ_CHECK(err.code < 0 && err.msg[0]);
        return 0;
    }
    FUZZ_CHECK(ex.n >= 1);
    size_t total = 0;
    const int32_t *end = ex.tokens + ex.n_tokens;
    for (int i = 0; i < ex.n; i++) {
        const zmix_example *e = &ex.items[i];
        FUZZ_CHECK(e->n_prompt >= 1 && (e->n_target >= 1) == (e->n_choices == 0));
        FUZZ_CHECK((e->n_choices > 0) == (ex.items[0].n_choices > 0));
        FUZZ_CHECK(e->prompt >= ex.tokens && e->prompt + e->n_prompt <= end);
        total += (size_t)e->n_prompt + (size_t)e->n_target;
        if (!e->n_choices) {
            FUZZ_CHECK(e->target >= ex.tokens && e->target + e->n_target <= end);
            continue;
        }
        FUZZ_CHECK(e->n_choices >= 2 && e->n_choices <= ZMIX_MAX_CHOICES);
        FUZZ_CHECK(e->answer >= 0 && e->answer < e->n_choices);
        FUZZ_CHECK(e->choice_len >= ex.tokens && e->choice_len + e->n_choices <= end);
        size_t n = 0;
        for (int c = 0; c < e->n_choices; c++) {
            FUZZ_CHECK(e->choice_len[c] >= 1);
            n += (size_t)e->choice_len[c];
        }
        FUZZ_CHECK(e->choices >= ex.tokens && e->choices + n <= end);
        total += n + (size_t)e->n_choices; /* the lengths live in the block too */
    }
    FUZZ_CHECK(total == ex.n_tokens);
    zmix_examples copy;
    FUZZ_CHECK(zmix_examples_copy(ex.items, ex.n, &copy, &err) == 0);
    FUZZ_CHECK(copy.n_tokens == ex.n_tokens);
    zmix_examples_free(&copy);
    zmix_examples_free(&ex);
    return 0;
}
