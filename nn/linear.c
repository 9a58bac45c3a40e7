/* Packed linear layers; see linear.h for why and for the layout. */
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

static int alloc_packed(nn_linear *w, int K, int N) {
    memset(w, 0, sizeof *w);
    size_t np = padded(N);
    size_t bytes = (size_t)(K > 0 ? K : 1) * np * sizeof(float);
    w->panels = aligned_alloc(64, (bytes + 63) / 64 * 64);
    w->bias = aligned_alloc(64, (np * sizeof(float) + 63) / 64 * 64);
    if (!w->panels || !w->bias) {
        nn_linear_free(w);
        return -1;
    }
    memset(w->panels, 0, bytes);
    memset(w->bias, 0, np * sizeof(float));
    w->K = K;
    w->N = N;
    return 0;
}

/* Where W[k][n] lives in the packed buffer. */
static size_t packed_index(int K, int k, int n) {
    return ((size_t)(n / NN_PANEL) * K + k) * NN_PANEL + n % NN_PANEL;
}

int nn_linear_pack_kn(nn_linear *w, const float *weight, const float *b, int K, int N) {
    if (alloc_packed(w, K, N)) return -1;
    for (int k = 0; k < K; k++)
        for (int n = 0; n < N; n++) w->panels[packed_index(K, k, n)] = weight[(size_t)k * N + n];
    if (b) memcpy(w->bias, b, (size_t)N * sizeof *b);
    return 0;
}

int nn_linear_pack_nk_concat(nn_linear *w, const float *const *parts, const float *const *biases,
                             const int *n_parts, int count, int K) {
    int N = 0;
    for (int i = 0; i < count; i++) N += n_parts[i];
    if (alloc_packed(w, K, N)) return -1;
    int n0 = 0;
    for (int i = 0; i < count; i++) {
        for (int n = 0; n < n_parts[i]; n++)
            for (int k = 0; k < K; k++)
                w->panels[packed_index(K, k, n0 + n)] = parts[i][(size_t)n * K + k];
        if (biases[i]) memcpy(w->bias + n0, biases[i], (size_t)n_parts[i] * sizeof(float));
        n0 += n_parts[i];
    }
    return 0;
}

int nn_linear_pack_nk(nn_linear *w, const float *weight, const float *b, int K, int N) {
    return nn_linear_pack_nk_concat(w, &weight, &b, &N, 1, K);
}

void nn_linear_column(const nn_linear *w, int n, float *out) {
    const float *panel = w->panels + (size_t)(n / NN_PANEL) * w->K * NN_PANEL + n % NN_PANEL;
    for (int k = 0; k < w->K; k++) out[k] = panel[(size_t)k * NN_PANEL];
}

void nn_linear_free(nn_linear *w) {
    free(w->panels);
    free(w->bias);
    memset(w, 0, sizeof *w);
}

void nn_linear_naive(float *y, const float *x, const float *weight_kn, const float *b, int T, int K, int N) {
    for (int t = 0; t < T; t++)
        for (int n = 0; n < N; n++) {
            float acc = b ? b[n] : 0.0f;
            for (int k = 0; k < K; k++) acc = fmaf(x[(size_t)t * K + k], weight_kn[(size_t)k * N + n], acc);
            y[(size_t)t * N + n] = acc;
        }
}

/* One panel against `rows` rows of x (rows <= TILE_ROWS), written to out (rows × NN_PANEL,
 * row stride out_stride). Portable twin of the AVX2 tile below: same fma chain per element. */
static void tile_portable(float *out, size_t out_stride, const float *x, size_t x_stride, const float *panel,
                          const float *bias, int K, int rows) {
    for (int r = 0; r < rows; r++) {
        float acc[NN_PANEL];
        memcpy(acc, bias, sizeof acc);
        const float *xr = x + (size_t)r * x_stride;
        for (int k = 0; k < K; k++) {
            const float *wk = panel + (size_t)k * NN_PANEL;
            for (int j = 0; j < NN_PANEL; j++) acc[j] = fmaf(xr[k], wk[j], acc[j]);
        }
        memcpy(out + (size_t)r * out_stride, acc, sizeof acc);
    }
}

#ifdef NN_HAVE_X86
/* The register tiles are spelled out row by row (through the macros) because compilers keep
 * an array of vector accumulators in memory. A tile with fewer valid rows repeats its last row
 * pointer: the extra rows are computed and dropped, and every valid element still gets its
 * own unchanged fma chain. */
#define ROW_PTRS(n)                                                                                    \
    const float *xr[n];                                                                                \
    for (int r = 0; r < n; r++) xr[r] = x + (size_t)(r < rows ? r : rows - 1) * x_stride

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

__attribute__((target("avx2,fma"))) static void tile_avx2(float *out, size_t out_stride, const float *x,
                                                          size_t x_stride, const float *panel,
                                                          const float *bias, int K, int rows) {
    ROW_PTRS(TILE_ROWS);
    const __m256 b0 = _mm256_load_ps(bias), b1 = _mm256_load_ps(bias + 8);
    __m256 a00 = b0, a01 = b1, a10 = b0, a11 = b1, a20 = b0, a21 = b1;
    __m256 a30 = b0, a31 = b1, a40 = b0, a41 = b1, a50 = b0, a51 = b1;
    for (int k = 0; k < K; k++) {
        const __m256 w0 = _mm256_load_ps(panel + (size_t)k * NN_PANEL);
        const __m256 w1 = _mm256_load_ps(panel + (size_t)k * NN_PANEL + 8);
        AVX2_ROW(0);
        AVX2_ROW(1);
        AVX2_ROW(2);
        AVX2_ROW(3);
        AVX2_ROW(4);
        AVX2_ROW(5);
    }
    AVX2_STORE(0);
    AVX2_STORE(1);
    AVX2_STORE(2);
    AVX2_STORE(3);
    AVX2_STORE(4);
    AVX2_STORE(5);
}

/* One row against four panels at once: a decoder step with one sequence is a matrix-vector
 * product, and a single row's 2 accumulators would leave the FMA units waiting on their own
 * latency. Same fma chain per element as the tiles. */
__attribute__((target("avx2,fma"))) static void row_avx2_4panels(float *out, const float *x, const float *panels,
                                                                 const float *bias, int K) {
    __m256 acc[8];
    for (int i = 0; i < 8; i++) acc[i] = _mm256_load_ps(bias + 8 * i);
    const size_t panel_len = (size_t)K * NN_PANEL;
    for (int k = 0; k < K; k++) {
        const __m256 xv = _mm256_broadcast_ss(x + k);
        for (int p = 0; p < 4; p++) {
            const float *wk = panels + p * panel_len + (size_t)k * NN_PANEL;
            acc[2 * p] = _mm256_fmadd_ps(xv, _mm256_load_ps(wk), acc[2 * p]);
            acc[2 * p + 1] = _mm256_fmadd_ps(xv, _mm256_load_ps(wk + 8), acc[2 * p + 1]);
        }
    }
    for (int i = 0; i < 8; i++) _mm256_storeu_ps(out + 8 * i, acc[i]);
}
#endif

typedef void (*tile_fn)(float *, size_t, const float *, size_t, const float *, const float *, int, int);

static tile_fn pick_tile(int *wide_rows) {
#ifdef NN_HAVE_X86
    static int have = -1;
    if (have < 0) {
        __builtin_cpu_init();
        have = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    *wide_rows = have;
    if (have) return tile_avx2;
#endif
    *wide_rows = 0;
    return tile_portable;
}

/* Copies a tile's valid columns out of its full-width scratch (only the last panel is short). */
static void copy_cols(float *y, size_t y_stride, const float *tile, int rows, int cols) {
    for (int r = 0; r < rows; r++) memcpy(y + (size_t)r * y_stride, tile + (size_t)r * NN_PANEL, (size_t)cols * sizeof *y);
}

void nn_linear_forward(float *y, size_t y_stride, const float *x, size_t x_stride, const nn_linear *w, int T) {
    const int K = w->K, N = w->N;
    const int n_panels = (int)(padded(N) / NN_PANEL);
    const size_t panel_len = (size_t)K * NN_PANEL;
    int one_row_fast = 0;
    const tile_fn tile = pick_tile(&one_row_fast);
    if (T <= 0 || N <= 0) return;

#ifdef NN_HAVE_X86
    if (T == 1 && one_row_fast) {
        const int groups = (n_panels + 3) / 4;
#pragma omp parallel for if ((size_t)K * N > 262144)
        for (int g = 0; g < groups; g++) {
            int p0 = 4 * g;
            if (p0 + 4 <= n_panels && (size_t)(p0 + 4) * NN_PANEL <= (size_t)N) {
                row_avx2_4panels(y + (size_t)p0 * NN_PANEL, x, w->panels + p0 * panel_len,
                                 w->bias + (size_t)p0 * NN_PANEL, K);
            } else {
                float scratch[NN_PANEL];
                for (int p = p0; p < n_panels && p < p0 + 4; p++) {
                    int n0 = p * NN_PANEL, cols = N - n0 < NN_PANEL ? N - n0 : NN_PANEL;
                    tile(scratch, NN_PANEL, x, x_stride, w->panels + p * panel_len, w->bias + n0, K, 1);
                    memcpy(y + n0, scratch, (size_t)cols * sizeof *y);
                }
            }
        }
        return;
    }
#endif

    /* Work items: (chunk of rows, panel). Row chunks outermost so one chunk's x rows are reused
     * across all panels while they are in cache. */
    const int chunks = (T + CHUNK_ROWS - 1) / CHUNK_ROWS;
    const long items = (long)chunks * n_panels;
#pragma omp parallel for schedule(static) if ((size_t)T * K * N > 262144)
    for (long it = 0; it < items; it++) {
        const int c = (int)(it / n_panels), p = (int)(it % n_panels);
        const int t_end = (c + 1) * CHUNK_ROWS < T ? (c + 1) * CHUNK_ROWS : T;
        const int n0 = p * NN_PANEL, cols = N - n0 < NN_PANEL ? N - n0 : NN_PANEL;
        const float *panel = w->panels + p * panel_len;
        float scratch[TILE_ROWS * NN_PANEL];
        for (int t = c * CHUNK_ROWS; t < t_end; t += TILE_ROWS) {
            const int rows = t_end - t < TILE_ROWS ? t_end - t : TILE_ROWS;
            const float *xt = x + (size_t)t * x_stride;
            float *yt = y + (size_t)t * y_stride + n0;
            if (cols == NN_PANEL) {
                tile(yt, y_stride, xt, x_stride, panel, w->bias + n0, K, rows);
            } else {
                tile(scratch, NN_PANEL, xt, x_stride, panel, w->bias + n0, K, rows);
                copy_cols(yt, y_stride, scratch, rows, cols);
            }
        }
    }
}
