/*
 * Admission of connections: the budgets per transport, the smaller budget of connections
 * that have not authenticated yet, their deadline, and failed auth calls. Thread: the event
 * loop, every function.
 *
 * Why a separate budget: a TCP connection is unauthenticated from its first byte until it
 * calls auth, and an attacker who cannot authenticate can still connect. If every slot could
 * be held by such connections, trickling a byte now and then, nobody else could get in. So:
 *   - Unix-socket connections and TCP connections are counted apart, each against
 *     --max-connections: TCP clients never take the socket owner's slots.
 *   - Unauthenticated connections get at most min(--max-unauth-connections,
 *     max(1, --max-connections / 2)) slots. When a new one arrives with that budget full (or
 *     every TCP slot taken), the oldest unauthenticated connection is closed to make room: an
 *     honest client authenticates in one round trip, so it is never the oldest for long.
 *   - Each has --auth-timeout-ms from connect to authenticate, whatever it sends meanwhile.
 *   - Before auth, one frame may be at most CONN_PREAUTH_FRAME_LIMIT bytes, and that is all
 *     a connection may buffer, so the budget of buffered bytes is slots × that limit.
 *   - CONN_AUTH_MAX_FAILURES wrong tokens close the connection.
 */
#include <stdio.h>
#include <string.h>

#include "daemon/server.h"

void conn_count(conn *c, int delta)
{
    server *srv = c->srv;
    srv->n_conns += delta;
    if (c->is_tcp)
        srv->n_tcp += delta;
    else
        srv->n_unix += delta;
    if (!c->authed) srv->n_unauth += delta;
}

void conn_unlink(conn *c)
{
    server *srv = c->srv;
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    c->prev = c->next = NULL;
    conn_count(c, -1);
}

int conn_unauth_budget(const server *srv)
{
    int half = srv->cfg->max_connections / 2;
    if (half < 1) half = 1;
    return srv->cfg->max_unauth_connections < half ? srv->cfg->max_unauth_connections : half;
}

size_t conn_preauth_room(const conn *c)
{
    size_t held = c->unp.used - c->unp.off;
    return held >= CONN_PREAUTH_FRAME_LIMIT ? 0 : CONN_PREAUTH_FRAME_LIMIT - held;
}

/* The peer's address for the log ("127.0.0.1:54321"), or "unix socket". */
static void peer_name(const conn *c, char *out, size_t size)
{
    struct sockaddr_storage ss;
    int len = sizeof ss;
    snprintf(out, size, "unix socket");
    if (!c->is_tcp || uv_tcp_getpeername(&c->h.tcp, (struct sockaddr *)&ss, &len) != 0) return;
    char host[64] = "?";
    int port = 0;
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
        uv_ip4_name(a, host, sizeof host);
        port = ntohs(a->sin_port);
    } else if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
        uv_ip6_name(a, host, sizeof host);
        port = ntohs(a->sin6_port);
    }
    snprintf(out, size, "%s:%d", host, port);
}

/* The unauthenticated connection connected first, or NULL (the list is newest first). */
static conn *oldest_unauth(server *srv)
{
    conn *found = NULL;
    for (conn *c = srv->conns; c; c = c->next)
        if (!c->authed && !c->closing) found = c;
    return found;
}

static int evict_oldest_unauth(server *srv, const char *why)
{
    conn *old = oldest_unauth(srv);
    if (!old) return 0;
    char peer[96];
    peer_name(old, peer, sizeof peer);
    ZLOG_WARN(srv->log,
              "conn %llu (%s): not authenticated after %llu ms, closed to admit a new "
              "connection (%s)",
              (unsigned long long)old->id, peer,
              (unsigned long long)(server_now_ms() - old->accepted_ms), why);
    conn_send_error_notify(old, ZMIX_ELIMIT,
                           "closed to make room: too many unauthenticated connections; call auth "
                           "right after connecting");
    conn_close_after_write(old);
    return 1;
}

const char *conn_admit(server *srv, conn *c)
{
    int max = srv->cfg->max_connections;
    if (!c->is_tcp) return srv->n_unix >= max ? "too many connections" : NULL;
    if (srv->n_tcp >= max && !evict_oldest_unauth(srv, "every TCP slot taken"))
        return "too many connections";
    if (!c->authed && srv->n_unauth >= conn_unauth_budget(srv))
        evict_oldest_unauth(srv, "unauthenticated budget full");
    return NULL;
}

void conn_auth_succeeded(conn *c)
{
    if (c->authed) return;
    c->srv->n_unauth--;
    c->authed = 1;
}

int conn_auth_failed(conn *c)
{
    server *srv = c->srv;
    char peer[96];
    peer_name(c, peer, sizeof peer);
    c->auth_failures++;
    ZLOG_WARN(srv->log, "conn %llu (%s): wrong token (attempt %d of %d)%s",
              (unsigned long long)c->id, peer, c->auth_failures, CONN_AUTH_MAX_FAILURES,
              c->auth_failures >= CONN_AUTH_MAX_FAILURES ? ": closing the connection" : "");
    return c->auth_failures >= CONN_AUTH_MAX_FAILURES;
}

int conn_auth_expired(conn *c, uint64_t now_ms)
{
    if (c->authed || c->closing) return 0;
    uint64_t age = now_ms > c->accepted_ms ? now_ms - c->accepted_ms : 0;
    if (age < (uint64_t)c->srv->cfg->auth_timeout_ms) return 0;
    char peer[96], msg[128];
    peer_name(c, peer, sizeof peer);
    ZLOG_WARN(c->srv->log, "conn %llu (%s): not authenticated within %d ms: closing",
              (unsigned long long)c->id, peer, c->srv->cfg->auth_timeout_ms);
    snprintf(msg, sizeof msg, "not authenticated within %d ms of connecting: closing",
             c->srv->cfg->auth_timeout_ms);
    conn_send_error_notify(c, ZMIX_EAUTH, msg);
    conn_close_after_write(c);
    return 1;
}
