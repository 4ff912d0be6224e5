#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "zmix/version.h"

static const zmix_cli_command commands[] = {
    {"generate", "continue a prompt (ids or text) with the base model or an adaptation",
     cmd_generate},
    {"score", "accuracy and log-likelihood of an expert mix on a few-shot example set", cmd_score},
    {"adapt", "run the CEM adaptation search in-process and print the result as JSON", cmd_adapt},
    {"submit", "send an adaptation job to the daemon (--wait to follow it)", cmd_submit},
    {"status", "state, generation and best score of a daemon job", cmd_status},
    {"wait", "follow a daemon job to its end with live progress", cmd_wait},
    {"cancel", "cancel a queued or running daemon job", cmd_cancel},
    {"jobs", "list the daemon's jobs", cmd_jobs},
    {"export", "a result as a LoRA adapter (PEFT layout) or a merged Hugging Face model",
     cmd_export},
    {"get", "a task's cached result (alpha, scores; z' as safetensors with --out)", cmd_get},
    {"tasks", "list the tasks in the daemon's cache", cmd_tasks},
    {"evict", "remove a task's result from the daemon's cache", cmd_evict},
    {"info", "the daemon's model, experts and limits", cmd_info},
    {"stats", "the daemon's queue, workers, throughput and cache counters", cmd_stats},
    {"plot", "convergence plot (SVG) of a job or a result JSON", cmd_plot},
    {"demo-init", "write the demo model, experts and few-shot task (a toy setup)", cmd_demo_init},
};

static void print_usage(FILE *out)
{
    fprintf(out, "usage: zmix [--help] [--version] COMMAND [ARGS...]\n\n"
                 "zmix adapts a language model to a task from a few examples by mixing SVF "
                 "experts.\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\n'zmix COMMAND --help' describes one command.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        print_usage(stderr);
        return 2;
    }
    const char *name = argv[1];
    if (!strcmp(name, "--help") || !strcmp(name, "-h") || !strcmp(name, "help")) {
        print_usage(stdout);
        return 0;
    }
    if (!strcmp(name, "--version") || !strcmp(name, "version")) {
        printf("zmix %s\n", ZMIX_VERSION_STRING);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(name, commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "zmix: unknown command '%s' (try 'zmix --help')\n", name);
    return 2;
}
