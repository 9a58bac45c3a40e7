/* Every stage of the forward pass against goldens written by the PyTorch reference
 * (weights/reference/make_goldens.py): pixel values, patch embeddings, each encoder layer, the
 * memory, cross-attention K/V per decoder layer, per-step logits and cross-attention maps. */
#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cmd/image.h"
#include "harness.h"
#include "nn/kernels.h"
#include "nn/linear.h"
#include "text/decoder.h"
#include "vision/preprocess.h"
#include "vision/vit.h"
#include "weights/model.h"

/* fp32 vs fp32 with different summation orders: well inside 1e-4 on these sizes. */
#define TOL 1e-4f

/* How close each compared quantity must be. */
typedef struct {
    float stage;  /* pixel values excepted: patch embeddings, encoder layers, memory */
    float cross;  /* cross-attention keys and values: within cross + cross_rel x |golden| */
    float cross_rel;
    float logits; /* every greedy step's logits */
    float maps;   /* cross-attention probabilities */
    int q8;       /* the decoder starts from the reference's memory */
} tolerances;

static const tolerances fp32_tol = {TOL, TOL, 0.0f, TOL, 1e-5f, 0};

/* A q8 model against the reference's q8 arithmetic (weights/reference/q8_reference.py). Given
 * the same input, a q8 layer gives the reference's result (tests/test_linear.c holds the
 * kernels to the formula bit for bit; the reference's fma is rounded twice). But an input that
 * differs by a rounding (fp32 sums in another order upstream) can round one 16-bit activation
 * to the neighbouring value: a step of 1/32767 of its block's largest magnitude, much larger
 * than the difference that caused it, so differences grow faster along the model than in fp32
 * (the expected size grows with the square root of step / difference). The keys and values are
 * computed from the reference's memory and kept in half precision, so they meet the fp32
 * tolerance but for a value whose fp32 sum lay next to a half-way point and rounded to the
 * neighbouring half (one half step: at most 2^-10 of it); the decoder then runs on its own for
 * up to 11 steps. Measured on these fixtures: stages <= 2.3e-4, logits
 * <= 8.3e-4, maps <= 2.0e-4; against the float model's goldens (the weights' own rounding)
 * the same copies' logits differ by 0.18-0.37. */
static const tolerances q8_tol = {4e-4f, TOL, 0x1p-10f, 2.5e-3f, 5e-4f, 1};

static tolerances tol;

static char *golden(const char *gdir, const char *name) {
    static char path[2100];
    snprintf(path, sizeof path, "%s/%s", gdir, name);
    return path;
}

static void check_image(const xcap_model *m, const char *model_name, const char *gdir, const char *image_path) {
    const xcap_config *c = &m->cfg;
    char err[512], what[2400];
    uint8_t *rgb;
    int w, h;
    if (image_load_file(image_path, &rgb, &w, &h, err, sizeof err) != 0) {
        CHECK(0, "%s: %s", image_path, err);
        return;
    }
    int S = c->image_size;
    float *pixels = malloc((size_t)3 * S * S * sizeof *pixels);
    int rc = preprocess_image(rgb, w, h, &m->pre, pixels, err, sizeof err);
    CHECK(rc == 0, "preprocess %s: %s", image_path, err);
    snprintf(what, sizeof what, "%s %s pixel_values", model_name, image_path);
    check_close_npy(what, pixels, (size_t)3 * S * S, golden(gdir, "pixel_values.npy"), 1e-6f);

    vit_run vr;
    vit_run_init(&vr, c, err, sizeof err);
    int M = vr.n_tokens, D = c->enc_hidden, E = c->dec_hidden, L = c->enc_layers;
    float **layers = calloc(L ? L : 1, sizeof *layers);
    for (int i = 0; i < L; i++) layers[i] = malloc((size_t)M * D * sizeof(float));
    float *enc = malloc((size_t)M * D * sizeof *enc), *memory = malloc((size_t)M * E * sizeof *memory);
    vit_forward(m, &vr, pixels, enc, layers, NULL);
    snprintf(what, sizeof what, "%s %s patch_embeddings", model_name, image_path);
    check_close_npy(what, vr.patch_embed, (size_t)vr.n_patches * D, golden(gdir, "patch_embeddings.npy"), tol.stage);
    for (int i = 0; i < L; i++) {
        char name[64];
        snprintf(name, sizeof name, "enc_layer_%d.npy", i);
        snprintf(what, sizeof what, "%s %s encoder layer %d", model_name, image_path, i);
        check_close_npy(what, layers[i], (size_t)M * D, golden(gdir, name), tol.stage);
    }
    if (m->dec.has_enc_to_dec) nn_linear_forward(memory, E, enc, D, &m->dec.enc_to_dec, M);
    else memcpy(memory, enc, (size_t)M * D * sizeof *memory);
    snprintf(what, sizeof what, "%s %s memory", model_name, image_path);
    check_close_npy(what, memory, (size_t)M * E, golden(gdir, "memory.npy"), tol.stage);
    if (tol.q8) { /* the decoder starts from the reference's memory (see q8_tol) */
        npy_array gm;
        if (npy_load(golden(gdir, "memory.npy"), &gm) == 0) {
            memcpy(memory, gm.data, (size_t)M * E * sizeof *memory);
            npy_free(&gm);
        }
    }

    /* Decoder: cross K/V once, then feed the reference's own greedy choices step by step. */
    npy_array gl, ga;
    if (npy_load(golden(gdir, "greedy_logits.npy"), &gl) != 0 || npy_load(golden(gdir, "greedy_cross_attn.npy"), &ga) != 0) {
        CHECK(0, "%s: greedy goldens missing", gdir);
        goto done;
    }
    /* Logits may be stored for fewer steps than the maps (a 50 257-wide row per step is big);
     * past them the decoder follows its own argmax, which test_decode checks against the
     * reference's tokens. */
    int V = c->vocab_size, H = c->dec_heads, DL = c->dec_layers;
    int steps = (int)ga.shape[0], logit_steps = (int)gl.shape[0];
    CHECK(gl.shape[1] == V && logit_steps <= steps && ga.shape[1] == DL && ga.shape[2] == H && ga.shape[3] == M,
          "%s: golden shapes", gdir);
    decoder_run dr;
    rc = decoder_run_init(&dr, c, 1, steps + 1, err, sizeof err);
    CHECK(rc == 0, "decoder_run_init: %s", err);
    decoder_cross_kv(m, &dr, memory);
    float *cross_k = malloc((size_t)M * E * sizeof *cross_k), *cross_v = malloc((size_t)M * E * sizeof *cross_v);
    for (int l = 0; l < DL; l++) {
        char name[64];
        decoder_cross_kv_read(m, &dr, 0, l, cross_k, cross_v);
        snprintf(name, sizeof name, "cross_k_%d.npy", l);
        snprintf(what, sizeof what, "%s %s cross K layer %d", model_name, image_path, l);
        check_close_npy_rel(what, cross_k, (size_t)M * E, golden(gdir, name), tol.cross, tol.cross_rel);
        snprintf(name, sizeof name, "cross_v_%d.npy", l);
        snprintf(what, sizeof what, "%s %s cross V layer %d", model_name, image_path, l);
        check_close_npy_rel(what, cross_v, (size_t)M * E, golden(gdir, name), tol.cross, tol.cross_rel);
    }
    free(cross_k), free(cross_v);
    float *logits = malloc((size_t)V * sizeof *logits), *maps = malloc((size_t)DL * H * M * sizeof *maps);
    int32_t token = c->decoder_start_token_id;
    float worst_logit = 0, worst_attn = 0, worst_row = 0;
    for (int t = 0; t < steps; t++) {
        rc = decoder_step(m, &dr, &token, 1, t, logits, err, sizeof err);
        CHECK(rc == 0, "decoder_step %d: %s", t, err);
        const float *ref = t < logit_steps ? (const float *)gl.data + (size_t)t * V : logits;
        worst_logit = fmaxf(worst_logit, max_abs_diff(logits, ref, V));
        for (int l = 0; l < DL; l++) memcpy(maps + (size_t)l * H * M, dr.cross_probs + (size_t)l * dr.max_slots * H * M,
                                            (size_t)H * M * sizeof *maps);
        worst_attn = fmaxf(worst_attn, max_abs_diff(maps, (const float *)ga.data + (size_t)t * DL * H * M, (size_t)DL * H * M));
        for (int r = 0; r < DL * H; r++) {
            double s = 0;
            for (int j = 0; j < M; j++) s += maps[(size_t)r * M + j];
            worst_row = fmaxf(worst_row, (float)fabs(s - 1.0));
        }
        int best = 0; /* the reference's greedy choice (where stored) feeds the next step */
        for (int v = 1; v < V; v++)
            if (ref[v] > ref[best]) best = v;
        token = best;
    }
    CHECK(worst_logit <= tol.logits, "%s %s: logits differ by %g over %d steps", model_name, image_path, worst_logit, steps);
    CHECK(worst_attn <= tol.maps, "%s %s: cross-attention maps differ by %g", model_name, image_path, worst_attn);
    CHECK(worst_row <= 1e-5f, "%s %s: a cross-attention row sums to 1 +- %g", model_name, image_path, worst_row);
    free(logits);
    free(maps);
    decoder_run_free(&dr);
    npy_free(&gl);
    npy_free(&ga);
done:
    for (int i = 0; i < L; i++) free(layers[i]);
    free(layers);
    free(enc);
    free(memory);
    vit_run_free(&vr);
    free(pixels);
    free(rgb);
}

/* Goldens of `golden_model` checked on the checkpoint `model_name` (variants that store the
 * same weights differently share them). */
static void check_dir(const char *dir, const char *model_name, const char *golden_model) {
    char groot[512], err[512];
    snprintf(groot, sizeof groot, "tests/fixtures/goldens/%s", golden_model);
    xcap_model *m;
    int rc = xcap_model_load(dir, &m, err, sizeof err);
    CHECK(rc == XCAP_OK, "load %s: %s", dir, err);
    if (rc) return;
    DIR *d = opendir(groot);
    CHECK(d != NULL, "no goldens in %s", groot);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char gdir[1024], image[1024];
        struct stat sb;
        snprintf(gdir, sizeof gdir, "%s/%s", groot, e->d_name);
        if (stat(gdir, &sb) != 0 || !S_ISDIR(sb.st_mode)) continue;
        snprintf(image, sizeof image, "tests/fixtures/images/%s.png", e->d_name);
        check_image(m, model_name, gdir, image);
        n++;
    }
    if (d) closedir(d);
    CHECK(n > 0, "%s: no golden images", groot);
    xcap_model_free(m);
}

static void check_model(const char *model_name, const char *golden_model) {
    char dir[512];
    snprintf(dir, sizeof dir, "tests/fixtures/models/%s", model_name);
    check_dir(dir, model_name, golden_model);
}

/* An `xcap_quantize --type q8` copy of a fixture model against goldens/<model>-q8. */
static void check_q8(const char *model_name) {
    char src[512], root[] = "/tmp/xcap_test_q8_XXXXXX", dir[600], goldens[600], name[600], err[512];
    CHECK(mkdtemp(root) != NULL, "mkdtemp");
    snprintf(src, sizeof src, "tests/fixtures/models/%s", model_name);
    snprintf(dir, sizeof dir, "%s/model", root);
    int rc = xcap_quantize(src, dir, XCAP_QUANT_Q8, err, sizeof err);
    CHECK(rc == XCAP_OK, "quantize %s: %s", src, err);
    snprintf(goldens, sizeof goldens, "%s-q8", model_name);
    snprintf(name, sizeof name, "%s q8", model_name);
    tol = q8_tol;
    if (rc == XCAP_OK) check_dir(dir, name, goldens);
    tol = fp32_tol;
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        char path[1200];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (e->d_name[0] != '.') remove(path);
    }
    if (d) closedir(d);
    rmdir(dir);
    rmdir(root);
}

int main(void) {
    nn_set_threads(2);
    tol = fp32_tol;
    check_model("tiny", "tiny");
    check_model("tiny-f16", "tiny"); /* tiny's weights are exact in F16 */
    check_model("tiny-bf16", "tiny-bf16");
    check_model("tiny-lmhead", "tiny");
    check_model("tiny-nowte", "tiny");
    check_model("tiny-tokjson", "tiny");
    check_model("wide", "wide");
    check_model("gpt2vocab", "gpt2vocab");
    check_q8("tiny");
    check_q8("wide");
    return harness_finish("test_forward");
}
