/*
 * The zmix command line: one function per subcommand, each taking the arguments after the
 * subcommand name and returning the process exit code (0 success, 1 failure, 2 usage).
 * Offline commands (generate, score, adapt) run the engine in-process; daemon commands talk
 * to zmixd through the client library.
 */
#ifndef ZMIX_CLI_COMMANDS_H
#define ZMIX_CLI_COMMANDS_H

typedef int (*zmix_cli_fn)(int argc, char **argv);

typedef struct zmix_cli_command {
    const char *name;
    const char *summary;
    zmix_cli_fn run;
} zmix_cli_command;

/* Offline model commands (cmd_model.c). */
int cmd_generate(int argc, char **argv);
int cmd_score(int argc, char **argv);
/* Offline adaptation (cmd_adapt.c). */
int cmd_adapt(int argc, char **argv);

#endif
