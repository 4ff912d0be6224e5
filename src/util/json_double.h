#ifndef ZMIX_UTIL_JSON_DOUBLE_H
#define ZMIX_UTIL_JSON_DOUBLE_H

/* v as JSON text, for everything zmix writes as JSON (result documents, the HTTP API): the
 * shortest decimal of 15 to 17 significant digits that reads back as exactly v, so readers
 * get the very doubles the search and the RPC answers hold; "null" for NaN and infinities,
 * which JSON cannot write. Writes at most 32 bytes into buf. */
void zmix_json_double(char buf[32], double v);

#endif
