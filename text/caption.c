/* The captioning pipeline behind the public API: pixels → encoder → memory → cross K/V once →
 * decoding loop (greedy, beam or sampling) over the GPT-2 decoder → text. */
#include <stdlib.h>
#include <string.h>

#include "nn/common.h"
#include "nn/kernels.h"
#include "nn/linear.h"
#include "text/decoder.h"
#include "text/generate.h"
#include "vision/preprocess.h"
#include "vision/vit.h"
#include "weights/model.h"

/* At most this many images share one encoder pass: enough rows to keep the GEMMs busy, while the
 * activations of a pass stay bounded (about 8 MB per 224-pixel ViT-Base image) however many
 * images a caller hands to xcap_caption_batch. */
enum { ENCODER_BATCH = 16 };

struct xcap_state {
    const xcap_model *m;
    vit_run vit;     /* sized for enc_images images per pass */
    int enc_images;
    decoder_run dec; /* sized for the largest request so far */
    float *pixels;   /* [enc_images][3, S, S] */
    float *enc_out;  /* [enc_images][M, D] */
    float *memory;   /* [enc_images][M, E]: enc_out projected to the decoder width (or enc_out itself) */
    /* With output_attentions: every step's cross-attention maps of every slot,
     * [step][slot][layer][head][M], recorded from decoder_run.cross_probs as decoding goes. */
    float *attn_history;
    size_t attn_history_cap; /* floats */
    int recording;           /* record in step_cb during this caption */
    int history_slots;
};

/* (Re)sizes the encoder side of the state for `images` images per pass. On failure the state
 * keeps its previous buffers. */
static int reserve_encoder(xcap_state *st, int images, char *err, size_t errlen) {
    if (st->enc_images >= images) return XCAP_OK;
    const xcap_config *c = &st->m->cfg;
    size_t S = c->image_size, g = S / c->patch_size, M = g * g + 1, B = (size_t)images;
    vit_run vit;
    int rc = vit_run_init_batch(&vit, c, images, err, errlen);
    if (rc) return rc;
    int project = st->m->dec.has_enc_to_dec;
    float *pixels = malloc(B * 3 * S * S * sizeof(float));
    float *enc_out = malloc(B * M * c->enc_hidden * sizeof(float));
    float *memory = project ? malloc(B * M * c->dec_hidden * sizeof(float)) : enc_out;
    if (!pixels || !enc_out || !memory) {
        vit_run_free(&vit);
        free(pixels);
        free(enc_out);
        if (project) free(memory);
        return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "out of memory for an encoder pass over %d images", images);
    }
    vit_run_free(&st->vit);
    if (st->memory != st->enc_out) free(st->memory);
    free(st->enc_out);
    free(st->pixels);
    st->vit = vit;
    st->pixels = pixels;
    st->enc_out = enc_out;
    st->memory = memory;
    st->enc_images = images;
    return XCAP_OK;
}

int xcap_state_new(const xcap_model *m, xcap_state **out, char *err, size_t errlen) {
    *out = NULL;
    xcap_state *st = calloc(1, sizeof *st);
    if (!st) return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "out of memory");
    st->m = m;
    int rc = reserve_encoder(st, 1, err, errlen);
    if (rc) {
        free(st);
        return rc;
    }
    *out = st;
    return XCAP_OK;
}

void xcap_state_free(xcap_state *st) {
    if (!st) return;
    vit_run_free(&st->vit);
    decoder_run_free(&st->dec);
    if (st->memory != st->enc_out) free(st->memory);
    free(st->attn_history);
    free(st->enc_out);
    free(st->pixels);
    free(st);
}

/* Floats of one slot's cross-attention maps at one step: layers × heads × memory tokens. */
static size_t maps_per_slot(const xcap_config *c, int n_memory) {
    return (size_t)c->dec_layers * c->dec_heads * n_memory;
}

static int step_cb(void *ctx, const int32_t *tokens, int n_seq, int pos, float *logits, char *err, size_t errlen) {
    xcap_state *st = ctx;
    int rc = decoder_step(st->m, &st->dec, tokens, n_seq, pos, logits, err, errlen);
    if (rc || !st->recording) return rc;
    /* Keep this step's maps, slot by slot, as the attention kernel left them. */
    const xcap_config *c = &st->m->cfg;
    size_t M = st->dec.n_memory, HM = (size_t)c->dec_heads * M, per_slot = maps_per_slot(c, (int)M);
    float *step = st->attn_history + (size_t)pos * st->history_slots * per_slot;
    for (int s = 0; s < n_seq; s++)
        for (int l = 0; l < c->dec_layers; l++)
            memcpy(step + s * per_slot + l * HM, st->dec.cross_probs + ((size_t)l * st->dec.max_slots + s) * HM,
                   HM * sizeof *step);
    return XCAP_OK;
}

static int reorder_cb(void *ctx, const int *src, int n_seq, int pos, char *err, size_t errlen) {
    xcap_state *st = ctx;
    decoder_reorder(st->m, &st->dec, src, n_seq, pos);
    return XCAP_OK;
}

/* Makes sure the decoder caches hold `slots` sequences of `positions` tokens. Allocation happens
 * here, before decoding starts, never inside the token loop. */
static int reserve_decoder(xcap_state *st, int slots, int positions, char *err, size_t errlen) {
    if (st->dec.self_k && st->dec.max_slots >= slots && st->dec.max_pos >= positions) return XCAP_OK;
    if (st->dec.self_k) {
        if (st->dec.max_slots > slots) slots = st->dec.max_slots;
        if (st->dec.max_pos > positions) positions = st->dec.max_pos;
    }
    decoder_run_free(&st->dec);
    return decoder_run_init(&st->dec, &st->m->cfg, slots, positions, err, errlen);
}

/* The settings every image of a call shares, checked and sized for once per call. */
typedef struct {
    int max_len, slots;
    size_t per_slot; /* floats of one slot's cross-attention maps at one step */
} decode_plan;

/* Checks the parameters and sizes the decoder caches and the attention history for them, so
 * that nothing is allocated once decoding starts. */
static int plan_decoding(xcap_state *st, const xcap_params *p, decode_plan *plan, char *err, size_t errlen) {
    const xcap_config *c = &st->m->cfg;
    if (p->num_beams < 1 || p->num_return_sequences < 1)
        return xcap_fail(err, errlen, XCAP_ERR_ARG, "num_beams and num_return_sequences must be at least 1");
    int max_len = p->max_new_tokens > 0 ? 1 + p->max_new_tokens : p->max_length;
    if (max_len > c->n_positions) max_len = c->n_positions; /* the generator reports the overflow */
    if (max_len < 1) max_len = 1;
    plan->max_len = max_len;
    plan->slots = p->num_beams > p->num_return_sequences ? p->num_beams : p->num_return_sequences;
    plan->per_slot = maps_per_slot(c, st->vit.n_tokens);
    int rc = reserve_decoder(st, plan->slots, max_len, err, errlen);
    if (rc || !p->output_attentions) return rc;
    size_t need = (size_t)max_len * plan->slots * plan->per_slot;
    if (need > st->attn_history_cap) {
        free(st->attn_history);
        st->attn_history = malloc(need * sizeof *st->attn_history);
        st->attn_history_cap = st->attn_history ? need : 0;
        if (!st->attn_history) return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "out of memory for attention maps");
    }
    st->history_slots = plan->slots;
    return XCAP_OK;
}

/* Decodes one image whose cross K/V are already in st->dec; fills result (whose
 * encoder_attention, if any, is kept). */
static int decode_image(xcap_state *st, const xcap_params *p, const decode_plan *plan, xcap_result *result, char *err,
                        size_t errlen) {
    const xcap_model *m = st->m;
    const xcap_config *c = &m->cfg;
    xcap_gen_trace trace = {0};
    st->recording = p->output_attentions != 0;
    xcap_decoder_ops ops = {.ctx = st, .vocab_size = c->vocab_size, .step = step_cb, .reorder = reorder_cb};
    int32_t eos[XCAP_MAX_EOS];
    for (int i = 0; i < c->n_eos; i++) eos[i] = c->eos_ids[i];
    float *enc_attention = result->encoder_attention; /* xcap_generate empties result */
    int rc = xcap_generate_traced(&ops, p, c->decoder_start_token_id, eos, c->n_eos, c->n_positions, result,
                                  st->recording ? &trace : NULL, err, errlen);
    result->encoder_attention = enc_attention;
    if (rc) goto done;
    size_t per_slot = plan->per_slot;
    for (int i = 0; i < result->n_hyps; i++) {
        xcap_hypothesis *h = &result->hyps[i];
        if ((rc = tokenizer_decode(m->tok, h->tokens, h->n_tokens, 1, &h->text, err, errlen))) goto done;
        if (!st->recording) continue;
        /* Follow hypothesis i back through the beam history: its token t was chosen at step t
         * from slot trace.slots[i * stride + t], whatever slot it sits in at the end. */
        size_t n_maps = (size_t)h->n_tokens * per_slot;
        h->cross_attention = malloc((n_maps ? n_maps : 1) * sizeof(float));
        if (!h->cross_attention) {
            rc = xcap_fail(err, errlen, XCAP_ERR_NOMEM, "out of memory for attention maps");
            goto done;
        }
        for (int t = 0; t < h->n_tokens; t++) {
            int slot = trace.slots[(size_t)i * trace.stride + t];
            memcpy(h->cross_attention + (size_t)t * per_slot,
                   st->attn_history + ((size_t)t * st->history_slots + slot) * per_slot, per_slot * sizeof(float));
        }
    }
done:
    xcap_gen_trace_free(&trace);
    st->recording = 0;
    return rc;
}

/* Records image i's failure: its status, and err if it is the call's first failure (prefixed
 * with the image's index when the call has several images). */
static void image_failed(int *status, int i, int n, int rc, const char *msg, int *first_rc, char *err, size_t errlen) {
    status[i] = rc;
    if (*first_rc) return;
    *first_rc = rc;
    if (n > 1) xcap_fail(err, errlen, rc, "image %d: %s", i, msg);
    else xcap_fail(err, errlen, rc, "%s", msg);
}

/* Encodes up to ENCODER_BATCH images in one pass (spec §4 over stacked rows), then decodes them
 * one after another. Images that fail preprocessing are left out of the pass. */
static void caption_chunk(xcap_state *st, const xcap_image *imgs, int first, int count, int n, const xcap_params *p,
                          const decode_plan *plan, xcap_result *results, int *status, int *first_rc, char *err,
                          size_t errlen) {
    const xcap_model *m = st->m;
    const xcap_config *c = &m->cfg;
    size_t S = c->image_size, M = st->vit.n_tokens, image_len = 3 * S * S;
    size_t enc_maps = (size_t)c->enc_layers * c->enc_heads * M * M;
    int which[ENCODER_BATCH];       /* encoder row block b holds image which[b] */
    float *maps[ENCODER_BATCH];     /* its encoder_attention, when asked */
    char msg[512];
    int B = 0;
    for (int i = first; i < first + count; i++) {
        const xcap_image *im = &imgs[i];
        int rc;
        if (!im->rgb || im->width <= 0 || im->height <= 0)
            rc = xcap_fail(msg, sizeof msg, XCAP_ERR_ARG, "invalid image (%dx%d)", im->width, im->height);
        else
            rc = preprocess_image(im->rgb, im->width, im->height, &m->pre, st->pixels + B * image_len, msg, sizeof msg);
        if (!rc && p->output_attentions) {
            results[i].encoder_attention = malloc((enc_maps ? enc_maps : 1) * sizeof(float));
            if (!results[i].encoder_attention)
                rc = xcap_fail(msg, sizeof msg, XCAP_ERR_NOMEM, "out of memory for attention maps");
        }
        if (rc) {
            image_failed(status, i, n, rc, msg, first_rc, err, errlen);
            continue;
        }
        maps[B] = results[i].encoder_attention;
        which[B++] = i;
    }
    if (B == 0) return;
    vit_forward_batch(m, &st->vit, st->pixels, B, st->enc_out, NULL, p->output_attentions ? maps : NULL);
    if (m->dec.has_enc_to_dec)
        nn_linear_forward(st->memory, c->dec_hidden, st->enc_out, c->enc_hidden, &m->dec.enc_to_dec, (int)(B * M));
    for (int b = 0; b < B; b++) {
        int i = which[b];
        decoder_cross_kv(m, &st->dec, st->memory + b * M * c->dec_hidden);
        int rc = decode_image(st, p, plan, &results[i], msg, sizeof msg);
        if (rc) {
            xcap_result_free(&results[i]);
            image_failed(status, i, n, rc, msg, first_rc, err, errlen);
        }
    }
}

int xcap_caption_batch(xcap_state *st, const xcap_image *imgs, int n, const xcap_params *p, xcap_result *results,
                       int *status, char *err, size_t errlen) {
    if (n < 0 || (n > 0 && (!imgs || !results || !status)))
        return xcap_fail(err, errlen, XCAP_ERR_ARG, "invalid batch (%d images)", n);
    for (int i = 0; i < n; i++) {
        memset(&results[i], 0, sizeof results[i]);
        status[i] = XCAP_OK;
    }
    if (n == 0) return XCAP_OK;
    nn_set_threads(p->n_threads);
    decode_plan plan;
    int want = n < ENCODER_BATCH ? n : ENCODER_BATCH;
    int rc = plan_decoding(st, p, &plan, err, errlen);
    if (!rc) rc = reserve_encoder(st, want, err, errlen);
    if (rc) {
        for (int i = 0; i < n; i++) status[i] = rc;
        return rc;
    }
    int first_rc = XCAP_OK;
    for (int first = 0; first < n; first += st->enc_images) {
        int count = n - first < st->enc_images ? n - first : st->enc_images;
        caption_chunk(st, imgs, first, count, n, p, &plan, results, status, &first_rc, err, errlen);
    }
    return first_rc;
}

int xcap_caption(xcap_state *st, const uint8_t *rgb, int width, int height, const xcap_params *p,
                 xcap_result *result, char *err, size_t errlen) {
    xcap_image image = {.rgb = rgb, .width = width, .height = height};
    int status;
    return xcap_caption_batch(st, &image, 1, p, result, &status, err, errlen);
}

void xcap_result_free(xcap_result *r) {
    if (!r) return;
    for (int i = 0; i < r->n_hyps; i++) {
        free(r->hyps[i].tokens);
        free(r->hyps[i].text);
        free(r->hyps[i].cross_attention);
    }
    free(r->hyps);
    free(r->encoder_attention);
    r->hyps = NULL;
    r->n_hyps = 0;
    r->encoder_attention = NULL;
}
