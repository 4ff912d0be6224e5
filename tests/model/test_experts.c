/* Expert files: round trip, naming, and every way an expert can disagree with the model. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"
#include "test_formats_fixtures.h"

typedef struct ctx {
    char dir[512];
    char path[600];
    zmix_model model; /* shape only: adapted-list enumeration reads no weights */
    zmix_layer layers[2];
    zmix_adapted *mlp, *attn;
    int n_mlp, n_attn;
    size_t z_mlp, z_attn;
    float *z;
} ctx;

static int setup(void **state)
{
    ctx *c = calloc(1, sizeof *c);
    testutil_mkdtemp(c->dir, sizeof c->dir);
    snprintf(c->path, sizeof c->path, "%s/math.safetensors", c->dir);
    zmix_model_config *cfg = &c->model.cfg;
    cfg->dim = 8, cfg->hidden_dim = 12, cfg->n_layers = 2, cfg->n_heads = 2;
    cfg->n_kv_heads = 1, cfg->head_dim = 4, cfg->vocab_size = 16, cfg->max_seq_len = 32;
    c->model.layers = c->layers;
    zmix_error err = {0};
    assert_int_equal(
        zmix_adapted_list(&c->model, ZMIX_ADAPT_MLP, &c->mlp, &c->n_mlp, &c->z_mlp, &err), 0);
    assert_int_equal(
        zmix_adapted_list(&c->model, ZMIX_ADAPT_ATTN, &c->attn, &c->n_attn, &c->z_attn, &err), 0);
    c->z = malloc(c->z_mlp * sizeof *c->z);
    for (size_t i = 0; i < c->z_mlp; i++) c->z[i] = 1.0f + 0.001f * (float)i;
    *state = c;
    return 0;
}

static int teardown(void **state)
{
    ctx *c = *state;
    free(c->mlp);
    free(c->attn);
    free(c->z);
    testutil_rmrf(c->dir);
    free(c);
    return 0;
}

static void test_round_trip_and_names(void **state)
{
    ctx *c = *state;
    zmix_error err = {0};
    assert_int_equal(c->n_mlp, 6);
    assert_int_equal(c->z_mlp, 6 * 8);
    assert_int_equal(zmix_expert_save(c->path, c->mlp, c->n_mlp, c->z, NULL, NULL, 0, &err), 0);
    zmix_expert e;
    assert_int_equal(zmix_expert_load(c->path, c->mlp, c->n_mlp, c->z_mlp, &e, &err), 0);
    assert_string_equal(e.name, "math");
    assert_memory_equal(e.z, c->z, c->z_mlp * sizeof(float));
    free(e.z);

    /* The file holds one vector per matrix under its HF name. */
    zmix_st_file f;
    assert_int_equal(zmix_st_open(c->path, &f, &err), 0);
    assert_int_equal(f.n_tensors, 6);
    const zmix_st_tensor *t = zmix_st_find(&f, "model.layers.1.mlp.down_proj.weight");
    assert_non_null(t);
    assert_int_equal(t->shape[0], 8);
    zmix_st_close(&f);

    const char *keys[] = {"name"}, *values[] = {"arithmetic"};
    assert_int_equal(zmix_expert_save(c->path, c->mlp, c->n_mlp, c->z, keys, values, 1, &err), 0);
    assert_int_equal(zmix_expert_load(c->path, c->mlp, c->n_mlp, c->z_mlp, &e, &err), 0);
    assert_string_equal(e.name, "arithmetic");
    free(e.z);
}

static void expect_load_error(ctx *c, int code, const char *n1, const char *n2)
{
    zmix_expert e = {.z = (float *)1};
    zmix_error err = {0};
    expect_error(zmix_expert_load(c->path, c->mlp, c->n_mlp, c->z_mlp, &e, &err), &err, code, n1,
                 n2);
    assert_non_null(strstr(err.msg, c->path));
    assert_null(e.z);
}

static void test_rejects_mismatches(void **state)
{
    ctx *c = *state;
    zmix_error err = {0};
    /* Saved for attention matrices, loaded for MLP ones. */
    float *za = calloc(c->z_attn, sizeof *za);
    for (size_t i = 0; i < c->z_attn; i++) za[i] = 1;
    assert_int_equal(zmix_expert_save(c->path, c->attn, c->n_attn, za, NULL, NULL, 0, &err), 0);
    expect_load_error(c, ZMIX_ENOTFOUND, "key 'model.layers.0.mlp.gate_proj.weight' is missing",
                      NULL);
    free(za);

    /* Missing key: the last MLP matrix dropped. */
    assert_int_equal(zmix_expert_save(c->path, c->mlp, c->n_mlp - 1, c->z, NULL, NULL, 0, &err), 0);
    expect_load_error(c, ZMIX_ENOTFOUND, "'model.layers.1.mlp.down_proj.weight' is missing", NULL);

    /* Extra key. */
    zmix_adapted extra[7];
    memcpy(extra, c->mlp, 6 * sizeof *extra);
    extra[6] = c->mlp[0];
    snprintf(extra[6].name, sizeof extra[6].name, "model.layers.9.mlp.up_proj.weight");
    assert_int_equal(zmix_expert_save(c->path, extra, 7, c->z, NULL, NULL, 0, &err), 0);
    expect_load_error(c, ZMIX_EFORMAT, "'model.layers.9.mlp.up_proj.weight' is not an adapted",
                      NULL);

    /* Wrong length. */
    memcpy(extra, c->mlp, 6 * sizeof *extra);
    extra[2].rank = 7;
    assert_int_equal(zmix_expert_save(c->path, extra, 6, c->z, NULL, NULL, 0, &err), 0);
    expect_load_error(c, ZMIX_EFORMAT, "'model.layers.0.mlp.down_proj.weight': 7 values",
                      "expected a vector of 8");

    /* NaN: refused on save, and on load when written by someone else. */
    c->z[9] = NAN;
    expect_error(zmix_expert_save(c->path, c->mlp, c->n_mlp, c->z, NULL, NULL, 0, &err), &err,
                 ZMIX_ENUMERIC, "model.layers.0.mlp.up_proj.weight", "element 1 is NaN");
    zmix_st_out t[6];
    for (int m = 0; m < 6; m++)
        t[m] = (zmix_st_out){c->mlp[m].name, 1,   {c->mlp[m].rank}, c->z + c->mlp[m].z_offset,
                             ZMIX_ST_F32,    NULL};
    assert_int_equal(zmix_st_write(c->path, t, 6, NULL, NULL, 0, &err), 0);
    expect_load_error(c, ZMIX_ENUMERIC, "'model.layers.0.mlp.up_proj.weight'", "element 1 is NaN");
    c->z[9] = 1;

    /* Wrong dtype (F16) and a malformed file. */
    char header[4096];
    int len = snprintf(header, sizeof header, "{");
    for (int m = 0; m < 6; m++)
        len += snprintf(header + len, sizeof header - (size_t)len,
                        "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[8],\"data_offsets\":[%d,%d]}",
                        m ? "," : "", c->mlp[m].name, m == 4 ? "F16" : "F32", m * 32,
                        m * 32 + (m == 4 ? 16 : 32));
    snprintf(header + len, sizeof header - (size_t)len, "}");
    uint8_t zeros[6 * 32] = {0};
    write_raw_safetensors(c->path, header, (uint64_t)-1, zeros, sizeof zeros);
    expect_load_error(c, ZMIX_EFORMAT, "'model.layers.1.mlp.up_proj.weight': dtype F16", NULL);
    write_raw_safetensors(c->path, header, 99999, zeros, 10);
    expect_load_error(c, ZMIX_EFORMAT, "header length 99999", NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip_and_names, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rejects_mismatches, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
