#include "cmd/attention_out.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <stb/stb_image_write.h>

#include "cmd/attention_draw.h"
#include "cmd/result_json.h"
#include "nn/common.h"

/* The web page shows the image at most this many pixels on its longer side (larger images
 * are shrunk for the page only; the PNG files keep the original size). */
#define PAGE_VIEW_SIDE 512
/* ... and displays small images enlarged to at least this size. */
#define PAGE_MIN_DISPLAY 384

int attention_parse_option(attn_choice *c, int argc, char **argv, int *i) {
    static const char *const names[] = {"--layer", "--head", "--fusion"};
    const char *a = argv[*i], *value = NULL;
    int which = -1;
    for (int k = 0; k < 3 && which < 0; k++) {
        size_t n = strlen(names[k]);
        if (!strcmp(a, names[k])) {
            if (*i + 1 >= argc) {
                fprintf(stderr, "xcap: %s needs a value\n", a);
                return -1;
            }
            value = argv[++*i];
            which = k;
        } else if (!strncmp(a, names[k], n) && a[n] == '=') {
            value = a + n + 1;
            which = k;
        }
    }
    if (which < 0) return 0;
    char err[256];
    int rc = which == 0   ? attn_parse_layer(value, c, err, sizeof err)
             : which == 1 ? attn_parse_head(value, c, err, sizeof err)
                          : attn_parse_fusion(value, c, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "xcap: %s\n", err);
        return -1;
    }
    return 1;
}

void attention_print_help(FILE *out) {
    attn_choice d;
    attn_choice_default(&d);
    char layer[64], head[64], fusion[64];
    attn_choice_describe(&d, layer, head, fusion, sizeof layer);
    fprintf(out,
            "What is drawn (attention.npy always holds every layer and head):\n"
            "      --layer L            decoder layer: a number (0 = first), last, or all = the mean\n"
            "                           over layers (default: %s)\n"
            "      --head H             a head number (0 = first), mean = the average of the heads, or\n"
            "                           max = the strongest head at each patch (default: %s)\n"
            "      --fusion F           none = the decoder's attention over the encoder's output tokens\n"
            "                           (each already mixes in the whole image, so a map can be spread\n"
            "                           out); rollout = carried back to the input patches through the\n"
            "                           encoder's self-attention (attention rollout, Abnar & Zuidema 2020:\n"
            "                           per layer 0.5*head-mean attention + 0.5*identity for the residual,\n"
            "                           rows renormalised, multiplied through the layers) (default: %s)\n"
            "Each token's map drops the CLS memory token and renormalises the patch weights to sum to 1;\n"
            "it is upsampled bilinearly between patch centres over the original image, coloured with\n"
            "viridis scaled to its strongest patch, and blended on the image. A word made of several\n"
            "tokens (sheet.png, index.html) is drawn as the mean of its tokens' maps.\n",
            d.layer == ATTN_LAYER_LAST ? "last" : layer, head, fusion);
}

/* ---- a growable byte buffer; a failed allocation is remembered and reported once ---- */

typedef struct {
    char *data;
    size_t len, cap;
    int failed;
} buffer;

static void buf_append(buffer *b, const void *data, size_t n) {
    if (b->failed) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1) cap *= 2;
        char *bigger = realloc(b->data, cap);
        if (!bigger) {
            b->failed = 1;
            return;
        }
        b->data = bigger;
        b->cap = cap;
    }
    memcpy(b->data + b->len, data, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void buf_puts(buffer *b, const char *s) { buf_append(b, s, strlen(s)); }

static void buf_printf(buffer *b, const char *fmt, ...) {
    char small[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->failed = 1;
        return;
    }
    if ((size_t)n < sizeof small) {
        buf_append(b, small, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (!big) {
        b->failed = 1;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    buf_append(b, big, (size_t)n);
    free(big);
}

static void buf_base64(buffer *b, const uint8_t *data, size_t n) {
    static const char digits[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char quad[4];
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)data[i] << 16 | (i + 1 < n ? (uint32_t)data[i + 1] << 8 : 0) | (i + 2 < n ? data[i + 2] : 0);
        quad[0] = digits[v >> 18 & 63];
        quad[1] = digits[v >> 12 & 63];
        quad[2] = i + 1 < n ? digits[v >> 6 & 63] : '=';
        quad[3] = i + 2 < n ? digits[v & 63] : '=';
        buf_append(b, quad, 4);
    }
}

static void buf_html(buffer *b, const char *s) {
    for (; *s; s++) {
        switch (*s) {
        case '&': buf_puts(b, "&amp;"); break;
        case '<': buf_puts(b, "&lt;"); break;
        case '>': buf_puts(b, "&gt;"); break;
        case '"': buf_puts(b, "&quot;"); break;
        case '\'': buf_puts(b, "&#39;"); break;
        default: buf_append(b, s, 1);
        }
    }
}

static void png_sink(void *context, void *data, int size) { buf_append(context, data, (size_t)size); }

/* PNG bytes of an RGB (comp 3) or RGBA (comp 4) picture; 0 on success. */
static int png_encode(const uint8_t *pixels, int w, int h, int comp, buffer *png) {
    png->len = 0;
    if (!stbi_write_png_to_func(png_sink, png, w, h, comp, pixels, w * comp) || png->failed) return -1;
    return 0;
}

/* NumPy .npy version 1.0: magic, version, little-endian header length, a Python dict literal
 * padded with spaces to a multiple of 64 bytes ending in '\n', then C-order little-endian
 * float32 data. */
static void npy_encode(const float *data, const int *shape, int ndim, buffer *out) {
    char dict[256];
    int n = snprintf(dict, sizeof dict, "{'descr': '<f4', 'fortran_order': False, 'shape': (");
    size_t count = 1;
    for (int i = 0; i < ndim; i++) {
        n += snprintf(dict + n, sizeof dict - n, "%d%s", shape[i], i + 1 < ndim ? ", " : ndim == 1 ? "," : "");
        count *= (size_t)shape[i];
    }
    n += snprintf(dict + n, sizeof dict - n, "), }");
    size_t header = 10 + (size_t)n + 1, padded = (header + 63) / 64 * 64;
    uint8_t pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (uint8_t)((padded - 10) & 0xFF), (uint8_t)((padded - 10) >> 8)};
    buf_append(out, pre, sizeof pre);
    buf_append(out, dict, (size_t)n);
    for (size_t i = header; i < padded; i++) buf_append(out, " ", 1);
    buf_append(out, "\n", 1);
    for (size_t i = 0; i < count; i++) {
        uint32_t bits;
        memcpy(&bits, &data[i], 4);
        uint8_t le[4] = {(uint8_t)bits, (uint8_t)(bits >> 8), (uint8_t)(bits >> 16), (uint8_t)(bits >> 24)};
        buf_append(out, le, 4);
    }
}

/* ---- the output directory: staged, then moved into place ---- */

typedef struct {
    char dir[4096];   /* where the files end up (trailing slashes removed) */
    char stage[4200]; /* the temporary directory being written */
    int dir_existed;
    char **names; /* files written into stage */
    int n_names;
} staging;

static void staging_remove(staging *s) {
    char path[4400];
    for (int i = 0; i < s->n_names; i++) {
        snprintf(path, sizeof path, "%s/%s", s->stage, s->names[i]);
        unlink(path);
    }
    rmdir(s->stage);
}

static void staging_free(staging *s) {
    for (int i = 0; i < s->n_names; i++) free(s->names[i]);
    free(s->names);
    s->names = NULL;
    s->n_names = 0;
}

static int staging_open(staging *s, const char *dir, char *err, size_t errlen) {
    memset(s, 0, sizeof *s);
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/') n--;
    if (n == 0 || n >= sizeof s->dir) return xcap_fail(err, errlen, XCAP_ERR_ARG, "bad output directory '%s'", dir);
    memcpy(s->dir, dir, n);
    s->dir[n] = '\0';
    struct stat st;
    if (stat(s->dir, &st) == 0) {
        if (!S_ISDIR(st.st_mode))
            return xcap_fail(err, errlen, XCAP_ERR_IO, "%s: exists and is not a directory", s->dir);
        s->dir_existed = 1;
        snprintf(s->stage, sizeof s->stage, "%s/.xcap-attend-XXXXXX", s->dir);
    } else if (errno == ENOENT) {
        snprintf(s->stage, sizeof s->stage, "%s.xcap-attend-XXXXXX", s->dir);
    } else {
        return xcap_fail(err, errlen, XCAP_ERR_IO, "%s: %s", s->dir, strerror(errno));
    }
    if (!mkdtemp(s->stage)) {
        int e = errno;
        if (s->dir_existed) return xcap_fail(err, errlen, XCAP_ERR_IO, "%s: cannot write there: %s", s->dir, strerror(e));
        return xcap_fail(err, errlen, XCAP_ERR_IO, "%s: cannot create the directory: %s", s->dir, strerror(e));
    }
    if (!s->dir_existed) {
        /* mkdtemp makes it private (0700); the final directory gets what mkdir would give */
        mode_t mask = umask(0);
        umask(mask);
        chmod(s->stage, 0777 & ~mask);
    }
    return XCAP_OK;
}

int attention_check_dir(const char *dir, char *err, size_t errlen) {
    char path[4096];
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/') n--;
    if (n == 0 || n >= sizeof path) return xcap_fail(err, errlen, XCAP_ERR_ARG, "bad output directory '%s'", dir);
    memcpy(path, dir, n);
    path[n] = '\0';
    struct stat st;
    if (stat(path, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) return xcap_fail(err, errlen, XCAP_ERR_IO, "%s: exists and is not a directory", path);
        if (access(path, W_OK | X_OK) != 0)
            return xcap_fail(err, errlen, XCAP_ERR_IO, "%s: cannot write there: %s", path, strerror(errno));
        return XCAP_OK;
    }
    if (errno != ENOENT) return xcap_fail(err, errlen, XCAP_ERR_IO, "%s: %s", path, strerror(errno));
    char parent[4096];
    memcpy(parent, path, n + 1);
    char *slash = strrchr(parent, '/');
    if (!slash) snprintf(parent, sizeof parent, ".");
    else if (slash == parent) parent[1] = '\0';
    else *slash = '\0';
    if (stat(parent, &st) != 0 || !S_ISDIR(st.st_mode) || access(parent, W_OK | X_OK) != 0) {
        int e = errno;
        if (stat(parent, &st) == 0 && !S_ISDIR(st.st_mode)) e = ENOTDIR;
        return xcap_fail(err, errlen, XCAP_ERR_IO, "%s: cannot create the directory: %s", path, strerror(e));
    }
    return XCAP_OK;
}

static int staging_write(staging *s, const char *name, const buffer *content, char *err, size_t errlen) {
    if (content->failed) return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "%s/%s: out of memory", s->dir, name);
    char **names = realloc(s->names, (size_t)(s->n_names + 1) * sizeof *names);
    if (!names) return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "%s/%s: out of memory", s->dir, name);
    s->names = names;
    if (!(s->names[s->n_names] = strdup(name))) return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "out of memory");
    s->n_names++;
    char path[4400];
    snprintf(path, sizeof path, "%s/%s", s->stage, name);
    FILE *f = fopen(path, "wb");
    if (!f) return xcap_fail(err, errlen, XCAP_ERR_IO, "%s/%s: cannot create: %s", s->dir, name, strerror(errno));
    size_t wrote = content->len ? fwrite(content->data, 1, content->len, f) : 0;
    int bad = wrote != content->len || ferror(f);
    int e = errno;
    if (fclose(f) != 0 && !bad) bad = 1, e = errno;
    if (bad) return xcap_fail(err, errlen, XCAP_ERR_IO, "%s/%s: write failed: %s", s->dir, name, strerror(e));
    return XCAP_OK;
}

static int is_written(const staging *s, const char *name) {
    for (int i = 0; i < s->n_names; i++)
        if (!strcmp(s->names[i], name)) return 1;
    return 0;
}

/* token_<digits>_....png: a token map of some run of ours */
static int is_token_png(const char *name) {
    size_t n = strlen(name);
    if (strncmp(name, "token_", 6) != 0 || n < 11 || strcmp(name + n - 4, ".png") != 0) return 0;
    return name[6] >= '0' && name[6] <= '9';
}

static int staging_commit(staging *s, char *err, size_t errlen) {
    if (!s->dir_existed) {
        if (rename(s->stage, s->dir) != 0)
            return xcap_fail(err, errlen, XCAP_ERR_IO, "%s: cannot move the results into place: %s", s->dir, strerror(errno));
        return XCAP_OK;
    }
    char from[4400], to[4400];
    for (int i = 0; i < s->n_names; i++) {
        snprintf(from, sizeof from, "%s/%s", s->stage, s->names[i]);
        snprintf(to, sizeof to, "%s/%s", s->dir, s->names[i]);
        if (rename(from, to) != 0)
            return xcap_fail(err, errlen, XCAP_ERR_IO, "%s: cannot move into place: %s", to, strerror(errno));
    }
    rmdir(s->stage);
    /* an earlier, longer caption's token maps would contradict the new attention.json */
    DIR *d = opendir(s->dir);
    for (struct dirent *e = d ? readdir(d) : NULL; e; e = readdir(d)) {
        if (is_token_png(e->d_name) && !is_written(s, e->d_name)) {
            snprintf(to, sizeof to, "%s/%s", s->dir, e->d_name);
            unlink(to);
        }
    }
    if (d) closedir(d);
    return XCAP_OK;
}

/* ---- the maps that are drawn ---- */

typedef struct {
    xcap_model_info info;
    int n_tokens, n_patches;
    float *token_maps; /* [n_tokens][patches] */
    float *word_maps;  /* [n_words][patches]: mean of the word's token maps */
    attn_words words;
    char **png_names; /* per token; NULL for tokens outside words */
} drawn_maps;

static void drawn_free(drawn_maps *d) {
    if (d->png_names)
        for (int t = 0; t < d->n_tokens; t++) free(d->png_names[t]);
    free(d->png_names);
    free(d->token_maps);
    free(d->word_maps);
    attn_words_free(&d->words);
}

/* ASCII letters, digits, '-' and '_' of the word, at most 32 of them; "id<token id>" when
 * nothing is left (punctuation, non-Latin script). */
static char *png_name(int index, int width, const char *word, int32_t id) {
    char clean[33];
    size_t n = 0;
    for (const char *p = word; *p && n < sizeof clean - 1; p++) {
        char ch = *p;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '_')
            clean[n++] = ch;
    }
    clean[n] = '\0';
    if (n == 0) snprintf(clean, sizeof clean, "id%d", (int)id);
    char number[16], name[96];
    int digits = snprintf(number, sizeof number, "%d", index);
    snprintf(name, sizeof name, "token_%.*s%s_%s.png", width > digits ? width - digits : 0, "0000000000", number, clean);
    return strdup(name);
}

static int drawn_build(const attend_input *in, drawn_maps *d, char *err, size_t errlen) {
    memset(d, 0, sizeof *d);
    const xcap_hypothesis *hyp = &in->result->hyps[0];
    d->info = xcap_model_get_info(in->model);
    const xcap_model_info *info = &d->info;
    int M = info->n_memory, P = info->grid_rows * info->grid_cols, T = hyp->n_tokens;
    if (!hyp->cross_attention) return xcap_fail(err, errlen, XCAP_ERR_ARG, "no attention maps were recorded");
    if (P != M - 1) return xcap_fail(err, errlen, XCAP_ERR_MODEL, "memory of %d tokens is not CLS + %d patches", M, P);
    if (in->choice.fusion == ATTN_FUSION_ROLLOUT && !in->result->encoder_attention)
        return xcap_fail(err, errlen, XCAP_ERR_ARG, "rollout needs the encoder's attention, which was not recorded");
    d->n_tokens = T;
    d->n_patches = P;
    int rc = attn_words_build(in->model, hyp->tokens, T, &d->words, err, errlen);
    if (rc != XCAP_OK) return rc;
    size_t MM = (size_t)M * M;
    float *rollout = NULL, *scratch = malloc((MM + 2 * (size_t)M) * sizeof *scratch);
    d->token_maps = malloc(((size_t)T + 1) * P * sizeof *d->token_maps);
    d->word_maps = calloc(((size_t)d->words.n_words + 1) * P, sizeof *d->word_maps);
    d->png_names = calloc((size_t)T + 1, sizeof *d->png_names);
    if (in->choice.fusion == ATTN_FUSION_ROLLOUT) rollout = malloc(MM * sizeof *rollout);
    if (!scratch || !d->token_maps || !d->word_maps || !d->png_names ||
        (in->choice.fusion == ATTN_FUSION_ROLLOUT && !rollout)) {
        free(scratch), free(rollout);
        return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "out of memory for %d attention maps", T);
    }
    if (rollout) attn_rollout(in->result->encoder_attention, info->enc_layers, info->enc_heads, M, rollout, scratch);
    size_t per_token = (size_t)info->dec_layers * info->dec_heads * M;
    int width = 2;
    for (int v = T - 1; v >= 100; v /= 10) width++;
    for (int t = 0; t < T; t++) {
        float *map = d->token_maps + (size_t)t * P;
        attn_patch_map(hyp->cross_attention + t * per_token, info->dec_layers, info->dec_heads, M, &in->choice, rollout,
                       scratch, map);
        int k = d->words.token_word[t];
        if (k < 0) continue;
        for (int j = 0; j < P; j++) d->word_maps[(size_t)k * P + j] += map[j] / d->words.word_count[k];
        if (!(d->png_names[t] = png_name(t, width, d->words.word_text[k], hyp->tokens[t]))) {
            free(scratch), free(rollout);
            return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "out of memory");
        }
    }
    free(scratch);
    free(rollout);
    return XCAP_OK;
}

/* ---- attention.json ---- */

/* 6 significant digits: plenty for a picture, and keeps the file small */
static cJSON *map_json(const float *map, int n) {
    cJSON *a = cJSON_CreateArray();
    char s[32];
    for (int j = 0; j < n; j++) {
        snprintf(s, sizeof s, "%.6g", map[j]);
        cJSON_AddItemToArray(a, cJSON_CreateNumber(strtod(s, NULL)));
    }
    return a;
}

static cJSON *params_json(const xcap_params *p) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "max_length", p->max_length);
    cJSON_AddNumberToObject(o, "max_new_tokens", p->max_new_tokens);
    cJSON_AddNumberToObject(o, "min_length", p->min_length);
    cJSON_AddNumberToObject(o, "min_new_tokens", p->min_new_tokens);
    cJSON_AddNumberToObject(o, "num_beams", p->num_beams);
    cJSON_AddNumberToObject(o, "length_penalty", p->length_penalty);
    cJSON_AddStringToObject(o, "early_stopping",
                            p->early_stopping == XCAP_EARLY_STOP_TRUE    ? "true"
                            : p->early_stopping == XCAP_EARLY_STOP_NEVER ? "never"
                                                                         : "false");
    cJSON_AddBoolToObject(o, "do_sample", p->do_sample);
    cJSON_AddNumberToObject(o, "temperature", p->temperature);
    cJSON_AddNumberToObject(o, "top_k", p->top_k);
    cJSON_AddNumberToObject(o, "top_p", p->top_p);
    cJSON_AddNumberToObject(o, "repetition_penalty", p->repetition_penalty);
    cJSON_AddNumberToObject(o, "no_repeat_ngram_size", p->no_repeat_ngram_size);
    cJSON_AddNumberToObject(o, "num_return_sequences", p->num_return_sequences);
    char seed[32];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)p->seed);
    cJSON_AddStringToObject(o, "seed", seed); /* a string: 64-bit seeds do not fit a JSON double */
    return o;
}

static cJSON *choice_json(const attn_choice *c) {
    cJSON *o = cJSON_CreateObject();
    if (c->layer == ATTN_LAYER_ALL) cJSON_AddStringToObject(o, "layer", "all");
    else cJSON_AddNumberToObject(o, "layer", c->layer);
    if (c->head == ATTN_HEAD_MEAN) cJSON_AddStringToObject(o, "head", "mean");
    else if (c->head == ATTN_HEAD_MAX) cJSON_AddStringToObject(o, "head", "max");
    else cJSON_AddNumberToObject(o, "head", c->head);
    cJSON_AddStringToObject(o, "fusion", c->fusion == ATTN_FUSION_ROLLOUT ? "rollout" : "none");
    char layer[64], head[64], fusion[64], text[256];
    attn_choice_describe(c, layer, head, fusion, sizeof layer);
    snprintf(text, sizeof text, "%s, %s, fusion: %s", layer, head, fusion);
    cJSON_AddStringToObject(o, "description", text);
    cJSON_AddStringToObject(o, "normalisation", "CLS dropped, patch weights renormalised to sum to 1");
    cJSON_AddStringToObject(o, "word_map", "mean of the word's token maps");
    return o;
}

static char *json_text(const attend_input *in, const drawn_maps *d, const char *caption) {
    const xcap_hypothesis *hyp = &in->result->hyps[0];
    const xcap_model_info *info = &d->info;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "image", in->image_name);
    cJSON_AddStringToObject(o, "model", in->model_dir);
    cJSON_AddStringToObject(o, "caption", caption);
    cJSON *tokens = cJSON_AddArrayToObject(o, "tokens");
    for (int t = 0; t < d->n_tokens; t++) {
        cJSON *tok = cJSON_CreateObject();
        cJSON_AddNumberToObject(tok, "index", t);
        cJSON_AddNumberToObject(tok, "id", hyp->tokens[t]);
        cJSON_AddStringToObject(tok, "text", d->words.token_text[t]);
        int k = d->words.token_word[t];
        if (k >= 0) {
            cJSON_AddNumberToObject(tok, "word", k);
            cJSON_AddStringToObject(tok, "word_text", d->words.word_text[k]);
            cJSON_AddStringToObject(tok, "png", d->png_names[t]);
        } else {
            cJSON_AddNullToObject(tok, "word");
        }
        cJSON_AddItemToArray(tokens, tok);
    }
    cJSON *words = cJSON_AddArrayToObject(o, "words");
    for (int k = 0; k < d->words.n_words; k++) {
        cJSON *w = cJSON_CreateObject();
        cJSON_AddNumberToObject(w, "index", k);
        cJSON_AddStringToObject(w, "text", d->words.word_text[k]);
        cJSON *ids = cJSON_AddArrayToObject(w, "tokens");
        for (int i = 0; i < d->words.word_count[k]; i++)
            cJSON_AddItemToArray(ids, cJSON_CreateNumber(d->words.word_first[k] + i));
        cJSON_AddItemToArray(words, w);
    }
    cJSON *arr = cJSON_AddObjectToObject(o, "attention");
    cJSON_AddStringToObject(arr, "file", "attention.npy");
    cJSON_AddStringToObject(arr, "dtype", "float32");
    int shape[4] = {d->n_tokens, info->dec_layers, info->dec_heads, info->n_memory};
    cJSON_AddItemToObject(arr, "shape", cJSON_CreateIntArray(shape, 4));
    const char *axes[4] = {"token", "layer", "head", "memory"};
    cJSON_AddItemToObject(arr, "axes", cJSON_CreateStringArray(axes, 4));
    cJSON_AddStringToObject(arr, "memory",
                            "index 0 is the CLS token; patch (row r, column c) is 1 + r * cols + c");
    cJSON_AddStringToObject(arr, "token", "row t is the softmax of the query that chose token t");
    cJSON *grid = cJSON_AddObjectToObject(o, "patch_grid");
    cJSON_AddNumberToObject(grid, "rows", info->grid_rows);
    cJSON_AddNumberToObject(grid, "cols", info->grid_cols);
    cJSON_AddNumberToObject(grid, "patch_size", info->patch_size);
    cJSON *image = cJSON_AddObjectToObject(o, "image_size");
    cJSON_AddNumberToObject(image, "width", in->width);
    cJSON_AddNumberToObject(image, "height", in->height);
    cJSON *input = cJSON_AddObjectToObject(o, "model_input_size");
    cJSON_AddNumberToObject(input, "width", info->image_width);
    cJSON_AddNumberToObject(input, "height", info->image_height);
    cJSON_AddItemToObject(o, "decoding", params_json(in->params));
    cJSON_AddItemToObject(o, "drawn", choice_json(&in->choice));
    cJSON *maps = cJSON_AddObjectToObject(o, "maps");
    cJSON_AddStringToObject(maps, "layout", "one row-major patch grid (rows x cols) per token / word");
    cJSON *tm = cJSON_AddArrayToObject(maps, "tokens");
    for (int t = 0; t < d->n_tokens; t++) cJSON_AddItemToArray(tm, map_json(d->token_maps + (size_t)t * d->n_patches, d->n_patches));
    cJSON *wm = cJSON_AddArrayToObject(maps, "words");
    for (int k = 0; k < d->words.n_words; k++)
        cJSON_AddItemToArray(wm, map_json(d->word_maps + (size_t)k * d->n_patches, d->n_patches));
    char *text = cJSON_Print(o);
    cJSON_Delete(o);
    return text;
}

/* ---- index.html ---- */

static const char page_style[] =
    "body{font-family:system-ui,sans-serif;margin:1.5em;color:#111;background:#fff}"
    "h1{font-size:1.1em;font-weight:normal;color:#555}"
    "#view{position:relative;display:inline-block;margin:0;line-height:0}"
    "#view img{display:block;width:100%;height:auto}"
    "#view img.map{position:absolute;left:0;top:0;height:100%}"
    "#view img.map[hidden]{display:none}"
    "#caption{font-size:1.6em;margin:.6em 0}"
    ".word{padding:.05em .2em;border-radius:.2em;cursor:pointer;outline-offset:2px}"
    ".word:hover,.word:focus,.word.shown{background:#fde725}"
    "#status,#settings{color:#555}";

/* Pointing at a word (mouse or focus) shows its map; the last one shown stays until another
 * word is chosen, so moving the pointer to the picture keeps it. */
static const char page_script[] =
    "(function(){\n"
    "var words=document.querySelectorAll('.word'),maps=document.querySelectorAll('img.map');\n"
    "var status=document.getElementById('status');\n"
    "function show(i){\n"
    "  for(var k=0;k<maps.length;k++)maps[k].hidden=(k!==i);\n"
    "  for(var k=0;k<words.length;k++)words[k].classList.toggle('shown',k===i);\n"
    "  status.textContent='Showing where the decoder looked for \\u201c'+words[i].textContent+'\\u201d.';\n"
    "  document.getElementById('view').setAttribute('data-shown',String(i));\n"
    "}\n"
    "words.forEach(function(w,i){\n"
    "  w.addEventListener('mouseenter',function(){show(i);});\n"
    "  w.addEventListener('focus',function(){show(i);});\n"
    "  w.addEventListener('click',function(){show(i);});\n"
    "});\n"
    "})();\n";

static int page_text(const attend_input *in, const drawn_maps *d, const char *caption, buffer *page, char *err,
                     size_t errlen) {
    int vw = in->width, vh = in->height;
    if (vw > PAGE_VIEW_SIDE || vh > PAGE_VIEW_SIDE) draw_fit(in->width, in->height, PAGE_VIEW_SIDE, &vw, &vh);
    int dw = vw, dh = vh;
    if (dw < PAGE_MIN_DISPLAY && dh < PAGE_MIN_DISPLAY) draw_fit(vw, vh, PAGE_MIN_DISPLAY, &dw, &dh);
    uint8_t *view = malloc((size_t)vw * vh * 3), *heat = malloc((size_t)vw * vh * 4);
    buffer png = {0};
    if (!view || !heat) {
        free(view), free(heat);
        return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "out of memory drawing the page");
    }
    if (vw == in->width && vh == in->height) memcpy(view, in->rgb, (size_t)vw * vh * 3);
    else draw_resize(in->rgb, in->width, in->height, view, vw, vh);
    char layer[64], head[64], fusion[64];
    attn_choice_describe(&in->choice, layer, head, fusion, sizeof layer);

    buf_puts(page, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>");
    buf_html(page, caption);
    buf_puts(page, " \xe2\x80\x94 xcap attend</title>\n<style>");
    buf_puts(page, page_style);
    buf_puts(page, "</style>\n</head>\n<body>\n<h1>Cross-attention of <code>");
    buf_html(page, in->image_name);
    buf_puts(page, "</code></h1>\n");
    buf_printf(page, "<figure id=\"view\" style=\"width:%dpx\" data-shown=\"\">\n", dw);
    buf_printf(page, "<img id=\"image\" width=\"%d\" height=\"%d\" alt=\"the input image\" src=\"data:image/png;base64,", dw, dh);
    if (png_encode(view, vw, vh, 3, &png) != 0) page->failed = 1;
    buf_base64(page, (const uint8_t *)png.data, png.len);
    buf_puts(page, "\">\n");
    for (int k = 0; k < d->words.n_words && !page->failed; k++) {
        draw_heat(d->word_maps + (size_t)k * d->n_patches, d->info.grid_rows, d->info.grid_cols, vw, vh, NULL, heat);
        if (png_encode(heat, vw, vh, 4, &png) != 0) page->failed = 1;
        /* decoded at once, so a word's map appears in the very next frame */
        buf_printf(page, "<img class=\"map\" hidden decoding=\"sync\" data-word=\"%d\" alt=\"attention map of ", k);
        buf_html(page, d->words.word_text[k]);
        buf_puts(page, "\" src=\"data:image/png;base64,");
        buf_base64(page, (const uint8_t *)png.data, png.len);
        buf_puts(page, "\">\n");
    }
    buf_puts(page, "</figure>\n<p id=\"caption\">");
    for (int k = 0; k < d->words.n_words; k++) {
        buf_printf(page, "%s<span class=\"word\" tabindex=\"0\" data-word=\"%d\">", k ? " " : "", k);
        buf_html(page, d->words.word_text[k]);
        buf_puts(page, "</span>");
    }
    if (d->words.n_words == 0) buf_puts(page, "<em>(empty caption)</em>");
    buf_puts(page, "</p>\n<p id=\"status\">Point at a word (or Tab to it) to see which parts of the image the decoder "
                   "looked at when it wrote it.</p>\n<p id=\"settings\">");
    buf_printf(page, "Drawn: %s, %s; fusion: %s. CLS dropped, patch weights renormalised; colours (viridis) scaled to "
                     "each map's strongest patch; a word of several tokens shows the mean of their maps. "
                     "Patch grid %d&times;%d, model input %d&times;%d, image %d&times;%d.</p>\n",
               layer, head, fusion, d->info.grid_rows, d->info.grid_cols, d->info.image_width, d->info.image_height,
               in->width, in->height);
    buf_puts(page, "<script>\n");
    buf_puts(page, page_script);
    buf_puts(page, "</script>\n</body>\n</html>\n");
    free(view);
    free(heat);
    free(png.data);
    if (page->failed) return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "out of memory drawing the page");
    return XCAP_OK;
}

/* ---- all files ---- */

static int write_all(const attend_input *in, const drawn_maps *d, const char *caption, staging *s, char *err,
                     size_t errlen) {
    const xcap_hypothesis *hyp = &in->result->hyps[0];
    const xcap_model_info *info = &d->info;
    buffer content = {0};
    int rc;

    int shape[4] = {hyp->n_tokens, info->dec_layers, info->dec_heads, info->n_memory};
    npy_encode(hyp->cross_attention, shape, 4, &content);
    if ((rc = staging_write(s, "attention.npy", &content, err, errlen)) != XCAP_OK) goto done;

    char *json = json_text(in, d, caption);
    content.len = 0;
    if (json) buf_puts(&content, json), buf_puts(&content, "\n");
    else content.failed = 1;
    free(json);
    if ((rc = staging_write(s, "attention.json", &content, err, errlen)) != XCAP_OK) goto done;

    uint8_t *picture = malloc((size_t)in->width * in->height * 3);
    if (!picture) {
        rc = xcap_fail(err, errlen, XCAP_ERR_NOMEM, "out of memory for a %dx%d picture", in->width, in->height);
        goto done;
    }
    for (int t = 0; t < d->n_tokens; t++) {
        if (!d->png_names[t]) continue;
        draw_heat(d->token_maps + (size_t)t * d->n_patches, info->grid_rows, info->grid_cols, in->width, in->height,
                  in->rgb, picture);
        if (png_encode(picture, in->width, in->height, 3, &content) != 0) content.failed = 1;
        if ((rc = staging_write(s, d->png_names[t], &content, err, errlen)) != XCAP_OK) break;
    }
    free(picture);
    if (rc != XCAP_OK) goto done;

    /* the sheet: the plain image, then one panel per word */
    int n_panels = d->words.n_words + 1;
    const float **grids = calloc((size_t)n_panels, sizeof *grids);
    const char **labels = calloc((size_t)n_panels, sizeof *labels);
    uint8_t *sheet = NULL;
    int sw = 0, sh = 0;
    if (grids && labels) {
        labels[0] = "(image)";
        for (int k = 0; k < d->words.n_words; k++) {
            grids[k + 1] = d->word_maps + (size_t)k * d->n_patches;
            labels[k + 1] = d->words.word_text[k];
        }
        if (draw_sheet(in->rgb, in->width, in->height, *caption ? caption : "(empty caption)", n_panels, grids, labels,
                       info->grid_rows, info->grid_cols, &sheet, &sw, &sh) != 0)
            sheet = NULL;
    }
    free(grids);
    free(labels);
    if (!sheet) {
        rc = xcap_fail(err, errlen, XCAP_ERR_NOMEM, "out of memory drawing the sheet");
        goto done;
    }
    content.len = 0;
    if (png_encode(sheet, sw, sh, 3, &content) != 0) content.failed = 1;
    free(sheet);
    if ((rc = staging_write(s, "sheet.png", &content, err, errlen)) != XCAP_OK) goto done;

    content.len = 0;
    if ((rc = page_text(in, d, caption, &content, err, errlen)) != XCAP_OK) goto done;
    rc = staging_write(s, "index.html", &content, err, errlen);
done:
    free(content.data);
    return rc;
}

int attention_write_dir(const attend_input *in, const char *dir, char *err, size_t errlen) {
    if (!in->result || in->result->n_hyps < 1)
        return xcap_fail(err, errlen, XCAP_ERR_ARG, "nothing to draw: no caption");
    drawn_maps d;
    int rc = drawn_build(in, &d, err, errlen);
    if (rc != XCAP_OK) {
        drawn_free(&d);
        return rc;
    }
    char *caption_copy = strdup(in->result->hyps[0].text ? in->result->hyps[0].text : "");
    if (!caption_copy) {
        drawn_free(&d);
        return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "out of memory");
    }
    const char *caption = caption_strip(caption_copy);
    staging s;
    rc = staging_open(&s, dir, err, errlen);
    if (rc == XCAP_OK) {
        rc = write_all(in, &d, caption, &s, err, errlen);
        if (rc == XCAP_OK) rc = staging_commit(&s, err, errlen);
        if (rc != XCAP_OK) staging_remove(&s);
        staging_free(&s);
    }
    free(caption_copy);
    drawn_free(&d);
    return rc;
}
