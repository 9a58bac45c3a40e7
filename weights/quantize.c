/* xcap_quantize: a model directory rewritten with lighter weights.
 *
 * f16: every floating tensor as IEEE half, names and shapes unchanged: still a checkpoint that
 *      transformers loads. xcap keeps the linear weights in half (nn/linear.h, NN_F16).
 * q8:  the weights of the linear layers (the matrices a decoder step streams) as int8 with one
 *      float32 scale per output channel, stored beside the weight as "<name>_scale" [N]:
 *          s[n] = max_k |W[k][n]| / 127,   q[k][n] = round(W[k][n] / s[n]) in [-127, 127]
 *      (symmetric, no zero point). Everything else stays float32. This is an xcap extension of
 *      the safetensors container: the file is valid safetensors, but only xcap knows what the
 *      int8 tensors mean (header metadata "xcap_quantization": "q8").
 * Which tensors are linear weights, and which axis is their output, follows the loader
 * (weights/model.c): nn.Linear (ViT, enc_to_dec_proj, a tied wte as the output projection)
 * stores [N, K]; GPT-2's Conv1D stores [K, N]. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nn/common.h"
#include "nn/linear.h"
#include "weights/config.h"
#include "weights/safetensors.h"
#include "xcap.h"

/* The files of a model directory besides the weights, copied as they are when present. */
static const char *const side_files[] = {
    "config.json",           "generation_config.json", "preprocessor_config.json", "vocab.json", "merges.txt",
    "tokenizer.json",        "tokenizer_config.json",  "special_tokens_map.json",  "added_tokens.json",
};

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

/* 1 for an nn.Linear weight [N,K] (output channel = rows), 0 for a Conv1D weight [K,N]
 * (output channel = columns), -1 for a tensor that is not a linear weight. */
static int linear_layout(const char *name, int tied) {
    static const char *const linear_nk[] = {
        ".attention.attention.query.weight", ".attention.attention.key.weight", ".attention.attention.value.weight",
        ".attention.output.dense.weight",    ".intermediate.dense.weight",      ".output.dense.weight",
    };
    static const char *const conv1d_kn[] = {
        ".attn.c_attn.weight",          ".attn.c_proj.weight",          ".crossattention.q_attn.weight",
        ".crossattention.c_attn.weight", ".crossattention.c_proj.weight", ".mlp.c_fc.weight",
        ".mlp.c_proj.weight",
    };
    if (!strncmp(name, "encoder.encoder.layer.", 22))
        for (size_t i = 0; i < sizeof linear_nk / sizeof *linear_nk; i++)
            if (ends_with(name, linear_nk[i])) return 1;
    if (!strncmp(name, "decoder.transformer.h.", 22))
        for (size_t i = 0; i < sizeof conv1d_kn / sizeof *conv1d_kn; i++)
            if (ends_with(name, conv1d_kn[i])) return 0;
    if (!strcmp(name, "encoder.embeddings.patch_embeddings.projection.weight")) return 1; /* [D,3,P,P] */
    if (!strcmp(name, "enc_to_dec_proj.weight") || !strcmp(name, "decoder.lm_head.weight")) return 1;
    /* A tied wte is the output projection too (its rows are the output channels); an untied
     * one is only a lookup table, which xcap reads in float. */
    if (!strcmp(name, "decoder.transformer.wte.weight") && tied) return 1;
    return -1;
}

typedef struct {
    const st_tensor *src;
    char *name;      /* as written */
    st_dtype dtype;  /* as written */
    void *data;      /* converted bytes */
    size_t n_bytes;
    int64_t shape[ST_MAX_DIMS];
    int ndim;
} out_tensor;

static void tensor_as_f32(const st_tensor *t, float *dst) {
    if (t->dtype == ST_F32) memcpy(dst, t->data, t->n_bytes);
    else if (t->dtype == ST_F16) st_f16_to_f32(t->data, dst, t->n_elements);
    else st_bf16_to_f32(t->data, dst, t->n_elements);
}

/* Symmetric int8 per output channel. rows_out: channel = row of a [rows, cols] view, else
 * channel = column. */
static void quantize_q8(const float *w, int8_t *q, float *scale, size_t rows, size_t cols, int rows_out) {
    size_t channels = rows_out ? rows : cols;
    for (size_t c = 0; c < channels; c++) {
        float top = 0.0f;
        for (size_t i = 0; i < (rows_out ? cols : rows); i++) {
            float v = fabsf(rows_out ? w[c * cols + i] : w[i * cols + c]);
            if (v > top) top = v;
        }
        scale[c] = top / 127.0f;
        for (size_t i = 0; i < (rows_out ? cols : rows); i++) {
            size_t at = rows_out ? c * cols + i : i * cols + c;
            float r = scale[c] > 0.0f ? rintf(w[at] / scale[c]) : 0.0f;
            q[at] = (int8_t)(r > 127.0f ? 127 : r < -127.0f ? -127 : r);
        }
    }
}

static int dtype_rank(st_dtype d) { return d == ST_F32 ? 0 : d == ST_F16 || d == ST_BF16 ? 1 : 2; }

static int cmp_out(const void *a, const void *b) {
    const out_tensor *x = a, *y = b;
    int r = dtype_rank(x->dtype) - dtype_rank(y->dtype);
    return r ? r : strcmp(x->name, y->name);
}

/* Writes the tensors to path (through path.tmp, renamed when complete). Largest elements first,
 * so every float32 tensor starts 4-byte aligned in the file. */
static int write_safetensors(const char *path, out_tensor *ts, int n, const char *quant, char *err, size_t errlen) {
    qsort(ts, (size_t)n, sizeof *ts, cmp_out);
    cJSON *root = cJSON_CreateObject(), *meta = cJSON_AddObjectToObject(root, "__metadata__");
    cJSON_AddStringToObject(meta, "format", "pt");
    cJSON_AddStringToObject(meta, "xcap_quantization", quant);
    size_t offset = 0;
    for (int i = 0; i < n; i++) {
        cJSON *t = cJSON_AddObjectToObject(root, ts[i].name), *shape = cJSON_AddArrayToObject(t, "shape");
        cJSON_AddStringToObject(t, "dtype", st_dtype_name(ts[i].dtype));
        for (int d = 0; d < ts[i].ndim; d++) cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)ts[i].shape[d]));
        cJSON *offs = cJSON_AddArrayToObject(t, "data_offsets");
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)offset));
        offset += ts[i].n_bytes;
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)offset));
    }
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!json) return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "out of memory for the safetensors header");
    size_t len = strlen(json), padded = (len + 7) / 8 * 8;
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    int ok = f != NULL;
    if (ok) {
        uint8_t header_len[8];
        for (int b = 0; b < 8; b++) header_len[b] = (uint8_t)((uint64_t)padded >> (8 * b));
        ok = fwrite(header_len, 1, 8, f) == 8 && fwrite(json, 1, len, f) == len;
        for (size_t i = len; ok && i < padded; i++) ok = fputc(' ', f) != EOF;
        for (int i = 0; ok && i < n; i++) ok = fwrite(ts[i].data, 1, ts[i].n_bytes, f) == ts[i].n_bytes;
        ok = (fclose(f) == 0) && ok;
    }
    free(json);
    if (!ok || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return xcap_fail(err, errlen, XCAP_ERR_IO, "%s: cannot write: %s", path, strerror(e));
    }
    return XCAP_OK;
}

static int copy_file(const char *from, const char *to, char *err, size_t errlen) {
    char *data;
    size_t size;
    int rc = xcap_read_file(from, &data, &size, err, errlen);
    if (rc) return rc;
    FILE *f = fopen(to, "wb");
    int ok = f && fwrite(data, 1, size, f) == size;
    if (f) ok = (fclose(f) == 0) && ok;
    free(data);
    if (!ok) return xcap_fail(err, errlen, XCAP_ERR_IO, "%s: cannot write: %s", to, strerror(errno));
    return XCAP_OK;
}

/* Builds the converted tensor list from the input file. */
static int convert_tensors(const st_file *in, const xcap_config *cfg, xcap_quant_type type, out_tensor *ts, int *n_out,
                           char *err, size_t errlen) {
    int n = 0;
    /* *n_out follows n, so that the caller frees what was converted when this fails midway. */
    for (int i = 0; i < in->n_tensors; i++, *n_out = n) {
        const st_tensor *t = &in->tensors[i];
        int layout = linear_layout(t->name, cfg->tie_word_embeddings);
        /* A tied checkpoint that also stores lm_head: the loader uses wte, so drop the copy. */
        if (cfg->tie_word_embeddings && !strcmp(t->name, "decoder.lm_head.weight") &&
            st_find(in, "decoder.transformer.wte.weight"))
            continue;
        if (t->dtype == ST_I8 || ends_with(t->name, "_scale"))
            return xcap_fail(err, errlen, XCAP_ERR_ARG, "%s: tensor %s: the model is already quantised", in->path,
                             t->name);
        float *f = malloc((t->n_elements ? t->n_elements : 1) * sizeof *f);
        if (!f) return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "out of memory for tensor %s", t->name);
        tensor_as_f32(t, f);
        out_tensor *o = &ts[n++];
        *n_out = n;
        o->src = t;
        o->name = strdup(t->name);
        o->ndim = t->ndim;
        memcpy(o->shape, t->shape, sizeof o->shape);
        if (!o->name) {
            free(f);
            return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "out of memory");
        }
        if (type == XCAP_QUANT_F16) {
            uint16_t *h = malloc((t->n_elements ? t->n_elements : 1) * sizeof *h);
            if (!h) {
                free(f);
                return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "out of memory for tensor %s", t->name);
            }
            nn_floats_to_halves(h, f, t->n_elements);
            free(f);
            o->dtype = ST_F16, o->data = h, o->n_bytes = t->n_elements * 2;
            continue;
        }
        if (layout < 0) {
            o->dtype = ST_F32, o->data = f, o->n_bytes = t->n_elements * 4;
            continue;
        }
        /* A linear weight: viewed as [rows, cols] with rows = the first axis. */
        size_t rows = (size_t)t->shape[0], cols = rows ? t->n_elements / rows : 0;
        size_t channels = layout ? rows : cols;
        int8_t *q = malloc(t->n_elements ? t->n_elements : 1);
        float *scale = malloc((channels ? channels : 1) * sizeof *scale);
        char *scale_name = malloc(strlen(t->name) + 8);
        if (!q || !scale || !scale_name) {
            free(f), free(q), free(scale), free(scale_name);
            return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "out of memory for tensor %s", t->name);
        }
        quantize_q8(f, q, scale, rows, cols, layout);
        free(f);
        o->dtype = ST_I8, o->data = q, o->n_bytes = t->n_elements;
        sprintf(scale_name, "%s_scale", t->name);
        out_tensor *s = &ts[n++];
        *n_out = n;
        *s = (out_tensor){.src = t, .name = scale_name, .dtype = ST_F32, .data = scale, .n_bytes = channels * 4, .ndim = 1};
        s->shape[0] = (int64_t)channels;
    }
    *n_out = n;
    return XCAP_OK;
}

int xcap_quantize(const char *in_dir, const char *out_dir, xcap_quant_type type, char *err, size_t errlen) {
    if (type != XCAP_QUANT_F16 && type != XCAP_QUANT_Q8)
        return xcap_fail(err, errlen, XCAP_ERR_ARG, "unknown quantisation type %d", (int)type);
    xcap_config cfg;
    int rc = config_load(in_dir, &cfg, err, errlen);
    if (rc) return rc;
    char in_path[4096], out_path[4096];
    if ((rc = xcap_join_path(in_path, sizeof in_path, in_dir, "model.safetensors", err, errlen))) return rc;
    if ((rc = xcap_join_path(out_path, sizeof out_path, out_dir, "model.safetensors", err, errlen))) return rc;
    struct stat a, b;
    if (stat(out_dir, &b) == 0 && stat(in_dir, &a) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino)
        return xcap_fail(err, errlen, XCAP_ERR_ARG, "%s: the output directory is the input directory", out_dir);
    if (mkdir(out_dir, 0777) != 0 && errno != EEXIST)
        return xcap_fail(err, errlen, XCAP_ERR_IO, "%s: cannot create: %s", out_dir, strerror(errno));
    st_file in;
    if ((rc = st_open(in_path, &in, err, errlen))) return rc;
    out_tensor *ts = calloc((size_t)(2 * in.n_tensors + 1), sizeof *ts);
    int n = 0;
    if (!ts) rc = xcap_fail(err, errlen, XCAP_ERR_NOMEM, "out of memory");
    if (!rc) rc = convert_tensors(&in, &cfg, type, ts, &n, err, errlen);
    if (!rc) rc = write_safetensors(out_path, ts, n, type == XCAP_QUANT_F16 ? "f16" : "q8", err, errlen);
    for (size_t i = 0; !rc && i < sizeof side_files / sizeof *side_files; i++) {
        char from[4096], to[4096];
        struct stat st;
        if (xcap_join_path(from, sizeof from, in_dir, side_files[i], err, errlen) ||
            xcap_join_path(to, sizeof to, out_dir, side_files[i], err, errlen))
            rc = XCAP_ERR_ARG;
        else if (stat(from, &st) == 0)
            rc = copy_file(from, to, err, errlen);
    }
    for (int i = 0; ts && i < n; i++) free(ts[i].name), free(ts[i].data);
    free(ts);
    st_close(&in);
    return rc;
}
