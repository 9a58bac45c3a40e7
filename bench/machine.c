/* The machine's own limits for the benchmark (bench/run.sh), measured in the same run as the
 * engines: OpenBLAS sgemm GFLOP/s on the linear layers of one image through the model's encoder,
 * and the memory bandwidth of a streaming read of a buffer far larger than the caches (the best
 * of one and eight sequential streams per thread, each plain and with software prefetching at
 * 256 .. 2048 bytes ahead; bench/stream.h). Prints one JSON object. Not a test.
 *
 *   build-bench/xcap_machine_bench MODEL_DIR THREADS [SECONDS]
 *
 * The sgemm rate is the encoder's mix: the total flops of its linear layers (patch projection,
 * per layer query|key|value, attention output, MLP in and out, each with the row count of one
 * image) over the summed median times of each shape, so it is the rate the encoder's GEMMs
 * would run at if each were as fast as OpenBLAS's. */
#include <cblas.h>
#include <cjson/cJSON.h>
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/stream.h"
#include "bench/timing.h"
#include "weights/config.h"

static double median_time(void (*fn)(void *), void *ctx, double seconds) {
    return bench_time(fn, ctx, seconds, 5, NULL).median_s;
}

typedef struct {
    int T, K, N;
    float *x, *w, *y;
} gemm;

static void run_sgemm(void *ctx) {
    gemm *g = ctx;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g->T, g->N, g->K, 1.0f, g->x, g->K, g->w, g->N, 0.0f, g->y,
                g->N);
}

static float *filled(size_t n, float value) {
    float *p = aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64);
    if (p)
        for (size_t i = 0; i < n; i++) p[i] = value + (float)(i % 7) * 1e-3f;
    return p;
}

/* Peak multiply-add rate of the cores: independent FMA chains on registers only (no memory
 * traffic), as many as hide the FMA latency. A roof for any GEMM, including ones whose kernels
 * use wider vectors than the sgemm above. */
enum { FMA_CHAINS = 12, FMA_ITERS = 1 << 22 };
typedef struct {
    float sink;
} fma_ctx;

#define FMA_PEAK_CHAINS(vec, set1, fmadd, lanes)                                      \
    vec acc[FMA_CHAINS], m = set1(0.999f), a = set1(1e-3f);                           \
    for (int c = 0; c < FMA_CHAINS; c++) acc[c] = set1((float)c);                     \
    for (int i = 0; i < FMA_ITERS; i++)                                               \
        for (int c = 0; c < FMA_CHAINS; c++) acc[c] = fmadd(acc[c], m, a);            \
    float lane[lanes], total = 0;                                                     \
    for (int c = 0; c < FMA_CHAINS; c++) {                                            \
        memcpy(lane, &acc[c], sizeof lane);                                           \
        total += lane[0];                                                             \
    }                                                                                 \
    return total;

__attribute__((target("avx2,fma"))) static float fma_chains_avx2(void) {
    FMA_PEAK_CHAINS(__m256, _mm256_set1_ps, _mm256_fmadd_ps, 8)
}
__attribute__((target("avx512f"))) static float fma_chains_avx512(void) {
    FMA_PEAK_CHAINS(__m512, _mm512_set1_ps, _mm512_fmadd_ps, 16)
}

static void run_fma(void *ctx, float (*chains)(void)) {
    float total = 0;
#pragma omp parallel reduction(+ : total)
    total += chains();
    ((fma_ctx *)ctx)->sink = total;
}
static void run_fma_avx2(void *ctx) { run_fma(ctx, fma_chains_avx2); }
static void run_fma_avx512(void *ctx) { run_fma(ctx, fma_chains_avx512); }

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL_DIR THREADS [SECONDS]\n", argv[0]);
        return 2;
    }
    int threads = atoi(argv[2]);
    double seconds = argc > 3 ? atof(argv[3]) : 1.0;
    xcap_config c;
    char err[1024];
    if (config_load(argv[1], &c, err, sizeof err)) {
        fprintf(stderr, "xcap_machine_bench: %s\n", err);
        return 1;
    }
    omp_set_num_threads(threads);
    openblas_set_num_threads(threads);

    int g = c.image_size / c.patch_size, M = g * g + 1, D = c.enc_hidden, inner = c.enc_intermediate;
    int P2 = 3 * c.patch_size * c.patch_size, L = c.enc_layers;
    const struct {
        const char *name;
        int T, K, N, count;
    } shapes[] = {
        {"patch", g * g, P2, D, 1}, {"qkv", M, D, 3 * D, L}, {"attn_out", M, D, D, L},
        {"mlp_in", M, D, inner, L}, {"mlp_out", M, inner, D, L},
    };
    cJSON *out = cJSON_CreateObject(), *per_shape = cJSON_CreateArray();
    cJSON_AddNumberToObject(out, "threads", threads);
    double flops = 0, time = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        gemm gm = {shapes[s].T, shapes[s].K, shapes[s].N, NULL, NULL, NULL};
        gm.x = filled((size_t)gm.T * gm.K, 0.5f);
        gm.w = filled((size_t)gm.K * gm.N, -0.25f);
        gm.y = filled((size_t)gm.T * gm.N, 0.0f);
        if (!gm.x || !gm.w || !gm.y) {
            fprintf(stderr, "xcap_machine_bench: out of memory\n");
            return 1;
        }
        double t = median_time(run_sgemm, &gm, seconds / 5), f = 2.0 * gm.T * gm.K * gm.N;
        flops += f * shapes[s].count;
        time += t * shapes[s].count;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", shapes[s].name);
        cJSON_AddNumberToObject(o, "T", gm.T);
        cJSON_AddNumberToObject(o, "K", gm.K);
        cJSON_AddNumberToObject(o, "N", gm.N);
        cJSON_AddNumberToObject(o, "gflops", f / t * 1e-9);
        cJSON_AddItemToArray(per_shape, o);
        free(gm.x), free(gm.w), free(gm.y);
    }
    cJSON_AddNumberToObject(out, "sgemm_encoder_gflops", flops / time * 1e-9);
    cJSON_AddItemToObject(out, "sgemm_shapes", per_shape);

    cJSON_AddStringToObject(out, "openblas", openblas_get_config());
    fma_ctx fc;
    double per_run = 2.0 * FMA_CHAINS * FMA_ITERS * threads;
    cJSON_AddNumberToObject(out, "fma_peak_avx2_gflops", 8 * per_run / median_time(run_fma_avx2, &fc, seconds / 5) * 1e-9);
    if (__builtin_cpu_supports("avx512f"))
        cJSON_AddNumberToObject(out, "fma_peak_avx512_gflops",
                                16 * per_run / median_time(run_fma_avx512, &fc, seconds / 5) * 1e-9);

    bench_stream st = {.n = BENCH_STREAM_FLOATS};
    st.data = bench_stream_buffer();
    if (!st.data) {
        fprintf(stderr, "xcap_machine_bench: out of memory for the bandwidth buffer\n");
        return 1;
    }
    /* The best of the variants (bench/stream.h), each its median over `seconds`: the most this
     * memory delivers to a read-only scan. */
    cJSON *variants = cJSON_AddArrayToObject(out, "bandwidth_variants");
    double best = 0;
    for (int v = 0; v < BENCH_STREAM_VARIANTS; v++) {
        bench_stream_variant(&st, v);
        double gbs = bench_stream_bytes(&st) / median_time(bench_stream_run, &st, seconds) * 1e-9;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "streams_per_thread", st.streams);
        cJSON_AddNumberToObject(o, "prefetch_bytes", st.prefetch);
        cJSON_AddNumberToObject(o, "gbs", gbs);
        cJSON_AddItemToArray(variants, o);
        if (gbs > best) best = gbs;
    }
    cJSON_AddNumberToObject(out, "bandwidth_gbs", best);
    cJSON_AddNumberToObject(out, "bandwidth_buffer_bytes", (double)st.n * sizeof(float));
    free((void *)st.data);
    char *text = cJSON_PrintUnformatted(out);
    printf("%s\n", text);
    free(text);
    cJSON_Delete(out);
    return 0;
}
