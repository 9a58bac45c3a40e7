/* GPT-2 byte-level BPE tokenizer (spec §7): loading, encoding, decoding.
 *
 * Layout: every token id owns a string (as written in vocab.json, in GPT-2's byte-level
 * characters) and the raw bytes it decodes to, both in one arena. A hash index maps strings to
 * ids; a second hash table maps a pair of adjacent token ids to the merge's rank and result. */
#include "text/tokenizer.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/common.h"
#include "text/unicode_tables.h"
#include "weights/config.h"

/* Far above any real vocabulary (GPT-2: 50 257; the largest in use are about 260 000); bounds
 * what an id read from a file can make us allocate (about 80 MB of token entries). */
#define MAX_TOKEN_ID ((1 << 22) - 1)

/* Longest token text accepted (real vocabularies stay under a few hundred bytes). Bounds the
 * work of matching added tokens in tokenizer_encode_special and what one entry can allocate. */
#define MAX_TOKEN_BYTES 4096

/* Room for a path (xcap_join_path's 4096) plus the item named in a message. */
#define WHAT_LEN 4352

enum {
    TOKEN_PRESENT = 1,
    TOKEN_SPECIAL = 2, /* skipped by decode with skip_special */
    TOKEN_ADDED = 4,   /* matched as a whole by tokenizer_encode_special */
};

/* The roles transformers gives special tokens, in its SPECIAL_TOKENS_ATTRIBUTES order (the order
 * in which it appends a named token that the vocabulary lacks). */
static const char *const role_keys[] = {"bos_token", "eos_token", "unk_token", "sep_token",
                                        "pad_token", "cls_token", "mask_token"};
#define N_ROLES ((int)(sizeof role_keys / sizeof role_keys[0]))

typedef struct {
    uint32_t str_off, str_len;     /* the token as the vocabulary writes it */
    uint32_t bytes_off, bytes_len; /* what it decodes to */
    uint8_t flags;
} token_entry;

typedef struct {
    uint64_t pair; /* left id << 32 | right id */
    uint32_t rank; /* line order in merges.txt: lower merges first */
    int32_t merged; /* id of left + right; -1 marks an empty slot */
} merge_slot;

struct xcap_tokenizer {
    token_entry *tokens;
    int n_ids; /* largest id + 1 */
    int tokens_cap;
    char *arena;
    size_t arena_len, arena_cap;
    int32_t *index; /* open addressing over token strings: id, or -1 for empty */
    size_t index_cap, index_used;
    merge_slot *merges;
    size_t merges_cap, merges_used;
    int32_t byte_token[256]; /* token of each single byte; -1 if the vocabulary lacks it */
    int32_t *added;          /* tokens matched whole by encode_special, longest first */
    int n_added;
    int role_id[N_ROLES];
    int add_prefix_space;
    int clean_up_spaces; /* clean_up_tokenization_spaces */
    int clean_up_force;  /* ..._for_bpe_even_though_it_will_corrupt_output */
};

/* ---------------------------------------------------------------------------------------- */
/* GPT-2's byte <-> character table (spec §7): printable bytes stand for themselves, the other
 * 68 map in increasing order to U+0100.. so that no token contains white space or controls. */

static uint32_t byte_to_char(uint8_t b) {
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174) return b;
    if (b <= 32) return 256u + b;         /* bytes 0..32 -> U+0100..U+0120 */
    if (b <= 160) return 256u + 33 + (b - 127u); /* 127..160 -> U+0121..U+0142 */
    return 256u + 67;                     /* 173 -> U+0143 */
}

static int char_to_byte(uint32_t c) {
    if ((c >= 33 && c <= 126) || (c >= 161 && c <= 172) || (c >= 174 && c <= 255)) return (int)c;
    if (c >= 256 && c <= 256 + 32) return (int)(c - 256);
    if (c >= 256 + 33 && c <= 256 + 66) return (int)(c - 256 - 33 + 127);
    if (c == 256 + 67) return 173;
    return -1;
}

/* ---------------------------------------------------------------------------------------- */
/* UTF-8 */

/* For a multi-byte lead byte b: how many continuation bytes follow and the allowed range of the
 * first of them (Unicode Table 3-7: no overlongs, surrogates or values above U+10FFFF). Returns
 * 0 when b cannot start a multi-byte sequence. */
static int utf8_lead(uint8_t b, size_t *need, uint8_t *lo, uint8_t *hi) {
    *lo = 0x80;
    *hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) {
        *need = 1;
    } else if (b >= 0xE0 && b <= 0xEF) {
        *need = 2;
        if (b == 0xE0) *lo = 0xA0;
        if (b == 0xED) *hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
        *need = 3;
        if (b == 0xF0) *lo = 0x90;
        if (b == 0xF4) *hi = 0x8F;
    } else {
        return 0;
    }
    return 1;
}

/* Length of the well-formed UTF-8 sequence at s (Unicode Table 3-7: no overlongs, surrogates or
 * values above U+10FFFF), or 0 when s does not start one. */
static size_t utf8_decode(const uint8_t *s, size_t n, uint32_t *cp) {
    uint8_t b = s[0];
    if (b < 0x80) {
        *cp = b;
        return 1;
    }
    size_t need;
    uint8_t lo, hi;
    if (!utf8_lead(b, &need, &lo, &hi)) return 0;
    if (n < need + 1 || s[1] < lo || s[1] > hi) return 0;
    for (size_t k = 2; k <= need; k++)
        if (s[k] < 0x80 || s[k] > 0xBF) return 0;
    uint32_t v = b & (0x3F >> need);
    for (size_t k = 1; k <= need; k++) v = (v << 6) | (s[k] & 0x3F);
    *cp = v;
    return need + 1;
}

/* Length of the maximal subpart of an ill-formed sequence at s (at least 1): the longest prefix
 * that could still have become well-formed. Decoders that follow the Unicode recommendation
 * (Python's errors="replace", Rust's from_utf8_lossy, WHATWG) emit one U+FFFD for it. */
static size_t utf8_bad_len(const uint8_t *s, size_t n) {
    uint8_t b = s[0];
    size_t need;
    uint8_t lo, hi;
    if (!utf8_lead(b, &need, &lo, &hi)) return 1;
    if (n < 2 || s[1] < lo || s[1] > hi) return 1;
    size_t k = 2;
    while (k <= need && k < n && s[k] >= 0x80 && s[k] <= 0xBF) k++;
    return k;
}

static int utf8_valid(const uint8_t *s, size_t n) {
    uint32_t cp;
    for (size_t i = 0; i < n;) {
        size_t k = utf8_decode(s + i, n - i, &cp);
        if (k == 0) return 0;
        i += k;
    }
    return 1;
}

/* ---------------------------------------------------------------------------------------- */
/* Token storage */

static uint64_t hash_bytes(const char *p, size_t n) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)p[i]) * 1099511628211ull;
    return h;
}

static const char *token_str(const xcap_tokenizer *t, int id, size_t *len) {
    *len = t->tokens[id].str_len;
    return t->arena + t->tokens[id].str_off;
}

static int32_t find_token(const xcap_tokenizer *t, const char *s, size_t n) {
    if (t->index_cap == 0) return -1;
    size_t mask = t->index_cap - 1;
    for (size_t h = hash_bytes(s, n) & mask;; h = (h + 1) & mask) {
        int32_t id = t->index[h];
        if (id < 0) return -1;
        size_t len;
        const char *p = token_str(t, id, &len);
        if (len == n && memcmp(p, s, n) == 0) return id;
    }
}

static void index_put(xcap_tokenizer *t, int32_t id) {
    size_t len, mask = t->index_cap - 1;
    const char *p = token_str(t, id, &len);
    size_t h = hash_bytes(p, len) & mask;
    while (t->index[h] >= 0) h = (h + 1) & mask;
    t->index[h] = id;
}

/* Keeps the string index at most half full. */
static int index_reserve(xcap_tokenizer *t, size_t more) {
    if ((t->index_used + more) * 2 <= t->index_cap) return XCAP_OK;
    size_t cap = t->index_cap ? t->index_cap : 1024;
    while ((t->index_used + more) * 2 > cap) cap *= 2;
    int32_t *fresh = malloc(cap * sizeof *fresh);
    if (!fresh) return XCAP_ERR_NOMEM;
    free(t->index);
    t->index = fresh;
    t->index_cap = cap;
    for (size_t i = 0; i < cap; i++) t->index[i] = -1;
    for (int id = 0; id < t->n_ids; id++)
        if (t->tokens[id].flags & TOKEN_PRESENT) index_put(t, id);
    return XCAP_OK;
}

static int arena_push(xcap_tokenizer *t, const void *p, size_t n, uint32_t *off) {
    if (t->arena_len + n > UINT32_MAX) return XCAP_ERR_NOMEM;
    if (!t->arena || t->arena_len + n > t->arena_cap) { /* allocated even for an empty first token */
        size_t cap = t->arena_cap ? t->arena_cap : 1 << 16;
        while (cap < t->arena_len + n) cap *= 2;
        char *bigger = realloc(t->arena, cap);
        if (!bigger) return XCAP_ERR_NOMEM;
        t->arena = bigger;
        t->arena_cap = cap;
    }
    if (n) memcpy(t->arena + t->arena_len, p, n);
    *off = (uint32_t)t->arena_len;
    t->arena_len += n;
    return XCAP_OK;
}

/* Adds token s (UTF-8, n bytes) under id, or adds flags when exactly that token is already
 * there. what names the source for messages ("vocab.json", "tokenizer.json: added_tokens"). */
static int add_token(xcap_tokenizer *t, const char *s, size_t n, long id, int flags,
                     const char *what, char *err, size_t errlen) {
    if (id < 0 || id > MAX_TOKEN_ID)
        return xcap_fail(err, errlen, XCAP_ERR_FORMAT, "%s: token \"%.60s\" has id %ld, outside 0..%d",
                         what, s, id, MAX_TOKEN_ID);
    if (n > MAX_TOKEN_BYTES)
        return xcap_fail(err, errlen, XCAP_ERR_FORMAT, "%s: token with id %ld is %zu bytes long (at most %d)", what,
                         id, n, MAX_TOKEN_BYTES);
    int32_t existing = find_token(t, s, n);
    if (id < t->n_ids && (t->tokens[id].flags & TOKEN_PRESENT)) {
        if (existing == id) {
            t->tokens[id].flags |= (uint8_t)flags;
            return XCAP_OK;
        }
        size_t len;
        const char *other = token_str(t, (int)id, &len);
        return xcap_fail(err, errlen, XCAP_ERR_FORMAT, "%s: duplicate id %ld for \"%.40s\" and \"%.*s\"",
                         what, id, s, (int)(len > 40 ? 40 : len), other);
    }
    if (existing >= 0)
        return xcap_fail(err, errlen, XCAP_ERR_FORMAT, "%s: token \"%.60s\" appears twice (ids %d and %ld)",
                         what, s, existing, id);
    if (!utf8_valid((const uint8_t *)s, n))
        return xcap_fail(err, errlen, XCAP_ERR_FORMAT, "%s: token with id %ld is not valid UTF-8", what, id);

    if (id >= t->tokens_cap) {
        int cap = t->tokens_cap ? t->tokens_cap : 1024;
        while (cap <= id) cap = cap > MAX_TOKEN_ID / 2 ? MAX_TOKEN_ID + 1 : cap * 2;
        token_entry *bigger = realloc(t->tokens, (size_t)cap * sizeof *bigger);
        if (!bigger) return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "%s: out of memory", what);
        memset(bigger + t->tokens_cap, 0, (size_t)(cap - t->tokens_cap) * sizeof *bigger);
        t->tokens = bigger;
        t->tokens_cap = cap;
    }
    if (index_reserve(t, 1)) return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "%s: out of memory", what);

    /* The bytes a token stands for: its characters read back through the byte table. A token
     * with a character outside the table (an added token such as "<my pad>") stands for its own
     * UTF-8, as HF's ByteLevel decoder does. */
    token_entry e = {0};
    e.flags = (uint8_t)(TOKEN_PRESENT | flags);
    if (arena_push(t, s, n, &e.str_off))
        return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "%s: out of memory", what);
    e.str_len = (uint32_t)n;
    uint8_t small[256];
    uint8_t *bytes = n <= sizeof small ? small : malloc(n);
    if (!bytes) return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "%s: out of memory", what);
    size_t nb = 0;
    int mapped = 1;
    for (size_t i = 0; i < n && mapped;) {
        uint32_t cp;
        i += utf8_decode((const uint8_t *)s + i, n - i, &cp);
        int b = char_to_byte(cp);
        if (b < 0)
            mapped = 0;
        else
            bytes[nb++] = (uint8_t)b;
    }
    int rc = mapped ? arena_push(t, bytes, nb, &e.bytes_off) : XCAP_OK;
    if (bytes != small) free(bytes);
    if (rc) return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "%s: out of memory", what);
    if (mapped) {
        e.bytes_len = (uint32_t)nb;
    } else {
        e.bytes_off = e.str_off;
        e.bytes_len = e.str_len;
    }
    t->tokens[id] = e;
    if (id >= t->n_ids) t->n_ids = (int)id + 1;
    index_put(t, (int32_t)id);
    t->index_used++;
    return XCAP_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* Merges */

static size_t merge_hash(uint64_t pair, size_t mask) {
    return (size_t)((pair * 0x9E3779B97F4A7C15ull) >> 20) & mask;
}

static const merge_slot *find_merge(const xcap_tokenizer *t, int32_t left, int32_t right) {
    if (t->merges_cap == 0) return NULL;
    uint64_t pair = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    size_t mask = t->merges_cap - 1;
    for (size_t h = merge_hash(pair, mask);; h = (h + 1) & mask) {
        const merge_slot *m = &t->merges[h];
        if (m->merged < 0) return NULL;
        if (m->pair == pair) return m;
    }
}

static int merges_reserve(xcap_tokenizer *t, size_t more) {
    if ((t->merges_used + more) * 2 <= t->merges_cap) return XCAP_OK;
    size_t cap = t->merges_cap ? t->merges_cap : 1024;
    while ((t->merges_used + more) * 2 > cap) cap *= 2;
    merge_slot *fresh = malloc(cap * sizeof *fresh);
    if (!fresh) return XCAP_ERR_NOMEM;
    for (size_t i = 0; i < cap; i++) fresh[i].merged = -1;
    for (size_t i = 0; i < t->merges_cap; i++) {
        if (t->merges[i].merged < 0) continue;
        size_t h = merge_hash(t->merges[i].pair, cap - 1);
        while (fresh[h].merged >= 0) h = (h + 1) & (cap - 1);
        fresh[h] = t->merges[i];
    }
    free(t->merges);
    t->merges = fresh;
    t->merges_cap = cap;
    return XCAP_OK;
}

/* Adds merge "a b" with the given rank. where names the file and line for messages. A pair
 * listed twice keeps its last rank, as both transformers' and HF tokenizers' loaders do. */
static int add_merge(xcap_tokenizer *t, const char *a, size_t an, const char *b, size_t bn,
                     uint32_t rank, const char *where, char *err, size_t errlen) {
    int32_t left = find_token(t, a, an), right = find_token(t, b, bn);
    if (left < 0 || right < 0) {
        const char *s = left < 0 ? a : b;
        int sn = (int)(left < 0 ? an : bn);
        return xcap_fail(err, errlen, XCAP_ERR_FORMAT,
                         "%s: merge \"%.*s %.*s\" uses \"%.*s\", which is not in the vocabulary", where,
                         (int)(an > 40 ? 40 : an), a, (int)(bn > 40 ? 40 : bn), b, sn > 40 ? 40 : sn, s);
    }
    char small[512];
    char *joined = an + bn <= sizeof small ? small : malloc(an + bn);
    if (!joined) return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "%s: out of memory", where);
    memcpy(joined, a, an);
    memcpy(joined + an, b, bn);
    int32_t merged = find_token(t, joined, an + bn);
    if (joined != small) free(joined);
    if (merged < 0)
        return xcap_fail(err, errlen, XCAP_ERR_FORMAT,
                         "%s: merge \"%.*s %.*s\" makes \"%.*s%.*s\", which is not in the vocabulary",
                         where, (int)(an > 40 ? 40 : an), a, (int)(bn > 40 ? 40 : bn), b,
                         (int)(an > 40 ? 40 : an), a, (int)(bn > 40 ? 40 : bn), b);
    if (merges_reserve(t, 1)) return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "%s: out of memory", where);
    uint64_t pair = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    size_t mask = t->merges_cap - 1, h = merge_hash(pair, mask);
    while (t->merges[h].merged >= 0 && t->merges[h].pair != pair) h = (h + 1) & mask;
    if (t->merges[h].merged < 0) t->merges_used++;
    t->merges[h].pair = pair;
    t->merges[h].rank = rank;
    t->merges[h].merged = merged;
    return XCAP_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* Files */

static int parse_json(const char *path, cJSON **root, char *err, size_t errlen) {
    char *data;
    size_t size;
    int rc = config_read_file(path, TOKENIZER_MAX_FILE_BYTES, &data, &size, err, errlen);
    if (rc) return rc;
    const char *end = NULL;
    *root = cJSON_ParseWithLengthOpts(data, size, &end, 0);
    if (!*root) {
        size_t at = end && end >= data && end <= data + size ? (size_t)(end - data) : 0;
        int line = 1;
        for (size_t i = 0; i < at; i++) line += data[i] == '\n';
        free(data);
        return xcap_fail(err, errlen, XCAP_ERR_FORMAT, "%s: malformed JSON at byte %zu (line %d)", path,
                         at, line);
    }
    free(data);
    return XCAP_OK;
}

/* Like parse_json, but a missing file is not an error: *root stays NULL. */
static int parse_optional_json(const char *path, cJSON **root, char *err, size_t errlen) {
    *root = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errno == ENOENT) return XCAP_OK;
        return xcap_fail(err, errlen, XCAP_ERR_IO, "%s: %s", path, strerror(errno));
    }
    fclose(f);
    return parse_json(path, root, err, errlen);
}

static int file_exists(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f) fclose(f);
    return f != NULL;
}

/* A JSON number that is an integer in 0..MAX_TOKEN_ID. */
static int json_token_id(const cJSON *item, long *id) {
    if (!cJSON_IsNumber(item)) return 0;
    double v = item->valuedouble;
    if (!isfinite(v) || v != floor(v) || v < 0 || v > MAX_TOKEN_ID) return 0;
    *id = (long)v;
    return 1;
}

/* A vocabulary object {"token": id, ...} (vocab.json, tokenizer.json's model.vocab). */
static int load_vocab_object(xcap_tokenizer *t, const cJSON *vocab, const char *what, char *err,
                             size_t errlen) {
    if (!cJSON_IsObject(vocab))
        return xcap_fail(err, errlen, XCAP_ERR_FORMAT, "%s: expected an object of token -> id", what);
    if (index_reserve(t, (size_t)cJSON_GetArraySize(vocab)))
        return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "%s: out of memory", what);
    const cJSON *item;
    cJSON_ArrayForEach(item, vocab) {
        long id;
        if (!json_token_id(item, &id))
            return xcap_fail(err, errlen, XCAP_ERR_FORMAT,
                             "%s: token \"%.60s\" has no integer id in 0..%d", what,
                             item->string ? item->string : "", MAX_TOKEN_ID);
        int rc = add_token(t, item->string, strlen(item->string), id, 0, what, err, errlen);
        if (rc) return rc;
    }
    if (t->n_ids == 0) return xcap_fail(err, errlen, XCAP_ERR_FORMAT, "%s: the vocabulary is empty", what);
    return XCAP_OK;
}

static int load_vocab_json(xcap_tokenizer *t, const char *path, char *err, size_t errlen) {
    cJSON *root;
    int rc = parse_json(path, &root, err, errlen);
    if (rc) return rc;
    rc = load_vocab_object(t, root, path, err, errlen);
    cJSON_Delete(root);
    return rc;
}

/* merges.txt: one merge "a b" a line, rank = order. The "#version" header is skipped, as HF
 * tokenizers does (transformers' slow tokenizer drops the first line whatever it is). Blank
 * lines are skipped. */
static int load_merges_txt(xcap_tokenizer *t, const char *path, char *err, size_t errlen) {
    char *data;
    size_t size;
    int rc = config_read_file(path, TOKENIZER_MAX_FILE_BYTES, &data, &size, err, errlen);
    if (rc) return rc;
    if (merges_reserve(t, 1024)) {
        free(data);
        return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "%s: out of memory", path);
    }
    uint32_t rank = 0;
    int line_no = 0;
    char where[WHAT_LEN];
    for (size_t pos = 0; pos < size && rc == XCAP_OK;) {
        const char *line = data + pos;
        const char *nl = memchr(line, '\n', size - pos);
        size_t n = nl ? (size_t)(nl - line) : size - pos;
        pos += n + 1;
        line_no++;
        if (n && line[n - 1] == '\r') n--;
        if (n == 0 || (n >= 8 && memcmp(line, "#version", 8) == 0)) continue;
        const char *space = memchr(line, ' ', n);
        if (!space || space == line || space == line + n - 1 || memchr(space + 1, ' ', n - (size_t)(space - line) - 1)) {
            rc = xcap_fail(err, errlen, XCAP_ERR_FORMAT,
                           "%s:%d: expected two tokens separated by one space, found \"%.*s\"", path,
                           line_no, (int)(n > 60 ? 60 : n), line);
            break;
        }
        snprintf(where, sizeof where, "%s:%d", path, line_no);
        rc = add_merge(t, line, (size_t)(space - line), space + 1, n - (size_t)(space - line) - 1, rank++,
                       where, err, errlen);
    }
    free(data);
    return rc;
}

/* tokenizer.json: model.vocab, model.merges ("a b" strings or ["a", "b"] pairs), added_tokens.
 * Only the vocabulary and merges are read from the model: transformers' GPT2Tokenizer rebuilds
 * its pre-tokenizer and decoder itself (and so ignores the ones stored here). */
static int load_tokenizer_json_into(xcap_tokenizer *t, const char *path, char *err, size_t errlen) {
    cJSON *root;
    int rc = parse_json(path, &root, err, errlen);
    if (rc) return rc;
    char what[WHAT_LEN];
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(model, "type");
    if (!cJSON_IsObject(model)) {
        rc = xcap_fail(err, errlen, XCAP_ERR_FORMAT, "%s: no \"model\" object", path);
        goto done;
    }
    if (type && !(cJSON_IsString(type) && strcmp(type->valuestring, "BPE") == 0)) {
        rc = xcap_fail(err, errlen, XCAP_ERR_UNSUPPORTED, "%s: model.type is %s; only \"BPE\" is supported",
                       path, cJSON_IsString(type) ? type->valuestring : "not a string");
        goto done;
    }
    snprintf(what, sizeof what, "%s: model.vocab", path);
    rc = load_vocab_object(t, cJSON_GetObjectItemCaseSensitive(model, "vocab"), what, err, errlen);
    if (rc) goto done;

    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (!cJSON_IsArray(merges)) {
        rc = xcap_fail(err, errlen, XCAP_ERR_FORMAT, "%s: model.merges is missing or not an array", path);
        goto done;
    }
    if (merges_reserve(t, (size_t)cJSON_GetArraySize(merges))) {
        rc = xcap_fail(err, errlen, XCAP_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    uint32_t rank = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, merges) {
        snprintf(what, sizeof what, "%s: model.merges[%u]", path, rank);
        const char *a = NULL, *b = NULL;
        size_t an = 0, bn = 0;
        if (cJSON_IsString(m)) {
            const char *s = m->valuestring, *space = strchr(s, ' ');
            if (space && space != s && space[1] && !strchr(space + 1, ' ')) {
                a = s;
                an = (size_t)(space - s);
                b = space + 1;
                bn = strlen(b);
            }
        } else if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2 && cJSON_IsString(m->child) &&
                   cJSON_IsString(m->child->next)) {
            a = m->child->valuestring;
            an = strlen(a);
            b = m->child->next->valuestring;
            bn = strlen(b);
        }
        if (!a || !an || !bn) {
            rc = xcap_fail(err, errlen, XCAP_ERR_FORMAT,
                           "%s: expected \"a b\" or [\"a\", \"b\"] with two non-empty tokens", what);
            goto done;
        }
        rc = add_merge(t, a, an, b, bn, rank++, what, err, errlen);
        if (rc) goto done;
    }

    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    if (added && !cJSON_IsNull(added)) {
        if (!cJSON_IsArray(added)) {
            rc = xcap_fail(err, errlen, XCAP_ERR_FORMAT, "%s: added_tokens is not an array", path);
            goto done;
        }
        int i = 0;
        const cJSON *a;
        cJSON_ArrayForEach(a, added) {
            snprintf(what, sizeof what, "%s: added_tokens[%d]", path, i++);
            const cJSON *content = cJSON_GetObjectItemCaseSensitive(a, "content");
            const cJSON *special = cJSON_GetObjectItemCaseSensitive(a, "special");
            long id;
            if (!json_token_id(cJSON_GetObjectItemCaseSensitive(a, "id"), &id) || !cJSON_IsString(content) ||
                !content->valuestring[0] || (special && !cJSON_IsBool(special))) {
                rc = xcap_fail(err, errlen, XCAP_ERR_FORMAT,
                               "%s: expected {\"id\": integer, \"content\": string, \"special\": bool}", what);
                goto done;
            }
            rc = add_token(t, content->valuestring, strlen(content->valuestring), id,
                           TOKEN_ADDED | (cJSON_IsTrue(special) ? TOKEN_SPECIAL : 0), what, err, errlen);
            if (rc) goto done;
        }
    }
done:
    cJSON_Delete(root);
    return rc;
}

/* added_tokens.json (old slow-tokenizer format): {"content": id}. */
static int load_added_tokens_json(xcap_tokenizer *t, const char *path, char *err, size_t errlen) {
    cJSON *root;
    int rc = parse_optional_json(path, &root, err, errlen);
    if (rc || !root) return rc;
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return xcap_fail(err, errlen, XCAP_ERR_FORMAT, "%s: expected an object of token -> id", path);
    }
    const cJSON *item;
    cJSON_ArrayForEach(item, root) {
        long id;
        if (!json_token_id(item, &id)) {
            rc = xcap_fail(err, errlen, XCAP_ERR_FORMAT, "%s: token \"%.60s\" has no integer id", path,
                           item->string);
            break;
        }
        rc = add_token(t, item->string, strlen(item->string), id, TOKEN_ADDED, path, err, errlen);
        if (rc) break;
    }
    cJSON_Delete(root);
    return rc;
}

/* The text of a special-token entry: "text", {"content": "text", ...}, or null (no token). */
static int special_content(const cJSON *v, const char **content) {
    *content = NULL;
    if (!v || cJSON_IsNull(v)) return 1;
    if (cJSON_IsString(v)) {
        *content = v->valuestring;
        return 1;
    }
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(v, "content");
    if (cJSON_IsObject(v) && cJSON_IsString(c)) {
        *content = c->valuestring;
        return 1;
    }
    return 0;
}

/* Marks a named special token. Text the vocabulary lacks becomes a new token at the next id, as
 * transformers appends it. */
static int mark_special(xcap_tokenizer *t, const char *content, int role, const char *what, char *err,
                        size_t errlen) {
    if (!content[0]) return xcap_fail(err, errlen, XCAP_ERR_FORMAT, "%s: empty special token", what);
    size_t n = strlen(content);
    int32_t id = find_token(t, content, n);
    if (id < 0) {
        id = t->n_ids;
        int rc = add_token(t, content, n, id, 0, what, err, errlen);
        if (rc) return rc;
    }
    t->tokens[id].flags |= TOKEN_SPECIAL | TOKEN_ADDED;
    if (role >= 0) t->role_id[role] = id;
    return XCAP_OK;
}

/* The special-token keys shared by tokenizer_config.json and special_tokens_map.json. */
static int load_special_keys(xcap_tokenizer *t, const cJSON *root, const char *path, char *err,
                             size_t errlen) {
    char what[WHAT_LEN];
    for (int r = 0; r < N_ROLES; r++) {
        const char *content;
        snprintf(what, sizeof what, "%s: %s", path, role_keys[r]);
        if (!special_content(cJSON_GetObjectItemCaseSensitive(root, role_keys[r]), &content))
            return xcap_fail(err, errlen, XCAP_ERR_FORMAT, "%s: expected a string, {\"content\": ...} or null",
                             what);
        if (content) {
            int rc = mark_special(t, content, r, what, err, errlen);
            if (rc) return rc;
        }
    }
    static const char *const list_keys[] = {"additional_special_tokens", "extra_special_tokens"};
    for (int k = 0; k < 2; k++) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(root, list_keys[k]), *v;
        if (!list || cJSON_IsNull(list)) continue;
        snprintf(what, sizeof what, "%s: %s", path, list_keys[k]);
        /* transformers 5 may write extra_special_tokens as {"name": token}; both list and map
         * hold the tokens as values. */
        if (!cJSON_IsArray(list) && !cJSON_IsObject(list))
            return xcap_fail(err, errlen, XCAP_ERR_FORMAT, "%s: expected a list", what);
        cJSON_ArrayForEach(v, list) {
            const char *content;
            if (!special_content(v, &content) || !content)
                return xcap_fail(err, errlen, XCAP_ERR_FORMAT, "%s: expected strings or {\"content\": ...}",
                                 what);
            int rc = mark_special(t, content, -1, what, err, errlen);
            if (rc) return rc;
        }
    }
    return XCAP_OK;
}

static int json_bool(const cJSON *root, const char *key, int *value, const char *path, char *err,
                     size_t errlen) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) return XCAP_OK;
    if (!cJSON_IsBool(v)) return xcap_fail(err, errlen, XCAP_ERR_FORMAT, "%s: %s is not true or false", path, key);
    *value = cJSON_IsTrue(v);
    return XCAP_OK;
}

static int load_tokenizer_config(xcap_tokenizer *t, const char *path, char *err, size_t errlen) {
    cJSON *root;
    int rc = parse_optional_json(path, &root, err, errlen);
    if (rc || !root) return rc;
    char what[WHAT_LEN];
    if (!cJSON_IsObject(root)) {
        rc = xcap_fail(err, errlen, XCAP_ERR_FORMAT, "%s: expected a JSON object", path);
        goto done;
    }
    const cJSON *decoder = cJSON_GetObjectItemCaseSensitive(root, "added_tokens_decoder"), *item;
    if (decoder && !cJSON_IsObject(decoder)) {
        rc = xcap_fail(err, errlen, XCAP_ERR_FORMAT, "%s: added_tokens_decoder is not an object", path);
        goto done;
    }
    cJSON_ArrayForEach(item, decoder) {
        snprintf(what, sizeof what, "%s: added_tokens_decoder[\"%.40s\"]", path, item->string);
        char *end;
        errno = 0;
        long id = strtol(item->string, &end, 10);
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(item, "content");
        const cJSON *special = cJSON_GetObjectItemCaseSensitive(item, "special");
        if (!item->string[0] || *end || errno || id < 0 || id > MAX_TOKEN_ID || !cJSON_IsString(content) ||
            !content->valuestring[0] || (special && !cJSON_IsBool(special))) {
            rc = xcap_fail(err, errlen, XCAP_ERR_FORMAT,
                           "%s: expected an integer key and {\"content\": string, \"special\": bool}", what);
            goto done;
        }
        rc = add_token(t, content->valuestring, strlen(content->valuestring), id,
                       TOKEN_ADDED | (cJSON_IsTrue(special) ? TOKEN_SPECIAL : 0), what, err, errlen);
        if (rc) goto done;
    }
    rc = load_special_keys(t, root, path, err, errlen);
    if (!rc) rc = json_bool(root, "clean_up_tokenization_spaces", &t->clean_up_spaces, path, err, errlen);
    if (!rc)
        rc = json_bool(root, "clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output",
                       &t->clean_up_force, path, err, errlen);
    if (!rc) rc = json_bool(root, "add_prefix_space", &t->add_prefix_space, path, err, errlen);
done:
    cJSON_Delete(root);
    return rc;
}

static int load_special_tokens_map(xcap_tokenizer *t, const char *path, char *err, size_t errlen) {
    cJSON *root;
    int rc = parse_optional_json(path, &root, err, errlen);
    if (rc || !root) return rc;
    if (!cJSON_IsObject(root))
        rc = xcap_fail(err, errlen, XCAP_ERR_FORMAT, "%s: expected a JSON object", path);
    else
        rc = load_special_keys(t, root, path, err, errlen);
    cJSON_Delete(root);
    return rc;
}

static xcap_tokenizer *tokenizer_new(void) {
    xcap_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    for (int r = 0; r < N_ROLES; r++) t->role_id[r] = -1;
    return t;
}

/* Last step of every load: GPT-2's end-of-text token is special whatever the config says
 * (spec §7), the single-byte tokens the BPE starts from, and the list encode_special matches. */
static int tokenizer_finish(xcap_tokenizer *t, char *err, size_t errlen) {
    int32_t eot = find_token(t, "<|endoftext|>", 13);
    if (eot >= 0) t->tokens[eot].flags |= TOKEN_SPECIAL | TOKEN_ADDED;
    for (int b = 0; b < 256; b++) {
        char s[4];
        uint32_t c = byte_to_char((uint8_t)b);
        size_t n = 1;
        if (c < 0x80)
            s[0] = (char)c;
        else {
            s[0] = (char)(0xC0 | (c >> 6));
            s[1] = (char)(0x80 | (c & 0x3F));
            n = 2;
        }
        t->byte_token[b] = find_token(t, s, n);
    }
    int n_added = 0;
    for (int id = 0; id < t->n_ids; id++) n_added += (t->tokens[id].flags & TOKEN_ADDED) != 0;
    if (n_added) {
        t->added = malloc((size_t)n_added * sizeof *t->added);
        if (!t->added) return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "tokenizer: out of memory");
        for (int id = 0; id < t->n_ids; id++)
            if (t->tokens[id].flags & TOKEN_ADDED) t->added[t->n_added++] = id;
        /* insertion sort, longest text first, so that the first match is the longest */
        for (int i = 1; i < t->n_added; i++) {
            int32_t id = t->added[i];
            int j = i;
            while (j > 0 && t->tokens[t->added[j - 1]].str_len < t->tokens[id].str_len) {
                t->added[j] = t->added[j - 1];
                j--;
            }
            t->added[j] = id;
        }
    }
    return XCAP_OK;
}

int tokenizer_load_files(const char *vocab_json, const char *merges_txt, xcap_tokenizer **out,
                         char *err, size_t errlen) {
    *out = NULL;
    xcap_tokenizer *t = tokenizer_new();
    if (!t) return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "%s: out of memory", vocab_json);
    int rc = load_vocab_json(t, vocab_json, err, errlen);
    if (!rc) rc = load_merges_txt(t, merges_txt, err, errlen);
    if (!rc) rc = tokenizer_finish(t, err, errlen);
    if (rc) {
        tokenizer_free(t);
        return rc;
    }
    *out = t;
    return XCAP_OK;
}

int tokenizer_load_tokenizer_json(const char *path, xcap_tokenizer **out, char *err, size_t errlen) {
    *out = NULL;
    xcap_tokenizer *t = tokenizer_new();
    if (!t) return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "%s: out of memory", path);
    int rc = load_tokenizer_json_into(t, path, err, errlen);
    if (!rc) rc = tokenizer_finish(t, err, errlen);
    if (rc) {
        tokenizer_free(t);
        return rc;
    }
    *out = t;
    return XCAP_OK;
}

int tokenizer_load(const char *model_dir, xcap_tokenizer **out, char *err, size_t errlen) {
    *out = NULL;
    if (!model_dir) return xcap_fail(err, errlen, XCAP_ERR_ARG, "tokenizer_load: no model directory");
    char path[4096];
    xcap_tokenizer *t = tokenizer_new();
    if (!t) return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "%s: out of memory", model_dir);
    int rc = xcap_join_path(path, sizeof path, model_dir, "tokenizer.json", err, errlen);
    if (rc) goto fail;
    if (file_exists(path)) {
        rc = load_tokenizer_json_into(t, path, err, errlen);
    } else {
        rc = xcap_join_path(path, sizeof path, model_dir, "vocab.json", err, errlen);
        if (!rc && !file_exists(path))
            rc = xcap_fail(err, errlen, XCAP_ERR_IO, "%s: no such file (and no tokenizer.json)", path);
        if (!rc) rc = load_vocab_json(t, path, err, errlen);
        if (!rc) rc = xcap_join_path(path, sizeof path, model_dir, "merges.txt", err, errlen);
        if (!rc) rc = load_merges_txt(t, path, err, errlen);
    }
    if (!rc) rc = xcap_join_path(path, sizeof path, model_dir, "added_tokens.json", err, errlen);
    if (!rc) rc = load_added_tokens_json(t, path, err, errlen);
    if (!rc) rc = xcap_join_path(path, sizeof path, model_dir, "tokenizer_config.json", err, errlen);
    if (!rc) rc = load_tokenizer_config(t, path, err, errlen);
    if (!rc) rc = xcap_join_path(path, sizeof path, model_dir, "special_tokens_map.json", err, errlen);
    if (!rc) rc = load_special_tokens_map(t, path, err, errlen);
    if (!rc) rc = tokenizer_finish(t, err, errlen);
    if (rc) goto fail;
    *out = t;
    return XCAP_OK;
fail:
    tokenizer_free(t);
    return rc;
}

void tokenizer_free(xcap_tokenizer *t) {
    if (!t) return;
    free(t->tokens);
    free(t->arena);
    free(t->index);
    free(t->merges);
    free(t->added);
    free(t);
}

/* ---------------------------------------------------------------------------------------- */
/* Queries */

static int has_token(const xcap_tokenizer *t, int id) {
    return id >= 0 && id < t->n_ids && (t->tokens[id].flags & TOKEN_PRESENT);
}

int tokenizer_vocab_size(const xcap_tokenizer *t) { return t->n_ids; }

int tokenizer_token_id(const xcap_tokenizer *t, const char *token_utf8) {
    return token_utf8 ? find_token(t, token_utf8, strlen(token_utf8)) : -1;
}

int tokenizer_is_special(const xcap_tokenizer *t, int id) {
    return has_token(t, id) && (t->tokens[id].flags & TOKEN_SPECIAL) != 0;
}

int tokenizer_role_id(const xcap_tokenizer *t, const char *role) {
    if (!role) return -1;
    for (int r = 0; r < N_ROLES; r++) {
        size_t n = strlen(role);
        if (strncmp(role_keys[r], role, n) == 0 && strcmp(role_keys[r] + n, "_token") == 0)
            return t->role_id[r];
    }
    return -1;
}

int tokenizer_clean_up_spaces(const xcap_tokenizer *t) {
    return t->clean_up_spaces && t->clean_up_force;
}

int tokenizer_token_bytes(const xcap_tokenizer *t, int id, const char **bytes, int *len) {
    if (!has_token(t, id)) return XCAP_ERR_ARG;
    *bytes = t->arena + t->tokens[id].bytes_off;
    *len = (int)t->tokens[id].bytes_len;
    return XCAP_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* Pre-tokenizer: GPT-2's pattern, by hand (spec §7) */

static unicode_class ascii_class(uint8_t b) {
    if ((b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z')) return UNICODE_LETTER;
    if (b >= '0' && b <= '9') return UNICODE_NUMBER;
    if (b == ' ' || (b >= 9 && b <= 13)) return UNICODE_SPACE;
    return UNICODE_OTHER;
}

/* Class and byte length of the character at s[i]. A byte that does not start well-formed UTF-8
 * is a one-byte character of class other: it then groups like punctuation and round-trips. */
static unicode_class char_at(const uint8_t *s, size_t len, size_t i, size_t *n) {
    if (s[i] < 0x80) {
        *n = 1;
        return ascii_class(s[i]);
    }
    uint32_t cp;
    *n = utf8_decode(s + i, len - i, &cp);
    if (*n == 0) {
        *n = 1;
        return UNICODE_OTHER;
    }
    return unicode_classify(cp);
}

/* End of the piece that starts at i: the first alternative of
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * that matches there, as a backtracking regex engine picks it. */
static size_t next_piece(const uint8_t *s, size_t len, size_t i) {
    if (s[i] == '\'' && i + 1 < len) {
        uint8_t a = s[i + 1], b = i + 2 < len ? s[i + 2] : 0;
        if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
        if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
    }
    size_t n0;
    unicode_class cls = char_at(s, len, i, &n0);
    size_t run_start = i, step = n0;
    if (s[i] == ' ' && i + 1 < len) { /* the optional space of " ?\p{L}+" and its siblings */
        size_t n1;
        unicode_class next = char_at(s, len, i + 1, &n1);
        if (next != UNICODE_SPACE) {
            cls = next;
            run_start = i + 1;
            step = n1;
        }
    }
    if (cls != UNICODE_SPACE) {
        size_t k = run_start + step, n;
        while (k < len && char_at(s, len, k, &n) == cls) k += n;
        return k;
    }
    /* White space: "\s+(?!\S)" backs off one character so that the last space before a word
     * starts the next piece (" world"); a lone white space character before a non-space falls
     * through to "\s+". */
    size_t last = i, k = i + n0, n;
    while (k < len && char_at(s, len, k, &n) == UNICODE_SPACE) {
        last = k;
        k += n;
    }
    if (k == len || last == i) return k;
    return last;
}

/* ---------------------------------------------------------------------------------------- */
/* BPE */

/* A pair of adjacent symbols that a merge could join. */
typedef struct {
    uint32_t rank;
    int32_t left, right;       /* symbol positions */
    int32_t left_id, right_id; /* their tokens when the pair was seen (to spot stale pairs) */
    int32_t merged;
} pair_candidate;

/* Scratch space of one encode call, grown to the longest piece. */
typedef struct {
    int32_t *id, *prev, *next; /* symbols, as a doubly linked list over positions */
    pair_candidate *heap, *pending;
    size_t heap_len, n_pending, cap;
} bpe_work;

static int work_reserve(bpe_work *w, size_t n) {
    if (n <= w->cap) return XCAP_OK;
    size_t cap = w->cap ? w->cap : 64;
    while (cap < n) cap *= 2;
    int32_t *id = realloc(w->id, cap * sizeof *id);
    if (id) w->id = id;
    int32_t *prev = realloc(w->prev, cap * sizeof *prev);
    if (prev) w->prev = prev;
    int32_t *next = realloc(w->next, cap * sizeof *next);
    if (next) w->next = next;
    /* every merge retires one pair and adds at most two: fewer than 3n candidates in all */
    pair_candidate *heap = realloc(w->heap, 3 * cap * sizeof *heap);
    if (heap) w->heap = heap;
    pair_candidate *pending = realloc(w->pending, 2 * cap * sizeof *pending);
    if (pending) w->pending = pending;
    if (!id || !prev || !next || !heap || !pending) return XCAP_ERR_NOMEM;
    w->cap = cap;
    return XCAP_OK;
}

static void work_free(bpe_work *w) {
    free(w->id);
    free(w->prev);
    free(w->next);
    free(w->heap);
    free(w->pending);
}

static int candidate_before(const pair_candidate *a, const pair_candidate *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

static void heap_push(bpe_work *w, pair_candidate c) {
    size_t i = w->heap_len++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!candidate_before(&c, &w->heap[parent])) break;
        w->heap[i] = w->heap[parent];
        i = parent;
    }
    w->heap[i] = c;
}

static pair_candidate heap_pop(bpe_work *w) {
    pair_candidate top = w->heap[0], last = w->heap[--w->heap_len];
    size_t i = 0, n = w->heap_len;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= n) break;
        if (child + 1 < n && candidate_before(&w->heap[child + 1], &w->heap[child])) child++;
        if (!candidate_before(&w->heap[child], &last)) break;
        w->heap[i] = w->heap[child];
        i = child;
    }
    if (n) w->heap[i] = last;
    return top;
}

/* The candidate for symbols left, right if a merge joins their tokens. */
static int make_candidate(const xcap_tokenizer *t, const bpe_work *w, int32_t left, int32_t right,
                          pair_candidate *c) {
    const merge_slot *m = find_merge(t, w->id[left], w->id[right]);
    if (!m) return 0;
    *c = (pair_candidate){m->rank, left, right, w->id[left], w->id[right], m->merged};
    return 1;
}

static int candidate_current(const bpe_work *w, const pair_candidate *c) {
    return w->id[c->left] == c->left_id && w->next[c->left] == c->right && w->id[c->right] == c->right_id;
}

static void apply_merge(const xcap_tokenizer *t, bpe_work *w, const pair_candidate *c) {
    int32_t l = c->left, r = c->right, after = w->next[r];
    w->id[l] = c->merged;
    w->id[r] = -1;
    w->next[l] = after;
    if (after >= 0) w->prev[after] = l;
    /* New neighbours wait until every pair of this rank is merged (see bpe_piece). */
    pair_candidate fresh;
    if (w->prev[l] >= 0 && make_candidate(t, w, w->prev[l], l, &fresh)) w->pending[w->n_pending++] = fresh;
    if (after >= 0 && make_candidate(t, w, l, after, &fresh)) w->pending[w->n_pending++] = fresh;
}

typedef struct {
    int32_t *ids;
    int cap;
    long long count;
} id_sink;

static void sink_put(id_sink *out, int32_t id) {
    if (out->count < out->cap) out->ids[out->count] = id;
    out->count++;
}

/* BPE over the bytes of one piece. Semantics of spec §7 and transformers' Python
 * GPT2Tokenizer.bpe: take the pair with the lowest merge rank, merge all its occurrences left to
 * right, repeat. A heap keyed on (rank, position) finds them in O(n log n): a long run of letters
 * costs no more than its size. Pairs made by a merge wait until that rank is done (the
 * "pending" list); HF tokenizers' Rust BPE queues them at once, which differs only for merges
 * files where a merge ranks before a merge that makes one of its parts (never in trained files
 * such as GPT-2's; test_bpe_order shows such a case). */
static int bpe_piece(const xcap_tokenizer *t, const uint8_t *p, size_t n, bpe_work *w, id_sink *out,
                     char *err, size_t errlen) {
    for (size_t k = 0; k < n; k++)
        if (t->byte_token[p[k]] < 0)
            return xcap_fail(err, errlen, XCAP_ERR_MODEL, "tokenizer: byte 0x%02X has no token in the vocabulary",
                             p[k]);
    if (n == 1) {
        sink_put(out, t->byte_token[p[0]]);
        return XCAP_OK;
    }
    if (n > INT32_MAX / 4 || work_reserve(w, n))
        return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "tokenizer: out of memory for a %zu-byte piece", n);
    for (size_t k = 0; k < n; k++) {
        w->id[k] = t->byte_token[p[k]];
        w->prev[k] = (int32_t)k - 1;
        w->next[k] = k + 1 < n ? (int32_t)k + 1 : -1;
    }
    w->heap_len = w->n_pending = 0;
    for (size_t k = 0; k + 1 < n; k++) {
        pair_candidate c;
        if (make_candidate(t, w, (int32_t)k, (int32_t)k + 1, &c)) heap_push(w, c);
    }
    while (w->heap_len) {
        pair_candidate c = heap_pop(w);
        if (!candidate_current(w, &c)) continue;
        uint32_t rank = c.rank;
        apply_merge(t, w, &c);
        while (w->heap_len && w->heap[0].rank == rank) {
            c = heap_pop(w);
            if (candidate_current(w, &c)) apply_merge(t, w, &c);
        }
        for (size_t k = 0; k < w->n_pending; k++) heap_push(w, w->pending[k]);
        w->n_pending = 0;
    }
    for (int32_t k = 0; k >= 0; k = w->next[k]) sink_put(out, w->id[k]);
    return XCAP_OK;
}

/* One stretch of plain text (no added tokens in it). add_prefix: HF's ByteLevel pre-tokenizer
 * with add_prefix_space puts a space before every such stretch that does not start with one;
 * an empty stretch yields nothing (HF drops empty splits before pre-tokenizing). */
static int encode_plain(const xcap_tokenizer *t, const uint8_t *s, size_t len, int add_prefix, bpe_work *w,
                        id_sink *out, char *err, size_t errlen) {
    if (len == 0) return XCAP_OK;
    uint8_t *prefixed = NULL;
    if (add_prefix && s[0] != ' ') {
        prefixed = malloc(len + 1);
        if (!prefixed) return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "tokenizer: out of memory");
        prefixed[0] = ' ';
        memcpy(prefixed + 1, s, len);
        s = prefixed;
        len++;
    }
    int rc = XCAP_OK;
    for (size_t i = 0; i < len && rc == XCAP_OK;) {
        size_t end = next_piece(s, len, i);
        rc = bpe_piece(t, s + i, end - i, w, out, err, errlen);
        i = end;
    }
    free(prefixed);
    return rc;
}

/* Shared by both encoders. with_special: cut the text at added-token strings first. */
static int encode(const xcap_tokenizer *t, const char *text, size_t len, int with_special, int32_t *ids,
                  int cap, int *n_ids, char *err, size_t errlen) {
    if (n_ids) *n_ids = 0;
    if (!t || !n_ids || (!text && len) || cap < 0 || (cap > 0 && !ids))
        return xcap_fail(err, errlen, XCAP_ERR_ARG, "tokenizer_encode: bad arguments");
    const uint8_t *s = (const uint8_t *)text;
    bpe_work w = {0};
    id_sink out = {ids, cap, 0};
    int rc = XCAP_OK;
    size_t start = 0;
    if (with_special && t->n_added) {
        for (size_t i = 0; i < len && rc == XCAP_OK;) {
            int32_t hit = -1;
            for (int k = 0; k < t->n_added && hit < 0; k++) {
                size_t n;
                const char *str = token_str(t, t->added[k], &n);
                if (n && n <= len - i && memcmp(s + i, str, n) == 0) hit = t->added[k];
            }
            if (hit < 0) {
                i++;
                continue;
            }
            rc = encode_plain(t, s + start, i - start, t->add_prefix_space, &w, &out, err, errlen);
            sink_put(&out, hit);
            i += t->tokens[hit].str_len;
            start = i;
        }
    }
    if (rc == XCAP_OK) rc = encode_plain(t, s + start, len - start, t->add_prefix_space, &w, &out, err, errlen);
    work_free(&w);
    if (rc) return rc;
    if (out.count > INT_MAX)
        return xcap_fail(err, errlen, XCAP_ERR_ARG, "tokenizer_encode: %lld tokens is more than an int holds",
                         out.count);
    *n_ids = (int)out.count;
    return XCAP_OK;
}

int tokenizer_encode(const xcap_tokenizer *t, const char *text, size_t len, int32_t *ids, int cap,
                     int *n_ids, char *err, size_t errlen) {
    return encode(t, text, len, 0, ids, cap, n_ids, err, errlen);
}

int tokenizer_encode_special(const xcap_tokenizer *t, const char *text, size_t len, int32_t *ids,
                             int cap, int *n_ids, char *err, size_t errlen) {
    return encode(t, text, len, 1, ids, cap, n_ids, err, errlen);
}

/* ---------------------------------------------------------------------------------------- */
/* Decoding */

/* Python's str.replace: every non-overlapping occurrence, left to right. to is not longer
 * than from, so it works in place. */
static void replace_all(char *s, const char *from, const char *to) {
    size_t fn = strlen(from), tn = strlen(to);
    char *r = s, *w = s;
    while (*r) {
        if (strncmp(r, from, fn) == 0) {
            memcpy(w, to, tn);
            w += tn;
            r += fn;
        } else {
            *w++ = *r++;
        }
    }
    *w = '\0';
}

void tokenizer_clean_up_text(char *text) {
    static const char *const rules[][2] = {{" .", "."},   {" ?", "?"},     {" !", "!"},
                                           {" ,", ","},   {" ' ", "'"},    {" n't", "n't"},
                                           {" 'm", "'m"}, {" 's", "'s"},   {" 've", "'ve"},
                                           {" 're", "'re"}};
    if (!text) return;
    for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++) replace_all(text, rules[i][0], rules[i][1]);
}

int tokenizer_decode_bytes(const xcap_tokenizer *t, const int32_t *ids, int n, int skip_special,
                           char **out, size_t *len, char *err, size_t errlen) {
    if (out) *out = NULL;
    if (len) *len = 0;
    if (!t || !out || !len || n < 0 || (n > 0 && !ids))
        return xcap_fail(err, errlen, XCAP_ERR_ARG, "tokenizer_decode: bad arguments");
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        if (!has_token(t, ids[i]))
            return xcap_fail(err, errlen, XCAP_ERR_ARG,
                             "tokenizer_decode: token id %d (position %d) is not in the vocabulary (0..%d)",
                             ids[i], i, t->n_ids - 1);
        if (!(skip_special && (t->tokens[ids[i]].flags & TOKEN_SPECIAL))) total += t->tokens[ids[i]].bytes_len;
    }
    char *bytes = malloc(total + 1);
    if (!bytes) return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "tokenizer_decode: out of memory");
    size_t nb = 0;
    for (int i = 0; i < n; i++) {
        const token_entry *e = &t->tokens[ids[i]];
        if (skip_special && (e->flags & TOKEN_SPECIAL)) continue;
        memcpy(bytes + nb, t->arena + e->bytes_off, e->bytes_len);
        nb += e->bytes_len;
    }
    bytes[nb] = '\0';
    *out = bytes;
    *len = nb;
    return XCAP_OK;
}

int tokenizer_decode(const xcap_tokenizer *t, const int32_t *ids, int n, int skip_special, char **out,
                     char *err, size_t errlen) {
    if (out) *out = NULL;
    char *raw;
    size_t nb;
    int rc = tokenizer_decode_bytes(t, ids, n, skip_special, &raw, &nb, err, errlen);
    if (rc) return rc;
    /* Joined bytes first, then U+FFFD for what is not UTF-8: a character split over two tokens
     * decodes whole, as in HF's ByteLevel decoder. */
    const uint8_t *bytes = (const uint8_t *)raw;
    char *text = malloc(3 * nb + 1); /* an invalid byte (1) becomes U+FFFD (3) */
    if (!text) {
        free(raw);
        return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "tokenizer_decode: out of memory");
    }
    size_t w = 0;
    for (size_t i = 0; i < nb;) {
        uint32_t cp;
        size_t k = utf8_decode(bytes + i, nb - i, &cp);
        if (k) {
            memcpy(text + w, bytes + i, k);
            w += k;
            i += k;
        } else {
            memcpy(text + w, "\xEF\xBF\xBD", 3);
            w += 3;
            i += utf8_bad_len(bytes + i, nb - i);
        }
    }
    text[w] = '\0';
    free(raw);
    if (tokenizer_clean_up_spaces(t)) tokenizer_clean_up_text(text);
    *out = text;
    return XCAP_OK;
}
