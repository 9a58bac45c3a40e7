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

/* The same from text in memory (name stands for the file in messages). config_parse reads a
 * config.json; config_generation_parse applies a generation_config.json (from_config_json 0) or
 * the legacy generation keys of a config.json (from_config_json 1) over transformers' defaults. */
int config_parse(const char *json, size_t len, const char *name, xcap_config *cfg, char *err,
                 size_t errlen);
int config_generation_parse(const char *json, size_t len, const char *name, int from_config_json,
                            xcap_config *cfg, xcap_params *params, char *err, size_t errlen);

/* Model-directory files are read whole, and cJSON needs several times a file's size in memory,
 * so a hostile directory could make xcap allocate without bound. These caps are far above real
 * files (a config.json is a few kB, GPT-2's tokenizer.json 1.4 MB, the largest tokenizer.json
 * files in use about 35 MB). JSON nesting is bounded by cJSON's CJSON_NESTING_LIMIT (1000 in
 * Debian's build), and strings by the file size. */
#define CONFIG_MAX_FILE_BYTES ((size_t)4 << 20)
#define TOKENIZER_MAX_FILE_BYTES ((size_t)64 << 20)

/* Reads a whole file into a NUL-terminated heap buffer, as xcap_read_file does, but stops and
 * refuses it (naming the limit) once it holds more than max_bytes. Works on pipes and devices
 * too: the size is counted while reading, not taken from stat. */
int config_read_file(const char *path, size_t max_bytes, char **data, size_t *size, char *err,
                     size_t errlen);

#endif
