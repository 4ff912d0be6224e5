/*
 * Connections: listeners, the read path (bytes → frames → requests), the write path with its
 * backpressure, and the timeouts. Thread: the event loop, every function.
 *
 * Reading: bytes go straight into the connection's msgpack_unpacker buffer; rpc_frame_scan
 * decides, without allocating, whether a complete message within the frame limit is there,
 * and only then does msgpack_unpacker_next build objects. A message over the limit or bytes
 * that are not msgpack get an error notification and the connection is closed (a stream that
 * lost sync cannot be trusted again); a well-formed message that is not a valid request gets
 * an error response and the connection stays open.
 *
 * Writing: each response is one uv_write of a copied buffer. When a client does not read its
 * responses, its queued bytes grow: past half the write-queue limit we stop reading its
 * requests (so it cannot make us produce more), past the limit we close it. A connection whose
 * queue makes no progress for the idle timeout is closed too.
 *
 * Before a connection has authenticated (TCP with a token), it is held to conn_admit.c's
 * rules: a frame limit of CONN_PREAUTH_FRAME_LIMIT, no more buffered than that, a deadline.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "daemon/server.h"
#include "util/clock.h"

typedef struct write_req {
    uv_write_t req;
    conn *c;
    size_t len;
    char data[];
} write_req;

static void conn_resume_reading(conn *c);

static void on_closed(uv_handle_t *h)
{
    conn *c = h->data;
    msgpack_unpacker_destroy(&c->unp);
    free(c);
}

static void detach_parked(conn *c)
{
    parked *p = c->parked;
    while (p) {
        parked *next = p->conn_next;
        p->conn = NULL;
        p->conn_prev = p->conn_next = NULL;
        p = next;
    }
    c->parked = NULL;
}

void conn_close(conn *c)
{
    if (c->closing) return;
    c->closing = 1;
    detach_parked(c);
    conn_unlink(c);
    uv_close((uv_handle_t *)&c->h.stream, on_closed);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    conn *c = req->data;
    free(req);
    /* conn_close was deferred until the error message went out. */
    uv_close((uv_handle_t *)&c->h.stream, on_closed);
}

void conn_close_after_write(conn *c)
{
    if (c->closing) return;
    uv_shutdown_t *req = malloc(sizeof *req);
    if (!req) {
        conn_close(c);
        return;
    }
    c->closing = 1;
    detach_parked(c);
    conn_unlink(c);
    uv_read_stop(&c->h.stream);
    req->data = c;
    if (uv_shutdown(req, &c->h.stream, on_shutdown) != 0) {
        free(req);
        uv_close((uv_handle_t *)&c->h.stream, on_closed);
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    conn *c = h->data;
    /* Before authentication a connection may hold no more than one pre-auth frame: a longer
     * prefix is refused by the scanner, so the cap never stalls a valid auth call. */
    size_t want = c->authed ? 64 * 1024 : conn_preauth_room(c);
    if (want == 0 || !msgpack_unpacker_reserve_buffer(&c->unp, want)) {
        buf->base = NULL;
        buf->len = 0;
        return;
    }
    buf->base = msgpack_unpacker_buffer(&c->unp);
    buf->len = msgpack_unpacker_buffer_capacity(&c->unp);
    if (!c->authed && buf->len > want) buf->len = want;
}

static void on_written(uv_write_t *req, int status)
{
    write_req *w = (write_req *)req;
    conn *c = w->c;
    c->write_queued -= w->len;
    free(w);
    if (c->closing) return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    c->last_active_ms = server_now_ms();
    if (!c->reading && c->write_queued <= c->srv->cfg->write_queue_limit / 4)
        conn_resume_reading(c);
}

void conn_send(conn *c, const char *data, size_t len)
{
    if (c->closing) return;
    if (c->sink) {
        c->sink(c, data, len);
        return;
    }
    server *srv = c->srv;
    if (c->write_queued + len > srv->cfg->write_queue_limit) {
        ZLOG_WARN(srv->log,
                  "conn %llu: %zu bytes of responses unread (limit %zu): closing the connection",
                  (unsigned long long)c->id, c->write_queued + len, srv->cfg->write_queue_limit);
        conn_close(c);
        return;
    }
    write_req *w = malloc(sizeof *w + len);
    if (!w) {
        conn_close(c);
        return;
    }
    w->c = c;
    w->len = len;
    memcpy(w->data, data, len);
    uv_buf_t buf = uv_buf_init(w->data, (unsigned)len);
    c->write_queued += len;
    /* Answering is activity: a long poll answered after the idle time must reach its
     * client, not be cut off by the sweep that runs right after it. */
    c->last_active_ms = server_now_ms();
    if (uv_write(&w->req, &c->h.stream, &buf, 1, on_written) != 0) {
        c->write_queued -= len;
        free(w);
        conn_close(c);
        return;
    }
    if (c->reading && c->write_queued > srv->cfg->write_queue_limit / 2) {
        /* Backpressure: stop taking requests from a client that does not read answers. */
        uv_read_stop(&c->h.stream);
        c->reading = 0;
    }
}

void conn_reply_result(conn *c, uint32_t msgid, const msgpack_sbuffer *result)
{
    if (!c || c->closing) return;
    msgpack_sbuffer out;
    msgpack_sbuffer_init(&out);
    if (rpc_pack_result(&out, msgid, result->data, result->size) == 0)
        conn_send(c, out.data, out.size);
    msgpack_sbuffer_destroy(&out);
}

void conn_reply_error(conn *c, uint32_t msgid, int code, const char *message)
{
    if (!c || c->closing) return;
    metrics_count_error(&c->srv->metrics, code);
    msgpack_sbuffer out;
    msgpack_sbuffer_init(&out);
    rpc_pack_error(&out, msgid, zmix_strerror(code), message);
    conn_send(c, out.data, out.size);
    msgpack_sbuffer_destroy(&out);
}

void conn_send_error_notify(conn *c, int code, const char *message)
{
    metrics_count_error(&c->srv->metrics, code);
    msgpack_sbuffer out;
    msgpack_sbuffer_init(&out);
    rpc_pack_error_notify(&out, zmix_strerror(code), message);
    conn_send(c, out.data, out.size);
    msgpack_sbuffer_destroy(&out);
}

void conn_park(conn *c, parked *p)
{
    p->conn = c;
    p->conn_prev = NULL;
    p->conn_next = c->parked;
    if (c->parked) c->parked->conn_prev = p;
    c->parked = p;
}

void conn_unpark(parked *p)
{
    conn *c = p->conn;
    if (!c) return;
    if (p->conn_prev)
        p->conn_prev->conn_next = p->conn_next;
    else
        c->parked = p->conn_next;
    if (p->conn_next) p->conn_next->conn_prev = p->conn_prev;
    p->conn_prev = p->conn_next = NULL;
    p->conn = NULL;
}

void parked_reply_result(parked *p, const msgpack_sbuffer *result)
{
    conn *c = p->conn;
    conn_unpark(p);
    if (c) conn_reply_result(c, p->msgid, result);
}

void parked_reply_error(parked *p, int code, const char *message)
{
    conn *c = p->conn;
    conn_unpark(p);
    if (c) conn_reply_error(c, p->msgid, code, message);
}

static void handle_message(conn *c, const msgpack_object *obj)
{
    server *srv = c->srv;
    rpc_request req;
    int msgid_known;
    zmix_error err = {0};
    srv->requests++;
    if (rpc_request_decode(obj, &req, &msgid_known, &err) != 0) {
        if (msgid_known)
            conn_reply_error(c, req.msgid, err.code, err.msg);
        else
            conn_send_error_notify(c, err.code, err.msg);
        return;
    }
    if (req.type == RPC_NOTIFY) {
        conn_send_error_notify(c, ZMIX_EINVAL,
                               "notifications from clients are not accepted: send a request "
                               "[0, msgid, method, params]");
        return;
    }
    uint64_t t0 = zmix_now_ns();
    srv->on_request(srv, c, &req);
    uint64_t ns = zmix_now_ns() - t0;
    metrics_observe(&srv->metrics, req.method, methods_known(req.method), ns);
    ZLOG_DEBUG(srv->log, "conn %llu: %s #%u handled in %.1f us", (unsigned long long)c->id,
               req.method, req.msgid, (double)ns * 1e-3);
}

static void process_input(conn *c)
{
    server *srv = c->srv;
    while (!c->closing) {
        const uint8_t *start = (const uint8_t *)c->unp.buffer + c->unp.off;
        size_t avail = c->unp.used - c->unp.off;
        if (avail == 0) return;
        size_t frame_len = 0;
        zmix_error err = {0};
        size_t limit = c->authed ? srv->cfg->frame_limit : CONN_PREAUTH_FRAME_LIMIT;
        int st = rpc_scanner_scan(&c->scan, start, avail, limit, &frame_len, &err);
        if (st == RPC_FRAME_NEED_MORE) return;
        if (st != RPC_FRAME_COMPLETE) {
            ZLOG_INFO(srv->log, "conn %llu: %s: closing the connection", (unsigned long long)c->id,
                      err.msg);
            conn_send_error_notify(c, err.code, err.msg);
            conn_close_after_write(c);
            return;
        }
        msgpack_unpacked msg;
        msgpack_unpacked_init(&msg);
        int rc = msgpack_unpacker_next(&c->unp, &msg);
        if (rc != MSGPACK_UNPACK_SUCCESS) {
            /* The scanner and msgpack-c disagree: treat as malformed, never guess. */
            msgpack_unpacked_destroy(&msg);
            conn_send_error_notify(c, ZMIX_EFORMAT, "malformed msgpack message");
            conn_close_after_write(c);
            return;
        }
        handle_message(c, &msg.data);
        msgpack_unpacked_destroy(&msg);
        if (!c->reading) return; /* backpressure: leave the rest buffered */
    }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    conn *c = s->data;
    if (c->closing) return;
    if (nread < 0) {
        conn_close(c);
        return;
    }
    if (nread == 0) return;
    msgpack_unpacker_buffer_consumed(&c->unp, (size_t)nread);
    c->last_active_ms = server_now_ms();
    process_input(c);
}

static void conn_resume_reading(conn *c)
{
    if (c->closing || c->reading) return;
    if (uv_read_start(&c->h.stream, on_alloc, on_read) == 0) c->reading = 1;
    process_input(c); /* requests that arrived while paused */
}

static void on_connection(uv_stream_t *listener, int status)
{
    server *srv = listener->data;
    if (status < 0) {
        ZLOG_WARN(srv->log, "accept: %s", uv_strerror(status));
        return;
    }
    conn *c = calloc(1, sizeof *c);
    if (!c) return;
    int is_tcp = listener->type == UV_TCP;
    int rc = is_tcp ? uv_tcp_init(srv->loop, &c->h.tcp) : uv_pipe_init(srv->loop, &c->h.pipe, 0);
    /* Small at first: an unauthenticated connection never needs more, and an authenticated
     * one grows its buffer as it reads (on_alloc). */
    if (rc != 0 || !msgpack_unpacker_init(&c->unp, CONN_PREAUTH_FRAME_LIMIT)) {
        free(c);
        return;
    }
    c->h.stream.data = c;
    c->srv = srv;
    if (uv_accept(listener, &c->h.stream) != 0) {
        msgpack_unpacker_destroy(&c->unp);
        uv_close((uv_handle_t *)&c->h.stream, (uv_close_cb)free);
        return;
    }
    c->id = ++srv->next_conn_id;
    rpc_scanner_reset(&c->scan);
    c->is_tcp = is_tcp;
    c->authed = !(is_tcp && server_tokens_required(srv));
    c->last_active_ms = c->accepted_ms = server_now_ms();
    const char *refused = srv->shutting_down ? "the daemon is shutting down" : conn_admit(srv, c);
    c->next = srv->conns;
    if (srv->conns) srv->conns->prev = c;
    srv->conns = c;
    conn_count(c, +1);
    if (refused) {
        conn_send_error_notify(c, ZMIX_ELIMIT, refused);
        conn_close_after_write(c);
        return;
    }
    if (uv_read_start(&c->h.stream, on_alloc, on_read) == 0)
        c->reading = 1;
    else
        conn_close(c);
}

/* Connections the kernel queues before the loop accepts them. With 128, a burst of a few
 * hundred clients connecting at once (the load run: 500) had the excess refused with EAGAIN
 * on the Unix socket; the kernel caps this at net.core.somaxconn. */
#define LISTEN_BACKLOG 1024

static int listen_unix(server *srv, const char *path, zmix_error *err)
{
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode))
            return zmix_error_set(err, ZMIX_EIO, "--listen unix:%s: exists and is not a socket",
                                  path);
        /* A socket file is either a live daemon's (refuse: never steal its address) or a
         * stale one left by a crash (remove it). Only a connect attempt tells them apart. */
        int fd = socket(AF_UNIX, SOCK_STREAM, 0);
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        size_t n = strlen(path); /* < sizeof sun_path: checked by config_parse_listen */
        memcpy(sa.sun_path, path, n < sizeof sa.sun_path ? n : sizeof sa.sun_path - 1);
        int live = fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
        if (fd >= 0) close(fd);
        if (live)
            return zmix_error_set(err, ZMIX_ESTATE,
                                  "--listen unix:%s: another process is listening there", path);
        unlink(path);
    }
    uv_pipe_t *p = calloc(1, sizeof *p);
    if (!p) return zmix_error_set(err, ZMIX_ENOMEM, "out of memory");
    uv_pipe_init(srv->loop, p, 0);
    p->data = srv;
    /* Owner-only from the first instant: the umask applies to bind's socket file. */
    mode_t old = umask(0177);
    int rc = uv_pipe_bind(p, path);
    umask(old);
    if (rc == 0) rc = chmod(path, 0600) == 0 ? 0 : uv_translate_sys_error(errno);
    if (rc == 0) rc = uv_listen((uv_stream_t *)p, LISTEN_BACKLOG, on_connection);
    if (rc != 0) {
        uv_close((uv_handle_t *)p, (uv_close_cb)free);
        return zmix_error_set(err, ZMIX_EIO, "--listen unix:%s: %s", path, uv_strerror(rc));
    }
    srv->listeners[srv->n_listeners++] = (uv_stream_t *)p;
    snprintf(srv->unix_paths[srv->n_unix_paths++], CONFIG_PATH_MAX, "%s", path);
    return 0;
}

static int listen_tcp(server *srv, const listen_addr *a, zmix_error *err)
{
    struct sockaddr_storage ss;
    const char *host = !strcmp(a->host, "localhost") ? "127.0.0.1" : a->host;
    int rc = strchr(host, ':') ? uv_ip6_addr(host, a->port, (struct sockaddr_in6 *)&ss)
                               : uv_ip4_addr(host, a->port, (struct sockaddr_in *)&ss);
    if (rc != 0)
        return zmix_error_set(err, ZMIX_EINVAL, "--listen tcp:%s:%d: not a numeric address",
                              a->host, a->port);
    uv_tcp_t *t = calloc(1, sizeof *t);
    if (!t) return zmix_error_set(err, ZMIX_ENOMEM, "out of memory");
    uv_tcp_init(srv->loop, t);
    t->data = srv;
    rc = uv_tcp_bind(t, (const struct sockaddr *)&ss, 0);
    if (rc == 0) rc = uv_listen((uv_stream_t *)t, LISTEN_BACKLOG, on_connection);
    if (rc != 0) {
        uv_close((uv_handle_t *)t, (uv_close_cb)free);
        return zmix_error_set(err, ZMIX_EIO, "--listen tcp:%s:%d: %s", a->host, a->port,
                              uv_strerror(rc));
    }
    srv->listeners[srv->n_listeners++] = (uv_stream_t *)t;
    return 0;
}

int conn_listen_all(server *srv, zmix_error *err)
{
    for (int i = 0; i < srv->cfg->n_listen; i++) {
        listen_addr a;
        int rc = config_parse_listen(srv->cfg->listen[i], &a, err);
        if (!rc) rc = a.is_tcp ? listen_tcp(srv, &a, err) : listen_unix(srv, a.path, err);
        if (rc) return rc;
        ZLOG_INFO(srv->log, "listening on %s%s", srv->cfg->listen[i],
                  a.is_tcp && server_tokens_required(srv) ? " (token required)" : "");
    }
    return 0;
}

void conn_close_listeners(server *srv)
{
    for (int i = 0; i < srv->n_listeners; i++)
        uv_close((uv_handle_t *)srv->listeners[i], (uv_close_cb)free);
    srv->n_listeners = 0;
    for (int i = 0; i < srv->n_unix_paths; i++) unlink(srv->unix_paths[i]);
    srv->n_unix_paths = 0;
}

void conn_close_all(server *srv)
{
    while (srv->conns) conn_close(srv->conns);
}

void conn_sweep(server *srv, uint64_t now_ms)
{
    uint64_t idle = (uint64_t)srv->cfg->idle_timeout_ms;
    conn *c = srv->conns;
    while (c) {
        conn *next = c->next;
        if (conn_auth_expired(c, now_ms)) {
            c = next;
            continue;
        }
        /* A connection waiting on its own parked requests is not idle, unless responses are
         * stuck in its write queue (the client stopped reading). */
        int stuck = c->write_queued > 0;
        /* A response sent earlier in this tick stamps the connection after now_ms was read:
         * that is no idle time, not an unsigned wrap-around to 2^64 - 1 ms. */
        uint64_t quiet = now_ms > c->last_active_ms ? now_ms - c->last_active_ms : 0;
        if (quiet > idle && (!c->parked || stuck)) {
            ZLOG_INFO(srv->log, "conn %llu: idle for %llu ms: closing", (unsigned long long)c->id,
                      (unsigned long long)quiet);
            conn_close(c);
        }
        c = next;
    }
}
