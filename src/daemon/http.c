/*
 * The HTTP listener (--http HOST:PORT): /metrics, the dashboard's static files and its JSON
 * API, served by libmicrohttpd on a thread of its own.
 *
 * Threads: the HTTP thread parses requests, checks the token and serves the static files,
 * which are constants. It never reads the loop's state: a request for data (/metrics,
 * /api/...) is suspended and queued under `lock`, the loop is woken (uv_async), renders the
 * answer (a snapshot of that moment) into the request and resumes it; from then on only
 * the HTTP thread touches the request again. The JSON API runs the protocol's own methods
 * on a connection of the administrator's that lives inside this file (conn.sink), so it
 * shows exactly what `zmix jobs`, `status`, `history`, `tasks` and `get` show.
 */
#include <arpa/inet.h>
#include <cJSON.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "daemon/server.h"
#include "daemon/web_assets.h"
#include "util/clock.h"
#include "util/json_double.h"

#define HTTP_MAX_CONNECTIONS 32
#define HTTP_TIMEOUT_S       30
#define HTTP_MAX_JOBS_LISTED 500
#define HTTP_HISTORY_CACHED  8
#define HTTP_NICE_DELTA      5  /* as the workers: the loop runs first (pool.c) */
#define HTTP_JOBS_PER_SLICE  16 /* /api/jobs packs this many jobs per loop turn */

/* MP_RPC_JOBS: an RPC response whose result's "jobs" list is the answer (a fleet's /api/jobs) */
enum { MP_NONE = 0, MP_RPC, MP_OBJECT, MP_RPC_JOBS };

typedef struct http_req http_req;
struct http_req {
    struct MHD_Connection *mc;
    http_server *h;
    char path[256];
    /* Written by the loop before it resumes the request, then read by the HTTP thread. */
    int status;
    const char *type;
    char *body;
    size_t len;
    int msgpack; /* body is msgpack for the HTTP thread to turn into JSON: MP_RPC, ... */
    int metrics; /* body is /metrics: the HTTP thread adds the process's memory */
    /* Loop only: */
    uint32_t msgid;    /* the request made for it on the administrator's connection */
    uint64_t hist_job; /* a history request: its job, and what the answer will be valid for */
    int hist_gen, hist_phase;
    uint64_t *ids; /* /api/jobs: the jobs to list, packed a slice per loop turn into sb */
    size_t n_ids, next_id, packed;
    int limit; /* ?limit=N: finished jobs listed at most */
    msgpack_sbuffer sb;
    http_req *next;
};

struct http_server {
    server *srv;
    struct MHD_Daemon *d;
    int fd;
    uv_async_t async;
    pthread_mutex_t lock;
    http_req *queue; /* lock: suspended requests for the loop */
    int niced;       /* HTTP thread: its priority was lowered */
    /* Answered requests go to the resumer thread, which calls MHD_resume_connection: that
     * takes libmicrohttpd's own locks, which its (lower-priority) thread may hold for a
     * while, and the loop must never wait for them. */
    pthread_t resumer;
    pthread_mutex_t rlock;
    pthread_cond_t rwake;
    http_req *resume; /* rlock */
    int resumer_stop; /* rlock */
    int stopping;     /* lock: no more requests are queued */
    atomic_int n_conns;
    /* Read-only once started: */
    int need_token;
    char bearer[sizeof((server *)0)->token + 8]; /* "Bearer TOKEN" */
    size_t bearer_len;
    /* Loop only: */
    http_req *pending; /* waiting for their answer on vc */
    conn *vc;
    uint32_t next_msgid;
    /* The last history answers (the dashboard asks for the same one every second, and it
     * changes once a generation): valid while the job's generation and phase are. */
    struct {
        uint64_t job;
        int gen, phase;
        char *data; /* the response [1, msgid, nil, result] */
        size_t len;
        uint64_t used;
    } hist[HTTP_HISTORY_CACHED];
    uint64_t hist_clock;
};

/* ---- HTTP thread ----------------------------------------------------------------------- */

static const web_asset *web_asset_find(const char *path)
{
    for (size_t i = 0; i < web_assets_count; i++)
        if (!strcmp(web_assets[i].path, path)) return &web_assets[i];
    return NULL;
}

/* Answers sent, by HTTP status (zmix_http_responses_total). HTTP thread only. */
static const unsigned http_statuses[] = {200, 400, 401, 404, 405, 409, 414, 429, 500, 503};
#define HTTP_N_STATUSES (sizeof http_statuses / sizeof *http_statuses)
static uint64_t http_status_counts[HTTP_N_STATUSES];

static enum MHD_Result respond(struct MHD_Connection *mc, unsigned status, const char *type,
                               const void *body, size_t len, enum MHD_ResponseMemoryMode mode)
{
    for (size_t i = 0; i < HTTP_N_STATUSES; i++)
        if (http_statuses[i] == status) http_status_counts[i]++;
    struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)body, mode);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    /* The page loads nothing from elsewhere and may not be framed. */
    MHD_add_response_header(r, "Content-Security-Policy",
                            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'");
    if (status == MHD_HTTP_UNAUTHORIZED)
        MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"zmixd\"");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    enum MHD_Result rc = MHD_queue_response(mc, status, r);
    MHD_destroy_response(r);
    return rc;
}

__attribute__((format(printf, 3, 4))) static enum MHD_Result
respond_text(struct MHD_Connection *mc, unsigned status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char msg[512];
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0) n = 0;
    if ((size_t)n >= sizeof msg - 1) n = (int)sizeof msg - 2;
    msg[n++] = '\n';
    return respond(mc, status, "text/plain; charset=utf-8", msg, (size_t)n, MHD_RESPMEM_MUST_COPY);
}

/* Constant-time comparison: how much of a token matched must not show in the timing. */
static int same_secret(const char *a, size_t alen, const char *b, size_t blen)
{
    unsigned char diff = alen != blen;
    size_t n = alen < blen ? alen : blen;
    for (size_t i = 0; i < n; i++) diff |= (unsigned char)(a[i] ^ b[i]);
    return diff == 0;
}

static int is_job_path(const char *p, const char *tail)
{
    if (strncmp(p, "/api/jobs/", 10)) return 0;
    p += 10;
    size_t digits = strspn(p, "0123456789");
    return digits > 0 && digits <= 19 && !strcmp(p + digits, tail);
}

static int is_data_path(const char *p)
{
    return !strcmp(p, "/metrics") || !strcmp(p, "/api/jobs") || !strcmp(p, "/api/tasks") ||
           !strcmp(p, "/api/stats") || !strcmp(p, "/api/info") || is_job_path(p, "") ||
           is_job_path(p, "/history") ||
           (!strncmp(p, "/api/tasks/", 11) && p[11] && !strchr(p + 11, '/'));
}

/* Not cJSON's own printing: it stops at 15 digits when they come within its tolerance, so the
 * API would disagree with the RPC answer in the last digit. */
static cJSON *json_number(double v)
{
    char text[32];
    zmix_json_double(text, v);
    return cJSON_CreateRaw(text);
}

static cJSON *to_json(const msgpack_object *o)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: return cJSON_CreateNull();
    case MSGPACK_OBJECT_BOOLEAN: return cJSON_CreateBool(o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER: return cJSON_CreateNumber((double)o->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return cJSON_CreateNumber((double)o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: return json_number(o->via.f64);
    case MSGPACK_OBJECT_STR: {
        char *s = malloc(o->via.str.size + 1);
        if (!s) return NULL;
        memcpy(s, o->via.str.ptr, o->via.str.size);
        s[o->via.str.size] = '\0';
        cJSON *j = cJSON_CreateString(s);
        free(s);
        return j;
    }
    case MSGPACK_OBJECT_ARRAY: {
        cJSON *a = cJSON_CreateArray();
        for (uint32_t i = 0; a && i < o->via.array.size; i++) {
            cJSON *e = to_json(&o->via.array.ptr[i]);
            if (!e || !cJSON_AddItemToArray(a, e)) {
                cJSON_Delete(e);
                cJSON_Delete(a);
                return NULL;
            }
        }
        return a;
    }
    case MSGPACK_OBJECT_MAP: {
        cJSON *m = cJSON_CreateObject();
        for (uint32_t i = 0; m && i < o->via.map.size; i++) {
            const msgpack_object_kv *kv = &o->via.map.ptr[i];
            if (kv->key.type != MSGPACK_OBJECT_STR) continue;
            char key[64];
            snprintf(key, sizeof key, "%.*s", (int)kv->key.via.str.size, kv->key.via.str.ptr);
            cJSON *e = to_json(&kv->val);
            if (!e || !cJSON_AddItemToObject(m, key, e)) {
                cJSON_Delete(e);
                cJSON_Delete(m);
                return NULL;
            }
        }
        return m;
    }
    default: /* bin and ext: the API never asks for vectors */ return cJSON_CreateNull();
    }
}

static int status_of_error(const char *code)
{
    if (!strcmp(code, "ENOTFOUND")) return 404;
    if (!strcmp(code, "EINVAL") || !strcmp(code, "ERANGE")) return 400;
    if (!strcmp(code, "ESTATE")) return 409;
    if (!strcmp(code, "ELIMIT")) return 429;
    return 500;
}

/* The loop's msgpack answer as JSON: a response [1, msgid, error, result] (MP_RPC) answers
 * 200 with the result or the error's status with the error map; MP_OBJECT is the result. */
static enum MHD_Result respond_json(struct MHD_Connection *mc, http_req *r)
{
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    cJSON *j = NULL;
    unsigned status = 200;
    if (msgpack_unpack_next(&u, r->body, r->len, &off) == MSGPACK_UNPACK_SUCCESS) {
        const msgpack_object *o = &u.data;
        int rpc = r->msgpack == MP_RPC || r->msgpack == MP_RPC_JOBS;
        if (rpc && o->type == MSGPACK_OBJECT_ARRAY && o->via.array.size == 4) {
            const msgpack_object *a = o->via.array.ptr;
            o = &a[3];
            if (a[2].type != MSGPACK_OBJECT_NIL) {
                const msgpack_object *code = rpc_map_get(&a[2], "code");
                char name[32] = "EINTERNAL";
                if (code && code->type == MSGPACK_OBJECT_STR)
                    snprintf(name, sizeof name, "%.*s", (int)code->via.str.size, code->via.str.ptr);
                status = (unsigned)status_of_error(name);
                o = &a[2];
            } else if (r->msgpack == MP_RPC_JOBS) {
                const msgpack_object *list = rpc_map_get(o, "jobs");
                if (list) o = list;
            }
        }
        j = to_json(o);
    }
    msgpack_unpacked_destroy(&u);
    char *text = j ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    if (!text) return respond_text(mc, 500, "out of memory");
    return respond(mc, status, "application/json", text, strlen(text), MHD_RESPMEM_MUST_FREE);
}

/* Read here rather than on the loop: /proc costs system calls, and it is the process's. */
static void add_process_metrics(http_req *r)
{
    metrics_buf b = {.data = r->body, .len = r->len, .cap = r->len};
    metrics_printf(&b,
                   "# HELP zmix_process_resident_memory_bytes Resident memory of the zmixd "
                   "process.\n# TYPE zmix_process_resident_memory_bytes gauge\n"
                   "zmix_process_resident_memory_bytes %ld\n",
                   metrics_rss_bytes());
    metrics_printf(&b, "# HELP zmix_http_responses_total Answers of the HTTP listener, by "
                       "status (this scrape not counted yet).\n"
                       "# TYPE zmix_http_responses_total counter\n");
    for (size_t i = 0; i < HTTP_N_STATUSES; i++)
        metrics_printf(&b, "zmix_http_responses_total{status=\"%u\"} %llu\n", http_statuses[i],
                       (unsigned long long)http_status_counts[i]);
    r->body = b.data;
    r->len = b.len;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *mc, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_size, void **con_cls)
{
    http_server *h = cls;
    (void)version;
    (void)upload_data;
    http_req *r = *con_cls;
    if (!h->niced) {
        h->niced = 1;
        pool_lower_thread_priority(HTTP_NICE_DELTA);
    }
    if (r) { /* resumed: the loop has answered */
        if (r->msgpack) return respond_json(mc, r);
        if (r->metrics) add_process_metrics(r);
        return respond(mc, (unsigned)r->status, r->type, r->body, r->len, MHD_RESPMEM_MUST_COPY);
    }
    if (*upload_size) *upload_size = 0; /* a body is never wanted */
    if (strcmp(method, "GET") && strcmp(method, "HEAD"))
        return respond_text(mc, MHD_HTTP_METHOD_NOT_ALLOWED,
                            "method %s not allowed: the HTTP listener is read-only (GET, HEAD)",
                            method);
    if (strlen(url) >= sizeof r->path)
        return respond_text(mc, MHD_HTTP_URI_TOO_LONG, "path of %zu bytes: at most %zu",
                            strlen(url), sizeof r->path - 1);
    /* The static files hold no data: the page asks for the token itself (docs/metrics.md). */
    const web_asset *a = web_asset_find(!strcmp(url, "/") ? "/index.html" : url);
    if (a) return respond(mc, MHD_HTTP_OK, a->type, a->data, a->len, MHD_RESPMEM_PERSISTENT);
    if (!is_data_path(url))
        return respond_text(mc, MHD_HTTP_NOT_FOUND,
                            "no page %s here: the dashboard is /, data is at /metrics, "
                            "/api/jobs, /api/jobs/ID, /api/jobs/ID/history, /api/tasks, "
                            "/api/tasks/NAME, /api/stats and /api/info",
                            url);
    if (h->need_token) {
        const char *auth = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, "Authorization");
        if (!auth)
            return respond_text(mc, MHD_HTTP_UNAUTHORIZED,
                                "%s needs an 'Authorization: Bearer TOKEN' header with the "
                                "daemon's --token-file token",
                                url);
        if (!same_secret(auth, strlen(auth), h->bearer, h->bearer_len))
            return respond_text(mc, MHD_HTTP_UNAUTHORIZED,
                                "%s: wrong token in the Authorization header (expected "
                                "'Bearer' and the daemon's --token-file token; tenants' tokens "
                                "do not open the HTTP listener)",
                                url);
    }
    int limit = HTTP_MAX_JOBS_LISTED;
    const char *lim = MHD_lookup_connection_value(mc, MHD_GET_ARGUMENT_KIND, "limit");
    if (lim && !strcmp(url, "/api/jobs")) {
        char *end;
        long v = strtol(lim, &end, 10);
        if (!*lim || *end || v < 1 || v > HTTP_MAX_JOBS_LISTED)
            return respond_text(mc, MHD_HTTP_BAD_REQUEST, "/api/jobs?limit=%s: expected 1..%d", lim,
                                HTTP_MAX_JOBS_LISTED);
        limit = (int)v;
    }
    r = calloc(1, sizeof *r);
    if (!r) return MHD_NO;
    r->mc = mc;
    r->h = h;
    r->limit = limit;
    snprintf(r->path, sizeof r->path, "%s", url);
    *con_cls = r;
    /* Suspended before the loop can see it, so the loop's resume always follows. */
    MHD_suspend_connection(mc);
    pthread_mutex_lock(&h->lock);
    int stopping = h->stopping;
    if (!stopping) {
        r->next = h->queue;
        h->queue = r;
    }
    pthread_mutex_unlock(&h->lock);
    if (stopping) {
        static const char msg[] = "zmixd is shutting down\n";
        r->status = MHD_HTTP_SERVICE_UNAVAILABLE;
        r->type = "text/plain; charset=utf-8";
        r->body = malloc(sizeof msg);
        if (r->body) memcpy(r->body, msg, sizeof msg);
        r->len = r->body ? sizeof msg - 1 : 0;
        MHD_resume_connection(mc);
        return MHD_YES;
    }
    uv_async_send(&h->async);
    return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *mc, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)mc;
    (void)toe;
    http_req *r = *con_cls;
    if (!r) return;
    free(r->body);
    free(r);
    *con_cls = NULL;
}

static void on_connection(void *cls, struct MHD_Connection *mc, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    http_server *h = cls;
    (void)mc;
    (void)socket_context;
    atomic_fetch_add(&h->n_conns, code == MHD_CONNECTION_NOTIFY_STARTED ? 1 : -1);
}

/* ---- Loop ------------------------------------------------------------------------------ */

/* Hands the answer to the HTTP thread; r belongs to it from here on. */
static void answer(http_req *r, int status, const char *type, char *body, size_t len)
{
    http_server *h = r->h;
    r->status = status;
    r->type = type;
    r->body = body;
    r->len = body ? len : 0;
    pthread_mutex_lock(&h->rlock);
    r->next = h->resume;
    h->resume = r;
    pthread_cond_signal(&h->rwake);
    pthread_mutex_unlock(&h->rlock);
}

static void *resumer_main(void *arg)
{
    http_server *h = arg;
    pool_lower_thread_priority(HTTP_NICE_DELTA);
    pthread_mutex_lock(&h->rlock);
    for (;;) {
        while (!h->resume && !h->resumer_stop) pthread_cond_wait(&h->rwake, &h->rlock);
        http_req *list = h->resume;
        h->resume = NULL;
        if (!list) break; /* stopping, and nothing left to resume */
        pthread_mutex_unlock(&h->rlock);
        while (list) {
            http_req *next = list->next; /* list belongs to the HTTP thread once resumed */
            MHD_resume_connection(list->mc);
            list = next;
        }
        pthread_mutex_lock(&h->rlock);
    }
    pthread_mutex_unlock(&h->rlock);
    return NULL;
}

static void answer_text(http_req *r, int status, const char *msg)
{
    size_t n = strlen(msg);
    char *b = malloc(n + 2);
    if (b) {
        memcpy(b, msg, n);
        b[n] = '\n';
        b[n + 1] = '\0';
    }
    answer(r, status, "text/plain; charset=utf-8", b, n + 1);
}

/* Keeps a successful history answer for the next request of the same job and generation. */
static void history_keep(http_server *h, const http_req *r, const char *data, size_t len, int ok)
{
    if (!r->hist_job || !ok) return;
    int slot = 0;
    for (int i = 0; i < HTTP_HISTORY_CACHED; i++) {
        if (h->hist[i].job == r->hist_job) {
            slot = i;
            break;
        }
        if (h->hist[i].used < h->hist[slot].used) slot = i;
    }
    char *copy = malloc(len);
    if (!copy) return;
    memcpy(copy, data, len);
    free(h->hist[slot].data);
    h->hist[slot].job = r->hist_job;
    h->hist[slot].gen = r->hist_gen;
    h->hist[slot].phase = r->hist_phase;
    h->hist[slot].data = copy;
    h->hist[slot].len = len;
    h->hist[slot].used = ++h->hist_clock;
}

/* The msgid and whether the error is nil, read from the head of a response
 * [1, msgid, error, result] as rpc_pack_result/rpc_pack_error write it, without unpacking
 * the (possibly large) result on the loop: -1 if it is not such a head. */
static int response_head(const char *data, size_t len, uint32_t *msgid, int *ok)
{
    const unsigned char *d = (const unsigned char *)data;
    size_t i = 2, n;
    if (len < 4 || d[0] != 0x94 || d[1] != 0x01) return -1;
    if (d[i] < 0x80)
        n = 0;
    else if (d[i] == 0xcc)
        n = 1;
    else if (d[i] == 0xcd)
        n = 2;
    else if (d[i] == 0xce)
        n = 4;
    else
        return -1;
    if (len < i + n + 2) return -1;
    *msgid = n ? 0 : d[i];
    for (size_t k = 1; k <= n; k++) *msgid = (*msgid << 8) | d[i + k];
    *ok = d[i + n + 1] == 0xc0;
    return 0;
}

/* What the administrator's connection is sent: one response [1, msgid, error, result]. */
static void on_vc_send(conn *c, const char *data, size_t len)
{
    http_server *h = c->sink_arg;
    uint32_t msgid;
    int ok;
    if (response_head(data, len, &msgid, &ok) != 0) return;
    http_req **pp = &h->pending;
    while (*pp && (*pp)->msgid != msgid) pp = &(*pp)->next;
    http_req *r = *pp;
    if (!r) return;
    *pp = r->next;
    char *copy = malloc(len);
    if (!copy) {
        answer_text(r, 500, "out of memory");
        return;
    }
    memcpy(copy, data, len);
    history_keep(h, r, data, len, ok);
    r->msgpack = r->msgpack == MP_RPC_JOBS ? MP_RPC_JOBS : MP_RPC;
    answer(r, 200, "application/json", copy, len);
}

/* r waits for the answer to a request made for it on the administrator's connection. */
static uint32_t pend(http_server *h, http_req *r)
{
    r->msgid = ++h->next_msgid;
    r->next = h->pending;
    h->pending = r;
    return r->msgid;
}

/* Runs method {key: value} for r on the administrator's connection. */
static void call_method(http_server *h, http_req *r, const char *method, const char *key,
                        const char *str, uint64_t num)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, key ? 1 : 0);
    if (key) {
        rpc_pack_cstr(&pk, key);
        if (str)
            rpc_pack_cstr(&pk, str);
        else
            msgpack_pack_uint64(&pk, num);
    }
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    if (msgpack_unpack_next(&u, sb.data, sb.size, &off) != MSGPACK_UNPACK_SUCCESS) {
        answer_text(r, 500, "out of memory");
    } else {
        rpc_request req = {.type = RPC_REQUEST, .params = u.data};
        snprintf(req.method, sizeof req.method, "%s", method);
        req.msgid = pend(h, r);
        methods_dispatch(h->srv, h->vc, &req); /* answers now or, after I/O, later */
    }
    msgpack_unpacked_destroy(&u);
    msgpack_sbuffer_destroy(&sb);
}

static void requeue(http_server *h, http_req *r)
{
    pthread_mutex_lock(&h->lock);
    r->next = h->queue;
    h->queue = r;
    pthread_mutex_unlock(&h->lock);
    uv_async_send(&h->async);
}

static void jobs_state_free(http_req *r)
{
    free(r->ids);
    r->ids = NULL;
    msgpack_sbuffer_destroy(&r->sb);
}

/* Every job's status, newest first: HTTP_JOBS_PER_SLICE of them per loop turn, so that a
 * daemon with hundreds of jobs does not hold the loop for milliseconds. A job that went
 * away between turns is left out. */
static void answer_jobs(http_server *h, http_req *r)
{
    if (!r->ids) { /* every unfinished job, and finished ones while fewer than limit */
        size_t n = 0;
        for (job *j = h->srv->jobs; j; j = j->next) n += j->id != 0;
        r->ids = malloc((n ? n : 1) * sizeof *r->ids);
        if (!r->ids) {
            answer_text(r, 500, "out of memory");
            return;
        }
        for (job *j = h->srv->jobs; j; j = j->next)
            if (j->id && (!job_state_finished(j->state) || r->n_ids < (size_t)r->limit))
                r->ids[r->n_ids++] = j->id;
        msgpack_sbuffer_init(&r->sb);
    }
    msgpack_packer pk;
    msgpack_packer_init(&pk, &r->sb, msgpack_sbuffer_write);
    for (int k = 0; k < HTTP_JOBS_PER_SLICE && r->next_id < r->n_ids; k++) {
        job *j = jobs_find(h->srv, r->ids[r->next_id++]);
        if (!j) continue;
        jobs_pack_status(h->srv, j, &pk);
        r->packed++;
    }
    if (r->next_id < r->n_ids) {
        requeue(h, r);
        return;
    }
    msgpack_sbuffer out;
    msgpack_sbuffer_init(&out);
    msgpack_packer_init(&pk, &out, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, r->packed);
    if (r->sb.size) msgpack_sbuffer_write(&out, r->sb.data, r->sb.size);
    jobs_state_free(r);
    size_t len = out.size;
    r->msgpack = MP_OBJECT;
    answer(r, 200, "application/json", msgpack_sbuffer_release(&out), len);
}

static void history(http_server *h, http_req *r, uint64_t id)
{
    job *j = jobs_find(h->srv, id);
    if (j && (j->session || j->phase == JOB_PH_FINISHED)) {
        r->hist_job = id;
        r->hist_gen = j->session ? zmix_session_generation(j->session) : -1;
        r->hist_phase = (int)j->phase == JOB_PH_FINISHED;
        for (int i = 0; i < HTTP_HISTORY_CACHED; i++) {
            if (h->hist[i].job != id || !h->hist[i].data || h->hist[i].gen != r->hist_gen ||
                h->hist[i].phase != r->hist_phase)
                continue;
            char *copy = malloc(h->hist[i].len);
            if (!copy) break;
            memcpy(copy, h->hist[i].data, h->hist[i].len);
            h->hist[i].used = ++h->hist_clock;
            r->msgpack = MP_RPC;
            answer(r, 200, "application/json", copy, h->hist[i].len);
            return;
        }
    }
    call_method(h, r, "history", "job", NULL, id);
}

static void handle(http_server *h, http_req *r)
{
    const char *p = r->path;
    if (!strcmp(p, "/metrics")) {
        metrics_buf b = {0};
        metrics_render(h->srv, &b);
        if (b.failed) {
            free(b.data);
            answer_text(r, 500, "out of memory");
            return;
        }
        r->metrics = 1;
        answer(r, 200, "text/plain; version=0.0.4; charset=utf-8", b.data, b.len);
    } else if (!strcmp(p, "/api/jobs") && h->srv->fleet_jobs) { /* the fleet's, from Redis */
        r->msgpack = MP_RPC_JOBS;
        remote_jobs_statuses(h->srv, h->vc, pend(h, r), (size_t)r->limit);
    } else if (!strcmp(p, "/api/jobs")) {
        answer_jobs(h, r);
    } else if (!strcmp(p, "/api/tasks")) {
        call_method(h, r, "tasks", NULL, NULL, 0);
    } else if (!strcmp(p, "/api/stats")) {
        call_method(h, r, "stats", NULL, NULL, 0);
    } else if (!strcmp(p, "/api/info")) {
        call_method(h, r, "info", NULL, NULL, 0);
    } else if (!strncmp(p, "/api/tasks/", 11)) {
        call_method(h, r, "get", "task", p + 11, 0);
    } else if (strstr(p + 10, "/history")) {
        history(h, r, strtoull(p + 10, NULL, 10));
    } else { /* /api/jobs/ID, checked by the HTTP thread */
        call_method(h, r, "status", "job", NULL, strtoull(p + 10, NULL, 10));
    }
}

static void on_async(uv_async_t *a)
{
    http_server *h = a->data;
    pthread_mutex_lock(&h->lock);
    http_req *q = h->queue;
    h->queue = NULL;
    pthread_mutex_unlock(&h->lock);
    int debug = zmix_log_enabled(h->srv->log, ZMIX_LOG_DEBUG);
    while (q) {
        http_req *next = q->next;
        q->next = NULL;
        char path[sizeof q->path];
        if (debug) memcpy(path, q->path, sizeof path);
        uint64_t t0 = debug ? zmix_now_ns() : 0;
        handle(h, q); /* q may belong to the HTTP thread from here on */
        if (debug)
            ZLOG_DEBUG(h->srv->log, "http %s handed over in %.1f us", path,
                       (double)(zmix_now_ns() - t0) * 1e-3);
        q = next;
    }
}

/* ---- Start and stop -------------------------------------------------------------------- */

static int open_socket(const char *spec, const listen_addr *a, zmix_error *err)
{
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV | AI_PASSIVE;
    char port[16];
    snprintf(port, sizeof port, "%d", a->port);
    int g = getaddrinfo(a->host, port, &hints, &res);
    if (g) return zmix_error_set(err, ZMIX_EINVAL, "--http %s: %s", spec, gai_strerror(g));
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 64) != 0) {
        int e = errno;
        if (fd >= 0) close(fd);
        freeaddrinfo(res);
        return zmix_error_set(err, ZMIX_EIO, "--http %s: cannot listen: %s", spec, strerror(e));
    }
    freeaddrinfo(res);
    return fd;
}

static void on_async_closed(uv_handle_t *a)
{
    free(a->data);
}

int http_start(server *srv, zmix_error *err)
{
    const char *spec = srv->cfg->http;
    if (!spec[0]) return 0;
    listen_addr a;
    int rc = config_parse_http(spec, &a, err);
    if (rc) return rc;
    if (!a.loopback && srv->token_len == 0)
        return zmix_error_set(err, ZMIX_EAUTH,
                              "--http %s is not loopback: a --token-file is required (HTTP "
                              "requests then carry 'Authorization: Bearer TOKEN')",
                              spec);
    if (srv->tenants.n > 0 && srv->token_len == 0)
        return zmix_error_set(err, ZMIX_EAUTH,
                              "--http with --tenants: the dashboard shows every tenant's jobs, "
                              "so the administrator's --token-file is required");
    http_server *h = calloc(1, sizeof *h);
    conn *vc = calloc(1, sizeof *vc);
    if (!h || !vc) {
        free(h);
        free(vc);
        return zmix_error_set(err, ZMIX_ENOMEM, "--http: out of memory");
    }
    h->srv = srv;
    h->vc = vc;
    vc->srv = srv;
    vc->authed = 1; /* the administrator: the token was checked per HTTP request */
    vc->sink = on_vc_send;
    vc->sink_arg = h;
    h->need_token = srv->token_len > 0;
    h->bearer_len = (size_t)snprintf(h->bearer, sizeof h->bearer, "Bearer %.*s",
                                     (int)srv->token_len, srv->token);
    h->fd = open_socket(spec, &a, err);
    if (h->fd < 0) {
        free(vc);
        free(h);
        return err->code;
    }
    pthread_mutex_init(&h->lock, NULL);
    uv_async_init(srv->loop, &h->async, on_async);
    h->async.data = h;
    h->d = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ITC, 0,
        NULL, NULL, on_request, h, MHD_OPTION_LISTEN_SOCKET, h->fd, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)HTTP_MAX_CONNECTIONS, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)HTTP_TIMEOUT_S,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, h, MHD_OPTION_NOTIFY_CONNECTION, on_connection,
        h, MHD_OPTION_END);
    if (!h->d) {
        close(h->fd);
        pthread_mutex_destroy(&h->lock);
        free(vc);
        /* h is freed once the async handle is closed: the loop still runs. */
        uv_close((uv_handle_t *)&h->async, on_async_closed);
        return zmix_error_set(err, ZMIX_EIO, "--http %s: the HTTP server did not start", spec);
    }
    pthread_mutex_init(&h->rlock, NULL);
    pthread_cond_init(&h->rwake, NULL);
    if (pthread_create(&h->resumer, NULL, resumer_main, h) != 0) {
        MHD_stop_daemon(h->d);
        close(h->fd);
        pthread_mutex_destroy(&h->lock);
        pthread_mutex_destroy(&h->rlock);
        pthread_cond_destroy(&h->rwake);
        free(vc);
        uv_close((uv_handle_t *)&h->async, on_async_closed);
        return zmix_error_set(err, ZMIX_EIO, "--http %s: cannot start a thread", spec);
    }
    srv->http = h;
    ZLOG_INFO(srv->log, "http: listening on %s (%s)", spec,
              h->need_token ? "requests need the --token-file token" : "no token");
    return 0;
}

void http_stop(server *srv)
{
    http_server *h = srv->http;
    if (!h) return;
    srv->http = NULL;
    pthread_mutex_lock(&h->lock);
    h->stopping = 1;
    http_req *q = h->queue;
    h->queue = NULL;
    pthread_mutex_unlock(&h->lock);
    while (q) {
        http_req *next = q->next;
        if (q->ids) jobs_state_free(q);
        answer_text(q, 503, "zmixd is shutting down");
        q = next;
    }
    while (h->pending) {
        http_req *r = h->pending;
        h->pending = r->next;
        answer_text(r, 503, "zmixd is shutting down");
    }
    pthread_mutex_lock(&h->rlock);
    h->resumer_stop = 1;
    pthread_cond_signal(&h->rwake);
    pthread_mutex_unlock(&h->rlock);
    pthread_join(h->resumer, NULL); /* every request is resumed */
    MHD_stop_daemon(h->d);
    pthread_mutex_destroy(&h->rlock);
    pthread_cond_destroy(&h->rwake);
    close(h->fd);
    for (parked *p = h->vc->parked; p; p = p->conn_next) p->conn = NULL;
    for (int i = 0; i < HTTP_HISTORY_CACHED; i++) free(h->hist[i].data);
    free(h->vc);
    pthread_mutex_destroy(&h->lock);
    uv_close((uv_handle_t *)&h->async, on_async_closed);
}

int http_connections(const server *srv)
{
    return srv->http ? atomic_load(&srv->http->n_conns) : 0;
}
