/* Replays the fuzz targets (tests/fuzz/fuzz_*.c, compiled in here with their invariants) on
 * their committed seeds and on every input the fuzzers found to crash (tests/fuzz/regress/):
 * with gcc in the release build and under ASan+UBSan in the sanitizer build. An invariant that
 * fails aborts the test. Then each regression input's exact outcome: the error it now gets. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define LLVMFuzzerTestOneInput fuzz_image_one
#include "fuzz/fuzz_image.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_safetensors_one
#include "fuzz/fuzz_safetensors.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_config_one
#include "fuzz/fuzz_config.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_tokenizer_load_one
#define LLVMFuzzerInitialize fuzz_tokenizer_load_init
#include "fuzz/fuzz_tokenizer_load.c"
#undef LLVMFuzzerTestOneInput
#undef LLVMFuzzerInitialize
#define LLVMFuzzerTestOneInput fuzz_bpe_one
#define LLVMFuzzerInitialize fuzz_bpe_init
#include "fuzz/fuzz_bpe.c"
#undef LLVMFuzzerTestOneInput
#undef LLVMFuzzerInitialize

#include "cmd/image.h"
#include "weights/config.h"

typedef int (*fuzz_body)(const uint8_t *, size_t);

static uint8_t *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, len = 0;
    uint8_t *buf = malloc(cap);
    while (buf) {
        len += fread(buf + len, 1, cap - len, f);
        if (len < cap) break;
        uint8_t *bigger = realloc(buf, cap * 2);
        if (!bigger) free(buf);
        buf = bigger;
        cap *= 2;
    }
    fclose(f);
    *n = len;
    return buf;
}

/* Every file of dir through body (a missing folder counts as empty); returns how many. */
static int replay(const char *dir, fuzz_body body) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int count = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        size_t n;
        uint8_t *data = read_all(path, &n);
        CHECK(data != NULL, "cannot read %s", path);
        if (!data) continue;
        body(data, n); /* aborts on a broken invariant */
        free(data);
        count++;
    }
    closedir(d);
    return count;
}

static void replay_target(const char *name, fuzz_body body) {
    char dir[256];
    snprintf(dir, sizeof dir, "tests/fuzz/corpus/%s", name);
    int seeds = replay(dir, body);
    snprintf(dir, sizeof dir, "tests/fuzz/regress/%s", name);
    int found = replay(dir, body);
    CHECK(seeds > 0, "%s: no seeds in tests/fuzz/corpus/%s", name, name);
    printf("  %-20s %3d seeds, %2d regression inputs replayed\n", name, seeds, found);
}

/* What each input the fuzzers found now gets: the exact message. */
static void expect_image_error(const char *file, const char *message) {
    char path[256], err[1024] = "", want[1024];
    snprintf(path, sizeof path, "tests/fuzz/regress/fuzz_image/%s", file);
    uint8_t *rgb;
    int w, h;
    int rc = image_load_file(path, &rgb, &w, &h, err, sizeof err);
    snprintf(want, sizeof want, "%s: %s", path, message);
    CHECK(rc == XCAP_ERR_FORMAT && strcmp(err, want) == 0, "%s: %d\n  got  %s\n  want %s", file, rc, err, want);
    if (rc == XCAP_OK) free(rgb);
}

static void test_found_inputs(void) {
    /* stb 2.27 wrote past its Huffman tables (UBSan: index 257 out of bounds for size[257]) */
    expect_image_error("jpeg_dht_over_256_codes.jpg",
                       "JPEG Huffman table at byte 938 defines 906 codes (at most 256): corrupt file");
    /* the same overflow behind fill bytes: stb skips them to find the JPEG start, xcap's
     * signature check did not, so the Huffman check never ran */
    expect_image_error("jpeg_after_fill_bytes_dht_overflow.jpg",
                       "not an image in a supported format (PNG, JPEG, GIF, BMP, TGA, PSD, PNM)");
    /* a progressive scan whose AC Huffman table (and quantization table) was never defined:
     * stb read past its tables (UBSan: index 18 out of bounds for maxcode[18]) */
    expect_image_error("jpeg_undefined_tables.jpg",
                       "JPEG scan at byte 233 uses a quantization table the file has not defined (corrupt file)");
    /* stb 2.27's bit reader shifted by 34 bits once the data ran dry: now refused (as Pillow does) */
    expect_image_error("jpeg_bits_run_dry_shift.jpg", "JPEG data is truncated or corrupt (stb_image: unknown marker)");
    /* an empty first IDAT made stb add 0 to a NULL pointer; the file's IHDR CRC is wrong anyway */
    expect_image_error("png_empty_first_idat.png", "PNG chunk IHDR at byte 8 has a bad CRC (corrupt file)");
    /* ... and copied 0 bytes into it (UBSan: NULL passed to memcpy); this one is cut short */
    expect_image_error("png_empty_first_idat_memcpy.png",
                       "PNG file is truncated (76 bytes, pixel data incomplete; stb_image: no reason given)");

    /* "eos_token_id": [] gave a configuration without an end token (n_eos 0) */
    size_t n;
    char *json = (char *)read_all("tests/fuzz/regress/fuzz_config/eos_empty_list.json", &n);
    CHECK(json != NULL, "missing regression input eos_empty_list.json");
    if (json) {
        xcap_config cfg;
        memset(&cfg, 0, sizeof cfg);
        xcap_params p;
        char err[1024] = "";
        int rc = config_generation_parse(json, n, "generation_config.json", 0, &cfg, &p, err, sizeof err);
        CHECK(rc == XCAP_ERR_FORMAT &&
                  strcmp(err, "generation_config.json: eos_token_id: is an empty list (at least one id is needed)") == 0,
              "empty eos list: %d %s", rc, err);
        free(json);
    }
}

/* An empty token string (here the first token of a vocabulary) pointed into an arena that was
 * never allocated (UBSan: zero offset applied to NULL). It loads, and decodes to nothing. */
static void test_empty_token(void) {
    static const uint8_t files[] = "\0{\"\": 0, \"a\": 1, \"b\": 2, \"ab\": 3}\0#version: 0.2\na b\n";
    fuzz_tokenizer_load_one(files, sizeof files - 1);
    xcap_tokenizer *t;
    char err[1024] = "";
    int rc = tokenizer_load(dir, &t, err, sizeof err); /* the folder the fuzz body just wrote */
    CHECK(rc == XCAP_OK, "vocabulary with an empty token: %s", err);
    if (rc) return;
    int32_t ids[] = {0, 3, 0};
    char *text;
    rc = tokenizer_decode(t, ids, 3, 0, &text, err, sizeof err);
    CHECK(rc == XCAP_OK && strcmp(text, "ab") == 0, "decode: %s", rc ? err : text);
    if (rc == XCAP_OK) free(text);
    tokenizer_free(t);
}

int main(void) {
    int argc = 0;
    char **argv = NULL;
    fuzz_tokenizer_load_init(&argc, &argv);
    fuzz_bpe_init(&argc, &argv);
    replay_target("fuzz_image", fuzz_image_one);
    replay_target("fuzz_safetensors", fuzz_safetensors_one);
    replay_target("fuzz_config", fuzz_config_one);
    replay_target("fuzz_tokenizer_load", fuzz_tokenizer_load_one);
    replay_target("fuzz_bpe", fuzz_bpe_one);
    test_found_inputs();
    test_empty_token();
    return harness_finish("test_fuzz_regress");
}
