/* Each kernel against a plain double-precision loop on odd shapes (1, 3, 17, 197, ...). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "nn/kernels.h"

static uint64_t rng = 12345;

static float *rand_buf(size_t n) {
    float *b = malloc((n ? n : 1) * sizeof *b);
    for (size_t i = 0; i < n; i++) b[i] = test_rng_uniform(&rng);
    return b;
}

static void test_layernorm(void) {
    const int shapes[][2] = {{1, 1}, {3, 17}, {197, 64}, {2, 768}};
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
        int T = shapes[i][0], C = shapes[i][1];
        float *x = rand_buf((size_t)T * C), *g = rand_buf(C), *b = rand_buf(C);
        for (size_t j = 0; j < (size_t)T * C; j++) x[j] = x[j] * 3.0f + 0.5f; /* non-zero mean */
        float *y = malloc((size_t)T * C * sizeof *y), *ref = malloc((size_t)T * C * sizeof *ref);
        layernorm(y, x, g, b, T, C, 1e-5f);
        for (int t = 0; t < T; t++) {
            double mean = 0, var = 0;
            for (int c = 0; c < C; c++) mean += x[t * C + c];
            mean /= C;
            for (int c = 0; c < C; c++) var += (x[t * C + c] - mean) * (x[t * C + c] - mean);
            var /= C;
            for (int c = 0; c < C; c++) ref[t * C + c] = (float)((x[t * C + c] - mean) / sqrt(var + 1e-5) * g[c] + b[c]);
        }
        float d = max_abs_diff(y, ref, (size_t)T * C);
        CHECK(d <= 2e-5f, "layernorm T=%d C=%d: diff %g", T, C, d);
        /* in place */
        layernorm(x, x, g, b, T, C, 1e-5f);
        CHECK(max_abs_diff(x, y, (size_t)T * C) == 0.0f, "layernorm in place differs");
        free(x), free(g), free(b), free(y), free(ref);
    }
}

static void test_activations(void) {
    size_t n = 2001;
    float *x = malloc(n * sizeof *x), *e = malloc(n * sizeof *e), *t = malloc(n * sizeof *t);
    for (size_t i = 0; i < n; i++) x[i] = e[i] = t[i] = -10.0f + 20.0f * i / (n - 1);
    gelu_erf(e, n);
    gelu_tanh(t, n);
    float de = 0, dt = 0;
    for (size_t i = 0; i < n; i++) {
        double v = x[i];
        double re = 0.5 * v * (1.0 + erf(v / sqrt(2.0)));
        double rt = 0.5 * v * (1.0 + tanh(sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v)));
        de = fmaxf(de, fabsf(e[i] - (float)re));
        dt = fmaxf(dt, fabsf(t[i] - (float)rt));
    }
    CHECK(de <= 1e-5f, "gelu_erf diff %g", de);
    CHECK(dt <= 1e-5f, "gelu_tanh diff %g", dt);
    /* the two GELUs are different functions: a mix-up must be visible */
    float a = 1.5f, b = 1.5f;
    gelu_erf(&a, 1);
    gelu_tanh(&b, 1);
    CHECK(fabsf(a - b) > 1e-4f, "gelu_erf and gelu_tanh agree at 1.5 (%g vs %g)", a, b);
    free(x), free(e), free(t);
}

static void test_softmax(void) {
    float x[5] = {1000.0f, 1001.0f, 999.0f, -INFINITY, 1000.5f};
    softmax(x, 5);
    double z = exp(0) + exp(1) + exp(-1) + exp(0.5);
    CHECK(fabsf(x[1] - (float)(exp(1) / z)) < 1e-6f, "softmax large values: %g", x[1]);
    CHECK(x[3] == 0.0f, "softmax of -inf is %g", x[3]);
}

static void naive_attention(float *out, float *probs, const float *q, int qs, const float *k, int ks, const float *v,
                            int vs, int Tq, int Tk, int H, int hd, float scale, int causal, int off) {
    for (int h = 0; h < H; h++)
        for (int i = 0; i < Tq; i++) {
            int nk = causal ? off + i + 1 : Tk;
            double sc[512], mx = -1e300, sum = 0;
            for (int j = 0; j < nk; j++) {
                double s = 0;
                for (int d = 0; d < hd; d++) s += (double)q[i * qs + h * hd + d] * k[j * ks + h * hd + d];
                sc[j] = s * scale;
                if (sc[j] > mx) mx = sc[j];
            }
            for (int j = 0; j < nk; j++) sum += (sc[j] = exp(sc[j] - mx));
            for (int j = 0; j < Tk; j++) probs[(h * Tq + i) * Tk + j] = j < nk ? (float)(sc[j] / sum) : 0.0f;
            for (int d = 0; d < hd; d++) {
                double o = 0;
                for (int j = 0; j < nk; j++) o += sc[j] / sum * v[j * vs + h * hd + d];
                out[i * H * hd + h * hd + d] = (float)o;
            }
        }
}

static void test_attention(void) {
    const int cases[][6] = {/* Tq, Tk, H, hd, causal, offset */
                            {1, 1, 1, 1, 0, 0}, {1, 17, 3, 5, 0, 0}, {17, 17, 4, 16, 0, 0}, {197, 197, 3, 8, 0, 0},
                            {5, 9, 2, 7, 1, 4},  {1, 12, 4, 16, 1, 11}};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        int Tq = cases[c][0], Tk = cases[c][1], H = cases[c][2], hd = cases[c][3], causal = cases[c][4], off = cases[c][5];
        int E = H * hd, qs = 3 * E, ks = 2 * E; /* strided rows like GPT-2's fused projections */
        float *q = rand_buf((size_t)Tq * qs), *k = rand_buf((size_t)Tk * ks), *v = rand_buf((size_t)Tk * ks);
        float *out = malloc((size_t)Tq * E * sizeof *out), *ref = malloc((size_t)Tq * E * sizeof *ref);
        float *p = malloc((size_t)H * Tq * Tk * sizeof *p), *pref = malloc((size_t)H * Tq * Tk * sizeof *pref);
        float scale = 1.0f / sqrtf((float)hd);
        attention(out, E, p, q, qs, k, ks, v + E, ks, Tq, Tk, H, hd, scale, causal, off);
        naive_attention(ref, pref, q, qs, k, ks, v + E, ks, Tq, Tk, H, hd, scale, causal, off);
        float d = max_abs_diff(out, ref, (size_t)Tq * E), dp = max_abs_diff(p, pref, (size_t)H * Tq * Tk);
        CHECK(d <= 1e-5f && dp <= 1e-6f, "attention Tq=%d Tk=%d H=%d hd=%d causal=%d: out diff %g, probs diff %g", Tq, Tk,
              H, hd, causal, d, dp);
        for (int r = 0; r < H * Tq; r++) {
            double s = 0;
            for (int j = 0; j < Tk; j++) s += p[(size_t)r * Tk + j];
            if (fabs(s - 1.0) > 1e-5) {
                CHECK(0, "attention probs row %d sums to %g", r, s);
                break;
            }
        }
        free(q), free(k), free(v), free(out), free(ref), free(p), free(pref);
    }
}

/* nn_dot follows its documented order exactly (the vector and the portable code alike). */
static void test_dot(void) {
    for (int n = 0; n <= 70; n++) {
        float *a = rand_buf((size_t)n), *b = rand_buf((size_t)n);
        float lane[8] = {0}, tail = 0.0f;
        int d = 0;
        for (; d + 8 <= n; d += 8)
            for (int l = 0; l < 8; l++) lane[l] = fmaf(a[d + l], b[d + l], lane[l]);
        for (; d < n; d++) tail = fmaf(a[d], b[d], tail);
        float want = (((lane[0] + lane[4]) + (lane[2] + lane[6])) + ((lane[1] + lane[5]) + (lane[3] + lane[7]))) + tail;
        float got = nn_dot(a, b, n);
        CHECK(memcmp(&got, &want, sizeof got) == 0, "nn_dot n=%d: %.9g, documented order gives %.9g", n, got, want);
        free(a), free(b);
    }
}

int main(void) {
    nn_set_threads(2);
    test_layernorm();
    test_activations();
    test_softmax();
    test_attention();
    test_dot();
    return harness_finish("test_kernels");
}
