/*
 * The fleet's task cache: with --store redis://..., the result of every finished task is also
 * kept in Redis (proto/FLEET.md §9), so that a cache hit, get, tasks and evict are the same
 * through every member. Each member's own task cache (--cache-dir/tasks) stays the copy it
 * serves from; Redis is the truth it is checked against: a member serves its copy only while
 * Redis holds the same result (same key, same creation time), fetches the fleet's otherwise,
 * and drops its copy of a task the fleet evicted.
 *
 * Threads: libuv's threadpool (every function blocks on Redis, on the job store's
 * connection).
 */
#ifndef ZMIX_FLEET_TASKS_H
#define ZMIX_FLEET_TASKS_H

#include "fleet/fleet_jobs.h"
#include "store/task_cache.h"

/* Stores (replacing) the result under r->task, with the summary tasks lists. */
int fleet_tasks_put(fleet_jobs *fj, const task_result *r, zmix_error *err);
/* The fleet's result for the task (caller frees). ZMIX_ENOTFOUND when it has none. */
int fleet_tasks_get(fleet_jobs *fj, const char *task, task_result *out, zmix_error *err);
/* Which result the fleet holds for the task: its key and creation time. ZMIX_ENOTFOUND when
 * none. */
int fleet_tasks_version(fleet_jobs *fj, const char *task, char key[TASK_KEY_MAX + 1],
                        int64_t *created_ms, zmix_error *err);
/* Removes the task's result. ZMIX_ENOTFOUND when there was none. */
int fleet_tasks_evict(fleet_jobs *fj, const char *task, zmix_error *err);
/* Every task's summary (resident and persisted describe the fleet's copy: 1). *out is
 * malloc'd. */
int fleet_tasks_list(fleet_jobs *fj, task_cache_info **out, size_t *n, zmix_error *err);

#endif
