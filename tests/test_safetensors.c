/* safetensors reader: valid files in each dtype, and every malformation the reader must name. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "nn/common.h"
#include "weights/safetensors.h"

static char dir[] = "/tmp/xcap_st_XXXXXX";

/* Writes header JSON (padded to a multiple of 8 as the reference writer does) then data. */
static const char *write_st(const char *name, const char *header, const void *data, size_t data_len,
                            long long fake_header_len) {
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    size_t hl = strlen(header), padded = (hl + 7) / 8 * 8;
    unsigned long long n = fake_header_len >= 0 ? (unsigned long long)fake_header_len : padded;
    for (int i = 0; i < 8; i++) fputc((int)((n >> (8 * i)) & 0xff), f);
    fwrite(header, 1, hl, f);
    for (size_t i = hl; i < padded; i++) fputc(' ', f);
    if (data_len) fwrite(data, 1, data_len, f);
    fclose(f);
    return path;
}

static void expect_error(const char *what, const char *path, const char *needle1, const char *needle2) {
    st_file f;
    char err[512] = "";
    int rc = st_open(path, &f, err, sizeof err);
    CHECK(rc != XCAP_OK, "%s: accepted", what);
    if (rc == XCAP_OK) {
        st_close(&f);
        return;
    }
    CHECK(strstr(err, path) != NULL, "%s: message does not name the file: %s", what, err);
    CHECK(strstr(err, needle1) != NULL, "%s: message lacks '%s': %s", what, needle1, err);
    if (needle2) CHECK(strstr(err, needle2) != NULL, "%s: message lacks '%s': %s", what, needle2, err);
}

static void test_valid(void) {
    /* a: F32 [2,3]; b: F16 [4]; c: BF16 [2] */
    unsigned char data[24 + 8 + 4];
    float a[6] = {1, -2, 3.5f, 0, 1e-3f, -7};
    memcpy(data, a, 24);
    /* F16: 1.0 (0x3c00), -2.0 (0xc000), smallest subnormal (0x0001) = 2^-24, +inf (0x7c00) */
    unsigned short h[4] = {0x3c00, 0xc000, 0x0001, 0x7c00};
    memcpy(data + 24, h, 8);
    /* BF16: 1.5 (0x3fc0), -0.25 (0xbe80) */
    unsigned short bf[2] = {0x3fc0, 0xbe80};
    memcpy(data + 32, bf, 4);
    const char *hdr = "{\"__metadata__\":{\"format\":\"pt\"},"
                      "\"b\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[24,32]},"
                      "\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
                      "\"c\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[32,36]}}";
    const char *path = write_st("ok.safetensors", hdr, data, sizeof data, -1);
    st_file f;
    char err[512];
    int rc = st_open(path, &f, err, sizeof err);
    CHECK(rc == XCAP_OK, "valid file refused: %s", err);
    if (rc) return;
    CHECK(f.n_tensors == 3, "%d tensors", f.n_tensors);
    st_tensor *ta = st_find(&f, "a"), *tb = st_find(&f, "b"), *tc = st_find(&f, "c");
    CHECK(ta && ta->dtype == ST_F32 && ta->ndim == 2 && ta->shape[0] == 2 && ta->shape[1] == 3, "tensor a");
    CHECK(ta && !memcmp(ta->data, a, 24), "tensor a data");
    CHECK(st_find(&f, "__metadata__") == NULL && st_find(&f, "zz") == NULL, "lookup of absent names");
    if (tb) {
        float out[4];
        st_f16_to_f32(tb->data, out, 4);
        CHECK(out[0] == 1.0f && out[1] == -2.0f && out[2] == ldexpf(1.0f, -24) && isinf(out[3]), "f16 -> f32: %g %g %g %g",
              out[0], out[1], out[2], out[3]);
    }
    if (tc) {
        float out[2];
        st_bf16_to_f32(tc->data, out, 2);
        CHECK(out[0] == 1.5f && out[1] == -0.25f, "bf16 -> f32: %g %g", out[0], out[1]);
    }
    st_close(&f);
}

static void test_f16_exhaustive(void) {
    /* every finite half value against a direct formula */
    int bad = 0;
    for (unsigned v = 0; v < 65536; v++) {
        unsigned char b[2] = {v & 0xff, v >> 8};
        float got;
        st_f16_to_f32(b, &got, 1);
        int e = (v >> 10) & 31, m = v & 1023;
        if (e == 31) {
            bad += m ? !isnan(got) : !isinf(got);
            continue;
        }
        double want = e ? ldexp(1.0 + m / 1024.0, e - 15) : ldexp(m / 1024.0, -14);
        if (v & 0x8000) want = -want;
        bad += got != (float)want;
    }
    CHECK(bad == 0, "%d half values converted wrongly", bad);
}

static void test_malformed(void) {
    float z[4] = {0};
    char p[512];
    snprintf(p, sizeof p, "%s/empty.safetensors", dir);
    fclose(fopen(p, "wb"));
    expect_error("zero-byte file", p, "too short", NULL);

    expect_error("header longer than file",
                 write_st("long.safetensors", "{}", NULL, 0, 1000), "header length", NULL);
    expect_error("header over 100 MB", write_st("huge.safetensors", "{}", NULL, 0, 200000000LL), "100 MB", NULL);
    expect_error("header not JSON", write_st("notjson.safetensors", "{\"a\": [", NULL, 0, -1), "JSON", NULL);
    expect_error("header is an array", write_st("array.safetensors", "[1,2]", NULL, 0, -1), "JSON object", NULL);
    expect_error("unsupported dtype",
                 write_st("i64.safetensors", "{\"w\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[0,16]}}", z, 16, -1),
                 "I64", "tensor w");
    expect_error("size mismatch",
                 write_st("size.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,16]}}", z, 16, -1),
                 "tensor w", "12 bytes");
    expect_error("truncated data",
                 write_st("trunc.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", z, 8, -1),
                 "tensor w", "truncated");
    expect_error("overlap",
                 write_st("overlap.safetensors",
                          "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                          "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                          z, 12, -1),
                 "tensor b", "overlaps");
    expect_error("hole",
                 write_st("hole.safetensors",
                          "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                          "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
                          z, 12, -1),
                 "tensor b", "hole");
    expect_error("trailing bytes",
                 write_st("trail.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", z, 12, -1),
                 "not covered", NULL);
    expect_error("negative shape",
                 write_st("neg.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", z, 4, -1),
                 "tensor a", "shape");
    expect_error("overflowing shape",
                 write_st("ovf.safetensors",
                          "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,4]}}", z, 4, -1),
                 "tensor a", "overflow");
    expect_error("bad offsets",
                 write_st("offs.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", z, 4, -1),
                 "tensor a", "data_offsets");
    expect_error("missing file", "/nonexistent/model.safetensors", "No such file", NULL);
}

int main(void) {
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_valid();
    test_f16_exhaustive();
    test_malformed();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return harness_finish("test_safetensors");
}
