/*
 * Task results as bytes: the record file and the z′ safetensors file derived from it (see
 * task_record.h; formats in docs/persistence.md). Thread: any; no state.
 */
#include "store/task_record.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/sha256.h"

#define TASK_MAGIC      "ZMIXTASK"
#define TASK_VERSION    1
#define MATRIX_NAME_MAX 1024

/* ---- task_result -------------------------------------------------------------------- */

static size_t z_total_of(const task_result *r)
{
    size_t total = 0;
    for (int m = 0; m < r->n_matrices; m++) total += r->ranks[m];
    return total;
}

void task_result_free(task_result *r)
{
    if (!r) return;
    free(r->expert_scores);
    free(r->alpha);
    if (r->matrix_names)
        for (int m = 0; m < r->n_matrices; m++) free(r->matrix_names[m]);
    free(r->matrix_names);
    free(r->ranks);
    free(r->z);
    free(r->settings);
    free(r->document);
    memset(r, 0, sizeof *r);
}

/* malloc that returns a valid pointer for 0 bytes, so "count > 0 implies non-NULL" is the
 * only rule a reader of a result has to know. */
static void *dup_bytes(const void *src, size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p && n) memcpy(p, src, n);
    return p;
}

void task_result_provenance(const task_result *r, task_provenance *out)
{
    memset(out, 0, sizeof *out);
    if (!r->document_len || r->document[0] != '{') return;
    cJSON *doc = cJSON_ParseWithLength((const char *)r->document, r->document_len);
    struct {
        const char *key;
        char *dst;
    } fields[] = {{"model_fingerprint", out->model_fingerprint},
                  {"experts_digest", out->experts_digest},
                  {"examples_digest", out->examples_digest}};
    for (size_t f = 0; doc && f < sizeof fields / sizeof *fields; f++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(doc, fields[f].key);
        if (cJSON_IsString(v) && strlen(v->valuestring) < sizeof out->model_fingerprint)
            strcpy(fields[f].dst, v->valuestring);
    }
    cJSON_Delete(doc);
}

int task_result_copy(const task_result *src, task_result *dst, zmix_error *err)
{
    memset(dst, 0, sizeof *dst);
    memcpy(dst->task, src->task, sizeof dst->task);
    memcpy(dst->key, src->key, sizeof dst->key);
    dst->job_id = src->job_id;
    dst->created_ms = src->created_ms;
    dst->score = src->score;
    dst->base_score = src->base_score;
    dst->n_experts = src->n_experts;
    dst->n_alpha = src->n_alpha;
    dst->n_matrices = src->n_matrices;
    dst->settings_len = src->settings_len;
    dst->document_len = src->document_len;
    size_t zt = z_total_of(src);
    dst->expert_scores =
        dup_bytes(src->expert_scores, (size_t)src->n_experts * sizeof *src->expert_scores);
    dst->alpha = dup_bytes(src->alpha, (size_t)src->n_alpha * sizeof *src->alpha);
    dst->ranks = dup_bytes(src->ranks, (size_t)src->n_matrices * sizeof *src->ranks);
    dst->z = dup_bytes(src->z, zt * sizeof *src->z);
    dst->settings = dup_bytes(src->settings, src->settings_len);
    dst->document = dup_bytes(src->document, src->document_len);
    dst->matrix_names = calloc((size_t)src->n_matrices + 1, sizeof *dst->matrix_names);
    int ok = dst->expert_scores && dst->alpha && dst->ranks && dst->z && dst->settings &&
             dst->document && dst->matrix_names;
    for (int m = 0; ok && m < src->n_matrices; m++) {
        dst->matrix_names[m] = dup_bytes(src->matrix_names[m], strlen(src->matrix_names[m]) + 1);
        ok = dst->matrix_names[m] != NULL;
    }
    if (!ok) {
        task_result_free(dst);
        return zmix_error_set(err, ZMIX_ENOMEM, "task %s: cannot copy the result", src->task);
    }
    return 0;
}

/* What a resident result costs, for the budget: every array plus the struct itself. */
size_t result_bytes(const task_result *r)
{
    size_t b = sizeof *r + (size_t)r->n_experts * sizeof(zmix_score) +
               (size_t)r->n_alpha * sizeof(float) +
               (size_t)r->n_matrices * (sizeof(char *) + sizeof(uint32_t)) +
               z_total_of(r) * sizeof(float) + r->settings_len + r->document_len;
    for (int m = 0; m < r->n_matrices; m++) b += strlen(r->matrix_names[m]) + 1;
    return b;
}

/* Everything put needs to hold before it may write a file from r. */
int result_check(const task_result *r, zmix_error *err)
{
    int rc = task_name_check(r->task, err);
    if (rc) return rc;
    if (strnlen(r->key, sizeof r->key) == sizeof r->key)
        return zmix_error_set(err, ZMIX_EINVAL, "task %s: key longer than %d bytes", r->task,
                              TASK_KEY_MAX);
    if (r->n_experts < 0 || r->n_alpha < 0 || r->n_matrices < 0)
        return zmix_error_set(err, ZMIX_EINVAL,
                              "task %s: negative count (experts %d, alpha %d, matrices %d)",
                              r->task, r->n_experts, r->n_alpha, r->n_matrices);
    if ((r->n_experts && !r->expert_scores) || (r->n_alpha && !r->alpha) ||
        (r->n_matrices && (!r->matrix_names || !r->ranks || !r->z)) ||
        (r->settings_len && !r->settings) || (r->document_len && !r->document))
        return zmix_error_set(err, ZMIX_EINVAL, "task %s: a non-empty array is NULL", r->task);
    uint64_t total = 0;
    for (int m = 0; m < r->n_matrices; m++) {
        const char *name = r->matrix_names[m];
        if (!name || !name[0] || strlen(name) > MATRIX_NAME_MAX)
            return zmix_error_set(err, ZMIX_EINVAL,
                                  "task %s: matrix %d: name empty or longer than %d bytes", r->task,
                                  m, MATRIX_NAME_MAX);
        if (strcmp(name, "__metadata__") == 0)
            return zmix_error_set(err, ZMIX_EINVAL, "task %s: matrix %d is named __metadata__",
                                  r->task, m);
        if (r->ranks[m] == 0)
            return zmix_error_set(err, ZMIX_EINVAL, "task %s: matrix %s: rank 0", r->task, name);
        for (int j = 0; j < m; j++)
            if (strcmp(r->matrix_names[j], name) == 0)
                return zmix_error_set(err, ZMIX_EINVAL, "task %s: matrix %s listed twice", r->task,
                                      name);
        total += r->ranks[m];
    }
    if (total > (uint64_t)1 << 32)
        return zmix_error_set(err, ZMIX_ELIMIT, "task %s: z' of %llu floats is too large", r->task,
                              (unsigned long long)total);
    return 0;
}

/* ---- record encoding ------------------------------------------------------------------ */

int record_encode(const task_result *r, rec_writer *w, uint32_t *crc, zmix_error *err)
{
    recw_begin(w, TASK_MAGIC, TASK_VERSION);
    recw_str16(w, r->task);
    recw_str16(w, r->key);
    recw_u64(w, r->job_id);
    recw_i64(w, r->created_ms);
    recw_f64(w, r->score.accuracy);
    recw_f64(w, r->score.loglik);
    recw_f64(w, r->base_score.accuracy);
    recw_f64(w, r->base_score.loglik);
    recw_u32(w, (uint32_t)r->n_experts);
    for (int k = 0; k < r->n_experts; k++) {
        recw_f64(w, r->expert_scores[k].accuracy);
        recw_f64(w, r->expert_scores[k].loglik);
    }
    recw_u32(w, (uint32_t)r->n_alpha);
    recw_f32s(w, r->alpha, (size_t)r->n_alpha);
    recw_u32(w, (uint32_t)r->n_matrices);
    for (int m = 0; m < r->n_matrices; m++) {
        recw_str16(w, r->matrix_names[m]);
        recw_u32(w, r->ranks[m]);
    }
    recw_f32s(w, r->z, z_total_of(r));
    recw_blob32(w, r->settings, r->settings_len);
    recw_blob32(w, r->document, r->document_len);
    int rc = recw_finish(w, crc, err);
    if (rc) recw_free(w);
    return rc;
}

/* Decodes a verified-or-not file image; every count is checked against the bytes left
 * before anything is allocated for it. */
int record_decode(const uint8_t *buf, size_t len, task_result *out, uint32_t *crc, zmix_error *err)
{
    memset(out, 0, sizeof *out);
    rec_reader rd;
    int rc = rec_open(buf, len, TASK_MAGIC, TASK_VERSION, NULL, &rd, err);
    if (rc) return rc;
    if (crc)
        *crc = (uint32_t)buf[len - 4] | (uint32_t)buf[len - 3] << 8 | (uint32_t)buf[len - 2] << 16 |
               (uint32_t)buf[len - 1] << 24;
    recr_str16(&rd, out->task, sizeof out->task);
    recr_str16(&rd, out->key, sizeof out->key);
    out->job_id = recr_u64(&rd);
    out->created_ms = recr_i64(&rd);
    out->score.accuracy = recr_f64(&rd);
    out->score.loglik = recr_f64(&rd);
    out->base_score.accuracy = recr_f64(&rd);
    out->base_score.loglik = recr_f64(&rd);

    uint32_t n_experts = recr_u32(&rd);
    if (rd.failed || n_experts > (rd.len - rd.pos) / 16) goto bad;
    out->n_experts = (int)n_experts;
    out->expert_scores = calloc(n_experts ? n_experts : 1, sizeof(zmix_score)); /* margin 0 */
    if (!out->expert_scores) goto nomem;
    for (uint32_t k = 0; k < n_experts; k++) {
        out->expert_scores[k].accuracy = recr_f64(&rd);
        out->expert_scores[k].loglik = recr_f64(&rd);
    }

    uint32_t n_alpha = recr_u32(&rd);
    if (rd.failed || n_alpha > (rd.len - rd.pos) / 4) goto bad;
    out->n_alpha = (int)n_alpha;
    out->alpha = malloc(n_alpha ? n_alpha * sizeof(float) : 1);
    if (!out->alpha) goto nomem;
    recr_f32s(&rd, out->alpha, n_alpha);

    uint32_t n_matrices = recr_u32(&rd);
    if (rd.failed || n_matrices > (rd.len - rd.pos) / 6) goto bad; /* ≥ 6 bytes per matrix */
    out->n_matrices = (int)n_matrices;
    out->matrix_names = calloc((size_t)n_matrices + 1, sizeof(char *));
    out->ranks = malloc(n_matrices ? n_matrices * sizeof(uint32_t) : 1);
    if (!out->matrix_names || !out->ranks) goto nomem;
    uint64_t total = 0;
    for (uint32_t m = 0; m < n_matrices; m++) {
        char name[MATRIX_NAME_MAX + 1];
        recr_str16(&rd, name, sizeof name);
        out->ranks[m] = recr_u32(&rd);
        if (rd.failed || !name[0] || out->ranks[m] == 0) goto bad;
        out->matrix_names[m] = dup_bytes(name, strlen(name) + 1);
        if (!out->matrix_names[m]) goto nomem;
        total += out->ranks[m];
    }
    if (total > (rd.len - rd.pos) / 4) goto bad;
    out->z = malloc(total ? total * sizeof(float) : 1);
    if (!out->z) goto nomem;
    recr_f32s(&rd, out->z, total);

    const uint8_t *blob = recr_blob32(&rd, &out->settings_len);
    out->settings = dup_bytes(blob, out->settings_len);
    blob = recr_blob32(&rd, &out->document_len);
    out->document = dup_bytes(blob, out->document_len);
    if (!out->settings || !out->document) goto nomem;
    rc = recr_end(&rd, "task record", err);
    zmix_error name_err;
    if (rc == 0 && task_name_check(out->task, &name_err) != 0)
        rc = zmix_error_set(err, ZMIX_EFORMAT, "task record: %s", name_err.msg);
    if (rc) task_result_free(out);
    return rc;
bad:
    task_result_free(out);
    return zmix_error_set(err, ZMIX_EFORMAT,
                          "task record: a count runs past the end of the "
                          "payload");
nomem:
    task_result_free(out);
    return zmix_error_set(err, ZMIX_ENOMEM, "task record: cannot allocate the result");
}

int task_record_parse(const uint8_t *buf, size_t len, task_result *out, zmix_error *err)
{
    return record_decode(buf, len, out, NULL, err);
}

int task_record_bytes(const task_result *r, uint8_t **out, size_t *len, zmix_error *err)
{
    rec_writer w;
    int rc = result_check(r, err);
    if (rc == 0) rc = record_encode(r, &w, NULL, err);
    if (rc) return rc;
    *out = w.buf;
    *len = w.len;
    return 0;
}

/* ---- safetensors ---------------------------------------------------------------------- */

static int meta_add(cJSON *meta, const char *key, const char *value)
{
    return cJSON_AddStringToObject(meta, key, value) != NULL;
}

static int meta_add_num(cJSON *meta, const char *key, double v, int digits)
{
    char buf[64];
    snprintf(buf, sizeof buf, "%.*g", digits, v);
    return meta_add(meta, key, buf);
}

/* "[0.25,0.75]": α as JSON text (safetensors metadata values must be strings). */
static char *alpha_text(const task_result *r)
{
    size_t cap = 3 + (size_t)r->n_alpha * 18;
    char *s = malloc(cap);
    if (!s) return NULL;
    size_t at = 0;
    s[at++] = '[';
    for (int i = 0; i < r->n_alpha; i++)
        at += (size_t)snprintf(s + at, cap - at, "%s%.9g", i ? "," : "", (double)r->alpha[i]);
    s[at++] = ']';
    s[at] = '\0';
    return s;
}

/* SHA-256 of z′'s bytes with the tensors in name order: the z_sha256 every self-describing
 * z′ file carries (docs/results.md), whatever order the file lays them out in. */
static int z_sha256(const task_result *r, char hex[65])
{
    int *order = malloc((size_t)(r->n_matrices ? r->n_matrices : 1) * sizeof *order);
    size_t *start = malloc((size_t)(r->n_matrices ? r->n_matrices : 1) * sizeof *start);
    if (!order || !start) {
        free(order);
        free(start);
        return -1;
    }
    size_t at = 0;
    for (int m = 0; m < r->n_matrices; m++) {
        order[m] = m;
        start[m] = at;
        at += r->ranks[m];
    }
    /* insertion sort: a model has at most a few hundred adapted matrices */
    for (int i = 1; i < r->n_matrices; i++)
        for (int k = i;
             k > 0 && strcmp(r->matrix_names[order[k - 1]], r->matrix_names[order[k]]) > 0; k--) {
            int t = order[k];
            order[k] = order[k - 1];
            order[k - 1] = t;
        }
    zmix_sha256 s;
    uint8_t digest[ZMIX_SHA256_BYTES];
    zmix_sha256_init(&s);
    for (int i = 0; i < r->n_matrices; i++)
        zmix_sha256_update(&s, r->z + start[order[i]], (size_t)r->ranks[order[i]] * sizeof(float));
    zmix_sha256_final(&s, digest);
    zmix_sha256_hex(digest, hex);
    free(order);
    free(start);
    return 0;
}

/* The provenance a self-describing z′ file carries (docs/results.md), copied from the
 * result document: which base model (fingerprint and architecture), adapted set, rescale,
 * experts and zmix made it. A result without a document (cached by an older zmixd) gets
 * none, and readers refuse it as not self-describing. */
static int add_provenance(cJSON *meta, const task_result *r)
{
    if (!r->document_len || r->document[0] != '{') return 1;
    cJSON *doc = cJSON_ParseWithLength((const char *)r->document, r->document_len);
    if (!doc) return 1;
    static const char *const strings[] = {"zmix_version",   "model_fingerprint",
                                          "experts_digest", "examples_digest",
                                          "adapt",          "stop_reason"};
    static const char *const bools[] = {"per_layer", "normalize", "rescale"};
    static const char *const json[] = {"model", "experts", "expert_fingerprints"};
    int ok = 1;
    for (size_t i = 0; ok && i < sizeof strings / sizeof *strings; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(doc, strings[i]);
        if (!cJSON_IsString(v)) goto incomplete;
        ok = meta_add(meta, strings[i], v->valuestring);
    }
    for (size_t i = 0; ok && i < sizeof bools / sizeof *bools; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(doc, bools[i]);
        if (!cJSON_IsBool(v)) goto incomplete;
        ok = meta_add(meta, bools[i], cJSON_IsTrue(v) ? "true" : "false");
    }
    for (size_t i = 0; ok && i < sizeof json / sizeof *json; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(doc, json[i]);
        char *text = v ? cJSON_PrintUnformatted(v) : NULL;
        if (!text) goto incomplete;
        ok = meta_add(meta, json[i], text);
        free(text);
    }
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(doc, "n_examples");
    if (ok && cJSON_IsNumber(n)) ok = meta_add_num(meta, "n_examples", n->valuedouble, 17);
    char sha[65];
    if (ok) ok = z_sha256(r, sha) == 0 && meta_add(meta, "z_sha256", sha);
    if (ok)
        ok = meta_add(meta, "zmix_format", ZMIX_Z_FORMAT) &&
             meta_add(meta, "zmix_format_version", ZMIX_Z_FORMAT_VERSION);
    cJSON_Delete(doc);
    return ok;
incomplete: /* an older document: keep the file as it was (not self-describing) */
    for (size_t i = 0; i < sizeof strings / sizeof *strings; i++)
        cJSON_DeleteItemFromObjectCaseSensitive(meta, strings[i]);
    for (size_t i = 0; i < sizeof bools / sizeof *bools; i++)
        cJSON_DeleteItemFromObjectCaseSensitive(meta, bools[i]);
    for (size_t i = 0; i < sizeof json / sizeof *json; i++)
        cJSON_DeleteItemFromObjectCaseSensitive(meta, json[i]);
    cJSON_Delete(doc);
    return 1;
}

/* The complete safetensors image of r's z′: one F32 tensor of shape [rank] per adapted
 * matrix, in the result's matrix order, packed back to back; the header is padded with
 * spaces to a multiple of 8 so the data area is aligned for mmap readers. The metadata
 * carries record_crc32c, the CRC of the record this file was derived from, which is how
 * open recognises a stale file. Same layout as an expert file, so a cached z′ can even be
 * loaded back as an expert (its name is the task). */
int safetensors_encode(const task_result *r, uint32_t record_crc, rec_writer *w, zmix_error *err)
{
    memset(w, 0, sizeof *w);
    cJSON *root = cJSON_CreateObject();
    cJSON *meta = cJSON_AddObjectToObject(root, "__metadata__");
    char *alpha = alpha_text(r);
    char crc_hex[16], job[32], created[32];
    snprintf(crc_hex, sizeof crc_hex, "%08x", record_crc);
    snprintf(job, sizeof job, "%llu", (unsigned long long)r->job_id);
    snprintf(created, sizeof created, "%lld", (long long)r->created_ms);
    int ok = root && meta && alpha && meta_add(meta, "format", "pt") &&
             meta_add(meta, "name", r->task) && meta_add(meta, "task", r->task) &&
             meta_add(meta, "key", r->key) && meta_add(meta, "job_id", job) &&
             meta_add(meta, "created_ms", created) && meta_add(meta, "alpha", alpha) &&
             meta_add_num(meta, "accuracy", r->score.accuracy, 17) &&
             meta_add_num(meta, "loglik", r->score.loglik, 17) &&
             meta_add_num(meta, "base_accuracy", r->base_score.accuracy, 17) &&
             meta_add_num(meta, "base_loglik", r->base_score.loglik, 17) &&
             meta_add(meta, "record_crc32c", crc_hex) && add_provenance(meta, r);
    free(alpha);
    size_t offset = 0;
    for (int m = 0; ok && m < r->n_matrices; m++) {
        cJSON *t = cJSON_AddObjectToObject(root, r->matrix_names[m]);
        double shape[1] = {(double)r->ranks[m]};
        double offs[2] = {(double)offset, (double)(offset + 4 * (size_t)r->ranks[m])};
        ok = t && cJSON_AddStringToObject(t, "dtype", "F32") &&
             cJSON_AddItemToObject(t, "shape", cJSON_CreateDoubleArray(shape, 1)) &&
             cJSON_AddItemToObject(t, "data_offsets", cJSON_CreateDoubleArray(offs, 2));
        offset += 4 * (size_t)r->ranks[m];
    }
    char *json = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (!json)
        return zmix_error_set(err, ZMIX_ENOMEM,
                              "task %s: cannot build the safetensors "
                              "header",
                              r->task);
    size_t hlen = strlen(json);
    size_t padded = (hlen + 7) & ~(size_t)7;
    uint8_t len_le[8];
    for (int i = 0; i < 8; i++) len_le[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    recw_bytes(w, len_le, 8);
    recw_bytes(w, json, hlen);
    for (size_t i = hlen; i < padded; i++) recw_bytes(w, " ", 1);
    recw_f32s(w, r->z, z_total_of(r));
    free(json);
    if (w->failed) {
        recw_free(w);
        return zmix_error_set(err, ZMIX_ENOMEM, "task %s: cannot build the safetensors file",
                              r->task);
    }
    return 0;
}
