/* Packed linear layers; see linear.h for why, for the layout and for the weight types. */
#include "nn/linear.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define NN_HAVE_X86 1
#endif

/* Rows of x handled by one micro-tile: 6 rows × 2 vectors of 8 = 12 accumulators, which with
 * the two weight vectors and one broadcast fills the 16 AVX registers. */
#define TILE_ROWS 6
/* Rows processed per pass over the weights, so that the x rows stay in cache while the
 * panels stream by. */
#define CHUNK_ROWS 96

static size_t padded(int N) { return ((size_t)N + NN_PANEL - 1) / NN_PANEL * NN_PANEL; }

static size_t type_size(nn_weight_type t) { return t == NN_F32 ? 4 : t == NN_F16 ? 2 : 1; }

/* ---- half precision ---- */

float nn_half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13); /* inf, nan */
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    } else if (man == 0) {
        bits = sign;
    } else { /* subnormal: normalise */
        int e = -1;
        do {
            man <<= 1;
            e++;
        } while (!(man & 0x400));
        bits = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3ff) << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

uint16_t nn_float_to_half(float f) {
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t abs = x & 0x7fffffffu;
    if (abs >= 0x7f800000u) return sign | 0x7c00 | (abs > 0x7f800000u ? 0x200 : 0); /* inf, nan */
    if (abs >= 0x477ff000u) return sign | 0x7c00;                                    /* overflows */
    if (abs < 0x38800000u) {                                                         /* subnormal or 0 */
        /* The float is a multiple of 2^-149; the half step here is 2^-24: round the scaled value. */
        float scaled = fabsf(f) * 16777216.0f; /* exact: a power of two */
        return sign | (uint16_t)lrintf(scaled);
    }
    uint32_t mant = abs & 0x7fffff, exp = (abs >> 23) - 112;
    uint32_t h = (exp << 10) | (mant >> 13), rest = mant & 0x1fff;
    if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) h++; /* nearest, ties to even; may carry */
    return sign | (uint16_t)h;
}

/* ---- packing ---- */

static int alloc_packed(nn_linear *w, nn_weight_type type, int K, int N) {
    memset(w, 0, sizeof *w);
    size_t np = padded(N);
    size_t bytes = (size_t)(K > 0 ? K : 1) * np * type_size(type);
    w->panels = aligned_alloc(64, (bytes + 63) / 64 * 64);
    w->bias = aligned_alloc(64, (np * sizeof(float) + 63) / 64 * 64);
    if (type == NN_Q8) w->scale = aligned_alloc(64, (np * sizeof(float) + 63) / 64 * 64);
    if (!w->panels || !w->bias || (type == NN_Q8 && !w->scale)) {
        nn_linear_free(w);
        return -1;
    }
    /* Only the last panel has padding columns to clear; packing writes everything else. */
    if (np != (size_t)N) {
        size_t panel_bytes = (size_t)(K > 0 ? K : 1) * NN_PANEL * type_size(type);
        memset((uint8_t *)w->panels + bytes - panel_bytes, 0, panel_bytes);
    }
    memset(w->bias, 0, np * sizeof(float));
    if (w->scale) memset(w->scale, 0, np * sizeof(float));
    w->type = type;
    w->K = K;
    w->N = N;
    return 0;
}

/* Copies one part's columns n0 .. n0+n-1 into the panels, panel by panel (threads never share
 * a panel), each panel filled in its own order: k outer, its columns inner, so the writes are
 * sequential. Element-typed loops, not a memcpy per element: packing runs once per load, but
 * over every weight of the model. Threads only for large weights: for small ones the start and
 * the spinning waits of a parallel region cost more than the copy. */
#define PACK_PART(elem_t)                                                                              \
    do {                                                                                               \
        const elem_t *src = p->weight;                                                                 \
        elem_t *dst = w->panels;                                                                       \
        const int first = n0 / NN_PANEL, last = (n0 + p->n - 1) / NN_PANEL;                            \
        _Pragma("omp parallel for schedule(static) if ((size_t)K * p->n > ((size_t)1 << 20))")         \
        for (int panel = first; panel <= last; panel++) {                                              \
            int j0 = panel * NN_PANEL < n0 ? n0 - panel * NN_PANEL : 0;                                \
            int j1 = (panel + 1) * NN_PANEL > n0 + p->n ? n0 + p->n - panel * NN_PANEL : NN_PANEL;     \
            elem_t *out = dst + (size_t)panel * K * NN_PANEL;                                          \
            for (int k = 0; k < K; k++)                                                                \
                for (int j = j0; j < j1; j++) {                                                        \
                    size_t n = (size_t)(panel * NN_PANEL + j - n0);                                    \
                    out[(size_t)k * NN_PANEL + j] = stored_nk ? src[n * K + k] : src[(size_t)k * p->n + n]; \
                }                                                                                      \
        }                                                                                              \
    } while (0)

int nn_linear_pack(nn_linear *w, nn_weight_type type, int stored_nk, const nn_linear_part *parts, int count,
                   int K) {
    int N = 0;
    for (int i = 0; i < count; i++) N += parts[i].n;
    if (alloc_packed(w, type, K, N)) return -1;
    int n0 = 0;
    for (int i = 0; i < count; i++) {
        const nn_linear_part *p = &parts[i];
        if (type == NN_F32) PACK_PART(float);
        else if (type == NN_F16) PACK_PART(uint16_t);
        else PACK_PART(int8_t);
        if (p->bias) memcpy(w->bias + n0, p->bias, (size_t)p->n * sizeof(float));
        if (type == NN_Q8) memcpy(w->scale + n0, p->scale, (size_t)p->n * sizeof(float));
        n0 += p->n;
    }
    return 0;
}

int nn_linear_pack_kn(nn_linear *w, const float *weight, const float *b, int K, int N) {
    nn_linear_part part = {weight, NULL, b, N};
    return nn_linear_pack(w, NN_F32, 0, &part, 1, K);
}

int nn_linear_pack_nk(nn_linear *w, const float *weight, const float *b, int K, int N) {
    nn_linear_part part = {weight, NULL, b, N};
    return nn_linear_pack(w, NN_F32, 1, &part, 1, K);
}

int nn_linear_pack_nk_concat(nn_linear *w, const float *const *parts, const float *const *biases,
                             const int *n_parts, int count, int K) {
    nn_linear_part list[8];
    if (count > 8) return -1;
    for (int i = 0; i < count; i++) list[i] = (nn_linear_part){parts[i], NULL, biases[i], n_parts[i]};
    return nn_linear_pack(w, NN_F32, 1, list, count, K);
}

void nn_linear_free(nn_linear *w) {
    free(w->panels);
    free(w->bias);
    free(w->scale);
    memset(w, 0, sizeof *w);
}

size_t nn_linear_weight_bytes(const nn_linear *w) { return (size_t)w->K * padded(w->N) * type_size(w->type); }

/* Element i of the panels as fp32 (dequantisation by the column scale not included). */
static float element(const nn_linear *w, size_t i) {
    switch (w->type) {
    case NN_F16: return nn_half_to_float(((const uint16_t *)w->panels)[i]);
    case NN_Q8: return (float)((const int8_t *)w->panels)[i];
    default: return ((const float *)w->panels)[i];
    }
}

void nn_linear_column(const nn_linear *w, int n, float *out) {
    size_t base = (size_t)(n / NN_PANEL) * w->K * NN_PANEL + n % NN_PANEL;
    for (int k = 0; k < w->K; k++) {
        float v = element(w, base + (size_t)k * NN_PANEL);
        out[k] = w->type == NN_Q8 ? v * w->scale[n] : v;
    }
}

void nn_linear_naive(float *y, const float *x, const float *weight_kn, const float *b, int T, int K, int N) {
    for (int t = 0; t < T; t++)
        for (int n = 0; n < N; n++) {
            float acc = b ? b[n] : 0.0f;
            for (int k = 0; k < K; k++) acc = fmaf(x[(size_t)t * K + k], weight_kn[(size_t)k * N + n], acc);
            y[(size_t)t * N + n] = acc;
        }
}

/* ---- kernels ----
 * A tile: one panel (p = its first column) against `rows` rows of x (rows <= TILE_ROWS),
 * written to out (rows × NN_PANEL, row stride out_stride). */

typedef void (*tile_fn)(float *out, size_t out_stride, const float *x, size_t x_stride, const nn_linear *w, int p,
                        int rows);

/* Portable twin of the vector tiles: the same fma chain per element. */
static void tile_portable(float *out, size_t out_stride, const float *x, size_t x_stride, const nn_linear *w, int p,
                          int rows) {
    const int K = w->K, q8 = w->type == NN_Q8;
    const size_t base = (size_t)p * K;
    for (int r = 0; r < rows; r++) {
        float acc[NN_PANEL];
        for (int j = 0; j < NN_PANEL; j++) acc[j] = q8 ? 0.0f : w->bias[p + j];
        const float *xr = x + (size_t)r * x_stride;
        for (int k = 0; k < K; k++)
            for (int j = 0; j < NN_PANEL; j++) acc[j] = fmaf(xr[k], element(w, base + (size_t)k * NN_PANEL + j), acc[j]);
        if (q8)
            for (int j = 0; j < NN_PANEL; j++) acc[j] = fmaf(acc[j], w->scale[p + j], w->bias[p + j]);
        memcpy(out + (size_t)r * out_stride, acc, sizeof acc);
    }
}

#ifdef NN_HAVE_X86
/* The register tiles are spelled out row by row (through the macros) because compilers keep
 * an array of vector accumulators in memory. A tile with fewer valid rows repeats its last row
 * pointer: the extra rows are computed and dropped, and every valid element still gets its
 * own unchanged fma chain. LOAD_W(k) sets w0, w1: the panel's 16 weights at k as fp32. */
#define AVX2_ROW(r)                                                                                    \
    do {                                                                                               \
        const __m256 xv = _mm256_broadcast_ss(xr[r] + k);                                              \
        a##r##0 = _mm256_fmadd_ps(xv, w0, a##r##0);                                                    \
        a##r##1 = _mm256_fmadd_ps(xv, w1, a##r##1);                                                    \
    } while (0)
#define AVX2_STORE(r)                                                                                  \
    do {                                                                                               \
        if (r < rows) {                                                                                \
            _mm256_storeu_ps(out + (size_t)r * out_stride, _mm256_fmadd_ps(a##r##0, s0, c0));          \
            _mm256_storeu_ps(out + (size_t)r * out_stride + 8, _mm256_fmadd_ps(a##r##1, s1, c1));      \
        }                                                                                              \
    } while (0)
#define AVX2_STORE_PLAIN(r)                                                                            \
    do {                                                                                               \
        if (r < rows) {                                                                                \
            _mm256_storeu_ps(out + (size_t)r * out_stride, a##r##0);                                   \
            _mm256_storeu_ps(out + (size_t)r * out_stride + 8, a##r##1);                               \
        }                                                                                              \
    } while (0)

/* Q8 starts its sums at 0 and applies fma(acc, scale, bias) at the end; the others start at the
 * bias and store the sums as they are. */
#define DEFINE_TILE(name, targets, elem_t, LOAD_W, Q8)                                                 \
    __attribute__((target(targets))) static void name(float *out, size_t out_stride, const float *x,  \
                                                      size_t x_stride, const nn_linear *w, int p,      \
                                                      int rows) {                                      \
        const int K = w->K;                                                                            \
        const elem_t *panel = (const elem_t *)w->panels + (size_t)p * K;                               \
        const float *xr[TILE_ROWS];                                                                    \
        for (int r = 0; r < TILE_ROWS; r++) xr[r] = x + (size_t)(r < rows ? r : rows - 1) * x_stride;  \
        const __m256 c0 = _mm256_load_ps(w->bias + p), c1 = _mm256_load_ps(w->bias + p + 8);           \
        const __m256 i0 = Q8 ? _mm256_setzero_ps() : c0, i1 = Q8 ? _mm256_setzero_ps() : c1;           \
        __m256 a00 = i0, a01 = i1, a10 = i0, a11 = i1, a20 = i0, a21 = i1;                             \
        __m256 a30 = i0, a31 = i1, a40 = i0, a41 = i1, a50 = i0, a51 = i1;                             \
        for (int k = 0; k < K; k++) {                                                                  \
            __m256 w0, w1;                                                                             \
            LOAD_W(panel + (size_t)k * NN_PANEL);                                                      \
            AVX2_ROW(0);                                                                               \
            AVX2_ROW(1);                                                                               \
            AVX2_ROW(2);                                                                               \
            AVX2_ROW(3);                                                                               \
            AVX2_ROW(4);                                                                               \
            AVX2_ROW(5);                                                                               \
        }                                                                                              \
        if (Q8) {                                                                                      \
            const __m256 s0 = _mm256_load_ps(w->scale + p), s1 = _mm256_load_ps(w->scale + p + 8);     \
            AVX2_STORE(0);                                                                             \
            AVX2_STORE(1);                                                                             \
            AVX2_STORE(2);                                                                             \
            AVX2_STORE(3);                                                                             \
            AVX2_STORE(4);                                                                             \
            AVX2_STORE(5);                                                                             \
        } else {                                                                                       \
            AVX2_STORE_PLAIN(0);                                                                       \
            AVX2_STORE_PLAIN(1);                                                                       \
            AVX2_STORE_PLAIN(2);                                                                       \
            AVX2_STORE_PLAIN(3);                                                                       \
            AVX2_STORE_PLAIN(4);                                                                       \
            AVX2_STORE_PLAIN(5);                                                                       \
        }                                                                                              \
    }

#define LOAD_F32(at)                                                                                   \
    do {                                                                                               \
        w0 = _mm256_load_ps(at);                                                                       \
        w1 = _mm256_load_ps((at) + 8);                                                                 \
    } while (0)
#define LOAD_F16(at)                                                                                   \
    do {                                                                                               \
        w0 = _mm256_cvtph_ps(_mm_load_si128((const __m128i *)(at)));                                   \
        w1 = _mm256_cvtph_ps(_mm_load_si128((const __m128i *)((at) + 8)));                             \
    } while (0)
#define LOAD_Q8(at)                                                                                    \
    do {                                                                                               \
        const __m128i q = _mm_load_si128((const __m128i *)(at));                                       \
        w0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));                                              \
        w1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(q, 8)));                           \
    } while (0)

DEFINE_TILE(tile_f32_avx2, "avx2,fma", float, LOAD_F32, 0)
DEFINE_TILE(tile_f16_avx2, "avx2,fma,f16c", uint16_t, LOAD_F16, 0)
DEFINE_TILE(tile_q8_avx2, "avx2,fma", int8_t, LOAD_Q8, 1)

/* One row against four panels at once: a decoder step with one sequence is a matrix-vector
 * product, and a single row's 2 accumulators would leave the FMA units waiting on their own
 * latency. Same fma chain per element as the tiles. */
#define DEFINE_ROW4(name, targets, elem_t, LOAD_W, Q8)                                                 \
    __attribute__((target(targets))) static void name(float *out, const float *x, const nn_linear *w, int p) { \
        const int K = w->K;                                                                            \
        const size_t panel_len = (size_t)K * NN_PANEL;                                                 \
        const elem_t *panels = (const elem_t *)w->panels + (size_t)p * K;                              \
        __m256 acc[8];                                                                                 \
        for (int i = 0; i < 8; i++) acc[i] = Q8 ? _mm256_setzero_ps() : _mm256_load_ps(w->bias + p + 8 * i); \
        for (int k = 0; k < K; k++) {                                                                  \
            const __m256 xv = _mm256_broadcast_ss(x + k);                                              \
            for (int j = 0; j < 4; j++) {                                                              \
                __m256 w0, w1;                                                                         \
                LOAD_W(panels + j * panel_len + (size_t)k * NN_PANEL);                                 \
                acc[2 * j] = _mm256_fmadd_ps(xv, w0, acc[2 * j]);                                      \
                acc[2 * j + 1] = _mm256_fmadd_ps(xv, w1, acc[2 * j + 1]);                              \
            }                                                                                          \
        }                                                                                              \
        for (int i = 0; i < 8; i++) {                                                                  \
            __m256 v = acc[i];                                                                         \
            if (Q8) v = _mm256_fmadd_ps(v, _mm256_load_ps(w->scale + p + 8 * i), _mm256_load_ps(w->bias + p + 8 * i)); \
            _mm256_storeu_ps(out + 8 * i, v);                                                          \
        }                                                                                              \
    }

DEFINE_ROW4(row4_f32_avx2, "avx2,fma", float, LOAD_F32, 0)
DEFINE_ROW4(row4_f16_avx2, "avx2,fma,f16c", uint16_t, LOAD_F16, 0)
DEFINE_ROW4(row4_q8_avx2, "avx2,fma", int8_t, LOAD_Q8, 1)
#endif

typedef void (*row4_fn)(float *out, const float *x, const nn_linear *w, int p);

typedef struct {
    tile_fn tile;
    row4_fn row4; /* NULL: single rows go through the tile */
} kernels;

static kernels pick_kernels(nn_weight_type type) {
    kernels k = {tile_portable, NULL};
#ifdef NN_HAVE_X86
    static int avx2 = -1, f16c = 0;
    if (avx2 < 0) {
        __builtin_cpu_init();
        f16c = __builtin_cpu_supports("f16c");
        avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    if (avx2 && type == NN_F32) k = (kernels){tile_f32_avx2, row4_f32_avx2};
    if (avx2 && type == NN_Q8) k = (kernels){tile_q8_avx2, row4_q8_avx2};
    if (avx2 && f16c && type == NN_F16) k = (kernels){tile_f16_avx2, row4_f16_avx2};
#endif
    return k;
}

/* Copies a tile's valid columns out of its full-width scratch (only the last panel is short). */
static void copy_cols(float *y, size_t y_stride, const float *tile, int rows, int cols) {
    for (int r = 0; r < rows; r++) memcpy(y + (size_t)r * y_stride, tile + (size_t)r * NN_PANEL, (size_t)cols * sizeof *y);
}

void nn_linear_forward(float *y, size_t y_stride, const float *x, size_t x_stride, const nn_linear *w, int T) {
    const int K = w->K, N = w->N;
    const int n_panels = (int)(padded(N) / NN_PANEL);
    const kernels kern = pick_kernels(w->type);
    if (T <= 0 || N <= 0) return;

    if (T == 1 && kern.row4) {
        const int groups = (n_panels + 3) / 4;
#pragma omp parallel for if ((size_t)K * N > 262144)
        for (int g = 0; g < groups; g++) {
            int p0 = 4 * g;
            if ((size_t)(p0 + 4) * NN_PANEL <= (size_t)N) {
                kern.row4(y + (size_t)p0 * NN_PANEL, x, w, p0 * NN_PANEL);
            } else {
                float scratch[NN_PANEL];
                for (int p = p0; p < n_panels && p < p0 + 4; p++) {
                    int n0 = p * NN_PANEL, cols = N - n0 < NN_PANEL ? N - n0 : NN_PANEL;
                    kern.tile(scratch, NN_PANEL, x, x_stride, w, n0, 1);
                    memcpy(y + n0, scratch, (size_t)cols * sizeof *y);
                }
            }
        }
        return;
    }

    /* Work items: (chunk of rows, panel). Row chunks outermost so one chunk's x rows are reused
     * across all panels while they are in cache. */
    const int chunks = (T + CHUNK_ROWS - 1) / CHUNK_ROWS;
    const long items = (long)chunks * n_panels;
#pragma omp parallel for schedule(static) if ((size_t)T * K * N > 262144)
    for (long it = 0; it < items; it++) {
        const int c = (int)(it / n_panels), p = (int)(it % n_panels);
        const int t_end = (c + 1) * CHUNK_ROWS < T ? (c + 1) * CHUNK_ROWS : T;
        const int n0 = p * NN_PANEL, cols = N - n0 < NN_PANEL ? N - n0 : NN_PANEL;
        float scratch[TILE_ROWS * NN_PANEL];
        for (int t = c * CHUNK_ROWS; t < t_end; t += TILE_ROWS) {
            const int rows = t_end - t < TILE_ROWS ? t_end - t : TILE_ROWS;
            const float *xt = x + (size_t)t * x_stride;
            float *yt = y + (size_t)t * y_stride + n0;
            if (cols == NN_PANEL) {
                kern.tile(yt, y_stride, xt, x_stride, w, n0, rows);
            } else {
                kern.tile(scratch, NN_PANEL, xt, x_stride, w, n0, rows);
                copy_cols(yt, y_stride, scratch, rows, cols);
            }
        }
    }
}
