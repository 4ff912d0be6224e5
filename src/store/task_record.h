/*
 * Inside src/store: a cached result as bytes — the task record (<task>.zmt) and the z′
 * safetensors file derived from it — and the checks a result must pass before it is kept.
 * Formats byte by byte in docs/persistence.md. Thread: any; no state.
 */
#ifndef ZMIX_STORE_TASK_RECORD_H
#define ZMIX_STORE_TASK_RECORD_H

#include "store/task_cache.h"
#include "util/record.h"

size_t result_bytes(const task_result *r); /* what a resident copy accounts for */
int result_check(const task_result *r, zmix_error *err);
/* The record file's bytes into w (caller frees with recw_free); *crc is its checksum. */
int record_encode(const task_result *r, rec_writer *w, uint32_t *crc, zmix_error *err);
int record_decode(const uint8_t *buf, size_t len, task_result *out, uint32_t *crc, zmix_error *err);
/* The z′ safetensors file's bytes, derived from the record whose checksum is record_crc. */
int safetensors_encode(const task_result *r, uint32_t record_crc, rec_writer *w, zmix_error *err);

#endif
