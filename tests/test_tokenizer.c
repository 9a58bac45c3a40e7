/* GPT-2 tokenizer (text/tokenizer.c) against ids from other encoders.
 *
 * Fixtures (tests/fixtures/tokenizer/, written by weights/tools/gen_tokenizer_cases.cjs from
 * js-tiktoken r50k_base and gpt-3-encoder, never from this code): cases.json holds strings with
 * their GPT-2 ids, decode cases with the text Node's UTF-8 decoder makes of the tokens' bytes,
 * and encode-with-special cases; small, small_json and small_pairs hold one 500-merge tokenizer in the three file layouts.
 * The GPT-2 vocabulary itself is tests/fixtures/gpt2/. Files for the bad-input checks are
 * written at run time into a temporary directory. */
#define _POSIX_C_SOURCE 200809L

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "text/tokenizer.h"
#include "text/unicode_tables.h"
#include "xcap.h"

#define MAX_IDS 4096

static char err[1024];

static uint8_t *unhex(const char *hex, size_t *n) {
    size_t len = strlen(hex);
    uint8_t *out = malloc(len / 2 + 1);
    for (size_t i = 0; i + 1 < len; i += 2) {
        unsigned v;
        sscanf(hex + i, "%2x", &v);
        out[i / 2] = (uint8_t)v;
    }
    *n = len / 2;
    out[*n] = 0;
    return out;
}

static cJSON *load_json(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *data = malloc((size_t)size + 1);
    size_t got = fread(data, 1, (size_t)size, f);
    fclose(f);
    data[got] = 0;
    cJSON *root = cJSON_Parse(data);
    free(data);
    return root;
}

static int json_ids(const cJSON *arr, int32_t *ids, int cap) {
    int n = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, arr) if (n < cap) ids[n++] = (int32_t)v->valueint;
    return n;
}

static int same_ids(const int32_t *a, int na, const int32_t *b, int nb) {
    return na == nb && (na == 0 || memcmp(a, b, (size_t)na * sizeof *a) == 0);
}

static void format_ids(char *out, size_t cap, const int32_t *ids, int n) {
    size_t w = 0;
    out[0] = 0;
    for (int i = 0; i < n && w + 16 < cap; i++) w += (size_t)snprintf(out + w, cap - w, "%s%d", i ? "," : "", ids[i]);
}

/* ------------------------------------------------------------------------------------------ */

static void test_unicode_classes(void) {
    static const struct {
        uint32_t cp;
        unicode_class cls;
        const char *what;
    } cases[] = {
        {0x0915, UNICODE_LETTER, "DEVANAGARI KA"},
        {0x0928, UNICODE_LETTER, "DEVANAGARI NA"},
        {0x093F, UNICODE_OTHER, "DEVANAGARI VOWEL SIGN I (Mc)"},
        {0x094D, UNICODE_OTHER, "DEVANAGARI VIRAMA (Mn)"},
        {0x0902, UNICODE_OTHER, "DEVANAGARI ANUSVARA (Mn)"},
        {0x093C, UNICODE_OTHER, "DEVANAGARI NUKTA (Mn)"},
        {0x0967, UNICODE_NUMBER, "DEVANAGARI DIGIT ONE"},
        {0x0964, UNICODE_OTHER, "DEVANAGARI DANDA"},
        {0x4F60, UNICODE_LETTER, "CJK 你"},
        {0x3042, UNICODE_LETTER, "HIRAGANA A"},
        {0xAC00, UNICODE_LETTER, "HANGUL GA"},
        {0x20000, UNICODE_LETTER, "CJK EXT B"},
        {0x2EBF0, UNICODE_LETTER, "CJK EXT I (Unicode 15.1)"},
        {0x3007, UNICODE_NUMBER, "IDEOGRAPHIC NUMBER ZERO (Nl)"},
        {0x3002, UNICODE_OTHER, "IDEOGRAPHIC FULL STOP"},
        {0x3000, UNICODE_SPACE, "IDEOGRAPHIC SPACE"},
        {0x1F600, UNICODE_OTHER, "GRINNING FACE"},
        {0x1F3FD, UNICODE_OTHER, "SKIN TONE MODIFIER (Sk)"},
        {0x200D, UNICODE_OTHER, "ZERO WIDTH JOINER"},
        {0xFE0F, UNICODE_OTHER, "VARIATION SELECTOR-16"},
        {0x1F1FA, UNICODE_OTHER, "REGIONAL INDICATOR U"},
        {0x0085, UNICODE_SPACE, "NEL (White_Space, not JS \\s)"},
        {0xFEFF, UNICODE_OTHER, "BOM (JS \\s, not White_Space)"},
        {0x001C, UNICODE_OTHER, "FILE SEPARATOR (Python isspace, not White_Space)"},
        {0x200B, UNICODE_OTHER, "ZERO WIDTH SPACE"},
        {0x00A0, UNICODE_SPACE, "NO-BREAK SPACE"},
        {0x2028, UNICODE_SPACE, "LINE SEPARATOR"},
        {0x00BD, UNICODE_NUMBER, "VULGAR FRACTION ONE HALF (No)"},
        {0x216B, UNICODE_NUMBER, "ROMAN NUMERAL TWELVE (Nl)"},
        {0x0663, UNICODE_NUMBER, "ARABIC-INDIC DIGIT THREE"},
        {0x00DF, UNICODE_LETTER, "SHARP S"},
        {0x02B0, UNICODE_LETTER, "MODIFIER LETTER SMALL H (Lm)"},
        {0x0301, UNICODE_OTHER, "COMBINING ACUTE (Mn)"},
        {0xE000, UNICODE_OTHER, "PRIVATE USE"},
        {0x10FFFF, UNICODE_OTHER, "last code point"},
        {0x110000, UNICODE_OTHER, "beyond Unicode"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        CHECK(unicode_classify(cases[i].cp) == cases[i].cls, "U+%04X %s: class %d, expected %d", cases[i].cp,
              cases[i].what, unicode_classify(cases[i].cp), cases[i].cls);
    /* The encoder classifies ASCII without the table: both must agree. */
    int ascii_ok = 1;
    for (uint32_t c = 0; c < 128; c++) {
        unicode_class want = UNICODE_OTHER;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) want = UNICODE_LETTER;
        if (c >= '0' && c <= '9') want = UNICODE_NUMBER;
        if (c == ' ' || (c >= 9 && c <= 13)) want = UNICODE_SPACE;
        if (unicode_classify(c) != want) ascii_ok = 0;
    }
    CHECK(ascii_ok, "the table's ASCII classes differ from the encoder's ASCII fast path");
    printf("unicode tables: %s\n", unicode_tables_source);
}

static void test_gpt2_basics(const xcap_tokenizer *t) {
    CHECK(tokenizer_vocab_size(t) == 50257, "vocab size %d", tokenizer_vocab_size(t));
    CHECK(tokenizer_token_id(t, "<|endoftext|>") == 50256, "eot id %d", tokenizer_token_id(t, "<|endoftext|>"));
    CHECK(tokenizer_token_id(t, "\xC4\xA0the") == 262, "\"Ġthe\" id %d", tokenizer_token_id(t, "\xC4\xA0the"));
    CHECK(tokenizer_token_id(t, "not-a-token-at-all") == -1, "unknown token found");
    CHECK(tokenizer_is_special(t, 50256), "<|endoftext|> not special");
    CHECK(!tokenizer_is_special(t, 262) && !tokenizer_is_special(t, -1) && !tokenizer_is_special(t, 50257),
          "non-special ids reported special");
    CHECK(tokenizer_role_id(t, "eos") == -1, "plain vocab+merges names no eos role");
    CHECK(!tokenizer_clean_up_spaces(t), "clean-up on without tokenizer_config.json");
    const char *b;
    int n;
    CHECK(tokenizer_token_bytes(t, 262, &b, &n) == XCAP_OK && n == 4 && memcmp(b, " the", 4) == 0,
          "bytes of 262");
    CHECK(tokenizer_token_bytes(t, 50256, &b, &n) == XCAP_OK && n == 13 && memcmp(b, "<|endoftext|>", 13) == 0,
          "bytes of 50256");
    CHECK(tokenizer_token_bytes(t, 50257, &b, &n) == XCAP_ERR_ARG, "bytes of an id out of range");
    CHECK(tokenizer_token_bytes(t, -5, &b, &n) == XCAP_ERR_ARG, "bytes of a negative id");
    /* Each byte's token: 'A' is itself, the space byte is U+0120 'Ġ', 0xFF is 'ÿ'. */
    CHECK(tokenizer_token_bytes(t, 220, &b, &n) == XCAP_OK && n == 1 && b[0] == ' ', "token 220 is a space");

    /* Capacity: the count comes back in full, only cap ids are written. */
    int32_t ids[8] = {-7, -7, -7, -7, -7, -7, -7, -7};
    int count = -1;
    int rc = tokenizer_encode(t, "Hello world, I'll go!", 21, ids, 3, &count, err, sizeof err);
    CHECK(rc == XCAP_OK && count == 7, "count %d (rc %d)", count, rc);
    CHECK(ids[0] == 15496 && ids[1] == 995 && ids[2] == 11 && ids[3] == -7, "cap not respected");
    rc = tokenizer_encode(t, "Hello", 5, NULL, 0, &count, err, sizeof err);
    CHECK(rc == XCAP_OK && count == 1, "count-only call: %d", count);
    rc = tokenizer_encode(t, "", 0, ids, 8, &count, err, sizeof err);
    CHECK(rc == XCAP_OK && count == 0, "empty text gives %d ids", count);
    rc = tokenizer_encode(t, NULL, 3, ids, 8, &count, err, sizeof err);
    CHECK(rc == XCAP_ERR_ARG, "NULL text accepted");
}

static void test_cases(const xcap_tokenizer *t, const cJSON *cases, int *n_cases) {
    int32_t ids[MAX_IDS], want[MAX_IDS];
    char got_s[512], want_s[512];
    const cJSON *c;
    int n_ok = 0, n = 0;
    cJSON_ArrayForEach(c, cases) {
        size_t len;
        uint8_t *bytes = unhex(cJSON_GetObjectItem(c, "hex")->valuestring, &len);
        int nw = json_ids(cJSON_GetObjectItem(c, "ids"), want, MAX_IDS), count = -1;
        int rc = tokenizer_encode(t, (const char *)bytes, len, ids, MAX_IDS, &count, err, sizeof err);
        int ok = rc == XCAP_OK && same_ids(ids, count, want, nw);
        if (!ok) {
            format_ids(got_s, sizeof got_s, ids, count);
            format_ids(want_s, sizeof want_s, want, nw);
        }
        CHECK(ok, "[%s] hex %s: got [%s], want [%s] (%s)", cJSON_GetObjectItem(c, "group")->valuestring,
              cJSON_GetObjectItem(c, "hex")->valuestring, got_s, want_s, rc ? err : "");
        n_ok += ok;
        n++;

        /* Round trip: the tokens' bytes are the input, whatever the input. */
        char *back = NULL;
        size_t back_len = 0;
        rc = tokenizer_decode_bytes(t, ids, count, 0, &back, &back_len, err, sizeof err);
        CHECK(rc == XCAP_OK && back_len == len && memcmp(back, bytes, len) == 0, "bytes round trip of %s",
              cJSON_GetObjectItem(c, "hex")->valuestring);
        free(back);
        /* Valid UTF-8 also decodes to itself as text. decode returns a C string, so text with a
         * NUL in it ("x\0y") compares up to that NUL. */
        if (cJSON_GetObjectItem(c, "text")) {
            char *text = NULL;
            size_t text_len = strnlen((const char *)bytes, len);
            rc = tokenizer_decode(t, ids, count, 1, &text, err, sizeof err);
            CHECK(rc == XCAP_OK && strlen(text) == text_len && memcmp(text, bytes, text_len) == 0,
                  "text round trip of %s", cJSON_GetObjectItem(c, "hex")->valuestring);
            free(text);
        }
        free(bytes);
    }
    printf("encode cases: %d/%d ids exact\n", n_ok, n);
    *n_cases = n;
}

static void test_decode_cases(const xcap_tokenizer *t, const cJSON *cases) {
    int32_t ids[MAX_IDS];
    const cJSON *c;
    int n_ok = 0, n = 0;
    cJSON_ArrayForEach(c, cases) {
        int count = json_ids(cJSON_GetObjectItem(c, "ids"), ids, MAX_IDS);
        for (int skip = 0; skip < 2; skip++) {
            size_t len;
            const char *hex = cJSON_GetObjectItem(c, skip ? "text_skip_special_hex" : "text_hex")->valuestring;
            uint8_t *want = unhex(hex, &len);
            char *text = NULL;
            int rc = tokenizer_decode(t, ids, count, skip, &text, err, sizeof err);
            int ok = rc == XCAP_OK && strlen(text) == len && memcmp(text, want, len) == 0;
            CHECK(ok, "decode case %d (skip_special %d): want %s", n, skip, hex);
            n_ok += ok;
            free(text);
            free(want);
        }
        n++;
    }
    printf("decode cases: %d/%d exact (special kept and skipped)\n", n_ok, 2 * n);
}

static void test_encode_special(const xcap_tokenizer *t, const cJSON *cases) {
    int32_t ids[MAX_IDS], want[MAX_IDS];
    const cJSON *c;
    cJSON_ArrayForEach(c, cases) {
        size_t len;
        uint8_t *bytes = unhex(cJSON_GetObjectItem(c, "hex")->valuestring, &len);
        int nw = json_ids(cJSON_GetObjectItem(c, "ids"), want, MAX_IDS), count = -1;
        int rc = tokenizer_encode_special(t, (const char *)bytes, len, ids, MAX_IDS, &count, err, sizeof err);
        CHECK(rc == XCAP_OK && same_ids(ids, count, want, nw), "encode_special of \"%s\"", (char *)bytes);
        free(bytes);
    }
    /* Plain encode treats the same text as characters. */
    int count;
    tokenizer_encode(t, "<|endoftext|>", 13, ids, MAX_IDS, &count, err, sizeof err);
    CHECK(count == 7 && ids[0] == 27, "plain encode of <|endoftext|>: %d ids", count);
}

/* Strict UTF-8 check, written apart from the tokenizer's (Unicode Table 3-7). */
static int utf8_ok(const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n;) {
        uint8_t b = s[i];
        size_t need;
        if (b < 0x80)
            need = 0;
        else if (b >= 0xC2 && b <= 0xDF)
            need = 1;
        else if (b >= 0xE0 && b <= 0xEF)
            need = 2;
        else if (b >= 0xF0 && b <= 0xF4)
            need = 3;
        else
            return 0;
        if (need > n - i - 1) return 0; /* truncated */
        uint8_t lo = b == 0xE0 ? 0xA0 : b == 0xF0 ? 0x90 : 0x80, hi = b == 0xED ? 0x9F : b == 0xF4 ? 0x8F : 0xBF;
        if (need && (s[i + 1] < lo || s[i + 1] > hi)) return 0;
        for (size_t k = 2; k <= need; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xBF) return 0;
        i += need + 1;
    }
    return 1;
}

/* Random byte strings, most of them not UTF-8: no crash, exact byte round trip, and decode
 * returns valid UTF-8 that equals the input when the input was valid. */
static void test_random_bytes(const xcap_tokenizer *t) {
    uint64_t rng = 12345;
    static const char *const pieces[] = {"a", " ", "  ", "'s", "\xC3\xA9", "\xE0\xA4\xA8", "\xF0\x9F\x98\x80",
                                         "\n", "1", "!", "\xE2\x80\x8D", "\xC2\x85", "\xEF\xBB\xBF"};
    int ok_round = 0, ok_text = 0, n = 2000;
    for (int iter = 0; iter < n; iter++) {
        uint8_t buf[96];
        size_t len = 0, target = test_rng_next(&rng) % 64;
        while (len < target) {
            uint64_t r = test_rng_next(&rng) % 10;
            if (r < 4) {
                buf[len++] = (uint8_t)test_rng_next(&rng);
            } else if (r < 6) {
                buf[len++] = (uint8_t)(0x80 + test_rng_next(&rng) % 64);
            } else {
                const char *p = pieces[test_rng_next(&rng) % (sizeof pieces / sizeof pieces[0])];
                size_t pn = strlen(p);
                memcpy(buf + len, p, pn);
                len += pn;
            }
        }
        int32_t ids[256];
        int count = -1;
        int rc = tokenizer_encode(t, (const char *)buf, len, ids, 256, &count, err, sizeof err);
        char *back = NULL, *text = NULL;
        size_t back_len = 0;
        if (rc == XCAP_OK && count <= 256) rc = tokenizer_decode_bytes(t, ids, count, 0, &back, &back_len, err, sizeof err);
        ok_round += rc == XCAP_OK && back_len == len && memcmp(back, buf, len) == 0;
        if (rc == XCAP_OK) rc = tokenizer_decode(t, ids, count, 0, &text, err, sizeof err);
        if (rc == XCAP_OK) {
            /* decode returns a C string: judge the input up to its first NUL, which decodes to
             * itself and ends any ill-formed sequence before it. */
            size_t tl = strlen(text), plen = strnlen((const char *)buf, len);
            int same = tl == plen && memcmp(text, buf, plen) == 0;
            if (utf8_ok(buf, plen))
                ok_text += same;
            else
                ok_text += utf8_ok((const uint8_t *)text, tl) && strstr(text, "\xEF\xBF\xBD") != NULL;
        }
        free(back);
        free(text);
    }
    CHECK(ok_round == n, "byte round trip held for %d of %d random strings", ok_round, n);
    CHECK(ok_text == n, "decode gave back the input or replaced something in %d of %d", ok_text, n);
}

/* The three layouts of the small tokenizer encode alike, and like GPT-2 wherever GPT-2's result
 * only needs the first 500 merges (then the same merges ran in the same order). */
static void test_small_tokenizers(const xcap_tokenizer *gpt2, const cJSON *cases) {
    xcap_tokenizer *dir = NULL, *json = NULL, *pairs = NULL;
    int rc = tokenizer_load("tests/fixtures/tokenizer/small", &dir, err, sizeof err);
    CHECK(rc == XCAP_OK, "load small: %s", err);
    rc = tokenizer_load("tests/fixtures/tokenizer/small_json", &json, err, sizeof err);
    CHECK(rc == XCAP_OK, "load small_json: %s", err);
    rc = tokenizer_load_tokenizer_json("tests/fixtures/tokenizer/small_pairs/tokenizer.json", &pairs, err,
                                       sizeof err);
    CHECK(rc == XCAP_OK, "load small_pairs: %s", err);
    if (!dir || !json || !pairs) goto done;

    int32_t a[MAX_IDS], b[MAX_IDS], c[MAX_IDS], g[MAX_IDS];
    int agree = 0, n = 0, like_gpt2 = 0, comparable = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, cases) {
        size_t len;
        uint8_t *bytes = unhex(cJSON_GetObjectItem(item, "hex")->valuestring, &len);
        int na, nb, nc, ng;
        tokenizer_encode(dir, (const char *)bytes, len, a, MAX_IDS, &na, err, sizeof err);
        tokenizer_encode(json, (const char *)bytes, len, b, MAX_IDS, &nb, err, sizeof err);
        tokenizer_encode(pairs, (const char *)bytes, len, c, MAX_IDS, &nc, err, sizeof err);
        tokenizer_encode(gpt2, (const char *)bytes, len, g, MAX_IDS, &ng, err, sizeof err);
        agree += same_ids(a, na, b, nb) && same_ids(a, na, c, nc);
        int low = 1;
        for (int i = 0; i < ng; i++) low &= g[i] < 756;
        if (low) {
            comparable++;
            like_gpt2 += same_ids(a, na, g, ng);
        }
        n++;
        free(bytes);
    }
    CHECK(agree == n, "vocab.json+merges.txt, tokenizer.json \"a b\" and [a, b] agree on %d of %d", agree, n);
    CHECK(comparable > 50 && like_gpt2 == comparable, "like GPT-2 on %d of %d comparable cases", like_gpt2,
          comparable);
    printf("small tokenizer: 3 layouts agree on %d/%d cases; equal to GPT-2 on %d/%d cases within its merges\n",
           agree, n, like_gpt2, comparable);

    /* Config files: added_tokens_decoder, roles, a pad token the vocabulary lacks (appended, as
     * transformers does), clean_up_tokenization_spaces without the BPE override. */
    CHECK(tokenizer_vocab_size(dir) == 759, "small vocab size %d", tokenizer_vocab_size(dir));
    CHECK(tokenizer_role_id(dir, "eos") == 756 && tokenizer_role_id(dir, "bos") == 756 &&
              tokenizer_role_id(dir, "unk") == 756,
          "roles");
    CHECK(tokenizer_role_id(dir, "pad") == 758 && tokenizer_token_id(dir, "<pad>") == 758, "pad appended: %d",
          tokenizer_role_id(dir, "pad"));
    CHECK(tokenizer_role_id(dir, "nonsense") == -1, "unknown role");
    CHECK(tokenizer_is_special(dir, 756) && tokenizer_is_special(dir, 758) && !tokenizer_is_special(dir, 757),
          "special flags from added_tokens_decoder and special_tokens_map.json");
    CHECK(!tokenizer_clean_up_spaces(dir), "clean-up must need the BPE override (transformers >= 5.7)");
    CHECK(tokenizer_vocab_size(json) == 757 && tokenizer_is_special(json, 756), "tokenizer.json added_tokens");
    int32_t ids[16];
    int count;
    rc = tokenizer_encode_special(dir, "a<|caption|>b", 13, ids, 16, &count, err, sizeof err);
    CHECK(rc == XCAP_OK && count == 3 && ids[0] == 64 && ids[1] == 757 && ids[2] == 65,
          "non-special added token matched whole");
    char *text;
    int32_t seq[] = {64, 757, 758, 756, 65};
    rc = tokenizer_decode(dir, seq, 5, 1, &text, err, sizeof err);
    CHECK(rc == XCAP_OK && strcmp(text, "a<|caption|>b") == 0, "skip_special keeps non-special added: %s", text);
    free(text);
    rc = tokenizer_decode(dir, seq, 5, 0, &text, err, sizeof err);
    CHECK(rc == XCAP_OK && strcmp(text, "a<|caption|><pad><|endoftext|>b") == 0, "decode keeping specials: %s",
          text);
    free(text);
done:
    tokenizer_free(dir);
    tokenizer_free(json);
    tokenizer_free(pairs);
}

/* Spec §7 / transformers' Python GPT2Tokenizer.bpe: every occurrence of the best pair merges
 * before a pair made by that merge may go, even one of lower rank, so "ab a" (rank 0) must not
 * beat the second "a b". (HF tokenizers' Rust BPE would give [aba, b] here: it queues new pairs
 * at once. The two agree whenever a merge ranks after the merges that make its parts, as in
 * every trained merges file, GPT-2's included; only hand-made files like this one differ.) */
static void test_bpe_order(const char *dir) {
    char path[4096], vpath[4096], mpath[4096];
    snprintf(vpath, sizeof vpath, "%s/v.json", dir);
    snprintf(mpath, sizeof mpath, "%s/m.txt", dir);
    FILE *f = fopen(vpath, "w");
    fputs("{\"a\": 0, \"b\": 1, \"ab\": 2, \"aba\": 3}", f);
    fclose(f);
    f = fopen(mpath, "w");
    fputs("#version: 0.2\nab a\na b\n", f);
    fclose(f);
    xcap_tokenizer *t;
    int rc = tokenizer_load_files(vpath, mpath, &t, err, sizeof err);
    CHECK(rc == XCAP_OK, "tiny tokenizer: %s", err);
    if (rc == XCAP_OK) {
        int32_t ids[8];
        int count;
        tokenizer_encode(t, "abab", 4, ids, 8, &count, err, sizeof err);
        CHECK(count == 2 && ids[0] == 2 && ids[1] == 2, "abab -> [ab, ab], got %d ids starting %d", count, ids[0]);
        tokenizer_encode(t, "aba", 3, ids, 8, &count, err, sizeof err);
        CHECK(count == 1 && ids[0] == 3, "aba -> [aba]");
        /* A byte the vocabulary lacks is an error naming the byte, not a silent drop. */
        rc = tokenizer_encode(t, "abc", 3, ids, 8, &count, err, sizeof err);
        CHECK(rc == XCAP_ERR_MODEL && strstr(err, "0x63"), "missing byte token: %s", err);
        tokenizer_free(t);
    }
    (void)path;
    remove(vpath);
    remove(mpath);
}

/* ------------------------------------------------------------------------------------------ */
/* Bad files */

static const char *const file_names[] = {"vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json",
                                         "special_tokens_map.json", "added_tokens.json"};

static void clear_dir(const char *dir) {
    char path[4096];
    for (size_t i = 0; i < sizeof file_names / sizeof file_names[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, file_names[i]);
        remove(path);
    }
}

static void put(const char *dir, const char *name, const char *content) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    fputs(content, f);
    fclose(f);
}

static const char *good_vocab = "{\"a\": 0, \"b\": 1, \"ab\": 2, \"<|endoftext|>\": 3}";
static const char *good_merges = "#version: 0.2\na b\n";

/* Loads dir and expects failure with code and a message containing both needles. */
static void expect_error(const char *dir, int code, const char *needle, const char *needle2, const char *what) {
    xcap_tokenizer *t = NULL;
    err[0] = 0;
    int rc = tokenizer_load(dir, &t, err, sizeof err);
    CHECK(rc == code && t == NULL && strstr(err, needle) && (!needle2 || strstr(err, needle2)),
          "%s: rc %d (want %d), message \"%s\"", what, rc, code, err);
    tokenizer_free(t);
    clear_dir(dir);
}

static void test_bad_files(const char *dir) {
    expect_error(dir, XCAP_ERR_IO, "vocab.json", NULL, "empty directory");

    put(dir, "vocab.json", good_vocab);
    expect_error(dir, XCAP_ERR_IO, "merges.txt", NULL, "missing merges.txt");

    put(dir, "vocab.json", "{\"a\": 0, \"b\": ");
    put(dir, "merges.txt", good_merges);
    expect_error(dir, XCAP_ERR_FORMAT, "vocab.json", "malformed JSON", "malformed vocab.json");

    put(dir, "vocab.json", "");
    put(dir, "merges.txt", good_merges);
    expect_error(dir, XCAP_ERR_FORMAT, "vocab.json", NULL, "empty vocab.json");

    put(dir, "vocab.json", "[1, 2]");
    put(dir, "merges.txt", good_merges);
    expect_error(dir, XCAP_ERR_FORMAT, "vocab.json", "object", "vocab.json not an object");

    put(dir, "vocab.json", "{}");
    put(dir, "merges.txt", good_merges);
    expect_error(dir, XCAP_ERR_FORMAT, "vocab.json", "empty", "empty vocabulary");

    put(dir, "vocab.json", "{\"a\": 0, \"b\": 0}");
    put(dir, "merges.txt", "");
    expect_error(dir, XCAP_ERR_FORMAT, "vocab.json", "duplicate id 0", "duplicate ids");

    put(dir, "vocab.json", "{\"a\": 0, \"a\": 1}");
    put(dir, "merges.txt", "");
    expect_error(dir, XCAP_ERR_FORMAT, "vocab.json", "twice", "duplicate token");

    put(dir, "vocab.json", "{\"a\": 0, \"b\": 1.5}");
    put(dir, "merges.txt", "");
    expect_error(dir, XCAP_ERR_FORMAT, "vocab.json", "\"b\"", "fractional id");

    put(dir, "vocab.json", "{\"a\": 0, \"b\": -1}");
    put(dir, "merges.txt", "");
    expect_error(dir, XCAP_ERR_FORMAT, "vocab.json", "\"b\"", "negative id");

    put(dir, "vocab.json", "{\"a\": 0, \"b\": 4000000000}");
    put(dir, "merges.txt", "");
    expect_error(dir, XCAP_ERR_FORMAT, "vocab.json", "\"b\"", "huge id");

    put(dir, "vocab.json", "{\"a\": 0, \"b\": \"1\"}");
    put(dir, "merges.txt", "");
    expect_error(dir, XCAP_ERR_FORMAT, "vocab.json", "\"b\"", "string id");

    put(dir, "vocab.json", "{\"a\": 0, \"\xFF\": 1}");
    put(dir, "merges.txt", "");
    expect_error(dir, XCAP_ERR_FORMAT, "vocab.json", "UTF-8", "token not UTF-8");

    put(dir, "vocab.json", good_vocab);
    put(dir, "merges.txt", "#version: 0.2\na b\na c\n");
    expect_error(dir, XCAP_ERR_FORMAT, "merges.txt:3", "\"c\"", "merge with an unknown token");

    put(dir, "vocab.json", "{\"a\": 0, \"b\": 1}");
    put(dir, "merges.txt", "a b\n");
    expect_error(dir, XCAP_ERR_FORMAT, "merges.txt:1", "\"ab\"", "merge result not in vocabulary");

    put(dir, "vocab.json", good_vocab);
    put(dir, "merges.txt", "#version: 0.2\na b ab\n");
    expect_error(dir, XCAP_ERR_FORMAT, "merges.txt:2", "two tokens", "merge line with three parts");

    put(dir, "vocab.json", good_vocab);
    put(dir, "merges.txt", "#version: 0.2\nab\n");
    expect_error(dir, XCAP_ERR_FORMAT, "merges.txt:2", "two tokens", "merge line with one part");

    put(dir, "tokenizer.json", "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"a\": 0}}}");
    expect_error(dir, XCAP_ERR_UNSUPPORTED, "tokenizer.json", "WordPiece", "tokenizer.json not BPE");

    put(dir, "tokenizer.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2}}}");
    expect_error(dir, XCAP_ERR_FORMAT, "tokenizer.json", "merges", "tokenizer.json without merges");

    put(dir, "tokenizer.json", "{\"model\": {\"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2}, \"merges\": [\"a b\", 7]}}");
    expect_error(dir, XCAP_ERR_FORMAT, "model.merges[1]", NULL, "tokenizer.json merge of the wrong type");

    put(dir, "tokenizer.json", "{\"model\": {\"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2}, \"merges\": [[\"a\", \"x\"]]}}");
    expect_error(dir, XCAP_ERR_FORMAT, "model.merges[0]", "\"x\"", "tokenizer.json merge with unknown token");

    put(dir, "tokenizer.json", "{\"model\": {\"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": []},"
                               " \"added_tokens\": [{\"id\": 1, \"content\": \"<x>\", \"special\": true}]}");
    expect_error(dir, XCAP_ERR_FORMAT, "added_tokens[0]", "duplicate id 1", "added token clashing with vocab");

    put(dir, "tokenizer.json", "{\"model\": {\"vocab\": {\"a\": 0}, \"merges\": []}, \"added_tokens\": [{\"id\": 5}]}");
    expect_error(dir, XCAP_ERR_FORMAT, "added_tokens[0]", NULL, "added token without content");

    put(dir, "vocab.json", good_vocab);
    put(dir, "merges.txt", good_merges);
    put(dir, "tokenizer_config.json", "{\"clean_up_tokenization_spaces\": tru");
    expect_error(dir, XCAP_ERR_FORMAT, "tokenizer_config.json", "malformed JSON", "malformed tokenizer_config.json");

    put(dir, "vocab.json", good_vocab);
    put(dir, "merges.txt", good_merges);
    put(dir, "tokenizer_config.json", "{\"clean_up_tokenization_spaces\": \"yes\"}");
    expect_error(dir, XCAP_ERR_FORMAT, "tokenizer_config.json", "clean_up_tokenization_spaces", "non-bool clean-up");

    put(dir, "vocab.json", good_vocab);
    put(dir, "merges.txt", good_merges);
    put(dir, "tokenizer_config.json", "{\"added_tokens_decoder\": {\"x1\": {\"content\": \"<y>\"}}}");
    expect_error(dir, XCAP_ERR_FORMAT, "added_tokens_decoder", "x1", "non-integer added token id");

    put(dir, "vocab.json", good_vocab);
    put(dir, "merges.txt", good_merges);
    put(dir, "special_tokens_map.json", "{\"eos_token\": 5}");
    expect_error(dir, XCAP_ERR_FORMAT, "special_tokens_map.json", "eos_token", "eos_token of the wrong type");

    put(dir, "vocab.json", good_vocab);
    put(dir, "merges.txt", good_merges);
    put(dir, "added_tokens.json", "{\"<new>\": \"x\"}");
    expect_error(dir, XCAP_ERR_FORMAT, "added_tokens.json", "<new>", "added_tokens.json with a bad id");

    /* The good files load, and both clean-up flags switch the clean-up on. */
    put(dir, "vocab.json", "{\"a\": 0, \"b\": 1, \"ab\": 2, \"<|endoftext|>\": 3, \"\xC4\xA0\": 4, \",\": 5, \"'\": 6,"
                           " \"s\": 7}");
    put(dir, "merges.txt", good_merges);
    put(dir, "tokenizer_config.json",
        "{\"clean_up_tokenization_spaces\": true,"
        " \"clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output\": true}");
    xcap_tokenizer *t = NULL;
    int rc = tokenizer_load(dir, &t, err, sizeof err);
    CHECK(rc == XCAP_OK, "good files: %s", err);
    if (t) {
        CHECK(tokenizer_clean_up_spaces(t), "both flags set: clean-up on");
        int32_t ids[] = {2, 4, 5, 4, 6, 7};
        char *text;
        rc = tokenizer_decode(t, ids, 6, 0, &text, err, sizeof err);
        CHECK(rc == XCAP_OK && strcmp(text, "ab,'s") == 0, "clean-up applied: \"%s\"", text);
        free(text);
        int32_t bad[] = {2, 9};
        rc = tokenizer_decode(t, bad, 2, 0, &text, err, sizeof err);
        CHECK(rc == XCAP_ERR_ARG && strstr(err, "id 9") && strstr(err, "position 1"), "out of range id: %s", err);
        int32_t neg[] = {-1};
        rc = tokenizer_decode(t, neg, 1, 1, &text, err, sizeof err);
        CHECK(rc == XCAP_ERR_ARG && strstr(err, "id -1"), "negative id: %s", err);
        tokenizer_free(t);
    }
    clear_dir(dir);
}

/* add_prefix_space: HF's ByteLevel pre-tokenizer puts a space before every non-empty stretch of
 * text between added tokens that does not start with one, and drops empty stretches (expected
 * ids worked out by hand from tokenizers' PreTokenizedString::split and ByteLevel). */
static void test_add_prefix_space(const char *dir) {
    put(dir, "vocab.json", "{\"a\": 0, \"b\": 1, \"ab\": 2, \"<|endoftext|>\": 3, \"\xC4\xA0\": 4}");
    put(dir, "merges.txt", good_merges);
    put(dir, "tokenizer_config.json", "{\"add_prefix_space\": true}");
    xcap_tokenizer *t = NULL;
    int rc = tokenizer_load(dir, &t, err, sizeof err);
    CHECK(rc == XCAP_OK, "add_prefix_space files: %s", err);
    if (t) {
        static const struct {
            const char *text;
            int special, n;
            int32_t ids[6];
        } cases[] = {
            {"a", 0, 2, {4, 0}},
            {" a", 0, 2, {4, 0}},
            {"", 0, 0, {0}},
            {"ab", 0, 2, {4, 2}},
            {"ab<|endoftext|>b", 1, 5, {4, 2, 3, 4, 1}},
            {"<|endoftext|>", 1, 1, {3}},
            {"<|endoftext|> a<|endoftext|>", 1, 4, {3, 4, 0, 3}},
        };
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            int32_t ids[16];
            int count = -1;
            size_t len = strlen(cases[i].text);
            rc = cases[i].special ? tokenizer_encode_special(t, cases[i].text, len, ids, 16, &count, err, sizeof err)
                                  : tokenizer_encode(t, cases[i].text, len, ids, 16, &count, err, sizeof err);
            CHECK(rc == XCAP_OK && same_ids(ids, count, cases[i].ids, cases[i].n), "add_prefix_space \"%s\": %d ids",
                  cases[i].text, count);
        }
        tokenizer_free(t);
    }
    clear_dir(dir);
}

static void test_clean_up_text(void) {
    /* Expected text worked out by hand with Python's str.replace chain (and checked in Python):
     * the rules run in order over the whole string, so " ." eats the space of "' ." before
     * " ' " can match there, and " ' " runs before " 're". */
    char s[] = "Hello , world . It 's fine ! Is n't it ? I 'm sure they 've said we 're ' ok ' .";
    tokenizer_clean_up_text(s);
    CHECK(strcmp(s, "Hello, world. It's fine! Isn't it? I'm sure they've said we're'ok '.") == 0, "clean-up: %s", s);
}

/* ------------------------------------------------------------------------------------------ */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Speed, reported only (timing belongs in the benchmark, not in an assertion). */
static void measure_speed(const xcap_tokenizer *t, const cJSON *cases) {
    size_t cap = 1 << 20, len = 0;
    char *text = malloc(cap + 4096);
    while (len < cap) {
        const cJSON *c;
        cJSON_ArrayForEach(c, cases) {
            const cJSON *s = cJSON_GetObjectItem(c, "text");
            const char *group = cJSON_GetObjectItem(c, "group")->valuestring;
            if (!s || strcmp(group, "english") != 0 || len >= cap) continue;
            size_t n = strlen(s->valuestring);
            memcpy(text + len, s->valuestring, n);
            len += n;
            text[len++] = ' ';
        }
    }
    int count = 0;
    double t0 = now_s();
    int rc = tokenizer_encode(t, text, len, NULL, 0, &count, err, sizeof err);
    double dt = now_s() - t0;
    CHECK(rc == XCAP_OK && count > 0, "speed text: %s", err);
    printf("encode speed: %d tokens from %zu bytes of English in %.3f s = %.0f tokens/s (%.1f MB/s)\n", count, len,
           dt, count / dt, len / dt / 1e6);
    free(text);
}

int main(void) {
    test_unicode_classes();
    test_clean_up_text();

    double t0 = now_s();
    xcap_tokenizer *t = NULL;
    int rc = tokenizer_load("tests/fixtures/gpt2", &t, err, sizeof err);
    CHECK(rc == XCAP_OK, "load GPT-2: %s", err);
    if (!t) return harness_finish("test_tokenizer");
    printf("GPT-2 tokenizer loaded in %.3f s\n", now_s() - t0);
    test_gpt2_basics(t);

    cJSON *fixture = load_json("tests/fixtures/tokenizer/cases.json");
    CHECK(fixture != NULL, "tests/fixtures/tokenizer/cases.json missing or malformed");
    if (fixture) {
        int n_cases = 0;
        test_cases(t, cJSON_GetObjectItem(fixture, "encode"), &n_cases);
        CHECK(n_cases >= 300, "only %d cases", n_cases);
        test_decode_cases(t, cJSON_GetObjectItem(fixture, "decode"));
        test_encode_special(t, cJSON_GetObjectItem(fixture, "encode_special"));
        test_small_tokenizers(t, cJSON_GetObjectItem(fixture, "encode"));
        measure_speed(t, cJSON_GetObjectItem(fixture, "encode"));
    }
    test_random_bytes(t);

    char dir[] = "/tmp/xcap_tokenizer_test_XXXXXX";
    if (mkdtemp(dir)) {
        test_bpe_order(dir);
        test_bad_files(dir);
        test_add_prefix_space(dir);
        rmdir(dir);
    } else {
        CHECK(0, "mkdtemp failed");
    }

    cJSON_Delete(fixture);
    tokenizer_free(t);
    return harness_finish("test_tokenizer");
}
