/*
 * The job-store record loader (<id>.job), raw and with the frame's length and CRC fixed as
 * in fuzz_task_record.c. A record that parses has examples whose items (and choices) point
 * into its token array and a state the daemon knows.
 */
#include <string.h>

#include "fuzz_common.h"
#include "store/job_store.h"

static void parse_one(const uint8_t *buf, size_t len)
{
    job_record r;
    zmix_error err = {0};
    if (job_record_parse(buf, len, &r, &err) != 0) {
        FUZZ_CHECK(err.code < 0 && err.msg[0]);
        return;
    }
    FUZZ_CHECK(r.state >= JOB_QUEUED && r.state <= JOB_CANCELLED);
    FUZZ_CHECK(job_state_name(r.state) != NULL);
    FUZZ_CHECK(memchr(r.reason, '\0', sizeof r.reason) != NULL);
    const zmix_examples *ex = &r.examples;
    for (int i = 0; i < ex->n; i++) {
        const zmix_example *e = &ex->items[i];
        FUZZ_CHECK(e->n_prompt >= 0 && e->n_target >= 0);
        FUZZ_CHECK(e->prompt >= ex->tokens && e->prompt + e->n_prompt <= ex->tokens + ex->n_tokens);
        if (!e->n_choices) {
            FUZZ_CHECK(e->target >= ex->tokens &&
                       e->target + e->n_target <= ex->tokens + ex->n_tokens);
            continue;
        }
        /* Multiple choice: the lengths and the choices inside the block (their shape, the
         * answer among them, is checked when the job's examples are rebuilt). */
        FUZZ_CHECK(!e->target && e->n_target == 0 && e->n_choices <= ZMIX_MAX_CHOICES);
        FUZZ_CHECK(e->choice_len >= ex->tokens &&
                   e->choice_len + e->n_choices <= ex->tokens + ex->n_tokens);
        size_t n = 0;
        for (int c = 0; c < e->n_choices; c++) {
            FUZZ_CHECK(e->choice_len[c] >= 0);
            n += (size_t)e->choice_len[c];
        }
        FUZZ_CHECK(e->choices >= ex->tokens && e->choices + n <= ex->tokens + ex->n_tokens);
    }
    volatile uint8_t sink = 0;
    for (size_t i = 0; i < r.settings_len; i++) sink ^= r.settings[i];
    (void)sink;
    job_record_free(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    parse_one(data, size);
    uint8_t *fixed = malloc(size ? size : 1);
    if (!fixed) return 0;
    memcpy(fixed, data, size);
    fuzz_record_fix(fixed, size);
    parse_one(fixed, size);
    free(fixed);
    return 0;
}
