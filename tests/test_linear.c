/* nn_linear_forward (nn/linear.h): equal to its plain-loop twin to the last bit, on odd shapes,
 * whatever the number of rows, the rows' place in the batch, the strides and the thread count;
 * and close to a double-precision sum (so the twin itself is right). Everything runs once per
 * kernel family the machine has (portable, AVX2, AVX-512), so each is held to the same bits. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "nn/cpu.h"
#include "nn/kernels.h"
#include "nn/linear.h"
#include "nn/linear_internal.h"

static uint64_t rng = 777;

static float *rand_buf(size_t n) {
    float *b = malloc((n ? n : 1) * sizeof *b);
    for (size_t i = 0; i < n; i++) b[i] = test_rng_uniform(&rng);
    return b;
}

static float *transpose(const float *w, int rows, int cols) {
    float *t = malloc((size_t)rows * cols * sizeof *t + 1);
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) t[(size_t)c * rows + r] = w[(size_t)r * cols + c];
    return t;
}

static const int shapes[][3] = {{1, 1, 1},   {1, 3, 17},    {3, 17, 1},    {17, 64, 3},  {197, 48, 17},
                                {5, 197, 33}, {2, 130, 257}, {1, 192, 576}, {4, 192, 856}, {1, 70, 70},
                                {13, 1, 31},  {100, 33, 40}, {6, 16, 16},   {7, 16, 48},  {1, 5, 64},
                                /* whole groups of 4 (tiles) and 8 (rows) panels whose last panel is short */
                                {3, 20, 60},  {1, 20, 120},  {1, 9, 250},   {13, 7, 124}, {2, 3, 64},
                                /* q8 activations beyond the stack buffer (nn/linear.c) */
                                {100, 700, 40}};
#define N_SHAPES (sizeof shapes / sizeof *shapes)

static void test_equals_naive(void) {
    for (size_t i = 0; i < N_SHAPES; i++) {
        int T = shapes[i][0], K = shapes[i][1], N = shapes[i][2];
        for (int layout = 0; layout < 2; layout++)
            for (int with_bias = 0; with_bias < 2; with_bias++) {
                float *x = rand_buf((size_t)T * K), *w = rand_buf((size_t)K * N), *b = rand_buf(N);
                float *y = malloc((size_t)T * N * sizeof *y), *ref = malloc((size_t)T * N * sizeof *ref);
                const float *bias = with_bias ? b : NULL;
                nn_linear packed;
                int rc;
                if (layout == 0) {
                    rc = nn_linear_pack_kn(&packed, w, bias, K, N);
                } else {
                    float *w_nk = transpose(w, K, N);
                    rc = nn_linear_pack_nk(&packed, w_nk, bias, K, N);
                    free(w_nk);
                }
                CHECK(rc == 0, "pack failed");
                nn_linear_forward(y, N, x, K, &packed, T);
                nn_linear_naive(ref, x, w, bias, T, K, N);
                CHECK(!memcmp(y, ref, (size_t)T * N * sizeof *y), "%s T=%d K=%d N=%d bias=%d: differs from the naive loop",
                      layout ? "nk" : "kn", T, K, N, with_bias);
                /* The twin against a double sum: fp32 accumulation of K products of magnitude <= 1. */
                double worst = 0;
                for (int t = 0; t < T; t++)
                    for (int n = 0; n < N; n++) {
                        double s = bias ? bias[n] : 0.0;
                        for (int k = 0; k < K; k++) s += (double)x[(size_t)t * K + k] * w[(size_t)k * N + n];
                        double d = fabs(s - ref[(size_t)t * N + n]);
                        if (d > worst) worst = d;
                    }
                CHECK(worst <= 1e-6 * K + 1e-6, "naive T=%d K=%d N=%d: %g from the double sum", T, K, N, worst);
                nn_linear_free(&packed);
                free(x), free(w), free(b), free(y), free(ref);
            }
    }
}

/* The property batch mode relies on: a row's result is the same alone, at any place in a batch
 * of any size, and with any thread count. */
static void test_row_invariance(void) {
    const int K = 192, N = 200, T = 300;
    float *x = rand_buf((size_t)T * K), *w = rand_buf((size_t)K * N), *b = rand_buf(N);
    float *all = malloc((size_t)T * N * sizeof *all), *part = malloc((size_t)T * N * sizeof *part);
    nn_linear packed;
    CHECK(nn_linear_pack_kn(&packed, w, b, K, N) == 0, "pack failed");
    nn_set_threads(2);
    nn_linear_forward(all, N, x, K, &packed, T);
    const int windows[][2] = {{0, 1}, {1, 1}, {299, 1}, {5, 4}, {37, 37}, {100, 97}, {7, 200}, {250, 50}};
    for (size_t i = 0; i < sizeof windows / sizeof *windows; i++) {
        int t0 = windows[i][0], rows = windows[i][1];
        nn_linear_forward(part, N, x + (size_t)t0 * K, K, &packed, rows);
        CHECK(!memcmp(part, all + (size_t)t0 * N, (size_t)rows * N * sizeof *part),
              "rows %d..%d computed alone differ from the same rows in a batch of %d", t0, t0 + rows - 1, T);
    }
    nn_set_threads(1);
    nn_linear_forward(part, N, x, K, &packed, T);
    CHECK(!memcmp(part, all, (size_t)T * N * sizeof *part), "one thread differs from two");
    nn_set_threads(2);
    nn_linear_free(&packed);
    free(x), free(w), free(b), free(all), free(part);
}

/* Row strides on both sides; columns past N of a wider output row stay untouched. */
static void test_strides(void) {
    const int T = 9, K = 20, N = 37, xs = 29, ys = 50;
    float *x = rand_buf((size_t)T * xs), *w = rand_buf((size_t)K * N), *b = rand_buf(N);
    float *y = malloc((size_t)T * ys * sizeof *y), *ref = malloc((size_t)N * sizeof *ref);
    for (int i = 0; i < T * ys; i++) y[i] = 12345.0f;
    nn_linear packed;
    CHECK(nn_linear_pack_kn(&packed, w, b, K, N) == 0, "pack failed");
    nn_linear_forward(y, ys, x, xs, &packed, T);
    for (int t = 0; t < T; t++) {
        nn_linear_naive(ref, x + (size_t)t * xs, w, b, 1, K, N);
        CHECK(!memcmp(y + (size_t)t * ys, ref, (size_t)N * sizeof *ref), "strided row %d differs", t);
        int untouched = 1;
        for (int n = N; n < ys; n++) untouched &= y[(size_t)t * ys + n] == 12345.0f;
        CHECK(untouched, "row %d: columns past N were written", t);
    }
    nn_linear_free(&packed);
    free(x), free(w), free(b), free(y), free(ref);
}

/* Three nn.Linear layers packed side by side equal the three run one by one (ViT's q, k, v). */
static void test_concat(void) {
    const int T = 11, K = 24;
    const int widths[3] = {24, 7, 33};
    const float *parts[3], *biases[3];
    float *owned[6];
    for (int i = 0; i < 3; i++) {
        parts[i] = owned[i] = rand_buf((size_t)widths[i] * K);
        biases[i] = owned[3 + i] = i == 1 ? NULL : rand_buf(widths[i]);
    }
    int N = widths[0] + widths[1] + widths[2];
    float *x = rand_buf((size_t)T * K), *y = malloc((size_t)T * N * sizeof *y), *one = malloc((size_t)T * 33 * sizeof *one);
    nn_linear all;
    CHECK(nn_linear_pack_nk_concat(&all, parts, biases, widths, 3, K) == 0, "pack failed");
    nn_linear_forward(y, N, x, K, &all, T);
    int n0 = 0;
    for (int i = 0; i < 3; i++) {
        nn_linear single;
        CHECK(nn_linear_pack_nk(&single, parts[i], biases[i], K, widths[i]) == 0, "pack failed");
        nn_linear_forward(one, widths[i], x, K, &single, T);
        int same = 1;
        for (int t = 0; t < T; t++)
            same &= !memcmp(y + (size_t)t * N + n0, one + (size_t)t * widths[i], (size_t)widths[i] * sizeof *y);
        CHECK(same, "part %d of the concatenated layer differs from the layer alone", i);
        nn_linear_free(&single);
        n0 += widths[i];
    }
    nn_linear_free(&all);
    for (int i = 0; i < 6; i++) free(owned[i]);
    free(x), free(y), free(one);
}

/* Half conversion: every half survives half -> float -> half, and floats round to nearest even. */
static void test_half(void) {
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) continue; /* NaN payloads */
        if (nn_float_to_half(nn_half_to_float((uint16_t)h)) != h) bad++;
    }
    CHECK(bad == 0, "%d halves do not round-trip", bad);
    CHECK(nn_half_to_float(0x3c00) == 1.0f && nn_half_to_float(0xc000) == -2.0f, "1 and -2");
    CHECK(nn_half_to_float(0x0001) == 5.9604644775390625e-8f, "smallest subnormal");
    CHECK(nn_float_to_half(65504.0f) == 0x7bff && nn_float_to_half(65520.0f) == 0x7c00, "largest, overflow");
    CHECK(nn_float_to_half(1.0f + 0x1p-11f) == 0x3c00, "tie to even (down)");
    CHECK(nn_float_to_half(1.0f + 3 * 0x1p-11f) == 0x3c02, "tie to even (up)");
    CHECK(nn_float_to_half(0x1p-25f) == 0 && nn_float_to_half(0x1.8p-25f) == 1, "subnormal rounding");
}

/* The q8 arithmetic of linear.h, written out plainly: each row of x quantised to int16 in
 * blocks of 32 (d = m / 32767, v = round-to-even(x * (32767 / m))), exact integer block sums
 * with the int8 weights, one fp32 chain over the blocks, then fma(acc, s, b). */
static void q8_reference(float *y, const float *x, const int8_t *wq, const float *s, const float *b, int T, int K,
                         int N) {
    for (int t = 0; t < T; t++) {
        const float *xr = x + (size_t)t * K;
        for (int n = 0; n < N; n++) {
            float acc = 0.0f;
            for (int k0 = 0; k0 < K; k0 += 32) {
                const int k1 = k0 + 32 < K ? k0 + 32 : K;
                float m = 0.0f;
                for (int k = k0; k < k1; k++) m = fmaxf(m, fabsf(xr[k]));
                const float inv = m > 0.0f ? 32767.0f / m : 0.0f, d = m / 32767.0f;
                int64_t sum = 0;
                for (int k = k0; k < k1; k++) sum += (int64_t)nearbyintf(xr[k] * inv) * wq[(size_t)k * N + n];
                acc = fmaf((float)sum, d, acc);
            }
            y[(size_t)t * N + n] = fmaf(acc, s[n], b[n]);
        }
    }
}

/* F16 and Q8 weights: the packed kernels against plain loops with the documented arithmetic. */
static void test_narrow_types(void) {
    for (size_t i = 0; i < N_SHAPES; i++) {
        int T = shapes[i][0], K = shapes[i][1], N = shapes[i][2];
        float *x = rand_buf((size_t)T * K), *wf = rand_buf((size_t)K * N), *b = rand_buf(N), *s = rand_buf(N);
        uint16_t *wh = malloc((size_t)K * N * sizeof *wh + 2);
        int8_t *wq = malloc((size_t)K * N + 1);
        for (size_t j = 0; j < (size_t)K * N; j++) {
            wh[j] = nn_float_to_half(wf[j]);
            wq[j] = (int8_t)lrintf(wf[j] * 127.0f);
        }
        float *y = malloc((size_t)T * N * sizeof *y), *ref = malloc((size_t)T * N * sizeof *ref);
        for (int type = NN_F16; type <= NN_Q8; type++)
            for (int nk = 0; nk < 2; nk++) {
                /* stored_nk: transpose the sources first */
                uint16_t *h_src = wh;
                int8_t *q_src = wq;
                if (nk) {
                    h_src = malloc((size_t)K * N * sizeof *h_src + 2);
                    q_src = malloc((size_t)K * N + 1);
                    for (int k = 0; k < K; k++)
                        for (int n = 0; n < N; n++) {
                            h_src[(size_t)n * K + k] = wh[(size_t)k * N + n];
                            q_src[(size_t)n * K + k] = wq[(size_t)k * N + n];
                        }
                }
                nn_linear_part part = {type == NN_F16 ? (const void *)h_src : (const void *)q_src, s, b, N};
                nn_linear packed;
                CHECK(nn_linear_pack(&packed, type, nk, &part, 1, K) == 0, "pack failed");
                nn_linear_forward(y, N, x, K, &packed, T);
                if (type == NN_Q8) {
                    q8_reference(ref, x, wq, s, b, T, K, N);
                } else {
                    for (int t = 0; t < T; t++)
                        for (int n = 0; n < N; n++) {
                            float acc = b[n];
                            for (int k = 0; k < K; k++)
                                acc = fmaf(x[(size_t)t * K + k], nn_half_to_float(wh[(size_t)k * N + n]), acc);
                            ref[(size_t)t * N + n] = acc;
                        }
                }
                CHECK(!memcmp(y, ref, (size_t)T * N * sizeof *y), "%s %s T=%d K=%d N=%d: differs from the plain loop",
                      type == NN_F16 ? "f16" : "q8", nk ? "nk" : "kn", T, K, N);
                float col[256];
                if (K <= 256) {
                    int n = N - 1;
                    nn_linear_column(&packed, n, col);
                    int same = 1;
                    for (int k = 0; k < K; k++) {
                        float wv = type == NN_F16 ? nn_half_to_float(wh[(size_t)k * N + n])
                                                  : (float)wq[(size_t)k * N + n] * s[n];
                        same &= col[k] == wv;
                    }
                    CHECK(same, "%s column %d differs", type == NN_F16 ? "f16" : "q8", n);
                }
                nn_linear_free(&packed);
                if (nk) free(h_src), free(q_src);
            }
        free(x), free(wf), free(b), free(s), free(wh), free(wq), free(y), free(ref);
    }
}

/* nn_linear_view (attention's keys and values, the decoder's cross-attention caches): fp32 and
 * f16 panels packed from a strided source in either orientation give the plain loop's bits, and
 * nn_linear_wrap over the same memory gives them again. */
static void test_views(void) {
    for (size_t i = 0; i < N_SHAPES; i++) {
        int T = shapes[i][0], K = shapes[i][1], N = shapes[i][2];
        const size_t pad = 3; /* source rows longer than the matrix's */
        float *x = rand_buf((size_t)T * K), *src = rand_buf(((size_t)K + pad) * ((size_t)N + pad));
        float *zero = aligned_alloc(64, ((size_t)N + NN_PANEL) * sizeof(float) / 64 * 64 + 64);
        void *panels = aligned_alloc(64, (nn_linear_packed_elems(K, N) * sizeof(float) + 63) / 64 * 64);
        float *y = malloc((size_t)T * N * sizeof *y), *ref = malloc((size_t)T * N * sizeof *ref);
        memset(zero, 0, ((size_t)N + NN_PANEL) * sizeof(float));
        for (int type = NN_F32; type <= NN_F16; type++)
            for (int nk = 0; nk < 2; nk++) {
                const size_t stride = (size_t)(nk ? K : N) + pad;
                nn_linear v;
                nn_linear_view(&v, (nn_weight_type)type, panels, zero, src, stride, nk, K, N);
                nn_linear_forward(y, N, x, K, &v, T);
                for (int t = 0; t < T; t++)
                    for (int n = 0; n < N; n++) {
                        float acc = 0.0f;
                        for (int k = 0; k < K; k++) {
                            float wv = nk ? src[(size_t)n * stride + k] : src[(size_t)k * stride + n];
                            if (type == NN_F16) wv = nn_half_to_float(nn_float_to_half(wv));
                            acc = fmaf(x[(size_t)t * K + k], wv, acc);
                        }
                        ref[(size_t)t * N + n] = acc;
                    }
                CHECK(!memcmp(y, ref, (size_t)T * N * sizeof *y), "%s view %s T=%d K=%d N=%d: differs from the plain loop",
                      type == NN_F16 ? "f16" : "fp32", nk ? "nk" : "kn", T, K, N);
                nn_linear again = nn_linear_wrap((nn_weight_type)type, panels, zero, K, N);
                nn_linear_forward(y, N, x, K, &again, T);
                CHECK(!memcmp(y, ref, (size_t)T * N * sizeof *y), "%s wrap T=%d K=%d N=%d differs",
                      type == NN_F16 ? "f16" : "fp32", T, K, N);
            }
        free(x), free(src), free(zero), free(panels), free(y), free(ref);
    }
}

/* nn_floats_to_halves (vectorised where the CPU can) gives nn_float_to_half's bits, on every
 * float pattern class: subnormal results, ties, overflow, infinities, NaNs with payloads. */
static void test_halves_vector(void) {
    enum { N = 4099 };
    float *x = malloc(N * sizeof *x);
    uint16_t *h = malloc(N * sizeof *h);
    uint64_t s = 99;
    for (int i = 0; i < N; i++) {
        uint32_t bits = (uint32_t)test_rng_next(&s);
        if (i % 3 == 0) bits = (bits & 0x80ffffffu) | ((uint32_t)(100 + i % 50) << 23); /* near the half range */
        memcpy(&x[i], &bits, sizeof bits);
    }
    x[0] = 1.0f + 0x1p-11f, x[1] = 65520.0f, x[2] = -INFINITY, x[3] = NAN, x[4] = 0x1.8p-25f, x[5] = -0.0f;
    nn_floats_to_halves(h, x, N);
    int bad = 0;
    for (int i = 0; i < N; i++) bad += h[i] != nn_float_to_half(x[i]);
    CHECK(bad == 0, "%d of %d halves from nn_floats_to_halves on %s differ from nn_float_to_half", bad, N,
          nn_isa_name(nn_cpu_isa()));
    free(x), free(h);
}

/* The q8 activation quantiser on awkward blocks: all zeros, below the smallest scale, with an
 * infinity and a NaN, ties to even, and a short last block. Every instruction set must give the
 * portable code's bytes (the first pass of main's loop keeps them in `portable`). */
static void test_q8_quantize_special(void) {
    enum { K = 100 };
    static unsigned char portable[4096];
    static int have_portable;
    float x[K] = {0};
    for (int k = 32; k < 64; k++) x[k] = 1e-35f * (float)(k - 40);
    x[64] = INFINITY, x[65] = NAN, x[66] = -1.0f, x[67] = 3.0f;
    x[70] = 32767.0f, x[71] = 2.5f, x[72] = 3.5f, x[73] = -2.5f, x[74] = -0.0f; /* scale 1: ties */
    x[96] = -7.0f, x[97] = 1.75f, x[98] = 0.5f, x[99] = NAN;
    for (int k = 75; k < 96; k++) x[k] = (float)k - 80.5f;
    x[64] = 0.0f, x[65] = 0.0f; /* block 2 first plain, then again with the specials below */
    const size_t bytes = nn_q8_row_floats(K) * sizeof(float);
    float out[2][256];
    nn_q8_quantize(out[0], x, K, 1, K);
    const int16_t *v = (const int16_t *)out[0];
    CHECK(v[70] == 32767 && v[71] == 2 && v[72] == 4 && v[73] == -2 && v[74] == 0, "ties: %d %d %d %d %d", v[70],
          v[71], v[72], v[73], v[74]);
    for (int k = 0; k < 64; k++) CHECK(v[k] == 0, "zero or tiny block: v[%d] = %d", k, v[k]);
    x[64] = INFINITY, x[65] = NAN;
    nn_q8_quantize(out[1], x, K, 1, K);
    if (!have_portable) {
        memcpy(portable, out, 2 * 256 * sizeof(float));
        have_portable = 1;
    }
    CHECK(!memcmp(out[0], portable, bytes) && !memcmp(out[1], portable + sizeof out[0], bytes),
          "q8 activations on %s differ from portable", nn_isa_name(nn_cpu_isa()));
}

int main(void) {
    const nn_isa best = nn_cpu_isa();
    for (int isa = NN_ISA_PORTABLE; isa <= (int)best; isa++) {
        CHECK(nn_cpu_limit((nn_isa)isa) == (nn_isa)isa, "cannot select %s", nn_isa_name((nn_isa)isa));
        nn_set_threads(2);
        test_equals_naive();
        test_row_invariance();
        test_strides();
        test_concat();
        test_narrow_types();
        test_views();
        test_q8_quantize_special();
        test_halves_vector();
    }
    nn_cpu_limit(best);
    test_half();
    return harness_finish("test_linear");
}
