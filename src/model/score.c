/*
 * The scorer: accuracy and mean target log-likelihood of P candidates on a few-shot set.
 *
 * Teacher forcing, one pass. Example i is run as the sequence prompt + target[0..n-2]; the
 * last n_target rows predict the target tokens, so exact match (greedy decoding reproduces
 * the target) is "every target token is the argmax at its row", and the log-likelihood comes
 * from the same logits. The LM head runs on those rows only.
 *
 * Work split and determinism. By default candidates are scored a chunk at a time through
 * one population pass (zmix_forward_pop, compute.h): each candidate's rows are one copy of
 * the stacked examples, maps shared by all candidates are one GEMM over every copy, and the
 * copies start at 48-row boundaries so that the BLAS kernel gives a candidate's rows the same
 * bits whatever else is in its chunk. Without batching (zmix_score_batched = 0, or when one
 * candidate's examples must be split into groups to fit the budget) the unit of work is one
 * candidate, its examples stacked into one activation matrix. Either way nothing a candidate
 * computes depends on which other candidates share the call, how many there are, or which
 * thread runs it: the example grouping, the way each W' is applied (the mode) and the LM
 * head's chunking are fixed by the runtime, the examples and the memory budget alone. So a
 * candidate's score is bit-identical alone or in a batch of 64, in any split, with 1 thread
 * or 2 (docs/scoring.md, "Determinism").
 *
 * How W' is applied (per adapted matrix, chosen by a cost model unless forced):
 *   linear   W' = c·Σ_k α_k W_k from the precomputed expert matrices: K axpys per matrix;
 *   compose  W' = (U·diag(c·σ⊙z'))·Vt, a rank-sized GEMM per matrix;
 *   factored y = U·(c·σ⊙z'⊙(Vt·x)): no W' at all, (rows+cols)·rank instead of rows·cols
 *            per row. Wins for short example sets, where composing costs more than it saves.
 *
 * Memory. Each worker holds the activations of one example group. When the whole example set
 * of a candidate does not fit the budget, the examples are split into groups (in order) that
 * do, and fewer workers run when several would not fit together. Besides, every worker holds
 * one layer's composed W', the composition temporary and, for 16-bit weights or factors, the
 * 1 MB tile (zmix_memory_plan counts them).
 *
 * Buffers kept. The calling thread's worker (the only one when the daemon's pool scores with
 * one thread per call) keeps its buffers between calls, grown to the largest call so far and
 * freed when the thread ends: allocating tens of MB afresh per call cost a page fault per
 * 4 KiB touched, every generation (issue "Speed, round 2").
 */
#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "compute.h"

/* Cost of one float of an axpy relative to one GEMM multiply-add: the axpy streams from
 * memory while the GEMM runs from cache at full SIMD width. */
#define AXPY_COST 8.0
/* Cost of one GEMM or axpy call in multiply-adds when candidates are batched: what a call
 * costs in set-up and packing, which the tiny models' per-candidate calls are made of. */
#define CALL_COST 30000.0

int zmix_score_batched = 1;
int zmix_score_shared_prefix = 1;
int zmix_score_chunk = 0;

void zmix_example_score_logits(const float *logits, const int32_t *target, int n_target, int vocab,
                               zmix_example_score *out)
{
    int exact = 1;
    double sum_logp = 0.0, short_of_goal = 0.0;
    for (int t = 0; t < n_target; t++) {
        const float *row = logits + (size_t)t * vocab;
        float mx = zmix_vec_max(row, (size_t)vocab);
        int best = 0;
        while (best < vocab - 1 && row[best] != mx) best++; /* first index of the maximum */
        double sum = zmix_vec_sum_exp_shift(row, mx, (size_t)vocab);
        sum_logp += (double)(row[target[t]] - mx) - log(sum);
        exact &= best == target[t];
        /* The target's lead over the best other token: the runner-up when it is the
         * maximum, else the maximum. */
        float other = -INFINITY;
        if (best == target[t]) {
            for (int v = 0; v < vocab; v++)
                if (v != best && row[v] > other) other = row[v];
        } else {
            other = mx;
        }
        double lead = (double)row[target[t]] - (double)other;
        if (lead < ZMIX_MARGIN_GOAL) short_of_goal += lead - ZMIX_MARGIN_GOAL;
    }
    out->exact = exact;
    out->loglik = sum_logp / n_target;
    out->chosen = -1;
    out->margin = short_of_goal / n_target;
}

void zmix_choice_score_logits(const float *logits, const zmix_example *e, int vocab,
                              zmix_choice_norm norm, zmix_example_score *out)
{
    /* Row 0 (the prompt's last) predicts every choice's first token; choice c's other tokens
     * are predicted by its own rows, which follow those of the choices before it. */
    double ll[ZMIX_MAX_CHOICES];
    const float *row0 = logits;
    float mx0 = zmix_vec_max(row0, (size_t)vocab);
    double lse0 = (double)mx0 + log(zmix_vec_sum_exp_shift(row0, mx0, (size_t)vocab));
    const float *rows = logits + (size_t)vocab;
    const int32_t *tok = e->choices;
    for (int c = 0; c < e->n_choices; c++) {
        int n = e->choice_len[c];
        double sum = (double)row0[tok[0]] - lse0;
        for (int j = 1; j < n; j++) {
            const float *row = rows + (size_t)(j - 1) * vocab;
            float mx = zmix_vec_max(row, (size_t)vocab);
            sum += (double)(row[tok[j]] - mx) - log(zmix_vec_sum_exp_shift(row, mx, (size_t)vocab));
        }
        ll[c] = norm == ZMIX_CHOICE_SUM ? sum : sum / n;
        rows += (size_t)(n - 1) * vocab;
        tok += n;
    }
    int best = 0;
    double other = -INFINITY;
    for (int c = 0; c < e->n_choices; c++) {
        if (ll[c] > ll[best]) best = c;
        if (c != e->answer && ll[c] > other) other = ll[c];
    }
    out->chosen = best;
    out->loglik = ll[e->answer] - other;
    out->exact = out->loglik > 0.0; /* a tie is wrong */
    out->margin = out->loglik < ZMIX_MARGIN_GOAL ? out->loglik - ZMIX_MARGIN_GOAL : 0.0;
}

/* ---- One scoring call ----------------------------------------------------------------- */

typedef struct ex_group {
    int first, n;           /* examples [first, first + n) */
    int n_rows, n_out_rows; /* Σ len, Σ n_target */
    int max_len;
} ex_group;

typedef struct score_call {
    const zmix_runtime *rt;
    const zmix_compose_opts *copts;
    int rescale;
    const zmix_examples *ex;
    int n_cand;
    const float *alpha, *z; /* exactly one non-NULL */
    size_t cand_stride;
    zmix_wprime_mode *mode; /* [M] */
    int32_t *tokens;        /* every example's sequence, back to back */
    int *len, *n_out;       /* [n examples] */
    int *n_branch;          /* [n examples]: choices of a multiple-choice example, else 0 */
    int *branch_len;        /* every choice's rows (its length - 1), example after example */
    int *branch_off;        /* [n examples]: where an example's entries of branch_len start */
    int *span;              /* [n examples]: positions read: len, or prompt + longest branch */
    zmix_choice_norm choice_norm;
    size_t *token_offset; /* [n examples] */
    ex_group *groups;
    int n_groups;
    zmix_rope rope;
    size_t wbuf_floats, ctmp_floats, scratch_floats, out_rows_max, tile_floats;
    size_t bytes_per_worker;
    int batched;   /* the population path: all examples in one group, candidates in chunks */
    int cmax;      /* batched: candidates per chunk */
    int lm_chunk;  /* batched: candidates per LM head GEMM */
    int lm_single; /* batched: the LM head runs per candidate, unpadded */
    int rows_per_cand, out_per_cand;
    const atomic_int *stop;
    zmix_score *out;
    zmix_example_score *detail;
    float *logits_out; /* tests: the target-position logits of candidate 0, or NULL */

    pthread_mutex_t lock;
    int next_cand;
    int rc;
    zmix_error err;
} score_call;

typedef struct worker {
    score_call *call;
    float *scratch, *hidden, *logits;
    float *wbuf, *ctmp;  /* composed W' of one layer; composition temporary */
    float *tile;         /* 16-bit matrices widened block by block (NULL when none) */
    float *zbuf, *scale; /* z' and c·σ⊙z' of every matrix (z_total each) */
    float *alpha_m;      /* [M][K] effective α */
    float *c;            /* [M] rescale factors */
    char *base;          /* [M][cmax]: z' = 1 exactly, so W' is W itself (c = 1 by definition) */
    int cmax;            /* candidate slots: the per-candidate arrays above hold cmax each */
    int *copy_cand;      /* batched: the candidate of each copy */
    int n_copies;
    zmix_example_score *ex_scores;
    pthread_t thread;
    int kept; /* the large buffers are the calling thread's kept ones */
} worker;

/* The calling thread's buffers, kept across calls (see the top of the file). */
enum { KEPT_SCRATCH, KEPT_HIDDEN, KEPT_LOGITS, KEPT_WBUF, KEPT_CTMP, KEPT_TILE, KEPT_COUNT };
typedef struct kept_buffers {
    void *p[KEPT_COUNT];
    size_t cap[KEPT_COUNT];
} kept_buffers;

static pthread_key_t kept_key;
static pthread_once_t kept_once = PTHREAD_ONCE_INIT;

static void kept_release(void *v)
{
    kept_buffers *k = v;
    for (int i = 0; k && i < KEPT_COUNT; i++) free(k->p[i]);
    free(k);
}

static void kept_key_create(void)
{
    if (pthread_key_create(&kept_key, kept_release) != 0) kept_key = (pthread_key_t)-1;
}

/* This thread's kept buffers, or NULL (no key, or no memory: the call then allocates its
 * own, as before). */
static kept_buffers *kept_for_thread(void)
{
    pthread_once(&kept_once, kept_key_create);
    if (kept_key == (pthread_key_t)-1) return NULL;
    kept_buffers *k = pthread_getspecific(kept_key);
    if (!k && (k = calloc(1, sizeof *k)) && pthread_setspecific(kept_key, k) != 0) {
        free(k);
        k = NULL;
    }
    return k;
}

/* Buffer i of at least bytes, grown when smaller (contents not kept). */
static void *kept_get(kept_buffers *k, int i, size_t bytes)
{
    if (k->cap[i] < bytes) {
        free(k->p[i]);
        k->p[i] = malloc(bytes);
        k->cap[i] = k->p[i] ? bytes : 0;
    }
    return k->p[i];
}

static void worker_free(worker *w)
{
    if (w->kept) { /* the thread keeps them */
        w->scratch = w->hidden = w->logits = w->wbuf = w->ctmp = w->tile = NULL;
    }
    free(w->scratch);
    free(w->hidden);
    free(w->logits);
    free(w->wbuf);
    free(w->ctmp);
    free(w->tile);
    free(w->zbuf);
    free(w->scale);
    free(w->alpha_m);
    free(w->c);
    free(w->base);
    free(w->ex_scores);
    free(w->copy_cand);
}

static int worker_alloc(worker *w, score_call *call, int keep)
{
    const zmix_runtime *rt = call->rt;
    const zmix_model_config *c = &rt->model->cfg;
    size_t zt = rt->z_total ? rt->z_total : 1, M = rt->n_mat ? (size_t)rt->n_mat : 1;
    size_t K = rt->n_experts ? (size_t)rt->n_experts : 1;
    memset(w, 0, sizeof *w);
    w->call = call;
    size_t S = call->batched ? (size_t)call->cmax : 1;
    w->cmax = (int)S;
    size_t bytes[KEPT_COUNT] = {
        [KEPT_SCRATCH] = call->scratch_floats * sizeof(float),
        [KEPT_HIDDEN] =
            (call->batched ? S * zmix_pop_pad((size_t)call->out_per_cand) : call->out_rows_max) *
            c->dim * sizeof(float),
        [KEPT_LOGITS] =
            (call->batched ? (size_t)call->lm_chunk * zmix_pop_pad((size_t)call->out_per_cand)
                           : call->out_rows_max) *
            c->vocab_size * sizeof(float),
        [KEPT_WBUF] = (call->wbuf_floats ? call->wbuf_floats : 1) * sizeof(float),
        [KEPT_CTMP] = (call->ctmp_floats ? call->ctmp_floats : 1) * sizeof(float),
        [KEPT_TILE] = call->tile_floats * sizeof(float)};
    kept_buffers *k = keep ? kept_for_thread() : NULL;
    void *p[KEPT_COUNT] = {0};
    for (int i = 0; i < KEPT_COUNT; i++) {
        if (i == KEPT_TILE && !bytes[i]) continue; /* no 16-bit matrices: no tile */
        size_t n = bytes[i] ? bytes[i] : 1;
        p[i] = k ? kept_get(k, i, n) : malloc(n);
    }
    w->kept = k != NULL;
    w->scratch = p[KEPT_SCRATCH];
    w->hidden = p[KEPT_HIDDEN];
    w->logits = p[KEPT_LOGITS];
    w->wbuf = p[KEPT_WBUF];
    w->ctmp = p[KEPT_CTMP];
    w->tile = p[KEPT_TILE];
    w->zbuf = malloc(S * zt * sizeof(float));
    w->scale = malloc(S * zt * sizeof(float));
    w->alpha_m = malloc(S * M * K * sizeof(float));
    w->c = malloc(S * M * sizeof(float));
    w->base = malloc(S * M);
    w->copy_cand = malloc(S * sizeof(int));
    w->ex_scores = malloc((size_t)call->ex->n * sizeof *w->ex_scores);
    if (!w->scratch || !w->hidden || !w->logits || !w->wbuf || !w->ctmp ||
        (call->tile_floats && !w->tile) || !w->zbuf || !w->scale || !w->alpha_m || !w->c ||
        !w->base || !w->ex_scores || !w->copy_cand) {
        worker_free(w);
        return ZMIX_ENOMEM;
    }
    return 0;
}

/* Fills the per-matrix α, z', c and scales of candidate i. Returns 0, or 1 when the
 * candidate is degenerate (α or z' not finite, α not normalisable, or a rescale dividing
 * by zero). */
static int candidate_prepare(worker *w, int i, int slot)
{
    score_call *call = w->call;
    const zmix_runtime *rt = call->rt;
    int K = rt->n_experts, M = rt->n_mat;
    for (int m = 0; m < M; m++) {
        const zmix_adapted *a = &rt->list[m];
        const zmix_factors *f = &rt->factors[m];
        float *zm = w->zbuf + (size_t)slot * rt->z_total + a->z_offset;
        float *cm = &w->c[(size_t)slot * M + m];
        char *bm = &w->base[(size_t)m * w->cmax + slot];
        float c;
        if (call->alpha) {
            float *am = w->alpha_m + ((size_t)slot * M + m) * K;
            if (zmix_alpha_for_matrix(rt, call->copts, call->alpha + (size_t)i * call->cand_stride,
                                      m, am))
                return 1;
            if (call->mode[m] == ZMIX_WPRIME_LINEAR) {
                /* Σ σ⊙z' = Σ_k α_k Σ σ⊙z_k: the rescale needs no z'. */
                double denom = 0.0;
                for (int k = 0; k < K; k++) denom += am[k] * rt->expert_sigma_z[(size_t)m * K + k];
                double cd = (double)rt->sigma_sum[m] / denom;
                c = !call->rescale ? 1.0f : (denom == 0.0 || !isfinite(cd)) ? 0.0f : (float)cd;
                *cm = c;
                *bm = 0;
                if (c == 0.0f) return 1;
                continue;
            }
            for (int j = 0; j < a->rank; j++) zm[j] = 0.0f;
            for (int k = 0; k < K; k++) {
                const float *zk = rt->experts[k].z + a->z_offset;
                for (int j = 0; j < a->rank; j++) zm[j] += am[k] * zk[j];
            }
        } else {
            memcpy(zm, call->z + (size_t)i * call->cand_stride + a->z_offset,
                   (size_t)a->rank * sizeof(float));
        }
        int ones = 1;
        for (int j = 0; j < a->rank; j++) {
            if (!isfinite(zm[j])) return 1;
            ones &= zm[j] == 1.0f;
        }
        *bm = (char)ones;
        if (ones) { /* the unadapted matrix, exactly: no composition, no rounding */
            *cm = 1.0f;
            continue;
        }
        c = zmix_rescale_factor(rt, m, zm, call->rescale);
        *cm = c;
        if (c == 0.0f) return 1;
        if (call->mode[m] == ZMIX_WPRIME_FACTORED) {
            float *s = w->scale + (size_t)slot * rt->z_total + a->z_offset;
            for (int j = 0; j < a->rank; j++) s[j] = c * f->S[j] * zm[j];
        }
    }
    return 0;
}

/* zmix_layer_fn for the candidate a worker is scoring. */
static int candidate_layer(void *user, int layer, zmix_linear lin[ZMIX_MAT_COUNT], zmix_error *err)
{
    worker *w = user;
    score_call *call = w->call;
    const zmix_runtime *rt = call->rt;
    int K = rt->n_experts;
    zmix_layer_base((void *)rt->model, layer, lin, err);
    float *wnext = w->wbuf;
    for (int kind = 0; kind < ZMIX_MAT_COUNT; kind++) {
        int m = rt->adapted_index[layer * ZMIX_MAT_COUNT + kind];
        if (m < 0 || (call->mode[m] != ZMIX_WPRIME_LINEAR && w->base[(size_t)m * w->cmax]))
            continue;
        const zmix_adapted *a = &rt->list[m];
        const zmix_factors *f = &rt->factors[m];
        size_t n = (size_t)a->rows * a->cols;
        switch (call->mode[m]) {
        case ZMIX_WPRIME_LINEAR: {
            const float *am = w->alpha_m + (size_t)m * K;
            float *const *wk = rt->expert_w + (size_t)m * K;
            zmix_vec_scale(wnext, w->c[m] * am[0], wk[0], n);
            for (int k = 1; k < K; k++) zmix_vec_axpy(wnext, w->c[m] * am[k], wk[k], n);
            lin[kind].W = (zmix_wref){wnext, ZMIX_DT_F32};
            wnext += n;
            break;
        }
        case ZMIX_WPRIME_COMPOSE:
            zmix_wprime_compose(rt, m, w->zbuf + a->z_offset, w->c[m], wnext, w->ctmp, w->tile);
            lin[kind].W = (zmix_wref){wnext, ZMIX_DT_F32};
            wnext += n;
            break;
        default: /* factored */
            lin[kind].W = (zmix_wref){NULL, ZMIX_DT_F32};
            lin[kind].U = zmix_factors_U(f);
            lin[kind].Vt = zmix_factors_Vt(f);
            lin[kind].rank = f->rank;
            lin[kind].scale = w->scale + a->z_offset;
            break;
        }
    }
    return 0;
}

/* Scores examples first..first+n-1 from their logits (lg: their output rows, in order) into
 * scores[first..]. */
static void score_logits(const score_call *call, const float *lg, int first, int n,
                         zmix_example_score *scores)
{
    int vocab = call->rt->model->cfg.vocab_size;
    for (int e = first; e < first + n; e++) {
        const zmix_example *x = &call->ex->items[e];
        if (x->n_choices)
            zmix_choice_score_logits(lg, x, vocab, call->choice_norm, &scores[e]);
        else
            zmix_example_score_logits(lg, x->target, x->n_target, vocab, &scores[e]);
        lg += (size_t)call->n_out[e] * vocab;
    }
}

/* A candidate's score: the means over its n examples, summed in example order. */
/* ZMIX_SCORE_TRACE=FILE (a diagnostic, docs/scoring.md): every scored candidate's examples
 * as one line "C exact loglik margin ..." in scoring order, for offline studies of the
 * search (bench/prune_ceiling.py). Opened on first use; a line is one write. */
static FILE *score_trace;
static pthread_once_t score_trace_once = PTHREAD_ONCE_INIT;

static void score_trace_open(void)
{
    const char *path = getenv("ZMIX_SCORE_TRACE");
    if (path && path[0]) score_trace = fopen(path, "a");
}

static void score_trace_write(const zmix_example_score *scores, int n)
{
    pthread_once(&score_trace_once, score_trace_open);
    if (!score_trace) return;
    size_t cap = 2 + (size_t)n * 56, len = 1;
    char *line = malloc(cap);
    if (!line) return;
    line[0] = 'C';
    for (int e = 0; e < n; e++)
        len += (size_t)snprintf(line + len, cap - len, " %d %.17g %.17g", scores[e].exact,
                                scores[e].loglik, scores[e].margin);
    line[len++] = '\n';
    fwrite(line, 1, len, score_trace);
    fflush(score_trace);
    free(line);
}

static void score_mean(const zmix_example_score *scores, int n, zmix_score *out)
{
    score_trace_write(scores, n);
    int n_exact = 0;
    double sum = 0.0, margin = 0.0;
    for (int e = 0; e < n; e++) {
        n_exact += scores[e].exact;
        sum += scores[e].loglik;
        margin += scores[e].margin;
    }
    out->accuracy = (double)n_exact / n;
    out->loglik = sum / n;
    out->margin = margin / n;
}

static int score_candidate(worker *w, int i, zmix_error *err)
{
    score_call *call = w->call;
    const zmix_model *model = call->rt->model;
    const zmix_examples *ex = call->ex;
    zmix_score *out = &call->out[i];
    unsigned long long t0 = zmix_stage_clock();
    int degenerate = candidate_prepare(w, i, 0);
    zmix_stage_add(ZMIX_STAGE_COMPOSE, t0);
    if (degenerate) {
        /* Degenerate candidates rank below every real score rather than failing the call. */
        out->accuracy = NAN;
        out->loglik = NAN;
        out->margin = NAN;
        for (int e = 0; e < ex->n; e++) w->ex_scores[e] = (zmix_example_score){0, NAN, -1, NAN};
    } else {
        for (int g = 0; g < call->n_groups; g++) {
            const ex_group *grp = &call->groups[g];
            zmix_batch batch = {grp->n,
                                call->tokens + call->token_offset[grp->first],
                                call->len + grp->first,
                                call->n_out + grp->first,
                                call->n_branch + grp->first,
                                call->branch_len + call->branch_off[grp->first]};
            int rc = zmix_forward_hidden(model, &call->rope, &batch, candidate_layer, w, w->scratch,
                                         w->tile, w->hidden, call->stop, err);
            if (rc) return rc;
            t0 = zmix_stage_clock();
            zmix_lm_head(model, w->hidden, grp->n_out_rows, w->logits, w->tile);
            zmix_stage_add(ZMIX_STAGE_LM_HEAD, t0);
            t0 = zmix_stage_clock();
            if (call->logits_out && i == 0) {
                size_t before = 0;
                for (int e = 0; e < grp->first; e++) before += (size_t)call->n_out[e];
                memcpy(call->logits_out + before * model->cfg.vocab_size, w->logits,
                       (size_t)grp->n_out_rows * model->cfg.vocab_size * sizeof(float));
            }
            score_logits(call, w->logits, grp->first, grp->n, w->ex_scores);
            zmix_stage_add(ZMIX_STAGE_LOSS, t0);
        }
        score_mean(w->ex_scores, ex->n, out);
    }
    if (call->detail)
        memcpy(call->detail + (size_t)i * ex->n, w->ex_scores,
               (size_t)ex->n * sizeof *w->ex_scores);
    return 0;
}

/* ---- The population path ---------------------------------------------------------------- */

/* zmix_pop_ops.layer: how each matrix of a layer is applied to the chunk's copies. */
static int pop_layer(void *user, int layer, zmix_linear lin[ZMIX_MAT_COUNT],
                     zmix_pop_map map[ZMIX_MAT_COUNT], zmix_error *err)
{
    worker *w = user;
    const zmix_runtime *rt = w->call->rt;
    zmix_layer_base((void *)rt->model, layer, lin, err);
    for (int kind = 0; kind < ZMIX_MAT_COUNT; kind++) {
        map[kind] = (zmix_pop_map){ZMIX_POP_SHARED, NULL, 0, NULL};
        int m = rt->adapted_index[layer * ZMIX_MAT_COUNT + kind];
        if (m < 0) continue;
        if (w->call->mode[m] != ZMIX_WPRIME_FACTORED) {
            map[kind].kind = ZMIX_POP_DENSE;
            continue;
        }
        const zmix_factors *f = &rt->factors[m];
        const char *base = w->base + (size_t)m * w->cmax;
        int any_base = 0, all_base = 1;
        for (int c = 0; c < w->n_copies; c++) any_base |= base[c], all_base &= base[c];
        if (all_base) {
            /* Every copy is the base matrix (z' = 1: the base row of a job's baselines), which
             * pop_copy gives each: the factored products would all be discarded, and reading
             * U and Vt for them would page them back in beside the expert matrices. */
            map[kind].kind = ZMIX_POP_DENSE;
            continue;
        }
        lin[kind].U = zmix_factors_U(f);
        lin[kind].Vt = zmix_factors_Vt(f);
        lin[kind].rank = f->rank;
        map[kind] = (zmix_pop_map){ZMIX_POP_FACTORED, w->scale + rt->list[m].z_offset, rt->z_total,
                                   any_base ? base : NULL};
    }
    return 0;
}

/* zmix_pop_ops.copy: copy c's W' of one matrix (linear or compose), or its base matrix. */
static int pop_copy(void *user, int layer, int kind, int c, zmix_linear *lin, zmix_error *err)
{
    (void)err;
    worker *w = user;
    const zmix_runtime *rt = w->call->rt;
    int m = rt->adapted_index[layer * ZMIX_MAT_COUNT + kind], M = rt->n_mat, K = rt->n_experts;
    memset(lin, 0, sizeof *lin);
    lin->W =
        zmix_model_matrix_ref(rt->model, layer, (zmix_matrix_kind)kind, &lin->rows, &lin->cols);
    zmix_wprime_mode mode = w->call->mode[m];
    if (mode != ZMIX_WPRIME_LINEAR && w->base[(size_t)m * w->cmax + c]) return 0;
    size_t n = (size_t)lin->rows * lin->cols;
    float cm = w->c[(size_t)c * M + m];
    if (mode == ZMIX_WPRIME_LINEAR) {
        const float *am = w->alpha_m + ((size_t)c * M + m) * K;
        float *const *wk = rt->expert_w + (size_t)m * K;
        zmix_vec_scale(w->wbuf, cm * am[0], wk[0], n);
        for (int k = 1; k < K; k++) zmix_vec_axpy(w->wbuf, cm * am[k], wk[k], n);
    } else {
        zmix_wprime_compose(rt, m, w->zbuf + (size_t)c * rt->z_total + rt->list[m].z_offset, cm,
                            w->wbuf, w->ctmp, w->tile);
    }
    lin->W = (zmix_wref){w->wbuf, ZMIX_DT_F32};
    return 0;
}

static void score_examples(worker *w, const float *lg, zmix_score *out)
{
    score_logits(w->call, lg, 0, w->call->ex->n, w->ex_scores);
    score_mean(w->ex_scores, w->call->ex->n, out);
}

/* Candidates [first, first + n) through one population pass. */
static int score_chunk(worker *w, int first, int n, zmix_error *err)
{
    score_call *call = w->call;
    const zmix_model *model = call->rt->model;
    const zmix_examples *ex = call->ex;
    int nv = 0, vocab = model->cfg.vocab_size, O = call->out_per_cand;
    unsigned long long t0 = zmix_stage_clock();
    for (int i = first; i < first + n; i++) {
        if (candidate_prepare(w, i, nv)) {
            call->out[i] = (zmix_score){NAN, NAN, NAN};
            if (call->detail)
                for (int e = 0; e < ex->n; e++)
                    call->detail[(size_t)i * ex->n + e] = (zmix_example_score){0, NAN, -1, NAN};
            continue;
        }
        w->copy_cand[nv++] = i;
    }
    zmix_stage_add(ZMIX_STAGE_COMPOSE, t0);
    if (nv == 0) return 0;
    w->n_copies = nv;
    /* The flags of the slots past nv are stale; pop_layer reads only the first nv. */
    zmix_batch batch = {ex->n,       call->tokens,   call->len,
                        call->n_out, call->n_branch, call->branch_len};
    zmix_pop_ops ops = {pop_layer, pop_copy, w, zmix_score_shared_prefix};
    int rc = zmix_forward_pop(model, &call->rope, &batch, nv, &ops, w->scratch, w->tile, w->hidden,
                              call->stop, err);
    if (rc) return rc;
    /* Copy c's wanted rows start at c·Os: the LM head's M is a whole number of 48-row blocks
     * per candidate, like every stacked GEMM (compute.h). */
    size_t Os = zmix_pop_pad((size_t)O);
    for (int c0 = 0; c0 < nv; c0 += call->lm_chunk) {
        int nc = nv - c0 < call->lm_chunk ? nv - c0 : call->lm_chunk;
        t0 = zmix_stage_clock();
        /* One candidate at a time (a vocabulary too large for two): M = its own rows, fixed
         * by the examples, so no padding rows are multiplied. Decided by the shape alone, never
         * by the chunk, or a candidate's logits would depend on its neighbours. */
        int m = call->lm_single ? O : (int)(nc * Os);
        zmix_lm_head(model, w->hidden + (size_t)c0 * Os * model->cfg.dim, m, w->logits, w->tile);
        zmix_stage_add(ZMIX_STAGE_LM_HEAD, t0);
        t0 = zmix_stage_clock();
        for (int c = 0; c < nc; c++) {
            int i = w->copy_cand[c0 + c];
            const float *lg = w->logits + (size_t)c * Os * vocab;
            if (call->logits_out && i == 0)
                memcpy(call->logits_out, lg, (size_t)O * vocab * sizeof(float));
            score_examples(w, lg, &call->out[i]);
            if (call->detail)
                memcpy(call->detail + (size_t)i * ex->n, w->ex_scores,
                       (size_t)ex->n * sizeof *w->ex_scores);
        }
        zmix_stage_add(ZMIX_STAGE_LOSS, t0);
    }
    return 0;
}

static void *worker_run(void *arg)
{
    worker *w = arg;
    score_call *call = w->call;
    zmix_error err = {0, ""};
    for (;;) {
        pthread_mutex_lock(&call->lock);
        int step = call->batched ? call->cmax : 1;
        int i = call->rc ? call->n_cand : call->next_cand;
        if (i < call->n_cand) call->next_cand += step;
        pthread_mutex_unlock(&call->lock);
        if (i >= call->n_cand) break;
        int n = call->n_cand - i < step ? call->n_cand - i : step;
        int rc = call->stop && atomic_load_explicit(call->stop, memory_order_relaxed)
                     ? zmix_error_set(&err, ZMIX_ECANCELED, "scoring cancelled")
                 : call->batched ? score_chunk(w, i, n, &err)
                                 : score_candidate(w, i, &err);
        if (rc) {
            pthread_mutex_lock(&call->lock);
            if (!call->rc) {
                call->rc = rc;
                call->err = err;
            }
            pthread_mutex_unlock(&call->lock);
            break;
        }
    }
    return NULL;
}

/* ---- Set-up: checks, example layout, modes, groups ------------------------------------ */

size_t zmix_score_activation_bytes(const zmix_model_config *c, int n_rows, int n_out_rows,
                                   int max_len)
{
    size_t floats = zmix_forward_scratch_floats(c, n_rows, max_len) +
                    (size_t)n_out_rows * ((size_t)c->dim + (size_t)c->vocab_size);
    return floats * sizeof(float);
}

size_t zmix_score_pop_bytes(const zmix_model_config *c, int n_rows, int n_out_rows, int n_copies,
                            int max_len, size_t z_total, int n_mat, int n_experts)
{
    size_t C = n_copies > 0 ? (size_t)n_copies : 1, Os = zmix_pop_pad((size_t)n_out_rows);
    size_t lm = ZMIX_LOGITS_CHUNK_FLOATS / ((size_t)n_out_rows * c->vocab_size);
    size_t l = lm < 1 ? 1 : lm < C ? lm : C;
    size_t zt = z_total ? z_total : 1, M = n_mat > 0 ? (size_t)n_mat : 1;
    size_t K = n_experts > 0 ? (size_t)n_experts : 1;
    size_t floats = zmix_forward_pop_scratch_floats(c, n_rows, (int)C, max_len) +
                    C * Os * (size_t)c->dim + l * Os * (size_t)c->vocab_size;
    /* Per candidate (worker_alloc): z' and scales, α, c; the base flags and the copy map. */
    size_t slots = C * ((2 * zt + M * K + M) * sizeof(float) + M + sizeof(int));
    return floats * sizeof(float) + slots;
}

/* What the memory budget bounds: the activations of one worker's group of examples. (The
 * buffers every worker holds whatever its examples, one layer's W' above all, are not part
 * of it: with them, a budget that suits a small model could not score a large one at all.) */
static size_t worker_bytes(const score_call *call, int n_rows, int n_out_rows, int max_len)
{
    return zmix_score_activation_bytes(&call->rt->model->cfg, n_rows, n_out_rows, max_len);
}

/* Cost (in multiply-adds) of applying matrix m in a mode over n_rows rows, plus composing it
 * once per group. */
static double mode_cost(const zmix_runtime *rt, int m, zmix_wprime_mode mode, double n_rows,
                        int n_groups, int batched)
{
    const zmix_adapted *a = &rt->list[m];
    double rc = (double)a->rows * a->cols, r = a->rank;
    /* Batched, the factored form is two GEMMs for the whole chunk while the dense modes still
     * make calls per candidate: their call overhead is what decides on tiny models. */
    double calls = batched ? CALL_COST : 0.0;
    switch (mode) {
    case ZMIX_WPRIME_LINEAR:
        return n_groups * AXPY_COST * rt->n_experts * rc + n_rows * rc +
               (rt->n_experts + 1) * calls;
    case ZMIX_WPRIME_COMPOSE: return n_groups * rc * r + n_rows * rc + 2 * calls;
    default: return n_rows * r * (a->rows + a->cols) + (batched ? n_rows * r : 0.0);
    }
}

static int call_setup(score_call *call, zmix_wprime_mode forced, size_t budget, zmix_error *err)
{
    const zmix_runtime *rt = call->rt;
    const zmix_examples *ex = call->ex;
    int n = ex->n, M = rt->n_mat;
    call->len = malloc((size_t)n * sizeof *call->len);
    call->n_out = malloc((size_t)n * sizeof *call->n_out);
    call->token_offset = malloc((size_t)n * sizeof *call->token_offset);
    call->groups = malloc((size_t)n * sizeof *call->groups);
    call->mode = malloc((size_t)(M ? M : 1) * sizeof *call->mode);
    call->n_branch = malloc((size_t)n * sizeof *call->n_branch);
    call->branch_off = malloc((size_t)n * sizeof *call->branch_off);
    call->span = malloc((size_t)n * sizeof *call->span);
    if (!call->len || !call->n_out || !call->token_offset || !call->groups || !call->mode ||
        !call->n_branch || !call->branch_off || !call->span)
        return zmix_error_set(err, ZMIX_ENOMEM, "score: out of memory");
    /* An exact-match example is the sequence prompt + target[0..n-2]. A multiple-choice one is
     * the prompt followed by each choice but its last token as a branch (forward.c): its
     * wanted rows are the prompt's last and every branch row. */
    size_t n_tok = 0, n_branches = 0;
    int max_len = 0, total_rows = 0, longest_branch = 0, longest_at = 0;
    for (int e = 0; e < n; e++) {
        const zmix_example *x = &ex->items[e];
        int follow = x->n_choices ? 0 : x->n_target - 1, longest = 0;
        for (int c = 0; c < x->n_choices; c++) {
            follow += x->choice_len[c] - 1;
            longest = x->choice_len[c] > longest ? x->choice_len[c] : longest;
        }
        call->len[e] = x->n_prompt + follow;
        call->n_out[e] = follow + 1;
        call->n_branch[e] = x->n_choices;
        call->branch_off[e] = (int)n_branches;
        n_branches += (size_t)x->n_choices;
        call->token_offset[e] = n_tok;
        n_tok += (size_t)call->len[e];
        total_rows += call->len[e];
        /* A branched example reads its prompt and one choice at a time (not the sum of all). */
        call->span[e] = x->n_choices ? x->n_prompt + longest - 1 : call->len[e];
        max_len = call->span[e] > max_len ? call->span[e] : max_len;
        if (x->n_choices && x->n_prompt + longest - 1 > longest_branch)
            longest_branch = x->n_prompt + longest - 1, longest_at = e;
    }
    call->tokens = malloc(n_tok * sizeof *call->tokens);
    call->branch_len = malloc((n_branches + 1) * sizeof *call->branch_len);
    if (!call->tokens || !call->branch_len)
        return zmix_error_set(err, ZMIX_ENOMEM, "score: out of memory");
    for (int e = 0; e < n; e++) {
        const zmix_example *x = &ex->items[e];
        int32_t *t = call->tokens + call->token_offset[e];
        memcpy(t, x->prompt, (size_t)x->n_prompt * sizeof *t);
        t += x->n_prompt;
        if (!x->n_choices) {
            memcpy(t, x->target, (size_t)(x->n_target - 1) * sizeof *t);
            continue;
        }
        const int32_t *ch = x->choices;
        for (int c = 0; c < x->n_choices; c++) {
            int rows = x->choice_len[c] - 1;
            memcpy(t, ch, (size_t)rows * sizeof *t);
            t += rows;
            ch += x->choice_len[c];
            call->branch_len[call->branch_off[e] + c] = rows;
        }
    }
    int rc = zmix_rope_init(&call->rope, &rt->model->cfg, max_len, err);
    if (rc) return rc;
    if (longest_branch > call->rope.shared_len)
        return zmix_error_set(err, ZMIX_EINVAL,
                              "score: examples[%d]: the prompt and its longest choice read %d "
                              "positions; with dynamic RoPE scaling, choices are scored only "
                              "within original_max_position_embeddings (%d)",
                              longest_at, longest_branch, call->rope.shared_len);

    /* Buffers for composing one layer's W' (sized for the worst case of every matrix being
     * composed), so that the grouping below can be decided before the modes. */
    size_t per_layer_max = 0, ctmp = 0;
    for (int l = 0; l < rt->model->cfg.n_layers; l++) {
        size_t s = 0;
        for (int k = 0; k < ZMIX_MAT_COUNT; k++) {
            int m = rt->adapted_index[l * ZMIX_MAT_COUNT + k];
            if (m < 0) continue;
            s += (size_t)rt->list[m].rows * rt->list[m].cols;
            size_t t = (size_t)rt->list[m].rows * rt->list[m].rank;
            ctmp = t > ctmp ? t : ctmp;
        }
        per_layer_max = s > per_layer_max ? s : per_layer_max;
    }
    call->wbuf_floats = per_layer_max;
    call->ctmp_floats = ctmp;
    call->tile_floats = zmix_runtime_tile_floats(rt);

    /* Groups: examples in order, as many per group as the budget allows. */
    call->n_groups = 0;
    for (int e = 0; e < n;) {
        ex_group g = {e, 0, 0, 0, 0};
        while (e < n) {
            int rows = g.n_rows + call->len[e], outs = g.n_out_rows + call->n_out[e];
            int ml = call->span[e] > g.max_len ? call->span[e] : g.max_len;
            if (g.n > 0 && worker_bytes(call, rows, outs, ml) > budget) break;
            if (g.n == 0 && worker_bytes(call, rows, outs, ml) > budget)
                return zmix_error_set(err, ZMIX_ENOMEM,
                                      "score: example %d alone needs %zu bytes, more than the "
                                      "memory budget of %zu",
                                      e, worker_bytes(call, rows, outs, ml), budget);
            g.n++, g.n_rows = rows, g.n_out_rows = outs, g.max_len = ml;
            e++;
        }
        call->groups[call->n_groups++] = g;
    }
    int max_rows = 0, max_out = 0, max_gl = 0;
    for (int g = 0; g < call->n_groups; g++) {
        ex_group *gr = &call->groups[g];
        max_rows = gr->n_rows > max_rows ? gr->n_rows : max_rows;
        max_out = gr->n_out_rows > max_out ? gr->n_out_rows : max_out;
        max_gl = gr->max_len > max_gl ? gr->max_len : max_gl;
    }
    call->scratch_floats = zmix_forward_scratch_floats(&rt->model->cfg, max_rows, max_gl);
    call->out_rows_max = (size_t)max_out;
    call->bytes_per_worker = worker_bytes(call, max_rows, max_out, max_gl);

    call->batched = zmix_score_batched && call->n_groups == 1;
    call->rows_per_cand = total_rows;
    call->out_per_cand = call->groups[0].n_out_rows;
    int can_linear = call->alpha && rt->expert_w;
    for (int m = 0; m < M; m++) {
        zmix_wprime_mode mode = forced;
        if (mode == ZMIX_WPRIME_LINEAR && !can_linear)
            return zmix_error_set(err, ZMIX_EINVAL,
                                  "score: linear W' needs α candidates and expert matrices");
        if (mode == ZMIX_WPRIME_AUTO) {
            mode = ZMIX_WPRIME_FACTORED;
            double best = mode_cost(rt, m, mode, total_rows, call->n_groups, call->batched);
            zmix_wprime_mode others[2] = {ZMIX_WPRIME_COMPOSE, ZMIX_WPRIME_LINEAR};
            for (int o = 0; o < 2; o++) {
                if (others[o] == ZMIX_WPRIME_LINEAR && !can_linear) continue;
                double cost =
                    mode_cost(rt, m, others[o], total_rows, call->n_groups, call->batched);
                if (cost < best) best = cost, mode = others[o];
            }
        }
        call->mode[m] = mode;
    }
    return 0;
}

static void call_free(score_call *call)
{
    free(call->len);
    free(call->n_out);
    free(call->token_offset);
    free(call->groups);
    free(call->mode);
    free(call->tokens);
    free(call->n_branch);
    free(call->branch_len);
    free(call->branch_off);
    free(call->span);
    zmix_rope_free(&call->rope);
}

static int score_run(const zmix_runtime *rt, const zmix_compose_opts *opts, int rescale,
                     const zmix_examples *ex, int n_cand, const float *alpha, const float *z,
                     const zmix_score_ctl *ctl, zmix_wprime_mode mode, zmix_score *out,
                     zmix_example_score *detail, float *logits_out, zmix_error *err)
{
    if (n_cand < 0) return zmix_error_set(err, ZMIX_EINVAL, "score: %d candidates", n_cand);
    if (!alpha == !z) return zmix_error_set(err, ZMIX_EINVAL, "score: give α or z', not both");
    if (alpha && rt->n_experts == 0)
        return zmix_error_set(err, ZMIX_EINVAL,
                              "score: α candidates need experts; the runtime "
                              "has none");
    /* The one examples validator (examples.c): the scorer reads prompt + target - 1 positions
     * of every example, exactly what it admits. */
    int rc = zmix_examples_check(rt->model, ex, err);
    if (rc || n_cand == 0) return rc;

    score_call call;
    memset(&call, 0, sizeof call);
    call.rt = rt;
    call.copts = opts;
    call.rescale = rescale;
    call.ex = ex;
    call.n_cand = n_cand;
    call.alpha = alpha;
    call.z = z;
    call.cand_stride = alpha ? zmix_alpha_dim(rt, opts) : rt->z_total;
    call.stop = ctl ? ctl->stop : NULL;
    call.out = out;
    call.detail = detail;
    call.logits_out = logits_out;
    call.choice_norm = ctl ? ctl->choice_norm : ZMIX_CHOICE_PER_TOKEN;
    size_t budget = rt->opts.memory_budget ? rt->opts.memory_budget : ZMIX_DEFAULT_MEMORY_BUDGET;
    rc = call_setup(&call, mode, budget, err);
    if (rc) {
        call_free(&call);
        return rc;
    }

    int n_threads = ctl && ctl->n_threads > 1 ? ctl->n_threads : 1;
    if (n_threads > n_cand) n_threads = n_cand;
    while (n_threads > 1 && (size_t)n_threads * call.bytes_per_worker > budget) n_threads--;
    if (call.batched) {
        /* Chunks: as many candidates as the budget allows, at most an even share per thread,
         * and at most ZMIX_POP_CHUNK_BYTES of activations unless one candidate needs more. */
        const zmix_model_config *mc = &rt->model->cfg;
        int share = (n_cand + n_threads - 1) / n_threads, O = call.out_per_cand;
        size_t lm = ZMIX_LOGITS_CHUNK_FLOATS / ((size_t)O * mc->vocab_size);
        call.lm_single = lm <= 1;
        int max_len = call.groups[0].max_len, C = share;
        if (zmix_score_chunk > 0 && zmix_score_chunk < C) C = zmix_score_chunk;
        size_t bytes = 0;
        for (;; C--) {
            int l = (int)(lm < 1 ? 1 : lm < (size_t)C ? lm : (size_t)C);
            bytes = zmix_score_pop_bytes(mc, call.rows_per_cand, O, C, max_len, rt->z_total,
                                         rt->n_mat, rt->n_experts);
            if (((size_t)n_threads * bytes <= budget &&
                 (bytes <= ZMIX_POP_CHUNK_BYTES || C == 1)) ||
                (C == 1 && n_threads == 1)) {
                call.cmax = C, call.lm_chunk = l;
                break;
            }
            if (C == 1) C = share + 1, n_threads--;
        }
        if (bytes > budget) {
            call.batched = 0; /* one candidate at a time, as the groups were planned */
        } else {
            call.bytes_per_worker = bytes;
            call.scratch_floats =
                zmix_forward_pop_scratch_floats(mc, call.rows_per_cand, call.cmax, max_len);
        }
    }

    worker *workers = calloc((size_t)n_threads, sizeof *workers);
    if (!workers) {
        call_free(&call);
        return zmix_error_set(err, ZMIX_ENOMEM, "score: out of memory");
    }
    int n_ready = 0;
    for (; n_ready < n_threads; n_ready++)
        if (worker_alloc(&workers[n_ready], &call, n_ready == 0)) break;
    if (n_ready == 0) {
        free(workers);
        call_free(&call);
        return zmix_error_set(err, ZMIX_ENOMEM, "score: out of memory for the activations");
    }
    pthread_mutex_init(&call.lock, NULL);
    int n_started = 1;
    for (int t = 1; t < n_ready; t++) {
        if (pthread_create(&workers[t].thread, NULL, worker_run, &workers[t])) break;
        n_started++;
    }
    worker_run(&workers[0]); /* the caller's thread is worker 0 */
    for (int t = 1; t < n_started; t++) pthread_join(workers[t].thread, NULL);
    pthread_mutex_destroy(&call.lock);

    rc = call.rc;
    if (rc && err) *err = call.err;
    for (int t = 0; t < n_ready; t++) worker_free(&workers[t]);
    free(workers);
    call_free(&call);
    return rc;
}

int zmix_score_mode(const zmix_runtime *rt, const zmix_compose_opts *opts, int rescale,
                    const zmix_examples *ex, int n_cand, const float *alpha, const float *z,
                    const zmix_score_ctl *ctl, zmix_wprime_mode mode, zmix_score *out,
                    zmix_example_score *detail, zmix_error *err)
{
    return score_run(rt, opts, rescale, ex, n_cand, alpha, z, ctl, mode, out, detail, NULL, err);
}

int zmix_candidate_logits(const zmix_runtime *rt, const zmix_compose_opts *opts, int rescale,
                          const zmix_examples *ex, const float *alpha, const float *z,
                          zmix_wprime_mode mode, float *logits, zmix_error *err)
{
    zmix_score score;
    return score_run(rt, opts, rescale, ex, 1, alpha, z, NULL, mode, &score, NULL, logits, err);
}

int zmix_score_alpha(const zmix_runtime *rt, const zmix_compose_opts *opts, const zmix_examples *ex,
                     int n_cand, const float *alpha, const zmix_score_ctl *ctl, zmix_score *out,
                     zmix_example_score *detail, zmix_error *err)
{
    zmix_compose_opts def;
    if (!opts) {
        zmix_compose_opts_default(&def);
        opts = &def;
    }
    return zmix_score_mode(rt, opts, opts->rescale, ex, n_cand, alpha, NULL, ctl, ZMIX_WPRIME_AUTO,
                           out, detail, err);
}

int zmix_score_z(const zmix_runtime *rt, int rescale, const zmix_examples *ex, int n_cand,
                 const float *z, const zmix_score_ctl *ctl, zmix_score *out,
                 zmix_example_score *detail, zmix_error *err)
{
    zmix_compose_opts opts;
    zmix_compose_opts_default(&opts);
    opts.rescale = rescale;
    return zmix_score_mode(rt, &opts, rescale, ex, n_cand, NULL, z, ctl, ZMIX_WPRIME_AUTO, out,
                           detail, err);
}
