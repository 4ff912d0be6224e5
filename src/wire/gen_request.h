/*
 * The params of the generate method (proto/PROTOCOL.md, "generate"): a pure function of the
 * request and the model's numbers, like job_spec for submit.
 */
#ifndef ZMIX_WIRE_GEN_REQUEST_H
#define ZMIX_WIRE_GEN_REQUEST_H

#include <msgpack.h>

#include "store/task_name.h"
#include "wire/job_limits.h"
#include "zmix/generate.h"

/* The most tokens one generate call may produce (the daemon's limit; the model's context
 * bounds prompt + max_tokens - 1 as well). */
#define GEN_MAX_TOKENS 1024

typedef struct gen_request {
    int has_task;
    char task[TASK_NAME_MAX + 1];
    int32_t *prompt; /* n_prompt ids (malloc'ed) */
    int n_prompt;
    int prompt_was_text; /* the prompt came as text */
    zmix_gen_opts opts;  /* opts.stop points at stop */
    int32_t stop[ZMIX_GEN_MAX_STOP];
} gen_request;

/* The fields of generate's params (NULL-terminated), for the caller's key check. */
extern const char *const gen_request_keys[];

/* Parses and checks params (the keys checked by the caller): types (ZMIX_EINVAL naming the field),
 * ranges (ZMIX_ERANGE: token ids outside the vocabulary, max_tokens outside [1, GEN_MAX_TOKENS],
 * temperature, top_p, more than ZMIX_GEN_MAX_STOP stop ids), the context (ZMIX_ELIMIT: prompt +
 * max_tokens - 1 past it), text without a tokenizer (ZMIX_EINVAL). */
int gen_request_parse(const msgpack_object *params, const job_limits *lim, gen_request *out,
                      zmix_error *err);
void gen_request_free(gen_request *r);

#endif
