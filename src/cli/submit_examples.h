/*
 * The examples file of `zmix submit`: {"examples": [{"prompt": P, "target": T}, ...]} where P
 * and T are token-id arrays or, for a daemon whose model has a tokenizer, text. Read and
 * checked here so that a broken file is reported with its name and the example at fault
 * before anything is sent; the daemon checks ids against its vocabulary.
 */
#ifndef ZMIX_CLI_SUBMIT_EXAMPLES_H
#define ZMIX_CLI_SUBMIT_EXAMPLES_H

#include "zmix/client.h"

typedef struct submit_examples {
    int n;
    zmix_client_example *items; /* point into ids and texts below */
    int32_t *ids;
    char *texts; /* every text field, NUL-separated */
} submit_examples;

/* Messages: "ex.json: example 3: target is empty". */
int submit_examples_load(const char *path, submit_examples *out, zmix_error *err);
void submit_examples_free(submit_examples *ex);

#endif
