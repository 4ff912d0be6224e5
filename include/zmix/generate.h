/*
 * Text generation with the base model or an adaptation (W' = U·diag(c·σ⊙z')·Vᵀ materialised
 * once per generator), with a KV cache.
 *
 * A generator is stepped one token at a time, so a caller (the daemon) can interleave other
 * work between steps and stop early; zmix_generate_tokens runs the whole loop.
 *
 * Decoding, exactly (proto/PROTOCOL.md, method generate, repeats it):
 *   - temperature 0: the argmax of the logits (the first index on ties); top_p and seed
 *     are unused.
 *   - temperature T > 0: p_i = softmax(logits / T) computed in double. With top_p < 1, the
 *     ids sorted by p_i descending (ties: lower id first) and the nucleus is the shortest
 *     prefix whose cumulative probability reaches top_p (at least one id); else every id.
 *     u = pcg32_uniform(rng) · (the nucleus' total); the chosen id is the first of the
 *     nucleus, in increasing id order, whose running sum of p exceeds u (id order, so that
 *     ids of nearly equal p, whose sorted order rounding could swap, do not change the
 *     pick). rng is PCG32 seeded with pcg32_seed(rng, seed, ZMIX_GEN_PCG_STREAM), one draw
 *     per sampled token.
 *   - generation ends after max_tokens tokens, or at a stop token (the model's EOS unless
 *     ignore_eos, or one of the given stop ids), which is not part of the output.
 *
 * The cache-free path (no_cache) reruns the causal pass over the whole sequence at every
 * step: the reference the KV cache is checked against (the same ids; logits equal to float
 * rounding, see decode.c).
 */
#ifndef ZMIX_GENERATE_H
#define ZMIX_GENERATE_H

#include <stdatomic.h>
#include <stdint.h>

#include "zmix/model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The PCG stream id of the sampler: fixed, so that a seed gives the same tokens everywhere
 * (the CLI, the daemon, another implementation of PROTOCOL.md's generate). */
#define ZMIX_GEN_PCG_STREAM 0x67656e65u /* "gene" */

/* The most stop ids a request may give. */
#define ZMIX_GEN_MAX_STOP 64

typedef struct zmix_gen_opts {
    int max_tokens;     /* >= 1: tokens to generate at most */
    double temperature; /* 0: greedy; else in (0, 100] */
    double top_p;       /* (0, 1]; 1: the whole distribution */
    uint64_t seed;
    const int32_t *stop; /* n_stop extra stop ids (each in [0, vocab)) */
    int n_stop;          /* 0..ZMIX_GEN_MAX_STOP */
    int ignore_eos;      /* do not stop at the model's EOS */
    int no_cache;        /* the cache-free reference path */
} zmix_gen_opts;

void zmix_gen_opts_default(zmix_gen_opts *opts); /* 16 tokens, greedy, top_p 1, seed 0 */

/* Checks opts against a model (vocabulary, ranges); messages name the field. */
int zmix_gen_opts_check(const zmix_gen_opts *opts, int vocab_size, zmix_error *err);

/* The EOS id generation stops at: the tokenizer's when the model has one that names it,
 * else the model configuration's; -1 when neither. */
int zmix_model_eos(const zmix_model *model);

typedef enum zmix_gen_finish {
    ZMIX_GEN_RUNNING = 0,
    ZMIX_GEN_LENGTH, /* max_tokens reached, or the context is full */
    ZMIX_GEN_STOP    /* a stop token came (not output) */
} zmix_gen_finish;

const char *zmix_gen_finish_name(zmix_gen_finish f); /* "length", "stop" */

typedef struct zmix_generator zmix_generator;

/* A generator for model under z' (rt, rescale, z: the runtime z' is laid out for, the mass
 * rescale, z' of z_total floats), or the base model (rt and z NULL). W' is materialised here,
 * once; rt must outlive the generator. */
int zmix_generator_create(const zmix_model *model, const zmix_runtime *rt, int rescale,
                          const float *z, zmix_generator **out, zmix_error *err);
void zmix_generator_free(zmix_generator *g);

/* Starts a generation of prompt (n_prompt ids, copied) under opts (copied). A prompt with
 * n_prompt + max_tokens - 1 past the context is refused (ZMIX_ERANGE) naming the numbers. */
int zmix_generator_start(zmix_generator *g, const int32_t *prompt, int n_prompt,
                         const zmix_gen_opts *opts, zmix_error *err);

/* One step: runs the model (the whole prompt at the first step) and picks the next token.
 * *token: the new token, or -1 when this step ended the generation (a stop token: *finish
 * says why). *finish: ZMIX_GEN_RUNNING while more may come. stop (may be NULL) is read between
 * layers: ZMIX_ECANCELED. */
int zmix_generator_step(zmix_generator *g, int32_t *token, zmix_gen_finish *finish,
                        const atomic_int *stop, zmix_error *err);

/* The stop token that ended the generation, or -1. */
int32_t zmix_generator_stop_token(const zmix_generator *g);

/* The text of n generated ids (malloc'ed, NUL-terminated): the model's tokenizer's decoding
 * (special tokens left out), with any invalid UTF-8 (a byte tokenizer's, or a character cut
 * at the end) replaced by U+FFFD so that it can go into JSON and msgpack strings. NULL when
 * the model has no tokenizer or memory ran out. */
char *zmix_generation_text(const zmix_model *model, const int32_t *ids, int n);

/* The whole loop: at most opts->max_tokens tokens into out, *n_out of them. */
int zmix_generate_tokens(zmix_generator *g, const int32_t *prompt, int n_prompt,
                         const zmix_gen_opts *opts, int32_t *out, int *n_out,
                         zmix_gen_finish *finish, zmix_error *err);

#ifdef __cplusplus
}
#endif

#endif
