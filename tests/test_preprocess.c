/* vision/preprocess against Pillow and transformers: every resize golden equal to Pillow's
 * uint8 output, pixel values after rescale/normalize within 1e-6, preprocessor_config.json
 * variants and refusals, the fast resize against the naive one, and the resize time.
 * Goldens: weights/reference/make_resize_goldens.py (tests/fixtures/resize/). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "vision/preprocess.h"
#include "xcap.h"

#define RESIZE_DIR "tests/fixtures/resize/"

static const char *filter_names[] = {"nearest", "lanczos", "bilinear", "bicubic", "box", "hamming"};

typedef struct {
    uint8_t *px;
    int w, h, c;
} image;

/* The integer pattern make_resize_goldens.py's generated_image() builds. */
static image generated(int w, int h, int c) {
    image im = {malloc((size_t)w * h * c), w, h, c};
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int ch = 0; ch < c; ch++) {
                long v = (x * 3L + y * 2L + ch * 70L + ((x / 7 + y / 5) % 2) * 60L +
                          ((long)x * x + (long)y * 13 * ch) % 23) % 256;
                im.px[((size_t)y * w + x) * c + ch] = (uint8_t)v;
            }
    return im;
}

static int load_source(const char *spec, image *im) {
    memset(im, 0, sizeof *im);
    if (strncmp(spec, "gen:", 4) == 0) {
        int w, h, c;
        if (sscanf(spec, "gen:%d:%d:%d", &w, &h, &c) != 3) return 0;
        *im = generated(w, h, c);
        return 1;
    }
    char path[512];
    snprintf(path, sizeof path, RESIZE_DIR "%s", spec);
    npy_array a;
    if (npy_load(path, &a) != 0) return 0;
    if (a.dtype != 'u' || a.ndim != 3) {
        npy_free(&a);
        return 0;
    }
    im->px = a.data, im->h = (int)a.shape[0], im->w = (int)a.shape[1], im->c = (int)a.shape[2];
    return 1;
}

static uint64_t fnv1a64(const uint8_t *p, size_t n) {
    uint64_t h = 0xCBF29CE484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001B3ull;
    return h;
}

/* Each line of cases.txt: resize a source with one filter, compare with Pillow exactly. */
static void test_resize_goldens(void) {
    FILE *f = fopen(RESIZE_DIR "cases.txt", "r");
    CHECK(f != NULL, "missing " RESIZE_DIR "cases.txt");
    if (!f) return;
    char line[512], src_spec[128], golden[256], last_spec[128] = "";
    image src = {0};
    int n_cases = 0, n_full = 0, n_hash = 0, per_filter[6] = {0};
    while (fgets(line, sizeof line, f)) {
        int filter, w, h;
        if (line[0] == '#' ||
            sscanf(line, "%127s %d %d %d %255s", src_spec, &filter, &w, &h, golden) != 5)
            continue;
        if (strcmp(src_spec, last_spec) != 0) {
            free(src.px);
            int ok = load_source(src_spec, &src);
            CHECK(ok, "cannot load source %s", src_spec);
            if (!ok) break;
            snprintf(last_spec, sizeof last_spec, "%s", src_spec);
        }
        size_t n = (size_t)w * h * src.c;
        uint8_t *out = malloc(n);
        char err[256];
        int rc = image_resize(src.px, src.w, src.h, src.c, out, w, h, filter, err, sizeof err);
        CHECK(rc == XCAP_OK, "%s -> %dx%d %s: %s", src_spec, w, h, filter_names[filter], err);
        if (strncmp(golden, "fnv1a64:", 8) == 0) {
            unsigned long long want = strtoull(golden + 8, NULL, 16);
            unsigned long long got = fnv1a64(out, n);
            CHECK(got == want, "%s (%dx%dx%d) -> %dx%d %s: hash %016llx, Pillow %016llx",
                  src_spec, src.w, src.h, src.c, w, h, filter_names[filter], got, want);
            n_hash++;
        } else {
            char path[512];
            snprintf(path, sizeof path, RESIZE_DIR "%s", golden);
            npy_array g;
            int loaded = npy_load(path, &g) == 0;
            CHECK(loaded && g.count == n, "%s: missing or wrong size", golden);
            if (loaded && g.count == n) {
                const uint8_t *want = g.data;
                size_t n_diff = 0, first = 0;
                for (size_t i = 0; i < n; i++)
                    if (out[i] != want[i] && !n_diff++) first = i;
                CHECK(n_diff == 0,
                      "%s -> %dx%d %s: %zu values differ from Pillow, first at (%zu, %zu) "
                      "channel %zu: %d vs %d",
                      src_spec, w, h, filter_names[filter], n_diff, first / src.c % w,
                      first / src.c / w, first % src.c, out[first], want[first]);
            }
            if (loaded) npy_free(&g);
            n_full++;
        }
        per_filter[filter]++;
        n_cases++;
        free(out);
    }
    free(src.px);
    fclose(f);
    CHECK(n_cases >= 200, "only %d resize cases", n_cases);
    for (int i = 0; i < 6; i++) CHECK(per_filter[i] > 20, "filter %s: %d cases", filter_names[i], per_filter[i]);
    printf("  resize: %d cases against Pillow (%d full arrays, %d hashed)\n", n_cases, n_full,
           n_hash);
}

/* Pixel values after the whole processor, against transformers' arithmetic. */
static void test_pixel_values(void) {
    FILE *f = fopen(RESIZE_DIR "configs.txt", "r");
    CHECK(f != NULL, "missing " RESIZE_DIR "configs.txt");
    if (!f) return;
    char line[512], dir[128], src_name[128];
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#' || sscanf(line, "%127s %127s", dir, src_name) != 2) continue;
        char path[512], err[512];
        snprintf(path, sizeof path, RESIZE_DIR "%s", dir);
        xcap_preprocess_config cfg;
        int rc = preprocess_config_load(path, &cfg, err, sizeof err);
        CHECK(rc == XCAP_OK, "%s: %s", dir, err);
        image src;
        CHECK(load_source(src_name, &src), "cannot load %s", src_name);
        if (rc != XCAP_OK || !src.px) continue;
        size_t count = (size_t)3 * cfg.width * cfg.height;
        float *chw = malloc(count * sizeof *chw);
        rc = preprocess_image(src.px, src.w, src.h, &cfg, chw, err, sizeof err);
        CHECK(rc == XCAP_OK, "%s: %s", dir, err);
        snprintf(path, sizeof path, RESIZE_DIR "%s/pixel_values.npy", dir);
        /* The same IEEE operations in the same order as numpy (float64 multiply, cast, float32
         * subtract and divide), so the values are identical; a tolerance of even 1e-6 would
         * miss a float32 rescale, which moves values by one unit in the last place. */
        if (rc == XCAP_OK) check_close_npy(dir, chw, count, path, 0.0f);
        free(chw);
        free(src.px);
        n++;
    }
    fclose(f);
    CHECK(n >= 4, "only %d processor configs", n);
    printf("  pixel values: %d processor configs\n", n);
}

/* ---- preprocessor_config.json parsing ---- */

static char tmp_dir[64];

static int parse_text(const char *json, xcap_preprocess_config *cfg, char *err, size_t errlen) {
    char path[128];
    snprintf(path, sizeof path, "%s/preprocessor_config.json", tmp_dir);
    FILE *f = fopen(path, "w");
    fputs(json, f);
    fclose(f);
    return preprocess_config_load(tmp_dir, cfg, err, errlen);
}

static void expect_config(const char *json, int want_w, int want_h, int want_resample) {
    xcap_preprocess_config cfg;
    char err[512] = "";
    int rc = parse_text(json, &cfg, err, sizeof err);
    CHECK(rc == XCAP_OK && cfg.width == want_w && cfg.height == want_h &&
              cfg.resample == want_resample,
          "%s: rc %d (%s), got %dx%d resample %d, expected %dx%d resample %d", json, rc, err,
          cfg.width, cfg.height, cfg.resample, want_w, want_h, want_resample);
}

static void expect_refusal(const char *json, int want_rc, const char *key) {
    xcap_preprocess_config cfg;
    char err[512] = "";
    int rc = parse_text(json, &cfg, err, sizeof err);
    CHECK(rc == want_rc, "%s: status %d, expected %d (%s)", json, rc, want_rc, err);
    CHECK(strstr(err, "preprocessor_config.json") != NULL, "%s: message lacks the file: %s", json, err);
    CHECK(key == NULL || strstr(err, key) != NULL, "%s: message lacks \"%s\": %s", json, key, err);
}

static void test_config_parsing(void) {
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/xcap_test_preprocess_XXXXXX");
    CHECK(mkdtemp(tmp_dir) != NULL, "mkdtemp failed");

    /* Defaults are ViTImageProcessor's. */
    xcap_preprocess_config cfg;
    char err[512];
    CHECK(parse_text("{}", &cfg, err, sizeof err) == XCAP_OK, "{}: %s", err);
    CHECK(cfg.width == 224 && cfg.height == 224 && cfg.resample == 2 && cfg.do_resize &&
              cfg.do_rescale && cfg.do_normalize && cfg.rescale_factor == 1.0 / 255 &&
              cfg.mean[0] == 0.5f && cfg.std[2] == 0.5f && cfg.do_convert_rgb == -1,
          "defaults differ from ViTImageProcessor's");

    /* Every spelling of `size`. */
    expect_config("{\"size\": {\"height\": 384, \"width\": 320}}", 320, 384, 2);
    expect_config("{\"size\": 224, \"resample\": 3}", 224, 224, 3);
    expect_config("{\"size\": [30, 40], \"resample\": 0}", 40, 30, 0);
    expect_config("{\"size\": {\"shortest_edge\": 256}}", 256, 256, 2);
    expect_config("{\"size\": null, \"resample\": null}", 224, 224, 2);
    /* nlpconnect/vit-gpt2-image-captioning's file. */
    expect_config("{\"do_normalize\": true, \"do_resize\": true, \"feature_extractor_type\": "
                  "\"ViTFeatureExtractor\", \"image_mean\": [0.5, 0.5, 0.5], \"image_std\": "
                  "[0.5, 0.5, 0.5], \"resample\": 2, \"size\": 224}",
                  224, 224, 2);

    CHECK(parse_text("{\"do_rescale\": false, \"do_normalize\": 0, \"rescale_factor\": 0.25, "
                     "\"image_mean\": 0.25, \"image_std\": [1, 2, 4], \"do_convert_rgb\": true}",
                     &cfg, err, sizeof err) == XCAP_OK,
          "flags: %s", err);
    CHECK(!cfg.do_rescale && !cfg.do_normalize && cfg.do_resize && cfg.rescale_factor == 0.25 &&
              cfg.mean[0] == 0.25f && cfg.mean[2] == 0.25f && cfg.std[1] == 2.0f &&
              cfg.do_convert_rgb == 1,
          "flags and lists not read as written");

    /* Refusals name the file and the key. */
    expect_refusal("{\"size\": 224,", XCAP_ERR_FORMAT, "invalid JSON");
    expect_refusal("[1, 2]", XCAP_ERR_FORMAT, "object");
    expect_refusal("{\"size\": -3}", XCAP_ERR_FORMAT, "\"size\"");
    expect_refusal("{\"size\": 22.5}", XCAP_ERR_FORMAT, "\"size\"");
    expect_refusal("{\"size\": \"224\"}", XCAP_ERR_FORMAT, "\"size\"");
    expect_refusal("{\"size\": {\"height\": 224}}", XCAP_ERR_UNSUPPORTED, "\"size\"");
    expect_refusal("{\"size\": {\"height\": 224, \"width\": 0}}", XCAP_ERR_FORMAT, "size.width");
    expect_refusal("{\"size\": {\"shortest_edge\": 224, \"longest_edge\": 448}}",
                   XCAP_ERR_UNSUPPORTED, "longest_edge");
    expect_refusal("{\"size\": [224]}", XCAP_ERR_FORMAT, "\"size\"");
    expect_refusal("{\"size\": 100000}", XCAP_ERR_FORMAT, "\"size\"");
    expect_refusal("{\"resample\": 6}", XCAP_ERR_FORMAT, "\"resample\"");
    expect_refusal("{\"resample\": \"bilinear\"}", XCAP_ERR_FORMAT, "\"resample\"");
    expect_refusal("{\"do_resize\": \"yes\"}", XCAP_ERR_FORMAT, "\"do_resize\"");
    expect_refusal("{\"rescale_factor\": \"1/255\"}", XCAP_ERR_FORMAT, "\"rescale_factor\"");
    expect_refusal("{\"image_mean\": [0.5, 0.5]}", XCAP_ERR_FORMAT, "\"image_mean\"");
    expect_refusal("{\"image_mean\": [0.5, \"a\", 0.5]}", XCAP_ERR_FORMAT, "\"image_mean\"");
    expect_refusal("{\"image_std\": [0.5, 0, 0.5]}", XCAP_ERR_FORMAT, "\"image_std\"");
    expect_refusal("{\"image_std\": 1e60}", XCAP_ERR_FORMAT, "\"image_std\"");
    expect_refusal("{\"image_processor_type\": \"DeiTImageProcessor\"}", XCAP_ERR_UNSUPPORTED,
                   "DeiTImageProcessor");
    expect_refusal("{\"feature_extractor_type\": 3}", XCAP_ERR_UNSUPPORTED,
                   "\"feature_extractor_type\"");

    char path[128];
    snprintf(path, sizeof path, "%s/preprocessor_config.json", tmp_dir);
    unlink(path);
    int rc = preprocess_config_load(tmp_dir, &cfg, err, sizeof err);
    CHECK(rc == XCAP_ERR_IO && strstr(err, "preprocessor_config.json"), "missing file: %d %s", rc, err);
    rmdir(tmp_dir);
}

/* ---- argument checks, do_resize false ---- */

static void test_arguments(void) {
    uint8_t px[12] = {0}, out[12];
    char err[256];
    CHECK(image_resize(px, 2, 2, 3, out, 2, 2, 7, err, sizeof err) == XCAP_ERR_ARG &&
              strstr(err, "filter 7"), "unknown filter: %s", err);
    CHECK(image_resize(px, 2, 2, 5, out, 1, 1, 2, err, sizeof err) == XCAP_ERR_ARG, "5 channels");
    CHECK(image_resize(px, 0, 2, 3, out, 1, 1, 2, err, sizeof err) == XCAP_ERR_ARG, "width 0");
    CHECK(image_resize(px, 2, 2, 3, out, 1, -1, 2, err, sizeof err) == XCAP_ERR_ARG, "height -1");

    xcap_preprocess_config cfg = preprocess_config_default();
    cfg.do_resize = 0;
    float chw[12];
    CHECK(preprocess_image(px, 2, 2, &cfg, chw, err, sizeof err) == XCAP_ERR_ARG &&
              strstr(err, "2x2") && strstr(err, "224x224"),
          "do_resize false with the wrong size: %s", err);
}

/* ---- fast path against the naive one ---- */

static void test_fast_vs_naive(void) {
    static const int sizes[] = {1, 2, 3, 5, 17, 31, 64, 197, 224, 300};
    int n_sizes = (int)(sizeof sizes / sizeof *sizes);
    uint64_t rng = 12345;
    int n = 0, bad = 0;
    for (int trial = 0; trial < 120; trial++) {
        int sw = sizes[test_rng_next(&rng) % n_sizes], sh = sizes[test_rng_next(&rng) % n_sizes];
        int dw = sizes[test_rng_next(&rng) % n_sizes], dh = sizes[test_rng_next(&rng) % n_sizes];
        if (trial % 5 == 0) dw = sw; /* one axis unchanged */
        if (trial % 7 == 0) dh = sh;
        int c = 1 + (int)(test_rng_next(&rng) % 4);
        int filter = 1 + trial % 5; /* the convolution filters; NEAREST has one code path */
        size_t ns = (size_t)sw * sh * c, nd = (size_t)dw * dh * c;
        uint8_t *src = malloc(ns), *fast = malloc(nd), *naive = malloc(nd);
        for (size_t i = 0; i < ns; i++) src[i] = (uint8_t)test_rng_next(&rng);
        char err[256];
        int rc1 = image_resize(src, sw, sh, c, fast, dw, dh, filter, err, sizeof err);
        int rc2 = image_resize_naive(src, sw, sh, c, naive, dw, dh, filter, err, sizeof err);
        int same = rc1 == XCAP_OK && rc2 == XCAP_OK && memcmp(fast, naive, nd) == 0;
        if (!same && !bad++)
            CHECK(0, "fast != naive for %dx%dx%d -> %dx%d %s", sw, sh, c, dw, dh,
                  filter_names[filter]);
        n++;
        free(src);
        free(fast);
        free(naive);
    }
    CHECK(bad == 0, "%d of %d random resizes differ between fast and naive", bad, n);
    printf("  fast vs naive: %d random shapes\n", n);
}

/* ---- speed (reported, never asserted) ---- */

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static void report_speed(void) {
    image src = generated(640, 480, 3);
    uint8_t *out = malloc(224 * 224 * 3);
    char err[256];
    for (int filter = 0; filter < 6; filter++) {
        int reps = 20;
        image_resize(src.px, 640, 480, 3, out, 224, 224, filter, err, sizeof err); /* warm up */
        double t0 = now_ms();
        for (int r = 0; r < reps; r++)
            image_resize(src.px, 640, 480, 3, out, 224, 224, filter, err, sizeof err);
        double fast = (now_ms() - t0) / reps;
        t0 = now_ms();
        for (int r = 0; r < 3; r++)
            image_resize_naive(src.px, 640, 480, 3, out, 224, 224, filter, err, sizeof err);
        double naive = (now_ms() - t0) / 3;
        printf("  resize 640x480 -> 224x224 %-8s %.3f ms (naive %.3f ms)\n", filter_names[filter],
               fast, naive);
    }
    xcap_preprocess_config cfg = preprocess_config_default();
    float *chw = malloc(3 * 224 * 224 * sizeof *chw);
    double t0 = now_ms();
    for (int r = 0; r < 20; r++) preprocess_image(src.px, 640, 480, &cfg, chw, err, sizeof err);
    printf("  preprocess_image 640x480 -> [3,224,224] %.3f ms\n", (now_ms() - t0) / 20);
    free(chw);
    free(out);
    free(src.px);
}

int main(void) {
    test_resize_goldens();
    test_pixel_values();
    test_config_parsing();
    test_arguments();
    test_fast_vs_naive();
    report_speed();
    return harness_finish("test_preprocess");
}
