/* `xcap attend [options] IMAGE -o DIR`: caption one image exactly as `xcap caption` does with
 * the same options, and write its cross-attention maps into DIR (see attention_out.h). */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/attention_out.h"
#include "cmd/commands.h"
#include "cmd/options.h"
#include "cmd/result_json.h"

void attend_usage(FILE *out) {
    fprintf(out,
            "usage: xcap attend [options] IMAGE -o DIR\n"
            "Captions IMAGE (the same caption as 'xcap caption' with the same options; '-' reads standard\n"
            "input), prints it, and writes into DIR (created if missing; all files or none):\n"
            "  attention.npy        float32 [tokens x decoder layers x heads x memory tokens]: every\n"
            "                       cross-attention probability; memory = CLS + patches, row-major; row t\n"
            "                       is the attention of the step that chose token t (beam search: the\n"
            "                       returned beam's own history; with --n-best, the best beam's)\n"
            "  attention.json       caption, tokens (id, text, word), words, shape and axis names, patch\n"
            "                       grid, image and model input sizes, decoding settings, what was drawn\n"
            "                       and the drawn maps\n"
            "  token_NN_WORD.png    each caption token's map over the original image, original size\n"
            "                       (NN = token index = row of attention.npy)\n"
            "  sheet.png            the image and one panel per caption word, the word under it\n"
            "  index.html           a self-contained page: point at (or Tab to) a word to see its map\n\n"
            "Output:\n"
            "  -o, --output DIR         the directory to write (required)\n"
            "      --json               print {\"file\", \"caption\", \"dir\"} instead of the caption\n"
            "  -v, --verbose            print model warnings to stderr\n");
    attention_print_help(out);
    options_print_help(out);
    fprintf(out, "\nExit codes: 0 written, 1 the image or DIR failed (nothing written), 2 usage error,\n"
                 "3 the model could not be loaded.\n");
}

int cmd_attend(int argc, char **argv) {
    cli_options opt;
    options_init(&opt);
    attn_choice choice;
    attn_choice_default(&choice);
    const char *image = NULL, *dir = NULL;
    int only_files = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (only_files || a[0] != '-' || !strcmp(a, "-")) {
            if (image) {
                fprintf(stderr, "xcap attend: one image at a time ('%s' and '%s' given; 'xcap caption "
                                "--attention-dir' takes several)\n", image, a);
                return EXIT_USAGE;
            }
            image = a;
            continue;
        }
        if (!strcmp(a, "--")) {
            only_files = 1;
            continue;
        }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            attend_usage(stdout);
            return EXIT_ALL_OK;
        }
        if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "xcap: %s needs a value\n", a);
                return EXIT_USAGE;
            }
            dir = argv[++i];
            continue;
        }
        if (!strncmp(a, "--output=", 9)) {
            dir = a + 9;
            continue;
        }
        int r = attention_parse_option(&choice, argc, argv, &i);
        if (r == 0) r = options_parse_one(&opt, argc, argv, &i);
        if (r == 0) fprintf(stderr, "xcap attend: unknown option '%s' (see xcap attend --help)\n", a);
        if (r <= 0) return EXIT_USAGE;
    }
    if (!image) {
        fprintf(stderr, "xcap attend: no image given (see xcap attend --help)\n");
        return EXIT_USAGE;
    }
    if (!dir || !*dir) {
        fprintf(stderr, "xcap attend: no output directory given (-o DIR)\n");
        return EXIT_USAGE;
    }

    char err[1024];
    /* before the model loads: a DIR that can never work is reported at once */
    if (attention_check_dir(dir, err, sizeof err) != 0) {
        fprintf(stderr, "xcap: %s\n", err);
        return EXIT_SOME_FAILED;
    }
    const char *model_dir = options_model_dir(&opt);
    xcap_model *model = NULL;
    if (xcap_model_load(model_dir, &model, err, sizeof err) != XCAP_OK) {
        fprintf(stderr, "xcap: cannot load model %s: %s\n", model_dir, err);
        return EXIT_MODEL;
    }
    if (opt.verbose && *xcap_model_warnings(model)) fprintf(stderr, "%s", xcap_model_warnings(model));
    xcap_params params;
    xcap_model_info info = xcap_model_get_info(model);
    if (options_resolve(&opt, model, &params) != 0) {
        xcap_model_free(model);
        return EXIT_USAGE;
    }
    if (attn_choice_resolve(&choice, &info, err, sizeof err) != 0) {
        fprintf(stderr, "xcap: %s\n", err);
        xcap_model_free(model);
        return EXIT_USAGE;
    }
    params.output_attentions = 1;
    xcap_state *state = NULL;
    if (xcap_state_new(model, &state, err, sizeof err) != XCAP_OK) {
        fprintf(stderr, "xcap: %s\n", err);
        xcap_model_free(model);
        return EXIT_MODEL;
    }

    int status = EXIT_SOME_FAILED;
    const char *shown = strcmp(image, "-") ? image : "<stdin>";
    uint8_t *rgb = NULL;
    int w = 0, h = 0;
    xcap_result result;
    char msg[1100];
    if (load_input_image(image, &rgb, &w, &h, err, sizeof err) != 0) {
        fprintf(stderr, "xcap: %s\n", err);
    } else if (xcap_caption(state, rgb, w, h, &params, &result, err, sizeof err) != XCAP_OK) {
        fprintf(stderr, "xcap: %s: %s\n", shown, err);
    } else {
        attend_input in = {.model = model, .model_dir = model_dir, .image_name = shown, .rgb = rgb, .width = w,
                           .height = h, .params = &params, .result = &result, .choice = choice};
        if (attention_write_dir(&in, dir, err, sizeof err) != XCAP_OK) {
            snprintf(msg, sizeof msg, "%s: %s", shown, err);
            fprintf(stderr, "xcap: %s\n", msg);
        } else {
            char *text = strdup(result.hyps[0].text ? result.hyps[0].text : "");
            if (opt.json) {
                cJSON *o = cJSON_CreateObject();
                cJSON_AddStringToObject(o, "file", shown);
                cJSON_AddStringToObject(o, "caption", text ? caption_strip(text) : "");
                cJSON_AddStringToObject(o, "dir", dir);
                char *line = cJSON_PrintUnformatted(o);
                if (line) puts(line);
                free(line);
                cJSON_Delete(o);
            } else {
                puts(text ? caption_strip(text) : "");
            }
            free(text);
            status = EXIT_ALL_OK;
        }
        xcap_result_free(&result);
    }
    free(rgb);
    xcap_state_free(state);
    xcap_model_free(model);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "xcap: error writing standard output\n");
        return EXIT_SOME_FAILED;
    }
    return status;
}
