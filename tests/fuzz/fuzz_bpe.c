/* BPE encode and decode on arbitrary bytes with the tiny fixture tokenizer
 * (tests/fixtures/models/tiny). Invariants, from text/tokenizer.h: encode and
 * encode_special give ids that decode_bytes turns back into exactly the input; decode gives
 * valid UTF-8; the same input read as token ids either decodes or is refused with a message
 * naming the bad id. */
#include <stdint.h>

#include "fuzz.h"
#include "text/tokenizer.h"
#include "xcap.h"

#ifndef XCAP_SOURCE_DIR
#define XCAP_SOURCE_DIR "."
#endif

static xcap_tokenizer *tok;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    char err[1024];
    if (tokenizer_load(XCAP_SOURCE_DIR "/tests/fixtures/models/tiny", &tok, err, sizeof err) != XCAP_OK) {
        fprintf(stderr, "fuzz_bpe: %s\n", err);
        abort();
    }
    return 0;
}

/* Well-formed UTF-8 (Unicode Table 3-7), written out again here rather than borrowed from the
 * tokenizer it checks. */
static int valid_utf8(const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n;) {
        uint8_t b = s[i];
        size_t need;
        uint8_t lo = 0x80, hi = 0xBF;
        if (b < 0x80) {
            i++;
            continue;
        } else if (b >= 0xC2 && b <= 0xDF) {
            need = 1;
        } else if (b >= 0xE0 && b <= 0xEF) {
            need = 2;
            lo = b == 0xE0 ? 0xA0 : 0x80;
            hi = b == 0xED ? 0x9F : 0xBF;
        } else if (b >= 0xF0 && b <= 0xF4) {
            need = 3;
            lo = b == 0xF0 ? 0x90 : 0x80;
            hi = b == 0xF4 ? 0x8F : 0xBF;
        } else {
            return 0;
        }
        if (i + need >= n) return 0;
        if (s[i + 1] < lo || s[i + 1] > hi) return 0;
        for (size_t k = 2; k <= need; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xBF) return 0;
        i += need + 1;
    }
    return 1;
}

static void round_trip(const uint8_t *data, size_t size, int with_special) {
    char err[1024];
    int n = 0, again = 0;
    int (*encode)(const xcap_tokenizer *, const char *, size_t, int32_t *, int, int *, char *, size_t) =
        with_special ? tokenizer_encode_special : tokenizer_encode;
    int rc = encode(tok, (const char *)data, size, NULL, 0, &n, err, sizeof err);
    FUZZ_ASSERT(rc == XCAP_OK, "encode (special %d): %s", with_special, err);
    int32_t *ids = malloc(sizeof *ids * (size_t)(n ? n : 1));
    FUZZ_ASSERT(ids != NULL, "out of memory");
    rc = encode(tok, (const char *)data, size, ids, n, &again, err, sizeof err);
    FUZZ_ASSERT(rc == XCAP_OK && again == n, "second encode: %d ids then %d", n, again);
    FUZZ_ASSERT(n <= (int)size, "%d ids for %zu bytes", n, size);
    char *bytes;
    size_t nb;
    rc = tokenizer_decode_bytes(tok, ids, n, 0, &bytes, &nb, err, sizeof err);
    FUZZ_ASSERT(rc == XCAP_OK, "decode_bytes: %s", err);
    FUZZ_ASSERT(nb == size && memcmp(bytes, data, size) == 0 && bytes[nb] == '\0',
                "round trip (special %d): %zu bytes in, %zu out", with_special, size, nb);
    free(bytes);
    char *text;
    rc = tokenizer_decode(tok, ids, n, 0, &text, err, sizeof err);
    FUZZ_ASSERT(rc == XCAP_OK && valid_utf8((const uint8_t *)text, strlen(text)), "decode gave invalid UTF-8");
    free(text);
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    round_trip(data, size, 0);
    round_trip(data, size, 1);

    /* The bytes as token ids (little-endian int32), in range or not. */
    int n = (int)(size / 4);
    int32_t *ids = malloc(sizeof *ids * (size_t)(n ? n : 1));
    FUZZ_ASSERT(ids != NULL, "out of memory");
    memcpy(ids, data, 4 * (size_t)n);
    char *text, err[1024] = "";
    int rc = tokenizer_decode(tok, ids, n, (int)(size & 1), &text, err, sizeof err);
    if (rc == XCAP_OK) {
        FUZZ_ASSERT(valid_utf8((const uint8_t *)text, strlen(text)), "decode gave invalid UTF-8");
        tokenizer_clean_up_text(text);
        FUZZ_ASSERT(valid_utf8((const uint8_t *)text, strlen(text)), "clean-up made invalid UTF-8");
        free(text);
    } else {
        FUZZ_ASSERT(rc == XCAP_ERR_ARG && strstr(err, "token id"), "decode error %d: %s", rc, err);
    }
    free(ids);
    return 0;
}
