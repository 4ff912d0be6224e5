/*
 * plant_task MODEL DIR N_CHOICES SEED: writes a planted task for the end-to-end tests — K = 4
 * experts (DIR/expert_<k>.st) and 16 examples (DIR/ex.json; multiple choice with N_CHOICES
 * choices, or exact match with 0), targets or answers made with α* = [0.7, 0.1, 0.5, 0.2] and
 * kept only where the base model disagrees — and prints {"experts": [...], "alpha_star":
 * [...]} on stdout. Exit 1 with the reason on stderr when it cannot.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zmix/adapt.h"

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: plant_task MODEL DIR N_CHOICES SEED\n");
        return 2;
    }
    static const float alpha_star[4] = {0.7f, 0.1f, 0.5f, 0.2f};
    zmix_error err;
    zmix_model *model = NULL;
    zmix_planted p;
    memset(&p, 0, sizeof p);
    zmix_planted_opts po;
    zmix_planted_opts_default(&po);
    po.n_choices = atoi(argv[3]);
    po.seed = strtoull(argv[4], NULL, 10);
    po.alpha_star = alpha_star;
    po.distinct_from_base = 1;
    char path[4096];
    snprintf(path, sizeof path, "%s/ex.json", argv[2]);
    int rc = zmix_model_load(argv[1], &model, &err);
    if (!rc) rc = zmix_planted_create(model, argv[2], &po, &p, &err);
    if (!rc) rc = zmix_adapt_examples_save_json(path, &p.examples, &err);
    if (rc) {
        fprintf(stderr, "plant_task: %s\n", err.msg);
    } else {
        printf("{\"experts\": [");
        for (int k = 0; k < p.n_experts; k++) printf("%s\"%s\"", k ? ", " : "", p.expert_paths[k]);
        printf("], \"alpha_star\": [");
        for (int k = 0; k < 4; k++) printf("%s%.9g", k ? ", " : "", alpha_star[k]);
        printf("]}\n");
    }
    zmix_planted_free(&p);
    zmix_model_free(model);
    return rc ? 1 : 0;
}
