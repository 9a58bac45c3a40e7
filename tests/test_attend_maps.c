/* The pieces behind `xcap attend` (cmd/attention_*.c): layer/head selection, attention rollout
 * against a plain matrix-product version, CLS dropping, word grouping with the GPT-2
 * vocabulary, the smooth upsampling, the .npy writer, and the all-or-nothing output directory.
 * The CLI itself is tested by test_attend.sh; its sources are compiled into this test directly
 * because the build links tests with the library only. */
#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

#include "cmd/attention_draw.c"
#include "cmd/attention_maps.c"
#include "cmd/attention_out.c"
#include "cmd/image.h"
#include "cmd/result_json.c"

/* Rows of softmax-like random probabilities: [rows][n], each row positive, summing to 1. */
static void random_rows(float *p, int rows, int n, uint64_t *rng) {
    for (int r = 0; r < rows; r++) {
        double s = 0;
        for (int j = 0; j < n; j++) s += p[r * n + j] = expf(2.0f * test_rng_uniform(rng));
        for (int j = 0; j < n; j++) p[r * n + j] = (float)(p[r * n + j] / s);
    }
}

/* R = Â_L·…·Â_1 written out the slow way, in double, as the paper states it. */
static void naive_rollout(const float *attn, int L, int H, int M, double *R) {
    double *hat = malloc(sizeof(double) * M * M), *next = malloc(sizeof(double) * M * M);
    for (int i = 0; i < M * M; i++) R[i] = (i / M == i % M);
    for (int l = 0; l < L; l++) {
        for (int i = 0; i < M; i++) {
            double s = 0;
            for (int j = 0; j < M; j++) {
                double mean = 0;
                for (int h = 0; h < H; h++) mean += attn[((size_t)(l * H + h) * M + i) * M + j];
                hat[i * M + j] = 0.5 * mean / H + 0.5 * (i == j);
                s += hat[i * M + j];
            }
            for (int j = 0; j < M; j++) hat[i * M + j] /= s;
        }
        for (int i = 0; i < M; i++)
            for (int j = 0; j < M; j++) {
                double acc = 0;
                for (int k = 0; k < M; k++) acc += hat[i * M + k] * R[k * M + j];
                next[i * M + j] = acc;
            }
        memcpy(R, next, sizeof(double) * M * M);
    }
    free(hat);
    free(next);
}

static void test_rollout(void) {
    uint64_t rng = 7;
    const int shapes[][3] = {{1, 1, 2}, {2, 3, 5}, {3, 4, 17}, {4, 2, 10}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        int L = shapes[s][0], H = shapes[s][1], M = shapes[s][2];
        float *attn = malloc(sizeof(float) * L * H * M * M), *R = malloc(sizeof(float) * M * M),
              *scratch = malloc(sizeof(float) * (M * M + M));
        double *want = malloc(sizeof(double) * M * M);
        random_rows(attn, L * H * M, M, &rng);
        attn_rollout(attn, L, H, M, R, scratch);
        naive_rollout(attn, L, H, M, want);
        double worst = 0, worst_row = 0;
        for (int i = 0; i < M; i++) {
            double row = 0;
            for (int j = 0; j < M; j++) {
                worst = fmax(worst, fabs(R[i * M + j] - want[i * M + j]));
                row += R[i * M + j];
            }
            worst_row = fmax(worst_row, fabs(row - 1));
        }
        CHECK(worst < 1e-6, "rollout L=%d H=%d M=%d differs from the matrix product by %g", L, H, M, worst);
        CHECK(worst_row < 1e-5, "rollout rows sum to 1 +- %g", worst_row);
        free(attn), free(R), free(scratch), free(want);
    }
    /* attention that only looks at itself passes every token through unchanged */
    int M = 4, L = 2, H = 2;
    float attn[2 * 2 * 4 * 4] = {0}, R[16], scratch[20];
    for (int lh = 0; lh < L * H; lh++)
        for (int i = 0; i < M; i++) attn[(lh * M + i) * M + i] = 1;
    attn_rollout(attn, L, H, M, R, scratch);
    int identity = 1;
    for (int i = 0; i < 16; i++) identity &= fabsf(R[i] - (i / 4 == i % 4)) < 1e-7f;
    CHECK(identity, "rollout of self-attention is not the identity");
}

static void test_patch_map(void) {
    enum { L = 2, H = 3, M = 5, P = 4 };
    uint64_t rng = 11;
    float cross[L * H * M], out[P], scratch[2 * M];
    random_rows(cross, L * H, M, &rng);
    attn_choice c = {.layer = 1, .head = 2, .fusion = ATTN_FUSION_NONE};
    attn_patch_map(cross, L, H, M, &c, NULL, scratch, out);
    const float *row = cross + (1 * H + 2) * M;
    double patches = 1 - row[0], worst = 0;
    for (int j = 0; j < P; j++) worst = fmax(worst, fabs(out[j] - row[j + 1] / patches));
    CHECK(worst < 1e-6, "layer 1 head 2: CLS dropped and renormalised, off by %g", worst);

    /* mean over heads of one layer, and over layers too */
    for (int all = 0; all < 2; all++) {
        c = (attn_choice){.layer = all ? ATTN_LAYER_ALL : 0, .head = ATTN_HEAD_MEAN};
        attn_patch_map(cross, L, H, M, &c, NULL, scratch, out);
        double want[P], s = 0;
        for (int j = 0; j < P; j++) {
            want[j] = 0;
            for (int l = 0; l < (all ? L : 1); l++)
                for (int h = 0; h < H; h++) want[j] += cross[(l * H + h) * M + j + 1];
            s += want[j];
        }
        worst = 0;
        for (int j = 0; j < P; j++) worst = fmax(worst, fabs(out[j] - want[j] / s));
        CHECK(worst < 1e-6, "%s: off by %g", all ? "mean over layers and heads" : "mean over heads", worst);
    }
    /* max over heads: elementwise, then renormalised */
    c = (attn_choice){.layer = 0, .head = ATTN_HEAD_MAX};
    attn_patch_map(cross, L, H, M, &c, NULL, scratch, out);
    double want[P], s = 0;
    for (int j = 0; j < P; j++) {
        want[j] = 0;
        for (int h = 0; h < H; h++) want[j] = fmax(want[j], cross[h * M + j + 1]);
        s += want[j];
    }
    worst = 0;
    for (int j = 0; j < P; j++) worst = fmax(worst, fabs(out[j] - want[j] / s));
    CHECK(worst < 1e-6, "max over heads: off by %g", worst);

    /* an identity rollout changes nothing; a rollout that sends every token to patch 2 moves
     * the whole map there */
    float R[M * M] = {0};
    for (int i = 0; i < M; i++) R[i * M + i] = 1;
    c = (attn_choice){.layer = 1, .head = 0, .fusion = ATTN_FUSION_ROLLOUT};
    float plain[P];
    attn_choice none = c;
    none.fusion = ATTN_FUSION_NONE;
    attn_patch_map(cross, L, H, M, &none, NULL, scratch, plain);
    attn_patch_map(cross, L, H, M, &c, R, scratch, out);
    CHECK(max_abs_diff(out, plain, P) < 1e-6f, "identity rollout changed the map");
    memset(R, 0, sizeof R);
    for (int i = 0; i < M; i++) R[i * M + 3] = 1; /* input token 3 = patch 2 */
    attn_patch_map(cross, L, H, M, &c, R, scratch, out);
    CHECK(fabsf(out[2] - 1) < 1e-6f && out[0] == 0 && out[1] == 0 && out[3] == 0, "rollout to one patch: %g %g %g %g",
          out[0], out[1], out[2], out[3]);

    /* everything on CLS: no spatial content, drawn flat */
    float cls_only[L * H * M] = {0};
    for (int r = 0; r < L * H; r++) cls_only[r * M] = 1;
    c = (attn_choice){.layer = 0, .head = 0};
    attn_patch_map(cls_only, L, H, M, &c, NULL, scratch, out);
    CHECK(out[0] == 0.25f && out[3] == 0.25f, "CLS-only map: %g %g", out[0], out[3]);
}

static void test_choice_parsing(void) {
    char err[256];
    attn_choice c;
    attn_choice_default(&c);
    CHECK(c.layer == ATTEND_DEFAULT_LAYER && c.head == ATTEND_DEFAULT_HEAD && c.fusion == ATTN_FUSION_NONE, "defaults");
    CHECK(attn_parse_layer("0", &c, err, sizeof err) == 0 && c.layer == 0 && c.layer_given, "--layer 0");
    CHECK(attn_parse_layer("11", &c, err, sizeof err) == 0 && c.layer == 11, "--layer 11");
    CHECK(attn_parse_layer("all", &c, err, sizeof err) == 0 && c.layer == ATTN_LAYER_ALL, "--layer all");
    CHECK(attn_parse_layer("last", &c, err, sizeof err) == 0 && c.layer == ATTN_LAYER_LAST, "--layer last");
    CHECK(attn_parse_head("3", &c, err, sizeof err) == 0 && c.head == 3, "--head 3");
    CHECK(attn_parse_head("mean", &c, err, sizeof err) == 0 && c.head == ATTN_HEAD_MEAN, "--head mean");
    CHECK(attn_parse_head("max", &c, err, sizeof err) == 0 && c.head == ATTN_HEAD_MAX, "--head max");
    CHECK(attn_parse_fusion("rollout", &c, err, sizeof err) == 0 && c.fusion == ATTN_FUSION_ROLLOUT, "rollout");
    CHECK(attn_parse_fusion("none", &c, err, sizeof err) == 0 && c.fusion == ATTN_FUSION_NONE, "none");
    const char *bad_layers[] = {"-1", "x", "1.5", "", " 1", "+1", "1x", "99999999999"};
    for (size_t i = 0; i < sizeof bad_layers / sizeof *bad_layers; i++) {
        err[0] = '\0';
        CHECK(attn_parse_layer(bad_layers[i], &c, err, sizeof err) != 0 && strstr(err, "--layer"), "--layer '%s' accepted",
              bad_layers[i]);
        CHECK(attn_parse_head(bad_layers[i], &c, err, sizeof err) != 0 && strstr(err, "--head"), "--head '%s' accepted",
              bad_layers[i]);
    }
    CHECK(attn_parse_head("median", &c, err, sizeof err) != 0, "--head median accepted");
    CHECK(attn_parse_fusion("gradient", &c, err, sizeof err) != 0 && strstr(err, "gradient"), "--fusion gradient");

    xcap_model_info info = {.dec_layers = 2, .dec_heads = 4};
    attn_choice_default(&c);
    CHECK(attn_choice_resolve(&c, &info, err, sizeof err) == 0 && c.layer == ATTN_LAYER_ALL && c.head == ATTN_HEAD_MEAN,
          "default: the mean over layers and heads (the shipped model's best grounding)");
    c = (attn_choice){.layer = 2, .head = 0, .layer_given = 1};
    CHECK(attn_choice_resolve(&c, &info, err, sizeof err) != 0 && strstr(err, "2 decoder layers"), "--layer 2 of 2: %s", err);
    c = (attn_choice){.layer = 5, .head = ATTN_HEAD_MEAN, .layer_given = 0};
    CHECK(attn_choice_resolve(&c, &info, err, sizeof err) == 0 && c.layer == 1, "a default deeper than the model");
    c = (attn_choice){.layer = 0, .head = 4};
    CHECK(attn_choice_resolve(&c, &info, err, sizeof err) != 0 && strstr(err, "4 heads"), "--head 4 of 4: %s", err);
}

static void test_words(void) {
    xcap_model *m = NULL;
    char err[512];
    if (xcap_model_load("tests/fixtures/models/gpt2vocab", &m, err, sizeof err) != 0) {
        CHECK(0, "load gpt2vocab: %s", err);
        return;
    }
    const char *text = " a skateboarder rides\nthe rail.";
    int32_t ids[64];
    int n = 0;
    CHECK(xcap_tokenize(m, text, strlen(text), ids, 63, &n, err, sizeof err) == 0 && n < 63, "tokenize: %s", err);
    ids[n++] = xcap_model_get_info(m).eos_token;
    attn_words w;
    CHECK(attn_words_build(m, ids, n, &w, err, sizeof err) == 0, "words: %s", err);
    const char *want[] = {"a", "skateboarder", "rides", "the", "rail."};
    CHECK(w.n_words == 5, "%d words, expected 5", w.n_words);
    for (int k = 0; k < w.n_words && k < 5; k++) CHECK(!strcmp(w.word_text[k], want[k]), "word %d '%s', expected '%s'", k, w.word_text[k], want[k]);
    /* every token of a word maps back to it; the newline and the end-of-text token to none */
    int covered = 0, orphans = 0;
    for (int t = 0; t < n; t++) {
        int k = w.token_word[t];
        if (k < 0) {
            orphans++;
            continue;
        }
        CHECK(t >= w.word_first[k] && t < w.word_first[k] + w.word_count[k], "token %d outside its word %d", t, k);
        covered++;
    }
    CHECK(orphans == 2 && covered == n - 2, "%d tokens without a word (newline, eos expected)", orphans);
    CHECK(w.token_word[n - 1] == -1 && w.token_text[n - 1][0] == '\0', "eos belongs to no word");
    CHECK(w.word_count[1] > 1, "'skateboarder' should take several GPT-2 tokens (%d)", w.word_count[1]);
    attn_words_free(&w);
    xcap_model_free(m);
}

static void test_draw(void) {
    /* at patch centres the map takes the patch's value: a 2x2 grid drawn at 2x2 pixels */
    const float grid[4] = {0.0f, 0.5f, 0.1f, 0.0f};
    uint8_t rgba[4 * 4], top[3], bottom[3];
    draw_heat(grid, 2, 2, 2, 2, NULL, rgba);
    draw_colour(1.0f, top);
    draw_colour(0.0f, bottom);
    CHECK(!memcmp(rgba + 4, top, 3) && rgba[7] == (uint8_t)(DRAW_ALPHA_HIGH * 255 + 0.5f), "peak patch colour/alpha");
    CHECK(!memcmp(rgba, bottom, 3) && rgba[3] == (uint8_t)(DRAW_ALPHA_LOW * 255 + 0.5f), "zero patch colour/alpha");
    /* at 3 pixels across 2 patches the middle pixel is halfway: smooth, not blocky */
    const float ramp[2] = {0.0f, 1.0f};
    uint8_t line[3 * 4], mid[3];
    draw_heat(ramp, 1, 2, 3, 1, NULL, line);
    draw_colour(0.5f, mid);
    CHECK(!memcmp(line + 4, mid, 3), "bilinear midpoint %d,%d,%d vs %d,%d,%d", line[4], line[5], line[6], mid[0], mid[1], mid[2]);
    /* blending: alpha of the colour over the base */
    uint8_t base[3 * 3] = {100, 100, 100, 100, 100, 100, 100, 100, 100}, blended[9];
    draw_heat(ramp, 1, 2, 3, 1, base, blended);
    int want = (int)(100 + DRAW_ALPHA_HIGH * (top[0] - 100) + 0.5f);
    CHECK(blended[6] == want, "blend %d, expected %d", blended[6], want);
    /* viridis ends */
    CHECK(bottom[0] == 0x44 && bottom[1] == 0x01 && bottom[2] == 0x54 && top[0] == 0xfd && top[1] == 0xe7 && top[2] == 0x25,
          "colour map ends");
    /* area resize: 2x2 blocks averaged */
    uint8_t src[4 * 2 * 3], dst[2 * 1 * 3];
    for (int i = 0; i < 8; i++) src[i * 3] = src[i * 3 + 1] = src[i * 3 + 2] = (uint8_t)(i * 10);
    draw_resize(src, 4, 2, dst, 2, 1);
    CHECK(dst[0] == 25 && dst[3] == 45, "resize averages: %d %d", dst[0], dst[3]);
    /* 3 -> 2: each output pixel covers one and a half input pixels */
    uint8_t three[3 * 3] = {0, 0, 0, 30, 30, 30, 60, 60, 60}, two[2 * 3], up[3 * 3];
    draw_resize(three, 3, 1, two, 2, 1);
    CHECK(two[0] == 10 && two[3] == 50, "resize 3->2: %d %d", two[0], two[3]);
    draw_resize(three, 1, 1, up, 3, 1);
    CHECK(up[0] == 0 && up[3] == 0 && up[6] == 0, "resize 1->3 repeats");
    int fw, fh;
    draw_fit(200, 150, 192, &fw, &fh);
    CHECK(fw == 192 && fh == 144, "fit %dx%d", fw, fh);
    draw_fit(13, 71, 192, &fw, &fh);
    CHECK(fw == 35 && fh == 192, "fit %dx%d", fw, fh);
    /* text: "Hi" leaves ink; non-ASCII prints one '?' per character */
    uint8_t canvas[40 * 20 * 3];
    memset(canvas, 255, sizeof canvas);
    const uint8_t ink[3] = {0, 0, 0};
    draw_text(canvas, 40, 20, 2, 2, "Hi", 2, ink);
    int dark = 0;
    for (size_t i = 0; i < sizeof canvas; i += 3) dark += canvas[i] == 0;
    CHECK(dark > 20, "text drew %d pixels", dark);
    CHECK(draw_text_width("caf\xc3\xa9", 1) == draw_text_width("cafe", 1) - draw_text_width("e", 1) + draw_text_width("?", 1),
          "UTF-8 character counted once");
}

static void test_npy(void) {
    float data[6] = {0.5f, -1.25f, 3e-8f, 1.0f, 0.0f, 7.0f};
    int shape[2] = {2, 3};
    buffer b = {0};
    npy_encode(data, shape, 2, &b);
    size_t header = 10 + (size_t)(((uint8_t)b.data[8]) | ((uint8_t)b.data[9] << 8));
    CHECK(header % 64 == 0 && b.data[header - 1] == '\n', "npy header of %zu bytes", header);
    CHECK(b.len == header + sizeof data, "npy size %zu", b.len);
    char path[] = "/tmp/xcap_test_npy_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0 && write(fd, b.data, b.len) == (ssize_t)b.len, "write %s", path);
    close(fd);
    npy_array a;
    if (npy_load(path, &a) == 0) {
        CHECK(a.dtype == 'f' && a.ndim == 2 && a.shape[0] == 2 && a.shape[1] == 3, "npy shape");
        CHECK(!memcmp(a.data, data, sizeof data), "npy values");
        npy_free(&a);
    } else {
        CHECK(0, "npy_load failed");
    }
    unlink(path);
    free(b.data);
}

static int count_entries(const char *dir, const char *prefix) {
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e = d ? readdir(d) : NULL; e; e = readdir(d)) n += !strncmp(e->d_name, prefix, strlen(prefix));
    if (d) closedir(d);
    return n;
}

static int exists(const char *dir, const char *name) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    struct stat st;
    return stat(path, &st) == 0;
}

static void test_write_dir(void) {
    xcap_model *m = NULL;
    xcap_state *st = NULL;
    char err[512];
    if (xcap_model_load("tests/fixtures/models/tiny", &m, err, sizeof err) != 0 || xcap_state_new(m, &st, err, sizeof err) != 0) {
        CHECK(0, "tiny: %s", err);
        xcap_model_free(m);
        return;
    }
    uint8_t *rgb = NULL;
    int w, h;
    CHECK(image_load_file("tests/fixtures/images/gradient_32x32.png", &rgb, &w, &h, err, sizeof err) == 0, "%s", err);
    xcap_params p = xcap_model_params(m);
    p.output_attentions = 1;
    xcap_result r;
    CHECK(xcap_caption(st, rgb, w, h, &p, &r, err, sizeof err) == 0, "caption: %s", err);
    attend_input in = {.model = m, .model_dir = "tests/fixtures/models/tiny", .image_name = "gradient_32x32.png", .rgb = rgb,
                       .width = w, .height = h, .params = &p, .result = &r};
    attn_choice_default(&in.choice);
    xcap_model_info info = xcap_model_get_info(m);
    attn_choice_resolve(&in.choice, &info, err, sizeof err);

    char root[] = "/tmp/xcap_test_attend_XXXXXX", dir[256], path[512];
    CHECK(mkdtemp(root) != NULL, "mkdtemp");
    snprintf(dir, sizeof dir, "%s/out", root);
    CHECK(attention_write_dir(&in, dir, err, sizeof err) == 0, "write: %s", err);
    snprintf(path, sizeof path, "%s/attention.npy", dir);
    check_close_npy("attention.npy", r.hyps[0].cross_attention,
                    (size_t)r.hyps[0].n_tokens * info.dec_layers * info.dec_heads * info.n_memory, path, 0);
    check_close_npy("attention.npy vs the reference", (const float *)r.hyps[0].cross_attention,
                    (size_t)r.hyps[0].n_tokens * info.dec_layers * info.dec_heads * info.n_memory,
                    "tests/fixtures/goldens/tiny/gradient_32x32/greedy_cross_attn.npy", 1e-5f);
    CHECK(exists(dir, "attention.json") && exists(dir, "sheet.png") && exists(dir, "index.html"), "files missing in %s", dir);
    CHECK(count_entries(dir, "token_") > 0, "no token maps");
    CHECK(count_entries(root, "out.xcap-attend-") == 0, "temporary directory left beside the output");

    /* into an existing directory: a stale token map of an earlier run goes, the user's file stays */
    snprintf(path, sizeof path, "%s/token_99_old.png", dir);
    FILE *f = fopen(path, "w");
    if (f) fclose(f);
    snprintf(path, sizeof path, "%s/notes.txt", dir);
    f = fopen(path, "w");
    if (f) fclose(f);
    int before = count_entries(dir, "token_");
    CHECK(attention_write_dir(&in, dir, err, sizeof err) == 0, "rewrite: %s", err);
    CHECK(!exists(dir, "token_99_old.png") && exists(dir, "notes.txt"), "stale map kept or user file removed");
    CHECK(count_entries(dir, "token_") == before - 1, "token maps: %d, expected %d", count_entries(dir, "token_"), before - 1);
    CHECK(count_entries(dir, ".xcap-attend-") == 0, "temporary directory left inside the output");

    /* a file where the directory should be: an error naming it, the file untouched */
    snprintf(path, sizeof path, "%s/file", root);
    f = fopen(path, "w");
    if (f) fputs("keep", f), fclose(f);
    err[0] = '\0';
    CHECK(attention_write_dir(&in, path, err, sizeof err) != 0 && strstr(err, path) && strstr(err, "not a directory"),
          "file as output: '%s'", err);
    CHECK(attention_check_dir(path, err, sizeof err) != 0, "check_dir accepts a file");
    struct stat sb;
    CHECK(stat(path, &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_size == 4, "the file was changed");
    /* a missing parent: nothing created */
    snprintf(path, sizeof path, "%s/missing/out", root);
    CHECK(attention_write_dir(&in, path, err, sizeof err) != 0 && strstr(err, path), "missing parent: '%s'", err);
    CHECK(attention_check_dir(path, err, sizeof err) != 0, "check_dir accepts a missing parent");
    CHECK(count_entries(root, "missing") == 0, "something was created for a missing parent");

    /* clean up */
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    CHECK(system(cmd) == 0, "cleanup");
    xcap_result_free(&r);
    free(rgb);
    xcap_state_free(st);
    xcap_model_free(m);
}

int main(void) {
    test_rollout();
    test_patch_map();
    test_choice_parsing();
    test_words();
    test_draw();
    test_npy();
    test_write_dir();
    return harness_finish("test_attend_maps");
}
