/*
 * The scoring worker pool: plain threads taking work items from a fair scheduler.
 *
 * Why not libuv's threadpool: it is shared with file I/O and has no notion of fairness or
 * priority; scoring must not starve persistence, and no job should starve another.
 *
 * Scheduling: each job owns a pool_queue (its pending items). A free worker takes the first
 * item of the queue with the highest priority, and among equal priorities the one served
 * longest ago (round-robin), so two jobs of equal priority alternate chunk by chunk whatever
 * their sizes. The scheduler's mutex guards only the queues; items are run outside it.
 *
 * Completion: a worker appends the finished item to the done list and calls notify (the
 * server passes uv_async_send), and the event loop collects them with pool_take_done. Items
 * are owned by whoever submitted them; the pool only links them.
 */
#ifndef ZMIX_DAEMON_POOL_H
#define ZMIX_DAEMON_POOL_H

#include <pthread.h>
#include <stdint.h>

#include "zmix/common.h"

typedef struct pool_item pool_item;
struct pool_item {
    pool_item *next;
    void (*run)(pool_item *item); /* called on a worker thread */
    void *owner;                  /* the submitter's context (the job) */
    int kind;                     /* the submitter's tag */
    int begin, end;               /* the submitter's range (rows of a population) */
    int rc;                       /* set by run */
    zmix_error err;               /* set by run */
};

typedef struct pool_queue pool_queue;
struct pool_queue {
    int priority;
    uint64_t last_served;
    pool_item *head, *tail;
    pool_queue *next; /* in the scheduler's list of queues with pending items */
    int listed;
};

typedef struct pool pool;

/* Starts n_workers threads. notify(notify_arg) is called (from a worker) after each item. */
int pool_create(int n_workers, void (*notify)(void *), void *notify_arg, pool **out,
                zmix_error *err);
/* Stops the workers after their current item and joins them; pending items stay queued. */
void pool_free(pool *p);

void pool_queue_init(pool_queue *q, int priority);
/* Appends items (a NULL-terminated list linked by next) to q and wakes workers. */
void pool_submit(pool *p, pool_queue *q, pool_item *items);
/* Removes q's pending items from the scheduler; returns them (linked by next) for the caller
 * to dispose of. Items already running are not affected. */
pool_item *pool_withdraw(pool *p, pool_queue *q);
/* Hands items (linked by next) to the loop as finished, as if workers had run them: for
 * work scored elsewhere (the fleet's stream) whose rc and err are already set. Any thread. */
void pool_complete(pool *p, pool_item *items);
/* Takes every finished item (linked by next, in completion order). */
pool_item *pool_take_done(pool *p);

int pool_workers(const pool *p);
int pool_busy(pool *p);     /* workers running an item now */
long pool_pending(pool *p); /* items waiting */

/* Lowers the calling thread's CPU priority by delta (nice), so that the event loop runs
 * first on a saturated machine. Best effort. */
void pool_lower_thread_priority(int delta);

#endif
