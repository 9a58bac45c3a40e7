/* xcap quantize IN OUT --type f16|q8: a lighter copy of a model directory. */
#include <stdio.h>
#include <string.h>

#include "cmd/commands.h"
#include "cmd/options.h"
#include "xcap.h"

void quantize_usage(FILE *out) {
    fprintf(out,
            "usage: xcap quantize IN_DIR OUT_DIR --type f16|q8\n"
            "Writes a copy of the model directory IN_DIR into OUT_DIR (created if missing) with lighter\n"
            "weights; config, tokenizer and preprocessor files are copied as they are.\n"
            "  --type f16   every float tensor as IEEE half: half the size, still a checkpoint that\n"
            "               transformers loads; xcap keeps the linear layers in half\n"
            "  --type q8    the linear layers' weights as int8 with one float32 scale per output\n"
            "               channel (tensor <name>_scale): about a quarter of the size; an xcap\n"
            "               extension of safetensors that other readers do not understand\n"
            "Exit codes: 0 written, 2 usage, 3 the input model cannot be read or the output written.\n");
}

int cmd_quantize(int argc, char **argv) {
    const char *dirs[2] = {NULL, NULL}, *type_name = NULL;
    int n_dirs = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            quantize_usage(stdout);
            return EXIT_ALL_OK;
        } else if (!strcmp(a, "--type") || !strncmp(a, "--type=", 7)) {
            if (a[6] == '=') type_name = a + 7;
            else if (i + 1 < argc) type_name = argv[++i];
            else {
                fprintf(stderr, "xcap quantize: --type needs a value (f16 or q8)\n");
                return EXIT_USAGE;
            }
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "xcap quantize: unknown option '%s' (see xcap quantize --help)\n", a);
            return EXIT_USAGE;
        } else if (n_dirs < 2) {
            dirs[n_dirs++] = a;
        } else {
            fprintf(stderr, "xcap quantize: one input and one output directory, not '%s' too\n", a);
            return EXIT_USAGE;
        }
    }
    if (n_dirs != 2 || !type_name) {
        quantize_usage(stderr);
        return EXIT_USAGE;
    }
    xcap_quant_type type;
    if (!strcmp(type_name, "f16")) type = XCAP_QUANT_F16;
    else if (!strcmp(type_name, "q8")) type = XCAP_QUANT_Q8;
    else {
        fprintf(stderr, "xcap quantize: --type %s: expected f16 or q8\n", type_name);
        return EXIT_USAGE;
    }
    char err[2048];
    if (xcap_quantize(dirs[0], dirs[1], type, err, sizeof err) != XCAP_OK) {
        fprintf(stderr, "xcap quantize: %s\n", err);
        return EXIT_MODEL;
    }
    return EXIT_ALL_OK;
}
