/*
 * The convergence picture of one CEM run as a standalone SVG: accuracy and log-likelihood
 * per generation (best so far, elite mean, population mean) and the α trajectories (mean ±
 * std band per expert). Pure: data in, text out; cmd_plot.c gathers the data.
 */
#ifndef ZMIX_CLI_SVG_PLOT_H
#define ZMIX_CLI_SVG_PLOT_H

#include <stdio.h>

typedef struct plot_data {
    int n_gen;
    const int *generation; /* n_gen generation numbers (x axis) */
    /* n_gen each; non-finite values are left out of their line */
    const double *best_acc, *elite_acc, *pop_acc;
    const double *best_ll, *elite_ll, *pop_ll;
    int n_experts;
    const char *const *expert_names; /* n_experts */
    /* n_gen × n_experts, row per generation: the mean and std of α per expert (already
     * averaged over matrices for per-layer α) */
    const double *alpha_mean, *alpha_std;
    int n_matrices_averaged; /* > 1: the α panel says it shows averages over this many */
    const char *title;
    int choice; /* multiple choice: accuracy is choice accuracy, the second number the margin */
} plot_data;

/* Axis ticks: up to max_ticks "nice" values (1, 2, 2.5, 5 × 10^k steps) covering [lo, hi].
 * Returns the count written to ticks (cap entries); *step gets the spacing. */
int plot_nice_ticks(double lo, double hi, int max_ticks, double *ticks, int cap, double *step);
/* Linear map of v from [d0, d1] to [r0, r1] (a degenerate domain maps to the middle). */
double plot_scale(double v, double d0, double d1, double r0, double r1);
/* Range of the finite values of a[0..n) (and b, c when not NULL), padded by 5%; [0, 1] when
 * there are none. */
void plot_range(const double *a, const double *b, const double *c, int n, double *lo, double *hi);

/* Writes the SVG document; returns 0 or -1 on a write error. */
/* The colour of expert k's band, line and legend entry: the colour its name says (red,
 * green, blue, gold, ... any case), else the k-th of a 10-colour palette. */
const char *plot_expert_color(const char *name, int k);
int plot_svg_write(FILE *out, const plot_data *d);

#endif
