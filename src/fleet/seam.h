/*
 * Where the fleet meets a job's adaptation session. Thread: whichever calls, state is per
 * thread.
 *
 * A session step is scored only through zmix_session_score, which calls the model's scorer
 * (zmix_score_alpha, or zmix_score_z for the base model's row) with the candidates' rows, the
 * examples and every setting that changes a score. zmixd is linked with those two symbols
 * wrapped (-Wl,--wrap, src/daemon/CMakeLists.txt): on a thread with no seam context the
 * wrappers call the real scorer, so a daemon without a fleet scores exactly as before. With a
 * context, a call is either
 *   - captured: the arguments are copied into a seam_call (to be published as a chunk) and
 *     nothing is scored, or
 *   - injected: the scores a fleet member computed for that call are written where the real
 *     scorer would have written them.
 * Running the same zmix_session_score piece once in each mode therefore moves the scoring
 * off the process without the session knowing, and the session's own bookkeeping (which
 * rows, which examples, which normalisation) stays the single source of truth.
 */
#ifndef ZMIX_FLEET_SEAM_H
#define ZMIX_FLEET_SEAM_H

#include <stdatomic.h>

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
    seam_call *calls; /* capture: grown by the wrappers; inject: read in order */
    int n_calls, cap_calls;
    int cursor;         /* inject: the next call to answer */
    int capture_failed; /* capture: out of memory */
    const atomic_int *stop;
} seam_ctx;

/* Sets (or with NULL clears) the calling thread's context. */
void seam_set(seam_ctx *ctx);
void seam_call_free(seam_call *c);

/* The model's scorers, not wrapped: for fleet members scoring chunks. */
int seam_score_alpha(const zmix_runtime *rt, const zmix_compose_opts *opts, const zmix_examples *ex,
                     int n_cand, const float *alpha, const zmix_score_ctl *ctl, zmix_score *out,
                     zmix_error *err);
int seam_score_z(const zmix_runtime *rt, int rescale, const zmix_examples *ex, int n_cand,
                 const float *z, const zmix_score_ctl *ctl, zmix_score *out, zmix_error *err);

/* The linker's names for the wrapped scorer and the real one (-Wl,--wrap). */
int __wrap_zmix_score_alpha(const zmix_runtime *rt, const zmix_compose_opts *opts,
                            const zmix_examples *ex, int n_cand, const float *alpha,
                            const zmix_score_ctl *ctl, zmix_score *out, zmix_example_score *detail,
                            zmix_error *err);
int __real_zmix_score_alpha(const zmix_runtime *rt, const zmix_compose_opts *opts,
                            const zmix_examples *ex, int n_cand, const float *alpha,
                            const zmix_score_ctl *ctl, zmix_score *out, zmix_example_score *detail,
                            zmix_error *err);
int __wrap_zmix_score_z(const zmix_runtime *rt, int rescale, const zmix_examples *ex, int n_cand,
                        const float *z, const zmix_score_ctl *ctl, zmix_score *out,
                        zmix_example_score *detail, zmix_error *err);
int __real_zmix_score_z(const zmix_runtime *rt, int rescale, const zmix_examples *ex, int n_cand,
                        const float *z, const zmix_score_ctl *ctl, zmix_score *out,
                        zmix_example_score *detail, zmix_error *err);

#endif
