#include "nn/kernels.h"

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

void attention(float *out, int out_stride, float *probs, const float *q, int q_stride, const float *k,
               int k_stride, const float *v, int v_stride, int Tq, int Tk, int H, int hd, float scale,
               int causal, int causal_offset) {
#pragma omp parallel for collapse(2) if ((size_t)H * Tq * Tk * hd > 32768)
    for (int h = 0; h < H; h++) {
        for (int i = 0; i < Tq; i++) {
            int n_keys = causal ? causal_offset + i + 1 : Tk;
            if (n_keys > Tk) n_keys = Tk;
            const float *qi = q + (size_t)i * q_stride + (size_t)h * hd;
            float *p = probs + ((size_t)h * Tq + i) * Tk;
            for (int j = 0; j < n_keys; j++) {
                const float *kj = k + (size_t)j * k_stride + (size_t)h * hd;
                float s = 0.0f;
                for (int d = 0; d < hd; d++) s += qi[d] * kj[d];
                p[j] = s * scale;
            }
            softmax(p, n_keys);
            for (int j = n_keys; j < Tk; j++) p[j] = 0.0f;
            float *o = out + (size_t)i * out_stride + (size_t)h * hd;
            memset(o, 0, (size_t)hd * sizeof *o);
            for (int j = 0; j < n_keys; j++) {
                const float *vj = v + (size_t)j * v_stride + (size_t)h * hd;
                float pj = p[j];
                for (int d = 0; d < hd; d++) o[d] += pj * vj[d];
            }
        }
    }
}
