/*
 * The daemon commands: submit, status, wait, cancel, jobs, get, tasks, evict, info, stats.
 * Each parses its options, connects through the client library, makes one or a few calls and
 * prints either a human summary or, with --json, the daemon's result as JSON. Errors are one
 * line on stderr; exit codes: 0 success, 1 failure, 2 usage, 3 `wait` timed out.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "adapt/cem_options.h"
#include "commands.h"
#include "daemon_conn.h"
#include "out_file.h"
#include "progress.h"
#include "submit_examples.h"
#include "task_result.h"
#include "util/file.h"
#include "zmix/adapt.h"

static const char conn_help[] =
    "  --socket PATH        the daemon's Unix socket\n"
    "  --connect ADDR       unix:PATH or tcp:HOST:PORT (default: $ZMIX_ADDR, else the\n"
    "                       daemon's default socket, $XDG_CACHE_HOME/zmix/zmixd.sock)\n"
    "  --token-file F       send the token in F first (default: $ZMIX_TOKEN_FILE)\n"
    "  --json               print the daemon's result as JSON\n";

/* ---- Shared option loop -------------------------------------------------------------------- */

/* Parses connection options and up to max_pos positionals; for anything else calls extra
 * (which returns 1 consumed, 0 unknown, -1 error). Returns 0, or an exit code. */
typedef int (*extra_opt_fn)(void *ctx, int argc, char **argv, int *i);

static int parse_args(daemon_opts *o, int argc, char **argv, const char **pos, int n_pos,
                      const char *usage, extra_opt_fn extra, void *ctx)
{
    int got = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            printf("%s\n%s", usage, conn_help);
            return -1;
        }
        int r = daemon_opts_parse(o, argc, argv, &i);
        if (r < 0) return 2;
        if (r > 0) continue;
        if (extra && (r = extra(ctx, argc, argv, &i)) != 0) {
            if (r < 0) return 2;
            continue;
        }
        if (a[0] == '-' && a[1] == '-') {
            fprintf(stderr, "zmix %s: unknown option '%s' (try --help)\n", o->cmd, a);
            return 2;
        }
        if (got == n_pos) {
            fprintf(stderr, "zmix %s: unexpected argument '%s' (try --help)\n", o->cmd, a);
            return 2;
        }
        pos[got++] = a;
    }
    if (got < n_pos) {
        fprintf(stderr, "%s\n", usage);
        return 2;
    }
    return 0;
}

#define PARSE_OR_RETURN(...)                                                                       \
    do {                                                                                           \
        int prc_ = parse_args(__VA_ARGS__);                                                        \
        if (prc_ != 0) return prc_ < 0 ? 0 : prc_;                                                 \
    } while (0)

static int opt_value(const char *cmd, int argc, char **argv, int *i, const char **val)
{
    if (*i + 1 >= argc) {
        fprintf(stderr, "zmix %s: %s needs a value (try --help)\n", cmd, argv[*i]);
        return -1;
    }
    *val = argv[++*i];
    return 0;
}

static int parse_num(const char *cmd, const char *opt, const char *s, double lo, double hi,
                     double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi) {
        fprintf(stderr, "zmix %s: %s: '%s' is not a number in [%g, %g]\n", cmd, opt, s, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_int(const char *cmd, const char *opt, const char *s, long lo, long hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "zmix %s: %s: '%s' is not an integer in [%ld, %ld]\n", cmd, opt, s, lo, hi);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static void format_time(double unix_s, char *buf, size_t cap)
{
    if (!(unix_s > 0)) {
        snprintf(buf, cap, "-");
        return;
    }
    time_t t = (time_t)unix_s;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, cap, "%Y-%m-%d %H:%M:%SZ", &tm);
}

static void print_floats_to(FILE *f, const char *label, const float *v, int n)
{
    fprintf(f, "%s", label);
    int shown = n < 24 ? n : 24;
    for (int i = 0; i < shown; i++) fprintf(f, " %.4f", (double)v[i]);
    if (n > shown) fprintf(f, " ... (%d values)", n);
    fprintf(f, "\n");
}

/* The K experts' names: name k at base + k * stride (NULL base: not known). */
typedef struct expert_names {
    const char *base;
    size_t stride;
    int k;
} expert_names;

/* α beside the experts' names: K values, or M·K per-layer values (α[m·K + k]) shown as each
 * expert's mean over the M matrices. Without names, the values alone. */
static void print_alpha(FILE *f, const char *label, const float *a, int n, expert_names nm)
{
    if (!nm.base || nm.k <= 0 || n <= 0 || n % nm.k != 0) {
        print_floats_to(f, label, a, n);
        return;
    }
    int m = n / nm.k;
    fprintf(f, "%s", label);
    if (m > 1) fprintf(f, " (mean over %d matrices)", m);
    for (int k = 0; k < nm.k; k++) {
        double sum = 0;
        for (int j = 0; j < m; j++) sum += a[(size_t)j * nm.k + k];
        fprintf(f, "%s%s %.4f", k ? "  " : " ", nm.base + (size_t)k * nm.stride, sum / m);
    }
    fprintf(f, "\n");
}

/* The daemon's expert names (info), for print_alpha; none when the call fails. Call it
 * before the call whose answer --json prints: it replaces the connection's last answer. */
static expert_names daemon_expert_names(zmix_client *c, zmix_client_info *info)
{
    zmix_error err;
    memset(info, 0, sizeof *info);
    if (zmix_client_info_get(c, info, &err) != 0) return (expert_names){0};
    return (expert_names){(const char *)info->experts, sizeof *info->experts, info->n_experts};
}

/* ---- status / wait ----------------------------------------------------------------------------
 */

static void print_status(const zmix_client_status *s, expert_names nm)
{
    printf("job %llu  task %s  state %s", (unsigned long long)s->job, s->task, s->state);
    if (s->phase[0] && strcmp(s->phase, s->state)) printf(" (%s)", s->phase);
    printf("\n");
    printf("generation %d/%d  population %d  dimension %d  priority %d\n", s->generation,
           s->max_generations, s->pop, s->dim, s->priority);
    if (s->has_best) {
        printf("best accuracy %.4f  loglik %.5f\n", s->best.accuracy, s->best.loglik);
        print_alpha(stdout, "best alpha", s->best_alpha, s->n_best_alpha, nm);
    }
    printf("evaluations %lld (%lld carried over)  scoring %.2f s  %.0f eval/s",
           (long long)s->evaluations, (long long)s->skipped, s->elapsed, progress_evals_per_s(s));
    if (!isnan(s->mean_std)) printf("  mean std %.4g", s->mean_std);
    printf("\n");
    if (s->stop_reason[0]) printf("stopped: %s\n", s->stop_reason);
    /* the reason of a finished search is its stop rule, already printed */
    if (s->reason[0] && strcmp(s->reason, s->stop_reason)) printf("reason: %s\n", s->reason);
}

static int status_error(const daemon_opts *o, const zmix_client *c, const zmix_error *err,
                        uint64_t job)
{
    if (err->code == ZMIX_ENOTFOUND) {
        fprintf(stderr, "zmix %s: job %llu not found (zmix jobs lists the daemon's jobs)\n", o->cmd,
                (unsigned long long)job);
        return 1;
    }
    return daemon_fail(o, c, err);
}

/* A command that is one request and its reply, once its arguments are parsed. */
typedef struct daemon_call {
    int (*send)(zmix_client *c, void *ctx, zmix_error *err);
    /* Reports a failed request, returns the exit code; NULL: daemon_fail. */
    int (*fail)(const daemon_opts *o, const zmix_client *c, const zmix_error *err, void *ctx);
    void (*print)(const zmix_client *c, void *ctx); /* the reply as text (without --json) */
    void (*free_reply)(void *ctx);                  /* NULL: nothing to free */
    void *ctx;
} daemon_call;

/* Connects, sends, prints the reply (the daemon's JSON with --json) or reports the error, frees
 * the reply and closes. Returns the command's exit code. */
static int daemon_run_call(const daemon_opts *o, const daemon_call *call)
{
    zmix_client *c;
    int rc = daemon_connect(o, &c);
    if (rc) return rc;
    zmix_error err;
    zmix_error_clear(&err);
    if (call->send(c, call->ctx, &err))
        rc = call->fail ? call->fail(o, c, &err, call->ctx) : daemon_fail(o, c, &err);
    else if (o->json)
        rc = daemon_print_json(o, c);
    else
        call->print(c, call->ctx);
    if (call->free_reply) call->free_reply(call->ctx);
    zmix_client_close(c);
    return rc;
}

/* status and cancel: the job asked about and the daemon's answer. */
typedef struct job_call {
    uint64_t job;
    zmix_client_status st; /* status */
    zmix_client_info info; /* status: the experts' names */
    expert_names names;
    char state[32]; /* cancel */
} job_call;

static int job_call_fail(const daemon_opts *o, const zmix_client *c, const zmix_error *err,
                         void *ctx)
{
    return status_error(o, c, err, ((const job_call *)ctx)->job);
}

static int status_send(zmix_client *c, void *ctx, zmix_error *err)
{
    job_call *j = ctx;
    j->names = daemon_expert_names(c, &j->info); /* first: --json prints the status */
    return zmix_client_status_get(c, j->job, 0, &j->st, err);
}

static void status_print(const zmix_client *c, void *ctx)
{
    (void)c;
    job_call *j = ctx;
    print_status(&j->st, j->names);
}

static void status_free(void *ctx)
{
    zmix_client_status_free(&((job_call *)ctx)->st);
    zmix_client_info_free(&((job_call *)ctx)->info);
}

/* A request about the job named by job_arg (exit code 2 when it names none). */
static int daemon_run_job_call(const daemon_opts *o, const char *job_arg,
                               int (*send)(zmix_client *, void *, zmix_error *),
                               void (*print)(const zmix_client *, void *),
                               void (*free_reply)(void *))
{
    job_call j;
    memset(&j, 0, sizeof j);
    if (daemon_parse_job(o->cmd, job_arg, &j.job)) return 2;
    daemon_call call = {send, job_call_fail, print, free_reply, &j};
    return daemon_run_call(o, &call);
}

int cmd_status(int argc, char **argv)
{
    daemon_opts o = {.cmd = "status"};
    const char *pos[1];
    PARSE_OR_RETURN(&o, argc, argv, pos, 1,
                    "usage: zmix status JOB [--json]\n\nShows a job's state, "
                    "generation, best score and alpha so far.",
                    NULL, NULL);
    return daemon_run_job_call(&o, pos[0], status_send, status_print, status_free);
}

static void on_progress(void *user, const zmix_client_status *s)
{
    progress_update(user, s);
}

/* Follows a job until it ends or timeout_s passes (<= 0: no limit), drawing progress on stderr
 * (second: the name of the score's second number, NULL for loglik). Leaves the final status in
 * *out. Returns 0, or 3 on timeout, or the failure's exit code. */
static int follow_job(const daemon_opts *o, zmix_client *c, uint64_t job, double timeout_s,
                      const char *second, zmix_client_status *out)
{
    progress pr;
    progress_init(&pr, stderr, job);
    pr.second = second;
    zmix_error err;
    zmix_error_clear(&err);
    /* Notifications give every generation; the long-poll alone would still get there. */
    if (zmix_client_subscribe(c, 1, &err) == 0) zmix_client_on_progress(c, on_progress, &pr);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        double waited = (double)(t.tv_sec - t0.tv_sec) + 1e-9 * (double)(t.tv_nsec - t0.tv_nsec);
        double slice = 1.0;
        if (timeout_s > 0) {
            if (waited >= timeout_s)
                slice = 0;
            else if (timeout_s - waited < slice)
                slice = timeout_s - waited;
        }
        if (zmix_client_wait(c, job, slice, out, &err)) {
            progress_finish(&pr);
            zmix_client_on_progress(c, NULL, NULL);
            return status_error(o, c, &err, job);
        }
        progress_update(&pr, out);
        if (!out->timed_out) break;
        if (timeout_s > 0 && waited + slice >= timeout_s) {
            progress_finish(&pr);
            zmix_client_on_progress(c, NULL, NULL);
            fprintf(stderr, "zmix %s: job %llu still %s after %g s (generation %d/%d)\n", o->cmd,
                    (unsigned long long)job, out->state, timeout_s, out->generation,
                    out->max_generations);
            if (o->json) daemon_print_json(o, c); /* the status so far, timed_out: true */
            return 3;
        }
        zmix_client_status_free(out);
    }
    progress_finish(&pr);
    zmix_client_on_progress(c, NULL, NULL);
    return 0;
}

/* Prints the final outcome of a followed job; returns the exit code. */
static int report_final(const daemon_opts *o, zmix_client *c, const zmix_client_status *s,
                        const char *second)
{
    if (o->json) {
        int rc = daemon_print_json(o, c);
        return rc ? rc : strcmp(s->state, "done") != 0;
    }
    if (!strcmp(s->state, "done")) {
        printf("job %llu done: %s after %d generations, best accuracy %.4f %s %.5f (%.2f s, "
               "%lld evaluations)\n",
               (unsigned long long)s->job, s->stop_reason[0] ? s->stop_reason : "stopped",
               s->generation, s->best.accuracy, second ? second : "loglik", s->best.loglik,
               s->elapsed, (long long)s->evaluations);
        if (s->has_best) {
            zmix_client_info info;
            print_alpha(stdout, "alpha", s->best_alpha, s->n_best_alpha,
                        daemon_expert_names(c, &info));
            zmix_client_info_free(&info);
        }
        printf("fetch it with: zmix get %s --out %s.safetensors\n", s->task, s->task);
        return 0;
    }
    fprintf(stderr, "zmix %s: job %llu %s%s%s\n", o->cmd, (unsigned long long)s->job, s->state,
            s->reason[0] ? ": " : "", s->reason);
    return 1;
}

typedef struct wait_ctx {
    const char *cmd;
    double timeout;
} wait_ctx;

static int wait_extra(void *vctx, int argc, char **argv, int *i)
{
    wait_ctx *w = vctx;
    if (strcmp(argv[*i], "--timeout")) return 0;
    const char *v;
    if (opt_value(w->cmd, argc, argv, i, &v)) return -1;
    return parse_num(w->cmd, "--timeout", v, 0, 1e9, &w->timeout) ? -1 : 1;
}

int cmd_wait(int argc, char **argv)
{
    daemon_opts o = {.cmd = "wait"};
    wait_ctx w = {.cmd = "wait"};
    const char *pos[1];
    PARSE_OR_RETURN(&o, argc, argv, pos, 1,
                    "usage: zmix wait JOB [--timeout S] [--json]\n\nFollows a job until it ends, "
                    "with a progress bar on a terminal (plain lines otherwise).\nExit code 0 when "
                    "it is done, 1 when it failed or was cancelled, 3 when S seconds\npassed "
                    "first (default: no limit).\n\n  --timeout S          give up after S seconds",
                    wait_extra, &w);
    uint64_t job;
    if (daemon_parse_job(o.cmd, pos[0], &job)) return 2;
    zmix_client *c;
    int rc = daemon_connect(&o, &c);
    if (rc) return rc;
    zmix_client_status st;
    memset(&st, 0, sizeof st);
    rc = follow_job(&o, c, job, w.timeout, NULL, &st);
    if (rc == 0) rc = report_final(&o, c, &st, NULL);
    zmix_client_status_free(&st);
    zmix_client_close(c);
    return rc;
}

/* ---- submit -----------------------------------------------------------------------------------
 */

typedef struct submit_ctx {
    const char *examples;
    zmix_adapt_opts settings; /* the search settings given, over zmix_adapt_opts_default */
    int given[CEM_OPT_COUNT]; /* which of them were given (the rest: the daemon's default) */
    int priority, recompute, wait;
    double timeout;
    const char *warm_start; /* --warm-start TASK */
} submit_ctx;

static int submit_extra(void *vctx, int argc, char **argv, int *i)
{
    submit_ctx *s = vctx;
    const char *a = argv[*i], *v = NULL;
    const char *cmd = "submit";
    /* The search settings: one table for zmix adapt, zmix submit and the daemon. */
    const cem_option *copt = cem_option_by_flag(a);
    if (copt) {
        if (copt->metavar && opt_value(cmd, argc, argv, i, &v)) return -1;
        zmix_error err;
        if (cem_option_apply_arg(copt, v, &s->settings, &err)) {
            fprintf(stderr, "zmix submit: %s\n", err.msg);
            return -1;
        }
        s->given[copt - cem_options] = 1;
        return 1;
    }
    if (!strcmp(a, "--recompute")) return s->recompute = 1;
    if (!strcmp(a, "--wait")) return s->wait = 1;
    if (!strcmp(a, "--warm-start")) return opt_value(cmd, argc, argv, i, &s->warm_start) ? -1 : 1;
    static const char *const valued[] = {"--examples", "--priority", "--timeout", NULL};
    int known = 0;
    for (int k = 0; valued[k]; k++) known |= !strcmp(a, valued[k]);
    if (!known) return 0;
    if (opt_value(cmd, argc, argv, i, &v)) return -1;
    int bad = 0;
    if (!strcmp(a, "--examples"))
        s->examples = v;
    else if (!strcmp(a, "--priority"))
        bad = parse_int(cmd, a, v, -10, 10, &s->priority);
    else if (!strcmp(a, "--timeout"))
        bad = parse_num(cmd, a, v, 0, 1e9, &s->timeout);
    return bad ? -1 : 1;
}

/* The settings given on the command line in the client library's form; those not given stay
 * unset, so the daemon applies its defaults (and its limits) to them. */
static void client_cem_from_settings(const submit_ctx *s, zmix_client_cem *c)
{
    _Static_assert(CEM_OPT_COUNT == 18, "every search setting must reach zmix_client_cem");
    const zmix_adapt_opts *v = &s->settings;
    const int *given = s->given;
    zmix_client_cem_init(c);
    if (given[CEM_OPT_PER_LAYER]) c->per_layer = v->per_layer;
    if (given[CEM_OPT_NORMALIZE]) c->normalize = v->cem.normalize;
    if (given[CEM_OPT_RESCALE]) c->rescale = v->rescale;
    if (given[CEM_OPT_ELITISM]) c->elitism = v->cem.elitism;
    if (given[CEM_OPT_POP]) c->pop = v->cem.pop_size;
    if (given[CEM_OPT_ITERS]) c->iters = v->cem.max_generations;
    if (given[CEM_OPT_PATIENCE]) c->patience = v->cem.patience;
    if (given[CEM_OPT_ELITE]) c->elite = v->cem.elite_ratio;
    if (given[CEM_OPT_INIT_STD]) c->init_std = v->cem.init_std;
    if (given[CEM_OPT_EMA]) c->ema = v->cem.ema;
    if (given[CEM_OPT_STD_FLOOR]) c->std_floor = v->cem.std_floor;
    if (given[CEM_OPT_STD_TOL]) c->std_tol = v->cem.std_tol;
    if (given[CEM_OPT_TARGET_ACCURACY]) c->target_accuracy = v->cem.target_accuracy;
    if (given[CEM_OPT_VALIDATION]) c->validation = v->validation;
    if (given[CEM_OPT_BOUNDS]) {
        c->lo = v->cem.lo;
        c->hi = v->cem.hi;
    }
    if (given[CEM_OPT_SEED]) {
        c->seed_set = 1;
        c->seed = v->cem.seed;
    }
    if (given[CEM_OPT_METRIC]) c->metric = cem_metric_name(v->cem.metric);
    if (given[CEM_OPT_METHOD]) c->method = zmix_cem_method_name(v->cem.method);
}

/* The usage text: its CEM option lines come from the table, with the defaults the daemon also
 * starts from. Returns a malloc'ed string, or NULL when out of memory. */
static char *submit_usage(void)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) return NULL;
    fputs("usage: zmix submit TASK --examples EX.json [CEM options] [--priority N] [--recompute]\n"
          "                   [--warm-start TASK]\n"
          "                   [--wait [--timeout S]] [--json]\n"
          "\n"
          "Sends an adaptation job to the daemon. EX.json: {\"examples\":[{\"prompt\":[ids],"
          "\"target\":[ids]}, ...]};\nprompt and target may be text when the daemon's model has "
          "a tokenizer. --examples - reads standard input.\n"
          "A task already adapted from the same examples and settings is answered from the "
          "cache.\n"
          "Settings not given take the daemon's defaults, lowered to its limits (--max-pop,\n"
          "--max-generations); the daemon derives each job's random stream from the request.\n"
          "\n",
          f);
    cem_options_print_help(f);
    fputs("  --priority N         -10..10, higher runs first (default: 0)\n"
          "  --recompute          run even if the task's result is cached\n"
          "  --warm-start TASK    begin the search at the cached TASK's alpha (docs/cem.md)\n"
          "  --wait               follow the job to its end (exit codes as zmix wait)\n"
          "  --timeout S          with --wait: give up waiting after S seconds",
          f);
    if (fclose(f) != 0) {
        free(text);
        return NULL;
    }
    return text;
}

int cmd_submit(int argc, char **argv)
{
    daemon_opts o = {.cmd = "submit"};
    submit_ctx s;
    memset(&s, 0, sizeof s);
    zmix_adapt_opts_default(&s.settings);
    const char *pos[1] = {NULL};
    char *usage = submit_usage();
    if (!usage) {
        fprintf(stderr, "zmix submit: out of memory\n");
        return 1;
    }
    int prc = parse_args(&o, argc, argv, pos, 1, usage, submit_extra, &s);
    free(usage);
    if (prc != 0) return prc < 0 ? 0 : prc;
    zmix_client_cem cem;
    client_cem_from_settings(&s, &cem);
    if (!s.examples) {
        fprintf(stderr, "zmix submit: --examples EX.json is required (try --help)\n");
        return 2;
    }
    /* The file is read and checked here, so a broken file is reported with its name and the
     * example at fault before anything is sent. */
    submit_examples ex;
    zmix_error err;
    zmix_error_clear(&err);
    if (submit_examples_load(s.examples, &ex, &err)) {
        fprintf(stderr, "zmix submit: %s\n", err.msg);
        return 1;
    }
    /* For multiple choice the score's second number is the answer's margin. */
    const char *second = ex.n > 0 && ex.items[0].n_choices ? "margin" : "loglik";
    zmix_client_submit_req req = {.task = pos[0],
                                  .examples = ex.items,
                                  .n_examples = (size_t)ex.n,
                                  .cem = &cem,
                                  .priority = s.priority,
                                  .recompute = s.recompute,
                                  .warm_start = s.warm_start};
    zmix_client *c = NULL;
    int rc = daemon_connect(&o, &c);
    zmix_client_submitted sub;
    memset(&sub, 0, sizeof sub);
    if (rc == 0 && zmix_client_submit(c, &req, &sub, &err)) {
        /* The daemon names the example by its index in the file: say which file. */
        if (!strncmp(err.msg, "submit: examples", 16))
            fprintf(stderr, "zmix submit: %s: %s\n", s.examples, err.msg + 8);
        else
            daemon_fail(&o, c, &err);
        rc = 1;
    }
    submit_examples_free(&ex);
    if (rc) {
        zmix_client_close(c);
        return rc;
    }
    if (sub.cached) {
        if (o.json) {
            rc = daemon_print_json(&o, c);
        } else {
            printf("task %s: cached result from job %llu (accuracy %.4f, %s %.5f)\n", sub.task,
                   (unsigned long long)sub.job, sub.result.score.accuracy, second,
                   sub.result.score.loglik);
            zmix_client_info info;
            print_alpha(stdout, "alpha", sub.result.alpha, sub.result.n_alpha,
                        daemon_expert_names(c, &info));
            zmix_client_info_free(&info);
            printf("fetch it with: zmix get %s --out %s.safetensors (--recompute to run again)\n",
                   sub.task, sub.task);
        }
    } else if (!s.wait) {
        if (o.json)
            rc = daemon_print_json(&o, c);
        else
            printf("job %llu %s (task %s%s)\nfollow it with: zmix wait %llu\n",
                   (unsigned long long)sub.job, sub.state, sub.task,
                   sub.coalesced ? ", joined an identical job already in progress" : "",
                   (unsigned long long)sub.job);
    } else {
        if (!o.json)
            fprintf(stderr, "job %llu %s (task %s%s)\n", (unsigned long long)sub.job, sub.state,
                    sub.task, sub.coalesced ? ", joined an identical job" : "");
        zmix_client_status st;
        memset(&st, 0, sizeof st);
        rc = follow_job(&o, c, sub.job, s.timeout, second, &st);
        if (rc == 0) rc = report_final(&o, c, &st, second);
        zmix_client_status_free(&st);
    }
    zmix_client_submitted_free(&sub);
    zmix_client_close(c);
    return rc;
}

/* ---- cancel, jobs ------------------------------------------------------------------------------
 */

static int cancel_send(zmix_client *c, void *ctx, zmix_error *err)
{
    job_call *j = ctx;
    return zmix_client_cancel(c, j->job, j->state, sizeof j->state, err);
}

static void cancel_print(const zmix_client *c, void *ctx)
{
    (void)c;
    const job_call *j = ctx;
    printf("job %llu %s\n", (unsigned long long)j->job, j->state);
}

int cmd_cancel(int argc, char **argv)
{
    daemon_opts o = {.cmd = "cancel"};
    const char *pos[1];
    PARSE_OR_RETURN(&o, argc, argv, pos, 1,
                    "usage: zmix cancel JOB [--json]\n\nCancels a queued or running job and "
                    "prints its end state once that is on disk (a running job stops within its "
                    "current chunk of work). For a tenant, a job its other submits still share "
                    "is only withdrawn from: 'job N withdrawn'.",
                    NULL, NULL);
    return daemon_run_job_call(&o, pos[0], cancel_send, cancel_print, NULL);
}

typedef struct jobs_ctx {
    const char *state;
    zmix_client_job_list l;
} jobs_ctx;

static int jobs_extra(void *vctx, int argc, char **argv, int *i)
{
    jobs_ctx *j = vctx;
    if (strcmp(argv[*i], "--state")) return 0;
    return opt_value("jobs", argc, argv, i, &j->state) ? -1 : 1;
}

static int jobs_send(zmix_client *c, void *ctx, zmix_error *err)
{
    jobs_ctx *j = ctx;
    return zmix_client_jobs(c, j->state, &j->l, err);
}

static void jobs_print(const zmix_client *c, void *ctx)
{
    (void)c;
    const zmix_client_job_list *l = &((jobs_ctx *)ctx)->l;
    printf("%-6s %-24s %-10s %10s %5s  %s\n", "JOB", "TASK", "STATE", "GENERATION", "PRIO",
           "SUBMITTED");
    for (size_t i = 0; i < l->n; i++) {
        char when[32];
        format_time(l->jobs[i].submitted, when, sizeof when);
        printf("%-6llu %-24s %-10s %10d %5d  %s\n", (unsigned long long)l->jobs[i].job,
               l->jobs[i].task, l->jobs[i].state, l->jobs[i].generation, l->jobs[i].priority, when);
    }
    if (l->n == 0) printf("(no jobs)\n");
}

static void jobs_free(void *ctx)
{
    zmix_client_job_list_free(&((jobs_ctx *)ctx)->l);
}

int cmd_jobs(int argc, char **argv)
{
    daemon_opts o = {.cmd = "jobs"};
    jobs_ctx j = {0};
    PARSE_OR_RETURN(&o, argc, argv, NULL, 0,
                    "usage: zmix jobs [--state queued|running|done|failed|cancelled] [--json]\n\n"
                    "Lists the daemon's jobs.\n\n  --state S            only jobs in state S",
                    jobs_extra, &j);
    daemon_call call = {jobs_send, NULL, jobs_print, jobs_free, &j};
    return daemon_run_call(&o, &call);
}

/* ---- get, tasks, evict
 * --------------------------------------------------------------------------- */

static int task_error(const daemon_opts *o, const zmix_client *c, const zmix_error *err,
                      const char *task)
{
    if (err->code == ZMIX_ENOTFOUND) {
        fprintf(stderr, "zmix %s: task '%s' is not cached (zmix tasks lists the cached tasks)\n",
                o->cmd, task);
        return 1;
    }
    return daemon_fail(o, c, err);
}

typedef struct get_ctx {
    const char *out;
    const char *result;
    int vectors;
    int force; /* --force: write z' even when it was made for another model or expert set */
} get_ctx;

static int get_extra(void *vctx, int argc, char **argv, int *i)
{
    get_ctx *g = vctx;
    if (!strcmp(argv[*i], "--vectors")) return g->vectors = 1;
    if (!strcmp(argv[*i], "--force")) return g->force = 1;
    if (!strcmp(argv[*i], "--result")) return opt_value("get", argc, argv, i, &g->result) ? -1 : 1;
    if (strcmp(argv[*i], "--out")) return 0;
    return opt_value("get", argc, argv, i, &g->out) ? -1 : 1;
}

/* --result FILE: the task's result document, as `zmix adapt --out` writes it. */
static int save_document(zmix_client *c, const char *task, const char *path, int quiet, FILE *rep)
{
    char *json = NULL;
    zmix_error err;
    zmix_error_clear(&err);
    int rc = zmix_client_get_document(c, task, &json, &err);
    if (!rc && out_file_is_stdout(path)) {
        if (fputs(json, stdout) == EOF || fflush(stdout) != 0)
            rc = zmix_error_set(&err, ZMIX_EIO, "writing to standard output failed");
    } else if (!rc) {
        fs_piece piece = {json, strlen(json)};
        fs_write_opts wo = {.mode = 0644};
        rc = fs_write_atomic(path, &piece, 1, &wo, &err);
    }
    free(json);
    if (rc) {
        fprintf(stderr, "zmix get: %s\n", err.msg);
        return 1;
    }
    if (!quiet) fprintf(rep, "wrote %s\n", out_file_is_stdout(path) ? "standard output" : path);
    return 0;
}

/* --out FILE: z' with the task's result document as its self-description (docs/results.md),
 * so that the file says which base model, experts and rescale it is for. A daemon whose
 * result has no document (made before documents existed) gets the bare file of the client
 * library, which says only the task, key and α. */
static int save_z(zmix_client *c, const zmix_client_result *r, const char *path, zmix_error *err)
{
    zmix_adapt_result res;
    int rc = task_result_from_daemon(c, r, &res, err);
    if (rc == ZMIX_ENOTFOUND) {
        fprintf(stderr,
                "zmix get: the daemon has no result document for task %s: %s has no "
                "model fingerprint and zmix export will refuse it\n",
                r->task, path);
        return zmix_client_result_save_safetensors(r, path, err);
    }
    if (rc) return rc;
    rc = zmix_adapt_result_save_z(&res, r->task, path, err);
    zmix_adapt_result_free(&res);
    return rc;
}

int cmd_get(int argc, char **argv)
{
    daemon_opts o = {.cmd = "get"};
    get_ctx g = {0};
    const char *pos[1] = {NULL};
    PARSE_OR_RETURN(
        &o, argc, argv, pos, 1,
        "usage: zmix get TASK [--out Z.safetensors [--force]] [--result R.json] [--vectors] "
        "[--json]\n\n"
        "Shows a task's cached result: scores, alpha, where it came from, and whether\n"
        "it was made with the daemon's current model and experts.\n\n"
        "  --out FILE           write z' (one F32 tensor per adapted matrix, named as\n"
        "                       in the expert files) as a safetensors file (-: stdout,\n"
        "                       the report then goes to stderr); refused for a result\n"
        "                       made for another model or expert set\n"
        "  --force              with --out: write such a result all the same\n"
        "  --result FILE        write the result document (the JSON of zmix adapt,\n"
        "                       docs/cem.md: scores, alpha, settings, history; -: stdout)\n"
        "  --vectors            with --json: include z' per matrix",
        get_extra, &g);
    /* "-": that file on standard output, and the report on stderr */
    int out_std = out_file_is_stdout(g.out), result_std = out_file_is_stdout(g.result);
    if (out_std && result_std) {
        fprintf(stderr, "zmix get: --out - and --result - cannot both be standard output\n");
        return 2;
    }
    if ((out_std || result_std) && o.json) {
        fprintf(stderr, "zmix get: --json and --%s - cannot both be standard output\n",
                out_std ? "out" : "result");
        return 2;
    }
    FILE *rep = out_file_report(out_std || result_std);
    zmix_client *c;
    int rc = daemon_connect(&o, &c);
    if (rc) return rc;
    zmix_client_result r;
    zmix_error err;
    zmix_error_clear(&err);
    if (zmix_client_get(c, pos[0], g.out || g.vectors, &r, &err)) {
        rc = task_error(&o, c, &err, pos[0]);
        zmix_client_close(c);
        return rc;
    }
    if (o.json) {
        rc = daemon_print_json(&o, c);
    } else {
        char when[32];
        format_time(r.created, when, sizeof when);
        if (!r.current)
            fprintf(rep,
                    "NOT CURRENT: %s; it does not apply to the daemon's model and experts "
                    "(submit the task again to recompute)\n",
                    r.mismatch);
        fprintf(rep, "task %s  from job %llu  created %s\n", r.task, (unsigned long long)r.job,
                when);
        fprintf(rep, "accuracy %.4f  loglik %.5f  (base model: accuracy %.4f  loglik %.5f)\n",
                r.score.accuracy, r.score.loglik, r.base_score.accuracy, r.base_score.loglik);
        for (int k = 0; k < r.n_experts; k++)
            fprintf(rep, "  expert %-20s alone: accuracy %.4f  loglik %.5f\n",
                    r.expert_scores[k].name, r.expert_scores[k].score.accuracy,
                    r.expert_scores[k].score.loglik);
        expert_names nm = {r.n_experts ? r.expert_scores[0].name : NULL, sizeof *r.expert_scores,
                           r.n_experts};
        print_alpha(rep, "alpha", r.alpha, r.n_alpha, nm);
        long floats = 0;
        for (int m = 0; m < r.n_matrices; m++) floats += r.matrices[m].rank;
        fprintf(rep, "z': %d matrices, %ld floats\n", r.n_matrices, floats);
        if (r.safetensors[0]) fprintf(rep, "daemon's copy: %s\n", r.safetensors);
        fprintf(rep, "key %s\n", r.key);
    }
    if (rc == 0 && g.result) rc = save_document(c, pos[0], g.result, o.json, rep);
    if (rc == 0 && g.out && !r.current && !g.force) {
        fprintf(stderr,
                "zmix get: not writing %s: task %s's result was %s; it does not apply to the "
                "daemon's model and experts (submit the task again to recompute, or --force to "
                "write it all the same)\n",
                g.out, r.task, r.mismatch);
        rc = 1;
    } else if (rc == 0 && g.out) {
        out_file zf;
        if (out_file_begin(&zf, "get", g.out)) {
            rc = 1;
        } else if (save_z(c, &r, zf.write, &err)) {
            fprintf(stderr, "zmix get: %s\n", err.msg);
            out_file_finish(&zf, "get", 0);
            rc = 1;
        } else if (out_file_finish(&zf, "get", 1)) {
            rc = 1;
        } else if (!o.json) {
            fprintf(rep, "wrote %s\n", out_std ? "standard output" : g.out);
        }
    }
    zmix_client_result_free(&r);
    zmix_client_close(c);
    return rc;
}

static int tasks_send(zmix_client *c, void *ctx, zmix_error *err)
{
    return zmix_client_tasks(c, ctx, err);
}

static void tasks_print(const zmix_client *c, void *ctx)
{
    (void)c;
    const zmix_client_task_list *l = ctx;
    printf("%-24s %-6s %8s %10s %9s  %s\n", "TASK", "JOB", "ACCURACY", "LOGLIK", "BYTES",
           "CREATED");
    for (size_t i = 0; i < l->n; i++) {
        char when[32];
        format_time(l->tasks[i].created, when, sizeof when);
        printf("%-24s %-6llu %8.4f %10.5f %9lld  %s%s%s%s\n", l->tasks[i].task,
               (unsigned long long)l->tasks[i].job, l->tasks[i].score.accuracy,
               l->tasks[i].score.loglik, (long long)l->tasks[i].bytes, when,
               l->tasks[i].persisted ? "" : "  (not on disk)",
               l->tasks[i].current ? "" : "  NOT CURRENT: ", l->tasks[i].mismatch);
    }
    if (l->n == 0) printf("(no cached tasks)\n");
}

static void tasks_free(void *ctx)
{
    zmix_client_task_list_free(ctx);
}

int cmd_tasks(int argc, char **argv)
{
    daemon_opts o = {.cmd = "tasks"};
    PARSE_OR_RETURN(&o, argc, argv, NULL, 0,
                    "usage: zmix tasks [--json]\n\nLists the tasks in the daemon's cache.", NULL,
                    NULL);
    zmix_client_task_list l;
    memset(&l, 0, sizeof l);
    daemon_call call = {tasks_send, NULL, tasks_print, tasks_free, &l};
    return daemon_run_call(&o, &call);
}

static int evict_send(zmix_client *c, void *ctx, zmix_error *err)
{
    return zmix_client_evict(c, ctx, err);
}

static int evict_fail(const daemon_opts *o, const zmix_client *c, const zmix_error *err, void *ctx)
{
    return task_error(o, c, err, ctx);
}

static void evict_print(const zmix_client *c, void *ctx)
{
    (void)c;
    printf("evicted task %s\n", (const char *)ctx);
}

int cmd_evict(int argc, char **argv)
{
    daemon_opts o = {.cmd = "evict"};
    const char *pos[1];
    PARSE_OR_RETURN(&o, argc, argv, pos, 1,
                    "usage: zmix evict TASK [--json]\n\nRemoves a task's result from the cache "
                    "(memory and disk).",
                    NULL, NULL);
    daemon_call call = {evict_send, evict_fail, evict_print, NULL, (void *)pos[0]};
    return daemon_run_call(&o, &call);
}

/* ---- info, stats
 * ---------------------------------------------------------------------------------- */

static int info_send(zmix_client *c, void *ctx, zmix_error *err)
{
    return zmix_client_info_get(c, ctx, err);
}

static void info_print(const zmix_client *c, void *ctx)
{
    const zmix_client_info *in = ctx;
    printf("zmixd %s at %s\n", in->version, zmix_client_address(c));
    printf("model %s (%s, %d layers, dim %d, hidden %d, %d heads / %d kv, vocab %d, context "
           "%d)\n",
           in->model_path, in->model_type, in->n_layers, in->dim, in->hidden_dim, in->n_heads,
           in->n_kv_heads, in->vocab_size, in->max_seq_len);
    printf("fingerprint %s\n", in->fingerprint);
    printf("adapted: %s, %d matrices\n", in->adapt, in->n_matrices);
    printf("experts (%d):", in->n_experts);
    for (int k = 0; k < in->n_experts; k++) printf(" %s", in->experts[k]);
    printf("\nalpha dimension: %d per expert, %d per layer\n", in->alpha_dim_per_expert,
           in->alpha_dim_per_layer);
    printf("limits: %d examples, %lld tokens, context %lld, population %d, %d generations, "
           "dimension %d, %d jobs, frame %lld bytes, %d workers\n",
           in->max_examples, (long long)in->max_tokens, (long long)in->context, in->max_pop,
           in->max_generations, in->max_dim, in->max_jobs, (long long)in->frame_limit, in->workers);
}

static void info_free(void *ctx)
{
    zmix_client_info_free(ctx);
}

int cmd_info(int argc, char **argv)
{
    daemon_opts o = {.cmd = "info"};
    PARSE_OR_RETURN(&o, argc, argv, NULL, 0,
                    "usage: zmix info [--json]\n\nShows the daemon's model, experts and limits.",
                    NULL, NULL);
    zmix_client_info in;
    memset(&in, 0, sizeof in);
    daemon_call call = {info_send, NULL, info_print, info_free, &in};
    return daemon_run_call(&o, &call);
}

static int stats_send(zmix_client *c, void *ctx, zmix_error *err)
{
    return zmix_client_stats_get(c, ctx, err);
}

static void stats_print(const zmix_client *c, void *ctx)
{
    (void)c;
    const zmix_client_stats *s = ctx;
    printf("uptime %.1f s, %lld requests, %lld connections%s\n", s->uptime, (long long)s->requests,
           (long long)s->connections, s->shutting_down ? ", shutting down" : "");
    printf("workers %d/%d busy, %d chunks pending\n", s->workers_busy, s->workers_total,
           s->pending_chunks);
    printf("jobs: %d queued, %d running, %d unfinished (limit %d); %lld done, %lld failed, "
           "%lld cancelled\n",
           s->queued, s->running, s->unfinished, s->max_jobs, (long long)s->jobs_done,
           (long long)s->jobs_failed, (long long)s->jobs_cancelled);
    printf("submits answered from the cache %lld, joined to a running job %lld\n",
           (long long)s->cached_submits, (long long)s->coalesced_submits);
    printf("evaluations %lld, %.1f eval/s\n", (long long)s->evaluations, s->evals_per_s);
    printf("cache: %lld tasks (%lld resident, %lld bytes of %lld), %lld hits, %lld misses, "
           "%lld loads, %lld evictions, %lld write errors, %lld unpersisted\n",
           (long long)s->cache_tasks, (long long)s->cache_resident,
           (long long)s->cache_resident_bytes, (long long)s->cache_memory_budget,
           (long long)s->cache_hits, (long long)s->cache_misses, (long long)s->cache_loads,
           (long long)s->cache_evictions, (long long)s->cache_write_errors,
           (long long)s->cache_unpersisted);
    printf("memory: %.1f MiB resident\n", (double)s->rss_bytes / (1 << 20));
}

int cmd_stats(int argc, char **argv)
{
    daemon_opts o = {.cmd = "stats"};
    PARSE_OR_RETURN(&o, argc, argv, NULL, 0,
                    "usage: zmix stats [--json]\n\nShows the daemon's queue, workers, throughput "
                    "and cache counters.",
                    NULL, NULL);
    zmix_client_stats s;
    memset(&s, 0, sizeof s);
    daemon_call call = {stats_send, NULL, stats_print, NULL, &s};
    return daemon_run_call(&o, &call);
}
