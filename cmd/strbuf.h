/* A growable NUL-terminated string for building output records and pages. An allocation
 * failure is remembered (failed) instead of reported at every append. */
#ifndef XCAP_CMD_STRBUF_H
#define XCAP_CMD_STRBUF_H

#include <stdlib.h>
#include <string.h>

typedef struct {
    char *s;
    size_t n, cap;
    int failed;
} strbuf;

static inline void strbuf_put(strbuf *b, const char *s, size_t n) {
    if (b->failed) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *bigger = realloc(b->s, cap);
        if (!bigger) {
            b->failed = 1;
            return;
        }
        b->s = bigger;
        b->cap = cap;
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = '\0';
}

static inline void strbuf_puts(strbuf *b, const char *s) { strbuf_put(b, s, strlen(s)); }

/* The string (the caller frees it), or NULL after an allocation failure. */
static inline char *strbuf_take(strbuf *b) {
    if (b->failed) {
        free(b->s);
        return NULL;
    }
    if (!b->s) strbuf_put(b, "", 0);
    return b->s;
}

#endif
