#include "util/json_double.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

void zmix_json_double(char buf[32], double v)
{
    if (!isfinite(v)) {
        snprintf(buf, 32, "null");
        return;
    }
    for (int digits = 15; digits <= 17; digits++) {
        snprintf(buf, 32, "%.*g", digits, v);
        if (strtod(buf, NULL) == v) return;
    }
}
