/*
 * Test helper for test_arch_reference.py: loads a model directory and writes the logits zmix
 * computes for some token sequences, through the two paths that matter, so that the Python
 * test can hold them against its numpy reference:
 *
 *   arch_logits MODEL SEQS OUT
 *
 * SEQS is text: the first line is T, each further line one sequence of token ids. OUT
 * receives float32, little-endian: for every sequence its full-position logits (len × vocab,
 * zmix_model_forward_logits), then the scorer's target-position logits of all sequences at
 * once (each sequence an example whose target is its last T tokens; the unadapted model,
 * z' = 1, so that the examples run stacked through zmix_candidate_logits). stdout gets one
 * JSON line with what the loader read (context, head_dim, fingerprint). Exit status 1 with
 * the error message on stderr when anything fails (the test checks refusals that way too).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compute.h"

#define MAX_SEQS 16
#define MAX_LEN  4096

static int fail(const char *what, const zmix_error *err)
{
    fprintf(stderr, "%s: %s\n", what, err ? err->msg : "");
    return 1;
}

static int read_seqs(const char *path, int *n_target, int32_t *tok, int *len, int *n_seq)
{
    FILE *f = fopen(path, "r");
    if (!f || fscanf(f, "%d", n_target) != 1) {
        if (f) fclose(f);
        return -1;
    }
    char line[1 << 16];
    int n = 0, used = 0;
    while (fgets(line, sizeof line, f)) {
        char *p = line, *end;
        int count = 0;
        for (long v = strtol(p, &end, 10); end != p; v = strtol(p, &end, 10)) {
            if (used + count >= MAX_SEQS * MAX_LEN) break;
            tok[used + count++] = (int32_t)v;
            p = end;
        }
        if (count == 0) continue;
        if (n == MAX_SEQS) break;
        len[n++] = count;
        used += count;
    }
    fclose(f);
    *n_seq = n;
    return n > 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: arch_logits MODEL SEQS OUT\n");
        return 2;
    }
    static int32_t tok[MAX_SEQS * MAX_LEN];
    int len[MAX_SEQS], n_seq, n_target;
    if (read_seqs(argv[2], &n_target, tok, len, &n_seq)) return fail(argv[2], NULL);

    zmix_error err = {0, ""};
    zmix_model *model;
    if (zmix_model_load(argv[1], &model, &err)) return fail("load", &err);
    const zmix_model_config *c = zmix_model_get_config(model);
    printf("{\"max_seq_len\": %d, \"head_dim\": %d, \"rope_type\": %d, \"fingerprint\": \"%s\"}\n",
           c->max_seq_len, c->head_dim, (int)c->rope_scaling.type, zmix_model_fingerprint(model));

    /* Every path below frees what it holds: a refusal (the exit status the tests check) must
     * not read as a leak under the sanitizers. */
    int rc = 0;
    FILE *out = fopen(argv[3], "wb");
    size_t V = (size_t)c->vocab_size;
    float *logits = malloc((size_t)MAX_SEQS * MAX_LEN * V * sizeof *logits);
    float *ones = NULL;
    zmix_examples ex = {0};
    zmix_runtime *rt = NULL;
    if (!out || !logits) {
        rc = fail(out ? "out of memory" : argv[3], NULL);
        goto done;
    }
    const int32_t *s = tok;
    for (int i = 0; i < n_seq; s += len[i], i++) {
        if (zmix_model_forward_logits(model, s, len[i], logits, &err)) {
            rc = fail("forward", &err);
            goto done;
        }
        fwrite(logits, sizeof *logits, (size_t)len[i] * V, out);
    }

    /* The scorer: every sequence an example, all in one call, base model (z' = 1). */
    zmix_example items[MAX_SEQS];
    s = tok;
    for (int i = 0; i < n_seq; s += len[i], i++) {
        items[i] =
            (zmix_example){s, len[i] - n_target, s + len[i] - n_target, n_target, 0, NULL, NULL, 0};
        if (items[i].n_prompt < 1) {
            rc = fail("a sequence is not longer than T", NULL);
            goto done;
        }
    }
    if (zmix_examples_copy(items, n_seq, &ex, &err)) {
        rc = fail("examples", &err);
        goto done;
    }
    if (zmix_runtime_create_from_z(model, NULL, NULL, NULL, 0, &rt, &err)) {
        rc = fail("runtime", &err);
        goto done;
    }
    size_t zt = zmix_runtime_z_total(rt);
    ones = malloc((zt ? zt : 1) * sizeof *ones);
    for (size_t i = 0; ones && i < zt; i++) ones[i] = 1.0f;
    zmix_compose_opts opts;
    zmix_compose_opts_default(&opts);
    if (!ones ||
        zmix_candidate_logits(rt, &opts, 1, &ex, NULL, ones, ZMIX_WPRIME_AUTO, logits, &err)) {
        rc = fail("scorer", &err);
        goto done;
    }
    fwrite(logits, sizeof *logits, (size_t)n_seq * n_target * V, out);
done:
    if (out && fclose(out) && !rc) rc = fail(argv[3], NULL);
    free(ones);
    free(logits);
    if (ex.items) zmix_examples_free(&ex);
    if (rt) zmix_runtime_free(rt);
    zmix_model_free(model);
    return rc;
}
