/* Model directory loader (spec §1, §2): config, tensors checked by name, dtype and shape,
 * tokenizer, preprocessing and generation defaults. */
#include "weights/model.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "nn/common.h"

typedef struct {
    xcap_model *m;
    const char *path; /* model.safetensors path, for messages */
    char *err;
    size_t errlen;
} loader;

static void format_shape(char *out, size_t len, int ndim, const int64_t *shape) {
    size_t pos = 0;
    pos += snprintf(out + pos, len - pos, "[");
    for (int i = 0; i < ndim && pos < len; i++)
        pos += snprintf(out + pos, len - pos, "%s%lld", i ? "," : "", (long long)shape[i]);
    if (pos < len) snprintf(out + pos, len - pos, "]");
}

static int keep_owned(xcap_model *m, float *buf) {
    if (m->n_owned == m->cap_owned) {
        int cap = m->cap_owned ? 2 * m->cap_owned : 64;
        float **bigger = realloc(m->owned, cap * sizeof *bigger);
        if (!bigger) return -1;
        m->owned = bigger;
        m->cap_owned = cap;
    }
    m->owned[m->n_owned++] = buf;
    return 0;
}

/* fp32 view of a tensor: F32 data used in place when aligned, otherwise converted once. */
static int as_f32(loader *L, st_tensor *t, const float **out) {
    if (t->dtype == ST_I8)
        return xcap_fail(L->err, L->errlen, XCAP_ERR_MODEL,
                         "%s: tensor %s is I8 (quantised), which xcap reads only for linear-layer weights", L->path,
                         t->name);
    if (t->dtype == ST_F32 && ((uintptr_t)t->data % sizeof(float)) == 0) {
        *out = (const float *)t->data;
        return XCAP_OK;
    }
    float *buf = malloc((t->n_elements ? t->n_elements : 1) * sizeof *buf);
    if (!buf || keep_owned(L->m, buf) != 0) {
        free(buf);
        return xcap_fail(L->err, L->errlen, XCAP_ERR_NOMEM, "%s: tensor %s: out of memory", L->path, t->name);
    }
    if (t->dtype == ST_F32) memcpy(buf, t->data, t->n_bytes);
    else if (t->dtype == ST_F16) st_f16_to_f32(t->data, buf, t->n_elements);
    else st_bf16_to_f32(t->data, buf, t->n_elements);
    *out = buf;
    return XCAP_OK;
}

/* Checks a tensor's shape against the one the config implies; the error names both. */
static int check_shape(loader *L, st_tensor *t, int ndim, const int64_t *shape) {
    int same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = t->shape[i] == shape[i];
    if (same) return XCAP_OK;
    char want[128], got[128];
    format_shape(want, sizeof want, ndim, shape);
    format_shape(got, sizeof got, t->ndim, t->shape);
    return xcap_fail(L->err, L->errlen, XCAP_ERR_MODEL, "%s: tensor %s (%s): expected %s, found %s", L->path,
                     t->name, st_dtype_name(t->dtype), want, got);
}

/* Binds a required tensor: name printf-style, then ndim dims as int64 after the name args. */
static int need(loader *L, const float **out, int ndim, const int64_t *shape, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int need(loader *L, const float **out, int ndim, const int64_t *shape, const char *fmt, ...) {
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    st_tensor *t = st_find(&L->m->st, name);
    if (!t) {
        char want[128];
        format_shape(want, sizeof want, ndim, shape);
        return xcap_fail(L->err, L->errlen, XCAP_ERR_MODEL, "%s: tensor %s %s is missing", L->path, name, want);
    }
    int rc = check_shape(L, t, ndim, shape);
    if (rc) return rc;
    t->used = 1;
    return as_f32(L, t, out);
}

typedef enum { STORED_KN, STORED_NK } weight_layout;

/* A linear layer's weight as stored, ready for nn_linear_pack: F32 (aligned, in place; else
 * converted), F16 kept as half, BF16 converted to F32, I8 with its "<name>_scale" column
 * scales (an xcap quantised model, `xcap quantize`). */
typedef struct {
    nn_weight_type type;
    nn_linear_part part;
} linear_source;

static int linear_source_of(loader *L, st_tensor *t, int64_t N, linear_source *src) {
    t->used = 1;
    src->part.n = (int)N;
    src->part.scale = NULL;
    if (t->dtype == ST_F16) {
        src->type = NN_F16;
        src->part.weight = t->data;
        return XCAP_OK;
    }
    if (t->dtype == ST_I8) {
        char name[300];
        snprintf(name, sizeof name, "%s_scale", t->name);
        st_tensor *sc = st_find(&L->m->st, name);
        if (!sc)
            return xcap_fail(L->err, L->errlen, XCAP_ERR_MODEL, "%s: tensor %s is I8 but %s [%lld] is missing", L->path,
                             t->name, name, (long long)N);
        int rc = check_shape(L, sc, 1, &N);
        if (!rc) {
            sc->used = 1;
            rc = as_f32(L, sc, &src->part.scale);
        }
        src->type = NN_Q8;
        src->part.weight = t->data;
        return rc;
    }
    src->type = NN_F32;
    const float *f = NULL;
    int rc = as_f32(L, t, &f);
    src->part.weight = f;
    return rc;
}

/* Makes every source fp32 when their types differ (a checkpoint that mixes them within one
 * fused layer); quantised parts cannot be mixed. */
static int unify_sources(loader *L, st_tensor **tensors, linear_source *src, int count) {
    int same = 1;
    for (int i = 1; i < count; i++) same &= src[i].type == src[0].type;
    if (same) return XCAP_OK;
    for (int i = 0; i < count; i++) {
        if (src[i].type == NN_Q8)
            return xcap_fail(L->err, L->errlen, XCAP_ERR_MODEL,
                             "%s: tensor %s is quantised but the layers packed with it are not", L->path,
                             tensors[i]->name);
        const float *f;
        int rc = as_f32(L, tensors[i], &f);
        if (rc) return rc;
        src[i].type = NN_F32;
        src[i].part.weight = f;
    }
    return XCAP_OK;
}

/* A converted copy that only fed a packed layer is not needed afterwards. */
static void release_owned(xcap_model *m, const void *p) {
    for (int i = 0; p && i < m->n_owned; i++)
        if (m->owned[i] == p) {
            free(m->owned[i]);
            m->owned[i] = m->owned[--m->n_owned];
            return;
        }
}

/* Gives back the pages of the file mapping that held bytes [p, p + n), once packed: the
 * mapping is private and never written, so anything else on those pages faults back in from
 * the file if it is read again. Keeps the resident size near one copy of the weights while
 * loading, not two. */
static void release_mapped(loader *L, const void *p, size_t n) {
    const uint8_t *base = L->m->st.map, *at = p;
    if (!base || at < base || at + n > base + L->m->st.map_size || n == 0) return;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    uintptr_t from = (uintptr_t)at / page * page, to = ((uintptr_t)at + n + page - 1) / page * page;
    madvise((void *)from, to - from, MADV_DONTNEED);
}

/* Packs count sources side by side (K inputs each), then drops the converted copies and the
 * mapped bytes they came from. */
static int pack_sources(loader *L, nn_linear *out, weight_layout layout, linear_source *src, int count, int64_t K,
                        const char *what) {
    nn_linear_part parts[3];
    for (int i = 0; i < count; i++) parts[i] = src[i].part;
    int rc = nn_linear_pack(out, src[0].type, layout == STORED_NK, parts, count, (int)K);
    size_t elem = src[0].type == NN_F32 ? 4 : src[0].type == NN_F16 ? 2 : 1;
    for (int i = 0; i < count; i++) {
        release_mapped(L, src[i].part.weight, (size_t)src[i].part.n * (size_t)K * elem);
        release_owned(L->m, src[i].part.weight);
        release_owned(L->m, src[i].part.bias);
        release_owned(L->m, src[i].part.scale);
    }
    if (rc) return xcap_fail(L->err, L->errlen, XCAP_ERR_NOMEM, "%s: %s: out of memory", L->path, what);
    return XCAP_OK;
}

/* Finds a linear weight by name and checks its shape ([K,N] for Conv1D, [N,K] for nn.Linear, or
 * the given shape); *t is set for unify_sources. */
static int need_weight(loader *L, linear_source *src, st_tensor **t, int ndim, const int64_t *shape, int64_t N,
                       const char *name) {
    *t = st_find(&L->m->st, name);
    if (!*t) {
        char want[128];
        format_shape(want, sizeof want, ndim, shape);
        return xcap_fail(L->err, L->errlen, XCAP_ERR_MODEL, "%s: tensor %s %s is missing", L->path, name, want);
    }
    int rc = check_shape(L, *t, ndim, shape);
    return rc ? rc : linear_source_of(L, *t, N, src);
}

/* A Conv1D (GPT-2, weight [K,N]) or nn.Linear (weight [N,K]) layer with its bias, by name
 * prefix: "<prefix>.weight", "<prefix>.bias". */
static int need_linear(loader *L, nn_linear *out, weight_layout layout, int64_t K, int64_t N, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
static int need_linear(loader *L, nn_linear *out, weight_layout layout, int64_t K, int64_t N, const char *fmt, ...) {
    char prefix[224], name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    linear_source src;
    st_tensor *t;
    int64_t shape[2] = {layout == STORED_KN ? K : N, layout == STORED_KN ? N : K};
    snprintf(name, sizeof name, "%s.weight", prefix);
    int rc = need_weight(L, &src, &t, 2, shape, N, name);
    if (!rc) rc = need(L, &src.part.bias, 1, &N, "%s.bias", prefix);
    return rc ? rc : pack_sources(L, out, layout, &src, 1, K, prefix);
}

#define SHAPE(...) (sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), ((const int64_t[]){__VA_ARGS__})

static int load_encoder(loader *L) {
    const xcap_config *c = &L->m->cfg;
    vit_weights *w = &L->m->enc;
    int64_t D = c->enc_hidden, I = c->enc_intermediate, P = c->patch_size;
    int64_t g = c->image_size / c->patch_size, M = g * g + 1;
    int rc;
    linear_source patch;
    st_tensor *patch_t;
    if ((rc = need(L, &w->cls_token, SHAPE(1, 1, D), "encoder.embeddings.cls_token"))) return rc;
    if ((rc = need(L, &w->pos_embed, SHAPE(1, M, D), "encoder.embeddings.position_embeddings"))) return rc;
    if ((rc = need_weight(L, &patch, &patch_t, SHAPE(D, 3, P, P), D,
                          "encoder.embeddings.patch_embeddings.projection.weight")))
        return rc;
    if ((rc = need(L, &patch.part.bias, SHAPE(D), "encoder.embeddings.patch_embeddings.projection.bias"))) return rc;
    /* The convolution weight [D,3,P,P] is an nn.Linear weight [D, 3·P·P] (spec §4.1). */
    if ((rc = pack_sources(L, &w->patch, STORED_NK, &patch, 1, 3 * P * P, "encoder.embeddings.patch_embeddings")))
        return rc;
    w->layers = calloc(c->enc_layers ? c->enc_layers : 1, sizeof *w->layers);
    if (!w->layers) return xcap_fail(L->err, L->errlen, XCAP_ERR_NOMEM, "out of memory");
    for (int i = 0; i < c->enc_layers; i++) {
        vit_layer_weights *l = &w->layers[i];
        const char *p = "encoder.encoder.layer";
        linear_source qkv[3];
        st_tensor *qkv_t[3];
        static const char *const names[3] = {"query", "key", "value"};
        if ((rc = need(L, &l->ln_before_w, SHAPE(D), "%s.%d.layernorm_before.weight", p, i))) return rc;
        if ((rc = need(L, &l->ln_before_b, SHAPE(D), "%s.%d.layernorm_before.bias", p, i))) return rc;
        for (int j = 0; j < 3; j++) {
            char name[256];
            snprintf(name, sizeof name, "%s.%d.attention.attention.%s.weight", p, i, names[j]);
            if ((rc = need_weight(L, &qkv[j], &qkv_t[j], SHAPE(D, D), D, name))) return rc;
            qkv[j].part.bias = NULL;
            if (c->qkv_bias &&
                (rc = need(L, &qkv[j].part.bias, SHAPE(D), "%s.%d.attention.attention.%s.bias", p, i, names[j])))
                return rc;
        }
        if ((rc = unify_sources(L, qkv_t, qkv, 3))) return rc;
        if ((rc = pack_sources(L, &l->qkv, STORED_NK, qkv, 3, D, "encoder attention query/key/value"))) return rc;
        if ((rc = need_linear(L, &l->attn_out, STORED_NK, D, D, "%s.%d.attention.output.dense", p, i))) return rc;
        if ((rc = need(L, &l->ln_after_w, SHAPE(D), "%s.%d.layernorm_after.weight", p, i))) return rc;
        if ((rc = need(L, &l->ln_after_b, SHAPE(D), "%s.%d.layernorm_after.bias", p, i))) return rc;
        if ((rc = need_linear(L, &l->fc, STORED_NK, D, I, "%s.%d.intermediate.dense", p, i))) return rc;
        if ((rc = need_linear(L, &l->proj, STORED_NK, I, D, "%s.%d.output.dense", p, i))) return rc;
    }
    if ((rc = need(L, &w->ln_w, SHAPE(D), "encoder.layernorm.weight"))) return rc;
    return need(L, &w->ln_b, SHAPE(D), "encoder.layernorm.bias");
}

/* The output projection (spec §2): tied models may store wte or lm_head alone. */
static int load_embeddings(loader *L) {
    const xcap_config *c = &L->m->cfg;
    gpt2_weights *w = &L->m->dec;
    int64_t V = c->vocab_size, E = c->dec_hidden;
    const char *wte_name = "decoder.transformer.wte.weight", *head_name = "decoder.lm_head.weight";
    st_tensor *wte = st_find(&L->m->st, wte_name), *head = st_find(&L->m->st, head_name), *t;
    linear_source src;
    int rc;
    if (!c->tie_word_embeddings) {
        if ((rc = need(L, &w->wte, SHAPE(V, E), "%s", wte_name))) return rc;
        if ((rc = need_weight(L, &src, &t, SHAPE(V, E), V, head_name))) return rc;
    } else {
        /* Tied: the packed head is the only copy kept; token embeddings are read back from it
         * (nn_linear_column), so a GPT-2 vocabulary is held once, not twice. */
        const char *name = !wte && head ? head_name : wte_name;
        if ((rc = need_weight(L, &src, &t, SHAPE(V, E), V, name))) return rc;
        if (wte && head) { /* stored twice: check it, use wte */
            if ((rc = check_shape(L, head, 2, (const int64_t[]){V, E}))) return rc;
            head->used = 1;
        }
        w->wte = NULL;
    }
    src.part.bias = NULL;
    return pack_sources(L, &w->lm_head, STORED_NK, &src, 1, E, head_name);
}

static int load_decoder(loader *L) {
    const xcap_config *c = &L->m->cfg;
    gpt2_weights *w = &L->m->dec;
    int64_t E = c->dec_hidden, F = c->dec_inner, D = c->enc_hidden;
    int rc;
    if ((rc = load_embeddings(L))) return rc;
    if ((rc = need(L, &w->wpe, SHAPE(c->n_positions, E), "decoder.transformer.wpe.weight"))) return rc;
    w->layers = calloc(c->dec_layers ? c->dec_layers : 1, sizeof *w->layers);
    if (!w->layers) return xcap_fail(L->err, L->errlen, XCAP_ERR_NOMEM, "out of memory");
    for (int i = 0; i < c->dec_layers; i++) {
        gpt2_layer_weights *l = &w->layers[i];
        const char *p = "decoder.transformer.h";
        if ((rc = need(L, &l->ln_1_w, SHAPE(E), "%s.%d.ln_1.weight", p, i))) return rc;
        if ((rc = need(L, &l->ln_1_b, SHAPE(E), "%s.%d.ln_1.bias", p, i))) return rc;
        if ((rc = need_linear(L, &l->attn, STORED_KN, E, 3 * E, "%s.%d.attn.c_attn", p, i))) return rc;
        if ((rc = need_linear(L, &l->attn_proj, STORED_KN, E, E, "%s.%d.attn.c_proj", p, i))) return rc;
        if ((rc = need(L, &l->ln_cross_w, SHAPE(E), "%s.%d.ln_cross_attn.weight", p, i))) return rc;
        if ((rc = need(L, &l->ln_cross_b, SHAPE(E), "%s.%d.ln_cross_attn.bias", p, i))) return rc;
        if ((rc = need_linear(L, &l->cross_q, STORED_KN, E, E, "%s.%d.crossattention.q_attn", p, i))) return rc;
        if ((rc = need_linear(L, &l->cross_kv, STORED_KN, E, 2 * E, "%s.%d.crossattention.c_attn", p, i))) return rc;
        if ((rc = need_linear(L, &l->cross_proj, STORED_KN, E, E, "%s.%d.crossattention.c_proj", p, i))) return rc;
        if ((rc = need(L, &l->ln_2_w, SHAPE(E), "%s.%d.ln_2.weight", p, i))) return rc;
        if ((rc = need(L, &l->ln_2_b, SHAPE(E), "%s.%d.ln_2.bias", p, i))) return rc;
        if ((rc = need_linear(L, &l->fc, STORED_KN, E, F, "%s.%d.mlp.c_fc", p, i))) return rc;
        if ((rc = need_linear(L, &l->mlp_proj, STORED_KN, F, E, "%s.%d.mlp.c_proj", p, i))) return rc;
    }
    if ((rc = need(L, &w->ln_f_w, SHAPE(E), "decoder.transformer.ln_f.weight"))) return rc;
    if ((rc = need(L, &w->ln_f_b, SHAPE(E), "decoder.transformer.ln_f.bias"))) return rc;
    if (D != E || st_find(&L->m->st, "enc_to_dec_proj.weight")) {
        w->has_enc_to_dec = 1;
        if ((rc = need_linear(L, &w->enc_to_dec, STORED_NK, D, E, "enc_to_dec_proj"))) return rc;
    }
    return XCAP_OK;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

/* Tensors nobody asked for: causal-mask buffers and the unused pooler are expected; anything
 * else is worth a warning (spec §2). */
static int collect_warnings(xcap_model *m) {
    size_t len = 0, cap = 256;
    char *w = malloc(cap);
    if (!w) return -1;
    w[0] = '\0';
    for (int i = 0; i < m->st.n_tensors; i++) {
        const st_tensor *t = &m->st.tensors[i];
        if (t->used || ends_with(t->name, ".attn.bias") || ends_with(t->name, ".attn.masked_bias") ||
            ends_with(t->name, ".crossattention.bias") || ends_with(t->name, ".crossattention.masked_bias") ||
            !strncmp(t->name, "encoder.pooler.", 15))
            continue;
        size_t need_len = len + strlen(t->name) + 64;
        if (need_len > cap) {
            while (cap < need_len) cap *= 2;
            char *bigger = realloc(w, cap);
            if (!bigger) {
                free(w);
                return -1;
            }
            w = bigger;
        }
        len += snprintf(w + len, cap - len, "unexpected tensor %s ignored\n", t->name);
    }
    m->warnings = w;
    return 0;
}

int xcap_model_load(const char *dir, xcap_model **out, char *err, size_t errlen) {
    *out = NULL;
    xcap_model *m = calloc(1, sizeof *m);
    if (!m) return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "out of memory");
    int rc;
    char path[4096];
    m->dir = strdup(dir);
    if (!m->dir) {
        rc = xcap_fail(err, errlen, XCAP_ERR_NOMEM, "out of memory");
        goto fail;
    }
    if ((rc = config_load(dir, &m->cfg, err, errlen))) goto fail;
    if ((rc = config_generation_params(dir, &m->cfg, &m->defaults, err, errlen))) goto fail;
    if ((rc = preprocess_config_load(dir, &m->pre, err, errlen))) goto fail;
    if (m->pre.do_resize && (m->pre.width != m->cfg.image_size || m->pre.height != m->cfg.image_size)) {
        rc = xcap_fail(err, errlen, XCAP_ERR_MODEL,
                       "%s/preprocessor_config.json: size %dx%d differs from the encoder's image_size %d", dir,
                       m->pre.width, m->pre.height, m->cfg.image_size);
        goto fail;
    }
    if ((rc = tokenizer_load(dir, &m->tok, err, errlen))) goto fail;
    if (tokenizer_vocab_size(m->tok) > m->cfg.vocab_size) {
        rc = xcap_fail(err, errlen, XCAP_ERR_MODEL, "%s: the tokenizer has %d tokens but decoder.vocab_size is %d", dir,
                       tokenizer_vocab_size(m->tok), m->cfg.vocab_size);
        goto fail;
    }
    if ((rc = xcap_join_path(path, sizeof path, dir, "model.safetensors", err, errlen))) goto fail;
    if ((rc = st_open(path, &m->st, err, errlen))) goto fail;
    loader L = {m, path, err, errlen};
    if ((rc = load_encoder(&L))) goto fail;
    if ((rc = load_decoder(&L))) goto fail;
    const xcap_config *c = &m->cfg;
    int ids[2 + XCAP_MAX_EOS] = {c->decoder_start_token_id, c->pad_token_id};
    for (int i = 0; i < c->n_eos; i++) ids[2 + i] = c->eos_ids[i];
    for (int i = 0; i < 2 + c->n_eos; i++)
        if (ids[i] >= c->vocab_size) {
            rc = xcap_fail(err, errlen, XCAP_ERR_MODEL, "%s/config.json: token id %d (%s) is outside the vocabulary of %d",
                           dir, ids[i], i == 0 ? "decoder_start_token_id" : i == 1 ? "pad_token_id" : "eos_token_id",
                           c->vocab_size);
            goto fail;
        }
    /* Every large tensor now lives in a packed copy. The file's pages that packing read are
     * given back (the mapping is private and never written, so the few small tensors still
     * used in place — layernorms, position tables — fault back in from the file), and the
     * resident size stays near one copy of the weights. */
    madvise(m->st.map, m->st.map_size, MADV_DONTNEED);
    if (collect_warnings(m) != 0) {
        rc = xcap_fail(err, errlen, XCAP_ERR_NOMEM, "out of memory");
        goto fail;
    }
    *out = m;
    return XCAP_OK;
fail:
    xcap_model_free(m);
    return rc;
}

void xcap_model_free(xcap_model *m) {
    if (!m) return;
    for (int i = 0; i < m->n_owned; i++) free(m->owned[i]);
    free(m->owned);
    nn_linear_free(&m->enc.patch);
    for (int i = 0; m->enc.layers && i < m->cfg.enc_layers; i++) {
        vit_layer_weights *l = &m->enc.layers[i];
        nn_linear *packed[] = {&l->qkv, &l->attn_out, &l->fc, &l->proj};
        for (size_t j = 0; j < sizeof packed / sizeof *packed; j++) nn_linear_free(packed[j]);
    }
    for (int i = 0; m->dec.layers && i < m->cfg.dec_layers; i++) {
        gpt2_layer_weights *l = &m->dec.layers[i];
        nn_linear *packed[] = {&l->attn, &l->attn_proj, &l->cross_q, &l->cross_kv, &l->cross_proj, &l->fc, &l->mlp_proj};
        for (size_t j = 0; j < sizeof packed / sizeof *packed; j++) nn_linear_free(packed[j]);
    }
    nn_linear_free(&m->dec.lm_head);
    nn_linear_free(&m->dec.enc_to_dec);
    free(m->enc.layers);
    free(m->dec.layers);
    st_close(&m->st);
    if (m->tok) tokenizer_free(m->tok);
    free(m->warnings);
    free(m->dir);
    free(m);
}

xcap_params xcap_model_params(const xcap_model *m) { return m->defaults; }

const char *xcap_model_warnings(const xcap_model *m) { return m->warnings ? m->warnings : ""; }

xcap_model_info xcap_model_get_info(const xcap_model *m) {
    const xcap_config *c = &m->cfg;
    int g = c->image_size / c->patch_size;
    xcap_model_info info = {
        .image_width = c->image_size, .image_height = c->image_size, .patch_size = c->patch_size,
        .grid_rows = g, .grid_cols = g, .n_memory = g * g + 1,
        .enc_hidden = c->enc_hidden, .enc_layers = c->enc_layers, .enc_heads = c->enc_heads,
        .dec_hidden = c->dec_hidden, .dec_layers = c->dec_layers, .dec_heads = c->dec_heads,
        .vocab_size = c->vocab_size, .n_positions = c->n_positions,
        .start_token = c->decoder_start_token_id, .eos_token = c->eos_ids[0], .pad_token = c->pad_token_id,
    };
    return info;
}

int xcap_tokenize(const xcap_model *m, const char *text, size_t len, int32_t *ids, int cap, int *n_ids, char *err,
                  size_t errlen) {
    return tokenizer_encode(m->tok, text, len, ids, cap, n_ids, err, errlen);
}

int xcap_detokenize(const xcap_model *m, const int32_t *ids, int n_ids, char **text, char *err, size_t errlen) {
    return tokenizer_decode(m->tok, ids, n_ids, 1, text, err, errlen);
}

const char *xcap_version(void) { return XCAP_VERSION; }

const char *xcap_status_name(int status) {
    switch (status) {
    case XCAP_OK: return "ok";
    case XCAP_ERR_ARG: return "bad argument";
    case XCAP_ERR_IO: return "I/O error";
    case XCAP_ERR_FORMAT: return "malformed file";
    case XCAP_ERR_MODEL: return "model mismatch";
    case XCAP_ERR_UNSUPPORTED: return "unsupported";
    case XCAP_ERR_NOMEM: return "out of memory";
    }
    return "unknown error";
}
