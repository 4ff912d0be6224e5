/*
 * The connection: connect, send one request, read messages until its response arrives.
 *
 * The socket is non-blocking and every wait goes through poll() against the call's deadline,
 * so no call can hang longer than its timeout whatever the daemon does. Messages that are not
 * the awaited response are handled on the way: progress notifications go to the callback,
 * an error notification is kept to explain a close, and a response with another msgid (the
 * late answer to a call that timed out) is dropped.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "client_internal.h"

void zmix_client_opts_default(zmix_client_opts *opts)
{
    memset(opts, 0, sizeof *opts);
    opts->timeout_ms = 30000;
    opts->max_message_size = (size_t)256 << 20;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int set_nonblocking(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* Waits until fd is ready for events or the deadline passes: 1 ready, 0 timeout, -1 error. */
static int wait_fd(int fd, short events, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - now_ms();
        if (left <= 0) return 0;
        struct pollfd p = {.fd = fd, .events = events};
        int n = poll(&p, 1, left > 1000000 ? 1000000 : (int)left);
        if (n > 0) return 1;
        if (n < 0 && errno != EINTR) return -1;
    }
}

static int connect_unix(const zmix_client_addr *a, const char *spec, int *fd_out, zmix_error *err)
{
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, a->path, strlen(a->path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return zmix_error_set(err, ZMIX_ECONNECT, "socket: %s", strerror(errno));
    /* A Unix connect completes or fails at once; no timeout is needed. */
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        int e = errno;
        close(fd);
        return zmix_error_set(err, ZMIX_ECONNECT, "cannot connect to %s: %s", spec, strerror(e));
    }
    *fd_out = fd;
    return 0;
}

static int connect_tcp(const zmix_client_addr *a, const char *spec, int timeout_ms, int *fd_out,
                       zmix_error *err)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int g = getaddrinfo(a->host, a->port, &hints, &res);
    if (g != 0)
        return zmix_error_set(err, ZMIX_ECONNECT, "cannot resolve %s: %s", spec, gai_strerror(g));
    int64_t deadline = now_ms() + timeout_ms;
    int last = ECONNREFUSED;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            last = errno;
            continue;
        }
        if (set_nonblocking(fd) == 0 &&
            (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 || errno == EINPROGRESS)) {
            int ready = wait_fd(fd, POLLOUT, deadline);
            int so = ETIMEDOUT;
            socklen_t len = sizeof so;
            if (ready > 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &so, &len) == 0 && so == 0) {
                freeaddrinfo(res);
                *fd_out = fd;
                return 0;
            }
            last = ready > 0 ? so : ETIMEDOUT;
        } else {
            last = errno;
        }
        close(fd);
    }
    freeaddrinfo(res);
    return zmix_error_set(err, ZMIX_ECONNECT, "cannot connect to %s: %s", spec, strerror(last));
}

int zmix_client_connect(const char *address, const zmix_client_opts *opts, zmix_client **out,
                        zmix_error *err)
{
    *out = NULL;
    zmix_client_opts def;
    zmix_client_opts_default(&def);
    if (!opts) opts = &def;
    zmix_client_addr a;
    int rc = zmix_client_addr_parse(address, &a, err);
    if (rc) return rc;
    zmix_client *c = calloc(1, sizeof *c);
    if (!c) return zmix_error_set(err, ZMIX_ENOMEM, "out of memory for a connection");
    c->fd = -1;
    c->timeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : def.timeout_ms;
    c->max_message_size = opts->max_message_size ? opts->max_message_size : def.max_message_size;
    if (a.kind == ZMIX_ADDR_UNIX)
        snprintf(c->address, sizeof c->address, "unix:%s", a.path);
    else
        snprintf(c->address, sizeof c->address, strchr(a.host, ':') ? "tcp:[%s]:%s" : "tcp:%s:%s",
                 a.host, a.port);
    if (!msgpack_unpacker_init(&c->unpacker, 1 << 16)) {
        free(c);
        return zmix_error_set(err, ZMIX_ENOMEM, "out of memory for a connection");
    }
    msgpack_unpacked_init(&c->last);
    rc = a.kind == ZMIX_ADDR_UNIX ? connect_unix(&a, c->address, &c->fd, err)
                                  : connect_tcp(&a, c->address, c->timeout_ms, &c->fd, err);
    if (rc == 0 && set_nonblocking(c->fd) != 0)
        rc = zmix_error_set(err, ZMIX_ECONNECT, "%s: fcntl: %s", c->address, strerror(errno));
    if (rc == 0 && opts->token) rc = zmix_client_auth(c, opts->token, err);
    if (rc) {
        zmix_client_close(c);
        return rc;
    }
    *out = c;
    return 0;
}

void zmix_client_close(zmix_client *c)
{
    if (!c) return;
    if (c->fd >= 0) close(c->fd);
    msgpack_unpacked_destroy(&c->last);
    msgpack_unpacker_destroy(&c->unpacker);
    free(c);
}

void zmix_client_set_timeout(zmix_client *c, int timeout_ms)
{
    if (timeout_ms > 0) c->timeout_ms = timeout_ms;
}

const char *zmix_client_address(const zmix_client *c)
{
    return c->address;
}

void zmix_client_on_progress(zmix_client *c, zmix_client_progress_fn fn, void *user)
{
    c->on_progress = fn;
    c->on_progress_user = user;
}

void zcli_pack_str(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

static int send_all(zmix_client *c, const char *buf, size_t len, int64_t deadline, zmix_error *err)
{
    size_t at = 0;
    while (at < len) {
        ssize_t n = send(c->fd, buf + at, len - at, MSG_NOSIGNAL);
        if (n > 0) {
            at += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int r = wait_fd(c->fd, POLLOUT, deadline);
            if (r == 0)
                return zmix_error_set(err, ZMIX_ETIMEDOUT, "%s: timed out sending a request",
                                      c->address);
            if (r > 0) continue;
        }
        return zmix_error_set(err, ZMIX_ECONNECT, "%s: send failed: %s", c->address,
                              strerror(errno));
    }
    return 0;
}

/* The daemon names its error codes ("EINVAL"); map them back to ZMIX_E* values. */
static int code_from_name(const char *name, size_t n)
{
    for (int code = ZMIX_EINVAL; code >= ZMIX_EINTERNAL; code--) {
        const char *s = zmix_strerror(code);
        if (strlen(s) == n && !memcmp(s, name, n)) return code;
    }
    return ZMIX_EINTERNAL;
}

static void read_error_obj(const msgpack_object *e, int *code, char *msg, size_t cap)
{
    const msgpack_object *co = e->type == MSGPACK_OBJECT_MAP ? zcli_mp_get(e, "code") : NULL;
    const msgpack_object *mo = e->type == MSGPACK_OBJECT_MAP ? zcli_mp_get(e, "message") : NULL;
    *code = co && co->type == MSGPACK_OBJECT_STR ? code_from_name(co->via.str.ptr, co->via.str.size)
                                                 : ZMIX_EINTERNAL;
    if (mo && mo->type == MSGPACK_OBJECT_STR)
        snprintf(msg, cap, "%.*s", (int)mo->via.str.size, mo->via.str.ptr);
    else
        snprintf(msg, cap, "the daemon answered an error without a message");
}

static void handle_notification(zmix_client *c, const msgpack_object *m)
{
    if (m->via.array.size < 3 || m->via.array.ptr[1].type != MSGPACK_OBJECT_STR) return;
    const msgpack_object *name = &m->via.array.ptr[1], *params = &m->via.array.ptr[2];
    if (name->via.str.size == 5 && !memcmp(name->via.str.ptr, "error", 5)) {
        read_error_obj(params, &c->notified_code, c->notified_msg, sizeof c->notified_msg);
        return;
    }
    if (name->via.str.size == 8 && !memcmp(name->via.str.ptr, "progress", 8) && c->on_progress &&
        params->type == MSGPACK_OBJECT_MAP) {
        zmix_client_status st;
        zmix_error ignored;
        if (zcli_decode_status(params, &st, &ignored) == 0)
            c->on_progress(c->on_progress_user, &st);
        zmix_client_status_free(&st);
    }
}

static int fail_broken(zmix_client *c, int rc)
{
    c->broken = 1;
    return rc;
}

int zcli_call(zmix_client *c, const char *method, const char *params, size_t params_len,
              int extra_ms, const msgpack_object **result, zmix_error *err)
{
    if (c->broken)
        return zmix_error_set(err, ZMIX_ESTATE,
                              "%s: connection unusable after an earlier failure; reconnect",
                              c->address);
    msgpack_unpacked_destroy(&c->last);
    msgpack_unpacked_init(&c->last);
    c->have_last = 0;
    c->notified_code = 0; /* an error notification explains a close in this call only */
    uint32_t msgid = c->next_msgid++;

    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 4);
    msgpack_pack_int(&pk, 0);
    msgpack_pack_uint32(&pk, msgid);
    zcli_pack_str(&pk, method);
    if (params)
        msgpack_sbuffer_write(&sb, params, params_len);
    else
        msgpack_pack_map(&pk, 0);
    int64_t deadline = now_ms() + c->timeout_ms + (extra_ms > 0 ? extra_ms : 0);
    int rc = send_all(c, sb.data, sb.size, deadline, err);
    msgpack_sbuffer_destroy(&sb);
    if (rc) return fail_broken(c, rc);

    msgpack_unpacked msg;
    msgpack_unpacked_init(&msg);
    for (;;) {
        msgpack_unpack_return ur = msgpack_unpacker_next(&c->unpacker, &msg);
        if (ur == MSGPACK_UNPACK_SUCCESS) {
            const msgpack_object *m = &msg.data;
            if (m->type != MSGPACK_OBJECT_ARRAY || m->via.array.size < 3 ||
                m->via.array.ptr[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
                msgpack_unpacked_destroy(&msg);
                return fail_broken(c, zmix_error_set(err, ZMIX_EFORMAT,
                                                     "%s: %s: a message that is not msgpack-rpc",
                                                     c->address, method));
            }
            uint64_t type = m->via.array.ptr[0].via.u64;
            if (type == 2) {
                handle_notification(c, m);
                continue;
            }
            if (type != 1 || m->via.array.size != 4 ||
                m->via.array.ptr[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
                m->via.array.ptr[1].via.u64 != msgid)
                continue; /* a stale response to an earlier, timed-out call */
            const msgpack_object *e = &m->via.array.ptr[2];
            if (e->type != MSGPACK_OBJECT_NIL) {
                int code;
                char text[ZMIX_ERROR_MSG_MAX];
                read_error_obj(e, &code, text, sizeof text);
                msgpack_unpacked_destroy(&msg);
                return zmix_error_set(err, code, "%s", text);
            }
            c->last = msg; /* the zone moves into c->last */
            c->have_last = 1;
            *result = &c->last.data.via.array.ptr[3];
            return 0;
        }
        if (ur == MSGPACK_UNPACK_PARSE_ERROR || ur == MSGPACK_UNPACK_NOMEM_ERROR) {
            msgpack_unpacked_destroy(&msg);
            return fail_broken(c, zmix_error_set(err, ZMIX_EFORMAT,
                                                 "%s: %s: malformed msgpack from the daemon",
                                                 c->address, method));
        }
        /* MSGPACK_UNPACK_CONTINUE: need more bytes. */
        if (msgpack_unpacker_message_size(&c->unpacker) > c->max_message_size) {
            msgpack_unpacked_destroy(&msg);
            return fail_broken(c, zmix_error_set(err, ZMIX_ELIMIT,
                                                 "%s: %s: response larger than %zu bytes",
                                                 c->address, method, c->max_message_size));
        }
        if (!msgpack_unpacker_reserve_buffer(&c->unpacker, 1 << 16)) {
            msgpack_unpacked_destroy(&msg);
            return fail_broken(c,
                               zmix_error_set(err, ZMIX_ENOMEM, "%s: out of memory", c->address));
        }
        ssize_t n = recv(c->fd, msgpack_unpacker_buffer(&c->unpacker),
                         msgpack_unpacker_buffer_capacity(&c->unpacker), 0);
        if (n > 0) {
            msgpack_unpacker_buffer_consumed(&c->unpacker, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int r = wait_fd(c->fd, POLLIN, deadline);
            if (r > 0) continue;
            msgpack_unpacked_destroy(&msg);
            if (r == 0)
                return fail_broken(
                    c, zmix_error_set(err, ZMIX_ETIMEDOUT, "%s: %s: no response within %d ms",
                                      c->address, method,
                                      c->timeout_ms + (extra_ms > 0 ? extra_ms : 0)));
            return fail_broken(
                c, zmix_error_set(err, ZMIX_ECONNECT, "%s: poll: %s", c->address, strerror(errno)));
        }
        msgpack_unpacked_destroy(&msg);
        if (n == 0 && c->notified_code)
            return fail_broken(c, zmix_error_set(err, c->notified_code,
                                                 "%s: connection closed by the daemon: %s",
                                                 c->address, c->notified_msg));
        return fail_broken(
            c, zmix_error_set(err, ZMIX_ECONNECT, "%s: %s: connection closed by the daemon%s%s",
                              c->address, method, n < 0 ? ": " : "", n < 0 ? strerror(errno) : ""));
    }
}

int zmix_client_last_json(const zmix_client *c, char **json, zmix_error *err)
{
    *json = NULL;
    if (!c->have_last)
        return zmix_error_set(err, ZMIX_ESTATE, "no successful call to render as JSON");
    return zcli_render_json(&c->last.data.via.array.ptr[3], json, err);
}
