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
/* Exporting a result as a LoRA adapter or a merged model (cmd_export.c). */
int cmd_export(int argc, char **argv);
/* Splits a comma-separated option value in place into at most max items; prints a usage error
 * naming cmd and opt and returns -1 for an empty entry or too many. */
int cli_split_list(const char *cmd, const char *opt, char *s, char **items, int max, int *n);
/* Daemon commands through the client library (cmd_daemon.c) and the plot (cmd_plot.c). */
int cmd_submit(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_wait(int argc, char **argv);
int cmd_cancel(int argc, char **argv);
int cmd_jobs(int argc, char **argv);
int cmd_get(int argc, char **argv);
int cmd_tasks(int argc, char **argv);
int cmd_evict(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_stats(int argc, char **argv);
int cmd_plot(int argc, char **argv);
/* The embedded default: demo model, experts and task (cmd_demo.c). */
int cmd_demo_init(int argc, char **argv);

#endif
