#include "cmd/attention_maps.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/result_json.h"

void attn_choice_default(attn_choice *c) {
    c->layer = ATTEND_DEFAULT_LAYER;
    c->head = ATTEND_DEFAULT_HEAD;
    c->fusion = ATTN_FUSION_NONE;
    c->layer_given = 0;
}

static int parse_index(const char *s, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < 0 || v > INT_MAX / 2 || s[0] == '-' || s[0] == '+' || s[0] == ' ') return -1;
    *out = (int)v;
    return 0;
}

int attn_parse_layer(const char *s, attn_choice *c, char *err, size_t errlen) {
    int v;
    if (!strcmp(s, "all")) v = ATTN_LAYER_ALL;
    else if (!strcmp(s, "last")) v = ATTN_LAYER_LAST;
    else if (parse_index(s, &v) != 0) {
        snprintf(err, errlen, "--layer: expected a layer number (0 = first), last or all, got '%s'", s);
        return -1;
    }
    c->layer = v;
    c->layer_given = 1;
    return 0;
}

int attn_parse_head(const char *s, attn_choice *c, char *err, size_t errlen) {
    int v;
    if (!strcmp(s, "mean")) v = ATTN_HEAD_MEAN;
    else if (!strcmp(s, "max")) v = ATTN_HEAD_MAX;
    else if (parse_index(s, &v) != 0) {
        snprintf(err, errlen, "--head: expected a head number (0 = first), mean or max, got '%s'", s);
        return -1;
    }
    c->head = v;
    return 0;
}

int attn_parse_fusion(const char *s, attn_choice *c, char *err, size_t errlen) {
    if (!strcmp(s, "none")) c->fusion = ATTN_FUSION_NONE;
    else if (!strcmp(s, "rollout")) c->fusion = ATTN_FUSION_ROLLOUT;
    else {
        snprintf(err, errlen, "--fusion: expected none or rollout, got '%s'", s);
        return -1;
    }
    return 0;
}

int attn_choice_resolve(attn_choice *c, const xcap_model_info *info, char *err, size_t errlen) {
    if (c->layer >= info->dec_layers) {
        if (c->layer_given) {
            snprintf(err, errlen, "--layer %d: the model has %d decoder layers (0 to %d)", c->layer, info->dec_layers,
                     info->dec_layers - 1);
            return -1;
        }
        c->layer = ATTN_LAYER_LAST; /* a default measured on a deeper model */
    }
    if (c->layer == ATTN_LAYER_LAST) c->layer = info->dec_layers - 1;
    if (c->head >= info->dec_heads) {
        snprintf(err, errlen, "--head %d: the model has %d heads per decoder layer (0 to %d)", c->head, info->dec_heads,
                 info->dec_heads - 1);
        return -1;
    }
    return 0;
}

void attn_choice_describe(const attn_choice *c, char *layer, char *head, char *fusion, size_t len) {
    if (c->layer == ATTN_LAYER_ALL) snprintf(layer, len, "mean over decoder layers");
    else if (c->layer == ATTN_LAYER_LAST) snprintf(layer, len, "last decoder layer");
    else snprintf(layer, len, "decoder layer %d", c->layer);
    if (c->head == ATTN_HEAD_MEAN) snprintf(head, len, "mean over heads");
    else if (c->head == ATTN_HEAD_MAX) snprintf(head, len, "max over heads");
    else snprintf(head, len, "head %d", c->head);
    snprintf(fusion, len, "%s", c->fusion == ATTN_FUSION_ROLLOUT ? "rollout through the encoder" : "none");
}

/* Â = 0.5·mean_heads(A) + 0.5·I, rows renormalised: the residual connection carries half of
 * each token through unchanged (Abnar & Zuidema 2020, §3). */
static void rollout_layer_matrix(const float *attn, int heads, int M, float *out) {
    size_t MM = (size_t)M * M;
    for (int i = 0; i < M; i++) {
        double sum = 0;
        for (int j = 0; j < M; j++) {
            double a = 0;
            for (int h = 0; h < heads; h++) a += attn[h * MM + (size_t)i * M + j];
            a = 0.5 * a / heads + (i == j ? 0.5 : 0.0);
            out[(size_t)i * M + j] = (float)a;
            sum += a;
        }
        for (int j = 0; j < M; j++) out[(size_t)i * M + j] = (float)(out[(size_t)i * M + j] / sum);
    }
}

void attn_rollout(const float *enc_attn, int layers, int heads, int M, float *R, float *scratch) {
    size_t MM = (size_t)M * M;
    float *layer_hat = scratch, *row = scratch + MM;
    rollout_layer_matrix(enc_attn, heads, M, R); /* R = Â_1 */
    for (int l = 1; l < layers; l++) {
        rollout_layer_matrix(enc_attn + (size_t)l * heads * MM, heads, M, layer_hat);
        /* R <- Â_l · R, one row at a time so R can be overwritten in place */
        for (int i = 0; i < M; i++) {
            for (int j = 0; j < M; j++) row[j] = 0;
            for (int k = 0; k < M; k++) {
                float a = layer_hat[(size_t)i * M + k];
                const float *rk = R + (size_t)k * M;
                for (int j = 0; j < M; j++) row[j] += a * rk[j];
            }
            memcpy(layer_hat + (size_t)i * M, row, (size_t)M * sizeof *row);
        }
        memcpy(R, layer_hat, MM * sizeof *R);
    }
}

/* The chosen head (or mean / max of heads) of one layer: M floats into out. */
static void select_heads(const float *layer_rows, int heads, int M, int head, float *out) {
    if (head >= 0) {
        memcpy(out, layer_rows + (size_t)head * M, (size_t)M * sizeof *out);
        return;
    }
    for (int j = 0; j < M; j++) {
        float acc = head == ATTN_HEAD_MAX ? layer_rows[j] : 0.0f;
        for (int h = 0; h < heads; h++) {
            float v = layer_rows[(size_t)h * M + j];
            acc = head == ATTN_HEAD_MAX ? (v > acc ? v : acc) : acc + v;
        }
        out[j] = head == ATTN_HEAD_MAX ? acc : acc / heads;
    }
}

void attn_patch_map(const float *cross, int layers, int heads, int M, const attn_choice *c, const float *rollout,
                    float *scratch, float *out) {
    size_t per_layer = (size_t)heads * M;
    int first = c->layer == ATTN_LAYER_ALL ? 0 : c->layer, last = c->layer == ATTN_LAYER_ALL ? layers - 1 : c->layer;
    float *memory_map = scratch, *layer_map = scratch + M; /* over memory tokens: CLS + patches */
    for (int j = 0; j < M; j++) memory_map[j] = 0;
    for (int l = first; l <= last; l++) {
        select_heads(cross + l * per_layer, heads, M, c->head, layer_map);
        for (int j = 0; j < M; j++) memory_map[j] += layer_map[j] / (last - first + 1);
    }
    int P = M - 1;
    if (rollout) {
        /* m^T·R: memory token i is encoder output i, which draws R[i][j] on input token j */
        for (int j = 1; j < M; j++) {
            double s = 0;
            for (int i = 0; i < M; i++) s += (double)memory_map[i] * rollout[(size_t)i * M + j];
            out[j - 1] = (float)s;
        }
    } else {
        memcpy(out, memory_map + 1, (size_t)P * sizeof *out);
    }
    /* CLS dropped: the patches' share renormalised to sum to 1 (a map that put everything on
     * CLS has no spatial content; it is drawn flat) */
    double sum = 0;
    for (int j = 0; j < P; j++) sum += out[j];
    for (int j = 0; j < P; j++) out[j] = sum > 0 ? (float)(out[j] / sum) : 1.0f / P;
}

static int is_space(char ch) { return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\f' || ch == '\v'; }

void attn_words_free(attn_words *w) {
    if (w->token_text)
        for (int i = 0; i < w->n_tokens; i++) free(w->token_text[i]);
    if (w->word_text)
        for (int i = 0; i < w->n_words; i++) free(w->word_text[i]);
    free(w->token_text);
    free(w->token_word);
    free(w->word_text);
    free(w->word_first);
    free(w->word_count);
    memset(w, 0, sizeof *w);
}

int attn_words_build(const xcap_model *model, const int32_t *tokens, int n_tokens, attn_words *w, char *err,
                     size_t errlen) {
    memset(w, 0, sizeof *w);
    size_t n = n_tokens > 0 ? (size_t)n_tokens : 1;
    w->token_text = calloc(n, sizeof *w->token_text);
    w->token_word = calloc(n, sizeof *w->token_word);
    w->word_text = calloc(n, sizeof *w->word_text);
    w->word_first = calloc(n, sizeof *w->word_first);
    w->word_count = calloc(n, sizeof *w->word_count);
    if (!w->token_text || !w->token_word || !w->word_text || !w->word_first || !w->word_count) {
        attn_words_free(w);
        snprintf(err, errlen, "out of memory grouping %d tokens into words", n_tokens);
        return XCAP_ERR_NOMEM;
    }
    w->n_tokens = n_tokens;
    int in_word = 0;
    for (int t = 0; t < n_tokens; t++) {
        int rc = xcap_detokenize(model, tokens + t, 1, &w->token_text[t], err, errlen);
        if (rc != XCAP_OK) {
            attn_words_free(w);
            return rc;
        }
        const char *s = w->token_text[t];
        size_t len = strlen(s);
        int visible = 0;
        for (size_t i = 0; i < len && !visible; i++) visible = !is_space(s[i]);
        if (!visible) {
            w->token_word[t] = -1;
            in_word = 0;
            continue;
        }
        if (!in_word || is_space(s[0])) {
            w->word_first[w->n_words] = t;
            w->word_count[w->n_words] = 0;
            w->n_words++;
        }
        w->token_word[t] = w->n_words - 1;
        w->word_count[w->n_words - 1]++;
        /* a token ending in white space ("a " + "dog") closes its word too */
        in_word = !is_space(s[len - 1]);
    }
    for (int k = 0; k < w->n_words; k++) {
        char *text = NULL;
        int rc = xcap_detokenize(model, tokens + w->word_first[k], w->word_count[k], &text, err, errlen);
        if (rc != XCAP_OK) {
            attn_words_free(w);
            return rc;
        }
        char *s = caption_strip(text);
        memmove(text, s, strlen(s) + 1);
        w->word_text[k] = text;
    }
    return XCAP_OK;
}
