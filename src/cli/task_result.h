/*
 * A daemon task's result as zmix_adapt_result with z': the result document (the
 * self-description, docs/results.md) joined with the z' vectors of the get reply. Shared by
 * `zmix get --out` and `zmix export TASK`.
 */
#ifndef ZMIX_CLI_TASK_RESULT_H
#define ZMIX_CLI_TASK_RESULT_H

#include "zmix/adapt.h"
#include "zmix/client.h"

/* r: the task's get reply, fetched with vectors. ZMIX_ENOTFOUND when the daemon has no
 * document for the task (a result from before documents existed). */
int task_result_from_daemon(zmix_client *c, const zmix_client_result *r, zmix_adapt_result *out,
                            zmix_error *err);

#endif
