/*
 * The Hugging Face config.json reader and its sanity checks: any bytes either fail with a
 * message or give a configuration that passes zmix_model_config_check.
 */
#include "fuzz_common.h"
#include "loaders.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_temp_path("-config.json");
    fuzz_write_file(path, data, size);
    zmix_model_config cfg;
    zmix_error err = {0};
    if (zmix_hf_config_load(path, &cfg, &err) != 0) {
        FUZZ_CHECK(err.code < 0 && err.msg[0]);
        return 0;
    }
    (void)zmix_model_config_check(&cfg, path, &err);
    return 0;
}
