/* Packed linear layers; see linear.h for why, for the layout and for the weight types. */
#include "nn/linear_internal.h"

#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* TILE_ROWS (linear_internal.h): AVX2: 6 rows × one panel (2 vectors of 8) = 12 accumulators,
 * which with the two weight vectors and one broadcast fill the 16 registers. AVX-512: 6 rows ×
 * 4 panels (one 16-float vector each) = 24 of the 32 registers, so per k 4 weight loads and 6
 * broadcasts feed 24 fmas.
 * Row tiles per pass over the weights (at most), so that the x rows stay in cache while the
 * panels stream by. The rows are cut into equal chunks so that threads get equal work. */
#define CHUNK_TILES 16

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

#ifdef NN_HAVE_X86
/* 16 at a time with F16C (round to nearest even, as above); a NaN gets the scalar code's
 * quiet NaN, not the hardware's truncated payload. */
__attribute__((target("avx512f,avx512bw,avx512vl,f16c"))) static size_t halves_avx512(uint16_t *dst, const float *src,
                                                                                     size_t n) {
    size_t i = 0;
    const __m256i quiet = _mm256_set1_epi16(0x7e00), sign = _mm256_set1_epi16((short)0x8000);
    for (; i + 16 <= n; i += 16) {
        const __m512 x = _mm512_loadu_ps(src + i);
        __m256i h = _mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        const __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
        h = _mm256_mask_mov_epi16(h, nan, _mm256_or_si256(_mm256_and_si256(h, sign), quiet));
        _mm256_storeu_si256((__m256i *)(dst + i), h);
    }
    return i;
}
#endif

void nn_floats_to_halves(uint16_t *dst, const float *src, size_t n) {
    size_t i = 0;
#ifdef NN_HAVE_X86
    if (nn_cpu_isa() == NN_ISA_AVX512) i = halves_avx512(dst, src, n);
#endif
    for (; i < n; i++) dst[i] = nn_float_to_half(src[i]);
}

/* ---- packing ---- */

/* Rows of k per panel: K, or for NN_Q8 K padded to whole activation blocks (at least one row,
 * so that every layer has memory behind it). */
static size_t packed_k(nn_weight_type type, int K) {
    const int kp = type == NN_Q8 ? nn_q8_k(K) : K;
    return kp > 0 ? (size_t)kp : 1;
}

static int alloc_packed(nn_linear *w, nn_weight_type type, int K, int N) {
    memset(w, 0, sizeof *w);
    size_t np = padded(N);
    size_t bytes = packed_k(type, K) * np * type_size(type);
    w->panels = aligned_alloc(64, (bytes + 63) / 64 * 64);
    w->bias = aligned_alloc(64, (np * sizeof(float) + 63) / 64 * 64);
    if (type == NN_Q8) w->scale = aligned_alloc(64, (np * sizeof(float) + 63) / 64 * 64);
    if (!w->panels || !w->bias || (type == NN_Q8 && !w->scale)) {
        nn_linear_free(w);
        return -1;
    }
    /* Only the last panel has padding columns to clear (and q8 panels padding k): packing
     * writes everything else. */
    if (type == NN_Q8) {
        memset(w->panels, 0, bytes);
    } else if (np != (size_t)N) {
        size_t panel_bytes = packed_k(type, K) * NN_PANEL * type_size(type);
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
 * sequential (q8: in runs of 32 bytes, a group's pair of k apart). Element-typed loops, not a
 * memcpy per element: packing runs once per load, but over every weight of the model. Threads
 * only for large weights: for small ones the start and the spinning waits of a parallel region
 * cost more than the copy. */
#define PACK_PART(elem_t, START, INDEX)                                                                 \
    do {                                                                                               \
        const elem_t *src = p->weight;                                                                 \
        elem_t *dst = w->panels;                                                                       \
        const int first = n0 / NN_PANEL, last = (n0 + p->n - 1) / NN_PANEL;                            \
        _Pragma("omp parallel for schedule(static) if ((size_t)K * p->n > ((size_t)1 << 20))")         \
        for (int panel = first; panel <= last; panel++) {                                              \
            int j0 = panel * NN_PANEL < n0 ? n0 - panel * NN_PANEL : 0;                                \
            int j1 = (panel + 1) * NN_PANEL > n0 + p->n ? n0 + p->n - panel * NN_PANEL : NN_PANEL;     \
            const int gp = type == NN_Q8 ? nn_q8_group_panels(panel * NN_PANEL, w->N) : 1;             \
            elem_t *out = dst + START(panel);                                                          \
            (void)gp;                                                                                  \
            for (int k = 0; k < K; k++)                                                                \
                for (int j = j0; j < j1; j++) {                                                        \
                    size_t n = (size_t)(panel * NN_PANEL + j - n0);                                    \
                    out[INDEX(k, j)] = stored_nk ? src[n * K + k] : src[(size_t)k * p->n + n];         \
                }                                                                                      \
        }                                                                                              \
    } while (0)

/* Where a panel starts and the index of weight (k, column j of its panel) within it: fp32 and
 * f16 panels one after the other, q8 panels interleaved in groups (linear_internal.h). */
#define PLAIN_START(panel) ((size_t)(panel) * packed_k(type, K) * NN_PANEL)
#define PLAIN_INDEX(k, j) ((size_t)(k) * NN_PANEL + (size_t)(j))
#define Q8_START(panel) nn_q8_panel_offset((panel) * NN_PANEL, (int)packed_k(type, K))
#define Q8_INDEX(k, j) nn_q8_index(k, j, gp)

int nn_linear_pack(nn_linear *w, nn_weight_type type, int stored_nk, const nn_linear_part *parts, int count,
                   int K) {
    int N = 0;
    for (int i = 0; i < count; i++) N += parts[i].n;
    if (alloc_packed(w, type, K, N)) return -1;
    int n0 = 0;
    for (int i = 0; i < count; i++) {
        const nn_linear_part *p = &parts[i];
        if (type == NN_F32) PACK_PART(float, PLAIN_START, PLAIN_INDEX);
        else if (type == NN_F16) PACK_PART(uint16_t, PLAIN_START, PLAIN_INDEX);
        else PACK_PART(int8_t, Q8_START, Q8_INDEX);
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

size_t nn_linear_packed_elems(int K, int N) { return (size_t)(K > 0 ? K : 1) * padded(N); }

/* The source's columns n0 .. n0+cols-1 as one fp32 panel, reading the source along its rows. */
static void view_panel(float *out, const float *src, size_t src_stride, int stored_nk, int K, int n0, int cols) {
    if (cols < NN_PANEL) memset(out, 0, (size_t)K * NN_PANEL * sizeof *out);
    if (stored_nk) { /* a source row per column: write it down the panel */
        for (int j = 0; j < cols; j++) {
            const float *row = src + (size_t)(n0 + j) * src_stride;
            for (int k = 0; k < K; k++) out[PLAIN_INDEX(k, j)] = row[k];
        }
    } else {
        for (int k = 0; k < K; k++)
            memcpy(out + PLAIN_INDEX(k, 0), src + (size_t)k * src_stride + n0, (size_t)cols * sizeof *out);
    }
}

/* Panels of half views are packed as fp32 in pieces of this many rows, then converted. */
#define VIEW_ROWS 64

void nn_linear_view(nn_linear *w, nn_weight_type type, void *panels, const float *zero_bias, const float *src,
                    size_t src_stride, int stored_nk, int K, int N) {
    const int n_panels = (int)(padded(N) / NN_PANEL);
    for (int p = 0; p < n_panels; p++) {
        const int n0 = p * NN_PANEL, cols = N - n0 < NN_PANEL ? N - n0 : NN_PANEL;
        if (type != NN_F16) {
            view_panel((float *)panels + (size_t)p * K * NN_PANEL, src, src_stride, stored_nk, K, n0, cols);
            continue;
        }
        uint16_t *out = (uint16_t *)panels + (size_t)p * K * NN_PANEL;
        float piece[VIEW_ROWS * NN_PANEL];
        for (int k0 = 0; k0 < K; k0 += VIEW_ROWS) {
            const int rows = K - k0 < VIEW_ROWS ? K - k0 : VIEW_ROWS;
            const float *from = stored_nk ? src + k0 : src + (size_t)k0 * src_stride;
            view_panel(piece, from, src_stride, stored_nk, rows, n0, cols);
            nn_floats_to_halves(out + PLAIN_INDEX(k0, 0), piece, (size_t)rows * NN_PANEL);
        }
    }
    *w = nn_linear_wrap(type, panels, zero_bias, K, N);
}

nn_linear nn_linear_wrap(nn_weight_type type, void *panels, const float *zero_bias, int K, int N) {
    return (nn_linear){.type = type, .panels = panels, .bias = (float *)zero_bias, .scale = NULL, .K = K, .N = N};
}

void nn_linear_free(nn_linear *w) {
    free(w->panels);
    free(w->bias);
    free(w->scale);
    memset(w, 0, sizeof *w);
}

size_t nn_linear_weight_bytes(const nn_linear *w) {
    return (w->K > 0 ? packed_k(w->type, w->K) : 0) * padded(w->N) * type_size(w->type);
}

/* Weight (k, column j) of the panel starting at column p, as fp32 (a q8 weight without its
 * column scale). */
static float element(const nn_linear *w, int p, int k, int j) {
    const size_t panel = (size_t)p * packed_k(w->type, w->K);
    switch (w->type) {
    case NN_F16: return nn_half_to_float(((const uint16_t *)w->panels)[panel + PLAIN_INDEX(k, j)]);
    case NN_Q8:
        return (float)((const int8_t *)w->panels)[nn_q8_panel_offset(p, (int)packed_k(w->type, w->K)) +
                                                  nn_q8_index(k, j, nn_q8_group_panels(p, w->N))];
    default: return ((const float *)w->panels)[panel + PLAIN_INDEX(k, j)];
    }
}

void nn_linear_column(const nn_linear *w, int n, float *out) {
    const int p = n / NN_PANEL * NN_PANEL;
    for (int k = 0; k < w->K; k++) {
        float v = element(w, p, k, n - p);
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

/* ---- fp32 and f16 kernels (tile_fn, row_fn: linear_internal.h; q8: linear_q8.c) ---- */

/* Portable twin of the vector tiles: the same fma chain per element. */
static void tile_portable(float *out, size_t out_stride, const float *x, size_t x_stride, const nn_linear *w, int p,
                          int rows) {
    for (int r = 0; r < rows; r++) {
        float acc[NN_PANEL];
        for (int j = 0; j < NN_PANEL; j++) acc[j] = w->bias[p + j];
        const float *xr = x + (size_t)r * x_stride;
        for (int k = 0; k < w->K; k++)
            for (int j = 0; j < NN_PANEL; j++) acc[j] = fmaf(xr[k], element(w, p, k, j), acc[j]);
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
            _mm256_storeu_ps(out + (size_t)r * out_stride, a##r##0);                                   \
            _mm256_storeu_ps(out + (size_t)r * out_stride + 8, a##r##1);                               \
        }                                                                                              \
    } while (0)

/* The sums start at the bias. */
#define DEFINE_TILE(name, targets, elem_t, LOAD_W)                                                     \
    __attribute__((target(targets))) static void name(float *out, size_t out_stride, const float *x,   \
                                                      size_t x_stride, const nn_linear *w, int p,      \
                                                      int rows) {                                      \
        const int K = w->K;                                                                            \
        const elem_t *panel = (const elem_t *)w->panels + (size_t)p * K;                               \
        const float *xr[TILE_ROWS];                                                                    \
        for (int r = 0; r < TILE_ROWS; r++) xr[r] = x + (size_t)(r < rows ? r : rows - 1) * x_stride;  \
        const __m256 c0 = _mm256_load_ps(w->bias + p), c1 = _mm256_load_ps(w->bias + p + 8);           \
        __m256 a00 = c0, a01 = c1, a10 = c0, a11 = c1, a20 = c0, a21 = c1;                             \
        __m256 a30 = c0, a31 = c1, a40 = c0, a41 = c1, a50 = c0, a51 = c1;                             \
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
        AVX2_STORE(0);                                                                                 \
        AVX2_STORE(1);                                                                                 \
        AVX2_STORE(2);                                                                                 \
        AVX2_STORE(3);                                                                                 \
        AVX2_STORE(4);                                                                                 \
        AVX2_STORE(5);                                                                                 \
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
DEFINE_TILE(tile_f32_avx2, "avx2,fma", float, LOAD_F32)
DEFINE_TILE(tile_f16_avx2, "avx2,fma,f16c", uint16_t, LOAD_F16)

/* One row against four panels at once: a decoder step with one sequence is a matrix-vector
 * product, and a single row's 2 accumulators would leave the FMA units waiting on their own
 * latency. Same fma chain per element as the tiles. */
#define DEFINE_ROW4(name, targets, elem_t, LOAD_W)                                                     \
    __attribute__((target(targets))) static void name(float *out, const float *x, const nn_linear *w, int p) { \
        const int K = w->K;                                                                            \
        const size_t panel_len = (size_t)K * NN_PANEL;                                                 \
        const elem_t *panels = (const elem_t *)w->panels + (size_t)p * K;                              \
        __m256 acc[8];                                                                                 \
        for (int i = 0; i < 8; i++) acc[i] = _mm256_load_ps(w->bias + p + 8 * i);                      \
        for (int k = 0; k < K; k++) {                                                                  \
            const __m256 xv = _mm256_broadcast_ss(x + k);                                              \
            for (int j = 0; j < 4; j++) {                                                              \
                __m256 w0, w1;                                                                         \
                LOAD_W(panels + j * panel_len + (size_t)k * NN_PANEL);                                 \
                acc[2 * j] = _mm256_fmadd_ps(xv, w0, acc[2 * j]);                                      \
                acc[2 * j + 1] = _mm256_fmadd_ps(xv, w1, acc[2 * j + 1]);                              \
            }                                                                                          \
        }                                                                                              \
        for (int i = 0; i < 8; i++) _mm256_storeu_ps(out + 8 * i, acc[i]);                             \
    }

DEFINE_ROW4(row4_f32_avx2, "avx2,fma", float, LOAD_F32)
DEFINE_ROW4(row4_f16_avx2, "avx2,fma,f16c", uint16_t, LOAD_F16)
/* AVX-512: one vector of 16 floats is a whole panel. ZLOAD_<type>(at) widens the panel's 16
 * weights at `at` to fp32. */
#define ZLOAD_F32(at) _mm512_load_ps(at)
#define ZLOAD_F16(at) _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)(at)))

#define Z4_ROW(r)                                                                                      \
    do {                                                                                               \
        const __m512 xv = _mm512_set1_ps(xr[r][k]);                                                    \
        a##r##0 = _mm512_fmadd_ps(xv, w0, a##r##0);                                                    \
        a##r##1 = _mm512_fmadd_ps(xv, w1, a##r##1);                                                    \
        a##r##2 = _mm512_fmadd_ps(xv, w2, a##r##2);                                                    \
        a##r##3 = _mm512_fmadd_ps(xv, w3, a##r##3);                                                    \
    } while (0)
#define Z4_STORE(r)                                                                                    \
    do {                                                                                               \
        if (r < rows) {                                                                                \
            float *o = out + (size_t)(r) * out_stride;                                                 \
            _mm512_storeu_ps(o, a##r##0);                                                              \
            _mm512_storeu_ps(o + 16, a##r##1);                                                         \
            _mm512_storeu_ps(o + 32, a##r##2);                                                         \
            _mm512_storeu_ps(o + 48, a##r##3);                                                         \
        }                                                                                              \
    } while (0)
#define Z_INIT(j) _mm512_load_ps(w->bias + p + 16 * (j))

/* Four panels (p: the first one's first column) × up to TILE_ROWS rows. */
#define DEFINE_TILE4_Z(name, elem_t, ZLOAD, STREAM)                                                    \
    __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c"))) static void name(      \
        float *out, size_t out_stride, const float *x, size_t x_stride, const nn_linear *w, int p,     \
        int rows) {                                                                                    \
        const int K = w->K;                                                                            \
        const size_t len = (size_t)K * NN_PANEL;                                                       \
        const elem_t *q0 = (const elem_t *)w->panels + (size_t)p * K, *q1 = q0 + len, *q2 = q1 + len,  \
                     *q3 = q2 + len;                                                                   \
        const float *xr[TILE_ROWS];                                                                    \
        for (int r = 0; r < TILE_ROWS; r++) xr[r] = x + (size_t)(r < rows ? r : rows - 1) * x_stride;  \
        const __m512 i0 = Z_INIT(0), i1 = Z_INIT(1), i2 = Z_INIT(2), i3 = Z_INIT(3);                   \
        __m512 a00 = i0, a01 = i1, a02 = i2, a03 = i3, a10 = i0, a11 = i1, a12 = i2, a13 = i3;         \
        __m512 a20 = i0, a21 = i1, a22 = i2, a23 = i3, a30 = i0, a31 = i1, a32 = i2, a33 = i3;         \
        __m512 a40 = i0, a41 = i1, a42 = i2, a43 = i3, a50 = i0, a51 = i1, a52 = i2, a53 = i3;         \
        const int per_line = 64 / (int)sizeof(elem_t) / NN_PANEL; /* k steps per cache line */         \
        for (int k = 0; k < K; k++) {                                                                  \
            const size_t at = (size_t)k * NN_PANEL;                                                    \
            if (STREAM && k % per_line == 0) {                                                         \
                const size_t ahead = at + (size_t)PREFETCH_BYTES(sizeof(elem_t)) / sizeof(elem_t);     \
                _mm_prefetch((const char *)(q0 + ahead), _MM_HINT_T0);                                 \
                _mm_prefetch((const char *)(q1 + ahead), _MM_HINT_T0);                                 \
                _mm_prefetch((const char *)(q2 + ahead), _MM_HINT_T0);                                 \
                _mm_prefetch((const char *)(q3 + ahead), _MM_HINT_T0);                                 \
            }                                                                                          \
            const __m512 w0 = ZLOAD(q0 + at), w1 = ZLOAD(q1 + at), w2 = ZLOAD(q2 + at),                \
                         w3 = ZLOAD(q3 + at);                                                          \
            Z4_ROW(0);                                                                                 \
            Z4_ROW(1);                                                                                 \
            Z4_ROW(2);                                                                                 \
            Z4_ROW(3);                                                                                 \
            Z4_ROW(4);                                                                                 \
            Z4_ROW(5);                                                                                 \
        }                                                                                              \
        Z4_STORE(0);                                                                                   \
        Z4_STORE(1);                                                                                   \
        Z4_STORE(2);                                                                                   \
        Z4_STORE(3);                                                                                   \
        Z4_STORE(4);                                                                                   \
        Z4_STORE(5);                                                                                   \
    }

/* One panel × up to TILE_ROWS rows: the panels left over after the groups of four. */
#define Z1_ROW(r) a##r = _mm512_fmadd_ps(_mm512_set1_ps(xr[r][k]), w0, a##r)
#define Z1_STORE(r)                                                                                    \
    do {                                                                                               \
        if (r < rows) _mm512_storeu_ps(out + (size_t)(r) * out_stride, a##r);                          \
    } while (0)
#define DEFINE_TILE1_Z(name, elem_t, ZLOAD)                                                            \
    __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c"))) static void name(      \
        float *out, size_t out_stride, const float *x, size_t x_stride, const nn_linear *w, int p,     \
        int rows) {                                                                                    \
        const int K = w->K;                                                                            \
        const elem_t *q0 = (const elem_t *)w->panels + (size_t)p * K;                                  \
        const float *xr[TILE_ROWS];                                                                    \
        for (int r = 0; r < TILE_ROWS; r++) xr[r] = x + (size_t)(r < rows ? r : rows - 1) * x_stride;  \
        __m512 a0 = Z_INIT(0), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0;                            \
        for (int k = 0; k < K; k++) {                                                                  \
            const __m512 w0 = ZLOAD(q0 + (size_t)k * NN_PANEL);                                        \
            Z1_ROW(0);                                                                                 \
            Z1_ROW(1);                                                                                 \
            Z1_ROW(2);                                                                                 \
            Z1_ROW(3);                                                                                 \
            Z1_ROW(4);                                                                                 \
            Z1_ROW(5);                                                                                 \
        }                                                                                              \
        Z1_STORE(0);                                                                                   \
        Z1_STORE(1);                                                                                   \
        Z1_STORE(2);                                                                                   \
        Z1_STORE(3);                                                                                   \
        Z1_STORE(4);                                                                                   \
        Z1_STORE(5);                                                                                   \
    }

/* One row × NP panels (NP <= 8): the matrix-vector product of a decoder step. Eight
 * independent chains keep both FMA units busy despite their latency, and eight weight streams
 * run at once; the shorter kernels finish a layer whose panel count is not a multiple of 8.
 * The `if (NP > j)` lines are resolved at compile time. */
#define ZR_PREFETCH(j)                                                                                 \
    if (NP > j) _mm_prefetch((const char *)(q##j + ahead), _MM_HINT_T0)
#define ZR_ACC(j, ZLOAD)                                                                               \
    if (NP > j) a##j = _mm512_fmadd_ps(xv, ZLOAD(q##j + at), a##j)
#define ZR_STORE(j)                                                                                    \
    if (NP > j) _mm512_storeu_ps(out + 16 * (j), a##j)
#define DEFINE_ROWN_Z(name, elem_t, ZLOAD, NP_)                                                        \
    __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c"))) static void name(      \
        float *out, const float *x, const nn_linear *w, int p) {                                       \
        enum { NP = NP_ };                                                                             \
        const int K = w->K;                                                                            \
        const size_t len = (size_t)K * NN_PANEL;                                                       \
        const elem_t *q0 = (const elem_t *)w->panels + (size_t)p * K, *q1 = q0 + len, *q2 = q1 + len,  \
                     *q3 = q2 + len, *q4 = q3 + len, *q5 = q4 + len, *q6 = q5 + len, *q7 = q6 + len;   \
        __m512 a0 = Z_INIT(0), a1 = NP > 1 ? Z_INIT(1) : a0, a2 = NP > 2 ? Z_INIT(2) : a0;             \
        __m512 a3 = NP > 3 ? Z_INIT(3) : a0, a4 = NP > 4 ? Z_INIT(4) : a0, a5 = NP > 5 ? Z_INIT(5) : a0; \
        __m512 a6 = NP > 6 ? Z_INIT(6) : a0, a7 = NP > 7 ? Z_INIT(7) : a0;                             \
        const int per_line = 64 / (int)sizeof(elem_t) / NN_PANEL; /* k steps per cache line */         \
        for (int k = 0; k < K; k++) {                                                                  \
            const size_t at = (size_t)k * NN_PANEL;                                                    \
            if (k % per_line == 0) {                                                                   \
                const size_t ahead = at + (size_t)PREFETCH_BYTES(sizeof(elem_t)) / sizeof(elem_t);     \
                ZR_PREFETCH(0);                                                                        \
                ZR_PREFETCH(1);                                                                        \
                ZR_PREFETCH(2);                                                                        \
                ZR_PREFETCH(3);                                                                        \
                ZR_PREFETCH(4);                                                                        \
                ZR_PREFETCH(5);                                                                        \
                ZR_PREFETCH(6);                                                                        \
                ZR_PREFETCH(7);                                                                        \
            }                                                                                          \
            const __m512 xv = _mm512_set1_ps(x[k]);                                                    \
            ZR_ACC(0, ZLOAD);                                                                          \
            ZR_ACC(1, ZLOAD);                                                                          \
            ZR_ACC(2, ZLOAD);                                                                          \
            ZR_ACC(3, ZLOAD);                                                                          \
            ZR_ACC(4, ZLOAD);                                                                          \
            ZR_ACC(5, ZLOAD);                                                                          \
            ZR_ACC(6, ZLOAD);                                                                          \
            ZR_ACC(7, ZLOAD);                                                                          \
        }                                                                                              \
        ZR_STORE(0);                                                                                   \
        ZR_STORE(1);                                                                                   \
        ZR_STORE(2);                                                                                   \
        ZR_STORE(3);                                                                                   \
        ZR_STORE(4);                                                                                   \
        ZR_STORE(5);                                                                                   \
        ZR_STORE(6);                                                                                   \
        ZR_STORE(7);                                                                                   \
    }
#define DEFINE_ROWS_Z(prefix, elem_t, ZLOAD)                                                           \
    DEFINE_ROWN_Z(prefix##1, elem_t, ZLOAD, 1)                                                         \
    DEFINE_ROWN_Z(prefix##2, elem_t, ZLOAD, 2)                                                         \
    DEFINE_ROWN_Z(prefix##3, elem_t, ZLOAD, 3)                                                         \
    DEFINE_ROWN_Z(prefix##4, elem_t, ZLOAD, 4)                                                         \
    DEFINE_ROWN_Z(prefix##5, elem_t, ZLOAD, 5)                                                         \
    DEFINE_ROWN_Z(prefix##6, elem_t, ZLOAD, 6)                                                         \
    DEFINE_ROWN_Z(prefix##7, elem_t, ZLOAD, 7)                                                         \
    DEFINE_ROWN_Z(prefix##8, elem_t, ZLOAD, 8)                                                         \
    static void (*const prefix[9])(float *, const float *, const nn_linear *, int) = {                 \
        NULL, prefix##1, prefix##2, prefix##3, prefix##4, prefix##5, prefix##6, prefix##7, prefix##8};

DEFINE_TILE4_Z(tile4_f32_avx512, float, ZLOAD_F32, 0)
DEFINE_TILE4_Z(tile4_f16_avx512, uint16_t, ZLOAD_F16, 0)
/* The same tiles prefetching their weights, for products of a few rows (decoder steps of
 * several beams or images), which stream the weights from memory like the single rows do. */
DEFINE_TILE4_Z(tile4s_f32_avx512, float, ZLOAD_F32, 1)
DEFINE_TILE4_Z(tile4s_f16_avx512, uint16_t, ZLOAD_F16, 1)
DEFINE_TILE1_Z(tile1_f32_avx512, float, ZLOAD_F32)
DEFINE_TILE1_Z(tile1_f16_avx512, uint16_t, ZLOAD_F16)
DEFINE_ROWS_Z(rows_f32_avx512, float, ZLOAD_F32)
DEFINE_ROWS_Z(rows_f16_avx512, uint16_t, ZLOAD_F16)
#endif

/* Up to this many rows a product reads each weight about once from memory (see tile4s). */
#define STREAM_ROWS (2 * TILE_ROWS)

static kernels pick_kernels(nn_weight_type type) {
    const nn_isa isa = nn_cpu_isa();
    if (type == NN_Q8) return nn_q8_kernels(isa);
    kernels k = {tile_portable, tile_portable, 1, NULL, 0, NULL, NULL};
#ifdef NN_HAVE_X86
    if (isa == NN_ISA_AVX512) {
        if (type == NN_F32)
            k = (kernels){tile1_f32_avx512, tile4_f32_avx512, 4, rows_f32_avx512[8], 8, rows_f32_avx512, tile4s_f32_avx512};
        if (type == NN_F16)
            k = (kernels){tile1_f16_avx512, tile4_f16_avx512, 4, rows_f16_avx512[8], 8, rows_f16_avx512, tile4s_f16_avx512};
    } else if (isa == NN_ISA_AVX2) {
        if (type == NN_F32) k = (kernels){tile_f32_avx2, tile_f32_avx2, 1, row4_f32_avx2, 4, NULL, NULL};
        if (type == NN_F16 && nn_cpu_has_f16c())
            k = (kernels){tile_f16_avx2, tile_f16_avx2, 1, row4_f16_avx2, 4, NULL, NULL};
    }
#endif
    return k;
}

/* Copies a block's valid columns out of its full-width scratch (only the last panel is short). */
static void copy_cols(float *y, size_t y_stride, const float *block, size_t block_stride, int rows, int cols) {
    for (int r = 0; r < rows; r++)
        memcpy(y + (size_t)r * y_stride, block + (size_t)r * block_stride, (size_t)cols * sizeof *y);
}

/* Rows t .. t+rows-1 (rows <= TILE_ROWS) against the panels of group g: the group's tile when
 * the group is whole, through scratch when its last panel is short; a short group panel by
 * panel. */
static void run_tile(const kernels *kern, float *y, size_t y_stride, const float *x, size_t x_stride,
                     const nn_linear *w, int g, int rows) {
    const int n_panels = (int)(padded(w->N) / NN_PANEL);
    const int p0 = g * kern->group, count = n_panels - p0 < kern->group ? n_panels - p0 : kern->group;
    float scratch[TILE_ROWS * MAX_GROUP * NN_PANEL];
    if (count == kern->group) {
        const int n0 = p0 * NN_PANEL, width = count * NN_PANEL, cols = w->N - n0 < width ? w->N - n0 : width;
        if (cols == width) {
            kern->tile_group(y + n0, y_stride, x, x_stride, w, n0, rows);
        } else {
            kern->tile_group(scratch, (size_t)width, x, x_stride, w, n0, rows);
            copy_cols(y + n0, y_stride, scratch, (size_t)width, rows, cols);
        }
        return;
    }
    for (int p = p0; p < p0 + count; p++) {
        const int n0 = p * NN_PANEL, cols = w->N - n0 < NN_PANEL ? w->N - n0 : NN_PANEL;
        if (cols == NN_PANEL) {
            kern->tile1(y + n0, y_stride, x, x_stride, w, n0, rows);
        } else {
            kern->tile1(scratch, NN_PANEL, x, x_stride, w, n0, rows);
            copy_cols(y + n0, y_stride, scratch, NN_PANEL, rows, cols);
        }
    }
}

/* One row against the panels of row group g (row_panels panels). */
static void run_row(const kernels *kern, float *y, const float *x, const nn_linear *w, int g) {
    const int n_panels = (int)(padded(w->N) / NN_PANEL);
    const int p0 = g * kern->row_panels;
    const int count = n_panels - p0 < kern->row_panels ? n_panels - p0 : kern->row_panels;
    const int n0 = p0 * NN_PANEL, width = count * NN_PANEL, cols = w->N - n0 < width ? w->N - n0 : width;
    const row_fn row = count == kern->row_panels ? kern->row : kern->row_short ? kern->row_short[count] : NULL;
    if (!row) {
        float scratch[NN_PANEL];
        for (int p = p0; p < p0 + count; p++) {
            const int m0 = p * NN_PANEL, c = w->N - m0 < NN_PANEL ? w->N - m0 : NN_PANEL;
            kern->tile1(scratch, NN_PANEL, x, 0, w, m0, 1);
            memcpy(y + m0, scratch, (size_t)c * sizeof *y);
        }
    } else if (cols == width) {
        row(y + n0, x, w, n0);
    } else {
        float scratch[MAX_GROUP * NN_PANEL];
        row(scratch, x, w, n0);
        memcpy(y + n0, scratch, (size_t)cols * sizeof *y);
    }
}

/* Item `it` of a product of many rows: (chunk of rows c, group of panels g). */
static void run_item(const kernels *kern, float *y, size_t y_stride, const float *x, size_t x_stride,
                     const nn_linear *w, int T, int chunk_rows, int groups, long it) {
    const int c = (int)(it / groups), g = (int)(it % groups);
    const int t_end = (c + 1) * chunk_rows < T ? (c + 1) * chunk_rows : T;
    for (int t = c * chunk_rows; t < t_end; t += TILE_ROWS) {
        const int rows = t_end - t < TILE_ROWS ? t_end - t : TILE_ROWS;
        run_tile(kern, y + (size_t)t * y_stride, y_stride, x + (size_t)t * x_stride, x_stride, w, g, rows);
    }
}

/* Products below this many multiply-adds run on the calling thread alone; so does every product
 * called from inside a parallel region (attention's per-head products), without even a nested
 * region. */
#define PARALLEL_MIN_FMAS 262144

/* The product once x is in the form the kernels read (fp32, or quantised rows for q8). */
static void forward(float *y, size_t y_stride, const float *x, size_t x_stride, const nn_linear *w, int T) {
    const int K = w->K, N = w->N;
    const int n_panels = (int)(padded(N) / NN_PANEL);
    const kernels kern = pick_kernels(w->type);
    const int parallel = (size_t)T * K * N > PARALLEL_MIN_FMAS && !omp_in_parallel();

    if (T == 1 && kern.row) {
        const int groups = (n_panels + kern.row_panels - 1) / kern.row_panels;
        if (!parallel) {
            for (int g = 0; g < groups; g++) run_row(&kern, y, x, w, g);
            return;
        }
#pragma omp parallel for
        for (int g = 0; g < groups; g++) run_row(&kern, y, x, w, g);
        return;
    }

    /* Work items: (chunk of rows, group of panels), chunks outermost so that one chunk's x rows
     * are reused across the panels while they are in cache. Chunks are equal in tiles. */
    const int tiles = (T + TILE_ROWS - 1) / TILE_ROWS;
    const int chunks = (tiles + CHUNK_TILES - 1) / CHUNK_TILES;
    const int chunk_rows = (tiles + chunks - 1) / chunks * TILE_ROWS;
    const int groups = (n_panels + kern.group - 1) / kern.group;
    const long items = (long)chunks * groups;
    kernels k_use = kern;
    if (T <= STREAM_ROWS && kern.tile_group_stream) k_use.tile_group = kern.tile_group_stream;
    if (!parallel) {
        for (long it = 0; it < items; it++) run_item(&k_use, y, y_stride, x, x_stride, w, T, chunk_rows, groups, it);
        return;
    }
    /* Items are handed out one at a time rather than split in fixed halves: on a shared
     * machine one core is often slowed (another process, a virtual CPU descheduled) and a fixed
     * split leaves the other waiting. Which thread runs an item never changes its bits. */
#pragma omp parallel for schedule(dynamic)
    for (long it = 0; it < items; it++) run_item(&k_use, y, y_stride, x, x_stride, w, T, chunk_rows, groups, it);
}

/* Quantised activation rows up to this size stay on the stack (a decoder step's rows); larger
 * ones (an encoder's) go to the heap, or through the stack buffer a few rows at a time when
 * the heap has no room (and a row too long even for that gives NaN: there is no error path). */
#define Q8_STACK_FLOATS 16384

size_t nn_linear_scratch_floats(int K, int T) { return (size_t)(T > 0 ? T : 0) * nn_q8_row_floats(K); }

__attribute__((noinline)) static void forward_q8(float *y, size_t y_stride, const float *x, size_t x_stride,
                                                 const nn_linear *w, int T, float *scratch, size_t scratch_floats) {
    const size_t row = nn_q8_row_floats(w->K);
    if (scratch && (size_t)T * row <= scratch_floats) {
        nn_q8_quantize(scratch, x, x_stride, T, w->K);
        forward(y, y_stride, scratch, row, w, T);
        return;
    }
    float stack[Q8_STACK_FLOATS] __attribute__((aligned(64)));
    float *heap = (size_t)T * row > Q8_STACK_FLOATS ? malloc((size_t)T * row * sizeof *heap) : NULL;
    float *buf = heap ? heap : stack;
    const int step = heap ? T : (int)(Q8_STACK_FLOATS / row);
    if (step == 0) {
        for (int t = 0; t < T; t++)
            for (int n = 0; n < w->N; n++) y[(size_t)t * y_stride + n] = NAN;
        return;
    }
    for (int t = 0; t < T; t += step) {
        const int rows = T - t < step ? T - t : step;
        nn_q8_quantize(buf, x + (size_t)t * x_stride, x_stride, rows, w->K);
        forward(y + (size_t)t * y_stride, y_stride, buf, row, w, rows);
    }
    free(heap);
}

void nn_linear_forward_scratch(float *y, size_t y_stride, const float *x, size_t x_stride, const nn_linear *w, int T,
                               float *scratch, size_t scratch_floats) {
    if (T <= 0 || w->N <= 0) return;
    if (w->type == NN_Q8) forward_q8(y, y_stride, x, x_stride, w, T, scratch, scratch_floats);
    else forward(y, y_stride, x, x_stride, w, T);
}

void nn_linear_forward(float *y, size_t y_stride, const float *x, size_t x_stride, const nn_linear *w, int T) {
    nn_linear_forward_scratch(y, y_stride, x, x_stride, w, T, NULL, 0);
}
