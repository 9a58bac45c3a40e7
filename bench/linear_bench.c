/* xcap's packed linear layer (nn/linear.h) against OpenBLAS's sgemm on the shapes the models
 * run: GFLOP/s of each and their ratio, measured in the same run, interleaved rep by rep so
 * that a busy machine slows both alike. Not a test; prints a table.
 *
 *   build/xcap_linear_bench [threads] [seconds per shape]
 *
 * Shapes (T rows x K inputs -> N outputs): the default model's (d 192, 37 memory tokens, a
 * batch of 8 images, decoder steps with 1 and 4 beams) and ViT-base / GPT-2's (d 768). */
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nn/linear.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static float *random_floats(size_t n, unsigned *seed) {
    float *p = malloc(n * sizeof *p);
    for (size_t i = 0; i < n; i++) p[i] = (float)rand_r(seed) / (float)RAND_MAX - 0.5f;
    return p;
}

static void blas_linear(float *y, const float *x, const float *w, const float *b, int T, int K, int N) {
    for (int t = 0; t < T; t++) memcpy(y + (size_t)t * N, b, (size_t)N * sizeof *y);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, N, K, 1.0f, x, K, w, N, 1.0f, y, N);
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 1;
    double seconds = argc > 2 ? atof(argv[2]) : 0.5;
    omp_set_num_threads(threads);
    openblas_set_num_threads(threads);
    static const struct {
        const char *what;
        int T, K, N;
    } shapes[] = {
        {"default: decoder step, greedy (qkv)", 1, 192, 576},
        {"default: decoder step, 4 beams (lm_head)", 4, 192, 856},
        {"default: encoder, 1 image (qkv)", 37, 192, 576},
        {"default: encoder, 1 image (mlp in)", 37, 192, 768},
        {"default: encoder, 1 image (mlp out)", 37, 768, 192},
        {"default: encoder, 8 images (mlp in)", 296, 192, 768},
        {"base: encoder, 1 image (qkv)", 197, 768, 2304},
        {"base: encoder, 8 images (mlp in)", 1576, 768, 3072},
        {"gpt2: decoder step, greedy (qkv)", 1, 768, 2304},
        {"gpt2: decoder step, greedy (lm_head)", 1, 768, 50257},
    };
    printf("threads %d\n\n", threads);
    printf("| shape | T x K -> N | xcap GFLOP/s | OpenBLAS GFLOP/s | xcap / OpenBLAS | max |diff| |\n");
    printf("|---|---|---|---|---|---|\n");
    unsigned seed = 1;
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        int T = shapes[s].T, K = shapes[s].K, N = shapes[s].N;
        float *x = random_floats((size_t)T * K, &seed), *w = random_floats((size_t)K * N, &seed);
        float *b = random_floats((size_t)N, &seed);
        float *y = malloc((size_t)T * N * sizeof *y), *y_blas = malloc((size_t)T * N * sizeof *y);
        nn_linear packed;
        if (nn_linear_pack_kn(&packed, w, b, K, N) != 0) {
            fprintf(stderr, "out of memory\n");
            return 1;
        }
        nn_linear_forward(y, N, x, K, &packed, T); /* warm both up */
        blas_linear(y_blas, x, w, b, T, K, N);
        double ours = 0, theirs = 0;
        long reps = 0;
        double start = now();
        while (now() - start < 2 * seconds || reps < 3) {
            double t0 = now();
            nn_linear_forward(y, N, x, K, &packed, T);
            double t1 = now();
            blas_linear(y_blas, x, w, b, T, K, N);
            double t2 = now();
            ours += t1 - t0;
            theirs += t2 - t1;
            reps++;
        }
        float diff = 0;
        for (size_t i = 0; i < (size_t)T * N; i++) {
            float d = y[i] > y_blas[i] ? y[i] - y_blas[i] : y_blas[i] - y[i];
            if (d > diff) diff = d;
        }
        double flops = 2.0 * T * K * N * (double)reps;
        printf("| %s | %d x %d -> %d | %.1f | %.1f | %.2f | %.1e |\n", shapes[s].what, T, K, N, flops / ours * 1e-9,
               flops / theirs * 1e-9, theirs / ours, diff);
        nn_linear_free(&packed);
        free(x), free(w), free(b), free(y), free(y_blas);
    }
    return 0;
}
