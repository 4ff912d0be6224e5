/*
 * zmixd: settings from the command line (and config file), a logger, then the server.
 * Thread: main.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "daemon/config.h"
#include "daemon/server.h"
#include "util/log.h"
#include "zmix/version.h"

static void print_usage(FILE *out)
{
    fprintf(out,
            "usage: zmixd --model PATH --experts A.st,B.st,... [options]\n\n"
            "zmixd holds a base model and a library of SVF experts, and adapts it to tasks\n"
            "sent by clients over a socket (MessagePack-RPC, see proto/PROTOCOL.md).\n\n"
            "options (also accepted as 'name = value' lines in a --config file):\n"
            "  --model PATH            Hugging Face directory or llama2.c checkpoint\n"
            "  --experts A,B,...       expert safetensors files (one z vector per matrix)\n"
            "  --adapt mlp|attn|all    adapted matrices (default mlp)\n"
            "  --listen unix:PATH      listen on a Unix socket (default: CACHE_DIR/zmixd.sock,\n"
            "                          also beside TCP listeners unless a unix: one is given)\n"
            "  --listen tcp:HOST:PORT  listen on TCP (non-loopback needs --token-file)\n"
            "  --workers N             scoring threads (default: number of cores)\n"
            "  --cache-dir DIR         task cache, job store, factors (default "
            "$XDG_CACHE_HOME/zmix, else ~/.cache/zmix)\n"
            "  --cache-bytes N         memory for cached results (default 256M)\n"
            "  --max-jobs N            unfinished jobs accepted (default 64)\n"
            "  --max-running N         jobs scored at the same time (default 4)\n"
            "  --token-file F          shared token TCP clients must present (auth method)\n"
            "  --http HOST:PORT        HTTP listener: /metrics (Prometheus) and the dashboard\n"
            "                          at / (docs/metrics.md); loopback unless --token-file,\n"
            "                          whose token HTTP requests then need as 'Authorization:\n"
            "                          Bearer TOKEN'\n"
            "  --tenants F             tenants file: lines 'NAME TOKEN [max_running=N]\n"
            "                          [max_queued=N]'; each tenant sees only its own jobs\n"
            "                          and tasks (docs/daemon.md, Tenants)\n"
            "  --tenant-max-running N  jobs of one tenant scored at once (0: no own limit)\n"
            "  --tenant-max-queued N   jobs of one tenant waiting to start (0: no own limit)\n"
            "  --frame-limit N         largest request in bytes (default 4M)\n"
            "  --write-queue-limit N   unread response bytes before a client is cut (64M)\n"
            "  --idle-timeout-ms N     idle connections are closed (default 300000)\n"
            "  --max-connections N     per transport, Unix sockets and TCP (default 1024)\n"
            "  --max-unauth-connections N  TCP connections not authenticated yet (default\n"
            "                          16, at most half of --max-connections)\n"
            "  --auth-timeout-ms N     time from connect to auth (default 10000)\n"
            "  --group-readable        cache directories 0750 and files 0640 (default 0700,\n"
            "                          0600)\n"
            "  --memory-limit N        refuse a model whose memory plan exceeds N bytes\n"
            "                          (default: MemAvailable)\n"
            "  --factor-dtype T        U and Vt of the SVD factors: auto (F16 for a 16-bit\n"
            "                          model, else F32), f32, f16 or bf16\n"
            "  --wprime MODE           auto (default: the expert matrices, for the linear W'\n"
            "                          mode, when they fit) or factored (none: less memory,\n"
            "                          slower on long example sets)\n"
            "  --store URL             local (default: everything on this machine) or\n"
            "                          redis://HOST:PORT[/DB]: join the fleet of daemons on\n"
            "                          that Redis and share the scoring (docs/fleet.md)\n"
            "  --store-password-file F Redis's password (never on the command line)\n"
            "  --fleet-claim-ms N      a chunk pending this long on one fleet member is taken\n"
            "                          over by another (default 30000)\n"
            "  --fleet-lease-ms N      a job whose driver has not renewed its lease this long\n"
            "                          is resumed by another fleet member (default 10000)\n");
    job_limits_print_help(out);
    fprintf(out, "  --config FILE           apply a config file at this point of the command line\n"
                 "  --log-level L           error, warn, info (default), debug\n"
                 "  --log-file F            log to F (reopened on SIGHUP) instead of stderr\n"
                 "  --help, --version\n");
}

int main(int argc, char **argv)
{
    server_config cfg;
    config_default(&cfg);
    zmix_error err = {0};
    const char *action = NULL;
    int rc = config_parse_args(&cfg, argc, argv, &action, &err);
    if (rc == 1 && !strcmp(action, "help")) {
        print_usage(stdout);
        config_free(&cfg);
        return 0;
    }
    if (rc == 1) {
        printf("zmixd %s\n", ZMIX_VERSION_STRING);
        config_free(&cfg);
        return 0;
    }
    if (rc == 0) rc = config_finish(&cfg, &err);
    if (rc != 0) {
        fprintf(stderr, "zmixd: %s\n(see zmixd --help)\n", err.msg);
        config_free(&cfg);
        return 2;
    }
    zmix_log_level level = ZMIX_LOG_INFO;
    zmix_log_level_parse(cfg.log_level, &level, NULL);
    zmix_log *log;
    if (zmix_log_open(cfg.log_file, level, &log, &err) != 0) {
        fprintf(stderr, "zmixd: %s\n", err.msg);
        config_free(&cfg);
        return 1;
    }
    /* A client that disconnects mid-write must not kill the daemon. */
    signal(SIGPIPE, SIG_IGN);
    rc = server_run(&cfg, log, &err);
    if (rc != 0) ZLOG_ERROR(log, "%s", err.msg);
    zmix_log_close(log);
    config_free(&cfg);
    return rc == 0 ? 0 : 1;
}
