/* The machine's own limits for the benchmark (bench/run.sh), measured in the same run as the
 * engines: OpenBLAS sgemm GFLOP/s on the linear layers of one image through the model's encoder,
 * and the memory bandwidth of a streaming read of a buffer far larger than the caches (the best
 * of one and eight sequential streams per thread, each plain and with software prefetching at
 * 256 .. 2048 bytes ahead). Prints
 * one JSON object. Not a test.
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

typedef struct {
    const float *data;
    size_t n;
    int streams;  /* sequential streams each thread reads side by side: 1 or 8 */
    int prefetch; /* bytes ahead each stream is prefetched; 0: the hardware prefetchers alone */
    float sink;
} stream;

/* Sums [from, to) as one sequential stream with four independent AVX accumulators. */
__attribute__((target("avx2"))) static float stream_one(const float *data, size_t from, size_t to, int prefetch) {
    __m256 a = _mm256_setzero_ps(), b = a, c = a, d = a;
    const size_t ahead = (size_t)prefetch / sizeof(float);
    for (size_t i = from; i < to; i += 32) {
        if (ahead) {
            _mm_prefetch((const char *)(data + i + ahead), _MM_HINT_T0);
            _mm_prefetch((const char *)(data + i + ahead + 16), _MM_HINT_T0);
        }
        a = _mm256_add_ps(a, _mm256_load_ps(data + i));
        b = _mm256_add_ps(b, _mm256_load_ps(data + i + 8));
        c = _mm256_add_ps(c, _mm256_load_ps(data + i + 16));
        d = _mm256_add_ps(d, _mm256_load_ps(data + i + 24));
    }
    float lanes[8], total = 0;
    _mm256_storeu_ps(lanes, _mm256_add_ps(_mm256_add_ps(a, b), _mm256_add_ps(c, d)));
    for (int l = 0; l < 8; l++) total += lanes[l];
    return total;
}

/* Sums [from, to) cut into 8 equal parts read side by side, 16 floats (one cache line) of each
 * per step: the access pattern of xcap's matrix-vector kernels, which read 8 weight panels at
 * once. */
__attribute__((target("avx2"))) static float stream_eight(const float *data, size_t from, size_t to, int prefetch) {
    const size_t part = (to - from) / 8 / 16 * 16, ahead = (size_t)prefetch / sizeof(float);
    __m256 acc[8];
    for (int j = 0; j < 8; j++) acc[j] = _mm256_setzero_ps();
    for (size_t i = 0; i < part; i += 16)
        for (int j = 0; j < 8; j++) {
            const float *p = data + from + (size_t)j * part + i;
            if (ahead) _mm_prefetch((const char *)(p + ahead), _MM_HINT_T0);
            acc[j] = _mm256_add_ps(acc[j], _mm256_add_ps(_mm256_load_ps(p), _mm256_load_ps(p + 8)));
        }
    float lanes[8], total = 0;
    for (int j = 0; j < 8; j++) {
        _mm256_storeu_ps(lanes, acc[j]);
        for (int l = 0; l < 8; l++) total += lanes[l];
    }
    return total;
}

/* A read-only stream over the whole buffer, split between the threads. The vector code sits in
 * functions of its own called from the parallel region: clang does not give a region's outlined
 * body the target attributes of the function around it. */
static void run_stream(void *ctx) {
    stream *s = ctx;
    float total = 0;
#pragma omp parallel reduction(+ : total)
    {
        int nt = omp_get_num_threads(), id = omp_get_thread_num();
        size_t chunk = s->n / 128 / nt * 128, from = chunk * id, to = from + chunk;
        total += s->streams == 8 ? stream_eight(s->data, from, to, s->prefetch) : stream_one(s->data, from, to, s->prefetch);
    }
    s->sink = total;
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

    /* 1 GiB: 32 times this machine's L3 at the time of writing, and larger than any
     * last-level cache of a current server part. */
    stream st = {.n = (size_t)1 << 28};
    st.data = filled(st.n, 1.0f);
    if (!st.data) {
        fprintf(stderr, "xcap_machine_bench: out of memory for the bandwidth buffer\n");
        return 1;
    }
    /* The best of one and eight streams per thread, each plain and with software prefetching
     * at a few distances: the most this memory delivers to a read-only scan. */
    static const int distances[] = {0, 256, 512, 1024, 2048};
    cJSON *variants = cJSON_AddArrayToObject(out, "bandwidth_variants");
    double best = 0;
    for (int streams = 1; streams <= 8; streams += 7)
        for (size_t i = 0; i < sizeof distances / sizeof *distances; i++) {
            st.streams = streams;
            st.prefetch = distances[i];
            size_t bytes = (size_t)omp_get_max_threads() * (st.n / 128 / omp_get_max_threads() * 128) * sizeof(float);
            double gbs = (double)bytes / median_time(run_stream, &st, seconds) * 1e-9;
            cJSON *v = cJSON_CreateObject();
            cJSON_AddNumberToObject(v, "streams_per_thread", streams);
            cJSON_AddNumberToObject(v, "prefetch_bytes", distances[i]);
            cJSON_AddNumberToObject(v, "gbs", gbs);
            cJSON_AddItemToArray(variants, v);
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
