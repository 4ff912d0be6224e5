/*
 * The task-cache record loader (<task>.zmt). Each input is tried twice: as it is (the frame
 * checks: magic, version, length, CRC) and with its length field and CRC recomputed, so the
 * field parser behind the checksum is fuzzed too. A record that parses must copy, and its
 * arrays must be as long as its counts say.
 */
#include <string.h>

#include "fuzz_common.h"
#include "store/task_cache.h"

static void parse_one(const uint8_t *buf, size_t len)
{
    task_result r;
    zmix_error err = {0};
    if (task_record_parse(buf, len, &r, &err) != 0) {
        FUZZ_CHECK(err.code < 0 && err.msg[0]);
        return;
    }
    FUZZ_CHECK(task_name_check(r.task, &err) == 0);
    size_t zn = 0;
    for (int m = 0; m < r.n_matrices; m++) {
        FUZZ_CHECK(r.matrix_names[m] != NULL);
        zn += r.ranks[m];
    }
    volatile float sink = 0;
    for (size_t i = 0; i < zn; i++) sink += r.z[i];
    for (int i = 0; i < r.n_alpha; i++) sink += r.alpha[i];
    (void)sink;
    task_result copy;
    FUZZ_CHECK(task_result_copy(&r, &copy, &err) == 0);
    FUZZ_CHECK(copy.n_alpha == r.n_alpha && copy.n_matrices == r.n_matrices);
    FUZZ_CHECK(zn == 0 || memcmp(copy.z, r.z, zn * sizeof *r.z) == 0);
    task_result_free(&copy);
    task_result_free(&r);
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
