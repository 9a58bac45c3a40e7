#include "cmd/attention_draw.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#include <stb/stb_easy_font.h>
#pragma GCC diagnostic pop

/* matplotlib's viridis sampled at nine even stops; linear interpolation between them is
 * indistinguishable from the full 256-entry table at these sizes. */
static const uint8_t viridis_stops[9][3] = {
    {0x44, 0x01, 0x54}, {0x47, 0x2d, 0x7b}, {0x3b, 0x52, 0x8b}, {0x2c, 0x72, 0x8e}, {0x21, 0x91, 0x8c},
    {0x28, 0xae, 0x80}, {0x5e, 0xc9, 0x62}, {0xad, 0xdc, 0x30}, {0xfd, 0xe7, 0x25},
};

void draw_colour(float v, uint8_t rgb[3]) {
    if (!(v > 0)) v = 0; /* NaN too */
    if (v > 1) v = 1;
    float pos = v * 8;
    int i = (int)pos;
    if (i > 7) i = 7;
    float f = pos - i;
    for (int c = 0; c < 3; c++)
        rgb[c] = (uint8_t)(viridis_stops[i][c] + f * (viridis_stops[i + 1][c] - viridis_stops[i][c]) + 0.5f);
}

/* Where output pixel p (of n) falls between patch centres of a grid of g cells along one
 * axis: the lower cell and the weight of the upper one. Pixel centres sit at p + 0.5 and cell
 * centres at (k + 0.5)·n/g; beyond the outer centres the edge value holds. */
static void axis_weights(int n, int g, int *lower, float *frac) {
    for (int p = 0; p < n; p++) {
        float x = (p + 0.5f) * g / n - 0.5f;
        if (x < 0) x = 0;
        if (x > g - 1) x = (float)(g - 1);
        int k = (int)x;
        if (k > g - 2) k = g > 1 ? g - 2 : 0;
        lower[p] = k;
        frac[p] = g > 1 ? x - k : 0;
    }
}

void draw_heat(const float *grid, int rows, int cols, int w, int h, const uint8_t *base, uint8_t *out) {
    float peak = 0;
    for (int i = 0; i < rows * cols; i++) peak = grid[i] > peak ? grid[i] : peak;
    float scale = peak > 0 ? 1.0f / peak : 0;
    int *x0 = malloc((size_t)w * sizeof *x0), *y0 = malloc((size_t)h * sizeof *y0);
    float *fx = malloc((size_t)w * sizeof *fx), *fy = malloc((size_t)h * sizeof *fy);
    if (!x0 || !y0 || !fx || !fy) {
        /* out of memory: leave the picture plain rather than half drawn */
        if (base) memcpy(out, base, (size_t)w * h * 3);
        else memset(out, 0, (size_t)w * h * 4);
        free(x0), free(y0), free(fx), free(fy);
        return;
    }
    axis_weights(w, cols, x0, fx);
    axis_weights(h, rows, y0, fy);
    int c1 = cols > 1 ? 1 : 0;
    size_t r1 = rows > 1 ? (size_t)cols : 0;
    for (int y = 0; y < h; y++) {
        const float *g0 = grid + (size_t)y0[y] * cols, *g1 = g0 + r1;
        for (int x = 0; x < w; x++) {
            int k = x0[x];
            float top = g0[k] + fx[x] * (g0[k + c1] - g0[k]);
            float bottom = g1[k] + fx[x] * (g1[k + c1] - g1[k]);
            float v = (top + fy[y] * (bottom - top)) * scale;
            uint8_t colour[3];
            draw_colour(v, colour);
            float alpha = DRAW_ALPHA_LOW + (DRAW_ALPHA_HIGH - DRAW_ALPHA_LOW) * (v < 1 ? v : 1);
            size_t p = (size_t)y * w + x;
            if (base) {
                for (int c = 0; c < 3; c++)
                    out[p * 3 + c] = (uint8_t)(base[p * 3 + c] + alpha * (colour[c] - base[p * 3 + c]) + 0.5f);
            } else {
                memcpy(out + p * 4, colour, 3);
                out[p * 4 + 3] = (uint8_t)(alpha * 255 + 0.5f);
            }
        }
    }
    free(x0), free(y0), free(fx), free(fy);
}

/* Exact box filter along one axis: output cell o covers source [o·n/m, (o+1)·n/m); each
 * source cell i contributes its overlap with that interval. */
typedef struct {
    int first, count; /* source cells first .. first+count-1 */
    float weight[8];  /* the first few overlaps inline, the rest in extra */
    float *extra;
} box_taps;

static box_taps *box_plan(int n, int m) {
    box_taps *taps = calloc((size_t)m, sizeof *taps);
    if (!taps) return NULL;
    double step = (double)n / m;
    for (int o = 0; o < m; o++) {
        double a = o * step, b = (o + 1) * step;
        int first = (int)a, last = (int)b;
        if (last >= n) last = n - 1;
        if (last > first && b <= last) last--; /* b on a cell boundary: that cell is not covered */
        taps[o].first = first;
        taps[o].count = last - first + 1;
        float *w = taps[o].weight;
        if (taps[o].count > 8 && !(w = taps[o].extra = malloc((size_t)taps[o].count * sizeof *w))) {
            for (int k = 0; k < o; k++) free(taps[k].extra);
            free(taps);
            return NULL;
        }
        for (int i = first; i <= last; i++) {
            double lo = i > a ? i : a, hi = i + 1 < b ? i + 1 : b;
            w[i - first] = (float)((hi > lo ? hi - lo : 0) / step);
        }
    }
    return taps;
}

static void box_free(box_taps *taps, int m) {
    for (int o = 0; taps && o < m; o++) free(taps[o].extra);
    free(taps);
}

void draw_resize(const uint8_t *src, int sw, int sh, uint8_t *dst, int dw, int dh) {
    box_taps *across = box_plan(sw, dw), *down = box_plan(sh, dh);
    float *mid = malloc((size_t)dw * sh * 3 * sizeof *mid); /* rows already resized across */
    if (!across || !down || !mid) {
        memset(dst, 0, (size_t)dw * dh * 3);
        box_free(across, dw), box_free(down, dh), free(mid);
        return;
    }
    for (int y = 0; y < sh; y++)
        for (int x = 0; x < dw; x++) {
            const box_taps *t = &across[x];
            const float *w = t->extra ? t->extra : t->weight;
            float acc[3] = {0, 0, 0};
            for (int k = 0; k < t->count; k++)
                for (int c = 0; c < 3; c++) acc[c] += w[k] * src[((size_t)y * sw + t->first + k) * 3 + c];
            memcpy(mid + ((size_t)y * dw + x) * 3, acc, sizeof acc);
        }
    for (int y = 0; y < dh; y++) {
        const box_taps *t = &down[y];
        const float *w = t->extra ? t->extra : t->weight;
        for (int x = 0; x < dw * 3; x++) {
            float acc = 0;
            for (int k = 0; k < t->count; k++) acc += w[k] * mid[(size_t)(t->first + k) * dw * 3 + x];
            int v = (int)(acc + 0.5f);
            dst[(size_t)y * dw * 3 + x] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
        }
    }
    box_free(across, dw), box_free(down, dh), free(mid);
}

void draw_fit(int w, int h, int side, int *fw, int *fh) {
    if (w >= h) {
        *fw = side;
        *fh = (int)((double)h * side / w + 0.5);
    } else {
        *fh = side;
        *fw = (int)((double)w * side / h + 0.5);
    }
    if (*fw < 1) *fw = 1;
    if (*fh < 1) *fh = 1;
}

/* The text as the font can draw it: printable ASCII, one '?' per other UTF-8 character. */
static char *font_text(const char *text) {
    size_t n = strlen(text);
    char *s = malloc(n + 1), *o = s;
    if (!s) return NULL;
    for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
        if ((*p & 0xC0) == 0x80) continue; /* UTF-8 continuation byte */
        *o++ = (*p >= 32 && *p < 127) ? (char)*p : '?';
    }
    *o = '\0';
    return s;
}

int draw_text_width(const char *text, int scale) {
    char *s = font_text(text);
    int w = s ? stb_easy_font_width(s) * scale : 0;
    free(s);
    return w;
}

void draw_text(uint8_t *rgb, int w, int h, int x, int y, const char *text, int scale, const uint8_t colour[3]) {
    char *s = font_text(text);
    if (!s) return;
    /* stb_easy_font emits axis-aligned quads: 4 vertices of (x, y, z, rgba) = 16 bytes */
    size_t cap = 300 * (strlen(s) + 1);
    float *quads = malloc(cap);
    int n = quads ? stb_easy_font_print(0, 0, s, NULL, quads, (int)cap) : 0;
    for (int q = 0; q < n; q++) {
        const float *v = quads + (size_t)q * 16;
        int qx0 = x + (int)(v[0] * scale), qy0 = y + (int)(v[1] * scale);
        int qx1 = x + (int)(v[8] * scale), qy1 = y + (int)(v[9] * scale);
        for (int py = qy0 < 0 ? 0 : qy0; py < qy1 && py < h; py++)
            for (int px = qx0 < 0 ? 0 : qx0; px < qx1 && px < w; px++) memcpy(rgb + ((size_t)py * w + px) * 3, colour, 3);
    }
    free(quads);
    free(s);
}

/* The label shortened with ".." until it fits width at the largest scale that allows. */
static void fit_label(const char *label, int width, char *out, size_t outlen, int *scale) {
    for (*scale = 2; *scale >= 1; (*scale)--) {
        if (draw_text_width(label, *scale) <= width) {
            snprintf(out, outlen, "%s", label);
            return;
        }
    }
    *scale = 1;
    size_t n = strlen(label);
    for (; n > 0; n--) {
        snprintf(out, outlen, "%.*s..", (int)n, label);
        if (draw_text_width(out, 1) <= width) return;
    }
    snprintf(out, outlen, "..");
}

int draw_sheet(const uint8_t *rgb, int w, int h, const char *title, int n_panels, const float *const *grids,
               const char *const *labels, int rows, int cols, uint8_t **out, int *out_w, int *out_h) {
    enum { MARGIN = 10, GAP = 10, LABEL_BAND = 2 * DRAW_TEXT_HEIGHT + 10, TITLE_BAND = 2 * DRAW_TEXT_HEIGHT + 14 };
    int pw, ph;
    draw_fit(w, h, DRAW_PANEL_SIDE, &pw, &ph);
    int per_row = n_panels < 5 ? n_panels : 5;
    if (per_row < 1) per_row = 1;
    int n_rows = (n_panels + per_row - 1) / per_row;
    if (n_rows < 1) n_rows = 1;
    int sw = 2 * MARGIN + per_row * pw + (per_row - 1) * GAP;
    int sh = MARGIN + TITLE_BAND + n_rows * (ph + LABEL_BAND) + (n_rows - 1) * GAP + MARGIN;
    uint8_t *sheet = malloc((size_t)sw * sh * 3), *small = malloc((size_t)pw * ph * 3),
            *panel = malloc((size_t)pw * ph * 3);
    if (!sheet || !small || !panel) {
        free(sheet), free(small), free(panel);
        return -1;
    }
    memset(sheet, 255, (size_t)sw * sh * 3);
    const uint8_t ink[3] = {0, 0, 0};
    char text[512];
    int scale;
    fit_label(title, sw - 2 * MARGIN, text, sizeof text, &scale);
    draw_text(sheet, sw, sh, MARGIN, MARGIN, text, scale, ink);
    draw_resize(rgb, w, h, small, pw, ph);
    for (int i = 0; i < n_panels; i++) {
        int px = MARGIN + (i % per_row) * (pw + GAP);
        int py = MARGIN + TITLE_BAND + (i / per_row) * (ph + LABEL_BAND + GAP);
        if (grids[i]) draw_heat(grids[i], rows, cols, pw, ph, small, panel);
        else memcpy(panel, small, (size_t)pw * ph * 3);
        for (int y = 0; y < ph; y++) memcpy(sheet + ((size_t)(py + y) * sw + px) * 3, panel + (size_t)y * pw * 3, (size_t)pw * 3);
        fit_label(labels[i], pw, text, sizeof text, &scale);
        int tw = draw_text_width(text, scale);
        draw_text(sheet, sw, sh, px + (pw - tw) / 2, py + ph + 6, text, scale, ink);
    }
    free(small), free(panel);
    *out = sheet;
    *out_w = sw;
    *out_h = sh;
    return 0;
}
