#include "vision/vit.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/common.h"
#include "nn/kernels.h"

int vit_run_init(vit_run *r, const xcap_config *c, char *err, size_t errlen) {
    memset(r, 0, sizeof *r);
    size_t P = c->patch_size, g = c->image_size / c->patch_size, D = c->enc_hidden;
    size_t n = g * g, M = n + 1, I = c->enc_intermediate, H = c->enc_heads;
    r->n_patches = (int)n;
    r->n_tokens = (int)M;
    r->patches = malloc(n * 3 * P * P * sizeof(float));
    r->patch_embed = malloc(n * D * sizeof(float));
    r->x = malloc(M * D * sizeof(float));
    r->xn = malloc(M * D * sizeof(float));
    r->q = malloc(M * D * sizeof(float));
    r->k = malloc(M * D * sizeof(float));
    r->v = malloc(M * D * sizeof(float));
    r->attn = malloc(M * D * sizeof(float));
    r->probs = malloc(H * M * M * sizeof(float));
    r->ff = malloc(M * I * sizeof(float));
    if (!r->patches || !r->patch_embed || !r->x || !r->xn || !r->q || !r->k || !r->v || !r->attn || !r->probs ||
        !r->ff) {
        vit_run_free(r);
        return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "out of memory for the encoder activations");
    }
    return XCAP_OK;
}

void vit_run_free(vit_run *r) {
    free(r->patches);
    free(r->patch_embed);
    free(r->x);
    free(r->xn);
    free(r->q);
    free(r->k);
    free(r->v);
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

/* h = x + Attn(LN_before(x)); x' = h + FFN(LN_after(h))  (pre-LN block, spec §4.3) */
static void vit_layer(const xcap_config *c, const vit_layer_weights *w, vit_run *r) {
    int M = r->n_tokens, D = c->enc_hidden, I = c->enc_intermediate, H = c->enc_heads, hd = D / H;
    layernorm(r->xn, r->x, w->ln_before_w, w->ln_before_b, M, D, c->enc_eps);
    matmul_nk(r->q, r->xn, w->q_w, w->q_b, M, D, D);
    matmul_nk(r->k, r->xn, w->k_w, w->k_b, M, D, D);
    matmul_nk(r->v, r->xn, w->v_w, w->v_b, M, D, D);
    attention(r->attn, D, r->probs, r->q, D, r->k, D, r->v, D, M, M, H, hd, 1.0f / sqrtf((float)hd), 0, 0);
    matmul_nk(r->xn, r->attn, w->attn_out_w, w->attn_out_b, M, D, D);
    add_inplace(r->x, r->xn, (size_t)M * D);

    layernorm(r->xn, r->x, w->ln_after_w, w->ln_after_b, M, D, c->enc_eps);
    matmul_nk(r->ff, r->xn, w->fc_w, w->fc_b, M, D, I);
    gelu_erf(r->ff, (size_t)M * I);
    matmul_nk(r->xn, r->ff, w->proj_w, w->proj_b, M, I, D);
    add_inplace(r->x, r->xn, (size_t)M * D);
}

void vit_forward(const xcap_model *m, vit_run *r, const float *pixels, float *out, float *const *layer_out,
                 float *attn_out) {
    const xcap_config *c = &m->cfg;
    const vit_weights *w = &m->enc;
    int P = c->patch_size, D = c->enc_hidden, n = r->n_patches, M = r->n_tokens;

    unfold_patches(r->patches, pixels, c->image_size, P);
    matmul_nk(r->patch_embed, r->patches, w->patch_w, w->patch_b, n, 3 * P * P, D);

    /* [CLS, patches...] + position embeddings (spec §4.2) */
    memcpy(r->x, w->cls_token, (size_t)D * sizeof *r->x);
    memcpy(r->x + D, r->patch_embed, (size_t)n * D * sizeof *r->x);
    add_inplace(r->x, w->pos_embed, (size_t)M * D);

    for (int i = 0; i < c->enc_layers; i++) {
        vit_layer(c, &w->layers[i], r);
        if (layer_out && layer_out[i]) memcpy(layer_out[i], r->x, (size_t)M * D * sizeof *r->x);
        if (attn_out) {
            size_t n = (size_t)c->enc_heads * M * M;
            memcpy(attn_out + i * n, r->probs, n * sizeof *attn_out);
        }
    }
    layernorm(out, r->x, w->ln_w, w->ln_b, M, D, c->enc_eps);
}
