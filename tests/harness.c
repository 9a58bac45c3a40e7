#include "harness.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int harness_passed, harness_failed;

int harness_finish(const char *name) {
    printf("%s: %d passed, %d failed\n", name, harness_passed, harness_failed);
    return harness_failed ? 1 : 0;
}

static int npy_fail(const char *path, const char *why, FILE *f) {
    fprintf(stderr, "npy %s: %s\n", path, why);
    if (f) fclose(f);
    return -1;
}

int npy_load(const char *path, npy_array *out) {
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f) return npy_fail(path, "cannot open", NULL);
    unsigned char pre[10];
    if (fread(pre, 1, 10, f) != 10 || memcmp(pre, "\x93NUMPY", 6) != 0)
        return npy_fail(path, "not a .npy file", f);
    size_t hlen;
    if (pre[6] == 1) {
        hlen = pre[8] | (pre[9] << 8);
    } else {
        unsigned char more[2];
        if (fread(more, 1, 2, f) != 2) return npy_fail(path, "truncated header", f);
        hlen = pre[8] | (pre[9] << 8) | ((size_t)more[0] << 16) | ((size_t)more[1] << 24);
    }
    char *hdr = calloc(1, hlen + 1);
    if (!hdr || fread(hdr, 1, hlen, f) != hlen) {
        free(hdr);
        return npy_fail(path, "truncated header", f);
    }
    size_t elem = 0;
    if (strstr(hdr, "'<f4'")) out->dtype = 'f', elem = 4;
    else if (strstr(hdr, "'<i4'")) out->dtype = 'i', elem = 4;
    else if (strstr(hdr, "'<i8'")) out->dtype = 'I', elem = 8;
    else if (strstr(hdr, "'|u1'")) out->dtype = 'u', elem = 1;
    if (!elem || strstr(hdr, "'fortran_order': True")) {
        free(hdr);
        return npy_fail(path, "unsupported dtype or order", f);
    }
    const char *s = strstr(hdr, "'shape': (");
    if (!s) {
        free(hdr);
        return npy_fail(path, "no shape", f);
    }
    s += strlen("'shape': (");
    out->count = 1;
    while (*s && *s != ')') {
        char *end;
        long long v = strtoll(s, &end, 10);
        if (end == s) break;
        if (out->ndim < 8) out->shape[out->ndim++] = v;
        out->count *= (size_t)v;
        s = end;
        while (*s == ',' || *s == ' ') s++;
    }
    free(hdr);
    out->data = malloc(out->count * elem + 1);
    if (!out->data || fread(out->data, elem, out->count, f) != out->count) {
        free(out->data);
        out->data = NULL;
        return npy_fail(path, "truncated data", f);
    }
    fclose(f);
    return 0;
}

void npy_free(npy_array *a) {
    free(a->data);
    a->data = NULL;
}

float max_abs_diff(const float *a, const float *b, size_t n) {
    float m = 0;
    for (size_t i = 0; i < n; i++) {
        float d = fabsf(a[i] - b[i]);
        if (!(d <= m)) m = d; /* NaN propagates as a failure */
    }
    return m;
}

int check_close_npy_rel(const char *what, const float *got, size_t n, const char *path, float tol, float rel) {
    npy_array g;
    if (npy_load(path, &g) != 0) {
        CHECK(0, "%s: golden %s missing", what, path);
        return 0;
    }
    int ok = g.dtype == 'f' && g.count == n;
    CHECK(ok, "%s: golden %s has %zu elements of type %c, expected %zu floats", what, path,
          g.count, g.dtype, n);
    if (ok) {
        const float *want = (const float *)g.data;
        size_t worst = 0;
        float worst_excess = -INFINITY;
        for (size_t i = 0; i < n; i++) {
            float excess = fabsf(got[i] - want[i]) - (tol + rel * fabsf(want[i]));
            if (excess != excess) { /* a NaN fails */
                worst_excess = excess, worst = i;
                break;
            }
            if (excess > worst_excess) worst_excess = excess, worst = i;
        }
        ok = n == 0 || worst_excess <= 0.0f;
        CHECK(ok, "%s: element %zu is %.7g, golden %.7g: |diff| above %.3g + %.3g x |golden| (golden %s)", what,
              worst, got[worst], want[worst], tol, rel, path);
    }
    npy_free(&g);
    return ok;
}

int check_close_npy(const char *what, const float *got, size_t n, const char *path, float tol) {
    return check_close_npy_rel(what, got, n, path, tol, 0.0f);
}

uint64_t test_rng_next(uint64_t *s) {
    /* splitmix64 */
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

float test_rng_uniform(uint64_t *s) {
    return (float)((test_rng_next(s) >> 40) * (1.0 / 8388608.0)) - 1.0f;
}
