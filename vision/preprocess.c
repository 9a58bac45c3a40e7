/* Pillow-exact resize and the rescale/normalize step of ViTImageProcessor (spec §3.2, §3.3).
 *
 * The resize reproduces Pillow's libImaging/Resample.c (8 bits per channel) bit for bit:
 * per-axis filter weights computed in double, turned into 22-bit fixed point, a horizontal
 * pass into an 8-bit intermediate image and then a vertical pass. NEAREST goes through
 * Pillow's separate affine-scale code (libImaging/Geometry.c), which picks source pixels by
 * accumulating the step in double. Arithmetic below follows Pillow's operation order on
 * purpose: changing (a * (1 / b)) into (a / b), or letting the compiler fuse a multiply-add,
 * can move a weight by one unit in the last place and one output value by one grey level. */
#include "vision/preprocess.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/common.h"

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

/* Pillow: PRECISION_BITS = 32 - 8 - 2 (8 bits of result, 2 bits of headroom for filters with
 * negative lobes). Sums stay within int32: |weights| sum to at most ~1.3 (Lanczos), so
 * 255 * 1.3 * 2^22 + 2^21 < 2^31, as in Pillow, which also accumulates in int. */
#define PRECISION_BITS 22
#define HALF_UNIT (1 << (PRECISION_BITS - 1))

/* Largest side image_resize accepts; far above anything a captioner is fed. */
#define RESIZE_MAX_SIDE (1 << 20)

/* Pillow's M_PI; spelled out so the file needs no feature-test macros. */
static const double PIL_PI = 3.14159265358979323846;

/* ---- the filters of Resample.c, same formulas, same constants ---- */

static double box_filter(double x) { return (x > -0.5 && x <= 0.5) ? 1.0 : 0.0; }

static double bilinear_filter(double x) {
    if (x < 0.0) x = -x;
    return x < 1.0 ? 1.0 - x : 0.0;
}

static double hamming_filter(double x) {
    if (x < 0.0) x = -x;
    if (x == 0.0) return 1.0;
    if (x >= 1.0) return 0.0;
    x = x * PIL_PI;
    /* Pillow writes these constants as floats (0.54f, 0.46f): keep their float rounding. */
    return sin(x) / x * (0.54f + 0.46f * cos(x));
}

static double bicubic_filter(double x) {
    const double a = -0.5; /* Pillow's choice (Keys' cubic with a = -0.5) */
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

static double sinc_filter(double x) {
    if (x == 0.0) return 1.0;
    x = x * PIL_PI;
    return sin(x) / x;
}

static double lanczos_filter(double x) {
    if (-3.0 <= x && x < 3.0) return sinc_filter(x) * sinc_filter(x / 3);
    return 0.0;
}

typedef struct {
    double (*weight)(double x);
    double support; /* radius at scale 1 */
} resample_filter;

static const resample_filter *filter_for(int filter) {
    static const resample_filter box = {box_filter, 0.5}, bilinear = {bilinear_filter, 1.0},
                                 hamming = {hamming_filter, 1.0}, bicubic = {bicubic_filter, 2.0},
                                 lanczos = {lanczos_filter, 3.0};
    switch (filter) {
    case XCAP_RESAMPLE_BOX: return &box;
    case XCAP_RESAMPLE_BILINEAR: return &bilinear;
    case XCAP_RESAMPLE_HAMMING: return &hamming;
    case XCAP_RESAMPLE_BICUBIC: return &bicubic;
    case XCAP_RESAMPLE_LANCZOS: return &lanczos;
    default: return NULL;
    }
}

/* ---- per-axis coefficients (Pillow's precompute_coeffs + normalize_coeffs_8bpc) ---- */

typedef struct {
    int ksize;       /* coefficients stored per output index */
    int *first;      /* [out] first input index used */
    int *count;      /* [out] number of input indices used (<= ksize) */
    int32_t *coeffs; /* [out * ksize] weights in PRECISION_BITS fixed point */
} resample_axis;

static void axis_free(resample_axis *ax) {
    free(ax->first);
    free(ax->count);
    free(ax->coeffs);
    memset(ax, 0, sizeof *ax);
}

static int axis_init(resample_axis *ax, int in_size, int out_size, const resample_filter *f,
                     char *err, size_t errlen) {
    memset(ax, 0, sizeof *ax);
    /* The box is the whole image, so Pillow's (double)(in1 - in0) / outSize is this. */
    double scale = (double)in_size / out_size;
    /* Antialiasing: when shrinking, the filter is stretched by the scale (spec §3.2). */
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = f->support * filterscale;
    int ksize = (int)ceil(support) * 2 + 1;
    double *w = malloc((size_t)ksize * sizeof *w);
    ax->first = malloc((size_t)out_size * sizeof *ax->first);
    ax->count = malloc((size_t)out_size * sizeof *ax->count);
    ax->coeffs = malloc((size_t)out_size * (size_t)ksize * sizeof *ax->coeffs);
    if (!w || !ax->first || !ax->count || !ax->coeffs) {
        free(w);
        axis_free(ax);
        return xcap_fail(err, errlen, XCAP_ERR_NOMEM,
                         "resize: out of memory for %d x %d filter coefficients", out_size, ksize);
    }
    ax->ksize = ksize;
    double inv_filterscale = 1.0 / filterscale; /* Pillow multiplies by the reciprocal */
    for (int xx = 0; xx < out_size; xx++) {
        double center = (xx + 0.5) * scale;
        /* (int) truncates toward zero, as in Pillow, before the clamp. */
        int xmin = (int)(center - support + 0.5);
        if (xmin < 0) xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        int n = xmax - xmin;
        double sum = 0.0;
        for (int x = 0; x < n; x++) {
            w[x] = f->weight((x + xmin - center + 0.5) * inv_filterscale);
            sum += w[x];
        }
        int32_t *k = ax->coeffs + (size_t)xx * ksize;
        for (int x = 0; x < ksize; x++) {
            double v = x < n ? (sum != 0.0 ? w[x] / sum : w[x]) : 0.0;
            /* Round half away from zero into fixed point (normalize_coeffs_8bpc). */
            k[x] = v < 0 ? (int32_t)(-0.5 + v * (1 << PRECISION_BITS))
                         : (int32_t)(0.5 + v * (1 << PRECISION_BITS));
        }
        ax->first[xx] = xmin;
        ax->count[xx] = n < 0 ? 0 : n;
    }
    free(w);
    return XCAP_OK;
}

/* Pillow's clip8: value >> PRECISION_BITS clamped to 0..255 (an arithmetic shift there). */
static inline uint8_t clip8(int32_t acc) {
    if (acc < 0) return 0;
    acc >>= PRECISION_BITS;
    return acc > 255 ? 255 : (uint8_t)acc;
}

/* ---- fast passes ---- */

/* One output row of the horizontal pass; `channels` is a constant at each call site so the
 * compiler specializes the channel loop. */
static inline __attribute__((always_inline)) void horizontal_row(const uint8_t *in, uint8_t *out,
                                                                 int out_w,
                                                                 const resample_axis *ax,
                                                                 int channels) {
    for (int xx = 0; xx < out_w; xx++) {
        const int32_t *k = ax->coeffs + (size_t)xx * ax->ksize;
        const uint8_t *p = in + (size_t)ax->first[xx] * channels;
        int32_t acc[4] = {HALF_UNIT, HALF_UNIT, HALF_UNIT, HALF_UNIT};
        for (int t = 0; t < ax->count[xx]; t++)
            for (int c = 0; c < channels; c++) acc[c] += p[t * channels + c] * k[t];
        for (int c = 0; c < channels; c++) out[xx * channels + c] = clip8(acc[c]);
    }
}

/* Rows [row0, row0 + n_rows) of src, resampled horizontally into dst (n_rows rows). */
static void horizontal_pass(const uint8_t *src, int sw, int channels, int row0, int n_rows,
                            uint8_t *dst, int dw, const resample_axis *ax) {
    size_t in_stride = (size_t)sw * channels, out_stride = (size_t)dw * channels;
    long long work = (long long)n_rows * dw * channels * ax->ksize;
#pragma omp parallel for schedule(static) if (work > (1 << 18))
    for (int y = 0; y < n_rows; y++) {
        const uint8_t *in = src + (size_t)(row0 + y) * in_stride;
        uint8_t *out = dst + (size_t)y * out_stride;
        switch (channels) {
        case 1: horizontal_row(in, out, dw, ax, 1); break;
        case 2: horizontal_row(in, out, dw, ax, 2); break;
        case 3: horizontal_row(in, out, dw, ax, 3); break;
        default: horizontal_row(in, out, dw, ax, 4); break;
        }
    }
}

/* Vertical pass: each output row is a weighted sum of whole input rows. Summing row by row
 * (instead of pixel by pixel as Pillow does) gives the same integers, since int addition is
 * exact, and lets the compiler vectorize. row_shift maps the axis' input rows to src rows
 * (src may hold only the rows the vertical filter reads). */
static void vertical_pass(const uint8_t *src, int row_len, int row_shift, uint8_t *dst, int dh,
                          const resample_axis *ax) {
    enum { CHUNK = 512 };
    long long work = (long long)dh * row_len * ax->ksize;
#pragma omp parallel for schedule(static) if (work > (1 << 18))
    for (int yy = 0; yy < dh; yy++) {
        const int32_t *k = ax->coeffs + (size_t)yy * ax->ksize;
        const uint8_t *rows = src + (size_t)(ax->first[yy] - row_shift) * row_len;
        uint8_t *out = dst + (size_t)yy * row_len;
        int32_t acc[CHUNK];
        for (int i0 = 0; i0 < row_len; i0 += CHUNK) {
            int n = row_len - i0 < CHUNK ? row_len - i0 : CHUNK;
            for (int i = 0; i < n; i++) acc[i] = HALF_UNIT;
            for (int t = 0; t < ax->count[yy]; t++) {
                const uint8_t *row = rows + (size_t)t * row_len + i0;
                int32_t kt = k[t];
                for (int i = 0; i < n; i++) acc[i] += row[i] * kt;
            }
            for (int i = 0; i < n; i++) out[i0 + i] = clip8(acc[i]);
        }
    }
}

/* ---- NEAREST: Pillow's ImagingScaleAffine ---- */

/* Pillow's COORD(): negative coordinates map to -1 (outside), others truncate. */
static inline int nearest_coord(double v) { return v < 0.0 ? -1 : (int)v; }

static int resize_nearest(const uint8_t *src, int sw, int sh, int channels, uint8_t *dst, int dw,
                          int dh, char *err, size_t errlen) {
    int *xin = calloc((size_t)dw, sizeof *xin);
    if (!xin) return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "resize: out of memory");
    /* Pillow's affine matrix for resize: a0 = in/out per axis, offset 0; the source position
     * is accumulated step by step (xo += a0), not multiplied, so rounding matches. */
    double ax = (double)sw / dw, ay = (double)sh / dh;
    double xo = ax * 0.5, yo = ay * 0.5;
    int xmin = dw, xmax = 0; /* output columns whose source column is inside the image */
    for (int x = 0; x < dw; x++) {
        int xi = nearest_coord(xo);
        if (xi >= 0 && xi < sw) {
            xmax = x + 1;
            if (x < xmin) xmin = x;
            xin[x] = xi;
        }
        xo += ax;
    }
    size_t out_stride = (size_t)dw * channels, in_stride = (size_t)sw * channels;
    for (int y = 0; y < dh; y++) {
        int yi = nearest_coord(yo);
        uint8_t *out = dst + (size_t)y * out_stride;
        memset(out, 0, out_stride); /* Pillow fills what no source pixel covers with 0 */
        if (yi >= 0 && yi < sh) {
            const uint8_t *in = src + (size_t)yi * in_stride;
            for (int x = xmin; x < xmax; x++)
                memcpy(out + (size_t)x * channels, in + (size_t)xin[x] * channels, channels);
        }
        yo += ay;
    }
    free(xin);
    return XCAP_OK;
}

/* ---- entry points ---- */

static int check_resize_args(const uint8_t *src, int sw, int sh, int channels, const uint8_t *dst,
                             int dw, int dh, int filter, char *err, size_t errlen) {
    if (!src || !dst) return xcap_fail(err, errlen, XCAP_ERR_ARG, "resize: NULL image buffer");
    if (channels < 1 || channels > 4)
        return xcap_fail(err, errlen, XCAP_ERR_ARG, "resize: %d channels (expected 1 to 4)",
                         channels);
    if (sw < 1 || sh < 1 || sw > RESIZE_MAX_SIDE || sh > RESIZE_MAX_SIDE)
        return xcap_fail(err, errlen, XCAP_ERR_ARG, "resize: bad source size %dx%d", sw, sh);
    if (dw < 1 || dh < 1 || dw > RESIZE_MAX_SIDE || dh > RESIZE_MAX_SIDE)
        return xcap_fail(err, errlen, XCAP_ERR_ARG, "resize: bad target size %dx%d", dw, dh);
    if (filter != XCAP_RESAMPLE_NEAREST && !filter_for(filter))
        return xcap_fail(err, errlen, XCAP_ERR_ARG,
                         "resize: unknown filter %d (Pillow's 0..5: NEAREST, LANCZOS, "
                         "BILINEAR, BICUBIC, BOX, HAMMING)",
                         filter);
    return XCAP_OK;
}

int image_resize(const uint8_t *src, int sw, int sh, int channels, uint8_t *dst, int dw, int dh,
                 int filter, char *err, size_t errlen) {
    int rc = check_resize_args(src, sw, sh, channels, dst, dw, dh, filter, err, errlen);
    if (rc) return rc;
    if (sw == dw && sh == dh) { /* Image.resize returns a copy */
        memcpy(dst, src, (size_t)sw * sh * channels);
        return XCAP_OK;
    }
    if (filter == XCAP_RESAMPLE_NEAREST)
        return resize_nearest(src, sw, sh, channels, dst, dw, dh, err, errlen);

    const resample_filter *f = filter_for(filter);
    int need_h = dw != sw, need_v = dh != sh; /* an unchanged axis is not resampled */
    resample_axis hx, vy;
    memset(&hx, 0, sizeof hx);
    if ((rc = axis_init(&vy, sh, dh, f, err, errlen))) return rc;
    if (!need_h) {
        vertical_pass(src, sw * channels, 0, dst, dh, &vy);
        axis_free(&vy);
        return XCAP_OK;
    }
    if ((rc = axis_init(&hx, sw, dw, f, err, errlen))) {
        axis_free(&vy);
        return rc;
    }
    if (!need_v) {
        horizontal_pass(src, sw, channels, 0, sh, dst, dw, &hx);
    } else {
        /* Like Pillow, resample horizontally only the rows the vertical pass will read. */
        int row_first = vy.first[0];
        int row_last = vy.first[dh - 1] + vy.count[dh - 1];
        int n_rows = row_last - row_first;
        uint8_t *tmp = malloc((size_t)n_rows * dw * channels);
        if (!tmp) {
            axis_free(&hx);
            axis_free(&vy);
            return xcap_fail(err, errlen, XCAP_ERR_NOMEM,
                             "resize: out of memory for a %dx%d intermediate image", dw, n_rows);
        }
        horizontal_pass(src, sw, channels, row_first, n_rows, tmp, dw, &hx);
        vertical_pass(tmp, dw * channels, row_first, dst, dh, &vy);
        free(tmp);
    }
    axis_free(&hx);
    axis_free(&vy);
    return XCAP_OK;
}

int image_resize_naive(const uint8_t *src, int sw, int sh, int channels, uint8_t *dst, int dw,
                       int dh, int filter, char *err, size_t errlen) {
    int rc = check_resize_args(src, sw, sh, channels, dst, dw, dh, filter, err, errlen);
    if (rc) return rc;
    if (filter == XCAP_RESAMPLE_NEAREST || (sw == dw && sh == dh))
        return image_resize(src, sw, sh, channels, dst, dw, dh, filter, err, errlen);
    const resample_filter *f = filter_for(filter);
    resample_axis hx, vy;
    if ((rc = axis_init(&hx, sw, dw, f, err, errlen))) return rc;
    if ((rc = axis_init(&vy, sh, dh, f, err, errlen))) {
        axis_free(&hx);
        return rc;
    }
    /* Full-height horizontal pass (or a copy when the width does not change), then a
     * pixel-by-pixel vertical pass (or a copy). */
    int mid_w = dw;
    uint8_t *mid = malloc((size_t)mid_w * sh * channels);
    if (!mid) {
        axis_free(&hx);
        axis_free(&vy);
        return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "resize: out of memory");
    }
    for (int y = 0; y < sh; y++)
        for (int x = 0; x < dw; x++)
            for (int c = 0; c < channels; c++) {
                if (dw == sw) {
                    mid[((size_t)y * dw + x) * channels + c] = src[((size_t)y * sw + x) * channels + c];
                    continue;
                }
                int32_t acc = HALF_UNIT;
                for (int t = 0; t < hx.count[x]; t++)
                    acc += src[((size_t)y * sw + hx.first[x] + t) * channels + c] *
                           hx.coeffs[(size_t)x * hx.ksize + t];
                mid[((size_t)y * dw + x) * channels + c] = clip8(acc);
            }
    for (int y = 0; y < dh; y++)
        for (int x = 0; x < dw; x++)
            for (int c = 0; c < channels; c++) {
                if (dh == sh) {
                    dst[((size_t)y * dw + x) * channels + c] = mid[((size_t)y * dw + x) * channels + c];
                    continue;
                }
                int32_t acc = HALF_UNIT;
                for (int t = 0; t < vy.count[y]; t++)
                    acc += mid[((size_t)(vy.first[y] + t) * dw + x) * channels + c] *
                           vy.coeffs[(size_t)y * vy.ksize + t];
                dst[((size_t)y * dw + x) * channels + c] = clip8(acc);
            }
    free(mid);
    axis_free(&hx);
    axis_free(&vy);
    return XCAP_OK;
}

void image_normalize(const uint8_t *rgb, int w, int h, const xcap_preprocess_config *cfg,
                     float *chw) {
    size_t plane = (size_t)w * h;
    /* Per grey level and channel the result is one value: tabulate 3 x 256 floats computed
     * exactly as transformers does, then scatter into planes. */
    float table[3][256];
    for (int c = 0; c < 3; c++)
        for (int v = 0; v < 256; v++) {
            /* rescale: uint8 -> float64, times the factor, then cast to float32 */
            float x = cfg->do_rescale ? (float)((double)v * cfg->rescale_factor) : (float)v;
            /* normalize: float32 (x - mean) / std with mean and std cast to float32 */
            if (cfg->do_normalize) x = (x - cfg->mean[c]) / cfg->std[c];
            table[c][v] = x;
        }
    for (size_t i = 0; i < plane; i++) {
        chw[i] = table[0][rgb[3 * i + 0]];
        chw[plane + i] = table[1][rgb[3 * i + 1]];
        chw[2 * plane + i] = table[2][rgb[3 * i + 2]];
    }
}

int preprocess_image(const uint8_t *rgb, int w, int h, const xcap_preprocess_config *cfg,
                     float *chw, char *err, size_t errlen) {
    if (!rgb || !cfg || !chw)
        return xcap_fail(err, errlen, XCAP_ERR_ARG, "preprocess: NULL argument");
    if (w < 1 || h < 1)
        return xcap_fail(err, errlen, XCAP_ERR_ARG, "preprocess: bad image size %dx%d", w, h);
    if (!cfg->do_resize) {
        if (w != cfg->width || h != cfg->height)
            return xcap_fail(err, errlen, XCAP_ERR_ARG,
                             "preprocess: image is %dx%d but the processor does not resize "
                             "(do_resize false) and the model takes %dx%d",
                             w, h, cfg->width, cfg->height);
        image_normalize(rgb, w, h, cfg, chw);
        return XCAP_OK;
    }
    uint8_t *resized = malloc((size_t)cfg->width * cfg->height * 3);
    if (!resized)
        return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "preprocess: out of memory for %dx%d",
                         cfg->width, cfg->height);
    int rc = image_resize(rgb, w, h, 3, resized, cfg->width, cfg->height, cfg->resample, err,
                          errlen);
    if (rc == XCAP_OK) image_normalize(resized, cfg->width, cfg->height, cfg, chw);
    free(resized);
    return rc;
}
