/* Pictures of attention maps: a patch-grid map upsampled smoothly to any size, colour-mapped
 * and blended on the image; a small bitmap font for labels; the "show, attend and tell" sheet.
 * 8-bit RGB / RGBA, interleaved, row-major. No files here (see attention_out.h). */
#ifndef XCAP_CMD_ATTENTION_DRAW_H
#define XCAP_CMD_ATTENTION_DRAW_H

#include <stdint.h>

/* How strongly the colour covers the image: alpha = DRAW_ALPHA_LOW at the map's weakest
 * patch, rising linearly to DRAW_ALPHA_HIGH at its strongest, so unattended regions stay
 * visible through a dark tint and the attended ones are clearly coloured. */
#define DRAW_ALPHA_LOW 0.30f
#define DRAW_ALPHA_HIGH 0.75f

/* The perceptual colour map (viridis: dark purple -> teal -> yellow), v in [0, 1]. */
void draw_colour(float v, uint8_t rgb[3]);

/* Heat of a rows x cols patch map drawn at w x h. The map is scaled by its own maximum (the
 * strongest patch gets the top colour) and interpolated bilinearly between patch centres
 * (edges clamped), so there are no blocky squares. With base (w x h RGB) the colour is blended
 * onto it into out as RGB; with base NULL, out is RGBA carrying the same colour and alpha (the
 * web page stacks it over the image: the browser's blend gives the same picture). */
void draw_heat(const float *grid, int rows, int cols, int w, int h, const uint8_t *base, uint8_t *out);

/* Area-average resize of RGB (each output pixel the mean of the source area it covers;
 * upscaling repeats pixels). */
void draw_resize(const uint8_t *src, int sw, int sh, uint8_t *dst, int dw, int dh);

/* Label font (stb_easy_font, ASCII; other characters print as '?'). Height of a line at scale
 * 1 in pixels, width of a string, and drawing (clipped to the image). */
#define DRAW_TEXT_HEIGHT 9
int draw_text_width(const char *text, int scale);
void draw_text(uint8_t *rgb, int w, int h, int x, int y, const char *text, int scale, const uint8_t colour[3]);

/* The sheet: a title line, then one panel per map in a grid, each the map blended on the
 * image (panel's longer side DRAW_PANEL_SIDE pixels) with its label printed under it; labels
 * too wide for a panel are shortened with "..". grids holds n_panels maps of rows*cols;
 * a NULL grid draws the plain image. Returns 0, or -1 when out of memory; *out is malloc'ed
 * RGB. */
#define DRAW_PANEL_SIDE 192
int draw_sheet(const uint8_t *rgb, int w, int h, const char *title, int n_panels, const float *const *grids,
               const char *const *labels, int rows, int cols, uint8_t **out, int *out_w, int *out_h);

/* The size that fits w x h into a side x side box (aspect kept, each side >= 1). */
void draw_fit(int w, int h, int side, int *fw, int *fh);

#endif
