/* Resuming `xcap batch`: the records an earlier run left in the output file, and the repair of
 * a file whose writer was killed mid-record.
 *
 * Every record goes out in one write(2) of a whole line on an O_APPEND descriptor, so after a
 * kill -9 the file is a run of complete records, possibly followed by the first bytes of one
 * more. That tail is cut off here; the image it belonged to is not in the set of recorded
 * paths, so the next run captions it again: exactly one record per image in the end. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cmd/batch.h"

static uint64_t path_hash(const char *s) {
    uint64_t h = 14695981039346656037ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

void batch_seen_free(batch_seen *s) {
    for (size_t i = 0; i < s->n; i++) batch_record_clear(&s->records[i]);
    free(s->records);
    free(s->slots);
    memset(s, 0, sizeof *s);
}

const batch_record *batch_seen_find(const batch_seen *s, const char *path) {
    if (!s->n_slots) return NULL;
    for (size_t i = path_hash(path) & (s->n_slots - 1);; i = (i + 1) & (s->n_slots - 1)) {
        if (!s->slots[i]) return NULL;
        const batch_record *r = &s->records[s->slots[i] - 1];
        if (!strcmp(r->path, path)) return r;
    }
}

static int rehash(batch_seen *s, size_t n_slots) {
    size_t *slots = calloc(n_slots, sizeof *slots);
    if (!slots) return -1;
    for (size_t r = 0; r < s->n; r++) {
        size_t i = path_hash(s->records[r].path) & (n_slots - 1);
        while (slots[i]) i = (i + 1) & (n_slots - 1);
        slots[i] = r + 1;
    }
    free(s->slots);
    s->slots = slots;
    s->n_slots = n_slots;
    return 0;
}

int batch_seen_add(batch_seen *s, batch_record *r) {
    if (batch_seen_find(s, r->path)) { /* a repeated record: the first one stands */
        batch_record_clear(r);
        return 0;
    }
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 256;
        batch_record *bigger = realloc(s->records, cap * sizeof *bigger);
        if (!bigger) return -1;
        s->records = bigger;
        s->cap = cap;
    }
    if (2 * (s->n + 1) > s->n_slots && rehash(s, s->n_slots ? 2 * s->n_slots : 1024)) return -1;
    s->records[s->n] = *r;
    memset(r, 0, sizeof *r);
    size_t i = path_hash(s->records[s->n].path) & (s->n_slots - 1);
    while (s->slots[i]) i = (i + 1) & (s->n_slots - 1);
    s->slots[i] = ++s->n;
    return 0;
}

static char *dup_bytes(const char *s, size_t n) {
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

/* The path a record names: path_base64's bytes when present, else path. NULL if neither is
 * usable. */
static char *record_path(const char *path, const char *b64) {
    if (b64 && *b64) {
        size_t n;
        char *bytes = (char *)base64_decode(b64, &n);
        if (bytes && strlen(bytes) != n) { /* a NUL inside: no file has that name */
            free(bytes);
            return NULL;
        }
        return bytes;
    }
    return path && *path ? dup_bytes(path, strlen(path)) : NULL;
}

/* One JSONL line into r; 0, or -1 when it is not a batch record. */
static int parse_jsonl(const char *line, size_t n, batch_record *r) {
    memset(r, 0, sizeof *r);
    const char *end = NULL;
    cJSON *o = cJSON_ParseWithLengthOpts(line, n, &end, 0);
    if (!o || end != line + n || !cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return -1;
    }
    const cJSON *path = cJSON_GetObjectItemCaseSensitive(o, "path");
    const cJSON *b64 = cJSON_GetObjectItemCaseSensitive(o, "path_base64");
    const cJSON *caption = cJSON_GetObjectItemCaseSensitive(o, "caption");
    const cJSON *error = cJSON_GetObjectItemCaseSensitive(o, "error");
    if (!cJSON_IsString(path) || (b64 && !cJSON_IsString(b64)) || (!cJSON_IsString(caption) && !cJSON_IsString(error))) {
        cJSON_Delete(o);
        return -1;
    }
    r->path = record_path(path->valuestring, b64 ? b64->valuestring : NULL);
    if (cJSON_IsString(caption)) r->caption = dup_bytes(caption->valuestring, strlen(caption->valuestring));
    else r->error = dup_bytes(error->valuestring, strlen(error->valuestring));
    const cJSON *v;
    if (cJSON_IsNumber(v = cJSON_GetObjectItemCaseSensitive(o, "width"))) r->width = v->valueint;
    if (cJSON_IsNumber(v = cJSON_GetObjectItemCaseSensitive(o, "height"))) r->height = v->valueint;
    if (cJSON_IsNumber(v = cJSON_GetObjectItemCaseSensitive(o, "score"))) r->score = v->valuedouble;
    if (cJSON_IsNumber(v = cJSON_GetObjectItemCaseSensitive(o, "sum_logprob"))) r->sum_logprob = v->valuedouble;
    cJSON_Delete(o);
    if (!r->path || (!r->caption && !r->error)) {
        batch_record_clear(r);
        return -1;
    }
    return 0;
}

/* Columns of our CSV header, in order (batch_csv_header). */
enum { CSV_PATH, CSV_PATH_BASE64, CSV_WIDTH, CSV_HEIGHT, CSV_CAPTION, CSV_SCORE, CSV_SUM_LOGPROB, CSV_TOKENS, CSV_ERROR };

static int parse_csv_fields(char **f, batch_record *r) {
    memset(r, 0, sizeof *r);
    r->path = record_path(f[CSV_PATH], f[CSV_PATH_BASE64]);
    if (*f[CSV_ERROR]) r->error = dup_bytes(f[CSV_ERROR], strlen(f[CSV_ERROR]));
    else r->caption = dup_bytes(f[CSV_CAPTION], strlen(f[CSV_CAPTION]));
    r->width = atoi(f[CSV_WIDTH]);
    r->height = atoi(f[CSV_HEIGHT]);
    r->score = strtod(f[CSV_SCORE], NULL);
    r->sum_logprob = strtod(f[CSV_SUM_LOGPROB], NULL);
    if (!r->path || (!r->caption && !r->error)) {
        batch_record_clear(r);
        return -1;
    }
    return 0;
}

static int read_whole(int fd, char **data, size_t *size) {
    struct stat st;
    if (fstat(fd, &st) != 0) return -1;
    size_t cap = (size_t)st.st_size + 1, n = 0;
    char *buf = malloc(cap);
    if (!buf) return -1;
    for (;;) {
        if (n + 1 >= cap) {
            char *bigger = realloc(buf, cap * 2);
            if (!bigger) {
                free(buf);
                return -1;
            }
            buf = bigger;
            cap *= 2;
        }
        ssize_t got = pread(fd, buf + n, cap - 1 - n, (off_t)n);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) {
            free(buf);
            return -1;
        }
        if (got == 0) break;
        n += (size_t)got;
    }
    buf[n] = '\0';
    *data = buf;
    *size = n;
    return 0;
}

/* Counts lines up to offset, for messages. */
static size_t line_of(const char *data, size_t offset) {
    size_t line = 1;
    for (size_t i = 0; i < offset; i++) line += data[i] == '\n';
    return line;
}

/* Reads the records; *good is the length of the complete part of the file. */
static int load_records(const char *file, const char *data, size_t size, batch_format fmt, int n_best,
                        batch_seen *seen, size_t *good, char *err, size_t errlen) {
    *good = 0;
    if (fmt == FORMAT_JSONL) {
        size_t at = 0;
        while (at < size) {
            const char *nl = memchr(data + at, '\n', size - at);
            size_t len = nl ? (size_t)(nl - (data + at)) : size - at;
            batch_record r;
            if (len == 0) { /* a blank line carries nothing */
                at += 1;
                *good = at;
                continue;
            }
            if (parse_jsonl(data + at, len, &r) != 0) {
                /* An unterminated tail is what a kill leaves: not an error. */
                if (!nl) return 0;
                snprintf(err, errlen, "%s:%zu: not an xcap batch record (--overwrite starts the file afresh)", file,
                         line_of(data, at));
                return -1;
            }
            if (batch_seen_add(seen, &r) != 0) {
                snprintf(err, errlen, "out of memory");
                return -1;
            }
            /* A complete object missing only its line end (killed between the two) stays:
             * *good then ends inside it and the caller adds the newline. */
            at += len + (nl ? 1 : 0);
            *good = at;
        }
        return 0;
    }
    char *header = batch_csv_header(n_best);
    if (!header) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    size_t header_len = strlen(header);
    int n_columns = 9 + 2 * (n_best - 1);
    size_t at = 0;
    if (size > 0) {
        const char *nl = memchr(data, '\n', size);
        if (!nl) {
            free(header);
            return 0; /* only part of the header was written */
        }
        if ((size_t)(nl - data) + 1 != header_len || memcmp(data, header, header_len)) {
            snprintf(err, errlen, "%s: its header is not \"%.*s\" (the same --n-best is needed to resume; --overwrite starts the file afresh)",
                     file, (int)header_len - 1, header);
            free(header);
            return -1;
        }
        at = header_len;
        *good = at;
    }
    free(header);
    while (at < size) {
        char **fields;
        int nf;
        long used = csv_parse_record(data + at, size - at, &fields, &nf);
        if (used == 0) return 0;
        batch_record r;
        if (used < 0 || nf != n_columns || parse_csv_fields(fields, &r) != 0) {
            if (used > 0) csv_free_fields(fields, nf);
            snprintf(err, errlen, "%s:%zu: not an xcap batch record (--overwrite starts the file afresh)", file,
                     line_of(data, at));
            return -1;
        }
        csv_free_fields(fields, nf);
        if (batch_seen_add(seen, &r) != 0) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        at += (size_t)used;
        *good = at;
    }
    return 0;
}

int batch_open_output(const char *file, batch_format fmt, int n_best, int overwrite, batch_seen *seen,
                      size_t *cut_bytes, int *usage_error, char *err, size_t errlen) {
    *usage_error = 0;
    *cut_bytes = 0;
    int fd = open(file, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0666);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", file, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) == 0 && !S_ISREG(st.st_mode)) {
        /* A pipe or a device (/dev/stdout, a FIFO): nothing to resume from or to cut. */
        if (fmt == FORMAT_CSV) {
            char *header = batch_csv_header(n_best);
            int rc = header ? write_all(fd, header, strlen(header)) : -1;
            free(header);
            if (rc != 0) {
                snprintf(err, errlen, "cannot write %s: %s", file, strerror(errno));
                close(fd);
                return -1;
            }
        }
        return fd;
    }
    /* Released when the process ends, however it ends. */
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        snprintf(err, errlen, "%s: %s", file,
                 errno == EWOULDBLOCK ? "another xcap batch is writing it (give each run its own output file)"
                                      : strerror(errno));
        *usage_error = errno == EWOULDBLOCK;
        close(fd);
        return -1;
    }
    char *data = NULL;
    size_t size = 0, good = 0;
    if (!overwrite) {
        if (read_whole(fd, &data, &size) != 0) {
            snprintf(err, errlen, "%s: %s", file, strerror(errno));
            close(fd);
            return -1;
        }
        if (load_records(file, data, size, fmt, n_best, seen, &good, err, errlen) != 0) {
            *usage_error = 1;
            free(data);
            close(fd);
            return -1;
        }
    }
    int rc = 0;
    if (good < size || overwrite) {
        if (ftruncate(fd, (off_t)good) != 0) rc = -1;
        *cut_bytes = size - good;
    }
    /* A JSONL record complete but for its line end gets one. */
    if (rc == 0 && fmt == FORMAT_JSONL && good > 0 && data[good - 1] != '\n') rc = write_all(fd, "\n", 1);
    if (rc == 0 && fmt == FORMAT_CSV && good == 0) {
        char *header = batch_csv_header(n_best);
        rc = header ? write_all(fd, header, strlen(header)) : -1;
        free(header);
    }
    free(data);
    if (rc != 0) {
        snprintf(err, errlen, "cannot write %s: %s", file, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

char *batch_read_sidecar(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char line[4096];
    char *text = NULL;
    if (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        text = dup_bytes(line, strlen(line));
    }
    fclose(f);
    return text;
}
