/*
 * Offline model commands: `zmix generate` (a continuation under the base model, an expert
 * mix or a result file's z', greedy or sampled, token ids or text) and `zmix score` (accuracy
 * and log-likelihood of an expert mix on a few-shot set, as JSON).
 * Both load the model and experts in-process; every bad argument or file ends the command
 * with exit code 2 (usage) or 1 (failure) and one line on stderr saying what was wrong.
 */
#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "daemon_conn.h"
#include "util/file.h"
#include "zmix/export.h"
#include "zmix/generate.h"
#include "zmix/model.h"

#define MAX_EXPERTS 64
/* An α file holds M·K numbers: 64 MiB is millions of them, and a guard against a wrong path. */
#define ALPHA_FILE_MAX ((size_t)64 << 20)

typedef struct model_args {
    const char *cmd;
    const char *model;
    const char *experts;    /* comma-separated paths */
    const char *alpha;      /* comma-separated numbers */
    const char *alpha_file; /* JSON, per adapted matrix */
    const char *adapt;
    const char *factor_cache;
    const char *prompt;
    const char *examples;
    int n_new;
    int threads;
    int rescale, normalize;
    zmix_choice_norm choice_norm;
    /* generate only */
    const char *result; /* --z: a result file (z' safetensors or result document) */
    const char *text;   /* --text: the prompt as text, through the model's tokenizer */
    const char *stop;   /* --stop: comma-separated ids */
    double temperature, top_p;
    uint64_t seed;
    int no_cache, ignore_eos, json;
    const char *task;          /* --task: generate through the daemon */
    daemon_opts conn;          /* --socket, --connect, --token-file (with --task) */
    const char *generate_only; /* the first generate-only option given (score refuses it) */
} model_args;

static int usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "zmix %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (try 'zmix %s --help')\n", cmd);
    va_end(ap);
    return 2;
}

static int fail(const char *cmd, const char *msg)
{
    fprintf(stderr, "zmix %s: %s\n", cmd, msg);
    return 1;
}

static int parse_int(const char *s, long lo, long hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return -1;
    *out = (int)v;
    return 0;
}

/* Splits a comma-separated list of integers ("1,2,3"). Returns the count, or -1. */
static int parse_ids(const char *s, int32_t **out)
{
    size_t cap = 1;
    for (const char *p = s; *p; p++) cap += *p == ',';
    int32_t *ids = malloc(cap * sizeof *ids);
    if (!ids) return -1;
    int n = 0;
    const char *p = s;
    for (;;) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (errno || end == p || v < 0 || v > INT32_MAX || (*end && *end != ',')) {
            free(ids);
            return -1;
        }
        ids[n++] = (int32_t)v;
        if (!*end) break;
        p = end + 1;
    }
    *out = ids;
    return n;
}

static int parse_floats(const char *s, float **out)
{
    size_t cap = 1;
    for (const char *p = s; *p; p++) cap += *p == ',';
    float *v = malloc(cap * sizeof *v);
    if (!v) return -1;
    int n = 0;
    const char *p = s;
    for (;;) {
        char *end;
        errno = 0;
        float x = strtof(p, &end);
        if (errno || end == p || !isfinite(x) || (*end && *end != ',')) {
            free(v);
            return -1;
        }
        v[n++] = x;
        if (!*end) break;
        p = end + 1;
    }
    *out = v;
    return n;
}

static int split_paths(char *s, const char **paths)
{
    int n = 0;
    for (char *tok = strtok(s, ","); tok; tok = strtok(NULL, ",")) {
        if (n == MAX_EXPERTS) return -1;
        paths[n++] = tok;
    }
    return n;
}

static int parse_number(const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) return -1;
    *out = v;
    return 0;
}

/* The options of generate alone: 1 when o is one (*bad: 0, or the exit code of a usage
 * error, printed), 0 when it is not. */
static int parse_generate_option(model_args *a, const char *o, const char *v, int *bad)
{
    *bad = 0;
    if (!strcmp(o, "--z"))
        a->result = v;
    else if (!strcmp(o, "--task"))
        a->task = v;
    else if (!strcmp(o, "--text"))
        a->text = v;
    else if (!strcmp(o, "--stop"))
        a->stop = v;
    else if (!strcmp(o, "--temperature")) {
        if (parse_number(v, 0.0, 100.0, &a->temperature))
            *bad = usage_error(a->cmd, "--temperature '%s' is not a number in [0, 100]", v);
    } else if (!strcmp(o, "--top-p")) {
        if (parse_number(v, 0.0, 1.0, &a->top_p) || a->top_p == 0.0)
            *bad = usage_error(a->cmd, "--top-p '%s' is not a number in (0, 1]", v);
    } else if (!strcmp(o, "--seed")) {
        char *end;
        errno = 0;
        unsigned long long seed = strtoull(v, &end, 10);
        if (errno || end == v || *end || *v == '-')
            *bad = usage_error(a->cmd, "--seed '%s' is not an integer in [0, 2^64)", v);
        a->seed = seed;
    } else {
        return 0;
    }
    if (!a->generate_only) a->generate_only = o;
    return 1;
}

/* Parses the options shared by generate and score. Returns 0, 2 (usage error, reported) or
 * -1 when --help was printed. */
static int parse_args(int argc, char **argv, model_args *a, void (*help)(void))
{
    int bad;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (a->conn.cmd && strcmp(o, "--json")) { /* generate: the daemon's options too */
            int r = daemon_opts_parse(&a->conn, argc, argv, &i);
            if (r < 0) return 2;
            if (r > 0) continue;
        }
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
            help();
            return -1;
        }
        if (!strcmp(o, "--no-rescale")) {
            a->rescale = 0;
            continue;
        }
        if (!strcmp(o, "--normalize")) {
            a->normalize = 1;
            continue;
        }
        int *flag = !strcmp(o, "--no-cache")     ? &a->no_cache
                    : !strcmp(o, "--ignore-eos") ? &a->ignore_eos
                    : !strcmp(o, "--json")       ? &a->json
                                                 : NULL;
        if (flag) {
            *flag = 1;
            if (!a->generate_only) a->generate_only = o;
            continue;
        }
        static const char *const with_value[] = {
            "--model",        "--experts",    "--alpha",    "--alpha-file", "--adapt",
            "--factor-cache", "--prompt",     "--examples", "-n",           "--new-tokens",
            "--threads",      "--max-tokens", "--z",        "--text",       "--stop",
            "--temperature",  "--top-p",      "--seed",     "--task",       "--choice-norm"};
        int known = 0;
        for (size_t j = 0; j < sizeof with_value / sizeof with_value[0]; j++)
            known |= !strcmp(o, with_value[j]);
        if (!known) return usage_error(a->cmd, "unknown option '%s'", o);
        if (i + 1 >= argc) return usage_error(a->cmd, "option '%s' needs a value", o);
        const char *v = argv[++i];
        if (!strcmp(o, "--model"))
            a->model = v;
        else if (!strcmp(o, "--experts"))
            a->experts = v;
        else if (!strcmp(o, "--alpha"))
            a->alpha = v;
        else if (!strcmp(o, "--alpha-file"))
            a->alpha_file = v;
        else if (!strcmp(o, "--adapt"))
            a->adapt = v;
        else if (!strcmp(o, "--factor-cache"))
            a->factor_cache = v;
        else if (!strcmp(o, "--prompt"))
            a->prompt = v;
        else if (!strcmp(o, "--examples"))
            a->examples = v;
        else if (!strcmp(o, "-n") || !strcmp(o, "--new-tokens") || !strcmp(o, "--max-tokens")) {
            if (parse_int(v, 1, 1 << 24, &a->n_new))
                return usage_error(a->cmd, "%s '%s' is not a token count (>= 1)", o, v);
        } else if (parse_generate_option(a, o, v, &bad)) {
            if (bad) return bad;
        } else if (!strcmp(o, "--choice-norm")) {
            if (strcmp(v, "token") && strcmp(v, "none"))
                return usage_error(a->cmd, "--choice-norm '%s' is not token or none", v);
            a->choice_norm = !strcmp(v, "none") ? ZMIX_CHOICE_SUM : ZMIX_CHOICE_PER_TOKEN;
        } else if (!strcmp(o, "--threads")) {
            if (parse_int(v, 1, 1024, &a->threads))
                return usage_error(a->cmd, "--threads '%s' is not in [1, 1024]", v);
        } else {
            return usage_error(a->cmd, "unknown option '%s'", o);
        }
    }
    if (a->task) {
        if (a->model || a->result || a->experts || a->no_cache)
            return usage_error(a->cmd, "%s",
                               "--task generates on the daemon's model: no --model, --z, "
                               "--experts or --no-cache");
        return 0;
    }
    if (!a->model) return usage_error(a->cmd, "%s", "--model PATH (or --task TASK) is required");
    if (a->alpha && a->alpha_file)
        return usage_error(a->cmd, "%s", "give --alpha or --alpha-file, not both");
    if ((a->alpha || a->alpha_file) && !a->experts)
        return usage_error(a->cmd, "%s", "--alpha needs --experts");
    if (a->result && (a->alpha || a->alpha_file))
        return usage_error(a->cmd, "%s", "give --z or --alpha/--alpha-file, not both");
    if (a->experts && !a->alpha && !a->alpha_file && !a->result)
        return usage_error(a->cmd, "%s", "--experts needs --alpha, --alpha-file or --z");
    return 0;
}

/* Reads a per-matrix α file: {"alpha": {"<matrix name>": [K numbers], ...}} naming every
 * adapted matrix once, or {"alpha": [M·K numbers]} in matrix order. */
static int load_alpha_file(const char *path, const zmix_runtime *rt, float *alpha, char *msg,
                           size_t msg_size)
{
    uint8_t *text;
    size_t len;
    zmix_error err;
    if (fs_read_file(path, ALPHA_FILE_MAX, &text, &len, &err) != 0)
        return snprintf(msg, msg_size, "%s", err.msg), -1;
    cJSON *root = cJSON_Parse((const char *)text);
    free(text);
    int M = zmix_runtime_n_matrices(rt), K = zmix_runtime_n_experts(rt), rc = 0;
    const cJSON *arr = root ? cJSON_GetObjectItemCaseSensitive(root, "alpha") : NULL;
    if (!root) {
        snprintf(msg, msg_size, "%s: malformed JSON", path);
        rc = -1;
    } else if (cJSON_IsArray(arr)) {
        if (cJSON_GetArraySize(arr) != M * K) {
            snprintf(msg, msg_size,
                     "%s: alpha has %d numbers, expected %d (%d matrices x %d "
                     "experts)",
                     path, cJSON_GetArraySize(arr), M * K, M, K);
            rc = -1;
        }
        int i = 0;
        for (const cJSON *v = arr->child; !rc && v; v = v->next, i++) {
            if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) {
                snprintf(msg, msg_size, "%s: alpha[%d] is not a finite number", path, i);
                rc = -1;
            } else
                alpha[i] = (float)v->valuedouble;
        }
    } else if (cJSON_IsObject(arr)) {
        char *seen = calloc((size_t)(M ? M : 1), 1);
        if (!seen) {
            snprintf(msg, msg_size, "%s: out of memory", path);
            rc = -1;
        }
        for (const cJSON *e = arr->child; !rc && e; e = e->next) {
            int m = 0;
            while (m < M && strcmp(zmix_runtime_matrix_name(rt, m), e->string)) m++;
            if (m == M) {
                snprintf(msg, msg_size, "%s: '%s' is not an adapted matrix", path, e->string);
                rc = -1;
            } else if (seen[m]) {
                snprintf(msg, msg_size, "%s: '%s' appears twice", path, e->string);
                rc = -1;
            } else if (!cJSON_IsArray(e) || cJSON_GetArraySize(e) != K) {
                snprintf(msg, msg_size, "%s: '%s' must be a list of %d numbers", path, e->string,
                         K);
                rc = -1;
            } else {
                int k = 0;
                for (const cJSON *v = e->child; !rc && v; v = v->next, k++) {
                    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) {
                        snprintf(msg, msg_size, "%s: '%s'[%d] is not a finite number", path,
                                 e->string, k);
                        rc = -1;
                    } else
                        alpha[(size_t)m * K + k] = (float)v->valuedouble;
                }
                seen[m] = 1;
            }
        }
        for (int m = 0; !rc && m < M; m++)
            if (!seen[m]) {
                snprintf(msg, msg_size,
                         "%s: no coefficients for '%s' (every adapted matrix "
                         "needs them)",
                         path, zmix_runtime_matrix_name(rt, m));
                rc = -1;
            }
        free(seen);
    } else {
        snprintf(msg, msg_size,
                 "%s: expected {\"alpha\": {matrix: [numbers]}} or "
                 "{\"alpha\": [numbers]}",
                 path);
        rc = -1;
    }
    cJSON_Delete(root);
    return rc;
}

typedef struct session {
    zmix_model *model;
    zmix_runtime *rt;
    zmix_compose_opts copts;
    float *alpha; /* NULL without experts */
    float *z;     /* z' of alpha, NULL without experts */
} session;

static void session_free(session *s)
{
    zmix_runtime_free(s->rt);
    zmix_model_free(s->model);
    free(s->alpha);
    free(s->z);
}

/* Loads model and experts, reads α and composes z'. Returns the exit code (0 on success). */
static int session_open(const model_args *a, session *s)
{
    zmix_error err = {0, ""};
    memset(s, 0, sizeof *s);
    zmix_runtime_opts ro;
    zmix_runtime_opts_default(&ro);
    ro.factor_cache_dir = a->factor_cache;
    if (a->adapt && zmix_adapt_set_parse(a->adapt, &ro.adapt, &err))
        return usage_error(a->cmd, "%s", err.msg);
    const char *paths[MAX_EXPERTS];
    char *experts = a->experts ? strdup(a->experts) : NULL;
    int n_experts = experts ? split_paths(experts, paths) : 0;
    if (n_experts < 0 || (a->experts && n_experts == 0)) {
        free(experts);
        return usage_error(a->cmd, "--experts: expected 1 to %d comma-separated files",
                           MAX_EXPERTS);
    }
    int rc = zmix_model_load(a->model, &s->model, &err);
    if (!rc) rc = zmix_runtime_create(s->model, &ro, paths, n_experts, &s->rt, &err);
    free(experts);
    if (rc) return fail(a->cmd, err.msg);

    zmix_compose_opts_default(&s->copts);
    s->copts.rescale = a->rescale;
    s->copts.normalize = a->normalize;
    if (n_experts == 0) return 0;
    s->copts.per_layer = a->alpha_file != NULL;
    size_t dim = zmix_alpha_dim(s->rt, &s->copts);
    char msg[ZMIX_ERROR_MSG_MAX];
    if (a->alpha_file) {
        s->alpha = malloc(dim * sizeof(float));
        if (!s->alpha) return fail(a->cmd, "out of memory");
        if (load_alpha_file(a->alpha_file, s->rt, s->alpha, msg, sizeof msg))
            return fail(a->cmd, msg);
    } else {
        int n = parse_floats(a->alpha, &s->alpha);
        if (n < 0) return usage_error(a->cmd, "--alpha '%s' is not a list of numbers", a->alpha);
        if ((size_t)n != dim) {
            return usage_error(a->cmd, "--alpha has %d values for %d experts", n, n_experts);
        }
    }
    s->z = malloc((zmix_runtime_z_total(s->rt) ? zmix_runtime_z_total(s->rt) : 1) * sizeof(float));
    if (!s->z) return fail(a->cmd, "out of memory");
    if (zmix_compose_z(s->rt, &s->copts, s->alpha, s->z, &err)) return fail(a->cmd, err.msg);
    return 0;
}

/* Loads the model, the result file and its z' (composed from the result's α with the given
 * experts when the file holds no z'), refusing a result made for another base model before
 * the model is factored. Returns the exit code (0 on success). */
static int session_open_result(const model_args *a, session *s, int *rescale)
{
    zmix_error err = {0, ""};
    memset(s, 0, sizeof *s);
    const char *paths[MAX_EXPERTS];
    char *experts = a->experts ? strdup(a->experts) : NULL;
    int n_experts = experts ? split_paths(experts, paths) : 0;
    if (n_experts < 0) {
        free(experts);
        return usage_error(a->cmd, "--experts: at most %d files", MAX_EXPERTS);
    }
    zmix_adapt_result res;
    int rc = zmix_adapt_result_load(a->result, &res, &err);
    if (!rc) {
        zmix_runtime_opts ro;
        zmix_runtime_opts_default(&ro);
        ro.adapt = res.adapt;
        ro.factor_cache_dir = a->factor_cache;
        if (!(rc = zmix_model_load(a->model, &s->model, &err)) &&
            !(rc = zmix_export_check_model(s->model, &res, &err)) &&
            !(rc = zmix_runtime_create(s->model, &ro, paths, n_experts, &s->rt, &err)))
            rc = zmix_export_result_z(s->rt, &res, &s->z, &err);
        *rescale = res.rescale;
        zmix_adapt_result_free(&res);
    }
    free(experts);
    return rc ? fail(a->cmd, err.msg) : 0;
}

static void generate_help(void)
{
    printf("usage: zmix generate --model PATH (--prompt IDS | --text TEXT) [options]\n"
           "       zmix generate --task TASK (--prompt IDS | --text TEXT) [options]\n\n"
           "Continues a prompt with the base model, an adaptation (--z, a result file), or an\n"
           "expert mix, with a KV cache. Greedy by default (argmax, first id on ties); with\n"
           "--temperature > 0, seeded sampling from the top-p nucleus. Stops at the model's\n"
           "EOS (unless --ignore-eos), at a --stop id, or after --max-tokens tokens. Prints the\n"
           "new ids, comma-separated, on one line; with --text, the new text.\n"
           "With --task, the daemon generates under the task's cached adaptation.\n\n"
           "  --model PATH        Hugging Face directory or llama2.c .bin checkpoint\n"
           "  --z FILE            a result file (zmix adapt --out / --z-out, zmix get --out);\n"
           "                      refused when made for another base model\n"
           "  --prompt IDS        comma-separated token ids, e.g. 1,403,407\n"
           "  --text TEXT         the prompt as text (the model's tokenizer; BOS prepended)\n"
           "  -n, --max-tokens N  new tokens at most (default 16)\n"
           "  --temperature T     0 (default): greedy; else sample from softmax(logits / T)\n"
           "  --top-p P           sample from the smallest set of ids holding P (default 1)\n"
           "  --seed S            the sampler's seed (default 0)\n"
           "  --stop IDS          comma-separated ids that end the generation (not printed)\n"
           "  --ignore-eos        do not stop at the model's EOS\n"
           "  --json              print {\"tokens\", \"text\", \"finish_reason\", \"stop_token\"}\n"
           "  --no-cache          rerun the whole sequence each step (the reference path)\n"
           "  --task TASK         generate on the daemon, under the task's cached adaptation\n"
           "  --socket/--connect/--token-file   the daemon, for --task\n"
           "  --experts A,B,...   SVF expert files (safetensors); z' = sum_k alpha_k z_k\n"
           "  --alpha X,Y,...     one coefficient per expert, shared by every matrix\n"
           "  --alpha-file F      per-matrix coefficients, JSON (see 'zmix score --help')\n"
           "  --adapt SET         adapted matrices: mlp (default), attn or all\n"
           "  --no-rescale        do not rescale W' by sum(sigma) / sum(sigma * z')\n"
           "  --normalize         scale alpha to sum 1 (per matrix with --alpha-file)\n"
           "  --factor-cache DIR  cache the SVD factors in DIR\n");
}

/* The prompt from --prompt or --text; returns the count or an exit code's negation. */
static int read_prompt(const model_args *a, const zmix_model *model, int32_t **out)
{
    if (a->prompt) {
        int n = parse_ids(a->prompt, out);
        if (n < 1)
            return -usage_error(a->cmd, "--prompt '%s' is not a list of token ids", a->prompt);
        return n;
    }
    const zmix_tokenizer *tok = zmix_model_tokenizer(model);
    if (!tok)
        return -fail(a->cmd, "--text needs a model with a tokenizer (tokenizer.json); give "
                             "--prompt with token ids");
    size_t len = strlen(a->text);
    int32_t *ids = malloc((zmix_tokenizer_max_tokens(tok, len, ZMIX_TOK_BOS) + 1) * sizeof *ids);
    zmix_error err = {0, ""};
    int n = ids ? zmix_tokenizer_encode(tok, a->text, len, ZMIX_TOK_BOS, ids, &err)
                : zmix_error_set(&err, ZMIX_ENOMEM, "out of memory");
    if (n < 1) {
        free(ids);
        return -fail(a->cmd, n < 0 ? err.msg : "--text encodes to no tokens");
    }
    *out = ids;
    return n;
}

/* Prints the generated ids (or text: given with --text when the model has a tokenizer), or the
 * JSON document of --json. */
static void print_generation(const model_args *a, const int32_t *ids, int n, const char *text,
                             const char *finish, int32_t stop_token)
{
    if (a->json) {
        cJSON *root = cJSON_CreateObject(), *list = cJSON_AddArrayToObject(root, "tokens");
        for (int i = 0; i < n; i++) cJSON_AddItemToArray(list, cJSON_CreateNumber(ids[i]));
        if (text)
            cJSON_AddStringToObject(root, "text", text);
        else
            cJSON_AddNullToObject(root, "text");
        cJSON_AddStringToObject(root, "finish_reason", finish);
        if (stop_token >= 0) /* as the daemon answers: null when no stop id ended it */
            cJSON_AddNumberToObject(root, "stop_token", stop_token);
        else
            cJSON_AddNullToObject(root, "stop_token");
        char *out = cJSON_PrintUnformatted(root);
        if (out) printf("%s\n", out);
        free(out);
        cJSON_Delete(root);
    } else if (a->text && text) {
        printf("%s\n", text);
    } else {
        for (int i = 0; i < n; i++) printf(i ? ",%d" : "%d", (int)ids[i]);
        printf("\n");
    }
}

/* zmix generate --task: the daemon generates under the task's cached adaptation. */
static int generate_on_daemon(const model_args *a, const int32_t *stop, int n_stop)
{
    int32_t *prompt = NULL;
    int n_prompt = 0;
    if (a->prompt && (n_prompt = parse_ids(a->prompt, &prompt)) < 1)
        return usage_error(a->cmd, "--prompt '%s' is not a list of token ids", a->prompt);
    zmix_client_gen_req req = {.task = a->task,
                               .prompt = prompt,
                               .n_prompt = n_prompt,
                               .text = a->prompt ? NULL : a->text,
                               .max_tokens = a->n_new,
                               .temperature = a->temperature,
                               .top_p = a->top_p,
                               .seed = a->seed,
                               .stop = stop,
                               .n_stop = n_stop};
    zmix_client *c;
    int rc = daemon_connect(&a->conn, &c);
    if (rc) {
        free(prompt);
        return rc;
    }
    zmix_error err = {0, ""};
    zmix_client_generation g;
    if (zmix_client_generate(c, &req, &g, &err))
        rc = daemon_fail(&a->conn, c, &err);
    else
        print_generation(a, g.tokens, g.n_tokens, g.text, g.finish_reason, g.stop_token);
    zmix_client_generation_free(&g);
    zmix_client_close(c);
    free(prompt);
    return rc;
}

int cmd_generate(int argc, char **argv)
{
    model_args a = {.cmd = "generate", .n_new = 16, .threads = 1, .rescale = 1, .top_p = 1.0};
    a.conn.cmd = "generate";
    int rc = parse_args(argc, argv, &a, generate_help);
    if (rc) return rc < 0 ? 0 : rc;
    if (!a.prompt == !a.text) return usage_error(a.cmd, "%s", "give --prompt IDS or --text TEXT");
    if (a.examples) return usage_error(a.cmd, "%s", "--examples belongs to 'zmix score'");
    int32_t *stop = NULL;
    int n_stop = a.stop ? parse_ids(a.stop, &stop) : 0;
    if (n_stop < 0) return usage_error(a.cmd, "--stop '%s' is not a list of token ids", a.stop);
    if (n_stop > ZMIX_GEN_MAX_STOP) {
        free(stop);
        return usage_error(a.cmd, "--stop: at most %d ids", ZMIX_GEN_MAX_STOP);
    }
    if (a.task) {
        rc = generate_on_daemon(&a, stop, n_stop);
        free(stop);
        return rc;
    }
    session s;
    int rescale = a.rescale;
    rc = a.result ? session_open_result(&a, &s, &rescale) : session_open(&a, &s);
    int32_t *prompt = NULL, *out = malloc((size_t)a.n_new * sizeof *out);
    int n_prompt = 0;
    if (!rc && !out) rc = fail(a.cmd, "out of memory");
    if (!rc && (n_prompt = read_prompt(&a, s.model, &prompt)) < 0) rc = -n_prompt;

    zmix_error err = {0, ""};
    zmix_generator *g = NULL;
    zmix_gen_opts opts;
    zmix_gen_opts_default(&opts);
    opts.max_tokens = a.n_new;
    opts.temperature = a.temperature;
    opts.top_p = a.top_p;
    opts.seed = a.seed;
    opts.stop = stop;
    opts.n_stop = n_stop;
    opts.ignore_eos = a.ignore_eos;
    opts.no_cache = a.no_cache;
    int n_out = 0;
    zmix_gen_finish finish = ZMIX_GEN_RUNNING;
    if (!rc && (zmix_generator_create(s.model, s.rt, rescale, s.z, &g, &err) ||
                zmix_generate_tokens(g, prompt, n_prompt, &opts, out, &n_out, &finish, &err)))
        rc = fail(a.cmd, err.msg);
    char *text = rc ? NULL : zmix_generation_text(s.model, out, n_out);
    if (!rc && zmix_model_tokenizer(s.model) && !text) rc = fail(a.cmd, "out of memory");
    if (!rc)
        print_generation(&a, out, n_out, text, zmix_gen_finish_name(finish),
                         zmix_generator_stop_token(g));
    free(text);
    zmix_generator_free(g);
    free(out);
    free(prompt);
    free(stop);
    session_free(&s);
    return rc;
}

static void score_help(void)
{
    printf(
        "usage: zmix score --model PATH --examples EX.json [--experts A,B,... "
        "(--alpha X,Y,... | --alpha-file F)]\n"
        "                  [--adapt mlp|attn|all] [--no-rescale] [--normalize] "
        "[--threads N] [--factor-cache DIR]\n"
        "                  [--choice-norm token|none]\n\n"
        "Scores an expert mix on a few-shot example set with one teacher-forced pass per\n"
        "example and prints JSON: {\"accuracy\", \"loglik\", \"examples\": [{\"exact\", "
        "\"loglik\"}]}.\n"
        "accuracy: fraction of examples whose every target token is the argmax (greedy\n"
        "decoding reproduces the target); loglik: mean over examples of the mean target\n"
        "log-probability. Without --experts the base model is scored.\n"
        "Multiple-choice examples print {\"accuracy\", \"margin\", \"examples\": [{\"right\",\n"
        "\"margin\", \"chosen\"}]}: right when the answer's log-likelihood beats every other\n"
        "choice's (a tie is wrong); margin: the answer's over the best other choice's.\n\n"
        "  --model PATH        Hugging Face directory or llama2.c .bin checkpoint\n"
        "  --examples F        {\"examples\": [{\"prompt\": [ids], \"target\": [ids]}, ...]}\n"
        "                      or [{\"prompt\": [ids], \"choices\": [[ids], ...], \"answer\": i}]\n"
        "                      (-: standard input)\n"
        "  --experts A,B,...   SVF expert files (safetensors)\n"
        "  --alpha X,Y,...     one coefficient per expert, shared by every matrix\n"
        "  --alpha-file F      per-matrix coefficients: {\"alpha\": {\"<matrix name>\": "
        "[one per expert], ...}}\n"
        "                      naming every adapted matrix, or {\"alpha\": [M*K numbers]}\n"
        "  --adapt SET         adapted matrices: mlp (default), attn or all\n"
        "  --no-rescale        do not rescale W' by sum(sigma) / sum(sigma * z')\n"
        "  --normalize         scale alpha to sum 1 (per matrix with --alpha-file)\n"
        "  --threads N         scoring threads (default 1)\n"
        "  --choice-norm N     compare choices by per-token (token, the default) or summed\n"
        "                      (none) log-likelihood\n"
        "  --factor-cache DIR  cache the SVD factors in DIR\n");
}

int cmd_score(int argc, char **argv)
{
    model_args a = {.cmd = "score", .threads = 1, .rescale = 1};
    int rc = parse_args(argc, argv, &a, score_help);
    if (rc) return rc < 0 ? 0 : rc;
    if (!a.examples) return usage_error(a.cmd, "%s", "--examples FILE is required");
    if (a.prompt || a.generate_only)
        return usage_error(a.cmd, "%s belongs to 'zmix generate'",
                           a.prompt ? "--prompt" : a.generate_only);
    zmix_error err = {0, ""};
    zmix_examples ex;
    memset(&ex, 0, sizeof ex);
    session s;
    rc = session_open(&a, &s);
    /* After the model: text examples are encoded with its tokenizer. */
    if (!rc && zmix_examples_load_json_tok(a.examples, zmix_model_tokenizer(s.model), &ex, &err))
        rc = fail(a.cmd, err.msg);
    if (!rc && zmix_examples_check(s.model, &ex, &err)) rc = fail(a.cmd, err.msg);
    zmix_score score;
    zmix_example_score *detail = malloc((size_t)ex.n * sizeof *detail);
    zmix_score_ctl ctl = {a.threads, NULL, a.choice_norm};
    if (!rc && !detail) rc = fail(a.cmd, "out of memory");
    if (!rc) {
        int r;
        if (s.alpha) {
            r = zmix_score_alpha(s.rt, &s.copts, &ex, 1, s.alpha, &ctl, &score, detail, &err);
        } else { /* the base model: z' = 1 */
            size_t zt = zmix_runtime_z_total(s.rt);
            float *ones = malloc((zt ? zt : 1) * sizeof(float));
            for (size_t i = 0; ones && i < zt; i++) ones[i] = 1.0f;
            r = ones ? zmix_score_z(s.rt, 0, &ex, 1, ones, &ctl, &score, detail, &err)
                     : zmix_error_set(&err, ZMIX_ENOMEM, "out of memory");
            free(ones);
        }
        if (r) rc = fail(a.cmd, err.msg);
    }
    if (!rc) {
        cJSON *root = cJSON_CreateObject(), *list = cJSON_CreateArray();
        int mc = zmix_examples_are_choice(&ex);
        const char *second = mc ? "margin" : "loglik";
        cJSON_AddNumberToObject(root, "accuracy", score.accuracy);
        cJSON_AddNumberToObject(root, second, score.loglik);
        cJSON_AddNumberToObject(root, "n_examples", ex.n);
        if (mc) cJSON_AddStringToObject(root, "choice_norm", a.choice_norm ? "none" : "token");
        for (int i = 0; i < ex.n; i++) {
            cJSON *e = cJSON_CreateObject();
            cJSON_AddBoolToObject(e, mc ? "right" : "exact", detail[i].exact);
            cJSON_AddNumberToObject(e, second, detail[i].loglik);
            if (mc) cJSON_AddNumberToObject(e, "chosen", detail[i].chosen);
            cJSON_AddItemToArray(list, e);
        }
        cJSON_AddItemToObject(root, "examples", list);
        char *text = cJSON_PrintUnformatted(root);
        if (text)
            printf("%s\n", text);
        else
            rc = fail(a.cmd, "out of memory");
        free(text);
        cJSON_Delete(root);
    }
    free(detail);
    session_free(&s);
    zmix_examples_free(&ex);
    return rc;
}
