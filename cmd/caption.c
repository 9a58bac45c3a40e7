/* `xcap caption [options] IMAGE...`: one caption per image, the model loaded once. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/commands.h"
#include "cmd/image.h"
#include "cmd/options.h"
#include "cmd/result_json.h"

void caption_usage(FILE *out) {
    fprintf(out,
            "usage: xcap caption [options] IMAGE...\n"
            "Writes one caption per image (prefixed with the file name when there are several).\n"
            "IMAGE '-' reads one image from standard input. Formats: PNG, JPEG, BMP, GIF, TGA, PSD, PNM.\n\n"
            "Output:\n"
            "      --json               one JSON object per image: file, caption, tokens, score,\n"
            "                           sum_logprob, n_best (or file and error)\n"
            "  -v, --verbose            print model warnings and per-image timing to stderr\n");
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
    int n_files = 0, only_files = 0;
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
        int r = options_parse_one(&opt, argc, argv, &i);
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
    if (options_resolve(&opt, model, &params) != 0) {
        xcap_model_free(model);
        free(files);
        return EXIT_USAGE;
    }
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
        int w = 0, h = 0, rc;
        if (!strcmp(file, "-")) {
            size_t size = 0;
            uint8_t *data = read_stdin(&size);
            rc = data ? image_load_memory(data, size, shown, &rgb, &w, &h, err, sizeof err) : -1;
            if (!data) snprintf(err, sizeof err, "<stdin>: cannot read standard input");
            free(data);
        } else {
            rc = image_load_file(file, &rgb, &w, &h, err, sizeof err);
        }
        if (rc != 0) {
            report_error(shown, err, opt.json);
            failures++;
            continue;
        }
        xcap_result result;
        char msg[1024 + 64];
        rc = xcap_caption(state, rgb, w, h, &params, &result, err, sizeof err);
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
    xcap_state_free(state);
    xcap_model_free(model);
    free(files);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "xcap: error writing standard output\n");
        return EXIT_SOME_FAILED;
    }
    return failures ? EXIT_SOME_FAILED : EXIT_ALL_OK;
}
