/*
 * zmix adapt: the whole CEM adaptation search in-process, result as JSON.
 *
 * Settings are checked before the model is loaded, so a typo costs nothing; every error is
 * one line on stderr naming the option or file, with exit code 2 for usage errors and 1 for
 * everything else. Progress (one line per generation) goes to stderr, the result to stdout
 * or --out.
 */
#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapt/cem_options.h"
#include "commands.h"
#include "out_file.h"
#include "util/file.h"
#include "zmix/adapt.h"

#define MAX_EXPERTS 64

static void usage(FILE *out)
{
    fprintf(out,
            "usage: zmix adapt --model PATH --experts A.st,B.st,... --examples EX.json [options]\n"
            "\n"
            "Searches mixing coefficients α over the experts with CEM and prints the result as\n"
            "JSON (format: docs/cem.md). --examples - reads the examples from standard input.\n"
            "\n");
    cem_options_print_help(out);
    fprintf(out, "  --stream S           PCG stream id (default: 0)\n"
                 "  --adapt SET          mlp (default), attn or all\n"
                 "  --factor-cache DIR   cache the SVD factors in DIR\n"
                 "  --factor-dtype T     U and Vt of the factors: auto (F16 for 16-bit\n"
                 "                       models, else F32), f32, f16, bf16\n"
                 "  --wprime MODE        auto (the expert matrices when they fit) or\n"
                 "                       factored (none: less memory, slower on long sets)\n"
                 "  --memory-limit N     refuse a model whose memory plan exceeds N bytes\n"
                 "                       (K/M/G suffixes; default: MemAvailable)\n"
                 "  --threads N          scoring threads (default: 1)\n"
                 "  --include-z          add the composed z' per matrix to the result\n"
                 "  --quiet              no progress lines\n"
                 "  --out FILE           write the result to FILE instead of stdout (-: stdout)\n"
                 "  --z-out FILE         also write z' as a safetensors file that describes\n"
                 "                       itself (docs/results.md); zmix export reads either\n"
                 "                       (-: stdout, with --out FILE for the result)\n"
                 "  --warm-start FILE    begin the search at the alpha of an earlier result\n"
                 "                       (--out or --z-out of zmix adapt, zmix get --out) made\n"
                 "                       for this model and these experts; spread a quarter\n"
                 "                       of the bounds unless --init-std (docs/cem.md)\n");
}

static int parse_u64(const char *opt, const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-') {
        fprintf(stderr, "zmix adapt: %s: '%s' is not an unsigned integer\n", opt, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_threads(const char *opt, const char *s, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < 1 || v > 1024) {
        fprintf(stderr, "zmix adapt: %s: '%s' is not an integer in [1, 1024]\n", opt, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

/* A byte count with an optional K, M or G (binary) suffix. */
static int parse_bytes(const char *opt, const char *s, size_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    int shift = *end == 'K' ? 10 : *end == 'M' ? 20 : *end == 'G' ? 30 : 0;
    if (shift) end++;
    if (errno || end == s || *end || s[0] == '-' || v == 0 || v > (~0ull >> (shift + 1))) {
        fprintf(stderr, "zmix adapt: %s: '%s' is not a positive byte count (K/M/G suffixes)\n", opt,
                s);
        return -1;
    }
    *out = (size_t)(v << shift);
    return 0;
}

int cli_split_list(const char *cmd, const char *opt, char *s, char **items, int max, int *n)
{
    *n = 0;
    for (char *p = s;;) {
        char *comma = strchr(p, ',');
        if (comma) *comma = '\0';
        if (!*p) {
            fprintf(stderr, "zmix %s: %s: empty entry in '%s'\n", cmd, opt, s);
            return -1;
        }
        if (*n == max) {
            fprintf(stderr, "zmix %s: %s: more than %d entries\n", cmd, opt, max);
            return -1;
        }
        items[(*n)++] = p;
        if (!comma) return 0;
        p = comma + 1;
    }
}

typedef struct progress_ctx {
    int quiet;
    int max_generations;
    int choice; /* the examples are multiple choice */
} progress_ctx;

static int print_progress(void *user, const zmix_session *ses)
{
    const progress_ctx *ctx = user;
    if (ctx->quiet) return 0;
    const zmix_cem *cem = zmix_session_cem(ses); /* the current stage's engine */
    int g = zmix_cem_history_len(cem);
    const zmix_cem_gen_stats *h = &zmix_cem_history(cem)[g - 1];
    /* For multiple choice the second number is the answer's margin. */
    const char *second = ctx->choice ? "margin" : "loglik";
    fprintf(stderr,
            "generation %d/%d: best acc %.4f %s %.5f | elites acc %.4f %s %.5f | pop acc "
            "%.4f | mean std %.4g\n",
            zmix_session_generation(ses), ctx->max_generations, h->best.accuracy, second,
            h->best.loglik, h->elite_mean.accuracy, second, h->elite_mean.loglik,
            h->pop_mean.accuracy, h->mean_std);
    return 0;
}

static int write_text(const char *path, const char *text)
{
    fs_piece pieces[2] = {{text, strlen(text)}, {"\n", 1}};
    fs_write_opts wo = {.mode = 0644};
    zmix_error err;
    if (fs_write_atomic(path, pieces, 2, &wo, &err)) {
        fprintf(stderr, "zmix adapt: %s\n", err.msg);
        return -1;
    }
    return 0;
}

int cmd_adapt(int argc, char **argv)
{
    const char *model_path = NULL, *examples_path = NULL, *out_path = NULL, *cache_dir = NULL;
    const char *z_out_path = NULL, *warm_path = NULL;
    double *warm_mean = NULL;
    char *experts_arg = NULL;
    zmix_adapt_opts opts;
    zmix_adapt_opts_default(&opts);
    zmix_adapt_set set = ZMIX_ADAPT_MLP;
    zmix_factor_dtype factor_dtype = ZMIX_FACTORS_AUTO;
    zmix_wprime_keep wprime = ZMIX_WPRIME_KEEP_AUTO;
    size_t memory_limit = 0;
    int include_z = 0;
    progress_ctx pctx = {0};
    zmix_error err;
    zmix_error_clear(&err);

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        /* The search settings: one table for zmix adapt, zmix submit and the daemon. */
        const cem_option *copt = cem_option_by_flag(a);
        if (copt) {
            const char *val = NULL;
            if (copt->metavar && i + 1 >= argc) {
                fprintf(stderr, "zmix adapt: %s needs a value (try --help)\n", a);
                return 2;
            }
            if (copt->metavar) val = argv[++i];
            if (cem_option_apply_arg(copt, val, &opts, &err)) {
                fprintf(stderr, "zmix adapt: %s\n", err.msg);
                return 2;
            }
            continue;
        }
        if (!strcmp(a, "--include-z")) {
            include_z = 1;
            continue;
        }
        if (!strcmp(a, "--quiet")) {
            pctx.quiet = 1;
            continue;
        }
        if (strncmp(a, "--", 2) != 0) {
            fprintf(stderr, "zmix adapt: unexpected argument '%s' (try --help)\n", a);
            return 2;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "zmix adapt: %s needs a value (try --help)\n", a);
            return 2;
        }
        const char *val = argv[++i];
        int bad = 0;
        if (!strcmp(a, "--model"))
            model_path = val;
        else if (!strcmp(a, "--experts"))
            experts_arg = (char *)val;
        else if (!strcmp(a, "--examples"))
            examples_path = val;
        else if (!strcmp(a, "--out"))
            out_path = val;
        else if (!strcmp(a, "--z-out"))
            z_out_path = val;
        else if (!strcmp(a, "--warm-start"))
            warm_path = val;
        else if (!strcmp(a, "--factor-cache"))
            cache_dir = val;
        else if (!strcmp(a, "--memory-limit"))
            bad = parse_bytes(a, val, &memory_limit);
        else if (!strcmp(a, "--factor-dtype")) {
            if (zmix_factor_dtype_parse(val, &factor_dtype, &err)) {
                fprintf(stderr, "zmix adapt: --factor-dtype: %s\n", err.msg);
                return 2;
            }
        } else if (!strcmp(a, "--wprime")) {
            if (zmix_wprime_keep_parse(val, &wprime, &err)) {
                fprintf(stderr, "zmix adapt: --wprime: %s\n", err.msg);
                return 2;
            }
        } else if (!strcmp(a, "--threads"))
            bad = parse_threads(a, val, &opts.n_threads);
        else if (!strcmp(a, "--stream"))
            bad = parse_u64(a, val, &opts.cem.stream);
        else if (!strcmp(a, "--adapt")) {
            if (zmix_adapt_set_parse(val, &set, &err)) {
                fprintf(stderr, "zmix adapt: --adapt: %s\n", err.msg);
                return 2;
            }
        } else {
            fprintf(stderr, "zmix adapt: unknown option '%s' (try --help)\n", a);
            return 2;
        }
        if (bad) return 2;
    }
    if (!model_path || !experts_arg || !examples_path) {
        fprintf(stderr, "zmix adapt: --model, --experts and --examples are required (try "
                        "--help)\n");
        return 2;
    }
    if (out_file_is_stdout(out_path)) out_path = NULL; /* the result JSON on stdout */
    if (out_file_is_stdout(z_out_path) && !out_path) {
        fprintf(stderr, "zmix adapt: --z-out -: standard output already carries the result "
                        "JSON; give --out FILE for it\n");
        return 2;
    }
    char *experts_copy = strdup(experts_arg);
    char *expert_paths[MAX_EXPERTS];
    int n_experts = 0;
    if (!experts_copy) return 1;
    if (cli_split_list("adapt", "--experts", experts_copy, expert_paths, MAX_EXPERTS, &n_experts)) {
        free(experts_copy);
        return 2;
    }
    /* Settings first: the search dimension is not known before the model is loaded, but
     * every other setting can be judged now with dim = K. */
    zmix_cem_settings probe = opts.cem;
    probe.dim = probe.n_experts = n_experts;
    if (zmix_cem_settings_check(&probe, &err)) {
        fprintf(stderr, "zmix adapt: %s\n", err.msg);
        free(experts_copy);
        return 2;
    }

    int rc = 1;
    zmix_model *model = NULL;
    zmix_runtime *rt = NULL;
    zmix_examples ex;
    memset(&ex, 0, sizeof ex);
    int have_ex = 0;
    zmix_adapt_result res;
    memset(&res, 0, sizeof res);
    int have_res = 0;
    char *text = NULL;

    /* The memory plan, before anything is loaded (docs/model-formats.md). */
    zmix_memory_settings ms;
    zmix_memory_settings_default(&ms);
    ms.adapt = set;
    ms.factor_dtype = factor_dtype;
    ms.n_experts = n_experts;
    ms.workers = opts.n_threads;
    ms.workers_option = "--threads";
    ms.factor_option = "--factor-dtype";
    ms.limit_option = "--memory-limit";
    ms.wprime = wprime;
    ms.wprime_option = "--wprime";
    ms.factor_cache = cache_dir != NULL;
    char plan[1024];
    int plan_rc = zmix_memory_preflight(model_path, &ms, memory_limit, plan, sizeof plan, &err);
    if (!pctx.quiet && plan[0]) fprintf(stderr, "%s\n", plan);
    if (plan_rc) goto fail;
    if (zmix_model_load(model_path, &model, &err)) goto fail;
    /* After the model: text examples are encoded with its tokenizer. */
    if (zmix_examples_load_json_tok(examples_path, zmix_model_tokenizer(model), &ex, &err))
        goto fail;
    have_ex = 1;
    if (zmix_examples_check(model, &ex, &err)) {
        zmix_error_prefix(&err, "%s",
                          out_file_is_stdout(examples_path) ? "standard input" : examples_path);
        goto fail;
    }
    zmix_runtime_opts ropts;
    zmix_runtime_opts_default(&ropts);
    ropts.adapt = set;
    ropts.factor_cache_dir = cache_dir;
    ropts.factor_dtype = factor_dtype;
    ropts.wprime = wprime;
    if (zmix_runtime_create(model, &ropts, (const char *const *)expert_paths, n_experts, &rt, &err))
        goto fail;
    if (warm_path) {
        /* Begin where an earlier result ended (docs/cem.md, "Warm start"). */
        zmix_adapt_result from;
        if (zmix_adapt_result_load(warm_path, &from, &err)) goto fail;
        char experts_now[65];
        zmix_adapt_experts_digest(rt, experts_now);
        int wrc =
            zmix_adapt_warm_mean(rt, experts_now, &opts, from.alpha, from.dim,
                                 from.model_fingerprint, from.experts_digest, &warm_mean, &err);
        zmix_adapt_result_free(&from);
        if (wrc) {
            zmix_error_prefix(&err, "--warm-start %s", warm_path);
            goto fail;
        }
        opts.cem.init_mean = warm_mean;
        snprintf(opts.warm_from, sizeof opts.warm_from, "%s", warm_path);
    }
    pctx.max_generations = opts.cem.max_generations;
    pctx.choice = zmix_examples_are_choice(&ex);
    if (zmix_adapt_run(rt, &ex, &opts, print_progress, &pctx, &res, &err)) goto fail;
    have_res = 1;
    if (!pctx.quiet)
        fprintf(stderr, "stopped: %s after %d generations (%ld evaluations, %ld skipped, %.2f s)\n",
                zmix_cem_stop_name(res.stop), res.generations, res.evaluations, res.skipped,
                res.elapsed_s);
    if (!pctx.quiet && res.have_validation)
        fprintf(stderr, "held out: %d examples, accuracy %.3f [%.3f, %.3f] (base model %.3f)\n",
                res.n_validation, res.val_best.accuracy, res.val_acc_lo, res.val_acc_hi,
                res.val_base.accuracy);
    /* Warnings are printed even with --quiet: they say when the result should not be trusted. */
    for (int i = 0; i < res.n_warnings; i++) fprintf(stderr, "warning: %s\n", res.warnings[i]);
    cJSON *json = zmix_adapt_result_to_json(&res, include_z);
    text = json ? cJSON_Print(json) : NULL;
    cJSON_Delete(json);
    if (!text) {
        zmix_error_set(&err, ZMIX_ENOMEM, "out of memory for the result JSON");
        goto fail;
    }
    if (out_path) {
        if (write_text(out_path, text)) goto done;
    } else {
        printf("%s\n", text);
    }
    if (z_out_path) {
        out_file zf;
        if (out_file_begin(&zf, "adapt", z_out_path)) goto done;
        int zrc = zmix_adapt_result_save_z(&res, NULL, zf.write, &err);
        if (out_file_finish(&zf, "adapt", zrc == 0) && zrc == 0) goto done;
        if (zrc) goto fail;
    }
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "zmix adapt: %s\n", err.msg);
done:
    free(text);
    if (have_res) zmix_adapt_result_free(&res);
    if (rt) zmix_runtime_free(rt);
    if (model) zmix_model_free(model);
    if (have_ex) zmix_examples_free(&ex);
    free(experts_copy);
    free(warm_mean);
    return rc;
}
