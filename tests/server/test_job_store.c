/* Job store: durable records, checkpoints in two slots, state changes, retention, id
 * counter, corruption on disk, injected write faults, and kill -9 in the middle of writes. */
#include "persist_testutil.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <inttypes.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>

#include "util/crc32c.h"
#include "store/job_store.h"
#include "util/record.h"

typedef struct fixture {
    char dir[256];
    char jobs[300];
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    testutil_mkdtemp(f->dir, sizeof f->dir);
    snprintf(f->jobs, sizeof f->jobs, "%s/jobs", f->dir);
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

/* A job whose examples and settings derive from seed: two exact-match examples and a
 * multiple-choice one (the store keeps either kind). */
typedef struct test_job {
    job_record rec;
    zmix_example items[3];
    int32_t tokens[3][2][4];
    int32_t choice_len[2];
    uint8_t settings[24];
} test_job;

static void make_job(test_job *t, const char *task, int seed)
{
    memset(t, 0, sizeof *t);
    snprintf(t->rec.task, sizeof t->rec.task, "%s", task);
    snprintf(t->rec.key, sizeof t->rec.key, "key-%d", seed);
    t->rec.priority = seed % 5 - 2;
    t->rec.submit_ms = 1700000000000LL + seed;
    for (int i = 0; i < 3; i++) {
        for (int j = 0; j < 4; j++) {
            t->tokens[i][0][j] = seed * 100 + i * 10 + j;
            t->tokens[i][1][j] = -(seed * 100 + i * 10 + j); /* the store keeps any int32 */
        }
        t->items[i] =
            (zmix_example){t->tokens[i][0], 1 + i, t->tokens[i][1], 4 - i, 0, NULL, NULL, 0};
    }
    t->choice_len[0] = 1;
    t->choice_len[1] = 3;
    t->items[2] =
        (zmix_example){t->tokens[2][0], 3, NULL, 0, 2, t->tokens[2][1], t->choice_len, seed % 2};
    t->rec.examples.items = t->items;
    t->rec.examples.n = 3;
    for (int i = 0; i < 24; i++) t->settings[i] = (uint8_t)(seed + i);
    t->rec.settings = t->settings;
    t->rec.settings_len = sizeof t->settings;
}

static void assert_job(const job_record *got, const char *task, int seed)
{
    test_job want;
    make_job(&want, task, seed);
    assert_string_equal(got->task, task);
    assert_string_equal(got->key, want.rec.key);
    assert_int_equal(got->priority, want.rec.priority);
    assert_true(got->submit_ms == want.rec.submit_ms);
    assert_int_equal(got->examples.n, 3);
    size_t total = 0;
    for (int i = 0; i < 3; i++) {
        const zmix_example *x = &got->examples.items[i];
        assert_int_equal(x->n_prompt, want.items[i].n_prompt);
        assert_int_equal(x->n_target, want.items[i].n_target);
        assert_memory_equal(x->prompt, want.items[i].prompt, 4 * (size_t)x->n_prompt);
        assert_memory_equal(x->target, want.items[i].target, 4 * (size_t)x->n_target);
        total += (size_t)(x->n_prompt + x->n_target);
        assert_int_equal(x->n_choices, want.items[i].n_choices);
        if (!x->n_choices) continue;
        assert_null(x->target);
        assert_int_equal(x->answer, want.items[i].answer);
        assert_memory_equal(x->choice_len, want.choice_len, sizeof want.choice_len);
        assert_memory_equal(x->choices, want.items[i].choices, 4 * 4);
        total += 2 + 4; /* the lengths and the choices' tokens */
    }
    assert_int_equal(got->examples.n_tokens, total);
    assert_int_equal(got->settings_len, sizeof want.settings);
    assert_memory_equal(got->settings, want.settings, sizeof want.settings);
}

typedef struct opened {
    job_store *store;
    job_recovered *jobs;
    size_t n;
    persist_problems problems;
} opened;

static void open_store(const fixture *f, size_t retain, opened *o)
{
    memset(o, 0, sizeof *o);
    job_store_config cfg;
    job_store_config_default(&cfg);
    cfg.dir = f->dir;
    cfg.retain_finished = retain;
    zmix_error err;
    if (job_store_open(&cfg, &o->store, &o->jobs, &o->n, &o->problems, &err) != 0)
        fail_msg("job_store_open: %s", err.msg);
}

static void close_store(opened *o)
{
    job_store_free(o->store);
    job_recovered_free(o->jobs, o->n);
    persist_problems_free(&o->problems);
    memset(o, 0, sizeof *o);
}

static uint64_t create(job_store *s, const char *task, int seed)
{
    test_job t;
    make_job(&t, task, seed);
    zmix_error err;
    if (job_store_create(s, &t.rec, &err) != 0) fail_msg("create: %s", err.msg);
    assert_int_equal(t.rec.state, JOB_QUEUED);
    return t.rec.id;
}

/* Checkpoint bytes for (id, generation): length and content both depend on them. */
static size_t ckpt_bytes(uint64_t id, int gen, uint8_t *out)
{
    size_t len = 40 + (size_t)gen * 3;
    for (size_t i = 0; i < len; i++) out[i] = (uint8_t)(id * 31 + (uint64_t)gen * 7 + i);
    return len;
}

static void checkpoint(job_store *s, uint64_t id, int gen)
{
    uint8_t buf[512];
    size_t len = ckpt_bytes(id, gen, buf);
    zmix_error err;
    if (job_store_checkpoint(s, id, gen, buf, len, &err) != 0) fail_msg("ckpt: %s", err.msg);
}

static void assert_ckpt(const uint8_t *data, size_t len, uint64_t id, int gen)
{
    uint8_t want[512];
    size_t wlen = ckpt_bytes(id, gen, want);
    assert_int_equal(len, wlen);
    assert_memory_equal(data, want, wlen);
}

static void job_path(char *out, size_t size, const fixture *f, uint64_t id, const char *ext)
{
    snprintf(out, size, "%s/%020" PRIu64 "%s", f->jobs, id, ext);
}

/* ---- tests ------------------------------------------------------------------------------ */

static void test_create_get_restart(void **state)
{
    fixture *f = *state;
    opened o;
    open_store(f, 0, &o);
    assert_int_equal(o.n, 0);
    assert_true(job_store_next_id(o.store) == 1);
    uint64_t a = create(o.store, "task-a", 1);
    uint64_t b = create(o.store, "task-b", 2);
    uint64_t c = create(o.store, "task-a", 3);
    assert_true(a == 1 && b == 2 && c == 3);
    job_record got;
    zmix_error err;
    assert_int_equal(job_store_get(o.store, b, &got, &err), 0);
    assert_job(&got, "task-b", 2);
    assert_int_equal(got.state, JOB_QUEUED);
    job_record_free(&got);
    assert_int_equal(job_store_get(o.store, 99, &got, &err), ZMIX_ENOTFOUND);
    close_store(&o);

    open_store(f, 0, &o);
    assert_int_equal(o.problems.n, 0);
    assert_int_equal(o.n, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_true(o.jobs[i].record.id == i + 1); /* ascending id */
        assert_int_equal(o.jobs[i].record.state, JOB_QUEUED);
        assert_null(o.jobs[i].checkpoint);
        assert_int_equal(o.jobs[i].generation, -1);
    }
    assert_job(&o.jobs[2].record, "task-a", 3);
    assert_true(job_store_next_id(o.store) == 4);
    assert_true(create(o.store, "task-c", 4) == 4);
    close_store(&o);
}

static void test_checkpoints_latest_wins(void **state)
{
    fixture *f = *state;
    opened o;
    open_store(f, 0, &o);
    uint64_t id = create(o.store, "t", 1);
    zmix_error err;
    uint8_t *data;
    size_t len;
    int gen;
    assert_int_equal(job_store_load_checkpoint(o.store, id, &data, &len, &gen, &err),
                     ZMIX_ENOTFOUND);
    assert_int_equal(job_store_set_state(o.store, id, JOB_RUNNING, NULL, 500, &err), 0);
    for (int g = 1; g <= 5; g++) checkpoint(o.store, id, g);
    assert_int_equal(job_store_load_checkpoint(o.store, id, &data, &len, &gen, &err), 0);
    assert_int_equal(gen, 5);
    assert_ckpt(data, len, id, 5);
    free(data);
    close_store(&o);

    open_store(f, 0, &o);
    assert_int_equal(o.n, 1);
    assert_int_equal(o.jobs[0].record.state, JOB_RUNNING);
    assert_true(o.jobs[0].record.start_ms == 500);
    assert_int_equal(o.jobs[0].generation, 5);
    assert_ckpt(o.jobs[0].checkpoint, o.jobs[0].checkpoint_len, id, 5);
    close_store(&o);

    /* The latest slot goes bad: the previous generation is offered instead, and the bad file
     * is reported. */
    char path[512];
    job_path(path, sizeof path, f, id, ".ckpt1");
    testutil_flip_byte(path, 30);
    open_store(f, 0, &o);
    assert_int_equal(o.problems.n, 1);
    assert_non_null(strstr(o.problems.items[0].msg, ".ckpt1"));
    assert_int_equal(o.jobs[0].generation, 4);
    assert_ckpt(o.jobs[0].checkpoint, o.jobs[0].checkpoint_len, id, 4);
    /* Resuming from 4 writes 5 again into the freed slot. */
    checkpoint(o.store, id, 5);
    close_store(&o);

    /* Both slots bad: no checkpoint, restart from scratch; the job itself is still there. */
    job_path(path, sizeof path, f, id, ".ckpt0");
    testutil_truncate(path, 10);
    job_path(path, sizeof path, f, id, ".ckpt1");
    testutil_flip_byte(path, -1);
    open_store(f, 0, &o);
    assert_int_equal(o.problems.n, 2);
    assert_int_equal(o.n, 1);
    assert_null(o.jobs[0].checkpoint);
    assert_int_equal(o.jobs[0].generation, -1);
    assert_job(&o.jobs[0].record, "t", 1);
    close_store(&o);
}

static void test_restart_from_earlier_generation_discards_later(void **state)
{
    fixture *f = *state;
    opened o;
    open_store(f, 0, &o);
    uint64_t id = create(o.store, "t", 1);
    for (int g = 1; g <= 6; g++) checkpoint(o.store, id, g);
    checkpoint(o.store, id, 1); /* the job was restarted: generation 6 is from another run */
    uint8_t *data;
    size_t len;
    int gen;
    assert_int_equal(job_store_load_checkpoint(o.store, id, &data, &len, &gen, NULL), 0);
    assert_int_equal(gen, 1);
    assert_ckpt(data, len, id, 1);
    free(data);
    close_store(&o);
    open_store(f, 0, &o);
    assert_int_equal(o.jobs[0].generation, 1);
    close_store(&o);
}

static void test_state_transitions(void **state)
{
    fixture *f = *state;
    opened o;
    open_store(f, 0, &o);
    uint64_t done = create(o.store, "t", 1);
    uint64_t failed = create(o.store, "t", 2);
    uint64_t cancelled = create(o.store, "t", 3);
    uint64_t running = create(o.store, "t", 4);
    zmix_error err;
    assert_int_equal(job_store_set_state(o.store, done, JOB_RUNNING, NULL, 100, &err), 0);
    checkpoint(o.store, done, 1);
    checkpoint(o.store, done, 2);
    static const char doc[] = "{\"format\":\"zmix.adapt_result\",\"history\":[]}";
    assert_int_equal(job_store_finish(o.store, done, JOB_DONE, "std_tolerance", 200,
                                      (const uint8_t *)doc, sizeof doc - 1, &err),
                     0);
    char path[512];
    job_path(path, sizeof path, f, done, ".ckpt0");
    assert_false(testutil_exists(path)); /* finished: checkpoints gone */
    assert_int_equal(job_store_set_state(o.store, failed, JOB_RUNNING, NULL, 110, &err), 0);
    assert_int_equal(job_store_set_state(o.store, failed, JOB_FAILED, "NaN score", 210, &err), 0);
    assert_int_equal(job_store_set_state(o.store, cancelled, JOB_CANCELLED, NULL, 220, &err), 0);
    assert_int_equal(job_store_set_state(o.store, running, JOB_RUNNING, NULL, 130, &err), 0);
    checkpoint(o.store, running, 3);
    /* Nothing leaves a finished state. */
    assert_int_equal(job_store_set_state(o.store, done, JOB_RUNNING, NULL, 300, &err), ZMIX_ESTATE);
    assert_non_null(strstr(err.msg, "already done"));
    assert_int_equal(job_store_checkpoint(o.store, done, 3, (const uint8_t *)"x", 1, &err),
                     ZMIX_ESTATE);
    assert_int_equal(job_store_set_state(o.store, 77, JOB_DONE, NULL, 300, &err), ZMIX_ENOTFOUND);
    assert_int_equal(job_store_remove(o.store, running, &err), ZMIX_ESTATE);
    close_store(&o);

    open_store(f, 0, &o);
    assert_int_equal(o.n, 4);
    assert_int_equal(o.jobs[0].record.state, JOB_DONE);
    assert_string_equal(o.jobs[0].record.reason, "std_tolerance");
    assert_true(o.jobs[0].record.start_ms == 100 && o.jobs[0].record.end_ms == 200);
    assert_null(o.jobs[0].checkpoint);
    /* The finished job's result document comes back with it, byte for byte; a job finished
     * without one has none. */
    assert_int_equal(o.jobs[0].record.result_len, sizeof doc - 1);
    assert_memory_equal(o.jobs[0].record.result, doc, sizeof doc - 1);
    assert_int_equal(o.jobs[1].record.result_len, 0);
    job_record got;
    assert_int_equal(job_store_get(o.store, done, &got, &err), 0);
    assert_memory_equal(got.result, doc, sizeof doc - 1);
    job_record_free(&got);
    assert_int_equal(o.jobs[1].record.state, JOB_FAILED);
    assert_string_equal(o.jobs[1].record.reason, "NaN score");
    assert_int_equal(o.jobs[2].record.state, JOB_CANCELLED);
    assert_int_equal(o.jobs[3].record.state, JOB_RUNNING);
    assert_int_equal(o.jobs[3].generation, 3);
    assert_job(&o.jobs[3].record, "t", 4);
    close_store(&o);
}

static void test_retention_and_ids_never_reused(void **state)
{
    fixture *f = *state;
    opened o;
    open_store(f, 3, &o);
    uint64_t ids[6];
    for (int i = 0; i < 6; i++) ids[i] = create(o.store, "t", i);
    /* Finish five, the newest-ended last; job 6 stays queued. */
    int64_t end[5] = {50, 10, 40, 20, 30};
    for (int i = 0; i < 5; i++)
        assert_int_equal(job_store_set_state(o.store, ids[i], JOB_DONE, NULL, end[i], NULL), 0);
    /* Kept: the three most recently ended (50, 40, 30) and the unfinished one. */
    assert_int_equal(job_store_count(o.store), 4);
    job_record got;
    assert_int_equal(job_store_get(o.store, ids[1], &got, NULL), ZMIX_ENOTFOUND);
    assert_int_equal(job_store_get(o.store, ids[3], &got, NULL), ZMIX_ENOTFOUND);
    assert_int_equal(job_store_get(o.store, ids[0], &got, NULL), 0);
    job_record_free(&got);
    /* Remove the newest record too: its id must still never come back. */
    assert_int_equal(job_store_remove(o.store, ids[4], NULL), 0);
    close_store(&o);

    open_store(f, 3, &o);
    assert_int_equal(o.n, 3);
    assert_true(o.jobs[0].record.id == ids[0] && o.jobs[1].record.id == ids[2] &&
                o.jobs[2].record.id == ids[5]);
    assert_true(job_store_next_id(o.store) == 7);
    close_store(&o);

    /* Even with the counter file lost, the next id is past every id on disk. */
    char path[512];
    snprintf(path, sizeof path, "%s/next_id", f->jobs);
    testutil_flip_byte(path, 5);
    open_store(f, 3, &o);
    assert_int_equal(o.problems.n, 1);
    assert_non_null(strstr(o.problems.items[0].msg, "next_id"));
    assert_true(job_store_next_id(o.store) == 7);
    close_store(&o);
}

static void test_corrupt_records_skipped(void **state)
{
    fixture *f = *state;
    opened o;
    open_store(f, 0, &o);
    uint64_t flipped = create(o.store, "flipped", 1);
    uint64_t truncated = create(o.store, "truncated", 2);
    uint64_t intact = create(o.store, "intact", 3);
    checkpoint(o.store, flipped, 1);
    close_store(&o);
    char path[512];
    job_path(path, sizeof path, f, flipped, ".job");
    testutil_flip_byte(path, 40);
    job_path(path, sizeof path, f, truncated, ".job");
    testutil_truncate(path, testutil_file_size(path) / 2);
    job_path(path, sizeof path, f, intact, ".job.tmp");
    testutil_write_file(path, "ZMIXJOBR", 8);
    open_store(f, 0, &o);
    assert_int_equal(o.problems.n, 2);
    assert_int_equal(o.n, 1);
    assert_true(o.jobs[0].record.id == intact);
    assert_job(&o.jobs[0].record, "intact", 3);
    assert_int_equal(testutil_count_suffix(f->jobs, ".tmp"), 0);
    job_path(path, sizeof path, f, flipped, ".job.corrupt");
    assert_true(testutil_exists(path));
    job_path(path, sizeof path, f, flipped, ".ckpt1");
    assert_false(testutil_exists(path));          /* a checkpoint without a record is useless */
    assert_true(job_store_next_id(o.store) == 4); /* bad records still use up their ids */
    close_store(&o);
    open_store(f, 0, &o);
    assert_int_equal(o.problems.n, 0); /* reported once */
    close_store(&o);
}

static void test_write_faults(void **state)
{
    fixture *f = *state;
    opened o;
    open_store(f, 0, &o);
    uint64_t id = create(o.store, "t", 1);
    checkpoint(o.store, id, 1);
    checkpoint(o.store, id, 2);
    zmix_error err;
    job_store_set_write_fault(o.store, 30);
    uint8_t buf[512];
    size_t len = ckpt_bytes(id, 3, buf);
    assert_int_equal(job_store_checkpoint(o.store, id, 3, buf, len, &err), ZMIX_EIO);
    assert_non_null(strstr(err.msg, "No space left"));
    test_job t;
    make_job(&t, "u", 2);
    job_store_set_write_fault(o.store, 20);
    assert_int_equal(job_store_create(o.store, &t.rec, &err), ZMIX_EIO);
    job_store_set_write_fault(o.store, 0);
    assert_int_equal(job_store_set_state(o.store, id, JOB_DONE, NULL, 9, &err), ZMIX_EIO);
    assert_int_equal(testutil_count_suffix(f->jobs, ".tmp"), 0);
    assert_int_equal(job_store_count(o.store), 1);
    uint8_t *data;
    int gen;
    assert_int_equal(job_store_load_checkpoint(o.store, id, &data, &len, &gen, &err), 0);
    assert_int_equal(gen, 2);
    assert_ckpt(data, len, id, 2);
    free(data);
    job_store_set_write_fault(o.store, -1);
    assert_true(create(o.store, "u", 2) > id);
    close_store(&o);
    open_store(f, 0, &o);
    assert_int_equal(o.problems.n, 0);
    assert_int_equal(o.n, 2);
    assert_int_equal(o.jobs[0].record.state, JOB_QUEUED); /* the failed "done" never landed */
    assert_int_equal(o.jobs[0].generation, 2);
    close_store(&o);
}

static void test_record_parser_survives_mutations(void **state)
{
    fixture *f = *state;
    opened o;
    open_store(f, 0, &o);
    uint64_t id = create(o.store, "mut", 3);
    close_store(&o);
    char path[512];
    job_path(path, sizeof path, f, id, ".job");
    uint8_t orig[4096], buf[4096];
    FILE *fp = fopen(path, "rb");
    size_t len = fread(orig, 1, sizeof orig, fp);
    fclose(fp);
    job_record got;
    assert_int_equal(job_record_parse(orig, len, &got, NULL), 0);
    assert_job(&got, "mut", 3);
    job_record_free(&got);
    int accepted = 0, rejected = 0;
    unsigned rng = 99;
    for (int it = 0; it < 3000 + (int)len; it++) {
        memcpy(buf, orig, len);
        if (it < (int)len - REC_OVERHEAD - 3) {
            memset(buf + REC_HEADER + it, 0xff, 4); /* every field position as a huge count */
        } else {
            for (int k = 0; k < 1 + it % 4; k++) {
                rng = rng * 1103515245u + 12345u;
                buf[REC_HEADER + (rng >> 8) % (len - REC_OVERHEAD)] = (uint8_t)(rng >> 24);
            }
        }
        uint32_t c = crc32c_update(0, buf, len - 4);
        for (int i = 0; i < 4; i++) buf[len - 4 + (size_t)i] = (uint8_t)(c >> (8 * i));
        zmix_error err;
        int rc = job_record_parse(buf, len, &got, &err);
        assert_true(rc == 0 || rc == ZMIX_EFORMAT);
        if (rc == 0)
            job_record_free(&got), accepted++;
        else
            rejected++;
    }
    assert_true(accepted > 0 && rejected > 0);
}

static int child_open_rc(const fixture *f)
{
    pid_t pid = fork();
    if (pid == 0) {
        job_store_config cfg;
        job_store_config_default(&cfg);
        cfg.dir = f->dir;
        job_store *s;
        job_recovered *rec;
        size_t n;
        int rc = job_store_open(&cfg, &s, &rec, &n, NULL, NULL);
        if (rc == 0) {
            job_recovered_free(rec, n);
            job_store_free(s);
        }
        _exit(-rc);
    }
    int status;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? -WEXITSTATUS(status) : -100;
}

static void test_one_process_per_directory(void **state)
{
    fixture *f = *state;
    opened o;
    open_store(f, 0, &o);
    assert_int_equal(child_open_rc(f), ZMIX_ESTATE);
    close_store(&o);
    assert_int_equal(child_open_rc(f), 0);
}

/* The child creates jobs and checkpoints them, one generation after another, reporting on
 * the pipe each step whose call returned 0. The parent kills it at a random moment; a fresh
 * open must hold every reported job with a checkpoint at least as new as reported, whole. */
static void test_kill9_during_writes(void **state)
{
    fixture *f = *state;
    enum { MAX_IDS = 4096 };
    static int reported_gen[MAX_IDS];
    memset(reported_gen, 0, sizeof reported_gen);
    unsigned seed = 777;
    int iterations = 30, torn_tmp_seen = 0, acknowledged = 0;
    for (int it = 0; it < iterations; it++) {
        int fds[2];
        assert_int_equal(pipe(fds), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(fds[0]);
            job_store_config cfg;
            job_store_config_default(&cfg);
            cfg.dir = f->dir;
            job_store *s;
            job_recovered *rec;
            size_t n;
            if (job_store_open(&cfg, &s, &rec, &n, NULL, NULL) != 0) _exit(2);
            job_recovered_free(rec, n);
            for (;;) {
                test_job t;
                make_job(&t, "kill", it);
                if (job_store_create(s, &t.rec, NULL) != 0) _exit(3);
                int msg[2] = {(int)t.rec.id, 0};
                if (write(fds[1], msg, sizeof msg) != sizeof msg) _exit(4);
                for (int g = 1; g <= 4; g++) {
                    uint8_t buf[512];
                    size_t len = ckpt_bytes(t.rec.id, g, buf);
                    if (job_store_checkpoint(s, t.rec.id, g, buf, len, NULL) != 0) _exit(5);
                    msg[1] = g;
                    if (write(fds[1], msg, sizeof msg) != sizeof msg) _exit(4);
                }
                if (job_store_set_state(s, t.rec.id, JOB_DONE, NULL, 1, NULL) != 0) _exit(6);
                msg[1] = 100; /* done */
                if (write(fds[1], msg, sizeof msg) != sizeof msg) _exit(4);
            }
        }
        close(fds[1]);
        /* Wait for the first acknowledged create (however slow the disk or the build), then
         * kill at a random moment in the writes that follow. */
        int msg[2];
        if (read(fds[0], msg, sizeof msg) == sizeof msg) {
            reported_gen[msg[0]] = msg[1] + 1;
            acknowledged++;
        }
        seed = seed * 1103515245u + 12345u;
        struct timespec ts = {0, (long)((seed >> 8) % 20000000)}; /* 0–20 ms */
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        assert_true(WIFSIGNALED(status));
        while (read(fds[0], msg, sizeof msg) == sizeof msg) {
            assert_true(msg[0] > 0 && msg[0] < MAX_IDS);
            reported_gen[msg[0]] = msg[1] + 1; /* 0 = never reported */
            acknowledged++;
        }
        close(fds[0]);
        torn_tmp_seen += testutil_count_suffix(f->jobs, ".tmp") > 0;

        opened o;
        open_store(f, 100000, &o);
        if (o.problems.n) fail_msg("iteration %d: %s", it, o.problems.items[0].msg);
        size_t j = 0;
        for (int id = 1; id < MAX_IDS; id++) {
            if (!reported_gen[id]) continue;
            while (j < o.n && o.jobs[j].record.id < (uint64_t)id) j++;
            if (j == o.n || o.jobs[j].record.id != (uint64_t)id)
                fail_msg("iteration %d: job %d was acknowledged but is gone", it, id);
            job_recovered *jr = &o.jobs[j];
            int want = reported_gen[id] - 1;
            if (want == 100) {
                assert_int_equal(jr->record.state, JOB_DONE);
                continue;
            }
            if (jr->record.state == JOB_DONE) continue; /* finished after the last report */
            assert_true(jr->generation >= want || (want == 0 && jr->generation == -1));
            if (jr->generation >= 0)
                assert_ckpt(jr->checkpoint, jr->checkpoint_len, (uint64_t)id, jr->generation);
        }
        assert_int_equal(testutil_count_suffix(f->jobs, ".tmp"), 0);
        /* Ids keep increasing across restarts. */
        for (size_t k = 1; k < o.n; k++) assert_true(o.jobs[k].record.id > o.jobs[k - 1].record.id);
        close_store(&o);
    }
    assert_true(acknowledged > 0);
    print_message("kill -9 loop: %d kills, %d left a torn .tmp behind, %d acknowledged steps\n",
                  iterations, torn_tmp_seen, acknowledged);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_create_get_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_checkpoints_latest_wins, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart_from_earlier_generation_discards_later, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_state_transitions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retention_and_ids_never_reused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_records_skipped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_faults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_record_parser_survives_mutations, setup, teardown),
        cmocka_unit_test_setup_teardown(test_one_process_per_directory, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill9_during_writes, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
