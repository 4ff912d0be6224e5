#include <stdio.h>

#include "commands.h"

int cmd_generate(int argc, char **argv)
{
    fprintf(stderr, "zmix generate: not built yet\n");
    return 1;
}

int cmd_score(int argc, char **argv)
{
    fprintf(stderr, "zmix score: not built yet\n");
    return 1;
}
