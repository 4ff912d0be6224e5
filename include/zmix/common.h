/*
 * Types shared by every part of zmix: error reporting and the score of a candidate.
 *
 * Errors follow the libuv convention: a function returns 0 on success or a negative
 * ZMIX_E* code, and fills a caller-provided zmix_error with a message that names what
 * was wrong (file, tensor, field, value). Library code never prints and never exits.
 */
#ifndef ZMIX_COMMON_H
#define ZMIX_COMMON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum zmix_errcode {
    ZMIX_OK = 0,
    ZMIX_EINVAL = -1,    /* an argument or setting is out of range */
    ZMIX_EIO = -2,       /* a read, write, open or fsync failed */
    ZMIX_ENOMEM = -3,    /* an allocation failed or a memory budget would be exceeded */
    ZMIX_EFORMAT = -4,   /* a file or message is malformed (bad header, bad JSON, bad dtype) */
    ZMIX_ENOTFOUND = -5, /* a file, tensor, key, job or task does not exist */
    ZMIX_ERANGE = -6,    /* a value lies outside its allowed range (token id, shape, length) */
    ZMIX_ENUMERIC = -7,  /* NaN or Inf in weights, experts or scores */
    ZMIX_ECANCELED = -8, /* the operation was cancelled */
    ZMIX_ELIMIT = -9,    /* a configured limit (queue, frame size, job size) was hit */
    ZMIX_EAUTH = -10,    /* missing or wrong token */
    ZMIX_ESTATE = -11,   /* the object is not in a state that allows the operation */
    ZMIX_EINTERNAL = -12 /* a bug: an invariant did not hold */
};

/* The self-describing z' file (docs/results.md): its __metadata__.zmix_format and version,
 * written by zmix adapt/get/export and by the daemon's task cache alike. */
#define ZMIX_Z_FORMAT         "zmix.z"
#define ZMIX_Z_FORMAT_VERSION "1"

#define ZMIX_ERROR_MSG_MAX 512

typedef struct zmix_error {
    int code;                     /* 0 or a negative zmix_errcode */
    char msg[ZMIX_ERROR_MSG_MAX]; /* human-readable, names the culprit; "" when code == 0 */
} zmix_error;

/* Records code and a printf-style message in err (which may be NULL) and returns code,
 * so that callers can write `return zmix_error_set(err, ZMIX_EINVAL, "...", ...);`. */
int zmix_error_set(zmix_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prepends "prefix: " to an existing message (for adding context on the way up). */
int zmix_error_prefix(zmix_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

void zmix_error_clear(zmix_error *err);

/* Short stable name of a code: "EINVAL", "EIO", ... ("EUNKNOWN" for anything else). */
const char *zmix_strerror(int code);

/* The score of one candidate on a few-shot example set. */
/* For a multiple-choice set, accuracy is the fraction of examples whose answer the model
 * prefers, and loglik the mean over examples of the answer's log-likelihood margin over the
 * best other choice (docs/scoring.md). */
typedef struct zmix_score {
    double accuracy; /* fraction of examples whose every target token is the argmax */
    double loglik;   /* mean over examples of the mean log-probability of the target tokens */
    /* How far the candidate is from a clear win on every target, a smooth stand-in for the
     * accuracy (0 when every target token leads the best other token by ZMIX_MARGIN_GOAL in
     * logit, negative otherwise): the mean over examples of the mean over target tokens of
     * min(0, lead − ZMIX_MARGIN_GOAL); multiple choice: min(0, answer margin − goal). Steers
     * the per-layer search (docs/cem.md); not part of any ranking users choose. */
    double margin;
} zmix_score;

#define ZMIX_MARGIN_GOAL 0.25

typedef enum zmix_metric {
    ZMIX_METRIC_ACCURACY = 0,  /* accuracy first, mean log-likelihood breaks ties */
    ZMIX_METRIC_LOGLIK = 1,    /* mean log-likelihood alone */
    ZMIX_METRIC_CHOICE = 2,    /* multiple choice: accuracy first, then the mean margin; the
                                  choices' log-likelihoods compared per token */
    ZMIX_METRIC_CHOICE_SUM = 3 /* the same with the choices' summed log-likelihoods */
} zmix_metric;

/* Total order used everywhere candidates are ranked (elites and best alike): returns >0 when
 * a is better than b, <0 when worse, 0 when equal under the metric. NaN ranks below all. */
int zmix_score_cmp(const zmix_score *a, const zmix_score *b, zmix_metric metric);

#ifdef __cplusplus
}
#endif

#endif
