/*
 * Writes the seed corpus of every harness, made by the real writers so that the seeds are
 * valid inputs the fuzzers then mutate:
 *   fuzz_seeds OUT_DIR PROTO_VECTORS_JSON [CONFIG_JSON]
 * OUT_DIR/<harness>/ receives: the request frames of the protocol test vectors and a submit
 * (rpc); safetensors files from zmix_st_write plus hand-made F16/BF16 headers; an expert
 * file from zmix_expert_save; a task record from the task cache, a job record from the job
 * store, a CEM checkpoint from zmix_cem_save; config and examples texts.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <msgpack.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz_common.h"
#include "fuzz_experts_list.h"
#include "safetensors.h"
#include "store/job_store.h"
#include "store/task_cache.h"
#include "zmix/cem.h"

static const char *out_root;

static void die(const char *what, const zmix_error *err)
{
    fprintf(stderr, "fuzz_seeds: %s: %s\n", what, err ? err->msg : strerror(errno));
    exit(1);
}

static void seed_dir(const char *harness, char *dir, size_t size)
{
    snprintf(dir, size, "%s/%s", out_root, harness);
    if (mkdir(out_root, 0755) != 0 && errno != EEXIST) die(out_root, NULL);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) die(dir, NULL);
}

static void seed(const char *harness, const char *name, const void *data, size_t len)
{
    char dir[1024], path[1200];
    seed_dir(harness, dir, sizeof dir);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    fuzz_write_file(path, data, len);
}

static void seed_text(const char *harness, const char *name, const char *text)
{
    seed(harness, name, text, strlen(text));
}

static uint8_t *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)n + 1);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) abort();
    fclose(f);
    buf[n] = 0;
    *len = (size_t)n;
    return buf;
}

static void seed_file_copy(const char *harness, const char *name, const char *path)
{
    size_t len;
    uint8_t *buf = read_all(path, &len);
    if (!buf) die(path, NULL);
    seed(harness, name, buf, len);
    free(buf);
}

static void seeds_rpc(const char *vectors_path)
{
    size_t len;
    char *text = (char *)read_all(vectors_path, &len);
    if (!text) die(vectors_path, NULL);
    cJSON *root = cJSON_Parse(text);
    free(text);
    const cJSON *vectors = cJSON_GetObjectItemCaseSensitive(root, "vectors");
    if (!cJSON_IsArray(vectors)) die("vectors.json: no \"vectors\" array", NULL);
    int i = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, vectors)
    {
        const cJSON *hex = cJSON_GetObjectItemCaseSensitive(v, "request_hex");
        if (!cJSON_IsString(hex)) continue;
        size_t n = strlen(hex->valuestring) / 2;
        uint8_t *bytes = malloc(n + 1);
        for (size_t k = 0; k < n; k++) {
            unsigned b;
            sscanf(hex->valuestring + 2 * k, "%2x", &b);
            bytes[k] = (uint8_t)b;
        }
        char name[32];
        snprintf(name, sizeof name, "vector-%02d", i++);
        seed("rpc", name, bytes, n);
        free(bytes);
    }
    cJSON_Delete(root);

    /* Hostile frames the scanner must refuse from their headers alone: a 4-billion-element
     * array, a 4 GiB string, nesting past the depth limit, the never-used byte 0xc1. */
    static const uint8_t huge_array[] = {0x94, 0x00, 0x01, 0xa4, 'p',  'i', 'n',
                                         'g',  0xdd, 0xff, 0xff, 0xff, 0xff};
    static const uint8_t huge_str[] = {0x94, 0x00, 0x01, 0xdb, 0xff, 0xff, 0xff, 0xf0};
    static const uint8_t never_used[] = {0x94, 0x00, 0x01, 0xc1, 0x80};
    uint8_t deep[40];
    for (size_t k = 0; k < sizeof deep; k++) deep[k] = 0x91; /* [[[[...]]]] */
    seed("rpc", "hostile-array32", huge_array, sizeof huge_array);
    seed("rpc", "hostile-str32", huge_str, sizeof huge_str);
    seed("rpc", "hostile-c1", never_used, sizeof never_used);
    seed("rpc", "hostile-deep", deep, sizeof deep);

    /* A submit with every kind of field, as the Python client sends it. */
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 4);
    msgpack_pack_int(&pk, 0);
    msgpack_pack_int(&pk, 7);
    msgpack_pack_str_with_body(&pk, "submit", 6);
    msgpack_pack_map(&pk, 5);
    msgpack_pack_str_with_body(&pk, "task", 4);
    msgpack_pack_str_with_body(&pk, "fuzz-task", 9);
    msgpack_pack_str_with_body(&pk, "examples", 8);
    msgpack_pack_array(&pk, 2);
    for (int e = 0; e < 2; e++) {
        msgpack_pack_map(&pk, 2);
        msgpack_pack_str_with_body(&pk, "prompt", 6);
        msgpack_pack_array(&pk, 3);
        for (int t = 0; t < 3; t++) msgpack_pack_int(&pk, 1 + 10 * e + t);
        msgpack_pack_str_with_body(&pk, "target", 6);
        msgpack_pack_array(&pk, 2);
        for (int t = 0; t < 2; t++) msgpack_pack_int(&pk, 100 + t);
    }
    msgpack_pack_str_with_body(&pk, "cem", 3);
    msgpack_pack_map(&pk, 4);
    msgpack_pack_str_with_body(&pk, "pop_size", 8);
    msgpack_pack_int(&pk, 8);
    msgpack_pack_str_with_body(&pk, "generations", 11);
    msgpack_pack_int(&pk, 3);
    msgpack_pack_str_with_body(&pk, "elite_ratio", 11);
    msgpack_pack_double(&pk, 0.25);
    msgpack_pack_str_with_body(&pk, "seed", 4);
    msgpack_pack_int(&pk, 42);
    msgpack_pack_str_with_body(&pk, "priority", 8);
    msgpack_pack_int(&pk, 3);
    msgpack_pack_str_with_body(&pk, "recompute", 9);
    msgpack_pack_true(&pk);
    seed("rpc", "submit", sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
}

static void seeds_safetensors(const char *tmp)
{
    zmix_error err;
    float a[6] = {1, -2, 3.5f, 0, 1e-3f, 7};
    zmix_st_out t[2] = {{.name = "a.weight", .ndim = 2, .shape = {2, 3}, .data = a},
                        {.name = "b", .ndim = 1, .shape = {4}, .data = a + 2}};
    const char *keys[1] = {"name"}, *vals[1] = {"seed"};
    char path[1100];
    snprintf(path, sizeof path, "%s/st.safetensors", tmp);
    if (zmix_st_write(path, t, 2, keys, vals, 1, &err)) die("zmix_st_write", &err);
    seed_file_copy("safetensors", "two-f32", path);
    /* F16 and BF16 tensors (the writer only writes F32): header by hand. */
    static const char hdr[] = "{\"h\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]},"
                              "\"b\":{\"dtype\":\"BF16\",\"shape\":[1,2],\"data_offsets\":[4,8]},"
                              "\"__metadata__\":{\"k\":\"v\"}}";
    uint8_t buf[256];
    size_t n = sizeof hdr - 1;
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)(n >> (8 * i));
    memcpy(buf + 8, hdr, n);
    static const uint8_t data[8] = {0x00, 0x3c, 0x00, 0xc0, 0x80, 0x3f, 0x00, 0x7f};
    memcpy(buf + 8 + n, data, sizeof data);
    seed("safetensors", "f16-bf16", buf, 8 + n + sizeof data);

    zmix_adapted list[FUZZ_EXPERT_MATRICES];
    size_t z_total = fuzz_experts_list(list);
    float *z = malloc(z_total * sizeof *z);
    for (size_t i = 0; i < z_total; i++) z[i] = 1.0f + 0.01f * (float)i;
    snprintf(path, sizeof path, "%s/expert.safetensors", tmp);
    if (zmix_expert_save(path, list, FUZZ_EXPERT_MATRICES, z, keys, vals, 1, &err))
        die("zmix_expert_save", &err);
    seed_file_copy("experts", "expert", path);
    seed_file_copy("safetensors", "expert", path);
    free(z);
}

static void seeds_records(const char *tmp)
{
    zmix_error err;
    task_cache_config cc;
    task_cache_config_default(&cc);
    cc.dir = tmp;
    task_cache *cache;
    if (task_cache_open(&cc, &cache, NULL, &err)) die("task_cache_open", &err);
    float alpha[3] = {0.2f, 0.5f, 0.3f}, z[5] = {1, 1.5f, 0.5f, 2, 0.25f};
    char *names[2] = {"model.layers.0.mlp.gate_proj.weight", "model.layers.0.mlp.up_proj.weight"};
    uint32_t ranks[2] = {2, 3};
    zmix_score es[3] = {{0.5, -1, 0}, {0.25, -2, 0}, {0, -3, 0}};
    uint8_t settings[4] = {0x81, 0xa1, 'k', 0x01}, examples[3] = {1, 2, 3};
    task_result r = {.task = "seed-task",
                     .key = "0123456789abcdef",
                     .job_id = 9,
                     .created_ms = 1700000000000,
                     .score = {0.75, -0.5},
                     .base_score = {0.25, -1.5},
                     .n_experts = 3,
                     .expert_scores = es,
                     .n_alpha = 3,
                     .alpha = alpha,
                     .n_matrices = 2,
                     .matrix_names = names,
                     .ranks = ranks,
                     .z = z,
                     .settings = settings,
                     .settings_len = sizeof settings,
                     .document = examples,
                     .document_len = sizeof examples};
    if (task_cache_put(cache, &r, &err) || task_cache_flush(cache, &err))
        die("task_cache_put", &err);
    task_cache_free(cache);
    char path[1100];
    snprintf(path, sizeof path, "%s/tasks/seed-task.zmt", tmp);
    seed_file_copy("task_record", "task", path);

    job_store_config jc;
    job_store_config_default(&jc);
    jc.dir = tmp;
    job_store *store;
    job_recovered *rec = NULL;
    size_t n_rec = 0;
    if (job_store_open(&jc, &store, &rec, &n_rec, NULL, &err)) die("job_store_open", &err);
    job_recovered_free(rec, n_rec);
    int32_t toks[5] = {1, 2, 3, 4, 5};
    zmix_example items[2] = {{toks, 2, toks + 2, 1, 0, NULL, NULL, 0},
                             {toks + 3, 1, toks + 4, 1, 0, NULL, NULL, 0}};
    job_record jr = {.task = "seed-task", .key = "0123", .priority = 2};
    jr.examples.items = items;
    jr.examples.n = 2;
    jr.settings = settings;
    jr.settings_len = sizeof settings;
    if (job_store_create(store, &jr, &err)) die("job_store_create", &err);
    if (job_store_set_state(store, jr.id, JOB_FAILED, "a reason", 1700000001000, &err))
        die("job_store_set_state", &err);
    snprintf(path, sizeof path, "%s/jobs/%020llu.job", tmp, (unsigned long long)jr.id);
    seed_file_copy("job_record", "job", path);
    /* A multiple-choice job: the record's choices section. */
    int32_t lens[2] = {1, 2};
    zmix_example mc = {toks, 2, NULL, 0, 2, toks + 2, lens, 1};
    jr.examples.items = &mc;
    jr.examples.n = 1;
    if (job_store_create(store, &jr, &err)) die("job_store_create", &err);
    job_store_free(store);
    snprintf(path, sizeof path, "%s/jobs/%020llu.job", tmp, (unsigned long long)jr.id);
    seed_file_copy("job_record", "job-choices", path);
}

static void seeds_cem(void)
{
    zmix_error err;
    for (int variant = 0; variant < 2; variant++) {
        zmix_cem_settings s;
        zmix_cem_settings_default(&s);
        s.dim = variant ? 6 : 3;
        s.n_experts = 3;
        s.pop_size = 6;
        s.normalize = variant;
        s.ema = variant ? 0.5 : 0;
        s.seed = 5;
        s.std_tol = 0;
        s.target_accuracy = 2; /* a few generations whatever the scores */
        zmix_cem *cem;
        if (zmix_cem_create(&s, &cem, &err)) die("zmix_cem_create", &err);
        float pop[36];
        zmix_score sc[6];
        for (int g = 0; g < 2 + variant; g++) {
            zmix_cem_ask(cem, pop);
            for (int i = 0; i < 6; i++) sc[i] = (zmix_score){pop[i * s.dim] > 0.3f, -pop[i], 0.0};
            if (zmix_cem_tell(cem, sc, &err)) die("zmix_cem_tell", &err);
        }
        if (variant) zmix_cem_ask(cem, pop); /* pending population saved too */
        uint8_t *buf;
        size_t len;
        if (zmix_cem_save(cem, &buf, &len, &err)) die("zmix_cem_save", &err);
        seed("cem_checkpoint", variant ? "pending" : "plain", buf, len);
        free(buf);
        zmix_cem_free(cem);
    }
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: fuzz_seeds OUT_DIR PROTO_VECTORS_JSON [CONFIG_JSON]\n");
        return 2;
    }
    out_root = argv[1];
    char tmp[] = "/tmp/zmix-fuzz-seeds-XXXXXX";
    if (!mkdtemp(tmp)) die("mkdtemp", NULL);

    seeds_rpc(argv[2]);
    seeds_safetensors(tmp);
    seeds_records(tmp);
    seeds_cem();
    seed_text("json_config", "llama",
              "{\"model_type\":\"llama\",\"hidden_size\":64,\"intermediate_size\":172,"
              "\"num_hidden_layers\":5,\"num_attention_heads\":8,\"num_key_value_heads\":4,"
              "\"vocab_size\":512,\"max_position_embeddings\":512,\"rms_norm_eps\":1e-05,"
              "\"rope_theta\":10000.0,\"tie_word_embeddings\":true,\"bos_token_id\":1,"
              "\"eos_token_id\":2}");
    seed_text("json_config", "qwen2",
              "{\"model_type\":\"qwen2\",\"hidden_size\":32,\"intermediate_size\":48,"
              "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"num_key_value_heads\":2,"
              "\"head_dim\":8,\"vocab_size\":100,\"max_position_embeddings\":64,"
              "\"rms_norm_eps\":1e-6,\"rope_theta\":1000000.0,\"tie_word_embeddings\":false}");
    if (argc > 3 && access(argv[3], R_OK) == 0) seed_file_copy("json_config", "stories", argv[3]);
    seed_text("examples", "two",
              "{\"examples\":[{\"prompt\":[1,2,3],\"target\":[4]},"
              "{\"prompt\":[5],\"target\":[6,7]}]}");
    seed_text("examples", "one", "{\"examples\":[{\"prompt\":[1],\"target\":[0]}]}");
    seed_text("examples", "choices",
              "{\"examples\":[{\"prompt\":[1,2],\"choices\":[[3],[4,5]],\"answer\":1},"
              "{\"prompt\":[6],\"choices\":[[7],[8],[9,10]],\"answer\":0}]}");
    seed_text("tokenizer", "prose", "It's 2024: the quick brown fox, don't you think?\n\n  ");
    seed_text("tokenizer", "scripts",
              "Gr\xC3\xB6\xC3\x9F"
              "e \xE6\x97\xA5\xE6\x9C\xAC e\xCC\x81 "
              "\xF0\x9F\x8E\x89"
              "<|endoftext|><s>[INST] <mask> x<sep>  y \xE2\x96\x81\xC2\x85"
              "\r\n\t12345");
    seed_text("server_config", "full",
              "# zmixd\nmodel = /nonexistent/model\nexperts = a.st,b.st\nadapt = mlp\n"
              "listen = tcp:127.0.0.1:7878\nworkers = 2\ncache-bytes = 64M\nmax-jobs = 8\n"
              "log-level = debug\nframe-limit = 4096\nidle-timeout-ms = 1000\n"
              "max-examples = 4\njob-memory = 2M\n");
    seed_text("server_config", "unix", "listen = unix:/tmp/x.sock\nmax-pop = 64\n");

    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0) return 1;
    printf("fuzz_seeds: corpus written to %s\n", out_root);
    return 0;
}
