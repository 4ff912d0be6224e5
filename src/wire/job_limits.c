/*
 * The one table of per-job limits (see job_limits.h): defaults, zmixd options, ranges, help.
 * Thread: any; the table is constant.
 */
#include "wire/job_limits.h"

#include <string.h>

#include "adapt/cem_options.h"

#define FIELD(f) offsetof(job_limits, f)

const job_limit_option job_limit_options[JOB_LIMIT_OPTIONS] = {
    {"max-examples", JOB_LIMIT_INT, FIELD(max_examples), 256, 1, 1000000, "examples of one job"},
    {"max-tokens", JOB_LIMIT_LONG, FIELD(max_tokens), 65536, 1, 1L << 30,
     "tokens of all examples of one job"},
    {"max-pop", JOB_LIMIT_INT, FIELD(max_pop), 1024, 2, CEM_OPTION_MAX_POP,
     "population of one job; an unset pop above it is lowered"},
    {"max-generations", JOB_LIMIT_INT, FIELD(max_generations), 1000, 1, CEM_OPTION_MAX_GENERATIONS,
     "generations of one job; likewise for iters"},
    {"max-dim", JOB_LIMIT_INT, FIELD(max_dim), 4096, 1, 1 << 24,
     "search dimension of one job: K, or M·K per layer"},
    {"job-memory", JOB_LIMIT_SIZE, FIELD(max_job_bytes), 256LL << 20, 1 << 20, 1LL << 40,
     "memory one job may hold, estimated at submit"},
};

const job_limit_option *job_limit_option_by_name(const char *name)
{
    for (int i = 0; i < JOB_LIMIT_OPTIONS; i++)
        if (!strcmp(job_limit_options[i].name, name)) return &job_limit_options[i];
    return NULL;
}

void job_limit_set(job_limits *lim, const job_limit_option *opt, long long v)
{
    void *field = (char *)lim + opt->offset;
    switch (opt->type) {
    case JOB_LIMIT_INT: *(int *)field = (int)v; break;
    case JOB_LIMIT_LONG: *(long *)field = (long)v; break;
    case JOB_LIMIT_SIZE: *(size_t *)field = (size_t)v; break;
    }
}

long long job_limit_get(const job_limits *lim, const job_limit_option *opt)
{
    const void *field = (const char *)lim + opt->offset;
    switch (opt->type) {
    case JOB_LIMIT_INT: return *(const int *)field;
    case JOB_LIMIT_LONG: return *(const long *)field;
    case JOB_LIMIT_SIZE: return (long long)*(const size_t *)field;
    }
    return 0;
}

void job_limits_default(job_limits *lim)
{
    memset(lim, 0, sizeof *lim);
    for (int i = 0; i < JOB_LIMIT_OPTIONS; i++)
        job_limit_set(lim, &job_limit_options[i], job_limit_options[i].default_value);
}

void job_limit_format(const job_limit_option *opt, long long v, char *out, size_t cap)
{
    static const char suffix[] = "GMK";
    for (int s = 0; opt->type == JOB_LIMIT_SIZE && s < 3 && v > 0; s++) {
        long long unit = 1LL << (10 * (3 - s));
        if (v % unit == 0) {
            snprintf(out, cap, "%lld%c", v / unit, suffix[s]);
            return;
        }
    }
    snprintf(out, cap, "%lld", v);
}

void job_limits_print_help(FILE *out)
{
    for (int i = 0; i < JOB_LIMIT_OPTIONS; i++) {
        const job_limit_option *o = &job_limit_options[i];
        char usage[48], def[32];
        snprintf(usage, sizeof usage, "--%s N", o->name);
        job_limit_format(o, o->default_value, def, sizeof def);
        fprintf(out, "  %-23s %s (default %s)\n", usage, o->help, def);
    }
}
