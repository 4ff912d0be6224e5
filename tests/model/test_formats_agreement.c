/* The two stories260K files hold the same model: through the reference forward pass they must
 * give the same logits (to float rounding) and the README's greedy continuations. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_formats_fixtures.h"
#include "zmix/model.h"

static zmix_model *load(const char *path)
{
    zmix_model *m = NULL;
    zmix_error err = {0};
    if (zmix_model_load(path, &m, &err)) fail_msg("%s", err.msg);
    return m;
}

static void test_same_logits(void **unused)
{
    char dir[1024], bin[1100];
    if (!stories_dir(dir, sizeof dir)) skip();
    snprintf(bin, sizeof bin, "%s/stories260K.bin", dir);
    zmix_model *hf = load(dir), *l2 = load(bin);
    const int n = 24, vocab = 512;
    int32_t tokens[24];
    for (int i = 0; i < n; i++) tokens[i] = i ? (int32_t)((i * 97 + 13) % vocab) : 1;
    float *a = malloc((size_t)n * vocab * sizeof *a), *b = malloc((size_t)n * vocab * sizeof *b);
    zmix_error err = {0};
    assert_int_equal(zmix_model_forward_logits(hf, tokens, n, a, &err), 0);
    assert_int_equal(zmix_model_forward_logits(l2, tokens, n, b, &err), 0);
    double worst = 0, scale = 0;
    for (int i = 0; i < n * vocab; i++) {
        assert_true(isfinite(a[i]) && isfinite(b[i]));
        worst = fmax(worst, fabs((double)a[i] - (double)b[i]));
        scale = fmax(scale, fabs((double)a[i]));
    }
    print_message("max |logit HF - logit llama2.c| = %.3g (max |logit| %.3g)\n", worst, scale);
    assert_true(scale > 1);
    assert_true(worst <= 1e-4 * scale);
    free(a);
    free(b);
    zmix_model_free(hf);
    zmix_model_free(l2);
}

static void greedy(const zmix_model *m, const int32_t *prompt, int n_prompt, int n_new,
                   int32_t *out)
{
    int32_t seq[64];
    memcpy(seq, prompt, (size_t)n_prompt * sizeof *seq);
    float *logits = malloc(64 * 512 * sizeof *logits);
    zmix_error err = {0};
    for (int t = 0; t < n_new; t++) {
        int len = n_prompt + t;
        assert_int_equal(zmix_model_forward_logits(m, seq, len, logits, &err), 0);
        const float *last = logits + (size_t)(len - 1) * 512;
        int best = 0;
        for (int v = 1; v < 512; v++)
            if (last[v] > last[best]) best = v;
        seq[len] = out[t] = best;
    }
    free(logits);
}

static void test_readme_greedy_continuation(void **unused)
{
    char dir[1024], bin[1100];
    if (!stories_dir(dir, sizeof dir)) skip();
    snprintf(bin, sizeof bin, "%s/stories260K.bin", dir);
    const int32_t prompt[] = {1, 403, 407};
    const int32_t expect[12] = {405, 292, 303, 416, 377, 482, 482, 482, 466, 466, 288, 292};
    const char *paths[2] = {dir, bin};
    for (int i = 0; i < 2; i++) {
        zmix_model *m = load(paths[i]);
        int32_t got[12];
        greedy(m, prompt, 3, 12, got);
        assert_memory_equal(got, expect, sizeof expect);
        zmix_model_free(m);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_logits),
        cmocka_unit_test(test_readme_greedy_continuation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
