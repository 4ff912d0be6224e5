/*
 * zmix plot: the convergence picture of a run, from a result JSON (`zmix adapt`, format in
 * docs/cem.md) or from a daemon job (its status with the per-generation history).
 */
#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "daemon_conn.h"
#include "out_file.h"
#include "svg_plot.h"
#include "util/file.h"

/* A guard against pointing the command at the wrong file, far above any real result (50
 * generations at dim 60 are about 100 kB of JSON). */
#define PLOT_INPUT_MAX ((size_t)1 << 30)

/* Everything the plot needs, owned here whatever the source. */
typedef struct plot_src {
    int n_gen, n_experts, dim;
    int *generation;
    double *s[6];       /* best, elite, pop accuracy; best, elite, pop loglik */
    double *mean, *std; /* n_gen × dim */
    char **names;
    char title[256];
    int choice; /* a multiple-choice search: the second number is the answer's margin */
} plot_src;

static void src_free(plot_src *p)
{
    free(p->generation);
    for (int i = 0; i < 6; i++) free(p->s[i]);
    free(p->mean);
    free(p->std);
    for (int k = 0; k < p->n_experts; k++) free(p->names ? p->names[k] : NULL);
    free(p->names);
    memset(p, 0, sizeof *p);
}

static int src_alloc(plot_src *p, int n_gen, int n_experts, int dim)
{
    p->n_gen = n_gen;
    p->n_experts = n_experts;
    p->dim = dim;
    p->generation = calloc((size_t)n_gen, sizeof *p->generation);
    int ok = p->generation != NULL;
    for (int i = 0; i < 6; i++) ok &= (p->s[i] = calloc((size_t)n_gen, sizeof(double))) != NULL;
    p->mean = calloc((size_t)n_gen * (size_t)(dim ? dim : 1), sizeof(double));
    p->std = calloc((size_t)n_gen * (size_t)(dim ? dim : 1), sizeof(double));
    p->names = calloc((size_t)(n_experts ? n_experts : 1), sizeof *p->names);
    return ok && p->mean && p->std && p->names ? 0 : -1;
}

static double json_num(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN; /* null (NaN in the run) stays a gap */
}

static int load_json(const char *path, plot_src *p)
{
    uint8_t *text;
    size_t len;
    zmix_error err;
    if (fs_read_file(path, PLOT_INPUT_MAX, &text, &len, &err) != 0) {
        fprintf(stderr, "zmix plot: %s\n", err.msg);
        return 1;
    }
    cJSON *root = cJSON_Parse((const char *)text);
    free(text);
    int rc = 1;
    const cJSON *hist = root ? cJSON_GetObjectItemCaseSensitive(root, "history") : NULL;
    const cJSON *experts = root ? cJSON_GetObjectItemCaseSensitive(root, "experts") : NULL;
    if (!root) {
        fprintf(stderr, "zmix plot: %s: not valid JSON\n", path);
    } else if (!cJSON_IsArray(hist) || cJSON_GetArraySize(hist) == 0) {
        fprintf(stderr, "zmix plot: %s: no 'history' (a result of zmix adapt, see docs/cem.md)\n",
                path);
    } else if (!cJSON_IsArray(experts) || cJSON_GetArraySize(experts) == 0) {
        fprintf(stderr, "zmix plot: %s: no 'experts' list\n", path);
    } else {
        int G = cJSON_GetArraySize(hist), K = cJSON_GetArraySize(experts);
        const cJSON *m0 = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(hist, 0), "mean");
        int dim = cJSON_IsArray(m0) ? cJSON_GetArraySize(m0) : 0;
        if (dim % K != 0) {
            fprintf(stderr,
                    "zmix plot: %s: history mean has %d values, not a multiple of %d experts\n",
                    path, dim, K);
        } else if (src_alloc(p, G, K, dim)) {
            fprintf(stderr, "zmix plot: out of memory\n");
        } else {
            rc = 0;
            const cJSON *settings = cJSON_GetObjectItemCaseSensitive(root, "settings");
            const cJSON *metric = cJSON_GetObjectItemCaseSensitive(settings, "metric");
            p->choice = cJSON_IsString(metric) && !strncmp(metric->valuestring, "choice", 6);
            for (int k = 0; k < K; k++) {
                const cJSON *n = cJSON_GetArrayItem(experts, k);
                p->names[k] = strdup(cJSON_IsString(n) ? n->valuestring : "?");
            }
            for (int g = 0; g < G && rc == 0; g++) {
                const cJSON *h = cJSON_GetArrayItem(hist, g);
                double gen = json_num(h, "generation");
                p->generation[g] = isfinite(gen) ? (int)gen : g + 1;
                static const char *const keys[3] = {"best", "elite_mean", "pop_mean"};
                for (int s = 0; s < 3; s++) {
                    const cJSON *sc = cJSON_GetObjectItemCaseSensitive(h, keys[s]);
                    p->s[s][g] = json_num(sc, "accuracy");
                    p->s[3 + s][g] = json_num(sc, "loglik");
                }
                const cJSON *mean = cJSON_GetObjectItemCaseSensitive(h, "mean");
                const cJSON *sd = cJSON_GetObjectItemCaseSensitive(h, "std");
                if (cJSON_GetArraySize(mean) != dim || cJSON_GetArraySize(sd) != dim) {
                    fprintf(stderr, "zmix plot: %s: history[%d]: mean/std do not have %d values\n",
                            path, g, dim);
                    rc = 1;
                    break;
                }
                for (int i = 0; i < dim; i++) {
                    const cJSON *a = cJSON_GetArrayItem(mean, i), *b = cJSON_GetArrayItem(sd, i);
                    p->mean[(size_t)g * dim + i] = cJSON_IsNumber(a) ? a->valuedouble : NAN;
                    p->std[(size_t)g * dim + i] = cJSON_IsNumber(b) ? b->valuedouble : NAN;
                }
            }
            const cJSON *stop = cJSON_GetObjectItemCaseSensitive(root, "stop_reason");
            snprintf(p->title, sizeof p->title, "CEM convergence: %s (%d generations, %s)", path, G,
                     cJSON_IsString(stop) ? stop->valuestring : "?");
        }
    }
    cJSON_Delete(root);
    return rc;
}

static int load_job(const daemon_opts *o, uint64_t job, plot_src *p)
{
    zmix_client *c;
    int rc = daemon_connect(o, &c);
    if (rc) return rc;
    zmix_client_info info;
    zmix_client_status st;
    memset(&info, 0, sizeof info);
    memset(&st, 0, sizeof st);
    zmix_error err;
    zmix_error_clear(&err);
    if (zmix_client_info_get(c, &info, &err)) {
        rc = daemon_fail(o, c, &err);
    } else if (zmix_client_status_get(c, job, 1, &st, &err)) {
        if (err.code == ZMIX_ENOTFOUND && strstr(err.msg, "unknown method"))
            fprintf(stderr,
                    "zmix plot: the daemon at %s does not send a job's history (%s); "
                    "plot a result JSON of zmix adapt instead\n",
                    zmix_client_address(c), err.msg);
        else if (err.code == ZMIX_ENOTFOUND)
            fprintf(stderr, "zmix plot: job %llu not found (zmix jobs lists the daemon's jobs)\n",
                    (unsigned long long)job);
        else if (err.code == ZMIX_ESTATE)
            fprintf(stderr, "zmix plot: %s\n", err.msg);
        else
            daemon_fail(o, c, &err);
        rc = 1;
    } else if (st.n_history == 0) {
        fprintf(stderr, "zmix plot: job %llu has no finished generation yet (state %s)\n",
                (unsigned long long)job, st.state);
        rc = 1;
    } else {
        int K = info.n_experts, G = st.n_history, dim = st.history[0].dim;
        if (K <= 0 || dim % K != 0) {
            fprintf(stderr,
                    "zmix plot: job %llu: %d alpha values per generation do not split "
                    "over %d experts\n",
                    (unsigned long long)job, dim, K);
            rc = 1;
        } else if (src_alloc(p, G, K, dim)) {
            fprintf(stderr, "zmix plot: out of memory\n");
            rc = 1;
        } else {
            for (int k = 0; k < K; k++) p->names[k] = strdup(info.experts[k]);
            for (int g = 0; g < G; g++) {
                const zmix_client_gen *h = &st.history[g];
                p->generation[g] = h->generation;
                const zmix_score *sc[3] = {&h->best, &h->elite_mean, &h->pop_mean};
                for (int s = 0; s < 3; s++) {
                    p->s[s][g] = sc[s]->accuracy;
                    p->s[3 + s][g] = sc[s]->loglik;
                }
                for (int i = 0; i < dim && h->dim == dim; i++) {
                    p->mean[(size_t)g * dim + i] = h->mean[i];
                    p->std[(size_t)g * dim + i] = h->std[i];
                }
            }
            snprintf(p->title, sizeof p->title, "CEM convergence: job %llu, task %s (%s%s%s)",
                     (unsigned long long)job, st.task, st.state, st.stop_reason[0] ? ", " : "",
                     st.stop_reason);
        }
    }
    zmix_client_status_free(&st);
    zmix_client_info_free(&info);
    zmix_client_close(c);
    return rc;
}

int cmd_plot(int argc, char **argv)
{
    daemon_opts o = {.cmd = "plot"};
    const char *what = NULL, *out = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            printf("usage: zmix plot JOB|RESULT.json --out CONV.svg [--socket PATH | --connect "
                   "ADDR] [--token-file F]\n\n"
                   "Draws the convergence of a CEM run as a standalone SVG: best, elite-mean and\n"
                   "population-mean accuracy and log-likelihood per generation, and the alpha\n"
                   "trajectories (mean +- std per expert; per-layer alpha averaged over the\n"
                   "matrices). RESULT.json is the output of zmix adapt; a JOB is fetched from the\n"
                   "daemon (--socket or --connect, else $ZMIX_ADDR, else the default socket; the\n"
                   "token from --token-file, else $ZMIX_TOKEN_FILE). --out - writes the SVG to\n"
                   "standard output (the report to stderr).\n");
            return 0;
        }
        int r = daemon_opts_parse(&o, argc, argv, &i);
        if (r < 0) return 2;
        if (r > 0) continue;
        if (!strcmp(a, "--out")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "zmix plot: --out needs a value\n");
                return 2;
            }
            out = argv[++i];
        } else if (a[0] == '-' && a[1] == '-') {
            fprintf(stderr, "zmix plot: unknown option '%s' (try --help)\n", a);
            return 2;
        } else if (what) {
            fprintf(stderr, "zmix plot: unexpected argument '%s'\n", a);
            return 2;
        } else {
            what = a;
        }
    }
    if (!what || !out) {
        fprintf(stderr, "usage: zmix plot JOB|RESULT.json --out CONV.svg\n");
        return 2;
    }
    plot_src p;
    memset(&p, 0, sizeof p);
    int is_job = what[strspn(what, "0123456789")] == '\0';
    int rc;
    if (is_job) {
        uint64_t job;
        if (daemon_parse_job("plot", what, &job)) return 2;
        rc = load_job(&o, job, &p);
    } else {
        rc = load_json(what, &p);
    }
    if (rc) {
        src_free(&p);
        return rc;
    }
    /* Per-expert α: with per-layer α (dim = M·K, α[m·K + k]) the M values of an expert are
     * averaged, means and stds alike, so one band per expert stays readable. */
    int K = p.n_experts, M = p.dim / K, G = p.n_gen;
    double *am = calloc((size_t)G * K, sizeof *am), *as = calloc((size_t)G * K, sizeof *as);
    if (!am || !as) {
        free(am);
        free(as);
        src_free(&p);
        fprintf(stderr, "zmix plot: out of memory\n");
        return 1;
    }
    for (int g = 0; g < G; g++)
        for (int k = 0; k < K; k++) {
            double sm = 0, ss = 0;
            for (int m = 0; m < M; m++) {
                sm += p.mean[(size_t)g * p.dim + (size_t)m * K + k];
                ss += p.std[(size_t)g * p.dim + (size_t)m * K + k];
            }
            am[(size_t)g * K + k] = M ? sm / M : NAN;
            as[(size_t)g * K + k] = M ? ss / M : NAN;
        }
    plot_data d = {.n_gen = G,
                   .generation = p.generation,
                   .best_acc = p.s[0],
                   .elite_acc = p.s[1],
                   .pop_acc = p.s[2],
                   .best_ll = p.s[3],
                   .elite_ll = p.s[4],
                   .pop_ll = p.s[5],
                   .n_experts = M ? K : 0,
                   .expert_names = (const char *const *)p.names,
                   .alpha_mean = am,
                   .alpha_std = as,
                   .n_matrices_averaged = M,
                   .title = p.title,
                   .choice = p.choice};
    /* "-": the SVG on standard output, the report on stderr */
    int to_stdout = out_file_is_stdout(out);
    FILE *rep = out_file_report(to_stdout);
    const char *name = to_stdout ? "standard output" : out;
    FILE *f = to_stdout ? stdout : fopen(out, "w");
    if (!f) {
        fprintf(stderr, "zmix plot: %s: cannot create: %s\n", out, strerror(errno));
        rc = 1;
    } else {
        int bad = plot_svg_write(f, &d);
        bad |= to_stdout ? fflush(f) != 0 : fclose(f) != 0;
        if (bad) {
            fprintf(stderr, "zmix plot: %s: write failed\n", name);
            rc = 1;
        } else if (o.json) {
            fprintf(rep, "{\"out\":\"");
            for (const char *q = out; *q; q++) { /* a path is the one free-form string */
                if (*q == '"' || *q == '\\') fputc('\\', rep);
                fputc((unsigned char)*q < 0x20 ? '?' : *q, rep);
            }
            fprintf(rep, "\",\"generations\":%d,\"experts\":%d,\"matrices_averaged\":%d}\n", G, K,
                    M);
        } else {
            fprintf(rep, "wrote %s (%d generations, %d experts%s)\n", name, G, K,
                    M > 1 ? ", per-layer alpha averaged over matrices" : "");
        }
    }
    free(am);
    free(as);
    src_free(&p);
    return rc;
}
