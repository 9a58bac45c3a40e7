/* `xcap batch [options] DIR|FILE...`: captions every image under the given folders, the model
 * loaded once, resumable after any interruption, shardable across processes. See batch.h for
 * the pieces; this file parses the options and runs them in order:
 * model -> file list -> shard -> what is already done -> caption the rest -> gallery -> summary. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cmd/batch.h"
#include "cmd/commands.h"
#include "cmd/image.h"
#include "cmd/options.h"

enum { DEFAULT_BATCH_SIZE = 8, DEFAULT_PAGE_SIZE = 100 };
static const double DEFAULT_PROGRESS_INTERVAL = 10.0;

static void batch_usage(FILE *out) {
    fprintf(out,
            "usage: xcap batch [options] DIR|FILE...\n"
            "Captions every image under each DIR (recursively, following symlinks, loops skipped) and each\n"
            "FILE, in byte order of their paths, the model loaded once. One record per image; a file that\n"
            "cannot be captioned gets a record with an error and the run goes on.\n\n"
            "Input:\n"
            "      --include GLOB       take the files matching GLOB instead of the image extensions\n"
            "                           (repeatable; a GLOB with '/' is matched against the path under DIR)\n"
            "      --exclude GLOB       skip files and folders matching GLOB (repeatable)\n"
            "      --shard K/N          only the K-th of N interleaved shares of the sorted list (1 <= K <= N)\n"
            "Output:\n"
            "      --format F           jsonl | csv | txt (default: jsonl)\n"
            "  -o, --output FILE        jsonl/csv records go to FILE (default: standard output)\n"
            "      --out-dir DIR        txt: sidecars under DIR, mirroring the input tree\n"
            "                           (default: <name>.txt beside each image)\n"
            "      --skip-existing      skip images already recorded in FILE or having a sidecar (default)\n"
            "      --overwrite          caption every image again (FILE starts afresh)\n"
            "      --html DIR           also write a static gallery (thumbnails, captions, failures) to DIR\n"
            "      --html-page-size N   images per gallery page (default: %d)\n"
            "      --max-pixels N       images of more than N pixels get an error record, read from the\n"
            "                           file's header before decoding (default: %lld)\n"
            "Speed:\n"
            "  -j, --jobs N             captioning threads, each with its own state (default: 1; with\n"
            "                           several, each computes on one thread)\n"
            "      --decode-threads N   image decoding threads, working ahead of captioning (default: 1)\n"
            "      --batch-size N       images per encoder pass and lock-step decoding group, 1 to 64\n"
            "                           (default: %d); records are the same for any N\n"
            "Progress:\n"
            "  -q, --quiet              no progress and no summary on standard error\n"
            "      --progress-interval S  seconds between progress lines when standard error is not a\n"
            "                           terminal (default: %g)\n"
            "  -v, --verbose            model warnings, and each failure as it happens\n\n"
            "Image extensions taken by default (any case):",
            DEFAULT_PAGE_SIZE, IMAGE_DEFAULT_MAX_PIXELS, DEFAULT_BATCH_SIZE, DEFAULT_PROGRESS_INTERVAL);
    for (int i = 0; batch_default_extensions[i]; i++) fprintf(out, " .%s", batch_default_extensions[i]);
    fprintf(out,
            "\nRecords: jsonl {\"path\", \"width\", \"height\", \"caption\", \"tokens\", \"score\", \"sum_logprob\",\n"
            "\"n_best\"} or {\"path\", \"error\"}; csv the same columns with a header row; a path that is not\n"
            "UTF-8 is shown with U+FFFD and given exactly in \"path_base64\".\n\n");
    options_print_help(out);
    fprintf(out, "\nExit codes: 0 every image captioned or skipped, 1 some failed (the others are still\n"
                 "captioned), 2 usage error, 3 the model could not be loaded, 130 / 143 stopped by SIGINT /\n"
                 "SIGTERM (the record in hand is finished first; run the same command again to resume).\n");
}

typedef struct {
    batch_format format;
    const char *output, *out_dir, *html_dir;
    int overwrite, quiet;
    int shard_k, shard_n;
    int jobs, decode_threads, batch_size, page_size;
    long long max_pixels;
    double progress_interval;
    const char **include, **exclude;
    size_t n_include, n_exclude;
    char **roots;
    int n_roots;
} batch_settings;


static int parse_count(const char *flag, const char *v, int lo, int hi, int *out) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi) {
        fprintf(stderr, "xcap batch: %s: expected an integer in [%d, %d], got '%s'\n", flag, lo, hi, v);
        return -1;
    }
    *out = (int)x;
    return 0;
}

static int parse_shard(const char *v, int *k, int *n) {
    char *slash;
    errno = 0;
    long a = strtol(v, &slash, 10);
    if (!errno && slash != v && *slash == '/') {
        char *end;
        long b = strtol(slash + 1, &end, 10);
        if (!errno && end != slash + 1 && !*end && b >= 1 && b <= 1000000 && a >= 1 && a <= b) {
            *k = (int)a;
            *n = (int)b;
            return 0;
        }
    }
    fprintf(stderr, "xcap batch: --shard: expected K/N with 1 <= K <= N, got '%s'\n", v);
    return -1;
}

static int push(const char ***list, size_t *n, const char *v) {
    const char **bigger = realloc(*list, (*n + 1) * sizeof *bigger);
    if (!bigger) return -1;
    bigger[(*n)++] = v;
    *list = bigger;
    return 0;
}

/* Parses one of batch's own options. 1 taken, 0 not ours, -1 bad (message printed). */
static int parse_batch_option(batch_settings *s, int argc, char **argv, int *i) {
    const char *a = argv[*i], *v = NULL;
    int m;
    if (!strcmp(a, "--overwrite")) return s->overwrite = 1;
    if (!strcmp(a, "--skip-existing")) {
        s->overwrite = 0;
        return 1;
    }
    if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) return s->quiet = 1;
#define VALUE(lng, shrt) ((m = options_take_value(argc, argv, i, lng, shrt, &v)) != 0)
    if (VALUE("--format", NULL)) {
        if (m < 0) return -1;
        if (!strcmp(v, "jsonl")) s->format = FORMAT_JSONL;
        else if (!strcmp(v, "csv")) s->format = FORMAT_CSV;
        else if (!strcmp(v, "txt")) s->format = FORMAT_TXT;
        else {
            fprintf(stderr, "xcap batch: --format: expected jsonl, csv or txt, got '%s'\n", v);
            return -1;
        }
    } else if (VALUE("--output", "-o")) {
        if (m < 0) return -1;
        s->output = v;
    } else if (VALUE("--out-dir", NULL)) {
        if (m < 0) return -1;
        s->out_dir = v;
    } else if (VALUE("--html", NULL)) {
        if (m < 0) return -1;
        s->html_dir = v;
    } else if (VALUE("--include", NULL)) {
        if (m < 0 || push(&s->include, &s->n_include, v)) return -1;
    } else if (VALUE("--exclude", NULL)) {
        if (m < 0 || push(&s->exclude, &s->n_exclude, v)) return -1;
    } else if (VALUE("--shard", NULL)) {
        if (m < 0 || parse_shard(v, &s->shard_k, &s->shard_n)) return -1;
    } else if (VALUE("--jobs", "-j")) {
        if (m < 0 || parse_count("--jobs", v, 1, 256, &s->jobs)) return -1;
    } else if (VALUE("--decode-threads", NULL)) {
        if (m < 0 || parse_count("--decode-threads", v, 1, 256, &s->decode_threads)) return -1;
    } else if (VALUE("--batch-size", NULL)) {
        if (m < 0 || parse_count("--batch-size", v, 1, BATCH_MAX_GROUP, &s->batch_size)) return -1;
    } else if (VALUE("--html-page-size", NULL)) {
        if (m < 0 || parse_count("--html-page-size", v, 1, 1000000, &s->page_size)) return -1;
    } else if (VALUE("--progress-interval", NULL)) {
        if (m < 0) return -1;
        char *end;
        errno = 0;
        s->progress_interval = strtod(v, &end);
        if (errno || end == v || *end || !(s->progress_interval >= 0 && s->progress_interval <= 1e6)) {
            fprintf(stderr, "xcap batch: --progress-interval: expected seconds in [0, 1e6], got '%s'\n", v);
            return -1;
        }
    } else {
        return 0;
    }
#undef VALUE
    return 1;
}

/* mkdir -p. 0, or -1 with errno. */
static int make_dirs(const char *dir) {
    char *p = malloc(strlen(dir) + 1);
    if (!p) return -1;
    strcpy(p, dir);
    int rc = 0;
    for (char *c = p + 1;; c++) {
        if (*c != '/' && *c != '\0') continue;
        char was = *c;
        *c = '\0';
        if (mkdir(p, 0777) != 0 && errno != EEXIST) rc = -1;
        *c = was;
        if (rc || !was) break;
    }
    struct stat st;
    if (rc == 0 && stat(p, &st) != 0) rc = -1;
    else if (rc == 0 && !S_ISDIR(st.st_mode)) errno = ENOTDIR, rc = -1;
    free(p);
    return rc;
}

static long env_long(const char *name) {
    const char *v = getenv(name);
    return v && *v ? strtol(v, NULL, 10) : 0;
}

/* Writes the gallery for the whole (sharded) list: this run's records, and earlier runs'. */
static int write_gallery(const batch_settings *s, const batch_list *list, const batch_seen *seen, char **done_before,
                         const batch_run_result *res, const size_t *todo_index) {
    batch_html_entry *entries = calloc(list->n ? list->n : 1, sizeof *entries);
    batch_record *sidecar_records = calloc(list->n ? list->n : 1, sizeof *sidecar_records);
    if (!entries || !sidecar_records) {
        free(entries);
        free(sidecar_records);
        fprintf(stderr, "xcap batch: out of memory\n");
        return -1;
    }
    for (size_t i = 0; i < list->n; i++) {
        const batch_item *it = &list->items[i];
        entries[i].path = it->path;
        if (todo_index[i] != (size_t)-1) {
            const batch_record *r = &res->records[todo_index[i]];
            entries[i].rec = r->path ? r : NULL;
        } else if (s->format == FORMAT_TXT) {
            sidecar_records[i].caption = done_before[i];
            done_before[i] = NULL;
            entries[i].rec = sidecar_records[i].caption ? &sidecar_records[i] : NULL;
        } else {
            entries[i].rec = batch_seen_find(seen, it->path);
        }
    }
    char title[512] = "xcap batch:";
    for (int r = 0; r < s->n_roots; r++) {
        size_t used = strlen(title);
        snprintf(title + used, sizeof title - used, " %s", s->roots[r]);
    }
    char err[1024];
    int rc = batch_write_html(s->html_dir, entries, list->n, s->page_size, title, err, sizeof err);
    if (rc != 0) fprintf(stderr, "xcap batch: gallery: %s\n", err);
    for (size_t i = 0; i < list->n; i++) batch_record_clear(&sidecar_records[i]);
    free(sidecar_records);
    free(entries);
    return rc;
}

static void on_stop_signal(int signo) { batch_stop_signal = signo; }

static void print_summary(const batch_list *list, size_t skipped, size_t skipped_failed, const batch_run_result *res,
                          double run_seconds, double load_seconds) {
    size_t processed = res->captioned + res->failed;
    fprintf(stderr, "xcap batch: %zu images: %zu captioned, %zu skipped", list->n, res->captioned, skipped);
    if (skipped_failed) fprintf(stderr, " (%zu of them failed before)", skipped_failed);
    fprintf(stderr, ", %zu failed; %.1f s, %.2f images/s (model loaded in %.2f s)\n", res->failed, run_seconds,
            run_seconds > 0 ? (double)processed / run_seconds : 0.0, load_seconds);
    if (list->loops) fprintf(stderr, "xcap batch: %zu symlink loops skipped\n", list->loops);
    if (list->dir_failures) fprintf(stderr, "xcap batch: %zu folders could not be listed\n", list->dir_failures);
    if (res->n_first_errors) {
        fprintf(stderr, "xcap batch: first failures:\n");
        for (size_t i = 0; i < res->n_first_errors; i++) fprintf(stderr, "  %s\n", res->first_errors[i]);
    }
}

int cmd_batch(int argc, char **argv) {
    cli_options opt;
    options_init(&opt);
    batch_settings s = {.format = FORMAT_JSONL, .jobs = 1, .decode_threads = 1, .batch_size = DEFAULT_BATCH_SIZE,
                        .max_pixels = IMAGE_DEFAULT_MAX_PIXELS,
                        .page_size = DEFAULT_PAGE_SIZE, .progress_interval = DEFAULT_PROGRESS_INTERVAL};
    s.roots = calloc(argc > 0 ? (size_t)argc : 1, sizeof *s.roots);
    int code = EXIT_USAGE, only_paths = 0;
    xcap_model *model = NULL;
    batch_list list = {0};
    batch_seen seen = {0};
    batch_item **todo = NULL;
    size_t *todo_index = NULL;
    char **done_before = NULL;
    int out_fd = -1;
    batch_run_result res = {0};
    size_t n_todo = 0;
    if (!s.roots) goto done;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (only_paths || a[0] != '-') {
            s.roots[s.n_roots++] = argv[i];
            continue;
        }
        if (!strcmp(a, "--")) {
            only_paths = 1;
            continue;
        }
        if (!strcmp(a, "-")) {
            fprintf(stderr, "xcap batch: standard input is not a folder (use xcap caption - for one image)\n");
            goto done;
        }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            batch_usage(stdout);
            code = EXIT_ALL_OK;
            goto done;
        }
        int r = parse_batch_option(&s, argc, argv, &i);
        if (r == 0) r = options_parse_max_pixels(argc, argv, &i, &s.max_pixels);
        if (r == 0) r = options_parse_one(&opt, argc, argv, &i);
        if (r == 0) fprintf(stderr, "xcap batch: unknown option '%s' (see xcap batch --help)\n", a);
        if (r <= 0) goto done;
    }
    if (s.n_roots == 0) {
        fprintf(stderr, "xcap batch: no folder or image given (see xcap batch --help)\n");
        goto done;
    }
    if (opt.json && s.format != FORMAT_JSONL) {
        fprintf(stderr, "xcap batch: --json conflicts with --format (JSON lines are --format jsonl)\n");
        goto done;
    }
    if (s.format == FORMAT_TXT && s.output) {
        fprintf(stderr, "xcap batch: -o is for --format jsonl or csv; txt writes sidecar files (--out-dir to put them elsewhere)\n");
        goto done;
    }
    if (s.format != FORMAT_TXT && s.out_dir) {
        fprintf(stderr, "xcap batch: --out-dir is for --format txt (use -o FILE for jsonl and csv)\n");
        goto done;
    }
    if (s.output && !strcmp(s.output, "-")) s.output = NULL;
    if (s.jobs > 1 && (opt.set & OPT_THREADS) && opt.values.n_threads != 1) {
        /* Jobs already share the cores; letting each one also fan out to all of them would
         * only oversubscribe. */
        fprintf(stderr, "xcap batch: --jobs %d runs each job on one thread; --threads must be 1 with it\n", s.jobs);
        goto done;
    }

    /* The model first: a broken model is exit 3 before any file is touched. */
    double t0 = batch_now();
    char err[2048];
    const char *dir = options_model_dir(&opt);
    if (xcap_model_load(dir, &model, err, sizeof err) != XCAP_OK) {
        fprintf(stderr, "xcap: cannot load model %s: %s\n", dir, err);
        code = EXIT_MODEL;
        goto done;
    }
    double load_seconds = batch_now() - t0;
    if (opt.verbose && *xcap_model_warnings(model)) fprintf(stderr, "%s", xcap_model_warnings(model));
    xcap_params params;
    if (options_resolve(&opt, model, &params) != 0) goto done;
    if (s.jobs > 1) params.n_threads = 1;
    int n_best = params.num_return_sequences > 1 ? params.num_return_sequences : 1;

    /* Output folders exist before the walk, so that the walk can leave them out. */
    batch_walk_options wopt = {.include = s.include, .n_include = s.n_include, .exclude = s.exclude,
                               .n_exclude = s.n_exclude, .quiet = s.quiet};
    const char *made[2] = {s.html_dir, s.format == FORMAT_TXT ? s.out_dir : NULL};
    for (int k = 0; k < 2; k++) {
        if (!made[k]) continue;
        char sub[PATH_MAX];
        snprintf(sub, sizeof sub, "%s/thumbs", made[k]);
        struct stat st;
        if (make_dirs(k == 0 ? sub : made[k]) != 0 || stat(made[k], &st) != 0) {
            fprintf(stderr, "xcap batch: cannot create %s: %s\n", made[k], strerror(errno));
            code = EXIT_SOME_FAILED;
            goto done;
        }
        wopt.skip_dev[wopt.n_skip] = st.st_dev;
        wopt.skip_ino[wopt.n_skip++] = st.st_ino;
    }

    if (batch_walk(s.roots, s.n_roots, &wopt, &list) != 0) {
        fprintf(stderr, "xcap batch: out of memory\n");
        code = EXIT_SOME_FAILED;
        goto done;
    }
    /* Sidecar names are settled on the whole list, before sharding, so that every shard
     * resolves a collision the same way. */
    if (s.format == FORMAT_TXT && batch_assign_sidecars(&list, s.out_dir, err, sizeof err) != 0) {
        fprintf(stderr, "xcap batch: %s\n", err);
        goto done;
    }
    if (s.shard_n) batch_shard(&list, s.shard_k, s.shard_n);
    if (list.n == 0 && !s.quiet) fprintf(stderr, "xcap batch: no image files found\n");

    int usage_error = 0;
    if (s.format != FORMAT_TXT && s.output) {
        size_t cut = 0;
        out_fd = batch_open_output(s.output, s.format, n_best, s.overwrite, &seen, &cut, &usage_error, err, sizeof err);
        if (out_fd < 0) {
            fprintf(stderr, "xcap batch: %s\n", err);
            code = usage_error ? EXIT_USAGE : EXIT_SOME_FAILED;
            goto done;
        }
        if (cut && !s.overwrite && !s.quiet)
            fprintf(stderr, "xcap batch: %s: removed an incomplete last record (%zu bytes) left by an interrupted run\n",
                    s.output, cut);
    } else if (s.format == FORMAT_CSV) {
        char *header = batch_csv_header(n_best);
        if (!header || write_all(STDOUT_FILENO, header, strlen(header)) != 0) {
            fprintf(stderr, "xcap batch: cannot write standard output: %s\n", strerror(errno));
            free(header);
            code = EXIT_SOME_FAILED;
            goto done;
        }
        free(header);
    }

    /* What is already done. */
    todo = calloc(list.n ? list.n : 1, sizeof *todo);
    todo_index = calloc(list.n ? list.n : 1, sizeof *todo_index);
    done_before = calloc(list.n ? list.n : 1, sizeof *done_before);
    if (!todo || !todo_index || !done_before) {
        fprintf(stderr, "xcap batch: out of memory\n");
        code = EXIT_SOME_FAILED;
        goto done;
    }
    size_t skipped = 0, skipped_failed = 0;
    for (size_t i = 0; i < list.n; i++) {
        batch_item *it = &list.items[i];
        int done_already = 0;
        if (!s.overwrite) {
            if (s.format == FORMAT_TXT) {
                struct stat st;
                done_already = stat(it->sidecar, &st) == 0;
                if (done_already && s.html_dir) done_before[i] = batch_read_sidecar(it->sidecar);
            } else if (out_fd >= 0) {
                const batch_record *r = batch_seen_find(&seen, it->path);
                done_already = r != NULL;
                skipped_failed += r && r->error;
            }
        }
        todo_index[i] = (size_t)-1;
        if (done_already) {
            skipped++;
            continue;
        }
        todo_index[i] = n_todo;
        todo[n_todo++] = it;
    }

    batch_progress progress;
    batch_progress_init(&progress, s.quiet, s.progress_interval, n_todo, skipped);
    batch_run_options ropt = {
        .format = s.format,
        .out_fd = out_fd >= 0 ? out_fd : STDOUT_FILENO,
        .output_name = s.output ? s.output : "standard output",
        .n_best = n_best,
        .jobs = s.jobs,
        .decode_threads = s.decode_threads,
        .batch_size = s.batch_size,
        .max_pixels = s.max_pixels,
        .html_dir = s.html_dir,
        .verbose = opt.verbose,
        .kill_after = env_long("XCAP_TEST_KILL_AFTER"),
        .kill_partial = env_long("XCAP_TEST_KILL_PARTIAL") != 0,
        .signal_after = env_long("XCAP_TEST_SIGNAL_AFTER"),
        .test_signal = env_long("XCAP_TEST_SIGNAL") == SIGTERM ? SIGTERM : SIGINT,
    };
    double t1 = batch_now();
    int rc = XCAP_OK;
    /* Ctrl-C (or a scheduler's SIGTERM) ends the run between records: the one being written is
     * completed, the summary printed. A second signal kills at once (SA_RESETHAND). */
    struct sigaction stop = {0}, old_int, old_term;
    stop.sa_handler = on_stop_signal;
    stop.sa_flags = SA_RESETHAND;
    sigemptyset(&stop.sa_mask);
    sigaction(SIGINT, &stop, &old_int);
    sigaction(SIGTERM, &stop, &old_term);
    /* Past a file-size limit (ulimit -f) a write should fail with EFBIG and be reported, not
     * kill the process. */
    signal(SIGXFSZ, SIG_IGN);
    if (n_todo) rc = batch_run(model, &params, todo, n_todo, &ropt, &progress, &res, err, sizeof err);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    double run_seconds = batch_now() - t1;
    batch_progress_clear(&progress);
    if (rc != XCAP_OK && !res.write_failed) {
        fprintf(stderr, "xcap: %s\n", err);
        code = rc == XCAP_ERR_NOMEM ? EXIT_SOME_FAILED : EXIT_MODEL;
        goto done;
    }
    if (out_fd >= 0 && close(out_fd) != 0 && !res.write_failed) {
        fprintf(stderr, "xcap batch: cannot write %s: %s\n", s.output, strerror(errno));
        res.write_failed = 1;
    }
    out_fd = -1;
    int gallery_failed = 0;
    if (s.html_dir && !res.write_failed) {
        if (!res.records) res.records = calloc(1, sizeof *res.records);
        gallery_failed = write_gallery(&s, &list, &seen, done_before, &res, todo_index) != 0;
    }
    if (!s.quiet) print_summary(&list, skipped, skipped_failed, &res, run_seconds, load_seconds);
    code = (res.failed || res.write_failed || gallery_failed || list.dir_failures) ? EXIT_SOME_FAILED : EXIT_ALL_OK;
    if (res.interrupted) {
        /* Even with --quiet: the run did not do what was asked. */
        fprintf(stderr, "xcap batch: interrupted by %s after %zu of %zu images; the same command resumes\n",
                res.interrupted == SIGINT ? "SIGINT" : "SIGTERM", res.captioned + res.failed, n_todo);
        code = 128 + res.interrupted;
    }

done:
    if (out_fd >= 0) close(out_fd);
    batch_run_result_free(&res, n_todo);
    if (done_before)
        for (size_t i = 0; i < list.n; i++) free(done_before[i]);
    free(done_before);
    free(todo);
    free(todo_index);
    batch_seen_free(&seen);
    batch_list_free(&list);
    xcap_model_free(model);
    free(s.include);
    free(s.exclude);
    free(s.roots);
    return code;
}
