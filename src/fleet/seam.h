/*
 * Where the fleet meets a job's adaptation session. Thread: whichever calls; a context is
 * used by one thread at a time.
 *
 * A session step is scored only through zmix_session_score, which makes the scorer calls
 * (the candidates' rows, the examples and every setting that changes a score);
 * zmix_session_score_routed sends those calls to a route instead of the model's scorer. The
 * fleet's route is seam_route, which with its context either
 *   - captures: the arguments are copied into a seam_call (to be published as a chunk) and
 *     nothing is scored, or
 *   - injects: the scores a fleet member computed for that call are written where the
 *     scorer would have written them.
 * Running the same piece once in each mode therefore moves the scoring off the process
 * without the session knowing, and the session's own bookkeeping (which rows, which
 * examples, which normalisation) stays the single source of truth.
 */
#ifndef ZMIX_FLEET_SEAM_H
#define ZMIX_FLEET_SEAM_H

#include <stdatomic.h>

#include "zmix/adapt.h"
#include "zmix/model.h"

enum seam_kind { SEAM_ALPHA = 1, SEAM_Z = 2 };

/* One scorer call of a piece: its inputs (captured) and, later, its outputs (a result). */
typedef struct seam_call {
    int kind;                /* SEAM_ALPHA: rows are α (dim K or M·K); SEAM_Z: rows are z' */
    int n, dim;              /* rows, floats per row */
    float *rows;             /* n × dim, owned */
    int per_layer;           /* SEAM_ALPHA: compose settings */
    int normalize;           /* SEAM_ALPHA */
    int rescale;             /* both kinds */
    int choice_norm;         /* zmix_choice_norm */
    const zmix_examples *ex; /* borrowed from the session (its search or held-out view) */

    int have_result;
    int result_rc;          /* 0, or the error a member reported */
    char result_error[256]; /* when result_rc != 0 */
    zmix_score *scores;     /* n, owned, once have_result and result_rc == 0 */
} seam_call;

enum seam_mode { SEAM_CAPTURE = 1, SEAM_INJECT = 2 };

typedef struct seam_ctx {
    int mode;
    const zmix_runtime *rt;
    seam_call *calls; /* capture: grown by seam_route; inject: read in order */
    int n_calls, cap_calls;
    int cursor;         /* inject: the next call to answer */
    int capture_failed; /* capture: out of memory */
    const atomic_int *stop;
} seam_ctx;

void seam_call_free(seam_call *c);

/* The route (zmix_score_route) for zmix_session_score_routed; user is the seam_ctx. */
int seam_route(void *user, const zmix_score_request *req, zmix_score *out, zmix_error *err);

#endif
