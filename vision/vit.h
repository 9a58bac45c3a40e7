/* ViT image encoder (spec §4): pixels [3,H,W] → memory tokens [M,D], CLS first. */
#ifndef XCAP_VISION_VIT_H
#define XCAP_VISION_VIT_H

#include "weights/model.h"

/* Activations of one encoder pass, sized from the config once. */
typedef struct {
    int n_patches, n_tokens; /* n, M = n + 1 */
    float *patches;     /* [n, 3·P·P] unfolded image */
    float *patch_embed; /* [n, D] patch projections (before CLS and positions) */
    float *x;           /* [M, D] residual stream */
    float *xn;          /* [M, D] layernorm output */
    float *q, *k, *v;   /* [M, D] */
    float *attn;        /* [M, D] attention output, heads concatenated */
    float *probs;       /* [heads, M, M] self-attention probabilities of the last layer run */
    float *ff;          /* [M, I] */
} vit_run;

int vit_run_init(vit_run *r, const xcap_config *c, char *err, size_t errlen);
void vit_run_free(vit_run *r);

/* Runs the encoder; writes the final-layernormed tokens to out [M, D]. When layer_out is not
 * NULL, layer_out[i] (if not NULL) receives layer i's output [M, D] (for tests and tools); when
 * attn_out is not NULL it receives every layer's self-attention probabilities [L][H][M][M]. */
void vit_forward(const xcap_model *m, vit_run *r, const float *pixels, float *out, float *const *layer_out,
                 float *attn_out);

#endif
