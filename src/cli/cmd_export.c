/*
 * zmix export: an adaptation as a LoRA adapter in PEFT's layout or as a merged Hugging Face
 * model (include/zmix/export.h, docs/serving.md), from a result file or from a daemon task.
 *
 * The base model is always loaded here: the adapter is computed from its SVD factors, and the
 * merged model copies its directory. Errors are one line on stderr; exit code 2 for usage, 1
 * for everything else (a result made for another model included).
 */
#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "daemon_conn.h"
#include "task_result.h"
#include "zmix/export.h"

#define MAX_EXPERTS 64

static const char usage_text[] =
    "usage: zmix export --model PATH --result FILE --format peft|merged --out DIR [options]\n"
    "       zmix export TASK --format peft|merged --out DIR [--model PATH] [options]\n"
    "\n"
    "Writes an adaptation in a format serving systems load (docs/serving.md): a LoRA adapter\n"
    "in PEFT's layout (adapter_config.json, adapter_model.safetensors), or the base model's\n"
    "Hugging Face directory with W' written in. FILE is what zmix adapt --out / --z-out or\n"
    "zmix get --out / --result wrote; TASK is a task cached by the daemon (its model path\n"
    "comes from the daemon unless --model is given). A result made for another base model is\n"
    "refused. A report (zmix_export.json) is written beside the files.\n"
    "\n"
    "  --format F           peft or merged\n"
    "  --out DIR            output directory (created if missing)\n"
    "  --model PATH         the base model (a Hugging Face directory)\n"
    "  --result FILE        the result (JSON document or z' safetensors)\n"
    "  --rank R             peft: full (default), N, energy:X (keep a fraction X of each\n"
    "                       ||dW||^2), or auto (the smallest rank per matrix that keeps the\n"
    "                       exact W' accuracy and log-likelihood on --examples)\n"
    "  --examples EX.json   score the export beside the exact W' (needed by --rank auto)\n"
    "  --tolerance X        --rank auto: allowed log-likelihood change (default 0.01)\n"
    "  --uniform-rank       every matrix at the largest rank chosen (llama.cpp needs one rank)\n"
    "  --experts A,B,...    the experts, for a result document without z'\n"
    "  --factor-cache DIR   cache the SVD factors in DIR\n"
    "  --threads N          scoring threads (default 1)\n"
    "  --quiet              no report on stdout\n"
    "  --socket/--connect/--token-file   the daemon, for TASK (default: $ZMIX_ADDR, else\n"
    "                       the default socket; the token from $ZMIX_TOKEN_FILE)\n"
    "  --json               print the report as JSON\n";

typedef struct export_args {
    const char *model, *result, *out, *examples, *experts, *factor_cache, *task;
    int quiet, have_format;
    zmix_export_opts opts;
    daemon_opts conn;
} export_args;

/* Prints "zmix export: <what><detail> (try --help)" and returns the usage exit code. */
static int usage_error(const char *what, const char *detail)
{
    fprintf(stderr, "zmix export: %s%s (try --help)\n", what, detail);
    return 2;
}

static int parse_positive(const char *opt, const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "zmix export: %s: '%s' is not a number in [%g, %g]\n", opt, s, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

/* 0 parsed, -1 --help printed, else the exit code of a usage error. */
static int parse(export_args *x, int argc, char **argv)
{
    zmix_error err;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(usage_text, stdout);
            return -1;
        }
        int r = daemon_opts_parse(&x->conn, argc, argv, &i);
        if (r < 0) return 2;
        if (r > 0) continue;
        if (!strcmp(a, "--quiet")) {
            x->quiet = 1;
            continue;
        }
        if (!strcmp(a, "--uniform-rank")) {
            x->opts.uniform_rank = 1;
            continue;
        }
        if (strncmp(a, "--", 2)) {
            if (x->task) return usage_error("unexpected argument: ", a);
            x->task = a;
            continue;
        }
        if (i + 1 >= argc) return usage_error("this option needs a value: ", a);
        const char *v = argv[++i];
        double d;
        if (!strcmp(a, "--model"))
            x->model = v;
        else if (!strcmp(a, "--result"))
            x->result = v;
        else if (!strcmp(a, "--out"))
            x->out = v;
        else if (!strcmp(a, "--examples"))
            x->examples = v;
        else if (!strcmp(a, "--experts"))
            x->experts = v;
        else if (!strcmp(a, "--factor-cache"))
            x->factor_cache = v;
        else if (!strcmp(a, "--format")) {
            if (strcmp(v, "peft") && strcmp(v, "merged"))
                return usage_error("--format: expected peft or merged, not ", v);
            x->opts.format = strcmp(v, "peft") ? ZMIX_EXPORT_MERGED : ZMIX_EXPORT_PEFT;
            x->have_format = 1;
        } else if (!strcmp(a, "--rank")) {
            if (zmix_rank_parse(v, &x->opts, &err)) return usage_error("", err.msg);
        } else if (!strcmp(a, "--tolerance")) {
            if (parse_positive(a, v, 0.0, 1e6, &x->opts.loglik_tol)) return 2;
        } else if (!strcmp(a, "--threads")) {
            if (parse_positive(a, v, 1, 1024, &d)) return 2;
            x->opts.n_threads = (int)d;
        } else {
            return usage_error("unknown option: ", a);
        }
    }
    if (!x->have_format || !x->out) return usage_error("--format and --out are required", "");
    if (!strcmp(x->out, "-"))
        return usage_error("--out names a directory; '-' (standard output) cannot hold one", "");
    if (!x->task == !x->result)
        return usage_error("give either --result FILE or a daemon TASK", "");
    if (!x->task && !x->model) return usage_error("--model is required with --result", "");
    if (x->opts.format == ZMIX_EXPORT_MERGED && x->opts.rank_mode != ZMIX_RANK_FULL)
        return usage_error("--rank applies to --format peft only", "");
    if (x->opts.rank_mode == ZMIX_RANK_AUTO && !x->examples)
        return usage_error("--rank auto needs --examples (the task's examples)", "");
    return 0;
}

/* The task's result from the daemon, and its model path when none was given. */
static int fetch_task(export_args *x, zmix_adapt_result *res, char *model_path, size_t size)
{
    zmix_client *c;
    int rc = daemon_connect(&x->conn, &c);
    if (rc) return rc;
    zmix_error err;
    zmix_error_clear(&err);
    zmix_client_result r;
    rc = zmix_client_get(c, x->task, 1, &r, &err);
    if (rc) {
        rc = daemon_fail(&x->conn, c, &err);
        zmix_client_close(c);
        return rc;
    }
    rc = task_result_from_daemon(c, &r, res, &err);
    zmix_client_result_free(&r);
    if (rc == ZMIX_ENOTFOUND)
        zmix_error_set(&err, rc,
                       "task %s has no result document (made by an older daemon): it does "
                       "not say which base model it is for; submit it again with --recompute",
                       x->task);
    if (!rc && !x->model) {
        zmix_client_info info;
        if ((rc = zmix_client_info_get(c, &info, &err)) == 0) {
            snprintf(model_path, size, "%s", info.model_path);
            zmix_client_info_free(&info);
        }
    }
    zmix_client_close(c);
    if (rc) {
        fprintf(stderr, "zmix export: %s\n", err.msg);
        return 1;
    }
    return 0;
}

static void print_score(const char *what, const zmix_score *s)
{
    printf("  %-24s %8.4f %12.6f\n", what, s->accuracy, s->loglik);
}

static void print_report(const export_args *x, const zmix_export_report *r)
{
    int peft = r->format == ZMIX_EXPORT_PEFT;
    printf("%-44s %6s %6s %10s %12s\n", "matrix", "rank", "of", "rel.err", "bytes");
    size_t payload = 0;
    long full = 0;
    for (int m = 0; m < r->n_matrices; m++) {
        const zmix_export_matrix *e = &r->matrices[m];
        printf("%-44s %6d %6d %10.3g %12zu\n", e->name, e->rank, e->full_rank, e->rel_error,
               e->bytes);
        payload += e->bytes;
        full += e->full_rank;
    }
    printf("total: rank %ld of %ld, relative Frobenius error of dW %.3g, %s %zu bytes (%zu "
           "bytes written)\n",
           r->total_rank, full, r->rel_error, peft ? "adapter" : "W'", payload, r->bytes);
    if (r->scored) {
        printf("scores on %d examples:     accuracy       loglik\n", x->opts.examples->n);
        print_score("base model", &r->base);
        print_score("exact W'", &r->exact);
        print_score(peft ? "adapter (as written)" : "merged model (as read)", &r->export);
        if (isfinite(r->loglik_tol))
            printf("rank auto: the exact W''s accuracy, loglik within %g (%d evaluations)\n",
                   r->loglik_tol, r->auto_evaluations);
    }
    printf("wrote %s (%s, zmix_export.json)\n", x->out,
           peft ? "adapter_config.json, adapter_model.safetensors"
                : "the base model's files with W' written in");
}

int cmd_export(int argc, char **argv)
{
    export_args x;
    memset(&x, 0, sizeof x);
    x.conn.cmd = "export";
    zmix_export_opts_default(&x.opts);
    int prc = parse(&x, argc, argv);
    if (prc) return prc < 0 ? 0 : prc;

    zmix_error err;
    zmix_error_clear(&err);
    zmix_adapt_result res;
    memset(&res, 0, sizeof res);
    char daemon_model[4096] = "";
    int rc = 1, have_res = 0, have_ex = 0;
    zmix_model *model = NULL;
    zmix_runtime *rt = NULL;
    zmix_examples ex;
    memset(&ex, 0, sizeof ex);
    char *experts_copy = NULL;
    char *expert_paths[MAX_EXPERTS];
    int n_experts = 0;
    zmix_export_report report;
    memset(&report, 0, sizeof report);

    if (x.experts) {
        if (!(experts_copy = strdup(x.experts))) return 1;
        if (cli_split_list("export", "--experts", experts_copy, expert_paths, MAX_EXPERTS,
                           &n_experts)) {
            free(experts_copy);
            return 2;
        }
    }
    if (x.task) {
        if ((rc = fetch_task(&x, &res, daemon_model, sizeof daemon_model))) goto done;
        rc = 1;
    } else if (zmix_adapt_result_load(x.result, &res, &err)) {
        goto fail;
    }
    have_res = 1;
    const char *model_path = x.model ? x.model : daemon_model;
    x.opts.model_path = model_path;
    if (zmix_model_load(model_path, &model, &err)) goto fail;
    if (x.examples) {
        if (zmix_examples_load_json_tok(x.examples, zmix_model_tokenizer(model), &ex, &err))
            goto fail;
        have_ex = 1;
        x.opts.examples = &ex;
        char digest[65];
        zmix_adapt_examples_digest(&ex, digest);
        if (!x.quiet && res.examples_digest[0] && strcmp(digest, res.examples_digest))
            fprintf(stderr, "zmix export: note: %s are not the examples the search used\n",
                    x.examples);
    }
    zmix_runtime_opts ropts;
    zmix_runtime_opts_default(&ropts);
    ropts.adapt = res.adapt;
    ropts.factor_cache_dir = x.factor_cache;
    /* The fingerprint check comes before the (slow) factorisation: a wrong model costs
     * nothing. zmix_export_run checks it again, with everything else. */
    if (zmix_export_check_model(model, &res, &err)) goto fail;
    if (zmix_runtime_create(model, &ropts, (const char *const *)expert_paths, n_experts, &rt, &err))
        goto fail;
    if (zmix_export_run(rt, &res, &x.opts, x.out, &report, &err)) goto fail;
    if (x.conn.json) {
        cJSON *j = zmix_export_report_json(&report, &res);
        char *text = j ? cJSON_Print(j) : NULL;
        cJSON_Delete(j);
        if (text) printf("%s\n", text);
        free(text);
    } else if (!x.quiet) {
        print_report(&x, &report);
    }
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "zmix export: %s\n", err.msg);
done:
    zmix_export_report_free(&report);
    zmix_runtime_free(rt);
    zmix_model_free(model);
    if (have_ex) zmix_examples_free(&ex);
    if (have_res) zmix_adapt_result_free(&res);
    free(experts_copy);
    return rc;
}
