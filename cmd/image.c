/* Image decoding with stb_image (Debian's libstb), corrected where stb and Pillow disagree so
 * that the result is Pillow's Image.open(f).convert("RGB") (spec §3.1):
 *
 * - stb does not notice truncated BMP, TGA, PSD and GIF data (it reads zeros past the end),
 *   so the expected data size is checked from each header before decoding. PNG and JPEG
 *   truncation stb detects itself.
 * - PNG: Pillow stops reading once the pixel data is complete, so a file cut after that
 *   (missing IEND, even missing the zlib checksum) still decodes; stb wants IEND. Such files
 *   are retried with the chunk list closed. 16-bit grey is clamped to 255 as Pillow's
 *   I -> RGB conversion does, where stb would take the high byte.
 * - GIF: stb leaves transparent pixels black and fills the area outside the first frame with
 *   the background colour; Pillow shows the palette colour of the transparent index (and of
 *   the transparent index, or index 0, outside the frame).
 * - PNM: stb 2.27 ignores maxval, byte-swaps 16-bit samples wrongly and accepts short files,
 *   so binary P5/P6 are decoded here, with Pillow's maxval scaling.
 * - BMP 5/6-bit channels: stb repeats the bits, Pillow computes v * 255 / (2^n - 1).
 * - PSD with alpha: stb removes a white matte, Pillow does not.
 * - EXIF orientation (JPEG, PNG) is applied afterwards, as transformers' load_image does.
 *
 * This file belongs to the command-line layer: it is linked without the xcap library, so it
 * formats its own messages and reads its own files. */
#include "cmd/image.h"
#include "nn/common.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <stb/stb_image.h>

#include "include/xcap.h"

#define SUPPORTED_FORMATS "PNG, JPEG, GIF, BMP, TGA, PSD, PNM"

/* Larger files are refused before reading: stb takes an int length, and no image xcap
 * accepts (2^28 pixels) needs more in any supported encoding short of raw 16-bit RGBA. */
#define IMAGE_MAX_FILE_BYTES ((size_t)INT_MAX)

typedef enum { IMG_UNKNOWN, IMG_PNG, IMG_JPEG, IMG_GIF, IMG_BMP, IMG_PSD, IMG_PNM, IMG_TGA } image_format;

static const char *format_name(image_format f) {
    static const char *names[] = {"image", "PNG", "JPEG", "GIF", "BMP", "PSD", "PNM", "TGA"};
    return names[f];
}

static const char *stb_reason(void) {
    const char *r = stbi_failure_reason();
    return r && *r ? r : "no reason given";
}

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static uint32_t be16(const uint8_t *p) { return (uint32_t)p[0] << 8 | p[1]; }
static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}
static uint32_t le16(const uint8_t *p) { return (uint32_t)p[1] << 8 | p[0]; }

/* ---- format identification ---- */

static image_format sniff(const uint8_t *d, size_t n) {
    if (n >= 8 && memcmp(d, "\x89PNG\r\n\x1a\n", 8) == 0) return IMG_PNG;
    if (n >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF) return IMG_JPEG;
    if (n >= 6 && (memcmp(d, "GIF87a", 6) == 0 || memcmp(d, "GIF89a", 6) == 0)) return IMG_GIF;
    if (n >= 2 && d[0] == 'B' && d[1] == 'M') return IMG_BMP;
    if (n >= 4 && memcmp(d, "8BPS", 4) == 0) return IMG_PSD;
    if (n >= 2 && d[0] == 'P' && (d[1] == '5' || d[1] == '6')) return IMG_PNM;
    return IMG_TGA; /* TGA has no signature: stb's header check decides */
}

/* stb takes a run of 0xFF bytes followed by 0xD8 for the start of a JPEG (it skips fill bytes
 * before the first marker, and reads no further to decide); Pillow wants FF D8 FF. */
static int stb_sees_jpeg(const uint8_t *d, size_t n) {
    size_t i = 0;
    while (i < n && d[i] == 0xFF) i++;
    return i > 0 && i < n && d[i] == 0xD8;
}

/* Formats recognisable from their first bytes that xcap does not read (some of which stb
 * would otherwise misread or Pillow would not read either). */
static const char *unsupported_format(const uint8_t *d, size_t n) {
    if (n >= 4 && (memcmp(d, "II*\0", 4) == 0 || memcmp(d, "MM\0*", 4) == 0)) return "TIFF";
    if (n >= 12 && memcmp(d, "RIFF", 4) == 0 && memcmp(d + 8, "WEBP", 4) == 0) return "WebP";
    if (n >= 12 && memcmp(d + 4, "ftyp", 4) == 0) return "HEIF/AVIF";
    if (n >= 2 && d[0] == '#' && d[1] == '?') return "Radiance HDR";
    if (n >= 4 && memcmp(d, "\x53\x80\xF6\x34", 4) == 0) return "Softimage PIC";
    if (n >= 4 && memcmp(d, "\0\0\1\0", 4) == 0) return "ICO";
    if (n >= 2 && d[0] == 'P' && strchr("1234", d[1]) && d[1]) return "plain-text or 1-bit PNM (P1-P4)";
    if (n >= 2 && d[0] == 'P' && strchr("7fF", d[1]) && d[1]) return "PAM/PFM";
    if (n >= 12 && memcmp(d, "\0\0\0\x0cjP  ", 8) == 0) return "JPEG 2000";
    return NULL;
}

static int check_dimensions(const char *name, image_format fmt, long long w, long long h,
                            long long max_pixels, char *err, size_t errlen) {
    if (w < 1 || h < 1)
        return xcap_fail(err, errlen, XCAP_ERR_FORMAT, "%s: %s header gives an empty size %lldx%lld",
                    name, format_name(fmt), w, h);
    /* (w and h are below 2^32, so the product is only formed once both are small) */
    if (w > IMAGE_MAX_SIDE || h > IMAGE_MAX_SIDE || w * h > max_pixels)
        return xcap_fail(err, errlen, XCAP_ERR_UNSUPPORTED,
                    "%s: %s image is %lldx%lld, larger than xcap accepts (%d pixels per side, "
                    "%lld pixels in all)",
                    name, format_name(fmt), w, h, IMAGE_MAX_SIDE, max_pixels);
    return XCAP_OK;
}

/* Width and height straight from the header, for the formats where they sit at a fixed
 * place, so that oversized images are refused with their size even where stb's own limits
 * would only say "unknown image type". Returns 0 where the format has no such place. */
static int header_dimensions(image_format fmt, const uint8_t *d, size_t n, long long *w,
                             long long *h) {
    switch (fmt) {
    case IMG_PNG:
        if (n < 24 || memcmp(d + 12, "IHDR", 4) != 0) return 0;
        *w = be32(d + 16), *h = be32(d + 20);
        return 1;
    case IMG_GIF:
        if (n < 10) return 0;
        *w = le16(d + 6), *h = le16(d + 8);
        return 1;
    case IMG_BMP:
        if (n < 26) return 0;
        if (le32(d + 14) == 12) {
            *w = le16(d + 18), *h = le16(d + 20);
        } else {
            *w = (int32_t)le32(d + 18), *h = llabs((long long)(int32_t)le32(d + 22));
        }
        return 1;
    case IMG_PSD:
        if (n < 22) return 0;
        *h = be32(d + 14), *w = be32(d + 18);
        return 1;
    default: return 0; /* JPEG (needs a marker walk: stbi_info), TGA (no signature) */
    }
}

static int truncated(const char *name, image_format fmt, size_t have, unsigned long long need,
                     char *err, size_t errlen) {
    return xcap_fail(err, errlen, XCAP_ERR_FORMAT,
                "%s: %s file is truncated (%zu bytes, the header needs %llu)", name,
                format_name(fmt), have, need);
}

/* ---- completeness checks for the formats stb reads past the end of ---- */

static int check_bmp(const uint8_t *d, size_t n, const char *name, char *err, size_t errlen) {
    if (n < 30) return truncated(name, IMG_BMP, n, 30, err, errlen);
    uint32_t offset = le32(d + 10), header = le32(d + 14);
    long long w, h;
    uint32_t bpp, compression = 0;
    if (header == 12) { /* OS/2 BITMAPCOREHEADER */
        w = le16(d + 18), h = le16(d + 20), bpp = le16(d + 24);
    } else {
        if (n < 34) return truncated(name, IMG_BMP, n, 34, err, errlen);
        w = (int32_t)le32(d + 18), h = (int32_t)le32(d + 22);
        bpp = le16(d + 28), compression = le32(d + 30);
    }
    if (h < 0) h = -h; /* top-down rows */
    /* Uncompressed and bit-field layouts: rows padded to 4 bytes. (RLE is refused by stb.) */
    if (compression == 0 || compression == 3 || compression == 6) {
        unsigned long long stride = ((unsigned long long)w * bpp + 31) / 32 * 4;
        unsigned long long need = offset + stride * (unsigned long long)h;
        if (n < need) return truncated(name, IMG_BMP, n, need, err, errlen);
    }
    return XCAP_OK;
}

/* Bits of red and green in a 16-bit BMP that Pillow reads ("BGR;15": 5-5-5, the default,
 * or "BGR;16": 5-6-5 given as bit fields); 0 when the file is something else. */
static int bmp16_green_bits(const uint8_t *d, size_t n) {
    if (n < 34 || le32(d + 14) < 40 || le16(d + 28) != 16) return 0;
    uint32_t compression = le32(d + 30);
    if (compression == 0) return 5;
    if (compression != 3 || n < 66) return 0;
    uint32_t r = le32(d + 54), g = le32(d + 58), b = le32(d + 62);
    if (r == 0xF800 && g == 0x07E0 && b == 0x001F) return 6;
    if (r == 0x7C00 && g == 0x03E0 && b == 0x001F) return 5;
    return 0;
}

/* stb widens an n-bit channel by repeating its bits (so the top n bits are the value);
 * Pillow computes value * 255 / (2^n - 1) with integer division. */
static void bmp16_like_pillow(uint8_t *rgb, size_t count, int green_bits) {
    for (size_t i = 0; i < 3 * count; i++) {
        int bits = i % 3 == 1 ? green_bits : 5;
        int v = rgb[i] >> (8 - bits);
        rgb[i] = (uint8_t)(v * 255 / ((1 << bits) - 1));
    }
}

static int check_tga(const uint8_t *d, size_t n, const char *name, char *err, size_t errlen) {
    if (n < 18) return truncated(name, IMG_TGA, n, 18, err, errlen);
    unsigned id_len = d[0], cmap_type = d[1], type = d[2];
    unsigned cmap_len = le16(d + 5), cmap_bits = d[7];
    unsigned long long w = le16(d + 12), h = le16(d + 14), bytes_pp = (d[16] + 7u) / 8;
    unsigned long long pos = 18ull + id_len + (cmap_type == 1 ? cmap_len * ((cmap_bits + 7ull) / 8) : 0);
    if (type == 1 || type == 2 || type == 3) {
        unsigned long long need = pos + w * h * bytes_pp;
        if (n < need) return truncated(name, IMG_TGA, n, need, err, errlen);
    } else if (type == 9 || type == 10 || type == 11) {
        /* Run-length packets: walk them until every pixel is accounted for. */
        for (unsigned long long count = 0; count < w * h;) {
            if (pos >= n) return truncated(name, IMG_TGA, n, pos + 1, err, errlen);
            unsigned packet = d[pos++];
            unsigned long long run = (packet & 0x7F) + 1ull;
            pos += packet & 0x80 ? bytes_pp : run * bytes_pp;
            if (pos > n) return truncated(name, IMG_TGA, n, pos, err, errlen);
            count += run;
        }
    }
    return XCAP_OK;
}

/* *image_data receives the offset of the image data section (its compression field). */
static int check_psd(const uint8_t *d, size_t n, size_t *image_data, const char *name, char *err,
                     size_t errlen) {
    unsigned long long pos = 26;
    if (n < pos) return truncated(name, IMG_PSD, n, pos, err, errlen);
    unsigned long long channels = be16(d + 12), h = be32(d + 14), w = be32(d + 18);
    unsigned long long bytes = be16(d + 22) / 8;
    for (int section = 0; section < 3; section++) { /* mode data, resources, layers */
        if (n < pos + 4) return truncated(name, IMG_PSD, n, pos + 4, err, errlen);
        pos += 4 + (unsigned long long)be32(d + pos);
    }
    if (n < pos + 2) return truncated(name, IMG_PSD, n, pos + 2, err, errlen);
    *image_data = (size_t)pos;
    unsigned compression = be16(d + pos);
    pos += 2;
    /* The flattened image has every channel's plane; stb and Pillow read up to four. */
    unsigned long long used = channels < 4 ? channels : 4;
    if (compression == 0) {
        unsigned long long need = pos + used * h * w * bytes;
        if (n < need) return truncated(name, IMG_PSD, n, need, err, errlen);
    } else if (compression == 1) {
        unsigned long long table = pos, need = pos + channels * h * 2;
        if (n < need) return truncated(name, IMG_PSD, n, need, err, errlen);
        for (unsigned long long row = 0; row < used * h; row++) need += be16(d + table + 2 * row);
        if (n < need) return truncated(name, IMG_PSD, n, need, err, errlen);
    }
    return XCAP_OK;
}

/* stb removes a "white matte" from PSD colours wherever alpha is partial, which Pillow does
 * not (convert("RGB") just drops alpha). A copy that declares 3 channels, with the extra
 * channels' row-length entries dropped from an RLE table, makes stb read only R, G and B.
 * Returns NULL when the file has at most 3 channels (or on out of memory, with *oom set). */
static uint8_t *psd_rgb_only(const uint8_t *d, size_t n, size_t image_data, size_t *out_n,
                             int *oom) {
    *oom = 0;
    unsigned channels = be16(d + 12);
    if (channels <= 3) return NULL;
    size_t h = be32(d + 14);
    uint8_t *copy = malloc(n);
    if (!copy) {
        *oom = 1;
        return NULL;
    }
    int rle = be16(d + image_data) == 1;
    size_t table = image_data + 2, keep = rle ? 3 * h * 2 : 0, drop = rle ? (channels - 3) * h * 2 : 0;
    /* check_psd has verified that the whole table is inside the file */
    memcpy(copy, d, table + keep);
    memcpy(copy + table + keep, d + table + keep + drop, n - (table + keep + drop));
    copy[12] = 0, copy[13] = 3;
    *out_n = n - drop;
    return copy;
}

/* What the GIF's first frame needs besides stb's pixels. */
typedef struct {
    const uint8_t *palette; /* the frame's colours: local table, else global; may be NULL */
    int palette_size;
    int transparent; /* transparent index of the first frame, or -1 */
    int x, y, w, h;  /* the frame's rectangle on the logical screen */
} gif_first_frame;

/* Walks the GIF blocks up to the end of the first frame's data. A sub-block cut short is
 * truncation; data that stops at a sub-block boundary is left to the pixel-coverage check in
 * load_gif. When `patch` (a copy of d) is given, transparency is switched off there in every
 * graphic control block and the background index set to 0, so that stb draws transparent
 * pixels in their palette colour (as Pillow's P -> RGB does) and leaves pixels the data never
 * reached with alpha 0. */
static int parse_gif(const uint8_t *d, size_t n, uint8_t *patch, const char *name,
                     gif_first_frame *f, char *err, size_t errlen) {
    memset(f, 0, sizeof *f);
    f->transparent = -1;
    if (n < 13) return truncated(name, IMG_GIF, n, 13, err, errlen);
    if (patch) patch[11] = 0;
    size_t pos = 13;
    if (d[10] & 0x80) {
        f->palette = d + pos;
        f->palette_size = 2 << (d[10] & 7);
        pos += 3 * (size_t)f->palette_size;
        if (pos > n) return truncated(name, IMG_GIF, n, pos, err, errlen);
    }
    for (;;) {
        if (pos >= n) return truncated(name, IMG_GIF, n, pos + 1, err, errlen);
        uint8_t block = d[pos++];
        if (block == 0x21) { /* extension: label, then sub-blocks */
            if (pos >= n) return truncated(name, IMG_GIF, n, pos + 1, err, errlen);
            uint8_t label = d[pos++];
            if (label == 0xF9 && pos + 5 <= n && d[pos] >= 4) { /* graphic control */
                f->transparent = d[pos + 1] & 1 ? d[pos + 4] : -1;
                if (patch) patch[pos + 1] &= (uint8_t)~1u;
            }
            for (;;) {
                if (pos >= n) return truncated(name, IMG_GIF, n, pos + 1, err, errlen);
                size_t len = d[pos++];
                if (len == 0) break;
                pos += len;
            }
        } else if (block == 0x2C) { /* the first image */
            if (pos + 9 > n) return truncated(name, IMG_GIF, n, pos + 9, err, errlen);
            f->x = (int)le16(d + pos), f->y = (int)le16(d + pos + 2);
            f->w = (int)le16(d + pos + 4), f->h = (int)le16(d + pos + 6);
            uint8_t flags = d[pos + 8];
            pos += 9;
            if (flags & 0x80) {
                f->palette = d + pos;
                f->palette_size = 2 << (flags & 7);
                pos += 3 * (size_t)f->palette_size;
                if (pos > n) return truncated(name, IMG_GIF, n, pos, err, errlen);
            }
            pos += 1; /* LZW minimum code size */
            if (pos >= n) return truncated(name, IMG_GIF, n, pos + 1, err, errlen);
            while (pos < n) {
                size_t len = d[pos++];
                if (len == 0) return XCAP_OK;
                if (pos + len > n) return truncated(name, IMG_GIF, n, pos + len, err, errlen);
                pos += len;
            }
            return XCAP_OK;
        } else {
            /* Trailer before any image, or garbage: stb reports it. */
            return XCAP_OK;
        }
    }
}

/* ---- EXIF orientation ----
 * transformers' load_image(), which the image-to-text pipeline calls, runs
 * PIL.ImageOps.exif_transpose() before convert("RGB"): a phone photo stored sideways with
 * Orientation 6 reaches the model upright. Pillow 9.4 takes the tag from the first JPEG APP1
 * "Exif" segment, a PNG eXIf chunk, or (PNG, when no EXIF tag) an uncompressed iTXt
 * "XML:com.adobe.xmp" packet. Anything malformed counts as no orientation. */

/* Orientation (1..8) from TIFF-structured EXIF data, or 0. */
static int tiff_orientation(const uint8_t *t, size_t n) {
    if (n < 8) return 0;
    int little = memcmp(t, "II*\0", 4) == 0;
    if (!little && memcmp(t, "MM\0*", 4) != 0) return 0;
#define U16(p) (little ? le16(p) : be16(p))
#define U32(p) (little ? le32(p) : be32(p))
    size_t ifd = U32(t + 4);
    if (ifd > n - 2) return 0;
    size_t count = U16(t + ifd);
    for (size_t i = 0; i < count; i++) {
        size_t e = ifd + 2 + 12 * i;
        if (e + 12 > n) return 0;
        if (U16(t + e) != 0x0112) continue;
        unsigned type = U16(t + e + 2);
        if (U32(t + e + 4) != 1) return 0; /* a list of values: Pillow matches no method */
        uint32_t v = type == 3 ? U16(t + e + 8) : type == 4 ? U32(t + e + 8) : type == 1 ? t[e + 8] : 0;
        return v <= 8 ? (int)v : 0; /* SHORT, LONG or BYTE; values above 8 mean nothing */
    }
    return 0;
#undef U16
#undef U32
}

static int jpeg_orientation(const uint8_t *d, size_t n) {
    size_t pos = 2; /* after SOI */
    while (pos + 4 <= n && d[pos] == 0xFF) {
        uint8_t marker = d[pos + 1];
        if (marker == 0xFF) { /* fill byte */
            pos++;
            continue;
        }
        if (marker == 0xDA || marker == 0xD9) break; /* image data: no more headers */
        size_t len = be16(d + pos + 2);
        if (len < 2 || pos + 2 + len > n) break;
        const uint8_t *seg = d + pos + 4;
        size_t seg_n = len - 2;
        if (marker == 0xE1 && seg_n >= 6 && memcmp(seg, "Exif\0", 5) == 0)
            return tiff_orientation(seg + 6, seg_n - 6); /* the first one counts */
        pos += 2 + len;
    }
    return 0;
}

/* Pillow's XMP fallback: the regex tiff:Orientation(="|>)([0-9]). */
static int xmp_orientation(const uint8_t *x, size_t n) {
    static const char key[] = "tiff:Orientation";
    size_t k = sizeof key - 1;
    for (size_t i = 0; i + k < n; i++) {
        if (memcmp(x + i, key, k) != 0) continue;
        const uint8_t *p = x + i + k;
        size_t left = n - i - k;
        if (left >= 3 && p[0] == '=' && p[1] == '"' && p[2] >= '0' && p[2] <= '9') return p[2] - '0';
        if (left >= 2 && p[0] == '>' && p[1] >= '0' && p[1] <= '9') return p[1] - '0';
    }
    return 0;
}

static int png_orientation(const uint8_t *d, size_t n) {
    int from_exif = 0, from_xmp = 0, have_exif = 0;
    for (size_t pos = 8; pos + 12 <= n;) {
        size_t len = be32(d + pos);
        if (len > n - pos - 12) break;
        const uint8_t *type = d + pos + 4, *body = d + pos + 8;
        if (memcmp(type, "eXIf", 4) == 0) { /* the last one counts, as in Pillow */
            have_exif = 1;
            from_exif = tiff_orientation(body, len);
        } else if (memcmp(type, "iTXt", 4) == 0 && len > 18 &&
                   memcmp(body, "XML:com.adobe.xmp\0", 18) == 0 && body[18] == 0) {
            /* keyword, compression flag 0 (uncompressed), method, language\0, translated\0 */
            size_t i = 20, seen = 0;
            while (i < len && seen < 2) seen += body[i++] == 0;
            if (seen == 2) from_xmp = xmp_orientation(body + i, len - i);
        }
        if (memcmp(type, "IEND", 4) == 0) break;
        pos += 12 + len;
    }
    return have_exif && from_exif ? from_exif : from_xmp;
}

/* Pillow's Image.transpose for orientations 2..8 (FLIP_LEFT_RIGHT, ROTATE_180,
 * FLIP_TOP_BOTTOM, TRANSPOSE, ROTATE_270, TRANSVERSE, ROTATE_90). */
static int apply_orientation(uint8_t **rgb, int *w, int *h, int orientation) {
    if (orientation < 2 || orientation > 8) return XCAP_OK;
    int W = *w, H = *h, swap = orientation >= 5;
    int ow = swap ? H : W, oh = swap ? W : H;
    uint8_t *out = malloc((size_t)ow * oh * 3);
    if (!out) return XCAP_ERR_NOMEM;
    for (int y = 0; y < oh; y++)
        for (int x = 0; x < ow; x++) {
            int sx, sy;
            switch (orientation) {
            case 2: sx = W - 1 - x, sy = y; break;
            case 3: sx = W - 1 - x, sy = H - 1 - y; break;
            case 4: sx = x, sy = H - 1 - y; break;
            case 5: sx = y, sy = x; break;
            case 6: sx = y, sy = H - 1 - x; break;
            case 7: sx = W - 1 - y, sy = H - 1 - x; break;
            default: sx = W - 1 - y, sy = x; break; /* 8 */
            }
            memcpy(out + ((size_t)y * ow + x) * 3, *rgb + ((size_t)sy * W + sx) * 3, 3);
        }
    free(*rgb);
    *rgb = out;
    *w = ow, *h = oh;
    return XCAP_OK;
}

/* ---- work limits for compressed data ---- */

/* Bytes of filtered scanlines in a PNG's pixel data: each row is a filter byte and the packed
 * samples; an Adam7 image has the rows of its seven passes. 0 for a colour type or depth that
 * PNG does not define (stb refuses those itself). */
static unsigned long long png_raw_bytes(unsigned long long w, unsigned long long h, int depth,
                                        int colour, int interlaced) {
    static const int channels_of[7] = {1, 0, 3, 1, 2, 0, 4};
    if (colour > 6 || !channels_of[colour] || depth < 1 || depth > 16) return 0;
    unsigned long long bits = (unsigned long long)channels_of[colour] * depth;
    if (!interlaced) return h * ((w * bits + 7) / 8 + 1);
    static const unsigned x0[7] = {0, 4, 0, 2, 0, 1, 0}, y0[7] = {0, 0, 4, 0, 2, 0, 1};
    static const unsigned dx[7] = {8, 8, 4, 4, 2, 2, 1}, dy[7] = {8, 8, 8, 4, 4, 2, 2};
    unsigned long long total = 0;
    for (int p = 0; p < 7; p++) {
        unsigned long long pw = w > x0[p] ? (w - x0[p] + dx[p] - 1) / dx[p] : 0;
        unsigned long long ph = h > y0[p] ? (h - y0[p] + dy[p] - 1) / dy[p] : 0;
        if (pw && ph) total += ph * ((pw * bits + 7) / 8 + 1);
    }
    return total;
}

/* CRC-32 of the PNG specification (zlib's), four bits at a time from a constant table. */
static uint32_t png_crc(const uint8_t *p, size_t n) {
    static const uint32_t nibble[16] = {
        0x00000000, 0x1DB71064, 0x3B6E20C8, 0x26D930AC, 0x76DC4190, 0x6B6B51F4, 0x4DB26158, 0x5005713C,
        0xEDB88320, 0xF00F9344, 0xD6D6A3E8, 0xCB61B38C, 0x9B64C2B0, 0x86D3D2D4, 0xA00AE278, 0xBDBDF21C};
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        crc = (crc >> 4) ^ nibble[crc & 15];
        crc = (crc >> 4) ^ nibble[crc & 15];
    }
    return ~crc;
}

/* Pillow verifies the CRC of every chunk before the first IDAT and refuses the file when one is
 * wrong ("broken PNG file"); later chunks' CRCs it does not check, and stb checks none. Chunks
 * cut short by the end of the file are left to the truncation logic. */
static int check_png_crcs(const uint8_t *d, size_t n, const char *name, char *err, size_t errlen) {
    for (size_t pos = 8; pos + 8 <= n;) {
        size_t len = be32(d + pos);
        if (memcmp(d + pos + 4, "IDAT", 4) == 0 || len + 4 > n - pos - 8) break;
        if (png_crc(d + pos + 4, 4 + len) != be32(d + pos + 8 + len)) {
            char type[5];
            for (int i = 0; i < 4; i++) type[i] = d[pos + 4 + i] >= 32 && d[pos + 4 + i] < 127 ? (char)d[pos + 4 + i] : '?';
            type[4] = '\0';
            return xcap_fail(err, errlen, XCAP_ERR_FORMAT,
                        "%s: PNG chunk %s at byte %zu has a bad CRC (corrupt file)", name, type, pos);
        }
        pos += 12 + len;
    }
    return XCAP_OK;
}

/* stb inflates PNG pixel data into a buffer that keeps growing while the zlib stream goes on
 * (up to 4 GB), whatever size the header gives: a few kB of zlib data can expand to gigabytes.
 * Deflate expands data at most 1032 times, so only a stream that could outgrow the room the
 * image needs (its rows, plus some slack for the trailing zeros some writers leave) is inflated
 * here first, into a buffer of exactly that room, and refused when it does not fit. Called once
 * the header's size has passed check_dimensions. */
static int check_png_inflate(const uint8_t *d, size_t n, const char *name, char *err,
                             size_t errlen) {
    if (n < 33) return XCAP_OK; /* no complete IHDR: stb reports it */
    unsigned long long need = png_raw_bytes(be32(d + 16), be32(d + 20), d[24], d[25], d[28]);
    if (need == 0) return XCAP_OK;
    unsigned long long room = need + need / 8 + 65536;
    if (room > INT_MAX) room = INT_MAX;
    size_t idat = 0; /* compressed bytes, counting what is there of a cut chunk */
    int raw_deflate = 0; /* Apple's CgBI PNGs store deflate data without the zlib header */
    for (size_t pos = 8; pos + 8 <= n;) {
        size_t len = be32(d + pos), avail = n - pos - 8;
        if (memcmp(d + pos + 4, "IDAT", 4) == 0) idat += len < avail ? len : avail;
        if (memcmp(d + pos + 4, "CgBI", 4) == 0) raw_deflate = 1;
        if (memcmp(d + pos + 4, "IEND", 4) == 0 || len + 4 > avail) break;
        pos += 12 + len;
    }
    if ((unsigned long long)idat * 1032 + 1024 <= room) return XCAP_OK;
    char *stream = malloc(idat ? idat : 1), *rows = malloc((size_t)room);
    if (!stream || !rows) {
        free(stream);
        free(rows);
        return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "%s: out of memory", name);
    }
    size_t at = 0;
    for (size_t pos = 8; pos + 8 <= n;) {
        size_t len = be32(d + pos), avail = n - pos - 8, take = len < avail ? len : avail;
        if (memcmp(d + pos + 4, "IDAT", 4) == 0) {
            memcpy(stream + at, d + pos + 8, take);
            at += take;
        }
        if (memcmp(d + pos + 4, "IEND", 4) == 0 || len + 4 > avail) break;
        pos += 12 + len;
    }
    int got = raw_deflate ? stbi_zlib_decode_noheader_buffer(rows, (int)room, stream, (int)idat)
                          : stbi_zlib_decode_buffer(rows, (int)room, stream, (int)idat);
    free(stream);
    free(rows);
    if (got < 0 && strcmp(stb_reason(), "output buffer limit") == 0)
        return xcap_fail(err, errlen, XCAP_ERR_FORMAT,
                    "%s: PNG pixel data inflates to more than %llu bytes where the %ux%u image "
                    "needs %llu (a decompression bomb?)",
                    name, room, be32(d + 16), be32(d + 20), need);
    return XCAP_OK; /* other zlib errors: the decoder reports them in context */
}

/* A byte of the file, or 0 past its end (what stb reads there). */
static unsigned byte_at(const uint8_t *d, size_t n, size_t i) { return i < n ? d[i] : 0; }

/* Checks a JPEG's marker segments before stb reads any of them (stbi_info included), walking
 * them as stb does: segments by their length, entropy-coded data up to the next marker (0xFF
 * followed by anything but a stuffed 0x00 or a restart marker). stb 2.27 (Debian 12) trusts
 * what it reads there in ways that touch memory it should not:
 * - it builds a Huffman table from its 16 code counts without checking that they add up to at
 *   most 256, and writes past the table's arrays: such a table is refused (like stb, every
 *   table that starts inside the segment is read whole);
 * - a scan that uses a Huffman table the file never defined makes it read past its tables, and
 *   an undefined quantization table scales the pixels by uninitialised memory: refused, as
 *   libjpeg refuses them (libjpeg-turbo, and so Pillow, does fill in the standard Huffman
 *   tables for the motion-JPEG frames that leave them out; xcap does not);
 * - each progressive scan makes stb pass over every block of the image again, and a scan can be
 *   a few bytes long: more than JPEG_MAX_SCANS scans are refused. */
static int check_jpeg(const uint8_t *d, size_t n, const char *name, char *err, size_t errlen) {
    size_t scans = 0;
    int huffman_defined[2][4] = {{0}}, quant_defined[4] = {0}, progressive = 0, n_comp = 0;
    unsigned comp_id[4], comp_quant[4];
    for (size_t pos = 2; pos + 1 < n;) {
        if (d[pos] != 0xFF) { /* entropy-coded data, or padding stb skips too */
            pos++;
            continue;
        }
        uint8_t m = d[pos + 1];
        if (m == 0xFF) { /* fill byte */
            pos++;
            continue;
        }
        if (m == 0x00 || m == 0x01 || (m >= 0xD0 && m <= 0xD7)) { /* no length field */
            pos += 2;
            continue;
        }
        if (m == 0xD9 || pos + 4 > n) break; /* end of image */
        long left = (long)be16(d + pos + 2) - 2;
        if (m == 0xC4) { /* DHT: tables of class/id, 16 counts, then the symbols */
            for (size_t at = pos + 4; left > 0;) {
                unsigned id = byte_at(d, n, at), codes = 0;
                if (id >> 4 > 1 || (id & 15) > 3) break; /* stb stops there */
                huffman_defined[id >> 4][id & 15] = 1;
                for (size_t i = at + 1; i <= at + 16; i++) codes += byte_at(d, n, i);
                if (codes > 256)
                    return xcap_fail(err, errlen, XCAP_ERR_FORMAT,
                                "%s: JPEG Huffman table at byte %zu defines %u codes (at most 256): "
                                "corrupt file", name, at, codes);
                at += 17 + codes;
                left -= 17 + (long)codes;
            }
        } else if (m == 0xDB) { /* DQT: precision/id, then 64 bytes or 64 16-bit values */
            for (size_t at = pos + 4; left > 0;) {
                unsigned id = byte_at(d, n, at);
                if (id >> 4 > 1 || (id & 15) > 3) break;
                quant_defined[id & 15] = 1;
                size_t step = id >> 4 ? 129 : 65;
                at += step;
                left -= (long)step;
            }
        } else if ((m == 0xC0 || m == 0xC1 || m == 0xC2) && n_comp == 0) { /* the frame stb reads */
            progressive = m == 0xC2;
            unsigned count = byte_at(d, n, pos + 9);
            n_comp = count < 4 ? (int)count : 4;
            for (int i = 0; i < n_comp; i++) {
                comp_id[i] = byte_at(d, n, pos + 10 + 3 * i);
                comp_quant[i] = byte_at(d, n, pos + 12 + 3 * i) & 3; /* stb refuses ids above 3 */
            }
        } else if (m == 0xDA) { /* SOS: components with their Huffman tables, then the band */
            scans++;
            unsigned count = byte_at(d, n, pos + 4);
            unsigned band_start = byte_at(d, n, pos + 5 + 2 * count);
            unsigned refine = byte_at(d, n, pos + 7 + 2 * count) >> 4;
            /* baseline: DC and AC tables; progressive: DC for a first DC scan, AC for AC scans */
            int uses_dc = !progressive || (band_start == 0 && refine == 0);
            int uses_ac = !progressive || band_start > 0;
            for (unsigned i = 0; i < count && i < 4; i++) {
                unsigned id = byte_at(d, n, pos + 5 + 2 * i), tables = byte_at(d, n, pos + 6 + 2 * i);
                int c = 0;
                while (c < n_comp && comp_id[c] != id) c++;
                if (c == n_comp || tables >> 4 > 3 || (tables & 15) > 3) continue; /* stb refuses it */
                const char *missing = uses_dc && !huffman_defined[0][tables >> 4] ? "DC Huffman"
                                      : uses_ac && !huffman_defined[1][tables & 15] ? "AC Huffman"
                                      : !quant_defined[comp_quant[c]] ? "quantization"
                                                                      : NULL;
                if (missing)
                    return xcap_fail(err, errlen, XCAP_ERR_FORMAT,
                                "%s: JPEG scan at byte %zu uses a %s table the file has not defined "
                                "(%s)", name, pos, missing,
                                missing[0] == 'q' ? "corrupt file"
                                                  : "corrupt, or a motion-JPEG frame relying on the standard tables");
            }
        }
        pos += 2 + be16(d + pos + 2);
    }
    if (scans > JPEG_MAX_SCANS)
        return xcap_fail(err, errlen, XCAP_ERR_FORMAT,
                    "%s: JPEG file has %zu scans, more than the %d xcap reads (real files have about "
                    "10)", name, scans, JPEG_MAX_SCANS);
    return XCAP_OK;
}

/* ---- decoders ---- */

/* Copies stb's RGB result into a buffer the caller frees with free(). */
static int take_stb_rgb(stbi_uc *pixels, int w, int h, uint8_t **rgb, const char *name,
                        char *err, size_t errlen) {
    size_t bytes = (size_t)w * h * 3;
    *rgb = malloc(bytes);
    if (!*rgb) {
        stbi_image_free(pixels);
        return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "%s: out of memory for %dx%d pixels", name, w, h);
    }
    memcpy(*rgb, pixels, bytes);
    stbi_image_free(pixels);
    return XCAP_OK;
}

/* PNG 16-bit grey: Pillow opens it as mode I and its I -> RGB conversion clips to 255. */
static int decode_png_grey16(const uint8_t *d, size_t n, uint8_t **rgb, int *w, int *h,
                             const char *name, char *err, size_t errlen) {
    int comp;
    stbi_us *grey = stbi_load_16_from_memory(d, (int)n, w, h, &comp, 1);
    if (!grey) return XCAP_ERR_FORMAT; /* the caller words the error */
    size_t count = (size_t)*w * *h;
    *rgb = malloc(count * 3);
    if (!*rgb) {
        stbi_image_free(grey);
        return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "%s: out of memory", name);
    }
    for (size_t i = 0; i < count; i++) {
        uint8_t v = grey[i] > 255 ? 255 : (uint8_t)grey[i];
        (*rgb)[3 * i] = (*rgb)[3 * i + 1] = (*rgb)[3 * i + 2] = v;
    }
    stbi_image_free(grey);
    return XCAP_OK;
}

static int decode_png_once(const uint8_t *d, size_t n, int grey16, uint8_t **rgb, int *w, int *h,
                           const char *name, char *err, size_t errlen) {
    if (grey16) return decode_png_grey16(d, n, rgb, w, h, name, err, errlen);
    int comp;
    stbi_uc *px = stbi_load_from_memory(d, (int)n, w, h, &comp, 3);
    if (!px) return XCAP_ERR_FORMAT;
    return take_stb_rgb(px, *w, *h, rgb, name, err, errlen);
}

/* Rebuilds a PNG whose chunk list stops early: the complete chunks, what is there of a cut
 * IDAT chunk, then IEND. Returns NULL when nothing is missing (or out of memory). */
static uint8_t *close_truncated_png(const uint8_t *d, size_t n, size_t *out_n) {
    size_t pos = 8;
    while (pos + 8 <= n) {
        size_t len = be32(d + pos);
        if (memcmp(d + pos + 4, "IEND", 4) == 0) return NULL;
        if (len > n || pos + 12 + len > n) break; /* this chunk is cut */
        pos += 12 + len;
    }
    size_t keep = pos, partial = 0;
    if (pos + 8 <= n && memcmp(d + pos + 4, "IDAT", 4) == 0) {
        partial = n - (pos + 8);
        if (partial > be32(d + pos)) partial = be32(d + pos);
    }
    static const uint8_t iend[12] = {0, 0, 0, 0, 'I', 'E', 'N', 'D', 0xAE, 0x42, 0x60, 0x82};
    uint8_t *fixed = malloc(keep + (partial ? partial + 12 : 0) + sizeof iend);
    if (!fixed) return NULL;
    memcpy(fixed, d, keep);
    size_t m = keep;
    if (partial) {
        fixed[m] = (uint8_t)(partial >> 24), fixed[m + 1] = (uint8_t)(partial >> 16);
        fixed[m + 2] = (uint8_t)(partial >> 8), fixed[m + 3] = (uint8_t)partial;
        memcpy(fixed + m + 4, "IDAT", 4);
        memcpy(fixed + m + 8, d + pos + 8, partial);
        memset(fixed + m + 8 + partial, 0, 4); /* CRC: stb does not check it, nor do we */
        m += partial + 12;
    }
    memcpy(fixed + m, iend, sizeof iend);
    *out_n = m + sizeof iend;
    return fixed;
}

static int load_png(const uint8_t *d, size_t n, const char *name, uint8_t **rgb, int *w, int *h,
                    char *err, size_t errlen) {
    /* IHDR is the first chunk (stbi_info already checked): depth at 24, colour type at 25. */
    int grey16 = n > 25 && d[24] == 16 && d[25] == 0;
    int rc = check_png_crcs(d, n, name, err, errlen);
    if (rc == XCAP_OK) rc = check_png_inflate(d, n, name, err, errlen);
    if (rc) return rc;
    rc = decode_png_once(d, n, grey16, rgb, w, h, name, err, errlen);
    if (rc != XCAP_ERR_FORMAT) return rc;
    const char *first_reason = stb_reason();
    size_t fixed_n;
    uint8_t *fixed = close_truncated_png(d, n, &fixed_n);
    if (fixed) {
        rc = decode_png_once(fixed, fixed_n, grey16, rgb, w, h, name, err, errlen);
        free(fixed);
        if (rc != XCAP_ERR_FORMAT) return rc;
        return xcap_fail(err, errlen, XCAP_ERR_FORMAT,
                    "%s: PNG file is truncated (%zu bytes, pixel data incomplete; stb_image: %s)",
                    name, n, first_reason);
    }
    return xcap_fail(err, errlen, XCAP_ERR_FORMAT, "%s: PNG data is corrupt (stb_image: %s)", name,
                first_reason);
}

static int load_gif(const uint8_t *d, size_t n, const char *name, uint8_t **rgb, int *w, int *h,
                    char *err, size_t errlen) {
    gif_first_frame frame;
    uint8_t *patched = malloc(n);
    if (!patched) return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "%s: out of memory", name);
    memcpy(patched, d, n);
    int rc = parse_gif(d, n, patched, name, &frame, err, errlen);
    int comp;
    stbi_uc *rgba = rc ? NULL : stbi_load_from_memory(patched, (int)n, w, h, &comp, 4);
    free(patched);
    if (rc) return rc;
    if (!rgba)
        return xcap_fail(err, errlen, XCAP_ERR_FORMAT, "%s: GIF data is corrupt (stb_image: %s)", name,
                    stb_reason());
    size_t count = (size_t)*w * *h;
    *rgb = malloc(count * 3);
    if (!*rgb) {
        stbi_image_free(rgba);
        return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "%s: out of memory", name);
    }
    /* Pillow's first frame is palette indices; pixels the frame does not cover hold the
     * transparent index if there is one, else 0. */
    int fill = frame.transparent >= 0 ? frame.transparent : 0;
    uint8_t fill_rgb[3] = {(uint8_t)fill, (uint8_t)fill, (uint8_t)fill}; /* no table: grey */
    if (frame.palette && fill < frame.palette_size) memcpy(fill_rgb, frame.palette + 3 * fill, 3);
    size_t missing = 0;
    for (int y = 0; y < *h; y++)
        for (int x = 0; x < *w; x++) {
            size_t i = (size_t)y * *w + x;
            int inside = x >= frame.x && x < frame.x + frame.w && y >= frame.y &&
                         y < frame.y + frame.h;
            if (!inside) {
                memcpy(*rgb + 3 * i, fill_rgb, 3);
            } else {
                missing += rgba[4 * i + 3] == 0; /* never drawn: the data ran out */
                memcpy(*rgb + 3 * i, rgba + 4 * i, 3);
            }
        }
    stbi_image_free(rgba);
    if (missing) {
        free(*rgb);
        *rgb = NULL;
        return xcap_fail(err, errlen, XCAP_ERR_FORMAT,
                    "%s: GIF file is truncated (%zu bytes; %zu pixels of the first frame are "
                    "missing)",
                    name, n, missing);
    }
    return XCAP_OK;
}

/* Binary PNM (P5 grey, P6 RGB), decoded here because stb ignores maxval. Pillow's mapping
 * (PpmImagePlugin): maxval 255 is raw; otherwise value / maxval * 255 rounded half to even
 * (Python's round), except grey with maxval > 255, which Pillow keeps as a 32-bit I image
 * (scaled to 65535) that convert("RGB") then clips at 255. */
static int pnm_token(const uint8_t *d, size_t n, size_t *pos, long long *value) {
    for (;;) { /* white space and # comments */
        while (*pos < n && strchr(" \t\n\v\f\r", d[*pos]) && d[*pos]) (*pos)++;
        if (*pos < n && d[*pos] == '#') {
            while (*pos < n && d[*pos] != '\n' && d[*pos] != '\r') (*pos)++;
            continue;
        }
        break;
    }
    if (*pos >= n || d[*pos] < '0' || d[*pos] > '9') return 0;
    long long v = 0;
    while (*pos < n && d[*pos] >= '0' && d[*pos] <= '9') {
        v = v * 10 + (d[*pos] - '0');
        if (v > INT_MAX) return 0;
        (*pos)++;
    }
    *value = v;
    return 1;
}

static int load_pnm(const uint8_t *d, size_t n, const char *name, long long max_pixels,
                    uint8_t **rgb, int *w, int *h, char *err, size_t errlen) {
    int channels = d[1] == '6' ? 3 : 1;
    size_t pos = 2;
    long long width, height, maxval;
    if (!pnm_token(d, n, &pos, &width) || !pnm_token(d, n, &pos, &height) ||
        !pnm_token(d, n, &pos, &maxval) || pos >= n)
        return xcap_fail(err, errlen, XCAP_ERR_FORMAT,
                    "%s: PNM header is truncated or corrupt (expected width, height, maxval)",
                    name);
    pos++; /* the single white-space byte before the samples */
    if (maxval < 1 || maxval > 65535)
        return xcap_fail(err, errlen, XCAP_ERR_FORMAT, "%s: PNM maxval %lld is outside 1..65535",
                    name, maxval);
    int rc = check_dimensions(name, IMG_PNM, width, height, max_pixels, err, errlen);
    if (rc) return rc;
    int sample_bytes = maxval > 255 ? 2 : 1;
    size_t count = (size_t)width * height;
    unsigned long long need = pos + (unsigned long long)count * channels * sample_bytes;
    if (n < need) return truncated(name, IMG_PNM, n, need, err, errlen);
    *rgb = malloc(count * 3);
    if (!*rgb) return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "%s: out of memory", name);
    const uint8_t *s = d + pos;
    /* Grey with maxval > 255 keeps 16-bit range (then clips); everything else maps to 255. */
    int grey_wide = channels == 1 && maxval > 255;
    double out_max = grey_wide ? 65535.0 : 255.0;
    /* Pillow reads these without scaling: 8-bit 255, and grey 65535 as I;16B. */
    int raw = maxval == 255 || (grey_wide && maxval == 65535);
    for (size_t i = 0; i < count * channels; i++) {
        long long v = sample_bytes == 2 ? (long long)be16(s + 2 * i) : s[i];
        if (!raw) {
            double scaled = nearbyint((double)v / (double)maxval * out_max);
            v = scaled > out_max ? (long long)out_max : (long long)scaled;
        }
        uint8_t out = v > 255 ? 255 : (uint8_t)v;
        if (channels == 3) {
            (*rgb)[i] = out;
        } else {
            (*rgb)[3 * i] = (*rgb)[3 * i + 1] = (*rgb)[3 * i + 2] = out;
        }
    }
    *w = (int)width, *h = (int)height;
    return XCAP_OK;
}

int image_load_memory_limit(const uint8_t *data, size_t size, const char *name,
                            long long max_pixels, uint8_t **rgb, int *width, int *height,
                            char *err, size_t errlen) {
    *rgb = NULL;
    *width = *height = 0;
    if (!name) name = "(memory)";
    if (!data && size) return xcap_fail(err, errlen, XCAP_ERR_ARG, "%s: NULL data", name);
    if (max_pixels < 1 || max_pixels > IMAGE_MAX_PIXELS)
        return xcap_fail(err, errlen, XCAP_ERR_ARG, "%s: pixel limit %lld is outside 1..%lld", name,
                    max_pixels, IMAGE_MAX_PIXELS);
    if (size == 0) return xcap_fail(err, errlen, XCAP_ERR_FORMAT, "%s: empty file (0 bytes)", name);
    if (size > IMAGE_MAX_FILE_BYTES)
        return xcap_fail(err, errlen, XCAP_ERR_UNSUPPORTED, "%s: file too large (%zu bytes)", name,
                    size);
    const char *other = unsupported_format(data, size);
    if (other)
        return xcap_fail(err, errlen, XCAP_ERR_UNSUPPORTED,
                    "%s: %s images are not supported (xcap reads " SUPPORTED_FORMATS ")", name,
                    other);
    image_format fmt = sniff(data, size);
    /* A file stb would decode as a JPEG without passing the JPEG checks below: refused, as
     * Pillow refuses it. */
    if (fmt != IMG_JPEG && stb_sees_jpeg(data, size))
        return xcap_fail(err, errlen, XCAP_ERR_FORMAT,
                    "%s: not an image in a supported format (" SUPPORTED_FORMATS ")", name);
    int w, h, w_info, h_info, comp, rc;
    size_t psd_image_data = 0;
    if (fmt == IMG_PNM) {
        rc = load_pnm(data, size, name, max_pixels, rgb, &w, &h, err, errlen);
    } else {
        long long hw, hh;
        /* Bytes before the size is known: PNG signature + IHDR chunk, GIF screen descriptor,
         * BMP file header + the smallest info header, PSD header. */
        static const size_t header_need[] = {[IMG_PNG] = 33, [IMG_GIF] = 13, [IMG_BMP] = 26, [IMG_PSD] = 26};
        if (fmt < sizeof header_need / sizeof *header_need && size < header_need[fmt])
            return truncated(name, fmt, size, header_need[fmt], err, errlen);
        if (header_dimensions(fmt, data, size, &hw, &hh) &&
            (rc = check_dimensions(name, fmt, hw, hh, max_pixels, err, errlen)))
            return rc;
        if (fmt == IMG_JPEG && (rc = check_jpeg(data, size, name, err, errlen))) return rc;
        if (!stbi_info_from_memory(data, (int)size, &w_info, &h_info, &comp)) {
            if (fmt == IMG_TGA)
                return xcap_fail(err, errlen, XCAP_ERR_FORMAT,
                            "%s: not an image in a supported format (" SUPPORTED_FORMATS ")",
                            name);
            return xcap_fail(err, errlen, XCAP_ERR_FORMAT,
                        "%s: %s header is truncated or corrupt (stb_image: %s)", name,
                        format_name(fmt), stb_reason());
        }
        /* Refuse oversized images from the header alone, before stb allocates anything. */
        if ((rc = check_dimensions(name, fmt, w_info, h_info, max_pixels, err, errlen))) return rc;
        switch (fmt) {
        case IMG_BMP: rc = check_bmp(data, size, name, err, errlen); break;
        case IMG_TGA: rc = check_tga(data, size, name, err, errlen); break;
        case IMG_PSD: rc = check_psd(data, size, &psd_image_data, name, err, errlen); break;
        default: rc = XCAP_OK; break;
        }
        if (rc) return rc;
        if (fmt == IMG_PNG) {
            rc = load_png(data, size, name, rgb, &w, &h, err, errlen);
        } else if (fmt == IMG_GIF) {
            rc = load_gif(data, size, name, rgb, &w, &h, err, errlen);
        } else {
            const uint8_t *src = data;
            size_t src_n = size;
            uint8_t *rgb_only = NULL;
            int oom = 0;
            if (fmt == IMG_PSD) {
                rgb_only = psd_rgb_only(data, size, psd_image_data, &src_n, &oom);
                if (oom) return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "%s: out of memory", name);
                if (rgb_only) src = rgb_only;
            }
            stbi_uc *px = stbi_load_from_memory(src, (int)src_n, &w, &h, &comp, 3);
            free(rgb_only);
            if (!px)
                return xcap_fail(err, errlen, XCAP_ERR_FORMAT,
                            "%s: %s data is truncated or corrupt (stb_image: %s)", name,
                            format_name(fmt), stb_reason());
            rc = take_stb_rgb(px, w, h, rgb, name, err, errlen);
            int green_bits = fmt == IMG_BMP ? bmp16_green_bits(data, size) : 0;
            if (rc == XCAP_OK && green_bits) bmp16_like_pillow(*rgb, (size_t)w * h, green_bits);
        }
        if (rc == XCAP_OK && (w != w_info || h != h_info)) {
            free(*rgb);
            *rgb = NULL;
            return xcap_fail(err, errlen, XCAP_ERR_FORMAT,
                        "%s: %s decoded to %dx%d but its header says %dx%d", name,
                        format_name(fmt), w, h, w_info, h_info);
        }
    }
    if (rc) return rc;
    int orientation = fmt == IMG_JPEG ? jpeg_orientation(data, size)
                      : fmt == IMG_PNG ? png_orientation(data, size)
                                       : 0;
    if (apply_orientation(rgb, &w, &h, orientation) != XCAP_OK) {
        free(*rgb);
        *rgb = NULL;
        return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "%s: out of memory", name);
    }
    *width = w, *height = h;
    return XCAP_OK;
}

int image_load_memory(const uint8_t *data, size_t size, const char *name, uint8_t **rgb,
                      int *width, int *height, char *err, size_t errlen) {
    return image_load_memory_limit(data, size, name, IMAGE_DEFAULT_MAX_PIXELS, rgb, width, height,
                                   err, errlen);
}

int image_load_file(const char *path, uint8_t **rgb, int *width, int *height, char *err,
                    size_t errlen) {
    return image_load_file_limit(path, IMAGE_DEFAULT_MAX_PIXELS, rgb, width, height, err, errlen);
}

int image_load_file_limit(const char *path, long long max_pixels, uint8_t **rgb, int *width,
                          int *height, char *err, size_t errlen) {
    *rgb = NULL;
    *width = *height = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return xcap_fail(err, errlen, XCAP_ERR_IO, "%s: %s", path, strerror(errno));
    size_t cap = 1 << 16, len = 0;
    uint8_t *buf = malloc(cap);
    int rc = XCAP_OK;
    while (buf) {
        len += fread(buf + len, 1, cap - len, f);
        if (len < cap) break;
        if (cap > IMAGE_MAX_FILE_BYTES) {
            rc = xcap_fail(err, errlen, XCAP_ERR_UNSUPPORTED, "%s: file too large (over %zu bytes)",
                      path, IMAGE_MAX_FILE_BYTES);
            break;
        }
        uint8_t *bigger = realloc(buf, cap * 2);
        if (!bigger) free(buf);
        buf = bigger;
        cap *= 2;
    }
    if (!rc && !buf) rc = xcap_fail(err, errlen, XCAP_ERR_NOMEM, "%s: out of memory reading the file", path);
    if (!rc && ferror(f)) rc = xcap_fail(err, errlen, XCAP_ERR_IO, "%s: read error: %s", path, strerror(errno));
    fclose(f);
    if (!rc) rc = image_load_memory_limit(buf, len, path, max_pixels, rgb, width, height, err, errlen);
    free(buf);
    return rc;
}
