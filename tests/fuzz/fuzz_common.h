/*
 * Shared by the libFuzzer harnesses. Each harness defines LLVMFuzzerTestOneInput; built with
 * ZMIX_FUZZ=ON (clang) it links libFuzzer's main, otherwise fuzz_replay_main.c, which runs
 * the harness over the regression corpus and the generated seeds as a ctest test, so every
 * crash a fuzzer ever found is replayed by the Release and ASan suites too.
 *
 * A harness aborts (FUZZ_CHECK) when an invariant it can check is broken, not only on memory
 * errors: a parser that accepts bytes and then writes different ones back is a bug as well.
 */
#ifndef ZMIX_TESTS_FUZZ_COMMON_H
#define ZMIX_TESTS_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* The loaders under test read files by path: each harness process writes its input to one
 * private file (created on first use, in /dev/shm when there is one) and passes that path.
 * suffix distinguishes harnesses that need a particular file name. */
const char *fuzz_temp_path(const char *suffix);
void fuzz_write_file(const char *path, const uint8_t *data, size_t size);

/* Record files (the daemon's, and CEM checkpoints) end in a CRC over everything before it, so
 * a random mutation almost always fails the checksum and never reaches the field parser. This
 * fixes the length field (bytes 16..24) and the trailing CRC-32C of a copy so the payload is
 * parsed. No-op when len is too short to hold the frame. */
void fuzz_record_fix(uint8_t *buf, size_t len);

#endif
