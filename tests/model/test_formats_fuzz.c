/* Mutation fuzzing of the loaders: random byte flips, truncations and splices of a valid tiny
 * model in both formats, of an expert file and of a factor cache. The only requirement is
 * that every load either succeeds or fails with an error message, never crashes or reads out
 * of bounds (this test earns its keep under AddressSanitizer). Deterministic seeds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_formats_fixtures.h"
#include "util/pcg.h"
#include "zmix/model.h"

#define ROUNDS 300

/* One mutation of orig into buf (same capacity + 64); returns the new length. */
static size_t mutate(pcg32 *rng, const char *orig, size_t len, char *buf, size_t header_hint)
{
    memcpy(buf, orig, len);
    /* Bias the edits towards the header, where the structure lives. */
    size_t span = pcg32_bounded(rng, 4) ? header_hint : len;
    switch (pcg32_bounded(rng, 4)) {
    case 0: { /* flip a few bytes */
        int k = 1 + (int)pcg32_bounded(rng, 4);
        for (int i = 0; i < k; i++)
            buf[pcg32_bounded(rng, (uint32_t)span)] ^= (char)(1 + pcg32_bounded(rng, 255));
        return len;
    }
    case 1: /* truncate */ return pcg32_bounded(rng, (uint32_t)len);
    case 2: { /* overwrite a byte with a JSON-significant character */
        static const char chars[] = "{}[]\",:0123456789-e. ";
        buf[pcg32_bounded(rng, (uint32_t)span)] = chars[pcg32_bounded(rng, sizeof chars - 1)];
        return len;
    }
    default: { /* duplicate a chunk (shifts everything after it) */
        size_t at = pcg32_bounded(rng, (uint32_t)span), n = 1 + pcg32_bounded(rng, 48);
        if (at + n > len) n = len - at;
        memmove(buf + at + n, buf + at, len - at);
        return len + n;
    }
    }
}

typedef struct ctx {
    char dir[512];
} ctx;

static int setup(void **state)
{
    ctx *c = calloc(1, sizeof *c);
    testutil_mkdtemp(c->dir, sizeof c->dir);
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

static void fuzz_model_file(const char *target, const char *load_path, uint64_t seed,
                            size_t header_hint, int *n_ok)
{
    size_t len;
    char *orig = testutil_read_file(target, &len);
    char *buf = malloc(len + 64);
    pcg32 rng;
    pcg32_seed(&rng, seed, 9);
    if (header_hint > len) header_hint = len;
    for (int r = 0; r < ROUNDS; r++) {
        size_t n = mutate(&rng, orig, len, buf, header_hint);
        testutil_write_file(target, buf, n);
        zmix_model *m = NULL;
        zmix_error err = {0};
        int rc = zmix_model_load(load_path, &m, &err);
        if (rc == 0) {
            (*n_ok)++;
            zmix_model_free(m);
        } else {
            assert_null(m);
            assert_true(err.msg[0] != '\0');
        }
    }
    testutil_write_file(target, orig, len);
    free(orig);
    free(buf);
}

static void test_fuzz_hf(void **state)
{
    ctx *c = *state;
    fixture_model m;
    fixture_model_init(&m, "qwen2", 1, 1, "BF16", 3);
    fixture_write_config(&m, c->dir, "");
    fixture_write_weights(&m, c->dir, 1);
    char st[700], cfg[700];
    snprintf(st, sizeof st, "%s/model.safetensors", c->dir);
    snprintf(cfg, sizeof cfg, "%s/config.json", c->dir);
    int ok = 0;
    fuzz_model_file(st, c->dir, 1, 3000, &ok);
    fuzz_model_file(cfg, c->dir, 2, 4096, &ok);
    print_message("HF: %d of %d mutants still loaded\n", ok, 2 * ROUNDS);
    fixture_model_free(&m);
}

static void test_fuzz_llama2c(void **state)
{
    ctx *c = *state;
    char path[700];
    snprintf(path, sizeof path, "%s/m.bin", c->dir);
    int32_t h[7] = {8, 12, 2, 2, 1, -16, 10};
    fixture_write_llama2c(path, h, 5);
    int ok = 0;
    fuzz_model_file(path, path, 3, 28, &ok);
    print_message("llama2.c: %d of %d mutants still loaded\n", ok, ROUNDS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_fuzz_hf, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fuzz_llama2c, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
