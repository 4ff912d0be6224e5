/*
 * Generation (include/zmix/generate.h): a KV-cached forward pass over the new tokens only,
 * the cache-free reference through zmix_forward_hidden, and the sampler.
 *
 * The cached pass is the stacked forward of forward.c for one sequence whose earlier keys and
 * values are kept per layer: the same kernels in the same order. Its logits equal the
 * reference's to float rounding, not bit for bit (OpenBLAS rounds a row differently depending
 * on how many rows its GEMM has), so greedy ids agree and sampled ones do unless a draw lands
 * within rounding of the boundary between two ids. Keys are cached after RoPE. Under dynamic (NTK)
 * scaling θ depends on the length of the whole sequence: past original_max_position_embeddings
 * every step changes the rotation of every position, hence every layer's attention output and the
 * keys and values of the layers above it, so a cache cannot hold them. There each step runs the
 * whole sequence again (as the reference does); up to that length the cache is used as for any
 * other model. (transformers keeps the stale cache instead, which is not the model's causal pass.)
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "compute.h"
#include "tok_unicode.h"
#include "util/pcg.h"
#include "zmix/generate.h"

/* An id and its probability, ranked by the sampler. */
typedef struct ranked_id {
    double p;
    int32_t id;
} ranked_id;

struct zmix_generator {
    const zmix_model *model; /* base model, or adapted below */
    zmix_model *adapted;     /* owned W' model, NULL for the base model */
    zmix_gen_opts opts;
    int32_t stop_ids[ZMIX_GEN_MAX_STOP];
    int eos;
    int32_t *seq; /* prompt + generated ids, max_len + 1 */
    int n_prompt, len, max_len, n_generated;
    int32_t stop_token;
    zmix_gen_finish finish;
    pcg32 rng;
    zmix_rope rope;
    float *k, *v; /* KV cache, [n_layers][max_len][kv_dim], keys after RoPE */
    float *scratch, *tile, *hidden, *logits;
    ranked_id *ranked; /* the sampler's [vocab] */
};

void zmix_gen_opts_default(zmix_gen_opts *opts)
{
    memset(opts, 0, sizeof *opts);
    opts->max_tokens = 16;
    opts->top_p = 1.0;
}

int zmix_gen_opts_check(const zmix_gen_opts *o, int vocab_size, zmix_error *err)
{
    if (o->max_tokens < 1)
        return zmix_error_set(err, ZMIX_ERANGE, "max_tokens is %d (expected >= 1)", o->max_tokens);
    if (!(o->temperature >= 0.0 && o->temperature <= 100.0))
        return zmix_error_set(err, ZMIX_ERANGE, "temperature %g is outside [0, 100]",
                              o->temperature);
    if (!(o->top_p > 0.0 && o->top_p <= 1.0))
        return zmix_error_set(err, ZMIX_ERANGE, "top_p %g is outside (0, 1]", o->top_p);
    if (o->n_stop < 0 || o->n_stop > ZMIX_GEN_MAX_STOP)
        return zmix_error_set(err, ZMIX_ERANGE, "%d stop ids (at most %d)", o->n_stop,
                              ZMIX_GEN_MAX_STOP);
    for (int i = 0; i < o->n_stop; i++)
        if (o->stop[i] < 0 || o->stop[i] >= vocab_size)
            return zmix_error_set(err, ZMIX_ERANGE,
                                  "stop[%d] is %d, outside the vocabulary [0, %d)", i,
                                  (int)o->stop[i], vocab_size);
    return 0;
}

int zmix_model_eos(const zmix_model *model)
{
    const zmix_tokenizer *tok = zmix_model_tokenizer(model);
    if (tok && zmix_tokenizer_eos(tok) >= 0) return zmix_tokenizer_eos(tok);
    return model->cfg.eos_id;
}

const char *zmix_gen_finish_name(zmix_gen_finish f)
{
    switch (f) {
    case ZMIX_GEN_LENGTH: return "length";
    case ZMIX_GEN_STOP: return "stop";
    default: return "running";
    }
}

static void release_buffers(zmix_generator *g)
{
    zmix_rope_free(&g->rope);
    free(g->seq);
    free(g->k);
    free(g->v);
    free(g->scratch);
    free(g->tile);
    free(g->hidden);
    free(g->logits);
    free(g->ranked);
    g->seq = NULL;
    g->k = g->v = g->scratch = g->tile = g->hidden = g->logits = NULL;
    g->ranked = NULL;
}

void zmix_generator_free(zmix_generator *g)
{
    if (!g) return;
    release_buffers(g);
    zmix_model_free(g->adapted);
    free(g);
}

int zmix_generator_create(const zmix_model *model, const zmix_runtime *rt, int rescale,
                          const float *z, zmix_generator **out, zmix_error *err)
{
    *out = NULL;
    if (z && (!rt || rt->model != model))
        return zmix_error_set(err, ZMIX_EINVAL, "generator: z' needs the runtime of this model");
    zmix_generator *g = calloc(1, sizeof *g);
    if (!g) return zmix_error_set(err, ZMIX_ENOMEM, "generator: out of memory");
    if (z) {
        int rc = zmix_model_with_wprime(rt, rescale, z, &g->adapted, err);
        if (rc) {
            free(g);
            return rc;
        }
    }
    g->model = g->adapted ? g->adapted : model;
    g->eos = zmix_model_eos(model);
    g->stop_token = -1;
    *out = g;
    return 0;
}

/* Scratch floats of the cached pass for n new rows of a sequence reaching len tokens. */
static size_t cached_scratch_floats(const zmix_model_config *c, int n, int len)
{
    size_t q_dim = (size_t)c->n_heads * c->head_dim;
    size_t widest = (size_t)c->dim > q_dim ? (size_t)c->dim : q_dim;
    if ((size_t)c->hidden_dim > widest) widest = (size_t)c->hidden_dim;
    /* x, xb, q, att, h1, h3, tmp (n rows each), scores (n × len), two RoPE tables (len). */
    return (size_t)n * (2 * c->dim + 2 * q_dim + 2 * (size_t)c->hidden_dim + widest) +
           (size_t)n * len + (size_t)len * c->head_dim + 64;
}

int zmix_generator_start(zmix_generator *g, const int32_t *prompt, int n_prompt,
                         const zmix_gen_opts *opts, zmix_error *err)
{
    const zmix_model_config *c = &g->model->cfg;
    release_buffers(g);
    int rc = zmix_gen_opts_check(opts, c->vocab_size, err);
    if (rc) return rc;
    if (n_prompt < 1) return zmix_error_set(err, ZMIX_EINVAL, "the prompt is empty");
    for (int i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= c->vocab_size)
            return zmix_error_set(err, ZMIX_ERANGE,
                                  "prompt token %d is %d, outside the vocabulary [0, %d)", i,
                                  (int)prompt[i], c->vocab_size);
    /* The last token is produced, never fed back. */
    if ((long)n_prompt + opts->max_tokens - 1 > c->max_seq_len)
        return zmix_error_set(err, ZMIX_ERANGE,
                              "%d prompt + %d new tokens exceed the context length %d", n_prompt,
                              opts->max_tokens, c->max_seq_len);
    g->opts = *opts;
    if (opts->n_stop) memcpy(g->stop_ids, opts->stop, (size_t)opts->n_stop * sizeof *g->stop_ids);
    g->opts.stop = g->stop_ids;
    g->n_prompt = n_prompt;
    g->len = n_prompt;
    g->max_len = n_prompt + opts->max_tokens - 1;
    g->n_generated = 0;
    g->stop_token = -1;
    g->finish = ZMIX_GEN_RUNNING;
    pcg32_seed(&g->rng, opts->seed, ZMIX_GEN_PCG_STREAM);

    size_t kv_dim = (size_t)c->n_kv_heads * c->head_dim;
    size_t cache = (size_t)c->n_layers * g->max_len * kv_dim;
    /* Dynamic scaling may run the whole sequence through the cached pass (see above). */
    int widest_call = c->rope_scaling.type == ZMIX_ROPE_DYNAMIC ? g->max_len : n_prompt;
    size_t scratch = opts->no_cache ? zmix_forward_scratch_floats(c, g->max_len, g->max_len)
                                    : cached_scratch_floats(c, widest_call, g->max_len);
    g->seq = malloc((size_t)(g->max_len + 1) * sizeof *g->seq);
    g->scratch = malloc(scratch * sizeof(float));
    g->hidden = malloc((size_t)c->dim * sizeof(float));
    g->logits = malloc((size_t)c->vocab_size * sizeof(float));
    g->ranked = malloc((size_t)c->vocab_size * sizeof *g->ranked);
    int ok = g->seq && g->scratch && g->hidden && g->logits && g->ranked;
    if (zmix_model_has_half(g->model))
        ok = ok && (g->tile = malloc(ZMIX_TILE_FLOATS * sizeof(float)));
    if (!opts->no_cache) {
        g->k = malloc((cache ? cache : 1) * sizeof(float));
        g->v = malloc((cache ? cache : 1) * sizeof(float));
        ok = ok && g->k && g->v;
    }
    if (!ok) {
        release_buffers(g);
        return zmix_error_set(err, ZMIX_ENOMEM, "out of memory for a generation of %d tokens",
                              g->max_len);
    }
    memcpy(g->seq, prompt, (size_t)n_prompt * sizeof *g->seq);
    rc = zmix_rope_init(&g->rope, c, g->max_len, err);
    if (rc) release_buffers(g);
    return rc;
}

/* The cos/sin tables of a sequence of len tokens: the shared one, or (dynamic scaling past
 * it) one of its own in own[0 .. len·head_dim). */
static void rope_tables(const zmix_generator *g, int len, float *own, const float **cos_t,
                        const float **sin_t)
{
    const zmix_model_config *c = &g->model->cfg;
    if (len <= g->rope.shared_len) {
        *cos_t = g->rope.cos;
        *sin_t = g->rope.sin;
        return;
    }
    size_t half = (size_t)c->head_dim / 2;
    zmix_rope_fill(c, len, len, own, own + (size_t)len * half);
    *cos_t = own;
    *sin_t = own + (size_t)len * half;
}

/* Runs the n tokens at positions pos0.. (the sequence then holds pos0 + n) through the model,
 * appending their keys and values to the cache; the final-normed hidden state of the last
 * one into g->hidden. */
static int forward_cached(zmix_generator *g, const int32_t *tokens, int n, int pos0,
                          const atomic_int *stop, zmix_error *err)
{
    const zmix_model *model = g->model;
    const zmix_model_config *c = &model->cfg;
    int dim = c->dim, hd = c->head_dim, q_dim = c->n_heads * hd, kv_dim = c->n_kv_heads * hd;
    int len = pos0 + n;
    size_t q_cols = (size_t)q_dim, widest = (size_t)dim > q_cols ? (size_t)dim : q_cols;
    if ((size_t)c->hidden_dim > widest) widest = (size_t)c->hidden_dim;
    float *x = g->scratch, *xb = x + (size_t)n * dim, *q = xb + (size_t)n * dim;
    float *att = q + (size_t)n * q_dim, *h1 = att + (size_t)n * q_dim;
    float *h3 = h1 + (size_t)n * c->hidden_dim, *tmp = h3 + (size_t)n * c->hidden_dim;
    float *scores = tmp + (size_t)n * widest, *own_rope = scores + (size_t)n * len;

    zmix_model_embed_rows(model, tokens, n, x);
    const float *cos_t, *sin_t;
    rope_tables(g, len, own_rope, &cos_t, &sin_t);

    zmix_linear lin[ZMIX_MAT_COUNT];
    int rows = n;
    for (int l = 0; l < c->n_layers; l++) {
        if (stop && atomic_load_explicit(stop, memory_order_relaxed))
            return zmix_error_set(err, ZMIX_ECANCELED, "generation cancelled");
        int rc = zmix_layer_base((void *)model, l, lin, err);
        if (rc) return rc;
        const zmix_layer *L = &model->layers[l];
        int last = l == c->n_layers - 1;
        float *kc = g->k + (size_t)l * g->max_len * kv_dim;
        float *vc = g->v + (size_t)l * g->max_len * kv_dim;
        float *k_new = kc + (size_t)pos0 * kv_dim, *v_new = vc + (size_t)pos0 * kv_dim;

        zmix_rmsnorm_rows(xb, x, L->attn_norm, rows, dim, c->norm_eps);
        zmix_linear_apply(&lin[ZMIX_MAT_K], xb, rows, k_new, tmp, g->tile);
        zmix_linear_apply(&lin[ZMIX_MAT_V], xb, rows, v_new, tmp, g->tile);
        for (int r = 0; L->bk && r < rows; r++)
            zmix_vec_add(k_new + (size_t)r * kv_dim, L->bk, (size_t)kv_dim);
        for (int r = 0; L->bv && r < rows; r++)
            zmix_vec_add(v_new + (size_t)r * kv_dim, L->bv, (size_t)kv_dim);
        zmix_rope_rows(k_new, rows, c->n_kv_heads, hd, pos0, cos_t, sin_t, c->rope_interleaved);

        /* The last layer needs the query (and all that follows) of the last row only. */
        int nq = last ? 1 : rows;
        const float *q_in = xb + (size_t)(rows - nq) * dim;
        zmix_linear_apply(&lin[ZMIX_MAT_Q], q_in, nq, q, tmp, g->tile);
        for (int r = 0; L->bq && r < nq; r++)
            zmix_vec_add(q + (size_t)r * q_dim, L->bq, (size_t)q_dim);
        zmix_rope_rows(q, nq, c->n_heads, hd, len - nq, cos_t, sin_t, c->rope_interleaved);
        zmix_attend(c, q, kc, vc, nq, len - nq, len, scores, att);
        zmix_linear_apply(&lin[ZMIX_MAT_O], att, nq, xb, tmp, g->tile);
        if (last && rows > 1) {
            memmove(x, x + (size_t)(rows - 1) * dim, (size_t)dim * sizeof *x);
            rows = 1;
        }
        zmix_vec_add(x, xb, (size_t)rows * dim);

        zmix_rmsnorm_rows(xb, x, L->ffn_norm, rows, dim, c->norm_eps);
        zmix_linear_apply(&lin[ZMIX_MAT_GATE], xb, rows, h1, tmp, g->tile);
        zmix_linear_apply(&lin[ZMIX_MAT_UP], xb, rows, h3, tmp, g->tile);
        zmix_vec_swiglu(h1, h3, (size_t)rows * c->hidden_dim);
        zmix_linear_apply(&lin[ZMIX_MAT_DOWN], h1, rows, xb, tmp, g->tile);
        zmix_vec_add(x, xb, (size_t)rows * dim);
    }
    zmix_rmsnorm_rows(g->hidden, x + (size_t)(rows - 1) * dim, model->final_norm, 1, dim,
                      c->norm_eps);
    return 0;
}

/* Probability descending, lower id first on ties. */
static int by_prob_desc(const void *a, const void *b)
{
    const ranked_id *x = a, *y = b;
    if (x->p != y->p) return x->p > y->p ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

static int by_id(const void *a, const void *b)
{
    const ranked_id *x = a, *y = b;
    return (x->id > y->id) - (x->id < y->id);
}

static int32_t pick_token(zmix_generator *g)
{
    int vocab = g->model->cfg.vocab_size;
    const float *logits = g->logits;
    int best = 0;
    for (int j = 1; j < vocab; j++)
        if (logits[j] > logits[best]) best = j; /* first index on ties */
    if (g->opts.temperature == 0.0) return best;

    /* Shifted by the largest logit: the same softmax, without overflow. */
    double inv_t = 1.0 / g->opts.temperature, sum = 0.0;
    ranked_id *r = g->ranked;
    for (int j = 0; j < vocab; j++) {
        r[j].p = exp(((double)logits[j] - logits[best]) * inv_t);
        r[j].id = j;
        sum += r[j].p;
    }
    for (int j = 0; j < vocab; j++) r[j].p /= sum;
    int kept = vocab;
    if (g->opts.top_p < 1.0) {
        qsort(r, (size_t)vocab, sizeof *r, by_prob_desc);
        double top = 0.0;
        kept = 0;
        while (kept < vocab && (kept == 0 || top < g->opts.top_p)) top += r[kept++].p;
        /* Back to id order: the draw below walks the nucleus by id, not by probability, so
         * that ids of nearly equal probability (whose order float rounding could swap) cannot
         * change which id a draw lands on. */
        qsort(r, (size_t)kept, sizeof *r, by_id);
    }
    double mass = 0.0;
    for (int i = 0; i < kept; i++) mass += r[i].p;
    double u = pcg32_uniform(&g->rng) * mass, cum = 0.0;
    for (int i = 0; i < kept; i++) {
        cum += r[i].p;
        if (cum > u) return r[i].id;
    }
    return r[kept - 1].id; /* u within rounding of the nucleus' total */
}

static int is_stop(const zmix_generator *g, int32_t id)
{
    if (!g->opts.ignore_eos && id == g->eos) return 1;
    for (int i = 0; i < g->opts.n_stop; i++)
        if (g->stop_ids[i] == id) return 1;
    return 0;
}

int zmix_generator_step(zmix_generator *g, int32_t *token, zmix_gen_finish *finish,
                        const atomic_int *stop, zmix_error *err)
{
    *token = -1;
    *finish = g->finish;
    if (!g->seq) return zmix_error_set(err, ZMIX_ESTATE, "generator: not started");
    if (g->finish != ZMIX_GEN_RUNNING) return 0;
    const zmix_model *model = g->model;
    int rc;
    if (g->opts.no_cache) {
        int one = 1;
        zmix_batch batch = {1, g->seq, &g->len, &one, NULL, NULL};
        rc = zmix_forward_hidden(model, &g->rope, &batch, zmix_layer_base, (void *)model,
                                 g->scratch, g->tile, g->hidden, stop, err);
    } else if (g->n_generated == 0 || g->len > g->rope.shared_len) {
        /* The prompt at once, or (dynamic scaling past its original context) everything. */
        rc = forward_cached(g, g->seq, g->len, 0, stop, err);
    } else {
        rc = forward_cached(g, g->seq + g->len - 1, 1, g->len - 1, stop, err);
    }
    if (rc) return rc;
    zmix_lm_head(model, g->hidden, 1, g->logits, g->tile);
    /* A degenerate W' (or model) gives NaN or Inf: say so rather than pick an arbitrary id. */
    for (int j = 0; j < model->cfg.vocab_size; j++)
        if (!isfinite(g->logits[j]))
            return zmix_error_set(err, ZMIX_ENUMERIC, "logit %d is %s at generated token %d", j,
                                  isnan(g->logits[j]) ? "NaN" : "infinite", g->n_generated);
    int32_t id = pick_token(g);
    if (is_stop(g, id)) {
        g->stop_token = id;
        g->finish = ZMIX_GEN_STOP;
    } else {
        *token = id;
        g->n_generated++;
        if (g->n_generated == g->opts.max_tokens)
            g->finish = ZMIX_GEN_LENGTH;
        else
            g->seq[g->len++] = id;
    }
    *finish = g->finish;
    return 0;
}

int32_t zmix_generator_stop_token(const zmix_generator *g)
{
    return g->stop_token;
}

int zmix_generate_tokens(zmix_generator *g, const int32_t *prompt, int n_prompt,
                         const zmix_gen_opts *opts, int32_t *out, int *n_out,
                         zmix_gen_finish *finish, zmix_error *err)
{
    *n_out = 0;
    int rc = zmix_generator_start(g, prompt, n_prompt, opts, err);
    *finish = ZMIX_GEN_RUNNING;
    while (!rc && *finish == ZMIX_GEN_RUNNING) {
        int32_t id;
        rc = zmix_generator_step(g, &id, finish, NULL, err);
        if (!rc && id >= 0) out[(*n_out)++] = id;
    }
    return rc;
}

char *zmix_generation_text(const zmix_model *model, const int32_t *ids, int n)
{
    const zmix_tokenizer *tok = zmix_model_tokenizer(model);
    if (!tok) return NULL;
    size_t need = zmix_tokenizer_decode(tok, ids, n, 0, NULL, 0);
    char *raw = malloc(need + 1);
    if (!raw) return NULL;
    zmix_tokenizer_decode(tok, ids, n, 0, raw, need + 1);
    size_t len;
    char *text = tok_lossy_utf8((const unsigned char *)raw, need, &len);
    free(raw);
    return text;
}
