/*
 * Greedy continuation under z' (or the base model). A tool for users and tests, not a
 * serving path: each step reruns the causal pass over the whole sequence (no KV cache), and
 * W' is materialised once from U, σ, z', Vt exactly as the reference does.
 */
#include <stdlib.h>
#include <string.h>

#include "compute.h"

int zmix_generate(const zmix_runtime *rt, int rescale, const float *z, const int32_t *prompt,
                  int n_prompt, int n_new, int32_t *out, zmix_error *err)
{
    const zmix_model_config *c = &rt->model->cfg;
    if (n_prompt < 1) return zmix_error_set(err, ZMIX_EINVAL, "the prompt is empty");
    if (n_new < 0) return zmix_error_set(err, ZMIX_EINVAL, "%d new tokens (expected >= 0)", n_new);
    if (n_new == 0) return 0;
    int max_len = n_prompt + n_new - 1; /* the last token is produced, never fed back */
    if (max_len > c->max_seq_len)
        return zmix_error_set(err, ZMIX_ERANGE,
                              "%d prompt + %d new tokens exceed the context length %d", n_prompt,
                              n_new, c->max_seq_len);
    for (int i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= c->vocab_size)
            return zmix_error_set(err, ZMIX_ERANGE,
                                  "prompt token %d is %d, outside the vocabulary [0, %d)", i,
                                  (int)prompt[i], c->vocab_size);

    zmix_model *adapted = NULL;
    int rc = z ? zmix_model_with_wprime(rt, rescale, z, &adapted, err) : 0;
    if (rc) return rc;
    const zmix_model *model = adapted ? adapted : rt->model;
    zmix_rope rope = {0};
    int32_t *seq = malloc((size_t)max_len * sizeof *seq);
    float *scratch = malloc(zmix_forward_scratch_floats(c, max_len, max_len) * sizeof(float));
    float *hidden = malloc((size_t)c->dim * sizeof(float));
    float *logits = malloc((size_t)c->vocab_size * sizeof(float));
    float *tile = zmix_model_has_half(model) ? malloc(ZMIX_TILE_FLOATS * sizeof(float)) : NULL;
    if (!seq || !scratch || !hidden || !logits || (zmix_model_has_half(model) && !tile)) {
        rc = zmix_error_set(err, ZMIX_ENOMEM, "out of memory for the generated sequence");
        goto done;
    }
    if ((rc = zmix_rope_init(&rope, c, max_len, err))) goto done;
    memcpy(seq, prompt, (size_t)n_prompt * sizeof *seq);
    for (int s = 0; s < n_new; s++) {
        int len = n_prompt + s, one = 1;
        zmix_batch batch = {1, seq, &len, &one, NULL, NULL};
        rc = zmix_forward_hidden(model, &rope, &batch, zmix_layer_base, (void *)model, scratch,
                                 tile, hidden, NULL, err);
        if (rc) goto done;
        zmix_lm_head(model, hidden, 1, logits, tile);
        int best = 0;
        for (int j = 1; j < c->vocab_size; j++)
            if (logits[j] > logits[best]) best = j; /* first index on ties */
        out[s] = best;
        if (len < max_len) seq[len] = best;
    }
done:
    zmix_rope_free(&rope);
    free(seq);
    free(scratch);
    free(hidden);
    free(logits);
    free(tile);
    zmix_model_free(adapted);
    return rc;
}
