#include "text/decoder.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/common.h"
#include "nn/kernels.h"
#include "nn/linear.h"

/* Zero-sized buffers (a model with no layers) still get a valid pointer. */
static float *alloc_floats(size_t n) { return malloc((n ? n : 1) * sizeof(float)); }

/* Asks for a[0..n) and b[0..n) (bytes) to be brought into the cache, one request per 64-byte line. */
static void prefetch_bytes(const void *a, const void *b, size_t n) {
    for (size_t i = 0; i < n; i += 64) {
        __builtin_prefetch((const char *)a + i, 0, 3);
        __builtin_prefetch((const char *)b + i, 0, 3);
    }
}

/* 64-byte aligned, as the packed layers' loads need. */
static float *aligned_floats(size_t n) { return aligned_alloc(64, ((n ? n : 1) * sizeof(float) + 63) / 64 * 64); }

int decoder_run_init_images(decoder_run *r, const xcap_config *c, int max_slots, int max_pos, int max_images,
                            char *err, size_t errlen) {
    memset(r, 0, sizeof *r);
    if (max_slots < 1 || max_pos < 1 || max_images < 1)
        return xcap_fail(err, errlen, XCAP_ERR_ARG, "decoder run of %d slots x %d positions x %d images", max_slots,
                         max_pos, max_images);
    size_t L = c->dec_layers, E = c->dec_hidden, H = c->dec_heads, F = c->dec_inner;
    size_t g = c->image_size / c->patch_size, M = g * g + 1, S = max_slots, T = max_pos, I = max_images;
    r->max_slots = max_slots;
    r->max_pos = max_pos;
    r->max_images = max_images;
    r->n_memory = (int)M;
    r->self_k = alloc_floats(L * S * T * E);
    r->self_v = alloc_floats(L * S * T * E);
    size_t Hd = c->dec_heads, hd = E / Hd;
    r->cross_k_elems = nn_linear_packed_elems((int)hd, (int)M);
    r->cross_v_elems = nn_linear_packed_elems((int)M, (int)hd);
    size_t zeros = ((M > hd ? M : hd) + 15) / 16 * 16;
    r->cross = aligned_floats(I * L * Hd * (r->cross_k_elems + r->cross_v_elems));
    r->cross_type = calloc(L ? L : 1, sizeof *r->cross_type); /* NN_F32 until decoder_cross_kv_image */
    r->zeros = aligned_floats(zeros);
    if (r->zeros) memset(r->zeros, 0, zeros * sizeof(float));
    r->x = alloc_floats(S * E);
    r->xn = alloc_floats(S * E);
    r->qkv = alloc_floats(S * 3 * E);
    r->q = alloc_floats(S * E);
    r->cross_kv = alloc_floats(M * 2 * E);
    r->reorder_tmp = alloc_floats(S * T * E);
    r->q8_scratch_floats = nn_linear_scratch_floats((int)(E > F ? E : F), (int)S);
    r->q8_scratch = alloc_floats(r->q8_scratch_floats);
    r->attn = alloc_floats(S * E);
    r->ff = alloc_floats(S * F);
    r->self_probs = alloc_floats(H * T);
    r->cross_probs = alloc_floats(L * S * H * M);
    if (!r->self_k || !r->self_v || !r->cross || !r->cross_type || !r->zeros || !r->x || !r->xn || !r->qkv ||
        !r->q || !r->attn || !r->ff || !r->self_probs || !r->cross_probs || !r->cross_kv || !r->reorder_tmp ||
        !r->q8_scratch) {
        decoder_run_free(r);
        return xcap_fail(err, errlen, XCAP_ERR_NOMEM,
                         "out of memory for the decoder caches (%d sequences x %d positions, %d images)", max_slots,
                         max_pos, max_images);
    }
    return XCAP_OK;
}

int decoder_run_init(decoder_run *r, const xcap_config *c, int max_slots, int max_pos, char *err, size_t errlen) {
    return decoder_run_init_images(r, c, max_slots, max_pos, 1, err, errlen);
}

void decoder_run_free(decoder_run *r) {
    free(r->self_k);
    free(r->self_v);
    free(r->cross);
    free(r->cross_type);
    free(r->zeros);
    free(r->x);
    free(r->xn);
    free(r->qkv);
    free(r->q);
    free(r->attn);
    free(r->ff);
    free(r->self_probs);
    free(r->cross_probs);
    free(r->cross_kv);
    free(r->reorder_tmp);
    free(r->q8_scratch);
    memset(r, 0, sizeof *r);
}

static size_t elem_size(nn_weight_type t) { return t == NN_F16 ? 2 : 4; }

/* Image i's layer-l head-h packed keys; its values follow them. Each head has room for fp32. */
static char *cross_head(const xcap_config *c, const decoder_run *r, int image, int layer, int head) {
    size_t index = ((size_t)image * c->dec_layers + layer) * c->dec_heads + head;
    return (char *)r->cross + index * (r->cross_k_elems + r->cross_v_elems) * sizeof(float);
}

/* The head's keys as a layer hd -> M (scores = q·Kᵀ) and its values as a layer M -> hd. */
static void cross_layers(const xcap_config *c, const decoder_run *r, int image, int layer, int head, nn_linear *keys,
                         nn_linear *values) {
    int hd = c->dec_hidden / c->dec_heads, M = r->n_memory;
    const nn_weight_type t = r->cross_type[layer];
    char *at = cross_head(c, r, image, layer, head);
    *keys = nn_linear_wrap(t, at, r->zeros, hd, M);
    *values = nn_linear_wrap(t, at + r->cross_k_elems * elem_size(t), r->zeros, M, hd);
}

void decoder_cross_kv_image(const xcap_model *m, decoder_run *r, int image, const float *memory) {
    const xcap_config *c = &m->cfg;
    int M = r->n_memory, E = c->dec_hidden, H = c->dec_heads, hd = E / H;
    float *kv = r->cross_kv;
    for (int l = 0; l < c->dec_layers; l++) {
        const gpt2_layer_weights *w = &m->dec.layers[l];
        const nn_weight_type t = w->cross_kv.type == NN_Q8 ? NN_F16 : NN_F32;
        r->cross_type[l] = t;
        nn_linear_forward(kv, 2 * (size_t)E, memory, E, &w->cross_kv, M);
#pragma omp parallel for if ((size_t)M * E > 65536)
        for (int h = 0; h < H; h++) {
            char *at = cross_head(c, r, image, l, h);
            nn_linear unused;
            nn_linear_view(&unused, t, at, r->zeros, kv + (size_t)h * hd, 2 * (size_t)E, 1, hd, M);
            nn_linear_view(&unused, t, at + r->cross_k_elems * elem_size(t), r->zeros, kv + E + (size_t)h * hd,
                           2 * (size_t)E, 0, M, hd);
        }
    }
}

void decoder_cross_kv_read(const xcap_model *m, const decoder_run *r, int image, int layer, float *k, float *v) {
    const xcap_config *c = &m->cfg;
    int M = r->n_memory, E = c->dec_hidden, H = c->dec_heads, hd = E / H;
    float column[M > hd ? M : hd];
    for (int h = 0; h < H; h++) {
        nn_linear keys, values;
        cross_layers(c, r, image, layer, h, &keys, &values);
        for (int j = 0; j < M; j++) { /* key j: column j of the keys layer */
            nn_linear_column(&keys, j, column);
            memcpy(k + (size_t)j * E + (size_t)h * hd, column, (size_t)hd * sizeof *k);
        }
        for (int d = 0; d < hd; d++) { /* dimension d of every value: column d of the values layer */
            nn_linear_column(&values, d, column);
            for (int j = 0; j < M; j++) v[(size_t)j * E + (size_t)h * hd + d] = column[j];
        }
    }
}

/* One row's cross-attention to its image: per head, the scores q_h·K_hᵀ (one fma chain per key
 * over the head's dimensions, as the encoder's attention), scaled, softmax, and p·V_h. */
static void cross_attention(const xcap_config *c, const decoder_run *r, int image, int layer, const float *q,
                            float *out, float *maps, float scale) {
    const int M = r->n_memory, H = c->dec_heads, hd = c->dec_hidden / H;
#pragma omp parallel for if ((size_t)H * M * hd > 32768)
    for (int h = 0; h < H; h++) {
        nn_linear keys, values;
        cross_layers(c, r, image, layer, h, &keys, &values);
        if (h + 1 < H) { /* the next head's keys and values (one block) load while this one runs */
            const char *next = cross_head(c, r, image, layer, h + 1);
            const size_t half = (r->cross_k_elems + r->cross_v_elems) * elem_size(r->cross_type[layer]) / 2;
            prefetch_bytes(next, next + half, half);
        }
        float *p = maps + (size_t)h * M;
        nn_linear_forward(p, (size_t)M, q + (size_t)h * hd, (size_t)hd, &keys, 1);
        softmax_scaled(p, M, scale);
        nn_linear_forward(out + (size_t)h * hd, (size_t)hd, p, (size_t)M, &values, 1);
    }
}

void decoder_cross_kv(const xcap_model *m, decoder_run *r, const float *memory) {
    decoder_cross_kv_image(m, r, 0, memory);
}

/* A step's linear layer: q8 layers quantise their rows into the run's own memory. */
static void step_linear(decoder_run *r, float *y, size_t y_stride, const float *x, size_t x_stride, const nn_linear *w,
                        int rows) {
    nn_linear_forward_scratch(y, y_stride, x, x_stride, w, rows, r->q8_scratch, r->q8_scratch_floats);
}

/* GPT-2's attention scale (spec §5.1), shared by self- and cross-attention. */
static float attn_scale(const xcap_config *c, int layer) {
    float s = c->scale_attn_weights ? 1.0f / sqrtf((float)(c->dec_hidden / c->dec_heads)) : 1.0f;
    if (c->scale_attn_by_inverse_layer_idx) s /= (float)(layer + 1);
    return s;
}

int decoder_step_rows(const xcap_model *m, decoder_run *r, const int32_t *tokens, const int *slot, const int *image,
                      int n_rows, int pos, float *logits, char *err, size_t errlen) {
    const xcap_config *c = &m->cfg;
    const gpt2_weights *W = &m->dec;
    int E = c->dec_hidden, H = c->dec_heads, hd = E / H, F = c->dec_inner, M = r->n_memory;
    if (pos >= c->n_positions)
        return xcap_fail(err, errlen, XCAP_ERR_ARG, "position %d is beyond the decoder's n_positions %d", pos,
                         c->n_positions);
    if (pos >= r->max_pos || n_rows > r->max_slots)
        return xcap_fail(err, errlen, XCAP_ERR_ARG, "decoder run sized for %d positions x %d sequences, asked %d x %d",
                         r->max_pos, r->max_slots, pos + 1, n_rows);
    for (int i = 0; i < n_rows; i++) {
        if (slot[i] < 0 || slot[i] >= r->max_slots || (image && (image[i] < 0 || image[i] >= r->max_images)))
            return xcap_fail(err, errlen, XCAP_ERR_ARG, "row %d: slot %d / image %d outside the run (%d, %d)", i, slot[i],
                             image ? image[i] : 0, r->max_slots, r->max_images);
        if (tokens[i] < 0 || tokens[i] >= c->vocab_size)
            return xcap_fail(err, errlen, XCAP_ERR_ARG, "token id %d outside the vocabulary of %d", tokens[i],
                             c->vocab_size);
        float *x = r->x + (size_t)i * E;
        const float *pe = W->wpe + (size_t)pos * E;
        if (W->wte) memcpy(x, W->wte + (size_t)tokens[i] * E, (size_t)E * sizeof *x);
        else nn_linear_column(&W->lm_head, tokens[i], x); /* tied: wte is the head's transpose */
        for (int e = 0; e < E; e++) x[e] += pe[e];
    }
    size_t slot_stride = (size_t)r->max_pos * E, layer_stride = (size_t)r->max_slots * slot_stride;
    for (int l = 0; l < c->dec_layers; l++) {
        const gpt2_layer_weights *w = &W->layers[l];
        float scale = attn_scale(c, l);

        /* 1. causal self-attention over each sequence's own cache (asked for from memory now:
         * the weights streamed since the last step have evicted it, and the qkv product below
         * gives the reads time to land) */
        for (int i = 0; i < n_rows; i++) {
            const size_t at = l * layer_stride + slot[i] * slot_stride;
            prefetch_bytes(r->self_k + at, r->self_v + at, (size_t)pos * E * sizeof(float));
        }
        layernorm(r->xn, r->x, w->ln_1_w, w->ln_1_b, n_rows, E, c->dec_eps);
        step_linear(r, r->qkv, 3 * E, r->xn, E, &w->attn, n_rows);
        for (int i = 0; i < n_rows; i++) {
            float *kc = r->self_k + l * layer_stride + slot[i] * slot_stride;
            float *vc = r->self_v + l * layer_stride + slot[i] * slot_stride;
            const float *qkv = r->qkv + (size_t)i * 3 * E;
            memcpy(kc + (size_t)pos * E, qkv + E, (size_t)E * sizeof *kc);
            memcpy(vc + (size_t)pos * E, qkv + 2 * E, (size_t)E * sizeof *vc);
            attention(r->attn + (size_t)i * E, E, r->self_probs, qkv, 3 * E, kc, E, vc, E, 1, pos + 1, H, hd, scale, 0, 0);
        }
        step_linear(r, r->xn, E, r->attn, E, &w->attn_proj, n_rows);
        add_inplace(r->x, r->xn, (size_t)n_rows * E);

        /* 2. cross-attention: caption-token queries against their image's keys and values */
        layernorm(r->xn, r->x, w->ln_cross_w, w->ln_cross_b, n_rows, E, c->dec_eps);
        step_linear(r, r->q, E, r->xn, E, &w->cross_q, n_rows);
        for (int i = 0; i < n_rows; i++) {
            float *maps = r->cross_probs + (((size_t)l * r->max_slots + slot[i]) * H) * M;
            cross_attention(c, r, image ? image[i] : 0, l, r->q + (size_t)i * E, r->attn + (size_t)i * E, maps, scale);
        }
        step_linear(r, r->xn, E, r->attn, E, &w->cross_proj, n_rows);
        add_inplace(r->x, r->xn, (size_t)n_rows * E);

        /* 3. MLP */
        layernorm(r->xn, r->x, w->ln_2_w, w->ln_2_b, n_rows, E, c->dec_eps);
        step_linear(r, r->ff, F, r->xn, E, &w->fc, n_rows);
        gelu_tanh(r->ff, (size_t)n_rows * F);
        step_linear(r, r->xn, E, r->ff, F, &w->mlp_proj, n_rows);
        add_inplace(r->x, r->xn, (size_t)n_rows * E);
    }
    layernorm(r->xn, r->x, W->ln_f_w, W->ln_f_b, n_rows, E, c->dec_eps);
    step_linear(r, logits, c->vocab_size, r->xn, E, &W->lm_head, n_rows);
    return XCAP_OK;
}

int decoder_step(const xcap_model *m, decoder_run *r, const int32_t *tokens, int n_seq, int pos, float *logits,
                 char *err, size_t errlen) {
    if (n_seq > r->max_slots)
        return xcap_fail(err, errlen, XCAP_ERR_ARG, "decoder run sized for %d positions x %d sequences, asked %d x %d",
                         r->max_pos, r->max_slots, pos + 1, n_seq);
    int slots[n_seq > 0 ? n_seq : 1];
    for (int i = 0; i < n_seq; i++) slots[i] = i;
    return decoder_step_rows(m, r, tokens, slots, NULL, n_seq, pos, logits, err, errlen);
}

void decoder_reorder_slots(const xcap_model *m, decoder_run *r, int first, const int *src, int n_seq, int pos) {
    const xcap_config *c = &m->cfg;
    size_t E = c->dec_hidden, slot_stride = (size_t)r->max_pos * E, layer_stride = (size_t)r->max_slots * slot_stride;
    size_t used = (size_t)(pos + 1) * E;
    /* Gather through a buffer: the permutation may read a slot that it also overwrites. */
    float *tmp = r->reorder_tmp;
    for (int l = 0; l < c->dec_layers; l++) {
        float *caches[2] = {r->self_k + l * layer_stride, r->self_v + l * layer_stride};
        for (int which = 0; which < 2; which++) {
            float *base = caches[which];
            for (int s = 0; s < n_seq; s++)
                memcpy(tmp + s * used, base + (first + src[s]) * slot_stride, used * sizeof *tmp);
            for (int s = 0; s < n_seq; s++) memcpy(base + (first + s) * slot_stride, tmp + s * used, used * sizeof *tmp);
        }
    }
}

void decoder_reorder(const xcap_model *m, decoder_run *r, const int *src, int n_seq, int pos) {
    decoder_reorder_slots(m, r, 0, src, n_seq, pos);
}
