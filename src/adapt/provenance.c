/*
 * What a result was made from: digests of the experts and the examples, and the inputs key
 * that names a search (model, experts, examples, every setting that changes the result).
 *
 * The key is what makes a result reusable: the daemon files results under it and joins or
 * answers identical submits with it, and the search's random stream is derived from it, so
 * `zmix adapt` and zmixd draw the same numbers for the same request. Every field is hashed
 * in a fixed order with explicit lengths, so no two different requests encode to the same
 * bytes. The byte sequence is versioned by its first string: change it only with that.
 */
#include <stdio.h>
#include <string.h>

#include "util/sha256.h"
#include "zmix/adapt.h"

static void hash_i64(zmix_sha256 *h, int64_t v)
{
    uint8_t b[8];
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)((uint64_t)v >> (8 * i));
    zmix_sha256_update(h, b, 8);
}

static void hash_f64(zmix_sha256 *h, double v)
{
    uint64_t u;
    memcpy(&u, &v, sizeof u);
    hash_i64(h, (int64_t)u);
}

static void hash_str(zmix_sha256 *h, const char *s)
{
    size_t n = strlen(s);
    hash_i64(h, (int64_t)n);
    zmix_sha256_update(h, s, n);
}

static void hash_examples(zmix_sha256 *h, const zmix_examples *ex)
{
    hash_i64(h, ex->n);
    for (int i = 0; i < ex->n; i++) {
        hash_i64(h, ex->items[i].n_prompt);
        for (int j = 0; j < ex->items[i].n_prompt; j++) hash_i64(h, ex->items[i].prompt[j]);
        hash_i64(h, ex->items[i].n_target);
        for (int j = 0; j < ex->items[i].n_target; j++) hash_i64(h, ex->items[i].target[j]);
        /* A multiple-choice example (n_target 0, which no exact-match one has): its choices
         * and answer. An exact-match set hashes as it always did. */
        const zmix_example *x = &ex->items[i];
        if (!x->n_choices) continue;
        hash_i64(h, x->n_choices);
        hash_i64(h, x->answer);
        const int32_t *ch = x->choices;
        for (int c = 0; c < x->n_choices; ch += x->choice_len[c], c++) {
            hash_i64(h, x->choice_len[c]);
            for (int j = 0; j < x->choice_len[c]; j++) hash_i64(h, ch[j]);
        }
    }
}

static void finish_hex(zmix_sha256 *h, char hex[65])
{
    uint8_t d[32];
    zmix_sha256_final(h, d);
    zmix_sha256_hex(d, hex);
}

void zmix_adapt_experts_digest(const zmix_runtime *rt, char hex[65])
{
    zmix_sha256 h;
    zmix_sha256_init(&h);
    size_t zt = zmix_runtime_z_total(rt);
    for (int k = 0; k < zmix_runtime_n_experts(rt); k++) {
        const char *name = zmix_runtime_expert_name(rt, k);
        zmix_sha256_update(&h, name, strlen(name) + 1);
        zmix_sha256_update(&h, zmix_runtime_expert_z(rt, k), zt * sizeof(float));
    }
    const char *set = zmix_adapt_set_name(zmix_runtime_adapt_set(rt));
    zmix_sha256_update(&h, set, strlen(set) + 1);
    finish_hex(&h, hex);
}

void zmix_adapt_expert_fingerprint(const zmix_runtime *rt, int k, char hex[65])
{
    zmix_sha256 h;
    zmix_sha256_init(&h);
    const float *z = zmix_runtime_expert_z(rt, k);
    size_t n = z ? zmix_runtime_z_total(rt) : 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &z[i], sizeof u);
        uint8_t b[4] = {(uint8_t)u, (uint8_t)(u >> 8), (uint8_t)(u >> 16), (uint8_t)(u >> 24)};
        zmix_sha256_update(&h, b, 4);
    }
    finish_hex(&h, hex);
}

void zmix_adapt_examples_digest(const zmix_examples *ex, char hex[65])
{
    zmix_sha256 h;
    zmix_sha256_init(&h);
    hash_examples(&h, ex);
    finish_hex(&h, hex);
}

void zmix_adapt_key(const zmix_runtime *rt, const zmix_examples *ex, const zmix_adapt_opts *opts,
                    char hex[65])
{
    char experts[65];
    zmix_adapt_experts_digest(rt, experts);
    zmix_adapt_key_from(zmix_model_fingerprint(zmix_runtime_model(rt)), experts,
                        zmix_runtime_n_experts(rt), zmix_adapt_alpha_dim(rt, opts), ex, opts, hex);
}

void zmix_adapt_key_from(const char *model_fingerprint, const char *experts_digest, int n_experts,
                         int dim, const zmix_examples *ex, const zmix_adapt_opts *opts,
                         char hex[65])
{
    const zmix_cem_settings *c = &opts->cem;
    zmix_sha256 h;
    zmix_sha256_init(&h);
    hash_str(&h, "zmix-job-key-v2"); /* v2: the validation fraction */
    hash_str(&h, model_fingerprint ? model_fingerprint : "");
    hash_str(&h, experts_digest ? experts_digest : "");
    hash_examples(&h, ex);
    hash_i64(&h, opts->per_layer);
    hash_i64(&h, 0); /* the scorer's own normalisation: always off (see adapt.h) */
    hash_i64(&h, opts->rescale);
    hash_i64(&h, dim);
    hash_i64(&h, n_experts);
    hash_i64(&h, c->pop_size);
    hash_f64(&h, c->elite_ratio);
    hash_f64(&h, c->lo);
    hash_f64(&h, c->hi);
    hash_f64(&h, c->init_std);
    hash_f64(&h, c->ema);
    hash_f64(&h, c->std_floor);
    hash_i64(&h, c->max_generations);
    hash_i64(&h, c->elitism);
    hash_i64(&h, c->metric);
    hash_i64(&h, c->normalize);
    hash_f64(&h, c->std_tol);
    hash_i64(&h, c->patience);
    hash_f64(&h, c->target_accuracy);
    hash_f64(&h, c->target_loglik_tol);
    hash_i64(&h, (int64_t)c->seed);
    hash_f64(&h, opts->validation);
    hash_i64(&h, 0); /* was a per-layer search without a shared stage; now method cem */
    /* A warm start changes where the search begins: its α is part of the inputs (only when
     * given, so that keys without one are what they were). */
    /* The update method (only when it is not the CEM, so that keys made before there was a
     * choice are what they were). */
    if (c->method != ZMIX_CEM_METHOD_CEM) hash_i64(&h, 1000 + (int64_t)c->method);
    if (c->init_mean) {
        hash_str(&h, "warm-start");
        for (int i = 0; i < dim; i++) hash_f64(&h, c->init_mean[i]);
    }
    finish_hex(&h, hex);
}

int zmix_adapt_provenance_mismatch(const char *model_now, const char *experts_now,
                                   const char *model_fingerprint, const char *experts_digest,
                                   char *why, size_t size)
{
    if (!model_fingerprint || !model_fingerprint[0] || !experts_digest || !experts_digest[0])
        snprintf(why, size, "made by an older zmix that did not record its model and experts");
    else if (strcmp(model_fingerprint, model_now))
        snprintf(why, size, "made for another model (fingerprint %.16s…; this one is %.16s…)",
                 model_fingerprint, model_now);
    else if (strcmp(experts_digest, experts_now))
        snprintf(why, size,
                 "made with another expert set (digest %.16s…; this one is %.16s…): its α "
                 "weights other experts",
                 experts_digest, experts_now);
    else
        why[0] = '\0';
    return why[0] != '\0';
}

uint64_t zmix_adapt_key_stream(const char key[65])
{
    uint64_t s = 0;
    for (int i = 0; i < 16; i++) {
        char ch = key[i];
        s = s << 4 | (uint64_t)(ch <= '9' ? ch - '0' : ch - 'a' + 10);
    }
    return s;
}
