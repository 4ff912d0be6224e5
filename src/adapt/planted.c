/*
 * Planted tasks: a search problem whose answer is known because we made it. K random
 * experts, a hidden mix α*, and examples whose targets are the model's own greedy
 * continuations under z'(α*). A search that works finds a mix that reproduces them; the base
 * model and the single experts, which decode differently, do not.
 *
 * Experts are z = exp(N(0, s²)) per singular value: positive like a trained SVF vector, and
 * with s around 0.5 spread enough that the greedy continuation of a small model changes.
 *
 * Multiple-choice tasks: the choices are continuations the model itself would write under
 * different mixes (z'(α*), the base model, each expert), so that they are plausible and a
 * wrong mix prefers a wrong one; the answer is the choice z'(α*) prefers, by a margin, so
 * the task is well posed: α* solves it with room to spare, and rounding cannot flip it.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/compute.h"
#include "model/model_internal.h"
#include "util/pcg.h"
#include "zmix/adapt.h"

/* A fixed PCG stream id for planted data ("plant"), so the seed alone picks the task. */
#define PLANTED_STREAM 0x706c616e74ull

void zmix_planted_opts_default(zmix_planted_opts *o)
{
    memset(o, 0, sizeof *o);
    o->n_experts = 4;
    o->n_examples = 16;
    o->prompt_len = 4;
    o->target_len = 4;
    o->z_log_std = 0.5;
    o->adapt = ZMIX_ADAPT_MLP;
    o->rescale = 1;
    o->alpha_star = NULL;
    o->distinct_from_base = 0;
    o->n_choices = 0;
    o->choice_margin = 0.1;
    o->factor_cache_dir = NULL;
    o->seed = 1;
}

void zmix_planted_free(zmix_planted *p)
{
    if (!p) return;
    for (int k = 0; p->expert_paths && k < p->n_experts; k++) free(p->expert_paths[k]);
    free(p->expert_paths);
    free(p->alpha_star);
    if (p->examples.items || p->examples.tokens) zmix_examples_free(&p->examples);
    memset(p, 0, sizeof *p);
}

static int check_opts(const zmix_model_config *cfg, const zmix_planted_opts *o, zmix_error *err)
{
    if (o->n_experts < 1 || o->n_experts > 64)
        return zmix_error_set(err, ZMIX_EINVAL, "planted: n_experts = %d, must be in [1, 64]",
                              o->n_experts);
    if (o->n_examples < 1)
        return zmix_error_set(err, ZMIX_EINVAL, "planted: n_examples = %d, must be >= 1",
                              o->n_examples);
    if (o->prompt_len < 0 || o->target_len < 1)
        return zmix_error_set(err, ZMIX_EINVAL,
                              "planted: prompt_len = %d, target_len = %d (need >= 0 and >= 1)",
                              o->prompt_len, o->target_len);
    if (cfg->max_seq_len > 0 && 1 + o->prompt_len + o->target_len > cfg->max_seq_len)
        return zmix_error_set(err, ZMIX_ERANGE,
                              "planted: 1 + %d + %d tokens exceed the model's context of %d",
                              o->prompt_len, o->target_len, cfg->max_seq_len);
    if (cfg->vocab_size < 4)
        return zmix_error_set(err, ZMIX_EINVAL, "planted: vocabulary of %d tokens is too small",
                              cfg->vocab_size);
    if (!isfinite(o->z_log_std) || o->z_log_std < 0.0)
        return zmix_error_set(err, ZMIX_EINVAL, "planted: z_log_std = %g, must be >= 0",
                              o->z_log_std);
    if (o->n_choices != 0 && (o->n_choices < 2 || o->n_choices > ZMIX_MAX_CHOICES))
        return zmix_error_set(err, ZMIX_EINVAL, "planted: n_choices = %d, must be 0 or in [2, %d]",
                              o->n_choices, ZMIX_MAX_CHOICES);
    if (o->n_choices && (!isfinite(o->choice_margin) || o->choice_margin < 0.0))
        return zmix_error_set(err, ZMIX_EINVAL, "planted: choice_margin = %g, must be >= 0",
                              o->choice_margin);
    for (int k = 0; o->alpha_star && k < o->n_experts; k++)
        if (!isfinite(o->alpha_star[k]))
            return zmix_error_set(err, ZMIX_EINVAL, "planted: alpha_star[%d] is not finite", k);
    return 0;
}

/* Writes the K expert files; paths[k] receives each file's malloc'ed path. */
static int write_experts(const zmix_model *model, const char *dir, const zmix_planted_opts *o,
                         pcg32 *rng, char **paths, zmix_error *err)
{
    zmix_adapted *list = NULL;
    int n = 0;
    size_t z_total = 0;
    int rc = zmix_adapted_list(model, o->adapt, &list, &n, &z_total, err);
    if (rc) return rc;
    double *eps = malloc((z_total ? z_total : 1) * sizeof *eps);
    float *z = malloc((z_total ? z_total : 1) * sizeof *z);
    if (!eps || !z) rc = zmix_error_set(err, ZMIX_ENOMEM, "planted: out of memory");
    for (int k = 0; !rc && k < o->n_experts; k++) {
        pcg32_normal_fill(rng, eps, z_total);
        for (size_t i = 0; i < z_total; i++) z[i] = (float)exp(o->z_log_std * eps[i]);
        size_t len = strlen(dir) + 32;
        paths[k] = malloc(len);
        if (!paths[k]) {
            rc = zmix_error_set(err, ZMIX_ENOMEM, "planted: out of memory");
            break;
        }
        snprintf(paths[k], len, "%s/expert_%d.st", dir, k);
        char name[32], seed[32];
        snprintf(name, sizeof name, "planted_%d", k);
        snprintf(seed, sizeof seed, "%llu", (unsigned long long)o->seed);
        const char *keys[] = {"name", "zmix.planted_seed"};
        const char *values[] = {name, seed};
        rc = zmix_expert_save(paths[k], list, n, z, keys, values, 2, err);
    }
    free(eps);
    free(z);
    free(list);
    return rc;
}

/* The choice the model under z (NULL: the base model) prefers in the one-example set one
 * (its answer is set to it), and that choice's margin over the best other. */
static int preferred_choice(const zmix_runtime *rt, int rescale, const float *z, zmix_examples *one,
                            int *chosen, double *margin, zmix_error *err)
{
    size_t zt = zmix_runtime_z_total(rt);
    float *ones = z ? NULL : malloc((zt ? zt : 1) * sizeof *ones);
    if (!z && !ones) return zmix_error_set(err, ZMIX_ENOMEM, "planted: out of memory");
    for (size_t i = 0; ones && i < zt; i++) ones[i] = 1.0f;
    zmix_score s;
    zmix_example_score d;
    one->items[0].answer = 0;
    int rc = zmix_score_z(rt, rescale, one, 1, z ? z : ones, NULL, &s, &d, err);
    if (!rc) {
        one->items[0].answer = d.chosen;
        rc = zmix_score_z(rt, rescale, one, 1, z ? z : ones, NULL, &s, &d, err);
    }
    free(ones);
    *chosen = one->items[0].answer;
    *margin = d.loglik;
    return rc;
}

/* Multiple choice for the prompt t (n_prompt tokens): n_choices distinct continuations of
 * target_len tokens written after it, shuffled. *answer is the one z_star prefers, or -1 when
 * it does not by choice_margin (or, with distinct_from_base, the base model prefers it too). */
static int plant_choices(const zmix_runtime *rt, const zmix_planted_opts *o, const float *z_star,
                         int32_t *t, int n_prompt, pcg32 *rng, int *answer, zmix_error *err)
{
    const zmix_model_config *cfg = zmix_model_get_config(zmix_runtime_model(rt));
    int L = o->target_len, n = 0, K = zmix_runtime_n_experts(rt);
    int32_t *ch = t + n_prompt;
    *answer = -1;
    for (int src = 0; n < o->n_choices && src < 2 + K + 20 * o->n_choices; src++) {
        int32_t *c = ch + (size_t)n * L;
        int rc;
        if (src == 0 || src == 1) { /* z'(α*), then the base model */
            rc = zmix_generate(rt, o->rescale, src ? NULL : z_star, t, n_prompt, L, c, err);
        } else if (src < 2 + K) { /* each expert alone */
            rc = zmix_generate(rt, o->rescale, zmix_runtime_expert_z(rt, src - 2), t, n_prompt, L,
                               c, err);
        } else { /* a random first token, then z'(α*) */
            int32_t seq[4096];
            if (n_prompt + L > (int)(sizeof seq / sizeof *seq)) break;
            memcpy(seq, t, (size_t)n_prompt * sizeof *seq);
            seq[n_prompt] = 3 + (int32_t)pcg32_bounded(rng, (uint32_t)(cfg->vocab_size - 3));
            c[0] = seq[n_prompt];
            rc = L > 1 ? zmix_generate(rt, o->rescale, z_star, seq, n_prompt + 1, L - 1, c + 1, err)
                       : 0;
        }
        if (rc) return rc;
        int dup = 0;
        for (int j = 0; j < n && !dup; j++)
            dup = !memcmp(ch + (size_t)j * L, c, (size_t)L * sizeof *c);
        n += !dup;
    }
    if (n < o->n_choices) return 0;
    for (int i = n - 1; i > 0; i--) { /* shuffle: the answer's place says nothing */
        int j = (int)pcg32_bounded(rng, (uint32_t)(i + 1));
        for (int k = 0; k < L; k++) {
            int32_t x = ch[(size_t)i * L + k];
            ch[(size_t)i * L + k] = ch[(size_t)j * L + k];
            ch[(size_t)j * L + k] = x;
        }
    }
    int32_t lens[ZMIX_MAX_CHOICES];
    for (int c = 0; c < n; c++) lens[c] = L;
    zmix_example item = {t, n_prompt, NULL, 0, n, ch, lens, 0};
    zmix_examples one = {&item, 1, NULL, 0};
    int best, base_best;
    double margin, base_margin;
    int rc = preferred_choice(rt, o->rescale, z_star, &one, &best, &margin, err);
    if (rc || margin < o->choice_margin) return rc;
    if (o->distinct_from_base) {
        rc = preferred_choice(rt, o->rescale, NULL, &one, &base_best, &base_margin, err);
        if (rc || base_best == best) return rc;
    }
    *answer = best;
    return 0;
}

/* The smallest lead, over the target tokens of the sequence t (n_prompt + n_target tokens),
 * of the target token's logit over the best other token's under z. */
static int min_target_lead(const zmix_runtime *rt, int rescale, const float *z, const int32_t *t,
                           int n_prompt, int n_target, double *lead, zmix_error *err)
{
    int vocab = zmix_model_get_config(zmix_runtime_model(rt))->vocab_size;
    float *logits = malloc((size_t)n_target * (size_t)vocab * sizeof *logits);
    if (!logits) return zmix_error_set(err, ZMIX_ENOMEM, "planted: out of memory");
    zmix_example e = {t, n_prompt, t + n_prompt, n_target, 0, NULL, NULL, 0};
    zmix_examples one = {&e, 1, NULL, 0};
    zmix_compose_opts copts;
    zmix_compose_opts_default(&copts);
    copts.rescale = rescale;
    int rc =
        zmix_candidate_logits(rt, &copts, rescale, &one, NULL, z, ZMIX_WPRIME_AUTO, logits, err);
    *lead = INFINITY;
    for (int j = 0; !rc && j < n_target; j++) {
        const float *row = logits + (size_t)j * vocab;
        float other = -INFINITY;
        for (int v = 0; v < vocab; v++)
            if (v != t[n_prompt + j] && row[v] > other) other = row[v];
        double d = (double)row[t[n_prompt + j]] - (double)other;
        if (d < *lead) *lead = d;
    }
    free(logits);
    return rc;
}

int zmix_planted_create(const zmix_model *model, const char *dir, const zmix_planted_opts *o,
                        zmix_planted *out, zmix_error *err)
{
    const zmix_model_config *cfg = zmix_model_get_config(model);
    int rc = check_opts(cfg, o, err);
    if (rc) return rc;
    int k_n = o->n_experts, n_ex = o->n_examples;
    int n_prompt = 1 + o->prompt_len;
    int n_tok = n_prompt + o->target_len * (o->n_choices ? o->n_choices : 1);
    int32_t lens[ZMIX_MAX_CHOICES];
    for (int c = 0; c < o->n_choices; c++) lens[c] = o->target_len;
    zmix_planted p;
    memset(&p, 0, sizeof p);
    p.n_experts = k_n;
    p.expert_paths = calloc((size_t)k_n, sizeof *p.expert_paths);
    int32_t *tokens = malloc((size_t)n_ex * n_tok * sizeof *tokens);
    int32_t *base_out = malloc((size_t)o->target_len * sizeof *base_out);
    zmix_example *items = calloc((size_t)n_ex, sizeof *items);
    zmix_runtime *rt = NULL;
    float *z_star = NULL;
    if (!p.expert_paths || !tokens || !base_out || !items) {
        rc = zmix_error_set(err, ZMIX_ENOMEM, "planted: out of memory");
        goto done;
    }
    pcg32 rng;
    pcg32_seed(&rng, o->seed, PLANTED_STREAM);
    rc = write_experts(model, dir, o, &rng, p.expert_paths, err);
    if (rc) goto done;
    zmix_runtime_opts ropts;
    zmix_runtime_opts_default(&ropts);
    ropts.adapt = o->adapt;
    ropts.factor_cache_dir = o->factor_cache_dir;
    rc = zmix_runtime_create(model, &ropts, (const char *const *)p.expert_paths, k_n, &rt, err);
    if (rc) goto done;
    p.alpha_dim = o->per_layer ? k_n * zmix_runtime_n_matrices(rt) : k_n;
    p.alpha_star = malloc((size_t)p.alpha_dim * sizeof *p.alpha_star);
    if (!p.alpha_star) {
        rc = zmix_error_set(err, ZMIX_ENOMEM, "planted: out of memory");
        goto done;
    }
    for (int k = 0; k < p.alpha_dim; k++)
        p.alpha_star[k] =
            o->alpha_star ? o->alpha_star[k] : (float)(0.1 + 0.8 * pcg32_uniform(&rng));
    z_star = malloc(zmix_runtime_z_total(rt) * sizeof *z_star);
    if (!z_star) {
        rc = zmix_error_set(err, ZMIX_ENOMEM, "planted: out of memory");
        goto done;
    }
    zmix_compose_opts copts;
    zmix_compose_opts_default(&copts);
    copts.per_layer = o->per_layer;
    copts.normalize = 0;
    copts.rescale = o->rescale;
    rc = zmix_compose_z(rt, &copts, p.alpha_star, z_star, err);
    if (rc) goto done;

    /* Prompts are BOS then ids drawn above the special tokens (0..2 in llama2.c vocabularies:
     * unk, bos, eos), so every prompt is ordinary text to the model. */
    int bos = cfg->bos_id >= 0 ? cfg->bos_id : 1;
    int lo_id = 3, span = cfg->vocab_size - lo_id;
    int have = 0, tries = 0, max_tries = 200 * n_ex;
    while (have < n_ex && tries < max_tries) {
        tries++;
        int32_t *t = tokens + (size_t)have * n_tok;
        t[0] = bos;
        for (int j = 1; j < n_prompt; j++) t[j] = lo_id + (int32_t)pcg32_bounded(&rng, span);
        if (o->n_choices) {
            int answer;
            rc = plant_choices(rt, o, z_star, t, n_prompt, &rng, &answer, err);
            if (rc) goto done;
            if (answer < 0) continue;
            items[have++] =
                (zmix_example){t, n_prompt, NULL, 0, o->n_choices, t + n_prompt, lens, answer};
            continue;
        }
        rc = zmix_generate(rt, o->rescale, z_star, t, n_prompt, o->target_len, t + n_prompt, err);
        if (rc) goto done;
        if (o->target_margin > 0.0) {
            double lead;
            rc = min_target_lead(rt, o->rescale, z_star, t, n_prompt, o->target_len, &lead, err);
            if (rc) goto done;
            if (lead < o->target_margin) continue;
        }
        if (o->distinct_from_base) {
            rc = zmix_generate(rt, o->rescale, NULL, t, n_prompt, o->target_len, base_out, err);
            if (rc) goto done;
            if (!memcmp(base_out, t + n_prompt, (size_t)o->target_len * sizeof *base_out)) continue;
        }
        items[have].prompt = t;
        items[have].n_prompt = n_prompt;
        items[have].target = t + n_prompt;
        items[have].n_target = o->target_len;
        have++;
    }
    if (have < n_ex) {
        rc = zmix_error_set(err, ZMIX_ELIMIT,
                            "planted: only %d of %d prompts in %d tries %s (raise z_log_std)", have,
                            n_ex, tries,
                            o->n_choices ? "gave choices with an answer by the margin"
                                         : "decode differently from the base model");
        goto done;
    }
    p.n_tried = tries;
    rc = zmix_examples_copy(items, n_ex, &p.examples, err);
done:
    if (rt) zmix_runtime_free(rt);
    free(z_star);
    free(tokens);
    free(base_out);
    free(items);
    if (rc) {
        zmix_planted_free(&p);
        return zmix_error_prefix(err, "planted task (seed %llu)", (unsigned long long)o->seed);
    }
    *out = p;
    return 0;
}
