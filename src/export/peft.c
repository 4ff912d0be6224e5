/*
 * The LoRA adapter in PEFT's layout: what PEFT, vLLM, LoRAX and llama.cpp's converter read.
 *
 *   adapter_model.safetensors   base_model.model.<module>.lora_A.weight  F32 [r, in]
 *                               base_model.model.<module>.lora_B.weight  F32 [out, r]
 *   adapter_config.json         peft_type LORA, r, lora_alpha, target_modules, ...
 *
 * PEFT adds scaling · B·A to W with scaling = lora_alpha / r (per module: alpha_pattern and
 * rank_pattern override both). zmix writes every module with alpha = its own rank, so the
 * scaling is 1 whichever rule a reader applies: PEFT's per-module one, or vLLM's, which takes
 * the config's lora_alpha / r for every module (the config's r and lora_alpha are both the
 * largest rank). llama.cpp divides the config's lora_alpha by each tensor's own rank, so for
 * it every module must have the same rank (--uniform-rank, or a fixed --rank).
 *
 * The split of d between the factors is balanced, B = U_r·diag(sign(d)·√|d|) and
 * A = diag(√|d|)·V_rᵀ: both factors then have the same scale, so converting the adapter to
 * F16 or BF16 (as llama.cpp's converter offers) loses the same relative precision in each and
 * neither underflows.
 */
#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "export_internal.h"
#include "model/safetensors.h"
#include "util/file.h"

/* Element idx of Vt (which 0) or U (which 1), in float32 whether the factors are kept in 32 or
 * 16 bits. */
static float factor_value(const zmix_factors *f, int which, size_t idx)
{
    const float *f32 = which ? f->U : f->Vt;
    if (f32) return f32[idx];
    float v;
    zmix_half_to_float(&v, (which ? f->U16 : f->Vt16) + idx, 1, f->dtype);
    return v;
}

#define PEFT_PREFIX "base_model.model."

/* "model.layers.3.mlp.gate_proj" from "model.layers.3.mlp.gate_proj.weight". */
static void module_path(const char *name, char *out, size_t size)
{
    snprintf(out, size, "%s", name);
    size_t n = strlen(out);
    if (n > 7 && !strcmp(out + n - 7, ".weight")) out[n - 7] = '\0';
}

/* The module's last name part ("gate_proj"): what target_modules lists. */
static const char *module_leaf(const char *module)
{
    const char *dot = strrchr(module, '.');
    return dot ? dot + 1 : module;
}

/* A rank_pattern / alpha_pattern key for a module: its path without the leading "model.".
 * PEFT matches a key against the module name as a regular expression anchored at the end and
 * preceded by a dot (older releases) or by an optional dotted prefix (newer ones); this form
 * satisfies both, and the dots in it cannot match across a layer number. */
static const char *pattern_key(const char *module)
{
    return strncmp(module, "model.", 6) ? module : module + 6;
}

static int file_size(const char *path, size_t *out)
{
    struct stat st;
    if (stat(path, &st)) return -1;
    *out = (size_t)st.st_size;
    return 0;
}

static int write_config(const export_plan *p, const zmix_export_opts *opts, const char *path,
                        int top, zmix_error *err)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *targets = cJSON_CreateArray(), *ranks = cJSON_CreateObject(),
          *alphas = cJSON_CreateObject();
    int rc = 0;
    if (!o || !targets || !ranks || !alphas) {
        cJSON_Delete(o);
        cJSON_Delete(targets);
        cJSON_Delete(ranks);
        cJSON_Delete(alphas);
        return zmix_error_set(err, ZMIX_ENOMEM, "%s: out of memory", path);
    }
    for (int m = 0; m < p->n; m++) {
        char module[128];
        module_path(p->m[m].a->name, module, sizeof module);
        const char *leaf = module_leaf(module);
        int seen = 0;
        for (const cJSON *t = targets->child; t && !seen; t = t->next)
            seen = !strcmp(t->valuestring, leaf);
        if (!seen) cJSON_AddItemToArray(targets, cJSON_CreateString(leaf));
        if (p->m[m].rank != top) {
            cJSON_AddNumberToObject(ranks, pattern_key(module), p->m[m].rank);
            cJSON_AddNumberToObject(alphas, pattern_key(module), p->m[m].rank);
        }
    }
    cJSON_AddStringToObject(o, "peft_type", "LORA");
    cJSON_AddStringToObject(o, "task_type", "CAUSAL_LM");
    cJSON_AddStringToObject(o, "base_model_name_or_path", opts->model_path ? opts->model_path : "");
    cJSON_AddNumberToObject(o, "r", top);
    cJSON_AddNumberToObject(o, "lora_alpha", top);
    cJSON_AddItemToObject(o, "target_modules", targets);
    cJSON_AddItemToObject(o, "rank_pattern", ranks);
    cJSON_AddItemToObject(o, "alpha_pattern", alphas);
    cJSON_AddNumberToObject(o, "lora_dropout", 0);
    cJSON_AddStringToObject(o, "bias", "none");
    cJSON_AddBoolToObject(o, "fan_in_fan_out", 0);
    cJSON_AddBoolToObject(o, "use_rslora", 0);
    cJSON_AddBoolToObject(o, "use_dora", 0);
    cJSON_AddBoolToObject(o, "init_lora_weights", 1);
    cJSON_AddBoolToObject(o, "inference_mode", 1);
    cJSON_AddNullToObject(o, "modules_to_save");
    cJSON_AddNullToObject(o, "layers_to_transform");
    cJSON_AddNullToObject(o, "layers_pattern");
    cJSON_AddNullToObject(o, "revision");
    char *text = cJSON_Print(o);
    cJSON_Delete(o);
    if (!text) return zmix_error_set(err, ZMIX_ENOMEM, "%s: out of memory", path);
    fs_piece pieces[2] = {{text, strlen(text)}, {"\n", 1}};
    fs_write_opts wo = {.mode = 0644};
    rc = fs_write_atomic(path, pieces, 2, &wo, err);
    free(text);
    return rc;
}

int export_write_peft(const export_plan *p, const zmix_export_opts *opts, const char *dir,
                      zmix_export_report *report, zmix_error *err)
{
    int n = p->n, rc = 0, top = 1;
    /* A llama2.c checkpoint holds q and k rows in its own (interleaved) order; an adapter
     * applies to the Hugging Face layout, so their rows would land on the wrong weights. */
    for (int m = 0; m < n; m++)
        if (p->rt->model->cfg.rope_interleaved &&
            (p->m[m].a->kind == ZMIX_MAT_Q || p->m[m].a->kind == ZMIX_MAT_K))
            return zmix_error_set(err, ZMIX_EINVAL,
                                  "export: %s of a llama2.c checkpoint: its q/k rows are not in "
                                  "the Hugging Face order an adapter applies to; adapt the "
                                  "Hugging Face directory of the model instead",
                                  p->m[m].a->name);
    for (int m = 0; m < n; m++) top = p->m[m].rank > top ? p->m[m].rank : top;
    zmix_st_out *outs = calloc(2 * (size_t)(n ? n : 1), sizeof *outs);
    char(*names)[2][192] = calloc((size_t)(n ? n : 1), sizeof *names);
    float **blocks = calloc(2 * (size_t)(n ? n : 1), sizeof *blocks);
    if (!outs || !names || !blocks) rc = zmix_error_set(err, ZMIX_ENOMEM, "export: out of memory");
    for (int m = 0; !rc && m < n; m++) {
        const export_delta *e = &p->m[m];
        int r = e->rank, rows = e->a->rows, cols = e->a->cols, full = e->a->rank;
        float *A = malloc((size_t)r * cols * sizeof *A);
        float *B = malloc((size_t)rows * r * sizeof *B);
        blocks[2 * m] = A;
        blocks[2 * m + 1] = B;
        if (!A || !B) {
            rc = zmix_error_set(err, ZMIX_ENOMEM, "export: out of memory for %s", e->a->name);
            break;
        }
        for (int j = 0; j < r; j++) {
            int i = e->order[j];
            float root = sqrtf(fabsf(e->d[i]));
            float signed_root = e->d[i] < 0.0f ? -root : root;
            for (int c = 0; c < cols; c++)
                A[(size_t)j * cols + c] = root * factor_value(e->f, 0, (size_t)i * cols + c);
            for (int row = 0; row < rows; row++)
                B[(size_t)row * r + j] =
                    signed_root * factor_value(e->f, 1, (size_t)row * full + i);
        }
        char module[128];
        module_path(e->a->name, module, sizeof module);
        snprintf(names[m][0], sizeof names[m][0], PEFT_PREFIX "%s.lora_A.weight", module);
        snprintf(names[m][1], sizeof names[m][1], PEFT_PREFIX "%s.lora_B.weight", module);
        outs[2 * m] = (zmix_st_out){names[m][0], 2, {r, cols}, A, ZMIX_ST_F32, NULL};
        outs[2 * m + 1] = (zmix_st_out){names[m][1], 2, {rows, r}, B, ZMIX_ST_F32, NULL};
        report->matrices[m].bytes = ((size_t)r * cols + (size_t)rows * r) * sizeof(float);
    }
    char st_path[4096], cfg_path[4096];
    if (!rc && (snprintf(st_path, sizeof st_path, "%s/adapter_model.safetensors", dir) >=
                    (int)sizeof st_path ||
                snprintf(cfg_path, sizeof cfg_path, "%s/adapter_config.json", dir) >=
                    (int)sizeof cfg_path))
        rc = zmix_error_set(err, ZMIX_ELIMIT, "export: output directory path too long");
    if (!rc) {
        const char *keys[8] = {"format"}, *values[8] = {"pt"};
        int n_meta = 1 + export_provenance_meta(p->res, keys + 1, values + 1, 7);
        rc = zmix_st_write(st_path, outs, 2 * n, keys, values, n_meta, err);
    }
    if (!rc) rc = write_config(p, opts, cfg_path, top, err);
    size_t a = 0, b = 0;
    if (!rc && (file_size(st_path, &a) || file_size(cfg_path, &b)))
        rc = zmix_error_set(err, ZMIX_EIO, "export: %s: cannot stat what was written", dir);
    report->bytes = a + b;
    for (int i = 0; blocks && i < 2 * n; i++) free(blocks[i]);
    free(blocks);
    free(names);
    free(outs);
    return rc;
}
