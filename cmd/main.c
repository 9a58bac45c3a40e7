/* xcap: the command-line tool. Only this folder prints, decodes image files and picks exit
 * codes; the library under it returns errors. */
#include <stdio.h>
#include <string.h>

#include "cmd/commands.h"
#include "cmd/options.h"
#include "xcap.h"

static void usage(FILE *out) {
    fprintf(out,
            "xcap %s: image captioning with a ViT encoder and a GPT-2 decoder joined by cross-attention\n\n"
            "usage: xcap COMMAND [options] ...\n\n"
            "Commands:\n"
            "  caption IMAGE...   write a caption for each image\n"
            "  batch DIR|FILE...  caption every image under folders: resumable, shardable, JSONL/CSV/\n"
            "                     sidecar text, HTML gallery\n"
            "  attend IMAGE -o DIR  caption an image and write its cross-attention maps (arrays,\n"
            "                     overlays, a sheet and a web page) into DIR\n"
            "  quantize IN OUT --type f16|q8  write a lighter copy of a model directory\n\n"
            "Run 'xcap COMMAND --help' for a command's own options. Options of 'caption':\n\n",
            xcap_version());
    caption_usage(out);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        usage(stdout);
        return EXIT_ALL_OK;
    }
    if (!strcmp(cmd, "--version") || !strcmp(cmd, "version")) {
        printf("xcap %s\n", xcap_version());
        return EXIT_ALL_OK;
    }
    if (!strcmp(cmd, "caption")) return cmd_caption(argc - 1, argv + 1);
    if (!strcmp(cmd, "batch")) return cmd_batch(argc - 1, argv + 1);
    if (!strcmp(cmd, "attend")) return cmd_attend(argc - 1, argv + 1);
    if (!strcmp(cmd, "quantize")) return cmd_quantize(argc - 1, argv + 1);
    fprintf(stderr, "xcap: unknown command '%s' (see xcap --help)\n", cmd);
    return EXIT_USAGE;
}
