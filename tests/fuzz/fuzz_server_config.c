/*
 * zmixd's config file reader ("name = value" lines): any bytes either fail with a message
 * or give settings that config_finish accepts or refuses with a message. The same bytes read
 * as a tenants file either fail with a message or give well-formed tenants.
 */
#include "fuzz_common.h"
#include "daemon/config.h"
#include "daemon/tenants.h"

#include <string.h>

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

    tenant_table t;
    if (tenants_parse((const char *)data, size, "fuzz", 1, 1, &t, &err) != 0) {
        FUZZ_CHECK(err.code < 0 && err.msg[0] && t.n == 0);
    } else {
        for (int i = 0; i < t.n; i++) {
            FUZZ_CHECK(tenant_name_check(t.v[i].name, NULL) == 0);
            FUZZ_CHECK(t.v[i].token_len >= TENANT_TOKEN_MIN &&
                       t.v[i].token_len <= TENANT_TOKEN_MAX);
            FUZZ_CHECK(tenants_match(&t, t.v[i].token, t.v[i].token_len) == &t.v[i]);
        }
        tenants_free(&t);
    }
    return 0;
}
