/* Builders of small model files for the format tests: every bad file a test needs is made at
 * test time from synthetic tensors in a fresh temporary directory. */
#ifndef ZMIX_TEST_FORMATS_FIXTURES_H
#define ZMIX_TEST_FORMATS_FIXTURES_H

#include <stddef.h>
#include <stdint.h>

#include "model_internal.h"
#include "testutil.h"

/* A safetensors file from a raw header string and data bytes, with the header length field
 * set to header_len_field (pass (uint64_t)-1 for the true length). */
void write_raw_safetensors(const char *path, const char *header, uint64_t header_len_field,
                           const void *data, size_t data_len);

/* One tensor of a test model, in any of the three dtypes. */
typedef struct fixture_tensor {
    char name[96];
    const char *dtype; /* "F32", "F16", "BF16" */
    int ndim;
    int64_t shape[2];
    float *values; /* numel floats (what the tensor holds after conversion) */
    size_t numel;
} fixture_tensor;

/* A tiny HF model: config fields and its tensor list (names, shapes from the config). */
typedef struct fixture_model {
    char model_type[16];
    int dim, hidden, layers, heads, kv_heads, vocab, tied, with_lm_head;
    fixture_tensor *t;
    int n;
} fixture_model;

/* Builds the tensors of a model (random values from seed, exactly representable in the
 * dtype so that conversion can be checked bit for bit). */
void fixture_model_init(fixture_model *m, const char *model_type, int tied, int with_lm_head,
                        const char *dtype, uint64_t seed);
void fixture_model_free(fixture_model *m);
fixture_tensor *fixture_find(fixture_model *m, const char *name);
/* Removes a tensor from the list. */
void fixture_drop(fixture_model *m, const char *name);

/* config.json text for m, with extra raw JSON members appended (may be ""), and a
 * model.safetensors (or, with n_shards > 1, shards and an index) in dir. */
void fixture_write_config(const fixture_model *m, const char *dir, const char *extra);
void fixture_write_weights(const fixture_model *m, const char *dir, int n_shards);

/* A llama2.c .bin of the given header with deterministic random weights; returns the number
 * of floats written after the header. Writes freq_cis too. */
size_t fixture_write_llama2c(const char *path, const int32_t header[7], uint64_t seed);

/* The state of a test run with fixture_ctx_setup/teardown: a fresh temporary directory
 * (removed afterwards) and a fixture model (freed afterwards). */
typedef struct fixture_ctx {
    char dir[512];
    fixture_model m;
} fixture_ctx;
int fixture_ctx_setup(void **state);
int fixture_ctx_teardown(void **state);

/* Fills dir with the shared stories260K directory; returns 0 when it is absent (tests skip). */
int stories_dir(char *dir, size_t size);

/* Fails unless rc == code == err->code and err->msg contains needle1 and needle2 (either may
 * be NULL). */
#define expect_error(...) expect_error_at(__FILE__, __LINE__, __VA_ARGS__)
void expect_error_at(const char *file, int line, int rc, const zmix_error *err, int code,
                     const char *needle1, const char *needle2);

#endif
