/*
 * The memory plan: what a model will take once loaded, factored and scoring, estimated from
 * its config.json and safetensors headers alone (zmix_model_probe_path reads no tensor), so
 * that a program can refuse a model that will not fit before spending minutes on it.
 *
 * Each term follows the code that allocates it:
 *   weights      the tensors as the loader keeps them (hf_loader.c: mapped in place, 16-bit
 *                matrices too; norms and biases as float32 copies);
 *   factors      U and Vt in the factor dtype, S in float32, per adapted matrix (svd.c); of
 *                which only S stays resident when the expert matrices are kept and U, Vt
 *                come from the factor cache's mapping (runtime.c);
 *   experts      K z vectors and, below ZMIX_EXPERT_MATRIX_CAP and unless the factored mode
 *                is asked for, the K expert matrices W_k (runtime.c);
 *   svd          the largest transient of factoring one matrix: the copy sgesdd destroys,
 *                LAPACKE's row-major transposes of A, U and Vt, and the workspace LAPACK asks
 *                for (queried, not guessed);
 *   per worker   one scoring call (score.c): one layer's composed W', the composition
 *                temporary, z' and scales, the 16-bit tile, RoPE tables, and activations,
 *                which the scorer keeps within its memory budget: a group of examples, or a
 *                population chunk of ZMIX_POP_CHUNK_BYTES (one candidate's when larger),
 *                whichever is larger;
 *   overhead     the process itself: code, libraries, and the buffers OpenBLAS allocates per
 *                calling thread (measured, see docs/model-formats.md).
 * The setup peak (first start: factoring, then, with mapped factors, building the expert
 * matrices) and the steady state (every worker scoring) are reported apart; the larger is
 * what must fit.
 */
#include <lapacke.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compute.h"
#include "loaders.h"

/* The process without any model (code, libc, libuv, the loop) and, per worker, its thread
 * and the buffers OpenBLAS allocates for a calling thread. Generous: zmixd with the demo model
 * and 2 workers peaks at 45 MiB after a job, 27 of them the model (docs/model-formats.md). */
#define OVERHEAD_BASE       ((size_t)48 << 20)
#define OVERHEAD_PER_WORKER ((size_t)40 << 20)

int zmix_model_probe_path(const char *path, zmix_model_probe *out, zmix_error *err)
{
    memset(out, 0, sizeof *out);
    int is_dir, rc = zmix_model_path_kind(path, &is_dir, err);
    if (rc) return rc;
    if (!is_dir) return zmix_llama2c_probe(path, &out->cfg, &out->weight_bytes, err);
    zmix_dtype dtype;
    rc = zmix_hf_probe(path, &out->cfg, &dtype, &out->weight_bytes, err);
    out->half = dtype != ZMIX_DT_F32;
    return rc;
}

void zmix_memory_settings_default(zmix_memory_settings *s)
{
    memset(s, 0, sizeof *s);
    s->adapt = ZMIX_ADAPT_MLP;
    s->factor_dtype = ZMIX_FACTORS_AUTO;
    s->workers = 1;
}

/* Rows and columns of matrix kind k under cfg. */
static void kind_shape(const zmix_model_config *c, int k, size_t *rows, size_t *cols)
{
    size_t d = (size_t)c->dim, h = (size_t)c->hidden_dim;
    size_t q = (size_t)c->n_heads * (size_t)c->head_dim;
    size_t kv = (size_t)c->n_kv_heads * (size_t)c->head_dim;
    size_t shapes[ZMIX_MAT_COUNT][2] = {{q, d}, {kv, d}, {kv, d}, {d, q}, {h, d}, {h, d}, {d, h}};
    *rows = shapes[k][0];
    *cols = shapes[k][1];
}

static int kind_adapted(int k, zmix_adapt_set set)
{
    return k >= ZMIX_MAT_GATE ? (set & ZMIX_ADAPT_MLP) != 0 : (set & ZMIX_ADAPT_ATTN) != 0;
}

/* Bytes of factoring one rows × cols matrix with LAPACKE_sgesdd in row-major order. */
static size_t svd_bytes(size_t m, size_t n)
{
    size_t r = m < n ? m : n;
    float work = 0.0f, dummy = 0.0f;
    lapack_int idummy = 0;
    /* A workspace query touches no array. Col-major: the row-major wrapper calls the same
     * routine on its transposed copy. */
    lapack_int info = LAPACKE_sgesdd_work(LAPACK_COL_MAJOR, 'S', (lapack_int)m, (lapack_int)n,
                                          &dummy, (lapack_int)m, &dummy, &dummy, (lapack_int)m,
                                          &dummy, (lapack_int)r, &work, -1, &idummy);
    /* LAPACK's documented minimum for JOBZ = 'S' when the query fails. */
    size_t lwork = info == 0 && work > 0 ? (size_t)work : 4 * r * r + 7 * r + (m > n ? m : n);
    size_t floats = 2 * m * n + 2 * m * r + 2 * r * n + r + lwork;
    return floats * sizeof(float) + 8 * r * sizeof(lapack_int);
}

void zmix_memory_plan_compute(const zmix_model_probe *m, const zmix_memory_settings *s,
                              zmix_memory_plan *out)
{
    const zmix_model_config *c = &m->cfg;
    memset(out, 0, sizeof *out);
    out->weights = m->weight_bytes;
    zmix_factor_dtype fd = s->factor_dtype;
    if (fd == ZMIX_FACTORS_AUTO) fd = m->half ? ZMIX_FACTORS_F16 : ZMIX_FACTORS_F32;
    out->factor_dtype = fd;
    size_t fes = fd == ZMIX_FACTORS_F32 ? 4 : 2, K = s->n_experts > 0 ? (size_t)s->n_experts : 0;

    size_t n_mat = 0, z_total = 0, layer_w = 0, ctmp = 0, svd = 0, expert_floats = 0, uv = 0;
    for (int k = 0; k < ZMIX_MAT_COUNT; k++) {
        if (!kind_adapted(k, s->adapt)) continue;
        size_t rows, cols;
        kind_shape(c, k, &rows, &cols);
        size_t r = rows < cols ? rows : cols, L = (size_t)c->n_layers;
        n_mat += L;
        z_total += L * r;
        out->factors += L * ((rows * r + r * cols) * fes + r * sizeof(float));
        out->factors_kept += L * r * sizeof(float);
        uv = (rows * r + r * cols) * fes > uv ? (rows * r + r * cols) * fes : uv;
        layer_w += rows * cols;
        expert_floats += L * rows * cols;
        ctmp = rows * r > ctmp ? rows * r : ctmp;
        size_t b = svd_bytes(rows, cols);
        svd = b > svd ? b : svd;
    }
    out->svd = svd;
    out->experts = K * z_total * sizeof(float) + n_mat * K * sizeof(double);
    out->expert_matrices = K > 0 && s->wprime != ZMIX_WPRIME_KEEP_FACTORS &&
                           expert_floats <= ZMIX_EXPERT_MATRIX_CAP / sizeof(float) / K;
    if (out->expert_matrices) out->experts += K * expert_floats * sizeof(float);
    out->mode = out->expert_matrices ? "linear" : "factored";
    /* The factored modes read U and Vt on every call, and without a cache file they are heap
     * blocks: all of them stays resident. */
    out->factors_mapped = s->factor_cache != 0;
    if (!out->expert_matrices || !out->factors_mapped) out->factors_kept = out->factors;

    /* One scoring call (score.c worker_alloc and call_setup). */
    int half = m->half || fd != ZMIX_FACTORS_F32;
    long tokens = s->max_tokens > 0 ? s->max_tokens : c->max_seq_len;
    int max_len = tokens < c->max_seq_len ? (int)tokens : c->max_seq_len;
    int rows = tokens < (1L << 30) ? (int)tokens : 1 << 30;
    size_t fixed = (layer_w + ctmp + 2 * z_total + n_mat * (K + 2)) * sizeof(float) +
                   (half ? ZMIX_TILE_FLOATS * sizeof(float) : 0) +
                   (size_t)max_len * (size_t)c->head_dim * sizeof(float) +
                   (size_t)tokens * 3 * sizeof(int32_t);
    size_t budget = s->memory_budget ? s->memory_budget : ZMIX_DEFAULT_MEMORY_BUDGET;
    size_t act = zmix_score_activation_bytes(c, rows, rows, max_len);
    /* A population chunk may take ZMIX_POP_CHUNK_BYTES even when a group of examples needs
     * less (short sets, many candidates), or one candidate's when that is more. */
    size_t pop = zmix_score_pop_bytes(c, rows, rows, 1, max_len, z_total, (int)n_mat, (int)K);
    pop = pop > ZMIX_POP_CHUNK_BYTES ? pop : ZMIX_POP_CHUNK_BYTES;
    out->pop_chunk = pop < budget ? pop : budget;
    act = act > out->pop_chunk ? act : out->pop_chunk;
    out->worker_fixed = fixed;
    out->worker_activations = act < budget ? act : budget;
    out->worker = fixed + out->worker_activations;
    out->workers = s->workers > 0 ? s->workers : 1;
    out->other = s->other;
    out->overhead = OVERHEAD_BASE + (size_t)out->workers * OVERHEAD_PER_WORKER;

    size_t base = out->overhead + out->weights;
    out->setup = base + out->factors + out->svd;
    /* With mapped factors, the expert matrices are built after the factors on the heap are
     * gone, reading one matrix's U and Vt at a time from the mapping. */
    size_t build = base + out->factors_kept + out->experts + uv;
    if (out->expert_matrices && out->factors_mapped && build > out->setup) out->setup = build;
    out->steady =
        base + out->factors_kept + out->experts + (size_t)out->workers * out->worker + out->other;
    out->peak = out->setup > out->steady ? out->setup : out->steady;
}

/* "1.25 GiB" */
static const char *human(size_t bytes, char *buf, size_t size)
{
    static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)bytes;
    int u = 0;
    while (v >= 1024.0 && u < 4) v /= 1024.0, u++;
    snprintf(buf, size, u ? "%.2f %s" : "%.0f %s", v, unit[u]);
    return buf;
}

size_t zmix_memory_plan_format(const zmix_memory_plan *p, char *out, size_t size)
{
    char a[32], b[32], c[32], d[32], e[32], f[32], g[32], h[32], i[32], j[32], k[32], l[32];
    static const char *const fd_name[] = {"auto", "F32", "F16", "BF16"};
    char kept[96] = "";
    if (p->factors_kept < p->factors)
        snprintf(kept, sizeof kept, "; U, Vt mapped from the factor cache, %s kept",
                 human(p->factors_kept, k, sizeof k));
    int n = snprintf(
        out, size,
        "memory plan: weights %s; SVD factors %s (U, Vt %s)%s; experts %s%s; per worker %s "
        "(W' of one layer and buffers %s, activations up to %s, a population chunk up to %s) x "
        "%d; other %s; process %s; total %s scoring (W' mode %s), %s while setting up (first "
        "start, no factor cache)",
        human(p->weights, a, sizeof a), human(p->factors, b, sizeof b),
        fd_name[p->factor_dtype >= 0 && p->factor_dtype <= 3 ? p->factor_dtype : 0], kept,
        human(p->experts, c, sizeof c),
        p->expert_matrices ? " (with the expert matrices)" : " (expert matrices not kept)",
        human(p->worker, d, sizeof d), human(p->worker_fixed, e, sizeof e),
        human(p->worker_activations, f, sizeof f), human(p->pop_chunk, l, sizeof l), p->workers,
        human(p->other, g, sizeof g), human(p->overhead, h, sizeof h),
        human(p->steady, i, sizeof i), p->mode ? p->mode : "?", human(p->setup, j, sizeof j));
    return n < 0 ? 0 : (size_t)n;
}

int zmix_memory_available(size_t *bytes, zmix_error *err)
{
    *bytes = 0;
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return zmix_error_set(err, ZMIX_EIO, "/proc/meminfo: cannot open");
    char line[256];
    unsigned long long kb = 0;
    int found = 0;
    while (!found && fgets(line, sizeof line, f))
        found = sscanf(line, "MemAvailable: %llu kB", &kb) == 1;
    fclose(f);
    if (!found) return zmix_error_set(err, ZMIX_EIO, "/proc/meminfo: no MemAvailable line");
    *bytes = (size_t)kb * 1024;
    return 0;
}

int zmix_memory_plan_check(const zmix_model_probe *m, const zmix_memory_settings *s,
                           const zmix_memory_plan *p, size_t limit, const char *limit_source,
                           zmix_error *err)
{
    if (p->peak <= limit) return 0;
    char need[32], have[32], hint[256] = "";
    /* What would make it fit, in the caller's own option names: fewer workers first (it
     * changes speed only), then 16-bit factors. */
    zmix_memory_settings t = *s;
    zmix_memory_plan q;
    if (s->workers_option && s->workers > 1) {
        for (t.workers = s->workers - 1; t.workers >= 1; t.workers--) {
            zmix_memory_plan_compute(m, &t, &q);
            if (q.peak <= limit) break;
        }
        if (t.workers >= 1)
            snprintf(hint, sizeof hint, "; it fits with %s %d", s->workers_option, t.workers);
        t.workers = s->workers;
    }
    if (!hint[0] && s->factor_option && p->factor_dtype == ZMIX_FACTORS_F32) {
        t.factor_dtype = ZMIX_FACTORS_F16;
        zmix_memory_plan_compute(m, &t, &q);
        if (q.peak <= limit) snprintf(hint, sizeof hint, "; it fits with %s f16", s->factor_option);
        if (!hint[0] && s->workers_option && s->workers > 1) {
            t.workers = 1;
            zmix_memory_plan_compute(m, &t, &q);
            if (q.peak <= limit)
                snprintf(hint, sizeof hint, "; it fits with %s f16 %s 1", s->factor_option,
                         s->workers_option);
        }
    }
    /* Last, the factored W' mode: it changes the scores' last bits and the speed. */
    if (!hint[0] && s->wprime_option && p->expert_matrices) {
        t = *s;
        t.wprime = ZMIX_WPRIME_KEEP_FACTORS;
        zmix_memory_plan_compute(m, &t, &q);
        if (q.peak <= limit)
            snprintf(hint, sizeof hint, "; it fits with %s factored", s->wprime_option);
    }
    if (!hint[0]) {
        const char *opt[3] = {s->workers_option ? s->workers_option : "the workers",
                              s->factor_option, p->expert_matrices ? s->wprime_option : NULL};
        char names[160] = "";
        int n = 0, total = 0;
        for (int i = 0; i < 3; i++) total += opt[i] != NULL;
        for (int i = 0; i < 3; i++) {
            if (!opt[i]) continue;
            size_t len = strlen(names);
            snprintf(names + len, sizeof names - len, "%s%s",
                     n == 0           ? ""
                     : n == total - 1 ? " or "
                                      : ", ",
                     opt[i]);
            n++;
        }
        snprintf(hint, sizeof hint,
                 "; no setting of %s makes it fit: it needs more free memory or a smaller model",
                 names);
    }
    char also[128] = "";
    if (s->limit_option && limit_source && !strcmp(limit_source, "MemAvailable"))
        snprintf(also, sizeof also, " (%s sets the limit instead)", s->limit_option);
    return zmix_error_set(
        err, ZMIX_ENOMEM, "needs %s %s but %s is %s%s%s", human(p->peak, need, sizeof need),
        p->peak == p->setup ? "while setting up" : "while scoring",
        limit_source ? limit_source : "the limit", human(limit, have, sizeof have), also, hint);
}

int zmix_memory_preflight(const char *path, const zmix_memory_settings *s, size_t limit,
                          char *report, size_t report_size, zmix_error *err)
{
    if (report_size) report[0] = '\0';
    zmix_model_probe m;
    int rc = zmix_model_probe_path(path, &m, err);
    if (rc) return rc;
    zmix_memory_plan p;
    zmix_memory_plan_compute(&m, s, &p);
    size_t len = zmix_memory_plan_format(&p, report, report_size);
    /* The other mode's total, so that the log says what switching would save. */
    zmix_memory_settings other = *s;
    other.wprime =
        s->wprime == ZMIX_WPRIME_KEEP_FACTORS ? ZMIX_WPRIME_KEEP_AUTO : ZMIX_WPRIME_KEEP_FACTORS;
    zmix_memory_plan q;
    zmix_memory_plan_compute(&m, &other, &q);
    if (q.expert_matrices != p.expert_matrices && len < report_size) {
        char a[32], b[32];
        snprintf(report + len, report_size - len, "; W' mode %s: %s scoring, %s while setting up",
                 q.mode, human(q.steady, a, sizeof a), human(q.setup, b, sizeof b));
    }
    const char *source = s->limit_option ? s->limit_option : "the memory limit";
    if (!limit) {
        if ((rc = zmix_memory_available(&limit, err))) return rc;
        source = "MemAvailable";
    }
    rc = zmix_memory_plan_check(&m, s, &p, limit, source, err);
    if (rc) zmix_error_prefix(err, "%s", path);
    return rc;
}
