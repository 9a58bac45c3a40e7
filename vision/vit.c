#include "vision/vit.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/common.h"
#include "nn/kernels.h"
#include "nn/linear.h"

int vit_run_init(vit_run *r, const xcap_config *c, char *err, size_t errlen) {
    return vit_run_init_batch(r, c, 1, err, errlen);
}

int vit_run_init_batch(vit_run *r, const xcap_config *c, int max_images, char *err, size_t errlen) {
    memset(r, 0, sizeof *r);
    if (max_images < 1 || max_images > VIT_MAX_IMAGES)
        return xcap_fail(err, errlen, XCAP_ERR_ARG, "encoder batch of %d images (1 to %d)", max_images, VIT_MAX_IMAGES);
    size_t P = c->patch_size, g = c->image_size / c->patch_size, D = c->enc_hidden;
    size_t n = g * g, M = n + 1, I = c->enc_intermediate, H = c->enc_heads, B = (size_t)max_images;
    r->n_patches = (int)n;
    r->n_tokens = (int)M;
    r->max_images = max_images;
    r->patches = malloc(B * n * 3 * P * P * sizeof(float));
    r->patch_embed = malloc(B * n * D * sizeof(float));
    r->x = malloc(B * M * D * sizeof(float));
    r->xn = malloc(B * M * D * sizeof(float));
    r->qkv = malloc(B * M * 3 * D * sizeof(float));
    r->attn = malloc(B * M * D * sizeof(float));
    r->probs = malloc(H * M * M * sizeof(float));
    r->ff = malloc(B * M * I * sizeof(float));
    if (!r->patches || !r->patch_embed || !r->x || !r->xn || !r->qkv || !r->attn || !r->probs ||
        !r->ff) {
        vit_run_free(r);
        return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "out of memory for the encoder activations (%d images)",
                         max_images);
    }
    return XCAP_OK;
}

void vit_run_free(vit_run *r) {
    free(r->patches);
    free(r->patch_embed);
    free(r->x);
    free(r->xn);
    free(r->qkv);
    free(r->attn);
    free(r->probs);
    free(r->ff);
    memset(r, 0, sizeof *r);
}

/* Unfolds the image into one row per patch, r-major, each row ordered [channel][row][column]
 * like the convolution weight [D, 3, P, P] (spec §4.1), so the conv is a single GEMM. */
static void unfold_patches(float *patches, const float *pixels, int image_size, int P) {
    int g = image_size / P;
#pragma omp parallel for
    for (int p = 0; p < g * g; p++) {
        int pr = p / g, pc = p % g;
        float *dst = patches + (size_t)p * 3 * P * P;
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < P; y++) {
                const float *src = pixels + ((size_t)c * image_size + (size_t)pr * P + y) * image_size + (size_t)pc * P;
                memcpy(dst + ((size_t)c * P + y) * P, src, (size_t)P * sizeof *dst);
            }
    }
}

/* h = x + Attn(LN_before(x)); x' = h + FFN(LN_after(h))  (pre-LN block, spec §4.3), for B images
 * stacked as B·M rows: the linear layers see all rows at once, attention one image at a time.
 * attn_out, if not NULL, has one pointer per image for this layer's maps [H][M][M]. */
static void vit_layer(const xcap_config *c, const vit_layer_weights *w, vit_run *r, int B, float *const *attn_out) {
    int M = r->n_tokens, D = c->enc_hidden, I = c->enc_intermediate, H = c->enc_heads, hd = D / H, R = B * M;
    size_t maps = (size_t)H * M * M;
    layernorm(r->xn, r->x, w->ln_before_w, w->ln_before_b, R, D, c->enc_eps);
    nn_linear_forward(r->qkv, 3 * D, r->xn, D, &w->qkv, R);
    for (int b = 0; b < B; b++) {
        const float *q = r->qkv + (size_t)b * M * 3 * D;
        attention(r->attn + (size_t)b * M * D, D, r->probs, q, 3 * D, q + D, 3 * D, q + 2 * D, 3 * D, M, M, H, hd,
                  1.0f / sqrtf((float)hd), 0, 0);
        if (attn_out && attn_out[b]) memcpy(attn_out[b], r->probs, maps * sizeof *r->probs);
    }
    nn_linear_forward(r->xn, D, r->attn, D, &w->attn_out, R);
    add_inplace(r->x, r->xn, (size_t)R * D);

    layernorm(r->xn, r->x, w->ln_after_w, w->ln_after_b, R, D, c->enc_eps);
    nn_linear_forward(r->ff, I, r->xn, D, &w->fc, R);
    gelu_erf(r->ff, (size_t)R * I);
    nn_linear_forward(r->xn, D, r->ff, I, &w->proj, R);
    add_inplace(r->x, r->xn, (size_t)R * D);
}

void vit_forward(const xcap_model *m, vit_run *r, const float *pixels, float *out, float *const *layer_out,
                 float *attn_out) {
    vit_forward_batch(m, r, pixels, 1, out, layer_out, attn_out ? &attn_out : NULL);
}

void vit_forward_batch(const xcap_model *m, vit_run *r, const float *pixels, int B, float *out,
                       float *const *layer_out, float *const *attn_out) {
    const xcap_config *c = &m->cfg;
    const vit_weights *w = &m->enc;
    int P = c->patch_size, D = c->enc_hidden, n = r->n_patches, M = r->n_tokens, S = c->image_size;
    size_t patch_len = (size_t)3 * P * P, image_len = (size_t)3 * S * S;

    for (int b = 0; b < B; b++) unfold_patches(r->patches + (size_t)b * n * patch_len, pixels + b * image_len, S, P);
    nn_linear_forward(r->patch_embed, D, r->patches, patch_len, &w->patch, B * n);

    /* [CLS, patches...] + position embeddings (spec §4.2), image by image */
    for (int b = 0; b < B; b++) {
        float *x = r->x + (size_t)b * M * D;
        memcpy(x, w->cls_token, (size_t)D * sizeof *x);
        memcpy(x + D, r->patch_embed + (size_t)b * n * D, (size_t)n * D * sizeof *x);
        add_inplace(x, w->pos_embed, (size_t)M * D);
    }

    /* Per-image pointers to this layer's slice of each caller's [L][H][M][M] maps. */
    float *layer_maps[VIT_MAX_IMAGES];
    size_t maps = (size_t)c->enc_heads * M * M;
    for (int i = 0; i < c->enc_layers; i++) {
        float *const *maps_out = NULL;
        if (attn_out) {
            for (int b = 0; b < B; b++) layer_maps[b] = attn_out[b] ? attn_out[b] + i * maps : NULL;
            maps_out = layer_maps;
        }
        vit_layer(c, &w->layers[i], r, B, maps_out);
        if (layer_out && layer_out[i]) memcpy(layer_out[i], r->x, (size_t)B * M * D * sizeof *r->x);
    }
    layernorm(out, r->x, w->ln_w, w->ln_b, B * M, D, c->enc_eps);
}
