/* The file list of `xcap batch`: every argument walked, sorted by path, sharded. The order is
 * a plain byte order of the recorded paths, so every process given the same arguments over
 * the same tree computes the same list: that is what lets --shard K/N split work with no
 * coordination. */
#define _GNU_SOURCE /* FNM_CASEFOLD */
#include <dirent.h>
#include <errno.h>
#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cmd/batch.h"

/* The formats cmd/image.c decodes. Other files are not taken unless --include names them. */
const char *const batch_default_extensions[] = {
    "png", "jpg", "jpeg", "jpe", "jfif", "bmp", "gif", "tga", "psd", "pnm", "ppm", "pgm", NULL,
};

static char *dup_string(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static char *concat3(const char *a, const char *b, const char *c) {
    size_t na = strlen(a), nb = strlen(b), nc = strlen(c);
    char *s = malloc(na + nb + nc + 1);
    if (!s) return NULL;
    memcpy(s, a, na);
    memcpy(s + na, b, nb);
    memcpy(s + na + nb, c, nc + 1);
    return s;
}

static int glob_matches(const char *pattern, const char *name, const char *rel) {
    /* As find -path: a pattern with a '/' is matched against the path under the argument
     * ('*' crosses '/'), one without against the name alone. */
    const char *subject = strchr(pattern, '/') ? rel : name;
    return fnmatch(pattern, subject, FNM_CASEFOLD) == 0;
}

static int excluded(const batch_walk_options *opt, const char *name, const char *rel) {
    for (size_t i = 0; i < opt->n_exclude; i++)
        if (glob_matches(opt->exclude[i], name, rel)) return 1;
    return 0;
}

int batch_name_selected(const batch_walk_options *opt, const char *name, const char *rel) {
    if (excluded(opt, name, rel)) return 0;
    if (opt->include) {
        for (size_t i = 0; i < opt->n_include; i++)
            if (glob_matches(opt->include[i], name, rel)) return 1;
        return 0;
    }
    const char *dot = strrchr(name, '.');
    if (!dot || dot == name) return 0;
    for (int i = 0; batch_default_extensions[i]; i++)
        if (!strcasecmp(dot + 1, batch_default_extensions[i])) return 1;
    return 0;
}

/* Adds an item; path is taken over, rel_offset is where the relative part starts in it. */
static int add_item(batch_list *list, char *path, size_t rel_offset, char *walk_error) {
    if (!path) {
        free(walk_error);
        return -1;
    }
    if (list->n == list->cap) {
        size_t cap = list->cap ? list->cap * 2 : 256;
        batch_item *bigger = realloc(list->items, cap * sizeof *bigger);
        if (!bigger) {
            free(path);
            free(walk_error);
            return -1;
        }
        list->items = bigger;
        list->cap = cap;
    }
    batch_item *it = &list->items[list->n++];
    memset(it, 0, sizeof *it);
    it->path = path;
    it->rel = path + rel_offset;
    it->walk_error = walk_error;
    return 0;
}

static char *error_text(const char *path, const char *what) {
    return concat3(path, ": ", what);
}

/* The directories from the argument down to the one being listed: a directory whose device and
 * inode are already on this chain is a symlink loop. Other repeats (two links to one folder)
 * are not loops and are walked under both names, since both paths name real files. */
typedef struct ancestor {
    dev_t dev;
    ino_t ino;
    const char *path;
    const struct ancestor *parent;
} ancestor;

static int cmp_names(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int walk_dir(const batch_walk_options *opt, batch_list *list, const char *dir, size_t rel_offset,
                    const ancestor *chain) {
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "xcap batch: cannot list %s: %s\n", dir, strerror(errno));
        list->dir_failures++;
        return 0;
    }
    /* Names first, so the directory handle is closed before descending (a deep tree would
     * otherwise hold one descriptor per level). */
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    int rc = 0;
    errno = 0;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            char **bigger = realloc(names, cap * sizeof *bigger);
            if (!bigger) {
                rc = -1;
                break;
            }
            names = bigger;
        }
        if (!(names[n] = dup_string(e->d_name))) {
            rc = -1;
            break;
        }
        n++;
    }
    if (rc == 0 && errno) {
        fprintf(stderr, "xcap batch: cannot list %s: %s\n", dir, strerror(errno));
        list->dir_failures++;
    }
    closedir(d);
    if (rc == 0 && n) qsort(names, n, sizeof *names, cmp_names);

    /* "." as the argument: paths are recorded without a "./" in front. */
    int at_dot = !strcmp(dir, ".");
    for (size_t i = 0; i < n && rc == 0; i++) {
        const char *name = names[i];
        char *path = at_dot ? dup_string(name) : concat3(dir, strcmp(dir, "/") ? "/" : "", name);
        if (!path) {
            rc = -1;
            break;
        }
        size_t offset = at_dot ? 0 : rel_offset;
        const char *rel = path + offset;
        struct stat st;
        if (stat(path, &st) != 0) {
            /* A dangling link, a link to itself (ELOOP), a name we may not look up: an error
             * record if it would have been taken, so that the user hears of it. */
            int err = errno;
            if (batch_name_selected(opt, name, rel)) {
                rc = add_item(list, path, offset, error_text(path, strerror(err)));
                path = NULL;
            }
        } else if (S_ISDIR(st.st_mode)) {
            int skip = excluded(opt, name, rel);
            for (int k = 0; k < opt->n_skip && !skip; k++)
                skip = st.st_dev == opt->skip_dev[k] && st.st_ino == opt->skip_ino[k];
            const ancestor *loop = NULL;
            for (const ancestor *a = chain; a && !skip && !loop; a = a->parent)
                if (a->dev == st.st_dev && a->ino == st.st_ino) loop = a;
            if (loop) {
                if (!opt->quiet)
                    fprintf(stderr, "xcap batch: skipping %s: a symlink loop (it leads back to %s)\n", path, loop->path);
                list->loops++;
            } else if (!skip) {
                ancestor here = {st.st_dev, st.st_ino, path, chain};
                rc = walk_dir(opt, list, path, offset, &here);
            }
        } else if (batch_name_selected(opt, name, rel)) {
            char *why = S_ISREG(st.st_mode) ? NULL : error_text(path, "not a regular file");
            rc = add_item(list, path, offset, why);
            path = NULL;
        }
        free(path);
    }
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    return rc;
}

static int cmp_items(const void *a, const void *b) {
    return strcmp(((const batch_item *)a)->path, ((const batch_item *)b)->path);
}

static void item_free(batch_item *it) {
    free(it->path);
    free(it->walk_error);
    free(it->sidecar);
}

int batch_walk(char *const *roots, int n_roots, const batch_walk_options *opt, batch_list *list) {
    memset(list, 0, sizeof *list);
    for (int r = 0; r < n_roots; r++) {
        /* Trailing slashes are dropped so that "photos/" and "photos" record the same paths. */
        char *root = dup_string(roots[r]);
        if (!root) return -1;
        size_t len = strlen(root);
        while (len > 1 && root[len - 1] == '/') root[--len] = '\0';
        struct stat st;
        int rc = 0;
        if (stat(root, &st) != 0) {
            rc = add_item(list, root, 0, error_text(root, strerror(errno)));
            root = NULL;
        } else if (S_ISDIR(st.st_mode)) {
            ancestor top = {st.st_dev, st.st_ino, root, NULL};
            size_t rel_offset = len + (strcmp(root, "/") ? 1 : 0);
            rc = walk_dir(opt, list, root, rel_offset, &top);
        } else {
            /* A file named on the command line is taken whatever its extension. */
            const char *slash = strrchr(root, '/');
            size_t base = slash ? (size_t)(slash - root) + 1 : 0;
            char *why = S_ISREG(st.st_mode) ? NULL : error_text(root, "not a regular file");
            rc = add_item(list, root, base, why);
            root = NULL;
        }
        free(root);
        if (rc) return -1;
    }
    if (list->n) qsort(list->items, list->n, sizeof *list->items, cmp_items);
    /* The same file named twice (an argument inside another) is one image. */
    size_t kept = 0;
    for (size_t i = 0; i < list->n; i++) {
        if (kept && !strcmp(list->items[kept - 1].path, list->items[i].path)) {
            item_free(&list->items[i]);
            continue;
        }
        list->items[kept++] = list->items[i];
    }
    list->n = kept;
    return 0;
}

void batch_list_free(batch_list *list) {
    for (size_t i = 0; i < list->n; i++) item_free(&list->items[i]);
    free(list->items);
    memset(list, 0, sizeof *list);
}

void batch_shard(batch_list *list, int k, int n) {
    size_t kept = 0;
    for (size_t i = 0; i < list->n; i++) {
        if (i % (size_t)n == (size_t)(k - 1)) list->items[kept++] = list->items[i];
        else item_free(&list->items[i]);
    }
    list->n = kept;
}

/* ---- sidecar names ---- */

static char *sidecar_for(const batch_item *it, const char *out_dir, int keep_extension) {
    /* Beside the image: the folder of its path. Under out_dir: the folder of its relative path,
     * so the output tree mirrors the input tree. */
    const char *base_src = out_dir ? it->rel : it->path;
    const char *slash = strrchr(base_src, '/');
    const char *name = slash ? slash + 1 : base_src;
    size_t dir_len = slash ? (size_t)(slash - base_src) : 0;
    const char *dot = strrchr(name, '.');
    size_t stem_len = (!keep_extension && dot && dot != name) ? (size_t)(dot - name) : strlen(name);
    size_t out_len = out_dir ? strlen(out_dir) : 0;
    char *s = malloc(out_len + 1 + dir_len + 1 + stem_len + 5);
    if (!s) return NULL;
    char *p = s;
    if (out_dir) {
        memcpy(p, out_dir, out_len);
        p += out_len;
        if (out_len && p[-1] != '/') *p++ = '/';
    }
    if (slash) {
        memcpy(p, base_src, dir_len);
        p += dir_len;
        *p++ = '/';
    }
    memcpy(p, name, stem_len);
    p += stem_len;
    memcpy(p, ".txt", 5);
    return s;
}

static int cmp_sidecar(const void *a, const void *b) {
    return strcmp((*(batch_item *const *)a)->sidecar, (*(batch_item *const *)b)->sidecar);
}

/* Items sharing a sidecar get mark[index] = 1; order ends sorted by sidecar. Returns the
 * number marked. */
static size_t find_collisions(const batch_list *list, batch_item **order, unsigned char *mark) {
    for (size_t i = 0; i < list->n; i++) order[i] = &list->items[i], mark[i] = 0;
    qsort(order, list->n, sizeof *order, cmp_sidecar);
    size_t marked = 0;
    for (size_t i = 1; i < list->n; i++) {
        if (strcmp(order[i]->sidecar, order[i - 1]->sidecar)) continue;
        size_t a = (size_t)(order[i] - list->items), b = (size_t)(order[i - 1] - list->items);
        marked += !mark[a] + !mark[b];
        mark[a] = mark[b] = 1;
    }
    return marked;
}

int batch_assign_sidecars(batch_list *list, const char *out_dir, char *err, size_t errlen) {
    for (size_t i = 0; i < list->n; i++)
        if (!(list->items[i].sidecar = sidecar_for(&list->items[i], out_dir, 0))) goto nomem;
    if (list->n < 2) return 0;
    batch_item **order = malloc(list->n * sizeof *order);
    unsigned char *mark = malloc(list->n);
    if (!order || !mark) {
        free(order);
        free(mark);
        goto nomem;
    }
    if (find_collisions(list, order, mark)) {
        for (size_t i = 0; i < list->n; i++) {
            if (!mark[i]) continue;
            free(list->items[i].sidecar);
            if (!(list->items[i].sidecar = sidecar_for(&list->items[i], out_dir, 1))) {
                free(order);
                free(mark);
                goto nomem;
            }
        }
        if (find_collisions(list, order, mark)) {
            for (size_t i = 1; i < list->n; i++) {
                const batch_item *a = order[i - 1], *b = order[i];
                if (strcmp(a->sidecar, b->sidecar)) continue;
                snprintf(err, errlen, "%s and %s would both write %s", a->path, b->path, a->sidecar);
                break;
            }
            free(order);
            free(mark);
            return -1;
        }
    }
    free(order);
    free(mark);
    return 0;
nomem:
    snprintf(err, errlen, "out of memory");
    return -1;
}
