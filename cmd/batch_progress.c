/* Progress of `xcap batch` on stderr: a bar redrawn in place on a terminal, a plain line every
 * few seconds otherwise (logs of a Slurm job or a CI run), nothing with --quiet. */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cmd/batch.h"

double batch_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void batch_progress_init(batch_progress *p, int quiet, double interval, size_t total, size_t skipped) {
    memset(p, 0, sizeof *p);
    p->quiet = quiet;
    p->tty = isatty(STDERR_FILENO);
    p->interval = interval;
    p->start = p->last = batch_now();
    p->total = total;
    p->skipped = skipped;
}

static void format_duration(char *out, size_t n, double s) {
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(out, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else snprintf(out, n, "%ld:%02ld", t / 60, t % 60);
}

void batch_progress_update(batch_progress *p, int force) {
    if (p->quiet) return;
    double now = batch_now();
    /* The bar at most 10 times a second; plain lines every interval seconds. */
    if (!force && now - p->last < (p->tty ? 0.1 : p->interval)) return;
    p->last = now;
    double elapsed = now - p->start;
    double rate = elapsed > 0 ? (double)p->done / elapsed : 0;
    char eta[32] = "?";
    if (rate > 0) format_duration(eta, sizeof eta, (double)(p->total - p->done) / rate);
    int percent = p->total ? (int)(100.0 * (double)p->done / (double)p->total) : 100;
    char failed[48] = "";
    if (p->failed) snprintf(failed, sizeof failed, "%s%zu failed", p->tty ? "  " : ", ", p->failed);
    if (p->tty) {
        enum { WIDTH = 24 };
        char bar[WIDTH + 1];
        int filled = p->total ? (int)((double)WIDTH * (double)p->done / (double)p->total) : WIDTH;
        for (int i = 0; i < WIDTH; i++) bar[i] = i < filled ? '#' : '.';
        bar[WIDTH] = '\0';
        fprintf(stderr, "\r\033[K[%s] %zu/%zu %3d%%  %.1f images/s  ETA %s%s", bar, p->done, p->total, percent, rate,
                eta, failed);
        p->shown = 1;
    } else {
        fprintf(stderr, "xcap batch: %zu/%zu (%d%%), %.1f images/s, ETA %s%s\n", p->done, p->total, percent, rate,
                eta, failed);
    }
    fflush(stderr);
}

void batch_progress_clear(batch_progress *p) {
    if (p->shown) fputc('\n', stderr);
    p->shown = 0;
}
