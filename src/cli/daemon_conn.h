/*
 * What every daemon command shares: the connection options (--socket, --connect,
 * --token-file, --json and their environment variables) and the one-line error messages.
 */
#ifndef ZMIX_CLI_DAEMON_CONN_H
#define ZMIX_CLI_DAEMON_CONN_H

#include "zmix/client.h"

typedef struct daemon_opts {
    const char *cmd;        /* "submit", ... (for messages) */
    const char *address;    /* --socket/--connect, else ZMIX_ADDR, else the default socket */
    const char *token_file; /* --token-file, else ZMIX_TOKEN_FILE */
    int json;               /* --json */
    char socket_buf[512];   /* "unix:" + the --socket path */
} daemon_opts;

/* Consumes argv[*i] (and its value) when it is a connection option: 1 consumed, 0 not one,
 * -1 usage error (printed). */
int daemon_opts_parse(daemon_opts *o, int argc, char **argv, int *i);

/* Connects, printing one line saying what failed and what to do; returns the exit code
 * (0 on success). */
int daemon_connect(const daemon_opts *o, zmix_client **out);

/* Prints "zmix: <what failed>" for a failed call, rephrasing the common cases (daemon gone,
 * job or task not found); returns the exit code 1. */
int daemon_fail(const daemon_opts *o, const zmix_client *c, const zmix_error *err);

/* Prints the last call's result as JSON on stdout; returns the exit code. */
int daemon_print_json(const daemon_opts *o, const zmix_client *c);

/* Parses a job id (a positive integer); prints a usage error and returns -1 otherwise. */
int daemon_parse_job(const char *cmd, const char *s, uint64_t *job);

/* msg without a leading "CMD: " (the daemon's errors start with their method's name). */
const char *daemon_msg_unprefixed(const char *cmd, const char *msg);

#endif
