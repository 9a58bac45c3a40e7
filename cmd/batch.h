/* `xcap batch`: caption a whole tree of images with the model loaded once. The pieces, one file
 * each: batch_walk.c (the sorted file list), batch_format.c (records as JSONL / CSV / sidecar
 * text, UTF-8 and base64 helpers), batch_resume.c (what an earlier run already recorded),
 * batch_pipeline.c (decoding threads feeding captioning threads, records written in order),
 * batch_progress.c (progress line and summary), batch_html.c (the static gallery), batch.c
 * (options and the run). Internal to the tool; nothing here is public API. */
#ifndef XCAP_CMD_BATCH_H
#define XCAP_CMD_BATCH_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "xcap.h"

/* ---- the file list (batch_walk.c) ---- */

typedef struct {
    char *path;       /* as recorded and opened: the argument joined with the path under it */
    const char *rel;  /* inside path: relative to its argument (a FILE argument: its base name) */
    char *walk_error; /* set when the walk already knows the file cannot be read */
    char *sidecar;    /* --format txt: where its caption goes */
} batch_item;

typedef struct {
    batch_item *items;
    size_t n, cap;
    size_t loops;         /* symlinks that led back to one of their own ancestors (skipped) */
    size_t dir_failures;  /* directories that could not be listed (reported, counted as failures) */
} batch_list;

typedef struct {
    const char **include; /* NULL: the default image extensions */
    size_t n_include;
    const char **exclude;
    size_t n_exclude;
    /* Directories never entered (the gallery and sidecar output folders), by device and inode. */
    dev_t skip_dev[2];
    ino_t skip_ino[2];
    int n_skip;
    int quiet; /* no warnings (symlink loops); errors are still printed */
} batch_walk_options;

/* Walks every argument (directories recursively, following symlinks, loops skipped with a
 * warning on stderr), then sorts the list by path, byte by byte, and drops exact duplicates.
 * Returns 0, or -1 when out of memory. */
int batch_walk(char *const *roots, int n_roots, const batch_walk_options *opt, batch_list *list);
void batch_list_free(batch_list *list);

/* Whether a walked file's name (or relative path, when the pattern has a '/') is taken. */
int batch_name_selected(const batch_walk_options *opt, const char *name, const char *rel);

/* The default extensions, for --help. */
extern const char *const batch_default_extensions[];

/* --format txt: sets every item's sidecar (<stem>.txt beside the image, or under out_dir
 * mirroring the tree). Two images that would share one (a.jpg and a.png) both fall back to
 * <name>.<ext>.txt. Returns 0, or -1 with a message in err when names still collide. */
int batch_assign_sidecars(batch_list *list, const char *out_dir, char *err, size_t errlen);

/* --shard K/N: keeps items i (0-based, in sorted order) with i % N == K - 1. */
void batch_shard(batch_list *list, int k, int n);

/* ---- records (batch_format.c) ---- */

typedef enum { FORMAT_JSONL, FORMAT_CSV, FORMAT_TXT } batch_format;

/* One image's outcome, as written or as read back from an earlier run's output. */
typedef struct {
    char *path;   /* raw bytes, NUL-terminated */
    int width, height;
    char *caption; /* NULL when error is set */
    double score, sum_logprob;
    char *error;
} batch_record;

void batch_record_clear(batch_record *r);

int utf8_valid(const char *s, size_t n);
/* A valid UTF-8 copy: every byte that is not part of a valid sequence becomes U+FFFD. */
char *utf8_sanitize(const char *s, size_t n);
char *base64_encode(const uint8_t *data, size_t n);
/* Returns the decoded bytes (NUL-terminated, length in *n), or NULL when s is not base64. */
uint8_t *base64_decode(const char *s, size_t *n);

/* The record line for an image. With r (a caption): its fields; else the error message.
 * width/height 0 = unknown. Returns a malloc'ed line ending in '\n'. */
char *batch_jsonl_line(const char *path, int width, int height, xcap_result *r, const char *error);
char *batch_csv_line(const char *path, int width, int height, xcap_result *r, const char *error,
                     int n_best);
char *batch_csv_header(int n_best);
/* The sidecar text: the caption, then the other n-best captions, one per line. */
char *batch_sidecar_text(xcap_result *r);

/* Numbers as cJSON prints them, so a CSV field and a JSON value parse to the same double. */
void batch_format_number(char *out, size_t outlen, double v);

/* Parses one CSV record starting at s (length n). Returns the bytes it used, including the
 * line end, or 0 when the record is not complete (no line end outside quotes) and -1 when it is
 * malformed. Fields are malloc'ed into *fields (count *n_fields). */
long csv_parse_record(const char *s, size_t n, char ***fields, int *n_fields);
void csv_free_fields(char **fields, int n_fields);

/* Writes all of buf to fd, retrying short writes. Returns 0, or -1 with errno set. */
int write_all(int fd, const char *buf, size_t n);

/* Writes a sidecar: into <dir>/.<name>.xcap-tmp, then renamed over the target, so a sidecar is
 * either absent or complete. Creates missing folders. Returns 0, or -1 with a message. */
int batch_write_sidecar(const char *target, const char *text, int kill_before_rename, char *err,
                        size_t errlen);

/* ---- what an earlier run recorded (batch_resume.c) ---- */

typedef struct {
    batch_record *records;
    size_t n, cap;
    size_t *slots; /* open-addressing hash of record indices + 1 by path; 0 = empty */
    size_t n_slots;
} batch_seen;

void batch_seen_free(batch_seen *s);
/* The record for a path, or NULL. */
const batch_record *batch_seen_find(const batch_seen *s, const char *path);
/* Takes ownership of r's strings. Returns 0, or -1 when out of memory. */
int batch_seen_add(batch_seen *s, batch_record *r);

/* Opens the JSONL/CSV output FILE for appending. Unless overwrite, the records already in it go
 * into seen and an incomplete last record (a run killed mid-write) is cut off; with overwrite
 * the file starts empty. A CSV file gets its header when empty. The file is locked so that
 * two runs cannot append to it at once. Returns the descriptor, or -1 with a message (the
 * file is not ours, cannot be opened, or is locked). *usage_error tells bad input (exit 2)
 * from I/O failure. */
int batch_open_output(const char *file, batch_format fmt, int n_best, int overwrite, batch_seen *seen,
                      size_t *cut_bytes, int *usage_error, char *err, size_t errlen);

/* The first line of a sidecar (the caption), for the gallery; NULL when unreadable. */
char *batch_read_sidecar(const char *path);

/* ---- progress (batch_progress.c) ---- */

typedef struct {
    int quiet, tty;
    double interval; /* seconds between plain lines when stderr is not a terminal */
    double start, last;
    size_t total, done, failed, skipped;
    int shown; /* a bar is on screen (to be ended with a newline) */
} batch_progress;

double batch_now(void);
void batch_progress_init(batch_progress *p, int quiet, double interval, size_t total, size_t skipped);
/* Redraws the bar (rate-limited) or prints a periodic line; force ignores the rate limit. */
void batch_progress_update(batch_progress *p, int force);
/* Ends the bar line so that other messages start on a clean line. */
void batch_progress_clear(batch_progress *p);

/* ---- the gallery (batch_html.c) ---- */

typedef struct {
    const char *path;
    const batch_record *rec; /* NULL: not captioned (e.g. the run stopped) */
} batch_html_entry;

/* Where an image's thumbnail lives: <dir>/thumbs/<hash of the path>.jpg (malloc'ed). */
char *batch_thumb_path(const char *html_dir, const char *image_path);
/* Downscales to fit THUMB_SIDE and writes a JPEG through a temporary file. 0 or -1. */
int batch_write_thumb(const char *thumb_path, const uint8_t *rgb, int width, int height);
/* Writes index.html, page-2.html, ..., failures.html; makes missing thumbnails by decoding the
 * image again. Returns 0, or -1 with a message. */
int batch_write_html(const char *dir, const batch_html_entry *entries, size_t n, int page_size,
                     const char *title, char *err, size_t errlen);

/* ---- the run (batch_pipeline.c) ---- */

enum { BATCH_MAX_GROUP = 64 };

typedef struct {
    batch_format format;
    int out_fd;          /* JSONL/CSV records */
    const char *output_name; /* for messages */
    int n_best;          /* CSV columns */
    int jobs;            /* captioning threads, each with its own xcap_state */
    int decode_threads;
    int batch_size;      /* images per xcap_caption_batch call (at most BATCH_MAX_GROUP) */
    long long max_pixels; /* larger images get an error record (read from their header) */
    const char *html_dir;
    int verbose;
    long kill_after;     /* test hook: SIGKILL after this many records (0 = off) */
    int kill_partial;    /* ... with the last record only half written */
    long signal_after;   /* test hook: raise test_signal after this many records (0 = off) */
    int test_signal;
} batch_run_options;

typedef struct {
    size_t captioned, failed;
    int write_failed;     /* the output could not be written: the run stopped */
    int interrupted;      /* the signal (SIGINT, SIGTERM) that stopped the run, else 0 */
    char *first_errors[5];
    size_t n_first_errors;
    batch_record *records; /* with html_dir: one per todo item (path borrowed from the item) */
} batch_run_result;

/* Set by the SIGINT/SIGTERM handler of `xcap batch` to the signal's number: the run writes the
 * record in hand, then stops (records are complete lines, so a resumed run carries on). */
extern volatile sig_atomic_t batch_stop_signal;

/* Captions todo[0..n), writing one record per image in list order. Returns XCAP_OK, the
 * xcap_state_new error (the model is unusable), or XCAP_ERR_IO when the output could not be
 * written (already reported on stderr; res->write_failed). */
int batch_run(const xcap_model *model, const xcap_params *params, batch_item **todo, size_t n,
              const batch_run_options *opt, batch_progress *progress, batch_run_result *res, char *err,
              size_t errlen);
void batch_run_result_free(batch_run_result *res, size_t n);

#endif
