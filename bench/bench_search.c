/*
 * bench_search: how often the search finds the answer, and at what cost, on planted tasks
 * (a hidden mix α* whose greedy continuations are the targets) over several seeds — with
 * zmix's default settings and with the reference implementation's settings run through the
 * same engine. Not a timing benchmark: it counts evaluations, which do not depend on the
 * machine, and measures accuracy on held-out examples the search never saw.
 *
 *   bench_search --model ../shared/models/stories260K [--seeds 10] [--tasks a,b] [--quick]
 *
 * Tasks (stories260K, 16 search examples and 16 held-out ones, 4-token targets):
 *   k4       K = 4 experts, α* drawn in [0.1, 0.9], z = exp(N(0, 0.5²))
 *   k4-easy  the same with z = exp(N(0, 0.2²)) (experts closer to the base model)
 *   k8       K = 8
 *   corner   K = 4, α* = [0.7, 0, 0, 0.3]
 *   base     K = 4, targets are the base model's own continuations (no mix needed)
 *   perlayer K = 4, α* drawn per expert per adapted matrix (60 coordinates), per-layer search;
 *            every target token leads the runner-up by ≥ 0.1 in logit under α* (well posed)
 *   perlayer-ties  the same without that requirement: some targets are decided by near ties
 *   mc-k4    K = 4, multiple choice: 4 choices of 4 tokens per prompt (continuations under α*,
 *            the base model, each expert), the answer the one α* prefers by 0.1 per token,
 *            never the base model's preference; accuracy is choice accuracy
 *
 * For each task and settings it prints: runs whose result reaches accuracy 1.0 on the search
 * examples, the median accuracy the result reaches on them, the median evaluations until the
 * search's best first did (0 when the result is the base model, kept at no search cost), the median
 * evaluations spent in all, the median held-out accuracy of the result, and runs whose result is
 * worse than the base model on the search examples without the result saying so.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "adapt/cem_options.h"
#include "zmix/adapt.h"

typedef struct task_def {
    const char *name;
    int n_experts;
    double z_log_std;
    const float *alpha_star; /* NULL: drawn */
    int base_targets;        /* the targets are the base model's continuations */
    int per_layer;           /* α* per expert per matrix, searched per layer */
    int n_choices;           /* multiple choice with this many choices; 0: exact match */
    double target_margin;    /* planted: each target token's least lead under α* */
} task_def;

static const float corner_alpha[4] = {0.7f, 0.0f, 0.0f, 0.3f};

static const task_def tasks[] = {
    {"k4", 4, 0.5, NULL, 0, 0, 0, 0.0},
    {"k4-easy", 4, 0.2, NULL, 0, 0, 0, 0.0},
    {"k8", 8, 0.5, NULL, 0, 0, 0, 0.0},
    {"corner", 4, 0.5, corner_alpha, 0, 0, 0, 0.0},
    {"base", 4, 0.5, NULL, 1, 0, 0, 0.0},
    {"perlayer", 4, 0.5, NULL, 0, 1, 0, 0.1},
    {"perlayer-ties", 4, 0.5, NULL, 0, 1, 0, 0.0},
    {"mc-k4", 4, 0.5, NULL, 0, 0, 4, 0.0},
};
#define N_TASKS ((int)(sizeof tasks / sizeof *tasks))

typedef struct outcome {
    double train_acc; /* the result's accuracy on the search examples */
    int solved;
    long evals_to_solve, evals;
    double heldout_acc;
    int worse_than_base_silently;
} outcome;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    if (n == 0) return NAN;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Evaluations made by the end of generation g (1-based): pop the first, then pop − 1 per
 * generation when the best is carried over. */
static long evals_at(const zmix_cem_settings *s, int g)
{
    return s->pop_size + (long)(g - 1) * (s->pop_size - (s->elitism ? 1 : 0));
}

/* Replaces each target by the base model's greedy continuation of its prompt. */
static int base_targets(const zmix_runtime *rt, zmix_examples *ex, zmix_error *err)
{
    for (int i = 0; i < ex->n; i++) {
        zmix_example *e = &ex->items[i];
        /* The example's tokens live in ex->tokens, which this program owns. */
        int32_t *target = ex->tokens + (e->target - ex->tokens);
        int rc = zmix_generate(rt, 1, NULL, e->prompt, e->n_prompt, e->n_target, target, err);
        if (rc) return rc;
    }
    return 0;
}

static int run_one(const zmix_model *model, const char *dir, const task_def *t, uint64_t seed,
                   const zmix_adapt_opts *settings, outcome *out, zmix_error *err)
{
    memset(out, 0, sizeof *out);
    zmix_planted_opts po;
    zmix_planted_opts_default(&po);
    po.n_experts = t->n_experts;
    po.n_examples = 32; /* 16 to search with, 16 held out */
    po.z_log_std = t->z_log_std;
    po.alpha_star = t->alpha_star;
    po.distinct_from_base = !t->base_targets;
    po.seed = 1000 + seed;
    po.per_layer = t->per_layer;
    po.n_choices = t->n_choices;
    po.target_margin = t->target_margin;
    zmix_planted p;
    int rc = zmix_planted_create(model, dir, &po, &p, err);
    if (rc) return rc;
    zmix_runtime *rt = NULL;
    zmix_runtime_opts ro;
    zmix_runtime_opts_default(&ro);
    rc =
        zmix_runtime_create(model, &ro, (const char *const *)p.expert_paths, p.n_experts, &rt, err);
    if (!rc && t->base_targets) rc = base_targets(rt, &p.examples, err);
    zmix_examples search = p.examples, held = p.examples;
    search.n = 16;
    held.items = p.examples.items + 16;
    held.n = p.examples.n - 16;
    zmix_adapt_opts o = *settings;
    o.cem.seed = seed;
    o.per_layer = t->per_layer;
    zmix_adapt_result r;
    if (!rc) rc = zmix_adapt_run(rt, &search, &o, NULL, NULL, &r, err);
    if (!rc) {
        out->evals = r.evaluations;
        /* Solved: the result reaches accuracy 1 on the search examples — the base model when
         * it was kept (at no search cost), else the search's best, first at generation g. */
        out->solved = r.best.accuracy >= 1.0;
        out->train_acc = r.best.accuracy;
        for (int g = 0; out->solved && r.base_weight == 0 && g < r.n_history; g++)
            if (r.history[g].best.accuracy >= 1.0) {
                out->evals_to_solve = evals_at(&r.settings, g + 1);
                break;
            }
        zmix_compose_opts co = zmix_adapt_compose_opts(&o);
        zmix_score_ctl ctl = {1, NULL, ZMIX_CHOICE_PER_TOKEN};
        zmix_score hs;
        if (r.base_weight > 0) { /* the result is the unchanged model, z' = 1 */
            float *ones = malloc(r.z_total * sizeof *ones);
            for (size_t i = 0; ones && i < r.z_total; i++) ones[i] = 1.0f;
            rc = ones ? zmix_score_z(rt, o.rescale, &held, 1, ones, &ctl, &hs, NULL, err)
                      : ZMIX_ENOMEM;
            free(ones);
        } else {
            rc = zmix_score_alpha(rt, &co, &held, 1, r.alpha, &ctl, &hs, NULL, err);
        }
        out->heldout_acc = hs.accuracy;
        out->worse_than_base_silently = zmix_score_cmp(&r.best, &r.base, ZMIX_METRIC_ACCURACY) < 0;
        zmix_adapt_result_free(&r);
    }
    if (rt) zmix_runtime_free(rt);
    zmix_planted_free(&p);
    return rc;
}

static void reference_settings(zmix_adapt_opts *o)
{
    /* The reference implementation: pop 32, elite ratio 0.2, 50 generations, no floor on the
     * spread, no early stop. */
    zmix_adapt_opts_default(o);
    o->cem.pop_size = 32;
    o->cem.elite_ratio = 0.2;
    o->cem.max_generations = 50;
    o->cem.std_floor = 0.0;
    o->cem.std_tol = 0.0;
    o->cem.target_accuracy = 2.0;
    o->cem.patience = 0;
    o->cem.method = ZMIX_CEM_METHOD_CEM; /* every coordinate from the start, per-layer too */
}

static int wanted(const char *list, const char *name)
{
    if (!list) return 1;
    size_t n = strlen(name);
    for (const char *p = list; (p = strstr(p, name)); p += n)
        if ((p == list || p[-1] == ',') && (p[n] == ',' || p[n] == '\0')) return 1;
    return 0;
}

int main(int argc, char **argv)
{
    const char *model_path = "../shared/models/stories260K", *only = NULL;
    int seeds = 10;
    zmix_adapt_opts settings[2];
    zmix_adapt_opts_default(&settings[0]);
    reference_settings(&settings[1]);
    zmix_error err;
    for (int i = 1; i < argc; i++) {
        /* Any search setting (zmix adapt's flags) changes the "zmix defaults" row: the way
         * docs/cem.md's measurements of other settings were made. */
        const cem_option *opt = cem_option_by_flag(argv[i]);
        if (opt && (opt->type == CEM_TYPE_BOOL || i + 1 < argc)) {
            const char *value = opt->type == CEM_TYPE_BOOL ? NULL : argv[++i];
            if (cem_option_apply_arg(opt, value, &settings[0], &err)) {
                fprintf(stderr, "bench_search: %s\n", err.msg);
                return 2;
            }
            continue;
        }
        if (!strcmp(argv[i], "--model") && i + 1 < argc)
            model_path = argv[++i];
        else if (!strcmp(argv[i], "--seeds") && i + 1 < argc)
            seeds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--tasks") && i + 1 < argc)
            only = argv[++i];
        else if (!strcmp(argv[i], "--quick"))
            seeds = 2;
        else {
            fprintf(stderr, "usage: bench_search [--model DIR] [--seeds N] [--tasks k4,k8,...] "
                            "[--quick] [zmix adapt's search flags, e.g. --std-floor 0.05]\n");
            return 2;
        }
    }
    zmix_model *model = NULL;
    if (zmix_model_load(model_path, &model, &err)) {
        fprintf(stderr, "bench_search: %s\n", err.msg);
        return 1;
    }
    char dir[] = "/tmp/zmix-bench-search-XXXXXX";
    if (!mkdtemp(dir)) {
        perror("bench_search: mkdtemp");
        return 1;
    }
    const char *settings_name[2] = {"zmix defaults", "reference"};
    printf("%-8s %-14s %8s %10s %14s %12s %12s %14s\n", "task", "settings", "solved", "accuracy",
           "evals to 1.0", "evals", "held-out", "worse, silent");
    for (int t = 0; t < N_TASKS; t++) {
        if (!wanted(only, tasks[t].name)) continue;
        for (int s = 0; s < 2; s++) {
            int solved = 0, silent = 0;
            double *to_solve = calloc((size_t)seeds, sizeof(double));
            double *evals = calloc((size_t)seeds, sizeof(double));
            double *held = calloc((size_t)seeds, sizeof(double));
            double *train = calloc((size_t)seeds, sizeof(double));
            for (int k = 0; k < seeds; k++) {
                outcome oc;
                if (run_one(model, dir, &tasks[t], (uint64_t)k + 1, &settings[s], &oc, &err)) {
                    fprintf(stderr, "bench_search: %s seed %d: %s\n", tasks[t].name, k + 1,
                            err.msg);
                    return 1;
                }
                if (oc.solved) to_solve[solved++] = (double)oc.evals_to_solve;
                evals[k] = (double)oc.evals;
                held[k] = oc.heldout_acc;
                train[k] = oc.train_acc;
                silent += oc.worse_than_base_silently;
            }
            printf("%-8s %-14s %5d/%-2d %10.3f %14.0f %12.0f %12.3f %14d\n", tasks[t].name,
                   settings_name[s], solved, seeds, median(train, seeds), median(to_solve, solved),
                   median(evals, seeds), median(held, seeds), silent);
            fflush(stdout);
            free(to_solve);
            free(evals);
            free(held);
            free(train);
        }
    }
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "bench_search: could not remove %s\n", dir);
    zmix_model_free(model);
    return 0;
}
