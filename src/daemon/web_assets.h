/*
 * The dashboard's static files (src/daemon/web), built into zmixd by
 * cmake/ZmixEmbed.cmake as constant arrays.
 */
#ifndef ZMIX_DAEMON_WEB_ASSETS_H
#define ZMIX_DAEMON_WEB_ASSETS_H

#include <stddef.h>

typedef struct web_asset {
    const char *path; /* "/index.html" */
    const char *type; /* Content-Type */
    const unsigned char *data;
    size_t len;
} web_asset;

extern const web_asset web_assets[];
extern const size_t web_assets_count;

#endif
