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
    /* One lock-step decoder call: the rows of every image still generating. */
    int32_t *row_tokens;
    int *row_slot, *row_image;
    float *logits; /* [rows][V] */
    int rows_cap;
    /* With output_attentions: every step's cross-attention maps of every slot of every image,
     * [image][step][slot][layer][head][M], recorded from decoder_run.cross_probs as decoding goes. */
    float *attn_history;
    size_t attn_history_cap; /* floats */
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
    free(st->row_tokens);
    free(st->row_slot);
    free(st->row_image);
    free(st->logits);
    free(st->enc_out);
    free(st->pixels);
    free(st);
}

/* Floats of one slot's cross-attention maps at one step: layers × heads × memory tokens. */
static size_t maps_per_slot(const xcap_config *c, int n_memory) {
    return (size_t)c->dec_layers * c->dec_heads * n_memory;
}

/* Makes sure the decoder caches hold `slots` sequences of `positions` tokens over `images`
 * images. Allocation happens here, before decoding starts, never inside the token loop. */
static int reserve_decoder(xcap_state *st, int slots, int positions, int images, char *err, size_t errlen) {
    decoder_run *d = &st->dec;
    if (d->self_k && d->max_slots >= slots && d->max_pos >= positions && d->max_images >= images) return XCAP_OK;
    if (d->self_k) {
        if (d->max_slots > slots) slots = d->max_slots;
        if (d->max_pos > positions) positions = d->max_pos;
        if (d->max_images > images) images = d->max_images;
    }
    decoder_run_free(d);
    return decoder_run_init_images(d, &st->m->cfg, slots, positions, images, err, errlen);
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

/* The settings every image of a call shares, checked and sized for once per call. */
typedef struct {
    int max_len;     /* positions a sequence can reach (start token counted) */
    int slots;       /* cache slots per image: its beams */
    int images;      /* images decoded in lock step: one encoder pass */
    size_t per_slot; /* floats of one slot's cross-attention maps at one step */
} decode_plan;

/* Where image b's maps from slot s at step t are kept. */
static float *history_at(xcap_state *st, const decode_plan *plan, int b, int t, int s) {
    return st->attn_history + (((size_t)b * plan->max_len + t) * plan->slots + s) * plan->per_slot;
}

/* Checks the parameters and sizes the decoder caches, the step buffers and the attention history
 * for `images` images in lock step, so that nothing is allocated once decoding starts. */
static int plan_decoding(xcap_state *st, const xcap_params *p, int images, decode_plan *plan, char *err,
                         size_t errlen) {
    const xcap_config *c = &st->m->cfg;
    if (p->num_beams < 1 || p->num_return_sequences < 1)
        return xcap_fail(err, errlen, XCAP_ERR_ARG, "num_beams and num_return_sequences must be at least 1");
    int max_len = p->max_new_tokens > 0 ? 1 + p->max_new_tokens : p->max_length;
    if (max_len > c->n_positions) max_len = c->n_positions; /* the generator reports the overflow */
    if (max_len < 1) max_len = 1;
    plan->max_len = max_len;
    plan->slots = p->num_beams > p->num_return_sequences ? p->num_beams : p->num_return_sequences;
    plan->images = images;
    plan->per_slot = maps_per_slot(c, st->vit.n_tokens);
    int rows = plan->slots * images;
    int rc = reserve_decoder(st, rows, max_len, images, err, errlen);
    if (rc) return rc;
    if (rows > st->rows_cap) {
        int32_t *tokens = malloc((size_t)rows * sizeof *tokens);
        int *slot = malloc((size_t)rows * sizeof *slot), *image = malloc((size_t)rows * sizeof *image);
        float *logits = malloc((size_t)rows * c->vocab_size * sizeof *logits);
        if (!tokens || !slot || !image || !logits) {
            free(tokens), free(slot), free(image), free(logits);
            return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "out of memory for %d decoder rows", rows);
        }
        free(st->row_tokens), free(st->row_slot), free(st->row_image), free(st->logits);
        st->row_tokens = tokens, st->row_slot = slot, st->row_image = image, st->logits = logits;
        st->rows_cap = rows;
    }
    if (!p->output_attentions) return XCAP_OK;
    size_t need = (size_t)images * max_len * plan->slots * plan->per_slot;
    if (need > st->attn_history_cap) {
        free(st->attn_history);
        st->attn_history = malloc(need * sizeof *st->attn_history);
        st->attn_history_cap = st->attn_history ? need : 0;
        if (!st->attn_history) return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "out of memory for attention maps");
    }
    return XCAP_OK;
}

/* Turns image b's finished generation into its result: texts, and with attention maps each
 * hypothesis's maps followed back through the beam history (its token t was chosen at step t
 * from slot trace.slots[h * stride + t], whatever slot it sits in at the end). */
static int finish_image(xcap_state *st, const decode_plan *plan, int recording, int b, xcap_gen *gen,
                        xcap_result *result, char *err, size_t errlen) {
    xcap_gen_trace trace = {0};
    float *enc_attention = result->encoder_attention; /* xcap_gen_end empties result */
    result->encoder_attention = NULL;
    int rc = xcap_gen_end(gen, result, recording ? &trace : NULL, err, errlen);
    result->encoder_attention = enc_attention;
    for (int h = 0; !rc && h < result->n_hyps; h++) {
        xcap_hypothesis *hyp = &result->hyps[h];
        rc = tokenizer_decode(st->m->tok, hyp->tokens, hyp->n_tokens, 1, &hyp->text, err, errlen);
        if (rc || !recording) continue;
        size_t n_maps = (size_t)hyp->n_tokens * plan->per_slot;
        hyp->cross_attention = malloc((n_maps ? n_maps : 1) * sizeof(float));
        if (!hyp->cross_attention) {
            rc = xcap_fail(err, errlen, XCAP_ERR_NOMEM, "out of memory for attention maps");
            break;
        }
        for (int t = 0; t < hyp->n_tokens; t++)
            memcpy(hyp->cross_attention + (size_t)t * plan->per_slot,
                   history_at(st, plan, b, t, trace.slots[(size_t)h * trace.stride + t]), plan->per_slot * sizeof(float));
    }
    xcap_gen_trace_free(&trace);
    return rc;
}

/* Decodes the B images of one encoder pass in lock step: at every position one decoder call
 * runs the beams of all images still generating (image b's beams in cache slots
 * b·slots .. b·slots + slots - 1), so each weight matrix is read once per step for all of them.
 * Each image's generator sees exactly the logits it would see alone (nn/linear.h), so the
 * results equal one xcap_caption per image. An image whose generation fails drops out; the
 * others go on. Returns through status/first_rc like caption_chunk. */
static void decode_lockstep(xcap_state *st, const xcap_params *p, const decode_plan *plan, int B, const int *which,
                            xcap_result *results, int *status, int n, int *first_rc, char *err, size_t errlen) {
    const xcap_model *m = st->m;
    const xcap_config *c = &m->cfg;
    const int V = c->vocab_size, S = plan->slots, recording = p->output_attentions != 0;
    xcap_gen *gen[ENCODER_BATCH] = {0};
    int first_row[ENCODER_BATCH], n_rows_of[ENCODER_BATCH];
    char msg[512];
    int32_t eos[XCAP_MAX_EOS];
    for (int e = 0; e < c->n_eos; e++) eos[e] = c->eos_ids[e];
    for (int b = 0; b < B; b++) {
        int rc = xcap_gen_begin(&gen[b], p, V, c->decoder_start_token_id, eos, c->n_eos, c->n_positions, msg, sizeof msg);
        if (rc) {
            gen[b] = NULL;
            xcap_result_free(&results[which[b]]);
            image_failed(status, which[b], n, rc, msg, first_rc, err, errlen);
        }
    }
    for (;;) {
        /* Gather the rows every running generation wants at this position. */
        int rows = 0, pos = -1;
        for (int b = 0; b < B; b++) {
            const int32_t *tokens;
            int n_seq, at;
            n_rows_of[b] = 0;
            if (!gen[b] || !xcap_gen_want(gen[b], &tokens, &n_seq, &at)) continue;
            pos = at; /* every generation started together and advances one position per step */
            first_row[b] = rows;
            n_rows_of[b] = n_seq;
            for (int i = 0; i < n_seq; i++, rows++) {
                st->row_tokens[rows] = tokens[i];
                st->row_slot[rows] = b * S + i;
                st->row_image[rows] = b;
            }
        }
        if (rows == 0) break;
        int rc = decoder_step_rows(m, &st->dec, st->row_tokens, st->row_slot, st->row_image, rows, pos, st->logits, msg,
                                   sizeof msg);
        for (int b = 0; b < B; b++) {
            if (!n_rows_of[b]) continue;
            if (!rc && recording) {
                /* Keep this step's maps, slot by slot, as the attention kernel left them. */
                size_t HM = (size_t)c->dec_heads * st->dec.n_memory;
                for (int i = 0; i < n_rows_of[b]; i++)
                    for (int l = 0; l < c->dec_layers; l++)
                        memcpy(history_at(st, plan, b, pos, i) + l * HM,
                               st->dec.cross_probs + ((size_t)l * st->dec.max_slots + b * S + i) * HM, HM * sizeof(float));
            }
            const int *src = NULL;
            int image_rc = rc ? rc : xcap_gen_feed(gen[b], st->logits + (size_t)first_row[b] * V, &src, msg, sizeof msg);
            if (image_rc) {
                xcap_gen_free(gen[b]);
                gen[b] = NULL;
                xcap_result_free(&results[which[b]]);
                image_failed(status, which[b], n, image_rc, msg, first_rc, err, errlen);
            } else if (src) {
                decoder_reorder_slots(m, &st->dec, b * S, src, n_rows_of[b], pos);
            }
        }
    }
    for (int b = 0; b < B; b++) {
        if (!gen[b]) continue;
        int rc = finish_image(st, plan, recording, b, gen[b], &results[which[b]], msg, sizeof msg);
        xcap_gen_free(gen[b]);
        if (rc) {
            xcap_result_free(&results[which[b]]);
            image_failed(status, which[b], n, rc, msg, first_rc, err, errlen);
        }
    }
}

/* Encodes up to ENCODER_BATCH images in one pass (spec §4 over stacked rows), then decodes them
 * in lock step. Images that fail preprocessing are left out of the pass. */
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
        if (im->pixels)
            rc = (memcpy(st->pixels + B * image_len, im->pixels, image_len * sizeof(float)), XCAP_OK);
        else
            rc = xcap_preprocess(m, im->rgb, im->width, im->height, st->pixels + B * image_len, msg, sizeof msg);
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
    for (int b = 0; b < B; b++) decoder_cross_kv_image(m, &st->dec, b, st->memory + b * M * c->dec_hidden);
    decode_lockstep(st, p, plan, B, which, results, status, n, first_rc, err, errlen);
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
    int rc = reserve_encoder(st, want, err, errlen);
    if (!rc) rc = plan_decoding(st, p, st->enc_images, &plan, err, errlen);
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

size_t xcap_pixel_count(const xcap_model *m) { return (size_t)3 * m->cfg.image_size * m->cfg.image_size; }

int xcap_preprocess(const xcap_model *m, const uint8_t *rgb, int width, int height, float *pixels, char *err,
                    size_t errlen) {
    if (!rgb || width <= 0 || height <= 0)
        return xcap_fail(err, errlen, XCAP_ERR_ARG, "invalid image (%dx%d)", width, height);
    return preprocess_image(rgb, width, height, &m->pre, pixels, err, errlen);
}

int xcap_caption(xcap_state *st, const uint8_t *rgb, int width, int height, const xcap_params *p,
                 xcap_result *result, char *err, size_t errlen) {
    xcap_image image = {.rgb = rgb, .width = width, .height = height, .pixels = NULL};
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
