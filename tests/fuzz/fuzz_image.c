/* Image path: file bytes -> cmd/image.c decode (format sniffing, header limits, the Pillow
 * corrections around stb_image) -> RGB -> resize + normalize with the ViT processor defaults.
 * Invariants: a refusal names the input; an accepted image has a size within the limit, and
 * every such image preprocesses into finite values. */
#include <math.h>
#include <stdint.h>

#include "cmd/image.h"
#include "fuzz.h"
#include "vision/preprocess.h"
#include "xcap.h"

/* Small enough that every input decodes in milliseconds; the limit logic is the same. */
#define FUZZ_MAX_PIXELS (1 << 22)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *rgb;
    int w, h;
    char err[1024] = "";
    int rc = image_load_memory_limit(data, size, "fuzz-input", FUZZ_MAX_PIXELS, &rgb, &w, &h, err, sizeof err);
    if (rc != XCAP_OK) {
        FUZZ_ASSERT(rgb == NULL, "pixels returned with error %d", rc);
        FUZZ_ERROR_NAMES(err, "fuzz-input");
        return 0;
    }
    FUZZ_ASSERT(w >= 1 && h >= 1 && (long long)w * h <= FUZZ_MAX_PIXELS, "decoded %dx%d", w, h);

    xcap_preprocess_config cfg = preprocess_config_default(); /* 224x224, bilinear, mean = std = 0.5 */
    float *chw = malloc(sizeof(float) * 3 * cfg.width * cfg.height);
    FUZZ_ASSERT(chw != NULL, "out of memory");
    rc = preprocess_image(rgb, w, h, &cfg, chw, err, sizeof err);
    FUZZ_ASSERT(rc == XCAP_OK, "a decoded %dx%d image did not preprocess: %s", w, h, err);
    for (int i = 0; i < 3 * cfg.width * cfg.height; i++)
        FUZZ_ASSERT(isfinite(chw[i]) && fabsf(chw[i]) <= 1.0f + 1e-6f, "pixel value %g at %d", chw[i], i);

    /* Every filter, to an odd size (up- or down-sampling depending on the input). */
    uint8_t small[7 * 5 * 3];
    rc = image_resize(rgb, w, h, 3, small, 7, 5, (int)(size % 6), err, sizeof err);
    FUZZ_ASSERT(rc == XCAP_OK, "resize with filter %d: %s", (int)(size % 6), err);
    free(chw);
    free(rgb);
    return 0;
}
