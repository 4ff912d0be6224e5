/*
 * The scoring worker pool (see pool.h). Threads: pool_submit, pool_withdraw and
 * pool_take_done are called from the event loop; the workers run items; the scheduler's
 * mutex guards the queues and counters only.
 */
#include "daemon/pool.h"

#include <errno.h>

#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

struct pool {
    pthread_mutex_t lock; /* guards queues, counters and stop */
    pthread_cond_t wake;
    pool_queue *queues; /* queues with pending items */
    uint64_t served;
    long pending;
    int busy;
    int stop;

    pthread_mutex_t done_lock;
    pool_item *done_head, *done_tail;

    void (*notify)(void *);
    void *notify_arg;
    int n_workers;
    pthread_t *threads;
};

/* Best queue: highest priority, then least recently served. Called with the lock held. */
static pool_queue *pick_queue(pool *p)
{
    pool_queue *best = NULL;
    for (pool_queue *q = p->queues; q; q = q->next)
        if (!best || q->priority > best->priority ||
            (q->priority == best->priority && q->last_served < best->last_served))
            best = q;
    return best;
}

static void unlist(pool *p, pool_queue *q)
{
    for (pool_queue **pp = &p->queues; *pp; pp = &(*pp)->next) {
        if (*pp == q) {
            *pp = q->next;
            break;
        }
    }
    q->next = NULL;
    q->listed = 0;
}

/* Workers run at a lower CPU priority than the event loop: when every core is scoring, the
 * kernel still runs the loop (and local clients) the moment a request arrives, instead of
 * after a worker's time slice. This is what keeps status answers in well under a
 * millisecond on a saturated machine. Best effort: failure leaves the default priority. */
#define WORKER_NICE_DELTA 5

void pool_lower_thread_priority(int delta)
{
#ifdef SYS_gettid
    pid_t tid = (pid_t)syscall(SYS_gettid);
    errno = 0;
    int cur = getpriority(PRIO_PROCESS, (id_t)tid);
    if (errno == 0) (void)setpriority(PRIO_PROCESS, (id_t)tid, cur + delta);
#else
    (void)delta;
#endif
}

static void *worker_main(void *arg)
{
    pool *p = arg;
    pool_lower_thread_priority(WORKER_NICE_DELTA);
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (!p->stop && !p->queues) pthread_cond_wait(&p->wake, &p->lock);
        if (p->stop) break;
        pool_queue *q = pick_queue(p);
        pool_item *it = q->head;
        q->head = it->next;
        if (!q->head) {
            q->tail = NULL;
            unlist(p, q);
        }
        q->last_served = ++p->served;
        p->pending--;
        p->busy++;
        pthread_mutex_unlock(&p->lock);

        it->next = NULL;
        it->run(it);

        pthread_mutex_lock(&p->done_lock);
        if (p->done_tail)
            p->done_tail->next = it;
        else
            p->done_head = it;
        p->done_tail = it;
        pthread_mutex_unlock(&p->done_lock);

        pthread_mutex_lock(&p->lock);
        p->busy--;
        pthread_mutex_unlock(&p->lock);
        p->notify(p->notify_arg);
        pthread_mutex_lock(&p->lock);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

int pool_create(int n_workers, void (*notify)(void *), void *notify_arg, pool **out,
                zmix_error *err)
{
    *out = NULL;
    if (n_workers < 1 || n_workers > 1024)
        return zmix_error_set(err, ZMIX_EINVAL, "workers: %d, expected 1..1024", n_workers);
    pool *p = calloc(1, sizeof *p);
    if (!p) return zmix_error_set(err, ZMIX_ENOMEM, "pool: out of memory");
    p->threads = calloc((size_t)n_workers, sizeof *p->threads);
    if (!p->threads) {
        free(p);
        return zmix_error_set(err, ZMIX_ENOMEM, "pool: out of memory");
    }
    pthread_mutex_init(&p->lock, NULL);
    pthread_mutex_init(&p->done_lock, NULL);
    pthread_cond_init(&p->wake, NULL);
    p->notify = notify;
    p->notify_arg = notify_arg;
    for (int i = 0; i < n_workers; i++) {
        int rc = pthread_create(&p->threads[i], NULL, worker_main, p);
        if (rc != 0) {
            p->n_workers = i;
            pool_free(p);
            return zmix_error_set(err, ZMIX_ENOMEM, "pool: cannot start worker %d: %s", i,
                                  strerror(rc));
        }
    }
    p->n_workers = n_workers;
    *out = p;
    return 0;
}

void pool_free(pool *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->lock);
    p->stop = 1;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    for (int i = 0; i < p->n_workers; i++) pthread_join(p->threads[i], NULL);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->lock);
    pthread_mutex_destroy(&p->done_lock);
    free(p->threads);
    free(p);
}

void pool_queue_init(pool_queue *q, int priority)
{
    memset(q, 0, sizeof *q);
    q->priority = priority;
}

void pool_submit(pool *p, pool_queue *q, pool_item *items)
{
    if (!items) return;
    long n = 0;
    pool_item *last = items;
    for (pool_item *it = items; it; it = it->next) {
        n++;
        last = it;
    }
    pthread_mutex_lock(&p->lock);
    if (q->tail)
        q->tail->next = items;
    else
        q->head = items;
    q->tail = last;
    if (!q->listed) {
        /* A queue that joins competes from the back of the round-robin, as if just served. */
        q->last_served = p->served;
        pool_queue **tail = &p->queues;
        while (*tail) tail = &(*tail)->next;
        *tail = q; /* ties go to the earlier queue: first come, first served */
        q->next = NULL;
        q->listed = 1;
    }
    p->pending += n;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
}

pool_item *pool_withdraw(pool *p, pool_queue *q)
{
    pthread_mutex_lock(&p->lock);
    pool_item *items = q->head;
    for (pool_item *it = items; it; it = it->next) p->pending--;
    q->head = q->tail = NULL;
    if (q->listed) unlist(p, q);
    pthread_mutex_unlock(&p->lock);
    return items;
}

void pool_complete(pool *p, pool_item *items)
{
    if (!items) return;
    pool_item *last = items;
    while (last->next) last = last->next;
    pthread_mutex_lock(&p->done_lock);
    if (p->done_tail)
        p->done_tail->next = items;
    else
        p->done_head = items;
    p->done_tail = last;
    pthread_mutex_unlock(&p->done_lock);
    p->notify(p->notify_arg);
}

pool_item *pool_take_done(pool *p)
{
    pthread_mutex_lock(&p->done_lock);
    pool_item *items = p->done_head;
    p->done_head = p->done_tail = NULL;
    pthread_mutex_unlock(&p->done_lock);
    return items;
}

int pool_workers(const pool *p)
{
    return p->n_workers;
}

int pool_busy(pool *p)
{
    pthread_mutex_lock(&p->lock);
    int n = p->busy;
    pthread_mutex_unlock(&p->lock);
    return n;
}

long pool_pending(pool *p)
{
    pthread_mutex_lock(&p->lock);
    long n = p->pending;
    pthread_mutex_unlock(&p->lock);
    return n;
}
