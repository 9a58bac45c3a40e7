/* cmd/image.c against Pillow: every lossless fixture decodes to exactly Pillow's
 * Image.open(f).convert("RGB"); JPEG differences are measured; bad files give errors that
 * name the file; truncated files fail exactly where Pillow fails.
 * Goldens: weights/reference/make_resize_goldens.py (tests/fixtures/imgfmt/). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/image.h"
#include "harness.h"
#include "xcap.h"

#define FMT_DIR "tests/fixtures/imgfmt/"

static uint8_t *read_whole(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc(len > 0 ? (size_t)len : 1);
    *n = buf ? fread(buf, 1, (size_t)len, f) : 0;
    fclose(f);
    return buf;
}

static int max_jpeg_diff_seen;

static const char *status_word(int rc) {
    static const char *words[] = {"OK", "ERR_ARG", "ERR_IO", "ERR_FORMAT", "ERR_MODEL",
                                  "ERR_UNSUPPORTED", "ERR_NOMEM"};
    return rc >= 0 && rc <= 6 ? words[rc] : "?";
}

/* One fixture against its golden: exact for lossless formats, measured for JPEG. */
static void check_fixture(const char *file, const char *golden) {
    char path[512], gpath[512], err[512];
    snprintf(path, sizeof path, FMT_DIR "%s", file);
    snprintf(gpath, sizeof gpath, FMT_DIR "%s", golden);
    uint8_t *rgb;
    int w, h;
    int rc = image_load_file(path, &rgb, &w, &h, err, sizeof err);
    CHECK(rc == XCAP_OK, "%s: %s", file, err);
    npy_array g;
    if (npy_load(gpath, &g) != 0) {
        CHECK(0, "%s: golden %s missing", file, golden);
        free(rgb);
        return;
    }
    if (rc == XCAP_OK) {
        int shape_ok = g.ndim == 3 && g.shape[0] == h && g.shape[1] == w && g.shape[2] == 3;
        CHECK(shape_ok, "%s: decoded %dx%d, Pillow %lldx%lld", file, w, h, (long long)g.shape[1],
              (long long)g.shape[0]);
        if (shape_ok) {
            const uint8_t *want = g.data;
            size_t n = (size_t)w * h * 3, n_diff = 0, first = 0;
            int max_diff = 0;
            for (size_t i = 0; i < n; i++) {
                int d = abs((int)rgb[i] - (int)want[i]);
                if (d && !n_diff++) first = i;
                if (d > max_diff) max_diff = d;
            }
            if (strncmp(file, "jpg_", 4) == 0) {
                /* Lossy: stb_image's IDCT and chroma upsampling are not libjpeg-turbo's. */
                printf("  %-24s max |stb - Pillow| = %d (%zu of %zu values differ)\n", file,
                       max_diff, n_diff, n);
                if (max_diff > max_jpeg_diff_seen) max_jpeg_diff_seen = max_diff;
                CHECK(max_diff <= 40, "%s: JPEG differs from Pillow by %d grey levels", file,
                      max_diff);
            } else {
                CHECK(n_diff == 0,
                      "%s: %zu values differ from Pillow, first at pixel (%zu, %zu) channel %zu: "
                      "%d vs %d",
                      file, n_diff, first / 3 % w, first / 3 / w, first % 3, rgb[first],
                      want[first]);
            }
        }
    }
    npy_free(&g);
    free(rgb);
}

static void test_formats(void) {
    FILE *f = fopen(FMT_DIR "files.txt", "r");
    CHECK(f != NULL, "missing " FMT_DIR "files.txt");
    if (!f) return;
    char line[512], file[256], golden[256];
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#' || sscanf(line, "%255s %255s", file, golden) != 2) continue;
        check_fixture(file, golden);
        n++;
    }
    fclose(f);
    CHECK(n >= 40, "only %d fixtures listed", n);
    printf("  %d format fixtures; largest JPEG difference %d\n", n, max_jpeg_diff_seen);
}

/* A bad file must fail with the expected status, a message naming the file, and no pixels. */
static void expect_error(const char *file, int want_rc, const char *want_words) {
    char path[512], err[512] = "";
    snprintf(path, sizeof path, FMT_DIR "bad/%s", file);
    uint8_t *rgb = (uint8_t *)1;
    int w = -1, h = -1;
    int rc = image_load_file(path, &rgb, &w, &h, err, sizeof err);
    printf("  %-28s -> %s: %s\n", file, status_word(rc), err);
    CHECK(rc == want_rc, "%s: status %d, expected %d (%s)", file, rc, want_rc, err);
    CHECK(strstr(err, path) != NULL, "%s: message does not name the file: %s", file, err);
    CHECK(want_words == NULL || strstr(err, want_words) != NULL, "%s: message lacks \"%s\": %s",
          file, want_words, err);
    CHECK(rgb == NULL && w == 0 && h == 0, "%s: outputs not cleared on error", file);
}

static void test_bad_files(void) {
    expect_error("empty.png", XCAP_ERR_FORMAT, "empty");
    expect_error("truncated.png", XCAP_ERR_FORMAT, "truncated");
    expect_error("truncated.jpg", XCAP_ERR_FORMAT, "truncated");
    expect_error("truncated_progressive.jpg", XCAP_ERR_FORMAT, "truncated");
    expect_error("header_only.jpg", XCAP_ERR_FORMAT, "JPEG");
    expect_error("garbage.jpg", XCAP_ERR_FORMAT, "JPEG");
    expect_error("text.png", XCAP_ERR_FORMAT, "not an image");
    expect_error("huge.png", XCAP_ERR_UNSUPPORTED, "100000x100000");
    expect_error("huge_width.png", XCAP_ERR_UNSUPPORTED, "20000x10");
    expect_error("huge_area.bmp", XCAP_ERR_UNSUPPORTED, "larger than");
    expect_error("huge.gif", XCAP_ERR_UNSUPPORTED, "30000x30000");
    expect_error("webp.webp", XCAP_ERR_UNSUPPORTED, "WebP");
    expect_error("tiff.tif", XCAP_ERR_UNSUPPORTED, "TIFF");
    expect_error("no_such_file.png", XCAP_ERR_IO, "No such file");

    /* A directory opens but does not read. */
    {
        char err[256] = "";
        uint8_t *rgb;
        int w, h;
        int rc = image_load_file(FMT_DIR "bad", &rgb, &w, &h, err, sizeof err);
        CHECK(rc == XCAP_ERR_IO && strstr(err, FMT_DIR "bad"), "directory: %d %s", rc, err);
    }

    /* From memory: the name given stands for the file. */
    char err[256] = "";
    uint8_t *rgb;
    int w, h;
    int rc = image_load_memory((const uint8_t *)"", 0, "upload#3", &rgb, &w, &h, err, sizeof err);
    CHECK(rc == XCAP_ERR_FORMAT && strstr(err, "upload#3"), "memory: %d %s", rc, err);
}

/* Parses "a-b,c-d" into a mask over prefix lengths 1..size. */
static void parse_ranges(const char *s, uint8_t *ok, size_t size) {
    memset(ok, 0, size + 1);
    while (*s && strcmp(s, "none") != 0) {
        size_t a, b;
        int used;
        if (sscanf(s, "%zu-%zu%n", &a, &b, &used) != 2) break;
        for (size_t n = a; n <= b && n <= size; n++) ok[n] = 1;
        s += used;
        if (*s == ',') s++;
    }
}

/* Every prefix of a file: decodes exactly when Pillow decodes it, and then to the pixels of
 * the whole file (a prefix Pillow accepts only lacks trailing metadata). */
static void test_truncation(void) {
    FILE *f = fopen(FMT_DIR "truncation.txt", "r");
    CHECK(f != NULL, "missing " FMT_DIR "truncation.txt");
    if (!f) return;
    char line[1024], file[256], ranges[700];
    size_t size;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#' || sscanf(line, "%255s %zu %699s", file, &size, ranges) != 3) continue;
        char path[512], err[512];
        snprintf(path, sizeof path, FMT_DIR "%s", file);
        size_t n;
        uint8_t *data = read_whole(path, &n);
        CHECK(data && n == size, "%s: cannot read or wrong size", file);
        if (!data || n != size) {
            free(data);
            continue;
        }
        uint8_t *pillow_ok = malloc(size + 1);
        parse_ranges(ranges, pillow_ok, size);
        uint8_t *full;
        int fw, fh;
        int rc = image_load_memory(data, size, file, &full, &fw, &fh, err, sizeof err);
        CHECK(rc == XCAP_OK, "%s: %s", file, err);
        /* Known difference, PNG only: Pillow stops inflating once every row is out, so it
         * also accepts a file missing the last byte or two of the compressed stream when those
         * bits only held the end-of-block code; stb's inflater needs them. xcap then refuses a
         * file Pillow decodes, which is the safe direction; the reverse is never allowed. */
        size_t first_ok = 0;
        while (first_ok < size && !pillow_ok[first_ok]) first_ok++;
        int is_png = strstr(file, ".png") != NULL;
        int disagree = 0, wrong_pixels = 0, stricter = 0;
        size_t first_disagree = 0;
        for (size_t len = 1; len < size && rc == XCAP_OK; len++) {
            uint8_t *rgb;
            int w, h;
            /* A private copy, so that reading one byte past the prefix would be caught by ASan. */
            uint8_t *prefix = malloc(len);
            memcpy(prefix, data, len);
            int ok = image_load_memory(prefix, len, file, &rgb, &w, &h, err, sizeof err) == XCAP_OK;
            free(prefix);
            if (!ok && pillow_ok[len] && is_png && len < first_ok + 2) {
                stricter++;
            } else if (ok != pillow_ok[len] && !disagree++) {
                first_disagree = len;
            }
            if (ok && (w != fw || h != fh || memcmp(rgb, full, (size_t)w * h * 3) != 0))
                wrong_pixels++;
            if (ok) free(rgb);
            if (!ok && !strstr(err, file)) CHECK(0, "%s[:%zu]: message lacks the name: %s", file, len, err);
        }
        CHECK(disagree == 0,
              "%s: %d prefix lengths where xcap and Pillow disagree on decoding, first %zu of %zu "
              "(Pillow decodes %s)",
              file, disagree, first_disagree, size, ranges);
        CHECK(wrong_pixels == 0, "%s: %d accepted prefixes decode to other pixels", file,
              wrong_pixels);
        printf("  %-26s %5zu prefixes checked, Pillow decodes %s", file, size, ranges);
        if (stricter) printf(" (xcap refuses %d of them: end of zlib stream cut)", stricter);
        printf("\n");
        if (rc == XCAP_OK) free(full);
        free(pillow_ok);
        free(data);
    }
    fclose(f);
}

int main(void) {
    test_formats();
    test_bad_files();
    test_truncation();
    return harness_finish("test_image");
}
