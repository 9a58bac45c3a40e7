/* `xcap batch --html DIR`: a static gallery, openable from the file system with no network:
 * index.html, page-2.html, ... (thumbnail, caption, path, size, score per image),
 * failures.html (every failed image with its error), thumbs/ (JPEG thumbnails named by a hash
 * of the image path, so a resumed run finds the ones already made). Inline CSS, no script. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <stb/stb_image_write.h>

#include "cmd/strbuf.h"
#include "cmd/batch.h"
#include "cmd/image.h"

enum { THUMB_SIDE = 256, THUMB_QUALITY = 85 };

char *batch_thumb_path(const char *html_dir, const char *image_path) {
    uint64_t h = 14695981039346656037ull; /* FNV-1a of the path bytes */
    for (const char *s = image_path; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    size_t n = strlen(html_dir) + 40;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/thumbs/%016llx.jpg", html_dir, (unsigned long long)h);
    return p;
}

typedef struct {
    uint8_t *data;
    size_t n, cap;
    int failed;
} mem_out;

static void mem_write(void *ctx, void *data, int size) {
    mem_out *m = ctx;
    if (m->failed || size <= 0) return;
    if (m->n + (size_t)size > m->cap) {
        size_t cap = m->cap ? m->cap : 16384;
        while (cap < m->n + (size_t)size) cap *= 2;
        uint8_t *bigger = realloc(m->data, cap);
        if (!bigger) {
            m->failed = 1;
            return;
        }
        m->data = bigger;
        m->cap = cap;
    }
    memcpy(m->data + m->n, data, (size_t)size);
    m->n += (size_t)size;
}

/* Writes bytes to path through a temporary file and a rename: never a half file. */
static int write_file_atomic(const char *path, const void *data, size_t n) {
    size_t len = strlen(path) + 16;
    char *tmp = malloc(len);
    if (!tmp) return -1;
    snprintf(tmp, len, "%s.xcap-tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    int rc = fd < 0 ? -1 : write_all(fd, data, n);
    if (fd >= 0 && close(fd) != 0) rc = -1;
    if (rc == 0) rc = rename(tmp, path);
    if (rc != 0) unlink(tmp);
    free(tmp);
    return rc;
}

int batch_write_thumb(const char *thumb_path, const uint8_t *rgb, int width, int height) {
    /* Box filter: each thumbnail pixel is the mean of the source pixels it covers. Quality is
     * not the point here; this only has to show what the caption describes. */
    double scale = (double)THUMB_SIDE / (double)(width > height ? width : height);
    if (scale > 1) scale = 1;
    int tw = (int)(width * scale + 0.5), th = (int)(height * scale + 0.5);
    if (tw < 1) tw = 1;
    if (th < 1) th = 1;
    uint8_t *small = malloc((size_t)tw * th * 3);
    if (!small) return -1;
    for (int y = 0; y < th; y++) {
        int y0 = (int)((long long)y * height / th), y1 = (int)((long long)(y + 1) * height / th);
        if (y1 <= y0) y1 = y0 + 1;
        for (int x = 0; x < tw; x++) {
            int x0 = (int)((long long)x * width / tw), x1 = (int)((long long)(x + 1) * width / tw);
            if (x1 <= x0) x1 = x0 + 1;
            uint64_t sum[3] = {0, 0, 0};
            for (int sy = y0; sy < y1; sy++)
                for (int sx = x0; sx < x1; sx++)
                    for (int c = 0; c < 3; c++) sum[c] += rgb[((size_t)sy * width + sx) * 3 + c];
            uint64_t count = (uint64_t)(y1 - y0) * (uint64_t)(x1 - x0);
            for (int c = 0; c < 3; c++) small[((size_t)y * tw + x) * 3 + c] = (uint8_t)((sum[c] + count / 2) / count);
        }
    }
    mem_out out = {0};
    int ok = stbi_write_jpg_to_func(mem_write, &out, tw, th, 3, small, THUMB_QUALITY) && !out.failed;
    free(small);
    int rc = ok ? write_file_atomic(thumb_path, out.data, out.n) : -1;
    free(out.data);
    return rc;
}

/* ---- text helpers ---- */

static void putf(strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(strbuf *b, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0) strbuf_put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* Text into HTML: valid UTF-8 (stray bytes shown as U+FFFD) with the five special characters
 * escaped. */
static void put_text(strbuf *b, const char *s) {
    char *clean = utf8_sanitize(s, strlen(s));
    if (!clean) {
        b->failed = 1;
        return;
    }
    for (const char *p = clean; *p; p++) {
        switch (*p) {
        case '&': strbuf_puts(b, "&amp;"); break;
        case '<': strbuf_puts(b, "&lt;"); break;
        case '>': strbuf_puts(b, "&gt;"); break;
        case '"': strbuf_puts(b, "&quot;"); break;
        case '\'': strbuf_puts(b, "&#39;"); break;
        case '\n': strbuf_puts(b, "&#10;"); break;
        default: strbuf_put(b, p, 1);
        }
    }
    free(clean);
}

/* A path into a URL: every byte but the unreserved ones and '/' percent-encoded, so any file
 * name (spaces, '#', '?', bytes that are not UTF-8) links to that exact file. */
static void put_url(strbuf *b, const char *path) {
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)path; *p; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || strchr("-._~/", *p)) {
            strbuf_put(b, (const char *)p, 1);
        } else {
            char enc[3] = {'%', hex[*p >> 4], hex[*p & 15]};
            strbuf_put(b, enc, 3);
        }
    }
}

/* The path of `to` relative to the folder `from` (both absolute, without "." or ".." parts,
 * as realpath gives them). */
static char *relative_path(const char *from, const char *to) {
    const char *f = from, *t = to;
    for (;;) { /* past the components both share */
        while (*f == '/') f++;
        while (*t == '/') t++;
        size_t fl = strcspn(f, "/"), tl = strcspn(t, "/");
        if (!fl || fl != tl || memcmp(f, t, fl)) break;
        f += fl;
        t += tl;
    }
    size_t ups = 0;
    while (*f) {
        ups++;
        f += strcspn(f, "/");
        while (*f == '/') f++;
    }
    char *out = malloc(ups * 3 + strlen(t) + 1);
    if (!out) return NULL;
    char *o = out;
    for (size_t k = 0; k < ups; k++) memcpy(o, "../", 3), o += 3;
    strcpy(o, t);
    return out;
}

/* ---- pages ---- */

static const char style[] =
    "<style>body{font-family:system-ui,sans-serif;margin:1.5em;background:#fafafa;color:#222}"
    "nav{margin:1em 0}nav a,nav b{margin-right:.6em}"
    ".grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:1em}"
    "figure{margin:0;background:#fff;border:1px solid #ddd;padding:.5em}"
    "figure img{max-width:100%;display:block;margin:auto}"
    ".cap{font-size:1.05em;margin:.4em 0}.meta{color:#666;font-size:.8em;word-break:break-all}"
    ".failed{border-color:#c33}.err{color:#a00;font-size:.85em;word-break:break-all}"
    "table{border-collapse:collapse}td{border:1px solid #ddd;padding:.3em .6em;word-break:break-all}</style>";

static void page_name(char *out, size_t n, int page) {
    if (page == 1) snprintf(out, n, "index.html");
    else snprintf(out, n, "page-%d.html", page);
}

static void put_head(strbuf *b, const char *title, const char *heading) {
    strbuf_puts(b, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>");
    put_text(b, title);
    strbuf_puts(b, "</title>");
    strbuf_puts(b, style);
    strbuf_puts(b, "</head><body>\n<h1>");
    put_text(b, heading);
    strbuf_puts(b, "</h1>\n");
}

static void put_nav(strbuf *b, int page, int n_pages, size_t failed) {
    strbuf_puts(b, "<nav>");
    char name[32];
    if (page > 1) {
        page_name(name, sizeof name, page - 1);
        putf(b, "<a href=\"%s\">&larr; previous</a>", name);
    }
    for (int k = 1; k <= n_pages; k++) {
        page_name(name, sizeof name, k);
        if (k == page) putf(b, "<b>%d</b>", k);
        else putf(b, "<a href=\"%s\">%d</a>", name, k);
    }
    if (page < n_pages) {
        page_name(name, sizeof name, page + 1);
        putf(b, "<a href=\"%s\">next &rarr;</a>", name);
    }
    if (failed) putf(b, " &middot; <a href=\"failures.html\">%zu failed</a>", failed);
    strbuf_puts(b, "</nav>\n");
}

/* A link from the gallery folder to the image, or NULL when the image cannot be found. */
static char *image_link(const char *html_abs, const char *path) {
    char *abs = realpath(path, NULL);
    if (!abs) return NULL;
    char *rel = relative_path(html_abs, abs);
    free(abs);
    return rel;
}

static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

int batch_write_html(const char *dir, const batch_html_entry *entries, size_t n, int page_size, const char *title,
                     char *err, size_t errlen) {
    size_t captioned = 0, failed = 0;
    for (size_t i = 0; i < n; i++) {
        if (!entries[i].rec) continue;
        if (entries[i].rec->error) failed++;
        else captioned++;
    }
    char *html_abs = realpath(dir, NULL);
    if (!html_abs) {
        snprintf(err, errlen, "%s: %s", dir, strerror(errno));
        return -1;
    }
    int n_pages = n ? (int)((n + (size_t)page_size - 1) / (size_t)page_size) : 1;
    int rc = 0;
    for (int page = 1; page <= n_pages && rc == 0; page++) {
        strbuf b = {0};
        char heading[256];
        snprintf(heading, sizeof heading, "%zu images: %zu captioned, %zu failed", n, captioned, failed);
        put_head(&b, title, heading);
        put_nav(&b, page, n_pages, failed);
        strbuf_puts(&b, "<div class=\"grid\">\n");
        size_t first = (size_t)(page - 1) * (size_t)page_size;
        for (size_t i = first; i < n && i < first + (size_t)page_size; i++) {
            const batch_html_entry *e = &entries[i];
            const batch_record *r = e->rec;
            char *link = image_link(html_abs, e->path);
            putf(&b, "<figure%s>", r && r->error ? " class=\"failed\"" : "");
            if (r && r->caption) {
                char *thumb = batch_thumb_path(dir, e->path);
                if (thumb && !file_exists(thumb)) {
                    /* Captioned by an earlier run without --html: make its thumbnail now. */
                    uint8_t *rgb = NULL;
                    int w, h;
                    char ignored[256];
                    if (image_load_file(e->path, &rgb, &w, &h, ignored, sizeof ignored) == 0) {
                        batch_write_thumb(thumb, rgb, w, h);
                        free(rgb);
                    }
                }
                if (thumb && file_exists(thumb)) {
                    if (link) {
                        strbuf_puts(&b, "<a href=\"");
                        put_url(&b, link);
                        strbuf_puts(&b, "\">");
                    }
                    strbuf_puts(&b, "<img loading=\"lazy\" src=\"");
                    put_url(&b, thumb + strlen(dir) + 1);
                    strbuf_puts(&b, "\" alt=\"");
                    put_text(&b, r->caption);
                    strbuf_puts(&b, "\">");
                    if (link) strbuf_puts(&b, "</a>");
                }
                free(thumb);
                strbuf_puts(&b, "<figcaption><div class=\"cap\">");
                if (*r->caption) put_text(&b, r->caption);
                else strbuf_puts(&b, "<span class=\"meta\">(empty caption)</span>");
                strbuf_puts(&b, "</div>");
            } else {
                strbuf_puts(&b, "<figcaption>");
                if (r) {
                    strbuf_puts(&b, "<div class=\"err\">");
                    put_text(&b, r->error);
                    strbuf_puts(&b, "</div>");
                } else {
                    strbuf_puts(&b, "<div class=\"err\">not captioned (the run stopped early)</div>");
                }
            }
            strbuf_puts(&b, "<div class=\"meta\">");
            if (link) {
                strbuf_puts(&b, "<a href=\"");
                put_url(&b, link);
                strbuf_puts(&b, "\">");
            }
            put_text(&b, e->path);
            if (link) strbuf_puts(&b, "</a>");
            if (r && r->width > 0) putf(&b, " &middot; %d&times;%d", r->width, r->height);
            if (r && r->caption) putf(&b, " &middot; score %.3f", r->score);
            strbuf_puts(&b, "</div></figcaption></figure>\n");
            free(link);
        }
        strbuf_puts(&b, "</div>\n");
        put_nav(&b, page, n_pages, failed);
        strbuf_puts(&b, "</body></html>\n");
        char name[32], path[PATH_MAX];
        page_name(name, sizeof name, page);
        snprintf(path, sizeof path, "%s/%s", dir, name);
        if (b.failed || write_file_atomic(path, b.s, b.n) != 0) {
            snprintf(err, errlen, "%s: %s", path, b.failed ? "out of memory" : strerror(errno));
            rc = -1;
        }
        free(b.s);
    }
    if (rc == 0) {
        strbuf b = {0};
        char heading[128];
        snprintf(heading, sizeof heading, "%zu failed of %zu images", failed, n);
        put_head(&b, title, heading);
        strbuf_puts(&b, "<nav><a href=\"index.html\">&larr; gallery</a></nav>\n<table>\n");
        for (size_t i = 0; i < n; i++) {
            const batch_record *r = entries[i].rec;
            if (!r || !r->error) continue;
            strbuf_puts(&b, "<tr><td>");
            put_text(&b, entries[i].path);
            strbuf_puts(&b, "</td><td class=\"err\">");
            put_text(&b, r->error);
            strbuf_puts(&b, "</td></tr>\n");
        }
        strbuf_puts(&b, "</table>\n</body></html>\n");
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/failures.html", dir);
        if (b.failed || write_file_atomic(path, b.s, b.n) != 0) {
            snprintf(err, errlen, "%s: %s", path, b.failed ? "out of memory" : strerror(errno));
            rc = -1;
        }
        free(b.s);
    }
    free(html_abs);
    return rc;
}
