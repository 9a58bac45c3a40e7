/* From the decoder's recorded cross-attention (xcap_hypothesis.cross_attention) to one map per
 * caption token and per caption word over the image's patch grid: which layer and head are
 * drawn, attention rollout through the encoder, and how tokens group into words. Pure
 * computation (no files, no printing): `xcap attend`, `xcap caption --attention-dir` and tests
 * share it. */
#ifndef XCAP_CMD_ATTENTION_MAPS_H
#define XCAP_CMD_ATTENTION_MAPS_H

#include <stddef.h>
#include <stdint.h>

#include "xcap.h"

/* Special values of attn_choice.layer and .head (real indices are >= 0). */
enum { ATTN_LAYER_LAST = -1, ATTN_LAYER_ALL = -2 };
enum { ATTN_HEAD_MEAN = -1, ATTN_HEAD_MAX = -2 };
typedef enum { ATTN_FUSION_NONE = 0, ATTN_FUSION_ROLLOUT = 1 } attn_fusion;

/* The drawn map when no flag is given: the mean over every decoder layer and head. Measured on
 * the shipped model (weights/grounding.py, 1040 nouns in 500 scenes; weights/default/
 * MODEL_CARD.md): its peak falls inside the named object for 96.2% of nouns, the best of all
 * settings (last layer alone 69.8%, rollout 52.0%). A numeric layer that a smaller model does
 * not have falls back to its last layer. */
#define ATTEND_DEFAULT_LAYER ATTN_LAYER_ALL
#define ATTEND_DEFAULT_HEAD ATTN_HEAD_MEAN

typedef struct {
    int layer;          /* decoder layer (0-based), ATTN_LAYER_LAST or ATTN_LAYER_ALL (mean) */
    int head;           /* head (0-based), ATTN_HEAD_MEAN or ATTN_HEAD_MAX (elementwise) */
    attn_fusion fusion; /* ROLLOUT: carried through the encoder's self-attention */
    int layer_given;    /* the layer came from the command line (else: the default) */
} attn_choice;

void attn_choice_default(attn_choice *c);

/* "--layer" / "--head" / "--fusion" values. Return 0, or -1 with a one-line reason in err. */
int attn_parse_layer(const char *s, attn_choice *c, char *err, size_t errlen);
int attn_parse_head(const char *s, attn_choice *c, char *err, size_t errlen);
int attn_parse_fusion(const char *s, attn_choice *c, char *err, size_t errlen);

/* Checks the choice against the model and turns ATTN_LAYER_LAST (and a default layer the
 * model lacks) into a layer index. Returns 0, or -1 with the reason in err. */
int attn_choice_resolve(attn_choice *c, const xcap_model_info *info, char *err, size_t errlen);

/* "layer 1", "mean over layers", "head 2", "mean over heads", ... for the JSON and pages. */
void attn_choice_describe(const attn_choice *c, char *layer, char *head, char *fusion, size_t len);

/* Attention rollout (Abnar & Zuidema 2020) of the encoder: per layer
 * Â = 0.5·mean_heads(A) + 0.5·I with rows renormalised, and R = Â_L·…·Â_1, so R[i][j] is how
 * much output token i draws on input token j. enc_attn is xcap_result.encoder_attention,
 * [layers][heads][M][M]; R holds M*M floats, scratch M*M + M. */
void attn_rollout(const float *enc_attn, int layers, int heads, int M, float *R, float *scratch);

/* One token's drawn map over the patch grid (rows*cols floats, row-major, summing to 1):
 * the chosen layer/head of cross ([layers][heads][M], one token's rows), carried to input
 * patches as m^T·R when rollout is given (R from attn_rollout, else NULL), then CLS dropped
 * and the patch weights renormalised. scratch holds 2*M floats. */
void attn_patch_map(const float *cross, int layers, int heads, int M, const attn_choice *c, const float *rollout,
                    float *scratch, float *out);

/* Caption tokens grouped into words the way GPT-2 spells them: a token whose text begins with
 * white space starts a new word; tokens without visible text (end-of-text, white space only)
 * belong to no word and end the current one. */
typedef struct {
    int n_tokens;
    char **token_text; /* each id decoded alone (special tokens: "") */
    int *token_word;   /* word index, or -1 */
    int n_words;
    char **word_text;  /* the word's ids decoded together, white space stripped */
    int *word_first;   /* first token of each word; its tokens are contiguous */
    int *word_count;
} attn_words;

int attn_words_build(const xcap_model *model, const int32_t *tokens, int n_tokens, attn_words *w, char *err,
                     size_t errlen);
void attn_words_free(attn_words *w);

#endif
