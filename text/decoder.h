/* GPT-2 text decoder with cross-attention (spec §5). Each decoding sequence (a beam) owns a
 * cache slot; each image's cross-attention keys and values are made once and shared by its
 * beams. One step can run the rows of several images at once (lock-step decoding of a batch):
 * every linear layer then reads its weights once for all of them, while self-attention stays
 * within a row's slot and cross-attention within its image. */
#ifndef XCAP_TEXT_DECODER_H
#define XCAP_TEXT_DECODER_H

#include "weights/model.h"

typedef struct {
    int max_slots, max_pos, max_images, n_memory;
    float *self_k, *self_v;   /* [layers][slots][max_pos][E] self-attention cache */
    /* Each image's cross-attention keys and values, per layer and head, packed as the weights
     * of two linear layers (nn/linear.h), so that a step's scores q·Kᵀ and output p·V run
     * through the matrix-vector kernels: [images][layers][heads] × (keys: hd inputs -> M
     * outputs, cross_k_elems; values: M inputs -> hd outputs, cross_v_elems). The elements
     * are fp32, or IEEE half in the layers whose key/value weights are q8 (a q8 model's steps
     * read them like weights, and half of them is 10% of its bytes per token); cross_type says
     * which, per layer (set by decoder_cross_kv_image). Room is made for fp32. */
    void *cross;
    size_t cross_k_elems, cross_v_elems;
    nn_weight_type *cross_type; /* [layers] */
    float *zeros; /* the packed layers' bias: max(M, hd) rounded up to a panel, all 0 */
    float *x, *xn, *qkv, *q, *attn, *ff; /* per-step activations, one row per running sequence */
    float *self_probs;        /* [H][max_pos] scratch */
    float *cross_probs;       /* [layers][slots][H][M]: the latest step's cross-attention maps, by slot */
    float *cross_kv;          /* [M][2E] scratch for decoder_cross_kv */
    float *reorder_tmp;       /* [slots][max_pos][E] scratch for decoder_reorder */
    float *q8_scratch;        /* a step's rows quantised for q8 layers (nn_linear_forward_scratch) */
    size_t q8_scratch_floats;
} decoder_run;

/* Sizes the run for up to max_slots sequences (over all images) of up to max_pos positions,
 * attending to up to max_images images. */
int decoder_run_init_images(decoder_run *r, const xcap_config *c, int max_slots, int max_pos, int max_images,
                            char *err, size_t errlen);
/* One image: decoder_run_init_images(r, c, max_slots, max_pos, 1, ...). */
int decoder_run_init(decoder_run *r, const xcap_config *c, int max_slots, int max_pos, char *err, size_t errlen);
void decoder_run_free(decoder_run *r);

/* Cross-attention keys and values of image `image` from its memory [M,E] (already projected to
 * the decoder width): K|V = memory·W_c_attn + b for every layer. Done once per image. */
void decoder_cross_kv_image(const xcap_model *m, decoder_run *r, int image, const float *memory);
void decoder_cross_kv(const xcap_model *m, decoder_run *r, const float *memory); /* image 0 */

/* Image `image`'s layer-l cross-attention keys and values read back from the packed cache as
 * [M][E] rows (heads side by side), the layout of the reference (tests compare them). */
void decoder_cross_kv_read(const xcap_model *m, const decoder_run *r, int image, int layer, float *k, float *v);

/* One position for n_rows running sequences: tokens[i] enters cache slot slot[i] at position
 * pos, and attends to image image[i] (NULL: all image 0). Logits [n_rows,V] in row order;
 * cross_probs holds each slot's maps. Slots must be distinct. */
int decoder_step_rows(const xcap_model *m, decoder_run *r, const int32_t *tokens, const int *slot, const int *image,
                      int n_rows, int pos, float *logits, char *err, size_t errlen);
/* Rows 0..n_seq-1 in slots 0..n_seq-1, image 0. */
int decoder_step(const xcap_model *m, decoder_run *r, const int32_t *tokens, int n_seq, int pos, float *logits,
                 char *err, size_t errlen);

/* Beam reordering within slots first..first+n_seq-1: slot first+s takes old slot first+src[s]'s
 * self-attention cache for positions 0..pos. */
void decoder_reorder_slots(const xcap_model *m, decoder_run *r, int first, const int *src, int n_seq, int pos);
void decoder_reorder(const xcap_model *m, decoder_run *r, const int *src, int n_seq, int pos); /* first = 0 */

#endif
