/*
 * Checkpoint format of a CEM engine: the complete state as a self-checking byte string, so a
 * daemon can persist a running job and resume it to the bit-identical result.
 *
 *   "ZMIXCEM\0"              8 bytes magic
 *   u32 version (1)          little-endian, like every integer below
 *   u32 flags (0)
 *   u64 payload length
 *   payload                  settings, distribution, rng, pending population, best,
 *                            counters, history (see put_state for the order)
 *   u64 FNV-1a 64 of every byte before it
 *
 * Doubles and floats are stored as their IEEE-754 bit patterns, so nothing is rounded.
 * The pending population (asked but not yet told) is saved too: a checkpoint taken between
 * ask and tell resumes with the very population the workers were scoring.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cem_internal.h"

#define CEM_MAGIC   "ZMIXCEM"
#define CEM_VERSION 1u
#define CEM_HEADER  24

typedef struct writer {
    uint8_t *buf;
    size_t len, cap;
    int failed;
} writer;

static void put_bytes(writer *w, const void *p, size_t n)
{
    if (w->failed) return;
    if (w->len + n > w->cap) {
        size_t cap = w->cap ? w->cap : 1024;
        while (cap < w->len + n) cap *= 2;
        uint8_t *b = realloc(w->buf, cap);
        if (!b) {
            w->failed = 1;
            return;
        }
        w->buf = b;
        w->cap = cap;
    }
    memcpy(w->buf + w->len, p, n);
    w->len += n;
}

static void put_u64(writer *w, uint64_t v)
{
    uint8_t b[8];
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(v >> (8 * i));
    put_bytes(w, b, 8);
}

static void put_u32(writer *w, uint32_t v)
{
    uint8_t b[4];
    for (int i = 0; i < 4; i++) b[i] = (uint8_t)(v >> (8 * i));
    put_bytes(w, b, 4);
}

static void put_i32(writer *w, int v)
{
    put_u32(w, (uint32_t)v);
}

static void put_f64(writer *w, double v)
{
    uint64_t u;
    memcpy(&u, &v, sizeof u);
    put_u64(w, u);
}

static void put_f32(writer *w, float v)
{
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    put_u32(w, u);
}

static void put_score(writer *w, const zmix_score *s)
{
    put_f64(w, s->accuracy);
    put_f64(w, s->loglik);
}

typedef struct reader {
    const uint8_t *p;
    size_t len, pos;
    int failed;
} reader;

static const uint8_t *take(reader *r, size_t n)
{
    if (r->failed || r->len - r->pos < n) {
        r->failed = 1;
        return NULL;
    }
    const uint8_t *p = r->p + r->pos;
    r->pos += n;
    return p;
}

static uint64_t get_u64(reader *r)
{
    const uint8_t *b = take(r, 8);
    if (!b) return 0;
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)b[i] << (8 * i);
    return v;
}

static uint32_t get_u32(reader *r)
{
    const uint8_t *b = take(r, 4);
    if (!b) return 0;
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) v |= (uint32_t)b[i] << (8 * i);
    return v;
}

static int get_i32(reader *r)
{
    return (int)get_u32(r);
}

static double get_f64(reader *r)
{
    uint64_t u = get_u64(r);
    double v;
    memcpy(&v, &u, sizeof v);
    return v;
}

static float get_f32(reader *r)
{
    uint32_t u = get_u32(r);
    float v;
    memcpy(&v, &u, sizeof v);
    return v;
}

static void get_score(reader *r, zmix_score *s)
{
    s->accuracy = get_f64(r);
    s->loglik = get_f64(r);
}

static uint64_t fnv1a64(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static void put_settings(writer *w, const zmix_cem_settings *s)
{
    put_i32(w, s->dim);
    put_i32(w, s->n_experts);
    put_i32(w, s->pop_size);
    put_f64(w, s->elite_ratio);
    put_f64(w, s->lo);
    put_f64(w, s->hi);
    put_f64(w, s->init_std);
    put_f64(w, s->ema);
    put_f64(w, s->std_floor);
    put_i32(w, s->max_generations);
    put_i32(w, s->elitism);
    put_i32(w, (int)s->metric);
    put_i32(w, s->normalize);
    put_f64(w, s->std_tol);
    put_i32(w, s->patience);
    put_f64(w, s->target_accuracy);
    put_f64(w, s->target_loglik_tol);
    put_u64(w, s->seed);
    put_u64(w, s->stream);
}

static void get_settings(reader *r, zmix_cem_settings *s)
{
    zmix_cem_settings_default(s);
    s->dim = get_i32(r);
    s->n_experts = get_i32(r);
    s->pop_size = get_i32(r);
    s->elite_ratio = get_f64(r);
    s->lo = get_f64(r);
    s->hi = get_f64(r);
    s->init_std = get_f64(r);
    s->ema = get_f64(r);
    s->std_floor = get_f64(r);
    s->max_generations = get_i32(r);
    s->elitism = get_i32(r);
    s->metric = (zmix_metric)get_i32(r);
    s->normalize = get_i32(r);
    s->std_tol = get_f64(r);
    s->patience = get_i32(r);
    s->target_accuracy = get_f64(r);
    s->target_loglik_tol = get_f64(r);
    s->seed = get_u64(r);
    s->stream = get_u64(r);
}

static void put_state(writer *w, const zmix_cem *c)
{
    size_t dim = (size_t)c->s.dim, pop = (size_t)c->s.pop_size;
    put_settings(w, &c->s);
    for (size_t d = 0; d < dim; d++) put_f64(w, c->mean[d]);
    for (size_t d = 0; d < dim; d++) put_f64(w, c->std[d]);
    put_u64(w, c->rng.state);
    put_u64(w, c->rng.inc);
    put_i32(w, c->pop_ready);
    put_i32(w, c->first_unscored);
    if (c->pop_ready)
        for (size_t i = 0; i < pop * dim; i++) put_f32(w, c->pop[i]);
    put_i32(w, c->have_best);
    for (size_t d = 0; d < dim; d++) put_f32(w, c->best_alpha[d]);
    put_score(w, &c->best_score);
    put_i32(w, c->generation);
    put_u64(w, (uint64_t)c->evaluations);
    put_u64(w, (uint64_t)c->skipped);
    put_i32(w, c->since_improve);
    put_i32(w, (int)c->stop);
    put_i32(w, c->hist_len);
    for (int g = 0; g < c->hist_len; g++) {
        put_score(w, &c->hist[g].best);
        put_score(w, &c->hist[g].elite_mean);
        put_score(w, &c->hist[g].pop_mean);
        put_f64(w, c->hist[g].mean_std);
        for (size_t d = 0; d < dim; d++) put_f64(w, c->hist_mean[(size_t)g * dim + d]);
        for (size_t d = 0; d < dim; d++) put_f64(w, c->hist_std[(size_t)g * dim + d]);
    }
}

int zmix_cem_save(const zmix_cem *c, uint8_t **buf, size_t *len, zmix_error *err)
{
    writer w = {0};
    put_bytes(&w, CEM_MAGIC, 8); /* includes the terminating NUL */
    put_u32(&w, CEM_VERSION);
    put_u32(&w, 0);
    put_u64(&w, 0); /* payload length, patched below */
    put_state(&w, c);
    if (w.failed) {
        free(w.buf);
        return zmix_error_set(err, ZMIX_ENOMEM, "cem checkpoint: out of memory");
    }
    uint64_t payload = w.len - CEM_HEADER;
    for (int i = 0; i < 8; i++) w.buf[16 + i] = (uint8_t)(payload >> (8 * i));
    put_u64(&w, fnv1a64(w.buf, w.len));
    if (w.failed) {
        free(w.buf);
        return zmix_error_set(err, ZMIX_ENOMEM, "cem checkpoint: out of memory");
    }
    *buf = w.buf;
    *len = w.len;
    return 0;
}

static int bad(zmix_error *err, const char *what)
{
    return zmix_error_set(err, ZMIX_EFORMAT, "cem checkpoint: %s", what);
}

int zmix_cem_restore(const uint8_t *buf, size_t len, zmix_cem **out, zmix_error *err)
{
    if (!buf || len < CEM_HEADER + 8) return bad(err, "too short");
    if (memcmp(buf, CEM_MAGIC, 8) != 0) return bad(err, "bad magic (not a CEM checkpoint)");
    reader r = {buf, len - 8, 8, 0};
    uint32_t version = get_u32(&r);
    if (version != CEM_VERSION)
        return zmix_error_set(err, ZMIX_EFORMAT, "cem checkpoint: version %u, expected %u", version,
                              CEM_VERSION);
    (void)get_u32(&r);
    uint64_t payload = get_u64(&r);
    if (payload != len - CEM_HEADER - 8)
        return zmix_error_set(err, ZMIX_EFORMAT,
                              "cem checkpoint: payload length %llu does not match the %zu bytes "
                              "given",
                              (unsigned long long)payload, len);
    uint64_t sum = 0;
    for (int i = 0; i < 8; i++) sum |= (uint64_t)buf[len - 8 + i] << (8 * i);
    if (sum != fnv1a64(buf, len - 8)) return bad(err, "checksum mismatch (corrupt)");

    zmix_cem_settings s;
    get_settings(&r, &s);
    if (r.failed) return bad(err, "truncated settings");
    zmix_error inner;
    if (zmix_cem_settings_check(&s, &inner))
        return zmix_error_set(err, ZMIX_EFORMAT, "cem checkpoint: %s", inner.msg);
    zmix_cem *c;
    int rc = cem_alloc(&s, &c, err);
    if (rc) return rc;
    size_t dim = (size_t)s.dim, pop = (size_t)s.pop_size;
    for (size_t d = 0; d < dim; d++) c->mean[d] = get_f64(&r);
    for (size_t d = 0; d < dim; d++) c->std[d] = get_f64(&r);
    c->rng.state = get_u64(&r);
    c->rng.inc = get_u64(&r);
    c->pop_ready = get_i32(&r);
    c->first_unscored = get_i32(&r);
    if (c->pop_ready)
        for (size_t i = 0; i < pop * dim; i++) c->pop[i] = get_f32(&r);
    c->have_best = get_i32(&r);
    for (size_t d = 0; d < dim; d++) c->best_alpha[d] = get_f32(&r);
    get_score(&r, &c->best_score);
    c->generation = get_i32(&r);
    c->evaluations = (long)get_u64(&r);
    c->skipped = (long)get_u64(&r);
    c->since_improve = get_i32(&r);
    int stop = get_i32(&r);
    int hist_len = get_i32(&r);
    const char *why = NULL;
    if (r.failed)
        why = "truncated state";
    else if ((c->pop_ready != 0 && c->pop_ready != 1) || (c->have_best != 0 && c->have_best != 1))
        why = "bad flags";
    else if (c->first_unscored < 0 || c->first_unscored > 1)
        why = "bad first unscored index";
    else if (stop < ZMIX_CEM_RUNNING || stop > ZMIX_CEM_STOP_TARGET)
        why = "bad stop reason";
    else if (c->generation < 0 || c->generation > s.max_generations || hist_len != c->generation)
        why = "history length does not match the generation count";
    else if ((c->rng.inc & 1u) == 0)
        why = "bad random stream";
    if (why) {
        zmix_cem_free(c);
        return bad(err, why);
    }
    c->stop = (zmix_cem_stop)stop;
    rc = cem_history_reserve(c, hist_len, err);
    if (rc) {
        zmix_cem_free(c);
        return rc;
    }
    for (int g = 0; g < hist_len; g++) {
        get_score(&r, &c->hist[g].best);
        get_score(&r, &c->hist[g].elite_mean);
        get_score(&r, &c->hist[g].pop_mean);
        c->hist[g].mean_std = get_f64(&r);
        for (size_t d = 0; d < dim; d++) c->hist_mean[(size_t)g * dim + d] = get_f64(&r);
        for (size_t d = 0; d < dim; d++) c->hist_std[(size_t)g * dim + d] = get_f64(&r);
    }
    c->hist_len = hist_len;
    if (r.failed || r.pos != r.len) {
        zmix_cem_free(c);
        return bad(err, r.failed ? "truncated history" : "trailing bytes after the state");
    }
    *out = c;
    return 0;
}
