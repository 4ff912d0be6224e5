#include <stdio.h>
#include <string.h>

#include "zmix/version.h"

static void print_usage(FILE *out)
{
    fprintf(out, "usage: zmixd --model PATH --experts A.st,B.st,... [options]\n\n"
                 "zmixd holds a base model and a library of SVF experts, and adapts it to tasks\n"
                 "sent by clients over a socket (MessagePack-RPC).\n\n"
                 "options:\n"
                 "  --help       show this help\n"
                 "  --version    print the version\n");
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            print_usage(stdout);
            return 0;
        }
        if (!strcmp(argv[i], "--version")) {
            printf("zmixd %s\n", ZMIX_VERSION_STRING);
            return 0;
        }
    }
    print_usage(stderr);
    fprintf(stderr, "zmixd: the daemon is not built yet\n");
    return 1;
}
