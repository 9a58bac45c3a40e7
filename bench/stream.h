/* The memory bandwidth reading shared by the benchmark programs (bench/machine.c, and
 * bench/stages.c, which reads it between decoder steps): read-only scans of a buffer far larger
 * than the caches, split between the OpenMP threads, each thread reading one sequential stream or
 * eight side by side, plain or with software prefetching a fixed distance ahead. Header only; not
 * part of the library. */
#ifndef XCAP_BENCH_STREAM_H
#define XCAP_BENCH_STREAM_H

#include <immintrin.h>
#include <omp.h>
#include <stdlib.h>

/* 1 GiB: 32 times this machine's L3 at the time of writing, and larger than any last-level
 * cache of a current server part. */
#define BENCH_STREAM_FLOATS ((size_t)1 << 28)

typedef struct {
    const float *data;
    size_t n;
    int streams;  /* sequential streams each thread reads side by side: 1 or 8 */
    int prefetch; /* bytes ahead each stream is prefetched; 0: the hardware prefetchers alone */
    float sink;
} bench_stream;

/* The variants a reading tries: one and eight streams per thread, each plain and prefetched. */
static const int bench_stream_counts[] = {1, 8};
static const int bench_stream_distances[] = {0, 256, 512, 1024, 2048};
enum {
    BENCH_STREAM_VARIANTS = (int)(sizeof bench_stream_counts / sizeof *bench_stream_counts *
                                  (sizeof bench_stream_distances / sizeof *bench_stream_distances))
};

static inline void bench_stream_variant(bench_stream *s, int v) {
    int nd = (int)(sizeof bench_stream_distances / sizeof *bench_stream_distances);
    s->streams = bench_stream_counts[v / nd];
    s->prefetch = bench_stream_distances[v % nd];
}

/* A buffer of BENCH_STREAM_FLOATS floats, written once (so that every page is backed), or NULL. */
static inline float *bench_stream_buffer(void) {
    float *p = aligned_alloc(64, BENCH_STREAM_FLOATS * sizeof(float));
    if (p)
        for (size_t i = 0; i < BENCH_STREAM_FLOATS; i++) p[i] = 1.0f + (float)(i % 7) * 1e-3f;
    return p;
}

/* Sums [from, to) as one sequential stream with four independent AVX accumulators. */
__attribute__((target("avx2"))) static inline float bench_stream_one(const float *data, size_t from, size_t to,
                                                                    int prefetch) {
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
 * per step: the access pattern of kernels that read several weight panels at once. */
__attribute__((target("avx2"))) static inline float bench_stream_eight(const float *data, size_t from, size_t to,
                                                                      int prefetch) {
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

/* The bytes one scan reads (each thread's share is rounded down to whole 128-float blocks). */
static inline double bench_stream_bytes(const bench_stream *s) {
    int nt = omp_get_max_threads();
    return (double)nt * (double)(s->n / 128 / nt * 128) * sizeof(float);
}

/* One scan of the whole buffer, split between the threads. The vector code sits in functions of
 * its own called from the parallel region: clang does not give a region's outlined body the
 * target attributes of the function around it. */
static inline void bench_stream_run(void *ctx) {
    bench_stream *s = ctx;
    float total = 0;
#pragma omp parallel reduction(+ : total)
    {
        int nt = omp_get_num_threads(), id = omp_get_thread_num();
        size_t chunk = s->n / 128 / nt * 128, from = chunk * id, to = from + chunk;
        total += s->streams == 8 ? bench_stream_eight(s->data, from, to, s->prefetch)
                                 : bench_stream_one(s->data, from, to, s->prefetch);
    }
    s->sink = total;
}

#endif
