/*
 * The CEM checkpoint loader (zmix_cem_restore), raw and with the record frame's length and
 * CRC-32C fixed. A checkpoint that restores must save to the identical bytes (nothing the loader
 * accepts is silently changed; one of an older version saves as the current version, which
 * then round-trips), and the engine must be able to run one more generation.
 */
#include <math.h>
#include <string.h>

#include "fuzz_common.h"
#include "zmix/cem.h"

static void restore_one(const uint8_t *buf, size_t len)
{
    zmix_cem *cem;
    zmix_error err = {0};
    if (zmix_cem_restore(buf, len, &cem, &err) != 0) {
        FUZZ_CHECK(err.code < 0 && err.msg[0]);
        return;
    }
    uint8_t *again = NULL;
    size_t again_len = 0;
    FUZZ_CHECK(zmix_cem_save(cem, &again, &again_len, &err) == 0);
    FUZZ_CHECK(again_len >= 12 && len >= 12);
    if (memcmp(again + 8, buf + 8, 4) == 0) {
        FUZZ_CHECK(again_len == len && memcmp(again, buf, len) == 0);
    } else { /* an older version is saved as the current one, which must then be stable */
        zmix_cem *up;
        FUZZ_CHECK(zmix_cem_restore(again, again_len, &up, &err) == 0);
        uint8_t *third = NULL;
        size_t third_len = 0;
        FUZZ_CHECK(zmix_cem_save(up, &third, &third_len, &err) == 0);
        FUZZ_CHECK(third_len == again_len && memcmp(third, again, again_len) == 0);
        free(third);
        zmix_cem_free(up);
    }
    free(again);

    int dim = zmix_cem_dim(cem);
    FUZZ_CHECK(dim >= 1);
    if (zmix_cem_done(cem) == 0 && dim <= 4096) {
        zmix_cem_settings s;
        zmix_cem_get_settings(cem, &s);
        if ((size_t)s.pop_size * (size_t)dim <= (1u << 20)) {
            float *pop = malloc((size_t)s.pop_size * (size_t)dim * sizeof *pop);
            zmix_score *sc = calloc((size_t)s.pop_size, sizeof *sc);
            FUZZ_CHECK(pop && sc);
            (void)zmix_cem_ask(cem, pop);
            for (int i = 0; i < s.pop_size; i++) {
                sc[i].accuracy = (double)(i % 3) / 2.0;
                sc[i].loglik = -(double)i;
            }
            (void)zmix_cem_tell(cem, sc, &err);
            free(pop);
            free(sc);
        }
    }
    zmix_cem_free(cem);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    restore_one(data, size);
    uint8_t *fixed = malloc(size ? size : 1);
    if (!fixed) return 0;
    memcpy(fixed, data, size);
    fuzz_record_fix(fixed, size);
    restore_one(fixed, size);
    free(fixed);
    return 0;
}
