/* The captioning pipeline behind the public API: pixels → encoder → memory → cross K/V once →
 * decoding loop (greedy, beam or sampling) over the GPT-2 decoder → text. */
#include <stdlib.h>
#include <string.h>

#include "nn/common.h"
#include "nn/kernels.h"
#include "text/decoder.h"
#include "text/generate.h"
#include "vision/preprocess.h"
#include "vision/vit.h"
#include "weights/model.h"

struct xcap_state {
    const xcap_model *m;
    vit_run vit;
    decoder_run dec; /* sized for the largest request so far */
    float *pixels;   /* [3, S, S] */
    float *enc_out;  /* [M, D] */
    float *memory;   /* [M, E]: enc_out projected to the decoder width (or enc_out itself) */
    /* With output_attentions: every step's cross-attention maps of every slot,
     * [step][slot][layer][head][M], recorded from decoder_run.cross_probs as decoding goes. */
    float *attn_history;
    size_t attn_history_cap; /* floats */
    int recording;           /* record in step_cb during this caption */
    int history_slots;
};

int xcap_state_new(const xcap_model *m, xcap_state **out, char *err, size_t errlen) {
    *out = NULL;
    xcap_state *st = calloc(1, sizeof *st);
    if (!st) return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "out of memory");
    st->m = m;
    const xcap_config *c = &m->cfg;
    size_t S = c->image_size, g = S / c->patch_size, M = g * g + 1;
    int rc = vit_run_init(&st->vit, c, err, errlen);
    if (rc) {
        free(st);
        return rc;
    }
    st->pixels = malloc(3 * S * S * sizeof(float));
    st->enc_out = malloc(M * c->enc_hidden * sizeof(float));
    st->memory = m->dec.enc_to_dec_w ? malloc(M * c->dec_hidden * sizeof(float)) : st->enc_out;
    if (!st->pixels || !st->enc_out || !st->memory) {
        xcap_state_free(st);
        return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "out of memory");
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

/* Image → memory tokens [M, E], then the cross-attention K/V of every layer (once per image). */
static int encode_image(xcap_state *st, const uint8_t *rgb, int width, int height, float *enc_attention, char *err,
                        size_t errlen) {
    const xcap_model *m = st->m;
    const xcap_config *c = &m->cfg;
    int rc = preprocess_image(rgb, width, height, &m->pre, st->pixels, err, errlen);
    if (rc) return rc;
    vit_forward(m, &st->vit, st->pixels, st->enc_out, NULL, enc_attention);
    int M = st->vit.n_tokens;
    if (m->dec.enc_to_dec_w)
        matmul_nk(st->memory, st->enc_out, m->dec.enc_to_dec_w, m->dec.enc_to_dec_b, M, c->enc_hidden, c->dec_hidden);
    decoder_cross_kv(m, &st->dec, st->memory);
    return XCAP_OK;
}

int xcap_caption(xcap_state *st, const uint8_t *rgb, int width, int height, const xcap_params *p,
                 xcap_result *result, char *err, size_t errlen) {
    memset(result, 0, sizeof *result);
    const xcap_model *m = st->m;
    const xcap_config *c = &m->cfg;
    if (!rgb || width <= 0 || height <= 0)
        return xcap_fail(err, errlen, XCAP_ERR_ARG, "invalid image (%dx%d)", width, height);
    if (p->num_beams < 1 || p->num_return_sequences < 1)
        return xcap_fail(err, errlen, XCAP_ERR_ARG, "num_beams and num_return_sequences must be at least 1");
    nn_set_threads(p->n_threads);
    int max_len = p->max_new_tokens > 0 ? 1 + p->max_new_tokens : p->max_length;
    if (max_len > c->n_positions) max_len = c->n_positions; /* the generator reports the overflow */
    if (max_len < 1) max_len = 1;
    int slots = p->num_beams > p->num_return_sequences ? p->num_beams : p->num_return_sequences;
    xcap_gen_trace trace = {0};
    int rc = reserve_decoder(st, slots, max_len, err, errlen);
    if (rc) return rc;
    int M = st->vit.n_tokens;
    size_t per_slot = maps_per_slot(c, M);
    st->recording = p->output_attentions != 0;
    if (st->recording) {
        size_t need = (size_t)max_len * slots * per_slot;
        if (need > st->attn_history_cap) {
            free(st->attn_history);
            st->attn_history = malloc(need * sizeof *st->attn_history);
            st->attn_history_cap = st->attn_history ? need : 0;
            if (!st->attn_history) return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "out of memory for attention maps");
        }
        st->history_slots = slots;
        size_t enc_n = (size_t)c->enc_layers * c->enc_heads * M * M;
        result->encoder_attention = malloc((enc_n ? enc_n : 1) * sizeof(float));
        if (!result->encoder_attention) return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "out of memory for attention maps");
    }
    if ((rc = encode_image(st, rgb, width, height, result->encoder_attention, err, errlen))) goto fail;

    xcap_decoder_ops ops = {.ctx = st, .vocab_size = c->vocab_size, .step = step_cb, .reorder = reorder_cb};
    int32_t eos[XCAP_MAX_EOS];
    for (int i = 0; i < c->n_eos; i++) eos[i] = c->eos_ids[i];
    float *enc_attention = result->encoder_attention; /* xcap_generate empties result */
    rc = xcap_generate_traced(&ops, p, c->decoder_start_token_id, eos, c->n_eos, c->n_positions, result,
                              st->recording ? &trace : NULL, err, errlen);
    result->encoder_attention = enc_attention;
    if (rc) goto fail;
    for (int i = 0; i < result->n_hyps; i++) {
        xcap_hypothesis *h = &result->hyps[i];
        if ((rc = tokenizer_decode(m->tok, h->tokens, h->n_tokens, 1, &h->text, err, errlen))) goto fail;
        if (!st->recording) continue;
        /* Follow hypothesis i back through the beam history: its token t was chosen at step t
         * from slot trace.slots[i * stride + t], whatever slot it sits in at the end. */
        size_t n_maps = (size_t)h->n_tokens * per_slot;
        h->cross_attention = malloc((n_maps ? n_maps : 1) * sizeof(float));
        if (!h->cross_attention) {
            rc = xcap_fail(err, errlen, XCAP_ERR_NOMEM, "out of memory for attention maps");
            goto fail;
        }
        for (int t = 0; t < h->n_tokens; t++) {
            int slot = trace.slots[(size_t)i * trace.stride + t];
            memcpy(h->cross_attention + (size_t)t * per_slot,
                   st->attn_history + ((size_t)t * st->history_slots + slot) * per_slot, per_slot * sizeof(float));
        }
    }
    xcap_gen_trace_free(&trace);
    st->recording = 0;
    return XCAP_OK;
fail:
    xcap_gen_trace_free(&trace);
    st->recording = 0;
    xcap_result_free(result);
    return rc;
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
