/* The subcommands of the xcap tool. Each returns the process exit code. */
#ifndef XCAP_CMD_COMMANDS_H
#define XCAP_CMD_COMMANDS_H

#include <stdio.h>

int cmd_caption(int argc, char **argv);
void caption_usage(FILE *out);

#endif
