#include "nn/kernels.h"

#include "nn/cpu.h"
#include "nn/linear.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* From this many query rows on, non-causal attention runs as matrix products (attention_rows). */
#define ATTENTION_ROWS_MIN 8

void nn_set_threads(int n) {
    if (n <= 0) n = omp_get_num_procs();
    omp_set_num_threads(n);
}

/* LayerNorm of one row: mean, then the mean of squared deviations, each summed in one fixed
 * order (16 running sums, lane l taking c = l, l+16, ... below the last multiple of 16, folded
 * (l, l+8), (l, l+4), (l, l+2), (0, 1), plus the tail in order), then
 * y = fma((x - mean)·inv, gamma, beta) with inv = 1/sqrt(var + eps). Every version performs
 * the same operations, so every instruction set gives the same bits. */
static float fold16(float *acc) {
    for (int w = 8; w >= 1; w /= 2)
        for (int l = 0; l < w; l++) acc[l] += acc[l + w];
    return acc[0];
}

static void layernorm_row_portable(float *y, const float *x, const float *g, const float *b, int C, float eps) {
    float acc[16] = {0}, tail = 0.0f;
    int c = 0;
    for (; c + 16 <= C; c += 16)
        for (int l = 0; l < 16; l++) acc[l] += x[c + l];
    for (; c < C; c++) tail += x[c];
    const float mean = (fold16(acc) + tail) / (float)C;
    memset(acc, 0, sizeof acc);
    tail = 0.0f;
    for (c = 0; c + 16 <= C; c += 16)
        for (int l = 0; l < 16; l++) {
            const float d = x[c + l] - mean;
            acc[l] = fmaf(d, d, acc[l]);
        }
    for (; c < C; c++) {
        const float d = x[c] - mean;
        tail = fmaf(d, d, tail);
    }
    const float inv = 1.0f / sqrtf((fold16(acc) + tail) / (float)C + eps);
    for (c = 0; c < C; c++) y[c] = fmaf((x[c] - mean) * inv, g[c], b[c]);
}

#if defined(__x86_64__)
__attribute__((target("avx512f"))) static void layernorm_row_avx512(float *y, const float *x, const float *g,
                                                                   const float *b, int C, float eps) {
    float acc[16], tail = 0.0f;
    __m512 s = _mm512_setzero_ps();
    int c = 0;
    for (; c + 16 <= C; c += 16) s = _mm512_add_ps(s, _mm512_loadu_ps(x + c));
    for (; c < C; c++) tail += x[c];
    _mm512_storeu_ps(acc, s);
    const float mean = (fold16(acc) + tail) / (float)C;
    const __m512 m = _mm512_set1_ps(mean);
    s = _mm512_setzero_ps();
    tail = 0.0f;
    for (c = 0; c + 16 <= C; c += 16) {
        const __m512 d = _mm512_sub_ps(_mm512_loadu_ps(x + c), m);
        s = _mm512_fmadd_ps(d, d, s);
    }
    for (; c < C; c++) {
        const float d = x[c] - mean;
        tail = fmaf(d, d, tail);
    }
    _mm512_storeu_ps(acc, s);
    const float inv = 1.0f / sqrtf((fold16(acc) + tail) / (float)C + eps);
    const __m512 iv = _mm512_set1_ps(inv);
    for (c = 0; c + 16 <= C; c += 16) {
        const __m512 t = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(x + c), m), iv);
        _mm512_storeu_ps(y + c, _mm512_fmadd_ps(t, _mm512_loadu_ps(g + c), _mm512_loadu_ps(b + c)));
    }
    for (; c < C; c++) y[c] = fmaf((x[c] - mean) * inv, g[c], b[c]);
}

__attribute__((target("avx2,fma"))) static void layernorm_row_avx2(float *y, const float *x, const float *g,
                                                                  const float *b, int C, float eps) {
    float acc[16], tail = 0.0f;
    __m256 lo = _mm256_setzero_ps(), hi = lo;
    int c = 0;
    for (; c + 16 <= C; c += 16) {
        lo = _mm256_add_ps(lo, _mm256_loadu_ps(x + c));
        hi = _mm256_add_ps(hi, _mm256_loadu_ps(x + c + 8));
    }
    for (; c < C; c++) tail += x[c];
    _mm256_storeu_ps(acc, lo);
    _mm256_storeu_ps(acc + 8, hi);
    const float mean = (fold16(acc) + tail) / (float)C;
    const __m256 m = _mm256_set1_ps(mean);
    lo = hi = _mm256_setzero_ps();
    tail = 0.0f;
    for (c = 0; c + 16 <= C; c += 16) {
        const __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(x + c), m), d1 = _mm256_sub_ps(_mm256_loadu_ps(x + c + 8), m);
        lo = _mm256_fmadd_ps(d0, d0, lo);
        hi = _mm256_fmadd_ps(d1, d1, hi);
    }
    for (; c < C; c++) {
        const float d = x[c] - mean;
        tail = fmaf(d, d, tail);
    }
    _mm256_storeu_ps(acc, lo);
    _mm256_storeu_ps(acc + 8, hi);
    const float inv = 1.0f / sqrtf((fold16(acc) + tail) / (float)C + eps);
    const __m256 iv = _mm256_set1_ps(inv);
    for (c = 0; c + 8 <= C; c += 8) {
        const __m256 t = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + c), m), iv);
        _mm256_storeu_ps(y + c, _mm256_fmadd_ps(t, _mm256_loadu_ps(g + c), _mm256_loadu_ps(b + c)));
    }
    for (; c < C; c++) y[c] = fmaf((x[c] - mean) * inv, g[c], b[c]);
}
#endif

void layernorm(float *y, const float *x, const float *gamma, const float *beta, int T, int C, float eps) {
    void (*row)(float *, const float *, const float *, const float *, int, float) = layernorm_row_portable;
#if defined(__x86_64__)
    const nn_isa isa = nn_cpu_isa();
    if (isa == NN_ISA_AVX512) row = layernorm_row_avx512;
    if (isa == NN_ISA_AVX2) row = layernorm_row_avx2;
#endif
    if (T <= 8) {
        for (int t = 0; t < T; t++) row(y + (size_t)t * C, x + (size_t)t * C, gamma, beta, C, eps);
        return;
    }
#pragma omp parallel for
    for (int t = 0; t < T; t++) row(y + (size_t)t * C, x + (size_t)t * C, gamma, beta, C, eps);
}

/* erf as the rational function x·P(x²)/Q(x²) on [-4, 4] (±1 to float precision outside) with
 * the coefficients of Eigen's generic_fast_erf_float (also XLA's and TVM's fast erf); measured
 * here against double erf: at most 4.5e-7 absolute error, 1e-6 in GELU. Every version below
 * performs the same operations in the same order (fmas, one multiply, one division), so the
 * portable, AVX2 and AVX-512 code give the same bits. */
#define ERF_A13 -2.72614225801306e-10f
#define ERF_A11 2.77068142495902e-08f
#define ERF_A9 -2.10102402082508e-06f
#define ERF_A7 -5.69250639462346e-05f
#define ERF_A5 -7.34990630326855e-04f
#define ERF_A3 -2.95459980854025e-03f
#define ERF_A1 -1.60960333262415e-02f
#define ERF_B8 -1.45660718464996e-05f
#define ERF_B6 -2.13374055278905e-04f
#define ERF_B4 -1.68282697438203e-03f
#define ERF_B2 -7.37332916720468e-03f
#define ERF_B0 -1.42647390514189e-02f
#define SQRT1_2 0.70710678118654752f

/* x·½·(1 + erf(x/√2)), written h = ½x; h + h·erf. */
static float gelu_erf_one(float x) {
    float v = x * SQRT1_2;
    v = fminf(fmaxf(v, -4.0f), 4.0f);
    const float s = v * v;
    float p = fmaf(s, ERF_A13, ERF_A11);
    p = fmaf(s, p, ERF_A9);
    p = fmaf(s, p, ERF_A7);
    p = fmaf(s, p, ERF_A5);
    p = fmaf(s, p, ERF_A3);
    p = fmaf(s, p, ERF_A1);
    p = v * p;
    float q = fmaf(s, ERF_B8, ERF_B6);
    q = fmaf(s, q, ERF_B4);
    q = fmaf(s, q, ERF_B2);
    q = fmaf(s, q, ERF_B0);
    const float r = p / q, h = 0.5f * x;
    return fmaf(h, r, h);
}

#if defined(__x86_64__)
#define GELU_ERF_VEC(vec, set1, mul, fmadd, div, min, max)                                             \
    do {                                                                                               \
        vec v = mul(x, set1(SQRT1_2));                                                                 \
        v = min(max(v, set1(-4.0f)), set1(4.0f));                                                      \
        const vec s = mul(v, v);                                                                       \
        vec p = fmadd(s, set1(ERF_A13), set1(ERF_A11));                                                \
        p = fmadd(s, p, set1(ERF_A9));                                                                 \
        p = fmadd(s, p, set1(ERF_A7));                                                                 \
        p = fmadd(s, p, set1(ERF_A5));                                                                 \
        p = fmadd(s, p, set1(ERF_A3));                                                                 \
        p = fmadd(s, p, set1(ERF_A1));                                                                 \
        p = mul(v, p);                                                                                 \
        vec q = fmadd(s, set1(ERF_B8), set1(ERF_B6));                                                  \
        q = fmadd(s, q, set1(ERF_B4));                                                                 \
        q = fmadd(s, q, set1(ERF_B2));                                                                 \
        q = fmadd(s, q, set1(ERF_B0));                                                                 \
        const vec h = mul(x, set1(0.5f));                                                              \
        y = fmadd(h, div(p, q), h);                                                                    \
    } while (0)

__attribute__((target("avx2,fma"))) static void gelu_erf_avx2(float *a, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 x = _mm256_loadu_ps(a + i);
        __m256 y;
        GELU_ERF_VEC(__m256, _mm256_set1_ps, _mm256_mul_ps, _mm256_fmadd_ps, _mm256_div_ps, _mm256_min_ps, _mm256_max_ps);
        _mm256_storeu_ps(a + i, y);
    }
    for (; i < n; i++) a[i] = gelu_erf_one(a[i]);
}

__attribute__((target("avx512f"))) static void gelu_erf_avx512(float *a, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 x = _mm512_loadu_ps(a + i);
        __m512 y;
        GELU_ERF_VEC(__m512, _mm512_set1_ps, _mm512_mul_ps, _mm512_fmadd_ps, _mm512_div_ps, _mm512_min_ps, _mm512_max_ps);
        _mm512_storeu_ps(a + i, y);
    }
    for (; i < n; i++) a[i] = gelu_erf_one(a[i]);
}
#endif

static void gelu_erf_portable(float *a, size_t n) {
    for (size_t i = 0; i < n; i++) a[i] = gelu_erf_one(a[i]);
}

void gelu_erf(float *x, size_t n) {
    void (*run)(float *, size_t) = gelu_erf_portable;
#if defined(__x86_64__)
    const nn_isa isa = nn_cpu_isa();
    if (isa == NN_ISA_AVX512) run = gelu_erf_avx512;
    if (isa == NN_ISA_AVX2) run = gelu_erf_avx2;
#endif
    const size_t block = 4096; /* whole vectors; the same split for any thread count */
    const long blocks = (long)((n + block - 1) / block);
#pragma omp parallel for if (n > 65536)
    for (long b = 0; b < blocks; b++) {
        const size_t at = (size_t)b * block;
        run(x + at, n - at < block ? n - at : block);
    }
}


void add_inplace(float *y, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] += x[i];
}

/* exp(x) for the softmax: x = n·ln2 + r (Cody and Waite's two-part ln2), e^r by Cephes' expf
 * polynomial (S. L. Moshier, Cephes Math Library, expf.c: relative error about 1e-7 on
 * [-ln2/2, ln2/2]), times 2^n built in the exponent field. Below -87 (e^-87 = 1.6e-38, the
 * bottom of the normal range) the result is 0, so a masked -inf score gets probability 0;
 * above 88 it is clamped (a softmax never goes there). Like the GELU, every version performs
 * the same operations in the same order. */
#define EXP_LOG2E 1.44269504088896341f
#define EXP_LN2_HI 0.693359375f
#define EXP_LN2_LO -2.12194440e-4f
#define EXP_P0 1.9875691500e-4f
#define EXP_P1 1.3981999507e-3f
#define EXP_P2 8.3334519073e-3f
#define EXP_P3 4.1665795894e-2f
#define EXP_P4 1.6666665459e-1f
#define EXP_P5 5.0000001201e-1f

static float exp_one(float arg) {
    float x = -87.0f > arg ? -87.0f : arg; /* written as x86's max/min, which let a NaN through */
    x = 88.0f < x ? 88.0f : x;
    const float n = rintf(x * EXP_LOG2E);
    float r = fmaf(n, -EXP_LN2_HI, x);
    r = fmaf(n, -EXP_LN2_LO, r);
    float p = fmaf(EXP_P0, r, EXP_P1);
    p = fmaf(p, r, EXP_P2);
    p = fmaf(p, r, EXP_P3);
    p = fmaf(p, r, EXP_P4);
    p = fmaf(p, r, EXP_P5);
    const float r2 = r * r;
    const float e = fmaf(p, r2, r) + 1.0f;
    const uint32_t bits = (uint32_t)((int32_t)n + 127) << 23;
    float two_n;
    memcpy(&two_n, &bits, sizeof two_n);
    return arg < -87.0f ? 0.0f : e * two_n;
}

#if defined(__x86_64__)
#define EXP_VEC(vec, ivec, set1, sub, mul, add, fmadd, min, max, round, cvt, iadd, iset1, slli, cast)       \
    do {                                                                                               \
        const vec arg = sub(xv, set1(shift));                                                          \
        vec v = min(set1(88.0f), max(set1(-87.0f), arg));                                              \
        const vec nf = round(mul(v, set1(EXP_LOG2E)));                                                 \
        vec r = fmadd(nf, set1(-EXP_LN2_HI), v);                                                       \
        r = fmadd(nf, set1(-EXP_LN2_LO), r);                                                           \
        vec p = fmadd(set1(EXP_P0), r, set1(EXP_P1));                                                  \
        p = fmadd(p, r, set1(EXP_P2));                                                                 \
        p = fmadd(p, r, set1(EXP_P3));                                                                 \
        p = fmadd(p, r, set1(EXP_P4));                                                                 \
        p = fmadd(p, r, set1(EXP_P5));                                                                 \
        const vec e = add(fmadd(p, mul(r, r), r), set1(1.0f));                                         \
        const ivec bits = slli(iadd(cvt(nf), iset1(127)), 23);                                         \
        yv = ZERO_BELOW(mul(e, cast(bits)), arg, set1(-87.0f));                                        \
    } while (0)

#define ZERO_BELOW_256(y, a, lo) _mm256_andnot_ps(_mm256_cmp_ps(a, lo, _CMP_LT_OQ), y)
#define ZERO_BELOW_512(y, a, lo) _mm512_maskz_mov_ps(~_mm512_cmp_ps_mask(a, lo, _CMP_LT_OQ), y)
#define ROUND256(v) _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define ROUND512(v) _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define EXP_VEC_256                                                                                    \
    EXP_VEC(__m256, __m256i, _mm256_set1_ps, _mm256_sub_ps, _mm256_mul_ps, _mm256_add_ps, _mm256_fmadd_ps,     \
            _mm256_min_ps, _mm256_max_ps, ROUND256, _mm256_cvtps_epi32, _mm256_add_epi32, _mm256_set1_epi32,   \
            _mm256_slli_epi32, _mm256_castsi256_ps)
#define EXP_VEC_512                                                                                    \
    EXP_VEC(__m512, __m512i, _mm512_set1_ps, _mm512_sub_ps, _mm512_mul_ps, _mm512_add_ps, _mm512_fmadd_ps,     \
            _mm512_min_ps, _mm512_max_ps, ROUND512, _mm512_cvtps_epi32, _mm512_add_epi32, _mm512_set1_epi32,   \
            _mm512_slli_epi32, _mm512_castsi512_ps)
#endif

/* softmax(scale·x) in place, in three passes: x = scale·x and its maximum; x = exp(x - max) and
 * the sum in one fixed order (16 running sums, lane l taking i = l, l+16, ... below the last
 * multiple of 16, folded (l, l+8), (l, l+4), (l, l+2), (0, 1), plus the tail in order); x / sum
 * as x·(1/sum). The maximum ignores NaN (x > max), the vector max is written to match. */
static void softmax_portable(float *x, int n, float scale) {
    float mx = -INFINITY;
    for (int i = 0; i < n; i++) {
        x[i] *= scale;
        mx = x[i] > mx ? x[i] : mx;
    }
    float acc[16] = {0};
    int i = 0;
    for (; i + 16 <= n; i += 16)
        for (int l = 0; l < 16; l++) acc[l] += x[i + l] = exp_one(x[i + l] - mx);
    const float sum = fold16(acc);
    float tail = 0.0f;
    for (; i < n; i++) tail += x[i] = exp_one(x[i] - mx);
    const float inv = 1.0f / (sum + tail);
    for (int j = 0; j < n; j++) x[j] *= inv;
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) static void softmax_avx2(float *x, int n, float scale) {
    const __m256 sv = _mm256_set1_ps(scale);
    __m256 vmax = _mm256_set1_ps(-INFINITY);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + i), sv);
        _mm256_storeu_ps(x + i, v);
        vmax = _mm256_max_ps(v, vmax); /* v > max ? v : max */
    }
    float lanes[8], mx = -INFINITY;
    _mm256_storeu_ps(lanes, vmax);
    for (int l = 0; l < 8; l++) mx = lanes[l] > mx ? lanes[l] : mx;
    for (; i < n; i++) {
        x[i] *= scale;
        mx = x[i] > mx ? x[i] : mx;
    }
    const float shift = mx;
    __m256 lo = _mm256_setzero_ps(), hi = lo;
    for (i = 0; i + 16 <= n; i += 16) {
        __m256 xv = _mm256_loadu_ps(x + i), yv;
#define ZERO_BELOW ZERO_BELOW_256
        EXP_VEC_256;
        _mm256_storeu_ps(x + i, yv);
        lo = _mm256_add_ps(lo, yv);
        xv = _mm256_loadu_ps(x + i + 8);
        EXP_VEC_256;
#undef ZERO_BELOW
        _mm256_storeu_ps(x + i + 8, yv);
        hi = _mm256_add_ps(hi, yv);
    }
    __m256 s8 = _mm256_add_ps(lo, hi);                                                       /* (l, l+8) */
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));       /* (l, l+4) */
    __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));                                       /* (l, l+2) */
    float sum = _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));                   /* (0, 1) */
    float tail = 0.0f;
    for (; i < n; i++) tail += x[i] = exp_one(x[i] - mx);
    const __m256 inv = _mm256_set1_ps(1.0f / (sum + tail));
    for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), inv));
    for (; i < n; i++) x[i] *= _mm256_cvtss_f32(inv);
}

__attribute__((target("avx512f"))) static void softmax_avx512(float *x, int n, float scale) {
    const __m512 sv = _mm512_set1_ps(scale);
    __m512 vmax = _mm512_set1_ps(-INFINITY);
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 v = _mm512_mul_ps(_mm512_loadu_ps(x + i), sv);
        _mm512_storeu_ps(x + i, v);
        vmax = _mm512_max_ps(v, vmax); /* v > max ? v : max */
    }
    float mx = _mm512_reduce_max_ps(vmax);
    for (; i < n; i++) {
        x[i] *= scale;
        mx = x[i] > mx ? x[i] : mx;
    }
    const float shift = mx;
    __m512 acc = _mm512_setzero_ps();
    for (i = 0; i + 16 <= n; i += 16) {
        const __m512 xv = _mm512_loadu_ps(x + i);
        __m512 yv;
#define ZERO_BELOW ZERO_BELOW_512
        EXP_VEC_512;
#undef ZERO_BELOW
        _mm512_storeu_ps(x + i, yv);
        acc = _mm512_add_ps(acc, yv);
    }
    const __m256 upper = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc), 1));
    __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(acc), upper);                           /* (l, l+8) */
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));       /* (l, l+4) */
    __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));                                       /* (l, l+2) */
    float sum = _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));                   /* (0, 1) */
    float tail = 0.0f;
    if (i < n) { /* the last n - i < 16: the same exp on a masked vector, then summed in order */
        const __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        const __m512 xv = _mm512_maskz_loadu_ps(m, x + i);
        __m512 yv;
#define ZERO_BELOW ZERO_BELOW_512
        EXP_VEC_512;
#undef ZERO_BELOW
        _mm512_mask_storeu_ps(x + i, m, yv);
        for (; i < n; i++) tail += x[i];
    }
    const float inv_s = 1.0f / (sum + tail);
    const __m512 inv = _mm512_set1_ps(inv_s);
    for (i = 0; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), inv));
    for (; i < n; i++) x[i] *= inv_s;
}
#endif

void softmax_scaled(float *x, int n, float scale) {
#if defined(__x86_64__)
    const nn_isa isa = nn_cpu_isa();
    if (isa == NN_ISA_AVX512) {
        softmax_avx512(x, n, scale);
        return;
    }
    if (isa == NN_ISA_AVX2) {
        softmax_avx2(x, n, scale);
        return;
    }
#endif
    softmax_portable(x, n, scale);
}

void softmax(float *x, int n) { softmax_scaled(x, n, 1.0f); }

/* GPT-2's gelu_new, ½x(1 + tanh(u)) with u = √(2/π)(x + 0.044715x³), computed as x / (1 + e^(-2u))
 * (the same function: 1 + tanh(u) = 2 / (1 + e^(-2u))), which has no cancellation for negative
 * u, with the softmax's exp; the same operations in every version. */
#define GELU_K 0.7978845608028654f /* √(2/π) */
#define GELU_C 0.044715f

static void gelu_tanh_portable(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) {
        const float v = x[i], v3 = v * v * v;
        const float u2 = -2.0f * GELU_K * fmaf(GELU_C, v3, v); /* -2u */
        x[i] = v / (1.0f + exp_one(u2));
    }
}

#if defined(__x86_64__)
#define GELU_TANH_VEC(vec, set1, mul, add, div, fmadd, loadu, storeu, EXP)                             \
    for (; i + (sizeof(vec) / 4) <= n; i += sizeof(vec) / 4) {                                         \
        const vec v = loadu(x + i), v3 = mul(mul(v, v), v);                                            \
        const vec xv = mul(set1(-2.0f * GELU_K), fmadd(set1(GELU_C), v3, v));                          \
        vec yv;                                                                                        \
        const float shift = 0.0f;                                                                      \
        EXP;                                                                                           \
        storeu(x + i, div(v, add(set1(1.0f), yv)));                                                    \
    }

__attribute__((target("avx2,fma"))) static void gelu_tanh_avx2(float *x, size_t n) {
    size_t i = 0;
#define ZERO_BELOW ZERO_BELOW_256
    GELU_TANH_VEC(__m256, _mm256_set1_ps, _mm256_mul_ps, _mm256_add_ps, _mm256_div_ps, _mm256_fmadd_ps, _mm256_loadu_ps,
                  _mm256_storeu_ps,
                  EXP_VEC(__m256, __m256i, _mm256_set1_ps, _mm256_sub_ps, _mm256_mul_ps, _mm256_add_ps, _mm256_fmadd_ps,
                          _mm256_min_ps, _mm256_max_ps, ROUND256, _mm256_cvtps_epi32, _mm256_add_epi32,
                          _mm256_set1_epi32, _mm256_slli_epi32, _mm256_castsi256_ps))
#undef ZERO_BELOW
    gelu_tanh_portable(x + i, n - i);
}

__attribute__((target("avx512f"))) static void gelu_tanh_avx512(float *x, size_t n) {
    size_t i = 0;
#define ZERO_BELOW ZERO_BELOW_512
    GELU_TANH_VEC(__m512, _mm512_set1_ps, _mm512_mul_ps, _mm512_add_ps, _mm512_div_ps, _mm512_fmadd_ps, _mm512_loadu_ps,
                  _mm512_storeu_ps,
                  EXP_VEC(__m512, __m512i, _mm512_set1_ps, _mm512_sub_ps, _mm512_mul_ps, _mm512_add_ps, _mm512_fmadd_ps,
                          _mm512_min_ps, _mm512_max_ps, ROUND512, _mm512_cvtps_epi32, _mm512_add_epi32,
                          _mm512_set1_epi32, _mm512_slli_epi32, _mm512_castsi512_ps))
#undef ZERO_BELOW
    gelu_tanh_portable(x + i, n - i);
}
#endif

void gelu_tanh(float *x, size_t n) {
    void (*run)(float *, size_t) = gelu_tanh_portable;
#if defined(__x86_64__)
    const nn_isa isa = nn_cpu_isa();
    if (isa == NN_ISA_AVX512) run = gelu_tanh_avx512;
    if (isa == NN_ISA_AVX2) run = gelu_tanh_avx2;
#endif
    const size_t block = 4096;
    const long blocks = (long)((n + block - 1) / block);
#pragma omp parallel for if (n > 65536)
    for (long b = 0; b < blocks; b++) {
        const size_t at = (size_t)b * block;
        run(x + at, n - at < block ? n - at : block);
    }
}

/* Dot product in a fixed order, vectorised or not: 8 running sums (lane l takes d = l, l+8, ...),
 * folded as (l, l+4), then (l, l+2), then (0, 1), plus the tail past the last multiple of 8
 * summed in order. The AVX2 version and the portable one give the same bits. */
static float dot_portable(const float *a, const float *b, int n) {
    float acc[8] = {0};
    int d = 0;
    for (; d + 8 <= n; d += 8)
        for (int l = 0; l < 8; l++) acc[l] = fmaf(a[d + l], b[d + l], acc[l]);
    float tail = 0.0f;
    for (; d < n; d++) tail = fmaf(a[d], b[d], tail);
    float s4[4], s2[2];
    for (int l = 0; l < 4; l++) s4[l] = acc[l] + acc[l + 4];
    for (int l = 0; l < 2; l++) s2[l] = s4[l] + s4[l + 2];
    return (s2[0] + s2[1]) + tail;
}

/* out[d] += p * v[d]: one fma per element, the same either way. */
static void axpy_portable(float *out, float p, const float *v, int n) {
    for (int d = 0; d < n; d++) out[d] = fmaf(p, v[d], out[d]);
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) static float dot_avx2(const float *a, const float *b, int n) {
    __m256 acc = _mm256_setzero_ps();
    int d = 0;
    for (; d + 8 <= n; d += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + d), _mm256_loadu_ps(b + d), acc);
    float tail = 0.0f;
    for (; d < n; d++) tail = fmaf(a[d], b[d], tail);
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    __m128 s1 = _mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1));
    return _mm_cvtss_f32(s1) + tail;
}

__attribute__((target("avx2,fma"))) static void axpy_avx2(float *out, float p, const float *v, int n) {
    const __m256 pv = _mm256_set1_ps(p);
    int d = 0;
    for (; d + 8 <= n; d += 8)
        _mm256_storeu_ps(out + d, _mm256_fmadd_ps(pv, _mm256_loadu_ps(v + d), _mm256_loadu_ps(out + d)));
    for (; d < n; d++) out[d] = fmaf(p, v[d], out[d]);
}
#endif

typedef struct {
    float (*dot)(const float *, const float *, int);
    void (*axpy)(float *, float, const float *, int);
} vector_ops;

static vector_ops pick_vector_ops(void) {
#if defined(__x86_64__)
    if (nn_cpu_isa() >= NN_ISA_AVX2) return (vector_ops){dot_avx2, axpy_avx2};
#endif
    return (vector_ops){dot_portable, axpy_portable};
}

float nn_dot(const float *a, const float *b, int n) { return pick_vector_ops().dot(a, b, n); }

/* Many query rows against all keys (the encoder's self-attention): per head, the scores are the
 * matrix product Q_h·K_hᵀ and the output P·V_h, both through the packed linear kernels with the
 * head's keys and values packed as the "weights". A score is then one fma chain over the head's
 * dimensions in order, from 0, times the scale; an output element one fma chain over the keys in
 * order, from 0, exactly as the one-row path below sums its values. Without memory for the
 * packing, a thread computes the same chains with plain loops. */
static void attention_rows(float *out, int out_stride, float *probs, const float *q, int q_stride, const float *k,
                           int k_stride, const float *v, int v_stride, int Tq, int Tk, int H, int hd, float scale) {
#pragma omp parallel if ((size_t)H * Tq * Tk * hd > 32768)
    {
        const size_t kp = nn_linear_packed_elems(hd, Tk), vp = nn_linear_packed_elems(Tk, hd);
        const size_t zb = (size_t)(Tk > hd ? Tk : hd) + NN_PANEL;
        float *work = aligned_alloc(64, ((kp + vp + zb) * sizeof(float) + 63) / 64 * 64);
        if (work) memset(work + kp + vp, 0, zb * sizeof(float));
#pragma omp for schedule(static)
        for (int h = 0; h < H; h++) {
            float *ph = probs + (size_t)h * Tq * Tk, *oh = out + (size_t)h * hd;
            const float *qh = q + (size_t)h * hd, *kh = k + (size_t)h * hd, *vh = v + (size_t)h * hd;
            nn_linear layer;
            if (work) {
                nn_linear_view(&layer, NN_F32, work, work + kp + vp, kh, (size_t)k_stride, 1, hd, Tk);
                nn_linear_forward(ph, (size_t)Tk, qh, (size_t)q_stride, &layer, Tq);
            } else {
                for (int i = 0; i < Tq; i++)
                    for (int j = 0; j < Tk; j++) {
                        float acc = 0.0f;
                        for (int d = 0; d < hd; d++)
                            acc = fmaf(qh[(size_t)i * q_stride + d], kh[(size_t)j * k_stride + d], acc);
                        ph[(size_t)i * Tk + j] = acc;
                    }
            }
            for (int i = 0; i < Tq; i++) softmax_scaled(ph + (size_t)i * Tk, Tk, scale);
            if (work) {
                nn_linear_view(&layer, NN_F32, work + kp, work + kp + vp, vh, (size_t)v_stride, 0, Tk, hd);
                nn_linear_forward(oh, (size_t)out_stride, ph, (size_t)Tk, &layer, Tq);
            } else {
                for (int i = 0; i < Tq; i++) {
                    float *o = oh + (size_t)i * out_stride;
                    memset(o, 0, (size_t)hd * sizeof *o);
                    for (int j = 0; j < Tk; j++) axpy_portable(o, ph[(size_t)i * Tk + j], vh + (size_t)j * v_stride, hd);
                }
            }
        }
        free(work);
    }
}

void attention(float *out, int out_stride, float *probs, const float *q, int q_stride, const float *k,
               int k_stride, const float *v, int v_stride, int Tq, int Tk, int H, int hd, float scale,
               int causal, int causal_offset) {
    if (!causal && Tq >= ATTENTION_ROWS_MIN) {
        attention_rows(out, out_stride, probs, q, q_stride, k, k_stride, v, v_stride, Tq, Tk, H, hd, scale);
        return;
    }
    const vector_ops ops = pick_vector_ops();
#pragma omp parallel for collapse(2) if ((size_t)H * Tq * Tk * hd > 32768)
    for (int h = 0; h < H; h++) {
        for (int i = 0; i < Tq; i++) {
            int n_keys = causal ? causal_offset + i + 1 : Tk;
            if (n_keys > Tk) n_keys = Tk;
            const float *qi = q + (size_t)i * q_stride + (size_t)h * hd;
            float *p = probs + ((size_t)h * Tq + i) * Tk;
            for (int j = 0; j < n_keys; j++) p[j] = ops.dot(qi, k + (size_t)j * k_stride + (size_t)h * hd, hd) * scale;
            softmax(p, n_keys);
            for (int j = n_keys; j < Tk; j++) p[j] = 0.0f;
            float *o = out + (size_t)i * out_stride + (size_t)h * hd;
            memset(o, 0, (size_t)hd * sizeof *o);
            for (int j = 0; j < n_keys; j++) ops.axpy(o, p[j], v + (size_t)j * v_stride + (size_t)h * hd, hd);
        }
    }
}
