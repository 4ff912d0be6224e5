#include "util/shortest.h"

#include <stdio.h>
#include <stdlib.h>

void zmix_shortest_double(char buf[32], double v)
{
    for (int digits = 15; digits <= 17; digits++) {
        snprintf(buf, 32, "%.*g", digits, v);
        if (strtod(buf, NULL) == v) return;
    }
}
