/*
 * zmix_generate: greedy continuation of a fixed length under z' (or the base model), kept for
 * the callers that want exactly n_new ids (tests, examples' targets). It is a generator run
 * with the KV cache and no stop token (decode.c).
 */
#include "zmix/generate.h"

int zmix_generate(const zmix_runtime *rt, int rescale, const float *z, const int32_t *prompt,
                  int n_prompt, int n_new, int32_t *out, zmix_error *err)
{
    if (n_prompt < 1) return zmix_error_set(err, ZMIX_EINVAL, "the prompt is empty");
    if (n_new < 0) return zmix_error_set(err, ZMIX_EINVAL, "%d new tokens (expected >= 0)", n_new);
    if (n_new == 0) return 0;
    zmix_generator *g;
    int rc = zmix_generator_create(zmix_runtime_model(rt), rt, rescale, z, &g, err);
    if (rc) return rc;
    zmix_gen_opts opts;
    zmix_gen_opts_default(&opts);
    opts.max_tokens = n_new;
    opts.ignore_eos = 1;
    int n_out;
    zmix_gen_finish finish;
    rc = zmix_generate_tokens(g, prompt, n_prompt, &opts, out, &n_out, &finish, err);
    zmix_generator_free(g);
    return rc;
}
