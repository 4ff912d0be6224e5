/*
 * The few-shot examples JSON reader ({"examples":[{"prompt":[ids],"target":[ids]}...]}):
 * any bytes either fail with a message or give examples whose items point into the owned
 * token array, with non-empty prompts and targets.
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
    for (int i = 0; i < ex.n; i++) {
        const zmix_example *e = &ex.items[i];
        FUZZ_CHECK(e->n_prompt >= 1 && e->n_target >= 1);
        FUZZ_CHECK(e->prompt >= ex.tokens && e->prompt + e->n_prompt <= ex.tokens + ex.n_tokens);
        FUZZ_CHECK(e->target >= ex.tokens && e->target + e->n_target <= ex.tokens + ex.n_tokens);
        total += (size_t)e->n_prompt + (size_t)e->n_target;
    }
    FUZZ_CHECK(total == ex.n_tokens);
    zmix_examples copy;
    FUZZ_CHECK(zmix_examples_copy(ex.items, ex.n, &copy, &err) == 0);
    FUZZ_CHECK(copy.n_tokens == ex.n_tokens);
    zmix_examples_free(&copy);
    zmix_examples_free(&ex);
    return 0;
}
