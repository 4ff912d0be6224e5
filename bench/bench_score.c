/*
 * Scoring benchmark: P candidates (per-layer α over K experts) on a few-shot set, on
 * random-weight models of real shapes, against two yardsticks measured in the same run:
 *
 *   - OpenBLAS SGEMM at the same thread count (the machine's practical ceiling): a square
 *     1536³ product, and the dominant GEMM shape of the workload itself;
 *   - the naive path, which does what the reference implementation does: per candidate,
 *     every adapted W' materialised as U·diag(c·σ⊙z')·Vt, then a plain forward over each
 *     example with logits at every position, scores read from the target rows.
 *
 * Useful FLOPs (what "achieved GFLOP/s" divides by time) are those of the teacher-forced
 * forward itself, 2 per multiply-add: every linear map at every row that needs it (all
 * rows up to the last layer; there only K/V for all rows and Q, O, MLP for the rows that
 * predict targets), causal attention over visible positions only (q·k and p·v), and the LM
 * head at target rows. Composition and anything the naive path does in addition are not
 * counted: they are overhead, not work the answer needs.
 *
 * With --dtype bf16 (or f16) every run also scores the same candidates on a copy of the model
 * rounded to 16 bits, whose matrices stay 16-bit (widened tile by tile for the GEMMs), right
 * after the float32 path: the ratio of the two is taken per run.
 *
 *   bench_score [--shape 15m|135m|all] [--threads N] [--runs R] [--naive N] [--modes]
 *               [--dtype bf16|f16] [--factors auto|f32|f16|bf16]
 *   bench_score --quick     tiny shape, one run: checks the fast and naive scores agree, for
 *                           the float32 model and its BF16 copy
 */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compute.h"
#include "bench_median.h"
#include "util/clock.h"
#include "util/pcg.h"

#define K_EXPERTS 3

typedef struct bench_opts {
    const char *shape;
    int threads, runs, n_naive, candidates, n_examples, prompt_len, target_len, modes, quick;
    const char *dtype;         /* also score a 16-bit copy of the model: "bf16", "f16", or NULL */
    zmix_factor_dtype factors; /* the 16-bit copy's factors */
    int shared_alpha;          /* one α for every matrix instead of per layer */
    int compare;               /* also the per-candidate path and the pure-GEMM bound */
    int stages;                /* time per stage */
    int profile;               /* the fast path only, for a profiler: no SGEMM, no naive path */
} bench_opts;

static zmix_model_config shape_config(const char *name)
{
    zmix_model_config c;
    memset(&c, 0, sizeof c);
    c.norm_eps = 1e-5f;
    c.rope_theta = 10000.0f;
    c.tied_embeddings = 1;
    c.bos_id = 1;
    c.eos_id = 2;
    if (!strcmp(name, "15m")) { /* stories15M (llama2.c) */
        snprintf(c.model_type, sizeof c.model_type, "llama2c");
        c.dim = 288, c.hidden_dim = 768, c.n_layers = 6, c.n_heads = 6, c.n_kv_heads = 6;
        c.vocab_size = 32000, c.max_seq_len = 256, c.rope_interleaved = 1;
    } else if (!strcmp(name, "135m")) { /* SmolLM2-135M (HF) */
        snprintf(c.model_type, sizeof c.model_type, "llama");
        c.dim = 576, c.hidden_dim = 1536, c.n_layers = 30, c.n_heads = 9, c.n_kv_heads = 3;
        c.vocab_size = 49152, c.max_seq_len = 2048, c.rope_theta = 100000.0f;
    } else if (!strcmp(name, "260k")) { /* stories260K (HF) */
        snprintf(c.model_type, sizeof c.model_type, "llama");
        c.dim = 64, c.hidden_dim = 172, c.n_layers = 5, c.n_heads = 8, c.n_kv_heads = 4;
        c.vocab_size = 512, c.max_seq_len = 512;
    } else { /* "tiny": the --quick smoke shape, stories260K-sized */
        snprintf(c.model_type, sizeof c.model_type, "llama");
        c.dim = 64, c.hidden_dim = 172, c.n_layers = 2, c.n_heads = 8, c.n_kv_heads = 4;
        c.vocab_size = 512, c.max_seq_len = 512;
    }
    c.head_dim = c.dim / c.n_heads;
    return c;
}

static double useful_flops(const zmix_model_config *c, const zmix_examples *ex)
{
    double D = c->dim, H = c->hidden_dim, qd = (double)c->n_heads * c->head_dim,
           kvd = (double)c->n_kv_heads * c->head_dim, heads_hd = qd;
    double per_row_all = D * qd + 2 * D * kvd + qd * D + 3 * D * H;
    double flops = 0.0;
    for (int e = 0; e < ex->n; e++) {
        double L = ex->items[e].n_prompt + ex->items[e].n_target - 1, T = ex->items[e].n_target;
        double visible_all = L * (L + 1) / 2; /* Σ_{pos<L} (pos+1) */
        double visible_tail = visible_all - (L - T) * (L - T + 1) / 2;
        flops += 2 * (c->n_layers - 1) * (per_row_all * L + 2 * heads_hd * visible_all);
        flops +=
            2 * (2 * D * kvd * L + (D * qd + qd * D + 3 * D * H) * T + 2 * heads_hd * visible_tail);
        flops += 2 * D * c->vocab_size * T;
    }
    return flops;
}

/* CPU seconds of the whole process: on a machine shared with other jobs, wall time also
 * counts the time other processes held our core; CPU time does not. */
static double cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* SGEMM yardstick, C = A·Bᵀ (M×K times N×K, as the forward pass calls it). */
typedef struct sgemm_bench {
    int M, N, K;
    float *A, *B, *C;
} sgemm_bench;

static void sgemm_init(sgemm_bench *g, int M, int N, int K)
{
    g->M = M, g->N = N, g->K = K;
    g->A = malloc((size_t)M * K * sizeof(float));
    g->B = malloc((size_t)N * K * sizeof(float));
    g->C = malloc((size_t)M * N * sizeof(float));
    for (size_t i = 0; i < (size_t)M * K; i++) g->A[i] = (float)((i * 7919) % 1000) / 1000.0f;
    for (size_t i = 0; i < (size_t)N * K; i++) g->B[i] = (float)((i * 104729) % 1000) / 1000.0f;
}

static void sgemm_free(sgemm_bench *g)
{
    free(g->A), free(g->B), free(g->C);
}

/* One measurement of about 0.3 s: GFLOP/s by wall time and by CPU time (per thread). */
static void sgemm_measure(const sgemm_bench *g, int threads, double *wall_gf, double *cpu_gf)
{
    openblas_set_num_threads(threads);
    double flop = 2.0 * g->M * g->N * g->K;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, g->M, g->N, g->K, 1.0f, g->A, g->K, g->B,
                g->K, 0.0f, g->C, g->N);
    int reps = 0;
    double c0 = cpu_seconds();
    uint64_t t0 = zmix_now_ns(), t1;
    do {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, g->M, g->N, g->K, 1.0f, g->A, g->K,
                    g->B, g->K, 0.0f, g->C, g->N);
        reps++;
        t1 = zmix_now_ns();
    } while (t1 - t0 < 300000000ull);
    double cpu = cpu_seconds() - c0;
    openblas_set_num_threads(1);
    *wall_gf = flop * reps / (double)(t1 - t0);
    *cpu_gf = flop * reps / (cpu / threads) * 1e-9;
}

/* The GEMMs the forward pass of P candidates must do, as plain SGEMM calls with the rows of
 * `chunk` candidates stacked (as the population path stacks them): per layer Q, K, V, O,
 * gate, up, down over every row (at the last layer K and V over every row, the rest over the
 * target rows), and the LM head over the target rows. Returns seconds. */
static double gemm_bound(const zmix_model_config *c, int P, int R, int O)
{
    int chunk = P < 8 ? P : 8, D = c->dim, H = c->hidden_dim, V = c->vocab_size;
    int qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim;
    size_t rows = (size_t)chunk * R, wide = (size_t)(H > qd ? (H > D ? H : D) : qd);
    size_t wmax = (size_t)V * D > wide * D ? (size_t)V * D : wide * D;
    float *X = calloc(rows * wide, sizeof(float)),
          *Y = calloc(rows * ((size_t)V > wide ? (size_t)V : wide), sizeof(float));
    float *W = malloc(wmax * sizeof(float));
    for (size_t i = 0; i < wmax; i++) W[i] = (float)((i * 7919) % 1000) / 1000.0f - 0.5f;
    for (size_t i = 0; i < rows * wide; i++) X[i] = (float)((i * 104729) % 1000) / 1000.0f - 0.5f;
    uint64_t t0 = zmix_now_ns();
    for (int p0 = 0; p0 < P; p0 += chunk) {
        int nc = P - p0 < chunk ? P - p0 : chunk, r_all = nc * R, r_out = nc * O;
        for (int l = 0; l < c->n_layers; l++) {
            int last = l == c->n_layers - 1, r = last ? r_out : r_all;
            int shapes[7][3] = {{r, qd, D}, {r_all, kvd, D}, {r_all, kvd, D}, {r, D, qd},
                                {r, H, D},  {r, H, D},       {r, D, H}};
            for (int k = 0; k < 7; k++)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, shapes[k][0], shapes[k][1],
                            shapes[k][2], 1.0f, X, shapes[k][2], W, shapes[k][2], 0.0f, Y,
                            shapes[k][1]);
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r_out, V, D, 1.0f, X, D, W, D, 0.0f, Y,
                    V);
    }
    double sec = (double)(zmix_now_ns() - t0) * 1e-9;
    free(X), free(Y), free(W);
    return sec;
}

static void stages_reset(void)
{
    for (int s = 0; s < ZMIX_STAGE_COUNT; s++) atomic_store(&zmix_stage_ns[s], 0);
}

static void stages_print(const char *label, int P, int runs)
{
    unsigned long long total = 0;
    for (int s = 0; s < ZMIX_STAGE_COUNT; s++) total += atomic_load(&zmix_stage_ns[s]);
    printf("stages [%s] (ms per candidate, share; summed over %d runs):", label, runs);
    for (int s = 0; s < ZMIX_STAGE_COUNT; s++) {
        unsigned long long ns = atomic_load(&zmix_stage_ns[s]);
        printf("%s %s %.3f (%.0f%%)", s ? "," : "", zmix_stage_name((zmix_stage)s),
               (double)ns * 1e-6 / ((double)P * runs), total ? 100.0 * ns / total : 0.0);
    }
    printf("\n");
}

/* The naive path for candidate alpha: returns the score, fills detail (ex->n entries). */
static int naive_score(const zmix_runtime *rt, const zmix_compose_opts *o, const zmix_examples *ex,
                       const float *alpha, zmix_score *out, zmix_example_score *detail,
                       zmix_error *err)
{
    const zmix_model_config *c = &zmix_runtime_model(rt)->cfg;
    float *z = malloc(zmix_runtime_z_total(rt) * sizeof(float));
    int rc = zmix_compose_z(rt, o, alpha, z, err);
    zmix_model *wm = NULL;
    if (!rc) rc = zmix_model_with_wprime(rt, o->rescale, z, &wm, err);
    int max_len = 0;
    for (int e = 0; e < ex->n; e++) {
        int len = ex->items[e].n_prompt + ex->items[e].n_target - 1;
        max_len = len > max_len ? len : max_len;
    }
    float *logits = malloc((size_t)max_len * c->vocab_size * sizeof(float));
    int32_t *seq = malloc((size_t)max_len * sizeof *seq);
    int n_exact = 0;
    double sum = 0.0;
    for (int e = 0; !rc && e < ex->n; e++) {
        const zmix_example *it = &ex->items[e];
        int len = it->n_prompt + it->n_target - 1;
        memcpy(seq, it->prompt, (size_t)it->n_prompt * sizeof *seq);
        memcpy(seq + it->n_prompt, it->target, (size_t)(it->n_target - 1) * sizeof *seq);
        rc = zmix_model_forward_logits(wm, seq, len, logits, err);
        if (rc) break;
        zmix_example_score_logits(logits + (size_t)(it->n_prompt - 1) * c->vocab_size, it->target,
                                  it->n_target, c->vocab_size, &detail[e]);
        n_exact += detail[e].exact;
        sum += detail[e].loglik;
    }
    out->accuracy = (double)n_exact / ex->n;
    out->loglik = sum / ex->n;
    zmix_model_free(wm);
    free(z), free(logits), free(seq);
    return rc;
}

static int bench_shape(const char *name, const bench_opts *bo)
{
    zmix_error err = {0, ""};
    zmix_model_config cfg = shape_config(name);
    zmix_model *model;
    uint64_t t0 = zmix_now_ns();
    if (zmix_model_create_random(&cfg, 1234, &model, &err)) {
        fprintf(stderr, "bench_score: %s\n", err.msg);
        return 1;
    }
    /* Experts: z_k = 1 + 0.1·N(0, 1), like lightly trained SVF vectors. */
    zmix_adapted *list;
    int M;
    size_t zt;
    zmix_adapted_list(model, ZMIX_ADAPT_MLP, &list, &M, &zt, &err);
    free(list);
    float *z[K_EXPERTS];
    pcg32 rng;
    pcg32_seed(&rng, 77, 1);
    for (int k = 0; k < K_EXPERTS; k++) {
        z[k] = malloc(zt * sizeof(float));
        for (size_t i = 0; i < zt; i++) z[k][i] = (float)(1.0 + 0.1 * pcg32_normal(&rng));
    }
    zmix_runtime *rt, *rt16 = NULL;
    if (zmix_runtime_create_from_z(model, NULL, (const float *const *)z, NULL, K_EXPERTS, &rt,
                                   &err)) {
        fprintf(stderr, "bench_score: %s\n", err.msg);
        return 1;
    }
    double setup_s = (double)(zmix_now_ns() - t0) * 1e-9;
    /* The 16-bit path: the same model rounded to BF16/F16, its matrices kept 16-bit. */
    zmix_model *model16 = NULL;
    if (bo->dtype) {
        zmix_runtime_opts ro;
        zmix_runtime_opts_default(&ro);
        ro.factor_dtype = bo->factors;
        zmix_dtype dt = !strcmp(bo->dtype, "f16") ? ZMIX_DT_F16 : ZMIX_DT_BF16;
        if (zmix_model_convert(model, dt, &model16, &err) ||
            zmix_runtime_create_from_z(model16, &ro, (const float *const *)z, NULL, K_EXPERTS,
                                       &rt16, &err)) {
            fprintf(stderr, "bench_score: %s: %s\n", bo->dtype, err.msg);
            return 1;
        }
    }

    /* Examples: prompt_len + target_len random tokens each. */
    int n_ex = bo->n_examples, per = bo->prompt_len + bo->target_len;
    zmix_example *items = calloc((size_t)n_ex, sizeof *items);
    int32_t *tok = malloc((size_t)n_ex * per * sizeof *tok);
    for (int e = 0; e < n_ex; e++) {
        for (int j = 0; j < per; j++)
            tok[e * per + j] = (int32_t)pcg32_bounded(&rng, (uint32_t)cfg.vocab_size);
        items[e] = (zmix_example){.prompt = tok + e * per,
                                  .n_prompt = bo->prompt_len,
                                  .target = tok + e * per + bo->prompt_len,
                                  .n_target = bo->target_len};
    }
    zmix_examples ex;
    if (zmix_examples_copy(items, n_ex, &ex, &err)) {
        fprintf(stderr, "bench_score: %s\n", err.msg);
        return 1;
    }
    free(items), free(tok);

    zmix_compose_opts o;
    zmix_compose_opts_default(&o);
    o.per_layer = !bo->shared_alpha;
    int P = bo->candidates;
    size_t adim = zmix_alpha_dim(rt, &o);
    float *alpha = malloc((size_t)P * adim * sizeof(float));
    for (size_t i = 0; i < (size_t)P * adim; i++) alpha[i] = (float)pcg32_uniform(&rng);

    double flops = useful_flops(&cfg, &ex);
    int rows = n_ex * (per - 1);
    sgemm_bench peak_g, shaped_g;
    sgemm_init(&peak_g, 1536, 1536, 1536);
    sgemm_init(&shaped_g, rows, cfg.hidden_dim, cfg.dim);
    printf("== shape %s: dim %d, hidden %d, layers %d, heads %d/%d, vocab %d; K=%d, P=%d, "
           "per-layer alpha (%zu), %d examples of %d+%d tokens, %d thread(s)\n",
           name, cfg.dim, cfg.hidden_dim, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.vocab_size,
           K_EXPERTS, P, adim, n_ex, bo->prompt_len, bo->target_len, bo->threads);
    printf("setup (random weights, SVD of %d matrices, expert matrices): %.1f s\n", M, setup_s);
    printf("useful work per candidate: %.3f GFLOP\n", flops * 1e-9);

    /* Every run measures SGEMM, the fast path and the naive path back to back, and the
     * ratios are taken per run: the machine is shared, so the rate available to us drifts
     * between runs. Reported values are medians over runs. */
    zmix_score *scores = malloc((size_t)P * sizeof *scores);
    zmix_score_ctl ctl = {bo->threads, NULL, ZMIX_CHOICE_PER_TOKEN};
    zmix_wprime_mode modes[4] = {ZMIX_WPRIME_AUTO, ZMIX_WPRIME_LINEAR, ZMIX_WPRIME_COMPOSE,
                                 ZMIX_WPRIME_FACTORED};
    int n_modes = bo->modes ? 4 : 1, rc = 0, R = bo->runs;
    int n_naive = bo->n_naive < P ? bo->n_naive : P;
    double *v = malloc((size_t)R * 17 * sizeof *v);
    double *pc_ratio = v + 12 * R, *bound_ratio = v + 13 * R, *bound_cps = v + 14 * R;
    double *pc_ratio_cpu = v + 15 * R, *bound_ratio_cpu = v + 16 * R;
    zmix_score *scores_pc = malloc((size_t)P * sizeof *scores_pc);
    int pc_mismatch_acc = 0;
    double pc_max_diff = 0.0;
    unsigned long long pc_stage[ZMIX_STAGE_COUNT] = {0};
    double *cps = v, *gf = v + R, *peak = v + 2 * R, *shaped = v + 3 * R, *ratio = v + 4 * R,
           *ratio_shaped = v + 5 * R, *ratio_cpu = v + 6 * R, *peak_cpu = v + 7 * R,
           *naive_cps = v + 8 * R, *speedup = v + 9 * R, *cps16 = v + 10 * R, *ratio16 = v + 11 * R;
    zmix_score *scores16 = malloc((size_t)P * sizeof *scores16);
    double max_diff16 = 0.0, max_shift16 = 0.0;
    int acc_mismatch16 = 0;
    zmix_example_score *detail = malloc((size_t)n_ex * sizeof *detail);
    double max_diff = 0.0;
    int acc_mismatch = 0;
    for (int mi = 0; mi < n_modes; mi++) {
        for (int r = 0; r < R; r++) {
            double shaped_cpu;
            if (bo->profile) {
                peak[r] = peak_cpu[r] = shaped[r] = NAN;
            } else {
                sgemm_measure(&peak_g, bo->threads, &peak[r], &peak_cpu[r]);
                sgemm_measure(&shaped_g, bo->threads, &shaped[r], &shaped_cpu);
            }
            double c0 = cpu_seconds();
            atomic_store(&zmix_stage_timing, bo->stages && mi == 0);
            uint64_t s0 = zmix_now_ns();
            if (zmix_score_mode(rt, &o, 1, &ex, P, alpha, NULL, &ctl, modes[mi], scores, NULL,
                                &err)) {
                fprintf(stderr, "bench_score: %s\n", err.msg);
                return 1;
            }
            double sec = (double)(zmix_now_ns() - s0) * 1e-9;
            double cpu = (cpu_seconds() - c0) / bo->threads;
            if (bo->compare && mi == 0) {
                /* The per-candidate path of this build and the pure-GEMM bound, same run. */
                unsigned long long before[ZMIX_STAGE_COUNT];
                for (int st = 0; st < ZMIX_STAGE_COUNT; st++) before[st] = zmix_stage_ns[st];
                zmix_score_batched = 0;
                double pc0 = cpu_seconds();
                uint64_t p0 = zmix_now_ns();
                int prc = zmix_score_mode(rt, &o, 1, &ex, P, alpha, NULL, &ctl, modes[mi],
                                          scores_pc, NULL, &err);
                double psec = (double)(zmix_now_ns() - p0) * 1e-9;
                double pcpu = (cpu_seconds() - pc0) / bo->threads;
                zmix_score_batched = 1;
                for (int st = 0; st < ZMIX_STAGE_COUNT; st++) {
                    pc_stage[st] += zmix_stage_ns[st] - before[st];
                    zmix_stage_ns[st] = before[st];
                }
                if (prc) {
                    fprintf(stderr, "bench_score: per-candidate: %s\n", err.msg);
                    return 1;
                }
                pc_ratio[r] = psec / sec;
                pc_ratio_cpu[r] = pcpu / cpu;
                for (int i = 0; i < P; i++) {
                    pc_mismatch_acc += scores_pc[i].accuracy != scores[i].accuracy;
                    double d = fabs(scores_pc[i].loglik - scores[i].loglik) /
                               fmax(1.0, fabs(scores_pc[i].loglik));
                    pc_max_diff = d > pc_max_diff ? d : pc_max_diff;
                }
                openblas_set_num_threads(bo->threads);
                double bc0 = cpu_seconds();
                double bsec = gemm_bound(&cfg, P, n_ex * (per - 1), n_ex * bo->target_len);
                double bcpu = (cpu_seconds() - bc0) / bo->threads;
                openblas_set_num_threads(1);
                bound_ratio[r] = sec / bsec;
                bound_ratio_cpu[r] = cpu / bcpu;
                bound_cps[r] = P / bsec;
            }
            atomic_store(&zmix_stage_timing, 0);
            cps[r] = P / sec;
            gf[r] = flops * P / sec * 1e-9;
            ratio[r] = gf[r] / peak[r];
            ratio_shaped[r] = gf[r] / shaped[r];
            ratio_cpu[r] = flops * P / cpu * 1e-9 / peak_cpu[r];
            if (rt16) {
                /* Right after the float32 path, same candidates, same mode. */
                s0 = zmix_now_ns();
                if (zmix_score_mode(rt16, &o, 1, &ex, P, alpha, NULL, &ctl, modes[mi], scores16,
                                    NULL, &err)) {
                    fprintf(stderr, "bench_score: %s: %s\n", bo->dtype, err.msg);
                    return 1;
                }
                cps16[r] = P / ((double)(zmix_now_ns() - s0) * 1e-9);
                ratio16[r] = cps16[r] / cps[r];
                for (int i = 0; i < P; i++)
                    max_shift16 = fmax(max_shift16, fabs(scores16[i].loglik - scores[i].loglik));
            }
            if (mi != 0 || bo->profile) continue;
            /* The naive path on the first candidates; it parallelises the way the reference
             * does, inside BLAS. */
            openblas_set_num_threads(bo->threads);
            s0 = zmix_now_ns();
            for (int i = 0; i < n_naive; i++) {
                zmix_score ns;
                if (naive_score(rt, &o, &ex, alpha + (size_t)i * adim, &ns, detail, &err)) {
                    fprintf(stderr, "bench_score: naive: %s\n", err.msg);
                    return 1;
                }
                double d = fabs(ns.loglik - scores[i].loglik) / fmax(1.0, fabs(ns.loglik));
                max_diff = d > max_diff ? d : max_diff;
                acc_mismatch += ns.accuracy != scores[i].accuracy;
            }
            openblas_set_num_threads(1);
            naive_cps[r] = n_naive / ((double)(zmix_now_ns() - s0) * 1e-9);
            speedup[r] = cps[r] / naive_cps[r];
            /* The 16-bit path against its own naive path (first run, first candidate): the
             * tiled 16-bit GEMMs must give the definition's scores. */
            if (rt16 && r == 0) {
                zmix_score ns;
                openblas_set_num_threads(bo->threads);
                int nrc = naive_score(rt16, &o, &ex, alpha, &ns, detail, &err);
                openblas_set_num_threads(1);
                if (nrc) {
                    fprintf(stderr, "bench_score: %s naive: %s\n", bo->dtype, err.msg);
                    return 1;
                }
                max_diff16 = fabs(ns.loglik - scores16[0].loglik) / fmax(1.0, fabs(ns.loglik));
                acc_mismatch16 += ns.accuracy != scores16[0].accuracy;
            }
        }
        printf("fast[%s]: %.2f candidates/s, %.1f GFLOP/s useful; sgemm 1536^3 %.1f GFLOP/s, "
               "sgemm %dx%dx%d %.1f GFLOP/s;\n    ratio to sgemm 1536^3 %.2f (by CPU time %.2f), "
               "to the workload-shaped sgemm %.2f  [medians of %d runs]\n",
               zmix_wprime_mode_name(modes[mi]), bench_median(cps, R), bench_median(gf, R),
               bench_median(peak, R), rows, cfg.hidden_dim, cfg.dim, bench_median(shaped, R),
               bench_median(ratio, R), bench_median(ratio_cpu, R), bench_median(ratio_shaped, R),
               R);
        if (rt16)
            printf("%s[%s] (factors %s): %.2f candidates/s; %s / f32 = %.3f (median of per-run "
                   "ratios)\n",
                   bo->dtype, zmix_wprime_mode_name(modes[mi]), zmix_factor_dtype_name(bo->factors),
                   bench_median(cps16, R), bo->dtype, bench_median(ratio16, R));
        if (mi != 0) continue;
        if (bo->compare) {
            printf("time of the per-candidate path (zmix_score_batched = 0) / the population "
                   "path: %.2fx (by CPU time %.2fx); scores: max relative loglik difference "
                   "%.2e, accuracy mismatches %d\n",
                   bench_median(pc_ratio, R), bench_median(pc_ratio_cpu, R), pc_max_diff,
                   pc_mismatch_acc);
            printf("pure-GEMM bound: %.2f candidates/s; population path time / GEMM-bound time "
                   "%.2f (by CPU time %.2f)  [medians of %d runs]\n",
                   bench_median(bound_cps, R), bench_median(bound_ratio, R),
                   bench_median(bound_ratio_cpu, R), R);
        }
        if (bo->stages) {
            stages_print("population", P, R);
            if (bo->compare) {
                for (int st = 0; st < ZMIX_STAGE_COUNT; st++) zmix_stage_ns[st] = pc_stage[st];
                stages_print("per-candidate", P, R);
            }
            stages_reset();
        }
        printf("naive: %.3f candidates/s (%d candidates per run; BLAS at %d thread(s))\n",
               bench_median(naive_cps, R), n_naive, bo->threads);
        printf("fast / naive: %.2fx (median of per-run ratios)   scores: max relative loglik "
               "difference %.2e, accuracy mismatches %d\n",
               bench_median(speedup, R), max_diff, acc_mismatch);
    }
    if (rt16)
        printf("%s: fast vs its naive path: relative loglik difference %.2e, accuracy "
               "mismatches %d; max |loglik %s - loglik f32| %.2e (the rounding of the weights)\n",
               bo->dtype, max_diff16, acc_mismatch16, bo->dtype, max_shift16);
    if (max_diff > 1e-4 || acc_mismatch || max_diff16 > 1e-4 || acc_mismatch16 ||
        pc_max_diff > 1e-4 || pc_mismatch_acc) {
        fprintf(stderr, "bench_score: fast and naive scores disagree\n");
        rc = 1;
    }
    free(detail), free(v), free(scores), free(scores16), free(scores_pc), free(alpha);
    zmix_runtime_free(rt16);
    zmix_model_free(model16);
    sgemm_free(&peak_g);
    sgemm_free(&shaped_g);
    zmix_examples_free(&ex);
    zmix_runtime_free(rt);
    zmix_model_free(model);
    for (int k = 0; k < K_EXPERTS; k++) free(z[k]);
    return rc;
}

int main(int argc, char **argv)
{
    bench_opts bo = {"all", 1, 5, 4, 32, 10, 96, 8, 0, 0, NULL, ZMIX_FACTORS_AUTO, 0, 0, 0, 0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--quick"))
            bo.quick = 1;
        else if (!strcmp(a, "--modes"))
            bo.modes = 1;
        else if (!strcmp(a, "--shared-alpha"))
            bo.shared_alpha = 1;
        else if (!strcmp(a, "--compare"))
            bo.compare = 1;
        else if (!strcmp(a, "--stages"))
            bo.stages = 1;
        else if (!strcmp(a, "--profile"))
            bo.profile = 1;
        else if (!strcmp(a, "--chunk") && v)
            zmix_score_chunk = atoi(v), i++;
        else if (!strcmp(a, "--examples") && v)
            bo.n_examples = atoi(v), i++;
        else if (!strcmp(a, "--prompt") && v)
            bo.prompt_len = atoi(v), i++;
        else if (!strcmp(a, "--target") && v)
            bo.target_len = atoi(v), i++;
        else if (!strcmp(a, "--shape") && v)
            bo.shape = v, i++;
        else if (!strcmp(a, "--threads") && v)
            bo.threads = atoi(v), i++;
        else if (!strcmp(a, "--runs") && v)
            bo.runs = atoi(v), i++;
        else if (!strcmp(a, "--naive") && v)
            bo.n_naive = atoi(v), i++;
        else if (!strcmp(a, "--candidates") && v)
            bo.candidates = atoi(v), i++;
        else if (!strcmp(a, "--dtype") && v && (!strcmp(v, "bf16") || !strcmp(v, "f16")))
            bo.dtype = v, i++;
        else if (!strcmp(a, "--factors") && v && !zmix_factor_dtype_parse(v, &bo.factors, NULL))
            i++;
        else {
            fprintf(stderr,
                    "usage: bench_score [--shape 15m|135m|260k|all] [--threads N] [--runs R] "
                    "[--naive N] [--candidates P] [--modes] [--dtype bf16|f16] "
                    "[--factors auto|f32|f16|bf16] [--examples N] [--prompt L] "
                    "[--target T] [--shared-alpha] [--compare] [--stages] [--chunk C] [--profile] "
                    "[--quick]\n");
            return 2;
        }
    }
    if (bo.threads < 1 || bo.runs < 1 || bo.n_naive < 1 || bo.candidates < 1) {
        fprintf(stderr, "bench_score: --threads, --runs, --naive, --candidates must be >= 1\n");
        return 2;
    }
    if (bo.quick) {
        bench_opts q = {"tiny", 2, 1, 4, 4, 2, 16, 4, 1, 1, "bf16", ZMIX_FACTORS_AUTO, 0, 1, 1, 0};
        return bench_shape("tiny", &q);
    }
    int rc = 0;
    if (!strcmp(bo.shape, "15m") || !strcmp(bo.shape, "all")) rc |= bench_shape("15m", &bo);
    if (!strcmp(bo.shape, "135m") || !strcmp(bo.shape, "all")) rc |= bench_shape("135m", &bo);
    if (!strcmp(bo.shape, "260k")) rc |= bench_shape("260k", &bo);
    return rc;
}
