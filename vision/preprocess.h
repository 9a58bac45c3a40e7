/* Image preprocessing as a ViTImageProcessor does it (spec §3): Pillow's resize of the uint8
 * image, then rescale and normalize into the model's [3, H, W] float layout.
 *
 * The library takes decoded pixels only; decoding files is cmd/image.c's job. */
#ifndef XCAP_VISION_PREPROCESS_H
#define XCAP_VISION_PREPROCESS_H

#include <stddef.h>
#include <stdint.h>

/* Pillow's filter numbers (PIL.Image.Resampling), which is also what `resample` holds in a
 * preprocessor_config.json. */
enum {
    XCAP_RESAMPLE_NEAREST = 0,
    XCAP_RESAMPLE_LANCZOS = 1,
    XCAP_RESAMPLE_BILINEAR = 2,
    XCAP_RESAMPLE_BICUBIC = 3,
    XCAP_RESAMPLE_BOX = 4,
    XCAP_RESAMPLE_HAMMING = 5,
};

/* The settings of preprocessor_config.json that change pixel values. */
typedef struct {
    int width, height; /* processor output size (size.width, size.height) */
    int resample;      /* XCAP_RESAMPLE_* */
    int do_resize, do_rescale, do_normalize;
    int do_convert_rgb; /* -1 when absent or null; informational (input is RGB already) */
    double rescale_factor;
    float mean[3], std[3];
} xcap_preprocess_config;

/* transformers' ViTImageProcessor defaults: 224x224, bilinear, rescale 1/255, mean = std = 0.5. */
xcap_preprocess_config preprocess_config_default(void);

/* Reads model_dir/preprocessor_config.json. `size` may be {"height","width"}, an int (square),
 * [height, width], or {"shortest_edge": s} (taken as s x s, see the .c file). Errors name the
 * file and the key. */
int preprocess_config_load(const char *model_dir, xcap_preprocess_config *cfg, char *err,
                           size_t errlen);

/* The same from JSON text already in memory; `name` is used in error messages. */
int preprocess_config_parse(const char *json, const char *name, xcap_preprocess_config *cfg,
                            char *err, size_t errlen);

/* Resizes an interleaved uint8 image (1..4 channels, each resampled on its own) exactly as
 * Pillow's Image.resize((dw, dh), filter) does for modes L, RGB, CMYK, La and RGBa (no alpha
 * premultiplication: Pillow's resize premultiplies "LA"/"RGBA", which RGB input never is).
 * src and dst must not overlap. Filters: XCAP_RESAMPLE_*. Runs the rows in parallel with
 * OpenMP when called from a serial region (the caller's omp setting decides the threads). */
int image_resize(const uint8_t *src, int sw, int sh, int channels, uint8_t *dst, int dw, int dh,
                 int filter, char *err, size_t errlen);

/* Straightforward version of image_resize (no row cropping, no loop reordering, no threads),
 * kept for tests to check the fast path against. */
int image_resize_naive(const uint8_t *src, int sw, int sh, int channels, uint8_t *dst, int dw,
                       int dh, int filter, char *err, size_t errlen);

/* uint8 RGB (interleaved, w*h*3) -> float [3, h, w]: value = (float)(x * rescale_factor) when
 * do_rescale, then (value - mean[c]) / std[c] in float32 when do_normalize. */
void image_normalize(const uint8_t *rgb, int w, int h, const xcap_preprocess_config *cfg,
                     float *chw);

/* Whole pipeline: resize to cfg->width x cfg->height (when do_resize) then normalize into chw,
 * which holds 3 * cfg->height * cfg->width floats. With do_resize false the image must already
 * have that size. Scratch memory is allocated and freed internally. */
int preprocess_image(const uint8_t *rgb, int w, int h, const xcap_preprocess_config *cfg,
                     float *chw, char *err, size_t errlen);

#endif
