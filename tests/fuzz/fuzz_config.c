/* The model directory's small JSON files: the same bytes read as config.json
 * (weights/config.c), as generation_config.json and as config.json's legacy generation keys,
 * and as preprocessor_config.json (vision/preprocess_config.c). Invariants: a refusal names the
 * file; an accepted config holds only values the model code can use. */
#include <math.h>
#include <stdint.h>

#include "fuzz.h"
#include "vision/preprocess.h"
#include "weights/config.h"
#include "xcap.h"

static void check_config(const xcap_config *c) {
    FUZZ_ASSERT(c->enc_hidden >= 1 && c->enc_heads >= 1 && c->enc_hidden % c->enc_heads == 0, "encoder %d/%d",
                c->enc_hidden, c->enc_heads);
    FUZZ_ASSERT(c->dec_hidden >= 1 && c->dec_heads >= 1 && c->dec_hidden % c->dec_heads == 0, "decoder %d/%d",
                c->dec_hidden, c->dec_heads);
    FUZZ_ASSERT(c->patch_size >= 1 && c->image_size >= c->patch_size && c->image_size % c->patch_size == 0,
                "image %d, patch %d", c->image_size, c->patch_size);
    FUZZ_ASSERT(c->n_positions >= 1 && c->vocab_size >= 1 && c->dec_inner >= 1 && c->enc_intermediate >= 1,
                "sizes");
    FUZZ_ASSERT(c->n_eos >= 1 && c->n_eos <= XCAP_MAX_EOS, "%d eos ids", c->n_eos);
    for (int i = 0; i < c->n_eos; i++) FUZZ_ASSERT(c->eos_ids[i] >= 0, "eos id %d", c->eos_ids[i]);
    FUZZ_ASSERT(c->decoder_start_token_id >= 0 && c->pad_token_id >= -1, "token ids");
}

static void check_generation(const xcap_params *p) {
    FUZZ_ASSERT(p->max_length >= 1 && p->max_new_tokens >= 0 && p->min_length >= 0 && p->min_new_tokens >= 0,
                "lengths");
    FUZZ_ASSERT(p->num_beams >= 1 && p->num_return_sequences >= 1 && p->top_k >= 0 && p->no_repeat_ngram_size >= 0,
                "counts");
    FUZZ_ASSERT(isfinite(p->temperature) && isfinite(p->top_p) && isfinite(p->length_penalty) &&
                    isfinite(p->repetition_penalty),
                "floats");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1); /* preprocess_config_parse wants NUL-terminated text */
    FUZZ_ASSERT(text != NULL, "out of memory");
    memcpy(text, data, size);
    text[size] = '\0';
    char err[1024] = "";

    xcap_config cfg;
    if (config_parse(text, size, "fuzz/config.json", &cfg, err, sizeof err) == XCAP_OK) check_config(&cfg);
    else FUZZ_ERROR_NAMES(err, "fuzz/config.json");

    for (int from_config_json = 0; from_config_json < 2; from_config_json++) {
        xcap_config ids;
        memset(&ids, 0, sizeof ids);
        ids.n_eos = 1;
        ids.eos_ids[0] = 50256;
        ids.pad_token_id = -1;
        xcap_params p;
        const char *name = from_config_json ? "fuzz/config.json" : "fuzz/generation_config.json";
        if (config_generation_parse(text, size, name, from_config_json, &ids, &p, err, sizeof err) == XCAP_OK) {
            check_generation(&p);
            FUZZ_ASSERT(ids.n_eos >= 1 && ids.n_eos <= XCAP_MAX_EOS, "%d eos ids", ids.n_eos);
        } else {
            FUZZ_ERROR_NAMES(err, name);
        }
    }

    xcap_preprocess_config pc;
    if (preprocess_config_parse(text, "fuzz/preprocessor_config.json", &pc, err, sizeof err) == XCAP_OK) {
        FUZZ_ASSERT(pc.width >= 1 && pc.height >= 1 && pc.resample >= 0 && pc.resample <= 5, "size %dx%d, filter %d",
                    pc.width, pc.height, pc.resample);
        for (int c = 0; c < 3; c++)
            FUZZ_ASSERT(isfinite(pc.mean[c]) && isfinite(pc.std[c]) && pc.std[c] != 0, "mean/std");
    } else {
        FUZZ_ERROR_NAMES(err, "fuzz/preprocessor_config.json");
    }
    free(text);
    return 0;
}
