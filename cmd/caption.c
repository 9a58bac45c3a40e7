/* `xcap caption [options] IMAGE...`: one caption per image, the model loaded once. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cmd/attention_out.h"
#include "cmd/commands.h"
#include "cmd/image.h"
#include "cmd/options.h"
#include "cmd/result_json.h"
#include "nn/common.h"

void caption_usage(FILE *out) {
    fprintf(out,
            "usage: xcap caption [options] IMAGE...\n"
            "Writes one caption per image (prefixed with the file name when there are several).\n"
            "IMAGE '-' reads one image from standard input. Formats: PNG, JPEG, BMP, GIF, TGA, PSD, PNM.\n\n"
            "Output:\n"
            "      --json               one JSON object per image: file, caption, tokens, score,\n"
            "                           sum_logprob, n_best (or file and error)\n"
            "  -v, --verbose            print model warnings and per-image timing to stderr\n"
            "      --attention-dir DIR  also write each image's cross-attention maps, as 'xcap attend' does:\n"
            "                           into DIR for one image; into DIR/NAME/ for several, NAME being the\n"
            "                           file name without extension ('stdin' for '-'; -2, -3, ... added\n"
            "                           when names repeat). An image whose maps cannot be written counts\n"
            "                           as failed. --layer, --head and --fusion choose what is drawn:\n");
    attention_print_help(out);
    fprintf(out,
            "Input:\n"
            "      --max-pixels N       refuse images of more than N pixels (width x height), read from\n"
            "                           the file's header before decoding (default: %lld, at most %lld;\n"
            "                           a side above %d pixels is always refused)\n",
            IMAGE_DEFAULT_MAX_PIXELS, IMAGE_MAX_PIXELS, IMAGE_MAX_SIDE);
    options_print_help(out);
    fprintf(out, "\nExit codes: 0 all captioned, 1 some input failed (the others are still captioned),\n"
                 "2 usage error, 3 the model could not be loaded.\n");
}

static uint8_t *read_stdin(size_t *size) {
    size_t cap = 1 << 16, len = 0;
    uint8_t *buf = malloc(cap);
    while (buf) {
        size_t got = fread(buf + len, 1, cap - len, stdin);
        len += got;
        if (got == 0) break;
        if (len == cap) {
            uint8_t *bigger = realloc(buf, cap * 2);
            if (!bigger) {
                free(buf);
                return NULL;
            }
            buf = bigger;
            cap *= 2;
        }
    }
    *size = len;
    return buf;
}

/* A file, or standard input for "-", refused above max_pixels. */
static int load_image_limit(const char *file, long long max_pixels, uint8_t **rgb, int *width, int *height,
                            char *err, size_t errlen) {
    if (strcmp(file, "-") != 0) return image_load_file_limit(file, max_pixels, rgb, width, height, err, errlen);
    size_t size = 0;
    uint8_t *data = read_stdin(&size);
    if (!data) {
        *rgb = NULL;
        snprintf(err, errlen, "<stdin>: cannot read standard input");
        return XCAP_ERR_IO;
    }
    int rc = image_load_memory_limit(data, size, "<stdin>", max_pixels, rgb, width, height, err, errlen);
    free(data);
    return rc;
}

int load_input_image(const char *file, uint8_t **rgb, int *width, int *height, char *err, size_t errlen) {
    return load_image_limit(file, IMAGE_DEFAULT_MAX_PIXELS, rgb, width, height, err, errlen);
}

/* DIR/NAME for one of several images: the file name without folders and extension, made
 * unique among the names already given out (used[0..n_used)). */
static char *attention_subdir(const char *dir, const char *file, char **used, int n_used) {
    char stem[256];
    const char *base = strrchr(file, '/');
    base = base ? base + 1 : file;
    if (!strcmp(file, "-")) base = "stdin";
    snprintf(stem, sizeof stem, "%s", base);
    char *dot = strrchr(stem, '.');
    if (dot && dot != stem) *dot = '\0';
    if (!stem[0] || !strcmp(stem, ".") || !strcmp(stem, "..")) snprintf(stem, sizeof stem, "image");
    size_t len = strlen(dir) + strlen(stem) + 16;
    char *path = malloc(len);
    if (!path) return NULL;
    for (int k = 1;; k++) {
        if (k == 1) snprintf(path, len, "%s/%s", dir, stem);
        else snprintf(path, len, "%s/%s-%d", dir, stem, k);
        int taken = 0;
        for (int j = 0; j < n_used && !taken; j++) taken = used[j] && !strcmp(used[j], path);
        if (!taken) return path;
    }
}

static void print_json_line(cJSON *o) {
    char *s = cJSON_PrintUnformatted(o);
    if (s) {
        puts(s);
        free(s);
    }
    cJSON_Delete(o);
}

static void report_result(const char *file, int several, xcap_result *r, int json) {
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "file", file);
        result_json_add(o, r);
        print_json_line(o);
        return;
    }
    for (int i = 0; i < r->n_hyps; i++) {
        const char *text = caption_strip(r->hyps[i].text);
        if (r->n_hyps > 1) {
            if (several) printf("%s: ", file);
            printf("%d\t%.4f\t%s\n", i + 1, r->hyps[i].score, text);
        } else if (several) {
            printf("%s: %s\n", file, text);
        } else {
            printf("%s\n", text);
        }
    }
}

static void report_error(const char *file, const char *msg, int json) {
    fprintf(stderr, "xcap: %s\n", msg);
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "file", file);
        cJSON_AddStringToObject(o, "error", msg);
        print_json_line(o);
    }
}

int cmd_caption(int argc, char **argv) {
    cli_options opt;
    options_init(&opt);
    const char **files = calloc(argc > 0 ? argc : 1, sizeof *files);
    int n_files = 0, only_files = 0, choice_given = 0;
    const char *attention_dir = NULL;
    long long max_pixels = IMAGE_DEFAULT_MAX_PIXELS;
    attn_choice choice;
    attn_choice_default(&choice);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (only_files || a[0] != '-' || !strcmp(a, "-")) {
            files[n_files++] = a;
            continue;
        }
        if (!strcmp(a, "--")) {
            only_files = 1;
            continue;
        }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            caption_usage(stdout);
            free(files);
            return EXIT_ALL_OK;
        }
        if (!strcmp(a, "--attention-dir") || !strncmp(a, "--attention-dir=", 16)) {
            if (a[15] == '=') {
                attention_dir = a + 16;
            } else if (i + 1 < argc) {
                attention_dir = argv[++i];
            } else {
                fprintf(stderr, "xcap: --attention-dir needs a value\n");
                free(files);
                return EXIT_USAGE;
            }
            continue;
        }
        int r = options_parse_max_pixels(argc, argv, &i, &max_pixels);
        if (r < 0) {
            free(files);
            return EXIT_USAGE;
        }
        if (r > 0) continue;
        r = attention_parse_option(&choice, argc, argv, &i);
        choice_given |= r > 0;
        if (r == 0) r = options_parse_one(&opt, argc, argv, &i);
        if (r == 0) fprintf(stderr, "xcap caption: unknown option '%s' (see xcap caption --help)\n", a);
        if (r <= 0) {
            free(files);
            return EXIT_USAGE;
        }
    }
    if (n_files == 0) {
        fprintf(stderr, "xcap caption: no image given (see xcap caption --help)\n");
        free(files);
        return EXIT_USAGE;
    }
    if (choice_given && !attention_dir) {
        fprintf(stderr, "xcap caption: --layer, --head and --fusion need --attention-dir\n");
        free(files);
        return EXIT_USAGE;
    }
    if (attention_dir && !*attention_dir) {
        fprintf(stderr, "xcap caption: --attention-dir: empty directory name\n");
        free(files);
        return EXIT_USAGE;
    }
    int stdin_uses = 0;
    for (int i = 0; i < n_files; i++) stdin_uses += !strcmp(files[i], "-");
    if (stdin_uses > 1) {
        fprintf(stderr, "xcap caption: '-' (standard input) can be given only once\n");
        free(files);
        return EXIT_USAGE;
    }

    char err[1024];
    const char *dir = options_model_dir(&opt);
    xcap_model *model = NULL;
    if (xcap_model_load(dir, &model, err, sizeof err) != XCAP_OK) {
        fprintf(stderr, "xcap: cannot load model %s: %s\n", dir, err);
        free(files);
        return EXIT_MODEL;
    }
    if (opt.verbose && *xcap_model_warnings(model)) fprintf(stderr, "%s", xcap_model_warnings(model));
    xcap_params params;
    xcap_model_info info = xcap_model_get_info(model);
    if (options_resolve(&opt, model, &params) != 0) {
        xcap_model_free(model);
        free(files);
        return EXIT_USAGE;
    }
    if (attention_dir && attn_choice_resolve(&choice, &info, err, sizeof err) != 0) {
        fprintf(stderr, "xcap: %s\n", err);
        xcap_model_free(model);
        free(files);
        return EXIT_USAGE;
    }
    params.output_attentions = attention_dir != NULL;
    /* several images: one folder each inside attention_dir, which is created here */
    char **subdirs = attention_dir && n_files > 1 ? calloc((size_t)n_files, sizeof *subdirs) : NULL;
    int made_attention_dir = 0;
    if (subdirs) made_attention_dir = mkdir(attention_dir, 0777) == 0;
    xcap_state *state = NULL;
    if (xcap_state_new(model, &state, err, sizeof err) != XCAP_OK) {
        fprintf(stderr, "xcap: %s\n", err);
        xcap_model_free(model);
        free(files);
        return EXIT_MODEL;
    }

    int failures = 0;
    for (int i = 0; i < n_files; i++) {
        const char *file = files[i];
        const char *shown = strcmp(file, "-") ? file : "<stdin>";
        uint8_t *rgb = NULL;
        int w = 0, h = 0;
        int rc = load_image_limit(file, max_pixels, &rgb, &w, &h, err, sizeof err);
        if (rc != 0) {
            report_error(shown, err, opt.json);
            failures++;
            continue;
        }
        xcap_result result;
        char msg[1024 + 64];
        rc = xcap_caption(state, rgb, w, h, &params, &result, err, sizeof err);
        if (rc == XCAP_OK && attention_dir) {
            const char *out = attention_dir;
            if (subdirs) out = subdirs[i] = attention_subdir(attention_dir, file, subdirs, i);
            attend_input in = {.model = model, .model_dir = dir, .image_name = shown, .rgb = rgb, .width = w,
                               .height = h, .params = &params, .result = &result, .choice = choice};
            if (!out) rc = xcap_fail(err, sizeof err, XCAP_ERR_NOMEM, "out of memory");
            else rc = attention_write_dir(&in, out, err, sizeof err);
            if (rc != XCAP_OK) xcap_result_free(&result);
        }
        free(rgb);
        if (rc != XCAP_OK) {
            snprintf(msg, sizeof msg, "%s: %s", shown, err);
            report_error(shown, msg, opt.json);
            failures++;
            continue;
        }
        report_result(shown, n_files > 1, &result, opt.json);
        fflush(stdout);
        xcap_result_free(&result);
    }
    if (subdirs) {
        /* nothing written: do not leave the folder made for the results behind */
        if (made_attention_dir && failures == n_files) rmdir(attention_dir);
        for (int i = 0; i < n_files; i++) free(subdirs[i]);
        free(subdirs);
    }
    xcap_state_free(state);
    xcap_model_free(model);
    free(files);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "xcap: error writing standard output\n");
        return EXIT_SOME_FAILED;
    }
    return failures ? EXIT_SOME_FAILED : EXIT_ALL_OK;
}
