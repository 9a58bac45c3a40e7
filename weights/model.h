/* The loaded model: config, mapped tensors (as fp32 pointers), tokenizer, preprocessing and
 * decoding defaults. Read-only after xcap_model_load. */
#ifndef XCAP_WEIGHTS_MODEL_H
#define XCAP_WEIGHTS_MODEL_H

#include "text/tokenizer.h"
#include "vision/preprocess.h"
#include "weights/config.h"
#include "weights/safetensors.h"
#include "xcap.h"

typedef struct {
    const float *ln_before_w, *ln_before_b;
    const float *q_w, *q_b, *k_w, *k_b, *v_w, *v_b; /* nn.Linear [D,D]; biases NULL without qkv_bias */
    const float *attn_out_w, *attn_out_b;           /* [D,D] */
    const float *ln_after_w, *ln_after_b;
    const float *fc_w, *fc_b;                       /* intermediate.dense [I,D] */
    const float *proj_w, *proj_b;                   /* output.dense [D,I] */
} vit_layer_weights;

typedef struct {
    const float *cls_token;         /* [D] */
    const float *pos_embed;         /* [M,D] */
    const float *patch_w, *patch_b; /* [D, 3·P·P], [D] */
    vit_layer_weights *layers;
    const float *ln_w, *ln_b;       /* final layernorm */
} vit_weights;

typedef struct {
    const float *ln_1_w, *ln_1_b;
    const float *attn_w, *attn_b;       /* Conv1D [E,3E] */
    const float *attn_proj_w, *attn_proj_b; /* [E,E] */
    const float *ln_cross_w, *ln_cross_b;
    const float *cross_q_w, *cross_q_b; /* [E,E] */
    const float *cross_kv_w, *cross_kv_b; /* [E,2E]: K and V side by side */
    const float *cross_proj_w, *cross_proj_b;
    const float *ln_2_w, *ln_2_b;
    const float *fc_w, *fc_b;           /* [E,inner] */
    const float *mlp_proj_w, *mlp_proj_b; /* [inner,E] */
} gpt2_layer_weights;

typedef struct {
    const float *wte; /* [V,E]; also the output projection when tied */
    const float *wpe; /* [n_positions,E] */
    const float *lm_head; /* [V,E]: == wte when tied */
    gpt2_layer_weights *layers;
    const float *ln_f_w, *ln_f_b;
    const float *enc_to_dec_w, *enc_to_dec_b; /* [E,D] nn.Linear, NULL when D == E */
} gpt2_weights;

struct xcap_model {
    char *dir;
    xcap_config cfg;
    xcap_params defaults;
    xcap_preprocess_config pre;
    xcap_tokenizer *tok;
    st_file st;
    vit_weights enc;
    gpt2_weights dec;
    float **owned; /* converted F16/BF16 (or unaligned F32) copies */
    int n_owned, cap_owned;
    char *warnings;
};

#endif
