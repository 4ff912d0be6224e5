/*
 * What one job may ask of the daemon: the model's numbers (vocabulary, context, K, M) and the
 * configurable per-job limits. The configurable ones are one table — option name, field,
 * default, accepted range, help — that the daemon's configuration (config.c), zmixd --help and
 * the defaults here all read, and that proto/PROTOCOL.md and docs/daemon.md state (a unit test
 * holds those documents to it).
 */
#ifndef ZMIX_WIRE_JOB_LIMITS_H
#define ZMIX_WIRE_JOB_LIMITS_H

#include <stddef.h>
#include <stdio.h>

#include "zmix/common.h"
#include "zmix/model.h"

typedef struct job_limits {
    /* From the model. */
    int vocab_size; /* token ids must lie in [0, vocab_size) */
    int context;    /* prompt + target - 1 tokens of one example must fit */
    int n_experts;  /* K */
    int n_matrices; /* M */
    /* The model's tokenizer, or NULL: then examples must be token ids. With one, a prompt or
     * target may also be a string (prompt: BOS + its tokens; target: its tokens). */
    const zmix_tokenizer *tokenizer;
    /* Configurable (job_limit_options). */
    int max_examples;
    long max_tokens; /* over all examples */
    int max_pop;
    int max_generations;
    int max_dim;          /* search dimension (K or M·K) */
    size_t max_job_bytes; /* memory one job may need (job_spec_memory) */
} job_limits;

typedef enum job_limit_type {
    JOB_LIMIT_INT,  /* int */
    JOB_LIMIT_LONG, /* long */
    JOB_LIMIT_SIZE  /* size_t, in bytes; K/M/G suffixes */
} job_limit_type;

typedef struct job_limit_option {
    const char *name; /* zmixd option and config-file name: "max-pop"; with '_' for '-', the
                         key in info's limits (methods.c) */
    job_limit_type type;
    size_t offset; /* the field of job_limits */
    long long default_value, min, max;
    const char *help; /* for zmixd --help */
} job_limit_option;

#define JOB_LIMIT_OPTIONS 6
extern const job_limit_option job_limit_options[JOB_LIMIT_OPTIONS];

/* The option of this name ("max-pop"), or NULL. */
const job_limit_option *job_limit_option_by_name(const char *name);
/* Sets the option's field of lim to v (which the caller checked against min..max). */
void job_limit_set(job_limits *lim, const job_limit_option *opt, long long v);
long long job_limit_get(const job_limits *lim, const job_limit_option *opt);
/* Every configurable limit at its default; the model's fields zero. */
void job_limits_default(job_limits *lim);
/* A value as zmixd --help and the docs write it: sizes with a K/M/G suffix ("256M"). */
void job_limit_format(const job_limit_option *opt, long long v, char *out, size_t cap);
/* One zmixd --help line per limit, with its default. */
void job_limits_print_help(FILE *out);

#endif
