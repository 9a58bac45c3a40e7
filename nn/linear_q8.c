/* Linear layers with int8 weights (NN_Q8): integer dot products on 16-bit activations.
 *
 * Why integers: widening each int8 weight to fp32 before its multiply-add (vpmovsxbd, vcvtdq2ps,
 * vfmadd per 16 weights) kept one core at about 24 G weights/s, half of what the memory
 * delivers, so a q8 decoder step was bound by instructions, not bytes. Multiplying int16
 * activations by the weights widened to int16 (vpmovsxbw, then vpmaddwd: 32 products summed in
 * pairs into 16 int32 lanes) does 32 weights per two instructions plus an add.
 *
 * The arithmetic (linear.h states it for users; every kernel family below follows it exactly):
 * each row of x is cut into blocks of NN_Q8_BLOCK values (K padded with zeros); a block with
 * largest magnitude m gets the scale d = m / 32767 and values v[k] = round(x[k] · (32767 / m)),
 * rounded to nearest, ties to even. For each output column n with int8 weights q[k][n]:
 *     acc = 0;  for each block b:  acc = fma((float) Σ_{k in b} v[k]·q[k][n], d_b, acc);
 *     y = fma(acc, s[n], bias[n]).
 * The block sums are exact in int32 (|Σ| <= 32 · 32767 · 127 < 2^31), so the order of their
 * integer additions does not matter, and the fp32 part is one fixed chain: AVX-512, AVX2 and
 * plain C give the same bits, and a row's result does not depend on the other rows. The
 * relative error of a block's values is at most 1/65534 of the block's largest magnitude, far
 * below the weights' own int8 rounding. */
#include "nn/linear_internal.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#define BLOCK_PAIRS (NN_Q8_BLOCK / 2)

size_t nn_q8_row_floats(int K) {
    const size_t kq = (size_t)nn_q8_k(K);
    return kq / 2 + kq / NN_Q8_BLOCK;
}

/* Blocks whose largest magnitude is below this are taken as zeros (32767 / m would overflow). */
#define TINY 0x1p-100f

/* One block of n <= NN_Q8_BLOCK values (the rest of the block padded with zeros). */
static void quantize_block(const float *x, int n, int16_t *v, float *d) {
    float m = 0.0f;
    for (int k = 0; k < n; k++) {
        const float a = fabsf(x[k]);
        if (a > m) m = a; /* a NaN never wins */
    }
    const float inv = m >= TINY ? 32767.0f / m : 0.0f;
    *d = m >= TINY ? m / 32767.0f : 0.0f;
    for (int k = 0; k < n; k++) {
        const float s = x[k] * inv; /* |s| <= 32767 up to one rounding; NaN -> 0 */
        v[k] = (int16_t)(s >= 32767.0f ? 32767 : s <= -32767.0f ? -32767 : s == s ? lrintf(s) : 0);
    }
    for (int k = n; k < NN_Q8_BLOCK; k++) v[k] = 0;
}

#ifdef NN_HAVE_X86
/* The same for a whole block, 16 lanes at a time: NaNs are set to 0 before the maximum (the
 * maximum is exact in any order) and before rounding (the clamps then match the scalar ones),
 * and the conversion rounds to nearest even as lrintf does. */
__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl"))) static void quantize_block_avx512(const float *x,
                                                                                              int16_t *v, float *d) {
    __m512 x0 = _mm512_loadu_ps(x), x1 = _mm512_loadu_ps(x + 16);
    x0 = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x0, x0, _CMP_ORD_Q), x0);
    x1 = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x1, x1, _CMP_ORD_Q), x1);
    const float m = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(x0), _mm512_abs_ps(x1)));
    const float inv = m >= TINY ? 32767.0f / m : 0.0f;
    *d = m >= TINY ? m / 32767.0f : 0.0f;
    const __m512 iv = _mm512_set1_ps(inv), lo = _mm512_set1_ps(-32767.0f), hi = _mm512_set1_ps(32767.0f);
    __m512 s0 = _mm512_mul_ps(x0, iv), s1 = _mm512_mul_ps(x1, iv);
    s0 = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(s0, s0, _CMP_ORD_Q), s0); /* inf · 0 */
    s1 = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(s1, s1, _CMP_ORD_Q), s1);
    s0 = _mm512_min_ps(_mm512_max_ps(s0, lo), hi);
    s1 = _mm512_min_ps(_mm512_max_ps(s1, lo), hi);
    _mm256_storeu_si256((__m256i *)v, _mm512_cvtepi32_epi16(_mm512_cvtps_epi32(s0)));
    _mm256_storeu_si256((__m256i *)(v + 16), _mm512_cvtepi32_epi16(_mm512_cvtps_epi32(s1)));
}
#endif

void nn_q8_quantize(float *dst, const float *x, size_t x_stride, int T, int K) {
    const int kq = nn_q8_k(K), blocks = kq / NN_Q8_BLOCK;
    const size_t stride = nn_q8_row_floats(K);
#ifdef NN_HAVE_X86
    const int vector = nn_cpu_isa() == NN_ISA_AVX512;
#endif
    for (int t = 0; t < T; t++) {
        const float *xr = x + (size_t)t * x_stride;
        int16_t *v = (int16_t *)(dst + (size_t)t * stride);
        float *d = (float *)(v + kq);
        for (int b = 0; b < blocks; b++) {
            const int k0 = b * NN_Q8_BLOCK, n = K - k0 < NN_Q8_BLOCK ? K - k0 : NN_Q8_BLOCK;
#ifdef NN_HAVE_X86
            if (vector && n == NN_Q8_BLOCK) {
                quantize_block_avx512(xr + k0, v + k0, d + b);
                continue;
            }
#endif
            quantize_block(xr + k0, n, v + k0, d + b);
        }
    }
}

/* The activation row of a kernel's x pointer: its values, then its block scales. */
static inline const int16_t *row_values(const float *x) { return (const int16_t *)x; }
static inline const float *row_scales(const float *x, int kq) { return (const float *)(row_values(x) + kq); }

/* Two consecutive 16-bit activations as the 32-bit lane pmaddwd multiplies a column's pair by. */
static inline int32_t pair(const int16_t *v) {
    int32_t p;
    memcpy(&p, v, sizeof p);
    return p;
}

/* The panel starting at column p (its first byte) and the bytes from one pair of k to the next
 * in its group; a kernel's other panels follow at 2 * NN_PANEL bytes apart. */
#define Q8_PANEL(q0, pair_bytes)                                                                       \
    const int8_t *q0 = (const int8_t *)w->panels + nn_q8_panel_offset(p, kq);                          \
    const size_t pair_bytes = (size_t)nn_q8_group_panels(p, w->N) * 2 * NN_PANEL

static void tile_q8_portable(float *out, size_t out_stride, const float *x, size_t x_stride, const nn_linear *w,
                             int p, int rows) {
    const int kq = nn_q8_k(w->K), blocks = kq / NN_Q8_BLOCK;
    const int8_t *panel = (const int8_t *)w->panels + nn_q8_panel_offset(p, kq);
    const int gp = nn_q8_group_panels(p, w->N);
    for (int r = 0; r < rows; r++) {
        const int16_t *v = row_values(x + (size_t)r * x_stride);
        const float *d = row_scales(x + (size_t)r * x_stride, kq);
        float acc[NN_PANEL] = {0};
        for (int b = 0; b < blocks; b++) {
            int32_t sum[NN_PANEL] = {0};
            for (int k = b * NN_Q8_BLOCK; k < (b + 1) * NN_Q8_BLOCK; k++)
                for (int j = 0; j < NN_PANEL; j++) sum[j] += (int32_t)v[k] * panel[nn_q8_index(k, j, gp)];
            for (int j = 0; j < NN_PANEL; j++) acc[j] = fmaf((float)sum[j], d[b], acc[j]);
        }
        for (int j = 0; j < NN_PANEL; j++) out[(size_t)r * out_stride + j] = fmaf(acc[j], w->scale[p + j], w->bias[p + j]);
    }
}

#ifdef NN_HAVE_X86
#define Z_TARGET __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")))
#define Y_TARGET __attribute__((target("avx2,fma")))

/* ---- AVX-512: a vector of 16 int32 lanes is a panel's 16 columns ----
 * MAC(acc, xv, w) adds the pairwise products of xv and w (int16) to the int32 lanes of acc:
 * pmaddwd, then paddd. (AVX512_VNNI's vpdpwssd does both in one instruction, but measured on a
 * Zen 5 core it gained 3% in the tiles and lost in the single rows, where each accumulator's
 * chain then waits on the fused instruction's latency instead of an add's.) */
#define MAC(acc, xv, w) _mm512_add_epi32(acc, _mm512_madd_epi16(xv, w))
/* The panel's pair of k at `at` (32 int8 weights) widened to int16. */
#define ZW(at) _mm512_cvtepi8_epi16(_mm256_load_si256((const __m256i *)(at)))
#define Z_FINISH(acc, j) _mm512_fmadd_ps(acc, _mm512_load_ps(w->scale + p + 16 * (j)), _mm512_load_ps(w->bias + p + 16 * (j)))

/* How far ahead (bytes) a single row's product prefetches its one interleaved stream: the
 * distance each of a group's panels was prefetched at when they were separate streams. */
#define Q8_PREFETCH(pair_bytes) ((pair_bytes) / (2 * NN_PANEL) * PREFETCH_BYTES(1))

/* One row × NP panels (NP <= 8, one whole group), prefetching: the matrix-vector product of a
 * decoder step. A pair of k of the group is NP · 32 contiguous bytes. */
#define QR_PREFETCH(j)                                                                                 \
    if (NP > 2 * (j)) _mm_prefetch((const char *)(row + 64 * (j) + ahead), _MM_HINT_T0)
#define QR_DOT(j)                                                                                      \
    if (NP > j) i##j = MAC(i##j, xv, ZW(row + 2 * NN_PANEL * (j)))
#define QR_BLOCK_END(j)                                                                                \
    if (NP > j) a##j = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i##j), dv, a##j)
#define QR_STORE(j)                                                                                    \
    if (NP > j) _mm512_storeu_ps(out + 16 * (j), Z_FINISH(a##j, j))
#define DEFINE_QROW_Z(name, NP_)                                                                       \
    Z_TARGET static void name(float *out, const float *x, const nn_linear *w, int p) {                 \
        enum { NP = NP_ };                                                                             \
        const int kq = nn_q8_k(w->K), blocks = kq / NN_Q8_BLOCK;                                       \
        Q8_PANEL(q0, stride);                                                                          \
        const size_t ahead = Q8_PREFETCH(stride);                                                      \
        const int16_t *v = row_values(x);                                                              \
        const float *d = row_scales(x, kq);                                                            \
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0; \
        for (int b = 0; b < blocks; b++) {                                                             \
            __m512i i0 = _mm512_setzero_si512(), i1 = i0, i2 = i0, i3 = i0, i4 = i0, i5 = i0, i6 = i0, \
                    i7 = i0;                                                                           \
            for (int g = 0; g < BLOCK_PAIRS; g++) {                                                    \
                const int kk = b * BLOCK_PAIRS + g;                                                    \
                const int8_t *row = q0 + (size_t)kk * stride;                                          \
                QR_PREFETCH(0);                                                                        \
                QR_PREFETCH(1);                                                                        \
                QR_PREFETCH(2);                                                                        \
                QR_PREFETCH(3);                                                                        \
                const __m512i xv = _mm512_set1_epi32(pair(v + 2 * kk));                                \
                QR_DOT(0);                                                                             \
                QR_DOT(1);                                                                             \
                QR_DOT(2);                                                                             \
                QR_DOT(3);                                                                             \
                QR_DOT(4);                                                                             \
                QR_DOT(5);                                                                             \
                QR_DOT(6);                                                                             \
                QR_DOT(7);                                                                             \
            }                                                                                          \
            const __m512 dv = _mm512_set1_ps(d[b]);                                                    \
            QR_BLOCK_END(0);                                                                           \
            QR_BLOCK_END(1);                                                                           \
            QR_BLOCK_END(2);                                                                           \
            QR_BLOCK_END(3);                                                                           \
            QR_BLOCK_END(4);                                                                           \
            QR_BLOCK_END(5);                                                                           \
            QR_BLOCK_END(6);                                                                           \
            QR_BLOCK_END(7);                                                                           \
        }                                                                                              \
        QR_STORE(0);                                                                                   \
        QR_STORE(1);                                                                                   \
        QR_STORE(2);                                                                                   \
        QR_STORE(3);                                                                                   \
        QR_STORE(4);                                                                                   \
        QR_STORE(5);                                                                                   \
        QR_STORE(6);                                                                                   \
        QR_STORE(7);                                                                                   \
    }
#define DEFINE_QROWS_Z(prefix)                                                                         \
    DEFINE_QROW_Z(prefix##1, 1)                                                                        \
    DEFINE_QROW_Z(prefix##2, 2)                                                                        \
    DEFINE_QROW_Z(prefix##3, 3)                                                                        \
    DEFINE_QROW_Z(prefix##4, 4)                                                                        \
    DEFINE_QROW_Z(prefix##5, 5)                                                                        \
    DEFINE_QROW_Z(prefix##6, 6)                                                                        \
    DEFINE_QROW_Z(prefix##7, 7)                                                                        \
    DEFINE_QROW_Z(prefix##8, 8)                                                                        \
    static const row_fn prefix[9] = {NULL,       prefix##1, prefix##2, prefix##3, prefix##4,           \
                                     prefix##5, prefix##6, prefix##7, prefix##8};
DEFINE_QROWS_Z(qrows_z)

/* Tiles: TILE_ROWS rows × each set of 4 panels of a group, a block at a time in two halves of
 * three rows: 12 int32 accumulators (with 24, GCC 12 spilled them to the stack at every step),
 * added into fp32 sums kept in memory (L1) once per block; the second half reads the block's
 * weights from L1. A tile with fewer valid rows repeats its last row: the extra rows are
 * computed and dropped. */
#define QT4_ROW(r)                                                                                     \
    do {                                                                                               \
        const __m512i xv = _mm512_set1_epi32(pair(v##r + 2 * kk));                                     \
        i##r##0 = MAC(i##r##0, xv, w0);                                                                \
        i##r##1 = MAC(i##r##1, xv, w1);                                                                \
        i##r##2 = MAC(i##r##2, xv, w2);                                                                \
        i##r##3 = MAC(i##r##3, xv, w3);                                                                \
    } while (0)
#define QT4_BLOCK_END(r)                                                                               \
    do {                                                                                               \
        const __m512 dv = _mm512_set1_ps(d##r[b]);                                                     \
        f[r][4 * set + 0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i##r##0), dv, f[r][4 * set + 0]);       \
        f[r][4 * set + 1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i##r##1), dv, f[r][4 * set + 1]);       \
        f[r][4 * set + 2] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i##r##2), dv, f[r][4 * set + 2]);       \
        f[r][4 * set + 3] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i##r##3), dv, f[r][4 * set + 3]);       \
    } while (0)
#define QT_ROW_PTRS                                                                                    \
    const float *xr[TILE_ROWS];                                                                        \
    for (int r = 0; r < TILE_ROWS; r++) xr[r] = x + (size_t)(r < rows ? r : rows - 1) * x_stride;      \
    const int16_t *v0 = row_values(xr[0]), *v1 = row_values(xr[1]), *v2 = row_values(xr[2]),           \
                  *v3 = row_values(xr[3]), *v4 = row_values(xr[4]), *v5 = row_values(xr[5]);           \
    const float *d0 = row_scales(xr[0], kq), *d1 = row_scales(xr[1], kq), *d2 = row_scales(xr[2], kq), \
                *d3 = row_scales(xr[3], kq), *d4 = row_scales(xr[4], kq), *d5 = row_scales(xr[5], kq)
/* Rows ra, rb, rc of block b against panels 4·set .. 4·set + 3; the first half
 * prefetches (STREAM) for both. */
#define QT4_HALF(STREAM, ra, rb, rc)                                                                   \
    do {                                                                                               \
        __m512i i##ra##0 = _mm512_setzero_si512(), i##ra##1 = i##ra##0, i##ra##2 = i##ra##0,           \
                i##ra##3 = i##ra##0, i##rb##0 = i##ra##0, i##rb##1 = i##ra##0, i##rb##2 = i##ra##0,    \
                i##rb##3 = i##ra##0, i##rc##0 = i##ra##0, i##rc##1 = i##ra##0, i##rc##2 = i##ra##0,    \
                i##rc##3 = i##ra##0;                                                                   \
        for (int g = 0; g < BLOCK_PAIRS; g++) {                                                        \
            const int kk = b * BLOCK_PAIRS + g;                                                        \
            const int8_t *row = q0 + (size_t)kk * stride + 8 * NN_PANEL * set; /* 4 panels */          \
            if (STREAM) {                                                                              \
                _mm_prefetch((const char *)(row + Q8_PREFETCH(4 * 2 * NN_PANEL)), _MM_HINT_T0);        \
                _mm_prefetch((const char *)(row + 64 + Q8_PREFETCH(4 * 2 * NN_PANEL)), _MM_HINT_T0);   \
            }                                                                                          \
            const __m512i w0 = ZW(row), w1 = ZW(row + 32), w2 = ZW(row + 64), w3 = ZW(row + 96);       \
            QT4_ROW(ra);                                                                               \
            QT4_ROW(rb);                                                                               \
            QT4_ROW(rc);                                                                               \
        }                                                                                              \
        QT4_BLOCK_END(ra);                                                                             \
        QT4_BLOCK_END(rb);                                                                             \
        QT4_BLOCK_END(rc);                                                                             \
    } while (0)
#define DEFINE_QTILE_Z(name, STREAM, SETS)                                                             \
    Z_TARGET static void name(float *out, size_t out_stride, const float *x, size_t x_stride,          \
                            const nn_linear *w, int p, int rows) {                                     \
        const int kq = nn_q8_k(w->K), blocks = kq / NN_Q8_BLOCK;                                       \
        Q8_PANEL(q0, stride);                                                                          \
        QT_ROW_PTRS;                                                                                   \
        __m512 f[TILE_ROWS][4 * SETS];                                                                 \
        for (int r = 0; r < TILE_ROWS; r++)                                                            \
            for (int j = 0; j < 4 * SETS; j++) f[r][j] = _mm512_setzero_ps();                          \
        for (int b = 0; b < blocks; b++)                                                               \
            for (int set = 0; set < SETS; set++) {                                                     \
                QT4_HALF(STREAM, 0, 1, 2);                                                             \
                if (rows > 3) QT4_HALF(0, 3, 4, 5);                                                    \
            }                                                                                          \
        for (int r = 0; r < rows; r++)                                                                 \
            for (int j = 0; j < 4 * SETS; j++)                                                         \
                _mm512_storeu_ps(out + (size_t)r * out_stride + 16 * j, Z_FINISH(f[r][j], j));         \
    }
/* TILE_ROWS rows × a whole group of 8 panels, a block at a time: its two sets of four panels
 * one after the other, so that the block's weights (the group's interleaved 4 KiB) are read as
 * one stretch. (Tiles of four panels as separate work items ran q8 encoder products about 8%
 * slower than with the panels stored one after the other.) */
DEFINE_QTILE_Z(qtile8_z, 0, 2)
/* The same prefetching its weights, for products of a few rows (decoder steps of several beams
 * or images), which stream the weights from memory like the single rows do. */
DEFINE_QTILE_Z(qtile8s_z, 1, 2)

/* TILE_ROWS rows × 1 panel: the panels left over after the groups of four. */
#define QT1_ROW(r) i##r = MAC(i##r, _mm512_set1_epi32(pair(v##r + 2 * kk)), w0)
#define QT1_BLOCK_END(r) f##r = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i##r), _mm512_set1_ps(d##r[b]), f##r)
#define QT1_STORE(r)                                                                                   \
    if (r < rows) _mm512_storeu_ps(out + (size_t)(r) * out_stride, Z_FINISH(f##r, 0))
#define DEFINE_QTILE1_Z(name)                                                                          \
    Z_TARGET static void name(float *out, size_t out_stride, const float *x, size_t x_stride,          \
                            const nn_linear *w, int p, int rows) {                                     \
        const int kq = nn_q8_k(w->K), blocks = kq / NN_Q8_BLOCK;                                       \
        Q8_PANEL(q0, stride);                                                                          \
        QT_ROW_PTRS;                                                                                   \
        __m512 f0 = _mm512_setzero_ps(), f1 = f0, f2 = f0, f3 = f0, f4 = f0, f5 = f0;                  \
        for (int b = 0; b < blocks; b++) {                                                             \
            __m512i i0 = _mm512_setzero_si512(), i1 = i0, i2 = i0, i3 = i0, i4 = i0, i5 = i0;          \
            for (int g = 0; g < BLOCK_PAIRS; g++) {                                                    \
                const int kk = b * BLOCK_PAIRS + g;                                                    \
                const __m512i w0 = ZW(q0 + (size_t)kk * stride);                                       \
                QT1_ROW(0);                                                                            \
                QT1_ROW(1);                                                                            \
                QT1_ROW(2);                                                                            \
                QT1_ROW(3);                                                                            \
                QT1_ROW(4);                                                                            \
                QT1_ROW(5);                                                                            \
            }                                                                                          \
            QT1_BLOCK_END(0);                                                                          \
            QT1_BLOCK_END(1);                                                                          \
            QT1_BLOCK_END(2);                                                                          \
            QT1_BLOCK_END(3);                                                                          \
            QT1_BLOCK_END(4);                                                                          \
            QT1_BLOCK_END(5);                                                                          \
        }                                                                                              \
        QT1_STORE(0);                                                                                  \
        QT1_STORE(1);                                                                                  \
        QT1_STORE(2);                                                                                  \
        QT1_STORE(3);                                                                                  \
        QT1_STORE(4);                                                                                  \
        QT1_STORE(5);                                                                                  \
    }
DEFINE_QTILE1_Z(qtile1_z)

/* ---- AVX2: a panel's 16 columns are two vectors of 8 int32 lanes (low, high) ---- */

/* The pair of k at `at` of the panel's columns 0-7 (half 0) or 8-15 (half 1), widened to int16. */
#define Y_LOAD(at, half) _mm256_cvtepi8_epi16(_mm_load_si128((const __m128i *)((at) + 16 * (half))))
#define Y_FINISH(acc, col)                                                                             \
    _mm256_fmadd_ps(acc, _mm256_load_ps(w->scale + p + (col)), _mm256_load_ps(w->bias + p + (col)))

/* TILE_ROWS rows × 1 panel: 12 int32 accumulators, fp32 sums in memory. */
#define YT_ROW(r)                                                                                      \
    do {                                                                                               \
        const __m256i xv = _mm256_set1_epi32(pair(v##r + 2 * kk));                                     \
        i##r##0 = _mm256_add_epi32(i##r##0, _mm256_madd_epi16(xv, w0));                                \
        i##r##1 = _mm256_add_epi32(i##r##1, _mm256_madd_epi16(xv, w1));                                \
    } while (0)
#define YT_BLOCK_END(r)                                                                                \
    do {                                                                                               \
        const __m256 dv = _mm256_set1_ps(d##r[b]);                                                     \
        f[r][0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i##r##0), dv, f[r][0]);                           \
        f[r][1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i##r##1), dv, f[r][1]);                           \
    } while (0)
Y_TARGET static void qtile_y(float *out, size_t out_stride, const float *x, size_t x_stride, const nn_linear *w,
                             int p, int rows) {
    const int kq = nn_q8_k(w->K), blocks = kq / NN_Q8_BLOCK;
    Q8_PANEL(q0, stride);
    QT_ROW_PTRS;
    __m256 f[TILE_ROWS][2];
    for (int r = 0; r < TILE_ROWS; r++) f[r][0] = f[r][1] = _mm256_setzero_ps();
    for (int b = 0; b < blocks; b++) {
        __m256i i00 = _mm256_setzero_si256(), i01 = i00, i10 = i00, i11 = i00, i20 = i00, i21 = i00;
        __m256i i30 = i00, i31 = i00, i40 = i00, i41 = i00, i50 = i00, i51 = i00;
        for (int g = 0; g < BLOCK_PAIRS; g++) {
            const int kk = b * BLOCK_PAIRS + g;
            const int8_t *at = q0 + (size_t)kk * stride;
            const __m256i w0 = Y_LOAD(at, 0), w1 = Y_LOAD(at, 1);
            YT_ROW(0);
            YT_ROW(1);
            YT_ROW(2);
            YT_ROW(3);
            YT_ROW(4);
            YT_ROW(5);
        }
        YT_BLOCK_END(0);
        YT_BLOCK_END(1);
        YT_BLOCK_END(2);
        YT_BLOCK_END(3);
        YT_BLOCK_END(4);
        YT_BLOCK_END(5);
    }
    for (int r = 0; r < rows; r++) {
        _mm256_storeu_ps(out + (size_t)r * out_stride, Y_FINISH(f[r][0], 0));
        _mm256_storeu_ps(out + (size_t)r * out_stride + 8, Y_FINISH(f[r][1], 8));
    }
}

/* One row × 4 panels: 8 int32 accumulators, fp32 sums in memory. */
Y_TARGET static void qrow4_y(float *out, const float *x, const nn_linear *w, int p) {
    const int kq = nn_q8_k(w->K), blocks = kq / NN_Q8_BLOCK;
    Q8_PANEL(q0, stride);
    const size_t len = 2 * NN_PANEL; /* from one panel's pair to the next panel's */
    const int16_t *v = row_values(x);
    const float *d = row_scales(x, kq);
    __m256 f[8];
    for (int i = 0; i < 8; i++) f[i] = _mm256_setzero_ps();
    for (int b = 0; b < blocks; b++) {
        __m256i i0 = _mm256_setzero_si256(), i1 = i0, i2 = i0, i3 = i0, i4 = i0, i5 = i0, i6 = i0, i7 = i0;
        for (int g = 0; g < BLOCK_PAIRS; g++) {
            const int kk = b * BLOCK_PAIRS + g;
            const int8_t *at = q0 + (size_t)kk * stride;
            const __m256i xv = _mm256_set1_epi32(pair(v + 2 * kk));
            i0 = _mm256_add_epi32(i0, _mm256_madd_epi16(xv, Y_LOAD(at, 0)));
            i1 = _mm256_add_epi32(i1, _mm256_madd_epi16(xv, Y_LOAD(at, 1)));
            i2 = _mm256_add_epi32(i2, _mm256_madd_epi16(xv, Y_LOAD(at + len, 0)));
            i3 = _mm256_add_epi32(i3, _mm256_madd_epi16(xv, Y_LOAD(at + len, 1)));
            i4 = _mm256_add_epi32(i4, _mm256_madd_epi16(xv, Y_LOAD(at + 2 * len, 0)));
            i5 = _mm256_add_epi32(i5, _mm256_madd_epi16(xv, Y_LOAD(at + 2 * len, 1)));
            i6 = _mm256_add_epi32(i6, _mm256_madd_epi16(xv, Y_LOAD(at + 3 * len, 0)));
            i7 = _mm256_add_epi32(i7, _mm256_madd_epi16(xv, Y_LOAD(at + 3 * len, 1)));
        }
        const __m256 dv = _mm256_set1_ps(d[b]);
        const __m256i sums[8] = {i0, i1, i2, i3, i4, i5, i6, i7};
        for (int i = 0; i < 8; i++) f[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums[i]), dv, f[i]);
    }
    for (int i = 0; i < 8; i++) _mm256_storeu_ps(out + 8 * i, Y_FINISH(f[i], 8 * i));
}
#endif

kernels nn_q8_kernels(nn_isa isa) {
    kernels k = {tile_q8_portable, tile_q8_portable, 1, NULL, 0, NULL, NULL};
#ifdef NN_HAVE_X86
    if (isa == NN_ISA_AVX512) k = (kernels){qtile1_z, qtile8_z, 8, qrows_z[8], 8, qrows_z, qtile8s_z};
    else if (isa == NN_ISA_AVX2) k = (kernels){qtile_y, qtile_y, 1, qrow4_y, 4, NULL, NULL};
#else
    (void)isa;
#endif
    return k;
}
