/*
 * zmixd's config file reader ("name = value" lines): any bytes either fail with a message
 * or give settings that config_finish accepts or refuses with a message.
 */
#include "fuzz_common.h"
#include "daemon/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_temp_path("-zmixd.conf");
    fuzz_write_file(path, data, size);
    server_config cfg;
    config_default(&cfg);
    zmix_error err = {0};
    if (config_load_file(&cfg, path, &err) != 0)
        FUZZ_CHECK(err.code < 0 && err.msg[0]);
    else if (config_finish(&cfg, &err) != 0)
        FUZZ_CHECK(err.code < 0 && err.msg[0]);
    config_free(&cfg);
    return 0;
}
