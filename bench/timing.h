/* Repeat-and-take-the-median timing shared by the benchmark programs (bench/stages.c,
 * bench/machine.c). Header only; not part of the library. */
#ifndef XCAP_BENCH_TIMING_H
#define XCAP_BENCH_TIMING_H

#include <stdlib.h>
#include <time.h>

static inline double bench_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static inline int bench_compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct {
    double median_s, min_s;
    int reps; /* 0 when the first (untimed) run already failed */
} bench_timing;

/* Runs fn(ctx) once untimed (warm caches, first-touch page faults), then again until the timed
 * runs have taken `seconds` and number at least `min_reps`. Stops as soon as *failed (if given)
 * becomes non-zero. */
static inline bench_timing bench_time(void (*fn)(void *), void *ctx, double seconds, int min_reps, const int *failed) {
    enum { MAX_REPS = 100000 };
    bench_timing r = {0, 0, 0};
    fn(ctx);
    int cap = 64, n = 0;
    double *t = malloc(cap * sizeof *t), start = bench_now();
    while (t && n < MAX_REPS && !(failed && *failed) && (n < min_reps || bench_now() - start < seconds)) {
        if (n == cap) {
            double *more = realloc(t, 2 * cap * sizeof *t);
            if (!more) break;
            t = more;
            cap *= 2;
        }
        double t0 = bench_now();
        fn(ctx);
        t[n++] = bench_now() - t0;
    }
    if (n > 0) {
        qsort(t, n, sizeof *t, bench_compare_doubles);
        r.median_s = n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
        r.min_s = t[0];
        r.reps = n;
    }
    free(t);
    return r;
}

#endif
