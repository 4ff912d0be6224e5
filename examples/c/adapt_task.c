/*
 * A serving system's view of zmixd, in C: submit a task's few-shot examples, wait for the
 * adaptation, fetch the adapted vectors z' and save them as safetensors.
 *
 *     cc adapt_task.c $(pkg-config --cflags --libs zmix-client) -o adapt_task
 *     ./adapt_task unix:$HOME/.cache/zmix/zmixd.sock my-task z.safetensors
 *     ZMIX_ADDR=tcp:127.0.0.1:7878 ZMIX_TOKEN_FILE=token ./adapt_task my-task z.safetensors
 *
 * Without ADDRESS the daemon is found as every zmix client finds it: $ZMIX_ADDR, else the
 * daemon's default socket; $ZMIX_TOKEN_FILE names the token file of a TCP listener that
 * needs one (zmix_client_connect_env).
 *
 * The examples here are made up from the model's vocabulary so that the program runs on any
 * model; a real caller sends its task's tokenised prompts and answers.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zmix/client.h>

enum { N_EXAMPLES = 4, PROMPT_LEN = 8, TARGET_LEN = 2 };

/* Reports a failed call and closes the connection (NULL: none yet). Results of the call
 * that failed are zeroed, so nothing else is held at that point. */
static int fail(zmix_client *c, const char *what, const zmix_error *err)
{
    fprintf(stderr, "adapt_task: %s: %s (%s)\n", what, err->msg, zmix_client_strerror(err->code));
    zmix_client_close(c);
    return 1;
}

int main(int argc, char **argv)
{
    if (argc != 3 && argc != 4) {
        fprintf(stderr, "usage: %s [ADDRESS] TASK OUT.safetensors (default address: $ZMIX_ADDR)\n",
                argv[0]);
        return 2;
    }
    const char *address = argc == 4 ? argv[1] : NULL;
    const char *task = argv[argc - 2], *out = argv[argc - 1];
    zmix_error err;
    zmix_client_opts opts;
    zmix_client_opts_default(&opts);
    opts.timeout_ms = 10000;

    zmix_client *c;
    if (zmix_client_connect_env(address, &opts, &c, &err)) return fail(NULL, "connect", &err);

    zmix_client_info info;
    if (zmix_client_info_get(c, &info, &err)) return fail(c, "info", &err);
    printf("model %s: %d experts, %d adapted matrices\n", info.model_type, info.n_experts,
           info.n_matrices);

    /* Prompts start with BOS; ids avoid the special tokens below 3. */
    int32_t tokens[N_EXAMPLES][PROMPT_LEN + TARGET_LEN];
    zmix_client_example ex[N_EXAMPLES];
    for (int i = 0; i < N_EXAMPLES; i++) {
        for (int j = 0; j < PROMPT_LEN + TARGET_LEN; j++)
            tokens[i][j] = 3 + (int32_t)((i * 131 + j * 17) % (info.vocab_size - 3));
        tokens[i][0] = info.bos_id;
        ex[i] = (zmix_client_example){.prompt = tokens[i],
                                      .n_prompt = PROMPT_LEN,
                                      .target = tokens[i] + PROMPT_LEN,
                                      .n_target = TARGET_LEN};
    }
    zmix_client_info_free(&info);

    zmix_client_cem cem;
    zmix_client_cem_init(&cem); /* everything unset: the daemon's defaults */
    cem.pop = 12;
    cem.iters = 4;
    cem.lo = 0.05; /* keep every expert in the mix: z' never collapses to 0 */
    cem.hi = 1.0;
    zmix_client_submit_req req = {
        .task = task, .examples = ex, .n_examples = N_EXAMPLES, .cem = &cem};
    zmix_client_submitted sub;
    if (zmix_client_submit(c, &req, &sub, &err)) return fail(c, "submit", &err);
    printf("job %llu %s%s\n", (unsigned long long)sub.job, sub.state,
           sub.cached ? " (cached)" : "");

    if (!sub.cached) {
        zmix_client_status st;
        do { /* long-poll in slices; a serving system would do other work in between */
            if (zmix_client_wait(c, sub.job, 5.0, &st, &err)) {
                zmix_client_submitted_free(&sub);
                return fail(c, "wait", &err);
            }
            printf("generation %d/%d, state %s\n", st.generation, st.max_generations, st.state);
            if (!st.timed_out) break;
            zmix_client_status_free(&st);
        } while (1);
        int done = !strcmp(st.state, "done");
        if (!done) fprintf(stderr, "adapt_task: job %s: %s\n", st.state, st.reason);
        zmix_client_status_free(&st);
        if (!done) {
            zmix_client_submitted_free(&sub);
            zmix_client_close(c);
            return 1;
        }
    }
    zmix_client_submitted_free(&sub);

    zmix_client_result res;
    if (zmix_client_get(c, task, 1, &res, &err)) return fail(c, "get", &err);
    printf("task %s: accuracy %.4f loglik %.5f, alpha", res.task, res.score.accuracy,
           res.score.loglik);
    for (int i = 0; i < res.n_alpha; i++) printf(" %.4f", (double)res.alpha[i]);
    printf("\n");
    if (zmix_client_result_save_safetensors(&res, out, &err)) {
        zmix_client_result_free(&res);
        return fail(c, "save", &err);
    }
    printf("wrote %s (%d matrices)\n", out, res.n_matrices);
    zmix_client_result_free(&res);
    zmix_client_close(c);
    return 0;
}
