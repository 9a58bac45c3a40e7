/* ViT image encoder (spec §4): pixels [3,H,W] → memory tokens [M,D], CLS first.
 *
 * Several images can go through at once: their tokens are stacked into [n·M, D] rows so that
 * every linear layer is one GEMM over all images (each weight matrix read once per layer for
 * the whole batch); attention stays per image. */
#ifndef XCAP_VISION_VIT_H
#define XCAP_VISION_VIT_H

#include "weights/model.h"

/* The most images one encoder pass takes (bounds per-call scratch such as per-image map pointers). */
enum { VIT_MAX_IMAGES = 64 };

/* Activations of one encoder pass over up to max_images images, sized from the config once.
 * Row blocks of M rows belong to one image each. */
typedef struct {
    int n_patches, n_tokens; /* n, M = n + 1 (per image) */
    int max_images;
    float *patches;     /* [images][n, 3·P·P] unfolded images */
    float *patch_embed; /* [images][n, D] patch projections (before CLS and positions) */
    float *x;           /* [images][M, D] residual stream */
    float *xn;          /* [images][M, D] layernorm output */
    float *qkv;         /* [images][M, 3D]: query, key, value side by side */
    float *attn;        /* [images][M, D] attention output, heads concatenated */
    float *probs;       /* [heads, M, M] self-attention probabilities of the last image and layer run */
    float *ff;          /* [images][M, I] */
} vit_run;

/* One image at a time (vit_run_init_batch with max_images 1). */
int vit_run_init(vit_run *r, const xcap_config *c, char *err, size_t errlen);
int vit_run_init_batch(vit_run *r, const xcap_config *c, int max_images, char *err, size_t errlen);
void vit_run_free(vit_run *r);

/* Runs the encoder; writes the final-layernormed tokens to out [M, D]. When layer_out is not
 * NULL, layer_out[i] (if not NULL) receives layer i's output [M, D] (for tests and tools); when
 * attn_out is not NULL it receives every layer's self-attention probabilities [L][H][M][M]. */
void vit_forward(const xcap_model *m, vit_run *r, const float *pixels, float *out, float *const *layer_out,
                 float *attn_out);

/* The same for n_images (<= r->max_images) images at once: pixels [n_images][3,S,S], out
 * [n_images][M, D], layer_out[i] (if not NULL) [n_images][M, D]. attn_out, if not NULL, holds
 * one pointer per image; a non-NULL attn_out[j] receives image j's [L][H][M][M] maps. Each
 * image's result equals vit_forward on it alone (up to the GEMM's rounding of other row
 * counts). */
void vit_forward_batch(const xcap_model *m, vit_run *r, const float *pixels, int n_images, float *out,
                       float *const *layer_out, float *const *attn_out);

#endif
