/* config.json and generation settings of a VisionEncoderDecoder directory (spec §1, §6). */
#ifndef XCAP_WEIGHTS_CONFIG_H
#define XCAP_WEIGHTS_CONFIG_H

#include <stddef.h>

#include "xcap.h"

#define XCAP_MAX_EOS 8

typedef struct {
    /* encoder (ViT) */
    int enc_hidden, enc_layers, enc_heads, enc_intermediate;
    float enc_eps;
    int image_size, patch_size, num_channels;
    int qkv_bias;
    /* decoder (GPT-2 with cross-attention) */
    int dec_hidden, dec_layers, dec_heads, dec_inner, n_positions, vocab_size;
    float dec_eps;
    int scale_attn_weights, scale_attn_by_inverse_layer_idx;
    /* top level */
    int tie_word_embeddings;
    int decoder_start_token_id, pad_token_id;
    int eos_ids[XCAP_MAX_EOS];
    int n_eos;
} xcap_config;

/* Parses dir/config.json; refuses settings xcap does not implement, naming key and value. */
int config_load(const char *dir, xcap_config *cfg, char *err, size_t errlen);

/* Model decoding defaults (spec §6 priority): transformers' defaults, then the decoder
 * sub-config, the top level of config.json, and dir/generation_config.json if present. May also
 * update start/eos/pad ids found in generation_config.json. */
int config_generation_params(const char *dir, xcap_config *cfg, xcap_params *params, char *err,
                             size_t errlen);

#endif
