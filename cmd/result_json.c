#include "cmd/result_json.h"

#include <string.h>

char *caption_strip(char *s) {
    while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r') s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n' || s[n - 1] == '\r')) s[--n] = '\0';
    return s;
}

static void add_tokens(cJSON *o, const xcap_hypothesis *h) {
    cJSON *ids = cJSON_AddArrayToObject(o, "tokens");
    for (int i = 0; i < h->n_tokens; i++) cJSON_AddItemToArray(ids, cJSON_CreateNumber(h->tokens[i]));
}

void result_json_add(cJSON *o, xcap_result *r) {
    const xcap_hypothesis *best = &r->hyps[0];
    cJSON_AddStringToObject(o, "caption", caption_strip(best->text));
    add_tokens(o, best);
    cJSON_AddNumberToObject(o, "score", best->score);
    cJSON_AddNumberToObject(o, "sum_logprob", best->sum_logprob);
    if (r->n_hyps > 1) {
        cJSON *nb = cJSON_AddArrayToObject(o, "n_best");
        for (int i = 0; i < r->n_hyps; i++) {
            const xcap_hypothesis *h = &r->hyps[i];
            cJSON *item = cJSON_CreateObject();
            cJSON_AddStringToObject(item, "caption", caption_strip(h->text));
            add_tokens(item, h);
            cJSON_AddNumberToObject(item, "sum_logprob", h->sum_logprob);
            cJSON_AddNumberToObject(item, "score", h->score);
            cJSON_AddItemToArray(nb, item);
        }
    }
}
