#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "zmix/version.h"

static const zmix_cli_command commands[] = {
    {"generate", "greedy continuation of a prompt (token ids), optionally under an expert mix",
     cmd_generate},
    {"score", "accuracy and log-likelihood of an expert mix on a few-shot example set", cmd_score},
    {"adapt", "run the CEM adaptation search in-process and print the result as JSON", cmd_adapt},
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
