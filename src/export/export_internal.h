/* Inside src/export: the update of each adapted matrix in its own SVD basis, and the two
 * writers. Not installed. */
#ifndef ZMIX_EXPORT_INTERNAL_H
#define ZMIX_EXPORT_INTERNAL_H

#include "model/compute.h"
#include "zmix/export.h"

/* ΔW of one adapted matrix as its singular components: d_i = σ_i (s·z'_i − 1), taken in order
 * of decreasing |d_i| (ties: lower i first). */
typedef struct export_delta {
    const zmix_adapted *a; /* rt's description of the matrix */
    const zmix_factors *f; /* its SVD, W = U·diag(σ)·Vt */
    const float *z;        /* z' of this matrix (a->rank floats) */
    float s;               /* the rescale factor (1 without rescale) */
    float *d;              /* [rank] */
    int *order;            /* [rank]: component indices by decreasing |d| */
    double *kept;          /* [rank + 1]: kept[r] = Σ d² of the first r components in order */
    int rank;              /* components chosen */
} export_delta;

typedef struct export_plan {
    const zmix_runtime *rt;
    const zmix_adapt_result *res;
    const float *z; /* z' in rt's matrix order */
    int n;
    export_delta *m; /* n = rt's adapted matrices */
} export_plan;

/* The components of every matrix (every rank set to full). */
int export_plan_init(export_plan *p, const zmix_runtime *rt, const zmix_adapt_result *res,
                     const float *z, zmix_error *err);
void export_plan_free(export_plan *p);
/* Relative Frobenius error of matrix m at its chosen rank. */
double export_delta_rel_error(const export_delta *d);

/* Chooses every matrix's rank by opts (AUTO scores candidates on opts->examples) and scores
 * the plan as chosen beside the exact W' and the base model into report. */
int export_choose_ranks(export_plan *p, const zmix_export_opts *opts, zmix_export_report *report,
                        zmix_error *err);
/* The score of a model given as a plain zmix_model (the merged directory as written, loaded
 * back): one full forward per example. */
int export_score_model(const zmix_model *model, const zmix_examples *ex, zmix_score *out,
                       zmix_error *err);

/* The writers: each fills report->matrices[].bytes and report->bytes. */
int export_write_peft(const export_plan *p, const zmix_export_opts *opts, const char *dir,
                      zmix_export_report *report, zmix_error *err);
int export_write_merged(const export_plan *p, const zmix_export_opts *opts, const char *dir,
                        zmix_export_report *report, zmix_error *err);

/* Provenance pairs for a safetensors header (static strings and res's own), n returned. */
int export_provenance_meta(const zmix_adapt_result *res, const char **keys, const char **values,
                           int max);

#endif
