/* Command-line options shared by the subcommands that caption (caption, and later batch and
 * attend): model, threads and every decoding setting. */
#ifndef XCAP_CMD_OPTIONS_H
#define XCAP_CMD_OPTIONS_H

#include <stdio.h>

#include "xcap.h"

/* Exit codes, documented in --help and the README. */
enum { EXIT_ALL_OK = 0, EXIT_SOME_FAILED = 1, EXIT_USAGE = 2, EXIT_MODEL = 3 };

/* Decoding overrides from the command line: a field is applied over the model's defaults only
 * when its flag was given. */
typedef struct {
    const char *model_dir;
    xcap_params values;
    unsigned set; /* bit per OPT_* below */
    int json;
    int verbose;
} cli_options;

enum {
    OPT_THREADS = 1u << 0, OPT_MAX_TOKENS = 1u << 1, OPT_MAX_LENGTH = 1u << 2, OPT_BEAMS = 1u << 3,
    OPT_LENGTH_PENALTY = 1u << 4, OPT_EARLY_STOPPING = 1u << 5, OPT_SAMPLE = 1u << 6, OPT_TEMPERATURE = 1u << 7,
    OPT_TOP_K = 1u << 8, OPT_TOP_P = 1u << 9, OPT_SEED = 1u << 10, OPT_N_BEST = 1u << 11,
    OPT_REPETITION_PENALTY = 1u << 12, OPT_NO_REPEAT_NGRAM = 1u << 13, OPT_MIN_LENGTH = 1u << 14,
    OPT_MIN_TOKENS = 1u << 15,
};

void options_init(cli_options *o);

/* Tries to consume argv[*i] (and its value). Returns 1 if it was a known option, 0 if not,
 * -1 on a bad value (message printed). */
int options_parse_one(cli_options *o, int argc, char **argv, int *i);

/* Matches argv[*i] as "--name VALUE", "--name=VALUE" or "SHORT VALUE" (shrt may be NULL):
 * 1 matched (value set, *i advanced past a separate value), 0 another option, -1 value missing
 * (message printed). */
int options_take_value(int argc, char **argv, int *i, const char *lng, const char *shrt, const char **value);

/* --max-pixels N, the limit on an input image's width x height (cmd/image.h): 1 taken (value
 * stored), 0 another option, -1 a bad or missing value (message printed). */
int options_parse_max_pixels(int argc, char **argv, int *i, long long *max_pixels);

/* Prints the option list with defaults taken from xcap_default_params(). */
void options_print_help(FILE *out);

/* The model's defaults with the command-line overrides applied; checks combinations. Returns
 * 0, or -1 with a message printed. */
int options_resolve(const cli_options *o, const xcap_model *model, xcap_params *out);

/* The model directory: -m, else $XCAP_MODEL, else the shipped model. */
const char *options_model_dir(const cli_options *o);

#endif
