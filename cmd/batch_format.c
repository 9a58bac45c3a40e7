/* Records of `xcap batch`: a JSONL line, a CSV row, or a sidecar text file per image.
 *
 * Paths are bytes on Linux, JSON and CSV text are UTF-8. A path that is valid UTF-8 is written
 * as it is. One that is not is written twice: "path" with each stray byte replaced by U+FFFD
 * (readable, but no longer unique) and "path_base64" with the exact bytes, base64-encoded
 * (RFC 4648, with padding). Readers that need the file take path_base64 when it is present;
 * resuming does the same. */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <fcntl.h>

#include <cjson/cJSON.h>

#include "cmd/strbuf.h"
#include "cmd/batch.h"
#include "cmd/result_json.h"

void batch_record_clear(batch_record *r) {
    free(r->path);
    free(r->caption);
    free(r->error);
    memset(r, 0, sizeof *r);
}

/* Length of the valid UTF-8 sequence at s (1-4), or 0 when the byte there starts none: no
 * overlong forms, no surrogates, nothing above U+10FFFF (RFC 3629). */
static size_t utf8_sequence(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    size_t len;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else {
        return 0;
    }
    if (n < len) return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xBF) return 0;
    return len;
}

int utf8_valid(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t len = utf8_sequence(u + i, n - i);
        if (!len) return 0;
        i += len;
    }
    return 1;
}

char *utf8_sanitize(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    char *out = malloc(3 * n + 1); /* each stray byte grows to the 3 bytes of U+FFFD */
    if (!out) return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t len = utf8_sequence(u + i, n - i);
        if (len) {
            memcpy(out + o, s + i, len);
            o += len;
            i += len;
        } else {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        }
    }
    out[o] = '\0';
    return out;
}

static const char b64_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *base64_encode(const uint8_t *d, size_t n) {
    char *out = malloc(4 * ((n + 2) / 3) + 1);
    if (!out) return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)d[i] << 16;
        if (i + 1 < n) v |= (uint32_t)d[i + 1] << 8;
        if (i + 2 < n) v |= d[i + 2];
        out[o++] = b64_alphabet[(v >> 18) & 63];
        out[o++] = b64_alphabet[(v >> 12) & 63];
        out[o++] = i + 1 < n ? b64_alphabet[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? b64_alphabet[v & 63] : '=';
    }
    out[o] = '\0';
    return out;
}

uint8_t *base64_decode(const char *s, size_t *n) {
    size_t len = strlen(s);
    if (len % 4) return NULL;
    uint8_t *out = malloc(len / 4 * 3 + 1);
    if (!out) return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 4) {
        uint32_t v = 0;
        int pad = 0;
        for (int k = 0; k < 4; k++) {
            const char c = s[i + k];
            const char *at = c ? strchr(b64_alphabet, c) : NULL;
            /* '=' only as the last one or two characters of the text */
            if (c == '=' && i + 4 == len && (k == 3 || (k == 2 && s[i + 3] == '='))) {
                pad++;
                v <<= 6;
            } else if (at && !pad) {
                v = (v << 6) | (uint32_t)(at - b64_alphabet);
            } else {
                free(out);
                return NULL;
            }
        }
        out[o++] = (uint8_t)(v >> 16);
        if (pad < 2) out[o++] = (uint8_t)(v >> 8);
        if (pad < 1) out[o++] = (uint8_t)v;
    }
    out[o] = '\0';
    *n = o;
    return out;
}

void batch_format_number(char *out, size_t outlen, double v) {
    /* cJSON's rule (print_number): integers within int range as integers, else %1.15g when it
     * reads back to within a relative DBL_EPSILON, else %1.17g. Both keep every digit of the
     * float32 scores. */
    if (!isfinite(v)) {
        snprintf(out, outlen, "%s", "");
        return;
    }
    if (v > -2147483648.0 && v < 2147483647.0 && v == (double)(int)v) {
        snprintf(out, outlen, "%d", (int)v);
        return;
    }
    snprintf(out, outlen, "%1.15g", v);
    double back = strtod(out, NULL);
    double larger = fabs(back) > fabs(v) ? fabs(back) : fabs(v);
    if (!(fabs(back - v) <= larger * DBL_EPSILON)) snprintf(out, outlen, "%1.17g", v);
}

/* Adds "path" (and "path_base64" when the path is not UTF-8). */
static int json_add_path(cJSON *o, const char *path) {
    size_t n = strlen(path);
    if (utf8_valid(path, n)) return cJSON_AddStringToObject(o, "path", path) ? 0 : -1;
    char *shown = utf8_sanitize(path, n), *b64 = base64_encode((const uint8_t *)path, n);
    int ok = shown && b64 && cJSON_AddStringToObject(o, "path", shown) && cJSON_AddStringToObject(o, "path_base64", b64);
    free(shown);
    free(b64);
    return ok ? 0 : -1;
}

static char *with_newline(char *s) {
    if (!s) return NULL;
    size_t n = strlen(s);
    char *line = realloc(s, n + 2);
    if (!line) {
        free(s);
        return NULL;
    }
    line[n] = '\n';
    line[n + 1] = '\0';
    return line;
}

char *batch_jsonl_line(const char *path, int width, int height, xcap_result *r, const char *error) {
    cJSON *o = cJSON_CreateObject();
    if (!o || json_add_path(o, path)) {
        cJSON_Delete(o);
        return NULL;
    }
    if (width > 0) {
        cJSON_AddNumberToObject(o, "width", width);
        cJSON_AddNumberToObject(o, "height", height);
    }
    if (r) {
        result_json_add(o, r);
    } else {
        /* error messages quote the path, which may not be UTF-8 either */
        char *msg = utf8_sanitize(error, strlen(error));
        if (msg) cJSON_AddStringToObject(o, "error", msg);
        free(msg);
    }
    char *line = with_newline(cJSON_PrintUnformatted(o));
    cJSON_Delete(o);
    return line;
}

/* ---- CSV (RFC 4180 quoting; rows end in "\n", Python's csv reads either ending) ---- */

/* One field, quoted when it holds a separator, a quote, a line break or edge spaces. */
static void csv_field(strbuf *b, const char *s, int first) {
    if (!first) strbuf_put(b, ",", 1);
    size_t n = strlen(s);
    int quote = strpbrk(s, ",\"\r\n") != NULL || (n && (s[0] == ' ' || s[n - 1] == ' '));
    if (!quote) {
        strbuf_put(b, s, n);
        return;
    }
    strbuf_put(b, "\"", 1);
    for (const char *p = s; *p; p++) {
        if (*p == '"') strbuf_put(b, "\"", 1);
        strbuf_put(b, p, 1);
    }
    strbuf_put(b, "\"", 1);
}

static void csv_number(strbuf *b, double v) {
    char num[40];
    batch_format_number(num, sizeof num, v);
    csv_field(b, num, 0);
}

static void csv_int(strbuf *b, int v) {
    char num[16];
    if (v > 0) snprintf(num, sizeof num, "%d", v);
    else num[0] = '\0';
    csv_field(b, num, 0);
}

char *batch_csv_header(int n_best) {
    strbuf b = {0};
    strbuf_puts(&b, "path,path_base64,width,height,caption,score,sum_logprob,tokens,error");
    for (int k = 2; k <= n_best; k++) {
        char extra[64];
        snprintf(extra, sizeof extra, ",caption_%d,score_%d", k, k);
        strbuf_puts(&b, extra);
    }
    strbuf_put(&b, "\n", 1);
    return strbuf_take(&b);
}

char *batch_csv_line(const char *path, int width, int height, xcap_result *r, const char *error, int n_best) {
    strbuf b = {0};
    size_t n = strlen(path);
    if (utf8_valid(path, n)) {
        csv_field(&b, path, 1);
        csv_field(&b, "", 0);
    } else {
        char *shown = utf8_sanitize(path, n), *b64 = base64_encode((const uint8_t *)path, n);
        if (!shown || !b64) b.failed = 1;
        else {
            csv_field(&b, shown, 1);
            csv_field(&b, b64, 0);
        }
        free(shown);
        free(b64);
    }
    csv_int(&b, width);
    csv_int(&b, height);
    if (r) {
        const xcap_hypothesis *best = &r->hyps[0];
        csv_field(&b, caption_strip(best->text), 0);
        csv_number(&b, best->score);
        csv_number(&b, best->sum_logprob);
        strbuf ids = {0};
        for (int i = 0; i < best->n_tokens; i++) {
            char num[16];
            snprintf(num, sizeof num, i ? " %d" : "%d", (int)best->tokens[i]);
            strbuf_puts(&ids, num);
        }
        char *tokens = strbuf_take(&ids);
        if (!tokens) b.failed = 1;
        else csv_field(&b, tokens, 0);
        free(tokens);
        csv_field(&b, "", 0);
    } else {
        for (int i = 0; i < 4; i++) csv_field(&b, "", 0);
        char *msg = utf8_sanitize(error, strlen(error));
        if (!msg) b.failed = 1;
        else csv_field(&b, msg, 0);
        free(msg);
    }
    for (int k = 1; k < n_best; k++) {
        if (r && k < r->n_hyps) {
            csv_field(&b, caption_strip(r->hyps[k].text), 0);
            csv_number(&b, r->hyps[k].score);
        } else {
            csv_field(&b, "", 0);
            csv_field(&b, "", 0);
        }
    }
    strbuf_put(&b, "\n", 1);
    return strbuf_take(&b);
}

void csv_free_fields(char **fields, int n_fields) {
    for (int i = 0; i < n_fields; i++) free(fields[i]);
    free(fields);
}

long csv_parse_record(const char *s, size_t n, char ***fields_out, int *n_out) {
    char **fields = NULL;
    int nf = 0, cap = 0;
    size_t i = 0;
    strbuf field = {0};
    *fields_out = NULL;
    *n_out = 0;
    for (;;) {
        /* one field */
        field.n = 0;
        strbuf_put(&field, "", 0);
        int ended = 0; /* 1: ',' follows, 2: the line ends */
        if (i < n && s[i] == '"') {
            i++;
            for (;;) {
                if (i >= n) goto incomplete;
                if (s[i] == '"') {
                    if (i + 1 >= n) goto incomplete;
                    if (s[i + 1] == '"') {
                        strbuf_put(&field, "\"", 1);
                        i += 2;
                        continue;
                    }
                    i++;
                    break;
                }
                strbuf_put(&field, s + i, 1);
                i++;
            }
            if (i >= n) goto incomplete;
            if (s[i] == ',') ended = 1, i++;
            else if (s[i] == '\n') ended = 2, i++;
            else if (s[i] == '\r' && i + 1 < n && s[i + 1] == '\n') ended = 2, i += 2;
            else if (s[i] == '\r' && i + 1 >= n) goto incomplete;
            else goto malformed;
        } else {
            size_t start = i;
            while (i < n && s[i] != ',' && s[i] != '\n') i++;
            if (i >= n) goto incomplete;
            size_t end = i;
            if (s[i] == '\n' && end > start && s[end - 1] == '\r') end--;
            strbuf_put(&field, s + start, end - start);
            ended = s[i] == ',' ? 1 : 2;
            i++;
        }
        if (field.failed) goto malformed;
        if (nf == cap) {
            cap = cap ? cap * 2 : 16;
            char **bigger = realloc(fields, (size_t)cap * sizeof *bigger);
            if (!bigger) goto malformed;
            fields = bigger;
        }
        fields[nf] = malloc(field.n + 1);
        if (!fields[nf]) goto malformed;
        memcpy(fields[nf], field.s, field.n + 1);
        nf++;
        if (ended == 2) break;
    }
    free(field.s);
    *fields_out = fields;
    *n_out = nf;
    return (long)i;
incomplete:
    free(field.s);
    csv_free_fields(fields, nf);
    return 0;
malformed:
    free(field.s);
    csv_free_fields(fields, nf);
    return -1;
}

char *batch_sidecar_text(xcap_result *r) {
    strbuf b = {0};
    for (int i = 0; i < r->n_hyps; i++) {
        strbuf_puts(&b, caption_strip(r->hyps[i].text));
        strbuf_put(&b, "\n", 1);
    }
    return strbuf_take(&b);
}

/* ---- writing ---- */

int write_all(int fd, const char *buf, size_t n) {
    while (n) {
        ssize_t got = write(fd, buf, n);
        if (got < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        buf += got;
        n -= (size_t)got;
    }
    return 0;
}

/* mkdir -p of the folders above path. */
static int make_parents(char *path) {
    for (char *p = path + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        int rc = mkdir(path, 0777);
        int err = errno;
        *p = '/';
        if (rc != 0 && err != EEXIST) {
            errno = err;
            return -1;
        }
    }
    return 0;
}

int batch_write_sidecar(const char *target, const char *text, int kill_before_rename, char *err, size_t errlen) {
    size_t n = strlen(target);
    const char *slash = strrchr(target, '/');
    size_t dir_len = slash ? (size_t)(slash - target) + 1 : 0;
    /* A fixed temporary name, hidden and beside the target (rename is atomic only within one
     * file system): a run killed between write and rename leaves it behind, and the next run,
     * which must caption that image again, writes and renames the same name. */
    char *tmp = malloc(n + 16), *target_copy = malloc(n + 1);
    if (!tmp || !target_copy) {
        free(tmp);
        free(target_copy);
        snprintf(err, errlen, "%s: out of memory", target);
        return -1;
    }
    memcpy(tmp, target, dir_len);
    snprintf(tmp + dir_len, n + 16 - dir_len, ".%s.xcap-tmp", target + dir_len);
    memcpy(target_copy, target, n + 1);
    int rc = -1;
    if (make_parents(target_copy) != 0) {
        snprintf(err, errlen, "%s: cannot create its folder: %s", target, strerror(errno));
        goto done;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
        goto done;
    }
    if (write_all(fd, text, strlen(text)) != 0) {
        snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        goto done;
    }
    if (close(fd) != 0) {
        snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
        unlink(tmp);
        goto done;
    }
    if (kill_before_rename) raise(SIGKILL); /* test hook: see batch_run_options */
    if (rename(tmp, target) != 0) {
        snprintf(err, errlen, "%s: %s", target, strerror(errno));
        unlink(tmp);
        goto done;
    }
    rc = 0;
done:
    free(tmp);
    free(target_copy);
    return rc;
}
