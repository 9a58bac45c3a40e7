/* Writes a captioned image's cross-attention into a directory: attention.npy (every
 * probability), attention.json (caption, tokens, words, shapes, settings, the drawn maps),
 * token_NN_<word>.png (each token's map over the original image), sheet.png (one panel per
 * word) and index.html (a self-contained page: point at a word to see its map).
 *
 * All or nothing: the files are written into a temporary directory first (beside DIR when DIR
 * does not exist yet, inside it when it does) and moved into place only when every one of them
 * was written; on any failure the temporary files are removed and DIR is left as it was. A
 * previous run's token_*.png files in DIR are removed when the new set lands. */
#ifndef XCAP_CMD_ATTENTION_OUT_H
#define XCAP_CMD_ATTENTION_OUT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "cmd/attention_maps.h"
#include "xcap.h"

typedef struct {
    const xcap_model *model;
    const char *model_dir;  /* for the JSON */
    const char *image_name; /* the input as the user named it, for the JSON and the page */
    const uint8_t *rgb;     /* the decoded image, width x height RGB */
    int width, height;
    const xcap_params *params; /* the decoding settings used (output_attentions on) */
    const xcap_result *result; /* hyps[0] is drawn */
    attn_choice choice;        /* resolved with attn_choice_resolve */
} attend_input;

/* Returns 0, or an xcap_status with a one-line message naming DIR or the file at fault. */
int attention_write_dir(const attend_input *in, const char *dir, char *err, size_t errlen);

/* A quick look before the work starts: fails (with a message naming DIR) when DIR exists but
 * is not a directory or cannot be written, or does not exist and cannot be created. */
int attention_check_dir(const char *dir, char *err, size_t errlen);

/* The --layer / --head / --fusion options, shared by `attend` and `caption --attention-dir`:
 * 1 if argv[*i] was one of them (value consumed), 0 if not, -1 on a bad value (printed). */
int attention_parse_option(attn_choice *c, int argc, char **argv, int *i);

/* Help text for those options, with the defaults. */
void attention_print_help(FILE *out);

#endif
