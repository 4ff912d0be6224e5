/*
 * The conventions every zmix client shares (the CLI, this library and the Python client):
 * the daemon's address is the one given, else $ZMIX_ADDR, else the daemon's default socket;
 * the token is the one given, else the contents of the file $ZMIX_TOKEN_FILE names.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/file.h"
#include "zmix/client.h"

int zmix_client_resolve_address(const char *address, char *out, size_t cap, zmix_error *err)
{
    const char *a = address && *address ? address : getenv("ZMIX_ADDR");
    if (a && *a) {
        size_t n = strlen(a);
        if (n >= cap)
            return zmix_error_set(err, ZMIX_ERANGE, "address '%s' longer than %zu bytes", a,
                                  cap ? cap - 1 : 0);
        memcpy(out, a, n + 1);
        return 0;
    }
    if (zmix_client_default_address(out, cap) != 0)
        return zmix_error_set(err, ZMIX_ERANGE, "the default address is longer than %zu bytes",
                              cap ? cap - 1 : 0);
    return 0;
}

int zmix_client_connect_env(const char *address, const zmix_client_opts *opts, zmix_client **out,
                            zmix_error *err)
{
    *out = NULL;
    char addr[512];
    int rc = zmix_client_resolve_address(address, addr, sizeof addr, err);
    if (rc) return rc;
    zmix_client_opts o;
    if (opts)
        o = *opts;
    else
        zmix_client_opts_default(&o);
    char token[FS_TOKEN_FILE_MAX];
    const char *token_file = getenv("ZMIX_TOKEN_FILE");
    if (!o.token && token_file && *token_file) {
        rc = fs_read_token_file(token_file, token, sizeof token, NULL, err);
        if (rc) {
            zmix_error_prefix(err, "ZMIX_TOKEN_FILE");
            return rc;
        }
        o.token = token;
    }
    return zmix_client_connect(addr, &o, out, err);
}
