/* The SVD factor cache: round trip, and detection of every kind of bad file (absent, flipped
 * byte, truncated, another model's or another adapt set's file under this name). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test_formats_fixtures.h"
#include "util/pcg.h"

typedef struct ctx {
    char dir[512];
    char path[700]; /* the cache file for (model, mlp) */
    zmix_model model;
    zmix_layer layers[2];
    zmix_adapted *list;
    int n;
    size_t z_total;
    zmix_factors *f;
} ctx;

static void random_factors(const zmix_adapted *list, int n, zmix_factors *f, uint64_t seed)
{
    pcg32 rng;
    pcg32_seed(&rng, seed, 1);
    for (int m = 0; m < n; m++) {
        const zmix_adapted *a = &list[m];
        f[m].rows = a->rows, f[m].cols = a->cols, f[m].rank = a->rank;
        f[m].U = malloc((size_t)a->rows * (size_t)a->rank * sizeof(float));
        f[m].S = malloc((size_t)a->rank * sizeof(float));
        f[m].Vt = malloc((size_t)a->rank * (size_t)a->cols * sizeof(float));
        for (int i = 0; i < a->rows * a->rank; i++) f[m].U[i] = (float)pcg32_normal(&rng);
        for (int i = 0; i < a->rank * a->cols; i++) f[m].Vt[i] = (float)pcg32_normal(&rng);
        for (int i = 0; i < a->rank; i++) f[m].S[i] = (float)(a->rank - i) * 0.5f;
    }
}

static int setup(void **state)
{
    ctx *c = calloc(1, sizeof *c);
    testutil_mkdtemp(c->dir, sizeof c->dir);
    zmix_model_config *cfg = &c->model.cfg;
    cfg->dim = 8, cfg->hidden_dim = 12, cfg->n_layers = 2, cfg->n_heads = 2;
    cfg->n_kv_heads = 1, cfg->head_dim = 4, cfg->vocab_size = 16, cfg->max_seq_len = 32;
    c->model.layers = c->layers;
    snprintf(c->model.fingerprint, sizeof c->model.fingerprint, "%s",
             "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
    snprintf(c->path, sizeof c->path, "%s/factors-0123456789abcdef-mlp.safetensors", c->dir);
    zmix_error err = {0};
    assert_int_equal(
        zmix_adapted_list(&c->model, ZMIX_ADAPT_MLP, &c->list, &c->n, &c->z_total, &err), 0);
    c->f = calloc((size_t)c->n, sizeof *c->f);
    random_factors(c->list, c->n, c->f, 42);
    *state = c;
    return 0;
}

static int teardown(void **state)
{
    ctx *c = *state;
    zmix_factors_free(c->f, c->n);
    free(c->f);
    free(c->list);
    testutil_rmrf(c->dir);
    free(c);
    return 0;
}

static void save(ctx *c)
{
    zmix_error err = {0};
    int rc =
        zmix_factor_cache_save(c->dir, &c->model, ZMIX_ADAPT_MLP, c->list, c->n, c->f, 0, &err);
    if (rc) fail_msg("save: %s", err.msg);
}

static void expect_load_error(ctx *c, int code, const char *n1)
{
    zmix_factors *got = calloc((size_t)c->n, sizeof *got);
    got[0].U = (float *)1; /* must be cleared, not left dangling */
    zmix_error err = {0};
    expect_error(zmix_factor_cache_load(c->dir, &c->model, ZMIX_ADAPT_MLP, ZMIX_DT_F32, c->list,
                                        c->n, got, &err),
                 &err, code, n1, NULL);
    for (int m = 0; m < c->n; m++) assert_true(!got[m].U && !got[m].S && !got[m].Vt);
    free(got);
}

static void test_round_trip(void **state)
{
    ctx *c = *state;
    expect_load_error(c, ZMIX_ENOTFOUND, c->path);
    save(c);
    struct stat st;
    assert_int_equal(stat(c->path, &st), 0);
    zmix_factors *got = calloc((size_t)c->n, sizeof *got);
    zmix_error err = {0};
    assert_int_equal(zmix_factor_cache_load(c->dir, &c->model, ZMIX_ADAPT_MLP, ZMIX_DT_F32, c->list,
                                            c->n, got, &err),
                     0);
    for (int m = 0; m < c->n; m++) {
        const zmix_adapted *a = &c->list[m];
        assert_int_equal(got[m].rows, a->rows);
        assert_int_equal(got[m].cols, a->cols);
        assert_int_equal(got[m].rank, a->rank);
        assert_memory_equal(got[m].U, c->f[m].U, (size_t)a->rows * (size_t)a->rank * sizeof(float));
        assert_memory_equal(got[m].S, c->f[m].S, (size_t)a->rank * sizeof(float));
        assert_memory_equal(got[m].Vt, c->f[m].Vt,
                            (size_t)a->rank * (size_t)a->cols * sizeof(float));
    }
    zmix_factors_free(got, c->n);
    free(got);
}

static void flip_byte(const char *path, long offset_from_end)
{
    size_t len;
    char *data = testutil_read_file(path, &len);
    data[len - (size_t)offset_from_end] ^= 0x01;
    testutil_write_file(path, data, len);
    free(data);
}

static void test_corrupt_data_byte(void **state)
{
    ctx *c = *state;
    save(c);
    flip_byte(c->path, 1000); /* inside some U or Vt: only the checksum can tell */
    expect_load_error(c, ZMIX_EFORMAT, "checksum");
}

static void test_corrupt_header_byte(void **state)
{
    ctx *c = *state;
    save(c);
    size_t len;
    char *data = testutil_read_file(c->path, &len);
    char *at = strstr(data + 8, "\"dtype\"");
    assert_non_null(at);
    at[1] = 'D'; /* "Dtype": the tensor entry loses its dtype */
    testutil_write_file(c->path, data, len);
    free(data);
    expect_load_error(c, ZMIX_EFORMAT, "dtype");
}

static void test_truncated(void **state)
{
    ctx *c = *state;
    save(c);
    size_t len;
    char *data = testutil_read_file(c->path, &len);
    testutil_write_file(c->path, data, len - 4);
    expect_load_error(c, ZMIX_EFORMAT, "outside the data area");
    testutil_write_file(c->path, data, 5);
    expect_load_error(c, ZMIX_EFORMAT, "too short");
    free(data);
}

static void test_other_model_same_short_name(void **state)
{
    ctx *c = *state;
    save(c);
    /* A different model whose fingerprint shares the 16 digits of the file name. */
    c->model.fingerprint[63] = '0';
    expect_load_error(c, ZMIX_EFORMAT, "metadata fingerprint");
}

static void test_swapped_adapt_set(void **state)
{
    ctx *c = *state;
    /* The attention cache of the same model, renamed to the MLP cache's name. */
    zmix_adapted *attn;
    int n_attn;
    size_t z_attn;
    zmix_error err = {0};
    assert_int_equal(zmix_adapted_list(&c->model, ZMIX_ADAPT_ATTN, &attn, &n_attn, &z_attn, &err),
                     0);
    zmix_factors *fa = calloc((size_t)n_attn, sizeof *fa);
    random_factors(attn, n_attn, fa, 7);
    assert_int_equal(
        zmix_factor_cache_save(c->dir, &c->model, ZMIX_ADAPT_ATTN, attn, n_attn, fa, 0, &err), 0);
    char attn_path[700];
    snprintf(attn_path, sizeof attn_path, "%s/factors-0123456789abcdef-attn.safetensors", c->dir);
    assert_int_equal(rename(attn_path, c->path), 0);
    expect_load_error(c, ZMIX_EFORMAT, "metadata adapt_set");
    zmix_factors_free(fa, n_attn);
    free(fa);
    free(attn);
}

static void test_save_rejects_wrong_shapes(void **state)
{
    ctx *c = *state;
    c->f[3].rank = 5;
    zmix_error err = {0};
    expect_error(
        zmix_factor_cache_save(c->dir, &c->model, ZMIX_ADAPT_MLP, c->list, c->n, c->f, 0, &err),
        &err, ZMIX_EINVAL, "model.layers.1.mlp.gate_proj.weight", NULL);
    c->f[3].rank = 8;
    struct stat st;
    assert_int_not_equal(stat(c->path, &st), 0);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_round_trip),
        T(test_corrupt_data_byte),
        T(test_corrupt_header_byte),
        T(test_truncated),
        T(test_other_model_same_short_name),
        T(test_swapped_adapt_set),
        T(test_save_rejects_wrong_shapes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
