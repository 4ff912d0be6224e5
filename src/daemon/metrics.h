/*
 * What /metrics shows that the daemon does not count elsewhere: the handling time of each
 * protocol method (a histogram) and the errors answered, by code. Everything else /metrics
 * shows is read from the server's own counters when the page is rendered (http.c).
 * Thread: the event loop, every function.
 */
#ifndef ZMIX_DAEMON_METRICS_H
#define ZMIX_DAEMON_METRICS_H

#include <stddef.h>
#include <stdint.h>

#define METRICS_METHODS_MAX 32 /* distinct method names kept; the rest count as "other" */
#define METRICS_BUCKETS     12 /* upper bounds in metrics.c, +Inf last */
#define METRICS_CODES_MAX   32 /* error codes 0 .. -31 */

typedef struct metrics_histogram {
    char method[32];
    uint64_t buckets[METRICS_BUCKETS]; /* cumulative counts come from summing at render */
    uint64_t count;
    double sum_s;
} metrics_histogram;

typedef struct metrics_state {
    metrics_histogram methods[METRICS_METHODS_MAX];
    int n_methods;
    uint64_t errors[METRICS_CODES_MAX]; /* by -code */
} metrics_state;

/* The upper bounds of the buckets in seconds (the last one is +Inf). */
extern const double metrics_bucket_bounds[METRICS_BUCKETS];

/* One request of `method` handled in `ns`; known: whether the daemon has that method (an
 * unknown name counts as "other", so clients cannot grow the label set). */
void metrics_observe(metrics_state *m, const char *method, int known, uint64_t ns);
void metrics_count_error(metrics_state *m, int code);

/* A growable text buffer for rendering. */
typedef struct metrics_buf {
    char *data;
    size_t len, cap;
    int failed; /* an allocation failed: data holds what fitted */
} metrics_buf;
void metrics_printf(metrics_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The request histograms and error counters in the Prometheus text format. */
void metrics_render_requests(const metrics_state *m, metrics_buf *b);

#endif
