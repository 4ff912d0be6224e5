/*
 * zmix export against the real models: the demo model (generated here) and stories260K
 * (../shared/models, skipped when absent). Each fixture runs a short real search, so the
 * result exported is one zmix made.
 *
 *   - F16/BF16 conversions round-trip every value;
 *   - the z' file round-trips the self-description;
 *   - the merged directory loaded as a plain model gives the logits of the base model with
 *     the adaptation bit for bit (F32), and those of W' rounded to BF16 bit for bit on a BF16
 *     copy of the base (which it keeps as BF16);
 *   - the full-rank adapter's W + B·A is W' to float rounding and scores as W';
 *   - --rank auto keeps the exact W' accuracy and log-likelihood within the tolerance;
 *   - a result for another base model, and corrupt or truncated result files, are refused.
 *
 * The independent check of the adapter by PEFT's rules (numpy) is test_export_peft.py.
 */
#include <cJSON.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "testutil.h"

#include "model/compute.h"
#include "model/safetensors.h"
#include "zmix/adapt.h"
#include "zmix/demo.h"
#include "zmix/export.h"

/* ---- Fixtures: a model, its experts, examples and a real (short) search's result -------- */

typedef enum fixture_kind { FIX_DEMO, FIX_STORIES } fixture_kind;

typedef struct fixture {
    fixture_kind kind;
    char tmp[256];
    char model_dir[512];
    zmix_model *model;
    zmix_runtime *rt;
    zmix_examples ex;
    zmix_adapt_result res;
    zmix_planted planted;
    int have_planted;
} fixture;

static int stories_dir(char *buf, size_t n)
{
    const char *shared = getenv("ZMIX_SHARED_DIR");
    if (!shared) return -1;
    snprintf(buf, n, "%s/models/stories260K", shared);
    char cfg[700];
    snprintf(cfg, sizeof cfg, "%s/config.json", buf);
    return access(cfg, R_OK);
}

static void check(int rc, const zmix_error *err)
{
    if (rc) print_error("%s\n", err->msg);
    assert_int_equal(rc, 0);
}

/* A short search: enough for a real α and z', not for convergence. */
static void run_search(fixture *f)
{
    zmix_adapt_opts opts;
    zmix_adapt_opts_default(&opts);
    opts.cem.pop_size = 8;
    opts.cem.max_generations = 3;
    opts.cem.seed = 5;
    zmix_error err;
    check(zmix_adapt_run(f->rt, &f->ex, &opts, NULL, NULL, &f->res, &err), &err);
    assert_non_null(f->res.z);
}

static int setup(void **state, fixture_kind kind)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->kind = kind;
    zmix_error err;
    if (kind == FIX_STORIES && stories_dir(f->model_dir, sizeof f->model_dir)) {
        free(f);
        *state = NULL;
        return 0;
    }
    testutil_mkdtemp(f->tmp, sizeof f->tmp);
    char experts[ZMIX_DEMO_N_EXPERTS][700];
    const char *paths[ZMIX_DEMO_N_EXPERTS];
    int k_n = 0;
    if (kind == FIX_DEMO) {
        char dir[400];
        snprintf(dir, sizeof dir, "%s/demo", f->tmp);
        zmix_demo_opts dopts;
        zmix_demo_opts_default(&dopts);
        dopts.n_examples = 8;
        dopts.n_heldout = 1;
        zmix_demo_info info;
        check(zmix_demo_create(dir, &dopts, &info, &err), &err);
        snprintf(f->model_dir, sizeof f->model_dir, "%s/model", dir);
        check(zmix_model_load(f->model_dir, &f->model, &err), &err);
        char task[500];
        snprintf(task, sizeof task, "%s/task.json", dir);
        check(zmix_examples_load_json_tok(task, zmix_model_tokenizer(f->model), &f->ex, &err),
              &err);
        for (k_n = 0; k_n < info.n_experts; k_n++) {
            snprintf(experts[k_n], sizeof experts[k_n], "%s/experts/%s.safetensors", dir,
                     info.expert_names[k_n]);
            paths[k_n] = experts[k_n];
        }
    } else {
        check(zmix_model_load(f->model_dir, &f->model, &err), &err);
        zmix_planted_opts popts;
        zmix_planted_opts_default(&popts);
        popts.n_experts = 3;
        popts.n_examples = 8;
        popts.seed = 21;
        check(zmix_planted_create(f->model, f->tmp, &popts, &f->planted, &err), &err);
        f->have_planted = 1;
        check(zmix_examples_copy(f->planted.examples.items, f->planted.examples.n, &f->ex, &err),
              &err);
        for (k_n = 0; k_n < popts.n_experts; k_n++) paths[k_n] = f->planted.expert_paths[k_n];
    }
    zmix_runtime_opts ropts;
    zmix_runtime_opts_default(&ropts);
    check(zmix_runtime_create(f->model, &ropts, paths, k_n, &f->rt, &err), &err);
    run_search(f);
    *state = f;
    return 0;
}

static int setup_demo(void **state)
{
    return setup(state, FIX_DEMO);
}

static int setup_stories(void **state)
{
    return setup(state, FIX_STORIES);
}

static int teardown(void **state)
{
    fixture *f = *state;
    if (!f) return 0;
    zmix_adapt_result_free(&f->res);
    zmix_runtime_free(f->rt);
    zmix_model_free(f->model);
    zmix_examples_free(&f->ex);
    if (f->have_planted) zmix_planted_free(&f->planted);
    testutil_rmrf(f->tmp);
    free(f);
    return 0;
}

static fixture *fixture_or_skip(void **state)
{
    if (!*state) {
        print_message("stories260K not found under ZMIX_SHARED_DIR: skipping\n");
        skip();
    }
    return *state;
}

/* Last-position logits of every example's prompt + target, through a plain model. */
static float *example_logits(const zmix_model *m, const zmix_examples *ex, size_t *n_out)
{
    int vocab = m->cfg.vocab_size;
    size_t total = 0;
    for (int e = 0; e < ex->n; e++)
        total += (size_t)(ex->items[e].n_prompt + ex->items[e].n_target);
    float *all = malloc(total * vocab * sizeof *all);
    int32_t *tok = malloc(total * sizeof *tok);
    assert_true(all && tok);
    size_t at = 0;
    zmix_error err;
    for (int e = 0; e < ex->n; e++) {
        const zmix_example *x = &ex->items[e];
        int n = x->n_prompt + x->n_target;
        memcpy(tok, x->prompt, (size_t)x->n_prompt * sizeof *tok);
        memcpy(tok + x->n_prompt, x->target, (size_t)x->n_target * sizeof *tok);
        check(zmix_model_forward_logits(m, tok, n, all + at * vocab, &err), &err);
        at += (size_t)n;
    }
    free(tok);
    *n_out = total * vocab;
    return all;
}

/* ---- Conversions ---------------------------------------------------------------------- */

static void test_half_conversions_round_trip(void **state)
{
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        float f16 = zmix_f16_to_f32((uint16_t)h), bf16 = zmix_bf16_to_f32((uint16_t)h);
        if (!isnan(f16)) assert_int_equal(zmix_f32_to_f16(f16), h);
        if (!isnan(bf16)) assert_int_equal(zmix_f32_to_bf16(bf16), h);
    }
    /* Ties go to the even neighbour; beyond the range gives infinity. */
    assert_int_equal(zmix_f32_to_bf16(1.0f + 0x1p-8f), 0x3f80);     /* tie: even (down) */
    assert_int_equal(zmix_f32_to_bf16(1.0f + 3 * 0x1p-8f), 0x3f82); /* tie: even (up) */
    assert_int_equal(zmix_f32_to_f16(1.0f + 0x1p-11f), 0x3c00);     /* tie: even (down) */
    assert_int_equal(zmix_f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3c02); /* tie: even (up) */
    assert_int_equal(zmix_f32_to_f16(65520.0f), 0x7c00);            /* rounds past max */
    assert_int_equal(zmix_f32_to_f16(65519.0f), 0x7bff);
    assert_int_equal(zmix_f32_to_f16(0x1p-25f), 0x0000); /* tie with 0: even */
    assert_int_equal(zmix_f32_to_f16(0x1p-25f + 0x1p-40f), 0x0001);
    assert_int_equal(zmix_f32_to_f16(-0x1p-14f), 0x8400);
}

/* ---- The z' file ---------------------------------------------------------------------- */

static void test_z_file_round_trips_the_description(void **state)
{
    fixture *f = fixture_or_skip(state);
    char path[400];
    snprintf(path, sizeof path, "%s/z.safetensors", f->tmp);
    zmix_error err;
    check(zmix_adapt_result_save_z(&f->res, "my-task", path, &err), &err);
    zmix_adapt_result back;
    check(zmix_adapt_result_load(path, &back, &err), &err);
    assert_string_equal(back.model_fingerprint, zmix_model_fingerprint(f->model));
    assert_string_equal(back.key, f->res.key);
    assert_string_equal(back.experts_digest, f->res.experts_digest);
    assert_string_equal(back.model.model_type, f->model->cfg.model_type);
    assert_int_equal(back.model.dim, f->model->cfg.dim);
    assert_int_equal(back.model.n_kv_heads, f->model->cfg.n_kv_heads);
    assert_true(back.model.norm_eps == f->model->cfg.norm_eps);
    assert_int_equal(back.adapt, f->res.adapt);
    assert_int_equal(back.rescale, f->res.rescale);
    assert_int_equal(back.n_experts, f->res.n_experts);
    assert_int_equal(back.dim, f->res.dim);
    for (int k = 0; k < back.n_experts; k++) {
        assert_string_equal(back.expert_names[k], f->res.expert_names[k]);
        assert_string_equal(back.expert_fingerprints[k], f->res.expert_fingerprints[k]);
        assert_int_equal(strlen(back.expert_fingerprints[k]), 64);
    }
    for (int i = 0; i < back.dim; i++) assert_true(back.alpha[i] == f->res.alpha[i]);
    assert_true(back.best.loglik == f->res.best.loglik);
    /* Matrices come in name order; every z' value is the one saved. */
    float *z;
    check(zmix_export_result_z(f->rt, &back, &z, &err), &err);
    assert_memory_equal(z, f->res.z, f->res.z_total * sizeof *z);
    free(z);
    zmix_adapt_result_free(&back);

    /* The JSON document carries the same description, and z' with include_z. */
    cJSON *doc = zmix_adapt_result_to_json(&f->res, 1);
    char *text = cJSON_PrintUnformatted(doc);
    cJSON_Delete(doc);
    snprintf(path, sizeof path, "%s/r.json", f->tmp);
    testutil_write_text(path, text);
    free(text);
    check(zmix_adapt_result_load(path, &back, &err), &err);
    assert_non_null(back.z);
    assert_string_equal(back.expert_fingerprints[0], f->res.expert_fingerprints[0]);
    assert_int_equal(back.model.vocab_size, f->model->cfg.vocab_size);
    check(zmix_export_result_z(f->rt, &back, &z, &err), &err);
    assert_memory_equal(z, f->res.z, f->res.z_total * sizeof *z);
    free(z);
    zmix_adapt_result_free(&back);
}

/* ---- Merged ------------------------------------------------------------------------- */

static void export_merged(fixture *f, const zmix_runtime *rt, const zmix_adapt_result *res,
                          const char *model_dir, const char *out, zmix_export_report *report)
{
    zmix_export_opts opts;
    zmix_export_opts_default(&opts);
    opts.format = ZMIX_EXPORT_MERGED;
    opts.model_path = model_dir;
    opts.examples = &f->ex;
    zmix_error err;
    check(zmix_export_run(rt, res, &opts, out, report, &err), &err);
}

static void test_merged_f32_gives_the_adapted_logits_bit_for_bit(void **state)
{
    fixture *f = fixture_or_skip(state);
    char out[400];
    snprintf(out, sizeof out, "%s/merged", f->tmp);
    zmix_export_report report;
    export_merged(f, f->rt, &f->res, f->model_dir, out, &report);
    assert_true(report.scored);
    assert_true(report.export.accuracy == report.exact.accuracy);
    assert_true(fabs(report.export.loglik - report.exact.loglik) < 1e-5);
    zmix_export_report_free(&report);

    zmix_error err;
    zmix_model *merged, *adapted;
    check(zmix_model_load(out, &merged, &err), &err);
    check(zmix_model_with_wprime(f->rt, f->res.rescale, f->res.z, &adapted, &err), &err);
    size_t n;
    float *a = example_logits(merged, &f->ex, &n), *b = example_logits(adapted, &f->ex, &n);
    assert_memory_equal(a, b, n * sizeof *a);
    /* ... and not the base model's. */
    float *c = example_logits(f->model, &f->ex, &n);
    assert_memory_not_equal(a, c, n * sizeof *a);
    /* Every file of the base model is there; the config unchanged. */
    char p1[600], p2[600];
    snprintf(p1, sizeof p1, "%s/config.json", f->model_dir);
    snprintf(p2, sizeof p2, "%s/config.json", out);
    size_t l1, l2;
    char *t1 = testutil_read_file(p1, &l1), *t2 = testutil_read_file(p2, &l2);
    assert_int_equal(l1, l2);
    assert_memory_equal(t1, t2, l1);
    free(t1);
    free(t2);
    if (f->kind == FIX_DEMO) {
        assert_non_null(zmix_model_tokenizer(merged));
    }
    free(a);
    free(b);
    free(c);
    zmix_model_free(adapted);
    zmix_model_free(merged);
}

/* dst: a copy of the Hugging Face directory src with every tensor in BF16. */
static void make_bf16_copy(const char *src, const char *dst)
{
    assert_int_equal(mkdir(dst, 0755), 0);
    const char *files[] = {"config.json", "tokenizer.json"};
    for (int i = 0; i < 2; i++) {
        char a[700], b[700];
        snprintf(a, sizeof a, "%s/%s", src, files[i]);
        snprintf(b, sizeof b, "%s/%s", dst, files[i]);
        if (access(a, R_OK)) continue;
        size_t len;
        char *t = testutil_read_file(a, &len);
        testutil_write_file(b, t, len);
        free(t);
    }
    char a[700], b[700];
    snprintf(a, sizeof a, "%s/model.safetensors", src);
    snprintf(b, sizeof b, "%s/model.safetensors", dst);
    zmix_st_file st;
    zmix_error err;
    check(zmix_st_open(a, &st, &err), &err);
    zmix_st_out *outs = calloc((size_t)st.n_tensors, sizeof *outs);
    uint16_t **blocks = calloc((size_t)st.n_tensors, sizeof *blocks);
    for (int t = 0; t < st.n_tensors; t++) {
        const zmix_st_tensor *x = &st.tensors[t];
        assert_int_equal(x->dtype, ZMIX_ST_F32);
        const float *v = (const float *)(st.data + x->begin);
        blocks[t] = malloc(x->numel * sizeof **blocks);
        for (size_t i = 0; i < x->numel; i++) blocks[t][i] = zmix_f32_to_bf16(v[i]);
        outs[t] = (zmix_st_out){
            .name = x->name, .ndim = x->ndim, .dtype = ZMIX_ST_BF16, .raw = blocks[t]};
        memcpy(outs[t].shape, x->shape, sizeof outs[t].shape);
    }
    check(zmix_st_write(b, outs, st.n_tensors, NULL, NULL, 0, &err), &err);
    for (int t = 0; t < st.n_tensors; t++) free(blocks[t]);
    free(blocks);
    free(outs);
    zmix_st_close(&st);
}

static float max_abs_diff(const float *a, const float *b, size_t n)
{
    float m = 0.0f;
    for (size_t i = 0; i < n; i++) m = fmaxf(m, fabsf(a[i] - b[i]));
    return m;
}

static void test_merged_bf16_keeps_the_dtype_and_the_logits(void **state)
{
    fixture *f = fixture_or_skip(state);
    char base[400], out[400];
    snprintf(base, sizeof base, "%s/bf16", f->tmp);
    snprintf(out, sizeof out, "%s/merged-bf16", f->tmp);
    make_bf16_copy(f->model_dir, base);
    zmix_error err;
    zmix_model *model;
    check(zmix_model_load(base, &model, &err), &err);
    zmix_runtime *rt;
    zmix_runtime_opts ropts;
    zmix_runtime_opts_default(&ropts);
    check(zmix_runtime_create(model, &ropts, NULL, 0, &rt, &err), &err);
    /* The same z' on the BF16 base: a result made for it. */
    zmix_adapt_result res = f->res;
    snprintf(res.model_fingerprint, sizeof res.model_fingerprint, "%s",
             zmix_model_fingerprint(model));
    zmix_export_report report;
    export_merged(f, rt, &res, base, out, &report);
    print_message("BF16 merged: exact W' acc %.4f loglik %.6f, as read acc %.4f loglik %.6f\n",
                  report.exact.accuracy, report.exact.loglik, report.export.accuracy,
                  report.export.loglik);
    zmix_export_report_free(&report);

    /* Every tensor stays BF16. */
    char st_path[500];
    snprintf(st_path, sizeof st_path, "%s/model.safetensors", out);
    zmix_st_file st;
    check(zmix_st_open(st_path, &st, &err), &err);
    for (int t = 0; t < st.n_tensors; t++) assert_int_equal(st.tensors[t].dtype, ZMIX_ST_BF16);
    zmix_st_close(&st);

    /* Reference: W' of the BF16 base, each adapted matrix rounded to BF16 as the file stores
     * it. The merged model must give exactly its logits. */
    zmix_model *merged, *adapted;
    check(zmix_model_load(out, &merged, &err), &err);
    check(zmix_model_with_wprime(rt, res.rescale, res.z, &adapted, &err), &err);
    size_t n;
    float *exact = example_logits(adapted, &f->ex, &n);
    for (int m = 0; m < rt->n_mat; m++) {
        const zmix_adapted *a = &rt->list[m];
        int rows, cols;
        float *w = (float *)zmix_model_matrix(adapted, a->layer, a->kind, &rows, &cols);
        for (size_t i = 0; i < (size_t)rows * cols; i++)
            w[i] = zmix_bf16_to_f32(zmix_f32_to_bf16(w[i]));
    }
    float *rounded = example_logits(adapted, &f->ex, &n), *got = example_logits(merged, &f->ex, &n);
    assert_memory_equal(got, rounded, n * sizeof *got);
    float spread = max_abs_diff(exact, got, n);
    print_message("BF16 merged: max |logit - logit of unrounded W'| = %g\n", spread);
    assert_true(spread < 0.5f);
    free(exact);
    free(rounded);
    free(got);
    zmix_model_free(adapted);
    zmix_model_free(merged);
    zmix_runtime_free(rt);
    zmix_model_free(model);
}

/* ---- PEFT ------------------------------------------------------------------------------ */

static void export_peft(fixture *f, const char *rank, const char *out, zmix_export_report *report)
{
    zmix_export_opts opts;
    zmix_export_opts_default(&opts);
    zmix_error err;
    check(zmix_rank_parse(rank, &opts, &err), &err);
    opts.model_path = f->model_dir;
    opts.examples = &f->ex;
    check(zmix_export_run(f->rt, &f->res, &opts, out, report, &err), &err);
}

static void test_peft_full_rank_is_w_prime(void **state)
{
    fixture *f = fixture_or_skip(state);
    char out[400], st_path[500];
    snprintf(out, sizeof out, "%s/peft", f->tmp);
    zmix_export_report report;
    export_peft(f, "full", out, &report);
    assert_true(report.rel_error == 0.0);
    assert_true(report.export.accuracy == report.exact.accuracy);
    assert_true(fabs(report.export.loglik - report.exact.loglik) < 1e-5);
    zmix_export_report_free(&report);

    zmix_error err;
    zmix_model *adapted;
    check(zmix_model_with_wprime(f->rt, f->res.rescale, f->res.z, &adapted, &err), &err);
    snprintf(st_path, sizeof st_path, "%s/adapter_model.safetensors", out);
    zmix_st_file st;
    check(zmix_st_open(st_path, &st, &err), &err);
    assert_int_equal(st.n_tensors, 2 * f->rt->n_mat);
    double worst = 0.0;
    for (int m = 0; m < f->rt->n_mat; m++) {
        const zmix_adapted *a = &f->rt->list[m];
        char name[256];
        snprintf(name, sizeof name, "base_model.model.%.*s.lora_A.weight",
                 (int)(strlen(a->name) - 7), a->name);
        const zmix_st_tensor *A = zmix_st_find(&st, name);
        memcpy(strstr(name, "lora_A"), "lora_B", 6);
        const zmix_st_tensor *B = zmix_st_find(&st, name);
        assert_true(A && B);
        assert_true(A->shape[0] == a->rank && A->shape[1] == a->cols);
        assert_true(B->shape[0] == a->rows && B->shape[1] == a->rank);
        const float *pa = (const float *)(st.data + A->begin),
                    *pb = (const float *)(st.data + B->begin);
        int rows, cols;
        const float *w = zmix_model_matrix(f->model, a->layer, a->kind, &rows, &cols);
        const float *w2 = zmix_model_matrix(adapted, a->layer, a->kind, &rows, &cols);
        double scale = 0.0, diff = 0.0;
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < cols; j++) {
                double ba = 0.0;
                for (int r = 0; r < a->rank; r++)
                    ba += (double)pb[(size_t)i * a->rank + r] * pa[(size_t)r * cols + j];
                double got = w[(size_t)i * cols + j] + ba, want = w2[(size_t)i * cols + j];
                diff = fmax(diff, fabs(got - want));
                scale = fmax(scale, fabs(want));
            }
        worst = fmax(worst, diff / scale);
    }
    print_message("full-rank adapter: max |W + B·A − W'| / max |W'| = %g\n", worst);
    assert_true(worst < 1e-5);
    zmix_st_close(&st);
    zmix_model_free(adapted);
}

static void test_peft_rank_auto_keeps_the_score(void **state)
{
    fixture *f = fixture_or_skip(state);
    char out[400];
    snprintf(out, sizeof out, "%s/peft-auto", f->tmp);
    zmix_export_report report;
    export_peft(f, "auto", out, &report);
    long full = 0;
    for (int m = 0; m < report.n_matrices; m++) full += report.matrices[m].full_rank;
    print_message("rank auto: %ld of %ld components, rel. error %.4f, acc %.4f (exact %.4f), "
                  "loglik %.6f (exact %.6f), %d evaluations\n",
                  report.total_rank, full, report.rel_error, report.export.accuracy,
                  report.exact.accuracy, report.export.loglik, report.exact.loglik,
                  report.auto_evaluations);
    assert_true(report.export.accuracy == report.exact.accuracy);
    assert_true(fabs(report.export.loglik - report.exact.loglik) <= 0.01);
    assert_true(report.total_rank < full);
    assert_true(report.rel_error > 0.0);

    /* The config's patterns give each module the rank its tensors have, with alpha = rank. */
    char cfg_path[500];
    snprintf(cfg_path, sizeof cfg_path, "%s/adapter_config.json", out);
    size_t len;
    char *text = testutil_read_file(cfg_path, &len);
    cJSON *cfg = cJSON_Parse(text);
    free(text);
    int r = cJSON_GetObjectItem(cfg, "r")->valueint;
    assert_int_equal(cJSON_GetObjectItem(cfg, "lora_alpha")->valueint, r);
    const cJSON *ranks = cJSON_GetObjectItem(cfg, "rank_pattern");
    const cJSON *alphas = cJSON_GetObjectItem(cfg, "alpha_pattern");
    for (int m = 0; m < report.n_matrices; m++) {
        char key[128];
        snprintf(key, sizeof key, "%.*s", (int)(strlen(report.matrices[m].name) - 13),
                 report.matrices[m].name + 6); /* without "model." and ".weight" */
        const cJSON *rk = cJSON_GetObjectItem(ranks, key), *al = cJSON_GetObjectItem(alphas, key);
        int want = report.matrices[m].rank;
        if (want == r) {
            assert_null(rk);
        } else {
            assert_true(rk && al);
            assert_int_equal(rk->valueint, want);
            assert_int_equal(al->valueint, want);
        }
    }
    cJSON_Delete(cfg);
    zmix_export_report_free(&report);
}

/* ---- Refusals ------------------------------------------------------------------------- */

static void test_result_for_another_base_is_refused(void **state)
{
    fixture *f = fixture_or_skip(state);
    zmix_error err;
    zmix_model *other;
    zmix_model_config cfg = f->model->cfg;
    check(zmix_model_create_random(&cfg, 99, &other, &err), &err);
    assert_int_equal(zmix_export_check_model(other, &f->res, &err), ZMIX_ESTATE);
    assert_non_null(strstr(err.msg, "another base model"));
    char fp16[17];
    snprintf(fp16, sizeof fp16, "%s", f->res.model_fingerprint);
    assert_non_null(strstr(err.msg, fp16)); /* names the model the result wants */
    /* And through the whole export: nothing written. */
    zmix_runtime *rt;
    zmix_runtime_opts ropts;
    zmix_runtime_opts_default(&ropts);
    check(zmix_runtime_create(other, &ropts, NULL, 0, &rt, &err), &err);
    zmix_export_opts opts;
    zmix_export_opts_default(&opts);
    char out[400];
    snprintf(out, sizeof out, "%s/refused", f->tmp);
    zmix_export_report report;
    assert_int_equal(zmix_export_run(rt, &f->res, &opts, out, &report, &err), ZMIX_ESTATE);
    assert_int_not_equal(access(out, F_OK), 0);
    zmix_runtime_free(rt);
    zmix_model_free(other);
}

static void expect_load_refused(const char *path, const char *needle)
{
    zmix_adapt_result r;
    zmix_error err;
    zmix_error_clear(&err);
    assert_int_not_equal(zmix_adapt_result_load(path, &r, &err), 0);
    print_message("refused: %s\n", err.msg);
    assert_non_null(strstr(err.msg, path));
    assert_non_null(strstr(err.msg, needle));
}

static void test_corrupt_results_are_refused(void **state)
{
    fixture *f = fixture_or_skip(state);
    zmix_error err;
    char z_path[400], bad[400];
    snprintf(z_path, sizeof z_path, "%s/z.safetensors", f->tmp);
    snprintf(bad, sizeof bad, "%s/bad", f->tmp);
    check(zmix_adapt_result_save_z(&f->res, NULL, z_path, &err), &err);
    size_t len;
    char *bytes = testutil_read_file(z_path, &len);
    /* One flipped bit in the data area. */
    bytes[len - 5] ^= 0x10;
    testutil_write_file(bad, bytes, len);
    expect_load_refused(bad, "checksum");
    bytes[len - 5] ^= 0x10;
    /* Truncated. */
    testutil_write_file(bad, bytes, len - 40);
    expect_load_refused(bad, "data");
    free(bytes);
    /* An expert file is not a result. */
    if (f->have_planted) expect_load_refused(f->planted.expert_paths[0], "zmix_format");

    cJSON *doc = zmix_adapt_result_to_json(&f->res, 1);
    char *text = cJSON_PrintUnformatted(doc);
    /* Truncated JSON. */
    testutil_write_file(bad, text, strlen(text) / 2);
    expect_load_refused(bad, "truncated");
    free(text);
    /* A z' value that is not finite. */
    cJSON *z = cJSON_GetObjectItem(doc, "z");
    cJSON *first = z->child;
    cJSON_ReplaceItemInArray(first, 0, cJSON_CreateRaw("1e999"));
    text = cJSON_PrintUnformatted(doc);
    testutil_write_text(bad, text);
    free(text);
    expect_load_refused(bad, "not a finite number");
    /* No model fingerprint. */
    cJSON_DeleteItemFromObject(doc, "model_fingerprint");
    cJSON_DeleteItemFromObject(doc, "z");
    text = cJSON_PrintUnformatted(doc);
    testutil_write_text(bad, text);
    free(text);
    expect_load_refused(bad, "which base model");
    cJSON_Delete(doc);
}

#define BOTH(fn)                                                                                   \
    cmocka_unit_test_setup_teardown(fn, setup_demo, teardown),                                     \
        cmocka_unit_test_setup_teardown(fn, setup_stories, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_half_conversions_round_trip),
        BOTH(test_z_file_round_trips_the_description),
        BOTH(test_merged_f32_gives_the_adapted_logits_bit_for_bit),
        BOTH(test_merged_bf16_keeps_the_dtype_and_the_logits),
        BOTH(test_peft_full_rank_is_w_prime),
        BOTH(test_peft_rank_auto_keeps_the_score),
        BOTH(test_result_for_another_base_is_refused),
        BOTH(test_corrupt_results_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
