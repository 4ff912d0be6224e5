/*
 * The examples file of `zmix submit`: {"examples": [{"prompt": P, "target": T}, ...]} where P
 * and T are token-id arrays or, for a daemon whose model has a tokenizer, text. Parsed by the
 * model's parser (zmix_examples_json_parse), so `zmix submit` and `zmix adapt` read the same
 * format with the same messages, and a broken file is reported with its name and the example
 * at fault before anything is sent; the daemon checks ids against its vocabulary and context.
 */
#ifndef ZMIX_CLI_SUBMIT_EXAMPLES_H
#define ZMIX_CLI_SUBMIT_EXAMPLES_H

#include "zmix/client.h"
#include "zmix/model.h"

typedef struct submit_examples {
    int n;
    zmix_client_example *items; /* point into parsed and the arrays below */
    zmix_examples_json parsed;  /* the file as written: ids or text */
    /* Every choice of the multiple-choice examples, as the client library takes them. */
    const int32_t **choice_ids;
    size_t *choice_len;
    const char **choice_text;
} submit_examples;

/* Messages: "ex.json: examples[3].target is empty". */
int submit_examples_load(const char *path, submit_examples *out, zmix_error *err);
void submit_examples_free(submit_examples *ex);

#endif
