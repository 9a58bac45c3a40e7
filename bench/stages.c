/* xcap's side of the benchmark (bench/run.sh): the time of each stage of a caption on one model,
 * one image and one thread count, printed as one JSON object. Not a test.
 *
 *   build-bench/xcap_stages MODEL_DIR IMAGE THREADS [SECONDS] [MIN_REPS]
 *
 * Every stage runs once to warm up, then again and again until it has taken SECONDS (default 2)
 * and run MIN_REPS times (default 5); the median is reported. Stages, in caption order:
 *   load        xcap_model_load + xcap_model_free (the file is in the page cache after the warm-up)
 *   preprocess  resize + normalize of the decoded image (preprocess_image)
 *   encoder     the ViT over one image, plus enc_to_dec_proj when the model has one
 *   cross_kv    every decoder layer's cross-attention keys and values of that memory
 *   decoder_token  one decoder position for one sequence, averaged over positions 0..15
 *   decoder_paired the same 16 steps taken in turn with readings of the memory bandwidth of about
 *                  the same length (bench/stream.h scans), so that the steps' bytes per second
 *                  can be set against the bandwidth of the same moment: on a shared machine
 *                  both drift by tens of percent within minutes. Reports every sweep's time
 *                  per token ("step_s") and every reading ("bandwidth_gbs": reading i just
 *                  before sweep i, the last one after the last sweep)
 *   greedy16    xcap_caption, greedy, exactly 16 new tokens (eos banned before)
 *   beam4       the same with 4 beams
 * The tokens of both captions are printed too, so that run.sh can check that the engines agree.
 * XCAP_STAGES=name,name,... runs only those stages (for a profiler: `XCAP_STAGES=encoder perf
 * record ...`); decoder_token then feeds the start token at every position. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/image.h"
#include "bench/stream.h"
#include "bench/timing.h"
#include "nn/kernels.h"
#include "nn/linear.h"
#include "text/decoder.h"
#include "vision/preprocess.h"
#include "vision/vit.h"
#include "weights/model.h"

enum { CAPTION_TOKENS = 16 };

typedef struct {
    const char *model_dir;
    xcap_model *m;
    xcap_state *state;
    const uint8_t *rgb;
    int width, height;
    float *pixels, *enc_out, *memory;
    vit_run vit;
    decoder_run dec;
    float *logits;
    int32_t step_tokens[CAPTION_TOKENS]; /* the tokens fed to the decoder stage */
    xcap_params greedy, beam;
    xcap_result result;
    int failed;
    char err[1024];
} bench;

static void stage_load(void *ctx) {
    bench *b = ctx;
    xcap_model *m;
    if (xcap_model_load(b->model_dir, &m, b->err, sizeof b->err) != XCAP_OK) {
        b->failed = 1;
        return;
    }
    xcap_model_free(m);
}

static void stage_preprocess(void *ctx) {
    bench *b = ctx;
    if (preprocess_image(b->rgb, b->width, b->height, &b->m->pre, b->pixels, b->err, sizeof b->err)) b->failed = 1;
}

static void stage_encoder(void *ctx) {
    bench *b = ctx;
    const xcap_config *c = &b->m->cfg;
    vit_forward(b->m, &b->vit, b->pixels, b->enc_out, NULL, NULL);
    if (b->m->dec.has_enc_to_dec)
        nn_linear_forward(b->memory, c->dec_hidden, b->enc_out, c->enc_hidden, &b->m->dec.enc_to_dec, b->vit.n_tokens);
}

static void stage_cross_kv(void *ctx) {
    bench *b = ctx;
    decoder_cross_kv(b->m, &b->dec, b->memory);
}

/* All CAPTION_TOKENS positions; the caller divides by their number. */
static void stage_decoder_steps(void *ctx) {
    bench *b = ctx;
    for (int pos = 0; pos < CAPTION_TOKENS && !b->failed; pos++)
        if (decoder_step(b->m, &b->dec, &b->step_tokens[pos], 1, pos, b->logits, b->err, sizeof b->err)) b->failed = 1;
}

static void caption_with(bench *b, const xcap_params *p) {
    xcap_result_free(&b->result);
    if (xcap_caption(b->state, b->rgb, b->width, b->height, p, &b->result, b->err, sizeof b->err)) b->failed = 1;
}
static void stage_greedy(void *ctx) {
    bench *b = ctx;
    caption_with(b, &b->greedy);
}

static void stage_beam(void *ctx) {
    bench *b = ctx;
    caption_with(b, &b->beam);
}

/* 1 unless XCAP_STAGES is set and does not list the stage. */
static int wanted(const char *name) {
    const char *list = getenv("XCAP_STAGES");
    if (!list) return 1;
    size_t n = strlen(name);
    for (const char *at = list; (at = strstr(at, name)); at += n)
        if ((at == list || at[-1] == ',') && (at[n] == ',' || at[n] == '\0')) return 1;
    return 0;
}

/* Times fn (bench_time) and adds {"median_s", "min_s", "reps"}, divided by `per`, under `name`.
 * Returns 0, or -1 when fn failed. */
static int time_stage(bench *b, cJSON *stages, const char *name, void (*fn)(void *), double seconds, int min_reps,
                      int per) {
    if (!wanted(name)) return 0;
    bench_timing t = bench_time(fn, b, seconds, min_reps, &b->failed);
    if (b->failed) {
        fprintf(stderr, "xcap_stages: %s: %s\n", name, b->err);
        return -1;
    }
    cJSON *o = cJSON_AddObjectToObject(stages, name);
    cJSON_AddNumberToObject(o, "median_s", t.median_s / per);
    cJSON_AddNumberToObject(o, "min_s", t.min_s / per);
    cJSON_AddNumberToObject(o, "reps", t.reps);
    return 0;
}

/* One bandwidth reading: scans of the whole buffer with variant v of bench/stream.h, repeated
 * until they have taken at least `seconds` (at least one scan); their bytes over their time. */
static double bandwidth_now(bench_stream *st, int v, double seconds) {
    bench_stream_variant(st, v);
    double bytes = 0, t0 = bench_now(), t;
    do {
        bench_stream_run(st);
        bytes += bench_stream_bytes(st);
    } while ((t = bench_now() - t0) < seconds);
    return bytes / t * 1e-9;
}

/* The decoder_paired stage (see the top of the file): a bandwidth reading as long as the last
 * decoder sweep, a sweep of CAPTION_TOKENS decoder steps, a reading, a sweep, ... for `seconds`
 * and at least min_reps sweeps, then a last reading; successive readings take the variants of
 * bench/stream.h in turn. Returns 0, or -1 on failure. */
static int time_decoder_paired(bench *b, cJSON *stages, double seconds, int min_reps) {
    enum { MAX_PAIRS = 1000 };
    if (!wanted("decoder_paired")) return 0;
    bench_stream st = {.n = BENCH_STREAM_FLOATS};
    st.data = bench_stream_buffer();
    if (!st.data) {
        snprintf(b->err, sizeof b->err, "out of memory for the bandwidth buffer");
        return -1;
    }
    double sweep = bench_now();
    stage_decoder_steps(b); /* warm-up */
    sweep = bench_now() - sweep;
    cJSON *o = cJSON_AddObjectToObject(stages, "decoder_paired");
    cJSON *steps = cJSON_AddArrayToObject(o, "step_s"), *readings = cJSON_AddArrayToObject(o, "bandwidth_gbs");
    double start = bench_now();
    int n = 0;
    for (; !b->failed && n < MAX_PAIRS && (n < min_reps || bench_now() - start < seconds); n++) {
        cJSON_AddItemToArray(readings, cJSON_CreateNumber(bandwidth_now(&st, n % BENCH_STREAM_VARIANTS, sweep)));
        double t0 = bench_now();
        stage_decoder_steps(b);
        sweep = bench_now() - t0;
        cJSON_AddItemToArray(steps, cJSON_CreateNumber(sweep / CAPTION_TOKENS));
    }
    cJSON_AddItemToArray(readings, cJSON_CreateNumber(bandwidth_now(&st, n % BENCH_STREAM_VARIANTS, sweep)));
    free((void *)st.data);
    if (b->failed) fprintf(stderr, "xcap_stages: decoder_paired: %s\n", b->err);
    return b->failed ? -1 : 0;
}

static void add_tokens(cJSON *out, const char *name, const xcap_result *r) {
    cJSON *a = cJSON_AddArrayToObject(out, name);
    for (int i = 0; r->n_hyps > 0 && i < r->hyps[0].n_tokens; i++)
        cJSON_AddItemToArray(a, cJSON_CreateNumber(r->hyps[0].tokens[i]));
}

static xcap_params caption_params(int threads, int beams) {
    xcap_params p = xcap_default_params();
    p.n_threads = threads;
    p.num_beams = beams;
    p.max_new_tokens = CAPTION_TOKENS;
    p.min_new_tokens = CAPTION_TOKENS;
    return p;
}

/* Everything the stages share, sized once: model, state, encoder and decoder runs. */
static int setup(bench *b, int threads) {
    if (xcap_model_load(b->model_dir, &b->m, b->err, sizeof b->err)) return -1;
    if (xcap_state_new(b->m, &b->state, b->err, sizeof b->err)) return -1;
    const xcap_config *c = &b->m->cfg;
    if (c->n_positions < CAPTION_TOKENS) {
        snprintf(b->err, sizeof b->err, "n_positions %d < %d tokens", c->n_positions, CAPTION_TOKENS);
        return -1;
    }
    if (vit_run_init(&b->vit, c, b->err, sizeof b->err)) return -1;
    if (decoder_run_init(&b->dec, c, 1, CAPTION_TOKENS, b->err, sizeof b->err)) return -1;
    size_t S = c->image_size, M = b->vit.n_tokens;
    b->pixels = malloc(3 * S * S * sizeof(float));
    b->enc_out = malloc(M * c->enc_hidden * sizeof(float));
    b->memory = b->m->dec.has_enc_to_dec ? malloc(M * c->dec_hidden * sizeof(float)) : b->enc_out;
    b->logits = malloc((size_t)c->vocab_size * sizeof(float));
    if (!b->pixels || !b->enc_out || !b->memory || !b->logits) {
        snprintf(b->err, sizeof b->err, "out of memory");
        return -1;
    }
    b->greedy = caption_params(threads, 1);
    b->beam = caption_params(threads, 4);
    nn_set_threads(threads);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s MODEL_DIR IMAGE THREADS [SECONDS] [MIN_REPS]\n", argv[0]);
        return 2;
    }
    bench b = {.model_dir = argv[1]};
    int threads = atoi(argv[3]);
    double seconds = argc > 4 ? atof(argv[4]) : 2.0;
    int min_reps = argc > 5 ? atoi(argv[5]) : 5;
    uint8_t *rgb;
    if (image_load_file(argv[2], &rgb, &b.width, &b.height, b.err, sizeof b.err) || setup(&b, threads)) {
        fprintf(stderr, "xcap_stages: %s\n", b.err);
        return 1;
    }
    b.rgb = rgb;

    cJSON *out = cJSON_CreateObject(), *stages = cJSON_CreateObject();
    cJSON_AddStringToObject(out, "engine", "xcap");
    cJSON_AddNumberToObject(out, "threads", threads);
    cJSON_AddItemToObject(out, "stages", stages);
    int rc = time_stage(&b, stages, "load", stage_load, seconds, min_reps, 1);
    rc = rc ? rc : time_stage(&b, stages, "preprocess", stage_preprocess, seconds, min_reps, 1);
    rc = rc ? rc : time_stage(&b, stages, "encoder", stage_encoder, seconds, min_reps, 1);
    rc = rc ? rc : time_stage(&b, stages, "cross_kv", stage_cross_kv, seconds, min_reps, 1);
    rc = rc ? rc : time_stage(&b, stages, "greedy16", stage_greedy, seconds, min_reps, 1);
    if (!rc && wanted("greedy16")) add_tokens(out, "greedy_tokens", &b.result);
    /* the decoder stage replays the greedy caption's own tokens (start token first) */
    b.step_tokens[0] = xcap_model_get_info(b.m).start_token;
    for (int i = 1; i < CAPTION_TOKENS; i++)
        b.step_tokens[i] = b.result.n_hyps > 0 && i - 1 < b.result.hyps[0].n_tokens ? b.result.hyps[0].tokens[i - 1]
                                                                                   : b.step_tokens[0];
    rc = rc ? rc : time_stage(&b, stages, "decoder_token", stage_decoder_steps, seconds, min_reps, CAPTION_TOKENS);
    rc = rc ? rc : time_decoder_paired(&b, stages, seconds, min_reps);
    rc = rc ? rc : time_stage(&b, stages, "beam4", stage_beam, seconds, min_reps, 1);
    if (!rc && wanted("beam4")) add_tokens(out, "beam_tokens", &b.result);
    if (!rc) {
        char *text = cJSON_PrintUnformatted(out);
        printf("%s\n", text);
        free(text);
    }
    cJSON_Delete(out);
    xcap_result_free(&b.result);
    vit_run_free(&b.vit);
    decoder_run_free(&b.dec);
    if (b.memory != b.enc_out) free(b.memory);
    free(b.enc_out);
    free(b.pixels);
    free(b.logits);
    free(rgb);
    xcap_state_free(b.state);
    xcap_model_free(b.m);
    return rc ? 1 : 0;
}
