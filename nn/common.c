#include "nn/common.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int xcap_fail(char *err, size_t errlen, int code, const char *fmt, ...) {
    if (err && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

int xcap_read_file(const char *path, char **data, size_t *size, char *err, size_t errlen) {
    *data = NULL;
    *size = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return xcap_fail(err, errlen, XCAP_ERR_IO, "%s: %s", path, strerror(errno));
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap + 1);
    if (!buf) {
        fclose(f);
        return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "%s: out of memory", path);
    }
    for (;;) {
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (len < cap) break;
        char *bigger = realloc(buf, cap * 2 + 1);
        if (!bigger) {
            free(buf);
            fclose(f);
            return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "%s: out of memory", path);
        }
        buf = bigger;
        cap *= 2;
    }
    int failed = ferror(f);
    fclose(f);
    if (failed) {
        free(buf);
        return xcap_fail(err, errlen, XCAP_ERR_IO, "%s: read error", path);
    }
    buf[len] = '\0';
    *data = buf;
    *size = len;
    return XCAP_OK;
}

int xcap_join_path(char *out, size_t outlen, const char *dir, const char *name, char *err,
                   size_t errlen) {
    int n = snprintf(out, outlen, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= outlen)
        return xcap_fail(err, errlen, XCAP_ERR_ARG, "%s/%s: path too long", dir, name);
    return XCAP_OK;
}
