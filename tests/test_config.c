/* config.json parsing: defaults, refusals that name key and value, and the priority of the
 * generation settings (spec §6: generation_config.json > top level > decoder sub-config). */
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "weights/config.h"

static char dir[] = "/tmp/xcap_cfg_XXXXXX";

static void write_file(const char *name, const char *text) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

static void remove_file(const char *name) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    remove(path);
}

#define ENC "\"encoder\": {\"model_type\": \"vit\", \"hidden_size\": 96, \"num_hidden_layers\": 3, " \
            "\"num_attention_heads\": 3, \"intermediate_size\": 128, \"image_size\": 48, \"patch_size\": 16%s}"
#define DEC "\"decoder\": {\"model_type\": \"gpt2\", \"n_embd\": 64, \"n_layer\": 1, \"n_head\": 2, " \
            "\"vocab_size\": 300, \"n_positions\": 32, \"add_cross_attention\": true%s}"

/* Writes the base config with extra keys; an extra key that the base already has replaces it
 * (JSON objects must not repeat a key). */
static void write_config(const char *top, const char *enc_extra, const char *dec_extra) {
    char enc[1024], dec[1024], all[4096];
    snprintf(enc, sizeof enc, ENC, enc_extra);
    snprintf(dec, sizeof dec, DEC, dec_extra);
    const char *extras[2] = {enc_extra, dec_extra};
    char *parts[2] = {enc, dec};
    for (int i = 0; i < 2; i++) {
        char key[128];
        const char *q = strchr(extras[i], '"');
        if (!q) continue;
        const char *q2 = strchr(q + 1, '"');
        snprintf(key, sizeof key, "%.*s", (int)(q2 - q + 1), q);
        char *first = strstr(parts[i], key), *last = strstr(first + 1, key);
        if (last) { /* drop the base's "key": value, up to the next comma */
            char *comma = strchr(first, ',');
            memmove(first, comma + 2, strlen(comma + 2) + 1);
        }
    }
    snprintf(all, sizeof all, "{\"model_type\": \"vision-encoder-decoder\", %s, %s%s}", enc, dec, top);
    write_file("config.json", all);
}

static void expect_refusal(const char *what, const char *needle1, const char *needle2) {
    xcap_config c;
    char err[512] = "";
    int rc = config_load(dir, &c, err, sizeof err);
    CHECK(rc != 0, "%s: accepted", what);
    CHECK(strstr(err, "config.json") != NULL, "%s: message does not name the file: %s", what, err);
    CHECK(strstr(err, needle1) != NULL, "%s: message lacks '%s': %s", what, needle1, err);
    if (needle2) CHECK(strstr(err, needle2) != NULL, "%s: message lacks '%s': %s", what, needle2, err);
}

static void test_defaults(void) {
    write_config("", "", "");
    xcap_config c;
    char err[512];
    int rc = config_load(dir, &c, err, sizeof err);
    CHECK(rc == 0, "valid config refused: %s", err);
    CHECK(c.enc_hidden == 96 && c.enc_layers == 3 && c.enc_heads == 3 && c.image_size == 48 && c.patch_size == 16,
          "encoder sizes");
    CHECK(c.enc_eps == 1e-12f && c.qkv_bias == 1, "ViT defaults: eps %g qkv_bias %d", c.enc_eps, c.qkv_bias);
    CHECK(c.dec_inner == 4 * 64, "n_inner null -> 4E, got %d", c.dec_inner);
    CHECK(c.dec_eps == 1e-5f && c.scale_attn_weights == 1 && c.scale_attn_by_inverse_layer_idx == 0, "GPT-2 defaults");
    CHECK(c.tie_word_embeddings == 1, "tie_word_embeddings defaults to true");
    CHECK(c.decoder_start_token_id == 50256 && c.n_eos == 1 && c.eos_ids[0] == 50256, "GPT-2 token defaults");
}

static void test_refusals(void) {
    write_config("", ", \"hidden_act\": \"relu\"", "");
    expect_refusal("relu", "encoder.hidden_act", "relu");
    write_config("", "", ", \"activation_function\": \"relu\"");
    expect_refusal("decoder relu", "decoder.activation_function", "relu");
    write_config("", "", ", \"reorder_and_upcast_attn\": true");
    expect_refusal("upcast", "reorder_and_upcast_attn", NULL);
    write_config("", ", \"num_attention_heads\": 5", "");
    expect_refusal("heads", "encoder.hidden_size", "num_attention_heads");
    write_config("", ", \"image_size\": 50", "");
    expect_refusal("image size", "image_size", "patch_size");
    write_config("", ", \"model_type\": \"deit\"", "");
    expect_refusal("encoder type", "encoder.model_type", "deit");
    write_config("", "", ", \"add_cross_attention\": false");
    expect_refusal("no cross-attention", "add_cross_attention", NULL);
    write_config("", "", ", \"n_layer\": -1");
    expect_refusal("negative layers", "decoder.n_layer", "-1");
    write_config("", "", ", \"n_embd\": \"big\"");
    expect_refusal("string width", "decoder.n_embd", "integer");
    write_file("config.json", "{\"model_type\": \"vision-encoder-decoder\", " "\"encoder\": {\"model_type\": \"vit\"}}");
    expect_refusal("no decoder", "decoder", "missing");
    write_file("config.json", "{\"model_type\": \"vision-encoder-decoder\", \"encoder\": {");
    expect_refusal("bad JSON", "invalid JSON", NULL);
    write_file("config.json", "[]");
    expect_refusal("array", "not a JSON object", NULL);
    remove_file("config.json");
    expect_refusal("missing", "No such file", NULL);
}

static void test_generation_priority(void) {
    /* decoder sub-config < top level < generation_config.json */
    write_config(", \"decoder_start_token_id\": 7, \"eos_token_id\": 9, \"num_beams\": 3, \"max_length\": 16",
                 "", ", \"num_beams\": 2, \"length_penalty\": 0.5, \"max_length\": 40, \"bos_token_id\": 1");
    remove_file("generation_config.json");
    xcap_config c;
    xcap_params p;
    char err[512];
    CHECK(config_load(dir, &c, err, sizeof err) == 0, "load: %s", err);
    CHECK(config_generation_params(dir, &c, &p, err, sizeof err) == 0, "generation params: %s", err);
    CHECK(p.num_beams == 3 && p.max_length == 16 && p.length_penalty == 0.5f,
          "top level over decoder: beams %d max_length %d lp %g", p.num_beams, p.max_length, p.length_penalty);
    CHECK(c.decoder_start_token_id == 7 && c.eos_ids[0] == 9, "token ids from the top level: %d %d",
          c.decoder_start_token_id, c.eos_ids[0]);
    CHECK(p.top_k == 50 && p.temperature == 1.0f && p.early_stopping == XCAP_EARLY_STOP_HEURISTIC, "transformers defaults");
    write_file("generation_config.json",
               "{\"num_beams\": 4, \"early_stopping\": \"never\", \"eos_token_id\": [9, 11], \"max_new_tokens\": 5}");
    CHECK(config_load(dir, &c, err, sizeof err) == 0, "load: %s", err);
    CHECK(config_generation_params(dir, &c, &p, err, sizeof err) == 0, "generation params: %s", err);
    CHECK(p.num_beams == 4 && p.max_new_tokens == 5 && p.early_stopping == XCAP_EARLY_STOP_NEVER,
          "generation_config wins: beams %d", p.num_beams);
    /* ... alone: config.json's keys are not merged in (transformers' from_pretrained) */
    CHECK(p.max_length == 20 && p.length_penalty == 1.0f, "config.json keys merged into generation_config.json's: %d %g",
          p.max_length, p.length_penalty);
    CHECK(c.n_eos == 2 && c.eos_ids[1] == 11, "list of eos ids");
    write_file("generation_config.json", "{\"num_beams\": 2}");
    CHECK(config_load(dir, &c, err, sizeof err) == 0, "load: %s", err);
    CHECK(config_generation_params(dir, &c, &p, err, sizeof err) == 0, "generation params: %s", err);
    CHECK(p.max_length == 20 && p.max_new_tokens == 20, "default length 20 means 20 new tokens: %d %d", p.max_length,
          p.max_new_tokens);
    write_file("generation_config.json", "{\"early_stopping\": \"sometimes\"}");
    CHECK(config_load(dir, &c, err, sizeof err) == 0, "load: %s", err);
    int rc = config_generation_params(dir, &c, &p, err, sizeof err);
    CHECK(rc != 0 && strstr(err, "generation_config.json") && strstr(err, "early_stopping"),
          "bad early_stopping accepted or badly reported: %s", err);
    remove_file("generation_config.json");
}

int main(void) {
    if (!mkdtemp(dir)) return 1;
    test_defaults();
    test_refusals();
    test_generation_priority();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return harness_finish("test_config");
}
