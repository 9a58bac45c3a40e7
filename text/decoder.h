/* GPT-2 text decoder with cross-attention (spec §5). Each decoding sequence (a beam) owns a
 * cache slot; the image's cross-attention keys and values are made once and shared by all. */
#ifndef XCAP_TEXT_DECODER_H
#define XCAP_TEXT_DECODER_H

#include "weights/model.h"

typedef struct {
    int max_slots, max_pos, n_memory;
    float *self_k, *self_v; /* [layers][slots][max_pos][E] self-attention cache */
    float *cross_k, *cross_v; /* [layers][M][E] from the image memory, once per image */
    float *x, *xn, *qkv, *q, *attn, *ff; /* per-step activations, [slots] rows */
    float *self_probs;       /* [H][max_pos] scratch */
    float *cross_probs;      /* [layers][slots][H][M]: the latest step's cross-attention maps */
    float *cross_kv;         /* [M][2E] scratch for decoder_cross_kv */
    float *reorder_tmp;      /* [slots][max_pos][E] scratch for decoder_reorder */
} decoder_run;

/* Sizes the run for up to max_slots parallel sequences of up to max_pos positions. */
int decoder_run_init(decoder_run *r, const xcap_config *c, int max_slots, int max_pos, char *err, size_t errlen);
void decoder_run_free(decoder_run *r);

/* Cross-attention keys and values from the image memory [M,E] (already projected to the
 * decoder width): K|V = memory·W_c_attn + b for every layer. Done once per image. */
void decoder_cross_kv(const xcap_model *m, decoder_run *r, const float *memory);

/* One position for n_seq sequences: tokens[s] enters slot s at position pos; logits [n_seq,V]. */
int decoder_step(const xcap_model *m, decoder_run *r, const int32_t *tokens, int n_seq, int pos, float *logits,
                 char *err, size_t errlen);

/* Beam reordering: slot s takes old slot src[s]'s self-attention cache for positions 0..pos. */
void decoder_reorder(const xcap_model *m, decoder_run *r, const int *src, int n_seq, int pos);

#endif
