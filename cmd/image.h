/* Image files -> 8-bit RGB pixels, the way the Hugging Face pipeline sees them: transformers'
 * load_image(), i.e. Pillow's ImageOps.exif_transpose(Image.open(f)).convert("RGB")
 * (spec §3.1). The only place in xcap that decodes image files.
 *
 * Formats: PNG (all bit depths, palette, Adam7), JPEG (baseline and progressive), BMP
 * (uncompressed), GIF (first frame), TGA, PSD (flattened RGB), PNM (binary P5/P6).
 * Conversion follows Pillow: grey -> (L, L, L); alpha dropped without compositing; palette ->
 * colours, including the transparent entry's colour; 16-bit RGB(A) and grey+alpha -> high
 * byte; 16-bit grey (PNG, PGM) -> min(value, 255), which is what Pillow's I -> RGB
 * conversion does. The EXIF orientation of JPEG and PNG files is applied, because
 * transformers' load_image() (what the image-to-text pipeline uses) calls
 * PIL.ImageOps.exif_transpose before convert("RGB"). Truncated files are errors, except where
 * Pillow accepts them (a PNG whose pixel data is complete but whose trailing chunks are
 * missing; a TGA without its footer).
 *
 * Images larger than IMAGE_MAX_SIDE per side or than the caller's max_pixels in all
 * (IMAGE_DEFAULT_MAX_PIXELS unless set) are refused from their header, before any pixel memory
 * is allocated. So are files whose compressed data would make the decoder work or allocate far
 * beyond what their header's size needs: PNG pixel data that inflates past the image's size
 * (a "zlib bomb"), progressive JPEGs with more than JPEG_MAX_SCANS scans; and JPEG Huffman
 * tables that Debian's stb 2.27 would overflow. */
#ifndef XCAP_CMD_IMAGE_H
#define XCAP_CMD_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#define IMAGE_MAX_SIDE 16384

/* The default limit on width x height: 100 megapixels (10000 x 10000), a little above Pillow's
 * decompression-bomb warning (89.5 MP) and below its refusal (179 MP). Decoding an image that
 * large takes 3 bytes a pixel for the result plus stb's buffers (up to about 16 bytes a pixel
 * for 16-bit RGBA PNG), so about 2 GB at worst. */
#define IMAGE_DEFAULT_MAX_PIXELS 100000000LL
/* The largest max_pixels a caller may set: stb's int sizes stay in range below it. */
#define IMAGE_MAX_PIXELS (1LL << 28)

/* Each progressive JPEG scan makes the decoder pass over every block of the image again, and a
 * scan can be a few bytes long. Real files have about 10 scans. */
#define JPEG_MAX_SCANS 500

/* Decodes a file. On success *rgb holds width * height * 3 bytes (row-major, interleaved),
 * to be released with free(). On failure *rgb is NULL and err names the file and the problem;
 * the return value is an xcap_status (XCAP_ERR_IO, XCAP_ERR_FORMAT, XCAP_ERR_UNSUPPORTED,
 * XCAP_ERR_NOMEM). */
int image_load_file(const char *path, uint8_t **rgb, int *width, int *height, char *err,
                    size_t errlen);

/* The same from bytes in memory; `name` stands for the file in error messages. */
int image_load_memory(const uint8_t *data, size_t size, const char *name, uint8_t **rgb,
                      int *width, int *height, char *err, size_t errlen);

/* Both with a limit on width x height other than IMAGE_DEFAULT_MAX_PIXELS: max_pixels in
 * 1..IMAGE_MAX_PIXELS (other values are an XCAP_ERR_ARG error). */
int image_load_file_limit(const char *path, long long max_pixels, uint8_t **rgb, int *width,
                          int *height, char *err, size_t errlen);
int image_load_memory_limit(const uint8_t *data, size_t size, const char *name,
                            long long max_pixels, uint8_t **rgb, int *width, int *height,
                            char *err, size_t errlen);

#endif
