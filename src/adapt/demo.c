/*
 * The demo generator (zmix demo-init): a small byte-level LLaMA in the Hugging Face format,
 * K experts and a planted few-shot task, all from one seed. See include/zmix/demo.h for the
 * files and docs/demo.md for the reasoning behind the numbers below.
 *
 * Random weights decode random bytes, which would make a demo of unreadable targets. Two
 * changes to a plain random model (zmix_model_create_random) make its greedy text printable
 * without touching what the layers compute:
 *
 *  - Channel 0 of the residual stream is a constant: every embedding row has DEMO_BIAS_CHANNEL
 *    in it, no layer writes to it (row 0 of o_proj and down_proj is zero; a zero row of W is a
 *    zero row of U wherever σ > 0, so every SVF mix W' = U diag(σ ⊙ z') Vᵀ keeps it zero), and
 *    no layer reads it (weight 0 in both RMS norms).
 *  - The LM head turns that constant into a per-token bias: column 0 favours lowercase
 *    letters and space, tolerates other printable ASCII and suppresses everything else.
 *
 * After the final RMS norm, channel 0 is positive at every position, so the bias is there
 * for every prediction, while the other channels still decide which letter wins.
 */
#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model/model_internal.h"
#include "model/safetensors.h"
#include "util/file.h"
#include "util/pcg.h"
#include "zmix/adapt.h"
#include "zmix/demo.h"

/* Shape: several layers, GQA, hidden ≈ 2.7 × dim, like the LLaMA family, and small enough
 * that a population of 32 over 16 examples scores in well under a second per generation. */
#define DEMO_DIM        160
#define DEMO_HIDDEN     432
#define DEMO_LAYERS     5
#define DEMO_HEADS      4
#define DEMO_KV_HEADS   2
#define DEMO_VOCAB      258 /* 256 bytes, BOS, EOS */
#define DEMO_BOS        256
#define DEMO_EOS        257
#define DEMO_MAX_SEQ    256
#define DEMO_TARGET_LEN 8

/* Value of the constant residual channel, and the LM-head weights that read it. */
#define DEMO_BIAS_CHANNEL 1.0
#define DEMO_HEAD_LETTER  6.0  /* a-z and space */
#define DEMO_HEAD_PRINT   3.0  /* the rest of printable ASCII */
#define DEMO_HEAD_OTHER   -6.0 /* control bytes, bytes >= 128, BOS, EOS */

/* Spread of the experts: z = exp(N(0, s²)) per singular value (planted.c). */
#define DEMO_Z_LOG_STD 0.6

/* PCG stream for everything the demo draws itself (α*, prompts): "demo". */
#define DEMO_STREAM 0x64656d6full

static const char *const expert_names[ZMIX_DEMO_N_EXPERTS] = {"red", "green", "blue", "gold"};

/* Prompt words: short, common, all lowercase, so prompts read as text. */
static const char *const words[] = {
    "amber", "apple",  "bird",  "blue",  "bread",  "cloud", "coral", "dawn",  "delta",  "dune",
    "ember", "fern",   "field", "flint", "frost",  "glass", "grain", "hazel", "iron",   "ivory",
    "jade",  "lake",   "leaf",  "lemon", "maple",  "moss",  "night", "north", "oak",    "ocean",
    "olive", "pearl",  "pine",  "plum",  "quartz", "rain",  "reed",  "river", "rose",   "salt",
    "sand",  "silver", "slate", "snow",  "stone",  "storm", "sun",   "tide",  "violet", "wind"};
#define N_WORDS (int)(sizeof words / sizeof words[0])

void zmix_demo_opts_default(zmix_demo_opts *o)
{
    memset(o, 0, sizeof *o);
    o->seed = 1;
    o->n_examples = 16;
    o->n_heldout = 16;
    o->force = 0;
}

static double head_bias(int id)
{
    if ((id >= 'a' && id <= 'z') || id == ' ') return DEMO_HEAD_LETTER;
    if (id > ' ' && id < 0x7f) return DEMO_HEAD_PRINT;
    return DEMO_HEAD_OTHER;
}

static int make_dir(const char *path, zmix_error *err)
{
    struct stat st;
    if (mkdir(path, 0777) == 0 || (errno == EEXIST && stat(path, &st) == 0 && S_ISDIR(st.st_mode)))
        return 0;
    return zmix_error_set(err, ZMIX_EIO, "%s: cannot create the directory: %s", path,
                          errno == EEXIST ? "a file of that name exists" : strerror(errno));
}

/* mkdir -p: every missing level of path. */
static int make_dirs(const char *path, zmix_error *err)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        struct stat st;
        int rc = stat(buf, &st) == 0 ? 0 : make_dir(buf, err);
        *p = '/';
        if (rc) return rc;
    }
    return make_dir(buf, err);
}

/* Writes text and a newline to path, atomically. */
static int write_text_atomic(const char *path, const char *text, zmix_error *err)
{
    fs_piece pieces[2] = {{text, strlen(text)}, {"\n", 1}};
    fs_write_opts opts = {.mode = 0666}; /* before the umask, as fopen creates files */
    return fs_write_atomic(path, pieces, 2, &opts, err);
}

/* Writes a cJSON tree (consumed) as pretty-printed JSON. */
static int write_json(const char *path, cJSON *root, zmix_error *err)
{
    char *text = root ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    if (!text) return zmix_error_set(err, ZMIX_ENOMEM, "%s: out of memory for the JSON", path);
    int rc = write_text_atomic(path, text, err);
    free(text);
    return rc;
}

static void demo_config(zmix_model_config *c)
{
    memset(c, 0, sizeof *c);
    snprintf(c->model_type, sizeof c->model_type, "llama");
    c->dim = DEMO_DIM;
    c->hidden_dim = DEMO_HIDDEN;
    c->n_layers = DEMO_LAYERS;
    c->n_heads = DEMO_HEADS;
    c->n_kv_heads = DEMO_KV_HEADS;
    c->head_dim = DEMO_DIM / DEMO_HEADS;
    c->vocab_size = DEMO_VOCAB;
    c->max_seq_len = DEMO_MAX_SEQ;
    c->norm_eps = 1e-5f;
    c->rope_theta = 10000.0f;
    c->tied_embeddings = 0;
    c->rope_interleaved = 0; /* HF rotate-half, as the loader expects of config.json models */
    c->bos_id = DEMO_BOS;
    c->eos_id = DEMO_EOS;
}

static int write_config(const char *path, const zmix_model_config *c, zmix_error *err)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *arch = o ? cJSON_AddArrayToObject(o, "architectures") : NULL;
    if (arch) cJSON_AddItemToArray(arch, cJSON_CreateString("LlamaForCausalLM"));
    cJSON_AddStringToObject(o, "model_type", c->model_type);
    cJSON_AddNumberToObject(o, "hidden_size", c->dim);
    cJSON_AddNumberToObject(o, "intermediate_size", c->hidden_dim);
    cJSON_AddNumberToObject(o, "num_hidden_layers", c->n_layers);
    cJSON_AddNumberToObject(o, "num_attention_heads", c->n_heads);
    cJSON_AddNumberToObject(o, "num_key_value_heads", c->n_kv_heads);
    cJSON_AddNumberToObject(o, "vocab_size", c->vocab_size);
    cJSON_AddNumberToObject(o, "max_position_embeddings", c->max_seq_len);
    cJSON_AddNumberToObject(o, "rms_norm_eps", 1e-5);
    cJSON_AddNumberToObject(o, "rope_theta", 10000.0);
    cJSON_AddStringToObject(o, "hidden_act", "silu");
    cJSON_AddBoolToObject(o, "tie_word_embeddings", 0);
    cJSON_AddNumberToObject(o, "bos_token_id", c->bos_id);
    cJSON_AddNumberToObject(o, "eos_token_id", c->eos_id);
    cJSON_AddStringToObject(o, "torch_dtype", "float32");
    return write_json(path, o, err);
}

/* The demo's changes to a random model (see the top of the file), as modified copies. */
typedef struct demo_weights {
    float *embed, *lm_head;
    float *attn_norm, *ffn_norm; /* one vector shared by every layer */
    float **wo, **w_down;        /* per layer */
    int n_layers;
} demo_weights;

static void demo_weights_free(demo_weights *w)
{
    free(w->embed);
    free(w->lm_head);
    free(w->attn_norm);
    free(w->ffn_norm);
    for (int l = 0; l < w->n_layers; l++) {
        if (w->wo) free(w->wo[l]);
        if (w->w_down) free(w->w_down[l]);
    }
    free(w->wo);
    free(w->w_down);
}

static float *copy_floats(const float *src, size_t n)
{
    float *p = malloc(n * sizeof *p);
    if (p) memcpy(p, src, n * sizeof *p);
    return p;
}

static int demo_weights_make(const zmix_model *m, demo_weights *w, zmix_error *err)
{
    const zmix_model_config *c = &m->cfg;
    size_t dim = (size_t)c->dim, vocab = (size_t)c->vocab_size, hid = (size_t)c->hidden_dim;
    size_t q_dim = (size_t)c->n_heads * c->head_dim;
    memset(w, 0, sizeof *w);
    w->n_layers = c->n_layers;
    w->embed = copy_floats(m->embed, vocab * dim);
    w->lm_head = copy_floats(m->lm_head, vocab * dim);
    w->attn_norm = copy_floats(m->layers[0].attn_norm, dim);
    w->ffn_norm = copy_floats(m->layers[0].ffn_norm, dim);
    w->wo = calloc((size_t)c->n_layers, sizeof *w->wo);
    w->w_down = calloc((size_t)c->n_layers, sizeof *w->w_down);
    int ok = w->embed && w->lm_head && w->attn_norm && w->ffn_norm && w->wo && w->w_down;
    for (int l = 0; ok && l < c->n_layers; l++) {
        w->wo[l] = copy_floats(m->layers[l].wo, dim * q_dim);
        w->w_down[l] = copy_floats(m->layers[l].w_down, dim * hid);
        ok = w->wo[l] && w->w_down[l];
        if (ok) {
            memset(w->wo[l], 0, q_dim * sizeof(float));   /* row 0 */
            memset(w->w_down[l], 0, hid * sizeof(float)); /* row 0 */
        }
    }
    if (!ok) {
        demo_weights_free(w);
        return zmix_error_set(err, ZMIX_ENOMEM, "demo: out of memory for the weights");
    }
    for (size_t v = 0; v < vocab; v++) {
        w->embed[v * dim] = (float)DEMO_BIAS_CHANNEL;
        w->lm_head[v * dim] = (float)head_bias((int)v);
    }
    w->attn_norm[0] = 0.0f;
    w->ffn_norm[0] = 0.0f;
    return 0;
}

static int write_model(const char *model_dir, uint64_t seed, zmix_error *err)
{
    zmix_model_config cfg;
    demo_config(&cfg);
    zmix_model *m = NULL;
    int rc = zmix_model_create_random(&cfg, seed, &m, err);
    if (rc) return rc;
    demo_weights w;
    rc = demo_weights_make(m, &w, err);
    if (rc) {
        zmix_model_free(m);
        return rc;
    }
    int n_layers = cfg.n_layers, per_layer = 9, n = 3 + per_layer * n_layers;
    zmix_st_out *t = calloc((size_t)n, sizeof *t);
    char(*names)[96] = calloc((size_t)n, sizeof *names);
    if (!t || !names) {
        rc = zmix_error_set(err, ZMIX_ENOMEM, "demo: out of memory");
        goto done;
    }
    int64_t dim = cfg.dim, hid = cfg.hidden_dim, vocab = cfg.vocab_size;
    int64_t q_dim = (int64_t)cfg.n_heads * cfg.head_dim,
            kv_dim = (int64_t)cfg.n_kv_heads * cfg.head_dim;
    int i = 0;
#define ADD(NAME, DATA, R, C)                                                                      \
    do {                                                                                           \
        snprintf(names[i], sizeof names[i], "%s", NAME);                                           \
        t[i] = (zmix_st_out){.name = names[i], .ndim = (C) ? 2 : 1, .data = (DATA)};               \
        t[i].shape[0] = (R);                                                                       \
        t[i].shape[1] = (C);                                                                       \
        i++;                                                                                       \
    } while (0)
    ADD("model.embed_tokens.weight", w.embed, vocab, dim);
    ADD("model.norm.weight", m->final_norm, dim, 0);
    ADD("lm_head.weight", w.lm_head, vocab, dim);
    for (int l = 0; l < n_layers; l++) {
        const zmix_layer *L = &m->layers[l];
        char p[64];
        snprintf(p, sizeof p, "model.layers.%d.", l);
        char name[96];
#define LAYER(SUFFIX, DATA, R, C)                                                                  \
    do {                                                                                           \
        snprintf(name, sizeof name, "%s%s", p, SUFFIX);                                            \
        ADD(name, DATA, R, C);                                                                     \
    } while (0)
        LAYER("input_layernorm.weight", w.attn_norm, dim, 0);
        LAYER("self_attn.q_proj.weight", L->wq, q_dim, dim);
        LAYER("self_attn.k_proj.weight", L->wk, kv_dim, dim);
        LAYER("self_attn.v_proj.weight", L->wv, kv_dim, dim);
        LAYER("self_attn.o_proj.weight", w.wo[l], dim, q_dim);
        LAYER("post_attention_layernorm.weight", w.ffn_norm, dim, 0);
        LAYER("mlp.gate_proj.weight", L->w_gate, hid, dim);
        LAYER("mlp.up_proj.weight", L->w_up, hid, dim);
        LAYER("mlp.down_proj.weight", w.w_down[l], dim, hid);
#undef LAYER
    }
#undef ADD
    char path[1200], seed_text[32];
    snprintf(seed_text, sizeof seed_text, "%llu", (unsigned long long)seed);
    const char *keys[] = {"format", "zmix.demo_seed"};
    const char *values[] = {"pt", seed_text};
    snprintf(path, sizeof path, "%s/model.safetensors", model_dir);
    rc = zmix_st_write(path, t, i, keys, values, 2, err);
    if (!rc) {
        snprintf(path, sizeof path, "%s/config.json", model_dir);
        rc = write_config(path, &cfg, err);
    }
    if (!rc) {
        zmix_tokenizer *tok = NULL;
        rc = zmix_tokenizer_create_bytes(DEMO_BOS, DEMO_EOS, DEMO_VOCAB, &tok, err);
        snprintf(path, sizeof path, "%s/tokenizer.json", model_dir);
        if (!rc) rc = zmix_tokenizer_save(tok, path, err);
        zmix_tokenizer_free(tok);
    }
done:
    free(t);
    free(names);
    demo_weights_free(&w);
    zmix_model_free(m);
    return rc;
}

/* Writes the K experts with readable names: planted.c draws them (into a scratch directory,
 * as planted_<k>), then each is saved again as DIR/experts/<name>.safetensors. */
static int write_experts(const zmix_model *model, const char *dir, const float *alpha_star,
                         uint64_t seed, char paths[][1100], zmix_error *err)
{
    char scratch[1100];
    snprintf(scratch, sizeof scratch, "%s/experts/.planted", dir);
    int rc = make_dir(scratch, err);
    if (rc) return rc;
    zmix_planted_opts po;
    zmix_planted_opts_default(&po);
    po.n_experts = ZMIX_DEMO_N_EXPERTS;
    po.n_examples = 1; /* the examples are drawn below, from text prompts */
    po.prompt_len = 0;
    po.target_len = 1;
    po.z_log_std = DEMO_Z_LOG_STD;
    po.alpha_star = alpha_star;
    po.seed = seed;
    zmix_planted planted;
    rc = zmix_planted_create(model, scratch, &po, &planted, err);
    if (rc) return rc;
    zmix_adapted *list = NULL;
    int n = 0;
    size_t z_total = 0;
    rc = zmix_adapted_list(model, ZMIX_ADAPT_MLP, &list, &n, &z_total, err);
    char seed_text[32];
    snprintf(seed_text, sizeof seed_text, "%llu", (unsigned long long)seed);
    for (int k = 0; !rc && k < ZMIX_DEMO_N_EXPERTS; k++) {
        zmix_expert e;
        rc = zmix_expert_load(planted.expert_paths[k], list, n, z_total, &e, err);
        if (rc) break;
        snprintf(paths[k], sizeof paths[k], "%s/experts/%s.safetensors", dir, expert_names[k]);
        const char *keys[] = {"name", "zmix.demo_seed", "zmix.note"};
        const char *values[] = {expert_names[k], seed_text,
                                "random SVF vector z = exp(N(0, s^2)) made by zmix demo-init"};
        rc = zmix_expert_save(paths[k], list, n, e.z, keys, values, 3, err);
        free(e.z);
    }
    for (int k = 0; k < planted.n_experts; k++) unlink(planted.expert_paths[k]);
    free(list);
    zmix_planted_free(&planted);
    rmdir(scratch);
    return rc;
}

static int is_printable(const int32_t *ids, int n)
{
    for (int i = 0; i < n; i++)
        if (ids[i] < 0x20 || ids[i] >= 0x7f) return 0;
    return 1;
}

/* Draws prompts of three words and keeps those whose greedy continuation under z'(α*) is
 * printable text (almost all, with the LM-head bias). */
typedef struct text_pair {
    char prompt[64];
    char target[DEMO_TARGET_LEN + 1];
} text_pair;

static int draw_examples(const zmix_runtime *rt, const float *z_star, pcg32 *rng, int n,
                         text_pair *out, int *n_tried, zmix_error *err)
{
    const zmix_tokenizer *tok = zmix_model_tokenizer(zmix_runtime_model(rt));
    int32_t ids[80], target[DEMO_TARGET_LEN];
    int have = 0;
    while (have < n) {
        if (++*n_tried > 50 * n + 100)
            return zmix_error_set(err, ZMIX_ELIMIT,
                                  "demo: only %d of %d prompts decode to printable text", have, n);
        text_pair *p = &out[have];
        const char *a = words[pcg32_bounded(rng, N_WORDS)];
        const char *b = words[pcg32_bounded(rng, N_WORDS)];
        const char *c = words[pcg32_bounded(rng, N_WORDS)];
        snprintf(p->prompt, sizeof p->prompt, "%s %s %s ", a, b, c);
        int n_ids = zmix_tokenizer_encode(tok, p->prompt, strlen(p->prompt), 1, ids, err);
        int rc = zmix_generate(rt, 1, z_star, ids, n_ids, DEMO_TARGET_LEN, target, err);
        if (rc) return rc;
        if (!is_printable(target, DEMO_TARGET_LEN)) continue;
        zmix_tokenizer_decode(tok, target, DEMO_TARGET_LEN, 0, p->target, sizeof p->target);
        int dup = 0;
        for (int j = 0; j < have && !dup; j++) dup = !strcmp(out[j].prompt, p->prompt);
        if (!dup) have++;
    }
    return 0;
}

static int write_examples(const char *path, const text_pair *pairs, int n, zmix_error *err)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *list = root ? cJSON_AddArrayToObject(root, "examples") : NULL;
    for (int i = 0; list && i < n; i++) {
        cJSON *e = cJSON_CreateObject();
        if (!e) break;
        cJSON_AddStringToObject(e, "prompt", pairs[i].prompt);
        cJSON_AddStringToObject(e, "target", pairs[i].target);
        cJSON_AddItemToArray(list, e);
    }
    return write_json(path, root, err);
}

/* The same examples as token ids, for clients that send ids (the daemon's submit takes ids
 * until it encodes text itself with zmix_examples_from_text). */
static int write_examples_tokens(const char *path, const zmix_tokenizer *tok,
                                 const text_pair *pairs, int n, zmix_error *err)
{
    zmix_text_example *items = calloc((size_t)n, sizeof *items);
    if (!items) return zmix_error_set(err, ZMIX_ENOMEM, "demo: out of memory");
    for (int i = 0; i < n; i++)
        items[i] = (zmix_text_example){pairs[i].prompt, strlen(pairs[i].prompt), pairs[i].target,
                                       strlen(pairs[i].target)};
    zmix_examples ex;
    int rc = zmix_examples_from_text(tok, items, n, &ex, err);
    free(items);
    if (rc) return rc;
    rc = zmix_adapt_examples_save_json(path, &ex, err);
    zmix_examples_free(&ex);
    return rc;
}

static int write_secret(const char *path, const float *alpha_star, zmix_error *err)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *names = o ? cJSON_AddArrayToObject(o, "experts") : NULL;
    cJSON *a = o ? cJSON_AddArrayToObject(o, "alpha_star") : NULL;
    for (int k = 0; names && a && k < ZMIX_DEMO_N_EXPERTS; k++) {
        cJSON_AddItemToArray(names, cJSON_CreateString(expert_names[k]));
        cJSON_AddItemToArray(a, cJSON_CreateNumber(alpha_star[k]));
    }
    return write_json(path, o, err);
}

static int write_manifest(const char *path, const zmix_demo_opts *o, zmix_error *err)
{
    cJSON *m = cJSON_CreateObject();
    char seed[32];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)o->seed);
    cJSON_AddStringToObject(m, "format", "zmix-demo");
    cJSON_AddNumberToObject(m, "version", 1);
    cJSON_AddStringToObject(m, "seed", seed);
    cJSON_AddStringToObject(m, "model", "model");
    cJSON *e = cJSON_AddArrayToObject(m, "experts");
    for (int k = 0; e && k < ZMIX_DEMO_N_EXPERTS; k++) {
        char p[64];
        snprintf(p, sizeof p, "experts/%s.safetensors", expert_names[k]);
        cJSON_AddItemToArray(e, cJSON_CreateString(p));
    }
    cJSON_AddStringToObject(m, "examples", "task.json");
    cJSON_AddStringToObject(m, "examples_tokens", "task.tokens.json");
    if (o->n_heldout > 0)
        cJSON_AddStringToObject(m, "heldout", "heldout.json");
    else
        cJSON_AddNullToObject(m, "heldout");
    cJSON_AddStringToObject(m, "alpha_star", "secret/alpha_star.json");
    cJSON_AddStringToObject(m, "adapt", "mlp");
    cJSON_AddNumberToObject(m, "n_examples", o->n_examples);
    cJSON_AddNumberToObject(m, "n_heldout", o->n_heldout);
    return write_json(path, m, err);
}

int zmix_demo_create(const char *dir, const zmix_demo_opts *o, zmix_demo_info *info,
                     zmix_error *err)
{
    memset(info, 0, sizeof *info);
    if (o->n_examples < 1 || o->n_examples > 1024 || o->n_heldout < 0 || o->n_heldout > 1024)
        return zmix_error_set(err, ZMIX_EINVAL,
                              "demo: n_examples = %d (need 1..1024), n_heldout = %d (0..1024)",
                              o->n_examples, o->n_heldout);
    if (strlen(dir) > 900) return zmix_error_set(err, ZMIX_EINVAL, "demo: path too long");
    char path[1100];
    struct stat st;
    snprintf(path, sizeof path, "%s/demo.json", dir);
    if (!o->force && stat(path, &st) == 0)
        return zmix_error_set(err, ZMIX_ESTATE,
                              "%s: a demo is already there (use --force to replace it)", dir);
    int rc = make_dirs(dir, err);
    const char *subdirs[] = {"model", "experts", "secret"};
    for (int i = 0; !rc && i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, subdirs[i]);
        rc = make_dir(path, err);
    }
    /* The manifest marks a complete demo: remove it first, so that a run that fails half-way
     * does not leave an old manifest over new files. */
    snprintf(path, sizeof path, "%s/demo.json", dir);
    if (!rc) unlink(path);
    char model_dir[1100];
    snprintf(model_dir, sizeof model_dir, "%s/model", dir);
    if (!rc) rc = write_model(model_dir, o->seed, err);
    if (rc) return rc;

    zmix_model *model = NULL;
    zmix_runtime *rt = NULL;
    float *z_star = NULL;
    text_pair *pairs = NULL;
    char expert_paths[ZMIX_DEMO_N_EXPERTS][1100];
    rc = zmix_model_load(model_dir, &model, err);
    if (rc) goto done;

    /* α* on the simplex, each weight in [0.1, 0.9] before normalising: a real mixture, far
     * from every single expert. The scorer keeps each matrix's singular-value mass, so only
     * α's direction matters and the normalised α* is the one to compare with. */
    pcg32 rng;
    pcg32_seed(&rng, o->seed, DEMO_STREAM);
    float sum = 0.0f;
    for (int k = 0; k < ZMIX_DEMO_N_EXPERTS; k++) {
        info->alpha_star[k] = (float)(0.1 + 0.8 * pcg32_uniform(&rng));
        sum += info->alpha_star[k];
    }
    for (int k = 0; k < ZMIX_DEMO_N_EXPERTS; k++) info->alpha_star[k] /= sum;
    info->n_experts = ZMIX_DEMO_N_EXPERTS;
    for (int k = 0; k < ZMIX_DEMO_N_EXPERTS; k++)
        snprintf(info->expert_names[k], sizeof info->expert_names[k], "%s", expert_names[k]);

    rc = write_experts(model, dir, info->alpha_star, o->seed, expert_paths, err);
    if (rc) goto done;
    const char *paths[ZMIX_DEMO_N_EXPERTS];
    for (int k = 0; k < ZMIX_DEMO_N_EXPERTS; k++) paths[k] = expert_paths[k];
    zmix_runtime_opts ropts;
    zmix_runtime_opts_default(&ropts);
    rc = zmix_runtime_create(model, &ropts, paths, ZMIX_DEMO_N_EXPERTS, &rt, err);
    if (rc) goto done;
    z_star = malloc(zmix_runtime_z_total(rt) * sizeof *z_star);
    pairs = calloc((size_t)(o->n_examples + o->n_heldout), sizeof *pairs);
    if (!z_star || !pairs) {
        rc = zmix_error_set(err, ZMIX_ENOMEM, "demo: out of memory");
        goto done;
    }
    zmix_compose_opts copts;
    zmix_compose_opts_default(&copts);
    copts.per_layer = 0;
    copts.normalize = 0;
    copts.rescale = 1;
    if ((rc = zmix_compose_z(rt, &copts, info->alpha_star, z_star, err))) goto done;
    rc = draw_examples(rt, z_star, &rng, o->n_examples + o->n_heldout, pairs, &info->n_tried, err);
    if (rc) goto done;

    snprintf(path, sizeof path, "%s/task.json", dir);
    if ((rc = write_examples(path, pairs, o->n_examples, err))) goto done;
    snprintf(path, sizeof path, "%s/task.tokens.json", dir);
    rc = write_examples_tokens(path, zmix_model_tokenizer(model), pairs, o->n_examples, err);
    if (rc) goto done;
    snprintf(path, sizeof path, "%s/heldout.json", dir);
    if (o->n_heldout > 0 && (rc = write_examples(path, pairs + o->n_examples, o->n_heldout, err)))
        goto done;
    snprintf(path, sizeof path, "%s/secret/alpha_star.json", dir);
    if ((rc = write_secret(path, info->alpha_star, err))) goto done;
    snprintf(path, sizeof path, "%s/demo.json", dir);
    rc = write_manifest(path, o, err);
done:
    free(pairs);
    free(z_star);
    if (rt) zmix_runtime_free(rt);
    if (model) zmix_model_free(model);
    if (rc) return rc;
    return 0;
}
