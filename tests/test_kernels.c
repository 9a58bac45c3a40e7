/* Each kernel against a plain double-precision loop on odd shapes (1, 3, 17, 197, ...). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "nn/cpu.h"
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
                            {5, 9, 2, 7, 1, 4},  {1, 12, 4, 16, 1, 11}, {197, 197, 12, 64, 0, 0}, {8, 50, 2, 64, 0, 0},
                            {7, 50, 2, 64, 0, 0}, {40, 3, 2, 24, 0, 0}};
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

/* softmax against double exp on rows of every length class (vector body, tail, both). */
static void test_softmax_accuracy(void) {
    const int lengths[] = {1, 7, 16, 17, 33, 197, 1000};
    for (size_t c = 0; c < sizeof lengths / sizeof *lengths; c++) {
        int n = lengths[c];
        float *x = rand_buf(n), *y = malloc(n * sizeof *y);
        for (int i = 0; i < n; i++) x[i] *= 40.0f; /* spreads over e^-40 .. e^40 */
        memcpy(y, x, n * sizeof *y);
        softmax(y, n);
        double mx = -1e300, sum = 0, worst = 0;
        for (int i = 0; i < n; i++) mx = x[i] > mx ? x[i] : mx;
        for (int i = 0; i < n; i++) sum += exp(x[i] - mx);
        /* x - max is rounded to float first (relative error 2^-24 of up to 80, carried into
         * the exponential), then exp, the sum and the scaling add a few ulp: the budget. */
        for (int i = 0; i < n; i++) {
            double want = exp(x[i] - mx) / sum, budget = fabs(x[i] - mx) * 0x1p-24 + 1e-6;
            worst = fmax(worst, fabs(y[i] - want) / want / budget);
        }
        CHECK(worst <= 1.0, "softmax n=%d: relative error %g of its budget", n, worst);
        free(x), free(y);
    }
}

/* The vectorised LayerNorm, GELUs, softmax and attention give the portable code's bits on every kernel
 * family the machine has (nn/cpu.h), so a caption does not depend on the CPU it ran on. */
static void test_isa_identity(void) {
    const nn_isa best = nn_cpu_isa();
    const size_t n = 4099;
    float *x = malloc(n * sizeof *x), *g[3], *t[3], *s[3], *o[3], *p[3], *ln[3];
    for (size_t i = 0; i < n; i++) x[i] = -12.0f + 24.0f * (float)i / (float)(n - 1);
    x[0] = -INFINITY, x[1] = INFINITY, x[2] = 0.0f, x[3] = -0.0f, x[4] = 1e-30f;
    const int Tq = 37, Tk = 37, H = 3, hd = 20, E = H * hd;
    float *q = rand_buf((size_t)Tk * 3 * E);
    for (int isa = NN_ISA_PORTABLE; isa <= (int)best; isa++) {
        nn_cpu_limit((nn_isa)isa);
        g[isa] = malloc(n * sizeof(float)), t[isa] = malloc(n * sizeof(float)), s[isa] = malloc(n * sizeof(float));
        ln[isa] = calloc(n, sizeof(float));
        for (int len = 1, at = 0; at + len <= (int)n; at += len, len = len * 3 + 2) /* rows of 1, 5, 17, 53, ... */
            layernorm(ln[isa] + at, q + at, q + 3700, q + 5200, 1, len, 1e-5f);
        layernorm(ln[isa], q, q + 1000, q + 2000, 13, 192, 1e-6f); /* 13 rows: the parallel path */
        o[isa] = malloc((size_t)Tq * E * sizeof(float)), p[isa] = malloc((size_t)H * Tq * Tk * sizeof(float));
        memcpy(g[isa], x, n * sizeof *x);
        gelu_erf(g[isa], n);
        memcpy(t[isa], x, n * sizeof *x);
        gelu_tanh(t[isa], n);
        for (size_t i = 0; i < n; i++) s[isa][i] = x[i] * 0.1f;
        s[isa][7] = -INFINITY;
        for (int len = 1, at = 0; at + len <= (int)n; at += len, len = len * 2 + 1) softmax(s[isa] + at, len);
        attention(o[isa], E, p[isa], q, 3 * E, q + E, 3 * E, q + 2 * E, 3 * E, Tq, Tk, H, hd, 0.2f, 0, 0);
        if (isa == 0) continue;
        CHECK(!memcmp(g[isa], g[0], n * sizeof *x), "gelu_erf on %s differs from portable", nn_isa_name((nn_isa)isa));
        CHECK(!memcmp(ln[isa], ln[0], n * sizeof *x), "layernorm on %s differs from portable", nn_isa_name((nn_isa)isa));
        CHECK(!memcmp(t[isa], t[0], n * sizeof *x), "gelu_tanh on %s differs from portable", nn_isa_name((nn_isa)isa));
        CHECK(!memcmp(s[isa], s[0], n * sizeof *x), "softmax on %s differs from portable", nn_isa_name((nn_isa)isa));
        CHECK(!memcmp(o[isa], o[0], (size_t)Tq * E * sizeof(float)) && !memcmp(p[isa], p[0], (size_t)H * Tq * Tk * sizeof(float)),
              "attention on %s differs from portable", nn_isa_name((nn_isa)isa));
    }
    nn_cpu_limit(best);
    CHECK(s[0][7] == 0.0f, "a -inf score has probability %g", s[0][7]);
    for (int isa = NN_ISA_PORTABLE; isa <= (int)best; isa++) free(g[isa]), free(t[isa]), free(s[isa]), free(ln[isa]), free(o[isa]), free(p[isa]);
    free(x), free(q);
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
    test_softmax_accuracy();
    test_isa_identity();
    return harness_finish("test_kernels");
}
