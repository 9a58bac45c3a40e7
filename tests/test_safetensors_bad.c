/* Crafted safetensors files (issue 9): tensor offsets past the end of the file, overlapping
 * another tensor, offsets beyond what 64-bit arithmetic holds, and headers whose length claims
 * a terabyte are each refused with a message naming the file, the tensor and the problem. The
 * files are written here, byte by byte, from the format's definition (spec §1). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "nn/common.h"
#include "weights/safetensors.h"

static char dir[] = "/tmp/xcap_st_bad_XXXXXX";

/* A file: the 8-byte little-endian header length (header_len, or the JSON's own length when
 * header_len is 0), the JSON, then data_len zero bytes. Returns its path. */
static const char *craft(const char *name, uint64_t header_len, const char *json, size_t data_len) {
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) return path;
    uint64_t n = header_len ? header_len : strlen(json);
    for (int i = 0; i < 8; i++) fputc((int)(n >> (8 * i) & 0xff), f);
    fputs(json, f);
    for (size_t i = 0; i < data_len; i++) fputc(0, f);
    fclose(f);
    return path;
}

/* st_open refuses the file with exactly "PATH: message". */
static void expect_refusal(const char *what, const char *path, const char *message) {
    st_file f;
    char err[1024] = "", want[1024];
    int rc = st_open(path, &f, err, sizeof err);
    CHECK(rc == XCAP_ERR_FORMAT, "%s: status %d (%s)", what, rc, err);
    if (rc == XCAP_OK) st_close(&f);
    snprintf(want, sizeof want, "%s: %s", path, message);
    CHECK(strcmp(err, want) == 0, "%s:\n  got  %s\n  want %s", what, err, want);
}

static void test_past_the_end(void) {
    expect_refusal("end past the file",
                   craft("past_end.safetensors", 0, "{\"w\":{\"dtype\":\"F32\",\"shape\":[250],\"data_offsets\":[0,1000]}}", 16),
                   "tensor w: data_offsets [0, 1000] run past the end of the data section of 16 bytes (file truncated?)");
    expect_refusal("begin and end past the file",
                   craft("both_past.safetensors", 0, "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[64,72]}}", 16),
                   "tensor w: data_offsets [64, 72] run past the end of the data section of 16 bytes (file truncated?)");
    expect_refusal("end before begin",
                   craft("reversed.safetensors", 0, "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 16),
                   "tensor w: data_offsets [8, 0] end before they begin");
}

static void test_overlap(void) {
    expect_refusal("second tensor inside the first",
                   craft("overlap.safetensors", 0,
                         "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12),
                   "tensor b (data bytes 4..12) overlaps tensor a (bytes 0..8)");
    expect_refusal("same bytes twice",
                   craft("alias.safetensors", 0,
                         "{\"a\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[0,8]},"
                         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8),
                   "tensor b (data bytes 0..8) overlaps tensor a (bytes 0..8)");
}

static void test_offsets_beyond_64_bits(void) {
    expect_refusal("end at 2^64",
                   craft("end_2p64.safetensors", 0,
                         "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,18446744073709551616]}}", 4),
                   "tensor w: data_offsets[1] = 18446744073709551616 is beyond 2^53 (offsets that large overflow "
                   "64-bit arithmetic and no file holds them)");
    expect_refusal("begin near 2^64, wrapping the span to 4 bytes",
                   craft("wrap.safetensors", 0,
                         "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[18446744073709551612,0]}}", 4),
                   "tensor w: data_offsets[0] = 18446744073709551616 is beyond 2^53 (offsets that large overflow "
                   "64-bit arithmetic and no file holds them)");
    expect_refusal("negative offset",
                   craft("negative.safetensors", 0, "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4),
                   "tensor w: data_offsets[0] is not a non-negative integer");
    expect_refusal("element count past 64 bits",
                   craft("count.safetensors", 0,
                         "{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,4]}}", 4),
                   "tensor w: element count overflows");
    expect_refusal("2^53 offsets, inside what a double holds but past the file",
                   craft("big.safetensors", 0,
                         "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[9007199254740988,9007199254740992]}}", 4),
                   "tensor w: data_offsets [9007199254740988, 9007199254740992] run past the end of the data section "
                   "of 4 bytes (file truncated?)");
}

static void test_header_length(void) {
    expect_refusal("1 TB header", craft("tera.safetensors", 1000000000000ull, "{}", 0),
                   "header length 1000000000000 bytes is above the 100 MB limit (corrupt or not a safetensors file)");
    expect_refusal("2^64 - 1 header", craft("max.safetensors", UINT64_MAX, "{}", 0),
                   "header length 18446744073709551615 bytes is above the 100 MB limit (corrupt or not a safetensors "
                   "file)");
    expect_refusal("header longer than the file", craft("long.safetensors", 4096, "{}", 0),
                   "header length 4096 bytes runs past the end of the file (10 bytes)");
    expect_refusal("bytes after the header's JSON", craft("trailing.safetensors", 0, "{} x", 0),
                   "header has bytes after its JSON object (at byte 11)");
}

/* The same parser on a buffer (st_open_memory): the checks do not depend on the file path. */
static void test_memory(void) {
    static const char json[] = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                               "\"b\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[2,6]}}";
    uint8_t buf[8 + sizeof json - 1 + 6] = {0};
    buf[0] = (uint8_t)(sizeof json - 1);
    memcpy(buf + 8, json, sizeof json - 1);
    st_file f;
    char err[1024] = "";
    int rc = st_open_memory(buf, sizeof buf, "upload", &f, err, sizeof err);
    CHECK(rc == XCAP_ERR_FORMAT && strcmp(err, "upload: tensor b (data bytes 2..6) overlaps tensor a (bytes 0..4)") == 0,
          "memory overlap: %d %s", rc, err);
    /* the same tensors one after the other are fine */
    memcpy(buf + 8, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                    "\"b\":{\"dtype\":\"BF16\",\"shape\":[1],\"data_offsets\":[4,6]}}", sizeof json - 1);
    rc = st_open_memory(buf, sizeof buf, "upload", &f, err, sizeof err);
    CHECK(rc == XCAP_OK, "memory, valid: %s", err);
    if (rc == XCAP_OK) {
        st_tensor *b = st_find(&f, "b");
        CHECK(b && b->data == buf + 8 + (sizeof json - 1) + 4 && b->n_bytes == 2 && f.map == NULL, "tensor b in place");
        st_close(&f);
    }
    rc = st_open_memory(buf, 7, "upload", &f, err, sizeof err);
    CHECK(rc == XCAP_ERR_FORMAT && strcmp(err, "upload: 7 bytes, too short for a safetensors header") == 0, "short: %s", err);
}

int main(void) {
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_past_the_end();
    test_overlap();
    test_offsets_beyond_64_bits();
    test_header_length();
    test_memory();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return harness_finish("test_safetensors_bad");
}
