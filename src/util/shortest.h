#ifndef ZMIX_UTIL_SHORTEST_H
#define ZMIX_UTIL_SHORTEST_H

/* The shortest decimal (of 15 to 17 significant digits) that reads back as exactly v, for
 * JSON written by zmix: documents and API answers then hold the very doubles the RPC answers
 * and the search hold. v must be finite. Writes at most 32 bytes into buf. */
void zmix_shortest_double(char buf[32], double v);

#endif
