#include "nn/kernels.h"

#include "nn/cpu.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include <math.h>
#include <omp.h>
#include <string.h>

void nn_set_threads(int n) {
    if (n <= 0) n = omp_get_num_procs();
    omp_set_num_threads(n);
}

void layernorm(float *y, const float *x, const float *gamma, const float *beta, int T, int C, float eps) {
#pragma omp parallel for if (T > 8)
    for (int t = 0; t < T; t++) {
        const float *xr = x + (size_t)t * C;
        float *yr = y + (size_t)t * C;
        float mean = 0.0f;
        for (int c = 0; c < C; c++) mean += xr[c];
        mean /= C;
        float var = 0.0f;
        for (int c = 0; c < C; c++) {
            float d = xr[c] - mean;
            var += d * d;
        }
        var /= C;
        float inv = 1.0f / sqrtf(var + eps);
        for (int c = 0; c < C; c++) yr[c] = (xr[c] - mean) * inv * gamma[c] + beta[c];
    }
}

void gelu_erf(float *x, size_t n) {
#pragma omp parallel for if (n > 65536)
    for (size_t i = 0; i < n; i++) x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f));
}

void gelu_tanh(float *x, size_t n) {
    const float k = 0.7978845608028654f; /* sqrt(2/pi) */
#pragma omp parallel for if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        x[i] = 0.5f * v * (1.0f + tanhf(k * (v + 0.044715f * v * v * v)));
    }
}

void add_inplace(float *y, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] += x[i];
}

void softmax(float *x, int n) {
    float mx = -INFINITY;
    for (int i = 0; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    float sum = 0.0f;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - mx);
        sum += x[i];
    }
    float inv = 1.0f / sum;
    for (int i = 0; i < n; i++) x[i] *= inv;
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

void attention(float *out, int out_stride, float *probs, const float *q, int q_stride, const float *k,
               int k_stride, const float *v, int v_stride, int Tq, int Tk, int H, int hd, float scale,
               int causal, int causal_offset) {
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
