/* Inside src/adapt: the result gathered from an engine (the session calls it). */
#ifndef ZMIX_ADAPT_INTERNAL_H
#define ZMIX_ADAPT_INTERNAL_H

#include "zmix/adapt.h"

/* Fills *out from the engine's current state: best α and its composed z', scores, counters,
 * history, provenance (key and examples digest are the caller's). base and experts (K
 * entries) are the baseline scores, copied. */
int zmix_adapt_result_build(const zmix_runtime *rt, const zmix_adapt_opts *opts,
                            const zmix_cem *cem, const zmix_score *base, const zmix_score *experts,
                            int n_examples, double elapsed_s, zmix_adapt_result *out,
                            zmix_error *err);

struct cJSON;
/* The architecture summary of a result ("model" in the document, docs/results.md) and back;
 * from_json returns -1 when a field is missing or mistyped. */
struct cJSON *zmix_adapt_model_json(const zmix_model_config *c);
int zmix_adapt_model_from_json(const struct cJSON *o, zmix_model_config *c);

#endif
