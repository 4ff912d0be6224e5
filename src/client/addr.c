/*
 * Daemon addresses: "unix:PATH" or "tcp:HOST:PORT", the same spelling zmixd --listen takes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "zmix/client.h"

static int parse_port(const char *spec, const char *p, zmix_client_addr *out, zmix_error *err)
{
    if (!*p) return zmix_error_set(err, ZMIX_EINVAL, "address '%s': port is missing", spec);
    long v = 0;
    for (const char *q = p; *q; q++) {
        if (*q < '0' || *q > '9' || v > 65535)
            return zmix_error_set(err, ZMIX_EINVAL,
                                  "address '%s': port '%s' is not a number in 1..65535", spec, p);
        v = v * 10 + (*q - '0');
    }
    if (v < 1 || v > 65535)
        return zmix_error_set(err, ZMIX_EINVAL,
                              "address '%s': port '%s' is not a number in 1..65535", spec, p);
    snprintf(out->port, sizeof out->port, "%ld", v);
    return 0;
}

static int parse_tcp(const char *spec, const char *rest, zmix_client_addr *out, zmix_error *err)
{
    const char *host = rest, *host_end, *port;
    if (rest[0] == '[') { /* [v6]:port */
        host = rest + 1;
        host_end = strchr(host, ']');
        if (!host_end || host_end[1] != ':')
            return zmix_error_set(err, ZMIX_EINVAL, "address '%s': expected tcp:[IPV6]:PORT", spec);
        port = host_end + 2;
    } else {
        host_end = strrchr(rest, ':');
        if (!host_end)
            return zmix_error_set(err, ZMIX_EINVAL, "address '%s': expected tcp:HOST:PORT", spec);
        port = host_end + 1;
    }
    size_t n = (size_t)(host_end - host);
    if (n == 0) return zmix_error_set(err, ZMIX_EINVAL, "address '%s': host is empty", spec);
    if (n >= sizeof out->host)
        return zmix_error_set(err, ZMIX_ERANGE, "address '%s': host longer than %zu bytes", spec,
                              sizeof out->host - 1);
    memcpy(out->host, host, n);
    out->host[n] = '\0';
    out->kind = ZMIX_ADDR_TCP;
    return parse_port(spec, port, out, err);
}

int zmix_client_addr_parse(const char *spec, zmix_client_addr *out, zmix_error *err)
{
    memset(out, 0, sizeof *out);
    if (!spec || !*spec) return zmix_error_set(err, ZMIX_EINVAL, "address is empty");
    if (!strncmp(spec, "tcp:", 4)) return parse_tcp(spec, spec + 4, out, err);
    const char *path;
    if (!strncmp(spec, "unix:", 5))
        path = spec + 5;
    else if (strchr(spec, '/'))
        path = spec;
    else
        return zmix_error_set(err, ZMIX_EINVAL,
                              "address '%s': expected unix:PATH, tcp:HOST:PORT or a socket path",
                              spec);
    size_t n = strlen(path);
    if (n == 0) return zmix_error_set(err, ZMIX_EINVAL, "address '%s': socket path is empty", spec);
    if (n >= sizeof out->path)
        return zmix_error_set(err, ZMIX_ERANGE, "address '%s': socket path longer than %zu bytes",
                              spec, sizeof out->path - 1);
    memcpy(out->path, path, n + 1);
    out->kind = ZMIX_ADDR_UNIX;
    return 0;
}

int zmix_client_default_address(char *out, size_t cap)
{
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    int n;
    /* Same rule as zmixd's default --cache-dir, whose socket is <cache-dir>/zmixd.sock. */
    if (xdg && *xdg)
        n = snprintf(out, cap, "unix:%s/zmix/zmixd.sock", xdg);
    else if (home && *home)
        n = snprintf(out, cap, "unix:%s/.cache/zmix/zmixd.sock", home);
    else
        n = snprintf(out, cap, "unix:/tmp/zmix-%ld/zmixd.sock", (long)getuid());
    return n < 0 || (size_t)n >= cap ? ZMIX_ERANGE : 0;
}

const char *zmix_client_strerror(int code)
{
    if (code == ZMIX_ECONNECT) return "ECONNECT";
    if (code == ZMIX_ETIMEDOUT) return "ETIMEDOUT";
    return zmix_strerror(code);
}
