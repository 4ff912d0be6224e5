/*
 * Live progress of a job for `zmix submit --wait` and `zmix wait`: a bar redrawn in place on
 * a terminal, one plain line per generation otherwise. The formatting is pure (testable);
 * progress_update decides what to draw.
 */
#ifndef ZMIX_CLI_PROGRESS_H
#define ZMIX_CLI_PROGRESS_H

#include <stddef.h>
#include <stdio.h>

#include "zmix/client.h"

/* The bar line (no "\r", no newline), shorter than width columns (the bar shrinks, then
 * goes, on narrow terminals):
 *   [########............]  12/50  best acc 0.7500 loglik -1.2346  812 eval/s
 * second names the score's second number: "loglik", or "margin" for multiple choice (NULL:
 * "loglik"). */
void progress_format_bar(char *buf, size_t cap, const zmix_client_status *s, int width,
                         const char *second);
/* A plain line: "job 7: generation 12/50: best acc 0.7500 loglik -1.23456, 812 eval/s" */
void progress_format_line(char *buf, size_t cap, const zmix_client_status *s, const char *second);
/* Evaluations per second of scoring time (0 before any). */
double progress_evals_per_s(const zmix_client_status *s);

typedef struct progress {
    FILE *out;
    int tty;      /* redraw in place */
    int width;    /* terminal columns */
    uint64_t job; /* statuses of other jobs are ignored */
    int last_generation;
    int drawn;          /* a bar is on screen (needs a newline before other output) */
    const char *second; /* the score's second number: NULL ("loglik") or "margin" */
} progress;

void progress_init(progress *p, FILE *out, uint64_t job);
/* Draws s if it is this job's and shows something new. */
void progress_update(progress *p, const zmix_client_status *s);
/* Ends the bar's line (if one is on screen). */
void progress_finish(progress *p);

#endif
