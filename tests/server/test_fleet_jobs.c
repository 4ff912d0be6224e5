/*
 * The fleet's job store and its leases (src/fleet/fleet_jobs.c) against a real redis-server
 * that the test starts on a loopback port: a job created by one member, its lease claimed by
 * another when it lapses, the first member's late writes refused (fenced) while the new
 * driver's go through, a cancel asked through the store, and a job written back by its driver
 * into a Redis that lost it. Skipped, saying so, where redis-server is not installed.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "fleet/fleet_jobs.h"

static int redis_port;
static pid_t redis_pid;

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static redisContext *connect_test(void *arg, zmix_error *err)
{
    (void)arg;
    redisContext *c = redisConnect("127.0.0.1", redis_port);
    if (!c || c->err) {
        zmix_error_set(err, ZMIX_EIO, "cannot connect to the test's Redis: %s",
                       c ? c->errstr : "out of memory");
        if (c) redisFree(c);
        return NULL;
    }
    return c;
}

/* A raw command on a connection of the test's own. */
static redisReply *raw(const char *fmt, ...)
{
    zmix_error err = {0};
    redisContext *c = connect_test(NULL, &err);
    assert_non_null(c);
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    redisFree(c);
    assert_non_null(r);
    return r;
}

static char *hget(uint64_t id, const char *field)
{
    redisReply *r = raw("HGET zmix:job:%llu %s", (unsigned long long)id, field);
    char *v = r->type == REDIS_REPLY_STRING ? strdup(r->str) : NULL;
    freeReplyObject(r);
    return v;
}

static int free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (bind(s, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(s, (struct sockaddr *)&a, &len) != 0) {
        close(s);
        return -1;
    }
    close(s);
    return ntohs(a.sin_port);
}

static int start_redis(void **state)
{
    (void)state;
    if (system("command -v redis-server >/dev/null 2>&1") != 0) return 0;
    redis_port = free_port();
    char port[16];
    snprintf(port, sizeof port, "%d", redis_port);
    redis_pid = fork();
    if (redis_pid == 0) {
        int null = open("/dev/null", 1);
        dup2(null, 1);
        dup2(null, 2);
        execlp("redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 200; i++) {
        zmix_error err = {0};
        redisContext *c = connect_test(NULL, &err);
        if (c) {
            redisFree(c);
            return 0;
        }
        sleep_ms(25);
    }
    return -1;
}

static int stop_redis(void **state)
{
    (void)state;
    if (redis_pid > 0) {
        kill(redis_pid, SIGKILL);
        waitpid(redis_pid, NULL, 0);
    }
    return 0;
}

static atomic_int notified;
static void on_notify(void *arg)
{
    (void)arg;
    atomic_fetch_add(&notified, 1);
}

static fleet_jobs *open_member(const char *member, int lease_ms)
{
    fleet_jobs_config cfg = {.member = member,
                             .url = "redis://test",
                             .connect = connect_test,
                             .lease_ms = lease_ms,
                             .notify = on_notify};
    fleet_jobs *fj = NULL;
    zmix_error err = {0};
    assert_int_equal(fleet_jobs_open(&cfg, &fj, &err), 0);
    return fj;
}

/* Waits (up to 5 s) for an event of this kind about id; NULL if none came. */
static fleet_job_event *await_event(fleet_jobs *fj, int kind, uint64_t id)
{
    for (int i = 0; i < 500; i++) {
        fleet_job_event *all = fleet_jobs_take_events(fj), *found = NULL, **pp = &all;
        while (*pp) {
            if (!found && (*pp)->kind == kind && (*pp)->id == id) {
                found = *pp;
                *pp = found->next;
                found->next = NULL;
            } else {
                pp = &(*pp)->next;
            }
        }
        fleet_job_events_free(all);
        if (found) return found;
        sleep_ms(10);
    }
    return NULL;
}

static job_record a_record(const char *task, zmix_example *items, int32_t *tokens)
{
    for (int t = 0; t < 5; t++) tokens[t] = 10 + t;
    items[0] = (zmix_example){.prompt = tokens, .n_prompt = 3, .target = tokens + 3, .n_target = 2};
    job_record rec;
    memset(&rec, 0, sizeof rec);
    snprintf(rec.task, sizeof rec.task, "%s", task);
    snprintf(rec.key, sizeof rec.key, "%064d", 7);
    rec.priority = 3;
    rec.submit_ms = 1700000000000LL;
    rec.examples.items = items;
    rec.examples.n = 1;
    static uint8_t settings[] = {0x80};
    rec.settings = settings;
    rec.settings_len = sizeof settings;
    return rec;
}

static void test_lease_claim_and_fencing(void **state)
{
    (void)state;
    if (redis_pid <= 0) skip();
    fleet_jobs *a = open_member("host-1-aaaa", 10000);
    fleet_jobs *b = open_member("host-2-bbbb", 250); /* looks for lapsed leases every 50 ms */
    zmix_error err = {0};
    zmix_example items[1];
    int32_t tokens[5];
    job_record rec = a_record("tenant@task", items, tokens);
    uint64_t epoch = 0;
    fleet_job_joined joined;
    assert_int_equal(fleet_jobs_create(a, &rec, &epoch, &joined, &err), 0);
    uint64_t id = rec.id;
    assert_true(id >= 1);
    assert_int_equal(epoch, 1);

    /* What any member reads back. */
    job_record got;
    assert_int_equal(fleet_jobs_get(b, id, &got, &err), 0);
    assert_string_equal(got.task, "tenant@task");
    assert_int_equal(got.state, JOB_QUEUED);
    assert_int_equal(got.examples.n, 1);
    assert_int_equal(got.examples.items[0].n_target, 2);
    assert_int_equal(got.examples.items[0].target[1], 14);
    job_record_free(&got);
    fleet_job_peek pk;
    assert_int_equal(fleet_jobs_peek(b, id, &pk, &err), 0);
    assert_string_equal(pk.task, "tenant@task");
    assert_int_equal(pk.state, JOB_QUEUED);
    assert_null(pk.status);
    fleet_job_peek_free(&pk);

    /* A drives: its writes go through. */
    assert_int_equal(fleet_jobs_set_state(a, id, 1, JOB_RUNNING, NULL, 5, &err), 0);
    const uint8_t ckpt[] = "generation-2", status[] = {0x81, 0xa1, 'g', 0x02};
    assert_int_equal(
        fleet_jobs_checkpoint(a, id, 1, 2, ckpt, sizeof ckpt, status, sizeof status, &err), 0);

    /* A stops renewing (as a member that stalls): its lease lapses, and B claims the job with
     * A's last checkpoint, under epoch 2. Here A gives the lease up by stopping; it comes
     * back below as the same member, with nothing held, as a member that wakes up. */
    fleet_jobs_free(a);
    fleet_job_event *e = await_event(b, FLEET_JOB_CLAIMED, id);
    assert_non_null(e);
    assert_int_equal(e->epoch, 2);
    assert_int_equal(e->rec.record.state, JOB_RUNNING);
    assert_int_equal(e->rec.generation, 2);
    assert_int_equal(e->rec.checkpoint_len, sizeof ckpt);
    assert_memory_equal(e->rec.checkpoint, ckpt, sizeof ckpt);
    assert_string_equal(e->rec.record.task, "tenant@task");
    fleet_job_events_free(e);
    char *lease = NULL;
    redisReply *r = raw("GET zmix:lease:%llu", (unsigned long long)id);
    lease = strdup(r->str);
    freeReplyObject(r);
    assert_string_equal(lease, "2 host-2-bbbb");
    free(lease);

    /* A wakes up: every write it makes under epoch 1 is refused, and changes nothing. */
    a = open_member("host-1-aaaa", 250);
    const uint8_t late[] = "stale";
    memset(&err, 0, sizeof err);
    assert_int_equal(fleet_jobs_checkpoint(a, id, 1, 3, late, sizeof late, NULL, 0, &err),
                     ZMIX_ESTATE);
    assert_non_null(strstr(err.msg, "FENCED"));
    assert_int_equal(
        fleet_jobs_finish(a, id, 1, JOB_DONE, "stale", 9, (const uint8_t *)"{}", 2, &err),
        ZMIX_ESTATE);
    assert_int_equal(fleet_jobs_set_state(a, id, 1, JOB_FAILED, "stale", 9, &err), ZMIX_ESTATE);
    char *gen = hget(id, "ckpt_gen"), *st = hget(id, "state");
    assert_string_equal(gen, "2");
    assert_string_equal(st, "running");
    free(gen);
    free(st);
    /* A keeper that finds its lease held by another reports it lost (job 2: A's own, then
     * taken by a member with a later epoch). */
    job_record other = a_record("other", items, tokens);
    assert_int_equal(fleet_jobs_create(a, &other, &epoch, &joined, &err), 0);
    freeReplyObject(raw("HSET zmix:job:%llu epoch 5", (unsigned long long)other.id));
    freeReplyObject(
        raw("SET zmix:lease:%llu %s PX 60000", (unsigned long long)other.id, "5 host-9-zzzz"));
    e = await_event(a, FLEET_JOB_LOST, other.id);
    assert_non_null(e);
    fleet_job_events_free(e);
    assert_int_equal(fleet_jobs_set_state(a, other.id, 1, JOB_RUNNING, NULL, 1, &err), ZMIX_ESTATE);

    /* A cancel asked through any member reaches the driver (B). */
    assert_int_equal(fleet_jobs_request_cancel(a, id, &err), 0);
    e = await_event(b, FLEET_JOB_CANCEL, id);
    assert_non_null(e);
    fleet_job_events_free(e);

    /* B finishes: the end is written, the job leaves the open set, the lease goes. */
    assert_int_equal(fleet_jobs_finish(b, id, 2, JOB_CANCELLED, "cancelled by a client", 11,
                                       (const uint8_t *)"{\"a\":1}", 7, &err),
                     0);
    assert_int_equal(fleet_jobs_publish_status(b, id, 2, status, sizeof status, 1, &err), 0);
    assert_int_equal(fleet_jobs_peek(a, id, &pk, &err), 0);
    assert_int_equal(pk.state, JOB_CANCELLED);
    assert_true(pk.final);
    assert_int_equal(pk.status_len, sizeof status);
    fleet_job_peek_free(&pk);
    assert_int_equal(fleet_jobs_get(a, id, &got, &err), 0);
    assert_int_equal(got.state, JOB_CANCELLED);
    assert_string_equal(got.reason, "cancelled by a client");
    assert_int_equal(got.result_len, 7);
    job_record_free(&got);
    r = raw("ZRANGE zmix:jobs:open 0 -1");
    assert_int_equal(r->elements, 1); /* job 2 only */
    assert_int_equal(strtoull(r->element[0]->str, NULL, 10), other.id);
    freeReplyObject(r);
    r = raw("EXISTS zmix:lease:%llu", (unsigned long long)id);
    assert_int_equal(r->integer, 0);
    freeReplyObject(r);
    assert_int_equal(fleet_jobs_request_cancel(a, id, &err), ZMIX_ESTATE);
    assert_int_equal(fleet_jobs_peek(a, 987654, &pk, &err), ZMIX_ENOTFOUND);

    fleet_jobs_free(a);
    fleet_jobs_free(b);
}

static void test_driver_writes_a_lost_job_back(void **state)
{
    (void)state;
    if (redis_pid <= 0) skip();
    fleet_jobs *a = open_member("host-3-cccc", 500);
    zmix_error err = {0};
    zmix_example items[1];
    int32_t tokens[5];
    job_record rec = a_record("task", items, tokens);
    uint64_t epoch = 0;
    fleet_job_joined joined;
    assert_int_equal(fleet_jobs_create(a, &rec, &epoch, &joined, &err), 0);
    /* Redis restarted without its data. */
    freeReplyObject(raw("FLUSHALL"));
    char *task = NULL;
    for (int i = 0; i < 300 && !task; i++) {
        sleep_ms(10);
        task = hget(rec.id, "task");
    }
    assert_non_null(task);
    assert_string_equal(task, "task");
    free(task);
    /* The id counter is past it again: no later job reuses the id. */
    redisReply *r = raw("GET zmix:job:next");
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    assert_true(strtoull(r->str, NULL, 10) >= rec.id);
    freeReplyObject(r);
    job_record again = a_record("task2", items, tokens);
    assert_int_equal(fleet_jobs_create(a, &again, &epoch, &joined, &err), 0);
    assert_true(again.id > rec.id);
    assert_int_equal(joined.id, 0);
    /* The same task from the same inputs while it runs joins it (fleet-wide coalescing); a
     * different task with the same inputs does not. */
    job_record dup = a_record("task2", items, tokens);
    assert_int_equal(fleet_jobs_create(a, &dup, &epoch, &joined, &err), 0);
    assert_int_equal(dup.id, 0);
    assert_int_equal(joined.id, again.id);
    assert_int_equal(joined.state, JOB_QUEUED);
    job_record third = a_record("task3", items, tokens);
    assert_int_equal(fleet_jobs_create(a, &third, &epoch, &joined, &err), 0);
    assert_int_equal(joined.id, 0);
    assert_true(third.id > again.id);
    /* Its driver can go on writing under its epoch. */
    assert_int_equal(fleet_jobs_set_state(a, rec.id, 1, JOB_RUNNING, NULL, 1, &err), 0);
    fleet_jobs_free(a);
    /* Stopping gave the leases up: other members resume these jobs at once. */
    r = raw("EXISTS zmix:lease:%llu", (unsigned long long)again.id);
    assert_int_equal(r->integer, 0);
    freeReplyObject(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lease_claim_and_fencing),
        cmocka_unit_test(test_driver_writes_a_lost_job_back),
    };
    return cmocka_run_group_tests(tests, start_redis, stop_redis);
}
