/*
 * zmixd's settings from the command line and the config file (see config.h). Pure functions
 * of their input. Thread: main, before the loop starts.
 */
#include "daemon/config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void config_default(server_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    snprintf(cfg->adapt, sizeof cfg->adapt, "mlp");
    snprintf(cfg->store, sizeof cfg->store, "local");
    cfg->fleet_claim_ms = 30000;
    cfg->fleet_lease_ms = 10000;
    const char *xdg = getenv("XDG_CACHE_HOME");
    const char *home = getenv("HOME");
    if (xdg && xdg[0])
        snprintf(cfg->cache_dir, sizeof cfg->cache_dir, "%s/zmix", xdg);
    else if (home && home[0])
        snprintf(cfg->cache_dir, sizeof cfg->cache_dir, "%s/.cache/zmix", home);
    else
        snprintf(cfg->cache_dir, sizeof cfg->cache_dir, "/tmp/zmix-%ld", (long)getuid());
    cfg->cache_bytes = (size_t)256 << 20;
    cfg->max_jobs = 64;
    cfg->max_running = 4;
    snprintf(cfg->log_level, sizeof cfg->log_level, "info");
    cfg->frame_limit = (size_t)4 << 20;
    cfg->write_queue_limit = (size_t)64 << 20;
    cfg->idle_timeout_ms = 300000;
    cfg->max_connections = 1024;
    cfg->max_unauth_connections = 16;
    cfg->auth_timeout_ms = 10000;
    job_limits_default(&cfg->limits);
}

void config_free(server_config *cfg)
{
    for (int i = 0; i < cfg->n_experts; i++) free(cfg->experts[i]);
    cfg->n_experts = 0;
}

static int set_str(char *dst, size_t cap, const char *name, const char *value, zmix_error *err)
{
    if (strlen(value) >= cap)
        return zmix_error_set(err, ZMIX_ERANGE, "--%s: value longer than %zu bytes", name, cap - 1);
    memcpy(dst, value, strlen(value) + 1);
    return 0;
}

static int set_long(long *dst, const char *name, const char *value, long lo, long hi,
                    zmix_error *err)
{
    char *end;
    errno = 0;
    long long v = strtoll(value, &end, 10);
    /* Accept K/M/G suffixes for sizes. */
    if (end != value && *end && !end[1]) {
        long long mul = *end == 'K' || *end == 'k'   ? 1LL << 10
                        : *end == 'M' || *end == 'm' ? 1LL << 20
                        : *end == 'G' || *end == 'g' ? 1LL << 30
                                                     : 0;
        if (mul && v <= (long long)hi / mul) {
            v *= mul;
            end++;
        }
    }
    if (errno || end == value || *end || v < lo || v > hi)
        return zmix_error_set(err, ZMIX_EINVAL, "--%s: '%s' is not an integer in [%ld, %ld]", name,
                              value, lo, hi);
    *dst = (long)v;
    return 0;
}

static int set_int(int *dst, const char *name, const char *value, long lo, long hi, zmix_error *err)
{
    long v;
    int rc = set_long(&v, name, value, lo, hi, err);
    if (!rc) *dst = (int)v;
    return rc;
}

static int set_size(size_t *dst, const char *name, const char *value, long lo, zmix_error *err)
{
    long v;
    int rc = set_long(&v, name, value, lo, (long)1 << 40, err);
    if (!rc) *dst = (size_t)v;
    return rc;
}

static int set_experts(server_config *cfg, const char *value, zmix_error *err)
{
    config_free(cfg);
    const char *p = value;
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        if (n == 0) return zmix_error_set(err, ZMIX_EINVAL, "--experts: empty path in '%s'", value);
        if (cfg->n_experts == CONFIG_MAX_EXPERTS)
            return zmix_error_set(err, ZMIX_ELIMIT, "--experts: more than %d experts",
                                  CONFIG_MAX_EXPERTS);
        char *s = strndup(p, n);
        if (!s) return zmix_error_set(err, ZMIX_ENOMEM, "--experts: out of memory");
        cfg->experts[cfg->n_experts++] = s;
        p += n + (comma ? 1 : 0);
        if (comma && !*p)
            return zmix_error_set(err, ZMIX_EINVAL, "--experts: empty path in '%s'", value);
    }
    if (cfg->n_experts == 0) return zmix_error_set(err, ZMIX_EINVAL, "--experts: empty list");
    return 0;
}

int config_set(server_config *cfg, const char *name, const char *value, zmix_error *err)
{
    if (!strcmp(name, "model")) return set_str(cfg->model, sizeof cfg->model, name, value, err);
    if (!strcmp(name, "experts")) return set_experts(cfg, value, err);
    if (!strcmp(name, "adapt")) {
        if (strcmp(value, "mlp") && strcmp(value, "attn") && strcmp(value, "all"))
            return zmix_error_set(err, ZMIX_EINVAL, "--adapt: '%s', expected mlp, attn or all",
                                  value);
        return set_str(cfg->adapt, sizeof cfg->adapt, name, value, err);
    }
    if (!strcmp(name, "listen")) {
        if (cfg->n_listen == CONFIG_MAX_LISTEN)
            return zmix_error_set(err, ZMIX_ELIMIT, "--listen: at most %d listeners",
                                  CONFIG_MAX_LISTEN);
        listen_addr a;
        int rc = config_parse_listen(value, &a, err);
        if (rc) return rc;
        return set_str(cfg->listen[cfg->n_listen++], CONFIG_PATH_MAX, name, value, err);
    }
    if (!strcmp(name, "workers")) return set_int(&cfg->workers, name, value, 1, 1024, err);
    if (!strcmp(name, "cache-dir"))
        return set_str(cfg->cache_dir, sizeof cfg->cache_dir, name, value, err);
    if (!strcmp(name, "cache-bytes")) return set_size(&cfg->cache_bytes, name, value, 0, err);
    if (!strcmp(name, "max-jobs")) return set_int(&cfg->max_jobs, name, value, 1, 100000, err);
    if (!strcmp(name, "max-running")) return set_int(&cfg->max_running, name, value, 1, 1024, err);
    if (!strcmp(name, "http")) {
        listen_addr a;
        int rc = config_parse_http(value, &a, err);
        if (rc) return rc;
        return set_str(cfg->http, sizeof cfg->http, name, value, err);
    }
    if (!strcmp(name, "store")) {
        store_addr a;
        int rc = config_parse_store(value, &a, err);
        if (rc) return rc;
        return set_str(cfg->store, sizeof cfg->store, name, value, err);
    }
    if (!strcmp(name, "store-password-file"))
        return set_str(cfg->store_password_file, sizeof cfg->store_password_file, name, value, err);
    if (!strcmp(name, "fleet-claim-ms"))
        return set_int(&cfg->fleet_claim_ms, name, value, 100, 86400000L, err);
    if (!strcmp(name, "fleet-lease-ms"))
        return set_int(&cfg->fleet_lease_ms, name, value, 250, 3600000L, err);
    if (!strcmp(name, "token-file"))
        return set_str(cfg->token_file, sizeof cfg->token_file, name, value, err);
    if (!strcmp(name, "tenants"))
        return set_str(cfg->tenants_file, sizeof cfg->tenants_file, name, value, err);
    if (!strcmp(name, "tenant-max-running"))
        return set_int(&cfg->tenant_max_running, name, value, 0, 1024, err);
    if (!strcmp(name, "tenant-max-queued"))
        return set_int(&cfg->tenant_max_queued, name, value, 0, 100000, err);
    if (!strcmp(name, "log-level")) {
        if (strcmp(value, "error") && strcmp(value, "warn") && strcmp(value, "info") &&
            strcmp(value, "debug"))
            return zmix_error_set(err, ZMIX_EINVAL,
                                  "--log-level: '%s', expected error, warn, info or debug", value);
        return set_str(cfg->log_level, sizeof cfg->log_level, name, value, err);
    }
    if (!strcmp(name, "log-file"))
        return set_str(cfg->log_file, sizeof cfg->log_file, name, value, err);
    if (!strcmp(name, "frame-limit")) return set_size(&cfg->frame_limit, name, value, 1024, err);
    if (!strcmp(name, "write-queue-limit"))
        return set_size(&cfg->write_queue_limit, name, value, 4096, err);
    if (!strcmp(name, "idle-timeout-ms"))
        return set_int(&cfg->idle_timeout_ms, name, value, 100, 86400000L, err);
    if (!strcmp(name, "group-readable")) {
        int yes = !strcmp(value, "yes") || !strcmp(value, "true") || !strcmp(value, "1");
        if (!yes && strcmp(value, "no") && strcmp(value, "false") && strcmp(value, "0"))
            return zmix_error_set(err, ZMIX_EINVAL, "--group-readable: '%s', expected yes or no",
                                  value);
        cfg->group_readable = yes;
        return 0;
    }
    if (!strcmp(name, "memory-limit")) return set_size(&cfg->memory_limit, name, value, 1, err);
    if (!strcmp(name, "factor-dtype")) {
        int rc = zmix_factor_dtype_parse(value, &cfg->factor_dtype, err);
        return rc ? zmix_error_prefix(err, "--factor-dtype") : 0;
    }
    if (!strcmp(name, "wprime")) {
        int rc = zmix_wprime_keep_parse(value, &cfg->wprime, err);
        return rc ? zmix_error_prefix(err, "--wprime") : 0;
    }
    if (!strcmp(name, "max-connections"))
        return set_int(&cfg->max_connections, name, value, 1, 1000000, err);
    if (!strcmp(name, "max-unauth-connections"))
        return set_int(&cfg->max_unauth_connections, name, value, 1, 1000000, err);
    if (!strcmp(name, "auth-timeout-ms"))
        return set_int(&cfg->auth_timeout_ms, name, value, 100, 600000, err);
    const job_limit_option *limit = job_limit_option_by_name(name);
    if (limit) {
        long v;
        int rc = set_long(&v, name, value, (long)limit->min, (long)limit->max, err);
        if (rc == 0) job_limit_set(&cfg->limits, limit, v);
        return rc;
    }
    return zmix_error_set(err, ZMIX_EINVAL, "unknown option --%s", name);
}

int config_load_file(server_config *cfg, const char *path, zmix_error *err)
{
    FILE *f = fopen(path, "r");
    if (!f) return zmix_error_set(err, ZMIX_EIO, "config %s: %s", path, strerror(errno));
    char line[4096];
    int lineno = 0, rc = 0;
    while (!rc && fgets(line, sizeof line, f)) {
        lineno++;
        size_t n = strlen(line);
        if (n == sizeof line - 1 && line[n - 1] != '\n') {
            rc = zmix_error_set(err, ZMIX_EFORMAT, "config %s:%d: line too long", path, lineno);
            break;
        }
        char *hash = strchr(line, '#');
        if (hash) *hash = '\0';
        char *s = line;
        while (*s == ' ' || *s == '\t') s++;
        char *e = s + strlen(s);
        while (e > s && (e[-1] == '\n' || e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t')) *--e = 0;
        if (!*s) continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            rc = zmix_error_set(err, ZMIX_EFORMAT, "config %s:%d: expected 'name = value'", path,
                                lineno);
            break;
        }
        char *ke = eq;
        while (ke > s && (ke[-1] == ' ' || ke[-1] == '\t')) ke--;
        *ke = '\0';
        char *v = eq + 1;
        while (*v == ' ' || *v == '\t') v++;
        if (!strcmp(s, "config")) {
            rc = zmix_error_set(err, ZMIX_EINVAL, "config %s:%d: 'config' cannot be nested", path,
                                lineno);
            break;
        }
        rc = config_set(cfg, s, v, err);
        if (rc) zmix_error_prefix(err, "config %s:%d", path, lineno);
    }
    fclose(f);
    return rc;
}

int config_parse_args(server_config *cfg, int argc, char **argv, const char **action,
                      zmix_error *err)
{
    *action = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            *action = "help";
            return 1;
        }
        if (!strcmp(a, "--version")) {
            *action = "version";
            return 1;
        }
        if (strncmp(a, "--", 2) != 0 || !a[2])
            return zmix_error_set(err, ZMIX_EINVAL, "unexpected argument '%s'", a);
        const char *name = a + 2;
        char buf[64];
        const char *value;
        const char *eq = strchr(name, '=');
        if (eq) {
            if ((size_t)(eq - name) >= sizeof buf)
                return zmix_error_set(err, ZMIX_EINVAL, "unknown option %s", a);
            memcpy(buf, name, (size_t)(eq - name));
            buf[eq - name] = '\0';
            name = buf;
            value = eq + 1;
        } else if (!strcmp(name, "group-readable")) {
            value = "yes"; /* a flag on the command line; "yes"/"no" in a config file */
        } else {
            if (i + 1 >= argc) return zmix_error_set(err, ZMIX_EINVAL, "--%s needs a value", name);
            value = argv[++i];
        }
        int rc = !strcmp(name, "config") ? config_load_file(cfg, value, err)
                                         : config_set(cfg, name, value, err);
        if (rc) return rc;
    }
    return 0;
}

int config_finish(server_config *cfg, zmix_error *err)
{
    if (!cfg->model[0]) return zmix_error_set(err, ZMIX_EINVAL, "--model is required");
    if (cfg->n_experts == 0)
        return zmix_error_set(err, ZMIX_EINVAL, "--experts is required (comma-separated files)");
    if (!cfg->cache_dir[0]) return zmix_error_set(err, ZMIX_EINVAL, "--cache-dir is empty");
    if (cfg->store_password_file[0] && !strcmp(cfg->store, "local"))
        return zmix_error_set(err, ZMIX_EINVAL,
                              "--store-password-file is for a Redis store: give --store "
                              "redis://HOST:PORT[/DB] too");
    if (cfg->workers == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        cfg->workers = n > 0 ? (int)(n > 1024 ? 1024 : n) : 1;
    }
    /* The default Unix socket is kept unless a Unix socket is listed: adding a TCP listener
     * does not take away the socket the local clients find by default. */
    int has_unix = 0;
    for (int i = 0; i < cfg->n_listen; i++) has_unix |= !strncmp(cfg->listen[i], "unix:", 5);
    if (!has_unix) {
        if (cfg->n_listen == CONFIG_MAX_LISTEN)
            return zmix_error_set(err, ZMIX_ELIMIT,
                                  "--listen: %d TCP listeners leave no room for the default Unix "
                                  "socket; list at most %d, or list a unix: socket",
                                  CONFIG_MAX_LISTEN, CONFIG_MAX_LISTEN - 1);
        int n = snprintf(cfg->listen[cfg->n_listen], CONFIG_PATH_MAX, "unix:%s/zmixd.sock",
                         cfg->cache_dir);
        if (n >= CONFIG_PATH_MAX)
            return zmix_error_set(err, ZMIX_ERANGE, "--cache-dir too long for a socket path");
        cfg->n_listen++;
    }
    return 0;
}

int config_parse_listen(const char *spec, listen_addr *out, zmix_error *err)
{
    memset(out, 0, sizeof *out);
    if (!strncmp(spec, "unix:", 5)) {
        const char *path = spec + 5;
        /* sun_path holds 108 bytes on Linux, NUL included. */
        if (!*path) return zmix_error_set(err, ZMIX_EINVAL, "--listen %s: empty socket path", spec);
        if (strlen(path) >= 108)
            return zmix_error_set(err, ZMIX_ERANGE,
                                  "--listen %s: socket path longer than 107 bytes", spec);
        snprintf(out->path, sizeof out->path, "%s", path);
        return 0;
    }
    if (!strncmp(spec, "tcp:", 4)) {
        const char *hp = spec + 4;
        const char *colon = strrchr(hp, ':');
        if (!colon || colon == hp)
            return zmix_error_set(err, ZMIX_EINVAL, "--listen %s: expected tcp:HOST:PORT", spec);
        size_t hl = (size_t)(colon - hp);
        if (hp[0] == '[' && hl >= 2 && hp[hl - 1] == ']') { /* [::1]:7878 */
            hp++;
            hl -= 2;
        }
        if (hl >= sizeof out->host)
            return zmix_error_set(err, ZMIX_ERANGE, "--listen %s: host too long", spec);
        memcpy(out->host, hp, hl);
        out->host[hl] = '\0';
        char *end;
        long port = strtol(colon + 1, &end, 10);
        if (!colon[1] || *end || port < 1 || port > 65535)
            return zmix_error_set(err, ZMIX_EINVAL, "--listen %s: port must be 1..65535", spec);
        out->port = (int)port;
        out->is_tcp = 1;
        out->loopback = !strncmp(out->host, "127.", 4) || !strcmp(out->host, "::1") ||
                        !strcmp(out->host, "localhost");
        return 0;
    }
    return zmix_error_set(err, ZMIX_EINVAL, "--listen %s: expected unix:PATH or tcp:HOST:PORT",
                          spec);
}

int config_parse_http(const char *spec, listen_addr *out, zmix_error *err)
{
    char tcp[CONFIG_PATH_MAX + 8];
    snprintf(tcp, sizeof tcp, "tcp:%s", spec);
    if (strncmp(spec, "unix:", 5) && strncmp(spec, "tcp:", 4) && strlen(spec) < CONFIG_PATH_MAX &&
        config_parse_listen(tcp, out, err) == 0)
        return 0;
    return zmix_error_set(err, ZMIX_EINVAL,
                          "--http %s: expected HOST:PORT with a port 1..65535, e.g. "
                          "127.0.0.1:9464 or [::1]:9464",
                          spec);
}

int config_parse_store(const char *spec, store_addr *out, zmix_error *err)
{
    memset(out, 0, sizeof *out);
    if (!strcmp(spec, "local")) return 0;
    static const char scheme[] = "redis://";
    if (strncmp(spec, scheme, sizeof scheme - 1))
        return zmix_error_set(err, ZMIX_EINVAL,
                              "--store %s: expected 'local' or redis://HOST:PORT[/DB]", spec);
    const char *p = spec + sizeof scheme - 1;
    if (strchr(p, '@'))
        return zmix_error_set(err, ZMIX_EINVAL,
                              "--store: no credentials in the URL (they would show in the "
                              "process list; the URL is not repeated here for that reason): put "
                              "the password in --store-password-file");
    const char *host_end;
    const char *host = p;
    if (*p == '[') {
        host = p + 1;
        host_end = strchr(host, ']');
        if (!host_end)
            return zmix_error_set(err, ZMIX_EINVAL, "--store %s: IPv6 host without its ']'", spec);
        p = host_end + 1;
    } else {
        host_end = p + strcspn(p, ":/");
        p = host_end;
    }
    size_t host_len = (size_t)(host_end - host);
    if (host_len == 0 || host_len >= sizeof out->host)
        return zmix_error_set(err, ZMIX_EINVAL, "--store %s: expected redis://HOST:PORT[/DB]",
                              spec);
    memcpy(out->host, host, host_len);
    out->host[host_len] = '\0';
    out->port = 6379;
    if (*p == ':') {
        char *end;
        errno = 0;
        long port = strtol(p + 1, &end, 10);
        if (end == p + 1 || errno || port < 1 || port > 65535 || (*end && *end != '/'))
            return zmix_error_set(err, ZMIX_EINVAL, "--store %s: port must be 1..65535", spec);
        out->port = (int)port;
        p = end;
    }
    if (*p == '/' && p[1]) {
        char *end;
        errno = 0;
        long db = strtol(p + 1, &end, 10);
        if (end == p + 1 || errno || db < 0 || db > 65535 || *end)
            return zmix_error_set(err, ZMIX_EINVAL,
                                  "--store %s: database must be a number 0..65535", spec);
        out->db = (int)db;
    } else if (*p && strcmp(p, "/")) {
        return zmix_error_set(err, ZMIX_EINVAL, "--store %s: expected redis://HOST:PORT[/DB]",
                              spec);
    }
    out->redis = 1;
    return 0;
}
