/* xcap_caption_batch against one xcap_caption call per image: the same tokens and text, and the
 * same scores and attention maps to the last bit (nn/linear.h computes a row the same way
 * whatever else is in the batch), for
 * greedy and beam search, on fixture images of different sizes, with more images than one
 * encoder pass takes, with attention maps, and with a bad image among good ones. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/image.h"
#include "harness.h"
#include "xcap.h"

static const char *stems[] = {"circles_200x150", "gradient_32x32", "rgba_40x24",    "noise_17x23",
                              "checker_33x33",   "stripes_100x37", "diag_77x77",    "palette_50x50",
                              "tall_13x71",      "wide_300x20",    "one_pixel_1x1", "grey_7x200"};
enum { N_STEMS = sizeof stems / sizeof *stems, MAX_IMAGES = 40 };

/* No tolerance: batching must not change a single bit (`xcap batch` shards and resumed runs
 * concatenate to exactly the records of one run). */
static const float SCORE_TOL = 0.0f;
static const float SUM_REL_TOL = 0.0f;
static const float MAPS_TOL = 0.0f;

typedef struct {
    xcap_image img[MAX_IMAGES];
    uint8_t *owned[N_STEMS];
} image_set;

static int load_images(image_set *set) {
    for (int i = 0; i < N_STEMS; i++) {
        char path[256], err[512];
        snprintf(path, sizeof path, "tests/fixtures/images/%s.png", stems[i]);
        int rc = image_load_file(path, &set->owned[i], &set->img[i].width, &set->img[i].height, err, sizeof err);
        CHECK(rc == 0, "%s", err);
        if (rc) return -1;
        set->img[i].rgb = set->owned[i];
    }
    return 0;
}

static void free_images(image_set *set) {
    for (int i = 0; i < N_STEMS; i++) free(set->owned[i]);
}

/* Image i of a batch of n made from the fixture images in turn; bad_at (if >= 0) is a 0x0. */
static xcap_image pick(const image_set *set, int i, int bad_at) {
    if (i == bad_at) return (xcap_image){.rgb = NULL, .width = 0, .height = 0};
    return set->img[i % N_STEMS];
}

static void compare(const char *what, int i, const xcap_result *want, const xcap_result *got, int maps_size,
                    int enc_maps_size) {
    CHECK(got->n_hyps == want->n_hyps, "%s image %d: %d hypotheses, want %d", what, i, got->n_hyps, want->n_hyps);
    for (int h = 0; h < want->n_hyps && h < got->n_hyps; h++) {
        const xcap_hypothesis *a = &want->hyps[h], *b = &got->hyps[h];
        int same = a->n_tokens == b->n_tokens && !memcmp(a->tokens, b->tokens, (size_t)a->n_tokens * sizeof *a->tokens);
        CHECK(same, "%s image %d hyp %d: tokens differ (%d vs %d tokens)", what, i, h, b->n_tokens, a->n_tokens);
        CHECK(a->text && b->text && !strcmp(a->text, b->text), "%s image %d hyp %d: text \"%s\" vs \"%s\"", what, i, h,
              b->text ? b->text : "(null)", a->text ? a->text : "(null)");
        CHECK(fabsf(a->score - b->score) <= SCORE_TOL, "%s image %d hyp %d: score %.9g vs %.9g", what, i, h, b->score,
              a->score);
        CHECK(fabsf(a->sum_logprob - b->sum_logprob) <= SUM_REL_TOL * fmaxf(1.0f, fabsf(a->sum_logprob)), "%s image %d hyp %d: sum_logprob %.9g vs %.9g", what,
              i, h, b->sum_logprob, a->sum_logprob);
        if (maps_size && same) {
            CHECK(b->cross_attention != NULL, "%s image %d: no cross-attention maps", what, i);
            if (b->cross_attention && a->cross_attention) {
                float d = max_abs_diff(a->cross_attention, b->cross_attention, (size_t)a->n_tokens * maps_size);
                CHECK(d <= MAPS_TOL, "%s image %d hyp %d: cross-attention differs by %g", what, i, h, d);
            }
        }
    }
    if (enc_maps_size) {
        CHECK(got->encoder_attention != NULL, "%s image %d: no encoder maps", what, i);
        if (got->encoder_attention && want->encoder_attention) {
            float d = max_abs_diff(want->encoder_attention, got->encoder_attention, (size_t)enc_maps_size);
            CHECK(d <= MAPS_TOL, "%s image %d: encoder attention differs by %g", what, i, d);
        }
    }
}

/* Captions n images one by one on `single` and all at once on `batched`, and compares. */
static void check_batch(const char *what, const xcap_model *m, xcap_state *single, xcap_state *batched,
                        const image_set *set, int n, int bad_at, const xcap_params *p) {
    xcap_model_info info = xcap_model_get_info(m);
    int maps = p->output_attentions ? info.dec_layers * info.dec_heads * info.n_memory : 0;
    int enc_maps = p->output_attentions ? info.enc_layers * info.enc_heads * info.n_memory * info.n_memory : 0;
    xcap_image imgs[MAX_IMAGES];
    xcap_result want[MAX_IMAGES], got[MAX_IMAGES];
    int status[MAX_IMAGES];
    char err[512];
    for (int i = 0; i < n; i++) {
        imgs[i] = pick(set, i, bad_at);
        int rc = xcap_caption(single, imgs[i].rgb, imgs[i].width, imgs[i].height, p, &want[i], err, sizeof err);
        CHECK(rc == (i == bad_at ? XCAP_ERR_ARG : XCAP_OK), "%s: single image %d: rc %d: %s", what, i, rc, err);
    }
    int rc = xcap_caption_batch(batched, imgs, n, p, got, status, err, sizeof err);
    CHECK(rc == (bad_at >= 0 ? XCAP_ERR_ARG : XCAP_OK), "%s: batch rc %d: %s", what, rc, err);
    if (bad_at >= 0) {
        char expect[64];
        snprintf(expect, sizeof expect, "image %d: invalid image (0x0)", bad_at);
        CHECK(!strcmp(err, expect), "%s: message \"%s\", want \"%s\"", what, err, expect);
    }
    for (int i = 0; i < n; i++) {
        if (i == bad_at) {
            CHECK(status[i] == XCAP_ERR_ARG, "%s: bad image %d has status %d", what, i, status[i]);
            CHECK(got[i].n_hyps == 0 && !got[i].hyps && !got[i].encoder_attention, "%s: bad image %d has a result",
                  what, i);
            continue;
        }
        CHECK(status[i] == XCAP_OK, "%s: image %d status %d", what, i, status[i]);
        compare(what, i, &want[i], &got[i], maps, enc_maps);
    }
    for (int i = 0; i < n; i++) {
        xcap_result_free(&want[i]);
        xcap_result_free(&got[i]);
    }
}

static void check_arguments(xcap_state *st, const image_set *set, const xcap_params *defaults) {
    xcap_result results[2];
    int status[2] = {-1, -1};
    char err[512] = "";
    CHECK(xcap_caption_batch(st, NULL, 0, defaults, NULL, NULL, err, sizeof err) == XCAP_OK, "empty batch: %s", err);
    CHECK(xcap_caption_batch(st, NULL, 2, defaults, results, status, err, sizeof err) == XCAP_ERR_ARG,
          "NULL images accepted");
    CHECK(xcap_caption_batch(st, set->img, -1, defaults, results, status, err, sizeof err) == XCAP_ERR_ARG,
          "negative count accepted");
    xcap_params p = *defaults;
    p.num_beams = 0;
    int rc = xcap_caption_batch(st, set->img, 2, &p, results, status, err, sizeof err);
    CHECK(rc == XCAP_ERR_ARG && status[0] == XCAP_ERR_ARG && status[1] == XCAP_ERR_ARG,
          "num_beams 0: rc %d, status %d %d", rc, status[0], status[1]);
    CHECK(results[0].n_hyps == 0 && results[1].n_hyps == 0, "num_beams 0 left results");
    /* Every image bad: each gets its status, none a result. */
    xcap_image bad[2] = {{NULL, 0, 0, NULL}, {set->img[0].rgb, -3, 5, NULL}};
    rc = xcap_caption_batch(st, bad, 2, defaults, results, status, err, sizeof err);
    CHECK(rc == XCAP_ERR_ARG && status[0] == XCAP_ERR_ARG && status[1] == XCAP_ERR_ARG,
          "all bad: rc %d, status %d %d", rc, status[0], status[1]);
    CHECK(!strcmp(err, "image 0: invalid image (0x0)"), "all bad: message \"%s\"", err);
    xcap_result_free(&results[0]);
    xcap_result_free(&results[1]);
}

static void check_model(const char *name, const image_set *set) {
    char dir[256], err[512];
    snprintf(dir, sizeof dir, "tests/fixtures/models/%s", name);
    xcap_model *m;
    int rc = xcap_model_load(dir, &m, err, sizeof err);
    CHECK(rc == 0, "load %s: %s", dir, err);
    if (rc) return;
    xcap_state *single, *batched;
    CHECK(xcap_state_new(m, &single, err, sizeof err) == 0, "state: %s", err);
    CHECK(xcap_state_new(m, &batched, err, sizeof err) == 0, "state: %s", err);
    xcap_params greedy = xcap_model_params(m);
    greedy.n_threads = 1;
    greedy.num_beams = 1;
    greedy.do_sample = 0;
    xcap_params beam = greedy;
    beam.num_beams = 4;
    beam.num_return_sequences = 3;
    xcap_params maps = beam;
    maps.output_attentions = 1;
    char what[128];
    snprintf(what, sizeof what, "%s greedy", name);
    check_batch(what, m, single, batched, set, N_STEMS, -1, &greedy);
    snprintf(what, sizeof what, "%s beam 4", name);
    check_batch(what, m, single, batched, set, N_STEMS, -1, &beam);
    /* More images than one encoder pass (16), with a 0x0 image in the second pass. */
    snprintf(what, sizeof what, "%s greedy x%d", name, MAX_IMAGES);
    check_batch(what, m, single, batched, set, MAX_IMAGES, 21, &greedy);
    snprintf(what, sizeof what, "%s beam 4 x%d", name, MAX_IMAGES);
    check_batch(what, m, single, batched, set, MAX_IMAGES, 3, &beam);
    snprintf(what, sizeof what, "%s beam 4 attention maps", name);
    check_batch(what, m, single, batched, set, 5, 2, &maps);
    /* Images handed over as xcap_preprocess output (what `xcap batch` does on its decoding
     * threads) caption exactly like their RGB through xcap_caption. */
    image_set pre = *set;
    float *pixels[N_STEMS];
    for (int i = 0; i < N_STEMS; i++) {
        pixels[i] = malloc(xcap_pixel_count(m) * sizeof(float));
        rc = xcap_preprocess(m, set->img[i].rgb, set->img[i].width, set->img[i].height, pixels[i], err, sizeof err);
        CHECK(rc == 0, "preprocess %s: %s", stems[i], err);
        pre.img[i].pixels = pixels[i];
    }
    snprintf(what, sizeof what, "%s beam 4 from preprocessed pixels", name);
    check_batch(what, m, single, batched, &pre, N_STEMS, -1, &beam);
    for (int i = 0; i < N_STEMS; i++) free(pixels[i]);
    /* One image through the batch call: exactly xcap_caption's message, no index. */
    xcap_result r;
    int status;
    xcap_image bad = {NULL, 0, 0, NULL};
    rc = xcap_caption_batch(batched, &bad, 1, &greedy, &r, &status, err, sizeof err);
    CHECK(rc == XCAP_ERR_ARG && !strcmp(err, "invalid image (0x0)"), "single bad image: %d \"%s\"", rc, err);
    check_arguments(batched, set, &greedy);
    xcap_state_free(single);
    xcap_state_free(batched);
    xcap_model_free(m);
}

int main(void) {
    image_set set = {0};
    if (load_images(&set) == 0) {
        check_model("tiny", &set);
        check_model("wide", &set);
    }
    free_images(&set);
    return harness_finish("test_caption_batch");
}
