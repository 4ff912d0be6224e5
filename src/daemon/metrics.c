/*
 * /metrics in the Prometheus text exposition format (version 0.0.4): the request histograms
 * and error counters kept here, and the server's own counters read when the page is
 * rendered. docs/metrics.md describes every metric.
 * Thread: the event loop, every function.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/server.h"
#include "util/clock.h"
#include "zmix/version.h"

/* Sub-millisecond answers are the norm on the loop: fine buckets below 1 ms. */
const double metrics_bucket_bounds[METRICS_BUCKETS] = {
    0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.1, 1.0, -1.0};

void metrics_observe(metrics_state *m, const char *method, int known, uint64_t ns)
{
    const char *name = known ? method : "other";
    metrics_histogram *h = NULL;
    for (int i = 0; i < m->n_methods && !h; i++)
        if (!strcmp(m->methods[i].method, name)) h = &m->methods[i];
    if (!h) {
        if (m->n_methods == METRICS_METHODS_MAX) return;
        h = &m->methods[m->n_methods++];
        snprintf(h->method, sizeof h->method, "%s", name);
    }
    double s = (double)ns * 1e-9;
    int b = 0;
    while (b < METRICS_BUCKETS - 1 && s > metrics_bucket_bounds[b]) b++;
    h->buckets[b]++;
    h->count++;
    h->sum_s += s;
}

void metrics_count_error(metrics_state *m, int code)
{
    if (code < 0 && -code < METRICS_CODES_MAX) m->errors[-code]++;
}

void metrics_printf(metrics_buf *b, const char *fmt, ...)
{
    if (b->failed) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = b->cap - b->len;
        int n = vsnprintf(b->cap ? b->data + b->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = 1;
            return;
        }
        if ((size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap * 2 : 4096;
        while (cap - b->len <= (size_t)n) cap *= 2;
        char *d = realloc(b->data, cap);
        if (!d) {
            b->failed = 1;
            return;
        }
        b->data = d;
        b->cap = cap;
    }
}

static void header(metrics_buf *b, const char *name, const char *type, const char *help)
{
    metrics_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void bound(metrics_buf *b, double v)
{
    if (v < 0)
        metrics_printf(b, "+Inf");
    else
        metrics_printf(b, "%g", v);
}

void metrics_render_requests(const metrics_state *m, metrics_buf *b)
{
    header(b, "zmix_request_duration_seconds", "histogram",
           "Time the event loop spent handling a protocol request, by method.");
    for (int i = 0; i < m->n_methods; i++) {
        const metrics_histogram *h = &m->methods[i];
        uint64_t cum = 0;
        for (int k = 0; k < METRICS_BUCKETS; k++) {
            cum += h->buckets[k];
            metrics_printf(b, "zmix_request_duration_seconds_bucket{method=\"%s\",le=\"",
                           h->method);
            bound(b, metrics_bucket_bounds[k]);
            metrics_printf(b, "\"} %llu\n", (unsigned long long)cum);
        }
        metrics_printf(b, "zmix_request_duration_seconds_sum{method=\"%s\"} %.9f\n", h->method,
                       h->sum_s);
        metrics_printf(b, "zmix_request_duration_seconds_count{method=\"%s\"} %llu\n", h->method,
                       (unsigned long long)h->count);
    }
    header(b, "zmix_errors_total", "counter", "Error answers sent to clients, by error code.");
    for (int c = 1; c < METRICS_CODES_MAX; c++) {
        const char *name = zmix_strerror(-c);
        if (!name || !strcmp(name, "EUNKNOWN")) continue; /* codes the library does not name */
        metrics_printf(b, "zmix_errors_total{code=\"%s\"} %llu\n", name,
                       (unsigned long long)m->errors[c]);
    }
}

long metrics_rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, rss = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &rss) != 2) rss = 0;
        fclose(f);
    }
    return rss * sysconf(_SC_PAGESIZE);
}

static void gauge(metrics_buf *b, const char *name, const char *help, double v)
{
    header(b, name, "gauge", help);
    metrics_printf(b, "%s %.10g\n", name, v);
}

static void counter(metrics_buf *b, const char *name, const char *help, uint64_t v)
{
    header(b, name, "counter", help);
    metrics_printf(b, "%s %llu\n", name, (unsigned long long)v);
}

void metrics_render(server *srv, metrics_buf *b)
{
    SERVER_ON_LOOP(srv);
    static const char *const states[] = {"queued", "running", "done", "failed", "cancelled"};
    long by_state[5] = {0};
    /* Queued jobs by priority (-10 .. 10). */
    long by_prio[21] = {0};
    for (job *j = srv->jobs; j; j = j->next) {
        if (j->state >= 0 && j->state < 5) by_state[j->state]++;
        if (j->phase == JOB_PH_QUEUED && j->spec.priority >= -10 && j->spec.priority <= 10)
            by_prio[j->spec.priority + 10]++;
    }
    metrics_printf(b,
                   "# HELP zmix_build_info Build of the running zmixd (always 1).\n"
                   "# TYPE zmix_build_info gauge\n"
                   "zmix_build_info{version=\"%s\"} 1\n",
                   ZMIX_VERSION_STRING);
    gauge(b, "zmix_uptime_seconds", "Seconds since zmixd started.",
          (double)(zmix_now_ns() - srv->start_ns) * 1e-9);
    header(b, "zmix_jobs", "gauge", "Jobs this process knows, by state.");
    for (int s = 0; s < 5; s++)
        metrics_printf(b, "zmix_jobs{state=\"%s\"} %ld\n", states[s], by_state[s]);
    header(b, "zmix_queue_depth", "gauge", "Jobs waiting for a running slot, by priority.");
    for (int p = 0; p < 21; p++)
        if (by_prio[p] || p == 10)
            metrics_printf(b, "zmix_queue_depth{priority=\"%d\"} %ld\n", p - 10, by_prio[p]);
    gauge(b, "zmix_jobs_max", "Unfinished jobs the daemon accepts (--max-jobs).",
          srv->cfg->max_jobs);
    counter(b, "zmix_jobs_done_total", "Jobs that ended done in this process.", srv->jobs_done);
    counter(b, "zmix_jobs_failed_total", "Jobs that failed in this process.", srv->jobs_failed);
    counter(b, "zmix_jobs_cancelled_total", "Jobs cancelled in this process.", srv->jobs_cancelled);
    counter(b, "zmix_submits_cached_total", "Submits answered from the task cache.",
            srv->submits_cached);
    counter(b, "zmix_submits_coalesced_total", "Submits joined to an identical running job.",
            srv->submits_coalesced);
    counter(b, "zmix_generations_total", "CEM generations completed in this process.",
            srv->generations_total);
    counter(b, "zmix_evaluations_total", "Candidates scored in this process.", srv->evals_total);
    gauge(b, "zmix_evaluations_per_second", "Candidates scored per second over the last second.",
          srv->evals_per_s);
    header(b, "zmix_scoring_seconds_total", "counter",
           "Wall-clock seconds of scoring steps (pool work of every job).");
    metrics_printf(b, "zmix_scoring_seconds_total %.6f\n", (double)srv->scoring_ns_total * 1e-9);
    gauge(b, "zmix_workers", "Scoring workers.", pool_workers(srv->pool));
    gauge(b, "zmix_workers_busy", "Scoring workers busy now.", pool_busy(srv->pool));
    gauge(b, "zmix_pool_pending_chunks", "Scoring pieces waiting for a worker.",
          pool_pending(srv->pool));

    task_cache_stats cs;
    task_cache_get_stats(srv->cache, &cs);
    gauge(b, "zmix_task_cache_entries", "Tasks in the task cache (on disk or in memory).",
          (double)cs.tasks);
    gauge(b, "zmix_task_cache_resident_entries", "Tasks whose result is in memory.",
          (double)cs.resident);
    gauge(b, "zmix_task_cache_resident_bytes", "Bytes of task results in memory.",
          (double)cs.resident_bytes);
    gauge(b, "zmix_task_cache_budget_bytes", "Memory budget of task results (--cache-bytes).",
          (double)cs.memory_budget);
    counter(b, "zmix_task_cache_hits_total", "Task cache lookups that found the task.", cs.hits);
    counter(b, "zmix_task_cache_misses_total", "Task cache lookups that did not.", cs.misses);
    counter(b, "zmix_task_cache_loads_total", "Results read back from disk after eviction.",
            cs.loads);
    counter(b, "zmix_task_cache_evictions_total", "Results evicted from memory (files kept).",
            cs.evictions);
    counter(b, "zmix_task_cache_write_errors_total", "Failed writes of task results.",
            cs.write_errors);

    if (srv->fleet) { /* --store redis://: this member's part in the fleet (docs/fleet.md) */
        gauge(b, "zmix_fleet_scorers", "Scorers of every live member of the fleet.",
              fleet_scorers(srv->fleet));
        counter(b, "zmix_fleet_chunks_scored_total",
                "Fleet chunks this member scored first (for any member's jobs).",
                (uint64_t)fleet_chunks_scored(srv->fleet));
        counter(b, "zmix_fleet_jobs_claimed_total",
                "Jobs this member resumed after their driver's lease lapsed.", srv->fleet_claimed);
        counter(b, "zmix_fleet_leases_lost_total",
                "Jobs this member stopped driving because another member took them over.",
                srv->fleet_lost);
    }

    header(b, "zmix_connections", "gauge", "Open connections, by transport.");
    metrics_printf(b, "zmix_connections{transport=\"unix\"} %d\n", srv->n_unix);
    metrics_printf(b, "zmix_connections{transport=\"tcp\"} %d\n", srv->n_tcp);
    metrics_printf(b, "zmix_connections{transport=\"http\"} %d\n", http_connections(srv));
    counter(b, "zmix_requests_total", "Protocol requests received (every transport but HTTP).",
            srv->requests);
    metrics_render_requests(&srv->metrics, b);
    /* zmix_process_resident_memory_bytes is added by the HTTP thread (http.c). */
}
