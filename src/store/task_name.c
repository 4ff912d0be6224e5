/*
 * The task-name rule (see task_name.h): task names become file names. Thread: any.
 */
#include "store/task_name.h"

#include <string.h>

static int name_byte_ok(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
}

static int tenant_byte_ok(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
}

static int tenant_check_bytes(const char *name, size_t len, zmix_error *err)
{
    if (len == 0 || len > TENANT_NAME_MAX)
        return zmix_error_set(err, ZMIX_EINVAL, "tenant name of %zu bytes (%s)", len,
                              TENANT_NAME_RULE);
    for (size_t i = 0; i < len; i++)
        if (!tenant_byte_ok((unsigned char)name[i]))
            return zmix_error_set(err, ZMIX_EINVAL,
                                  "tenant name: byte 0x%02x at %zu is not allowed (%s)",
                                  (unsigned)(unsigned char)name[i], i, TENANT_NAME_RULE);
    return 0;
}

int tenant_name_check(const char *name, zmix_error *err)
{
    return tenant_check_bytes(name, name ? strlen(name) : 0, err);
}

/* The rule for the name of one namespace (unscoped, or the part after TENANT@). */
static int local_name_check(const char *name, size_t len, size_t total, zmix_error *err)
{
    if (!name || len == 0)
        return zmix_error_set(err, ZMIX_EINVAL, "task name is empty (%s)", TASK_NAME_RULE);
    if (total > TASK_NAME_MAX)
        return zmix_error_set(err, ZMIX_EINVAL, "task name of %zu bytes is too long (%s)", total,
                              TASK_NAME_RULE);
    if (name[0] == '.')
        return zmix_error_set(err, ZMIX_EINVAL, "task name starts with '.' (%s)", TASK_NAME_RULE);
    for (size_t i = 0; i < len; i++)
        if (!name_byte_ok((unsigned char)name[i]))
            /* The name itself is not echoed: the offending byte may not be printable. */
            return zmix_error_set(err, ZMIX_EINVAL,
                                  "task name: byte 0x%02x at %zu is not allowed (%s)",
                                  (unsigned)(unsigned char)name[i], i, TASK_NAME_RULE);
    return 0;
}

int task_name_check_bytes(const char *name, size_t len, zmix_error *err)
{
    const char *at = name ? memchr(name, TASK_SCOPE_SEP, len) : NULL;
    if (!at) return local_name_check(name, len, len, err);
    int rc = tenant_check_bytes(name, (size_t)(at - name), err);
    if (rc) return rc;
    size_t rest = len - (size_t)(at - name) - 1;
    return local_name_check(at + 1, rest, len, err);
}

void task_name_tenant(const char *name, char out[TENANT_NAME_MAX + 1])
{
    const char *at = strchr(name, TASK_SCOPE_SEP);
    size_t n = at && at - name <= TENANT_NAME_MAX ? (size_t)(at - name) : 0;
    memcpy(out, name, n);
    out[n] = '\0';
}

const char *task_name_local(const char *name)
{
    const char *at = strchr(name, TASK_SCOPE_SEP);
    return at ? at + 1 : name;
}

int task_name_check(const char *name, zmix_error *err)
{
    return task_name_check_bytes(name, name ? strlen(name) : 0, err);
}

int task_name_seen_by(const char *tenant, const char *name)
{
    size_t n = strlen(tenant);
    return !n || (!strncmp(name, tenant, n) && name[n] == TASK_SCOPE_SEP);
}
