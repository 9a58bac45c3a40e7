/* The captioning run of `xcap batch`: decoding threads read and decode image files while
 * captioning threads (one xcap_state each, one shared model) run the network, and the calling
 * thread writes the records in list order as they complete.
 *
 * Work moves through a ring of `window` slots. Image i lives in slot i % window; decoders take
 * the next image only while it is within `window` of the next record to write, so memory stays
 * bounded (a few decoded images per captioning thread) however long the list is; decoders also
 * wait while the decoded pixels waiting for captioning pass DECODED_BUDGET, since a few
 * 100-megapixel photos would otherwise hold gigabytes. Records are written in list order, so the
 * output does not depend on thread timing. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cmd/batch.h"
#include "cmd/image.h"
#include "cmd/result_json.h"

enum { SLOT_FREE, SLOT_DECODING, SLOT_DECODED, SLOT_CAPTIONING, SLOT_DONE };

static const size_t DECODED_BUDGET = (size_t)512 << 20; /* bytes of RGB */

volatile sig_atomic_t batch_stop_signal = 0;

typedef struct {
    size_t index;
    int state;
    float *pixels; /* the model's input, preprocessed by the decoding thread */
    int width, height;
    char *error; /* names the file */
    xcap_result result;
    int has_result;
} slot;

typedef struct {
    const xcap_model *model;
    const xcap_params *params;
    batch_item **todo;
    size_t n;
    const batch_run_options *opt;
    slot *slots;
    size_t window;
    pthread_mutex_t mu;
    pthread_cond_t changed;
    size_t next_decode, next_write;
    size_t decoded_bytes; /* pixels held by decoded images not yet captioned */
    int stop;
} pipeline;

typedef struct {
    pipeline *p;
    xcap_state *state;
} worker;

static char *dup_string(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static char *message(const char *path, const char *err) {
    size_t n = strlen(path) + strlen(err) + 3;
    char *m = malloc(n);
    if (m) snprintf(m, n, "%s: %s", path, err);
    return m;
}

static void *decode_thread(void *arg) {
    pipeline *p = arg;
    char err[1024];
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->next_decode < p->n &&
               (p->next_decode >= p->next_write + p->window || p->decoded_bytes >= DECODED_BUDGET))
            pthread_cond_wait(&p->changed, &p->mu);
        if (p->stop || p->next_decode >= p->n) break;
        size_t i = p->next_decode++;
        slot *s = &p->slots[i % p->window];
        s->index = i;
        s->state = SLOT_DECODING;
        pthread_mutex_unlock(&p->mu);

        const batch_item *it = p->todo[i];
        uint8_t *rgb = NULL;
        int w = 0, h = 0;
        char *error = NULL;
        if (it->walk_error) error = dup_string(it->walk_error);
        else if (image_load_file_limit(it->path, p->opt->max_pixels, &rgb, &w, &h, err, sizeof err) != 0)
            error = dup_string(err);
        if (rgb && p->opt->html_dir) {
            /* Thumbnails here, off the captioning threads; a failed one only costs the
             * gallery a picture. */
            char *thumb = batch_thumb_path(p->opt->html_dir, it->path);
            if (thumb) batch_write_thumb(thumb, rgb, w, h);
            free(thumb);
        }
        /* Resize and normalise here too, so that the captioning threads only run the network;
         * the full-size RGB is dropped as soon as the model's input exists. */
        float *pixels = NULL;
        size_t pixel_bytes = xcap_pixel_count(p->model) * sizeof *pixels;
        if (rgb) {
            pixels = malloc(pixel_bytes);
            if (!pixels) error = dup_string("out of memory");
            else if (xcap_preprocess(p->model, rgb, w, h, pixels, err, sizeof err) != XCAP_OK) {
                error = message(it->path, err);
                free(pixels);
                pixels = NULL;
            }
            free(rgb);
        }

        pthread_mutex_lock(&p->mu);
        s->pixels = pixels;
        s->width = w;
        s->height = h;
        s->error = error;
        if (!pixels && !error) s->error = dup_string("out of memory");
        s->state = pixels ? SLOT_DECODED : SLOT_DONE;
        if (pixels) p->decoded_bytes += pixel_bytes;
        pthread_cond_broadcast(&p->changed);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* The decoded slot with the lowest index, or NULL. Called with the lock held. */
static slot *next_decoded(pipeline *p, int *pending) {
    *pending = 0;
    for (size_t i = p->next_write; i < p->next_decode; i++) {
        slot *s = &p->slots[i % p->window];
        if (s->index != i) continue;
        if (s->state == SLOT_DECODED) return s;
        if (s->state == SLOT_DECODING) *pending = 1;
    }
    return NULL;
}

/* Captions a group of decoded slots in one xcap_caption_batch call (one encoder pass, decoding
 * in lock step). The library computes every row of a batched matrix product exactly as it
 * would alone, so each record is bit-identical to what `xcap caption` prints for that file,
 * whichever images happened to share the group (thread timing, --shard, resume). Called
 * without the lock; the slots are in SLOT_CAPTIONING and belong to this thread. */
static void caption_group(worker *wk, slot **group, int count) {
    pipeline *p = wk->p;
    char err[1024];
    xcap_image imgs[BATCH_MAX_GROUP];
    xcap_result results[BATCH_MAX_GROUP];
    int status[BATCH_MAX_GROUP];
    char *errors[BATCH_MAX_GROUP] = {0};
    for (int g = 0; g < count; g++) imgs[g] = (xcap_image){NULL, group[g]->width, group[g]->height, group[g]->pixels};
    int rc = xcap_caption_batch(wk->state, imgs, count, p->params, results, status, err, sizeof err);
    for (int g = 0; g < count && rc != XCAP_OK; g++) {
        if (status[g] == XCAP_OK) continue;
        /* The batch call names only the first failure; the image alone gives its own message. */
        xcap_result_free(&results[g]);
        int alone;
        if (xcap_caption_batch(wk->state, &imgs[g], 1, p->params, &results[g], &alone, err, sizeof err) == XCAP_OK)
            status[g] = XCAP_OK;
        else errors[g] = message(p->todo[group[g]->index]->path, err);
    }

    pthread_mutex_lock(&p->mu);
    for (int g = 0; g < count; g++) {
        slot *s = group[g];
        free(s->pixels);
        s->pixels = NULL;
        p->decoded_bytes -= xcap_pixel_count(p->model) * sizeof(float);
        if (status[g] == XCAP_OK) {
            s->result = results[g];
            s->has_result = 1;
        } else {
            xcap_result_free(&results[g]);
            s->error = errors[g] ? errors[g] : dup_string("out of memory");
        }
        s->state = SLOT_DONE;
    }
    pthread_cond_broadcast(&p->changed);
    pthread_mutex_unlock(&p->mu);
}

static void *caption_thread(void *arg) {
    worker *wk = arg;
    pipeline *p = wk->p;
    const int want = p->opt->batch_size < BATCH_MAX_GROUP ? p->opt->batch_size : BATCH_MAX_GROUP;
    slot *group[BATCH_MAX_GROUP];
    pthread_mutex_lock(&p->mu);
    for (;;) {
        /* Take up to `want` decoded images, lowest index first. Waiting for a full group only
         * while more images are being decoded keeps the last, short group from stalling. */
        int count = 0, pending = 0;
        slot *s;
        while (count < want && (s = next_decoded(p, &pending)) != NULL) {
            s->state = SLOT_CAPTIONING;
            group[count++] = s;
        }
        if (count == 0) {
            if (p->stop || (p->next_decode >= p->n && !pending)) break;
            pthread_cond_wait(&p->changed, &p->mu);
            continue;
        }
        pthread_mutex_unlock(&p->mu);
        caption_group(wk, group, count);
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static void slot_clear(slot *s) {
    free(s->pixels);
    free(s->error);
    if (s->has_result) xcap_result_free(&s->result);
    s->pixels = NULL;
    s->error = NULL;
    s->has_result = 0;
    s->state = SLOT_FREE;
}

static void remember_error(batch_run_result *res, const char *msg) {
    if (res->n_first_errors < sizeof res->first_errors / sizeof *res->first_errors)
        res->first_errors[res->n_first_errors++] = dup_string(msg);
}

/* Writes slot s's record. Returns 0, or -1 when the JSONL/CSV output failed (the run stops). */
static int write_record(const batch_run_options *opt, const batch_item *it, slot *s, long written, batch_run_result *res,
                        batch_progress *progress) {
    xcap_result *r = s->has_result ? &s->result : NULL;
    int kill_now = opt->kill_after > 0 && written + 1 == opt->kill_after;
    char err[1024 + 64];
    if (opt->format == FORMAT_TXT) {
        if (r) {
            char *text = batch_sidecar_text(r);
            if (!text || batch_write_sidecar(it->sidecar, text, kill_now && opt->kill_partial, err, sizeof err) != 0) {
                if (!text) snprintf(err, sizeof err, "%s: out of memory", it->sidecar);
                r = NULL;
                s->error = message(it->path, err);
            }
            free(text);
        }
    } else {
        char *line = opt->format == FORMAT_JSONL ? batch_jsonl_line(it->path, s->width, s->height, r, s->error)
                                                 : batch_csv_line(it->path, s->width, s->height, r, s->error, opt->n_best);
        if (!line) {
            batch_progress_clear(progress);
            fprintf(stderr, "xcap batch: out of memory\n");
            return -1;
        }
        size_t len = strlen(line);
        /* Test hook: only the first half of this record reaches the file. */
        if (kill_now && opt->kill_partial) len /= 2;
        off_t start = lseek(opt->out_fd, 0, SEEK_CUR); /* -1 on a pipe or terminal */
        if (write_all(opt->out_fd, line, len) != 0) {
            int e = errno;
            /* A full disk or a file-size limit can cut the line short: cut the file back to
             * the last complete record, so that a later run resumes from whole lines. */
            if (start >= 0 && ftruncate(opt->out_fd, start) == 0) lseek(opt->out_fd, start, SEEK_SET);
            batch_progress_clear(progress);
            fprintf(stderr, "xcap batch: cannot write %s: %s\n", opt->output_name, strerror(e));
            free(line);
            return -1;
        }
        free(line);
    }
    if (kill_now) raise(SIGKILL);
    if (opt->signal_after > 0 && written + 1 == opt->signal_after) raise(opt->test_signal); /* test hook */

    const char *error = s->error ? s->error : NULL;
    if (r) res->captioned++;
    else {
        res->failed++;
        if (!error) error = "out of memory";
        remember_error(res, error);
        if (opt->verbose) {
            batch_progress_clear(progress);
            fprintf(stderr, "xcap batch: %s\n", error);
        }
    }
    if (res->records) {
        batch_record *rec = &res->records[s->index];
        rec->path = dup_string(it->path);
        rec->width = s->width;
        rec->height = s->height;
        if (r) {
            rec->caption = dup_string(caption_strip(r->hyps[0].text));
            rec->score = r->hyps[0].score;
            rec->sum_logprob = r->hyps[0].sum_logprob;
        } else {
            rec->error = dup_string(error);
        }
    }
    return 0;
}

int batch_run(const xcap_model *model, const xcap_params *params, batch_item **todo, size_t n,
              const batch_run_options *opt, batch_progress *progress, batch_run_result *res, char *err,
              size_t errlen) {
    memset(res, 0, sizeof *res);
    pipeline p = {0};
    p.model = model;
    p.params = params;
    p.todo = todo;
    p.n = n;
    p.opt = opt;
    p.window = (size_t)opt->jobs * (size_t)(opt->batch_size + 1) + (size_t)opt->decode_threads;
    p.slots = calloc(p.window, sizeof *p.slots);
    worker *workers = calloc((size_t)opt->jobs, sizeof *workers);
    pthread_t *threads = calloc((size_t)(opt->jobs + opt->decode_threads), sizeof *threads);
    if (opt->html_dir) res->records = calloc(n ? n : 1, sizeof *res->records);
    if (!p.slots || !workers || !threads || (opt->html_dir && !res->records)) {
        free(p.slots);
        free(workers);
        free(threads);
        snprintf(err, errlen, "out of memory");
        return XCAP_ERR_NOMEM;
    }
    int rc = XCAP_OK;
    for (int k = 0; k < opt->jobs && rc == XCAP_OK; k++) {
        workers[k].p = &p;
        rc = xcap_state_new(model, &workers[k].state, err, errlen);
    }
    if (rc != XCAP_OK) {
        for (int k = 0; k < opt->jobs; k++) xcap_state_free(workers[k].state);
        free(p.slots);
        free(workers);
        free(threads);
        return rc;
    }
    pthread_mutex_init(&p.mu, NULL);
    pthread_cond_init(&p.changed, NULL);
    int started = 0;
    for (int k = 0; k < opt->decode_threads; k++)
        if (pthread_create(&threads[started], NULL, decode_thread, &p) == 0) started++;
    int decoders = started;
    for (int k = 0; k < opt->jobs; k++)
        if (pthread_create(&threads[started], NULL, caption_thread, &workers[k]) == 0) started++;
    if (decoders == 0 || started == decoders) {
        pthread_mutex_lock(&p.mu);
        p.stop = 1;
        pthread_cond_broadcast(&p.changed);
        pthread_mutex_unlock(&p.mu);
        snprintf(err, errlen, "cannot start threads");
        rc = XCAP_ERR_NOMEM;
    }

    for (size_t i = 0; i < n && rc == XCAP_OK && !res->interrupted; i++) {
        slot *s = &p.slots[i % p.window];
        pthread_mutex_lock(&p.mu);
        while (!(s->index == i && s->state == SLOT_DONE && i < p.next_decode)) {
            if (batch_stop_signal) break;
            /* Wake up now and then to keep the progress bar's rate and ETA moving. */
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_nsec += 200 * 1000 * 1000;
            if (until.tv_nsec >= 1000000000L) until.tv_sec++, until.tv_nsec -= 1000000000L;
            pthread_cond_timedwait(&p.changed, &p.mu, &until);
            if (!(s->index == i && s->state == SLOT_DONE)) {
                pthread_mutex_unlock(&p.mu);
                batch_progress_update(progress, 0);
                pthread_mutex_lock(&p.mu);
            }
        }
        int ready = s->index == i && s->state == SLOT_DONE && i < p.next_decode;
        pthread_mutex_unlock(&p.mu);
        if (!ready) { /* interrupted while waiting: nothing of record i was written */
            res->interrupted = (int)batch_stop_signal;
            pthread_mutex_lock(&p.mu);
            p.stop = 1;
            pthread_cond_broadcast(&p.changed);
            pthread_mutex_unlock(&p.mu);
            break;
        }

        if (write_record(opt, todo[i], s, (long)i, res, progress) != 0) {
            res->write_failed = 1;
            rc = XCAP_ERR_IO;
            snprintf(err, errlen, "output failed");
        }
        progress->done = res->captioned + res->failed;
        progress->failed = res->failed;
        batch_progress_update(progress, i + 1 == n);

        pthread_mutex_lock(&p.mu);
        slot_clear(s);
        p.next_write++;
        if (batch_stop_signal && i + 1 < n) res->interrupted = (int)batch_stop_signal;
        if (rc != XCAP_OK || res->interrupted) p.stop = 1;
        pthread_cond_broadcast(&p.changed);
        pthread_mutex_unlock(&p.mu);
    }
    for (int k = 0; k < started; k++) pthread_join(threads[k], NULL);
    for (size_t k = 0; k < p.window; k++) slot_clear(&p.slots[k]);
    for (int k = 0; k < opt->jobs; k++) xcap_state_free(workers[k].state);
    pthread_cond_destroy(&p.changed);
    pthread_mutex_destroy(&p.mu);
    free(p.slots);
    free(workers);
    free(threads);
    return rc;
}

void batch_run_result_free(batch_run_result *res, size_t n) {
    for (size_t i = 0; i < res->n_first_errors; i++) free(res->first_errors[i]);
    if (res->records)
        for (size_t i = 0; i < n; i++) batch_record_clear(&res->records[i]);
    free(res->records);
    memset(res, 0, sizeof *res);
}
