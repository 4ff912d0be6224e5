/*
 * The Redis round trips of one fleet chunk (src/fleet/fleet.c, proto/FLEET.md §5 and §7),
 * timed command by command on a redis-server the caller started (bench/fleet_model.py starts
 * one on loopback). Two connections, as in the daemon: the driver's and a scorer's.
 *
 * Per chunk, in the order the daemon issues them:
 *   driver  XADD stream * chunk BYTES                     publish (fleet.c publish)
 *   scorer  XREADGROUP ... COUNT 1 BLOCK 500 ... >        take it (scorer_main)
 *   scorer  EXISTS step_key ; HEXISTS results field        still wanted? (process_entry)
 *   scorer  GET examples                                   only when the set changed
 *   scorer  HSETNX results field RESULT                    first result wins (answer)
 *   scorer  EXPIRE, RPUSH done, EXPIRE, HINCRBY, XACK, XDEL   one pipelined round trip
 *   driver  BLPOP done 0.05 ; HGET results field           the wake-up and the result
 * Per step: driver SET step_key EX, SET examples EX (once per example set), DEL step results.
 * PING is the bare round trip.
 *
 * Payload sizes are given (the harness measures the real messages): --chunk-bytes,
 * --result-bytes, --examples-bytes. Prints one JSON object: per command the median and the
 * 90th percentile in microseconds over --iters chunks, and the per-chunk sums.
 *
 *   bench_fleet_rtt --port P [--host H] [--iters N] [--chunks-per-step C]
 *                   [--chunk-bytes B] [--result-bytes B] [--examples-bytes B]
 */
#include <hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum {
    C_PING,
    C_XADD,
    C_XREADGROUP,
    C_EXISTS,
    C_HEXISTS,
    C_GET_EXAMPLES,
    C_HSETNX,
    C_PIPELINE6,
    C_BLPOP,
    C_HGET,
    C_SET_STEP,
    C_SET_EXAMPLES,
    C_DEL_STEP,
    C_N
};
static const char *names[C_N] = {"ping",     "xadd",     "xreadgroup",   "exists",
                                  "hexists",  "get_examples", "hsetnx", "pipeline6",
                                  "blpop",    "hget",     "set_step",     "set_examples",
                                  "del_step"};

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec * 1e-3;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double quantile(double *v, int n, double q)
{
    if (n == 0) return 0.0;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    int i = (int)(q * (n - 1) + 0.5);
    return v[i];
}

static void must(redisContext *c, redisReply *r, const char *what)
{
    if (!r || r->type == REDIS_REPLY_ERROR || c->err) {
        fprintf(stderr, "bench_fleet_rtt: %s: %s\n", what,
                r && r->type == REDIS_REPLY_ERROR ? r->str : c->errstr);
        exit(1);
    }
}

static void fill(char *buf, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        buf[i] = (char)(seed >> 16);
    }
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1";
    int port = 0, iters = 2000, per_step = 4;
    size_t chunk_bytes = 700, result_bytes = 300, examples_bytes = 2600;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--host") && v)
            host = v, i++;
        else if (!strcmp(a, "--port") && v)
            port = atoi(v), i++;
        else if (!strcmp(a, "--iters") && v)
            iters = atoi(v), i++;
        else if (!strcmp(a, "--chunks-per-step") && v)
            per_step = atoi(v), i++;
        else if (!strcmp(a, "--chunk-bytes") && v)
            chunk_bytes = (size_t)atol(v), i++;
        else if (!strcmp(a, "--result-bytes") && v)
            result_bytes = (size_t)atol(v), i++;
        else if (!strcmp(a, "--examples-bytes") && v)
            examples_bytes = (size_t)atol(v), i++;
        else {
            fprintf(stderr,
                    "usage: bench_fleet_rtt --port P [--host H] [--iters N] [--chunks-per-step C] "
                    "[--chunk-bytes B] [--result-bytes B] [--examples-bytes B]\n");
            return 2;
        }
    }
    if (port <= 0 || iters < 1 || per_step < 1) {
        fprintf(stderr, "bench_fleet_rtt: --port is required; --iters, --chunks-per-step >= 1\n");
        return 2;
    }
    redisContext *d = redisConnect(host, port), *s = redisConnect(host, port);
    if (!d || d->err || !s || s->err) {
        fprintf(stderr, "bench_fleet_rtt: cannot connect to %s:%d\n", host, port);
        return 1;
    }
    char *chunk = malloc(chunk_bytes), *result = malloc(result_bytes),
         *examples = malloc(examples_bytes);
    fill(chunk, chunk_bytes, 1);
    fill(result, result_bytes, 2);
    fill(examples, examples_bytes, 3);

    const char *stream = "zmixbench:chunks", *group = "zmixbench:scorers";
    redisReply *r = redisCommand(d, "DEL %s", stream);
    freeReplyObject(r);
    r = redisCommand(d, "XGROUP CREATE %s %s 0 MKSTREAM", stream, group);
    must(d, r, "XGROUP CREATE");
    freeReplyObject(r);

    int n_steps = (iters + per_step - 1) / per_step;
    double *t[C_N];
    int n[C_N] = {0};
    for (int k = 0; k < C_N; k++) t[k] = malloc(sizeof(double) * (size_t)(iters + n_steps + 1));

#define TIMED(k, conn, ...)                                                                        \
    do {                                                                                           \
        double t0_ = now_us();                                                                     \
        r = redisCommand(conn, __VA_ARGS__);                                                       \
        t[k][n[k]++] = now_us() - t0_;                                                             \
        must(conn, r, names[k]);                                                                   \
    } while (0)

    char step_key[96], results[96], done[96], ex_key[96], id[96], field[16];
    snprintf(done, sizeof done, "zmixbench:done:driver");
    for (int it = 0; it < iters; it++) {
        int step = it / per_step, idx = it % per_step;
        snprintf(step_key, sizeof step_key, "zmixbench:step:driver:%d", step);
        snprintf(results, sizeof results, "zmixbench:results:driver:%d", step);
        snprintf(ex_key, sizeof ex_key, "zmixbench:examples:%d", step);
        snprintf(id, sizeof id, "driver:%d:%d", step, idx);
        snprintf(field, sizeof field, "%d", idx);
        if (idx == 0) { /* the driver opens the step */
            TIMED(C_SET_STEP, d, "SET %s 1 EX 30", step_key);
            freeReplyObject(r);
            TIMED(C_SET_EXAMPLES, d, "SET %s %b EX 86400", ex_key, examples, examples_bytes);
            freeReplyObject(r);
        }
        TIMED(C_PING, d, "PING");
        freeReplyObject(r);
        TIMED(C_XADD, d, "XADD %s * chunk %b", stream, chunk, chunk_bytes);
        freeReplyObject(r);

        TIMED(C_XREADGROUP, s, "XREADGROUP GROUP %s scorer/0 COUNT 1 BLOCK 500 STREAMS %s >",
              group, stream);
        char entry[64] = "";
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 1)
            snprintf(entry, sizeof entry, "%s", r->element[0]->element[1]->element[0]->element[0]->str);
        freeReplyObject(r);
        if (!entry[0]) {
            fprintf(stderr, "bench_fleet_rtt: XREADGROUP returned no entry\n");
            return 1;
        }
        TIMED(C_EXISTS, s, "EXISTS %s", step_key);
        freeReplyObject(r);
        TIMED(C_HEXISTS, s, "HEXISTS %s %s", results, field);
        freeReplyObject(r);
        /* Each step's example set is read by the scorer once (it keeps the last one). */
        TIMED(C_GET_EXAMPLES, s, "GET %s", ex_key);
        freeReplyObject(r);
        TIMED(C_HSETNX, s, "HSETNX %s %s %b", results, field, result, result_bytes);
        freeReplyObject(r);
        double t0 = now_us();
        redisAppendCommand(s, "EXPIRE %s %d", results, 86400);
        redisAppendCommand(s, "RPUSH %s %s", done, id);
        redisAppendCommand(s, "EXPIRE %s %d", done, 86400);
        redisAppendCommand(s, "HINCRBY zmixbench:scored scorer 1");
        redisAppendCommand(s, "XACK %s %s %s", stream, group, entry);
        redisAppendCommand(s, "XDEL %s %s", stream, entry);
        for (int i = 0; i < 6; i++) {
            void *reply = NULL;
            if (redisGetReply(s, &reply) != REDIS_OK) {
                fprintf(stderr, "bench_fleet_rtt: pipeline: %s\n", s->errstr);
                return 1;
            }
            freeReplyObject(reply);
        }
        t[C_PIPELINE6][n[C_PIPELINE6]++] = now_us() - t0;

        TIMED(C_BLPOP, d, "BLPOP %s 0.05", done);
        freeReplyObject(r);
        TIMED(C_HGET, d, "HGET %s %s", results, field);
        freeReplyObject(r);
        if (idx == per_step - 1 || it == iters - 1) {
            TIMED(C_DEL_STEP, d, "DEL %s %s", step_key, results);
            freeReplyObject(r);
            r = redisCommand(d, "DEL %s", ex_key);
            freeReplyObject(r);
        }
    }
    r = redisCommand(d, "DEL %s zmixbench:scored %s", stream, done);
    freeReplyObject(r);

    double med[C_N], p90[C_N];
    for (int k = 0; k < C_N; k++) {
        double *copy = malloc(sizeof(double) * (size_t)(n[k] ? n[k] : 1));
        memcpy(copy, t[k], sizeof(double) * (size_t)n[k]);
        med[k] = quantile(copy, n[k], 0.5);
        p90[k] = quantile(copy, n[k], 0.9);
        free(copy);
    }
    printf("{\"iters\": %d, \"chunks_per_step\": %d, \"chunk_bytes\": %zu, \"result_bytes\": %zu, "
           "\"examples_bytes\": %zu, \"median_us\": {",
           iters, per_step, chunk_bytes, result_bytes, examples_bytes);
    for (int k = 0; k < C_N; k++) printf("%s\"%s\": %.2f", k ? ", " : "", names[k], med[k]);
    printf("}, \"p90_us\": {");
    for (int k = 0; k < C_N; k++) printf("%s\"%s\": %.2f", k ? ", " : "", names[k], p90[k]);
    printf("}, \"round_trips\": {\"scorer_per_chunk\": 5, \"scorer_per_example_set\": 1, "
           "\"driver_per_chunk\": 3, \"driver_per_step\": 3}");
    /* Per-chunk sums of medians (GET of the examples is per step and scorer, not per chunk). */
    double scorer = med[C_XREADGROUP] + med[C_EXISTS] + med[C_HEXISTS] + med[C_HSETNX] +
                    med[C_PIPELINE6];
    double driver = med[C_XADD] + med[C_BLPOP] + med[C_HGET];
    double step = med[C_SET_STEP] + med[C_SET_EXAMPLES] + med[C_DEL_STEP];
    printf(", \"scorer_per_chunk_us\": %.2f, \"driver_per_chunk_us\": %.2f, "
           "\"driver_per_step_us\": %.2f}\n",
           scorer, driver, step);
    for (int k = 0; k < C_N; k++) free(t[k]);
    free(chunk);
    free(result);
    free(examples);
    redisFree(d);
    redisFree(s);
    return 0;
}
