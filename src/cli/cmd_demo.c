/*
 * zmix demo-init DIR: writes the embedded default (a byte-level model, K experts, a planted
 * few-shot task; include/zmix/demo.h) so that zmix can be tried with nothing downloaded. The
 * hidden mix α* goes to DIR/secret/alpha_star.json and is not printed here: the demo reveals
 * it only after the search.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "zmix/demo.h"

static void demo_usage(FILE *out)
{
    fprintf(out,
            "usage: zmix demo-init DIR [--seed S] [--examples N] [--heldout N] [--force]\n"
            "\n"
            "Writes a toy setup generated from a seed (docs/demo.md): a small byte-level\n"
            "LLaMA model in the Hugging Face format (DIR/model), %d SVF experts "
            "(DIR/experts),\n"
            "a few-shot task as text (DIR/task.json, DIR/heldout.json) whose targets the\n"
            "model produces under a hidden expert mix (DIR/secret/alpha_star.json), and a\n"
            "manifest (DIR/demo.json). The same seed writes the same bytes.\n"
            "\n"
            "  --seed S       the generator's seed (default 1; the search's --seed of zmix adapt\n"
            "                 and submit is another setting, default 0)\n"
            "  --examples N   few-shot examples in task.json (default 16)\n"
            "  --heldout N    examples in heldout.json (default 16; 0: none)\n"
            "  --force        replace a demo already in DIR\n",
            ZMIX_DEMO_N_EXPERTS);
}

static int parse_count(const char *opt, const char *s, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < 0 || v > 1024) {
        fprintf(stderr, "zmix demo-init: %s: '%s' is not an integer in [0, 1024]\n", opt, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

int cmd_demo_init(int argc, char **argv)
{
    zmix_demo_opts opts;
    zmix_demo_opts_default(&opts);
    const char *dir = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            demo_usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--force")) {
            opts.force = 1;
            continue;
        }
        if (!strcmp(a, "--seed") || !strcmp(a, "--examples") || !strcmp(a, "--heldout")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "zmix demo-init: %s needs a value\n", a);
                return 2;
            }
            const char *v = argv[++i];
            if (!strcmp(a, "--seed")) {
                char *end;
                errno = 0;
                unsigned long long s = strtoull(v, &end, 10);
                if (errno || end == v || *end || v[0] == '-') {
                    fprintf(stderr, "zmix demo-init: --seed: '%s' is not an unsigned integer\n", v);
                    return 2;
                }
                opts.seed = s;
            } else if (parse_count(a, v,
                                   !strcmp(a, "--examples") ? &opts.n_examples : &opts.n_heldout)) {
                return 2;
            }
            continue;
        }
        if (a[0] == '-') {
            fprintf(stderr, "zmix demo-init: unknown option '%s' (try --help)\n", a);
            return 2;
        }
        if (dir) {
            fprintf(stderr, "zmix demo-init: more than one directory ('%s', '%s')\n", dir, a);
            return 2;
        }
        dir = a;
    }
    if (!dir) {
        demo_usage(stderr);
        return 2;
    }
    zmix_demo_info info;
    zmix_error err;
    zmix_error_clear(&err);
    if (zmix_demo_create(dir, &opts, &info, &err)) {
        fprintf(stderr, "zmix demo-init: %s\n", err.msg);
        return 1;
    }
    printf("wrote the demo (seed %llu) to %s:\n", (unsigned long long)opts.seed, dir);
    printf("  model     %s/model (config.json, model.safetensors, tokenizer.json)\n", dir);
    printf("  experts  ");
    for (int k = 0; k < info.n_experts; k++)
        printf(" %s/experts/%s.safetensors", dir, info.expert_names[k]);
    printf("\n  task      %s/task.json (%d examples)\n", dir, opts.n_examples);
    if (opts.n_heldout > 0)
        printf("  held out  %s/heldout.json (%d examples)\n", dir, opts.n_heldout);
    printf("  secret    %s/secret/alpha_star.json (the hidden mix; look after adapting)\n", dir);
    return 0;
}
