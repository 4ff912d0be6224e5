/*
 * The settings of one adaptation search, in one table: for each, its name on the wire (the
 * `cem` map of `submit`, proto/PROTOCOL.md §4.5), its command-line flag (the same for
 * `zmix adapt` and `zmix submit`), its type, its accepted range, the daemon limit that may
 * lower that range, and its help text. `zmix adapt` and `zmix submit` parse their flags and
 * print their help from it; the daemon's job spec parser reads and writes the `cem` map from it.
 *
 * Defaults are not in the table: they are zmix_adapt_opts_default's (for the CEM fields the
 * engine's zmix_cem_settings_default), and the help text shows them from there.
 */
#ifndef ZMIX_ADAPT_CEM_OPTIONS_H
#define ZMIX_ADAPT_CEM_OPTIONS_H

#include <stddef.h>
#include <stdio.h>

#include "zmix/adapt.h"

typedef enum cem_option_id {
    CEM_OPT_PER_LAYER,
    CEM_OPT_METHOD,
    CEM_OPT_POP,
    CEM_OPT_ELITE,
    CEM_OPT_ITERS,
    CEM_OPT_SEED,
    CEM_OPT_INIT_STD,
    CEM_OPT_BOUNDS,
    CEM_OPT_NORMALIZE,
    CEM_OPT_METRIC,
    CEM_OPT_PATIENCE,
    CEM_OPT_STD_TOL,
    CEM_OPT_STD_FLOOR,
    CEM_OPT_EMA,
    CEM_OPT_ELITISM,
    CEM_OPT_RESCALE,
    CEM_OPT_TARGET_ACCURACY,
    CEM_OPT_VALIDATION,
    CEM_OPT_COUNT
} cem_option_id;

typedef enum cem_option_type {
    CEM_TYPE_BOOL,   /* int, 0 or 1; the flag takes no value and sets flag_value */
    CEM_TYPE_INT,    /* int */
    CEM_TYPE_UINT64, /* uint64_t */
    CEM_TYPE_DOUBLE, /* double */
    CEM_TYPE_BOUNDS, /* two doubles, [lo, hi] on the wire and LO,HI on the command line */
    CEM_TYPE_METRIC, /* zmix_metric: "accuracy", "loglik", "choice", "choice-sum" */
    CEM_TYPE_METHOD  /* zmix_cem_method: "cem", "sep-cma" */
} cem_option_type;

/* The highest population and generation count any search is given (the upper bounds of pop,
 * iters and patience, and of the daemon's --max-pop and --max-generations); a daemon's own
 * limits lower them. */
#define CEM_OPTION_MAX_POP         1000000
#define CEM_OPTION_MAX_GENERATIONS 1000000

/* The daemon limit, if any, that lowers an option's upper bound (zmixd --max-pop,
 * --max-generations). */
typedef enum cem_option_limit {
    CEM_LIMIT_NONE,
    CEM_LIMIT_POP,
    CEM_LIMIT_GENERATIONS
} cem_option_limit;

typedef struct cem_option {
    const char *key;     /* name on the wire: "pop" */
    const char *flag;    /* command-line flag: "--pop" */
    const char *metavar; /* "N" in "--pop N"; NULL for a flag that takes no value */
    cem_option_type type;
    size_t offset;    /* the field of zmix_adapt_opts it sets */
    size_t offset_hi; /* CEM_TYPE_BOUNDS: the field of the upper bound */
    int flag_value;   /* CEM_TYPE_BOOL: what the flag sets (--no-elitism sets 0) */
    double lo, hi;    /* accepted numbers (CEM_TYPE_BOUNDS: for each bound) */
    cem_option_limit limit;
    const char *help;
    const char *default_text; /* NULL: the default value itself */
} cem_option;

extern const cem_option cem_options[CEM_OPT_COUNT];

/* The option with this command-line flag, or NULL. */
const cem_option *cem_option_by_flag(const char *flag);

/* The field an option sets in opts. */
void *cem_option_field(const cem_option *opt, zmix_adapt_opts *opts);
const void *cem_option_field_const(const cem_option *opt, const zmix_adapt_opts *opts);

/* Applies a command-line flag: value is its argument (ignored for a CEM_TYPE_BOOL flag).
 * ZMIX_EINVAL naming the flag, the value and what is accepted:
 * "--pop: '1' is not an integer in [2, 1000000]". */
int cem_option_apply_arg(const cem_option *opt, const char *value, zmix_adapt_opts *opts,
                         zmix_error *err);

/* One help line per option ("  --pop N              population size (default: 32)"), with
 * the defaults of zmix_adapt_opts_default. */
void cem_options_print_help(FILE *out);

/* "accuracy", "loglik", "choice" or "choice-sum". */
const char *cem_metric_name(zmix_metric metric);
/* 0 and *out set for one of those names, else -1. */
int cem_metric_parse(const char *name, zmix_metric *out);
/* "cem" or "sep-cma" (zmix_cem_method_name): 0, else -1. */
int cem_method_parse(const char *name, zmix_cem_method *out);

#endif
