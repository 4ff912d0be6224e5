/*
 * "-" as an output file: standard output. A command writes through out_file_begin, which
 * hands back a temporary file for "-" (writers that rename into place, such as the
 * safetensors writer, need a real path), and out_file_finish copies it to standard output.
 * A command that writes a file to standard output sends its report lines to stderr instead
 * (out_file_report).
 */
#ifndef ZMIX_CLI_OUT_FILE_H
#define ZMIX_CLI_OUT_FILE_H

#include <stdio.h>

typedef struct out_file {
    const char *path;  /* as given: a path or "-" */
    const char *write; /* where to write: path, or the temporary file */
    char tmp[4096];
    int to_stdout;
} out_file;

/* 1 when path is "-". */
int out_file_is_stdout(const char *path);
/* Prepares f for path; for "-" creates an empty temporary file (in $TMPDIR or /tmp). Prints
 * "zmix CMD: ..." and returns -1 on failure. */
int out_file_begin(out_file *f, const char *cmd, const char *path);
/* For "-": copies the temporary file to standard output and removes it; ok = 0 only removes
 * it (the writer failed). Prints and returns -1 on failure. A path: does nothing. */
int out_file_finish(out_file *f, const char *cmd, int ok);
/* Where a command's report lines go: stderr when any of its outputs is standard output. */
FILE *out_file_report(int any_stdout);

#endif
