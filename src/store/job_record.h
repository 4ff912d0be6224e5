/*
 * Inside src/store: a job record as bytes (<id>.job; format in docs/persistence.md).
 * Thread: any; no state.
 */
#ifndef ZMIX_STORE_JOB_RECORD_H
#define ZMIX_STORE_JOB_RECORD_H

#include "store/job_store.h"
#include "util/record.h"

#define JOB_RECORD_MAX_EXAMPLES (1 << 20)

/* The record file's bytes into w (caller frees with recw_free). */
int job_encode(const job_record *r, rec_writer *w, zmix_error *err);
/* Every check the loader makes: ZMIX_EFORMAT for anything but a whole, valid record. */
int job_decode(const uint8_t *buf, size_t len, job_record *out, zmix_error *err);

#endif
