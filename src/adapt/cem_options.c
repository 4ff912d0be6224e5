#include "adapt/cem_options.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define FIELD(f) offsetof(zmix_adapt_opts, f)

/* In the order of proto/PROTOCOL.md §4.5, which is also the order of the help lines and of the
 * settings map the daemon reports. */
const cem_option cem_options[CEM_OPT_COUNT] = {
    [CEM_OPT_PER_LAYER] = {.key = "per_layer",
                           .flag = "--per-layer",
                           .type = CEM_TYPE_BOOL,
                           .offset = FIELD(per_layer),
                           .flag_value = 1,
                           .help = "one α per expert per adapted matrix (default: one per expert)"},
    [CEM_OPT_METHOD] = {.key = "method",
                        .flag = "--method",
                        .metavar = "M",
                        .type = CEM_TYPE_METHOD,
                        .offset = FIELD(cem.method),
                        .help = "sep-cma (separable CMA-ES steered by the token margin, with its "
                                "own population, spending pop × iters evaluations) or cem (the "
                                "reference's cross-entropy method; --elite and --ema apply)"},
    [CEM_OPT_POP] = {.key = "pop",
                     .flag = "--pop",
                     .metavar = "N",
                     .type = CEM_TYPE_INT,
                     .offset = FIELD(cem.pop_size),
                     .lo = 2,
                     .hi = CEM_OPTION_MAX_POP,
                     .limit = CEM_LIMIT_POP,
                     .help = "population size (sep-cma: pop × iters is the evaluation budget)"},
    /* (0, 1]: the smallest positive ratio still gives one elite (max(1, floor(ratio·pop))). */
    [CEM_OPT_ELITE] = {.key = "elite",
                       .flag = "--elite",
                       .metavar = "R",
                       .type = CEM_TYPE_DOUBLE,
                       .offset = FIELD(cem.elite_ratio),
                       .lo = 1e-9,
                       .hi = 1.0,
                       .help = "elite ratio in (0, 1] (cem only)"},
    [CEM_OPT_ITERS] = {.key = "iters",
                       .flag = "--iters",
                       .metavar = "N",
                       .type = CEM_TYPE_INT,
                       .offset = FIELD(cem.max_generations),
                       .lo = 1,
                       .hi = CEM_OPTION_MAX_GENERATIONS,
                       .limit = CEM_LIMIT_GENERATIONS,
                       .help = "maximum generations (sep-cma: with pop, the budget; at most 8 × "
                               "iters generations)"},
    [CEM_OPT_SEED] = {.key = "seed",
                      .flag = "--seed",
                      .metavar = "S",
                      .type = CEM_TYPE_UINT64,
                      .offset = FIELD(cem.seed),
                      .help = "random seed"},
    /* Negative means the default, which depends on the bounds. */
    [CEM_OPT_INIT_STD] = {.key = "init_std",
                          .flag = "--init-std",
                          .metavar = "X",
                          .type = CEM_TYPE_DOUBLE,
                          .offset = FIELD(cem.init_std),
                          .lo = -1.0,
                          .hi = 1e6,
                          .help = "initial std",
                          .default_text = "cem: half the bounds' width; sep-cma: a fifth; a "
                                          "quarter with a warm start"},
    [CEM_OPT_BOUNDS] = {.key = "bounds",
                        .flag = "--bounds",
                        .metavar = "LO,HI",
                        .type = CEM_TYPE_BOUNDS,
                        .offset = FIELD(cem.lo),
                        .offset_hi = FIELD(cem.hi),
                        .lo = -1e6,
                        .hi = 1e6,
                        .help = "α bounds, LO < HI; samples are clamped into them"},
    [CEM_OPT_NORMALIZE] = {.key = "normalize",
                           .flag = "--normalize",
                           .type = CEM_TYPE_BOOL,
                           .offset = FIELD(cem.normalize),
                           .flag_value = 1,
                           .help = "scale α to sum 1 (per matrix with --per-layer)"},
    [CEM_OPT_METRIC] = {.key = "metric",
                        .flag = "--metric",
                        .metavar = "M",
                        .type = CEM_TYPE_METRIC,
                        .offset = FIELD(cem.metric),
                        .help = "accuracy (ties broken by loglik), loglik, or for multiple "
                                "choice choice or choice-sum"},
    [CEM_OPT_PATIENCE] = {.key = "patience",
                          .flag = "--patience",
                          .metavar = "N",
                          .type = CEM_TYPE_INT,
                          .offset = FIELD(cem.patience),
                          .lo = 0,
                          .hi = CEM_OPTION_MAX_GENERATIONS,
                          .limit = CEM_LIMIT_GENERATIONS,
                          .help = "stop after N generations without improvement, 0 never"},
    [CEM_OPT_STD_TOL] = {.key = "std_tol",
                         .flag = "--std-tol",
                         .metavar = "X",
                         .type = CEM_TYPE_DOUBLE,
                         .offset = FIELD(cem.std_tol),
                         .lo = 0.0,
                         .hi = 1e6,
                         .help = "stop when every std is below X, 0 never"},
    [CEM_OPT_STD_FLOOR] = {.key = "std_floor",
                           .flag = "--std-floor",
                           .metavar = "X",
                           .type = CEM_TYPE_DOUBLE,
                           .offset = FIELD(cem.std_floor),
                           .lo = 0.0,
                           .hi = 1e6,
                           .help = "lower bound of the std"},
    /* [0, 1): an EMA factor of 1 would never move the distribution. */
    [CEM_OPT_EMA] = {.key = "ema",
                     .flag = "--ema",
                     .metavar = "X",
                     .type = CEM_TYPE_DOUBLE,
                     .offset = FIELD(cem.ema),
                     .lo = 0.0,
                     .hi = 0.999999,
                     .help = "EMA factor on mean and std, in [0, 1) (cem only)"},
    [CEM_OPT_ELITISM] = {.key = "elitism",
                         .flag = "--no-elitism",
                         .type = CEM_TYPE_BOOL,
                         .offset = FIELD(cem.elitism),
                         .flag_value = 0,
                         .help = "do not carry the best member over (cem only)"},
    [CEM_OPT_RESCALE] = {.key = "rescale",
                         .flag = "--no-rescale",
                         .type = CEM_TYPE_BOOL,
                         .offset = FIELD(rescale),
                         .flag_value = 0,
                         .help = "do not keep the singular-value mass of each matrix"},
    /* Accuracies lie in [0, 1]: a target above 1 is never reached (2 turns the stop off). */
    [CEM_OPT_TARGET_ACCURACY] = {.key = "target_accuracy",
                                 .flag = "--target-acc",
                                 .metavar = "X",
                                 .type = CEM_TYPE_DOUBLE,
                                 .offset = FIELD(cem.target_accuracy),
                                 .lo = 0.0,
                                 .hi = 2.0,
                                 .help = "stop once accuracy >= X and loglik stalls (2: never)"},
    /* Negative means automatic: the default depends on the number of examples. */
    [CEM_OPT_VALIDATION] = {.key = "validation",
                            .flag = "--validation",
                            .metavar = "F",
                            .type = CEM_TYPE_DOUBLE,
                            .offset = FIELD(validation),
                            .lo = -1.0,
                            .hi = 0.5,
                            .help = "fraction of the examples held out of the search to "
                                    "estimate the result on examples it never saw; 0 none",
                            .default_text = "a quarter with 4 or more examples, else none"},
};

const cem_option *cem_option_by_flag(const char *flag)
{
    for (int i = 0; i < CEM_OPT_COUNT; i++)
        if (!strcmp(cem_options[i].flag, flag)) return &cem_options[i];
    return NULL;
}

void *cem_option_field(const cem_option *opt, zmix_adapt_opts *opts)
{
    return (char *)opts + opt->offset;
}

const void *cem_option_field_const(const cem_option *opt, const zmix_adapt_opts *opts)
{
    return (const char *)opts + opt->offset;
}

static const char *const metric_names[] = {[ZMIX_METRIC_ACCURACY] = "accuracy",
                                           [ZMIX_METRIC_LOGLIK] = "loglik",
                                           [ZMIX_METRIC_CHOICE] = "choice",
                                           [ZMIX_METRIC_CHOICE_SUM] = "choice-sum"};
#define N_METRICS ((int)(sizeof metric_names / sizeof metric_names[0]))

const char *cem_metric_name(zmix_metric metric)
{
    return (int)metric >= 0 && (int)metric < N_METRICS ? metric_names[metric] : "accuracy";
}

int cem_metric_parse(const char *name, zmix_metric *out)
{
    for (int m = 0; m < N_METRICS; m++)
        if (!strcmp(name, metric_names[m])) {
            *out = (zmix_metric)m;
            return 0;
        }
    return -1;
}

int cem_method_parse(const char *name, zmix_cem_method *out)
{
    for (int m = ZMIX_CEM_METHOD_CEM; m <= ZMIX_CEM_METHOD_SEP_CMA; m++)
        if (!strcmp(name, zmix_cem_method_name((zmix_cem_method)m))) {
            *out = (zmix_cem_method)m;
            return 0;
        }
    return -1;
}

static int parse_double(const cem_option *opt, const char *text, double *out, zmix_error *err)
{
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || end == text || *end || !isfinite(v) || v < opt->lo || v > opt->hi)
        return zmix_error_set(err, ZMIX_EINVAL, "%s: '%s' is not a number in [%g, %g]", opt->flag,
                              text, opt->lo, opt->hi);
    *out = v;
    return 0;
}

int cem_option_apply_arg(const cem_option *opt, const char *value, zmix_adapt_opts *opts,
                         zmix_error *err)
{
    void *field = cem_option_field(opt, opts);
    char *end;
    errno = 0;
    switch (opt->type) {
    case CEM_TYPE_BOOL: *(int *)field = opt->flag_value; return 0;
    case CEM_TYPE_INT: {
        long long v = strtoll(value, &end, 10);
        if (errno || end == value || *end || v < (long long)opt->lo || v > (long long)opt->hi)
            return zmix_error_set(err, ZMIX_EINVAL, "%s: '%s' is not an integer in [%lld, %lld]",
                                  opt->flag, value, (long long)opt->lo, (long long)opt->hi);
        *(int *)field = (int)v;
        return 0;
    }
    case CEM_TYPE_UINT64: {
        unsigned long long v = strtoull(value, &end, 10);
        if (errno || end == value || *end || value[0] == '-')
            return zmix_error_set(err, ZMIX_EINVAL, "%s: '%s' is not an unsigned integer",
                                  opt->flag, value);
        *(uint64_t *)field = v;
        return 0;
    }
    case CEM_TYPE_DOUBLE: return parse_double(opt, value, field, err);
    case CEM_TYPE_BOUNDS: {
        char buf[128];
        snprintf(buf, sizeof buf, "%s", value);
        char *comma = strchr(buf, ',');
        if (!comma)
            return zmix_error_set(err, ZMIX_EINVAL, "%s: '%s' is not LO,HI", opt->flag, value);
        *comma = '\0';
        double *hi = (double *)((char *)opts + opt->offset_hi);
        int rc = parse_double(opt, buf, field, err);
        return rc ? rc : parse_double(opt, comma + 1, hi, err);
    }
    case CEM_TYPE_METRIC:
        if (cem_metric_parse(value, field))
            return zmix_error_set(err, ZMIX_EINVAL,
                                  "%s: '%s' is not accuracy, loglik, choice or choice-sum",
                                  opt->flag, value);
        return 0;
    case CEM_TYPE_METHOD:
        if (cem_method_parse(value, field))
            return zmix_error_set(err, ZMIX_EINVAL, "%s: '%s' is not sep-cma or cem", opt->flag,
                                  value);
        return 0;
    }
    return zmix_error_set(err, ZMIX_EINVAL, "%s: unknown option type %d", opt->flag,
                          (int)opt->type);
}

/* The default of one option as the help shows it. */
static void format_default(const cem_option *opt, const zmix_adapt_opts *defaults, char *out,
                           size_t cap)
{
    const void *field = cem_option_field_const(opt, defaults);
    if (opt->default_text) {
        snprintf(out, cap, "%s", opt->default_text);
        return;
    }
    switch (opt->type) {
    case CEM_TYPE_BOOL: out[0] = '\0'; break; /* a flag says what it changes */
    case CEM_TYPE_INT: snprintf(out, cap, "%d", *(const int *)field); break;
    case CEM_TYPE_UINT64: snprintf(out, cap, "%" PRIu64, *(const uint64_t *)field); break;
    case CEM_TYPE_DOUBLE: snprintf(out, cap, "%g", *(const double *)field); break;
    case CEM_TYPE_BOUNDS:
        snprintf(out, cap, "%g,%g", *(const double *)field,
                 *(const double *)((const char *)defaults + opt->offset_hi));
        break;
    case CEM_TYPE_METRIC:
        snprintf(out, cap, "%s", cem_metric_name(*(const zmix_metric *)field));
        break;
    case CEM_TYPE_METHOD:
        snprintf(out, cap, "%s", zmix_cem_method_name(*(const zmix_cem_method *)field));
        break;
    }
}

void cem_options_print_help(FILE *out)
{
    zmix_adapt_opts defaults;
    zmix_adapt_opts_default(&defaults);
    for (int i = 0; i < CEM_OPT_COUNT; i++) {
        const cem_option *o = &cem_options[i];
        char usage[64], def[128];
        snprintf(usage, sizeof usage, "%s%s%s", o->flag, o->metavar ? " " : "",
                 o->metavar ? o->metavar : "");
        format_default(o, &defaults, def, sizeof def);
        fprintf(out, "  %-20s %s", usage, o->help);
        if (def[0]) fprintf(out, " (default: %s)", def);
        fputc('\n', out);
    }
}
