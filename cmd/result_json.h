/* A caption result as JSON fields, shared by `xcap caption --json` and `xcap batch`, so the two
 * commands describe a caption with the same keys. */
#ifndef XCAP_CMD_RESULT_JSON_H
#define XCAP_CMD_RESULT_JSON_H

#include <cjson/cJSON.h>

#include "xcap.h"

/* The caption as printed: the decoded text with surrounding white space stripped (spec §6).
 * Strips in place and returns the start of the stripped text. */
char *caption_strip(char *text);

/* Adds "caption", "tokens", "score", "sum_logprob" of the best hypothesis and, when there are
 * several, "n_best": [{"caption", "tokens", "sum_logprob", "score"}, ...] to the object o.
 * Strips the hypotheses' text in place. */
void result_json_add(cJSON *o, xcap_result *r);

#endif
