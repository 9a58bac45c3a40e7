/* The loaded model: config, tensors (fp32 views and packed linear layers), tokenizer, preprocessing and
 * decoding defaults. Read-only after xcap_model_load. */
#ifndef XCAP_WEIGHTS_MODEL_H
#define XCAP_WEIGHTS_MODEL_H

#include "nn/linear.h"
#include "text/tokenizer.h"
#include "vision/preprocess.h"
#include "weights/config.h"
#include "weights/safetensors.h"
#include "xcap.h"

/* Layernorm parameters and embedding tables are fp32 views of the file (mapped in place when
 * possible); every linear layer is packed once for nn_linear_forward (nn/linear.h). */
typedef struct {
    const float *ln_before_w, *ln_before_b;
    nn_linear qkv;      /* query, key, value side by side: D -> 3D (biases 0 without qkv_bias) */
    nn_linear attn_out; /* attention.output.dense: D -> D */
    const float *ln_after_w, *ln_after_b;
    nn_linear fc;       /* intermediate.dense: D -> I */
    nn_linear proj;     /* output.dense: I -> D */
} vit_layer_weights;

typedef struct {
    const float *cls_token; /* [D] */
    const float *pos_embed; /* [M,D] */
    nn_linear patch;        /* the patch convolution as a linear map: 3·P·P -> D */
    vit_layer_weights *layers;
    const float *ln_w, *ln_b; /* final layernorm */
} vit_weights;

typedef struct {
    const float *ln_1_w, *ln_1_b;
    nn_linear attn;      /* c_attn: E -> 3E (query, key, value) */
    nn_linear attn_proj; /* E -> E */
    const float *ln_cross_w, *ln_cross_b;
    nn_linear cross_q;   /* crossattention.q_attn: E -> E */
    nn_linear cross_kv;  /* crossattention.c_attn: E -> 2E (key, value), run on the image memory */
    nn_linear cross_proj;
    const float *ln_2_w, *ln_2_b;
    nn_linear fc;        /* E -> inner */
    nn_linear mlp_proj;  /* inner -> E */
} gpt2_layer_weights;

typedef struct {
    const float *wte; /* [V,E] token embeddings; NULL when tied (then read from lm_head) */
    const float *wpe; /* [n_positions,E] */
    nn_linear lm_head; /* E -> V (wte's transpose when tied) */
    gpt2_layer_weights *layers;
    const float *ln_f_w, *ln_f_b;
    int has_enc_to_dec;
    nn_linear enc_to_dec; /* D -> E, when the widths differ (or the checkpoint has one) */
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
