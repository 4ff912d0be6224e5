/*
 * The expert loader: a safetensors file that must hold one float vector of exactly the rank
 * of every adapted matrix of a (fixed, two-layer) model and nothing else. Any bytes either
 * fail with a message or give a complete, finite z vector.
 */
#include <math.h>
#include <string.h>

#include "fuzz_common.h"
#include "fuzz_experts_list.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    zmix_adapted list[FUZZ_EXPERT_MATRICES];
    size_t z_total = fuzz_experts_list(list);
    const char *path = fuzz_temp_path("-expert.safetensors");
    fuzz_write_file(path, data, size);
    zmix_expert ex;
    zmix_error err = {0};
    if (zmix_expert_load(path, list, FUZZ_EXPERT_MATRICES, z_total, &ex, &err) != 0) {
        FUZZ_CHECK(err.code < 0 && err.msg[0]);
        return 0;
    }
    FUZZ_CHECK(ex.name[0] != '\0');
    for (size_t i = 0; i < z_total; i++) FUZZ_CHECK(isfinite(ex.z[i]));
    free(ex.z);
    return 0;
}
