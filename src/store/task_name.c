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

int task_name_check_bytes(const char *name, size_t len, zmix_error *err)
{
    if (!name || len == 0)
        return zmix_error_set(err, ZMIX_EINVAL, "task name is empty (%s)", TASK_NAME_RULE);
    if (len > TASK_NAME_MAX)
        return zmix_error_set(err, ZMIX_EINVAL, "task name of %zu bytes is too long (%s)", len,
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

int task_name_check(const char *name, zmix_error *err)
{
    return task_name_check_bytes(name, name ? strlen(name) : 0, err);
}
