/*
 * Tenants: the tokens file that maps each token to a tenant, and its per-tenant limits
 * (docs/daemon.md, "Tenants"; PROTOCOL.md §1). Pure: reads one file, keeps no global state,
 * so it is unit-tested directly. Thread: any.
 *
 * File format, one tenant per line, '#' starts a comment:
 *     NAME TOKEN [max_running=N] [max_queued=N]
 * NAME follows the tenant-name rule (store/task_name.h); TOKEN is at least 16 bytes of
 * printable ASCII without spaces; tokens and names are unique. The file holds secrets: it
 * must not be readable or writable by group or others.
 */
#ifndef ZMIX_DAEMON_TENANTS_H
#define ZMIX_DAEMON_TENANTS_H

#include <stddef.h>

#include "store/task_name.h"
#include "zmix/common.h"

#define TENANT_TOKEN_MIN 16
#define TENANT_TOKEN_MAX 255

typedef struct tenant {
    char name[TENANT_NAME_MAX + 1];
    char token[TENANT_TOKEN_MAX + 1];
    size_t token_len;
    int max_running; /* jobs of this tenant scored at once; 0: only the daemon's limit */
    int max_queued;  /* jobs of this tenant waiting to start; 0: only the daemon's limit */
} tenant;

typedef struct tenant_table {
    tenant *v;
    int n;
} tenant_table;

/* Loads path into *out (free with tenants_free). Tenants without their own limits get
 * default_max_running / default_max_queued. Errors name the file, the line and the field;
 * no token is ever quoted. */
int tenants_load(const char *path, int default_max_running, int default_max_queued,
                 tenant_table *out, zmix_error *err);
/* The same from text already read (tests, fuzzing); path only names it in errors. */
int tenants_parse(const char *text, size_t len, const char *path, int default_max_running,
                  int default_max_queued, tenant_table *out, zmix_error *err);
void tenants_free(tenant_table *t);

/* The tenant whose token is token[0..len), or NULL. Compares against every token, every
 * byte, whatever matches first: the time does not tell which bytes were right. */
const tenant *tenants_match(const tenant_table *t, const char *token, size_t len);
/* Constant-time comparison of a presented token with an expected one. */
int tenant_token_equal(const char *expected, size_t expected_len, const char *given,
                       size_t given_len);

#endif
