/*
 * The task-name rule, in one place: a task name is 1..TASK_NAME_MAX bytes of [A-Za-z0-9._-],
 * not starting with '.'. Task names become file names in the cache directory and the job
 * store, so the rule keeps out path separators, "..", hidden files and anything a shell or a
 * file system could read differently. submit, get, evict, the task cache and the job store all
 * check names with these functions, so a name one of them accepts every other one accepts too.
 */
#ifndef ZMIX_STORE_TASK_NAME_H
#define ZMIX_STORE_TASK_NAME_H

#include <stddef.h>

#include "zmix/common.h"

#define TASK_NAME_MAX 127 /* bytes, without the terminating NUL */

/* The rule in words, as every refusal states it (spelt from TASK_NAME_MAX, so the two agree). */
#define TASK_NAME_STR_(n)   #n
#define TASK_NAME_STR(n)    TASK_NAME_STR_(n)
#define TASK_NAME_RULE_HEAD "a task name is 1 to " TASK_NAME_STR(TASK_NAME_MAX) " bytes"
#define TASK_NAME_RULE      TASK_NAME_RULE_HEAD " of [A-Za-z0-9._-], not starting with '.'"

/* Tenants (docs/daemon.md): a tenant's task is stored under the scoped name TENANT@TASK, so
 * that each tenant has its own task names. A tenant name is 1..TENANT_NAME_MAX bytes of
 * [A-Za-z0-9_-]; the scoped name as a whole is at most TASK_NAME_MAX bytes. */
#define TENANT_NAME_MAX  32
#define TENANT_NAME_RULE "a tenant name is 1 to 32 bytes of [A-Za-z0-9_-]"
#define TASK_SCOPE_SEP   '@'

/* ZMIX_EINVAL naming the offence and the rule unless name[0..len) follows the rule, or is a
 * scoped name TENANT@TASK whose parts follow theirs. The bytes need not be NUL-terminated
 * (names straight off the wire). */
int task_name_check_bytes(const char *name, size_t len, zmix_error *err);
/* The same for a NUL-terminated name. */
int task_name_check(const char *name, zmix_error *err);
/* ZMIX_EINVAL naming the offence unless name is a tenant name. */
int tenant_name_check(const char *name, zmix_error *err);
/* The tenant part of a scoped name ("" for an unscoped one) into out, and the task part. */
void task_name_tenant(const char *name, char out[TENANT_NAME_MAX + 1]);
const char *task_name_local(const char *name);
/* Whether the scoped name belongs to this tenant's view: every name for "" (the
 * administrator), else only the names scoped TENANT@. */
int task_name_seen_by(const char *tenant, const char *name);

#endif
