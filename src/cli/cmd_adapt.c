#include <stdio.h>

#include "commands.h"

int cmd_adapt(int argc, char **argv)
{
    fprintf(stderr, "zmix adapt: not built yet\n");
    return 1;
}
