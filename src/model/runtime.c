/*
 * The runtime: a borrowed base model, the SVD factors of its adapted matrices (from the
 * on-disk cache when it holds them), the K experts and, when they fit, the K expert
 * matrices W_k = U·diag(σ⊙z_k)·Vt of every adapted matrix.
 *
 * Why precompute W_k: W'(α) is linear in α, so with the W_k at hand composing a candidate's
 * matrix is K axpys (memory-bound, tiny next to the forward pass) instead of a rank-sized
 * GEMM. They cost K times the adapted weights in memory, hence the cap; above it (or when
 * asked, ZMIX_WPRIME_KEEP_FACTORS) the scorer composes from the factors or runs the factored
 * form.
 *
 * What stays resident (docs/sizing.md, "Memory per mode"). With a factor cache, U and Vt are
 * used in place from the cache file's read-only mapping. Once the expert matrices are built
 * from them, their pages are dropped: the linear mode reads only σ (the rescale's sums), so
 * U and Vt come back into memory, from the page cache, only for what needs them (a call whose
 * cost model picks compose or factored, generation, export). Without expert matrices the
 * scorer reads them on every call, and without a cache they are heap blocks, kept: there is
 * no file to fault them back in from.
 */
#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "compute.h"

void zmix_runtime_opts_default(zmix_runtime_opts *opts)
{
    opts->adapt = ZMIX_ADAPT_MLP;
    opts->factor_cache_dir = NULL;
    opts->factor_file_mode = 0;
    opts->memory_budget = 0;
    opts->factor_dtype = ZMIX_FACTORS_AUTO;
    opts->wprime = ZMIX_WPRIME_KEEP_AUTO;
}

int zmix_wprime_keep_parse(const char *s, zmix_wprime_keep *out, zmix_error *err)
{
    if (!strcmp(s, "auto"))
        *out = ZMIX_WPRIME_KEEP_AUTO;
    else if (!strcmp(s, "factored"))
        *out = ZMIX_WPRIME_KEEP_FACTORS;
    else
        return zmix_error_set(err, ZMIX_EINVAL, "W' mode '%s': expected auto or factored", s);
    return 0;
}

const char *zmix_wprime_keep_name(zmix_wprime_keep keep)
{
    switch (keep) {
    case ZMIX_WPRIME_KEEP_AUTO: return "auto";
    case ZMIX_WPRIME_KEEP_FACTORS: return "factored";
    default: return "?";
    }
}

static const char *const factor_dtype_names[] = {"auto", "f32", "f16", "bf16"};

int zmix_factor_dtype_parse(const char *s, zmix_factor_dtype *out, zmix_error *err)
{
    for (int i = 0; i < 4; i++)
        if (!strcmp(s, factor_dtype_names[i])) {
            *out = (zmix_factor_dtype)i;
            return 0;
        }
    return zmix_error_set(err, ZMIX_EINVAL, "factor dtype '%s': expected auto, f32, f16 or bf16",
                          s);
}

const char *zmix_factor_dtype_name(zmix_factor_dtype dtype)
{
    return dtype >= ZMIX_FACTORS_AUTO && dtype <= ZMIX_FACTORS_BF16 ? factor_dtype_names[dtype]
                                                                    : "?";
}

/* The storage of U and Vt: 16-bit factors for a 16-bit model unless asked otherwise (the
 * factors would otherwise take about 2.6 times the memory of the matrices they factor). */
static zmix_dtype resolve_factor_dtype(zmix_factor_dtype want, const zmix_model *model)
{
    switch (want) {
    case ZMIX_FACTORS_F32: return ZMIX_DT_F32;
    case ZMIX_FACTORS_F16: return ZMIX_DT_F16;
    case ZMIX_FACTORS_BF16: return ZMIX_DT_BF16;
    default: return zmix_model_has_half(model) ? ZMIX_DT_F16 : ZMIX_DT_F32;
    }
}

size_t zmix_runtime_tile_floats(const zmix_runtime *rt)
{
    return rt->factor_dtype != ZMIX_DT_F32 || zmix_model_has_half(rt->model) ? ZMIX_TILE_FLOATS : 0;
}

void zmix_runtime_free(zmix_runtime *rt)
{
    if (!rt) return;
    if (rt->factors) zmix_factors_free(rt->factors, rt->n_mat);
    free(rt->factors);
    if (rt->factor_map.addr) munmap(rt->factor_map.addr, rt->factor_map.len);
    for (int k = 0; rt->experts && k < rt->n_experts; k++) free(rt->experts[k].z);
    free(rt->experts);
    free(rt->list);
    free(rt->sigma_sum);
    free(rt->expert_w);
    free(rt->expert_w_block);
    free(rt->expert_sigma_z);
    free(rt->adapted_index);
    free(rt);
}

static int runtime_alloc(const zmix_model *model, const zmix_runtime_opts *opts, int n_experts,
                         zmix_runtime **out, zmix_error *err)
{
    *out = NULL;
    if (n_experts < 0)
        return zmix_error_set(err, ZMIX_EINVAL, "runtime: %d experts (expected >= 0)", n_experts);
    zmix_runtime *rt = calloc(1, sizeof *rt);
    if (!rt) return zmix_error_set(err, ZMIX_ENOMEM, "runtime: out of memory");
    /* The scorer parallelises over candidates itself (and the daemon runs a pool of scorers):
     * BLAS threads on top would oversubscribe the cores and make GEMM partitioning, hence
     * rounding, depend on the machine. So BLAS runs on the calling thread. */
    openblas_set_num_threads(1);
    rt->model = model;
    if (opts)
        rt->opts = *opts;
    else
        zmix_runtime_opts_default(&rt->opts);
    rt->opts.factor_cache_dir = NULL; /* borrowed only for the duration of create */
    if (rt->opts.factor_dtype < ZMIX_FACTORS_AUTO || rt->opts.factor_dtype > ZMIX_FACTORS_BF16) {
        int bad = (int)rt->opts.factor_dtype;
        free(rt);
        return zmix_error_set(err, ZMIX_EINVAL, "runtime: factor dtype %d is unknown", bad);
    }
    if (rt->opts.wprime != ZMIX_WPRIME_KEEP_AUTO && rt->opts.wprime != ZMIX_WPRIME_KEEP_FACTORS) {
        int bad = (int)rt->opts.wprime;
        free(rt);
        return zmix_error_set(err, ZMIX_EINVAL, "runtime: W' mode %d is unknown", bad);
    }
    rt->factor_dtype = resolve_factor_dtype(rt->opts.factor_dtype, model);
    int rc = zmix_adapted_list(model, rt->opts.adapt, &rt->list, &rt->n_mat, &rt->z_total, err);
    if (rc) {
        free(rt);
        return rc;
    }
    rt->n_experts = n_experts;
    int n_slots = model->cfg.n_layers * ZMIX_MAT_COUNT;
    rt->experts = calloc(n_experts > 0 ? (size_t)n_experts : 1, sizeof *rt->experts);
    rt->factors = calloc(rt->n_mat > 0 ? (size_t)rt->n_mat : 1, sizeof *rt->factors);
    rt->sigma_sum = calloc(rt->n_mat > 0 ? (size_t)rt->n_mat : 1, sizeof *rt->sigma_sum);
    rt->adapted_index = malloc((size_t)n_slots * sizeof *rt->adapted_index);
    if (!rt->experts || !rt->factors || !rt->sigma_sum || !rt->adapted_index) {
        zmix_runtime_free(rt);
        return zmix_error_set(err, ZMIX_ENOMEM, "runtime: out of memory");
    }
    for (int i = 0; i < n_slots; i++) rt->adapted_index[i] = -1;
    for (int m = 0; m < rt->n_mat; m++)
        rt->adapted_index[rt->list[m].layer * ZMIX_MAT_COUNT + rt->list[m].kind] = m;
    *out = rt;
    return 0;
}

/* The factors just computed and saved, swapped for the saved file's mapping, so that a first
 * start keeps what a later one does. Best effort: the heap copies stay when it fails. */
static void remap_saved(zmix_runtime *rt, const char *cache_dir)
{
    zmix_factors *mapped = calloc(rt->n_mat > 0 ? (size_t)rt->n_mat : 1, sizeof *mapped);
    zmix_mapping map;
    zmix_error ignored = {0, ""};
    if (!mapped || zmix_factor_cache_map(cache_dir, rt->model, rt->opts.adapt, rt->factor_dtype,
                                         rt->list, rt->n_mat, mapped, &map, &ignored)) {
        free(mapped);
        return;
    }
    zmix_factors_free(rt->factors, rt->n_mat);
    free(rt->factors);
    rt->factors = mapped;
    rt->factor_map = map;
}

static int runtime_factor(zmix_runtime *rt, const char *cache_dir, zmix_error *err)
{
    int rc = ZMIX_ENOTFOUND;
    /* A missing cache directory is refused before the (slow) factorisation, not after it. */
    struct stat st;
    if (cache_dir && stat(cache_dir, &st) != 0)
        return zmix_error_set(err, errno == ENOENT ? ZMIX_ENOTFOUND : ZMIX_EIO,
                              "factor cache directory %s: %s (create it first)", cache_dir,
                              strerror(errno));
    if (cache_dir && !S_ISDIR(st.st_mode))
        return zmix_error_set(err, ZMIX_EINVAL, "factor cache directory %s: not a directory",
                              cache_dir);
    if (cache_dir) {
        rc = zmix_factor_cache_map(cache_dir, rt->model, rt->opts.adapt, rt->factor_dtype, rt->list,
                                   rt->n_mat, rt->factors, &rt->factor_map, err);
        /* Absent or not trustworthy (corrupt, another model or setting): rebuild it. Any
         * other failure (I/O, memory) is the caller's to see. */
        if (rc && rc != ZMIX_ENOTFOUND && rc != ZMIX_EFORMAT) return rc;
        if (rc) memset(rt->factors, 0, (size_t)rt->n_mat * sizeof *rt->factors);
    }
    if (rc) {
        rc = zmix_factors_compute(rt->model, rt->list, rt->n_mat, rt->factor_dtype, rt->factors,
                                  err);
        if (rc) return rc;
        if (cache_dir) {
            rc = zmix_factor_cache_save(cache_dir, rt->model, rt->opts.adapt, rt->list, rt->n_mat,
                                        rt->factors, rt->opts.factor_file_mode, err);
            if (rc) return zmix_error_prefix(err, "saving the SVD factor cache");
            remap_saved(rt, cache_dir);
        }
    }
    zmix_error_clear(err);
    for (int m = 0; m < rt->n_mat; m++) {
        double s = 0.0;
        for (int i = 0; i < rt->factors[m].rank; i++) s += rt->factors[m].S[i];
        rt->sigma_sum[m] = (float)s;
    }
    return 0;
}

/* Σ σ⊙z_k per matrix and expert, and the expert matrices when they fit the cap. */
static int runtime_prepare_experts(zmix_runtime *rt, zmix_error *err)
{
    int K = rt->n_experts, M = rt->n_mat;
    rt->expert_sigma_z = calloc((size_t)(M > 0 ? M : 1) * (K > 0 ? K : 1), sizeof(double));
    if (!rt->expert_sigma_z) return zmix_error_set(err, ZMIX_ENOMEM, "runtime: out of memory");
    for (int k = 0; k < K; k++) {
        const float *z = rt->experts[k].z;
        for (size_t i = 0; i < rt->z_total; i++)
            if (!isfinite(z[i]))
                return zmix_error_set(err, ZMIX_ENUMERIC, "expert '%s': z[%zu] is %s",
                                      rt->experts[k].name, i, isnan(z[i]) ? "NaN" : "Inf");
        for (int m = 0; m < M; m++) {
            const zmix_factors *f = &rt->factors[m];
            const float *zm = z + rt->list[m].z_offset;
            double s = 0.0;
            for (int i = 0; i < f->rank; i++) s += (double)f->S[i] * zm[i];
            rt->expert_sigma_z[(size_t)m * K + k] = s;
        }
    }
    if (K == 0 || M == 0) return 0;

    size_t floats = 0, max_tmp = 0;
    for (int m = 0; m < M; m++) {
        floats += (size_t)rt->list[m].rows * rt->list[m].cols;
        size_t t = (size_t)rt->list[m].rows * rt->list[m].rank;
        max_tmp = t > max_tmp ? t : max_tmp;
    }
    if (rt->opts.wprime == ZMIX_WPRIME_KEEP_FACTORS ||
        floats > ZMIX_EXPERT_MATRIX_CAP / sizeof(float) / (size_t)K)
        return 0;
    rt->expert_w = malloc((size_t)M * K * sizeof *rt->expert_w);
    rt->expert_w_block = malloc(floats * K * sizeof(float));
    float *tmp = malloc(max_tmp * sizeof(float));
    size_t n_tile = zmix_runtime_tile_floats(rt);
    float *tile = n_tile ? malloc(n_tile * sizeof *tile) : NULL;
    if (!rt->expert_w || !rt->expert_w_block || !tmp || (n_tile && !tile)) {
        /* Not fatal: the scorer composes from the factors instead. */
        free(rt->expert_w);
        free(rt->expert_w_block);
        rt->expert_w = NULL;
        rt->expert_w_block = NULL;
        free(tmp);
        free(tile);
        return 0;
    }
    float *p = rt->expert_w_block;
    for (int m = 0; m < M; m++) {
        for (int k = 0; k < K; k++) {
            rt->expert_w[(size_t)m * K + k] = p;
            zmix_wprime_compose(rt, m, rt->experts[k].z + rt->list[m].z_offset, 1.0f, p, tmp, tile);
            p += (size_t)rt->list[m].rows * rt->list[m].cols;
        }
        /* The linear mode needs no more of this matrix's U and Vt (see the top). */
        zmix_factors_release(&rt->factors[m]);
    }
    free(tmp);
    free(tile);
    return 0;
}

int zmix_runtime_create_from_z(const zmix_model *model, const zmix_runtime_opts *opts,
                               const float *const *z, const char *const *names, int n_experts,
                               zmix_runtime **out, zmix_error *err)
{
    zmix_runtime *rt;
    int rc = runtime_alloc(model, opts, n_experts, &rt, err);
    if (rc) return rc;
    for (int k = 0; k < n_experts; k++) {
        zmix_expert *e = &rt->experts[k];
        snprintf(e->name, sizeof e->name, "%s", names && names[k] ? names[k] : "expert");
        if (!names || !names[k]) snprintf(e->name, sizeof e->name, "expert%d", k);
        e->z = malloc((rt->z_total ? rt->z_total : 1) * sizeof(float));
        if (!e->z) {
            zmix_runtime_free(rt);
            return zmix_error_set(err, ZMIX_ENOMEM, "runtime: out of memory for expert %d", k);
        }
        memcpy(e->z, z[k], rt->z_total * sizeof(float));
    }
    if ((rc = runtime_factor(rt, opts ? opts->factor_cache_dir : NULL, err)) ||
        (rc = runtime_prepare_experts(rt, err))) {
        zmix_runtime_free(rt);
        return rc;
    }
    *out = rt;
    return 0;
}

int zmix_runtime_create(const zmix_model *model, const zmix_runtime_opts *opts,
                        const char *const *expert_paths, int n_experts, zmix_runtime **out,
                        zmix_error *err)
{
    zmix_runtime *rt;
    int rc = runtime_alloc(model, opts, n_experts, &rt, err);
    if (rc) return rc;
    /* Experts first: a bad expert file fails before the (slow) factorisation. */
    for (int k = 0; k < n_experts; k++) {
        rc = zmix_expert_load(expert_paths[k], rt->list, rt->n_mat, rt->z_total, &rt->experts[k],
                              err);
        if (rc) {
            zmix_runtime_free(rt);
            return rc;
        }
    }
    if ((rc = runtime_factor(rt, opts ? opts->factor_cache_dir : NULL, err)) ||
        (rc = runtime_prepare_experts(rt, err))) {
        zmix_runtime_free(rt);
        return rc;
    }
    *out = rt;
    return 0;
}

const zmix_model *zmix_runtime_model(const zmix_runtime *rt)
{
    return rt->model;
}

int zmix_runtime_n_experts(const zmix_runtime *rt)
{
    return rt->n_experts;
}

const char *zmix_runtime_expert_name(const zmix_runtime *rt, int k)
{
    return k >= 0 && k < rt->n_experts ? rt->experts[k].name : NULL;
}

int zmix_runtime_n_matrices(const zmix_runtime *rt)
{
    return rt->n_mat;
}

const char *zmix_runtime_matrix_name(const zmix_runtime *rt, int m)
{
    return m >= 0 && m < rt->n_mat ? rt->list[m].name : NULL;
}

int zmix_runtime_matrix_rank(const zmix_runtime *rt, int m)
{
    return m >= 0 && m < rt->n_mat ? rt->list[m].rank : 0;
}

size_t zmix_runtime_z_offset(const zmix_runtime *rt, int m)
{
    return m >= 0 && m < rt->n_mat ? rt->list[m].z_offset : 0;
}

size_t zmix_runtime_z_total(const zmix_runtime *rt)
{
    return rt->z_total;
}

zmix_adapt_set zmix_runtime_adapt_set(const zmix_runtime *rt)
{
    return rt->opts.adapt;
}

const float *zmix_runtime_expert_z(const zmix_runtime *rt, int k)
{
    return k >= 0 && k < rt->n_experts ? rt->experts[k].z : NULL;
}

void zmix_runtime_memory_get(const zmix_runtime *rt, zmix_runtime_memory *out)
{
    memset(out, 0, sizeof *out);
    size_t K = (size_t)rt->n_experts;
    for (int m = 0; m < rt->n_mat; m++) {
        const zmix_factors *f = &rt->factors[m];
        size_t es = f->dtype == ZMIX_DT_F32 ? sizeof(float) : sizeof(uint16_t);
        size_t uv = ((size_t)f->rows * f->rank + (size_t)f->rank * f->cols) * es;
        out->sigma += (size_t)f->rank * sizeof(float);
        if (f->mapped)
            out->factors_mapped += uv;
        else
            out->factors += uv;
        if (rt->expert_w_block)
            out->expert_matrices += K * (size_t)rt->list[m].rows * rt->list[m].cols * sizeof(float);
    }
    out->experts = K * rt->z_total * sizeof(float) + (size_t)rt->n_mat * K * sizeof(double);
    out->mode = rt->expert_w_block ? "linear" : "factored";
}
