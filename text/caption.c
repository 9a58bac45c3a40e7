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
    free(st->enc_out);
    free(st->pixels);
    free(st);
}

static int step_cb(void *ctx, const int32_t *tokens, int n_seq, int pos, float *logits, char *err, size_t errlen) {
    xcap_state *st = ctx;
    return decoder_step(st->m, &st->dec, tokens, n_seq, pos, logits, err, errlen);
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
static int encode_image(xcap_state *st, const uint8_t *rgb, int width, int height, char *err, size_t errlen) {
    const xcap_model *m = st->m;
    const xcap_config *c = &m->cfg;
    int rc = preprocess_image(rgb, width, height, &m->pre, st->pixels, err, errlen);
    if (rc) return rc;
    vit_forward(m, &st->vit, st->pixels, st->enc_out, NULL);
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
    int rc = reserve_decoder(st, slots, max_len, err, errlen);
    if (rc) return rc;
    if ((rc = encode_image(st, rgb, width, height, err, errlen))) return rc;

    xcap_decoder_ops ops = {.ctx = st, .vocab_size = c->vocab_size, .step = step_cb, .reorder = reorder_cb};
    int32_t eos[XCAP_MAX_EOS];
    for (int i = 0; i < c->n_eos; i++) eos[i] = c->eos_ids[i];
    rc = xcap_generate(&ops, p, c->decoder_start_token_id, eos, c->n_eos, c->n_positions, result, err, errlen);
    if (rc) {
        xcap_result_free(result);
        return rc;
    }
    for (int i = 0; i < result->n_hyps; i++) {
        xcap_hypothesis *h = &result->hyps[i];
        if ((rc = tokenizer_decode(m->tok, h->tokens, h->n_tokens, 1, &h->text, err, errlen))) {
            xcap_result_free(result);
            return rc;
        }
    }
    return XCAP_OK;
}

void xcap_result_free(xcap_result *r) {
    if (!r) return;
    for (int i = 0; i < r->n_hyps; i++) {
        free(r->hyps[i].tokens);
        free(r->hyps[i].text);
    }
    free(r->hyps);
    r->hyps = NULL;
    r->n_hyps = 0;
}
