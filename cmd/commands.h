/* The subcommands of the xcap tool. Each returns the process exit code. */
#ifndef XCAP_CMD_COMMANDS_H
#define XCAP_CMD_COMMANDS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

int cmd_caption(int argc, char **argv);
void caption_usage(FILE *out);

int cmd_batch(int argc, char **argv);

int cmd_attend(int argc, char **argv);

int cmd_quantize(int argc, char **argv);
void quantize_usage(FILE *out);
void attend_usage(FILE *out);

/* Decodes an image file, or standard input when file is "-" (named "<stdin>" in errors).
 * Returns 0, or an xcap_status with the message in err; *rgb is malloc'ed. */
int load_input_image(const char *file, uint8_t **rgb, int *width, int *height, char *err, size_t errlen);

#endif
