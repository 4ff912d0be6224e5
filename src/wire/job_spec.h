/*
 * What a client asks for in `submit`, parsed and checked before any work starts: task name,
 * few-shot examples (token ids), CEM and composition settings, priority. A pure function of
 * the request's params map and the daemon's limits, so that it can be unit-tested and fuzzed
 * without a model.
 *
 * The spec digest (SHA-256 over a canonical encoding of the model fingerprint, the experts,
 * the examples and every setting that changes the result) is the task-cache key: a cached
 * result is reused only when all of these match.
 */
#ifndef ZMIX_WIRE_JOB_SPEC_H
#define ZMIX_WIRE_JOB_SPEC_H

#include <msgpack.h>
#include <stdint.h>

#include "zmix/adapt.h"
#include "zmix/cem.h"
#include "zmix/common.h"
#include "zmix/model.h"
#include "wire/job_limits.h"
#include "store/task_name.h"

typedef struct job_spec {
    char task[TASK_NAME_MAX + 1];
    zmix_examples examples;    /* owned (items and tokens from malloc) */
    zmix_cem_settings cem;     /* init_mean is NULL: the default 1/K */
    zmix_compose_opts compose; /* per_layer, normalize, rescale */
    double validation;         /* held-out fraction; < 0 automatic (zmix_adapt_opts) */
    int priority;              /* -10 (lowest) .. 10, default 0 */
    int recompute;             /* ignore a cached result */
    int seed_given;            /* the client chose the seed */
    /* A warm start (submit's warm_start): the cached task named (as stored, tenant-scoped)
     * and the α the search begins from (cem.dim values, owned; cem.init_mean points at it).
     * warm_start "" and warm_mean NULL for a cold start. */
    char warm_start[TASK_NAME_MAX + 1];
    double *warm_mean;
} job_spec;

/* Parses the params of a submit request. cem_defaults holds the defaults for every CEM field
 * (from zmix_cem_settings_default). The accepted settings are checked against the daemon's
 * limits: a value the client gave above --max-pop or --max-generations is refused naming the
 * limit, a default above it is lowered to it; then the engine's own check. On error nothing is
 * left allocated. */
int job_spec_parse(const msgpack_object *params, const job_limits *lim,
                   const zmix_cem_settings *cem_defaults, job_spec *out, zmix_error *err);
void job_spec_free(job_spec *spec);
/* Frees the examples only: a finished job's status still shows every setting, the warm start
 * it was accepted with included. */
void job_spec_drop_examples(job_spec *spec);

/* Upper estimate of the memory a job holds while it runs: its population and scores, the
 * engine's state and per-generation history (2·dim doubles per generation, and as much again
 * for the checkpoint being written), and its examples. The scorer's activations are bounded
 * separately (the runtime's memory budget). */
size_t job_spec_memory(const job_spec *spec);

/* Reads the string field key of params into task and checks it against the task-name rule
 * (task_name.h), naming the field when it is not 'task'. Not required and absent (or nil):
 * task "" and 0. */
int job_task_field(const msgpack_object *params, const char *key, int required,
                   char task[TASK_NAME_MAX + 1], zmix_error *err);
/* The required field 'task': what submit, get and evict do with the name they are given. */
int job_task_param(const msgpack_object *params, char task[TASK_NAME_MAX + 1], zmix_error *err);

/* The options the job's adaptation session runs with. */
void job_spec_adapt_opts(const job_spec *spec, zmix_adapt_opts *out);
/* The job's inputs key (zmix_adapt_key_from over the spec's examples and settings): the task
 * name is not part of it (the cache is indexed by task; the key says whether the entry
 * answers this request). */
void job_spec_key(const job_spec *spec, const char *model_fingerprint, const char *experts_digest,
                  char hex[65]);

/* Packs the effective settings as a map (for status, get and the job store). */
void job_spec_pack_settings(const job_spec *spec, msgpack_packer *pk);
/* The same map as bytes of their own (*data is malloc'ed; free with free()), as the job store
 * and the task cache keep them. */
void job_spec_settings_bytes(const job_spec *spec, uint8_t **data, size_t *len);

/* Rebuilds a spec from what the job store kept: the settings map packed by
 * job_spec_pack_settings, the examples (copied), task and priority, for a model with
 * n_experts experts and n_matrices adapted matrices. The daemon's limits do not apply: a job
 * resumes with the settings it was accepted with, whatever the limits are now (lowered limits
 * apply to new jobs); only the settings' own ranges and the engine's check do. */
int job_spec_restore(const uint8_t *settings, size_t settings_len, const zmix_examples *ex,
                     const char *task, int priority, int n_experts, int n_matrices,
                     const zmix_cem_settings *cem_defaults, job_spec *out, zmix_error *err);
#endif
