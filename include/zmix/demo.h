/*
 * The embedded default: a complete toy setup generated from a seed, so that zmix's main job
 * (adapt a model to a few-shot task by mixing SVF experts) runs on a machine with nothing
 * downloaded. docs/demo.md describes the files and how the task is made.
 *
 *   DIR/model/         config.json, model.safetensors, tokenizer.json (a byte-level LLaMA)
 *   DIR/experts/       K expert files, <name>.safetensors (metadata "name" = <name>)
 *   DIR/task.json      the few-shot examples, as text
 *   DIR/task.tokens.json         the same examples as token ids (for clients that send ids)
 *   DIR/heldout.json   more prompts of the same task, for checking the adapted mix
 *   DIR/secret/alpha_star.json   the hidden mix α* the targets were made with
 *   DIR/demo.json      manifest (paths, seed, sizes); written last, so its presence means
 *                      the directory is complete
 *
 * The task is planted (zmix_planted_create): every target is the model's greedy continuation
 * of its prompt under z'(α*), so a search that works recovers a mix that reproduces them.
 */
#ifndef ZMIX_DEMO_H
#define ZMIX_DEMO_H

#include <stdint.h>

#include "zmix/common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ZMIX_DEMO_N_EXPERTS 4

typedef struct zmix_demo_opts {
    uint64_t seed;  /* default 1; the same seed writes the same bytes */
    int n_examples; /* few-shot examples in task.json, default 16 */
    int n_heldout;  /* examples in heldout.json, default 16 */
    int force;      /* replace a complete demo already in DIR (default 0: refuse) */
} zmix_demo_opts;

void zmix_demo_opts_default(zmix_demo_opts *opts);

/* What was written (paths relative to DIR are in the manifest). */
typedef struct zmix_demo_info {
    int n_experts;
    char expert_names[ZMIX_DEMO_N_EXPERTS][16];
    float alpha_star[ZMIX_DEMO_N_EXPERTS]; /* sums to 1 */
    int n_tried;                           /* prompts drawn to find the examples */
} zmix_demo_info;

/* Creates DIR (with any missing parents) and writes the demo into it. Refuses with
 * ZMIX_ESTATE when DIR already holds a demo and opts->force is 0. */
int zmix_demo_create(const char *dir, const zmix_demo_opts *opts, zmix_demo_info *info,
                     zmix_error *err);

#ifdef __cplusplus
}
#endif

#endif
