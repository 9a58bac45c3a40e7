/* Tokenizer loading (text/tokenizer.c) from a model directory written from the input, then
 * encoding and decoding with whatever was loaded.
 *
 * Input layout: byte 0 picks the files (even: vocab.json + merges.txt, odd: tokenizer.json);
 * the rest is split at NUL bytes into up to six parts: the vocabulary file, merges.txt,
 * tokenizer_config.json, special_tokens_map.json, added_tokens.json, and a text to encode.
 * A part that the input does not reach is a missing file.
 *
 * Invariants: a refusal names a file of the directory; a loaded tokenizer encodes the text to
 * ids that decode back to exactly its bytes (when the text starts with a space, so that
 * add_prefix_space changes nothing), and decode always gives NUL-terminated text. */
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz.h"
#include "text/tokenizer.h"
#include "xcap.h"

static char dir[] = "/tmp/xcap_fuzz_tok_XXXXXX";
static const char *const names[] = {"vocab.json",   "merges.txt",        "tokenizer_config.json",
                                    "special_tokens_map.json", "added_tokens.json", "tokenizer.json"};
#define N_NAMES 6

static void path_of(char *out, size_t n, const char *name) { snprintf(out, n, "%s/%s", dir, name); }

static void remove_dir(void) {
    char path[256];
    for (int i = 0; i < N_NAMES; i++) {
        path_of(path, sizeof path, names[i]);
        unlink(path);
    }
    rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        abort();
    }
    atexit(remove_dir);
    return 0;
}

static void put_file(const char *name, const uint8_t *p, size_t n) {
    char path[256];
    path_of(path, sizeof path, name);
    if (!p) {
        unlink(path);
        return;
    }
    FILE *f = fopen(path, "wb");
    FUZZ_ASSERT(f != NULL, "cannot write %s", path);
    FUZZ_ASSERT(fwrite(p, 1, n, f) == n && fclose(f) == 0, "cannot write %s", path);
}

static void encode_decode(const xcap_tokenizer *t, const uint8_t *text, size_t len) {
    char err[1024];
    int n = 0;
    if (tokenizer_encode(t, (const char *)text, len, NULL, 0, &n, err, sizeof err) != XCAP_OK) return;
    int32_t *ids = malloc(sizeof *ids * (size_t)(n ? n : 1));
    FUZZ_ASSERT(ids != NULL, "out of memory");
    int again = 0;
    int rc = tokenizer_encode(t, (const char *)text, len, ids, n, &again, err, sizeof err);
    FUZZ_ASSERT(rc == XCAP_OK && again == n, "second encode: %d ids then %d (%s)", n, again, err);
    char *bytes;
    size_t nb;
    rc = tokenizer_decode_bytes(t, ids, n, 0, &bytes, &nb, err, sizeof err);
    FUZZ_ASSERT(rc == XCAP_OK, "decode of encoded ids: %s", err);
    if (len && text[0] == ' ')
        FUZZ_ASSERT(nb == len && memcmp(bytes, text, len) == 0, "round trip: %zu bytes in, %zu out", len, nb);
    free(bytes);
    char *decoded;
    rc = tokenizer_decode(t, ids, n, 1, &decoded, err, sizeof err);
    FUZZ_ASSERT(rc == XCAP_OK && decoded != NULL, "decode: %s", err);
    free(decoded);
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    int use_tokenizer_json = data[0] & 1;
    const uint8_t *part[6] = {0};
    size_t part_len[6] = {0};
    size_t pos = 1;
    for (int k = 0; k < 6 && pos <= size; k++) {
        const uint8_t *end = memchr(data + pos, 0, size - pos);
        size_t n = end ? (size_t)(end - (data + pos)) : size - pos;
        part[k] = data + pos;
        part_len[k] = n;
        pos += n + 1;
    }
    put_file("tokenizer.json", use_tokenizer_json ? part[0] : NULL, part_len[0]);
    put_file("vocab.json", use_tokenizer_json ? NULL : part[0], part_len[0]);
    put_file("merges.txt", part[1], part_len[1]);
    put_file("tokenizer_config.json", part[2], part_len[2]);
    put_file("special_tokens_map.json", part[3], part_len[3]);
    put_file("added_tokens.json", part[4], part_len[4]);

    xcap_tokenizer *t;
    char err[1024] = "";
    if (tokenizer_load(dir, &t, err, sizeof err) != XCAP_OK) {
        FUZZ_ASSERT(t == NULL, "tokenizer returned with an error");
        FUZZ_ERROR_NAMES(err, dir);
        return 0;
    }
    FUZZ_ASSERT(tokenizer_vocab_size(t) >= 1, "empty vocabulary accepted");
    if (part[5]) encode_decode(t, part[5], part_len[5]);
    static const uint8_t sample[] = " Hello, world! <|endoftext|> \xe0\xa4\xa8\xe0\xa4\xae\xf0\x9f\x98\x80 \xff\xfe";
    encode_decode(t, sample, sizeof sample - 1);
    tokenizer_free(t);
    return 0;
}
