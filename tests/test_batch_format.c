/* The pieces of `xcap batch` that are plain functions: UTF-8 checks, base64, CSV writing and
 * parsing (every torn prefix of a record must read as incomplete: that is what resuming after a
 * kill relies on), numbers printed as cJSON prints them, file selection, sidecar names.
 * The tool's sources are compiled in here because they are not part of the library. */
#define _GNU_SOURCE
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#include "cmd/batch_format.c"
#include "cmd/batch_walk.c"
#include "cmd/result_json.c"

static void test_utf8(void) {
    static const struct {
        const char *s;
        int valid;
    } cases[] = {
        {"plain ascii", 1},        {"caf\xc3\xa9", 1},       {"\xe2\x98\x83 snowman", 1}, {"\xf0\x9f\x98\x80", 1},
        {"caf\xe9", 0},            {"\xc0\x80", 0},          {"\xe0\x80\xaf", 0},         {"\xed\xa0\x80", 0},
        {"\xf4\x90\x80\x80", 0},   {"\xe2\x98", 0},          {"\xff\xfe", 0},             {"\x80", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        CHECK(utf8_valid(cases[i].s, strlen(cases[i].s)) == cases[i].valid, "utf8_valid case %zu", i);
    char *s = utf8_sanitize("a\xff" "b\xe2\x98", 5);
    CHECK(s && !strcmp(s, "a\xef\xbf\xbd" "b\xef\xbf\xbd\xef\xbf\xbd"), "sanitize: '%s'", s ? s : "(null)");
    CHECK(s && utf8_valid(s, strlen(s)), "sanitized text is UTF-8");
    free(s);
}

static void test_base64(void) {
    /* RFC 4648 section 10 */
    static const char *plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *coded[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (int i = 0; i < 7; i++) {
        char *e = base64_encode((const uint8_t *)plain[i], strlen(plain[i]));
        CHECK(e && !strcmp(e, coded[i]), "encode '%s': '%s'", plain[i], e ? e : "(null)");
        size_t n = 0;
        uint8_t *d = base64_decode(coded[i], &n);
        CHECK(d && n == strlen(plain[i]) && !memcmp(d, plain[i], n), "decode '%s'", coded[i]);
        free(e);
        free(d);
    }
    uint64_t rng = 7;
    for (size_t len = 0; len < 40; len++) {
        uint8_t bytes[40];
        for (size_t i = 0; i < len; i++) bytes[i] = (uint8_t)(test_rng_next(&rng) >> 56);
        char *e = base64_encode(bytes, len);
        size_t n = 0;
        uint8_t *d = e ? base64_decode(e, &n) : NULL;
        CHECK(d && n == len && !memcmp(d, bytes, len), "round trip of %zu random bytes", len);
        free(e);
        free(d);
    }
    static const char *bad[] = {"Zg=", "Z===", "Zg==Zg==", "Zm9v!A==", "=Zm9", "Zm=v"};
    for (int i = 0; i < 6; i++) {
        size_t n;
        uint8_t *d = base64_decode(bad[i], &n);
        CHECK(d == NULL, "'%s' is not base64", bad[i]);
        free(d);
    }
}

/* A result with two hypotheses, as the library returns them. */
static void fake_result(xcap_result *r, const char *text0, const char *text1) {
    static int32_t tokens0[] = {11, 22, 33}, tokens1[] = {44};
    r->n_hyps = 2;
    r->hyps = calloc(2, sizeof *r->hyps);
    r->hyps[0] = (xcap_hypothesis){tokens0, 3, -1.25f, -0.4166666f, strdup(text0), NULL};
    r->hyps[1] = (xcap_hypothesis){tokens1, 1, -2.5f, -2.5f, strdup(text1), NULL};
    r->encoder_attention = NULL;
}

static void free_fake(xcap_result *r) {
    for (int i = 0; i < r->n_hyps; i++) free(r->hyps[i].text);
    free(r->hyps);
}

static void test_csv(void) {
    const char *path = "dir/it's \"quoted\", ok\nline2.png";
    xcap_result r;
    fake_result(&r, " a cat, \"sitting\" ", "second");
    char *line = batch_csv_line(path, 640, 480, &r, NULL, 2);
    char **f = NULL;
    int nf = 0;
    long used = line ? csv_parse_record(line, strlen(line), &f, &nf) : -1;
    CHECK(line && used == (long)strlen(line), "one complete record: used %ld of %zu", used, line ? strlen(line) : 0);
    CHECK(nf == 11, "11 fields with --n-best 2, got %d", nf);
    if (nf == 11) {
        CHECK(!strcmp(f[0], path), "path field: '%s'", f[0]);
        CHECK(!strcmp(f[1], ""), "no base64 for a UTF-8 path");
        CHECK(!strcmp(f[2], "640") && !strcmp(f[3], "480"), "size fields");
        CHECK(!strcmp(f[4], "a cat, \"sitting\""), "caption stripped and intact: '%s'", f[4]);
        CHECK(!strcmp(f[7], "11 22 33"), "tokens: '%s'", f[7]);
        CHECK(!strcmp(f[8], ""), "no error");
        CHECK(!strcmp(f[9], "second") && !strcmp(f[10], "-2.5"), "second hypothesis: '%s' '%s'", f[9], f[10]);
    }
    csv_free_fields(f, nf);
    /* Every torn prefix is incomplete, never a shorter record. */
    int torn_ok = 1;
    for (size_t k = 0; line && k < strlen(line); k++) {
        long u = csv_parse_record(line, k, &f, &nf);
        if (u != 0) torn_ok = 0;
        if (u > 0) csv_free_fields(f, nf);
    }
    CHECK(torn_ok, "every prefix of a CSV record reads as incomplete");
    free(line);
    free_fake(&r);

    char *err_line = batch_csv_line("caf\xe9.png", 0, 0, NULL, "caf\xe9.png: truncated", 1);
    used = err_line ? csv_parse_record(err_line, strlen(err_line), &f, &nf) : -1;
    CHECK(used > 0 && nf == 9, "error record: %d fields", nf);
    if (used > 0 && nf == 9) {
        CHECK(!strcmp(f[0], "caf\xef\xbf\xbd.png"), "path shown with U+FFFD: '%s'", f[0]);
        CHECK(!strcmp(f[1], "Y2Fm6S5wbmc="), "path_base64: '%s'", f[1]);
        CHECK(!strcmp(f[2], "") && !strcmp(f[4], "") && !strcmp(f[8], "caf\xef\xbf\xbd.png: truncated"), "error field: '%s'",
              f[8]);
        csv_free_fields(f, nf);
    }
    free(err_line);

    static const struct {
        const char *text;
        long used;
        int n;
    } parse[] = {
        {"a,b\n", 4, 2}, {"a,b\r\n", 5, 2}, {"\"a\"\"b\",\"\"\n", 10, 2}, {",\n", 2, 2}, {"\n", 1, 1},
        {"a,b", 0, 0},   {"\"a\nb\"", 0, 0}, {"\"a\"x,b\n", -1, 0},     {"\"ab\"\r", 0, 0},
    };
    for (size_t i = 0; i < sizeof parse / sizeof *parse; i++) {
        long u = csv_parse_record(parse[i].text, strlen(parse[i].text), &f, &nf);
        CHECK(u == parse[i].used && (u <= 0 || nf == parse[i].n), "parse case %zu: used %ld, %d fields", i, u, nf);
        if (u > 0) csv_free_fields(f, nf);
    }
    char *header = batch_csv_header(3);
    CHECK(header && !strcmp(header, "path,path_base64,width,height,caption,score,sum_logprob,tokens,error,caption_2,score_2,"
                                    "caption_3,score_3\n"),
          "header: %s", header ? header : "(null)");
    free(header);
}

static void test_jsonl(void) {
    xcap_result r;
    fake_result(&r, "a dog ", "b");
    char *line = batch_jsonl_line("x/\xff.png", 3, 4, &r, NULL);
    CHECK(line && strchr(line, '\n') == line + strlen(line) - 1, "one line, ending in a newline");
    cJSON *o = line ? cJSON_Parse(line) : NULL;
    CHECK(o != NULL, "parses: %s", line ? line : "(null)");
    if (o) {
        CHECK(!strcmp(cJSON_GetObjectItem(o, "path")->valuestring, "x/\xef\xbf\xbd.png"), "path shown");
        CHECK(!strcmp(cJSON_GetObjectItem(o, "path_base64")->valuestring, "eC//LnBuZw=="), "path_base64");
        CHECK(!strcmp(cJSON_GetObjectItem(o, "caption")->valuestring, "a dog"), "caption");
        CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(o, "n_best")) == 2, "n_best");
        CHECK(cJSON_GetObjectItem(o, "width")->valueint == 3, "width");
    }
    cJSON_Delete(o);
    free(line);
    free_fake(&r);
    line = batch_jsonl_line("ok.png", 0, 0, NULL, "ok.png: empty file");
    CHECK(line && !strcmp(line, "{\"path\":\"ok.png\",\"error\":\"ok.png: empty file\"}\n"), "error line: %s",
          line ? line : "(null)");
    free(line);
}

static void test_numbers(void) {
    /* CSV numbers must read back to the same double as the JSON ones. */
    static const double values[] = {0, 1, -3, 2147483647.0, -2147483648.0, 1e300, -0.4166666567325592,
                                    -4.8191876411437988, 1.0 / 3.0, 123456.789, -1e-9};
    for (size_t i = 0; i < sizeof values / sizeof *values; i++) {
        char mine[64];
        batch_format_number(mine, sizeof mine, values[i]);
        cJSON *n = cJSON_CreateNumber(values[i]);
        char *theirs = cJSON_PrintUnformatted(n);
        CHECK(theirs && !strcmp(mine, theirs), "%.17g: '%s' vs cJSON '%s'", values[i], mine, theirs ? theirs : "");
        free(theirs);
        cJSON_Delete(n);
    }
}

static void test_selection(void) {
    batch_walk_options none = {0};
    CHECK(batch_name_selected(&none, "a.png", "a.png"), "png");
    CHECK(batch_name_selected(&none, "A.JpEg", "A.JpEg"), "extensions ignore case");
    CHECK(!batch_name_selected(&none, "a.webp", "a.webp"), "webp is not decoded");
    CHECK(!batch_name_selected(&none, ".png", ".png"), "a bare extension is not a name");
    CHECK(!batch_name_selected(&none, "png", "png"), "no extension");
    const char *inc[] = {"*.webp", "sub/*.TXT"}, *exc[] = {"skip*"};
    batch_walk_options some = {.include = inc, .n_include = 2, .exclude = exc, .n_exclude = 1};
    CHECK(batch_name_selected(&some, "x.webp", "deep/x.webp"), "include by name");
    CHECK(!batch_name_selected(&some, "x.png", "x.png"), "include replaces the default");
    CHECK(batch_name_selected(&some, "n.txt", "sub/n.txt"), "a pattern with '/' matches the path");
    CHECK(!batch_name_selected(&some, "n.txt", "other/n.txt"), "... only that path");
    CHECK(!batch_name_selected(&some, "skip.webp", "skip.webp"), "exclude wins");
}

static void test_sidecars(void) {
    static const char *paths[] = {"r/a.png", "r/a.jpg", "r/b.png", "r/sub/c.gif", "r/.hidden.png", "r/d"};
    batch_list list = {0};
    list.n = 6;
    list.items = calloc(6, sizeof *list.items);
    for (int i = 0; i < 6; i++) {
        list.items[i].path = strdup(paths[i]);
        list.items[i].rel = list.items[i].path + 2;
    }
    char err[256];
    CHECK(batch_assign_sidecars(&list, NULL, err, sizeof err) == 0, "beside: %s", err);
    static const char *beside[] = {"r/a.png.txt", "r/a.jpg.txt", "r/b.txt", "r/sub/c.txt", "r/.hidden.txt", "r/d.txt"};
    for (int i = 0; i < 6; i++)
        CHECK(!strcmp(list.items[i].sidecar, beside[i]), "%s -> %s, expected %s", paths[i], list.items[i].sidecar, beside[i]);
    for (int i = 0; i < 6; i++) free(list.items[i].sidecar), list.items[i].sidecar = NULL;
    CHECK(batch_assign_sidecars(&list, "out/", err, sizeof err) == 0, "out-dir: %s", err);
    CHECK(!strcmp(list.items[3].sidecar, "out/sub/c.txt"), "mirrored: %s", list.items[3].sidecar);
    CHECK(!strcmp(list.items[0].sidecar, "out/a.png.txt"), "mirrored collision: %s", list.items[0].sidecar);
    batch_list_free(&list);

    /* two arguments with the same file under them: no name can separate them */
    list.n = 2;
    list.items = calloc(2, sizeof *list.items);
    list.items[0].path = strdup("one/a.png");
    list.items[1].path = strdup("two/a.png");
    for (int i = 0; i < 2; i++) list.items[i].rel = list.items[i].path + 4;
    CHECK(batch_assign_sidecars(&list, "out", err, sizeof err) != 0 && strstr(err, "would both write out/a.png.txt"),
          "collision reported: %s", err);
    batch_list_free(&list);
}

int main(void) {
    test_utf8();
    test_base64();
    test_csv();
    test_jsonl();
    test_numbers();
    test_selection();
    test_sidecars();
    return harness_finish("test_batch_format");
}
