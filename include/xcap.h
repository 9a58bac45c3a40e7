/* xcap: image captioning with a ViT encoder and a GPT-2 decoder joined by cross-attention.
 *
 * Public API. The model (weights, config, tokenizer) is read-only once loaded and may be
 * shared by threads; each thread captions through its own xcap_state (activations, caches).
 * Every function that can fail returns an xcap_status and writes a one-line message into the
 * caller's buffer; the library never prints and never exits. */
#ifndef XCAP_H
#define XCAP_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    XCAP_OK = 0,
    XCAP_ERR_ARG = 1,         /* bad argument or parameter value */
    XCAP_ERR_IO = 2,          /* a file could not be opened or read */
    XCAP_ERR_FORMAT = 3,      /* a file is malformed (JSON, safetensors, image) */
    XCAP_ERR_MODEL = 4,       /* a model file is well-formed but not what the config says */
    XCAP_ERR_UNSUPPORTED = 5, /* a valid setting that xcap does not implement */
    XCAP_ERR_NOMEM = 6,
} xcap_status;

/* How beam search decides it is done (transformers' `early_stopping`). */
typedef enum {
    XCAP_EARLY_STOP_HEURISTIC = 0, /* false: stop when no running beam can beat the finished */
    XCAP_EARLY_STOP_TRUE = 1,      /* true: stop as soon as num_beams hypotheses finished */
    XCAP_EARLY_STOP_NEVER = 2,     /* "never": bound uses the longest possible length */
} xcap_early_stopping;

typedef struct {
    int n_threads;             /* OpenMP threads; 0 = all cores (results do not depend on it) */
    int max_length;            /* counts the start token, as transformers does */
    int max_new_tokens;        /* > 0: generated tokens only, wins over max_length */
    int min_length;            /* eos banned while the sequence is shorter (start token counted) */
    int min_new_tokens;        /* same, counting generated tokens only; 0 = off */
    int num_beams;             /* 1 = greedy or sampling */
    float length_penalty;      /* beam score = sum_logprob / length^length_penalty */
    xcap_early_stopping early_stopping;
    int do_sample;             /* sample instead of argmax (num_beams must be 1) */
    float temperature;
    int top_k;                 /* 0 = off */
    float top_p;               /* 1.0 = off */
    float repetition_penalty;  /* 1.0 = off */
    int no_repeat_ngram_size;  /* 0 = off */
    int num_return_sequences;  /* n-best: how many finished beams to return (<= num_beams) */
    uint64_t seed;             /* sampling seed: same seed and settings, same caption */
    int output_attentions;     /* fill the attention maps of xcap_result (transformers' name) */
} xcap_params;

/* transformers' defaults (max_length 20, greedy, ...). A model's generation_config.json
 * overrides them: see xcap_model_params(). */
xcap_params xcap_default_params(void);

typedef struct xcap_model xcap_model;
typedef struct xcap_state xcap_state;

/* Loads a Hugging Face VisionEncoderDecoder directory (config.json, model.safetensors,
 * vocab.json + merges.txt or tokenizer.json, preprocessor_config.json, and optionally
 * generation_config.json). The safetensors file is memory-mapped read-only; every tensor is
 * checked by name, dtype and shape before use. */
int xcap_model_load(const char *dir, xcap_model **model, char *err, size_t errlen);
void xcap_model_free(xcap_model *model);

/* Decoding defaults of this model: xcap_default_params() overridden by the checkpoint's
 * generation settings (generation_config.json, then legacy keys in config.json). */
xcap_params xcap_model_params(const xcap_model *model);

/* Things the loader noticed but accepted (unexpected tensors, ...), one per line; "" if none. */
const char *xcap_model_warnings(const xcap_model *model);

typedef struct {
    int image_width, image_height; /* the processor's input size */
    int patch_size;
    int grid_rows, grid_cols;      /* patch grid */
    int n_memory;                  /* memory tokens = 1 (CLS) + patches */
    int enc_hidden, enc_layers, enc_heads;
    int dec_hidden, dec_layers, dec_heads;
    int vocab_size, n_positions;
    int start_token, eos_token, pad_token;
} xcap_model_info;

xcap_model_info xcap_model_get_info(const xcap_model *model);

int xcap_state_new(const xcap_model *model, xcap_state **state, char *err, size_t errlen);
void xcap_state_free(xcap_state *state);

/* One returned sequence. tokens holds the generated ids (start token excluded, final eos
 * included when generation ended on it). */
typedef struct {
    int32_t *tokens;
    int n_tokens;
    float sum_logprob; /* sum of the chosen tokens' log-probabilities */
    float score;       /* beam search: sum_logprob / n_tokens^length_penalty; else sum_logprob */
    char *text;        /* decoded, special tokens skipped, UTF-8 */
    /* With params.output_attentions: the decoder's cross-attention probabilities for each
     * generated token, [n_tokens][dec_layers][dec_heads][n_memory] (memory = CLS + patches in
     * the encoder's order). Row t is the softmax of the query that chose token t; for beam
     * search it follows this hypothesis through the beam history. NULL otherwise. */
    float *cross_attention;
} xcap_hypothesis;

typedef struct {
    xcap_hypothesis *hyps; /* best first; hyps[0] is the caption */
    int n_hyps;
    /* With params.output_attentions: the encoder's self-attention probabilities,
     * [enc_layers][enc_heads][n_memory][n_memory] (for attention rollout). NULL otherwise. */
    float *encoder_attention;
} xcap_result;

/* Captions an RGB image (8-bit, interleaved, row-major, width*height*3 bytes, any size: it is
 * resized as the checkpoint's processor does). */
int xcap_caption(xcap_state *state, const uint8_t *rgb, int width, int height,
                 const xcap_params *params, xcap_result *result, char *err, size_t errlen);
void xcap_result_free(xcap_result *result);

/* One image for xcap_caption_batch: RGB as for xcap_caption, or (pixels non-NULL) the output
 * of xcap_preprocess for it, which lets a caller resize and normalise on other threads while
 * the network runs. */
typedef struct {
    const uint8_t *rgb;
    int width, height;
    const float *pixels; /* NULL, or xcap_pixel_count(model) floats from xcap_preprocess */
} xcap_image;

/* The model's input for one image: 3 x size x size floats, channel-major. */
size_t xcap_pixel_count(const xcap_model *model);
/* The model's preprocessing (resize, rescale, normalise; Pillow-exact) of an RGB image into
 * pixels (xcap_pixel_count floats). Thread-safe; the model is only read. */
int xcap_preprocess(const xcap_model *model, const uint8_t *rgb, int width, int height, float *pixels, char *err,
                    size_t errlen);

/* Captions n images with one set of parameters; results[i] and status[i] (an xcap_status)
 * belong to imgs[i]. The encoder runs several images per pass (their patch tokens stacked, so
 * each weight matrix is read once per pass for all of them), and their decoding runs in lock
 * step (one decoder call per position for the beams of every image still generating). Every
 * result equals what xcap_caption gives for that image alone, bit for bit: tokens, scores and
 * attention maps do not depend on which images share a call. An image that fails (0x0, say) gets a non-zero
 * status and an empty result, and the others are still captioned. Returns XCAP_OK when every
 * image was captioned, else the first failure's status with err naming it ("image 3: ...";
 * call xcap_caption on an image alone for its own message). A bad parameter fails every image.
 * The state grows on first use to hold one encoder pass (up to 16 images; larger n runs in
 * several passes); free each results[i] with xcap_result_free, failed ones included. */
int xcap_caption_batch(xcap_state *state, const xcap_image *imgs, int n, const xcap_params *params,
                       xcap_result *results, int *status, char *err, size_t errlen);

/* Tokenizer access (for tools and tests). Encoded ids are written to ids (capacity cap);
 * the number of ids is returned through n_ids even when it exceeds cap. */
int xcap_tokenize(const xcap_model *model, const char *text, size_t len, int32_t *ids, int cap,
                  int *n_ids, char *err, size_t errlen);
/* Decodes ids to UTF-8 (special tokens skipped); the returned string is malloc'ed. */
int xcap_detokenize(const xcap_model *model, const int32_t *ids, int n_ids, char **text,
                    char *err, size_t errlen);

/* Lighter weights: writes a copy of the model directory in_dir to out_dir (created if missing;
 * not in_dir itself) whose model.safetensors holds
 *   XCAP_QUANT_F16: every float tensor as IEEE half (a checkpoint transformers still loads);
 *   XCAP_QUANT_Q8:  the linear layers' weights as int8 with one float32 scale per output channel
 *                   ("<name>_scale"), everything else float32 (an xcap extension; README).
 * The other files of the directory (config, tokenizer, preprocessor) are copied. */
typedef enum { XCAP_QUANT_F16 = 1, XCAP_QUANT_Q8 = 2 } xcap_quant_type;
int xcap_quantize(const char *in_dir, const char *out_dir, xcap_quant_type type, char *err, size_t errlen);

const char *xcap_version(void);
const char *xcap_status_name(int status);

#ifdef __cplusplus
}
#endif

#endif
