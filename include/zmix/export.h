/*
 * zmix export: an adaptation turned into what serving systems load (docs/serving.md).
 *
 * The exact update of an adapted matrix is
 *     ΔW = W' − W = U · diag(σ ⊙ (s·z' − 1)) · Vᵀ,   s = Σσ / Σ(σ ⊙ z') (1 without rescale).
 * U and V are orthonormal, so this is already the SVD of ΔW (up to the order and signs of
 * its values d_i = σ_i (s·z'_i − 1)): its best rank-r approximation keeps the r components
 * with the largest |d_i|, and its error is exactly the norm of the others. No new SVD.
 *
 *   - PEFT LoRA adapter (ZMIX_EXPORT_PEFT): adapter_config.json + adapter_model.safetensors,
 *     lora_B = U_r·diag(sign(d)·√|d|) [out, r] and lora_A = diag(√|d|)·V_rᵀ [r, in], with
 *     lora_alpha equal to the rank so PEFT's scaling lora_alpha / r is 1.
 *   - Merged model (ZMIX_EXPORT_MERGED): the base model's Hugging Face directory with W'
 *     written in, every other tensor and file copied unchanged, in the base's dtype and
 *     sharding.
 *
 * Every function refuses a result made for another base model (fingerprint), another adapted
 * set, or other matrices, with a message saying which.
 */
#ifndef ZMIX_EXPORT_H
#define ZMIX_EXPORT_H

#include <stddef.h>

#include "zmix/adapt.h"
#include "zmix/model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum zmix_export_format {
    ZMIX_EXPORT_PEFT = 1,  /* LoRA adapter in PEFT's layout */
    ZMIX_EXPORT_MERGED = 2 /* complete Hugging Face model directory with W' */
} zmix_export_format;

typedef enum zmix_rank_mode {
    ZMIX_RANK_FULL = 0, /* every component: the adapter equals W' − W to float rounding */
    ZMIX_RANK_FIXED,    /* rank min(N, r_m) for every matrix */
    ZMIX_RANK_ENERGY,   /* the fewest components keeping a fraction of ‖ΔW_m‖²_F per matrix */
    ZMIX_RANK_AUTO      /* the smallest rank per matrix keeping the exact W' score (below) */
} zmix_rank_mode;

typedef struct zmix_export_opts {
    zmix_export_format format;
    zmix_rank_mode rank_mode; /* PEFT only */
    int rank;                 /* ZMIX_RANK_FIXED: N >= 1 */
    double energy;            /* ZMIX_RANK_ENERGY: fraction in (0, 1] */
    /* ZMIX_RANK_AUTO: the adapter must score the exact W''s accuracy and a mean target
     * log-likelihood within loglik_tol of it, on examples. Default 0.01. */
    double loglik_tol;
    int uniform_rank; /* raise every matrix to the largest rank chosen (for llama.cpp, which
                         scales each tensor by lora_alpha / its own rank) */
    const zmix_examples *examples; /* scored beside the exact W' (required for AUTO); NULL:
                                      no scores */
    int n_threads;                 /* scoring threads; <= 1: the caller's */
    const char *model_path;        /* the base model as given (adapter_config.json's
                                      base_model_name_or_path; the directory merged copies) */
} zmix_export_opts;

void zmix_export_opts_default(zmix_export_opts *opts);

/* Parses --rank: "full", "auto", "energy:X" (0 < X <= 1) or a positive integer. */
int zmix_rank_parse(const char *s, zmix_export_opts *opts, zmix_error *err);

typedef struct zmix_export_matrix {
    char name[96]; /* HF tensor name */
    int rows, cols;
    int full_rank;     /* min(rows, cols) */
    int rank;          /* components written (merged: full_rank) */
    double delta_norm; /* ‖ΔW‖_F */
    double rel_error;  /* ‖ΔW − ΔW_r‖_F / ‖ΔW‖_F (0 when ΔW = 0) */
    size_t bytes;      /* bytes of its lora_A + lora_B (PEFT) or of W' (merged) */
} zmix_export_matrix;

typedef struct zmix_export_report {
    zmix_export_format format;
    int n_matrices;
    zmix_export_matrix *matrices;
    long total_rank; /* Σ rank */
    double rel_error; /* over all matrices: ‖ΔW − ΔW_r‖ / ‖ΔW‖ with every matrix stacked */
    size_t bytes;     /* of the files written */
    int scored;       /* the scores below are set (examples were given) */
    zmix_score base;      /* the unadapted model */
    zmix_score exact;     /* W' exactly */
    zmix_score export;    /* the model as exported: W + ΔW_r (merged: W') */
    double loglik_tol;    /* AUTO's tolerance, else NaN */
    int auto_evaluations; /* scorer calls AUTO made */
} zmix_export_report;

void zmix_export_report_free(zmix_export_report *r);
/* The report as JSON (DIR/zmix_export.json holds the same). NULL when out of memory. */
struct cJSON *zmix_export_report_json(const zmix_export_report *r, const zmix_adapt_result *res);

/* 0 when res was made for model (same fingerprint); else ZMIX_ESTATE with a message naming
 * both fingerprints and architectures. Cheap: call it before building a runtime. */
int zmix_export_check_model(const zmix_model *model, const zmix_adapt_result *res, zmix_error *err);

/* z' of res in rt's matrix order (malloc'ed, zmix_runtime_z_total floats), after checking that
 * res was made for rt's model (fingerprint) and adapted set, with the same matrices and
 * ranks. A result without z' is composed from its α with rt's experts, which must be the
 * ones it was made with (experts digest). */
int zmix_export_result_z(const zmix_runtime *rt, const zmix_adapt_result *res, float **z_out,
                         zmix_error *err);

/* Writes the export into out_dir (created if missing; files in it are replaced one by one,
 * each atomically) and fills report. rt must hold rt's model loaded from opts->model_path. */
int zmix_export_run(const zmix_runtime *rt, const zmix_adapt_result *res,
                    const zmix_export_opts *opts, const char *out_dir, zmix_export_report *report,
                    zmix_error *err);

#ifdef __cplusplus
}
#endif

#endif
