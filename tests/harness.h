/* Minimal test harness shared by every C test: checks that count and report, a reader for
 * .npy golden files (written by weights/reference/), and array comparisons with tolerances. */
#ifndef XCAP_TESTS_HARNESS_H
#define XCAP_TESTS_HARNESS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

extern int harness_passed, harness_failed;

#define CHECK(cond, ...)                                                                   \
    do {                                                                                   \
        if (cond) {                                                                        \
            harness_passed++;                                                              \
        } else {                                                                           \
            harness_failed++;                                                              \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                \
            fprintf(stderr, __VA_ARGS__);                                                  \
            fputc('\n', stderr);                                                           \
        }                                                                                  \
    } while (0)

/* Prints "N passed, N failed" and returns the process exit code. */
int harness_finish(const char *name);

/* A loaded .npy array. dtype is one of 'f' (float32), 'i' (int32), 'I' (int64 read as
 * int64), 'u' (uint8). */
typedef struct {
    char dtype;
    int ndim;
    int64_t shape[8];
    size_t count;
    void *data;
} npy_array;

/* Loads path; returns 0 on success, prints the reason and returns -1 otherwise. */
int npy_load(const char *path, npy_array *out);
void npy_free(npy_array *a);

/* Largest |a[i] - b[i]| over n floats. */
float max_abs_diff(const float *a, const float *b, size_t n);

/* Checks that got matches the float32 golden at path within tol (shape by element count);
 * reports the largest difference. Returns 1 when it matched. */
int check_close_npy(const char *what, const float *got, size_t n, const char *path, float tol);
/* The same with |got - golden| <= tol + rel * |golden| per element. */
int check_close_npy_rel(const char *what, const float *got, size_t n, const char *path, float tol, float rel);

/* Deterministic pseudo-random numbers for tests. */
uint64_t test_rng_next(uint64_t *s);
float test_rng_uniform(uint64_t *s); /* in [-1, 1) */

#endif
