/*
 * zmix export: checks that a result belongs to the base model at hand, plans the update,
 * writes the chosen format and the report (zmix_export.json beside the files).
 */
#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "export_internal.h"
#include "util/file.h"
#include "zmix/version.h"

void zmix_export_opts_default(zmix_export_opts *opts)
{
    memset(opts, 0, sizeof *opts);
    opts->format = ZMIX_EXPORT_PEFT;
    opts->rank_mode = ZMIX_RANK_FULL;
    opts->energy = 1.0;
    opts->loglik_tol = 0.01;
    opts->n_threads = 1;
}

int zmix_rank_parse(const char *s, zmix_export_opts *opts, zmix_error *err)
{
    char *end;
    if (!strcmp(s, "full")) {
        opts->rank_mode = ZMIX_RANK_FULL;
        return 0;
    }
    if (!strcmp(s, "auto")) {
        opts->rank_mode = ZMIX_RANK_AUTO;
        return 0;
    }
    if (!strncmp(s, "energy:", 7)) {
        errno = 0;
        double x = strtod(s + 7, &end);
        if (errno || end == s + 7 || *end || !(x > 0.0 && x <= 1.0))
            return zmix_error_set(err, ZMIX_EINVAL,
                                  "--rank %s: the energy must be a fraction in (0, 1]", s);
        opts->rank_mode = ZMIX_RANK_ENERGY;
        opts->energy = x;
        return 0;
    }
    errno = 0;
    long r = strtol(s, &end, 10);
    if (errno || end == s || *end || r < 1 || r > (1L << 20))
        return zmix_error_set(err, ZMIX_EINVAL,
                              "--rank %s: expected a positive integer, full, auto or energy:X", s);
    opts->rank_mode = ZMIX_RANK_FIXED;
    opts->rank = (int)r;
    return 0;
}

void zmix_export_report_free(zmix_export_report *r)
{
    free(r->matrices);
    memset(r, 0, sizeof *r);
}

/* ---- Does the result belong here? ----------------------------------------------------- */

/* "llama, 5 layers, hidden 64, 8 heads (4 kv), vocab 512" for messages. */
static void arch_text(const zmix_model_config *c, char *buf, size_t size)
{
    if (!c->model_type[0]) {
        snprintf(buf, size, "architecture not recorded");
        return;
    }
    snprintf(buf, size, "%s, %d layers, hidden %d, intermediate %d, %d heads (%d kv), vocab %d",
             c->model_type, c->n_layers, c->dim, c->hidden_dim, c->n_heads, c->n_kv_heads,
             c->vocab_size);
}

static int find_matrix(const zmix_adapt_result *res, const char *name)
{
    for (int m = 0; m < res->n_matrices; m++)
        if (!strcmp(res->matrix_names[m], name)) return m;
    return -1;
}

int zmix_export_check_model(const zmix_model *model, const zmix_adapt_result *res, zmix_error *err)
{
    const char *fp = zmix_model_fingerprint(model);
    if (!strcmp(res->model_fingerprint, fp)) return 0;
    char want[160], have[160];
    arch_text(&res->model, want, sizeof want);
    arch_text(zmix_model_get_config(model), have, sizeof have);
    return zmix_error_set(err, ZMIX_ESTATE,
                          "the result was made for another base model: fingerprint %.16s… (%s), "
                          "but %s is %.16s… (%s)",
                          res->model_fingerprint, want,
                          model->source[0] ? model->source : "the model", fp, have);
}

int zmix_export_result_z(const zmix_runtime *rt, const zmix_adapt_result *res, float **z_out,
                         zmix_error *err)
{
    *z_out = NULL;
    int rc0 = zmix_export_check_model(zmix_runtime_model(rt), res, err);
    if (rc0) return rc0;
    if (res->adapt != zmix_runtime_adapt_set(rt))
        return zmix_error_set(
            err, ZMIX_ESTATE, "the result adapts the %s matrices; the runtime was built for %s",
            zmix_adapt_set_name(res->adapt), zmix_adapt_set_name(zmix_runtime_adapt_set(rt)));
    int M = zmix_runtime_n_matrices(rt);
    if (res->n_matrices != M)
        return zmix_error_set(err, ZMIX_EFORMAT, "the result lists %d matrices; the model has %d",
                              res->n_matrices, M);
    size_t total = zmix_runtime_z_total(rt);
    float *z = malloc((total ? total : 1) * sizeof *z);
    if (!z) return zmix_error_set(err, ZMIX_ENOMEM, "export: out of memory for z'");
    if (!res->z) {
        /* Only α: compose z' with the experts it was made with, and no others. */
        char digest[65];
        zmix_adapt_experts_digest(rt, digest);
        int rc = 0;
        if (zmix_runtime_n_experts(rt) == 0)
            rc = zmix_error_set(err, ZMIX_EINVAL,
                                "the result holds α but not z' (written without --include-z): "
                                "give the experts it was made with (--experts), or use a z' file");
        else if (strcmp(digest, res->experts_digest))
            rc = zmix_error_set(err, ZMIX_ESTATE,
                                "the experts given are not the ones the result was made with "
                                "(experts digest %.16s…, the result's %.16s…)",
                                digest, res->experts_digest);
        else if ((size_t)res->dim != (size_t)res->n_experts * (res->per_layer ? (size_t)M : 1))
            rc = zmix_error_set(err, ZMIX_EFORMAT, "the result's α has %d entries, not %s",
                                res->dim, res->per_layer ? "M·K" : "K");
        for (int i = 0; !rc && i < res->dim; i++)
            if (!isfinite(res->alpha[i]))
                rc = zmix_error_set(err, ZMIX_EFORMAT,
                                    "the result's α[%d] is not a number (no generation finished?)",
                                    i);
        zmix_compose_opts copts;
        zmix_compose_opts_default(&copts);
        copts.per_layer = res->per_layer;
        copts.normalize = 0; /* the α reported is the α scored (cem.md) */
        if (!rc) rc = zmix_compose_z(rt, &copts, res->alpha, z, err);
        if (rc) {
            free(z);
            return rc;
        }
        *z_out = z;
        return 0;
    }
    for (int m = 0; m < M; m++) {
        const char *name = zmix_runtime_matrix_name(rt, m);
        int at = find_matrix(res, name), r = zmix_runtime_matrix_rank(rt, m);
        if (at < 0 || res->matrix_ranks[at] != r) {
            free(z);
            return at < 0 ? zmix_error_set(err, ZMIX_EFORMAT, "the result has no z' for %s", name)
                          : zmix_error_set(err, ZMIX_EFORMAT,
                                           "the result's z' of %s has %d values; its rank is %d",
                                           name, res->matrix_ranks[at], r);
        }
        size_t off = 0;
        for (int j = 0; j < at; j++) off += (size_t)res->matrix_ranks[j];
        memcpy(z + zmix_runtime_z_offset(rt, m), res->z + off, (size_t)r * sizeof *z);
    }
    *z_out = z;
    return 0;
}

/* ---- Report ------------------------------------------------------------------------- */

static cJSON *num(double v)
{
    if (!isfinite(v)) return cJSON_CreateNull();
    char buf[32];
    snprintf(buf, sizeof buf, "%.9g", v);
    return cJSON_CreateRaw(buf);
}

static cJSON *score_obj(const zmix_score *s)
{
    cJSON *o = cJSON_CreateObject();
    if (o) {
        cJSON_AddItemToObject(o, "accuracy", num(s->accuracy));
        cJSON_AddItemToObject(o, "loglik", num(s->loglik));
    }
    return o;
}

cJSON *zmix_export_report_json(const zmix_export_report *r, const zmix_adapt_result *res)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddStringToObject(o, "format", "zmix.export_report");
    cJSON_AddStringToObject(o, "zmix_version", ZMIX_VERSION_STRING);
    cJSON_AddStringToObject(o, "export", r->format == ZMIX_EXPORT_MERGED ? "merged" : "peft");
    if (res) {
        cJSON_AddStringToObject(o, "model_fingerprint", res->model_fingerprint);
        cJSON_AddStringToObject(o, "key", res->key);
        cJSON_AddStringToObject(o, "adapt", zmix_adapt_set_name(res->adapt));
        cJSON_AddBoolToObject(o, "rescale", res->rescale);
    }
    cJSON_AddNumberToObject(o, "total_rank", (double)r->total_rank);
    cJSON_AddItemToObject(o, "rel_error", num(r->rel_error));
    cJSON_AddNumberToObject(o, "bytes", (double)r->bytes);
    if (r->scored) {
        cJSON *s = cJSON_AddObjectToObject(o, "scores");
        if (s) {
            cJSON_AddItemToObject(s, "base", score_obj(&r->base));
            cJSON_AddItemToObject(s, "exact", score_obj(&r->exact));
            cJSON_AddItemToObject(s, "export", score_obj(&r->export));
        }
    }
    if (isfinite(r->loglik_tol)) {
        cJSON_AddItemToObject(o, "loglik_tol", num(r->loglik_tol));
        cJSON_AddNumberToObject(o, "auto_evaluations", r->auto_evaluations);
    }
    cJSON *mats = cJSON_AddArrayToObject(o, "matrices");
    for (int m = 0; mats && m < r->n_matrices; m++) {
        const zmix_export_matrix *x = &r->matrices[m];
        cJSON *e = cJSON_CreateObject();
        if (!e) break;
        cJSON_AddStringToObject(e, "name", x->name);
        cJSON_AddNumberToObject(e, "rows", x->rows);
        cJSON_AddNumberToObject(e, "cols", x->cols);
        cJSON_AddNumberToObject(e, "full_rank", x->full_rank);
        cJSON_AddNumberToObject(e, "rank", x->rank);
        cJSON_AddItemToObject(e, "delta_norm", num(x->delta_norm));
        cJSON_AddItemToObject(e, "rel_error", num(x->rel_error));
        cJSON_AddNumberToObject(e, "bytes", (double)x->bytes);
        cJSON_AddItemToArray(mats, e);
    }
    return o;
}

int export_provenance_meta(const zmix_adapt_result *res, const char **keys, const char **values,
                           int max)
{
    const char *k[] = {"zmix_version", "zmix_model_fingerprint", "zmix_key", "zmix_adapt",
                       "zmix_rescale"};
    const char *v[] = {ZMIX_VERSION_STRING, res->model_fingerprint, res->key,
                       zmix_adapt_set_name(res->adapt), res->rescale ? "true" : "false"};
    int n = (int)(sizeof k / sizeof k[0]);
    if (n > max) n = max;
    for (int i = 0; i < n; i++) keys[i] = k[i], values[i] = v[i];
    return n;
}

/* ---- Running ------------------------------------------------------------------------ */

static int write_report(const char *dir, const zmix_export_report *r, const zmix_adapt_result *res,
                        zmix_error *err)
{
    cJSON *json = zmix_export_report_json(r, res);
    char *text = json ? cJSON_Print(json) : NULL;
    cJSON_Delete(json);
    char path[4096];
    int rc = text ? 0 : zmix_error_set(err, ZMIX_ENOMEM, "export: out of memory for the report");
    if (!rc && snprintf(path, sizeof path, "%s/zmix_export.json", dir) >= (int)sizeof path)
        rc = zmix_error_set(err, ZMIX_ELIMIT, "export: output path too long");
    if (!rc) {
        fs_piece pieces[2] = {{text, strlen(text)}, {"\n", 1}};
        fs_write_opts wo = {.mode = 0644};
        rc = fs_write_atomic(path, pieces, 2, &wo, err);
    }
    free(text);
    return rc;
}

int zmix_export_run(const zmix_runtime *rt, const zmix_adapt_result *res,
                    const zmix_export_opts *opts, const char *out_dir, zmix_export_report *report,
                    zmix_error *err)
{
    memset(report, 0, sizeof *report);
    report->format = opts->format;
    report->loglik_tol = NAN;
    if (opts->format != ZMIX_EXPORT_PEFT && opts->format != ZMIX_EXPORT_MERGED)
        return zmix_error_set(err, ZMIX_EINVAL, "export: unknown format %d", (int)opts->format);
    if (opts->examples) {
        int rc = zmix_examples_check(zmix_runtime_model(rt), opts->examples, err);
        if (rc) return rc;
        /* The merged model is scored from its files, one full-position pass per example,
         * which knows exact match only. */
        if (zmix_examples_are_choice(opts->examples))
            return zmix_error_set(err, ZMIX_EINVAL,
                                  "export: the examples are multiple choice; export scores the "
                                  "adapter on exact-match examples (prompt, target) only");
    }
    float *z;
    int rc = zmix_export_result_z(rt, res, &z, err);
    if (rc) return rc;
    export_plan plan;
    rc = export_plan_init(&plan, rt, res, z, err);
    if (rc) {
        free(z);
        return rc;
    }
    report->n_matrices = plan.n;
    report->matrices = calloc((size_t)(plan.n ? plan.n : 1), sizeof *report->matrices);
    if (!report->matrices) rc = zmix_error_set(err, ZMIX_ENOMEM, "export: out of memory");
    if (!rc) rc = export_choose_ranks(&plan, opts, report, err);
    struct stat st;
    if (!rc && stat(out_dir, &st) != 0) {
        /* A new directory is for servers to read: 0755, not the 0700 of zmix's own stores. */
        rc = fs_mkdirs(out_dir, err);
        if (!rc && chmod(out_dir, 0755))
            rc = zmix_error_set(err, ZMIX_EIO, "%s: chmod: %s", out_dir, strerror(errno));
    }
    if (!rc) {
        double kept = 0.0, total = 0.0;
        for (int m = 0; m < plan.n; m++) {
            const export_delta *e = &plan.m[m];
            zmix_export_matrix *x = &report->matrices[m];
            snprintf(x->name, sizeof x->name, "%s", e->a->name);
            x->rows = e->a->rows;
            x->cols = e->a->cols;
            x->full_rank = e->a->rank;
            x->rank = opts->format == ZMIX_EXPORT_MERGED ? e->a->rank : e->rank;
            x->delta_norm = sqrt(e->kept[e->a->rank]);
            x->rel_error = opts->format == ZMIX_EXPORT_MERGED ? 0.0 : export_delta_rel_error(e);
            report->total_rank += x->rank;
            total += e->kept[e->a->rank];
            kept += e->kept[x->rank];
        }
        report->rel_error = total > 0.0 && total > kept ? sqrt((total - kept) / total) : 0.0;
        rc = opts->format == ZMIX_EXPORT_PEFT
                 ? export_write_peft(&plan, opts, out_dir, report, err)
                 : export_write_merged(&plan, opts, out_dir, report, err);
    }
    if (!rc && opts->format == ZMIX_EXPORT_MERGED && opts->examples) {
        /* The merged model's score is that of the files as written, loaded back as a plain
         * model: it checks the writing as much as the composition. */
        zmix_model *merged = NULL;
        rc = zmix_model_load(out_dir, &merged, err);
        if (!rc) rc = export_score_model(merged, opts->examples, &report->export, err);
        if (rc) zmix_error_prefix(err, "scoring the merged model in %s", out_dir);
        zmix_model_free(merged);
    }
    if (!rc) rc = write_report(out_dir, report, res, err);
    export_plan_free(&plan);
    free(z);
    if (rc) zmix_export_report_free(report);
    return rc;
}
