#include "daemon_conn.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/file.h"

int daemon_opts_parse(daemon_opts *o, int argc, char **argv, int *i)
{
    const char *a = argv[*i];
    if (!strcmp(a, "--json")) {
        o->json = 1;
        return 1;
    }
    int is_socket = !strcmp(a, "--socket"), is_connect = !strcmp(a, "--connect");
    int is_token = !strcmp(a, "--token-file");
    if (!is_socket && !is_connect && !is_token) return 0;
    if (*i + 1 >= argc) {
        fprintf(stderr, "zmix %s: %s needs a value (try --help)\n", o->cmd, a);
        return -1;
    }
    const char *v = argv[++*i];
    if (is_token) {
        o->token_file = v;
    } else if (is_socket && strncmp(v, "unix:", 5) != 0) {
        int n = snprintf(o->socket_buf, sizeof o->socket_buf, "unix:%s", v);
        if (n < 0 || (size_t)n >= sizeof o->socket_buf) {
            fprintf(stderr, "zmix %s: --socket: path longer than %zu bytes\n", o->cmd,
                    sizeof o->socket_buf - 6);
            return -1;
        }
        o->address = o->socket_buf;
    } else {
        o->address = v;
    }
    return 1;
}

int daemon_connect(const daemon_opts *o, zmix_client **out)
{
    char addr[512], token[1024];
    zmix_error aerr;
    /* --socket/--connect, else ZMIX_ADDR, else the default socket: the library's rule. */
    if (zmix_client_resolve_address(o->address, addr, sizeof addr, &aerr) != 0) {
        fprintf(stderr, "zmix: %s\n", aerr.msg);
        return 1;
    }
    const char *token_file = o->token_file ? o->token_file : getenv("ZMIX_TOKEN_FILE");
    zmix_client_opts copts;
    zmix_client_opts_default(&copts);
    if (token_file && *token_file) {
        zmix_error terr;
        if (fs_read_token_file(token_file, token, sizeof token, NULL, &terr) != 0) {
            fprintf(stderr, "zmix: %s\n", terr.msg);
            return 1;
        }
        copts.token = token;
    }
    zmix_error err;
    zmix_error_clear(&err);
    int rc = zmix_client_connect(addr, &copts, out, &err);
    if (rc == 0) return 0;
    if (rc == ZMIX_ECONNECT) {
        const char *why = strrchr(err.msg, ':');
        fprintf(stderr,
                "zmix: daemon not running at %s (%s; start it with 'zmixd --model DIR --experts "
                "A.st,B.st,...', or point --socket, --connect or ZMIX_ADDR at it)\n",
                addr, why ? why + 2 : err.msg);
    } else if (rc == ZMIX_EAUTH) {
        fprintf(stderr, "zmix: %s refused the token (%s); check --token-file or ZMIX_TOKEN_FILE\n",
                addr, err.msg);
    } else if (rc == ZMIX_EINVAL || rc == ZMIX_ERANGE) {
        fprintf(stderr, "zmix: %s (use unix:PATH or tcp:HOST:PORT)\n", err.msg);
    } else {
        fprintf(stderr, "zmix: %s: %s\n", addr, err.msg);
    }
    return 1;
}

int daemon_fail(const daemon_opts *o, const zmix_client *c, const zmix_error *err)
{
    const char *addr = c ? zmix_client_address(c) : "the daemon";
    if (err->code == ZMIX_EAUTH)
        fprintf(stderr, "zmix %s: %s (the daemon needs a token: --token-file or ZMIX_TOKEN_FILE)\n",
                o->cmd, err->msg);
    else if (err->code == ZMIX_ECONNECT)
        fprintf(stderr, "zmix %s: lost the daemon at %s: %s\n", o->cmd, addr, err->msg);
    else if (err->code == ZMIX_ETIMEDOUT)
        fprintf(stderr, "zmix %s: %s (the daemon at %s is busy or stuck)\n", o->cmd, err->msg,
                addr);
    else
        fprintf(stderr, "zmix %s: %s\n", o->cmd, daemon_msg_unprefixed(o->cmd, err->msg));
    return 1;
}

const char *daemon_msg_unprefixed(const char *cmd, const char *msg)
{
    /* The daemon names its method first ("submit: cem: ..."); the command already says it. */
    size_t n = strlen(cmd);
    return !strncmp(msg, cmd, n) && msg[n] == ':' && msg[n + 1] == ' ' ? msg + n + 2 : msg;
}

int daemon_print_json(const daemon_opts *o, const zmix_client *c)
{
    char *json = NULL;
    zmix_error err;
    zmix_error_clear(&err);
    if (zmix_client_last_json(c, &json, &err)) return daemon_fail(o, c, &err);
    printf("%s\n", json);
    free(json);
    return 0;
}

int daemon_parse_job(const char *cmd, const char *s, uint64_t *job)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-' || v == 0) {
        fprintf(stderr, "zmix %s: '%s' is not a job id (a positive integer; see zmix jobs)\n", cmd,
                s);
        return -1;
    }
    *job = v;
    return 0;
}
