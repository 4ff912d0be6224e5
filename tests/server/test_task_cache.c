/* Task cache: round trips, restart, LRU and budget, evict, corruption on disk, injected
 * write faults, the safetensors z′ file, and kill -9 in the middle of writes. */
#include "persist_testutil.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <errno.h>
#include <pthread.h>
#include <math.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>

#include "util/crc32c.h"
#include "util/record.h"
#include "store/task_cache.h"
#ifdef ZMIX_HAVE_MODEL
#include "model/model_internal.h"
#include "model/safetensors.h"
#endif

/* ---- a test result whose every number derives from (task, version) ----------------- */

#define N_MATRICES 3
static const uint32_t test_ranks[N_MATRICES] = {8, 5, 8};
static const char *test_matrix_names[N_MATRICES] = {"model.layers.0.mlp.gate_proj.weight",
                                                    "model.layers.0.mlp.up_proj.weight",
                                                    "model.layers.0.mlp.down_proj.weight"};
#define Z_TOTAL 21

typedef struct test_result {
    task_result r;
    zmix_score experts[3];
    float alpha[6];
    uint32_t ranks[N_MATRICES];
    char *names[N_MATRICES];
    float z[Z_TOTAL];
    uint8_t settings[16];
    uint8_t examples[7];
} test_result;

static float z_value(int version, int i)
{
    return (float)version + 0.001f * (float)i;
}

static void make_result(test_result *t, const char *task, int version)
{
    memset(t, 0, sizeof *t);
    snprintf(t->r.task, sizeof t->r.task, "%s", task);
    snprintf(t->r.key, sizeof t->r.key, "key-%s-%d", task, version);
    t->r.job_id = 1000 + (uint64_t)version;
    t->r.created_ms = 1700000000000LL + version;
    t->r.score = (zmix_score){0.5 + 0.01 * version, -1.25 - version, 0.0};
    t->r.base_score = (zmix_score){0.25, -2.5, 0.0};
    for (int k = 0; k < 3; k++) t->experts[k] = (zmix_score){0.1 * k, -3.0 + k, 0.0};
    t->r.n_experts = 3;
    t->r.expert_scores = t->experts;
    for (int i = 0; i < 6; i++) t->alpha[i] = (float)version + 0.125f * (float)i;
    t->r.n_alpha = 6;
    t->r.alpha = t->alpha;
    for (int m = 0; m < N_MATRICES; m++) {
        t->ranks[m] = test_ranks[m];
        t->names[m] = (char *)test_matrix_names[m];
    }
    t->r.n_matrices = N_MATRICES;
    t->r.matrix_names = t->names;
    t->r.ranks = t->ranks;
    for (int i = 0; i < Z_TOTAL; i++) t->z[i] = z_value(version, i);
    t->r.z = t->z;
    for (int i = 0; i < 16; i++) t->settings[i] = (uint8_t)(i * 7 + version);
    t->r.settings = t->settings;
    t->r.settings_len = sizeof t->settings;
    memcpy(t->examples, "ex-set", 7);
    t->r.document = t->examples;
    t->r.document_len = sizeof t->examples;
}

/* Asserts that got is exactly make_result(task, version). */
static void assert_result(const task_result *got, const char *task, int version)
{
    test_result want;
    make_result(&want, task, version);
    assert_string_equal(got->task, want.r.task);
    assert_string_equal(got->key, want.r.key);
    assert_true(got->job_id == want.r.job_id);
    assert_true(got->created_ms == want.r.created_ms);
    assert_true(got->score.accuracy == want.r.score.accuracy);
    assert_true(got->score.loglik == want.r.score.loglik);
    assert_true(got->base_score.loglik == want.r.base_score.loglik);
    assert_int_equal(got->n_experts, 3);
    assert_memory_equal(got->expert_scores, want.experts, sizeof want.experts);
    assert_int_equal(got->n_alpha, 6);
    assert_memory_equal(got->alpha, want.alpha, sizeof want.alpha);
    assert_int_equal(got->n_matrices, N_MATRICES);
    for (int m = 0; m < N_MATRICES; m++) {
        assert_string_equal(got->matrix_names[m], test_matrix_names[m]);
        assert_int_equal(got->ranks[m], test_ranks[m]);
    }
    assert_memory_equal(got->z, want.z, sizeof want.z);
    assert_int_equal(got->settings_len, sizeof want.settings);
    assert_memory_equal(got->settings, want.settings, sizeof want.settings);
    assert_int_equal(got->document_len, sizeof want.examples);
    assert_memory_equal(got->document, want.examples, sizeof want.examples);
}

/* ---- fixture ----------------------------------------------------------------------- */

typedef struct fixture {
    char dir[256];
    char tasks[300];
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    testutil_mkdtemp(f->dir, sizeof f->dir);
    snprintf(f->tasks, sizeof f->tasks, "%s/tasks", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    testutil_rmrf(f->dir);
    free(f);
    return 0;
}

static task_cache *open_cache(const fixture *f, size_t budget, persist_problems *problems)
{
    task_cache_config cfg;
    task_cache_config_default(&cfg);
    cfg.dir = f->dir;
    cfg.memory_budget = budget;
    task_cache *c = NULL;
    zmix_error err;
    zmix_error_clear(&err);
    int rc = task_cache_open(&cfg, &c, problems, &err);
    if (rc) fail_msg("task_cache_open: %s", err.msg);
    return c;
}

static void put(task_cache *c, const char *task, int version)
{
    test_result t;
    make_result(&t, task, version);
    zmix_error err;
    int rc = task_cache_put(c, &t.r, &err);
    if (rc) fail_msg("put %s v%d: %s", task, version, err.msg);
}

static void expect(task_cache *c, const char *task, int version)
{
    task_result got;
    zmix_error err;
    int rc = task_cache_get(c, task, &got, &err);
    if (rc) fail_msg("get %s: %s", task, err.msg);
    assert_result(&got, task, version);
    task_result_free(&got);
}

static int get_rc(task_cache *c, const char *task)
{
    task_result got;
    zmix_error err;
    int rc = task_cache_get(c, task, &got, &err);
    if (rc == 0) task_result_free(&got);
    return rc;
}

static void file_path(char *out, size_t size, const fixture *f, const char *task, const char *ext)
{
    snprintf(out, size, "%s/%s%s", f->tasks, task, ext);
}

/* ---- record parser ------------------------------------------------------------------ */

/* Rewrites the trailing CRC so that a mutated record gets past the checksum and exercises
 * the field-level checks behind it. */
static void fix_crc(uint8_t *buf, size_t len)
{
    uint32_t c = crc32c_update(0, buf, len - 4);
    for (int i = 0; i < 4; i++) buf[len - 4 + (size_t)i] = (uint8_t)(c >> (8 * i));
}

static void test_record_parser_survives_mutations(void **state)
{
    fixture *f = *state;
    task_cache *c = open_cache(f, 0, NULL);
    put(c, "mut", 1);
    task_cache_free(c);
    char path[512];
    snprintf(path, sizeof path, "%s/mut.zmt", f->tasks);
    uint8_t orig[4096], buf[4096];
    FILE *fp = fopen(path, "rb");
    size_t len = fread(orig, 1, sizeof orig, fp);
    fclose(fp);
    task_result got;
    zmix_error err;
    assert_int_equal(task_record_parse(orig, len, &got, &err), 0);
    assert_result(&got, "mut", 1);
    task_result_free(&got);
    /* Every payload position set to a huge count, then random multi-byte damage: a valid
     * CRC over nonsense fields must give 0 or EFORMAT, never a crash, an overrun or a huge
     * allocation (ASan/UBSan watch). */
    int accepted = 0, rejected = 0;
    for (size_t at = REC_HEADER; at + 4 <= len - 4; at++) {
        memcpy(buf, orig, len);
        memset(buf + at, 0xff, 4);
        fix_crc(buf, len);
        int rc = task_record_parse(buf, len, &got, NULL);
        assert_true(rc == 0 || rc == ZMIX_EFORMAT);
        if (rc == 0)
            task_result_free(&got), accepted++;
        else
            rejected++;
    }
    unsigned rng = 4242;
    for (int it = 0; it < 3000; it++) {
        memcpy(buf, orig, len);
        int n = 1 + it % 4;
        for (int k = 0; k < n; k++) {
            rng = rng * 1103515245u + 12345u;
            size_t at = REC_HEADER + (rng >> 8) % (len - 4 - REC_HEADER);
            buf[at] = (uint8_t)(rng >> 24);
        }
        fix_crc(buf, len);
        int rc = task_record_parse(buf, len, &got, &err);
        assert_true(rc == 0 || rc == ZMIX_EFORMAT);
        if (rc == 0)
            task_result_free(&got), accepted++;
        else
            rejected++;
    }
    /* Floats and blobs can take any value, counts cannot: both outcomes must occur. */
    assert_true(accepted > 0 && rejected > 0);
}

/* ---- names ------------------------------------------------------------------------------ */

static void test_task_name_validation(void **state)
{
    (void)state;
    zmix_error err;
    assert_int_equal(task_name_check("gsm8k-v1.2_A", &err), 0);
    /* 127 bytes is the longest name submit accepts (PROTOCOL.md §4.5); the cache agrees. */
    char longest[129];
    memset(longest, 'a', 127);
    longest[127] = '\0';
    assert_int_equal(task_name_check(longest, &err), 0);
    longest[127] = 'a';
    longest[128] = '\0';
    assert_int_equal(task_name_check(longest, &err), ZMIX_EINVAL);
    assert_non_null(strstr(err.msg, "128 bytes is too long"));
    assert_non_null(strstr(err.msg, "1 to 127 bytes of [A-Za-z0-9._-], not starting with '.'"));
    /* Off the wire the bytes are not NUL-terminated: only len counts. */
    assert_int_equal(task_name_check_bytes("abc/", 3, &err), 0);
    assert_int_equal(task_name_check_bytes("abc/", 4, &err), ZMIX_EINVAL);
    const char *bad[] = {"",    ".hidden", "..",          "a/b",       "../etc",
                         "a b", "tab\t",   "caf\xc3\xa9", "semi;colon"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(task_name_check(bad[i], &err), ZMIX_EINVAL);
    assert_int_equal(task_name_check("a/b", &err), ZMIX_EINVAL);
    assert_non_null(strstr(err.msg, "0x2f"));
}

/* ---- behaviour ------------------------------------------------------------------------ */

static void test_round_trip_and_restart(void **state)
{
    fixture *f = *state;
    task_cache *c = open_cache(f, 0, NULL);
    task_cache_info *empty;
    size_t n_empty = 99;
    assert_int_equal(task_cache_list(c, &empty, &n_empty, NULL),
                     0); /* UBSan once saw memcpy(.., NULL, 0) here */
    assert_int_equal(n_empty, 0);
    free(empty);
    put(c, "alpha", 1);
    put(c, "beta", 2);
    put(c, "alpha", 3); /* replaces */
    expect(c, "alpha", 3);
    expect(c, "beta", 2);
    assert_int_equal(get_rc(c, "gamma"), ZMIX_ENOTFOUND);
    task_cache_stats st;
    task_cache_get_stats(c, &st);
    assert_int_equal(st.tasks, 2);
    assert_int_equal(st.hits, 2);
    assert_int_equal(st.misses, 1);
    assert_int_equal(st.unpersisted, 0);
    assert_int_equal(testutil_count_suffix(f->tasks, ".tmp"), 0);
    task_cache_free(c);

    persist_problems problems = {0};
    c = open_cache(f, 0, &problems);
    assert_int_equal(problems.n, 0);
    expect(c, "alpha", 3);
    expect(c, "beta", 2);
    task_cache_info *infos;
    size_t n;
    assert_int_equal(task_cache_list(c, &infos, &n, NULL), 0);
    assert_int_equal(n, 2);
    assert_string_equal(infos[0].task, "beta"); /* most recently used first */
    assert_string_equal(infos[1].task, "alpha");
    assert_true(infos[1].persisted && infos[1].resident);
    assert_string_equal(infos[1].key, "key-alpha-3");
    free(infos);
    task_cache_free(c);
}

static void test_lookup_by_key(void **state)
{
    fixture *f = *state;
    task_cache *c = open_cache(f, 0, NULL);
    put(c, "alpha", 1);
    put(c, "beta", 2);
    task_result got;
    zmix_error err;
    assert_int_equal(task_cache_get_if_key(c, "alpha", "key-alpha-1", &got, &err), 0);
    assert_result(&got, "alpha", 1);
    task_result_free(&got);
    /* Same task, other inputs: a miss, so the job is recomputed. */
    assert_int_equal(task_cache_get_if_key(c, "alpha", "key-alpha-2", &got, &err), ZMIX_ENOTFOUND);
    assert_int_equal(task_cache_find_key(c, "key-beta-2", &got, &err), 0);
    assert_result(&got, "beta", 2);
    task_result_free(&got);
    assert_int_equal(task_cache_find_key(c, "nope", &got, &err), ZMIX_ENOTFOUND);
    task_cache_stats st;
    task_cache_get_stats(c, &st);
    assert_int_equal(st.hits, 2);
    assert_int_equal(st.misses, 2);
    task_cache_free(c);
}

static void test_put_rejects_bad_input(void **state)
{
    fixture *f = *state;
    task_cache *c = open_cache(f, 0, NULL);
    test_result t;
    zmix_error err;
    make_result(&t, "../escape", 1);
    assert_int_equal(task_cache_put(c, &t.r, &err), ZMIX_EINVAL);
    make_result(&t, "dup", 1);
    t.names[2] = t.names[0];
    assert_int_equal(task_cache_put(c, &t.r, &err), ZMIX_EINVAL);
    assert_non_null(strstr(err.msg, "listed twice"));
    make_result(&t, "zero", 1);
    t.ranks[1] = 0;
    assert_int_equal(task_cache_put(c, &t.r, &err), ZMIX_EINVAL);
    make_result(&t, "nullz", 1);
    t.r.z = NULL;
    assert_int_equal(task_cache_put(c, &t.r, &err), ZMIX_EINVAL);
    task_cache_stats st;
    task_cache_get_stats(c, &st);
    assert_int_equal(st.tasks, 0);
    assert_int_equal(testutil_count_suffix(f->tasks, ".zmt"), 0);
    task_cache_free(c);
}

static size_t one_result_bytes(const fixture *f)
{
    (void)f;
    /* Measured rather than computed, so the test follows the accounting. */
    char dir[256];
    testutil_mkdtemp(dir, sizeof dir);
    fixture g;
    snprintf(g.dir, sizeof g.dir, "%s", dir);
    task_cache *c = open_cache(&g, 0, NULL);
    put(c, "x", 1);
    task_cache_stats st;
    task_cache_get_stats(c, &st);
    task_cache_free(c);
    testutil_rmrf(dir);
    return st.resident_bytes;
}

static int is_resident(task_cache *c, const char *task)
{
    task_cache_info *infos;
    size_t n;
    assert_int_equal(task_cache_list(c, &infos, &n, NULL), 0);
    int r = -1;
    for (size_t i = 0; i < n; i++)
        if (strcmp(infos[i].task, task) == 0) r = infos[i].resident;
    free(infos);
    return r;
}

static void test_lru_eviction_and_budget(void **state)
{
    fixture *f = *state;
    size_t one = one_result_bytes(f);
    assert_true(one > Z_TOTAL * sizeof(float));
    size_t budget = 2 * one + one / 2; /* room for two results, not three */
    task_cache *c = open_cache(f, budget, NULL);
    put(c, "A", 1);
    put(c, "B", 2);
    expect(c, "A", 1); /* A becomes more recent than B */
    put(c, "C", 3);    /* evicts B, the least recently used */
    assert_int_equal(is_resident(c, "A"), 1);
    assert_int_equal(is_resident(c, "B"), 0);
    assert_int_equal(is_resident(c, "C"), 1);
    task_cache_stats st;
    task_cache_get_stats(c, &st);
    assert_true(st.resident_bytes <= budget);
    assert_int_equal(st.resident, 2);
    assert_int_equal(st.tasks, 3);
    assert_int_equal(st.evictions, 1);
    /* Eviction from memory keeps the files; reading B loads it and evicts A (now LRU). */
    char path[512];
    file_path(path, sizeof path, f, "B", ".zmt");
    assert_true(testutil_exists(path));
    expect(c, "B", 2);
    assert_int_equal(is_resident(c, "A"), 0);
    assert_int_equal(is_resident(c, "B"), 1);
    task_cache_get_stats(c, &st);
    assert_int_equal(st.loads, 1);
    assert_int_equal(st.evictions, 2);
    assert_true(st.resident_bytes <= budget);
    expect(c, "A", 1); /* still served, from disk */
    task_cache_free(c);

    /* At open, the newest results (by creation time) are the ones kept resident. */
    c = open_cache(f, budget, NULL);
    assert_int_equal(is_resident(c, "A"), 0);
    assert_int_equal(is_resident(c, "B"), 1);
    assert_int_equal(is_resident(c, "C"), 1);
    task_cache_free(c);
}

static void test_evict_removes_files(void **state)
{
    fixture *f = *state;
    task_cache *c = open_cache(f, 0, NULL);
    put(c, "gone", 1);
    put(c, "kept", 2);
    char rec[512], st[512];
    file_path(rec, sizeof rec, f, "gone", ".zmt");
    file_path(st, sizeof st, f, "gone", ".safetensors");
    assert_true(testutil_exists(rec) && testutil_exists(st));
    zmix_error err;
    assert_int_equal(task_cache_evict(c, "gone", &err), 0);
    assert_false(testutil_exists(rec));
    assert_false(testutil_exists(st));
    assert_int_equal(get_rc(c, "gone"), ZMIX_ENOTFOUND);
    assert_int_equal(task_cache_evict(c, "gone", &err), ZMIX_ENOTFOUND);
    assert_int_equal(task_cache_evict(c, "../kept", &err), ZMIX_EINVAL);
    task_cache_free(c);
    c = open_cache(f, 0, NULL);
    assert_int_equal(get_rc(c, "gone"), ZMIX_ENOTFOUND);
    expect(c, "kept", 2);
    task_cache_free(c);
}

/* ---- the safetensors file -------------------------------------------------------------- */

static uint64_t le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static void test_safetensors_file_parses(void **state)
{
    fixture *f = *state;
    task_cache *c = open_cache(f, 0, NULL);
    put(c, "st-task", 7);
    char path[512];
    assert_int_equal(task_cache_safetensors_path(c, "st-task", path, sizeof path, NULL), 0);
    task_cache_free(c);

    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    uint8_t buf[8192];
    size_t len = fread(buf, 1, sizeof buf, fp);
    fclose(fp);
    assert_true(len > 8);
    uint64_t hlen = le64(buf);
    assert_int_equal(hlen % 8, 0);
    assert_int_equal(len, 8 + hlen + Z_TOTAL * 4);
    cJSON *h = cJSON_ParseWithLength((const char *)buf + 8, (size_t)hlen);
    assert_non_null(h);
    cJSON *meta = cJSON_GetObjectItemCaseSensitive(h, "__metadata__");
    assert_true(cJSON_IsObject(meta));
    assert_string_equal(cJSON_GetObjectItem(meta, "task")->valuestring, "st-task");
    assert_string_equal(cJSON_GetObjectItem(meta, "key")->valuestring, "key-st-task-7");
    assert_string_equal(cJSON_GetObjectItem(meta, "format")->valuestring, "pt");
    /* α round-trips through its metadata text. */
    cJSON *alpha = cJSON_Parse(cJSON_GetObjectItem(meta, "alpha")->valuestring);
    assert_int_equal(cJSON_GetArraySize(alpha), 6);
    test_result want;
    make_result(&want, "st-task", 7);
    for (int i = 0; i < 6; i++)
        assert_true((float)cJSON_GetArrayItem(alpha, i)->valuedouble == want.alpha[i]);
    cJSON_Delete(alpha);
    assert_true(strtod(cJSON_GetObjectItem(meta, "accuracy")->valuestring, NULL) ==
                want.r.score.accuracy);
    /* One F32 tensor per adapted matrix, shape [rank], data equal to z′. */
    int n_tensors = 0;
    cJSON *item;
    cJSON_ArrayForEach(item, h) n_tensors++;
    assert_int_equal(n_tensors, N_MATRICES + 1);
    size_t z_at = 0;
    for (int m = 0; m < N_MATRICES; m++) {
        cJSON *t = cJSON_GetObjectItemCaseSensitive(h, test_matrix_names[m]);
        assert_non_null(t);
        assert_string_equal(cJSON_GetObjectItem(t, "dtype")->valuestring, "F32");
        cJSON *shape = cJSON_GetObjectItem(t, "shape");
        assert_int_equal(cJSON_GetArraySize(shape), 1);
        assert_int_equal((int)cJSON_GetArrayItem(shape, 0)->valuedouble, test_ranks[m]);
        cJSON *offs = cJSON_GetObjectItem(t, "data_offsets");
        size_t b = (size_t)cJSON_GetArrayItem(offs, 0)->valuedouble;
        size_t e = (size_t)cJSON_GetArrayItem(offs, 1)->valuedouble;
        assert_int_equal(e - b, 4 * test_ranks[m]);
        for (uint32_t i = 0; i < test_ranks[m]; i++) {
            float v;
            memcpy(&v, buf + 8 + hlen + b + 4 * i, 4); /* little-endian host */
            assert_true(v == want.z[z_at + i]);
        }
        z_at += test_ranks[m];
    }
    cJSON_Delete(h);
}

#ifdef ZMIX_HAVE_MODEL
/* The project's own safetensors reader and expert loader accept the file: a cached z′ can be
 * mapped by a serving system, and even loaded back as an expert named after its task. */
static void test_safetensors_file_loads_as_expert(void **state)
{
    fixture *f = *state;
    task_cache *c = open_cache(f, 0, NULL);
    put(c, "as-expert", 4);
    char path[512];
    assert_int_equal(task_cache_safetensors_path(c, "as-expert", path, sizeof path, NULL), 0);
    task_cache_free(c);
    test_result want;
    make_result(&want, "as-expert", 4);

    zmix_st_file st;
    zmix_error err;
    if (zmix_st_open(path, &st, &err) != 0) fail_msg("zmix_st_open: %s", err.msg);
    assert_int_equal(st.n_tensors, N_MATRICES);
    assert_string_equal(zmix_st_meta(&st, "task"), "as-expert");
    assert_string_equal(zmix_st_meta(&st, "key"), "key-as-expert-4");
    zmix_st_close(&st);

    zmix_adapted list[N_MATRICES];
    memset(list, 0, sizeof list);
    size_t offset = 0;
    for (int m = 0; m < N_MATRICES; m++) {
        snprintf(list[m].name, sizeof list[m].name, "%s", test_matrix_names[m]);
        list[m].rank = (int)test_ranks[m];
        list[m].z_offset = offset;
        offset += test_ranks[m];
    }
    zmix_expert ex;
    if (zmix_expert_load(path, list, N_MATRICES, Z_TOTAL, &ex, &err) != 0)
        fail_msg("zmix_expert_load: %s", err.msg);
    assert_string_equal(ex.name, "as-expert");
    assert_memory_equal(ex.z, want.z, sizeof want.z);
    free(ex.z);
}
#endif

/* ---- corruption ------------------------------------------------------------------------ */

static int problems_mention(const persist_problems *p, const char *needle)
{
    for (size_t i = 0; i < p->n; i++)
        if (strstr(p->items[i].msg, needle)) return 1;
    return 0;
}

static void test_corrupt_files_skipped(void **state)
{
    fixture *f = *state;
    task_cache *c = open_cache(f, 0, NULL);
    put(c, "flipped", 1);
    put(c, "truncated", 2);
    put(c, "intact", 3);
    put(c, "emptied", 4);
    task_cache_free(c);

    char path[512], st_path[512];
    file_path(path, sizeof path, f, "flipped", ".zmt");
    testutil_flip_byte(path, 100); /* inside z′ or the matrix names: only the CRC sees it */
    file_path(path, sizeof path, f, "truncated", ".zmt");
    testutil_truncate(path, testutil_file_size(path) - 9);
    file_path(path, sizeof path, f, "emptied", ".zmt");
    testutil_truncate(path, 0);
    /* A torn temporary file, as left by a crash before its rename. */
    file_path(path, sizeof path, f, "intact", ".zmt.tmp");
    testutil_write_file(path, "ZMIXTASK\x01", 9);
    file_path(path, sizeof path, f, "other", ".safetensors.tmp");
    testutil_write_file(path, "junk", 4);
    /* A safetensors file with no record, and one damaged in its data. */
    file_path(path, sizeof path, f, "orphan", ".safetensors");
    testutil_write_file(path, "12345678", 8);
    file_path(st_path, sizeof st_path, f, "intact", ".safetensors");
    long st_size = testutil_file_size(st_path);
    uint8_t good[4096];
    FILE *fp = fopen(st_path, "rb");
    assert_int_equal(fread(good, 1, sizeof good, fp), (size_t)st_size);
    fclose(fp);
    testutil_flip_byte(st_path, -3);

    persist_problems problems = {0};
    c = open_cache(f, 0, &problems);
    assert_int_equal(problems.n, 3);
    assert_true(problems_mention(&problems, "flipped.zmt"));
    assert_true(problems_mention(&problems, "checksum mismatch"));
    assert_true(problems_mention(&problems, "truncated.zmt"));
    assert_true(problems_mention(&problems, "emptied.zmt"));
    persist_problems_free(&problems);
    assert_int_equal(get_rc(c, "flipped"), ZMIX_ENOTFOUND);
    assert_int_equal(get_rc(c, "truncated"), ZMIX_ENOTFOUND);
    assert_int_equal(get_rc(c, "emptied"), ZMIX_ENOTFOUND);
    expect(c, "intact", 3);
    assert_int_equal(testutil_count_suffix(f->tasks, ".tmp"), 0);
    assert_false(testutil_exists(path)); /* the orphan */
    file_path(path, sizeof path, f, "flipped", ".zmt.corrupt");
    assert_true(testutil_exists(path));
    file_path(path, sizeof path, f, "flipped", ".safetensors");
    assert_false(testutil_exists(path)); /* its derived file cannot be vouched for */
    /* The damaged safetensors file was rebuilt from its record, byte for byte. */
    uint8_t now[4096];
    fp = fopen(st_path, "rb");
    assert_int_equal(fread(now, 1, sizeof now, fp), (size_t)st_size);
    fclose(fp);
    assert_memory_equal(now, good, (size_t)st_size);
    task_cache_free(c);

    /* Reported once: quarantined files are not reported again. */
    c = open_cache(f, 0, &problems);
    assert_int_equal(problems.n, 0);
    /* Evict also clears a quarantined name; a fresh put works. */
    put(c, "flipped", 5);
    expect(c, "flipped", 5);
    task_cache_free(c);
}

static void test_corruption_after_open_never_served(void **state)
{
    fixture *f = *state;
    size_t one = one_result_bytes(f);
    task_cache *c = open_cache(f, one + one / 2, NULL); /* one resident result */
    put(c, "rotten", 1);
    put(c, "fresh", 2); /* rotten is no longer resident */
    assert_int_equal(is_resident(c, "rotten"), 0);
    char path[512];
    file_path(path, sizeof path, f, "rotten", ".zmt");
    testutil_flip_byte(path, -1);
    task_result got;
    zmix_error err;
    assert_int_equal(task_cache_get(c, "rotten", &got, &err), ZMIX_EFORMAT);
    assert_non_null(strstr(err.msg, "rotten"));
    assert_non_null(strstr(err.msg, "checksum"));
    assert_int_equal(get_rc(c, "rotten"), ZMIX_ENOTFOUND);
    expect(c, "fresh", 2);
    /* Same without an error object: the code alone must still say no. */
    put(c, "rotten2", 3);
    put(c, "fresh", 4);
    assert_int_equal(is_resident(c, "rotten2"), 0);
    file_path(path, sizeof path, f, "rotten2", ".zmt");
    testutil_truncate(path, 40);
    assert_int_equal(task_cache_get(c, "rotten2", &got, NULL), ZMIX_EFORMAT);
    task_cache_free(c);
}

/* ---- injected write faults ------------------------------------------------------------- */

static void test_write_fault_keeps_old_version(void **state)
{
    fixture *f = *state;
    task_cache *c = open_cache(f, 0, NULL);
    put(c, "t", 1);
    char rec[512], st[512];
    file_path(rec, sizeof rec, f, "t", ".zmt");
    file_path(st, sizeof st, f, "t", ".safetensors");
    long st_size = testutil_file_size(st);

    /* Disk full in the middle of the safetensors file, then in the middle of the record
     * (the safetensors file of the new version fits, its record does not). */
    long long budgets[2] = {100, st_size + 50};
    for (int i = 0; i < 2; i++) {
        task_cache_set_write_fault(c, budgets[i]);
        test_result t;
        make_result(&t, "t", 2 + i);
        zmix_error err;
        assert_int_equal(task_cache_put(c, &t.r, &err), ZMIX_EIO);
        assert_non_null(strstr(err.msg, "No space left"));
        assert_non_null(strstr(err.msg, "kept in memory"));
        expect(c, "t", 2 + i); /* the new result is served from memory */
        task_cache_stats s;
        task_cache_get_stats(c, &s);
        assert_int_equal(s.unpersisted, 1);
        assert_int_equal(s.write_errors, (uint64_t)i + 1);
        assert_int_equal(testutil_count_suffix(f->tasks, ".tmp"), 0); /* nothing torn */

        /* What a restart would find now: the old version, whole. */
        fixture other = *f;
        persist_problems problems = {0};
        task_cache *c2 = open_cache(&other, 0, &problems);
        assert_int_equal(problems.n, 0);
        expect(c2, "t", 1);
        task_cache_free(c2);
    }
    /* An unpersisted result is never dropped from memory by the budget. */
    task_cache_set_write_fault(c, -1);
    zmix_error err;
    assert_int_equal(task_cache_flush(c, &err), 0);
    task_cache_stats s;
    task_cache_get_stats(c, &s);
    assert_int_equal(s.unpersisted, 0);
    task_cache_free(c);
    c = open_cache(f, 0, NULL);
    expect(c, "t", 3);
    task_cache_free(c);
}

static void test_unpersisted_survives_budget(void **state)
{
    fixture *f = *state;
    size_t one = one_result_bytes(f);
    task_cache *c = open_cache(f, one + one / 2, NULL);
    task_cache_set_write_fault(c, 0);
    test_result t;
    make_result(&t, "a", 1);
    assert_int_equal(task_cache_put(c, &t.r, NULL), ZMIX_EIO);
    make_result(&t, "b", 2);
    assert_int_equal(task_cache_put(c, &t.r, NULL), ZMIX_EIO);
    /* Both over budget, neither on disk: both must stay. */
    expect(c, "a", 1);
    expect(c, "b", 2);
    task_cache_set_write_fault(c, -1);
    assert_int_equal(task_cache_flush(c, NULL), 0);
    task_cache_stats s;
    task_cache_get_stats(c, &s);
    assert_int_equal(s.unpersisted, 0);
    assert_true(s.resident_bytes <= one + one / 2); /* now evictable, so the budget holds */
    task_cache_free(c);
}

/* ---- threads ---------------------------------------------------------------------------- */

/* 1 when got is exactly the result make_result made for its task and version. */
static int result_consistent(const task_result *got)
{
    test_result want;
    make_result(&want, got->task, (int)(got->job_id - 1000));
    return strcmp(got->key, want.r.key) == 0 && got->n_alpha == 6 &&
           memcmp(got->alpha, want.alpha, sizeof want.alpha) == 0 &&
           got->n_matrices == N_MATRICES && memcmp(got->z, want.z, sizeof want.z) == 0 &&
           got->settings_len == sizeof want.settings &&
           memcmp(got->settings, want.settings, sizeof want.settings) == 0;
}

typedef struct worker_arg {
    task_cache *cache;
    int thread;
    int bad; /* inconsistent results or unexpected errors seen */
    int ops;
} worker_arg;

static void *worker(void *p)
{
    worker_arg *a = p;
    unsigned rng = 99u + (unsigned)a->thread;
    for (int i = 0; i < 60; i++) {
        rng = rng * 1103515245u + 12345u;
        char task[8];
        snprintf(task, sizeof task, "w%u", (rng >> 8) % 5);
        int op = (int)((rng >> 16) % 10);
        task_result got;
        zmix_error err;
        if (op < 4) {
            test_result t;
            make_result(&t, task, a->thread * 1000 + i + 1);
            if (task_cache_put(a->cache, &t.r, &err) != 0) a->bad++;
        } else if (op < 8) {
            int rc = task_cache_get(a->cache, task, &got, &err);
            if (rc == 0) {
                a->bad += !result_consistent(&got) || strcmp(got.task, task) != 0;
                task_result_free(&got);
            } else if (rc != ZMIX_ENOTFOUND) {
                a->bad++;
            }
        } else if (op < 9) {
            int rc = task_cache_evict(a->cache, task, &err);
            if (rc != 0 && rc != ZMIX_ENOTFOUND) a->bad++;
        } else {
            task_cache_info *infos;
            size_t n;
            if (task_cache_list(a->cache, &infos, &n, &err) != 0)
                a->bad++;
            else
                free(infos);
        }
        a->ops++;
    }
    return NULL;
}

/* Puts, gets (through disk, under a budget of about two results), evicts and listings from
 * four threads at once: every result read must be whole and self-consistent, and the cache
 * must agree with the disk afterwards. */
static void test_concurrent_access(void **state)
{
    fixture *f = *state;
    size_t one = one_result_bytes(f);
    task_cache *c = open_cache(f, 2 * one + one / 2, NULL);
    pthread_t threads[4];
    worker_arg args[4];
    for (int t = 0; t < 4; t++) {
        args[t] = (worker_arg){c, t, 0, 0};
        assert_int_equal(pthread_create(&threads[t], NULL, worker, &args[t]), 0);
    }
    for (int t = 0; t < 4; t++) {
        pthread_join(threads[t], NULL);
        assert_int_equal(args[t].bad, 0);
        assert_int_equal(args[t].ops, 60);
    }
    task_cache_stats st;
    task_cache_get_stats(c, &st);
    assert_int_equal(st.unpersisted, 0);
    assert_true(st.resident_bytes <= 2 * one + one / 2);
    /* What memory says is what a restart finds. */
    task_cache_info *infos;
    size_t n;
    assert_int_equal(task_cache_list(c, &infos, &n, NULL), 0);
    task_cache *c2 = open_cache(f, 0, NULL);
    task_cache_stats st2;
    task_cache_get_stats(c2, &st2);
    assert_int_equal(st2.tasks, n);
    for (size_t i = 0; i < n; i++) {
        task_result got;
        assert_int_equal(task_cache_get(c2, infos[i].task, &got, NULL), 0);
        assert_true(got.job_id == infos[i].job_id);
        assert_true(result_consistent(&got));
        task_result_free(&got);
    }
    free(infos);
    task_cache_free(c2);
    task_cache_free(c);
}

/* A second process on the same directory is refused while the first holds it, and
 * admitted once it is gone (the lock dies with its holder, even under kill -9). */
static int child_open_rc(const fixture *f)
{
    pid_t pid = fork();
    if (pid == 0) {
        task_cache_config cfg;
        task_cache_config_default(&cfg);
        cfg.dir = f->dir;
        task_cache *c;
        zmix_error err;
        int rc = task_cache_open(&cfg, &c, NULL, &err);
        if (rc == 0) task_cache_free(c);
        if (rc == ZMIX_ESTATE && !strstr(err.msg, "in use by another process")) _exit(99);
        _exit(-rc);
    }
    int status;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? -WEXITSTATUS(status) : -100;
}

static void test_one_process_per_directory(void **state)
{
    fixture *f = *state;
    task_cache *c = open_cache(f, 0, NULL);
    assert_int_equal(child_open_rc(f), ZMIX_ESTATE);
    task_cache_free(c);
    assert_int_equal(child_open_rc(f), 0);
}

/* ---- kill -9 during writes ------------------------------------------------------------- */

/* The child puts versions 1, 2, 3, ... of four tasks in turn and reports each version on the
 * pipe once put returned 0 ("reported done"). The parent kills it at a random moment and
 * checks that a fresh open serves, for every task, a whole result at least as new as the
 * last reported one, and reports no problem. */
static void test_kill9_during_writes(void **state)
{
    fixture *f = *state;
    const char *tasks[4] = {"k0", "k1", "k2", "k3"};
    int reported[4] = {0, 0, 0, 0};
    unsigned seed = 12345;
    int iterations = 30, killed_mid_run = 0, torn_tmp_seen = 0;
    for (int it = 0; it < iterations; it++) {
        int fds[2];
        assert_int_equal(pipe(fds), 0);
        int start = 1 + 1000 * it;
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(fds[0]);
            task_cache_config cfg;
            task_cache_config_default(&cfg);
            cfg.dir = f->dir;
            task_cache *c;
            if (task_cache_open(&cfg, &c, NULL, NULL) != 0) _exit(2);
            for (int v = start;; v++) {
                int k = v % 4;
                test_result t;
                make_result(&t, tasks[k], v);
                if (task_cache_put(c, &t.r, NULL) != 0) _exit(3);
                int msg[2] = {k, v};
                if (write(fds[1], msg, sizeof msg) != sizeof msg) _exit(4);
            }
        }
        close(fds[1]);
        /* Wait for the first acknowledged put (a slow, shared disk or a sanitizer build must
         * not turn the test into "killed before doing anything"), then kill at a random
         * moment in the writes that follow. */
        int first[2];
        if (read(fds[0], first, sizeof first) == sizeof first) reported[first[0]] = first[1];
        seed = seed * 1103515245u + 12345u;
        struct timespec ts = {0, (long)((seed >> 8) % 20000000)}; /* 0–20 ms */
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        if (WIFSIGNALED(status))
            killed_mid_run++;
        else
            fail_msg("child exited with %d instead of being killed", WEXITSTATUS(status));
        int msg[2];
        while (read(fds[0], msg, sizeof msg) == sizeof msg) reported[msg[0]] = msg[1];
        close(fds[0]);
        torn_tmp_seen += testutil_count_suffix(f->tasks, ".tmp") > 0;

        persist_problems problems = {0};
        task_cache *c = open_cache(f, 0, &problems);
        if (problems.n) fail_msg("iteration %d: %s", it, problems.items[0].msg);
        for (int k = 0; k < 4; k++) {
            if (!reported[k]) continue;
            task_result got;
            zmix_error err;
            if (task_cache_get(c, tasks[k], &got, &err) != 0)
                fail_msg("iteration %d: %s reported done, now: %s", it, tasks[k], err.msg);
            /* The version is whatever the file holds; every field must match it exactly. */
            int v = (int)(got.job_id - 1000);
            assert_true(v >= reported[k]);
            assert_result(&got, tasks[k], v);
            task_result_free(&got);
        }
        assert_int_equal(testutil_count_suffix(f->tasks, ".tmp"), 0);
        task_cache_free(c);
    }
    assert_int_equal(killed_mid_run, iterations);
    assert_true(reported[0] + reported[1] + reported[2] + reported[3] > 0);
    print_message("kill -9 loop: %d kills, %d left a torn .tmp behind, last reported versions "
                  "%d %d %d %d\n",
                  iterations, torn_tmp_seen, reported[0], reported[1], reported[2], reported[3]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_task_name_validation),
        cmocka_unit_test_setup_teardown(test_record_parser_survives_mutations, setup, teardown),
        cmocka_unit_test_setup_teardown(test_round_trip_and_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lookup_by_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_put_rejects_bad_input, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lru_eviction_and_budget, setup, teardown),
        cmocka_unit_test_setup_teardown(test_evict_removes_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_safetensors_file_parses, setup, teardown),
#ifdef ZMIX_HAVE_MODEL
        cmocka_unit_test_setup_teardown(test_safetensors_file_loads_as_expert, setup, teardown),
#endif
        cmocka_unit_test_setup_teardown(test_corrupt_files_skipped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corruption_after_open_never_served, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_fault_keeps_old_version, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unpersisted_survives_budget, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_access, setup, teardown),
        cmocka_unit_test_setup_teardown(test_one_process_per_directory, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill9_during_writes, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
