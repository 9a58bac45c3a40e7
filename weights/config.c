#include "weights/config.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/common.h"

typedef struct {
    const char *path; /* for messages */
    const char *section; /* "encoder.", "decoder." or "" */
    char *err;
    size_t errlen;
} ctx;

static int bad(const ctx *c, const char *key, const char *why) {
    return xcap_fail(c->err, c->errlen, XCAP_ERR_FORMAT, "%s: %s%s: %s", c->path, c->section, key, why);
}

/* An integer key: required (def < 0 means required) or defaulted; must be within [lo, hi]. */
static int get_int(const ctx *c, const cJSON *obj, const char *key, int required, int def, int lo, int hi,
                   int *out) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!j || cJSON_IsNull(j)) {
        if (required) return bad(c, key, "missing");
        *out = def;
        return XCAP_OK;
    }
    if (!cJSON_IsNumber(j) || j->valuedouble != floor(j->valuedouble))
        return bad(c, key, "must be an integer");
    if (j->valuedouble < lo || j->valuedouble > hi) {
        char why[96];
        snprintf(why, sizeof why, "%g is outside [%d, %d]", j->valuedouble, lo, hi);
        return bad(c, key, why);
    }
    *out = (int)j->valuedouble;
    return XCAP_OK;
}

static int get_float(const ctx *c, const cJSON *obj, const char *key, float def, float *out) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!j || cJSON_IsNull(j)) {
        *out = def;
        return XCAP_OK;
    }
    if (!cJSON_IsNumber(j) || !isfinite(j->valuedouble)) return bad(c, key, "must be a number");
    if (fabs(j->valuedouble) > FLT_MAX) return bad(c, key, "is too large for a float");
    *out = (float)j->valuedouble;
    return XCAP_OK;
}

static int get_bool(const ctx *c, const cJSON *obj, const char *key, int def, int *out) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!j || cJSON_IsNull(j)) {
        *out = def;
        return XCAP_OK;
    }
    if (!cJSON_IsBool(j)) return bad(c, key, "must be true or false");
    *out = cJSON_IsTrue(j);
    return XCAP_OK;
}

/* A string key that must equal one of the accepted values when present. */
static int expect_string(const ctx *c, const cJSON *obj, const char *key, const char *def,
                         const char *const *accepted) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, key);
    const char *v = def;
    if (j && !cJSON_IsNull(j)) {
        if (!cJSON_IsString(j)) return bad(c, key, "must be a string");
        v = j->valuestring;
    }
    for (int i = 0; accepted[i]; i++)
        if (!strcmp(v, accepted[i])) return XCAP_OK;
    return xcap_fail(c->err, c->errlen, XCAP_ERR_UNSUPPORTED, "%s: %s%s: \"%s\" is not supported (expected \"%s\")",
                     c->path, c->section, key, v, accepted[0]);
}

/* eos_token_id: an integer or a list of integers. Leaves cfg untouched when absent. */
static int get_eos(const ctx *c, const cJSON *obj, xcap_config *cfg) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, "eos_token_id");
    if (!j || cJSON_IsNull(j)) return XCAP_OK;
    int n = 0, ids[XCAP_MAX_EOS];
    if (cJSON_IsArray(j)) {
        const cJSON *it;
        cJSON_ArrayForEach(it, j) {
            if (!cJSON_IsNumber(it) || it->valuedouble < 0 || it->valuedouble != floor(it->valuedouble) ||
                it->valuedouble > 1e9)
                return bad(c, "eos_token_id", "must hold non-negative integers");
            if (n == XCAP_MAX_EOS) return bad(c, "eos_token_id", "too many ids");
            ids[n++] = (int)it->valuedouble;
        }
        /* (transformers would then never stop at an end token; xcap needs one to report) */
        if (n == 0) return bad(c, "eos_token_id", "is an empty list (at least one id is needed)");
    } else {
        int rc = get_int(c, obj, "eos_token_id", 1, 0, 0, 1000000000, &ids[0]);
        if (rc) return rc;
        n = 1;
    }
    memcpy(cfg->eos_ids, ids, sizeof ids);
    cfg->n_eos = n;
    return XCAP_OK;
}

static int parse_encoder(const ctx *c, const cJSON *e, xcap_config *cfg) {
    static const char *const vit[] = {"vit", NULL};
    static const char *const gelu[] = {"gelu", NULL};
    int rc;
    if ((rc = expect_string(c, e, "model_type", "", vit))) return rc;
    if ((rc = get_int(c, e, "hidden_size", 0, 768, 1, 1 << 16, &cfg->enc_hidden))) return rc;
    if ((rc = get_int(c, e, "num_hidden_layers", 0, 12, 0, 1024, &cfg->enc_layers))) return rc;
    if ((rc = get_int(c, e, "num_attention_heads", 0, 12, 1, 1024, &cfg->enc_heads))) return rc;
    if ((rc = get_int(c, e, "intermediate_size", 0, 3072, 1, 1 << 20, &cfg->enc_intermediate))) return rc;
    if ((rc = get_float(c, e, "layer_norm_eps", 1e-12f, &cfg->enc_eps))) return rc;
    if ((rc = get_int(c, e, "image_size", 0, 224, 1, 1 << 14, &cfg->image_size))) return rc;
    if ((rc = get_int(c, e, "patch_size", 0, 16, 1, 1 << 14, &cfg->patch_size))) return rc;
    if ((rc = get_int(c, e, "num_channels", 0, 3, 3, 3, &cfg->num_channels))) return rc;
    if ((rc = get_bool(c, e, "qkv_bias", 1, &cfg->qkv_bias))) return rc;
    if ((rc = expect_string(c, e, "hidden_act", "gelu", gelu))) return rc;
    if (cfg->enc_hidden % cfg->enc_heads)
        return bad(c, "hidden_size", "is not a multiple of num_attention_heads");
    if (cfg->image_size % cfg->patch_size) return bad(c, "image_size", "is not a multiple of patch_size");
    return XCAP_OK;
}

static int parse_decoder(const ctx *c, const cJSON *d, xcap_config *cfg) {
    static const char *const gpt2[] = {"gpt2", NULL};
    /* "gelu_pytorch_tanh" is the same tanh approximation computed by torch itself. */
    static const char *const act[] = {"gelu_new", "gelu_pytorch_tanh", NULL};
    int rc, add_cross, upcast;
    if ((rc = expect_string(c, d, "model_type", "", gpt2))) return rc;
    if ((rc = get_int(c, d, "n_embd", 0, 768, 1, 1 << 16, &cfg->dec_hidden))) return rc;
    if ((rc = get_int(c, d, "n_layer", 0, 12, 0, 1024, &cfg->dec_layers))) return rc;
    if ((rc = get_int(c, d, "n_head", 0, 12, 1, 1024, &cfg->dec_heads))) return rc;
    if ((rc = get_int(c, d, "n_positions", 0, 1024, 1, 1 << 20, &cfg->n_positions))) return rc;
    if ((rc = get_int(c, d, "vocab_size", 0, 50257, 1, 1 << 24, &cfg->vocab_size))) return rc;
    if ((rc = get_int(c, d, "n_inner", 0, 4 * cfg->dec_hidden, 1, 1 << 20, &cfg->dec_inner))) return rc;
    if ((rc = get_float(c, d, "layer_norm_epsilon", 1e-5f, &cfg->dec_eps))) return rc;
    if ((rc = get_bool(c, d, "scale_attn_weights", 1, &cfg->scale_attn_weights))) return rc;
    if ((rc = get_bool(c, d, "scale_attn_by_inverse_layer_idx", 0, &cfg->scale_attn_by_inverse_layer_idx))) return rc;
    if ((rc = get_bool(c, d, "add_cross_attention", 0, &add_cross))) return rc;
    if ((rc = get_bool(c, d, "reorder_and_upcast_attn", 0, &upcast))) return rc;
    if ((rc = expect_string(c, d, "activation_function", "gelu_new", act))) return rc;
    if (!add_cross)
        return xcap_fail(c->err, c->errlen, XCAP_ERR_UNSUPPORTED,
                         "%s: decoder.add_cross_attention: must be true (the decoder needs cross-attention)", c->path);
    if (upcast)
        return xcap_fail(c->err, c->errlen, XCAP_ERR_UNSUPPORTED,
                         "%s: decoder.reorder_and_upcast_attn: true is not supported", c->path);
    if (cfg->dec_hidden % cfg->dec_heads) return bad(c, "n_embd", "is not a multiple of n_head");
    return XCAP_OK;
}

int config_read_file(const char *path, size_t max_bytes, char **data, size_t *size, char *err, size_t errlen) {
    *data = NULL;
    *size = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return xcap_fail(err, errlen, XCAP_ERR_IO, "%s: %s", path, strerror(errno));
    size_t cap = 1 << 12, len = 0;
    char *buf = NULL;
    int rc = XCAP_OK;
    for (;;) {
        char *bigger = realloc(buf, cap + 1);
        if (!bigger) {
            rc = xcap_fail(err, errlen, XCAP_ERR_NOMEM, "%s: out of memory", path);
            break;
        }
        buf = bigger;
        len += fread(buf + len, 1, cap - len, f);
        if (len < cap) break;
        if (len > max_bytes) {
            rc = xcap_fail(err, errlen, XCAP_ERR_FORMAT, "%s: file is larger than %zu bytes, the limit for this file",
                           path, max_bytes);
            break;
        }
        cap = cap * 2 > max_bytes + 1 ? max_bytes + 1 : cap * 2;
    }
    if (rc == XCAP_OK && ferror(f)) rc = xcap_fail(err, errlen, XCAP_ERR_IO, "%s: read error", path);
    if (rc == XCAP_OK && len > max_bytes)
        rc = xcap_fail(err, errlen, XCAP_ERR_FORMAT, "%s: file is larger than %zu bytes, the limit for this file", path,
                       max_bytes);
    fclose(f);
    if (rc) {
        free(buf);
        return rc;
    }
    buf[len] = '\0';
    *data = buf;
    *size = len;
    return XCAP_OK;
}

/* JSON text that must hold an object. */
static int parse_json_text(const char *text, size_t len, const char *name, cJSON **out, char *err, size_t errlen) {
    const char *end = NULL;
    *out = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!*out) {
        size_t off = end && end >= text && end <= text + len ? (size_t)(end - text) : 0;
        return xcap_fail(err, errlen, XCAP_ERR_FORMAT, "%s: invalid JSON near byte %zu", name, off);
    }
    if (!cJSON_IsObject(*out)) {
        cJSON_Delete(*out);
        *out = NULL;
        return xcap_fail(err, errlen, XCAP_ERR_FORMAT, "%s: top level is not a JSON object", name);
    }
    return XCAP_OK;
}

int config_parse(const char *json, size_t len, const char *name, xcap_config *cfg, char *err, size_t errlen) {
    memset(cfg, 0, sizeof *cfg);
    cJSON *root;
    int rc = parse_json_text(json, len, name, &root, err, errlen);
    if (rc) return rc;
    ctx c = {name, "", err, errlen};
    static const char *const ved[] = {"vision-encoder-decoder", NULL};
    const cJSON *enc = cJSON_GetObjectItemCaseSensitive(root, "encoder");
    const cJSON *dec = cJSON_GetObjectItemCaseSensitive(root, "decoder");
    if ((rc = expect_string(&c, root, "model_type", "", ved))) goto done;
    if (!cJSON_IsObject(enc)) { rc = bad(&c, "encoder", "missing or not an object"); goto done; }
    if (!cJSON_IsObject(dec)) { rc = bad(&c, "decoder", "missing or not an object"); goto done; }
    ctx ce = {name, "encoder.", err, errlen}, cd = {name, "decoder.", err, errlen};
    if ((rc = parse_encoder(&ce, enc, cfg))) goto done;
    if ((rc = parse_decoder(&cd, dec, cfg))) goto done;
    if ((rc = get_bool(&c, root, "tie_word_embeddings", 1, &cfg->tie_word_embeddings))) goto done;
    /* Token ids: top level first, else the decoder's (GPT-2's bos/eos). */
    int dec_bos, dec_pad;
    if ((rc = get_int(&cd, dec, "bos_token_id", 0, 50256, 0, 1 << 24, &dec_bos))) goto done;
    if ((rc = get_int(&cd, dec, "pad_token_id", 0, -1, -1, 1 << 24, &dec_pad))) goto done;
    cfg->n_eos = 1;
    cfg->eos_ids[0] = 50256; /* GPT-2's <|endoftext|>, transformers' GPT2Config default */
    if ((rc = get_eos(&cd, dec, cfg))) goto done;
    if ((rc = get_eos(&c, root, cfg))) goto done;
    if ((rc = get_int(&c, root, "decoder_start_token_id", 0, dec_bos, 0, 1 << 24, &cfg->decoder_start_token_id))) goto done;
    if ((rc = get_int(&c, root, "pad_token_id", 0, dec_pad, -1, 1 << 24, &cfg->pad_token_id))) goto done;
done:
    cJSON_Delete(root);
    return rc;
}

int config_load(const char *dir, xcap_config *cfg, char *err, size_t errlen) {
    memset(cfg, 0, sizeof *cfg);
    char path[4096];
    int rc = xcap_join_path(path, sizeof path, dir, "config.json", err, errlen);
    if (rc) return rc;
    char *text;
    size_t size;
    if ((rc = config_read_file(path, CONFIG_MAX_FILE_BYTES, &text, &size, err, errlen))) return rc;
    rc = config_parse(text, size, path, cfg, err, errlen);
    free(text);
    return rc;
}

xcap_params xcap_default_params(void) {
    /* transformers' GenerationConfig defaults (spec §6). */
    xcap_params p = {
        .n_threads = 0,
        .max_length = 20,
        .max_new_tokens = 0,
        .min_length = 0,
        .min_new_tokens = 0,
        .num_beams = 1,
        .length_penalty = 1.0f,
        .early_stopping = XCAP_EARLY_STOP_HEURISTIC,
        .do_sample = 0,
        .temperature = 1.0f,
        .top_k = 50,
        .top_p = 1.0f,
        .repetition_penalty = 1.0f,
        .no_repeat_ngram_size = 0,
        .num_return_sequences = 1,
        .seed = 0,
        .output_attentions = 0,
    };
    return p;
}

/* Applies the generation keys present in obj to p (and the token ids to cfg). */
static int apply_generation_keys(const ctx *c, const cJSON *obj, xcap_config *cfg, xcap_params *p) {
    int rc, v;
    const int BIG = 1 << 24;
    if ((rc = get_int(c, obj, "max_length", 0, p->max_length, 1, BIG, &p->max_length))) return rc;
    if ((rc = get_int(c, obj, "max_new_tokens", 0, p->max_new_tokens, 0, BIG, &p->max_new_tokens))) return rc;
    if ((rc = get_int(c, obj, "min_length", 0, p->min_length, 0, BIG, &p->min_length))) return rc;
    if ((rc = get_int(c, obj, "min_new_tokens", 0, p->min_new_tokens, 0, BIG, &p->min_new_tokens))) return rc;
    if ((rc = get_int(c, obj, "num_beams", 0, p->num_beams, 1, 4096, &p->num_beams))) return rc;
    if ((rc = get_float(c, obj, "length_penalty", p->length_penalty, &p->length_penalty))) return rc;
    if ((rc = get_bool(c, obj, "do_sample", p->do_sample, &p->do_sample))) return rc;
    if ((rc = get_float(c, obj, "temperature", p->temperature, &p->temperature))) return rc;
    if ((rc = get_int(c, obj, "top_k", 0, p->top_k, 0, BIG, &p->top_k))) return rc;
    if ((rc = get_float(c, obj, "top_p", p->top_p, &p->top_p))) return rc;
    if ((rc = get_float(c, obj, "repetition_penalty", p->repetition_penalty, &p->repetition_penalty))) return rc;
    if ((rc = get_int(c, obj, "no_repeat_ngram_size", 0, p->no_repeat_ngram_size, 0, BIG, &p->no_repeat_ngram_size))) return rc;
    if ((rc = get_int(c, obj, "num_return_sequences", 0, p->num_return_sequences, 1, 4096, &p->num_return_sequences))) return rc;
    const cJSON *es = cJSON_GetObjectItemCaseSensitive(obj, "early_stopping");
    if (es && !cJSON_IsNull(es)) {
        if (cJSON_IsBool(es)) p->early_stopping = cJSON_IsTrue(es) ? XCAP_EARLY_STOP_TRUE : XCAP_EARLY_STOP_HEURISTIC;
        else if (cJSON_IsString(es) && !strcmp(es->valuestring, "never")) p->early_stopping = XCAP_EARLY_STOP_NEVER;
        else return bad(c, "early_stopping", "must be true, false or \"never\"");
    }
    if ((rc = get_int(c, obj, "decoder_start_token_id", 0, cfg->decoder_start_token_id, 0, BIG, &v))) return rc;
    cfg->decoder_start_token_id = v;
    if ((rc = get_int(c, obj, "pad_token_id", 0, cfg->pad_token_id, -1, BIG, &v))) return rc;
    cfg->pad_token_id = v;
    return get_eos(c, obj, cfg);
}

int config_generation_parse(const char *json, size_t len, const char *name, int from_config_json, xcap_config *cfg,
                            xcap_params *params, char *err, size_t errlen) {
    *params = xcap_default_params();
    cJSON *root;
    int rc = parse_json_text(json, len, name, &root, err, errlen);
    if (rc) return rc;
    if (!from_config_json) {
        /* transformers' from_pretrained uses generation_config.json alone when it exists
         * (GenerationConfig.from_pretrained); config.json's keys are not merged in. Token ids
         * it lacks keep the values config_load resolved. */
        ctx cg = {name, "", err, errlen};
        rc = apply_generation_keys(&cg, root, cfg, params);
    } else {
        /* No generation_config.json: GenerationConfig.from_model_config takes the legacy keys
         * of config.json, the decoder sub-config's where the top level leaves them unset. */
        xcap_config keep = *cfg; /* token ids were resolved by config_load */
        const cJSON *dec = cJSON_GetObjectItemCaseSensitive(root, "decoder");
        ctx cd = {name, "decoder.", err, errlen}, ct = {name, "", err, errlen};
        if (cJSON_IsObject(dec)) rc = apply_generation_keys(&cd, dec, cfg, params);
        *cfg = keep;
        if (!rc) rc = apply_generation_keys(&ct, root, cfg, params);
    }
    cJSON_Delete(root);
    if (rc) return rc;
    /* transformers' _prepare_generated_length: when the caller passes no length and the
     * resolved max_length is the library default 20, it generates 20 new tokens. */
    if (params->max_new_tokens == 0 && params->max_length == xcap_default_params().max_length)
        params->max_new_tokens = params->max_length;
    return XCAP_OK;
}

int config_generation_params(const char *dir, xcap_config *cfg, xcap_params *params, char *err, size_t errlen) {
    *params = xcap_default_params();
    char path[4096];
    int rc = xcap_join_path(path, sizeof path, dir, "generation_config.json", err, errlen);
    if (rc) return rc;
    FILE *probe = fopen(path, "rb");
    int from_config_json = probe == NULL;
    if (probe) fclose(probe);
    if (from_config_json && (rc = xcap_join_path(path, sizeof path, dir, "config.json", err, errlen))) return rc;
    char *text;
    size_t size;
    if ((rc = config_read_file(path, CONFIG_MAX_FILE_BYTES, &text, &size, err, errlen))) return rc;
    rc = config_generation_parse(text, size, path, from_config_json, cfg, params, err, errlen);
    free(text);
    return rc;
}
