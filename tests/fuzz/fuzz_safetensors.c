/*
 * The safetensors reader (header JSON, dtypes, shapes, data offsets) on arbitrary files:
 * open either fails with a message or yields tensors whose byte ranges lie inside the file,
 * and every tensor converts to float32 without reading outside them.
 */
#include <string.h>

#include "fuzz_common.h"
#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_temp_path(".safetensors");
    fuzz_write_file(path, data, size);
    zmix_st_file f;
    zmix_error err = {0};
    if (zmix_st_open(path, &f, &err) != 0) {
        FUZZ_CHECK(err.code < 0 && err.msg[0]);
        return 0;
    }
    for (int i = 0; i < f.n_tensors; i++) {
        const zmix_st_tensor *t = &f.tensors[i];
        FUZZ_CHECK(t->begin <= t->end && t->end <= f.data_len);
        FUZZ_CHECK(zmix_st_find(&f, t->name) != NULL);
        const float *v;
        float *copy = NULL;
        if (zmix_st_tensor_f32(&f, t, &v, &copy, &err) == 0) {
            volatile float sink = 0;
            for (size_t k = 0; k < t->numel; k++) sink += v[k];
            (void)sink;
            free(copy);
        }
    }
    for (int i = 0; i < f.n_meta; i++) FUZZ_CHECK(zmix_st_meta(&f, f.meta_keys[i]) != NULL);
    zmix_st_close(&f);
    return 0;
}
