/*
 * zmixd's settings: from the command line and from a config file with the same names
 * (one "name = value" per line, '#' starts a comment). Options are applied in order, so
 * `--config FILE --workers 2` lets the command line override the file. Pure: no I/O besides
 * reading the config file, so it is unit-tested directly.
 */
#ifndef ZMIX_DAEMON_CONFIG_H
#define ZMIX_DAEMON_CONFIG_H

#include <stddef.h>

#include "wire/job_limits.h"
#include "zmix/common.h"
#include "zmix/model.h"

#define CONFIG_MAX_LISTEN  4
#define CONFIG_MAX_EXPERTS 64
#define CONFIG_PATH_MAX    1024

typedef struct server_config {
    char model[CONFIG_PATH_MAX];
    char *experts[CONFIG_MAX_EXPERTS]; /* owned */
    int n_experts;
    char adapt[16];                                  /* "mlp", "attn", "all" */
    char listen[CONFIG_MAX_LISTEN][CONFIG_PATH_MAX]; /* "unix:/path" or "tcp:host:port" */
    int n_listen;
    int workers; /* 0: number of cores */
    char cache_dir[CONFIG_PATH_MAX];
    size_t cache_bytes; /* memory budget of resident task results */
    int max_jobs;       /* unfinished jobs (queued + running) */
    int max_running;    /* jobs scored at the same time */
    char token_file[CONFIG_PATH_MAX];
    char http[CONFIG_PATH_MAX];         /* --http HOST:PORT; "" none */
    char tenants_file[CONFIG_PATH_MAX]; /* tokens file of tenants (tenants.h); "" none */
    int tenant_max_running;             /* per tenant, unless its line says; 0: no own limit */
    int tenant_max_queued;
    char log_level[16];
    char log_file[CONFIG_PATH_MAX];
    size_t frame_limit;         /* bytes of one incoming message */
    size_t write_queue_limit;   /* bytes of unsent responses before a connection is closed */
    int idle_timeout_ms;        /* a connection with no traffic and nothing pending is closed */
    int max_connections;        /* per transport: Unix sockets and TCP each */
    int max_unauth_connections; /* TCP connections not authenticated yet (PROTOCOL §6) */
    int auth_timeout_ms;        /* from connect to a successful auth */
    int group_readable;         /* cache directories 0750 and files 0640 instead of 0700 and 0600 */
    size_t memory_limit;        /* the memory plan must fit this; 0: MemAvailable */
    zmix_factor_dtype factor_dtype; /* U and Vt of the SVD factors (default auto) */
    zmix_wprime_keep wprime;        /* what the runtime keeps to apply W' (default auto) */
    char store[CONFIG_PATH_MAX];    /* --store: "local" (default) or redis://HOST:PORT[/DB] */
    char store_password_file[CONFIG_PATH_MAX]; /* Redis's password; "" none */
    int fleet_claim_ms; /* a fleet chunk pending this long on one member is taken over */
    int fleet_lease_ms; /* a job whose driver has not renewed its lease this long moves */
    /* Per-job limits: the configurable fields of job_limits (job_limit_options); the model's
     * fields are filled when the model is loaded. */
    job_limits limits;
} server_config;

/* Defaults; cache_dir from $XDG_CACHE_HOME or $HOME (…/.cache/zmix). */
void config_default(server_config *cfg);
void config_free(server_config *cfg);

/* Parses argv[1..argc). Returns 0, or 1 when --help/--version was handled (*action set to
 * "help" or "version"), or a negative code naming the bad option. */
int config_parse_args(server_config *cfg, int argc, char **argv, const char **action,
                      zmix_error *err);
/* Applies one setting (name without the leading "--"). */
int config_set(server_config *cfg, const char *name, const char *value, zmix_error *err);
/* Applies a config file. Errors name the file and line. */
int config_load_file(server_config *cfg, const char *path, zmix_error *err);
/* Fills what depends on other settings (default socket in the cache dir) and checks that
 * the whole is consistent (model and experts given, ...). */
int config_finish(server_config *cfg, zmix_error *err);

/* A parsed listen address. */
typedef struct listen_addr {
    int is_tcp;
    char path[CONFIG_PATH_MAX]; /* unix */
    char host[256];             /* tcp */
    int port;
    int loopback; /* tcp host is 127.0.0.0/8, ::1 or localhost */
} listen_addr;

int config_parse_listen(const char *spec, listen_addr *out, zmix_error *err);
/* --store: where shared state lives. */
typedef struct store_addr {
    int redis; /* 0: the embedded local store */
    char host[256];
    int port;
    int db;
} store_addr;

/* "local", or redis://HOST[:PORT][/DB] (port 6379 and database 0 by default; an IPv6 host
 * in brackets). A password in the URL is refused: it belongs in --store-password-file. */
int config_parse_store(const char *spec, store_addr *out, zmix_error *err);

/* --http HOST:PORT (the HTTP listener: metrics and dashboard). */
int config_parse_http(const char *spec, listen_addr *out, zmix_error *err);

#endif
