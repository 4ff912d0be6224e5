/* The worker pool's scheduler (src/server/pool.c): equal priorities alternate item by item,
 * a higher priority goes first, withdrawn items never run, every item comes back once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <pthread.h>
#include <string.h>

#include "daemon/pool.h"

typedef struct recorder {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int gate_open;
    char order[64];
    int n;
    int notified;
} recorder;

static recorder rec;

static void run_gate(pool_item *it)
{
    pthread_mutex_lock(&rec.lock);
    while (!rec.gate_open) pthread_cond_wait(&rec.cond, &rec.lock);
    pthread_mutex_unlock(&rec.lock);
}

static void run_record(pool_item *it)
{
    pthread_mutex_lock(&rec.lock);
    rec.order[rec.n++] = (char)it->kind;
    pthread_mutex_unlock(&rec.lock);
}

static void notify(void *arg)
{
    pthread_mutex_lock(&rec.lock);
    rec.notified++;
    pthread_cond_broadcast(&rec.cond);
    pthread_mutex_unlock(&rec.lock);
}

static void wait_notified(int n)
{
    pthread_mutex_lock(&rec.lock);
    while (rec.notified < n) pthread_cond_wait(&rec.cond, &rec.lock);
    pthread_mutex_unlock(&rec.lock);
}

static void link_items(pool_item *items, int n, char kind)
{
    for (int i = 0; i < n; i++) {
        memset(&items[i], 0, sizeof items[i]);
        items[i].run = run_record;
        items[i].kind = kind;
        items[i].next = i + 1 < n ? &items[i + 1] : NULL;
    }
}

static void reset(void)
{
    memset(&rec, 0, sizeof rec);
    pthread_mutex_init(&rec.lock, NULL);
    pthread_cond_init(&rec.cond, NULL);
}

/* One worker held on a gate while the queues fill, so the order is the scheduler's alone. */
static void run_scenario(int prio_a, int prio_b, int withdraw_b, const char *expect)
{
    reset();
    pool *p;
    zmix_error err = {0};
    assert_int_equal(pool_create(1, notify, NULL, &p, &err), 0);
    pool_queue qg, qa, qb;
    pool_queue_init(&qg, 100);
    pool_queue_init(&qa, prio_a);
    pool_queue_init(&qb, prio_b);
    pool_item gate = {.run = run_gate, .kind = 'g'};
    pool_submit(p, &qg, &gate);
    while (pool_busy(p) == 0) sched_yield();
    pool_item a[4], b[3];
    link_items(a, 4, 'a');
    link_items(b, 3, 'b');
    pool_submit(p, &qa, a);
    pool_submit(p, &qb, b);
    assert_int_equal(pool_pending(p), 7);
    int expected_done = 1 + 4 + 3;
    if (withdraw_b) {
        int n = 0;
        for (pool_item *it = pool_withdraw(p, &qb); it; it = it->next) n++;
        assert_int_equal(n, 3);
        expected_done -= 3;
    }
    pthread_mutex_lock(&rec.lock);
    rec.gate_open = 1;
    pthread_cond_broadcast(&rec.cond);
    pthread_mutex_unlock(&rec.lock);
    wait_notified(expected_done);
    int back = 0;
    for (pool_item *it = pool_take_done(p); it; it = it->next) back++;
    assert_int_equal(back, expected_done);
    assert_null(pool_take_done(p));
    rec.order[rec.n] = 0;
    assert_string_equal(rec.order, expect);
    pool_free(p);
}

static void test_round_robin(void **unused)
{
    /* b joined last, so a is served first; then they alternate until b runs out. */
    run_scenario(0, 0, 0, "abababa");
}

static void test_priority(void **unused)
{
    run_scenario(0, 5, 0, "bbbaaaa");
    run_scenario(-1, -2, 0, "aaaabbb");
}

static void test_withdraw(void **unused)
{
    run_scenario(0, 0, 1, "aaaa");
}

static void test_many_workers_every_item_once(void **unused)
{
    reset();
    pool *p;
    zmix_error err = {0};
    assert_int_equal(pool_create(4, notify, NULL, &p, &err), 0);
    pool_queue q[3];
    pool_item items[3][10];
    for (int i = 0; i < 3; i++) {
        pool_queue_init(&q[i], 0);
        link_items(items[i], 10, (char)('x' + i));
        pool_submit(p, &q[i], items[i]);
    }
    rec.gate_open = 1;
    wait_notified(30);
    int counts[3] = {0};
    for (pool_item *it = pool_take_done(p); it; it = it->next) counts[it->kind - 'x']++;
    assert_int_equal(counts[0], 10);
    assert_int_equal(counts[1], 10);
    assert_int_equal(counts[2], 10);
    assert_int_equal(pool_pending(p), 0);
    pool_free(p);
    assert_int_equal(pool_create(0, notify, NULL, &p, &err), ZMIX_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_robin),
        cmocka_unit_test(test_priority),
        cmocka_unit_test(test_withdraw),
        cmocka_unit_test(test_many_workers_every_item_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
