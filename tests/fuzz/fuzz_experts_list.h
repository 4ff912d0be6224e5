/* The adapted-matrix list the expert harness loads against (and the seed generator writes
 * for): MLP matrices of a two-layer model with dim 8, hidden 12. */
#ifndef ZMIX_TESTS_FUZZ_EXPERTS_LIST_H
#define ZMIX_TESTS_FUZZ_EXPERTS_LIST_H

#include <stdio.h>
#include <string.h>

#include "model_internal.h"

#define FUZZ_EXPERT_MATRICES 6

static inline size_t fuzz_experts_list(zmix_adapted *list)
{
    static const char *const names[3] = {"mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"};
    static const zmix_matrix_kind kinds[3] = {ZMIX_MAT_GATE, ZMIX_MAT_UP, ZMIX_MAT_DOWN};
    size_t off = 0;
    for (int m = 0; m < FUZZ_EXPERT_MATRICES; m++) {
        zmix_adapted *a = &list[m];
        memset(a, 0, sizeof *a);
        a->layer = m / 3;
        a->kind = kinds[m % 3];
        snprintf(a->name, sizeof a->name, "model.layers.%d.%s.weight", a->layer, names[m % 3]);
        a->rows = m % 3 == 2 ? 8 : 12;
        a->cols = m % 3 == 2 ? 12 : 8;
        a->rank = 8;
        a->z_offset = off;
        off += (size_t)a->rank;
    }
    return off;
}

#endif
