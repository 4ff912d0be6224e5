/*
 * The client's transport against a scripted peer on a real Unix socket: the behaviours a
 * healthy daemon never shows on demand (a response that never comes, one split into single
 * bytes, interleaved notifications and stale responses, a close after an error notification,
 * an oversized or malformed reply). The peer reads each request, then plays its script.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <msgpack.h>

#include "zmix/client.h"

typedef enum {
    PLAY_REPLY,          /* a result map {"pong": true} */
    PLAY_SPLIT,          /* the same, one byte per write */
    PLAY_NOTIFY_STALE,   /* progress notification, a response to another msgid, then reply */
    PLAY_SILENT,         /* read the request, answer nothing */
    PLAY_ERROR,          /* an error response ENOTFOUND */
    PLAY_CLOSE_NOTIFIED, /* an error notification, then close */
    PLAY_HUGE,           /* a response larger than the client's limit */
    PLAY_GARBAGE,        /* bytes that are not msgpack */
} play;

typedef struct peer {
    char path[108];
    int listen_fd;
    play script[4];
    int n_script;
    pthread_t thread;
} peer;

static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL); /* the client may have gone */
        if (w <= 0) return;
        p += w;
        n -= (size_t)w;
    }
}

static void pack_str(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str(pk, strlen(s));
    msgpack_pack_str_body(pk, s, strlen(s));
}

/* Reads one request and returns its msgid (or -1 when the client went away). */
static int64_t read_request(int fd, msgpack_unpacker *u)
{
    msgpack_unpacked m;
    msgpack_unpacked_init(&m);
    for (;;) {
        if (msgpack_unpacker_next(u, &m) == MSGPACK_UNPACK_SUCCESS) {
            int64_t id = (int64_t)m.data.via.array.ptr[1].via.u64;
            msgpack_unpacked_destroy(&m);
            return id;
        }
        msgpack_unpacker_reserve_buffer(u, 4096);
        ssize_t n = read(fd, msgpack_unpacker_buffer(u), 4096);
        if (n <= 0) {
            msgpack_unpacked_destroy(&m);
            return -1;
        }
        msgpack_unpacker_buffer_consumed(u, (size_t)n);
    }
}

static void pack_response(msgpack_sbuffer *sb, uint32_t msgid)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 4);
    msgpack_pack_int(&pk, 1);
    msgpack_pack_uint32(&pk, msgid);
    msgpack_pack_nil(&pk);
    msgpack_pack_map(&pk, 1);
    pack_str(&pk, "pong");
    msgpack_pack_true(&pk);
}

static void *peer_main(void *arg)
{
    peer *p = arg;
    int fd = accept(p->listen_fd, NULL, NULL);
    if (fd < 0) return NULL;
    msgpack_unpacker u;
    msgpack_unpacker_init(&u, 4096);
    for (int i = 0; i < p->n_script; i++) {
        int64_t id = read_request(fd, &u);
        if (id < 0) break;
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        switch (p->script[i]) {
        case PLAY_REPLY: pack_response(&sb, (uint32_t)id); break;
        case PLAY_SPLIT:
            pack_response(&sb, (uint32_t)id);
            for (size_t k = 0; k < sb.size; k++) write_all(fd, sb.data + k, 1);
            sb.size = 0;
            break;
        case PLAY_NOTIFY_STALE:
            msgpack_pack_array(&pk, 3);
            msgpack_pack_int(&pk, 2);
            pack_str(&pk, "progress");
            msgpack_pack_map(&pk, 3);
            pack_str(&pk, "job");
            msgpack_pack_int(&pk, 5);
            pack_str(&pk, "state");
            pack_str(&pk, "running");
            pack_str(&pk, "generation");
            msgpack_pack_int(&pk, 3);
            pack_response(&sb, (uint32_t)id + 1000); /* stale: not this call's */
            pack_response(&sb, (uint32_t)id);
            break;
        case PLAY_SILENT: break;
        case PLAY_ERROR:
            msgpack_pack_array(&pk, 4);
            msgpack_pack_int(&pk, 1);
            msgpack_pack_uint32(&pk, (uint32_t)id);
            msgpack_pack_map(&pk, 2);
            pack_str(&pk, "code");
            pack_str(&pk, "ENOTFOUND");
            pack_str(&pk, "message");
            pack_str(&pk, "status: no job 9");
            msgpack_pack_nil(&pk);
            break;
        case PLAY_CLOSE_NOTIFIED:
            msgpack_pack_array(&pk, 3);
            msgpack_pack_int(&pk, 2);
            pack_str(&pk, "error");
            msgpack_pack_map(&pk, 2);
            pack_str(&pk, "code");
            pack_str(&pk, "ELIMIT");
            pack_str(&pk, "message");
            pack_str(&pk, "frame of 9999999 bytes exceeds the limit");
            break;
        case PLAY_HUGE: {
            msgpack_pack_array(&pk, 4);
            msgpack_pack_int(&pk, 1);
            msgpack_pack_uint32(&pk, (uint32_t)id);
            msgpack_pack_nil(&pk);
            static char blob[1 << 20]; /* more than one read: the limit is checked between reads */
            msgpack_pack_bin(&pk, sizeof blob);
            msgpack_pack_bin_body(&pk, blob, sizeof blob);
            break;
        }
        case PLAY_GARBAGE: write_all(fd, "\xc1\xc1\xc1\xc1", 4); break;
        }
        write_all(fd, sb.data, sb.size);
        msgpack_sbuffer_destroy(&sb);
        if (p->script[i] == PLAY_CLOSE_NOTIFIED) { /* as the daemon does after such an error */
            close(fd);
            msgpack_unpacker_destroy(&u);
            return NULL;
        }
    }
    /* hold the connection until the client closes it (a silent peer must stay silent) */
    char buf[256];
    while (read(fd, buf, sizeof buf) > 0) {
    }
    close(fd);
    msgpack_unpacker_destroy(&u);
    return NULL;
}

static void peer_start(peer *p, const play *script, int n)
{
    memset(p, 0, sizeof *p);
    snprintf(p->path, sizeof p->path, "/tmp/zmix-ct-%ld-%d.sock", (long)getpid(), rand());
    memcpy(p->script, script, (size_t)n * sizeof *script);
    p->n_script = n;
    p->listen_fd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_true(p->listen_fd >= 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    memcpy(sa.sun_path, p->path, strlen(p->path) + 1);
    unlink(p->path);
    assert_int_equal(bind(p->listen_fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(p->listen_fd, 1), 0);
    assert_int_equal(pthread_create(&p->thread, NULL, peer_main, p), 0);
}

static void peer_stop(peer *p, zmix_client *c)
{
    zmix_client_close(c); /* lets the peer's final read end */
    pthread_join(p->thread, NULL);
    close(p->listen_fd);
    unlink(p->path);
}

static zmix_client *connect_to(peer *p, int timeout_ms, size_t max_message)
{
    char addr[128];
    snprintf(addr, sizeof addr, "unix:%s", p->path);
    zmix_client_opts o;
    zmix_client_opts_default(&o);
    o.timeout_ms = timeout_ms;
    if (max_message) o.max_message_size = max_message;
    zmix_client *c = NULL;
    zmix_error err;
    assert_int_equal(zmix_client_connect(addr, &o, &c, &err), 0);
    return c;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void test_reply_whole_and_split(void **state)
{
    peer p;
    play s[] = {PLAY_REPLY, PLAY_SPLIT, PLAY_REPLY};
    peer_start(&p, s, 3);
    zmix_client *c = connect_to(&p, 5000, 0);
    zmix_error err;
    for (int i = 0; i < 3; i++) assert_int_equal(zmix_client_ping(c, NULL, 0, &err), 0);
    char *json;
    assert_int_equal(zmix_client_last_json(c, &json, &err), 0);
    assert_string_equal(json, "{\"pong\":true}");
    free(json);
    peer_stop(&p, c);
}

static void on_progress(void *user, const zmix_client_status *s)
{
    zmix_client_status *seen = user;
    *seen = *s; /* scalar fields only: the callback's status is freed after it returns */
    seen->best_alpha = NULL;
    seen->history = NULL;
}

static void test_notifications_and_stale_responses(void **state)
{
    peer p;
    play s[] = {PLAY_NOTIFY_STALE, PLAY_REPLY};
    peer_start(&p, s, 2);
    zmix_client *c = connect_to(&p, 5000, 0);
    zmix_client_status seen;
    memset(&seen, 0, sizeof seen);
    zmix_client_on_progress(c, on_progress, &seen);
    zmix_error err;
    assert_int_equal(zmix_client_ping(c, NULL, 0, &err), 0);
    assert_true(seen.job == 5);
    assert_int_equal(seen.generation, 3);
    assert_string_equal(seen.state, "running");
    /* the stale response was dropped, so the next call reads its own */
    assert_int_equal(zmix_client_ping(c, NULL, 0, &err), 0);
    peer_stop(&p, c);
}

static void test_timeout_then_refuses(void **state)
{
    peer p;
    play s[] = {PLAY_SILENT};
    peer_start(&p, s, 1);
    zmix_client *c = connect_to(&p, 200, 0);
    zmix_error err;
    double t0 = now_s();
    assert_int_equal(zmix_client_ping(c, NULL, 0, &err), ZMIX_ETIMEDOUT);
    double took = now_s() - t0;
    assert_true(took >= 0.19 && took < 3.0);
    assert_non_null(strstr(err.msg, "no response within 200 ms"));
    assert_int_equal(zmix_client_ping(c, NULL, 0, &err), ZMIX_ESTATE);
    assert_non_null(strstr(err.msg, "reconnect"));
    peer_stop(&p, c);
}

static void test_error_response_keeps_connection(void **state)
{
    peer p;
    play s[] = {PLAY_ERROR, PLAY_REPLY};
    peer_start(&p, s, 2);
    zmix_client *c = connect_to(&p, 5000, 0);
    zmix_error err;
    zmix_client_status st;
    assert_int_equal(zmix_client_status_get(c, 9, 0, &st, &err), ZMIX_ENOTFOUND);
    assert_string_equal(err.msg, "status: no job 9");
    assert_int_equal(zmix_client_ping(c, NULL, 0, &err), 0);
    peer_stop(&p, c);
}

static void test_close_after_error_notification(void **state)
{
    peer p;
    play s[] = {PLAY_CLOSE_NOTIFIED};
    peer_start(&p, s, 1);
    zmix_client *c = connect_to(&p, 5000, 0);
    zmix_error err;
    /* the close is explained by the notification that preceded it, with its code */
    assert_int_equal(zmix_client_ping(c, NULL, 0, &err), ZMIX_ELIMIT);
    assert_non_null(strstr(err.msg, "connection closed by the daemon: frame of 9999999 bytes"));
    assert_int_equal(zmix_client_ping(c, NULL, 0, &err), ZMIX_ESTATE);
    peer_stop(&p, c);
}

static void test_oversized_and_garbage(void **state)
{
    peer p;
    play s[] = {PLAY_HUGE};
    peer_start(&p, s, 1);
    zmix_client *c = connect_to(&p, 5000, 1024);
    zmix_error err;
    assert_int_equal(zmix_client_ping(c, NULL, 0, &err), ZMIX_ELIMIT);
    assert_non_null(strstr(err.msg, "larger than 1024 bytes"));
    peer_stop(&p, c);

    play g[] = {PLAY_GARBAGE};
    peer_start(&p, g, 1);
    c = connect_to(&p, 5000, 0);
    assert_int_equal(zmix_client_ping(c, NULL, 0, &err), ZMIX_EFORMAT);
    assert_non_null(strstr(err.msg, "malformed msgpack"));
    peer_stop(&p, c);
}

static void test_connect_refused(void **state)
{
    zmix_client *c = (zmix_client *)1;
    zmix_error err;
    assert_int_equal(zmix_client_connect("unix:/nonexistent/dir/zmixd.sock", NULL, &c, &err),
                     ZMIX_ECONNECT);
    assert_null(c);
    assert_non_null(strstr(err.msg, "cannot connect to unix:/nonexistent/dir/zmixd.sock"));
    assert_non_null(strstr(err.msg, "No such file or directory"));
    /* a TCP port nobody listens on: refused quickly, not after the timeout */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
    assert_int_equal(bind(s, (struct sockaddr *)&sa, sizeof sa), 0);
    socklen_t len = sizeof sa;
    getsockname(s, (struct sockaddr *)&sa, &len);
    close(s); /* the port is now free, and nothing listens on it */
    char addr[64];
    snprintf(addr, sizeof addr, "tcp:127.0.0.1:%d", ntohs(sa.sin_port));
    assert_int_equal(zmix_client_connect(addr, NULL, &c, &err), ZMIX_ECONNECT);
    assert_non_null(strstr(err.msg, "Connection refused"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reply_whole_and_split),
        cmocka_unit_test(test_notifications_and_stale_responses),
        cmocka_unit_test(test_timeout_then_refuses),
        cmocka_unit_test(test_error_response_keeps_connection),
        cmocka_unit_test(test_close_after_error_notification),
        cmocka_unit_test(test_oversized_and_garbage),
        cmocka_unit_test(test_connect_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
